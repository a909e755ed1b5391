/*
 * NAME
 *	policy 3h
 * SUMMARY
 *	m365-milter: failure policy, SMTP replies, reference-counted config
 * SYNOPSIS
 *	#include "policy.h"
 * DESCRIPTION
 *	The failure policy is a table (OpenDKIM's "struct handling"
 *	style): one row per failure class, the [milter] key that chooses
 *	the action (tempfail, accept, reject) and the reply codes used.
 *	mlt_fail() applies it: it logs one line, sets the SMTP reply and
 *	returns the libmilter status for the callback to return.
 *
 *	mlt_setreply() is the only place that calls smfi_setreply(): it
 *	makes the text safe for the milter protocol (printable ASCII,
 *	"%" doubled, bounded length).
 *
 *	The configuration lives in a reference-counted handle.
 *	mlt_conf_install() makes a newly loaded configuration current;
 *	mlt_conf_acquire() takes a reference to the current one (a
 *	message keeps it from MAIL FROM to end of message or abort) and
 *	mlt_conf_release() drops it.  The old configuration is freed
 *	when its last message ends, so a reload never changes the rules
 *	under a message in flight.
 * DIAGNOSTICS
 *	mlt_conf_acquire() returns NULL only before the first install.
 */
#ifndef M365_MILTER_POLICY_H
#define M365_MILTER_POLICY_H

#include <libmilter/mfapi.h>

#include "conf.h"
#include "status.h"

struct mlt_conf {
    struct conf *conf;
    unsigned long gen;			/* 1, 2, ... per install */
    int     refcnt;			/* current + messages using it */
};

extern void mlt_conf_install(struct conf *);
extern struct mlt_conf *mlt_conf_acquire(void);
extern void mlt_conf_release(struct mlt_conf *);
extern void mlt_conf_shutdown(void);

/* Failure classes: rows of the policy table. */
enum mlt_failure {
    MLT_FAIL_INTERNAL = 0,		/* bug, I/O, out of memory: */
    MLT_FAIL_GRAPH = 1,			/* Graph/token endpoint unreachable */
    MLT_FAIL_OFFLINE = 2,		/* account needs sign-in */
};

extern enum mlt_failure mlt_failure_of(const struct m365_result *);
extern enum conf_action mlt_action(const struct conf *, enum mlt_failure);
extern const char *mlt_action_name(enum conf_action);
extern int mlt_setreply(SMFICTX *, const char *rcode, const char *xcode,
			        const char *text);
extern sfsistat mlt_fail(SMFICTX *, const struct conf *, enum mlt_failure,
			         const char *qid, const char *dsn,
			         const char *text);

#endif
