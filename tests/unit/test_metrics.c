/*
 * NAME
 *	test_metrics 1
 * SUMMARY
 *	unit tests of metrics.c: counting, merging across processes,
 *	restart survival, the Prometheus exposition
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pwd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alert.h"
#include "conf.h"
#include "exposition.h"
#include "metrics.h"
#include "status.h"
#include "strbuf.h"
#include "tokstore.h"
#include "util.h"
#include "t.h"
#include "t_file.h"

static char dir[PATH_MAX];
static struct conf *conf;

/* load_conf - a configuration with accounts a (delegated) and b (secret) */

static struct conf *load_conf(const char *extra)
{
    char    path[PATH_MAX + 32], text[3 * PATH_MAX + 1024];
    struct strbuf errors;
    struct conf *c;
    struct passwd *pw = getpwuid(geteuid());

    snprintf(path, sizeof(path), "%s/m365relay.conf", dir);
    snprintf(text, sizeof(text),
	     "[global]\nstate_dir = %s/state\nuser = %s\n%s\n"
	     "[account a]\ntenant = t\nclient_id = c\nmailbox = a@example.com\n"
	     "default = yes\n"
	     "[account b]\ntenant = t\nclient_id = c\nauth = secret\n"
	     "secret_file = %s/secret\nmailbox = b@example.com\n"
	     "secret_expires = 2099-12-31\n"
	     "[source in]\naccount = a\ndeliver_to = smtp://127.0.0.1:25\n"
	     "recipients = x@example.com\n", dir, pw ? pw->pw_name : "root",
	     extra ? extra : "", dir);
    t_write_file(path, text, 0600);
    strbuf_init(&errors, 65536);
    c = conf_load(path, &errors);
    T_CHECK(c != NULL, "conf_load: %s", errors.data ? errors.data : "");
    strbuf_free(&errors);
    return (c);
}

/* count_of - the value of key in the account's counter file */

static long long count_of(enum metrics_kind kind, const char *name,
			          const char *key)
{
    struct metrics_set set;
    char    err[600];
    long long v;

    memset(&set, 0, sizeof(set));
    T_EQ_INT(metrics_load(conf, kind, name, &set, err, sizeof(err)), 0);
    v = metrics_set_get(&set, key);
    metrics_set_free(&set);
    return (v);
}

/* test_format - the counter file format: parse, skip junk, format */

static void test_format(void)
{
    static const char text[] =
	"messages_total{status=\"sent\"} 41\n"
	"junk\n"
	"graph_requests_total{status=\"202\"} 7\n"
	"messages_total{status=\"sent\"} 1\n"
	"bad value x\n"
	"torn 12";				/* no newline: a torn write */
    struct metrics_set set;
    struct strbuf out;

    memset(&set, 0, sizeof(set));
    T_EQ_INT(metrics_parse(text, strlen(text), &set), 2);
    T_EQ_INT(metrics_set_get(&set, "messages_total{status=\"sent\"}"), 42);
    T_EQ_INT(metrics_set_get(&set, "graph_requests_total{status=\"202\"}"),
	     7);
    T_EQ_INT(metrics_set_get(&set, "torn"), 0);
    strbuf_init(&out, 4096);
    metrics_format(&set, &out);
    T_EQ_STR(strbuf_str(&out), "messages_total{status=\"sent\"} 42\n"
	     "graph_requests_total{status=\"202\"} 7\n");
    strbuf_free(&out);
    metrics_set_free(&set);
}

/* test_counting - events of one process, flushed and read back */

