/* test_util - files judged by descriptor, files root keeps for the user */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "log.h"
#include "util.h"
#include "t.h"
#include "t_file.h"

#define SECRET	"s3cret-value\n"

static char dir[1024];

/* mkpath - dir/name into buf */

static char *mkpath(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", dir, name);
    return (buf);
}

/* on_alarm - a FIFO that blocks the reader fails the test, not hangs it */

static void on_alarm(int sig)
{
    static const char text[] = "not ok - blocked on a FIFO (alarm)\n";

    (void) sig;
    if (write(STDOUT_FILENO, text, sizeof(text) - 1) < 0) {
	/* nothing */
    }
    _exit(1);
}

/* test_good - a private regular file of ours is read */

static void test_good(void)
{
    char    path[PATH_MAX];
    char    err[600] = "";
    struct strbuf sb;

    t_put_file(mkpath(path, sizeof(path), "good"), SECRET, 0600);
    T_EQ_INT(file_check_private(path, "secret file", err, sizeof(err)), 0);
    T_EQ_INT(file_read_private(path, "secret file", 100, &sb, err,
			       sizeof(err)), 0);
    T_EQ_STR(sb.data, SECRET);
    strbuf_cleanse(&sb);
    T_EQ_INT(file_read_private(path, "secret file", 4, &sb, err,
			       sizeof(err)), -1);
    T_CONTAINS(err, "larger than 4 bytes");
}

/* test_symlink - a symbolic link to a good file is not followed */

static void test_symlink(void)
{
    char    path[PATH_MAX];
    char    link[PATH_MAX];
    char    err[600] = "";
    struct strbuf sb;
    int     fd;

    t_put_file(mkpath(path, sizeof(path), "good"), SECRET, 0600);
    mkpath(link, sizeof(link), "link");
    (void) unlink(link);
    T_EQ_INT(symlink(path, link), 0);
    T_EQ_INT(file_check_private(link, "secret file", err, sizeof(err)), -1);
    T_CONTAINS(err, "symbolic link");
    T_CONTAINS(err, link);
    err[0] = 0;
    T_EQ_INT(file_read_private(link, "secret file", 100, &sb, err,
			       sizeof(err)), -1);
    T_CONTAINS(err, "symbolic link");

    /* A public file (certificate) may be a link; it is still checked. */
    fd = file_open_checked(link, "certificate file", FILE_FOLLOW, err,
			   sizeof(err));
    T_OK(fd >= 0);
    if (fd >= 0)
	close(fd);
}

/* test_fifo - a FIFO is refused at once, without waiting for a writer */

static void test_fifo(void)
{
    char    path[PATH_MAX];
    char    err[600] = "";
    struct strbuf sb;
    int     fd;

    mkpath(path, sizeof(path), "fifo");
    (void) unlink(path);
    T_EQ_INT(mkfifo(path, 0600), 0);
    signal(SIGALRM, on_alarm);
    alarm(10);
    T_EQ_INT(file_check_private(path, "secret file", err, sizeof(err)), -1);
    T_CONTAINS(err, "not a regular file");
    T_EQ_INT(file_read_private(path, "key file", 100, &sb, err,
			       sizeof(err)), -1);
    T_CONTAINS(err, "not a regular file");
    fd = file_open_checked(path, "certificate file", FILE_FOLLOW, err,
			   sizeof(err));
    T_EQ_INT(fd, -1);
    alarm(0);
}

/* test_mode - group or other access is refused */

static void test_mode(void)
{
    char    path[PATH_MAX];
    char    err[600] = "";
    struct strbuf sb;

    t_put_file(mkpath(path, sizeof(path), "loose"), SECRET, 0640);
    T_EQ_INT(file_read_private(path, "secret file", 100, &sb, err,
			       sizeof(err)), -1);
    T_CONTAINS(err, "chmod 600");
    T_EQ_INT(file_check_private(path, "secret file", err, sizeof(err)), -1);
    T_EQ_INT(file_read_private(dir, "secret file", 100, &sb, err,
			       sizeof(err)), -1);
    T_CONTAINS(err, "not a regular file");
}

