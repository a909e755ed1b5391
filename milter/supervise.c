/*
 * NAME
 *	supervise 3
 * SUMMARY
 *	m365-milter: the supervisor process that turns SIGHUP into a reload
 * DESCRIPTION
 *	See supervise.h.  The supervisor keeps its signals blocked and
 *	unblocks them only inside ppoll(), whose handlers just set a
 *	flag: no signal is lost between a check and the wait, and no
 *	work is done in a handler.  It never calls libmilter, so it has
 *	no signal thread of libmilter's competing for SIGHUP.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "log.h"
#include "priv.h"
#include "supervise.h"

static sigset_t supervise_oldmask;	/* the mask before supervise_fork() */
static pid_t supervise_parent;		/* the supervisor, seen by the worker */

static volatile sig_atomic_t supervise_got_reload;	/* SIGHUP, SIGUSR1 */
static volatile sig_atomic_t supervise_got_stop;	/* SIGTERM, SIGINT */
static volatile sig_atomic_t supervise_got_child;	/* SIGCHLD */

static const int supervise_signals[] = {
    SIGHUP, SIGUSR1, SIGTERM, SIGINT, SIGCHLD,
};

#define SUPERVISE_NSIG	(sizeof(supervise_signals) / sizeof(supervise_signals[0]))

/* supervise_signame - name of a signal we handle, for the log */

static const char *supervise_signame(int sig)
{
    switch (sig) {
    case SIGHUP:
	return ("SIGHUP");
    case SIGUSR1:
	return ("SIGUSR1");
    case SIGTERM:
	return ("SIGTERM");
    case SIGINT:
	return ("SIGINT");
    default:
	return ("signal");
    }
}

/* supervise_catch - signal handler: remember the signal, nothing else */

static void supervise_catch(int sig)
{
    switch (sig) {
    case SIGHUP:
    case SIGUSR1:
	supervise_got_reload = sig;
	break;
    case SIGTERM:
    case SIGINT:
	supervise_got_stop = sig;
	break;
    case SIGCHLD:
	supervise_got_child = 1;
	break;
    }
}

/* supervise_fork - fork the worker with our signals blocked */

pid_t   supervise_fork(int *ready_fd)
{
    sigset_t set;
    size_t  i;
    pid_t   pid;
    int     pipefd[2];
    int     saved;

    if (pipe(pipefd) < 0)
	return (-1);
    sigemptyset(&set);
    for (i = 0; i < SUPERVISE_NSIG; i++)
	sigaddset(&set, supervise_signals[i]);
    if (sigprocmask(SIG_BLOCK, &set, &supervise_oldmask) < 0) {
	saved = errno;
	(void) close(pipefd[0]);
	(void) close(pipefd[1]);
	errno = saved;
	return (-1);
    }
    supervise_parent = getpid();
    if ((pid = fork()) < 0) {
	saved = errno;
	(void) sigprocmask(SIG_SETMASK, &supervise_oldmask, NULL);
	(void) close(pipefd[0]);
	(void) close(pipefd[1]);
	errno = saved;
	return (-1);
    }
    if (pid == 0) {
	/* The worker: pending signals were not inherited. */
	(void) close(pipefd[0]);
	(void) sigprocmask(SIG_SETMASK, &supervise_oldmask, NULL);
	*ready_fd = pipefd[1];
	return (0);
    }
    (void) close(pipefd[1]);
    *ready_fd = pipefd[0];
    return (pid);
}

/* supervise_lifeline - worker: stop when the supervisor dies */

int     supervise_lifeline(void)
{
#if defined(__linux__) && defined(PR_SET_PDEATHSIG)
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0)
	msg_warn("prctl(PR_SET_PDEATHSIG): %s; the milter keeps running "
		 "if its supervisor is killed", strerror(errno));
#endif
    /* The supervisor may have died before the request was made. */
    return (getppid() == supervise_parent ? 0 : -1);
}

/* supervise_ready - worker: the socket is open, privileges dropped */

void    supervise_ready(int ready_fd)
{
    static const char byte = 'R';

    while (write(ready_fd, &byte, 1) < 0 && errno == EINTR)
	 /* again */ ;
    (void) close(ready_fd);
}

/* supervise_detach_stdio - daemon: no terminal for stdio or the log */

void    supervise_detach_stdio(void)
{
    int     fd;

    if ((fd = open("/dev/null", O_RDWR)) >= 0) {
	(void) dup2(fd, STDIN_FILENO);
	(void) dup2(fd, STDOUT_FILENO);
	(void) dup2(fd, STDERR_FILENO);
	if (fd > STDERR_FILENO)
	    (void) close(fd);
    }
    log_to_stderr(0);
}

/* supervise_kill - send a signal to the worker */

static void supervise_kill(pid_t worker, int sig)
{
    if (kill(worker, sig) < 0 && errno != ESRCH)
	msg_warn("supervisor: cannot send %s to the worker (pid %ld): %s",
		 supervise_signame(sig), (long) worker, strerror(errno));
}

