/*
 * NAME
 *	ledger 3h
 * SUMMARY
 *	the send ledger: one durable record per delivery, in state_dir
 * SYNOPSIS
 *	#include "ledger.h"
 * DESCRIPTION
 *	A record stands for one delivery, sent through sendMail or through
 *	a draft (path): the key is the Message-ID (a hash of the header
 *	section when there is none), the sending mailbox and the envelope
 *	recipients of this delivery (sorted, case-insensitive), so every
 *	retry of the same delivery by the MTA finds the same record, and a
 *	split delivery (other recipients) has its own.  ledger_key() makes
 *	the record's name from them: MBTAG-KEY, MBTAG the first 16 hex
 *	digits of SHA-256 of the mailbox (so the records of one mailbox
 *	can be found by name), KEY the SHA-256 of all of it.
 *	ledger_message_id() is the Message-ID ("<...>") of a header
 *	section as the key and Graph's internetMessageId use it, or NULL.
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
 *	  sending   the send went out, or is about to (saved before its
 *	            first byte, with attempted = its start): a record found
 *	            in this state belongs to a process that died and reads
 *	            as ambiguous, never as "not sent";
 *	  ambiguous the send broke off after the whole request went out
 *	            (a reset, a time-out, 5xx): Microsoft 365 may have
 *	            accepted it; resolve.h decides before anything is sent
 *	            again;
 *	  sent      Microsoft 365 accepted the message (request_id);
 *	  failed    given up; nothing was sent (a draft was deleted).
 *
 *	digest is a hash of the message body (ledger_digest(): SHA-256 of
 *	its first LEDGER_DIGEST_MAX bytes and its length; raw 32 bytes and
 *	64 hex digits): a record whose Message-ID is reused by another
 *	message (another body) is not that message's.
 *
 *	ledger_open() locks (waiting at most max_wait seconds) and reads
 *	the record; a new one has state LEDGER_NONE.  ledger_open_delivery()
 *	does it for one delivery (ledger_key() of its mailbox, Message-ID,
 *	header and recipients); a record whose digest is not the message's
 *	(a reused Message-ID) reads as new, with a warning; -1 fills res.  ledger_save() writes
 *	it (updated = now); for a record of the draft path in state
 *	drafting, sending or ambiguous it also keeps the marker NAME.draft,
 *	which ledger_orphans() looks for.  ledger_forget() removes record,
 *	marker and lock file (the caller holds the lock; a process that
 *	opened the old lock file notices the unlinked file and opens the
 *	new one).  ledger_close() releases the lock and the strings.
 *
 *	ledger_orphans() visits the marked records of one mailbox that
 *	nobody owns: a draft of a process that died (kill -9, power loss):
 *	fn() is called with it locked and decides (delete the draft, then
 *	save the new state).
 *
 *	ledger_expire() keeps the ledger bounded: records not saved for
 *	ledger_lifetime seconds (the MTA's maximal queue lifetime: no retry
 *	of that delivery comes any more), lock files and markers without a
 *	record that old, and the temporary files of a writer killed in the
 *	middle, are removed (each under its lock).  It
 *	walks the directory at most once per LEDGER_EXPIRE_EVERY seconds
 *	(the mtime of state_dir/ledger/expire.stamp), unless force is set,
 *	and returns the number of records removed.
 *
 *	ledger_sent_result() fills res for a delivery the record shows as
 *	sent: 2.0.0 "already sent at TIME, request-id ID" and how.
 *
 *	ledger_set_envelope() records the envelope (sender, "" for the
 *	null sender, and recipients) that a DSN for the delivery goes back
 *	to (m365-fetch's bounce mode, issue 12); a record keeps the first
 *	32 KB of recipients (the rest is only in the key), so that it
 *	stays far below the size a record may have.  ledger_find() is the
 *	look-up by Message-ID of one mailbox: it reads (without locking:
 *	records are replaced by rename) every record of the mailbox and
 *	returns in r the one with that Message-ID that may have been sent
 *	(sending, ambiguous or sent) and that carries an envelope; of
 *	several (a split delivery) the one whose recipients include rcpt
 *	(may be NULL), else the newest.  A record older than
 *	ledger_lifetime is expired whether or not ledger_expire() removed
 *	it yet, and does not match.  1 found (release r with
 *	ledger_close()), 0 none, -1 err.
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
#include "msg.h"
#include "status.h"

#define LEDGER_NAME_MAX	96
#define LEDGER_LIFETIME	(5 * 86400)	/* without conf: Postfix's default */
#define LEDGER_EXPIRE_EVERY	3600	/* seconds between ledger_expire() walks */
#define LEDGER_DIGEST_MAX	(64 * 1024)	/* body bytes in the digest */

enum ledger_state {
    LEDGER_NONE = 0,			/* no record yet */
    LEDGER_DRAFTING = 1,
    LEDGER_SENDING = 2,
    LEDGER_SENT = 3,
    LEDGER_FAILED = 4,
    LEDGER_AMBIGUOUS = 5,
};

enum ledger_path {
    LEDGER_PATH_SENDMAIL = 0,		/* one sendMail request */
    LEDGER_PATH_DRAFT = 1,		/* a draft, attachments, /send */
};

struct ledger_rec {
    char    name[LEDGER_NAME_MAX];	/* MBTAG-KEY */
    int     lock_fd;			/* -1: not locked */
    enum ledger_state state;
    enum ledger_path path;
    char   *mailbox;
    char   *message_id;			/* or NULL */
    char   *queue_id;			/* of the last attempt, or NULL */
    char   *draft_id;			/* immutable id, or NULL */
    char   *request_id;			/* of the send, or NULL */
    char   *digest;			/* hash of the body, or NULL */
    char   *sender;			/* envelope sender, "" for <>; NULL:
					 * not recorded (an older record) */
    char  **rcpts;			/* envelope recipients (nrcpts), or
					 * NULL when not recorded */
    long    nrcpts;
    time_t  created;
    time_t  updated;
    time_t  attempted;			/* start of the last send, or 0 */
    int     marked;			/* private: NAME.draft exists */
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
extern int ledger_expire(const struct conf *, int force);
extern const char *ledger_state_name(enum ledger_state);
extern char *ledger_message_id(const char *hdr, size_t len);
extern int ledger_digest(const struct msg *, unsigned char *raw, char *hex);
extern int ledger_open_delivery(const struct conf *, const char *mailbox,
				        const char *message_id, const char *hdr,
				        size_t hdrlen, char *const *rcpts,
				        size_t nrcpts, const char *digest,
				        double max_wait, const char *queue_id,
				        struct ledger_rec *,
				        struct m365_result *);
extern void ledger_sent_result(const struct ledger_rec *, const char *how,
			               struct m365_result *);
extern void ledger_set_envelope(struct ledger_rec *, const char *sender,
				        char *const *rcpts, size_t nrcpts);
extern int ledger_find(const struct conf *, const char *mailbox,
		               const char *message_id, const char *rcpt,
		               struct ledger_rec *, char *err, size_t errlen);

#endif
