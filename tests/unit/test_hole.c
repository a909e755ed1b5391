/*
 * test_hole - base64 parts stored decoded in the spool (msg_hole): every
 * reader of the message gives what it gives when nothing is diverted
 *
 * Past mime_store_decoded_after() bytes of a base64 leaf, mime_watch()
 * has the rest of that part written to the spool file decoded (a hole:
 * fewer bytes on disk, no second decode at send time).  That is only
 * safe if no reader can tell, or if a reader that needs the raw bytes
 * fails instead of sending something else.  So each check here
 * compares a message built with diversion against the same message
 * built without it, and both against references this file computes on
 * its own (the canonical body the generator wrote, a plain RFC 2045
 * base64 decoder, the quoted-printable text before it was encoded).
 */
#include "config.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "ledger.h"
#include "mime.h"
#include "msg.h"
#include "strbuf.h"
#include "util.h"
#include "t.h"
#include "t_file.h"

static char tmpdir[256];

/*
 * The run being checked (shape, line ends, how it was fed, threshold):
 * a sweep makes hundreds of messages, and a failure is only useful
 * when it says which one.
 */
static char ctx[200];

#define H_OK(cond) T_CHECK((cond), "[%s] %s", ctx, #cond)
#define H_EQ(a, b) do { long long h_a_ = (long long) (a), \
	    h_b_ = (long long) (b); \
	T_CHECK(h_a_ == h_b_, "[%s] %s == %lld, want %lld", ctx, #a, \
		h_a_, h_b_); } while (0)

#define NO_DIVERT	(((off_t) 1) << 40)	/* threshold never reached */
#define BIG		(64UL * 1024 * 1024)	/* strbuf limit for bodies */
#define MAX_XPARTS	16
#define MSG_BLOCK_MIN	65536			/* msg.c's first write block */

/* ------------------------------------------------------- references */

static const char b64_alpha[] =
"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* rnd - deterministic xorshift64: the same messages on every run */

static unsigned long long rnd_state;

static void rnd_seed(unsigned long long seed)
{
    rnd_state = seed * 0x9E3779B97F4A7C15ULL + 1;
}

static unsigned rnd(unsigned n)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return ((unsigned) ((rnd_state >> 11) % n));
}

/* b64_put - plain padded base64 of in, appended to out */

static void b64_put(struct strbuf *out, const unsigned char *in, size_t n)
{
    char    q[4];
    size_t  i;
    unsigned v;

    for (i = 0; i + 3 <= n; i += 3) {
	v = (unsigned) in[i] << 16 | (unsigned) in[i + 1] << 8 | in[i + 2];
	q[0] = b64_alpha[v >> 18];
	q[1] = b64_alpha[(v >> 12) & 63];
	q[2] = b64_alpha[(v >> 6) & 63];
	q[3] = b64_alpha[v & 63];
	strbuf_append(out, q, 4);
    }
    if (n - i == 1) {
	v = (unsigned) in[i] << 16;
	q[0] = b64_alpha[v >> 18];
	q[1] = b64_alpha[(v >> 12) & 63];
	q[2] = q[3] = '=';
	strbuf_append(out, q, 4);
    } else if (n - i == 2) {
	v = (unsigned) in[i] << 16 | (unsigned) in[i + 1] << 8;
	q[0] = b64_alpha[v >> 18];
	q[1] = b64_alpha[(v >> 12) & 63];
	q[2] = b64_alpha[(v >> 6) & 63];
	q[3] = '=';
	strbuf_append(out, q, 4);
    }
}

/*
 * The plain RFC 2045 base64 decoder, independent of mime.c: bytes
 * outside the alphabet are skipped, "=" ends the quantum (what it holds
 * is written, then a new quantum starts).  The state is explicit so a
 * test can ask where the quanta stand at a given offset.
 */
struct rb64 {
    unsigned acc;
    int     nacc;				/* sextets in acc */
};

static int rb64_val(int c)
{
    const char *p;

    if (c == 0 || (p = strchr(b64_alpha, c)) == NULL)
	return (-1);
    return ((int) (p - b64_alpha));
}

/* rb64_end - write what the quantum holds; a fresh quantum follows */

static size_t rb64_end(struct rb64 *st, unsigned char *out)
{
    size_t  o = 0;

    if (st->nacc == 2) {
	out[o++] = (unsigned char) (st->acc >> 4);
    } else if (st->nacc == 3) {
	out[o++] = (unsigned char) (st->acc >> 10);
	out[o++] = (unsigned char) (st->acc >> 2);
    }
    st->acc = 0;
    st->nacc = 0;
    return (o);
}

/* rb64 - decode n bytes (out: NULL to only follow the state) */

static size_t rb64(struct rb64 *st, const unsigned char *in, size_t n,
		           unsigned char *out)
{
    unsigned char tmp[3];
    size_t  i, o = 0, k;
    int     v;

    for (i = 0; i < n; i++) {
	if (in[i] == '=') {
	    k = rb64_end(st, out ? out + o : tmp);
	    o += out ? k : 0;
	    continue;
	}
	if ((v = rb64_val(in[i])) < 0)
	    continue;
	st->acc = st->acc << 6 | (unsigned) v;
	if (++st->nacc == 4) {
	    if (out) {
		out[o++] = (unsigned char) (st->acc >> 16);
		out[o++] = (unsigned char) (st->acc >> 8);
		out[o++] = (unsigned char) st->acc;
	    }
	    st->acc = 0;
	    st->nacc = 0;
	}
    }
    return (o);
}

/* ------------------------------------------------------- generator */

/* What the generator wrote: one entry per MIME part, document order. */
struct xpart {
    const char *type;
    enum mime_cte cte;
    int     leaf;
    off_t   body_start;			/* leaves: the content span */
    off_t   body_end;
    struct strbuf dec;			/* quoted-printable: its text */
};

struct gen {
    const char *name;
    struct strbuf hdr;			/* header section, CRLF lines */
    struct strbuf body;			/* canonical body, CRLF lines */
    struct xpart x[MAX_XPARTS];
    int     nx;
};

enum {
    B64_LINES,				/* 76 characters, CRLF */
    B64_IRREGULAR,			/* 1 to 200 characters */
    B64_JUNK,				/* bytes outside the alphabet inside */
    B64_PADMID,				/* "=" padding inside the part */
    B64_DASH,				/* lines "-x", "-- not ..." inside */
};

/* g_hdr, g_line, g_delim - a header line, a body line, a delimiter */

static void g_hdr(struct gen *g, const char *line)
{
    strbuf_puts(&g->hdr, line);
    strbuf_puts(&g->hdr, "\r\n");
}

static void g_line(struct gen *g, const char *line)
{
    strbuf_puts(&g->body, line);
    strbuf_puts(&g->body, "\r\n");
}

static void g_delim(struct gen *g, const char *boundary, int close)
{
    strbuf_puts(&g->body, "--");
    strbuf_puts(&g->body, boundary);
    strbuf_puts(&g->body, close ? "--\r\n" : "\r\n");
}

/* g_add - one more part (the message is the first) */

static int g_add(struct gen *g, const char *type, enum mime_cte cte,
		         int leaf)
{
    struct xpart *x = g->x + g->nx;

    x->type = type;
    x->cte = cte;
    x->leaf = leaf;
    x->body_start = (off_t) g->body.len;
    x->body_end = -1;
    strbuf_init(&x->dec, BIG);
    return (g->nx++);
}

/*
 * g_begin - a part: its header lines ('\n' ends each) and the empty
 * line; the content starts after it
 */
static int g_begin(struct gen *g, const char *type, enum mime_cte cte,
		           int leaf, const char *hdr)
{
    const char *p;
    int     i;

    for (p = hdr; *p; p++) {
	if (*p == '\n')
	    strbuf_putc(&g->body, '\r');
	strbuf_putc(&g->body, *p);
    }
    strbuf_puts(&g->body, "\r\n");
    i = g_add(g, type, cte, leaf);
    return (i);
}

