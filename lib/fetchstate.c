/*
 * NAME
 *	fetchstate 3
 * SUMMARY
 *	durable per-source state of m365-fetch (exactly once into the MTA)
 * DESCRIPTION
 *	See fetchstate.h.  The whole state is one small JSON document,
 *	always rewritten whole; with a bounded done list and only the
 *	messages of the current round pending it stays small.  What costs
 *	is the fsync, so the state is written only at the transitions the
 *	exactly-once design needs (m365-fetch(8) "Exactly once"), and
 *	fsync()ed only where a power loss must not take the record.
 *	fetch.c follows this table:
 *
 *	  data_sent  DURABLE, just before the end of the data (or before
 *	             sendmail starts).  From here on the MTA may have the
 *	             message, and a restart must know it: it injects again
 *	             with the duplicate warning (or reads the sendmail
 *	             outcome record) instead of silently.  The record must
 *	             be on disk before the "." leaves, so neither of its
 *	             two fsyncs can wait for a later write.
 *	  injected   VISIBLE, after the MTA's 250 (sendmail's exit 0), before
 *	             the after-action: a restart after a kill -9 then only
 *	             repeats the after-action instead of injecting again.
 *	             A power loss may take it; the restart then finds the
 *	             durable data_sent and injects again with the warning.
 *	  rejected   VISIBLE, before the reject action, for the same
 *	             reason (and the "rejected" counter).
 *	  done       not written on its own: the completed after-action
 *	             rides along with the next write (the next message's
 *	             data_sent, or the end of the round).  A restart that
 *	             finds "injected" repeats the after-action, which is
 *	             idempotent (marked read again; a move or delete of a
 *	             message that is gone is a 404, which counts as done).
 *	  injecting  not written.  A message whose end of data was never
 *	             sent left nothing at the MTA, is still unread in its
 *	             folder, and the deltaLink has not moved past it (it
 *	             moves only at the end of a round with nothing pending
 *	             or deferred): the next round finds and injects it,
 *	             which is all a recorded "injecting" led to.
 *	  the round  DURABLE, once at its end: the deltaLink, folder ids,
 *	             counters, offline bookkeeping, last_error and the done
 *	             of the last message.  Rare changes during a round (a
 *	             folder resolved, a deltaLink dropped for a resync, an
 *	             entry dropped after a refusal, offline) are written
 *	             VISIBLE when they happen.
 *
 *	So a message costs one durable and one visible write: two fsyncs
 *	and two renames; a round two more fsyncs.  The directory is made
 *	and opened once per round (fetchstate_open()), not per write.
 *
 *	DURABLE replaces NAME.json: temporary file, fsync, rename, fsync
 *	of the directory.  The file's fsync comes first because a rename
 *	that reaches the disk before the data can leave an empty NAME.json
 *	after a power loss (XFS; ext4 without auto_da_alloc); the directory's
 *	fsync makes the rename itself durable before the end of the data.
 *	VISIBLE replaces NAME.json.next the same way without any fsync.
 *	A kill -9 loses nothing written either way (the page cache belongs
 *	to the kernel); what a power loss does to a visible write (the new
 *	file lost, or empty, or the old one kept) never touches NAME.json.
 *	Every durable write carries a new random "gen"; a visible write
 *	carries the "gen" of the durable write it follows, and
 *	fetchstate_load() takes NAME.json.next only when its "gen" is that
 *	of NAME.json.  A leftover of an earlier generation, an empty or
 *	damaged file, or one without NAME.json is ignored.
 *
 *	What each failure may cost: a kill -9 nothing (exactly once as
 *	before, with the one ambiguous window between the end of the data
 *	and the MTA's reply).  A power loss (or kernel crash) keeps every
 *	durable write and may take the visible ones after the last of
 *	them: the one message whose data_sent is the newest durable record
 *	may be injected a second time, always with the warning, never
 *	silently; no message is lost.
 *
 *	The files are made, locked and written by statefile.c.  Source
 *	names that could leave the sources directory ('/' anywhere, a
 *	leading '.') are refused.
 */
#include "config.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>

#include "fetchstate.h"
#include "json.h"
#include "statefile.h"
#include "util.h"

#define FETCHSTATE_FILE_MAX	(8UL * 1024 * 1024)
#define FETCHSTATE_JSON		".json"
#define FETCHSTATE_NEXT		".json.next"

static const char *const fetchstate_names[] = {
    "injecting", "data_sent", "injected", "rejected",
};

