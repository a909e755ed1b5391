/* test_addr - RFC 5322 address-list parser */
#include "config.h"

#include <stdlib.h>

#include "addr.h"
#include "strbuf.h"
#include "util.h"
#include "t.h"

/* render - "group|addr|span" per item ("!" marks a bad item), "G[name][whole]" per group */

static char *render(const char *v, const struct addr_list *l)
{
    struct strbuf sb;
    size_t  i;

    strbuf_init(&sb, 1 << 20);
    for (i = 0; i < l->n; i++)
	strbuf_printf(&sb, "%s%d|%s%s|%.*s", i ? "\n" : "", l->items[i].group,
		      l->items[i].bad ? "!" : "", l->items[i].addr,
		      (int) (l->items[i].end - l->items[i].start),
		      v + l->items[i].start);
    for (i = 0; i < l->ngroups; i++)
	strbuf_printf(&sb, "\nG[%.*s][%.*s]",
		      (int) (l->groups[i].name_end - l->groups[i].name_start),
		      v + l->groups[i].name_start,
		      (int) (l->groups[i].end - l->groups[i].name_start),
		      v + l->groups[i].name_start);
    return (strbuf_take(&sb));
}

static const struct {
    const char *in;
    const char *want;
} parse_cases[] = {
    {"a@example.com", "0|a@example.com|a@example.com"},
    {"  a@example.com  ", "0|a@example.com|a@example.com"},
    {" John Doe <john@x.org> , \"Doe, Jane\" <jane@x.org>",
	"0|john@x.org|John Doe <john@x.org>\n"
    "0|jane@x.org|\"Doe, Jane\" <jane@x.org>"},
    {"\"A \\\"quoted\\\" \\\\ name, too\" <q@x>",
    "0|q@x|\"A \\\"quoted\\\" \\\\ name, too\" <q@x>"},
    {"(lead) a@x (trail), b@y (c (nested, deep) d)",
	"0|a@x|(lead) a@x (trail)\n"
    "0|b@y|b@y (c (nested, deep) d)"},
    {"(only a comment), c@z", "0|c@z|c@z"},
    {"Route <@a.example,@b.example:user@dom.example>",
    "0|user@dom.example|Route <@a.example,@b.example:user@dom.example>"},
    {"<@a.example:u@d>", "0|u@d|<@a.example:u@d>"},
    {"=?UTF-8?B?w4TDpMO2?= <u@x>, =?iso-8859-1?Q?J=F6rg_M=FCller?= <j@x>",
	"0|u@x|=?UTF-8?B?w4TDpMO2?= <u@x>\n"
    "0|j@x|=?iso-8859-1?Q?J=F6rg_M=FCller?= <j@x>"},
    /* A sloppy encoded word is cut at a comma, as other parsers do. */
    {"=?utf-8?Q?a,b?= <k@x>, l@x",
    "0|=?utf-8?Q?a|=?utf-8?Q?a\n0|k@x|b?= <k@x>\n0|l@x|l@x"},
    /* Issue 7.2: where another parser sees an address, the item is bad. */
    {"=?utf-8?q?e@z?= <b@y>", "0|!=?utf-8?q?e@z?= <b@y>|=?utf-8?q?e@z?= <b@y>"},
    {"a@x Cc: e@z, b@y;",
	"0|!a@x Cc:|a@x Cc:\n0|!e@z|e@z\n0|!b@y|b@y"},
    {"[g]: b@y;, : c@z;, .:",
	"0|![g]:|[g]:\n0|!b@y|b@y\n0|!:|:\n0|!c@z|c@z\n0|!.:|.:"},
    {"G.(c) \"q\": b@y;", "1|b@y|b@y\nG[G.(c) \"q\":][G.(c) \"q\": b@y;]"},
    /* A domain literal is an address literal, nothing else (fuzzer). */
    {"u@[IPv6:2001:db8::1], v@[a@b], w@[\"x\"], x@[1 2]",
	"0|u@[IPv6:2001:db8::1]|u@[IPv6:2001:db8::1]\n0|!v@[a@b]|v@[a@b]\n"
    "0|!w@[\"x\"]|w@[\"x\"]\n0|!x@[1 2]|x@[1 2]"},
    {"Team: a@x, B <b@y>;, c@z",
	"1|a@x|a@x\n1|b@y|B <b@y>\n0|c@z|c@z\n"
    "G[Team:][Team: a@x, B <b@y>;]"},
    {"undisclosed-recipients:;", "\nG[undisclosed-recipients:][undisclosed-recipients:;]"},
    {"a@x, Empty Group: ;, b@y",
	"0|a@x|a@x\n0|b@y|b@y\n"
    "G[Empty Group:][Empty Group: ;]"},
    {"Open: a@x", "1|a@x|a@x\nG[Open:][Open: a@x]"},
    {"a@x,\r\n\tB\r\n <b@y>,\r\n c@z",
	"0|a@x|a@x\n0|b@y|B\r\n <b@y>\n0|c@z|c@z"},
    {",,a@x,, ,b@y,", "0|a@x|a@x\n0|b@y|b@y"},
    {"\"john doe\"@x.org, Name <\"j.\\\"q\"@x.org>",
	"0|\"john doe\"@x.org|\"john doe\"@x.org\n"
    "0|\"j.\\\"q\"@x.org|Name <\"j.\\\"q\"@x.org>"},
    {"u@[192.0.2.1]", "0|u@[192.0.2.1]|u@[192.0.2.1]"},
    {"john . doe @ example . com", "0|john.doe@example.com|john . doe @ example . com"},
    {"a@x; b@y", "0|a@x|a@x\n0|b@y|b@y"},
    {"root", "0|root|root"},
    {"John Q. Public <jqp@x>", "0|jqp@x|John Q. Public <jqp@x>"},
    /* Not mailboxes: kept as bad items. */
    {"John Smith", "0|!John Smith|John Smith"},
    {"a@x b@y", "0|!a@x b@y|a@x b@y"},
    {"Foo <>", "0|!Foo <>|Foo <>"},
    {"x@y <z@w>", "0|!x@y <z@w>|x@y <z@w>"},
    {"a@@x", "0|!a@@x|a@@x"},
    {"<@a.example,u@d>", "0|!<@a.example,u@d>|<@a.example,u@d>"},
    {"<@a.example:>", "0|!<@a.example:>|<@a.example:>"},
    {"", ""},
};

