/* Unit tests of runtime/image.c: sources, whiteouts, cache, store names,
 * hostile images (each must fail cleanly, leave nothing in the store and
 * write nothing outside it) and the sha256 it relies on. */
#include "bl_test.h"
#include "bl_image_gen.h"

#include "bl_cleanup.h"
#include "bl_util.h"
#include "image.h"
#include "bl_digest.h"

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define E(path, type, data)         \
	{                           \
		path, type, data, 0 \
	}
#define END                      \
	{                        \
		NULL, 0, NULL, 0 \
	}

/* A scratch area: base/ holds the store, the sources and an "outside" dir
 * with a sentinel that hostile images try to reach. */
typedef struct fixture {
	char *base, *store, *src, *outside;
} fixture;

static void fixture_init(fixture *f, const char *tag)
{
	f->base = bl_test_tmpdir(tag);
	f->store = bl_asprintf("%s/store", f->base);
	f->src = bl_asprintf("%s/src", f->base);
	f->outside = bl_asprintf("%s/outside", f->base);
	_cleanup_free_ char *sentinel = bl_asprintf("%s/victim", f->outside);
	bl_gen_write(sentinel, "keep", 4);
}

static void fixture_free(fixture *f)
{
	(void)bl_rm_rf(f->base, NULL);
	free(f->base);
	free(f->store);
	free(f->src);
	free(f->outside);
}

static bool exists(const char *dir, const char *rel)
{
	_cleanup_free_ char *p = bl_asprintf("%s/%s", dir, rel);
	struct stat st;
	return lstat(p, &st) == 0;
}

static char *slurp(const char *dir, const char *rel)
{
	_cleanup_free_ char *p = bl_asprintf("%s/%s", dir, rel);
	char *buf = NULL;
	if (bl_read_file(p, 1 << 20, &buf, NULL, NULL) < 0)
		return NULL;
	return buf;
}

