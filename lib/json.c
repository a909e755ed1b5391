/*
 * NAME
 *	json 3
 * SUMMARY
 *	cJSON member helpers and private JSON state files
 * DESCRIPTION
 *	See json.h.  Used by the token store and the m365-fetch state,
 *	which both keep one small JSON object per file in state_dir.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <cJSON.h>
#include <openssl/crypto.h>

#include "json.h"
#include "strbuf.h"
#include "util.h"

/* json_get_str - a non-empty string member as a copy, or NULL */

char   *json_get_str(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);

    return (cJSON_IsString(v) && v->valuestring && *v->valuestring ?
	    xstrdup(v->valuestring) : NULL);
}

/* json_get_num - a numeric (or boolean) member, or 0 */

double  json_get_num(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);

    if (cJSON_IsNumber(v))
	return (v->valuedouble);
    if (cJSON_IsBool(v))
	return (cJSON_IsTrue(v) ? 1 : 0);
    return (0);
}

/* json_add_str - a string member, or null */

int     json_add_str(cJSON *obj, const char *name, const char *value)
{
    if (value)
	return (cJSON_AddStringToObject(obj, name, value) ? 0 : -1);
    return (cJSON_AddNullToObject(obj, name) ? 0 : -1);
}

/* json_wipe - overwrite every string in a cJSON tree */

void    json_wipe(cJSON *item)
{
    for (; item != NULL; item = item->next) {
	if (item->valuestring)
	    OPENSSL_cleanse(item->valuestring, strlen(item->valuestring));
	if (item->child)
	    json_wipe(item->child);
    }
}

/* json_file_load - read and parse a state file; missing file = 0 */

int     json_file_load(const char *path, const char *what, size_t max,
		               int flags, cJSON **root, char *err,
		               size_t errlen)
{
    struct strbuf buf;
    int     fd;

    *root = NULL;
    /* Judge the file that is read, not the name (no lstat, then open). */
    if ((fd = file_open_checked(path, what, (flags & JSON_FILE_PRIVATE) ?
				FILE_PRIVATE : 0, err, errlen)) < 0)
	return (errno == ENOENT ? 0 : -1);
    if (file_read_fd(fd, path, max, &buf, err, errlen) < 0)
	return (-1);
    *root = cJSON_ParseWithLength(buf.data, buf.len);
    strbuf_cleanse(&buf);
    if (!cJSON_IsObject(*root)) {
	cJSON_Delete(*root);
	*root = NULL;
	return (-2);
    }
    return (1);
}
