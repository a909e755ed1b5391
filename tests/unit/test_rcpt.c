/* test_rcpt - envelope-exact To/Cc/Bcc rewriting */
#include "config.h"

#include <stdlib.h>

#include "addr.h"
#include "rcpt.h"
#include "strbuf.h"
#include "util.h"
#include "t.h"

/* split_env - "a@x|b@y" -> array (free with rcpt_list_free) */

static char **split_env(const char *s, size_t *n)
{
    char  **v = NULL;
    const char *p = s, *bar;

    *n = 0;
    while (*p) {
	bar = strchr(p, '|');
	v = xrealloc(v, (*n + 1) * sizeof(*v));
	v[(*n)++] = xstrndup(p, bar ? (size_t) (bar - p) : strlen(p));
	p = bar ? bar + 1 : p + strlen(p);
    }
    return (v);
}

static const struct {
    const char *name;
    const char *hdr;
    const char *env;
    const char *want;
    size_t  kept, removed, bcc;
} rw_cases[] = {
    {"bcc only, no To/Cc",
	"From: app@example.com\r\nSubject: alert\r\n",
	"r1@example.com|r2@example.org",
	"From: app@example.com\r\nSubject: alert\r\n"
	"Bcc: r1@example.com, r2@example.org\r\n",
    0, 0, 2},
    {"To + Cc + Bcc",
	"From: s@x\nTo: a@x, B <b@x>\nCc: c@x\nBcc: d@x, e@x\nSubject: s\n",
	"a@x|b@x|c@x|d@x",
	"From: s@x\nTo: a@x, B <b@x>\nCc: c@x\nBcc: d@x\nSubject: s\n",
    3, 2, 1},
    {"split delivery, first part",
	"To: a@x, b@y\r\nCc: c@x, d@y\r\nSubject: s\r\n",
	"a@x|c@x",
	"To: a@x\r\nCc: c@x\r\nSubject: s\r\n",
    2, 2, 0},
    {"split delivery, second part",
	"To: a@x, b@y\r\nCc: c@x, d@y\r\nSubject: s\r\n",
	"b@y|d@y",
	"To: b@y\r\nCc: d@y\r\nSubject: s\r\n",
    2, 2, 0},
    {"header recipient not in envelope",
	"To: a@x, other@z\n",
	"a@x",
	"To: a@x\n",
    1, 1, 0},
    {"To left empty is removed, Bcc takes its place",
	"From: f@x\nTo: x@z\nSubject: s\n",
	"a@x",
	"From: f@x\nBcc: a@x\nSubject: s\n",
    0, 1, 1},
    {"Cc kept, To removed",
	"To: x@z\nCc: a@x\n",
	"a@x",
	"Cc: a@x\n",
    1, 1, 0},
    {"address forms kept byte-exact",
	"To: \"Doe, John\" <john@x>, (comment) c@x (c2),\n"
	" =?UTF-8?Q?J=C3=B6rg?= <jorg@x>, other@z\n",
	"john@x|c@x|jorg@x",
	"To: \"Doe, John\" <john@x>, (comment) c@x (c2), =?UTF-8?Q?J=C3=B6rg?= <jorg@x>\n",
    3, 1, 0},
    {"route and quoted local part",
	"To: R <@relay.example:u@d.example>, \"john doe\"@x, z@z\n",
	"<U@D.example>|john doe@x",
	"To: R <@relay.example:u@d.example>, \"john doe\"@x\n",
    2, 1, 0},
    {"groups: partial, empty kept, all removed dropped",
	"To: Team: a@x, z@z;, undisclosed-recipients:;, Other: q@q;\n",
	"a@x",
	"To: Team: a@x;, undisclosed-recipients:;\n",
    1, 2, 0},
    {"undisclosed-recipients alone is copied",
	"To: undisclosed-recipients:;\r\nSubject: s\r\n",
	"a@x",
	"To: undisclosed-recipients:;\r\nBcc: a@x\r\nSubject: s\r\n",
    0, 0, 1},
    {"unchanged field is byte-identical",
	"tO:   a@x ,b@x  \r\n\t(c)\r\nX-Other: 1\r\n",
	"b@x|a@x",
	"tO:   a@x ,b@x  \r\n\t(c)\r\nX-Other: 1\r\n",
    2, 0, 0},
    /* Issue 8.2: repeated envelope recipients stay, bytes untouched. */
    {"repeated envelope recipients keep their bytes",
	"To: a@x, A@X\nCc: a@x\n",
	"a@x|<a@x>|A@x",
	"To: a@x, A@X\nCc: a@x\n",
    3, 0, 0},
    {"only the removed item goes, repeats stay",
	"To: a@x, z@z,\n a@x\r\nCc: \"A\" <a@x>\r\n",
	"a@x",
	"To: a@x, a@x\r\nCc: \"A\" <a@x>\r\n",
    3, 1, 0},
    {"envelope local part needing quotes",
	"Subject: s\n",
	"john doe@x|root|<a\"b@x>",
	"Subject: s\nBcc: \"john doe\"@x, root, \"a\\\"b\"@x\n",
    0, 0, 3},
    /*
     * A written local part whose internal form looks like quoting
     * ("\"a\".b"@x is "a".b@x inside): the Bcc: names that mailbox,
     * not a.b@x (fuzz_addr finding; the envelope used to be refused).
     */
    {"envelope local part with literal quotes",
	"Subject: s\n",
	"\"\\\"a\\\".b\"@x|<\"\\\"a\\\".\"@e>",
	"Subject: s\nBcc: \"\\\"a\\\".b\"@x, \"\\\"a\\\".\"@e\n",
    0, 0, 2},
    {"no line end at all: CRLF",
	"Subject: x",
	"a@x",
	"Subject: x\r\nBcc: a@x\r\n",
    0, 0, 1},
    {"empty To kept (nothing to remove)",
	"To: \nSubject: s\n",
	"a@x",
	"To: \nBcc: a@x\nSubject: s\n",
    0, 0, 1},
    /* Issue 7.2: a bare CR is a space, never a line break. */
    {"bare CR in Subject cannot add a Bcc",
	"Subject: hello\rBcc: evil@x\r\nTo: a@x\r\n",
	"a@x",
	"Subject: hello Bcc: evil@x\r\nTo: a@x\r\n",
    1, 0, 0},
    {"bare CR in a To comment",
	"To: a@x (c\rBcc: evil@x)\r\n",
	"a@x",
	"To: a@x (c Bcc: evil@x)\r\n",
    1, 0, 0},
    {"bare CR inside To: one field, not an address list",
	"To: a@x\rCc: evil@x\r\n",
	"a@x",
	"Bcc: a@x\r\n",
    0, 2, 1},
    {"bare CR in an X- field, no To",
	"X-A: 1\rCc: evil@x\n",
	"a@x",
	"X-A: 1 Cc: evil@x\nBcc: a@x\n",
    0, 0, 1},
    /* Issue 7.10: "To : x" is a To field, written "To:". */
    {"space before the colon",
	"To : a@x\r\nBcc \t: e@x\r\nSubject : s\r\n",
	"a@x",
	"To: a@x\r\nSubject: s\r\n",
    1, 1, 0},
    {"name spelling kept",
	"CC: x@z, a@x\nsubject: y\n",
	"a@x",
	"CC: a@x\nsubject: y\n",
    1, 1, 0},
    {"continuations of other fields untouched; bad items removed",
	"Subject: long\n continued\nTo: a@x, John Smith\nX-To: a@x\n",
	"a@x|b@x",
	"Subject: long\n continued\nTo: a@x\nBcc: b@x\nX-To: a@x\n",
    1, 1, 1},
    {"unparseable Bcc is removed anyway",
	"To: a@x\nBcc: \"broken\n",
	"a@x",
	"To: a@x\n",
    1, 1, 0},
    {"folded rebuilt value keeps kept spans",
	"To: aaaaaaaaaaaaaaaaaaaa@example.com, bbbbbbbbbbbbbbbbbbbb@example.com, "
	"x@z, cccccccccccccccccccc@example.com\n",
	"aaaaaaaaaaaaaaaaaaaa@example.com|bbbbbbbbbbbbbbbbbbbb@example.com|"
	"cccccccccccccccccccc@example.com",
	"To: aaaaaaaaaaaaaaaaaaaa@example.com, bbbbbbbbbbbbbbbbbbbb@example.com,\n"
	" cccccccccccccccccccc@example.com\n",
    3, 1, 0},
    /* Issue 7.10: no line end to copy: CRLF, never a bare LF. */
    {"empty header section",
	"",
	"a@x",
	"Bcc: a@x\r\n",
    0, 0, 1},
};

