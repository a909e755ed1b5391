/*
 * NAME
 *	msg 3h
 * SUMMARY
 *	read one message, spool its body, stream it base64-encoded
 * SYNOPSIS
 *	#include "msg.h"
 * DESCRIPTION
 *	msg_read() reads an RFC 5322 message from fd (the MTA's pipe):
 *	the header section into memory (at most STRBUF_MAX_HEADERS), the
 *	body into an unlinked temporary file in tmpdir (always; body_fd is
 *	-1 only for an empty body), so memory does not grow with the
 *	message size.  Line ends are made CRLF on the way
 *	(Postfix and Sendmail hand over LF; where the CPU has AVX2, 32
 *	bytes at a time: msg_lf_simd() reports whether, and switches it, 0
 *	off, 1 on where the CPU can, -1 only asks, for the tests, which
 *	compare both ways).  A leading "From " line
 *	(mbox style) is dropped.  A message larger than max_size bytes
 *	(canonical form) is read to the end and then refused with 5.3.4.
 *
 *	Every header line, from msg_read() or msg_add_header(), goes
 *	through msg_hdr_clean() before it is stored: Graph takes the
 *	recipients from the header, so a header line must read the same
 *	to the relay as to Exchange.  msg_hdr_clean() works in place on
 *	whole header lines (LF or CRLF line ends) and returns the new
 *	length: a CR that is not followed by LF and a NUL become a space
 *	(Exchange may end a line at a bare CR, a C string ends at NUL;
 *	the relay splits lines at LF only), and white space between a
 *	field name and its colon (obsolete syntax, RFC 5322 section 4.5)
 *	is removed, so "To : x" is a To field for every reader.  LF, CRLF
 *	and all other bytes are kept.
 *
 *	A struct msg_src streams "header + CRLF + body" (the body from
 *	body_fd, or from body_mem when body_fd is -1; a header-only
 *	message, one with neither an empty line nor a body, is streamed
 *	without the CRLF, hdr_only is then set) base64-encoded
 *	(no line breaks) to libcurl: msg_src_read() has the signature of
 *	CURLOPT_READFUNCTION, msg_src_rewind() starts over (a retry after
 *	401), msg_src_length() is the exact encoded length.  hdr may be a
 *	rewritten header section (see rcpt.h); it and the message must
 *	outlive the msg_src.  When msg_src_read() returns
 *	CURL_READFUNC_ABORT, msg_src_error() says why.
 * DIAGNOSTICS
 *	msg_read() fills res: 5.3.4 (too large), 5.6.0 (empty input,
 *	header section too large), 4.3.0 (local I/O trouble).  Input
 *	without header fields is accepted as a body with an empty header
 *	section.  Call msg_free() after msg_read(), also after a failure.
 */
#ifndef M365_MSG_H
#define M365_MSG_H

#include <stddef.h>
#include <sys/types.h>

#include "status.h"
#include "strbuf.h"

/*
 * Content stored in another form (see msg_tap()): the canonical body
 * bytes [body_off, body_off + body_len) are not in the spool file; the
 * file_len bytes at file_off stand for them (mime.c: a base64 part,
 * decoded).  aux is the producer's state at the end of the hole.
 */
struct msg_hole {
    off_t   body_off;			/* body offset of the first byte */
    off_t   body_len;			/* body bytes it stands for */
    off_t   file_off;			/* spool file offset of what is stored */
    off_t   file_len;			/* bytes stored there */
    int     aux[4];
};

/* What a tap may ask for one block: store data instead of [from, to). */
struct msg_cut {
    size_t  from, to;			/* block bytes not stored (to > from) */
    const char *data;			/* stored in their place */
    size_t  len;
    int     aux[4];			/* copied to the hole */
};

struct msg {
    struct strbuf hdr;			/* header section, CRLF, no blank line */
    struct strbuf body_mem;		/* body while under mem_limit */
    int     body_fd;			/* spooled body (CRLF), -1 if none */
    off_t   body_len;			/* body bytes (canonical: memory, file
					 * and holes) */
    off_t   file_len;			/* bytes in body_fd */
    struct msg_hole *holes;		/* in body order; none in memory */
    size_t  nholes;
    off_t   size;			/* hdr [+ CRLF + body] */
    int     hdr_only;			/* no empty line, no body: none sent */
    /* Private to msg.c: construction state, released by msg_free(). */
    char   *spool_dir;			/* tmpdir copy; the one used once spooled */
    size_t  mem_limit;			/* body bytes kept in memory at most */
    off_t   max_size;			/* 0: no limit */
    int     state;			/* building: header, body, finished */
    int     last_cr;			/* the last body byte was CR */
    char   *wbuf;			/* spool write buffer */
    size_t  wlen;
    size_t  wcap;			/* its size */
    off_t   spooled;			/* body bytes handed to the tap */
    struct m365_result error;		/* first hard error (sticky) */
    /* The tap (msg_tap()): sees every stored body byte once, in order. */
    void    (*tap) (void *ctx, const char *p, size_t n, off_t off,
		            struct msg_cut *cut);
    void    (*tap_free) (void *ctx);
    void   *tap_ctx;
};