static void test_counting(void)
{
    struct m365_result res;

    metrics_add(METRICS_ACCOUNT, "a", "throttled_total", 2);
    metrics_add(METRICS_ACCOUNT, "a", "throttled_total", 3);
    metrics_add(METRICS_SOURCE, "in", "inbound_injected_total", 1);
    metrics_add(METRICS_ACCOUNT, "a", "bad key", 1);	/* refused */
    T_EQ_INT(metrics_flush(conf), 0);
    T_EQ_INT(count_of(METRICS_ACCOUNT, "a", "throttled_total"), 5);
    T_EQ_INT(count_of(METRICS_SOURCE, "in", "inbound_injected_total"), 1);
    T_EQ_INT(count_of(METRICS_ACCOUNT, "a", "bad key"), 0);

    /* Graph requests count for the thread's account, with a token only. */
    metrics_scope("a");
    metrics_http(1, 202);
    metrics_http(1, 202);
    metrics_http(1, 429);
    metrics_http(1, 0);
    metrics_http(0, 200);			/* token endpoint: not Graph */
    metrics_scope(NULL);
    metrics_http(1, 500);			/* no account: not counted */
    metrics_token("a", 1, 1, "ok");
    metrics_token("a", 1, 0, "reauth");
    metrics_token("a", 0, 0, "transient");	/* never sent */

    /* Outcomes: a flush each (metrics_delivery()). */
    result_init(&res);
    metrics_delivery(conf, conf_account(conf, "a"), &res);
    result_set(&res, M365_TEMP, "4.4.1", "no connection");
    metrics_delivery(conf, conf_account(conf, "a"), &res);
    metrics_delivery(conf, conf_account(conf, "a"), &res);
    result_set(&res, M365_PERM, "5.1.1", "no such user");
    metrics_delivery(conf, conf_account(conf, "a"), &res);
    T_EQ_INT(count_of(METRICS_ACCOUNT, "a",
		      "graph_requests_total{status=\"202\"}"), 2);
    T_EQ_INT(count_of(METRICS_ACCOUNT, "a",
		      "graph_requests_total{status=\"429\"}"), 1);
    T_EQ_INT(count_of(METRICS_ACCOUNT, "a",
		      "graph_requests_total{status=\"error\"}"), 1);
    T_EQ_INT(count_of(METRICS_ACCOUNT, "a",
		      "graph_requests_total{status=\"200\"}"), 0);
    T_EQ_INT(count_of(METRICS_ACCOUNT, "a",
		      "graph_requests_total{status=\"500\"}"), 0);
    T_EQ_INT(count_of(METRICS_ACCOUNT, "a", "throttled_total"), 6);
    T_EQ_INT(count_of(METRICS_ACCOUNT, "a", "token_requests_total"), 2);
    T_EQ_INT(count_of(METRICS_ACCOUNT, "a",
		      "token_failures_total{class=\"reauth\"}"), 1);
    T_EQ_INT(count_of(METRICS_ACCOUNT, "a",
		      "messages_total{status=\"sent\"}"), 1);
    T_EQ_INT(count_of(METRICS_ACCOUNT, "a", "messages_total{status="
		      "\"deferred\",class=\"4.4.1\"}"), 2);
    T_EQ_INT(count_of(METRICS_ACCOUNT, "a", "messages_total{status="
		      "\"bounced\",class=\"5.1.1\"}"), 1);
}

/*
 * test_processes - 8 processes at once, each flushing 50 times (like 400
 * m365-relay deliveries): not one count lost.
 */
static void test_processes(void)
{
    long long before = count_of(METRICS_ACCOUNT, "b",
				"messages_total{status=\"sent\"}");
    pid_t   pid[8];
    int     i, j, st, ok = 1;

    for (i = 0; i < 8; i++) {
	if ((pid[i] = fork()) == 0) {
	    for (j = 0; j < 50; j++) {
		metrics_add(METRICS_ACCOUNT, "b",
			    "messages_total{status=\"sent\"}", 1);
		metrics_add(METRICS_ACCOUNT, "b", "token_requests_total", 2);
		if (metrics_flush(conf) != 0)
		    _exit(1);
	    }
	    _exit(0);
	}
	T_OK(pid[i] > 0);
    }
    for (i = 0; i < 8; i++)
	if (pid[i] > 0 && (waitpid(pid[i], &st, 0) != pid[i]
			   || !WIFEXITED(st) || WEXITSTATUS(st) != 0))
	    ok = 0;
    T_OK(ok);
    T_EQ_INT(count_of(METRICS_ACCOUNT, "b", "messages_total{status=\"sent\"}"),
	     before + 400);
    T_EQ_INT(count_of(METRICS_ACCOUNT, "b", "token_requests_total"), 800);
}

/*
 * test_restart - the counts are in state_dir: a new configuration (a new
 * process) goes on from them; a counter file of an earlier run is added
 * to, not replaced.
 */
