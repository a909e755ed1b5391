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
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "util.h"

/*
 * util_nodump - keep secrets out of core files and away from other
 * processes of the same user: RLIMIT_CORE 0 and, on Linux,
 * PR_SET_DUMPABLE 0 (no core, no ptrace attach, /proc/PID/mem and
 * environ closed).  The kernel makes a process dumpable again whenever
 * it changes its user or group ids, so a program that drops privileges
 * calls this again afterwards (priv_drop() does).  Called first thing in
 * main() by every program that handles secrets.
 */
void    util_nodump(void)
{
    struct rlimit rl;

    rl.rlim_cur = 0;
    rl.rlim_max = 0;
    (void) setrlimit(RLIMIT_CORE, &rl);
#if defined(__linux__) && defined(PR_SET_DUMPABLE)
    (void) prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
#endif
}

/*
 * The unprivileged user of the installation ([global] user): running as
 * root, files of root and of this user are trusted, and files that root
 * creates for the others are given to it.
 */
static uid_t file_service_uid = (uid_t) -1;
static gid_t file_service_gid = (gid_t) -1;

/* file_set_service_user - name the [global] user; NULL/unknown: none */

void    file_set_service_user(const char *user)
{
    struct passwd *pw;

    file_service_uid = (uid_t) -1;
    file_service_gid = (gid_t) -1;
    if (user != NULL && *user != 0 && (pw = getpwnam(user)) != NULL
	&& pw->pw_uid != 0) {
	file_service_uid = pw->pw_uid;
	file_service_gid = pw->pw_gid;
    }
}

/* file_service_ids - the [global] user's ids; -1 when there is none */

int     file_service_ids(uid_t *uid, gid_t *gid)
{
    if (uid)
	*uid = file_service_uid;
    if (gid)
	*gid = file_service_gid;
    return (file_service_uid == (uid_t) -1 ? -1 : 0);
}

/* file_owner_error - describe an untrusted owner, with the fix */

static void file_owner_error(const char *path, const char *what,
			             uid_t owner, uid_t user,
			             char *err, size_t errlen)
{
    if (geteuid() != 0)
	snprintf(err, errlen, "%s %s is owned by uid %ld, not by the user "
		 "this program runs as (uid %ld): fix with chown", what, path,
		 (long) owner, (long) geteuid());
    else if (user != (uid_t) -1)
	snprintf(err, errlen, "%s %s is owned by uid %ld; running as root, "
		 "only files of root or of the [global] user (uid %ld) are "
		 "trusted: fix with chown", what, path, (long) owner,
		 (long) user);
    else
	snprintf(err, errlen, "%s %s is owned by uid %ld; running as root "
		 "without a [global] user, only files of root are trusted: "
		 "fix with chown root, or set user in [global]", what, path,
		 (long) owner);
}

/* file_owner_ok - may a file of this owner be trusted? */

static int file_owner_ok(uid_t owner)
{
    if (owner == geteuid())
	return (1);
    return (geteuid() == 0 && file_service_uid != (uid_t) -1
	    && owner == file_service_uid);
}

/* file_link_error - why open(O_NOFOLLOW) failed, in words; errno kept */

static void file_link_error(const char *path, const char *what, int errnum,
			            char *err, size_t errlen)
{
    struct stat st;

    if (errnum == ELOOP && lstat(path, &st) == 0 && S_ISLNK(st.st_mode))
	snprintf(err, errlen, "%s %s is a symbolic link, which is not "
		 "followed (whoever can change the link could point it "
		 "elsewhere): replace the link with the file itself", what,
		 path);
    else if (errnum == ENXIO)			/* FIFO without a reader */
	snprintf(err, errlen, "%s %s is not a regular file: remove it", what,
		 path);
    else
	snprintf(err, errlen, "cannot access %s %s: %s", what, path,
		 strerror(errnum));
    errno = errnum;
}

/* file_fstat - fstat() an opened file; on error close it, keep errno */

static int file_fstat(int fd, const char *path, const char *what,
		              struct stat *st, char *err, size_t errlen)
{
    int     saved;

    if (fstat(fd, st) == 0)
	return (0);
    saved = errno;
    snprintf(err, errlen, "cannot access %s %s: %s", what, path,
	     strerror(saved));
    close(fd);
    errno = saved;
    return (-1);
}

/* file_blocking - a regular file opened with O_NONBLOCK: plain again */

