/*
 * NAME
 *	m365-relay 8
 * SUMMARY
 *	Postfix/Sendmail transport helper: one message to Graph sendMail
 * SYNOPSIS
 *	m365-relay [-c file] [-v] [-q queue_id] -f sender [--] recipient ...
 *	m365-relay [-c file] [-v] -t [-i] [-oi] [-f sender] [recipient ...]
 *	m365-relay [-c file] -n
 * DESCRIPTION
 *	Reads one message on stdin and sends it through the Microsoft 365
 *	account that handles the envelope sender, to exactly the envelope
 *	recipients.  The exit status follows sysexits(3) and the Postfix
 *	pipe(8) contract: 0 sent, 75 try again later, 65/67/77 (and 64)
 *	bounce.  On failure the first line on stdout is "X.Y.Z text", so
 *	the MTA shows the enhanced status code.  -t takes the recipients
 *	from To/Cc/Bcc (sendmail(1) compatible; -i and -oi are accepted).
 * DIAGNOSTICS
 *	One line per recipient to syslog (facility mail) or log_file; also
 *	to stderr with -v or when stderr is a terminal.
 */
#include "config.h"

#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>

#include "conf.h"
#include "deliver.h"
#include "http.h"
#include "log.h"
#include "mime.h"
#include "msg.h"
#include "proxy.h"
#include "rcpt.h"
#include "status.h"
#include "util.h"

static void relay_exit(const struct m365_result *) __attribute__((noreturn));
static void relay_usage(const char *, const char *) __attribute__((noreturn));

/* relay_exit - print the status line and exit */

static void relay_exit(const struct m365_result *res)
{
    if (res->dsn[0] != '2') {
	printf("%s %s\n", res->dsn, res->text);
	fflush(stdout);
    }
    exit(res->sysexit);
}

/* relay_drain - read and discard the rest of stdin (MTA pipe) */

static void relay_drain(void)
{
    char    buf[65536];

    while (read(STDIN_FILENO, buf, sizeof(buf)) > 0)
	 /* void */ ;
}

/*
 * relay_usage - explain the command line.  Under an MTA a bad command
 * line is a typo in master.cf or the mailer definition: defer (4.3.5)
 * so that the mail waits for the fix instead of bouncing.
 */
static void relay_usage(const char *prog, const char *why)
{
    fprintf(stderr,
	    "usage: %s [-c config] [-v] [-q queue_id] -f sender [--] recipient ...\n"
	    "       %s [-c config] [-v] -t [-i] [-f sender] [recipient ...]\n"
	    "       %s [-c config] -n\n", prog, prog, prog);
    if (!isatty(STDIN_FILENO))
	relay_drain();
    printf("4.3.5 m365-relay: command-line error (%s): check the pipe "
	   "transport in master.cf or the Sendmail mailer's A= field\n", why);
    fflush(stdout);
    exit(EX_TEMPFAIL);
}

