/* Unit tests of runtime/image_manifest.c: digests, bounded JSON, indexes and
 * manifest lists (platform choice), manifests (media types, limits). */
#include "bl_test.h"

#include "bl_cleanup.h"
#include "bl_util.h"
#include "image_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define H1 "1111111111111111111111111111111111111111111111111111111111111111"
#define H2 "2222222222222222222222222222222222222222222222222222222222222222"

static void test_digest(void)
{
	char out[65];
	bl_error_t err = BL_ERROR_INIT;
	const char *ok = "sha256:" H1;
	CU_ASSERT_EQUAL(bl_img_parse_digest(ok, strlen(ok), out, &err), 0);
	CU_ASSERT_STRING_EQUAL(out, H1);
	const char *bad[] = {
	    "sha512:" H1,
	    "sha256:" H1 "1",
	    "sha256:" H1 "-",
	    "sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
	    "sha256:",
	    ""};
	for (size_t i = 0; i < BL_ARRAY_SIZE(bad); i++)
		CU_ASSERT_EQUAL(bl_img_parse_digest(bad[i], strlen(bad[i]), out, &err), -BL_EPROTO);
}

static void test_json_bounds(void)
{
	bl_error_t err = BL_ERROR_INIT;
	struct json_object *o = NULL;
	CU_ASSERT_EQUAL(bl_img_json_parse("{}  \n", 5, 64, "doc", json_type_object, &o, &err), 0);
	json_object_put(o);
	o = NULL;
	CU_ASSERT_EQUAL(bl_img_json_parse("{} x", 4, 64, "doc", json_type_object, &o, &err),
			-BL_EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "trailing"));
	CU_ASSERT_EQUAL(bl_img_json_parse("[]", 2, 64, "doc", json_type_object, &o, &err),
			-BL_EPROTO);
	CU_ASSERT_EQUAL(bl_img_json_parse("{\"a\":1", 6, 64, "doc", json_type_object, &o, &err),
			-BL_EPROTO);
	CU_ASSERT_EQUAL(bl_img_json_parse("{}", 2, 1, "doc", json_type_object, &o, &err),
			-BL_EPROTO);
	/* Nesting past the depth limit is refused, not recursed into. */
	char deep[200];
	memset(deep, '[', 100);
	memset(deep + 100, ']', 100);
	CU_ASSERT_EQUAL(
	    bl_img_json_parse(deep, sizeof(deep), 1024, "doc", json_type_array, &o, &err),
	    -BL_EPROTO);
	CU_ASSERT_PTR_NULL(o);
}

static char *index_doc(const char *media, const char *plat1, const char *plat2)
{
	return bl_asprintf(
	    "{\"schemaVersion\":2,\"mediaType\":\"%s\",\"manifests\":["
	    "{\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\","
	    "\"digest\":\"sha256:" H1 "\",\"size\":7,\"platform\":%s},"
	    "{\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\","
	    "\"digest\":\"sha256:" H2 "\",\"size\":9,\"platform\":%s}]}",
	    media, plat1, plat2);
}

/* A docker manifest list with arm64 first: linux/amd64 is chosen (on amd64). */
static void test_manifest_list_platform(void)
{
	_cleanup_free_ char *doc =
	    index_doc("application/vnd.docker.distribution.manifest.list.v2+json",
		      "{\"os\":\"linux\",\"architecture\":\"arm64\",\"variant\":\"v8\"}",
		      "{\"os\":\"linux\",\"architecture\":\"amd64\"}");
	bl_image_desc d = {0};
	int is_index = -1;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL_FATAL(bl_image_parse_index(doc, strlen(doc), NULL, &d, &is_index, &err), 0);
	CU_ASSERT_EQUAL(is_index, 0);
#if defined(__x86_64__)
	CU_ASSERT_STRING_EQUAL(d.digest_hex, H2);
	CU_ASSERT_EQUAL(d.size, 9);
#endif
	bl_image_desc_clear(&d);
}

/* No manifest for this platform: BL_ENOTFOUND naming linux/<arch>. */
static void test_index_no_platform(void)
{
	_cleanup_free_ char *doc = index_doc("application/vnd.oci.image.index.v1+json",
					     "{\"os\":\"linux\",\"architecture\":\"s390x\"}",
					     "{\"os\":\"windows\",\"architecture\":\"amd64\"}");
	bl_image_desc d = {0};
	int is_index = -1;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(bl_image_parse_index(doc, strlen(doc), NULL, &d, &is_index, &err),
			-BL_ENOTFOUND);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "linux/"));
	CU_ASSERT_PTR_NULL(d.media_type);
}

static char *manifest_doc(const char *layer_media, const char *size)
{
	return bl_asprintf("{\"schemaVersion\":2,\"config\":{\"mediaType\":\"application/"
			   "vnd.oci.image.config.v1+json\",\"digest\":\"sha256:" H1
			   "\",\"size\":3},\"layers\":[{\"mediaType\":\"%s\",\"digest\":"
			   "\"sha256:" H2 "\",\"size\":%s}]}",
			   layer_media, size);
}

static void test_manifest_media_and_limits(void)
{
	bl_error_t err = BL_ERROR_INIT;
	bl_image_manifest m = {0};
	_cleanup_free_ char *ok =
	    manifest_doc("application/vnd.docker.image.rootfs.diff.tar.gzip", "100");
	CU_ASSERT_EQUAL_FATAL(bl_image_parse_manifest(ok, strlen(ok), NULL, &m, &err), 0);
	CU_ASSERT_EQUAL(m.n_layers, 1);
	CU_ASSERT_STRING_EQUAL(m.layers[0].digest_hex, H2);
	CU_ASSERT_STRING_EQUAL(m.config.digest_hex, H1);
	bl_image_manifest_clear(&m);
	_cleanup_free_ char *foreign = manifest_doc("application/x-evil", "100");
	CU_ASSERT_EQUAL(bl_image_parse_manifest(foreign, strlen(foreign), NULL, &m, &err),
			-BL_EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "media type"));
	_cleanup_free_ char *neg = manifest_doc("application/vnd.oci.image.layer.v1.tar", "-1");
	CU_ASSERT_EQUAL(bl_image_parse_manifest(neg, strlen(neg), NULL, &m, &err), -BL_EPROTO);
	bl_image_limits lim;
	bl_image_limits_default(&lim);
	lim.max_blob_bytes = 50;
	CU_ASSERT_EQUAL(bl_image_parse_manifest(ok, strlen(ok), &lim, &m, &err), -BL_EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "larger than"));
	/* An index handed where a manifest is expected. */
	_cleanup_free_ char *idx = index_doc("application/vnd.oci.image.index.v1+json", "{}", "{}");
	CU_ASSERT_EQUAL(bl_image_parse_manifest(idx, strlen(idx), NULL, &m, &err), -BL_EPROTO);
	CU_ASSERT_PTR_NULL(m.layers);
}

int main(void)
{
	static const bl_test_case tests[] = {
	    {"digest", test_digest},
	    {"json_bounds", test_json_bounds},
	    {"manifest_list_platform", test_manifest_list_platform},
	    {"index_no_platform", test_index_no_platform},
	    {"manifest_media_and_limits", test_manifest_media_and_limits},
	    {NULL, NULL},
	};
	return bl_test_run("image_manifest", tests);
}