static void file_blocking(int fd)
{
    int     fl = fcntl(fd, F_GETFL);

    if (fl >= 0 && (fl & O_NONBLOCK))
	(void) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
}

/*
 * file_open_checked - open a file for reading and judge what was opened,
 * not the name: the last component is not followed when it is a symbolic
 * link (unless FILE_FOLLOW: public files such as a certificate), a FIFO
 * or device is refused without blocking on it, and it must
 * be a regular file; with FILE_PRIVATE also owned by us (as root: by root
 * or the [global] user) and not accessible by group or other.  Returns a
 * descriptor, or -1 with err set and errno kept (ENOENT: no such file).
 */
int     file_open_checked(const char *path, const char *what, int flags,
			          char *err, size_t errlen)
{
    struct stat st;
    int     fd;

    if ((fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC
		   | ((flags & FILE_FOLLOW) ? 0 : O_NOFOLLOW))) < 0) {
	file_link_error(path, what, errno, err, errlen);
	return (-1);
    }
    if (file_fstat(fd, path, what, &st, err, errlen) < 0)
	return (-1);
    if (!S_ISREG(st.st_mode)) {
	snprintf(err, errlen, "%s %s is not a regular file: replace it with "
		 "one", what, path);
	close(fd);
	errno = EINVAL;
	return (-1);
    }
    if ((flags & FILE_PRIVATE) && !file_owner_ok(st.st_uid)) {
	file_owner_error(path, what, st.st_uid, file_service_uid, err, errlen);
	close(fd);
	errno = EPERM;
	return (-1);
    }
    if ((flags & FILE_PRIVATE) && (st.st_mode & (S_IRWXG | S_IRWXO))) {
	snprintf(err, errlen, "%s %s is accessible by group or other "
		 "(mode %04o); it holds a secret: fix with chmod 600 %s",
		 what, path, (unsigned) (st.st_mode & 07777), path);
	close(fd);
	errno = EPERM;
	return (-1);
    }
    file_blocking(fd);
    return (fd);
}

/*
 * file_check_private - refuse a secret file that group or other can read,
 * that belongs to somebody else (like ssh and msmtp), that is a symbolic
 * link or not a regular file.  It opens the file to judge it; callers
 * that go on to read it use file_read_private() instead, which reads
 * the very file it judged.
 */
int     file_check_private(const char *path, const char *what,
			           char *err, size_t errlen)
{
    int     fd;

    if ((fd = file_open_checked(path, what, FILE_PRIVATE, err, errlen)) < 0)
	return (-1);
    close(fd);
    return (0);
}

/* file_read_fd - read a whole (small) file from fd, then close fd */

int     file_read_fd(int fd, const char *path, size_t max,
		             struct strbuf *out, char *err, size_t errlen)
{
    char    buf[8192];
    ssize_t n;

    strbuf_init(out, max);
    while ((n = read(fd, buf, sizeof(buf))) != 0) {
	if (n < 0 && errno == EINTR)
	    continue;
	if (n < 0)
	    break;
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

/* file_read - read a whole (small) file into a buffer */

int     file_read(const char *path, size_t max, struct strbuf *out,
		          char *err, size_t errlen)
{
    int     fd;

    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
	snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
	return (-1);
    }
    return (file_read_fd(fd, path, max, out, err, errlen));
}

/*
 * file_read_private - read a secret file (at most max bytes) after the
 * checks of file_open_checked(FILE_PRIVATE), on the same descriptor.
 */
int     file_read_private(const char *path, const char *what, size_t max,
			          struct strbuf *out, char *err, size_t errlen)
{
    int     fd;

