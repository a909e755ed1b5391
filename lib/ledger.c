/*
 * NAME
 *	ledger 3
 * SUMMARY
 *	the send ledger: one durable record per delivery, in state_dir
 * DESCRIPTION
 *	See ledger.h.  All file work goes through statefile.h (the one
 *	place that knows how root and the relay user share state_dir).
 *	The record is a small JSON object:
 *
 *	  {"version": 1, "state": "drafting", "mailbox": "...",
 *	   "message_id": "<...>", "recipients": N, "queue_id": "...",
 *	   "draft_id": "...", "request_id": "...",
 *	   "created": EPOCH, "updated": EPOCH}
 *
 *	The envelope recipients are in the key only (a hash): the record
 *	needs to be found again, not read back.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "json.h"
#include "ledger.h"
#include "log.h"
#include "statefile.h"
#include "util.h"

#define LEDGER_MAX_FILE	(64 * 1024)	/* a record is far smaller */
#define LEDGER_TAG_LEN	16		/* hex digits of the mailbox tag */

static const char *const ledger_states[] = {
    [LEDGER_NONE] = "none",
    [LEDGER_DRAFTING] = "drafting",
    [LEDGER_SENDING] = "sending",
    [LEDGER_SENT] = "sent",
    [LEDGER_FAILED] = "failed",
};

/* ledger_state_name - the state as written in a record */

const char *ledger_state_name(enum ledger_state st)
{
    return ((unsigned) st < sizeof(ledger_states) / sizeof(ledger_states[0])
	    ? ledger_states[st] : "none");
}

/* ledger_hex - SHA-256 of the parts (each followed by a NUL), in hex */

static int ledger_hex(const char *const *parts, size_t n, char *out,
		              size_t hexlen)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx;
    size_t  i;
    int     ok;

    if ((ctx = EVP_MD_CTX_new()) == NULL)
	return (-1);
    ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;
    for (i = 0; ok && i < n; i++)
	ok = EVP_DigestUpdate(ctx, parts[i], strlen(parts[i]) + 1) == 1;
    ok = ok && EVP_DigestFinal_ex(ctx, md, &mdlen) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok)
	return (-1);
    for (i = 0; i < mdlen && 2 * i + 1 < hexlen; i++) {
	out[2 * i] = hex[md[i] >> 4];
	out[2 * i + 1] = hex[md[i] & 15];
    }
    out[2 * i] = 0;
    return (0);
}

/* ledger_lower - a lower-case copy; free() it */

static char *ledger_lower(const char *s)
{
    char   *c = xstrdup(s ? s : ""), *p;

    for (p = c; *p; p++)
	if (*p >= 'A' && *p <= 'Z')
	    *p = (char) (*p - 'A' + 'a');
    return (c);
}

/* ledger_tag - the mailbox tag (LEDGER_TAG_LEN hex digits + NUL) */

static int ledger_tag(const char *mailbox, char *tag)
{
    char    hex[2 * EVP_MAX_MD_SIZE + 1];
    char   *mb = ledger_lower(mailbox);
    const char *parts[2];

    parts[0] = "m365relay-mailbox-v1";
    parts[1] = mb;
    if (ledger_hex(parts, 2, hex, sizeof(hex)) < 0) {
	free(mb);
	return (-1);
    }
    free(mb);
    memcpy(tag, hex, LEDGER_TAG_LEN);
    tag[LEDGER_TAG_LEN] = 0;
    return (0);
}

/* ledger_cmp - qsort() of strings */

static int ledger_cmp(const void *a, const void *b)
{
    return (strcmp(*(char *const *) a, *(char *const *) b));
}

/*
 * ledger_key - the record name of a delivery (see ledger.h): mailbox,
 * Message-ID (NULL: a hash of hdr stands in), envelope recipients.
 */
int     ledger_key(const char *mailbox, const char *message_id,
		           const char *hdr, size_t hdrlen,
		           char *const *rcpts, size_t nrcpts,
		           char *name, size_t len)
{
    char    tag[LEDGER_TAG_LEN + 1];
    char    key[2 * EVP_MAX_MD_SIZE + 1];
    char    hdrkey[2 * EVP_MAX_MD_SIZE + 8];
    const char **parts;
    char  **low;
    char   *hcopy;
    size_t  i, n = 0;
    int     rc;

    if (ledger_tag(mailbox, tag) < 0)
	return (-1);
    if (message_id == NULL || *message_id == 0) {
	const char *hp[1];

	hcopy = xstrndup(hdr ? hdr : "", hdrlen);
	hp[0] = hcopy;
	rc = ledger_hex(hp, 1, key, sizeof(key));
	free(hcopy);
	if (rc < 0)
	    return (-1);
	snprintf(hdrkey, sizeof(hdrkey), "hdr:%s", key);
	message_id = hdrkey;
    }
    low = xcalloc(nrcpts + 1, sizeof(*low));
    for (i = 0; i < nrcpts; i++)
	low[i] = ledger_lower(rcpts[i]);
    qsort(low, nrcpts, sizeof(*low), ledger_cmp);
    parts = xcalloc(nrcpts + 3, sizeof(*parts));
    parts[n++] = "m365relay-ledger-v1";
    parts[n++] = tag;				/* the mailbox, lower case */
    parts[n++] = message_id;
    for (i = 0; i < nrcpts; i++)
	parts[n++] = low[i];
    rc = ledger_hex(parts, n, key, sizeof(key));
    for (i = 0; i < nrcpts; i++)
	free(low[i]);
    free(low);
    free(parts);
    if (rc < 0 || (size_t) snprintf(name, len, "%s-%s", tag, key) >= len)
	return (-1);
    return (0);
}

