/*
 * libFuzzer target for the agent's request decoding, as the agent does it
 * (agent/server.c): the first byte picks a request message, the rest is its
 * protobuf payload; decoded fields then go through the same checks and
 * parsers (ids, share paths, device names, hostnames, the OCI spec JSON with
 * its linux.seccomp compiled to BPF, a process JSON). No side effects.
 */
#include "../../agent/seccomp.h"
#include "../../agent/spec.h"
#include "../../agent/validate.h"
#include "agent.pb-c.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_ids(const char *cid, const char *eid)
{
	(void)agent_valid_id(cid ? cid : "");
	(void)agent_valid_exec_id(eid ? eid : "");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t kind = data[0] % 6;
	const uint8_t *p = data + 1;
	size_t n = size - 1;
	bl_error_t err = BL_ERROR_INIT;
	switch (kind) {
	case 0: {
		Boxlite__Agent__V1__CreateContainerRequest *r =
		    boxlite__agent__v1__create_container_request__unpack(NULL, n, p);
		if (!r)
			break;
		check_ids(r->container_id, NULL);
		if (r->rootfs) {
			(void)agent_valid_subpath(r->rootfs->share_subdir ? r->rootfs->share_subdir
									  : "");
			(void)agent_valid_devname(r->rootfs->upper_device ? r->rootfs->upper_device
									  : "");
		}
		agent_spec *s = NULL;
		if (agent_spec_parse((const char *)r->spec_json.data, r->spec_json.len, &s, &err) ==
		    0)
			agent_spec_free(s);
		boxlite__agent__v1__create_container_request__free_unpacked(r, NULL);
		break;
	}
	case 1: {
		Boxlite__Agent__V1__StartProcessRequest *r =
		    boxlite__agent__v1__start_process_request__unpack(NULL, n, p);
		if (!r)
			break;
		check_ids(r->container_id, r->exec_id);
		agent_process_spec *ps = NULL;
		if (r->process_json.len &&
		    agent_process_spec_parse((const char *)r->process_json.data,
					     r->process_json.len, &ps, &err) == 0)
			agent_process_spec_free(ps);
		boxlite__agent__v1__start_process_request__free_unpacked(r, NULL);
		break;
	}
	case 2: {
		Boxlite__Agent__V1__InitRequest *r =
		    boxlite__agent__v1__init_request__unpack(NULL, n, p);
		if (r) {
			(void)agent_valid_hostname(r->hostname ? r->hostname : "");
			boxlite__agent__v1__init_request__free_unpacked(r, NULL);
		}
		break;
	}
	case 3: {
		Boxlite__Agent__V1__WriteStdinRequest *r =
		    boxlite__agent__v1__write_stdin_request__unpack(NULL, n, p);
		if (r) {
			check_ids(r->container_id, r->exec_id);
			boxlite__agent__v1__write_stdin_request__free_unpacked(r, NULL);
		}
		break;
	}
	case 4: {
		/* The spec JSON on its own (most of the agent's input surface). */
		agent_spec *s = NULL;
		if (agent_spec_parse((const char *)p, n, &s, &err) == 0)
			agent_spec_free(s);
		break;
	}
	default: {
		/* linux.seccomp on its own: parse and compile. */
		json_tokener *tok = json_tokener_new_ex(32);
		json_object *o = tok ? json_tokener_parse_ex(tok, (const char *)p, (int)n) : NULL;
		if (o) {
			agent_seccomp sc = {0};
			if (agent_seccomp_from_oci(o, &sc, &err) == 0)
				agent_seccomp_clear(&sc);
			json_object_put(o);
		}
		if (tok)
			json_tokener_free(tok);
		break;
	}
	}
	return 0;
}
