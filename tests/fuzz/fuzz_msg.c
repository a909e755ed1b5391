/*
 * NAME
 *	fuzz_msg - libFuzzer target for message reading and streaming
 * SUMMARY
 *	msg_read() and msg_add_header()/msg_add_body()/msg_finish(),
 *	then the base64 stream of msg_src to the end
 * DESCRIPTION
 *	Byte 0 of the input chooses the path and the limits:
 *	  bit 0     0: msg_read() from a file descriptor (the MTA's pipe;
 *	            a scratch file here, rewritten for every input);
 *	            1: the milter's incremental path;
 *	  bits 1-2  max_size: none, 64, 512 or 4096 bytes;
 *	  bits 3-4  mem_limit (incremental path): 0, 16, 256, 1 MB;
 *	  bits 5-7  read size of the stream consumer: 1, 2, 3, 5, 7, 64,
 *	            1000 or 65536 bytes, so the carry of partial base64
 *	            quanta is exercised.
 *	For msg_read() the rest is the message as the MTA sends it.  For
 *	the incremental path it is a list of records: a header is
 *	"name NUL value NUL"; a record starting with NUL ends the header
 *	fields; what follows is the body, cut into chunks at every 0xff
 *	byte (which is kept).
 *
 *	Invariants (abort() on violation), for every message accepted:
 *	- the header section has CRLF line ends only, no bare CR, no NUL,
 *	  no empty line, no white space before a field's colon and no line
 *	  that is neither a field nor a continuation (a header value can
 *	  never end the header section or start the body); the scanner
 *	  msg_hdr_next()/msg_hdr_find() reads those same fields;
 *	- size == hdr.len + 2 + body_len (hdr.len + body_len for a
 *	  header-only message), body_len fits max_size;
 *	- the body has CRLF line ends only (no bare LF);
 *	- incremental path: the body is exactly the chunks with each bare
 *	  LF made CRLF, in memory when it fits mem_limit, else in the file;
 *	- the msg_src stream decodes to hdr + separator + body (no
 *	  separator for a header-only message), its length is
 *	  msg_src_length(), and a rewind gives the same bytes;
 *	- what Graph gets (issue 7.2): the header section rewritten by
 *	  rcpt_rewrite() for a fixed envelope, streamed with the body and
 *	  decoded, has CRLF line ends only up to the body, and the strict
 *	  reader of fuzz_model.h (CR, LF, CRLF all end a line) finds only
 *	  envelope recipients in it, and no ambiguous To/Cc/Bcc.
 *	A refused message carries a 4.x.x or 5.x.x result.
 * DIAGNOSTICS
 *	A failed invariant prints one line to stderr, then abort().
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>

#include "addr.h"
#include "fuzz.h"
#include "fuzz_model.h"
#include "log.h"
#include "msg.h"
#include "rcpt.h"
#include "status.h"
#include "strbuf.h"
#include "util.h"

static const off_t fuzz_max_size[] = {0, 64, 512, 4096};
static const size_t fuzz_mem_limit[] = {0, 16, 256, 1024 * 1024};
static const size_t fuzz_chunk[] = {1, 2, 3, 5, 7, 64, 1000, 65536};

static const char *fuzz_dir;
static char fuzz_path[4200];
static int fuzz_fd = -1;

/* fuzz_fail - report a broken invariant and crash */

static void fuzz_fail(const char *what)
{
    fuzz_violated(what);
    abort();
}

/* fuzz_b64val - value of one base64 character, -1 if none */

static int fuzz_b64val(int c)
{
    if (c >= 'A' && c <= 'Z')
	return (c - 'A');
    if (c >= 'a' && c <= 'z')
	return (c - 'a' + 26);
    if (c >= '0' && c <= '9')
	return (c - '0' + 52);
    if (c == '+')
	return (62);
    if (c == '/')
	return (63);
    return (-1);
}

/* fuzz_b64decode - strict decoder (padding only at the end) */

