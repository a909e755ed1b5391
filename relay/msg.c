/*
 * NAME
 *	msg 3
 * SUMMARY
 *	read one message, spool its body, stream it base64-encoded
 * DESCRIPTION
 *	See msg.h.  Details of msg_read():
 *
 *	Input is read in 64 KB blocks.  Header lines go into hdr with CRLF
 *	line ends; the header section ends at the first empty line (which
 *	is not stored) or at the first line that is neither a header field
 *	("name:") nor a continuation line: like Postfix's cleanup, that
 *	line starts the body.  So input without any header field is all
 *	body, with an empty header section, and input without an empty
 *	line is all header.  A first line "From " (mbox) is dropped.
 *
 *	The body goes to a temporary file made with mkostemp() in tmpdir
 *	(NULL or "": $TMPDIR, else /tmp), mode 0600, close-on-exec,
 *	unlinked at once; bare LF becomes CRLF, existing CRLF is kept.
 *	body_fd stays -1 when the body is empty.
 *
 *	Limits: a header section over STRBUF_MAX_HEADERS gives 5.6.0; a
 *	message whose canonical size exceeds max_size (0: no limit) gives
 *	5.3.4 EX_DATAERR.  In both cases the rest of the input is read and
 *	discarded first, so the MTA does not see a broken pipe.  Empty
 *	input gives 5.6.0.  Read and write errors give 4.3.0 EX_TEMPFAIL.
 *
 *	The stream of a struct msg_src is "hdr + CRLF + body" (CRLF CRLF
 *	when hdr does not end with a line end).  Raw bytes are taken in
 *	multiples of 3 so base64 quanta never straddle two calls; an
 *	encoded quantum the caller has no room for waits in a 4-byte
 *	carry.  The body is read with pread(), so a rewind only resets
 *	offsets.  Memory is fixed (one 48 KB buffer).
 * DIAGNOSTICS
 *	msg_src_read() returns CURL_READFUNC_ABORT on a read error;
 *	msg_src_error() then says why.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include <curl/curl.h>

#include "msg.h"
#include "util.h"

#define MSG_BLOCK	(64 * 1024)
#define MSG_RAW_BUF	(3 * 16 * 1024)

#define MSG_HDR		0		/* reading header lines */
#define MSG_BODY	1		/* spooling the body */
#define MSG_DRAIN	2		/* discarding the rest */

struct msg_reader {
    struct msg *m;
    const char *tmpdir;			/* as given, may be NULL */
    const char *spool_dir;		/* the directory used */
    off_t   max_size;
    struct m365_result *res;
    int     state;
    int     first_line;			/* no line seen yet */
    int     last_cr;			/* body: previous byte was CR */
    off_t   size;			/* canonical size so far */
    int     too_big;			/* max_size exceeded */
    int     hdr_too_big;		/* header limit exceeded */
    int     failed;			/* I/O error, res is set */
    struct strbuf line;			/* current header line */
    char   *out;			/* body output buffer */
    size_t  outlen;
};

/* msg_write_all - write a whole buffer, retrying short writes */

static int msg_write_all(int fd, const char *p, size_t n)
{
    ssize_t w;

    while (n > 0) {
	if ((w = write(fd, p, n)) < 0) {
	    if (errno == EINTR)
		continue;
	    return (-1);
	}
	p += w;
	n -= (size_t) w;
    }
    return (0);
}

/* msg_spool_open - create the unlinked body file */

static int msg_spool_open(struct msg_reader *r)
{
    const char *dir = r->tmpdir;
    char    path[4096];
    int     fd;

    if (dir == NULL || *dir == 0)
	dir = getenv("TMPDIR");
    if (dir == NULL || *dir == 0)
	dir = "/tmp";
    if (snprintf(path, sizeof(path), "%s/m365relay.XXXXXX", dir)
	>= (int) sizeof(path)) {
	result_set(r->res, M365_SYSTEM, EX_TEMPFAIL, "4.3.0",
		   "the temporary directory name is too long");
	return (-1);
    }
    if ((fd = mkostemp(path, O_CLOEXEC)) < 0) {
	result_set(r->res, M365_SYSTEM, EX_TEMPFAIL, "4.3.0",
		   "cannot create a spool file in %s: %s; check that the "
		   "directory exists and is writable", dir, strerror(errno));
	return (-1);
    }
    (void) fchmod(fd, 0600);
    if (unlink(path) < 0) {
	result_set(r->res, M365_SYSTEM, EX_TEMPFAIL, "4.3.0",
		   "cannot unlink the spool file %s: %s", path,
		   strerror(errno));
	close(fd);
	return (-1);
    }
    r->m->body_fd = fd;
    r->spool_dir = dir;
    return (0);
}

