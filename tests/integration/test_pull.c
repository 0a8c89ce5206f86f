/* Pulls from a REAL registry: Debian's docker-registry, started here on
 * 127.0.0.1 only (own config, own storage, free ports), images built here
 * (tests/lib/bl_image_gen.c) and pushed with skopeo; loopback helpers in
 * tests/lib/registry_helper.py (a tampering/throttling proxy, a token server).
 * Nothing here contacts anything but 127.0.0.1. */
#include "bl_test.h"
#include "bl_image_gen.h"

#include "bl_cleanup.h"
#include "bl_digest.h"
#include "bl_util.h"
#include "image.h"
#include "sandbox_env.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char *base;	/* scratch dir of this run */
static char *helper;	/* tests/lib/registry_helper.py */
static bool have_tools; /* docker-registry, skopeo, python3, openssl, htpasswd */

#define NEED_TOOLS()                                                                            \
	BL_SKIP_UNLESS(have_tools, "needs docker-registry, skopeo, python3, openssl, htpasswd " \
				   "(packaging/install-deps.sh)")

/* ------------------------------------------------------------ processes */

static int free_port(void)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t l = sizeof(a);
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    getsockname(s, (struct sockaddr *)&a, &l) < 0)
		abort();
	close(s);
	return ntohs(a.sin_port);
}

static bool port_open(int port)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	bool ok = connect(s, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(s);
	return ok;
}

static bool wait_port(int port, int ms)
{
	for (int t = 0; t < ms; t += 50) {
		if (port_open(port))
			return true;
		usleep(50000);
	}
	return false;
}

/* Every server spawned, so a test that stops half-way leaks none of them. */
static pid_t spawned[64];
static size_t n_spawned;

static void kill_spawned(void)
{
	for (size_t i = 0; i < n_spawned; i++)
		if (spawned[i] > 0 && kill(spawned[i], SIGKILL) == 0)
			(void)waitpid(spawned[i], NULL, 0);
	n_spawned = 0;
}

static pid_t spawn(char *const argv[], const char *log)
{
	pid_t pid = fork();
	if (pid > 0 && n_spawned < BL_ARRAY_SIZE(spawned))
		spawned[n_spawned++] = pid;
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		if (nul >= 0)
			dup2(nul, 0);
		execvp(argv[0], argv);
		_exit(127);
	}
	return pid;
}

static void stop(pid_t *pid)
{
	if (*pid > 0) {
		kill(*pid, SIGKILL);
		(void)waitpid(*pid, NULL, 0);
		for (size_t i = 0; i < n_spawned; i++)
			if (spawned[i] == *pid)
				spawned[i] = -1;
	}
	*pid = -1;
}

static int sh(const char *cmd)
{
	int r = system(cmd);
	return WIFEXITED(r) ? WEXITSTATUS(r) : -1;
}

/* ------------------------------------------------------------ servers */

typedef struct server {
	int port;
	pid_t pid;
	char *dir, *config;
} server;

/* A docker-registry on 127.0.0.1:port (0: a free one) with extra YAML under http/auth. */
static bool registry_start(server *s, const char *tag, int port, const char *tls_yaml,
			   const char *auth_yaml)
{
	s->port = port ? port : free_port();
	if (!s->dir) {
		s->dir = bl_asprintf("%s/reg-%s", base, tag);
		(void)mkdir(s->dir, 0700);
	}
	s->config = bl_asprintf("%s/config.yml", s->dir);
	_cleanup_free_ char *yml =
	    bl_asprintf("version: 0.1\n"
			"log:\n  level: error\n"
			"storage:\n  filesystem:\n    rootdirectory: %s/data\n"
			"  delete:\n    enabled: true\n"
			"http:\n  addr: 127.0.0.1:%d\n%s"
			"%s",
			s->dir, s->port, tls_yaml ? tls_yaml : "", auth_yaml ? auth_yaml : "");
	bl_gen_write(s->config, yml, strlen(yml));
	_cleanup_free_ char *log = bl_asprintf("%s/log", s->dir);
	char *argv[] = {"docker-registry", "serve", s->config, NULL};
	s->pid = spawn(argv, log);
	bool ok = wait_port(s->port, 20000);
	if (!ok)
		fprintf(stderr, "registry %s did not start (see %s)\n", tag, log);
	return ok;
}

static void server_stop(server *s)
{
	stop(&s->pid);
	free(s->config);
	s->config = NULL;
}

static void server_free(server *s)
{
	server_stop(s);
	free(s->dir);
	s->dir = NULL;
}

/* The proxy of registry_helper.py in front of upstream. */
static bool proxy_start(server *s, int port, int upstream, const char *flags)
{
	s->port = port ? port : free_port();
	if (!s->dir)
		s->dir = bl_asprintf("%s/proxy-%d", base, s->port);
	(void)mkdir(s->dir, 0700);
	_cleanup_free_ char *log = bl_asprintf("%s/log", s->dir);
	_cleanup_free_ char *cmd =
	    bl_asprintf("exec python3 %s proxy --port %d --upstream %d --log %s/requests %s",
			helper, s->port, upstream, s->dir, flags ? flags : "");
	char *argv[] = {"sh", "-c", cmd, NULL};
	s->pid = spawn(argv, log);
	return wait_port(s->port, 20000);
}

/* Requests the proxy saw matching needle. */
static int proxy_count(const server *s, const char *needle)
{
	_cleanup_free_ char *p = bl_asprintf("%s/requests", s->dir);
	_cleanup_fclose_ FILE *f = fopen(p, "re");
	char line[1024];
	int n = 0;
	while (f && fgets(line, sizeof(line), f))
		if (strstr(line, needle))
			n++;
	return n;
}

/* ------------------------------------------------------------ images */

static char *random_text(size_t n, unsigned seed)
{
	char *s = bl_malloc0(n + 1);
	srand(seed);
	for (size_t i = 0; i < n; i++)
		s[i] = (char)(33 + rand() % 90);
	return s;
}

typedef struct image {
	char *dir;
	char hex[65];
} image;

/* An OCI layout of two layers: a shared base, and a top holding marker. */
static void image_make(image *im, const char *tag, const char *marker, size_t big)
{
	im->dir = bl_asprintf("%s/img-%s", base, tag);
	_cleanup_free_ char *data = big ? random_text(big, (unsigned)strlen(tag) * 7919u) : NULL;
	bl_gen_entry l1[] = {{"etc", BL_GEN_DIR, NULL, 0},
			     {"etc/base", BL_GEN_FILE, "shared base layer", 0},
			     {NULL, 0, NULL, 0}};
	bl_gen_entry l2[] = {{"marker", BL_GEN_FILE, marker, 0},
			     {"big", BL_GEN_FILE, data ? data : "", 0},
			     {NULL, 0, NULL, 0}};
	bl_gen_layer layers[] = {{l1, true}, {l2, true}};
	bl_gen_oci_layout(im->dir, layers, 2, "{\"Cmd\":[\"/bin/sh\"]}", im->hex);
}

