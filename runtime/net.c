/*
 * A sandbox's network: QEMU user-mode networking as the backend, the host's
 * nftables as the policy (an inet table per sandbox, matching its QEMU's uid:
 * everything the guest sends leaves through sockets QEMU opens as that uid),
 * and a DNS responder on 127.0.0.1 that the table's NAT chain points the
 * guest's port-53 traffic at. See runtime/README.md, "Network".
 */
#include "net.h"
#include "bl_cleanup.h"
#include "bl_log.h"
#include "bl_net_guest.h"
#include "bl_util.h"
#include "vm.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

struct bl_net {
	bl_net_rule allow[BL_NET_MAX_RULES], deny[BL_NET_MAX_RULES];
	size_t n_allow, n_deny;
	bool allow_all;
	bl_net_name names[BL_NET_MAX_NAMES];
	size_t n_names;
	bl_net_port ports[BL_NET_MAX_PORTS];
	size_t n_ports;
	unsigned max_conns, rate_kib;
	unsigned uid; /* 0 until started */
	char table[32];
	bool table_made;
	int dns_fd, stop_fd;
	uint16_t dns_port;
	pthread_t dns_thread;
	bool dns_running;
	char *qemu_args[5];
};

/* ------------------------------------------------------------ parsing */

static int parse_port_num(const char *s, uint16_t *ret)
{
	if (!*s || strlen(s) > 5)
		return -1;
	for (const char *c = s; *c; c++)
		if (!isdigit((unsigned char)*c))
			return -1;
	unsigned long v = strtoul(s, NULL, 10);
	if (v < 1 || v > 65535)
		return -1;
	*ret = (uint16_t)v;
	return 0;
}

static bool valid_name(const char *s)
{
	size_t n = strlen(s), label = 0;
	if (n == 0 || n > 253)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
			continue;
		}
		if (!isalnum((unsigned char)c) && c != '-' && c != '_')
			return false;
		if (++label > 63)
			return false;
	}
	return label > 0;
}

