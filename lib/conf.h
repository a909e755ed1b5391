/*
 * NAME
 *	conf 3h
 * SUMMARY
 *	m365relay.conf: one INI-style file for every program
 * SYNOPSIS
 *	#include "conf.h"
 * DESCRIPTION
 *	conf_load() parses the file named by path (M365_CONFFILE by
 *	default: $(sysconfdir)/m365relay.conf) into a struct conf.  Every
 *	problem is appended to errors as one line "file:line: problem"
 *	(all problems, not just the first; strbuf_line(): past the
 *	buffer's cap the list ends with a note that more were not shown);
 *	the result is NULL when there was any error.  A key that an older
 *	version knew and that is gone (save_to_sent_items) is such an error,
 *	naming why and what to do.  Every parameter is declared once in the table in
 *	conf.c with its type and default; contrib/m365relay.conf.sample
 *	and m365relay.conf(5) list the same keys.
 *
 *	Sections:
 *	[global]           cloud, login_url, graph_url, graph_resource,
 *	                   ca_file, state_dir, user, log_file, timeout,
 *	                   connect_timeout, idle_timeout,
 *	                   token_retry_interval,
 *	                   max_message_size, upload_hosts,
 *	                   upload_budget, ledger_lifetime,
 *	                   sent_items_wait, concurrency_wait,
 *	                   sendmail_path
 *	                   metrics_file, expiry_warning, keepalive_after,
 *	                   admin_address (metrics.h, alert.h)
 *	                   ca_extra_file, proxy, no_proxy,
 *	                   proxy_credentials_file (proxy.h)
 *	[milter]           socket, socket_mode, pid_file, mode,
 *	                   unknown_sender, rewrite_sender, rewrite_from,
 *	                   add_reply_to, add_message_id, message_id_domain,
 *	                   memory_limit, tmp_dir, deliver_domains,
 *	                   on_internal_error, on_graph_error,
 *	                   on_account_offline, timeout
 *	[source NAME]      account, mailbox, folder, deliver_to,
 *	                   recipients, envelope_sender, after
 *	                   (read | move:FOLDER | delete), reject_folder,
 *	                   interval, page_size, notify,
 *	                   max_message_size
 *	[account NAME]     tenant, client_id, auth, secret_file,
 *	                   certificate_file, key_file, jwt_alg, mailbox,
 *	                   senders, default, scopes,
 *	                   max_message_size (default: the [global] value),
 *	                   large_messages, secret_expires, proxy, no_proxy,
 *	                   proxy_credentials_file, rbac_probe_mailbox
 *
 *	[source NAME] sections are m365-fetch's; names follow the account
 *	name rules and are unique among sources (a source and an account
 *	may share a name).  After the whole file is read, conf_load()
 *	resolves each source's account (it may be defined anywhere in the
 *	file) into conf_source.acct and fills in its mailbox from the
 *	account when unset; deliver_to is split into deliver_host and
 *	deliver_port.  conf_source() finds a source by name.
 *
 *	At least one [account NAME] section is required: a file without
 *	one (empty, truncated, only [global]) is an error, so that every
 *	program defers instead of bouncing for want of an account.  A
 *	UTF-8 byte order mark at the start of the file is skipped.
 *
 *	conf_account_for_sender() first looks for an account whose own
 *	mailbox is the sender (an account always sends for its mailbox;
 *	the first such account in file order), then implements "first
 *	match wins" over the accounts' senders patterns in file order,
 *	then the default account.  Patterns: "user@example.com",
 *	"@example.com" or "*@example.com" (domain), shell globs (fnmatch,
 *	case-insensitive), "<>" (null sender).
 *
 *	conf_warnings() appends one "FILE:LINE: warning: ..." line per
 *	setting that is valid but lets mail be accepted that cannot be
 *	sent as configured (for -n); it returns the number of lines.
 *
 *	The [milter] keys have defaults for everything, so the section is
 *	optional; conf->milter is always filled in.  Unset strings are NULL
 *	(pid_file, message_id_domain: the host name, tmp_dir: $TMPDIR or
 *	/tmp, deliver_domains: every recipient).
 *
 *	conf_check_secrets() verifies that secret and key files exist and
 *	are private (mode 0600-like, owned by the running user); it is
 *	separate from conf_load() because only the user that reads them
 *	can judge ownership.
 */
