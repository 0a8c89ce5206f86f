/*
 * HTTP side of the OCI distribution API over libcurl: one repository of one
 * registry per client. Anonymous, Bearer-token (the WWW-Authenticate
 * challenge flow) and basic auth; HTTPS, or plain HTTP only for registries
 * configured insecure or on loopback; redirects (credentials never follow to
 * another host: curl drops Authorization there); retries with back-off on
 * 429, 5xx and broken connections; blobs resumed with Range and hashed as
 * they stream.
 */
#include "registry.h"

#include "bl_cleanup.h"
#include "bl_digest.h"
#include "bl_util.h"
#include "image_internal.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ERR_BODY_MAX   (64 * 1024)
#define TOKEN_BODY_MAX (1 << 20)
#define UA	       "boxlite/0.1"

struct bl_registry {
	char host[256], conf_host[256], repo[256];
	bool https;	   /* current scheme */
	bool http_allowed; /* insecure in the config, or loopback */
	bool scheme_known; /* a response came back on the current scheme */
	bl_registry_conf conf;
	char *user, *pass;
	pthread_mutex_t mu; /* guards auth below and the scheme */
	char *bearer;	    /* "Authorization: Bearer ..." */
	bool use_basic;
	int retries;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
	(void)curl_global_init(CURL_GLOBAL_DEFAULT);
}

BL_DEFINE_CLEANUP(CURL, curl_easy_cleanup)
BL_DEFINE_CLEANUP(struct curl_slist, curl_slist_free_all)

int bl_registry_open(const char *host, const char *conf_host, const char *repo, bl_registry **ret,
		     bl_error_t *err)
{
	pthread_once(&curl_once, curl_init_once);
	bl_registry *r = bl_malloc0(sizeof(*r));
	snprintf(r->host, sizeof(r->host), "%s", host);
	snprintf(r->conf_host, sizeof(r->conf_host), "%s", conf_host);
	snprintf(r->repo, sizeof(r->repo), "%s", repo);
	pthread_mutex_init(&r->mu, NULL);
	int rc = bl_registry_conf_load(host, &r->conf, err);
	if (rc == 0 && strcmp(host, conf_host)) {
		/* A mirror: its own entry may say insecure or give a CA. */
		bl_registry_conf origin = {0};
		rc = bl_registry_conf_load(conf_host, &origin, err);
		bl_registry_conf_clear(&origin);
	}
	if (rc == 0)
		rc = bl_registry_creds(conf_host, &r->user, &r->pass, err);
	if (rc < 0) {
		bl_registry_close(r);
		return rc;
	}
	r->http_allowed = r->conf.insecure || bl_registry_host_is_loopback(host);
	r->https = true;
	const char *n = getenv("BOXLITE_PULL_RETRIES");
	r->retries = n && *n ? atoi(n) : 3;
	if (r->retries < 0 || r->retries > 20)
		r->retries = 3;
	*ret = r;
	return 0;
}

void bl_registry_close(bl_registry *r)
{
	if (!r)
		return;
	bl_registry_conf_clear(&r->conf);
	free(r->user);
	if (r->pass) {
		explicit_bzero(r->pass, strlen(r->pass));
		free(r->pass);
	}
	free(r->bearer);
	pthread_mutex_destroy(&r->mu);
	free(r);
}

void bl_registry_set_creds(bl_registry *r, const char *user, const char *pass)
{
	free(r->user);
	free(r->pass);
	r->user = user ? bl_strdup(user) : NULL;
	r->pass = pass ? bl_strdup(pass) : NULL;
	free(r->bearer);
	r->bearer = NULL;
	r->use_basic = false;
}

/* ------------------------------------------------------------ one request */

typedef struct req {
	bl_registry *reg;
	const char *path; /* "/v2/..." */
	const char *accept;
	/* memory sink (manifests) */
	char *buf;
	size_t len, max;
	/* file sink (blobs) */
	int fd;
	bl_sha256 *sha;
	uint64_t written, limit, range_from;
	bl_registry_progress_fn progress;
	void *opaque;
	/* error bodies */
	char *ebuf;
	size_t elen;
	/* captured headers of the last response */
	char content_type[128], docker_digest[80], www_auth[2048];
	long retry_after;
	bool overflow, restarted;
	char refused_ip[64]; /* plain HTTP to this non-loopback address was refused */
	int write_errno;
	CURL *curl;
	/* set after perform */
	long status;
	char curl_msg[CURL_ERROR_SIZE];
} req;

