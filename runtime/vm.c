#include "vm.h"
#include "bl_cleanup.h"
#include "bl_log.h"
#include "bl_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <libxml/xmlwriter.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/random.h>
#include <sys/prctl.h>
#include <limits.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_VIRTIOFSD "/usr/lib/qemu/virtiofsd"
#define QEMU_BINARY	  "/usr/bin/qemu-system-x86_64"
/* Arguments measured to shorten a TCG boot (see ARCHITECTURE.md, facts 4-5). */
#define BASE_CMDLINE                                                                     \
	"console=ttyS0 reboot=t panic=-1 quiet tsc=reliable no_timer_check lpj=5000000 " \
	"i8042.noaux 8250.nr_uarts=1 mitigations=off cryptomgr.notests"

#define MAX_WATCHED 8

struct bl_vm {
	virConnectPtr conn;
	virDomainPtr dom;
	bool embedded; /* conn is the process-wide embedded connection */
	/* Watched by the reaper (under watch_lock): QEMU and its virtiofsds. */
	struct bl_vm *watch_next;
	bool watched, destroying;
	pid_t qemu_pid;
	pid_t pids[MAX_WATCHED];
	size_t n_pids;
	char dead_why[192]; /* why the VM died under us, "" while it lives */
	int console_wd;	    /* inotify watch of the console log, -1: none */
	unsigned qemu_uid;  /* the uid/gid this VM's QEMU runs as, 0: libvirt's */
};

static pthread_mutex_t watch_lock = PTHREAD_MUTEX_INITIALIZER;
/* The guardian of this process's embedded VMs (start_guardian), -1 once gone. */
static pid_t guardian_pid;
static int guardian_wfd = -1; /* its pipe's write end (non-blocking) */
static struct bl_vm *watch_list;

/* ------------------------------------------------------------ console cap */

/*
 * The console log lives on RAM-backed /run and the guest decides how much it
 * writes: it is capped. One thread of the process watches every console log
 * of its VMs with inotify; when one grows past its cap, its last cap bytes
 * move to LOG.1 (replacing the previous one) and LOG is truncated (QEMU
 * appends, so it goes on at offset 0). At most about 2 x cap per sandbox,
 * plus what the guest writes between two wake-ups.
 */
struct console_watch {
	int wd;
	size_t max;
	char *path;
	struct console_watch *next;
};

static pthread_mutex_t console_lock = PTHREAD_MUTEX_INITIALIZER;
static struct console_watch *console_list;
static int console_ifd = -1;
static pthread_once_t console_once = PTHREAD_ONCE_INIT;

size_t bl_vm_console_max(void)
{
	const char *e = getenv("BOXLITE_CONSOLE_MAX");
	long v = e && *e ? strtol(e, NULL, 10) : 0;
	return v >= 4096 && v <= (64l << 20) ? (size_t)v : BL_VM_CONSOLE_MAX;
}

static void console_rotate(const char *path, size_t max)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size <= max)
		return;
	size_t keep = max;
	_cleanup_free_ char *buf = malloc(keep);
	ssize_t n = buf ? pread(fd, buf, keep, st.st_size - (off_t)keep) : -1;
	_cleanup_free_ char *old = bl_asprintf("%s.1", path);
	_cleanup_free_ char *tmp = bl_asprintf("%s.1.tmp", path);
	if (n > 0) {
		_cleanup_close_ int out =
		    open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (out >= 0 && bl_write_full(out, buf, (size_t)n) == 0)
			(void)rename(tmp, old);
		else
			(void)unlink(tmp);
	}
	if (truncate(path, 0) < 0)
		bl_warn("console log %s: truncate: %s", path, strerror(errno));
}

static void *console_main(void *arg)
{
	(void)arg;
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	for (;;) {
		ssize_t n = read(console_ifd, buf, sizeof(buf));
		if (n <= 0) {
			if (n < 0 && errno != EINTR) {
				struct timespec ts = {0, 100 * 1000000};
				nanosleep(&ts, NULL);
			}
			continue;
		}
		for (ssize_t off = 0; off < n;) {
			const struct inotify_event *ev = (const void *)(buf + off);
			off += (ssize_t)(sizeof(*ev) + ev->len);
			pthread_mutex_lock(&console_lock);
			for (struct console_watch *c = console_list; c; c = c->next)
				if (c->wd == ev->wd)
					console_rotate(c->path, c->max);
			pthread_mutex_unlock(&console_lock);
		}
		/* QEMU writes the console byte by byte: let the events of a burst
		 * coalesce (a guest writes a few KiB in this time). */
		struct timespec ts = {0, 10 * 1000000};
		nanosleep(&ts, NULL);
	}
	return NULL;
}

static int start_service_thread(void *(*fn)(void *));
static void console_init(void)
{
	console_ifd = inotify_init1(IN_CLOEXEC);
	if (console_ifd >= 0 && start_service_thread(console_main) < 0) {
		close(console_ifd);
		console_ifd = -1;
	}
}

static int console_watch_add(const char *path, size_t max)
{
	pthread_once(&console_once, console_init);
	if (console_ifd < 0)
		return -1;
	pthread_mutex_lock(&console_lock);
	int wd = inotify_add_watch(console_ifd, path, IN_MODIFY);
	if (wd >= 0) {
		struct console_watch *c = bl_malloc0(sizeof(*c));
		c->wd = wd;
		c->max = max;
		c->path = bl_strdup(path);
		c->next = console_list;
		console_list = c;
	}
	pthread_mutex_unlock(&console_lock);
	if (wd >= 0)
		console_rotate(path, max); /* what came before the watch */
	return wd;
}

static void console_watch_remove(int wd)
{
	if (wd < 0)
		return;
	pthread_mutex_lock(&console_lock);
	for (struct console_watch **pp = &console_list; *pp; pp = &(*pp)->next) {
		struct console_watch *c = *pp;
		if (c->wd != wd)
			continue;
		*pp = c->next;
		(void)inotify_rm_watch(console_ifd, wd);
		free(c->path);
		free(c);
		break;
	}
	pthread_mutex_unlock(&console_lock);
}

/*
 * libvirt allows one embedded driver root per process, and it cannot be
 * reopened elsewhere once opened. So every VM of a process shares one
 * connection rooted at RUN_DIR/libvirt/<pid>, removed at process exit (or by
 * the next process that finds its owner dead).
 */
static pthread_mutex_t embed_lock = PTHREAD_MUTEX_INITIALIZER;
static virConnectPtr embed_conn;
static char *embed_root;

BL_DEFINE_CLEANUP(xmlTextWriter, xmlFreeTextWriter)
BL_DEFINE_CLEANUP(xmlBuffer, xmlBufferFree)

/* ------------------------------------------------------------ acceleration */

static bool cpu_has_virt_flags(void)
{
	_cleanup_fclose_ FILE *f = fopen("/proc/cpuinfo", "re");
	if (!f)
		return false;
	char line[8192];
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "flags", 5))
			continue;
		return strstr(line, " vmx") || strstr(line, " svm");
	}
	return false;
}

int bl_accel_choose(const char *override, bl_accel *ret, char *why, size_t why_len, bl_error_t *err)
{
	char dummy[8];
	if (!why) {
		why = dummy;
		why_len = sizeof(dummy);
	}
	if (!override || !*override)
		override = getenv("BOXLITE_ACCEL");
	if (override && *override && strcmp(override, "auto")) {
		if (!strcmp(override, "kvm"))
			*ret = BL_ACCEL_KVM;
		else if (!strcmp(override, "tcg"))
			*ret = BL_ACCEL_TCG;
		else
			return bl_set_error(err, BL_EINVAL,
					    "unknown accelerator '%s' (use kvm, tcg or auto)",
					    override);
		snprintf(why, why_len, "%s (explicitly requested)", bl_accel_name(*ret));
		return 0;
	}
	_cleanup_close_ int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		*ret = BL_ACCEL_TCG;
		snprintf(why, why_len, "tcg (/dev/kvm: %s)", strerror(errno));
	} else if (!cpu_has_virt_flags()) {
		*ret = BL_ACCEL_TCG;
		snprintf(why, why_len,
			 "tcg (/dev/kvm opens but the CPU shows neither vmx nor svm)");
	} else {
		*ret = BL_ACCEL_KVM;
		snprintf(why, why_len, "kvm (/dev/kvm usable, CPU has vmx/svm)");
	}
	return 0;
}

