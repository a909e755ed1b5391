/*
 * NAME
 *	msg 3
 * SUMMARY
 *	read one message, spool its body, stream it base64-encoded
 * DESCRIPTION
 *	See msg.h.  One set of internals builds a struct msg, whether the
 *	bytes come from a pipe (msg_read) or from libmilter callbacks
 *	(msg_add_header, msg_add_body):
 *
 *	msg_count() keeps the canonical size; the CRLF between header and
 *	body is counted by msg_body_start() when the body starts (an empty
 *	line, a body chunk), so a header-only message has the size of its
 *	header section.  msg_body_put() turns bare LF into CRLF (existing
 *	CRLF and a lone CR are kept; a CRLF split between two chunks is
 *	recognised by last_cr) and hands the result to
 *	msg_store(), which appends to body_mem while the body fits in
 *	mem_limit and otherwise moves it to a spool file made with
 *	mkostemp() in the spool directory, mode 0600, close-on-exec,
 *	unlinked at once, written through a 64 KB buffer (1 MB once 1 MB
 *	is spooled: a large body in fewer, larger writes); msg_tap()'s
 *	callback sees each block as it is written and may have a part of
 *	it stored in another form (a struct msg_cut, recorded as a struct
 *	msg_hole: body offsets stay canonical, msg_file_off() maps them to
 *	the file, msg_body_pread() refuses a hole).  Past max_size
 *	nothing is stored any more (what was stored is dropped) but bytes
 *	are still counted, so the final size can be reported.  The first
 *	hard error (I/O, header limit) is kept in m->error and returned by
 *	every later call.
 *
 *	msg_read() uses mem_limit 0: every non-empty body is spooled.
 *	Input is read in 256 KB blocks (a pipe is asked to hold 1 MB,
 *	fcntl(F_SETPIPE_SZ), so that both ends wake up less often) and
 *	fed to a struct msg_stream (msg_stream_put(), also the LMTP
 *	server's way in).  Once 1 MB has come through such a pipe, a
 *	read that got less than 64 KB is followed by a pause of 1 ms
 *	(msg_fd_may_pause()), so that the next read takes what the writer
 *	wrote meanwhile: Postfix's pipe(8) writes 4 KB at a time, and
 *	each write into an empty pipe would wake the reader.  Header
 *	lines go into hdr with CRLF line ends; the header section ends
 *	at the first empty line (which is not stored) or at the first
 *	line that is neither a header field ("name:") nor a continuation
 *	line: like Postfix's cleanup, that line starts the body.  So
 *	input without any header field is all body, with an empty header
 *	section, and input without an empty line is all header.  A first
 *	line "From " (mbox) is dropped.
 *	Each header line (a milter field: the whole field) is stored by
 *	msg_hdr_put(), which runs msg_hdr_clean() over it (see msg.h).
 *	After an error or past max_size the rest of the input is still
 *	read (and counted), so the MTA does not see a broken pipe.  Empty
 *	input gives 5.6.0.
 *
 *	The stream of a struct msg_src is "hdr + CRLF + body" (CRLF CRLF
 *	when hdr does not end with a line end; for a header-only message
 *	one CRLF less: the input had no empty line, none is added).  Raw
 *	bytes are taken in multiples of 3 so base64 quanta never straddle
 *	two calls; an encoded quantum the caller has no room for waits in
 *	a 4-byte carry.  A spooled body is read with pread(), an in-memory
 *	body is copied, so a rewind only resets offsets.  Memory is fixed
 *	(one 48 KB buffer).
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
#include <strings.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "msg.h"
#include "util.h"

#define MSG_BLOCK	(64 * 1024)	/* spool write buffer, at first */
#define MSG_BLOCK_BIG	(1024 * 1024)	/* once 1 MB was spooled */
#define MSG_READ_BLOCK	(256 * 1024)	/* read() from the MTA at a time */
#define MSG_PIPE_SIZE	(1024 * 1024)	/* what a pipe is asked to hold */
#define MSG_PAUSE_AFTER	(1024 * 1024)	/* pause after short reads from */
#define MSG_PAUSE_SHORT	(64 * 1024)	/* a read of less is short */
#define MSG_PAUSE_NS	1000000L	/* 1 ms: at most 1 MB at 1 GB/s */
#define MSG_RAW_BUF	(3 * 16 * 1024)
#define MSG_MEM_FIRST	4096		/* first body_mem allocation */

/* struct msg.state */
#define MSG_ST_NONE	0		/* not initialised, or finished */
#define MSG_ST_HDR	1		/* taking header fields */
#define MSG_ST_BODY	2		/* taking body bytes */

/* msg_failed - has a hard error been recorded? */

static int msg_failed(const struct msg *m)
{
    return (m->error.status != M365_OK);
}

/* msg_too_big - is the message past max_size? */

static int msg_too_big(const struct msg *m)
{
    return (m->max_size > 0 && m->size > m->max_size);
}