static void image_free(image *im)
{
	free(im->dir);
	im->dir = NULL;
}

static int push(const image *im, int port, const char *repo, const char *extra)
{
	/* Digests are kept unless a conversion is asked for. */
	bool convert = extra && strstr(extra, "--format");
	_cleanup_free_ char *cmd = bl_asprintf(
	    "skopeo copy -q %s --dest-tls-verify=false %s oci:%s "
	    "docker://127.0.0.1:%d/%s >>%s/skopeo.log 2>&1",
	    convert ? "" : "--preserve-digests", extra ? extra : "", im->dir, port, repo, base);
	return sh(cmd);
}

/* ------------------------------------------------------------ store checks */

static char *store_dir;

static int count_dir(const char *rel)
{
	_cleanup_free_ char *p = bl_asprintf("%s/%s", store_dir, rel);
	_cleanup_closedir_ DIR *d = opendir(p);
	struct dirent *de;
	int n = 0;
	while (d && (de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	return n;
}

static void fresh_store(const char *tag)
{
	free(store_dir);
	store_dir = bl_asprintf("%s/store-%s", base, tag);
	(void)bl_rm_rf(store_dir, NULL);
}

static int pull_code(const char *ref, bl_error_t *err)
{
	bl_pull_options o = {.store_dir = store_dir};
	bl_error_clear(err);
	int r = bl_image_pull(ref, &o, NULL, NULL, err);
	return r < 0 ? -r : 0;
}

static void expect_pull(const char *ref)
{
	bl_error_t err = BL_ERROR_INIT;
	int code = pull_code(ref, &err);
	if (code)
		fprintf(stderr, "pull %s: %s\n", ref, err.msg);
	CU_ASSERT_EQUAL(code, 0);
}

static void expect_fail(const char *ref, int code, const char *msg_part)
{
	bl_error_t err = BL_ERROR_INIT;
	int got = pull_code(ref, &err);
	if (got != code || (msg_part && !strstr(err.msg, msg_part)))
		fprintf(stderr, "pull %s: code %d (want %d): %s\n", ref, got, code, err.msg);
	CU_ASSERT_EQUAL(got, code);
	if (msg_part)
		CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, msg_part));
	/* nothing named, nothing unpacked */
	CU_ASSERT_EQUAL(count_dir("names"), 0);
	CU_ASSERT_EQUAL(count_dir("images"), 0);
}

static char *rootfs_file(const char *ref, const char *file)
{
	_cleanup_free_ char *rootfs = NULL;
	bl_error_t err = BL_ERROR_INIT;
	if (bl_image_resolve(ref, store_dir, &rootfs, NULL, &err) < 0) {
		fprintf(stderr, "resolve %s: %s\n", ref, err.msg);
		return NULL;
	}
	_cleanup_free_ char *p = bl_asprintf("%s/%s", rootfs, file);
	char *buf = NULL;
	if (bl_read_file(p, 1 << 20, &buf, NULL, NULL) < 0)
		return NULL;
	return buf;
}

/* ------------------------------------------------------------ shared registry */

static server reg; /* plain HTTP registry */
static image img_a, img_b, img_big;

typedef struct events {
	int resolved, starts, done_layers, done, unpack;
	uint64_t last_done, total;
} events;

static void count_events(const bl_pull_progress *p, void *opaque)
{
	events *e = opaque;
	e->resolved += p->event == BL_PULL_RESOLVED;
	e->starts += p->event == BL_PULL_LAYER_START;
	e->done_layers += p->event == BL_PULL_LAYER_DONE;
	e->unpack += p->event == BL_PULL_UNPACK;
	e->done += p->event == BL_PULL_DONE;
	e->last_done = p->done;
	e->total = p->total;
}

static void test_pull_by_tag_and_digest(void)
{
	NEED_TOOLS();
	fresh_store("tag");
	_cleanup_free_ char *ref = bl_asprintf("127.0.0.1:%d/test/a:v1", reg.port);
	events ev = {0};
	bl_pull_options po = {.store_dir = store_dir, .progress = count_events, .opaque = &ev};
	bl_error_t perr = BL_ERROR_INIT;
	_cleanup_free_ char *pname = NULL, *pdigest = NULL;
	CU_ASSERT_EQUAL_FATAL(bl_image_pull(ref, &po, &pname, &pdigest, &perr), 0);
	CU_ASSERT_STRING_EQUAL(pname, ref);
	CU_ASSERT_EQUAL(strcmp(pdigest + 7, img_a.hex), 0);
	/* the progress callback: resolved, each layer started and done, unpack, done */
	CU_ASSERT_EQUAL(ev.resolved, 1);
	CU_ASSERT_EQUAL(ev.starts, 2);
	CU_ASSERT_EQUAL(ev.done_layers, 2);
	CU_ASSERT_EQUAL(ev.unpack, 1);
	CU_ASSERT_EQUAL(ev.done, 1);
	CU_ASSERT_TRUE(ev.total > 0 && ev.last_done == ev.total);
	_cleanup_free_ char *m = rootfs_file(ref, "marker");
	CU_ASSERT_STRING_EQUAL(m ? m : "", "image a");
	bl_image_entry *v = NULL;
	size_t n = 0;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL_FATAL(bl_image_entries(store_dir, &v, &n, &err), 0);
	CU_ASSERT_EQUAL(n, 1);
	if (n == 1) {
		CU_ASSERT_STRING_EQUAL(v[0].name, ref);
		CU_ASSERT_EQUAL(strncmp(v[0].digest, "sha256:", 7), 0);
		CU_ASSERT_STRING_EQUAL(v[0].digest + 7, img_a.hex);
		CU_ASSERT_TRUE(v[0].size > 0);
		CU_ASSERT_TRUE(v[0].created > 0);
	}
	bl_image_entries_free(v, n);
	/* By digest: the same image, no second unpack. */
	unsigned long before = bl_image_unpack_count();
	_cleanup_free_ char *dref =
	    bl_asprintf("127.0.0.1:%d/test/a@sha256:%s", reg.port, img_a.hex);
	expect_pull(dref);
	CU_ASSERT_EQUAL(bl_image_unpack_count(), before);
	CU_ASSERT_EQUAL(count_dir("images"), 1);
	CU_ASSERT_EQUAL(count_dir("names"), 2);
	/* `run --image REF` finds it by its reference, normalised or not. */
	_cleanup_free_ char *m2 = rootfs_file(dref, "etc/base");
	CU_ASSERT_STRING_EQUAL(m2 ? m2 : "", "shared base layer");
	/* A digest the registry does not have. */
	_cleanup_free_ char *bad = bl_asprintf("127.0.0.1:%d/test/a@sha256:%064d", reg.port, 0);
	bl_error_t e2 = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(pull_code(bad, &e2), BL_ENOTFOUND);
}