static int count_entries(const char *dir)
{
	_cleanup_closedir_ DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;
	while (d && (de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	return n;
}

/* Nothing half-unpacked is left in the store, and the outside is intact. */
static void assert_clean(const fixture *f)
{
	_cleanup_free_ char *images = bl_asprintf("%s/images", f->store);
	_cleanup_free_ char *tmp = bl_asprintf("%s/tmp", f->store);
	CU_ASSERT_EQUAL(count_entries(images), 0);
	CU_ASSERT_EQUAL(count_entries(tmp), 0);
	_cleanup_free_ char *victim = slurp(f->outside, "victim");
	CU_ASSERT_PTR_NOT_NULL(victim);
	if (victim)
		CU_ASSERT_STRING_EQUAL(victim, "keep");
	CU_ASSERT_EQUAL(count_entries(f->outside), 1);
}

static int resolve_code(const fixture *f, const char *ref, const bl_image_limits *lim,
			bl_error_t *err)
{
	_cleanup_free_ char *rootfs = NULL, *cfg = NULL;
	bl_error_clear(err);
	int r = bl_image_resolve_ex(ref, f->store, lim, &rootfs, &cfg, err);
	return r < 0 ? -r : 0;
}

/* ------------------------------------------------------------------ sha256 */

static void test_sha256_vectors(void)
{
	char hex[65];
	bl_sha256_hex("", 0, hex);
	CU_ASSERT_STRING_EQUAL(hex,
			       "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	bl_sha256_hex("abc", 3, hex);
	CU_ASSERT_STRING_EQUAL(hex,
			       "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	bl_sha256_hex(m, strlen(m), hex);
	CU_ASSERT_STRING_EQUAL(hex,
			       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
	/* One million 'a', fed in odd-sized pieces to exercise buffering. */
	bl_sha256 s;
	char chunk[997];
	memset(chunk, 'a', sizeof(chunk));
	bl_sha256_init(&s);
	size_t left = 1000000;
	while (left) {
		size_t n = left < sizeof(chunk) ? left : sizeof(chunk);
		bl_sha256_update(&s, chunk, n);
		left -= n;
	}
	bl_sha256_final_hex(&s, hex);
	CU_ASSERT_STRING_EQUAL(hex,
			       "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* ------------------------------------------------------------------ sources */

static void test_plain_dir(void)
{
	fixture f;
	fixture_init(&f, "img-plain");
	_cleanup_free_ char *sh = bl_asprintf("%s/bin/sh", f.src);
	bl_gen_write(sh, "#!", 2);
	bl_error_t err = BL_ERROR_INIT;
	_cleanup_free_ char *rootfs = NULL, *cfg = NULL;
	unsigned long before = bl_image_unpack_count();
	CU_ASSERT_EQUAL(bl_image_resolve(f.src, f.store, &rootfs, &cfg, &err), 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(rootfs);
	CU_ASSERT_STRING_EQUAL(rootfs, f.src);
	CU_ASSERT_PTR_NULL(cfg);
	CU_ASSERT_EQUAL(bl_image_unpack_count(), before);
	fixture_free(&f);
}

static const bl_gen_entry layer_base[] = {
    E("etc/", BL_GEN_DIR, NULL),
    E("etc/a", BL_GEN_FILE, "A"),
    E("etc/b", BL_GEN_FILE, "B"),
    E("dir/", BL_GEN_DIR, NULL),
    E("dir/old", BL_GEN_FILE, "old"),
    E("dir/sub/deep", BL_GEN_FILE, "deep"),
    E("dir/keepdir/lower", BL_GEN_FILE, "lower"),
    E("keep/x", BL_GEN_FILE, "x"),
    E("gone/y", BL_GEN_FILE, "y"),
    E("bin/sh", BL_GEN_FILE, "#!sh"),
    E("bin/link", BL_GEN_SYMLINK, "sh"),
    E("bin/hard", BL_GEN_HARDLINK, "bin/sh"),
    E("dev/null", BL_GEN_CHARDEV, NULL),
    {"bin/suid", BL_GEN_FILE, "s", 04755},
    END,
};

static const bl_gen_entry layer_top[] = {
    E("etc/.wh.a", BL_GEN_FILE, ""),	    E(".wh.gone", BL_GEN_FILE, ""),
    E("dir/early", BL_GEN_FILE, "early"),   E("dir/keepdir/upper", BL_GEN_FILE, "upper"),
    E("dir/.wh..wh..opq", BL_GEN_FILE, ""), E("dir/new", BL_GEN_FILE, "new"),
    E("etc/b", BL_GEN_FILE, "B2"),	    END,
};

static const char *const test_config =
    "{\"Env\":[\"PATH=/bin\",\"A=1\"],\"Cmd\":[\"/bin/sh\",\"-c\",\"echo hi\"],"
    "\"WorkingDir\":\"/work\",\"User\":\"1000:1000\",\"Labels\":{\"x\":\"y\"}}";

static void check_two_layer_rootfs(const char *rootfs)
{
	CU_ASSERT_FALSE(exists(rootfs, "etc/a"));
	_cleanup_free_ char *b = slurp(rootfs, "etc/b");
	CU_ASSERT_PTR_NOT_NULL_FATAL(b);
	CU_ASSERT_STRING_EQUAL(b, "B2");
	CU_ASSERT_FALSE(exists(rootfs, "gone"));
	CU_ASSERT_FALSE(exists(rootfs, "dir/old"));
	CU_ASSERT_FALSE(exists(rootfs, "dir/sub"));
	CU_ASSERT_FALSE(exists(rootfs, "dir/keepdir/lower"));
	CU_ASSERT_TRUE(exists(rootfs, "dir/keepdir/upper"));
	CU_ASSERT_TRUE(exists(rootfs, "dir/early"));
	CU_ASSERT_TRUE(exists(rootfs, "dir/new"));
	CU_ASSERT_TRUE(exists(rootfs, "keep/x"));
	CU_ASSERT_FALSE(exists(rootfs, "dev/null"));
	CU_ASSERT_FALSE(exists(rootfs, "etc/.wh.a"));
	_cleanup_free_ char *sh = bl_asprintf("%s/bin/sh", rootfs);
	_cleanup_free_ char *hard = bl_asprintf("%s/bin/hard", rootfs);
	_cleanup_free_ char *suid = bl_asprintf("%s/bin/suid", rootfs);
	_cleanup_free_ char *link = bl_asprintf("%s/bin/link", rootfs);
	struct stat a, b2;
	CU_ASSERT_EQUAL_FATAL(stat(sh, &a), 0);
	CU_ASSERT_EQUAL_FATAL(stat(hard, &b2), 0);
	CU_ASSERT_EQUAL(a.st_ino, b2.st_ino);
	CU_ASSERT_EQUAL(lstat(link, &a), 0);
	CU_ASSERT_TRUE(S_ISLNK(a.st_mode));
	CU_ASSERT_EQUAL_FATAL(stat(suid, &a), 0);
	CU_ASSERT_EQUAL(a.st_mode & 07777, 0755);
}

static void check_config(const char *cfg)
{
	CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
	CU_ASSERT_PTR_NOT_NULL(strstr(cfg, "\"Env\":[\"PATH=/bin\",\"A=1\"]"));
	CU_ASSERT_PTR_NOT_NULL(strstr(cfg, "\"Cmd\":[\"/bin/sh\",\"-c\",\"echo hi\"]"));
	CU_ASSERT_PTR_NOT_NULL(strstr(cfg, "\"WorkingDir\":\"/work\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(cfg, "\"User\":\"1000:1000\""));
	CU_ASSERT_PTR_NULL(strstr(cfg, "Labels"));
}

static void test_oci_layout_whiteouts(void)
{
	fixture f;
	fixture_init(&f, "img-oci");
	bl_gen_layer layers[] = {{layer_base, false}, {layer_top, true}};
	char mhex[65];
	bl_gen_oci_layout(f.src, layers, 2, test_config, mhex);
	bl_error_t err = BL_ERROR_INIT;
	_cleanup_free_ char *rootfs = NULL, *cfg = NULL;
	int r = bl_image_resolve(f.src, f.store, &rootfs, &cfg, &err);
	if (r < 0)
		fprintf(stderr, "resolve: %s\n", err.msg);
	CU_ASSERT_EQUAL_FATAL(r, 0);
	_cleanup_free_ char *want = bl_asprintf("%s/images/%s/rootfs", f.store, mhex);
	_cleanup_free_ char *real_want = realpath(want, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(real_want);
	CU_ASSERT_STRING_EQUAL(rootfs, real_want);
	check_two_layer_rootfs(rootfs);
	check_config(cfg);
	fixture_free(&f);
}

static void test_docker_archive(void)
{
	fixture f;
	fixture_init(&f, "img-docker");
	bl_gen_layer layers[] = {{layer_base, false}, {layer_top, false}};
	bl_gen_docker_dir(f.src, layers, 2, test_config);
	bl_error_t err = BL_ERROR_INIT;
	_cleanup_free_ char *rootfs = NULL, *cfg = NULL, *rootfs2 = NULL;
	int r = bl_image_resolve(f.src, f.store, &rootfs, &cfg, &err);
	if (r < 0)
		fprintf(stderr, "resolve: %s\n", err.msg);
	CU_ASSERT_EQUAL_FATAL(r, 0);
	check_two_layer_rootfs(rootfs);
	check_config(cfg);
	/* The same image as a tarball (what `docker save` writes) maps to the same key. */
	_cleanup_free_ char *tar = bl_asprintf("%s/image.tar", f.base);
	bl_gen_tar_dir(f.src, tar, false);
	unsigned long before = bl_image_unpack_count();
	CU_ASSERT_EQUAL_FATAL(bl_image_resolve(tar, f.store, &rootfs2, NULL, &err), 0);
	CU_ASSERT_STRING_EQUAL(rootfs, rootfs2);
	CU_ASSERT_EQUAL(bl_image_unpack_count(), before);
	fixture_free(&f);
}

static void test_docker_layer_tampered(void)
{
	fixture f;
	fixture_init(&f, "img-docker-bad");
	static const bl_gen_entry l1[] = {E("a", BL_GEN_FILE, "a"), END};
	bl_gen_layer layers[] = {{l1, false}};
	bl_gen_docker_dir(f.src, layers, 1, NULL);
	/* Swap the layer for another tar: the diff_id no longer matches. */
	static const bl_gen_entry evil[] = {E("b", BL_GEN_FILE, "b"), END};
	void *tar;
	size_t len;
	char id[65];
	bl_gen_tar(l1, false, &tar, &len);
	bl_sha256_hex(tar, len, id);
	free(tar);
	bl_gen_tar(evil, false, &tar, &len);
	_cleanup_free_ char *path = bl_asprintf("%s/%s/layer.tar", f.src, id);
	bl_gen_write(path, tar, len);
	free(tar);
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(resolve_code(&f, f.src, NULL, &err), BL_EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "digest mismatch"));
	assert_clean(&f);
	fixture_free(&f);
}

/* issue 10 finding 5: a docker archive keeps its legitimate manifest.json and
 * config but carries a different layer, gzipped, under <id>/layer.tar. The key
 * is the manifest's digest, so accepting it would poison the cache for the
 * legitimate image: every layer must match its diff_id after decompression. */
static void test_docker_layer_tampered_gzip(void)
{
	fixture f;
	fixture_init(&f, "img-docker-gz");
	static const bl_gen_entry l1[] = {E("a", BL_GEN_FILE, "a"), END};
	bl_gen_layer layers[] = {{l1, false}};
	bl_gen_docker_dir(f.src, layers, 1, NULL);
	static const bl_gen_entry evil[] = {E("b", BL_GEN_FILE, "evil"), END};
	void *tar;
	size_t len;
	char id[65];
	bl_gen_tar(l1, false, &tar, &len);
	bl_sha256_hex(tar, len, id);
	free(tar);
	bl_gen_tar(evil, true, &tar, &len);
	_cleanup_free_ char *path = bl_asprintf("%s/%s/layer.tar", f.src, id);
	bl_gen_write(path, tar, len);
	free(tar);
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(resolve_code(&f, f.src, NULL, &err), BL_EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "digest mismatch"));
	assert_clean(&f);
	/* The legitimate archive, gzipped layer and all, is still accepted. */
	(void)bl_rm_rf(f.src, NULL);
	bl_gen_docker_dir(f.src, layers, 1, NULL);
	bl_gen_tar(l1, true, &tar, &len);
	bl_gen_write(path, tar, len);
	free(tar);
	_cleanup_free_ char *rootfs = NULL;
	CU_ASSERT_EQUAL(bl_image_resolve(f.src, f.store, &rootfs, NULL, &err), 0);
	CU_ASSERT_TRUE(rootfs && exists(rootfs, "a") && !exists(rootfs, "b"));
	fixture_free(&f);
}

static void test_oci_tarball_gzip(void)
{
	fixture f;
	fixture_init(&f, "img-ocitar");
	bl_gen_layer layers[] = {{layer_base, true}, {layer_top, true}};
	char mhex[65];
	bl_gen_oci_layout(f.src, layers, 2, test_config, mhex);
	_cleanup_free_ char *tar = bl_asprintf("%s/image.tar.gz", f.base);
	bl_gen_tar_dir(f.src, tar, true);
	bl_error_t err = BL_ERROR_INIT;
	_cleanup_free_ char *rootfs = NULL, *cfg = NULL;
	int r = bl_image_resolve(tar, f.store, &rootfs, &cfg, &err);
	if (r < 0)
		fprintf(stderr, "resolve: %s\n", err.msg);
	CU_ASSERT_EQUAL_FATAL(r, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(rootfs, mhex));
	check_two_layer_rootfs(rootfs);
	check_config(cfg);
	/* The staging copy of the tarball is gone. */
	_cleanup_free_ char *tmp = bl_asprintf("%s/tmp", f.store);
	CU_ASSERT_EQUAL(count_entries(tmp), 0);
	fixture_free(&f);
}

static void test_cache_hit(void)
{
	fixture f;
	fixture_init(&f, "img-cache");
	bl_gen_layer layers[] = {{layer_base, true}};
	bl_gen_oci_layout(f.src, layers, 1, NULL, NULL);
	bl_error_t err = BL_ERROR_INIT;
	_cleanup_free_ char *r1 = NULL, *r2 = NULL, *cfg = NULL;
	unsigned long before = bl_image_unpack_count();
	CU_ASSERT_EQUAL_FATAL(bl_image_resolve(f.src, f.store, &r1, NULL, &err), 0);
	CU_ASSERT_EQUAL(bl_image_unpack_count(), before + 1);
	/* A hit needs only index.json: without the blobs it still resolves. */
	_cleanup_free_ char *blobs = bl_asprintf("%s/blobs", f.src);
	CU_ASSERT_EQUAL(bl_rm_rf(blobs, NULL), 0);
	/* (No timing here: the machine is shared; the unpack count says it.) */
	CU_ASSERT_EQUAL_FATAL(bl_image_resolve(f.src, f.store, &r2, &cfg, &err), 0);
	CU_ASSERT_EQUAL(bl_image_unpack_count(), before + 1);
	CU_ASSERT_STRING_EQUAL(r1, r2);
	CU_ASSERT_PTR_NOT_NULL(cfg); /* stored config: "{}" */
	fixture_free(&f);
}

typedef struct race_arg {
	const fixture *f;
	char *rootfs;
	int r;
} race_arg;

static void *race_main(void *p)
{
	race_arg *a = p;
	bl_error_t err = BL_ERROR_INIT;
	a->r = bl_image_resolve(a->f->src, a->f->store, &a->rootfs, NULL, &err);
	return NULL;
}

static void test_concurrent_resolve(void)
{
	fixture f;
	fixture_init(&f, "img-race");
	bl_gen_layer layers[] = {{layer_base, true}, {layer_top, false}};
	bl_gen_oci_layout(f.src, layers, 2, NULL, NULL);
	race_arg args[4];
	pthread_t t[4];
	unsigned long before = bl_image_unpack_count();
	for (int i = 0; i < 4; i++) {
		args[i] = (race_arg){.f = &f};
		CU_ASSERT_EQUAL_FATAL(pthread_create(&t[i], NULL, race_main, &args[i]), 0);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < 4; i++) {
		CU_ASSERT_EQUAL(args[i].r, 0);
		if (args[i].rootfs && args[0].rootfs)
			CU_ASSERT_STRING_EQUAL(args[i].rootfs, args[0].rootfs);
	}
	CU_ASSERT_EQUAL(bl_image_unpack_count(), before + 1);
	if (args[0].rootfs)
		check_two_layer_rootfs(args[0].rootfs);
	for (int i = 0; i < 4; i++)
		free(args[i].rootfs);
	_cleanup_free_ char *tmp = bl_asprintf("%s/tmp", f.store);
	CU_ASSERT_EQUAL(count_entries(tmp), 0);
	fixture_free(&f);
}

static void test_import_list_remove(void)
{
	fixture f;
	fixture_init(&f, "img-names");
	bl_gen_layer layers[] = {{layer_base, false}};
	bl_gen_oci_layout(f.src, layers, 1, test_config, NULL);
	_cleanup_free_ char *plain = bl_asprintf("%s/plain", f.base);
	_cleanup_free_ char *plain_file = bl_asprintf("%s/usr/bin/tool", plain);
	bl_gen_write(plain_file, "tool", 4);
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(bl_image_import(f.src, "busybox:test", f.store, &err), 0);
	CU_ASSERT_EQUAL(bl_image_import(plain, "plain", f.store, &err), 0);
	CU_ASSERT_EQUAL(bl_image_import(f.src, "alias", f.store, &err), 0);
	CU_ASSERT_EQUAL(bl_image_import(f.src, "../bad", f.store, &err), -BL_EINVAL);
	_cleanup_strv_ char **names = NULL;
	CU_ASSERT_EQUAL_FATAL(bl_image_list(f.store, &names, &err), 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(names[0]);
	CU_ASSERT_STRING_EQUAL(names[0], "alias");
	CU_ASSERT_STRING_EQUAL(names[1], "busybox:test");
	CU_ASSERT_STRING_EQUAL(names[2], "plain");
	CU_ASSERT_PTR_NULL(names[3]);

	_cleanup_free_ char *rootfs = NULL, *cfg = NULL, *prootfs = NULL, *pcfg = NULL;
	CU_ASSERT_EQUAL_FATAL(bl_image_resolve("busybox:test", f.store, &rootfs, &cfg, &err), 0);
	CU_ASSERT_TRUE(exists(rootfs, "keep/x"));
	check_config(cfg);
	CU_ASSERT_EQUAL_FATAL(bl_image_resolve("plain", f.store, &prootfs, &pcfg, &err), 0);
	CU_ASSERT_NOT_EQUAL(strncmp(prootfs, plain, strlen(plain)), 0); /* a copy */
	CU_ASSERT_TRUE(exists(prootfs, "usr/bin/tool"));
	CU_ASSERT_PTR_NULL(pcfg);

	/* The image stays while another name uses it, and goes with the last. */
	CU_ASSERT_EQUAL(bl_image_remove("busybox:test", f.store, &err), 0);
	CU_ASSERT_TRUE(exists(rootfs, "keep/x"));
	CU_ASSERT_EQUAL(bl_image_remove("alias", f.store, &err), 0);
	CU_ASSERT_FALSE(exists(rootfs, ""));
	CU_ASSERT_EQUAL(bl_image_remove("plain", f.store, &err), 0);
	CU_ASSERT_EQUAL(bl_image_remove("plain", f.store, &err), -BL_ENOTFOUND);
	CU_ASSERT_EQUAL(resolve_code(&f, "alias", NULL, &err), BL_ENOTFOUND);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "alias"));
	assert_clean(&f);
	fixture_free(&f);
}

static void test_missing_ref(void)
{
	fixture f;
	fixture_init(&f, "img-missing");
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(resolve_code(&f, "no-such-image", NULL, &err), BL_ENOTFOUND);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "no-such-image"));
	CU_ASSERT_EQUAL(resolve_code(&f, "/nonexistent/dir/x.tar", NULL, &err), BL_ENOTFOUND);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "/nonexistent/dir/x.tar"));
	CU_ASSERT_EQUAL(resolve_code(&f, "", NULL, &err), BL_EINVAL);
	fixture_free(&f);
}

/* ------------------------------------------------------------------ hostile */

static void expect_layer_rejected(const char *tag, const bl_gen_layer *layers, size_t n,
				  bl_code want, const char *msg_part)
{
	fixture f;
	fixture_init(&f, tag);
	bl_gen_oci_layout(f.src, layers, n, NULL, NULL);
	bl_error_t err = BL_ERROR_INIT;
	int code = resolve_code(&f, f.src, NULL, &err);
	if (code != (int)want || (msg_part && !strstr(err.msg, msg_part)))
		fprintf(stderr, "%s: code %d: %s\n", tag, code, err.msg);
	CU_ASSERT_EQUAL(code, want);
	if (msg_part)
		CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, msg_part));
	assert_clean(&f);
	fixture_free(&f);
}

