#include "validate.h"

#include <string.h>
#include <sys/wait.h>

static bool id_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '.' || c == '-';
}

bool agent_valid_id(const char *s)
{
	if (!s)
		return false;
	size_t n = strnlen(s, AGENT_ID_MAX + 1);
	if (n == 0 || n > AGENT_ID_MAX || !strcmp(s, ".") || !strcmp(s, ".."))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!id_char(s[i]))
			return false;
	}
	return true;
}

bool agent_valid_exec_id(const char *s)
{
	return s && (s[0] == '\0' || agent_valid_id(s));
}

bool agent_valid_subpath(const char *s)
{
	if (!s || strnlen(s, 4097) > 4096 || s[0] == '/')
		return false;
	const char *p = s;
	while (*p) {
		size_t n = strcspn(p, "/");
		if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
			return false;
		p += n;
		if (*p == '/' && !*++p)
			return false; /* trailing slash */
	}
	return true;
}

bool agent_valid_devname(const char *s)
{
	if (!s)
		return false;
	size_t n = strnlen(s, 33);
	if (n == 0 || n > 32)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9')))
			return false;
	}
	return true;
}

bool agent_valid_hostname(const char *s)
{
	if (!s)
		return false;
	size_t n = strnlen(s, 65);
	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '-'))
			return false;
	}
	return true;
}

int agent_exit_status(int wstatus, int *ret_signal)
{
	int sig = 0, code = 0;
	if (WIFEXITED(wstatus))
		code = WEXITSTATUS(wstatus);
	else if (WIFSIGNALED(wstatus)) {
		sig = WTERMSIG(wstatus);
		code = 128 + sig;
	}
	if (ret_signal)
		*ret_signal = sig;
	return code;
}