static void test_rewrite_table(void)
{
    size_t  i, nenv;
    char  **env;
    struct strbuf out;
    struct rcpt_plan plan;
    char    err[300];

    for (i = 0; i < sizeof(rw_cases) / sizeof(rw_cases[0]); i++) {
	env = split_env(rw_cases[i].env, &nenv);
	strbuf_init(&out, STRBUF_MAX_HEADERS);
	err[0] = 0;
	T_CHECK(rcpt_rewrite(rw_cases[i].hdr, strlen(rw_cases[i].hdr), env, nenv,
			     &out, &plan, err, sizeof(err)) == 0,
		"%s: rcpt_rewrite failed: %s", rw_cases[i].name, err);
	T_CHECK(strcmp(strbuf_str(&out), rw_cases[i].want) == 0,
		"%s: got\n%s\nwant\n%s", rw_cases[i].name, strbuf_str(&out),
		rw_cases[i].want);
	T_CHECK(plan.kept == rw_cases[i].kept && plan.removed == rw_cases[i].removed
		&& plan.bcc == rw_cases[i].bcc,
		"%s: plan kept=%lu removed=%lu bcc=%lu, want %lu %lu %lu",
		rw_cases[i].name, (unsigned long) plan.kept,
		(unsigned long) plan.removed, (unsigned long) plan.bcc,
		(unsigned long) rw_cases[i].kept, (unsigned long) rw_cases[i].removed,
		(unsigned long) rw_cases[i].bcc);
	strbuf_free(&out);
	rcpt_list_free(env, nenv);
    }
}

