/* /etc/passwd and /etc/group parsing, ids and exit statuses in the agent. */
#include "bl_cleanup.h"
#include "bl_test.h"
#include "bl_util.h"
#include "../../agent/passwd.h"
#include "../../agent/validate.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char passwd[] = "root:x:0:0:root:/root:/bin/sh\n"
			     "# comment\n"
			     "\n"
			     "broken line without colons\n"
			     "bad:x:notanumber:1::/:/bin/sh\n"
			     "big:x:4294967295:1::/:/bin/sh\n"
			     "alice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
			     "toomany:x:1:1:a:b:c:d:e:f\n"
			     "bob:x:1001:100::/home/bob:/bin/sh";
static const char group[] = "root:x:0:\n"
			    "users:x:100:alice,bob\n"
			    "wheel:x:10:alice\n"
			    "alicegroup:x:1000:\n"
			    "dup:x:10:alice\n"
			    "weird:x:nan:alice\n";

static void test_passwd_find(void)
{
	agent_pwent pw;
	CU_ASSERT_EQUAL(agent_passwd_find(passwd, strlen(passwd), "alice", 0, &pw), 1);
	CU_ASSERT_EQUAL(pw.uid, 1000);
	CU_ASSERT_STRING_EQUAL(pw.home, "/home/alice");
	CU_ASSERT_EQUAL(agent_passwd_find(passwd, strlen(passwd), "bob", 0, &pw), 1);
	CU_ASSERT_EQUAL(pw.gid, 100);
	CU_ASSERT_EQUAL(agent_passwd_find(passwd, strlen(passwd), NULL, 0, &pw), 1);
	CU_ASSERT_STRING_EQUAL(pw.name, "root");
	CU_ASSERT_EQUAL(agent_passwd_find(passwd, strlen(passwd), "bad", 0, &pw), 0);
	CU_ASSERT_EQUAL(agent_passwd_find(passwd, strlen(passwd), "big", 0, &pw), 0);
	CU_ASSERT_EQUAL(agent_passwd_find(passwd, strlen(passwd), "toomany", 0, &pw), 0);
	CU_ASSERT_EQUAL(agent_passwd_find(passwd, strlen(passwd), "ali", 0, &pw), 0);
	CU_ASSERT_EQUAL(agent_passwd_find(NULL, 0, "root", 0, &pw), 0);
	/* an embedded NUL makes the line invalid, not a shorter one */
	const char nul[] = "eve\0:x:5:5::/:/bin/sh\n";
	CU_ASSERT_EQUAL(agent_passwd_find(nul, sizeof(nul) - 1, "eve", 0, &pw), 0);
}

static void test_group(void)
{
	uint32_t gid = 0;
	gid_t gids[8];
	CU_ASSERT_EQUAL(agent_group_find(group, strlen(group), "wheel", &gid), 1);
	CU_ASSERT_EQUAL(gid, 10);
	CU_ASSERT_EQUAL(agent_group_find(group, strlen(group), "nope", &gid), 0);
	CU_ASSERT_EQUAL(agent_group_find(group, strlen(group), "weird", &gid), 0);
	size_t n = agent_group_members(group, strlen(group), "alice", gids, 8);
	CU_ASSERT_EQUAL(n, 2); /* users, wheel; "dup" repeats gid 10 */
	CU_ASSERT_EQUAL(agent_group_members(group, strlen(group), "alice", gids, 1), 1);
	CU_ASSERT_EQUAL(agent_group_members(group, strlen(group), "bo", gids, 8), 0);
}

