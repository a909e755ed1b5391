/*
 * NAME
 *	ledger 3h
 * SUMMARY
 *	the send ledger: one durable record per delivery, in state_dir
 * SYNOPSIS
 *	#include "ledger.h"
 * DESCRIPTION
 *	A record stands for one delivery: the key is the Message-ID (a
 *	hash of the header section when there is none), the sending
 *	mailbox and the envelope recipients of this delivery (sorted,
 *	case-insensitive), so every retry of the same delivery by the MTA
 *	finds the same record, and a split delivery (other recipients) has
 *	its own.  ledger_key() makes the record's name from them:
 *	MBTAG-KEY, MBTAG the first 16 hex digits of SHA-256 of the mailbox
 *	(so the records of one mailbox can be found by name), KEY the
 *	SHA-256 of all of it.
 *
 *	The record is state_dir/ledger/NAME.json (statefile_write(): a
 *	temporary file, fsync, rename, fsync of the directory: a record
 *	once saved survives a crash) and is owned by the process that holds
 *	the exclusive flock() on state_dir/ledger/NAME.lock.  The lock is
 *	held for as long as the process works on the delivery and is
 *	released by the kernel when the process dies: a record whose lock
 *	can be taken at once belongs to nobody.  States:
 *
 *	  drafting  a draft is being made (draft_id once Graph named it):
 *	            nothing was sent; the draft may be deleted;
 *	  sending   POST .../send went out (or may have): the draft's
 *	            immutable id tells whether it was sent (no longer a
 *	            draft) before anything is sent again;
 *	  sent      Microsoft 365 accepted the message (request_id);
 *	  failed    given up; the draft was deleted.
 *
 *	ledger_open() locks (waiting at most max_wait seconds) and reads
 *	the record; a new one has state LEDGER_NONE.  ledger_save() writes
 *	it (updated = now).  ledger_forget() removes record and lock file
 *	(the caller holds the lock; a process that opened the old lock
 *	file notices the unlinked file and opens the new one).
 *	ledger_close() releases the lock and the strings.
 *
 *	ledger_orphans() visits the records of one mailbox that nobody
 *	owns: a record in state drafting or sending is an orphan of a
 *	process that died (kill -9, power loss): fn() is called with it
 *	locked and decides (delete the draft, then forget or save).
 *	Records in state sent or failed older than LEDGER_EXPIRY seconds,
 *	and lock files without a record older than that, are removed.
 * DIAGNOSTICS
 *	0 on success; -1 with err set (a sentence naming the file); -2
 *	from ledger_open() when another process holds the record longer
 *	than max_wait.  A damaged record is logged and read as new.
 */
#ifndef M365_LEDGER_H
#define M365_LEDGER_H

#include <stddef.h>
#include <time.h>

#include "conf.h"

#define LEDGER_NAME_MAX	96
#define LEDGER_EXPIRY	(5 * 86400)	/* Postfix's maximal_queue_lifetime */

enum ledger_state {
    LEDGER_NONE = 0,			/* no record yet */
    LEDGER_DRAFTING = 1,
    LEDGER_SENDING = 2,
    LEDGER_SENT = 3,
    LEDGER_FAILED = 4,
};

struct ledger_rec {
    char    name[LEDGER_NAME_MAX];	/* MBTAG-KEY */
    int     lock_fd;			/* -1: not locked */
    enum ledger_state state;
    char   *mailbox;
    char   *message_id;			/* or NULL */
    char   *queue_id;			/* of the last attempt, or NULL */
    char   *draft_id;			/* immutable id, or NULL */
    char   *request_id;			/* of the send, or NULL */
    long    nrcpts;
    time_t  created;
    time_t  updated;
};

extern int ledger_key(const char *mailbox, const char *message_id,
		              const char *hdr, size_t hdrlen,
		              char *const *rcpts, size_t nrcpts,
		              char *name, size_t len);
extern int ledger_open(const struct conf *, const char *name, double max_wait,
		               struct ledger_rec *, char *err, size_t errlen);
extern int ledger_save(const struct conf *, struct ledger_rec *, char *err,
		               size_t errlen);
extern int ledger_forget(const struct conf *, struct ledger_rec *,
			         char *err, size_t errlen);
extern void ledger_close(struct ledger_rec *);
extern void ledger_set(char **field, const char *value);
extern int ledger_orphans(const struct conf *, const char *mailbox,
		                  int (*fn) (void *, struct ledger_rec *),
			                  void *arg, char *err, size_t errlen);
extern const char *ledger_state_name(enum ledger_state);

#endif