    if ((fd = file_open_checked(path, what, FILE_PRIVATE, err, errlen)) < 0)
	return (-1);
    return (file_read_fd(fd, path, max, out, err, errlen));
}

/*
 * file_open_owned - open (with O_CREAT in flags: create) NAME relative to
 * dirfd for writing, as root possibly on behalf of the user uid/gid (lock
 * and log files in directories that user may control).  The last
 * component is not followed; what was opened must be a regular file (or,
 * with FILE_DEVICE_OK, a device of root's such as /dev/null).  Running as
 * root it must also have one link only (a hard link could be a root file
 * taken from elsewhere) and belong to root, to us or to uid; a file root
 * has just created, or with FILE_CLAIM any file of root's, is given to
 * uid/gid through the descriptor.  path names the file in error texts.
 * Returns a descriptor, or -1 with err set.
 */
int     file_open_owned(int dirfd, const char *name, const char *path,
			        const char *what, int oflags, mode_t mode,
			        uid_t uid, gid_t gid, int flags,
			        char *err, size_t errlen)
{
    struct stat st;
    int     fd = -1, created = 0, tries, saved;
    int     base = oflags & ~(O_CREAT | O_EXCL);

    base |= O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
    for (tries = 0; fd < 0 && tries < 5; tries++) {
	if (oflags & O_CREAT) {
	    /* Knowing that we made it, we may give it away. */
	    fd = openat(dirfd, name, base | O_CREAT | O_EXCL, mode);
	    if (fd >= 0) {
		created = 1;
		break;
	    }
	    if (errno != EEXIST)
		break;
	}
	if ((fd = openat(dirfd, name, base)) < 0
	    && (errno != ENOENT || !(oflags & O_CREAT)))
	    break;
    }
    if (fd < 0) {
	file_link_error(path, what, errno, err, errlen);
	return (-1);
    }
    if (file_fstat(fd, path, what, &st, err, errlen) < 0)
	return (-1);
    if (!S_ISREG(st.st_mode)
	&& !((flags & FILE_DEVICE_OK) && S_ISCHR(st.st_mode)
	     && st.st_uid == 0)) {
	snprintf(err, errlen, "%s %s is not a regular file: remove it", what,
		 path);
	saved = EINVAL;
	goto bad;
    }
    if (geteuid() == 0) {
	if (st.st_nlink != 1) {
	    snprintf(err, errlen, "%s %s has %lu hard links; it must have "
		     "only one (another name of the same file could be a "
		     "file of root's elsewhere): remove it", what, path,
		     (unsigned long) st.st_nlink);
	    saved = EPERM;
	    goto bad;
	}
	if (st.st_uid != 0 && (uid == (uid_t) -1 || st.st_uid != uid)) {
	    file_owner_error(path, what, st.st_uid, uid, err, errlen);
	    saved = EPERM;
	    goto bad;
	}
	if (st.st_uid == 0 && uid != (uid_t) -1 && S_ISREG(st.st_mode)
	    && (created || (flags & FILE_CLAIM))
	    && fchown(fd, uid, gid) < 0) {
	    saved = errno;
	    snprintf(err, errlen, "cannot chown %s %s: %s", what, path,
		     strerror(saved));
	    goto bad;
	}
    }
    file_blocking(fd);
    return (fd);

bad:
    close(fd);
    errno = saved;
    return (-1);
}

/*
 * dir_open_owned - open the directory NAME relative to dirfd without
 * following a symbolic link in its last component.  Running as root with
 * uid given: the directory must belong to root or uid; with FILE_CLAIM
 * it is given to uid/gid (through the descriptor) unless it is already
 * theirs.  Returns a descriptor, or -1 with err set.
 */
int     dir_open_owned(int dirfd, const char *name, const char *path,
		               uid_t uid, gid_t gid, int flags,
		               char *err, size_t errlen)
{
    struct stat st;
    int     fd;

    if ((fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW
		     | O_CLOEXEC)) < 0) {
	if (errno == ELOOP || errno == ENOTDIR)
	    snprintf(err, errlen, "%s is not a directory (a symbolic link or "
		     "a file is not used): remove it", path);
	else
	    snprintf(err, errlen, "cannot open directory %s: %s", path,
		     strerror(errno));
	return (-1);
    }
    if (geteuid() != 0 || uid == (uid_t) -1)
	return (fd);
    if (fstat(fd, &st) < 0) {
	snprintf(err, errlen, "cannot access %s: %s", path, strerror(errno));
	close(fd);
	return (-1);
    }
    if (st.st_uid != 0 && st.st_uid != uid) {
	file_owner_error(path, "directory", st.st_uid, uid, err, errlen);
	close(fd);
	return (-1);
    }
    if ((flags & FILE_CLAIM) && (st.st_uid != uid || st.st_gid != gid)
	&& fchown(fd, uid, gid) < 0) {
	snprintf(err, errlen, "cannot chown %s: %s", path, strerror(errno));
	close(fd);
	return (-1);
    }
    return (fd);
}