static void test_unknown_and_unreachable(void)
{
	NEED_TOOLS();
	fresh_store("unknown");
	_cleanup_free_ char *tag = bl_asprintf("127.0.0.1:%d/test/a:nope", reg.port);
	expect_fail(tag, BL_ENOTFOUND, "unknown image or tag");
	_cleanup_free_ char *repo = bl_asprintf("127.0.0.1:%d/test/none:v1", reg.port);
	expect_fail(repo, BL_ENOTFOUND, "unknown image or tag");
	_cleanup_free_ char *dead = bl_asprintf("127.0.0.1:%d/test/a:v1", free_port());
	expect_fail(dead, BL_ENETWORK, "unreachable");
}

/* Two images sharing their base layer: its blob is stored once. */
static void test_shared_blobs(void)
{
	NEED_TOOLS();
	fresh_store("shared");
	_cleanup_free_ char *a = bl_asprintf("127.0.0.1:%d/test/a:v1", reg.port);
	_cleanup_free_ char *b = bl_asprintf("127.0.0.1:%d/test/b:v1", reg.port);
	expect_pull(a);
	expect_pull(b);
	/* manifest+config+top per image, one base: 3 + 3 + 1 */
	CU_ASSERT_EQUAL(count_dir("blobs/sha256"), 7);
	CU_ASSERT_EQUAL(count_dir("images"), 2);
}

/* An index listing arm64 first, then amd64: the amd64 image is unpacked. */
static void test_index_platforms(void)
{
	NEED_TOOLS();
	fresh_store("index");
	_cleanup_free_ char *dir = bl_asprintf("%s/img-multi", base);
	char arm[65], amd[65];
	bl_gen_entry la[] = {{"arch", BL_GEN_FILE, "arm64", 0}, {NULL, 0, NULL, 0}};
	bl_gen_entry lx[] = {{"arch", BL_GEN_FILE, "amd64", 0}, {NULL, 0, NULL, 0}};
	bl_gen_layer a1[] = {{la, true}}, x1[] = {{lx, true}};
	bl_gen_oci_layout(dir, a1, 1, NULL, arm);
	bl_gen_oci_layout(dir, x1, 1, NULL, amd);
	struct stat sa, sx;
	_cleanup_free_ char *pa = bl_asprintf("%s/blobs/sha256/%s", dir, arm);
	_cleanup_free_ char *px = bl_asprintf("%s/blobs/sha256/%s", dir, amd);
	CU_ASSERT_EQUAL_FATAL(stat(pa, &sa) + stat(px, &sx), 0);
	const char *mt = "application/vnd.oci.image.manifest.v1+json";
	_cleanup_free_ char *idx = bl_asprintf(
	    "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\","
	    "\"manifests\":[{\"mediaType\":\"%s\",\"digest\":\"sha256:%s\",\"size\":%lld,"
	    "\"platform\":{\"architecture\":\"arm64\",\"os\":\"linux\"}},"
	    "{\"mediaType\":\"%s\",\"digest\":\"sha256:%s\",\"size\":%lld,"
	    "\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"}}]}",
	    mt, arm, (long long)sa.st_size, mt, amd, (long long)sx.st_size);
	char ihex[65];
	bl_gen_blob(dir, idx, strlen(idx), ihex);
	_cleanup_free_ char *top = bl_asprintf(
	    "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":"
	    "\"application/vnd.oci.image.index.v1+json\",\"digest\":\"sha256:%s\",\"size\":%zu}]}",
	    ihex, strlen(idx));
	_cleanup_free_ char *ipath = bl_asprintf("%s/index.json", dir);
	bl_gen_write(ipath, top, strlen(top));
	image multi = {.dir = dir};
	CU_ASSERT_EQUAL_FATAL(push(&multi, reg.port, "test/multi:v1", "--all"), 0);
	_cleanup_free_ char *ref = bl_asprintf("127.0.0.1:%d/test/multi:v1", reg.port);
	expect_pull(ref);
	_cleanup_free_ char *arch = rootfs_file(ref, "arch");
	CU_ASSERT_STRING_EQUAL(arch ? arch : "", "amd64");
	/* An index without linux/amd64: a clear error, nothing named. */
	fresh_store("index-none");
	_cleanup_free_ char *only = bl_asprintf(
	    "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\","
	    "\"manifests\":[{\"mediaType\":\"%s\",\"digest\":\"sha256:%s\",\"size\":%lld,"
	    "\"platform\":{\"architecture\":\"arm64\",\"os\":\"linux\"}}]}",
	    mt, arm, (long long)sa.st_size);
	bl_gen_blob(dir, only, strlen(only), ihex);
	free(top);
	top = bl_asprintf(
	    "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":"
	    "\"application/vnd.oci.image.index.v1+json\",\"digest\":\"sha256:%s\",\"size\":%zu}]}",
	    ihex, strlen(only));
	bl_gen_write(ipath, top, strlen(top));
	CU_ASSERT_EQUAL_FATAL(push(&multi, reg.port, "test/armonly:v1", "--all"), 0);
	_cleanup_free_ char *aref = bl_asprintf("127.0.0.1:%d/test/armonly:v1", reg.port);
	expect_fail(aref, BL_ENOTFOUND, "linux/amd64");
}

/* A proxy that flips a byte of every blob: digest mismatch, nothing kept. */
static void test_tampered_layer(void)
{
	NEED_TOOLS();
	fresh_store("tamper");
	server px = {0};
	CU_ASSERT_FATAL(proxy_start(&px, 0, reg.port, "--tamper"));
	_cleanup_free_ char *ref = bl_asprintf("127.0.0.1:%d/test/a:v1", px.port);
	expect_fail(ref, BL_EPROTO, "digest mismatch");
	CU_ASSERT_EQUAL(count_dir("blobs/sha256"), 1); /* the manifest: verified, kept */
	CU_ASSERT_EQUAL(count_dir("tmp"), 0);
	server_free(&px);
}