/* fetchstate_path - state_dir/sources/SOURCE plus suffix */

int     fetchstate_path(const struct conf *conf, const char *source,
			        const char *suffix, char *buf, size_t len)
{
    return (statefile_path(conf, STATEFILE_SOURCES, source, suffix, buf,
			   len));
}

/* fetchstate_replace - replace an owned string */

static void fetchstate_replace(char **slot, const char *value)
{
    free(*slot);
    *slot = value ? xstrdup(value) : NULL;
}

/* fetchstate_clear - release everything, leave an empty state */

void    fetchstate_clear(struct fetchstate *st)
{
    size_t  i;

    free(st->folder);
    free(st->folder_id);
    free(st->delta_link);
    for (i = 0; i < st->npending; i++) {
	free(st->pending[i].id);
	free(st->pending[i].imid);
	free(st->pending[i].mta_reply);
    }
    free(st->pending);
    for (i = 0; i < st->ndone; i++)
	free(st->done[i]);
    free(st->done);
    for (i = 0; i < st->nfolders; i++) {
	free(st->folders[i].name);
	free(st->folders[i].id);
    }
    free(st->folders);
    free(st->last_error);
    free(st->remedy);
    memset(st, 0, sizeof(*st));
}

/* fetchstate_pstate_name - "injecting", "data_sent", ... */

const char *fetchstate_pstate_name(enum fetchstate_pstate s)
{
    if ((unsigned) s < sizeof(fetchstate_names) / sizeof(fetchstate_names[0]))
	return (fetchstate_names[s]);
    return ("unknown");
}

/* fetchstate_pstate_parse - state name to enum; -1 if unknown */

static int fetchstate_pstate_parse(const char *name)
{
    size_t  i;

    for (i = 0; name && i < sizeof(fetchstate_names) / sizeof(fetchstate_names[0]); i++)
	if (strcmp(name, fetchstate_names[i]) == 0)
	    return ((int) i);
    return (-1);
}

/* fetchstate_gen_get - "gen" of a document, or "" when absent or odd */

static void fetchstate_gen_get(const cJSON *root, char *gen)
{
    char   *value = json_get_str(root, "gen");

    gen[0] = 0;
    if (value && strlen(value) == FETCHSTATE_GEN_LEN
	&& strspn(value, "0123456789abcdef") == FETCHSTATE_GEN_LEN)
	memcpy(gen, value, FETCHSTATE_GEN_LEN + 1);
    free(value);
}

/*
 * fetchstate_from_json - a parsed document into st (which is
 * overwritten).  An unknown pending state is read as data_sent: the
 * safe assumption is that the MTA may have the message, which is
 * logged as such.
 */
static void fetchstate_from_json(const cJSON *root, struct fetchstate *st)
{
    const cJSON *obj, *item;
    char   *state;
    int     s;

    memset(st, 0, sizeof(*st));
    fetchstate_gen_get(root, st->gen);
    st->folder = json_get_str(root, "folder");
    st->folder_id = json_get_str(root, "folder_id");
    st->delta_link = json_get_str(root, "delta_link");
    st->offline = json_get_num(root, "offline") != 0;
    st->last_error = json_get_str(root, "last_error");
    st->remedy = json_get_str(root, "remedy");
    st->notified = json_get_num(root, "notified") != 0;
    st->offline_since = (time_t) json_get_num(root, "offline_since");
    st->not_before = (time_t) json_get_num(root, "not_before");
    st->last_round = (time_t) json_get_num(root, "last_round");
    st->last_success = (time_t) json_get_num(root, "last_success");
    st->injected = (long) json_get_num(root, "injected");
    st->rejected = (long) json_get_num(root, "rejected");
    st->bounce_reports = (long) json_get_num(root, "bounce_reports");
    st->bounce_dsns = (long) json_get_num(root, "bounce_dsns");
    st->bounce_unmatched = (long) json_get_num(root, "bounce_unmatched");

    obj = cJSON_GetObjectItemCaseSensitive(root, "pending");
    cJSON_ArrayForEach(item, (cJSON_IsObject(obj) ? obj : NULL)) {
	struct fetchstate_pending *p;

	if (item->string == NULL || *item->string == 0 || !cJSON_IsObject(item))
	    continue;
	state = json_get_str(item, "state");
	s = fetchstate_pstate_parse(state);
	free(state);
	p = fetchstate_pending_set(st, item->string, NULL,
				   s < 0 ? FETCHSTATE_DATA_SENT :
				   (enum fetchstate_pstate) s, NULL);
	p->imid = json_get_str(item, "imid");
	p->mta_reply = json_get_str(item, "mta_reply");
	p->at = (time_t) json_get_num(item, "at");
    }
    obj = cJSON_GetObjectItemCaseSensitive(root, "done");
    cJSON_ArrayForEach(item, (cJSON_IsArray(obj) ? obj : NULL)) {
	if (cJSON_IsString(item) && item->valuestring && *item->valuestring)
	    fetchstate_done_add(st, item->valuestring);
    }
    obj = cJSON_GetObjectItemCaseSensitive(root, "folder_ids");
    cJSON_ArrayForEach(item, (cJSON_IsObject(obj) ? obj : NULL)) {
	if (item->string && cJSON_IsString(item) && item->valuestring
	    && *item->valuestring)
	    fetchstate_folder_set(st, item->string, item->valuestring);
    }
}

