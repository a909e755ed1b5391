/*
 * NAME
 *	inject 3h
 * SUMMARY
 *	hand one message to the local MTA: SMTP client or sendmail
 * SYNOPSIS
 *	#include "inject.h"
 * DESCRIPTION
 *	inject_create() prepares a delivery target from a [source]'s
 *	deliver_to (parsed by conf_parse_deliver(), as conf_load() does):
 *	  smtp://HOST[:PORT]  SMTP (default port 25), spoken by inject.c
 *	                      itself (libcurl cannot send BODY=8BITMIME);
 *	                      one connection is kept for the messages of a
 *	                      round and a fresh one opened after any
 *	                      failure;
 *	  sendmail            conf->sendmail_path (/usr/sbin/sendmail) run
 *	                      as "sendmail -i [-B 8BITMIME] -f SENDER --
 *	                      RCPT...", the complete message in a file on
 *	                      its standard input.
 *
 *	inject_message() reads the message from msg->fd, from offset
 *	msg->start (never held in memory), after msg->prefix (trace
 *	header lines, CRLF-terminated).  Line ends become CRLF for SMTP
 *	(bare LF fixed, lines starting with "." doubled) and LF for
 *	sendmail.
 *
 *	8-bit content is declared: a message with a byte >= 0x80 goes with
 *	MAIL FROM:<...> BODY=8BITMIME (RFC 6152) or sendmail -B 8BITMIME;
 *	when its header section holds UTF-8 (RFC 6532) or an envelope
 *	address is not ASCII, SMTPUTF8 is added when the MTA offers it
 *	(RFC 6531; without the offer the message still goes, unchanged,
 *	as 8BITMIME: MTAs take such headers as 8-bit text, and rewriting
 *	them would change the message).  An MTA that does not offer
 *	8BITMIME gets no 8-bit message (INJECT_NOEXT; nothing is sent).
 *	SIZE= is sent when offered (RFC 1870).  sendmail decides about
 *	SMTPUTF8 itself (Postfix detects it for sendmail submissions).
 *
 *	sendmail runs under a small helper process of its own process
 *	group that outlives a killed m365-fetch: it waits for sendmail,
 *	writes how it ended to msg->outcome (when set; "id=" msg->id) and
 *	only then exits.  The helper keeps the caller's descriptors, the
 *	source's lock among them, so a restarted m365-fetch finds the
 *	source busy until the outcome is on disk;
 *	inject_sendmail_outcome() then reads (and removes) that record: 1
 *	with res filled as by inject_message(), 0 when there is none (the
 *	helper died too: power loss, the whole service killed), which
 *	leaves the restart in doubt.
 *
 *	msg->data_end(msg->data_end_arg) is called once at the point from
 *	which the MTA may have the message: SMTP, just before the final
 *	"."; sendmail, once the complete message is in its file and just
 *	before sendmail starts.  A non-zero result abandons the
 *	transaction (no "." is sent, sendmail is not started), so the MTA
 *	keeps nothing.
 *
 *	Only the MTA's answer to the end of the data (2xx) or sendmail's
 *	exit status 0 counts as delivery.  The result:
 *	  INJECT_OK    2xx / exit 0;
 *	  INJECT_TEMP  4xx, no connection, timeout, lost connection,
 *	               sendmail exit 75 (EX_TEMPFAIL), 71, 74, killed,
 *	               sendmail not executable; data_sent says whether the
 *	               MTA may have the message (the end of the data went
 *	               out and no reply came, or sendmail died of a signal);
 *	  INJECT_PERM  5xx to MAIL FROM, DATA or the data, sendmail's other
 *	               exit codes: this message will never be accepted;
 *	  INJECT_RCPT  5xx to RCPT TO with 5.1.x (unknown or bad recipient
 *	               address): the configured recipients are wrong, which
 *	               is not the message's fault - the caller defers;
 *	  INJECT_NOEXT the message is 8-bit and the MTA does not offer
 *	               8BITMIME: the MTA's setup - the caller defers.
 *	reply holds the MTA's last reply line ("250 2.0.0 Ok: queued as
 *	X") or sendmail's first output line; relay names the peer
 *	("127.0.0.1[127.0.0.1]:25", or the sendmail path).
 *
 *	inject_notice() sends one notice (a complete message in a file)
 *	with the null sender to one recipient: m365-fetch's offline notice
 *	and the notices of alert.h.
 *	inject_probe() checks the target without sending mail, through
 *	the code a delivery uses (m365ctl test SOURCE): SMTP: a fresh
 *	connection, the greeting and EHLO (HELO when EHLO is refused),
 *	each within secs seconds, then QUIT; it reports the extensions
 *	the MTA offers (an 8-bit message needs 8BITMIME: INJECT_NOEXT
 *	otherwise).  sendmail: the program inject_message() would run is
 *	a regular, executable file (it is not run).  The result says how
 *	far it got (step: the first that failed, or INJECT_STEP_READY),
 *	the errno of that step (ETIMEDOUT: no connection or no answer in
 *	time; 0: none, e.g. a refusal or a closed connection), the reply
 *	code, and reply: the greeting when ready, else what went wrong.
 *
 *	The caller must ignore SIGPIPE (m365-fetch does; SMTP writes use
 *	MSG_NOSIGNAL anyway).
 * DIAGNOSTICS
 *	inject_create() returns NULL with err filled for an unusable
 *	deliver_to.  inject_message() returns 0 for INJECT_OK, else -1.
 *	inject_probe() returns 0 when the MTA would take a message, else -1.
 */
