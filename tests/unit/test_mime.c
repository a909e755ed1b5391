/* test_mime - MIME structure, transfer decoding, RFC 2047 / RFC 2231 names */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "mime.h"
#include "msg.h"
#include "strbuf.h"
#include "util.h"
#include "t.h"
#include "t_file.h"

static char tmpdir[256];

/* same_parts - two parses of one message agree part by part */

static void same_parts(const struct mime *a, const struct mime *b)
{
    size_t  i;

    T_EQ_INT(a->nparts, b->nparts);
    T_EQ_INT(a->over_limit, b->over_limit);
    for (i = 0; i < a->nparts && i < b->nparts; i++) {
	const struct mime_part *p = a->parts + i, *q = b->parts + i;

	T_EQ_INT(p->parent, q->parent);
	T_EQ_INT(p->start, q->start);
	T_EQ_INT(p->body_start, q->body_start);
	T_EQ_INT(p->body_end, q->body_end);
	T_EQ_STR(p->type, q->type);
	T_EQ_INT(p->cte, q->cte);
	T_EQ_STR(p->boundary ? p->boundary : "-", q->boundary ? q->boundary : "-");
	T_EQ_STR(p->name ? p->name : "-", q->name ? q->name : "-");
	T_EQ_INT(p->closed, q->closed);
    }
}

/* decoded_len - the length of the decoded content of part p */

static off_t decoded_len(const struct msg *m, const struct mime_part *p)
{
    struct mime_stream *s = mime_stream_open(m, p);
    char    buf[4096];
    ssize_t got;
    off_t   n = 0;

    while ((got = mime_stream_read(s, buf, sizeof(buf))) > 0)
	n += got;
    T_EQ_INT(got, 0);
    mime_stream_close(s);
    return (n);
}

/*
 * check_online - the parse made while the body is stored (mime_watch():
 * the body fed to the tap in pieces of every size, 1 byte up) is the
 * parse made afterwards from the stored body, and it knows the decoded
 * size of every base64 leaf, which is the length of its content
 */
static void check_online(const struct msg *m)
{
    static const size_t chunks[] = {1, 2, 3, 5, 7, 13, 64, 1000, 65536};
    struct mime ref, on;
    struct msg c;
    char    err[256], err2[256];
    char   *body = xmalloc((size_t) m->body_len + 1);
    size_t  i, k, j;
    off_t   o;
    int     rc, rc2;

    T_EQ_INT(mime_body_read(m, body, (size_t) m->body_len, 0),
	     (long long) m->body_len);
    rc = mime_parse(&ref, m, err, sizeof(err));
    for (i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
	c = *m;					/* shares hdr and body */
	mime_watch(&c);
	for (o = 0; o < m->body_len; o += (off_t) k) {
	    k = chunks[i] < (size_t) (m->body_len - o) ? chunks[i] :
		(size_t) (m->body_len - o);
	    c.tap(c.tap_ctx, body + o, k, o, NULL);
	}
	rc2 = mime_parse(&on, &c, err2, sizeof(err2));
	T_EQ_INT(rc2, rc);
	same_parts(&ref, &on);
	for (j = 0; j < on.nparts; j++) {
	    const struct mime_part *p = on.parts + j;

	    if (p->multipart || p->cte != MIME_CTE_BASE64)
		continue;
	    if (m->body_len > 0 && !on.over_limit)
		T_EQ_INT(p->size_known, 1);
	    if (p->size_known)
		T_EQ_INT(p->decoded_size, (long long) decoded_len(m, p));
	}
	mime_free(&on);
	c.tap_free(c.tap_ctx);
    }
    for (j = 0; j < ref.nparts; j++)
	if (ref.parts[j].size_known)
	    T_EQ_INT(ref.parts[j].decoded_size,
		     (long long) decoded_len(m, ref.parts + j));
    mime_free(&ref);
    free(body);
}

/*
 * make_msg - message text (LF or CRLF) read as the relay reads it: from a
 * file through msg_read() (spooled: spool 1), or built as the milter
 * builds it, the body in memory (spool 0)
 */
static void make_msg(struct msg *m, const char *text, int spool)
{
    struct m365_result res;
    char    path[300];
    const char *body, *line, *end, *colon;
    char   *name, *value;
    int     fd;

    if (spool) {
	snprintf(path, sizeof(path), "%s/in.XXXXXX", tmpdir);
	fd = mkstemp(path);
	unlink(path);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t) strlen(text)
	    || lseek(fd, 0, SEEK_SET) != 0) {
	    printf("not ok - cannot write the test message\n");
	    exit(1);
	}
	T_EQ_INT(msg_read(m, fd, tmpdir, 0, &res), 0);
	close(fd);
	T_OK(m->body_len == 0 || m->body_fd >= 0);
	check_online(m);
	return;
    }
    msg_init(m, tmpdir, 64 * 1024 * 1024, 0);
    body = strstr(text, "\n\n");
    body = body ? body + 2 : text + strlen(text);
    for (line = text; line < body - 1; line = end + 1) {
	end = strchr(line, '\n');
	colon = memchr(line, ':', (size_t) (end - line));
	name = xstrndup(line, (size_t) (colon - line));
	value = xstrndup(colon + 2, (size_t) (end - colon - 2));
	T_EQ_INT(msg_add_header(m, name, value, &res), 0);
	free(name);
	free(value);
    }
    T_EQ_INT(msg_add_body(m, body, strlen(body), &res), 0);
    T_EQ_INT(msg_finish(m, &res), 0);
    T_OK(m->body_fd < 0);
    check_online(m);
}

