/*
 * NAME
 *	fuzz_rcpt - libFuzzer target for the To/Cc/Bcc rewrite
 * SUMMARY
 *	rcpt_rewrite(), rcpt_from_headers(), rcpt_header_from() on
 *	arbitrary header sections, with a recipient invariant
 * DESCRIPTION
 *	The input is a header section.  Its first byte picks a subset of a
 *	fixed envelope (so duplicates, quoted local parts, domain literals
 *	and <> forms are all exercised); the rest is the header section,
 *	in a buffer of exactly its size without a terminating NUL.
 *
 *	The invariant is the reason rcpt.c exists: Graph takes its
 *	recipients from To/Cc/Bcc only, so after a successful
 *	rcpt_rewrite() an independent reading of the new header section
 *	must find exactly the envelope recipients, each once:
 *	- the output is still a header section (every line is a field or
 *	  a continuation, no empty line that would start the body);
 *	- every To/Cc/Bcc value passes addr_parse() with no bad item;
 *	- the addr_internal() forms of all those mailboxes, compared
 *	  case-insensitively, are the de-duplicated envelope, each once;
 *	- there is at most one Bcc field;
 *	- all other fields are copied byte for byte, in order.
 *	The check runs only when the input itself has the form msg_read()
 *	and msg_add_header() produce (every line a "name:" field or a
 *	continuation, no empty line, a line end after the last line);
 *	other inputs are still parsed, for crashes.  The same is done
 *	with the recipients rcpt_from_headers() finds, as "sendmail -t"
 *	does.  A violation calls abort().
 * DIAGNOSTICS
 *	A failed invariant prints one line to stderr, then abort().
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "addr.h"
#include "log.h"
#include "rcpt.h"
#include "strbuf.h"
#include "util.h"

extern int LLVMFuzzerInitialize(int *, char ***);
extern int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* The envelope: a mix of forms an MTA hands over. */
static char *const fuzz_env[] = {
    "alice@example.com",
    "<Bob@Example.COM>",
    "\"carol smith\"@example.org",
    "dave@[192.0.2.1]",
    "erin@example.net",
    "ALICE@example.com",			/* duplicate of the first */
};

#define FUZZ_NENV	(sizeof(fuzz_env) / sizeof(fuzz_env[0]))

#define FUZZ_OTHER	0
#define FUZZ_TO		1
#define FUZZ_CC		2
#define FUZZ_BCC	3

struct fuzz_field {
    size_t  start;			/* first byte of the name */
    size_t  colon;			/* the colon */
    size_t  vend;			/* end of value, without line end */
    int     kind;
};

struct fuzz_fields {
    struct fuzz_field *f;
    size_t  n;
};

/* fuzz_fail - report a broken invariant and crash */

static void fuzz_fail(const char *what, const char *hdr, size_t len)
{
    fprintf(stderr, "fuzz_rcpt: invariant violated: %s\n", what);
    if (hdr != NULL)
	fprintf(stderr, "fuzz_rcpt: output header section:\n%.*s\n",
		(int) len, hdr);
    abort();
}

/* fuzz_oom - out of memory is a finding, not an exit(75) */

static void fuzz_oom(void)
{
    abort();
}

/* fuzz_is_field - does a line start a header field ("name:") */

static int fuzz_is_field(const char *s, size_t n, size_t *colon)
{
    size_t  i, j;

    for (i = 0; i < n && s[i] != ':'; i++)
	if ((unsigned char) s[i] <= ' ' || (unsigned char) s[i] >= 127)
	    break;
    if (i == 0)
	return (0);
    for (j = i; j < n && (s[j] == ' ' || s[j] == '\t'); j++)
	 /* void */ ;
    if (j >= n || s[j] != ':')
	return (0);
    *colon = j;
    return (1);
}

/*
 * fuzz_split - cut a header section into fields, independently of
 * rcpt.c; 0 when it is a well-formed header section as msg_read() and
 * msg_add_header() make them, -1 when not (an empty line, a line that
 * is neither field nor continuation, a last line without line end).
 */
