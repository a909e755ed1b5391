/*
 * NAME
 *	log 3
 * SUMMARY
 *	diagnostics: one line per event, to syslog, a file or stderr
 * DESCRIPTION
 *	See log.h.  File records carry a timestamp, the program name and
 *	the pid, like Postfix's maillog_file: "Nov 28 10:12:09 host
 *	m365-relay[123]: text".
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

static const char *log_ident = "m365relay";
static int log_stderr;
static int log_fd = -1;
static int log_level;
static int log_syslog_open;
static void (*log_cleanup_hook) (void);

/* log_open - name the program */

void    log_open(const char *ident)
{
    const char *slash = strrchr(ident, '/');

    log_ident = slash ? slash + 1 : ident;
}

/* log_to_stderr - also write records to stderr */

void    log_to_stderr(int on)
{
    log_stderr = on;
}

/*
 * log_open_file - append records to a file instead of syslog.  Run by
 * root (the milter before it drops privileges, m365ctl) the file is
 * opened like a lock file (file_open_owned()): a symbolic link, a file
 * with several links or of a third user is refused, and a file that root
 * creates goes to the [global] user, who appends to it later.
 */
int     log_open_file(const char *path, char *err, size_t errlen)
{
    uid_t   uid;
    gid_t   gid;
    int     fd;

    if (geteuid() == 0) {
	(void) file_service_ids(&uid, &gid);
	fd = file_open_owned(AT_FDCWD, path, path, "log file",
			     O_WRONLY | O_APPEND | O_CREAT, 0640, uid, gid,
			     FILE_DEVICE_OK, err, errlen);
    } else if ((fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
			  0640)) < 0) {
	snprintf(err, errlen, "cannot open log file %s: %s", path,
		 strerror(errno));
    }
    if (fd < 0)
	return (-1);
    if (log_fd >= 0)
	close(log_fd);
    log_fd = fd;
    return (0);
}

/* log_to_file - log_open_file() without the error text (errno is set) */

int     log_to_file(const char *path)
{
    char    err[512];

    return (log_open_file(path, err, sizeof(err)));
}

/*
 * log_to_setting - apply a log_file setting: NULL or "syslog" (keep),
 * "stderr", or a file (on failure a warning, and syslog stays).
 */
void    log_to_setting(const char *log_file)
{
    char    err[512];

    if (log_file == NULL || strcmp(log_file, "syslog") == 0)
	return;
    if (strcmp(log_file, "stderr") == 0)
	log_to_stderr(1);
    else if (log_open_file(log_file, err, sizeof(err)) < 0)
	msg_warn("%s; using syslog", err);
}

/* log_set_verbose - enable msg_debug() */

void    log_set_verbose(int level)
{
    log_level = level;
}

int     log_verbose(void)
{
    return (log_level);
}

/* log_vrecord - format and emit one record */

static void log_vrecord(int, const char *, const char *, va_list)
	    __attribute__((format(printf, 3, 0)));

static void log_vrecord(int prio, const char *tag, const char *fmt, va_list ap)
{
    char    text[LOG_MAX_RECORD];
    char    line[LOG_MAX_RECORD + 200];
    char    stamp[64];
    char    host[128];
    time_t  now;
    struct tm tm;
    int     n;
    int     saved_errno = errno;

    vsnprintf(text, sizeof(text), fmt, ap);
    /* One record is one line. */
    for (char *cp = text; *cp; cp++)
	if (*cp == '\n' || *cp == '\r')
	    *cp = ' ';

    if (log_fd >= 0 || log_stderr) {
	now = time(NULL);
	localtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%b %e %H:%M:%S", &tm);
	if (gethostname(host, sizeof(host)) < 0)
	    snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = 0;
	n = snprintf(line, sizeof(line), "%s %s %s[%ld]: %s%s\n", stamp, host,
		     log_ident, (long) getpid(), tag, text);
	if (n > (int) sizeof(line) - 1)
	    n = (int) sizeof(line) - 1;
	if (log_fd >= 0 && write(log_fd, line, (size_t) n) < 0) {
	    /* Nowhere else to report it. */
	}
	if (log_stderr)
	    fprintf(stderr, "%s: %s%s\n", log_ident, tag, text);
    }
    if (log_fd < 0) {
	if (!log_syslog_open) {
	    openlog(log_ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
	    log_syslog_open = 1;
	}
	syslog(prio, "%s%s", tag, text);
    }
    errno = saved_errno;
}

void    msg_info(const char *fmt,...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vrecord(LOG_INFO, "", fmt, ap);
    va_end(ap);
}

void    msg_warn(const char *fmt,...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vrecord(LOG_WARNING, "warning: ", fmt, ap);
    va_end(ap);
}

void    msg_error(const char *fmt,...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vrecord(LOG_ERR, "error: ", fmt, ap);
    va_end(ap);
}

void    msg_debug(const char *fmt,...)
{
    va_list ap;

    if (log_level <= 0)
	return;
    va_start(ap, fmt);
    log_vrecord(LOG_DEBUG, "debug: ", fmt, ap);
    va_end(ap);
}

/* msg_cleanup - what msg_fatal() runs before it exits; NULL: nothing */

void    msg_cleanup(void (*hook) (void))
{
    log_cleanup_hook = hook;
}

/*
 * msg_fatal - log an error, run the cleanup hook, exit with sysexit.  A
 * hook that fails fatally itself does not run again.
 */
void    msg_fatal(int sysexit, const char *fmt,...)
{
    static int dying;
    va_list ap;

    va_start(ap, fmt);
    log_vrecord(LOG_CRIT, "error: ", fmt, ap);
    va_end(ap);
    if (!dying++ && log_cleanup_hook != NULL)
	log_cleanup_hook();
    exit(sysexit);
}

/* msg_panic - log a bug and dump core */

void    msg_panic(const char *fmt,...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vrecord(LOG_CRIT, "panic: ", fmt, ap);
    va_end(ap);
    abort();
}

/* msg_error_lines - log every non-empty line of text as an error */

void    msg_error_lines(const char *text)
{
    const char *cp, *nl;
    size_t  len;

    for (cp = text; cp != NULL && *cp != 0; cp = nl ? nl + 1 : NULL) {
	nl = strchr(cp, '\n');
	len = nl ? (size_t) (nl - cp) : strlen(cp);
	if (len > LOG_MAX_RECORD)
	    len = LOG_MAX_RECORD;
	if (len > 0)
	    msg_error("%.*s", (int) len, cp);
    }
}

/*
 * log_printable - copy foreign text for logging: control and non-ASCII
 * bytes become '?', at most bufsize-1 bytes (a "..." marks truncation).
 */
char   *log_printable(char *buf, size_t bufsize, const char *text, size_t textlen)
{
    size_t  i, o = 0;

    if (bufsize == 0)
	return (buf);
    for (i = 0; i < textlen && o + 1 < bufsize; i++) {
	unsigned char c = (unsigned char) text[i];

	buf[o++] = (c >= 0x20 && c < 0x7f) ? (char) c : '?';
    }
    buf[o] = 0;
    if (i < textlen && bufsize > 4)
	memcpy(buf + bufsize - 4, "...", 4);
    return (buf);
}
