/* test_tokstore - token store: format, permissions, atomicity, locking */
#include "config.h"

#include <dirent.h>
#include <pwd.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"
#include "tokstore.h"
#include "util.h"
#include "t.h"
#include "t_file.h"

#define NCHILD	8

static char dir[1024];
static char state[1100];
static struct conf conf;

/* count_matching - directory entries whose name contains a string */

static int count_matching(const char *path, const char *needle)
{
    DIR    *d = opendir(path);
    struct dirent *de;
    int     n = 0;

    if (d == NULL)
	return (-1);
    while ((de = readdir(d)) != NULL)
	if (strstr(de->d_name, needle))
	    n++;
    closedir(d);
    return (n);
}

static void test_paths(void)
{
    char    buf[PATH_MAX];
    char    want[PATH_MAX];
    char    err[300] = "";
    struct tokstore ts;

    T_EQ_INT(tokstore_path(&conf, "main", ".json", buf, sizeof(buf)), 0);
    snprintf(want, sizeof(want), "%s/tokens/main.json", state);
    T_EQ_STR(buf, want);
    T_EQ_INT(tokstore_path(&conf, "../evil", ".json", buf, sizeof(buf)), -1);
    T_EQ_INT(tokstore_path(&conf, ".hidden", ".json", buf, sizeof(buf)), -1);
    T_EQ_INT(tokstore_path(&conf, "a/b", ".json", buf, sizeof(buf)), -1);
    T_EQ_INT(tokstore_path(&conf, "", ".json", buf, sizeof(buf)), -1);
    T_EQ_INT(tokstore_path(&conf, "main", ".json", buf, 10), -1);
    T_EQ_INT(tokstore_load(&conf, "x/y", &ts, err, sizeof(err)), -1);
    T_CONTAINS(err, "invalid account name");
}

static void test_missing(void)
{
    struct tokstore ts;
    char    err[300] = "";

    T_EQ_INT(tokstore_load(&conf, "nobody", &ts, err, sizeof(err)), 0);
    T_OK(ts.access_token == NULL);
    T_OK(ts.refresh_token == NULL);
    T_EQ_INT(ts.offline, 0);
    T_EQ_INT(ts.token_requests, 0);
    tokstore_clear(&ts);
}

static void test_round_trip(void)
{
    struct tokstore in, out;
    char    err[300] = "";
    char    path[PATH_MAX];
    char    tokdir[PATH_MAX];
    struct stat st;
    int     i;

    memset(&in, 0, sizeof(in));
    in.access_token = xstrdup("eyJ0eXAiOiJKV1QifQ.access\"quoted\\");
    in.access_expires = 1900000000;
    in.refresh_token = xstrdup("0.AAAA-refresh");
    in.refresh_issued = 1800000000;
    in.signed_in = 1700000000;
    in.scope = xstrdup("Mail.Send User.Read");
    in.offline = 1;
    in.last_error = xstrdup("AADSTS50173 invalid_grant: revoked");
    in.remedy = xstrdup("sign in again with m365ctl login main");
    in.last_error_at = 1800000100;
    in.token_requests = 42;
    for (i = 0; i < 3; i++)
	T_EQ_INT(tokstore_save(&conf, "main", &in, err, sizeof(err)), 0);
    T_EQ_STR(err, "");

    T_EQ_INT(tokstore_load(&conf, "main", &out, err, sizeof(err)), 0);
    T_EQ_STR(out.access_token, in.access_token);
    T_EQ_INT(out.access_expires, in.access_expires);
    T_EQ_STR(out.refresh_token, in.refresh_token);
    T_EQ_INT(out.refresh_issued, in.refresh_issued);
    T_EQ_INT(out.signed_in, in.signed_in);
    T_EQ_STR(out.scope, in.scope);
    T_EQ_INT(out.offline, 1);
    T_EQ_STR(out.last_error, in.last_error);
    T_EQ_STR(out.remedy, in.remedy);
    T_EQ_INT(out.last_error_at, in.last_error_at);
    T_EQ_INT(out.token_requests, 42);
    tokstore_clear(&out);

    /* Cleared entries save as nulls and load back empty. */
    tokstore_clear(&in);
    T_OK(in.access_token == NULL && in.token_requests == 0);
    T_EQ_INT(tokstore_save(&conf, "main", &in, err, sizeof(err)), 0);
    T_EQ_INT(tokstore_load(&conf, "main", &out, err, sizeof(err)), 0);
    T_OK(out.access_token == NULL && out.refresh_token == NULL);
    T_EQ_INT(out.offline, 0);
    tokstore_clear(&out);

    /* Modes: directory 0700, file 0600, no temporary files left. */
    snprintf(tokdir, sizeof(tokdir), "%s/tokens", state);
    T_EQ_INT(stat(tokdir, &st), 0);
    T_EQ_INT(st.st_mode & 07777, 0700);
    tokstore_path(&conf, "main", ".json", path, sizeof(path));
    T_EQ_INT(stat(path, &st), 0);
    T_EQ_INT(st.st_mode & 07777, 0600);
    T_EQ_INT(count_matching(tokdir, ".tmp"), 0);
    T_EQ_INT(count_matching(tokdir, "main.json"), 1);

    /* tokstore_remove, then the entry is empty again. */
    T_EQ_INT(tokstore_remove(&conf, "main", err, sizeof(err)), 0);
    T_EQ_INT(tokstore_remove(&conf, "main", err, sizeof(err)), 0);
    T_EQ_INT(tokstore_load(&conf, "main", &out, err, sizeof(err)), 0);
    T_OK(out.access_token == NULL);
    tokstore_clear(&out);
}