/* read_all - the decoded content of p read chunk bytes at a time */

static char *read_all(const struct msg *m, const struct mime_part *p,
		              size_t chunk, size_t *len)
{
    struct mime_stream *s = mime_stream_open(m, p);
    struct strbuf sb;
    char   *buf = xmalloc(chunk);
    ssize_t got;

    strbuf_init(&sb, 64 * 1024 * 1024);
    while ((got = mime_stream_read(s, buf, chunk)) > 0)
	strbuf_append(&sb, buf, (size_t) got);
    T_EQ_INT(got, 0);
    mime_stream_close(s);
    free(buf);
    *len = sb.len;
    if (sb.data == NULL)
	strbuf_puts(&sb, "");
    return (strbuf_take(&sb));
}

/* content - the decoded content of a part, NUL-terminated; free() it */

static char *content(const struct msg *m, const struct mime_part *p,
		             size_t *len)
{
    char   *c = read_all(m, p, 7, len);		/* odd reads on purpose */
    off_t   size;
    char    err[256];

    T_EQ_INT(mime_decoded_size(m, p, &size, err, sizeof(err)), 0);
    T_EQ_INT(size, (long long) *len);
    return (c);
}

/* raw - the raw content span of a part as a string; free() it */

static char *raw(const struct msg *m, const struct mime_part *p)
{
    size_t  n = (size_t) (p->body_end - p->body_start);
    char   *s = xmalloc(n + 1);

    T_EQ_INT(mime_body_read(m, s, n, p->body_start), (long long) n);
    s[n] = 0;
    return (s);
}

static const char nested[] =
"From: a@example.com\n"
"To: b@example.com\n"
"Subject: nested\n"
"MIME-Version: 1.0\n"
"Content-Type: multipart/mixed; boundary=\"outer\"\n"
"\n"
"preamble\n"
"--outer\n"
"Content-Type: multipart/alternative; boundary=alt\n"
"\n"
"--alt\n"
"Content-Type: text/plain; charset=ISO-8859-1\n"
"Content-Transfer-Encoding: quoted-printable\n"
"\n"
"Gr=FC=DFe,  \n"
"soft =\n"
"break =3D done\n"
"--alt\n"
"Content-Type: multipart/related; boundary=\"rel\"; type=\"text/html\"\n"
"\n"
"--rel\n"
"Content-Type: text/html; charset=utf-8\n"
"\n"
"<img src=\"cid:logo@x\">\n"
"--rel\n"
"Content-Type: image/png; name=\"logo.png\"\n"
"Content-ID: <logo@x>\n"
"Content-Disposition: inline\n"
"Content-Transfer-Encoding: base64\n"
"\n"
"iVBORw0KGgo=\n"
"--rel--\n"
"--alt--\n"
"\n"
"--outer\n"
"Content-Type: application/pdf\n"
"Content-Disposition: attachment;\n"
" filename*0*=utf-8''%E2%82%AC%20Rech;\n"
" filename*1=\"nung 1.pdf\"\n"
"Content-Transfer-Encoding: base64\n"
"\n"
"JVBERi0xLjQK\n"
"JSVFT0YK\n"
"--outer\n"
"Content-Type: message/rfc822\n"
"\n"
"From: c@example.com\n"
"Subject: inner\n"
"Content-Type: multipart/mixed; boundary=inner\n"
"\n"
"--inner\n"
"\n"
"inner text\n"
"--inner--\n"
"--outer--\n"
"epilogue\n";

/* test_nested - the parts of a typical message, spooled and in memory */

