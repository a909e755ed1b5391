/*
 * NAME
 *	test_ledger 1
 * SUMMARY
 *	unit tests for ledger.c (the send ledger), pace.c (the upload
 *	budget) and the request slots (statefile_lock_any(),
 *	graph_slot_take()): keys, durable records, states and markers,
 *	locks, orphans, expiry, digests, kill -9 in the middle, booking,
 *	at most GRAPH_SLOTS holders
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "graph.h"
#include "ledger.h"
#include "log.h"
#include "msg.h"
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

/* age_file - set a file's mtime age seconds into the past */

static void age_file(const char *path, time_t age)
{
    struct timespec ts[2];

    ts[0].tv_sec = ts[1].tv_sec = time(NULL) - age;
    ts[0].tv_nsec = ts[1].tv_nsec = 0;
    T_EQ_INT(utimensat(AT_FDCWD, path, ts, 0), 0);
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
	age_file(path, age);
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
    T_EQ_INT(ledger_expire(&conf, 1), 1);
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
    /* Marked records only: the failed ones lost their markers. */
    memset(&seen, 0, sizeof(seen));
    T_EQ_INT(ledger_orphans(&conf, "bob@contoso.test", orphan_fn, &seen,
			    err, sizeof(err)), 0);
}

/* path_of - state_dir/ledger/NAME + suffix */

static const char *path_of(const char *name, const char *suffix)
{
    static char path[PATH_MAX];

    snprintf(path, sizeof(path), "%s/ledger/%s%s", dir, name, suffix);
    return (path);
}

/* test_states - ambiguous, the sendMail path, digest, attempted, marker */

static void test_states(void)
{
    struct ledger_rec r;
    char   *rc[] = {"s@x.test"};
    char    name[LEDGER_NAME_MAX];
    char    err[512];

    T_EQ_INT(ledger_key("bob@contoso.test", "<st@x>", "", 0, rc, 1, name,
			sizeof(name)), 0);
    T_EQ_INT(ledger_open(&conf, name, 1, &r, err, sizeof(err)), 0);
    r.state = LEDGER_SENDING;
    r.attempted = 1700000000;
    ledger_set(&r.digest, "abc123");
    ledger_set(&r.message_id, "<st@x>");
    T_EQ_INT(ledger_save(&conf, &r, err, sizeof(err)), 0);
    /* The sendMail path leaves no marker: there is no draft to clean. */
    T_EQ_INT(access(path_of(name, ".draft"), F_OK), -1);
    r.state = LEDGER_AMBIGUOUS;
    ledger_set(&r.request_id, "req-1");
    T_EQ_INT(ledger_save(&conf, &r, err, sizeof(err)), 0);
    ledger_close(&r);
    T_EQ_INT(ledger_open(&conf, name, 0, &r, err, sizeof(err)), 0);
    T_EQ_INT(r.state, LEDGER_AMBIGUOUS);
    T_EQ_STR(ledger_state_name(r.state), "ambiguous");
    T_EQ_INT(r.path, LEDGER_PATH_SENDMAIL);
    T_EQ_INT(r.attempted, 1700000000);
    T_EQ_STR(r.digest, "abc123");
    T_EQ_STR(r.request_id, "req-1");

    /* The draft path: a marker while a draft may exist, none after. */
    r.path = LEDGER_PATH_DRAFT;
    r.state = LEDGER_DRAFTING;
    T_EQ_INT(ledger_save(&conf, &r, err, sizeof(err)), 0);
    T_EQ_INT(access(path_of(name, ".draft"), F_OK), 0);
    r.state = LEDGER_SENDING;
    T_EQ_INT(ledger_save(&conf, &r, err, sizeof(err)), 0);
    T_EQ_INT(access(path_of(name, ".draft"), F_OK), 0);
    r.state = LEDGER_SENT;
    T_EQ_INT(ledger_save(&conf, &r, err, sizeof(err)), 0);
    T_EQ_INT(access(path_of(name, ".draft"), F_OK), -1);
    ledger_close(&r);
    T_EQ_INT(ledger_open(&conf, name, 0, &r, err, sizeof(err)), 0);
    T_EQ_INT(r.path, LEDGER_PATH_DRAFT);
    T_EQ_INT(r.state, LEDGER_SENT);
    T_EQ_INT(ledger_forget(&conf, &r, err, sizeof(err)), 0);
    ledger_close(&r);
    T_EQ_INT(access(path_of(name, ".json"), F_OK), -1);
    T_EQ_INT(access(path_of(name, ".lock"), F_OK), -1);
}

