/*
 * NAME
 *	m365ctl 8
 * SUMMARY
 *	sign in, consent, connection test and status for m365relay
 * SYNOPSIS
 *	m365ctl [-c FILE] [-v] COMMAND [ARGS]
 *	m365ctl -n | -V
 * DESCRIPTION
 *	Commands:
 *	  login ACCOUNT [--device-code | --browser | --paste]
 *	  consent-url ACCOUNT
 *	  test ACCOUNT [--fresh] [--send RCPT]
 *	  test [--source] SOURCE [--fresh]
 *	  status [--json] [NAME...]
 *	  status --prometheus [--output FILE]
 *	  keepalive
 *	  logout ACCOUNT
 *	  rbac ACCOUNT (ctl_rbac.c)
 *	  check
 *	See m365ctl(8).  This file holds main(), the option parsing and
 *	the small commands (status, logout, check, consent-url); login is
 *	in ctl_login.c, test in ctl_test.c, the helpers they share in
 *	ctl_util.c (ctl.h).  Nothing calls back into this file.
 *
 *	status also shows the [source NAME] sections of m365-fetch from
 *	their state files (fetchstate_load(): read only, without the
 *	source's lock, which m365-fetch takes without waiting - probing it
 *	could make a running poller skip a round).
 * DIAGNOSTICS
 *	Exit 0 on success, 1 when the operation failed (a test step, a
 *	declined sign-in), 64 usage error, 75 Microsoft could not be
 *	reached (try again), 78 configuration error.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>
#include <curl/curl.h>

#include "conf.h"
#include "ctl.h"
#include "fetchstate.h"
#include "log.h"
#include "oauth.h"
#include "proxy.h"
#include "resolve.h"
#include "source.h"
#include "statefile.h"
#include "strbuf.h"
#include "tokstore.h"
#include "util.h"

static const char *ctl_conf_path = M365_CONFFILE;

/* ctl_usage - the synopsis, to stderr */

static int ctl_usage(const char *why)
{
    if (why)
	fprintf(stderr, "m365ctl: %s\n", why);
    fprintf(stderr,
	    "usage: m365ctl [-c FILE] [-v] COMMAND [ARGS]\n"
	    "commands:\n"
	    "  login ACCOUNT [--device-code | --browser | --paste]\n"
	    "                          sign in a delegated account, store its tokens\n"
	    "  consent-url ACCOUNT     print the admin-consent URL of the tenant\n"
	    "  test ACCOUNT [--fresh] [--send RCPT]\n"
	    "                          connection test, optionally send a test message\n"
	    "  test [--source] SOURCE [--fresh]\n"
	    "                          connection test of an inbound [source]: mailbox\n"
	    "                          folder, permissions, deliver_to\n"
	    "  status [--json] [NAME...]\n"
	    "                          state of each account and [source] (or those named)\n"
	    "  status --prometheus [--output FILE]\n"
	    "                          metrics in the Prometheus text format\n"
	    "  keepalive               timer run: refresh idle tokens, expiry warnings,\n"
	    "                          notices to admin_address, metrics_file\n"
	    "  logout ACCOUNT          remove the stored tokens of an account\n"
	    "  rbac ACCOUNT            Exchange Online commands that limit an app-only\n"
	    "                          account's app to this configuration's mailboxes\n"
	    "  check                   check the configuration (same as -n)\n"
	    "options: -c FILE (default %s), -n check, -v verbose, -V version\n",
	    M365_CONFFILE);
    return (EX_USAGE);
}

/* ctl_account_sources - "a, b": the sources an account reads for; count */

static int ctl_account_sources(const struct conf *conf,
			               const struct conf_account *acct,
			               struct strbuf *names)
{
    const struct conf_source *src;
    int     n = 0;

    for (src = conf->sources; src; src = src->next) {
	if (src->acct != acct && (src->account == NULL
				  || strcmp(src->account, acct->name) != 0))
	    continue;
	if (names)
	    strbuf_printf(names, "%s%s", n ? ", " : "", src->name);
	n++;
    }
    return (n);
}

/*
 * ctl_prepare_state - make sure state_dir/tokens exists and will belong
 * to the relay's user, and warn when token files written now could not
 * be read by m365-relay later.
 */
