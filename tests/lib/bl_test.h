/* Shared CUnit scaffolding for boxlite's test programs. */
#pragma once

#include <CUnit/CUnit.h>
#include <stdbool.h>

typedef struct bl_test_case {
	const char *name;
	void (*fn)(void);
} bl_test_case;

/* Runs one suite of tests (NULL-name terminated) with CUnit's basic runner;
 * returns the process exit code (0 only when every test passed). */
int bl_test_run(const char *suite, const bl_test_case *tests);

/* Marks the running test as skipped, with a reason CI prints; the caller
 * returns right after. */
void bl_test_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* True when the test process runs as root (integration tests need it). */
bool bl_test_is_root(void);

/* Directory of the build tree (BOXLITE_BUILD, else "build"). */
const char *bl_test_build_dir(void);

/* Makes a fresh temporary directory; returns a malloc'd path. */
char *bl_test_tmpdir(const char *tag);

#define BL_SKIP_UNLESS(cond, ...)                  \
	do {                                       \
		if (!(cond)) {                     \
			bl_test_skip(__VA_ARGS__); \
			return;                    \
		}                                  \
	} while (0)

/* Number of processes whose command line (NULs read as spaces) contains needle. */
int bl_test_count_procs(const char *needle);

/* Connects to a unix socket, retrying until timeout_ms; returns fd or -1. */
int bl_test_connect_unix(const char *path, int timeout_ms);

/* Reads one '\n'-terminated line (without it) within timeout_ms; returns its
 * length or -1. */
int bl_test_read_line(int fd, char *buf, size_t len, int timeout_ms);

/* Paths of the guest kernel and initramfs in the build tree (malloc'd). */
char *bl_test_kernel(void);
char *bl_test_initrd(void);