typedef struct bg_pull {
	const char *ref;
	int code;
	bl_error_t err;
	pthread_t t;
	volatile uint64_t seen;
} bg_pull;

static void bg_progress(const bl_pull_progress *p, void *opaque)
{
	bg_pull *b = opaque;
	if (p->event == BL_PULL_LAYER_BYTES)
		b->seen = p->done;
}

static void *bg_run(void *arg)
{
	bg_pull *b = arg;
	bl_pull_options o = {.store_dir = store_dir, .progress = bg_progress, .opaque = b};
	int r = bl_image_pull(b->ref, &o, NULL, NULL, &b->err);
	b->code = r < 0 ? -r : 0;
	return NULL;
}

/* Waits until the big layer is well under way (the small ones come first). */
static bool wait_bytes(volatile uint64_t *seen, int ms)
{
	for (int t = 0; t < ms; t += 20) {
		if (*seen > 200000)
			return true;
		usleep(20000);
	}
	return false;
}

/* The registry goes away mid-pull (the throttled endpoint is killed): a
 * clear error, nothing named; after a restart the pull resumes and completes. */
static void test_registry_stopped_mid_pull(void)
{
	NEED_TOOLS();
	fresh_store("stopped");
	server px = {0};
	CU_ASSERT_FATAL(proxy_start(&px, 0, reg.port, "--rate 400000"));
	_cleanup_free_ char *ref = bl_asprintf("127.0.0.1:%d/test/big:v1", px.port);
	bg_pull b = {.ref = ref};
	pthread_create(&b.t, NULL, bg_run, &b);
	CU_ASSERT(wait_bytes(&b.seen, 30000));
	stop(&px.pid);
	pthread_join(b.t, NULL);
	if (b.code != BL_ENETWORK)
		fprintf(stderr, "mid-pull: code %d: %s\n", b.code, b.err.msg);
	CU_ASSERT_EQUAL(b.code, BL_ENETWORK);
	CU_ASSERT_EQUAL(count_dir("names"), 0);
	CU_ASSERT_EQUAL(count_dir("images"), 0);
	int port = px.port;
	CU_ASSERT_FATAL(proxy_start(&px, port, reg.port, NULL));
	expect_pull(ref);
	_cleanup_free_ char *m = rootfs_file(ref, "marker");
	CU_ASSERT_STRING_EQUAL(m ? m : "", "image big");
	/* The big layer was resumed with a Range request, not fetched again. */
	CU_ASSERT(proxy_count(&px, "bytes=") >= 1);
	server_free(&px);
}

/* `boxlite pull` SIGKILLed mid-download: no name, no image; pulled again fine. */
static void test_pull_sigkill(void)
{
	NEED_TOOLS();
	fresh_store("sigkill");
	server px = {0};
	CU_ASSERT_FATAL(proxy_start(&px, 0, reg.port, "--rate 300000"));
	_cleanup_free_ char *ref = bl_asprintf("127.0.0.1:%d/test/big:v1", px.port);
	_cleanup_free_ char *bin = bl_asprintf("%s/boxlite", bl_test_build_dir());
	_cleanup_free_ char *log = bl_asprintf("%s/sigkill.log", base);
	setenv("BOXLITE_IMAGE_DIR", store_dir, 1);
	char *argv[] = {bin, "pull", ref, NULL};
	pid_t pid = spawn(argv, log);
	unsetenv("BOXLITE_IMAGE_DIR");
	/* Wait for a partial blob to appear, then kill -9. */
	bool partial = false;
	for (int t = 0; t < 30000 && !partial; t += 20) {
		_cleanup_free_ char *tmp = bl_asprintf("%s/tmp", store_dir);
		_cleanup_closedir_ DIR *d = opendir(tmp);
		struct dirent *de;
		while (d && (de = readdir(d))) {
			_cleanup_free_ char *p = bl_asprintf("%s/%s", tmp, de->d_name);
			struct stat st;
			if (strstr(de->d_name, ".partial") && stat(p, &st) == 0 && st.st_size > 0)
				partial = true;
		}
		usleep(20000);
	}
	CU_ASSERT(partial);
	stop(&pid);
	CU_ASSERT_EQUAL(count_dir("names"), 0);
	CU_ASSERT_EQUAL(count_dir("images"), 0);
	expect_pull(ref);
	_cleanup_free_ char *m = rootfs_file(ref, "marker");
	CU_ASSERT_STRING_EQUAL(m ? m : "", "image big");
	server_free(&px);
}

/* Two pulls of one image at once: both succeed, each blob downloaded once. */
static void test_concurrent_pulls(void)
{
	NEED_TOOLS();
	fresh_store("concurrent");
	server px = {0};
	CU_ASSERT_FATAL(proxy_start(&px, 0, reg.port, "--rate 2000000"));
	_cleanup_free_ char *ref = bl_asprintf("127.0.0.1:%d/test/big:v1", px.port);
	bg_pull b1 = {.ref = ref}, b2 = {.ref = ref};
	pthread_create(&b1.t, NULL, bg_run, &b1);
	pthread_create(&b2.t, NULL, bg_run, &b2);
	pthread_join(b1.t, NULL);
	pthread_join(b2.t, NULL);
	CU_ASSERT_EQUAL(b1.code, 0);
	CU_ASSERT_EQUAL(b2.code, 0);
	if (b1.code || b2.code)
		fprintf(stderr, "concurrent: %s / %s\n", b1.err.msg, b2.err.msg);
	CU_ASSERT_EQUAL(count_dir("images"), 1);
	/* Each layer blob was fetched once over both pulls. */
	for (size_t i = 0; i < 2; i++) {
		char hex[65];
		bl_gen_oci_layer_hex(img_big.dir, i, hex);
		_cleanup_free_ char *needle = bl_asprintf("/blobs/sha256:%s ", hex);
		CU_ASSERT_EQUAL(proxy_count(&px, needle), 1);
	}
	server_free(&px);
}

