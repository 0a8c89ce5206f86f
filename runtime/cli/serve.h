/*
 * `boxlite serve`: an HTTP/JSON API over libboxlite (libmicrohttpd, json-c).
 * Tenants are bearer tokens from a config file, each with quotas; sandboxes
 * belong to the server process and to one tenant. The API is documented in
 * runtime/cli/openapi.yaml.
 */
#pragma once

#include <json-c/json.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "boxlite.h"
/* The in-tree front ends also use the internal error helpers (bl_set_error). */
#include "bl_error.h"
#include "bl_cleanup.h"

BL_DEFINE_CLEANUP(json_object, json_object_put)

#define SRV_NAME_MAX 64

typedef struct srv_tenant {
	char name[SRV_NAME_MAX + 1];
	char *token;
	unsigned max_sandboxes; /* 0: no quota */
	unsigned max_memory_mib;
	unsigned max_cpus;
	bool allow_pull;
} srv_tenant;

typedef struct srv_config {
	char *listen; /* "ADDR:PORT" */
	char *tls_cert, *tls_key;
	srv_tenant *tenants;
	size_t n_tenants;
	char *state_dir;	   /* the sandboxes' (NULL: the library's default) */
	char *serve_dir;	   /* ownership records (owners/<id>) */
	char *image_store;	   /* NULL: the library's default */
	size_t max_body;	   /* JSON request bodies */
	size_t max_file;	   /* file uploads and downloads */
	size_t max_output;	   /* per stream of a non-streaming exec */
	unsigned conn_timeout;	   /* idle seconds before a connection is closed */
	unsigned exec_timeout;	   /* default and ceiling of an exec's timeout */
	unsigned max_sandboxes;	   /* on the whole server */
	unsigned max_connections;  /* at once */
	unsigned default_memory;   /* MiB, when a create names none */
	unsigned sandbox_max_life; /* seconds; 0: none (ceiling of timeout_seconds) */
} srv_config;

/* A running exec (streaming or not), shared by the threads that pump its
 * output, the one that waits for it and the request that consumes it. */
typedef struct srv_exec srv_exec;
typedef struct srv_box srv_box;

struct srv_box {
	char id[BL_SANDBOX_ID_MAX + 1];
	const srv_tenant *tenant;
	bl_sandbox *sb;	     /* NULL while it boots */
	bl_sandbox *pending; /* the handle during bl_sandbox_create */
	bl_process *init;    /* the container's pause process */
	char image[256];
	char name[SRV_NAME_MAX + 1];
	unsigned memory_mib, vcpus, disk_mib;
	int64_t created;
	unsigned refs;	       /* requests and execs using sb */
	bool deleting;	       /* gone from the API; destroyed when refs is 0 */
	bool ready;	       /* booted and started */
	unsigned n_execs;      /* exec ids handed out */
	srv_exec *execs;       /* live execs (for stdin and signal) */
	struct srv_code *code; /* the stateful interpreter, if any */
	srv_box *next;
};

typedef struct srv_metrics {
	uint64_t starts, start_failures, execs, code_runs, requests;
	uint64_t by_class[6]; /* 1xx..5xx responses */
	double start_sum;
	uint64_t start_buckets[10];
} srv_metrics;

typedef struct srv_state {
	srv_config cfg;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* refs dropped, creates done */
	srv_box *boxes;
	unsigned creating; /* creates in flight */
	bool stopping;
	srv_metrics m;
} srv_state;

extern srv_state *srv;

#define SRV_BUCKETS                                  \
	{                                            \
		0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120 \
	}

/* ---- serve_config.c */
int srv_config_load(const char *path, srv_config *c, bl_error_t *err);
void srv_config_clear(srv_config *c);
const srv_tenant *srv_tenant_by_token(const srv_config *c, const char *token);

/* ---- serve_http.c: the daemon and request plumbing */
struct MHD_Daemon;
struct MHD_Connection;
struct MHD_Response;
struct MHD_Daemon *srv_http_start(bl_error_t *err);
/* Reads a request body as a JSON object; NULL (and err) when it is not. */
json_object *srv_parse_body(const char *body, size_t len, bl_error_t *err);

/* A response built by a handler: status + JSON (or raw) body. */
typedef struct srv_reply {
	int status;
	json_object *json; /* owned */
	struct MHD_Response *raw;
	const char *content_type;
} srv_reply;

void srv_reply_error(srv_reply *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The library's error as a reply (status from its code). */
void srv_reply_bl(srv_reply *r, const bl_error_t *err);
/* "BL_ENOTFOUND" and the like: the error codes of the API. */
const char *srv_code_id(bl_code c);
void srv_reply_json(srv_reply *r, int status, json_object *j);

/* The request as the handlers see it. */
typedef struct srv_request {
	struct MHD_Connection *conn;
	const char *method;
	const srv_tenant *tenant;
	const char *body;
	size_t body_len;
	const char *upload_path; /* PUT files: the body spooled to this file */
	size_t upload_len;
	const char *segs[6]; /* path segments after /v1 */
	size_t n_segs;
} srv_request;

/* ---- serve_api.c: the handlers */
void srv_api_dispatch(srv_request *q, srv_reply *r);
/* True when the route takes its body as a file upload. */
bool srv_api_is_upload(const char *method, const char *const *segs, size_t n);
/* The server stops: creates are refused, every sandbox's VM is cancelled
 * (calls in flight return); then, once the requests are done, released. */
void srv_cancel_all(void);
void srv_release_all(void);
/* Removes the sandboxes a killed earlier server left behind. */
void srv_clean_orphans(void);
char *srv_metrics_text(void);

/* ---- serve_exec.c */
typedef struct srv_exec_req {
	char **argv, **env;
	char *cwd, *user;
	char *stdin_data;
	size_t stdin_len;
	bool stdin_open; /* more stdin through .../execs/ID/stdin */
	double timeout;	 /* seconds */
} srv_exec_req;

void srv_exec_req_clear(srv_exec_req *e);
/* Parses an exec request body (argv/cmd, env, cwd, user, stdin...). */
int srv_exec_req_parse(json_object *j, srv_exec_req *e, bl_error_t *err);
/* Starts the process; takes a reference on box (dropped when it ends). */
int srv_exec_start(srv_box *box, const srv_exec_req *e, srv_exec **ret, bl_error_t *err);
const char *srv_exec_id(const srv_exec *x);
/* Runs to the end, collects bounded output: the non-streaming form. */
json_object *srv_exec_collect(srv_exec *x, bl_error_t *err);
/* The streaming form: an SSE response that owns x. */
struct MHD_Response *srv_exec_stream(srv_exec *x);
void srv_exec_put(srv_exec *x);
/* Finds a live exec of box by id (a reference; srv_exec_put it). */
srv_exec *srv_exec_find(srv_box *box, const char *id);
int srv_exec_write(srv_exec *x, const void *buf, size_t len, bool close_stdin, bl_error_t *err);
int srv_exec_signal(srv_exec *x, int sig, bl_error_t *err);

/* ---- serve_code.c: stateful code runs */
struct srv_code;
json_object *srv_code_run(srv_box *box, const char *code, double timeout, bl_error_t *err);
int srv_code_reset(srv_box *box, bl_error_t *err);
void srv_code_free(struct srv_code *c);

/* Sandbox references (serve_api.c). */
void srv_box_put(srv_box *b);

/* Valid UTF-8 text of bytes (invalid sequences replaced by U+FFFD). */
json_object *srv_json_text(const char *buf, size_t len);
char *srv_base64(const void *buf, size_t len);
void *srv_unbase64(const char *s, size_t *ret_len);
