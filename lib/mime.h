/*
 * NAME
 *	mime 3h
 * SUMMARY
 *	streaming MIME structure parser, transfer decoding, RFC 2047/2231
 * SYNOPSIS
 *	#include "mime.h"
 * DESCRIPTION
 *	mime_parse() reads the structure of a message read by msg.h (the
 *	header section in memory, the body in memory or in its spool
 *	file) in one pass over the body, 64 KB at a time: memory does not
 *	grow with the message, only with the number of parts (at most
 *	MIME_MAX_PARTS, nested at most MIME_MAX_DEPTH deep; a part header
 *	is read up to MIME_MAX_PART_HEADER bytes).  The result is a list
 *	of parts in document order (a container before its children):
 *	parts[0] is the message itself (its header: the message's header
 *	section), every other part has the index of its enclosing
 *	multipart in parent.  Offsets are body offsets (0: the first byte
 *	after the empty line that ends the message header):
 *
 *	  start        the first byte of the part's delimiter line
 *	               ("--boundary"); 0 for the message;
 *	  body_start   the first byte of the part's content (after the
 *	               empty line that ends its header);
 *	  body_end     one past its last content byte: the line end
 *	               before the next delimiter belongs to the delimiter
 *	               (RFC 2046 section 5.1.1).
 *
 *	For each part: type ("type/subtype", lower case; text/plain when
 *	absent or unreadable, message/rfc822 inside multipart/digest),
 *	charset, transfer encoding, disposition, the file name (from
 *	Content-Disposition filename, else Content-Type name; RFC 2231
 *	continuations and charsets and RFC 2047 encoded words decoded,
 *	converted to UTF-8, control characters and any directory part
 *	removed), Content-ID (without angle brackets), and for a multipart
 *	its boundary.  A multipart without a usable boundary and every
 *	message/rfc822 part are leaves (a forwarded message is one part,
 *	never taken apart).  A delimiter of an outer multipart ends the
 *	inner ones (RFC 2046); a missing close delimiter or a message cut
 *	short ends every open part at the end of the body.
 *
 *	mime_watch(), called after msg_init() or msg_stream_create() and
 *	before the body, makes the same parse while the body is stored
 *	(through msg_tap(): no second pass over the spool); mime_parse()
 *	then hands out that result, unless the header section changed
 *	since, in which case it reads the body again.  A parse that saw
 *	the whole content of a base64 leaf also counts its decoded size
 *	(size_known, decoded_size).
 *
 *	The watch also stores large base64 parts decoded: once a base64
 *	leaf has more than mime_store_decoded_after() content bytes
 *	(MIME_STORE_DECODED_AFTER, 4 MB: the message is then far over one
 *	sendMail request and goes through a draft, which wants the part
 *	decoded), it decodes the rest of the part on the way and has
 *	msg.c store that instead (a struct msg_hole; the part gets
 *	stored_decoded).  The hole starts at a line start on a quantum
 *	boundary and ends before the first line that starts with "-" (a
 *	possible delimiter; base64 has none), or at the end of the body;
 *	the rest of the part is stored as it is.  mime_stream_read() of
 *	such a part gives the same bytes (the stored ones copied, the
 *	decoder going on from its state at the end of the hole); a part
 *	that is not base64 over a hole, and a raw read of it
 *	(msg_body_pread(), msg_src_read()), fail instead of giving other
 *	bytes.  mime_parse() after a header change goes past a hole as
 *	the watch did.  mime_store_decoded_after() sets the threshold
 *	for the messages read after it and returns the old one (tests).
 *
 *	mime_stream_open() reads the content of one part, decoded
 *	(base64, quoted-printable; 7bit, 8bit and binary as they are),
 *	from the body: a spooled body through a window of 4 MB mapped
 *	from the file (pread() where mmap() fails).  mime_stream_window()
 *	sets the window for the streams opened after it (rounded up to
 *	whole pages; 0: pread() only, 64 KB at a time) and returns the
 *	old size (for the tests).  mime_decoded_size() is the size the
 *	parse counted, else a whole pass that only counts, so a caller
 *	knows the exact size before it sends the bytes.  struct mime_dec
 *	is the decoder itself: mime_dec_update() takes any number of
 *	bytes (the input may be cut anywhere) and writes at most n +
 *	MIME_DEC_SLACK bytes;
 *	mime_dec_final() flushes what is pending (a base64 quantum
 *	without padding, a quoted-printable "=" without two hex digits:
 *	kept as it is).  Base64 skips every byte outside the alphabet;
 *	quoted-printable removes soft line breaks and the white space at
 *	the end of a line (RFC 2045 section 6.7).  Where the CPU has
 *	SSSE3 (x86-64, checked at run time) base64 is decoded sixteen
 *	bytes at a time, where it has AVX2 thirty-two; the result is the
 *	same.  mime_dec_simd() reports which is in use (0 none, 1 SSSE3,
 *	2 AVX2) and sets the most that may be used (the CPU permitting);
 *	-1 only asks (for the tests, which compare every way).
 *
 *	Text helpers (results malloc()ed, valid UTF-8):
 *	mime_words() decodes RFC 2047 encoded words in a header value
 *	(adjacent words joined; words of one charset converted together,
 *	so a character split between two words survives);
 *	mime_to_utf8() converts text in a charset to UTF-8 (iconv; bytes
 *	that do not convert, and an unknown charset, give U+FFFD, except
 *	that text which already is valid UTF-8 is kept);
 *	mime_param() returns one parameter of a structured header value
 *	(Content-Type, Content-Disposition), RFC 2231 aware (name*=,
 *	name*0*=, name*1= ...), converted to UTF-8; NULL when absent.
 * DIAGNOSTICS
 *	mime_parse() returns 0, or -1 with err set: a body that cannot be
 *	read (4.3.0 trouble) or a structure over the limits (the parts
 *	found so far stay in the struct; mime->over_limit is set).
 *	mime_stream_read() returns -1 on a read error, with
 *	mime_stream_error() saying why.
 */