/* msg_flush - write the body output buffer */

static int msg_flush(struct msg_reader *r)
{
    if (r->failed)
	return (-1);
    if (r->outlen == 0)
	return (0);
    if (r->m->body_fd < 0 && msg_spool_open(r) < 0) {
	/* Keep reading so the writer is not killed by SIGPIPE. */
	r->failed = 1;
	r->state = MSG_DRAIN;
	return (-1);
    }
    if (msg_write_all(r->m->body_fd, r->out, r->outlen) < 0) {
	result_set(r->res, M365_SYSTEM, EX_TEMPFAIL, "4.3.0",
		   "cannot write the spool file in %s: %s; check the free "
		   "space there", r->spool_dir, strerror(errno));
	r->failed = 1;
	r->state = MSG_DRAIN;
	return (-1);
    }
    r->m->body_len += (off_t) r->outlen;
    r->outlen = 0;
    return (0);
}

/* msg_count - account canonical bytes; switch to draining when too big */

static void msg_count(struct msg_reader *r, off_t n)
{
    r->size += n;
    if (r->max_size > 0 && r->size > r->max_size && !r->too_big) {
	r->too_big = 1;
	r->state = MSG_DRAIN;
    }
}

/* msg_body - spool body bytes, LF -> CRLF */

static void msg_body(struct msg_reader *r, const char *p, size_t n)
{
    const char *lf;
    size_t  seg, k;
    int     crlf, next_cr;

    while (n > 0) {
	lf = memchr(p, '\n', n);
	seg = lf ? (size_t) (lf - p) : n;
	/* A bare LF gets a CR in front of it. */
	crlf = lf && !(seg > 0 ? p[seg - 1] == '\r' : r->last_cr);
	next_cr = lf ? 0 : p[seg - 1] == '\r';
	msg_count(r, (off_t) (seg + (lf ? 1 : 0) + crlf));
	n -= seg + (lf ? 1 : 0);
	if (r->state == MSG_BODY) {
	    /* Fill the buffer, flushing as often as needed. */
	    while (r->outlen + seg + 2 > MSG_BLOCK) {
		k = r->outlen < MSG_BLOCK - 2 ? MSG_BLOCK - 2 - r->outlen : 0;
		memcpy(r->out + r->outlen, p, k);
		r->outlen += k;
		p += k;
		seg -= k;
		if (msg_flush(r) < 0)
		    return;
	    }
	    memcpy(r->out + r->outlen, p, seg);
	    r->outlen += seg;
	    if (crlf)
		r->out[r->outlen++] = '\r';
	    if (lf)
		r->out[r->outlen++] = '\n';
	}
	/* When draining, the bytes are only counted. */
	p += seg + (lf ? 1 : 0);
	r->last_cr = next_cr;
    }
}

/* msg_is_field - does a header line start a header field */

static int msg_is_field(const char *s, size_t n)
{
    size_t  i;

    for (i = 0; i < n && s[i] != ':'; i++)
	if ((unsigned char) s[i] <= ' ' || (unsigned char) s[i] >= 127)
	    break;
    /* Obsolete syntax allows white space before the colon. */
    if (i > 0 && i < n && (s[i] == ' ' || s[i] == '\t')) {
	size_t  j = i;

	while (j < n && (s[j] == ' ' || s[j] == '\t'))
	    j++;
	return (j < n && s[j] == ':');
    }
    return (i > 0 && i < n && s[i] == ':');
}

/* msg_header_line - one complete header line (no line end) */

static void msg_header_line(struct msg_reader *r, const char *s, size_t n,
			            int had_lf)
{
    int     first = r->first_line;

    r->first_line = 0;
    if (first && n >= 5 && memcmp(s, "From ", 5) == 0) {
	r->first_line = 1;			/* the next line is first */
	return;
    }
    if (n == 0 && had_lf) {
	r->state = MSG_BODY;			/* the empty separator */
	msg_count(r, 2);
	return;
    }
    if (n == 0)
	return;
    if (!msg_is_field(s, n) && (first || (s[0] != ' ' && s[0] != '\t'))) {
	/* Not a header line: the body starts here (like Postfix). */
	r->state = MSG_BODY;
	msg_count(r, 2);
	msg_body(r, s, n);
	if (had_lf)
	    msg_body(r, "\n", 1);
	return;
    }
    msg_count(r, (off_t) n + 2);
    if (r->hdr_too_big)
	return;
    if (strbuf_append(&r->m->hdr, s, n) < 0
	|| strbuf_append(&r->m->hdr, "\r\n", 2) < 0) {
	r->hdr_too_big = 1;
	r->state = MSG_DRAIN;
    }
}