extern int msg_read(struct msg *, int fd, const char *tmpdir, off_t max_size,
		            struct m365_result *res);
extern size_t msg_hdr_clean(char *, size_t);
extern void msg_free(struct msg *);
extern int msg_lf_simd(int on);

/*
 * The header field scanner, the one every module uses (msg_read(), the
 * recipient rewrite of rcpt.c, m365-fetch's header checks), so all read
 * fields the way msg_hdr_clean() writes them.
 *
 * msg_hdr_name() - the length of the field name that the line s (n
 * bytes) starts: RFC 5322 ftext, then optional white space (obsolete
 * "Name :"), then the colon, whose offset goes to *colon_r (may be
 * NULL).  0 when the line starts no field.
 *
 * msg_hdr_next() - the field of a header section hdr (len bytes, LF or
 * CRLF line ends) that starts at *pos: its first line and the lines
 * after it that start with a space or tab.  0 with f filled and *pos
 * moved past the field, -1 at the end.  f->name_len is 0 for a line
 * that starts no field; colon is then vend.
 *
 * msg_hdr_find() - the value of the next NAME field (any case) at or
 * after *pos, unfolded (line ends removed, the white space after them
 * kept), without trailing white space; *pos is moved past it.  NULL
 * when there is none.  free() the result.
 */
struct msg_field {
    size_t  start;			/* first byte of the field */
    size_t  name_len;			/* length of its name; 0: none */
    size_t  colon;			/* offset of the colon, or vend */
    size_t  vend;			/* end of the value, no line end */
    size_t  end;			/* end, line end included */
};

extern size_t msg_hdr_name(const char *s, size_t n, size_t *colon_r);
extern int msg_hdr_next(const char *hdr, size_t len, size_t *pos,
			        struct msg_field *f);
extern char *msg_hdr_find(const char *hdr, size_t len, const char *name,
			          size_t *pos);

/*
 * Incremental construction (the milter): msg_init(), then headers in
 * order, then body chunks (already CRLF, as libmilter hands them over;
 * a bare LF still becomes CRLF), then msg_finish().  The body stays in
 * memory (body_mem, body_fd == -1) while it fits in mem_limit bytes and
 * moves to an unlinked temporary file in tmpdir (NULL or "": $TMPDIR,
 * else /tmp; mode 0600, close-on-exec) beyond it; body_mem is then
 * empty.  Memory stays below mem_limit + 1 MB (the spool buffer; 64 KB
 * until 1 MB is spooled), plus what a tap holds (mime_watch(): at most
 * 2 MB of decoded bytes), whatever the message size.  tmpdir is
 * copied.
 *
 * msg_add_header() stores "name: value" CRLF; line breaks inside value
 * ("\n", "\r\n" before the folding white space) become CRLF, a break
 * at the end of value is dropped, and a break not followed by white
 * space gets one space (so value can never end the header section or
 * start a field); a lone CR becomes a space (msg_hdr_clean()).  An
 * empty value gives "name:"; white space after name is dropped.
 *
 * Each call returns 0, or -1 with res filled: 4.3.0 on local I/O
 * trouble, 5.6.0 for a header section over STRBUF_MAX_HEADERS or a
 * malformed field name, 4.3.0 for calls out of order.  Past max_size
 * (0: no limit; canonical size hdr + 2 + body, the 2 counted once a
 * body starts) every call returns -1
 * with 5.3.4, but keeps counting and stops storing (the stored body is
 * dropped); msg_finish() then reports 5.3.4 with the final size.  After
 * a successful msg_finish(), size == hdr.len + 2 + body_len (hdr.len
 * when hdr_only: no msg_add_body() call, no body) and the body is in
 * body_mem or body_fd, ready for msg_src_create().  Call
 * msg_free() in every case; msg_init() may follow it for the next
 * message.
 */
