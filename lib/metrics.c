/*
 * NAME
 *	metrics 3
 * SUMMARY
 *	counters per account and per source, Prometheus text exposition
 * DESCRIPTION
 *	See metrics.h.  Why flock()ed counter files rather than
 *	per-process append-only logs merged by the reader: a counter file
 *	stays a few hundred bytes whatever the traffic (a log would need a
 *	compaction step and its own crash recovery), every process counts
 *	in memory and flushes once per message (one lock, one read, one
 *	write of a cached page), and the state_dir rules (owner, no
 *	symbolic links, root giving files to the [global] user) come from
 *	statefile_lock() for free.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alert.h"
#include "conf.h"
#include "fetchstate.h"
#include "log.h"
#include "metrics.h"
#include "statefile.h"
#include "throttle.h"
#include "tokstore.h"
#include "util.h"
#include "xalloc.h"

#define METRICS_PREFIX	"m365relay_"
#define METRICS_NAME_MAX	300	/* "account-" + an account name */

struct metrics_pending {
    enum metrics_kind kind;
    char   *name;
    char   *key;
    long long n;
};

static pthread_mutex_t metrics_mutex = PTHREAD_MUTEX_INITIALIZER;
static struct metrics_pending metrics_pend[METRICS_PENDING_MAX];
static size_t metrics_npend;
static int metrics_warned;		/* a flush failed: said once */
static __thread char metrics_acct[METRICS_NAME_MAX];

/* metrics_key_ok - a key that a counter file line can hold */

static int metrics_key_ok(const char *key)
{
    const char *cp;

    if (key == NULL || *key == 0 || strlen(key) >= METRICS_KEY_MAX)
	return (0);
    for (cp = key; *cp; cp++)
	if ((unsigned char) *cp <= ' ' || (unsigned char) *cp >= 0x7f)
	    return (0);
    return (1);
}

/* metrics_file_name - "account-NAME" or "source-NAME"; NULL if too long */

static const char *metrics_file_name(enum metrics_kind kind, const char *name,
				             char *buf, size_t len)
{
    if (name == NULL || *name == 0
	|| snprintf(buf, len, "%s-%s", kind == METRICS_SOURCE ? "source" :
		    "account", name) >= (int) len)
	return (NULL);
    return (buf);
}

/* metrics_scope - the account of this thread's Graph requests, or NULL */

void    metrics_scope(const char *account)
{
    if (account == NULL
	|| snprintf(metrics_acct, sizeof(metrics_acct), "%s", account)
	>= (int) sizeof(metrics_acct))
	metrics_acct[0] = 0;
}

/* metrics_add - count n more of key for an account or source (memory) */

void    metrics_add(enum metrics_kind kind, const char *name, const char *key,
		            long long n)
{
    struct metrics_pending *p;
    size_t  i;

    if (name == NULL || *name == 0 || !metrics_key_ok(key) || n == 0)
	return;
    pthread_mutex_lock(&metrics_mutex);
    for (i = 0; i < metrics_npend; i++) {
	p = metrics_pend + i;
	if (p->kind == kind && strcmp(p->name, name) == 0
	    && strcmp(p->key, key) == 0) {
	    p->n += n;
	    pthread_mutex_unlock(&metrics_mutex);
	    return;
	}
    }
    /* Full (no flush for a long time): the newest counts are lost. */
    if (metrics_npend < METRICS_PENDING_MAX) {
	p = metrics_pend + metrics_npend++;
	p->kind = kind;
	p->name = xstrdup(name);
	p->key = xstrdup(key);
	p->n = n;
    }
    pthread_mutex_unlock(&metrics_mutex);
}

/* metrics_http - a finished request; graph: it carried an access token */

void    metrics_http(int graph, long status)
{
    char    key[64];

    if (!graph || metrics_acct[0] == 0)
	return;
    if (status > 0)
	snprintf(key, sizeof(key), "graph_requests_total{status=\"%ld\"}",
		 status);
    else
	snprintf(key, sizeof(key), "graph_requests_total{status=\"error\"}");
    metrics_add(METRICS_ACCOUNT, metrics_acct, key, 1);
    if (status == 429)
	metrics_add(METRICS_ACCOUNT, metrics_acct, "throttled_total", 1);
}

