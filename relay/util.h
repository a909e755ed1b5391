/*
 * NAME
 *	util 3h
 * SUMMARY
 *	memory, files, encodings and numbers shared by every program
 * SYNOPSIS
 *	#include "util.h"
 * DESCRIPTION
 *	x*alloc() either succeed or do not return: on out of memory they
 *	call the OOM hook (default: print "4.3.0 out of memory" on stdout
 *	and exit with EX_TEMPFAIL, so the MTA keeps the message queued).
 *	The milter installs its own hook.
 *
 *	Functions that can fail for reasons a user can fix take an error
 *	buffer (err, errlen) and fill it with a complete sentence naming
 *	the cause and the fix; they return 0 on success, -1 on error.
 */
#ifndef M365_UTIL_H
#define M365_UTIL_H

#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include "strbuf.h"

extern void *xmalloc(size_t);
extern void *xcalloc(size_t, size_t);
extern void *xrealloc(void *, size_t);
extern char *xstrdup(const char *);
extern char *xstrndup(const char *, size_t);
extern void util_set_oom_hook(void (*hook) (void));
extern void xfree_secret(char *);	/* cleanse, then free; NULL ok */

/* Files. */
extern int file_check_private(const char *path, const char *what,
			              char *err, size_t errlen);
extern int file_read(const char *path, size_t max, struct strbuf *out,
		             char *err, size_t errlen);
extern int file_write_all(int fd, const void *buf, size_t len);
extern int file_write_atomic(const char *path, const void *data, size_t len,
		             mode_t mode, uid_t owner, gid_t group,
			             char *err, size_t errlen);
extern const char *file_tmpdir(const char *dir);	/* dir, $TMPDIR, /tmp */
extern int mkdir_p(const char *path, mode_t mode, char *err, size_t errlen);

/* Encodings. */
extern size_t base64_encoded_len(size_t rawlen);
extern size_t base64_encode(char *out, const unsigned char *in, size_t n);
extern char *base64url_encode(const unsigned char *in, size_t n);
extern char *url_escape(const char *);

/* Numbers and time. */
extern int parse_long(const char *s, long min, long max, long *out);
extern double time_now(void);		/* wall clock, sub-second */
extern double time_mono(void);		/* monotonic, sub-second */
extern void random_hex(char *out, size_t nbytes);	/* out: 2n+1 */

#endif