static void test_nested(void)
{
    struct msg m;
    struct mime mime;
    const struct mime_part *p;
    char    err[256];
    char   *c;
    size_t  len;
    int     spool;

    for (spool = 0; spool < 2; spool++) {
	make_msg(&m, nested, spool);
	T_EQ_INT(mime_parse(&mime, &m, err, sizeof(err)), 0);
	T_EQ_INT(mime.nparts, 8);
	if (mime.nparts != 8) {
	    msg_free(&m);
	    mime_free(&mime);
	    continue;
	}
	p = mime.parts;
	T_EQ_STR(p[0].type, "multipart/mixed");
	T_EQ_STR(p[0].boundary, "outer");
	T_EQ_INT(p[0].closed, 1);
	T_EQ_STR(p[1].type, "multipart/alternative");
	T_EQ_INT(p[1].parent, 0);
	T_EQ_STR(p[2].type, "text/plain");
	T_EQ_STR(p[2].charset, "iso-8859-1");
	T_EQ_INT(p[2].cte, MIME_CTE_QP);
	T_EQ_INT(p[2].parent, 1);
	T_EQ_INT(p[2].depth, 2);
	c = content(&m, &p[2], &len);
	T_EQ_STR(c, "Gr\xfc\xdf" "e,\r\nsoft break = done");
	free(c);
	T_EQ_STR(p[3].type, "multipart/related");
	T_EQ_STR(p[4].type, "text/html");
	c = raw(&m, &p[4]);
	T_EQ_STR(c, "<img src=\"cid:logo@x\">");
	free(c);
	T_EQ_STR(p[5].type, "image/png");
	T_EQ_STR(p[5].name, "logo.png");
	T_EQ_STR(p[5].content_id, "logo@x");
	T_EQ_INT(p[5].disp, MIME_DISP_INLINE);
	c = content(&m, &p[5], &len);
	T_EQ_INT(len, 8);
	T_OK(memcmp(c, "\x89PNG\r\n\x1a\n", 8) == 0);
	free(c);
	T_EQ_STR(p[6].type, "application/pdf");
	T_EQ_STR(p[6].name, "\xE2\x82\xAC Rechnung 1.pdf");
	T_EQ_INT(p[6].disp, MIME_DISP_ATTACHMENT);
	c = content(&m, &p[6], &len);
	T_EQ_STR(c, "%PDF-1.4\n%%EOF\n");
	free(c);
	/* The alternative ends with its close delimiter; mixed goes on. */
	T_EQ_INT(p[1].closed, 1);
	T_OK(p[1].body_end < p[6].start);
	/* A forwarded message is one leaf, its inner boundary unseen. */
	T_EQ_STR(p[7].type, "message/rfc822");
	T_EQ_INT(p[7].multipart, 0);
	c = raw(&m, &p[7]);
	T_OK(strncmp(c, "From: c@example.com\r\n", 21) == 0);
	T_OK(strlen(c) > 5 && strcmp(c + strlen(c) - 9, "--inner--") == 0);
	free(c);
	T_EQ_INT(p[7].parent, 0);
	/* The epilogue is the mixed part's, after its close delimiter. */
	c = raw(&m, &p[0]);
	T_OK(strlen(c) > 10 && strcmp(c + strlen(c) - 10, "epilogue\r\n") == 0);
	free(c);
	mime_free(&mime);
	msg_free(&m);
    }
}

/* test_outer_ends_inner - an outer delimiter ends an unclosed inner part */

static void test_outer_ends_inner(void)
{
    static const char text[] =
    "Content-Type: multipart/mixed; boundary=a\n"
    "\n"
    "--a\n"
    "Content-Type: multipart/alternative; boundary=\"b\"\n"
    "\n"
    "--b\n"
    "\n"
    "one\n"
    "--a\n"
    "Content-Type: text/plain\n"
    "\n"
    "two\n"
    "--a--\n";
    struct msg m;
    struct mime mime;
    char    err[256];
    char   *c;

    make_msg(&m, text, 1);
    T_EQ_INT(mime_parse(&mime, &m, err, sizeof(err)), 0);
    T_EQ_INT(mime.nparts, 4);
    if (mime.nparts == 4) {
	T_EQ_INT(mime.parts[1].closed, 0);
	T_EQ_INT(mime.parts[2].parent, 1);
	c = raw(&m, &mime.parts[2]);
	T_EQ_STR(c, "one");
	free(c);
	T_EQ_INT(mime.parts[3].parent, 0);
	c = raw(&m, &mime.parts[3]);
	T_EQ_STR(c, "two");
	free(c);
    }
    mime_free(&mime);
    msg_free(&m);
}

/* test_unclosed - no close delimiter, no final line end: ends at the end */

static void test_unclosed(void)
{
    static const char text[] =
    "Content-Type: multipart/mixed; boundary=\"x y\"\n"
    "\n"
    "--x y  \n"
    "Content-Type: application/octet-stream\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "AAEC\n"
    "AwQ";
    struct msg m;
    struct mime mime;
    char    err[256];
    char   *c;
    size_t  len;

    make_msg(&m, text, 0);
    T_EQ_INT(mime_parse(&mime, &m, err, sizeof(err)), 0);
    T_EQ_INT(mime.nparts, 2);
    if (mime.nparts == 2) {
	c = content(&m, &mime.parts[1], &len);
	T_EQ_INT(len, 5);
	T_OK(memcmp(c, "\0\1\2\3\4", 5) == 0);
	free(c);
	T_EQ_INT(mime.parts[1].body_end, m.body_len);
	T_EQ_INT(mime.parts[0].closed, 0);
    }
    mime_free(&mime);
    msg_free(&m);
}

/*
 * test_close_at_end - a close delimiter that is the last line, without
 * a line end, still closes (the scanner holds a short line start until
 * more comes; here nothing more comes)
 */
static void test_close_at_end(void)
{
    static const char text[] =
    "Content-Type: multipart/mixed; boundary=b\n"
    "\n"
    "--b\n"
    "\n"
    "text\n"
    "--b--";
    struct msg m;
    struct mime mime;
    char    err[256];
    int     spool;

    for (spool = 0; spool < 2; spool++) {
	make_msg(&m, text, spool);
	T_EQ_INT(mime_parse(&mime, &m, err, sizeof(err)), 0);
	T_EQ_INT(mime.nparts, 2);
	T_EQ_INT(mime.parts[0].closed, 1);
	if (mime.nparts == 2)
	    T_EQ_INT(mime.parts[1].body_end, 11);	/* before CRLF "--b--" */
	mime_free(&mime);
	msg_free(&m);
    }
}

