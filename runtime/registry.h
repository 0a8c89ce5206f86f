/*
 * The OCI distribution (registry v2) client of libboxlite, inside the
 * library (not installed):
 *   registry_auth.c  parsers of what a registry sends besides blobs
 *                    (WWW-Authenticate challenges, token and error bodies),
 *                    credentials (boxlite login file, ~/.docker/config.json)
 *                    and the registries config file (mirrors, insecure, CA)
 *   registry.c       HTTP over libcurl: auth flow, retries, verified blobs
 *   image_pull.c     a pull: reference -> manifest -> blobs -> store image
 */
#pragma once

#include "bl_error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- registry_auth.c: untrusted text from a registry ---- */

typedef enum bl_auth_scheme {
	BL_AUTH_NONE = 0,
	BL_AUTH_BASIC,
	BL_AUTH_BEARER,
} bl_auth_scheme;

typedef struct bl_auth_challenge {
	bl_auth_scheme scheme;
	char realm[1024];
	char service[256];
	char scope[512];
} bl_auth_challenge;

/* A WWW-Authenticate header value (RFC 7235 challenge: scheme, then
 * comma-separated key=value or key="quoted\"value" params). Unknown schemes
 * and params are ignored; malformed text is BL_EPROTO. */
int bl_registry_parse_challenge(const char *hdr, size_t len, bl_auth_challenge *ret,
				bl_error_t *err);
/* A token server's JSON answer: "token" or "access_token" (printable ASCII,
 * bounded); *ret_expires_in 0 when absent. */
int bl_registry_parse_token(const char *json, size_t len, char **ret_token, int *ret_expires_in,
			    bl_error_t *err);
/* A registry's error body {"errors":[{"code":..,"message":..}]}: the first
 * error's code and message, control characters replaced. 0 when parsed. */
int bl_registry_parse_errors(const char *json, size_t len, char *code, size_t code_len, char *msg,
			     size_t msg_len);
/* Replaces control bytes and non-ASCII by '?' so registry text is safe to print. */
void bl_registry_sanitize(char *s);

/* ---- credentials ---- */

/* user:pass for host: the boxlite auth file first ($BOXLITE_AUTH_FILE, else
 * $XDG_CONFIG_HOME/boxlite/auth.json, else ~/.config/boxlite/auth.json),
 * then docker's ($DOCKER_CONFIG/config.json, else ~/.docker/config.json).
 * 0 with *ret_user NULL when none is stored. */
int bl_registry_creds(const char *host, char **ret_user, char **ret_pass, bl_error_t *err);
/* Stores (or with user NULL, removes) host's credentials in the boxlite auth
 * file (mode 0600, replaced atomically). */
int bl_registry_creds_store(const char *host, const char *user, const char *pass, bl_error_t *err);
/* Standard base64 of n bytes (malloc'd), and back (NULL when malformed). */
char *bl_base64_encode(const void *in, size_t n);
char *bl_base64_decode(const char *in, size_t *ret_len);

/* ---- the registries config file ---- */

#define BL_REGISTRY_MIRRORS_MAX 8

typedef struct bl_registry_conf {
	bool insecure; /* plain HTTP allowed (else only for loopback) */
	char *ca_file; /* extra CA bundle for this registry's TLS */
	char *mirrors[BL_REGISTRY_MIRRORS_MAX + 1]; /* hosts tried first, in order */
	uint64_t store_max_bytes;		    /* global: 0 = no limit */
} bl_registry_conf;

/* $BOXLITE_REGISTRIES_CONF, else /etc/boxlite/registries.json (absent: all
 * defaults):
 *   {"registries": {"HOST[:PORT]": {"insecure": true, "ca": "/path.pem",
 *                                   "mirrors": ["HOST[:PORT]", ...]}},
 *    "store": {"max_bytes": N}}                                           */
int bl_registry_conf_load(const char *host, bl_registry_conf *ret, bl_error_t *err);
/* The same from a given text (tests, fuzzing). */
int bl_registry_conf_parse(const char *json, size_t len, const char *host, bl_registry_conf *ret,
			   bl_error_t *err);
void bl_registry_conf_clear(bl_registry_conf *c);
/* True for 127.0.0.0/8, ::1 and localhost (with or without a port). */
bool bl_registry_host_is_loopback(const char *host);

/* ---- registry.c: a client for one repository of one registry ---- */

typedef struct bl_registry bl_registry;

/* Blob download progress (bytes of this blob so far, including a resumed part). */
typedef void (*bl_registry_progress_fn)(uint64_t done, void *opaque);

/* A client for repo (e.g. "library/busybox") at host (a registry's or a
 * mirror's API host[:port]); settings and credentials are those of
 * conf_host (the reference's registry). */
int bl_registry_open(const char *host, const char *conf_host, const char *repo, bl_registry **ret,
		     bl_error_t *err);
void bl_registry_close(bl_registry *r);
/* Overrides the credentials (boxlite login checks them this way). */
void bl_registry_set_creds(bl_registry *r, const char *user, const char *pass);
/* GET /v2/: reachability and credentials. */
int bl_registry_ping(bl_registry *r, bl_error_t *err);
/* A manifest or index by tag or "sha256:<hex>", at most max bytes; its
 * media type from Content-Type (else the document's) and the sha256 of the
 * bytes received. When ref is a digest the body must hash to it. */
int bl_registry_get_manifest(bl_registry *r, const char *ref, size_t max, char **ret_body,
			     size_t *ret_len, char **ret_media_type, char ret_digest_hex[64 + 1],
			     bl_error_t *err);
/* A blob into fd (a regular file, which may hold a prefix of it already:
 * resumed with a Range request), verified against hex and size as it
 * streams; on any mismatch the file is truncated to 0 and BL_EPROTO given. */
int bl_registry_get_blob(bl_registry *r, const char *hex, uint64_t size, int fd,
			 bl_registry_progress_fn progress, void *opaque, bl_error_t *err);