/* metrics_token - a token request (if sent); cls: why it failed */

void    metrics_token(const char *account, int sent, int ok,
		              const char *cls)
{
    char    key[METRICS_KEY_MAX];
    char    word[40];
    size_t  i;

    if (!sent)
	return;
    metrics_add(METRICS_ACCOUNT, account, "token_requests_total", 1);
    if (ok)
	return;
    /* A class name made a label value: letters, digits, '_'. */
    snprintf(word, sizeof(word), "%s", cls && *cls ? cls : "unknown");
    for (i = 0; word[i]; i++)
	if (!((word[i] >= 'a' && word[i] <= 'z')
	      || (word[i] >= '0' && word[i] <= '9')))
	    word[i] = '_';
    snprintf(key, sizeof(key), "token_failures_total{class=\"%s\"}", word);
    metrics_add(METRICS_ACCOUNT, account, key, 1);
}

/*
 * metrics_delivery - the outcome of one delivery: count it, write the
 * counts, and (at most once a day) log credentials that expire soon.
 */
void    metrics_delivery(const struct conf *conf,
			         const struct conf_account *acct,
			         const struct m365_result *res)
{
    char    key[METRICS_KEY_MAX];

    if (acct != NULL) {
	if (res->dsn[0] == '2')
	    snprintf(key, sizeof(key), "messages_total{status=\"sent\"}");
	else
	    snprintf(key, sizeof(key), "messages_total{status=\"%s\","
		     "class=\"%.11s\"}", result_disposition(res), res->dsn);
	metrics_add(METRICS_ACCOUNT, acct->name, key, 1);
    }
    (void) metrics_flush(conf);
    if (acct != NULL)
	alert_expiry_daily(conf, acct);
}

/* metrics_set_add - add n to key (a new key starts at 0) */

void    metrics_set_add(struct metrics_set *set, const char *key, long long n)
{
    size_t  i;

    for (i = 0; i < set->n; i++) {
	if (strcmp(set->v[i].key, key) == 0) {
	    set->v[i].value += n;
	    return;
	}
    }
    if (set->n == set->cap) {
	set->cap = set->cap ? set->cap * 2 : 16;
	set->v = xrealloc(set->v, set->cap * sizeof(*set->v));
    }
    set->v[set->n].key = xstrdup(key);
    set->v[set->n].value = n;
    set->n++;
}

/* metrics_set_get - the value of key, 0 when absent */

long long metrics_set_get(const struct metrics_set *set, const char *key)
{
    size_t  i;

    for (i = 0; i < set->n; i++)
	if (strcmp(set->v[i].key, key) == 0)
	    return (set->v[i].value);
    return (0);
}

/* metrics_set_free - release the samples; the set can be used again */

void    metrics_set_free(struct metrics_set *set)
{
    size_t  i;

    for (i = 0; i < set->n; i++)
	free(set->v[i].key);
    free(set->v);
    memset(set, 0, sizeof(*set));
}

/*
 * metrics_parse - "key value" lines into set (added up).  A line that is
 * not one (a torn or foreign line) is skipped.  The number of samples.
 */
int     metrics_parse(const char *text, size_t len, struct metrics_set *set)
{
    const char *end = text + len;
    const char *line, *nl, *sp;
    char    key[METRICS_KEY_MAX];
    char    num[32];
    char   *ep;
    long long value;
    size_t  klen, vlen;

    for (line = text; line < end; line = nl + 1) {
	if ((nl = memchr(line, '\n', (size_t) (end - line))) == NULL)
	    break;				/* no complete last line */
	for (sp = nl; sp > line && sp[-1] != ' '; sp--)
	     /* void */ ;
	if (sp == line)
	    continue;
	klen = (size_t) (sp - 1 - line);
	vlen = (size_t) (nl - sp);
	if (klen == 0 || klen >= sizeof(key) || vlen == 0
	    || vlen >= sizeof(num))
	    continue;
	memcpy(key, line, klen);
	key[klen] = 0;
	memcpy(num, sp, vlen);
	num[vlen] = 0;
	errno = 0;
	value = strtoll(num, &ep, 10);
	if (*ep != 0 || errno != 0 || !metrics_key_ok(key))
	    continue;
	metrics_set_add(set, key, value);
    }
    return ((int) set->n);
}

