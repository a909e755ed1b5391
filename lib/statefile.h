/*
 * NAME
 *	statefile 3h
 * SUMMARY
 *	files in state_dir: safe names, owned directories, locks, writes
 * SYNOPSIS
 *	#include "statefile.h"
 * DESCRIPTION
 *	Every file the programs keep in state_dir lives in a subdirectory
 *	of one kind, state_dir/KIND/NAME[SUFFIX]:
 *
 *	  tokens/    ACCOUNT.json (tokstore), .lock, .fail (auth)
 *	  sources/   SOURCE.json (fetchstate), .lock, .sendmail (inject)
 *	  throttle/  MAILBOX (throttle; the name made safe by the caller),
 *	             upload-HASH.budget (pace: upload budget, lock + data)
 *	  ledger/    MBTAG-KEY.json, .lock, .draft (ledger: one record per
 *	             delivery, the send ledger; .draft marks a record of the
 *	             draft path whose draft may still exist), expire.stamp
 *	  slots/     HASH.0 ... HASH.3 (graph.c: the request slots of one
 *	             app and mailbox, a semaphore of flock()ed files)
 *	  metrics/   account-NAME, source-NAME (metrics.h: counters),
 *	             alert-account-NAME, notify-account-NAME,
 *	             notify-source-NAME (alert.h: what was said when)
 *
 *	A new kind (e.g. the send ledger) is one more enum value and one
 *	more row in statefile.c.  NAME must stay inside the directory: not
 *	empty, no '/', no leading '.' (statefile_name_ok()).
 *
 *	statefile_dir() makes and opens state_dir/KIND (0700).  state_dir
 *	is walked with dir_open_path(): running as root no symbolic link
 *	another user controls is followed; the KIND directory itself is
 *	never a link.  Running as root with a usable [global] user, the
 *	KIND directory (and state_dir when this call created it) goes to
 *	that user through the descriptor, and a directory of a third user
 *	is refused.  Every other function works relative to that
 *	descriptor:
 *
 *	statefile_write() replaces a file atomically (temporary file,
 *	fsync, rename, fsync of the directory; mode 0600, the user's when
 *	root writes).  statefile_write_at() does it in a directory that
 *	statefile_dir() opened (once, for many writes); with
 *	STATEFILE_NOSYNC without fsync (kill -9 safe, not power-loss
 *	safe).  statefile_lock() opens (creates) a lock file with
 *	file_open_owned() (no symbolic link, one link only, owner root or
 *	the user, given to the user) and flock()s it exclusively, waiting
 *	at most max_wait seconds (0: not at all, < 0: no limit).
 *	statefile_lock_any() is a counting semaphore across processes
 *	(and threads: every call opens its own descriptions): it opens
 *	NAME.0 to NAME.(n-1) and returns the first one it can flock()
 *	exclusively, polling all n for at most max_wait seconds; *slot is
 *	its number.  statefile_lock_at() locks in a directory that
 *	statefile_dir() opened.  statefile_remove() removes a file (a
 *	missing one is fine).
 *
 *	statefile_path() is the path of a file (for messages and for
 *	readers such as json_file_load()).
 * DIAGNOSTICS
 *	0 or a descriptor; -1 with err filled (a sentence naming the file
 *	and the fix) and errno kept; statefile_lock() returns -2 when the
 *	lock stayed held for max_wait seconds.
 */
#ifndef M365_STATEFILE_H
#define M365_STATEFILE_H

#include <stddef.h>
#include <sys/types.h>

#include "conf.h"

enum statefile_kind {
    STATEFILE_TOKENS,			/* tokens/ACCOUNT... */
    STATEFILE_SOURCES,			/* sources/SOURCE... */
    STATEFILE_THROTTLE,			/* throttle/MAILBOX */
    STATEFILE_LEDGER,			/* ledger/MBTAG-KEY... */
    STATEFILE_SLOTS,			/* slots/HASH.N */
    STATEFILE_METRICS,			/* metrics/account-NAME... */
};

#define STATEFILE_EXISTING	(1<<0)	/* statefile_dir(): do not create */
#define STATEFILE_NOSYNC	(1<<1)	/* statefile_write_at(): no fsync */

extern int statefile_name_ok(const char *name);
extern int statefile_path(const struct conf *, enum statefile_kind,
			          const char *name, const char *suffix,
			          char *buf, size_t len);
extern int statefile_path_err(const struct conf *, enum statefile_kind,
			              const char *name, const char *suffix,
			              char *buf, size_t len,
			              char *err, size_t errlen);
extern void statefile_owner(const struct conf *, enum statefile_kind,
			            uid_t *uid, gid_t *gid);
extern int statefile_dir(const struct conf *, enum statefile_kind, int flags,
			         char *err, size_t errlen);
extern int statefile_write(const struct conf *, enum statefile_kind,
			           const char *name, const char *suffix,
			           const void *data, size_t len,
			           char *err, size_t errlen);
extern int statefile_write_at(const struct conf *, enum statefile_kind,
			              int dirfd, const char *name,
			              const char *suffix, const void *data,
			              size_t len, int flags,
			              char *err, size_t errlen);
extern int statefile_lock(const struct conf *, enum statefile_kind,
			          const char *name, const char *suffix,
			          double max_wait, char *err, size_t errlen);
extern int statefile_lock_any(const struct conf *, enum statefile_kind,
			              const char *name, int n, double max_wait,
			              int *slot, char *err, size_t errlen);
extern int statefile_lock_at(const struct conf *, enum statefile_kind,
			             int dirfd, const char *name,
			             const char *suffix, double max_wait,
			             char *err, size_t errlen);
extern void statefile_unlock(int fd);
extern int statefile_remove(const struct conf *, enum statefile_kind,
			            const char *name, const char *suffix,
			            char *err, size_t errlen);

#endif
