/*
 * NAME
 *	m365-lmtpd 8
 * SUMMARY
 *	LMTP server (RFC 2033) for Postfix's lmtp(8): Microsoft 365 delivery
 * SYNOPSIS
 *	m365-lmtpd [-c file] [-p socket] [-s sessions] [-m mode] [-v]
 *	m365-lmtpd [-c file] -n
 * DESCRIPTION
 *	A resident delivery agent: Postfix keeps its queue, retries and
 *	bounces, and hands each message to this process over LMTP; the
 *	process keeps its HTTPS connections and tokens warm across
 *	messages.  Every message goes through deliver() (deliver.h), the
 *	core m365-relay uses.  The protocol is lmtp.c.
 *
 *	Runs in the foreground (a service manager starts it).  Started as
 *	root it opens the socket as the [global] user (a unix socket is
 *	born with the user's owner and the mode of -m, 0660 by default,
 *	in a directory only root and that user may write) and then drops
 *	to that user for good (priv.h); started as that user (systemd
 *	User=) it does the same without the drop.  A TCP socket is
 *	accepted on a loopback address only.
 *
 *	Sessions: -s worker threads (default 8), each serving one
 *	connection at a time; more connections wait in the listen queue.
 *	The HTTPS clients are a pool of as many (httppool.h): their
 *	connections stay open from message to message and close after
 *	[global] idle_timeout unused.
 *
 *	Signals: SIGHUP (or SIGUSR1) reloads the configuration (messages
 *	in progress finish with the one they started with; a bad file is
 *	logged and the old one stays); SIGTERM or SIGINT stop: no new
 *	connection, idle sessions get 421, a delivery in progress
 *	finishes and is answered.
 * DIAGNOSTICS
 *	Exit status: 0 stopped, 64 usage, 78 configuration error, 71
 *	cannot listen or drop privileges.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sysexits.h>
#include <unistd.h>

#include <curl/curl.h>

#include "conf.h"
#include "http.h"
#include "httppool.h"
#include "lmtp.h"
#include "log.h"
#include "priv.h"
#include "strbuf.h"
#include "util.h"

#define LMTPD_SOCKET	"unix:" M365_RUNDIR "/lmtp.sock"
#define LMTPD_SESSIONS	8
#define LMTPD_MAX_SESSIONS 256

static char *lmtpd_conf_path;
static int lmtpd_listen_fd = -1;
static char lmtpd_host[256];

/* lmtpd_usage - explain the command line */

static void lmtpd_usage(const char *prog)
{
    fprintf(stderr, "usage: %s [-c config] [-p socket] [-s sessions] "
	    "[-m mode] [-v]\n"
	    "       %s [-c config] -n\n"
	    "  socket: unix:/path (default %s), inet:PORT@127.0.0.1, "
	    "inet6:PORT@::1\n", prog, prog, LMTPD_SOCKET);
    exit(EX_USAGE);
}

/* lmtpd_load - the configuration, or NULL after logging every problem */

static struct conf *lmtpd_load(void)
{
    struct strbuf errors;
    struct conf *conf;

    strbuf_init(&errors, STRBUF_MAX_JSON);
    if ((conf = conf_load(lmtpd_conf_path, &errors)) == NULL) {
	msg_error_lines(strbuf_str(&errors));
	strbuf_free(&errors);
	return (NULL);
    }
    strbuf_reset(&errors);
    if (conf_check_secrets(conf, &errors) < 0 || errors.len > 0) {
	msg_error_lines(strbuf_str(&errors));
	msg_warn("%s: secret or key file problems (see above); deliveries "
		 "through the affected accounts will be deferred",
		 lmtpd_conf_path);
    }
    strbuf_free(&errors);
    return (conf);
}

/*
 * lmtpd_dir_check - the socket's directory exists, user may create the
 * socket there, and nobody but root and user can write to it (whoever
 * can could put a socket of their own in its place).  0, or -1 after
 * logging the cause and the fix.
 */