static void test_private(void)
{
    struct tokstore ts;
    char    err[600] = "";
    char    path[PATH_MAX];

    memset(&ts, 0, sizeof(ts));
    ts.refresh_token = xstrdup("rt");
    T_EQ_INT(tokstore_save(&conf, "perm", &ts, err, sizeof(err)), 0);
    tokstore_clear(&ts);
    tokstore_path(&conf, "perm", ".json", path, sizeof(path));
    T_EQ_INT(chmod(path, 0644), 0);
    T_EQ_INT(tokstore_load(&conf, "perm", &ts, err, sizeof(err)), -1);
    T_CONTAINS(err, "chmod 600");
    T_CONTAINS(err, path);
    T_OK(ts.refresh_token == NULL);
    T_EQ_INT(chmod(path, 0600), 0);
    T_EQ_INT(tokstore_load(&conf, "perm", &ts, err, sizeof(err)), 0);
    T_EQ_STR(ts.refresh_token, "rt");
    tokstore_clear(&ts);
}

static void test_damaged(void)
{
    struct tokstore ts;
    char    err[600] = "";
    char    path[PATH_MAX];

    tokstore_path(&conf, "bad", ".json", path, sizeof(path));
    T_EQ_INT(file_write_atomic(path, "{\"access_token\": ", 17, 0600,
			       (uid_t) -1, (gid_t) -1, err, sizeof(err)), 0);
    T_EQ_INT(tokstore_load(&conf, "bad", &ts, err, sizeof(err)), -1);
    T_CONTAINS(err, "damaged");
    T_CONTAINS(err, "m365ctl login bad");
}

/* test_owner - as root, files go to [global] user (skipped otherwise) */

static void test_owner(void)
{
    struct tokstore ts;
    struct passwd *pw;
    struct stat st;
    char    err[600] = "";
    char    path[PATH_MAX];
    char    tokdir[PATH_MAX];
    int     fd;

    if (geteuid() != 0 || (pw = getpwnam("nobody")) == NULL) {
	printf("# test_owner skipped: needs root and user nobody\n");
	return;
    }
    conf.user = "nobody";
    memset(&ts, 0, sizeof(ts));
    T_EQ_INT(tokstore_save(&conf, "owned", &ts, err, sizeof(err)), 0);
    tokstore_path(&conf, "owned", ".json", path, sizeof(path));
    T_EQ_INT(stat(path, &st), 0);
    T_EQ_INT(st.st_uid, pw->pw_uid);
    T_EQ_INT(st.st_mode & 07777, 0600);
    snprintf(tokdir, sizeof(tokdir), "%s/tokens", state);
    T_EQ_INT(stat(tokdir, &st), 0);
    T_EQ_INT(st.st_uid, pw->pw_uid);
    fd = tokstore_lock(&conf, "owned", err, sizeof(err));
    T_OK(fd >= 0);
    tokstore_unlock(fd);
    tokstore_path(&conf, "owned", ".lock", path, sizeof(path));
    T_EQ_INT(stat(path, &st), 0);
    T_EQ_INT(st.st_uid, pw->pw_uid);
    T_EQ_INT(st.st_mode & 07777, 0600);
    conf.user = NULL;
}