/* rmi refuses an image a sandbox pins; prune drops what nothing uses. */
static void test_rmi_in_use_and_prune(void)
{
	NEED_TOOLS();
	fresh_store("rmi");
	_cleanup_free_ char *a = bl_asprintf("127.0.0.1:%d/test/a:v1", reg.port);
	_cleanup_free_ char *b = bl_asprintf("127.0.0.1:%d/test/b:v1", reg.port);
	expect_pull(a);
	expect_pull(b);
	_cleanup_free_ char *rootfs = NULL;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL_FATAL(bl_image_resolve(a, store_dir, &rootfs, NULL, &err), 0);
	/* What bl_sandbox_create does with its state directory. */
	_cleanup_free_ char *holder = bl_asprintf("%s/sandbox-holder", base);
	(void)mkdir(holder, 0700);
	CU_ASSERT_EQUAL(bl_image_pin(rootfs, holder, &err), 0);
	CU_ASSERT_EQUAL(bl_image_rmi(a, store_dir, false, &err), -BL_ESTATE);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "in use"));
	bl_image_entry *v = NULL;
	size_t n = 0;
	CU_ASSERT_EQUAL(bl_image_entries(store_dir, &v, &n, &err), 0);
	for (size_t i = 0; i < n; i++)
		if (!strcmp(v[i].name, a))
			CU_ASSERT_EQUAL(v[i].in_use, 1);
	bl_image_entries_free(v, n);
	/* Forced: the name goes, the image stays under the sandbox. */
	CU_ASSERT_EQUAL(bl_image_rmi(a, store_dir, true, &err), 0);
	CU_ASSERT_EQUAL(count_dir("names"), 1);
	CU_ASSERT_EQUAL(count_dir("images"), 2);
	struct stat st;
	CU_ASSERT_EQUAL(stat(rootfs, &st), 0);
	uint64_t freed = 0;
	CU_ASSERT_EQUAL(bl_image_prune(store_dir, &freed, &err), 0);
	CU_ASSERT_EQUAL(count_dir("images"), 2); /* still pinned */
	/* The sandbox goes (its directory with it): prune takes the image and
	 * the blobs only it used; b keeps the shared base. */
	(void)bl_rm_rf(holder, NULL);
	CU_ASSERT_EQUAL(bl_image_prune(store_dir, &freed, &err), 0);
	CU_ASSERT_EQUAL(count_dir("images"), 1);
	CU_ASSERT_EQUAL(count_dir("blobs/sha256"), 4);
	CU_ASSERT_TRUE(freed > 0);
	CU_ASSERT_EQUAL(bl_image_rmi(b, store_dir, false, &err), 0);
	CU_ASSERT_EQUAL(bl_image_prune(store_dir, &freed, &err), 0);
	CU_ASSERT_EQUAL(count_dir("images"), 0);
	CU_ASSERT_EQUAL(count_dir("blobs/sha256"), 0);
}

/* A store size limit: the least recently used unpinned image is evicted. */
static void test_size_limit_eviction(void)
{
	NEED_TOOLS();
	fresh_store("evict");
	_cleanup_free_ char *a = bl_asprintf("127.0.0.1:%d/test/a:v1", reg.port);
	_cleanup_free_ char *b = bl_asprintf("127.0.0.1:%d/test/b:v1", reg.port);
	expect_pull(a);
	bl_image_entry *v = NULL;
	size_t n = 0;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL_FATAL(bl_image_entries(store_dir, &v, &n, &err), 0);
	uint64_t one = n ? v[0].size : 0;
	bl_image_entries_free(v, n);
	/* Room for one image and its blobs, not two. */
	_cleanup_free_ char *lim = bl_asprintf("%llu", (unsigned long long)(one * 2 + one / 2));
	setenv("BOXLITE_IMAGE_STORE_MAX", lim, 1);
	sleep(1); /* a's last use strictly older */
	expect_pull(b);
	CU_ASSERT_EQUAL(count_dir("images"), 1);
	_cleanup_free_ char *mb = rootfs_file(b, "marker");
	CU_ASSERT_STRING_EQUAL(mb ? mb : "", "image b");
	CU_ASSERT_EQUAL(count_dir("names"), 1); /* a's name went with it */
	setenv("BOXLITE_PULL", "never", 1);	/* resolve would pull it again */
	_cleanup_free_ char *rootfs = NULL;
	CU_ASSERT_EQUAL(bl_image_resolve(a, store_dir, &rootfs, NULL, &err), -BL_ENOTFOUND);
	unsetenv("BOXLITE_PULL");
	/* A pinned image is never evicted: both stay, over the limit. */
	_cleanup_free_ char *rb = NULL;
	CU_ASSERT_EQUAL(bl_image_resolve(b, store_dir, &rb, NULL, &err), 0);
	_cleanup_free_ char *holder = bl_asprintf("%s/evict-holder", base);
	(void)mkdir(holder, 0700);
	CU_ASSERT_EQUAL(bl_image_pin(rb, holder, &err), 0);
	expect_pull(a);
	CU_ASSERT_EQUAL(count_dir("images"), 2);
	unsetenv("BOXLITE_IMAGE_STORE_MAX");
	(void)bl_rm_rf(holder, NULL);
}

/* ------------------------------------------------------------ TLS and auth */

static char *conf_path;

static void write_conf(const char *text)
{
	bl_gen_write(conf_path, text, strlen(text));
}

/* A docker schema-2 manifest (skopeo converts on push) pulls like an OCI one. */
static void test_docker_schema2(void)
{
	NEED_TOOLS();
	fresh_store("v2s2");
	CU_ASSERT_EQUAL_FATAL(push(&img_b, reg.port, "test/docker:v1", "--format v2s2"), 0);
	_cleanup_free_ char *ref = bl_asprintf("127.0.0.1:%d/test/docker:v1", reg.port);
	expect_pull(ref);
	_cleanup_free_ char *m = rootfs_file(ref, "marker");
	CU_ASSERT_STRING_EQUAL(m ? m : "", "image b");
	bl_image_entry *v = NULL;
	size_t n = 0;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(bl_image_entries(store_dir, &v, &n, &err), 0);
	/* converted, so not the OCI manifest's digest */
	CU_ASSERT_TRUE(n == 1 && strcmp(v[0].digest + 7, img_b.hex) != 0);
	_cleanup_free_ char *cmd = bl_asprintf(
	    "curl -sf -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "
	    "http://127.0.0.1:%d/v2/test/docker/manifests/v1 | grep -q "
	    "'application/vnd.docker.distribution.manifest.v2+json'",
	    reg.port);
	CU_ASSERT_EQUAL(sh(cmd), 0);
	bl_image_entries_free(v, n);
}

/* 429 with Retry-After is retried; a registry that keeps answering 429 is
 * reported as rate limiting; redirects to blob storage are followed. */
