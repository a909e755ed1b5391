/*
 * NAME
 *	test_status 1
 * SUMMARY
 *	unit tests for status.c: one table from DSN to exit code
 * DESCRIPTION
 *	The exit code of a result follows from its DSN (status_sysexit()),
 *	and result_set() never lets a status, a DSN class and an exit code
 *	disagree.  The pairs the callers used to choose by hand must come
 *	out of the table unchanged.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "log.h"
#include "status.h"
#include "t.h"

static char t_log[] = "/tmp/test_status.XXXXXX";

/* t_soft - exit codes that Postfix pipe(8) and Sendmail retry */

static int t_soft(int sysexit)
{
    return (sysexit == EX_TEMPFAIL || sysexit == EX_OSERR
	    || sysexit == EX_IOERR);
}

/* t_is_code - dsn is "C.S.D" with class 2, 4 or 5 and 1-3 digit numbers */

static int t_is_code(const char *dsn)
{
    char    c[2], s[4], d[4], rest;
    int     n = sscanf(dsn, "%1[245].%3[0-9].%3[0-9]%c", c, s, d, &rest);

    return (n == 3 && strlen(dsn) == 3 + strlen(s) + strlen(d));
}

/* t_log_has - the test log contains text */

static int t_log_has(const char *text)
{
    char    buf[8192];
    FILE   *fp;
    size_t  n;

    if ((fp = fopen(t_log, "r")) == NULL)
	return (0);
    n = fread(buf, 1, sizeof(buf) - 1, fp);
    buf[n] = 0;
    fclose(fp);
    return (strstr(buf, text) != NULL);
}

/*
 * Every (status, exit code, DSN) that a result_set() call site passed
 * before the exit code was derived (lib/, relay/, ctl/): the table must
 * give the same exit code for each DSN.
 */
static const struct {
    enum m365_status status;
    int     sysexit;
    const char *dsn;
}       call_sites[] = {
    {M365_OK, EX_OK, "2.0.0"},		/* graph.c: 202 Accepted */
    {M365_TEMP, EX_TEMPFAIL, "4.3.0"},	/* graph.c: unexpected reply */
    {M365_SYSTEM, EX_TEMPFAIL, "4.3.0"},	/* msg.c, ctl_test.c, relay */
    {M365_CONFIG, EX_TEMPFAIL, "4.3.0"},	/* relay: run as root */
    {M365_CONFIG, EX_TEMPFAIL, "4.3.5"},	/* relay, deliver.c: config */
    {M365_TEMP, EX_TEMPFAIL, "4.4.1"},	/* graph.c, auth.c: unreachable */
    {M365_TEMP, EX_TEMPFAIL, "4.4.2"},	/* graph.c: lost, 5xx */
    {M365_TEMP, EX_TEMPFAIL, "4.7.0"},	/* graph.c: 429 */
    {M365_CONFIG, EX_TEMPFAIL, "4.7.0"},	/* graph.c, auth.c */
    {M365_REAUTH, EX_TEMPFAIL, "4.7.0"},	/* auth.c: sign in again */
    {M365_CONFIG, EX_TEMPFAIL, "4.7.1"},	/* graph.c: 403, 404 */
    {M365_PERM, EX_NOUSER, "5.1.1"},	/* graph.c: invalid recipients */
    {M365_PERM, EX_DATAERR, "5.3.4"},	/* graph.c, msg.c: too big */
    {M365_PERM, EX_USAGE, "5.5.1"},	/* relay -t: no recipient */
    {M365_PERM, EX_DATAERR, "5.5.3"},	/* deliver.c: too many */
    {M365_PERM, EX_DATAERR, "5.6.0"},	/* msg.c, graph.c: bad MIME */
    {M365_PERM, EX_NOPERM, "5.7.1"},	/* graph.c: Send As denied */
};

/* test_call_sites - the table reproduces the hand-chosen exit codes */

static void test_call_sites(void)
{
    struct m365_result r;
    size_t  i;

    for (i = 0; i < sizeof(call_sites) / sizeof(call_sites[0]); i++) {
	result_init(&r);
	result_set(&r, call_sites[i].status, call_sites[i].dsn, "case %lu",
		   (unsigned long) i);
	T_EQ_STR(r.dsn, call_sites[i].dsn);
	T_EQ_INT(r.status, call_sites[i].status);
	T_EQ_INT(r.sysexit, call_sites[i].sysexit);
	T_EQ_INT(status_sysexit(call_sites[i].dsn), call_sites[i].sysexit);
    }
}

/* test_table - every DSN class maps to an exit code of the same softness */