/*
 * dir_link_trusted - may root follow the symbolic link lst found in the
 * directory dirfd?  Only when no other user can have put it there: the
 * directory is root's and nobody else may write to it (in a sticky
 * directory, a link of root's cannot be replaced by others either).
 * Other users follow links as before.
 */
static int dir_link_trusted(int dirfd, const struct stat *lst)
{
    struct stat st;

    if (geteuid() != 0)
	return (1);
    if (fstat(dirfd, &st) < 0 || st.st_uid != 0)
	return (0);
    if (((st.st_mode & S_IWGRP) && st.st_gid != 0)
	|| (st.st_mode & S_IWOTH))
	return ((st.st_mode & S_ISVTX) && lst->st_uid == 0);
    return (1);
}

/* dir_walk_name - append a component to the path shown in error texts */

static void dir_walk_name(char *shown, size_t len, const char *name)
{
    size_t  n = strlen(shown);

    if (n + 1 < len)
	snprintf(shown + n, len - n, "%s%s",
		 n > 0 && shown[n - 1] == '/' ? "" : "/", name);
}

#ifdef O_PATH
#define DIR_WALK_OPEN	(O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
#else
#define DIR_WALK_OPEN	(O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
#endif
#define DIR_WALK_LINKS	40		/* like the kernel's MAXSYMLINKS */

/*
 * dir_open_path - open the directory path one component at a time, so
 * that running as root no name another user controls is followed: a
 * symbolic link on the way is followed only when it lies in a directory
 * that only root can change (dir_link_trusted()), e.g. /var/run -> /run,
 * never in a directory of the [global] user (who could point it at a
 * directory of root's).  With FILE_MKDIR missing components are created
 * (mode), and with FILE_CLAIM the last one, when this call created it,
 * goes to uid/gid (as root; through the descriptor).  Intermediate
 * components are opened with O_PATH, so search permission is enough, as
 * with a plain open(path).  Returns a descriptor (O_RDONLY), or -1 with
 * err set.
 */
