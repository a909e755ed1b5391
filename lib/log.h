/*
 * NAME
 *	log 3h
 * SUMMARY
 *	diagnostics: one line per event, to syslog, a file or stderr
 * SYNOPSIS
 *	#include "log.h"
 * DESCRIPTION
 *	log_open() names the program (syslog ident, facility mail).  By
 *	default records go to syslog; log_to_stderr() sends them to
 *	stderr as well (foreground, -v); log_to_file() appends them to a
 *	file instead of syslog (tests, hosts without syslog), one write()
 *	per record so that parallel processes do not interleave;
 *	log_open_file() does the same with an error text.  Run by root
 *	they refuse a symbolic link, a file with several links or one of
 *	a third user, and give a new file to the [global] user
 *	(file_open_owned() in util.c).
 *	log_to_setting() applies a log_file setting ("syslog", "stderr"
 *	or a file name).
 *
 *	msg_debug() prints only when verbose.  Records are capped at
 *	LOG_MAX_RECORD bytes.  Foreign text must go through
 *	log_printable() first; tokens and secrets are never logged.
 *	msg_error_lines() logs every non-empty line of a text (the
 *	"file:line: problem" lines of conf_load()) as one error each.
 *
 *	msg_fatal() is for main-level code that cannot go on (the
 *	environment or the configuration is wrong): it logs the text as
 *	an error (priority LOG_CRIT, tag "error: " like msg_error(), so
 *	the same filters see it), runs the cleanup hook set with
 *	msg_cleanup() (say, remove a pid file), and exits with the given
 *	sysexits(3) code.  msg_panic() is for a bug: it logs "panic: "
 *	and calls abort() for a core dump (where dumps are allowed).
 *	Neither returns.
 * DIAGNOSTICS
 *	Library code never exits and never calls msg_fatal(); only main()
 *	and the functions of a program's own main file do (sysexits.h).
 */
#ifndef M365_LOG_H
#define M365_LOG_H

#include <stddef.h>

#define LOG_MAX_RECORD	2000

extern void log_open(const char *ident);
extern void log_to_stderr(int on);
extern int log_to_file(const char *path);
extern int log_open_file(const char *path, char *err, size_t errlen);
extern void log_to_setting(const char *log_file);
extern void log_set_verbose(int level);
extern int log_verbose(void);

extern void msg_info(const char *,...) __attribute__((format(printf, 1, 2)));
extern void msg_warn(const char *,...) __attribute__((format(printf, 1, 2)));
extern void msg_error(const char *,...) __attribute__((format(printf, 1, 2)));
extern void msg_debug(const char *,...) __attribute__((format(printf, 1, 2)));
extern void msg_fatal(int sysexit, const char *,...)
	    __attribute__((noreturn, format(printf, 2, 3)));
extern void msg_panic(const char *,...)
	    __attribute__((noreturn, format(printf, 1, 2)));
extern void msg_cleanup(void (*hook) (void));
extern void msg_error_lines(const char *text);

extern char *log_printable(char *buf, size_t bufsize, const char *text,
			           size_t textlen);

#endif
