/*
 * NAME
 *	m365-fetch 8
 * SUMMARY
 *	inbound poller: Microsoft 365 mailbox folders into the local MTA
 * SYNOPSIS
 *	m365-fetch [-c file] [-v] --once [SOURCE...]
 *	m365-fetch [-c file] [-v] [SOURCE...]
 *	m365-fetch [-c file] -n
 * DESCRIPTION
 *	For each [source NAME] of m365relay.conf (or the named ones) reads
 *	new mail of a mailbox folder through Microsoft Graph (delta query)
 *	and hands every message to the local MTA (SMTP on loopback through
 *	libcurl, or sendmail), exactly once; see fetch.h.
 *
 *	--once runs one round over the sources and exits: 0 when every
 *	source completed its round, 75 when some source deferred (MTA
 *	down, Graph throttling or unavailable, source offline, another
 *	m365-fetch busy with it).  Without --once it stays in the
 *	foreground (systemd Type=simple) and runs each source every
 *	"interval" seconds (longer when Graph sent Retry-After).  SIGTERM
 *	or SIGINT finishes the message in hand (injection, after-action,
 *	state) and exits 0; SIGHUP starts a round of every source now.
 *
 *	-n checks the configuration: "configuration OK" (exit 0) or the
 *	problems (exit 78).  Like m365-relay it refuses to run as root
 *	(exit 75) unless M365RELAY_ALLOW_ROOT is set.
 * DIAGNOSTICS
 *	Syslog (facility mail) or log_file; also stderr with -v or when
 *	stderr is a terminal.  Exit codes follow sysexits(3): 0, 64
 *	(usage), 75 (try again), 78 (configuration).
 */
#include "config.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "conf.h"
#include "fetch.h"
#include "http.h"
#include "log.h"
#include "util.h"

static volatile sig_atomic_t fetch_stop;
static volatile sig_atomic_t fetch_wake;

/* fetch_usage - explain the command line */

static void fetch_usage(const char *prog)
{
    fprintf(stderr,
	    "usage: %s [-c config] [-v] --once [SOURCE...]\n"
	    "       %s [-c config] [-v] [SOURCE...]     (daemon, foreground)\n"
	    "       %s [-c config] -n                   (check configuration)\n",
	    prog, prog, prog);
    exit(EX_USAGE);
}

/* fetch_on_signal - TERM/INT: stop after the message in hand; HUP: wake */

static void fetch_on_signal(int sig)
{
    if (sig == SIGHUP)
	fetch_wake = 1;
    else
	fetch_stop = 1;
}

/* fetch_signals - install the handlers (no SA_RESTART: sleeps end early) */

static void fetch_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = fetch_on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

/* fetch_check_source - what conf.c cannot know: is the source usable? */

static int fetch_check_source(const struct conf *conf,
			              const struct conf_source *src,
			              struct strbuf *errors)
{
    const char *file = src->file ? src->file : conf->path;
    int     bad = 0;

    if (src->acct == NULL && conf_account(conf, src->account) == NULL) {
	strbuf_line(errors, "%s:%d: [source %s]: account \"%s\" is not "
		    "defined", file, src->line, src->name,
		    src->account ? src->account : "");
	bad = 1;
    }
    if (src->mode != CONF_SOURCE_BOUNCES
	&& (src->recipients == NULL || src->recipients[0] == NULL)) {
	strbuf_line(errors, "%s:%d: [source %s]: recipients is required",
		    file, src->line, src->name);
	bad = 1;
    }
    if (src->deliver_to == NULL || *src->deliver_to == 0) {
	strbuf_line(errors, "%s:%d: [source %s]: deliver_to is required",
		    file, src->line, src->name);
	bad = 1;
    }
    return (bad ? -1 : 0);
}

/* fetch_sleep - until the deadline, a signal, or a wake-up */

static void fetch_sleep(double until)
{
    struct timespec ts;
    double  left;

    while (!fetch_stop && !fetch_wake && (left = until - time_mono()) > 0) {
	if (left > 1)
	    left = 1;
	ts.tv_sec = (time_t) left;
	ts.tv_nsec = (long) ((left - (double) ts.tv_sec) * 1e9);
	(void) nanosleep(&ts, NULL);
    }
}

/* fetch_run - one round of one source, logged; 1 when it completed */

static int fetch_run(const struct conf *conf, struct http *http,
		             const struct conf_source *src, long *wait_r)
{
    struct fetch_result res;

    (void) fetch_round(conf, http, src, &fetch_stop, &res);
    *wait_r = res.retry_after;
    switch (res.status) {
    case FETCH_DONE:
	if (res.injected || res.rejected || log_verbose())
	    msg_info("%s: round done: %ld injected, %ld refused or skipped",
		     src->name, res.injected, res.rejected);
	return (1);
    case FETCH_OFFLINE:
	/* fetch.c logged it when the source went offline. */
	msg_debug("%s: source offline: %s", src->name, res.why);
	return (0);
    case FETCH_BUSY:
	msg_info("%s: skipped: %s", src->name, res.why);
	return (0);
    case FETCH_DEFERRED:
    default:
	msg_warn("%s: round deferred (%ld injected, %ld deferred): %s",
		 src->name, res.injected, res.deferred, res.why);
	return (0);
    }
}