/* g_end - the content ended with a line end, a delimiter follows */

static void g_end(struct gen *g, int i)
{
    g->x[i].body_end = (off_t) g->body.len - 2;
}

/* g_end_eof - the content runs to the end of the body */

static void g_end_eof(struct gen *g, int i)
{
    g->x[i].body_end = (off_t) g->body.len;
}

/* g_text - lines of words (UTF-8 among them) */

static void g_text(struct gen *g, int lines)
{
    static const char *words[] = {"the", "report", "is", "attached",
    "see", "page", "Grüße", "and", "thanks", "for", "the", "numbers"};
    int     i, j;

    for (i = 0; i < lines; i++) {
	for (j = 0; j < 8; j++) {
	    strbuf_puts(&g->body, words[rnd(12)]);
	    strbuf_putc(&g->body, j < 7 ? ' ' : '.');
	}
	strbuf_puts(&g->body, "\r\n");
    }
}

/* g_b64 - nraw random bytes base64-encoded as lines of the given kind */

static void g_b64(struct gen *g, size_t nraw, int how)
{
    static const char junk[] = "*! \t.%#~";
    unsigned char *raw = xmalloc(nraw);
    struct strbuf enc;
    size_t  i, pos, len, seg, dash1, dash2;

    strbuf_init(&enc, BIG);
    for (i = 0; i < nraw; i++)
	raw[i] = (unsigned char) rnd(256);
    if (how == B64_PADMID) {
	/* Encoded in pieces of any length: "=" and "==" inside lines. */
	for (i = 0; i < nraw; i += seg) {
	    seg = 1 + rnd(3000);
	    if (seg > nraw - i)
		seg = nraw - i;
	    b64_put(&enc, raw + i, seg);
	}
    } else {
	b64_put(&enc, raw, nraw);
    }
    dash1 = enc.len * 2 / 5;
    dash2 = enc.len * 7 / 10;
    for (pos = 0; pos < enc.len; pos += len) {
	len = how == B64_IRREGULAR ? 1 + rnd(200) : 76;
	if (len > enc.len - pos)
	    len = enc.len - pos;
	/* Not delimiters, but a hole must end before them. */
	if (how == B64_DASH && pos <= dash1 && pos + len > dash1)
	    g_line(g, "-x");
	if (how == B64_DASH && pos <= dash2 && pos + len > dash2)
	    g_line(g, "-- not a delimiter");
	if (how == B64_JUNK) {
	    for (i = 0; i < len; i++) {
		if (rnd(16) == 0)
		    strbuf_putc(&g->body, rnd(2) ? junk[rnd(sizeof(junk) - 1)]
				: 0x80 + (int) rnd(128));
		strbuf_putc(&g->body, enc.data[pos + i]);
	    }
	} else {
	    strbuf_append(&g->body, enc.data + pos, len);
	}
	strbuf_puts(&g->body, "\r\n");
    }
    strbuf_free(&enc);
    free(raw);
}

/*
 * g_qp - about n bytes of text, quoted-printable: literal where it may
 * be, "=XX" else, soft line breaks; the text itself goes to x->dec.  A
 * literal space is only written early in a line, so no line ends in
 * white space (which a decoder removes)
 */
static void g_qp(struct gen *g, struct xpart *x, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    char    line[100], tok[4];
    size_t  ll = 0, done = 0, plen, k, tl;
    int     c;

    while (done < n) {
	plen = 20 + rnd(300);
	for (k = 0; k < plen; k++) {
	    switch (rnd(20)) {
	    case 0:
	    case 1:
		c = ' ';
		break;
	    case 2:
		c = 0x80 + (int) rnd(128);
		break;
	    case 3:
		c = '=';
		break;
	    case 4:
		c = '-';
		break;
	    default:
		c = 'a' + (int) rnd(26);
		break;
	    }
	    if (k == plen - 1)
		c = 'z';
	    if ((c > ' ' && c < 127 && c != '=') || (c == ' ' && ll < 60)) {
		tok[0] = (char) c;
		tl = 1;
	    } else {
		tok[0] = '=';
		tok[1] = hex[(c >> 4) & 15];
		tok[2] = hex[c & 15];
		tl = 3;
	    }
	    if (ll + tl > 72) {
		line[ll++] = '=';
		strbuf_append(&g->body, line, ll);
		strbuf_puts(&g->body, "\r\n");
		ll = 0;
	    }
	    memcpy(line + ll, tok, tl);
	    ll += tl;
	    strbuf_putc(&x->dec, c);
	}
	strbuf_append(&g->body, line, ll);
	strbuf_puts(&g->body, "\r\n");
	strbuf_puts(&x->dec, "\r\n");
	ll = 0;
	done += plen;
    }
    /* The last line end belongs to the delimiter that follows. */
    strbuf_truncate(&x->dec, x->dec.len - 2);
}

#define MIXED_HDR "Content-Type: multipart/mixed; boundary=\"outer\""
#define TEXT_HDR "Content-Type: text/plain; charset=utf-8\n" \
	"Content-Transfer-Encoding: 8bit\n"

/* g_b64_part - a base64 leaf (hdr: its header lines), a delimiter next */

static void g_b64_part(struct gen *g, const char *type, const char *hdr,
		               size_t nraw, int how)
{
    int     i = g_begin(g, type, MIME_CTE_BASE64, 1, hdr);

    g_b64(g, nraw, how);
    g_end(g, i);
}

/* g_mixed_b64 - multipart/mixed: a text part, one base64 part of a kind */

static void g_mixed_b64(struct gen *g, size_t nraw, int how, int close)
{
    int     i;

    g_hdr(g, MIXED_HDR);
    g_add(g, "multipart/mixed", MIME_CTE_IDENTITY, 0);
    g_line(g, "This is a multi-part message in MIME format.");
    g_delim(g, "outer", 0);
    i = g_begin(g, "text/plain", MIME_CTE_IDENTITY, 1, TEXT_HDR);
    g_text(g, 5);
    g_end(g, i);
    g_delim(g, "outer", 0);
    i = g_begin(g, "application/octet-stream", MIME_CTE_BASE64, 1,
		"Content-Type: application/octet-stream; name=\"data.bin\"\n"
		"Content-Disposition: attachment; filename=\"data.bin\"\n"
		"Content-Transfer-Encoding: base64\n");
    g_b64(g, nraw, how);
    if (close) {
	g_end(g, i);
	g_delim(g, "outer", 1);
	g_line(g, "epilogue");
    } else {
	g_end_eof(g, i);
    }
}

enum {
    SH_MIXED, SH_IRREGULAR, SH_JUNK, SH_PADMID, SH_DASH, SH_DASH_EDGE,
    SH_NOCLOSE, SH_NOCLOSE_NOEOL, SH_SINGLE, SH_SINGLE_IRREGULAR,
    SH_NESTED, SH_QP, NSHAPES,
};

static const char *shape_names[NSHAPES] = {
    "mixed pdf+png", "irregular lines", "junk bytes", "padding inside",
    "dash lines", "dash line at a block edge", "no close delimiter",
    "no close, no last line end", "single part",
    "single part, irregular lines", "nested mixed>related>image",
    "quoted-printable",
};

/*
 * g_b64_dash_at - base64 lines of 76 characters with a line "-x" that
 * starts at body offset at: the milter's blocks (mem_limit 0, chunks
 * of 64 KB) end there, so the watch sees the '-' as the first byte of
 * a block, not after a line end inside it
 */