static int ctl_prepare_state(const struct conf *conf)
{
    char    err[512];
    uid_t   uid = (uid_t) -1;
    gid_t   gid = (gid_t) -1;
    int     have_user, fd;

    if (conf->state_dir == NULL || conf->state_dir[0] == 0) {
	fprintf(stderr, "m365ctl: no state_dir in [global] of %s\n",
		conf->path ? conf->path : ctl_conf_path);
	return (-1);
    }
    have_user = (conf->user && conf->user[0]
		 && conf_user_ids(conf, &uid, &gid) == 0);
    if (geteuid() == 0) {
	if (conf->user == NULL || conf->user[0] == 0)
	    fprintf(stderr, "m365ctl: warning: no \"user\" in [global]: token "
		    "files will belong to root, and m365-relay (which refuses "
		    "to run as root) cannot read them\n");
	else if (!have_user)
	    fprintf(stderr, "m365ctl: warning: user \"%s\" ([global] user) "
		    "does not exist: token files stay owned by root and "
		    "m365-relay cannot read them; create the user "
		    "(adduser --system %s) and sign in again\n",
		    conf->user, conf->user);
    } else if (have_user && uid != geteuid()) {
	fprintf(stderr, "m365ctl: warning: running as uid %ld, but m365-relay "
		"runs as \"%s\" (uid %ld): token files written now belong to "
		"uid %ld and the relay cannot read them; run m365ctl as root "
		"or as %s\n", (long) geteuid(), conf->user, (long) uid,
		(long) geteuid(), conf->user);
    }
    /* state_dir/tokens, given to the [global] user when root makes it. */
    if ((fd = statefile_dir(conf, STATEFILE_TOKENS, 0, err,
			    sizeof(err))) < 0) {
	fprintf(stderr, "m365ctl: %s\n", err);
	return (-1);
    }
    (void) close(fd);
    return (0);
}

/* ctl_find_account - the named account, or a message listing the others */

static const struct conf_account *ctl_find_account(const struct conf *conf,
						           const char *name)
{
    const struct conf_account *a;

    if ((a = conf_account(conf, name)) != NULL)
	return (a);
    fprintf(stderr, "m365ctl: no [account %s] in %s; accounts:", name,
	    conf->path ? conf->path : ctl_conf_path);
    for (a = conf->accounts; a; a = a->next)
	fprintf(stderr, " %s", a->name);
    fprintf(stderr, "%s\n", conf->accounts ? "" : " (none)");
    return (NULL);
}

/* ctl_list_names - " a b c" or " (none)": accounts or sources, to stderr */

static void ctl_list_names(const struct conf *conf, int sources)
{
    const struct conf_account *a;
    const struct conf_source *s;

    if (sources) {
	for (s = conf->sources; s; s = s->next)
	    fprintf(stderr, " %s", s->name);
	fprintf(stderr, "%s", conf->sources ? "" : " (none)");
    } else {
	for (a = conf->accounts; a; a = a->next)
	    fprintf(stderr, " %s", a->name);
	fprintf(stderr, "%s", conf->accounts ? "" : " (none)");
    }
}

/* ctl_find_name - is name an account or a source?  Else say which exist */

static int ctl_find_name(const struct conf *conf, const char *name)
{
    if (conf_account(conf, name) != NULL || conf_source(conf, name) != NULL)
	return (0);
    fprintf(stderr, "m365ctl: no [account %s] or [source %s] in %s; "
	    "accounts:", name, name, conf->path ? conf->path : ctl_conf_path);
    ctl_list_names(conf, 0);
    fprintf(stderr, "; sources:");
    ctl_list_names(conf, 1);
    fprintf(stderr, "\n");
    return (-1);
}

/* ctl_account_state - one word for the state of an account */

static const char *ctl_account_state(const struct conf_account *acct,
				             const struct tokstore *ts, time_t now)
{
    if (acct->auth == CONF_AUTH_DELEGATED) {
	if (ts->offline)
	    return ("offline");
	if (ts->refresh_token == NULL || ts->refresh_token[0] == 0)
	    return ("not signed in");
	return ("online");
    }
    if (ts->access_token && ts->access_expires > now)
	return ("online");
    if (ts->offline)
	return ("offline");
    if (ts->last_error && ts->last_error[0])
	return ("error");
    if (ts->token_requests == 0 && ts->access_token == NULL)
	return ("never used");
    return ("online");
}

/* ctl_json_time - epoch seconds, or null */

static void ctl_json_time(cJSON *obj, const char *key, time_t t)
{
    if (t > 0)
	cJSON_AddNumberToObject(obj, key, (double) t);
    else
	cJSON_AddNullToObject(obj, key);
}

/* ctl_json_str - a string, or null */

static void ctl_json_str(cJSON *obj, const char *key, const char *s)
{
    if (s && *s)
	cJSON_AddStringToObject(obj, key, s);
    else
	cJSON_AddNullToObject(obj, key);
}

/*
 * ctl_status_duplicates - may a send that broke off be sent twice?  From
 * the granted scopes or the token's roles (resolve_readable()); m365ctl
 * test asks Graph.  obj: the JSON form ("duplicates", "duplicates_why",
 * "duplicates_remedy"), else one line for humans.
 */