static int lmtpd_dir_check(const char *path, uid_t uid, gid_t gid,
			           const char *user)
{
    char    dir[PATH_MAX];
    char   *slash;
    struct stat st;
    int     others;

    snprintf(dir, sizeof(dir), "%s", path);
    if ((slash = strrchr(dir, '/')) == NULL || slash == dir)
	slash = dir + 1;
    *slash = 0;
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
	msg_error("the socket directory %s is missing: create it "
		  "(install -d -o %s -m 0750 %s; the systemd unit's "
		  "RuntimeDirectory=m365relay does that) or choose another "
		  "socket with -p", dir, user, dir);
	return (-1);
    }
    others = (st.st_mode & S_IWOTH)
	|| (st.st_uid != 0 && st.st_uid != uid)
	|| ((st.st_mode & S_IWGRP) && st.st_gid != 0 && st.st_gid != gid);
    if (others) {
	msg_error("the socket directory %s (owner uid %ld, mode %04o) can be "
		  "written to by others than root and user %s: they could "
		  "replace the socket Postfix connects to; fix: chown %s %s "
		  "&& chmod 0750 %s", dir, (long) st.st_uid,
		  (unsigned) (st.st_mode & 07777), user, user, dir, dir);
	return (-1);
    }
    return (0);
}

/* lmtpd_unix - listen on a unix socket, made with the current ids */

static int lmtpd_unix(const char *path, mode_t mode)
{
    struct sockaddr_un sa;
    struct stat st;
    mode_t  old_umask;
    int     fd, probe, rc;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    if (lstat(path, &st) == 0) {
	if (!S_ISSOCK(st.st_mode))
	    msg_fatal(EX_OSERR, "%s exists and is not a socket: remove it "
		      "or choose another socket with -p", path);
	/* A socket somebody listens on: another m365-lmtpd. */
	if ((probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) >= 0) {
	    rc = connect(probe, (struct sockaddr *) &sa, sizeof(sa));
	    close(probe);
	    if (rc == 0)
		msg_fatal(EX_OSERR, "another server listens on %s already",
			  path);
	}
	(void) unlink(path);
    }
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
	msg_fatal(EX_OSERR, "socket: %s", strerror(errno));
    old_umask = umask(~mode & 0777);
    rc = bind(fd, (struct sockaddr *) &sa, sizeof(sa));
    (void) umask(old_umask);
    if (rc < 0)
	msg_fatal(EX_OSERR, "cannot listen on %s: %s", path, strerror(errno));
    if (lstat(path, &st) < 0 || st.st_uid != geteuid())
	msg_fatal(EX_OSERR, "the socket %s was replaced right after it was "
		  "created: somebody else can write to its directory", path);
    if ((st.st_mode & 07777) != mode && chmod(path, mode) < 0)
	msg_fatal(EX_OSERR, "cannot chmod %s: %s", path, strerror(errno));
    return (fd);
}

/* lmtpd_inet - listen on inet:PORT@HOST (loopback only) */

static int lmtpd_inet(const char *spec)
{
    struct addrinfo hints, *ai;
    const char *at = strchr(spec, '@');
    char    port[16];
    int     fd, on = 1, err;

    snprintf(port, sizeof(port), "%.*s", (int) (at - strchr(spec, ':') - 1),
	     strchr(spec, ':') + 1);
    memset(&hints, 0, sizeof(hints));
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_family = spec[4] == '6' ? AF_INET6 : AF_INET;
    if ((err = getaddrinfo(at + 1, port, &hints, &ai)) != 0)
	msg_fatal(EX_CONFIG, "%s: %s (give a numeric loopback address, like "
		  "inet:2003@127.0.0.1)", spec, gai_strerror(err));
    if ((ai->ai_family == AF_INET
	 && (ntohl(((struct sockaddr_in *) ai->ai_addr)->sin_addr.s_addr)
	     >> 24) != 127)
	|| (ai->ai_family == AF_INET6
	    && !IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)
					ai->ai_addr)->sin6_addr)))
	msg_fatal(EX_CONFIG, "%s is not a loopback address: whoever reaches "
		  "the socket sends mail as your accounts; use 127.0.0.1, ::1 "
		  "or a unix socket", spec);
    if ((fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0
	|| setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) < 0
	|| bind(fd, ai->ai_addr, ai->ai_addrlen) < 0)
	msg_fatal(EX_OSERR, "cannot listen on %s: %s", spec, strerror(errno));
    freeaddrinfo(ai);
    return (fd);
}

