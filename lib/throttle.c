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
#include "throttle.h"
#include "util.h"

/* throttle_path - state_dir/throttle/<mailbox, made file-name safe> */

static int throttle_path(const struct conf *conf, const char *mailbox,
			         char *buf, size_t len)
{
    size_t  n;
    char   *cp;

    if (snprintf(buf, len, "%s/throttle/", conf->state_dir) >= (int) len)
	return (-1);
    n = strlen(buf);
    if (snprintf(buf + n, len - n, "%s", mailbox) >= (int) (len - n))
	return (-1);
    for (cp = buf + n; *cp; cp++)
	if (*cp == '/' || *cp == '\\' || (*cp == '.' && cp == buf + n))
	    *cp = '_';
    return (0);
}

/* throttle_until - epoch second before which not to call Graph, or 0 */

time_t  throttle_until(const struct conf *conf, const char *mailbox)
{
    char    path[PATH_MAX];
    char    err[256];
    struct strbuf sb;
    long    until;
    time_t  now = time(NULL);

    if (throttle_path(conf, mailbox, path, sizeof(path)) < 0)
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

/* throttle_set - ask deliveries to wait secs seconds for this mailbox */

int     throttle_set(const struct conf *conf, const char *mailbox, long secs)
{
    char    path[PATH_MAX];
    char    dir[PATH_MAX];
    char    err[256];
    char    text[32];
    uid_t   uid = (uid_t) -1;
    gid_t   gid = (gid_t) -1;

    if (secs <= 0)
	return (0);
    if (secs > THROTTLE_MAX)
	secs = THROTTLE_MAX;
    snprintf(dir, sizeof(dir), "%s/throttle", conf->state_dir);
    if (mkdir_p(dir, 0700, err, sizeof(err)) < 0
	|| throttle_path(conf, mailbox, path, sizeof(path)) < 0) {
	msg_warn("cannot record Retry-After for %s: %s", mailbox, err);
	return (-1);
    }
    if (geteuid() == 0)
	(void) conf_user_ids(conf, &uid, &gid);
    snprintf(text, sizeof(text), "%ld\n", (long) time(NULL) + secs);
    if (file_write_atomic(path, text, strlen(text), 0600, uid, gid,
			  err, sizeof(err)) < 0) {
	msg_warn("cannot record Retry-After for %s: %s", mailbox, err);
	return (-1);
    }
    return (0);
}
