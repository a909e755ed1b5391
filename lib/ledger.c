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
 *	  {"version": 1, "state": "drafting", "path": "draft",
 *	   "mailbox": "...", "message_id": "<...>", "recipients": N,
 *	   "queue_id": "...", "draft_id": "...", "request_id": "...",
 *	   "digest": "...", "created": EPOCH, "updated": EPOCH,
 *	   "attempted": EPOCH, "sender": "...", "rcpts": ["...", ...]}
 *
 *	The envelope recipients are in the key (a hash), so that the
 *	record is found again, and in "rcpts" with "sender" ("" for <>),
 *	so that a non-delivery report can be returned to the sender
 *	(issue 12; a record of an older version has neither).
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
#include "msg.h"
#include "statefile.h"
#include "util.h"

#define LEDGER_MAX_FILE	(64 * 1024)	/* a record is far smaller */
#define LEDGER_RCPTS_MAX	(32 * 1024)	/* bytes of recorded recipients */
#define LEDGER_TAG_LEN	16		/* hex digits of the mailbox tag */
#define LEDGER_KEY_LEN	(LEDGER_TAG_LEN + 1 + 64)	/* MBTAG-KEY */
#define LEDGER_STAMP	"expire"	/* expire.stamp: the last walk */

static const char *const ledger_states[] = {
    [LEDGER_NONE] = "none",
    [LEDGER_DRAFTING] = "drafting",
    [LEDGER_SENDING] = "sending",
    [LEDGER_SENT] = "sent",
    [LEDGER_FAILED] = "failed",
    [LEDGER_AMBIGUOUS] = "ambiguous",
};

static const char *const ledger_paths[] = {
    [LEDGER_PATH_SENDMAIL] = "sendmail",
    [LEDGER_PATH_DRAFT] = "draft",
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

/* ledger_free_rcpts - release the recorded recipients */

static void ledger_free_rcpts(struct ledger_rec *r)
{
    char  **p;

    for (p = r->rcpts; p && *p; p++)
	free(*p);
    free(r->rcpts);
    r->rcpts = NULL;
}

/* ledger_set_envelope - record sender ("" for <>) and recipients */

void    ledger_set_envelope(struct ledger_rec *r, const char *sender,
			            char *const *rcpts, size_t nrcpts)
{
    size_t  i;

    free(r->sender);
    r->sender = xstrdup(sender ? sender : "");
    ledger_free_rcpts(r);
    r->rcpts = xcalloc(nrcpts + 1, sizeof(*r->rcpts));
    for (i = 0; i < nrcpts; i++)
	r->rcpts[i] = xstrdup(rcpts[i]);
    r->nrcpts = (long) nrcpts;
}

/* ledger_clear - release the strings, keep name and lock */

static void ledger_clear(struct ledger_rec *r)
{
    free(r->mailbox);
    free(r->message_id);
    free(r->queue_id);
    free(r->draft_id);
    free(r->request_id);
    free(r->digest);
    free(r->sender);
    ledger_free_rcpts(r);
    r->mailbox = r->message_id = r->queue_id = NULL;
    r->draft_id = r->request_id = r->digest = r->sender = NULL;
    r->state = LEDGER_NONE;
    r->path = LEDGER_PATH_SENDMAIL;
    r->nrcpts = 0;
    r->created = r->updated = r->attempted = 0;
    r->marked = 0;
}

/* ledger_wants_mark - does the record need its NAME.draft marker? */

static int ledger_wants_mark(const struct ledger_rec *r)
{
    return ((r->path == LEDGER_PATH_DRAFT || r->draft_id != NULL)
	    && (r->state == LEDGER_DRAFTING || r->state == LEDGER_SENDING
		|| r->state == LEDGER_AMBIGUOUS));
}

/* ledger_load_envelope - "sender" and "rcpts", when recorded */

static void ledger_load_envelope(const cJSON *root, struct ledger_rec *r)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "sender");
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "rcpts");
    const cJSON *item;
    long    n = 0;

    if (!cJSON_IsString(v) || v->valuestring == NULL || !cJSON_IsArray(list))
	return;
    r->sender = xstrdup(v->valuestring);
    r->rcpts = xcalloc((size_t) cJSON_GetArraySize(list) + 1,
		       sizeof(*r->rcpts));
    cJSON_ArrayForEach(item, list)
	if (cJSON_IsString(item) && item->valuestring)
	    r->rcpts[n++] = xstrdup(item->valuestring);
    r->nrcpts = n;
}

