/*
 * ttrpc server under load: the interleavings behind the fuzzer's stalls.
 * Tiny deadlines racing handlers that finish, handlers that overrun the
 * hand-off threshold, connections closed mid-flight, fresh connections one
 * after another (the fuzzer's pattern), shutdown under load. Every request
 * must get an answer or see its connection close; each test is time-bounded.
 */
#include "ttrpc_testutil.h"

#include <stdatomic.h>

#define PHASE_MS 3000 /* per test; all of them together stay well under 20 s */
#define STALL_MS 3000 /* no answer and no close for this long is a stall */

static atomic_int stop_all;

static int h_echo(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	uint8_t *p = malloc(call->payload_len + 1);
	memcpy(p, call->payload, call->payload_len);
	return ttrpc_reply_raw(reply, p, call->payload_len);
}

/* Busy for the microseconds in the first payload byte times 20 (0..5 ms), so
 * some handlers lose their connection's reader role and some do not. */
static int h_spin(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	unsigned us = call->payload_len ? call->payload[0] * 20u : 0;
	uint64_t end = bl_now_monotonic_ns() + us * 1000ull;
	while (bl_now_monotonic_ns() < end)
		;
	return h_echo(user, call, reply);
}

/* Sleeps (a blocked Wait) for the milliseconds in the first payload byte. */
static int h_nap(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	tt_sleep_ms(call->payload_len ? call->payload[0] : 1);
	return h_echo(user, call, reply);
}

static ttrpc_server *stress_server(void)
{
	ttrpc_server *srv = ttrpc_server_new();
	CU_ASSERT_FATAL(srv != NULL);
	ttrpc_server_register(srv, "s", "Echo", h_echo, NULL);
	ttrpc_server_register(srv, "s", "Spin", h_spin, NULL);
	ttrpc_server_register(srv, "s", "Nap", h_nap, NULL);
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_FATAL(ttrpc_server_start(srv, &err) == 0);
	return srv;
}

/* Writes everything or gives up quietly (the server may be shutting down). */
static bool write_all(int fd, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

/* One random request: method, payload byte and timeout (1 ns in a third). */
static bool send_random(int fd, uint32_t id, unsigned *seed)
{
	static const char *const methods[] = {"Echo", "Spin", "Nap", "Nope"};
	unsigned r = (unsigned)rand_r(seed);
	Ttrpc__Request req = TTRPC__REQUEST__INIT;
	req.service = (char *)"s";
	req.method = (char *)methods[r % 4];
	uint8_t b = (uint8_t)((r >> 8) % (req.method[0] == 'N' ? 4 : 250));
	req.payload.data = &b;
	req.payload.len = 1;
	switch ((r >> 16) % 3) {
	case 0:
		req.timeout_nano = 1;
		break;
	case 1:
		req.timeout_nano = (int64_t)((r >> 20) % 3000) * 1000;
		break;
	}
	uint8_t buf[256];
	size_t n = ttrpc__request__get_packed_size(&req);
	ttrpc_frame_header fh = {(uint32_t)n, id, TTRPC_TYPE_REQUEST, 0};
	ttrpc_header_encode(&fh, buf);
	ttrpc__request__pack(&req, buf + TTRPC_HEADER_LEN);
	return write_all(fd, buf, TTRPC_HEADER_LEN + n);
}

/* A socketpair with one end served by srv, or -1 once the server is shut down. */
static int try_connect(ttrpc_server *srv)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -1;
	if (ttrpc_server_add_conn(srv, sv[0], NULL) < 0) {
		close(sv[1]);
		return -1;
	}
	return sv[1];
}

typedef struct peer_stats {
	unsigned requests, answers, closes_mid, stalls, bad;
} peer_stats;

/* Reads answers until all n ids (1, 3, ...) are answered once or the server
 * closes; a stall or a duplicate/unknown id counts as a failure. */
static void collect(int fd, unsigned n, bool expect_close, peer_stats *st)
{
	uint8_t *seen = calloc(n, 1);
	unsigned got = 0;
	while (got < n) {
		tt_resp r;
		int rc = tt_read_response(fd, &r, STALL_MS);
		if (rc < 0) {
			st->stalls++;
			break;
		}
		if (rc == 0)
			break; /* closed: every request is accounted for */
		unsigned idx = (r.id - 1) / 2;
		if (!(r.id & 1) || idx >= n || seen[idx])
			st->bad++;
		else
			seen[idx] = 1;
		free(r.payload);
		got++;
		st->answers++;
	}
	if (expect_close && !tt_wait_closed(fd, STALL_MS))
		st->stalls++;
	free(seen);
}