/* test_tampered - token files are judged after they are opened */

static void test_tampered(void)
{
    struct tokstore ts;
    char    err[600] = "";
    char    good[PATH_MAX];
    char    path[PATH_MAX];

    memset(&ts, 0, sizeof(ts));
    ts.access_token = xstrdup("at-good");
    T_EQ_INT(tokstore_save(&conf, "good", &ts, err, sizeof(err)), 0);
    tokstore_clear(&ts);
    tokstore_path(&conf, "good", ".json", good, sizeof(good));

    /* A symbolic link to a good token file is not followed. */
    tokstore_path(&conf, "sym", ".json", path, sizeof(path));
    T_EQ_INT(symlink(good, path), 0);
    T_EQ_INT(tokstore_load(&conf, "sym", &ts, err, sizeof(err)), -1);
    T_CONTAINS(err, "symbolic link");
    T_OK(ts.access_token == NULL);
    tokstore_clear(&ts);

    /* A FIFO is refused at once (nobody writes to it). */
    tokstore_path(&conf, "fifo", ".json", path, sizeof(path));
    T_EQ_INT(mkfifo(path, 0600), 0);
    T_EQ_INT(tokstore_load(&conf, "fifo", &ts, err, sizeof(err)), -1);
    T_CONTAINS(err, "not a regular file");
    tokstore_clear(&ts);

    /* As root: a third user's token file is not trusted. */
    if (geteuid() == 0) {
	tokstore_path(&conf, "third", ".json", path, sizeof(path));
	t_put_file(path, "{\"access_token\": \"at-third\"}", 0600);
	T_EQ_INT(chown(path, 12345, 12345), 0);
	T_EQ_INT(tokstore_load(&conf, "third", &ts, err, sizeof(err)), -1);
	T_CONTAINS(err, "owned by uid 12345");
	T_OK(ts.access_token == NULL);
	tokstore_clear(&ts);
    }
}

/* lock_link_refused - ACCOUNT.lock a link to target: refused, kept */

static void lock_link_refused(const char *account, const char *target,
			              int hard, const char *want)
{
    char    path[PATH_MAX];
    char    err[600] = "";
    int     fd;

    tokstore_path(&conf, account, ".lock", path, sizeof(path));
    T_EQ_INT(hard ? link(target, path) : symlink(target, path), 0);
    fd = tokstore_lock(&conf, account, err, sizeof(err));
    T_EQ_INT(fd, -1);
    tokstore_unlock(fd);
    T_CONTAINS(err, want);
    T_EQ_INT(t_owner_of(target), 0);
}

/*
 * test_lock_links - as root (m365ctl), a lock file that the relay user
 * replaced by a link to a file of root's is refused, and that file keeps
 * its owner (skipped when not root).
 */