/* metrics_format - the set as "key value" lines */

void    metrics_format(const struct metrics_set *set, struct strbuf *out)
{
    size_t  i;

    for (i = 0; i < set->n; i++)
	strbuf_printf(out, "%s %lld\n", set->v[i].key, set->v[i].value);
}

/* metrics_read_fd - the whole (small) file behind fd, from offset 0 */

static int metrics_read_fd(int fd, struct strbuf *sb, const char *file,
			           char *err, size_t errlen)
{
    char    buf[4096];
    off_t   off = 0;
    ssize_t n;

    for (;;) {
	n = pread(fd, buf, sizeof(buf), off);
	if (n < 0 && errno == EINTR)
	    continue;
	if (n < 0) {
	    snprintf(err, errlen, "cannot read counter file %s: %s", file,
		     strerror(errno));
	    return (-1);
	}
	if (n == 0)
	    return (0);
	if (strbuf_append(sb, buf, (size_t) n) < 0) {
	    snprintf(err, errlen, "counter file %s is larger than %lu bytes; "
		     "remove it (its counters restart at 0)", file,
		     (unsigned long) sb->max);
	    return (-1);
	}
	off += n;
    }
}

/*
 * metrics_lock - lock state_dir/metrics/FILE (made when missing); the
 * directory is made only when it is not there (no mkdir per flush).
 */
static int metrics_lock(const struct conf *conf, const char *file,
			        char *err, size_t errlen)
{
    int     dfd, fd, saved;

    if ((dfd = statefile_dir(conf, STATEFILE_METRICS, STATEFILE_EXISTING,
			     err, errlen)) < 0
	&& (dfd = statefile_dir(conf, STATEFILE_METRICS, 0, err,
				errlen)) < 0)
	return (-1);
    fd = statefile_lock_at(conf, STATEFILE_METRICS, dfd, file, NULL,
			   METRICS_LOCK_WAIT, err, errlen);
    saved = errno;
    close(dfd);
    errno = saved;
    return (fd);
}

/*
 * metrics_update - read state_dir/metrics/FILE under its lock, let fn
 * change the set, write it back in place when fn returns > 0.
 */
int     metrics_update(const struct conf *conf, const char *file,
		               int (*fn) (struct metrics_set *, void *),
		               void *arg, char *err, size_t errlen)
{
    struct metrics_set set;
    struct strbuf old, new;
    int     fd, rc = 0;

    if ((fd = metrics_lock(conf, file, err, errlen)) < 0)
	return (-1);
    memset(&set, 0, sizeof(set));
    strbuf_init(&old, METRICS_FILE_MAX);
    strbuf_init(&new, METRICS_FILE_MAX);
    if (metrics_read_fd(fd, &old, file, err, errlen) < 0) {
	rc = -1;
    } else {
	(void) metrics_parse(old.data ? old.data : "", old.len, &set);
	if (fn(&set, arg) > 0) {
	    metrics_format(&set, &new);
	    /* In place: the file only shrinks when a value got shorter. */
	    if (strbuf_failed(&new)) {
		snprintf(err, errlen, "counter file %s would be larger than "
			 "%lu bytes", file, (unsigned long) new.max);
		rc = -1;
	    } else if (pwrite(fd, new.data ? new.data : "", new.len, 0)
		       != (ssize_t) new.len
		       || (new.len < old.len
			   && ftruncate(fd, (off_t) new.len) < 0)) {
		snprintf(err, errlen, "cannot write counter file %s/metrics/"
			 "%s: %s", conf->state_dir, file, strerror(errno));
		rc = -1;
	    }
	}
    }
    metrics_set_free(&set);
    strbuf_free(&old);
    strbuf_free(&new);
    statefile_unlock(fd);
    return (rc);
}

/* Flush: the pending counts of one file. */
struct metrics_batch {
    struct metrics_pending *p;
    size_t  n;
    enum metrics_kind kind;
    const char *name;
};

/* metrics_add_batch - metrics_update() callback: add one file's counts */

