/*
 * NAME
 *	fetchstate 3h
 * SUMMARY
 *	durable per-source state of m365-fetch (exactly once into the MTA)
 * SYNOPSIS
 *	#include "fetchstate.h"
 * DESCRIPTION
 *	One JSON file per [source NAME], state_dir/sources/NAME.json, mode
 *	0600 (owned by conf->user when written by root), written atomically
 *	(temp file, fsync, rename, fsync of the directory), and, during a
 *	round, NAME.json.next (the same document written without fsync;
 *	see fetchstate.c for which transition goes where, and why):
 *
 *	  {"gen": "3f9a0c2e7b1d4a65",
 *	   "folder": "inbox", "folder_id": "...", "delta_link": "...",
 *	   "pending": {"<graph id>": {"imid": "...", "state": "injected",
 *	               "mta_reply": "250 ...", "at": 1700000000}},
 *	   "done": ["<graph id>", ...],
 *	   "folder_ids": {"Processed": "<id>"},
 *	   "offline": false, "last_error": "...", "remedy": "...",
 *	   "notified": false, "offline_since": 0, "not_before": 0,
 *	   "last_round": 0, "last_success": 0, "injected": 0,
 *	   "rejected": 0, "bounce_reports": 0, "bounce_dsns": 0,
 *	   "bounce_unmatched": 0}
 *
 *	A message moves through the pending states
 *	  injecting  before the SMTP transaction (or sendmail) starts;
 *	             no longer written (fetchstate.c says why), still read
 *	             from files of older versions;
 *	  data_sent  recorded just before the end of the data (SMTP ".",
 *	             sendmail's stdin closed): from here on the MTA may
 *	             have the message;
 *	  injected   the MTA answered 250 (sendmail exited 0); only the
 *	             after-action (read, move, delete) is left;
 *	  rejected   the MTA refused it permanently (5xx) or the loop
 *	             guard skipped it; only the reject action is left;
 *	and leaves "pending" for the bounded "done" list (the newest
 *	FETCHSTATE_DONE_MAX Graph ids, oldest dropped first) once its
 *	after-action succeeded.
 *
 *	fetchstate_recovery() is the decision after a restart (kill -9 at
 *	any point): injecting -> inject again (the MTA never saw the end
 *	of the data, so it has nothing); data_sent -> inject again and log
 *	that it may be a duplicate (the only ambiguous window: between the
 *	final "." and the MTA's reply; after a power loss it reaches to
 *	the next durable write); injected -> only the after-action;
 *	rejected -> only the reject action.
 *
 *	fetchstate_load() on a missing file gives an empty state and
 *	returns 0; it takes NAME.json.next instead of NAME.json when that
 *	continues NAME.json (the same "gen": a round that was killed).
 *
 *	A round writes through fetchstate_open() (the sources directory,
 *	made and opened once), fetchstate_write() and fetchstate_close().
 *	FETCHSTATE_DURABLE replaces NAME.json with a new "gen" and survives
 *	a power loss (two fsyncs); FETCHSTATE_VISIBLE replaces
 *	NAME.json.next and survives the process (kill -9), not a power
 *	loss (no fsync); a state without a durable "gen" yet is written
 *	durably either way.  fetchstate_close() removes a NAME.json.next
 *	that a later durable write made stale.  fetchstate_save() is one
 *	durable write with its own open and close.
 *
 *	fetchstate_lock() takes a non-blocking exclusive
 *	flock() on state_dir/sources/NAME.lock so that two m365-fetch
 *	processes (a daemon and a timer run) never work on one source.
 * DIAGNOSTICS
 *	Functions that touch files return 0, or -1 with err filled
 *	(a sentence naming the file and the fix).  fetchstate_lock()
 *	returns -2 when another process holds the lock.
 */
#ifndef M365_FETCHSTATE_H
#define M365_FETCHSTATE_H

#include <stddef.h>
#include <time.h>

#include "conf.h"

#define FETCHSTATE_DONE_MAX	512	/* Graph ids kept for resync dedup */
#define FETCHSTATE_GEN_LEN	16	/* hex digits of a generation */

enum fetchstate_pstate {
    FETCHSTATE_INJECTING = 0,
    FETCHSTATE_DATA_SENT = 1,
    FETCHSTATE_INJECTED = 2,
    FETCHSTATE_REJECTED = 3,
};

enum fetchstate_action {
    FETCHSTATE_REDO_INJECT = 0,		/* nothing reached the MTA */
    FETCHSTATE_REDO_INJECT_DUP = 1,	/* inject again, maybe a duplicate */
    FETCHSTATE_REDO_AFTER = 2,		/* only the after-action */
    FETCHSTATE_REDO_REJECT = 3,		/* only the reject action */
};

