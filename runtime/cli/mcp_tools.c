/*
 * The tools of `boxlite mcp`: their JSON Schemas (the one description of
 * their arguments: tools/list sends them, mcp_tools_check validates calls
 * against them), and what they do in the session's sandbox.
 */
#include "cli.h"
#include "bl_cleanup.h"
#include "bl_util.h"
#include "mcp.h"
#include "options.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define IO_CHUNK       (64u << 10)
#define DRAIN_AFTER_MS 2000u /* output still in flight after the exit */

/* ------------------------------------------------------------ schemas */

struct tool {
	const char *name, *title, *description, *schema;
	bool read_only, destructive, runs; /* runs: stdout/stderr/exit_code result */
};

static const struct tool tools[] = {
    {"run_python", "Run Python",
     "Run Python 3 code in the sandbox's persistent interpreter: variables, imports and "
     "functions stay for later calls (like a notebook). A final expression's value is "
     "printed. Returns stdout, stderr and the exit code (1 after an uncaught exception, "
     "with the traceback on stderr).",
     "{\"type\":\"object\",\"properties\":{"
     "\"code\":{\"type\":\"string\",\"description\":\"Python source code\"},"
     "\"timeout\":{\"type\":\"number\",\"exclusiveMinimum\":0,"
     "\"description\":\"seconds before the run is interrupted\"}},"
     "\"required\":[\"code\"],\"additionalProperties\":false}",
     false, false, true},
    {"run_command", "Run a command",
     "Run a program in the sandbox (Debian Linux; no network unless the server allows "
     "it): a shell command line "
     "(run with sh -c) or an argv array. Returns stdout, stderr and the exit code.",
     "{\"type\":\"object\",\"properties\":{"
     "\"command\":{\"oneOf\":[{\"type\":\"string\",\"minLength\":1},"
     "{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"minItems\":1,\"maxItems\":4096}],"
     "\"description\":\"a shell command line, or an argv array run without a shell\"},"
     "\"stdin\":{\"type\":\"string\",\"description\":\"text for standard input\"},"
     "\"cwd\":{\"type\":\"string\",\"minLength\":1,\"description\":\"working directory\"},"
     "\"env\":{\"type\":\"object\",\"additionalProperties\":{\"type\":\"string\"},"
     "\"description\":\"extra environment variables\"},"
     "\"timeout\":{\"type\":\"number\",\"exclusiveMinimum\":0,"
     "\"description\":\"seconds before the command is killed\"}},"
     "\"required\":[\"command\"],\"additionalProperties\":false}",
     false, false, true},
    {"write_file", "Write a file",
     "Write a file in the sandbox (parent directories are created; an existing file is "
     "replaced).",
     "{\"type\":\"object\",\"properties\":{"
     "\"path\":{\"type\":\"string\",\"minLength\":1,\"description\":\"file path in the "
     "sandbox\"},"
     "\"content\":{\"type\":\"string\",\"description\":\"the file's content\"},"
     "\"encoding\":{\"type\":\"string\",\"enum\":[\"utf-8\",\"base64\"],"
     "\"description\":\"how content is encoded (default utf-8)\"}},"
     "\"required\":[\"path\",\"content\"],\"additionalProperties\":false}",
     false, false, false},
    {"read_file", "Read a file",
     "Read a file from the sandbox, as UTF-8 text or base64 (for binary files).",
     "{\"type\":\"object\",\"properties\":{"
     "\"path\":{\"type\":\"string\",\"minLength\":1,\"description\":\"file path in the "
     "sandbox\"},"
     "\"encoding\":{\"type\":\"string\",\"enum\":[\"utf-8\",\"base64\"],"
     "\"description\":\"how to return the content (default utf-8)\"}},"
     "\"required\":[\"path\"],\"additionalProperties\":false}",
     true, false, false},
    {"list_dir", "List a directory",
     "List a directory in the sandbox (ls -la: type, permissions, size, time, name).",
     "{\"type\":\"object\",\"properties\":{"
     "\"path\":{\"type\":\"string\",\"minLength\":1,\"description\":\"directory (default: "
     "the working directory)\"}},"
     "\"additionalProperties\":false}",
     true, false, false},
    {"reset", "Reset the sandbox",
     "Throw the sandbox away (files, processes, Python variables); the next call gets a "
     "fresh one.",
     "{\"type\":\"object\",\"properties\":{},\"additionalProperties\":false}", false, true, false},
};

static const char run_output_schema[] =
    "{\"type\":\"object\",\"properties\":{"
    "\"stdout\":{\"type\":\"string\"},\"stderr\":{\"type\":\"string\"},"
    "\"exit_code\":{\"type\":\"integer\"},\"timed_out\":{\"type\":\"boolean\"},"
    "\"truncated\":{\"type\":\"boolean\"}},"
    "\"required\":[\"stdout\",\"stderr\",\"exit_code\"]}";