/* test_expire - bounded: lifetime, stamp, busy records, leftovers */

static void test_expire(void)
{
    struct ledger_rec held, r;
    char    old1[LEDGER_NAME_MAX], old2[LEDGER_NAME_MAX];
    char    young[LEDGER_NAME_MAX], busy[LEDGER_NAME_MAX];
    char    err[512], tmp[PATH_MAX + 16];
    char    stamp[PATH_MAX];

    conf.ledger_lifetime = 2 * 86400;
    make("bob@contoso.test", "<e1@x>", LEDGER_SENT, 3 * 86400, old1,
	 sizeof(old1));
    /* A crash between "about to send" and "sent", long ago: gone too. */
    make("bob@contoso.test", "<e2@x>", LEDGER_SENDING, 3 * 86400, old2,
	 sizeof(old2));
    make("bob@contoso.test", "<e3@x>", LEDGER_SENT, 1 * 86400, young,
	 sizeof(young));
    make("bob@contoso.test", "<e4@x>", LEDGER_AMBIGUOUS, 3 * 86400, busy,
	 sizeof(busy));
    T_EQ_INT(ledger_open(&conf, busy, 0, &held, err, sizeof(err)), 0);
    /* A writer killed between its temporary file and the rename. */
    snprintf(tmp, sizeof(tmp), "%s.tmp.99999", path_of(young, ".json"));
    t_write_file(tmp, "{", 0600);
    age_file(tmp, 2 * 3600);
    /* A marker and a lock without a record. */
    t_write_file(path_of("0123456789abcdef-0000000000000000000000000000000"
			 "000000000000000000000000000000000", ".draft"), "",
		 0600);

    T_EQ_INT(ledger_expire(&conf, 1), 2);
    T_EQ_INT(access(path_of(old1, ".json"), F_OK), -1);
    T_EQ_INT(access(path_of(old1, ".lock"), F_OK), -1);
    T_EQ_INT(access(path_of(old2, ".json"), F_OK), -1);
    T_EQ_INT(access(path_of(young, ".json"), F_OK), 0);
    T_EQ_INT(access(path_of(busy, ".json"), F_OK), 0);	/* held */
    T_EQ_INT(access(tmp, F_OK), -1);
    T_EQ_INT(access(path_of("0123456789abcdef-00000000000000000000000000000"
			    "00000000000000000000000000000000000", ".draft"),
		     F_OK), -1);
    ledger_close(&held);

    /* Once an hour at most: without force the fresh stamp says no. */
    snprintf(stamp, sizeof(stamp), "%s/ledger/expire.stamp", dir);
    T_EQ_INT(access(stamp, F_OK), 0);
    T_EQ_INT(ledger_expire(&conf, 0), 0);
    T_EQ_INT(access(path_of(busy, ".json"), F_OK), 0);
    age_file(stamp, LEDGER_EXPIRE_EVERY + 10);
    T_EQ_INT(ledger_expire(&conf, 0), 1);
    T_EQ_INT(access(path_of(busy, ".json"), F_OK), -1);
    T_EQ_INT(ledger_open(&conf, young, 0, &r, err, sizeof(err)), 0);
    T_EQ_INT(r.state, LEDGER_SENT);
    T_EQ_INT(ledger_forget(&conf, &r, err, sizeof(err)), 0);
    ledger_close(&r);
    conf.ledger_lifetime = 0;
}

/* test_message_id - the "<...>" of the header section, as drafts use it */