int     dir_open_path(const char *path, mode_t mode, uid_t uid, gid_t gid,
		              int flags, char *err, size_t errlen)
{
    char    walk[PATH_MAX];		/* what is left to walk */
    char    next_walk[PATH_MAX];
    char    target[PATH_MAX];
    char    shown[PATH_MAX];		/* what was walked, for errors */
    char    name[NAME_MAX + 1];
    struct stat lst;
    const char *cp;
    size_t  len;
    ssize_t n;
    int     cur, next, made = 0, links = 0;

    if (path == NULL || *path == 0
	|| snprintf(walk, sizeof(walk), "%s", path) >= (int) sizeof(walk)) {
	snprintf(err, errlen, "cannot open directory \"%s\": %s", path ? path : "",
		 path && *path ? "path too long" : "empty path");
	return (-1);
    }
    snprintf(shown, sizeof(shown), "%s", *walk == '/' ? "/" : "");
    if ((cur = open(*walk == '/' ? "/" : ".", DIR_WALK_OPEN)) < 0) {
	snprintf(err, errlen, "cannot open directory %s: %s",
		 *walk == '/' ? "/" : ".", strerror(errno));
	return (-1);
    }
    for (cp = walk;;) {
	while (*cp == '/')
	    cp++;
	if (*cp == 0)
	    break;
	if ((len = strcspn(cp, "/")) > NAME_MAX) {
	    snprintf(err, errlen, "cannot open directory %s: %s", path,
		     strerror(ENAMETOOLONG));
	    goto bad;
	}
	memcpy(name, cp, len);
	name[len] = 0;
	cp += len;
	made = 0;
	dir_walk_name(shown, sizeof(shown), name);
	next = openat(cur, name, DIR_WALK_OPEN);
	if (next < 0 && errno == ENOENT && (flags & FILE_MKDIR)) {
	    if (mkdirat(cur, name, mode) == 0)
		made = 1;
	    else if (errno != EEXIST) {
		snprintf(err, errlen, "cannot create directory %s: %s", shown,
			 strerror(errno));
		goto bad;
	    }
	    next = openat(cur, name, DIR_WALK_OPEN);
	}
	if (next < 0 && (errno == ELOOP || errno == ENOTDIR)
	    && fstatat(cur, name, &lst, AT_SYMLINK_NOFOLLOW) == 0
	    && S_ISLNK(lst.st_mode)) {
	    if (!dir_link_trusted(cur, &lst)) {
		snprintf(err, errlen, "%s is a symbolic link in a directory "
			 "that users other than root can change; running as "
			 "root it is not followed (whoever can change it could "
			 "point it elsewhere): name the real directory in the "
			 "configuration, or replace the link with it", shown);
		goto bad;
	    }
	    if (++links > DIR_WALK_LINKS
		|| (n = readlinkat(cur, name, target, sizeof(target))) <= 0
		|| (size_t) n >= sizeof(target)
		|| (target[n] = 0,
		    snprintf(next_walk, sizeof(next_walk), "%s%s", target, cp)
		    >= (int) sizeof(next_walk))) {
		snprintf(err, errlen, "cannot open directory %s: %s", path,
			 strerror(links > DIR_WALK_LINKS ? ELOOP :
				  ENAMETOOLONG));
		goto bad;
	    }
	    memcpy(walk, next_walk, sizeof(walk));
	    cp = walk;
	    /* The link's name is replaced by what it points to. */
	    if ((n = (ssize_t) strlen(shown) - (ssize_t) strlen(name)) > 1)
		n--;
	    shown[n] = 0;
	    if (*walk == '/') {
		close(cur);
		snprintf(shown, sizeof(shown), "/");
		if ((cur = open("/", DIR_WALK_OPEN)) < 0) {
		    snprintf(err, errlen, "cannot open directory /: %s",
			     strerror(errno));
		    return (-1);
		}
	    }
	    continue;
	}
	if (next < 0) {
	    if (errno == ENOTDIR || errno == ELOOP)
		snprintf(err, errlen, "%s is not a directory", shown);
	    else
		snprintf(err, errlen, "cannot open directory %s: %s", shown,
			 strerror(errno));
	    goto bad;
	}
	close(cur);
	cur = next;
    }
    /* The last component, readable (fsync, readdir) like open(path). */
    next = openat(cur, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (next < 0) {
	snprintf(err, errlen, "cannot open directory %s: %s", path,
		 strerror(errno));
	goto bad;
    }
    close(cur);
    if (made && (flags & FILE_CLAIM) && geteuid() == 0
	&& uid != (uid_t) -1 && fchown(next, uid, gid) < 0) {
	snprintf(err, errlen, "cannot chown %s: %s", path, strerror(errno));
	close(next);
	return (-1);
    }
    return (next);

bad:
    n = errno;
    close(cur);
    errno = (int) n;
    return (-1);
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
 * file_write_at - write a temporary file next to NAME in the directory
 * dirfd with the given mode, fsync it, give it to owner/group (when
 * running as root; pass (uid_t) -1 to keep), rename it over NAME and
 * fsync the directory.  Everything happens relative to dirfd, so a
 * directory renamed or replaced meanwhile does not redirect the write.
 * path names the file in error texts.
 */
int     file_write_at(int dirfd, const char *name, const char *path,
		              const void *data, size_t len, mode_t mode,
		              uid_t owner, gid_t group,
		              char *err, size_t errlen)
{
    return (file_replace_at(dirfd, name, path, data, len, mode, owner, group,
			    0, err, errlen));
}

/*
 * file_replace_at - file_write_at(); with FILE_NOSYNC neither the file
 * nor the directory is fsync()ed: the new file survives the process
 * (a kill -9), not necessarily a power loss, which may leave the old
 * file or an empty one under NAME.
 */
int     file_replace_at(int dirfd, const char *name, const char *path,
			        const void *data, size_t len, mode_t mode,
			        uid_t owner, gid_t group, int flags,
			        char *err, size_t errlen)
{
    char    tmp[PATH_MAX];
    char    tmpname[NAME_MAX + 1];
    int     fd;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long) getpid())
	>= (int) sizeof(tmp)
	|| snprintf(tmpname, sizeof(tmpname), "%s.tmp.%ld", name,
		    (long) getpid()) >= (int) sizeof(tmpname)) {
	snprintf(err, errlen, "path too long: %s", path);
	return (-1);
    }
    (void) unlinkat(dirfd, tmpname, 0);
    if ((fd = openat(dirfd, tmpname, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
		     mode)) < 0) {
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
    if (!(flags & FILE_NOSYNC) && fsync(fd) < 0) {
	snprintf(err, errlen, "cannot fsync %s: %s", tmp, strerror(errno));
	goto fail;
    }
    if (close(fd) < 0) {
	fd = -1;
	snprintf(err, errlen, "cannot close %s: %s", tmp, strerror(errno));
	goto fail;
    }
    fd = -1;
    if (renameat(dirfd, tmpname, dirfd, name) < 0) {
	snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, path,
		 strerror(errno));
	goto fail;
    }
    if (!(flags & FILE_NOSYNC))
	(void) fsync(dirfd);
    return (0);

