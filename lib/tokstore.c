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
 *	When running as root (m365ctl), the tokens directory, the token
 *	files and the lock files are given to conf->user, so that the
 *	unprivileged relay can use them.  Account names that could leave
 *	the tokens directory ('/' anywhere, a leading '.') are refused.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>
#include <openssl/crypto.h>

#include "json.h"
#include "log.h"
#include "tokstore.h"
#include "util.h"

#define TOKSTORE_FILE_MAX	(256UL * 1024)

/* tokstore_name_ok - an account name that stays inside the directory */

static int tokstore_name_ok(const char *account)
{
    return (account != NULL && *account != 0 && *account != '.'
	    && strchr(account, '/') == NULL);
}

/* tokstore_path - state_dir/tokens/ACCOUNT plus suffix */

int     tokstore_path(const struct conf *conf, const char *account,
		              const char *suffix, char *buf, size_t len)
{
    int     n;

    if (!tokstore_name_ok(account) || conf->state_dir == NULL)
	return (-1);
    n = snprintf(buf, len, "%s/tokens/%s%s", conf->state_dir, account,
		 suffix ? suffix : "");
    if (n < 0 || (size_t) n >= len)
	return (-1);
    return (0);
}

/* tokstore_path_err - tokstore_path() with an error text */

static int tokstore_path_err(const struct conf *conf, const char *account,
			             const char *suffix, char *buf, size_t len,
			             char *err, size_t errlen)
{
    if (!tokstore_name_ok(account)) {
	snprintf(err, errlen, "invalid account name \"%s\": it must not be "
		 "empty, contain '/' or start with '.'", account ? account : "");
	return (-1);
    }
    if (conf->state_dir == NULL) {
	snprintf(err, errlen, "state_dir is not set in the configuration");
	return (-1);
    }
    if (tokstore_path(conf, account, suffix, buf, len) < 0) {
	snprintf(err, errlen, "token store path too long: %s/tokens/%s%s",
		 conf->state_dir, account, suffix ? suffix : "");
	return (-1);
    }
    return (0);
}

/*
 * tokstore_owner - who should own state files: conf->user when running
 * as root, else (uid_t) -1 (keep).  Root without a usable user keeps
 * root ownership, with a warning: the relay could not read the files.
 */
static void tokstore_owner(const struct conf *conf, uid_t *uid, gid_t *gid)
{
    static int warned;

    *uid = (uid_t) -1;
    *gid = (gid_t) -1;
    if (geteuid() != 0)
	return;
    if (conf_user_ids(conf, uid, gid) < 0) {
	*uid = (uid_t) -1;
	*gid = (gid_t) -1;
	if (warned++)
	    return;
	if (conf->user && *conf->user)
	    msg_warn("user \"%s\" (from [global] user) is unknown: token files "
		     "stay owned by root and the relay cannot read them; "
		     "create the user or fix the user setting", conf->user);
	else
	    msg_warn("[global] user is not set: token files written by root "
		     "stay owned by root and the relay cannot read them");
    }
}

/*
 * tokstore_dir - make state_dir/tokens (0700, owned by the relay user)
 * and open it.  Root (m365ctl) works through descriptors only: the
 * relay user owns the state directory and could otherwise swap a name
 * for a symbolic link between a check and a chown.  Returns the open
 * tokens directory, or -1 with err set.
 */
static int tokstore_dir(const struct conf *conf, uid_t uid, gid_t gid,
			        char *err, size_t errlen)
{
    char    dir[PATH_MAX];
    struct stat st;
    int     created_state = 0;
    int     sfd, tfd;

    if (conf->state_dir == NULL || *conf->state_dir == 0) {
	snprintf(err, errlen, "state_dir is not set in the configuration");
	return (-1);
    }
    if (snprintf(dir, sizeof(dir), "%s/tokens", conf->state_dir)
	>= (int) sizeof(dir)) {
	snprintf(err, errlen, "state_dir path too long: %s", conf->state_dir);
	return (-1);
    }
    if (stat(conf->state_dir, &st) < 0 && errno == ENOENT)
	created_state = 1;
    if (mkdir_p(dir, 0700, err, errlen) < 0)
	return (-1);

    /*
     * Root gives the directories it made to the relay user; the state
     * directory only when it created it (an existing one is the
     * administrator's choice, and may be a symbolic link).
     */
    if (created_state)
	sfd = dir_open_owned(AT_FDCWD, conf->state_dir, conf->state_dir,
			     uid, gid, FILE_CLAIM, err, errlen);
    else if ((sfd = open(conf->state_dir, O_RDONLY | O_DIRECTORY
			 | O_CLOEXEC)) < 0)
	snprintf(err, errlen, "cannot open directory %s: %s",
		 conf->state_dir, strerror(errno));
    if (sfd < 0)
	return (-1);
    tfd = dir_open_owned(sfd, "tokens", dir, uid, gid, FILE_CLAIM,
			 err, errlen);
    close(sfd);
    return (tfd);
}

