/*
 * NAME
 *	exposition 3
 * SUMMARY
 *	Prometheus text exposition of the counters and gauges
 * DESCRIPTION
 *	See exposition.h.  Kept apart from metrics.c, which every request
 *	records into: the gauges come from the upper layers (alert.c for
 *	offline state and credential expiry, the token store, the throttle
 *	and source state), and recording must not depend on them.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alert.h"
#include "conf.h"
#include "exposition.h"
#include "fetchstate.h"
#include "log.h"
#include "metrics.h"
#include "strbuf.h"
#include "throttle.h"
#include "tokstore.h"
#include "util.h"
#include "xalloc.h"

#define METRICS_PREFIX	"m365relay_"	/* of every metric name */

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