static void test_resolve(void)
{
	_cleanup_free_ agent_user *u = bl_malloc0(sizeof(*u));
	bl_error_t err = BL_ERROR_INIT;
	size_t pl = strlen(passwd), gl = strlen(group);
	CU_ASSERT_EQUAL(agent_user_resolve_buf("alice", passwd, pl, group, gl, u, &err), 0);
	CU_ASSERT(u->uid == 1000 && u->gid == 1000 && u->n_gids == 2);
	CU_ASSERT_STRING_EQUAL(u->home, "/home/alice");
	CU_ASSERT_EQUAL(agent_user_resolve_buf("alice:wheel", passwd, pl, group, gl, u, &err), 0);
	CU_ASSERT_EQUAL(u->gid, 10);
	CU_ASSERT_EQUAL(agent_user_resolve_buf("1001", passwd, pl, group, gl, u, &err), 0);
	CU_ASSERT(u->uid == 1001 && u->gid == 100);
	CU_ASSERT_EQUAL(agent_user_resolve_buf("5000:6000", passwd, pl, group, gl, u, &err), 0);
	CU_ASSERT(u->uid == 5000 && u->gid == 6000 && u->n_gids == 0 && !u->home[0]);
	CU_ASSERT_EQUAL(agent_user_resolve_buf("5000", NULL, 0, NULL, 0, u, &err), 0);
	CU_ASSERT_EQUAL(agent_user_resolve_buf("mallory", passwd, pl, group, gl, u, &err),
			-BL_ENOTFOUND);
	CU_ASSERT_EQUAL(agent_user_resolve_buf("alice:nogroup", passwd, pl, group, gl, u, &err),
			-BL_ENOTFOUND);
	CU_ASSERT(agent_user_resolve_buf("", passwd, pl, group, gl, u, &err) < 0);
	CU_ASSERT(agent_user_resolve_buf(":", passwd, pl, group, gl, u, &err) < 0);
	CU_ASSERT(agent_user_resolve_buf("alice:", passwd, pl, group, gl, u, &err) < 0);
	CU_ASSERT(agent_user_resolve_buf("-1", passwd, pl, group, gl, u, &err) < 0);
}

static void test_read_in_root(void)
{
	_cleanup_free_ char *dir = bl_test_tmpdir("agent-root");
	_cleanup_free_ char *etc = bl_asprintf("%s/etc", dir);
	_cleanup_free_ char *pw = bl_asprintf("%s/etc/passwd", dir);
	_cleanup_free_ char *gr = bl_asprintf("%s/etc/group", dir);
	_cleanup_free_ char *out = bl_asprintf("%s/outside", dir);
	CU_ASSERT_EQUAL(mkdir(etc, 0755), 0);
	CU_ASSERT_EQUAL(bl_write_file(out, "x:x:7:7::/:/bin/sh\n", 19, 0644, NULL), 0);
	/* /etc/passwd -> /outside resolves inside the root, ../../ cannot escape */
	CU_ASSERT_EQUAL(symlink("../../../../outside", pw), 0);
	CU_ASSERT_EQUAL(mkfifo(gr, 0644), 0);
	_cleanup_close_ int rootfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	char *buf = NULL;
	size_t len = 0;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(agent_read_in_root(rootfd, "/etc/passwd", 1024, &buf, &len, &err), 0);
	CU_ASSERT(buf && len == 19);
	free(buf);
	buf = NULL;
	/* a FIFO must not block the agent */
	CU_ASSERT(agent_read_in_root(rootfd, "/etc/group", 1024, &buf, &len, &err) < 0);
	CU_ASSERT_EQUAL(agent_read_in_root(rootfd, "/etc/none", 1024, &buf, &len, &err), 0);
	CU_ASSERT_PTR_NULL(buf);
	CU_ASSERT(agent_read_in_root(rootfd, "/outside", 5, &buf, &len, &err) < 0);
	_cleanup_free_ agent_user *u = bl_malloc0(sizeof(*u));
	CU_ASSERT(agent_user_resolve(rootfd, "x", u, &err) < 0); /* group is a FIFO */
	(void)unlink(gr);
	CU_ASSERT_EQUAL(agent_user_resolve(rootfd, "x", u, &err), 0);
	CU_ASSERT_EQUAL(u->uid, 7);
	(void)bl_rm_rf(dir, NULL);
}

