#!/bin/bash
# Checks of what `make install` / the Debian packages ship, without a VM:
#   docs.sh BUILD SRC exports     libboxlite.so exports exactly the public API, versioned
#   docs.sh BUILD SRC headers     <boxlite/boxlite.h> + boxlite.pc build and run a program
#   docs.sh BUILD SRC man         a page per command, naming every option its --help prints
#   docs.sh BUILD SRC completion  the bash completion completes commands and options
# Run by tests/unit/test_dist.
set -u
build=$(cd "$1" && pwd) src=$(cd "$2" && pwd) what=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
need() { [ -e "$1" ] || { echo "FAIL: $1 missing (run make)"; exit 1; }; }
public_h="$src/runtime/boxlite.h $src/runtime/boxlite_image.h $src/common/boxlite_error.h"

# Functions the public headers declare, from the compiler itself.
declared() {
	echo '#include "boxlite.h"' >"$tmp/decl.c"
	gcc -std=gnu17 -D_GNU_SOURCE -I"$src/common" -I"$src/runtime" -aux-info "$tmp/aux" \
		-fsyntax-only "$tmp/decl.c" || return 1
	grep -E '^/\* [^ ]*(runtime/boxlite|common/boxlite_error)[^ ]*\.h:' "$tmp/aux" |
		sed -E 's/^.*\*\/ (extern )?//; s/ *\(.*//; s/.*[ *]//' | sort -u
}

case $what in
exports)
	need "$build/libboxlite.so"
	need "$build/dist/libboxlite.a"
	declared >"$tmp/declared" || fail "public headers do not compile"
	[ -s "$tmp/declared" ] || fail "no declarations found"
	soname=$(readelf -d "$build/libboxlite.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
	[ "$soname" = libboxlite.so.0 ] || fail "soname is '$soname', not libboxlite.so.0"
	nm -D --defined-only --with-symbol-versions "$build/libboxlite.so" | awk '$2 != "A" {print $3}' >"$tmp/dyn"
	grep -v '@@BOXLITE_0$' "$tmp/dyn" | sed 's/^/FAIL: not versioned BOXLITE_0: /'
	grep -qv '@@BOXLITE_0$' "$tmp/dyn" && fails=$((fails + 1))
	sed 's/@.*//' "$tmp/dyn" | sort -u >"$tmp/exported"
	if ! diff -u "$tmp/declared" "$tmp/exported" >"$tmp/diff"; then
		cat "$tmp/diff"
		fail "exports differ from the public headers (-: declared, not exported; +: exported, not declared; edit runtime/libboxlite.map)"
	fi
	nm -g --defined-only "$build/dist/libboxlite.a" | awk 'NF == 3 {print $3}' | sort -u >"$tmp/static"
	diff -u "$tmp/declared" "$tmp/static" || fail "the static archive's globals differ from the public API"
	echo "exports: $(wc -l <"$tmp/exported") functions, soname $soname"
	;;
headers)
	need "$build/libboxlite.so"
	need "$build/boxlite.pc"
	mkdir -p "$tmp/include/boxlite" "$tmp/lib/pkgconfig"
	cp $public_h "$tmp/include/boxlite/"
	cp "$build/libboxlite.so" "$tmp/lib/libboxlite.so.0"
	ln -s libboxlite.so.0 "$tmp/lib/libboxlite.so"
	cp "$build/dist/libboxlite.a" "$tmp/lib/"
	sed -e "s|^libdir=.*|libdir=$tmp/lib|; s|^includedir=.*|includedir=$tmp/include|" \
		"$build/boxlite.pc" >"$tmp/lib/pkgconfig/boxlite.pc"
	export PKG_CONFIG_PATH=$tmp/lib/pkgconfig
	[ "$(pkg-config --modversion boxlite)" = "$(sed -n 's/^#define BOXLITE_VERSION "\(.*\)"/\1/p' "$src/runtime/boxlite.h")" ] ||
		fail "pkg-config --modversion boxlite: $(pkg-config --modversion boxlite 2>&1)"
	cat >"$tmp/prog.c" <<-'EOF'
		#include <boxlite/boxlite.h>
		#include <stdio.h>
		#include <string.h>
		int main(void)
		{
			bl_error_t err = BL_ERROR_INIT;
			bl_sandbox_options o = {.memory_mib = 64, .uri = "bogus:///x"};
			bl_sandbox *sb = NULL;
			(void)o;
			(void)sb;
			bl_error_clear(&err);
			printf("%s %s\n", BOXLITE_VERSION, bl_code_name(BL_ENOTFOUND));
			return strlen(bl_code_name(BL_EOOM)) ? 0 : 1;
		}
	EOF
	for std in c99 c11 gnu17; do
		# shellcheck disable=SC2046
		cc -std=$std -Wall -Wextra -Werror -pedantic -o "$tmp/prog" "$tmp/prog.c" $(pkg-config --cflags --libs boxlite) ||
			fail "<boxlite/boxlite.h> does not build with -std=$std"
	done
	out=$(LD_LIBRARY_PATH=$tmp/lib "$tmp/prog") || fail "the program linked to libboxlite.so failed"
	echo "shared: $out"
	LD_LIBRARY_PATH=$tmp/lib ldd "$tmp/prog" | grep -q "libboxlite.so.0 => $tmp/lib" || { ldd "$tmp/prog"; fail "not linked to libboxlite.so.0"; }
	# shellcheck disable=SC2046
	cc -std=gnu17 -o "$tmp/prog-static" "$tmp/prog.c" $(pkg-config --cflags boxlite) "$tmp/lib/libboxlite.a" \
		$(pkg-config --static --libs-only-other --libs-only-l boxlite | sed 's/-lboxlite//') ||
		fail "static link with pkg-config --static failed"
	out=$("$tmp/prog-static") || fail "the static program failed"
	echo "static: $out"
	;;
