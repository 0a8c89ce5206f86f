/*
 * bl_copy_extract (runtime/copy.c), the host side of `boxlite cp ID:PATH`,
 * fed hostile archives built here with libarchive. Finding 1 of the review:
 * a guest-made tar unpacked by the host's GNU tar as root created device
 * nodes, files outside the named path and symlinks to /etc. Each case is an
 * archive a hostile guest could send; must hold: the copy is refused (or the
 * offending bit dropped) and nothing at all is left in or beside the
 * destination.
 */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include "bl_cleanup.h"
#include "bl_test.h"
#include "bl_util.h"
#include "copy.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

struct ent {
	const char *name;
	mode_t type;
	mode_t perm;
	const char *data; /* regular file */
	size_t size;	  /* data bytes (0: strlen(data)); > strlen: zeros */
	const char *link; /* symlink target or hard link name */
	bool hard;
	dev_t rdev;
};

static char *build(const struct ent *es, size_t *ret_len)
{
	size_t cap = 64 << 20;
	char *buf = bl_malloc0(cap);
	struct archive *a = archive_write_new();
	archive_write_set_format_pax_restricted(a);
	size_t used = 0;
	CU_ASSERT_EQUAL_FATAL(archive_write_open_memory(a, buf, cap, &used), ARCHIVE_OK);
	for (; es->name; es++) {
		struct archive_entry *e = archive_entry_new();
		archive_entry_set_pathname(e, es->name);
		archive_entry_set_filetype(e, es->type);
		archive_entry_set_perm(e, es->perm ? es->perm : 0644);
		size_t size =
		    es->type == AE_IFREG ? (es->size ? es->size : strlen(es->data ?: "")) : 0;
		if (es->hard) {
			archive_entry_set_hardlink(e, es->link);
			size = 0;
		} else if (es->type == AE_IFLNK) {
			archive_entry_set_symlink(e, es->link);
		}
		if (es->rdev)
			archive_entry_set_rdev(e, es->rdev);
		archive_entry_set_size(e, (la_int64_t)size);
		CU_ASSERT(archive_write_header(a, e) == ARCHIVE_OK);
		if (size) {
			char *d = bl_malloc0(size);
			if (es->data)
				memcpy(d, es->data,
				       strlen(es->data) < size ? strlen(es->data) : size);
			archive_write_data(a, d, size);
			free(d);
		}
		archive_entry_free(e);
	}
	archive_write_close(a);
	archive_write_free(a);
	*ret_len = used;
	return buf;
}

static char *dest_parent, *dest;

static void fresh_dest(void)
{
	if (dest_parent)
		(void)bl_rm_rf(dest_parent, NULL);
	free(dest_parent);
	free(dest);
	dest_parent = bl_test_tmpdir("copy");
	dest = bl_asprintf("%s/dest", dest_parent);
	CU_ASSERT_EQUAL_FATAL(mkdir(dest, 0755), 0);
}

