/*
 * NAME
 *	throttle 3
 * SUMMARY
 *	remember Retry-After per mailbox across deliveries
 * DESCRIPTION
 *	See throttle.h.  The state is one small file per mailbox holding
 *	the epoch second until which Graph asked us to wait.  A missing or
 *	unreadable file means "not throttled": the worst case is one
 *	request too many, which Graph answers with another 429.
 */
#include "config.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"
#include "statefile.h"
#include "throttle.h"
#include "util.h"

/* throttle_name - the mailbox made a safe file name (statefile.h) */

static int throttle_name(const char *mailbox, char *buf, size_t len)
{
    char   *cp;

    if (mailbox == NULL || *mailbox == 0
	|| snprintf(buf, len, "%s", mailbox) >= (int) len)
	return (-1);
    for (cp = buf; *cp; cp++)
	if (*cp == '/' || *cp == '\\' || (*cp == '.' && cp == buf))
	    *cp = '_';
    return (0);
}

/* throttle_until - epoch second before which not to call Graph, or 0 */

time_t  throttle_until(const struct conf *conf, const char *mailbox)
{
    char    name[NAME_MAX + 1];
    char    path[PATH_MAX];
    char    err[256];
    struct strbuf sb;
    long    until;
    time_t  now = time(NULL);

    if (throttle_name(mailbox, name, sizeof(name)) < 0
	|| statefile_path(conf, STATEFILE_THROTTLE, name, NULL, path,
			  sizeof(path)) < 0)
	return (0);
    if (access(path, F_OK) < 0)
	return (0);
    if (file_read(path, 64, &sb, err, sizeof(err)) < 0)
	return (0);
    while (sb.len > 0 && (sb.data[sb.len - 1] == '\n'))
	strbuf_truncate(&sb, sb.len - 1);
    if (parse_long(strbuf_str(&sb), 0, LONG_MAX, &until) < 0)
	until = 0;
    strbuf_free(&sb);
    if (until <= now)
	return (0);
    if (until > now + THROTTLE_MAX)
	until = now + THROTTLE_MAX;
    return ((time_t) until);
}

/*
 * throttle_set - ask deliveries to wait secs seconds for this mailbox.
 * The file is written relative to the opened throttle directory
 * (statefile_write()): as root, a directory or link the relay user put
 * there is not followed.
 */
int     throttle_set(const struct conf *conf, const char *mailbox, long secs)
{
    char    name[NAME_MAX + 1];
    char    err[512];
    char    text[32];

    if (secs <= 0)
	return (0);
    if (secs > THROTTLE_MAX)
	secs = THROTTLE_MAX;
    if (throttle_name(mailbox, name, sizeof(name)) < 0) {
	msg_warn("cannot record Retry-After for %s: the mailbox name is "
		 "empty or longer than %d bytes", mailbox ? mailbox : "",
		 NAME_MAX);
	return (-1);
    }
    snprintf(text, sizeof(text), "%ld\n", (long) time(NULL) + secs);
    if (statefile_write(conf, STATEFILE_THROTTLE, name, NULL, text,
			strlen(text), err, sizeof(err)) < 0) {
	msg_warn("cannot record Retry-After for %s: %s", mailbox, err);
	return (-1);
    }
    return (0);
}
