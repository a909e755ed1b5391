/*
 * NAME
 *	fuzz_addr - libFuzzer target for the RFC 5322 address-list parser
 * SUMMARY
 *	addr_parse() and the address helpers on arbitrary header values
 * DESCRIPTION
 *	The input is one header value (To/Cc/Bcc/From), handed over in a
 *	buffer of exactly its size and without a terminating NUL, because
 *	rcpt.c parses values in the middle of a header section: a read
 *	past len is a real bug that ASan reports here.
 *
 *	Besides "no crash, no leak, no undefined behaviour" the target
 *	checks what rcpt.c relies on when it rebuilds To/Cc from the
 *	original text of the mailboxes it keeps:
 *	- every item and group span lies inside the value, items in order;
 *	- the text of a good mailbox, parsed on its own, is exactly one
 *	  good mailbox with the same address (addr_internal() form);
 *	- addr_same() is reflexive for good mailboxes;
 *	- lt is the "<" of a good mailbox or its end, and addr_comments()
 *	  gives its comments only (no line end, within twice its span);
 *	- addr_quote() of a good address parses back to one mailbox whose
 *	  addr_internal() form is unchanged, when that form has no
 *	  control characters (rcpt.c refuses those itself).
 *	A violation calls abort(), which libFuzzer reports as a crash.
 *
 *	Build: ./configure --enable-fuzzer CC=clang && make; run:
 *	tests/fuzz/fuzz_addr -dict=tests/fuzz/addr.dict corpus/
 * DIAGNOSTICS
 *	A failed invariant prints one line to stderr, then abort().
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "fuzz.h"
#include "log.h"
#include "util.h"

/* fuzz_fail - report a broken invariant and crash */

static void fuzz_fail(const char *what)
{
    fuzz_violated(what);
    abort();
}

/*
 * fuzz_quotable - may addr_quote(s) be expected to parse back to s: no
 * control characters (rcpt.c refuses those before quoting) and no
 * white space at either end of the local part ("\" b\"@x" has the
 * internal form " b@x", which addr_internal() trims: rcpt.c refuses
 * such an envelope recipient rather than name another one).
 */
static int fuzz_quotable(const char *s)
{
    const char *at = strrchr(s, '@');
    const char *cp;

    if (at == NULL || at == s || s[0] == ' ' || s[0] == '\t'
	|| at[-1] == ' ' || at[-1] == '\t')
	return (0);
    for (cp = s; *cp; cp++)
	if ((unsigned char) *cp < 0x20 || (unsigned char) *cp == 0x7f)
	    return (0);
    return (1);
}

/* fuzz_check_item - one good mailbox, reparsed and requoted */

static void fuzz_check_item(const char *v, const struct addr_item *it)
{
    struct addr_list one;
    char   *canon, *back, *quoted, *comments;
    int     rc;

    canon = addr_internal(it->addr);
    if (!addr_same(it->addr, it->addr))
	fuzz_fail("addr_same() is not reflexive");

    /* "<" (the milter's display name ends there), and the comments. */
    if (it->lt < it->start || it->lt > it->end
	|| (it->lt < it->end && v[it->lt] != '<'))
	fuzz_fail("lt is not the \"<\" of the mailbox, nor its end");
    comments = addr_comments(v, it);
    if (strlen(comments) > 2 * (it->end - it->start)
	|| (*comments && (comments[0] != '(' || strchr(comments, '\n'))))
	fuzz_fail("addr_comments() is not the item's comments");
    free(comments);

    /* The mailbox text alone must mean the same mailbox. */
    rc = addr_parse(v + it->start, it->end - it->start, &one);
    if (rc != 0 || one.n != 1 || one.items[0].bad)
	fuzz_fail("the span of a good mailbox does not parse back alone");
    back = addr_internal(one.items[0].addr);
    if (strcmp(back, canon) != 0)
	fuzz_fail("the span of a good mailbox parses to another address");
    free(back);
    addr_list_free(&one);

    /* What rcpt.c writes into Bcc: must parse back to the address. */
    if (fuzz_quotable(canon)) {
	quoted = addr_quote_internal(canon);
	if (addr_parse(quoted, strlen(quoted), &one) == 0 && one.n == 1
	    && !one.items[0].bad && one.ngroups == 0) {
	    back = addr_internal(one.items[0].addr);
	    if (strcmp(back, canon) != 0)
		fuzz_fail("addr_quote() output parses to another address");
	    free(back);
	}
	addr_list_free(&one);
	free(quoted);
    }
    free(canon);
}

/* fuzz_check_list - structural invariants of a parse result */

static void fuzz_check_list(const char *v, size_t len,
			            const struct addr_list *l, int rc)
{
    size_t  i, prev_end = 0;
    const struct addr_group *g;

    for (i = 0; i < l->ngroups; i++) {
	g = l->groups + i;
	if (g->name_start > g->name_end || g->name_end > g->end
	    || g->end > len)
	    fuzz_fail("group span outside the value");
    }
    for (i = 0; i < l->n; i++) {
	const struct addr_item *it = l->items + i;

	if (it->addr == NULL)
	    fuzz_fail("item without addr");
	if (it->start >= it->end || it->end > len || it->start < prev_end)
	    fuzz_fail("item span outside the value or out of order");
	if (it->group < 0 || (size_t) it->group > l->ngroups)
	    fuzz_fail("item group index out of range");
	prev_end = it->end;
	if (rc == 0 && !it->bad)
	    fuzz_check_item(v, it);
    }
}

/* LLVMFuzzerInitialize - quiet logging, crash on out of memory */

int     LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return (fuzz_init("fuzz_addr", argc, argv));
}

/* LLVMFuzzerTestOneInput - one header value */

int     LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct addr_list l;
    char   *v = malloc(size ? size : 1);
    char   *cstr, *s;
    char    err[256];
    int     rc;

    if (v == NULL || (cstr = malloc(size + 1)) == NULL) {
	free(v);
	return (0);
    }
    memcpy(v, data, size);
    rc = addr_parse_err(v, size, &l, err, sizeof(err));
    /* addr.h: a NUL byte anywhere makes the value unparseable. */
    if (rc == 0 && memchr(v, 0, size) != NULL)
	fuzz_fail("a value with a NUL byte was accepted");
    if (rc < 0 && err[0] == 0)
	fuzz_fail("addr_parse_err() failed without an error text");
    if (memchr(err, 0, sizeof(err)) == NULL)
	fuzz_fail("error text not terminated");
    fuzz_check_list(v, size, &l, rc);
    addr_list_free(&l);

    /* The string helpers take C strings: up to the first NUL. */
    memcpy(cstr, data, size);
    cstr[size] = 0;
    free(addr_strip(cstr));
    s = addr_internal(cstr);
    free(s);
    s = addr_quote(cstr);
    free(s);
    (void) addr_same(cstr, "postmaster@example.com");
    free(cstr);
    free(v);
    return (0);
}
