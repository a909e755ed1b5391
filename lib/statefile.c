/*
 * NAME
 *	statefile 3
 * SUMMARY
 *	files in state_dir: safe names, owned directories, locks, writes
 * DESCRIPTION
 *	See statefile.h.  One table row per kind of file; the functions
 *	below are the only code that makes, opens, locks or writes files
 *	in state_dir, so that the rules root follows there (descriptors,
 *	no links, the [global] user as owner) are written once.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "statefile.h"
#include "util.h"

static const struct statefile_info {
    const char *dir;			/* subdirectory of state_dir */
    const char *name;			/* what NAME stands for, in errors */
    const char *file;			/* what a file is, in errors */
    const char *warn;			/* warn once when root cannot give
					 * these files to the user, or NULL */
} statefile_info[] = {
    [STATEFILE_TOKENS] = {"tokens", "account", "token file", "token files"},
    [STATEFILE_SOURCES] = {"sources", "source", "state file", NULL},
    [STATEFILE_THROTTLE] = {"throttle", "mailbox", "throttle file", NULL},
    [STATEFILE_LEDGER] = {"ledger", "ledger record", "ledger record", NULL},
    [STATEFILE_SLOTS] = {"slots", "slot set", "slot file", NULL},
    [STATEFILE_METRICS] = {"metrics", "counter set", "counter file", NULL},
};

/* statefile_name_ok - a name that stays inside its directory */

int     statefile_name_ok(const char *name)
{
    return (name != NULL && *name != 0 && *name != '.'
	    && strchr(name, '/') == NULL);
}

/* statefile_path - state_dir/KIND/NAME plus suffix; -1 if none */

int     statefile_path(const struct conf *conf, enum statefile_kind kind,
		               const char *name, const char *suffix,
		               char *buf, size_t len)
{
    int     n;

    if (!statefile_name_ok(name) || conf->state_dir == NULL
	|| *conf->state_dir == 0)
	return (-1);
    n = snprintf(buf, len, "%s/%s/%s%s", conf->state_dir,
		 statefile_info[kind].dir, name, suffix ? suffix : "");
    return (n < 0 || (size_t) n >= len ? -1 : 0);
}

/* statefile_path_err - statefile_path() with an error text */

int     statefile_path_err(const struct conf *conf, enum statefile_kind kind,
			           const char *name, const char *suffix,
			           char *buf, size_t len,
			           char *err, size_t errlen)
{
    if (!statefile_name_ok(name)) {
	snprintf(err, errlen, "invalid %s name \"%s\": it must not be "
		 "empty, contain '/' or start with '.'",
		 statefile_info[kind].name, name ? name : "");
	return (-1);
    }
    if (conf->state_dir == NULL || *conf->state_dir == 0) {
	snprintf(err, errlen, "state_dir is not set in the configuration");
	return (-1);
    }
    if (statefile_path(conf, kind, name, suffix, buf, len) < 0
	|| strlen(name) + (suffix ? strlen(suffix) : 0) > NAME_MAX) {
	snprintf(err, errlen, "state path too long: %s/%s/%s%s",
		 conf->state_dir, statefile_info[kind].dir, name,
		 suffix ? suffix : "");
	return (-1);
    }
    return (0);
}

/*
 * statefile_owner - who should own state files: the [global] user when
 * running as root, else (uid_t) -1 (keep).  Root without a usable user
 * keeps root ownership; for kinds the relay must read (token files) it
 * says so once.
 */
void    statefile_owner(const struct conf *conf, enum statefile_kind kind,
			        uid_t *uid, gid_t *gid)
{
    static int warned;
    const char *what = statefile_info[kind].warn;

    *uid = (uid_t) -1;
    *gid = (gid_t) -1;
    if (geteuid() != 0)
	return;
    if (conf_user_ids(conf, uid, gid) == 0)
	return;
    *uid = (uid_t) -1;
    *gid = (gid_t) -1;
    if (what == NULL || warned++)
	return;
    if (conf->user && *conf->user)
	msg_warn("user \"%s\" (from [global] user) is unknown: %s stay owned "
		 "by root and the relay cannot read them; create the user or "
		 "fix the user setting", conf->user, what);
    else
	msg_warn("[global] user is not set: %s written by root stay owned "
		 "by root and the relay cannot read them", what);
}

/*
 * statefile_open - open state_dir/KIND for the owner uid/gid (see
 * statefile_dir()).  -1 with err set and errno kept.
 */