#ifndef M365_CONF_H
#define M365_CONF_H

#include <sys/types.h>

#include "strbuf.h"

enum conf_auth {
    CONF_AUTH_DELEGATED = 0,		/* device code / browser sign-in */
    CONF_AUTH_SECRET = 1,		/* client credentials, secret */
    CONF_AUTH_CERTIFICATE = 2,		/* client credentials, JWT */
};

/* large_messages: the draft and upload path for mail over 4 MB (deliver.c) */
enum conf_large {
    CONF_LARGE_AUTO = 0,		/* when Mail.ReadWrite was granted */
    CONF_LARGE_YES = 1,			/* always; sign-in asks for it */
    CONF_LARGE_NO = 2,			/* never: such mail bounces */
};

enum conf_jwt_alg {
    CONF_JWT_PS256 = 0,			/* default: PS256 + x5t#S256 */
    CONF_JWT_RS256 = 1,			/* RS256 + x5t (SHA-1) */
};

struct conf_account {
    char   *name;
    char   *tenant;			/* GUID or domain; required */
    char   *client_id;			/* required */
    enum conf_auth auth;
    char   *secret_file;		/* auth = secret */
    char   *certificate_file;		/* auth = certificate */
    char   *key_file;			/* auth = certificate */
    enum conf_jwt_alg jwt_alg;
    char   *mailbox;			/* the sending mailbox (UPN/SMTP) */
    char  **senders;			/* patterns, NULL-terminated */
    int     is_default;			/* default = yes */
    char   *scopes;			/* extra delegated scopes, or NULL */
    long    max_message_size;		/* bytes; default [global]'s */
    enum conf_large large_messages;	/* default auto */
    long    secret_expires;		/* epoch of YYYY-MM-DD, 0: unset */
    char   *proxy;			/* or NULL: [global]'s (proxy.h) */
    char   *no_proxy;			/* or NULL: [global]'s */
    char   *proxy_credentials_file;	/* or NULL: [global]'s */
    char   *rbac_probe_mailbox;		/* a mailbox the app must not reach */
    const char *file;			/* where the section starts */
    int     line;
    struct conf_account *next;
};

enum conf_milter_mode {
    CONF_MILTER_FILTER = 0,		/* policy/rewrite; Postfix transport sends */
    CONF_MILTER_DELIVER = 1,		/* the milter sends at end of message */
};

/* What the milter answers when something goes wrong (OpenDKIM-style). */
enum conf_action {
    CONF_ACTION_TEMPFAIL = 0,		/* 451 4.x.x */
    CONF_ACTION_ACCEPT = 1,		/* let the message through untouched */
    CONF_ACTION_REJECT = 2,		/* 550/554 5.x.x */
};

struct conf_milter {
    char   *socket;			/* inet:, inet6:PORT@HOST, unix:, local:PATH */
    long    socket_mode;		/* unix socket permissions, 0660 */
    char   *pid_file;			/* or NULL */
    enum conf_milter_mode mode;
    int     unknown_sender_reject;	/* unknown_sender = accept|reject */
    int     rewrite_sender;		/* MAIL FROM -> account mailbox */
    int     rewrite_from;		/* From: -> account mailbox */
    int     add_reply_to;		/* with rewrite_from: Reply-To: old From */
    int     add_message_id;		/* add a Message-ID when missing */
    char   *message_id_domain;		/* NULL: the host name */
    long    memory_limit;		/* body bytes in memory, then spooled */
    char   *tmp_dir;			/* where bodies are spooled, or NULL */
    char  **deliver_domains;		/* deliver mode: NULL = all recipients;
					 * else NULL-terminated, see
					 * conf_milter_delivers() */
    enum conf_action on_internal_error;	/* bug, I/O, out of memory */
    enum conf_action on_graph_error;	/* Graph/token endpoint unreachable */
    enum conf_action on_account_offline;	/* sign-in required */
    long    timeout;			/* libmilter timeout, seconds */
};