static void ctl_status_duplicates(const struct conf *conf,
				          const struct conf_account *acct,
				          cJSON *obj)
{
    char    why[600], remedy[400], line[1200];
    const char *word;
    int     has;

    has = resolve_readable(conf, acct, NULL, why, sizeof(why));
    resolve_remedy(conf, acct, remedy, sizeof(remedy));
    word = has > 0 ? "prevented" : has == 0 ? "possible" : "unknown";
    if (obj) {
	cJSON_AddStringToObject(obj, "duplicates", word);
	ctl_json_str(obj, "duplicates_why", why);
	ctl_json_str(obj, "duplicates_remedy", has > 0 ? NULL : remedy);
	return;
    }
    if (has > 0)
	snprintf(line, sizeof(line), "prevented: Sent Items is readable "
		 "(%s); a send that broke off is looked for there first", why);
    else if (has == 0)
	snprintf(line, sizeof(line), "possible: a send that broke off is "
		 "sent again without a look in Sent Items (%s lacks %s); to "
		 "prevent them, %s", why, resolve_perm(acct), remedy);
    else
	snprintf(line, sizeof(line), "unknown (%s): m365ctl test %s checks "
		 "it; %s prevents them", why, acct->name, resolve_perm(acct));
    printf("  duplicates:     %s\n", line);
}

/* ctl_status_json - one account as a JSON object; never token values */

static cJSON *ctl_status_json(const struct conf *conf,
			              const struct conf_account *acct,
			              const struct tokstore *ts, time_t now)
{
    cJSON  *obj = cJSON_CreateObject();
    cJSON  *srcs;
    const struct conf_source *src;
    int     delegated = (acct->auth == CONF_AUTH_DELEGATED);

    cJSON_AddStringToObject(obj, "kind", "account");
    cJSON_AddStringToObject(obj, "name", acct->name);
    cJSON_AddStringToObject(obj, "auth", conf_auth_name(acct->auth));
    ctl_json_str(obj, "mailbox", acct->mailbox);
    cJSON_AddStringToObject(obj, "state", ctl_account_state(acct, ts, now));
    ctl_json_time(obj, "access_expires",
		  ts->access_token ? ts->access_expires : 0);
    if (ts->access_token && ts->access_expires > now)
	cJSON_AddNumberToObject(obj, "access_expires_in",
				(double) (ts->access_expires - now));
    else
	cJSON_AddNullToObject(obj, "access_expires_in");
    ctl_json_time(obj, "refresh_issued",
		  delegated && ts->refresh_token ? ts->refresh_issued : 0);
    if (delegated && ts->refresh_token && ts->refresh_issued > 0)
	cJSON_AddNumberToObject(obj, "refresh_age_days",
			   (double) ((now - ts->refresh_issued) / 86400));
    else
	cJSON_AddNullToObject(obj, "refresh_age_days");
    ctl_json_time(obj, "signed_in", ts->signed_in);
    ctl_json_str(obj, "scope", ts->scope);
    cJSON_AddNumberToObject(obj, "token_requests", (double) ts->token_requests);
    ctl_json_str(obj, "last_error", ts->last_error);
    ctl_json_time(obj, "last_error_at",
		  ts->last_error && ts->last_error[0] ? ts->last_error_at : 0);
    ctl_json_str(obj, "remedy", ts->remedy);
    ctl_status_duplicates(conf, acct, obj);
    ctl_expiry_status(conf, acct, obj, now);
    srcs = cJSON_AddArrayToObject(obj, "sources");
    for (src = conf->sources; srcs && src; src = src->next)
	if (src->acct == acct)
	    cJSON_AddItemToArray(srcs, cJSON_CreateString(src->name));
    return (obj);
}

/* ctl_status_text - one account for humans; never token values */

static void ctl_status_text(const struct conf *conf,
			            const struct conf_account *acct,
			            const struct tokstore *ts, time_t now)
{
    struct strbuf names;
    char    when[80];
    char    exp[80];

    printf("account %s\n", acct->name);
    printf("  auth:           %s\n", conf_auth_name(acct->auth));
    printf("  mailbox:        %s\n", acct->mailbox ? acct->mailbox : "-");
    printf("  state:          %s\n", ctl_account_state(acct, ts, now));
    if (ts->access_token) {
	ctl_fmt_expiry(exp, sizeof(exp), ts->access_expires, now);
	ctl_fmt_time(when, sizeof(when), ts->access_expires);
	printf("  access token:   expires %s (%s)%s\n", exp, when,
	       ts->offline ? ", not used while offline" : "");
    } else
	printf("  access token:   none\n");
    if (acct->auth == CONF_AUTH_DELEGATED) {
	if (ts->refresh_token && ts->refresh_issued > 0) {
	    ctl_fmt_time(when, sizeof(when), ts->refresh_issued);
	    printf("  refresh token:  issued %ld days ago (%s)\n",
		   (long) ((now - ts->refresh_issued) / 86400), when);
	} else if (ts->refresh_token)
	    printf("  refresh token:  present\n");
	else
	    printf("  refresh token:  none: sign in with m365ctl login %s\n",
		   acct->name);
	if (ts->signed_in > 0) {
	    ctl_fmt_time(when, sizeof(when), ts->signed_in);
	    printf("  signed in:      %s\n", when);
	}
	if (ts->scope && ts->scope[0])
	    printf("  scopes:         %s\n", ts->scope);
    }
    printf("  token requests: %ld\n", ts->token_requests);
    if (ts->last_error && ts->last_error[0]) {
	ctl_fmt_time(when, sizeof(when), ts->last_error_at);
	printf("  last error:     %s (%s)\n", ts->last_error, when);
	if (ts->remedy && ts->remedy[0])
	    printf("  remedy:         %s\n", ts->remedy);
    }
    ctl_status_duplicates(conf, acct, NULL);
    ctl_expiry_status(conf, acct, NULL, now);
    strbuf_init(&names, STRBUF_MAX_SMALL);
    if (ctl_account_sources(conf, acct, &names) > 0)
	printf("  sources:        %s\n", strbuf_log_str(&names));
    strbuf_free(&names);
}

