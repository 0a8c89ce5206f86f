/*
 * The front ends (runtime/cli/, shim/) use the public API only: boxlite.h
 * (with boxlite_error.h) plus common/'s utility headers, never libboxlite's
 * internals, libvirt or the agent protocol. Reads their sources.
 */
#include "bl_cleanup.h"
#include "bl_test.h"
#include "bl_util.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>

#ifndef BL_SOURCE_DIR
#define BL_SOURCE_DIR "."
#endif

/* What "internal" means: any header of libboxlite (runtime/) but its public
 * ones, and the agent protocol (the shim speaks containerd's ttrpc protocol,
 * so ttrpc.h and the containerd .pb-c.h files are fine; common/'s utility
 * headers too). */
static const char *const public_runtime[] = {"boxlite.h", "boxlite_image.h", "boxlite_error.h",
					     NULL};
static const char *const forbidden[] = {"agent.pb-c.h", "bl_agent_proto.h", "ttrpc_internal.h",
					NULL};

static bool is_internal(const char *name)
{
	for (size_t i = 0; forbidden[i]; i++)
		if (!strcmp(name, forbidden[i]))
			return true;
	for (size_t i = 0; public_runtime[i]; i++)
		if (!strcmp(name, public_runtime[i]))
			return false;
	_cleanup_free_ char *p = bl_asprintf("%s/runtime/%s", BL_SOURCE_DIR, name);
	return access(p, F_OK) == 0;
}

static bool own_header(const char *dir, const char *name)
{
	_cleanup_free_ char *p = bl_asprintf("%s/%s", dir, name);
	return strchr(name, '/') == NULL && access(p, R_OK) == 0;
}

/* Returns the number of forbidden includes in dir's .c and .h files. */
static int scan(const char *dir, int *files)
{
	_cleanup_closedir_ DIR *d = opendir(dir);
	if (!d)
		return 0;
	int bad = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name);
		if (n < 3 || (strcmp(de->d_name + n - 2, ".c") && strcmp(de->d_name + n - 2, ".h")))
			continue;
		_cleanup_free_ char *path = bl_asprintf("%s/%s", dir, de->d_name);
		_cleanup_free_ char *buf = NULL;
		if (bl_read_file(path, 4 << 20, &buf, NULL, NULL) < 0)
			continue;
		(*files)++;
		for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
			char *s = line;
			while (*s == ' ' || *s == '\t')
				s++;
			if (strncmp(s, "#include", 8))
				continue;
			s += 8;
			while (*s == ' ')
				s++;
			char name[256] = "";
			bool ok = true;
			if (sscanf(s, "\"%255[^\"]\"", name) == 1) {
				ok = own_header(dir, name) ||
				     (!strstr(name, "..") && !is_internal(name));
			} else if (sscanf(s, "<%255[^>]>", name) == 1) {
				ok = strncmp(name, "libvirt/", 8) != 0;
			}
			if (!ok) {
				printf("\n  %s includes %s (not public API)", path, name);
				bad++;
			}
		}
	}
	return bad;
}

static void test_front_ends_use_public_api(void)
{
	int files = 0;
	CU_ASSERT_EQUAL(scan(BL_SOURCE_DIR "/runtime/cli", &files), 0);
	CU_ASSERT_EQUAL(scan(BL_SOURCE_DIR "/shim", &files), 0);
	CU_ASSERT(files >= 4); /* the CLI's sources were found */
}

/* The public header compiles on its own (it is also included first here). */
#include "boxlite.h"

static void test_header_self_contained(void)
{
	bl_container_options co = {0};
	bl_stats st = {0};
	bl_resources r;
	bl_resources_init(&r);
	CU_ASSERT_EQUAL(r.memory_limit, -1);
	CU_ASSERT_PTR_NULL(co.spec_json);
	CU_ASSERT_EQUAL(st.memory_current, 0);
}

int main(void)
{
	static const bl_test_case tests[] = {
	    {"front ends use the public API only", test_front_ends_use_public_api},
	    {"boxlite.h", test_header_self_contained},
	    {NULL, NULL},
	};
	return bl_test_run("public_api", tests);
}