/* lmtpd_worker - accept connections and serve them, one at a time */

static void *lmtpd_worker(void *unused)
{
    struct lmtp_worker w;
    struct pollfd pfd;
    int     fd, flags;

    (void) unused;
    memset(&w, 0, sizeof(w));
    w.hostname = lmtpd_host;
    pfd.fd = lmtpd_listen_fd;
    pfd.events = POLLIN;
    while (!lmtp_stopping()) {
	if (poll(&pfd, 1, 1000) <= 0)
	    continue;
	/* Non-blocking: another worker may have taken it. */
	if ((fd = accept(lmtpd_listen_fd, NULL, NULL)) < 0)
	    continue;
	if ((flags = fcntl(fd, F_GETFL)) >= 0)
	    (void) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
	(void) fcntl(fd, F_SETFD, FD_CLOEXEC);
	lmtp_session(fd, &w);
	(void) close(fd);
    }
    return (NULL);
}

/* lmtpd_reload - load the configuration again; keep the old on error */

static void lmtpd_reload(void)
{
    struct conf *conf;

    if ((conf = lmtpd_load()) == NULL) {
	msg_error("reload of %s failed; keeping the previous configuration",
		  lmtpd_conf_path);
	return;
    }
    lmtp_conf_install(conf);
    msg_info("reloaded the configuration from %s (messages in progress "
	     "finish with the previous one; the socket, user, log_file and "
	     "sessions change after a restart)", lmtpd_conf_path);
}