static void g_b64_dash_at(struct gen *g, size_t nraw, size_t at)
{
    unsigned char *raw = xmalloc(nraw);
    struct strbuf enc;
    size_t  i, pos, len;

    strbuf_init(&enc, BIG);
    for (i = 0; i < nraw; i++)
	raw[i] = (unsigned char) rnd(256);
    b64_put(&enc, raw, nraw);
    for (pos = 0; pos < enc.len; pos += len) {
	len = 76;
	if (len > enc.len - pos)
	    len = enc.len - pos;
	if (g->body.len < at && g->body.len + len + 2 >= at)
	    len = at - g->body.len - 2;		/* a short line up to it */
	strbuf_append(&g->body, enc.data + pos, len);
	strbuf_puts(&g->body, "\r\n");
	if (g->body.len == at)
	    g_line(g, "-x");
    }
    strbuf_free(&enc);
    free(raw);
}

/* gen_make - the message of one shape */

static void gen_make(struct gen *g, int shape)
{
    int     i;

    memset(g, 0, sizeof(*g));
    g->name = shape_names[shape];
    strbuf_init(&g->hdr, STRBUF_MAX_HEADERS);
    strbuf_init(&g->body, BIG);
    rnd_seed((unsigned long long) shape + 1);
    g_hdr(g, "From: a@example.com");
    g_hdr(g, "To: b@example.com");
    g_hdr(g, "Subject: hole test");
    g_hdr(g, "MIME-Version: 1.0");
    switch (shape) {
    case SH_MIXED:
	g_hdr(g, MIXED_HDR);
	g_add(g, "multipart/mixed", MIME_CTE_IDENTITY, 0);
	g_line(g, "This is a multi-part message in MIME format.");
	g_delim(g, "outer", 0);
	i = g_begin(g, "text/plain", MIME_CTE_IDENTITY, 1, TEXT_HDR);
	g_text(g, 20);
	g_end(g, i);
	g_delim(g, "outer", 0);
	g_b64_part(g, "application/pdf",
		   "Content-Type: application/pdf; name=\"a.pdf\"\n"
		   "Content-Disposition: attachment; filename=\"a.pdf\"\n"
		   "Content-Transfer-Encoding: base64\n",
		   220000, B64_LINES);
	g_delim(g, "outer", 0);
	g_b64_part(g, "image/png",
		   "Content-Type: image/png; name=\"logo.png\"\n"
		   "Content-ID: <logo@x>\n"
		   "Content-Disposition: inline\n"
		   "Content-Transfer-Encoding: base64\n",
		   110000, B64_LINES);
	g_delim(g, "outer", 1);
	g_line(g, "epilogue");
	break;
    case SH_IRREGULAR:
	g_mixed_b64(g, 200000, B64_IRREGULAR, 1);
	break;
    case SH_JUNK:
	g_mixed_b64(g, 200000, B64_JUNK, 1);
	break;
    case SH_PADMID:
	g_mixed_b64(g, 200000, B64_PADMID, 1);
	break;
    case SH_DASH:
	/* Left open by g_mixed_b64(): a delimiter ends it here. */
	g_mixed_b64(g, 360000, B64_DASH, 0);
	g_end(g, g->nx - 1);
	/* A later part: diverted after the hole of the one before ended. */
	g_delim(g, "outer", 0);
	g_b64_part(g, "image/png",
		   "Content-Type: image/png\n"
		   "Content-Transfer-Encoding: base64\n",
		   120000, B64_LINES);
	g_delim(g, "outer", 1);
	break;
    case SH_DASH_EDGE:
	g_hdr(g, MIXED_HDR);
	g_add(g, "multipart/mixed", MIME_CTE_IDENTITY, 0);
	g_delim(g, "outer", 0);
	i = g_begin(g, "application/octet-stream", MIME_CTE_BASE64, 1,
		    "Content-Type: application/octet-stream\n"
		    "Content-Transfer-Encoding: base64\n");
	g_b64_dash_at(g, 250000, 3 * 65536);
	g_end(g, i);
	g_delim(g, "outer", 1);
	break;
    case SH_NOCLOSE:
	g_mixed_b64(g, 200000, B64_LINES, 0);
	break;
    case SH_NOCLOSE_NOEOL:
	g_mixed_b64(g, 200000, B64_IRREGULAR, 0);
	strbuf_truncate(&g->body, g->body.len - 2);
	g->x[g->nx - 1].body_end = (off_t) g->body.len;
	break;
    case SH_SINGLE:
	g_hdr(g, "Content-Type: application/octet-stream; name=\"x.bin\"");
	g_hdr(g, "Content-Transfer-Encoding: base64");
	i = g_add(g, "application/octet-stream", MIME_CTE_BASE64, 1);
	g_b64(g, 250000, B64_LINES);
	g_end_eof(g, i);
	break;
    case SH_SINGLE_IRREGULAR:
	/* Quanta across line ends: most line starts are no place to cut. */
	g_hdr(g, "Content-Type: image/jpeg");
	g_hdr(g, "Content-Transfer-Encoding: base64");
	i = g_add(g, "image/jpeg", MIME_CTE_BASE64, 1);
	g_b64(g, 250000, B64_IRREGULAR);
	g_end_eof(g, i);
	break;
    case SH_NESTED:
	g_hdr(g, MIXED_HDR);
	g_add(g, "multipart/mixed", MIME_CTE_IDENTITY, 0);
	g_delim(g, "outer", 0);
	i = g_begin(g, "text/plain", MIME_CTE_IDENTITY, 1, TEXT_HDR);
	g_text(g, 3);
	g_end(g, i);
	g_delim(g, "outer", 0);
	g_begin(g, "multipart/related", MIME_CTE_IDENTITY, 0,
		"Content-Type: multipart/related; boundary=\"rel\"; "
		"type=\"text/html\"\n");
	g_delim(g, "rel", 0);
	i = g_begin(g, "text/html", MIME_CTE_IDENTITY, 1,
		    "Content-Type: text/html; charset=utf-8\n");
	g_line(g, "<p><img src=\"cid:img@x\"></p>");
	g_end(g, i);
	g_delim(g, "rel", 0);
	g_b64_part(g, "image/png",
		   "Content-Type: image/png\n"
		   "Content-ID: <img@x>\n"
		   "Content-Transfer-Encoding: base64\n",
		   180000, B64_LINES);
	g_delim(g, "rel", 1);
	g_delim(g, "outer", 0);
	g_b64_part(g, "application/pdf",
		   "Content-Type: application/pdf\n"
		   "Content-Transfer-Encoding: base64\n",
		   120000, B64_IRREGULAR);
	g_delim(g, "outer", 1);
	break;
    case SH_QP:
	g_hdr(g, MIXED_HDR);
	g_add(g, "multipart/mixed", MIME_CTE_IDENTITY, 0);
	g_delim(g, "outer", 0);
	i = g_begin(g, "text/plain", MIME_CTE_QP, 1,
		    "Content-Type: text/plain; charset=iso-8859-1\n"
		    "Content-Transfer-Encoding: quoted-printable\n");
	g_qp(g, g->x + i, 300000);
	g_end(g, i);
	g_delim(g, "outer", 0);
	/* Base64, but shorter than the threshold: never diverted. */
	g_b64_part(g, "application/octet-stream",
		   "Content-Type: application/octet-stream\n"
		   "Content-Transfer-Encoding: base64\n",
		   600, B64_LINES);
	g_delim(g, "outer", 0);
	i = g_begin(g, "text/plain", MIME_CTE_IDENTITY, 1, TEXT_HDR);
	g_text(g, 800);
	g_end(g, i);
	g_delim(g, "outer", 1);
	break;
    }
}

/* gen_free - release what gen_make() made */

static void gen_free(struct gen *g)
{
    int     i;

    for (i = 0; i < g->nx; i++)
	strbuf_free(&g->x[i].dec);
    strbuf_free(&g->hdr);
    strbuf_free(&g->body);
}

/* lf_only - s with every CRLF made LF (as a pipe from Postfix has it) */

static void lf_only(struct strbuf *out, const char *s, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++)
	if (!(s[i] == '\r' && i + 1 < n && s[i + 1] == '\n'))
	    strbuf_putc(out, s[i]);
}