int     main(int argc, char **argv)
{
    static const struct option longopts[] = {
	{"once", no_argument, 0, 'o'},
	{"help", no_argument, 0, 'h'},
	{0, 0, 0, 0},
    };
    const char *conf_path = M365_CONFFILE;
    const struct conf_source **srcs = NULL;
    const struct conf_source *s;
    struct conf *conf;
    struct strbuf errors;
    struct http *http;
    double *due;
    size_t  nsrc = 0, i;
    char    err[300];
    int     once = 0, check_only = 0, verbose = 0, ch, all_ok = 1;
    long    wait;

    util_nodump();			/* secrets never in a core file */
    log_open("m365-fetch");
    while ((ch = getopt_long(argc, argv, "c:nvh", longopts, NULL)) != -1) {
	switch (ch) {
	case 'c':
	    conf_path = optarg;
	    break;
	case 'n':
	    check_only = 1;
	    break;
	case 'v':
	    verbose++;
	    break;
	case 'o':
	    once = 1;
	    break;
	default:
	    fetch_usage(argv[0]);
	}
    }
    if (verbose || isatty(STDERR_FILENO))
	log_to_stderr(1);
    log_set_verbose(verbose > 1 ? verbose - 1 : 0);

    /* Configuration. */
    strbuf_init(&errors, STRBUF_MAX_JSON);
    conf = conf_load(conf_path, &errors);
    file_set_service_user(conf ? conf->user : NULL);	/* root trusts */
    if (conf != NULL) {
	if (conf->sources == NULL)
	    strbuf_line(&errors, "%s: no [source NAME] sections: nothing "
			"for m365-fetch to do", conf->path ? conf->path :
			conf_path);
	for (s = conf->sources; s; s = s->next)
	    (void) fetch_check_source(conf, s, &errors);
	if (check_only)
	    conf_check_secrets(conf, &errors);
    }
    if (conf == NULL || errors.len > 0) {
	if (check_only || isatty(STDERR_FILENO))
	    fputs(strbuf_str(&errors), stderr);
	if (!check_only)
	    msg_error_lines(strbuf_str(&errors));
	exit(EX_CONFIG);
    }
    strbuf_free(&errors);
    if (check_only) {
	printf("configuration OK\n");
	exit(EX_OK);
    }
    log_to_setting(conf->log_file);

    /* Like m365-relay: never as root (the state files belong to user). */
    if (geteuid() == 0 && (getenv("M365RELAY_ALLOW_ROOT") == NULL
			   || *getenv("M365RELAY_ALLOW_ROOT") == 0))
	msg_fatal(EX_TEMPFAIL, "m365-fetch must not run as root: run it as "
		  "the user %s (User= in the systemd unit, or sudo -u %s)",
		  conf->user ? conf->user : "of [global] user",
		  conf->user ? conf->user : "USER");

    /* The sources of this run. */
    if (optind < argc) {
	srcs = xcalloc((size_t) (argc - optind), sizeof(*srcs));
	for (i = (size_t) optind; i < (size_t) argc; i++) {
	    if ((s = conf_source(conf, argv[i])) == NULL)
		msg_fatal(EX_USAGE, "unknown source \"%s\": %s has no "
			  "[source %s] section", argv[i], conf->path ?
			  conf->path : conf_path, argv[i]);
	    srcs[nsrc++] = s;
	}
    } else {
	for (s = conf->sources; s; s = s->next)
	    nsrc++;
	srcs = xcalloc(nsrc, sizeof(*srcs));
	nsrc = 0;
	for (s = conf->sources; s; s = s->next)
	    srcs[nsrc++] = s;
    }

    fetch_signals();
    if ((http = http_create(conf, err, sizeof(err))) == NULL)
	msg_fatal(EX_TEMPFAIL, "%s", err);

    if (once) {
	for (i = 0; i < nsrc && !fetch_stop; i++)
	    if (!fetch_run(conf, http, srcs[i], &wait))
		all_ok = 0;
	if (fetch_stop && i < nsrc)
	    all_ok = 0;
    } else {
	msg_info("started: %lu source(s), daemon mode", (unsigned long) nsrc);
	due = xcalloc(nsrc, sizeof(*due));
	while (!fetch_stop) {
	    double  next = 0;

	    fetch_wake = 0;
	    for (i = 0; i < nsrc && !fetch_stop; i++) {
		long    interval = srcs[i]->interval > 0 ? srcs[i]->interval : 60;

		if (due[i] > time_mono())
		    continue;
		(void) fetch_run(conf, http, srcs[i], &wait);
		due[i] = time_mono() + (double) (wait > interval ? wait : interval);
	    }
	    for (i = 0; i < nsrc; i++)
		if (i == 0 || due[i] < next)
		    next = due[i];
	    fetch_sleep(next);
	    if (fetch_wake)
		for (i = 0; i < nsrc; i++)
		    due[i] = 0;
	}
	msg_info("stopping on a signal");
	free(due);
    }
    http_free(http);
    free(srcs);
    conf_free(conf);
    curl_global_cleanup();
    return (once && !all_ok ? EX_TEMPFAIL : EX_OK);
}