int     main(int argc, char **argv)
{
    const char *spec = LMTPD_SOCKET;
    const char *sock_path;
    struct strbuf errors;
    struct conf *conf;
    struct http *http;
    struct http_pool *pool;
    pthread_t *tids;
    sigset_t set;
    char    abspath[PATH_MAX];
    char    err[300];
    char   *end;
    long    nsess = LMTPD_SESSIONS;
    long    mode = 0660;
    int     check_only = 0, verbose = 0, have_user = 0;
    uid_t   uid = geteuid();
    gid_t   gid = getegid();
    int     ch, sig, rc;
    long    i;

    util_nodump();				/* secrets never in a core */
    log_open(argv[0]);
    lmtpd_conf_path = M365_CONFFILE;
    while ((ch = getopt(argc, argv, "c:p:s:m:nv")) != -1) {
	switch (ch) {
	case 'c':
	    lmtpd_conf_path = optarg;
	    break;
	case 'p':
	    spec = optarg;
	    break;
	case 's':
	    nsess = strtol(optarg, &end, 10);
	    if (*optarg == 0 || *end || nsess < 1 || nsess > LMTPD_MAX_SESSIONS) {
		fprintf(stderr, "%s: -s takes a number of sessions from 1 to "
			"%d\n", argv[0], LMTPD_MAX_SESSIONS);
		lmtpd_usage(argv[0]);
	    }
	    break;
	case 'm':
	    mode = strtol(optarg, &end, 8);
	    if (*optarg == 0 || *end || mode < 0 || mode > 0777) {
		fprintf(stderr, "%s: -m takes a file mode like 0660\n",
			argv[0]);
		lmtpd_usage(argv[0]);
	    }
	    break;
	case 'n':
	    check_only = 1;
	    break;
	case 'v':
	    verbose++;
	    break;
	default:
	    lmtpd_usage(argv[0]);
	}
    }
    if (optind != argc)
	lmtpd_usage(argv[0]);
    /* Start-up errors reach whoever starts it; later only with -v. */
    log_to_stderr(1);
    log_set_verbose(verbose > 1 ? verbose - 1 : 0);
    if (lmtpd_conf_path[0] != '/' && realpath(lmtpd_conf_path, abspath))
	lmtpd_conf_path = abspath;

    /* The configuration and the socket, checked as m365-milter does. */
    strbuf_init(&errors, STRBUF_MAX_JSON);
    conf = conf_load(lmtpd_conf_path, &errors);
    if (conf_check_socket(spec, err, sizeof(err)) < 0)
	strbuf_line(&errors, "m365-lmtpd -p: %s", err);
    if ((rc = priv_start(conf, lmtpd_conf_path, &errors, check_only, &uid,
			 &gid, &have_user)) >= 0) {
	conf_free(conf);
	strbuf_free(&errors);
	exit(rc);
    }
    strbuf_free(&errors);
    signal(SIGPIPE, SIG_IGN);

    /* libcurl's global state before any thread exists. */
    if ((http = http_create(NULL, err, sizeof(err))) == NULL)
	msg_fatal(EX_OSERR, "%s", err);
    http_free(http);
    if (gethostname(lmtpd_host, sizeof(lmtpd_host)) < 0 || !lmtpd_host[0])
	snprintf(lmtpd_host, sizeof(lmtpd_host), "localhost");
    lmtpd_host[sizeof(lmtpd_host) - 1] = 0;

    /* The socket, with the user's ids; then the user for good. */
    if ((sock_path = conf_socket_path(spec)) != NULL) {
	if (lmtpd_dir_check(sock_path, uid, gid, conf->user) < 0)
	    exit(EX_OSERR);
	if (have_user && priv_as_user(uid, gid, err, sizeof(err)) < 0)
	    msg_fatal(EX_OSERR, "%s", err);
	lmtpd_listen_fd = lmtpd_unix(sock_path, (mode_t) mode);
	if (have_user && priv_as_root(err, sizeof(err)) < 0)
	    msg_fatal(EX_OSERR, "%s", err);
    } else {
	lmtpd_listen_fd = lmtpd_inet(spec);
    }
    if (listen(lmtpd_listen_fd, 64) < 0)
	msg_fatal(EX_OSERR, "listen on %s: %s", spec, strerror(errno));
    (void) fcntl(lmtpd_listen_fd, F_SETFL,
		 fcntl(lmtpd_listen_fd, F_GETFL) | O_NONBLOCK);
    if (priv_drop(conf->user, err, sizeof(err)) < 0)
	msg_fatal(EX_OSERR, "%s", err);
    log_to_setting(conf->log_file);

    /* Signals to this thread only: every worker inherits the mask. */
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    if ((rc = pthread_sigmask(SIG_BLOCK, &set, NULL)) != 0)
	msg_fatal(EX_OSERR, "pthread_sigmask: %s", strerror(rc));
    lmtp_conf_install(conf);
    /* One kept-alive client per session at most; idle ones time out. */
    if ((pool = http_pool_create((int) nsess, err, sizeof(err))) == NULL)
	msg_fatal(EX_OSERR, "%s", err);
    lmtp_pool_set(pool);
    tids = xcalloc((size_t) nsess, sizeof(pthread_t));
    for (i = 0; i < nsess; i++)
	if ((rc = pthread_create(tids + i, NULL, lmtpd_worker, NULL)) != 0)
	    msg_fatal(EX_OSERR, "cannot start a session thread: %s",
		      strerror(rc));
    msg_info("m365-lmtpd started: listening on %s, %ld sessions, uid %ld",
	     spec, nsess, (long) geteuid());
    if (!verbose)
	log_to_stderr(0);

    for (;;) {
	if (sigwait(&set, &sig) != 0)
	    continue;
	if (sig == SIGHUP || sig == SIGUSR1)
	    lmtpd_reload();
	else
	    break;
    }
    msg_info("m365-lmtpd stopping (signal %d): deliveries in progress "
	     "finish", sig);
    lmtp_stop();
    for (i = 0; i < nsess; i++)
	(void) pthread_join(tids[i], NULL);
    if (sock_path)
	(void) unlink(sock_path);
    (void) close(lmtpd_listen_fd);
    free(tids);
    lmtp_pool_set(NULL);
    http_pool_free(pool);
    lmtp_conf_shutdown();
    curl_global_cleanup();
    return (EX_OK);
}