#ifndef M365_MIME_H
#define M365_MIME_H

#include <stddef.h>
#include <sys/types.h>

#include "msg.h"

#define MIME_MAX_PARTS		1000
#define MIME_MAX_DEPTH		20
#define MIME_MAX_PART_HEADER	(64 * 1024)
#define MIME_TYPE_MAX		128
#define MIME_NAME_MAX		255	/* bytes of a decoded file name */
#define MIME_DEC_SLACK		260	/* decoder output beyond its input */
#define MIME_STORE_DECODED_AFTER (4 * 1024 * 1024)	/* base64 content */

enum mime_cte {
    MIME_CTE_IDENTITY = 0,		/* 7bit, 8bit, binary, none */
    MIME_CTE_BASE64 = 1,
    MIME_CTE_QP = 2,			/* quoted-printable */
    MIME_CTE_UNKNOWN = 3,		/* x-uuencode ...: not decodable */
};

enum mime_disp {
    MIME_DISP_NONE = 0,
    MIME_DISP_INLINE = 1,
    MIME_DISP_ATTACHMENT = 2,
};

struct mime_part {
    int     parent;			/* index of the enclosing multipart; -1 */
    int     depth;			/* 0: the message */
    off_t   start;			/* its delimiter line (body offset) */
    off_t   body_start;			/* first content byte */
    off_t   body_end;			/* one past the last content byte */
    char    type[MIME_TYPE_MAX];	/* "text/plain", lower case */
    char   *charset;			/* lower case, or NULL */
    enum mime_cte cte;
    enum mime_disp disp;
    int     multipart;			/* a container with a boundary */
    char   *boundary;			/* multipart only */
    char   *name;			/* decoded file name, or NULL */
    char   *content_id;			/* without <>, or NULL */
    int     closed;			/* multipart: close delimiter seen */
    int     ended;			/* body_end is known */
    int     size_known;			/* base64: decoded_size counted */
    off_t   decoded_size;
    int     stored_decoded;		/* content partly in a msg_hole */
};

struct mime {
    struct mime_part *parts;
    size_t  nparts;
    size_t  cap;
    int     over_limit;			/* too many parts, too deep */
};

extern int mime_parse(struct mime *, const struct msg *, char *err,
		              size_t errlen);
extern void mime_free(struct mime *);
extern void mime_watch(struct msg *);
extern int mime_is(const struct mime_part *, const char *type);
extern int mime_is_multipart(const struct mime_part *, const char *subtype);

struct mime_dec {
    enum mime_cte cte;
    unsigned int acc;			/* base64: bits collected */
    int     nacc;			/* base64: sextets in acc */
    int     qp;				/* quoted-printable state */
    unsigned char qp_hex;		/* the first hex digit after "=" */
    unsigned char ws[256];		/* white space not yet known to be
					 * at the end of a line */
    size_t  nws;
};

extern void mime_dec_init(struct mime_dec *, enum mime_cte);
extern size_t mime_dec_update(struct mime_dec *, const unsigned char *in,
			              size_t n, unsigned char *out);
extern size_t mime_dec_final(struct mime_dec *, unsigned char *out);
extern int mime_dec_simd(int on);

struct mime_stream;

extern struct mime_stream *mime_stream_open(const struct msg *,
					            const struct mime_part *);
extern ssize_t mime_stream_read(struct mime_stream *, void *buf, size_t n);
extern void mime_stream_rewind(struct mime_stream *);
extern const char *mime_stream_error(const struct mime_stream *);
extern void mime_stream_close(struct mime_stream *);
extern size_t mime_stream_window(size_t bytes);
extern off_t mime_store_decoded_after(off_t bytes);
extern int mime_decoded_size(const struct msg *, const struct mime_part *,
			             off_t *size, char *err, size_t errlen);
extern ssize_t mime_body_read(const struct msg *, void *buf, size_t n,
			              off_t off);

extern char *mime_words(const char *s, size_t n);
extern char *mime_to_utf8(const char *charset, const char *s, size_t n);
extern char *mime_param(const char *value, const char *name);

#endif
