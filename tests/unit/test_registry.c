/* Unit tests of runtime/registry.c against a hostile HTTP server on
 * 127.0.0.1 (a thread here, answering what each case scripts): retries,
 * challenges, oversized and lying manifests, blobs that do not match their
 * digest, servers that ignore Range. The well-behaved cases run against a
 * real docker-registry in tests/integration/test_pull.c. */
#include "bl_test.h"

#include "bl_cleanup.h"
#include "bl_digest.h"
#include "bl_util.h"
#include "registry.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_REQ 16

typedef struct fake {
	int fd, port;
	pthread_t t;
	const char *answers[MAX_REQ]; /* raw responses, in order; the last repeats */
	char requests[MAX_REQ][2048];
	int n;
} fake;

static void *serve(void *p)
{
	fake *f = p;
	for (;;) {
		int c = accept4(f->fd, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0)
			return NULL;
		char buf[4096];
		size_t len = 0;
		while (len < sizeof(buf) - 1) {
			ssize_t k = read(c, buf + len, sizeof(buf) - 1 - len);
			if (k <= 0)
				break;
			len += (size_t)k;
			buf[len] = '\0';
			if (buf[0] == 0x16) /* a TLS hello: answer like a plain HTTP server */
				break;
			if (strstr(buf, "\r\n\r\n"))
				break;
		}
		buf[len] = '\0';
		if (len && buf[0] == 0x16) {
			static const char no_tls[] = "HTTP/1.0 400 Bad Request\r\n\r\n";
			(void)bl_write_full(c, no_tls, sizeof(no_tls) - 1);
			close(c);
			continue;
		}
		int i = f->n < MAX_REQ ? f->n : MAX_REQ - 1;
		snprintf(f->requests[i], sizeof(f->requests[i]), "%.2000s", buf);
		const char *a = NULL;
		for (int k = i; k >= 0 && !a; k--)
			a = f->answers[k];
		f->n++;
		if (a)
			(void)bl_write_full(c, a, strlen(a));
		close(c);
	}
}

static void fake_start(fake *f)
{
	f->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t l = sizeof(a);
	if (f->fd < 0 || bind(f->fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    getsockname(f->fd, (struct sockaddr *)&a, &l) < 0 || listen(f->fd, 16) < 0)
		abort();
	f->port = ntohs(a.sin_port);
	pthread_create(&f->t, NULL, serve, f);
}

static void fake_stop(fake *f)
{
	shutdown(f->fd, SHUT_RDWR);
	close(f->fd);
	pthread_join(f->t, NULL);
}

static bl_registry *client(const fake *f)
{
	char host[64];
	snprintf(host, sizeof(host), "127.0.0.1:%d", f->port);
	bl_registry *r = NULL;
	bl_error_t err = BL_ERROR_INIT;
	if (bl_registry_open(host, host, "t/x", &r, &err) < 0)
		abort();
	return r;
}

static char *answer(const char *status, const char *extra, const char *body)
{
	return bl_asprintf("HTTP/1.1 %s\r\nConnection: close\r\n%sContent-Length: %zu\r\n\r\n%s",
			   status, extra, strlen(body), body);
}

static int get_manifest(fake *f, const char *ref, size_t max, bl_error_t *err, char **body)
{
	bl_registry *r = client(f);
	_cleanup_free_ char *media = NULL;
	size_t len = 0;
	char hex[65];
	int rc = bl_registry_get_manifest(r, ref, max, body, &len, &media, hex, err);
	bl_registry_close(r);
	return rc;
}

static void test_retry_then_ok(void)
{
	setenv("BOXLITE_PULL_RETRIES", "3", 1);
	fake f = {0};
	_cleanup_free_ char *a503 = answer("503 Service Unavailable", "", "busy");
	_cleanup_free_ char *a200 = answer("200 OK", "Content-Type: application/json\r\n", "{}");
	f.answers[0] = a503;
	f.answers[1] = a503;
	f.answers[2] = a200;
	fake_start(&f);
	bl_error_t err = BL_ERROR_INIT;
	_cleanup_free_ char *body = NULL;
	CU_ASSERT_EQUAL(get_manifest(&f, "v1", 1024, &err, &body), 0);
	CU_ASSERT_EQUAL(f.n, 3);
	CU_ASSERT_PTR_NOT_NULL(strstr(f.requests[0], "GET /v2/t/x/manifests/v1 "));
	CU_ASSERT_PTR_NOT_NULL(strstr(f.requests[0], "application/vnd.oci.image.index.v1+json"));
	fake_stop(&f);
	/* Always 503: given up after the retries, naming the status. */
	fake g = {0};
	g.answers[0] = a503;
	fake_start(&g);
	setenv("BOXLITE_PULL_RETRIES", "1", 1);
	CU_ASSERT_EQUAL(get_manifest(&g, "v1", 1024, &err, &body), -BL_ENETWORK);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "503"));
	CU_ASSERT_EQUAL(g.n, 2);
	fake_stop(&g);
}