static void test_hostile_dotdot(void)
{
	static const bl_gen_entry l[] = {E("ok", BL_GEN_FILE, "x"),
					 E("a/../../outside/victim", BL_GEN_FILE, "pwned"), END};
	bl_gen_layer layers[] = {{l, false}};
	expect_layer_rejected("img-dotdot", layers, 1, BL_EPROTO, "'..'");
}

static void test_hostile_absolute(void)
{
	fixture f;
	fixture_init(&f, "img-abs");
	_cleanup_free_ char *abs = bl_asprintf("%s/victim", f.outside);
	bl_gen_entry l[] = {E(abs, BL_GEN_FILE, "pwned"), END};
	bl_gen_layer layers[] = {{l, false}};
	bl_gen_oci_layout(f.src, layers, 1, NULL, NULL);
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(resolve_code(&f, f.src, NULL, &err), BL_EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "absolute"));
	assert_clean(&f);
	fixture_free(&f);
}

static void test_hostile_symlink_escape(void)
{
	fixture f;
	fixture_init(&f, "img-symlink");
	/* Same layer, and across layers: a symlink out, then a write through it. */
	bl_gen_entry l1[] = {E("evil", BL_GEN_SYMLINK, f.outside),
			     E("evil/pwned", BL_GEN_FILE, "x"), END};
	bl_gen_entry l2a[] = {E("evil", BL_GEN_SYMLINK, "../../outside"), END};
	bl_gen_entry l2b[] = {E("evil/pwned", BL_GEN_FILE, "x"), END};
	for (int variant = 0; variant < 2; variant++) {
		bl_gen_layer one[] = {{l1, false}};
		bl_gen_layer two[] = {{l2a, false}, {l2b, true}};
		_cleanup_free_ char *src = bl_asprintf("%s/v%d", f.src, variant);
		bl_gen_oci_layout(src, variant ? two : one, variant ? 2 : 1, NULL, NULL);
		bl_error_t err = BL_ERROR_INIT;
		CU_ASSERT_EQUAL(resolve_code(&f, src, NULL, &err), BL_EPROTO);
		CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "symlink"));
		assert_clean(&f);
	}
	fixture_free(&f);
}