/* test_single - a message that is one part; no boundary: one leaf */

static void test_single(void)
{
    static const char text[] =
    "Content-Type: application/pdf; name==?iso-8859-1?q?Pr=FCfung?=.pdf\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "JVBERi0xLjQK\n";
    static const char nobnd[] =
    "Content-Type: multipart/mixed\n"
    "\n"
    "--x\n"
    "\n"
    "text\n";
    struct msg m;
    struct mime mime;
    char    err[256];
    char   *c;
    size_t  len;

    make_msg(&m, text, 1);
    T_EQ_INT(mime_parse(&mime, &m, err, sizeof(err)), 0);
    T_EQ_INT(mime.nparts, 1);
    T_EQ_STR(mime.parts[0].type, "application/pdf");
    T_EQ_STR(mime.parts[0].name, "Pr\xC3\xBC" "fung.pdf");
    c = content(&m, &mime.parts[0], &len);
    T_EQ_STR(c, "%PDF-1.4\n");
    free(c);
    mime_free(&mime);
    msg_free(&m);

    make_msg(&m, nobnd, 1);
    T_EQ_INT(mime_parse(&mime, &m, err, sizeof(err)), 0);
    T_EQ_INT(mime.nparts, 1);
    T_EQ_INT(mime.parts[0].multipart, 0);
    mime_free(&mime);
    msg_free(&m);
}

/* test_digest - multipart/digest parts default to message/rfc822 */

static void test_digest(void)
{
    static const char text[] =
    "Content-Type: multipart/digest; boundary=d\n"
    "\n"
    "--d\n"
    "\n"
    "Subject: one\n"
    "\n"
    "body\n"
    "--d--\n";
    struct msg m;
    struct mime mime;
    char    err[256];

    make_msg(&m, text, 1);
    T_EQ_INT(mime_parse(&mime, &m, err, sizeof(err)), 0);
    T_EQ_INT(mime.nparts, 2);
    if (mime.nparts == 2)
	T_EQ_STR(mime.parts[1].type, "message/rfc822");
    mime_free(&mime);
    msg_free(&m);
}

/* test_limits - too many parts, too deep: -1, over_limit, no crash */

static void test_limits(void)
{
    struct strbuf sb;
    struct msg m;
    struct mime mime;
    char    err[256];
    int     i;

    strbuf_init(&sb, 16 * 1024 * 1024);
    strbuf_puts(&sb, "Content-Type: multipart/mixed; boundary=z\n\n");
    for (i = 0; i < MIME_MAX_PARTS + 5; i++)
	strbuf_puts(&sb, "--z\n\nx\n");
    strbuf_puts(&sb, "--z--\n");
    make_msg(&m, sb.data, 1);
    T_EQ_INT(mime_parse(&mime, &m, err, sizeof(err)), -1);
    T_EQ_INT(mime.over_limit, 1);
    T_EQ_INT(mime.nparts, MIME_MAX_PARTS);
    T_CONTAINS(err, "more than");
    mime_free(&mime);
    msg_free(&m);

    strbuf_reset(&sb);
    strbuf_puts(&sb, "Content-Type: multipart/mixed; boundary=z0\n\n");
    for (i = 1; i < MIME_MAX_DEPTH + 3; i++)
	strbuf_printf(&sb, "--z%d\nContent-Type: multipart/mixed; "
		      "boundary=z%d\n\n", i - 1, i);
    make_msg(&m, sb.data, 0);
    T_EQ_INT(mime_parse(&mime, &m, err, sizeof(err)), -1);
    T_EQ_INT(mime.over_limit, 1);
    mime_free(&mime);
    msg_free(&m);
    strbuf_free(&sb);
}

/* decode_all - decode in one call, and byte by byte: both must agree */

static char *decode_all(enum mime_cte cte, const char *in, size_t *len)
{
    struct mime_dec d;
    size_t  n = strlen(in), o = 0, o1 = 0, i;
    unsigned char *out = xmalloc(n + MIME_DEC_SLACK + 1);
    unsigned char *out1 = xmalloc(n + MIME_DEC_SLACK + 1);

    mime_dec_init(&d, cte);
    o = mime_dec_update(&d, (const unsigned char *) in, n, out);
    o += mime_dec_final(&d, out + o);
    for (i = 0; i < n; i++)
	o1 += mime_dec_update(&d, (const unsigned char *) in + i, 1, out1 + o1);
    o1 += mime_dec_final(&d, out1 + o1);
    T_EQ_INT(o1, o);
    T_OK(memcmp(out, out1, o) == 0);
    free(out1);
    out[o] = 0;
    *len = o;
    return ((char *) out);
}

/* test_decoders - base64 and quoted-printable edge cases */

