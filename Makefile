# boxlite — plain GNU make. `make help` lists the targets.
#
# Layout of the build tree (BUILD, default build/):
#   gen/            protoc-c output for proto/*.proto
#   libblcommon.a   common/ (errors, logging, ttrpc) + generated protobuf code
#   libboxlite.a    runtime/ (the engine), public header runtime/boxlite.h
#   boxlite         the CLI (runtime/cli/)
#   boxlite-agent   the guest agent, static (agent/)
#   initramfs.cpio  the agent as /init
#   vmlinux         the guest kernel (cached under /var/cache/boxlite/kernel)
#   tests/          CUnit test programs (tests/unit, tests/integration)

BUILD    ?= build
PREFIX   ?= /usr/local
DESTDIR  ?=
CC       ?= gcc
SAN      ?=

OPT      ?= -O2 -D_FORTIFY_SOURCE=2
WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
            -Wno-unused-parameter
SANFLAGS :=
ifeq ($(SAN),1)
SANFLAGS := -fsanitize=address,undefined
OPT      := -O1 -fno-omit-frame-pointer $(SANFLAGS) -fno-sanitize-recover=undefined
endif
PKGS     := libvirt libxml-2.0 json-c libarchive libprotobuf-c libcap libcrypto libcurl libmicrohttpd
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CFLAGS   ?=
CFLAGS   += -std=gnu17 -g -pthread -D_GNU_SOURCE $(OPT) $(WARN) \
            -Icommon -Iruntime -I$(BUILD)/gen $(PKG_CFLAGS) -MMD -MP
LDFLAGS  += -pthread $(SANFLAGS)
LIBS     := $(PKG_LIBS) -lcunit

# Generated code is compiled with its own, looser warnings.
GEN_CFLAGS = $(filter-out -Werror -Wmissing-prototypes,$(CFLAGS))

