/*
 * NAME
 *	m365-milter 8
 * SUMMARY
 *	milter for Postfix and Sendmail: Microsoft 365 policy or delivery
 * SYNOPSIS
 *	m365-milter [-c file] [-p socket] [-f] [-n] [-v] [-P pidfile]
 * DESCRIPTION
 *	Loads the configuration, detaches (unless -f), writes the pid
 *	file and forks.  The parent is the supervisor (supervise.c), the
 *	child the worker: it opens the milter socket (a unix socket is
 *	created with the [global] user's ids and a umask for socket_mode,
 *	so it is born with its final owner and mode; the directory must
 *	not be writable by anybody else), drops root privileges to the
 *	[global] user (priv.c), tells the supervisor it is ready and runs
 *	libmilter.  The supervisor then drops to the same user.  Every
 *	program that holds secrets is non-dumpable (util_nodump()).
 *
 *	Signals.  libmilter owns SIGHUP, SIGTERM and SIGINT in the
 *	process that runs it: its own signal thread sigwait()s for them
 *	and stops the milter on SIGHUP as on SIGTERM (libmilter/signal.c:
 *	"case SIGHUP: case SIGTERM: mi_stop_milters(MILTER_STOP)").  A
 *	second thread waiting for SIGHUP would race with it (which thread
 *	gets the signal is unspecified).  So SIGHUP goes to the
 *	supervisor, whose pid is in the pid file and which never calls
 *	libmilter; it turns SIGHUP (and SIGUSR1) into SIGUSR1 for the
 *	worker and SIGTERM/SIGINT into SIGTERM.  In the worker SIGUSR1 is
 *	blocked in every thread before libmilter starts any, and one
 *	thread of ours sigwait()s for it and reloads.
 *
 *	Out of memory: libmilter runs callbacks in many threads and an
 *	allocation can fail deep inside the relay core, so the hook
 *	aborts the process; the MTA then applies its milter_default_action
 *	(tempfail recommended) and the service manager restarts the
 *	milter.
 * DIAGNOSTICS
 *	Exit status: 0 clean stop, 64 usage, 78 configuration error,
 *	71 cannot listen, write the pid file or drop privileges, 70 the
 *	worker died from a signal (crash, kill -9).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include <curl/curl.h>
#include <libmilter/mfapi.h>

#include "conf.h"
#include "http.h"
#include "log.h"
#include "mlfi.h"
#include "policy.h"
#include "priv.h"
#include "strbuf.h"
#include "supervise.h"
#include "util.h"

static char *milter_conf_path;		/* absolute: we chdir("/") */
static const char *milter_socket_opt;	/* -p */
static const char *milter_pid_file;	/* written by the supervisor */

/* milter_usage - explain the command line */

static void milter_usage(const char *prog)
{
    fprintf(stderr, "usage: %s [-c config] [-p socket] [-f] [-n] [-v] "
	    "[-P pidfile]\n"
	    "  socket: inet:PORT@127.0.0.1, inet6:PORT@::1, unix:/path\n",
	    prog);
    exit(EX_USAGE);
}

/* milter_cleanup - before a fatal exit of the supervisor: no stale pid file */

static void milter_cleanup(void)
{
    if (milter_pid_file != NULL)
	(void) unlink(milter_pid_file);
}

/* milter_oom - out of memory in some thread: let the MTA decide */

static void milter_oom(void)
{
    static const char text[] = "m365-milter: out of memory; aborting (the "
    "MTA applies its milter_default_action)\n";

    if (write(STDERR_FILENO, text, sizeof(text) - 1) < 0) {
	/* Nothing else to try. */
    }
    abort();
}

/* milter_check - the socket of -p gets the rule of [milter] socket */

static int milter_check(const struct conf *conf, const char *spec,
			        struct strbuf *errors)
{
    char    why[400];
    int     bad = 0;

    if (conf_check_socket(spec, why, sizeof(why)) < 0) {
	strbuf_line(errors, "%s: %s", spec == milter_socket_opt ?
		    "m365-milter -p" : conf->path, why);
	bad = 1;
    }
    if (conf->milter.socket_mode < 0 || conf->milter.socket_mode > 0777) {
	strbuf_line(errors, "%s: socket_mode %lo is not a file mode (like "
		    "0660)", conf->path, conf->milter.socket_mode);
	bad = 1;
    }
    return (bad ? -1 : 0);
}