static void test_rate_limit_and_redirect(void)
{
	NEED_TOOLS();
	fresh_store("429");
	server px = {0};
	CU_ASSERT_FATAL(proxy_start(&px, 0, reg.port, "--status429 1"));
	_cleanup_free_ char *ref = bl_asprintf("127.0.0.1:%d/test/a:v1", px.port);
	expect_pull(ref);
	CU_ASSERT_EQUAL(proxy_count(&px, " 429 "), 1);
	server_free(&px);
	fresh_store("429-always");
	CU_ASSERT_FATAL(proxy_start(&px, 0, reg.port, "--status429 1000"));
	free(ref);
	ref = bl_asprintf("127.0.0.1:%d/test/a:v1", px.port);
	expect_fail(ref, BL_ENETWORK, "rate limited");
	server_free(&px);
	fresh_store("redirect");
	CU_ASSERT_FATAL(proxy_start(&px, 0, reg.port, "--redirect"));
	free(ref);
	ref = bl_asprintf("127.0.0.1:%d/test/a:v1", px.port);
	expect_pull(ref);
	CU_ASSERT(proxy_count(&px, " 307 ") >= 2);
	server_free(&px);
}

/* A mirror from the config file is asked first; a dead one falls back. */
static void test_mirror(void)
{
	NEED_TOOLS();
	fresh_store("mirror");
	server px = {0};
	CU_ASSERT_FATAL(proxy_start(&px, 0, reg.port, NULL));
	_cleanup_free_ char *conf =
	    bl_asprintf("{\"registries\":{\"127.0.0.1:%d\":{\"mirrors\":[\"127.0.0.1:%d\"]}}}",
			reg.port, px.port);
	write_conf(conf);
	_cleanup_free_ char *ref = bl_asprintf("127.0.0.1:%d/test/a:v1", reg.port);
	expect_pull(ref);
	CU_ASSERT(proxy_count(&px, "/v2/test/a/manifests/v1") >= 1);
	CU_ASSERT(proxy_count(&px, "/blobs/") >= 2);
	server_free(&px);
	fresh_store("mirror-dead");
	free(conf);
	conf = bl_asprintf("{\"registries\":{\"127.0.0.1:%d\":{\"mirrors\":[\"127.0.0.1:%d\"]}}}",
			   reg.port, free_port());
	write_conf(conf);
	expect_pull(ref);
	write_conf("{}");
}

static void test_tls(void)
{
	NEED_TOOLS();
	fresh_store("tls");
	_cleanup_free_ char *d = bl_asprintf("%s/pki", base);
	(void)mkdir(d, 0700);
	_cleanup_free_ char *cmd = bl_asprintf(
	    "cd %s && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem "
	    "-days 2 -subj /CN=boxlite-test-ca && openssl req -newkey rsa:2048 -nodes -keyout "
	    "srv.key -out srv.csr -subj /CN=127.0.0.1 && printf 'subjectAltName=IP:127.0.0.1\\n' "
	    ">ext && openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out "
	    "srv.pem -days 2 -extfile ext",
	    d);
	_cleanup_free_ char *quiet = bl_asprintf("(%s) >/dev/null 2>&1", cmd);
	CU_ASSERT_EQUAL_FATAL(sh(quiet), 0);
	_cleanup_free_ char *tls =
	    bl_asprintf("  tls:\n    certificate: %s/srv.pem\n    key: %s/srv.key\n", d, d);
	server r = {0};
	CU_ASSERT_FATAL(registry_start(&r, "tls", 0, tls, NULL));
	CU_ASSERT_EQUAL_FATAL(push(&img_a, r.port, "test/a:v1", NULL), 0);
	_cleanup_free_ char *ref = bl_asprintf("127.0.0.1:%d/test/a:v1", r.port);
	/* The test CA unknown: a TLS failure (no fallback to plain HTTP). */
	write_conf("{}");
	expect_fail(ref, BL_ENETWORK, "TLS");
	_cleanup_free_ char *conf =
	    bl_asprintf("{\"registries\":{\"127.0.0.1:%d\":{\"ca\":\"%s/ca.pem\"}}}", r.port, d);
	write_conf(conf);
	expect_pull(ref);
	write_conf("{}");
	server_free(&r);
}

static void test_basic_auth(void)
{
	NEED_TOOLS();
	fresh_store("basic");
	_cleanup_free_ char *hp = bl_asprintf("%s/htpasswd", base);
	_cleanup_free_ char *cmd = bl_asprintf("htpasswd -Bbn alice s3cret >%s 2>/dev/null", hp);
	CU_ASSERT_EQUAL_FATAL(sh(cmd), 0);
	_cleanup_free_ char *auth =
	    bl_asprintf("auth:\n  htpasswd:\n    realm: boxlite-test\n    path: %s\n", hp);
	server r = {0};
	CU_ASSERT_FATAL(registry_start(&r, "basic", 0, NULL, auth));
	CU_ASSERT_EQUAL_FATAL(push(&img_a, r.port, "test/a:v1", "--dest-creds alice:s3cret"), 0);
	_cleanup_free_ char *ref = bl_asprintf("127.0.0.1:%d/test/a:v1", r.port);
	_cleanup_free_ char *host = bl_asprintf("127.0.0.1:%d", r.port);
	expect_fail(ref, BL_EAUTH, "requires credentials");
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(bl_registry_login(host, "alice", "wrong", &err), -BL_EAUTH);
	/* Refused credentials are not stored. */
	expect_fail(ref, BL_EAUTH, NULL);
	/* Wrong ones in docker's config.json: refused too. */
	_cleanup_free_ char *dcfg = bl_asprintf("%s/docker/config.json", base);
	_cleanup_free_ char *bad = bl_asprintf(
	    "{\"auths\":{\"%s\":{\"auth\":\"YWxpY2U6d3Jvbmc=\"}}}", host); /* alice:wrong */
	bl_gen_write(dcfg, bad, strlen(bad));
	expect_fail(ref, BL_EAUTH, "refused");
	CU_ASSERT_EQUAL(bl_registry_login(host, "alice", "s3cret", &err), 0);
	expect_pull(ref);
	CU_ASSERT_EQUAL(bl_registry_logout(host, &err), 0);
	/* docker's config.json with the right ones. */
	fresh_store("basic-docker");
	_cleanup_free_ char *good = bl_asprintf(
	    "{\"auths\":{\"%s\":{\"auth\":\"YWxpY2U6czNjcmV0\"}}}", host); /* alice:s3cret */
	bl_gen_write(dcfg, good, strlen(good));
	expect_pull(ref);
	(void)unlink(dcfg);
	server_free(&r);
}

