/*
 * NAME
 *	fetchstate 3
 * SUMMARY
 *	durable per-source state of m365-fetch (exactly once into the MTA)
 * DESCRIPTION
 *	See fetchstate.h.  The whole state is one small JSON document that
 *	is rewritten atomically on every transition; with a bounded done
 *	list and only the messages of the current round pending it stays
 *	a few kilobytes, so the rewrite (and its fsync) is cheap next to
 *	the SMTP transaction it protects.
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

#include <cJSON.h>

#include "fetchstate.h"
#include "json.h"
#include "statefile.h"
#include "util.h"

#define FETCHSTATE_FILE_MAX	(8UL * 1024 * 1024)

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

/* fetchstate_format - the JSON document; free() it */

char   *fetchstate_format(const struct fetchstate *st)
{
    cJSON  *root, *obj, *item;
    char   *text;
    size_t  i;

    if ((root = cJSON_CreateObject()) == NULL)
	return (NULL);
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
    text = cJSON_Print(root);
    cJSON_Delete(root);
    return (text);
}

/* fetchstate_load - read a source's state; missing file = empty state */

int     fetchstate_load(const struct conf *conf, const char *source,
			        struct fetchstate *st, char *err, size_t errlen)
{
    char    path[PATH_MAX];
    cJSON  *root;
    int     rc;

    memset(st, 0, sizeof(*st));
    if (statefile_path_err(conf, STATEFILE_SOURCES, source, ".json", path,
			   sizeof(path), err, errlen) < 0)
	return (-1);
    rc = json_file_load(path, "state file", FETCHSTATE_FILE_MAX, 0, &root,
			err, errlen);
    if (rc == -2)
	snprintf(err, errlen, "state file %s is damaged (not a JSON "
		 "object): move it away; the next round then resynchronizes "
		 "the folder, and only messages still unread (after = read) or "
		 "still in the folder (move, delete) are fetched", path);
    if (rc <= 0)
	return (rc == 0 ? 0 : -1);
    fetchstate_from_json(root, st);
    cJSON_Delete(root);
    return (0);
}

/*
 * fetchstate_save - write a source's state atomically, mode 0600,
 * relative to the opened sources directory (statefile_write()).
 */
int     fetchstate_save(const struct conf *conf, const char *source,
			        const struct fetchstate *st, char *err,
			        size_t errlen)
{
    char    path[PATH_MAX];
    char   *text;
    int     rc;

    if (statefile_path_err(conf, STATEFILE_SOURCES, source, ".json", path,
			   sizeof(path), err, errlen) < 0)
	return (-1);
    if ((text = fetchstate_format(st)) == NULL) {
	snprintf(err, errlen, "cannot format the state of source %s (out "
		 "of memory)", source);
	return (-1);
    }
    rc = statefile_write(conf, STATEFILE_SOURCES, source, ".json", text,
			 strlen(text), err, errlen);
    free(text);
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