int bl_net_parse_rule(const char *s, bl_net_rule *ret, bool *ret_all, char **ret_name,
		      bl_error_t *err)
{
	*ret = (bl_net_rule){.prefix = 32, .name = -1};
	*ret_all = false;
	*ret_name = NULL;
	if (!s || !*s || strlen(s) > 300)
		return bl_set_error(err, BL_EINVAL, "empty or over-long network rule");
	if (!strcmp(s, "*") || !strcmp(s, "all")) {
		*ret_all = true;
		return 0;
	}
	_cleanup_free_ char *h = bl_strdup(s);
	char *colon = strrchr(h, ':');
	if (colon) {
		*colon = '\0';
		if (parse_port_num(colon + 1, &ret->port) < 0)
			return bl_set_error(err, BL_EINVAL, "network rule '%s': bad port", s);
	}
	for (char *c = h; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	size_t hl = strlen(h);
	if (hl && h[hl - 1] == '.')
		h[--hl] = '\0';
	if (!strcmp(h, "host") || !strcmp(h, BL_NET_HOST_NAME)) {
		ret->loopback = true;
		ret->addr = htonl(INADDR_LOOPBACK);
		return 0;
	}
	char *slash = strchr(h, '/');
	if (slash) {
		*slash = '\0';
		uint16_t p;
		if (parse_port_num(slash + 1, &p) < 0 && strcmp(slash + 1, "0"))
			return bl_set_error(err, BL_EINVAL, "network rule '%s': bad prefix", s);
		if (!strcmp(slash + 1, "0"))
			p = 0;
		if (p > 32)
			return bl_set_error(err, BL_EINVAL, "network rule '%s': bad prefix", s);
		ret->prefix = (uint8_t)p;
	}
	struct in_addr a;
	if (inet_pton(AF_INET, h, &a) == 1) {
		uint32_t mask = ret->prefix ? htonl(~0u << (32 - ret->prefix)) : 0;
		ret->addr = a.s_addr & mask;
		return 0;
	}
	if (slash || !valid_name(h))
		return bl_set_error(err, BL_EINVAL,
				    "network rule '%s': not a name, address or CIDR (IPv4)", s);
	*ret_name = steal_pointer(&h);
	return 0;
}

int bl_net_parse_port(const char *s, bl_net_port *ret, bl_error_t *err)
{
	*ret = (bl_net_port){.host_addr = htonl(INADDR_LOOPBACK)};
	if (!s || !*s || strlen(s) > 64)
		return bl_set_error(err, BL_EINVAL, "empty or over-long published port");
	_cleanup_free_ char *c = bl_strdup(s);
	char *proto = strchr(c, '/');
	if (proto) {
		*proto++ = '\0';
		if (!strcmp(proto, "udp"))
			ret->udp = true;
		else if (strcmp(proto, "tcp"))
			return bl_set_error(err, BL_EINVAL, "port '%s': protocol is tcp or udp", s);
	}
	char *parts[3] = {NULL};
	size_t n = 0;
	for (char *tok = c, *next; tok && n < 4; tok = next) {
		next = strchr(tok, ':');
		if (next)
			*next++ = '\0';
		if (n == 3)
			return bl_set_error(err, BL_EINVAL, "port '%s': too many parts", s);
		parts[n++] = tok;
	}
	const char *addr = n == 3 ? parts[0] : NULL;
	const char *host = n >= 2 ? parts[n - 2] : NULL;
	const char *guest = parts[n - 1];
	if (parse_port_num(guest, &ret->guest_port) < 0 ||
	    (host && strcmp(host, "0") && parse_port_num(host, &ret->host_port) < 0))
		return bl_set_error(err, BL_EINVAL,
				    "port '%s': want [ADDR:]HOST_PORT:GUEST_PORT[/tcp|/udp]", s);
	struct in_addr a;
	if (addr && inet_pton(AF_INET, addr, &a) != 1)
		return bl_set_error(err, BL_EINVAL, "port '%s': '%s' is not an IPv4 address", s,
				    addr);
	if (addr)
		ret->host_addr = a.s_addr;
	return 0;
}

/* ------------------------------------------------------------ options */

static bool is_loopback(uint32_t a)
{
	return (ntohl(a) >> 24) == 127;
}

static int add_name(bl_net *n, const char *name, bl_error_t *err)
{
	for (size_t i = 0; i < n->n_names; i++)
		if (!strcmp(n->names[i].name, name))
			return (int)i;
	if (n->n_names == BL_NET_MAX_NAMES)
		return bl_set_error(err, BL_EINVAL, "more than %d names in the network rules",
				    BL_NET_MAX_NAMES);
	bl_net_name *nm = &n->names[n->n_names];
	snprintf(nm->name, sizeof(nm->name), "%s", name);
	struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
	struct addrinfo *res = NULL;
	int r = getaddrinfo(name, NULL, &hints, &res);
	if (r != 0)
		return bl_set_error(err, BL_EINVAL, "network rule: cannot resolve '%s': %s", name,
				    gai_strerror(r));
	for (struct addrinfo *ai = res; ai && nm->n_addrs < BL_NET_MAX_ADDRS; ai = ai->ai_next) {
		uint32_t a = ((struct sockaddr_in *)ai->ai_addr)->sin_addr.s_addr;
		bool dup = false;
		for (size_t k = 0; k < nm->n_addrs; k++)
			dup = dup || nm->addrs[k] == a;
		if (!dup)
			nm->addrs[nm->n_addrs++] = a;
	}
	freeaddrinfo(res);
	return (int)n->n_names++;
}

/* One rule per address: a name becomes one rule per address it resolved to. */
static int add_rules(bl_net *n, const char *const *v, bool deny, bl_error_t *err)
{
	bl_net_rule *rules = deny ? n->deny : n->allow;
	size_t *count = deny ? &n->n_deny : &n->n_allow;
	for (size_t i = 0; v && v[i]; i++) {
		bl_net_rule r;
		bool all;
		_cleanup_free_ char *name = NULL;
		int rc = bl_net_parse_rule(v[i], &r, &all, &name, err);
		if (rc < 0)
			return rc;
		if (all) {
			if (deny)
				return bl_set_error(err, BL_EINVAL, "--deny '*': give no --allow");
			n->allow_all = true;
			continue;
		}
		size_t n_addrs = 1;
		uint32_t addrs[BL_NET_MAX_ADDRS] = {r.addr};
		if (name) {
			rc = add_name(n, name, err);
			if (rc < 0)
				return rc;
			r.name = rc;
			n_addrs = n->names[rc].n_addrs;
			memcpy(addrs, n->names[rc].addrs, sizeof(addrs));
		}
		for (size_t k = 0; k < n_addrs; k++) {
			if (*count == BL_NET_MAX_RULES)
				return bl_set_error(err, BL_EINVAL, "more than %d network rules",
						    BL_NET_MAX_RULES);
			r.addr = addrs[k];
			/* The guest reaches the host's loopback only through the gateway,
			 * which QEMU maps to 127.0.0.1. */
			if (is_loopback(r.addr) && r.prefix == 32) {
				r.addr = htonl(INADDR_LOOPBACK);
				r.loopback = true;
			}
			rules[(*count)++] = r;
		}
	}
	return 0;
}

int bl_net_new(const bl_sandbox_options *o, bl_net **ret, bl_error_t *err)
{
	_cleanup_(bl_net_freep) bl_net *n = bl_malloc0(sizeof(*n));
	n->dns_fd = n->stop_fd = -1;
	n->max_conns = o->net_max_conns ? o->net_max_conns : BL_DEFAULT_NET_MAX_CONNS;
	n->rate_kib = o->net_rate_kib ? o->net_rate_kib : BL_DEFAULT_NET_RATE_KIB;
	if (n->max_conns > 65536 || n->rate_kib > 10u * 1024 * 1024)
		return bl_set_error(err, BL_EINVAL,
				    "network limits out of range (connections <= 65536, "
				    "rate <= 10 GiB/s)");
	int r = add_rules(n, o->net_allow, false, err);
	if (r == 0)
		r = add_rules(n, o->net_deny, true, err);
	if (r < 0)
		return r;
	/* host.boxlite.internal always resolves (reaching it needs a rule). */
	if (n->n_names < BL_NET_MAX_NAMES) {
		bl_net_name *h = &n->names[n->n_names++];
		snprintf(h->name, sizeof(h->name), "%s", BL_NET_HOST_NAME);
		h->addrs[0] = htonl(INADDR_LOOPBACK);
		h->n_addrs = 1;
	}
	for (size_t i = 0; o->net_publish && o->net_publish[i]; i++) {
		if (n->n_ports == BL_NET_MAX_PORTS)
			return bl_set_error(err, BL_EINVAL, "more than %d published ports",
					    BL_NET_MAX_PORTS);
		r = bl_net_parse_port(o->net_publish[i], &n->ports[n->n_ports], err);
		if (r < 0)
			return r;
		n->n_ports++;
	}
	*ret = steal_pointer(&n);
	return 0;
}

/* ------------------------------------------------------------ nft */

/* Runs nft with args, script on its stdin; *ret_out gets its stdout. */
static int run_nft(const char *const *args, const char *script, char **ret_out, bl_error_t *err)
{
	int in[2], out[2];
	if (pipe2(in, O_CLOEXEC) < 0)
		return bl_set_error_errno(err, errno, "pipe");
	if (pipe2(out, O_CLOEXEC) < 0) {
		close(in[0]);
		close(in[1]);
		return bl_set_error_errno(err, errno, "pipe");
	}
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, in[0], 0);
	posix_spawn_file_actions_adddup2(&fa, out[1], 1);
	posix_spawn_file_actions_adddup2(&fa, out[1], 2);
	char *argv[16];
	size_t k = 0;
	argv[k++] = (char *)"nft";
	for (size_t i = 0; args[i] && k < BL_ARRAY_SIZE(argv) - 1; i++)
		argv[k++] = (char *)args[i];
	argv[k] = NULL;
	pid_t pid;
	const char *nft = access("/usr/sbin/nft", X_OK) == 0 ? "/usr/sbin/nft" : "/sbin/nft";
	int rc = posix_spawn(&pid, nft, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(in[0]);
	close(out[1]);
	if (rc != 0) {
		close(in[1]);
		close(out[0]);
		return bl_set_error(err, BL_EUNSUPPORTED,
				    "networking needs nftables (%s: %s; Debian: nftables)", nft,
				    strerror(rc));
	}
	if (script)
		(void)bl_write_full(in[1], script, strlen(script));
	close(in[1]);
	size_t cap = 4096, len = 0;
	char *buf = bl_malloc0(cap);
	for (;;) {
		if (len + 1 >= cap) {
			if (cap >= (8u << 20))
				break;
			cap *= 2;
			buf = realloc(buf, cap);
			if (!buf)
				abort();
		}
		ssize_t got = read(out[0], buf + len, cap - len - 1);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		len += (size_t)got;
	}
	buf[len] = '\0';
	close(out[0]);
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		bl_sanitize_text(buf, len, false);
		int e = bl_set_error(err, BL_ESYSTEM, "nft %s: %.300s", args[0], buf);
		free(buf);
		return e;
	}
	if (ret_out)
		*ret_out = buf;
	else
		free(buf);
	return 0;
}

