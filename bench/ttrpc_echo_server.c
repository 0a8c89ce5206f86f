/*
 * ttrpc_echo_server SOCK: the C counterpart of `go-ttrpc-peer serve` for
 * benchmarks and interop tests. bench.v1.Echo/Echo returns its StringValue
 * request unchanged; bench.v1.Echo/Fail answers NotFound "nothing here".
 * Runs until SIGTERM or SIGINT.
 */
#include "ttrpc.h"
#include "types.pb-c.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int echo(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	/* BytesValue: wire-identical to StringValue, and keeps NUL bytes. */
	Containerd__Types__BytesValue *req =
	    containerd__types__bytes_value__unpack(NULL, call->payload_len, call->payload);
	if (!req)
		return ttrpc_reply_error(reply, TTRPC_INVALID_ARGUMENT, "bad StringValue");
	int rc = ttrpc_reply_message(reply, &req->base);
	containerd__types__bytes_value__free_unpacked(req, NULL);
	return rc;
}

static int fail(void *user, const ttrpc_call *call, ttrpc_reply *reply)
{
	return ttrpc_reply_error(reply, TTRPC_NOT_FOUND, "nothing here");
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s SOCK\n", argv[0]);
		return 2;
	}
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	bl_error_t err = BL_ERROR_INIT;
	ttrpc_server *srv = ttrpc_server_new();
	ttrpc_server_register(srv, "bench.v1.Echo", "Echo", echo, NULL);
	ttrpc_server_register(srv, "bench.v1.Echo", "Fail", fail, NULL);
	if (ttrpc_server_listen_unix(srv, argv[1], &err) < 0 || ttrpc_server_start(srv, &err) < 0) {
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	int sig;
	sigwait(&set, &sig);
	ttrpc_server_free(srv);
	return 0;
}