static void test_bearer_auth(void)
{
	NEED_TOOLS();
	fresh_store("bearer");
	_cleanup_free_ char *d = bl_asprintf("%s/token", base);
	(void)mkdir(d, 0700);
	_cleanup_free_ char *cmd = bl_asprintf(
	    "cd %s && openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem "
	    "-days 2 -subj /CN=boxlite-test-token >/dev/null 2>&1",
	    d);
	CU_ASSERT_EQUAL_FATAL(sh(cmd), 0);
	server tok = {.port = free_port(), .dir = bl_strdup(d)};
	_cleanup_free_ char *tcmd = bl_asprintf(
	    "exec python3 %s token --port %d --key %s/key.pem --cert %s/cert.pem --issuer "
	    "boxlite-test-issuer --service boxlite-test --user bob --password hunter2",
	    helper, tok.port, d, d);
	_cleanup_free_ char *tlog = bl_asprintf("%s/log", d);
	char *argv[] = {"sh", "-c", tcmd, NULL};
	tok.pid = spawn(argv, tlog);
	CU_ASSERT_FATAL(wait_port(tok.port, 20000));
	_cleanup_free_ char *auth = bl_asprintf(
	    "auth:\n  token:\n    realm: http://127.0.0.1:%d/token\n    service: boxlite-test\n"
	    "    issuer: boxlite-test-issuer\n    rootcertbundle: %s/cert.pem\n",
	    tok.port, d);
	server r = {0};
	CU_ASSERT_FATAL(registry_start(&r, "bearer", 0, NULL, auth));
	CU_ASSERT_EQUAL_FATAL(push(&img_a, r.port, "test/a:v1", "--dest-creds bob:hunter2"), 0);
	_cleanup_free_ char *ref = bl_asprintf("127.0.0.1:%d/test/a:v1", r.port);
	_cleanup_free_ char *host = bl_asprintf("127.0.0.1:%d", r.port);
	expect_fail(ref, BL_EAUTH, "authentication refused");
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(bl_registry_login(host, "bob", "nope", &err), -BL_EAUTH);
	CU_ASSERT_EQUAL(bl_registry_login(host, "bob", "hunter2", &err), 0);
	expect_pull(ref);
	_cleanup_free_ char *m = rootfs_file(ref, "marker");
	CU_ASSERT_STRING_EQUAL(m ? m : "", "image a");
	CU_ASSERT_EQUAL(bl_registry_logout(host, &err), 0);
	server_free(&r);
	server_free(&tok);
}

/* A real sandbox from a pulled image: `create --image REF` pulls it on first
 * use (the reference names its registry), and rmi refuses it while the
 * sandbox lives, then removes it once the sandbox is gone. */
static void test_sandbox_from_registry(void)
{
	NEED_TOOLS();
	BL_SKIP_UNLESS(env.ok, "needs root, /bin/busybox and a built guest kernel");
	fresh_store("vm");
	_cleanup_free_ char *imgs = bl_asprintf("%s/test-images", base);
	_cleanup_free_ char *cmd =
	    bl_asprintf("packaging/build-test-images.sh %s >/dev/null 2>&1", imgs);
	CU_ASSERT_EQUAL_FATAL(sh(cmd), 0);
	image bb = {.dir = bl_asprintf("%s/busybox-oci", imgs)};
	CU_ASSERT_EQUAL_FATAL(push(&bb, reg.port, "test/busybox:v1", NULL), 0);
	image_free(&bb);
	_cleanup_free_ char *ref = bl_asprintf("127.0.0.1:%d/test/busybox:v1", reg.port);
	const char *args[] = {"cat", "/etc/hostname", NULL};
	bl_sandbox_options o = sb_opts(args);
	o.rootfs = NULL;
	o.image = ref;
	o.image_store = store_dir;
	bl_sandbox *sb = NULL;
	bl_error_t err = BL_ERROR_INIT;
	int r = bl_sandbox_create(&o, &sb, &err);
	if (r < 0)
		fprintf(stderr, "create: %s\n", err.msg);
	CU_ASSERT_EQUAL_FATAL(r, 0);
	CU_ASSERT_EQUAL(count_dir("names"), 1);
	CU_ASSERT_EQUAL(bl_image_rmi(ref, store_dir, false, &err), -BL_ESTATE);
	uint64_t freed = 0;
	CU_ASSERT_EQUAL(bl_image_prune(store_dir, &freed, &err), 0);
	CU_ASSERT_EQUAL(count_dir("images"), 1);
	bl_process *p = NULL;
	if (bl_sandbox_start(sb, &p, &err) == 0) {
		_cleanup_free_ char *out = sb_read_all(p, 1);
		bl_exit ex;
		CU_ASSERT_EQUAL(bl_process_wait(p, &ex, &err), 0);
		CU_ASSERT_STRING_EQUAL(out, "boxlite-test\n");
		bl_process_free(p);
	} else {
		fprintf(stderr, "start: %s\n", err.msg);
		CU_FAIL("start");
	}
	bl_sandbox_destroy(sb);
	CU_ASSERT_EQUAL(bl_image_rmi(ref, store_dir, false, &err), 0);
	CU_ASSERT_EQUAL(count_dir("images"), 0);
	sb_assert_clean();
}

/* A full disk while a layer streams: "disk full", nothing named or unpacked. */
static void test_disk_full(void)
{
	NEED_TOOLS();
	BL_SKIP_UNLESS(bl_test_is_root(), "needs root (a small tmpfs as the store)");
	fresh_store("full");
	CU_ASSERT_EQUAL_FATAL(bl_mkdir_p(store_dir, 0700, NULL), 0);
	_cleanup_free_ char *mnt =
	    bl_asprintf("mount -t tmpfs -o size=1m,mode=0700 boxlite-test %s", store_dir);
	CU_ASSERT_EQUAL_FATAL(sh(mnt), 0);
	_cleanup_free_ char *ref = bl_asprintf("127.0.0.1:%d/test/big:v1", reg.port);
	expect_fail(ref, BL_ESYSTEM, "disk full");
	_cleanup_free_ char *umnt = bl_asprintf("umount %s", store_dir);
	CU_ASSERT_EQUAL(sh(umnt), 0);
}

