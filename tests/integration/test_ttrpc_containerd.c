/*
 * The C client publishes a task event to a real containerd (started here with
 * its own root, state and socket) over its ttrpc socket, the way a shim does
 * (containerd.services.events.ttrpc.v1.Events/Forward), and `ctr events`
 * must print it.
 */
#include "events.pb-c.h"
#include "ttrpc.h"
#include "ttrpc_proc.h"

static int publish_exit(const char *ttrpc_sock, const char *cid, bl_error_t *err)
{
	ttrpc_client *c = ttrpc_client_dial_unix(ttrpc_sock, err);
	if (!c)
		return -1;
	Containerd__Events__TaskExit ev = CONTAINERD__EVENTS__TASK_EXIT__INIT;
	Containerd__Types__Timestamp at = CONTAINERD__TYPES__TIMESTAMP__INIT;
	uint64_t now = bl_now_realtime_ns();
	at.seconds = (int64_t)(now / 1000000000ull);
	at.nanos = (int32_t)(now % 1000000000ull);
	ev.container_id = (char *)cid;
	ev.id = (char *)cid;
	ev.pid = 4242;
	ev.exit_status = 7;
	ev.exited_at = &at;
	uint8_t buf[512];
	size_t n = containerd__events__task_exit__pack(&ev, buf);
	Containerd__Types__Any any = CONTAINERD__TYPES__ANY__INIT;
	any.type_url = (char *)containerd__events__task_exit__descriptor.name;
	any.value.data = buf;
	any.value.len = n;
	Containerd__Events__Envelope env = CONTAINERD__EVENTS__ENVELOPE__INIT;
	env.timestamp = &at;
	env.namespace_ = "default";
	env.topic = "/tasks/exit";
	env.event = &any;
	Containerd__Events__ForwardRequest req = CONTAINERD__EVENTS__FORWARD_REQUEST__INIT;
	req.envelope = &env;
	ProtobufCMessage *resp = NULL;
	int rc = ttrpc_client_call(c, "containerd.services.events.ttrpc.v1.Events", "Forward",
				   &req.base, &containerd__types__empty__descriptor, &resp,
				   5000000000ull, NULL, 0, NULL, err);
	if (resp)
		protobuf_c_message_free_unpacked(resp, NULL);
	ttrpc_client_free(c);
	return rc;
}

static void test_forward_event_to_containerd(void)
{
	BL_SKIP_UNLESS(bl_test_is_root(), "needs root to run containerd");
	BL_SKIP_UNLESS(tp_have("containerd") && tp_have("ctr"),
		       "containerd/ctr not installed (apt-get install containerd)");
	CU_ASSERT_STRING_EQUAL(containerd__events__task_exit__descriptor.name,
			       "containerd.events.TaskExit");
	char *dir = bl_test_tmpdir("ttrpc-ctrd");
	char *sock = bl_asprintf("%s/c.sock", dir);
	char *tsock = bl_asprintf("%s.ttrpc", sock);
	char *cfg = bl_asprintf("%s/config.toml", dir);
	char *text = bl_asprintf(
	    "version = 2\n"
	    "root = \"%s/root\"\nstate = \"%s/state\"\n"
	    "disabled_plugins = [\"io.containerd.grpc.v1.cri\", "
	    "\"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.zfs\", "
	    "\"io.containerd.snapshotter.v1.aufs\", \"io.containerd.snapshotter.v1.devmapper\"]\n"
	    "[grpc]\n  address = \"%s\"\n"
	    "[ttrpc]\n  address = \"%s\"\n"
	    "[debug]\n  address = \"\"\n"
	    "[metrics]\n  address = \"\"\n"
	    "[plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"%s/opt\"\n",
	    dir, dir, sock, tsock, dir);
	CU_ASSERT_FATAL(bl_write_file(cfg, text, strlen(text), 0644, NULL) == 0);
	char *log = bl_asprintf("%s/containerd.log", dir);
	char *ctrd_argv[] = {"containerd", "--config", cfg, NULL};
	pid_t ctrd = tp_spawn(ctrd_argv, log);
	pid_t ctr = -1;
	bool seen = false;
	if (!tp_wait_path(tsock, 30000)) {
		CU_FAIL("containerd did not create its ttrpc socket");
		goto out;
	}
	char *events = bl_asprintf("%s/events.out", dir);
	char *ctr_argv[] = {"ctr", "--address", sock, "events", NULL};
	ctr = tp_spawn(ctr_argv, events);
	usleep(500000);
	const char *cid = "boxlite-ttrpc-interop";
	for (int i = 0; i < 20 && !seen; i++) {
		bl_error_t err = BL_ERROR_INIT;
		int rc = publish_exit(tsock, cid, &err);
		if (rc < 0 && i == 19)
			CU_FAIL(err.msg);
		usleep(300000);
		char *out = NULL;
		size_t n;
		if (bl_read_file(events, 1 << 20, &out, &n, NULL) == 0) {
			seen =
			    strstr(out, "/tasks/exit") && strstr(out, cid) && strstr(out, "4242");
			if (seen)
				printf("\n  ctr events: %s", out);
		}
		free(out);
	}
	CU_ASSERT(seen);
	free(events);
out:
	tp_stop(ctr);
	tp_stop(ctrd);
	bl_rm_rf(dir, NULL);
	free(log);
	free(text);
	free(cfg);
	free(tsock);
	free(sock);
	free(dir);
}

int main(void)
{
	static const bl_test_case cases[] = {
	    {"forward_event_to_containerd", test_forward_event_to_containerd},
	    {NULL, NULL},
	};
	return bl_test_run("ttrpc_containerd", cases);
}