static void test_restart(void)
{
    char    path[PATH_MAX + 64];

    snprintf(path, sizeof(path), "%s/state/metrics/source-in", dir);
    t_write_file(path, "inbound_parked_total 41\n"
		 "inbound_injected_total 9\n", 0600);
    conf_free(conf);
    conf = load_conf(NULL);
    metrics_add(METRICS_SOURCE, "in", "inbound_parked_total", 1);
    T_EQ_INT(metrics_flush(conf), 0);
    T_EQ_INT(count_of(METRICS_SOURCE, "in", "inbound_parked_total"), 42);
    T_EQ_INT(count_of(METRICS_SOURCE, "in", "inbound_injected_total"), 9);
}

/* lower - metrics_update() callback that makes a value shorter */

static int lower(struct metrics_set *set, void *arg)
{
    (void) arg;
    metrics_set_add(set, "day", 5 - metrics_set_get(set, "day"));
    return (1);
}

/* test_update - a shorter value leaves no stale bytes behind */

static void test_update(void)
{
    char    err[600];
    char    path[PATH_MAX + 64];
    struct strbuf sb;

    snprintf(path, sizeof(path), "%s/state/metrics/alert-x", dir);
    t_write_file(path, "day 20261202\n", 0600);
    T_EQ_INT(metrics_update(conf, "alert-x", lower, NULL, err, sizeof(err)),
	     0);
    T_EQ_INT(file_read(path, 1000, &sb, err, sizeof(err)), 0);
    T_EQ_STR(strbuf_str(&sb), "day 5\n");
    strbuf_free(&sb);
}

/* line_of - does the exposition hold this exact line? */

static int line_of(const char *text, const char *line)
{
    size_t  n = strlen(line);
    const char *p;

    for (p = text; (p = strstr(p, line)) != NULL; p += n)
	if ((p == text || p[-1] == '\n') && p[n] == '\n')
	    return (1);
    return (0);
}

#define T_LINE(text, line) T_CHECK(line_of((text), (line)), \
	"no line \"%s\" in:\n%s", (line), (text))

/* test_exposition - the Prometheus text of counters and gauges */

