/*
 * NAME
 *	xalloc 3
 * SUMMARY
 *	memory allocation that succeeds or does not return
 * DESCRIPTION
 *	See xalloc.h.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "xalloc.h"

/* xalloc_default_oom - tell the MTA to try again later, then exit */

static void xalloc_default_oom(void)
{
    static const char text[] = "4.3.0 out of memory\n";

    if (write(STDOUT_FILENO, text, sizeof(text) - 1) < 0) {
	/* Nothing else to try. */
    }
    _exit(EX_TEMPFAIL);
}

static void (*xalloc_oom_hook) (void) = xalloc_default_oom;

void    xalloc_set_oom_hook(void (*hook) (void))
{
    xalloc_oom_hook = hook ? hook : xalloc_default_oom;
}

void   *xmalloc(size_t n)
{
    void   *p = malloc(n ? n : 1);

    if (p == NULL)
	xalloc_oom_hook();
    return (p);
}

void   *xcalloc(size_t n, size_t size)
{
    void   *p = calloc(n ? n : 1, size ? size : 1);

    if (p == NULL)
	xalloc_oom_hook();
    return (p);
}

void   *xrealloc(void *old, size_t n)
{
    void   *p = realloc(old, n ? n : 1);

    if (p == NULL)
	xalloc_oom_hook();
    return (p);
}

char   *xstrdup(const char *s)
{
    return (xstrndup(s, strlen(s)));
}

char   *xstrndup(const char *s, size_t n)
{
    char   *p = xmalloc(n + 1);

    memcpy(p, s, n);
    p[n] = 0;
    return (p);
}

/* xalloc_fail - report out of memory found outside x*alloc() (libcurl) */

void    xalloc_fail(void)
{
    xalloc_oom_hook();
}

/* xfree_secret - wipe a secret string, then free it */

void    xfree_secret(char *s)
{
    if (s) {
	OPENSSL_cleanse(s, strlen(s));
	free(s);
    }
}
