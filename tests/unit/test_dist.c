/*
 * What `make install` and the Debian packages ship, checked without a VM
 * (tests/dist/docs.sh): libboxlite.so exports exactly the public API at
 * version BOXLITE_0 with soname libboxlite.so.0; <boxlite/boxlite.h> and
 * boxlite.pc build a program against the shared and the static library;
 * every command of `boxlite help --list` has a man page naming every option
 * its --help prints; the bash completion completes commands and options.
 */
#include "bl_cleanup.h"
#include "bl_test.h"
#include "bl_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

#ifndef BL_SOURCE_DIR
#define BL_SOURCE_DIR "."
#endif

static void check(const char *what)
{
	_cleanup_free_ char *cmd =
	    bl_asprintf("'%s/tests/dist/docs.sh' '%s' '%s' %s", BL_SOURCE_DIR, bl_test_build_dir(),
			BL_SOURCE_DIR, what);
	printf("\n");
	fflush(stdout);
	int st = system(cmd);
	CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void test_exports(void)
{
	check("exports");
}

static void test_headers_and_pkgconfig(void)
{
	check("headers");
}

static void test_man_pages(void)
{
	check("man");
}

static void test_bash_completion(void)
{
	check("completion");
}

int main(void)
{
	static const bl_test_case cases[] = {
	    {"exports are the public API, versioned", test_exports},
	    {"headers and boxlite.pc build a program", test_headers_and_pkgconfig},
	    {"a man page per command with every option", test_man_pages},
	    {"bash completion", test_bash_completion},
	    {NULL, NULL},
	};
	return bl_test_run("dist", cases);
}
