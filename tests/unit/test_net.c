/* The network module's untrusted-input parts: allow/deny rules, published
 * ports, and the DNS responder's answers (queries come from the guest). */
#include "bl_cleanup.h"
#include "bl_test.h"
#include "net.h"

#include "vm.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static uint32_t ip(const char *s)
{
	struct in_addr a;
	inet_pton(AF_INET, s, &a);
	return a.s_addr;
}

static void test_rules(void)
{
	bl_net_rule r;
	bool all;
	char *name = NULL;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(bl_net_parse_rule("*", &r, &all, &name, &err), 0);
	CU_ASSERT(all);
	CU_ASSERT_EQUAL(bl_net_parse_rule("host:8080", &r, &all, &name, &err), 0);
	CU_ASSERT(r.loopback && r.port == 8080 && r.addr == ip("127.0.0.1") && !all && !name);
	CU_ASSERT_EQUAL(bl_net_parse_rule("10.1.2.3/8:443", &r, &all, &name, &err), 0);
	CU_ASSERT(r.addr == ip("10.0.0.0") && r.prefix == 8 && r.port == 443 && !name);
	CU_ASSERT_EQUAL(bl_net_parse_rule("192.0.2.7", &r, &all, &name, &err), 0);
	CU_ASSERT(r.addr == ip("192.0.2.7") && r.prefix == 32 && r.port == 0);
	CU_ASSERT_EQUAL(bl_net_parse_rule("0.0.0.0/0", &r, &all, &name, &err), 0);
	CU_ASSERT(r.prefix == 0 && r.addr == 0);
	CU_ASSERT_EQUAL(bl_net_parse_rule("PyPI.org.:443", &r, &all, &name, &err), 0);
	CU_ASSERT_STRING_EQUAL(name, "pypi.org");
	CU_ASSERT_EQUAL(r.port, 443);
	free(name);
	name = NULL;
	static const char *const bad[] = {"",	  "host:0", "host:65536", "1.2.3.4/33",
					  "a..b", "x y",    "name/8",	  "1.2.3.4:http",
					  "-:",	  "h:1:2",  ";rm -rf",	  "a\nb"};
	for (size_t i = 0; i < BL_ARRAY_SIZE(bad); i++) {
		int rc = bl_net_parse_rule(bad[i], &r, &all, &name, &err);
		if (rc == 0)
			printf("\n  accepted bad rule '%s'\n", bad[i]);
		CU_ASSERT_EQUAL(rc, -BL_EINVAL);
		free(name);
		name = NULL;
	}
}

static void test_ports(void)
{
	bl_net_port p;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(bl_net_parse_port("8080:80", &p, &err), 0);
	CU_ASSERT(p.host_addr == ip("127.0.0.1") && p.host_port == 8080 && p.guest_port == 80 &&
		  !p.udp);
	CU_ASSERT_EQUAL(bl_net_parse_port("0.0.0.0:53:5353/udp", &p, &err), 0);
	CU_ASSERT(p.host_addr == 0 && p.host_port == 53 && p.guest_port == 5353 && p.udp);
	CU_ASSERT_EQUAL(bl_net_parse_port("8000", &p, &err), 0);
	CU_ASSERT(p.host_port == 0 && p.guest_port == 8000);
	static const char *const bad[] = {"",	  "80:",     ":80",   "1:2:3:4",
					  "x:80", "80/sctp", "99999", "a.b.c.d:1:2"};
	for (size_t i = 0; i < BL_ARRAY_SIZE(bad); i++)
		CU_ASSERT_EQUAL(bl_net_parse_port(bad[i], &p, &err), -BL_EINVAL);
}

static size_t query(uint8_t *q, const char *name, uint16_t type)
{
	size_t o = 0;
	static const uint8_t hdr[] = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
	memcpy(q, hdr, sizeof(hdr));
	o = sizeof(hdr);
	_cleanup_free_ char *copy = strdup(name);
	for (char *save = NULL, *l = strtok_r(copy, ".", &save); l;
	     l = strtok_r(NULL, ".", &save)) {
		q[o++] = (uint8_t)strlen(l);
		memcpy(q + o, l, strlen(l));
		o += strlen(l);
	}
	q[o++] = 0;
	q[o++] = 0;
	q[o++] = (uint8_t)type;
	q[o++] = 0;
	q[o++] = 1;
	return o;
}