/* ---------------------------------------------------------- building */

/*
 * How a message is built: the relay's way, msg_stream_put() with
 * pieces of n bytes (0: all at once), or the milter's way, header
 * fields and body chunks of 64 KB, mem_limit n (0: spooled at once).
 */
struct mode {
    int     milter;
    size_t  n;
};

static const struct mode modes[] = {
    {0, 1}, {0, 7}, {0, 4096}, {0, 65536}, {0, 300000}, {0, 0},
    {1, 0}, {1, 10000},
};

#define NMODES	(sizeof(modes) / sizeof(modes[0]))

/* set_ctx - name the run in ctx (threshold -1: no diversion) */

static void set_ctx(const struct gen *g, int crlf, const struct mode *md,
		            off_t threshold)
{
    char    how[80];

    if (md->milter)
	snprintf(how, sizeof(how), "milter, mem_limit %zu", md->n);
    else if (md->n == 0)
	snprintf(how, sizeof(how), "msg_stream_put() all at once");
    else
	snprintf(how, sizeof(how), "msg_stream_put() pieces of %zu", md->n);
    snprintf(ctx, sizeof(ctx), "%s, %s, %s, threshold %lld", g->name,
	     crlf ? "CRLF" : "LF", how,
	     threshold == NO_DIVERT ? -1LL : (long long) threshold);
}

/*
 * max_block - the largest spool write of a run: one cut per block, so
 * a part can only be relied on to get a hole when it is long enough
 * beyond the threshold to start one in a block of its own
 */
static off_t max_block(const struct gen *g, int crlf, const struct mode *md)
{
    /* CRLF input goes to the file as it came; LF input line by line. */
    if (!md->milter && crlf && (md->n == 0 || md->n > MSG_BLOCK_MIN))
	return (md->n == 0 ? (off_t) (g->hdr.len + g->body.len) :
		(off_t) md->n);
    return (MSG_BLOCK_MIN);
}

/* build - the message of g, with mime_watch() and the threshold */

static int build(const struct gen *g, int crlf, const struct mode *md,
		         off_t threshold, off_t max_size, struct msg *m,
		         struct m365_result *res)
{
    off_t   was = mime_store_decoded_after(threshold);
    struct strbuf text;
    const char *body;
    size_t  o, k, blen;
    int     rc = 0;

    strbuf_init(&text, BIG);
    if (md->milter == 0) {
	struct msg_stream *ms = msg_stream_create(m, tmpdir, 0, max_size);

	mime_watch(m);
	if (crlf) {
	    strbuf_append(&text, g->hdr.data, g->hdr.len);
	    strbuf_puts(&text, "\r\n");
	    strbuf_append(&text, g->body.data, g->body.len);
	} else {
	    lf_only(&text, g->hdr.data, g->hdr.len);
	    strbuf_puts(&text, "\n");
	    lf_only(&text, g->body.data, g->body.len);
	}
	for (o = 0; o < text.len; o += k) {
	    k = md->n == 0 || md->n > text.len - o ? text.len - o : md->n;
	    msg_stream_put(ms, text.data + o, k);
	}
	rc = msg_stream_finish(ms, res);
    } else {
	const char *p = g->hdr.data, *e, *colon;
	char   *name, *value;

	msg_init(m, tmpdir, md->n, max_size);
	mime_watch(m);
	for (; p < g->hdr.data + g->hdr.len; p = e + 2) {
	    e = strstr(p, "\r\n");
	    colon = memchr(p, ':', (size_t) (e - p));
	    name = xstrndup(p, (size_t) (colon - p));
	    value = xstrndup(colon + 2, (size_t) (e - colon - 2));
	    if (msg_add_header(m, name, value, res) < 0)
		rc = -1;
	    free(name);
	    free(value);
	}
	/* libmilter hands over CRLF; a bare LF must work as well. */
	if (crlf)
	    strbuf_append(&text, g->body.data, g->body.len);
	else
	    lf_only(&text, g->body.data, g->body.len);
	body = text.data;
	blen = text.len;
	for (o = 0; o < blen; o += k) {
	    k = blen - o < 65536 ? blen - o : 65536;
	    if (msg_add_body(m, body + o, k, res) < 0)
		rc = -1;
	}
	if (msg_finish(m, res) < 0)
	    rc = -1;
    }
    strbuf_free(&text);
    (void) mime_store_decoded_after(was);
    return (rc);
}

/* ------------------------------------------------------------ checks */

static int s_eq(const char *a, const char *b)
{
    return (strcmp(a ? a : "(null)", b ? b : "(null)") == 0);
}

/* prefix_of - a's bytes are the first of b's (all of them: same length) */

static int prefix_of(const struct strbuf *a, const struct strbuf *b)
{
    return (a->len <= b->len
	    && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0));
}

/* same_parts - a parse agrees with the reference parse, field by field */

static void same_parts(const struct mime *a, const struct mime *b)
{
    size_t  i;

    H_EQ(a->nparts, b->nparts);
    H_EQ(a->over_limit, b->over_limit);
    for (i = 0; i < a->nparts && i < b->nparts; i++) {
	const struct mime_part *p = a->parts + i, *q = b->parts + i;

	H_EQ(p->parent, q->parent);
	H_EQ(p->depth, q->depth);
	H_EQ(p->start, q->start);
	H_EQ(p->body_start, q->body_start);
	H_EQ(p->body_end, q->body_end);
	H_OK(s_eq(p->type, q->type));
	H_EQ(p->cte, q->cte);
	H_EQ(p->disp, q->disp);
	H_EQ(p->multipart, q->multipart);
	H_OK(s_eq(p->boundary, q->boundary));
	H_OK(s_eq(p->name, q->name));
	H_OK(s_eq(p->content_id, q->content_id));
	H_EQ(p->closed, q->closed);
	H_EQ(p->ended, q->ended);
	H_EQ(p->size_known, q->size_known);
	H_EQ(p->decoded_size, q->decoded_size);
    }
}

/* check_expected - a parse finds the parts the generator wrote */

static void check_expected(const struct gen *g, const struct mime *mime)
{
    size_t  i;

    H_EQ(mime->nparts, g->nx);
    for (i = 0; i < mime->nparts && i < (size_t) g->nx; i++) {
	const struct mime_part *p = mime->parts + i;
	const struct xpart *x = g->x + i;

	H_OK(s_eq(p->type, x->type));
	H_EQ(p->cte, x->cte);
	H_EQ(p->multipart, !x->leaf);
	if (x->leaf) {
	    H_EQ(p->body_start, x->body_start);
	    H_EQ(p->body_end, x->body_end);
	}
    }
}

/* hole_of - the hole that holds body offset off (own search), or NULL */

static const struct msg_hole *hole_of(const struct msg *m, off_t off)
{
    size_t  i;

    for (i = 0; i < m->nholes; i++)
	if (off >= m->holes[i].body_off
	    && off < m->holes[i].body_off + m->holes[i].body_len)
	    return (m->holes + i);
    return (NULL);
}

/* holes_in - how many holes meet [from, to) */

static int holes_in(const struct msg *m, off_t from, off_t to)
{
    size_t  i;
    int     n = 0;

    for (i = 0; i < m->nholes; i++)
	if (m->holes[i].body_off < to
	    && m->holes[i].body_off + m->holes[i].body_len > from)
	    n++;
    return (n);
}

/* want_decoded - the decoded content of part i, from the references */