extern void msg_init(struct msg *, const char *tmpdir, size_t mem_limit,
		             off_t max_size);
extern int msg_add_header(struct msg *, const char *name, const char *value,
			          struct m365_result *res);
extern int msg_add_body(struct msg *, const void *data, size_t len,
			        struct m365_result *res);
extern int msg_finish(struct msg *, struct m365_result *res);

/*
 * msg_tap() - after msg_init() (or msg_stream_create()), before the
 * body: fn sees the canonical body bytes as they are stored, each byte
 * once and in order, off being the body offset of p[0] (a spooled body
 * in the blocks written to the file, an in-memory body at
 * msg_finish()); when the body is dropped (past max_size) off starts
 * at 0 again.  So a reader of the body (the MIME parser) needs no
 * second pass over the spool.  msg_free() calls free_fn(ctx).
 *
 * For a block on its way to the spool file cut is not NULL, and fn may
 * fill it (cut->to > cut->from): the block bytes [from, to) are then
 * not written; cut->len bytes of cut->data are, in their place (one
 * cut per block).  That makes or extends a hole (struct msg_hole; a
 * cut at the start of a block that goes on from where the last hole
 * ended extends it).  body_len stays the canonical length; file_len
 * is what the file holds.  An in-memory body never has holes.
 *
 * msg_body_pread() - up to n canonical body bytes at body offset off
 * (memory or spool file), stopping before a hole: their number (fewer
 * only when the file is shorter than the body says; 0 at the end of
 * the body), MSG_IN_HOLE when off is inside a hole, -1 on a read error
 * (errno).  msg_hole_at() - the first hole that ends after off (NULL:
 * none).  msg_file_off() - the spool file offset of body offset off
 * (not inside a hole).  msg_file_read() - up to n bytes of the spool
 * file as it is, holes and all, at file offset off: their number
 * (fewer only at the end of the file), -1 on a read error (errno).
 */
#define MSG_IN_HOLE	(-2)

extern void msg_tap(struct msg *, void (*fn) (void *, const char *, size_t,
					              off_t, struct msg_cut *),
		            void (*free_fn) (void *), void *ctx);
extern ssize_t msg_body_pread(const struct msg *, void *buf, size_t n,
			              off_t off);
extern const struct msg_hole *msg_hole_at(const struct msg *, off_t off);
extern off_t msg_file_off(const struct msg *, off_t off);
extern ssize_t msg_file_read(const struct msg *, void *buf, size_t n,
			             off_t off);

/*
 * Raw bytes from any source (msg_read() is this over a pipe; the LMTP
 * server's DATA after dot-unstuffing): msg_stream_create() calls
 * msg_init() (mem_limit: body bytes kept in memory before the body is
 * spooled, 0 for always), msg_stream_put() takes the message in chunks
 * of any size exactly as msg_read() takes it from its fd (LF or CRLF,
 * a leading "From " line dropped, header section to hdr, body to
 * memory or the spool), msg_stream_finish() ends the input, frees the
 * stream and returns 0 or -1 with res as msg_read() does (5.3.4, 5.6.0,
 * 4.3.0).  msg_stream_free() drops a stream that is not finished (the
 * message still needs msg_free()).  msg_stream_read() feeds everything
 * fd gives until its end and then finishes the stream (msg_read() is
 * msg_stream_create() and msg_stream_read(); between them msg_tap()
 * may be called); from a pipe it pauses 1 ms after a short read once
 * 1 MB is in (see msg.c).  msg_read_pauses() switches those pauses (0
 * off, 1 on, -1 only asks) and returns what was set: for the tests.
 */
struct msg_stream;

extern struct msg_stream *msg_stream_create(struct msg *, const char *tmpdir,
					            size_t mem_limit,
					            off_t max_size);
extern void msg_stream_put(struct msg_stream *, const char *, size_t);
extern int msg_stream_read(struct msg_stream *, int fd,
			           struct m365_result *res);
extern int msg_stream_finish(struct msg_stream *, struct m365_result *res);
extern int msg_read_pauses(int on);
extern void msg_stream_free(struct msg_stream *);

struct msg_src;

extern struct msg_src *msg_src_create(const struct strbuf *hdr,
				              const struct msg *);
extern size_t msg_src_read(char *buf, size_t size, size_t nitems, void *src);
extern int msg_src_rewind(struct msg_src *);
extern long long msg_src_length(const struct msg_src *);
extern const char *msg_src_error(const struct msg_src *);
extern void msg_src_free(struct msg_src *);

#endif
