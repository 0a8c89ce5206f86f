/*
 * libFuzzer target for the host side of `boxlite cp ID:PATH` (runtime/copy.c):
 * the bytes are the archive a guest sends; libarchive reads it and
 * bl_copy_extract applies the rules into a scratch directory. After every
 * input nothing may exist outside that directory's "top" (checked: the
 * scratch parent holds only the destination).
 */
#include "bl_util.h"
#include "copy.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *parent, *dest;

static int entries(const char *dir)
{
	DIR *d = opendir(dir);
	int n = 0;
	struct dirent *de;
	while (d && (de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	if (d)
		closedir(d);
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!parent) {
		char tmpl[] = "/dev/shm/boxlite-fuzz-copy-XXXXXX"; /* tmpfs: fast */
		parent = bl_strdup(mkdtemp(tmpl));
		dest = bl_asprintf("%s/dest", parent);
	}
	(void)bl_rm_rf(dest, NULL);
	if (mkdir(dest, 0755) < 0)
		abort();
	struct archive *a = archive_read_new();
	archive_read_support_format_tar(a);
	archive_read_support_format_cpio(a);
	archive_read_support_filter_gzip(a);
	bl_copy_limits lim = {.max_bytes = 1 << 20, .max_entries = 256};
	bl_error_t err = BL_ERROR_INIT;
	int r = -1;
	if (archive_read_open_memory(a, data, size) == ARCHIVE_OK)
		r = bl_copy_extract(a, dest, "top", &lim, &err);
	archive_read_free(a);
	/* Only dest in the parent; in dest only "top", and only on success. */
	if (entries(parent) != 1 || entries(dest) != (r == 0 ? 1 : 0))
		abort();
	return 0;
}
