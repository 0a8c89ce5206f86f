# Installing boxlite like a system package (included by the Makefile):
# the shared library with its soname and the static archive, headers under
# include/boxlite/, boxlite.pc, man pages and bash completion generated from
# the programs' own --help (packaging/mkdocs.py), `make install` and `make deb`.

VERSION     := $(shell sed -n 's/^\#define BOXLITE_VERSION "\(.*\)"/\1/p' runtime/boxlite.h)
BINDIR      ?= $(PREFIX)/bin
LIBDIR      ?= $(PREFIX)/lib
INCLUDEDIR  ?= $(PREFIX)/include
PKGLIBDIR   ?= $(PREFIX)/lib/boxlite
DATADIR     ?= $(PREFIX)/share/boxlite
MANDIR      ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
PUBLIC_H    := runtime/boxlite.h runtime/boxlite_image.h common/boxlite_error.h
MAN_PAGES   := $(BUILD)/man/boxlite.1

DIST_FILES := $(BUILD)/dist/libboxlite.a $(BUILD)/boxlite.pc $(MAN_PAGES) $(BUILD)/boxlite.bash
.PHONY: dist-files deb programs
ifneq ($(SAN),1)
all: dist-files
check-unit: dist-files
endif
dist-files: $(DIST_FILES)
programs: $(PROGRAMS)

# One relocatable object of libboxlite and common/ in which only the public
# API (runtime/libboxlite.map) stays global, so a static link exposes no
# internal symbol either.
$(BUILD)/dist/libboxlite.a: $(RUNTIME_OBJ) $(COMMON_OBJ) runtime/libboxlite.map
	@mkdir -p $(dir $@)
	sed -n 's/^\t\(bl_[a-z0-9_]*\);$$/\1/p' runtime/libboxlite.map >$(BUILD)/dist/public.syms
	$(LD) -r -o $(BUILD)/dist/libboxlite.o $(RUNTIME_OBJ) $(COMMON_OBJ)
	objcopy --keep-global-symbols=$(BUILD)/dist/public.syms $(BUILD)/dist/libboxlite.o
	rm -f $@ && $(AR) rcs $@ $(BUILD)/dist/libboxlite.o

# The private libraries are plain -l flags: building against the shared
# library needs none of their -dev packages (only --static does).
$(BUILD)/boxlite.pc: packaging/dist.mk runtime/boxlite.h
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' 'includedir=$(INCLUDEDIR)' '' \
	  'Name: boxlite' 'Description: run untrusted code in QEMU micro-VMs' 'Version: $(VERSION)' \
	  'Libs: -L$${libdir} -lboxlite' 'Libs.private: $(PKG_LIBS) -pthread' \
	  'Cflags: -I$${includedir}' >$@

$(MAN_PAGES): packaging/mkdocs.py $(BUILD)/boxlite $(BUILD)/containerd-shim-boxlite-v2 $(PUBLIC_H)
	rm -rf $(BUILD)/man
	python3 packaging/mkdocs.py man $(BUILD)/boxlite $(BUILD)/containerd-shim-boxlite-v2 \
	  $(BUILD)/man $(PUBLIC_H)

$(BUILD)/boxlite.bash: packaging/mkdocs.py $(BUILD)/boxlite
	python3 packaging/mkdocs.py bash $(BUILD)/boxlite $@

# Programs and what ships with them, not the tests (debian/rules uses it).
install: $(PROGRAMS) dist-files
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(PKGLIBDIR) $(DESTDIR)$(LIBDIR)/pkgconfig \
	  $(DESTDIR)$(INCLUDEDIR)/boxlite $(DESTDIR)$(DATADIR) $(DESTDIR)$(MANDIR)/man1 \
	  $(DESTDIR)$(MANDIR)/man3 $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(BASHCOMPDIR)
	install -m 0755 $(BUILD)/boxlite $(BUILD)/containerd-shim-boxlite-v2 $(DESTDIR)$(BINDIR)/
	install -m 0644 $(BUILD)/initramfs.cpio $(BUILD)/vmlinux $(DESTDIR)$(PKGLIBDIR)/
	install -m 0755 packaging/build-default-image.sh $(DESTDIR)$(DATADIR)/
	install -m 0644 $(BUILD)/libboxlite.so $(DESTDIR)$(LIBDIR)/libboxlite.so.$(VERSION)
	ln -sfn libboxlite.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libboxlite.so.0
	ln -sfn libboxlite.so.0 $(DESTDIR)$(LIBDIR)/libboxlite.so
	install -m 0644 $(BUILD)/dist/libboxlite.a $(DESTDIR)$(LIBDIR)/
	install -m 0644 $(BUILD)/boxlite.pc $(DESTDIR)$(LIBDIR)/pkgconfig/
	install -m 0644 $(PUBLIC_H) $(DESTDIR)$(INCLUDEDIR)/boxlite/
	install -m 0644 $(BUILD)/man/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 $(BUILD)/man/*.3 $(DESTDIR)$(MANDIR)/man3/
	install -m 0644 $(BUILD)/man/*.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 0644 $(BUILD)/boxlite.bash $(DESTDIR)$(BASHCOMPDIR)/boxlite

# tests/unit/test_dist runs tests/dist/docs.sh from the source tree.
$(BUILD)/tests/unit/test_dist: CFLAGS += -DBL_SOURCE_DIR=\"$(CURDIR)\"

# The Debian packages (packaging/debian), built from a copy of the tree in
# $(BUILD)/deb/src so the checkout stays clean; the .debs land in $(BUILD)/deb.
# The guest kernel is the cached one `make all` uses (never built in there).
DEB_SRC = $(BUILD)/deb/src/boxlite-$(VERSION)
deb: $(BUILD)/vmlinux
	rm -rf $(BUILD)/deb && mkdir -p $(DEB_SRC)
	git ls-files -co --exclude-standard -z | grep -zv '^$(BUILD)/' | \
	  xargs -0 cp -P --parents -t $(DEB_SRC)
	rm -rf $(DEB_SRC)/debian && cp -r packaging/debian $(DEB_SRC)/debian
	mkdir -p $(DEB_SRC)/debian/guest && cp $(BUILD)/vmlinux $(DEB_SRC)/debian/guest/vmlinux
	cd $(DEB_SRC) && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u BUILD DEB_BUILD_OPTIONS="parallel=$${JOBS:-2} nocheck noddebs" dpkg-buildpackage -us -uc -b
	mv $(BUILD)/deb/src/*.deb $(BUILD)/deb/src/*.buildinfo $(BUILD)/deb/src/*.changes $(BUILD)/deb/
	rm -rf $(BUILD)/deb/src
	@ls -1 $(BUILD)/deb/*.deb