static void test_rewrite_errors(void)
{
    static const struct {
	const char *hdr, *env, *err;
    } bad[] = {
	{"To: \"unbalanced\n", "a@x", "To: header"},
	{"Cc: <a@x\n", "a@x", "Cc: header"},
	{"Subject: s\n", "a@x\r\nBcc: evil@x", "control character"},
	{"Subject: s\n", "a@exa mple.com", "not a valid mail address"},
	{"Subject: s\n", "<>", "empty"},
	{"Subject: s\n", "", "no envelope recipients"},
    };
    size_t  i, nenv;
    char  **env;
    struct strbuf out;
    char    err[300];

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
	env = split_env(bad[i].env, &nenv);
	strbuf_init(&out, STRBUF_MAX_HEADERS);
	err[0] = 0;
	T_EQ_INT(rcpt_rewrite(bad[i].hdr, strlen(bad[i].hdr), env, nenv, &out,
			      (struct rcpt_plan *) 0, err, sizeof(err)), -1);
	T_CONTAINS(err, bad[i].err);
	strbuf_free(&out);
	rcpt_list_free(env, nenv);
    }
    /* Output cap. */
    env = split_env("a@x", &nenv);
    strbuf_init(&out, 10);
    T_EQ_INT(rcpt_rewrite("Subject: a long subject\n", 24, env, nenv, &out,
			  (struct rcpt_plan *) 0, err, sizeof(err)), -1);
    T_CONTAINS(err, "exceed");
    strbuf_free(&out);
    rcpt_list_free(env, nenv);
}

/* One header, two deliveries with disjoint envelope subsets. */

static void test_split_disjoint(void)
{
    const char *hdr = "From: s@x\r\nTo: A <a@x>, b@y, \"C, c\" <c@z>\r\n"
    "Cc: d@y, Grp: e@x, f@y;\r\nBcc: g@x\r\n\r\n";
    char   *part1[] = {"a@x", "c@z", "e@x", "g@x"};
    char   *part2[] = {"b@y", "d@y", "f@y"};
    struct strbuf o1, o2;
    char    err[200];
    char  **r;
    size_t  n, i;

    strbuf_init(&o1, STRBUF_MAX_HEADERS);
    strbuf_init(&o2, STRBUF_MAX_HEADERS);
    /* Without the final blank line: hdr as msg_read() stores it. */
    T_EQ_INT(rcpt_rewrite(hdr, strlen(hdr) - 2, part1, 4, &o1, NULL, err,
			  sizeof(err)), 0);
    T_EQ_INT(rcpt_rewrite(hdr, strlen(hdr) - 2, part2, 3, &o2, NULL, err,
			  sizeof(err)), 0);
    T_EQ_STR(strbuf_str(&o1), "From: s@x\r\nTo: A <a@x>, \"C, c\" <c@z>\r\n"
	     "Cc: Grp: e@x;\r\nBcc: g@x\r\n");
    T_EQ_STR(strbuf_str(&o2), "From: s@x\r\nTo: b@y\r\nCc: d@y, Grp: f@y;\r\n");
    /* Each output names exactly its subset. */
    T_EQ_INT(rcpt_from_headers(o1.data, o1.len, &r, &n, err, sizeof(err)), 0);
    T_EQ_INT(n, 4);
    for (i = 0; i < n && i < 4; i++)
	T_EQ_STR(r[i], part1[i]);
    rcpt_list_free(r, n);
    T_EQ_INT(rcpt_from_headers(o2.data, o2.len, &r, &n, err, sizeof(err)), 0);
    T_EQ_INT(n, 3);
    for (i = 0; i < n && i < 3; i++)
	T_EQ_STR(r[i], part2[i]);
    rcpt_list_free(r, n);
    strbuf_free(&o1);
    strbuf_free(&o2);
}