/* msg_write_error - record a spool write failure */

static void msg_write_error(struct msg *m)
{
    result_set(&m->error, M365_SYSTEM, "4.3.0",
	       "cannot write the spool file in %s: %s; check the free "
	       "space there", m->spool_dir ? m->spool_dir : "?",
	       strerror(errno));
}

/* msg_hole_add - the tap's cut of the block at body offset off */

static void msg_hole_add(struct msg *m, off_t off, const struct msg_cut *cut)
{
    struct msg_hole *h = m->nholes ? m->holes + m->nholes - 1 : NULL;
    off_t   boff = off + (off_t) cut->from;
    off_t   foff = m->file_len + (off_t) cut->from;

    if (h == NULL || h->body_off + h->body_len != boff
	|| h->file_off + h->file_len != foff) {
	m->holes = xrealloc(m->holes, (m->nholes + 1) * sizeof(*m->holes));
	h = m->holes + m->nholes++;
	h->body_off = boff;
	h->body_len = 0;
	h->file_off = foff;
	h->file_len = 0;
    }
    h->body_len += (off_t) (cut->to - cut->from);
    h->file_len += (off_t) cut->len;
    memcpy(h->aux, cut->aux, sizeof(h->aux));
}

/*
 * msg_spool_write - show the tap the body bytes, write them (or what
 * the tap puts in place of some) to the spool file
 */
static int msg_spool_write(struct msg *m, const char *p, size_t n)
{
    struct msg_cut cut;
    int     rc;

    memset(&cut, 0, sizeof(cut));
    if (m->tap)
	m->tap(m->tap_ctx, p, n, m->spooled, &cut);
    if (cut.to > cut.from && cut.to <= n) {
	rc = file_write_all(m->body_fd, p, cut.from) < 0
	    || file_write_all(m->body_fd, cut.data, cut.len) < 0
	    || file_write_all(m->body_fd, p + cut.to, n - cut.to) < 0;
	if (rc == 0) {
	    msg_hole_add(m, m->spooled, &cut);
	    m->file_len += (off_t) (n - (cut.to - cut.from) + cut.len);
	}
    } else {
	rc = file_write_all(m->body_fd, p, n) < 0;
	m->file_len += (off_t) n;
    }
    m->spooled += (off_t) n;
    if (rc) {
	msg_write_error(m);
	return (-1);
    }
    return (0);
}

/* msg_spool_open - create the unlinked body file, move body_mem there */

static int msg_spool_open(struct msg *m)
{
    const char *dir = file_tmpdir(m->spool_dir);
    char    path[4096];
    int     fd;

    if (snprintf(path, sizeof(path), "%s/m365relay.XXXXXX", dir)
	>= (int) sizeof(path)) {
	result_set(&m->error, M365_SYSTEM, "4.3.0",
		   "the temporary directory name is too long");
	return (-1);
    }
    if ((fd = mkostemp(path, O_CLOEXEC)) < 0) {
	result_set(&m->error, M365_SYSTEM, "4.3.0",
		   "cannot create a spool file in %s: %s; check that the "
		   "directory exists and is writable", dir, strerror(errno));
	return (-1);
    }
    (void) fchmod(fd, 0600);
    if (unlink(path) < 0) {
	result_set(&m->error, M365_SYSTEM, "4.3.0",
		   "cannot unlink the spool file %s: %s", path,
		   strerror(errno));
	close(fd);
	return (-1);
    }
    if (m->spool_dir != dir) {
	free(m->spool_dir);
	m->spool_dir = xstrdup(dir);
    }
    m->body_fd = fd;
    if (m->body_mem.len > 0
	&& msg_spool_write(m, m->body_mem.data, m->body_mem.len) < 0)
	return (-1);
    strbuf_free(&m->body_mem);
    m->wbuf = xmalloc(MSG_BLOCK);
    m->wcap = MSG_BLOCK;
    m->wlen = 0;
    return (0);
}

/* msg_spool_flush - write the spool buffer */

static int msg_spool_flush(struct msg *m)
{
    if (m->wlen == 0 || msg_failed(m))
	return (msg_failed(m) ? -1 : 0);
    if (msg_spool_write(m, m->wbuf, m->wlen) < 0)
	return (-1);
    m->wlen = 0;
    if (m->wcap < MSG_BLOCK_BIG && m->spooled >= MSG_BLOCK_BIG) {
	/* A large body: fewer, larger writes (a third less system time). */
	free(m->wbuf);
	m->wbuf = xmalloc(MSG_BLOCK_BIG);
	m->wcap = MSG_BLOCK_BIG;
    }
    return (0);
}

/* msg_mem_append - append to body_mem, never allocating past mem_limit */

