#include "bl_image_gen.h"
#include "bl_cleanup.h"
#include "bl_util.h"
#include "bl_digest.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void die(const char *what)
{
	fprintf(stderr, "bl_image_gen: %s\n", what);
	abort();
}

void bl_gen_write(const char *path, const void *data, size_t len)
{
	_cleanup_free_ char *parent = bl_strdup(path);
	char *slash = strrchr(parent, '/');
	if (slash) {
		*slash = '\0';
		if (bl_mkdir_p(parent, 0755, NULL) < 0)
			die(parent);
	}
	if (bl_write_file(path, data, len, 0644, NULL) < 0)
		die(path);
}

void bl_gen_tar(const bl_gen_entry *entries, bool gzip, void **ret, size_t *ret_len)
{
	size_t cap = 1 << 20;
	for (const bl_gen_entry *e = entries; e->path; e++)
		cap += 1024 + (e->data ? strlen(e->data) : 0);
	char *buf = bl_malloc0(cap);
	size_t used = 0;
	struct archive *a = archive_write_new();
	archive_write_set_format_pax_restricted(a);
	if (gzip) {
		archive_write_add_filter_gzip(a);
		/* No mtime in the gzip header: the same entries, the same blob. */
		(void)archive_write_set_options(a, "gzip:!timestamp");
	}
	archive_write_set_bytes_in_last_block(a, 1);
	if (archive_write_open_memory(a, buf, cap, &used) != ARCHIVE_OK)
		die(archive_error_string(a));
	for (const bl_gen_entry *e = entries; e->path; e++) {
		struct archive_entry *ae = archive_entry_new();
		archive_entry_set_pathname(ae, e->path);
		archive_entry_set_mtime(ae, 1700000000, 0);
		size_t len = 0;
		switch (e->type) {
		case BL_GEN_FILE:
			len = e->data ? strlen(e->data) : 0;
			archive_entry_set_filetype(ae, AE_IFREG);
			archive_entry_set_perm(ae, e->mode ? e->mode : 0644);
			archive_entry_set_size(ae, (la_int64_t)len);
			break;
		case BL_GEN_DIR:
			archive_entry_set_filetype(ae, AE_IFDIR);
			archive_entry_set_perm(ae, e->mode ? e->mode : 0755);
			break;
		case BL_GEN_SYMLINK:
			archive_entry_set_filetype(ae, AE_IFLNK);
			archive_entry_set_perm(ae, 0777);
			archive_entry_set_symlink(ae, e->data);
			break;
		case BL_GEN_HARDLINK:
			archive_entry_set_filetype(ae, AE_IFREG);
			archive_entry_set_perm(ae, 0644);
			archive_entry_set_hardlink(ae, e->data);
			break;
		case BL_GEN_CHARDEV:
			archive_entry_set_filetype(ae, AE_IFCHR);
			archive_entry_set_perm(ae, 0666);
			archive_entry_set_rdevmajor(ae, 1);
			archive_entry_set_rdevminor(ae, 3);
			break;
		}
		if (archive_write_header(a, ae) != ARCHIVE_OK)
			die(archive_error_string(a));
		if (len && archive_write_data(a, e->data, len) != (la_ssize_t)len)
			die(archive_error_string(a));
		archive_entry_free(ae);
	}
	if (archive_write_close(a) != ARCHIVE_OK)
		die(archive_error_string(a));
	archive_write_free(a);
	*ret = buf;
	*ret_len = used;
}

void bl_gen_blob(const char *dir, const void *data, size_t len, char hex[65])
{
	bl_sha256_hex(data, len, hex);
	_cleanup_free_ char *path = bl_asprintf("%s/blobs/sha256/%s", dir, hex);
	bl_gen_write(path, data, len);
}

static struct json_object *desc(const char *media, const char *hex, size_t size)
{
	struct json_object *o = json_object_new_object();
	_cleanup_free_ char *dg = bl_asprintf("sha256:%s", hex);
	json_object_object_add(o, "mediaType", json_object_new_string(media));
	json_object_object_add(o, "digest", json_object_new_string(dg));
	json_object_object_add(o, "size", json_object_new_int64((int64_t)size));
	return o;
}

