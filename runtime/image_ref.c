#include "image_ref.h"

#include "bl_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* One repository path component: alnum runs joined by '.', '_', '__' or '-'+. */
static bool component_ok(const char *s, size_t n)
{
	if (n == 0 || !is_lower_alnum(s[0]) || !is_lower_alnum(s[n - 1]))
		return false;
	for (size_t i = 0; i < n;) {
		if (is_lower_alnum(s[i])) {
			i++;
			continue;
		}
		size_t j = i;
		while (j < n && !is_lower_alnum(s[j]))
			j++;
		size_t run = j - i;
		bool dashes = strspn(s + i, "-") >= run;
		if (!(run == 1 && (s[i] == '.' || s[i] == '_')) &&
		    !(run == 2 && !memcmp(s + i, "__", 2)) && !dashes)
			return false;
		i = j;
	}
	return true;
}

/* host[:port]: DNS labels of [A-Za-z0-9-] split by '.', or an IPv6 literal in
 * brackets; the port all digits. */
static bool domain_ok(const char *s, size_t n)
{
	if (n == 0 || n > 255)
		return false;
	const char *colon = NULL;
	size_t host_n = n;
	if (s[0] == '[') {
		const char *close = memchr(s, ']', n);
		if (!close)
			return false;
		for (const char *p = s + 1; p < close; p++)
			if (!strchr("0123456789abcdefABCDEF:.", *p))
				return false;
		host_n = (size_t)(close - s) + 1;
		if (host_n < n && s[host_n] != ':')
			return false;
		colon = host_n < n ? s + host_n : NULL;
	} else {
		colon = memchr(s, ':', n);
		host_n = colon ? (size_t)(colon - s) : n;
		if (host_n == 0)
			return false;
		for (size_t i = 0; i < host_n; i++) {
			char c = s[i];
			bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
				  (c >= '0' && c <= '9') || c == '-' || c == '.';
			if (!ok || (c == '.' && (i == 0 || s[i - 1] == '.' || i + 1 == host_n)) ||
			    (c == '-' &&
			     (i == 0 || s[i - 1] == '.' || i + 1 == host_n || s[i + 1] == '.')))
				return false;
		}
	}
	if (colon) {
		size_t pn = n - (size_t)(colon - s) - 1;
		if (pn == 0 || pn > 5)
			return false;
		for (size_t i = 1; i <= pn; i++)
			if (colon[i] < '0' || colon[i] > '9')
				return false;
		if (atoi(colon + 1) > 65535)
			return false;
	}
	return true;
}

static bool tag_ok(const char *s, size_t n)
{
	if (n == 0 || n > 128)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool w = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			 (c >= '0' && c <= '9') || c == '_';
		if (!w && (i == 0 || (c != '.' && c != '-')))
			return false;
	}
	return true;
}

static bool first_is_domain(const char *s, size_t n)
{
	return memchr(s, '.', n) || memchr(s, ':', n) || (n == 9 && !memcmp(s, "localhost", 9)) ||
	       (n && s[0] == '[');
}

bool bl_image_ref_has_domain(const char *s)
{
	const char *slash = s ? strchr(s, '/') : NULL;
	return slash && first_is_domain(s, (size_t)(slash - s));
}

int bl_image_ref_parse(const char *s, bl_image_ref *ret, bl_error_t *err)
{
	bl_image_ref r = {0};
	if (!s || !*s)
		return bl_set_error(err, BL_EINVAL, "empty image reference");
	size_t len = strlen(s);
	if (len > BL_REF_NAME_MAX + 1 + 128 + 1 + 71)
		return bl_set_error(err, BL_EINVAL, "image reference too long");
	const char *at = strchr(s, '@');
	size_t name_end = at ? (size_t)(at - s) : len;
	if (at) {
		const char *d = at + 1;
		size_t dn = len - name_end - 1;
		if (dn != 71 || memcmp(d, "sha256:", 7) != 0)
			return bl_set_error(
			    err, BL_EINVAL,
			    "image reference '%.300s': digest must be sha256:<64 hex>", s);
		for (size_t i = 7; i < dn; i++)
			if (!((d[i] >= '0' && d[i] <= '9') || (d[i] >= 'a' && d[i] <= 'f')))
				return bl_set_error(err, BL_EINVAL,
						    "image reference '%.300s': bad digest", s);
		memcpy(r.digest_hex, d + 7, 64);
	}
	/* The tag is after the last ':' that comes after the last '/'. */
	const char *last_slash = memrchr(s, '/', name_end);
	const char *tag_colon = memrchr(last_slash ? last_slash : s, ':',
					name_end - (size_t)((last_slash ? last_slash : s) - s));
	size_t repo_end = name_end;
	if (tag_colon) {
		size_t tn = name_end - (size_t)(tag_colon - s) - 1;
		if (!tag_ok(tag_colon + 1, tn))
			return bl_set_error(err, BL_EINVAL, "image reference '%.300s': bad tag", s);
		memcpy(r.tag, tag_colon + 1, tn);
		repo_end = (size_t)(tag_colon - s);
	}
	const char *slash = memchr(s, '/', repo_end);
	const char *path = s;
	if (slash && first_is_domain(s, (size_t)(slash - s))) {
		size_t dn = (size_t)(slash - s);
		if (!domain_ok(s, dn))
			return bl_set_error(err, BL_EINVAL,
					    "image reference '%.300s': bad registry host", s);
		memcpy(r.domain, s, dn);
		path = slash + 1;
	} else {
		strcpy(r.domain, BL_REF_DOCKER_HUB);
	}
	if (!strcmp(r.domain, "index.docker.io") || !strcmp(r.domain, "registry-1.docker.io"))
		strcpy(r.domain, BL_REF_DOCKER_HUB);
	size_t pn = repo_end - (size_t)(path - s);
	bool hub = !strcmp(r.domain, BL_REF_DOCKER_HUB);
	bool one = !memchr(path, '/', pn);
	size_t total = strlen(r.domain) + 1 + (hub && one ? 8 : 0) + pn;
	if (pn == 0 || total > BL_REF_NAME_MAX)
		return bl_set_error(err, BL_EINVAL, "image reference '%.300s': bad repository name",
				    s);
	for (const char *p = path, *e; p <= s + repo_end; p = e + 1) {
		e = memchr(p, '/', (size_t)(s + repo_end - p));
		if (!e)
			e = s + repo_end;
		if (!component_ok(p, (size_t)(e - p)))
			return bl_set_error(err, BL_EINVAL,
					    "image reference '%.300s': bad repository name "
					    "(lowercase letters, digits, '.', '_', '-')",
					    s);
	}
	snprintf(r.path, sizeof(r.path), "%s%.*s", hub && one ? "library/" : "", (int)pn, path);
	if (!r.tag[0] && !r.digest_hex[0])
		strcpy(r.tag, "latest");
	*ret = r;
	return 0;
}

bool bl_image_ref_valid(const char *s)
{
	bl_image_ref r;
	return bl_image_ref_parse(s, &r, NULL) == 0;
}

char *bl_image_ref_repo(const bl_image_ref *r)
{
	return bl_asprintf("%s/%s", r->domain, r->path);
}

char *bl_image_ref_string(const bl_image_ref *r)
{
	return bl_asprintf("%s/%s%s%s%s%s", r->domain, r->path, r->tag[0] ? ":" : "", r->tag,
			   r->digest_hex[0] ? "@sha256:" : "", r->digest_hex);
}

const char *bl_image_ref_api_host(const bl_image_ref *r)
{
	return strcmp(r->domain, BL_REF_DOCKER_HUB) ? r->domain : "registry-1.docker.io";
}
