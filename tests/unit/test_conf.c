/* test_conf - m365relay.conf parser, defaults, sender routing, secrets */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"
#include "strbuf.h"
#include "util.h"
#include "t.h"
#include "t_file.h"

#if defined(M365_USER_DEFAULT)
#define WANT_USER (*M365_USER_DEFAULT ? M365_USER_DEFAULT : "m365relay")
#else
#define WANT_USER "m365relay"
#endif

static char t_dir[200];			/* short: fits the buffers below */
static char t_conf_path[256];
static int t_seq;

/* t_write - write text to DIR/name; returns the static path */

static const char *t_write(const char *name, const char *text, mode_t mode)
{
    static char path[256];

    snprintf(path, sizeof(path), "%s/%s", t_dir, name);
    t_write_file(path, text, mode);
    return (path);
}

/* t_load - write a config file (a fresh name each time) and load it */

static struct conf *t_load(const char *text, struct strbuf *err)
{
    char    name[32];

    snprintf(name, sizeof(name), "c%d.conf", ++t_seq);
    snprintf(t_conf_path, sizeof(t_conf_path), "%s",
	     t_write(name, text, 0644));
    strbuf_init(err, STRBUF_MAX_SMALL);
    return (conf_load(t_conf_path, err));
}

/* t_lines - number of lines in an error buffer */

static int t_lines(const struct strbuf *sb)
{
    const char *cp;
    int     n = 0;

    for (cp = strbuf_str(sb); *cp; cp++)
	n += (*cp == '\n');
    return (n);
}

/* t_noacct_lines - lines of an error buffer that say "no account" */

static int t_noacct_lines(const struct strbuf *sb)
{
    const char *cp;
    int     n = 0;

    for (cp = strbuf_str(sb); (cp = strstr(cp, ": no [account NAME] "
					   "section (")) != NULL; cp++)
	n++;
    return (n);
}

/* A valid account body used as context by the error cases. */
#define ACCT "[account main]\ntenant = contoso.onmicrosoft.com\n" \
	"client_id = 11111111-2222-3333-4444-555555555555\n" \
	"mailbox = relay@contoso.com\n"

static void test_full(void)
{
    struct strbuf err;
    struct conf *c;
    struct conf_account *a;
    char    text[8192];

    snprintf(text, sizeof(text),
	     "# full configuration: every key\n"
	     "; another comment style\n"
	     "\n"
	     "[global]\n"
	     "  cloud = usgov  \n"
	     "login_url = https://127.0.0.1:8443/\n"
	     "graph_url=https://127.0.0.1:8444//\n"
	     "graph_resource = https://graph.microsoft.us\n"
	     "ca_file = %s/ca.pem\n"
	     "state_dir = %s/state\n"
	     "user = nobody\n"
	     "log_file = stderr\n"
	     "timeout = 30\n"
	     "connect_timeout = 5\n"
	     "max_message_size = 20M\r\n"
	     "\n"
	     "[account deleg]\n"
	     "tenant = contoso.onmicrosoft.com\n"
	     "client_id = 11111111-2222-3333-4444-555555555555\n"
	     "auth = delegated\n"
	     "mailbox = relay@contoso.com\n"
	     "senders = alerts@contoso.com, @ops.contoso.com  <>\n"
	     "default = yes\n"
	     "scopes = Mail.Send.Shared,  Mail.ReadWrite\n"
	     "large_messages = no\n"
	     "max_message_size = 512K\n"
	     "[account app.cert]\n"
	     "tenant = 99999999-2222-3333-4444-555555555555\n"
	     "client_id = abc\n"
	     "auth = certificate\n"
	     "certificate_file = %s/app.crt\n"
	     "key_file = %s/app.key\n"
	     "jwt_alg = RS256\n"
	     "mailbox = noreply@contoso.com\n"
	     "senders = *@apps.contoso.com\n"
	     "default = off\n"
	     "large_messages = auto\n"
	     "[account app_secret]\n"
	     "tenant = contoso.onmicrosoft.com\n"
	     "client_id = def\n"
	     "auth = secret\n"
	     "secret_file = %s/secret\n"
	     "mailbox = billing@contoso.com\n",
	     t_dir, t_dir, t_dir, t_dir, t_dir);
    c = t_load(text, &err);
    T_OK(c != NULL);
    T_EQ_STR(strbuf_str(&err), "");
    if (c == NULL) {
	strbuf_free(&err);
	return;
    }
    T_EQ_STR(c->path, t_conf_path);
    T_EQ_STR(c->cloud, "usgov");
    T_EQ_STR(c->login_url, "https://127.0.0.1:8443");
    T_EQ_STR(c->graph_url, "https://127.0.0.1:8444");
    T_EQ_STR(c->graph_resource, "https://graph.microsoft.us");
    T_CONTAINS(c->ca_file, "/ca.pem");
    T_CONTAINS(c->state_dir, "/state");
    T_EQ_STR(c->user, "nobody");
    T_EQ_STR(c->log_file, "stderr");
    T_EQ_INT(c->timeout, 30);
    T_EQ_INT(c->connect_timeout, 5);
    T_EQ_INT(c->max_message_size, 20L * 1024 * 1024);

    a = c->accounts;
    T_OK(a != NULL);
    T_EQ_STR(a->name, "deleg");
    T_EQ_STR(a->tenant, "contoso.onmicrosoft.com");
    T_EQ_STR(a->client_id, "11111111-2222-3333-4444-555555555555");
    T_EQ_INT(a->auth, CONF_AUTH_DELEGATED);
    T_EQ_STR(a->mailbox, "relay@contoso.com");
    T_EQ_STR(a->senders[0], "alerts@contoso.com");
    T_EQ_STR(a->senders[1], "@ops.contoso.com");
    T_EQ_STR(a->senders[2], "<>");
    T_OK(a->senders[3] == NULL);
    T_EQ_INT(a->is_default, 1);
    T_EQ_STR(a->scopes, "Mail.Send.Shared Mail.ReadWrite");
    T_EQ_INT(a->large_messages, CONF_LARGE_NO);
    T_EQ_INT(a->max_message_size, 512L * 1024);
    T_EQ_STR(a->file, t_conf_path);
    T_EQ_INT(a->line, 17);
    T_OK(a->secret_file == NULL && a->key_file == NULL);

    a = a->next;
    T_EQ_STR(a->name, "app.cert");
    T_EQ_INT(a->auth, CONF_AUTH_CERTIFICATE);
    T_CONTAINS(a->certificate_file, "/app.crt");
    T_CONTAINS(a->key_file, "/app.key");
    T_EQ_INT(a->jwt_alg, CONF_JWT_RS256);
    T_EQ_INT(a->is_default, 0);
    T_EQ_INT(a->large_messages, CONF_LARGE_AUTO);
    T_OK(a->scopes == NULL);
    T_EQ_INT(a->max_message_size, 20L * 1024 * 1024);	/* [global] */
    T_EQ_INT(a->line, 27);

    a = a->next;
    T_EQ_STR(a->name, "app_secret");
    T_EQ_INT(a->auth, CONF_AUTH_SECRET);
    T_CONTAINS(a->secret_file, "/secret");
    T_EQ_INT(a->jwt_alg, CONF_JWT_PS256);
    T_OK(a->senders == NULL);
    T_OK(a->next == NULL);

    T_OK(conf_account(c, "app.cert") == c->accounts->next);
    T_OK(conf_account(c, "nope") == NULL);
    T_OK(conf_account(c, "APP.CERT") == NULL);
    conf_free(c);
    strbuf_free(&err);
}

static void test_defaults(void)
{
    struct strbuf err;
    struct conf *c;
    struct conf_account *a;

    c = t_load(ACCT, &err);
    T_OK(c != NULL);
    T_EQ_STR(strbuf_str(&err), "");
    if (c == NULL) {
	strbuf_free(&err);
	return;
    }
    T_EQ_STR(c->cloud, "global");
    T_EQ_STR(c->login_url, "https://login.microsoftonline.com");
    T_EQ_STR(c->graph_url, "https://graph.microsoft.com");
    T_EQ_STR(c->graph_resource, "https://graph.microsoft.com");
    T_OK(c->ca_file == NULL);
    T_EQ_STR(c->state_dir, M365_STATEDIR);
    T_EQ_STR(c->user, WANT_USER);
    T_OK(c->log_file == NULL);
    T_EQ_INT(c->timeout, 60);
    T_EQ_INT(c->connect_timeout, 15);
    T_EQ_INT(c->max_message_size, 35L * 1024 * 1024);
    a = c->accounts;
    T_EQ_INT(a->auth, CONF_AUTH_DELEGATED);
    T_EQ_INT(a->jwt_alg, CONF_JWT_PS256);
    T_EQ_INT(a->is_default, 0);
    T_EQ_INT(a->large_messages, CONF_LARGE_AUTO);
    T_EQ_INT(a->max_message_size, 35L * 1024 * 1024);
    T_OK(a->senders == NULL && a->scopes == NULL);
    T_EQ_INT(a->line, 1);

    /* [milter]: optional, every key has a default. */
    T_EQ_STR(c->milter.socket, "unix:" M365_RUNDIR "/milter.sock");
    T_EQ_INT(c->milter.socket_mode, 0660);
    T_OK(c->milter.pid_file == NULL);
    T_EQ_INT(c->milter.mode, CONF_MILTER_FILTER);
    T_EQ_INT(c->milter.unknown_sender_reject, 0);
    T_EQ_INT(c->milter.rewrite_sender, 0);
    T_EQ_INT(c->milter.rewrite_from, 0);
    T_EQ_INT(c->milter.add_reply_to, 1);
    T_EQ_INT(c->milter.add_message_id, 1);
    T_OK(c->milter.message_id_domain == NULL);
    T_EQ_INT(c->milter.memory_limit, 1024L * 1024);
    T_OK(c->milter.tmp_dir == NULL);
    T_OK(c->milter.deliver_domains == NULL);
    T_EQ_INT(c->milter.on_internal_error, CONF_ACTION_TEMPFAIL);
    T_EQ_INT(c->milter.on_graph_error, CONF_ACTION_TEMPFAIL);
    T_EQ_INT(c->milter.on_account_offline, CONF_ACTION_TEMPFAIL);
    T_EQ_INT(c->milter.timeout, 7200);
    T_EQ_INT(c->timeout, 60);			/* [global] timeout is separate */
    conf_free(c);
    strbuf_free(&err);

    /* An empty [milter] section is the same. */
    c = t_load("[milter]\n" ACCT, &err);
    T_OK(c != NULL);
    if (c) {
	T_EQ_STR(c->milter.socket, "unix:" M365_RUNDIR "/milter.sock");
	T_EQ_INT(c->milter.mode, CONF_MILTER_FILTER);
	T_EQ_INT(c->milter.timeout, 7200);
    }
    conf_free(c);
    strbuf_free(&err);

    /* log_file = syslog is the same as unset; a path is kept. */
    c = t_load("[global]\nlog_file = syslog\n" ACCT, &err);
    T_OK(c != NULL && c->log_file == NULL);
    conf_free(c);
    strbuf_free(&err);
    c = t_load("[global]\nlog_file = /var/log/m365relay.log\n" ACCT, &err);
    T_OK(c != NULL);
    T_EQ_STR(c ? c->log_file : NULL, "/var/log/m365relay.log");
    conf_free(c);
    strbuf_free(&err);
}

static void test_milter_full(void)
{
    struct strbuf err;
    struct conf *c;
    char    text[4096];

    snprintf(text, sizeof(text),
	     "[global]\n"
	     "timeout = 30\n"
	     "[milter]\n"
	     "socket = inet:8891@127.0.0.1\n"
	     "socket_mode = 0600\n"
	     "pid_file = %s/m365-milter.pid\n"
	     "mode = deliver\n"
	     "unknown_sender = reject\n"
	     "rewrite_sender = yes\n"
	     "rewrite_from = on\n"
	     "add_reply_to = no\n"
	     "add_message_id = false\n"
	     "message_id_domain = mail.Contoso.com\n"
	     "memory_limit = 256K\n"
	     "tmp_dir = %s/spool\n"
	     "deliver_domains = contoso.com, .contoso.com  Fabrikam.example\n"
	     "on_internal_error = accept\n"
	     "on_graph_error = reject\n"
	     "on_account_offline = accept\n"
	     "timeout = 600\n"
	     ACCT, t_dir, t_dir);
    c = t_load(text, &err);
    T_OK(c != NULL);
    T_EQ_STR(strbuf_str(&err), "");
    if (c == NULL) {
	strbuf_free(&err);
	return;
    }
    T_EQ_STR(c->milter.socket, "inet:8891@127.0.0.1");
    T_EQ_INT(c->milter.socket_mode, 0600);
    T_CONTAINS(c->milter.pid_file, "/m365-milter.pid");
    T_EQ_INT(c->milter.mode, CONF_MILTER_DELIVER);
    T_EQ_INT(c->milter.unknown_sender_reject, 1);
    T_EQ_INT(c->milter.rewrite_sender, 1);
    T_EQ_INT(c->milter.rewrite_from, 1);
    T_EQ_INT(c->milter.add_reply_to, 0);
    T_EQ_INT(c->milter.add_message_id, 0);
    T_EQ_STR(c->milter.message_id_domain, "mail.Contoso.com");
    T_EQ_INT(c->milter.memory_limit, 256L * 1024);
    T_CONTAINS(c->milter.tmp_dir, "/spool");
    T_OK(c->milter.deliver_domains != NULL);
    if (c->milter.deliver_domains) {
	T_EQ_STR(c->milter.deliver_domains[0], "contoso.com");
	T_EQ_STR(c->milter.deliver_domains[1], ".contoso.com");
	T_EQ_STR(c->milter.deliver_domains[2], "Fabrikam.example");
	T_OK(c->milter.deliver_domains[3] == NULL);
    }
    T_EQ_INT(c->milter.on_internal_error, CONF_ACTION_ACCEPT);
    T_EQ_INT(c->milter.on_graph_error, CONF_ACTION_REJECT);
    T_EQ_INT(c->milter.on_account_offline, CONF_ACTION_ACCEPT);
    T_EQ_INT(c->milter.timeout, 600);
    T_EQ_INT(c->timeout, 30);
    T_EQ_STR(c->accounts->name, "main");
    conf_free(c);
    strbuf_free(&err);

    /* The other values of each enum, and the range ends. */
    c = t_load("[milter]\nmode = filter\nunknown_sender = accept\n"
	       "on_internal_error = reject\non_graph_error = accept\n"
	       "on_account_offline = reject\nmemory_limit = 64M\n"
	       "timeout = 86400\nsocket_mode = 0\n" ACCT, &err);
    T_OK(c != NULL);
    if (c) {
	T_EQ_INT(c->milter.mode, CONF_MILTER_FILTER);
	T_EQ_INT(c->milter.unknown_sender_reject, 0);
	T_EQ_INT(c->milter.on_internal_error, CONF_ACTION_REJECT);
	T_EQ_INT(c->milter.on_graph_error, CONF_ACTION_ACCEPT);
	T_EQ_INT(c->milter.on_account_offline, CONF_ACTION_REJECT);
	T_EQ_INT(c->milter.memory_limit, 64L * 1024 * 1024);
	T_EQ_INT(c->milter.timeout, 86400);
	T_EQ_INT(c->milter.socket_mode, 0);
    }
    conf_free(c);
    strbuf_free(&err);
    c = t_load("[milter]\nmemory_limit = 1K\ntimeout = 1\n"
	       "socket_mode = 777\n" ACCT, &err);
    T_OK(c != NULL);
    if (c) {
	T_EQ_INT(c->milter.memory_limit, 1024);
	T_EQ_INT(c->milter.timeout, 1);
	T_EQ_INT(c->milter.socket_mode, 0777);
    }
    conf_free(c);
    strbuf_free(&err);
}

static const char *const good_sockets[] = {
    "inet:8891@127.0.0.1",
    "inet:1@localhost",
    "inet:65535@0.0.0.0",
    "inet:10025@[127.0.0.1]",
    "inet:8891@milter-host.example",
    "inet6:8891@::1",
    "inet6:8891@[::1]",
    "unix:/run/m365relay/milter.sock",
    "local:/var/spool/postfix/m365/milter",
    "unix:/x",
};

static void test_milter_sockets(void)
{
    struct strbuf err;
    struct conf *c;
    char    text[300];
    size_t  i;

    for (i = 0; i < sizeof(good_sockets) / sizeof(good_sockets[0]); i++) {
	snprintf(text, sizeof(text), "[milter]\nsocket = %s\n" ACCT,
		 good_sockets[i]);
	c = t_load(text, &err);
	T_CHECK(c != NULL, "socket %s: %s", good_sockets[i], strbuf_str(&err));
	if (c)
	    T_EQ_STR(c->milter.socket, good_sockets[i]);
	conf_free(c);
	strbuf_free(&err);
    }
}

struct delivers_case {
    const char *rcpt;
    int     want;
};

static const struct delivers_case delivers_cases[] = {
    {"a@contoso.com", 1},
    {"<a@contoso.com>", 1},
    {"<A@CONTOSO.COM> ", 1},
    {"a@contoso.com.", 1},
    {"a@sales.contoso.com", 1},		/* .contoso.com */
    {"a@x.y.contoso.com", 1},
    {"a@fabrikam.example", 1},
    {"a@sub.fabrikam.example", 0},	/* exact only */
    {"a@evilcontoso.com", 0},
    {"a@contoso.com.evil", 0},
    {"a@example.net", 0},
    {"postmaster", 0},
    {"<>", 0},
    {"a@", 0},
    {"\"a@contoso.com\"@example.net", 0},	/* the last @ counts */
};

static void test_milter_delivers(void)
{
    struct strbuf err;
    struct conf *c;
    size_t  i;

    c = t_load("[milter]\nmode = deliver\n"
	       "deliver_domains = contoso.com .contoso.com, FABRIKAM.example\n"
	       ACCT, &err);
    T_OK(c != NULL);
    if (c == NULL) {
	strbuf_free(&err);
	return;
    }
    for (i = 0; i < sizeof(delivers_cases) / sizeof(delivers_cases[0]); i++)
	T_CHECK(conf_milter_delivers(c, delivers_cases[i].rcpt)
		== delivers_cases[i].want, "conf_milter_delivers(\"%s\") "
		"should be %d", delivers_cases[i].rcpt, delivers_cases[i].want);
    T_EQ_INT(conf_milter_delivers(c, NULL), 0);
    conf_free(c);
    strbuf_free(&err);

    /* A subdomain entry alone does not take the parent domain. */
    c = t_load("[milter]\ndeliver_domains = .contoso.com\n" ACCT, &err);
    T_OK(c != NULL);
    T_EQ_INT(conf_milter_delivers(c, "a@contoso.com"), 0);
    T_EQ_INT(conf_milter_delivers(c, "a@eu.contoso.com"), 1);
    conf_free(c);
    strbuf_free(&err);

    /*
     * Unset: every recipient with a domain.  A local name stays with the
     * MTA (conf(5); the milter's rule, tests/milter/t-deliver DLV9).
     */
    c = t_load("[milter]\nmode = deliver\n" ACCT, &err);
    T_OK(c != NULL);
    T_EQ_INT(conf_milter_delivers(c, "anyone@anywhere.example"), 1);
    T_EQ_INT(conf_milter_delivers(c, "<a@contoso.com.>"), 1);
    T_EQ_INT(conf_milter_delivers(c, "postmaster"), 0);
    T_EQ_INT(conf_milter_delivers(c, "<root>"), 0);
    T_EQ_INT(conf_milter_delivers(c, "a@"), 0);
    T_EQ_INT(conf_milter_delivers(c, "a@."), 0);
    T_EQ_INT(conf_milter_delivers(c, NULL), 0);
    conf_free(c);
    strbuf_free(&err);
    T_EQ_INT(conf_milter_delivers(NULL, "a@b.example"), 0);
}

struct cloud_case {
    const char *text;
    const char *login_url;
    const char *graph_url;
    const char *graph_resource;
};

static const struct cloud_case cloud_cases[] = {
    {"[global]\ncloud = global\n", "https://login.microsoftonline.com",
    "https://graph.microsoft.com", "https://graph.microsoft.com"},
    {"[global]\ncloud = usgov\n", "https://login.microsoftonline.us",
    "https://graph.microsoft.us", "https://graph.microsoft.us"},
    {"[global]\ncloud = usgov-dod\n", "https://login.microsoftonline.us",
    "https://dod-graph.microsoft.us", "https://dod-graph.microsoft.us"},
    {"[global]\ncloud = china\n", "https://login.chinacloudapi.cn",
	"https://microsoftgraph.chinacloudapi.cn",
    "https://microsoftgraph.chinacloudapi.cn"},
    /* The emulator: graph_url only; the scope resource stays real. */
    {"[global]\ngraph_url = https://127.0.0.1:8443/\n",
	"https://login.microsoftonline.com", "https://127.0.0.1:8443",
    "https://graph.microsoft.com"},
    {"[global]\ncloud = usgov-dod\ngraph_url = https://[::1]:9/v1/\n",
	"https://login.microsoftonline.us", "https://[::1]:9/v1",
    "https://dod-graph.microsoft.us"},
    {"[global]\nlogin_url = HTTPS://login.example\ncloud = china\n",
	"HTTPS://login.example", "https://microsoftgraph.chinacloudapi.cn",
    "https://microsoftgraph.chinacloudapi.cn"},
    {"[global]\ngraph_resource = https://graph.microsoft.com/\n"
	"cloud = usgov\n", "https://login.microsoftonline.us",
    "https://graph.microsoft.us", "https://graph.microsoft.com"},
};

static void test_clouds(void)
{
    struct strbuf err;
    struct conf *c;
    size_t  i;

    char    text[1024];

    for (i = 0; i < sizeof(cloud_cases) / sizeof(cloud_cases[0]); i++) {
	snprintf(text, sizeof(text), "%s" ACCT, cloud_cases[i].text);
	c = t_load(text, &err);
	T_OK(c != NULL);
	if (c == NULL) {
	    printf("# case %lu: %s", (unsigned long) i, strbuf_str(&err));
	    strbuf_free(&err);
	    continue;
	}
	T_EQ_STR(c->login_url, cloud_cases[i].login_url);
	T_EQ_STR(c->graph_url, cloud_cases[i].graph_url);
	T_EQ_STR(c->graph_resource, cloud_cases[i].graph_resource);
	conf_free(c);
	strbuf_free(&err);
    }
}

/*
 * Each case must fail with exactly one error line, at the given line,
 * containing the given text.
 */
struct err_case {
    const char *text;
    int     line;
    const char *want;
};

static const struct err_case err_cases[] = {
    {"[global]\ncloud = global\n[account main]\ntenant = t\nclient_id = c\n"
	"mailbox = a@b.example\nmailboxx = a@b.example\n", 7,
    "unknown key \"mailboxx\" in [account main] (did you mean \"mailbox\"?)"},
    {ACCT "Mailbox = a@b.example\n", 5,
    "unknown key \"Mailbox\" in [account main] (did you mean \"mailbox\"?)"},
    {"[global]\nfrobnicate = 1\n", 2,
    "unknown key \"frobnicate\" in [global] (see m365relay.conf(5)"},
    {"[global]\nmailbox = a@b.example\n", 2,
    "key \"mailbox\" does not belong in [global] (move it to an [account "
    "NAME] section or a [source NAME] section)"},
    {ACCT "state_dir = /var/lib/x\n", 5, "key \"state_dir\" does not belong "
    "in [account main] (move it to [global])"},
    {"[globals]\ncloud = china\n", 1,
    "unknown section [globals] (expected [global], [milter], [account "
    "NAME] or [source NAME])"},
    {"[server x]\n# keys below are skipped\nfoo = bar\n", 1,
    "unknown section [server x]"},
    {"[global\n", 1, "malformed section header \"[global\" (expected "
    "[global], [milter], [account NAME] or [source NAME])"},
    {"[milter x]\nmode = deliver\n", 1, "unknown section [milter x]"},
    /* [milter] */
    {"[milter]\ncloud = china\n", 2, "key \"cloud\" does not belong in "
    "[milter] (move it to [global])"},
    {"[milter]\nmailbox = a@b.example\n", 2, "key \"mailbox\" does not "
    "belong in [milter] (move it to an [account NAME] section or a [source "
    "NAME] section)"},
    {"[milter]\nmax_message_size = 5M\n", 2, "key \"max_message_size\" "
    "does not belong in [milter] (move it to [global], an [account NAME] "
    "section or a [source NAME] section)"},
    {"[global]\nsocket = inet:8891@127.0.0.1\n", 2, "key \"socket\" does "
    "not belong in [global] (move it to [milter])"},
    {ACCT "timeout = 5\n", 5, "key \"timeout\" does not belong in [account "
    "main] (move it to [global] or [milter])"},
    {"[milter]\nsokcet = unix:/run/x.sock\n", 2, "unknown key \"sokcet\" in "
    "[milter] (did you mean \"socket\"?)"},
    {"[milter]\nmode = filter\n[global]\n[milter]\nmode = deliver\n", 5,
    "duplicate key \"mode\" in [milter] (first set at line 2)"},
    {"[milter]\nsocket =\n", 2, "key \"socket\" has no value"},
    {"[milter]\nsocket = 8891\n", 2, "bad socket \"8891\" (use "
    "inet:PORT@HOST, inet6:PORT@HOST, unix:/PATH or local:/PATH, like "
    "inet:8891@127.0.0.1)"},
    {"[milter]\nsocket = /run/m365relay/milter.sock\n", 2, "bad socket "
    "\"/run/m365relay/milter.sock\""},
    {"[milter]\nsocket = tcp:8891@127.0.0.1\n", 2, "bad socket type in "
    "\"tcp:8891@127.0.0.1\" (use inet:PORT@HOST, inet6:PORT@HOST, "
    "unix:/PATH or local:/PATH)"},
    {"[milter]\nsocket = unix:milter.sock\n", 2, "socket \"unix:milter.sock\" "
    "needs an absolute path (like unix:" M365_RUNDIR "/milter.sock)"},
    {"[milter]\nsocket = local:\n", 2, "socket \"local:\" needs an "
    "absolute path"},
    {"[milter]\nsocket = unix:/a/very/long/path/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/milter.sock\n", 2, "socket path "
	"in \"unix:/a/very/long/path/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...\" "
    "is longer than 107 bytes (a limit of unix sockets; use a shorter path)"},
    {"[milter]\nsocket = inet:8891\n", 2, "socket \"inet:8891\" needs a host "
    "(like inet:8891@127.0.0.1; the MTA connects there)"},
    {"[milter]\nsocket = inet6:8891@\n", 2, "socket \"inet6:8891@\" needs a "
    "host (like inet6:8891@::1;"},
    {"[milter]\nsocket = inet:\n", 2, "socket \"inet:\" needs a host (like "
    "inet:8891@127.0.0.1;"},
    {"[milter]\nsocket = inet:0@127.0.0.1\n", 2, "bad port \"0\" in socket "
    "\"inet:0@127.0.0.1\" (use a number from 1 to 65535)"},
    {"[milter]\nsocket = inet:65536@127.0.0.1\n", 2, "bad port \"65536\""},
    {"[milter]\nsocket = inet:milter@127.0.0.1\n", 2, "bad port \"milter\""},
    {"[milter]\nsocket = inet:@127.0.0.1\n", 2, "bad port \"\" in socket"},
    {"[milter]\nsocket = inet:+88@127.0.0.1\n", 2, "bad port \"+88\""},
    {"[milter]\nsocket = inet:8891@127.0.0.1/8\n", 2, "bad host "
    "\"127.0.0.1/8\" in socket \"inet:8891@127.0.0.1/8\" (use a host name or "
    "an IPv4 address; inet6:PORT@ADDR for IPv6)"},
    {"[milter]\nsocket = inet:8891@::1\n", 2, "bad host \"::1\""},
    {"[milter]\nsocket = inet6:8891@fe80::1%eth0\n", 2, "bad host "
    "\"fe80::1%eth0\" in socket \"inet6:8891@fe80::1%eth0\" (use a host "
    "name or an IPv6 address)"},
    {"[milter]\nsocket_mode = 660x\n", 2, "bad socket_mode \"660x\" (use an "
    "octal mode from 0 to 777, like 0660)"},
    {"[milter]\nsocket_mode = 0800\n", 2, "bad socket_mode \"0800\""},
    {"[milter]\nsocket_mode = 1777\n", 2, "bad socket_mode \"1777\""},
    {"[milter]\nsocket_mode = 00660\n", 2, "bad socket_mode \"00660\""},
    {"[milter]\npid_file = m365-milter.pid\n", 2, "pid_file must be an "
    "absolute path (got \"m365-milter.pid\")"},
    {"[milter]\nmode = relay\n", 2, "bad mode \"relay\" (use filter or "
    "deliver)"},
    {"[milter]\nunknown_sender = bounce\n", 2, "bad unknown_sender "
    "\"bounce\" (use accept or reject)"},
    {"[milter]\nrewrite_sender = always\n", 2, "bad boolean \"always\" for "
    "rewrite_sender (use yes or no)"},
    {"[milter]\nrewrite_from = 2\n", 2, "bad boolean \"2\" for rewrite_from"},
    {"[milter]\nadd_reply_to = maybe\n", 2, "bad boolean \"maybe\" for "
    "add_reply_to"},
    {"[milter]\nadd_message_id = y\n", 2, "bad boolean \"y\" for "
    "add_message_id"},
    {"[milter]\nmessage_id_domain = -bad.example\n", 2, "bad "
    "message_id_domain \"-bad.example\" (use a domain name like "
    "mail.example.com)"},
    {"[milter]\nmessage_id_domain = a..example\n", 2, "bad "
    "message_id_domain \"a..example\""},
    {"[milter]\nmessage_id_domain = user@example.com\n", 2, "bad "
    "message_id_domain \"user@example.com\""},
    {"[milter]\nmemory_limit = 65M\n", 2, "bad size \"65M\" for memory_limit "
    "(use bytes, or a number with K or M, from 1K to 64M)"},
    {"[milter]\nmemory_limit = 1000\n", 2, "bad size \"1000\" for "
    "memory_limit"},
    {"[milter]\ntmp_dir = tmp\n", 2, "tmp_dir must be an absolute path (got "
    "\"tmp\")"},
    {"[milter]\ndeliver_domains = , ,\n", 2, "deliver_domains lists no "
    "domain (separate domains with spaces or commas)"},
    {"[milter]\ndeliver_domains = example.com @contoso.com\n", 2, "bad domain "
    "\"@contoso.com\" in deliver_domains (write example.com for the domain, "
    ".example.com for its subdomains)"},
    {"[milter]\ndeliver_domains = *.example.com\n", 2, "bad domain "
    "\"*.example.com\""},
    {"[milter]\ndeliver_domains = ..example.com\n", 2, "bad domain "
    "\"..example.com\""},
    {"[milter]\non_internal_error = discard\n", 2, "bad on_internal_error "
    "\"discard\" (use tempfail, accept or reject)"},
    {"[milter]\non_graph_error = TEMPFAIL\n", 2, "bad on_graph_error "
    "\"TEMPFAIL\" (use tempfail, accept or reject)"},
    {"[milter]\non_account_offline = defer\n", 2, "bad on_account_offline "
    "\"defer\" (use tempfail, accept or reject)"},
    {"[milter]\ntimeout = 0\n", 2, "bad number \"0\" for timeout (use a "
    "whole number from 1 to 86400)"},
    {"[milter]\ntimeout = 86401\n", 2, "bad number \"86401\" for timeout"},
    {"[account]\ntenant = x\n", 1, "section [account] needs one name"},
    {"[account a b]\n", 1, "section [account] needs one name"},
    {"[account ../x]\ntenant = t\nclient_id = c\nmailbox = a@b.example\n", 1,
    "bad account name \"../x\""},
    {"[global]\ntimeout = 5\nconnect_timeout = 5\ntimeout = 6\n", 4,
    "duplicate key \"timeout\" in [global] (first set at line 2)"},
    {"[global]\ncloud = china\n[global]\ncloud = usgov\n", 4,
    "duplicate key \"cloud\" in [global] (first set at line 2)"},
    {ACCT "\n" ACCT, 6,
    "duplicate account \"main\" (first defined at line 1"},
    {"cloud = global\n[global]\n", 1,
    "key \"cloud\" outside a section (put it under [global])"},
    {"mode = deliver\n[milter]\n", 1,
    "key \"mode\" outside a section (put it under [milter] or a [source "
    "NAME] section)"},
    {"timeout = 5\n", 1,
    "key \"timeout\" outside a section (put it under [global] or [milter])"},
    {"max_message_size = 5M\n", 1, "key \"max_message_size\" outside a "
    "section (put it under [global], an [account NAME] section or a "
    "[source NAME] section)"},
    {"frobnicate = 5\n", 1, "key \"frobnicate\" outside a section (put it "
    "under [global], [milter], [account NAME] or [source NAME])"},
    {"[global]\n\ncloud global\n", 3,
    "missing '=' in \"cloud global\" (expected key = value)"},
    {"[global]\n = x\n", 2, "missing key before '='"},
    {"[global]\ncloud =\n", 2,
    "key \"cloud\" has no value (remove the line to use the default)"},
    {ACCT "save_to_sent_items = yes\n", 5,
    "the key save_to_sent_items was removed: Microsoft 365 keeps a copy"},
    {ACCT "default = 2\n", 5, "bad boolean \"2\" for default"},
    {"[global]\ntimeout = 6o\n", 2,
    "bad number \"6o\" for timeout (use a whole number from 1 to 3600)"},
    {"[global]\nconnect_timeout = 0\n", 2,
    "bad number \"0\" for connect_timeout"},
    {"[global]\ntimeout = 99999999999999999999999\n", 2,
    "bad number \"99999999999999999999999\" for timeout"},
    {"[global]\nmax_message_size = 151M\n", 2,
    "bad size \"151M\" for max_message_size (use bytes, or a number with K "
    "or M, from 1K to 150M)"},
    {ACCT "max_message_size = 10G\n", 5, "bad size \"10G\""},
    {ACCT "max_message_size = -5\n", 5, "bad size \"-5\""},
    {"[global]\ncloud = germany\n", 2,
    "bad cloud \"germany\" (use global, usgov, usgov-dod or china)"},
    {"[global]\ngraph_url = http://127.0.0.1:8080\n", 2,
    "graph_url must be an https:// URL (got \"http://127.0.0.1:8080\")"},
    {"[global]\nlogin_url = https://\n", 2,
    "login_url must be an https:// URL"},
    {"[global]\nstate_dir = var/lib/m365relay\n", 2,
    "state_dir must be an absolute path (got \"var/lib/m365relay\")"},
    {"[global]\nlog_file = mail.log\n", 2,
    "log_file must be syslog, stderr or an absolute path"},
    {"[global]\nuser = m365 relay\n", 2, "user must be one word"},
    {ACCT "auth = password\n", 5,
    "bad auth \"password\" (use delegated, secret or certificate)"},
    /* A bad auth value does not cascade into auth-specific errors. */
    {ACCT "auth = secrett\nsecret_file = /etc/m365relay/secret\n", 5,
    "bad auth \"secrett\""},
    {ACCT "auth = certificate\ncertificate_file = /c\nkey_file = /k\n"
	"jwt_alg = ES256\n", 8, "bad jwt_alg \"ES256\" (use PS256 or RS256)"},
    {"[account main]\nclient_id = c\nmailbox = a@b.example\n", 1,
    "[account main]: missing required key \"tenant\""},
    {"[account main]\ntenant = t\nmailbox = a@b.example\n", 1,
    "[account main]: missing required key \"client_id\""},
    {"[global]\n[account main]\ntenant = t\nclient_id = c\n", 2,
    "[account main]: missing required key \"mailbox\""},
    {ACCT "tenant2 = x\n", 5,
    "unknown key \"tenant2\" in [account main] (did you mean \"tenant\"?)"},
    {"[account main]\ntenant = con/toso\nclient_id = c\n"
	"mailbox = a@b.example\n", 2, "bad tenant \"con/toso\""},
    {ACCT "auth = secret\n", 1,
    "[account main]: auth = secret requires secret_file"},
    {ACCT "auth = certificate\ncertificate_file = /etc/app.crt\n", 1,
    "[account main]: auth = certificate requires key_file"},
    {ACCT "auth = certificate\nkey_file = /etc/app.key\n", 1,
    "[account main]: auth = certificate requires certificate_file"},
    {ACCT "secret_file = /etc/m365relay/secret\n", 5,
    "secret_file is only used with auth = secret (this account has auth = "
    "delegated)"},
    {ACCT "auth = secret\nsecret_file = /s\nkey_file = /k\n", 7,
    "key_file is only used with auth = certificate (this account has auth = "
    "secret)"},
    {ACCT "auth = secret\nsecret_file = /s\njwt_alg = RS256\n", 7,
    "jwt_alg is only used with auth = certificate"},
    {ACCT "auth = secret\nsecret_file = /s\nscopes = Mail.Send.Shared\n", 7,
    "scopes only apply to auth = delegated"},
    {ACCT "auth = secret\nsecret_file = relative/secret\n", 6,
    "secret_file must be an absolute path (got \"relative/secret\")"},
    {"[account main]\ntenant = t\nclient_id = c\nmailbox = relay\n", 4,
    "bad mailbox \"relay\" (expected the sending mailbox's address"},
    {"[account main]\ntenant = t\nclient_id = c\nmailbox = @contoso.com\n", 4,
    "bad mailbox \"@contoso.com\""},
    {ACCT "senders = a@b.example, example.com\n", 5,
    "sender pattern \"example.com\" has no '@' (write @example.com for a "
    "whole domain, <> for the null sender)"},
    {ACCT "senders = , ,\n", 5, "senders lists no pattern"},
    {ACCT "scopes = Mail.\"Send\n", 5, "bad scope \"Mail.\"Send\""},
    {ACCT "default = yes\n[account second]\ntenant = t\nclient_id = c\n"
	"mailbox = b@c.example\ndefault = yes\n", 10,
	"account second is also marked default = yes (account main at line 5 "
    "is already the default; only one account may be)"},
};

/* t_err_cases - run a table of err_case */

static void t_err_cases(const struct err_case *cases, size_t n)
{
    struct strbuf err;
    struct conf *c;
    char    want[1024];
    size_t  i;
    int     before;

    for (i = 0; i < n; i++) {
	before = t_fail;
	c = t_load(cases[i].text, &err);
	T_OK(c == NULL);
	conf_free(c);
	snprintf(want, sizeof(want), "%s:%d: %s", t_conf_path,
		 cases[i].line, cases[i].want);
	T_CONTAINS(strbuf_str(&err), want);
	/* A case without any account also gets that (separate) error. */
	T_EQ_INT(t_lines(&err) - t_noacct_lines(&err), 1);
	if (t_fail != before)
	    printf("# error case %lu failed\n", (unsigned long) i);
	strbuf_free(&err);
    }
}

static void test_errors(void)
{
    t_err_cases(err_cases, sizeof(err_cases) / sizeof(err_cases[0]));
}

/* A valid source after ACCT: header at line 5, keys at 6-8. */
#define SRC "[source help]\naccount = main\n" \
	"deliver_to = smtp://127.0.0.1:25\nrecipients = helpdesk\n"

static void test_source_full(void)
{
    struct strbuf err;
    struct conf *c;
    struct conf_source *s;

    /* The sources come first: accounts resolve wherever they are. */
    c = t_load("[global]\n"				/* 1 */
	       "sendmail_path = /usr/lib/sendmail\n"
	       "[source help-desk]\n"			/* 3 */
	       "account = reader\n"
	       "mailbox = HelpDesk@contoso.com\n"
	       "folder = Support Requests\n"
	       "deliver_to = smtp://[::1]:2525\n"
	       "recipients = rt-helpdesk, help@tickets.contoso.com  root\n"
	       "envelope_sender = bounces@contoso.com\n"
	       "after = move:  Processed Mail\n"
	       "reject_folder = Rejected\n"
	       "interval = 300\n"
	       "page_size = 1000\n"
	       "notify = postmaster@contoso.com\n"
	       "[source main]\n"				/* 15 */
	       "account = main\n"
	       "deliver_to = sendmail\n"
	       "recipients = ops@example.org\n"
	       "envelope_sender = <>\n"
	       "after = delete\n"
	       "interval = 10\n"
	       "page_size = 1\n"
	       "[account main]\n"			/* 23: same name is fine */
	       "tenant = t\nclient_id = c\nmailbox = main@contoso.com\n"
	       "[source upper]\n"			/* 27 */
	       "account = reader\n"
	       "deliver_to = SMTP://mx.internal.example\n"
	       "recipients = a@b.example\n"
	       "interval = 86400\n"
	       "[account reader]\n"
	       "tenant = t\nclient_id = c\nmailbox = reader@contoso.com\n"
	       "auth = secret\nsecret_file = /etc/m365relay/reader.secret\n",
	       &err);
    T_OK(c != NULL);
    T_EQ_STR(strbuf_str(&err), "");
    if (c == NULL) {
	strbuf_free(&err);
	return;
    }
    T_EQ_STR(c->sendmail_path, "/usr/lib/sendmail");
    s = c->sources;
    T_OK(s != NULL);
    T_EQ_STR(s->name, "help-desk");
    T_EQ_STR(s->account, "reader");
    T_OK(s->acct == conf_account(c, "reader"));
    T_EQ_STR(s->mailbox, "HelpDesk@contoso.com");
    T_EQ_STR(s->folder, "Support Requests");
    T_EQ_STR(s->deliver_to, "smtp://[::1]:2525");
    T_EQ_STR(s->deliver_host, "::1");
    T_EQ_INT(s->deliver_port, 2525);
    T_EQ_STR(s->recipients[0], "rt-helpdesk");
    T_EQ_STR(s->recipients[1], "help@tickets.contoso.com");
    T_EQ_STR(s->recipients[2], "root");
    T_OK(s->recipients[3] == NULL);
    T_EQ_STR(s->envelope_sender, "bounces@contoso.com");
    T_EQ_INT(s->after, CONF_AFTER_MOVE);
    T_EQ_STR(s->after_folder, "Processed Mail");
    T_EQ_STR(s->reject_folder, "Rejected");
    T_EQ_INT(s->interval, 300);
    T_EQ_INT(s->page_size, 1000);
    T_EQ_STR(s->notify, "postmaster@contoso.com");
    T_EQ_STR(s->file, t_conf_path);
    T_EQ_INT(s->line, 3);

    s = s->next;
    T_OK(s != NULL);
    if (s == NULL) {
	conf_free(c);
	strbuf_free(&err);
	return;
    }
    T_EQ_STR(s->name, "main");
    T_OK(s->acct == conf_account(c, "main") && s->acct != NULL);
    T_EQ_STR(s->mailbox, "main@contoso.com");		/* the account's */
    T_EQ_STR(s->folder, "inbox");
    T_EQ_STR(s->deliver_to, "sendmail");
    T_OK(s->deliver_host == NULL);
    T_EQ_INT(s->deliver_port, 0);
    T_EQ_STR(s->envelope_sender, "<>");
    T_EQ_INT(s->after, CONF_AFTER_DELETE);
    T_OK(s->after_folder == NULL);
    T_EQ_INT(s->interval, 10);
    T_EQ_INT(s->page_size, 1);
    T_EQ_INT(s->line, 15);

    s = s->next;
    T_EQ_STR(s ? s->name : NULL, "upper");
    if (s) {
	T_EQ_STR(s->mailbox, "reader@contoso.com");
	T_EQ_STR(s->deliver_host, "mx.internal.example");
	T_EQ_INT(s->deliver_port, 25);
	T_EQ_INT(s->interval, 86400);
	T_OK(s->next == NULL);
    }

    T_OK(conf_source(c, "main") == c->sources->next);
    T_OK(conf_source(c, "help-desk") == c->sources);
    T_OK(conf_source(c, "HELP-DESK") == NULL);
    T_OK(conf_source(c, "reader") == NULL);
    T_OK(conf_source(c, NULL) == NULL);
    T_OK(conf_source(NULL, "main") == NULL);
    /* The sources change nothing about sending. */
    T_EQ_STR(conf_account(c, "main")->mailbox, "main@contoso.com");
    conf_free(c);
    strbuf_free(&err);
}

static void test_source_defaults(void)
{
    struct strbuf err;
    struct conf *c;
    struct conf_source *s;

    c = t_load(ACCT SRC, &err);
    T_OK(c != NULL);
    T_EQ_STR(strbuf_str(&err), "");
    if (c == NULL) {
	strbuf_free(&err);
	return;
    }
    T_EQ_STR(c->sendmail_path, "/usr/sbin/sendmail");
    s = c->sources;
    T_OK(s != NULL && s->next == NULL);
    T_EQ_STR(s->name, "help");
    T_OK(s->acct == c->accounts);
    T_EQ_STR(s->mailbox, "relay@contoso.com");
    T_EQ_STR(s->folder, "inbox");
    T_EQ_STR(s->deliver_host, "127.0.0.1");
    T_EQ_INT(s->deliver_port, 25);
    T_EQ_STR(s->recipients[0], "helpdesk");
    T_OK(s->recipients[1] == NULL);
    T_OK(s->envelope_sender == NULL);
    T_EQ_INT(s->after, CONF_AFTER_READ);
    T_OK(s->after_folder == NULL);
    T_OK(s->reject_folder == NULL);
    T_EQ_INT(s->interval, 60);
    T_EQ_INT(s->page_size, 50);
    T_OK(s->notify == NULL);
    T_EQ_INT(s->line, 5);
    conf_free(c);
    strbuf_free(&err);

    /* No source: the list is empty, the [global] default stays. */
    c = t_load(ACCT, &err);
    T_OK(c != NULL && c->sources == NULL);
    T_EQ_STR(c ? c->sendmail_path : NULL, "/usr/sbin/sendmail");
    T_OK(conf_source(c, "help") == NULL);
    conf_free(c);
    strbuf_free(&err);

    /* after = read explicitly; a later key overrides nothing else. */
    c = t_load(ACCT SRC "after = read\nfolder = archive\n"
	       "reject_folder = inbox\n", &err);
    T_OK(c != NULL);
    if (c) {
	T_EQ_INT(c->sources->after, CONF_AFTER_READ);
	T_OK(c->sources->after_folder == NULL);
	T_EQ_STR(c->sources->folder, "archive");
	T_EQ_STR(c->sources->reject_folder, "inbox");
    }
    conf_free(c);
    strbuf_free(&err);

    /* Two sources may read different folders of one mailbox. */
    c = t_load(ACCT SRC "[source b]\naccount = main\nfolder = archive\n"
	       "deliver_to = sendmail\nrecipients = x\n", &err);
    T_OK(c != NULL);
    T_EQ_STR(strbuf_str(&err), "");
    conf_free(c);
    strbuf_free(&err);
}

struct deliver_case {
    const char *value;
    const char *host;			/* NULL: sendmail */
    long    port;
};

static const struct deliver_case deliver_cases[] = {
    {"smtp://127.0.0.1:25", "127.0.0.1", 25},
    {"smtp://127.0.0.1", "127.0.0.1", 25},
    {"smtp://[::1]:2525", "::1", 2525},
    {"smtp://[::1]", "::1", 25},
    {"smtp://[2001:db8::25]:10025", "2001:db8::25", 10025},
    {"smtp://localhost:10026", "localhost", 10026},
    {"smtp://mail-in.example.org:65535", "mail-in.example.org", 65535},
    {"smtp://10.0.0.1:1", "10.0.0.1", 1},
    {"Smtp://LOCALHOST", "LOCALHOST", 25},
    {"sendmail", NULL, 0},
};

static void test_source_deliver(void)
{
    struct strbuf err;
    struct conf *c;
    char    text[512];
    size_t  i;

    for (i = 0; i < sizeof(deliver_cases) / sizeof(deliver_cases[0]); i++) {
	snprintf(text, sizeof(text), ACCT "[source s]\naccount = main\n"
		 "recipients = helpdesk\ndeliver_to = %s\n",
		 deliver_cases[i].value);
	c = t_load(text, &err);
	T_CHECK(c != NULL, "deliver_to %s: %s", deliver_cases[i].value,
		strbuf_str(&err));
	if (c) {
	    T_EQ_STR(c->sources->deliver_to, deliver_cases[i].value);
	    if (deliver_cases[i].host)
		T_EQ_STR(c->sources->deliver_host, deliver_cases[i].host);
	    else
		T_OK(c->sources->deliver_host == NULL);
	    T_EQ_INT(c->sources->deliver_port, deliver_cases[i].port);
	}
	conf_free(c);
	strbuf_free(&err);
    }
}

static const struct err_case source_err_cases[] = {
    /* Required keys and the account. */
    {ACCT "[source help]\ndeliver_to = sendmail\nrecipients = x\n", 5,
    "[source help]: missing required key \"account\""},
    {ACCT "[source help]\naccount = main\nrecipients = x\n", 5,
    "[source help]: missing required key \"deliver_to\""},
    {ACCT "[source help]\naccount = main\ndeliver_to = sendmail\n", 5,
    "[source help]: missing required key \"recipients\""},
    {ACCT "[source help]\ndeliver_to = sendmail\naccount = helpdesk\n"
	"recipients = x\n", 7,
    "source help: no [account helpdesk] section (accounts defined: main)"},
    {"[source help]\naccount = main\ndeliver_to = sendmail\n"
	"recipients = x\n", 2, "source help: no [account main] section (no "
    "account is defined; add the [account main] that reads the mailbox)"},
    {ACCT "[account Main2]\ntenant = t\nclient_id = c\nmailbox = m@b.example\n"
	"[source help]\naccount = MAIN\ndeliver_to = sendmail\n"
	"recipients = x\n", 10, "source help: no [account MAIN] section "
    "(accounts defined: main, Main2)"},
    {ACCT "[source help]\naccount = ../main\ndeliver_to = sendmail\n"
	"recipients = x\n", 6, "bad account \"../main\" (the NAME of an "
    "[account NAME] section: up to 64 letters, digits, '.', '_' or '-')"},
    /* Section headers and names. */
    {ACCT "[source]\naccount = main\n", 5,
    "section [source] needs one name (like [source helpdesk])"},
    {ACCT "[source a b]\n", 5, "section [source] needs one name"},
    {ACCT "[source ../x]\naccount = main\ndeliver_to = sendmail\n"
	"recipients = x\n", 5, "bad source name \"../x\" (use up to 64 "
    "letters, digits, '.', '_' or '-'; it names the state file)"},
    {ACCT "[source aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	"aaaa]\naccount = main\ndeliver_to = sendmail\nrecipients = x\n", 5,
    "bad source name \"aaaa"},
    {ACCT SRC "[source help]\naccount = main\nfolder = archive\n"
	"deliver_to = sendmail\nrecipients = x\n", 9, "duplicate source "
    "\"help\" (first defined at line 5; source names must be unique)"},
    {ACCT SRC "account = main\n", 9,
    "duplicate key \"account\" in [source help] (first set at line 6)"},
    {ACCT SRC "recipient = x\n", 9, "unknown key \"recipient\" in [source "
    "help] (did you mean \"recipients\"?)"},
    {ACCT SRC "tenant = t\n", 9, "key \"tenant\" does not belong in "
    "[source help] (move it to an [account NAME] section)"},
    {ACCT SRC "sendmail_path = /usr/sbin/sendmail\n", 9, "key "
    "\"sendmail_path\" does not belong in [source help] (move it to "
    "[global])"},
    {"[global]\ninterval = 60\n", 2, "key \"interval\" does not belong in "
    "[global] (move it to a [source NAME] section)"},
    {ACCT "deliver_to = sendmail\n", 5, "key \"deliver_to\" does not "
    "belong in [account main] (move it to a [source NAME] section)"},
    {"recipients = x\n", 1, "key \"recipients\" outside a section (put it "
    "under a [source NAME] section)"},
    {ACCT SRC "folder =\n", 9, "key \"folder\" has no value (remove the "
    "line to use the default)"},
    /* Values. */
    {ACCT SRC "mailbox = helpdesk\n", 9, "bad mailbox \"helpdesk\" "
    "(expected the address of the mailbox to read, like "
    "helpdesk@example.com; remove the line to read the account's own "
    "mailbox)"},
    {ACCT SRC "folder = In\tbox\n", 9, "bad folder \"In\tbox\" (a control "
    "character in the name)"},
    {ACCT SRC "reject_folder = x\001y\n", 9, "bad reject_folder"},
    {ACCT "[source help]\naccount = main\nrecipients = x\n"
	"deliver_to = lmtp://127.0.0.1:24\n", 8, "bad deliver_to "
	"\"lmtp://127.0.0.1:24\" (use smtp://HOST:PORT, like "
	"smtp://127.0.0.1:25 or smtp://[::1]:2525, or sendmail to run the "
    "MTA's sendmail command)"},
    {ACCT "[source help]\naccount = main\nrecipients = x\n"
	"deliver_to = Sendmail\n", 8, "bad deliver_to \"Sendmail\""},
    {ACCT "[source help]\naccount = main\nrecipients = x\n"
	"deliver_to = 127.0.0.1:25\n", 8, "bad deliver_to \"127.0.0.1:25\""},
    {ACCT "[source help]\naccount = main\nrecipients = x\n"
	"deliver_to = smtp://\n", 8, "deliver_to \"smtp://\" needs a host "
    "(like smtp://127.0.0.1:25)"},
    {ACCT "[source help]\naccount = main\nrecipients = x\n"
	"deliver_to = smtp://:25\n", 8, "deliver_to \"smtp://:25\" needs a "
    "host"},
    {ACCT "[source help]\naccount = main\nrecipients = x\n"
	"deliver_to = smtp://::1:25\n", 8, "bad deliver_to \"smtp://::1:25\": "
    "write an IPv6 address in brackets (like smtp://[::1]:25)"},
    {ACCT "[source help]\naccount = main\nrecipients = x\n"
	"deliver_to = smtp://[::1:25\n", 8, "bad deliver_to "
    "\"smtp://[::1:25\": missing ']' after the IPv6 address"},
    {ACCT "[source help]\naccount = main\nrecipients = x\n"
	"deliver_to = smtp://[127.0.0.1]:25\n", 8, "bad IPv6 address "
    "\"127.0.0.1\" in deliver_to \"smtp://[127.0.0.1]:25\" (like "
    "smtp://[::1]:25)"},
    {ACCT "[source help]\naccount = main\nrecipients = x\n"
	"deliver_to = smtp://[]:25\n", 8, "bad IPv6 address \"\""},
    {ACCT "[source help]\naccount = main\nrecipients = x\n"
	"deliver_to = smtp://[::1]/x\n", 8, "bad deliver_to "
    "\"smtp://[::1]/x\": unexpected \"/x\" after the address"},
    {ACCT "[source help]\naccount = main\nrecipients = x\n"
	"deliver_to = smtp://300.1.1.1:25\n", 8, "bad host \"300.1.1.1\" in "
	"deliver_to \"smtp://300.1.1.1:25\" (use an IPv4 address, [IPv6 "
    "address] or host name; no user, path or options)"},
    {ACCT "[source help]\naccount = main\nrecipients = x\n"
	"deliver_to = smtp://127.1\n", 8, "bad host \"127.1\""},
    {ACCT "[source help]\naccount = main\nrecipients = x\n"
	"deliver_to = smtp://user@localhost:25\n", 8, "bad host "
    "\"user@localhost\""},
    {ACCT "[source help]\naccount = main\nrecipients = x\n"
	"deliver_to = smtp://localhost/mail.example\n", 8, "bad host "
    "\"localhost/mail.example\""},
    {ACCT "[source help]\naccount = main\nrecipients = x\n"
	"deliver_to = smtp://127.0.0.1:0\n", 8, "bad port \"0\" in deliver_to "
    "\"smtp://127.0.0.1:0\" (use a number from 1 to 65535; without one, 25)"},
    {ACCT "[source help]\naccount = main\nrecipients = x\n"
	"deliver_to = smtp://127.0.0.1:65536\n", 8, "bad port \"65536\""},
    {ACCT "[source help]\naccount = main\nrecipients = x\n"
	"deliver_to = smtp://127.0.0.1:\n", 8, "bad port \"\""},
    {ACCT "[source help]\naccount = main\nrecipients = x\n"
	"deliver_to = smtp://127.0.0.1:smtp\n", 8, "bad port \"smtp\""},
    {ACCT "[source help]\naccount = main\nrecipients = x\n"
	"deliver_to = smtp://127.0.0.1:+25\n", 8, "bad port \"+25\""},
    {ACCT "[source help]\naccount = main\nrecipients = x\n"
	"deliver_to = smtp://127.0.0.1:25/\n", 8, "bad port \"25/\""},
    {ACCT "[source help]\naccount = main\ndeliver_to = sendmail\n"
	"recipients = , ,\n", 8, "recipients lists no address (separate "
    "addresses with spaces or commas)"},
    {ACCT "[source help]\naccount = main\ndeliver_to = sendmail\n"
	"recipients = a@b.example <c@d.example>\n", 8, "bad recipient "
	"\"<c@d.example>\" in recipients (use an address like "
	"helpdesk@example.com or a local user name like helpdesk; no angle "
    "brackets)"},
    {ACCT "[source help]\naccount = main\ndeliver_to = sendmail\n"
	"recipients = -oi\n", 8, "bad recipient \"-oi\""},
    {ACCT "[source help]\naccount = main\ndeliver_to = sendmail\n"
	"recipients = -x@b.example\n", 8, "bad recipient \"-x@b.example\""},
    {ACCT "[source help]\naccount = main\ndeliver_to = sendmail\n"
	"recipients = |/usr/bin/cmd\n", 8, "bad recipient \"|/usr/bin/cmd\""},
    {ACCT "[source help]\naccount = main\ndeliver_to = sendmail\n"
	"recipients = a@\n", 8, "bad recipient \"a@\""},
    {ACCT "[source help]\naccount = main\ndeliver_to = sendmail\n"
	"recipients = @b.example\n", 8, "bad recipient \"@b.example\""},
    {ACCT "[source help]\naccount = main\ndeliver_to = sendmail\n"
	"recipients = a..b@c.example\n", 8, "bad recipient \"a..b@c.example\""},
    {ACCT "[source help]\naccount = main\ndeliver_to = sendmail\n"
	"recipients = a@c..example\n", 8, "bad recipient \"a@c..example\""},
    {ACCT SRC "envelope_sender = helpdesk\n", 9, "bad envelope_sender "
	"\"helpdesk\" (use an address like helpdesk@example.com, or <> for the "
    "null sender; remove the line to keep each message's own sender)"},
    {ACCT SRC "envelope_sender = <a@b.example>\n", 9, "bad envelope_sender "
    "\"<a@b.example>\""},
    {ACCT SRC "envelope_sender = -f@b.example\n", 9, "bad envelope_sender"},
    {ACCT SRC "after = archive\n", 9, "bad after \"archive\" (use read, "
    "move:FOLDER or delete)"},
    {ACCT SRC "after = Read\n", 9, "bad after \"Read\""},
    {ACCT SRC "after = move\n", 9, "bad after \"move\""},
    {ACCT SRC "after = move:\n", 9, "after = move: needs a folder (like "
    "move:Processed or move:archive)"},
    {ACCT SRC "after = move:   \n", 9, "after = move: needs a folder"},
    {ACCT SRC "after = move:a\001\n", 9, "bad after \"move:a\001\" (a "
    "control character in the folder name)"},
    {ACCT SRC "interval = 9\n", 9, "bad number \"9\" for interval (use a "
    "whole number from 10 to 86400)"},
    {ACCT SRC "interval = 86401\n", 9, "bad number \"86401\" for interval"},
    {ACCT SRC "interval = 1m\n", 9, "bad number \"1m\" for interval"},
    {ACCT SRC "page_size = 0\n", 9, "bad number \"0\" for page_size (use a "
    "whole number from 1 to 1000)"},
    {ACCT SRC "page_size = 1001\n", 9, "bad number \"1001\" for page_size"},
    {ACCT SRC "notify = postmaster\n", 9, "bad notify \"postmaster\" "
    "(expected an address like postmaster@example.com)"},
    {ACCT SRC "notify = <>\n", 9, "bad notify \"<>\""},
    {"[global]\nsendmail_path = sendmail\n", 2, "sendmail_path must be an "
    "absolute path (got \"sendmail\")"},
    /* Rules that span keys and sources. */
    {ACCT SRC "after = move:INBOX\n", 9, "source help: after = move:INBOX "
	"moves each message into the folder it reads (name another folder, "
    "or use after = read)"},
    {ACCT SRC "folder = Support\nreject_folder = support\n", 10,
	"source help: reject_folder is the folder it reads, so a rejected "
	"message would be read again every round (name another folder, or "
    "remove the line to leave rejected messages in place, flagged)"},
    {ACCT SRC "[source other]\naccount = main\nmailbox = RELAY@contoso.com\n"
	"folder = Inbox\ndeliver_to = sendmail\nrecipients = y\n", 9,
	"source other reads the same folder as source help (line 5): "
	"RELAY@contoso.com, Inbox (two sources on one folder race for each "
    "message; list all recipients in one source)"},
};

static void test_source_errors(void)
{
    t_err_cases(source_err_cases,
		sizeof(source_err_cases) / sizeof(source_err_cases[0]));
}

/* All source problems are reported, including the late ones. */

static void test_source_all_errors(void)
{
    struct strbuf err;
    struct conf *c;
    char    want[1024];

    c = t_load("[source a]\n"		/* 1 */
	       "account = nope\n"	/* 2 */
	       "deliver_to = smtp://[::1\n"	/* 3 */
	       "interval = 5\n"	/* 4 */
	       "[source b]\n"		/* 5: no account, no recipients */
	       "deliver_to = sendmail\n",	/* 6 */
	       &err);
    T_OK(c == NULL);
    T_EQ_INT(t_lines(&err), 7);		/* and: no account at all */
    snprintf(want, sizeof(want), "%s:1: [source a]: missing required key "
	     "\"recipients\"", t_conf_path);
    T_CONTAINS(strbuf_str(&err), want);
    snprintf(want, sizeof(want), "%s:2: source a: no [account nope] section",
	     t_conf_path);
    T_CONTAINS(strbuf_str(&err), want);
    snprintf(want, sizeof(want), "%s:3: bad deliver_to", t_conf_path);
    T_CONTAINS(strbuf_str(&err), want);
    snprintf(want, sizeof(want), "%s:4: bad number \"5\" for interval",
	     t_conf_path);
    T_CONTAINS(strbuf_str(&err), want);
    snprintf(want, sizeof(want), "%s:5: [source b]: missing required key "
	     "\"account\"", t_conf_path);
    T_CONTAINS(strbuf_str(&err), want);
    snprintf(want, sizeof(want), "%s:5: [source b]: missing required key "
	     "\"recipients\"", t_conf_path);
    T_CONTAINS(strbuf_str(&err), want);
    strbuf_free(&err);
}

/* All problems are reported, not just the first. */

static void test_all_errors(void)
{
    struct strbuf err;
    struct conf *c;
    char    want[1024];

    c = t_load("[global]\n"		/* 1 */
	       "cloud = mars\n"		/* 2 */
	       "timeout = 10\n"		/* 3 */
	       "timeout = 20\n"		/* 4 */
	       "[account x]\n"		/* 5 */
	       "tenant = t\n"		/* 6 */
	       "client_id = c\n"	/* 7 */
	       "mailbox = m@example.com\n"	/* 8 */
	       "default = sure\n",	/* 9 */
	       &err);
    T_OK(c == NULL);
    T_EQ_INT(t_lines(&err), 3);
    snprintf(want, sizeof(want), "%s:2: bad cloud", t_conf_path);
    T_CONTAINS(strbuf_str(&err), want);
    snprintf(want, sizeof(want), "%s:4: duplicate key", t_conf_path);
    T_CONTAINS(strbuf_str(&err), want);
    snprintf(want, sizeof(want), "%s:9: bad boolean", t_conf_path);
    T_CONTAINS(strbuf_str(&err), want);
    strbuf_free(&err);

    /* [milter] problems are all reported too. */
    c = t_load("[milter]\n"		/* 1 */
	       "socket = inet:99999@127.0.0.1\n"	/* 2 */
	       "mode = deliver\n"	/* 3 */
	       "on_graph_error = retry\n"	/* 4 */
	       "deliver_domains = a.example b@example\n"	/* 5 */
	       ACCT, &err);
    T_OK(c == NULL);
    T_EQ_INT(t_lines(&err), 3);
    snprintf(want, sizeof(want), "%s:2: bad port \"99999\"", t_conf_path);
    T_CONTAINS(strbuf_str(&err), want);
    snprintf(want, sizeof(want), "%s:4: bad on_graph_error", t_conf_path);
    T_CONTAINS(strbuf_str(&err), want);
    snprintf(want, sizeof(want), "%s:5: bad domain \"b@example\"", t_conf_path);
    T_CONTAINS(strbuf_str(&err), want);
    strbuf_free(&err);

    /* A missing file. */
    strbuf_init(&err, STRBUF_MAX_SMALL);
    snprintf(want, sizeof(want), "%s/does-not-exist.conf", t_dir);
    c = conf_load(want, &err);
    T_OK(c == NULL);
    T_CONTAINS(strbuf_str(&err), want);
    T_CONTAINS(strbuf_str(&err), "No such file or directory");
    strbuf_free(&err);

    /* NULL error buffer is allowed. */
    T_OK(conf_load(want, NULL) == NULL);
}

/*
 * Past the caps (issue 8.6): scopes longer than a sign-in request can
 * carry are an error at their line, never cut short; an error list
 * longer than its buffer keeps its first lines whole and says that more
 * were not shown.
 */
static void test_past_cap(void)
{
    struct strbuf text, err;
    struct conf *c;
    char    want[512];
    const char *e;
    int     i;

    strbuf_init(&text, STRBUF_MAX_JSON);
    strbuf_puts(&text, ACCT "scopes =");		/* line 5 */
    for (i = 0; i < 2000; i++)
	strbuf_printf(&text, " Scope.%04d", i);	/* 24 KB */
    strbuf_puts(&text, "\n");
    c = t_load(strbuf_str(&text), &err);
    T_OK(c == NULL);
    snprintf(want, sizeof(want), "%s:5: scopes is longer than 16384 bytes",
	     t_conf_path);
    T_CONTAINS(strbuf_str(&err), want);
    conf_free(c);
    strbuf_free(&err);

    /* 200 errors, a 1 KB error list. */
    strbuf_reset(&text);
    strbuf_puts(&text, "[global]\n");
    for (i = 0; i < 200; i++)
	strbuf_printf(&text, "no_such_key_%03d = 1\n", i);
    strbuf_puts(&text, ACCT);
    snprintf(t_conf_path, sizeof(t_conf_path), "%s",
	     t_write("cap.conf", strbuf_str(&text), 0644));
    strbuf_init(&err, 1024);
    T_OK(conf_load(t_conf_path, &err) == NULL);
    T_EQ_INT(strbuf_failed(&err), 0);
    e = strbuf_str(&err);
    snprintf(want, sizeof(want), "%s:2: ", t_conf_path);
    T_OK(strncmp(e, want, strlen(want)) == 0);
    T_OK(err.len <= 1024 && err.len > strlen(STRBUF_LINES_CUT));
    T_EQ_STR(e + err.len - strlen(STRBUF_LINES_CUT), STRBUF_LINES_CUT);
    /* Whole lines only: each before the note names its key. */
    T_OK(t_lines(&err) > 2);
    for (i = 0; i < t_lines(&err) - 1; i++) {
	snprintf(want, sizeof(want), "%s:%d: ", t_conf_path, i + 2);
	T_CONTAINS(e, want);
	snprintf(want, sizeof(want), "no_such_key_%03d", i);
	T_CONTAINS(e, want);
    }
    strbuf_free(&err);
    strbuf_free(&text);
}

/*
 * Without any account no program can work: the relay would bounce every
 * message ("no account sends for ..."), so an empty, truncated or
 * account-less file is an error, reported at its last line.
 */
static void test_no_accounts(void)
{
    static const struct {
	const char *text;
	int     line;
	const char *why;
    } cases[] = {
	{"", 1, "the file is empty"},
	{"\n\n", 2, "the file ends here"},
	{"# nothing configured yet\n[global]\ncloud = global\n", 3,
	"the file ends here"},
	{"[global]\nstate_dir = /var/lib/m365relay\n[milter]\n"
	"mode = filter\n", 4, "the file ends here"},
	/* Truncated inside the first account's header line. */
	{"[global]\ntimeout = 30\n[acc", 3, "the file ends here"},
    };
    struct strbuf err;
    struct conf *c;
    char    want[512];
    size_t  i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
	c = t_load(cases[i].text, &err);
	T_OK(c == NULL);
	snprintf(want, sizeof(want), "%s:%d: no [account NAME] section (%s; "
		 "an empty or truncated file?): add the account that sends "
		 "or reads mail, with tenant, client_id and mailbox; see "
		 "m365relay.conf(5)\n", t_conf_path, cases[i].line,
		 cases[i].why);
	T_CONTAINS(strbuf_str(&err), want);
	if (c != NULL)
	    printf("# case %lu loaded\n", (unsigned long) i);
	conf_free(c);
	strbuf_free(&err);
    }

    /* One account is enough, whatever else is missing. */
    c = t_load("[global]\n" ACCT, &err);
    T_OK(c != NULL);
    T_EQ_STR(strbuf_str(&err), "");
    conf_free(c);
    strbuf_free(&err);
}

/*
 * A UTF-8 byte order mark before the first line (Windows editors) is
 * skipped; one anywhere else is named, not reported as "missing '='".
 */
static void test_bom(void)
{
    struct strbuf err;
    struct conf *c;
    char    want[512];

    c = t_load("\xEF\xBB\xBF[global]\ntimeout = 30\n" ACCT, &err);
    T_OK(c != NULL);
    T_EQ_STR(strbuf_str(&err), "");
    T_EQ_INT(c ? c->timeout : 0, 30);
    conf_free(c);
    strbuf_free(&err);

    /* A file that starts with a comment or an account, BOM first. */
    c = t_load("\xEF\xBB\xBF# m365relay.conf\r\n" ACCT, &err);
    T_OK(c != NULL);
    T_EQ_STR(strbuf_str(&err), "");
    conf_free(c);
    strbuf_free(&err);
    c = t_load("\xEF\xBB\xBF" ACCT, &err);
    T_OK(c != NULL && c->accounts && strcmp(c->accounts->name, "main") == 0);
    conf_free(c);
    strbuf_free(&err);

    /* Two files joined: the second one's BOM is named. */
    c = t_load(ACCT "\xEF\xBB\xBF[global]\ntimeout = 30\n", &err);
    T_OK(c == NULL);
    snprintf(want, sizeof(want), "%s:5: a UTF-8 byte order mark (BOM) in "
	     "the middle of the file", t_conf_path);
    T_CONTAINS(strbuf_str(&err), want);
    T_EQ_INT(t_lines(&err), 1);
    conf_free(c);
    strbuf_free(&err);
}

#define ACCT_N(name, extra) "[account " name "]\ntenant = t\nclient_id = c\n" \
	"mailbox = " name "@example.com\n" extra

struct sender_case {
    const char *sender;
    const char *account;		/* NULL: none */
};

static const struct sender_case sender_cases[] = {
    {"alerts@example.com", "a1"},
    {"ALERTS@Example.COM", "a1"},
    {"<alerts@example.com>", "a1"},
    {"bob@sales.example.com", "a1"},	/* @domain */
    {"bob@SALES.example.com", "a1"},
    {"bob@example.com", "a2"},		/* *@domain, after a1 */
    {"<bob@example.com>", "a2"},
    {"bob@sub.example.com", "a4"},	/* domain is exact: default */
    {"app-cron@example.org", "a3"},	/* glob */
    {"APP-X@EXAMPLE.ORG", "a3"},
    {"app@example.org", "a4"},
    {"", "a2"},				/* null sender: "<>" pattern */
    {"<>", "a2"},
    {"someone@elsewhere.net", "a4"},	/* the default */
    {"alerts@example.com.evil", "a4"},
};

static void test_senders(void)
{
    struct strbuf err;
    struct conf *c;
    struct conf_account *a;
    size_t  i;

    c = t_load(ACCT_N("a1", "senders = alerts@example.com "
		      "@sales.example.com\n")
	       ACCT_N("a2", "senders = *@example.com,<>, alerts@example.com\n")
	       ACCT_N("a3", "senders = app-*@example.org\n")
	       ACCT_N("a4", "default = yes\n"), &err);
    T_OK(c != NULL);
    if (c == NULL) {
	printf("# %s", strbuf_str(&err));
	strbuf_free(&err);
	return;
    }
    for (i = 0; i < sizeof(sender_cases) / sizeof(sender_cases[0]); i++) {
	a = conf_account_for_sender(c, sender_cases[i].sender);
	T_EQ_STR(a ? a->name : "(none)", sender_cases[i].account);
    }
    conf_free(c);
    strbuf_free(&err);

    /* Without a default: no match is NULL; the null sender too. */
    c = t_load(ACCT_N("x", "senders = *@example.com\n")
	       ACCT_N("y", "senders = alerts@example.com\n"), &err);
    T_OK(c != NULL);
    T_OK(conf_account_for_sender(c, "a@other.example") == NULL);
    T_OK(conf_account_for_sender(c, "") == NULL);
    T_OK(conf_account_for_sender(c, "<>") == NULL);
    T_OK(conf_account_for_sender(c, NULL) == NULL);
    /* First match in file order wins even against a later exact match. */
    a = conf_account_for_sender(c, "alerts@example.com");
    T_EQ_STR(a ? a->name : "(none)", "x");
    conf_free(c);
    strbuf_free(&err);

    /* The null sender falls to the default account. */
    c = t_load(ACCT_N("x", "senders = *@example.com\n")
	       ACCT_N("d", "default = yes\n"), &err);
    a = conf_account_for_sender(c, "<>");
    T_EQ_STR(a ? a->name : "(none)", "d");
    conf_free(c);
    strbuf_free(&err);
}

/*
 * An account always sends for its own mailbox (issue 8.1): the milter's
 * rewrite_sender gives a message the account's mailbox as sender, and
 * the relay must then find an account for it, even when the account's
 * patterns do not cover its mailbox and there is no default account.
 */
static void test_own_mailbox(void)
{
    struct strbuf err;
    struct strbuf warn;
    struct conf *c;
    struct conf_account *a;

    c = t_load("[milter]\nmode = filter\nrewrite_sender = yes\n"
	       "[account cert]\ntenant = t\nclient_id = c\n"
	       "mailbox = bob@contoso.com\nsenders = *@cert.example\n", &err);
    T_OK(c != NULL);
    a = conf_account_for_sender(c, "app@cert.example");
    T_EQ_STR(a ? a->name : "(none)", "cert");
    a = conf_account_for_sender(c, "bob@contoso.com");
    T_EQ_STR(a ? a->name : "(none)", "cert");
    a = conf_account_for_sender(c, "<Bob@Contoso.COM>");
    T_EQ_STR(a ? a->name : "(none)", "cert");
    T_OK(conf_account_for_sender(c, "bob@contoso.com.evil") == NULL);
    T_OK(conf_account_for_sender(c, "alice@contoso.com") == NULL);
    T_OK(conf_account_for_sender(c, "") == NULL);
    strbuf_init(&warn, STRBUF_MAX_SMALL);
    T_EQ_INT(conf_warnings(c, &warn), 0);
    T_EQ_STR(strbuf_str(&warn), "");
    strbuf_free(&warn);
    conf_free(c);
    strbuf_free(&err);

    /*
     * The mailbox beats an earlier account's pattern: mail that the
     * milter rewrote for account "bob" goes out through "bob", not
     * through "bulk" (whose mailbox would need Send As for it).
     */
    c = t_load(ACCT_N("bulk", "senders = *@example.com\n")
	       ACCT_N("bob", "senders = @bob.example\n"), &err);
    T_OK(c != NULL);
    a = conf_account_for_sender(c, "bob@example.com");
    T_EQ_STR(a ? a->name : "(none)", "bob");
    a = conf_account_for_sender(c, "carol@example.com");
    T_EQ_STR(a ? a->name : "(none)", "bulk");
    conf_free(c);
    strbuf_free(&err);
}

/*
 * conf_warnings(): two accounts with one mailbox and rewrite_sender =
 * yes: the milter accepts under one account's limits, the relay sends
 * through the other.  Not an error (a delegated and an app-only account
 * may share a mailbox), but -n says so.
 */
static void test_warnings(void)
{
    static const char *const text =
	"[milter]\nrewrite_sender = yes\n"		/* 1-2 */
	"[account small]\ntenant = t\nclient_id = c\n"	/* 3-5 */
	"mailbox = shared@example.com\nsenders = @a.example\n"
	"max_message_size = 2K\n"				/* 6-8 */
	"[account big]\ntenant = t\nclient_id = c\n"	/* 9-11 */
	"mailbox = SHARED@example.com\nsenders = @b.example\n";
    struct strbuf err, warn;
    struct conf *c;
    char    want[512];

    c = t_load(text, &err);
    T_OK(c != NULL);
    strbuf_init(&warn, STRBUF_MAX_SMALL);
    T_EQ_INT(conf_warnings(c, &warn), 1);
    snprintf(want, sizeof(want), "%s:9: warning: account big has the mailbox "
	     "SHARED@example.com of account small (line 3): with "
	     "rewrite_sender = yes the relay sends its mail through account "
	     "small, with that account's limits (give each account its own "
	     "mailbox, or set rewrite_sender = no)\n", t_conf_path);
    T_EQ_STR(strbuf_str(&warn), want);
    T_EQ_INT(conf_warnings(c, NULL), 1);
    conf_free(c);
    strbuf_free(&err);
    strbuf_reset(&warn);

    /* Without rewriting (or in deliver mode) the sender stays: quiet. */
    c = t_load(text + strlen("[milter]\nrewrite_sender = yes\n"), &err);
    T_OK(c != NULL);
    T_EQ_INT(conf_warnings(c, &warn), 0);
    conf_free(c);
    strbuf_free(&err);
    snprintf(want, sizeof(want), "[milter]\nmode = deliver\n%s",
	     text + strlen("[milter]\n"));
    c = t_load(want, &err);
    T_OK(c != NULL);
    T_EQ_INT(conf_warnings(c, &warn), 0);
    T_EQ_STR(strbuf_str(&warn), "");
    conf_free(c);
    strbuf_free(&err);
    strbuf_free(&warn);
}

static void test_secrets(void)
{
    struct strbuf err;
    struct conf *c;
    char    text[8192];
    char    want[1024];

    t_write("secret", "s3cr3t\n", 0644);
    t_write("app.key", "-----BEGIN PRIVATE KEY-----\n", 0600);
    snprintf(text, sizeof(text),
	     "[account deleg]\ntenant = t\nclient_id = c\n"
	     "mailbox = d@example.com\n"
	     "[account app]\ntenant = t\nclient_id = c\n"	/* line 5 */
	     "mailbox = a@example.com\nauth = secret\n"
	     "secret_file = %s/secret\n"
	     "[account cert]\ntenant = t\nclient_id = c\n"	/* line 11 */
	     "mailbox = c@example.com\nauth = certificate\n"
	     "certificate_file = %s/app.crt\nkey_file = %s/app.key\n",
	     t_dir, t_dir, t_dir);
    c = t_load(text, &err);
    T_OK(c != NULL);
    if (c == NULL) {
	printf("# %s", strbuf_str(&err));
	strbuf_free(&err);
	return;
    }
    /* Secret 0644 and certificate missing: two errors. */
    T_EQ_INT(conf_check_secrets(c, &err), -1);
    snprintf(want, sizeof(want), "%s:5: account app: client secret file "
	     "%s/secret", t_conf_path, t_dir);
    T_CONTAINS(strbuf_str(&err), want);
    T_CONTAINS(strbuf_str(&err), "chmod 600");
    T_CONTAINS(strbuf_str(&err), "(mode 0644)");
    snprintf(want, sizeof(want), "%s:11: account cert: cannot read "
	     "certificate file %s/app.crt", t_conf_path, t_dir);
    T_CONTAINS(strbuf_str(&err), want);
    T_EQ_INT(t_lines(&err), 2);
    /* The secret itself never appears. */
    T_OK(strstr(strbuf_str(&err), "s3cr3t") == NULL);

    /* Fixed: all good. */
    snprintf(want, sizeof(want), "%s/secret", t_dir);
    chmod(want, 0600);
    t_write("app.crt", "-----BEGIN CERTIFICATE-----\n", 0644);
    strbuf_reset(&err);
    T_EQ_INT(conf_check_secrets(c, &err), 0);
    T_EQ_STR(strbuf_str(&err), "");

    /* A group-readable key is refused too. */
    snprintf(want, sizeof(want), "%s/app.key", t_dir);
    chmod(want, 0640);
    strbuf_reset(&err);
    T_EQ_INT(conf_check_secrets(c, &err), -1);
    T_CONTAINS(strbuf_str(&err), "account cert: private key file");
    T_CONTAINS(strbuf_str(&err), "chmod 600");

    /* A missing secret file. */
    snprintf(want, sizeof(want), "%s/secret", t_dir);
    unlink(want);
    strbuf_reset(&err);
    T_EQ_INT(conf_check_secrets(c, &err), -1);
    T_CONTAINS(strbuf_str(&err), "account app: cannot ");
    T_CONTAINS(strbuf_str(&err), " client secret file ");
    T_CONTAINS(strbuf_str(&err), "No such file or directory");
    conf_free(c);
    strbuf_free(&err);
}

static void test_misc(void)
{
    struct strbuf err;
    struct conf *c;
    uid_t   uid = 12345;
    gid_t   gid = 12345;

    T_EQ_STR(conf_auth_name(CONF_AUTH_DELEGATED), "delegated");
    T_EQ_STR(conf_auth_name(CONF_AUTH_SECRET), "secret");
    T_EQ_STR(conf_auth_name(CONF_AUTH_CERTIFICATE), "certificate");

    c = t_load("[global]\nuser = root\n" ACCT, &err);
    T_EQ_INT(conf_user_ids(c, &uid, &gid), 0);
    T_EQ_INT(uid, 0);
    T_EQ_INT(gid, 0);
    conf_free(c);
    strbuf_free(&err);
    c = t_load("[global]\nuser = no-such-user-m365\n" ACCT, &err);
    T_EQ_INT(conf_user_ids(c, &uid, &gid), -1);
    conf_free(c);
    strbuf_free(&err);
    T_EQ_INT(conf_user_ids(NULL, &uid, &gid), -1);
    conf_free(NULL);

    /* Sizes: plain bytes and suffixes; booleans in every spelling. */
    c = t_load(ACCT "max_message_size = 1048576\n"
	       "default = 1\n[milter]\nadd_message_id = Off\n", &err);
    T_OK(c != NULL);
    if (c) {
	T_EQ_INT(c->accounts->max_message_size, 1048576);
	T_EQ_INT(c->milter.add_message_id, 0);
	T_EQ_INT(c->accounts->is_default, 1);
    }
    conf_free(c);
    strbuf_free(&err);
    c = t_load("[global]\nmax_message_size = 150m\n" ACCT, &err);
    T_OK(c != NULL && c->max_message_size == 150L * 1024 * 1024);
    conf_free(c);
    strbuf_free(&err);
}

/*
 * The shipped sample as it is (every account commented out) fails with
 * exactly the "no account" error (installed unchanged, it must not look
 * valid); with every "# key = value" and "# [account" line uncommented it
 * loads.
 */

static void test_sample(void)
{
    const char *srcdir = getenv("srcdir");
    char    path[512];
    struct strbuf text, err;
    struct conf *c;
    FILE   *fp;
    char   *line = NULL;
    size_t  size = 0;
    const char *cp;
    int     naccts = 0;

    snprintf(path, sizeof(path), "%s/contrib/m365relay.conf.sample",
	     srcdir && *srcdir ? srcdir : ".");
    if ((fp = fopen(path, "r")) == NULL) {
	printf("# skipped: cannot open %s (run from the source tree or set "
	       "srcdir)\n", path);
	return;
    }
    strbuf_init(&err, STRBUF_MAX_SMALL);
    c = conf_load(path, &err);
    T_OK(c == NULL);
    T_EQ_INT(t_lines(&err), 1);
    T_EQ_INT(t_noacct_lines(&err), 1);
    conf_free(c);
    strbuf_free(&err);

    strbuf_init(&text, STRBUF_MAX_LINE);
    while (getline(&line, &size, fp) >= 0) {
	cp = line;
	if (strncmp(line, "# ", 2) == 0) {
	    cp = line + 2;
	    while (*cp == '_' || (*cp >= 'a' && *cp <= 'z'))
		cp++;
	    if (strncmp(line + 2, "[account ", 9) == 0
		|| strncmp(line + 2, "[source ", 8) == 0
		|| (cp > line + 2 && strncmp(cp, " = ", 3) == 0))
		cp = line + 2;
	    else
		cp = line;
	}
	strbuf_puts(&text, cp);
    }
    free(line);
    fclose(fp);
    /* Every [source NAME] key is shown with its default or an example. */
    {
	static const char *const skeys[] = {
	    "account", "mailbox", "folder", "deliver_to", "recipients",
	    "envelope_sender", "after", "reject_folder", "interval",
	    "page_size", "notify", 0,
	};
	const char *const *kp;
	char    pat[80];
	const char *src = strstr(strbuf_str(&text), "\n[source ");

	T_OK(src != NULL);
	for (kp = skeys; src && *kp; kp++) {
	    snprintf(pat, sizeof(pat), "\n%s = ", *kp);
	    T_CHECK(strstr(src, pat) != NULL, "sample lacks [source] %s",
		    *kp);
	}
	T_OK(strstr(strbuf_str(&text), "\nsendmail_path = ") != NULL);
    }
    /* Every [milter] key is shown with its default or an example. */
    {
	static const char *const mkeys[] = {
	    "socket", "socket_mode", "pid_file", "mode", "unknown_sender",
	    "rewrite_sender", "rewrite_from", "add_reply_to",
	    "add_message_id", "message_id_domain", "memory_limit", "tmp_dir",
	    "deliver_domains", "on_internal_error", "on_graph_error",
	    "on_account_offline", "timeout", 0,
	};
	const char *const *kp;
	char    pat[80];
	const char *milter = strstr(strbuf_str(&text), "\n[milter]\n");

	T_OK(milter != NULL);
	for (kp = mkeys; milter && *kp; kp++) {
	    snprintf(pat, sizeof(pat), "\n%s = ", *kp);
	    T_CHECK(strstr(milter, pat) != NULL, "sample lacks [milter] %s",
		    *kp);
	}
    }
    c = t_load(strbuf_str(&text), &err);
    T_OK(c != NULL);
    T_EQ_STR(strbuf_str(&err), "");
    if (c) {
	struct conf_account *a;

	for (a = c->accounts; a; a = a->next)
	    naccts++;
	T_EQ_INT(naccts, 2);
	a = conf_account_for_sender(c, "alerts@contoso.com");
	T_EQ_STR(a ? a->name : "(none)", "notify");
	a = conf_account_for_sender(c, "cron@host.example");
	T_EQ_STR(a ? a->name : "(none)", "app");
	T_EQ_INT(c->timeout, 60);
	/* [milter]: the uncommented examples land in that section. */
	T_EQ_INT(c->milter.timeout, 7200);
	T_EQ_INT(c->milter.mode, CONF_MILTER_FILTER);
	T_EQ_STR(c->milter.socket, "unix:/run/m365relay/milter.sock");
	T_EQ_STR(c->milter.message_id_domain, "mail.contoso.com");
	T_OK(c->milter.deliver_domains != NULL);
	T_OK(c->milter.pid_file != NULL && c->milter.tmp_dir != NULL);
	/* [global] sendmail_path and the help desk source. */
	T_EQ_STR(c->sendmail_path, "/usr/sbin/sendmail");
	T_OK(c->sources != NULL && c->sources->next != NULL
	     && c->sources->next->next == NULL);
	/* ... and the bounce source (issue 12). */
	if (c->sources && c->sources->next) {
	    T_EQ_STR(c->sources->next->name, "bounces");
	    T_EQ_INT(c->sources->next->mode, CONF_SOURCE_BOUNCES);
	    T_EQ_STR(c->sources->next->bounce_from,
		     "MAILER-DAEMON@relay.contoso.com");
	    T_OK(c->sources->next->unmatched_to == NULL);
	}
	if (c->sources) {
	    struct conf_source *s = c->sources;

	    T_EQ_STR(s->name, "helpdesk");
	    T_OK(s->acct == conf_account(c, "app") && s->acct != NULL);
	    T_EQ_STR(s->mailbox, "helpdesk@contoso.com");
	    T_EQ_STR(s->folder, "inbox");
	    T_EQ_STR(s->deliver_host, "127.0.0.1");
	    T_EQ_INT(s->deliver_port, 25);
	    T_EQ_STR(s->recipients[0], "rt-helpdesk");
	    T_EQ_INT(s->after, CONF_AFTER_MOVE);
	    T_EQ_STR(s->after_folder, "Processed");
	    T_EQ_STR(s->reject_folder, "Rejected");
	    T_EQ_INT(s->interval, 60);
	    T_EQ_INT(s->page_size, 50);
	    T_EQ_STR(s->notify, "postmaster@contoso.com");
	}
    }
    conf_free(c);
    strbuf_free(&err);
    strbuf_free(&text);
}

/* t_rmtree - remove the test directory (flat) */

static void t_rmtree(void)
{
    char    path[256];
    int     i;
    static const char *const names[] = {"secret", "app.key", "app.crt", 0};

    for (i = 1; i <= t_seq; i++) {
	snprintf(path, sizeof(path), "%s/c%d.conf", t_dir, i);
	unlink(path);
    }
    for (i = 0; names[i]; i++) {
	snprintf(path, sizeof(path), "%s/%s", t_dir, names[i]);
	unlink(path);
    }
    if (rmdir(t_dir) < 0)
	fprintf(stderr, "cannot remove %s: %s\n", t_dir, strerror(errno));
}

/*
 * Large messages (issue 10): large_messages per account (auto, yes,
 * no), upload_hosts by cloud or as written, upload_budget; the check of
 * an uploadUrl's host and port.
 */
/* test_once - the send ledger and request slot keys (issue 11) */

static void test_once(void)
{
    struct strbuf err;
    struct conf *c;

    c = t_load(ACCT, &err);
    T_OK(c != NULL);
    if (c) {
	T_EQ_INT(c->ledger_lifetime, 5L * 86400);	/* Postfix's default */
	T_EQ_INT(c->sent_items_wait, 15L * 60);
	T_EQ_INT(c->concurrency_wait, 5);
    }
    conf_free(c);
    strbuf_free(&err);

    c = t_load("[global]\nledger_lifetime = 2d\nsent_items_wait = 90s\n"
	       "concurrency_wait = 0\n" ACCT, &err);
    T_OK(c != NULL);
    if (c) {
	T_EQ_INT(c->ledger_lifetime, 2L * 86400);
	T_EQ_INT(c->sent_items_wait, 90);
	T_EQ_INT(c->concurrency_wait, 0);
    }
    conf_free(c);
    strbuf_free(&err);
    c = t_load("[global]\nledger_lifetime = 36h\nsent_items_wait = 20m\n"
	       ACCT, &err);
    T_OK(c != NULL && c->ledger_lifetime == 36L * 3600
	 && c->sent_items_wait == 1200);
    conf_free(c);
    strbuf_free(&err);

    /* Too short a ledger outlives no retry; units are s, m, h, d only. */
    c = t_load("[global]\nledger_lifetime = 10m\n" ACCT, &err);
    T_OK(c == NULL);
    T_CONTAINS(strbuf_str(&err), ":2: bad time \"10m\" for ledger_lifetime "
	       "(use seconds, or a number with s, m, h or d, from 3600s to "
	       "100d)");
    strbuf_free(&err);
    c = t_load("[global]\nsent_items_wait = 5w\n" ACCT, &err);
    T_OK(c == NULL);
    T_CONTAINS(strbuf_str(&err), "bad time \"5w\" for sent_items_wait");
    strbuf_free(&err);
    c = t_load("[global]\nconcurrency_wait = -1\n" ACCT, &err);
    T_OK(c == NULL);
    T_CONTAINS(strbuf_str(&err), "bad time \"-1\" for concurrency_wait");
    strbuf_free(&err);

    /* A removed key: an error that says why and what to do, with file:line. */
    c = t_load(ACCT "save_to_sent_items = no\n", &err);
    T_OK(c == NULL);
    T_EQ_INT(t_lines(&err), 1);
    T_CONTAINS(strbuf_str(&err), ":5: the key save_to_sent_items was "
	       "removed");
    T_CONTAINS(strbuf_str(&err), "delete the line");
    strbuf_free(&err);
}

static void test_large(void)
{
    static const char base[] =
	"[account a]\ntenant = t\nclient_id = c\nmailbox = a@x.test\n"
	"large_messages = yes\nmax_message_size = 100M\n"
	"[account b]\ntenant = t\nclient_id = c\nmailbox = b@x.test\n";
    struct strbuf err, text;
    struct conf *c;

    c = t_load(base, &err);
    T_OK(c != NULL);
    if (c) {
	T_EQ_INT(c->accounts->large_messages, CONF_LARGE_YES);
	T_EQ_INT(c->accounts->next->large_messages, CONF_LARGE_AUTO);
	T_EQ_INT(c->upload_budget, 15L * 1024 * 1024);
	T_EQ_INT(conf_max_message_size(c), 100L * 1024 * 1024);
	T_EQ_STR(c->upload_hosts[0], "outlook.office.com");
	T_EQ_STR(c->upload_hosts[1], "outlook.office365.com");
	T_OK(c->upload_hosts[2] == NULL);
	T_EQ_INT(conf_upload_host_ok(c, "https://outlook.office.com/api/v2.0/"
				     "Users('x')/AttachmentSessions('y')?"
				     "authtoken=z"), 1);
	T_EQ_INT(conf_upload_host_ok(c, "https://OUTLOOK.office365.com:443/a"),
		 1);
	T_EQ_INT(conf_upload_host_ok(c, "http://outlook.office.com/a"), 0);
	T_EQ_INT(conf_upload_host_ok(c, "https://outlook.office.com:8443/a"),
		 0);
	T_EQ_INT(conf_upload_host_ok(c, "https://outlook.office.com.evil.test/"),
		 0);
	T_EQ_INT(conf_upload_host_ok(c, "https://evil.test@outlook.office.com/"),
		 0);
	T_EQ_INT(conf_upload_host_ok(c, "https://outlook.office.com@evil.test/"),
		 0);
	T_EQ_INT(conf_upload_host_ok(c, "https://graph.microsoft.com/v1.0/"), 0);
    }
    conf_free(c);
    strbuf_free(&err);

    strbuf_init(&text, STRBUF_MAX_SMALL);
    strbuf_printf(&text, "[global]\ncloud = usgov-dod\n%s", base);
    c = t_load(strbuf_str(&text), &err);
    T_OK(c != NULL);
    if (c) {
	T_EQ_STR(c->upload_hosts[0], "outlook-dod.office365.us");
	T_EQ_INT(conf_upload_host_ok(c, "https://outlook.office.com/a"), 0);
    }
    conf_free(c);
    strbuf_free(&err);

    strbuf_reset(&text);
    strbuf_printf(&text, "[global]\nupload_hosts = localhost:8443, "
		  "up.example.test\nupload_budget = 1024M\n%s", base);
    c = t_load(strbuf_str(&text), &err);
    T_OK(c != NULL);
    if (c) {
	T_EQ_INT(conf_upload_host_ok(c, "https://localhost:8443/x"), 1);
	T_EQ_INT(conf_upload_host_ok(c, "https://localhost/x"), 0);
	T_EQ_INT(conf_upload_host_ok(c, "https://up.example.test/x"), 1);
	T_EQ_INT(c->upload_budget, 1024L * 1024 * 1024);
    }
    conf_free(c);
    strbuf_free(&err);

    strbuf_reset(&text);
    strbuf_printf(&text, "[global]\nupload_hosts = bad_host:x\n"
		  "upload_budget = 1M\n%s\nlarge_messages = maybe\n", base);
    c = t_load(strbuf_str(&text), &err);
    T_OK(c == NULL);
    T_CONTAINS(strbuf_str(&err), "bad host \"bad_host:x\" in upload_hosts");
    T_CONTAINS(strbuf_str(&err), "upload_budget");
    T_CONTAINS(strbuf_str(&err), "large_messages");
    T_EQ_INT(t_lines(&err), 3);
    conf_free(c);
    strbuf_free(&err);
    strbuf_free(&text);
}