man)
	need "$build/boxlite"
	need "$build/man/boxlite.1"
	# Regenerated pages must equal the built ones (nothing stale).
	python3 "$src/packaging/mkdocs.py" man "$build/boxlite" "$build/containerd-shim-boxlite-v2" "$tmp/man" $public_h ||
		fail "mkdocs.py man failed"
	diff -r "$build/man" "$tmp/man" >/dev/null || fail "build/man is stale (make)"
	text() { sed -e 's/\\-/-/g; s/\\f[BIRP]//g; s/\\e/\\/g; s/\\&//g' "$1"; }
	cmds=$("$build/boxlite" help --list)
	[ -n "$cmds" ] || fail "boxlite help --list printed nothing"
	n=0
	for c in $cmds; do
		p=$build/man/boxlite-$c.1
		if [ ! -f "$p" ]; then
			fail "no man page for boxlite $c"
			continue
		fi
		text "$build/man/boxlite.1" | grep -q "boxlite-$c" || fail "boxlite(1) does not name boxlite-$c(1)"
		help=$(timeout 10 "$build/boxlite" "$c" --help </dev/null) || fail "boxlite $c --help exited $? (it must print its help on stdout and exit 0)"
		[ -n "$help" ] || fail "boxlite $c --help printed nothing on stdout"
		for o in $(printf '%s\n' "$help" | grep -oE '(^|[^A-Za-z0-9_.$/-])--?[A-Za-z][A-Za-z0-9-]*' |
			grep -oE -- '--?[A-Za-z][A-Za-z0-9-]*$' | sort -u); do
			text "$p" | grep -qE -- "(^|[^A-Za-z0-9-])$o([^A-Za-z0-9-]|$)" || fail "boxlite-$c.1 does not mention $o"
		done
		man -l "$p" >/dev/null 2>"$tmp/err" && [ ! -s "$tmp/err" ] || { cat "$tmp/err"; fail "man -l $p"; }
		n=$((n + 1))
	done
	for o in $("$build/containerd-shim-boxlite-v2" -help | grep -oE '^  -[a-z-]+' | tr -d ' '); do
		text "$build/man/containerd-shim-boxlite-v2.8" | grep -q -- "$o" || fail "the shim's page does not mention $o"
	done
	for f in $(declared); do
		text "$build/man/libboxlite.3" | grep -q "^$f$" || fail "libboxlite.3 does not document $f"
	done
	echo "man: $n command pages, boxlite.1, containerd-shim-boxlite-v2.8, libboxlite.3"
	;;
completion)
	need "$build/boxlite.bash"
	comp() { # comp WORD... -> the completions of the last word
		bash -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _boxlite; printf "%s\n" "${COMPREPLY[@]}"' \
			_ "$build/boxlite.bash" "$@"
	}
	[ "$(comp boxlite ru)" = run ] || fail "boxlite ru<TAB>: '$(comp boxlite ru)'"
	comp boxlite run --ima | grep -qx -- --image || fail "boxlite run --ima<TAB>: '$(comp boxlite run --ima)'"
	comp boxlite exec - | grep -qx -- -i || fail "boxlite exec -<TAB> lacks -i"
	comp boxlite exec - | grep -qx -- --image && fail "boxlite exec -<TAB> offers --image"
	[ "$(comp boxlite run --accel '' | sort | tr '\n' ' ')" = "kvm tcg " ] || fail "boxlite run --accel <TAB>"
	[ "$(comp boxlite pull --q)" = --quiet ] || fail "boxlite pull --q<TAB>: '$(comp boxlite pull --q)'"
	for c in $("$build/boxlite" help --list); do
		comp boxlite "$c" | grep -qx "$c" || fail "boxlite $c<TAB> does not complete"
		for o in $(timeout 10 "$build/boxlite" "$c" --help </dev/null | grep -oE '^ +--[a-z][a-z-]*' | tr -d ' '); do
			comp boxlite "$c" "$o" | grep -qx -- "$o" || fail "boxlite $c $o<TAB> does not complete"
		done
	done
	echo "completion: $("$build/boxlite" help --list | wc -l) commands"
	;;
*)
	echo "usage: docs.sh BUILD SRC exports|headers|man|completion" >&2
	exit 2
	;;
esac
[ "$fails" -eq 0 ]