static int metrics_add_batch(struct metrics_set *set, void *arg)
{
    struct metrics_batch *b = arg;
    size_t  i;

    for (i = 0; i < b->n; i++)
	if (b->p[i].kind == b->kind && strcmp(b->p[i].name, b->name) == 0)
	    metrics_set_add(set, b->p[i].key, b->p[i].n);
    return (1);
}

/* metrics_flush - write the counts in memory to their files */

int     metrics_flush(const struct conf *conf)
{
    struct metrics_pending *p;
    struct metrics_batch b;
    char    file[METRICS_NAME_MAX + 16];
    char    err[600];
    size_t  n, i, j;
    int     failed = 0;

    pthread_mutex_lock(&metrics_mutex);
    n = metrics_npend;
    p = xmalloc((n ? n : 1) * sizeof(*p));
    memcpy(p, metrics_pend, n * sizeof(*p));
    metrics_npend = 0;
    pthread_mutex_unlock(&metrics_mutex);

    b.p = p;
    b.n = n;
    for (i = 0; i < n; i++) {
	/* The first pending count of each file writes all of that file. */
	for (j = 0; j < i; j++)
	    if (p[j].kind == p[i].kind && strcmp(p[j].name, p[i].name) == 0)
		break;
	if (j < i)
	    continue;
	b.kind = p[i].kind;
	b.name = p[i].name;
	if (metrics_file_name(p[i].kind, p[i].name, file, sizeof(file)) != NULL
	    && metrics_update(conf, file, metrics_add_batch, &b, err,
			      sizeof(err)) == 0)
	    continue;
	failed++;
	if (!metrics_warned++)
	    msg_warn("metrics: %s (the counts are kept for the next try)",
		     err);
	for (j = i; j < n; j++)
	    if (p[j].kind == p[i].kind && strcmp(p[j].name, p[i].name) == 0)
		metrics_add(p[j].kind, p[j].name, p[j].key, p[j].n);
    }
    for (i = 0; i < n; i++) {
	free(p[i].name);
	free(p[i].key);
    }
    free(p);
    return (failed);
}

/* metrics_load - the counters of one account or source */

int     metrics_load(const struct conf *conf, enum metrics_kind kind,
		             const char *name, struct metrics_set *set,
		             char *err, size_t errlen)
{
    char    file[METRICS_NAME_MAX + 16];
    char    path[4096];
    struct strbuf sb;
    int     fd, rc;

    if (metrics_file_name(kind, name, file, sizeof(file)) == NULL) {
	snprintf(err, errlen, "name too long for a counter file: %.100s",
		 name ? name : "");
	return (-1);
    }
    /* Nothing counted yet: no file, and none is made by reading. */
    if (statefile_path(conf, STATEFILE_METRICS, file, NULL, path,
		       sizeof(path)) < 0 || access(path, F_OK) < 0)
	return (0);
    if ((fd = metrics_lock(conf, file, err, errlen)) < 0)
	return (-1);
    strbuf_init(&sb, METRICS_FILE_MAX);
    rc = metrics_read_fd(fd, &sb, path, err, errlen);
    statefile_unlock(fd);
    if (rc == 0)
	(void) metrics_parse(sb.data ? sb.data : "", sb.len, set);
    strbuf_free(&sb);
    return (rc);
}

/* Exposition. */

/* metrics_label - name="value" with \, " and newline escaped */

static void metrics_label(struct strbuf *out, const char *name,
			          const char *value)
{
    const char *cp;

    strbuf_printf(out, "%s=\"", name);
    for (cp = value ? value : ""; *cp; cp++) {
	if (*cp == '\\' || *cp == '"')
	    strbuf_printf(out, "\\%c", *cp);
	else if (*cp == '\n')
	    strbuf_puts(out, "\\n");
	else
	    strbuf_putc(out, *cp);
    }
    strbuf_putc(out, '"');
}

/* metrics_head - the HELP and TYPE lines of a family */

static void metrics_head(struct strbuf *out, const char *family,
			         const char *type, const char *help)
{
    strbuf_printf(out, "# HELP " METRICS_PREFIX "%s %s\n", family, help);
    strbuf_printf(out, "# TYPE " METRICS_PREFIX "%s %s\n", family, type);
}

/*
 * metrics_sample - one line: family{LABEL="name"[,extra]} value; extra
 * is "" or further labels, already in exposition form.
 */