static void fuzz_b64decode(const char *in, size_t len, struct strbuf *out)
{
    size_t  i, k, pad;
    int     v[4];
    unsigned char b[3];

    if (len % 4 != 0)
	fuzz_fail("the base64 stream length is not a multiple of 4");
    for (i = 0; i < len; i += 4) {
	for (pad = 0, k = 0; k < 4; k++) {
	    if (in[i + k] == '=' && k >= 2 && i + 4 == len) {
		v[k] = 0;
		pad++;
	    } else if (pad > 0 || (v[k] = fuzz_b64val(in[i + k])) < 0) {
		fuzz_fail("the stream is not canonical base64");
	    }
	}
	b[0] = (unsigned char) (v[0] << 2 | v[1] >> 4);
	b[1] = (unsigned char) ((v[1] & 15) << 4 | v[2] >> 2);
	b[2] = (unsigned char) ((v[2] & 3) << 6 | v[3]);
	if (strbuf_append(out, b, 3 - pad) < 0)
	    fuzz_fail("the decoded stream is too large");
    }
}

/* fuzz_body - the stored body, from memory or the spool file */

static void fuzz_body(const struct msg *m, struct strbuf *out)
{
    char    buf[8192];
    off_t   off = 0;
    ssize_t got;

    if (m->body_fd < 0) {
	if ((off_t) m->body_mem.len != m->body_len)
	    fuzz_fail("body_len is not the in-memory body length");
	if (m->body_mem.len > 0
	    && strbuf_append(out, m->body_mem.data, m->body_mem.len) < 0)
	    fuzz_fail("the body does not fit the check buffer");
	return;
    }
    while (off < m->body_len) {
	got = pread(m->body_fd, buf, sizeof(buf), off);
	if (got < 0 && errno == EINTR)
	    continue;
	if (got <= 0)
	    fuzz_fail("the spool file is shorter than body_len");
	if (strbuf_append(out, buf, (size_t) got) < 0)
	    fuzz_fail("the body does not fit the check buffer");
	off += got;
    }
    if (pread(m->body_fd, buf, 1, off) != 0)
	fuzz_fail("the spool file is longer than body_len");
}

/* fuzz_check_hdr - CRLF only, every line a field or a continuation */

static void fuzz_check_hdr(const struct strbuf *h)
{
    const char *p = h->data ? h->data : "";
    const char *end = p + h->len, *eol;
    size_t  i, n;
    int     first = 1;

    for (; p < end; p = eol + 2, first = 0) {
	eol = memchr(p, '\n', (size_t) (end - p));
	if (eol == NULL || eol == p || eol[-1] != '\r')
	    fuzz_fail("a header line does not end with CRLF");
	eol--;					/* at the CR */
	n = (size_t) (eol - p);
	if (n == 0)
	    fuzz_fail("an empty line inside the header section");
	for (i = 0; i < n; i++)
	    if (p[i] == '\r' || p[i] == 0)
		fuzz_fail("a bare CR or a NUL in the header section");
	if (p[0] == ' ' || p[0] == '\t') {
	    if (first)
		fuzz_fail("the header section starts with a continuation");
	    continue;
	}
	/* RFC 5322 ftext, then (obsolete) white space before the colon. */
	for (i = 0; i < n && p[i] != ':'; i++)
	    if ((unsigned char) p[i] < 0x21 || (unsigned char) p[i] > 0x7e)
		break;
	if (i == 0)
	    fuzz_fail("a header line is neither a field nor a continuation");
	if (i < n && (p[i] == ' ' || p[i] == '\t'))
	    fuzz_fail("white space between a field name and its colon");
	if (i == n || p[i] != ':')
	    fuzz_fail("a header line is neither a field nor a continuation");
    }
}

/* fuzz_check_crlf - no bare LF */

static void fuzz_check_crlf(const char *p, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++)
	if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
	    fuzz_fail("a bare LF in the body");
}

/* fuzz_stream - read the whole msg_src and compare with the message */