static void want_decoded(const struct gen *g, const struct mime_part *p,
			         const struct xpart *x, struct strbuf *out)
{
    const unsigned char *s = (const unsigned char *) g->body.data
	+ p->body_start;
    size_t  n = (size_t) (p->body_end - p->body_start);
    struct rb64 st = {0, 0};
    unsigned char *buf;
    size_t  o;

    strbuf_reset(out);
    if (p->cte == MIME_CTE_BASE64) {
	buf = xmalloc(n + 4);
	o = rb64(&st, s, n, buf);
	o += rb64_end(&st, buf + o);
	strbuf_append(out, buf, o);
	free(buf);
    } else if (p->cte == MIME_CTE_QP) {
	strbuf_append(out, x->dec.data, x->dec.len);
    } else {
	strbuf_append(out, s, n);
    }
}

/*
 * read_part - the decoded content of p read chunk bytes at a time:
 * 0 when it all came, -1 when the stream failed (out holds what came
 * before, err why)
 */
static int read_part(const struct msg *m, const struct mime_part *p,
		             size_t chunk, struct strbuf *out, char *err,
		             size_t errlen)
{
    struct mime_stream *s = mime_stream_open(m, p);
    char   *buf = xmalloc(chunk);
    ssize_t got;

    strbuf_reset(out);
    err[0] = 0;
    while ((got = mime_stream_read(s, buf, chunk)) > 0)
	strbuf_append(out, buf, (size_t) got);
    if (got < 0)
	snprintf(err, errlen, "%s", mime_stream_error(s) ?
		 mime_stream_error(s) : "");
    mime_stream_close(s);
    free(buf);
    return (got < 0 ? -1 : 0);
}

/*
 * check_rewind - a stream rewound inside its hole (the retry of an
 * upload) starts over from the raw bytes before it and reads the same
 */
static void check_rewind(const struct msg *m, const struct mime_part *p,
			         const struct strbuf *want)
{
    struct mime_stream *s = mime_stream_open(m, p);
    struct strbuf got;
    char    buf[4096];
    ssize_t n;
    size_t  far = want->len / 2;

    strbuf_init(&got, BIG);
    while (got.len < far && (n = mime_stream_read(s, buf, sizeof(buf))) > 0)
	strbuf_append(&got, buf, (size_t) n);
    H_OK(prefix_of(&got, want));
    mime_stream_rewind(s);
    strbuf_reset(&got);
    while ((n = mime_stream_read(s, buf, sizeof(buf))) > 0)
	strbuf_append(&got, buf, (size_t) n);
    H_EQ(n, 0);
    H_OK(prefix_of(&got, want) && got.len == want->len);
    mime_stream_close(s);
    strbuf_free(&got);
}

/*
 * check_content - every part reads as the references say.  Only a part
 * whose raw bytes are needed and partly gone (a container around a
 * hole, or a reparse that made the body one text part) may fail
 * instead, and then only after bytes that are right so far.
 */
static int refused;				/* such refusals, for the log */

static void check_content(const struct gen *g, const struct msg *m,
			          const struct mime *mime, size_t chunk,
			          int online)
{
    struct strbuf want, got;
    char    err[256], serr[256];
    size_t  i;
    off_t   size;
    int     rc, src, over;

    strbuf_init(&want, BIG);
    strbuf_init(&got, BIG);
    for (i = 0; i < mime->nparts; i++) {
	const struct mime_part *p = mime->parts + i;
	const struct xpart *x = i < (size_t) g->nx ? g->x + i : g->x;

	want_decoded(g, p, x, &want);
	over = holes_in(m, p->body_start, p->body_end) > 0;
	rc = read_part(m, p, chunk, &got, err, sizeof(err));
	src = mime_decoded_size(m, p, &size, serr, sizeof(serr));
	if (rc == 0) {
	    H_EQ(got.len, want.len);
	    H_OK(prefix_of(&got, &want) && got.len == want.len);
	} else {
	    refused++;
	    H_OK(over && p->cte != MIME_CTE_BASE64 && p->cte != MIME_CTE_QP);
	    H_OK(err[0] != 0);
	    H_OK(prefix_of(&got, &want));
	}
	if (p->stored_decoded && chunk == 1000)
	    check_rewind(m, p, &want);
	if (p->cte == MIME_CTE_BASE64 || !over) {
	    H_EQ(src, 0);
	    H_EQ(size, (long long) want.len);
	} else if (src == 0) {
	    H_EQ(size, (long long) want.len);
	}
	/*
	 * The parse made while storing saw every content byte; a parse
	 * after the fact stops where the structure ends (a single part
	 * has none), and only then may a size be unknown.
	 */
	if (!p->multipart && p->cte == MIME_CTE_BASE64 && online)
	    H_EQ(p->size_known, 1);
	if (!p->multipart && p->cte == MIME_CTE_BASE64 && p->size_known)
	    H_EQ(p->decoded_size, (long long) want.len);
    }
    strbuf_free(&want);
    strbuf_free(&got);
}

/* first_dash - the first line in (from, to) that starts with '-', or to */

static off_t first_dash(const struct gen *g, off_t from, off_t to)
{
    const char *b = g->body.data;
    off_t   o;

    for (o = from + 1; o < to; o++)
	if (b[o - 1] == '\n' && b[o] == '-')
	    return (o);
    return (to);
}

/* show_hole - a hole that failed a check, for the report */

static void show_hole(const struct gen *g, const struct msg_hole *h,
		              size_t i, const struct mime_part *p, size_t j)
{
    off_t   o;

    printf("# hole %zu: body %lld+%lld (file %lld+%lld) in part %zu, "
	   "content %lld..%lld; the 8 bytes before it: \"", i,
	   (long long) h->body_off, (long long) h->body_len,
	   (long long) h->file_off, (long long) h->file_len, j,
	   (long long) p->body_start, (long long) p->body_end);
    for (o = h->body_off >= 8 ? h->body_off - 8 : 0; o < h->body_off; o++)
	printf(g->body.data[o] == '\r' ? "\\r" : g->body.data[o] == '\n' ?
	       "\\n" : "%c", g->body.data[o]);
    printf("\"\n");
}

/*
 * check_holes - where the holes are and what the file holds for them:
 * each in one base64 leaf, from a line start at a quantum boundary
 * past the threshold to the first line starting with '-' (or the end
 * of the body); the file holds the decoded bytes; the accounting of
 * body_len, file_len and the file itself agrees
 */
