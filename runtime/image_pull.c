/*
 * A pull: reference -> manifest (an index resolved to linux/<arch>) ->
 * config and layer blobs into STORE/blobs (each verified while it streams,
 * one download per blob however many pulls want it: a flock per blob) ->
 * the layers unpacked by image_unpack.c (verified again, as stored and after
 * decompression) into a staged rootfs renamed into images/<manifest digest>
 * -> the name. A pull interrupted anywhere leaves no name and no image; a
 * partial blob under tmp/ is resumed by the next pull (prune removes it).
 */
#include "image_internal.h"

#include "bl_util.h"
#include "image_ref.h"
#include "registry.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_INDEX_DEPTH 4
#define MAX_PARALLEL	16

typedef struct pull {
	const char *store;
	bl_registry *reg;
	const bl_image_limits *lim;
	const char *ref_str;
	bl_image_manifest m;
	/* progress */
	bl_pull_progress_fn fn;
	void *opaque;
	pthread_mutex_t mu;
	uint64_t total, done_base;
	uint64_t *layer_done;
	/* workers */
	atomic_size_t next;
	atomic_bool failed;
	int ret;
	bl_error_t err;
} pull;

static void report(pull *p, bl_pull_event ev, size_t layer, uint64_t layer_done, bool cached)
{
	if (!p->fn)
		return;
	pthread_mutex_lock(&p->mu);
	if (ev == BL_PULL_LAYER_BYTES || ev == BL_PULL_LAYER_DONE)
		p->layer_done[layer] = layer_done;
	uint64_t done = 0;
	for (size_t i = 0; i < p->m.n_layers; i++)
		done += p->layer_done[i];
	char dg[72] = "";
	if (layer < p->m.n_layers)
		snprintf(dg, sizeof(dg), "sha256:%s", p->m.layers[layer].digest_hex);
	bl_pull_progress pr = {
	    .event = ev,
	    .ref = p->ref_str,
	    .layer = layer,
	    .n_layers = p->m.n_layers,
	    .layer_digest = dg,
	    .layer_done = layer_done,
	    .layer_size = layer < p->m.n_layers ? p->m.layers[layer].size : 0,
	    .done = done,
	    .total = p->total,
	    .cached = cached,
	};
	p->fn(&pr, p->opaque);
	pthread_mutex_unlock(&p->mu);
}

static char *blob_path(const char *store, const char *hex)
{
	return bl_asprintf("%s/blobs/sha256/%s", store, hex);
}

