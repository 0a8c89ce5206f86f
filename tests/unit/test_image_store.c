/* Unit tests of runtime/image_store.c: the store skeleton and its modes,
 * installing a plan (staged, renamed into place), names replaced atomically
 * and images dropped when their last name goes. */
#include "bl_test.h"

#include "bl_cleanup.h"
#include "bl_util.h"
#include "image_internal.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

static void test_skeleton(void)
{
	_cleanup_free_ char *base = bl_test_tmpdir("store-skel");
	_cleanup_free_ char *dir = bl_asprintf("%s/s", base);
	_cleanup_free_ char *abs = NULL;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL_FATAL(bl_img_store_open(dir, &abs, &err), 0);
	CU_ASSERT_EQUAL(abs[0], '/');
	static const char *const subs[] = {"", "/images", "/names", "/locks", "/tmp"};
	for (size_t i = 0; i < BL_ARRAY_SIZE(subs); i++) {
		_cleanup_free_ char *p = bl_asprintf("%s%s", abs, subs[i]);
		struct stat st;
		CU_ASSERT_EQUAL(stat(p, &st), 0);
		CU_ASSERT_EQUAL(st.st_mode & 0777, 0700);
	}
	(void)bl_rm_rf(base, NULL);
}

static void install_empty(const char *store, char key[65], const char *cfg)
{
	uint8_t seed[8];
	static int n;
	memcpy(seed, &n, sizeof(n));
	n++;
	bl_img_plan p = {.config_json = cfg ? bl_strdup(cfg) : NULL, .source = bl_strdup("test")};
	bl_sha256_hex(seed, sizeof(int), p.key);
	memcpy(key, p.key, 65);
	bl_image_limits lim;
	bl_image_limits_default(&lim);
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(bl_img_store_install(store, -1, &p, &lim, &err), 0);
	bl_img_plan_clear(&p);
}

static void test_install_and_names(void)
{
	_cleanup_free_ char *base = bl_test_tmpdir("store-names");
	_cleanup_free_ char *store = NULL;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL_FATAL(bl_img_store_open(base, &store, &err), 0);
	char k1[65], k2[65], got[65];
	unsigned long before = bl_image_unpack_count();
	install_empty(store, k1, "{\"User\":\"7\"}");
	install_empty(store, k2, NULL);
	CU_ASSERT_EQUAL(bl_image_unpack_count(), before + 2);
	CU_ASSERT_TRUE(bl_img_present(store, k1));
	_cleanup_free_ char *tmp = bl_asprintf("%s/tmp", store);
	CU_ASSERT_EQUAL(count_entries(tmp), 0);
	_cleanup_free_ char *rootfs = NULL, *cfg = NULL;
	CU_ASSERT_EQUAL(bl_img_result(store, k1, &rootfs, &cfg, &err), 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(rootfs, k1));
	CU_ASSERT_STRING_EQUAL(cfg ? cfg : "", "{\"User\":\"7\"}");
	CU_ASSERT_EQUAL(bl_img_name_key(store, "a", got, &err), -BL_ENOTFOUND);
	CU_ASSERT_EQUAL(bl_img_set_name(store, "a", k1, &err), 0);
	CU_ASSERT_EQUAL(bl_img_set_name(store, "b", k1, &err), 0);
	CU_ASSERT_EQUAL(bl_img_name_key(store, "a", got, &err), 0);
	CU_ASSERT_STRING_EQUAL(got, k1);
	/* Moving "a" keeps k1 (still named "b"); moving "b" too drops it. */
	CU_ASSERT_EQUAL(bl_img_set_name(store, "a", k2, &err), 0);
	CU_ASSERT_TRUE(bl_img_present(store, k1));
	CU_ASSERT_EQUAL(bl_img_set_name(store, "b", k2, &err), 0);
	CU_ASSERT_FALSE(bl_img_present(store, k1));
	_cleanup_strv_ char **names = NULL;
	CU_ASSERT_EQUAL(bl_image_list(store, &names, &err), 0);
	CU_ASSERT_TRUE(names && names[0] && names[1] && !names[2]);
	CU_ASSERT_EQUAL(bl_image_remove("a", store, &err), 0);
	CU_ASSERT_TRUE(bl_img_present(store, k2));
	CU_ASSERT_EQUAL(bl_image_remove("b", store, &err), 0);
	CU_ASSERT_FALSE(bl_img_present(store, k2));
	CU_ASSERT_EQUAL(bl_image_remove("b", store, &err), -BL_ENOTFOUND);
	(void)bl_rm_rf(base, NULL);
}

int main(void)
{
	static const bl_test_case tests[] = {
	    {"skeleton", test_skeleton},
	    {"install_and_names", test_install_and_names},
	    {NULL, NULL},
	};
	return bl_test_run("image_store", tests);
}