PROTOS      := $(wildcard proto/*.proto)
PROTO_C     := $(PROTOS:proto/%.proto=$(BUILD)/gen/%.pb-c.c)
PROTO_H     := $(PROTO_C:.c=.h)
COMMON_SRC  := $(wildcard common/*.c)
RUNTIME_SRC := $(wildcard runtime/*.c)
CLI_SRC     := $(wildcard runtime/cli/*.c)
AGENT_SRC   := $(wildcard agent/*.c)
SHIM_SRC    := $(wildcard shim/*.c)
UNIT_SRC    := $(wildcard tests/unit/test_*.c)
INTEG_SRC   := $(wildcard tests/integration/test_*.c)
TESTLIB_SRC := $(wildcard tests/lib/*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

COMMON_OBJ  := $(call obj,$(COMMON_SRC)) $(PROTO_C:$(BUILD)/gen/%.c=$(BUILD)/obj/gen/%.o)
RUNTIME_OBJ := $(call obj,$(RUNTIME_SRC))
TESTLIB_OBJ := $(call obj,$(TESTLIB_SRC))
UNIT_BIN    := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/unit/%)
INTEG_BIN   := $(INTEG_SRC:tests/integration/%.c=$(BUILD)/tests/integration/%)

PROGRAMS := $(BUILD)/boxlite
ifneq ($(SAN),1)
PROGRAMS += $(BUILD)/libboxlite.so
endif
ifneq ($(SHIM_SRC),)
PROGRAMS += $(BUILD)/containerd-shim-boxlite-v2
endif
ifneq ($(SAN),1)
PROGRAMS += $(BUILD)/boxlite-agent $(BUILD)/initramfs.cpio $(BUILD)/vmlinux
endif

.PHONY: sdk-install
.PHONY: all help setup deps image test-images kernel check check-unit check-asan check-integration format format-check \
        install clean fuzz bench tests soak
.DEFAULT_GOAL := all

all: $(PROGRAMS) tests

help:
	@echo "make setup              deps + everything + default image, then runs a first sandbox"
	@echo "make deps               install the Debian packages boxlite needs (apt-get)"
	@echo "make image              build the images (default = python:slim, busybox) into the store"
	@echo "make sdk-install        pip-install the Python SDK (sdk/python) offline"
	@echo "make                    build libraries, CLI, agent, initramfs, guest kernel, tests"
	@echo "make check              unit tests, unit tests under ASan+UBSan, integration tests (root)"
	@echo "make check-unit         unit tests only (no VM, no root)"
	@echo "make install            install under DESTDIR/PREFIX (LIBDIR, MANDIR, ... as in packaging/dist.mk)"
	@echo "make deb                the Debian packages (packaging/debian) into build/deb/"
	@echo "make format|format-check  clang-format the sources / check they are"
	@echo "make fuzz               build and run the libFuzzer targets (FUZZ_SECONDS=60)"
	@echo "make soak               the long hostile soak: 50 sandboxes x 20 cycles (outside CI)"
	@echo "make bench              benchmarks (figures beside their baselines)"

deps:
	packaging/install-deps.sh
	packaging/host-setup.sh

# The first of the README's two commands: everything, then a first sandbox.
setup: deps
	$(MAKE) all image
	$(MAKE) sdk-install
	$(BUILD)/boxlite run --python 'print("hello from a boxlite sandbox")'

# The Python SDK (sdk/python) into Debian's python3 (and the python3 on PATH),
# offline; `pip install ./sdk/python` in a venv works as well.
sdk-install: $(BUILD)/libboxlite.so
	packaging/install-sdk.sh

# The default image (Debian 12 + python3) in the image store.
image:
	packaging/build-default-image.sh

# Small busybox images in every form the image layer reads (no network).
test-images:
	packaging/build-test-images.sh $(BUILD)/test-images

# ---------------------------------------------------------------- generated
$(BUILD)/gen/%.pb-c.c $(BUILD)/gen/%.pb-c.h: proto/%.proto
	@mkdir -p $(BUILD)/gen
	protoc-c --c_out=$(BUILD)/gen -Iproto $<

$(BUILD)/obj/gen/%.o: $(BUILD)/gen/%.c | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(GEN_CFLAGS) -c $< -o $@

# Every object may include generated headers.
$(BUILD)/obj/%.o: %.c | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# The code session's guest-side driver: ONE source, the Python SDK's
# (it ships and reads the file), compiled into libboxlite as a C string.
CODEBOX_DRIVER := sdk/python/boxlite/_driver.py
$(BUILD)/gen/codebox_driver.h: $(CODEBOX_DRIVER)
	@mkdir -p $(BUILD)/gen
	{ echo '/* Generated from $(CODEBOX_DRIVER) by the Makefile: do not edit. */'; \
	  echo 'static const char bl_codebox_driver_src[] = {'; \
	  od -An -v -tx1 $< | sed -e 's/ *\([0-9a-f][0-9a-f]\)/0x\1,/g'; \
	  echo '0};'; } >$@.tmp && mv $@.tmp $@

$(BUILD)/obj/runtime/codebox.o: $(BUILD)/gen/codebox_driver.h

# ---------------------------------------------------------------- libraries
$(BUILD)/libblcommon.a: $(COMMON_OBJ)
	rm -f $@ && $(AR) rcs $@ $^

$(BUILD)/libboxlite.a: $(RUNTIME_OBJ)
	rm -f $@ && $(AR) rcs $@ $^

LINK_LIBS := $(BUILD)/libboxlite.a $(BUILD)/libblcommon.a

# libboxlite.so (the Python SDK loads it with ctypes): the same objects,
# position-independent; soname libboxlite.so.0, only the public API exported,
# versioned BOXLITE_0 (runtime/libboxlite.map).
$(RUNTIME_OBJ) $(COMMON_OBJ): CFLAGS += -fPIC
$(BUILD)/libboxlite.so: $(RUNTIME_OBJ) $(COMMON_OBJ) runtime/libboxlite.map
	$(CC) -shared $(LDFLAGS) -Wl,-soname,libboxlite.so.0 -Wl,--version-script=runtime/libboxlite.map \
	  -Wl,-z,defs -o $@ $(RUNTIME_OBJ) $(COMMON_OBJ) $(PKG_LIBS)

# ---------------------------------------------------------------- programs
$(BUILD)/boxlite: $(call obj,$(CLI_SRC)) $(LINK_LIBS)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

# `boxlite serve` builds its page and API document in (.incbin).
$(BUILD)/obj/runtime/cli/serve_assets.o: runtime/cli/playground.html runtime/cli/openapi.yaml

$(BUILD)/containerd-shim-boxlite-v2: $(call obj,$(SHIM_SRC)) $(LINK_LIBS)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

# The agent is PID 1 of the guest: static, no libvirt, no NSS.
# libblagent.a: the agent minus main(), also linked by tests/unit/test_agent_*.
AGENT_LIB_SRC := $(filter-out agent/main.c,$(AGENT_SRC))
$(BUILD)/libblagent.a: $(call obj,$(AGENT_LIB_SRC))
	rm -f $@ && $(AR) rcs $@ $^

$(BUILD)/boxlite-agent: $(call obj,agent/main.c) $(BUILD)/libblagent.a $(BUILD)/libblcommon.a
	$(CC) -static $(LDFLAGS) -o $@ $^ -lprotobuf-c -lcap -ljson-c

$(BUILD)/initramfs.cpio: $(BUILD)/boxlite-agent packaging/mkinitramfs.sh
	packaging/mkinitramfs.sh $(BUILD)/boxlite-agent $@

$(BUILD)/vmlinux: guest-kernel-config/boxlite.config guest-kernel-config/build.sh guest-kernel-config/progress.sh
	guest-kernel-config/progress.sh $@

kernel: $(BUILD)/vmlinux

# ---------------------------------------------------------------- tests
tests: $(UNIT_BIN) $(if $(filter 1,$(SAN)),,$(INTEG_BIN))

$(BUILD)/tests/unit/%: tests/unit/%.c $(TESTLIB_OBJ) $(LINK_LIBS) | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/lib $(LDFLAGS) -o $@ $< $(TESTLIB_OBJ) $(LINK_LIBS) $(LIBS)

# The CLI's option parser is tested on its own.
$(BUILD)/tests/unit/test_cli: tests/unit/test_cli.c $(call obj,runtime/cli/options.c) $(TESTLIB_OBJ) \
		$(LINK_LIBS) | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/lib -Iruntime/cli $(LDFLAGS) -o $@ $< \
	  $(call obj,runtime/cli/options.c) $(TESTLIB_OBJ) $(LINK_LIBS) $(LIBS)

# `boxlite serve`'s parsers, linked without serve.c (and main.c).
SERVE_TEST_OBJ = $(call obj,runtime/cli/options.c $(filter-out runtime/cli/serve.c,$(wildcard runtime/cli/serve*.c)))
$(BUILD)/tests/unit/test_serve: tests/unit/test_serve.c $(SERVE_TEST_OBJ) $(TESTLIB_OBJ) \
		$(LINK_LIBS) | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/lib -Iruntime/cli $(LDFLAGS) -o $@ $< $(SERVE_TEST_OBJ) $(TESTLIB_OBJ) \
	  $(LINK_LIBS) $(LIBS)

# Reads the front ends' sources: they may include the public API only.
$(BUILD)/tests/unit/test_public_api: CFLAGS += -DBL_SOURCE_DIR=\"$(CURDIR)\"
# Finds tests/mcp/ (the npm-installed MCP client) in the checkout.
$(BUILD)/tests/integration/test_mcp: CFLAGS += -DBL_SOURCE_DIR=\"$(CURDIR)\"

# Shim unit tests link the shim minus main() (headers in shim/).
SHIM_LIB_OBJ = $(call obj,$(filter-out shim/main.c,$(SHIM_SRC)))
$(BUILD)/tests/unit/test_shim_%: tests/unit/test_shim_%.c $(SHIM_LIB_OBJ) $(TESTLIB_OBJ) \
		$(LINK_LIBS) | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/lib -Ishim $(LDFLAGS) -o $@ $< $(SHIM_LIB_OBJ) $(TESTLIB_OBJ) \
	  $(LINK_LIBS) $(LIBS)

# Agent unit tests reach the agent's internals (headers in agent/).
$(BUILD)/tests/unit/test_agent_%: tests/unit/test_agent_%.c $(TESTLIB_OBJ) $(BUILD)/libblagent.a \
		$(BUILD)/libblcommon.a | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/lib $(LDFLAGS) -o $@ $< $(TESTLIB_OBJ) $(BUILD)/libblagent.a \
	  $(BUILD)/libblcommon.a $(LIBS)

$(BUILD)/tests/integration/%: tests/integration/%.c $(TESTLIB_OBJ) $(LINK_LIBS) | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/lib $(LDFLAGS) -o $@ $< $(TESTLIB_OBJ) $(LINK_LIBS) $(LIBS)

# A static probe the escape suite runs inside sandboxes (tests/escape/).
$(BUILD)/tests/escape-probe: tests/escape/probe.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu17 -O2 -static -Wall -Wextra -Werror -o $@ $<

$(BUILD)/tests/integration/test_escape: $(BUILD)/tests/escape-probe

check: all image test-images
	$(MAKE) SAN=1 BUILD=$(BUILD)/asan tests
	tests/run-tests.sh $(BUILD)

# The long soak (outside CI): 50 sandboxes x 20 cycles of hostile workloads.
soak: all
	BL_SOAK_SANDBOXES=$${BL_SOAK_SANDBOXES:-50} BL_SOAK_CYCLES=$${BL_SOAK_CYCLES:-20} \
	  BOXLITE_BUILD=$(abspath $(BUILD)) $(BUILD)/tests/integration/test_soak

check-unit: tests
	tests/run-tests.sh --unit-only $(BUILD)

check-asan:
	$(MAKE) SAN=1 BUILD=$(BUILD)/asan tests
	tests/run-tests.sh --unit-only $(BUILD)/asan

check-integration: all image test-images
	tests/run-tests.sh --integration-only $(BUILD)

# ---------------------------------------------------------------- fuzzing
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)
FUZZ_SECONDS ?= 60
$(BUILD)/fuzz/%: tests/fuzz/%.c $(COMMON_SRC) $(RUNTIME_SRC) | $(PROTO_H)
	@mkdir -p $(dir $@)
	clang -std=gnu17 -g -O1 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -Icommon -Iruntime \
	  -I$(BUILD)/gen $(PKG_CFLAGS) -o $@ $< $(COMMON_SRC) $(RUNTIME_SRC) $(PROTO_C) $(PKG_LIBS) -pthread