/* msg_header - feed bytes while in the header section */

static size_t msg_header(struct msg_reader *r, const char *p, size_t n)
{
    const char *lf = memchr(p, '\n', n);
    size_t  seg = lf ? (size_t) (lf - p) : n;
    size_t  len;

    if (r->line.len + seg > STRBUF_MAX_HEADERS) {
	/* A line this long cannot fit in the header section anyway. */
	r->hdr_too_big = 1;
	r->state = MSG_DRAIN;
	msg_count(r, (off_t) (r->line.len + seg));
	strbuf_reset(&r->line);
	return (lf ? seg + 1 : n);
    }
    strbuf_append(&r->line, p, seg);
    if (!lf)
	return (n);
    len = r->line.len;
    if (len > 0 && r->line.data[len - 1] == '\r')
	len--;
    msg_header_line(r, r->line.data ? r->line.data : "", len, 1);
    strbuf_reset(&r->line);
    return (seg + 1);
}

/* msg_read - read one message from fd */

int     msg_read(struct msg *m, int fd, const char *tmpdir, off_t max_size,
		         struct m365_result *res)
{
    struct msg_reader r;
    char   *buf = xmalloc(MSG_BLOCK);
    ssize_t got;
    size_t  used, total = 0;
    int     ret = -1;

    memset(m, 0, sizeof(*m));
    strbuf_init(&m->hdr, STRBUF_MAX_HEADERS);
    m->body_fd = -1;
    result_init(res);
    memset(&r, 0, sizeof(r));
    r.m = m;
    r.tmpdir = tmpdir;
    r.max_size = max_size;
    r.res = res;
    r.state = MSG_HDR;
    r.first_line = 1;
    strbuf_init(&r.line, STRBUF_MAX_HEADERS + 2);
    r.out = xmalloc(MSG_BLOCK);

    for (;;) {
	if ((got = read(fd, buf, MSG_BLOCK)) < 0) {
	    if (errno == EINTR)
		continue;
	    result_set(res, M365_SYSTEM, EX_TEMPFAIL, "4.3.0",
		       "cannot read the message from the MTA: %s",
		       strerror(errno));
	    goto done;
	}
	if (got == 0)
	    break;
	total += (size_t) got;
	for (used = 0; used < (size_t) got; /* below */ ) {
	    if (r.state == MSG_HDR) {
		used += msg_header(&r, buf + used, (size_t) got - used);
	    } else {
		/* Body or draining: msg_body() only counts when draining. */
		msg_body(&r, buf + used, (size_t) got - used);
		used = (size_t) got;
	    }
	}
    }
    if (r.state == MSG_HDR && r.line.len > 0) {
	size_t  len = r.line.len;

	if (r.line.data[len - 1] == '\r')
	    len--;
	msg_header_line(&r, r.line.data, len, 0);
    }
    if (r.state == MSG_BODY)
	(void) msg_flush(&r);
    if (r.failed)
	goto done;
    m->size = r.size;
    if (r.state == MSG_HDR) {
	/* No empty line: all header; count the separator we will add. */
	m->size += 2;
    }
    if (total == 0) {
	result_set(res, M365_PERM, EX_DATAERR, "5.6.0",
		   "the message is empty (no header and no body)");
	goto done;
    }
    if (r.hdr_too_big) {
	result_set(res, M365_PERM, EX_DATAERR, "5.6.0",
		   "the message header section is larger than %lu bytes",
		   (unsigned long) STRBUF_MAX_HEADERS);
	goto done;
    }
    if (r.too_big) {
	result_set(res, M365_PERM, EX_DATAERR, "5.3.4",
		   "message size %lld bytes exceeds the limit of %lld bytes",
		   (long long) r.size, (long long) max_size);
	goto done;
    }
    ret = 0;

done:
    free(buf);
    free(r.out);
    strbuf_free(&r.line);
    return (ret);
}

/* msg_free - release header memory and the spool file */

void    msg_free(struct msg *m)
{
    if (m == NULL)
	return;
    strbuf_free(&m->hdr);
    if (m->body_fd >= 0)
	close(m->body_fd);
    m->body_fd = -1;
    m->body_len = m->size = 0;
}

 /*
  * Streaming base64 of "hdr + separator + body".
  */
struct msg_src {
    const char *hdr;
    size_t  hdrlen;
    char    sep[4];			/* CRLF, or CRLF CRLF */
    size_t  seplen;
    int     body_fd;
    off_t   body_len;
    off_t   total;			/* raw stream length */
    off_t   pos;			/* raw bytes consumed */
    char    carry[4];			/* encoded bytes not yet delivered */
    size_t  ncarry;
    size_t  carry_off;
    unsigned char raw[MSG_RAW_BUF];
    char    error[256];
};