/* test_owner_root - as root only root's and the [global] user's files */

static void test_owner_root(void)
{
    char    path[PATH_MAX];
    char    err[600] = "";
    struct strbuf sb;
    struct passwd *pw;

    if (geteuid() != 0 || (pw = getpwnam("nobody")) == NULL) {
	printf("# test_owner_root skipped: needs root and user nobody\n");
	return;
    }
    t_put_file(mkpath(path, sizeof(path), "theirs"), SECRET, 0600);

    /* A third user's file: refused (it could be changed behind us). */
    T_EQ_INT(chown(path, 12345, 12345), 0);
    file_set_service_user("nobody");
    T_EQ_INT(file_check_private(path, "secret file", err, sizeof(err)), -1);
    T_CONTAINS(err, "owned by uid 12345");
    T_EQ_INT(file_read_private(path, "secret file", 100, &sb, err,
			       sizeof(err)), -1);

    /* The [global] user's file: trusted only once that user is named. */
    T_EQ_INT(chown(path, pw->pw_uid, pw->pw_gid), 0);
    file_set_service_user(NULL);
    T_EQ_INT(file_check_private(path, "secret file", err, sizeof(err)), -1);
    T_CONTAINS(err, "set user in [global]");
    file_set_service_user("nobody");
    T_EQ_INT(file_read_private(path, "secret file", 100, &sb, err,
			       sizeof(err)), 0);
    T_EQ_STR(sb.data, SECRET);
    strbuf_cleanse(&sb);

    /* Root's own file. */
    T_EQ_INT(chown(path, 0, 0), 0);
    T_EQ_INT(file_check_private(path, "secret file", err, sizeof(err)), 0);
    file_set_service_user(NULL);
}

/* owned_link_refused - NAME a link to target: refused, target kept */

static void owned_link_refused(const char *target, const char *name,
			               int hard, const char *want,
			               uid_t uid, gid_t gid)
{
    char    path[PATH_MAX];
    char    err[600] = "";
    int     fd;

    mkpath(path, sizeof(path), name);
    (void) unlink(path);
    T_EQ_INT(hard ? link(target, path) : symlink(target, path), 0);
    fd = file_open_owned(AT_FDCWD, path, path, "lock file", O_RDWR | O_CREAT,
			 0600, uid, gid, FILE_CLAIM, err, sizeof(err));
    T_EQ_INT(fd, -1);
    T_CONTAINS(err, want);
    T_EQ_INT(t_owner_of(target), 0);
    T_EQ_INT(unlink(path), 0);
}

/* test_owned - lock/log files root opens for the user */