static const struct tool *find_tool(const char *name)
{
	for (size_t i = 0; i < BL_ARRAY_SIZE(tools); i++)
		if (!strcmp(tools[i].name, name))
			return &tools[i];
	return NULL;
}

static struct json_object *parse_schema(const char *text)
{
	struct json_object *o = json_tokener_parse(text);
	if (!o)
		abort(); /* a bug in the literals above */
	return o;
}

static bool at_least(const char *version, const char *min)
{
	return strcmp(version, min) >= 0; /* YYYY-MM-DD */
}

struct json_object *mcp_tools_list(const char *version)
{
	struct json_object *list = json_object_new_array();
	for (size_t i = 0; i < BL_ARRAY_SIZE(tools); i++) {
		const struct tool *t = &tools[i];
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "name", json_object_new_string(t->name));
		if (at_least(version, "2025-06-18"))
			json_object_object_add(o, "title", json_object_new_string(t->title));
		json_object_object_add(o, "description", json_object_new_string(t->description));
		json_object_object_add(o, "inputSchema", parse_schema(t->schema));
		if (t->runs && at_least(version, "2025-06-18"))
			json_object_object_add(o, "outputSchema", parse_schema(run_output_schema));
		if (at_least(version, "2025-03-26")) {
			struct json_object *a = json_object_new_object();
			json_object_object_add(a, "readOnlyHint",
					       json_object_new_boolean(t->read_only));
			json_object_object_add(a, "destructiveHint",
					       json_object_new_boolean(t->destructive));
			json_object_object_add(a, "openWorldHint", json_object_new_boolean(0));
			json_object_object_add(o, "annotations", a);
		}
		json_object_array_add(list, o);
	}
	return list;
}

/* ------------------------------------------------------------ validation */

/* A small JSON Schema checker for the keywords the schemas above use. */
static bool check_value(struct json_object *schema, struct json_object *v, const char *path,
			char *msg, size_t len);

static bool type_ok(const char *type, struct json_object *v)
{
	if (!strcmp(type, "string"))
		return json_object_is_type(v, json_type_string);
	if (!strcmp(type, "integer"))
		return json_object_is_type(v, json_type_int);
	if (!strcmp(type, "number"))
		return json_object_is_type(v, json_type_int) ||
		       json_object_is_type(v, json_type_double);
	if (!strcmp(type, "boolean"))
		return json_object_is_type(v, json_type_boolean);
	if (!strcmp(type, "array"))
		return json_object_is_type(v, json_type_array);
	if (!strcmp(type, "object"))
		return json_object_is_type(v, json_type_object);
	return false;
}

static const char *type_word(const char *type)
{
	if (!strcmp(type, "object"))
		return "an object";
	if (!strcmp(type, "array"))
		return "an array";
	if (!strcmp(type, "integer"))
		return "an integer";
	return !strcmp(type, "string") ? "a string" : !strcmp(type, "number") ? "a number" : type;
}

