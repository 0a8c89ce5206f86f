/*
 * The front ends (runtime/cli/, shim/) use the public API only: boxlite.h
 * (with bl_error.h) plus common/'s utility headers, never libboxlite's
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

/* Quoted includes a front end may use, besides headers of its own directory. */
static const char *const allowed[] = {"boxlite.h", "bl_error.h", "bl_cleanup.h",
				      "bl_util.h", "bl_log.h",	 NULL};

static bool own_header(const char *dir, const char *name)
{
	_cleanup_free_ char *p = bl_asprintf("%s/%s", dir, name);
	return strchr(name, '/') == NULL && access(p, R_OK) == 0;
}

/* The shim also speaks containerd's protocol: ttrpc and containerd's own
 * messages (not the agent's), and names sockets by digest. */
static const char *const shim_allowed[] = {
    "ttrpc.h",	    "bl_digest.h",	 "task.pb-c.h", "events.pb-c.h",
    "types.pb-c.h", "cgroups_v2.pb-c.h", NULL};

/* Returns the number of forbidden includes in dir's .c and .h files. */
static int scan(const char *dir, const char *const *extra, int *files)
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
				ok = own_header(dir, name);
				for (size_t i = 0; allowed[i] && !ok; i++)
					ok = !strcmp(name, allowed[i]);
				for (size_t i = 0; extra && extra[i] && !ok; i++)
					ok = !strcmp(name, extra[i]);
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
	CU_ASSERT_EQUAL(scan(BL_SOURCE_DIR "/runtime/cli", NULL, &files), 0);
	CU_ASSERT_EQUAL(scan(BL_SOURCE_DIR "/shim", shim_allowed, &files), 0);
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