static void metrics_sample(struct strbuf *out, const char *family,
			           const char *label, const char *name,
			           const char *extra, long long value)
{
    strbuf_printf(out, METRICS_PREFIX "%s{", family);
    metrics_label(out, label, name);
    if (extra && *extra)
	strbuf_printf(out, ",%s", extra);
    strbuf_printf(out, "} %lld\n", value);
}

/* The counter families, in output order. */
static const struct metrics_counter {
    const char *family;
    enum metrics_kind kind;
    int     always;			/* print 0 when never counted */
    const char *help;
} metrics_counters[] = {
    {"messages_total", METRICS_ACCOUNT, 0,
	"Messages delivered through Graph by outcome (status: sent, "
    "deferred, bounced) and enhanced status code (class)."},
    {"graph_requests_total", METRICS_ACCOUNT, 0,
	"Graph requests made with the account's access token, by HTTP "
    "status (error: no reply)."},
    {"throttled_total", METRICS_ACCOUNT, 1,
    "Graph replies 429 Too Many Requests."},
    {"token_requests_total", METRICS_ACCOUNT, 1,
    "Requests to the token endpoint."},
    {"token_failures_total", METRICS_ACCOUNT, 0,
    "Failed token requests by class (transient, configuration, sign-in)."},
    {"inbound_injected_total", METRICS_SOURCE, 1,
    "Inbound messages handed to the local MTA."},
    {"inbound_parked_total", METRICS_SOURCE, 1,
	"Inbound messages parked (refused by the MTA, a loop, too large): "
    "left in the mailbox, read and flagged or in reject_folder."},
};

#define METRICS_NCOUNTERS \
	(sizeof(metrics_counters) / sizeof(metrics_counters[0]))

/* metrics_counter_out - one counter family of one account or source */

static void metrics_counter_out(struct strbuf *out,
				        const struct metrics_counter *mc,
				        const char *name,
				        const struct metrics_set *set)
{
    const char *label = mc->kind == METRICS_SOURCE ? "source" : "account";
    size_t  flen = strlen(mc->family);
    size_t  k, elen;
    int     seen = 0;

    for (k = 0; k < set->n; k++) {
	const char *key = set->v[k].key;
	char    extra[METRICS_KEY_MAX];

	if (strncmp(key, mc->family, flen) != 0)
	    continue;
	if (key[flen] == 0) {
	    extra[0] = 0;
	} else if (key[flen] == '{' && (elen = strlen(key + flen + 1)) > 1
		   && key[flen + elen] == '}') {
	    snprintf(extra, sizeof(extra), "%.*s", (int) (elen - 1),
		     key + flen + 1);
	} else
	    continue;
	metrics_sample(out, mc->family, label, name, extra, set->v[k].value);
	seen = 1;
    }
    if (!seen && mc->always)
	metrics_sample(out, mc->family, label, name, "", 0);
}

/* The gauge families, in output order, read from the other state files. */
static const struct metrics_gauge {
    const char *family;
    enum metrics_kind kind;
    const char *help;
} metrics_gauges[] = {
    {"account_offline", METRICS_ACCOUNT, "1 when the account cannot get "
	"tokens until an administrator acts (sign-in, secret, certificate); "
    "aadsts: the AADSTS error number."},
    {"access_token_expiry_timestamp_seconds", METRICS_ACCOUNT,
    "When the cached access token expires (0: none)."},
    {"refresh_token_age_seconds", METRICS_ACCOUNT, "Seconds since the "
	"delegated account's refresh token was issued (last used); "
    "Microsoft expires it after 90 days unused."},
    {"retry_after_seconds", METRICS_ACCOUNT, "Seconds Microsoft 365 still "
    "asked to wait (Retry-After) for the account's mailbox (0: none)."},
    {"certificate_expiry_timestamp_seconds", METRICS_ACCOUNT,
    "When the certificate of certificate_file expires."},
    {"secret_expiry_timestamp_seconds", METRICS_ACCOUNT,
    "When the client secret expires (secret_expires)."},
    {"credential_expiry_warning", METRICS_ACCOUNT, "1 when the certificate "
    "or secret expires within expiry_warning days (or has expired)."},
    {"source_offline", METRICS_SOURCE, "1 when the source needs an "
    "administrator; aadsts: the AADSTS error number."},
    {"source_last_success_timestamp_seconds", METRICS_SOURCE,
    "When the source's last round completed (0: never)."},
    {"source_last_round_timestamp_seconds", METRICS_SOURCE,
    "When the source's last round started (0: never)."},
    {"source_retry_after_seconds", METRICS_SOURCE,
    "Seconds Microsoft 365 still asked the source to wait (0: none)."},
    {"inbound_pending", METRICS_SOURCE, "Inbound messages of the source in "
    "progress (handed over, their after-action not done yet)."},
};