# The ttrpc target needs only common/ and the generated code, not runtime/.
$(BUILD)/fuzz/fuzz_ttrpc: tests/fuzz/fuzz_ttrpc.c $(COMMON_SRC) | $(PROTO_H)
	@mkdir -p $(dir $@)
	clang -std=gnu17 -g -O1 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -Icommon \
	  -I$(BUILD)/gen $(PKG_CFLAGS) -o $@ $< $(COMMON_SRC) $(PROTO_C) $(PKG_LIBS) -pthread

# The agent's request decoding: the agent's own parsers, no runtime/.
AGENT_FUZZ_SRC := agent/spec.c agent/seccomp.c agent/validate.c
$(BUILD)/fuzz/fuzz_agent_request: tests/fuzz/fuzz_agent_request.c $(AGENT_FUZZ_SRC) $(COMMON_SRC) \
		| $(PROTO_H)
	@mkdir -p $(dir $@)
	clang -std=gnu17 -g -O1 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -Icommon \
	  -I$(BUILD)/gen $(PKG_CFLAGS) -o $@ $< $(AGENT_FUZZ_SRC) $(COMMON_SRC) $(PROTO_C) $(PKG_LIBS) \
	  -pthread

# `boxlite serve`'s decoders: its own sources (not serve.c) over the library.
SERVE_FUZZ_SRC := runtime/cli/options.c $(filter-out runtime/cli/serve.c,$(wildcard runtime/cli/serve*.c))
$(BUILD)/fuzz/fuzz_serve: tests/fuzz/fuzz_serve.c $(SERVE_FUZZ_SRC) $(COMMON_SRC) $(RUNTIME_SRC) | $(PROTO_H)
	@mkdir -p $(dir $@)
	clang -std=gnu17 -g -O1 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -Icommon -Iruntime \
	  -Iruntime/cli -I$(BUILD)/gen $(PKG_CFLAGS) -o $@ $< $(SERVE_FUZZ_SRC) $(COMMON_SRC) \
	  $(RUNTIME_SRC) $(PROTO_C) $(PKG_LIBS) -pthread

$(FUZZ_BIN): $(BUILD)/gen/codebox_driver.h

fuzz: $(FUZZ_BIN)
	tests/fuzz/run.sh $(BUILD) $(FUZZ_SECONDS)

BENCH_BIN := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/*.c))
$(BUILD)/bench/%: bench/%.c $(LINK_LIBS) | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LINK_LIBS) $(LIBS)

bench: all $(BENCH_BIN)
	bench/run.sh $(BUILD)

# ---------------------------------------------------------------- misc
SOURCES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
format:
	clang-format -i $(SOURCES)

format-check:
	clang-format --dry-run -Werror $(SOURCES)

clean:
	rm -rf $(BUILD)

# install, man pages, completion, boxlite.pc, the static archive, make deb.
include packaging/dist.mk

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# Keep intermediate objects (test helpers) between runs.
.SECONDARY:
