/*
 * NAME
 *	conf 3
 * SUMMARY
 *	m365relay.conf: parser, defaults, sender routing, secret checks
 * DESCRIPTION
 *	See conf.h and m365relay.conf(5).  The file is line-oriented:
 *
 *	    # comment            ; comment            (full lines only)
 *	    [global]
 *	    key = value          (value: rest of the line, trimmed)
 *	    [milter]
 *	    [account NAME]
 *	    [source NAME]
 *
 *	Every parameter is declared once in conf_params[] below, with its
 *	section, type, default (written in config syntax and parsed by the
 *	same code as a value from the file) and required flag.  Defaults
 *	that depend on other keys (the cloud's URLs, an account's
 *	max_message_size, the fallback user, a source's mailbox) are
 *	"derived" and filled in by conf_derive() after the whole file was
 *	read; so is a source's account, which may be defined after the
 *	source.
 *
 *	Parsing never stops at the first problem: each one adds a line
 *	"FILE:LINE: problem (hint)" to the caller's error buffer, and the
 *	result is NULL when there was at least one.
 * OWNERSHIP
 *	conf_load() returns a tree that conf_free() releases entirely;
 *	struct conf_account.file and struct conf_source.file point into
 *	struct conf.path, struct conf_source.acct into conf->accounts.
 * DIAGNOSTICS
 *	Nothing here exits or logs; errors go to the caller's strbuf.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "conf.h"
#include "proxy.h"
#include "util.h"

/* Where a parameter may appear, and how its value is parsed. */

enum conf_sect {
    SECT_NONE,				/* before the first header */
    SECT_BAD,				/* after a broken header: skip */
    SECT_GLOBAL,
    SECT_MILTER,
    SECT_ACCOUNT,
    SECT_SOURCE,
};

enum conf_type {
    T_CLOUD,				/* char *: one of conf_clouds[] */
    T_URL,				/* char *: https://..., no trailing / */
    T_PATH,				/* char *: absolute path */
    T_LOGDEST,				/* char *: syslog (NULL), stderr, path */
    T_WORD,				/* char *: no white space */
    T_IDENT,				/* char *: [A-Za-z0-9._-]+ */
    T_MAILBOX,				/* char *: local@domain */
    T_SENDERS,				/* char **: patterns */
    T_SCOPES,				/* char *: space-separated scopes */
    T_BOOL,				/* int */
    T_ENUM,				/* int-sized enum, from names[] */
    T_LONG,				/* long in [min, max] */
    T_SIZE,				/* long bytes, K/M suffix, [min, max] */
    T_TIME,				/* long seconds, s/m/h/d suffix, [min, max] */
    T_SOCKET,				/* char *: libmilter socket spec */
    T_OCTAL,				/* long: file mode, 0 to 0777 */
    T_DOMAIN,				/* char *: a domain name */
    T_DOMAINS,				/* char **: domains, ".sub" allowed */
    T_NAME,				/* char *: an [account NAME] name */
    T_TEXT,				/* char *: any text, no control chars */
    T_DELIVER,				/* char *: smtp://HOST[:PORT] | sendmail */
    T_RCPTS,				/* char **: addresses or local users */
    T_ADDRESS,				/* char *: local@domain */
    T_SENDER,				/* char *: local@domain or <> */
    T_AFTER,				/* enum conf_after (+ after_folder) */
    T_HOSTS,				/* char **: host or host:port */
    T_DATE,				/* long: YYYY-MM-DD, epoch of 00:00 UTC */
    T_PROXY,				/* char *: none | http://HOST:PORT */
};

struct conf_enum {
    const char *name;
    int     value;
};

static const struct conf_enum conf_auth_names[] = {
    {"delegated", CONF_AUTH_DELEGATED},
    {"secret", CONF_AUTH_SECRET},
    {"certificate", CONF_AUTH_CERTIFICATE},
    {0, 0},
};

static const struct conf_enum conf_jwt_names[] = {
    {"PS256", CONF_JWT_PS256},
    {"RS256", CONF_JWT_RS256},
    {0, 0},
};

static const struct conf_enum conf_milter_modes[] = {
    {"filter", CONF_MILTER_FILTER},
    {"deliver", CONF_MILTER_DELIVER},
    {0, 0},
};

static const struct conf_enum conf_unknown_sender_names[] = {
    {"accept", 0},
    {"reject", 1},
    {0, 0},
};

static const struct conf_enum conf_source_modes[] = {
    {"mail", CONF_SOURCE_MAIL},
    {"bounces", CONF_SOURCE_BOUNCES},
    {0, 0},
};

static const struct conf_enum conf_large_names[] = {
    {"auto", CONF_LARGE_AUTO},
    {"yes", CONF_LARGE_YES},
    {"no", CONF_LARGE_NO},
    {0, 0},
};

static const struct conf_enum conf_action_names[] = {
    {"tempfail", CONF_ACTION_TEMPFAIL},
    {"accept", CONF_ACTION_ACCEPT},
    {"reject", CONF_ACTION_REJECT},
    {0, 0},
};

/* National clouds (graph-facts.md section 6.7). */

/*
 * upload_hosts: where Exchange Online's upload sessions live (the
 * uploadUrl of createUploadSession is on the cloud's Outlook host, not
 * on Graph): outlook.office.com in the global cloud (Microsoft's
 * outlook-large-attachments page), outlook.office365.com as its other
 * name; the Exchange Online hosts of the national clouds.
 */
struct conf_cloud {
    const char *name;
    const char *login_url;
    const char *graph_url;
    const char *upload_hosts;
};

static const struct conf_cloud conf_clouds[] = {
    {"global", "https://login.microsoftonline.com",
    "https://graph.microsoft.com", "outlook.office.com outlook.office365.com"},
    {"usgov", "https://login.microsoftonline.us",
    "https://graph.microsoft.us", "outlook.office365.us"},
    {"usgov-dod", "https://login.microsoftonline.us",
    "https://dod-graph.microsoft.us", "outlook-dod.office365.us"},
    {"china", "https://login.chinacloudapi.cn",
    "https://microsoftgraph.chinacloudapi.cn", "partner.outlook.cn"},
    {0, 0, 0, 0},
};

#ifdef M365_USER_DEFAULT
#define DEF_USER	M365_USER_DEFAULT	/* "" when configure left it empty */
#else
#define DEF_USER	""
#endif
#define DEF_USER_FALLBACK "m365relay"

#define SIZE_K		1024L
#define SIZE_M		(1024L * 1024L)
#define TIME_M		60L
#define TIME_H		3600L
#define TIME_D		86400L
#define CONF_STR_(n)	#n
#define CONF_STR(n)	CONF_STR_(n)		/* a number, in config syntax */

struct conf_param {
    const char *name;
    enum conf_sect sect;
    size_t  offset;			/* in struct conf / conf_account */
    enum conf_type type;
    const char *def;			/* config syntax; NULL: unset/derived */
    int     required;
    long    min, max;			/* T_LONG, T_SIZE, T_TIME */
    const struct conf_enum *names;	/* T_ENUM */
};

#define G(f)	SECT_GLOBAL, offsetof(struct conf, f)
#define M(f)	SECT_MILTER, offsetof(struct conf, milter.f)
#define A(f)	SECT_ACCOUNT, offsetof(struct conf_account, f)
#define S(f)	SECT_SOURCE, offsetof(struct conf_source, f)

#define DEF_MILTER_SOCKET "unix:" M365_RUNDIR "/milter.sock"

/*
 * The one declaration of every parameter.  Columns: name, section +
 * field, type, default, required, range, enum names.  The order is the
 * order of m365relay.conf(5) and contrib/m365relay.conf.sample.
 */
static const struct conf_param conf_params[] = {
    /* [global] */
    {"cloud", G(cloud), T_CLOUD, "global", 0, 0, 0, 0},
    {"login_url", G(login_url), T_URL, 0 /* by cloud */ , 0, 0, 0, 0},
    {"graph_url", G(graph_url), T_URL, 0 /* by cloud */ , 0, 0, 0, 0},
    {"graph_resource", G(graph_resource), T_URL, 0 /* by cloud */ , 0,
    0, 0, 0},
    {"ca_file", G(ca_file), T_PATH, 0, 0, 0, 0, 0},
    {"ca_extra_file", G(ca_extra_file), T_PATH, 0, 0, 0, 0, 0},
    {"proxy", G(proxy), T_PROXY, 0 /* environment */ , 0, 0, 0, 0},
    {"no_proxy", G(no_proxy), T_TEXT, 0, 0, 0, 0, 0},
    {"proxy_credentials_file", G(proxy_credentials_file), T_PATH, 0, 0, 0,
    0, 0},
    {"state_dir", G(state_dir), T_PATH, M365_STATEDIR, 0, 0, 0, 0},
    {"user", G(user), T_WORD, DEF_USER, 0, 0, 0, 0},
    {"log_file", G(log_file), T_LOGDEST, 0 /* syslog */ , 0, 0, 0, 0},
    {"timeout", G(timeout), T_LONG, CONF_STR(CONF_DEF_TIMEOUT), 0, 1, 3600,
    0},
    {"connect_timeout", G(connect_timeout), T_LONG,
    CONF_STR(CONF_DEF_CONNECT_TIMEOUT), 0, 1, 600, 0},
    {"idle_timeout", G(idle_timeout), T_LONG,
    CONF_STR(CONF_DEF_IDLE_TIMEOUT), 0, 1, 3600, 0},
    {"token_retry_interval", G(token_retry_interval), T_LONG, "30", 0, 1,
    3600, 0},
    {"max_message_size", G(max_message_size), T_SIZE, "35M", 0,
    1 * SIZE_K, 150 * SIZE_M, 0},
    {"upload_hosts", G(upload_hosts), T_HOSTS, 0 /* by cloud */ , 0, 0, 0,
    0},
    {"upload_budget", G(upload_budget), T_SIZE, "15M", 0, 4 * SIZE_M,
    1024 * SIZE_M, 0},
    {"ledger_lifetime", G(ledger_lifetime), T_TIME, "5d", 0, 1 * TIME_H,
    100 * TIME_D, 0},
    {"sent_items_wait", G(sent_items_wait), T_TIME, "15m", 0, 0, 1 * TIME_D,
    0},
    {"concurrency_wait", G(concurrency_wait), T_TIME, "5s", 0, 0, 10 * TIME_M,
    0},
    {"sendmail_path", G(sendmail_path), T_PATH, "/usr/sbin/sendmail", 0, 0,
    0, 0},
    {"metrics_file", G(metrics_file), T_PATH, 0, 0, 0, 0, 0},
    {"expiry_warning", G(expiry_warning), T_LONG, "30", 0, 1, 365, 0},
    {"keepalive_after", G(keepalive_after), T_TIME, "30d", 0, 1 * TIME_H,
    80 * TIME_D, 0},
    {"admin_address", G(admin_address), T_ADDRESS, 0, 0, 0, 0, 0},
    /* [milter] */
    {"socket", M(socket), T_SOCKET, DEF_MILTER_SOCKET, 0, 0, 0, 0},
    {"socket_mode", M(socket_mode), T_OCTAL, "0660", 0, 0, 0777, 0},
    {"pid_file", M(pid_file), T_PATH, 0, 0, 0, 0, 0},
    {"mode", M(mode), T_ENUM, "filter", 0, 0, 0, conf_milter_modes},
    {"unknown_sender", M(unknown_sender_reject), T_ENUM, "accept", 0, 0, 0,
    conf_unknown_sender_names},
    {"rewrite_sender", M(rewrite_sender), T_BOOL, "no", 0, 0, 0, 0},
    {"rewrite_from", M(rewrite_from), T_BOOL, "no", 0, 0, 0, 0},
    {"add_reply_to", M(add_reply_to), T_BOOL, "yes", 0, 0, 0, 0},
    {"add_message_id", M(add_message_id), T_BOOL, "yes", 0, 0, 0, 0},
    {"message_id_domain", M(message_id_domain), T_DOMAIN, 0 /* host */ , 0,
    0, 0, 0},
    {"memory_limit", M(memory_limit), T_SIZE, "1M", 0, 1 * SIZE_K,
    64 * SIZE_M, 0},
    {"tmp_dir", M(tmp_dir), T_PATH, 0 /* $TMPDIR, /tmp */ , 0, 0, 0, 0},
    {"deliver_domains", M(deliver_domains), T_DOMAINS, 0 /* all */ , 0, 0,
    0, 0},
    {"on_internal_error", M(on_internal_error), T_ENUM, "tempfail", 0, 0, 0,
    conf_action_names},
    {"on_graph_error", M(on_graph_error), T_ENUM, "tempfail", 0, 0, 0,
    conf_action_names},
    {"on_account_offline", M(on_account_offline), T_ENUM, "tempfail", 0, 0,
    0, conf_action_names},
    {"timeout", M(timeout), T_LONG, "7200", 0, 1, 86400, 0},
    /* [account NAME] */
    {"tenant", A(tenant), T_IDENT, 0, 1, 0, 0, 0},
    {"client_id", A(client_id), T_IDENT, 0, 1, 0, 0, 0},
    {"auth", A(auth), T_ENUM, "delegated", 0, 0, 0, conf_auth_names},
    {"secret_file", A(secret_file), T_PATH, 0, 0, 0, 0, 0},
    {"certificate_file", A(certificate_file), T_PATH, 0, 0, 0, 0, 0},
    {"key_file", A(key_file), T_PATH, 0, 0, 0, 0, 0},
    {"jwt_alg", A(jwt_alg), T_ENUM, "PS256", 0, 0, 0, conf_jwt_names},
    {"mailbox", A(mailbox), T_MAILBOX, 0, 1, 0, 0, 0},
    {"senders", A(senders), T_SENDERS, 0, 0, 0, 0, 0},
    {"default", A(is_default), T_BOOL, "no", 0, 0, 0, 0},
    {"scopes", A(scopes), T_SCOPES, 0, 0, 0, 0, 0},
    {"max_message_size", A(max_message_size), T_SIZE, 0 /* [global] */ , 0,
    1 * SIZE_K, 150 * SIZE_M, 0},
    {"large_messages", A(large_messages), T_ENUM, "auto", 0, 0, 0,
    conf_large_names},
    {"secret_expires", A(secret_expires), T_DATE, 0, 0, 0, 0, 0},
    {"proxy", A(proxy), T_PROXY, 0 /* [global] */ , 0, 0, 0, 0},
    {"no_proxy", A(no_proxy), T_TEXT, 0 /* [global] */ , 0, 0, 0, 0},
    {"proxy_credentials_file", A(proxy_credentials_file), T_PATH,
    0 /* [global] */ , 0, 0, 0, 0},
    {"rbac_probe_mailbox", A(rbac_probe_mailbox), T_ADDRESS, 0, 0, 0, 0, 0},
    /* [source NAME] */
    {"account", S(account), T_NAME, 0, 1, 0, 0, 0},
    {"mailbox", S(mailbox), T_MAILBOX, 0 /* the account's */ , 0, 0, 0, 0},
    {"folder", S(folder), T_TEXT, "inbox", 0, 0, 0, 0},
    {"deliver_to", S(deliver_to), T_DELIVER, 0, 1, 0, 0, 0},
    {"recipients", S(recipients), T_RCPTS, 0, 0 /* mode = mail */ , 0, 0, 0},
    {"envelope_sender", S(envelope_sender), T_SENDER, 0 /* the message's */ ,
    0, 0, 0, 0},
    {"after", S(after), T_AFTER, "read", 0, 0, 0, 0},
    {"reject_folder", S(reject_folder), T_TEXT, 0, 0, 0, 0, 0},
    {"interval", S(interval), T_LONG, "60", 0, 10, 86400, 0},
    {"page_size", S(page_size), T_LONG, "50", 0, 1, 1000, 0},
    {"notify", S(notify), T_ADDRESS, 0, 0, 0, 0, 0},
    {"max_message_size", S(max_message_size), T_SIZE, "150M", 0, 1 * SIZE_K,
    1024 * SIZE_M, 0},
    {"mode", S(mode), T_ENUM, "mail", 0, 0, 0, conf_source_modes},
    {"bounce_from", S(bounce_from), T_ADDRESS, 0 /* MAILER-DAEMON@host */ ,
    0, 0, 0, 0},
    {"unmatched", S(unmatched), T_TEXT, "keep", 0, 0, 0, 0},
};

#undef G
#undef M
#undef A
#undef S

#define NPARAMS	(sizeof(conf_params) / sizeof(conf_params[0]))

/* Enum fields are written through an int; make sure that is their size. */
_Static_assert(sizeof(enum conf_auth) == sizeof(int), "enum conf_auth size");
_Static_assert(sizeof(enum conf_jwt_alg) == sizeof(int), "enum jwt_alg size");
_Static_assert(sizeof(enum conf_milter_mode) == sizeof(int),
	       "enum conf_milter_mode size");
_Static_assert(sizeof(enum conf_action) == sizeof(int), "enum conf_action size");
_Static_assert(sizeof(enum conf_after) == sizeof(int), "enum conf_after size");
_Static_assert(sizeof(enum conf_large) == sizeof(int), "enum conf_large size");

/* Parser state for one section instance. */

struct conf_sinfo {
    enum conf_sect sect;		/* SECT_GLOBAL, _MILTER, _ACCOUNT, _SOURCE */
    struct conf_account *acct;		/* SECT_ACCOUNT only */
    struct conf_source *src;		/* SECT_SOURCE only */
    int     line;			/* the header line */
    int     seen[NPARAMS];		/* line where each key was set */
    int     bad[NPARAMS];		/* its value was rejected */
};

struct conf_state {
    struct conf *conf;
    struct strbuf *errors;
    int     nerrors;
    int     line;			/* current line */
    enum conf_sect sect;
    struct conf_sinfo global;
    struct conf_sinfo milter;
    struct conf_sinfo **accts;		/* file order, parallel to list */
    size_t  naccts;
    struct conf_account **tail;		/* where the next account goes */
    struct conf_sinfo **srcs;		/* file order, parallel to list */
    size_t  nsrcs;
    struct conf_source **src_tail;	/* where the next source goes */
};

/* What some editors put before the first line of a UTF-8 file. */
#define CONF_UTF8_BOM	"\xEF\xBB\xBF"

/* The sections, for "expected ..." hints. */
#define CONF_SECTIONS	"[global], [milter], [account NAME] or [source NAME]"

static const struct conf_param *conf_find_param(enum conf_sect, const char *);

/*
 * conf_err - append the line "FILE:LINE: text" to the error list; past
 * the list's cap it ends with a note that more errors were not shown
 */
static void __attribute__((format(printf, 3, 4)))
        conf_err(struct conf_state *st, int line, const char *fmt,...)
{
    struct strbuf text;
    va_list ap;

    st->nerrors++;
    if (st->errors == NULL)
	return;
    strbuf_init(&text, st->errors->max);
    va_start(ap, fmt);
    (void) strbuf_vprintf(&text, fmt, ap);
    va_end(ap);
    (void) strbuf_line(st->errors, "%s:%d: %s", st->conf->path, line,
		       strbuf_log_str(&text));
    strbuf_free(&text);
}

/* conf_sect_name - "[global]", "[milter]", "[account NAME]", "[source NAME]" */

static const char *conf_sect_name(const struct conf_sinfo *si, char *buf,
				          size_t len)
{
    if (si->sect == SECT_ACCOUNT && si->acct != NULL)
	snprintf(buf, len, "[account %s]", si->acct->name);
    else if (si->sect == SECT_SOURCE && si->src != NULL)
	snprintf(buf, len, "[source %s]", si->src->name);
    else if (si->sect == SECT_MILTER)
	snprintf(buf, len, "[milter]");
    else
	snprintf(buf, len, "[global]");
    return (buf);
}

/* conf_sect_where - the sections (other than skip) that define key */

static const char *conf_sect_where(const char *key, enum conf_sect skip,
				           char *buf, size_t len)
{
    static const struct {
	enum conf_sect sect;
	const char *name;
    } sects[] = {
	{SECT_GLOBAL, "[global]"},
	{SECT_MILTER, "[milter]"},
	{SECT_ACCOUNT, "an [account NAME] section"},
	{SECT_SOURCE, "a [source NAME] section"},
    };
    const char *found[sizeof(sects) / sizeof(sects[0])];
    size_t  i, n = 0, used;

    for (i = 0; i < sizeof(sects) / sizeof(sects[0]); i++)
	if (sects[i].sect != skip && conf_find_param(sects[i].sect, key))
	    found[n++] = sects[i].name;
    if (n == 0 || len == 0)
	return (NULL);
    *buf = 0;
    for (i = 0; i < n; i++) {
	used = strlen(buf);
	snprintf(buf + used, len - used, "%s%s", i == 0 ? "" : i + 1 == n ?
		 " or " : ", ", found[i]);
    }
    return (buf);
}

/* conf_is_space - white space inside a line */

static int conf_is_space(int ch)
{
    return (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n'
	    || ch == '\f' || ch == '\v');
}

/* conf_trim - strip leading and trailing white space in place */

static char *conf_trim(char *s)
{
    char   *end;

    while (conf_is_space((unsigned char) *s))
	s++;
    end = s + strlen(s);
    while (end > s && conf_is_space((unsigned char) end[-1]))
	*--end = 0;
    return (s);
}

/* conf_edit_distance - Levenshtein distance, for "did you mean" */

static size_t conf_edit_distance(const char *a, const char *b)
{
    size_t  la = strlen(a), lb = strlen(b);
    size_t  row[64];
    size_t  i, j, prev, tmp;

    if (la >= sizeof(row) / sizeof(row[0])
	|| lb >= sizeof(row) / sizeof(row[0]))
	return ((size_t) -1);
    for (j = 0; j <= lb; j++)
	row[j] = j;
    for (i = 1; i <= la; i++) {
	prev = row[0];
	row[0] = i;
	for (j = 1; j <= lb; j++) {
	    tmp = row[j];
	    row[j] = prev + (tolower((unsigned char) a[i - 1])
			     != tolower((unsigned char) b[j - 1]));
	    if (row[j - 1] + 1 < row[j])
		row[j] = row[j - 1] + 1;
	    if (tmp + 1 < row[j])
		row[j] = tmp + 1;
	    prev = tmp;
	}
    }
    return (row[lb]);
}

/* conf_find_param - the table entry for a key in a section, or NULL */

static const struct conf_param *conf_find_param(enum conf_sect sect,
						        const char *key)
{
    const struct conf_param *p;

    for (p = conf_params; p < conf_params + NPARAMS; p++)
	if (p->sect == sect && strcmp(p->name, key) == 0)
	    return (p);
    return (0);
}

/*
 * Keys of older versions that are gone, and why: such a line is an error
 * that says what to do (no key is parsed and then ignored).
 */
static const struct conf_removed {
    enum conf_sect sect;
    const char *name;
    const char *why;
} conf_removed[] = {
    {SECT_ACCOUNT, "save_to_sent_items", "the key save_to_sent_items was "
	"removed: Microsoft 365 keeps a copy of every message sent in MIME "
	"form in Sent Items whatever it says (Graph has no such switch for "
	"MIME), and m365-relay looks for that copy to tell whether an "
	"interrupted send went through; delete the line"},
    {SECT_NONE, 0, 0},
};

/* conf_unknown_key - report an unknown key with the best hint we have */

static void conf_unknown_key(struct conf_state *st, struct conf_sinfo *si,
			             const char *key)
{
    const struct conf_param *p, *best = 0;
    size_t  d, best_d = (size_t) -1;
    char    sname[200];
    char    shown[80];
    char    where[100];
    const struct conf_removed *rm;

    for (rm = conf_removed; rm->name; rm++) {
	if (rm->sect == st->sect && strcmp(rm->name, key) == 0) {
	    conf_err(st, st->line, "%s", rm->why);
	    return;
	}
    }
    conf_sect_name(si, sname, sizeof(sname));
    snprintf(shown, sizeof(shown), "%s", key);
    if (conf_sect_where(key, st->sect, where, sizeof(where)) != 0) {
	conf_err(st, st->line, "key \"%s\" does not belong in %s (move it "
		 "to %s)", shown, sname, where);
	return;
    }
    for (p = conf_params; p < conf_params + NPARAMS; p++) {
	if (p->sect != st->sect)
	    continue;
	d = conf_edit_distance(key, p->name);
	if (d < best_d) {
	    best_d = d;
	    best = p;
	}
    }
    if (best != 0 && best_d <= 2)
	conf_err(st, st->line, "unknown key \"%s\" in %s (did you mean "
		 "\"%s\"?)", shown, sname, best->name);
    else
	conf_err(st, st->line, "unknown key \"%s\" in %s (see "
		 "m365relay.conf(5) for the valid keys)", shown, sname);
}

/* conf_field - address of a parameter's field in a section's struct */

static void *conf_field(struct conf_state *st, const struct conf_sinfo *si,
			        const struct conf_param *p)
{
    char   *base = si->sect == SECT_ACCOUNT ? (char *) si->acct :
    si->sect == SECT_SOURCE ? (char *) si->src : (char *) st->conf;

    return (base + p->offset);
}

/* conf_free_senders - free a NULL-terminated pattern list */

static void conf_free_senders(char **list)
{
    char  **pp;

    if (list == 0)
	return;
    for (pp = list; *pp; pp++)
	free(*pp);
    free(list);
}

/* Unit suffixes of T_SIZE and T_TIME values. */
struct conf_unit {
    char    suffix;
    long    mult;
};

static const struct conf_unit conf_size_units[] = {
    {'k', SIZE_K}, {'K', SIZE_K}, {'m', SIZE_M}, {'M', SIZE_M}, {0, 0},
};
static const struct conf_unit conf_time_units[] = {
    {'s', 1}, {'m', TIME_M}, {'h', TIME_H}, {'d', TIME_D}, {0, 0},
};

/*
 * conf_parse_scaled - a whole number with an optional unit suffix (bytes
 * with K or M, seconds with s, m, h or d), in [min, max]
 */
static int conf_parse_scaled(const char *s, const struct conf_unit *units,
			             long min, long max, long *out)
{
    const struct conf_unit *u;
    char   *end;
    long    v, mult = 1;

    if (!isdigit((unsigned char) *s))
	return (-1);
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0)
	return (-1);
    for (u = units; *end && u->suffix; u++) {
	if (*end == u->suffix) {
	    mult = u->mult;
	    end++;
	    break;
	}
    }
    if (*end != 0 || v > LONG_MAX / mult)
	return (-1);
    v *= mult;
    if (v < min || v > max)
	return (-1);
    *out = v;
    return (0);
}

/* conf_split - split a list on white space and commas */

static char **conf_split(const char *value, size_t *count)
{
    char  **list;
    size_t  n = 0;
    const char *cp = value, *start;

    list = xcalloc(strlen(value) / 2 + 2, sizeof(*list));
    for (;;) {
	while (*cp == ',' || conf_is_space((unsigned char) *cp))
	    cp++;
	if (*cp == 0)
	    break;
	start = cp;
	while (*cp && *cp != ',' && !conf_is_space((unsigned char) *cp))
	    cp++;
	list[n++] = xstrndup(start, (size_t) (cp - start));
    }
    list[n] = 0;
    *count = n;
    return (list);
}

/* conf_valid_ident - tenant, client id, account name characters */

static int conf_valid_ident(const char *s)
{
    if (*s == 0 || *s == '.' || *s == '-')
	return (0);
    for (; *s; s++)
	if (!isalnum((unsigned char) *s) && *s != '.' && *s != '_'
	    && *s != '-')
	    return (0);
    return (1);
}

/* conf_has_glob - does a sender pattern use fnmatch syntax? */

static int conf_has_glob(const char *s)
{
    return (strpbrk(s, "*?[") != 0);
}

/* conf_valid_domain - a DNS name: labels of letters, digits, '-' */

static int conf_valid_domain(const char *s)
{
    const char *label = s;
    size_t  len = strlen(s);

    if (len == 0 || len > 253)
	return (0);
    for (;; s++) {
	if (*s == '.' || *s == 0) {
	    if (s == label || s - label > 63 || label[0] == '-'
		|| s[-1] == '-')
		return (0);
	    if (*s == 0)
		return (1);
	    label = s + 1;
	} else if (!isalnum((unsigned char) *s) && *s != '-') {
	    return (0);
	}
    }
}

/* conf_valid_local - a bare local user name: [A-Za-z0-9._+-], no leading - or . */

static int conf_valid_local(const char *s)
{
    if (*s == 0 || *s == '-' || *s == '.')
	return (0);
    for (; *s; s++)
	if (!isalnum((unsigned char) *s) && strchr("._+-", *s) == 0)
	    return (0);
    return (1);
}

/*
 * conf_valid_addr - local@domain: a dot-atom local part (RFC 5322 atext,
 * not starting with '-' or '.', so it can never look like an option on
 * the sendmail command line) and a DNS domain.  Quoted local parts and
 * address literals are not accepted here.
 */

static int conf_valid_addr(const char *s)
{
    const char *at = strrchr(s, '@');
    const char *cp;

    if (at == 0 || at == s || *s == '-' || *s == '.' || at[-1] == '.')
	return (0);
    for (cp = s; cp < at; cp++) {
	if (!isalnum((unsigned char) *cp)
	    && strchr("!#$%&'*+-/=?^_`{|}~.", *cp) == 0)
	    return (0);
	if (cp[0] == '.' && cp[1] == '.')
	    return (0);
    }
    return (conf_valid_domain(at + 1));
}

/* conf_is_ipv4ish - digits and dots only (then it must be an IPv4 literal) */

static int conf_is_ipv4ish(const char *s)
{
    return (*s != 0 && strspn(s, "0123456789.") == strlen(s));
}

/*
 * conf_parse_deliver - validate deliver_to
 *
 * "sendmail" (host NULL, port 0), or smtp://HOST[:PORT] where HOST is an
 * IPv4 literal, a [bracketed] IPv6 literal or a host name and PORT is
 * 1 to 65535 (default 25); the scheme is case-insensitive.  On success
 * *host is a new string (IPv6 without brackets) or NULL.  Returns 0, or
 * -1 with a complete message (problem and hint) in why.  The one
 * parser of deliver_to: conf_load() and inject_create() use it.
 */

int     conf_parse_deliver(const char *v, char **host, long *port,
			           char *why, size_t len)
{
    const char *rest, *end, *colon;
    char    hbuf[256];
    unsigned char addr[sizeof(struct in6_addr)];
    size_t  hlen;
    long    num = 25;

    *host = 0;
    *port = 0;
    if (strcmp(v, "sendmail") == 0)
	return (0);
    if (strncasecmp(v, "smtp://", 7) != 0) {
	snprintf(why, len, "bad deliver_to \"%s\" (use smtp://HOST:PORT, "
		 "like smtp://127.0.0.1:25 or smtp://[::1]:2525, or sendmail "
		 "to run the MTA's sendmail command)", v);
	return (-1);
    }
    rest = v + 7;
    if (*rest == '[') {
	if ((end = strchr(rest, ']')) == 0) {
	    snprintf(why, len, "bad deliver_to \"%s\": missing ']' after "
		     "the IPv6 address (like smtp://[::1]:25)", v);
	    return (-1);
	}
	hlen = (size_t) (end - rest - 1);
	snprintf(hbuf, sizeof(hbuf), "%.*s", (int) (hlen < sizeof(hbuf) ?
						    hlen : sizeof(hbuf) - 1),
		 rest + 1);
	if (hlen >= sizeof(hbuf) || inet_pton(AF_INET6, hbuf, addr) != 1) {
	    snprintf(why, len, "bad IPv6 address \"%.*s\" in deliver_to "
		     "\"%s\" (like smtp://[::1]:25)", (int) (hlen < 60 ?
							   hlen : 60),
		     rest + 1, v);
	    return (-1);
	}
	colon = end + 1;
	if (*colon != 0 && *colon != ':') {
	    snprintf(why, len, "bad deliver_to \"%s\": unexpected \"%.40s\" "
		     "after the address (use smtp://[ADDRESS]:PORT)", v, colon);
	    return (-1);
	}
    } else {
	colon = strchr(rest, ':');
	hlen = colon ? (size_t) (colon - rest) : strlen(rest);
	if (colon && strchr(colon + 1, ':') != 0) {
	    snprintf(why, len, "bad deliver_to \"%s\": write an IPv6 "
		     "address in brackets (like smtp://[::1]:25)", v);
	    return (-1);
	}
	if (hlen == 0) {
	    snprintf(why, len, "deliver_to \"%s\" needs a host (like "
		     "smtp://127.0.0.1:25)", v);
	    return (-1);
	}
	snprintf(hbuf, sizeof(hbuf), "%.*s", (int) (hlen < sizeof(hbuf) ?
						    hlen : sizeof(hbuf) - 1),
		 rest);
	if (hlen >= sizeof(hbuf)
	    || (conf_is_ipv4ish(hbuf) ? inet_pton(AF_INET, hbuf, addr) != 1 :
		!conf_valid_domain(hbuf))) {
	    snprintf(why, len, "bad host \"%.*s\" in deliver_to \"%s\" (use "
		     "an IPv4 address, [IPv6 address] or host name; no user, "
		     "path or options)", (int) (hlen < 60 ? hlen : 60), rest, v);
	    return (-1);
	}
    }
    if (colon && *colon == ':') {
	if (colon[1] == 0 || strlen(colon + 1) > 5
	    || strspn(colon + 1, "0123456789") != strlen(colon + 1)
	    || parse_long(colon + 1, 1, 65535, &num) < 0) {
	    snprintf(why, len, "bad port \"%.20s\" in deliver_to \"%s\" (use "
		     "a number from 1 to 65535; without one, 25)", colon + 1, v);
	    return (-1);
	}
    }
    *host = xstrdup(hbuf);
    *port = num;
    return (0);
}

/*
 * conf_check_socket - validate a libmilter socket specification
 *
 * Accepts inet:PORT@HOST, inet6:PORT@HOST, unix:/PATH and local:/PATH.
 * Returns 0, or -1 with a complete message (problem and hint) in why.
 * The milter checks its -p option with it too: one rule for both.
 */

int     conf_check_socket(const char *v, char *why, size_t len)
{
    const char *rest, *at, *host, *cp;
    struct sockaddr_un sa_un;
    long    port;
    char    portbuf[16];
    size_t  n;
    int     inet6;

    if ((rest = strchr(v, ':')) == 0 || rest == v) {
	snprintf(why, len, "bad socket \"%s\" (use inet:PORT@HOST, "
		 "inet6:PORT@HOST, unix:/PATH or local:/PATH, like "
		 "inet:8891@127.0.0.1)", v);
	return (-1);
    }
    rest++;
    if (conf_socket_path(v) != 0) {
	if (*rest != '/') {
	    snprintf(why, len, "socket \"%s\" needs an absolute path (like "
		     "unix:%s/milter.sock)", v, M365_RUNDIR);
	    return (-1);
	}
	if (strlen(rest) >= sizeof(sa_un.sun_path)) {
	    snprintf(why, len, "socket path in \"%.60s...\" is longer than "
		     "%lu bytes (a limit of unix sockets; use a shorter "
		     "path)", v, (unsigned long) sizeof(sa_un.sun_path) - 1);
	    return (-1);
	}
	return (0);
    }
    if (strncmp(v, "inet:", 5) != 0 && strncmp(v, "inet6:", 6) != 0) {
	snprintf(why, len, "bad socket type in \"%s\" (use inet:PORT@HOST, "
		 "inet6:PORT@HOST, unix:/PATH or local:/PATH)", v);
	return (-1);
    }
    inet6 = v[4] == '6';
    if ((at = strchr(rest, '@')) == 0 || at[1] == 0) {
	/* Suggest the same port on the loopback address. */
	n = at ? (size_t) (at - rest) : strlen(rest);
	if (n == 0 || n > 5 || strspn(rest, "0123456789") != n)
	    rest = "8891", n = 4;
	snprintf(why, len, "socket \"%s\" needs a host (like %s:%.*s@%s; "
		 "the MTA connects there)", v, inet6 ? "inet6" : "inet",
		 (int) n, rest, inet6 ? "::1" : "127.0.0.1");
	return (-1);
    }
    snprintf(portbuf, sizeof(portbuf), "%.*s", (int) (at - rest < 15 ?
						     at - rest : 15), rest);
    if (at - rest > 5 || !isdigit((unsigned char) portbuf[0])
	|| parse_long(portbuf, 1, 65535, &port) < 0) {
	snprintf(why, len, "bad port \"%.*s\" in socket \"%s\" (use a "
		 "number from 1 to 65535)", (int) (at - rest < 20 ?
						   at - rest : 20), rest, v);
	return (-1);
    }
    host = at + 1;
    for (cp = host; *cp; cp++)
	if (!isalnum((unsigned char) *cp) && strchr(inet6 ? ".-:[]" :
						      ".-[]", *cp) == 0)
	    break;
    if (*cp != 0) {
	snprintf(why, len, "bad host \"%s\" in socket \"%s\" (use a host "
		 "name or an %s address%s)", host, v, inet6 ? "IPv6" : "IPv4",
		 inet6 ? "" : "; inet6:PORT@ADDR for IPv6");
	return (-1);
    }
    return (0);
}

/* conf_socket_path - the file name of a unix: or local: socket, or 0 */

const char *conf_socket_path(const char *spec)
{
    if (strncmp(spec, "unix:", 5) == 0)
	return (spec + 5);
    if (strncmp(spec, "local:", 6) == 0)
	return (spec + 6);
    return (0);
}

/* conf_set_value - parse one value into its field; 0 or -1 (reported) */

static int conf_set_value(struct conf_state *st, struct conf_sinfo *si,
			          const struct conf_param *p, const char *value,
			          int line)
{
    void   *field = conf_field(st, si, p);
    char  **sp = (char **) field;
    const struct conf_enum *e;
    const struct conf_cloud *c;
    const char *cp;
    char   *copy;
    char  **list;
    size_t  n, i;
    long    num;
    int     ival;

    switch (p->type) {
    case T_CLOUD:
	for (c = conf_clouds; c->name; c++)
	    if (strcmp(c->name, value) == 0)
		break;
	if (c->name == 0) {
	    conf_err(st, line, "bad cloud \"%s\" (use global, usgov, "
		     "usgov-dod or china)", value);
	    return (-1);
	}
	free(*sp);
	*sp = xstrdup(value);
	return (0);
    case T_URL:
	if (strncasecmp(value, "https://", 8) != 0 || value[8] == 0
	    || value[8] == '/' || strpbrk(value, " \t") != 0) {
	    conf_err(st, line, "%s must be an https:// URL (got \"%s\")",
		     p->name, value);
	    return (-1);
	}
	copy = xstrdup(value);
	n = strlen(copy);
	while (n > 8 && copy[n - 1] == '/')
	    copy[--n] = 0;
	free(*sp);
	*sp = copy;
	return (0);
    case T_PATH:
	if (*value != '/') {
	    conf_err(st, line, "%s must be an absolute path (got \"%s\")",
		     p->name, value);
	    return (-1);
	}
	free(*sp);
	*sp = xstrdup(value);
	return (0);
    case T_LOGDEST:
	if (strcmp(value, "syslog") == 0) {
	    free(*sp);
	    *sp = 0;
	    return (0);
	}
	if (strcmp(value, "stderr") != 0 && *value != '/') {
	    conf_err(st, line, "%s must be syslog, stderr or an absolute "
		     "path (got \"%s\")", p->name, value);
	    return (-1);
	}
	free(*sp);
	*sp = xstrdup(value);
	return (0);
    case T_WORD:
	if (strpbrk(value, " \t") != 0) {
	    conf_err(st, line, "%s must be one word (got \"%s\")",
		     p->name, value);
	    return (-1);
	}
	free(*sp);
	*sp = xstrdup(value);
	return (0);
    case T_IDENT:
	if (!conf_valid_ident(value)) {
	    conf_err(st, line, "bad %s \"%s\" (use the GUID or domain name "
		     "shown in Entra ID: letters, digits, '.', '_', '-')",
		     p->name, value);
	    return (-1);
	}
	free(*sp);
	*sp = xstrdup(value);
	return (0);
    case T_MAILBOX:
	copy = strchr(value, '@');
	if (copy == 0 || copy == value || copy[1] == 0
	    || strpbrk(value, " \t<>\"/") != 0) {
	    if (p->sect == SECT_SOURCE)
		conf_err(st, line, "bad mailbox \"%s\" (expected the address "
			 "of the mailbox to read, like helpdesk@example.com; "
			 "remove the line to read the account's own mailbox)",
			 value);
	    else
		conf_err(st, line, "bad mailbox \"%s\" (expected the sending "
			 "mailbox's address, like user@example.com)", value);
	    return (-1);
	}
	free(*sp);
	*sp = xstrdup(value);
	return (0);
    case T_SENDERS:
	list = conf_split(value, &n);
	if (n == 0) {
	    conf_err(st, line, "senders lists no pattern (separate patterns "
		     "with spaces or commas)");
	    conf_free_senders(list);
	    return (-1);
	}
	for (i = 0; i < n; i++) {
	    if (strcmp(list[i], "<>") != 0 && strchr(list[i], '@') == 0
		&& !conf_has_glob(list[i])) {
		conf_err(st, line, "sender pattern \"%s\" has no '@' (write "
			 "@%s for a whole domain, <> for the null sender)",
			 list[i], list[i]);
		conf_free_senders(list);
		return (-1);
	    }
	}
	conf_free_senders(*(char ***) field);
	*(char ***) field = list;
	return (0);
    case T_SCOPES:
	list = conf_split(value, &n);
	if (n == 0) {
	    conf_err(st, line, "scopes lists no scope (separate scopes with "
		     "spaces)");
	    conf_free_senders(list);
	    return (-1);
	}
	{
	    struct strbuf sb;

	    strbuf_init(&sb, STRBUF_MAX_SMALL);
	    for (i = 0; i < n; i++) {
		if (strpbrk(list[i], "\"\\") != 0) {
		    conf_err(st, line, "bad scope \"%s\" (scopes are names "
			     "like Mail.Send.Shared, separated by spaces)",
			     list[i]);
		    strbuf_free(&sb);
		    conf_free_senders(list);
		    return (-1);
		}
		if (i > 0)
		    strbuf_putc(&sb, ' ');
		strbuf_puts(&sb, list[i]);
	    }
	    conf_free_senders(list);
	    if (strbuf_failed(&sb)) {
		conf_err(st, line, "scopes is longer than %lu bytes (the "
			 "sign-in request could not carry it)",
			 (unsigned long) sb.max);
		strbuf_free(&sb);
		return (-1);
	    }
	    free(*sp);
	    *sp = strbuf_take(&sb);
	    strbuf_free(&sb);
	}
	return (0);
    case T_BOOL:
	if (strcasecmp(value, "yes") == 0 || strcasecmp(value, "true") == 0
	    || strcasecmp(value, "on") == 0 || strcmp(value, "1") == 0)
	    *(int *) field = 1;
	else if (strcasecmp(value, "no") == 0 || strcasecmp(value, "false") == 0
		 || strcasecmp(value, "off") == 0 || strcmp(value, "0") == 0)
	    *(int *) field = 0;
	else {
	    conf_err(st, line, "bad boolean \"%s\" for %s (use yes or no)",
		     value, p->name);
	    return (-1);
	}
	return (0);
    case T_ENUM:
	for (e = p->names; e->name; e++)
	    if (strcmp(e->name, value) == 0)
		break;
	if (e->name == 0) {
	    struct strbuf sb;

	    strbuf_init(&sb, STRBUF_MAX_SMALL);
	    for (e = p->names; e->name; e++)
		strbuf_printf(&sb, "%s%s", e == p->names ? "" :
			      e[1].name ? ", " : " or ", e->name);
	    conf_err(st, line, "bad %s \"%s\" (use %s)", p->name, value,
		     strbuf_log_str(&sb));
	    strbuf_free(&sb);
	    return (-1);
	}
	ival = e->value;
	memcpy(field, &ival, sizeof(ival));
	return (0);
    case T_LONG:
	if (parse_long(value, p->min, p->max, &num) < 0) {
	    conf_err(st, line, "bad number \"%s\" for %s (use a whole number "
		     "from %ld to %ld)", value, p->name, p->min, p->max);
	    return (-1);
	}
	*(long *) field = num;
	return (0);
    case T_SIZE:
	if (conf_parse_scaled(value, conf_size_units, p->min, p->max,
			      &num) < 0) {
	    conf_err(st, line, "bad size \"%s\" for %s (use bytes, or a "
		     "number with K or M, from %ldK to %ldM)", value, p->name,
		     p->min / SIZE_K, p->max / SIZE_M);
	    return (-1);
	}
	*(long *) field = num;
	return (0);
    case T_TIME:
	if (conf_parse_scaled(value, conf_time_units, p->min, p->max,
			      &num) < 0) {
	    conf_err(st, line, "bad time \"%s\" for %s (use seconds, or a "
		     "number with s, m, h or d, from %lds to %ldd)", value,
		     p->name, p->min, p->max / TIME_D);
	    return (-1);
	}
	*(long *) field = num;
	return (0);
    case T_SOCKET:
	{
	    char    why[400];

	    if (conf_check_socket(value, why, sizeof(why)) < 0) {
		conf_err(st, line, "%s", why);
		return (-1);
	    }
	}
	free(*sp);
	*sp = xstrdup(value);
	return (0);
    case T_DATE:
	{
	    struct tm tm, back;
	    int     y, m, d, used = 0;
	    time_t  t;

	    memset(&tm, 0, sizeof(tm));
	    if (sscanf(value, "%4d-%2d-%2d%n", &y, &m, &d, &used) != 3
		|| used != 10 || value[used] != 0 || y < 2000 || m < 1 || m > 12
		|| d < 1 || d > 31) {
		conf_err(st, line, "bad date \"%s\" for %s (use YYYY-MM-DD, "
			 "as Entra ID shows it)", value, p->name);
		return (-1);
	    }
	    tm.tm_year = y - 1900;
	    tm.tm_mon = m - 1;
	    tm.tm_mday = d;
	    t = timegm(&tm);
	    if (gmtime_r(&t, &back) == NULL || back.tm_mday != d) {
		conf_err(st, line, "bad date \"%s\" for %s (no such day)",
			 value, p->name);
		return (-1);
	    }
	    *(long *) field = (long) t;
	}
	return (0);
    case T_OCTAL:
	if (strspn(value, "01234567") != strlen(value) || strlen(value) > 4
	    || (num = strtol(value, 0, 8)) < p->min || num > p->max) {
	    conf_err(st, line, "bad %s \"%s\" (use an octal mode from 0 to "
		     "%lo, like 0660)", p->name, value, p->max);
	    return (-1);
	}
	*(long *) field = num;
	return (0);
    case T_DOMAIN:
	if (!conf_valid_domain(value)) {
	    conf_err(st, line, "bad %s \"%s\" (use a domain name like "
		     "mail.example.com)", p->name, value);
	    return (-1);
	}
	free(*sp);
	*sp = xstrdup(value);
	return (0);
    case T_DOMAINS:
	list = conf_split(value, &n);
	if (n == 0) {
	    conf_err(st, line, "%s lists no domain (separate domains with "
		     "spaces or commas)", p->name);
	    conf_free_senders(list);
	    return (-1);
	}
	for (i = 0; i < n; i++) {
	    copy = list[i][0] == '.' ? list[i] + 1 : list[i];
	    if (!conf_valid_domain(copy)) {
		conf_err(st, line, "bad domain \"%s\" in %s (write "
			 "example.com for the domain, .example.com for its "
			 "subdomains)", list[i], p->name);
		conf_free_senders(list);
		return (-1);
	    }
	}
	conf_free_senders(*(char ***) field);
	*(char ***) field = list;
	return (0);
    case T_HOSTS:
	list = conf_split(value, &n);
	if (n == 0) {
	    conf_err(st, line, "%s lists no host (separate host names with "
		     "spaces or commas)", p->name);
	    conf_free_senders(list);
	    return (-1);
	}
	for (i = 0; i < n; i++) {
	    cp = strrchr(list[i], ':');
	    copy = cp ? xstrndup(list[i], (size_t) (cp - list[i])) :
		xstrdup(list[i]);
	    if (!conf_valid_domain(copy)
		|| (cp && parse_long(cp + 1, 1, 65535, &num) < 0)) {
		conf_err(st, line, "bad host \"%s\" in %s (write a host "
			 "name like outlook.office.com, or host:port)",
			 list[i], p->name);
		free(copy);
		conf_free_senders(list);
		return (-1);
	    }
	    free(copy);
	}
	conf_free_senders(*(char ***) field);
	*(char ***) field = list;
	return (0);
    case T_NAME:
	if (!conf_valid_ident(value) || strlen(value) > 64) {
	    conf_err(st, line, "bad %s \"%s\" (the NAME of an [account NAME] "
		     "section: up to 64 letters, digits, '.', '_' or '-')",
		     p->name, value);
	    return (-1);
	}
	free(*sp);
	*sp = xstrdup(value);
	return (0);
    case T_PROXY:
	{
	    char    why[300];

	    if (proxy_check_url(value, why, sizeof(why)) < 0) {
		conf_err(st, line, "bad %s \"%s\" (%s)", p->name, value, why);
		return (-1);
	    }
	}
	free(*sp);
	*sp = xstrdup(value);
	return (0);
    case T_TEXT:
	for (cp = value; *cp; cp++)
	    if (iscntrl((unsigned char) *cp))
		break;
	if (*cp != 0) {
	    conf_err(st, line, "bad %s \"%s\" (a control character in the "
		     "name)", p->name, value);
	    return (-1);
	}
	free(*sp);
	*sp = xstrdup(value);
	return (0);
    case T_DELIVER:
	{
	    char    why[400];
	    char   *host;
	    long    port;

	    if (conf_parse_deliver(value, &host, &port, why, sizeof(why)) < 0) {
		conf_err(st, line, "%s", why);
		return (-1);
	    }
	    free(si->src->deliver_host);
	    si->src->deliver_host = host;
	    si->src->deliver_port = port;
	}
	free(*sp);
	*sp = xstrdup(value);
	return (0);
    case T_RCPTS:
	list = conf_split(value, &n);
	if (n == 0) {
	    conf_err(st, line, "%s lists no address (separate addresses with "
		     "spaces or commas)", p->name);
	    conf_free_senders(list);
	    return (-1);
	}
	for (i = 0; i < n; i++) {
	    if (strchr(list[i], '@') ? !conf_valid_addr(list[i]) :
		!conf_valid_local(list[i])) {
		conf_err(st, line, "bad recipient \"%s\" in %s (use an "
			 "address like helpdesk@example.com or a local user "
			 "name like helpdesk; no angle brackets)", list[i],
			 p->name);
		conf_free_senders(list);
		return (-1);
	    }
	}
	conf_free_senders(*(char ***) field);
	*(char ***) field = list;
	return (0);
    case T_ADDRESS:
	if (!conf_valid_addr(value)) {
	    conf_err(st, line, "bad %s \"%s\" (expected an address like "
		     "postmaster@example.com)", p->name, value);
	    return (-1);
	}
	free(*sp);
	*sp = xstrdup(value);
	return (0);
    case T_SENDER:
	if (strcmp(value, "<>") != 0 && !conf_valid_addr(value)) {
	    conf_err(st, line, "bad %s \"%s\" (use an address like "
		     "helpdesk@example.com, or <> for the null sender; remove "
		     "the line to keep each message's own sender)", p->name,
		     value);
	    return (-1);
	}
	free(*sp);
	*sp = xstrdup(value);
	return (0);
    case T_AFTER:
	if (strcmp(value, "read") == 0)
	    ival = CONF_AFTER_READ;
	else if (strcmp(value, "delete") == 0)
	    ival = CONF_AFTER_DELETE;
	else if (strncmp(value, "move:", 5) == 0) {
	    ival = CONF_AFTER_MOVE;
	    for (cp = value + 5; conf_is_space((unsigned char) *cp); cp++)
		 /* void */ ;
	    if (*cp == 0) {
		conf_err(st, line, "after = move: needs a folder (like "
			 "move:Processed or move:archive)");
		return (-1);
	    }
	    for (i = 0; cp[i]; i++)
		if (iscntrl((unsigned char) cp[i]))
		    break;
	    if (cp[i] != 0) {
		conf_err(st, line, "bad after \"%s\" (a control character "
			 "in the folder name)", value);
		return (-1);
	    }
	    free(si->src->after_folder);
	    si->src->after_folder = xstrdup(cp);
	} else {
	    conf_err(st, line, "bad after \"%s\" (use read, move:FOLDER or "
		     "delete)", value);
	    return (-1);
	}
	if (ival != CONF_AFTER_MOVE) {
	    free(si->src->after_folder);
	    si->src->after_folder = 0;
	}
	memcpy(field, &ival, sizeof(ival));
	return (0);
    }
    return (-1);
}

/* conf_defaults - apply the table's defaults for one section */

static void conf_defaults(struct conf_state *st, struct conf_sinfo *si,
			          enum conf_sect sect)
{
    const struct conf_param *p;

    /*
     * Defaults go through the same checks as values from the file, so a
     * broken built-in default (say, a relative M365_STATEDIR from a bad
     * configure run) is reported, as line 0, instead of used.
     */
    for (p = conf_params; p < conf_params + NPARAMS; p++)
	if (p->sect == sect && p->def != 0 && *p->def != 0)
	    (void) conf_set_value(st, si, p, p->def, 0);
}

/* conf_new_account - start an [account NAME] section */

static void conf_new_account(struct conf_state *st, const char *name)
{
    struct conf_account *a;
    struct conf_sinfo *si;
    size_t  i;

    if (!conf_valid_ident(name) || strlen(name) > 64)
	conf_err(st, st->line, "bad account name \"%s\" (use up to 64 "
		 "letters, digits, '.', '_' or '-'; it names the token file)",
		 name);
    for (i = 0; i < st->naccts; i++)
	if (strcmp(st->accts[i]->acct->name, name) == 0) {
	    conf_err(st, st->line, "duplicate account \"%s\" (first defined "
		     "at line %d; account names must be unique)", name,
		     st->accts[i]->line);
	    break;
	}
    a = xcalloc(1, sizeof(*a));
    a->name = xstrdup(name);
    a->file = st->conf->path;
    a->line = st->line;
    *st->tail = a;
    st->tail = &a->next;

    si = xcalloc(1, sizeof(*si));
    si->sect = SECT_ACCOUNT;
    si->acct = a;
    si->line = st->line;
    st->accts = xrealloc(st->accts, (st->naccts + 1) * sizeof(*st->accts));
    st->accts[st->naccts++] = si;
    conf_defaults(st, si, SECT_ACCOUNT);
    st->sect = SECT_ACCOUNT;
}

/* conf_new_source - start a [source NAME] section */

static void conf_new_source(struct conf_state *st, const char *name)
{
    struct conf_source *s;
    struct conf_sinfo *si;
    size_t  i;

    if (!conf_valid_ident(name) || strlen(name) > 64)
	conf_err(st, st->line, "bad source name \"%s\" (use up to 64 "
		 "letters, digits, '.', '_' or '-'; it names the state file)",
		 name);
    for (i = 0; i < st->nsrcs; i++)
	if (strcmp(st->srcs[i]->src->name, name) == 0) {
	    conf_err(st, st->line, "duplicate source \"%s\" (first defined "
		     "at line %d; source names must be unique)", name,
		     st->srcs[i]->line);
	    break;
	}
    s = xcalloc(1, sizeof(*s));
    s->name = xstrdup(name);
    s->file = st->conf->path;
    s->line = st->line;
    *st->src_tail = s;
    st->src_tail = &s->next;

    si = xcalloc(1, sizeof(*si));
    si->sect = SECT_SOURCE;
    si->src = s;
    si->line = st->line;
    st->srcs = xrealloc(st->srcs, (st->nsrcs + 1) * sizeof(*st->srcs));
    st->srcs[st->nsrcs++] = si;
    conf_defaults(st, si, SECT_SOURCE);
    st->sect = SECT_SOURCE;
}

/* conf_header - a "[...]" line */

static void conf_header(struct conf_state *st, char *line)
{
    char   *end = line + strlen(line) - 1;
    char   *inner, *word, *name;

    if (*end != ']') {
	conf_err(st, st->line, "malformed section header \"%.60s\" (expected "
		 CONF_SECTIONS ")", line);
	st->sect = SECT_BAD;
	return;
    }
    *end = 0;
    inner = conf_trim(line + 1);
    word = inner;
    name = inner + strcspn(inner, " \t");
    if (*name) {
	*name++ = 0;
	name = conf_trim(name);
    }
    if (strcmp(word, "global") == 0 && *name == 0) {
	if (st->global.line == 0)
	    st->global.line = st->line;
	st->sect = SECT_GLOBAL;
    } else if (strcmp(word, "milter") == 0 && *name == 0) {
	if (st->milter.line == 0)
	    st->milter.line = st->line;
	st->sect = SECT_MILTER;
    } else if (strcmp(word, "account") == 0 && *name != 0
	       && strpbrk(name, " \t") == 0) {
	conf_new_account(st, name);
    } else if (strcmp(word, "account") == 0) {
	conf_err(st, st->line, "section [account] needs one name (like "
		 "[account main])");
	st->sect = SECT_BAD;
    } else if (strcmp(word, "source") == 0 && *name != 0
	       && strpbrk(name, " \t") == 0) {
	conf_new_source(st, name);
    } else if (strcmp(word, "source") == 0) {
	conf_err(st, st->line, "section [source] needs one name (like "
		 "[source helpdesk])");
	st->sect = SECT_BAD;
    } else {
	conf_err(st, st->line, "unknown section [%.60s%s%.60s] (expected "
		 CONF_SECTIONS ")", word, *name ? " " : "", name);
	st->sect = SECT_BAD;
    }
}

/* conf_assignment - a "key = value" line */

static void conf_assignment(struct conf_state *st, char *line)
{
    char   *eq = strchr(line, '=');
    char   *key, *value;
    struct conf_sinfo *si;
    const struct conf_param *p;
    char    sname[200];
    char    where[100];
    size_t  idx;

    if (eq == 0) {
	conf_err(st, st->line, "missing '=' in \"%.60s\" (expected "
		 "key = value)", line);
	return;
    }
    *eq = 0;
    key = conf_trim(line);
    value = conf_trim(eq + 1);
    if (*key == 0) {
	conf_err(st, st->line, "missing key before '=' (expected "
		 "key = value)");
	return;
    }
    if (st->sect == SECT_NONE) {
	if (conf_sect_where(key, SECT_NONE, where, sizeof(where)) == 0)
	    snprintf(where, sizeof(where), "%s", CONF_SECTIONS);
	conf_err(st, st->line, "key \"%.60s\" outside a section (put it "
		 "under %s)", key, where);
	return;
    }
    if (st->sect == SECT_BAD)
	return;				/* the header was reported */
    si = st->sect == SECT_GLOBAL ? &st->global : st->sect == SECT_MILTER ?
	&st->milter : st->sect == SECT_SOURCE ? st->srcs[st->nsrcs - 1] :
	st->accts[st->naccts - 1];
    if ((p = conf_find_param(st->sect, key)) == 0) {
	conf_unknown_key(st, si, key);
	return;
    }
    idx = (size_t) (p - conf_params);
    if (si->seen[idx]) {
	conf_err(st, st->line, "duplicate key \"%s\" in %s (first set at "
		 "line %d)", key, conf_sect_name(si, sname, sizeof(sname)),
		 si->seen[idx]);
	return;
    }
    si->seen[idx] = st->line;
    if (*value == 0) {
	conf_err(st, st->line, "key \"%s\" has no value (remove the line to "
		 "use the default)", key);
	si->bad[idx] = 1;
	return;
    }
    if (conf_set_value(st, si, p, value, st->line) < 0)
	si->bad[idx] = 1;
}

/* conf_seen - line where a key of si's section was set, 0 if not */

static int conf_seen(const struct conf_sinfo *si, const char *name)
{
    const struct conf_param *p = conf_find_param(si->sect, name);

    return (p ? si->seen[p - conf_params] : 0);
}

/* conf_bad - was a key of si's section given with a rejected value? */

static int conf_bad(const struct conf_sinfo *si, const char *name)
{
    const struct conf_param *p = conf_find_param(si->sect, name);

    return (p ? si->bad[p - conf_params] : 0);
}

/* conf_check_account - cross-key rules of one account */

static void conf_check_account(struct conf_state *st, struct conf_sinfo *si)
{
    struct conf_account *a = si->acct;
    const struct conf_param *p;
    int     line;

    for (p = conf_params; p < conf_params + NPARAMS; p++)
	if (p->sect == SECT_ACCOUNT && p->required
	    && si->seen[p - conf_params] == 0)
	    conf_err(st, si->line, "[account %s]: missing required key "
		     "\"%s\"", a->name, p->name);
    if (conf_bad(si, "auth"))
	return;				/* reported; do not guess further */
    switch (a->auth) {
    case CONF_AUTH_SECRET:
	if (a->secret_file == 0 && conf_seen(si, "secret_file") == 0)
	    conf_err(st, si->line, "[account %s]: auth = secret requires "
		     "secret_file (a mode 0600 file holding the client "
		     "secret)", a->name);
	break;
    case CONF_AUTH_CERTIFICATE:
	if (a->certificate_file == 0 && conf_seen(si, "certificate_file") == 0)
	    conf_err(st, si->line, "[account %s]: auth = certificate requires "
		     "certificate_file (the PEM certificate uploaded to the "
		     "app registration)", a->name);
	if (a->key_file == 0 && conf_seen(si, "key_file") == 0)
	    conf_err(st, si->line, "[account %s]: auth = certificate requires "
		     "key_file (the mode 0600 PEM private key)", a->name);
	break;
    case CONF_AUTH_DELEGATED:
	break;
    }

    /*
     * A key that the chosen auth method ignores is most likely a typo in
     * auth; saying so beats sending with the wrong identity.
     */
    if (a->auth != CONF_AUTH_SECRET && (line = conf_seen(si, "secret_file")))
	conf_err(st, line, "secret_file is only used with auth = secret "
		 "(this account has auth = %s)", conf_auth_name(a->auth));
    if (a->auth != CONF_AUTH_CERTIFICATE) {
	if ((line = conf_seen(si, "certificate_file")) != 0)
	    conf_err(st, line, "certificate_file is only used with auth = "
		     "certificate (this account has auth = %s)",
		     conf_auth_name(a->auth));
	if ((line = conf_seen(si, "key_file")) != 0)
	    conf_err(st, line, "key_file is only used with auth = certificate "
		     "(this account has auth = %s)", conf_auth_name(a->auth));
	if ((line = conf_seen(si, "jwt_alg")) != 0)
	    conf_err(st, line, "jwt_alg is only used with auth = certificate "
		     "(this account has auth = %s)", conf_auth_name(a->auth));
    }
    if (a->auth != CONF_AUTH_DELEGATED && (line = conf_seen(si, "scopes")))
	conf_err(st, line, "scopes only apply to auth = delegated (app-only "
		 "tokens carry the application permissions granted in "
		 "Entra ID)");
}

/*
 * conf_check_bounces - mode and recipients, unmatched (issue 12): a
 * mail source needs recipients; a bounce source sends each DSN to the
 * original envelope sender, so recipients would never be used
 */
static void conf_check_bounces(struct conf_state *st, struct conf_sinfo *si)
{
    struct conf_source *s = si->src;
    const char *u = s->unmatched ? s->unmatched : "keep";
    int     line;

    if (s->mode != CONF_SOURCE_BOUNCES) {
	if (conf_seen(si, "recipients") == 0)
	    conf_err(st, si->line, "[source %s]: missing required key "
		     "\"recipients\"", s->name);
	return;
    }
    if ((line = conf_seen(si, "recipients")) != 0)
	conf_err(st, line, "source %s: recipients is not used with mode = "
		 "bounces (each DSN goes to the envelope sender of the "
		 "message that bounced; remove the line)", s->name);
    line = conf_seen(si, "unmatched") ? conf_seen(si, "unmatched") : si->line;
    if (strcmp(u, "keep") == 0)
	return;
    if (strncmp(u, "postmaster:", 11) == 0 && conf_valid_addr(u + 11)) {
	free(s->unmatched_to);
	s->unmatched_to = xstrdup(u + 11);
	return;
    }
    conf_err(st, line, "source %s: bad unmatched \"%s\" (use keep, or "
	     "postmaster:ADDRESS like postmaster:postmaster@example.com)",
	     s->name, u);
}

/*
 * conf_check_source - resolve a source's account, default its mailbox,
 * and check the rules that span keys
 */

static void conf_check_source(struct conf_state *st, struct conf_sinfo *si)
{
    struct conf_source *s = si->src;
    const struct conf_account *a;
    const struct conf_param *p;
    struct strbuf names;
    int     line;

    for (p = conf_params; p < conf_params + NPARAMS; p++)
	if (p->sect == SECT_SOURCE && p->required
	    && si->seen[p - conf_params] == 0)
	    conf_err(st, si->line, "[source %s]: missing required key "
		     "\"%s\"", s->name, p->name);
    if (s->account != 0) {
	if ((a = conf_account(st->conf, s->account)) == 0) {
	    strbuf_init(&names, STRBUF_MAX_SMALL);
	    for (a = st->conf->accounts; a; a = a->next)
		strbuf_printf(&names, "%s%s", a == st->conf->accounts ? "" :
			      ", ", a->name);
	    if (st->conf->accounts == 0)
		conf_err(st, conf_seen(si, "account"), "source %s: no "
			 "[account %s] section (no account is defined; add "
			 "the [account %s] that reads the mailbox)", s->name,
			 s->account, s->account);
	    else
		conf_err(st, conf_seen(si, "account"), "source %s: no "
			 "[account %s] section (accounts defined: %s)",
			 s->name, s->account, strbuf_log_str(&names));
	    strbuf_free(&names);
	} else {
	    s->acct = a;
	    if (s->mailbox == 0 && a->mailbox != 0)
		s->mailbox = xstrdup(a->mailbox);
	}
    }
    conf_check_bounces(st, si);
    if (s->folder == 0)
	return;					/* a bad built-in default */
    if (s->after == CONF_AFTER_MOVE && s->after_folder != 0
	&& strcasecmp(s->after_folder, s->folder) == 0)
	conf_err(st, conf_seen(si, "after"), "source %s: after = move:%s "
		 "moves each message into the folder it reads (name another "
		 "folder, or use after = read)", s->name, s->after_folder);
    if (s->reject_folder != 0 && strcasecmp(s->reject_folder, s->folder) == 0
	&& (line = conf_seen(si, "reject_folder")) != 0)
	conf_err(st, line, "source %s: reject_folder is the folder it reads, "
		 "so a rejected message would be read again every round (name "
		 "another folder, or remove the line to leave rejected "
		 "messages in place, flagged)", s->name);
}

/* conf_check_sources - every source, then sources that share a folder */

static void conf_check_sources(struct conf_state *st)
{
    struct conf_source *a, *b;
    size_t  i, j;

    for (i = 0; i < st->nsrcs; i++)
	conf_check_source(st, st->srcs[i]);

    /*
     * Two sources on one folder would race for each message: both would
     * inject it, or one would mark it read before the other saw it.
     */
    for (j = 1; j < st->nsrcs; j++) {
	b = st->srcs[j]->src;
	for (i = 0; i < j; i++) {
	    a = st->srcs[i]->src;
	    if (a->mailbox && b->mailbox && a->folder && b->folder
		&& strcasecmp(a->mailbox, b->mailbox) == 0
		&& strcasecmp(a->folder, b->folder) == 0) {
		conf_err(st, st->srcs[j]->line, "source %s reads the same "
			 "folder as source %s (line %d): %s, %s (two sources "
			 "on one folder race for each message; list all "
			 "recipients in one source)", b->name, a->name,
			 st->srcs[i]->line, b->mailbox, b->folder);
		break;
	    }
	}
    }
}

/* conf_derive - defaults that depend on other keys, and global checks */

static void conf_derive(struct conf_state *st)
{
    struct conf *conf = st->conf;
    const struct conf_cloud *c;
    struct conf_sinfo *si, *first_default = 0;
    size_t  i;

    for (c = conf_clouds; c->name; c++)
	if (conf->cloud && strcmp(c->name, conf->cloud) == 0)
	    break;
    if (c->name == 0)
	c = conf_clouds;
    if (conf->login_url == 0)
	conf->login_url = xstrdup(c->login_url);
    if (conf->graph_url == 0)
	conf->graph_url = xstrdup(c->graph_url);
    /* The emulator overrides graph_url only: scopes keep the real name. */
    if (conf->graph_resource == 0)
	conf->graph_resource = xstrdup(c->graph_url);
    if (conf->upload_hosts == 0) {
	size_t  n;

	conf->upload_hosts = conf_split(c->upload_hosts, &n);
    }
    if (conf->user == 0 || *conf->user == 0) {
	free(conf->user);
	conf->user = xstrdup(DEF_USER_FALLBACK);
    }
    for (i = 0; i < st->naccts; i++) {
	si = st->accts[i];
	if (si->acct->max_message_size == 0)
	    si->acct->max_message_size = conf->max_message_size;
	conf_check_account(st, si);
	if (si->acct->is_default) {
	    if (first_default != 0)
		conf_err(st, conf_seen(si, "default"), "account %s is also "
			 "marked default = yes (account %s at line %d is "
			 "already the default; only one account may be)",
			 si->acct->name, first_default->acct->name,
			 conf_seen(first_default, "default"));
	    else
		first_default = si;
	}
    }
    conf_check_sources(st);
}

/* conf_free - release a configuration; NULL is fine */

void    conf_free(struct conf *conf)
{
    struct conf_account *a, *next;
    struct conf_source *s, *snext;

    if (conf == 0)
	return;
    for (s = conf->sources; s; s = snext) {
	snext = s->next;
	free(s->name);
	free(s->account);
	free(s->mailbox);
	free(s->folder);
	free(s->deliver_to);
	free(s->deliver_host);
	conf_free_senders(s->recipients);
	free(s->envelope_sender);
	free(s->after_folder);
	free(s->reject_folder);
	free(s->notify);
	free(s->bounce_from);
	free(s->unmatched);
	free(s->unmatched_to);
	free(s);
    }
    for (a = conf->accounts; a; a = next) {
	next = a->next;
	free(a->name);
	free(a->tenant);
	free(a->client_id);
	free(a->secret_file);
	free(a->certificate_file);
	free(a->key_file);
	free(a->mailbox);
	conf_free_senders(a->senders);
	free(a->scopes);
	free(a->proxy);
	free(a->no_proxy);
	free(a->proxy_credentials_file);
	free(a->rbac_probe_mailbox);
	free(a);
    }
    free(conf->path);
    free(conf->cloud);
    free(conf->login_url);
    free(conf->graph_url);
    free(conf->graph_resource);
    conf_free_senders(conf->upload_hosts);
    free(conf->ca_file);
    free(conf->ca_extra_file);
    free(conf->proxy);
    free(conf->no_proxy);
    free(conf->proxy_credentials_file);
    free(conf->state_dir);
    free(conf->user);
    free(conf->log_file);
    free(conf->milter.socket);
    free(conf->milter.pid_file);
    free(conf->milter.message_id_domain);
    free(conf->milter.tmp_dir);
    conf_free_senders(conf->milter.deliver_domains);
    free(conf->sendmail_path);
    free(conf->metrics_file);
    free(conf->admin_address);
    free(conf);
}

/*
 * conf_load - read and check a configuration file
 *
 * path: the file (NULL: M365_CONFFILE).  errors: every problem is
 * appended as "FILE:LINE: problem\n" (may be NULL).  Returns the
 * configuration, or NULL when the file cannot be read or has any error.
 */

struct conf *conf_load(const char *path, struct strbuf *errors)
{
    struct conf_state st;
    struct conf *conf;
    FILE   *fp;
    char   *buf = 0;
    char   *line;
    size_t  bufsize = 0;
    ssize_t n;
    size_t  i;

    if (path == 0)
	path = M365_CONFFILE;
    memset(&st, 0, sizeof(st));
    conf = xcalloc(1, sizeof(*conf));
    conf->path = xstrdup(path);
    st.conf = conf;
    st.errors = errors;
    st.sect = SECT_NONE;
    st.tail = &conf->accounts;
    st.src_tail = &conf->sources;
    st.global.sect = SECT_GLOBAL;
    st.milter.sect = SECT_MILTER;
    conf_defaults(&st, &st.global, SECT_GLOBAL);
    conf_defaults(&st, &st.milter, SECT_MILTER);

    if ((fp = fopen(path, "r")) == 0) {
	if (errors)
	    strbuf_line(errors, "%s: cannot open the configuration file: "
			"%s (use -c FILE to name another)", path,
			strerror(errno));
	conf_free(conf);
	return (0);
    }
    while ((n = getline(&buf, &bufsize, fp)) >= 0) {
	st.line++;
	if ((size_t) n > STRBUF_MAX_LINE) {
	    conf_err(&st, st.line, "line longer than %lu bytes",
		     (unsigned long) STRBUF_MAX_LINE);
	    continue;
	}
	if (strlen(buf) != (size_t) n) {
	    conf_err(&st, st.line, "NUL byte in line (is this a text file?)");
	    continue;
	}
	line = buf;

	/*
	 * Some Windows editors start a UTF-8 file with a byte order mark.
	 * At the start of the file it means nothing here; anywhere else
	 * (two files joined) it is named rather than misparsed.
	 */
	if (strncmp(line, CONF_UTF8_BOM, 3) == 0) {
	    if (st.line > 1)
		conf_err(&st, st.line, "a UTF-8 byte order mark (BOM) in the "
			 "middle of the file (were two files joined? remove "
			 "the three bytes EF BB BF at the start of this line)");
	    line += 3;
	}
	line = conf_trim(line);
	if (*line == 0 || *line == '#' || *line == ';')
	    continue;
	if (*line == '[')
	    conf_header(&st, line);
	else
	    conf_assignment(&st, line);
    }
    if (ferror(fp)) {
	if (errors)
	    strbuf_line(errors, "%s: cannot read the configuration file: "
			"%s", path, strerror(errno));
	st.nerrors++;
    }
    fclose(fp);
    free(buf);

    conf_derive(&st);

    /*
     * Every program needs an account: the relay and the milter send
     * through one, each source reads with one.  An empty or truncated
     * file must not look like a valid configuration that bounces all
     * mail ("no account sends for ..."); as an error it defers.
     */
    if (conf->accounts == 0)
	conf_err(&st, st.line > 0 ? st.line : 1, "no [account NAME] section "
		 "(%s; an empty or truncated file?): add the account that "
		 "sends or reads mail, with tenant, client_id and mailbox; "
		 "see m365relay.conf(5)", st.line > 0 ? "the file ends here" :
		 "the file is empty");

    for (i = 0; i < st.naccts; i++)
	free(st.accts[i]);
    free(st.accts);
    for (i = 0; i < st.nsrcs; i++)
	free(st.srcs[i]);
    free(st.srcs);
    if (st.nerrors > 0) {
	conf_free(conf);
	return (0);
    }
    return (conf);
}

/* conf_account - find an account by name */

struct conf_account *conf_account(const struct conf *conf, const char *name)
{
    struct conf_account *a;

    if (conf == 0 || name == 0)
	return (0);
    for (a = conf->accounts; a; a = a->next)
	if (strcmp(a->name, name) == 0)
	    return (a);
    return (0);
}

/* conf_source - find a source by name */

struct conf_source *conf_source(const struct conf *conf, const char *name)
{
    struct conf_source *s;

    if (conf == 0 || name == 0)
	return (0);
    for (s = conf->sources; s; s = s->next)
	if (strcmp(s->name, name) == 0)
	    return (s);
    return (0);
}

/* conf_domain_match - does addr's domain (after the last @) equal dom? */

static int conf_domain_match(const char *addr, const char *dom)
{
    const char *at = strrchr(addr, '@');

    return (at != 0 && at != addr && strcasecmp(at + 1, dom) == 0);
}

/* conf_sender_match - one pattern against a bare (bracket-free) sender */

static int conf_sender_match(const char *pat, const char *sender)
{
    if (strcmp(pat, "<>") == 0)
	return (*sender == 0);
    if (*sender == 0)
	return (0);
    if (pat[0] == '@')
	return (conf_domain_match(sender, pat + 1));
    if (pat[0] == '*' && pat[1] == '@' && !conf_has_glob(pat + 2))
	return (conf_domain_match(sender, pat + 2));
    if (conf_has_glob(pat))
	return (fnmatch(pat, sender, FNM_CASEFOLD) == 0);
    return (strcasecmp(pat, sender) == 0);
}

/*
 * conf_account_for_sender - the account that sends for an envelope sender
 *
 * An account whose own mailbox is the sender (the first in file order);
 * else the first senders pattern in file order that matches; then the
 * default account; else NULL.  The mailbox rule comes first because the
 * milter's rewrite_sender replaces the sender with the account's mailbox:
 * the relay must then pick an account that sends for it, whatever the
 * patterns say.  The sender may carry angle brackets; "" and "<>" are the
 * null sender, which only "<>" patterns (or the default account) take.
 */

struct conf_account *conf_account_for_sender(const struct conf *conf,
					             const char *sender)
{
    struct conf_account *a;
    char   *bare;
    size_t  len;
    char  **pp;

    if (conf == 0)
	return (0);
    if (sender == 0)
	sender = "";
    while (conf_is_space((unsigned char) *sender))
	sender++;
    len = strlen(sender);
    while (len > 0 && conf_is_space((unsigned char) sender[len - 1]))
	len--;
    if (len >= 2 && sender[0] == '<' && sender[len - 1] == '>') {
	sender++;
	len -= 2;
    }
    bare = xstrndup(sender, len);
    for (a = conf->accounts; a && *bare; a = a->next) {
	if (a->mailbox != 0 && strcasecmp(a->mailbox, bare) == 0) {
	    free(bare);
	    return (a);
	}
    }
    for (a = conf->accounts; a; a = a->next) {
	for (pp = a->senders; pp && *pp; pp++)
	    if (conf_sender_match(*pp, bare)) {
		free(bare);
		return (a);
	    }
    }
    free(bare);
    for (a = conf->accounts; a; a = a->next)
	if (a->is_default)
	    return (a);
    return (0);
}

/* conf_check_secret_file - one private file; reports as account NAME */

static int conf_check_secret_file(const struct conf *conf,
				          const struct conf_account *a,
				          const char *path, const char *what,
				          struct strbuf *errors)
{
    char    err[1024];

    if (file_check_private(path, what, err, sizeof(err)) == 0)
	return (0);
    if (errors)
	strbuf_line(errors, "%s:%d: account %s: %s", conf->path, a->line,
		    a->name, err);
    return (-1);
}

/*
 * conf_check_secrets - are the secret and key files present and private?
 *
 * Run by the user that will read them (ownership is judged against the
 * effective uid).  Returns 0, or -1 after appending one line per problem.
 */

int     conf_check_secrets(const struct conf *conf, struct strbuf *errors)
{
    const struct conf_account *a;
    char    err[1024];
    int     ret = 0;

    if (conf == 0)
	return (-1);
    if (conf->proxy_credentials_file
	&& file_check_private(conf->proxy_credentials_file,
			      "proxy credentials file", err,
			      sizeof(err)) < 0) {
	if (errors)
	    strbuf_line(errors, "%s: [global] proxy_credentials_file: %s",
			conf->path, err);
	ret = -1;
    }
    for (a = conf->accounts; a; a = a->next) {
	if (a->proxy_credentials_file
	    && conf_check_secret_file(conf, a, a->proxy_credentials_file,
				      "proxy credentials file", errors) < 0)
	    ret = -1;
	switch (a->auth) {
	case CONF_AUTH_SECRET:
	    if (conf_check_secret_file(conf, a, a->secret_file,
				       "client secret file", errors) < 0)
		ret = -1;
	    break;
	case CONF_AUTH_CERTIFICATE:
	    if (conf_check_secret_file(conf, a, a->key_file,
				       "private key file", errors) < 0)
		ret = -1;
	    if (access(a->certificate_file, R_OK) < 0) {
		if (errors)
		    strbuf_line(errors, "%s:%d: account %s: cannot read "
				"certificate file %s: %s", conf->path,
				a->line, a->name, a->certificate_file,
				strerror(errno));
		ret = -1;
	    }
	    break;
	case CONF_AUTH_DELEGATED:
	    break;
	}
    }
    return (ret);
}

/*
 * conf_warnings - valid settings that still let mail in that cannot go
 * out as configured
 *
 * rewrite_sender = yes (filter mode): the milter chose account A for a
 * message and gives it A's mailbox as sender; the relay then sends it
 * through the first account with that mailbox.  When that is another
 * account B (two accounts share a mailbox), B's limits apply; the milter
 * checks B's max_message_size at end of message, but the administrator
 * should know.  Returns the number of warning lines appended.
 */

int     conf_warnings(const struct conf *conf, struct strbuf *warnings)
{
    const struct conf_account *a, *r;
    int     n = 0;

    if (conf == 0 || conf->milter.mode != CONF_MILTER_FILTER
	|| !conf->milter.rewrite_sender)
	return (0);
    for (a = conf->accounts; a; a = a->next) {
	if ((r = conf_account_for_sender(conf, a->mailbox)) == a)
	    continue;
	n++;
	/* r is never NULL: a itself sends for its mailbox. */
	if (warnings != 0 && r != 0)
	    strbuf_line(warnings, "%s:%d: warning: account %s has the "
			"mailbox %s of account %s (line %d): with "
			"rewrite_sender = yes the relay sends its mail "
			"through account %s, with that account's limits "
			"(give each account its own mailbox, or set "
			"rewrite_sender = no)", conf->path, a->line,
			a->name, a->mailbox, r->name, r->line, r->name);
    }
    return (n);
}

/* conf_auth_name - the config spelling of an auth method */

const char *conf_auth_name(enum conf_auth auth)
{
    switch (auth) {
    case CONF_AUTH_DELEGATED:
	return ("delegated");
    case CONF_AUTH_SECRET:
	return ("secret");
    case CONF_AUTH_CERTIFICATE:
	return ("certificate");
    }
    return ("unknown");
}

/*
 * conf_upload_host_ok - is url https on a host of upload_hosts?  The
 * authority is taken up to the first "/", "?" or "#"; user information
 * ("user@host") is refused, as is any port other than the entry's (443
 * for an entry without one).  Host names compare case-insensitively.
 */
int     conf_upload_host_ok(const struct conf *conf, const char *url)
{
    const char *auth, *colon;
    char  **pp;
    size_t  alen, hlen, elen;
    const char *port, *eport;
    size_t  plen, eplen;

    if (conf == 0 || url == 0 || conf->upload_hosts == 0
	|| strncasecmp(url, "https://", 8) != 0)
	return (0);
    auth = url + 8;
    alen = strcspn(auth, "/?#");
    if (alen == 0 || memchr(auth, '@', alen) != 0
	|| memchr(auth, '[', alen) != 0)
	return (0);
    colon = memchr(auth, ':', alen);
    hlen = colon ? (size_t) (colon - auth) : alen;
    port = colon ? colon + 1 : "443";
    plen = colon ? alen - hlen - 1 : 3;
    for (pp = conf->upload_hosts; *pp; pp++) {
	colon = strrchr(*pp, ':');
	elen = colon ? (size_t) (colon - *pp) : strlen(*pp);
	eport = colon ? colon + 1 : "443";
	eplen = strlen(eport);
	if (elen == hlen && strncasecmp(*pp, auth, hlen) == 0
	    && eplen == plen && strncmp(eport, port, plen) == 0)
	    return (1);
    }
    return (0);
}

/* conf_max_message_size - the largest max_message_size of any account */

long    conf_max_message_size(const struct conf *conf)
{
    const struct conf_account *a;
    long    max = conf ? conf->max_message_size : 0;

    for (a = conf ? conf->accounts : 0; a; a = a->next)
	if (a->max_message_size > max)
	    max = a->max_message_size;
    return (max);
}

/*
 * conf_user_ids - uid/gid of the "user" key; -1 when unset or unknown.
 * The answer is kept per thread: with nss-systemd one getpwnam() costs
 * some 40 system calls, and a delivery asks for every state file it
 * writes.  An unknown user is asked again after a minute (it may be
 * created while a daemon runs).
 */
int     conf_user_ids(const struct conf *conf, uid_t *uid, gid_t *gid)
{
    static __thread char known[64];
    static __thread int known_ok;
    static __thread time_t known_at;
    static __thread uid_t known_uid;
    static __thread gid_t known_gid;
    struct passwd *pw;
    time_t  now;

    if (conf == 0 || conf->user == 0 || *conf->user == 0)
	return (-1);
    now = time((time_t *) 0);
    if (strcmp(known, conf->user) != 0 || (!known_ok && now - known_at > 60)) {
	known[0] = 0;
	if ((pw = getpwnam(conf->user)) != 0) {
	    known_uid = pw->pw_uid;
	    known_gid = pw->pw_gid;
	}
	known_ok = pw != 0;
	known_at = now;
	if (strlen(conf->user) < sizeof(known))
	    snprintf(known, sizeof(known), "%s", conf->user);
    }
    if (!known_ok)
	return (-1);
    if (uid)
	*uid = known_uid;
    if (gid)
	*gid = known_gid;
    return (0);
}

/*
 * conf_milter_delivers - deliver mode: does the milter send to rcpt?
 *
 * A recipient without a domain ("root", "a@") is never delivered (0):
 * Graph cannot deliver a local name, the MTA can.  Otherwise 1 when
 * deliver_domains is unset, else 1 when the domain after the last '@'
 * equals a listed "example.com" or ends in a listed ".example.com".
 * Angle brackets and surrounding white space are ignored, and so is
 * one final dot (the absolute form "example.com.").
 */

int     conf_milter_delivers(const struct conf *conf, const char *rcpt)
{
    const char *at, *end;
    char  **pp;
    size_t  dlen, plen;

    if (conf == 0 || rcpt == 0 || (at = strrchr(rcpt, '@')) == 0)
	return (0);
    at++;
    end = at + strlen(at);
    while (end > at && (conf_is_space((unsigned char) end[-1])
			|| end[-1] == '>'))
	end--;
    dlen = (size_t) (end - at);
    if (dlen > 0 && at[dlen - 1] == '.')
	dlen--;					/* absolute form "x.com." */
    if (dlen == 0)
	return (0);
    if (conf->milter.deliver_domains == 0)
	return (1);
    for (pp = conf->milter.deliver_domains; *pp; pp++) {
	plen = strlen(*pp);
	if (**pp == '.') {
	    if (dlen > plen && strncasecmp(at + dlen - plen, *pp, plen) == 0)
		return (1);
	} else if (dlen == plen && strncasecmp(at, *pp, plen) == 0) {
	    return (1);
	}
    }
    return (0);
}