const char *bl_accel_name(bl_accel a)
{
	return a == BL_ACCEL_KVM ? "kvm" : "tcg";
}

/* ------------------------------------------------------------ domain XML */

#define W(call)                    \
	do {                       \
		if ((call) < 0)    \
			goto fail; \
	} while (0)

static int start(xmlTextWriterPtr w, const char *el)
{
	return xmlTextWriterStartElement(w, BAD_CAST el);
}

static int attr(xmlTextWriterPtr w, const char *name, const char *value)
{
	return xmlTextWriterWriteAttribute(w, BAD_CAST name, BAD_CAST value);
}

static int end(xmlTextWriterPtr w)
{
	return xmlTextWriterEndElement(w);
}

static int text_el(xmlTextWriterPtr w, const char *el, const char *text)
{
	return xmlTextWriterWriteElement(w, BAD_CAST el, BAD_CAST text);
}

/* <el a1=v1 a2=v2 .../> with NULL-terminated name/value pairs. */
static int empty_el(xmlTextWriterPtr w, const char *el, ...)
{
	va_list ap;
	if (start(w, el) < 0)
		return -1;
	va_start(ap, el);
	const char *name;
	while ((name = va_arg(ap, const char *))) {
		const char *value = va_arg(ap, const char *);
		if (attr(w, name, value) < 0) {
			va_end(ap);
			return -1;
		}
	}
	va_end(ap);
	return end(w);
}

/*
 * Under TCG the guest's TSC runs at the host's rate, but the guest cannot
 * calibrate it (no PIT reference under TCG, no HPET on microvm), falls back
 * to the jiffies clocksource and then ticks at HZ forever (~2-4 % of a host
 * core per idle VM). Told the rate (tsc_early_khz), it keeps the TSC and
 * stops its tick when idle. Measured once against CLOCK_MONOTONIC_RAW and
 * cached in RUN_DIR/tsc-khz (the host's TSC rate does not change).
 */
static unsigned long measure_tsc_khz(void)
{
#if defined(__x86_64__)
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC_RAW, &a);
	uint64_t c0 = __builtin_ia32_rdtsc();
	struct timespec ts = {0, 20 * 1000000};
	nanosleep(&ts, NULL);
	uint64_t c1 = __builtin_ia32_rdtsc();
	clock_gettime(CLOCK_MONOTONIC_RAW, &b);
	int64_t ns = (b.tv_sec - a.tv_sec) * 1000000000ll + (b.tv_nsec - a.tv_nsec);
	if (ns <= 0 || c1 <= c0)
		return 0;
	return (unsigned long)((double)(c1 - c0) * 1e6 / (double)ns + 0.5);
#else
	return 0;
#endif
}

static unsigned long host_tsc_khz(void)
{
	static unsigned long khz;
	_cleanup_free_ char *path = bl_asprintf("%s/tsc-khz", bl_vm_run_dir());
	unsigned long v = __atomic_load_n(&khz, __ATOMIC_ACQUIRE);
	if (v)
		return v;
	_cleanup_free_ char *buf = NULL;
	if (bl_read_file(path, 32, &buf, NULL, NULL) == 0)
		v = strtoul(buf, NULL, 10);
	if (v < 100000 || v > 20000000) {
		v = measure_tsc_khz();
		if (v < 100000 || v > 20000000)
			return 0;
		char num[32];
		int n = snprintf(num, sizeof(num), "%lu\n", v);
		_cleanup_free_ char *tmp = bl_asprintf("%s.%d", path, (int)getpid());
		if (bl_write_file(tmp, num, (size_t)n, 0644, NULL) < 0 || rename(tmp, path) < 0)
			(void)unlink(tmp);
	}
	__atomic_store_n(&khz, v, __ATOMIC_RELEASE);
	return v;
}

static int write_os(xmlTextWriterPtr w, const bl_vm_config *cfg)
{
	char clock[48] = "";
	unsigned long khz = cfg->accel == BL_ACCEL_TCG ? host_tsc_khz() : 0;
	if (khz)
		snprintf(clock, sizeof(clock), " tsc_early_khz=%lu", khz);
	_cleanup_free_ char *cmdline =
	    bl_asprintf("%s%s%s%s", BASE_CMDLINE, clock, cfg->cmdline_extra ? " " : "",
			cfg->cmdline_extra ? cfg->cmdline_extra : "");
	W(start(w, "os"));
	W(start(w, "type"));
	W(attr(w, "arch", "x86_64"));
	W(attr(w, "machine", "microvm"));
	W(xmlTextWriterWriteString(w, BAD_CAST "hvm"));
	W(end(w));
	W(text_el(w, "kernel", cfg->kernel));
	W(text_el(w, "initrd", cfg->initrd));
	W(text_el(w, "cmdline", cmdline));
	W(end(w));
	return 0;
fail:
	return -1;
}

/* Free page reporting hands the pages the guest frees back to the host (a
 * balloon that is never inflated); a virtio-mmio device on microvm, where
 * libvirt's default (PCI) would fail "No PCI buses available". */
static int write_balloon(xmlTextWriterPtr w)
{
	const char *e = getenv("BOXLITE_BALLOON");
	if (e && !strcmp(e, "off"))
		return empty_el(w, "memballoon", "model", "none", NULL);
	W(start(w, "memballoon"));
	W(attr(w, "model", "virtio"));
	W(attr(w, "freePageReporting", "on"));
	W(empty_el(w, "address", "type", "virtio-mmio", NULL));
	W(end(w));
	return 0;
fail:
	return -1;
}

static int write_devices(xmlTextWriterPtr w, const bl_vm_config *cfg)
{
	W(start(w, "devices"));
	W(text_el(w, "emulator", QEMU_BINARY));
	/* microvm has no PCI: without these libvirt fails "No PCI buses available". */
	W(empty_el(w, "controller", "type", "usb", "model", "none", NULL));
	W(write_balloon(w));
	W(start(w, "controller"));
	W(attr(w, "type", "virtio-serial"));
	W(attr(w, "index", "0"));
	W(empty_el(w, "address", "type", "virtio-mmio", NULL));
	W(end(w));

	W(start(w, "serial"));
	W(attr(w, "type", "file"));
	/* Appending: the console cap truncates the file under QEMU's fd. */
	W(empty_el(w, "source", "path", cfg->console_log, "append", "on", NULL));
	W(empty_el(w, "target", "type", "isa-serial", NULL));
	W(end(w));

	W(start(w, "channel"));
	W(attr(w, "type", "unix"));
	W(empty_el(w, "source", "mode", "bind", "path", cfg->agent_socket, NULL));
	W(empty_el(w, "target", "type", "virtio", "name", "org.boxlite.agent", NULL));
	W(empty_el(w, "address", "type", "virtio-serial", "controller", "0", "bus", "0", "port",
		   "1", NULL));
	W(end(w));

	for (size_t i = 0; i < cfg->n_shares; i++) {
		W(start(w, "filesystem"));
		W(attr(w, "type", "mount"));
		W(attr(w, "accessmode", "passthrough"));
		W(empty_el(w, "driver", "type", "virtiofs", "queue", "1024", NULL));
		W(start(w, "binary"));
		W(attr(w, "path", cfg->virtiofsd ? cfg->virtiofsd : DEFAULT_VIRTIOFSD));
		W(attr(w, "xattr", "off"));
		/* An immutable source lets the guest keep its page cache across opens:
		 * with cache=auto every exec re-reads the binary through FUSE (~100 ms
		 * per exec under TCG). */
		W(empty_el(w, "cache", "mode", cfg->shares[i].mutable_source ? "auto" : "always",
			   NULL));
		W(end(w));
		W(empty_el(w, "source", "dir", cfg->shares[i].dir, NULL));
		W(empty_el(w, "target", "dir", cfg->shares[i].tag, NULL));
		W(empty_el(w, "address", "type", "virtio-mmio", NULL));
		W(end(w));
	}

	if (cfg->disk_image) {
		W(start(w, "disk"));
		W(attr(w, "type", "file"));
		W(attr(w, "device", "disk"));
		W(empty_el(w, "driver", "name", "qemu", "type", "raw", "cache", "unsafe", NULL));
		W(empty_el(w, "source", "file", cfg->disk_image, NULL));
		W(empty_el(w, "target", "dev", "vda", "bus", "virtio", NULL));
		W(empty_el(w, "address", "type", "virtio-mmio", NULL));
		W(end(w));
	}

	/* Entropy for the guest: without it early getrandom() can stall under TCG. */
	W(start(w, "rng"));
	W(attr(w, "model", "virtio"));
	W(start(w, "backend"));
	W(attr(w, "model", "random"));
	W(xmlTextWriterWriteString(w, BAD_CAST "/dev/urandom"));
	W(end(w));
	W(empty_el(w, "address", "type", "virtio-mmio", NULL));
	W(end(w));

	W(end(w)); /* devices */
	return 0;
fail:
	return -1;
}

