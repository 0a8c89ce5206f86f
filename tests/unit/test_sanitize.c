/*
 * bl_sanitize_text: guest-controlled text (agent error messages, the console
 * log) on its way to a terminal. Attack: escape sequences that retitle the
 * window, move the cursor, rewrite earlier lines or (8-bit C1 CSI) do the
 * same on terminals that honour 0x9b. Must hold: none survives; UTF-8 text,
 * newlines and tabs stay.
 */
#include "bl_test.h"
#include "bl_util.h"

#include <string.h>

static void check(const char *in, const char *want, bool keep_newlines)
{
	char buf[256];
	size_t n = strlen(in);
	memcpy(buf, in, n + 1);
	bl_sanitize_text(buf, n, keep_newlines);
	CU_ASSERT_STRING_EQUAL(buf, want);
}

static void test_controls(void)
{
	check("\x1b]0;pwned\x07title", "?]0;pwned?title", true);
	check("ok\x1b[2J\x1b[Hcleared", "ok?[2J?[Hcleared", true);
	check("line\rfake", "line?fake", true);
	check("a\bb\x7f", "a?b?", true);
	check("two\nlines\tand tab", "two\nlines\tand tab", true);
	check("two\nlines", "two lines", false);
}

static void test_utf8(void)
{
	check("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
	      "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", true);
	check("\x9b"
	      "31m",
	      "?31m", true);	       /* 8-bit CSI */
	check("\xc3", "?", true);      /* truncated */
	check("\xc0\xaf", "??", true); /* overlong */
	check("\xe2\x82"
	      "x",
	      "??x", true); /* cut short */
	check("\xff\xfe", "??", true);
}

int main(void)
{
	static const bl_test_case cases[] = {
	    {"controls", test_controls},
	    {"utf8", test_utf8},
	    {NULL, NULL},
	};
	return bl_test_run("sanitize", cases);
}