static void test_lock_links(void)
{
    struct passwd *pw;
    char    err[600] = "";
    char    target[PATH_MAX];
    char    path[PATH_MAX];
    char    state2[1200];
    char    rootdir[1200];
    struct tokstore ts;
    int     fd;

    if (geteuid() != 0 || (pw = getpwnam("nobody")) == NULL) {
	printf("# test_lock_links skipped: needs root and user nobody\n");
	return;
    }
    conf.user = "nobody";
    snprintf(target, sizeof(target), "%s/root-secret", dir);
    t_put_file(target, "root only\n", 0600);

    lock_link_refused("hard", target, 1, "hard links");
    lock_link_refused("soft", target, 0, "symbolic link");

    /* A lock file of a third user. */
    tokstore_path(&conf, "third", ".lock", path, sizeof(path));
    t_put_file(path, "", 0600);
    T_EQ_INT(chown(path, 12345, 12345), 0);
    fd = tokstore_lock(&conf, "third", err, sizeof(err));
    T_EQ_INT(fd, -1);
    tokstore_unlock(fd);
    T_CONTAINS(err, "owned by uid 12345");

    /* The tokens directory replaced by a link to root's directory. */
    snprintf(state2, sizeof(state2), "%s/state2", dir);
    snprintf(rootdir, sizeof(rootdir), "%s/rootdir", dir);
    T_EQ_INT(mkdir(state2, 0700), 0);
    T_EQ_INT(chown(state2, pw->pw_uid, pw->pw_gid), 0);
    T_EQ_INT(mkdir(rootdir, 0700), 0);
    snprintf(path, sizeof(path), "%s/tokens", state2);
    T_EQ_INT(symlink(rootdir, path), 0);
    conf.state_dir = state2;
    fd = tokstore_lock(&conf, "acct", err, sizeof(err));
    T_EQ_INT(fd, -1);
    tokstore_unlock(fd);
    T_CONTAINS(err, "not a directory");
    memset(&ts, 0, sizeof(ts));
    T_EQ_INT(tokstore_save(&conf, "acct", &ts, err, sizeof(err)), -1);
    T_EQ_INT(t_owner_of(rootdir), 0);
    snprintf(path, sizeof(path), "%s/acct.lock", rootdir);
    T_EQ_INT(access(path, F_OK), -1);
    snprintf(path, sizeof(path), "%s/acct.json", rootdir);
    T_EQ_INT(access(path, F_OK), -1);
    conf.state_dir = state;

    /* Root reads the files it gave to the user once that user is named. */
    memset(&ts, 0, sizeof(ts));
    ts.access_token = xstrdup("at-owned");
    T_EQ_INT(tokstore_save(&conf, "given", &ts, err, sizeof(err)), 0);
    tokstore_clear(&ts);
    file_set_service_user("nobody");
    T_EQ_INT(tokstore_load(&conf, "given", &ts, err, sizeof(err)), 0);
    T_EQ_STR(ts.access_token, "at-owned");
    tokstore_clear(&ts);
    file_set_service_user(NULL);
    T_EQ_INT(tokstore_load(&conf, "given", &ts, err, sizeof(err)), -1);
    tokstore_clear(&ts);
    conf.user = NULL;
}

/*
 * test_remove_links - as root (m365ctl logout), a tokens directory that
 * the relay user replaced by a link to root's directory: nothing is
 * removed there (skipped when not root)
 */
static void test_remove_links(void)
{
    struct passwd *pw;
    char    err[600] = "";
    char    state3[1200];
    char    rootdir[1200];
    char    path[PATH_MAX];

    if (geteuid() != 0 || (pw = getpwnam("nobody")) == NULL) {
	printf("# test_remove_links skipped: needs root and user nobody\n");
	return;
    }
    conf.user = "nobody";
    snprintf(state3, sizeof(state3), "%s/state3", dir);
    snprintf(rootdir, sizeof(rootdir), "%s/rootdir3", dir);
    T_EQ_INT(mkdir(state3, 0700), 0);
    T_EQ_INT(chown(state3, pw->pw_uid, pw->pw_gid), 0);
    T_EQ_INT(mkdir(rootdir, 0700), 0);
    snprintf(path, sizeof(path), "%s/acct.json", rootdir);
    t_put_file(path, "{}", 0600);
    snprintf(path, sizeof(path), "%s/tokens", state3);
    T_EQ_INT(symlink(rootdir, path), 0);
    conf.state_dir = state3;
    T_EQ_INT(tokstore_remove(&conf, "acct", err, sizeof(err)), -1);
    T_CONTAINS(err, "not a directory");
    conf.state_dir = state;
    snprintf(path, sizeof(path), "%s/acct.json", rootdir);
    T_EQ_INT(access(path, F_OK), 0);
    T_EQ_INT(t_owner_of(path), 0);
    conf.user = NULL;
}

/* child - the auth.c pattern: check, then refresh under the lock */