static char *to_text(struct json_object *o)
{
	char *s = bl_strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return s;
}

/* The image config document; diff_ids from the uncompressed layers. */
static char *config_doc(const bl_gen_layer *layers, size_t n, const char *config_json)
{
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "architecture", json_object_new_string("amd64"));
	json_object_object_add(o, "os", json_object_new_string("linux"));
	if (config_json) {
		struct json_object *c = json_tokener_parse(config_json);
		if (!c)
			die("bad config_json");
		json_object_object_add(o, "config", c);
	}
	struct json_object *rootfs = json_object_new_object(), *ids = json_object_new_array();
	for (size_t i = 0; i < n; i++) {
		void *tar;
		size_t len;
		char hex[65];
		bl_gen_tar(layers[i].entries, false, &tar, &len);
		bl_sha256_hex(tar, len, hex);
		free(tar);
		_cleanup_free_ char *dg = bl_asprintf("sha256:%s", hex);
		json_object_array_add(ids, json_object_new_string(dg));
	}
	json_object_object_add(rootfs, "type", json_object_new_string("layers"));
	json_object_object_add(rootfs, "diff_ids", ids);
	json_object_object_add(o, "rootfs", rootfs);
	return to_text(o);
}

void bl_gen_oci_layout(const char *dir, const bl_gen_layer *layers, size_t n,
		       const char *config_json, char ret_manifest_hex[65])
{
	char hex[65];
	_cleanup_free_ char *cfg = config_doc(layers, n, config_json);
	bl_gen_blob(dir, cfg, strlen(cfg), hex);
	struct json_object *m = json_object_new_object(), *ls = json_object_new_array();
	json_object_object_add(m, "schemaVersion", json_object_new_int(2));
	json_object_object_add(
	    m, "mediaType", json_object_new_string("application/vnd.oci.image.manifest.v1+json"));
	json_object_object_add(m, "config",
			       desc("application/vnd.oci.image.config.v1+json", hex, strlen(cfg)));
	for (size_t i = 0; i < n; i++) {
		void *tar;
		size_t len;
		bl_gen_tar(layers[i].entries, layers[i].gzip, &tar, &len);
		bl_gen_blob(dir, tar, len, hex);
		free(tar);
		json_object_array_add(ls, desc(layers[i].gzip
						   ? "application/vnd.oci.image.layer.v1.tar+gzip"
						   : "application/vnd.oci.image.layer.v1.tar",
					       hex, len));
	}
	json_object_object_add(m, "layers", ls);
	_cleanup_free_ char *mtext = to_text(m);
	bl_gen_blob(dir, mtext, strlen(mtext), hex);
	if (ret_manifest_hex)
		memcpy(ret_manifest_hex, hex, 65);
	struct json_object *idx = json_object_new_object(), *ms = json_object_new_array();
	json_object_object_add(idx, "schemaVersion", json_object_new_int(2));
	json_object_array_add(
	    ms, desc("application/vnd.oci.image.manifest.v1+json", hex, strlen(mtext)));
	json_object_object_add(idx, "manifests", ms);
	_cleanup_free_ char *itext = to_text(idx);
	_cleanup_free_ char *ipath = bl_asprintf("%s/index.json", dir);
	_cleanup_free_ char *lpath = bl_asprintf("%s/oci-layout", dir);
	const char *layout = "{\"imageLayoutVersion\":\"1.0.0\"}";
	bl_gen_write(ipath, itext, strlen(itext));
	bl_gen_write(lpath, layout, strlen(layout));
}

