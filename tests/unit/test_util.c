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
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#endif

#include <openssl/rand.h>

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

#if defined(__linux__) && defined(SECCOMP_MODE_FILTER) && defined(__x86_64__)
#define T_AUDIT_ARCH	AUDIT_ARCH_X86_64
#elif defined(__linux__) && defined(SECCOMP_MODE_FILTER) && defined(__aarch64__)
#define T_AUDIT_ARCH	AUDIT_ARCH_AARCH64
#endif

#ifdef T_AUDIT_ARCH

/*
 * t_no_randomness - from now on getrandom() fails (ENOSYS) and no file
 * can be opened (EACCES): OpenSSL's generator cannot seed, and
 * /dev/urandom cannot be read.  A seccomp filter: no root needed.
 */
static int t_no_randomness(void)
{
    struct sock_filter f[] = {
	BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, T_AUDIT_ARCH, 1, 0),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_getrandom, 0, 1),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat, 0, 1),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EACCES),
#ifdef __NR_open
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_open, 0, 1),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EACCES),
#endif
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {(unsigned short) (sizeof(f) / sizeof(f[0])), f};

    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0
	|| prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
	return (-1);
    return (0);
}

#endif

/*
 * test_random_fails - without any source of randomness random_hex()
 * returns -1 and an empty text; it neither exits (the out-of-memory hook
 * did: "4.3.0 out of memory", exit 75) nor gives a weak value.
 */
static void test_random_fails(void)
{
#ifdef T_AUDIT_ARCH
    char    hex[33];
    unsigned char b[16];
    pid_t   pid;
    int     status = -1;

    T_EQ_INT(random_hex(hex, 16), 0);		/* the normal case */
    T_EQ_INT(strlen(hex), 32);
    T_EQ_INT(strspn(hex, "0123456789abcdef"), 32);
    fflush(stdout);
    if ((pid = fork()) == 0) {
	if (t_no_randomness() < 0)
	    _exit(2);
	if (RAND_bytes(b, (int) sizeof(b)) == 1)
	    _exit(3);				/* could not provoke it */
	memset(hex, 'x', sizeof(hex));
	if (random_hex(hex, 16) != -1)
	    _exit(4);
	_exit(hex[0] == 0 ? 0 : 5);
    }
    T_OK(pid > 0);
    T_EQ_INT(waitpid(pid, &status, 0), pid);
    T_OK(WIFEXITED(status));
    T_EQ_INT(WEXITSTATUS(status), 0);
#else
    printf("ok - test_random_fails: skipped (no seccomp filter here)\n");
#endif
}

/*
 * ref_base64 - the hand-written encoder util.c had before it used
 * OpenSSL: base64_encode() must give these bytes exactly (sendMail
 * MIME bodies, JWTs and PKCE challenges must not change).
 */
