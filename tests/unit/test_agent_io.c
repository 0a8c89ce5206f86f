/* Output buffering with backpressure and the stdin writer (agent/io.c). */
#include "../../agent/io.h"
#include "bl_cleanup.h"
#include "bl_test.h"
#include "bl_util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MS 1000000ull

static void read_all(agent_stream *s, size_t *total, bool *eof)
{
	for (;;) {
		uint8_t *d = NULL;
		size_t n = 0;
		CU_ASSERT_EQUAL(agent_stream_read(s, AGENT_STREAM_MAX, 0, &d, &n, eof), 0);
		free(d);
		*total += n;
		if (*eof || n == 0)
			return;
	}
}

static void test_data_then_eof(void)
{
	int p[2];
	CU_ASSERT_EQUAL_FATAL(pipe2(p, O_CLOEXEC), 0);
	agent_stream *s = agent_stream_new(p[0]);
	CU_ASSERT_EQUAL(write(p[1], "hello", 5), 5);
	close(p[1]); /* the process exits right after writing */
	uint8_t *d = NULL;
	size_t n = 0;
	bool eof = false;
	CU_ASSERT_EQUAL(agent_stream_read(s, 3, 0, &d, &n, &eof), 0);
	CU_ASSERT(n == 3 && !eof && !memcmp(d, "hel", 3));
	free(d);
	CU_ASSERT_EQUAL(agent_stream_read(s, 100, 0, &d, &n, &eof), 0);
	CU_ASSERT(n == 2 && !eof && !memcmp(d, "lo", 2));
	free(d);
	CU_ASSERT_EQUAL(agent_stream_read(s, 100, 0, &d, &n, &eof), 0);
	CU_ASSERT(n == 0 && eof);
	free(d);
	agent_stream_free(s);
}

static void test_deadline(void)
{
	int p[2];
	CU_ASSERT_EQUAL_FATAL(pipe2(p, O_CLOEXEC), 0);
	agent_stream *s = agent_stream_new(p[0]);
	uint8_t *d = NULL;
	size_t n = 1;
	bool eof = true;
	uint64_t t0 = bl_now_monotonic_ns();
	CU_ASSERT_EQUAL(agent_stream_read(s, 100, t0 + 50 * MS, &d, &n, &eof), 0);
	CU_ASSERT(n == 0 && !eof);
	CU_ASSERT(bl_now_monotonic_ns() - t0 >= 50 * MS);
	free(d);
	agent_stream_close(s); /* a delete: readers see EOF */
	CU_ASSERT_EQUAL(agent_stream_read(s, 100, 0, &d, &n, &eof), 0);
	CU_ASSERT(n == 0 && eof);
	agent_stream_free(s);
	close(p[1]);
}

struct writer {
	int fd;
	size_t total, written;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	static char chunk[65536];
	memset(chunk, 'x', sizeof(chunk));
	while (w->written < w->total) {
		ssize_t n = write(w->fd, chunk, sizeof(chunk));
		if (n <= 0)
			break;
		__atomic_add_fetch(&w->written, (size_t)n, __ATOMIC_SEQ_CST);
	}
	close(w->fd);
	return NULL;
}

static void test_backpressure(void)
{
	int p[2];
	CU_ASSERT_EQUAL_FATAL(pipe2(p, O_CLOEXEC), 0);
	agent_stream *s = agent_stream_new(p[0]);
	struct writer w = {.fd = p[1], .total = 4u << 20};
	pthread_t t;
	CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, writer_main, &w), 0);
	usleep(300 * 1000);
	/* The buffer holds 1 MiB, the pipe some more; the writer must be stuck. */
	size_t stuck = __atomic_load_n(&w.written, __ATOMIC_SEQ_CST);
	CU_ASSERT(stuck >= AGENT_STREAM_MAX);
	CU_ASSERT(stuck < AGENT_STREAM_MAX + (1u << 20));
	size_t total = 0;
	bool eof = false;
	while (!eof)
		read_all(s, &total, &eof);
	pthread_join(t, NULL);
	CU_ASSERT_EQUAL(total, w.total);
	agent_stream_free(s);
}

static void test_stdin(void)
{
	int p[2];
	CU_ASSERT_EQUAL_FATAL(pipe2(p, O_CLOEXEC), 0);
	agent_stdin *in = agent_stdin_new(p[1], false);
	size_t w = 0;
	bl_error_t err = BL_ERROR_INIT;
	CU_ASSERT_EQUAL(agent_stdin_write(in, "abc", 3, 0, &w, &err), 0);
	CU_ASSERT_EQUAL(w, 3);
	char buf[8];
	CU_ASSERT_EQUAL(read(p[0], buf, sizeof(buf)), 3);
	/* Nobody reads: a bounded write stops at the deadline. */
	_cleanup_free_ char *big = bl_malloc0(1u << 20);
	uint64_t dl = bl_now_monotonic_ns() + 100 * MS;
	CU_ASSERT_EQUAL(agent_stdin_write(in, big, 1u << 20, dl, &w, &err), 0);
	CU_ASSERT(w > 0 && w < (1u << 20));
	CU_ASSERT_EQUAL(agent_stdin_close(in, &err), 0);
	CU_ASSERT(agent_stdin_write(in, "x", 1, 0, &w, &err) < 0);
	size_t got = 0;
	ssize_t n;
	while ((n = read(p[0], big, 1u << 20)) > 0)
		got += (size_t)n;
	CU_ASSERT_EQUAL(n, 0); /* EOF: the write end is closed */
	CU_ASSERT(got > 0);
	agent_stdin_free(in);
	close(p[0]);
}

static void test_stdin_reader_gone(void)
{
	int p[2];
	CU_ASSERT_EQUAL_FATAL(pipe2(p, O_CLOEXEC), 0);
	agent_stdin *in = agent_stdin_new(p[1], false);
	close(p[0]);
	size_t w = 0;
	bl_error_t err = BL_ERROR_INIT;
	signal(SIGPIPE, SIG_IGN);
	CU_ASSERT(agent_stdin_write(in, "abc", 3, 0, &w, &err) < 0);
	CU_ASSERT_EQUAL(err.sys_errno, EPIPE);
	agent_stdin_free(in);
}

int main(void)
{
	bl_error_t err = BL_ERROR_INIT;
	if (agent_io_start(&err) < 0)
		return 2;
	static const bl_test_case tests[] = {
	    {"data_then_eof", test_data_then_eof},	   {"deadline", test_deadline},
	    {"backpressure", test_backpressure},	   {"stdin", test_stdin},
	    {"stdin_reader_gone", test_stdin_reader_gone}, {NULL, NULL},
	};
	return bl_test_run("agent_io", tests);
}
