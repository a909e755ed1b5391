/*
 * NAME
 *	test_statefile 1
 * SUMMARY
 *	unit tests for statefile.c (and the directory walk it uses,
 *	dir_open_path() in util.c): names, paths, directories and their
 *	owners, atomic writes, locks, removal; as root, no name the relay
 *	user controls is followed
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"
#include "statefile.h"
#include "throttle.h"
#include "util.h"
#include "t.h"
#include "t_file.h"

static char dir[1024];
static struct conf conf;

/* mkpath - dir/name */

static char *mkpath(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", dir, name);
    return (buf);
}

/* read_text - a small file's content, "" when missing */

static const char *read_text(const char *path, char *buf, size_t len)
{
    struct strbuf sb;
    char    err[300];

    buf[0] = 0;
    if (file_read(path, 4096, &sb, err, sizeof(err)) == 0) {
	snprintf(buf, len, "%s", strbuf_str(&sb));
	strbuf_free(&sb);
    }
    return (buf);
}

/* entries - number of names in a directory but . and .. (-1: none) */

static int entries(const char *path)
{
    char    cmd[PATH_MAX + 40];
    FILE   *fp;
    int     n = -1;

    snprintf(cmd, sizeof(cmd), "ls -A '%s' 2>/dev/null | wc -l", path);
    if ((fp = popen(cmd, "r")) != NULL) {
	if (fscanf(fp, "%d", &n) != 1)
	    n = -1;
	pclose(fp);
    }
    return (n);
}

/* mode_of - permission bits of a path (no link followed), or -1 */

static long mode_of(const char *path)
{
    struct stat st;

    return (lstat(path, &st) == 0 ? (long) (st.st_mode & 07777) : -1L);
}

/* root_dir - a directory of root's (0700) with nothing in it */

static void root_dir(const char *path)
{
    T_EQ_INT(mkdir(path, 0700), 0);
    T_EQ_INT(chown(path, 0, 0), 0);
}

/* as_root_with_nobody - 1 when root tests can run; sets *pw */

static int as_root_with_nobody(const char *name, struct passwd **pw)
{
    if (geteuid() != 0 || (*pw = getpwnam("nobody")) == NULL) {
	printf("# %s skipped: needs root and user nobody\n", name);
	return (0);
    }
    return (1);
}

/* test_names - the name rule and the paths of every kind */

