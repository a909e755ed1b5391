/*
 * NAME
 *	policy 3
 * SUMMARY
 *	m365-milter: failure policy, SMTP replies, reference-counted config
 * DESCRIPTION
 *	See policy.h.  The table below is the whole failure policy: which
 *	[milter] key decides, and what each action answers.  A new
 *	failure class is a new row, not a new "if" in a callback.
 */
#include "config.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "policy.h"

/* Longest reply text we send; SMTP reply lines stay below 512 bytes. */
#define MLT_REPLY_TEXT	400

struct mlt_handling {
    const char *what;			/* for the log */
    const char *key;			/* [milter] parameter */
    size_t  offset;			/* its field in struct conf_milter */
    const char *temp_xcode;		/* tempfail, when the cause has none */
    const char *perm_rcode;		/* reject */
    const char *perm_xcode;
};

static const struct mlt_handling mlt_handling[] = {
    [MLT_FAIL_INTERNAL] = {"internal error", "on_internal_error",
	offsetof(struct conf_milter, on_internal_error), "4.3.0",
    "554", "5.3.0"},
    [MLT_FAIL_GRAPH] = {"Microsoft 365 unavailable", "on_graph_error",
	offsetof(struct conf_milter, on_graph_error), "4.4.1",
    "554", "5.4.1"},
    [MLT_FAIL_OFFLINE] = {"account offline", "on_account_offline",
	offsetof(struct conf_milter, on_account_offline), "4.7.0",
    "550", "5.7.0"},
};

/* The current configuration and its lock. */
static pthread_mutex_t mlt_conf_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mlt_conf *mlt_current;
static unsigned long mlt_gen;

/* mlt_conf_unref - drop one reference; caller holds the lock */

static void mlt_conf_unref(struct mlt_conf *h)
{
    if (--h->refcnt == 0) {
	conf_free(h->conf);
	free(h);
    }
}

/* mlt_conf_install - make a newly loaded configuration current */

void    mlt_conf_install(struct conf *conf)
{
    struct mlt_conf *h = calloc(1, sizeof(*h));
    struct mlt_conf *old;

    if (h == NULL) {
	/* The caller keeps running with the old configuration. */
	msg_error("out of memory while installing the new configuration; "
		  "keeping the old one");
	conf_free(conf);
	return;
    }
    h->conf = conf;
    h->refcnt = 1;			/* the "current" reference */
    pthread_mutex_lock(&mlt_conf_lock);
    h->gen = ++mlt_gen;
    old = mlt_current;
    mlt_current = h;
    if (old)
	mlt_conf_unref(old);
    pthread_mutex_unlock(&mlt_conf_lock);
}

/* mlt_conf_acquire - a reference to the current configuration */

struct mlt_conf *mlt_conf_acquire(void)
{
    struct mlt_conf *h;

    pthread_mutex_lock(&mlt_conf_lock);
    if ((h = mlt_current) != NULL)
	h->refcnt++;
    pthread_mutex_unlock(&mlt_conf_lock);
    return (h);
}

/* mlt_conf_release - drop a reference; NULL is fine */

void    mlt_conf_release(struct mlt_conf *h)
{
    if (h == NULL)
	return;
    pthread_mutex_lock(&mlt_conf_lock);
    mlt_conf_unref(h);
    pthread_mutex_unlock(&mlt_conf_lock);
}

/* mlt_conf_shutdown - drop the "current" reference at exit */

void    mlt_conf_shutdown(void)
{
    pthread_mutex_lock(&mlt_conf_lock);
    if (mlt_current) {
	mlt_conf_unref(mlt_current);
	mlt_current = NULL;
    }
    pthread_mutex_unlock(&mlt_conf_lock);
}

/* mlt_failure_of - the policy row for a failed delivery result */

