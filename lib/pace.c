/*
 * NAME
 *	pace 3
 * SUMMARY
 *	pace uploads per app and mailbox across processes
 * DESCRIPTION
 *	See pace.h.  A sliding window: the bookings of the last
 *	CONF_UPLOAD_WINDOW seconds are kept (at most PACE_MAX_ENTRIES;
 *	older ones are dropped when the file is rewritten).  To book n
 *	bytes when they do not fit, the process waits until the oldest
 *	bookings have left the window and the rest plus n fits, then tries
 *	again (another process may have booked in between).  A booking is
 *	made before its request leaves; Graph counts a body when it
 *	arrives, so a wait lasts PACE_MARGIN_MS longer than the window.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "log.h"
#include "pace.h"
#include "statefile.h"
#include "util.h"

#define PACE_MAX_ENTRIES	256
#define PACE_LOCK_WAIT		10.0	/* seconds for the budget file lock */
#define PACE_MARGIN_MS		1000	/* the server counts from arrival */

struct pace_entry {
    long long ms;			/* wall clock, milliseconds */
    long long bytes;
};

/* pace_name - "upload-HASH": the budget of (client_id, mailbox) */

static int pace_name(const char *client_id, const char *mailbox,
		             char *buf, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0, i;
    struct strbuf sb;
    char   *p;
    int     ok;

    strbuf_init(&sb, STRBUF_MAX_SMALL);
    strbuf_printf(&sb, "%s %s", client_id ? client_id : "",
		  mailbox ? mailbox : "");
    for (p = sb.data; p && *p; p++)
	if (*p >= 'A' && *p <= 'Z')
	    *p = (char) (*p - 'A' + 'a');
    ok = !strbuf_failed(&sb)
	&& EVP_Digest(sb.data, sb.len, md, &mdlen, EVP_sha256(), NULL) == 1;
    strbuf_free(&sb);
    if (!ok || len < 7 + 32 + 1)
	return (-1);
    memcpy(buf, "upload-", 7);
    for (i = 0; i < 16 && i < mdlen; i++) {
	buf[7 + 2 * i] = hex[md[i] >> 4];
	buf[8 + 2 * i] = hex[md[i] & 15];
    }
    buf[7 + 32] = 0;
    return (0);
}

/* pace_read - the bookings in the file (fd at any offset); count */

static int pace_read(int fd, struct pace_entry *e, int max)
{
    char    buf[PACE_MAX_ENTRIES * 48];
    ssize_t got;
    char   *p, *end, *nl;
    int     n = 0;

    got = pread(fd, buf, sizeof(buf) - 1, 0);
    if (got <= 0)
	return (0);
    buf[got] = 0;
    for (p = buf; n < max && (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
	e[n].ms = strtoll(p, &end, 10);
	if (end == p || *end != ' ')
	    continue;
	e[n].bytes = strtoll(end + 1, &end, 10);
	if (end != nl || e[n].bytes < 0)
	    continue;
	n++;
    }
    return (n);
}

/* pace_write - replace the file's content with the bookings */

static int pace_write(int fd, const struct pace_entry *e, int n)
{
    char    buf[PACE_MAX_ENTRIES * 48];
    size_t  len = 0;
    int     i;

    for (i = 0; i < n; i++)
	len += (size_t) snprintf(buf + len, sizeof(buf) - len, "%lld %lld\n",
				 e[i].ms, e[i].bytes);
    if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, len, 0) != (ssize_t) len)
	return (-1);
    return (0);
}

/*
 * pace_book - under the lock: book bytes now and return 0, or return
 * the milliseconds to wait before trying again
 */
static long long pace_book(int fd, long long budget, long long bytes,
			           long long now, int *werr)
{
    struct pace_entry e[PACE_MAX_ENTRIES + 1];
    long long window = CONF_UPLOAD_WINDOW * 1000LL, sum = 0, freed;
    int     n, k = 0, i;

    n = pace_read(fd, e, PACE_MAX_ENTRIES);
    /* Keep the bookings still in the window (and none from the future). */
    for (i = 0; i < n; i++)
	if (e[i].ms > now - window && e[i].ms <= now + window)
	    e[k++] = e[i];
    n = k;
    for (i = 0; i < n; i++)
	sum += e[i].bytes;
    if (n == 0 || (sum + bytes <= budget && n < PACE_MAX_ENTRIES)) {
	e[n].ms = now;
	e[n].bytes = bytes;
	*werr = pace_write(fd, e, n + 1) < 0 ? errno : 0;
	return (0);
    }
    /* The bookings are in time order: free the oldest until it fits. */
    for (freed = 0, i = 0; i < n - 1; i++) {
	freed += e[i].bytes;
	if (sum - freed + bytes <= budget)
	    break;
    }
    return (e[i].ms + window - now + PACE_MARGIN_MS);
}

/* pace_reserve - book bytes of the upload budget; see pace.h */

int     pace_reserve(const struct conf *conf, const char *client_id,
		             const char *mailbox, long long bytes,
		             double max_wait, struct m365_result *res)
{
    char    name[64];
    char    err[512];
    double  start = time_mono();
    long long wait_ms;
    struct timespec ts;
    int     fd, werr = 0;

    if (bytes <= 0 || conf->upload_budget <= 0)
	return (0);
    if (pace_name(client_id, mailbox, name, sizeof(name)) < 0) {
	result_set(res, M365_SYSTEM, "4.3.0", "cannot name the upload budget "
		   "file of mailbox %s (OpenSSL SHA-256 failed)", mailbox);
	return (-1);
    }
    for (;;) {
	fd = statefile_lock(conf, STATEFILE_THROTTLE, name, ".budget",
			    PACE_LOCK_WAIT, err, sizeof(err));
	if (fd < 0) {
	    result_set(res, M365_SYSTEM, "4.3.0", "cannot use the upload "
		       "budget of mailbox %s: %s", mailbox, err);
	    return (-1);
	}
	wait_ms = pace_book(fd, conf->upload_budget, bytes,
			    (long long) (time_now() * 1000), &werr);
	statefile_unlock(fd);
	if (wait_ms == 0) {
	    if (werr)
		msg_warn("cannot record an upload of mailbox %s in %s/throttle/"
			 "%s.budget: %s; other processes will not wait for it",
			 mailbox, conf->state_dir, name, strerror(werr));
	    return (0);
	}
	if (time_mono() - start + wait_ms / 1000.0 > max_wait) {
	    result_set(res, M365_TEMP, "4.7.0", "the upload budget of mailbox "
		       "%s (%ld bytes per %d s for this app, Microsoft 365's "
		       "limit) is used up for longer than %.0f s by other "
		       "deliveries; deferring instead of provoking 429 "
		       "replies", mailbox, conf->upload_budget,
		       CONF_UPLOAD_WINDOW, max_wait);
	    return (-1);
	}
	if (log_verbose() > 0)
	    msg_debug("pace: mailbox %s: waiting %.1f s for upload budget "
		      "(%lld bytes)", mailbox, wait_ms / 1000.0, bytes);
	ts.tv_sec = (time_t) (wait_ms / 1000);
	ts.tv_nsec = (long) (wait_ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
	     /* void */ ;
    }
}