/* milter_socket_spec - -p, else [milter] socket (its default: conf.c) */

static const char *milter_socket_spec(const struct conf *conf)
{
    return (milter_socket_opt ? milter_socket_opt : conf->milter.socket);
}

/* milter_same - two optional strings are equal */

static int milter_same(const char *a, const char *b)
{
    return (strcmp(a ? a : "", b ? b : "") == 0);
}

/* milter_reload - load the configuration again; keep the old on error */

static void milter_reload(void)
{
    struct strbuf errors;
    struct conf *conf;
    struct mlt_conf *cur;

    strbuf_init(&errors, STRBUF_MAX_JSON);
    conf = conf_load(milter_conf_path, &errors);
    if (conf != NULL && milter_check(conf, milter_socket_spec(conf),
				     &errors) < 0) {
	conf_free(conf);
	conf = NULL;
    }
    if (conf == NULL) {
	msg_error_lines(strbuf_str(&errors));
	msg_error("reload of %s failed; keeping the previous configuration",
		  milter_conf_path);
	strbuf_free(&errors);
	return;
    }
    strbuf_reset(&errors);
    if (conf_check_secrets(conf, &errors) < 0 || errors.len > 0) {
	msg_error_lines(strbuf_str(&errors));
	msg_warn("%s: secret or key file problems (see above); deliveries "
		 "through the affected accounts will fail", milter_conf_path);
    }
    strbuf_free(&errors);

    /* What was done once at startup does not change now. */
    if ((cur = mlt_conf_acquire()) != NULL) {
	const struct conf *old = cur->conf;

	if (milter_socket_opt == NULL
	    && !milter_same(old->milter.socket, conf->milter.socket))
	    msg_warn("[milter] socket changed; it takes effect after a "
		     "restart");
	if (old->milter.socket_mode != conf->milter.socket_mode)
	    msg_warn("[milter] socket_mode changed; it takes effect after a "
		     "restart");
	if (!milter_same(old->milter.pid_file, conf->milter.pid_file))
	    msg_warn("[milter] pid_file changed; it takes effect after a "
		     "restart");
	if (!milter_same(old->user, conf->user))
	    msg_warn("[global] user changed; it takes effect after a restart");
	if (!milter_same(old->log_file, conf->log_file))
	    msg_warn("[global] log_file changed; it takes effect after a "
		     "restart");
	if (old->milter.timeout != conf->milter.timeout)
	    msg_warn("[milter] timeout changed; it takes effect after a "
		     "restart");
	mlt_conf_release(cur);
    }
    mlt_conf_install(conf);
    msg_info("reloaded the configuration from %s (messages in progress "
	     "finish with the previous one)", milter_conf_path);
}

/* milter_signal_thread - wait for SIGUSR1, reload */

static void *milter_signal_thread(void *unused)
{
    sigset_t set;
    int     sig;

    (void) unused;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    for (;;) {
	if (sigwait(&set, &sig) != 0)
	    continue;
	if (sig == SIGUSR1)
	    milter_reload();
    }
    return (NULL);
}

/*
 * milter_socket_dir - the directory of the unix socket.  A missing one is
 * created and given to the user (through the descriptor).  One that
 * anybody but root and the user (or the user's group) can write to is
 * refused: whoever can write there can replace the socket the MTA talks
 * to.  The user must be able to create the socket there: it is created
 * with the user's ids (milter_work()).  Returns 0, or -1 after logging
 * the cause and the fix.
 */