static void test_table(void)
{
    static const int numbers[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 99, 100,
    999};
    char    dsn[32];
    size_t  s, d;
    int     cls, ex;

    for (cls = 0; cls <= 9; cls++) {
	for (s = 0; s < sizeof(numbers) / sizeof(numbers[0]); s++) {
	    for (d = 0; d < sizeof(numbers) / sizeof(numbers[0]); d++) {
		snprintf(dsn, sizeof(dsn), "%d.%d.%d", cls, numbers[s],
			 numbers[d]);
		ex = status_sysexit(dsn);
		if (cls == 2)
		    T_CHECK(ex == EX_OK, "%s -> %d, want EX_OK", dsn, ex);
		else if (cls == 5)
		    T_CHECK(ex != EX_OK && !t_soft(ex), "%s -> %d, want a "
			    "permanent exit code", dsn, ex);
		else
		    T_CHECK(ex == EX_TEMPFAIL, "%s -> %d, want EX_TEMPFAIL",
			    dsn, ex);
	    }
	}
    }
    /* Anything that is not an enhanced status code defers. */
    T_EQ_INT(status_sysexit(NULL), EX_TEMPFAIL);
    T_EQ_INT(status_sysexit(""), EX_TEMPFAIL);
    T_EQ_INT(status_sysexit("5"), EX_TEMPFAIL);
    T_EQ_INT(status_sysexit("5.1"), EX_TEMPFAIL);
    T_EQ_INT(status_sysexit("5.1."), EX_TEMPFAIL);
    T_EQ_INT(status_sysexit("5..1"), EX_TEMPFAIL);
    T_EQ_INT(status_sysexit("5.1.1 "), EX_TEMPFAIL);
    T_EQ_INT(status_sysexit("5.1000.1"), EX_TEMPFAIL);
    T_EQ_INT(status_sysexit("5.1.1000"), EX_TEMPFAIL);
    T_EQ_INT(status_sysexit("5.x.1"), EX_TEMPFAIL);
    T_EQ_INT(status_sysexit("2.0"), EX_TEMPFAIL);
    /* The subjects: RFC 3463 section 3. */
    T_EQ_INT(status_sysexit("5.1.10"), EX_NOUSER);
    T_EQ_INT(status_sysexit("5.3.4"), EX_DATAERR);
    T_EQ_INT(status_sysexit("5.3.40"), EX_UNAVAILABLE);
    T_EQ_INT(status_sysexit("5.5.1"), EX_USAGE);
    T_EQ_INT(status_sysexit("5.5.2"), EX_DATAERR);
    T_EQ_INT(status_sysexit("5.6.3"), EX_DATAERR);
    T_EQ_INT(status_sysexit("5.7.0"), EX_NOPERM);
    T_EQ_INT(status_sysexit("5.0.0"), EX_UNAVAILABLE);
    T_EQ_INT(status_sysexit("5.4.4"), EX_UNAVAILABLE);
}

/*
 * test_consistent - whatever a caller passes, the result is one of: OK
 * with 2.X.X and EX_OK; PERM with 5.X.X and a permanent exit code; any
 * other status with 4.X.X and EX_TEMPFAIL.
 */
static void test_consistent(void)
{
    static const char *dsns[] = {
	"2.0.0", "2.6.0", "4.0.0", "4.3.5", "4.7.1", "5.0.0", "5.1.1",
	"5.3.4", "5.5.1", "5.7.1", "5.9.999", "3.0.0", "6.1.1", "", "x",
	"5.1", "4.4.1x", "5.1234.1", NULL,
    };
    static const enum m365_status statuses[] = {
	M365_OK, M365_TEMP, M365_PERM, M365_CONFIG, M365_REAUTH, M365_SYSTEM,
    };
    struct m365_result r;
    size_t  i, j;

    for (i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
	for (j = 0; j < sizeof(dsns) / sizeof(dsns[0]); j++) {
	    result_init(&r);
	    r.http_status = 403;
	    snprintf(r.request_id, sizeof(r.request_id), "rid");
	    result_set(&r, statuses[i], dsns[j], "status %d dsn %s",
		       (int) statuses[i], dsns[j] ? dsns[j] : "(null)");
	    T_CHECK(r.sysexit == status_sysexit(r.dsn), "%d/%s: exit %d is "
		    "not the table's for %s", (int) statuses[i],
		    dsns[j] ? dsns[j] : "(null)", r.sysexit, r.dsn);
	    T_CHECK(t_is_code(r.dsn), "%d/%s: stored DSN \"%s\" is not a "
		    "code", (int) statuses[i], dsns[j] ? dsns[j] : "(null)",
		    r.dsn);
	    if (r.status == M365_OK)
		T_CHECK(r.dsn[0] == '2' && r.sysexit == EX_OK, "%d/%s: OK with "
			"%s, exit %d", (int) statuses[i],
			dsns[j] ? dsns[j] : "(null)", r.dsn, r.sysexit);
	    else if (r.status == M365_PERM)
		T_CHECK(r.dsn[0] == '5' && r.sysexit != EX_OK
			&& !t_soft(r.sysexit), "%d/%s: PERM with %s, exit %d",
			(int) statuses[i], dsns[j] ? dsns[j] : "(null)", r.dsn,
			r.sysexit);
	    else
		T_CHECK(r.dsn[0] == '4' && r.sysexit == EX_TEMPFAIL,
			"%d/%s: status %d with %s, exit %d", (int) statuses[i],
			dsns[j] ? dsns[j] : "(null)", (int) r.status, r.dsn,
			r.sysexit);
	    /* Only a status of another class may change, and only to TEMP. */
	    T_CHECK(r.status == statuses[i] || r.status == M365_TEMP,
		    "%d/%s: status became %d", (int) statuses[i],
		    dsns[j] ? dsns[j] : "(null)", (int) r.status);
	    T_EQ_INT(r.http_status, 403);
	    T_EQ_STR(r.request_id, "rid");
	}
    }
}

