/*
 * `boxlite mcp`: a Model Context Protocol server over stdio (mcp.c: framing,
 * JSON-RPC, the session and its sandbox; mcp_tools.c: the tools and their
 * schemas). Public API (boxlite.h) only, like the rest of runtime/cli/.
 */
#pragma once

#include "bl_cleanup.h"
#include "boxlite.h"
/* The in-tree front ends also use the internal error helpers (bl_set_error). */
#include "bl_error.h"

#include <json-c/json.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

BL_DEFINE_CLEANUP(json_object, json_object_put)

#define MCP_MAX_CALLS 8 /* tool calls in flight at once */

/* Limits and sandbox settings (flags, config file). */
typedef struct mcp_config {
	const char *image;
	unsigned memory_mib, cpus, disk_mib, pids_max;
	unsigned lifetime_sec;	  /* whole-sandbox deadline; 0: none */
	unsigned timeout_sec;	  /* a tool call's default timeout */
	unsigned max_timeout_sec; /* the most a call may ask for */
	bool network;
	size_t max_message;   /* bytes of one JSON-RPC line */
	size_t max_output;    /* bytes kept per stream of a run */
	size_t max_file;      /* bytes of write_file / read_file content */
	char **env;	      /* "K=V" for every process (owned) */
	char **allow, **deny; /* network policy rules (owned; imply network) */
} mcp_config;

typedef struct mcp_server mcp_server;

/* One tools/call in flight. */
typedef struct mcp_call {
	mcp_server *srv;
	struct json_object *id; /* the request's id (a reference) */
	char *id_key;		/* its JSON text, to find it on cancel */
	char *tool;
	struct json_object *args;
	pthread_t thread;
	bool done;
	/* Under srv->mu. */
	bool cancelled;
	bl_process *proc; /* a running command (cancel kills it) */
	bool python;	  /* running code in the session (cancel interrupts it) */
	bool finished;	  /* the thread is over (joinable) */
} mcp_call;

struct mcp_server {
	mcp_config cfg;
	int out_fd; /* the protocol's stdout */
	pthread_mutex_t out_mu;
	bool out_broken; /* the client went away */
	int wake_fd;	 /* written when the main loop must look at stop */
	char version[16];
	bool initialized;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	mcp_call *calls[MCP_MAX_CALLS];
	/* The session's sandbox, created by the first tool call. */
	bl_sandbox *sb;
	bl_sandbox *pending; /* during bl_sandbox_create, for cancel */
	bl_codebox *cb;
	bool creating, tearing_down, stopping;
	int users;	     /* calls using sb */
	int job_threads;     /* command I/O threads alive (they use sb) */
	unsigned generation; /* sandboxes created so far */
};

/* The tool list (tools/list result) for a negotiated protocol version. */
struct json_object *mcp_tools_list(const char *version);
/* Checks a tools/call's name and arguments: 0, or -1 with the JSON-RPC
 * -32602 message in msg. */
int mcp_tools_check(const char *name, struct json_object *args, const mcp_config *cfg, char *msg,
		    size_t len);
/* Runs a checked call (its own thread); returns the CallToolResult. */
struct json_object *mcp_tools_call(mcp_call *call);

/* The session's sandbox for a call (created on first use); NULL with err. */
bl_sandbox *mcp_sandbox_get(mcp_server *srv, bl_error_t *err);
void mcp_sandbox_put(mcp_server *srv);
/* The code session of the sandbox (created on first use); only between
 * get and put. */
bl_codebox *mcp_codebox_get(mcp_server *srv, bl_error_t *err);
/* Destroys the sandbox (waits for calls using it); the next call gets a new one. */
void mcp_sandbox_reset(mcp_server *srv);