/* fetchstate_parse - the JSON document into st (which is overwritten) */

int     fetchstate_parse(const char *json, size_t len, struct fetchstate *st,
			         char *err, size_t errlen)
{
    cJSON  *root;

    memset(st, 0, sizeof(*st));
    root = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(root)) {
	cJSON_Delete(root);
	snprintf(err, errlen, "not a JSON object");
	return (-1);
    }
    fetchstate_from_json(root, st);
    cJSON_Delete(root);
    return (0);
}

/* fetchstate_text - the JSON document with this "gen"; free() it */

static char *fetchstate_text(const struct fetchstate *st, const char *gen)
{
    cJSON  *root, *obj, *item;
    char   *text;
    size_t  i;

    if ((root = cJSON_CreateObject()) == NULL)
	return (NULL);
    if (*gen)
	cJSON_AddStringToObject(root, "gen", gen);
    (void) json_add_str(root, "folder", st->folder);
    (void) json_add_str(root, "folder_id", st->folder_id);
    (void) json_add_str(root, "delta_link", st->delta_link);
    obj = cJSON_AddObjectToObject(root, "pending");
    for (i = 0; obj && i < st->npending; i++) {
	const struct fetchstate_pending *p = st->pending + i;

	if ((item = cJSON_AddObjectToObject(obj, p->id)) == NULL)
	    continue;
	(void) json_add_str(item, "imid", p->imid);
	cJSON_AddStringToObject(item, "state", fetchstate_pstate_name(p->state));
	(void) json_add_str(item, "mta_reply", p->mta_reply);
	cJSON_AddNumberToObject(item, "at", (double) p->at);
    }
    obj = cJSON_AddArrayToObject(root, "done");
    for (i = 0; obj && i < st->ndone; i++)
	cJSON_AddItemToArray(obj, cJSON_CreateString(st->done[i]));
    obj = cJSON_AddObjectToObject(root, "folder_ids");
    for (i = 0; obj && i < st->nfolders; i++)
	cJSON_AddStringToObject(obj, st->folders[i].name, st->folders[i].id);
    cJSON_AddBoolToObject(root, "offline", st->offline);
    (void) json_add_str(root, "last_error", st->last_error);
    (void) json_add_str(root, "remedy", st->remedy);
    cJSON_AddBoolToObject(root, "notified", st->notified);
    cJSON_AddNumberToObject(root, "offline_since", (double) st->offline_since);
    cJSON_AddNumberToObject(root, "not_before", (double) st->not_before);
    cJSON_AddNumberToObject(root, "last_round", (double) st->last_round);
    cJSON_AddNumberToObject(root, "last_success", (double) st->last_success);
    cJSON_AddNumberToObject(root, "injected", (double) st->injected);
    cJSON_AddNumberToObject(root, "rejected", (double) st->rejected);
    if (st->bounce_reports > 0) {
	/* A bounce source (issue 12); mail sources keep their old form. */
	cJSON_AddNumberToObject(root, "bounce_reports",
				(double) st->bounce_reports);
	cJSON_AddNumberToObject(root, "bounce_dsns", (double) st->bounce_dsns);
	cJSON_AddNumberToObject(root, "bounce_unmatched",
				(double) st->bounce_unmatched);
    }
    text = cJSON_Print(root);
    cJSON_Delete(root);
    return (text);
}

/* fetchstate_format - the JSON document; free() it */