/* test_disagree - what a status and DSN that disagree become */

static void test_disagree(void)
{
    struct m365_result r;
    FILE   *fp;

    if ((fp = fopen(t_log, "w")) != NULL)	/* only this test's records */
	fclose(fp);

    /* A soft status never bounces: the class becomes 4, the rest stays. */
    result_set(&r, M365_TEMP, "5.1.1", "x");
    T_EQ_STR(r.dsn, "4.1.1");
    T_EQ_INT(r.status, M365_TEMP);
    T_EQ_INT(r.sysexit, EX_TEMPFAIL);
    T_OK(t_log_has("internal error: status \"temporary failure\" with DSN "
		   "\"5.1.1\""));
    result_set(&r, M365_CONFIG, "5.3.5", "x");
    T_EQ_STR(r.dsn, "4.3.5");
    T_EQ_INT(r.status, M365_CONFIG);
    T_EQ_INT(r.sysexit, EX_TEMPFAIL);

    /* A permanent status with a soft code, or success with a failure. */
    result_set(&r, M365_PERM, "4.3.0", "x");
    T_EQ_STR(r.dsn, "4.3.0");
    T_EQ_INT(r.status, M365_TEMP);
    T_EQ_INT(r.sysexit, EX_TEMPFAIL);
    result_set(&r, M365_OK, "5.1.1", "x");
    T_EQ_STR(r.dsn, "4.1.1");
    T_EQ_INT(r.status, M365_TEMP);
    T_EQ_STR(result_disposition(&r), "deferred");

    /* A failure never passes for success. */
    result_set(&r, M365_SYSTEM, "2.0.0", "x");
    T_EQ_STR(r.dsn, "4.0.0");
    T_EQ_INT(r.sysexit, EX_TEMPFAIL);
    T_EQ_STR(result_disposition(&r), "deferred");

    /* Not a code at all. */
    result_set(&r, M365_PERM, "5.1.1\nX", "x");
    T_EQ_STR(r.dsn, "4.3.0");
    T_EQ_INT(r.status, M365_TEMP);
    T_OK(t_log_has("with DSN \"5.1.1?X\""));
    result_set(&r, M365_OK, NULL, "x");
    T_EQ_STR(r.dsn, "4.3.0");
    T_EQ_INT(r.status, M365_TEMP);
    T_EQ_INT(r.sysexit, EX_TEMPFAIL);
}

/* test_init - a fresh result is success */

static void test_init(void)
{
    struct m365_result r;

    memset(&r, 0x55, sizeof(r));
    result_init(&r);
    T_EQ_INT(r.status, M365_OK);
    T_EQ_STR(r.dsn, "2.0.0");
    T_EQ_INT(r.sysexit, EX_OK);
    T_EQ_STR(r.text, "");
    T_EQ_STR(result_disposition(&r), "sent");
    result_set(&r, M365_PERM, "5.7.1", "mailbox %s may not send as %s",
	       "a@b", "c@d");
    T_EQ_STR(r.text, "mailbox a@b may not send as c@d");
    T_EQ_STR(result_disposition(&r), "bounced");
}

int     main(void)
{
    int     fd;

    if ((fd = mkstemp(t_log)) < 0) {
	perror("mkstemp");
	return (1);
    }
    close(fd);
    log_open("test_status");
    if (log_to_file(t_log) < 0) {
	perror(t_log);
	return (1);
    }
    T_RUN(test_call_sites);
    T_RUN(test_table);
    T_RUN(test_consistent);
    T_RUN(test_disagree);
    T_RUN(test_init);
    unlink(t_log);
    return (T_DONE());
}