static void fuzz_stream(const struct msg *m, size_t chunk,
		                const struct strbuf *body)
{
    struct msg_src *src = msg_src_create(&m->hdr, m);
    struct strbuf enc, dec, want;
    char   *buf = xmalloc(chunk);
    size_t  got;
    int     pass;
    char   *first = NULL;
    size_t  first_len = 0;

    for (pass = 0; pass < 2; pass++) {
	strbuf_init(&enc, STRBUF_MAX_JSON * 4);
	for (;;) {
	    got = msg_src_read(buf, 1, chunk, src);
	    if (got == CURL_READFUNC_ABORT) {
		fprintf(stderr, "fuzz_msg: %s\n", msg_src_error(src));
		fuzz_fail("msg_src_read() aborted");
	    }
	    if (got > chunk)
		fuzz_fail("msg_src_read() returned more than asked");
	    if (got == 0)
		break;
	    if (strbuf_append(&enc, buf, got) < 0)
		fuzz_fail("the stream does not fit the check buffer");
	}
	if ((long long) enc.len != msg_src_length(src))
	    fuzz_fail("msg_src_length() is not the stream length");
	if (pass == 0) {
	    first_len = enc.len;
	    first = strbuf_take(&enc);
	    if (msg_src_rewind(src) != 0)
		fuzz_fail("msg_src_rewind() failed");
	    chunk = chunk > 1 ? chunk / 2 : 1;	/* other boundaries */
	} else {
	    if (enc.len != first_len
		|| (first_len > 0 && memcmp(first, enc.data, first_len) != 0))
		fuzz_fail("a rewound stream differs from the first");
	    strbuf_init(&dec, STRBUF_MAX_JSON * 4);
	    fuzz_b64decode(enc.data ? enc.data : "", enc.len, &dec);
	    strbuf_init(&want, STRBUF_MAX_JSON * 4);
	    (void) strbuf_append(&want, m->hdr.data ? m->hdr.data : "",
				 m->hdr.len);
	    if (m->hdr.len > 0 && m->hdr.data[m->hdr.len - 1] != '\n')
		(void) strbuf_puts(&want, "\r\n");
	    if (!m->hdr_only || body->len > 0)
		(void) strbuf_puts(&want, "\r\n");
	    if (body->len > 0)
		(void) strbuf_append(&want, body->data, body->len);
	    if (dec.len != want.len
		|| (want.len > 0 && memcmp(dec.data, want.data, want.len) != 0))
		fuzz_fail("the decoded stream is not header + CRLF + body");
	    strbuf_free(&dec);
	    strbuf_free(&want);
	    strbuf_free(&enc);
	}
    }
    free(first);
    free(buf);
    msg_src_free(src);
}

/* The envelope of the Graph view: one plain, one in another form. */
static char *const fuzz_env[] = {"alice@example.com", "<Bob@Example.ORG>"};

#define FUZZ_NENV	(sizeof(fuzz_env) / sizeof(fuzz_env[0]))

/* fuzz_model_found - an address the strict reader sees: envelope? */

static void fuzz_model_found(const char *addr, void *ctx)
{
    size_t  i;
    char   *c;
    int     in_env = 0;

    (void) ctx;
    for (i = 0; i < FUZZ_NENV && !in_env; i++) {
	c = addr_internal(fuzz_env[i]);
	in_env = strcasecmp(c, addr) == 0;
	free(c);
    }
    if (!in_env) {
	fprintf(stderr, "fuzz_msg: strict reader sees <%s>\n", addr);
	fuzz_fail("Graph could deliver to an address that is not an "
		  "envelope recipient");
    }
}

/* fuzz_graph_view - rewrite for fuzz_env, stream, read it strictly */

static void fuzz_graph_view(const struct msg *m)
{
    struct strbuf hdr, enc, dec;
    struct msg_src *src;
    char    err[512];
    char    buf[65536];
    const char *why = NULL;
    size_t  got, i, hend;

    strbuf_init(&hdr, STRBUF_MAX_HEADERS + 64 * 1024);
    err[0] = 0;
    if (rcpt_rewrite(m->hdr.data ? m->hdr.data : "", m->hdr.len,
		     fuzz_env, FUZZ_NENV, &hdr, NULL, err,
		     sizeof(err)) < 0) {
	if (err[0] == 0)
	    fuzz_fail("rcpt_rewrite() failed without an error text");
	strbuf_free(&hdr);
	return;					/* refused with 5.6.0 */
    }
    src = msg_src_create(&hdr, m);
    strbuf_init(&enc, STRBUF_MAX_JSON * 4);
    while ((got = msg_src_read(buf, 1, sizeof(buf), src)) > 0) {
	if (got == CURL_READFUNC_ABORT)
	    fuzz_fail("msg_src_read() aborted");
	if (strbuf_append(&enc, buf, got) < 0)
	    fuzz_fail("the stream does not fit the check buffer");
    }
    strbuf_init(&dec, STRBUF_MAX_JSON * 4);
    fuzz_b64decode(enc.data ? enc.data : "", enc.len, &dec);
    /* Up to the body: CRLF line ends only, no NUL (issue 7.10). */
    hend = dec.len - (size_t) m->body_len;
    for (i = 0; i < hend; i++) {
	if (dec.data[i] == 0 || (dec.data[i] == '\r'
				 && (i + 1 == dec.len
				     || dec.data[i + 1] != '\n'))
	    || (dec.data[i] == '\n' && (i == 0 || dec.data[i - 1] != '\r')))
	    fuzz_fail("the header Graph gets has a bare CR, a bare LF or "
		      "a NUL");
    }
    if (fuzz_model_rcpts(dec.data ? dec.data : "", dec.len,
			 fuzz_model_found, NULL, &why) < 0) {
	fprintf(stderr, "fuzz_msg: strict reader: %s\n", why);
	fuzz_fail("a To/Cc/Bcc value that parsers may read differently");
    }
    strbuf_free(&dec);
    strbuf_free(&enc);
    msg_src_free(src);
    strbuf_free(&hdr);
}