static int statefile_open(const struct conf *conf, enum statefile_kind kind,
			          int flags, uid_t uid, gid_t gid,
			          char *err, size_t errlen)
{
    const char *sub = statefile_info[kind].dir;
    char    path[PATH_MAX];
    int     create = !(flags & STATEFILE_EXISTING);
    int     sfd, dfd, saved;

    if (conf->state_dir == NULL || *conf->state_dir == 0) {
	snprintf(err, errlen, "state_dir is not set in the configuration");
	errno = EINVAL;
	return (-1);
    }
    if (snprintf(path, sizeof(path), "%s/%s", conf->state_dir, sub)
	>= (int) sizeof(path)) {
	snprintf(err, errlen, "state_dir path too long: %s", conf->state_dir);
	errno = ENAMETOOLONG;
	return (-1);
    }

    /*
     * Root gives the directories it made to the relay user; state_dir
     * only when it created it (an existing one is the administrator's
     * choice).  Root works through descriptors only: the relay user
     * owns state_dir and could otherwise swap a name for a symbolic link
     * between a check and a chown.
     */
    if ((sfd = dir_open_path(conf->state_dir, 0700, uid, gid,
			     create ? FILE_MKDIR | FILE_CLAIM : 0,
			     err, errlen)) < 0)
	return (-1);
    if (create && mkdirat(sfd, sub, 0700) < 0 && errno != EEXIST) {
	saved = errno;
	snprintf(err, errlen, "cannot create directory %s: %s", path,
		 strerror(saved));
	close(sfd);
	errno = saved;
	return (-1);
    }
    dfd = dir_open_owned(sfd, sub, path, uid, gid, create ? FILE_CLAIM : 0,
			 err, errlen);
    saved = errno;
    close(sfd);
    errno = saved;
    return (dfd);
}

/*
 * statefile_dir - make (unless STATEFILE_EXISTING) and open the
 * directory state_dir/KIND; see statefile.h.
 */
int     statefile_dir(const struct conf *conf, enum statefile_kind kind,
		              int flags, char *err, size_t errlen)
{
    uid_t   uid;
    gid_t   gid;

    statefile_owner(conf, kind, &uid, &gid);
    return (statefile_open(conf, kind, flags, uid, gid, err, errlen));
}

/*
 * statefile_at - check NAME, fill path (PATH_MAX bytes) and file (the
 * name inside the directory, NAME_MAX + 1 bytes), find the owner and
 * open state_dir/KIND for it.  The descriptor, or -1 with err set and
 * errno kept.
 */
static int statefile_at(const struct conf *conf, enum statefile_kind kind,
			        const char *name, const char *suffix,
			        int flags, char *path, char *file,
			        uid_t *uid, gid_t *gid,
			        char *err, size_t errlen)
{
    if (statefile_path_err(conf, kind, name, suffix, path, PATH_MAX,
			   err, errlen) < 0) {
	errno = EINVAL;
	return (-1);
    }
    snprintf(file, NAME_MAX + 1, "%s%s", name, suffix ? suffix : "");
    statefile_owner(conf, kind, uid, gid);
    return (statefile_open(conf, kind, flags, *uid, *gid, err, errlen));
}

/* statefile_write - replace state_dir/KIND/NAME[SUFFIX] atomically */

int     statefile_write(const struct conf *conf, enum statefile_kind kind,
			        const char *name, const char *suffix,
			        const void *data, size_t len,
			        char *err, size_t errlen)
{
    char    path[PATH_MAX];
    char    file[NAME_MAX + 1];
    uid_t   uid;
    gid_t   gid;
    int     dfd, rc;

    if ((dfd = statefile_at(conf, kind, name, suffix, 0, path, file,
			    &uid, &gid, err, errlen)) < 0)
	return (-1);
    rc = file_write_at(dfd, file, path, data, len, 0600, uid, gid,
		       err, errlen);
    close(dfd);
    return (rc);
}

/*
 * statefile_write_at - statefile_write() into dirfd, the KIND directory
 * statefile_dir() opened: no new walk, no mkdir, for a program that
 * rewrites one file many times.  With STATEFILE_NOSYNC nothing is
 * fsync()ed: the new file survives the process (kill -9), a power loss
 * may leave the old file or an empty one.
 */
