#include "bl_test.h"
#include "bl_util.h"

#include <CUnit/Basic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int bl_test_run(const char *suite, const bl_test_case *tests)
{
	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	CU_pSuite s = CU_add_suite(suite, NULL, NULL);
	if (!s)
		return 2;
	const char *only = getenv("BL_TEST_ONLY");
	for (const bl_test_case *t = tests; t->name; t++) {
		if (only && !strstr(t->name, only))
			continue;
		if (!CU_add_test(s, t->name, t->fn))
			return 2;
	}
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	unsigned failed = CU_get_number_of_tests_failed();
	unsigned failures = CU_get_number_of_failures();
	CU_cleanup_registry();
	return failed || failures ? 1 : 0;
}

void bl_test_skip(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	printf("\nSKIP: ");
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	fflush(stdout);
}

bool bl_test_is_root(void)
{
	return geteuid() == 0;
}

const char *bl_test_build_dir(void)
{
	const char *b = getenv("BOXLITE_BUILD");
	return b && *b ? b : "build";
}

char *bl_test_tmpdir(const char *tag)
{
	char *p = bl_asprintf("/tmp/boxlite-test-%s-XXXXXX", tag);
	if (!mkdtemp(p)) {
		perror("mkdtemp");
		abort();
	}
	return p;
}

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

int bl_test_count_procs(const char *needle)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	int count = 0;
	while (d && (de = readdir(d))) {
		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		char path[300], buf[8192];
		snprintf(path, sizeof(path), "/proc/%s/cmdline", de->d_name);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		ssize_t n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n <= 0)
			continue;
		for (ssize_t i = 0; i < n; i++)
			if (buf[i] == '\0')
				buf[i] = ' ';
		buf[n] = '\0';
		if (strstr(buf, needle))
			count++;
	}
	if (d)
		closedir(d);
	return count;
}

int bl_test_connect_unix(const char *path, int timeout_ms)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return -1;
	strcpy(sa.sun_path, path);
	for (int waited = 0; waited <= timeout_ms; waited += 10) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -1;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return fd;
		close(fd);
		struct timespec ts = {0, 10 * 1000000};
		nanosleep(&ts, NULL);
	}
	return -1;
}

int bl_test_read_line(int fd, char *buf, size_t len, int timeout_ms)
{
	size_t used = 0;
	uint64_t deadline = bl_now_monotonic_ns() + (uint64_t)timeout_ms * 1000000ull;
	while (used + 1 < len) {
		uint64_t now = bl_now_monotonic_ns();
		if (now >= deadline)
			return -1;
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int r = poll(&p, 1, (int)((deadline - now) / 1000000) + 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		ssize_t n = read(fd, buf + used, 1);
		if (n <= 0)
			return -1;
		if (buf[used] == '\n') {
			buf[used] = '\0';
			return (int)used;
		}
		used++;
	}
	return -1;
}

char *bl_test_kernel(void)
{
	return bl_asprintf("%s/vmlinux", bl_test_build_dir());
}

char *bl_test_initrd(void)
{
	return bl_asprintf("%s/initramfs.cpio", bl_test_build_dir());
}