/*
 * ctl_source_state - one word for a source: online, offline, never run,
 * or error (the state file could not be read: load_err).
 */
static const char *ctl_source_state(const struct fetchstate *st,
				            const char *load_err)
{
    if (load_err)
	return ("error");
    if (st->offline)
	return ("offline");
    if (st->last_round <= 0 && st->last_success <= 0)
	return ("never run");
    return ("online");
}

/* ctl_source_round_ok - did the last round complete? */

static int ctl_source_round_ok(const struct fetchstate *st)
{
    return (st->last_round > 0 && st->last_success >= st->last_round);
}

/* ctl_source_json - one source as a JSON object ("kind": "source") */

static cJSON *ctl_source_json(const struct conf_source *src,
			              const struct fetchstate *st,
			              const char *load_err, time_t now)
{
    cJSON  *obj = cJSON_CreateObject();
    const char *mb = source_mailbox(src);

    cJSON_AddStringToObject(obj, "kind", "source");
    cJSON_AddStringToObject(obj, "name", src->name);
    ctl_json_str(obj, "account", src->account);
    ctl_json_str(obj, "mailbox", mb);
    ctl_json_str(obj, "folder", source_folder(src));
    ctl_json_str(obj, "deliver_to", src->deliver_to);
    cJSON_AddStringToObject(obj, "state", ctl_source_state(st, load_err));
    ctl_json_time(obj, "offline_since", st->offline ? st->offline_since : 0);
    ctl_json_time(obj, "last_round", st->last_round);
    ctl_json_time(obj, "last_success", st->last_success);
    if (st->last_round > 0)
	cJSON_AddBoolToObject(obj, "last_round_ok", ctl_source_round_ok(st));
    else
	cJSON_AddNullToObject(obj, "last_round_ok");
    ctl_json_time(obj, "not_before", st->not_before > now ? st->not_before : 0);
    cJSON_AddNumberToObject(obj, "injected", (double) st->injected);
    cJSON_AddNumberToObject(obj, "rejected", (double) st->rejected);
    cJSON_AddNumberToObject(obj, "pending", (double) st->npending);
    if (src->mode == CONF_SOURCE_BOUNCES) {
	/* Issue 12: reports seen, DSNs the MTA took, reports of no send. */
	cJSON_AddStringToObject(obj, "mode", "bounces");
	cJSON_AddNumberToObject(obj, "bounce_reports",
				(double) st->bounce_reports);
	cJSON_AddNumberToObject(obj, "dsns_injected", (double) st->bounce_dsns);
	cJSON_AddNumberToObject(obj, "unmatched", (double) st->bounce_unmatched);
    }
    ctl_json_str(obj, "last_error", load_err ? load_err : st->last_error);
    ctl_json_str(obj, "remedy", load_err ? NULL : st->remedy);
    return (obj);
}

/* ctl_source_text - one source for humans */