static void header_value(const char *line, size_t n, const char *name, char *out, size_t cap)
{
	size_t k = strlen(name);
	if (n <= k || strncasecmp(line, name, k) || line[k] != ':')
		return;
	const char *v = line + k + 1;
	const char *end = line + n;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
		end--;
	size_t vn = (size_t)(end - v);
	if (vn >= cap)
		vn = cap - 1;
	memcpy(out, v, vn);
	out[vn] = '\0';
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *p)
{
	req *q = p;
	size_t n = size * nmemb;
	if (n >= 5 && !strncmp(data, "HTTP/", 5)) {
		q->content_type[0] = q->docker_digest[0] = q->www_auth[0] = '\0';
		q->retry_after = 0;
		return n;
	}
	char ra[32] = "";
	header_value(data, n, "content-type", q->content_type, sizeof(q->content_type));
	header_value(data, n, "docker-content-digest", q->docker_digest, sizeof(q->docker_digest));
	header_value(data, n, "www-authenticate", q->www_auth, sizeof(q->www_auth));
	header_value(data, n, "retry-after", ra, sizeof(ra));
	if (ra[0])
		q->retry_after = atol(ra);
	return n;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *p)
{
	req *q = p;
	size_t n = size * nmemb;
	long status = 0;
	(void)curl_easy_getinfo(q->curl, CURLINFO_RESPONSE_CODE, &status);
	if (status < 200 || status >= 300) {
		size_t take = q->elen + n > ERR_BODY_MAX ? ERR_BODY_MAX - q->elen : n;
		if (take) {
			q->ebuf = realloc(q->ebuf, q->elen + take + 1);
			if (!q->ebuf)
				abort();
			memcpy(q->ebuf + q->elen, data, take);
			q->elen += take;
			q->ebuf[q->elen] = '\0';
		}
		return n;
	}
	if (q->fd < 0) {
		if (q->len + n > q->max) {
			q->overflow = true;
			return 0;
		}
		q->buf = realloc(q->buf, q->len + n + 1);
		if (!q->buf)
			abort();
		memcpy(q->buf + q->len, data, n);
		q->len += n;
		q->buf[q->len] = '\0';
		return n;
	}
	if (q->range_from && status == 200 && !q->restarted) {
		/* The server ignored the Range: start over. */
		q->restarted = true;
		if (ftruncate(q->fd, 0) < 0 || lseek(q->fd, 0, SEEK_SET) < 0) {
			q->write_errno = errno;
			return 0;
		}
		bl_sha256_free(q->sha);
		bl_sha256_init(q->sha);
		q->written = 0;
	}
	if (q->written + n > q->limit) {
		q->overflow = true;
		return 0;
	}
	if (bl_write_full(q->fd, data, n) < 0) {
		q->write_errno = errno ? errno : EIO;
		return 0;
	}
	bl_sha256_update(q->sha, data, n);
	q->written += n;
	if (q->progress)
		q->progress(q->written, q->opaque);
	return n;
}

static char *auth_header(bl_registry *g)
{
	char *h = NULL;
	pthread_mutex_lock(&g->mu);
	if (g->bearer) {
		h = bl_strdup(g->bearer);
	} else if (g->use_basic && g->user) {
		_cleanup_free_ char *plain = bl_asprintf("%s:%s", g->user, g->pass ? g->pass : "");
		_cleanup_free_ char *b64 = bl_base64_encode(plain, strlen(plain));
		h = bl_asprintf("Authorization: Basic %s", b64);
		explicit_bzero(plain, strlen(plain));
	}
	pthread_mutex_unlock(&g->mu);
	return h;
}

static bool ip_is_loopback(const char *ip)
{
	return ip &&
	       (!strncmp(ip, "127.", 4) || !strcmp(ip, "::1") || !strncmp(ip, "::ffff:127.", 11));
}

/* Before every connection, redirects included: plain HTTP only to loopback
 * addresses, unless the registry is configured insecure. */
static int on_prereq(void *p, char *ip, char *local_ip, int port, int local_port)
{
	req *q = p;
	char *url = NULL;
	(void)curl_easy_getinfo(q->curl, CURLINFO_EFFECTIVE_URL, &url);
	if (url && !strncasecmp(url, "http://", 7) && !q->reg->conf.insecure &&
	    !ip_is_loopback(ip)) {
		snprintf(q->refused_ip, sizeof(q->refused_ip), "%s", ip ? ip : "?");
		return CURL_PREREQFUNC_ABORT;
	}
	return CURL_PREREQFUNC_OK;
}

