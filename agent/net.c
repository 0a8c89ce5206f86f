#include "net.h"
#include "agent.h"
#include "bl_cleanup.h"
#include "bl_log.h"
#include "bl_net_guest.h"
#include "bl_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static bool net_enabled;

static void set_sin(struct sockaddr *sa, const char *addr)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)sa;
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	(void)inet_pton(AF_INET, addr, &sin->sin_addr);
}

static bool if_up(int s, const char *name)
{
	struct ifreq ifr = {0};
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		return false;
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	return ioctl(s, SIOCSIFFLAGS, &ifr) == 0;
}

/* The first interface that is not loopback (virtio-net: eth0). */
static bool first_ether(char *name, size_t len)
{
	struct if_nameindex *ifs = if_nameindex();
	bool found = false;
	for (struct if_nameindex *i = ifs; i && i->if_index && !found; i++)
		if (strcmp(i->if_name, "lo")) {
			snprintf(name, len, "%s", i->if_name);
			found = true;
		}
	if (ifs)
		if_freenameindex(ifs);
	return found;
}

bool agent_net_setup(void)
{
	_cleanup_close_ int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return false;
	(void)if_up(s, "lo");
	char dev[IFNAMSIZ];
	if (!first_ether(dev, sizeof(dev))) {
		bl_warn("network: no interface besides lo");
		return false;
	}
	struct ifreq ifr = {0};
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", dev);
	set_sin(&ifr.ifr_addr, BL_NET_GUEST_ADDR);
	bool ok = ioctl(s, SIOCSIFADDR, &ifr) == 0;
	uint32_t mask = htonl(~0u << (32 - BL_NET_GUEST_PREFIX));
	struct sockaddr_in *m = (struct sockaddr_in *)&ifr.ifr_netmask;
	m->sin_family = AF_INET;
	m->sin_addr.s_addr = mask;
	ok = ok && ioctl(s, SIOCSIFNETMASK, &ifr) == 0;
	ok = ok && if_up(s, dev);
	struct rtentry rt = {0};
	set_sin(&rt.rt_dst, "0.0.0.0");
	set_sin(&rt.rt_genmask, "0.0.0.0");
	set_sin(&rt.rt_gateway, BL_NET_GATEWAY);
	rt.rt_flags = RTF_UP | RTF_GATEWAY;
	rt.rt_dev = dev;
	ok = ok && (ioctl(s, SIOCADDRT, &rt) == 0 || errno == EEXIST);
	if (!ok) {
		bl_warn("network: configuring %s: %s", dev, strerror(errno));
		return false;
	}
	bl_info("network: %s %s/%d via %s", dev, BL_NET_GUEST_ADDR, BL_NET_GUEST_PREFIX,
		BL_NET_GATEWAY);
	net_enabled = true;
	return true;
}

bool agent_net_enabled(void)
{
	return net_enabled;
}

void agent_net_write_resolv(const char *root)
{
	if (!net_enabled)
		return;
	_cleanup_close_ int rfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rfd < 0)
		return;
	struct open_how how = {.flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
			       .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
	_cleanup_close_ int etc = (int)syscall(SYS_openat2, rfd, "etc", &how, sizeof(how));
	if (etc < 0 && errno == ENOENT && mkdirat(rfd, "etc", 0755) == 0)
		etc = (int)syscall(SYS_openat2, rfd, "etc", &how, sizeof(how));
	if (etc < 0)
		return;
	(void)unlinkat(etc, "resolv.conf", 0);
	_cleanup_close_ int fd =
	    openat(etc, "resolv.conf", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	static const char conf[] = "nameserver " BL_NET_GATEWAY "\noptions attempts:2 timeout:2\n";
	if (fd < 0 || bl_write_full(fd, conf, sizeof(conf) - 1) < 0)
		bl_warn("network: %s/etc/resolv.conf: %s", root, strerror(errno));
}