unsigned bl_vm_tb_cache_mib(unsigned memory_mib)
{
	const char *e = getenv("BOXLITE_TB_CACHE_MIB");
	if (e && *e) {
		unsigned long v = strtoul(e, NULL, 10);
		return v <= 4096 ? (unsigned)v : 0;
	}
	/* QEMU's default is 1 GiB, filled (and kept resident) as the guest runs
	 * new code: an eighth of the guest's RAM, 32-128 MiB, holds what a
	 * small guest's programs translate to. */
	unsigned v = memory_mib / 8;
	return v < 32 ? 32 : v > 128 ? 128 : v;
}

/* TCG only: the translation cache's size. */
static int write_features(xmlTextWriterPtr w, const bl_vm_config *cfg)
{
	unsigned tb = bl_vm_tb_cache_mib(cfg->memory_mib);
	if (cfg->accel == BL_ACCEL_KVM || !tb)
		return 0;
	char num[16];
	snprintf(num, sizeof(num), "%u", tb);
	W(start(w, "features"));
	W(start(w, "tcg"));
	W(start(w, "tb-cache"));
	W(attr(w, "unit", "MiB"));
	W(xmlTextWriterWriteString(w, BAD_CAST num));
	W(end(w));
	W(end(w));
	W(end(w));
	return 0;
fail:
	return -1;
}

/* Host CPU per VM (its cgroup): a weight, and at most its vCPUs' worth of
 * host CPU for the whole domain (vCPU and emulator threads together). */
static int write_cputune(xmlTextWriterPtr w, const bl_vm_config *cfg)
{
	const char *e = getenv("BOXLITE_CPUTUNE");
	if (e && !strcmp(e, "off"))
		return 0;
	char num[32];
	W(start(w, "cputune"));
	snprintf(num, sizeof(num), "%u", cfg->cpu_shares ? cfg->cpu_shares : BL_VM_SHARES_BOOT);
	W(text_el(w, "shares", num));
	W(text_el(w, "global_period", "100000"));
	snprintf(num, sizeof(num), "%u", cfg->vcpus * 100000u);
	W(text_el(w, "global_quota", num));
	W(end(w));
	return 0;
fail:
	return -1;
}

static int write_domain(xmlTextWriterPtr w, const bl_vm_config *cfg)
{
	char num[32];
	W(xmlTextWriterStartDocument(w, NULL, NULL, NULL));
	W(start(w, "domain"));
	W(attr(w, "type", cfg->accel == BL_ACCEL_KVM ? "kvm" : "qemu"));
	W(attr(w, "xmlns:qemu", "http://libvirt.org/schemas/domain/qemu/1.0"));
	W(text_el(w, "name", cfg->name));
	snprintf(num, sizeof(num), "%u", cfg->memory_mib);
	W(start(w, "memory"));
	W(attr(w, "unit", "MiB"));
	W(xmlTextWriterWriteString(w, BAD_CAST num));
	W(end(w));
	snprintf(num, sizeof(num), "%u", cfg->vcpus);
	W(text_el(w, "vcpu", num));
	/* virtio-fs needs guest RAM shared with virtiofsd. */
	W(start(w, "memoryBacking"));
	W(empty_el(w, "source", "type", "memfd", NULL));
	W(empty_el(w, "access", "mode", "shared", NULL));
	W(end(w));
	W(write_cputune(w, cfg));
	W(write_os(w, cfg));
	W(write_features(w, cfg));
	if (cfg->accel == BL_ACCEL_KVM)
		W(empty_el(w, "cpu", "mode", "host-passthrough", NULL));
	/* The guest ends the VM by rebooting; every way out destroys it. */
	W(text_el(w, "on_poweroff", "destroy"));
	W(text_el(w, "on_reboot", "destroy"));
	W(text_el(w, "on_crash", "destroy"));
	W(write_devices(w, cfg));
	if (cfg->qemu_uid) {
		/* This VM's QEMU under a uid/gid of its own (libvirt's DAC driver;
		 * no relabelling: libvirt hands QEMU its files as descriptors). */
		char label[32];
		snprintf(label, sizeof(label), "+%u:+%u", cfg->qemu_uid, cfg->qemu_uid);
		W(start(w, "seclabel"));
		W(attr(w, "type", "static"));
		W(attr(w, "model", "dac"));
		W(attr(w, "relabel", "no"));
		W(text_el(w, "label", label));
		W(end(w));
	}
	/* libvhost-user (virtiofsd) refuses legacy virtio-mmio devices. */
	W(xmlTextWriterStartElementNS(w, BAD_CAST "qemu", BAD_CAST "commandline", NULL));
	W(xmlTextWriterStartElementNS(w, BAD_CAST "qemu", BAD_CAST "arg", NULL));
	W(attr(w, "value", "-global"));
	W(end(w));
	W(xmlTextWriterStartElementNS(w, BAD_CAST "qemu", BAD_CAST "arg", NULL));
	W(attr(w, "value", "virtio-mmio.force-legacy=false"));
	W(end(w));
	for (size_t i = 0; cfg->qemu_args && cfg->qemu_args[i]; i++) {
		W(xmlTextWriterStartElementNS(w, BAD_CAST "qemu", BAD_CAST "arg", NULL));
		W(attr(w, "value", cfg->qemu_args[i]));
		W(end(w));
	}
	W(end(w));
	W(end(w)); /* domain */
	W(xmlTextWriterEndDocument(w));
	return 0;
fail:
	return -1;
}

static int check_config(const bl_vm_config *cfg, bl_error_t *err)
{
	if (!cfg->name || !*cfg->name || strlen(cfg->name) > 64)
		return bl_set_error(err, BL_EINVAL, "VM name must be 1-64 characters");
	if (!cfg->kernel || !cfg->initrd || !cfg->console_log || !cfg->agent_socket)
		return bl_set_error(err, BL_EINVAL,
				    "VM config lacks kernel, initrd, log or socket");
	if (cfg->memory_mib < 32 || cfg->memory_mib > 1024 * 1024)
		return bl_set_error(err, BL_EINVAL, "memory %u MiB out of range (32 MiB - 1 TiB)",
				    cfg->memory_mib);
	if (cfg->vcpus < 1 || cfg->vcpus > 64)
		return bl_set_error(err, BL_EINVAL, "vcpus %u out of range (1-64)", cfg->vcpus);
	if (cfg->console_log[0] != '/' || cfg->agent_socket[0] != '/')
		return bl_set_error(err, BL_EINVAL,
				    "console log and agent socket need absolute paths");
	if (cfg->n_shares > BL_VM_MAX_SHARES)
		return bl_set_error(err, BL_EINVAL, "too many shares");
	for (size_t i = 0; i < cfg->n_shares; i++)
		if (!cfg->shares[i].tag || !*cfg->shares[i].tag ||
		    strlen(cfg->shares[i].tag) > 36 || !cfg->shares[i].dir ||
		    cfg->shares[i].dir[0] != '/')
			return bl_set_error(err, BL_EINVAL, "share %zu: bad tag or directory", i);
	return 0;
}