static int milter_socket_dir(const char *path, uid_t uid, gid_t gid,
			             int have_user, const char *user)
{
    char    dir[PATH_MAX];
    char    err[300];
    char   *slash;
    struct stat st;
    int     fd;

    if (!have_user) {
	uid = geteuid();
	gid = getegid();
    }
    snprintf(dir, sizeof(dir), "%s", path);
    if ((slash = strrchr(dir, '/')) == NULL)
	return (0);
    if (slash == dir)
	slash[1] = 0;
    else
	*slash = 0;
    if (stat(dir, &st) < 0) {
	if (errno != ENOENT) {
	    msg_error("cannot access the socket directory %s: %s", dir,
		      strerror(errno));
	    return (-1);
	}
	if (mkdir_p(dir, 0755, err, sizeof(err)) < 0) {
	    msg_error("%s", err);
	    return (-1);
	}
	/* Made by root: the user's now, through the descriptor. */
	if ((fd = dir_open_owned(AT_FDCWD, dir, dir, have_user ? uid :
				 (uid_t) -1, gid, FILE_CLAIM, err,
				 sizeof(err))) < 0) {
	    msg_error("%s", err);
	    return (-1);
	}
	if (fstat(fd, &st) < 0) {
	    msg_error("cannot access the socket directory %s: %s", dir,
		      strerror(errno));
	    close(fd);
	    return (-1);
	}
	close(fd);
    }
    if (!S_ISDIR(st.st_mode)) {
	msg_error("the socket directory %s is not a directory", dir);
	return (-1);
    }
    if ((st.st_uid != 0 && st.st_uid != uid)
	|| ((st.st_mode & S_IWGRP) && st.st_gid != 0 && st.st_gid != gid)
	|| (st.st_mode & S_IWOTH)) {
	msg_error("the socket directory %s (owner uid %ld, group %ld, mode "
		  "%04o) can be written to by others than root and user %s: "
		  "they could replace the socket the MTA connects to; fix: "
		  "chown %s: %s && chmod 0755 %s (or use inet:PORT@127.0.0.1)",
		  dir, (long) st.st_uid, (long) st.st_gid,
		  (unsigned) (st.st_mode & 07777), user ? user : "(self)",
		  user ? user : "USER", dir, dir);
	return (-1);
    }
    if (uid != 0 && !(st.st_uid == uid && (st.st_mode & S_IWUSR))
	&& !(st.st_gid == gid && (st.st_mode & S_IWGRP))) {
	msg_error("the socket directory %s is not writable by user %s, who "
		  "creates the socket: fix with chown %s: %s", dir,
		  user ? user : "(self)", user ? user : "USER", dir);
	return (-1);
    }
    return (0);
}

/*
 * milter_socket_check - the socket just made (with the user's ids) is
 * there and has the configured mode.  Runs with the user's ids, so the
 * chmod (needed only where a default ACL overrides the umask) cannot
 * reach a file of root's.  Returns 0, or -1 after logging.
 */
static int milter_socket_check(const char *path, mode_t mode)
{
    struct stat st;

    if (lstat(path, &st) < 0 || !S_ISSOCK(st.st_mode)
	|| st.st_uid != geteuid()) {
	msg_error("the milter socket %s was removed or replaced right after "
		  "it was created: somebody else can write to its directory; "
		  "stopping", path);
	return (-1);
    }
    if ((st.st_mode & 07777) != mode && chmod(path, mode) < 0) {
	msg_error("cannot chmod %s: %s", path, strerror(errno));
	return (-1);
    }
    return (0);
}

/* milter_daemonize - detach; the caller waits until the milter is ready */

static int milter_daemonize(void)
{
    pid_t   pid;
    int     pipefd[2];
    int     status = 0;
    ssize_t n;
    char    byte;

    if (pipe(pipefd) < 0 || (pid = fork()) < 0)
	msg_fatal(EX_OSERR, "cannot fork: %s", strerror(errno));
    if (pid > 0) {
	/* A startup error still reaches whoever started the milter. */
	(void) close(pipefd[1]);
	while ((n = read(pipefd[0], &byte, 1)) < 0 && errno == EINTR)
	     /* again */ ;
	if (n == 1)
	    _exit(EX_OK);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
	     /* again */ ;
	_exit(WIFEXITED(status) ? WEXITSTATUS(status) : EX_OSERR);
    }
    (void) close(pipefd[0]);
    if (setsid() < 0)
	msg_warn("setsid: %s", strerror(errno));
    if (chdir("/") < 0)
	msg_warn("chdir /: %s", strerror(errno));
    return (pipefd[1]);
}

/* milter_abspath - a copy of path that survives chdir("/") */

static char *milter_abspath(const char *path)
{
    char    cwd[PATH_MAX];
    size_t  len;
    char   *abs;

    if (*path == '/' || getcwd(cwd, sizeof(cwd)) == NULL)
	return (xstrdup(path));
    len = strlen(cwd) + strlen(path) + 2;
    abs = xmalloc(len);
    snprintf(abs, len, "%s/%s", cwd, path);
    return (abs);
}

/*
 * milter_open_log - log_file from [global].  Opened as root before the
 * drop, like every file root keeps for the user (log_open_file(): no
 * symbolic link, one link only, a new file goes to the user, who appends
 * to it later from m365-relay too).
 */