/* Common transfer options: protocols, redirects, TLS, stall detection. */
static void common_opts(CURL *c, const bl_registry *g, bool https, char *errbuf)
{
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_USERAGENT, UA);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, g->http_allowed ? "http,https" : "https");
	curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR,
			 https && !g->conf.insecure ? "https" : "http,https");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 15L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 30L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
	if (g->conf.ca_file)
		curl_easy_setopt(c, CURLOPT_CAINFO, g->conf.ca_file);
}

static CURLcode perform(req *q)
{
	bl_registry *g = q->reg;
	_cleanup_(curl_easy_cleanupp) CURL *c = curl_easy_init();
	_cleanup_(curl_slist_free_allp) struct curl_slist *h = NULL;
	if (!c)
		abort();
	q->curl = c;
	pthread_mutex_lock(&g->mu);
	bool https = g->https;
	pthread_mutex_unlock(&g->mu);
	_cleanup_free_ char *url =
	    bl_asprintf("%s://%s%s", https ? "https" : "http", g->host, q->path);
	_cleanup_free_ char *accept = q->accept ? bl_asprintf("Accept: %s", q->accept) : NULL;
	_cleanup_free_ char *auth = auth_header(g);
	_cleanup_free_ char *range =
	    q->range_from ? bl_asprintf("Range: bytes=%llu-", (unsigned long long)q->range_from)
			  : NULL;
	if (accept)
		h = curl_slist_append(h, accept);
	if (auth)
		h = curl_slist_append(h, auth);
	if (range)
		h = curl_slist_append(h, range);
	q->curl_msg[0] = '\0';
	q->refused_ip[0] = '\0';
	common_opts(c, g, https, q->curl_msg);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, q);
	curl_easy_setopt(c, CURLOPT_PREREQFUNCTION, on_prereq);
	curl_easy_setopt(c, CURLOPT_PREREQDATA, q);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, q);
	free(q->ebuf);
	q->ebuf = NULL;
	q->elen = 0;
	q->status = 0;
	CURLcode rc = curl_easy_perform(c);
	(void)curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &q->status);
	q->curl = NULL;
	if (!q->curl_msg[0])
		snprintf(q->curl_msg, sizeof(q->curl_msg), "%s", curl_easy_strerror(rc));
	bl_registry_sanitize(q->curl_msg);
	return rc;
}

static bool transient(CURLcode rc)
{
	return rc == CURLE_COULDNT_CONNECT || rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR ||
	       rc == CURLE_PARTIAL_FILE || rc == CURLE_GOT_NOTHING ||
	       rc == CURLE_OPERATION_TIMEDOUT || rc == CURLE_HTTP2 || rc == CURLE_HTTP2_STREAM;
}

static bool tls_error(CURLcode rc)
{
	return rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CONNECT_ERROR ||
	       rc == CURLE_SSL_CERTPROBLEM || rc == CURLE_SSL_CIPHER ||
	       rc == CURLE_SSL_CACERT_BADFILE || rc == CURLE_SSL_ISSUER_ERROR ||
	       rc == CURLE_SSL_PINNEDPUBKEYNOTMATCH || rc == CURLE_SSL_INVALIDCERTSTATUS;
}