char   *fetchstate_format(const struct fetchstate *st)
{
    return (fetchstate_text(st, st->gen));
}

/*
 * fetchstate_read - state_dir/sources/SOURCE plus suffix into st (path:
 * PATH_MAX bytes, for messages).  1 read, 0 missing (st empty), -2 not
 * a JSON object, -1 with err set.
 */
static int fetchstate_read(const struct conf *conf, const char *source,
			           const char *suffix, char *path,
			           struct fetchstate *st,
			           char *err, size_t errlen)
{
    cJSON  *root;
    int     rc;

    memset(st, 0, sizeof(*st));
    if (statefile_path_err(conf, STATEFILE_SOURCES, source, suffix, path,
			   PATH_MAX, err, errlen) < 0)
	return (-1);
    rc = json_file_load(path, "state file", FETCHSTATE_FILE_MAX, 0, &root,
			err, errlen);
    if (rc == 1) {
	fetchstate_from_json(root, st);
	cJSON_Delete(root);
    }
    return (rc);
}

/*
 * fetchstate_load - read a source's state; missing file = empty state.
 * NAME.json.next replaces what NAME.json holds when it continues it
 * (the same gen); missing, empty, damaged or of another generation it
 * is ignored (see the top of this file).
 */
int     fetchstate_load(const struct conf *conf, const char *source,
			        struct fetchstate *st, char *err, size_t errlen)
{
    struct fetchstate next;
    char    path[PATH_MAX];
    int     rc;

    rc = fetchstate_read(conf, source, FETCHSTATE_JSON, path, st, err,
			 errlen);
    if (rc == -2)
	snprintf(err, errlen, "state file %s is damaged (not a JSON "
		 "object): move it away; the next round then resynchronizes "
		 "the folder, and only messages still unread (after = read) or "
		 "still in the folder (move, delete) are fetched", path);
    if (rc <= 0)
	return (rc == 0 ? 0 : -1);
    if (st->gen[0] == 0)
	return (0);
    rc = fetchstate_read(conf, source, FETCHSTATE_NEXT, path, &next, err,
			 errlen);
    if (rc == -1) {
	fetchstate_clear(st);
	return (-1);
    }
    if (rc == 1 && strcmp(next.gen, st->gen) == 0) {
	fetchstate_clear(st);
	*st = next;
    } else
	fetchstate_clear(&next);
    return (0);
}

/*
 * fetchstate_open - open (make) state_dir/sources once for the writes of
 * a round; the name is checked here, for the longest suffix.
 */
int     fetchstate_open(const struct conf *conf, const char *source,
			        struct fetchstate_file *f,
			        char *err, size_t errlen)
{
    char    path[PATH_MAX];

    memset(f, 0, sizeof(*f));
    f->dirfd = -1;
    if (statefile_path_err(conf, STATEFILE_SOURCES, source, FETCHSTATE_NEXT,
			   path, sizeof(path), err, errlen) < 0)
	return (-1);
    if ((f->dirfd = statefile_dir(conf, STATEFILE_SOURCES, 0, err,
				  errlen)) < 0)
	return (-1);
    f->conf = conf;
    f->source = xstrdup(source);
    f->next = 1;			/* a killed round may have left one */
    return (0);
}

/* fetchstate_gen_new - the generation of a durable write */

static void fetchstate_gen_new(char *gen)
{
    static unsigned long count;

    if (random_hex(gen, FETCHSTATE_GEN_LEN / 2) == 0)
	return;
    /* Unique is enough (it is no secret): time, process, a counter. */
    snprintf(gen, FETCHSTATE_GEN_LEN + 1, "%08lx%04lx%04lx",
	     (unsigned long) time(NULL) & 0xffffffffUL,
	     (unsigned long) getpid() & 0xffffUL, ++count & 0xffffUL);
}

/*
 * fetchstate_write - write st: FETCHSTATE_DURABLE replaces NAME.json
 * (fsync of the file and the directory) under a new st->gen,
 * FETCHSTATE_VISIBLE replaces NAME.json.next without fsync.  A state
 * that no durable write carries yet (no gen) is written durably.
 */
