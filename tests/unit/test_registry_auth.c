/* Unit tests of runtime/registry_auth.c: what a registry sends besides blobs
 * (challenges, token and error bodies), credentials files and the
 * registries config. */
#include "bl_test.h"

#include "bl_cleanup.h"
#include "bl_util.h"
#include "registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int challenge(const char *h, bl_auth_challenge *c)
{
	bl_error_t err = BL_ERROR_INIT;
	return bl_registry_parse_challenge(h, strlen(h), c, &err);
}

static void test_challenge(void)
{
	bl_auth_challenge c;
	CU_ASSERT_EQUAL_FATAL(
	    challenge(
		"Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\","
		"scope=\"repository:library/busybox:pull\"",
		&c),
	    0);
	CU_ASSERT_EQUAL(c.scheme, BL_AUTH_BEARER);
	CU_ASSERT_STRING_EQUAL(c.realm, "https://auth.docker.io/token");
	CU_ASSERT_STRING_EQUAL(c.service, "registry.docker.io");
	CU_ASSERT_STRING_EQUAL(c.scope, "repository:library/busybox:pull");
	CU_ASSERT_EQUAL_FATAL(challenge("basic realm=Registry, charset=\"UTF-8\"", &c), 0);
	CU_ASSERT_EQUAL(c.scheme, BL_AUTH_BASIC);
	CU_ASSERT_STRING_EQUAL(c.realm, "Registry");
	/* quoted-pair escapes */
	CU_ASSERT_EQUAL_FATAL(challenge("Bearer realm=\"http://h/t\\\"x\" , service=s", &c), 0);
	CU_ASSERT_STRING_EQUAL(c.realm, "http://h/t\"x");
	static const char *const bad[] = {
	    "Negotiate abc",			   /* unsupported scheme */
	    "Bearer realm=\"file:///etc/passwd\"", /* not http(s) */
	    "Bearer realm",			   /* no value */
	    "Bearer realm=\"https://x",		   /* unterminated */
	    "Bearer realm=\"https://x\" junk",	   /* garbage after a param */
	    "Bearer realm=\"https://a\nb\"",	   /* control character */
	    "",
	};
	for (size_t i = 0; i < BL_ARRAY_SIZE(bad); i++)
		CU_ASSERT_EQUAL(challenge(bad[i], &c), -BL_EPROTO);
	char big[9000];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	memcpy(big, "Bearer realm=\"", 14);
	CU_ASSERT_EQUAL(challenge(big, &c), -BL_EPROTO);
}

static void test_token_and_errors(void)
{
	bl_error_t err = BL_ERROR_INIT;
	char *tok = NULL;
	int exp = -1;
	const char *t1 = "{\"token\":\"abc.def.ghi\",\"expires_in\":300}";
	CU_ASSERT_EQUAL_FATAL(bl_registry_parse_token(t1, strlen(t1), &tok, &exp, &err), 0);
	CU_ASSERT_STRING_EQUAL(tok, "abc.def.ghi");
	CU_ASSERT_EQUAL(exp, 300);
	free(tok);
	const char *t2 = "{\"access_token\":\"xyz\"}";
	CU_ASSERT_EQUAL_FATAL(bl_registry_parse_token(t2, strlen(t2), &tok, &exp, &err), 0);
	CU_ASSERT_STRING_EQUAL(tok, "xyz");
	free(tok);
	static const char *const bad[] = {"{}",
					  "{\"token\":\"\"}",
					  "{\"token\":\"a b\"}",
					  "{\"token\":\"a\\r\\nX-Evil: 1\"}",
					  "{\"token\":5}",
					  "[]",
					  "{\"token\":\"x\"} trailing"};
	for (size_t i = 0; i < BL_ARRAY_SIZE(bad); i++) {
		tok = NULL;
		CU_ASSERT_EQUAL(bl_registry_parse_token(bad[i], strlen(bad[i]), &tok, &exp, &err),
				-BL_EPROTO);
		CU_ASSERT_PTR_NULL(tok);
	}
	char code[32], msg[64];
	const char *e = "{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\",\"message\":\"manifest "
			"unknown\\u001b[31m\"}]}";
	CU_ASSERT_EQUAL(
	    bl_registry_parse_errors(e, strlen(e), code, sizeof(code), msg, sizeof(msg)), 0);
	CU_ASSERT_STRING_EQUAL(code, "MANIFEST_UNKNOWN");
	CU_ASSERT_STRING_EQUAL(msg, "manifest unknown?[31m"); /* escape neutralised */
	CU_ASSERT_EQUAL(bl_registry_parse_errors("<html>", 6, code, sizeof(code), msg, sizeof(msg)),
			-BL_EPROTO);
	CU_ASSERT_STRING_EQUAL(code, "");
}