static void test_decoders(void)
{
    static const struct {
	enum mime_cte cte;
	const char *in;
	const char *out;
    } cases[] = {
	{MIME_CTE_BASE64, "aGVs\r\nbG8=\r\n", "hello"},
	{MIME_CTE_BASE64, "aGVsbG8", "hello"},		/* no padding */
	{MIME_CTE_BASE64, "a G*V!s\tbG8h", "hello!"},	/* junk skipped */
	{MIME_CTE_BASE64, "aGk=aGk=", "hihi"},		/* concatenated */
	{MIME_CTE_QP, "a=3Db=3d\r\n", "a=b=\r\n"},
	{MIME_CTE_QP, "soft=\r\nbreak", "softbreak"},
	{MIME_CTE_QP, "pad=  \r\nded", "padded"},
	{MIME_CTE_QP, "trail  \t\r\nx", "trail\r\nx"},
	{MIME_CTE_QP, "in  side", "in  side"},
	{MIME_CTE_QP, "bad=G1 =4", "bad=G1 =4"},
	{MIME_CTE_QP, "end=", "end="},
	{MIME_CTE_QP, "lf only  \nx", "lf only\nx"},
	{MIME_CTE_IDENTITY, "as\r\nis", "as\r\nis"},
    };
    size_t  i, len;
    char   *out;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
	out = decode_all(cases[i].cte, cases[i].in, &len);
	T_EQ_INT(len, strlen(cases[i].out));
	T_EQ_STR(out, cases[i].out);
	free(out);
    }
}

/* test_words - RFC 2047 encoded words */

static void test_words(void)
{
    static const struct {
	const char *in;
	const char *out;
    } cases[] = {
	{"=?ISO-8859-1?Q?Andr=E9?= Pirard", "Andr\xC3\xA9 Pirard"},
	{"=?utf-8?B?w6Q=?= =?utf-8?B?w7Y=?=", "\xC3\xA4\xC3\xB6"},
	/* A character split between two words (common, if not allowed). */
	{"=?utf-8?B?4oI=?=\r\n =?utf-8?B?rA==?=", "\xE2\x82\xAC"},
	{"=?utf-8?q?a_b?= c", "a b c"},
	{"=?us-ascii*en?q?lang?=", "lang"},
	{"plain =?bogus", "plain =?bogus"},
	{"=?x-unknown?q?=FF?=", "\xEF\xBF\xBD"},
	{"caf\xC3\xA9", "caf\xC3\xA9"},
	{"bad \xFF byte", "bad \xEF\xBF\xBD byte"},
    };
    size_t  i;
    char   *out;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
	out = mime_words(cases[i].in, strlen(cases[i].in));
	T_EQ_STR(out, cases[i].out);
	free(out);
    }
    out = mime_to_utf8("windows-1252", "\x80 \xE9", 3);
    T_EQ_STR(out, "\xE2\x82\xAC \xC3\xA9");
    free(out);
}

/*
 * test_b64_size - a spooled base64 part of several blocks: the size
 * mime_decoded_size() counts (it does not decode) is the length of the
 * decoded stream, with junk bytes, "=" inside the content, a quantum cut
 * at the end, and blocks with and without "=" (content() compares)
 */