static void test_parse_table(void)
{
    size_t  i;
    struct addr_list l;
    char   *got;
    char    err[200];

    for (i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
	const char *in = parse_cases[i].in;

	T_EQ_INT(addr_parse_err(in, strlen(in), &l, err, sizeof(err)), 0);
	got = render(in, &l);
	T_CHECK(strcmp(got, parse_cases[i].want) == 0,
		"case %lu \"%s\": got \"%s\", want \"%s\"",
		(unsigned long) i, in, got, parse_cases[i].want);
	free(got);
	addr_list_free(&l);
    }
}

static const struct {
    const char *in;
    const char *err;
} bad_cases[] = {
    {"\"unbalanced <a@x>", "quoted string"},
    {"(comment a@x", "comment"},
    {"(a (nested) a@x", "comment"},
    {"a@x)", ")"},
    {"<a@x", "not closed"},
    {"Name <a@x, b@y", "not closed"},
    {"a@x>", "without"},
    {"<a@x> junk", "comma"},
    {"<a@x> <b@y>", "comma"},
    {"<<a@x>>", "inside"},
    {"G1: G2: a@x;;", "group inside a group"},
    {"u@[1.2.3.4", "domain literal"},
    {"u@1.2.3.4]", "]"},
    {"\"a\\\"", "quoted string"},
    {"(a\\", "comment"},
};

static void test_parse_errors(void)
{
    size_t  i;
    struct addr_list l;
    char    err[200];

    for (i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
	const char *in = bad_cases[i].in;

	T_CHECK(addr_parse_err(in, strlen(in), &l, err, sizeof(err)) == -1,
		"case \"%s\" should fail", in);
	T_CONTAINS(err, bad_cases[i].err);
	addr_list_free(&l);
	T_EQ_INT(addr_parse(in, strlen(in), &l), -1);
	addr_list_free(&l);
    }
}

/* Items parsed before an error are kept. */

static void test_partial(void)
{
    struct addr_list l;
    const char *in = "a@x, b@y, \"broken";

    T_EQ_INT(addr_parse(in, strlen(in), &l), -1);
    addr_list_free(&l);
    in = "a@x, b@y, <c@z";
    T_EQ_INT(addr_parse(in, strlen(in), &l), -1);
    T_EQ_INT(l.n, 2);
    if (l.n == 2)
	T_EQ_STR(l.items[1].addr, "b@y");
    addr_list_free(&l);
}

/* The value need not be NUL-terminated at len. */

static void test_len_bound(void)
{
    struct addr_list l;
    const char *in = "a@x, b@y";

    T_EQ_INT(addr_parse(in, 3, &l), 0);
    T_EQ_INT(l.n, 1);
    T_EQ_STR(l.items[0].addr, "a@x");
    addr_list_free(&l);
}