/* 100+ recipients: exact set, folded lines. */

static void test_many(void)
{
    enum {
    NHDR = 150, NENV = 160};
    struct strbuf hdr, out;
    char  **env = xcalloc(NENV, sizeof(*env));
    char    buf[100];
    char    err[300];
    char  **r;
    size_t  n, i, j, nenv = 0, linelen, maxline = 0;
    struct rcpt_plan plan;
    const char *p;
    int     found, lines = 0;

    strbuf_init(&hdr, STRBUF_MAX_HEADERS);
    strbuf_init(&out, STRBUF_MAX_HEADERS);
    strbuf_puts(&hdr, "From: sender@example.com\r\nTo: ");
    /* Header: 150 mailboxes on one long line; even ones are envelope. */
    for (i = 0; i < NHDR; i++) {
	strbuf_printf(&hdr, "%s\"User %lu, Dept\" <user%lu@example.com>",
		      i ? ", " : "", (unsigned long) i, (unsigned long) i);
	if (i % 2 == 0) {
	    snprintf(buf, sizeof(buf), "USER%lu@example.com", (unsigned long) i);
	    env[nenv++] = xstrdup(buf);
	}
    }
    strbuf_puts(&hdr, "\r\nSubject: many\r\n");
    /* Plus envelope-only recipients. */
    while (nenv < NENV) {
	snprintf(buf, sizeof(buf), "extra%lu@example.net", (unsigned long) nenv);
	env[nenv++] = xstrdup(buf);
    }
    T_EQ_INT(rcpt_rewrite(hdr.data, hdr.len, env, nenv, &out, &plan, err,
			  sizeof(err)), 0);
    T_EQ_INT(plan.kept, NHDR / 2);
    T_EQ_INT(plan.removed, NHDR / 2);
    T_EQ_INT(plan.bcc, NENV - NHDR / 2);

    /* Every line is short and ends with CRLF; continuations start with SP. */
    for (p = out.data; *p; p += linelen + 2) {
	const char *crlf = strstr(p, "\r\n");

	T_OK(crlf != NULL);
	if (crlf == NULL)
	    break;
	linelen = (size_t) (crlf - p);
	if (linelen > maxline)
	    maxline = linelen;
	lines++;
	T_OK(memchr(p, '\n', linelen) == NULL);
    }
    T_OK(maxline <= 78);
    T_OK(lines > 40);
    T_CONTAINS(out.data, "\r\nBcc: extra75@example.net, extra76@example.net,");
    T_CONTAINS(out.data, "\"User 148, Dept\" <user148@example.com>\r\nBcc:");

    /* Re-parse: exactly the envelope set, each once. */
    T_EQ_INT(rcpt_from_headers(out.data, out.len, &r, &n, err, sizeof(err)), 0);
    T_EQ_INT(n, nenv);
    for (i = 0; i < nenv; i++) {
	for (found = 0, j = 0; j < n; j++)
	    found += addr_same(r[j], env[i]);
	T_CHECK(found == 1, "%s found %d times", env[i], found);
    }
    rcpt_list_free(r, n);
    rcpt_list_free(env, nenv);
    strbuf_free(&hdr);
    strbuf_free(&out);
}