static void test_b64_size(void)
{
    static const char alpha[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    static const char *const ends[] = {"", "QQ", "QUI", "QUJD", "QQ==",
    "QUI=", "Q", "Q===="};
    struct strbuf text;
    struct msg m;
    struct mime mime;
    char    err[256];
    char   *c;
    size_t  len, i, e;
    unsigned seed = 7;
    int     had = mime_dec_simd(-1);

    /* Every case with and without the sixteen-at-a-time code. */
    for (e = 0; e < 2 * sizeof(ends) / sizeof(ends[0]); e++) {
	(void) mime_dec_simd(e % 2 == 0 ? 2 : 0);
	strbuf_init(&text, 8 * 1024 * 1024);
	strbuf_puts(&text, "Content-Type: application/octet-stream\n"
		    "Content-Transfer-Encoding: base64\n\n");
	for (i = 0; i < 300000; i++) {
	    seed = seed * 1103515245 + 12345;
	    strbuf_putc(&text, alpha[(seed >> 16) & 63]);
	    if (i % 76 == 75)
		strbuf_putc(&text, '\n');
	    if (i == 100003)			/* junk is skipped */
		strbuf_puts(&text, " \t!*");
	    if (i == 200001 && (e / 2) % 2)		/* "=" ends a quantum */
		strbuf_puts(&text, "=");
	}
	strbuf_puts(&text, "\n");
	strbuf_puts(&text, ends[e / 2]);
	strbuf_puts(&text, "\n");
	make_msg(&m, text.data, 1);
	T_EQ_INT(mime_parse(&mime, &m, err, sizeof(err)), 0);
	c = content(&m, &mime.parts[0], &len);
	T_OK(len >= 224000);
	free(c);
	mime_free(&mime);
	msg_free(&m);
	strbuf_free(&text);
    }
    (void) mime_dec_simd(had);
}

/* test_params - Content-Type / Content-Disposition parameters */

static void test_params(void)
{
    char   *v;

    v = mime_param("attachment; filename=\"a \\\"q\\\".txt\"", "filename");
    T_EQ_STR(v, "a \"q\".txt");
    free(v);
    v = mime_param("attachment; FileName*=iso-8859-1'de'%FCber.txt", "filename");
    T_EQ_STR(v, "\xC3\xBC" "ber.txt");
    free(v);
    /* name* wins over name; a missing section ends the value. */
    v = mime_param("x/y; name=old; name*0=ne; name*1=w; name*3=lost", "name");
    T_EQ_STR(v, "new");
    free(v);
    v = mime_param("x/y; (comment) name = spaced name.pdf ;b=c", "name");
    T_EQ_STR(v, "spaced name.pdf");
    free(v);
    v = mime_param("x/y; a=\"x;name=no\"", "name");
    T_OK(v == NULL);
    free(v);
}

/* test_names - file names lose directories and control characters */

static void test_names(void)
{
    static const char text[] =
    "Content-Type: multipart/mixed; boundary=n\n"
    "\n"
    "--n\n"
    "Content-Disposition: attachment; filename=\"C:\\\\docs\\\\x.txt\"\n"
    "\n"
    "a\n"
    "--n\n"
    "Content-Type: text/plain; name=\"../../etc/pw=?utf-8?q?=0A?=d\"\n"
    "\n"
    "b\n"
    "--n\n"
    "Content-Type: text/plain; name=\"   \"\n"
    "Content-ID: < bad id >\n"
    "\n"
    "c\n"
    "--n--\n";
    struct msg m;
    struct mime mime;
    char    err[256];

    make_msg(&m, text, 1);
    T_EQ_INT(mime_parse(&mime, &m, err, sizeof(err)), 0);
    T_EQ_INT(mime.nparts, 4);
    if (mime.nparts == 4) {
	T_EQ_STR(mime.parts[1].name, "x.txt");
	T_EQ_STR(mime.parts[2].name, "pw_d");
	T_OK(mime.parts[3].name == NULL);
	T_OK(mime.parts[3].content_id == NULL);
    }
    mime_free(&mime);
    msg_free(&m);
}

/*
 * test_online_used - the milter's way (msg_init() with a memory limit,
 * header fields, then body chunks of 200 bytes as libmilter hands them
 * over), with the body kept in memory and with it moved to the spool
 * half way: mime_parse() gives the parse made on the way, which it can
 * only do if it did not read the body again - it is made unreadable
 * first (the spool swapped for /dev/null, the memory overwritten)
 */
static void test_online_used(void)
{
    static const size_t limits[] = {64 * 1024 * 1024, 300};
    struct strbuf body;
    struct msg ref, m;
    struct mime want, got;
    struct m365_result res;
    char    err[256];
    const char *b;
    size_t  i, k, o;
    int     fd, null;

    make_msg(&ref, nested, 1);
    T_EQ_INT(mime_parse(&want, &ref, err, sizeof(err)), 0);
    strbuf_init(&body, 1024 * 1024);
    b = strstr(nested, "\n\n") + 2;
    for (; *b; b++) {
	if (*b == '\n')
	    strbuf_putc(&body, '\r');
	strbuf_putc(&body, *b);
    }
    for (i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
	msg_init(&m, tmpdir, limits[i], 0);
	mime_watch(&m);
	T_EQ_INT(msg_add_header(&m, "Content-Type", "multipart/mixed; "
				"boundary=\"outer\"", &res), 0);
	for (o = 0; o < body.len; o += k) {
	    k = body.len - o < 200 ? body.len - o : 200;
	    T_EQ_INT(msg_add_body(&m, body.data + o, k, &res), 0);
	}
	T_EQ_INT(msg_finish(&m, &res), 0);
	T_EQ_INT(m.body_fd >= 0, i == 1);
	fd = m.body_fd;
	if (fd >= 0) {
	    null = open("/dev/null", O_RDONLY);
	    m.body_fd = null;
	} else {
	    memset(m.body_mem.data, 'x', m.body_mem.len);
	}
	T_EQ_INT(mime_parse(&got, &m, err, sizeof(err)), 0);
	same_parts(&want, &got);
	mime_free(&got);
	if (fd >= 0) {
	    close(m.body_fd);
	    m.body_fd = fd;
	}
	msg_free(&m);
    }
    mime_free(&want);
    msg_free(&ref);
    strbuf_free(&body);
}

/*
 * test_online_stream - the relay's way: msg_stream_read() with
 * mime_watch(), LF input (stored as CRLF in 64 KB writes), delimiters
 * at many offsets around those writes; the same parts as a parse
 * after the fact; a header changed afterwards is not trusted
 */
static void test_online_stream(void)
{
    struct strbuf text;
    struct msg m, ref;
    struct mime a, b;
    struct m365_result res;
    char    err[256], path[300];
    int     i, j, fd;

    strbuf_init(&text, 8 * 1024 * 1024);
    strbuf_puts(&text, "Subject: many\nContent-Type: multipart/mixed; "
		"boundary=q\n\npreamble\n");
    for (i = 0; i < 60; i++) {
	strbuf_printf(&text, "--q\nContent-Type: application/octet-stream\n"
		      "Content-Transfer-Encoding: %s\n\n",
		      i % 3 ? "base64" : "7bit");
	for (j = 0; j < i * 23 + (i % 7); j++)
	    strbuf_puts(&text, "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlq"
			"a2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3\n");
	strbuf_puts(&text, i % 5 ? "QUI=\n" : "-- not a delimiter\n");
    }
    strbuf_puts(&text, "--q--\nepilogue\n");
    make_msg(&ref, text.data, 1);
    T_EQ_INT(mime_parse(&a, &ref, err, sizeof(err)), 0);

    snprintf(path, sizeof(path), "%s/in.XXXXXX", tmpdir);
    fd = mkstemp(path);
    unlink(path);
    T_OK(fd >= 0 && write(fd, text.data, text.len) == (ssize_t) text.len
	 && lseek(fd, 0, SEEK_SET) == 0);
    {
	struct msg_stream *ms = msg_stream_create(&m, tmpdir, 0, 0);

	mime_watch(&m);
	T_EQ_INT(msg_stream_read(ms, fd, &res), 0);
    }
    close(fd);
    T_EQ_INT(mime_parse(&b, &m, err, sizeof(err)), 0);
    same_parts(&a, &b);
    T_EQ_INT(b.nparts, 61);
    for (i = 1; i < (int) b.nparts; i++)
	T_EQ_INT(b.parts[i].size_known, (i - 1) % 3 ? 1 : 0);
    mime_free(&b);
    /* A header changed after the body was read: parsed again. */
    strbuf_reset(&m.hdr);
    strbuf_puts(&m.hdr, "Content-Type: text/plain\r\n");
    T_EQ_INT(mime_parse(&b, &m, err, sizeof(err)), 0);
    T_EQ_INT(b.nparts, 1);
    mime_free(&b);
    mime_free(&a);
    msg_free(&m);
    msg_free(&ref);
    strbuf_free(&text);
}

/* ref_b64 - the plain base64 decoder of RFC 2045: skip junk, "=" ends */

static size_t ref_b64(const unsigned char *in, size_t n, unsigned char *out)
{
    static const char alpha[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned acc = 0;
    size_t  i, o = 0;
    int     nacc = 0;
    const char *c;

    for (i = 0; i < n; i++) {
	if (in[i] == '=') {
	    if (nacc == 2)
		out[o++] = (unsigned char) (acc >> 4);
	    else if (nacc == 3) {
		out[o++] = (unsigned char) (acc >> 10);
		out[o++] = (unsigned char) (acc >> 2);
	    }
	    acc = 0;
	    nacc = 0;
	    continue;
	}
	if (in[i] == 0 || (c = strchr(alpha, in[i])) == NULL)
	    continue;
	acc = acc << 6 | (unsigned) (c - alpha);
	if (++nacc == 4) {
	    out[o++] = (unsigned char) (acc >> 16);
	    out[o++] = (unsigned char) (acc >> 8);
	    out[o++] = (unsigned char) acc;
	    acc = 0;
	    nacc = 0;
	}
    }
    if (nacc == 2)
	out[o++] = (unsigned char) (acc >> 4);
    else if (nacc == 3) {
	out[o++] = (unsigned char) (acc >> 10);
	out[o++] = (unsigned char) (acc >> 2);
    }
    return (o);
}

/*
 * test_b64_simd - the sixteen- and thirty-two-at-a-time decoders (where
 * the CPU has them) and the byte decoder give what the plain decoder
 * gives, for lines of every length, junk of every byte value (0x80 and
 * up too), "=" inside, input cut anywhere; and none writes past n +
 * MIME_DEC_SLACK
 */
static void test_b64_simd(void)
{
    static const char alpha[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    enum { N = 20000 };
    unsigned char *in = xmalloc(N), *want = xmalloc(N), *got;
    struct mime_dec d;
    size_t  n, w, o, i, cut;
    unsigned seed = 11;
    int     round, simd, had = mime_dec_simd(-1);

    got = xmalloc(N + MIME_DEC_SLACK + 64);
    for (round = 0; round < 300; round++) {
	size_t  line = 1 + (size_t) round % 90;

	for (n = 0; n < N - 4; ) {
	    seed = seed * 1103515245 + 12345;
	    if ((seed >> 8) % 997 == 0 && round % 4 == 1)
		in[n++] = (unsigned char) (seed >> 20);	/* any byte */
	    else if ((seed >> 8) % 4999 == 0 && round % 4 == 2)
		in[n++] = '=';
	    else
		in[n++] = (unsigned char) alpha[(seed >> 16) & 63];
	    if (n % (line + 2) == line) {
		in[n++] = '\r';
		in[n++] = '\n';
	    }
	}
	w = ref_b64(in, n, want);
	for (simd = 0; simd < 3; simd++) {
	    (void) mime_dec_simd(simd);
	    seed = seed * 1103515245 + 12345;
	    cut = (seed >> 8) % n;
	    memset(got, 0xAA, N + MIME_DEC_SLACK + 64);
	    mime_dec_init(&d, MIME_CTE_BASE64);
	    o = mime_dec_update(&d, in, cut, got);
	    T_OK(o <= cut + MIME_DEC_SLACK);
	    o += mime_dec_update(&d, in + cut, n - cut, got + o);
	    o += mime_dec_final(&d, got + o);
	    T_EQ_INT(o, (long long) w);
	    T_OK(memcmp(got, want, w) == 0);
	    for (i = n + MIME_DEC_SLACK; i < N + MIME_DEC_SLACK + 64; i++)
		if (got[i] != 0xAA)
		    break;
	    T_EQ_INT(i, N + MIME_DEC_SLACK + 64);
	}
    }
    (void) mime_dec_simd(had);
    T_EQ_INT(mime_dec_simd(-1), had);
    printf("# base64 sixteen at a time on this CPU: %s, thirty-two: %s\n",
	   had ? "yes" : "no", had > 1 ? "yes" : "no");
    free(in);
    free(want);
    free(got);
}

/*
 * test_body_read_edges - mime_body_read(): nothing asked, nothing read
 * (0, not an error: an empty part found by the fuzzer); past the end
 * 0; a file shorter than the body says: -1 (EIO)
 */
static void test_body_read_edges(void)
{
    static const char text[] = "Subject: s\n\n0123456789\n";
    struct msg m;
    char    buf[64];
    int     spool;

    for (spool = 0; spool < 2; spool++) {
	make_msg(&m, text, spool);
	T_EQ_INT(mime_body_read(&m, buf, 0, 5), 0);
	T_EQ_INT(mime_body_read(&m, buf, sizeof(buf), m.body_len), 0);
	T_EQ_INT(mime_body_read(&m, buf, 3, 2), 3);
	T_OK(memcmp(buf, "234", 3) == 0);
	if (spool) {
	    T_EQ_INT(ftruncate(m.body_fd, 4), 0);
	    errno = 0;
	    T_EQ_INT(mime_body_read(&m, buf, 3, 6), -1);
	    T_EQ_INT(errno, EIO);
	}
	msg_free(&m);
    }
}

/*
 * test_windows - the content of every part of a spooled message of
 * about 900 KB is the same whether the spool is mapped in the usual
 * window, in windows of one or two pages (a new mapping every few
 * KB, parts and base64 quanta across their edges) or read with pread()
 * (window 0, as when mmap() fails)
 */
static void test_windows(void)
{
    static const size_t windows[] = {1, 8192, 0};
    struct strbuf text;
    struct msg m;
    struct mime mime;
    char    err[256];
    char   *want, *got;
    size_t  i, j, w, wlen, glen, was;

    strbuf_init(&text, 8 * 1024 * 1024);
    strbuf_puts(&text, "Content-Type: multipart/mixed; boundary=w\n\n");
    for (i = 0; i < 9; i++) {
	strbuf_printf(&text, "--w\nContent-Transfer-Encoding: %s\n\n",
		      i % 3 == 2 ? "quoted-printable" : "base64");
	for (j = 0; j < 1200 + i * 97; j++)
	    strbuf_puts(&text, i % 3 == 2 ? "caf=C3=A9 =3D x=\n" :
			"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlq"
			"a2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3\n");
    }
    strbuf_puts(&text, "--w--\n");
    make_msg(&m, text.data, 1);
    T_EQ_INT(mime_parse(&mime, &m, err, sizeof(err)), 0);
    T_EQ_INT(mime.nparts, 10);
    for (i = 1; i < mime.nparts; i++) {
	want = content(&m, mime.parts + i, &wlen);
	for (w = 0; w < sizeof(windows) / sizeof(windows[0]); w++) {
	    was = mime_stream_window(windows[w]);
	    /* 7 bytes a time: through out[]; 64 KB: into the buffer */
	    got = content(&m, mime.parts + i, &glen);
	    T_EQ_INT(glen, (long long) wlen);
	    T_OK(glen == wlen && memcmp(got, want, wlen) == 0);
	    free(got);
	    got = read_all(&m, mime.parts + i, 65536, &glen);
	    T_EQ_INT(glen, (long long) wlen);
	    T_OK(glen == wlen && memcmp(got, want, wlen) == 0);
	    free(got);
	    (void) mime_stream_window(was);
	}
	T_OK(wlen > 10000);
	free(want);
    }
    mime_free(&mime);
    msg_free(&m);
    strbuf_free(&text);
}

int     main(void)
{
    t_tmpdir(tmpdir, sizeof(tmpdir), "test_mime");
    T_RUN(test_nested);
    T_RUN(test_outer_ends_inner);
    T_RUN(test_unclosed);
    T_RUN(test_close_at_end);
    T_RUN(test_online_stream);
    T_RUN(test_online_used);
    T_RUN(test_windows);
    T_RUN(test_body_read_edges);
    T_RUN(test_single);
    T_RUN(test_digest);
    T_RUN(test_limits);
    T_RUN(test_decoders);
    T_RUN(test_b64_simd);
    T_RUN(test_words);
    T_RUN(test_b64_size);
    T_RUN(test_params);
    T_RUN(test_names);
    rmdir(tmpdir);
    return (T_DONE());
}
