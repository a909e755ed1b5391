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
 *	result_set() fills every field; the text is a complete sentence
 *	naming the cause and, where there is one, the fix.
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
    int     sysexit;			/* EX_OK, EX_TEMPFAIL, EX_NOUSER ... */
    char    dsn[12];			/* "2.0.0", "4.7.0", "5.1.1" */
    long    http_status;		/* 0: no HTTP reply */
    char    request_id[80];		/* Graph request-id, or "" */
    char    text[M365_TEXT_MAX];	/* why; printable ASCII */
};

extern void result_init(struct m365_result *);
extern void result_set(struct m365_result *, enum m365_status, int sysexit,
		               const char *dsn, const char *fmt,...)
	    __attribute__((format(printf, 5, 6)));
extern const char *status_name(enum m365_status);

/* The Postfix "status=" word for a result: sent, deferred, bounced. */
extern const char *result_disposition(const struct m365_result *);

#endif