static struct json_object *member(struct json_object *o, const char *key)
{
	struct json_object *v = NULL;
	return json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static bool check_object(struct json_object *schema, struct json_object *v, const char *path,
			 char *msg, size_t len)
{
	struct json_object *props = member(schema, "properties"), *req = member(schema, "required");
	struct json_object *extra = member(schema, "additionalProperties");
	for (size_t i = 0; req && i < json_object_array_length(req); i++) {
		const char *k = json_object_get_string(json_object_array_get_idx(req, i));
		if (!member(v, k)) {
			snprintf(msg, len, "%s: \"%s\" is required", path, k);
			return false;
		}
	}
	json_object_object_foreach(v, key, val)
	{
		char sub[160];
		snprintf(sub, sizeof(sub), "%s.%.60s", path, key);
		struct json_object *ps = props ? member(props, key) : NULL;
		if (!ps && extra && json_object_is_type(extra, json_type_boolean) &&
		    !json_object_get_boolean(extra)) {
			snprintf(msg, len, "%s: unknown argument \"%.60s\"", path, key);
			return false;
		}
		if (!ps && extra && json_object_is_type(extra, json_type_object))
			ps = extra;
		if (ps && !check_value(ps, val, sub, msg, len))
			return false;
	}
	return true;
}

static bool check_value(struct json_object *schema, struct json_object *v, const char *path,
			char *msg, size_t len)
{
	struct json_object *alt = member(schema, "oneOf");
	if (alt) {
		for (size_t i = 0; i < json_object_array_length(alt); i++)
			if (check_value(json_object_array_get_idx(alt, i), v, path, msg, len))
				return true;
		return false;
	}
	const char *type = json_object_get_string(member(schema, "type"));
	if (type && (!v || !type_ok(type, v))) {
		snprintf(msg, len, "%s: must be %s", path, type_word(type));
		return false;
	}
	struct json_object *en = member(schema, "enum");
	if (en) {
		bool found = false;
		for (size_t i = 0; i < json_object_array_length(en); i++)
			found = found ||
				!strcmp(json_object_get_string(json_object_array_get_idx(en, i)),
					json_object_get_string(v));
		if (!found) {
			snprintf(msg, len, "%s: must be one of %s", path,
				 json_object_to_json_string_ext(en, JSON_C_TO_STRING_PLAIN));
			return false;
		}
	}
	struct json_object *k;
	if ((k = member(schema, "exclusiveMinimum")) &&
	    !(json_object_get_double(v) > json_object_get_double(k))) {
		snprintf(msg, len, "%s: must be more than %g", path, json_object_get_double(k));
		return false;
	}
	if (json_object_is_type(v, json_type_double) && !isfinite(json_object_get_double(v))) {
		snprintf(msg, len, "%s: must be a finite number", path);
		return false;
	}
	if ((k = member(schema, "minLength")) &&
	    json_object_get_string_len(v) < json_object_get_int(k)) {
		snprintf(msg, len, "%s: must not be empty", path);
		return false;
	}
	if (json_object_is_type(v, json_type_array)) {
		size_t n = json_object_array_length(v);
		struct json_object *items = member(schema, "items");
		if ((k = member(schema, "minItems")) && n < (size_t)json_object_get_int(k)) {
			snprintf(msg, len, "%s: must not be empty", path);
			return false;
		}
		if ((k = member(schema, "maxItems")) && n > (size_t)json_object_get_int(k)) {
			snprintf(msg, len, "%s: has more than %d items", path,
				 json_object_get_int(k));
			return false;
		}
		for (size_t i = 0; items && i < n; i++) {
			char sub[160];
			snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
			if (!check_value(items, json_object_array_get_idx(v, i), sub, msg, len))
				return false;
		}
	}
	if (json_object_is_type(v, json_type_object))
		return check_object(schema, v, path, msg, len);
	return true;
}

static double arg_number(struct json_object *args, const char *key, double dflt)
{
	struct json_object *v = member(args, key);
	return v ? json_object_get_double(v) : dflt;
}

static const char *arg_string(struct json_object *args, const char *key, const char *dflt)
{
	struct json_object *v = member(args, key);
	return v ? json_object_get_string(v) : dflt;
}

int mcp_tools_check(const char *name, struct json_object *args, const mcp_config *cfg, char *msg,
		    size_t len)
{
	const struct tool *t = find_tool(name);
	if (!t) {
		snprintf(msg, len, "Unknown tool: %.80s", name);
		bl_sanitize_text(msg, strlen(msg), false);
		return -1;
	}
	_cleanup_(json_object_putp) struct json_object *schema = parse_schema(t->schema);
	if (!check_value(schema, args, "arguments", msg, len))
		return -1;
	double tmo = arg_number(args, "timeout", 0);
	if (tmo > cfg->max_timeout_sec) {
		snprintf(msg, len, "arguments.timeout: at most %u seconds", cfg->max_timeout_sec);
		return -1;
	}
	struct json_object *env = member(args, "env");
	json_object_object_foreach(env ? env : args, key, val)
	{
		(void)val;
		if (env && (!*key || strchr(key, '='))) {
			snprintf(msg, len, "arguments.env: bad variable name \"%.60s\"", key);
			return -1;
		}
	}
	struct json_object *code = member(args, "code");
	if (code && (size_t)json_object_get_string_len(code) > BL_CODEBOX_MAX_CODE) {
		snprintf(msg, len, "arguments.code: over %u MiB", BL_CODEBOX_MAX_CODE >> 20);
		return -1;
	}
	struct json_object *str;
	if (((str = member(args, "code")) || (str = member(args, "command"))) &&
	    json_object_is_type(str, json_type_string) &&
	    memchr(json_object_get_string(str), 0, (size_t)json_object_get_string_len(str))) {
		snprintf(msg, len, "arguments: code and commands cannot hold NUL characters");
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------ text */

/* Guest output as valid UTF-8 (each invalid byte becomes U+FFFD). */
static char *utf8_clean(const char *s, size_t n, size_t *ret_len)
{
	static const unsigned min[] = {0, 0x80, 0x800, 0x10000};
	char *out = bl_malloc0(n * 3 + 1);
	size_t k = 0;
	const unsigned char *p = (const unsigned char *)s;
	for (size_t i = 0; i < n;) {
		unsigned c = p[i], cp;
		size_t need;
		if (c < 0x80) {
			out[k++] = (char)c;
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0)
			need = 1, cp = c & 0x1f;
		else if ((c & 0xf0) == 0xe0)
			need = 2, cp = c & 0x0f;
		else if ((c & 0xf8) == 0xf0)
			need = 3, cp = c & 0x07;
		else
			goto bad;
		if (i + need >= n)
			goto bad;
		for (size_t j = 1; j <= need; j++) {
			if ((p[i + j] & 0xc0) != 0x80)
				goto bad;
			cp = cp << 6 | (p[i + j] & 0x3f);
		}
		if (cp < min[need] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			goto bad;
		memcpy(out + k, s + i, need + 1);
		k += need + 1;
		i += need + 1;
		continue;
	bad:
		memcpy(out + k, "\xef\xbf\xbd", 3);
		k += 3;
		i++;
	}
	out[k] = 0;
	*ret_len = k;
	return out;
}

static bool utf8_valid(const char *s, size_t n)
{
	size_t k = 0;
	_cleanup_free_ char *c = utf8_clean(s, n, &k);
	return k == n && memcmp(c, s, n) == 0 && !memchr(s, 0, n);
}

static struct json_object *clean_string(const char *s, size_t n)
{
	size_t k = 0;
	_cleanup_free_ char *c = utf8_clean(s ? s : "", s ? n : 0, &k);
	return json_object_new_string_len(c, (int)k);
}

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *base64_encode(const unsigned char *in, size_t n, size_t *ret_len)
{
	char *out = bl_malloc0((n + 2) / 3 * 4 + 1);
	size_t k = 0;
	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0) |
			     (i + 2 < n ? in[i + 2] : 0);
		out[k++] = b64chars[v >> 18 & 63];
		out[k++] = b64chars[v >> 12 & 63];
		out[k++] = i + 1 < n ? b64chars[v >> 6 & 63] : '=';
		out[k++] = i + 2 < n ? b64chars[v & 63] : '=';
	}
	*ret_len = k;
	return out;
}

/* Strict base64 (whitespace allowed); NULL when malformed. */
static unsigned char *base64_decode(const char *s, size_t n, size_t *ret_len)
{
	unsigned char *out = bl_malloc0(n / 4 * 3 + 3);
	size_t k = 0, q = 0, pad = 0;
	unsigned v = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == ' ' || c == '\n' || c == '\r' || c == '\t')
			continue;
		const char *pos = c ? strchr(b64chars, c) : NULL;
		if (c == '=' && q >= 2) {
			pad++;
			pos = b64chars;
		} else if (!pos || pad) {
			free(out);
			return NULL;
		}
		v = v << 6 | (unsigned)(pos - b64chars);
		if (++q == 4) {
			out[k++] = (unsigned char)(v >> 16);
			if (pad < 2)
				out[k++] = (unsigned char)(v >> 8);
			if (pad < 1)
				out[k++] = (unsigned char)v;
			q = 0;
			v = 0;
		}
	}
	if (q != 0) {
		free(out);
		return NULL;
	}
	*ret_len = k;
	return out;
}