static void test_names(void)
{
    char    buf[PATH_MAX];
    char    want[PATH_MAX];
    char    err[600] = "";
    char    longname[NAME_MAX + 2];

    T_OK(statefile_name_ok("main"));
    T_OK(statefile_name_ok("a.b"));
    T_OK(!statefile_name_ok(NULL));
    T_OK(!statefile_name_ok(""));
    T_OK(!statefile_name_ok(".hidden"));
    T_OK(!statefile_name_ok(".."));
    T_OK(!statefile_name_ok("a/b"));
    T_OK(!statefile_name_ok("../etc"));

    T_EQ_INT(statefile_path(&conf, STATEFILE_TOKENS, "main", ".json", buf,
			    sizeof(buf)), 0);
    snprintf(want, sizeof(want), "%s/tokens/main.json", conf.state_dir);
    T_EQ_STR(buf, want);
    T_EQ_INT(statefile_path(&conf, STATEFILE_SOURCES, "inbox", ".lock", buf,
			    sizeof(buf)), 0);
    snprintf(want, sizeof(want), "%s/sources/inbox.lock", conf.state_dir);
    T_EQ_STR(buf, want);
    T_EQ_INT(statefile_path(&conf, STATEFILE_THROTTLE, "bob@x.test", NULL,
			    buf, sizeof(buf)), 0);
    snprintf(want, sizeof(want), "%s/throttle/bob@x.test", conf.state_dir);
    T_EQ_STR(buf, want);
    T_EQ_INT(statefile_path(&conf, STATEFILE_TOKENS, "main", ".json", buf,
			    10), -1);
    T_EQ_INT(statefile_path(&conf, STATEFILE_TOKENS, "a/b", ".json", buf,
			    sizeof(buf)), -1);

    /* Each kind names what its file names stand for. */
    T_EQ_INT(statefile_path_err(&conf, STATEFILE_TOKENS, "x/y", ".json", buf,
				sizeof(buf), err, sizeof(err)), -1);
    T_CONTAINS(err, "invalid account name \"x/y\"");
    T_EQ_INT(statefile_path_err(&conf, STATEFILE_SOURCES, "../etc", ".json",
				buf, sizeof(buf), err, sizeof(err)), -1);
    T_CONTAINS(err, "invalid source name \"../etc\"");
    T_EQ_INT(statefile_path_err(&conf, STATEFILE_THROTTLE, "", NULL, buf,
				sizeof(buf), err, sizeof(err)), -1);
    T_CONTAINS(err, "invalid mailbox name");
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = 0;
    T_EQ_INT(statefile_path_err(&conf, STATEFILE_TOKENS, longname, NULL, buf,
				sizeof(buf), err, sizeof(err)), -1);
    T_CONTAINS(err, "state path too long");

    /* No state_dir: said so, nothing is made. */
    {
	struct conf none = conf;

	none.state_dir = NULL;
	T_EQ_INT(statefile_write(&none, STATEFILE_TOKENS, "a", ".json", "{}",
				 2, err, sizeof(err)), -1);
	T_CONTAINS(err, "state_dir is not set");
	none.state_dir = "";
	T_EQ_INT(statefile_lock(&none, STATEFILE_SOURCES, "a", ".lock", 0,
				err, sizeof(err)), -1);
	T_CONTAINS(err, "state_dir is not set");
    }
}

/* test_write - directories made 0700, files 0600, atomically */

static void test_write(void)
{
    struct conf c = conf;
    char    state[1200];
    char    path[PATH_MAX];
    char    text[100];
    char    err[600] = "";

    /* state_dir and its parents do not exist yet. */
    mkpath(state, sizeof(state), "w/deep/state");
    c.state_dir = state;
    T_EQ_INT(statefile_write(&c, STATEFILE_SOURCES, "inbox", ".json",
			     "{\"a\": 1}", 8, err, sizeof(err)), 0);
    T_EQ_STR(err, "");
    T_EQ_INT(mode_of(state), 0700);
    T_EQ_INT(mode_of(mkpath(path, sizeof(path), "w/deep")), 0700);
    snprintf(path, sizeof(path), "%s/sources", state);
    T_EQ_INT(mode_of(path), 0700);
    snprintf(path, sizeof(path), "%s/sources/inbox.json", state);
    T_EQ_INT(mode_of(path), 0600);
    T_EQ_STR(read_text(path, text, sizeof(text)), "{\"a\": 1}");

    /* Replaced, no temporary file left behind. */
    T_EQ_INT(statefile_write(&c, STATEFILE_SOURCES, "inbox", ".json", "{}", 2,
			     err, sizeof(err)), 0);
    T_EQ_STR(read_text(path, text, sizeof(text)), "{}");
    snprintf(path, sizeof(path), "%s/sources", state);
    T_EQ_INT(entries(path), 1);

    /* Removed; removing again, or in a kind never used, is fine. */
    T_EQ_INT(statefile_remove(&c, STATEFILE_SOURCES, "inbox", ".json",
			      err, sizeof(err)), 0);
    T_EQ_INT(entries(path), 0);
    T_EQ_INT(statefile_remove(&c, STATEFILE_SOURCES, "inbox", ".json",
			      err, sizeof(err)), 0);
    T_EQ_INT(statefile_remove(&c, STATEFILE_THROTTLE, "x", NULL,
			      err, sizeof(err)), 0);
    snprintf(path, sizeof(path), "%s/throttle", state);
    T_EQ_INT(access(path, F_OK), -1);	/* removal creates nothing */

    /* A file where state_dir should be: refused, named. */
    t_put_file(mkpath(path, sizeof(path), "w/file"), "x", 0600);
    c.state_dir = path;
    T_EQ_INT(statefile_write(&c, STATEFILE_TOKENS, "a", ".json", "{}", 2,
			     err, sizeof(err)), -1);
    T_CONTAINS(err, "is not a directory");
}