static int fuzz_split(const char *h, size_t len, struct fuzz_fields *fl)
{
    size_t  pos = 0, next, end, colon, nlen;
    const char *lf;
    struct fuzz_field *f = NULL;

    fl->f = NULL;
    fl->n = 0;
    while (pos < len) {
	lf = memchr(h + pos, '\n', len - pos);
	next = lf ? (size_t) (lf - h) + 1 : len;
	if (lf == NULL)
	    return (-1);			/* callers end every line */
	end = next - 1;
	if (end > pos && h[end - 1] == '\r')
	    end--;
	if (end == pos)
	    return (-1);			/* empty line: the body */
	if (h[pos] == ' ' || h[pos] == '\t') {
	    if (f == NULL)
		return (-1);			/* continuation of nothing */
	    f->vend = end;
	} else if (fuzz_is_field(h + pos, end - pos, &colon)) {
	    fl->f = xrealloc(fl->f, (fl->n + 1) * sizeof(*fl->f));
	    f = fl->f + fl->n++;
	    f->start = pos;
	    f->colon = pos + colon;
	    f->vend = end;
	    nlen = colon;
	    while (nlen > 0 && (h[pos + nlen - 1] == ' '
				|| h[pos + nlen - 1] == '\t'))
		nlen--;
	    if (nlen == 2 && strncasecmp(h + pos, "to", 2) == 0)
		f->kind = FUZZ_TO;
	    else if (nlen == 2 && strncasecmp(h + pos, "cc", 2) == 0)
		f->kind = FUZZ_CC;
	    else if (nlen == 3 && strncasecmp(h + pos, "bcc", 3) == 0)
		f->kind = FUZZ_BCC;
	    else
		f->kind = FUZZ_OTHER;
	} else {
	    return (-1);			/* not a header line */
	}
	pos = next;
    }
    return (0);
}

/* fuzz_env_canon - de-duplicated internal forms of env */

static size_t fuzz_env_canon(char *const *env, size_t nenv, char **canon)
{
    size_t  i, j, n = 0;
    char   *c;

    for (i = 0; i < nenv; i++) {
	c = addr_internal(env[i]);
	for (j = 0; j < n && strcasecmp(canon[j], c) != 0; j++)
	     /* void */ ;
	if (j < n)
	    free(c);
	else
	    canon[n++] = c;
    }
    return (n);
}

/* fuzz_check - the rewritten header names exactly the envelope */

static void fuzz_check(const char *in, size_t inlen, const char *out,
		               size_t outlen, char *const *env, size_t nenv)
{
    struct fuzz_fields fi, fo;
    struct addr_list l;
    char  **canon = xcalloc(nenv, sizeof(*canon));
    char   *seen;
    char   *c;
    size_t  nc, i, j, e, oi = 0, nbcc = 0;
    const struct fuzz_field *a, *b;

    nc = fuzz_env_canon(env, nenv, canon);
    seen = xcalloc(nc ? nc : 1, 1);
    if (fuzz_split(in, inlen, &fi) < 0)
	fuzz_fail("the input was checked before", NULL, 0);
    if (fuzz_split(out, outlen, &fo) < 0)
	fuzz_fail("the output is not a header section (empty or stray "
		  "line)", out, outlen);
    for (i = 0; i < fo.n; i++) {
	a = fo.f + i;
	if (a->kind == FUZZ_OTHER)
	    continue;
	if (a->kind == FUZZ_BCC && ++nbcc > 1)
	    fuzz_fail("more than one Bcc field", out, outlen);
	if (addr_parse(out + a->colon + 1, a->vend - a->colon - 1, &l) < 0)
	    fuzz_fail("a To/Cc/Bcc value does not parse", out, outlen);
	for (j = 0; j < l.n; j++) {
	    if (l.items[j].bad)
		fuzz_fail("a To/Cc/Bcc value has a non-address", out, outlen);
	    c = addr_internal(l.items[j].addr);
	    for (e = 0; e < nc && strcasecmp(canon[e], c) != 0; e++)
		 /* void */ ;
	    free(c);
	    if (e == nc)
		fuzz_fail("a recipient that is not in the envelope", out,
			  outlen);
	    if (seen[e]++)
		fuzz_fail("a recipient is named twice", out, outlen);
	}
	addr_list_free(&l);
    }
    for (e = 0; e < nc; e++)
	if (!seen[e])
	    fuzz_fail("an envelope recipient is missing", out, outlen);

    /* Other fields: same bytes, same order (line ends aside). */
    for (i = 0; i < fi.n; i++) {
	a = fi.f + i;
	if (a->kind != FUZZ_OTHER)
	    continue;
	while (oi < fo.n && fo.f[oi].kind != FUZZ_OTHER)
	    oi++;
	if (oi == fo.n)
	    fuzz_fail("a field other than To/Cc/Bcc was lost", out, outlen);
	b = fo.f + oi++;
	if (a->vend - a->start != b->vend - b->start
	    || memcmp(in + a->start, out + b->start, a->vend - a->start) != 0)
	    fuzz_fail("a field other than To/Cc/Bcc was changed", out, outlen);
    }
    for (; oi < fo.n; oi++)
	if (fo.f[oi].kind == FUZZ_OTHER)
	    fuzz_fail("a field other than To/Cc/Bcc was added", out, outlen);

    for (e = 0; e < nc; e++)
	free(canon[e]);
    free(canon);
    free(seen);
    free(fi.f);
    free(fo.f);
}