static void test_hostile_hardlink(void)
{
	fixture f;
	fixture_init(&f, "img-hardlink");
	_cleanup_free_ char *abs = bl_asprintf("%s/victim", f.outside);
	bl_gen_entry dotdot[] = {E("h", BL_GEN_HARDLINK, "../../outside/victim"), END};
	bl_gen_entry absolute[] = {E("h", BL_GEN_HARDLINK, abs), END};
	bl_gen_entry via_link[] = {E("evil", BL_GEN_SYMLINK, f.outside),
				   E("h", BL_GEN_HARDLINK, "evil/victim"), END};
	bl_gen_entry missing[] = {E("h", BL_GEN_HARDLINK, "nothing/here"), END};
	const bl_gen_entry *cases[] = {dotdot, absolute, via_link, missing};
	for (size_t i = 0; i < BL_ARRAY_SIZE(cases); i++) {
		bl_gen_layer layers[] = {{cases[i], false}};
		_cleanup_free_ char *src = bl_asprintf("%s/c%zu", f.src, i);
		bl_gen_oci_layout(src, layers, 1, NULL, NULL);
		bl_error_t err = BL_ERROR_INIT;
		CU_ASSERT_EQUAL(resolve_code(&f, src, NULL, &err), BL_EPROTO);
		assert_clean(&f);
		struct stat st;
		CU_ASSERT_EQUAL(stat(abs, &st), 0);
		CU_ASSERT_EQUAL(st.st_nlink, 1);
	}
	fixture_free(&f);
}