static void put_addr(FILE *f, uint32_t addr, uint8_t prefix)
{
	char a[INET_ADDRSTRLEN];
	struct in_addr in = {.s_addr = addr};
	inet_ntop(AF_INET, &in, a, sizeof(a));
	if (prefix == 32)
		fprintf(f, "%s", a);
	else
		fprintf(f, "%s/%u", a, prefix);
}

static void put_rule(FILE *f, const bl_net_rule *r, const char *verdict)
{
	fprintf(f, "\t\tip daddr ");
	put_addr(f, r->addr, r->prefix);
	if (r->port)
		fprintf(f, " meta l4proto { tcp, udp } th dport %u", r->port);
	fprintf(f, " %s\n", verdict);
}

/* Public destinations only: no loopback, private, link-local, shared,
 * multicast or reserved range, and none of the host's own addresses. */
static const char special_ranges[] =
    "0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16, "
    "172.16.0.0/12, 192.0.0.0/24, 192.168.0.0/16, 198.18.0.0/15, 224.0.0.0/3";

static char *nft_script(const bl_net *n)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		abort();
	unsigned u = n->uid, kib = n->rate_kib;
	/* Replaces a table a dead owner of this uid left behind, atomically. */
	fprintf(f, "add table inet %s\ndelete table inet %s\n", n->table, n->table);
	fprintf(f, "table inet %s {\n", n->table);
	fprintf(f, "\tset refused { type ipv4_addr . inet_proto . inet_service; flags dynamic; "
		   "counter; size 4096; }\n");
	fprintf(f, "\tset refused_other { type ipv4_addr . inet_proto; flags dynamic; counter; "
		   "size 256; }\n");
	fprintf(f, "\tcounter over_limit { }\n");
	fprintf(f, "\tchain out {\n\t\ttype filter hook output priority 0; policy accept;\n");
	fprintf(f, "\t\tmeta skuid %u jump sandbox\n\t}\n", u);
	fprintf(f, "\tchain sandbox {\n\t\tct mark set %u\n", u);
	fprintf(f, "\t\tlimit rate over %u kbytes/second burst %u kbytes drop\n", kib, kib);
	fprintf(f, "\t\tct state established,related accept\n");
	fprintf(f, "\t\tip daddr 127.0.0.1 udp dport %u accept\n", n->dns_port);
	fprintf(f, "\t\tct state new ct count over %u counter name over_limit goto limited\n",
		n->max_conns);
	for (size_t i = 0; i < n->n_deny; i++)
		put_rule(f, &n->deny[i], "goto refuse");
	for (size_t i = 0; i < n->n_allow; i++)
		put_rule(f, &n->allow[i], "accept");
	if (n->allow_all) {
		fprintf(f, "\t\tip daddr { %s } goto refuse\n", special_ranges);
		fprintf(f, "\t\tfib daddr type { local, broadcast, multicast } goto refuse\n");
		fprintf(f, "\t\tmeta nfproto ipv4 accept\n");
	}
	fprintf(f, "\t\tgoto refuse\n\t}\n");
	fprintf(f, "\tchain refuse {\n"
		   "\t\tmeta l4proto { tcp, udp } update @refused { ip daddr . meta l4proto . "
		   "th dport }\n"
		   "\t\tmeta l4proto != { tcp, udp } update @refused_other { ip daddr . meta "
		   "l4proto }\n"
		   "\t\tmeta l4proto tcp reject with tcp reset\n\t\treject\n\t}\n");
	fprintf(f,
		"\tchain limited {\n\t\tmeta l4proto tcp reject with tcp reset\n\t\treject\n\t}\n");
	fprintf(f, "\tchain in {\n\t\ttype filter hook input priority 0; policy accept;\n");
	fprintf(f, "\t\tct mark %u limit rate over %u kbytes/second burst %u kbytes drop\n\t}\n", u,
		kib, kib);
	fprintf(f, "\tchain nat {\n\t\ttype nat hook output priority -100; policy accept;\n");
	fprintf(f, "\t\tmeta skuid %u udp dport 53 dnat ip to 127.0.0.1:%u\n\t}\n}\n", u,
		n->dns_port);
	fclose(f);
	return buf;
}