int bl_vm_domain_xml(const bl_vm_config *cfg, char **ret_xml, bl_error_t *err)
{
	int r = check_config(cfg, err);
	if (r < 0)
		return r;
	_cleanup_(xmlBufferFreep) xmlBufferPtr buf = xmlBufferCreate();
	if (!buf)
		return bl_set_error(err, BL_ESYSTEM, "xmlBufferCreate failed");
	_cleanup_(xmlFreeTextWriterp) xmlTextWriterPtr w = xmlNewTextWriterMemory(buf, 0);
	if (!w)
		return bl_set_error(err, BL_ESYSTEM, "xmlNewTextWriterMemory failed");
	(void)xmlTextWriterSetIndent(w, 1);
	if (write_domain(w, cfg) < 0)
		return bl_set_error(err, BL_ESYSTEM, "writing domain XML failed");
	xmlFreeTextWriter(steal_pointer(&w));
	*ret_xml = bl_strdup((const char *)xmlBufferContent(buf));
	return 0;
}

/* ------------------------------------------------------------ reaping */

/* QEMU and virtiofsd are daemonized by libvirt; with this process a child
 * subreaper (bl_host_prepare) they are our children, and reaping them here
 * lets libvirt see them gone at once (an init that does not reap leaves
 * zombies that libvirt waits on for 40 s each, also those of its capability
 * probes). Only daemonized ones (another session) named like them are ours to
 * reap: libvirt waits for its direct children itself. */
static bool is_vm_zombie(pid_t pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
	if (n <= 0)
		return false;
	buf[n] = '\0';
	char *open_paren = strchr(buf, '('), *close_paren = strrchr(buf, ')');
	if (!open_paren || !close_paren || close_paren[1] != ' ')
		return false;
	int ppid = 0, pgrp = 0, sid = 0;
	if (close_paren[2] != 'Z' || sscanf(close_paren + 4, "%d %d %d", &ppid, &pgrp, &sid) != 3)
		return false;
	/* boxlite-guard: the guardian of a child of ours that died (we inherited it). */
	bool named = !strncmp(open_paren + 1, "qemu-system", 11) ||
		     !strncmp(open_paren + 1, "virtiofsd", 9) ||
		     !strncmp(open_paren + 1, "boxlite-guard)", 14);
	return named && sid != getsid(0);
}

/*
 * A VM process that dies under a running sandbox ends it at once: a dead
 * virtiofsd leaves the guest's file system requests waiting forever, so
 * QEMU is killed too; the agent channel then closes and every call on the
 * sandbox fails, with this reason (bl_vm_dead_reason).
 */
static void vm_process_died(const siginfo_t *si)
{
	pthread_mutex_lock(&watch_lock);
	for (struct bl_vm *vm = watch_list; vm; vm = vm->watch_next) {
		bool is_qemu = si->si_pid == vm->qemu_pid, is_fs = false;
		for (size_t i = 0; i < vm->n_pids; i++)
			is_fs = is_fs || vm->pids[i] == si->si_pid;
		if ((!is_qemu && !is_fs) || vm->destroying)
			continue;
		bool killed = si->si_code == CLD_KILLED || si->si_code == CLD_DUMPED;
		if (vm->dead_why[0] || (is_qemu && !killed) ||
		    (is_fs && !killed && si->si_status == 0))
			break;
		if (killed)
			snprintf(vm->dead_why, sizeof(vm->dead_why),
				 "%s (pid %d%s) was killed by signal %d",
				 is_qemu ? "QEMU" : "virtiofsd", (int)si->si_pid,
				 is_qemu ? "" : ", the root file system server", si->si_status);
		else
			snprintf(
			    vm->dead_why, sizeof(vm->dead_why),
			    "virtiofsd (pid %d, the root file system server) exited with status %d",
			    (int)si->si_pid, si->si_status);
		if (is_fs && vm->qemu_pid > 0)
			(void)kill(vm->qemu_pid, SIGKILL);
		break;
	}
	pthread_mutex_unlock(&watch_lock);
}

/* Reaps every zombie child of ours that is a daemonized QEMU or virtiofsd
 * (found by pid: waitid(P_ALL) alone would return the same unrelated
 * zombie - an orphan reparented to this subreaper, say - again and again and
 * starve the VM processes behind it). Returns how many. */
static int reap_vm_zombies(void)
{
	_cleanup_closedir_ DIR *d = opendir("/proc");
	struct dirent *de;
	int n = 0;
	pid_t self = getpid();
	while (d && (de = readdir(d))) {
		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		pid_t pid = (pid_t)atoi(de->d_name);
		char path[64], buf[512];
		snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
		_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
		ssize_t len = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
		if (len <= 0)
			continue;
		buf[len] = '\0';
		char *cp = strrchr(buf, ')');
		int ppid = 0;
		if (!cp || cp[1] != ' ' || cp[2] != 'Z' || sscanf(cp + 4, "%d", &ppid) != 1 ||
		    ppid != self || !is_vm_zombie(pid))
			continue;
		int st = 0;
		if (waitpid(pid, &st, WNOHANG) != pid)
			continue;
		siginfo_t si;
		memset(&si, 0, sizeof(si));
		si.si_pid = pid;
		si.si_code = WIFSIGNALED(st) ? CLD_KILLED : CLD_EXITED;
		si.si_status = WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st);
		vm_process_died(&si);
		n++;
	}
	return n;
}

/* Waits (without reaping) for any child to exit, then reaps the VM
 * processes among the zombies; others are left to their owners. */
static void *reaper_main(void *arg)
{
	(void)arg;
	for (;;) {
		siginfo_t si = {0};
		if (waitid(P_ALL, 0, &si, WEXITED | WNOWAIT) < 0) {
			/* No children right now: nothing to reap until a VM starts. */
			struct timespec ts = {0, 50 * 1000000};
			nanosleep(&ts, NULL);
			continue;
		}
		if (si.si_pid > 0 && si.si_pid == guardian_pid) {
			/* Killed by someone: the protection is gone, say so once. */
			(void)waitpid(si.si_pid, NULL, WNOHANG);
			guardian_pid = -1;
			bl_warn("the VM guardian (pid %d) died: VMs being created may outlive "
				"this process if it is killed",
				(int)si.si_pid);
			continue;
		}
		if (si.si_pid > 0 && is_vm_zombie(si.si_pid)) {
			int st = 0;
			if (waitpid(si.si_pid, &st, WNOHANG) == si.si_pid) {
				si.si_code = WIFSIGNALED(st) ? CLD_KILLED : CLD_EXITED;
				si.si_status = WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st);
				vm_process_died(&si);
			}
			continue;
		}
		if (reap_vm_zombies() > 0)
			continue;
		/* Someone else's child (libvirt's, the application's, an orphan):
		 * its owner reaps it; look again in a moment. */
		struct timespec ts = {0, 20 * 1000000};
		nanosleep(&ts, NULL);
	}
	return NULL;
}

