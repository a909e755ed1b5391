/*
 * NAME
 *	fuzz_mime - libFuzzer target for the MIME structure parser
 * SUMMARY
 *	mime_parse() over a message read by msg_read(), the decoded
 *	content of every part, RFC 2047 and RFC 2231 text
 * DESCRIPTION
 *	Byte 0 of the input picks the read size of the content consumer
 *	(bits 0-2: 1, 2, 3, 5, 7, 64, 1000 or 65536 bytes); the rest is
 *	the message as the MTA sends it.  It is read with msg_read() (the
 *	body spooled to a file) and parsed; the same body is then parsed
 *	again from memory (the milter's form).
 *
 *	Invariants (abort() on violation):
 *	- mime_parse() fails only over its limits (over_limit set);
 *	- parts[0] is the message; every other part comes after its
 *	  parent, which is a multipart, one level up; start <= body_start
 *	  <= body_end <= the body length; a part lies inside its parent's
 *	  content and after its previous sibling; the body at its start
 *	  reads "--" and the parent's boundary;
 *	- the type is lower case "type/subtype"; a file name is valid
 *	  UTF-8 without control characters, "/" or "\", at most
 *	  MIME_NAME_MAX bytes; a Content-ID is printable ASCII without
 *	  blanks or angle brackets;
 *	- the decoded content read in pieces of the chosen size is the
 *	  same after a rewind, its length is mime_decoded_size(), and
 *	  it is the same as one mime_dec_update() over the whole span;
 *	- the memory form gives the same parts as the spooled form;
 *	- the parse made while the message is read (mime_watch()) gives
 *	  the same parts, and the decoded size of every base64 leaf,
 *	  which is the length of its decoded content;
 *	- mime_words() of the Subject and mime_param() of Content-Type
 *	  name and Content-Disposition filename are valid UTF-8 without
 *	  NUL;
 *	- draftmsg_build() (the message as Graph draft JSON) either fails
 *	  with a 4.x.x/5.x.x result or gives a JSON object, and for each
 *	  attachment a name in valid UTF-8 and a fileAttachment object
 *	  once its content is added; a body part is never an attachment
 *	  too, unless the body went as a file.
 * DIAGNOSTICS
 *	A failed invariant prints one line to stderr, then abort().
 */
#include "config.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "draftmsg.h"
#include "fuzz.h"
#include "mime.h"
#include "msg.h"
#include "strbuf.h"
#include "util.h"

static char fuzz_path[4200];
static const char *fuzz_dir;
static int fuzz_fd = -1;

static const size_t fuzz_chunk[8] = {1, 2, 3, 5, 7, 64, 1000, 65536};

/* fuzz_fail - report and crash */

static void fuzz_fail(const char *what) __attribute__((noreturn));

static void fuzz_fail(const char *what)
{
    fuzz_violated(what);
    abort();
}

/* fuzz_utf8 - valid UTF-8, no NUL; controls refused when strict */

static int fuzz_utf8(const char *s, int strict)
{
    const unsigned char *p = (const unsigned char *) s;
    int     n, i;

    while (*p) {
	if (*p < 0x80) {
	    if (strict && (*p < 0x20 || *p == 0x7f))
		return (0);
	    p++;
	    continue;
	}
	if (*p >= 0xC2 && *p <= 0xDF)
	    n = 1;
	else if (*p >= 0xE0 && *p <= 0xEF)
	    n = 2;
	else if (*p >= 0xF0 && *p <= 0xF4)
	    n = 3;
	else
	    return (0);
	if ((*p == 0xE0 && p[1] < 0xA0) || (*p == 0xED && p[1] > 0x9F)
	    || (*p == 0xF0 && p[1] < 0x90) || (*p == 0xF4 && p[1] > 0x8F))
	    return (0);
	for (i = 1; i <= n; i++)
	    if (p[i] < 0x80 || p[i] > 0xBF)
		return (0);
	p += n + 1;
    }
    return (1);
}

/* fuzz_content - read a part in pieces; check size, rewind, one pass */

