/* libFuzzer target: the image metadata parsers (index.json and nested
 * indexes, manifests, configs, docker manifest.json). The first byte picks
 * the parser; the rest is the document. */
#include "bl_cleanup.h"
#include "image.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The docker paths handed out must be relative with no ".." component. */
static int path_ok(const char *p)
{
	if (p[0] == '/' || !p[0])
		return 0;
	for (const char *c = p; c;) {
		if (c[0] == '.' && c[1] == '.' && (c[2] == '/' || !c[2]))
			return 0;
		c = strchr(c, '/');
		if (c)
			c++;
	}
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	bl_image_limits lim;
	bl_image_limits_default(&lim);
	lim.max_json_bytes = 1 << 16;
	lim.max_layers = 16;
	const char *json = (const char *)data + 1;
	size_t len = size - 1;
	bl_error_t err = BL_ERROR_INIT;
	switch (data[0] % 4) {
	case 0: {
		bl_image_desc d = {0};
		int is_index = 0;
		if (bl_image_parse_index(json, len, &lim, &d, &is_index, &err) == 0) {
			if (strlen(d.digest_hex) != 64)
				abort();
			bl_image_desc_clear(&d);
		}
		break;
	}
	case 1: {
		bl_image_manifest m = {0};
		if (bl_image_parse_manifest(json, len, &lim, &m, &err) == 0) {
			if (m.n_layers > lim.max_layers)
				abort();
			bl_image_manifest_clear(&m);
		}
		break;
	}
	case 2: {
		char *out = NULL;
		char **ids = NULL;
		if (bl_image_parse_config(json, len, &lim, &out, &ids, &err) == 0) {
			free(out);
			bl_strv_free(ids);
		}
		break;
	}
	default: {
		char *cfg = NULL;
		char **layers = NULL;
		if (bl_image_parse_docker_manifest(json, len, &lim, &cfg, &layers, &err) == 0) {
			if (!path_ok(cfg))
				abort();
			for (char **l = layers; *l; l++)
				if (!path_ok(*l))
					abort();
			free(cfg);
			bl_strv_free(layers);
		}
		break;
	}
	}
	if (err.code != BL_OK && err.code != BL_EPROTO && err.code != BL_ENOTFOUND)
		abort();
	return 0;
}