static void ctl_source_text(const struct conf_source *src,
			            const struct fetchstate *st,
			            const char *load_err, time_t now)
{
    const char *mb = source_mailbox(src);
    char    when[80];

    printf("source %s\n", src->name);
    printf("  account:        %s\n", src->account ? src->account : "-");
    printf("  mailbox:        %s\n", mb ? mb : "(the signed-in user's)");
    printf("  folder:         %s\n", source_folder(src));
    printf("  deliver_to:     %s\n", src->deliver_to ? src->deliver_to : "-");
    printf("  state:          %s\n", ctl_source_state(st, load_err));
    if (load_err) {
	printf("  last error:     %s\n", load_err);
	return;
    }
    if (st->offline && st->offline_since > 0) {
	ctl_fmt_time(when, sizeof(when), st->offline_since);
	printf("  offline since:  %s\n", when);
    }
    ctl_fmt_time(when, sizeof(when), st->last_round);
    printf("  last round:     %s%s\n", when, st->last_round <= 0 ? "" :
	   ctl_source_round_ok(st) ? " (completed)" : " (did not complete)");
    ctl_fmt_time(when, sizeof(when), st->last_success);
    printf("  last success:   %s\n", when);
    if (st->not_before > now) {
	ctl_fmt_time(when, sizeof(when), st->not_before);
	printf("  retry after:    %s (Microsoft 365 asked to wait)\n", when);
    }
    printf("  messages:       %ld injected, %ld rejected, %lu pending\n",
	   st->injected, st->rejected, (unsigned long) st->npending);
    if (src->mode == CONF_SOURCE_BOUNCES)
	printf("  mode:           bounces\n  bounce reports: %ld\n"
	       "  DSNs injected:  %ld\n  unmatched:      %ld\n",
	       st->bounce_reports, st->bounce_dsns, st->bounce_unmatched);
    if (st->last_error && st->last_error[0])
	printf("  last error:     %s%s\n", st->last_error, !st->offline
	       && ctl_source_round_ok(st) ? " (before the last completed "
	       "round)" : "");
    if (st->remedy && st->remedy[0])
	printf("  remedy:         %s\n", st->remedy);
}

/* ctl_status_named - was this name given (or none at all)? */

static int ctl_status_named(int argc, char **argv, int named, const char *name)
{
    int     i;

    if (!named)
	return (1);
    for (i = 0; i < argc; i++)
	if (argv[i][0] != '-' && strcmp(argv[i], name) == 0)
	    return (1);
    return (0);
}

/* ctl_status - status [--json] [NAME...]: accounts, then sources */

static int ctl_status(const struct conf *conf, int argc, char **argv)
{
    const struct conf_account *acct;
    const struct conf_source *src;
    struct tokstore ts;
    struct fetchstate st;
    char    err[1024];
    cJSON  *arr = NULL;
    char   *text;
    time_t  now = time(NULL);
    int     json = 0;
    int     rc = CTL_OK;
    int     named = 0;
    int     i;
    int     first = 1;
    int     prometheus = 0;
    const char *output = NULL;

    for (i = 0; i < argc; i++) {
	if (strcmp(argv[i], "--json") == 0)
	    json = 1;
	else if (strcmp(argv[i], "--prometheus") == 0)
	    prometheus = 1;
	else if (strcmp(argv[i], "--output") == 0 && i + 1 < argc)
	    output = argv[++i];
	else if (argv[i][0] == '-')
	    return (ctl_usage("status: unknown option"));
	else if (ctl_find_name(conf, argv[i]) < 0)
	    return (EX_USAGE);
	else
	    named++;
    }
    if (output && !prometheus)
	return (ctl_usage("status: --output goes with --prometheus"));
    if (prometheus && (json || named))
	return (ctl_usage("status: --prometheus takes no --json or NAME"));
    if (prometheus)
	return (ctl_prometheus(conf, output));
    if (json)
	arr = cJSON_CreateArray();
    for (acct = conf->accounts; acct; acct = acct->next) {
	if (!ctl_status_named(argc, argv, named, acct->name))
	    continue;
	memset(&ts, 0, sizeof(ts));
	if (tokstore_load(conf, acct->name, &ts, err, sizeof(err)) < 0) {
	    fprintf(stderr, "m365ctl: account %s: %s\n", acct->name, err);
	    tokstore_clear(&ts);
	    rc = CTL_FAIL;
	    continue;
	}
	if (json) {
	    cJSON_AddItemToArray(arr, ctl_status_json(conf, acct, &ts, now));
	} else {
	    if (!first)
		printf("\n");
	    ctl_status_text(conf, acct, &ts, now);
	    first = 0;
	}
	tokstore_clear(&ts);
    }
    for (src = conf->sources; src; src = src->next) {
	const char *load_err = NULL;

	if (!ctl_status_named(argc, argv, named, src->name))
	    continue;
	if (fetchstate_load(conf, src->name, &st, err, sizeof(err)) < 0) {
	    fprintf(stderr, "m365ctl: source %s: %s\n", src->name, err);
	    load_err = err;
	    rc = CTL_FAIL;
	}
	if (json) {
	    cJSON_AddItemToArray(arr, ctl_source_json(src, &st, load_err, now));
	} else {
	    if (!first)
		printf("\n");
	    ctl_source_text(src, &st, load_err, now);
	    first = 0;
	}
	fetchstate_clear(&st);
    }
    if (json) {
	if ((text = cJSON_Print(arr)) != NULL) {
	    printf("%s\n", text);
	    free(text);
	}
	cJSON_Delete(arr);
    } else if (conf->accounts == NULL)
	printf("no accounts in %s\n", conf->path ? conf->path : ctl_conf_path);
    return (rc);
}

/* ctl_logout - remove the stored tokens of an account */

