/* SHA-256 through OpenSSL's libcrypto (EVP, SHA-NI where the CPU has it), for
 * verifying image blobs and naming them by digest. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define BL_SHA256_LEN	  32
#define BL_SHA256_HEX_LEN 64

typedef struct bl_sha256 {
	void *ctx; /* EVP_MD_CTX; NULL before init and after final/free */
} bl_sha256;

void bl_sha256_init(bl_sha256 *s);
void bl_sha256_update(bl_sha256 *s, const void *data, size_t len);
/* Finishes (and releases) the context. */
void bl_sha256_final(bl_sha256 *s, uint8_t out[BL_SHA256_LEN]);
/* Finishes and writes 64 lowercase hex digits plus a NUL. */
void bl_sha256_final_hex(bl_sha256 *s, char out[BL_SHA256_HEX_LEN + 1]);
/* Releases a context abandoned before final (NULL-safe, idempotent). */
void bl_sha256_free(bl_sha256 *s);
/* Copies a running context (src stays usable). */
void bl_sha256_copy(bl_sha256 *dst, const bl_sha256 *src);
/* One-shot digest of a buffer, as lowercase hex. */
void bl_sha256_hex(const void *data, size_t len, char out[BL_SHA256_HEX_LEN + 1]);
/* Lowercase hex of n bytes into out (2n+1 bytes). */
void bl_hex(const uint8_t *in, size_t n, char *out);