/*
 * proxy, no_proxy, proxy_credentials_file ([global] and [account]),
 * ca_extra_file, rbac_probe_mailbox (issue 13.3, 13.4)
 */
static void test_proxy(void)
{
    struct strbuf err;
    struct conf *c;
    char    text[4096], want[1024];

    c = t_load("[global]\nproxy = http://proxy.example.com:3128\n"
	       "no_proxy = .example.org, localhost\n"
	       "proxy_credentials_file = /etc/m365relay/proxy.cred\n"
	       "ca_extra_file = /etc/m365relay/inspect-ca.pem\n"
	       ACCT "proxy = http://[2001:db8::1]:8080/\n"
	       "rbac_probe_mailbox = ceo@contoso.com\n"
	       "[account other]\ntenant = t\nclient_id = c\n"
	       "mailbox = o@contoso.com\nproxy = none\nno_proxy = *\n"
	       "proxy_credentials_file = /etc/m365relay/other.cred\n", &err);
    T_OK(c != NULL);
    if (c == NULL) {
	printf("# %s", strbuf_str(&err));
	strbuf_free(&err);
	return;
    }
    T_EQ_STR(c->proxy, "http://proxy.example.com:3128");
    T_EQ_STR(c->no_proxy, ".example.org, localhost");
    T_EQ_STR(c->proxy_credentials_file, "/etc/m365relay/proxy.cred");
    T_EQ_STR(c->ca_extra_file, "/etc/m365relay/inspect-ca.pem");
    T_EQ_STR(c->accounts->proxy, "http://[2001:db8::1]:8080/");
    T_OK(c->accounts->no_proxy == NULL);	/* [global]'s, in proxy.c */
    T_OK(c->accounts->proxy_credentials_file == NULL);
    T_EQ_STR(c->accounts->rbac_probe_mailbox, "ceo@contoso.com");
    T_EQ_STR(c->accounts->next->proxy, "none");
    T_EQ_STR(c->accounts->next->no_proxy, "*");
    T_EQ_STR(c->accounts->next->proxy_credentials_file,
	     "/etc/m365relay/other.cred");
    T_OK(c->accounts->next->rbac_probe_mailbox == NULL);
    conf_free(c);
    strbuf_free(&err);

    /* Unset: NULL everywhere (the environment may decide, proxy.h). */
    c = t_load(ACCT, &err);
    T_OK(c != NULL && c->proxy == NULL && c->no_proxy == NULL
	 && c->proxy_credentials_file == NULL && c->ca_extra_file == NULL
	 && c->accounts->proxy == NULL);
    conf_free(c);
    strbuf_free(&err);

    /* Every bad value is one error at its line, with the fix. */
    snprintf(text, sizeof(text), "[global]\n"
	     "proxy = proxy.example.com:3128\n"		/* 2 */
	     "ca_extra_file = inspect-ca.pem\n"		/* 3 */
	     "proxy_credentials_file = proxy.cred\n"	/* 4 */
	     ACCT "proxy = http://user:pw@proxy.example.com:3128\n"	/* 9 */
	     "[account b]\ntenant = t\nclient_id = c\n"
	     "mailbox = b@contoso.com\n"
	     "proxy = http://proxy.example.com\n"		/* 14 */
	     "rbac_probe_mailbox = nobody\n"		/* 15 */
	     "[account c]\ntenant = t\nclient_id = c\n"
	     "mailbox = c@contoso.com\n"
	     "proxy = http://proxy.example.com:99999\n"	/* 20 */
	     "no_proxy = a\001b\n"			/* 21 */
	     "[account d]\ntenant = t\nclient_id = c\n"
	     "mailbox = d@contoso.com\n"
	     "proxy = http://proxy.example.com:3128/path\n"	/* 26 */
	     "[milter]\nproxy = http://p.example.com:1\n");	/* 28 */
    c = t_load(text, &err);
    T_OK(c == NULL);
    snprintf(want, sizeof(want), "%s:2: bad proxy \"proxy.example.com:3128"
	     "\" (write http://HOST:PORT", t_conf_path);
    T_CONTAINS(strbuf_str(&err), want);
    snprintf(want, sizeof(want), "%s:3: ca_extra_file must be an absolute "
	     "path", t_conf_path);
    T_CONTAINS(strbuf_str(&err), want);
    snprintf(want, sizeof(want), "%s:4: proxy_credentials_file must be an "
	     "absolute path", t_conf_path);
    T_CONTAINS(strbuf_str(&err), want);
    snprintf(want, sizeof(want), "%s:9: bad proxy", t_conf_path);
    T_CONTAINS(strbuf_str(&err), want);
    T_CONTAINS(strbuf_str(&err), "put them into the file named by "
	       "proxy_credentials_file");
    snprintf(want, sizeof(want), "%s:14: bad proxy \"http://proxy.example."
	     "com\" (write the proxy's port", t_conf_path);
    T_CONTAINS(strbuf_str(&err), want);
    snprintf(want, sizeof(want), "%s:15: bad rbac_probe_mailbox", t_conf_path);
    T_CONTAINS(strbuf_str(&err), want);
    snprintf(want, sizeof(want), "%s:20: bad proxy", t_conf_path);
    T_CONTAINS(strbuf_str(&err), want);
    T_CONTAINS(strbuf_str(&err), "bad proxy port 99999");
    snprintf(want, sizeof(want), "%s:21: bad no_proxy", t_conf_path);
    T_CONTAINS(strbuf_str(&err), want);
    snprintf(want, sizeof(want), "%s:26: bad proxy", t_conf_path);
    T_CONTAINS(strbuf_str(&err), "(no path, no blanks)");
    snprintf(want, sizeof(want), "%s:28: ", t_conf_path);
    T_CONTAINS(strbuf_str(&err), want);
    T_EQ_INT(t_lines(&err), 10);
    conf_free(c);
    strbuf_free(&err);

    /* conf_check_secrets: the credentials files are secret files. */
    t_write("pglobal", "u:p\n", 0644);
    t_write("pacct", "u:p\n", 0600);
    snprintf(text, sizeof(text), "[global]\nproxy = http://p.example.com:1\n"
	     "proxy_credentials_file = %s/pglobal\n" ACCT
	     "proxy_credentials_file = %s/pacct\n", t_dir, t_dir);
    c = t_load(text, &err);
    T_OK(c != NULL);
    if (c) {
	T_EQ_INT(conf_check_secrets(c, &err), -1);
	snprintf(want, sizeof(want), "%s: [global] proxy_credentials_file: "
		 "proxy credentials file %s/pglobal", t_conf_path, t_dir);
	T_CONTAINS(strbuf_str(&err), want);
	T_CONTAINS(strbuf_str(&err), "chmod 600");
	T_EQ_INT(t_lines(&err), 1);
	snprintf(want, sizeof(want), "%s/pglobal", t_dir);
	chmod(want, 0600);
	snprintf(want, sizeof(want), "%s/pacct", t_dir);
	chmod(want, 0604);
	strbuf_reset(&err);
	T_EQ_INT(conf_check_secrets(c, &err), -1);
	snprintf(want, sizeof(want), "%s:4: account main: proxy credentials "
		 "file %s/pacct", t_conf_path, t_dir);
	T_CONTAINS(strbuf_str(&err), want);
	T_EQ_INT(t_lines(&err), 1);
    }
    conf_free(c);
    strbuf_free(&err);
    snprintf(want, sizeof(want), "%s/pglobal", t_dir);
    unlink(want);
    snprintf(want, sizeof(want), "%s/pacct", t_dir);
    unlink(want);
}

/*
 * test_bounces - [source] mode = bounces (issue 12): no recipients,
 * bounce_from, unmatched = keep | postmaster:ADDR; a mail source still
 * needs recipients
 */
static void test_bounces(void)
{
    struct strbuf err;
    struct conf *c;
    const struct conf_source *s;

    c = t_load(ACCT "[source ndr]\naccount = main\n"		/* 4 */
	       "deliver_to = smtp://127.0.0.1:25\nmode = bounces\n"
	       "bounce_from = MAILER-DAEMON@relay.contoso.com\n"
	       "unmatched = postmaster:postmaster@contoso.com\n"
	       "after = move:Bounces\n", &err);
    T_OK(c != NULL);
    T_EQ_STR(strbuf_str(&err), "");
    if (c != NULL) {
	s = c->sources;
	T_EQ_INT(s->mode, CONF_SOURCE_BOUNCES);
	T_OK(s->recipients == NULL);
	T_EQ_STR(s->bounce_from, "MAILER-DAEMON@relay.contoso.com");
	T_EQ_STR(s->unmatched_to, "postmaster@contoso.com");
    }
    conf_free(c);
    strbuf_free(&err);
    /* Defaults: mail mode; unmatched = keep. */
    c = t_load(ACCT SRC "[source b]\naccount = main\nmode = bounces\n"
	       "deliver_to = smtp://127.0.0.1:25\nfolder = NDR\n", &err);
    T_OK(c != NULL);
    if (c != NULL) {
	T_EQ_INT(c->sources->mode, CONF_SOURCE_MAIL);
	T_EQ_STR(c->sources->next->unmatched, "keep");
	T_OK(c->sources->next->unmatched_to == NULL);
	T_OK(c->sources->next->bounce_from == NULL);
    }
    conf_free(c);
    strbuf_free(&err);

    c = t_load(ACCT "[source m]\naccount = main\n"
	       "deliver_to = smtp://127.0.0.1:25\n", &err);
    T_OK(c == NULL);
    T_CONTAINS(strbuf_str(&err), ":5: [source m]: missing required key "
	       "\"recipients\"");
    conf_free(c);
    strbuf_free(&err);
    c = t_load(ACCT "[source m]\naccount = main\nmode = bounces\n"
	       "deliver_to = smtp://127.0.0.1:25\nrecipients = a@b.example\n"
	       "unmatched = postmaster:nobody\n", &err);
    T_OK(c == NULL);
    T_CONTAINS(strbuf_str(&err), ":9: source m: recipients is not used with "
	       "mode = bounces");
    T_CONTAINS(strbuf_str(&err), ":10: source m: bad unmatched "
	       "\"postmaster:nobody\" (use keep, or postmaster:ADDRESS");
    conf_free(c);
    strbuf_free(&err);
    c = t_load(ACCT "[source m]\naccount = main\nmode = bounce\n"
	       "deliver_to = smtp://127.0.0.1:25\n", &err);
    T_OK(c == NULL);
    T_CONTAINS(strbuf_str(&err), ":7: bad mode \"bounce\" (use mail or "
	       "bounces)");
    conf_free(c);
    strbuf_free(&err);
}

int     main(void)
{
    const char *tmp = getenv("TMPDIR");

    if (tmp == NULL || *tmp == 0 || strlen(tmp) > 150)
	tmp = "/tmp";
    snprintf(t_dir, sizeof(t_dir), "%s/test_conf.XXXXXX", tmp);
    if (mkdtemp(t_dir) == NULL) {
	perror("mkdtemp");
	return (1);
    }
    T_RUN(test_full);
    T_RUN(test_defaults);
    T_RUN(test_milter_full);
    T_RUN(test_milter_sockets);
    T_RUN(test_milter_delivers);
    T_RUN(test_clouds);
    T_RUN(test_errors);
    T_RUN(test_source_full);
    T_RUN(test_source_defaults);
    T_RUN(test_source_deliver);
    T_RUN(test_source_errors);
    T_RUN(test_source_all_errors);
    T_RUN(test_all_errors);
    T_RUN(test_past_cap);
    T_RUN(test_no_accounts);
    T_RUN(test_bom);
    T_RUN(test_senders);
    T_RUN(test_own_mailbox);
    T_RUN(test_warnings);
    T_RUN(test_secrets);
    T_RUN(test_misc);
    T_RUN(test_sample);
    T_RUN(test_large);
    T_RUN(test_once);
    T_RUN(test_bounces);
    T_RUN(test_proxy);
    t_rmtree();
    return (T_DONE());
}