static void check_holes(const struct gen *g, const struct msg *m,
			        const struct mime *mime, off_t threshold,
			        off_t block)
{
    const unsigned char *b = (const unsigned char *) g->body.data;
    off_t   cut = 0, stored = 0, prev_end = 0, end, span;
    int     divert = threshold != NO_DIVERT, n, found, f0;
    struct stat st;
    size_t  i, j;

    if (!divert)
	H_EQ(m->nholes, 0);
    for (i = 0; i < m->nholes; i++) {
	const struct msg_hole *h = m->holes + i;

	end = h->body_off + h->body_len;
	H_OK(h->body_len > 0);
	H_OK(h->body_off >= prev_end);
	H_OK(end <= m->body_len);
	/* Everything before the hole is in the file as it is. */
	H_EQ(h->file_off, h->body_off - cut + stored);
	if (end < m->body_len)
	    H_EQ(msg_file_off(m, end), h->file_off + h->file_len);
	H_OK(msg_hole_at(m, h->body_off) == h);
	H_OK(msg_hole_at(m, end - 1) == h);
	if (h->body_off > prev_end)
	    H_OK(msg_hole_at(m, h->body_off - 1) == h);
	cut += h->body_len;
	stored += h->file_len;
	prev_end = end;
	if (end > m->body_len || h->body_off <= 0)
	    continue;

	/* The base64 leaf it is in. */
	found = 0;
	for (j = 0; j < mime->nparts; j++) {
	    const struct mime_part *p = mime->parts + j;
	    struct rb64 rs = {0, 0};
	    unsigned char *want, *got;
	    size_t  nf, tail;
	    ssize_t r;

	    if (p->multipart || h->body_off < p->body_start
		|| h->body_off >= p->body_end)
		continue;
	    found = 1;
	    f0 = t_fail;
	    H_EQ(p->cte, MIME_CTE_BASE64);
	    H_OK(h->body_off >= p->body_start + threshold);
	    H_OK(end <= p->body_end + 2);
	    H_OK(b[h->body_off - 1] == '\n');
	    (void) rb64(&rs, b + p->body_start,
			(size_t) (h->body_off - p->body_start), NULL);
	    H_EQ(rs.nacc, 0);
	    H_OK(end == m->body_len || (b[end - 1] == '\n' && b[end] == '-'));
	    H_EQ(first_dash(g, h->body_off - 1, end), end);
	    /* The file holds the decoded bytes (a partial quantum may wait). */
	    want = xmalloc((size_t) h->body_len + 4);
	    got = xmalloc((size_t) h->file_len + 1);
	    nf = rb64(&rs, b + h->body_off, (size_t) h->body_len, want);
	    tail = rb64_end(&rs, want + nf);
	    H_OK(h->file_len == (off_t) nf || h->file_len == (off_t) (nf + tail));
	    r = pread(m->body_fd, got, (size_t) h->file_len, h->file_off);
	    H_EQ(r, h->file_len);
	    H_OK(r == h->file_len && r <= (ssize_t) (nf + tail)
		 && memcmp(got, want, (size_t) r) == 0);
	    free(want);
	    free(got);
	    if (t_fail != f0)
		show_hole(g, h, i, p, j);
	}
	H_OK(found);
    }
    H_EQ(m->file_len, m->body_len - cut + stored);
    if (m->body_fd >= 0) {
	H_EQ(fstat(m->body_fd, &st), 0);
	H_EQ(st.st_size, m->file_len);
    }
    if (m->nholes > 0)
	H_OK(m->file_len < m->body_len);

    /* Which parts have one. */
    for (j = 0; j < mime->nparts; j++) {
	const struct mime_part *p = mime->parts + j;

	if (p->multipart)
	    continue;
	n = holes_in(m, p->body_start, p->body_end);
	H_EQ(p->stored_decoded, n > 0);
	/* Once a hole ended the part is not diverted again. */
	H_OK(n <= 1);
	if (p->cte != MIME_CTE_BASE64 || !divert
	    || p->body_end - p->body_start <= threshold) {
	    H_EQ(n, 0);
	    continue;
	}
	/*
	 * The watch decides at block edges and line starts: a part whose
	 * header and threshold are in one write block starts its hole in
	 * the next block, and a block with a cut takes no second one.  Two
	 * blocks past the threshold (before a '-' line) a hole must be.
	 */
	span = first_dash(g, p->body_start, p->body_end) - p->body_start;
	if (span - threshold > 2 * block + 8192)
	    H_EQ(n, 1);
    }
}

/*
 * check_pread - msg_body_pread() over the whole body: outside the holes
 * the canonical bytes, never a byte of a hole, MSG_IN_HOLE inside
 */
static void check_pread(const struct gen *g, const struct msg *m)
{
    static const size_t chunks[] = {4096, 100000, 1 << 20};
    const struct msg_hole *h;
    off_t   off, len = (off_t) g->body.len, end;
    size_t  c, i;
    char   *buf = xmalloc(1 << 20);
    ssize_t r;

    H_EQ(m->body_len, len);
    for (c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
	for (off = 0; off < len; off += r) {
	    r = msg_body_pread(m, buf, chunks[c], off);
	    if ((h = hole_of(m, off)) != NULL) {
		H_EQ(r, MSG_IN_HOLE);
		r = h->body_off + h->body_len - off;
		continue;
	    }
	    H_OK(r > 0);
	    if (r <= 0)
		break;
	    H_OK(holes_in(m, off, off + r) == 0);
	    H_OK(off + r <= len
		 && memcmp(buf, g->body.data + off, (size_t) r) == 0);
	}
	H_EQ(msg_body_pread(m, buf, chunks[c], len), 0);
    }
    for (i = 0; i < m->nholes; i++) {
	h = m->holes + i;
	end = h->body_off + h->body_len;
	H_EQ(msg_body_pread(m, buf, 10, h->body_off), MSG_IN_HOLE);
	H_EQ(msg_body_pread(m, buf, 10, h->body_off + h->body_len / 2),
	     MSG_IN_HOLE);
	H_EQ(msg_body_pread(m, buf, 10, end - 1), MSG_IN_HOLE);
	/* Just before a hole: stops at it. */
	if (h->body_off >= 3 && hole_of(m, h->body_off - 3) == NULL) {
	    r = msg_body_pread(m, buf, 100, h->body_off - 3);
	    H_OK(r > 0 && r <= 3);
	    H_OK(r > 0 && memcmp(buf, g->body.data + h->body_off - 3,
				 (size_t) r) == 0);
	}
	if (end < len && hole_of(m, end) == NULL) {
	    r = msg_body_pread(m, buf, 1, end);
	    H_EQ(r, 1);
	    H_OK(r == 1 && buf[0] == g->body.data[end]);
	}
    }
    free(buf);
}

/* ------------------------------------------------------------- tests */

static const size_t read_sizes[] = {1, 1000, 65536, 3 * 1024 * 1024};

/*
 * test_sweep - every shape, LF and CRLF, fed in pieces of 1 byte to
 * all at once and the milter's way, with and without diversion: the
 * same parts as the parse of the generated message, the same decoded
 * content as the plain decoders, holes exactly where they belong,
 * msg_body_pread() right around them
 */
static void test_sweep(void)
{
    static const struct mode whole = {0, 0};
    struct gen g;
    struct msg m;
    struct mime ref, mime;
    struct m365_result res;
    char    err[256];
    int     shape, crlf, divert, run = 0, diverted = 0, rc;
    size_t  md;
    off_t   threshold;

    for (shape = 0; shape < NSHAPES; shape++) {
	gen_make(&g, shape);
	/* The reference: fed at once, nothing diverted. */
	set_ctx(&g, 1, &whole, NO_DIVERT);
	T_EQ_INT(build(&g, 1, &whole, NO_DIVERT, 0, &m, &res), 0);
	T_EQ_INT(mime_parse(&ref, &m, err, sizeof(err)), 0);
	check_expected(&g, &ref);
	msg_free(&m);
	for (crlf = 0; crlf < 2; crlf++) {
	    for (md = 0; md < NMODES; md++) {
		for (divert = 0; divert < 2; divert++) {
		    threshold = !divert ? NO_DIVERT : md % 2 ? 1000 : 5000;
		    set_ctx(&g, crlf, modes + md, threshold);
		    rc = build(&g, crlf, modes + md, threshold, 0, &m, &res);
		    H_EQ(rc, 0);
		    if (rc != 0) {
			printf("# %s: %s %s\n", ctx, res.dsn, res.text);
			msg_free(&m);
			continue;
		    }
		    H_OK(m.body_fd >= 0);
		    H_EQ(m.body_len, (long long) g.body.len);
		    H_OK(prefix_of(&m.hdr, &g.hdr) && m.hdr.len == g.hdr.len);
		    rc = mime_parse(&mime, &m, err, sizeof(err));
		    H_EQ(rc, 0);
		    same_parts(&ref, &mime);
		    check_expected(&g, &mime);
		    check_holes(&g, &m, &mime, threshold,
				max_block(&g, crlf, modes + md));
		    check_content(&g, &m, &mime, read_sizes[run++ % 4], 1);
		    check_pread(&g, &m);
		    diverted += m.nholes > 0;
		    mime_free(&mime);
		    msg_free(&m);
		}
	    }
	}
	mime_free(&ref);
	gen_free(&g);
    }
    printf("# %d messages, %d with holes, %d streams refused over a hole\n",
	   run, diverted, refused);
    T_OK(diverted > run / 3);
}

/* src_all - the whole msg_src stream: 0, or -1 when it aborted */

