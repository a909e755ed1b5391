/*
 * NAME
 *	strbuf 3
 * SUMMARY
 *	growable, binary-safe string buffer with a mandatory cap
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
#include "util.h"

/* strbuf_init - set up an empty buffer with a size limit */

void    strbuf_init(struct strbuf *sb, size_t max)
{
    sb->data = NULL;
    sb->len = 0;
    sb->cap = 0;
    sb->max = max;
}

/* strbuf_grow - make room for need more bytes plus the NUL */

static int strbuf_grow(struct strbuf *sb, size_t need)
{
    size_t  want;

    if (need > sb->max || sb->len > sb->max - need) {
	errno = EMSGSIZE;
	return (-1);
    }
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
	return (-1);
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

/* strbuf_str - the text, never NULL */

const char *strbuf_str(const struct strbuf *sb)
{
    return (sb->data ? sb->data : "");
}

/* strbuf_reset - empty the buffer, keep the memory */

void    strbuf_reset(struct strbuf *sb)
{
    strbuf_truncate(sb, 0);
}

/* strbuf_truncate - shorten to len bytes */

void    strbuf_truncate(struct strbuf *sb, size_t len)
{
    if (len < sb->len) {
	sb->len = len;
	sb->data[len] = 0;
    }
}

/* strbuf_take - hand the data to the caller (free() it); buffer empty */

char   *strbuf_take(struct strbuf *sb)
{
    char   *p = sb->data ? sb->data : xstrdup("");

    sb->data = NULL;
    sb->len = sb->cap = 0;
    return (p);
}

/* strbuf_free - release the memory */

void    strbuf_free(struct strbuf *sb)
{
    free(sb->data);
    sb->data = NULL;
    sb->len = sb->cap = 0;
}

/* strbuf_cleanse - wipe, then release (for secrets) */

void    strbuf_cleanse(struct strbuf *sb)
{
    if (sb->data)
	OPENSSL_cleanse(sb->data, sb->cap);
    strbuf_free(sb);
}