int     fetchstate_write(struct fetchstate_file *f, struct fetchstate *st,
			         int how, char *err, size_t errlen)
{
    char    gen[FETCHSTATE_GEN_LEN + 1];
    char   *text;
    int     rc;

    if (st->gen[0] == 0)
	how = FETCHSTATE_DURABLE;
    if (how == FETCHSTATE_DURABLE)
	fetchstate_gen_new(gen);
    else
	memcpy(gen, st->gen, sizeof(gen));
    if ((text = fetchstate_text(st, gen)) == NULL) {
	snprintf(err, errlen, "cannot format the state of source %s (out "
		 "of memory)", f->source);
	return (-1);
    }
    rc = statefile_write_at(f->conf, STATEFILE_SOURCES, f->dirfd, f->source,
			    how == FETCHSTATE_DURABLE ? FETCHSTATE_JSON :
			    FETCHSTATE_NEXT, text, strlen(text),
			    how == FETCHSTATE_DURABLE ? 0 : STATEFILE_NOSYNC,
			    err, errlen);
    free(text);
    if (rc < 0)
	return (-1);
    if ((f->last_durable = (how == FETCHSTATE_DURABLE)) != 0) {
	memcpy(st->gen, gen, sizeof(st->gen));
	f->durable++;
    } else {
	f->next = 1;
	f->visible++;
    }
    return (0);
}

/*
 * fetchstate_close - close the directory; when the last write was
 * durable, NAME.json.next is stale: remove it (only tidiness, the "gen"
 * already makes a restart ignore it).
 */
void    fetchstate_close(struct fetchstate_file *f)
{
    char    err[300];

    if (f->dirfd >= 0 && f->next && f->last_durable)
	(void) statefile_remove(f->conf, STATEFILE_SOURCES, f->source,
				FETCHSTATE_NEXT, err, sizeof(err));
    if (f->dirfd >= 0)
	close(f->dirfd);
    free(f->source);
    memset(f, 0, sizeof(*f));
    f->dirfd = -1;
}

/*
 * fetchstate_save - write a source's state durably (one write of its
 * own, see fetchstate_write()); a NAME.json.next is then stale.
 */
int     fetchstate_save(const struct conf *conf, const char *source,
			        const struct fetchstate *st, char *err,
			        size_t errlen)
{
    struct fetchstate_file f;
    struct fetchstate copy = *st;	/* only its gen changes */
    int     rc;

    if (fetchstate_open(conf, source, &f, err, errlen) < 0)
	return (-1);
    rc = fetchstate_write(&f, &copy, FETCHSTATE_DURABLE, err, errlen);
    fetchstate_close(&f);
    return (rc);
}

/*
 * fetchstate_lock - exclusive, non-blocking; -2 when held elsewhere.  As
 * root the lock file is opened like every file root keeps for the
 * [global] user (statefile_lock(): no symbolic link, one link only).
 */
int     fetchstate_lock(const struct conf *conf, const char *source,
			        char *err, size_t errlen)
{
    char    path[PATH_MAX];
    int     fd;

    fd = statefile_lock(conf, STATEFILE_SOURCES, source, ".lock", 0,
			err, errlen);
    if (fd == -2 && fetchstate_path(conf, source, ".lock", path,
				    sizeof(path)) == 0)
	snprintf(err, errlen, "another m365-fetch process is working on "
		 "source %s (lock %s held)", source, path);
    return (fd);
}

/* fetchstate_unlock - release the lock; -1 is ok */

void    fetchstate_unlock(int fd)
{
    statefile_unlock(fd);
}

/* fetchstate_pending_find - the pending entry of a message, or NULL */

struct fetchstate_pending *fetchstate_pending_find(struct fetchstate *st,
						           const char *id)
{
    size_t  i;

    for (i = 0; id && i < st->npending; i++)
	if (strcmp(st->pending[i].id, id) == 0)
	    return (st->pending + i);
    return (NULL);
}

/* fetchstate_pending_set - add or update; imid/mta_reply NULL = keep */

struct fetchstate_pending *fetchstate_pending_set(struct fetchstate *st,
				             const char *id, const char *imid,
		                enum fetchstate_pstate state, const char *reply)
{
    struct fetchstate_pending *p;

    if ((p = fetchstate_pending_find(st, id)) == NULL) {
	st->pending = xrealloc(st->pending, (st->npending + 1) * sizeof(*p));
	p = st->pending + st->npending++;
	memset(p, 0, sizeof(*p));
	p->id = xstrdup(id);
    }
    if (imid)
	fetchstate_replace(&p->imid, imid);
    if (reply)
	fetchstate_replace(&p->mta_reply, reply);
    p->state = state;
    p->at = time(NULL);
    return (p);
}

/* fetchstate_pending_drop - forget a pending message (if there) */

