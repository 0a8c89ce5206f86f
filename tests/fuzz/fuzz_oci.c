/* libFuzzer target: OCI bundle specs (runtime/oci.c), untrusted input from
 * containerd bundles. Checks what the translation promises: on success the
 * agent's spec parses, its root is "rootfs", every bind source is an
 * absolute host path and every share name is m<k>; on failure nothing is
 * handed out. The first byte picks the policy. */
#include "bl_cleanup.h"
#include "spec.h"

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > (1u << 18))
		return 0;
	char *json = malloc(size);
	memcpy(json, data + 1, size - 1);
	json[size - 1] = '\0';
	bl_oci_policy pol = {.ignore_lsm = data[0] & 1,
			     .ignore_hooks = data[0] & 2,
			     .memory_max_bytes = (data[0] & 4) ? 64u << 20 : 0};
	bl_oci o;
	bl_error_t err = BL_ERROR_INIT;
	int r = bl_oci_translate(json, "c3", &pol, &o, &err);
	if (r == 0) {
		json_object *s = json_tokener_parse(o.agent_spec);
		if (!s)
			abort();
		json_object *root = json_object_object_get(s, "root");
		if (strcmp(json_object_get_string(json_object_object_get(root, "path")), "rootfs"))
			abort();
		json_object_put(s);
		for (size_t i = 0; i < o.n_binds; i++) {
			char want[32];
			snprintf(want, sizeof(want), "m%zu", i);
			if (o.binds[i].source[0] != '/' || strcmp(o.binds[i].share_name, want))
				abort();
		}
		if (o.process_json) {
			char *merged = NULL;
			if (bl_oci_process_overlay(o.process_json, "{\"args\":[\"x\"]}", true, true,
						   &merged, &err) == 0)
				free(merged);
		}
		bl_oci_clear(&o);
	} else if (o.agent_spec || o.binds || err.code == BL_OK) {
		abort();
	}
	bl_oci_resources res;
	(void)bl_oci_resources_parse(json, &res, &err);
	free(json);
	return 0;
}
