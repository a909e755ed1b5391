/*
 * NAME
 *	status 3
 * SUMMARY
 *	outcome of an operation: status class, sysexits code, DSN, text
 * DESCRIPTION
 *	See status.h.  status_exits[] is the one table from enhanced
 *	status code to exit code (Postfix src/global/sys_exits.c maps the
 *	other way).  It reproduces the pairs the code used when callers
 *	chose both: 2.0.0 EX_OK; 4.3.0, 4.3.5, 4.4.1, 4.4.2, 4.7.0, 4.7.1
 *	EX_TEMPFAIL; 5.1.1 EX_NOUSER; 5.3.4 EX_DATAERR; 5.5.1 EX_USAGE;
 *	5.5.3 and 5.6.0 EX_DATAERR; 5.7.1 EX_NOPERM.  Every permanent
 *	code is one that Postfix pipe(8) and Sendmail treat as a bounce
 *	(never EX_TEMPFAIL, EX_OSERR or EX_IOERR, which they retry).
 */
#include "config.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "status.h"

#define STATUS_ANY	(-1)

struct status_exit {
    char    class;			/* '2', '4' or '5' */
    int     subject;			/* X.subject.X, or STATUS_ANY */
    int     detail;			/* X.X.detail, or STATUS_ANY */
    int     sysexit;
};

/* The first entry that matches wins: specific codes before their class. */
static const struct status_exit status_exits[] = {
    {'2', STATUS_ANY, STATUS_ANY, EX_OK},	/* delivered */
    {'4', STATUS_ANY, STATUS_ANY, EX_TEMPFAIL},	/* try again later */
    {'5', 1, STATUS_ANY, EX_NOUSER},	/* addressing: recipient rejected */
    {'5', 3, 4, EX_DATAERR},		/* message too big for the system */
    {'5', 5, 1, EX_USAGE},		/* no recipient at all */
    {'5', 5, STATUS_ANY, EX_DATAERR},	/* too many recipients */
    {'5', 6, STATUS_ANY, EX_DATAERR},	/* message content or media */
    {'5', 7, STATUS_ANY, EX_NOPERM},	/* security or policy: Send As */
    {'5', STATUS_ANY, STATUS_ANY, EX_UNAVAILABLE},	/* other permanent */
};

#define STATUS_NEXITS	(sizeof(status_exits) / sizeof(status_exits[0]))

/* status_number - 1 to 3 digits at *cp; advances *cp; -1 if none */

static int status_number(const char **cp)
{
    int     n = 0, len = 0;

    while (isdigit((unsigned char) **cp) && len < 4) {
	n = n * 10 + (**cp - '0');
	(*cp)++;
	len++;
    }
    return (len >= 1 && len <= 3 ? n : -1);
}

/*
 * status_parse - split "C.S.D" (RFC 3463: class 2, 4 or 5, subject and
 * detail of 1 to 3 digits); 0, or -1 when dsn is not such a code.
 */
static int status_parse(const char *dsn, int *subject, int *detail)
{
    const char *cp;

    if (dsn == NULL || (dsn[0] != '2' && dsn[0] != '4' && dsn[0] != '5')
	|| dsn[1] != '.')
	return (-1);
    cp = dsn + 2;
    if ((*subject = status_number(&cp)) < 0 || *cp++ != '.')
	return (-1);
    if ((*detail = status_number(&cp)) < 0 || *cp != 0)
	return (-1);
    return (0);
}

/* status_sysexit - the exit code of an enhanced status code */

int     status_sysexit(const char *dsn)
{
    const struct status_exit *e;
    int     subject, detail;

    if (status_parse(dsn, &subject, &detail) < 0)
	return (EX_TEMPFAIL);			/* not a code: defer */
    for (e = status_exits; e < status_exits + STATUS_NEXITS; e++)
	if (e->class == dsn[0]
	    && (e->subject == STATUS_ANY || e->subject == subject)
	    && (e->detail == STATUS_ANY || e->detail == detail))
	    return (e->sysexit);
    return (EX_TEMPFAIL);			/* not reached: '5' catches all */
}

/* status_class - the DSN class that goes with a status */

static char status_class(enum m365_status status)
{
    switch (status) {
    case M365_OK:
	return ('2');
    case M365_PERM:
	return ('5');
    case M365_TEMP:
    case M365_CONFIG:
    case M365_REAUTH:
    case M365_SYSTEM:
	return ('4');
    }
    return ('4');
}

/* result_init - success until something says otherwise */

void    result_init(struct m365_result *r)
{
    memset(r, 0, sizeof(*r));
    r->status = M365_OK;
    snprintf(r->dsn, sizeof(r->dsn), "2.0.0");
    r->sysexit = status_sysexit(r->dsn);
}

/*
 * result_set - record an outcome; keeps http_status and request_id.  The
 * exit code follows from the DSN; a DSN that is not a code, or whose
 * class disagrees with the status, defers (see status.h).
 */
void    result_set(struct m365_result *r, enum m365_status status,
		           const char *dsn, const char *fmt,...)
{
    char    raw[M365_TEXT_MAX];
    char    shown[sizeof(r->dsn)];
    va_list ap;
    int     subject, detail;
    char    want = status_class(status);

    r->status = status;
    if (status_parse(dsn, &subject, &detail) < 0 || dsn[0] != want) {
	log_printable(shown, sizeof(shown), dsn ? dsn : "(none)",
		      strlen(dsn ? dsn : "(none)"));
	msg_error("internal error: status \"%s\" with DSN \"%s\": not an "
		  "enhanced status code of that class; deferring",
		  status_name(status), shown);
	if (status_parse(dsn, &subject, &detail) < 0)
	    snprintf(r->dsn, sizeof(r->dsn), "4.3.0");
	else
	    snprintf(r->dsn, sizeof(r->dsn), "4%s", dsn + 1);
	if (status == M365_OK || status == M365_PERM)
	    r->status = M365_TEMP;
    } else {
	snprintf(r->dsn, sizeof(r->dsn), "%s", dsn);
    }
    r->sysexit = status_sysexit(r->dsn);
    va_start(ap, fmt);
    vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    log_printable(r->text, sizeof(r->text), raw, strlen(raw));
}

const char *status_name(enum m365_status s)
{
    switch (s) {
    case M365_OK:
	return ("ok");
    case M365_TEMP:
	return ("temporary failure");
    case M365_PERM:
	return ("permanent failure");
    case M365_CONFIG:
	return ("configuration error");
    case M365_REAUTH:
	return ("sign-in required");
    case M365_SYSTEM:
	return ("system error");
    }
    return ("unknown");
}

const char *result_disposition(const struct m365_result *r)
{
    if (r->dsn[0] == '2')
	return ("sent");
    if (r->dsn[0] == '5')
	return ("bounced");
    return ("deferred");
}