/* supervise_reap - wait for the worker without being interrupted */

static int supervise_reap(pid_t worker)
{
    int     status = 0;

    while (waitpid(worker, &status, 0) < 0 && errno == EINTR)
	 /* again */ ;
    return (status);
}

/* supervise_status - the supervisor's exit status from the worker's */

static int supervise_status(pid_t worker, int status, int stopping,
			            int ready)
{
    int     sig;

    if (WIFEXITED(status)) {
	/* Before it was ready the worker has logged why it stopped. */
	if (WEXITSTATUS(status) != 0 && ready)
	    msg_error("supervisor: the worker (pid %ld) exited with status "
		      "%d", (long) worker, WEXITSTATUS(status));
	return (WEXITSTATUS(status));
    }
    if (WIFSIGNALED(status)) {
	sig = WTERMSIG(status);
	if (stopping && sig == SIGTERM)
	    return (EX_OK);
	msg_error("supervisor: the worker (pid %ld) was killed by signal %d "
		  "(%s)%s; exiting with status %d so that the service "
		  "manager restarts the milter", (long) worker, sig,
		  strsignal(sig), WCOREDUMP(status) ? ", core dumped" : "",
		  EX_SOFTWARE);
	return (EX_SOFTWARE);
    }
    return (EX_SOFTWARE);
}

/* supervise_run - pass signals on to the worker until it ends */

int     supervise_run(pid_t worker, int ready_fd, const struct supervise *sv)
{
    struct sigaction sa;
    struct pollfd pfd;
    char    err[300];
    char    byte;
    size_t  i;
    ssize_t n;
    int     ready = 0, stopping = 0, reload_pending = 0;
    int     status = 0, rc, sig;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = supervise_catch;
    sigfillset(&sa.sa_mask);
    for (i = 0; i < SUPERVISE_NSIG; i++)
	(void) sigaction(supervise_signals[i], &sa, NULL);

    for (;;) {
	if (supervise_got_child) {
	    supervise_got_child = 0;
	    if (waitpid(worker, &status, WNOHANG) == worker)
		break;
	}
	if ((sig = supervise_got_stop) != 0) {
	    supervise_got_stop = 0;
	    msg_info("supervisor: %s: stopping the worker (pid %ld)",
		     supervise_signame(sig), (long) worker);
	    stopping = 1;
	    supervise_kill(worker, SIGTERM);
	}
	if ((sig = supervise_got_reload) != 0) {
	    supervise_got_reload = 0;
	    if (ready) {
		msg_info("supervisor: %s: reload requested; passing it on to "
			 "the worker (pid %ld) as SIGUSR1",
			 supervise_signame(sig), (long) worker);
		supervise_kill(worker, SIGUSR1);
	    } else {
		msg_info("supervisor: %s: reload requested; passed on when "
			 "the worker has started", supervise_signame(sig));
		reload_pending = 1;
	    }
	}

	/* Signals are delivered only here. */
	if (ready_fd >= 0) {
	    pfd.fd = ready_fd;
	    pfd.events = POLLIN;
	    pfd.revents = 0;
	    n = ppoll(&pfd, 1, NULL, &supervise_oldmask);
	} else {
	    n = ppoll(NULL, 0, NULL, &supervise_oldmask);
	}
	if (n < 0) {
	    if (errno != EINTR) {
		msg_error("supervisor: ppoll: %s", strerror(errno));
		sleep(1);
	    }
	    continue;
	}
	if (n == 0 || ready_fd < 0 || pfd.revents == 0)
	    continue;

	/* The worker is ready, or closed the pipe on its way out. */
	n = read(ready_fd, &byte, 1);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
	    continue;
	(void) close(ready_fd);
	ready_fd = -1;
	if (n != 1)
	    continue;				/* SIGCHLD follows */
	ready = 1;
	if (priv_drop(sv->user, err, sizeof(err)) < 0) {
	    msg_error("supervisor: %s", err);
	    supervise_kill(worker, SIGTERM);
	    (void) supervise_reap(worker);
	    rc = EX_OSERR;
	    goto done;
	}
	if (sv->detach)
	    supervise_detach_stdio();
	if (sv->notify_fd >= 0) {
	    while (write(sv->notify_fd, &byte, 1) < 0 && errno == EINTR)
		 /* again */ ;
	    (void) close(sv->notify_fd);
	}
	if (reload_pending) {
	    reload_pending = 0;
	    msg_info("supervisor: passing the reload request on to the "
		     "worker (pid %ld) as SIGUSR1", (long) worker);
	    supervise_kill(worker, SIGUSR1);
	}
    }
    rc = supervise_status(worker, status, stopping, ready);

done:
    if (sv->pid_file && unlink(sv->pid_file) < 0 && errno != ENOENT)
	msg_warn("supervisor: cannot remove %s: %s", sv->pid_file,
		 strerror(errno));
    return (rc);
}