static int ctl_logout(const struct conf *conf, const struct conf_account *acct)
{
    struct tokstore ts;
    struct stat st;
    char    path[4096];
    char    err[512];
    int     had_rt, had_at;

    if (tokstore_path(conf, acct->name, ".json", path, sizeof(path)) < 0) {
	fprintf(stderr, "m365ctl: account %s: token store path too long\n",
		acct->name);
	return (CTL_FAIL);
    }
    if (stat(path, &st) < 0 && errno == ENOENT) {
	printf("account %s: nothing to remove (no token file %s)\n",
	       acct->name, path);
	return (CTL_OK);
    }
    memset(&ts, 0, sizeof(ts));
    had_rt = had_at = 0;
    if (tokstore_load(conf, acct->name, &ts, err, sizeof(err)) == 0) {
	had_rt = (ts.refresh_token != NULL);
	had_at = (ts.access_token != NULL);
    }
    tokstore_clear(&ts);
    if (tokstore_remove(conf, acct->name, err, sizeof(err)) < 0) {
	fprintf(stderr, "m365ctl: account %s: %s\n", acct->name, err);
	return (CTL_FAIL);
    }
    printf("account %s: removed %s (%s%s%s)\n", acct->name, path,
	   had_at ? "access token" : "",
	   had_at && had_rt ? ", " : "",
	   had_rt ? "refresh token" : (had_at ? "" : "state only"));
    if (acct->auth == CONF_AUTH_DELEGATED)
	printf("account %s: mail for it stays queued until m365ctl login %s; "
	       "the grant itself stays valid at Microsoft until revoked "
	       "(Entra admin center: Users > Revoke sessions)\n",
	       acct->name, acct->name);
    return (CTL_OK);
}

/* ctl_consent_url - print the admin-consent URL and who must open it */

static int ctl_consent_url(const struct conf *conf,
			           const struct conf_account *acct)
{
    struct strbuf names;
    char   *url;
    int     nsrc;

    if ((url = oauth_consent_url(conf, acct)) == NULL) {
	fprintf(stderr, "m365ctl: account %s: cannot build the consent URL: "
		"it would be longer than %lu bytes (check tenant, client_id "
		"and scopes)\n", acct->name, (unsigned long) STRBUF_MAX_SMALL);
	return (CTL_FAIL);
    }
    printf("%s\n", url);
    strbuf_init(&names, STRBUF_MAX_SMALL);
    nsrc = ctl_account_sources(conf, acct, &names);
    if (acct->auth == CONF_AUTH_DELEGATED)
	printf("A Global Administrator or Privileged Role Administrator of "
	       "tenant %s opens this URL to consent to the delegated "
	       "permissions of app %s for all users; without it each user "
	       "consents at the first m365ctl login (if the tenant allows "
	       "user consent).\n", acct->tenant, acct->client_id);
    else
	printf("A Global Administrator or Privileged Role Administrator of "
	       "tenant %s must open this URL and accept the application "
	       "permission Mail.Send for app %s; then restrict it to the "
	       "sending mailboxes with RBAC for Applications in Exchange "
	       "Online.\n", acct->tenant, acct->client_id);
    if (nsrc > 0 && acct->auth == CONF_AUTH_DELEGATED)
	printf("The account reads mail for source(s) %s: the delegated "
	       "permission Mail.ReadWrite (Mail.ReadWrite.Shared for another "
	       "user's or a shared mailbox) is part of the consent.\n",
	       strbuf_log_str(&names));
    else if (nsrc > 0)
	printf("The account reads mail for source(s) %s: grant the "
	       "application permission Mail.ReadWrite as well, and include "
	       "the mailboxes those sources read in the RBAC scope.\n",
	       strbuf_log_str(&names));
    strbuf_free(&names);
    free(url);
    return (CTL_OK);
}

/* ctl_load - load the configuration or print every problem */

static struct conf *ctl_load(const char *path)
{
    struct strbuf errors;
    struct conf *conf;

    strbuf_init(&errors, STRBUF_MAX_JSON);
    conf = conf_load(path, &errors);
    file_set_service_user(conf ? conf->user : NULL);	/* root trusts */
    if (conf == NULL) {
	if (errors.len > 0) {
	    fputs(errors.data, stderr);
	    if (errors.data[errors.len - 1] != '\n')
		fputc('\n', stderr);
	} else
	    fprintf(stderr, "%s: cannot load the configuration\n", path);
    }
    strbuf_free(&errors);
    return (conf);
}

/* ctl_check - configuration and secret files; "configuration OK" */

static int ctl_check(const struct conf *conf)
{
    struct strbuf errors;
    int     rc = CTL_OK;

    strbuf_init(&errors, STRBUF_MAX_JSON);
    if (conf_check_secrets(conf, &errors) < 0) {
	if (errors.len > 0) {
	    fputs(errors.data, stderr);
	    if (errors.data[errors.len - 1] != '\n')
		fputc('\n', stderr);
	}
	rc = EX_CONFIG;
    } else {
	proxy_print(conf, stdout);	/* which proxy, which CAs */
	printf("configuration OK\n");
    }
    strbuf_free(&errors);
    return (rc);
}