struct fetchstate_pending {
    char   *id;				/* Graph message id */
    char   *imid;			/* internetMessageId, or NULL */
    enum fetchstate_pstate state;
    char   *mta_reply;			/* "250 2.0.0 Ok: queued as X", or NULL */
    time_t  at;				/* when the state was recorded */
};

struct fetchstate_folder {
    char   *name;			/* as configured: "Processed" */
    char   *id;				/* Graph folder id */
};

struct fetchstate {
    char    gen[FETCHSTATE_GEN_LEN + 1];/* of NAME.json read or written */
    char   *folder;			/* folder setting folder_id belongs to */
    char   *folder_id;
    char   *delta_link;			/* next round starts here, or NULL */
    struct fetchstate_pending *pending;
    size_t  npending;
    char  **done;			/* oldest first */
    size_t  ndone;
    struct fetchstate_folder *folders;	/* resolved move targets */
    size_t  nfolders;
    int     offline;			/* needs an administrator */
    char   *last_error;
    char   *remedy;
    int     notified;			/* notify mail sent this offline period */
    time_t  offline_since;
    time_t  not_before;			/* Retry-After from Graph */
    time_t  last_round;			/* last round started */
    time_t  last_success;		/* last round completed */
    long    injected;			/* messages handed to the MTA, ever */
    long    rejected;			/* refused by the MTA or loop-skipped */
    long    bounce_reports;		/* mode = bounces: reports handled */
    long    bounce_dsns;		/* DSNs the MTA accepted */
    long    bounce_unmatched;		/* reports of no ledger record */
};

/* A source's state files, open for one round. */
struct fetchstate_file {
    const struct conf *conf;
    char   *source;
    int     dirfd;			/* state_dir/sources */
    int     next;			/* NAME.json.next may exist */
    int     last_durable;		/* the last write was durable */
    long    durable;			/* writes with fsync (file, directory) */
    long    visible;			/* writes without fsync */
};

#define FETCHSTATE_VISIBLE	0	/* survives kill -9: NAME.json.next */
#define FETCHSTATE_DURABLE	1	/* survives power loss: NAME.json */

extern int fetchstate_open(const struct conf *, const char *source,
			           struct fetchstate_file *,
			           char *err, size_t errlen);
extern int fetchstate_write(struct fetchstate_file *, struct fetchstate *,
			            int how, char *err, size_t errlen);
extern void fetchstate_close(struct fetchstate_file *);

extern int fetchstate_path(const struct conf *, const char *source,
			           const char *suffix, char *buf, size_t len);
extern int fetchstate_load(const struct conf *, const char *source,
			           struct fetchstate *, char *err, size_t errlen);
extern int fetchstate_save(const struct conf *, const char *source,
		              const struct fetchstate *, char *err, size_t errlen);
extern int fetchstate_lock(const struct conf *, const char *source,
			           char *err, size_t errlen);
extern void fetchstate_unlock(int fd);
extern void fetchstate_clear(struct fetchstate *);

/* JSON form (the file body), for tests and m365ctl status. */
extern char *fetchstate_format(const struct fetchstate *);
extern int fetchstate_parse(const char *json, size_t len, struct fetchstate *,
			            char *err, size_t errlen);

/* Pending messages. */
extern struct fetchstate_pending *fetchstate_pending_find(struct fetchstate *,
							          const char *id);
extern struct fetchstate_pending *fetchstate_pending_set(struct fetchstate *,
			            const char *id, const char *imid,
			            enum fetchstate_pstate, const char *mta_reply);
extern void fetchstate_pending_drop(struct fetchstate *, const char *id);
extern enum fetchstate_action fetchstate_recovery(const struct fetchstate_pending *);
extern const char *fetchstate_pstate_name(enum fetchstate_pstate);

/* Done list (bounded) and the move-target cache. */
extern void fetchstate_done_add(struct fetchstate *, const char *id);
extern int fetchstate_done_has(const struct fetchstate *, const char *id);
extern void fetchstate_finish(struct fetchstate *, const char *id);
extern const char *fetchstate_folder_get(const struct fetchstate *,
					         const char *name);
extern void fetchstate_folder_set(struct fetchstate *, const char *name,
				          const char *id);

/* Offline bookkeeping: 1 when this call changed the state. */
extern int fetchstate_set_offline(struct fetchstate *, const char *error,
				          const char *remedy);
extern int fetchstate_set_online(struct fetchstate *);

#endif