#define METRICS_NGAUGES (sizeof(metrics_gauges) / sizeof(metrics_gauges[0]))

/* The gauge samples of one account or source. */
struct metrics_rows {
    struct metrics_row {
	const char *family;
	char    extra[64];		/* further labels, or "" */
	long long value;
    }       v[METRICS_NGAUGES + 2];
    size_t  n;
};

/* metrics_row - one gauge sample; extra: further labels or NULL */

static void metrics_row(struct metrics_rows *rows, const char *family,
			        const char *extra, long long value)
{
    struct metrics_row *r;

    if (rows->n >= sizeof(rows->v) / sizeof(rows->v[0]))
	return;
    r = rows->v + rows->n++;
    r->family = family;
    snprintf(r->extra, sizeof(r->extra), "%s", extra ? extra : "");
    r->value = value;
}

/* metrics_aadsts_row - family{aadsts="N"} offline */

static void metrics_aadsts_row(struct metrics_rows *rows, const char *family,
			               int offline, const char *error)
{
    char    code[16], extra[40];

    (void) alert_aadsts(offline ? error : NULL, code, sizeof(code));
    snprintf(extra, sizeof(extra), "aadsts=\"%s\"", code);
    metrics_row(rows, family, extra, offline);
}

/* metrics_acct_rows - the gauges of one account from its state files */

static void metrics_acct_rows(const struct conf *conf,
			              const struct conf_account *acct,
			              time_t now, struct metrics_rows *rows)
{
    static const char *creds[2] = {"credential=\"certificate\"",
    "credential=\"secret\""};
    static const char *families[2] = {"certificate_expiry_timestamp_seconds",
    "secret_expiry_timestamp_seconds"};
    struct alert_expiry e;
    struct tokstore ts;
    char    err[600];
    time_t  until;
    int     i;

    memset(&ts, 0, sizeof(ts));
    if (tokstore_load(conf, acct->name, &ts, err, sizeof(err)) < 0)
	msg_warn("metrics: account %s: %s", acct->name, err);
    metrics_aadsts_row(rows, "account_offline",
		       alert_account_offline(acct, &ts, now), ts.last_error);
    metrics_row(rows, "access_token_expiry_timestamp_seconds", NULL,
		ts.access_token && *ts.access_token ?
		(long long) ts.access_expires : 0);
    if (acct->auth == CONF_AUTH_DELEGATED && ts.refresh_token
	&& *ts.refresh_token && ts.refresh_issued > 0)
	metrics_row(rows, "refresh_token_age_seconds", NULL,
		    (long long) (now - ts.refresh_issued));
    tokstore_clear(&ts);
    until = throttle_until(conf, acct->mailbox);
    metrics_row(rows, "retry_after_seconds", NULL,
		until > now ? (long long) (until - now) : 0);
    alert_expiry(conf, acct, now, &e);
    for (i = 0; i < 2; i++)
	if (e.expires[i] > 0)
	    metrics_row(rows, families[i], NULL, (long long) e.expires[i]);
    for (i = 0; i < 2; i++)
	if (e.expires[i] > 0)
	    metrics_row(rows, "credential_expiry_warning", creds[i],
			e.warn[i]);
}

/* metrics_src_rows - the gauges of one source from its state file */