static void backoff(int attempt, long retry_after)
{
	long ms = 250L << (attempt < 5 ? attempt : 5);
	if (ms > 4000)
		ms = 4000;
	if (retry_after > 0)
		ms = (retry_after > 10 ? 10 : retry_after) * 1000;
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* The registry's own words for an error response, for messages. */
static void registry_says(const req *q, char *out, size_t cap)
{
	char code[64], msg[256];
	out[0] = '\0';
	if (q->ebuf &&
	    bl_registry_parse_errors(q->ebuf, q->elen, code, sizeof(code), msg, sizeof(msg)) == 0 &&
	    (code[0] || msg[0]))
		snprintf(out, cap, " (%s%s%s)", code, code[0] && msg[0] ? ": " : "", msg);
}

static int fetch_token(bl_registry *g, const bl_auth_challenge *ch, bl_error_t *err)
{
	bool realm_https = !strncmp(ch->realm, "https://", 8);
	const char *rhost = ch->realm + (realm_https ? 8 : 7);
	char rh[256];
	snprintf(rh, sizeof(rh), "%.*s", (int)strcspn(rhost, "/?#"), rhost);
	if (!realm_https && !g->conf.insecure && !bl_registry_host_is_loopback(rh))
		return bl_set_error(err, BL_EAUTH,
				    "%s: refusing a token realm over plain HTTP (%s)", g->host, rh);
	_cleanup_(curl_easy_cleanupp) CURL *c = curl_easy_init();
	if (!c)
		abort();
	_cleanup_free_ char *scope = ch->scope[0] ? bl_strdup(ch->scope)
				     : g->repo[0] ? bl_asprintf("repository:%s:pull", g->repo)
						  : bl_strdup("");
	char *es = curl_easy_escape(c, scope, 0), *sv = curl_easy_escape(c, ch->service, 0);
	_cleanup_free_ char *url = bl_asprintf(
	    "%s%s%s%s%s%s", ch->realm, strchr(ch->realm, '?') ? "&" : "?", scope[0] ? "scope=" : "",
	    es, ch->service[0] ? "&service=" : "", ch->service[0] ? sv : "");
	curl_free(es);
	curl_free(sv);
	req q = {.reg = g, .fd = -1, .max = TOKEN_BODY_MAX, .curl = c};
	common_opts(c, g, realm_https, q.curl_msg);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, realm_https ? "https" : "http,https");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &q);
	curl_easy_setopt(c, CURLOPT_PREREQFUNCTION, on_prereq);
	curl_easy_setopt(c, CURLOPT_PREREQDATA, &q);
	if (g->user) {
		curl_easy_setopt(c, CURLOPT_USERNAME, g->user);
		curl_easy_setopt(c, CURLOPT_PASSWORD, g->pass ? g->pass : "");
		curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
	}
	CURLcode rc = curl_easy_perform(c);
	(void)curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &q.status);
	_cleanup_free_ char *body = q.buf, *ebody = q.ebuf;
	if (q.refused_ip[0])
		return bl_set_error(err, BL_ENETWORK,
				    "refusing plain HTTP to %s (token server %s; not loopback, "
				    "registry not configured insecure)",
				    q.refused_ip, rh);
	if (rc != CURLE_OK)
		return bl_set_error(err, tls_error(rc) ? BL_ENETWORK : BL_ENETWORK,
				    "token server %s unreachable: %s", rh,
				    q.curl_msg[0] ? q.curl_msg : curl_easy_strerror(rc));
	if (q.status == 401 || q.status == 403)
		return bl_set_error(
		    err, BL_EAUTH, "authentication refused by %s (token server %s)%s", g->conf_host,
		    rh, g->user ? "" : ": no credentials (boxlite login)");
	if (q.status != 200)
		return bl_set_error(err, BL_ENETWORK, "token server %s: HTTP %ld", rh, q.status);
	_cleanup_free_ char *token = NULL;
	int r = bl_registry_parse_token(body ? body : "", q.len, &token, NULL, err);
	if (r < 0)
		return BL_PREFIX(r, err, "token server %s", rh);
	pthread_mutex_lock(&g->mu);
	free(g->bearer);
	g->bearer = bl_asprintf("Authorization: Bearer %s", token);
	pthread_mutex_unlock(&g->mu);
	explicit_bzero(token, strlen(token));
	return 0;
}

/* Answers a 401: a token for a Bearer challenge, credentials for Basic. */
static int authenticate(bl_registry *g, req *q, bl_error_t *err)
{
	bl_auth_challenge ch;
	if (!q->www_auth[0])
		return bl_set_error(err, BL_EAUTH, "%s answered 401 without a challenge", g->host);
	int r = bl_registry_parse_challenge(q->www_auth, strlen(q->www_auth), &ch, err);
	if (r < 0)
		return BL_PREFIX(r, err, "%s", g->host);
	if (ch.scheme == BL_AUTH_BEARER)
		return fetch_token(g, &ch, err);
	if (!g->user)
		return bl_set_error(err, BL_EAUTH, "%s requires credentials (boxlite login %s)",
				    g->conf_host, g->conf_host);
	if (!g->https && !g->conf.insecure && !bl_registry_host_is_loopback(g->host))
		return bl_set_error(err, BL_EAUTH, "refusing basic auth over plain HTTP to %s",
				    g->host);
	pthread_mutex_lock(&g->mu);
	g->use_basic = true;
	pthread_mutex_unlock(&g->mu);
	return 0;
}

