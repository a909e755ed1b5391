/*
 * NAME
 *	tokstore 3
 * SUMMARY
 *	per-account token store in state_dir, shared by all processes
 * DESCRIPTION
 *	See tokstore.h.  File format (JSON object, one per account):
 *
 *	  {"access_token": "...", "access_expires": 1700000000,
 *	   "refresh_token": "...", "refresh_issued": 1700000000,
 *	   "signed_in": 1700000000, "scope": "...", "offline": false,
 *	   "last_error": "...", "remedy": "...", "last_error_at": 0,
 *	   "token_requests": 12}
 *
 *	Strings that are not set are written as null.  tokstore_load()
 *	overwrites the whole struct without freeing what it held: call
 *	tokstore_clear() first when reusing one.
 *
 *	The files are made, locked and written by statefile.c: when
 *	running as root (m365ctl), the tokens directory, the token files
 *	and the lock files are given to conf->user, so that the
 *	unprivileged relay can use them.  Account names that could leave
 *	the tokens directory ('/' anywhere, a leading '.') are refused.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>
#include <openssl/crypto.h>

#include "json.h"
#include "statefile.h"
#include "tokstore.h"
#include "util.h"

#define TOKSTORE_FILE_MAX	(256UL * 1024)

/* tokstore_path - state_dir/tokens/ACCOUNT plus suffix */

int     tokstore_path(const struct conf *conf, const char *account,
		              const char *suffix, char *buf, size_t len)
{
    return (statefile_path(conf, STATEFILE_TOKENS, account, suffix, buf,
			   len));
}

/* tokstore_load - read an account's entry; missing file = empty entry */

int     tokstore_load(const struct conf *conf, const char *account,
		              struct tokstore *ts, char *err, size_t errlen)
{
    char    path[PATH_MAX];
    cJSON  *root;
    int     rc;

    memset(ts, 0, sizeof(*ts));
    if (statefile_path_err(conf, STATEFILE_TOKENS, account, ".json", path,
			   sizeof(path), err, errlen) < 0)
	return (-1);
    rc = json_file_load(path, "token file", TOKSTORE_FILE_MAX,
			JSON_FILE_PRIVATE, &root, err, errlen);
    if (rc == -2)
	snprintf(err, errlen, "token file %s is damaged (not a JSON object): "
		 "remove it and sign in again (m365ctl login %s)", path,
		 account);
    if (rc <= 0)
	return (rc == 0 ? 0 : -1);
    ts->access_token = json_get_str(root, "access_token");
    ts->access_expires = (time_t) json_get_num(root, "access_expires");
    ts->refresh_token = json_get_str(root, "refresh_token");
    ts->refresh_issued = (time_t) json_get_num(root, "refresh_issued");
    ts->signed_in = (time_t) json_get_num(root, "signed_in");
    ts->scope = json_get_str(root, "scope");
    ts->offline = json_get_num(root, "offline") != 0;
    ts->last_error = json_get_str(root, "last_error");
    ts->remedy = json_get_str(root, "remedy");
    ts->last_error_at = (time_t) json_get_num(root, "last_error_at");
    ts->token_requests = (long) json_get_num(root, "token_requests");
    json_wipe(root);
    cJSON_Delete(root);
    return (0);
}

/* tokstore_save - write an account's entry atomically, mode 0600 */

int     tokstore_save(const struct conf *conf, const char *account,
		              const struct tokstore *ts, char *err, size_t errlen)
{
    char    path[PATH_MAX];
    cJSON  *root;
    char   *json = NULL;
    int     ret;

    if (statefile_path_err(conf, STATEFILE_TOKENS, account, ".json", path,
			   sizeof(path), err, errlen) < 0)
	return (-1);
    if ((root = cJSON_CreateObject()) == NULL
	|| json_add_str(root, "access_token", ts->access_token) < 0
	|| !cJSON_AddNumberToObject(root, "access_expires",
				    (double) ts->access_expires)
	|| json_add_str(root, "refresh_token", ts->refresh_token) < 0
	|| !cJSON_AddNumberToObject(root, "refresh_issued",
				    (double) ts->refresh_issued)
	|| !cJSON_AddNumberToObject(root, "signed_in", (double) ts->signed_in)
	|| json_add_str(root, "scope", ts->scope) < 0
	|| !cJSON_AddBoolToObject(root, "offline", ts->offline != 0)
	|| json_add_str(root, "last_error", ts->last_error) < 0
	|| json_add_str(root, "remedy", ts->remedy) < 0
	|| !cJSON_AddNumberToObject(root, "last_error_at",
				    (double) ts->last_error_at)
	|| !cJSON_AddNumberToObject(root, "token_requests",
				    (double) ts->token_requests)
	|| (json = cJSON_Print(root)) == NULL) {
	snprintf(err, errlen, "out of memory writing token file %s", path);
	if (root)
	    json_wipe(root);
	cJSON_Delete(root);
	return (-1);
    }
    json_wipe(root);
    cJSON_Delete(root);
    ret = statefile_write(conf, STATEFILE_TOKENS, account, ".json", json,
			  strlen(json), err, errlen);
    OPENSSL_cleanse(json, strlen(json));
    cJSON_free(json);
    return (ret);
}

/*
 * tokstore_lock_wait - exclusive lock shared by all processes of an
 * account, waiting at most max_wait seconds (< 0: no limit).  Returns
 * the descriptor, -1 with err set, or -2 when the wait timed out.  The
 * lock file is opened by statefile_lock(): as root no symbolic link, one
 * link only, owned by root or the [global] user, given to that user.
 */
int     tokstore_lock_wait(const struct conf *conf, const char *account,
			           double max_wait, char *err, size_t errlen)
{
    char    path[PATH_MAX];
    int     fd;

    fd = statefile_lock(conf, STATEFILE_TOKENS, account, ".lock", max_wait,
			err, errlen);
    if (fd == -1 && errno == EACCES && strlen(err) + 1 < errlen)
	snprintf(err + strlen(err), errlen - strlen(err), " (the tokens "
		 "directory must belong to the user the relay runs as: "
		 "run m365ctl as root with [global] user set, or chown it)");
    if (fd == -2 && tokstore_path(conf, account, ".lock", path,
				  sizeof(path)) == 0)
	snprintf(err, errlen, "timed out after %.0f s waiting for the token "
		 "lock %s (another process holds it)", max_wait, path);
    return (fd);
}

/* tokstore_lock - tokstore_lock_wait() without a time limit */

int     tokstore_lock(const struct conf *conf, const char *account,
		              char *err, size_t errlen)
{
    return (tokstore_lock_wait(conf, account, -1, err, errlen));
}

/* tokstore_unlock - release the lock from tokstore_lock() */

void    tokstore_unlock(int fd)
{
    statefile_unlock(fd);
}

/*
 * tokstore_remove - forget an account's tokens (logout).  The lock file
 * stays: removing it could let two processes hold "the" lock at once.
 */
int     tokstore_remove(const struct conf *conf, const char *account,
			        char *err, size_t errlen)
{
    return (statefile_remove(conf, STATEFILE_TOKENS, account, ".json",
			     err, errlen));
}

/* tokstore_clear - wipe and free an entry; it is empty afterwards */

void    tokstore_clear(struct tokstore *ts)
{
    xfree_secret(ts->access_token);
    xfree_secret(ts->refresh_token);
    xfree_secret(ts->scope);
    xfree_secret(ts->last_error);
    xfree_secret(ts->remedy);
    memset(ts, 0, sizeof(*ts));
}