#ifndef M365_INJECT_H
#define M365_INJECT_H

#include <stddef.h>
#include <sys/types.h>

#include "conf.h"

enum inject_status {
    INJECT_OK = 0,
    INJECT_TEMP = 1,
    INJECT_PERM = 2,
    INJECT_RCPT = 3,
    INJECT_NOEXT = 4,
};

struct inject;

struct inject_msg {
    int     fd;				/* the message, read from start */
    off_t   start;			/* bytes of fd to leave out */
    const char *prefix;			/* header lines to prepend, or NULL */
    const char *sender;			/* envelope sender; "" = null sender */
    char  *const *rcpts;		/* envelope recipients */
    size_t  nrcpts;
    int     (*data_end) (void *);	/* before the end of data; or NULL */
    void   *data_end_arg;
    const char *id;			/* for outcome: the Graph id */
    const char *outcome;		/* sendmail: helper's record, or NULL */
};

/* How far inject_probe() got: the step that failed, or READY. */
enum inject_step {
    INJECT_STEP_RESOLVE = 0,		/* smtp: the host name's address */
    INJECT_STEP_CONNECT = 1,		/* smtp: the TCP connection */
    INJECT_STEP_GREETING = 2,		/* smtp: the 220 greeting */
    INJECT_STEP_HELLO = 3,		/* smtp: EHLO, else HELO */
    INJECT_STEP_PROGRAM = 4,		/* sendmail: the program exists */
    INJECT_STEP_EXEC = 5,		/* sendmail: a regular, executable
					 * file (err 0: not a regular one) */
    INJECT_STEP_READY = 6,		/* the MTA would take a message */
};

struct inject_probe {
    enum inject_step step;
    int     err;			/* errno of the failed step, or 0 */
    int     code;			/* SMTP reply code, 0: none */
    char    reply[400];			/* greeting, or the problem */
    char    relay[200];			/* host[ip]:port, or the program */
    int     ext_8bitmime;		/* 8-bit messages can go */
    int     ext_smtputf8;
    int     ext_size;
};

struct inject_result {
    enum inject_status status;
    int     code;			/* SMTP reply code, or exit status */
    char    dsn[12];			/* "2.0.0", "4.4.1", "5.7.1" ... */
    char    reply[400];			/* printable */
    char    relay[200];
    int     data_sent;			/* the MTA may have the message */
    long long bytes;			/* message bytes handed over */
};

extern struct inject *inject_create(const struct conf *, const char *deliver_to,
				            char *err, size_t errlen);
extern int inject_message(struct inject *, const struct inject_msg *,
			          struct inject_result *);
extern void inject_free(struct inject *);
extern int inject_probe(struct inject *, int secs, struct inject_probe *);
extern int inject_sendmail_outcome(struct inject *, const char *path,
				           const char *id, struct inject_result *);
extern const char *inject_status_name(enum inject_status);
extern int inject_notice(const struct conf *, const char *deliver_to, int fd,
			         char *rcpt, struct inject_result *,
			         char *err, size_t errlen);

/* An unlinked, close-on-exec temporary file in dir (mode 0600); -1 on error. */
extern int inject_tmpfile(const char *dir);

#endif
