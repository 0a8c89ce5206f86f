/* `boxlite serve`'s request decoding: bodies (JSON), exec and create
 * requests, base64, the UTF-8 filter of guest output. The first byte picks
 * the decoder. */
#include "serve.h"

#include <stdlib.h>
#include <string.h>

srv_state *srv;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static srv_state st;
	if (!srv) {
		srv = &st;
		srv->cfg.max_output = 1 << 20;
	}
	if (size < 1)
		return 0;
	const char *s = (const char *)data + 1;
	size_t n = size - 1;
	char *z = malloc(n + 1);
	memcpy(z, s, n);
	z[n] = '\0';
	switch (data[0] % 3) {
	case 0: {
		json_object *j = srv_parse_body(z, n, NULL);
		if (j) {
			srv_exec_req e = {0};
			(void)srv_exec_req_parse(j, &e, NULL);
			srv_exec_req_clear(&e);
		}
		json_object_put(j);
		break;
	}
	case 1: {
		size_t len;
		free(srv_unbase64(z, &len));
		break;
	}
	default:
		json_object_put(srv_json_text(s, n));
		break;
	}
	free(z);
	return 0;
}
