/* `boxlite serve`'s stateful code runs (POST .../run_code). */
#include "serve.h"

json_object *srv_code_run(srv_box *box, const char *code, double timeout, bl_error_t *err)
{
	bl_set_error(err, BL_EUNSUPPORTED, "stateful code runs are not available in this build");
	return NULL;
}

int srv_code_reset(srv_box *box, bl_error_t *err)
{
	return bl_set_error(err, BL_EUNSUPPORTED,
			    "stateful code runs are not available in this build");
}

void srv_code_free(struct srv_code *c)
{
}