/* A process (a QEMU whose owner died) still runs as uid: its table stays. */
static bool uid_runs(unsigned uid)
{
	_cleanup_closedir_ DIR *d = opendir("/proc");
	for (struct dirent *e; d && (e = readdir(d));) {
		if (e->d_name[0] < '1' || e->d_name[0] > '9')
			continue;
		_cleanup_free_ char *path = bl_asprintf("/proc/%s/status", e->d_name);
		_cleanup_free_ char *st = NULL;
		if (bl_read_file(path, 8192, &st, NULL, NULL) < 0)
			continue;
		const char *u = strstr(st, "\nUid:");
		unsigned real, eff;
		if (u && sscanf(u + 5, "%u %u", &real, &eff) == 2 && (real == uid || eff == uid))
			return true;
	}
	return false;
}

void bl_net_gc(void)
{
	const char *const args[] = {"list", "tables", NULL};
	_cleanup_free_ char *out = NULL;
	if (run_nft(args, NULL, &out, NULL) < 0)
		return;
	char *save = NULL;
	for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		unsigned uid;
		char tail;
		if (sscanf(line, "table inet boxlite_%u%c", &uid, &tail) != 1 ||
		    bl_vm_uid_held(uid) || uid_runs(uid))
			continue;
		char table[32];
		snprintf(table, sizeof(table), "boxlite_%u", uid);
		const char *const del[] = {"delete", "table", "inet", table, NULL};
		(void)run_nft(del, NULL, NULL, NULL);
	}
}