/* ledger_set - replace a string field (NULL clears it) */

void    ledger_set(char **field, const char *value)
{
    free(*field);
    *field = value && *value ? xstrdup(value) : NULL;
}

/* ledger_clear - release the strings, keep name and lock */

static void ledger_clear(struct ledger_rec *r)
{
    free(r->mailbox);
    free(r->message_id);
    free(r->queue_id);
    free(r->draft_id);
    free(r->request_id);
    r->mailbox = r->message_id = r->queue_id = NULL;
    r->draft_id = r->request_id = NULL;
    r->state = LEDGER_NONE;
    r->nrcpts = 0;
    r->created = r->updated = 0;
}

/* ledger_load - read the record of r->name; 0 (also: none), -1 */

static int ledger_load(const struct conf *conf, struct ledger_rec *r,
		               char *err, size_t errlen)
{
    char    path[PATH_MAX];
    cJSON  *root = NULL;
    char   *state;
    int     rc, i;

    ledger_clear(r);
    if (statefile_path_err(conf, STATEFILE_LEDGER, r->name, ".json", path,
			   sizeof(path), err, errlen) < 0)
	return (-1);
    rc = json_file_load(path, "ledger record", LEDGER_MAX_FILE, 0, &root,
			err, errlen);
    if (rc == 0)
	return (0);
    if (rc == -2) {
	msg_warn("ledger record %s is damaged (not a JSON object); "
		 "treating the delivery as new", path);
	return (0);
    }
    if (rc < 0)
	return (-1);
    state = json_get_str(root, "state");
    for (i = 1; state && i < (int) (sizeof(ledger_states)
				    / sizeof(ledger_states[0])); i++)
	if (strcmp(state, ledger_states[i]) == 0)
	    r->state = (enum ledger_state) i;
    free(state);
    r->mailbox = json_get_str(root, "mailbox");
    r->message_id = json_get_str(root, "message_id");
    r->queue_id = json_get_str(root, "queue_id");
    r->draft_id = json_get_str(root, "draft_id");
    r->request_id = json_get_str(root, "request_id");
    r->nrcpts = (long) json_get_num(root, "recipients");
    r->created = (time_t) json_get_num(root, "created");
    r->updated = (time_t) json_get_num(root, "updated");
    cJSON_Delete(root);
    return (0);
}

/*
 * ledger_lock - lock NAME.lock; a lock file that was removed while we
 * waited (ledger_forget() of its owner) is left for the new one
 */
static int ledger_lock(const struct conf *conf, const char *name,
		               double max_wait, char *err, size_t errlen)
{
    struct stat st;
    int     fd, tries;

    for (tries = 0; tries < 5; tries++) {
	fd = statefile_lock(conf, STATEFILE_LEDGER, name, ".lock", max_wait,
			    err, errlen);
	if (fd < 0)
	    return (fd);
	if (fstat(fd, &st) == 0 && st.st_nlink > 0)
	    return (fd);
	statefile_unlock(fd);
    }
    snprintf(err, errlen, "the lock of ledger record %s keeps being "
	     "removed by another process", name);
    return (-1);
}

/* ledger_open - lock and read a record; see ledger.h */

int     ledger_open(const struct conf *conf, const char *name,
		            double max_wait, struct ledger_rec *r,
		            char *err, size_t errlen)
{
    memset(r, 0, sizeof(*r));
    r->lock_fd = -1;
    if (snprintf(r->name, sizeof(r->name), "%s", name)
	>= (int) sizeof(r->name)) {
	snprintf(err, errlen, "ledger record name too long: %s", name);
	return (-1);
    }
    if ((r->lock_fd = ledger_lock(conf, name, max_wait, err, errlen)) < 0) {
	int     rc = r->lock_fd;

	r->lock_fd = -1;
	return (rc);
    }
    if (ledger_load(conf, r, err, errlen) < 0) {
	ledger_close(r);
	return (-1);
    }
    return (0);
}

/* ledger_save - write the record durably (updated = now) */