/* A detached background thread that never takes the process's signals. */
static int start_service_thread(void *(*fn)(void *))
{
	pthread_t t;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int r = pthread_create(&t, &attr, fn, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	return r == 0 ? 0 : -1;
}

static pthread_once_t reaper_once = PTHREAD_ONCE_INIT;
static void reaper_init(void)
{
	int subreaper = 0;
	if (prctl(PR_GET_CHILD_SUBREAPER, &subreaper) == 0 && subreaper)
		(void)start_service_thread(reaper_main);
}

/* ------------------------------------------------------------ libvirt */

static void quiet_libvirt(void *opaque, virErrorPtr e)
{
	(void)opaque;
	(void)e;
}

const char *bl_vm_run_dir(void);

static void *event_loop(void *arg)
{
	(void)arg;
	for (;;)
		(void)virEventRunDefaultImpl();
	return NULL;
}

static pthread_once_t libvirt_once = PTHREAD_ONCE_INIT;
static int libvirt_init_result;
static void libvirt_init(void)
{
	/* Library code never prints: errors come back through bl_error_t, and the
	 * embedded driver's own log goes to a file unless the user chose. */
	virSetErrorFunc(NULL, quiet_libvirt);
	if (!getenv("LIBVIRT_LOG_OUTPUTS")) {
		_cleanup_free_ char *dir = bl_asprintf("%s/libvirt", bl_vm_run_dir());
		_cleanup_free_ char *out = bl_asprintf("3:file:%s/libvirt.log", dir);
		if (bl_mkdir_p(dir, 0711, NULL) == 0)
			setenv("LIBVIRT_LOG_OUTPUTS", out, 0);
	}
	if (virInitialize() < 0 || virEventRegisterDefaultImpl() < 0) {
		libvirt_init_result = -1;
		return;
	}
	/* The embedded driver and domain events need a running event loop. */
	if (start_service_thread(event_loop) < 0)
		libvirt_init_result = -1;
}

static int virt_error(bl_error_t *err, const char *what)
{
	const char *m = virGetLastErrorMessage();
	return bl_set_error(err, BL_EBACKEND, "%s: %s", what, m ? m : "unknown libvirt error");
}

const char *bl_vm_caps_cache_dir(void)
{
	const char *d = getenv("BOXLITE_CAPS_CACHE");
	return d && *d ? d : "/var/cache/boxlite/libvirt-caps";
}

/* Copies the regular files of src that are missing or older in dst (created);
 * each lands by rename, so concurrent readers never see half a file. Best
 * effort: a failure only costs a capability probe later. */
static void copy_newer_files(const char *src, const char *dst)
{
	_cleanup_closedir_ DIR *d = opendir(src);
	if (!d || bl_mkdir_p(dst, 0700, NULL) < 0)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_type != DT_REG || strstr(de->d_name, ".tmp."))
			continue;
		_cleanup_free_ char *from = bl_asprintf("%s/%s", src, de->d_name);
		_cleanup_free_ char *to = bl_asprintf("%s/%s", dst, de->d_name);
		struct stat sf, st;
		if (stat(from, &sf) < 0 || (stat(to, &st) == 0 && st.st_mtime >= sf.st_mtime))
			continue;
		_cleanup_free_ char *tmp = bl_asprintf("%s.tmp.%d", to, (int)getpid());
		_cleanup_free_ char *data = NULL;
		size_t len = 0;
		if (bl_read_file(from, 16 << 20, &data, &len, NULL) < 0)
			continue;
		if (bl_write_file(tmp, data, len, 0600, NULL) < 0 || rename(tmp, to) < 0)
			(void)unlink(tmp);
	}
}

const char *bl_vm_run_dir(void)
{
	const char *d = getenv("BOXLITE_RUN_DIR");
	return d && *d ? d : "/run/boxlite";
}

const char *bl_vm_embed_root(void)
{
	return embed_root;
}

/* Removes the embedded roots of processes that no longer exist. */
static void gc_dead_roots(const char *parent)
{
	_cleanup_closedir_ DIR *d = opendir(parent);
	struct dirent *de;
	while (d && (de = readdir(d))) {
		char *end = NULL;
		long pid = strtol(de->d_name, &end, 10);
		if (pid <= 0 || *end || pid == getpid() || kill((pid_t)pid, 0) == 0 ||
		    errno != ESRCH)
			continue;
		_cleanup_free_ char *path = bl_asprintf("%s/%s", parent, de->d_name);
		(void)bl_rm_rf(path, NULL);
	}
}

static void embed_atexit(void)
{
	pthread_mutex_lock(&embed_lock);
	pid_t guard = guardian_pid;
	virDomainPtr *doms = NULL;
	int n = embed_conn ? virConnectListAllDomains(embed_conn, &doms, 0) : 0;
	for (int i = 0; i < n; i++) {
		(void)virDomainDestroy(doms[i]);
		virDomainFree(doms[i]);
	}
	free(doms);
	if (embed_conn)
		virConnectClose(embed_conn);
	embed_conn = NULL;
	if (embed_root)
		(void)bl_rm_rf(embed_root, NULL);
	/* Nothing is left for the guardian: let it end now, and reap it (no
	 * zombie for a slow init), waiting a moment at most. */
	if (guard > 0) {
		guardian_pid = -1;
		if (guardian_wfd >= 0)
			close(guardian_wfd);
		guardian_wfd = -1;
		for (int i = 0; i < 200 && waitpid(guard, NULL, WNOHANG) == 0; i++)
			usleep(5000);
	}
	pthread_mutex_unlock(&embed_lock);
}

/* Logs go to plain files (no virtlogd needed). libvirt does not chown our
 * files (kernel, initramfs, images are world-readable; a chown would touch
 * shared files and leave xattrs behind). Otherwise Debian's defaults: QEMU
 * runs as libvirt-qemu inside its seccomp sandbox. */
static const char embed_qemu_conf[] = "stdio_handler = \"file\"\n"
				      "dynamic_ownership = 0\n"
				      "remember_owner = 0\n";

/*
 * QEMU starts paused (-S) and the guest runs only once libvirt's create has
 * finished. If this process dies in between, nothing notices: the agent's
 * channel-closed safety net needs a running guest, and the embedded driver
 * died with us. So the first embedded open forks a guardian that waits for
 * this process to end (EOF on a pipe whose only writer is us) and then
 * SIGKILLs every QEMU and virtiofsd whose command line names our root (after
 * a clean exit embed_atexit has destroyed them all and it finds none).
 * virtiofsd is started with its socket as a descriptor, so its command line
 * names only its shared directory: before each create the owner writes
 * "source=DIR," down the pipe, and the guardian kills the virtiofsd naming
 * any of the last GUARD_SHARES of those too. The process may have threads:
 * between fork and _exit the guardian makes only async-signal-safe calls and
 * raw system calls, and formats by hand.
 */
#define GUARD_SHARES 128
#define GUARD_LINE   512
static char guard_shares[GUARD_SHARES][GUARD_LINE];
static size_t guard_n_shares;
static size_t guard_utoa(char *buf, unsigned long v)
{
	char tmp[24];
	size_t n = 0, i = 0;
	do
		tmp[n++] = (char)('0' + v % 10);
	while ((v /= 10) && n < sizeof(tmp));
	while (n)
		buf[i++] = tmp[--n];
	return i;
}

static bool guard_contains(const char *hay, size_t hlen, const char *needle, size_t nlen)
{
	for (size_t i = 0; nlen && i + nlen <= hlen; i++) {
		size_t j = 0;
		while (j < nlen && hay[i + j] == needle[j])
			j++;
		if (j == nlen)
			return true;
	}
	return false;
}

/* argv[0]'s last component starts with prefix. */
static bool guard_argv0_is(const char *cmd, size_t len, const char *prefix)
{
	size_t end = 0, base = 0, plen = strlen(prefix);
	while (end < len && cmd[end])
		if (cmd[end++] == '/')
			base = end;
	return end - base >= plen && !strncmp(cmd + base, prefix, plen);
}