static void *raw_peer(void *arg)
{
	ttrpc_server *srv = arg;
	peer_stats *st = calloc(1, sizeof(*st));
	unsigned seed = (unsigned)(uintptr_t)st ^ (unsigned)bl_now_monotonic_ns();
	uint64_t end = bl_now_monotonic_ns() + PHASE_MS * 1000000ull;
	while (bl_now_monotonic_ns() < end && !atomic_load(&stop_all)) {
		int fd = try_connect(srv);
		if (fd < 0)
			break;
		unsigned n = 1 + (unsigned)rand_r(&seed) % 40, sent = 0;
		while (sent < n && send_random(fd, 2 * sent + 1, &seed))
			sent++;
		n = sent;
		st->requests += n;
		switch (rand_r(&seed) % 3) {
		case 0: /* close mid-flight: the server must cope, nothing to check */
			st->closes_mid++;
			break;
		case 1: /* half-close: every answer, then the server closes */
			(void)shutdown(fd, SHUT_WR);
			collect(fd, n, true, st);
			break;
		default: /* answers while the connection stays open */
			collect(fd, n, false, st);
			break;
		}
		close(fd);
	}
	return st;
}

static void run_raw_peers(ttrpc_server *srv, int npeers, peer_stats *sum)
{
	pthread_t t[8];
	for (int i = 0; i < npeers; i++)
		CU_ASSERT_FATAL(pthread_create(&t[i], NULL, raw_peer, srv) == 0);
	for (int i = 0; i < npeers; i++) {
		void *r;
		pthread_join(t[i], &r);
		peer_stats *st = r;
		sum->requests += st->requests;
		sum->answers += st->answers;
		sum->closes_mid += st->closes_mid;
		sum->stalls += st->stalls;
		sum->bad += st->bad;
		free(st);
	}
}

/* Mixed load on several connections at once. */
static void test_mixed_load_every_request_answered(void)
{
	ttrpc_server *srv = stress_server();
	peer_stats sum = {0};
	run_raw_peers(srv, 6, &sum);
	fprintf(stderr, "\n    %u requests, %u answers, %u closed mid-flight, %u stalls ",
		sum.requests, sum.answers, sum.closes_mid, sum.stalls);
	CU_ASSERT_EQUAL(sum.stalls, 0);
	CU_ASSERT_EQUAL(sum.bad, 0);
	ttrpc_server_free(srv);
}

/* The fuzzer's pattern: one short-lived connection after another, each
 * half-closed at once; the server must close each promptly. */
static void test_fresh_connections_close_promptly(void)
{
	ttrpc_server *srv = stress_server();
	unsigned seed = 7, conns = 0, stalls = 0;
	uint64_t end = bl_now_monotonic_ns() + PHASE_MS * 1000000ull;
	while (bl_now_monotonic_ns() < end) {
		int fd = tt_connect(srv);
		unsigned n = (unsigned)rand_r(&seed) % 4;
		for (unsigned i = 0; i < n; i++)
			CU_ASSERT(send_random(fd, 2 * i + 1, &seed));
		(void)shutdown(fd, SHUT_WR);
		if (!tt_wait_closed(fd, STALL_MS))
			stalls++;
		close(fd);
		conns++;
		/* Let idle workers go back to waiting, as between fuzz inputs. */
		if (conns % 64 == 0)
			tt_sleep_ms(1 + (unsigned)rand_r(&seed) % 3);
	}
	fprintf(stderr, "\n    %u connections, %u stalls ", conns, stalls);
	CU_ASSERT_EQUAL(stalls, 0);
	ttrpc_server_free(srv);
}

typedef struct client_arg {
	ttrpc_client *c;
	atomic_uint *done, *failed;
} client_arg;