/* A CallToolResult with one text block (and structured content when given). */
static struct json_object *tool_result(const char *text, bool is_error,
				       struct json_object *structured)
{
	struct json_object *r = json_object_new_object();
	struct json_object *content = json_object_new_array();
	struct json_object *item = json_object_new_object();
	json_object_object_add(item, "type", json_object_new_string("text"));
	json_object_object_add(item, "text", clean_string(text, strlen(text)));
	json_object_array_add(content, item);
	json_object_object_add(r, "content", content);
	if (structured)
		json_object_object_add(r, "structuredContent", structured);
	json_object_object_add(r, "isError", json_object_new_boolean(is_error));
	return r;
}

static struct json_object *tool_msg(bool is_error, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static struct json_object *tool_msg(bool is_error, const char *fmt, ...)
{
	char buf[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	bl_sanitize_text(buf, strlen(buf), true);
	return tool_result(buf, is_error, NULL);
}

#define tool_error(...) tool_msg(true, __VA_ARGS__)

struct run_out {
	char *out, *err;
	size_t out_len, err_len;
	int exit_code;
	bool timed_out, truncated;
	char note[512];
};

/* stdout, then stderr, then one line with the exit code and what happened. */
static struct json_object *run_result(const struct run_out *r, bool structured, bool is_error)
{
	struct json_object *so = clean_string(r->out, r->out_len);
	struct json_object *se = clean_string(r->err, r->err_len);
	size_t cap = (size_t)json_object_get_string_len(so) + json_object_get_string_len(se) + 1024;
	_cleanup_free_ char *text = bl_malloc0(cap);
	size_t k = 0;
	if (json_object_get_string_len(so))
		k += (size_t)snprintf(text + k, cap - k, "%s%s", json_object_get_string(so),
				      text[0] && r->out[r->out_len - 1] != '\n' ? "\n" : "");
	if (k && text[k - 1] != '\n')
		k += (size_t)snprintf(text + k, cap - k, "\n");
	if (json_object_get_string_len(se))
		k += (size_t)snprintf(text + k, cap - k, "[stderr]\n%s%s",
				      json_object_get_string(se),
				      r->err[r->err_len - 1] != '\n' ? "\n" : "");
	k += (size_t)snprintf(text + k, cap - k, "[exit code %d%s%s%s]", r->exit_code,
			      r->note[0] ? "; " : "", r->note,
			      r->truncated ? "; output truncated" : "");
	struct json_object *sc = NULL;
	if (structured) {
		sc = json_object_new_object();
		json_object_object_add(sc, "stdout", so);
		json_object_object_add(sc, "stderr", se);
		json_object_object_add(sc, "exit_code", json_object_new_int(r->exit_code));
		json_object_object_add(sc, "timed_out", json_object_new_boolean(r->timed_out));
		json_object_object_add(sc, "truncated", json_object_new_boolean(r->truncated));
	} else {
		json_object_put(so);
		json_object_put(se);
	}
	return tool_result(text, is_error, sc);
}

/* ------------------------------------------------------------ commands */

struct job {
	mcp_server *srv;
	bl_process *p;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	int refs;
	char *in;
	size_t in_len;
	char *buf[2];
	size_t len[2];
	size_t max;
	bool truncated;
	int eofs;
	bool exited;
	int wait_r;
	bl_exit ex;
	bl_error_t wait_err;
};

struct reader_arg {
	struct job *j;
	int stream;
};

static void job_unref(struct job *j)
{
	pthread_mutex_lock(&j->mu);
	bool last = --j->refs == 0;
	pthread_mutex_unlock(&j->mu);
	if (!last)
		return;
	bl_process_free(j->p);
	free(j->in);
	free(j->buf[0]);
	free(j->buf[1]);
	pthread_cond_destroy(&j->cond);
	pthread_mutex_destroy(&j->mu);
	free(j);
}

/* The end of a job thread: the sandbox may be torn down once all are over. */
static void job_thread_end(struct job *j)
{
	mcp_server *srv = j->srv;
	job_unref(j);
	pthread_mutex_lock(&srv->mu);
	srv->job_threads--;
	pthread_cond_broadcast(&srv->cond);
	pthread_mutex_unlock(&srv->mu);
}

static void *job_reader(void *arg)
{
	struct reader_arg *ra = arg;
	struct job *j = ra->j;
	int s = ra->stream;
	free(ra);
	_cleanup_free_ char *buf = bl_malloc0(IO_CHUNK);
	for (;;) {
		bl_error_t err = BL_ERROR_INIT;
		ssize_t n = bl_process_read(j->p, s, buf, IO_CHUNK, &err);
		if (n <= 0)
			break;
		pthread_mutex_lock(&j->mu);
		size_t i = (size_t)(s - 1), k = (size_t)n;
		if (j->len[i] + k > j->max) {
			k = j->len[i] < j->max ? j->max - j->len[i] : 0;
			j->truncated = true;
		}
		if (k) {
			j->buf[i] = realloc(j->buf[i], j->len[i] + k + 1);
			if (!j->buf[i])
				abort();
			memcpy(j->buf[i] + j->len[i], buf, k);
			j->len[i] += k;
			j->buf[i][j->len[i]] = 0;
		}
		pthread_mutex_unlock(&j->mu);
	}
	pthread_mutex_lock(&j->mu);
	j->eofs++;
	pthread_cond_broadcast(&j->cond);
	pthread_mutex_unlock(&j->mu);
	job_thread_end(j);
	return NULL;
}

static void *job_writer(void *arg)
{
	struct job *j = arg;
	bl_error_t err = BL_ERROR_INIT;
	if (j->in_len == 0 || bl_process_write(j->p, j->in, j->in_len, &err) == 0)
		(void)bl_process_close_stdin(j->p, &err);
	job_thread_end(j);
	return NULL;
}

static void *job_waiter(void *arg)
{
	struct job *j = arg;
	bl_exit ex = {0};
	bl_error_t err = BL_ERROR_INIT;
	int r = bl_process_wait(j->p, &ex, &err);
	pthread_mutex_lock(&j->mu);
	j->exited = true;
	j->wait_r = r;
	j->ex = ex;
	j->wait_err = err;
	pthread_cond_broadcast(&j->cond);
	pthread_mutex_unlock(&j->mu);
	job_thread_end(j);
	return NULL;
}

static void spawn(void *(*fn)(void *), void *arg)
{
	pthread_t t;
	if (pthread_create(&t, NULL, fn, arg) != 0)
		abort();
	(void)pthread_detach(t);
}

static void deadline_after(struct timespec *ts, uint64_t ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += (time_t)(ms / 1000);
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* Runs a process to its end (or its timeout: killed), collecting output
 * (max bytes per stream). in: stdin content or NULL (no stdin). */
static int job_run(mcp_call *call, bl_sandbox *sb, const bl_process_options *po, const char *in,
		   size_t in_len, uint64_t timeout_ms, size_t max, struct run_out *res,
		   bl_error_t *err)
{
	mcp_server *srv = call->srv;
	bl_process_options o = *po;
	o.stdin_open = in != NULL;
	bl_process *p = NULL;
	if (bl_sandbox_exec(sb, &o, &p, err) < 0)
		return -err->code;
	struct job *j = bl_malloc0(sizeof(*j));
	j->srv = srv;
	j->p = p;
	j->max = max;
	pthread_mutex_init(&j->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&j->cond, &ca);
	pthread_condattr_destroy(&ca);
	int threads = in ? 4 : 3;
	j->refs = threads + 1;
	if (in) {
		j->in = bl_malloc0(in_len + 1);
		memcpy(j->in, in, in_len);
		j->in_len = in_len;
	}
	pthread_mutex_lock(&srv->mu);
	srv->job_threads += threads;
	call->proc = p;
	bool cancelled = call->cancelled;
	pthread_mutex_unlock(&srv->mu);
	for (int s = 1; s <= 2; s++) {
		struct reader_arg *ra = bl_malloc0(sizeof(*ra));
		ra->j = j;
		ra->stream = s;
		spawn(job_reader, ra);
	}
	if (in)
		spawn(job_writer, j);
	spawn(job_waiter, j);
	if (cancelled) {
		bl_error_t e2 = BL_ERROR_INIT;
		(void)bl_process_signal(p, SIGKILL, &e2);
	}

	struct timespec until;
	deadline_after(&until, timeout_ms);
	pthread_mutex_lock(&j->mu);
	while (!j->exited)
		if (pthread_cond_timedwait(&j->cond, &j->mu, &until) == ETIMEDOUT)
			break;
	if (!j->exited) {
		res->timed_out = true;
		pthread_mutex_unlock(&j->mu);
		bl_error_t e2 = BL_ERROR_INIT;
		(void)bl_process_signal(p, SIGKILL, &e2);
		pthread_mutex_lock(&j->mu);
		while (!j->exited)
			pthread_cond_wait(&j->cond, &j->mu);
	}
	/* Output written just before the exit is still on its way; a
	 * background process may keep the streams open for longer. */
	deadline_after(&until, DRAIN_AFTER_MS);
	while (j->eofs < 2)
		if (pthread_cond_timedwait(&j->cond, &j->mu, &until) == ETIMEDOUT)
			break;
	bool open_streams = j->eofs < 2;
	res->out = j->buf[0] ? j->buf[0] : bl_strdup("");
	res->err = j->buf[1] ? j->buf[1] : bl_strdup("");
	res->out_len = j->len[0];
	res->err_len = j->len[1];
	j->buf[0] = j->buf[1] = NULL;
	j->len[0] = j->len[1] = 0;
	j->max = 0; /* late output is dropped */
	res->truncated = j->truncated;
	int wait_r = j->wait_r;
	bl_exit ex = j->ex;
	bl_error_t wait_err = j->wait_err;
	pthread_mutex_unlock(&j->mu);

	pthread_mutex_lock(&srv->mu);
	call->proc = NULL;
	pthread_mutex_unlock(&srv->mu);
	job_unref(j);
	if (wait_r < 0) {
		*err = wait_err;
		return wait_r;
	}
	res->exit_code = ex.status;
	if (res->timed_out)
		snprintf(res->note, sizeof(res->note), "timed out after %.3g s: killed",
			 (double)timeout_ms / 1000.0);
	else if (ex.oom_killed)
		snprintf(res->note, sizeof(res->note), "killed: out of memory");
	else if (ex.signal)
		snprintf(res->note, sizeof(res->note), "killed by signal %d", ex.signal);
	if (open_streams && !res->note[0])
		snprintf(res->note, sizeof(res->note),
			 "a background process keeps the output open: later output is not shown");
	return 0;
}

static uint64_t timeout_ms_of(mcp_call *call)
{
	double s = arg_number(call->args, "timeout", call->srv->cfg.timeout_sec);
	uint64_t ms = (uint64_t)(s * 1000.0);
	return ms ? ms : 1;
}

static void run_out_clear(struct run_out *r)
{
	free(r->out);
	free(r->err);
	*r = (struct run_out){0};
}

static bool structured(mcp_call *call)
{
	return at_least(call->srv->version, "2025-06-18");
}

static struct json_object *tool_run_command(mcp_call *call, bl_sandbox *sb)
{
	struct json_object *cmd = member(call->args, "command");
	_cleanup_free_ const char **argv = NULL;
	size_t n = 0;
	if (json_object_is_type(cmd, json_type_string)) {
		argv = bl_malloc0(4 * sizeof(char *));
		argv[0] = "sh";
		argv[1] = "-c";
		argv[2] = json_object_get_string(cmd);
	} else {
		n = json_object_array_length(cmd);
		argv = bl_malloc0((n + 1) * sizeof(char *));
		for (size_t i = 0; i < n; i++)
			argv[i] = json_object_get_string(json_object_array_get_idx(cmd, i));
	}
	struct json_object *env = member(call->args, "env");
	_cleanup_strv_ char **envv = NULL;
	if (env) {
		envv = bl_malloc0((size_t)(json_object_object_length(env) + 1) * sizeof(char *));
		size_t k = 0;
		json_object_object_foreach(env, key, val)
		{
			envv[k++] = bl_asprintf("%s=%s", key, json_object_get_string(val));
		}
	}
	bl_process_options po = {.args = argv,
				 .env = (const char *const *)envv,
				 .cwd = arg_string(call->args, "cwd", NULL)};
	struct json_object *in = member(call->args, "stdin");
	struct run_out r = {0};
	bl_error_t err = BL_ERROR_INIT;
	uint64_t tmo = timeout_ms_of(call);
	int rc = job_run(call, sb, &po, in ? json_object_get_string(in) : NULL,
			 in ? (size_t)json_object_get_string_len(in) : 0, tmo,
			 call->srv->cfg.max_output, &r, &err);
	if (rc < 0) {
		char msg[1200];
		int code = bl_cli_start_failure(&err, argv[0], msg, sizeof(msg));
		if (!code) {
			run_out_clear(&r);
			return tool_error("boxlite: %s", err.msg);
		}
		r.out = bl_strdup("");
		r.err = bl_asprintf("%s\n", msg);
		r.err_len = strlen(r.err);
		r.exit_code = code;
	}
	struct json_object *res = run_result(&r, structured(call), r.exit_code != 0 || r.timed_out);
	run_out_clear(&r);
	return res;
}

static struct json_object *tool_run_python(mcp_call *call)
{
	mcp_server *srv = call->srv;
	bl_error_t err = BL_ERROR_INIT;
	bl_codebox *cb = mcp_codebox_get(srv, &err);
	if (!cb)
		return tool_error("boxlite: %s", err.msg);
	pthread_mutex_lock(&srv->mu);
	call->python = true;
	bool cancelled = call->cancelled;
	pthread_mutex_unlock(&srv->mu);
	if (cancelled)
		return tool_error("cancelled");
	uint64_t tmo = timeout_ms_of(call);
	bl_codebox_result res;
	int rc = bl_codebox_run(cb, arg_string(call->args, "code", ""),
				tmo > INT32_MAX ? INT32_MAX : (int)tmo, &res, &err);
	pthread_mutex_lock(&srv->mu);
	call->python = false;
	pthread_mutex_unlock(&srv->mu);
	struct run_out r = {.out = res.stdout_data,
			    .err = res.stderr_data,
			    .out_len = res.stdout_len,
			    .err_len = res.stderr_len,
			    .exit_code = res.exit_code,
			    .timed_out = res.timed_out,
			    .truncated = res.truncated};
	if (rc == -BL_ETIMEOUT)
		snprintf(r.note, sizeof(r.note), "timed out after %.3g s: %s", (double)tmo / 1000.0,
			 res.state_lost ? "the interpreter was killed, variables are lost"
					: "interrupted, variables kept");
	else if (rc == -BL_ECANCELED)
		snprintf(r.note, sizeof(r.note), "cancelled");
	else if (rc < 0)
		snprintf(r.note, sizeof(r.note), "%s", err.msg);
	else if (res.resource[0])
		snprintf(r.note, sizeof(r.note), "%s: the sandbox's %s limit was reached",
			 res.error, !strcmp(res.resource, "pids") ? "process" : res.resource);
	else if (res.state_lost)
		snprintf(r.note, sizeof(r.note), "the interpreter restarted: variables are lost");
	if (rc < 0 && r.exit_code == 0)
		r.exit_code = 1;
	bl_sanitize_text(r.note, strlen(r.note), false);
	struct json_object *out = run_result(&r, structured(call), rc < 0 || r.exit_code != 0);
	bl_codebox_result_clear(&res);
	return out;
}

static struct json_object *tool_write_file(mcp_call *call, bl_sandbox *sb)
{
	const mcp_config *cfg = &call->srv->cfg;
	const char *path = arg_string(call->args, "path", "");
	struct json_object *c = member(call->args, "content");
	const char *data = json_object_get_string(c);
	size_t len = (size_t)json_object_get_string_len(c);
	_cleanup_free_ unsigned char *decoded = NULL;
	if (!strcmp(arg_string(call->args, "encoding", "utf-8"), "base64")) {
		decoded = base64_decode(data, len, &len);
		if (!decoded)
			return tool_error("content is not valid base64");
		data = (const char *)decoded;
	}
	if (len > cfg->max_file)
		return tool_error("content is %zu bytes, over the limit of %zu", len,
				  cfg->max_file);
	const char *const argv[] = {
	    "sh", "-c", "d=$(dirname -- \"$1\") && mkdir -p -- \"$d\" && cat > \"$1\"",
	    "sh", path, NULL};
	bl_process_options po = {.args = argv};
	struct run_out r = {0};
	bl_error_t err = BL_ERROR_INIT;
	int rc = job_run(call, sb, &po, data, len, (uint64_t)cfg->timeout_sec * 1000, 64 << 10, &r,
			 &err);
	struct json_object *res;
	if (rc < 0)
		res = tool_error("boxlite: write %s: %s", path, err.msg);
	else if (r.exit_code != 0 || r.timed_out)
		res = tool_error("write %s failed (exit code %d%s%s): %.*s", path, r.exit_code,
				 r.note[0] ? "; " : "", r.note, (int)r.err_len, r.err);
	else
		res = tool_msg(false, "wrote %zu bytes to %s", len, path);
	run_out_clear(&r);
	return res;
}

static struct json_object *tool_read_file(mcp_call *call, bl_sandbox *sb)
{
	const mcp_config *cfg = &call->srv->cfg;
	const char *path = arg_string(call->args, "path", "");
	bool b64 = !strcmp(arg_string(call->args, "encoding", "utf-8"), "base64");
	const char *const argv[] = {"cat", "--", path, NULL};
	bl_process_options po = {.args = argv};
	struct run_out r = {0};
	bl_error_t err = BL_ERROR_INIT;
	int rc = job_run(call, sb, &po, NULL, 0, (uint64_t)cfg->timeout_sec * 1000, cfg->max_file,
			 &r, &err);
	struct json_object *res;
	if (rc < 0)
		res = tool_error("boxlite: read %s: %s", path, err.msg);
	else if (r.exit_code != 0 || r.timed_out)
		res = tool_error("read %s failed (exit code %d%s%s): %.*s", path, r.exit_code,
				 r.note[0] ? "; " : "", r.note,
				 (int)(r.err_len > 1000 ? 1000 : r.err_len), r.err);
	else if (r.truncated)
		res = tool_error("%s is larger than %zu bytes; read parts of it with run_command "
				 "(head, tail, dd)",
				 path, cfg->max_file);
	else if (b64) {
		size_t n = 0;
		_cleanup_free_ char *enc = base64_encode((unsigned char *)r.out, r.out_len, &n);
		res = tool_result(enc, false, NULL);
	} else if (!utf8_valid(r.out, r.out_len))
		res =
		    tool_error("%s is not UTF-8 text; read it with \"encoding\": \"base64\"", path);
	else
		res = tool_result(r.out, false, NULL);
	run_out_clear(&r);
	return res;
}

static struct json_object *tool_list_dir(mcp_call *call, bl_sandbox *sb)
{
	const mcp_config *cfg = &call->srv->cfg;
	const char *path = arg_string(call->args, "path", ".");
	const char *const argv[] = {"ls", "-la", "--", path, NULL};
	bl_process_options po = {.args = argv};
	struct run_out r = {0};
	bl_error_t err = BL_ERROR_INIT;
	int rc = job_run(call, sb, &po, NULL, 0, (uint64_t)cfg->timeout_sec * 1000, cfg->max_output,
			 &r, &err);
	struct json_object *res;
	if (rc < 0)
		res = tool_error("boxlite: list %s: %s", path, err.msg);
	else if (r.exit_code != 0 || r.timed_out)
		res = tool_error("list %s failed (exit code %d): %.*s", path, r.exit_code,
				 (int)(r.err_len > 1000 ? 1000 : r.err_len), r.err);
	else if (r.truncated) {
		_cleanup_free_ char *t = bl_asprintf("%s\n(listing truncated)", r.out);
		res = tool_result(t, false, NULL);
	} else
		res = tool_result(r.out, false, NULL);
	run_out_clear(&r);
	return res;
}

struct json_object *mcp_tools_call(mcp_call *call)
{
	mcp_server *srv = call->srv;
	if (!strcmp(call->tool, "reset")) {
		mcp_sandbox_reset(srv);
		return tool_result("the sandbox was reset: the next call starts a fresh one", false,
				   NULL);
	}
	bl_error_t err = BL_ERROR_INIT;
	bl_sandbox *sb = mcp_sandbox_get(srv, &err);
	if (!sb)
		return tool_error("boxlite: %s", err.msg);
	struct json_object *res;
	if (!strcmp(call->tool, "run_python"))
		res = tool_run_python(call);
	else if (!strcmp(call->tool, "run_command"))
		res = tool_run_command(call, sb);
	else if (!strcmp(call->tool, "write_file"))
		res = tool_write_file(call, sb);
	else if (!strcmp(call->tool, "read_file"))
		res = tool_read_file(call, sb);
	else
		res = tool_list_dir(call, sb);
	mcp_sandbox_put(srv);
	return res;
}