/* ------------------------------------------------------------ DNS */

static size_t put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
	return 2;
}

static uint32_t guest_view(uint32_t a)
{
	struct in_addr gw;
	inet_pton(AF_INET, BL_NET_GATEWAY, &gw);
	return is_loopback(a) ? gw.s_addr : a;
}

size_t bl_net_dns_answer(const bl_net_name *names, size_t n_names, bool forward_all,
			 const uint8_t *q, size_t qlen, uint8_t *out, size_t out_max)
{
	if (qlen < 12 || qlen > 512 || out_max < 512)
		return 0;
	uint16_t flags = (uint16_t)(q[2] << 8 | q[3]);
	uint16_t qd = (uint16_t)(q[4] << 8 | q[5]);
	if ((flags & 0x8000) || qd != 1)
		return 0; /* a reply, or not one question: ignore */
	char name[256];
	size_t pos = 12, nl = 0;
	for (;;) {
		if (pos >= qlen)
			return 0;
		uint8_t l = q[pos++];
		if (l == 0)
			break;
		if (l > 63 || pos + l > qlen || nl + l + 1 > 253)
			return 0;
		if (nl)
			name[nl++] = '.';
		for (uint8_t i = 0; i < l; i++)
			name[nl++] = (char)tolower(q[pos + i]);
		pos += l;
	}
	name[nl] = '\0';
	if (pos + 4 > qlen)
		return 0;
	uint16_t qtype = (uint16_t)(q[pos] << 8 | q[pos + 1]);
	uint16_t qclass = (uint16_t)(q[pos + 2] << 8 | q[pos + 3]);
	size_t qend = pos + 4;
	uint32_t addrs[BL_NET_MAX_ADDRS];
	size_t n_addrs = 0;
	bool known = false;
	for (size_t i = 0; i < n_names && !known; i++) {
		if (strcmp(names[i].name, name))
			continue;
		known = true;
		for (size_t k = 0; k < names[i].n_addrs; k++)
			addrs[n_addrs++] = guest_view(names[i].addrs[k]);
	}
	if (!known && forward_all && nl && qtype == 1) {
		struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
		struct addrinfo *res = NULL;
		if (getaddrinfo(name, NULL, &hints, &res) == 0) {
			known = true;
			for (struct addrinfo *ai = res; ai && n_addrs < BL_NET_MAX_ADDRS;
			     ai = ai->ai_next)
				addrs[n_addrs++] = guest_view(
				    ((struct sockaddr_in *)ai->ai_addr)->sin_addr.s_addr);
			freeaddrinfo(res);
		}
	}
	bool opcode_ok = ((flags >> 11) & 0xf) == 0;
	bool want_a = qclass == 1 && (qtype == 1 || qtype == 255);
	/* NOERROR, NXDOMAIN, or NOTIMP for other opcodes. */
	uint16_t rcode = !opcode_ok ? 4 : known ? 0 : 3;
	size_t ans = opcode_ok && known && want_a ? n_addrs : 0;
	memcpy(out, q, 2);
	size_t o = 2;
	o += put16(out + o, (uint16_t)(0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode));
	o += put16(out + o, 1);
	o += put16(out + o, (uint16_t)ans);
	o += put16(out + o, 0);
	o += put16(out + o, 0);
	memcpy(out + o, q + 12, qend - 12);
	o += qend - 12;
	for (size_t i = 0; i < ans; i++) {
		o += put16(out + o, 0xc00c);
		o += put16(out + o, 1);
		o += put16(out + o, 1);
		o += put16(out + o, 0);
		o += put16(out + o, 60); /* TTL */
		o += put16(out + o, 4);
		memcpy(out + o, &addrs[i], 4);
		o += 4;
	}
	return o;
}