static int src_all(struct msg_src *src, struct strbuf *out)
{
    static const size_t sizes[] = {16384, 1001, 3, 65536, 7};
    char    buf[65536];
    size_t  got, i = 0;

    strbuf_reset(out);
    for (;;) {
	got = msg_src_read(buf, 1, sizes[i++ % 5], src);
	if (got == CURL_READFUNC_ABORT)
	    return (-1);
	if (got == 0)
	    return (0);
	strbuf_append(out, buf, got);
    }
}

/*
 * test_src - the whole message base64-encoded for one request cannot
 * be made of a spool with holes (the raw bytes are gone): msg_src
 * must abort with a reason, after nothing but right bytes; without
 * diversion the same message streams whole
 */
static void test_src(void)
{
    static const int shapes[] = {SH_MIXED, SH_DASH, SH_SINGLE,
    SH_NOCLOSE_NOEOL, SH_NESTED};
    static const struct mode mds[] = {{0, 4096}, {1, 0}, {0, 65536}};
    struct gen g;
    struct msg m;
    struct m365_result res;
    struct strbuf raw, want, got;
    struct msg_src *src;
    size_t  s, md;
    int     divert, crlf, rc;
    off_t   threshold;

    strbuf_init(&raw, BIG);
    strbuf_init(&want, BIG);
    strbuf_init(&got, BIG);
    for (s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
	gen_make(&g, shapes[s]);
	strbuf_reset(&raw);
	strbuf_reset(&want);
	strbuf_append(&raw, g.hdr.data, g.hdr.len);
	strbuf_puts(&raw, "\r\n");
	strbuf_append(&raw, g.body.data, g.body.len);
	b64_put(&want, (const unsigned char *) raw.data, raw.len);
	for (md = 0; md < sizeof(mds) / sizeof(mds[0]); md++) {
	    for (divert = 0; divert < 2; divert++) {
		crlf = md != 0;
		threshold = divert ? 1000 : NO_DIVERT;
		set_ctx(&g, crlf, mds + md, threshold);
		T_EQ_INT(build(&g, crlf, mds + md, threshold, 0, &m, &res), 0);
		H_EQ(m.nholes > 0, divert);
		src = msg_src_create(&m.hdr, &m);
		rc = src_all(src, &got);
		if (m.nholes > 0) {
		    H_EQ(rc, -1);
		    H_OK(msg_src_error(src)[0] != 0);
		    /* Again after a rewind (a retry after 401). */
		    H_EQ(msg_src_rewind(src), 0);
		    rc = src_all(src, &got);
		    H_EQ(rc, -1);
		    H_OK(msg_src_error(src)[0] != 0);
		} else {
		    H_EQ(rc, 0);
		    H_EQ(msg_src_length(src), (long long) want.len);
		    H_EQ(got.len, (long long) want.len);
		}
		/* Never a wrong byte, however far it got. */
		H_OK(prefix_of(&got, &want));
		msg_src_free(src);
		msg_free(&m);
	    }
	}
	gen_free(&g);
    }
    strbuf_free(&raw);
    strbuf_free(&want);
    strbuf_free(&got);
}

/*
 * test_hdr_changed - the header section changed after the body was
 * stored (a rewrite): mime_parse() reads the stored body again, and
 * with holes it must still find the same parts and sizes (it steps
 * over them as the watch did), and the parts still read the same.  A new Content-Type that
 * makes the body one text part needs the raw bytes: refused, never
 * made up.
 */
static void test_hdr_changed(void)
{
    static const int shapes[] = {SH_MIXED, SH_DASH, SH_NOCLOSE, SH_SINGLE,
    SH_NESTED, SH_JUNK, SH_PADMID};
    static const struct mode mds[] = {{0, 4096}, {1, 0}, {0, 65536}};
    static const char added[] = "X-Added: after the body\r\n";
    struct gen g;
    struct msg m, nd;
    struct m365_result res;
    struct mime on, want, got;
    char    err[256];
    size_t  s, md;
    int     rc, crlf;

    for (s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
	gen_make(&g, shapes[s]);
	for (md = 0; md < sizeof(mds) / sizeof(mds[0]); md++) {
	    crlf = md != 1;
	    set_ctx(&g, crlf, mds + md, NO_DIVERT);
	    T_EQ_INT(build(&g, crlf, mds + md, NO_DIVERT, 0, &nd, &res), 0);
	    set_ctx(&g, crlf, mds + md, 1000);
	    T_EQ_INT(build(&g, crlf, mds + md, 1000, 0, &m, &res), 0);
	    H_OK(m.nholes > 0);
	    T_EQ_INT(mime_parse(&on, &m, err, sizeof(err)), 0);

	    /* A field added: the same structure. */
	    strbuf_append(&nd.hdr, added, strlen(added));
	    strbuf_append(&m.hdr, added, strlen(added));
	    T_EQ_INT(mime_parse(&want, &nd, err, sizeof(err)), 0);
	    /* mime_scan_hole() steps over each hole as the watch did. */
	    rc = mime_parse(&got, &m, err, sizeof(err));
	    T_CHECK(rc == 0, "[%s] reparse refused: %s", ctx, err);
	    same_parts(&want, &got);
	    check_expected(&g, &got);
	    check_content(&g, &m, &got, 1000, 0);
	    mime_free(&got);
	    mime_free(&want);

	    /* A new Content-Type: the body is one text part now. */
	    strbuf_reset(&m.hdr);
	    strbuf_puts(&m.hdr, "Content-Type: text/plain\r\n");
	    rc = mime_parse(&got, &m, err, sizeof(err));
	    if (rc == 0) {
		H_EQ(got.nparts, 1);
		H_EQ(got.parts[0].body_start, 0);
		H_EQ(got.parts[0].body_end, (long long) g.body.len);
		check_content(&g, &m, &got, 65536, 0);
	    } else {
		H_OK(err[0] != 0);
	    }
	    mime_free(&got);
	    mime_free(&on);
	    msg_free(&m);
	    msg_free(&nd);
	}
	gen_free(&g);
    }
}

/*
 * test_windows - the parts of a message with holes read the same
 * through a window of one page, of two pages (a new mapping every few
 * KB, across the edges of holes) and with pread() only
 */
static void test_windows(void)
{
    static const int shapes[] = {SH_MIXED, SH_DASH, SH_NESTED, SH_JUNK};
    static const struct mode mds[] = {{1, 0}, {0, 4096}};
    const size_t page = (size_t) sysconf(_SC_PAGESIZE);
    const size_t windows[] = {page, 2 * page, 0};
    struct gen g;
    struct msg m;
    struct m365_result res;
    struct mime mime;
    char    err[256];
    size_t  s, md, w, was;

    for (s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
	gen_make(&g, shapes[s]);
	for (md = 0; md < sizeof(mds) / sizeof(mds[0]); md++) {
	    set_ctx(&g, 1, mds + md, 1000);
	    T_EQ_INT(build(&g, 1, mds + md, 1000, 0, &m, &res), 0);
	    H_OK(m.nholes > 0);
	    T_EQ_INT(mime_parse(&mime, &m, err, sizeof(err)), 0);
	    for (w = 0; w < sizeof(windows) / sizeof(windows[0]); w++) {
		was = mime_stream_window(windows[w]);
		check_content(&g, &m, &mime, 7, 1);
		check_content(&g, &m, &mime, 65536, 1);
		(void) mime_stream_window(was);
	    }
	    mime_free(&mime);
	    msg_free(&m);
	}
	gen_free(&g);
    }
}

/*
 * test_max_size - a message over max_size while a part is diverted:
 * the holes made so far go with the dropped body, the result is 5.3.4,
 * and what is left can be parsed and freed (ASan: no leak, no stray
 * read)
 */