/*
 * fuzz_check_fields - msg_hdr_next() cuts the stored header into
 * fields, back to back, each one named with its colon right after the
 * name (msg_hdr_clean() removed obsolete white space); msg_hdr_find()
 * finds each field by its name, the first of that name first.
 */
static void fuzz_check_fields(const struct strbuf *h)
{
    struct msg_field f;
    size_t  pos = 0, prev = 0, fpos;
    char    name[128];
    char   *v;

    while (msg_hdr_next(h->data, h->len, &pos, &f) == 0) {
	if (f.start != prev || f.end <= f.start || f.end != pos
	    || f.vend > f.end || f.vend + 2 != f.end)
	    fuzz_fail("msg_hdr_next(): fields are not back to back, CRLF");
	if (f.name_len == 0 || f.colon != f.start + f.name_len
	    || h->data[f.colon] != ':')
	    fuzz_fail("msg_hdr_next(): a stored field without its name");
	prev = f.end;
	if (f.name_len >= sizeof(name))
	    continue;
	memcpy(name, h->data + f.start, f.name_len);
	name[f.name_len] = 0;
	fpos = 0;
	v = msg_hdr_find(h->data, h->len, name, &fpos);
	if (v == NULL || fpos > f.end)
	    fuzz_fail("msg_hdr_find() misses a field msg_hdr_next() saw");
	free(v);
    }
    if (prev != h->len)
	fuzz_fail("msg_hdr_next() stops before the end of the header");
}

/* fuzz_check_msg - a finished message, then its stream */

static void fuzz_check_msg(const struct msg *m, off_t max_size, size_t chunk,
			           const struct strbuf *want_body)
{
    struct strbuf body;

    fuzz_check_hdr(&m->hdr);
    fuzz_check_fields(&m->hdr);
    if (m->size != (off_t) m->hdr.len + (m->hdr_only ? 0 : 2) + m->body_len)
	fuzz_fail("size is not hdr.len + 2 + body_len");
    if (m->hdr_only && m->body_len > 0)
	fuzz_fail("a header-only message with a body");
    if (max_size > 0 && m->size > max_size)
	fuzz_fail("a message over max_size was accepted");
    strbuf_init(&body, STRBUF_MAX_JSON * 4);
    fuzz_body(m, &body);
    fuzz_check_crlf(body.data ? body.data : "", body.len);
    if (want_body != NULL
	&& (want_body->len != body.len
	    || (body.len > 0
		&& memcmp(want_body->data, body.data, body.len) != 0)))
	fuzz_fail("the stored body is not the input with bare LF -> CRLF");
    fuzz_stream(m, chunk, &body);
    fuzz_graph_view(m);
    strbuf_free(&body);
}

/* fuzz_check_refusal - a refused message has a 4xx or 5xx result */

static void fuzz_check_refusal(const struct m365_result *res)
{
    if ((res->dsn[0] != '4' && res->dsn[0] != '5') || res->status == M365_OK)
	fuzz_fail("a refused message without a 4.x.x/5.x.x result");
}

/* fuzz_read - msg_read() from a file descriptor */