/* A whiteout below a symlink is resolved inside the rootfs, never outside. */
static void test_hostile_whiteout_through_symlink(void)
{
	fixture f;
	fixture_init(&f, "img-whsym");
	bl_gen_entry l1[] = {E("evil", BL_GEN_SYMLINK, f.outside), E("keep", BL_GEN_FILE, "k"),
			     END};
	bl_gen_entry l2[] = {E("evil/.wh.victim", BL_GEN_FILE, ""), END};
	bl_gen_entry l3[] = {E("evil/.wh..wh..opq", BL_GEN_FILE, ""), END};
	bl_gen_layer layers[] = {{l1, false}, {l2, false}, {l3, false}};
	bl_gen_oci_layout(f.src, layers, 3, NULL, NULL);
	bl_error_t err = BL_ERROR_INIT;
	_cleanup_free_ char *rootfs = NULL;
	CU_ASSERT_EQUAL(bl_image_resolve(f.src, f.store, &rootfs, NULL, &err), 0);
	_cleanup_free_ char *victim = slurp(f.outside, "victim");
	CU_ASSERT_PTR_NOT_NULL(victim);
	CU_ASSERT_EQUAL(count_entries(f.outside), 1);
	if (rootfs)
		CU_ASSERT_TRUE(exists(rootfs, "keep"));
	fixture_free(&f);
}

