/*
 * NAME
 *	source 3
 * SUMMARY
 *	an inbound [source]: its mailbox, its folder, folder path to id
 * DESCRIPTION
 *	See source.h.  The folder walk sends no request itself: the
 *	caller's get function does (m365-fetch with the source's cached
 *	token and its offline bookkeeping, m365ctl test with its step
 *	output), so that both judge each reply by the rules here.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cJSON.h>

#include "addr.h"
#include "graph.h"
#include "log.h"
#include "source.h"
#include "util.h"

/* source_mailbox - the mailbox a source reads, NULL for /me */

const char *source_mailbox(const struct conf_source *src)
{
    if (src->mailbox && *src->mailbox)
	return (src->mailbox);
    if (src->acct && src->acct->mailbox && *src->acct->mailbox)
	return (src->acct->mailbox);
    return (NULL);
}

/*
 * source_shared_by - does the source, read with account acct, read
 * another mailbox than acct's own?  An account without a mailbox owns
 * none; a source without a mailbox reads acct's (or /me).
 */
int     source_shared_by(const struct conf_source *src,
			         const struct conf_account *acct)
{
    const char *mb = src->mailbox && *src->mailbox ? src->mailbox :
    acct ? acct->mailbox : NULL;

    return (mb != NULL && *mb != 0 && (acct == NULL || acct->mailbox == NULL
				       || !addr_same(mb, acct->mailbox)));
}

/* source_shared - source_shared_by() with the source's own account */

int     source_shared(const struct conf_source *src)
{
    return (source_shared_by(src, src->acct));
}

/* source_folder - the folder path a source reads ("inbox" when unset) */

const char *source_folder(const struct conf_source *src)
{
    return (src->folder && *src->folder ? src->folder : "inbox");
}

/* source_mailbox_missing - a 4xx that says the mailbox is unusable */

int     source_mailbox_missing(const struct http_resp *resp)
{
    struct graph_error ge;

    graph_parse_error(resp, &ge);
    return (strcasecmp(ge.code, "MailboxNotEnabledForRESTAPI") == 0
	    || strcasecmp(ge.code, "ErrorInvalidUser") == 0
	    || strcasecmp(ge.code, "ErrorNonExistentMailbox") == 0);
}

/* source_long - a number member of a folder, or -1 */

static long source_long(const cJSON *item, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(item, key);

    return (cJSON_IsNumber(v) && v->valuedouble >= 0 ? (long) v->valuedouble :
	    -1);
}

/*
 * source_lookup - one path element under parent (NULL: the top level);
 * SOURCE_FOLDER_OK with *id_r (malloc()ed), or why not.
 */
static enum source_folder_status source_lookup(const struct conf *conf,
					               const char *mailbox,
					               const struct source_walk *walk,
					               const char *parent,
					               const char *elem,
					               struct source_folder *f,
					               char **id_r)
{
    cJSON  *root, *val, *item, *v;
    char   *query, *url;
    int     rc;

    *id_r = NULL;
    http_resp_free(&f->resp);
    http_resp_init(&f->resp);
    query = graph_folder_query(parent, elem);
    url = query ? graph_url(conf, mailbox, query) : NULL;	/* NULL: long */
    free(query);
    rc = walk->get(walk->ctx, url, &f->resp);
    free(url);
    if (rc < 0) {
	f->get_rc = rc;
	return (SOURCE_FOLDER_FAILED);
    }
    if (f->resp.status < 200 || f->resp.status >= 300)
	return (f->resp.status == 404 && !source_mailbox_missing(&f->resp) ?
		SOURCE_FOLDER_MISSING : SOURCE_FOLDER_GRAPH);
    root = f->resp.body.len > 0 ?
	cJSON_ParseWithLength(f->resp.body.data, f->resp.body.len) : NULL;
    if (!cJSON_IsObject(root)) {
	cJSON_Delete(root);
	return (SOURCE_FOLDER_BAD_REPLY);
    }
    val = cJSON_GetObjectItemCaseSensitive(root, "value");
    item = cJSON_IsArray(val) ? cJSON_GetArrayItem(val, 0) : root;
    v = item ? cJSON_GetObjectItemCaseSensitive(item, "id") : NULL;
    if (cJSON_IsString(v) && v->valuestring && *v->valuestring)
	*id_r = xstrdup(v->valuestring);
    if (cJSON_IsArray(val) && cJSON_GetArraySize(val) > 1 && walk->ambiguous)
	walk->ambiguous(walk->ctx, elem);
    v = item ? cJSON_GetObjectItemCaseSensitive(item, "displayName") : NULL;
    if (cJSON_IsString(v) && v->valuestring)
	log_printable(f->name, sizeof(f->name), v->valuestring,
		      strlen(v->valuestring));
    else
	f->name[0] = 0;
    f->total = source_long(item, "totalItemCount");
    f->unread = source_long(item, "unreadItemCount");
    cJSON_Delete(root);
    return (*id_r ? SOURCE_FOLDER_OK : SOURCE_FOLDER_NONE);
}

/* source_resolve - folder path "A/B/C" (or a well-known name) to an id */

enum source_folder_status source_resolve(const struct conf *conf,
					             const char *mailbox,
					             const char *path,
				             const struct source_walk *walk,
					             struct source_folder *f)
{
    char   *copy = xstrdup(path);
    char   *elem, *slash, *next;
    char   *id = NULL;
    int     depth = 0;

    memset(f, 0, sizeof(*f));
    http_resp_init(&f->resp);
    f->total = f->unread = -1;
    f->status = SOURCE_FOLDER_OK;
    for (elem = copy; elem && f->status == SOURCE_FOLDER_OK;
	 elem = slash ? slash + 1 : NULL) {
	if ((slash = strchr(elem, '/')) != NULL)
	    *slash = 0;
	if (*elem == 0)
	    continue;
	free(f->elem);
	f->elem = xstrdup(elem);
	f->depth = depth++;
	f->status = source_lookup(conf, mailbox, walk, id, elem, f, &next);
	free(id);
	id = next;
    }
    free(copy);
    if (f->status == SOURCE_FOLDER_OK && id == NULL)
	f->status = SOURCE_FOLDER_EMPTY;
    if (f->status == SOURCE_FOLDER_OK) {
	f->id = id;
	http_resp_free(&f->resp);
	http_resp_init(&f->resp);
    } else
	free(id);
    return (f->status);
}

/* source_resolve_free - release what source_resolve() filled in */

void    source_resolve_free(struct source_folder *f)
{
    free(f->id);
    f->id = NULL;
    free(f->elem);
    f->elem = NULL;
    http_resp_free(&f->resp);
}