static void msg_mem_append(struct msg *m, const char *p, size_t n)
{
    struct strbuf *sb = &m->body_mem;
    size_t  need = sb->len + n + 1, cap;

    if (need > sb->cap) {
	cap = sb->cap ? sb->cap : MSG_MEM_FIRST;
	while (cap < need)
	    cap *= 2;
	if (cap > m->mem_limit + 1)
	    cap = m->mem_limit + 1;		/* >= need: checked by caller */
	sb->data = xrealloc(sb->data, cap);
	sb->cap = cap;
    }
    (void) strbuf_append(sb, p, n);		/* fits: len + n <= max */
}

/* msg_store - keep canonical body bytes, in memory or in the spool */

static void msg_store(struct msg *m, const char *p, size_t n)
{
    if (n == 0 || msg_failed(m))
	return;
    if (m->body_fd < 0) {
	if ((size_t) m->body_len + n <= m->mem_limit) {
	    msg_mem_append(m, p, n);
	    m->body_len += (off_t) n;
	    return;
	}
	if (msg_spool_open(m) < 0)
	    return;
    }
    if (m->wlen + n > m->wcap && msg_spool_flush(m) < 0)
	return;
    if (n >= m->wcap) {
	if (msg_spool_write(m, p, n) < 0)
	    return;
    } else {
	memcpy(m->wbuf + m->wlen, p, n);
	m->wlen += n;
    }
    m->body_len += (off_t) n;
}

/* msg_drop_body - past max_size: release what was stored */

static void msg_drop_body(struct msg *m)
{
    strbuf_free(&m->body_mem);
    m->wlen = 0;
    if (m->body_fd >= 0 && ftruncate(m->body_fd, 0) < 0) {
	/* The space comes back when the unlinked file is closed. */
    }
    m->body_len = 0;
    m->spooled = 0;
    m->file_len = 0;
    free(m->holes);
    m->holes = NULL;
    m->nholes = 0;
}

/* msg_count - account canonical bytes; drop the body when too big */

static void msg_count(struct msg *m, off_t n)
{
    int     was = msg_too_big(m);

    m->size += n;
    if (!was && msg_too_big(m))
	msg_drop_body(m);
}

/*
 * Bare LF -> CRLF 32 bytes at a time (AVX2, checked at run time):
 * the common case, lines from a pipe going into the spool buffer, in
 * three steps for a line of 76 bytes instead of a memchr() and a
 * memcpy() call each.  msg_lf_simd() reports whether it is in use and
 * switches it (0 off, 1 on where the CPU can, -1 only asks; for the
 * tests, which compare both ways).
 */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MSG_LF_SIMD	1

static int msg_lf_use = -1;			/* -1: not checked yet */

/*
 * msg_lf_expand - copy bytes of p (n >= 32) to o, which has room for
 * room bytes (>= 64), each LF not after a CR (prev_cr: the byte
 * before p[0] was one) as CRLF, while 32 more input bytes and 64 more
 * output bytes fit; the input bytes taken, *olen the output bytes
 */
__attribute__((target("avx2")))
static size_t msg_lf_expand(const char *p, size_t n, char *o, size_t room,
			            int prev_cr, size_t *olen)
{
    const __m256i nl = _mm256_set1_epi8('\n');
    __m256i v;
    size_t  i = 0, w = 0;
    unsigned lf;

    while (i + 32 <= n && w + 64 <= room) {
	v = _mm256_loadu_si256((const __m256i *) (p + i));
	_mm256_storeu_si256((__m256i *) (o + w), v);
	if ((lf = (unsigned) _mm256_movemask_epi8(_mm256_cmpeq_epi8(v, nl)))
	    == 0) {
	    i += 32;
	    w += 32;
	    continue;
	}
	/* Up to the first LF (already copied), then the line end. */
	lf = (unsigned) __builtin_ctz(lf);
	i += lf;
	w += lf;
	if (!(i > 0 ? p[i - 1] == '\r' : prev_cr))
	    o[w++] = '\r';
	o[w++] = '\n';
	i++;
    }
    *olen = w;
    return (i);
}

/* msg_lf_cpu - can this CPU run msg_lf_expand()? */

static int msg_lf_cpu(void)
{
    __builtin_cpu_init();
    return (__builtin_cpu_supports("avx2") ? 1 : 0);
}
#endif

/* msg_lf_simd - see above */

int     msg_lf_simd(int on)
{
#ifdef MSG_LF_SIMD
    int     was;

    if (msg_lf_use < 0)
	msg_lf_use = msg_lf_cpu();
    was = msg_lf_use;
    if (on >= 0)
	msg_lf_use = on ? msg_lf_cpu() : 0;
    return (was);
#else
    (void) on;
    return (0);
#endif
}

/*
 * msg_may_put - may n canonical bytes go straight into the spool
 * buffer (when there is room), instead of through msg_count() and
 * msg_store()?  Only while nothing else could happen: spooling, no
 * error, max_size not reached.  msg_put_done() counts them.
 */
