/*
 * NAME
 *	priv 3h
 * SUMMARY
 *	look up the service user, drop root privileges (the daemons)
 * SYNOPSIS
 *	#include "priv.h"
 * DESCRIPTION
 *	priv_lookup() finds the uid and primary gid of a user name.
 *
 *	priv_drop() is the one place where a daemon (m365-milter,
 *	m365-lmtpd) gives up root:
 *	setgroups(1, gid), setresgid(), setresuid(), each checked, then
 *	it verifies that root cannot be regained (setuid(0) must fail)
 *	and that real, effective and saved ids are the user's.  The user
 *	must not be root.  Called when not running as root, it changes
 *	nothing and succeeds.  Afterwards the process is made
 *	non-dumpable again (util_nodump(): the kernel resets that flag on
 *	every change of ids).
 *
 *	priv_as_user() switches the effective ids to a user for a while
 *	(the socket is created that way, so that it is born with the
 *	user's owner and root never acts on a path the user controls);
 *	priv_as_root() switches back.  Not running as root, both change
 *	nothing and succeed.
 *
 *	priv_service() is a daemon's first step after conf_load(): run as
 *	root, it looks up the [global] user (its ids to *uid, *gid) and
 *	makes root trust and create files for that user only
 *	(file_set_service_user()) and returns 1; not run as root it
 *	returns 0; -1 when the user does not exist (the cause and the fix
 *	printed to stderr, and logged unless quiet).
 *
 *	priv_check_conf() is a daemon's -n after conf_load(): it drops to
 *	the user, checks the secret and key files (conf_check_secrets())
 *	and prints their problems, else the warnings (conf_warnings()), to
 *	stderr; it returns the exit status (EX_OK, EX_CONFIG, EX_OSERR).
 *
 *	priv_start() is both, in a daemon's order: the configuration's
 *	errors (errors, as conf_load() and the daemon's own checks filled
 *	it; printed and, unless check_only, logged), priv_service(), and
 *	with check_only priv_check_conf() and "configuration OK".  It
 *	returns -1 when the daemon goes on, else the exit status.
 * DIAGNOSTICS
 *	All return 0, or -1 with err naming the cause and the fix; the
 *	caller exits with EX_OSERR (71).
 */
#ifndef M365_PRIV_H
#define M365_PRIV_H

#include <stddef.h>
#include <sys/types.h>

#include "conf.h"
#include "strbuf.h"

extern int priv_lookup(const char *user, uid_t *uid, gid_t *gid,
		               char *err, size_t errlen);
extern int priv_drop(const char *user, char *err, size_t errlen);
extern int priv_as_user(uid_t uid, gid_t gid, char *err, size_t errlen);
extern int priv_as_root(char *err, size_t errlen);
extern int priv_check_conf(const struct conf *);
extern int priv_service(const struct conf *, const char *path, uid_t *uid,
			        gid_t *gid, int quiet);
extern int priv_start(const struct conf *, const char *path,
		              const struct strbuf *errors, int check_only,
		              uid_t *uid, gid_t *gid, int *have_user);

#endif