static void test_max_size(void)
{
    struct gen g;
    struct msg m;
    struct m365_result res;
    struct mime mime;
    struct msg_stream *ms;
    struct strbuf text;
    char    err[256], buf[16];
    off_t   was;
    size_t  o, k;
    int     rc, add_failed = 0;

    gen_make(&g, SH_MIXED);
    strbuf_init(&text, BIG);
    strbuf_append(&text, g.hdr.data, g.hdr.len);
    strbuf_puts(&text, "\r\n");
    strbuf_append(&text, g.body.data, g.body.len);

    /* The relay's way: holes exist before the limit is passed. */
    snprintf(ctx, sizeof(ctx), "max_size 200000, pieces of 4096");
    was = mime_store_decoded_after(1000);
    ms = msg_stream_create(&m, tmpdir, 0, 200000);
    mime_watch(&m);
    for (o = 0; o < text.len; o += k) {
	k = text.len - o < 4096 ? text.len - o : 4096;
	msg_stream_put(ms, text.data + o, k);
	if (o < 150000 && o + k >= 150000)
	    H_OK(m.nholes > 0);
    }
    rc = msg_stream_finish(ms, &res);
    (void) mime_store_decoded_after(was);
    H_EQ(rc, -1);
    T_EQ_STR(res.dsn, "5.3.4");
    H_EQ(m.nholes, 0);
    H_EQ(m.body_len, 0);
    H_EQ(m.file_len, 0);
    H_EQ(msg_body_pread(&m, buf, sizeof(buf), 0), 0);
    if (mime_parse(&mime, &m, err, sizeof(err)) == 0)
	H_OK(mime.nparts >= 1);
    mime_free(&mime);
    msg_free(&m);

    /* The milter's way. */
    snprintf(ctx, sizeof(ctx), "max_size 200000, milter chunks of 65536");
    was = mime_store_decoded_after(1000);
    msg_init(&m, tmpdir, 0, 200000);
    mime_watch(&m);
    H_EQ(msg_add_header(&m, "Content-Type", "multipart/mixed; "
			"boundary=\"outer\"", &res), 0);
    for (o = 0; o < g.body.len; o += k) {
	k = g.body.len - o < 65536 ? g.body.len - o : 65536;
	if (msg_add_body(&m, g.body.data + o, k, &res) < 0) {
	    add_failed = 1;
	    T_EQ_STR(res.dsn, "5.3.4");
	}
    }
    H_OK(add_failed);
    rc = msg_finish(&m, &res);
    (void) mime_store_decoded_after(was);
    H_EQ(rc, -1);
    T_EQ_STR(res.dsn, "5.3.4");
    H_EQ(m.nholes, 0);
    if (mime_parse(&mime, &m, err, sizeof(err)) == 0)
	H_OK(mime.nparts >= 1);
    mime_free(&mime);
    msg_free(&m);

    /* Under the limit the same message is diverted and whole. */
    snprintf(ctx, sizeof(ctx), "max_size 10 MB, pieces of 4096");
    {
	static const struct mode md = {0, 4096};

	T_EQ_INT(build(&g, 1, &md, 1000, 10 * 1024 * 1024, &m, &res), 0);
	H_OK(m.nholes > 0);
	T_EQ_INT(mime_parse(&mime, &m, err, sizeof(err)), 0);
	check_content(&g, &m, &mime, 65536, 1);
	mime_free(&mime);
	msg_free(&m);
    }
    strbuf_free(&text);
    gen_free(&g);
}

/*
 * gen_single - a single-part message: one base64 body of nraw bytes
 * (for the tests that need a size of their own)
 */
static void gen_single(struct gen *g, const char *name, unsigned seed,
		               size_t nraw)
{
    int     i;

    memset(g, 0, sizeof(*g));
    g->name = name;
    strbuf_init(&g->hdr, STRBUF_MAX_HEADERS);
    strbuf_init(&g->body, BIG);
    rnd_seed(seed);
    g_hdr(g, "From: a@example.com");
    g_hdr(g, "Content-Type: application/octet-stream");
    g_hdr(g, "Content-Transfer-Encoding: base64");
    i = g_add(g, "application/octet-stream", MIME_CTE_BASE64, 1);
    g_b64(g, nraw, B64_LINES);
    g_end_eof(g, i);
    snprintf(ctx, sizeof(ctx), "%s", name);
}

/*
 * test_digest - the send ledger's digest (first 64 KB of the body as
 * stored, and its canonical length) of a message whose file is shorter
 * than 64 KB though its body is longer: read from the file, not from
 * past its end; the pipe and the milter store the same file, so they
 * give the same digest
 */
static void test_digest(void)
{
    static const struct mode pipe4k = {0, 4096}, milter = {1, 0};
    struct gen g;
    struct msg a, b;
    struct m365_result res;
    unsigned char ra[32], rb[32];
    char    ha[65], hb[65];
    char   *fa, *fb;

    gen_single(&g, "single part, 60 KB decoded", 78, 60000);
    T_EQ_INT(build(&g, 0, &pipe4k, 1000, 0, &a, &res), 0);
    T_EQ_INT(build(&g, 1, &milter, 1000, 0, &b, &res), 0);
    H_OK(a.nholes == 1 && a.body_len > 65536 && a.file_len < 65536);
    H_EQ(b.file_len, a.file_len);
    fa = xmalloc((size_t) a.file_len + 1);
    fb = xmalloc((size_t) b.file_len + 1);
    H_EQ(msg_file_read(&a, fa, (size_t) a.file_len, 0), a.file_len);
    H_EQ(msg_file_read(&b, fb, (size_t) b.file_len, 0), b.file_len);
    H_OK(memcmp(fa, fb, (size_t) a.file_len) == 0);
    T_EQ_INT(ledger_digest(&a, ra, ha), 0);
    T_EQ_INT(ledger_digest(&b, rb, hb), 0);
    T_EQ_STR(ha, hb);
    free(fa);
    free(fb);
    msg_free(&a);
    msg_free(&b);
    gen_free(&g);
}

/*
 * test_big_block - a milter body held in memory up to a large
 * memory_limit reaches the spool in one block of that size: that block
 * is stored as it is (its decoded bytes would all be held at once),
 * the part is stored decoded from the next block on, and reads the same
 */
static void test_big_block(void)
{
    static const struct mode md = {1, 2600000};
    struct gen g;
    struct msg m;
    struct m365_result res;
    struct mime mime;
    char    err[256];

    gen_single(&g, "single part of 3.5 MB, milter memory_limit 2.6 MB", 77,
	       3500000);
    T_EQ_INT(build(&g, 1, &md, 1000, 0, &m, &res), 0);
    H_EQ(m.nholes, 1);
    if (m.nholes > 0)
	/* not inside the first block (memory_limit less a chunk) */
	T_CHECK(m.holes[0].body_off >= 2000000, "hole at %lld",
		(long long) m.holes[0].body_off);
    H_OK(m.file_len < m.body_len);
    T_EQ_INT(mime_parse(&mime, &m, err, sizeof(err)), 0);
    check_content(&g, &m, &mime, 65536, 1);
    mime_free(&mime);
    msg_free(&m);
    gen_free(&g);
}

/*
 * test_threshold - mime_store_decoded_after() returns the old value, so
 * a test can restore it; the default is 4 MB
 */
static void test_threshold(void)
{
    off_t   was = mime_store_decoded_after(1000);

    T_EQ_INT(was, 4LL * 1024 * 1024);
    T_EQ_INT(mime_store_decoded_after(was), 1000);
    T_EQ_INT(mime_store_decoded_after(was), (long long) was);
}

int     main(void)
{
    t_tmpdir(tmpdir, sizeof(tmpdir), "test_hole");
    T_RUN(test_threshold);
    T_RUN(test_sweep);
    T_RUN(test_src);
    T_RUN(test_hdr_changed);
    T_RUN(test_windows);
    T_RUN(test_max_size);
    T_RUN(test_big_block);
    T_RUN(test_digest);
    rmdir(tmpdir);
    return (T_DONE());
}
