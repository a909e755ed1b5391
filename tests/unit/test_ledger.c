/*
 * NAME
 *	test_ledger 1
 * SUMMARY
 *	unit tests for ledger.c (the send ledger) and pace.c (the upload
 *	budget): keys, durable records, locks, orphans, expiry, booking
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "ledger.h"
#include "log.h"
#include "pace.h"
#include "statefile.h"
#include "util.h"
#include "t.h"
#include "t_file.h"

static char dir[1024];
static struct conf conf;

/* test_key - one key per delivery, whatever the order of recipients */

static void test_key(void)
{
    char   *r1[] = {"a@x.test", "B@x.test"};
    char   *r2[] = {"b@x.test", "A@X.TEST"};
    char   *r3[] = {"a@x.test"};
    char    k1[LEDGER_NAME_MAX], k2[LEDGER_NAME_MAX], k3[LEDGER_NAME_MAX];
    char    k4[LEDGER_NAME_MAX], k5[LEDGER_NAME_MAX], k6[LEDGER_NAME_MAX];
    char    k7[LEDGER_NAME_MAX];

    T_EQ_INT(ledger_key("Bob@contoso.test", "<m1@x>", "", 0, r1, 2, k1,
			sizeof(k1)), 0);
    T_EQ_INT(ledger_key("bob@contoso.test", "<m1@x>", "", 0, r2, 2, k2,
			sizeof(k2)), 0);
    T_EQ_STR(k1, k2);				/* order and case do not count */
    T_EQ_INT(strlen(k1), 16 + 1 + 64);
    T_OK(statefile_name_ok(k1));
    /* A split delivery (other recipients) is another delivery. */
    T_EQ_INT(ledger_key("bob@contoso.test", "<m1@x>", "", 0, r3, 1, k3,
			sizeof(k3)), 0);
    T_OK(strcmp(k1, k3) != 0);
    /* The mailbox tag is the same for every message of a mailbox. */
    T_OK(strncmp(k1, k3, 17) == 0);
    T_EQ_INT(ledger_key("alice@contoso.test", "<m1@x>", "", 0, r3, 1, k4,
			sizeof(k4)), 0);
    T_OK(strncmp(k3, k4, 16) != 0);
    /* Without a Message-ID the header section stands in. */
    T_EQ_INT(ledger_key("bob@contoso.test", NULL, "Subject: a\r\n", 12, r3,
			1, k5, sizeof(k5)), 0);
    T_EQ_INT(ledger_key("bob@contoso.test", "", "Subject: b\r\n", 12, r3,
			1, k6, sizeof(k6)), 0);
    T_OK(strcmp(k5, k6) != 0);
    T_EQ_INT(ledger_key("bob@contoso.test", NULL, "Subject: a\r\n", 12, r3,
			1, k7, sizeof(k7)), 0);
    T_EQ_STR(k5, k7);
    T_EQ_INT(ledger_key("bob@contoso.test", "<m1@x>", "", 0, r3, 1, k7, 40),
	     -1);
}

/* test_record - save, read back, states; a held lock is busy */