/* fuzz_rewrite - rewrite for env, check when the input is well-formed */

static void fuzz_rewrite(const char *hdr, size_t len, char *const *env,
			         size_t nenv, int wellformed)
{
    struct strbuf out;
    struct rcpt_plan plan;
    char    err[512];

    strbuf_init(&out, STRBUF_MAX_HEADERS);
    err[0] = 0;
    if (rcpt_rewrite(hdr, len, env, nenv, &out, &plan, err,
		     sizeof(err)) == 0) {
	if (wellformed)
	    fuzz_check(hdr, len, out.data ? out.data : "", out.len, env,
		       nenv);
    } else if (err[0] == 0) {
	fuzz_fail("rcpt_rewrite() failed without an error text", NULL, 0);
    }
    strbuf_free(&out);
}

/* LLVMFuzzerInitialize - quiet logging, crash on out of memory */

int     LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) argc;
    (void) argv;
    (void) log_to_file("/dev/null");
    util_set_oom_hook(fuzz_oom);
    return (0);
}

/* LLVMFuzzerTestOneInput - envelope selector byte + header section */

int     LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_fields fl;
    char   *env[FUZZ_NENV];
    char  **rcpts;
    char   *hdr, *from;
    size_t  nenv = 0, nr, i, len;
    unsigned mask;
    int     wellformed;
    char    err[512];

    if (size < 1)
	return (0);
    mask = data[0] & ((1U << FUZZ_NENV) - 1);
    if (mask == 0)
	mask = (1U << FUZZ_NENV) - 1;
    for (i = 0; i < FUZZ_NENV; i++)
	if (mask & (1U << i))
	    env[nenv++] = fuzz_env[i];
    len = size - 1;
    if ((hdr = malloc(len ? len : 1)) == NULL)
	return (0);
    memcpy(hdr, data + 1, len);

    wellformed = fuzz_split(hdr, len, &fl) == 0;
    free(fl.f);
    fuzz_rewrite(hdr, len, env, nenv, wellformed);

    /* "sendmail -t": the recipients come from the header itself. */
    err[0] = 0;
    if (rcpt_from_headers(hdr, len, &rcpts, &nr, err, sizeof(err)) == 0) {
	for (i = 0; i < nr; i++)
	    if (rcpts[i] == NULL || rcpts[i][0] == 0)
		fuzz_fail("rcpt_from_headers() gave an empty address",
			  NULL, 0);
	if (nr > 0)
	    fuzz_rewrite(hdr, len, rcpts, nr, wellformed);
	rcpt_list_free(rcpts, nr);
    } else if (err[0] == 0) {
	fuzz_fail("rcpt_from_headers() failed without an error text",
		  NULL, 0);
    }
    from = rcpt_header_from(hdr, len);
    free(from);
    free(hdr);
    return (0);
}
