/*
 * Task events to containerd: containerd.services.events.ttrpc.v1.Events/
 * Forward on $TTRPC_ADDRESS, one thread, in order, each event retried a few
 * times (containerd may be restarting) before it is dropped with a log line.
 */
#include "shim.h"
#include "bl_cleanup.h"
#include "bl_log.h"
#include "bl_util.h"
#include "events.pb-c.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EVENTS_SERVICE	  "containerd.services.events.ttrpc.v1.Events"
#define EVENT_TRIES	  5
#define EVENT_TIMEOUT_NS  5000000000ull
#define EVENT_QUEUE_MAX	  4096
#define FLUSH_TIMEOUT_SEC 10

typedef struct event {
	char *topic;
	char *type_url;
	uint8_t *data;
	size_t len;
	uint64_t when_ns;
	struct event *next;
} event;

struct shim_publisher {
	char *address, *ns;
	pthread_mutex_t lock;
	pthread_cond_t cond, idle;
	event *head, *tail;
	size_t n;
	bool stop, busy;
	pthread_t thr;
	ttrpc_client *client;
};

static void event_free(event *e)
{
	free(e->topic);
	free(e->type_url);
	free(e->data);
	free(e);
}

static int forward(shim_publisher *p, const event *e, bl_error_t *err)
{
	if (p->client && ttrpc_client_is_closed(p->client)) {
		ttrpc_client_free(p->client);
		p->client = NULL;
	}
	if (!p->client) {
		p->client = ttrpc_client_dial_unix(p->address, err);
		if (!p->client)
			return -BL_EAGENTLOST;
	}
	Containerd__Types__Timestamp at = CONTAINERD__TYPES__TIMESTAMP__INIT;
	at.seconds = (int64_t)(e->when_ns / 1000000000ull);
	at.nanos = (int32_t)(e->when_ns % 1000000000ull);
	Containerd__Types__Any any = CONTAINERD__TYPES__ANY__INIT;
	any.type_url = e->type_url;
	any.value.data = e->data;
	any.value.len = e->len;
	Containerd__Events__Envelope env = CONTAINERD__EVENTS__ENVELOPE__INIT;
	env.timestamp = &at;
	env.namespace_ = p->ns;
	env.topic = e->topic;
	env.event = &any;
	Containerd__Events__ForwardRequest req = CONTAINERD__EVENTS__FORWARD_REQUEST__INIT;
	req.envelope = &env;
	ProtobufCMessage *resp = NULL;
	int r = ttrpc_client_call(p->client, EVENTS_SERVICE, "Forward", &req.base,
				  &containerd__types__empty__descriptor, &resp, EVENT_TIMEOUT_NS,
				  NULL, 0, NULL, err);
	if (resp)
		protobuf_c_message_free_unpacked(resp, NULL);
	if (r < 0 && p->client && ttrpc_client_is_closed(p->client)) {
		ttrpc_client_free(p->client);
		p->client = NULL;
	}
	return r;
}

static void *publisher_main(void *arg)
{
	shim_publisher *p = arg;
	pthread_mutex_lock(&p->lock);
	for (;;) {
		while (!p->head && !p->stop)
			pthread_cond_wait(&p->cond, &p->lock);
		if (!p->head)
			break;
		event *e = p->head;
		p->head = e->next;
		if (!p->head)
			p->tail = NULL;
		p->n--;
		p->busy = true;
		pthread_mutex_unlock(&p->lock);
		bl_error_t err = BL_ERROR_INIT;
		int r = -1;
		for (int i = 0; i < EVENT_TRIES && r < 0; i++) {
			if (i > 0) {
				bl_error_clear(&err);
				usleep(200000u << (i > 3 ? 3 : i));
			}
			r = p->address ? forward(p, e, &err)
				       : bl_set_error(&err, BL_EINVAL, "no TTRPC_ADDRESS");
		}
		if (r < 0)
			bl_warn("event %s dropped: %s", e->topic, err.msg);
		else
			bl_debug("event %s published", e->topic);
		event_free(e);
		pthread_mutex_lock(&p->lock);
		p->busy = false;
		pthread_cond_broadcast(&p->idle);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

shim_publisher *shim_publisher_new(const char *ttrpc_address, const char *ns)
{
	shim_publisher *p = bl_malloc0(sizeof(*p));
	if (ttrpc_address && *ttrpc_address)
		p->address = bl_strdup(ttrpc_address);
	p->ns = bl_strdup(ns ? ns : "default");
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	pthread_cond_init(&p->idle, NULL);
	if (pthread_create(&p->thr, NULL, publisher_main, p) != 0)
		abort();
	return p;
}

void shim_publish(shim_publisher *p, const char *topic, const ProtobufCMessage *msg)
{
	event *e = bl_malloc0(sizeof(*e));
	e->topic = bl_strdup(topic);
	e->type_url = bl_strdup(msg->descriptor->name);
	e->len = protobuf_c_message_get_packed_size(msg);
	e->data = bl_malloc0(e->len + 1);
	protobuf_c_message_pack(msg, e->data);
	e->when_ns = shim_now_ns();
	pthread_mutex_lock(&p->lock);
	if (p->n >= EVENT_QUEUE_MAX) {
		pthread_mutex_unlock(&p->lock);
		bl_warn("event queue full; %s dropped", topic);
		event_free(e);
		return;
	}
	if (p->tail)
		p->tail->next = e;
	else
		p->head = e;
	p->tail = e;
	p->n++;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

void shim_publisher_free(shim_publisher *p)
{
	if (!p)
		return;
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += FLUSH_TIMEOUT_SEC;
	pthread_mutex_lock(&p->lock);
	while ((p->head || p->busy) && pthread_cond_timedwait(&p->idle, &p->lock, &until) == 0)
		;
	p->stop = true;
	bool drained = !p->head && !p->busy;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	if (!drained) {
		/* containerd is gone: leave the thread, the process exits. */
		bl_warn("events not delivered before exit");
		return;
	}
	pthread_join(p->thr, NULL);
	if (p->client)
		ttrpc_client_free(p->client);
	free(p->address);
	free(p->ns);
	free(p);
}
