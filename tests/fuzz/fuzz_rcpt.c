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
 *	recipients from To/Cc/Bcc only.  For every input, after a
 *	successful rcpt_rewrite(), the strict model of fuzz_model.h (CR,
 *	LF and CRLF all end a line; written without relay code) must find
 *	in the new header section only envelope recipients, and no
 *	To/Cc/Bcc value whose reading depends on the parser; nor may the
 *	output hold a bare CR or a NUL, or mix LF and CRLF line ends when
 *	the input did not (issues 7.2 and 7.10).
 *
 *	Further, when the input, read as msg_hdr_clean() leaves it (an
 *	independent copy of that rule is here: bare CR and NUL become a
 *	space, "Name :" becomes "Name:"), is well-formed, a reading of
 *	the new header section with addr_parse() must find exactly the
 *	envelope recipients (a repeated one may appear more than once,
 *	issue 8.2):
 *	- the output is still a header section (every line is a field or
 *	  a continuation, no empty line that would start the body);
 *	- every To/Cc/Bcc value passes addr_parse() with no bad item;
 *	- the addr_internal() forms of all those mailboxes, compared
 *	  case-insensitively, are the de-duplicated envelope;
 *	- there is at most one Bcc field;
 *	- all other fields are copied byte for byte (after the cleaning
 *	  above), in order;
 *	- a To/Cc field that names only envelope recipients is copied
 *	  byte for byte.
 *	This second list is checked only when the cleaned input has the
 *	form msg_read() and msg_add_header() produce (every line a
 *	"name:" field or a continuation, no empty line, a line end after
 *	the last line).  The same is done
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
#include "fuzz.h"
#include "fuzz_model.h"
#include "log.h"
#include "rcpt.h"
#include "strbuf.h"
#include "util.h"

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
    fuzz_violated(what);
    if (hdr != NULL)
	fprintf(stderr, "fuzz_rcpt: output header section:\n%.*s\n",
		(int) len, hdr);
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

/* fuzz_in_env - index of addr (any written form) in canon, or nc */

static size_t fuzz_in_env(const char *addr, char **canon, size_t nc)
{
    char   *c = addr_internal(addr);
    size_t  e;

    for (e = 0; e < nc && strcasecmp(canon[e], c) != 0; e++)
	 /* void */ ;
    free(c);
    return (e);
}

/* fuzz_same_field - same bytes, line ends aside */

static int fuzz_same_field(const char *in, const struct fuzz_field *a,
			           const char *out, const struct fuzz_field *b)
{
    return (a->vend - a->start == b->vend - b->start
	    && memcmp(in + a->start, out + b->start, a->vend - a->start) == 0);
}

/* fuzz_check - the rewritten header names exactly the envelope */

static void fuzz_check(const char *in, size_t inlen, const char *out,
		               size_t outlen, char *const *env, size_t nenv)
{
    struct fuzz_fields fi, fo;
    struct addr_list l;
    char  **canon = xcalloc(nenv, sizeof(*canon));
    char   *seen;
    size_t  nc, i, j, e, oi = 0, nbcc = 0, kept;
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
	    if ((e = fuzz_in_env(l.items[j].addr, canon, nc)) == nc)
		fuzz_fail("a recipient that is not in the envelope", out,
			  outlen);
	    if (seen[e]++ && a->kind == FUZZ_BCC)
		fuzz_fail("Bcc names a recipient that To/Cc has", out, outlen);
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
	if (!fuzz_same_field(in, a, out, b))
	    fuzz_fail("a field other than To/Cc/Bcc was changed", out, outlen);
    }
    for (; oi < fo.n; oi++)
	if (fo.f[oi].kind == FUZZ_OTHER)
	    fuzz_fail("a field other than To/Cc/Bcc was added", out, outlen);

    /*
     * To/Cc: with nothing to remove, the same bytes (issue 8.2); with
     * no envelope recipient in it, gone; else rebuilt, in input order.
     */
    for (oi = 0, i = 0; i < fi.n; i++) {
	a = fi.f + i;
	if (a->kind != FUZZ_TO && a->kind != FUZZ_CC)
	    continue;
	if (addr_parse(in + a->colon + 1, a->vend - a->colon - 1, &l) < 0)
	    fuzz_fail("rcpt_rewrite() took a To/Cc it cannot parse", in,
		      inlen);
	for (kept = 0, j = 0; j < l.n; j++)
	    kept += !l.items[j].bad
		&& fuzz_in_env(l.items[j].addr, canon, nc) < nc;
	while (oi < fo.n && fo.f[oi].kind != FUZZ_TO
	       && fo.f[oi].kind != FUZZ_CC)
	    oi++;
	if (l.n > 0 && kept == 0) {
	    addr_list_free(&l);
	    continue;				/* removed */
	}
	if (oi == fo.n)
	    fuzz_fail("a To/Cc field with an envelope recipient was lost",
		      out, outlen);
	b = fo.f + oi++;
	if (kept == l.n && !fuzz_same_field(in, a, out, b))
	    fuzz_fail("a To/Cc field with nothing to remove was changed",
		      out, outlen);
	addr_list_free(&l);
    }

    for (e = 0; e < nc; e++)
	free(canon[e]);
    free(canon);
    free(seen);
    free(fi.f);
    free(fo.f);
}

struct fuzz_model_arg {
    char  **canon;			/* the envelope, internal forms */
    size_t  nc;
    const char *out;			/* for the failure report */
    size_t  outlen;
};

/* fuzz_model_found - an address the strict model sees: an envelope one? */

