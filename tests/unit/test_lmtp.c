/*
 * NAME
 *	test_lmtp 1
 * SUMMARY
 *	unit tests for lmtp.c: the LMTP protocol of m365-lmtpd
 * DESCRIPTION
 *	lmtp_session() runs in a thread on one end of a socketpair; the
 *	test is the client on the other end.  Covered: greeting, LHLO and
 *	its extensions, pipelined commands (one write, every reply in
 *	order), RSET, NOOP, bad commands and their limit, HELO refused,
 *	a line longer than the buffer, SIZE over the limit, the recipient
 *	limit (452 4.5.3), XFORWARD, DATA without recipients, and DATA
 *	with a message over max_message_size: 552 5.3.4 once per
 *	recipient, without any request (graph_url points at a closed
 *	port, so a request would give 4.4.1 instead).  Delivery through
 *	Graph is tests/e2e/test-lmtp-proto.sh and test-lmtp.sh.
 *	lmtp_reply_code() and lmtp_rejected_rcpt() are tested directly.
 */
#include "config.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"
#include "lmtp.h"
#include "log.h"
#include "status.h"
#include "strbuf.h"
#include "t.h"

static char t_dir[] = "/tmp/test_lmtp.XXXXXX";

struct t_peer {
    int     fd;
    struct lmtp_worker w;
};

/* t_serve - the server side of one session */

static void *t_serve(void *arg)
{
    struct t_peer *p = arg;

    lmtp_session(p->fd, &p->w);
    close(p->fd);
    return (NULL);
}

/*
 * t_talk - one session: send input (in one write: pipelined), read until
 * the server closes; the transcript in out
 */
static void t_talk(const char *input, size_t len, struct strbuf *out)
{
    struct t_peer peer;
    pthread_t tid;
    int     sv[2];
    char    buf[4096];
    ssize_t n;
    size_t  off = 0;

    strbuf_reset(out);
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
	T_CHECK(0, "socketpair failed");
	return;
    }
    memset(&peer, 0, sizeof(peer));
    peer.fd = sv[1];
    peer.w.hostname = "lmtp.test";
    pthread_create(&tid, NULL, t_serve, &peer);
    while (off < len && (n = write(sv[0], input + off, len - off)) > 0)
	off += (size_t) n;
    while ((n = read(sv[0], buf, sizeof(buf))) > 0)
	strbuf_append(out, buf, (size_t) n);
    pthread_join(tid, NULL);
    close(sv[0]);
}

/* t_talk_str - t_talk() with a C string */

static void t_talk_str(const char *input, struct strbuf *out)
{
    t_talk(input, strlen(input), out);
}

/* t_count - occurrences of needle in hay */

static int t_count(const char *hay, const char *needle)
{
    int     n = 0;

    while ((hay = strstr(hay, needle)) != NULL) {
	n++;
	hay += strlen(needle);
    }
    return (n);
}

/* test_reply_code - the LMTP code of a result */

static void test_reply_code(void)
{
    struct m365_result r;

    result_set(&r, M365_OK, "2.0.0", "sent");
    T_EQ_INT(lmtp_reply_code(&r), 250);
    result_set(&r, M365_TEMP, "4.7.0", "Retry-After");
    T_EQ_INT(lmtp_reply_code(&r), 451);
    result_set(&r, M365_TEMP, "4.5.3", "too many");
    T_EQ_INT(lmtp_reply_code(&r), 452);
    result_set(&r, M365_PERM, "5.3.4", "too large");
    T_EQ_INT(lmtp_reply_code(&r), 552);
    result_set(&r, M365_PERM, "5.6.0", "cannot parse");
    T_EQ_INT(lmtp_reply_code(&r), 554);
    result_set(&r, M365_PERM, "5.1.1", "no such user");
    T_EQ_INT(lmtp_reply_code(&r), 550);
    result_set(&r, M365_PERM, "5.7.1", "no account");
    T_EQ_INT(lmtp_reply_code(&r), 550);
}

/* test_rejected_rcpt - the recipient a Graph refusal names */

static void test_rejected_rcpt(void)
{
    char   *rcpts[] = {"a@example.com", "Bad@Example.com", "c@example.com"};

    T_EQ_INT(lmtp_rejected_rcpt("Microsoft 365 rejected the recipients "
				"(400 ErrorInvalidRecipients: At least one "
				"recipient isn't valid., Recipient "
				"'bad@example.com' is not resolved.)",
				rcpts, 3), 1);
    T_EQ_INT(lmtp_rejected_rcpt("Recipient \"c@example.com\" isn't "
				"resolved.", rcpts, 3), 2);
    /* Names nobody of this delivery, or nobody at all: n. */
    T_EQ_INT(lmtp_rejected_rcpt("Recipient 'x@example.com' is not "
				"resolved.", rcpts, 3), 3);
    T_EQ_INT(lmtp_rejected_rcpt("At least one recipient is not valid., A "
				"message can't be sent because it contains "
				"no recipients.", rcpts, 3), 3);
    T_EQ_INT(lmtp_rejected_rcpt("Recipient 'a@example.com", rcpts, 3), 3);
}