static void test_exposition(void)
{
    struct tokstore ts;
    struct strbuf out;
    char    rt[] = "rt", at[] = "at";
    char    why[] = "AADSTS700082 invalid_grant: expired for inactivity";
    char    err[600], want[200];
    time_t  now = time(NULL);
    const char *text, *p;
    int     helps = 0, types = 0;

    conf_free(conf);
    conf = load_conf("expiry_warning = 30");
    memset(&ts, 0, sizeof(ts));
    ts.refresh_token = rt;
    ts.refresh_issued = now - 100;
    ts.access_token = at;
    ts.access_expires = 1900000000;
    ts.offline = 1;
    ts.last_error = why;
    T_EQ_INT(tokstore_save(conf, "a", &ts, err, sizeof(err)), 0);

    strbuf_init(&out, 1 << 20);
    T_EQ_INT(metrics_exposition(conf, &out, now), 0);
    text = strbuf_str(&out);
    T_LINE(text, "# HELP m365relay_messages_total Messages delivered through "
	   "Graph by outcome (status: sent, deferred, bounced) and enhanced "
	   "status code (class).");
    T_LINE(text, "# TYPE m365relay_messages_total counter");
    T_LINE(text, "m365relay_messages_total{account=\"a\",status=\"sent\"} 1");
    T_LINE(text, "m365relay_messages_total{account=\"a\",status=\"deferred\","
	   "class=\"4.4.1\"} 2");
    T_LINE(text, "m365relay_messages_total{account=\"b\",status=\"sent\"} 400");
    T_LINE(text, "m365relay_graph_requests_total{account=\"a\",status=\"429\"}"
	   " 1");
    T_LINE(text, "m365relay_throttled_total{account=\"a\"} 6");
    T_LINE(text, "m365relay_throttled_total{account=\"b\"} 0");
    T_LINE(text, "m365relay_token_failures_total{account=\"a\",class=\"reauth\""
	   "} 1");
    T_LINE(text, "m365relay_inbound_parked_total{source=\"in\"} 42");
    T_LINE(text, "# TYPE m365relay_account_offline gauge");
    T_LINE(text, "m365relay_account_offline{account=\"a\",aadsts=\"700082\"} 1");
    T_LINE(text, "m365relay_account_offline{account=\"b\",aadsts=\"\"} 0");
    T_LINE(text, "m365relay_access_token_expiry_timestamp_seconds{account="
	   "\"a\"} 1900000000");
    T_LINE(text, "m365relay_refresh_token_age_seconds{account=\"a\"} 100");
    T_LINE(text, "m365relay_secret_expiry_timestamp_seconds{account=\"b\"} "
	   "4102358400");			/* 2099-12-31 00:00 UTC */
    T_LINE(text, "m365relay_credential_expiry_warning{account=\"b\","
	   "credential=\"secret\"} 0");
    T_LINE(text, "m365relay_source_offline{source=\"in\",aadsts=\"\"} 0");
    /* Every family: HELP and TYPE once, right before its samples. */
    for (p = text; (p = strstr(p, "# HELP ")) != NULL; p++)
	helps++;
    for (p = text; (p = strstr(p, "# TYPE ")) != NULL; p++)
	types++;
    T_EQ_INT(helps, types);
    T_OK(helps >= 19);
    /* No secret: the token values are not in it. */
    T_OK(strstr(text, "\"at\"") == NULL && strstr(text, " rt") == NULL);
    /* Every sample line: m365relay_NAME{...} INTEGER. */
    for (p = text; *p; p = strchr(p, '\n') + 1) {
	if (*p != '#') {
	    snprintf(want, sizeof(want), "%.10s", p);
	    T_EQ_STR(want, "m365relay_");
	    T_OK(strchr(p, '{') != NULL && strchr(p, '{') < strchr(p, '\n'));
	}
    }
    strbuf_free(&out);

    /* The file for node_exporter: written whole, 0644. */
    {
	char    path[PATH_MAX + 32];
	struct stat sb;

	snprintf(path, sizeof(path), "%s/m365relay.prom", dir);
	T_EQ_INT(metrics_write_file(conf, path, err, sizeof(err)), 0);
	T_EQ_INT(stat(path, &sb), 0);
	T_EQ_INT(sb.st_mode & 07777, 0644);
    }
}

/* test_expiry - warnings from expiry_warning days before */

static void test_expiry(void)
{
    struct conf_account acct = *conf_account(conf, "b");
    struct alert_expiry e;
    char    text[600];
    time_t  now = time(NULL);

    acct.secret_expires = (long) (now + 5 * 86400 - 60);
    alert_expiry(conf, &acct, now, &e);
    T_EQ_INT(e.warn[ALERT_SECRET], 1);
    T_EQ_INT(alert_expiry_text(&acct, &e, ALERT_SECRET, now, text,
			       sizeof(text)), 1);
    T_CONTAINS(text, "client secret of account b expires on ");
    T_CONTAINS(text, "(in 5 days): create a new client secret");
    T_EQ_INT(alert_expiry_text(&acct, &e, ALERT_CERTIFICATE, now, text,
			       sizeof(text)), -1);
    acct.secret_expires = (long) (now + 31 * 86400);
    alert_expiry(conf, &acct, now, &e);
    T_EQ_INT(e.warn[ALERT_SECRET], 0);
    acct.secret_expires = (long) (now - 2 * 86400 - 60);
    alert_expiry(conf, &acct, now, &e);
    T_EQ_INT(alert_expiry_text(&acct, &e, ALERT_SECRET, now, text,
			       sizeof(text)), 1);
    T_CONTAINS(text, "(2 days ago)");
}

int     main(void)
{
    char    path[PATH_MAX + 32];

    t_tmpdir(dir, sizeof(dir), "test_metrics");
    snprintf(path, sizeof(path), "%s/secret", dir);
    t_write_file(path, "s3cret", 0600);
    conf = load_conf(NULL);
    if (conf == NULL)
	return (T_DONE());
    T_RUN(test_format);
    T_RUN(test_counting);
    T_RUN(test_processes);
    T_RUN(test_restart);
    T_RUN(test_update);
    T_RUN(test_exposition);
    T_RUN(test_expiry);
    conf_free(conf);
    t_rm_rf(dir);
    return (T_DONE());
}