/* test_lock - one holder; max_wait 0 and a bounded wait give -2 */

static void test_lock(void)
{
    char    err[600] = "";
    char    path[PATH_MAX];
    double  start;
    int     a, b;

    a = statefile_lock(&conf, STATEFILE_TOKENS, "acct", ".lock", -1,
		       err, sizeof(err));
    T_OK(a >= 0);
    statefile_path(&conf, STATEFILE_TOKENS, "acct", ".lock", path,
		   sizeof(path));
    T_EQ_INT(mode_of(path), 0600);

    b = statefile_lock(&conf, STATEFILE_TOKENS, "acct", ".lock", 0,
		       err, sizeof(err));
    T_EQ_INT(b, -2);
    T_CONTAINS(err, "is held by another process");
    T_CONTAINS(err, path);

    start = time_mono();
    b = statefile_lock(&conf, STATEFILE_TOKENS, "acct", ".lock", 0.3,
		       err, sizeof(err));
    T_EQ_INT(b, -2);
    T_OK(time_mono() - start >= 0.25);
    T_CONTAINS(err, "timed out after 0 s waiting for the lock");

    /* Another name is another lock. */
    b = statefile_lock(&conf, STATEFILE_TOKENS, "other", ".lock", 0,
		       err, sizeof(err));
    T_OK(b >= 0);
    statefile_unlock(b);

    statefile_unlock(a);
    b = statefile_lock(&conf, STATEFILE_TOKENS, "acct", ".lock", 0,
		       err, sizeof(err));
    T_OK(b >= 0);
    statefile_unlock(b);
    statefile_unlock(-1);
}

/* walk_to - where dir_open_path() of dir/name ends, "" on error */

static const char *walk_to(const char *name, char *buf, size_t len)
{
    char    path[PATH_MAX];
    char    proc[64];
    char    err[600];
    ssize_t n = -1;
    int     fd;

    fd = dir_open_path(mkpath(path, sizeof(path), name), 0700, (uid_t) -1,
		       (gid_t) -1, 0, err, sizeof(err));
    if (fd >= 0) {
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	n = readlink(proc, buf, len - 1);
	close(fd);
    }
    buf[n > 0 ? n : 0] = 0;
    return (buf);
}

/* test_walk - dir_open_path() resolves like the kernel does */

static void test_walk(void)
{
    char    path[PATH_MAX];
    char    want[PATH_MAX];
    char    got[PATH_MAX];
    char    err[600] = "";
    int     fd;

    T_EQ_INT(mkdir(mkpath(path, sizeof(path), "walk"), 0755), 0);
    T_EQ_INT(mkdir(mkpath(path, sizeof(path), "walk/real"), 0755), 0);
    T_EQ_INT(mkdir(mkpath(path, sizeof(path), "walk/real/sub"), 0755), 0);
    /* Relative and absolute links, a chain, and "..". */
    T_EQ_INT(symlink("real", mkpath(path, sizeof(path), "walk/rel")), 0);
    mkpath(want, sizeof(want), "walk/real");
    T_EQ_INT(symlink(want, mkpath(path, sizeof(path), "walk/abs")), 0);
    T_EQ_INT(symlink("abs/sub", mkpath(path, sizeof(path), "walk/chain")), 0);
    T_EQ_INT(symlink("loop", mkpath(path, sizeof(path), "walk/loop")), 0);

    mkpath(want, sizeof(want), "walk/real/sub");
    T_EQ_STR(walk_to("walk/rel/sub/", got, sizeof(got)), want);
    T_EQ_STR(walk_to("walk/chain/../sub//.", got, sizeof(got)), want);

    snprintf(path, sizeof(path), "%s/walk/loop/x", dir);
    T_EQ_INT(dir_open_path(path, 0700, (uid_t) -1, (gid_t) -1, FILE_MKDIR,
			   err, sizeof(err)), -1);
    T_CONTAINS(err, strerror(ELOOP));

    snprintf(path, sizeof(path), "%s/walk/missing", dir);
    T_EQ_INT(dir_open_path(path, 0700, (uid_t) -1, (gid_t) -1, 0,
			   err, sizeof(err)), -1);
    T_EQ_INT(errno, ENOENT);
    T_CONTAINS(err, path);

    /* FILE_MKDIR makes what is missing, through a link too. */
    snprintf(path, sizeof(path), "%s/walk/rel/new/newer", dir);
    fd = dir_open_path(path, 0750, (uid_t) -1, (gid_t) -1, FILE_MKDIR,
		       err, sizeof(err));
    T_OK(fd >= 0);
    if (fd >= 0)
	close(fd);
    T_EQ_INT(mode_of(mkpath(path, sizeof(path), "walk/real/new/newer")),
	     0750);
}