int     statefile_write_at(const struct conf *conf, enum statefile_kind kind,
			           int dirfd, const char *name,
			           const char *suffix, const void *data,
			           size_t len, int flags,
			           char *err, size_t errlen)
{
    char    path[PATH_MAX];
    char    file[NAME_MAX + 1];
    uid_t   uid;
    gid_t   gid;

    if (statefile_path_err(conf, kind, name, suffix, path, sizeof(path),
			   err, errlen) < 0)
	return (-1);
    snprintf(file, sizeof(file), "%s%s", name, suffix ? suffix : "");
    statefile_owner(conf, kind, &uid, &gid);
    return (file_replace_at(dirfd, file, path, data, len, 0600, uid, gid,
			    (flags & STATEFILE_NOSYNC) ? FILE_NOSYNC : 0,
			    err, errlen));
}

/*
 * statefile_flock - flock(LOCK_EX) that waits at most max_wait seconds
 * (< 0: no limit, 0: not at all).  A bounded wait polls with LOCK_NB,
 * 10 ms at first, then up to 200 ms between tries.  0, -1 with errno,
 * -2 timed out.
 */
static int statefile_flock(int fd, double max_wait)
{
    struct timespec ts;
    double  deadline = time_mono() + max_wait;
    long    nap = 10;			/* milliseconds */

    for (;;) {
	if (flock(fd, max_wait < 0 ? LOCK_EX : LOCK_EX | LOCK_NB) == 0)
	    return (0);
	if (errno == EINTR)
	    continue;
	if (errno != EWOULDBLOCK || max_wait < 0)
	    return (-1);
	if (time_mono() >= deadline)
	    return (-2);
	ts.tv_sec = 0;
	ts.tv_nsec = nap * 1000000L;
	(void) nanosleep(&ts, NULL);
	if (nap < 200)
	    nap *= 2;
    }
}

/*
 * statefile_lock - exclusive lock on state_dir/KIND/NAME[SUFFIX], shared
 * by all processes.  As root the lock file is opened like every file
 * root keeps for the relay user (file_open_owned()): no symbolic link,
 * one link only, owned by root or that user, and given to the user
 * through the descriptor.  Returns the descriptor, -1 with err set and
 * errno kept, or -2 when the lock stayed held for max_wait seconds.
 */
int     statefile_lock(const struct conf *conf, enum statefile_kind kind,
		               const char *name, const char *suffix,
		               double max_wait, char *err, size_t errlen)
{
    char    path[PATH_MAX];
    char    file[NAME_MAX + 1];
    uid_t   uid;
    gid_t   gid;
    int     dfd, rc, saved;

    if ((dfd = statefile_at(conf, kind, name, suffix, 0, path, file,
			    &uid, &gid, err, errlen)) < 0)
	return (-1);
    rc = statefile_lock_at(conf, kind, dfd, name, suffix, max_wait, err,
			   errlen);
    saved = errno;
    close(dfd);
    errno = saved;
    return (rc);
}

/*
 * statefile_lock_at - statefile_lock() in dirfd, the KIND directory
 * statefile_dir() opened (e.g. with STATEFILE_EXISTING: no mkdir when
 * it is there already).  dirfd stays open.
 */
int     statefile_lock_at(const struct conf *conf, enum statefile_kind kind,
			          int dirfd, const char *name,
			          const char *suffix, double max_wait,
			          char *err, size_t errlen)
{
    char    path[PATH_MAX];
    char    file[NAME_MAX + 1];
    uid_t   uid;
    gid_t   gid;
    int     fd, rc, saved;

    if (statefile_path_err(conf, kind, name, suffix, path, sizeof(path),
			   err, errlen) < 0) {
	errno = EINVAL;
	return (-1);
    }
    snprintf(file, sizeof(file), "%s%s", name, suffix ? suffix : "");
    statefile_owner(conf, kind, &uid, &gid);
    fd = file_open_owned(dirfd, file, path, "lock file", O_RDWR | O_CREAT,
			 0600, uid, gid, FILE_CLAIM, err, errlen);
    if (fd < 0)
	return (-1);
    if ((rc = statefile_flock(fd, max_wait)) < 0) {
	saved = errno;
	if (rc == -2 && max_wait > 0)
	    snprintf(err, errlen, "timed out after %.0f s waiting for the "
		     "lock %s (another process holds it)", max_wait, path);
	else if (rc == -2)
	    snprintf(err, errlen, "the lock %s is held by another process",
		     path);
	else
	    snprintf(err, errlen, "cannot lock %s: %s", path,
		     strerror(saved));
	close(fd);
	errno = saved;
	return (rc);
    }
    return (fd);
}

#define STATEFILE_SLOTS_MAX	16