static void metrics_src_rows(const struct conf *conf,
			             const struct conf_source *src,
			             time_t now, struct metrics_rows *rows)
{
    struct fetchstate st;
    char    err[600];
    int     bad = 0;

    if (fetchstate_load(conf, src->name, &st, err, sizeof(err)) < 0) {
	msg_warn("metrics: source %s: %s", src->name, err);
	bad = 1;			/* unreadable: needs an administrator */
    }
    metrics_aadsts_row(rows, "source_offline", bad || st.offline,
		       st.last_error);
    metrics_row(rows, "source_last_success_timestamp_seconds", NULL,
		(long long) st.last_success);
    metrics_row(rows, "source_last_round_timestamp_seconds", NULL,
		(long long) st.last_round);
    metrics_row(rows, "source_retry_after_seconds", NULL,
		st.not_before > now ? (long long) (st.not_before - now) : 0);
    metrics_row(rows, "inbound_pending", NULL, (long long) st.npending);
    fetchstate_clear(&st);
}

/* metrics_exposition - the Prometheus text format for everything */

int     metrics_exposition(const struct conf *conf, struct strbuf *out,
			           time_t now)
{
    const struct conf_account *acct;
    const struct conf_source *src;
    struct metrics_set *sets;
    struct metrics_rows *rows;
    const char **names;
    enum metrics_kind *kinds;
    char    err[600];
    size_t  n = 0, i, c, k;
    int     rc = 0;

    for (acct = conf->accounts; acct; acct = acct->next)
	n++;
    for (src = conf->sources; src; src = src->next)
	n++;
    sets = xcalloc(n + 1, sizeof(*sets));
    rows = xcalloc(n + 1, sizeof(*rows));
    names = xcalloc(n + 1, sizeof(*names));
    kinds = xcalloc(n + 1, sizeof(*kinds));

    /* Accounts first, then sources: all state read once. */
    i = 0;
    for (acct = conf->accounts; acct; acct = acct->next, i++) {
	names[i] = acct->name;
	kinds[i] = METRICS_ACCOUNT;
	metrics_acct_rows(conf, acct, now, rows + i);
    }
    for (src = conf->sources; src; src = src->next, i++) {
	names[i] = src->name;
	kinds[i] = METRICS_SOURCE;
	metrics_src_rows(conf, src, now, rows + i);
    }
    for (i = 0; i < n; i++) {
	if (metrics_load(conf, kinds[i], names[i], sets + i, err,
			 sizeof(err)) < 0) {
	    msg_warn("metrics: %s %s: %s", kinds[i] == METRICS_SOURCE ?
		     "source" : "account", names[i], err);
	    rc = -1;
	}
    }

    for (c = 0; c < METRICS_NCOUNTERS; c++) {
	metrics_head(out, metrics_counters[c].family, "counter",
		     metrics_counters[c].help);
	for (i = 0; i < n; i++)
	    if (kinds[i] == metrics_counters[c].kind)
		metrics_counter_out(out, metrics_counters + c, names[i],
				    sets + i);
    }
    for (c = 0; c < METRICS_NGAUGES; c++) {
	const struct metrics_gauge *g = metrics_gauges + c;

	metrics_head(out, g->family, "gauge", g->help);
	for (i = 0; i < n; i++)
	    for (k = 0; kinds[i] == g->kind && k < rows[i].n; k++)
		if (strcmp(rows[i].v[k].family, g->family) == 0)
		    metrics_sample(out, g->family, kinds[i] == METRICS_SOURCE ?
				   "source" : "account", names[i],
				   rows[i].v[k].extra, rows[i].v[k].value);
    }

    for (i = 0; i < n; i++)
	metrics_set_free(sets + i);
    free(sets);
    free(rows);
    free(names);
    free(kinds);
    if (strbuf_failed(out))
	rc = -1;
    return (rc);
}

/* metrics_write_file - the exposition to path, atomically, mode 0644 */

int     metrics_write_file(const struct conf *conf, const char *path,
			           char *err, size_t errlen)
{
    struct strbuf out;
    int     rc;

    strbuf_init(&out, STRBUF_MAX_JSON);
    if (metrics_exposition(conf, &out, time(NULL)) < 0
	&& strbuf_failed(&out)) {
	snprintf(err, errlen, "the metrics are larger than %lu bytes",
		 (unsigned long) out.max);
	strbuf_free(&out);
	return (-1);
    }
    /* Public by design: counts and dates, no secret (metrics.h). */
    rc = file_write_atomic(path, out.data ? out.data : "", out.len, 0644,
			   (uid_t) -1, (gid_t) -1, err, errlen);
    strbuf_free(&out);
    return (rc);
}
