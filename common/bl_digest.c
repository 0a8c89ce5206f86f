#include "bl_digest.h"

#include <openssl/evp.h>
#include <stdlib.h>

/* Out of memory inside libcrypto is treated like malloc failure elsewhere. */
static EVP_MD_CTX *ctx_of(bl_sha256 *s)
{
	if (!s->ctx)
		abort();
	return s->ctx;
}

void bl_sha256_init(bl_sha256 *s)
{
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	if (!c || EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1)
		abort();
	s->ctx = c;
}

void bl_sha256_update(bl_sha256 *s, const void *data, size_t len)
{
	if (len && EVP_DigestUpdate(ctx_of(s), data, len) != 1)
		abort();
}

void bl_sha256_final(bl_sha256 *s, uint8_t out[BL_SHA256_LEN])
{
	unsigned n = 0;
	if (EVP_DigestFinal_ex(ctx_of(s), out, &n) != 1 || n != BL_SHA256_LEN)
		abort();
	bl_sha256_free(s);
}

void bl_hex(const uint8_t *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

void bl_sha256_final_hex(bl_sha256 *s, char out[BL_SHA256_HEX_LEN + 1])
{
	uint8_t d[BL_SHA256_LEN];
	bl_sha256_final(s, d);
	bl_hex(d, sizeof(d), out);
}

void bl_sha256_free(bl_sha256 *s)
{
	if (s && s->ctx) {
		EVP_MD_CTX_free(s->ctx);
		s->ctx = NULL;
	}
}

void bl_sha256_copy(bl_sha256 *dst, const bl_sha256 *src)
{
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	if (!c || EVP_MD_CTX_copy_ex(c, src->ctx) != 1)
		abort();
	dst->ctx = c;
}

void bl_sha256_hex(const void *data, size_t len, char out[BL_SHA256_HEX_LEN + 1])
{
	uint8_t d[BL_SHA256_LEN];
	unsigned n = 0;
	if (EVP_Digest(data, len, d, &n, EVP_sha256(), NULL) != 1 || n != BL_SHA256_LEN)
		abort();
	bl_hex(d, sizeof(d), out);
}
