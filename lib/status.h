/*
 * NAME
 *	status 3h
 * SUMMARY
 *	outcome of an operation: status class, sysexits code, DSN, text
 * SYNOPSIS
 *	#include "status.h"
 * DESCRIPTION
 *	Library code reports what happened in a struct m365_result; only
 *	main() turns it into an exit code (sysexit) and the first output
 *	line "X.Y.Z text" that Postfix pipe(8) and Sendmail read.
 *
 *	The rule (style.md 6): exit 0 only after Microsoft 365 accepted
 *	the message; EX_TEMPFAIL (defer) for everything transient or
 *	uncertain; a permanent code only with clear evidence.
 *
 *	One status model, like Postfix's sys_exits.c: a caller names the
 *	status and the enhanced status code (RFC 3463); the exit code is
 *	never chosen by hand.  status_sysexit() looks it up in one table
 *	keyed by the DSN: 2.X.X is EX_OK, 4.X.X EX_TEMPFAIL, a 5.X.X a
 *	permanent code by its subject (5.1.X EX_NOUSER, 5.3.4 EX_DATAERR,
 *	5.5.1 EX_USAGE, other 5.5.X and 5.6.X EX_DATAERR, 5.7.X
 *	EX_NOPERM, any other EX_UNAVAILABLE).  The DSN class must agree
 *	with the status: M365_OK goes with 2.X.X, M365_PERM with 5.X.X,
 *	every other status with 4.X.X.
 *
 *	result_set() fills every field; the text is a complete sentence
 *	naming the cause and, where there is one, the fix.  A status and
 *	DSN that disagree, or a DSN that is not X.Y.Z, are a bug (or a
 *	damaged state file): result_set() then defers (class 4, M365_TEMP
 *	for M365_OK or M365_PERM) and logs it, so a result can never
 *	combine a soft code with a hard one or claim success on failure.
 *
 *	status_sysexit() is the table: the exit code for a DSN, and
 *	EX_TEMPFAIL for anything that is not one.
 */
#ifndef M365_STATUS_H
#define M365_STATUS_H

#include <sysexits.h>

enum m365_status {
    M365_OK = 0,			/* done */
    M365_TEMP = 1,			/* transient: try again later */
    M365_PERM = 2,			/* permanent fault of this message */
    M365_CONFIG = 3,			/* configuration error (admin fixes) */
    M365_REAUTH = 4,			/* account needs interactive sign-in */
    M365_SYSTEM = 5,			/* local system error */
};

#define M365_TEXT_MAX	600

struct m365_result {
    enum m365_status status;
    int     sysexit;			/* from dsn: status_sysexit() */
    char    dsn[12];			/* "2.0.0", "4.7.0", "5.1.1" */
    long    http_status;		/* 0: no HTTP reply */
    char    request_id[80];		/* Graph request-id, or "" */
    char    text[M365_TEXT_MAX];	/* why; printable ASCII */
};

extern void result_init(struct m365_result *);
extern void result_set(struct m365_result *, enum m365_status,
		               const char *dsn, const char *fmt,...)
	    __attribute__((format(printf, 4, 5)));
extern int status_sysexit(const char *dsn);
extern const char *status_name(enum m365_status);

/* The Postfix "status=" word for a result: sent, deferred, bounced. */
extern const char *result_disposition(const struct m365_result *);

#endif
