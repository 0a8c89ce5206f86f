/* `boxlite serve`'s parsers of untrusted input: request bodies, exec
 * requests, the config file, tokens, base64 and the UTF-8 of guest output. */
#include "bl_test.h"
#include "bl_util.h"
#include "serve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

srv_state *srv; /* serve.c's, which this test does not link */

static void test_parse_body(void)
{
	static const char *const bad[] = {"",		"{",	     "[1]",	   "1",
					  "\"s\"",	"{} {}",     "{\"a\":1,}", "nul",
					  "{\"a\":01}", "{\"a\" 1}", "{\"a\":1} x"};
	for (size_t i = 0; i < BL_ARRAY_SIZE(bad); i++) {
		bl_error_t err = BL_ERROR_INIT;
		json_object *o = srv_parse_body(bad[i], strlen(bad[i]), &err);
		CU_ASSERT_PTR_NULL(o);
		CU_ASSERT_EQUAL(err.code, BL_EINVAL);
		json_object_put(o);
	}
	json_object *o = srv_parse_body(" {\"a\": [1, {\"b\": null}]}\n", 25, NULL);
	CU_ASSERT_PTR_NOT_NULL(o);
	json_object_put(o);
	/* Nesting past the depth limit is refused, not recursed into. */
	char deep[4096];
	size_t n = 0;
	deep[n++] = '{';
	memcpy(deep + n, "\"a\":", 4);
	n += 4;
	for (int i = 0; i < 1000; i++)
		deep[n++] = '[';
	deep[n] = '\0';
	CU_ASSERT_PTR_NULL(srv_parse_body(deep, n, NULL));
}

static void test_base64(void)
{
	const unsigned char data[] = {0, 1, 2, 0xff, 0xfe, 'x', 'y'};
	for (size_t len = 0; len <= sizeof(data); len++) {
		char *s = srv_base64(data, len);
		size_t back = 99;
		unsigned char *d = srv_unbase64(s, &back);
		CU_ASSERT_PTR_NOT_NULL_FATAL(d);
		CU_ASSERT_EQUAL(back, len);
		CU_ASSERT(memcmp(d, data, len) == 0);
		free(d);
		free(s);
	}
	char *s = srv_base64("hello", 5);
	CU_ASSERT_STRING_EQUAL(s, "aGVsbG8=");
	free(s);
	size_t n;
	static const char *const bad[] = {"a$==", "aGVs=bG8", "aGVsbG8===", "aG=", "\x80"};
	for (size_t i = 0; i < BL_ARRAY_SIZE(bad); i++)
		CU_ASSERT_PTR_NULL(srv_unbase64(bad[i], &n));
}