/*
 * statefile_lock_any - one of the n lock files NAME.0 ... NAME.(n-1),
 * locked exclusively (a semaphore of n, see statefile.h).  The
 * descriptor (*slot its number), -1 with err set, or -2 when all n
 * stayed held for max_wait seconds.
 */
int     statefile_lock_any(const struct conf *conf, enum statefile_kind kind,
			           const char *name, int n, double max_wait,
			           int *slot, char *err, size_t errlen)
{
    char    path[PATH_MAX];
    char    file[NAME_MAX + 1];
    char    suffix[16];
    int     fds[STATEFILE_SLOTS_MAX];
    struct timespec ts;
    uid_t   uid;
    gid_t   gid;
    int     dfd, i, got = -1, saved = 0, start;
    double  deadline = time_mono() + max_wait;
    long    nap = 5;			/* milliseconds */

    if (n < 1 || n > STATEFILE_SLOTS_MAX) {
	snprintf(err, errlen, "bad number of slots %d", n);
	return (-1);
    }
    if ((dfd = statefile_at(conf, kind, name, ".0", 0, path, file,
			    &uid, &gid, err, errlen)) < 0)
	return (-1);
    for (i = 0; i < n; i++) {
	snprintf(suffix, sizeof(suffix), ".%d", i);
	snprintf(file, sizeof(file), "%s%s", name, suffix);
	(void) statefile_path(conf, kind, name, suffix, path, sizeof(path));
	fds[i] = file_open_owned(dfd, file, path, "slot file",
				 O_RDWR | O_CREAT, 0600, uid, gid, FILE_CLAIM,
				 err, errlen);
	if (fds[i] < 0) {
	    saved = errno;
	    while (i-- > 0)
		close(fds[i]);
	    close(dfd);
	    errno = saved;
	    return (-1);
	}
    }
    close(dfd);

    /* Start at a different slot each time: no slot is everyone's first. */
    start = (int) ((unsigned) getpid() % (unsigned) n);
    for (;;) {
	for (i = 0; i < n && got < 0; i++) {
	    int     k = (start + i) % n;

	    if (flock(fds[k], LOCK_EX | LOCK_NB) == 0)
		got = k;
	    else if (errno != EWOULDBLOCK && errno != EINTR) {
		saved = errno;
		snprintf(err, errlen, "cannot lock %s/%s/%s.%d: %s",
			 conf->state_dir, statefile_info[kind].dir, name, k,
			 strerror(saved));
		got = -3;
	    }
	}
	if (got != -1 || time_mono() >= deadline)
	    break;
	ts.tv_sec = 0;
	ts.tv_nsec = nap * 1000000L;
	(void) nanosleep(&ts, NULL);
	if (nap < 100)
	    nap *= 2;
    }
    for (i = 0; i < n; i++)
	if (i != got)
	    close(fds[i]);
    if (got >= 0) {
	*slot = got;
	return (fds[got]);
    }
    if (got == -3) {
	errno = saved;
	return (-1);
    }
    snprintf(err, errlen, "all %d slots %s/%s/%s.* stayed busy for %.0f s",
	     n, conf->state_dir, statefile_info[kind].dir, name, max_wait);
    return (-2);
}

/* statefile_unlock - release a lock from statefile_lock(); -1 is ok */

void    statefile_unlock(int fd)
{
    if (fd >= 0) {
	(void) flock(fd, LOCK_UN);
	close(fd);
    }
}

/*
 * statefile_remove - remove state_dir/KIND/NAME[SUFFIX]; a missing file
 * (or directory) is fine.  Nothing is created, nothing changes owner.
 */
int     statefile_remove(const struct conf *conf, enum statefile_kind kind,
			         const char *name, const char *suffix,
			         char *err, size_t errlen)
{
    char    path[PATH_MAX];
    char    file[NAME_MAX + 1];
    uid_t   uid;
    gid_t   gid;
    int     dfd, saved;

    if ((dfd = statefile_at(conf, kind, name, suffix, STATEFILE_EXISTING,
			    path, file, &uid, &gid, err, errlen)) < 0)
	return (errno == ENOENT ? 0 : -1);
    if (unlinkat(dfd, file, 0) < 0 && errno != ENOENT) {
	saved = errno;
	snprintf(err, errlen, "cannot remove %s %s: %s",
		 statefile_info[kind].file, path, strerror(saved));
	close(dfd);
	errno = saved;
	return (-1);
    }
    close(dfd);
    return (0);
}