/* Runs q until a 2xx, retrying what is worth retrying; maps failures to
 * errors that name their cause. */
static int run(req *q, bl_error_t *err)
{
	bl_registry *g = q->reg;
	bool authed = false;
	for (int attempt = 0;; attempt++) {
		if (q->fd >= 0)
			q->range_from = q->written;
		q->restarted = false;
		CURLcode rc = perform(q);
		pthread_mutex_lock(&g->mu);
		if (rc == CURLE_OK)
			g->scheme_known = true;
		bool fallback = rc == CURLE_SSL_CONNECT_ERROR && g->https && !g->scheme_known &&
				g->http_allowed;
		if (fallback) /* loopback or insecure registry speaking plain HTTP */
			g->https = false;
		pthread_mutex_unlock(&g->mu);
		if (fallback) {
			attempt--;
			continue;
		}
		if (q->refused_ip[0])
			return bl_set_error(
			    err, BL_ENETWORK,
			    "%s: refusing plain HTTP to %s (not loopback, registry not "
			    "configured insecure)",
			    g->host, q->refused_ip);
		if (q->write_errno)
			return q->write_errno == ENOSPC || q->write_errno == EDQUOT
				   ? bl_set_error_errno(err, q->write_errno,
							"disk full writing a blob")
				   : bl_set_error_errno(err, q->write_errno, "write blob");
		if (q->overflow)
			return bl_set_error(err, BL_EPROTO,
					    "%s sent more than the %llu bytes expected", g->host,
					    (unsigned long long)(q->fd >= 0 ? q->limit : q->max));
		if (rc != CURLE_OK) {
			if (tls_error(rc))
				return bl_set_error(err, BL_ENETWORK, "TLS failure with %s: %s",
						    g->host, q->curl_msg);
			if (transient(rc) && attempt < g->retries) {
				backoff(attempt, 0);
				continue;
			}
			return bl_set_error(err, BL_ENETWORK, "registry %s unreachable: %s",
					    g->host, q->curl_msg);
		}
		long s = q->status;
		if (s >= 200 && s < 300)
			return 0;
		char says[400];
		registry_says(q, says, sizeof(says));
		if (s == 401 && !authed) {
			authed = true;
			int r = authenticate(g, q, err);
			if (r < 0)
				return r;
			attempt--;
			continue;
		}
		if (s == 401)
			return bl_set_error(err, BL_EAUTH, "authentication refused by %s%s",
					    g->conf_host, says);
		if (s == 403)
			return bl_set_error(err, BL_EAUTH, "access to %s denied by %s%s", g->repo,
					    g->conf_host, says);
		if (s == 404)
			return bl_set_error(err, BL_ENOTFOUND, "%s%s: not found%s", g->repo,
					    q->path, says);
		if (s == 416 && q->fd >= 0 && q->written) {
			if (ftruncate(q->fd, 0) < 0 || lseek(q->fd, 0, SEEK_SET) < 0)
				return bl_set_error_errno(err, errno, "truncate blob");
			bl_sha256_free(q->sha);
			bl_sha256_init(q->sha);
			q->written = 0;
			continue;
		}
		if ((s == 429 || s >= 500) && attempt < g->retries) {
			backoff(attempt, q->retry_after);
			continue;
		}
		if (s == 429)
			return bl_set_error(err, BL_ENETWORK, "rate limited by %s (HTTP 429)%s",
					    g->host, says);
		return bl_set_error(err, s >= 500 ? BL_ENETWORK : BL_EPROTO, "%s: HTTP %ld%s",
				    g->host, s, says);
	}
}

int bl_registry_ping(bl_registry *r, bl_error_t *err)
{
	req q = {.reg = r, .path = "/v2/", .fd = -1, .max = ERR_BODY_MAX};
	int rc = run(&q, err);
	free(q.buf);
	free(q.ebuf);
	return rc;
}

static const char *const manifest_accept =
    "application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json";