static void test_record(void)
{
    struct ledger_rec r, r2;
    char   *rc[] = {"c@x.test"};
    char    name[LEDGER_NAME_MAX];
    char    err[512];
    char    path[PATH_MAX];
    struct stat st;

    T_EQ_INT(ledger_key("bob@contoso.test", "<rec@x>", "", 0, rc, 1, name,
			sizeof(name)), 0);
    T_EQ_INT(ledger_open(&conf, name, 1, &r, err, sizeof(err)), 0);
    T_EQ_INT(r.state, LEDGER_NONE);
    T_OK(r.lock_fd >= 0);
    r.state = LEDGER_DRAFTING;
    ledger_set(&r.mailbox, "bob@contoso.test");
    ledger_set(&r.message_id, "<rec@x>");
    ledger_set(&r.queue_id, "Q1");
    r.nrcpts = 1;
    T_EQ_INT(ledger_save(&conf, &r, err, sizeof(err)), 0);
    snprintf(path, sizeof(path), "%s/ledger/%s.json", dir, name);
    T_EQ_INT(stat(path, &st), 0);
    T_EQ_INT(st.st_mode & 0777, 0600);

    /* Held by us: another open finds it busy (-2) at once. */
    T_EQ_INT(ledger_open(&conf, name, 0, &r2, err, sizeof(err)), -2);
    T_CONTAINS(err, "held by another process");
    ledger_set(&r.draft_id, "AAkALg==");
    r.state = LEDGER_SENDING;
    T_EQ_INT(ledger_save(&conf, &r, err, sizeof(err)), 0);
    ledger_close(&r);
    ledger_close(&r);				/* twice is fine */

    T_EQ_INT(ledger_open(&conf, name, 0, &r2, err, sizeof(err)), 0);
    T_EQ_INT(r2.state, LEDGER_SENDING);
    T_EQ_STR(r2.draft_id, "AAkALg==");
    T_EQ_STR(r2.queue_id, "Q1");
    T_EQ_STR(r2.message_id, "<rec@x>");
    T_EQ_INT(r2.nrcpts, 1);
    T_OK(r2.created > 0 && r2.updated >= r2.created);
    T_EQ_STR(ledger_state_name(r2.state), "sending");
    T_EQ_INT(ledger_forget(&conf, &r2, err, sizeof(err)), 0);
    ledger_close(&r2);
    T_EQ_INT(stat(path, &st), -1);
    T_EQ_INT(ledger_open(&conf, name, 0, &r2, err, sizeof(err)), 0);
    T_EQ_INT(r2.state, LEDGER_NONE);		/* forgotten: new */
    ledger_close(&r2);

    /* A damaged record reads as new (and says so in the log). */
    t_write_file(path, "{not json", 0600);
    T_EQ_INT(ledger_open(&conf, name, 0, &r2, err, sizeof(err)), 0);
    T_EQ_INT(r2.state, LEDGER_NONE);
    T_EQ_INT(ledger_forget(&conf, &r2, err, sizeof(err)), 0);
    ledger_close(&r2);
}

struct seen {
    int     n;
    char    last[LEDGER_NAME_MAX];
};

/* orphan_fn - count the orphans, mark them failed */

static int orphan_fn(void *arg, struct ledger_rec *r)
{
    struct seen *s = arg;
    char    err[512];

    s->n++;
    snprintf(s->last, sizeof(s->last), "%s", r->name);
    r->state = LEDGER_FAILED;
    T_EQ_INT(ledger_save(&conf, r, err, sizeof(err)), 0);
    return (0);
}

/* make - a record of mailbox mb in state st, updated age seconds ago */

static void make(const char *mb, const char *mid, enum ledger_state st,
		         time_t age, char *name, size_t len)
{
    struct ledger_rec r;
    char   *rc[] = {"z@x.test"};
    char    err[512];

    T_EQ_INT(ledger_key(mb, mid, "", 0, rc, 1, name, len), 0);
    T_EQ_INT(ledger_open(&conf, name, 0, &r, err, sizeof(err)), 0);
    r.state = st;
    ledger_set(&r.mailbox, mb);
    ledger_set(&r.draft_id, "D");
    T_EQ_INT(ledger_save(&conf, &r, err, sizeof(err)), 0);
    if (age) {
	/* Rewrite "updated" by hand: it is what expiry reads. */
	char    path[PATH_MAX], text[600];

	snprintf(path, sizeof(path), "%s/ledger/%s.json", dir, name);
	snprintf(text, sizeof(text), "{\"version\":1,\"state\":\"%s\","
		 "\"mailbox\":\"%s\",\"created\":%ld,\"updated\":%ld}",
		 ledger_state_name(st), mb, (long) (time(NULL) - age),
		 (long) (time(NULL) - age));
	t_write_file(path, text, 0600);
    }
    ledger_close(&r);
}

/* test_orphans - only unowned drafting/sending records of the mailbox */

