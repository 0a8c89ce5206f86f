#!/bin/sh
# Installs the boxlite Python SDK (sdk/python) with pip, offline (its build
# backend is in the tree and needs nothing from an index), into Debian's
# python3 and into the first python3 on PATH when that is another one.
#
#   packaging/install-sdk.sh [PYTHON...]
#
# Debian 12 marks its python3 "externally managed" (PEP 668): pip refuses to
# install into it unless told --break-system-packages, which is what this
# script passes for such an interpreter (the package is pure Python with no
# dependencies; `pip uninstall boxlite` removes it). A virtualenv needs no
# flag: `python3 -m venv V && V/bin/pip install ./sdk/python`.
set -eu
SRC=$(cd "$(dirname "$0")/../sdk/python" && pwd)
if [ $# -eq 0 ]; then
	set -- /usr/bin/python3
	p=$(command -v python3 || true)
	if [ -n "$p" ] && [ "$(readlink -f "$p")" != "$(readlink -f /usr/bin/python3)" ]; then
		set -- "$@" "$p"
	fi
fi
for py in "$@"; do
	if ! "$py" -m pip --version >/dev/null 2>&1; then
		echo "sdk: $py has no pip (Debian: apt-get install python3-pip); skipped" >&2
		continue
	fi
	flags=""
	if "$py" -c 'import sys, sysconfig, os; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
		flags=--break-system-packages
	fi
	# --no-index: nothing is fetched; --no-deps: there are none.
	# shellcheck disable=SC2086
	"$py" -m pip install --no-index --no-deps --disable-pip-version-check -q --force-reinstall $flags "$SRC"
	echo "sdk: installed boxlite into $py ($("$py" -c 'import boxlite, os; print(os.path.dirname(boxlite.__file__))' 2>/dev/null))"
done