/* The CLI: progress without a TTY is one line per layer; images and rmi. */
static void test_cli(void)
{
	NEED_TOOLS();
	fresh_store("cli");
	_cleanup_free_ char *bin = bl_asprintf("%s/boxlite", bl_test_build_dir());
	_cleanup_free_ char *ref = bl_asprintf("127.0.0.1:%d/test/a:v1", reg.port);
	_cleanup_free_ char *out = bl_asprintf("%s/cli.out", base);
	_cleanup_free_ char *cmd = bl_asprintf(
	    "BOXLITE_IMAGE_DIR=%s %s pull %s >%s 2>&1 && BOXLITE_IMAGE_DIR=%s %s images >>%s 2>&1",
	    store_dir, bin, ref, out, store_dir, bin, out);
	CU_ASSERT_EQUAL(sh(cmd), 0);
	_cleanup_free_ char *text = NULL;
	CU_ASSERT_EQUAL(bl_read_file(out, 1 << 16, &text, NULL, NULL), 0);
	text = text ? text : bl_strdup("");
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "layer 1/2 sha256:"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "layer 2/2 sha256:"));
	_cleanup_free_ char *digest = bl_asprintf("%s sha256:%s", ref, img_a.hex);
	CU_ASSERT_PTR_NOT_NULL(strstr(text, digest));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "NAME"));
	/* -q: nothing but errors; a missing tag exits 125 naming the cause */
	_cleanup_free_ char *repo = bl_asprintf("127.0.0.1:%d/test/a", reg.port);
	_cleanup_free_ char *q = bl_asprintf(
	    "BOXLITE_IMAGE_DIR=%s %s pull -q %s >%s 2>&1; echo rc=$? >>%s; BOXLITE_IMAGE_DIR=%s "
	    "%s pull -q %s:nope 2>>%s; echo rc=$? >>%s; BOXLITE_IMAGE_DIR=%s %s rmi %s >>%s",
	    store_dir, bin, ref, out, out, store_dir, bin, repo, out, out, store_dir, bin, ref,
	    out);
	(void)sh(q);
	free(text);
	text = NULL;
	CU_ASSERT_EQUAL(bl_read_file(out, 1 << 16, &text, NULL, NULL), 0);
	text = text ? text : bl_strdup("");
	CU_ASSERT_EQUAL(strncmp(text, "rc=0\n", 5), 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "unknown image or tag"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "rc=125"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "removed"));
	CU_ASSERT_EQUAL(count_dir("images"), 0);
	/* image import (a local OCI layout), images -q, image prune */
	_cleanup_free_ char *imp = bl_asprintf(
	    "BOXLITE_IMAGE_DIR=%s %s image import %s --name local-a >%s 2>&1 && "
	    "BOXLITE_IMAGE_DIR=%s %s images -q >>%s && BOXLITE_IMAGE_DIR=%s %s image prune >>%s",
	    store_dir, bin, img_a.dir, out, store_dir, bin, out, store_dir, bin, out);
	CU_ASSERT_EQUAL(sh(imp), 0);
	free(text);
	text = NULL;
	CU_ASSERT_EQUAL(bl_read_file(out, 1 << 16, &text, NULL, NULL), 0);
	CU_ASSERT_PTR_NOT_NULL(text ? strstr(text, "local-a\nlocal-a\nfreed") : NULL);
	CU_ASSERT_EQUAL(count_dir("images"), 1);
}

/* ------------------------------------------------------------ setup */

static bool tool(const char *name)
{
	_cleanup_free_ char *cmd = bl_asprintf("command -v %s >/dev/null 2>&1", name);
	return sh(cmd) == 0;
}

static void setup(void)
{
	/* Before any thread (bl_host_prepare); the VM case skips without it. */
	(void)sb_env_setup("pullvm");
	have_tools = tool("docker-registry") && tool("skopeo") && tool("python3") &&
		     tool("openssl") && tool("htpasswd");
	base = bl_test_tmpdir("pull");
	helper = realpath("tests/lib/registry_helper.py", NULL);
	if (!helper)
		have_tools = false;
	conf_path = bl_asprintf("%s/registries.json", base);
	_cleanup_free_ char *auth = bl_asprintf("%s/auth.json", base);
	_cleanup_free_ char *docker = bl_asprintf("%s/docker", base);
	setenv("BOXLITE_REGISTRIES_CONF", conf_path, 1);
	setenv("BOXLITE_AUTH_FILE", auth, 1);
	setenv("DOCKER_CONFIG", docker, 1);
	setenv("BOXLITE_PULL_RETRIES", "2", 1);
	unsetenv("BOXLITE_IMAGE_STORE_MAX");
	write_conf("{}");
	if (!have_tools)
		return;
	image_make(&img_a, "a", "image a", 200000);
	image_make(&img_b, "b", "image b", 200000);
	image_make(&img_big, "big", "image big", 3000000);
	if (!registry_start(&reg, "plain", 0, NULL, NULL) ||
	    push(&img_a, reg.port, "test/a:v1", NULL) ||
	    push(&img_b, reg.port, "test/b:v1", NULL) ||
	    push(&img_big, reg.port, "test/big:v1", NULL)) {
		fprintf(stderr, "test_pull: registry setup failed (logs in %s)\n", base);
		have_tools = false;
	}
}

int main(void)
{
	setup();
	static const bl_test_case tests[] = {
	    {"pull_by_tag_and_digest", test_pull_by_tag_and_digest},
	    {"unknown_and_unreachable", test_unknown_and_unreachable},
	    {"shared_blobs", test_shared_blobs},
	    {"index_platforms", test_index_platforms},
	    {"tampered_layer", test_tampered_layer},
	    {"registry_stopped_mid_pull", test_registry_stopped_mid_pull},
	    {"pull_sigkill", test_pull_sigkill},
	    {"concurrent_pulls", test_concurrent_pulls},
	    {"rmi_in_use_and_prune", test_rmi_in_use_and_prune},
	    {"size_limit_eviction", test_size_limit_eviction},
	    {"docker_schema2", test_docker_schema2},
	    {"rate_limit_and_redirect", test_rate_limit_and_redirect},
	    {"mirror", test_mirror},
	    {"tls", test_tls},
	    {"basic_auth", test_basic_auth},
	    {"bearer_auth", test_bearer_auth},
	    {"sandbox_from_registry", test_sandbox_from_registry},
	    {"disk_full", test_disk_full},
	    {"cli", test_cli},
	    {NULL, NULL},
	};
	int rc = bl_test_run("pull", tests);
	kill_spawned();
	sb_env_teardown();
	server_free(&reg);
	image_free(&img_a);
	image_free(&img_b);
	image_free(&img_big);
	if (base && !getenv("BOXLITE_KEEP_TEST_DIR"))
		(void)bl_rm_rf(base, NULL);
	free(base);
	free(helper);
	free(store_dir);
	free(conf_path);
	return rc;
}