static int count_entries(const char *dir)
{
	_cleanup_closedir_ DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;
	while (d && (de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	return n;
}

static int extract(const struct ent *es, const bl_copy_limits *lim, bl_error_t *err)
{
	size_t len = 0;
	_cleanup_free_ char *buf = build(es, &len);
	struct archive *a = archive_read_new();
	archive_read_support_format_tar(a);
	CU_ASSERT_EQUAL_FATAL(archive_read_open_memory(a, buf, len), ARCHIVE_OK);
	int r = bl_copy_extract(a, dest, "top", lim, err);
	archive_read_free(a);
	return r;
}

/* A hostile archive: refused, and dest (and its parent) hold nothing new. */
static void refused(const struct ent *es, const char *why)
{
	fresh_dest();
	bl_error_t err = BL_ERROR_INIT;
	int r = extract(es, NULL, &err);
	if (r == 0)
		printf("\n  accepted: %s\n", why);
	CU_ASSERT(r < 0);
	CU_ASSERT_EQUAL(count_entries(dest), 0);
	CU_ASSERT_EQUAL(count_entries(dest_parent), 1); /* dest only */
}

static void test_good_tree(void)
{
	fresh_dest();
	const struct ent es[] = {{"top/", AE_IFDIR, 0755},
				 {"top/sub/", AE_IFDIR, 0750},
				 {"top/sub/f", AE_IFREG, 0640, "hello"},
				 {"./top/l", AE_IFLNK, 0777, .link = "sub/f"},
				 {"top/sub/up", AE_IFLNK, 0777, .link = "../l"},
				 {NULL}};
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(extract(es, NULL, &err), 0);
	_cleanup_free_ char *f = bl_asprintf("%s/top/sub/f", dest);
	_cleanup_free_ char *data = NULL;
	CU_ASSERT_EQUAL(bl_read_file(f, 100, &data, NULL, NULL), 0);
	CU_ASSERT_STRING_EQUAL(data ? data : "", "hello");
	struct stat st;
	CU_ASSERT(stat(f, &st) == 0 && (st.st_mode & 07777) == 0640);
	_cleanup_free_ char *l = bl_asprintf("%s/top/l", dest);
	CU_ASSERT(lstat(l, &st) == 0 && S_ISLNK(st.st_mode));
	CU_ASSERT_EQUAL(count_entries(dest), 1); /* top only: no temporary left */
	/* The same again: the name exists, nothing is replaced. */
	err = (bl_error_t)BL_ERROR_INIT;
	CU_ASSERT_EQUAL(extract(es, NULL, &err), -BL_EEXIST);
}

static void test_names_outside(void)
{
	const struct ent other[] = {{"top/", AE_IFDIR}, {"other", AE_IFREG, 0, "x"}, {NULL}};
	refused(other, "a name beside the copied one");
	const struct ent ssh[] = {
	    {"top/", AE_IFDIR}, {".ssh/authorized_keys", AE_IFREG, 0600, "ssh-rsa AAAA"}, {NULL}};
	refused(ssh, ".ssh/authorized_keys");
	const struct ent dotdot[] = {{"top/../../x", AE_IFREG, 0, "x"}, {NULL}};
	refused(dotdot, "..");
	const struct ent abs[] = {{"/etc/boxlite-test-x", AE_IFREG, 0, "x"}, {NULL}};
	refused(abs, "an absolute name");
	CU_ASSERT(access("/etc/boxlite-test-x", F_OK) < 0);
	const struct ent prefix[] = {{"topx/f", AE_IFREG, 0, "x"}, {NULL}};
	refused(prefix, "a name that only starts like top");
}

static void test_special_files(void)
{
	const struct ent chr[] = {
	    {"top/", AE_IFDIR}, {"top/sda", AE_IFCHR, 0644, .rdev = makedev(1, 1)}, {NULL}};
	refused(chr, "a device node (/dev/mem)");
	const struct ent blk[] = {
	    {"top/", AE_IFDIR}, {"top/vda", AE_IFBLK, 0644, .rdev = makedev(254, 0)}, {NULL}};
	refused(blk, "a block device");
	const struct ent fifo[] = {{"top/", AE_IFDIR}, {"top/p", AE_IFIFO, 0644}, {NULL}};
	refused(fifo, "a FIFO");
	const struct ent hard[] = {{"top/", AE_IFDIR},
				   {"top/h", AE_IFREG, 0644, .link = "/etc/shadow", .hard = true},
				   {NULL}};
	refused(hard, "a hard link out");
}

static void test_setuid_dropped(void)
{
	fresh_dest();
	const struct ent es[] = {
	    {"top/", AE_IFDIR, 01777}, {"top/su", AE_IFREG, 06755, "#!/bin/sh\n"}, {NULL}};
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(extract(es, NULL, &err), 0);
	_cleanup_free_ char *f = bl_asprintf("%s/top/su", dest);
	_cleanup_free_ char *d = bl_asprintf("%s/top", dest);
	struct stat st;
	CU_ASSERT(stat(f, &st) == 0 && (st.st_mode & 07777) == 0755);
	CU_ASSERT(stat(d, &st) == 0 && !(st.st_mode & 07000));
}

/* Symlinks leaving the copy are left out (the rest is copied): nobody
 * following them later leaves the copy. */
static void left_out(const struct ent *es, const char *why)
{
	fresh_dest();
	bl_error_t err = BL_ERROR_INIT;
	int r = extract(es, NULL, &err);
	if (r < 0)
		printf("\n  refused (%s): %s\n", why, err.msg);
	CU_ASSERT_EQUAL(r, 0);
	_cleanup_free_ char *lnk = bl_asprintf("%s/top/lnk", dest);
	_cleanup_free_ char *f = bl_asprintf("%s/top/f", dest);
	struct stat st;
	CU_ASSERT(lstat(lnk, &st) < 0 && errno == ENOENT);
	CU_ASSERT(lstat(f, &st) == 0 && S_ISREG(st.st_mode));
	CU_ASSERT_EQUAL(count_entries(dest_parent), 1); /* dest only */
}

static void test_symlink_tricks(void)
{
	const struct ent out[] = {{"top/", AE_IFDIR},
				  {"top/lnk", AE_IFLNK, .link = "/etc"},
				  {"top/f", AE_IFREG, 0644, "x"},
				  {NULL}};
	left_out(out, "a symlink to /etc");
	const struct ent up[] = {{"top/", AE_IFDIR},
				 {"top/lnk", AE_IFLNK, .link = "../../../etc"},
				 {"top/f", AE_IFREG, 0644, "x"},
				 {NULL}};
	left_out(up, "a symlink climbing out");
	const struct ent sib[] = {{"top/", AE_IFDIR},
				  {"top/lnk", AE_IFLNK, .link = "../x"},
				  {"top/f", AE_IFREG, 0644, "x"},
				  {NULL}};
	left_out(sib, "a symlink to a sibling of top");
	/* a symlink leaving, then a file through it: refused */
	const struct ent out_through[] = {{"top/", AE_IFDIR},
					  {"top/lnk", AE_IFLNK, .link = "/etc"},
					  {"top/lnk/passwd", AE_IFREG, 0644, "x"},
					  {NULL}};
	refused(out_through, "a file through a symlink to /etc");
	/* a symlink inside, then a file through it */
	const struct ent through[] = {{"top/", AE_IFDIR},
				      {"top/sub/", AE_IFDIR},
				      {"top/lnk", AE_IFLNK, .link = "sub"},
				      {"top/lnk/passwd", AE_IFREG, 0644, "x"},
				      {NULL}};
	refused(through, "a file through a symlink");
	/* a symlink, then a file of the same name (write through it) */
	const struct ent same[] = {{"top/", AE_IFDIR},
				   {"top/sub/", AE_IFDIR},
				   {"top/f", AE_IFLNK, .link = "sub/g"},
				   {"top/f", AE_IFREG, 0644, "x"},
				   {NULL}};
	refused(same, "a file over a symlink");
	const struct ent topl[] = {{"top", AE_IFLNK, .link = "/"}, {NULL}};
	refused(topl, "the top entry a symlink");
}

static void test_limits(void)
{
	fresh_dest();
	const struct ent big[] = {
	    {"top/", AE_IFDIR}, {"top/zero", AE_IFREG, 0644, "", 3 << 20}, {NULL}};
	bl_copy_limits lim = {.max_bytes = 1 << 20};
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT(extract(big, &lim, &err) < 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "cut off"));
	CU_ASSERT_EQUAL(count_entries(dest), 0);
	fresh_dest();
	struct ent many[40];
	char names[40][32];
	many[0] = (struct ent){"top/", AE_IFDIR};
	for (int i = 1; i < 39; i++) {
		snprintf(names[i], sizeof(names[i]), "top/f%d", i);
		many[i] = (struct ent){names[i], AE_IFREG, 0644, "x"};
	}
	many[39] = (struct ent){NULL};
	lim = (bl_copy_limits){.max_entries = 10};
	err = (bl_error_t)BL_ERROR_INIT;
	CU_ASSERT(extract(many, &lim, &err) < 0);
	CU_ASSERT_EQUAL(count_entries(dest), 0);
}

static void test_garbage(void)
{
	fresh_dest();
	static const char junk[] = "this is not a tar archive at all, just bytes from a guest";
	struct archive *a = archive_read_new();
	archive_read_support_format_tar(a);
	bl_error_t err = BL_ERROR_INIT;
	/* refused when opened (no format bids) or when read */
	if (archive_read_open_memory(a, junk, sizeof(junk)) == ARCHIVE_OK)
		CU_ASSERT(bl_copy_extract(a, dest, "top", NULL, &err) < 0);
	archive_read_free(a);
	CU_ASSERT_EQUAL(count_entries(dest), 0);
}

int main(void)
{
	static const bl_test_case cases[] = {
	    {"good_tree", test_good_tree},
	    {"names_outside", test_names_outside},
	    {"special_files", test_special_files},
	    {"setuid_dropped", test_setuid_dropped},
	    {"symlink_tricks", test_symlink_tricks},
	    {"limits", test_limits},
	    {"garbage", test_garbage},
	    {NULL, NULL},
	};
	int rc = bl_test_run("copy", cases);
	if (dest_parent)
		(void)bl_rm_rf(dest_parent, NULL);
	free(dest_parent);
	free(dest);
	return rc;
}
