/*
 * NAME
 *	strbuf 3
 * SUMMARY
 *	growable, binary-safe string buffer with a mandatory cap that
 *	fails closed
 * DESCRIPTION
 *	See strbuf.h.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "strbuf.h"
#include "xalloc.h"

/* strbuf_init - set up an empty buffer with a size limit */

void    strbuf_init(struct strbuf *sb, size_t max)
{
    sb->data = NULL;
    sb->len = 0;
    sb->cap = 0;
    sb->max = max;
    sb->failed = 0;
}

/* strbuf_fail - past the limit: wipe and drop the data, stay failed */

static int strbuf_fail(struct strbuf *sb)
{
    strbuf_cleanse(sb);
    sb->failed = 1;
    errno = EMSGSIZE;
    return (-1);
}

/* strbuf_grow - make room for need more bytes plus the NUL */

static int strbuf_grow(struct strbuf *sb, size_t need)
{
    size_t  want;

    if (sb->failed) {
	errno = EMSGSIZE;
	return (-1);
    }
    if (need > sb->max || sb->len > sb->max - need)
	return (strbuf_fail(sb));
    want = sb->len + need + 1;
    if (want <= sb->cap)
	return (0);
    if (sb->cap == 0)
	sb->cap = 64;
    while (sb->cap < want)
	sb->cap *= 2;
    sb->data = xrealloc(sb->data, sb->cap);
    return (0);
}

/* strbuf_append - append bytes; -1 (EMSGSIZE) past the limit */

int     strbuf_append(struct strbuf *sb, const void *p, size_t n)
{
    if (strbuf_grow(sb, n) < 0)
	return (-1);
    if (n > 0)
	memcpy(sb->data + sb->len, p, n);
    sb->len += n;
    sb->data[sb->len] = 0;
    return (0);
}

/* strbuf_puts - append a C string */

int     strbuf_puts(struct strbuf *sb, const char *s)
{
    return (strbuf_append(sb, s, strlen(s)));
}

/* strbuf_putc - append one byte */

int     strbuf_putc(struct strbuf *sb, int c)
{
    char    ch = (char) c;

    return (strbuf_append(sb, &ch, 1));
}

/* strbuf_vprintf - append formatted text */

int     strbuf_vprintf(struct strbuf *sb, const char *fmt, va_list ap)
{
    va_list ap2;
    int     n;

    va_copy(ap2, ap);
    n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
	return (strbuf_fail(sb));		/* nothing half-formatted */
    if (strbuf_grow(sb, (size_t) n) < 0)
	return (-1);
    vsnprintf(sb->data + sb->len, (size_t) n + 1, fmt, ap);
    sb->len += (size_t) n;
    return (0);
}

/* strbuf_printf - append formatted text */

int     strbuf_printf(struct strbuf *sb, const char *fmt,...)
{
    va_list ap;
    int     ret;

    va_start(ap, fmt);
    ret = strbuf_vprintf(sb, fmt, ap);
    va_end(ap);
    return (ret);
}

/*
 * strbuf_line - append one line (fmt, then "\n") to a list of lines.
 * The last sizeof(STRBUF_LINES_CUT) - 1 bytes under the limit are kept
 * for that note: the first line that does not fit ends the list with it
 * (complete lines only); later lines are dropped.  -1 when the line was
 * not added.
 */
int     strbuf_line(struct strbuf *sb, const char *fmt,...)
{
    static const char cut[] = STRBUF_LINES_CUT;
    const size_t keep = sizeof(cut) - 1;
    va_list ap;
    size_t  end;
    int     n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (sb->failed || n < 0) {
	errno = EMSGSIZE;
	return (-1);
    }
    if (sb->max >= keep && sb->len <= sb->max - keep
	&& (size_t) n < sb->max - keep - sb->len) {
	va_start(ap, fmt);
	(void) strbuf_vprintf(sb, fmt, ap);	/* fits, see above */
	va_end(ap);
	return (strbuf_putc(sb, '\n'));
    }
    if (sb->len < keep || memcmp(sb->data + sb->len - keep, cut, keep) != 0) {
	if (sb->len + keep > sb->max) {
	    /* Other appends used the room: drop whole lines for the note. */
	    end = sb->max >= keep ? sb->max - keep : 0;
	    while (end > 0 && sb->data[end - 1] != '\n')
		end--;
	    strbuf_truncate(sb, end);
	}
	(void) strbuf_append(sb, cut, keep);
    }
    errno = EMSGSIZE;
    return (-1);
}

/* strbuf_failed - did an append not fit (the data is gone)? */

int     strbuf_failed(const struct strbuf *sb)
{
    return (sb->failed);
}

/* strbuf_room - how many more bytes fit (0 once failed) */

size_t  strbuf_room(const struct strbuf *sb)
{
    return (sb->failed || sb->len >= sb->max ? 0 : sb->max - sb->len);
}

/* strbuf_str - the text, never NULL ("" when empty or failed) */

const char *strbuf_str(const struct strbuf *sb)
{
    return (sb->data ? sb->data : "");
}

/* strbuf_log_str - the text for a person: STRBUF_NOT_SHOWN once failed */

const char *strbuf_log_str(const struct strbuf *sb)
{
    return (sb->failed ? STRBUF_NOT_SHOWN : strbuf_str(sb));
}

/* strbuf_reset - empty the buffer, keep the memory; start over */

void    strbuf_reset(struct strbuf *sb)
{
    strbuf_truncate(sb, 0);
    sb->failed = 0;
}

/* strbuf_truncate - shorten to len bytes */

void    strbuf_truncate(struct strbuf *sb, size_t len)
{
    if (len < sb->len) {
	sb->len = len;
	sb->data[len] = 0;
    }
}

/* strbuf_take - the data for the caller (free() it), NULL once failed */

char   *strbuf_take(struct strbuf *sb)
{
    char   *p;

    if (sb->failed) {
	sb->failed = 0;
	return (NULL);
    }
    p = sb->data ? sb->data : xstrdup("");
    sb->data = NULL;
    sb->len = sb->cap = 0;
    return (p);
}

/* strbuf_free - release the memory; start over */

void    strbuf_free(struct strbuf *sb)
{
    free(sb->data);
    sb->data = NULL;
    sb->len = sb->cap = 0;
    sb->failed = 0;
}

/* strbuf_cleanse - wipe, then release (for secrets); start over */

void    strbuf_cleanse(struct strbuf *sb)
{
    if (sb->data)
	OPENSSL_cleanse(sb->data, sb->cap);
    strbuf_free(sb);
}