static void fuzz_model_found(const char *addr, void *ctx)
{
    struct fuzz_model_arg *m = ctx;
    size_t  e;

    for (e = 0; e < m->nc && strcasecmp(m->canon[e], addr) != 0; e++)
	 /* void */ ;
    if (e == m->nc) {
	fprintf(stderr, "fuzz_rcpt: strict reader sees <%s>\n", addr);
	fuzz_fail("Graph could deliver to an address that is not an "
		  "envelope recipient", m->out, m->outlen);
    }
}

/* fuzz_bare_lf - is there a LF without a CR before it */

static int fuzz_bare_lf(const char *p, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++)
	if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
	    return (1);
    return (0);
}

/* fuzz_check_any - for every input: what Graph could see, line ends */

static void fuzz_check_any(const char *in, size_t inlen, const char *out,
			           size_t outlen, char *const *env, size_t nenv)
{
    struct fuzz_model_arg m;
    const char *why = NULL;
    size_t  i, e;

    for (i = 0; i < outlen; i++) {
	if (out[i] == 0)
	    fuzz_fail("a NUL in the output", out, outlen);
	if (out[i] == '\r' && (i + 1 == outlen || out[i + 1] != '\n'))
	    fuzz_fail("a bare CR in the output", out, outlen);
    }
    /* Mixed line ends only when the input had them. */
    if (memmem(out, outlen, "\r\n", 2) != NULL && fuzz_bare_lf(out, outlen)
	&& (memmem(in, inlen, "\r\n", 2) == NULL || !fuzz_bare_lf(in, inlen)))
	fuzz_fail("mixed LF and CRLF line ends", out, outlen);
    m.canon = xcalloc(nenv, sizeof(*m.canon));
    m.nc = fuzz_env_canon(env, nenv, m.canon);
    m.out = out;
    m.outlen = outlen;
    if (fuzz_model_rcpts(out, outlen, fuzz_model_found, &m, &why) < 0) {
	fprintf(stderr, "fuzz_rcpt: strict reader: %s\n", why);
	fuzz_fail("a To/Cc/Bcc value that parsers may read differently",
		  out, outlen);
    }
    for (e = 0; e < m.nc; e++)
	free(m.canon[e]);
    free(m.canon);
}

/*
 * fuzz_clean_ref - msg_hdr_clean(), written again from its
 * description in msg.h: a CR not before LF and a NUL become a space,
 * white space between a field name (ftext) and its colon goes.
 */
static size_t fuzz_clean_ref(const char *in, size_t n, char *out)
{
    size_t  i, o = 0, j, k;

    for (i = 0; i < n; i++) {
	if (i == 0 || in[i - 1] == '\n') {
	    for (j = i; j < n && (unsigned char) in[j] > ' '
		 && (unsigned char) in[j] < 127 && in[j] != ':'; j++)
		 /* void */ ;
	    for (k = j; k < n && (in[k] == ' ' || in[k] == '\t'); k++)
		 /* void */ ;
	    if (j > i && k > j && k < n && in[k] == ':') {
		memcpy(out + o, in + i, j - i);
		o += j - i;
		i = k;
	    }
	}
	out[o++] = in[i] == 0 || (in[i] == '\r' && (i + 1 == n
						|| in[i + 1] != '\n'))
	    ? ' ' : in[i];
    }
    return (o);
}

/* fuzz_rewrite - rewrite for env, check what Graph would see */

static void fuzz_rewrite(const char *hdr, size_t len, const char *ref,
			         size_t reflen, char *const *env, size_t nenv,
			         int wellformed)
{
    struct strbuf out;
    struct rcpt_plan plan;
    char    err[512];

    strbuf_init(&out, STRBUF_MAX_HEADERS);
    err[0] = 0;
    if (rcpt_rewrite(hdr, len, env, nenv, &out, &plan, err,
		     sizeof(err)) == 0) {
	fuzz_check_any(hdr, len, out.data ? out.data : "", out.len, env,
		       nenv);
	if (wellformed)
	    fuzz_check(ref, reflen, out.data ? out.data : "", out.len, env,
		       nenv);
    } else if (err[0] == 0) {
	fuzz_fail("rcpt_rewrite() failed without an error text", NULL, 0);
    }
    strbuf_free(&out);
}

/* LLVMFuzzerInitialize - quiet logging, crash on out of memory */

int     LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return (fuzz_init("fuzz_rcpt", argc, argv));
}

/* LLVMFuzzerTestOneInput - envelope selector byte + header section */

int     LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_fields fl;
    char   *env[FUZZ_NENV];
    char  **rcpts;
    char   *hdr, *ref, *from;
    size_t  nenv = 0, nr, i, len, reflen;
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
    if ((hdr = malloc(len ? len : 1)) == NULL
	|| (ref = malloc(len ? len : 1)) == NULL)
	abort();
    memcpy(hdr, data + 1, len);
    reflen = fuzz_clean_ref(hdr, len, ref);

    wellformed = fuzz_split(ref, reflen, &fl) == 0;
    free(fl.f);
    fuzz_rewrite(hdr, len, ref, reflen, env, nenv, wellformed);

    /* "sendmail -t": the recipients come from the header itself. */
    err[0] = 0;
    if (rcpt_from_headers(hdr, len, &rcpts, &nr, err, sizeof(err)) == 0) {
	for (i = 0; i < nr; i++)
	    if (rcpts[i] == NULL || rcpts[i][0] == 0)
		fuzz_fail("rcpt_from_headers() gave an empty address",
			  NULL, 0);
	if (nr > 0)
	    fuzz_rewrite(hdr, len, ref, reflen, rcpts, nr, wellformed);
	rcpt_list_free(rcpts, nr);
    } else if (err[0] == 0) {
	fuzz_fail("rcpt_from_headers() failed without an error text",
		  NULL, 0);
    }
    from = rcpt_header_from(hdr, len);
    free(from);
    free(hdr);
    free(ref);
    return (0);
}