static void test_hostile_bad_whiteout(void)
{
	static const bl_gen_entry l[] = {E(".wh.", BL_GEN_FILE, ""), END};
	bl_gen_layer layers[] = {{l, false}};
	expect_layer_rejected("img-badwh", layers, 1, BL_EPROTO, "whiteout");
}

static void test_hostile_digest_mismatch(void)
{
	fixture f;
	fixture_init(&f, "img-digest");
	static const bl_gen_entry l[] = {E("a", BL_GEN_FILE, "aaaa"), END};
	bl_gen_layer layers[] = {{l, false}};
	bl_gen_oci_layout(f.src, layers, 1, NULL, NULL);
	char hex[65];
	bl_gen_oci_layer_hex(f.src, 0, hex);
	_cleanup_free_ char *blob = bl_asprintf("%s/blobs/sha256/%s", f.src, hex);
	/* Same size, one byte different inside the file data. */
	char *buf = NULL;
	size_t len = 0;
	CU_ASSERT_EQUAL_FATAL(bl_read_file(blob, 1 << 20, &buf, &len, NULL), 0);
	char *p = memmem(buf, len, "aaaa", 4);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	p[0] = 'b';
	bl_gen_write(blob, buf, len);
	free(buf);
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(resolve_code(&f, f.src, NULL, &err), BL_EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "digest mismatch"));
	assert_clean(&f);
	fixture_free(&f);
}

static void test_hostile_missing_blob(void)
{
	fixture f;
	fixture_init(&f, "img-noblob");
	static const bl_gen_entry l[] = {E("a", BL_GEN_FILE, "a"), END};
	bl_gen_layer layers[] = {{l, false}};
	bl_gen_oci_layout(f.src, layers, 1, NULL, NULL);
	char hex[65];
	bl_gen_oci_layer_hex(f.src, 0, hex);
	_cleanup_free_ char *blob = bl_asprintf("%s/blobs/sha256/%s", f.src, hex);
	CU_ASSERT_EQUAL(unlink(blob), 0);
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(resolve_code(&f, f.src, NULL, &err), BL_ENOTFOUND);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, hex));
	assert_clean(&f);
	fixture_free(&f);
}

static void write_index(const fixture *f, const char *text, size_t len)
{
	_cleanup_free_ char *p = bl_asprintf("%s/index.json", f->src);
	bl_gen_write(p, text, len);
}

static void test_hostile_json(void)
{
	fixture f;
	fixture_init(&f, "img-json");
	static const bl_gen_entry l[] = {E("a", BL_GEN_FILE, "a"), END};
	bl_gen_layer layers[] = {{l, false}};
	bl_gen_oci_layout(f.src, layers, 1, NULL, NULL);
	bl_error_t err = BL_ERROR_INIT;
	static const char *const bad[] = {
	    "{",
	    "[]",
	    "{\"manifests\":{}}",
	    "{\"manifests\":[{\"digest\":\"sha256:00\",\"size\":1}]}",
	    "{\"manifests\":[{\"digest\":\"md5:abc\",\"size\":1}]}",
	    "{\"manifests\":[{\"digest\":\"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b9"
	    "34ca495991b7852b855\",\"size\":\"1\"}]}",
	    "{\"manifests\":[{\"digest\":\"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b9"
	    "34ca495991b7852b855\",\"size\":-1}]}",
	    "{\"manifests\":[]}",
	    "{\"manifests\":[]} trailing",
	};
	for (size_t i = 0; i < BL_ARRAY_SIZE(bad); i++) {
		write_index(&f, bad[i], strlen(bad[i]));
		int code = resolve_code(&f, f.src, NULL, &err);
		if (code != BL_EPROTO)
			fprintf(stderr, "json case %zu: code %d: %s\n", i, code, err.msg);
		CU_ASSERT_EQUAL(code, BL_EPROTO);
		assert_clean(&f);
	}
	/* Deep nesting and a huge document. */
	size_t big = 5 << 20;
	char *huge = bl_malloc0(big + 1);
	memset(huge, '[', 100000);
	write_index(&f, huge, 100000);
	CU_ASSERT_EQUAL(resolve_code(&f, f.src, NULL, &err), BL_EPROTO);
	memset(huge, ' ', big);
	huge[0] = '{';
	huge[big - 1] = '}';
	write_index(&f, huge, big);
	CU_ASSERT_EQUAL(resolve_code(&f, f.src, NULL, &err), BL_EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "larger than"));
	free(huge);
	assert_clean(&f);
	fixture_free(&f);
}