static void fuzz_content(const struct msg *m, const struct mime_part *p,
			         size_t chunk)
{
    struct mime_stream *s = mime_stream_open(m, p);
    struct strbuf a, b;
    struct mime_dec d;
    unsigned char *buf = xmalloc(chunk), *raw, *one;
    size_t  n = (size_t) (p->body_end - p->body_start), o;
    ssize_t got;
    off_t   size;
    char    err[256];
    int     pass;

    strbuf_init(&a, 64 * 1024 * 1024);
    strbuf_init(&b, 64 * 1024 * 1024);
    for (pass = 0; pass < 2; pass++) {
	while ((got = mime_stream_read(s, buf, chunk)) > 0)
	    strbuf_append(pass ? &b : &a, buf, (size_t) got);
	if (got < 0)
	    fuzz_fail("mime_stream_read() failed on a readable body");
	mime_stream_rewind(s);
    }
    if (a.len != b.len || (a.len && memcmp(a.data, b.data, a.len) != 0))
	fuzz_fail("a rewound stream gives other bytes");
    if (mime_decoded_size(m, p, &size, err, sizeof(err)) < 0
	|| size != (off_t) a.len)
	fuzz_fail("mime_decoded_size() is not the length of the stream");
    raw = xmalloc(n + 1);
    one = xmalloc(n + MIME_DEC_SLACK + 1);
    if (mime_body_read(m, raw, n, p->body_start) != (ssize_t) n)
	fuzz_fail("mime_body_read() of a part span failed");
    mime_dec_init(&d, p->cte);
    o = mime_dec_update(&d, raw, n, one);
    if (o > n + MIME_DEC_SLACK)
	fuzz_fail("mime_dec_update() wrote more than n + MIME_DEC_SLACK");
    o += mime_dec_final(&d, one + o);
    if (o != a.len || (o && memcmp(one, a.data, o) != 0))
	fuzz_fail("decoding in pieces differs from decoding at once");
    free(raw);
    free(one);
    free(buf);
    strbuf_free(&a);
    strbuf_free(&b);
    mime_stream_close(s);
}

/* fuzz_check_part - the structure invariants of part i */

static void fuzz_check_part(const struct msg *m, const struct mime *mime,
			            size_t i, int *prev)
{
    const struct mime_part *p = mime->parts + i, *par;
    char    head[256];
    size_t  bl;
    const char *c;

    if (p->start > p->body_start || p->body_start > p->body_end
	|| p->body_end > m->body_len)
	fuzz_fail("part offsets out of order or past the body");
    if (p->type[0] == 0 || strchr(p->type, '/') == NULL)
	fuzz_fail("a type without a slash");
    for (c = p->type; *c; c++)
	if (*c >= 'A' && *c <= 'Z')
	    fuzz_fail("a type in upper case");
    if (p->multipart != (p->boundary != NULL)
	|| (p->multipart && strncmp(p->type, "multipart/", 10) != 0))
	fuzz_fail("multipart flag, boundary and type disagree");
    if (p->name && (!fuzz_utf8(p->name, 1) || strpbrk(p->name, "/\\")
		    || strlen(p->name) > MIME_NAME_MAX || *p->name == 0))
	fuzz_fail("a file name that is not clean UTF-8");
    if (p->content_id) {
	if (*p->content_id == 0)
	    fuzz_fail("an empty Content-ID");
	for (c = p->content_id; *c; c++)
	    if (*c <= ' ' || *c >= 127 || *c == '<' || *c == '>')
		fuzz_fail("a Content-ID that is not clean");
    }
    if (i == 0) {
	if (p->parent != -1 || p->depth != 0 || p->body_start != 0)
	    fuzz_fail("parts[0] is not the message");
	return;
    }
    if (p->parent < 0 || (size_t) p->parent >= i)
	fuzz_fail("a parent after its child");
    par = mime->parts + p->parent;
    if (!par->multipart || p->depth != par->depth + 1)
	fuzz_fail("a parent that is no multipart, or a wrong depth");
    if (p->start < par->body_start || p->body_end > par->body_end)
	fuzz_fail("a part outside its parent's content");
    if (prev[p->parent] >= 0
	&& p->start < mime->parts[prev[p->parent]].body_end)
	fuzz_fail("a part overlaps its previous sibling");
    prev[p->parent] = (int) i;
    bl = strlen(par->boundary);
    if (bl + 2 > sizeof(head)
	|| mime_body_read(m, head, bl + 2, p->start) != (ssize_t) (bl + 2)
	|| head[0] != '-' || head[1] != '-'
	|| memcmp(head + 2, par->boundary, bl) != 0)
	fuzz_fail("a part that does not start with its delimiter");
}