static bool guard_names_share(const char *cmd, size_t len)
{
	size_t n = guard_n_shares < GUARD_SHARES ? guard_n_shares : GUARD_SHARES;
	for (size_t i = 0; i < n; i++)
		if (guard_contains(cmd, len, guard_shares[i], strlen(guard_shares[i])))
			return true;
	return false;
}

/* Reads "source=DIR,\n" lines until EOF. */
static void guard_listen(void)
{
	char buf[1024], line[GUARD_LINE];
	size_t pos = 0;
	bool overflow = false;
	for (;;) {
		ssize_t n = read(0, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] != '\n') {
				if (pos < sizeof(line) - 1)
					line[pos++] = buf[i];
				else
					overflow = true;
				continue;
			}
			if (pos && !overflow) {
				char *slot = guard_shares[guard_n_shares++ % GUARD_SHARES];
				memcpy(slot, line, pos);
				slot[pos] = '\0';
			}
			pos = 0;
			overflow = false;
		}
	}
}

/* Before a create: the guardian learns the VM's shared directory. */
static void guardian_note_share(const char *dir)
{
	char msg[GUARD_LINE];
	int n = snprintf(msg, sizeof(msg), "source=%s,\n", dir);
	if (guardian_wfd >= 0 && n > 0 && (size_t)n < sizeof(msg))
		(void)!write(guardian_wfd, msg, (size_t)n); /* non-blocking: dropped if full */
}

static void guard_sweep(const char *root, size_t rlen)
{
	int dfd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return;
	char ents[8192], cmd[16384], path[48];
	for (;;) {
		long n = syscall(SYS_getdents64, dfd, ents, sizeof(ents));
		if (n <= 0)
			break;
		for (long off = 0; off < n;) {
			struct {
				uint64_t ino;
				int64_t off;
				unsigned short reclen;
				unsigned char type;
				char name[];
			} *de = (void *)(ents + off);
			off += de->reclen;
			unsigned long pid = 0;
			const char *c = de->name;
			while (*c >= '0' && *c <= '9')
				pid = pid * 10 + (unsigned long)(*c++ - '0');
			if (*c || !pid || pid > INT32_MAX)
				continue;
			size_t p = 0;
			memcpy(path, "/proc/", 6), p = 6;
			p += guard_utoa(path + p, pid);
			memcpy(path + p, "/cmdline", 9);
			int fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd < 0)
				continue;
			ssize_t len = read(fd, cmd, sizeof(cmd));
			close(fd);
			if (len <= 0)
				continue;
			bool qemu = guard_argv0_is(cmd, (size_t)len, "qemu-system");
			bool fs = guard_argv0_is(cmd, (size_t)len, "virtiofsd");
			if (((qemu || fs) && guard_contains(cmd, (size_t)len, root, rlen)) ||
			    (fs && guard_names_share(cmd, (size_t)len)))
				(void)kill((pid_t)pid, SIGKILL);
		}
	}
	close(dfd);
}

/* The guardian's command line is not its owner's (ps, pgrep and leak
 * counts would see a second shim or monitor): its copy of the argv area
 * (arg_start..arg_end, fields 48-49 of /proc/self/stat) is overwritten. */
static void guard_rename(void)
{
	static const char name[] = "boxlite-guard";
	(void)prctl(PR_SET_NAME, name, 0, 0, 0);
	char st[1024];
	int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, st, sizeof(st) - 1) : -1;
	if (fd >= 0)
		close(fd);
	if (n <= 0)
		return;
	st[n] = '\0';
	char *p = strrchr(st, ')');
	if (!p || p[1] != ' ')
		return;
	p += 2;
	unsigned long arg[2] = {0, 0};
	for (int field = 3; *p && field <= 49; field++) {
		unsigned long x = 0;
		while (*p >= '0' && *p <= '9')
			x = x * 10 + (unsigned long)(*p++ - '0');
		if (field >= 48)
			arg[field - 48] = x;
		while (*p && *p != ' ')
			p++;
		if (*p == ' ')
			p++;
	}
	if (!arg[0] || arg[1] < arg[0] + sizeof(name))
		return;
	memset((char *)arg[0], 0, arg[1] - arg[0]);
	memcpy((char *)arg[0], name, sizeof(name));
}

static void start_guardian(const char *root)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return;
	/* "ROOT/" so that root 12 does not match root 123. */
	char needle[PATH_MAX];
	size_t rlen = strlen(root);
	if (rlen + 2 > sizeof(needle)) {
		close(p[0]), close(p[1]);
		return;
	}
	memcpy(needle, root, rlen);
	needle[rlen++] = '/';
	needle[rlen] = '\0';
	pid_t pid = fork();
	if (pid < 0) {
		bl_warn("cannot start the VM guardian: %s", strerror(errno));
		close(p[0]), close(p[1]);
		return;
	}
	if (pid == 0) {
		/* Out of the terminal's process group (Ctrl-C is for the owner),
		 * holding nothing of the owner's but the pipe's read end. */
		(void)setsid();
		guard_rename();
		sigset_t none;
		sigemptyset(&none);
		(void)sigprocmask(SIG_SETMASK, &none, NULL);
		if (dup2(p[0], 0) < 0)
			_exit(1);
		int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
		if (null >= 0)
			(void)dup2(null, 1), (void)dup2(null, 2);
		(void)syscall(SYS_close_range, 3u, ~0u, 0u);
		guard_listen();
		guard_sweep(needle, rlen);
		_exit(0);
	}
	/* The write end stays open for this process's whole life. */
	close(p[0]);
	(void)fcntl(p[1], F_SETFL, O_NONBLOCK);
	guardian_wfd = p[1];
	guardian_pid = pid;
}

static int embed_open(bl_error_t *err)
{
	if (embed_conn)
		return 0;
	_cleanup_free_ char *parent = bl_asprintf("%s/libvirt", bl_vm_run_dir());
	int r = bl_mkdir_p(parent, 0711, err);
	if (r < 0)
		return bl_error_prefix(err, "libvirt root");
	gc_dead_roots(parent);
	_cleanup_free_ char *root = bl_asprintf("%s/%d", parent, (int)getpid());
	_cleanup_free_ char *etc = bl_asprintf("%s/etc", root);
	_cleanup_free_ char *conf = bl_asprintf("%s/qemu.conf", etc);
	_cleanup_free_ char *caps = bl_asprintf("%s/cache/qemu/capabilities", root);
	/* QEMU (libvirt-qemu) must traverse the root to its domain directory. */
	if ((r = bl_mkdir_p(root, 0711, err)) < 0 || (r = bl_mkdir_p(etc, 0700, err)) < 0 ||
	    (r = bl_write_file(conf, embed_qemu_conf, strlen(embed_qemu_conf), 0600, err)) < 0)
		return bl_error_prefix(err, "libvirt root");
	copy_newer_files(bl_vm_caps_cache_dir(), caps);
	_cleanup_free_ char *uri = bl_asprintf("qemu:///embed?root=%s", root);
	if (!guardian_pid)
		start_guardian(root);
	uint64_t t0 = bl_now_monotonic_ns();
	embed_conn = virConnectOpen(uri);
	if (!embed_conn) {
		(void)bl_rm_rf(root, NULL);
		return virt_error(err, uri);
	}
	bl_debug("libvirt: opened %s in %llu ms", uri,
		 (unsigned long long)((bl_now_monotonic_ns() - t0) / 1000000));
	if (!embed_root)
		atexit(embed_atexit);
	free(embed_root);
	embed_root = steal_pointer(&root);
	return 0;
}

int bl_vm_open(const char *uri, bl_vm **ret, bl_error_t *err)
{
	pthread_once(&libvirt_once, libvirt_init);
	pthread_once(&reaper_once, reaper_init);
	if (libvirt_init_result < 0)
		return virt_error(err, "initialize libvirt");
	_cleanup_free_ bl_vm *vm = bl_malloc0(sizeof(*vm));
	vm->console_wd = -1;
	if (!uri || !*uri) {
		pthread_mutex_lock(&embed_lock);
		int r = embed_open(err);
		if (r == 0) {
			vm->conn = embed_conn;
			virConnectRef(embed_conn);
		}
		pthread_mutex_unlock(&embed_lock);
		if (r < 0)
			return r;
		vm->embedded = true;
	} else {
		vm->conn = virConnectOpen(uri);
		if (!vm->conn)
			return virt_error(err, uri);
	}
	*ret = steal_pointer(&vm);
	return 0;
}