void    fetchstate_pending_drop(struct fetchstate *st, const char *id)
{
    struct fetchstate_pending *p;
    size_t  i;

    if ((p = fetchstate_pending_find(st, id)) == NULL)
	return;
    i = (size_t) (p - st->pending);
    free(p->id);
    free(p->imid);
    free(p->mta_reply);
    memmove(p, p + 1, (st->npending - i - 1) * sizeof(*p));
    st->npending--;
}

/* fetchstate_recovery - what a restart does with a pending message */

enum fetchstate_action fetchstate_recovery(const struct fetchstate_pending *p)
{
    switch (p->state) {
    case FETCHSTATE_INJECTING:
	return (FETCHSTATE_REDO_INJECT);
    case FETCHSTATE_INJECTED:
	return (FETCHSTATE_REDO_AFTER);
    case FETCHSTATE_REJECTED:
	return (FETCHSTATE_REDO_REJECT);
    case FETCHSTATE_DATA_SENT:
    default:
	return (FETCHSTATE_REDO_INJECT_DUP);
    }
}

/* fetchstate_done_has - was this message processed recently? */

int     fetchstate_done_has(const struct fetchstate *st, const char *id)
{
    size_t  i;

    for (i = st->ndone; id && i > 0; i--)
	if (strcmp(st->done[i - 1], id) == 0)
	    return (1);
    return (0);
}

/* fetchstate_done_add - remember a processed message, drop the oldest */

void    fetchstate_done_add(struct fetchstate *st, const char *id)
{
    if (id == NULL || *id == 0 || fetchstate_done_has(st, id))
	return;
    if (st->ndone >= FETCHSTATE_DONE_MAX) {
	free(st->done[0]);
	memmove(st->done, st->done + 1, (st->ndone - 1) * sizeof(char *));
	st->ndone--;
    }
    st->done = xrealloc(st->done, (st->ndone + 1) * sizeof(char *));
    st->done[st->ndone++] = xstrdup(id);
}

/* fetchstate_finish - the message is completely processed */

void    fetchstate_finish(struct fetchstate *st, const char *id)
{
    char   *copy = xstrdup(id);		/* id may point into the entry */

    fetchstate_pending_drop(st, copy);
    fetchstate_done_add(st, copy);
    free(copy);
}

/* fetchstate_folder_get - cached id of a move target, or NULL */

const char *fetchstate_folder_get(const struct fetchstate *st, const char *name)
{
    size_t  i;

    for (i = 0; name && i < st->nfolders; i++)
	if (strcmp(st->folders[i].name, name) == 0)
	    return (st->folders[i].id);
    return (NULL);
}

/* fetchstate_folder_set - cache (id) or forget (NULL) a move target */

void    fetchstate_folder_set(struct fetchstate *st, const char *name,
			              const char *id)
{
    size_t  i;

    for (i = 0; i < st->nfolders; i++) {
	if (strcmp(st->folders[i].name, name) != 0)
	    continue;
	if (id) {
	    fetchstate_replace(&st->folders[i].id, id);
	    return;
	}
	free(st->folders[i].name);
	free(st->folders[i].id);
	memmove(st->folders + i, st->folders + i + 1,
		(st->nfolders - i - 1) * sizeof(st->folders[0]));
	st->nfolders--;
	return;
    }
    if (id == NULL)
	return;
    st->folders = xrealloc(st->folders, (st->nfolders + 1) * sizeof(st->folders[0]));
    st->folders[st->nfolders].name = xstrdup(name);
    st->folders[st->nfolders].id = xstrdup(id);
    st->nfolders++;
}

/* fetchstate_set_offline - record why; 1 if the source just went offline */

int     fetchstate_set_offline(struct fetchstate *st, const char *error,
			               const char *remedy)
{
    int     changed = !st->offline;

    fetchstate_replace(&st->last_error, error);
    fetchstate_replace(&st->remedy, remedy);
    if (changed) {
	st->offline = 1;
	st->offline_since = time(NULL);
	st->notified = 0;
    }
    return (changed);
}

/* fetchstate_set_online - clear the offline mark; 1 if it was offline */

int     fetchstate_set_online(struct fetchstate *st)
{
    int     changed = st->offline;

    st->offline = 0;
    st->notified = 0;
    st->offline_since = 0;
    fetchstate_replace(&st->last_error, NULL);
    fetchstate_replace(&st->remedy, NULL);
    return (changed);
}