/* fuzz_same - the two parses agree part by part */

static void fuzz_same(const struct mime *a, const struct mime *b)
{
    size_t  i;

#define FUZZ_STR_EQ(x, y) ((x) == NULL ? (y) == NULL : \
	((y) != NULL && strcmp((x), (y)) == 0))
    if (a->nparts != b->nparts || a->over_limit != b->over_limit)
	fuzz_fail("memory and spool parse to different part counts");
    for (i = 0; i < a->nparts; i++) {
	const struct mime_part *p = a->parts + i, *q = b->parts + i;

	if (p->parent != q->parent || p->start != q->start
	    || p->body_start != q->body_start || p->body_end != q->body_end
	    || strcmp(p->type, q->type) != 0 || p->cte != q->cte
	    || p->disp != q->disp || !FUZZ_STR_EQ(p->name, q->name)
	    || !FUZZ_STR_EQ(p->content_id, q->content_id)
	    || !FUZZ_STR_EQ(p->boundary, q->boundary))
	    fuzz_fail("memory and spool parse to different parts");
    }
#undef FUZZ_STR_EQ
}

/* fuzz_header_text - RFC 2047 / RFC 2231 text of the top header */

static void fuzz_header_text(const struct msg *m)
{
    const char *h = m->hdr.data ? m->hdr.data : "";
    size_t  pos;
    char   *v, *t;

    pos = 0;
    if ((v = msg_hdr_find(h, m->hdr.len, "Subject", &pos)) != NULL) {
	t = mime_words(v, strlen(v));
	if (t == NULL || !fuzz_utf8(t, 0))
	    fuzz_fail("mime_words() gave no valid UTF-8");
	free(t);
	free(v);
    }
    pos = 0;
    if ((v = msg_hdr_find(h, m->hdr.len, "Content-Type", &pos)) != NULL) {
	if ((t = mime_param(v, "name")) != NULL && !fuzz_utf8(t, 0))
	    fuzz_fail("mime_param() gave no valid UTF-8");
	free(t);
	free(v);
    }
    pos = 0;
    if ((v = msg_hdr_find(h, m->hdr.len, "Content-Disposition", &pos))) {
	if ((t = mime_param(v, "filename")) != NULL && !fuzz_utf8(t, 0))
	    fuzz_fail("mime_param() gave no valid UTF-8");
	free(t);
	free(v);
    }
}

/* fuzz_draft - the draft JSON of the message: well-formed or refused */

static void fuzz_draft(const struct msg *m)
{
    struct draftmsg j;
    struct m365_result res;
    struct strbuf sb;
    cJSON  *root;
    size_t  i;

    result_init(&res);
    if (draftmsg_build(&j, m, &m->hdr, "FUZZ", &res) < 0) {
	if ((res.dsn[0] != '4' && res.dsn[0] != '5') || res.status == M365_OK)
	    fuzz_fail("draftmsg_build() failed without a 4.x.x/5.x.x result");
	draftmsg_free(&j);
	return;
    }
    if ((root = cJSON_Parse(j.meta)) == NULL || !cJSON_IsObject(root))
	fuzz_fail("the draft JSON is not a JSON object");
    cJSON_Delete(root);
    for (i = 0; i < j.natt; i++) {
	if (j.att[i].name == NULL || !fuzz_utf8(j.att[i].name, 0)
	    || *j.att[i].name == 0)
	    fuzz_fail("an attachment without a valid UTF-8 name");
	if (j.att[i].part == j.mime.parts + j.body && !j.body_attached)
	    fuzz_fail("the body part is also an attachment");
	strbuf_init(&sb, STRBUF_MAX_JSON);
	strbuf_printf(&sb, "%s,\"contentBytes\":\"\"}", j.att[i].meta);
	root = cJSON_Parse(strbuf_str(&sb));
	if (root == NULL || !cJSON_IsObject(root))
	    fuzz_fail("an attachment's JSON is not an object");
	cJSON_Delete(root);
	strbuf_free(&sb);
    }
    draftmsg_free(&j);
}