static void test_message_id(void)
{
    static const char h1[] = "Subject: x\r\nMessage-ID:  <a.b@c>  (x)\r\n";
    static const char h2[] = "message-id:\r\n <f@g>\r\nTo: y\r\n";
    static const char h3[] = "Message-ID: no-brackets@x\r\n";
    char   *m;

    T_EQ_STR((m = ledger_message_id(h1, strlen(h1))), "<a.b@c>");
    free(m);
    T_EQ_STR((m = ledger_message_id(h2, strlen(h2))), "<f@g>");
    free(m);
    T_OK(ledger_message_id(h3, strlen(h3)) == NULL);
    T_OK(ledger_message_id("To: x\r\n", 7) == NULL);
    T_OK(ledger_message_id(NULL, 0) == NULL);
}

/* body - a struct msg with the body in memory or spooled */

static void body(struct msg *m, const char *text, size_t len, int spooled)
{
    struct m365_result res;

    msg_init(m, dir, spooled ? 16 : 1024 * 1024, 0);
    T_EQ_INT(msg_add_header(m, "Subject", "x", &res), 0);
    T_EQ_INT(msg_add_body(m, text, len, &res), 0);
    T_EQ_INT(msg_finish(m, &res), 0);
}

/* test_digest - same body, same digest, in memory or spooled */

static void test_digest(void)
{
    struct msg m;
    unsigned char raw[32];
    char    a[65], b[65], c[65], d[65];
    char   *big = malloc(200000);

    T_OK(big != NULL);
    memset(big, 'x', 200000);
    body(&m, big, 100, 0);
    T_OK(m.body_fd < 0);
    T_EQ_INT(ledger_digest(&m, raw, a), 0);
    msg_free(&m);
    body(&m, big, 100, 1);
    T_OK(m.body_fd >= 0);
    T_EQ_INT(ledger_digest(&m, raw, b), 0);
    msg_free(&m);
    T_EQ_STR(a, b);
    T_EQ_INT(strlen(a), 64);
    big[50] = 'y';
    body(&m, big, 100, 1);
    big[50] = 'x';
    T_EQ_INT(ledger_digest(&m, raw, c), 0);
    msg_free(&m);
    T_OK(strcmp(a, c) != 0);
    /* Past LEDGER_DIGEST_MAX only the length counts (cheap for 150 MB). */
    body(&m, big, 200000, 1);
    T_EQ_INT(ledger_digest(&m, raw, c), 0);
    msg_free(&m);
    big[150000] = 'y';
    body(&m, big, 200000, 1);
    T_EQ_INT(ledger_digest(&m, raw, d), 0);
    msg_free(&m);
    T_EQ_STR(c, d);
    body(&m, big, 199999, 1);
    T_EQ_INT(ledger_digest(&m, raw, d), 0);
    msg_free(&m);
    T_OK(strcmp(c, d) != 0);
    free(big);
}

/* test_sent_result - the text of "already sent" */

static void test_sent_result(void)
{
    struct ledger_rec r;
    struct m365_result res;

    memset(&r, 0, sizeof(r));
    r.attempted = 1700000000;
    r.request_id = "req-9";
    result_init(&res);
    ledger_sent_result(&r, "(confirmed in Sent Items)", &res);
    T_EQ_INT(res.status, M365_OK);
    T_EQ_STR(res.dsn, "2.0.0");
    T_CONTAINS(res.text, "already sent at 2023-11-1");
    T_CONTAINS(res.text, ", request-id req-9 (confirmed in Sent Items)");
    T_EQ_STR(res.request_id, "req-9");
    r.request_id = NULL;
    ledger_sent_result(&r, NULL, &res);
    T_CONTAINS(res.text, ", request-id -");
}

/*
 * test_kill - kill -9 at any point of a save: the record is the old one
 * or the new one, never damaged; the lock goes with the process
 */