static void *dns_main(void *arg)
{
	bl_net *n = arg;
	uint8_t q[512], a[512 + 16 * BL_NET_MAX_ADDRS];
	for (;;) {
		struct pollfd p[2] = {{.fd = n->dns_fd, .events = POLLIN},
				      {.fd = n->stop_fd, .events = POLLIN}};
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		struct sockaddr_in from;
		socklen_t fl = sizeof(from);
		ssize_t got =
		    recvfrom(n->dns_fd, q, sizeof(q), MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
		if (got <= 0 || fl != sizeof(from) || !is_loopback(from.sin_addr.s_addr))
			continue;
		size_t len = bl_net_dns_answer(n->names, n->n_names, n->allow_all, q, (size_t)got,
					       a, sizeof(a));
		if (len)
			(void)sendto(n->dns_fd, a, len, MSG_DONTWAIT, (struct sockaddr *)&from, fl);
	}
	return NULL;
}

static int dns_start(bl_net *n, bl_error_t *err)
{
	n->dns_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (n->dns_fd < 0)
		return bl_set_error_errno(err, errno, "DNS socket");
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	if (bind(n->dns_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(n->dns_fd, (struct sockaddr *)&sa, &sl) < 0)
		return bl_set_error_errno(err, errno, "DNS socket on 127.0.0.1");
	n->dns_port = ntohs(sa.sin_port);
	n->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (n->stop_fd < 0)
		return bl_set_error_errno(err, errno, "eventfd");
	int r = pthread_create(&n->dns_thread, NULL, dns_main, n);
	if (r)
		return bl_set_error_errno(err, r, "DNS thread");
	n->dns_running = true;
	return 0;
}

/* ------------------------------------------------------------ ports */

/* Checks the host side is free (a clear error before QEMU's) and picks a
 * free port for HOST_PORT 0. */
static int reserve_port(bl_net_port *p, bl_error_t *err)
{
	_cleanup_close_ int s =
	    socket(AF_INET, (p->udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
	if (s < 0)
		return bl_set_error_errno(err, errno, "socket");
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_addr.s_addr = p->host_addr,
				 .sin_port = htons(p->host_port)};
	socklen_t sl = sizeof(sa);
	if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(s, (struct sockaddr *)&sa, &sl) < 0) {
		char a[INET_ADDRSTRLEN];
		inet_ntop(AF_INET, &sa.sin_addr, a, sizeof(a));
		return bl_set_error(err, errno == EADDRINUSE ? BL_EEXIST : BL_EINVAL,
				    "publish %s:%u: %s", a, p->host_port, strerror(errno));
	}
	p->host_port = ntohs(sa.sin_port);
	return 0;
}

static void build_qemu_args(bl_net *n)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		abort();
	fprintf(f, "user,id=bln0,net=%s,host=%s,ipv6=off", BL_NET_SUBNET, BL_NET_GATEWAY);
	for (size_t i = 0; i < n->n_ports; i++) {
		char a[INET_ADDRSTRLEN];
		struct in_addr in = {.s_addr = n->ports[i].host_addr};
		inet_ntop(AF_INET, &in, a, sizeof(a));
		fprintf(f, ",hostfwd=%s:%s:%u-%s:%u", n->ports[i].udp ? "udp" : "tcp", a,
			n->ports[i].host_port, BL_NET_GUEST_ADDR, n->ports[i].guest_port);
	}
	fclose(f);
	n->qemu_args[0] = bl_strdup("-netdev");
	n->qemu_args[1] = buf;
	n->qemu_args[2] = bl_strdup("-device");
	n->qemu_args[3] = bl_strdup("virtio-net-device,netdev=bln0");
}

/* ------------------------------------------------------------ lifecycle */

int bl_net_start(bl_net *n, unsigned uid, bl_error_t *err)
{
	if (!uid)
		return bl_set_error(err, BL_EUNSUPPORTED,
				    "networking needs QEMU under a uid of its own (the "
				    "embedded libvirt driver, BOXLITE_QEMU_UIDS not off)");
	n->uid = uid;
	snprintf(n->table, sizeof(n->table), "boxlite_%u", uid);
	for (size_t i = 0; i < n->n_ports; i++) {
		int r = reserve_port(&n->ports[i], err);
		if (r < 0)
			return r;
	}
	int r = dns_start(n, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *script = nft_script(n);
	bl_debug("net: nft script:\n%s", script);
	const char *const args[] = {"-f", "-", NULL};
	n->table_made = true; /* a half-made table is removed too */
	r = run_nft(args, script, NULL, err);
	if (r < 0)
		return bl_error_prefix(err, "host firewall");
	build_qemu_args(n);
	return 0;
}

const char *const *bl_net_qemu_args(const bl_net *n)
{
	return (const char *const *)n->qemu_args;
}

const char *bl_net_cmdline(const bl_net *n)
{
	(void)n;
	return BL_NET_CMDLINE_KEY "=on";
}

int bl_net_port_lookup(const bl_net *n, unsigned guest_port, bool udp, uint32_t *ret_addr,
		       unsigned *ret_port)
{
	for (size_t i = 0; n && i < n->n_ports; i++)
		if (n->ports[i].guest_port == guest_port && n->ports[i].udp == udp) {
			*ret_addr = n->ports[i].host_addr;
			*ret_port = n->ports[i].host_port;
			return 0;
		}
	return -1;
}

static void json_putp(json_object **o)
{
	if (*o)
		json_object_put(*o);
}

static void refused_elems(json_object *set, FILE *f)
{
	json_object *elems;
	if (!json_object_object_get_ex(set, "elem", &elems) ||
	    !json_object_is_type(elems, json_type_array))
		return;
	for (size_t i = 0; i < json_object_array_length(elems); i++) {
		json_object *e = json_object_array_get_idx(elems, i), *inner, *val, *concat, *ctr,
			    *pk;
		if (!json_object_object_get_ex(e, "elem", &inner) ||
		    !json_object_object_get_ex(inner, "val", &val) ||
		    !json_object_object_get_ex(val, "concat", &concat) ||
		    !json_object_is_type(concat, json_type_array) ||
		    json_object_array_length(concat) < 2)
			continue;
		long long packets = 0;
		if (json_object_object_get_ex(inner, "counter", &ctr) &&
		    json_object_object_get_ex(ctr, "packets", &pk))
			packets = json_object_get_int64(pk);
		const char *addr = json_object_get_string(json_object_array_get_idx(concat, 0));
		const char *proto = json_object_get_string(json_object_array_get_idx(concat, 1));
		if (json_object_array_length(concat) >= 3)
			fprintf(f, "%s:%d/%s %lld\n", addr,
				json_object_get_int(json_object_array_get_idx(concat, 2)), proto,
				packets);
		else
			fprintf(f, "%s/%s %lld\n", addr, proto, packets);
	}
}

int bl_net_refused(bl_net *n, char **ret, bl_error_t *err)
{
	if (!n->table_made)
		return bl_set_error(err, BL_ESTATE, "the network is not set up");
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		abort();
	static const char *const sets[] = {"refused", "refused_other"};
	int r = 0;
	for (size_t s = 0; s < BL_ARRAY_SIZE(sets) && r == 0; s++) {
		const char *const args[] = {"-j", "list", "set", "inet", n->table, sets[s], NULL};
		_cleanup_free_ char *out = NULL;
		r = run_nft(args, NULL, &out, err);
		if (r < 0)
			break;
		_cleanup_(json_putp) json_object *root = json_tokener_parse(out);
		json_object *items;
		if (!root || !json_object_object_get_ex(root, "nftables", &items) ||
		    !json_object_is_type(items, json_type_array))
			continue;
		for (size_t i = 0; i < json_object_array_length(items); i++) {
			json_object *set;
			if (json_object_object_get_ex(json_object_array_get_idx(items, i), "set",
						      &set))
				refused_elems(set, f);
		}
	}
	if (r == 0) {
		const char *const args[] = {"-j",     "list",	    "counter", "inet",
					    n->table, "over_limit", NULL};
		_cleanup_free_ char *out = NULL;
		if (run_nft(args, NULL, &out, NULL) == 0) {
			const char *p = strstr(out, "\"packets\":");
			long long v = p ? strtoll(p + 10, NULL, 10) : 0;
			if (v > 0)
				fprintf(f, "over-limit %lld\n", v);
		}
	}
	fclose(f);
	if (r < 0) {
		free(buf);
		return r;
	}
	*ret = buf;
	return 0;
}

void bl_net_abandon(bl_net *n)
{
	if (!n)
		return;
	n->table_made = false;
	bl_net_free(n);
}

void bl_net_free(bl_net *n)
{
	if (!n)
		return;
	if (n->table_made) {
		const char *const args[] = {"delete", "table", "inet", n->table, NULL};
		bl_error_t e = BL_ERROR_INIT;
		if (run_nft(args, NULL, NULL, &e) < 0 && !strstr(e.msg, "No such file"))
			bl_warn("net: %s", e.msg);
		/* Off the start path: what dead owners of other uids left. */
		bl_net_gc();
	}
	if (n->dns_running) {
		uint64_t one = 1;
		(void)!write(n->stop_fd, &one, sizeof(one));
		pthread_join(n->dns_thread, NULL);
	}
	if (n->dns_fd >= 0)
		close(n->dns_fd);
	if (n->stop_fd >= 0)
		close(n->stop_fd);
	for (size_t i = 0; i < BL_ARRAY_SIZE(n->qemu_args); i++)
		free(n->qemu_args[i]);
	free(n);
}