int     main(int argc, char **argv)
{
    const char *conf_path = M365_CONFFILE;
    const char *sender = NULL;
    const char *queue_id = "NOQUEUE";
    const char *tmpdir;
    const struct conf_account *acct = NULL;
    struct conf *conf;
    struct strbuf errors;
    struct m365_result res;
    struct delivery d;
    struct msg m;
    struct msg_stream *ms;
    struct http *http;
    char  **rcpts = NULL;
    size_t  nrcpts = 0;
    char  **hdr_rcpts = NULL;
    size_t  nhdr = 0;
    char   *from_hdr = NULL;
    char    err[300];
    int     check_only = 0;
    int     from_headers = 0;
    int     verbose = 0;
    int     ch;
    size_t  k;

    util_nodump();			/* secrets never in a core file */
    log_open(argv[0]);
    /* A peer that goes away must be an error return, not a killed relay. */
    signal(SIGPIPE, SIG_IGN);
    result_init(&res);
    d.start = time_now();

    /*
     * sendmail(1)-style options: -f addr and -faddr, -oi; the value of
     * -o, -B, -N and -F (as sendmail(1) takes them) has no meaning here.
     * "+": the first recipient ends the options (no reordering), so an
     * address that starts with "-" after "--" or a recipient stays one.
     */
    opterr = 0;
    while ((ch = getopt(argc, argv, "+:c:f:r:q:F:B:N:o:intv")) != -1) {
	switch (ch) {
	case 'c':
	    conf_path = optarg;
	    break;
	case 'f':
	case 'r':
	    sender = optarg;
	    break;
	case 'q':
	    queue_id = optarg;
	    break;
	case 'n':
	    check_only = 1;
	    break;
	case 't':
	    from_headers = 1;
	    break;
	case 'v':
	    verbose++;
	    break;
	case 'i':
	case 'o':
	case 'B':
	case 'N':
	case 'F':
	    break;				/* sendmail compatibility */
	case ':':
	    fprintf(stderr, "%s: option -%c needs a value\n", argv[0], optopt);
	    relay_usage(argv[0], "option needs a value");
	default:
	    fprintf(stderr, "%s: unknown option -%c\n", argv[0], optopt);
	    relay_usage(argv[0], "unknown option");
	}
    }
    rcpts = argv + optind;
    nrcpts = (size_t) (argc - optind);

    /*
     * Postfix pipe(8) expands the null sender (a bounce) to MAILER-DAEMON
     * unless master.cf sets null_sender=; a real sender is qualified.
     */
    if (sender && strcasecmp(sender, "MAILER-DAEMON") == 0)
	sender = "";

    if (verbose || isatty(STDERR_FILENO))
	log_to_stderr(1);
    log_set_verbose(verbose > 1 ? verbose - 1 : 0);

    /* Configuration. */
    strbuf_init(&errors, STRBUF_MAX_JSON);
    conf = conf_load(conf_path, &errors);
    file_set_service_user(conf ? conf->user : NULL);	/* root trusts */
    if (conf != NULL && check_only)
	conf_check_secrets(conf, &errors);
    if (check_only) {
	if (conf == NULL || errors.len > 0) {
	    fputs(strbuf_str(&errors), stderr);
	    exit(EX_CONFIG);
	}
	if (conf_warnings(conf, &errors) > 0)
	    fputs(strbuf_str(&errors), stderr);
	proxy_print(conf, stdout);	/* which proxy, which CAs */
	printf("configuration OK\n");
	exit(EX_OK);
    }
    if (conf == NULL) {
	/* Never bounce mail for a configuration error: defer it. */
	msg_error_lines(strbuf_str(&errors));
	relay_drain();
	k = strcspn(strbuf_str(&errors), "\n");	/* the first problem */
	result_set(&res, M365_CONFIG, "4.3.5",
		   "configuration error in %s (run m365-relay -n to see all): "
		   "%.*s", conf_path, (int) (k < 300 ? k : 300),
		   strbuf_str(&errors));
	relay_exit(&res);
    }
    strbuf_free(&errors);
    log_to_setting(conf->log_file);

    /* Like Postfix pipe(8) and OpenSMTPD's helpers: never as root. */
    if (geteuid() == 0 && getenv("M365RELAY_ALLOW_ROOT") == NULL) {
	relay_drain();
	result_set(&res, M365_CONFIG, "4.3.0",
		   "m365-relay must not run as root: set user=%s in the "
		   "Postfix pipe transport (master.cf) or the Sendmail "
		   "mailer's U= field", conf->user);
	msg_error("%s", res.text);
	relay_exit(&res);
    }

    /*
     * The message, spooled: the largest limit of any account (the sender
     * picks the account; deliver() checks that one's limit).
     */
    tmpdir = file_tmpdir(NULL);
    ms = msg_stream_create(&m, tmpdir, 0,
			   (off_t) conf_max_message_size(conf));
    mime_watch(&m);				/* its structure, read on the way */
    if (msg_stream_read(ms, STDIN_FILENO, &res) < 0) {
	d.queue_id = queue_id;
	d.sender = sender ? sender : "";
	d.rcpts = rcpts;
	d.nrcpts = nrcpts;
	deliver_log(&d, conf, NULL, &res);
	relay_exit(&res);
    }

    /* -t: recipients from the headers, plus any on the command line. */
    if (from_headers) {
	if (rcpt_from_headers(m.hdr.data ? m.hdr.data : "", m.hdr.len,
			      &hdr_rcpts, &nhdr, err, sizeof(err)) < 0) {
	    result_set(&res, M365_PERM, "5.6.0",
		       "cannot read the recipients from the headers: %s", err);
	    relay_exit(&res);
	}
	if (nrcpts > 0) {
	    hdr_rcpts = xrealloc(hdr_rcpts, (nhdr + nrcpts) * sizeof(char *));
	    for (k = 0; k < nrcpts; k++)
		hdr_rcpts[nhdr++] = xstrdup(rcpts[k]);
	}
	rcpts = hdr_rcpts;
	nrcpts = nhdr;

	/*
	 * -t is sendmail(1) use by a program, not an MTA transport: the
	 * message itself names no recipient, and trying again cannot help.
	 */
	if (nrcpts == 0) {
	    result_set(&res, M365_PERM, "5.5.1",
		       "no recipient addresses found in the message header "
		       "(-t) or on the command line");
	    relay_exit(&res);
	}
    }
    if (sender == NULL) {
	from_hdr = rcpt_header_from(m.hdr.data ? m.hdr.data : "", m.hdr.len);
	if (from_hdr == NULL) {
	    struct passwd *pw = getpwuid(getuid());

	    from_hdr = xstrdup(pw ? pw->pw_name : "");
	}
	sender = from_hdr;
    }

    d.queue_id = queue_id;
    d.sender = sender;
    d.rcpts = rcpts;
    d.nrcpts = nrcpts;

    if ((http = http_create(conf, err, sizeof(err))) == NULL) {
	result_set(&res, M365_SYSTEM, "4.3.0", "%s", err);
    } else {
	(void) deliver(conf, http, &m, &d, &res, &acct);
	http_free(http);
    }
    deliver_log(&d, conf, acct, &res);
    msg_free(&m);
    if (hdr_rcpts)
	rcpt_list_free(hdr_rcpts, nhdr);
    free(from_hdr);
    conf_free(conf);
    curl_global_cleanup();
    relay_exit(&res);
    return (0);
}