static int msg_may_put(const struct msg *m, size_t n)
{
    return (m->wbuf != NULL && !msg_failed(m)
	    && (m->max_size == 0 || m->size + (off_t) n <= m->max_size));
}

static void msg_put_done(struct msg *m, size_t n)
{
    m->wlen += n;
    m->size += (off_t) n;
    m->body_len += (off_t) n;
}

/* msg_body_put - count and store body bytes, bare LF -> CRLF */

static void msg_body_put(struct msg *m, const char *p, size_t n)
{
    const char *s, *end, *run, *lf;
    size_t  seg;
#ifdef MSG_LF_SIMD
    size_t  out;
#endif

    if (n == 0)
	return;
#ifdef MSG_LF_SIMD
    if (msg_lf_use < 0)
	(void) msg_lf_simd(-1);
    /* Straight into the spool buffer (at most twice as many bytes). */
    while (msg_lf_use && n >= 32 && msg_may_put(m, 2 * n)) {
	if (m->wcap - m->wlen < 64 && msg_spool_flush(m) < 0)
	    break;
	seg = msg_lf_expand(p, n, m->wbuf + m->wlen, m->wcap - m->wlen,
			    m->last_cr, &out);
	if (seg == 0)
	    break;
	msg_put_done(m, out);
	m->last_cr = p[seg - 1] == '\r';
	p += seg;
	n -= seg;
    }
    if (n == 0)
	return;
#endif
    s = p;
    end = p + n;
    run = p;
    /* Runs without a bare LF go as they are; a bare LF gets a CR. */
    while (s < end && (lf = memchr(s, '\n', (size_t) (end - s))) != NULL) {
	s = lf + 1;
	if (lf > p ? lf[-1] == '\r' : m->last_cr)
	    continue;
	seg = (size_t) (lf - run);
	if (msg_may_put(m, seg + 2) && m->wlen + seg + 2 <= m->wcap) {
	    /* The common case (a line from a pipe): straight to the buffer. */
	    memcpy(m->wbuf + m->wlen, run, seg);
	    memcpy(m->wbuf + m->wlen + seg, "\r\n", 2);
	    msg_put_done(m, seg + 2);
	} else {
	    msg_count(m, (off_t) seg + 2);
	    if (!msg_too_big(m)) {
		msg_store(m, run, seg);
		msg_store(m, "\r\n", 2);
	    }
	}
	run = s;
    }
    if (run < end) {
	msg_count(m, (off_t) (end - run));
	if (!msg_too_big(m))
	    msg_store(m, run, (size_t) (end - run));
    }
    m->last_cr = end[-1] == '\r';
}

/* msg_hdr_ftext - a byte of a header field name (RFC 5322 ftext) */

static int msg_hdr_ftext(int ch)
{
    return (ch > ' ' && ch < 127 && ch != ':');
}

/* msg_hdr_name - length of the field name that a line starts, or 0 */

size_t  msg_hdr_name(const char *s, size_t n, size_t *colon_r)
{
    size_t  i, j;

    for (i = 0; i < n && msg_hdr_ftext((unsigned char) s[i]); i++)
	 /* void */ ;
    /* Obsolete syntax allows white space before the colon. */
    for (j = i; j < n && (s[j] == ' ' || s[j] == '\t'); j++)
	 /* void */ ;
    if (i == 0 || j >= n || s[j] != ':')
	return (0);
    if (colon_r)
	*colon_r = j;
    return (i);
}

/* msg_hdr_next - the field that starts at *pos of a header section */

int     msg_hdr_next(const char *hdr, size_t len, size_t *pos,
		             struct msg_field *f)
{
    const char *lf;
    size_t  next;

    if (*pos >= len)
	return (-1);
    f->start = *pos;
    do {
	lf = memchr(hdr + *pos, '\n', len - *pos);
	next = lf ? (size_t) (lf - hdr) + 1 : len;
	*pos = next;
    } while (next < len && (hdr[next] == ' ' || hdr[next] == '\t'));
    f->end = next;
    f->vend = next;
    if (f->vend > f->start && hdr[f->vend - 1] == '\n')
	f->vend--;
    if (f->vend > f->start && hdr[f->vend - 1] == '\r')
	f->vend--;
    f->name_len = msg_hdr_name(hdr + f->start, f->vend - f->start, &f->colon);
    if (f->name_len == 0)
	f->colon = f->vend;
    else
	f->colon += f->start;
    return (0);
}

/* msg_hdr_find - the unfolded value of the next NAME field; free() it */

