/*
 * NAME
 *	util 3
 * SUMMARY
 *	memory, files, encodings and numbers shared by every program
 * DESCRIPTION
 *	See util.h.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "util.h"

/* util_default_oom - tell the MTA to try again later, then exit */

static void util_default_oom(void)
{
    static const char text[] = "4.3.0 out of memory\n";

    if (write(STDOUT_FILENO, text, sizeof(text) - 1) < 0) {
	/* Nothing else to try. */
    }
    _exit(EX_TEMPFAIL);
}

static void (*util_oom_hook) (void) = util_default_oom;

void    util_set_oom_hook(void (*hook) (void))
{
    util_oom_hook = hook ? hook : util_default_oom;
}

void   *xmalloc(size_t n)
{
    void   *p = malloc(n ? n : 1);

    if (p == NULL)
	util_oom_hook();
    return (p);
}

void   *xcalloc(size_t n, size_t size)
{
    void   *p = calloc(n ? n : 1, size ? size : 1);

    if (p == NULL)
	util_oom_hook();
    return (p);
}

void   *xrealloc(void *old, size_t n)
{
    void   *p = realloc(old, n ? n : 1);

    if (p == NULL)
	util_oom_hook();
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

/* xfree_secret - wipe a secret string, then free it */

void    xfree_secret(char *s)
{
    if (s) {
	OPENSSL_cleanse(s, strlen(s));
	free(s);
    }
}

/*
 * file_check_private - refuse a secret file that group or other can read,
 * or that belongs to somebody else (like ssh and msmtp).
 */
int     file_check_private(const char *path, const char *what,
			           char *err, size_t errlen)
{
    struct stat st;

    if (stat(path, &st) < 0) {
	snprintf(err, errlen, "cannot access %s %s: %s", what, path,
		 strerror(errno));
	return (-1);
    }
    if (!S_ISREG(st.st_mode)) {
	snprintf(err, errlen, "%s %s is not a regular file", what, path);
	return (-1);
    }
    if (st.st_uid != geteuid() && geteuid() != 0) {
	snprintf(err, errlen, "%s %s is owned by uid %ld, not by the user "
		 "this program runs as (uid %ld): fix with chown", what, path,
		 (long) st.st_uid, (long) geteuid());
	return (-1);
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
	snprintf(err, errlen, "%s %s is accessible by group or other "
		 "(mode %04o); it holds a secret: fix with chmod 600 %s",
		 what, path, (unsigned) (st.st_mode & 07777), path);
	return (-1);
    }
    return (0);
}

/* file_read - read a whole (small) file into a buffer */

int     file_read(const char *path, size_t max, struct strbuf *out,
		          char *err, size_t errlen)
{
    char    buf[8192];
    ssize_t n;
    int     fd;

    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
	snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
	return (-1);
    }
    strbuf_init(out, max);
    while ((n = read(fd, buf, sizeof(buf))) > 0) {
	if (strbuf_append(out, buf, (size_t) n) < 0) {
	    snprintf(err, errlen, "%s is larger than %lu bytes", path,
		     (unsigned long) max);
	    OPENSSL_cleanse(buf, sizeof(buf));
	    strbuf_cleanse(out);
	    close(fd);
	    return (-1);
	}
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    if (n < 0) {
	snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
	strbuf_cleanse(out);
	close(fd);
	return (-1);
    }
    close(fd);
    if (out->data == NULL)
	strbuf_append(out, "", 0);
    return (0);
}

/* file_tmpdir - dir if set, else $TMPDIR if set, else /tmp */

const char *file_tmpdir(const char *dir)
{
    if (dir == NULL || *dir == 0)
	dir = getenv("TMPDIR");
    if (dir == NULL || *dir == 0)
	dir = "/tmp";
    return (dir);
}

/* file_write_all - write all of buf, retrying; 0, or -1 with errno */

int     file_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    ssize_t n;

    while (len > 0) {
	if ((n = write(fd, p, len)) < 0) {
	    if (errno == EINTR)
		continue;
	    return (-1);
	}
	p += n;
	len -= (size_t) n;
    }
    return (0);
}

/*
 * file_write_atomic - write a temporary file next to path with the given
 * mode, fsync it, give it to owner/group (when running as root; pass
 * (uid_t) -1 to keep), rename it over path and fsync the directory.
 */
int     file_write_atomic(const char *path, const void *data, size_t len,
		            mode_t mode, uid_t owner, gid_t group,
			          char *err, size_t errlen)
{
    char    tmp[PATH_MAX];
    char    dir[PATH_MAX];
    char   *slash;
    int     fd, dfd;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long) getpid())
	>= (int) sizeof(tmp)) {
	snprintf(err, errlen, "path too long: %s", path);
	return (-1);
    }
    (void) unlink(tmp);
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)) < 0) {
	snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
	return (-1);
    }
    if (file_write_all(fd, data, len) < 0) {
	snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
	goto fail;
    }
    if (fchmod(fd, mode) < 0) {
	snprintf(err, errlen, "cannot chmod %s: %s", tmp, strerror(errno));
	goto fail;
    }
    if (geteuid() == 0 && (owner != (uid_t) -1 || group != (gid_t) -1)
	&& fchown(fd, owner, group) < 0) {
	snprintf(err, errlen, "cannot chown %s: %s", tmp, strerror(errno));
	goto fail;
    }
    if (fsync(fd) < 0) {
	snprintf(err, errlen, "cannot fsync %s: %s", tmp, strerror(errno));
	goto fail;
    }
    if (close(fd) < 0) {
	fd = -1;
	snprintf(err, errlen, "cannot close %s: %s", tmp, strerror(errno));
	goto fail;
    }
    fd = -1;
    if (rename(tmp, path) < 0) {
	snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, path,
		 strerror(errno));
	goto fail;
    }
    snprintf(dir, sizeof(dir), "%s", path);
    if ((slash = strrchr(dir, '/')) != NULL) {
	if (slash == dir)
	    slash[1] = 0;
	else
	    *slash = 0;
    } else
	snprintf(dir, sizeof(dir), ".");
    if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
	(void) fsync(dfd);
	close(dfd);
    }
    return (0);