enum mlt_failure mlt_failure_of(const struct m365_result *res)
{
    switch (res->status) {
    case M365_TEMP:
	return (MLT_FAIL_GRAPH);
    case M365_REAUTH:
	return (MLT_FAIL_OFFLINE);
    default:
	/* M365_CONFIG, M365_SYSTEM: the administrator must act. */
	return (MLT_FAIL_INTERNAL);
    }
}

/* mlt_action - the configured action for a failure class */

enum conf_action mlt_action(const struct conf *conf, enum mlt_failure kind)
{
    const struct mlt_handling *h = mlt_handling + kind;

    return (*(const enum conf_action *)
	    ((const char *) &conf->milter + h->offset));
}

/* mlt_action_name - tempfail, accept, reject */

const char *mlt_action_name(enum conf_action action)
{
    switch (action) {
    case CONF_ACTION_ACCEPT:
	return ("accept");
    case CONF_ACTION_REJECT:
	return ("reject");
    default:
	return ("tempfail");
    }
}

/* mlt_setreply - the one wrapper around smfi_setreply() */

int     mlt_setreply(SMFICTX *ctx, const char *rcode, const char *xcode,
		             const char *text)
{
    char    buf[2 * MLT_REPLY_TEXT + 1];
    char    r[4], x[12];
    size_t  n = 0;
    const unsigned char *cp;

    /*
     * libmilter refuses CR/LF and drops a text with a single "%";
     * SMTP wants printable ASCII.  Keep the reply short.
     */
    for (cp = (const unsigned char *) text; *cp && n < MLT_REPLY_TEXT; cp++) {
	if (*cp == '%') {
	    buf[n++] = '%';
	    buf[n++] = '%';
	} else if (*cp < 0x20 || *cp > 0x7e) {
	    buf[n++] = ' ';
	} else {
	    buf[n++] = (char) *cp;
	}
    }
    buf[n] = 0;
    /* libmilter's prototype is not const-correct. */
    snprintf(r, sizeof(r), "%s", rcode);
    snprintf(x, sizeof(x), "%s", xcode);
    if (smfi_setreply(ctx, r, x, buf) != MI_SUCCESS) {
	msg_warn("cannot set the SMTP reply %s %s (libmilter refused it)",
		 rcode, xcode);
	return (-1);
    }
    return (0);
}

/* mlt_fail - apply the failure policy: log, reply, milter status */

sfsistat mlt_fail(SMFICTX *ctx, const struct conf *conf,
		          enum mlt_failure kind, const char *qid,
		          const char *dsn, const char *text)
{
    const struct mlt_handling *h = mlt_handling + kind;
    enum conf_action action = mlt_action(conf, kind);
    char    xcode[12];

    switch (action) {
    case CONF_ACTION_ACCEPT:
	msg_warn("%s: %s: %s; passing the message on untouched (%s = "
		 "accept)", qid, h->what, text, h->key);
	return (SMFIS_ACCEPT);
    case CONF_ACTION_REJECT:
	if (dsn && dsn[0] && dsn[1] == '.')
	    snprintf(xcode, sizeof(xcode), "5%s", dsn + 1);
	else
	    snprintf(xcode, sizeof(xcode), "%s", h->perm_xcode);
	msg_info("%s: milter-reject: %s %s %s (%s: %s = reject)", qid,
		 h->perm_rcode, xcode, text, h->what, h->key);
	(void) mlt_setreply(ctx, h->perm_rcode, xcode, text);
	return (SMFIS_REJECT);
    default:
	if (dsn && dsn[0] == '4' && dsn[1] == '.')
	    snprintf(xcode, sizeof(xcode), "%s", dsn);
	else
	    snprintf(xcode, sizeof(xcode), "%s", h->temp_xcode);
	msg_info("%s: milter-tempfail: 451 %s %s (%s: %s = tempfail)", qid,
		 xcode, text, h->what, h->key);
	(void) mlt_setreply(ctx, "451", xcode, text);
	return (SMFIS_TEMPFAIL);
    }
}
