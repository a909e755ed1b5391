/*
 * NAME
 *	metrics 3h
 * SUMMARY
 *	counters per account and per source
 * SYNOPSIS
 *	#include "metrics.h"
 * DESCRIPTION
 *	Recording.  Each event is counted where it happens, by one line
 *	in the code that sees it:
 *	  metrics_delivery()   the outcome of one delivery (deliver.c):
 *	                       messages_total{status=sent|deferred|bounced,
 *	                       class=DSN}; then metrics_flush() and the
 *	                       daily expiry check (alert_expiry_daily());
 *	  metrics_http()       a finished HTTP request (http.c): requests
 *	                       with an access token count as Graph requests
 *	                       of the thread's account (metrics_scope()),
 *	                       graph_requests_total{status=HTTP status, or
 *	                       "error" when no reply came}, and a 429 also
 *	                       as throttled_total;
 *	  metrics_token()      a token request, when it went out (auth.c):
 *	                       token_requests_total, and when it failed
 *	                       token_failures_total{class=...};
 *	  metrics_add()        anything else, e.g. inbound_injected_total
 *	                       and inbound_parked_total of a source
 *	                       (fetch.c).
 *	metrics_scope() names the account whose Graph requests this thread
 *	makes from now on (deliver.c, fetch.c; thread-local: the milter
 *	delivers in many threads).  NULL stops counting them.
 *
 *	Counts are first added up in memory (thread-safe), then written by
 *	metrics_flush(): at the end of each delivery (metrics_delivery())
 *	and of each round of m365-fetch.  A process that ends without a
 *	flush loses its last counts, never mail.
 *
 *	Storage: one small text file per account and per source,
 *	state_dir/metrics/account-NAME and source-NAME, one "key value"
 *	line per counter (key: the metric name without the m365relay_
 *	prefix and without the account or source label, e.g.
 *	messages_total{status="deferred",class="4.4.1"}).  A flush takes
 *	the file's flock() (statefile_lock(): owner and link rules of
 *	state_dir), reads it, adds, writes it back in place and unlocks:
 *	the lock is held for one read and one write of a page-cached file
 *	of a few hundred bytes and never across a network request, so
 *	concurrent m365-relay processes do not queue behind each other
 *	(no lock convoy), and each process flushes once per message, not
 *	once per event.  No fsync: counters are not mail, a power loss may
 *	lose the last increments; a kill -9 loses nothing that was flushed
 *	(the write replaces bytes in place and only ever grows the file,
 *	so no moment exists where the file is empty).  The files survive
 *	restarts; counters only grow (Prometheus counters).
 *
 *	metrics_update() is that read-modify-write for any such file: fn
 *	changes the set and returns 1 to have it written back (alert.c
 *	keeps its "what was announced" records this way).
 *
 *	Reading.  metrics_load() reads one file (under its lock);
 *	metrics_parse() and metrics_format() are the file format
 *	(metrics_parse() skips lines it does not understand).
 *	The exposition of these counters (and of gauges) is exposition.h.
 * DIAGNOSTICS
 *	Recording never fails the caller: a file that cannot be written is
 *	logged (once per process) and its counts kept for the next flush.
 *	metrics_flush() returns the number of files it could not write.
 *	metrics_load(): 0, or -1 with err filled.
 */
#ifndef M365_METRICS_H
#define M365_METRICS_H

#include <stddef.h>
#include <time.h>

#include "conf.h"
#include "status.h"
#include "strbuf.h"

enum metrics_kind {
    METRICS_ACCOUNT = 0,		/* state_dir/metrics/account-NAME */
    METRICS_SOURCE = 1,			/* state_dir/metrics/source-NAME */
};

#define METRICS_FILE_MAX	(64 * 1024)	/* bytes of one counter file */
#define METRICS_KEY_MAX		200	/* bytes of one key */
#define METRICS_PENDING_MAX	256	/* counters waiting for a flush */
#define METRICS_LOCK_WAIT	5.0	/* seconds for a counter file's lock */

struct metrics_sample {
    char   *key;
    long long value;
};

struct metrics_set {
    struct metrics_sample *v;
    size_t  n;
    size_t  cap;
};

/* Recording. */
extern void metrics_scope(const char *account);
extern void metrics_add(enum metrics_kind, const char *name, const char *key,
			        long long n);
extern void metrics_http(int graph, long status);
extern void metrics_token(const char *account, int sent, int ok,
			          const char *cls);
extern void metrics_delivery(const struct conf *, const struct conf_account *,
			             const struct m365_result *);
extern int metrics_flush(const struct conf *);

/* Reading. */
extern void metrics_set_add(struct metrics_set *, const char *key,
			            long long n);
extern long long metrics_set_get(const struct metrics_set *, const char *key);
extern void metrics_set_free(struct metrics_set *);
extern int metrics_parse(const char *text, size_t len, struct metrics_set *);
extern void metrics_format(const struct metrics_set *, struct strbuf *);
extern int metrics_load(const struct conf *, enum metrics_kind,
			        const char *name, struct metrics_set *,
			        char *err, size_t errlen);
extern int metrics_update(const struct conf *, const char *file,
			          int (*fn) (struct metrics_set *, void *),
			          void *arg, char *err, size_t errlen);

#endif