char   *msg_hdr_find(const char *hdr, size_t len, const char *name,
		             size_t *pos)
{
    struct msg_field f;
    size_t  nlen = strlen(name), i, o;
    char   *v;

    while (msg_hdr_next(hdr, len, pos, &f) == 0) {
	if (f.name_len != nlen || strncasecmp(hdr + f.start, name, nlen) != 0)
	    continue;
	v = xmalloc(f.vend - f.colon);
	for (o = 0, i = f.colon + 1; i < f.vend; i++) {
	    if (hdr[i] == '\r' && i + 1 < f.vend && hdr[i + 1] == '\n')
		continue;			/* unfold: drop line ends */
	    if (hdr[i] != '\n')
		v[o++] = hdr[i];
	}
	while (o > 0 && (v[o - 1] == ' ' || v[o - 1] == '\t'
			 || v[o - 1] == '\r'))
	    o--;
	v[o] = 0;
	return (v);
    }
    return (NULL);
}

/* msg_hdr_clean - header lines that every parser reads the same way */

size_t  msg_hdr_clean(char *s, size_t n)
{
    size_t  i = 0, o = 0, j, k;
    int     bol = 1;

    while (i < n) {
	/* "Name :" (obsolete syntax) becomes "Name:". */
	if (bol && (j = msg_hdr_name(s + i, n - i, &k)) > 0 && k > j) {
	    memmove(s + o, s + i, j);
	    o += j;
	    i += k;
	}
	/* A CR that does not end a line, and a NUL, become a space. */
	if ((s[i] == '\r' && (i + 1 == n || s[i + 1] != '\n')) || s[i] == 0)
	    s[o] = ' ';
	else
	    s[o] = s[i];
	bol = s[o] == '\n';
	i++;
	o++;
    }
    return (o);
}

/* msg_hdr_put - one complete header line or field (no final line end) */

static void msg_hdr_put(struct msg *m, const char *s, size_t n)
{
    size_t  old = m->hdr.len;

    if (msg_failed(m)) {
	msg_count(m, (off_t) n + 2);
	return;
    }
    if (n > strbuf_room(&m->hdr) || strbuf_room(&m->hdr) - n < 2) {
	/* No partial line; the message is refused anyway. */
	msg_count(m, (off_t) n + 2);
	result_set(&m->error, M365_PERM, "5.6.0",
		   "the message header section is larger than %lu bytes",
		   (unsigned long) STRBUF_MAX_HEADERS);
	return;
    }
    (void) strbuf_append(&m->hdr, s, n);	/* fits, see above */
    (void) strbuf_append(&m->hdr, "\r\n", 2);
    /* Every header byte passes here: one rule for pipe and milter. */
    strbuf_truncate(&m->hdr, old + msg_hdr_clean(m->hdr.data + old,
						 m->hdr.len - old));
    msg_count(m, (off_t) (m->hdr.len - old));
}

/* msg_too_big_result - the 5.3.4 answer; final: size is complete */

static void msg_too_big_result(const struct msg *m, struct m365_result *res,
			               int final)
{
    if (final)
	result_set(res, M365_PERM, "5.3.4",
		   "message size %lld bytes exceeds max_message_size %lld "
		   "(the largest of any account in the configuration; "
		   "Exchange Online takes at most 150 MB): the sender can "
		   "send the attachments as a link or in smaller messages",
		   (long long) m->size, (long long) m->max_size);
    else
	result_set(res, M365_PERM, "5.3.4",
		   "message size exceeds max_message_size %lld (the largest "
		   "of any account in the configuration; %lld bytes so far)",
		   (long long) m->max_size, (long long) m->size);
}

/* msg_status - 0, or -1 with the sticky error or 5.3.4 in res */

static int msg_status(const struct msg *m, struct m365_result *res, int final)
{
    if (msg_failed(m)) {
	*res = m->error;
	return (-1);
    }
    if (msg_too_big(m)) {
	msg_too_big_result(m, res, final);
	return (-1);
    }
    return (0);
}

/* msg_body_start - the header section ends: count the empty line */

static void msg_body_start(struct msg *m)
{
    if (m->state == MSG_ST_HDR) {
	m->state = MSG_ST_BODY;
	msg_count(m, 2);
    }
}

/* msg_order_error - an API call out of order (a bug in the caller) */

static int msg_order_error(const char *what, struct m365_result *res)
{
    result_set(res, M365_SYSTEM, "4.3.0",
	       "internal error: %s called out of order", what);
    return (-1);
}

/* msg_init - start building a message */

void    msg_init(struct msg *m, const char *tmpdir, size_t mem_limit,
		         off_t max_size)
{
    memset(m, 0, sizeof(*m));
    strbuf_init(&m->hdr, STRBUF_MAX_HEADERS);
    strbuf_init(&m->body_mem, mem_limit);
    m->body_fd = -1;
    m->spool_dir = tmpdir && *tmpdir ? xstrdup(tmpdir) : NULL;
    m->mem_limit = mem_limit;
    m->max_size = max_size > 0 ? max_size : 0;
    m->size = 0;				/* + 2 when a body starts */
    m->state = MSG_ST_HDR;
    result_init(&m->error);
}

/* msg_valid_name - a header field name as an MTA may hand it over */