static void test_dns(void)
{
	bl_net_name names[2] = {
	    {.name = "allowed.test", .addrs = {ip("192.0.2.9")}, .n_addrs = 1},
	    {.name = "host.boxlite.internal", .addrs = {ip("127.0.0.1")}, .n_addrs = 1}};
	uint8_t q[512], a[1024];
	size_t ql = query(q, "Allowed.Test", 1);
	size_t al = bl_net_dns_answer(names, 2, false, q, ql, a, sizeof(a));
	CU_ASSERT_FATAL(al == ql + 16);
	CU_ASSERT(a[0] == 0x12 && a[1] == 0x34 && (a[2] & 0x80) && (a[3] & 0xf) == 0);
	CU_ASSERT(a[6] == 0 && a[7] == 1);
	CU_ASSERT_EQUAL(memcmp(a + al - 4, (uint8_t[]){192, 0, 2, 9}, 4), 0);
	/* Loopback answers become the gateway, which QEMU maps to the host. */
	ql = query(q, "host.boxlite.internal", 1);
	al = bl_net_dns_answer(names, 2, false, q, ql, a, sizeof(a));
	CU_ASSERT_FATAL(al == ql + 16);
	CU_ASSERT_EQUAL(memcmp(a + al - 4, (uint8_t[]){10, 0, 2, 2}, 4), 0);
	ql = query(q, "other.test", 1);
	al = bl_net_dns_answer(names, 2, false, q, ql, a, sizeof(a));
	CU_ASSERT(al == ql && (a[3] & 0xf) == 3 && a[7] == 0); /* NXDOMAIN, no answer */
	ql = query(q, "allowed.test", 28);		       /* AAAA: none, but it exists */
	al = bl_net_dns_answer(names, 2, false, q, ql, a, sizeof(a));
	CU_ASSERT(al == ql && (a[3] & 0xf) == 0 && a[7] == 0);
	/* Hostile queries: truncated, compressed names, replies, several questions. */
	for (size_t cut = 0; cut < ql; cut++)
		CU_ASSERT_EQUAL(bl_net_dns_answer(names, 2, false, q, cut, a, sizeof(a)), 0);
	ql = query(q, "allowed.test", 1);
	q[12] = 0xc0;
	CU_ASSERT_EQUAL(bl_net_dns_answer(names, 2, false, q, ql, a, sizeof(a)), 0);
	ql = query(q, "allowed.test", 1);
	q[2] |= 0x80;
	CU_ASSERT_EQUAL(bl_net_dns_answer(names, 2, false, q, ql, a, sizeof(a)), 0);
	ql = query(q, "allowed.test", 1);
	q[5] = 2;
	CU_ASSERT_EQUAL(bl_net_dns_answer(names, 2, false, q, ql, a, sizeof(a)), 0);
	srand(7);
	for (int i = 0; i < 20000; i++) {
		size_t n = (size_t)(rand() % 200);
		for (size_t k = 0; k < n; k++)
			q[k] = (uint8_t)rand();
		size_t r = bl_net_dns_answer(names, 2, false, q, n, a, sizeof(a));
		CU_ASSERT(r <= sizeof(a));
	}
}