/* [source NAME] mode: mail into the MTA, or NDRs back as DSNs (issue 12). */
enum conf_source_mode {
    CONF_SOURCE_MAIL = 0,		/* inject each message to recipients */
    CONF_SOURCE_BOUNCES = 1,		/* NDRs -> DSNs to the original sender */
};

enum conf_after {
    CONF_AFTER_READ = 0,		/* mark read (default) */
    CONF_AFTER_MOVE = 1,		/* move to after_folder */
    CONF_AFTER_DELETE = 2,		/* delete (goes to Deleted Items) */
};

/* [source NAME]: one mailbox folder that m365-fetch injects into the MTA. */
struct conf_source {
    char   *name;
    char   *account;			/* [account NAME] that reads; required */
    const struct conf_account *acct;	/* resolved by conf_load() */
    char   *mailbox;			/* default: the account's mailbox */
    char   *folder;			/* default "inbox"; well-known or name */
    char   *deliver_to;			/* smtp://127.0.0.1:25, smtp://[::1]:25,
					 * or "sendmail"; required; as written */
    char   *deliver_host;		/* from deliver_to: "127.0.0.1", "::1"
					 * (no brackets), a host name; NULL
					 * for sendmail */
    long    deliver_port;		/* from deliver_to: default 25; 0 for
					 * sendmail */
    char  **recipients;			/* envelope recipients; required;
					 * NULL-terminated; user@domain or a
					 * bare local user name */
    char   *envelope_sender;		/* NULL: the message's sender; else
					 * this address ("<>" = null sender) */
    enum conf_after after;
    char   *after_folder;		/* after = move:FOLDER */
    char   *reject_folder;		/* 5xx from the MTA: move here; NULL:
					 * leave it, flagged, and log */
    long    interval;			/* seconds between rounds; 60 */
    long    page_size;			/* odata.maxpagesize; 50 */
    char   *notify;			/* admin address told when offline */
    long    max_message_size;		/* $value larger: parked; 150 MB */
    int     mode;			/* enum conf_source_mode */
    char   *bounce_from;		/* DSN From:, default MAILER-DAEMON@host */
    char   *unmatched;			/* "keep" or "postmaster:ADDR" */
    char   *unmatched_to;		/* ADDR of postmaster:ADDR, else NULL */
    const char *file;
    int     line;
    struct conf_source *next;
};

struct conf {
    char   *path;
    char   *cloud;			/* global|usgov|usgov-dod|china */
    char   *login_url;			/* e.g. https://login.microsoftonline.com */
    char   *graph_url;			/* e.g. https://graph.microsoft.com */
    char   *graph_resource;		/* scope prefix; default by cloud */
    char   *ca_file;			/* CA bundle instead of the system one */
    char   *ca_extra_file;		/* CAs added to it (TLS inspection) */
    char   *proxy;			/* http://HOST:PORT, "none" or NULL */
    char   *no_proxy;			/* hosts that bypass it, or NULL */
    char   *proxy_credentials_file;	/* user:password for it, or NULL */
    char   *state_dir;			/* token store, throttle state */
    char   *user;			/* unprivileged owner of state files */
    char   *log_file;			/* NULL: syslog; "stderr"; path */
    long    timeout;			/* seconds per HTTP request */
    long    connect_timeout;		/* seconds */
    long    idle_timeout;		/* seconds an unused connection is
					 * kept open (http.c) */
    long    token_retry_interval;	/* seconds a failed token request
					 * is remembered (auth.c) */
    long    max_message_size;		/* default for accounts; 35 MB */
    char  **upload_hosts;		/* host[:port] an uploadUrl may name;
					 * NULL-terminated; default by cloud */
    long    upload_budget;		/* bytes per 30 s per app + mailbox */
    long    ledger_lifetime;		/* seconds a send ledger record is
					 * kept (the MTA's queue lifetime) */
    long    sent_items_wait;		/* seconds after an ambiguous send
					 * during which a missing Sent Items
					 * copy defers instead of a resend */
    long    concurrency_wait;		/* seconds to wait for one of the
					 * GRAPH_SLOTS request slots of a
					 * mailbox, then defer */
    struct conf_account *accounts;	/* file order */
    struct conf_milter milter;		/* [milter] section */
    struct conf_source *sources;	/* [source NAME] sections, file order */
    char   *sendmail_path;		/* deliver_to = sendmail; /usr/sbin/sendmail */
    char   *metrics_file;		/* Prometheus textfile, or NULL */
    long    expiry_warning;		/* days before expiry to warn */
    long    keepalive_after;		/* seconds a refresh token may idle */
    char   *admin_address;		/* notices (alert.h), or NULL */
};