static void *client_caller(void *arg)
{
	client_arg *a = arg;
	unsigned seed = (unsigned)(uintptr_t)a;
	while (!ttrpc_client_is_closed(a->c)) {
		uint8_t b = (uint8_t)(rand_r(&seed) % 3);
		const char *m = rand_r(&seed) % 2 ? "Nap" : "Spin";
		ttrpc_status st;
		uint8_t *out = NULL;
		size_t n = 0;
		bl_error_t err = BL_ERROR_INIT;
		uint64_t to = rand_r(&seed) % 2 ? 1 : 2000000000ull;
		int rc =
		    ttrpc_client_call_raw(a->c, "s", m, &b, 1, NULL, 0, to, &st, &out, &n, &err);
		free(out);
		atomic_fetch_add(rc == 0 || err.code == BL_ETIMEOUT ? a->done : a->failed, 1);
		if (rc < 0 && err.code == BL_EAGENTLOST)
			break;
	}
	return NULL;
}

/* Shutdown while clients keep calling: it returns, and every call ends. */
static void test_shutdown_under_load(void)
{
	for (int round = 0; round < 4; round++) {
		ttrpc_server *srv = stress_server();
		enum { NCONN = 3, PER = 4 };
		ttrpc_client *cs[NCONN];
		pthread_t t[NCONN * PER];
		client_arg args[NCONN * PER];
		atomic_uint done = 0, failed = 0;
		for (int i = 0; i < NCONN; i++) {
			int sv[2];
			CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) ==
					0);
			CU_ASSERT_FATAL(ttrpc_server_add_conn(srv, sv[0], NULL) == 0);
			cs[i] = ttrpc_client_new(sv[1], NULL);
			CU_ASSERT_FATAL(cs[i] != NULL);
		}
		for (int i = 0; i < NCONN * PER; i++) {
			args[i] = (client_arg){cs[i / PER], &done, &failed};
			CU_ASSERT_FATAL(pthread_create(&t[i], NULL, client_caller, &args[i]) == 0);
		}
		tt_sleep_ms(150 + 50 * (unsigned)round);
		uint64_t t0 = bl_now_monotonic_ns();
		ttrpc_server_shutdown(srv);
		uint64_t took_ms = (bl_now_monotonic_ns() - t0) / 1000000ull;
		CU_ASSERT(took_ms < STALL_MS);
		/* Callers end on their own (the server closed) within the bound. */
		for (int i = 0; i < NCONN * PER; i++)
			pthread_join(t[i], NULL);
		CU_ASSERT(atomic_load(&done) > 0);
		for (int i = 0; i < NCONN; i++)
			ttrpc_client_free(cs[i]);
		ttrpc_server_free(srv);
	}
}

/* Raw peers racing a shutdown: connections still opening, half-closed, closed. */
static void test_shutdown_during_raw_load(void)
{
	for (int round = 0; round < 3; round++) {
		ttrpc_server *srv = stress_server();
		/* Peers see a closed or refused connection after the shutdown; they
		 * stop when add_conn starts failing. */
		atomic_store(&stop_all, 0);
		pthread_t t[4];
		for (int i = 0; i < 4; i++)
			CU_ASSERT_FATAL(pthread_create(&t[i], NULL, raw_peer, srv) == 0);
		tt_sleep_ms(100 + 100 * (unsigned)round);
		uint64_t t0 = bl_now_monotonic_ns();
		atomic_store(&stop_all, 1);
		ttrpc_server_shutdown(srv);
		CU_ASSERT((bl_now_monotonic_ns() - t0) / 1000000ull < STALL_MS);
		for (int i = 0; i < 4; i++) {
			void *r;
			pthread_join(t[i], &r);
			peer_stats *st = r;
			CU_ASSERT_EQUAL(st->stalls, 0);
			CU_ASSERT_EQUAL(st->bad, 0);
			free(st);
		}
		ttrpc_server_free(srv);
	}
	atomic_store(&stop_all, 0);
}

int main(void)
{
	static const bl_test_case cases[] = {
	    {"mixed_load_every_request_answered", test_mixed_load_every_request_answered},
	    {"fresh_connections_close_promptly", test_fresh_connections_close_promptly},
	    {"shutdown_under_load", test_shutdown_under_load},
	    {"shutdown_during_raw_load", test_shutdown_during_raw_load},
	    {NULL, NULL},
	};
	return bl_test_run("ttrpc_stress", cases);
}
