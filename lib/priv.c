/*
 * NAME
 *	priv 3
 * SUMMARY
 *	look up the service user, drop root privileges (the daemons)
 * DESCRIPTION
 *	See priv.h.  The sequence is OpenSMTPD's (setgroups, setresgid,
 *	setresuid) with Postfix's attitude: every step is checked, and a
 *	failure stops the program rather than running half-privileged.
 */
#include "config.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "log.h"
#include "priv.h"
#include "strbuf.h"
#include "util.h"

/* priv_lookup - uid and primary gid of a user */

int     priv_lookup(const char *user, uid_t *uid, gid_t *gid,
		            char *err, size_t errlen)
{
    struct passwd *pw;

    if (user == NULL || *user == 0) {
	snprintf(err, errlen, "no user to run as: set \"user\" in the "
		 "[global] section of the configuration");
	return (-1);
    }
    errno = 0;
    if ((pw = getpwnam(user)) == NULL) {
	snprintf(err, errlen, "user \"%s\" does not exist%s%s: create it "
		 "(useradd --system %s) or set \"user\" in [global]", user,
		 errno ? ": " : "", errno ? strerror(errno) : "", user);
	return (-1);
    }
    *uid = pw->pw_uid;
    *gid = pw->pw_gid;
    return (0);
}

/* priv_drop - become user for good */

int     priv_drop(const char *user, char *err, size_t errlen)
{
    uid_t   uid, ruid, euid, suid;
    gid_t   gid, rgid, egid, sgid;

    if (geteuid() != 0)
	return (0);
    if (priv_lookup(user, &uid, &gid, err, errlen) < 0)
	return (-1);
    if (uid == 0) {
	snprintf(err, errlen, "user \"%s\" is root; the daemon must run as "
		 "an unprivileged user: set \"user\" in [global] to the "
		 "service account (default m365relay)", user);
	return (-1);
    }
    if (setgroups(1, &gid) < 0) {
	snprintf(err, errlen, "setgroups(%ld) for user %s: %s", (long) gid,
		 user, strerror(errno));
	return (-1);
    }
    if (setresgid(gid, gid, gid) < 0) {
	snprintf(err, errlen, "setresgid(%ld) for user %s: %s", (long) gid,
		 user, strerror(errno));
	return (-1);
    }
    if (setresuid(uid, uid, uid) < 0) {
	snprintf(err, errlen, "setresuid(%ld) for user %s: %s", (long) uid,
		 user, strerror(errno));
	return (-1);
    }

    /* Trust, but verify: no way back to root, all ids are the user's. */
    if (setuid(0) == 0 || seteuid(0) == 0) {
	snprintf(err, errlen, "could regain root after dropping privileges "
		 "to %s; refusing to run", user);
	return (-1);
    }
    if (getresuid(&ruid, &euid, &suid) < 0 || getresgid(&rgid, &egid, &sgid) < 0
	|| ruid != uid || euid != uid || suid != uid
	|| rgid != gid || egid != gid || sgid != gid) {
	snprintf(err, errlen, "user and group ids are not those of %s after "
		 "dropping privileges; refusing to run", user);
	return (-1);
    }
    /* The change of ids made the process dumpable again. */
    util_nodump();
    return (0);
}

/*
 * priv_as_user - act as uid/gid for a while (effective ids only), so that
 * files made meanwhile are born with that owner and no path that the
 * user controls is followed with root's rights.  The supplementary
 * groups become gid alone (priv_drop() does the same later).
 */
int     priv_as_user(uid_t uid, gid_t gid, char *err, size_t errlen)
{
    if (geteuid() != 0)
	return (0);
    if (setgroups(1, &gid) < 0 || setegid(gid) < 0) {
	snprintf(err, errlen, "cannot switch to group %ld: %s", (long) gid,
		 strerror(errno));
	return (-1);
    }
    if (seteuid(uid) < 0) {
	snprintf(err, errlen, "cannot switch to user %ld: %s", (long) uid,
		 strerror(errno));
	return (-1);
    }
    util_nodump();
    return (0);
}

/* priv_as_root - back to root after priv_as_user() */

int     priv_as_root(char *err, size_t errlen)
{
    uid_t   ruid, euid, suid;

    if (getresuid(&ruid, &euid, &suid) < 0 || euid == 0)
	return (0);
    if (suid != 0)
	return (0);				/* never was root */
    if (seteuid(0) < 0 || setegid(0) < 0) {
	snprintf(err, errlen, "cannot switch back to root: %s",
		 strerror(errno));
	return (-1);
    }
    util_nodump();
    return (0);
}

/*
 * priv_check_conf - "-n" of a daemon: as the user (secret files must
 * belong to the user that reads them), the secret and key files, then
 * the warnings (valid, but mail could be accepted that cannot go out);
 * both printed to stderr.  The exit status: EX_OK, EX_CONFIG, EX_OSERR.
 */
int     priv_check_conf(const struct conf *conf)
{
    struct strbuf errors;
    char    err[300];
    int     rc;

    if (priv_drop(conf->user, err, sizeof(err)) < 0) {
	fprintf(stderr, "%s\n", err);
	return (EX_OSERR);
    }
    strbuf_init(&errors, STRBUF_MAX_JSON);
    rc = conf_check_secrets(conf, &errors) < 0 || errors.len > 0;
    if (!rc)
	(void) conf_warnings(conf, &errors);
    fputs(strbuf_str(&errors), stderr);
    strbuf_free(&errors);
    return (rc ? EX_CONFIG : EX_OK);
}

/*
 * priv_service - at the start of a daemon: as root, the [global] user's
 * ids into *uid and *gid, and root trusts and creates files for that
 * user only (file_set_service_user()); 1.  Not root: 0, nothing changed.
 * -1 when the user does not exist; the cause and the fix go to stderr
 * and, unless quiet, to the log.
 */
int     priv_service(const struct conf *conf, const char *path, uid_t *uid,
		             gid_t *gid, int quiet)
{
    char    err[300];

    if (geteuid() != 0)
	return (0);
    if (priv_lookup(conf->user, uid, gid, err, sizeof(err)) < 0) {
	fprintf(stderr, "%s: %s\n", path, err);
	if (!quiet)
	    msg_error("%s", err);
	return (-1);
    }
    file_set_service_user(conf->user);
    return (1);
}

/*
 * priv_start - a daemon's start after conf_load(): the configuration's
 * errors (to stderr, and logged unless check_only), priv_service(),
 * and with check_only (-n) priv_check_conf() and "configuration OK".
 * Returns -1 when the daemon goes on (*have_user as priv_service()
 * returned it), else the exit status.
 */
int     priv_start(const struct conf *conf, const char *path,
		           const struct strbuf *errors, int check_only,
		           uid_t *uid, gid_t *gid, int *have_user)
{
    int     rc;

    if (conf == NULL || errors->len > 0) {
	fputs(strbuf_str(errors), stderr);
	if (!check_only)
	    msg_error_lines(strbuf_str(errors));
	return (EX_CONFIG);
    }
    /* As root: the user's ids; root trusts files of that user only. */
    if ((*have_user = priv_service(conf, path, uid, gid, check_only)) < 0)
	return (check_only ? EX_CONFIG : EX_OSERR);
    if (check_only) {
	/* As the user: secret files, then the warnings. */
	if ((rc = priv_check_conf(conf)) == EX_OK)
	    printf("configuration OK\n");
	return (rc);
    }
    return (-1);
}