static void milter_open_log(const struct conf *conf)
{
    char    err[512];

    if (conf->log_file == NULL || strcmp(conf->log_file, "syslog") == 0)
	return;
    if (strcmp(conf->log_file, "stderr") == 0) {
	log_to_stderr(1);
	return;
    }
    if (log_open_file(conf->log_file, err, sizeof(err)) < 0)
	msg_warn("%s; using syslog", err);
}

/* milter_work - the worker: open the socket, drop privileges, run libmilter */

static int milter_work(struct conf *conf, int ready_fd, int foreground,
		               uid_t uid, gid_t gid, int have_user)
{
    char   *spec;
    const char *sock_path;
    char    err[300];
    struct http *http;
    sigset_t set;
    pthread_t tid;
    mode_t  mode = 0, old_umask = 0;
    int     rc;

    /*
     * libcurl's global state, before any thread exists: http_create()
     * initializes it on first use, unguarded, and the callbacks of
     * several connections may make their first client at once.
     */
    if ((http = http_create(NULL, err, sizeof(err))) == NULL)
	msg_fatal(EX_OSERR, "%s", err);
    http_free(http);

    /* Copies: a reload frees this conf while smfi_main() runs. */
    spec = xstrdup(milter_socket_spec(conf));
    if ((sock_path = conf_socket_path(spec)) != NULL
	&& milter_socket_dir(sock_path, uid, gid, have_user, conf->user) < 0)
	exit(EX_OSERR);
    if (smfi_setconn(spec) != MI_SUCCESS)
	msg_fatal(EX_OSERR, "cannot use milter socket %s", spec);
    if (conf->milter.timeout > 0)
	(void) smfi_settimeout((int) conf->milter.timeout);
    if (mlfi_register() != MI_SUCCESS)
	msg_fatal(EX_OSERR, "cannot register with libmilter");

    /*
     * A unix socket is made with the user's ids and a umask that gives
     * it the configured mode: it is born with its final owner, group
     * and mode, and root never acts on a name in a directory that the
     * user can change (a symbolic link renamed over the socket would
     * otherwise hand the link's target to the user).  A TCP port is
     * bound as root.
     */
    if (sock_path) {
	mode = (mode_t) conf->milter.socket_mode;	/* 0 to 0777 */
	if (have_user && priv_as_user(uid, gid, err, sizeof(err)) < 0)
	    msg_fatal(EX_OSERR, "%s", err);
	old_umask = umask(~mode & 0777);
    }
    rc = smfi_opensocket(1);
    if (sock_path) {
	(void) umask(old_umask);
	if (rc == MI_SUCCESS && milter_socket_check(sock_path, mode) < 0)
	    exit(EX_OSERR);
	if (have_user && priv_as_root(err, sizeof(err)) < 0)
	    msg_fatal(EX_OSERR, "%s", err);
    }
    if (rc != MI_SUCCESS) {
	if (sock_path)
	    msg_fatal(EX_OSERR, "cannot listen on %s: check that user %s can "
		      "create files in the socket's directory", spec,
		      have_user ? conf->user : "(this user)");
	msg_fatal(EX_OSERR, "cannot listen on %s: check that the port is free "
		  "and the address is local", spec);
    }

    if (priv_drop(conf->user, err, sizeof(err)) < 0)
	msg_fatal(EX_OSERR, "%s", err);
    /* After the drop: a change of credentials cancels the request. */
    if (supervise_lifeline() < 0)
	msg_fatal(EX_OSERR, "the supervisor process has gone away; stopping");

    /*
     * Block the signals before any thread exists, so that every thread
     * inherits the mask: SIGUSR1 (reload) then reaches only our
     * sigwait(), SIGHUP/SIGTERM/SIGINT only libmilter's (which blocks
     * them itself, but only in the thread that calls smfi_main()).
     */
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    if ((rc = pthread_sigmask(SIG_BLOCK, &set, NULL)) != 0
	|| (rc = pthread_create(&tid, NULL, milter_signal_thread, NULL)) != 0)
	msg_fatal(EX_OSERR, "cannot start the reload thread: %s",
		  strerror(rc));
    (void) pthread_detach(tid);
    if (!foreground)
	supervise_detach_stdio();

    msg_info("m365-milter started: listening on %s, mode %s, uid %ld, "
	     "supervisor pid %ld", spec, conf->milter.mode ==
	     CONF_MILTER_DELIVER ? "deliver" : "filter", (long) geteuid(),
	     (long) getppid());
    mlt_conf_install(conf);
    supervise_ready(ready_fd);
    rc = smfi_main();
    msg_info("m365-milter stopping%s", rc == MI_SUCCESS ? "" :
	     " after a libmilter error");
    if (sock_path)
	(void) unlink(sock_path);
    /* Messages still in progress keep their own reference. */
    mlt_conf_shutdown();
    mlfi_shutdown();
    free(spec);
    curl_global_cleanup();
    return (rc == MI_SUCCESS ? EX_OK : EX_OSERR);
}