int bl_registry_get_manifest(bl_registry *r, const char *ref, size_t max, char **ret_body,
			     size_t *ret_len, char **ret_media_type, char ret_digest_hex[64 + 1],
			     bl_error_t *err)
{
	_cleanup_free_ char *path = bl_asprintf("/v2/%s/manifests/%s", r->repo, ref);
	req q = {.reg = r, .path = path, .accept = manifest_accept, .fd = -1, .max = max};
	int rc = run(&q, err);
	_cleanup_free_ char *body = q.buf;
	free(q.ebuf);
	if (rc < 0) {
		if (rc == -BL_ENOTFOUND && err)
			snprintf(err->msg, sizeof(err->msg), "unknown image or tag %s/%s:%s at %s",
				 r->conf_host, r->repo, ref, r->host);
		return rc;
	}
	char hex[BL_SHA256_HEX_LEN + 1];
	bl_sha256_hex(body ? body : "", q.len, hex);
	if (!strncmp(ref, "sha256:", 7) && strcmp(ref + 7, hex))
		return bl_set_error(err, BL_EPROTO,
				    "manifest %s from %s: digest mismatch (got sha256:%s)", ref,
				    r->host, hex);
	if (q.docker_digest[0] && !strncmp(q.docker_digest, "sha256:", 7) &&
	    strcmp(q.docker_digest + 7, hex))
		return bl_set_error(err, BL_EPROTO,
				    "manifest %s from %s: Docker-Content-Digest %s does not match "
				    "its bytes (sha256:%s)",
				    ref, r->host, q.docker_digest, hex);
	char *semi = strchr(q.content_type, ';');
	if (semi)
		*semi = '\0';
	bl_registry_sanitize(q.content_type);
	*ret_media_type = q.content_type[0] ? bl_strdup(q.content_type) : NULL;
	*ret_body = body ? steal_pointer(&body) : bl_strdup("");
	*ret_len = q.len;
	memcpy(ret_digest_hex, hex, sizeof(hex));
	return 0;
}

/* Hashes what fd already holds (a resumed download). */
static int hash_prefix(int fd, bl_sha256 *sha, uint64_t *ret_n)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	char buf[BL_IMG_READ_BLOCK];
	uint64_t off = 0;
	while (off < (uint64_t)st.st_size) {
		ssize_t n = pread(fd, buf, sizeof(buf), (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		bl_sha256_update(sha, buf, (size_t)n);
		off += (uint64_t)n;
	}
	if (lseek(fd, (off_t)off, SEEK_SET) < 0)
		return -errno;
	*ret_n = off;
	return 0;
}

int bl_registry_get_blob(bl_registry *r, const char *hex, uint64_t size, int fd,
			 bl_registry_progress_fn progress, void *opaque, bl_error_t *err)
{
	bl_sha256 sha;
	bl_sha256_init(&sha);
	uint64_t have = 0;
	struct stat st;
	if (fstat(fd, &st) == 0 && (uint64_t)st.st_size > size && ftruncate(fd, 0) < 0) {
		bl_sha256_free(&sha);
		return bl_set_error_errno(err, errno, "truncate blob");
	}
	int e = hash_prefix(fd, &sha, &have);
	if (e < 0) {
		bl_sha256_free(&sha);
		return bl_set_error_errno(err, -e, "read partial blob");
	}
	_cleanup_free_ char *path = bl_asprintf("/v2/%s/blobs/sha256:%s", r->repo, hex);
	req q = {.reg = r,
		 .path = path,
		 .fd = fd,
		 .sha = &sha,
		 .written = have,
		 .limit = size,
		 .progress = progress,
		 .opaque = opaque};
	int rc = have == size ? 0 : run(&q, err);
	free(q.ebuf);
	char got[BL_SHA256_HEX_LEN + 1] = "";
	if (rc == 0)
		bl_sha256_final_hex(&sha, got);
	bl_sha256_free(&sha);
	if (rc == 0 && (q.written != size || strcmp(got, hex))) {
		if (ftruncate(fd, 0) < 0) { /* the caller unlinks it anyway */
		}
		if (q.written != size)
			return bl_set_error(
			    err, BL_EPROTO,
			    "blob sha256:%s from %s: %llu bytes, descriptor says %llu", hex,
			    r->host, (unsigned long long)q.written, (unsigned long long)size);
		return bl_set_error(err, BL_EPROTO,
				    "blob sha256:%s from %s: digest mismatch (got sha256:%s)", hex,
				    r->host, got);
	}
	if (rc == -BL_ENOTFOUND && err)
		snprintf(err->msg, sizeof(err->msg), "blob sha256:%.64s unknown to %s", hex,
			 r->host);
	if (rc == -BL_EPROTO)
		if (ftruncate(fd, 0) < 0) { /* the caller unlinks it anyway */
		}
	return rc;
}