static void fuzz_read(const uint8_t *data, size_t size, off_t max_size,
		              size_t chunk)
{
    struct msg m;
    struct m365_result res;

    fuzz_input_set(fuzz_fd, fuzz_path, data, size);
    if (msg_read(&m, fuzz_fd, fuzz_dir, max_size, &res) == 0)
	fuzz_check_msg(&m, max_size, chunk, NULL);
    else
	fuzz_check_refusal(&res);
    msg_free(&m);
}

/* fuzz_canon_add - reference body: bare LF -> CRLF across chunks */

static void fuzz_canon_add(struct strbuf *ref, const uint8_t *p, size_t n,
			           int *last_cr)
{
    size_t  i;

    for (i = 0; i < n; i++) {
	if (p[i] == '\n' && !*last_cr)
	    (void) strbuf_putc(ref, '\r');
	(void) strbuf_putc(ref, p[i]);
	*last_cr = p[i] == '\r';
    }
}

/* fuzz_incremental - the milter's msg_add_header()/msg_add_body() path */

static void fuzz_incremental(const uint8_t *data, size_t size,
			             off_t max_size, size_t mem_limit,
			             size_t chunk)
{
    struct msg m;
    struct m365_result res;
    struct strbuf ref;
    const uint8_t *p = data, *end = data + size, *name, *value, *nul, *cut;
    int     failed = 0, last_cr = 0;

    msg_init(&m, fuzz_dir, mem_limit, max_size);
    result_init(&res);
    strbuf_init(&ref, STRBUF_MAX_JSON * 4);

    /* Header records "name NUL value NUL" until an empty name. */
    while (p < end && *p != 0) {
	name = p;
	if ((nul = memchr(p, 0, (size_t) (end - p))) == NULL)
	    break;
	value = nul + 1;
	if ((nul = memchr(value, 0, (size_t) (end - value))) == NULL)
	    break;
	if (msg_add_header(&m, (const char *) name, (const char *) value,
			   &res) < 0) {
	    fuzz_check_refusal(&res);
	    failed = 1;
	}
	p = nul + 1;
    }
    if (p < end && *p == 0)
	p++;

    /* Body chunks, cut after each 0xff. */
    while (p < end) {
	cut = memchr(p, 0xff, (size_t) (end - p));
	cut = cut ? cut + 1 : end;
	fuzz_canon_add(&ref, p, (size_t) (cut - p), &last_cr);
	if (msg_add_body(&m, p, (size_t) (cut - p), &res) < 0) {
	    fuzz_check_refusal(&res);
	    failed = 1;
	}
	p = cut;
    }
    if (msg_finish(&m, &res) == 0) {
	if (failed)
	    fuzz_fail("msg_finish() succeeded after a failed call");
	if (m.body_fd < 0 && (size_t) m.body_len > mem_limit)
	    fuzz_fail("a body over mem_limit stayed in memory");
	if (m.body_fd >= 0 && (m.body_mem.len > 0
			       || (size_t) m.body_len <= mem_limit))
	    fuzz_fail("a body within mem_limit was spooled, or kept twice");
	fuzz_check_msg(&m, max_size, chunk, &ref);
    } else {
	fuzz_check_refusal(&res);
    }
    msg_free(&m);
    strbuf_free(&ref);
}

/* LLVMFuzzerInitialize - scratch directory and file, quiet logging */

int     LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) fuzz_init("fuzz_msg", argc, argv);
    fuzz_dir = fuzz_scratch("input", fuzz_path, sizeof(fuzz_path));
    fuzz_fd = fuzz_input_open(fuzz_path);
    return (0);
}

/* LLVMFuzzerTestOneInput - mode byte, then a message or records */

int     LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned mode;
    off_t   max_size;
    size_t  mem_limit, chunk;

    if (size < 1)
	return (0);
    mode = data[0];
    max_size = fuzz_max_size[(mode >> 1) & 3];
    mem_limit = fuzz_mem_limit[(mode >> 3) & 3];
    chunk = fuzz_chunk[(mode >> 5) & 7];
    if ((mode & 1) == 0)
	fuzz_read(data + 1, size - 1, max_size, chunk);
    else
	fuzz_incremental(data + 1, size - 1, max_size, mem_limit, chunk);
    return (0);
}