static void test_orphans(void)
{
    struct seen seen;
    struct ledger_rec held, r;
    char    a[LEDGER_NAME_MAX], b[LEDGER_NAME_MAX], c[LEDGER_NAME_MAX];
    char    d[LEDGER_NAME_MAX], e[LEDGER_NAME_MAX];
    char    err[512];
    pid_t   pid;
    int     status;

    make("bob@contoso.test", "<o1@x>", LEDGER_DRAFTING, 0, a, sizeof(a));
    make("bob@contoso.test", "<o2@x>", LEDGER_SENDING, 0, b, sizeof(b));
    make("bob@contoso.test", "<o3@x>", LEDGER_SENT, 6 * 86400, c, sizeof(c));
    make("bob@contoso.test", "<o4@x>", LEDGER_SENT, 0, d, sizeof(d));
    make("alice@contoso.test", "<o5@x>", LEDGER_DRAFTING, 0, e, sizeof(e));

    /* b is owned by a living process: not an orphan. */
    T_EQ_INT(ledger_open(&conf, b, 0, &held, err, sizeof(err)), 0);
    memset(&seen, 0, sizeof(seen));
    T_EQ_INT(ledger_orphans(&conf, "BOB@contoso.test", orphan_fn, &seen,
			    err, sizeof(err)), 1);
    T_EQ_INT(seen.n, 1);
    T_EQ_STR(seen.last, a);
    ledger_close(&held);

    /* The held one in another process that then dies: an orphan. */
    if ((pid = fork()) == 0) {
	struct ledger_rec x;
	char    e2[512];

	if (ledger_open(&conf, b, 0, &x, e2, sizeof(e2)) == 0)
	    _exit(0);				/* dies with the lock held */
	_exit(1);
    }
    T_EQ_INT(waitpid(pid, &status, 0), pid);
    T_OK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    memset(&seen, 0, sizeof(seen));
    T_EQ_INT(ledger_orphans(&conf, "bob@contoso.test", orphan_fn, &seen,
			    err, sizeof(err)), 1);
    T_EQ_STR(seen.last, b);

    /* Expired sent records are gone, recent ones stay; alice untouched. */
    T_EQ_INT(ledger_open(&conf, c, 0, &r, err, sizeof(err)), 0);
    T_EQ_INT(r.state, LEDGER_NONE);
    ledger_close(&r);
    T_EQ_INT(ledger_open(&conf, d, 0, &r, err, sizeof(err)), 0);
    T_EQ_INT(r.state, LEDGER_SENT);
    ledger_close(&r);
    T_EQ_INT(ledger_open(&conf, e, 0, &r, err, sizeof(err)), 0);
    T_EQ_INT(r.state, LEDGER_DRAFTING);
    ledger_close(&r);
    memset(&seen, 0, sizeof(seen));
    T_EQ_INT(ledger_orphans(&conf, "nobody@contoso.test", orphan_fn, &seen,
			    err, sizeof(err)), 0);
}

/* test_pace - bookings within the budget go at once, others wait */

static void test_pace(void)
{
    struct m365_result res;
    double  t0;
    char    path[PATH_MAX];

    conf.upload_budget = 4L * 1024 * 1024;
    result_init(&res);
    t0 = time_mono();
    T_EQ_INT(pace_reserve(&conf, "app1", "bob@contoso.test", 3000000, 5,
			  &res), 0);
    T_EQ_INT(pace_reserve(&conf, "app1", "bob@contoso.test", 1000000, 5,
			  &res), 0);
    T_OK(time_mono() - t0 < 2);
    /* Another app, another mailbox: their own budgets. */
    T_EQ_INT(pace_reserve(&conf, "app2", "bob@contoso.test", 3000000, 5,
			  &res), 0);
    T_EQ_INT(pace_reserve(&conf, "app1", "alice@contoso.test", 3000000, 5,
			  &res), 0);
    /* Full: the wait (about 30 s) is longer than allowed: 4.7.0 at once. */
    t0 = time_mono();
    T_EQ_INT(pace_reserve(&conf, "app1", "BOB@contoso.test", 1000000, 2,
			  &res), -1);
    T_OK(time_mono() - t0 < 2);
    T_EQ_STR(res.dsn, "4.7.0");
    T_EQ_INT(res.status, M365_TEMP);
    T_CONTAINS(res.text, "upload budget of mailbox BOB@contoso.test");
    /* Nothing to book, or no budget: never waits. */
    T_EQ_INT(pace_reserve(&conf, "app1", "bob@contoso.test", 0, 0, &res), 0);
    /* The file: one line per booking. */
    snprintf(path, sizeof(path), "%s/throttle", dir);
    T_OK(access(path, F_OK) == 0);
    {
	char    cmd[PATH_MAX + 80];
	FILE   *fp;
	int     n = 0;

	snprintf(cmd, sizeof(cmd), "cat '%s'/upload-*.budget | wc -l", path);
	if ((fp = popen(cmd, "r")) != NULL) {
	    if (fscanf(fp, "%d", &n) != 1)
		n = -1;
	    pclose(fp);
	}
	T_EQ_INT(n, 4);
    }
}

int     main(void)
{
    log_to_file("/dev/null");
    t_tmpdir(dir, sizeof(dir), "test_ledger");
    memset(&conf, 0, sizeof(conf));
    conf.state_dir = dir;
    conf.path = "test.conf";
    T_RUN(test_key);
    T_RUN(test_record);
    T_RUN(test_orphans);
    T_RUN(test_pace);
    t_rm_rf(dir);
    return (T_DONE());
}