fail:
    if (fd >= 0)
	close(fd);
    (void) unlinkat(dirfd, tmpname, 0);
    return (-1);
}

/*
 * file_write_atomic - file_write_at() for a path.  Its directory is
 * opened with dir_open_path(): running as root, no symbolic link another
 * user controls is followed on the way (a pid file, a record of the
 * sendmail helper); the final name itself is replaced, never followed.
 */

int     file_write_atomic(const char *path, const void *data, size_t len,
		            mode_t mode, uid_t owner, gid_t group,
			          char *err, size_t errlen)
{
    char    dir[PATH_MAX];
    const char *name;
    char   *slash;
    int     dfd, rc;

    if (snprintf(dir, sizeof(dir), "%s", path) >= (int) sizeof(dir)) {
	snprintf(err, errlen, "path too long: %s", path);
	return (-1);
    }
    if ((slash = strrchr(dir, '/')) != NULL) {
	name = path + (slash - dir) + 1;
	if (slash == dir)
	    slash[1] = 0;
	else
	    *slash = 0;
    } else {
	name = path;
	snprintf(dir, sizeof(dir), ".");
    }
    if (*name == 0) {
	snprintf(err, errlen, "cannot write %s: not a file name", path);
	return (-1);
    }
    if ((dfd = dir_open_path(dir, 0, (uid_t) -1, (gid_t) -1, 0,
			     err, errlen)) < 0)
	return (-1);
    rc = file_write_at(dfd, name, path, data, len, mode, owner, group,
		       err, errlen);
    close(dfd);
    return (rc);
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

/*
 * Encodings.  base64 is OpenSSL's (EVP_EncodeBlock(), EVP_DecodeBlock()),
 * URL decoding libcurl's (curl_easy_unescape()); only what those do not
 * offer is written here: the base64url alphabet, the strict checks of a
 * base64url decoder, and percent-encoding with a set of bytes kept.
 */
#define B64_CHUNK	(3 * 4096)	/* raw bytes per EVP_EncodeBlock() */

/* base64_encoded_len - bytes of padded base64 for rawlen input bytes */

size_t  base64_encoded_len(size_t rawlen)
{
    return (4 * ((rawlen + 2) / 3));
}

/* base64_encode - padded base64, no line breaks, no NUL; output length */

size_t  base64_encode(char *out, const unsigned char *in, size_t n)
{
    unsigned char last[5];
    size_t  o = 0, k, tail;

    if (n == 0)
	return (0);

    /*
     * EVP_EncodeBlock() ends its output with a NUL.  All but the last
     * quantum go straight to out, where what follows overwrites each
     * NUL; the last quantum goes through last[], so out needs no room
     * beyond base64_encoded_len(n) (msg.c fills libcurl's buffer).
     */
    tail = (n - 1) % 3 + 1;
    for (n -= tail; n > 0; n -= k, in += k) {
	k = n < B64_CHUNK ? n : B64_CHUNK;
	o += (size_t) EVP_EncodeBlock((unsigned char *) out + o, in, (int) k);
    }
    (void) EVP_EncodeBlock(last, in, (int) tail);
    memcpy(out + o, last, 4);
    return (o + 4);
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

/*
 * base64url_decode - n bytes of unpadded base64url (a JWT segment), or
 * NULL: strict, only the base64url alphabet, no padding, no white space,
 * a length an encoder makes.  The result is NUL-terminated (the NUL is
 * not counted in *len_r); free() it.
 */
unsigned char *base64url_decode(const char *in, size_t n, size_t *len_r)
{
    unsigned char *buf, *out;
    size_t  i, m, pad;
    int     got;

    if (n == 0 || n > INT_MAX / 2)
	return (NULL);
    m = (n + 3) / 4 * 4;
    if ((pad = m - n) > 2)
	return (NULL);				/* 4k + 1 characters */
    buf = xmalloc(m + 1);
    for (i = 0; i < n; i++) {
	char    c = in[i];

	if (c == '-')
	    c = '+';
	else if (c == '_')
	    c = '/';
	else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
		   || (c >= '0' && c <= '9'))) {
	    free(buf);
	    return (NULL);
	}
	buf[i] = (unsigned char) c;
    }
    memset(buf + n, '=', pad);
    buf[m] = 0;
    out = xmalloc(m / 4 * 3 + 1);
    got = EVP_DecodeBlock(out, buf, (int) m);
    free(buf);
    /* The padding decodes to zero bytes that are not data. */
    if (got < (int) pad) {
	free(out);
	return (NULL);
    }
    got -= (int) pad;
    out[got] = 0;
    *len_r = (size_t) got;
    return (out);
}