void bl_gen_oci_layer_hex(const char *dir, size_t i, char hex[65])
{
	_cleanup_free_ char *ipath = bl_asprintf("%s/index.json", dir);
	struct json_object *idx = json_object_from_file(ipath), *ms, *m0, *dg;
	if (!idx || !json_object_object_get_ex(idx, "manifests", &ms) ||
	    !(m0 = json_object_array_get_idx(ms, 0)) ||
	    !json_object_object_get_ex(m0, "digest", &dg))
		die("index.json");
	_cleanup_free_ char *mpath =
	    bl_asprintf("%s/blobs/sha256/%s", dir, json_object_get_string(dg) + 7);
	json_object_put(idx);
	struct json_object *m = json_object_from_file(mpath), *ls, *l, *ldg;
	if (!m || !json_object_object_get_ex(m, "layers", &ls) ||
	    !(l = json_object_array_get_idx(ls, i)) ||
	    !json_object_object_get_ex(l, "digest", &ldg))
		die("manifest");
	memcpy(hex, json_object_get_string(ldg) + 7, 65);
	json_object_put(m);
}

void bl_gen_docker_dir(const char *dir, const bl_gen_layer *layers, size_t n,
		       const char *config_json)
{
	char hex[65];
	_cleanup_free_ char *cfg = config_doc(layers, n, config_json);
	bl_sha256_hex(cfg, strlen(cfg), hex);
	_cleanup_free_ char *cfg_name = bl_asprintf("%s.json", hex);
	_cleanup_free_ char *cfg_path = bl_asprintf("%s/%s", dir, cfg_name);
	bl_gen_write(cfg_path, cfg, strlen(cfg));
	struct json_object *arr = json_object_new_array(), *img = json_object_new_object();
	struct json_object *ls = json_object_new_array(), *tags = json_object_new_array();
	for (size_t i = 0; i < n; i++) {
		void *tar;
		size_t len;
		char id[65];
		bl_gen_tar(layers[i].entries, false, &tar, &len);
		bl_sha256_hex(tar, len, id);
		_cleanup_free_ char *rel = bl_asprintf("%s/layer.tar", id);
		_cleanup_free_ char *path = bl_asprintf("%s/%s", dir, rel);
		bl_gen_write(path, tar, len);
		free(tar);
		json_object_array_add(ls, json_object_new_string(rel));
	}
	json_object_array_add(tags, json_object_new_string("test:latest"));
	json_object_object_add(img, "Config", json_object_new_string(cfg_name));
	json_object_object_add(img, "RepoTags", tags);
	json_object_object_add(img, "Layers", ls);
	json_object_array_add(arr, img);
	_cleanup_free_ char *mtext = to_text(arr);
	_cleanup_free_ char *mpath = bl_asprintf("%s/manifest.json", dir);
	bl_gen_write(mpath, mtext, strlen(mtext));
}

void bl_gen_tar_dir(const char *dir, const char *out, bool gzip)
{
	struct archive *disk = archive_read_disk_new(), *a = archive_write_new();
	archive_write_set_format_pax_restricted(a);
	if (gzip)
		archive_write_add_filter_gzip(a);
	if (archive_write_open_filename(a, out) != ARCHIVE_OK ||
	    archive_read_disk_open(disk, dir) != ARCHIVE_OK)
		die("tar_dir open");
	size_t plen = strlen(dir);
	struct archive_entry *e = archive_entry_new();
	for (;;) {
		int r = archive_read_next_header2(disk, e);
		if (r == ARCHIVE_EOF)
			break;
		if (r != ARCHIVE_OK)
			die(archive_error_string(disk));
		archive_read_disk_descend(disk);
		const char *p = archive_entry_pathname(e);
		if (!p[plen])
			continue;
		_cleanup_free_ char *rel = bl_strdup(p + plen + 1);
		archive_entry_set_pathname(e, rel);
		if (archive_write_header(a, e) != ARCHIVE_OK)
			die(archive_error_string(a));
		if (archive_entry_filetype(e) == AE_IFREG && archive_entry_size(e) > 0) {
			char buf[65536];
			ssize_t k;
			_cleanup_free_ char *full = bl_asprintf("%s/%s", dir, rel);
			int f = open(full, O_RDONLY | O_CLOEXEC);
			if (f < 0)
				die(full);
			while ((k = read(f, buf, sizeof(buf))) > 0)
				archive_write_data(a, buf, (size_t)k);
			close(f);
		}
	}
	archive_entry_free(e);
	archive_read_free(disk);
	archive_write_close(a);
	archive_write_free(a);
}
