/*
 * NAME
 *	tokstore 3h
 * SUMMARY
 *	per-account token store in state_dir, shared by all processes
 * SYNOPSIS
 *	#include "tokstore.h"
 * DESCRIPTION
 *	One JSON file per account, state_dir/tokens/NAME.json, mode 0600,
 *	owned by conf->user when written by root; written atomically
 *	(temp + fsync + rename).  It holds the cached access token and its
 *	expiry, the newest refresh token and when it was issued, the
 *	account state (online/offline), the last error with its remedy,
 *	and a counter of token requests (for status and benchmarks).
 *
 *	tokstore_lock() takes an exclusive flock() on state_dir/tokens/
 *	NAME.lock (created 0600); Postfix runs many deliveries at once
 *	and only the lock holder refreshes: the others wait, re-read the
 *	file and find the new token.  tokstore_lock_wait() waits at most
 *	max_wait seconds (then -2, err says so), so that a stuck holder
 *	cannot hold up every delivery.
 *
 *	tokstore_load() on a missing file gives an empty entry (no token,
 *	online) and returns 0.  A file that group/other can read is
 *	refused (-1, err says chmod 600).
 */
#ifndef M365_TOKSTORE_H
#define M365_TOKSTORE_H

#include <stddef.h>
#include <time.h>

#include "conf.h"

struct tokstore {
    char   *access_token;
    time_t  access_expires;		/* epoch seconds */
    char   *refresh_token;
    time_t  refresh_issued;		/* when the newest RT arrived */
    time_t  signed_in;			/* last interactive sign-in */
    char   *scope;			/* granted scopes, as returned */
    int     offline;			/* 1: sign-in required */
    char   *last_error;			/* "AADSTS50173 invalid_grant: ..." */
    char   *remedy;			/* what the admin should do */
    time_t  last_error_at;
    long    token_requests;		/* token endpoint calls, ever */
};

extern int tokstore_path(const struct conf *, const char *account,
			         const char *suffix, char *buf, size_t len);
extern int tokstore_load(const struct conf *, const char *account,
			         struct tokstore *, char *err, size_t errlen);
extern int tokstore_save(const struct conf *, const char *account,
		                const struct tokstore *, char *err, size_t errlen);
extern int tokstore_lock(const struct conf *, const char *account,
			         char *err, size_t errlen);
extern int tokstore_lock_wait(const struct conf *, const char *account,
			              double max_wait, char *err, size_t errlen);
extern void tokstore_unlock(int fd);
extern int tokstore_remove(const struct conf *, const char *account,
			           char *err, size_t errlen);
extern void tokstore_clear(struct tokstore *);

#endif
