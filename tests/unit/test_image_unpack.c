/* Unit tests of runtime/image_unpack.c: path normalisation, tree removal that
 * never follows symlinks, and layer verification as stored and after
 * decompression (diff_id), with and without gzip. */
#include "bl_test.h"
#include "bl_image_gen.h"

#include "bl_cleanup.h"
#include "bl_util.h"
#include "image_internal.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void test_path_clean(void)
{
	char out[64];
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(bl_img_path_clean("./a//b/./c/", out, sizeof(out), &err), 0);
	CU_ASSERT_STRING_EQUAL(out, "a/b/c");
	CU_ASSERT_EQUAL(bl_img_path_clean("./", out, sizeof(out), &err), 0);
	CU_ASSERT_STRING_EQUAL(out, "");
	CU_ASSERT_EQUAL(bl_img_path_clean("a/../b", out, sizeof(out), &err), -BL_EPROTO);
	CU_ASSERT_EQUAL(bl_img_path_clean("/etc/passwd", out, sizeof(out), &err), -BL_EPROTO);
	CU_ASSERT_EQUAL(bl_img_path_clean("..", out, sizeof(out), &err), -BL_EPROTO);
	char longp[200];
	memset(longp, 'x', sizeof(longp) - 1);
	longp[sizeof(longp) - 1] = '\0';
	CU_ASSERT_EQUAL(bl_img_path_clean(longp, out, sizeof(out), &err), -BL_EPROTO);
	CU_ASSERT_EQUAL(bl_img_path_clean(NULL, out, sizeof(out), &err), -BL_EPROTO);
}

static void test_rm_tree_no_follow(void)
{
	_cleanup_free_ char *base = bl_test_tmpdir("unpack-rm");
	_cleanup_free_ char *keep = bl_asprintf("%s/outside/keep", base);
	_cleanup_free_ char *inner = bl_asprintf("%s/tree/sub/file", base);
	_cleanup_free_ char *lnk = bl_asprintf("%s/tree/sub/link", base);
	_cleanup_free_ char *outside = bl_asprintf("%s/outside", base);
	bl_gen_write(keep, "k", 1);
	bl_gen_write(inner, "x", 1);
	CU_ASSERT_EQUAL_FATAL(symlink(outside, lnk), 0);
	_cleanup_close_ int fd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	CU_ASSERT_EQUAL(bl_img_rm_tree_at(fd, "tree", 0), 0);
	CU_ASSERT_EQUAL(bl_img_rm_tree_at(fd, "tree", 0), 0); /* already gone: fine */
	CU_ASSERT_EQUAL(access(keep, F_OK), 0);
	(void)bl_rm_rf(base, NULL);
}

/* Unpacks one layer file of src into a fresh rootfs; returns the code. */
static int unpack_one(const char *base, const bl_img_layer *l, bl_error_t *err)
{
	_cleanup_free_ char *root = bl_asprintf("%s/root", base);
	(void)bl_rm_rf(root, NULL);
	if (mkdir(root, 0755) < 0)
		return -1;
	_cleanup_close_ int src_fd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_close_ int root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	bl_image_limits lim;
	bl_image_limits_default(&lim);
	bl_img_unpack_job j = {.src_fd = src_fd,
			       .root_fd = root_fd,
			       .layers = l,
			       .n_layers = 1,
			       .lim = &lim,
			       .whiteouts = true,
			       .err = err};
	bl_error_clear(err);
	return bl_img_unpack_run(&j);
}

static void test_layer_diff_id(void)
{
	static const bl_gen_entry good[] = {{"f", BL_GEN_FILE, "good", 0}, {NULL, 0, NULL, 0}};
	static const bl_gen_entry evil[] = {{"f", BL_GEN_FILE, "evil", 0}, {NULL, 0, NULL, 0}};
	_cleanup_free_ char *base = bl_test_tmpdir("unpack-diff");
	_cleanup_free_ char *path = bl_asprintf("%s/layer.tar", base);
	_cleanup_free_ char *out = bl_asprintf("%s/root/f", base);
	void *tar, *gz;
	size_t len, gzlen;
	char diff[65], gzhex[65];
	bl_gen_tar(good, false, &tar, &len);
	bl_sha256_hex(tar, len, diff);
	bl_gen_tar(good, true, &gz, &gzlen);
	bl_sha256_hex(gz, gzlen, gzhex);
	bl_img_layer l = {.path = (char *)"layer.tar", .expect_size = UINT64_MAX};
	memcpy(l.expect_diff_hex, diff, sizeof(diff));
	bl_error_t err = BL_ERROR_INIT;
	/* The right content, plain and gzipped, with its diff_id. */
	bl_gen_write(path, tar, len);
	CU_ASSERT_EQUAL(unpack_one(base, &l, &err), 0);
	bl_gen_write(path, gz, gzlen);
	CU_ASSERT_EQUAL(unpack_one(base, &l, &err), 0);
	_cleanup_free_ char *got = NULL;
	CU_ASSERT_EQUAL(bl_read_file(out, 64, &got, NULL, NULL), 0);
	CU_ASSERT_STRING_EQUAL(got ? got : "", "good");
	/* The compressed digest and size, when known, are checked too. */
	memcpy(l.expect_hex, gzhex, sizeof(gzhex));
	l.expect_size = gzlen;
	CU_ASSERT_EQUAL(unpack_one(base, &l, &err), 0);
	l.expect_size = gzlen + 1;
	CU_ASSERT_EQUAL(unpack_one(base, &l, &err), -BL_EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "size"));
	l.expect_size = UINT64_MAX;
	l.expect_hex[0] = '\0';
	/* Other content, gzipped, under the good diff_id. */
	void *egz;
	size_t egzlen;
	bl_gen_tar(evil, true, &egz, &egzlen);
	bl_gen_write(path, egz, egzlen);
	CU_ASSERT_EQUAL(unpack_one(base, &l, &err), -BL_EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "after decompression"));
	/* Trailing garbage after the tar also changes the diff_id. */
	_cleanup_free_ char *padded = bl_malloc0(len + 512);
	memcpy(padded, tar, len);
	memset(padded + len, 'x', 512);
	bl_gen_write(path, padded, len + 512);
	CU_ASSERT_EQUAL(unpack_one(base, &l, &err), -BL_EPROTO);
	free(tar);
	free(gz);
	free(egz);
	(void)bl_rm_rf(base, NULL);
}

int main(void)
{
	static const bl_test_case tests[] = {
	    {"path_clean", test_path_clean},
	    {"rm_tree_no_follow", test_rm_tree_no_follow},
	    {"layer_diff_id", test_layer_diff_id},
	    {NULL, NULL},
	};
	return bl_test_run("image_unpack", tests);
}