static void child(int barrier, int report, const char *counter)
{
    struct tokstore ts;
    struct strbuf cnt;
    char    err[600];
    char    line[200];
    char    c;
    long    n = 0;
    int     fd, len;

    /* Wait until the parent opens the gate (closes the pipe). */
    if (read(barrier, &c, 1) != 0)
	_exit(2);
    if ((fd = tokstore_lock(&conf, "race", err, sizeof(err))) < 0)
	_exit(3);
    if (tokstore_load(&conf, "race", &ts, err, sizeof(err)) < 0)
	_exit(4);
    if (ts.access_token == NULL || ts.access_expires < time(NULL) + 300) {
	/* "Token request": count it, take a while, store the result. */
	if (file_read(counter, 100, &cnt, err, sizeof(err)) == 0) {
	    if (parse_long(cnt.data, 0, 1000, &n) < 0)
		n = 0;
	    strbuf_free(&cnt);
	}
	snprintf(line, sizeof(line), "%ld", n + 1);
	if (file_write_atomic(counter, line, strlen(line), 0600, (uid_t) -1,
			      (gid_t) -1, err, sizeof(err)) < 0)
	    _exit(5);
	usleep(100000);
	tokstore_clear(&ts);
	snprintf(line, sizeof(line), "token-from-%ld", (long) getpid());
	ts.access_token = xstrdup(line);
	ts.access_expires = time(NULL) + 3600;
	ts.token_requests = n + 1;
	if (tokstore_save(&conf, "race", &ts, err, sizeof(err)) < 0)
	    _exit(6);
    }
    tokstore_unlock(fd);
    len = snprintf(line, sizeof(line), "%s\n", ts.access_token);
    if (write(report, line, (size_t) len) != len)
	_exit(7);
    tokstore_clear(&ts);
    _exit(0);
}

static void test_lock(void)
{
    char    counter[PATH_MAX];
    const char *seen[NCHILD];
    char    buf[4096];
    struct strbuf cnt;
    struct tokstore ts;
    char    err[600] = "";
    int     gate[2], rep[2];
    pid_t   pids[NCHILD];
    size_t  got = 0;
    ssize_t n;
    int     i, status, ok_exit = 0, nseen = 0;
    char   *line, *next;

    snprintf(counter, sizeof(counter), "%s/refresh-count", dir);
    T_EQ_INT(pipe(gate), 0);
    T_EQ_INT(pipe(rep), 0);
    fflush(stdout);
    for (i = 0; i < NCHILD; i++) {
	if ((pids[i] = fork()) == 0) {
	    close(gate[1]);
	    close(rep[0]);
	    child(gate[0], rep[1], counter);
	}
	T_OK(pids[i] > 0);
    }
    close(gate[0]);
    close(rep[1]);
    close(gate[1]);				/* open the gate: all start */
    while (got < sizeof(buf) - 1
	   && (n = read(rep[0], buf + got, sizeof(buf) - 1 - got)) > 0)
	got += (size_t) n;
    buf[got] = 0;
    close(rep[0]);
    for (i = 0; i < NCHILD; i++) {
	if (pids[i] > 0 && waitpid(pids[i], &status, 0) == pids[i]
	    && WIFEXITED(status) && WEXITSTATUS(status) == 0)
	    ok_exit++;
    }
    T_EQ_INT(ok_exit, NCHILD);

    /* Exactly one refresh ... */
    T_EQ_INT(file_read(counter, 100, &cnt, err, sizeof(err)), 0);
    T_EQ_STR(cnt.data, "1");
    strbuf_free(&cnt);

    /* ... and everybody uses its token. */
    T_EQ_INT(tokstore_load(&conf, "race", &ts, err, sizeof(err)), 0);
    T_OK(ts.access_token != NULL);
    T_EQ_INT(ts.token_requests, 1);
    for (line = buf; line && *line && nseen < NCHILD; line = next) {
	if ((next = strchr(line, '\n')) != NULL)
	    *next++ = 0;
	seen[nseen++] = line;
    }
    T_EQ_INT(nseen, NCHILD);
    for (i = 0; i < nseen; i++)
	T_EQ_STR(seen[i], ts.access_token);
    tokstore_clear(&ts);
}

int     main(void)
{
    char    logf[1200];

    t_tmpdir(dir, sizeof(dir), "test_tokstore");
    /* state_dir does not exist yet: the store creates it. */
    snprintf(state, sizeof(state), "%s/state", dir);
    snprintf(logf, sizeof(logf), "%s/log", dir);
    log_open("test_tokstore");
    log_to_file(logf);
    memset(&conf, 0, sizeof(conf));
    conf.state_dir = state;
    conf.user = NULL;

    T_RUN(test_paths);
    T_RUN(test_missing);
    T_RUN(test_round_trip);
    T_RUN(test_private);
    T_RUN(test_damaged);
    T_RUN(test_lock);
    T_RUN(test_owner);
    T_RUN(test_tampered);
    T_RUN(test_lock_links);
    T_RUN(test_remove_links);
    t_rm_rf(dir);
    return (T_DONE());
}