static void test_hostile_manifests(void)
{
	setenv("BOXLITE_PULL_RETRIES", "0", 1);
	bl_error_t err = BL_ERROR_INIT;
	_cleanup_free_ char *body = NULL;
	/* larger than allowed */
	fake f = {0};
	_cleanup_free_ char *big = bl_malloc0(5000);
	memset(big, ' ', 4999);
	_cleanup_free_ char *abig = answer("200 OK", "", big);
	f.answers[0] = abig;
	fake_start(&f);
	CU_ASSERT_EQUAL(get_manifest(&f, "v1", 1024, &err, &body), -BL_EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "more than"));
	fake_stop(&f);
	/* asked by digest, other bytes sent */
	fake g = {0};
	_cleanup_free_ char *a = answer("200 OK", "", "{\"schemaVersion\":2}");
	g.answers[0] = a;
	fake_start(&g);
	char want[80];
	snprintf(want, sizeof(want), "sha256:%064d", 0);
	CU_ASSERT_EQUAL(get_manifest(&g, want, 1024, &err, &body), -BL_EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "digest mismatch"));
	fake_stop(&g);
	/* a Docker-Content-Digest header that lies about the bytes */
	fake h = {0};
	_cleanup_free_ char *hdr = bl_asprintf("Docker-Content-Digest: %s\r\n", want);
	_cleanup_free_ char *al = answer("200 OK", hdr, "{}");
	h.answers[0] = al;
	fake_start(&h);
	CU_ASSERT_EQUAL(get_manifest(&h, "v1", 1024, &err, &body), -BL_EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "Docker-Content-Digest"));
	fake_stop(&h);
	/* 404 with a registry error body: not found, the registry's words sanitised */
	fake k = {0};
	_cleanup_free_ char *a404 = answer(
	    "404 Not Found", "",
	    "{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\",\"message\":\"no\\u001b[2J such\"}]}");
	k.answers[0] = a404;
	fake_start(&k);
	CU_ASSERT_EQUAL(get_manifest(&k, "v1", 1024, &err, &body), -BL_ENOTFOUND);
	CU_ASSERT_PTR_NULL(strchr(err.msg, '\033'));
	fake_stop(&k);
}

static void test_challenges(void)
{
	setenv("BOXLITE_PULL_RETRIES", "0", 1);
	bl_error_t err = BL_ERROR_INIT;
	_cleanup_free_ char *body = NULL;
	/* 401 without a challenge */
	fake f = {0};
	_cleanup_free_ char *a = answer("401 Unauthorized", "", "");
	f.answers[0] = a;
	fake_start(&f);
	CU_ASSERT_EQUAL(get_manifest(&f, "v1", 1024, &err, &body), -BL_EAUTH);
	fake_stop(&f);
	/* a Bearer realm that is not http(s) */
	fake g = {0};
	_cleanup_free_ char *b = answer(
	    "401 Unauthorized", "WWW-Authenticate: Bearer realm=\"file:///etc/passwd\"\r\n", "");
	g.answers[0] = b;
	fake_start(&g);
	CU_ASSERT_EQUAL(get_manifest(&g, "v1", 1024, &err, &body), -BL_EPROTO);
	CU_ASSERT_EQUAL(g.n, 1);
	fake_stop(&g);
	/* a token server (here the same fake) handing out a token with a CR LF:
	 * refused, never put into a header */
	fake h = {0};
	_cleanup_free_ char *realm = NULL;
	fake_start(&h);
	realm =
	    bl_asprintf("WWW-Authenticate: Bearer realm=\"http://127.0.0.1:%d/token\"\r\n", h.port);
	_cleanup_free_ char *c401 = answer("401 Unauthorized", realm, "");
	_cleanup_free_ char *tok = answer("200 OK", "", "{\"token\":\"a\\r\\nX-Evil: 1\"}");
	h.answers[0] = c401;
	h.answers[1] = tok;
	CU_ASSERT_EQUAL(get_manifest(&h, "v1", 1024, &err, &body), -BL_EPROTO);
	CU_ASSERT_EQUAL(h.n, 2);
	CU_ASSERT_PTR_NOT_NULL(strstr(h.requests[1], "GET /token?scope=repository%3At%2Fx%3Apull"));
	fake_stop(&h);
}