extern struct conf *conf_load(const char *path, struct strbuf *errors);
extern void conf_free(struct conf *);
extern struct conf_account *conf_account(const struct conf *, const char *name);
extern struct conf_account *conf_account_for_sender(const struct conf *,
						            const char *sender);
extern int conf_check_secrets(const struct conf *, struct strbuf *errors);
extern int conf_warnings(const struct conf *, struct strbuf *warnings);
extern const char *conf_auth_name(enum conf_auth);
extern struct conf_source *conf_source(const struct conf *, const char *name);

/*
 * conf_upload_host_ok - may an upload session's uploadUrl (an https URL
 * Graph returned) be used: is its host[:port] in upload_hosts?  An entry
 * without a port allows only the default port 443.
 */
extern int conf_upload_host_ok(const struct conf *, const char *url);

/* conf_max_message_size - the largest max_message_size of any account */
extern long conf_max_message_size(const struct conf *);

/* conf_user_ids - uid/gid of the "user" key; -1 when unset/unknown */
extern int conf_user_ids(const struct conf *, uid_t *, gid_t *);

/*
 * conf_parse_deliver - a [source]'s deliver_to: "sendmail" (*host NULL,
 * *port 0) or smtp://HOST[:PORT] (*host new, IPv6 without brackets;
 * port 1-65535, default 25).  0, or -1 with the problem and its fix in
 * why.  The one parser: conf_load() and inject_create() use it.
 */
extern int conf_parse_deliver(const char *value, char **host, long *port,
			              char *why, size_t len);

/*
 * conf_milter_delivers - deliver mode: is rcpt (angle brackets allowed)
 * one that the milter sends through Graph?  Never one without a domain
 * ("root"); else 1 when deliver_domains is unset, else when the
 * recipient's domain (one final dot ignored) is listed: "example.com"
 * matches that domain, ".example.com" its subdomains; case-insensitive.
 */
extern int conf_milter_delivers(const struct conf *, const char *rcpt);

/*
 * conf_check_socket - is spec a libmilter socket the milter may use
 * (inet:PORT@HOST, inet6:PORT@HOST, unix:/PATH, local:/PATH)?  0, or -1
 * with the problem and its fix in why.  conf_socket_path() - the file
 * name of a unix: or local: socket, NULL for an inet one.
 */
extern int conf_check_socket(const char *spec, char *why, size_t len);
extern const char *conf_socket_path(const char *spec);

/*
 * Defaults of the table in conf.c that code without a parsed file needs
 * (http_create(NULL)); the table's entries are written with them.
 */
#define CONF_DEF_TIMEOUT		60	/* [global] timeout */
#define CONF_DEF_CONNECT_TIMEOUT	15	/* [global] connect_timeout */
#define CONF_DEF_IDLE_TIMEOUT	60	/* [global] idle_timeout */
#define CONF_UPLOAD_WINDOW		30	/* seconds of upload_budget */

/* Default file, from configure's sysconfdir. */
#ifndef M365_CONFFILE
#define M365_CONFFILE "/etc/m365relay.conf"
#endif
#ifndef M365_STATEDIR
#define M365_STATEDIR "/var/lib/m365relay"
#endif
/* Directory of the milter's default socket (unix:M365_RUNDIR/milter.sock). */
#ifndef M365_RUNDIR
#define M365_RUNDIR "/run/m365relay"
#endif

#endif
