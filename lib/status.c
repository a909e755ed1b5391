/*
 * NAME
 *	status 3
 * SUMMARY
 *	outcome of an operation: status class, sysexits code, DSN, text
 * DESCRIPTION
 *	See status.h.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "status.h"

void    result_init(struct m365_result *r)
{
    memset(r, 0, sizeof(*r));
    r->status = M365_OK;
    r->sysexit = EX_OK;
    snprintf(r->dsn, sizeof(r->dsn), "2.0.0");
}

/* result_set - record an outcome; keeps http_status and request_id */

void    result_set(struct m365_result *r, enum m365_status status,
		           int sysexit, const char *dsn, const char *fmt,...)
{
    char    raw[M365_TEXT_MAX];
    va_list ap;

    r->status = status;
    r->sysexit = sysexit;
    snprintf(r->dsn, sizeof(r->dsn), "%s", dsn);
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