/* fuzz_check - parse m (spooled), check, compare with the memory form */

static void fuzz_check(const struct msg *m, size_t chunk)
{
    struct mime mime, mem;
    struct msg copy;
    char    err[256];
    int    *prev;
    size_t  i;
    int     rc;

    rc = mime_parse(&mime, m, err, sizeof(err));
    if (rc < 0 && !mime.over_limit)
	fuzz_fail("mime_parse() failed without a limit");
    if (mime.nparts < 1)
	fuzz_fail("no parts[0]");
    prev = xmalloc(mime.nparts * sizeof(*prev));
    for (i = 0; i < mime.nparts; i++)
	prev[i] = -1;
    for (i = 0; i < mime.nparts; i++) {
	fuzz_check_part(m, &mime, i, prev);
	if (!mime.parts[i].multipart)
	    fuzz_content(m, mime.parts + i, chunk);
    }
    free(prev);
    fuzz_header_text(m);
    fuzz_draft(m);

    /* The same body in memory, as the milter keeps small ones. */
    copy = *m;
    copy.body_fd = -1;
    strbuf_init(&copy.body_mem, (size_t) m->body_len + 1);
    if (m->body_len > 0) {
	char   *b = xmalloc((size_t) m->body_len);

	if (mime_body_read(m, b, (size_t) m->body_len, 0) != m->body_len)
	    fuzz_fail("cannot read the spooled body");
	strbuf_append(&copy.body_mem, b, (size_t) m->body_len);
	free(b);
    }
    (void) mime_parse(&mem, &copy, err, sizeof(err));
    fuzz_same(&mime, &mem);
    mime_free(&mem);
    strbuf_free(&copy.body_mem);
    mime_free(&mime);
}

/*
 * fuzz_stored_decoded - d was read with a small threshold for storing
 * base64 parts decoded (mime_store_decoded_after()), m without: the
 * same parts, and every part streams the same decoded bytes, except
 * that a part that is not base64 may refuse (-1) over a hole, after
 * the same bytes
 */
static void fuzz_stored_decoded(const struct msg *d, const struct msg *m)
{
    struct mime a, b;
    struct mime_stream *sa, *sb;
    char    err[256], x[777], y[777];
    ssize_t ga, gb;
    size_t  i;

    (void) mime_parse(&a, d, err, sizeof(err));
    (void) mime_parse(&b, m, err, sizeof(err));
    fuzz_same(&b, &a);
    for (i = 0; i < a.nparts; i++) {
	if (a.parts[i].stored_decoded && (a.parts[i].cte != MIME_CTE_BASE64
					  || a.parts[i].multipart))
	    fuzz_fail("a part that is not a base64 leaf was stored decoded");
	sa = mime_stream_open(d, a.parts + i);
	sb = mime_stream_open(m, b.parts + i);
	do {
	    ga = mime_stream_read(sa, x, sizeof(x));
	    gb = mime_stream_read(sb, y, sizeof(y));
	    if (ga < 0 && a.parts[i].cte != MIME_CTE_BASE64)
		break;				/* refused over a hole */
	    if (ga != gb || (ga > 0 && memcmp(x, y, (size_t) ga) != 0))
		fuzz_fail("a part stored decoded reads differently");
	} while (ga > 0);
	mime_stream_close(sa);
	mime_stream_close(sb);
    }
    mime_free(&a);
    mime_free(&b);
}