/*
 * url_escape_keep - percent-encode all but RFC 3986 unreserved bytes and
 * those in keep (e.g. "@+" in a Graph mailbox path); free() it.
 */
char   *url_escape_keep(const char *s, const char *keep)
{
    static const char hex[] = "0123456789ABCDEF";
    char   *out = xmalloc(3 * strlen(s) + 1);
    char   *o = out;

    for (; *s; s++) {
	unsigned char c = (unsigned char) *s;

	if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
	    || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'
	    || c == '~' || strchr(keep, c) != NULL) {
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

/* url_escape - percent-encode all but RFC 3986 unreserved; free() it */

char   *url_escape(const char *s)
{
    return (url_escape_keep(s, ""));
}

/*
 * url_form_decode - one application/x-www-form-urlencoded value (len
 * bytes): "+" is a space, %XX a byte (libcurl decodes), other text is
 * kept; the result ends at a decoded NUL.  NULL only when len is beyond
 * INT_MAX.  The value may be a secret: free it with xfree_secret().
 */
char   *url_form_decode(const char *s, size_t len)
{
    char   *plus, *dec, *out;
    size_t  i;
    int     n = 0;

    if (len > INT_MAX)
	return (NULL);
    plus = xstrndup(s, len);
    for (i = 0; i < len; i++)
	if (plus[i] == '+')
	    plus[i] = ' ';
    dec = curl_easy_unescape(NULL, plus, (int) len, &n);
    xfree_secret(plus);
    if (dec == NULL) {
	xalloc_fail();			/* libcurl: out of memory */
	return (NULL);
    }
    out = xstrndup(dec, (size_t) n);
    OPENSSL_cleanse(dec, (size_t) n);
    curl_free(dec);
    return (out);
}

/*
 * random_uuid - a random (version 4) UUID, lower case, from random_hex()
 * (OpenSSL, else the kernel); 0, or -1 with out "" when neither gives
 * random bytes.
 */
int     random_uuid(char *out, size_t len)
{
    char    hex[33];
    int     v;

    if (random_hex(hex, 16) < 0) {
	if (len > 0)
	    out[0] = 0;
	return (-1);
    }
    hex[12] = '4';				/* version 4 */
    v = hex[16] >= 'a' ? hex[16] - 'a' + 10 : hex[16] - '0';
    hex[16] = "89ab"[v & 3];			/* RFC 4122 variant */
    snprintf(out, len, "%.8s-%.4s-%.4s-%.4s-%.12s",
	     hex, hex + 8, hex + 12, hex + 16, hex + 20);
    return (0);
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

/*
 * random_hex - nbytes (at most 64) of strong randomness as 2*nbytes hex
 * digits.  0, or -1 when neither OpenSSL's generator nor /dev/urandom
 * gives any (out is then "": never a weak value); the caller fails the
 * operation with its own message (for mail: defer).
 */
int     random_hex(char *out, size_t nbytes)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char buf[64];
    size_t  i;

    if (nbytes > sizeof(buf))
	nbytes = sizeof(buf);
    if (RAND_bytes(buf, (int) nbytes) != 1) {
	/* OpenSSL's CSPRNG failed: fall back to the kernel directly. */
	int     fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	ssize_t got = fd < 0 ? -1 : read(fd, buf, nbytes);

	if (fd >= 0)
	    close(fd);
	if (got != (ssize_t) nbytes) {
	    OPENSSL_cleanse(buf, sizeof(buf));
	    out[0] = 0;
	    return (-1);
	}
    }
    for (i = 0; i < nbytes; i++) {
	out[2 * i] = hex[buf[i] >> 4];
	out[2 * i + 1] = hex[buf[i] & 15];
    }
    out[2 * nbytes] = 0;
    OPENSSL_cleanse(buf, sizeof(buf));
    return (0);
}