static void test_kill(void)
{
    struct ledger_rec r;
    char   *rc[] = {"k@x.test"};
    char    name[LEDGER_NAME_MAX];
    char    err[512];
    pid_t   pid;
    int     i, status, sent = 0, sending = 0;

    T_EQ_INT(ledger_key("bob@contoso.test", "<kill@x>", "", 0, rc, 1, name,
			sizeof(name)), 0);
    for (i = 0; i < 60; i++) {
	if ((pid = fork()) == 0) {
	    struct ledger_rec x;
	    char    e2[512];

	    if (ledger_open(&conf, name, 5, &x, e2, sizeof(e2)) < 0)
		_exit(1);
	    for (;;) {
		x.state = x.state == LEDGER_SENT ? LEDGER_SENDING : LEDGER_SENT;
		ledger_set(&x.message_id, "<kill@x>");
		x.attempted = time(NULL);
		(void) ledger_save(&conf, &x, e2, sizeof(e2));
	    }
	}
	usleep((useconds_t) (200 + (i * 7919) % 3000));
	kill(pid, SIGKILL);
	T_EQ_INT(waitpid(pid, &status, 0), pid);
	/* The lock died with the process; the record reads whole. */
	T_EQ_INT(ledger_open(&conf, name, 0, &r, err, sizeof(err)), 0);
	T_OK(r.state == LEDGER_NONE || r.state == LEDGER_SENT
	     || r.state == LEDGER_SENDING);
	if (r.state != LEDGER_NONE)
	    T_EQ_STR(r.message_id, "<kill@x>");
	sent += r.state == LEDGER_SENT;
	sending += r.state == LEDGER_SENDING;
	ledger_close(&r);
    }
    T_OK(sent + sending > 0);
    /* The temporary files of the killed writers go with the expiry. */
    conf.ledger_lifetime = 0;
    (void) ledger_expire(&conf, 1);
    T_EQ_INT(ledger_open(&conf, name, 0, &r, err, sizeof(err)), 0);
    T_EQ_INT(ledger_forget(&conf, &r, err, sizeof(err)), 0);
    ledger_close(&r);
}

/* test_slots - at most GRAPH_SLOTS holders per app and mailbox */

