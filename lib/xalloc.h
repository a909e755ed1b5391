/*
 * NAME
 *	xalloc 3h
 * SUMMARY
 *	memory allocation that succeeds or does not return
 * SYNOPSIS
 *	#include "xalloc.h"
 * DESCRIPTION
 *	x*alloc() either succeed or do not return: on out of memory they
 *	call the OOM hook (default: print "4.3.0 out of memory" on stdout
 *	and exit with EX_TEMPFAIL, so the MTA keeps the message queued).
 *	The milter installs its own hook with xalloc_set_oom_hook();
 *	xalloc_fail() calls the hook for an allocation that failed in
 *	another library (libcurl).  xfree_secret() wipes a string, then
 *	frees it (NULL is fine).
 *
 *	The lowest layer of the library: it uses nothing else of it.
 */
#ifndef M365_XALLOC_H
#define M365_XALLOC_H

#include <stddef.h>

extern void *xmalloc(size_t);
extern void *xcalloc(size_t, size_t);
extern void *xrealloc(void *, size_t);
extern char *xstrdup(const char *);
extern char *xstrndup(const char *, size_t);
extern void xfree_secret(char *);
extern void xalloc_set_oom_hook(void (*hook) (void));
extern void xalloc_fail(void);

#endif