static void test_hostile_limits(void)
{
	fixture f;
	fixture_init(&f, "img-limits");
	static const bl_gen_entry l[] = {E("a", BL_GEN_FILE, "0123456789"),
					 E("b", BL_GEN_FILE, "0123456789"), END};
	bl_gen_layer layers[] = {{l, true}, {l, false}};
	bl_gen_oci_layout(f.src, layers, 2, NULL, NULL);
	bl_error_t err = BL_ERROR_INIT;
	bl_image_limits lim;
	bl_image_limits_default(&lim);
	lim.max_unpacked_bytes = 30;
	CU_ASSERT_EQUAL(resolve_code(&f, f.src, &lim, &err), BL_EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "more than 30 bytes"));
	assert_clean(&f);
	bl_image_limits_default(&lim);
	lim.max_entries = 3;
	CU_ASSERT_EQUAL(resolve_code(&f, f.src, &lim, &err), BL_EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "entries"));
	assert_clean(&f);
	bl_image_limits_default(&lim);
	lim.max_layers = 1;
	CU_ASSERT_EQUAL(resolve_code(&f, f.src, &lim, &err), BL_EPROTO);
	assert_clean(&f);
	bl_image_limits_default(&lim);
	CU_ASSERT_EQUAL(resolve_code(&f, f.src, &lim, &err), 0);
	fixture_free(&f);
}

static void test_hostile_tarball(void)
{
	fixture f;
	fixture_init(&f, "img-badtar");
	_cleanup_free_ char *junk = bl_asprintf("%s/junk.tar", f.base);
	bl_gen_write(junk, "this is not a tar archive at all", 32);
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(resolve_code(&f, junk, NULL, &err), BL_EPROTO);
	/* A tarball whose own entries try to escape while being staged. */
	static const bl_gen_entry l[] = {E("index.json", BL_GEN_FILE, "{\"manifests\":[]}"),
					 E("../../outside/victim", BL_GEN_FILE, "pwned"), END};
	void *tar;
	size_t len;
	bl_gen_tar(l, false, &tar, &len);
	_cleanup_free_ char *evil = bl_asprintf("%s/evil.tar", f.base);
	bl_gen_write(evil, tar, len);
	free(tar);
	CU_ASSERT_EQUAL(resolve_code(&f, evil, NULL, &err), BL_EPROTO);
	assert_clean(&f);
	fixture_free(&f);
}

/* ------------------------------------------------------------------ parsers */

static void test_parse_index_platform(void)
{
	const char *idx =
	    "{\"manifests\":["
	    "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":"
	    "\"sha256:1111111111111111111111111111111111111111111111111111111111111111\","
	    "\"size\":10,\"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\"}},"
	    "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":"
	    "\"sha256:2222222222222222222222222222222222222222222222222222222222222222\","
	    "\"size\":10,\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}},"
	    "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":"
	    "\"sha256:3333333333333333333333333333333333333333333333333333333333333333\","
	    "\"size\":10,\"platform\":{\"os\":\"unknown\",\"architecture\":\"unknown\"}}]}";
	bl_image_desc d = {0};
	int is_index = -1;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL_FATAL(bl_image_parse_index(idx, strlen(idx), NULL, &d, &is_index, &err), 0);
	CU_ASSERT_EQUAL(is_index, 0);
#if defined(__x86_64__)
	CU_ASSERT_EQUAL(d.digest_hex[0], '2');
#endif
	CU_ASSERT_EQUAL(d.size, 10);
	bl_image_desc_clear(&d);
}

static void test_parse_config_types(void)
{
	bl_error_t err = BL_ERROR_INIT;
	char *out = NULL;
	const char *bad[] = {
	    "{\"config\":{\"Env\":\"PATH=/bin\"}}",
	    "{\"config\":{\"Cmd\":[1]}}",
	    "{\"config\":{\"User\":0}}",
	    "{\"config\":[]}",
	    "{\"config\":{\"Env\":[\"a\\u0000b\"]}}",
	};
	for (size_t i = 0; i < BL_ARRAY_SIZE(bad); i++) {
		CU_ASSERT_EQUAL(
		    bl_image_parse_config(bad[i], strlen(bad[i]), NULL, &out, NULL, &err),
		    -BL_EPROTO);
		CU_ASSERT_PTR_NULL(out);
	}
	const char *ok = "{\"config\":{\"Entrypoint\":[\"/x\"],\"Cmd\":null}}";
	CU_ASSERT_EQUAL_FATAL(bl_image_parse_config(ok, strlen(ok), NULL, &out, NULL, &err), 0);
	CU_ASSERT_STRING_EQUAL(out, "{\"Entrypoint\":[\"/x\"]}");
	free(out);
}