/*
 * Past the cap (issue 8.6): a mailbox longer than a header section is a
 * bad item (it never matches), never a mailbox cut short; quoting never
 * cuts an address.
 */
static void test_past_cap(void)
{
    size_t  n = STRBUF_MAX_HEADERS + 1000, i;
    char   *in = xmalloc(n + 20), *q;
    struct addr_list l;

    memset(in, 'a', n);
    snprintf(in + n, 20, "@example.com");
    T_EQ_INT(addr_parse(in, strlen(in), &l), 0);
    T_EQ_INT(l.n, 1);
    if (l.n == 1) {
	T_EQ_INT(l.items[0].bad, 1);
	T_OK(strlen(l.items[0].addr) < 1000);
    }
    addr_list_free(&l);

    /* 400000 quotes become 800000 bytes: 1.2 MB in all, whole. */
    for (i = 0; i < 800000; i += 2) {
	in[i] = 'a';
	in[i + 1] = '"';
    }
    snprintf(in + 800000, 20, "@x");
    q = addr_quote(in);
    T_EQ_INT(strlen(q), 800000 + 400000 + 2 + 2);
    T_OK(strcmp(q + strlen(q) - 3, "\"@x") == 0);
    free(q);
    free(in);
}

static void test_same(void)
{
    static const struct {
	const char *a, *b;
	int     same;
    } cases[] = {
	{"a@example.com", "A@Example.COM", 1},
	{"<a@example.com>", " a@example.com ", 1},
	{" < a@example.com > ", "a@example.com", 1},
	{"\"john doe\"@x", "john doe@x", 1},
	{"\"john\"@x", "john@x", 1},
	{"a@example.com", "b@example.com", 0},
	{"a@example.com", "a@example.org", 0},
	{"a@x", "a@x.", 0},
	{"<a@x", "a@x", 0},
    };
    size_t  i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
	T_CHECK(addr_same(cases[i].a, cases[i].b) == cases[i].same,
		"addr_same(\"%s\", \"%s\") != %d", cases[i].a, cases[i].b,
		cases[i].same);
}

static void test_forms(void)
{
    static const struct {
	const char *in, *strip, *internal, *quote;
    } cases[] = {
	{"<a@b>", "a@b", "a@b", "a@b"},
	{" a.b@c ", "a.b@c", "a.b@c", "a.b@c"},
	{"john doe@x", "john doe@x", "john doe@x", "\"john doe\"@x"},
	{"\"john doe\"@x", "\"john doe\"@x", "john doe@x", "\"john doe\"@x"},
	{"<\"a\\\"b\"@x>", "\"a\\\"b\"@x", "a\"b@x", "\"a\\\"b\"@x"},
	{"a\"b@x", "a\"b@x", "a\"b@x", "\"a\\\"b\"@x"},
	{"\"a\".\"b c\"@x", "\"a\".\"b c\"@x", "a.b c@x", "\"a.b c\"@x"},
	{"\"a\"b@x", "\"a\"b@x", "\"a\"b@x", "\"\\\"a\\\"b\"@x"},
	{"a@b@x", "a@b@x", "a@b@x", "\"a@b\"@x"},
	{"root", "root", "root", "root"},
	{"with space", "with space", "with space", "\"with space\""},
	{".lead@x", ".lead@x", ".lead@x", "\".lead\"@x"},
	{"a..b@x", "a..b@x", "a..b@x", "\"a..b\"@x"},
	{"back\\slash@x", "back\\slash@x", "back\\slash@x", "\"back\\\\slash\"@x"},
	{"j\xc3\xb6rg@x", "j\xc3\xb6rg@x", "j\xc3\xb6rg@x", "j\xc3\xb6rg@x"},
    };
    size_t  i;
    char   *s;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
	s = addr_strip(cases[i].in);
	T_EQ_STR(s, cases[i].strip);
	free(s);
	s = addr_internal(cases[i].in);
	T_EQ_STR(s, cases[i].internal);
	free(s);
	s = addr_quote(cases[i].in);
	T_EQ_STR(s, cases[i].quote);
	free(s);
    }
}

/* addr_quote() output parses back to the same internal address. */

static void test_quote_roundtrip(void)
{
    static const char *cases[] = {
	"john doe@x", "a\"b@x", "a(b)c@x", "a,b@x", "a<b>@x", "x;y@z",
	"tab\there@x", "q\\\"@x", "plain@x.example",
    };
    size_t  i;
    char   *q, *back;
    struct addr_list l;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
	q = addr_quote(cases[i]);
	T_EQ_INT(addr_parse(q, strlen(q), &l), 0);
	T_EQ_INT(l.n, 1);
	if (l.n == 1) {
	    T_EQ_INT(l.items[0].bad, 0);
	    back = addr_internal(l.items[0].addr);
	    T_EQ_STR(back, cases[i]);
	    free(back);
	}
	addr_list_free(&l);
	free(q);
    }
}