/* ctl_one_account - the single ACCOUNT argument of a command */

static const struct conf_account *ctl_one_account(const struct conf *conf,
						          const char *cmd,
						          const char *name)
{
    char    why[200];

    if (name == NULL) {
	snprintf(why, sizeof(why), "%s: missing ACCOUNT", cmd);
	ctl_usage(why);
	return (NULL);
    }
    return (ctl_find_account(conf, name));
}

/* ctl_cmd_login - login ACCOUNT [--device-code | --browser | --paste] */

static int ctl_cmd_login(const struct conf *conf, int argc, char **argv)
{
    const struct conf_account *acct;
    enum ctl_login_method method = CTL_LOGIN_DEVICE;
    const char *name = NULL;
    int     i;

    for (i = 0; i < argc; i++) {
	if (strcmp(argv[i], "--device-code") == 0)
	    method = CTL_LOGIN_DEVICE;
	else if (strcmp(argv[i], "--browser") == 0)
	    method = CTL_LOGIN_BROWSER;
	else if (strcmp(argv[i], "--paste") == 0)
	    method = CTL_LOGIN_PASTE;
	else if (argv[i][0] == '-')
	    return (ctl_usage("login: unknown option"));
	else if (name)
	    return (ctl_usage("login: one ACCOUNT only"));
	else
	    name = argv[i];
    }
    if ((acct = ctl_one_account(conf, "login", name)) == NULL)
	return (EX_USAGE);
    if (acct->auth != CONF_AUTH_DELEGATED) {
	struct strbuf names;

	strbuf_init(&names, STRBUF_MAX_SMALL);
	fprintf(stderr, "m365ctl: account %s uses app-only authentication "
		"(auth = %s): it needs no sign-in.  An administrator grants "
		"the application permission Mail.Send once (m365ctl "
		"consent-url %s); check it with m365ctl test %s\n",
		acct->name, conf_auth_name(acct->auth), acct->name, acct->name);
	if (ctl_account_sources(conf, acct, &names) > 0)
	    fprintf(stderr, "m365ctl: account %s reads mail for source(s) %s: "
		    "that needs the application permission Mail.ReadWrite as "
		    "well; check with m365ctl test SOURCE\n", acct->name,
		    strbuf_log_str(&names));
	strbuf_free(&names);
	return (EX_USAGE);
    }
    if (ctl_prepare_state(conf) < 0)
	return (EX_CONFIG);
    return (ctl_login(conf, acct, method));
}

/*
 * ctl_cmd_test - test ACCOUNT [--fresh] [--send RCPT], or test [--source]
 * SOURCE [--fresh].  A name that is both an account and a source means
 * the account unless --source is given.
 */
static int ctl_cmd_test(const struct conf *conf, int argc, char **argv)
{
    const struct conf_account *acct;
    const struct conf_source *src = NULL;
    const char *name = NULL;
    const char *rcpt = NULL;
    int     fresh = 0;
    int     source = 0;
    int     i;

    for (i = 0; i < argc; i++) {
	if (strcmp(argv[i], "--send") == 0) {
	    if (i + 1 >= argc)
		return (ctl_usage("test: --send needs a recipient address"));
	    rcpt = argv[++i];
	} else if (strncmp(argv[i], "--send=", 7) == 0)
	    rcpt = argv[i] + 7;
	else if (strcmp(argv[i], "--fresh") == 0)
	    fresh = 1;
	else if (strcmp(argv[i], "--source") == 0)
	    source = 1;
	else if (argv[i][0] == '-')
	    return (ctl_usage("test: unknown option"));
	else if (name)
	    return (ctl_usage("test: one ACCOUNT or SOURCE only"));
	else
	    name = argv[i];
    }
    if (name && (source || conf_account(conf, name) == NULL)
	&& (src = conf_source(conf, name)) != NULL) {
	if (rcpt)
	    return (ctl_usage("test: --send tests an account, not a source "
			      "(m365ctl test ACCOUNT --send RCPT)"));
	if (src->acct == NULL) {
	    fprintf(stderr, "m365ctl: [source %s] names no usable account\n",
		    src->name);
	    return (EX_CONFIG);
	}
	if (ctl_prepare_state(conf) < 0)
	    return (EX_CONFIG);
	return (ctl_test_source(conf, src, fresh));
    }
    if (source) {
	if (name == NULL)
	    return (ctl_usage("test: --source needs a SOURCE"));
	fprintf(stderr, "m365ctl: no [source %s] in %s; sources:", name,
		conf->path ? conf->path : ctl_conf_path);
	ctl_list_names(conf, 1);
	fprintf(stderr, "\n");
	return (EX_USAGE);
    }
    if (name && conf_account(conf, name) == NULL) {
	(void) ctl_find_name(conf, name);
	return (EX_USAGE);
    }
    if (rcpt && (rcpt[0] == 0 || strchr(rcpt, '@') == NULL
		 || strpbrk(rcpt, " \t\r\n<>,;\"()") != NULL))
	return (ctl_usage("test: --send needs a plain address like "
			  "user@example.com"));
    if ((acct = ctl_one_account(conf, "test", name)) == NULL)
	return (EX_USAGE);
    if (ctl_prepare_state(conf) < 0)
	return (EX_CONFIG);
    return (ctl_test(conf, acct, fresh, rcpt));
}