static void test_json_text(void)
{
	static const struct {
		const char *in;
		size_t len;
		const char *out;
	} cases[] = {
	    {"plain\n", 6, "plain\n"},
	    {"\xc3\xa9t\xc3\xa9", 5, "\xc3\xa9t\xc3\xa9"},
	    {"a\xffz", 3, "a\xef\xbf\xbdz"},
	    {"\xc0\xaf", 2, "\xef\xbf\xbd\xef\xbf\xbd"},		 /* overlong */
	    {"\xed\xa0\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* surrogate */
	    {"\xe2\x82", 2, "\xef\xbf\xbd\xef\xbf\xbd"},		 /* cut short */
	    {"\xf0\x9f\x98\x80", 4, "\xf0\x9f\x98\x80"},
	    {"n\0l", 3, "n\0l"},
	};
	for (size_t i = 0; i < BL_ARRAY_SIZE(cases); i++) {
		json_object *j = srv_json_text(cases[i].in, cases[i].len);
		size_t want = i == 7 ? 3 : strlen(cases[i].out);
		if ((size_t)json_object_get_string_len(j) != want)
			printf("case %zu: %d bytes\n", i, json_object_get_string_len(j));
		CU_ASSERT_EQUAL((size_t)json_object_get_string_len(j), want);
		CU_ASSERT(memcmp(json_object_get_string(j), cases[i].out, want) == 0);
		json_object_put(j);
	}
}

static int parse_exec(const char *body, srv_exec_req *e)
{
	memset(e, 0, sizeof(*e));
	json_object *j = srv_parse_body(body, strlen(body), NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(j);
	bl_error_t err = BL_ERROR_INIT;
	int r = srv_exec_req_parse(j, e, &err);
	json_object_put(j);
	if (r < 0)
		CU_ASSERT_EQUAL(err.code, BL_EINVAL);
	return r;
}

static void test_exec_request(void)
{
	srv_exec_req e;
	CU_ASSERT_EQUAL(
	    parse_exec("{\"cmd\": \"echo hi | wc\", \"env\": {\"A\": \"1\"}, \"cwd\": "
		       "\"/tmp\", \"stdin_base64\": \"aGk=\", \"timeout_seconds\": 1.5}",
		       &e),
	    0);
	CU_ASSERT_STRING_EQUAL(e.argv[0], "/bin/sh");
	CU_ASSERT_STRING_EQUAL(e.argv[2], "echo hi | wc");
	CU_ASSERT_STRING_EQUAL(e.env[0], "A=1");
	CU_ASSERT_EQUAL(e.stdin_len, 2);
	CU_ASSERT(e.timeout == 1.5);
	srv_exec_req_clear(&e);
	CU_ASSERT_EQUAL(
	    parse_exec("{\"argv\": [\"ls\", \"-l\"], \"env\": [\"K=V\"], \"stdin\": \"x\", "
		       "\"stdin_open\": true}",
		       &e),
	    0);
	CU_ASSERT_STRING_EQUAL(e.argv[1], "-l");
	CU_ASSERT_PTR_NULL(e.argv[2]);
	CU_ASSERT(e.stdin_open);
	srv_exec_req_clear(&e);
	static const char *const bad[] = {
	    "{}",
	    "{\"cmd\": []}",
	    "{\"cmd\": [\"\"]}",
	    "{\"cmd\": [1]}",
	    "{\"cmd\": {}}",
	    "{\"cmd\": [\"a\\u0000b\"]}",
	    "{\"cmd\": [\"ls\"], \"env\": [\"NOEQ\"]}",
	    "{\"cmd\": [\"ls\"], \"env\": [\"=V\"]}",
	    "{\"cmd\": [\"ls\"], \"env\": {\"A=B\": \"c\"}}",
	    "{\"cmd\": [\"ls\"], \"env\": {\"A\": 1}}",
	    "{\"cmd\": [\"ls\"], \"env\": 3}",
	    "{\"cmd\": [\"ls\"], \"cwd\": \"rel\"}",
	    "{\"cmd\": [\"ls\"], \"user\": 5}",
	    "{\"cmd\": [\"ls\"], \"stdin\": 5}",
	    "{\"cmd\": [\"ls\"], \"stdin_base64\": \"!!\"}",
	    "{\"cmd\": [\"ls\"], \"timeout_seconds\": 0}",
	    "{\"cmd\": [\"ls\"], \"timeout_seconds\": \"1\"}",
	};
	for (size_t i = 0; i < BL_ARRAY_SIZE(bad); i++) {
		CU_ASSERT(parse_exec(bad[i], &e) < 0);
		srv_exec_req_clear(&e);
	}
}

static int load_config(const char *text, srv_config *c, bl_error_t *err)
{
	char path[] = "/tmp/boxlite-test-serve-XXXXXX";
	int fd = mkstemp(path);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL(bl_write_full(fd, text, strlen(text)), 0);
	close(fd);
	memset(c, 0, sizeof(*c));
	int r = srv_config_load(path, c, err);
	unlink(path);
	return r;
}

static void test_config(void)
{
	srv_config c;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(
	    load_config("{\"listen\": \"127.0.0.1:9000\", \"tenants\": ["
			"{\"name\": \"a\", \"token\": \"aaaaaaaa1\", \"quota\": "
			"{\"sandboxes\": 2, \"memory_mb\": 1024, \"cpus\": 3}},"
			"{\"name\": \"b.x-y_z\", \"token\": \"bbbbbbbb2\", \"pull\": false}],"
			"\"limits\": {\"max_body_bytes\": 100, \"exec_timeout_seconds\": 5}}",
			&c, &err),
	    0);
	CU_ASSERT_STRING_EQUAL(c.listen, "127.0.0.1:9000");
	CU_ASSERT_EQUAL(c.n_tenants, 2);
	CU_ASSERT_EQUAL(c.tenants[0].max_sandboxes, 2);
	CU_ASSERT_EQUAL(c.tenants[0].max_memory_mib, 1024);
	CU_ASSERT_EQUAL(c.tenants[0].max_cpus, 3);
	CU_ASSERT(c.tenants[0].allow_pull);
	CU_ASSERT(!c.tenants[1].allow_pull);
	CU_ASSERT_EQUAL(c.max_body, 100);
	CU_ASSERT_EQUAL(c.exec_timeout, 5);
	CU_ASSERT_EQUAL(c.max_file, 64 << 20); /* a default */
	CU_ASSERT_PTR_EQUAL(srv_tenant_by_token(&c, "aaaaaaaa1"), &c.tenants[0]);
	CU_ASSERT_PTR_EQUAL(srv_tenant_by_token(&c, "bbbbbbbb2"), &c.tenants[1]);
	CU_ASSERT_PTR_NULL(srv_tenant_by_token(&c, "aaaaaaaa"));
	CU_ASSERT_PTR_NULL(srv_tenant_by_token(&c, "aaaaaaaa12"));
	CU_ASSERT_PTR_NULL(srv_tenant_by_token(&c, ""));
	CU_ASSERT_PTR_NULL(srv_tenant_by_token(&c, NULL));
	srv_config_clear(&c);
	static const char *const bad[] = {
	    "{}",
	    "{\"tenants\": []}",
	    "{\"tenants\": [{\"name\": \"a\", \"token\": \"short\"}]}",
	    "{\"tenants\": [{\"name\": \"a b\", \"token\": \"aaaaaaaa1\"}]}",
	    "{\"tenants\": [{\"token\": \"aaaaaaaa1\"}]}",
	    "{\"tenants\": [{\"name\": \"a\", \"token\": \"aaaa aaaa1\"}]}",
	    "{\"tenants\": [{\"name\": \"a\", \"token\": \"aaaaaaaa1\"}, {\"name\": \"a\", "
	    "\"token\": "
	    "\"bbbbbbbb1\"}]}",
	    "{\"tenants\": [{\"name\": \"a\", \"token\": \"aaaaaaaa1\"}, {\"name\": \"b\", "
	    "\"token\": "
	    "\"aaaaaaaa1\"}]}",
	    "{\"tenants\": [{\"name\": \"a\", \"token\": \"aaaaaaaa1\", \"quota\": {\"cpus\": "
	    "-1}}]}",
	    "{\"tenants\": [{\"name\": \"a\", \"token\": \"aaaaaaaa1\", \"quota\": 3}]}",
	    "{\"tenants\": [{\"name\": \"a\", \"token\": \"aaaaaaaa1\"}], \"limits\": "
	    "{\"max_body_bytes\": "
	    "\"x\"}}",
	    "{\"tenants\": [{\"name\": \"a\", \"token\": \"aaaaaaaa1\"}], \"listen\": 5}",
	    "{\"tenants\": [{\"name\": \"a\", \"token\": \"aaaaaaaa1\"}]",
	};
	for (size_t i = 0; i < BL_ARRAY_SIZE(bad); i++) {
		bl_error_t e2 = BL_ERROR_INIT;
		CU_ASSERT(load_config(bad[i], &c, &e2) < 0);
		CU_ASSERT_EQUAL(e2.code, BL_EINVAL);
		CU_ASSERT(strstr(e2.msg, "config /tmp/") == e2.msg);
		srv_config_clear(&c);
	}
}

int main(void)
{
	static const bl_test_case tests[] = {
	    {"request bodies", test_parse_body},
	    {"base64", test_base64},
	    {"guest text as JSON strings", test_json_text},
	    {"exec requests", test_exec_request},
	    {"config file", test_config},
	    {NULL, NULL},
	};
	return bl_test_run("serve", tests);
}