static bool blob_present(const char *store, const char *hex, uint64_t size)
{
	_cleanup_free_ char *p = blob_path(store, hex);
	struct stat st;
	return stat(p, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size == size;
}

/* Publishes a verified file as blobs/sha256/<hex>. */
static int publish_blob(const char *store, int fd, const char *tmp, const char *hex,
			bl_error_t *err)
{
	_cleanup_free_ char *final = blob_path(store, hex);
	if (fsync(fd) < 0)
		return bl_set_error_errno(err, errno, "fsync %s", tmp);
	if (rename(tmp, final) < 0)
		return bl_set_error_errno(err, errno, "rename %s", final);
	return 0;
}

/* A small blob already in memory and verified (manifest, config). */
static int store_small_blob(const char *store, const char *hex, const char *data, size_t len,
			    bl_error_t *err)
{
	if (blob_present(store, hex, len))
		return 0;
	_cleanup_free_ char *tmp = bl_asprintf("%s/tmp/blob-%s.XXXXXX", store, hex);
	_cleanup_close_ int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return bl_set_error_errno(err, errno, "create %s", tmp);
	int r = 0;
	if (bl_write_full(fd, data, len) < 0)
		r = bl_set_error_errno(err, errno,
				       errno == ENOSPC ? "disk full writing %s" : "write %s", tmp);
	if (r == 0 && fchmod(fd, 0644) < 0)
		r = bl_set_error_errno(err, errno, "chmod %s", tmp);
	if (r == 0)
		r = publish_blob(store, fd, tmp, hex, err);
	if (r < 0)
		(void)unlink(tmp);
	return r;
}

typedef struct layer_cb {
	pull *p;
	size_t i;
} layer_cb;

static void on_bytes(uint64_t done, void *opaque)
{
	layer_cb *c = opaque;
	report(c->p, BL_PULL_LAYER_BYTES, c->i, done, false);
}

/* One layer into blobs/, downloaded by one pull at a time (the blob lock);
 * a pull that waited finds it there. */
static int fetch_layer(pull *p, size_t i, bl_error_t *err)
{
	const bl_image_desc *d = &p->m.layers[i];
	_cleanup_free_ char *lock_path =
	    bl_asprintf("%s/locks/blob-%s.lock", p->store, d->digest_hex);
	_cleanup_(bl_img_unlockp) int lock = -1;
	int r = bl_img_lock_file(lock_path, &lock, err);
	if (r < 0)
		return r;
	if (blob_present(p->store, d->digest_hex, d->size)) {
		report(p, BL_PULL_LAYER_START, i, 0, true);
		report(p, BL_PULL_LAYER_DONE, i, d->size, true);
		return 0;
	}
	report(p, BL_PULL_LAYER_START, i, 0, false);
	_cleanup_free_ char *tmp = bl_asprintf("%s/tmp/blob-%s.partial", p->store, d->digest_hex);
	_cleanup_close_ int fd = open(tmp, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return bl_set_error_errno(err, errno, "open %s", tmp);
	layer_cb cb = {p, i};
	r = bl_registry_get_blob(p->reg, d->digest_hex, d->size, fd, on_bytes, &cb, err);
	if (r == -BL_EPROTO)
		(void)unlink(tmp); /* unverifiable bytes are not kept */
	if (r < 0)
		return BL_PREFIX(r, err, "layer %zu/%zu", i + 1, p->m.n_layers);
	if ((r = publish_blob(p->store, fd, tmp, d->digest_hex, err)) < 0)
		return r;
	report(p, BL_PULL_LAYER_DONE, i, d->size, false);
	return 0;
}

static void *layer_worker(void *arg)
{
	pull *p = arg;
	for (;;) {
		size_t i = atomic_fetch_add(&p->next, 1);
		if (i >= p->m.n_layers || atomic_load(&p->failed))
			return NULL;
		bl_error_t e = BL_ERROR_INIT;
		int r = fetch_layer(p, i, &e);
		if (r < 0) {
			pthread_mutex_lock(&p->mu);
			if (!atomic_exchange(&p->failed, true)) {
				p->ret = r;
				p->err = e;
			}
			pthread_mutex_unlock(&p->mu);
			return NULL;
		}
	}
}

static int fetch_layers(pull *p, unsigned parallel, bl_error_t *err)
{
	size_t n = p->m.n_layers;
	unsigned k = parallel ? parallel : 4;
	if (k > MAX_PARALLEL)
		k = MAX_PARALLEL;
	if (k > n)
		k = (unsigned)n;
	pthread_t t[MAX_PARALLEL];
	unsigned started = 0;
	for (; started < k; started++)
		if (pthread_create(&t[started], NULL, layer_worker, p) != 0)
			break;
	if (started == 0 && n)
		layer_worker(p);
	for (unsigned i = 0; i < started; i++)
		pthread_join(t[i], NULL);
	if (atomic_load(&p->failed)) {
		if (err)
			*err = p->err;
		return p->ret;
	}
	return 0;
}

/* The manifest for ref (following an index to linux/<arch>). */
static int resolve_manifest(pull *p, const bl_image_ref *r, char **ret_body, size_t *ret_len,
			    char key[BL_SHA256_HEX_LEN + 1], bl_error_t *err)
{
	_cleanup_free_ char *want =
	    r->digest_hex[0] ? bl_asprintf("sha256:%s", r->digest_hex) : bl_strdup(r->tag);
	for (int depth = 0;; depth++) {
		_cleanup_free_ char *body = NULL, *media = NULL;
		size_t len = 0;
		int rc = bl_registry_get_manifest(p->reg, want, p->lim->max_json_bytes, &body, &len,
						  &media, key, err);
		if (rc < 0)
			return rc;
		_cleanup_json_ struct json_object *o = NULL;
		if ((rc = bl_img_json_parse(body, len, p->lim->max_json_bytes, "manifest",
					    json_type_object, &o, err)) < 0)
			return rc;
		struct json_object *mt = NULL, *sv = NULL;
		const char *doc_media = json_object_object_get_ex(o, "mediaType", &mt) &&
						json_object_is_type(mt, json_type_string)
					    ? json_object_get_string(mt)
					    : NULL;
		if (json_object_object_get_ex(o, "schemaVersion", &sv) &&
		    json_object_get_int(sv) == 1)
			return bl_set_error(err, BL_EUNSUPPORTED,
					    "%s is a docker schema 1 image (unsupported)",
					    p->ref_str);
		bool is_index = bl_img_media_is_index(media) || bl_img_media_is_index(doc_media) ||
				(!doc_media && json_object_object_get_ex(o, "manifests", NULL));
		if (!is_index) {
			*ret_body = steal_pointer(&body);
			*ret_len = len;
			return 0;
		}
		if (depth >= MAX_INDEX_DEPTH)
			return bl_set_error(err, BL_EPROTO, "image indexes nested too deep");
		bl_image_desc d = {0};
		int nested = 0;
		if ((rc = bl_image_parse_index(body, len, p->lim, &d, &nested, err)) < 0) {
			if (rc == -BL_ENOTFOUND && err)
				snprintf(err->msg, sizeof(err->msg),
					 "%s has no image for linux/%s (unsupported platform)",
					 p->ref_str, bl_img_host_arch());
			return rc;
		}
		free(want);
		want = bl_asprintf("sha256:%s", d.digest_hex);
		bl_image_desc_clear(&d);
	}
}

/* "created" of an image config (RFC 3339) as seconds, 0 when absent. */
static int64_t config_created(const char *cfg, size_t len)
{
	_cleanup_json_ struct json_object *o = NULL;
	struct json_object *c = NULL;
	if (bl_img_json_parse(cfg, len, len + 1, "config", json_type_object, &o, NULL) < 0 ||
	    !json_object_object_get_ex(o, "created", &c) ||
	    !json_object_is_type(c, json_type_string))
		return 0;
	struct tm tm = {0};
	const char *end = strptime(json_object_get_string(c), "%Y-%m-%dT%H:%M:%S", &tm);
	if (!end)
		return 0;
	time_t t = timegm(&tm);
	return t < 0 ? 0 : (int64_t)t;
}

static int fetch_config(pull *p, bl_img_plan *plan, char ***ret_diff_ids, bl_error_t *err)
{
	const bl_image_desc *c = &p->m.config;
	if (c->size > p->lim->max_json_bytes)
		return bl_set_error(err, BL_EPROTO, "image config larger than %zu bytes",
				    p->lim->max_json_bytes);
	_cleanup_free_ char *tmp =
	    bl_asprintf("%s/tmp/blob-%s.config.XXXXXX", p->store, c->digest_hex);
	_cleanup_close_ int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return bl_set_error_errno(err, errno, "create %s", tmp);
	int r = bl_registry_get_blob(p->reg, c->digest_hex, c->size, fd, NULL, NULL, err);
	_cleanup_free_ char *buf = bl_malloc0(c->size + 1);
	if (r == 0 && pread(fd, buf, c->size, 0) != (ssize_t)c->size)
		r = bl_set_error_errno(err, errno, "read %s", tmp);
	(void)unlink(tmp);
	if (r < 0)
		return BL_PREFIX(r, err, "image config");
	if ((r = bl_image_parse_config(buf, c->size, p->lim, &plan->config_json, ret_diff_ids,
				       err)) < 0)
		return r;
	plan->created = config_created(buf, c->size);
	return store_small_blob(p->store, c->digest_hex, buf, c->size, err);
}

static int build_plan(pull *p, bl_img_plan *plan, char **diff_ids, const char *mhex,
		      bl_error_t *err)
{
	size_t n = p->m.n_layers, nd = 0;
	while (diff_ids && diff_ids[nd])
		nd++;
	if (diff_ids && nd != n)
		return bl_set_error(err, BL_EPROTO, "image: %zu layers but %zu diff_ids", n, nd);
	plan->layers = bl_malloc0(sizeof(*plan->layers) * (n ? n : 1));
	plan->blobs = bl_malloc0(sizeof(char *) * (n + 3));
	plan->blobs[0] = bl_strdup(mhex);
	plan->blobs[1] = bl_strdup(p->m.config.digest_hex);
	for (size_t i = 0; i < n; i++, plan->n_layers++) {
		bl_img_layer *l = &plan->layers[i];
		l->path = bl_asprintf("sha256/%s", p->m.layers[i].digest_hex);
		memcpy(l->expect_hex, p->m.layers[i].digest_hex, sizeof(l->expect_hex));
		l->expect_size = p->m.layers[i].size;
		if (diff_ids)
			memcpy(l->expect_diff_hex, diff_ids[i], sizeof(l->expect_diff_hex));
		plan->blobs[i + 2] = bl_strdup(p->m.layers[i].digest_hex);
	}
	return 0;
}

/* Everything after the manifest: blobs, unpack, install (not the name). */
static int pull_image(pull *p, const char *mbody, size_t mlen, const char *mhex, unsigned parallel,
		      bl_error_t *err)
{
	bl_img_plan plan = {0};
	_cleanup_strv_ char **diff_ids = NULL;
	int r = store_small_blob(p->store, mhex, mbody, mlen, err);
	if (r == 0)
		r = fetch_config(p, &plan, &diff_ids, err);
	if (r == 0)
		r = build_plan(p, &plan, diff_ids, mhex, err);
	if (r == 0) {
		p->layer_done = bl_malloc0(sizeof(uint64_t) * (p->m.n_layers + 1));
		for (size_t i = 0; i < p->m.n_layers; i++)
			p->total += p->m.layers[i].size;
		report(p, BL_PULL_RESOLVED, SIZE_MAX, 0, false);
		r = fetch_layers(p, parallel, err);
	}
	if (r == 0) {
		report(p, BL_PULL_UNPACK, SIZE_MAX, 0, false);
		_cleanup_free_ char *bdir = bl_asprintf("%s/blobs", p->store);
		_cleanup_close_ int bfd = open(bdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		memcpy(plan.key, mhex, sizeof(plan.key));
		plan.source = bl_asprintf("registry %s", p->ref_str);
		r = bfd < 0 ? bl_set_error_errno(err, errno, "open %s", bdir)
			    : bl_img_store_install(p->store, bfd, &plan, p->lim, err);
		if (r < 0)
			r = BL_PREFIX(r, err, "unpack");
	}
	bl_img_plan_clear(&plan);
	return r;
}

/* The hosts to try for ref's registry: its mirrors, then itself. */
static int open_registry(pull *p, const bl_image_ref *r, char **ret_body, size_t *ret_len,
			 char key[BL_SHA256_HEX_LEN + 1], bl_error_t *err)
{
	bl_registry_conf conf = {0};
	int rc = bl_registry_conf_load(r->domain, &conf, err);
	if (rc < 0)
		return rc;
	_cleanup_free_ char *repo = bl_strdup(r->path);
	const char *origin = bl_image_ref_api_host(r);
	size_t n = 0;
	while (conf.mirrors[n])
		n++;
	rc = -BL_ENOTFOUND;
	for (size_t i = 0; i <= n; i++) {
		const char *host = i < n ? conf.mirrors[i] : origin;
		bl_registry *reg = NULL;
		bl_error_t e = BL_ERROR_INIT;
		rc = bl_registry_open(host, r->domain, repo, &reg, &e);
		p->reg = reg;
		if (rc == 0)
			rc = resolve_manifest(p, r, ret_body, ret_len, key, &e);
		if (rc == 0)
			break;
		bl_registry_close(reg);
		p->reg = NULL;
		if (err)
			*err = e;
		/* A mirror's failure falls back to the next; a bad manifest does not. */
		if (rc == -BL_EPROTO || rc == -BL_EUNSUPPORTED || rc == -BL_ESYSTEM)
			break;
	}
	bl_registry_conf_clear(&conf);
	return rc;
}

static uint64_t store_limit(void)
{
	const char *v = getenv("BOXLITE_IMAGE_STORE_MAX");
	if (v && *v)
		return strtoull(v, NULL, 10);
	bl_registry_conf c = {0};
	if (bl_registry_conf_load(NULL, &c, NULL) < 0)
		return 0;
	uint64_t m = c.store_max_bytes;
	bl_registry_conf_clear(&c);
	return m;
}

int bl_image_pull(const char *ref, const bl_pull_options *o, char **ret_name, char **ret_digest,
		  bl_error_t *err)
{
	bl_pull_options def = {0};
	if (!o)
		o = &def;
	bl_image_ref r;
	int rc = bl_image_ref_parse(ref, &r, err);
	if (rc < 0)
		return rc;
	bl_image_limits lim;
	bl_image_limits_default(&lim);
	_cleanup_free_ char *store = NULL, *name = bl_image_ref_string(&r);
	if ((rc = bl_img_store_open(o->store_dir, &store, err)) < 0)
		return rc;
	pull p = {
	    .store = store, .lim = &lim, .ref_str = name, .fn = o->progress, .opaque = o->opaque};
	pthread_mutex_init(&p.mu, NULL);
	char key[BL_SHA256_HEX_LEN + 1] = "";
	_cleanup_free_ char *mbody = NULL;
	size_t mlen = 0;
	{
		_cleanup_(bl_img_unlockp) int gc = -1;
		rc = bl_img_gc_lock(store, false, &gc, err);
		if (rc == 0)
			rc = open_registry(&p, &r, &mbody, &mlen, key, err);
		if (rc == 0 && !bl_img_present(store, key)) {
			rc = bl_image_parse_manifest(mbody, mlen, &lim, &p.m, err);
			if (rc == 0)
				rc = pull_image(&p, mbody, mlen, key, o->parallel, err);
		} else if (rc == 0) {
			report(&p, BL_PULL_DONE, SIZE_MAX, 0, true);
		}
		if (rc == 0)
			rc = bl_img_set_name(store, name, key, err);
	}
	if (rc == 0 && p.m.n_layers)
		report(&p, BL_PULL_DONE, SIZE_MAX, p.total, false);
	bl_registry_close(p.reg);
	bl_image_manifest_clear(&p.m);
	free(p.layer_done);
	pthread_mutex_destroy(&p.mu);
	if (rc < 0)
		return rc;
	uint64_t max = store_limit();
	if (max && (rc = bl_img_evict(store, max, key, err)) < 0)
		return BL_PREFIX(rc, err, "store size limit");
	if (ret_name)
		*ret_name = steal_pointer(&name);
	if (ret_digest)
		*ret_digest = bl_asprintf("sha256:%s", key);
	return 0;
}

/* ------------------------------------------------------------ login */

int bl_registry_login(const char *host, const char *user, const char *pass, bl_error_t *err)
{
	if (!host || !*host || !user || !*user || !pass)
		return bl_set_error(err, BL_EINVAL,
				    "login needs a registry, a user and a password");
	bl_image_ref r;
	_cleanup_free_ char *probe = bl_asprintf("%s/x", host);
	const char *domain = host;
	if (bl_image_ref_parse(probe, &r, NULL) == 0)
		domain = r.domain;
	const char *api = strcmp(domain, BL_REF_DOCKER_HUB) ? domain : "registry-1.docker.io";
	bl_registry *reg = NULL;
	int rc = bl_registry_open(api, domain, "", &reg, err);
	if (rc < 0)
		return rc;
	bl_registry_set_creds(reg, user, pass);
	rc = bl_registry_ping(reg, err);
	bl_registry_close(reg);
	if (rc < 0)
		return BL_PREFIX(rc, err, "login %s", domain);
	return bl_registry_creds_store(domain, user, pass, err);
}

int bl_registry_logout(const char *host, bl_error_t *err)
{
	if (!host || !*host)
		return bl_set_error(err, BL_EINVAL, "logout needs a registry");
	bl_image_ref r;
	_cleanup_free_ char *probe = bl_asprintf("%s/x", host);
	const char *domain = host;
	if (bl_image_ref_parse(probe, &r, NULL) == 0)
		domain = r.domain;
	return bl_registry_creds_store(domain, NULL, NULL, err);
}
