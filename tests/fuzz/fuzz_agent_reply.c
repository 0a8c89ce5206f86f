/*
 * libFuzzer target for the host's decoding of agent replies
 * (runtime/agent_client.c over common/ttrpc_client.c), end to end: a fake
 * agent on a socketpair writes the preamble, reads one request and answers
 * it with a Response frame whose status code and payload come from the
 * input; the first byte picks which call the host makes. Every reply must
 * end in a value or a clean error.
 */
#include "agent_client.h"
#include "bl_util.h"
#include "ttrpc.pb-c.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fake {
	int fd;
	const uint8_t *payload;
	size_t len;
	int code;
	bool raw; /* the frame body is the input itself, not a Response */
};

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	static const char preamble[] = "BOXLITE-AGENT 1\n";
	if (bl_write_full(f->fd, preamble, sizeof(preamble) - 1) < 0)
		return NULL;
	uint8_t hdr[10];
	if (bl_read_full(f->fd, hdr, sizeof(hdr)) != (ssize_t)sizeof(hdr))
		return NULL;
	uint32_t len =
	    (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
	uint32_t stream =
	    (uint32_t)hdr[4] << 24 | (uint32_t)hdr[5] << 16 | (uint32_t)hdr[6] << 8 | hdr[7];
	if (len > (1u << 20))
		return NULL;
	uint8_t *req = malloc(len + 1);
	if (!req || bl_read_full(f->fd, req, len) != (ssize_t)len) {
		free(req);
		return NULL;
	}
	free(req);
	uint8_t *body = NULL;
	size_t n = 0;
	if (f->raw) {
		body = malloc(f->len + 1);
		memcpy(body, f->payload, f->len);
		n = f->len;
	} else {
		Ttrpc__Status st = TTRPC__STATUS__INIT;
		st.code = f->code;
		st.message = f->code ? "fuzzed failure" : "";
		Ttrpc__Response resp = TTRPC__RESPONSE__INIT;
		resp.status = &st;
		resp.payload.data = (uint8_t *)f->payload;
		resp.payload.len = f->len;
		n = ttrpc__response__get_packed_size(&resp);
		body = malloc(n + 1);
		ttrpc__response__pack(&resp, body);
	}
	uint8_t out[10];
	put_be32(out, (uint32_t)n);
	put_be32(out + 4, stream);
	out[8] = 2; /* response */
	out[9] = 0;
	if (bl_write_full(f->fd, out, sizeof(out)) == 0)
		(void)bl_write_full(f->fd, body, n);
	free(body);
	shutdown(f->fd, SHUT_WR);
	return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool init;
	if (!init) {
		signal(SIGPIPE, SIG_IGN);
		init = true;
	}
	if (size < 2)
		return 0;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return 0;
	struct fake f = {.fd = sv[1],
			 .payload = data + 2,
			 .len = size - 2,
			 .code = data[1] & 0x0f ? (data[1] & 0x0f) : 0,
			 .raw = data[1] & 0x80};
	pthread_t t;
	if (pthread_create(&t, NULL, fake_main, &f) != 0) {
		close(sv[0]);
		close(sv[1]);
		return 0;
	}
	bl_agent *a = NULL;
	bl_error_t err = BL_ERROR_INIT;
	uint64_t deadline = bl_now_monotonic_ns() + 2000000000ull;
	if (bl_agent_from_fd(sv[0], true, deadline, &a, &err) == 0) {
		bl_agent_set_timeout(a, 1000000000ull);
		char version[64];
		uint8_t buf[256];
		bl_agent_exit ex;
		bl_agent_stats stats;
		uint32_t *pids = NULL;
		size_t npids = 0, wrote = 0;
		uint32_t pid = 0;
		bl_agent_rootfs rootfs = {.share_tag = "rootfs", .share_subdir = "c0"};
		switch (data[0] % 8) {
		case 0:
			(void)bl_agent_ping(a, version, sizeof(version), &err);
			break;
		case 1:
			(void)bl_agent_start_process(a, "c", "e", "{}", false, false, &pid, &err);
			break;
		case 2:
			(void)bl_agent_wait_process(a, "c", "e", 1000000000ull, &ex, &err);
			break;
		case 3:
			(void)bl_agent_read_output(a, "c", "e", 1, buf, sizeof(buf), &err);
			break;
		case 4:
			(void)bl_agent_stats_get(a, "c", &stats, &err);
			break;
		case 5:
			if (bl_agent_list_pids(a, "c", &pids, &npids, &err) == 0)
				free(pids);
			break;
		case 6:
			(void)bl_agent_write_stdin(a, "c", "e", "x", 1, &wrote, &err);
			break;
		default:
			(void)bl_agent_create_container(a, "c", "{}", &rootfs, &err);
			break;
		}
		bl_agent_free(a);
	} /* else: bl_agent_from_fd closed sv[0] */
	shutdown(sv[1], SHUT_RDWR);
	pthread_join(t, NULL);
	close(sv[1]);
	return 0;
}