fail:
    if (fd >= 0)
	close(fd);
    (void) unlink(tmp);
    return (-1);
}

/* mkdir_p - create a directory and its parents */

int     mkdir_p(const char *path, mode_t mode, char *err, size_t errlen)
{
    char    buf[PATH_MAX];
    char   *cp;

    if (snprintf(buf, sizeof(buf), "%s", path) >= (int) sizeof(buf)) {
	snprintf(err, errlen, "path too long: %s", path);
	return (-1);
    }
    for (cp = buf + 1; *cp; cp++) {
	if (*cp != '/')
	    continue;
	*cp = 0;
	if (mkdir(buf, mode) < 0 && errno != EEXIST) {
	    snprintf(err, errlen, "cannot create directory %s: %s", buf,
		     strerror(errno));
	    return (-1);
	}
	*cp = '/';
    }
    if (mkdir(buf, mode) < 0 && errno != EEXIST) {
	snprintf(err, errlen, "cannot create directory %s: %s", buf,
		 strerror(errno));
	return (-1);
    }
    return (0);
}

static const char b64[] =
"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* base64_encoded_len - bytes of padded base64 for rawlen input bytes */

size_t  base64_encoded_len(size_t rawlen)
{
    return (4 * ((rawlen + 2) / 3));
}

/* base64_encode - padded base64, no line breaks; returns output length */

size_t  base64_encode(char *out, const unsigned char *in, size_t n)
{
    size_t  i, o = 0;

    for (i = 0; i + 2 < n; i += 3) {
	out[o++] = b64[in[i] >> 2];
	out[o++] = b64[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
	out[o++] = b64[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
	out[o++] = b64[in[i + 2] & 63];
    }
    if (i < n) {
	out[o++] = b64[in[i] >> 2];
	if (i + 1 < n) {
	    out[o++] = b64[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
	    out[o++] = b64[(in[i + 1] & 15) << 2];
	} else {
	    out[o++] = b64[(in[i] & 3) << 4];
	    out[o++] = '=';
	}
	out[o++] = '=';
    }
    return (o);
}

/* base64url_encode - unpadded base64url (JWT, PKCE); free() the result */

char   *base64url_encode(const unsigned char *in, size_t n)
{
    char   *out = xmalloc(base64_encoded_len(n) + 1);
    size_t  len = base64_encode(out, in, n);
    size_t  i;

    while (len > 0 && out[len - 1] == '=')
	len--;
    out[len] = 0;
    for (i = 0; i < len; i++) {
	if (out[i] == '+')
	    out[i] = '-';
	else if (out[i] == '/')
	    out[i] = '_';
    }
    return (out);
}

/* url_escape - percent-encode all but RFC 3986 unreserved; free() it */

char   *url_escape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    char   *out = xmalloc(3 * strlen(s) + 1);
    char   *o = out;

    for (; *s; s++) {
	unsigned char c = (unsigned char) *s;

	if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
	    || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'
	    || c == '~') {
	    *o++ = (char) c;
	} else {
	    *o++ = '%';
	    *o++ = hex[c >> 4];
	    *o++ = hex[c & 15];
	}
    }
    *o = 0;
    return (out);
}

/* parse_long - strict decimal number in [min, max] */

int     parse_long(const char *s, long min, long max, long *out)
{
    char   *end;
    long    v;

    if (s == NULL || *s == 0)
	return (-1);
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != 0 || v < min || v > max)
	return (-1);
    *out = v;
    return (0);
}

double  time_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (ts.tv_sec + ts.tv_nsec / 1e9);
}

double  time_mono(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (ts.tv_sec + ts.tv_nsec / 1e9);
}

/* random_hex - nbytes of strong randomness as 2*nbytes hex digits */

void    random_hex(char *out, size_t nbytes)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char buf[64];
    size_t  i;

    if (nbytes > sizeof(buf))
	nbytes = sizeof(buf);
    if (RAND_bytes(buf, (int) nbytes) != 1) {
	/* OpenSSL's CSPRNG failed: fall back to the kernel directly. */
	int     fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

	if (fd < 0 || read(fd, buf, nbytes) != (ssize_t) nbytes)
	    util_oom_hook();			/* defer, never weak ids */
	close(fd);
    }
    for (i = 0; i < nbytes; i++) {
	out[2 * i] = hex[buf[i] >> 4];
	out[2 * i + 1] = hex[buf[i] & 15];
    }
    out[2 * nbytes] = 0;
}