static int msg_valid_name(const char *name)
{
    size_t  n;

    if (name == NULL)
	return (0);
    /* RFC 5322 ftext (printable ASCII but ':'), then optional WSP. */
    for (n = 0; msg_hdr_ftext((unsigned char) name[n]); n++)
	 /* void */ ;
    return (n > 0 && name[n + strspn(name + n, " \t")] == 0);
}

/* msg_add_header - append "name: value" CRLF, folding made CRLF */

int     msg_add_header(struct msg *m, const char *name, const char *value,
		               struct m365_result *res)
{
    struct strbuf line;
    const char *cp, *run;
    int     overflow = 0;

    if (m->state != MSG_ST_HDR)
	return (msg_order_error("msg_add_header()", res));
    if (msg_failed(m))
	return (msg_status(m, res, 0));
    if (value == NULL)
	value = "";
    if (!msg_valid_name(name)) {
	result_set(&m->error, M365_PERM, "5.6.0",
		   "malformed header field name \"%.40s\"", name ? name : "");
	return (msg_status(m, res, 0));
    }
    strbuf_init(&line, STRBUF_MAX_HEADERS + 2);
    (void) strbuf_puts(&line, name);
    (void) strbuf_putc(&line, ':');
    if (*value)
	(void) strbuf_putc(&line, ' ');
    for (cp = value; *cp && !overflow; cp = run) {
	if (*cp != '\r' && *cp != '\n') {
	    run = cp + strcspn(cp, "\r\n");
	    overflow = strbuf_append(&line, cp, (size_t) (run - cp)) < 0;
	    continue;
	}
	run = cp + strspn(cp, "\r\n");
	if (memchr(cp, '\n', (size_t) (run - cp)) == NULL) {
	    /* Lone CR: msg_hdr_put() makes it a space. */
	    overflow = strbuf_append(&line, cp, (size_t) (run - cp)) < 0;
	} else if (*run != 0) {
	    /* A line break: CRLF, and folding white space after it. */
	    overflow = strbuf_append(&line, "\r\n", 2) < 0
		|| (*run != ' ' && *run != '\t'
		    && strbuf_putc(&line, ' ') < 0);
	}
	/* A break at the end of the value is dropped. */
    }
    if (overflow || strbuf_failed(&line)) {
	/* One line beyond the header limit: count it, refuse it. */
	msg_count(m, (off_t) (strlen(name) + strlen(value) + 4));
	result_set(&m->error, M365_PERM, "5.6.0",
		   "the message header section is larger than %lu bytes",
		   (unsigned long) STRBUF_MAX_HEADERS);
    } else {
	msg_hdr_put(m, line.data, line.len);
    }
    strbuf_free(&line);
    return (msg_status(m, res, 0));
}

/* msg_add_body - append a body chunk */

int     msg_add_body(struct msg *m, const void *data, size_t len,
		             struct m365_result *res)
{
    msg_body_start(m);
    if (m->state != MSG_ST_BODY)
	return (msg_order_error("msg_add_body()", res));
    if (!msg_failed(m))
	msg_body_put(m, data, len);
    return (msg_status(m, res, 0));
}

/* msg_finish - complete the message: flush the spool, final checks */

int     msg_finish(struct msg *m, struct m365_result *res)
{
    if (m->state != MSG_ST_HDR && m->state != MSG_ST_BODY)
	return (msg_order_error("msg_finish()", res));
    /* No empty line and no body: nothing follows the header fields. */
    m->hdr_only = m->state == MSG_ST_HDR;
    m->state = MSG_ST_NONE;
    if (m->body_fd >= 0 && !msg_too_big(m))
	(void) msg_spool_flush(m);
    else if (m->tap && m->body_fd < 0 && m->body_mem.len > 0
	     && !msg_failed(m))
	m->tap(m->tap_ctx, m->body_mem.data, m->body_mem.len, 0, NULL);
    free(m->wbuf);
    m->wbuf = NULL;
    m->wlen = 0;
    return (msg_status(m, res, 1));
}

struct msg_stream {
    struct msg *m;
    int     in_hdr;			/* reading header lines */
    int     first_line;			/* no line seen yet */
    off_t   total;			/* raw bytes seen */
    struct strbuf line;			/* current header line */
};

/* msg_header_line - one complete header line (no line end) */

static void msg_header_line(struct msg_stream *r, const char *s, size_t n,
			            int had_lf)
{
    int     first = r->first_line;

    r->first_line = 0;
    if (first && n >= 5 && memcmp(s, "From ", 5) == 0) {
	r->first_line = 1;			/* the next line is first */
	return;
    }
    if (n == 0 && had_lf) {
	r->in_hdr = 0;				/* the empty separator */
	msg_body_start(r->m);
	return;
    }
    if (n == 0)
	return;
    if (msg_hdr_name(s, n, NULL) == 0
	&& (first || (s[0] != ' ' && s[0] != '\t'))) {
	/* Not a header line: the body starts here (like Postfix). */
	r->in_hdr = 0;
	msg_body_start(r->m);
	msg_body_put(r->m, s, n);
	if (had_lf)
	    msg_body_put(r->m, "\n", 1);
	return;
    }
    msg_hdr_put(r->m, s, n);
}