static void test_blob_verify_and_resume(void)
{
	setenv("BOXLITE_PULL_RETRIES", "0", 1);
	const char *data = "0123456789abcdef";
	char hex[65];
	bl_sha256_hex(data, 16, hex);
	_cleanup_free_ char *dir = bl_test_tmpdir("registry-blob");
	_cleanup_free_ char *path = bl_asprintf("%s/blob", dir);
	bl_error_t err = BL_ERROR_INIT;
	/* wrong bytes: mismatch, the file emptied */
	fake f = {0};
	_cleanup_free_ char *bad = answer("200 OK", "", "0123456789abcdeX");
	f.answers[0] = bad;
	fake_start(&f);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	bl_registry *r = client(&f);
	CU_ASSERT_EQUAL(bl_registry_get_blob(r, hex, 16, fd, NULL, NULL, &err), -BL_EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "digest mismatch"));
	struct stat st;
	CU_ASSERT_EQUAL(fstat(fd, &st), 0);
	CU_ASSERT_EQUAL(st.st_size, 0);
	bl_registry_close(r);
	fake_stop(&f);
	/* more bytes than the descriptor: cut off */
	fake g = {0};
	_cleanup_free_ char *more = answer("200 OK", "", "0123456789abcdef-and-more");
	g.answers[0] = more;
	fake_start(&g);
	r = client(&g);
	CU_ASSERT_EQUAL(bl_registry_get_blob(r, hex, 16, fd, NULL, NULL, &err), -BL_EPROTO);
	bl_registry_close(r);
	fake_stop(&g);
	/* a resumed download: the prefix is kept and a Range asked; a server that
	 * ignores it (200, the whole blob) restarts the file, still verified */
	fake h = {0};
	_cleanup_free_ char *part = answer("206 Partial Content", "", "89abcdef");
	h.answers[0] = part;
	fake_start(&h);
	CU_ASSERT_EQUAL(ftruncate(fd, 0), 0);
	CU_ASSERT_EQUAL(pwrite(fd, data, 8, 0), 8);
	CU_ASSERT_EQUAL(lseek(fd, 0, SEEK_END), 8);
	r = client(&h);
	CU_ASSERT_EQUAL(bl_registry_get_blob(r, hex, 16, fd, NULL, NULL, &err), 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(h.requests[0], "Range: bytes=8-"));
	bl_registry_close(r);
	fake_stop(&h);
	fake k = {0};
	_cleanup_free_ char *whole = answer("200 OK", "", data);
	k.answers[0] = whole;
	fake_start(&k);
	CU_ASSERT_EQUAL(ftruncate(fd, 0), 0);
	CU_ASSERT_EQUAL(pwrite(fd, "01234", 5, 0), 5);
	CU_ASSERT_EQUAL(lseek(fd, 0, SEEK_END), 5);
	r = client(&k);
	CU_ASSERT_EQUAL(bl_registry_get_blob(r, hex, 16, fd, NULL, NULL, &err), 0);
	CU_ASSERT_EQUAL(fstat(fd, &st), 0);
	CU_ASSERT_EQUAL(st.st_size, 16);
	bl_registry_close(r);
	fake_stop(&k);
	close(fd);
	(void)bl_rm_rf(dir, NULL);
}

int main(void)
{
	/* No user configuration may leak in. */
	setenv("BOXLITE_REGISTRIES_CONF", "/nonexistent/registries.json", 1);
	setenv("BOXLITE_AUTH_FILE", "/nonexistent/auth.json", 1);
	setenv("DOCKER_CONFIG", "/nonexistent", 1);
	static const bl_test_case tests[] = {
	    {"retry_then_ok", test_retry_then_ok},
	    {"hostile_manifests", test_hostile_manifests},
	    {"challenges", test_challenges},
	    {"blob_verify_and_resume", test_blob_verify_and_resume},
	    {NULL, NULL},
	};
	return bl_test_run("registry", tests);
}
