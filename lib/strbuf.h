/*
 * NAME
 *	strbuf 3h
 * SUMMARY
 *	growable, binary-safe string buffer with a mandatory cap that
 *	fails closed
 * SYNOPSIS
 *	#include "strbuf.h"
 * DESCRIPTION
 *	Every buffer that holds foreign data (HTTP bodies, JSON, headers,
 *	URLs, forms, command lines) is a struct strbuf with a named
 *	maximum size.  The data is always NUL-terminated (the NUL is not
 *	counted in len), so text users can read sb->data directly; data
 *	is NULL while nothing was appended.
 *
 *	Overflow is sticky (like curl's dynbuf).  The first append that
 *	does not fit wipes and frees what the buffer held (it may be a
 *	secret), marks the buffer failed and returns -1 with errno =
 *	EMSGSIZE; every later append fails at once the same way.  So a
 *	builder may ignore the result of each append and check once, at
 *	the end, with strbuf_failed(): nothing cut short can be used as
 *	if it were complete.  Of a failed buffer strbuf_str() is "",
 *	strbuf_take() is NULL and len is 0: a builder that returns
 *	strbuf_take() returns NULL when its result would be too long, and
 *	its callers must treat NULL as "not built" (never send, store or
 *	use it).  strbuf_reset(), strbuf_take(), strbuf_free() and
 *	strbuf_cleanse() start over with an empty, usable buffer.
 *
 *	strbuf_room() is how many bytes still fit; readers that keep the
 *	first part of an oversized input on purpose (a header scan) read
 *	at most that much instead of failing.
 *
 *	Text for people may be cut, but must say so.  strbuf_log_str() is
 *	the text of a buffer for a log record or a message: for a failed
 *	buffer it is STRBUF_NOT_SHOWN.  strbuf_line() appends one line
 *	(a "\n" is added) to a list of lines such as configuration
 *	errors; a line that no longer fits ends the list with
 *	STRBUF_LINES_CUT instead (once), so the list keeps its first lines
 *	and never fails.
 *
 *	strbuf_free() releases the memory; strbuf_cleanse() overwrites it
 *	first (for secrets).  strbuf_take() hands the data to the caller,
 *	who must free() it, and leaves the buffer empty.
 * DIAGNOSTICS
 *	Appends return 0, or -1 with errno = EMSGSIZE (over the cap now or
 *	before).  Out of memory is handled by xmalloc() (see util.h).
 */
#ifndef M365_STRBUF_H
#define M365_STRBUF_H

#include <stddef.h>
#include <stdarg.h>

/* Named limits, one per use. */
#define STRBUF_MAX_JSON		(4UL * 1024 * 1024)	/* Graph/OAuth reply */
#define STRBUF_MAX_HEADERS	(1UL * 1024 * 1024)	/* message header */
#define STRBUF_MAX_LINE		(64UL * 1024)		/* one text line */
#define STRBUF_MAX_SMALL	(16UL * 1024)		/* URLs, forms */

/* What people see instead of a text that did not fit. */
#define STRBUF_NOT_SHOWN	"(too long to show)"
#define STRBUF_LINES_CUT	"... (more lines not shown: over the size limit)\n"

struct strbuf {
    char   *data;			/* NUL-terminated, or NULL */
    size_t  len;			/* bytes used, without the NUL */
    size_t  cap;			/* bytes allocated */
    size_t  max;			/* hard limit for len */
    int     failed;			/* an append did not fit: data gone */
};

extern void strbuf_init(struct strbuf *, size_t max);
extern int strbuf_append(struct strbuf *, const void *, size_t);
extern int strbuf_puts(struct strbuf *, const char *);
extern int strbuf_putc(struct strbuf *, int);
extern int strbuf_printf(struct strbuf *, const char *,...)
	    __attribute__((format(printf, 2, 3)));
extern int strbuf_vprintf(struct strbuf *, const char *, va_list)
	    __attribute__((format(printf, 2, 0)));
extern int strbuf_line(struct strbuf *, const char *,...)
	    __attribute__((format(printf, 2, 3)));
extern int strbuf_failed(const struct strbuf *);
extern size_t strbuf_room(const struct strbuf *);
extern const char *strbuf_str(const struct strbuf *);
extern const char *strbuf_log_str(const struct strbuf *);
extern void strbuf_reset(struct strbuf *);
extern void strbuf_truncate(struct strbuf *, size_t);
extern char *strbuf_take(struct strbuf *);
extern void strbuf_free(struct strbuf *);
extern void strbuf_cleanse(struct strbuf *);

#endif