/*
 * addr_quote_internal() takes quotes literally: the internal form of a
 * written "\"a\".b"@x is "a".b@x, and quoting it must give back the
 * written form, not a.b@x (fuzz_addr finding).
 */
static void test_quote_internal(void)
{
    static const struct {
	const char *internal, *quote;
    } cases[] = {
	{"\"a\".b@x", "\"\\\"a\\\".b\"@x"},
	{"\"a\".@e", "\"\\\"a\\\".\"@e"},
	{"\"john doe\"@x", "\"\\\"john doe\\\"\"@x"},
	{"john doe@x", "\"john doe\"@x"},
	{"<plain@x>", "plain@x"},
    };
    size_t  i;
    char   *q, *back;
    struct addr_list l;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
	q = addr_quote_internal(cases[i].internal);
	T_EQ_STR(q, cases[i].quote);
	T_EQ_INT(addr_parse(q, strlen(q), &l), 0);
	if (l.n == 1 && i < 4) {
	    back = addr_internal(l.items[0].addr);
	    T_EQ_STR(back, cases[i].internal);
	    free(back);
	}
	addr_list_free(&l);
	free(q);
    }
}

/* test_nul - a NUL anywhere in the value is an error (fuzzer finding) */

static void test_nul(void)
{
    static const char v[] = "\"a\0\"@example.com";
    struct addr_list l;

    T_EQ_INT(addr_parse(v, sizeof(v) - 1, &l), -1);
    addr_list_free(&l);
    T_EQ_INT(addr_parse("a@b (x\0y)", 10, &l), -1);
    addr_list_free(&l);
}

struct parts_case {
    const char *value;
    const char *before_lt;		/* text before "<", NULL: no "<" */
    const char *comments;
};

static const struct parts_case parts_cases[] = {
    {"Bob <bob@x>", "Bob ", ""},
    {"\"B <o> b\" <bob@x>", "\"B <o> b\" ", ""},	/* "<" quoted */
    {"(c <1>) Bob <bob@x>", "(c <1>) Bob ", "(c <1>)"},
    {"bob@x (Bob)", NULL, "(Bob)"},
    {"bob@x (Bob (the) \\) one)\r\n (Jr)", NULL,
    "(Bob (the) \\) one) (Jr)"},
    {"(a)(b)bob@x", NULL, "(a) (b)"},		/* adjacent comments */
    {"\"(not) a comment\"@x", NULL, ""},
    {"bob@x", NULL, ""},
    {"<bob@x> (after)", "", "(after)"},
};

/* test_parts - where "<" is, and the comments, of the first mailbox */

static void test_parts(void)
{
    const struct parts_case *c;
    struct addr_list l;
    const struct addr_item *it;
    char   *cm;
    size_t  i;

    for (i = 0; i < sizeof(parts_cases) / sizeof(parts_cases[0]); i++) {
	c = parts_cases + i;
	T_EQ_INT(addr_parse(c->value, strlen(c->value), &l), 0);
	T_CHECK(l.n == 1 && !l.items[0].bad, "one mailbox in %s", c->value);
	if (l.n != 1) {
	    addr_list_free(&l);
	    continue;
	}
	it = l.items;
	if (c->before_lt == NULL) {
	    T_EQ_INT(it->lt, it->end);
	} else {
	    T_EQ_INT(c->value[it->lt], '<');
	    T_EQ_INT(it->lt - it->start, strlen(c->before_lt));
	}
	cm = addr_comments(c->value, it);
	T_EQ_STR(cm, c->comments);
	free(cm);
	addr_list_free(&l);
    }
    /* Second item of a list: offsets are into the whole value. */
    T_EQ_INT(addr_parse("a@x, Bee <b@y>", 14, &l), 0);
    T_EQ_INT(l.n, 2);
    if (l.n == 2) {
	T_EQ_INT(l.items[0].lt, l.items[0].end);
	T_EQ_INT(l.items[1].lt, 9);
    }
    addr_list_free(&l);
}

int     main(void)
{
    T_RUN(test_parse_table);
    T_RUN(test_parse_errors);
    T_RUN(test_partial);
    T_RUN(test_len_bound);
    T_RUN(test_past_cap);
    T_RUN(test_same);
    T_RUN(test_forms);
    T_RUN(test_quote_roundtrip);
    T_RUN(test_quote_internal);
    T_RUN(test_nul);
    T_RUN(test_parts);
    return (T_DONE());
}
