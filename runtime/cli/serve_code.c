/*
 * `boxlite serve`'s stateful code runs (POST .../run_code): one libboxlite
 * code session (bl_codebox, a persistent Python interpreter) per sandbox,
 * started on the first run; runs of a sandbox are serialised.
 */
#include "serve.h"

#include <stdlib.h>
#include <string.h>

struct srv_code {
	pthread_mutex_t mu;
	bl_codebox *cb;
};

static struct srv_code *code_of(srv_box *box)
{
	pthread_mutex_lock(&srv->lock);
	if (!box->code) {
		box->code = calloc(1, sizeof(*box->code));
		pthread_mutex_init(&box->code->mu, NULL);
	}
	struct srv_code *c = box->code;
	pthread_mutex_unlock(&srv->lock);
	return c;
}

/* With c->mu held. */
static int ensure_session(srv_box *box, struct srv_code *c, bl_error_t *err)
{
	if (c->cb)
		return 0;
	bl_codebox_options o = {.max_output = srv->cfg.max_output};
	return bl_codebox_create(box->sb, &o, &c->cb, err);
}

static json_object *result_json(const bl_codebox_result *res, int rc)
{
	json_object *j = json_object_new_object();
	json_object_object_add(
	    j, "stdout", srv_json_text(res->stdout_data ? res->stdout_data : "", res->stdout_len));
	json_object_object_add(
	    j, "stderr", srv_json_text(res->stderr_data ? res->stderr_data : "", res->stderr_len));
	json_object_object_add(j, "exit_code", json_object_new_int(res->exit_code));
	json_object_object_add(j, "error",
			       res->error[0] ? json_object_new_string(res->error) : NULL);
	json_object_object_add(j, "resource",
			       res->resource[0] ? json_object_new_string(res->resource) : NULL);
	json_object_object_add(j, "timed_out", json_object_new_boolean(res->timed_out));
	json_object_object_add(j, "oom_killed", json_object_new_boolean(rc == -BL_EOOM));
	json_object_object_add(j, "state_lost", json_object_new_boolean(res->state_lost));
	json_object_object_add(j, "truncated", json_object_new_boolean(res->truncated));
	json_object_object_add(j, "duration_ms", json_object_new_double(res->duration_ms));
	return j;
}

json_object *srv_code_run(srv_box *box, const char *code, double timeout, bl_error_t *err)
{
	if (strlen(code) > BL_CODEBOX_MAX_CODE) {
		bl_set_error(err, BL_EINVAL, "code is over %u bytes", BL_CODEBOX_MAX_CODE);
		return NULL;
	}
	struct srv_code *c = code_of(box);
	pthread_mutex_lock(&c->mu);
	json_object *j = NULL;
	if (ensure_session(box, c, err) == 0) {
		bl_codebox_result res;
		memset(&res, 0, sizeof(res));
		int ms = timeout > 0 ? (int)(timeout * 1000 > 2e9 ? 2e9 : timeout * 1000) : 0;
		int rc = bl_codebox_run(c->cb, code, ms, &res, err);
		if (rc == 0 || rc == -BL_ETIMEOUT || rc == -BL_ECANCELED || rc == -BL_EOOM)
			j = result_json(&res, rc);
		bl_codebox_result_clear(&res);
	}
	pthread_mutex_unlock(&c->mu);
	return j;
}

int srv_code_reset(srv_box *box, bl_error_t *err)
{
	struct srv_code *c = code_of(box);
	pthread_mutex_lock(&c->mu);
	int r = c->cb ? bl_codebox_restart(c->cb, err) : 0;
	pthread_mutex_unlock(&c->mu);
	return r;
}

void srv_code_free(struct srv_code *c)
{
	if (!c)
		return;
	bl_codebox_free(c->cb);
	pthread_mutex_destroy(&c->mu);
	free(c);
}
