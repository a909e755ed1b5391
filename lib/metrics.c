/*
 * NAME
 *	metrics 3
 * SUMMARY
 *	counters per account and per source
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

#include "conf.h"
#include "fetchstate.h"
#include "log.h"
#include "metrics.h"
#include "statefile.h"
#include "throttle.h"
#include "tokstore.h"
#include "util.h"
#include "xalloc.h"

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
 * counts.
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
