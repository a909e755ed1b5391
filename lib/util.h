/*
 * NAME
 *	util 3h
 * SUMMARY
 *	memory, files, encodings and numbers shared by every program
 * SYNOPSIS
 *	#include "util.h"
 * DESCRIPTION
 *	Memory: see xalloc.h (included here).
 *
 *	util_nodump() makes the process non-dumpable (no core file, no
 *	ptrace by the same user); call it at the top of main() and again
 *	after any change of user or group ids.
 *
 *	Files.  Whatever is read or written on behalf of another user is
 *	judged after it is opened, by descriptor (fstat), never by name
 *	first.  file_open_checked() opens a file to read it without
 *	following a symbolic link in the last component and without
 *	blocking on a FIFO; it must be a regular file and, with
 *	FILE_PRIVATE, owned by us (as root: root or the [global] user
 *	named with file_set_service_user()) and mode 0600 or stricter.
 *	file_read_private() reads such a file, file_check_private() only
 *	checks it.  file_open_owned() and dir_open_owned() open (create)
 *	a file or directory that root keeps for the [global] user (lock,
 *	log and state files) and give it to that user through the
 *	descriptor; as root they refuse a file with more than one link or
 *	of a third user.  dir_open_path() opens (with FILE_MKDIR: makes) a
 *	directory by path one component at a time; as root it follows a
 *	symbolic link on the way only when no other user can have put it
 *	there.  file_write_at() writes a file atomically relative to a
 *	directory descriptor; file_write_atomic() does it for a path whose
 *	directory dir_open_path() opened.  file_replace_at() with
 *	FILE_NOSYNC does it without fsync (kill -9 safe, not power-loss
 *	safe).
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
#include "xalloc.h"

extern void util_nodump(void);		/* no core file, no ptrace */

/* Files. */
#define FILE_PRIVATE	(1<<0)		/* owner and mode 0600 checks */
#define FILE_CLAIM	(1<<1)		/* give root's file to the user */
#define FILE_DEVICE_OK	(1<<2)		/* root's device (/dev/null) is ok */
#define FILE_FOLLOW	(1<<3)		/* a symbolic link is followed */
#define FILE_MKDIR	(1<<4)		/* dir_open_path(): create, mode */
#define FILE_NOSYNC	(1<<5)		/* file_replace_at(): no fsync */

extern void file_set_service_user(const char *user);	/* [global] user */
extern int file_service_ids(uid_t *uid, gid_t *gid);	/* -1: none */
extern int file_open_checked(const char *path, const char *what, int flags,
			             char *err, size_t errlen);
extern int file_check_private(const char *path, const char *what,
			              char *err, size_t errlen);
extern int file_read(const char *path, size_t max, struct strbuf *out,
		             char *err, size_t errlen);
extern int file_read_fd(int fd, const char *path, size_t max,
			        struct strbuf *out, char *err, size_t errlen);
extern int file_read_private(const char *path, const char *what, size_t max,
			             struct strbuf *out,
			             char *err, size_t errlen);
extern int file_open_owned(int dirfd, const char *name, const char *path,
			           const char *what, int oflags, mode_t mode,
			           uid_t uid, gid_t gid, int flags,
			           char *err, size_t errlen);
extern int dir_open_owned(int dirfd, const char *name, const char *path,
			          uid_t uid, gid_t gid, int flags,
			          char *err, size_t errlen);
extern int dir_open_path(const char *path, mode_t mode, uid_t uid, gid_t gid,
			         int flags, char *err, size_t errlen);
extern int file_write_at(int dirfd, const char *name, const char *path,
			         const void *data, size_t len, mode_t mode,
			         uid_t owner, gid_t group,
			         char *err, size_t errlen);
extern int file_replace_at(int dirfd, const char *name, const char *path,
			           const void *data, size_t len, mode_t mode,
			           uid_t owner, gid_t group, int flags,
			           char *err, size_t errlen);
extern int file_write_all(int fd, const void *buf, size_t len);
extern int file_write_atomic(const char *path, const void *data, size_t len,
		             mode_t mode, uid_t owner, gid_t group,
			             char *err, size_t errlen);
extern const char *file_tmpdir(const char *dir);	/* dir, $TMPDIR, /tmp */
extern int mkdir_p(const char *path, mode_t mode, char *err, size_t errlen);

/*
 * Encodings, one of each for every program: base64 over OpenSSL EVP,
 * URL decoding over libcurl.  base64_encode() writes exactly
 * base64_encoded_len(n) bytes (padded, no line breaks, no NUL).
 * base64url_decode() is strict (NULL for anything an encoder would not
 * write).  url_escape_keep() also keeps the bytes in keep.
 * random_uuid() needs 37 bytes; -1 when the random generator fails.
 */
extern size_t base64_encoded_len(size_t rawlen);
extern size_t base64_encode(char *out, const unsigned char *in, size_t n);
extern char *base64url_encode(const unsigned char *in, size_t n);
extern unsigned char *base64url_decode(const char *in, size_t n,
				               size_t *len_r);
extern char *url_escape(const char *);
extern char *url_escape_keep(const char *, const char *keep);
extern char *url_form_decode(const char *s, size_t len);
extern int random_uuid(char *out, size_t len);

/* Numbers and time. */
extern int parse_long(const char *s, long min, long max, long *out);
extern double time_now(void);		/* wall clock, sub-second */
extern double time_mono(void);		/* monotonic, sub-second */
extern int random_hex(char *out, size_t nbytes);	/* out: 2n+1; 0/-1 */

#endif