/* ledger_add_envelope - "sender" and "rcpts" into a record; 0 or -1 */

static int ledger_add_envelope(cJSON *root, const struct ledger_rec *r)
{
    cJSON  *list;
    char  **p;
    size_t  used = 0;

    if (r->sender == NULL || r->rcpts == NULL)
	return (0);
    if (cJSON_AddStringToObject(root, "sender", r->sender) == NULL
	|| (list = cJSON_AddArrayToObject(root, "rcpts")) == NULL)
	return (-1);
    for (p = r->rcpts; *p; p++) {
	/* The record must stay readable (LEDGER_MAX_FILE): cut the list. */
	if ((used += strlen(*p) + 4) > LEDGER_RCPTS_MAX)
	    return (cJSON_AddTrueToObject(root, "rcpts_cut") ? 0 : -1);
	if (!cJSON_AddItemToArray(list, cJSON_CreateString(*p)))
	    return (-1);
    }
    return (0);
}

/* ledger_load - read the record of r->name; 0 (also: none), -1 */

static int ledger_load(const struct conf *conf, struct ledger_rec *r,
		               char *err, size_t errlen)
{
    char    path[PATH_MAX];
    cJSON  *root = NULL;
    char   *state, *path_name;
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
    if ((path_name = json_get_str(root, "path")) != NULL
	&& strcmp(path_name, ledger_paths[LEDGER_PATH_DRAFT]) == 0)
	r->path = LEDGER_PATH_DRAFT;
    free(path_name);
    r->mailbox = json_get_str(root, "mailbox");
    r->message_id = json_get_str(root, "message_id");
    r->queue_id = json_get_str(root, "queue_id");
    r->draft_id = json_get_str(root, "draft_id");
    r->request_id = json_get_str(root, "request_id");
    r->digest = json_get_str(root, "digest");
    r->nrcpts = (long) json_get_num(root, "recipients");
    ledger_load_envelope(root, r);
    r->created = (time_t) json_get_num(root, "created");
    r->updated = (time_t) json_get_num(root, "updated");
    r->attempted = (time_t) json_get_num(root, "attempted");
    /* The marker is written before, removed after such a record. */
    r->marked = ledger_wants_mark(r);
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

/*
 * ledger_save - write the record durably (updated = now).  A marker
 * NAME.draft goes before a record that needs it, and is removed after
 * a record that no longer does: a crash in between leaves a marker too
 * many, which ledger_orphans() removes, never one too few.
 */
int     ledger_save(const struct conf *conf, struct ledger_rec *r,
		            char *err, size_t errlen)
{
    cJSON  *root;
    char   *text;
    int     rc, want = ledger_wants_mark(r);
    time_t  now = time(NULL);

    if (want && !r->marked) {
	if (statefile_write(conf, STATEFILE_LEDGER, r->name, ".draft", "", 0,
			    err, errlen) < 0)
	    return (-1);
	r->marked = 1;
    }
    root = cJSON_CreateObject();

    if (r->created == 0)
	r->created = now;
    r->updated = now;
    if (root == NULL
	|| cJSON_AddNumberToObject(root, "version", 1) == NULL
	|| json_add_str(root, "state", ledger_state_name(r->state)) < 0
	|| json_add_str(root, "path", ledger_paths[r->path ==
					    LEDGER_PATH_DRAFT]) < 0
	|| json_add_str(root, "mailbox", r->mailbox) < 0
	|| json_add_str(root, "message_id", r->message_id) < 0
	|| cJSON_AddNumberToObject(root, "recipients", (double) r->nrcpts) == NULL
	|| json_add_str(root, "queue_id", r->queue_id) < 0
	|| json_add_str(root, "draft_id", r->draft_id) < 0
	|| json_add_str(root, "request_id", r->request_id) < 0
	|| json_add_str(root, "digest", r->digest) < 0
	|| cJSON_AddNumberToObject(root, "created", (double) r->created) == NULL
	|| cJSON_AddNumberToObject(root, "updated", (double) r->updated) == NULL
	|| cJSON_AddNumberToObject(root, "attempted",
				   (double) r->attempted) == NULL
	|| ledger_add_envelope(root, r) < 0
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
    if (rc == 0 && !want && r->marked) {
	if (statefile_remove(conf, STATEFILE_LEDGER, r->name, ".draft", err,
			     errlen) < 0)
	    msg_warn("ledger: %s", err);	/* ledger_orphans() retries */
	else
	    r->marked = 0;
    }
    return (rc);
}

/* ledger_forget - remove record, marker, lock file (the lock is held) */

int     ledger_forget(const struct conf *conf, struct ledger_rec *r,
		              char *err, size_t errlen)
{
    if (statefile_remove(conf, STATEFILE_LEDGER, r->name, ".json", err,
			 errlen) < 0
	|| statefile_remove(conf, STATEFILE_LEDGER, r->name, ".draft", err,
			    errlen) < 0)
	return (-1);
    r->marked = 0;
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

/* ledger_entry - "MBTAG-KEY" + suffix: the name into name; the suffix */

static const char *ledger_entry(const char *file, char *name)
{
    const char *dot;

    if (strlen(file) <= LEDGER_KEY_LEN || file[LEDGER_TAG_LEN] != '-'
	|| (dot = strchr(file, '.')) != file + LEDGER_KEY_LEN)
	return (NULL);
    memcpy(name, file, LEDGER_KEY_LEN);
    name[LEDGER_KEY_LEN] = 0;
    return (dot);
}

/* ledger_exists - does NAME plus suffix exist in the directory? */

static int ledger_exists(int dfd, const char *name, const char *suffix)
{
    char    file[NAME_MAX + 1];
    struct stat st;

    snprintf(file, sizeof(file), "%s%s", name, suffix);
    return (fstatat(dfd, file, &st, AT_SYMLINK_NOFOLLOW) == 0
	    || errno != ENOENT);
}

/*
 * ledger_dir_open - the mailbox tag and the ledger directory, open for
 * readdir(): 1; 0 when there is no ledger yet; -1 (err)
 */
static int ledger_dir_open(const struct conf *conf, const char *mailbox,
			           char *tag, DIR **dir, char *err,
			           size_t errlen)
{
    int     dfd;

    if (ledger_tag(mailbox, tag) < 0) {
	snprintf(err, errlen, "cannot hash the mailbox name (OpenSSL)");
	return (-1);
    }
    if ((dfd = statefile_dir(conf, STATEFILE_LEDGER, STATEFILE_EXISTING,
			     err, errlen)) < 0)
	return (errno == ENOENT ? 0 : -1);
    if ((*dir = fdopendir(dfd)) == NULL) {
	snprintf(err, errlen, "cannot read the ledger directory %s/ledger: %s",
		 conf->state_dir, strerror(errno));
	close(dfd);
	return (-1);
    }
    return (1);
}

/* ledger_dir_next - the next NAME of the mailbox with that suffix; 0: end */

static int ledger_dir_next(DIR *dir, const char *tag, const char *want,
			           char *name)
{
    struct dirent *de;
    const char *suffix;

    while ((de = readdir(dir)) != NULL)
	if (strncmp(de->d_name, tag, LEDGER_TAG_LEN) == 0
	    && (suffix = ledger_entry(de->d_name, name)) != NULL
	    && strcmp(suffix, want) == 0)
	    return (1);
    return (0);
}

/* ledger_orphans - the unowned marked records of one mailbox; see ledger.h */

int     ledger_orphans(const struct conf *conf, const char *mailbox,
		               int (*fn) (void *, struct ledger_rec *),
		               void *arg, char *err, size_t errlen)
{
    char    tag[LEDGER_TAG_LEN + 1];
    char    name[LEDGER_KEY_LEN + 1];
    struct ledger_rec r;
    DIR    *dir;
    int     rc, count = 0;

    if ((rc = ledger_dir_open(conf, mailbox, tag, &dir, err, errlen)) <= 0)
	return (rc);
    while (ledger_dir_next(dir, tag, ".draft", name)) {
	/* Taken at once, or owned by a living process: skip it. */
	if ((rc = ledger_open(conf, name, 0, &r, err, errlen)) == -2)
	    continue;
	if (rc < 0) {
	    msg_warn("ledger: %s", err);
	    continue;
	}
	r.marked = 1;
	if (ledger_wants_mark(&r)) {
	    count++;
	    (void) fn(arg, &r);
	} else if (r.state == LEDGER_NONE) {
	    /* A marker without a record (crash in between). */
	    if (ledger_forget(conf, &r, err, errlen) < 0)
		msg_warn("ledger: %s", err);
	} else if (statefile_remove(conf, STATEFILE_LEDGER, name, ".draft",
				    err, errlen) < 0) {
	    msg_warn("ledger: %s", err);	/* a stale marker */
	}
	ledger_close(&r);
    }
    closedir(dir);
    return (count);
}

/*
 * ledger_expire_one - remove the record NAME (and its files) when nobody
 * holds it; 1 removed, 0 not
 */
static int ledger_expire_one(const struct conf *conf, const char *name)
{
    struct ledger_rec r;
    char    err[512];
    int     done = 0;

    if (ledger_open(conf, name, 0, &r, err, sizeof(err)) < 0)
	return (0);				/* busy: next time */
    if (ledger_forget(conf, &r, err, sizeof(err)) < 0)
	msg_warn("ledger: %s", err);
    else
	done = 1;
    ledger_close(&r);
    return (done);
}

/* ledger_expire - remove what is older than ledger_lifetime; see ledger.h */

int     ledger_expire(const struct conf *conf, int force)
{
    char    name[LEDGER_KEY_LEN + 1];
    char    err[512];
    const char *suffix;
    struct dirent *de;
    struct stat st;
    DIR    *dir;
    time_t  now = time(NULL);
    time_t  old = now - (conf->ledger_lifetime > 0 ? conf->ledger_lifetime :
			 LEDGER_LIFETIME);
    int     dfd, sfd, count = 0;

    if ((dfd = statefile_dir(conf, STATEFILE_LEDGER, STATEFILE_EXISTING,
			     err, sizeof(err))) < 0)
	return (0);				/* no ledger yet */
    if (!force && fstatat(dfd, LEDGER_STAMP ".stamp", &st, 0) == 0
	&& st.st_mtime > now - LEDGER_EXPIRE_EVERY && st.st_mtime <= now) {
	close(dfd);
	return (0);
    }
    /* One walker at a time; the stamp tells the others to skip. */
    if ((sfd = statefile_lock(conf, STATEFILE_LEDGER, LEDGER_STAMP, ".stamp",
			      0, err, sizeof(err))) < 0) {
	close(dfd);
	return (0);
    }
    (void) futimens(sfd, NULL);
    if ((dir = fdopendir(dfd)) == NULL) {
	close(dfd);
	statefile_unlock(sfd);
	return (0);
    }
    while ((de = readdir(dir)) != NULL) {
	if ((suffix = ledger_entry(de->d_name, name)) == NULL
	    || fstatat(dirfd(dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
	    continue;
	if (strcmp(suffix, ".json") == 0) {
	    if (st.st_mtime < old)
		count += ledger_expire_one(conf, name);
	} else if (strcmp(suffix, ".lock") == 0 || strcmp(suffix, ".draft") == 0) {
	    /* Left over without a record: a lock after old, a marker now. */
	    if ((suffix[1] == 'd' || st.st_mtime < old)
		&& !ledger_exists(dirfd(dir), name, ".json"))
		(void) ledger_expire_one(conf, name);
	} else if (strstr(suffix, ".tmp.") != NULL
		   && st.st_mtime < now - LEDGER_EXPIRE_EVERY) {
	    /* The temporary file of a writer killed in the middle. */
	    (void) unlinkat(dirfd(dir), de->d_name, 0);
	}
    }
    closedir(dir);
    statefile_unlock(sfd);
    if (count > 0)
	msg_info("send ledger: removed %d record(s) older than %ld s",
		 count, (long) (now - old));
    return (count);
}

/* ledger_message_id - the "<...>" of the first Message-ID field, or NULL */

char   *ledger_message_id(const char *hdr, size_t len)
{
    size_t  pos = 0;
    char   *mid, *p, *out = NULL;

    if ((mid = msg_hdr_find(hdr ? hdr : "", len, "Message-ID", &pos)) == NULL)
	return (NULL);
    p = mid + strspn(mid, " \t");
    if (*p == '<' && strchr(p, '>') && strlen(p) < 500)
	out = xstrndup(p, (size_t) (strchr(p, '>') - p) + 1);
    free(mid);
    return (out);
}

/*
 * ledger_digest - SHA-256 of the first LEDGER_DIGEST_MAX bytes of the
 * body as stored (a spooled body: the file, where a large base64 part
 * may be stored decoded from 4 MB on, mime.h) and its canonical
 * length: raw (32 bytes) and hex (65).  The body is what
 * stays the same when the MTA tries again (it may add trace fields to
 * the header).  0, or -1 when the body cannot be read or hashed.
 */
int     ledger_digest(const struct msg *m, unsigned char *raw, char *hex)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char buf[16384];
    char    len[32];
    unsigned int mdlen = 0, i;
    EVP_MD_CTX *ctx;
    off_t   off = 0, want = m->body_fd < 0 ? m->body_len : m->file_len;
    ssize_t got;
    int     ok;

    if (want > LEDGER_DIGEST_MAX)
	want = LEDGER_DIGEST_MAX;
    if ((ctx = EVP_MD_CTX_new()) == NULL)
	return (-1);
    ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;
    if (m->body_fd < 0) {
	if (want > 0 && m->body_mem.data)
	    ok = ok && EVP_DigestUpdate(ctx, m->body_mem.data,
					(size_t) want) == 1;
    } else {
	while (ok && off < want) {
	    got = msg_file_read(m, buf, (size_t) (want - off) < sizeof(buf) ?
				(size_t) (want - off) : sizeof(buf), off);
	    ok = got > 0 && EVP_DigestUpdate(ctx, buf, (size_t) got) == 1;
	    off += got > 0 ? got : 0;
	}
    }
    snprintf(len, sizeof(len), "%lld", (long long) m->body_len);
    ok = ok && EVP_DigestUpdate(ctx, len, strlen(len)) == 1
	&& EVP_DigestFinal_ex(ctx, raw, &mdlen) == 1 && mdlen == 32;
    EVP_MD_CTX_free(ctx);
    if (!ok)
	return (-1);
    for (i = 0; i < 32; i++) {
	hex[2 * i] = digits[raw[i] >> 4];
	hex[2 * i + 1] = digits[raw[i] & 15];
    }
    hex[64] = 0;
    return (0);
}

/*
 * ledger_open_delivery - the locked record of one delivery (see
 * ledger.h); a record of another message under a reused Message-ID
 * (another digest) reads as new, with a warning.  0, or -1 with res.
 */
int     ledger_open_delivery(const struct conf *conf, const char *mailbox,
			             const char *message_id, const char *hdr,
			             size_t hdrlen, char *const *rcpts,
			             size_t nrcpts, const char *digest,
			             double max_wait, const char *queue_id,
			             struct ledger_rec *r,
			             struct m365_result *res)
{
    char    name[LEDGER_NAME_MAX];
    char    err[512];
    int     rc;

    if (ledger_key(mailbox, message_id, hdr, hdrlen, rcpts, nrcpts, name,
		   sizeof(name)) < 0) {
	result_set(res, M365_SYSTEM, "4.3.0", "cannot compute the "
		   "delivery's send ledger key (OpenSSL SHA-256 failed)");
	return (-1);
    }
    if ((rc = ledger_open(conf, name, max_wait, r, err, sizeof(err))) < 0) {
	if (rc == -2)
	    result_set(res, M365_TEMP, "4.3.0", "another process is "
		       "delivering this message to the same recipients right "
		       "now (%s); trying again later", err);
	else
	    result_set(res, M365_SYSTEM, "4.3.0", "cannot use the send "
		       "ledger (nothing sent): %s", err);
	return (-1);
    }
    if (r->state != LEDGER_NONE && r->digest && digest && *digest
	&& strcmp(r->digest, digest) != 0) {
	msg_warn("%s: Message-ID %s was used before by another message to "
		 "the same recipients (queue id %s, %s); this one is a new "
		 "delivery", queue_id, message_id ? message_id : "(none)",
		 r->queue_id ? r->queue_id : "?", ledger_state_name(r->state));
	r->state = LEDGER_NONE;
	ledger_set(&r->draft_id, NULL);
	ledger_set(&r->request_id, NULL);
	r->attempted = r->created = 0;
    }
    return (0);
}

/* ledger_sent_result - "already sent at TIME, request-id ID" HOW */

void    ledger_sent_result(const struct ledger_rec *r, const char *how,
			           struct m365_result *res)
{
    char    when[64];
    struct tm tm;
    time_t  t = r->attempted ? r->attempted : r->updated;

    localtime_r(&t, &tm);
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S %z", &tm);
    result_set(res, M365_OK, "2.0.0", "already sent at %s, request-id %s%s%s",
	       when, r->request_id ? r->request_id : "-", how ? " " : "",
	       how ? how : "");
    snprintf(res->request_id, sizeof(res->request_id), "%s",
	     r->request_id ? r->request_id : "");
}

/* ledger_has_rcpt - does the record name rcpt among its recipients? */

static int ledger_has_rcpt(const struct ledger_rec *r, const char *rcpt)
{
    char  **p;

    for (p = r->rcpts; rcpt && p && *p; p++)
	if (strcasecmp(*p, rcpt) == 0)
	    return (1);
    return (0);
}

/* ledger_find - the record of a Message-ID in one mailbox; see ledger.h */

int     ledger_find(const struct conf *conf, const char *mailbox,
		            const char *message_id, const char *rcpt,
		            struct ledger_rec *out, char *err, size_t errlen)
{
    char    tag[LEDGER_TAG_LEN + 1];
    char    name[LEDGER_KEY_LEN + 1];
    struct ledger_rec r;
    DIR    *dir;
    time_t  old = time(NULL) - (conf->ledger_lifetime > 0 ?
				conf->ledger_lifetime : LEDGER_LIFETIME);
    int     rc, found = 0, best_rcpt = 0, has;

    memset(out, 0, sizeof(*out));
    out->lock_fd = -1;
    if (message_id == NULL || *message_id == 0)
	return (0);
    if ((rc = ledger_dir_open(conf, mailbox, tag, &dir, err, errlen)) <= 0)
	return (rc);
    while (ledger_dir_next(dir, tag, ".json", name)) {
	memset(&r, 0, sizeof(r));
	r.lock_fd = -1;
	memcpy(r.name, name, sizeof(name));
	if (ledger_load(conf, &r, err, errlen) < 0) {
	    msg_warn("ledger: %s", err);
	    continue;
	}
	/* Sent or maybe sent, with an envelope, not expired. */
	if (r.message_id == NULL || strcasecmp(r.message_id, message_id) != 0
	    || r.sender == NULL || r.updated < old
	    || (r.state != LEDGER_SENT && r.state != LEDGER_SENDING
		&& r.state != LEDGER_AMBIGUOUS)) {
	    ledger_clear(&r);
	    continue;
	}
	has = ledger_has_rcpt(&r, rcpt);
	if (found && (best_rcpt > has || (best_rcpt == has
					  && out->updated >= r.updated))) {
	    ledger_clear(&r);
	    continue;
	}
	ledger_clear(out);
	*out = r;
	found = 1;
	best_rcpt = has;
    }
    closedir(dir);
    return (found);
}
