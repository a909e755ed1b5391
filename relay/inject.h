/*
 * NAME
 *	inject 3h
 * SUMMARY
 *	hand one message to the local MTA: libcurl SMTP client or sendmail
 * SYNOPSIS
 *	#include "inject.h"
 * DESCRIPTION
 *	inject_create() prepares a delivery target from a [source]'s
 *	deliver_to:
 *	  smtp://HOST[:PORT]  SMTP with libcurl (default port 25); one
 *	                      connection is reused for the messages of a
 *	                      round and a fresh one is opened after any
 *	                      failure;
 *	  sendmail            conf->sendmail_path (/usr/sbin/sendmail) run
 *	                      as "sendmail -i -f SENDER -- RCPT...", the
 *	                      message on its standard input.
 *
 *	inject_message() streams the message from msg->fd (read from
 *	offset 0; never held in memory) after msg->prefix (trace header
 *	lines, CRLF-terminated).  Line ends become CRLF for SMTP (bare LF
 *	fixed, libcurl does the dot-stuffing) and LF for sendmail.  Just
 *	before the end of the data (SMTP: before libcurl sends the final
 *	"."; sendmail: before its standard input is closed) it calls
 *	msg->data_end(msg->data_end_arg); a non-zero result aborts the
 *	transaction without completing it, so the MTA keeps nothing.
 *
 *	Only the MTA's answer to the end of the data (250) or sendmail's
 *	exit status 0 counts as delivery.  The result:
 *	  INJECT_OK    250 / exit 0;
 *	  INJECT_TEMP  4xx, no connection, timeout, lost connection,
 *	               sendmail exit 75 (EX_TEMPFAIL), 71, 74, killed,
 *	               sendmail not executable; data_sent says whether the
 *	               end of the data may have reached the MTA;
 *	  INJECT_PERM  5xx to MAIL FROM or the data, sendmail's other exit
 *	               codes: this message will never be accepted;
 *	  INJECT_RCPT  5xx to RCPT TO with 5.1.x (unknown or bad recipient
 *	               address): the configured recipients are wrong, which
 *	               is not the message's fault - the caller defers.
 *	reply holds the MTA's last reply line ("250 2.0.0 Ok: queued as
 *	X") or sendmail's first output line; relay names the peer
 *	("127.0.0.1[127.0.0.1]:25", or the sendmail path).
 *
 *	The caller must ignore SIGPIPE (a sendmail that quits early).
 * DIAGNOSTICS
 *	inject_create() returns NULL with err filled for an unusable
 *	deliver_to.  inject_message() returns 0 for INJECT_OK, else -1.
 */
#ifndef M365_INJECT_H
#define M365_INJECT_H

#include <stddef.h>

#include "conf.h"

enum inject_status {
    INJECT_OK = 0,
    INJECT_TEMP = 1,
    INJECT_PERM = 2,
    INJECT_RCPT = 3,
};

struct inject;

struct inject_msg {
    int     fd;				/* the message, read from offset 0 */
    const char *prefix;			/* header lines to prepend, or NULL */
    const char *sender;			/* envelope sender; "" = null sender */
    char  *const *rcpts;		/* envelope recipients */
    size_t  nrcpts;
    int     (*data_end) (void *);	/* before the end of data; or NULL */
    void   *data_end_arg;
};

struct inject_result {
    enum inject_status status;
    int     code;			/* SMTP reply code, or exit status */
    char    dsn[12];			/* "2.0.0", "4.4.1", "5.7.1" ... */
    char    reply[400];			/* printable */
    char    relay[200];
    int     data_sent;			/* data_end was called and succeeded */
    long long bytes;			/* message bytes handed over */
};

extern struct inject *inject_create(const struct conf *, const char *deliver_to,
				            char *err, size_t errlen);
extern int inject_message(struct inject *, const struct inject_msg *,
			          struct inject_result *);
extern void inject_free(struct inject *);
extern const char *inject_status_name(enum inject_status);

/* An unlinked, close-on-exec temporary file in dir (mode 0600); -1 on error. */
extern int inject_tmpfile(const char *dir);

#endif