static void test_owned(void)
{
    char    target[PATH_MAX];
    char    path[PATH_MAX];
    char    err[600] = "";
    struct passwd *pw;
    struct stat st;
    uid_t   uid;
    gid_t   gid;
    int     fd;

    if (geteuid() != 0 || (pw = getpwnam("nobody")) == NULL) {
	printf("# test_owned skipped: needs root and user nobody\n");
	return;
    }
    uid = pw->pw_uid;
    gid = pw->pw_gid;
    t_put_file(mkpath(target, sizeof(target), "root-only"), SECRET, 0600);

    /* A hard or symbolic link to root's file: refused, it stays root's. */
    owned_link_refused(target, "hard.lock", 1, "hard links", uid, gid);
    owned_link_refused(target, "soft.lock", 0, "symbolic link", uid, gid);

    /* A FIFO: refused without blocking. */
    mkpath(path, sizeof(path), "fifo.lock");
    (void) unlink(path);
    T_EQ_INT(mkfifo(path, 0600), 0);
    signal(SIGALRM, on_alarm);
    alarm(10);
    fd = file_open_owned(AT_FDCWD, path, path, "log file",
			 O_WRONLY | O_APPEND | O_CREAT, 0640, uid, gid, 0,
			 err, sizeof(err));
    alarm(0);
    T_EQ_INT(fd, -1);
    T_CONTAINS(err, "not a regular file");
    T_EQ_INT(unlink(path), 0);

    /* A third user's file: refused. */
    t_put_file(mkpath(path, sizeof(path), "third.lock"), "", 0600);
    T_EQ_INT(chown(path, 12345, 12345), 0);
    fd = file_open_owned(AT_FDCWD, path, path, "lock file", O_RDWR | O_CREAT,
			 0600, uid, gid, FILE_CLAIM, err, sizeof(err));
    T_EQ_INT(fd, -1);
    T_CONTAINS(err, "owned by uid 12345");

    /* New: created and given to the user; the user's own: kept. */
    mkpath(path, sizeof(path), "new.log");
    (void) unlink(path);
    fd = file_open_owned(AT_FDCWD, path, path, "log file",
			 O_WRONLY | O_APPEND | O_CREAT, 0640, uid, gid, 0,
			 err, sizeof(err));
    T_OK(fd >= 0);
    if (fd >= 0) {
	T_EQ_INT(fstat(fd, &st), 0);
	T_EQ_INT(st.st_uid, uid);
	T_EQ_INT(st.st_mode & 07777, 0640);
	close(fd);
    }
    fd = file_open_owned(AT_FDCWD, path, path, "log file",
			 O_WRONLY | O_APPEND | O_CREAT, 0640, uid, gid, 0,
			 err, sizeof(err));
    T_OK(fd >= 0);
    if (fd >= 0)
	close(fd);

    /* Root's existing file: given away only with FILE_CLAIM. */
    t_put_file(mkpath(path, sizeof(path), "old.lock"), "", 0600);
    fd = file_open_owned(AT_FDCWD, path, path, "log file",
			 O_WRONLY | O_APPEND | O_CREAT, 0640, uid, gid, 0,
			 err, sizeof(err));
    T_OK(fd >= 0);
    if (fd >= 0)
	close(fd);
    T_EQ_INT(t_owner_of(path), 0);
    fd = file_open_owned(AT_FDCWD, path, path, "lock file", O_RDWR | O_CREAT,
			 0600, uid, gid, FILE_CLAIM, err, sizeof(err));
    T_OK(fd >= 0);
    if (fd >= 0)
	close(fd);
    T_EQ_INT(t_owner_of(path), uid);

    /* Root's device (the fuzzers log to /dev/null): only if allowed. */
    fd = file_open_owned(AT_FDCWD, "/dev/null", "/dev/null", "log file",
			 O_WRONLY | O_APPEND | O_CREAT, 0640, uid, gid,
			 FILE_DEVICE_OK, err, sizeof(err));
    T_OK(fd >= 0);
    if (fd >= 0)
	close(fd);
    T_EQ_INT(t_owner_of("/dev/null"), 0);

    /* log_open_file() as root applies the same rules. */
    mkpath(path, sizeof(path), "soft.log");
    (void) unlink(path);
    T_EQ_INT(symlink(target, path), 0);
    T_EQ_INT(log_open_file(path, err, sizeof(err)), -1);
    T_CONTAINS(err, "symbolic link");
    T_EQ_INT(log_to_file(path), -1);
    T_EQ_INT(t_owner_of(target), 0);
}

/* test_dir_owned - directories root keeps for the user */

static void test_dir_owned(void)
{
    char    path[PATH_MAX];
    char    target[PATH_MAX];
    char    err[600] = "";
    struct passwd *pw;
    int     fd;

    if (geteuid() != 0 || (pw = getpwnam("nobody")) == NULL) {
	printf("# test_dir_owned skipped: needs root and user nobody\n");
	return;
    }
    mkpath(target, sizeof(target), "rootdir");
    T_EQ_INT(mkdir(target, 0700), 0);
    mkpath(path, sizeof(path), "linkdir");
    T_EQ_INT(symlink(target, path), 0);
    fd = dir_open_owned(AT_FDCWD, path, path, pw->pw_uid, pw->pw_gid,
			FILE_CLAIM, err, sizeof(err));
    T_EQ_INT(fd, -1);
    T_CONTAINS(err, "not a directory");
    T_EQ_INT(t_owner_of(target), 0);
    fd = dir_open_owned(AT_FDCWD, target, target, pw->pw_uid, pw->pw_gid,
			FILE_CLAIM, err, sizeof(err));
    T_OK(fd >= 0);
    if (fd >= 0)
	close(fd);
    T_EQ_INT(t_owner_of(target), pw->pw_uid);
    T_EQ_INT(chown(target, 12345, 12345), 0);
    fd = dir_open_owned(AT_FDCWD, target, target, pw->pw_uid, pw->pw_gid,
			FILE_CLAIM, err, sizeof(err));
    T_EQ_INT(fd, -1);
    T_CONTAINS(err, "owned by uid 12345");
    T_EQ_INT(t_owner_of(target), 12345);
}

