/*
 * NAME
 *	test_log 1
 * SUMMARY
 *	unit tests for log.c: msg_error_lines, msg_fatal, msg_panic
 * DESCRIPTION
 *	Records go to a temporary file (log_to_file()); msg_fatal() and
 *	msg_panic() run in a child process, whose exit status is judged.
 */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include "log.h"
#include "t.h"

static char t_log[] = "/tmp/test_log.XXXXXX";
static char t_mark[] = "/tmp/test_log.mark.XXXXXX";
static char t_text[16384];

/* t_read_log - the log so far into t_text; then empty the log */

static const char *t_read_log(void)
{
    FILE   *fp;
    size_t  n = 0;

    t_text[0] = 0;
    if ((fp = fopen(t_log, "r")) != NULL) {
	n = fread(t_text, 1, sizeof(t_text) - 1, fp);
	fclose(fp);
    }
    t_text[n] = 0;
    if ((fp = fopen(t_log, "w")) != NULL)
	fclose(fp);
    return (t_text);
}

/* t_count - occurrences of needle in hay */

static int t_count(const char *hay, const char *needle)
{
    int     n = 0;

    for (; (hay = strstr(hay, needle)) != NULL; hay += strlen(needle))
	n++;
    return (n);
}

/* t_cleanup - a cleanup hook: leaves a mark */

static void t_cleanup(void)
{
    FILE   *fp;

    if ((fp = fopen(t_mark, "a")) != NULL) {
	fputs("cleaned\n", fp);
	fclose(fp);
    }
}

/* t_cleanup_fatal - a cleanup hook that fails fatally itself */

static void t_cleanup_fatal(void)
{
    t_cleanup();
    msg_fatal(EX_SOFTWARE, "the cleanup failed too");
}

/* t_marks - how many times a cleanup hook ran */

static int t_marks(void)
{
    char    buf[256];
    FILE   *fp;
    size_t  n;

    if ((fp = fopen(t_mark, "r")) == NULL)
	return (0);
    n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = 0;
    return (t_count(buf, "cleaned"));
}

/* test_error_lines - one error record per non-empty line */

static void test_error_lines(void)
{
    const char *log;

    (void) t_read_log();
    msg_error_lines("/etc/m.conf:3: bad key \"x\"\n\n/etc/m.conf:9: "
		    "tenant is required\nlast line without newline");
    log = t_read_log();
    T_EQ_INT(t_count(log, "\n"), 3);
    T_CONTAINS(log, "test_log[");
    T_CONTAINS(log, "]: error: /etc/m.conf:3: bad key \"x\"\n");
    T_CONTAINS(log, "]: error: /etc/m.conf:9: tenant is required\n");
    T_CONTAINS(log, "]: error: last line without newline\n");
    T_EQ_INT(t_count(log, "]: error: \n"), 0);

    msg_error_lines("");
    msg_error_lines(NULL);
    msg_error_lines("\n\n");
    T_EQ_STR(t_read_log(), "");
}

/* t_child - run fn in a child; its wait status */

static int t_child(void (*fn) (void))
{
    pid_t   pid;
    int     status = -1;

    fflush(stdout);
    if ((pid = fork()) < 0)
	return (-1);
    if (pid == 0) {
	struct rlimit rl = {0, 0};

	(void) setrlimit(RLIMIT_CORE, &rl);	/* no core file from abort() */
	fn();
	_exit(99);				/* not reached */
    }
    (void) waitpid(pid, &status, 0);
    return (status);
}

static void t_fatal(void)
{
    msg_cleanup(t_cleanup);
    msg_fatal(EX_OSERR, "cannot listen on %s: check %s", "inet:1@127.0.0.1",
	      "the port");
}

static void t_fatal_loop(void)
{
    msg_cleanup(t_cleanup_fatal);
    msg_fatal(EX_CONFIG, "first");
}

static void t_fatal_nohook(void)
{
    msg_cleanup(t_cleanup);
    msg_cleanup(NULL);
    msg_fatal(EX_TEMPFAIL, "no hook");
}

static void t_panic(void)
{
    msg_cleanup(t_cleanup);
    msg_panic("impossible state %d", 42);
}

/* test_fatal - log, cleanup hook once, the given exit code */

static void test_fatal(void)
{
    const char *log;
    int     st;

    (void) t_read_log();
    unlink(t_mark);
    st = t_child(t_fatal);
    T_OK(WIFEXITED(st));
    T_EQ_INT(WEXITSTATUS(st), EX_OSERR);
    T_EQ_INT(t_marks(), 1);
    log = t_read_log();
    T_CONTAINS(log, "]: error: cannot listen on inet:1@127.0.0.1: check "
	       "the port\n");

    /* A hook that dies does not run again; the second exit code wins. */
    unlink(t_mark);
    st = t_child(t_fatal_loop);
    T_OK(WIFEXITED(st));
    T_EQ_INT(WEXITSTATUS(st), EX_SOFTWARE);
    T_EQ_INT(t_marks(), 1);
    log = t_read_log();
    T_CONTAINS(log, "]: error: first\n");
    T_CONTAINS(log, "]: error: the cleanup failed too\n");

    unlink(t_mark);
    st = t_child(t_fatal_nohook);
    T_OK(WIFEXITED(st));
    T_EQ_INT(WEXITSTATUS(st), EX_TEMPFAIL);
    T_EQ_INT(t_marks(), 0);
    T_CONTAINS(t_read_log(), "]: error: no hook\n");
}

/* test_panic - log, no cleanup, abort() */

static void test_panic(void)
{
    int     st;

    (void) t_read_log();
    unlink(t_mark);
    st = t_child(t_panic);
    T_OK(WIFSIGNALED(st));
    T_EQ_INT(WIFSIGNALED(st) ? WTERMSIG(st) : 0, SIGABRT);
    T_EQ_INT(t_marks(), 0);
    T_CONTAINS(t_read_log(), "]: panic: impossible state 42\n");
}

int     main(void)
{
    int     fd;

    if ((fd = mkstemp(t_log)) < 0 || close(fd) < 0
	|| (fd = mkstemp(t_mark)) < 0 || close(fd) < 0) {
	perror("mkstemp");
	return (1);
    }
    log_open("test_log");
    if (log_to_file(t_log) < 0) {
	perror(t_log);
	return (1);
    }
    T_RUN(test_error_lines);
    T_RUN(test_fatal);
    T_RUN(test_panic);
    unlink(t_log);
    unlink(t_mark);
    return (T_DONE());
}