static void test_slots(void)
{
    struct m365_result res;
    int     fd[GRAPH_SLOTS + 1], i, got, p[2], status;
    double  t0;
    pid_t   pid;
    char    c;

    conf.concurrency_wait = 1;
    for (i = 0; i < GRAPH_SLOTS; i++) {
	result_init(&res);
	fd[i] = graph_slot_take(&conf, "app1", "bob@contoso.test", &res);
	T_OK(fd[i] >= 0);
    }
    /* A fifth waits concurrency_wait, then: mailbox busy, 4.7.0. */
    t0 = time_mono();
    T_EQ_INT(graph_slot_take(&conf, "app1", "BOB@contoso.test", &res), -1);
    T_OK(time_mono() - t0 >= 0.9 && time_mono() - t0 < 3);
    T_EQ_STR(res.dsn, "4.7.0");
    T_EQ_INT(res.status, M365_TEMP);
    T_CONTAINS(res.text, "mailbox BOB@contoso.test busy: all 4 concurrent");
    /* Another mailbox or another app: slots of their own. */
    T_OK((fd[GRAPH_SLOTS] = graph_slot_take(&conf, "app1",
					    "alice@contoso.test", &res)) >= 0);
    graph_slot_release(fd[GRAPH_SLOTS]);
    T_OK((fd[GRAPH_SLOTS] = graph_slot_take(&conf, "app2",
					    "bob@contoso.test", &res)) >= 0);
    graph_slot_release(fd[GRAPH_SLOTS]);

    /* Another process waits until one is given back, then gets it. */
    T_EQ_INT(pipe(p), 0);
    conf.concurrency_wait = 5;
    if ((pid = fork()) == 0) {
	struct m365_result r2;
	int     f;

	close(p[0]);
	f = graph_slot_take(&conf, "app1", "bob@contoso.test", &r2);
	c = f >= 0 ? 'y' : 'n';
	(void) write(p[1], &c, 1);
	_exit(0);				/* the kernel frees the slot */
    }
    close(p[1]);
    usleep(300000);
    graph_slot_release(fd[2]);
    T_EQ_INT(read(p[0], &c, 1), 1);
    T_EQ_INT(c, 'y');
    close(p[0]);
    T_EQ_INT(waitpid(pid, &status, 0), pid);
    /* It died holding it: free again. */
    T_OK((got = graph_slot_take(&conf, "app1", "bob@contoso.test",
				&res)) >= 0);
    graph_slot_release(got);
    for (i = 0; i < GRAPH_SLOTS; i++)
	if (i != 2)
	    graph_slot_release(fd[i]);
    conf.concurrency_wait = 0;
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

/* envelope - a record with sender and recipients, saved in state st */

static void envelope(const char *mb, const char *mid, const char *sender,
		             char **rc, size_t n, enum ledger_state st,
		             char *name, size_t len)
{
    struct ledger_rec r;
    char    err[512];

    T_EQ_INT(ledger_key(mb, mid, "", 0, rc, n, name, len), 0);
    T_EQ_INT(ledger_open(&conf, name, 0, &r, err, sizeof(err)), 0);
    r.state = st;
    ledger_set(&r.mailbox, mb);
    ledger_set(&r.message_id, mid);
    ledger_set(&r.queue_id, "QF1");
    ledger_set_envelope(&r, sender, rc, n);
    T_EQ_INT(ledger_save(&conf, &r, err, sizeof(err)), 0);
    ledger_close(&r);
}

/*
 * test_find - look-up by Message-ID (issue 12): the envelope is
 * recorded and read back, the null sender stays "", a split delivery
 * is told apart by recipient, expired and failed records do not match
 */
static void test_find(void)
{
    struct ledger_rec r;
    char   *one[] = {"nobody@remote.test", "Other@remote.test"};
    char   *split[] = {"third@remote.test"};
    char   *none[] = {"x@remote.test"};
    char    n1[LEDGER_NAME_MAX], n2[LEDGER_NAME_MAX], n3[LEDGER_NAME_MAX];
    char    n4[LEDGER_NAME_MAX], n5[LEDGER_NAME_MAX];
    char    err[512], text[600];

    envelope("bob@contoso.test", "<find1@x>", "bounces@app.test", one, 2,
	     LEDGER_SENT, n1, sizeof(n1));
    T_EQ_INT(ledger_find(&conf, "BOB@contoso.test", "<find1@x>", NULL, &r,
			 err, sizeof(err)), 1);
    T_EQ_STR(r.sender, "bounces@app.test");
    T_EQ_INT(r.nrcpts, 2);
    T_EQ_STR(r.rcpts[0], "nobody@remote.test");
    T_EQ_STR(r.rcpts[1], "Other@remote.test");
    T_EQ_STR(r.queue_id, "QF1");
    T_EQ_INT(r.lock_fd, -1);
    ledger_close(&r);
    /* Another mailbox, another Message-ID: nothing. */
    T_EQ_INT(ledger_find(&conf, "alice@contoso.test", "<find1@x>", NULL, &r,
			 err, sizeof(err)), 0);
    T_EQ_INT(ledger_find(&conf, "bob@contoso.test", "<find9@x>", NULL, &r,
			 err, sizeof(err)), 0);
    T_EQ_INT(ledger_find(&conf, "bob@contoso.test", NULL, NULL, &r, err,
			 sizeof(err)), 0);

    /* A split delivery: the record whose recipients include rcpt. */
    envelope("bob@contoso.test", "<find1@x>", "other-sender@app.test", split,
	     1, LEDGER_AMBIGUOUS, n2, sizeof(n2));
    T_EQ_INT(ledger_find(&conf, "bob@contoso.test", "<find1@x>",
			 "THIRD@remote.test", &r, err, sizeof(err)), 1);
    T_EQ_STR(r.sender, "other-sender@app.test");
    ledger_close(&r);
    T_EQ_INT(ledger_find(&conf, "bob@contoso.test", "<find1@x>",
			 "other@remote.test", &r, err, sizeof(err)), 1);
    T_EQ_STR(r.sender, "bounces@app.test");
    ledger_close(&r);

    /* The null sender is recorded as "", not as "unknown". */
    envelope("bob@contoso.test", "<find2@x>", "", none, 1, LEDGER_SENT, n3,
	     sizeof(n3));
    T_EQ_INT(ledger_find(&conf, "bob@contoso.test", "<find2@x>", NULL, &r,
			 err, sizeof(err)), 1);
    T_EQ_STR(r.sender, "");
    ledger_close(&r);

    /* Nothing was sent (failed): no match. */
    envelope("bob@contoso.test", "<find3@x>", "a@app.test", none, 1,
	     LEDGER_FAILED, n4, sizeof(n4));
    T_EQ_INT(ledger_find(&conf, "bob@contoso.test", "<find3@x>", NULL, &r,
			 err, sizeof(err)), 0);

    /* Older than ledger_lifetime: expired, even before ledger_expire(). */
    envelope("bob@contoso.test", "<find4@x>", "a@app.test", none, 1,
	     LEDGER_SENT, n5, sizeof(n5));
    snprintf(text, sizeof(text), "{\"version\":1,\"state\":\"sent\","
	     "\"mailbox\":\"bob@contoso.test\",\"message_id\":\"<find4@x>\","
	     "\"created\":%ld,\"updated\":%ld,\"sender\":\"a@app.test\","
	     "\"rcpts\":[\"x@remote.test\"]}", (long) (time(NULL) - 6 * 86400),
	     (long) (time(NULL) - 6 * 86400));
    t_write_file(path_of(n5, ".json"), text, 0600);
    T_EQ_INT(ledger_find(&conf, "bob@contoso.test", "<find4@x>", NULL, &r,
			 err, sizeof(err)), 0);
    conf.ledger_lifetime = 7 * 86400;
    T_EQ_INT(ledger_find(&conf, "bob@contoso.test", "<find4@x>", NULL, &r,
			 err, sizeof(err)), 1);
    ledger_close(&r);
    conf.ledger_lifetime = 0;

    /* Thousands of recipients: the record stays readable (the list cut). */
    {
	static char *many[2000];
	char    buf[80];
	struct ledger_rec big;
	char    nb[LEDGER_NAME_MAX];
	size_t  i;

	for (i = 0; i < 2000; i++) {
	    snprintf(buf, sizeof(buf), "a-rather-long-recipient-name-%04zu@"
		     "remote-domain.example", i);
	    many[i] = xstrdup(buf);
	}
	envelope("bob@contoso.test", "<find5@x>", "a@app.test", many, 2000,
		 LEDGER_SENT, nb, sizeof(nb));
	T_EQ_INT(ledger_open(&conf, nb, 0, &big, err, sizeof(err)), 0);
	T_EQ_INT(big.state, LEDGER_SENT);
	T_OK(big.nrcpts > 100 && big.nrcpts < 2000);
	T_EQ_STR(big.rcpts[0], many[0]);
	ledger_close(&big);
	for (i = 0; i < 2000; i++)
	    free(many[i]);
    }
    /* A record of an older version (no envelope) does not match. */
    snprintf(text, sizeof(text), "{\"version\":1,\"state\":\"sent\","
	     "\"mailbox\":\"bob@contoso.test\",\"message_id\":\"<find4@x>\","
	     "\"created\":%ld,\"updated\":%ld}", (long) time(NULL),
	     (long) time(NULL));
    t_write_file(path_of(n5, ".json"), text, 0600);
    T_EQ_INT(ledger_find(&conf, "bob@contoso.test", "<find4@x>", NULL, &r,
			 err, sizeof(err)), 0);
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
    T_RUN(test_states);
    T_RUN(test_expire);
    T_RUN(test_message_id);
    T_RUN(test_digest);
    T_RUN(test_sent_result);
    T_RUN(test_kill);
    T_RUN(test_slots);
    T_RUN(test_pace);
    T_RUN(test_find);
    t_rm_rf(dir);
    return (T_DONE());
}
