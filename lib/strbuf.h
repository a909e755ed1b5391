/*
 * NAME
 *	strbuf 3h
 * SUMMARY
 *	growable, binary-safe string buffer with a mandatory cap
 * SYNOPSIS
 *	#include "strbuf.h"
 * DESCRIPTION
 *	Every buffer that holds foreign data (HTTP bodies, JSON, headers)
 *	is a struct strbuf with a named maximum size.  Appending past the
 *	maximum fails with -1 and errno = EMSGSIZE; the buffer keeps what
 *	it had.  The data is always NUL-terminated (the NUL is not counted
 *	in len), so text users can read sb->data directly.
 *
 *	strbuf_free() releases the memory; strbuf_cleanse() overwrites it
 *	first (for secrets).  strbuf_take() hands the data to the caller,
 *	who must free() it, and leaves the buffer empty.
 * DIAGNOSTICS
 *	Out of memory is handled by xmalloc() (see util.h).
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

struct strbuf {
    char   *data;			/* NUL-terminated, or NULL */
    size_t  len;			/* bytes used, without the NUL */
    size_t  cap;			/* bytes allocated */
    size_t  max;			/* hard limit for len */
};

extern void strbuf_init(struct strbuf *, size_t max);
extern int strbuf_append(struct strbuf *, const void *, size_t);
extern int strbuf_puts(struct strbuf *, const char *);
extern int strbuf_putc(struct strbuf *, int);
extern int strbuf_printf(struct strbuf *, const char *,...)
	    __attribute__((format(printf, 2, 3)));
extern int strbuf_vprintf(struct strbuf *, const char *, va_list)
	    __attribute__((format(printf, 2, 0)));
extern const char *strbuf_str(const struct strbuf *);
extern void strbuf_reset(struct strbuf *);
extern void strbuf_truncate(struct strbuf *, size_t);
extern char *strbuf_take(struct strbuf *);
extern void strbuf_free(struct strbuf *);
extern void strbuf_cleanse(struct strbuf *);

#endif
