/* Process helpers for the ttrpc interop tests. */
#pragma once

#include "bl_test.h"
#include "bl_util.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Starts argv with stdout and stderr going to log (or /dev/null); returns the pid. */
static inline pid_t tp_spawn(char *const argv[], const char *log)
{
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	int fd = open(log ? log : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd >= 0) {
		dup2(fd, 1);
		dup2(fd, 2);
	}
	setpgid(0, 0);
	execvp(argv[0], argv);
	_exit(127);
}

/* Runs argv to completion, output into *out (malloc'd); returns the exit status. */
static inline int tp_run(char *const argv[], char **out)
{
	char tmpl[] = "/tmp/boxlite-ttrpc-out-XXXXXX";
	int fd = mkstemp(tmpl);
	close(fd);
	pid_t pid = tp_spawn(argv, tmpl);
	int st = 0;
	waitpid(pid, &st, 0);
	size_t len;
	if (bl_read_file(tmpl, 1 << 20, out, &len, NULL) < 0)
		*out = bl_strdup("");
	unlink(tmpl);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static inline void tp_stop(pid_t pid)
{
	if (pid <= 0)
		return;
	kill(pid, SIGTERM);
	for (int i = 0; i < 100; i++) {
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return;
		usleep(50000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

static inline bool tp_wait_path(const char *path, int timeout_ms)
{
	struct stat st;
	for (int i = 0; i < timeout_ms / 20; i++) {
		if (stat(path, &st) == 0)
			return true;
		usleep(20000);
	}
	return false;
}

static inline bool tp_have(const char *prog)
{
	char *cmd = bl_asprintf("command -v %s >/dev/null 2>&1", prog);
	int rc = system(cmd);
	free(cmd);
	return rc == 0;
}