/* Without udev /dev/kvm stays root:root 0600: libvirt probes QEMU's
 * capabilities as root but checks them as the QEMU user, disagrees about KVM
 * and re-probes QEMU (seconds) before every TCG domain. Said once a process. */
static void warn_kvm_node(bl_accel accel)
{
	static bool warned;
	struct stat st;
	if (accel != BL_ACCEL_TCG || stat("/dev/kvm", &st) < 0 || !S_ISCHR(st.st_mode))
		return;
	struct group gr, *kvm = NULL;
	char buf[4096];
	(void)getgrnam_r("kvm", &gr, buf, sizeof(buf), &kvm);
	bool group_ok = (st.st_mode & 0060) == 0060 && (!kvm || kvm->gr_gid == st.st_gid);
	if (group_ok || (st.st_mode & 0006) == 0006 ||
	    __atomic_exchange_n(&warned, true, __ATOMIC_RELAXED))
		return;
	bl_warn("/dev/kvm is not accessible to the kvm group (mode %04o): every VM start "
		"re-probes QEMU; run packaging/host-setup.sh as root",
		(unsigned)(st.st_mode & 07777));
}

static void watch_vm(bl_vm *vm, const bl_vm_config *cfg);

/* ------------------------------------------------------------ QEMU uids */

/*
 * Each embedded-driver VM's QEMU runs under its own uid and gid from a range
 * ($BOXLITE_QEMU_UID_BASE, default 0x70000000, 65536 of them), so a QEMU
 * escape reaches no other sandbox's QEMU, memory or sockets. A uid is held
 * by a file RUN_DIR/uids/<uid> (O_EXCL, the owner's pid inside; a dead
 * owner's file is taken over) until the VM is destroyed. Off with
 * BOXLITE_QEMU_UIDS=off, and under KVM unless /dev/kvm is usable by anyone
 * (a uid of its own has no kvm group).
 */
#define QEMU_UID_BASE_DEFAULT 0x70000000u
#define QEMU_UID_COUNT	      65536u

static bool qemu_uids_wanted(bl_accel accel)
{
	const char *e = getenv("BOXLITE_QEMU_UIDS");
	if (e && !strcmp(e, "off"))
		return false;
	struct stat st;
	if (accel == BL_ACCEL_KVM && (stat("/dev/kvm", &st) < 0 || (st.st_mode & 0006) != 0006))
		return false;
	return true;
}

static unsigned qemu_uid_base(void)
{
	const char *e = getenv("BOXLITE_QEMU_UID_BASE");
	unsigned long v = e && *e ? strtoul(e, NULL, 10) : QEMU_UID_BASE_DEFAULT;
	return v >= 65536 && v < 0xffff0000ul - QEMU_UID_COUNT ? (unsigned)v
							       : QEMU_UID_BASE_DEFAULT;
}

static char *uid_lock_path(unsigned uid)
{
	return bl_asprintf("%s/uids/%u", bl_vm_run_dir(), uid);
}

/* A free uid of the range, held by this process; 0 when none. */
static unsigned qemu_uid_take(void)
{
	_cleanup_free_ char *dir = bl_asprintf("%s/uids", bl_vm_run_dir());
	if (bl_mkdir_p(dir, 0700, NULL) < 0)
		return 0;
	unsigned base = qemu_uid_base(), start = 0;
	if (getrandom(&start, sizeof(start), 0) != sizeof(start))
		start = (unsigned)getpid();
	for (unsigned i = 0; i < QEMU_UID_COUNT; i++) {
		unsigned uid = base + (start + i) % QEMU_UID_COUNT;
		_cleanup_free_ char *path = uid_lock_path(uid);
		for (int attempt = 0; attempt < 2; attempt++) {
			int fd =
			    open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
			if (fd >= 0) {
				char pid[24];
				int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
				(void)!write(fd, pid, (size_t)n);
				close(fd);
				return uid;
			}
			if (errno != EEXIST)
				return 0;
			/* Held: by a live process, or left by a dead one. */
			_cleanup_free_ char *buf = NULL;
			long owner = 0;
			if (bl_read_file(path, 32, &buf, NULL, NULL) == 0)
				owner = strtol(buf, NULL, 10);
			if (owner <= 0 || (kill((pid_t)owner, 0) < 0 && errno == ESRCH))
				(void)unlink(path);
			else
				break;
		}
	}
	return 0;
}

static void qemu_uid_release(unsigned uid)
{
	if (!uid)
		return;
	_cleanup_free_ char *path = uid_lock_path(uid);
	(void)unlink(path);
}

unsigned bl_vm_uid_take(void)
{
	return qemu_uid_take();
}

void bl_vm_uid_release(unsigned uid)
{
	qemu_uid_release(uid);
}

bool bl_vm_uid_held(unsigned uid)
{
	_cleanup_free_ char *path = uid_lock_path(uid);
	_cleanup_free_ char *buf = NULL;
	if (bl_read_file(path, 32, &buf, NULL, NULL) < 0)
		return errno != ENOENT;
	long owner = strtol(buf, NULL, 10);
	return owner > 0 && (kill((pid_t)owner, 0) == 0 || errno != ESRCH);
}

unsigned bl_vm_qemu_uid(const bl_vm *vm)
{
	return vm ? vm->qemu_uid : 0;
}

int bl_vm_start(bl_vm *vm, const bl_vm_config *cfg, bl_error_t *err)
{
	if (vm->dom)
		return bl_set_error(err, BL_ESTATE, "VM already started");
	/* QEMU resolves paths from its own working directory: make them absolute. */
	_cleanup_free_ char *kernel = realpath(cfg->kernel, NULL);
	if (!kernel)
		return bl_set_error_errno(err, errno, "guest kernel %s", cfg->kernel);
	_cleanup_free_ char *initrd = realpath(cfg->initrd, NULL);
	if (!initrd)
		return bl_set_error_errno(err, errno, "guest initramfs %s", cfg->initrd);
	bl_vm_config abs = *cfg;
	abs.kernel = kernel;
	abs.initrd = initrd;
	if (vm->embedded && !abs.qemu_uid && qemu_uids_wanted(cfg->accel)) {
		vm->qemu_uid = qemu_uid_take();
		abs.qemu_uid = vm->qemu_uid;
	}
	_cleanup_free_ char *xml = NULL;
	int r = bl_vm_domain_xml(&abs, &xml, err);
	if (r < 0) {
		qemu_uid_release(vm->qemu_uid);
		vm->qemu_uid = 0;
		return r;
	}
	bl_debug("libvirt: domain XML:\n%s", xml);
	warn_kvm_node(cfg->accel);
	for (size_t i = 0; vm->embedded && i < abs.n_shares; i++)
		guardian_note_share(abs.shares[i].dir);
	uint64_t t0 = bl_now_monotonic_ns();
	/* A remote connection's AUTODESTROY ends the domain when we go away; the
	 * embedded driver lacks it, and embed_atexit() destroys ours instead. */
	vm->dom =
	    virDomainCreateXML(vm->conn, xml, vm->embedded ? 0 : VIR_DOMAIN_START_AUTODESTROY);
	if (!vm->dom) {
		r = virt_error(err, "create domain");
		qemu_uid_release(vm->qemu_uid);
		vm->qemu_uid = 0;
		return r;
	}
	vm->console_wd = console_watch_add(cfg->console_log, bl_vm_console_max());
	bl_info("libvirt: domain %s started in %llu ms (accel %s)", cfg->name,
		(unsigned long long)((bl_now_monotonic_ns() - t0) / 1000000),
		bl_accel_name(cfg->accel));
	/* libvirt re-probes QEMU when the cached capabilities are stale (new QEMU,
	 * new libvirt, KVM access changed): share the fresh result. */
	if (vm->embedded) {
		_cleanup_free_ char *caps = bl_asprintf("%s/cache/qemu/capabilities", embed_root);
		copy_newer_files(caps, bl_vm_caps_cache_dir());
		watch_vm(vm, cfg);
	}
	return 0;
}

