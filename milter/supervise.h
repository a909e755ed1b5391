/*
 * NAME
 *	supervise 3h
 * SUMMARY
 *	m365-milter: the supervisor process that turns SIGHUP into a reload
 * SYNOPSIS
 *	#include "supervise.h"
 * DESCRIPTION
 *	libmilter waits for SIGHUP, SIGTERM and SIGINT in a signal
 *	thread of its own and stops on SIGHUP as on SIGTERM.  So that
 *	SIGHUP can mean "reload", m365-milter runs as two processes: a
 *	small supervisor, whose pid is in the pid file and which never
 *	calls libmilter, and the worker, which opens the socket and runs
 *	smfi_main() and reloads its configuration on SIGUSR1.
 *
 *	supervise_fork() works like fork(): it returns -1 (errno set),
 *	0 in the worker and the worker's pid in the supervisor.  Before
 *	forking it blocks SIGHUP, SIGUSR1, SIGTERM, SIGINT and SIGCHLD,
 *	so that none is lost; the worker gets the old signal mask back.
 *	*ready_fd is the worker's end of a pipe (in the worker) or the
 *	supervisor's end (in the supervisor).
 *
 *	In the worker, supervise_lifeline() (after the privileges were
 *	dropped: a change of credentials clears it) asks the kernel for
 *	SIGTERM when the supervisor dies, so that a killed supervisor
 *	never leaves an orphaned worker behind (Linux; elsewhere it does
 *	nothing).  It returns -1 when the supervisor is already gone.
 *	supervise_ready() tells the supervisor that the socket is open
 *	and the privileges are dropped, and closes ready_fd.
 *
 *	supervise_detach_stdio() sends standard input, output and
 *	error to /dev/null and stops logging to stderr (daemon mode;
 *	each process calls it once it is ready).
 *
 *	supervise_run() is the supervisor's whole life.  Until the
 *	worker is ready it only waits; a stop request is passed on at
 *	once, a reload request when the worker is ready.  When the
 *	worker is ready it drops its own privileges with priv_drop() to
 *	sv->user (the same user, so it can still signal the worker),
 *	detaches from the terminal when sv->detach is set (standard
 *	input, output and error to /dev/null) and writes one byte to
 *	sv->notify_fd (when >= 0; the process that started the daemon
 *	waits for it).  Then:
 *	SIGHUP, SIGUSR1:  SIGUSR1 to the worker (reload).
 *	SIGTERM, SIGINT:  SIGTERM to the worker, then wait for it.
 *	The worker ends:  the supervisor removes sv->pid_file (when not
 *	null) and returns the worker's exit status; 0 when the worker
 *	died from the SIGTERM it was sent, EX_SOFTWARE (70) when it died
 *	from another signal.  There is no respawn: the service manager
 *	restarts a failed milter.
 * DIAGNOSTICS
 *	supervise_run() returns the exit status for the supervisor; it
 *	returns EX_OSERR (71) when it cannot drop its privileges (after
 *	stopping the worker).
 */
#ifndef M365_MILTER_SUPERVISE_H
#define M365_MILTER_SUPERVISE_H

#include <sys/types.h>

struct supervise {
    const char *user;			/* priv_drop() to this user */
    const char *pid_file;		/* removed at exit, or NULL */
    int     notify_fd;			/* one byte when ready, or -1 */
    int     detach;			/* stdio to /dev/null when ready */
};

extern pid_t supervise_fork(int *ready_fd);
extern int supervise_lifeline(void);
extern void supervise_ready(int ready_fd);
extern int supervise_run(pid_t worker, int ready_fd,
			         const struct supervise *sv);
extern void supervise_detach_stdio(void);

#endif