/*
 * fuzz_online - the parse made while the body is stored (mime_watch())
 * is the parse made afterwards (ref), and knows the decoded size of
 * every base64 leaf: the length of its decoded content; read with a
 * small threshold for storing base64 decoded, it reads the same
 */
static void fuzz_online(const struct mime *ref, const uint8_t *data,
			        size_t size, size_t chunk)
{
    struct msg m, c, d;
    char   *body;
    off_t   was;
    off_t   o;
    size_t  k;
    struct msg_stream *ms;
    struct m365_result res;
    struct mime on;
    char    err[256], buf[4096];
    struct mime_stream *s;
    ssize_t got;
    off_t   n;
    size_t  i;

    fuzz_input_set(fuzz_fd, fuzz_path, data, size);
    ms = msg_stream_create(&m, fuzz_dir, 0, 0);
    mime_watch(&m);
    if (msg_stream_read(ms, fuzz_fd, &res) < 0)
	fuzz_fail("the second read of the input failed");
    fuzz_input_set(fuzz_fd, fuzz_path, data, size);
    was = mime_store_decoded_after(1 + (off_t) (chunk % 700));
    ms = msg_stream_create(&d, fuzz_dir, 0, 0);
    mime_watch(&d);
    if (msg_stream_read(ms, fuzz_fd, &res) < 0)
	fuzz_fail("the third read of the input failed");
    (void) mime_store_decoded_after(was);
    fuzz_stored_decoded(&d, &m);
    msg_free(&d);
    (void) mime_parse(&on, &m, err, sizeof(err));
    fuzz_same(ref, &on);
    /* The tap fed in pieces of the chosen size: the same again. */
    mime_free(&on);
    body = xmalloc((size_t) m.body_len + 1);
    if (mime_body_read(&m, body, (size_t) m.body_len, 0) != m.body_len)
	fuzz_fail("cannot read the spooled body");
    c = m;
    mime_watch(&c);
    for (o = 0; o < m.body_len; o += (off_t) k) {
	k = (off_t) chunk < m.body_len - o ? chunk : (size_t) (m.body_len - o);
	c.tap(c.tap_ctx, body + o, k, o, NULL);
    }
    (void) mime_parse(&on, &c, err, sizeof(err));
    c.tap_free(c.tap_ctx);
    free(body);
    fuzz_same(ref, &on);
    for (i = 0; i < on.nparts; i++) {
	const struct mime_part *p = on.parts + i;

	if (p->multipart || p->cte != MIME_CTE_BASE64)
	    continue;
	if (!p->size_known && !on.over_limit && m.body_len > 0)
	    fuzz_fail("the online parse did not count a base64 part");
	if (!p->size_known)
	    continue;
	s = mime_stream_open(&m, p);
	for (n = 0; (got = mime_stream_read(s, buf, sizeof(buf))) > 0;)
	    n += got;
	mime_stream_close(s);
	if (got < 0 || n != p->decoded_size)
	    fuzz_fail("the counted size is not the decoded length");
    }
    mime_free(&on);
    msg_free(&m);
}

/* LLVMFuzzerInitialize - scratch directory and file, quiet logging */

int     LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) fuzz_init("fuzz_mime", argc, argv);
    fuzz_dir = fuzz_scratch("input", fuzz_path, sizeof(fuzz_path));
    fuzz_fd = fuzz_input_open(fuzz_path);
    return (0);
}

/* LLVMFuzzerTestOneInput - mode byte, then a message */

int     LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct msg m;
    struct m365_result res;

    if (size < 1)
	return (0);
    fuzz_input_set(fuzz_fd, fuzz_path, data + 1, size - 1);
    if (msg_read(&m, fuzz_fd, fuzz_dir, 0, &res) == 0) {
	struct mime ref;
	char    err[256];

	fuzz_check(&m, fuzz_chunk[data[0] & 7]);
	(void) mime_parse(&ref, &m, err, sizeof(err));
	fuzz_online(&ref, data + 1, size - 1, fuzz_chunk[data[0] & 7]);
	mime_free(&ref);
    }
    msg_free(&m);
    return (0);
}