static void test_parse_docker_manifest_paths(void)
{
	bl_error_t err = BL_ERROR_INIT;
	char *cfg = NULL;
	char **layers = NULL;
	const char *bad[] = {
	    "[{\"Config\":\"../x.json\",\"Layers\":[]}]",
	    "[{\"Config\":\"/etc/passwd\",\"Layers\":[]}]",
	    "[{\"Config\":\"c.json\",\"Layers\":[\"a/../../b\"]}]",
	    "[{\"Config\":\"c.json\",\"Layers\":[7]}]",
	    "[]",
	    "{}",
	};
	for (size_t i = 0; i < BL_ARRAY_SIZE(bad); i++)
		CU_ASSERT_EQUAL(bl_image_parse_docker_manifest(bad[i], strlen(bad[i]), NULL, &cfg,
							       &layers, &err),
				-BL_EPROTO);
	const char *ok = "[{\"Config\":\"./c.json\",\"Layers\":[\"id/layer.tar\"]}]";
	CU_ASSERT_EQUAL_FATAL(
	    bl_image_parse_docker_manifest(ok, strlen(ok), NULL, &cfg, &layers, &err), 0);
	CU_ASSERT_STRING_EQUAL(cfg, "c.json");
	CU_ASSERT_STRING_EQUAL(layers[0], "id/layer.tar");
	CU_ASSERT_PTR_NULL(layers[1]);
	free(cfg);
	bl_strv_free(layers);
}

/* The busybox images of packaging/build-test-images.sh (GNU tar, not libarchive). */
static void test_script_images(void)
{
	struct stat st;
	BL_SKIP_UNLESS(access("packaging/build-test-images.sh", X_OK) == 0 &&
			   stat("/bin/busybox", &st) == 0,
		       "needs packaging/build-test-images.sh (run from the source tree) and "
		       "busybox-static");
	fixture f;
	fixture_init(&f, "img-script");
	_cleanup_free_ char *dir = bl_asprintf("%s/test-images", f.base);
	_cleanup_free_ char *cmd = bl_asprintf("packaging/build-test-images.sh %s >/dev/null", dir);
	CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
	static const char *const forms[] = {"busybox-oci", "busybox-oci.tar", "busybox-docker.tar",
					    "busybox-rootfs"};
	_cleanup_free_ char *first = NULL;
	for (size_t i = 0; i < BL_ARRAY_SIZE(forms); i++) {
		_cleanup_free_ char *ref = bl_asprintf("%s/%s", dir, forms[i]);
		_cleanup_free_ char *rootfs = NULL, *cfg = NULL;
		bl_error_t err = BL_ERROR_INIT;
		int r = bl_image_resolve(ref, f.store, &rootfs, &cfg, &err);
		if (r < 0)
			fprintf(stderr, "%s: %s\n", forms[i], err.msg);
		CU_ASSERT_EQUAL_FATAL(r, 0);
		CU_ASSERT_TRUE(exists(rootfs, "bin/busybox"));
		CU_ASSERT_TRUE(exists(rootfs, "bin/sh"));
		CU_ASSERT_EQUAL(cfg == NULL, i == 3);
		if (i == 0)
			first = steal_pointer(&rootfs);
		else if (i == 1)
			CU_ASSERT_STRING_EQUAL(first, rootfs); /* layout and archive: one key */
	}
	fixture_free(&f);
}

/* The default image, when packaging/build-default-image.sh has been run. */
static void test_default_image(void)
{
	_cleanup_free_ char *store = bl_image_store_path(NULL);
	_cleanup_free_ char *link = bl_asprintf("%s/names/default", store);
	struct stat st;
	BL_SKIP_UNLESS(lstat(link, &st) == 0,
		       "no default image in %s (packaging/build-default-image.sh)", store);
	bl_error_t err = BL_ERROR_INIT;
	_cleanup_free_ char *rootfs = NULL, *cfg = NULL;
	CU_ASSERT_EQUAL_FATAL(bl_image_resolve("default", NULL, &rootfs, &cfg, &err), 0);
	CU_ASSERT_TRUE(exists(rootfs, "usr/bin/python3"));
	CU_ASSERT_TRUE(exists(rootfs, "bin/sh"));
	CU_ASSERT_PTR_NOT_NULL(cfg);
	if (cfg)
		CU_ASSERT_PTR_NOT_NULL(strstr(cfg, "1000"));
}

int main(void)
{
	static const bl_test_case tests[] = {
	    {"sha256_vectors", test_sha256_vectors},
	    {"plain_dir", test_plain_dir},
	    {"oci_layout_whiteouts", test_oci_layout_whiteouts},
	    {"docker_archive", test_docker_archive},
	    {"docker_layer_tampered", test_docker_layer_tampered},
	    {"docker_layer_tampered_gzip", test_docker_layer_tampered_gzip},
	    {"oci_tarball_gzip", test_oci_tarball_gzip},
	    {"cache_hit", test_cache_hit},
	    {"concurrent_resolve", test_concurrent_resolve},
	    {"import_list_remove", test_import_list_remove},
	    {"missing_ref", test_missing_ref},
	    {"hostile_dotdot", test_hostile_dotdot},
	    {"hostile_absolute", test_hostile_absolute},
	    {"hostile_symlink_escape", test_hostile_symlink_escape},
	    {"hostile_hardlink", test_hostile_hardlink},
	    {"hostile_whiteout_through_symlink", test_hostile_whiteout_through_symlink},
	    {"hostile_bad_whiteout", test_hostile_bad_whiteout},
	    {"hostile_digest_mismatch", test_hostile_digest_mismatch},
	    {"hostile_missing_blob", test_hostile_missing_blob},
	    {"hostile_json", test_hostile_json},
	    {"hostile_limits", test_hostile_limits},
	    {"hostile_tarball", test_hostile_tarball},
	    {"parse_index_platform", test_parse_index_platform},
	    {"parse_config_types", test_parse_config_types},
	    {"parse_docker_manifest_paths", test_parse_docker_manifest_paths},
	    {"script_images", test_script_images},
	    {"default_image", test_default_image},
	    {NULL, NULL},
	};
	return bl_test_run("image", tests);
}