static void test_from_headers(void)
{
    const char *h = "To: a@x, B <b@y>\nCc: \"j d\"@z, A@X\nSubject: x\n"
    "bcc: g: h@h;, undisclosed-recipients:;\n";
    char  **r;
    size_t  n;
    char    err[200];

    T_EQ_INT(rcpt_from_headers(h, strlen(h), &r, &n, err, sizeof(err)), 0);
    T_EQ_INT(n, 4);
    if (n == 4) {
	T_EQ_STR(r[0], "a@x");
	T_EQ_STR(r[1], "b@y");
	T_EQ_STR(r[2], "j d@z");
	T_EQ_STR(r[3], "h@h");
    }
    rcpt_list_free(r, n);
    h = "Subject: none\n";
    T_EQ_INT(rcpt_from_headers(h, strlen(h), &r, &n, err, sizeof(err)), 0);
    T_EQ_INT(n, 0);
    rcpt_list_free(r, n);
    h = "To: a@x\nCc: John Smith\n";
    T_EQ_INT(rcpt_from_headers(h, strlen(h), &r, &n, err, sizeof(err)), -1);
    T_CONTAINS(err, "John Smith");
    h = "To: (unclosed\n";
    T_EQ_INT(rcpt_from_headers(h, strlen(h), &r, &n, err, sizeof(err)), -1);
    T_CONTAINS(err, "To: header");
}

static void test_header_from(void)
{
    static const struct {
	const char *hdr, *want;
    } cases[] = {
	{"Subject: x\nFROM: Name <me@x>\nFrom: other@y\n", "me@x"},
	{"From:\n \"a b\"@x (c)\n", "a b@x"},
	{"Subject: x\n", NULL},
	{"From: John Smith\n", NULL},
	{"X-From: a@x\n", NULL},
    };
    size_t  i;
    char   *s;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
	s = rcpt_header_from(cases[i].hdr, strlen(cases[i].hdr));
	if (cases[i].want)
	    T_EQ_STR(s, cases[i].want);
	else
	    T_CHECK(s == NULL, "case %lu: got %s, want NULL", (unsigned long) i, s);
	free(s);
    }
}

/* test_nul - a NUL is a space, for all three readers (issue 7.2) */

static void test_nul(void)
{
    static const char hdr[] = "From: f@x\0To: evil@x\r\nTo: a@x\0, e@x\r\n";
    char   *env[] = {"a@x"};
    struct strbuf out;
    char  **list = NULL;
    char   *from;
    size_t  n = 0;
    char    err[200];

    strbuf_init(&out, STRBUF_MAX_HEADERS);
    T_EQ_INT(rcpt_rewrite(hdr, sizeof(hdr) - 1, env, 1, &out, NULL, err,
			  sizeof(err)), 0);
    T_EQ_INT(out.len, strlen(strbuf_str(&out)));
    T_EQ_STR(out.data, "From: f@x To: evil@x\r\nTo: a@x\r\n");
    strbuf_free(&out);
    T_EQ_INT(rcpt_from_headers(hdr, sizeof(hdr) - 1, &list, &n, err,
			       sizeof(err)), 0);
    T_EQ_INT(n, 2);
    if (n == 2) {
	T_EQ_STR(list[0], "a@x");
	T_EQ_STR(list[1], "e@x");
    }
    rcpt_list_free(list, n);
    /* The From: reads as with a space: "f@x To:" is no group name. */
    from = rcpt_header_from(hdr, sizeof(hdr) - 1);
    T_OK(from == NULL);
    free(from);
}

/* test_empty_quoted - To: "" is not an address (fuzzer finding) */

static void test_empty_quoted(void)
{
    static const char hdr[] = "To: \"\"\r\nSubject: x\r\n";
    char  **list = NULL;
    size_t  n = 0;
    char    err[200];

    T_EQ_INT(rcpt_from_headers(hdr, sizeof(hdr) - 1, &list, &n, err,
			       sizeof(err)), -1);
    T_CONTAINS(err, "not a mail address");
    if (list)
	rcpt_list_free(list, n);
}

int     main(void)
{
    T_RUN(test_rewrite_table);
    T_RUN(test_rewrite_errors);
    T_RUN(test_split_disjoint);
    T_RUN(test_many);
    T_RUN(test_from_headers);
    T_RUN(test_header_from);
    T_RUN(test_empty_quoted);
    T_RUN(test_nul);
    return (T_DONE());
}
