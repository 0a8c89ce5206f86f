/* Unit tests of runtime/image_ref.c: Docker reference parsing and
 * normalisation, against the forms docker itself accepts and refuses. */
#include "bl_test.h"

#include "bl_cleanup.h"
#include "image_ref.h"

#include <stdio.h>
#include <string.h>

#define HEX "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void expect(const char *in, const char *want)
{
	bl_image_ref r;
	bl_error_t err = BL_ERROR_INIT;
	int rc = bl_image_ref_parse(in, &r, &err);
	if (rc < 0)
		fprintf(stderr, "%s: %s\n", in, err.msg);
	CU_ASSERT_EQUAL_FATAL(rc, 0);
	_cleanup_free_ char *s = bl_image_ref_string(&r);
	if (strcmp(s, want))
		fprintf(stderr, "%s -> %s, want %s\n", in, s, want);
	CU_ASSERT_STRING_EQUAL(s, want);
}

static void test_normalise(void)
{
	expect("busybox", "docker.io/library/busybox:latest");
	expect("python:3.11-slim", "docker.io/library/python:3.11-slim");
	expect("org/app:1.2", "docker.io/org/app:1.2");
	expect("docker.io/busybox", "docker.io/library/busybox:latest");
	expect("index.docker.io/library/busybox:1", "docker.io/library/busybox:1");
	expect("ghcr.io/org/app@sha256:" HEX, "ghcr.io/org/app@sha256:" HEX);
	expect("ghcr.io/org/app:v1@sha256:" HEX, "ghcr.io/org/app:v1@sha256:" HEX);
	expect("localhost/x", "localhost/x:latest");
	expect("localhost:5000/team/tool:t", "localhost:5000/team/tool:t");
	expect("127.0.0.1:5000/a/b/c:Tag_1.x-y", "127.0.0.1:5000/a/b/c:Tag_1.x-y");
	expect("[::1]:5000/x", "[::1]:5000/x:latest");
	expect("a.b-c/d__e/f---g.h_i", "a.b-c/d__e/f---g.h_i:latest");
}

static void test_refuse(void)
{
	static const char *const bad[] = {
	    "",
	    "Busybox",		   /* uppercase repository */
	    "busybox:",		   /* empty tag */
	    "busybox:-x",	   /* tag starting with '-' */
	    "busybox@sha256:abc",  /* short digest */
	    "busybox@md5:" HEX,	   /* other algorithm */
	    "/busybox",		   /* empty component */
	    "a//b",		   /* empty component */
	    "a/b/",		   /* trailing slash */
	    "-a/b",		   /* component starting with '-' */
	    "a_/b",		   /* ending with a separator */
	    "a...b",		   /* three dots */
	    "host:99999/x",	   /* port out of range */
	    "ho_st.io/x",	   /* bad host */
	    "../etc/passwd",	   /* no dots as components */
	    "x.tar/../../y",	   /* nor traversal */
	    "ghcr.io/org/app:1:2", /* two tags */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		bl_image_ref r;
		bl_error_t err = BL_ERROR_INIT;
		if (bl_image_ref_parse(bad[i], &r, &err) == 0)
			fprintf(stderr, "accepted '%s'\n", bad[i]);
		CU_ASSERT_EQUAL(bl_image_ref_parse(bad[i], &r, &err), -BL_EINVAL);
	}
	char longname[400];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	CU_ASSERT_FALSE(bl_image_ref_valid(longname));
}

static void test_parts(void)
{
	bl_image_ref r;
	CU_ASSERT_EQUAL_FATAL(bl_image_ref_parse("busybox@sha256:" HEX, &r, NULL), 0);
	CU_ASSERT_STRING_EQUAL(r.domain, "docker.io");
	CU_ASSERT_STRING_EQUAL(r.path, "library/busybox");
	CU_ASSERT_STRING_EQUAL(r.tag, "");
	CU_ASSERT_STRING_EQUAL(r.digest_hex, HEX);
	CU_ASSERT_STRING_EQUAL(bl_image_ref_api_host(&r), "registry-1.docker.io");
	CU_ASSERT_TRUE(bl_image_ref_has_domain("127.0.0.1:5000/x"));
	CU_ASSERT_TRUE(bl_image_ref_has_domain("localhost/x"));
	CU_ASSERT_FALSE(bl_image_ref_has_domain("busybox"));
	CU_ASSERT_FALSE(bl_image_ref_has_domain("org/app"));
	CU_ASSERT_EQUAL_FATAL(bl_image_ref_parse("127.0.0.1:5000/t/x:v", &r, NULL), 0);
	CU_ASSERT_STRING_EQUAL(bl_image_ref_api_host(&r), "127.0.0.1:5000");
	_cleanup_free_ char *repo = bl_image_ref_repo(&r);
	CU_ASSERT_STRING_EQUAL(repo, "127.0.0.1:5000/t/x");
}

int main(void)
{
	static const bl_test_case tests[] = {
	    {"normalise", test_normalise},
	    {"refuse", test_refuse},
	    {"parts", test_parts},
	    {NULL, NULL},
	};
	return bl_test_run("image_ref", tests);
}