int     ledger_save(const struct conf *conf, struct ledger_rec *r,
		            char *err, size_t errlen)
{
    cJSON  *root = cJSON_CreateObject();
    char   *text;
    int     rc;
    time_t  now = time(NULL);

    if (r->created == 0)
	r->created = now;
    r->updated = now;
    if (root == NULL
	|| cJSON_AddNumberToObject(root, "version", 1) == NULL
	|| json_add_str(root, "state", ledger_state_name(r->state)) < 0
	|| json_add_str(root, "mailbox", r->mailbox) < 0
	|| json_add_str(root, "message_id", r->message_id) < 0
	|| cJSON_AddNumberToObject(root, "recipients", (double) r->nrcpts) == NULL
	|| json_add_str(root, "queue_id", r->queue_id) < 0
	|| json_add_str(root, "draft_id", r->draft_id) < 0
	|| json_add_str(root, "request_id", r->request_id) < 0
	|| cJSON_AddNumberToObject(root, "created", (double) r->created) == NULL
	|| cJSON_AddNumberToObject(root, "updated", (double) r->updated) == NULL
	|| (text = cJSON_PrintUnformatted(root)) == NULL) {
	cJSON_Delete(root);
	snprintf(err, errlen, "cannot build ledger record %s: out of memory",
		 r->name);
	return (-1);
    }
    cJSON_Delete(root);
    rc = statefile_write(conf, STATEFILE_LEDGER, r->name, ".json", text,
			 strlen(text), err, errlen);
    free(text);
    return (rc);
}

/* ledger_forget - remove record and lock file (the lock is held) */

int     ledger_forget(const struct conf *conf, struct ledger_rec *r,
		              char *err, size_t errlen)
{
    if (statefile_remove(conf, STATEFILE_LEDGER, r->name, ".json", err,
			 errlen) < 0)
	return (-1);
    return (statefile_remove(conf, STATEFILE_LEDGER, r->name, ".lock", err,
			     errlen));
}

/* ledger_close - release the lock and the strings; twice is fine */

void    ledger_close(struct ledger_rec *r)
{
    statefile_unlock(r->lock_fd);
    r->lock_fd = -1;
    ledger_clear(r);
}

/* ledger_stale_lock - a lock file without a record, older than LEDGER_EXPIRY */

static void ledger_stale_lock(const struct conf *conf, int dfd,
			              const char *name, time_t now)
{
    char    file[NAME_MAX + 8];
    char    err[512];
    struct stat st;
    struct ledger_rec r;

    snprintf(file, sizeof(file), "%s.json", name);
    if (fstatat(dfd, file, &st, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT)
	return;
    snprintf(file, sizeof(file), "%s.lock", name);
    if (fstatat(dfd, file, &st, AT_SYMLINK_NOFOLLOW) < 0
	|| st.st_mtime > now - LEDGER_EXPIRY)
	return;
    if (ledger_open(conf, name, 0, &r, err, sizeof(err)) < 0)
	return;
    if (r.state == LEDGER_NONE
	&& statefile_remove(conf, STATEFILE_LEDGER, name, ".lock", err,
			    sizeof(err)) < 0)
	msg_warn("%s", err);
    ledger_close(&r);
}

/* ledger_orphans - the unowned records of one mailbox; see ledger.h */

int     ledger_orphans(const struct conf *conf, const char *mailbox,
		               int (*fn) (void *, struct ledger_rec *),
		               void *arg, char *err, size_t errlen)
{
    char    tag[LEDGER_TAG_LEN + 1];
    char    name[NAME_MAX + 1];
    struct ledger_rec r;
    struct dirent *de;
    DIR    *dir;
    size_t  n;
    int     dfd, rc, count = 0;
    time_t  now = time(NULL);

    if (ledger_tag(mailbox, tag) < 0) {
	snprintf(err, errlen, "cannot hash the mailbox name (OpenSSL)");
	return (-1);
    }
    if ((dfd = statefile_dir(conf, STATEFILE_LEDGER, STATEFILE_EXISTING,
			     err, errlen)) < 0)
	return (errno == ENOENT ? 0 : -1);
    if ((dir = fdopendir(dfd)) == NULL) {
	snprintf(err, errlen, "cannot read the ledger directory %s/ledger: %s",
		 conf->state_dir, strerror(errno));
	close(dfd);
	return (-1);
    }
    while ((de = readdir(dir)) != NULL) {
	n = strlen(de->d_name);
	if (n <= LEDGER_TAG_LEN + 6 || strncmp(de->d_name, tag,
					       LEDGER_TAG_LEN) != 0
	    || de->d_name[LEDGER_TAG_LEN] != '-' || n - 5 >= sizeof(name))
	    continue;
	memcpy(name, de->d_name, n - 5);
	name[n - 5] = 0;
	if (strcmp(de->d_name + n - 5, ".lock") == 0) {
	    ledger_stale_lock(conf, dirfd(dir), name, now);
	    continue;
	}
	if (strcmp(de->d_name + n - 5, ".json") != 0)
	    continue;
	/* Taken at once, or owned by a living process: skip it. */
	if ((rc = ledger_open(conf, name, 0, &r, err, errlen)) == -2)
	    continue;
	if (rc < 0) {
	    msg_warn("ledger: %s", err);
	    continue;
	}
	if (r.state == LEDGER_DRAFTING || r.state == LEDGER_SENDING) {
	    count++;
	    (void) fn(arg, &r);
	} else if (r.updated < now - LEDGER_EXPIRY
		   && ledger_forget(conf, &r, err, errlen) < 0) {
	    msg_warn("ledger: %s", err);
	}
	ledger_close(&r);
    }
    closedir(dir);
    return (count);
}