/* test_greeting_lhlo - 220, then the extensions */

static void test_greeting_lhlo(void)
{
    struct strbuf out;

    strbuf_init(&out, 1 << 20);
    t_talk_str("LHLO client.test\r\nQUIT\r\n", &out);
    T_CONTAINS(strbuf_str(&out), "220 lmtp.test LMTP");
    T_CONTAINS(strbuf_str(&out), "250-lmtp.test\r\n");
    T_CONTAINS(strbuf_str(&out), "250-PIPELINING\r\n");
    T_CONTAINS(strbuf_str(&out), "250-ENHANCEDSTATUSCODES\r\n");
    T_CONTAINS(strbuf_str(&out), "250-8BITMIME\r\n");
    T_CONTAINS(strbuf_str(&out), "250-SIZE 100000\r\n");
    T_CONTAINS(strbuf_str(&out), "250 XFORWARD NAME ADDR PROTO HELO SOURCE "
	       "PORT IDENT\r\n");
    T_CONTAINS(strbuf_str(&out), "221 2.0.0");
    strbuf_free(&out);
}

/* test_pipelining - one write, every reply in order */

static void test_pipelining(void)
{
    struct strbuf out;

    strbuf_init(&out, 1 << 20);
    t_talk_str("LHLO c\r\nXFORWARD NAME=x IDENT=ABC123\r\n"
	       "MAIL FROM:<s@example.com> SIZE=100 BODY=8BITMIME\r\n"
	       "RCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
	       "RSET\r\nRCPT TO:<c@example.com>\r\nNOOP\r\n"
	       "MAIL FROM:<>\r\nMAIL FROM:<x@example.com>\r\n"
	       "DATA\r\nQUIT\r\n", &out);
    T_CONTAINS(strbuf_str(&out), "250 XFORWARD NAME ADDR PROTO HELO SOURCE "
	       "PORT IDENT\r\n"
	       "250 2.0.0 Ok\r\n"		/* XFORWARD */
	       "250 2.1.0 Ok\r\n"		/* MAIL */
	       "250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n"	/* RCPT, RCPT */
	       "250 2.0.0 Ok\r\n"		/* RSET */
	       "503 5.5.1 need MAIL before RCPT\r\n"
	       "250 2.0.0 Ok\r\n"		/* NOOP */
	       "250 2.1.0 Ok\r\n"		/* MAIL FROM:<> */
	       "503 5.5.1 nested MAIL command\r\n"
	       "503 5.5.1 no valid recipients\r\n"
	       "221 2.0.0 Bye\r\n");
    strbuf_free(&out);
}

/* test_bad_commands - syntax errors, HELO, long lines, the error limit */

static void test_bad_commands(void)
{
    struct strbuf out;
    struct strbuf in;
    int     i;

    strbuf_init(&out, 1 << 20);
    t_talk_str("MAIL FROM:<a@b>\r\nHELO x\r\nEHLO x\r\nLHLO\r\nLHLO x\r\n"
	       "MAIL FROM:a@b\r\nMAIL FROM:<a@b> FOO=1\r\n"
	       "MAIL FROM:<a@b> SIZE=99999999999\r\nMAIL FROM:<a@b>\r\n"
	       "RCPT TO:<>\r\nRCPT TO:<x@y> NOTIFY=NEVER\r\nRCPT TO:x@y\r\n"
	       "VRFY x\r\nBOGUS\r\nQUIT\r\n", &out);
    T_CONTAINS(strbuf_str(&out), "503 5.5.1 send LHLO first\r\n"
	       "500 5.5.1 this is an LMTP server: use LHLO\r\n"
	       "500 5.5.1 this is an LMTP server: use LHLO\r\n"
	       "501 5.5.4 syntax: LHLO hostname\r\n");
    T_CONTAINS(strbuf_str(&out), "501 5.5.4 syntax: MAIL FROM:<address>\r\n"
	       "555 5.5.4 unsupported MAIL parameter FOO=1\r\n"
	       "552 5.3.4 message size 99999999999 exceeds");
    T_CONTAINS(strbuf_str(&out), "250 2.1.0 Ok\r\n"
	       "501 5.1.3 empty recipient address\r\n"
	       "555 5.5.4 unsupported RCPT parameter NOTIFY=NEVER\r\n"
	       "501 5.5.4 syntax: RCPT TO:<address>\r\n"
	       "502 5.5.1 command not implemented\r\n"
	       "500 5.5.2 unrecognized command\r\n221 2.0.0 Bye\r\n");

    /* A line longer than the input buffer: refused, the session goes on. */
    strbuf_init(&in, 1 << 20);
    strbuf_puts(&in, "LHLO x\r\nNOOP ");
    for (i = 0; i < 70000; i++)
	strbuf_putc(&in, 'x');
    strbuf_puts(&in, "\r\nNOOP\r\nQUIT\r\n");
    t_talk(in.data, in.len, &out);
    T_CONTAINS(strbuf_str(&out), "500 5.5.2 line too long\r\n"
	       "250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n");

    /* Too many errors: 421 and the end. */
    strbuf_reset(&in);
    for (i = 0; i < 30; i++)
	strbuf_puts(&in, "BOGUS\r\n");
    t_talk(in.data, in.len, &out);
    T_EQ_INT(t_count(strbuf_str(&out), "500 5.5.2"), LMTP_MAX_ERRORS);
    T_CONTAINS(strbuf_str(&out), "421 4.7.0 too many errors");
    strbuf_free(&in);
    strbuf_free(&out);
}