/* msg_header - feed bytes while in the header section */

static size_t msg_header(struct msg_stream *r, const char *p, size_t n)
{
    const char *lf = memchr(p, '\n', n);
    size_t  seg = lf ? (size_t) (lf - p) : n;
    size_t  len;

    if (r->line.len + seg > STRBUF_MAX_HEADERS) {
	/* A line this long cannot fit in the header section anyway. */
	msg_count(r->m, (off_t) (r->line.len + seg));
	if (!msg_failed(r->m))
	    result_set(&r->m->error, M365_PERM, "5.6.0",
		       "the message header section is larger than %lu bytes",
		       (unsigned long) STRBUF_MAX_HEADERS);
	r->in_hdr = 0;				/* count the rest */
	msg_body_start(r->m);
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

/* msg_stream_create - start a message from raw bytes */

struct msg_stream *msg_stream_create(struct msg *m, const char *tmpdir,
				             size_t mem_limit, off_t max_size)
{
    struct msg_stream *r = xmalloc(sizeof(*r));

    msg_init(m, tmpdir, mem_limit, max_size);
    memset(r, 0, sizeof(*r));
    r->m = m;
    r->in_hdr = 1;
    r->first_line = 1;
    strbuf_init(&r->line, STRBUF_MAX_HEADERS + 2);
    return (r);
}

/* msg_stream_put - feed raw message bytes */

void    msg_stream_put(struct msg_stream *r, const char *p, size_t n)
{
    size_t  used;

    r->total += (off_t) n;
    for (used = 0; used < n; /* below */ ) {
	if (r->in_hdr) {
	    used += msg_header(r, p + used, n - used);
	} else {
	    /* After an error or past max_size this only counts. */
	    msg_body_put(r->m, p + used, n - used);
	    used = n;
	}
    }
}

/* msg_stream_free - release the stream (not the message) */

void    msg_stream_free(struct msg_stream *r)
{
    if (r == NULL)
	return;
    free(r->m->wbuf);
    r->m->wbuf = NULL;
    strbuf_free(&r->line);
    free(r);
}

/* msg_stream_finish - the input ended: complete the message, free r */

int     msg_stream_finish(struct msg_stream *r, struct m365_result *res)
{
    int     ret;

    result_init(res);
    if (r->in_hdr && r->line.len > 0) {
	size_t  len = r->line.len;

	if (r->line.data[len - 1] == '\r')
	    len--;
	msg_header_line(r, r->line.data, len, 0);
    }
    if ((ret = msg_finish(r->m, res)) == 0 && r->total == 0) {
	result_set(res, M365_PERM, "5.6.0",
		   "the message is empty (no header and no body)");
	ret = -1;
    }
    msg_stream_free(r);
    return (ret);
}

static int msg_pause_use = 1;			/* msg_read_pauses() */

/*
 * msg_fd_may_pause - may reads from fd pause after a short read?  Only a
 * pipe that holds 1 MB or more (asked for here; a refusal is fine, then
 * reads never pause): in 1 ms a writer at 1 GB/s fills at most that,
 * so it never waits for the pause, and the pause never costs more than
 * 1 ms at the end of the input.
 */
static int msg_fd_may_pause(int fd)
{
    struct stat st;

    if (!msg_pause_use || fstat(fd, &st) < 0 || !S_ISFIFO(st.st_mode))
	return (0);
#if defined(F_SETPIPE_SZ) && defined(F_GETPIPE_SZ)
    (void) fcntl(fd, F_SETPIPE_SZ, MSG_PIPE_SIZE);
    return (fcntl(fd, F_GETPIPE_SZ) >= MSG_PIPE_SIZE);
#else
    return (0);
#endif
}

/* msg_read_pauses - see msg.h */

int     msg_read_pauses(int on)
{
    int     was = msg_pause_use;

    if (on >= 0)
	msg_pause_use = on ? 1 : 0;
    return (was);
}

/* msg_stream_read - feed all that fd gives, then finish the stream */

int     msg_stream_read(struct msg_stream *r, int fd, struct m365_result *res)
{
    char   *buf = xmalloc(MSG_READ_BLOCK);
    struct timespec nap = {0, MSG_PAUSE_NS};
    int     may_pause = msg_fd_may_pause(fd);
    off_t   total = 0;
    ssize_t got;

    result_init(res);
    for (;;) {
	if ((got = read(fd, buf, MSG_READ_BLOCK)) < 0) {
	    if (errno == EINTR)
		continue;
	    result_set(res, M365_SYSTEM, "4.3.0",
		       "cannot read the message from the MTA: %s",
		       strerror(errno));
	    r->m->state = MSG_ST_NONE;
	    msg_stream_free(r);
	    free(buf);
	    return (-1);
	}
	if (got == 0)
	    break;
	msg_stream_put(r, buf, (size_t) got);
	total += got;
	if (may_pause && got < MSG_PAUSE_SHORT && total >= MSG_PAUSE_AFTER)
	    (void) nanosleep(&nap, NULL);	/* EINTR: read at once */
    }
    free(buf);
    return (msg_stream_finish(r, res));
}

/* msg_read - read one message from fd */

int     msg_read(struct msg *m, int fd, const char *tmpdir, off_t max_size,
		         struct m365_result *res)
{
    return (msg_stream_read(msg_stream_create(m, tmpdir, 0, max_size), fd,
			    res));
}

/* msg_tap - see msg.h */

void    msg_tap(struct msg *m, void (*fn) (void *, const char *, size_t,
					           off_t, struct msg_cut *),
		        void (*free_fn) (void *), void *ctx)
{
    m->tap = fn;
    m->tap_free = free_fn;
    m->tap_ctx = ctx;
}

/* msg_hole_at - see msg.h */

const struct msg_hole *msg_hole_at(const struct msg *m, off_t off)
{
    size_t  i;

    for (i = 0; i < m->nholes; i++)
	if (m->holes[i].body_off + m->holes[i].body_len > off)
	    return (m->holes + i);
    return (NULL);
}

/* msg_file_off - see msg.h */

off_t   msg_file_off(const struct msg *m, off_t off)
{
    off_t   shift = 0;
    size_t  i;

    for (i = 0; i < m->nholes && m->holes[i].body_off < off; i++)
	shift += m->holes[i].body_len - m->holes[i].file_len;
    return (off - shift);
}

/* msg_file_read - see msg.h */

ssize_t msg_file_read(const struct msg *m, void *buf, size_t n, off_t off)
{
    size_t  done = 0;
    ssize_t got;

    while (done < n) {
	got = pread(m->body_fd, (char *) buf + done, n - done,
		    off + (off_t) done);
	if (got < 0 && errno == EINTR)
	    continue;
	if (got < 0)
	    return (-1);
	if (got == 0)
	    break;				/* the end of the file */
	done += (size_t) got;
    }
    return ((ssize_t) done);
}

/* msg_body_pread - see msg.h */

ssize_t msg_body_pread(const struct msg *m, void *buf, size_t n, off_t off)
{
    const struct msg_hole *h;

    if (off >= m->body_len)
	return (0);
    if ((off_t) n > m->body_len - off)
	n = (size_t) (m->body_len - off);
    if (m->body_fd < 0) {
	if (m->body_mem.data == NULL)
	    return (0);
	memcpy(buf, m->body_mem.data + off, n);
	return ((ssize_t) n);
    }
    if ((h = msg_hole_at(m, off)) != NULL) {
	if (h->body_off <= off)
	    return (MSG_IN_HOLE);
	if ((off_t) n > h->body_off - off)
	    n = (size_t) (h->body_off - off);
    }
    return (msg_file_read(m, buf, n, msg_file_off(m, off)));
}

/* msg_free - release memory and the spool file; the struct is reset */

void    msg_free(struct msg *m)
{
    if (m == NULL)
	return;
    strbuf_free(&m->hdr);
    strbuf_free(&m->body_mem);
    if (m->body_fd >= 0)
	close(m->body_fd);
    if (m->tap_free)
	m->tap_free(m->tap_ctx);
    free(m->spool_dir);
    free(m->wbuf);
    free(m->holes);
    memset(m, 0, sizeof(*m));
    m->body_fd = -1;
}

 /*
  * Streaming base64 of "hdr + separator + body".
  */
struct msg_src {
    const struct msg *m;
    const char *hdr;
    size_t  hdrlen;
    char    sep[4];			/* CRLF, or CRLF CRLF */
    size_t  seplen;
    const char *body_mem;		/* in-memory body when body_fd < 0 */
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
    /* A header-only message gets no empty line it did not have. */
    if (m->hdr_only && m->body_len == 0)
	s->seplen -= 2;
    s->m = m;
    if (m->body_fd >= 0) {
	s->body_len = m->body_len;
    } else if (m->body_mem.data != NULL) {
	s->body_mem = m->body_mem.data;
	s->body_len = (off_t) m->body_mem.len;
    }
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
	    if (s->m->body_fd < 0) {
		memcpy(out + done, s->body_mem + boff, k);
		s->pos += (off_t) k;
		done += k;
		continue;
	    }
	    got = msg_body_pread(s->m, out + done, k, boff);
	    if (got == MSG_IN_HOLE) {
		/* Never for a message that fits one request (see mime.h). */
		snprintf(s->error, sizeof(s->error), "part of the message "
			 "body was stored decoded (a base64 part of over 4 "
			 "MB), so it cannot go as one request");
		return (-1);
	    }
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