/* ctl_cmd_simple - logout / consent-url / rbac ACCOUNT */

static int ctl_cmd_simple(const struct conf *conf, const char *cmd,
			          int argc, char **argv)
{
    const struct conf_account *acct;
    char    why[200];

    if (argc > 1 || (argc == 1 && argv[0][0] == '-')) {
	snprintf(why, sizeof(why), "usage: m365ctl %s ACCOUNT", cmd);
	return (ctl_usage(why));
    }
    if ((acct = ctl_one_account(conf, cmd, argc ? argv[0] : NULL)) == NULL)
	return (EX_USAGE);
    if (strcmp(cmd, "logout") == 0)
	return (ctl_logout(conf, acct));
    if (strcmp(cmd, "rbac") == 0)
	return (ctl_rbac(conf, acct));	/* ctl_rbac.c */
    return (ctl_consent_url(conf, acct));
}

/* main - global options, configuration, one command */

int     main(int argc, char **argv)
{
    struct conf *conf;
    const char *cmd;
    int     verbose = 0;
    int     check_only = 0;
    int     rc;
    int     ch;

    util_nodump();			/* secrets never in a core file */
    log_open("m365ctl");
    while ((ch = getopt(argc, argv, "+c:hnvV")) != -1) {
	switch (ch) {
	case 'c':
	    ctl_conf_path = optarg;
	    break;
	case 'n':
	    check_only = 1;
	    break;
	case 'v':
	    verbose++;
	    break;
	case 'V':
	    printf("m365ctl (%s) %s\n", PACKAGE_NAME, PACKAGE_VERSION);
	    return (EX_OK);
	case 'h':
	    ctl_usage(NULL);
	    return (EX_OK);
	default:
	    return (ctl_usage(NULL));
	}
    }
    argc -= optind;
    argv += optind;
    if (check_only) {
	if (argc > 0)
	    return (ctl_usage("-n takes no command"));
	cmd = "check";
    } else if (argc < 1) {
	return (ctl_usage("missing COMMAND"));
    } else {
	cmd = argv[0];
	argc--;
	argv++;
    }
    if (strcmp(cmd, "help") == 0) {
	ctl_usage(NULL);
	return (EX_OK);
    }
    if (strcmp(cmd, "login") && strcmp(cmd, "test") && strcmp(cmd, "status")
	&& strcmp(cmd, "logout") && strcmp(cmd, "check")
	&& strcmp(cmd, "consent-url") && strcmp(cmd, "keepalive")
	&& strcmp(cmd, "rbac"))
	return (ctl_usage("unknown command"));
    if (strcmp(cmd, "check") == 0 && argc > 0)
	return (ctl_usage("check takes no arguments"));

    log_set_verbose(verbose);
    log_to_stderr(1);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
	fprintf(stderr, "m365ctl: cannot initialize libcurl\n");
	return (EX_SOFTWARE);
    }
    if ((conf = ctl_load(ctl_conf_path)) == NULL) {
	curl_global_cleanup();
	return (EX_CONFIG);
    }
    /* Records go to stderr already; also to log_file for the audit. */
    if (conf->log_file && strcmp(conf->log_file, "syslog") != 0
	&& strcmp(conf->log_file, "stderr") != 0
	&& log_to_file(conf->log_file) < 0)
	fprintf(stderr, "m365ctl: warning: cannot open log_file %s: %s\n",
		conf->log_file, strerror(errno));

    if (strcmp(cmd, "check") == 0)
	rc = ctl_check(conf);
    else if (strcmp(cmd, "status") == 0)
	rc = ctl_status(conf, argc, argv);
    else if (strcmp(cmd, "keepalive") == 0)
	rc = argc ? ctl_usage("keepalive takes no arguments") :
	    ctl_keepalive(conf);
    else if (strcmp(cmd, "login") == 0)
	rc = ctl_cmd_login(conf, argc, argv);
    else if (strcmp(cmd, "test") == 0)
	rc = ctl_cmd_test(conf, argc, argv);
    else
	rc = ctl_cmd_simple(conf, cmd, argc, argv);

    conf_free(conf);
    curl_global_cleanup();
    return (rc);
}