/* The virtiofsd processes serving dir: their command line names it. */
static size_t find_virtiofsd(const char *dir, pid_t *pids, size_t max)
{
	_cleanup_free_ char *needle = bl_asprintf("source=%s,", dir);
	_cleanup_closedir_ DIR *d = opendir("/proc");
	struct dirent *de;
	size_t n = 0;
	while (d && n < max && (de = readdir(d))) {
		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		char path[300], buf[4096];
		snprintf(path, sizeof(path), "/proc/%s/cmdline", de->d_name);
		_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
		ssize_t len = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
		if (len <= 0)
			continue;
		for (ssize_t i = 0; i < len; i++)
			buf[i] = buf[i] ? buf[i] : ' ';
		buf[len] = '\0';
		if (strstr(buf, "virtiofsd") && strstr(buf, needle))
			pids[n++] = (pid_t)atoi(de->d_name);
	}
	return n;
}

/* From now on the reaper ends the VM when QEMU or a virtiofsd dies. */
static void watch_vm(bl_vm *vm, const bl_vm_config *cfg)
{
	pid_t qemu = bl_vm_qemu_pid(vm);
	pid_t pids[MAX_WATCHED];
	size_t n = 0;
	for (size_t i = 0; i < cfg->n_shares && n < MAX_WATCHED; i++)
		n += find_virtiofsd(cfg->shares[i].dir, pids + n, MAX_WATCHED - n);
	pthread_mutex_lock(&watch_lock);
	vm->qemu_pid = qemu;
	memcpy(vm->pids, pids, n * sizeof(pid_t));
	vm->n_pids = n;
	vm->watched = true;
	vm->watch_next = watch_list;
	watch_list = vm;
	pthread_mutex_unlock(&watch_lock);
	/* Died before we looked: it was a zombie of ours then, or is gone. */
	for (size_t i = 0; i < n; i++) {
		if (kill(pids[i], 0) < 0 && errno == ESRCH) {
			siginfo_t si;
			memset(&si, 0, sizeof(si));
			si.si_pid = pids[i];
			si.si_code = CLD_KILLED;
			vm_process_died(&si);
		}
	}
}

static void unwatch_vm(bl_vm *vm)
{
	pthread_mutex_lock(&watch_lock);
	vm->destroying = true;
	if (vm->watched) {
		for (struct bl_vm **pp = &watch_list; *pp; pp = &(*pp)->watch_next) {
			if (*pp == vm) {
				*pp = vm->watch_next;
				break;
			}
		}
		vm->watched = false;
	}
	pthread_mutex_unlock(&watch_lock);
}

const char *bl_vm_dead_reason(bl_vm *vm)
{
	if (!vm)
		return NULL;
	pthread_mutex_lock(&watch_lock);
	const char *why = vm->dead_why[0] ? vm->dead_why : NULL;
	pthread_mutex_unlock(&watch_lock);
	return why;
}

bool bl_vm_is_running(bl_vm *vm)
{
	return vm && vm->dom && virDomainIsActive(vm->dom) == 1;
}

int bl_vm_wait_gone(bl_vm *vm, int timeout_ms, bl_error_t *err)
{
	uint64_t deadline = bl_now_monotonic_ns() + (uint64_t)timeout_ms * 1000000ull;
	while (bl_vm_is_running(vm)) {
		if (timeout_ms >= 0 && bl_now_monotonic_ns() >= deadline)
			return bl_set_error(err, BL_ETIMEOUT, "VM still running after %d ms",
					    timeout_ms);
		struct timespec ts = {0, 10 * 1000000};
		nanosleep(&ts, NULL);
	}
	return 0;
}

pid_t bl_vm_qemu_pid(bl_vm *vm)
{
	if (!vm || !vm->embedded || !vm->dom)
		return 0;
	const char *name = virDomainGetName(vm->dom);
	_cleanup_free_ char *path = bl_asprintf("%s/run/qemu/%s.pid", embed_root, name);
	_cleanup_free_ char *buf = NULL;
	if (bl_read_file(path, 32, &buf, NULL, NULL) < 0)
		return 0;
	return (pid_t)atoi(buf);
}

int bl_vm_destroy(bl_vm *vm, bl_error_t *err)
{
	if (!vm || !vm->dom)
		return 0;
	unwatch_vm(vm);
	console_watch_remove(vm->console_wd);
	vm->console_wd = -1;
	int r = 0;
	if (virDomainIsActive(vm->dom) == 1 && virDomainDestroy(vm->dom) < 0) {
		virErrorPtr e = virGetLastError();
		if (!e || (e->code != VIR_ERR_NO_DOMAIN && e->code != VIR_ERR_OPERATION_INVALID))
			r = virt_error(err, "destroy domain");
	}
	virDomainFree(vm->dom);
	vm->dom = NULL;
	/* A QEMU that may still run keeps its uid (its file is reclaimed once
	 * this process is gone). */
	if (r == 0)
		qemu_uid_release(vm->qemu_uid);
	vm->qemu_uid = 0;
	return r;
}

void bl_vm_free(bl_vm *vm)
{
	if (!vm)
		return;
	bl_error_t err = BL_ERROR_INIT;
	if (bl_vm_destroy(vm, &err) < 0)
		bl_warn("%s", err.msg);
	unwatch_vm(vm);
	if (vm->conn)
		virConnectClose(vm->conn);
	free(vm);
}

unsigned long bl_vm_libvirt_version(void)
{
	unsigned long v = 0;
	(void)virGetVersion(&v, NULL, NULL);
	return v;
}

int bl_vm_suspend(bl_vm *vm, bool suspend, bl_error_t *err)
{
	if (!vm || !vm->dom)
		return bl_set_error(err, BL_ESTATE, "the VM is not running");
	int r = suspend ? virDomainSuspend(vm->dom) : virDomainResume(vm->dom);
	return r < 0 ? virt_error(err, suspend ? "suspend domain" : "resume domain") : 0;
}

bool bl_vm_is_suspended(bl_vm *vm)
{
	int state = 0, reason = 0;
	return vm && vm->dom && virDomainGetState(vm->dom, &state, &reason, 0) == 0 &&
	       state == VIR_DOMAIN_PAUSED;
}

int bl_vm_set_shares(bl_vm *vm, unsigned shares, bl_error_t *err)
{
	if (!vm || !vm->dom)
		return bl_set_error(err, BL_ESTATE, "the VM is not running");
	const char *e = getenv("BOXLITE_CPUTUNE");
	if (e && !strcmp(e, "off"))
		return 0;
	virTypedParameter p = {.type = VIR_TYPED_PARAM_ULLONG, .value.ul = shares};
	snprintf(p.field, sizeof(p.field), "%s", VIR_DOMAIN_SCHEDULER_CPU_SHARES);
	if (virDomainSetSchedulerParametersFlags(vm->dom, &p, 1, VIR_DOMAIN_AFFECT_LIVE) < 0)
		return virt_error(err, "set CPU shares");
	return 0;
}

void bl_vm_console_moved(bl_vm *vm, const char *path)
{
	if (!vm || vm->console_wd < 0)
		return;
	pthread_mutex_lock(&console_lock);
	for (struct console_watch *c = console_list; c; c = c->next) {
		if (c->wd == vm->console_wd) {
			free(c->path);
			c->path = bl_strdup(path);
		}
	}
	pthread_mutex_unlock(&console_lock);
}