/* test_rcpt_limit - the 501st recipient gets 452 4.5.3 */

static void test_rcpt_limit(void)
{
    struct strbuf out, in;
    int     i;

    strbuf_init(&out, 1 << 20);
    strbuf_init(&in, 1 << 20);
    strbuf_puts(&in, "LHLO x\r\nMAIL FROM:<s@example.com>\r\n");
    for (i = 0; i < LMTP_MAX_RCPT + 2; i++)
	strbuf_printf(&in, "RCPT TO:<r%d@example.com>\r\n", i);
    strbuf_puts(&in, "QUIT\r\n");
    t_talk(in.data, in.len, &out);
    T_EQ_INT(t_count(strbuf_str(&out), "250 2.1.5 Ok"), LMTP_MAX_RCPT);
    T_EQ_INT(t_count(strbuf_str(&out), "452 4.5.3 too many recipients"), 2);
    strbuf_free(&in);
    strbuf_free(&out);
}

/*
 * test_data_too_large - a message over max_message_size, dot-stuffed
 * lines and all: read to its end, then 552 5.3.4 for each recipient,
 * and the session goes on
 */
static void test_data_too_large(void)
{
    struct strbuf out, in;
    int     i;

    strbuf_init(&out, 1 << 20);
    strbuf_init(&in, 8 << 20);
    strbuf_puts(&in, "LHLO x\r\nMAIL FROM:<s@example.com>\r\n"
		"RCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
		"DATA\r\nSubject: big\r\n\r\n");
    for (i = 0; i < 6000; i++)
	strbuf_puts(&in, "..a line that starts with a dot, stuffed, and is "
		    "long enough to make the message grow past the limit "
		    "quickly........................................\r\n");
    strbuf_puts(&in, ".\r\nNOOP\r\nQUIT\r\n");
    t_talk(in.data, in.len, &out);
    T_CONTAINS(strbuf_str(&out), "354 ");
    T_EQ_INT(t_count(strbuf_str(&out), "552 5.3.4 "), 2);
    T_CONTAINS(strbuf_str(&out), "max_message_size");
    T_CONTAINS(strbuf_str(&out), "250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n");
    T_OK(strstr(strbuf_str(&out), "4.4.1") == NULL);
    strbuf_free(&in);
    strbuf_free(&out);
}

/* t_conf - a configuration whose Graph is a closed port, 100 KB limit */

static struct conf *t_conf(void)
{
    char    path[256], state[256], secret[256];
    struct strbuf errors;
    struct conf *conf;
    FILE   *fp;

    snprintf(state, sizeof(state), "%s/state", t_dir);
    snprintf(secret, sizeof(secret), "%s/secret", t_dir);
    snprintf(path, sizeof(path), "%s/m365relay.conf", t_dir);
    mkdir(state, 0700);
    if ((fp = fopen(secret, "w")) != NULL) {
	fputs("s3cret\n", fp);
	fclose(fp);
    }
    chmod(secret, 0600);
    if ((fp = fopen(path, "w")) == NULL)
	return (NULL);
    fprintf(fp, "[global]\nlogin_url = https://127.0.0.1:1\n"
	    "graph_url = https://127.0.0.1:1\nstate_dir = %s\n"
	    "max_message_size = 100000\n\n"
	    "[account app]\ntenant = contoso.test\n"
	    "client_id = 11111111-2222-3333-4444-555555555555\n"
	    "auth = secret\nsecret_file = %s\nmailbox = bob@example.com\n"
	    "default = yes\n", state, secret);
    fclose(fp);
    strbuf_init(&errors, 1 << 16);
    conf = conf_load(path, &errors);
    if (conf == NULL)
	printf("# %s", strbuf_str(&errors));
    strbuf_free(&errors);
    return (conf);
}

int     main(void)
{
    struct conf *conf;
    char    cmd[300];
    int     rc;

    log_open("test_lmtp");
    signal(SIGPIPE, SIG_IGN);
    if (mkdtemp(t_dir) == NULL || (conf = t_conf()) == NULL) {
	printf("not ok - set up a test configuration in %s\n", t_dir);
	return (1);
    }
    lmtp_conf_install(conf);
    T_RUN(test_reply_code);
    T_RUN(test_rejected_rcpt);
    T_RUN(test_greeting_lhlo);
    T_RUN(test_pipelining);
    T_RUN(test_bad_commands);
    T_RUN(test_rcpt_limit);
    T_RUN(test_data_too_large);
    lmtp_conf_shutdown();
    rc = T_DONE();
    snprintf(cmd, sizeof(cmd), "rm -rf %s", t_dir);
    if (system(cmd) != 0)
	printf("# could not remove %s\n", t_dir);
    return (rc);
}