static void test_ids(void)
{
	CU_ASSERT(agent_valid_id("abc-DEF_1.2"));
	CU_ASSERT_FALSE(agent_valid_id(""));
	CU_ASSERT_FALSE(agent_valid_id("."));
	CU_ASSERT_FALSE(agent_valid_id(".."));
	CU_ASSERT_FALSE(agent_valid_id("a/b"));
	CU_ASSERT_FALSE(agent_valid_id("a b"));
	CU_ASSERT_FALSE(agent_valid_id(NULL));
	char id[70];
	memset(id, 'a', sizeof(id));
	id[64] = '\0';
	CU_ASSERT(agent_valid_id(id));
	id[64] = 'a';
	id[65] = '\0';
	CU_ASSERT_FALSE(agent_valid_id(id));
	CU_ASSERT(agent_valid_exec_id(""));
	CU_ASSERT(agent_valid_exec_id("exec-1"));
	CU_ASSERT_FALSE(agent_valid_exec_id("../x"));
	CU_ASSERT(agent_valid_subpath(""));
	CU_ASSERT(agent_valid_subpath("images/abc/rootfs"));
	CU_ASSERT(agent_valid_subpath("a/.b/c.."));
	CU_ASSERT_FALSE(agent_valid_subpath("/abs"));
	CU_ASSERT_FALSE(agent_valid_subpath("a/../b"));
	CU_ASSERT_FALSE(agent_valid_subpath(".."));
	CU_ASSERT_FALSE(agent_valid_subpath("a//b"));
	CU_ASSERT_FALSE(agent_valid_subpath("a/./b"));
	CU_ASSERT_FALSE(agent_valid_subpath("a/"));
	CU_ASSERT(agent_valid_devname("vdb"));
	CU_ASSERT_FALSE(agent_valid_devname("../vda"));
	CU_ASSERT_FALSE(agent_valid_devname("VDB"));
	CU_ASSERT(agent_valid_hostname("box-1.local"));
	CU_ASSERT_FALSE(agent_valid_hostname("a b"));
	CU_ASSERT_FALSE(agent_valid_hostname(""));
}

static void test_exit_status(void)
{
	int sig = -1;
	CU_ASSERT_EQUAL(agent_exit_status(0, &sig), 0);
	CU_ASSERT_EQUAL(sig, 0);
	CU_ASSERT_EQUAL(agent_exit_status(3 << 8, &sig), 3);
	CU_ASSERT_EQUAL(agent_exit_status(255 << 8, &sig), 255);
	CU_ASSERT_EQUAL(agent_exit_status(SIGKILL, &sig), 137);
	CU_ASSERT_EQUAL(sig, SIGKILL);
	CU_ASSERT_EQUAL(agent_exit_status(SIGTERM | 0x80, &sig), 143); /* core dumped */
	CU_ASSERT_EQUAL(sig, SIGTERM);
	CU_ASSERT_EQUAL(agent_exit_status(SIGSEGV, NULL), 139);
	uint32_t v;
	CU_ASSERT(agent_parse_u32("4294967294", 10, &v) && v == 4294967294u);
	CU_ASSERT_FALSE(agent_parse_u32("4294967295", 10, &v));
	CU_ASSERT_FALSE(agent_parse_u32("+1", 2, &v));
	CU_ASSERT_FALSE(agent_parse_u32("", 0, &v));
	CU_ASSERT_FALSE(agent_parse_u32("12345678901", 11, &v));
}

int main(void)
{
	static const bl_test_case tests[] = {
	    {"passwd_find", test_passwd_find},
	    {"group", test_group},
	    {"resolve", test_resolve},
	    {"read_in_root", test_read_in_root},
	    {"ids", test_ids},
	    {"exit_status", test_exit_status},
	    {NULL, NULL},
	};
	return bl_test_run("agent_passwd", tests);
}