/*
 * test_search_only - a directory on the way that the user may search but
 * not read (like $T with mode 0711 in the milter tests) is walked as
 * with open(path): intermediate components need search permission only.
 */
static void test_search_only(void)
{
    struct passwd *pw;
    char    path[PATH_MAX];
    char    err[600];
    pid_t   pid;
    int     status = -1, fd;

    if (!as_root_with_nobody("test_search_only", &pw))
	return;
    T_EQ_INT(chmod(dir, 0711), 0);
    T_EQ_INT(mkdir(mkpath(path, sizeof(path), "x711"), 0711), 0);
    T_EQ_INT(mkdir(mkpath(path, sizeof(path), "x711/open"), 0755), 0);
    fflush(stdout);
    if ((pid = fork()) == 0) {
	if (setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0)
	    _exit(2);
	fd = dir_open_path(path, 0700, (uid_t) -1, (gid_t) -1, 0,
			   err, sizeof(err));
	_exit(fd >= 0 ? 0 : 3);
    }
    T_OK(pid > 0);
    T_EQ_INT(waitpid(pid, &status, 0), pid);
    T_OK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    T_EQ_INT(chmod(dir, 0700), 0);
}

/* test_owner - as root, what is made goes to the [global] user */

static void test_owner(void)
{
    struct conf c = conf;
    struct passwd *pw;
    char    state[1200];
    char    path[PATH_MAX];
    char    err[600] = "";
    int     fd;

    if (!as_root_with_nobody("test_owner", &pw))
	return;
    c.user = "nobody";

    /* state_dir made here: the user's, with what is in it. */
    mkpath(state, sizeof(state), "own/state");
    c.state_dir = state;
    T_EQ_INT(statefile_write(&c, STATEFILE_THROTTLE, "bob@x.test", NULL,
			     "1\n", 2, err, sizeof(err)), 0);
    T_EQ_INT(t_owner_of(state), pw->pw_uid);
    T_EQ_INT(t_owner_of(mkpath(path, sizeof(path), "own")), 0);
    snprintf(path, sizeof(path), "%s/throttle", state);
    T_EQ_INT(t_owner_of(path), pw->pw_uid);
    snprintf(path, sizeof(path), "%s/throttle/bob@x.test", state);
    T_EQ_INT(t_owner_of(path), pw->pw_uid);
    T_EQ_INT(mode_of(path), 0600);
    fd = statefile_lock(&c, STATEFILE_SOURCES, "inbox", ".lock", 0,
			err, sizeof(err));
    T_OK(fd >= 0);
    statefile_unlock(fd);
    snprintf(path, sizeof(path), "%s/sources/inbox.lock", state);
    T_EQ_INT(t_owner_of(path), pw->pw_uid);

    /* An existing state_dir is the administrator's: it keeps its owner. */
    mkpath(state, sizeof(state), "own/existing");
    root_dir(state);
    T_EQ_INT(statefile_write(&c, STATEFILE_TOKENS, "a", ".json", "{}", 2,
			     err, sizeof(err)), 0);
    T_EQ_INT(t_owner_of(state), 0);
    snprintf(path, sizeof(path), "%s/tokens", state);
    T_EQ_INT(t_owner_of(path), pw->pw_uid);

    /* A kind directory of a third user is refused. */
    snprintf(path, sizeof(path), "%s/sources", state);
    T_EQ_INT(mkdir(path, 0700), 0);
    T_EQ_INT(chown(path, 12345, 12345), 0);
    T_EQ_INT(statefile_write(&c, STATEFILE_SOURCES, "a", ".json", "{}", 2,
			     err, sizeof(err)), -1);
    T_CONTAINS(err, "owned by uid 12345");
}