/* test_write_at - the write stays in the directory that was opened */

static void test_write_at(void)
{
    char    sub[PATH_MAX];
    char    moved[PATH_MAX];
    char    path[PATH_MAX + 20];
    char    err[600] = "";
    struct strbuf sb;
    int     dfd;

    mkpath(sub, sizeof(sub), "w");
    mkpath(moved, sizeof(moved), "w-moved");
    T_EQ_INT(mkdir(sub, 0700), 0);
    dfd = open(sub, O_RDONLY | O_DIRECTORY);
    T_OK(dfd >= 0);
    /* Swapped for a link to elsewhere after it was opened. */
    T_EQ_INT(rename(sub, moved), 0);
    T_EQ_INT(symlink(dir, sub), 0);
    T_EQ_INT(file_write_at(dfd, "state.json", "w/state.json", "{}", 2, 0600,
			   (uid_t) -1, (gid_t) -1, err, sizeof(err)), 0);
    close(dfd);
    snprintf(path, sizeof(path), "%s/state.json", moved);
    T_EQ_INT(file_read(path, 100, &sb, err, sizeof(err)), 0);
    T_EQ_STR(sb.data, "{}");
    strbuf_free(&sb);
    T_EQ_INT(access(mkpath(path, sizeof(path), "state.json"), F_OK), -1);

    /* file_write_atomic() by name, as before. */
    mkpath(path, sizeof(path), "plain.json");
    T_EQ_INT(file_write_atomic(path, "[1]", 3, 0600, (uid_t) -1, (gid_t) -1,
			       err, sizeof(err)), 0);
    T_EQ_INT(file_read(path, 100, &sb, err, sizeof(err)), 0);
    T_EQ_STR(sb.data, "[1]");
    strbuf_free(&sb);
}

/* test_nodump - no core file, not dumpable; again after a fork */

static void test_nodump(void)
{
    struct rlimit rl;
    pid_t   pid;
    int     status = -1;

    fflush(stdout);
    if ((pid = fork()) == 0) {
	rl.rlim_cur = rl.rlim_max = RLIM_INFINITY;
	(void) setrlimit(RLIMIT_CORE, &rl);
	util_nodump();
	if (getrlimit(RLIMIT_CORE, &rl) < 0 || rl.rlim_cur != 0
	    || rl.rlim_max != 0)
	    _exit(2);
#if defined(__linux__) && defined(PR_GET_DUMPABLE)
	if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0)
	    _exit(3);
#endif
	_exit(0);
    }
    T_OK(pid > 0);
    T_EQ_INT(waitpid(pid, &status, 0), pid);
    T_OK(WIFEXITED(status));
    T_EQ_INT(WEXITSTATUS(status), 0);
}

int     main(void)
{
    const char *tmp = getenv("TMPDIR");

    snprintf(dir, sizeof(dir), "%s/test_util.XXXXXX",
	     tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL) {
	printf("not ok - mkdtemp %s: %s\n", dir, strerror(errno));
	return (1);
    }
    log_open("test_util");
    T_RUN(test_good);
    T_RUN(test_symlink);
    T_RUN(test_fifo);
    T_RUN(test_mode);
    T_RUN(test_owner_root);
    T_RUN(test_owned);
    T_RUN(test_dir_owned);
    T_RUN(test_write_at);
    T_RUN(test_nodump);
    t_rm_rf(dir);
    return (T_DONE());
}