static size_t ref_base64(char *out, const unsigned char *in, size_t n)
{
    static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
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

/* test_base64_same - the OpenSSL encoder writes the old bytes, no more */

static void test_base64_same(void)
{
    static const size_t lens[] = {12286, 12287, 12288, 12289, 12290, 24577,
    65536, 3 * 16 * 1024, 100003};
    unsigned char *in = xmalloc(100003);
    char   *want = xmalloc(base64_encoded_len(100003) + 1);
    char   *got = xmalloc(base64_encoded_len(100003) + 8);
    size_t  i, n, k, wlen, glen, bad = 0;

    T_OK(RAND_bytes(in, 100003) == 1);
    for (k = 0; k < 1000 + sizeof(lens) / sizeof(lens[0]); k++) {
	n = k < 1000 ? k : lens[k - 1000];
	wlen = ref_base64(want, in, n);
	memset(got, '#', base64_encoded_len(n) + 8);
	glen = base64_encode(got, in, n);
	if (glen != wlen || glen != base64_encoded_len(n)
	    || memcmp(got, want, wlen) != 0)
	    bad++;
	/* Not one byte past the encoded length (msg.c fills curl's buffer). */
	for (i = glen; i < glen + 8; i++)
	    if (got[i] != '#')
		bad++;
    }
    T_EQ_INT(bad, 0);
    /* All 256 byte values, every position in a quantum. */
    for (i = 0; i < 258; i++)
	in[i] = (unsigned char) i;
    for (k = 0; k < 3; k++) {
	wlen = ref_base64(want, in + k, 256);
	glen = base64_encode(got, in + k, 256);
	T_CHECK(glen == wlen && memcmp(got, want, wlen) == 0, "offset %lu",
		(unsigned long) k);
    }
    free(in);
    free(want);
    free(got);
}

struct b64url_case {
    const char *in;
    const char *out;			/* NULL: refused */
    size_t  len;
};

static const struct b64url_case b64url_cases[] = {
    {"-_8", "\xfb\xff", 2},
    {"Zm9vYmFy", "foobar", 6},
    {"Zm9vYmE", "fooba", 5},
    {"Zg", "f", 1},
    {"eyJyb2xlcyI6WyJNYWlsLlNlbmQiXX0", "{\"roles\":[\"Mail.Send\"]}", 23},
    {"", NULL, 0},				/* empty */
    {"Z", NULL, 0},				/* 4k + 1 characters */
    {"Zm9vY", NULL, 0},
    {"Zg==", NULL, 0},			/* padding is not base64url */
    {"Zm9v+mFy", NULL, 0},			/* base64, not base64url */
    {"Zm9v/mFy", NULL, 0},
    {"Zm9v YmFy", NULL, 0},			/* white space */
    {"Zm9v\nYmFy", NULL, 0},
    {"Zm9vYmF.", NULL, 0},
};

/* test_base64url_decode - strict, as m365ctl test reads a JWT */

static void test_base64url_decode(void)
{
    const struct b64url_case *c;
    unsigned char *out, *rt;
    char   *enc;
    size_t  i, len;

    for (i = 0; i < sizeof(b64url_cases) / sizeof(b64url_cases[0]); i++) {
	c = b64url_cases + i;
	len = 999;
	out = base64url_decode(c->in, strlen(c->in), &len);
	if (c->out == NULL) {
	    T_CHECK(out == NULL, "\"%s\" is refused", c->in);
	} else if (out == NULL) {
	    T_CHECK(0, "\"%s\" decodes", c->in);
	} else {
	    T_EQ_INT(len, c->len);
	    T_OK(memcmp(out, c->out, len) == 0);
	    T_EQ_INT(out[len], 0);		/* NUL-terminated */
	}
	free(out);
    }
    /* Only n bytes are read. */
    out = base64url_decode("Zm9v!!!", 4, &len);
    T_OK(out != NULL && len == 3 && memcmp(out, "foo", 3) == 0);
    free(out);
    /* Round trip with the encoder. */
    rt = xmalloc(300);
    for (i = 0; i < 300; i++)
	rt[i] = (unsigned char) (i * 7);
    for (len = 1; len < 300; len += 37) {
	enc = base64url_encode(rt, len);
	out = base64url_decode(enc, strlen(enc), &i);
	T_OK(out != NULL && i == len && memcmp(out, rt, len) == 0);
	free(out);
	free(enc);
    }
    free(rt);
}

/* test_url - one escaper (a set of bytes kept), one form decoder */

static void test_url(void)
{
    char   *s;

    s = url_escape("a b&c=d/\xc3\xa9~._-");
    T_EQ_STR(s, "a%20b%26c%3Dd%2F%C3%A9~._-");
    free(s);
    s = url_escape_keep("a.b+tag@contoso.com/x y", "@+");
    T_EQ_STR(s, "a.b+tag@contoso.com%2Fx%20y");	/* Graph /users/{..} */
    free(s);
    s = url_escape_keep("a+b@c", "");
    T_EQ_STR(s, "a%2Bb%40c");
    free(s);
    s = url_form_decode("x%20y+z%2B%2b%zz%4", 18);
    T_EQ_STR(s, "x y z++%zz%4");			/* bad %: kept */
    free(s);
    s = url_form_decode("code=abc", 4);		/* only len bytes */
    T_EQ_STR(s, "code");
    free(s);
    s = url_form_decode("a%00b", 5);
    T_EQ_STR(s, "a");				/* ends at a NUL */
    free(s);
    s = url_form_decode("", 0);
    T_EQ_STR(s, "");
    free(s);
}

/* test_uuid - version 4, RFC 4122 variant, lower case, random */

static void test_uuid(void)
{
    char    a[37], b[37];
    size_t  i;

    T_EQ_INT(random_uuid(a, sizeof(a)), 0);
    T_EQ_INT(random_uuid(b, sizeof(b)), 0);
    T_EQ_INT(strlen(a), 36);
    T_OK(strcmp(a, b) != 0);
    for (i = 0; i < 36; i++) {
	if (i == 8 || i == 13 || i == 18 || i == 23)
	    T_EQ_INT(a[i], '-');
	else
	    T_OK(strchr("0123456789abcdef", a[i]) != NULL);
    }
    T_EQ_INT(a[14], '4');
    T_OK(strchr("89ab", a[19]) != NULL);
}

int     main(void)
{
    t_tmpdir(dir, sizeof(dir), "test_util");
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
    T_RUN(test_random_fails);
    T_RUN(test_base64_same);
    T_RUN(test_base64url_decode);
    T_RUN(test_url);
    T_RUN(test_uuid);
    t_rm_rf(dir);
    return (T_DONE());
}