/*
 * test_links - running as root, a state directory whose parts the relay
 * user controls: nothing is written, locked or removed anywhere but in
 * the directory that was checked, and no file of root's changes.
 */
static void test_links(void)
{
    struct conf c = conf;
    struct passwd *pw;
    char    state[1200];
    char    rootdir[PATH_MAX];
    char    target[PATH_MAX];
    char    path[PATH_MAX];
    char    text[100];
    char    err[600] = "";
    int     fd;

    if (!as_root_with_nobody("test_links", &pw))
	return;
    c.user = "nobody";
    mkpath(rootdir, sizeof(rootdir), "rootdir");
    root_dir(rootdir);
    mkpath(target, sizeof(target), "rootdir/victim");
    t_put_file(target, "root only\n", 0600);

    /* state_dir of the user's, with each kind directory a link. */
    mkpath(state, sizeof(state), "users");
    T_EQ_INT(mkdir(state, 0700), 0);
    T_EQ_INT(chown(state, pw->pw_uid, pw->pw_gid), 0);
    c.state_dir = state;
    snprintf(path, sizeof(path), "%s/throttle", state);
    T_EQ_INT(symlink(rootdir, path), 0);
    T_EQ_INT(statefile_write(&c, STATEFILE_THROTTLE, "victim", NULL, "1\n",
			     2, err, sizeof(err)), -1);
    T_CONTAINS(err, "not a directory");
    /* throttle_set() too (it used to write through the link). */
    T_EQ_INT(throttle_set(&c, "victim", 60), -1);
    T_EQ_INT(throttle_set(&c, "new@x.test", 60), -1);
    snprintf(path, sizeof(path), "%s/sources", state);
    T_EQ_INT(symlink(rootdir, path), 0);
    T_EQ_INT(statefile_lock(&c, STATEFILE_SOURCES, "victim", NULL, 0,
			    err, sizeof(err)), -1);
    T_CONTAINS(err, "not a directory");
    snprintf(path, sizeof(path), "%s/tokens", state);
    T_EQ_INT(symlink(rootdir, path), 0);
    T_EQ_INT(statefile_remove(&c, STATEFILE_TOKENS, "victim", NULL,
			      err, sizeof(err)), -1);
    T_CONTAINS(err, "not a directory");
    T_EQ_STR(read_text(target, text, sizeof(text)), "root only\n");
    T_EQ_INT(t_owner_of(target), 0);
    T_EQ_INT(entries(rootdir), 1);
    T_EQ_INT(t_owner_of(rootdir), 0);

    /* A link at the final name is replaced, never followed. */
    mkpath(state, sizeof(state), "users2");
    T_EQ_INT(mkdir(state, 0700), 0);
    c.state_dir = state;
    snprintf(path, sizeof(path), "%s/throttle", state);
    T_EQ_INT(mkdir(path, 0700), 0);
    T_EQ_INT(chown(state, pw->pw_uid, pw->pw_gid), 0);
    T_EQ_INT(chown(path, pw->pw_uid, pw->pw_gid), 0);
    snprintf(path, sizeof(path), "%s/throttle/bob@x.test", state);
    T_EQ_INT(symlink(target, path), 0);
    T_EQ_INT(throttle_set(&c, "bob@x.test", 60), 0);
    T_OK(mode_of(path) == 0600);	/* a file now, not the link */
    T_OK(throttle_until(&c, "bob@x.test") > time(NULL));
    T_EQ_STR(read_text(target, text, sizeof(text)), "root only\n");
    T_EQ_INT(t_owner_of(target), 0);

    /* state_dir reached through a link in the user's directory. */
    snprintf(path, sizeof(path), "%s/link", state);
    T_EQ_INT(symlink(rootdir, path), 0);
    snprintf(path, sizeof(path), "%s/link/state", state);
    c.state_dir = path;
    T_EQ_INT(statefile_write(&c, STATEFILE_TOKENS, "a", ".json", "{}", 2,
			     err, sizeof(err)), -1);
    T_CONTAINS(err, "symbolic link in a directory that users other than "
	       "root can change");
    T_EQ_INT(entries(rootdir), 1);

    /* The same for a plain file_write_atomic() (a pid file). */
    snprintf(path, sizeof(path), "%s/link/m365-milter.pid", state);
    T_EQ_INT(file_write_atomic(path, "1\n", 2, 0644, pw->pw_uid, pw->pw_gid,
			       err, sizeof(err)), -1);
    T_CONTAINS(err, "symbolic link");
    T_EQ_INT(entries(rootdir), 1);

    /* A link of root's in a directory only root can change: followed. */
    mkpath(path, sizeof(path), "rootlink");
    T_EQ_INT(symlink(rootdir, path), 0);
    mkpath(path, sizeof(path), "rootlink/state");
    c.state_dir = path;
    T_EQ_INT(statefile_write(&c, STATEFILE_TOKENS, "a", ".json", "{}", 2,
			     err, sizeof(err)), 0);
    mkpath(path, sizeof(path), "rootdir/state/tokens/a.json");
    T_EQ_INT(t_owner_of(path), pw->pw_uid);

    /* In a sticky directory anybody writes to: root's link only. */
    mkpath(path, sizeof(path), "sticky");
    T_EQ_INT(mkdir(path, 0700), 0);
    T_EQ_INT(chmod(path, 01777), 0);
    mkpath(path, sizeof(path), "sticky/root");
    T_EQ_INT(symlink(rootdir, path), 0);
    mkpath(path, sizeof(path), "sticky/root/state");
    c.state_dir = path;
    fd = statefile_lock(&c, STATEFILE_TOKENS, "a", ".lock", 0,
			err, sizeof(err));
    T_OK(fd >= 0);
    statefile_unlock(fd);
    mkpath(path, sizeof(path), "sticky/nobody");
    T_EQ_INT(symlink(rootdir, path), 0);
    T_EQ_INT(lchown(path, pw->pw_uid, pw->pw_gid), 0);
    mkpath(path, sizeof(path), "sticky/nobody/state");
    c.state_dir = path;
    T_EQ_INT(statefile_lock(&c, STATEFILE_TOKENS, "b", ".lock", 0,
			    err, sizeof(err)), -1);
    T_CONTAINS(err, "symbolic link");
    mkpath(path, sizeof(path), "rootdir/state/tokens/b.lock");
    T_EQ_INT(access(path, F_OK), -1);
}

int     main(void)
{
    char    state[1100];
    char    logf[1100];

    t_tmpdir(dir, sizeof(dir), "test_statefile");
    snprintf(state, sizeof(state), "%s/state", dir);
    snprintf(logf, sizeof(logf), "%s/log", dir);
    log_open("test_statefile");
    log_to_file(logf);
    memset(&conf, 0, sizeof(conf));
    conf.state_dir = state;
    conf.path = "test.conf";

    T_RUN(test_names);
    T_RUN(test_write);
    T_RUN(test_lock);
    T_RUN(test_walk);
    T_RUN(test_search_only);
    T_RUN(test_owner);
    T_RUN(test_links);
    t_rm_rf(dir);
    return (T_DONE());
}