/* msg_src_create - stream over hdr (may be rewritten) and m's body */

struct msg_src *msg_src_create(const struct strbuf *hdr, const struct msg *m)
{
    struct msg_src *s = xcalloc(1, sizeof(*s));

    s->hdr = hdr->data ? hdr->data : "";
    s->hdrlen = hdr->len;
    if (s->hdrlen > 0 && s->hdr[s->hdrlen - 1] != '\n') {
	memcpy(s->sep, "\r\n\r\n", 4);
	s->seplen = 4;
    } else {
	memcpy(s->sep, "\r\n", 2);
	s->seplen = 2;
    }
    s->body_fd = m->body_fd;
    s->body_len = m->body_fd >= 0 ? m->body_len : 0;
    s->total = (off_t) s->hdrlen + (off_t) s->seplen + s->body_len;
    return (s);
}

/* msg_src_fill - copy up to n raw stream bytes; -1 on error */

static ssize_t msg_src_fill(struct msg_src *s, unsigned char *out, size_t n)
{
    size_t  done = 0, k;
    off_t   boff;
    ssize_t got;

    while (done < n && s->pos < s->total) {
	if ((size_t) s->pos < s->hdrlen) {
	    k = s->hdrlen - (size_t) s->pos;
	    k = k < n - done ? k : n - done;
	    memcpy(out + done, s->hdr + s->pos, k);
	} else if ((size_t) s->pos < s->hdrlen + s->seplen) {
	    k = s->hdrlen + s->seplen - (size_t) s->pos;
	    k = k < n - done ? k : n - done;
	    memcpy(out + done, s->sep + (s->pos - (off_t) s->hdrlen), k);
	} else {
	    boff = s->pos - (off_t) (s->hdrlen + s->seplen);
	    k = n - done;
	    if ((off_t) k > s->body_len - boff)
		k = (size_t) (s->body_len - boff);
	    got = pread(s->body_fd, out + done, k, boff);
	    if (got < 0 && errno == EINTR)
		continue;
	    if (got <= 0) {
		snprintf(s->error, sizeof(s->error), "cannot read the spooled "
			 "message body: %s", got < 0 ? strerror(errno) :
			 "the file is shorter than expected");
		return (-1);
	    }
	    k = (size_t) got;
	}
	s->pos += (off_t) k;
	done += k;
    }
    return ((ssize_t) done);
}

/* msg_src_read - CURLOPT_READFUNCTION: next base64 bytes */

size_t  msg_src_read(char *buf, size_t size, size_t nitems, void *ctx)
{
    struct msg_src *s = ctx;
    size_t  want = size * nitems, done = 0, k, groups;
    ssize_t got;

    while (done < want) {
	if (s->carry_off < s->ncarry) {
	    k = s->ncarry - s->carry_off;
	    k = k < want - done ? k : want - done;
	    memcpy(buf + done, s->carry + s->carry_off, k);
	    s->carry_off += k;
	    done += k;
	    continue;
	}
	if (s->pos >= s->total)
	    break;
	groups = (want - done) / 4;
	if (groups == 0) {
	    /* No room for a whole quantum: encode one into the carry. */
	    if ((got = msg_src_fill(s, s->raw, 3)) < 0)
		return (CURL_READFUNC_ABORT);
	    s->ncarry = base64_encode(s->carry, s->raw, (size_t) got);
	    s->carry_off = 0;
	    continue;
	}
	if (groups > MSG_RAW_BUF / 3)
	    groups = MSG_RAW_BUF / 3;
	/* A short fill happens only at the end of the stream. */
	if ((got = msg_src_fill(s, s->raw, 3 * groups)) < 0)
	    return (CURL_READFUNC_ABORT);
	done += base64_encode(buf + done, s->raw, (size_t) got);
    }
    return (done);
}

/* msg_src_rewind - start the stream over (a retry) */

int     msg_src_rewind(struct msg_src *s)
{
    s->pos = 0;
    s->ncarry = s->carry_off = 0;
    s->error[0] = 0;
    return (0);
}

/* msg_src_length - exact length of the base64 stream */

long long msg_src_length(const struct msg_src *s)
{
    return ((long long) (4 * ((s->total + 2) / 3)));
}

/* msg_src_error - why msg_src_read() aborted, or "" */

const char *msg_src_error(const struct msg_src *s)
{
    return (s->error);
}

/* msg_src_free - release the stream (not the message) */

void    msg_src_free(struct msg_src *s)
{
    free(s);
}