/* tokstore_load - read an account's entry; missing file = empty entry */

int     tokstore_load(const struct conf *conf, const char *account,
		              struct tokstore *ts, char *err, size_t errlen)
{
    char    path[PATH_MAX];
    cJSON  *root;
    int     rc;

    memset(ts, 0, sizeof(*ts));
    if (tokstore_path_err(conf, account, ".json", path, sizeof(path),
			  err, errlen) < 0)
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
    char    name[PATH_MAX];
    uid_t   uid;
    gid_t   gid;
    int     ret, dfd;

    if (tokstore_path_err(conf, account, ".json", path, sizeof(path),
			  err, errlen) < 0)
	return (-1);
    snprintf(name, sizeof(name), "%s.json", account);
    tokstore_owner(conf, &uid, &gid);
    if ((dfd = tokstore_dir(conf, uid, gid, err, errlen)) < 0)
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
	close(dfd);
	return (-1);
    }
    json_wipe(root);
    cJSON_Delete(root);
    ret = file_write_at(dfd, name, path, json, strlen(json), 0600, uid, gid,
			err, errlen);
    close(dfd);
    OPENSSL_cleanse(json, strlen(json));
    cJSON_free(json);
    return (ret);
}

/*
 * tokstore_flock - flock(LOCK_EX) that waits at most max_wait seconds
 * (< 0: no limit).  A bounded wait polls with LOCK_NB, 10 ms at first,
 * then up to 200 ms between tries.  0, -1 with errno, -2 timed out.
 */
static int tokstore_flock(int fd, double max_wait)
{
    struct timespec ts;
    double  deadline = time_mono() + max_wait;
    long    nap = 10;			/* milliseconds */

    for (;;) {
	if (flock(fd, max_wait < 0 ? LOCK_EX : LOCK_EX | LOCK_NB) == 0)
	    return (0);
	if (errno == EINTR)
	    continue;
	if (errno != EWOULDBLOCK || max_wait < 0)
	    return (-1);
	if (time_mono() >= deadline)
	    return (-2);
	ts.tv_sec = 0;
	ts.tv_nsec = nap * 1000000L;
	(void) nanosleep(&ts, NULL);
	if (nap < 200)
	    nap *= 2;
    }
}

/*
 * tokstore_lock_wait - exclusive lock shared by all processes of an
 * account, waiting at most max_wait seconds (< 0: no limit).  Returns
 * the descriptor, -1 with err set, or -2 when the wait timed out.
 *
 * As root the lock file is opened like every file root keeps for the
 * relay user (file_open_owned()): no symbolic link, one link only, owned
 * by root or that user, and given to the user through the descriptor.
 */
int     tokstore_lock_wait(const struct conf *conf, const char *account,
			           double max_wait, char *err, size_t errlen)
{
    char    path[PATH_MAX];
    char    name[PATH_MAX];
    uid_t   uid;
    gid_t   gid;
    int     fd, dfd, rc;

    if (tokstore_path_err(conf, account, ".lock", path, sizeof(path),
			  err, errlen) < 0)
	return (-1);
    snprintf(name, sizeof(name), "%s.lock", account);
    tokstore_owner(conf, &uid, &gid);
    if ((dfd = tokstore_dir(conf, uid, gid, err, errlen)) < 0)
	return (-1);
    fd = file_open_owned(dfd, name, path, "lock file", O_RDWR | O_CREAT,
			 0600, uid, gid, FILE_CLAIM, err, errlen);
    close(dfd);
    if (fd < 0) {
	if (errno == EACCES && strlen(err) + 1 < errlen)
	    snprintf(err + strlen(err), errlen - strlen(err), " (the tokens "
		     "directory must belong to the user the relay runs as: "
		     "run m365ctl as root with [global] user set, or chown "
		     "it)");
	return (-1);
    }
    if ((rc = tokstore_flock(fd, max_wait)) < 0) {
	if (rc == -2)
	    snprintf(err, errlen, "timed out after %.0f s waiting for the "
		     "token lock %s (another process holds it)", max_wait,
		     path);
	else
	    snprintf(err, errlen, "cannot lock %s: %s", path,
		     strerror(errno));
	close(fd);
	return (rc);
    }
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
    if (fd >= 0) {
	(void) flock(fd, LOCK_UN);
	close(fd);
    }
}

/*
 * tokstore_remove - forget an account's tokens (logout).  The lock file
 * stays: removing it could let two processes hold "the" lock at once.
 */
int     tokstore_remove(const struct conf *conf, const char *account,
			        char *err, size_t errlen)
{
    char    path[PATH_MAX];

    if (tokstore_path_err(conf, account, ".json", path, sizeof(path),
			  err, errlen) < 0)
	return (-1);
    if (unlink(path) < 0 && errno != ENOENT) {
	snprintf(err, errlen, "cannot remove token file %s: %s", path,
		 strerror(errno));
	return (-1);
    }
    return (0);
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