static void test_options(void)
{
	bl_error_t err = BL_ERROR_INIT;
	bl_net *n = NULL;
	const char *const allow[] = {"localhost:8080", "192.0.2.0/24", NULL};
	const char *const ports[] = {"8080:80", NULL};
	bl_sandbox_options o = {.network = true, .net_allow = allow, .net_publish = ports};
	CU_ASSERT_EQUAL_FATAL(bl_net_new(&o, &n, &err), 0);
	uint32_t a;
	unsigned hp;
	CU_ASSERT_EQUAL(bl_net_port_lookup(n, 80, false, &a, &hp), 0);
	CU_ASSERT_EQUAL(hp, 8080);
	CU_ASSERT_EQUAL(bl_net_port_lookup(n, 80, true, &a, &hp), -1);
	bl_net_free(n);
	const char *const many[] = {"1.1.1.1",	"1.1.1.2",  "1.1.1.3",	"1.1.1.4",  "1.1.1.5",
				    "1.1.1.6",	"1.1.1.7",  "1.1.1.8",	"1.1.1.9",  "1.1.1.10",
				    "1.1.1.11", "1.1.1.12", "1.1.1.13", "1.1.1.14", "1.1.1.15",
				    "1.1.1.16", "1.1.1.17", NULL};
	o.net_allow = NULL;
	o.net_publish = many; /* not ports at all */
	CU_ASSERT_EQUAL(bl_net_new(&o, &n, &err), -BL_EINVAL);
	o.net_publish = NULL;
	o.net_max_conns = 1u << 20;
	CU_ASSERT_EQUAL(bl_net_new(&o, &n, &err), -BL_EINVAL);
}

static int listener(unsigned *port)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	if (s < 0 || bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(s, 16) < 0 ||
	    getsockname(s, (struct sockaddr *)&sa, &sl) < 0)
		return -1;
	*port = ntohs(sa.sin_port);
	return s;
}

/* connect() to 127.0.0.1:port as uid; returns 0 or the errno. */
static int connect_as(unsigned uid, unsigned port)
{
	pid_t pid = fork();
	if (pid == 0) {
		if (setresgid(uid, uid, uid) < 0 || setresuid(uid, uid, uid) < 0)
			_exit(100);
		int s = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in sa = {.sin_family = AF_INET,
					 .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
					 .sin_port = htons((uint16_t)port)};
		_exit(connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0 ? 0 : errno);
	}
	int st = 0;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The real host firewall for a uid of the QEMU range: an allowed loopback
 * port is reached, another one is refused and recorded, and the table goes
 * with bl_net_free. */
static void test_firewall(void)
{
	BL_SKIP_UNLESS(bl_test_is_root() && access("/usr/sbin/nft", X_OK) == 0,
		       "needs root and nftables");
	unsigned ok_port, bad_port;
	_cleanup_close_ int a = listener(&ok_port), b = listener(&bad_port);
	CU_ASSERT_FATAL(a >= 0 && b >= 0);
	char rule[32];
	snprintf(rule, sizeof(rule), "host:%u", ok_port);
	const char *const allow[] = {rule, NULL};
	bl_sandbox_options o = {.network = true, .net_allow = allow};
	bl_net *n = NULL;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL_FATAL(bl_net_new(&o, &n, &err), 0);
	unsigned uid = bl_vm_uid_take();
	CU_ASSERT_FATAL(uid != 0);
	int r = bl_net_start(n, uid, &err);
	if (r < 0)
		printf("\n  start: %s\n", err.msg);
	CU_ASSERT_EQUAL_FATAL(r, 0);
	CU_ASSERT_EQUAL(connect_as(uid, ok_port), 0);
	CU_ASSERT_EQUAL(connect_as(uid, bad_port), ECONNREFUSED);
	CU_ASSERT_EQUAL(connect_as(0, bad_port), 0); /* other users: untouched */
	_cleanup_free_ char *text = NULL;
	CU_ASSERT_EQUAL(bl_net_refused(n, &text, &err), 0);
	char want[64];
	snprintf(want, sizeof(want), "127.0.0.1:%u/tcp 1\n", bad_port);
	CU_ASSERT_PTR_NOT_NULL(text ? strstr(text, want) : NULL);
	bl_net_free(n);
	bl_vm_uid_release(uid);
	CU_ASSERT_EQUAL(connect_as(uid, bad_port), 0); /* the table is gone */
}

int main(void)
{
	static const bl_test_case cases[] = {
	    {"rules", test_rules},     {"ports", test_ports},	    {"dns", test_dns},
	    {"options", test_options}, {"firewall", test_firewall}, {NULL, NULL},
	};
	return bl_test_run("net", cases);
}