int     main(int argc, char **argv)
{
    const char *pid_opt = NULL;
    char   *pid_file;
    struct strbuf errors;
    struct supervise sv;
    struct conf *conf;
    char    err[300];
    char    pidbuf[32];
    char    abspath[PATH_MAX];
    int     foreground = 0, check_only = 0, verbose = 0;
    int     have_user = 0;
    uid_t   uid = (uid_t) -1;
    gid_t   gid = (gid_t) -1;
    pid_t   worker;
    int     notify_fd = -1, ready_fd;
    int     ch, rc;

    util_nodump();
    log_open(argv[0]);
    milter_conf_path = M365_CONFFILE;
    while ((ch = getopt(argc, argv, "c:p:fnvP:")) != -1) {
	switch (ch) {
	case 'c':
	    milter_conf_path = optarg;
	    break;
	case 'p':
	    milter_socket_opt = optarg;
	    break;
	case 'f':
	    foreground = 1;
	    break;
	case 'n':
	    check_only = 1;
	    break;
	case 'v':
	    verbose++;
	    break;
	case 'P':
	    pid_opt = optarg;
	    break;
	default:
	    milter_usage(argv[0]);
	}
    }
    if (optind != argc)
	milter_usage(argv[0]);
    if (verbose)
	log_to_stderr(1);
    log_set_verbose(verbose > 1 ? verbose - 1 : 0);

    /* A reload after chdir("/") must find the same file. */
    if (milter_conf_path[0] != '/' && realpath(milter_conf_path, abspath))
	milter_conf_path = abspath;

    strbuf_init(&errors, STRBUF_MAX_JSON);
    conf = conf_load(milter_conf_path, &errors);
    if (conf != NULL)
	(void) milter_check(conf, milter_socket_spec(conf), &errors);
    if ((rc = priv_start(conf, milter_conf_path, &errors, check_only, &uid,
			 &gid, &have_user)) >= 0) {
	conf_free(conf);
	strbuf_free(&errors);
	exit(rc);
    }
    strbuf_free(&errors);

    milter_open_log(conf);
    xalloc_set_oom_hook(milter_oom);
    signal(SIGPIPE, SIG_IGN);

    /* The pid file names the supervisor: it is the one to signal. */
    if (pid_opt == NULL)
	pid_opt = conf->milter.pid_file;
    pid_file = pid_opt && *pid_opt ? milter_abspath(pid_opt) : NULL;
    if (!foreground)
	notify_fd = milter_daemonize();
    if (pid_file) {
	snprintf(pidbuf, sizeof(pidbuf), "%ld\n", (long) getpid());
	if (file_write_atomic(pid_file, pidbuf, strlen(pidbuf), 0644, uid, gid,
			      err, sizeof(err)) < 0)
	    msg_fatal(EX_OSERR, "cannot write the pid file: %s", err);
	milter_pid_file = pid_file;
	msg_cleanup(milter_cleanup);
    }

    /* No libmilter call before this point: the supervisor has none. */
    if ((worker = supervise_fork(&ready_fd)) < 0)
	msg_fatal(EX_OSERR, "cannot fork the worker process: %s",
		  strerror(errno));
    if (worker == 0) {
	/* The pid file names the supervisor: not the worker's to remove. */
	msg_cleanup(NULL);
	if (notify_fd >= 0)
	    (void) close(notify_fd);
	free(pid_file);
	return (milter_work(conf, ready_fd, foreground, uid, gid, have_user));
    }
    sv.user = conf->user;
    sv.pid_file = pid_file;
    sv.notify_fd = notify_fd;
    sv.detach = !foreground;
    rc = supervise_run(worker, ready_fd, &sv);
    conf_free(conf);
    free(pid_file);
    return (rc);
}
