/* Compact SHA-256 (FIPS 180-4) for verifying image blob digests; no libcrypto. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define BL_SHA256_LEN	  32
#define BL_SHA256_HEX_LEN 64

typedef struct bl_sha256 {
	uint32_t h[8];
	uint64_t total; /* bytes hashed so far */
	uint8_t buf[64];
	size_t used; /* bytes pending in buf */
} bl_sha256;

void bl_sha256_init(bl_sha256 *s);
void bl_sha256_update(bl_sha256 *s, const void *data, size_t len);
void bl_sha256_final(bl_sha256 *s, uint8_t out[BL_SHA256_LEN]);
/* Finishes and writes 64 lowercase hex digits plus a NUL. */
void bl_sha256_final_hex(bl_sha256 *s, char out[BL_SHA256_HEX_LEN + 1]);
/* One-shot digest of a buffer, as lowercase hex. */
void bl_sha256_hex(const void *data, size_t len, char out[BL_SHA256_HEX_LEN + 1]);