static void test_creds_files(void)
{
	_cleanup_free_ char *dir = bl_test_tmpdir("regauth");
	_cleanup_free_ char *auth = bl_asprintf("%s/sub/auth.json", dir);
	_cleanup_free_ char *docker = bl_asprintf("%s/docker", dir);
	_cleanup_free_ char *dcfg = bl_asprintf("%s/config.json", docker);
	setenv("BOXLITE_AUTH_FILE", auth, 1);
	setenv("DOCKER_CONFIG", docker, 1);
	bl_error_t err = BL_ERROR_INIT;
	char *u = NULL, *p = NULL;
	CU_ASSERT_EQUAL(bl_registry_creds("reg.example:5000", &u, &p, &err), 0);
	CU_ASSERT_PTR_NULL(u);
	/* docker's file, with the Docker Hub alias docker uses */
	CU_ASSERT_EQUAL_FATAL(bl_mkdir_p(docker, 0700, &err), 0);
	const char *dj = "{\"auths\":{\"https://index.docker.io/v1/\":{\"auth\":\"aHViOnB3\"},"
			 "\"reg.example:5000\":{\"auth\":\"ZDpkcA==\"}}}";
	CU_ASSERT_EQUAL_FATAL(bl_write_file(dcfg, dj, strlen(dj), 0600, &err), 0);
	CU_ASSERT_EQUAL(bl_registry_creds("docker.io", &u, &p, &err), 0);
	CU_ASSERT_STRING_EQUAL(u ? u : "", "hub");
	CU_ASSERT_STRING_EQUAL(p ? p : "", "pw");
	free(u);
	free(p);
	/* boxlite's own file wins, is 0600, and logout removes the entry */
	CU_ASSERT_EQUAL(bl_registry_creds_store("reg.example:5000", "me", "p:w", &err), 0);
	struct stat st;
	CU_ASSERT_EQUAL(stat(auth, &st), 0);
	CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
	CU_ASSERT_EQUAL(bl_registry_creds("reg.example:5000", &u, &p, &err), 0);
	CU_ASSERT_STRING_EQUAL(u ? u : "", "me");
	CU_ASSERT_STRING_EQUAL(p ? p : "", "p:w");
	free(u);
	free(p);
	CU_ASSERT_EQUAL(bl_registry_creds_store("reg.example:5000", NULL, NULL, &err), 0);
	CU_ASSERT_EQUAL(bl_registry_creds("reg.example:5000", &u, &p, &err), 0);
	CU_ASSERT_STRING_EQUAL(u ? u : "", "d"); /* back to docker's */
	free(u);
	free(p);
	CU_ASSERT_EQUAL(bl_registry_creds_store("x", "a:b", "c", &err), -BL_EINVAL);
	/* malformed auth */
	const char *bad = "{\"auths\":{\"h\":{\"auth\":\"!!!!\"}}}";
	CU_ASSERT_EQUAL_FATAL(bl_write_file(dcfg, bad, strlen(bad), 0600, &err), 0);
	CU_ASSERT_EQUAL(bl_registry_creds("h", &u, &p, &err), -BL_EPROTO);
	unsetenv("BOXLITE_AUTH_FILE");
	unsetenv("DOCKER_CONFIG");
	(void)bl_rm_rf(dir, NULL);
}

static void test_conf(void)
{
	bl_error_t err = BL_ERROR_INIT;
	bl_registry_conf c;
	const char *j = "{\"registries\":{\"r:5000\":{\"insecure\":true,\"ca\":\"/ca.pem\","
			"\"mirrors\":[\"m1:80\",\"m2\"]}},\"store\":{\"max_bytes\":1000}}";
	CU_ASSERT_EQUAL_FATAL(bl_registry_conf_parse(j, strlen(j), "r:5000", &c, &err), 0);
	CU_ASSERT_TRUE(c.insecure);
	CU_ASSERT_STRING_EQUAL(c.ca_file, "/ca.pem");
	CU_ASSERT_STRING_EQUAL(c.mirrors[0], "m1:80");
	CU_ASSERT_STRING_EQUAL(c.mirrors[1], "m2");
	CU_ASSERT_PTR_NULL(c.mirrors[2]);
	CU_ASSERT_EQUAL(c.store_max_bytes, 1000);
	bl_registry_conf_clear(&c);
	CU_ASSERT_EQUAL_FATAL(bl_registry_conf_parse(j, strlen(j), "other", &c, &err), 0);
	CU_ASSERT_FALSE(c.insecure);
	CU_ASSERT_PTR_NULL(c.mirrors[0]);
	bl_registry_conf_clear(&c);
	const char *bad = "{\"registries\":{\"r\":{\"mirrors\":[1]}}}";
	CU_ASSERT_EQUAL(bl_registry_conf_parse(bad, strlen(bad), "r", &c, &err), -BL_EINVAL);
	CU_ASSERT_TRUE(bl_registry_host_is_loopback("127.0.0.1:5000"));
	CU_ASSERT_TRUE(bl_registry_host_is_loopback("127.1.2.3"));
	CU_ASSERT_TRUE(bl_registry_host_is_loopback("localhost:80"));
	CU_ASSERT_TRUE(bl_registry_host_is_loopback("[::1]:5000"));
	CU_ASSERT_FALSE(bl_registry_host_is_loopback("127.0.0.1.evil.com"));
	CU_ASSERT_FALSE(bl_registry_host_is_loopback("10.0.0.1"));
	CU_ASSERT_FALSE(bl_registry_host_is_loopback("localhost.evil.com"));
}

int main(void)
{
	static const bl_test_case tests[] = {
	    {"challenge", test_challenge},
	    {"token_and_errors", test_token_and_errors},
	    {"creds_files", test_creds_files},
	    {"conf", test_conf},
	    {NULL, NULL},
	};
	return bl_test_run("registry_auth", tests);
}
