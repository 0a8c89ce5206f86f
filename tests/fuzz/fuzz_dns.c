/*
 * libFuzzer target for the sandbox DNS responder (runtime/net.c): the bytes
 * are one query from the guest; a reply, when there is one, fits the buffer
 * and echoes the query's id.
 */
#include "net.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	bl_net_name names[2] = {{.name = "allowed.test", .n_addrs = 2},
				{.name = "host.boxlite.internal", .n_addrs = 1}};
	inet_pton(AF_INET, "192.0.2.1", &names[0].addrs[0]);
	inet_pton(AF_INET, "127.0.0.1", &names[0].addrs[1]);
	inet_pton(AF_INET, "127.0.0.1", &names[1].addrs[0]);
	uint8_t out[512 + 16 * BL_NET_MAX_ADDRS];
	size_t n = bl_net_dns_answer(names, 2, false, data, size, out, sizeof(out));
	if (n > sizeof(out) || (n && memcmp(out, data, 2)))
		abort();
	return 0;
}
