/* libFuzzer target: what a registry (or a user) hands the pull code besides
 * blobs — WWW-Authenticate challenges, token responses, error bodies, the
 * registries config, image references. The first byte picks the parser. */
#include "bl_cleanup.h"
#include "image_ref.h"
#include "registry.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void printable_or_abort(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const char *text = (const char *)data + 1;
	size_t len = size - 1;
	bl_error_t err = BL_ERROR_INIT;
	switch (data[0] % 5) {
	case 0: {
		bl_auth_challenge c;
		if (bl_registry_parse_challenge(text, len, &c, &err) == 0 &&
		    c.scheme == BL_AUTH_BEARER && strncmp(c.realm, "http", 4))
			abort();
		break;
	}
	case 1: {
		char *tok = NULL;
		int exp = 0;
		if (bl_registry_parse_token(text, len, &tok, &exp, &err) == 0) {
			printable_or_abort(tok); /* it goes into an HTTP header */
			if (strchr(tok, ' ') || exp < 0)
				abort();
			free(tok);
		}
		break;
	}
	case 2: {
		char code[64], msg[256];
		(void)bl_registry_parse_errors(text, len, code, sizeof(code), msg, sizeof(msg));
		printable_or_abort(code);
		printable_or_abort(msg);
		break;
	}
	case 3: {
		bl_registry_conf c;
		if (bl_registry_conf_parse(text, len, "r", &c, &err) == 0)
			bl_registry_conf_clear(&c);
		break;
	}
	case 4: {
		_cleanup_free_ char *s = malloc(len + 1);
		if (!s)
			return 0;
		memcpy(s, text, len);
		s[len] = '\0';
		bl_image_ref r;
		if (bl_image_ref_parse(s, &r, &err) == 0) {
			/* a normalised reference parses to itself, and its repository
			 * never walks out of a path */
			_cleanup_free_ char *n = bl_image_ref_string(&r);
			bl_image_ref r2;
			if (bl_image_ref_parse(n, &r2, NULL) < 0 || strcmp(r.path, r2.path) ||
			    strcmp(r.domain, r2.domain) || strstr(r.path, "..") || r.path[0] == '/')
				abort();
		}
		break;
	}
	}
	return 0;
}
