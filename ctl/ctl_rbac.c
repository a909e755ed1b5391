/*
 * NAME
 *	ctl_rbac 3
 * SUMMARY
 *	m365ctl rbac: least privilege for an app-only account (Exchange
 *	Online RBAC for Applications); the rbac step of m365ctl test
 * DESCRIPTION
 *	ctl_rbac() prints the Exchange Online PowerShell commands that
 *	limit the app of an app-only account to exactly the mailboxes
 *	this configuration uses (Microsoft: "Role Based Access Control for
 *	Applications in Exchange Online",
 *	https://learn.microsoft.com/exchange/permissions-exo/application-rbac;
 *	cmdlets New-ServicePrincipal, New-ManagementScope,
 *	New-ManagementRoleAssignment -App -Role -CustomResourceScope,
 *	Test-ServicePrincipalAuthorization, whose -App and -Identity take a
 *	ServicePrincipalIdParameter: the AppId is one of its documented
 *	forms; roles "Application Mail.Send",
 *	"Application Mail.ReadWrite", "Application Mail.ReadBasic").
 *
 *	RBAC is per app, not per account: every app-only account of this
 *	file with the same client_id and tenant is covered, or the
 *	commands printed for one account would cut off the others.  Per
 *	role, the mailboxes Graph is asked for:
 *	  Mail.Send       each account's mailbox (/users/{mailbox}/sendMail;
 *	                  senders patterns only route mail to the account)
 *	  Mail.ReadWrite  each account's mailbox unless large_messages = no
 *	                  (drafts, attachments, upload sessions), and the
 *	                  mailbox of each [source] that uses the account
 *	  Mail.ReadBasic  each account's mailbox not already in the
 *	                  Mail.ReadWrite scope (Sent Items look-ups by
 *	                  internetMessageId before a resend, resolve.c)
 *	One management scope per role, a recipient filter on
 *	PrimarySmtpAddress of exactly those mailboxes.
 *
 *	ctl_rbac_probe() is the rbac step of m365ctl test: with
 *	rbac_probe_mailbox set (a mailbox the configuration does not use),
 *	it looks in that mailbox's Sent Items the way the duplicates step
 *	looks in the account's own.  Readable: "warn", the app reaches
 *	every mailbox (remedy: m365ctl rbac).  403 while the own mailbox
 *	is readable: "ok", scoped.  403 for both: "--", the app may not
 *	read mail at all, so this cannot tell.  Anything else: "--" with
 *	the reason.  Without rbac_probe_mailbox: "--" and how to enable
 *	it; nothing for delegated accounts.
 * DIAGNOSTICS
 *	ctl_rbac() returns CTL_OK, or EX_USAGE for a delegated account
 *	(RBAC for Applications does not apply to it).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf.h"
#include "ctl.h"
#include "graph.h"
#include "resolve.h"
#include "status.h"
#include "strbuf.h"
#include "util.h"

#define RBAC_DOC "https://learn.microsoft.com/exchange/permissions-exo/" \
	"application-rbac"

/* The mailboxes of one role: a small set, case-insensitive, file order. */
struct rbac_set {
    const char *mb[64];
    int     n;
};

/* rbac_has - is mailbox in the set? */

static int rbac_has(const struct rbac_set *s, const char *mailbox)
{
    int     i;

    for (i = 0; i < s->n; i++)
	if (strcasecmp(s->mb[i], mailbox) == 0)
	    return (1);
    return (0);
}

/* rbac_add - add a mailbox once (the set holds at most 64) */

static void rbac_add(struct rbac_set *s, const char *mailbox)
{
    if (mailbox && *mailbox && !rbac_has(s, mailbox)
	&& s->n < (int) (sizeof(s->mb) / sizeof(s->mb[0])))
	s->mb[s->n++] = mailbox;
}

/* rbac_same_app - is b an app-only account of a's app? */

static int rbac_same_app(const struct conf_account *a,
			         const struct conf_account *b)
{
    return (b->auth != CONF_AUTH_DELEGATED
	    && strcasecmp(a->client_id, b->client_id) == 0
	    && strcasecmp(a->tenant, b->tenant) == 0);
}

/* rbac_sets - the mailboxes per role of acct's app in this file */

static void rbac_sets(const struct conf *conf, const struct conf_account *acct,
		              struct rbac_set *send, struct rbac_set *rw,
		              struct rbac_set *basic)
{
    const struct conf_account *a;
    const struct conf_source *src;

    memset(send, 0, sizeof(*send));
    memset(rw, 0, sizeof(*rw));
    memset(basic, 0, sizeof(*basic));
    for (a = conf->accounts; a; a = a->next) {
	if (!rbac_same_app(acct, a))
	    continue;
	rbac_add(send, a->mailbox);
	if (a->large_messages != CONF_LARGE_NO)
	    rbac_add(rw, a->mailbox);
    }
    for (src = conf->sources; src; src = src->next)
	if (src->acct && rbac_same_app(acct, src->acct))
	    rbac_add(rw, src->mailbox);
    for (a = conf->accounts; a; a = a->next)
	if (rbac_same_app(acct, a) && !rbac_has(rw, a->mailbox))
	    rbac_add(basic, a->mailbox);
}

/* rbac_ps - text for a PowerShell double-quoted string ("`", "$", '"') */

static void rbac_ps(struct strbuf *sb, const char *text)
{
    for (; *text; text++) {
	if (*text == '`' || *text == '$' || *text == '"')
	    strbuf_putc(sb, '`');
	strbuf_putc(sb, *text);
    }
}

/* rbac_filter - PrimarySmtpAddress -eq 'a' -or ..., OPATH-quoted */

static void rbac_filter(struct strbuf *sb, const struct rbac_set *s)
{
    const char *cp;
    int     i;

    for (i = 0; i < s->n; i++) {
	strbuf_printf(sb, "%sPrimarySmtpAddress -eq '", i ? " -or " : "");
	for (cp = s->mb[i]; *cp; cp++) {
	    char    one[2] = {*cp, 0};

	    if (*cp == '\'')
		strbuf_putc(sb, '\'');	/* OPATH: '' is a quote */
	    rbac_ps(sb, one);
	}
	strbuf_putc(sb, '\'');
    }
}

/* rbac_role - one scope and its role assignment (names up to 64) */

static void rbac_role(const char *app_id, const char *role, const char *what,
		              const struct rbac_set *s)
{
    struct strbuf f;

    strbuf_init(&f, STRBUF_MAX_LINE);
    rbac_filter(&f, s);
    printf("New-ManagementScope -Name \"m365relay %s %s\" "
	   "-RecipientRestrictionFilter \"%s\"\n", app_id, what,
	   strbuf_log_str(&f));
    printf("New-ManagementRoleAssignment -Name \"m365relay %s %s\" "
	   "-App $AppId -Role \"Application %s\" "
	   "-CustomResourceScope \"m365relay %s %s\"\n\n", app_id, role, role,
	   app_id, what);
    strbuf_free(&f);
}

/* rbac_list - "a@x, b@y" for a comment */

static void rbac_list(const struct rbac_set *s)
{
    int     i;

    for (i = 0; i < s->n; i++)
	printf("%s%s", i ? ", " : "", s->mb[i]);
}

/* rbac_connect - Connect-ExchangeOnline for the configured cloud */

static const char *rbac_connect(const struct conf *conf)
{
    static const char *const map[][2] = {
	{"usgov", " -ExchangeEnvironmentName O365USGovGCCHigh"},
	{"usgov-dod", " -ExchangeEnvironmentName O365USGovDoD"},
	{"china", " -ExchangeEnvironmentName O365China"},
	{0, 0},
    };
    int     i;

    for (i = 0; conf->cloud && map[i][0]; i++)
	if (strcmp(conf->cloud, map[i][0]) == 0)
	    return (map[i][1]);
    return ("");
}

/* ctl_rbac - print the commands; CTL_OK or EX_USAGE */

int     ctl_rbac(const struct conf *conf, const struct conf_account *acct)
{
    struct rbac_set send, rw, basic;
    const struct conf_account *a;
    struct strbuf app;
    char    app_id[37];
    int     others = 0;

    if (acct->auth == CONF_AUTH_DELEGATED) {
	fprintf(stderr, "m365ctl: account %s is delegated: it acts as the "
		"signed-in user and reaches only what that user may (own "
		"mailbox, Send As, Full Access); RBAC for Applications is for "
		"app-only accounts (auth = secret or certificate)\n",
		acct->name);
	return (EX_USAGE);
    }
    rbac_sets(conf, acct, &send, &rw, &basic);
    snprintf(app_id, sizeof(app_id), "%s", acct->client_id);
    strbuf_init(&app, STRBUF_MAX_SMALL);
    rbac_ps(&app, acct->client_id);

    printf("# Exchange Online RBAC for Applications: the app of account %s "
	   "(client_id\n# %s, tenant %s) reaches exactly the\n# mailboxes "
	   "of %s.\n# Microsoft: %s\n", acct->name, acct->client_id,
	   acct->tenant, conf->path, RBAC_DOC);
    for (a = conf->accounts; a; a = a->next)
	if (a != acct && rbac_same_app(acct, a))
	    printf("%s%s", others++ ? ", " : "# Also for the accounts of the "
		   "same app (RBAC is per app): ", a->name);
    if (others)
	printf("\n");
    printf("# Run in PowerShell with the ExchangeOnlineManagement module, "
	   "as an Exchange\n# administrator.\n\n"
	   "Connect-ExchangeOnline%s\n\n", rbac_connect(conf));
    printf("# 1. The app's service principal in Exchange Online (once).  "
	   "$ObjectId is the\n#    Object ID of the Enterprise application "
	   "(Entra admin center: Enterprise\n#    applications, the app, "
	   "Overview), not the one of the app registration:\n"
	   "#    (Get-MgServicePrincipal -Filter \"appId eq '%s'\").Id\n",
	   strbuf_log_str(&app));
    printf("$AppId = \"%s\"\n$ObjectId = \"<Object ID of the Enterprise "
	   "application>\"\n", strbuf_log_str(&app));
    printf("New-ServicePrincipal -AppId $AppId -ObjectId $ObjectId "
	   "-DisplayName \"m365relay %s\"\n\n", acct->name);

    printf("# 2. Sending (POST /users/{mailbox}/sendMail): ");
    rbac_list(&send);
    printf("\n");
    rbac_role(app_id, "Mail.Send", "send", &send);
    if (rw.n > 0) {
	printf("# 3. Drafts of messages over 4 MB (large_messages) and "
	       "[source] mailboxes\n#    of m365-fetch: ");
	rbac_list(&rw);
	printf("\n");
	rbac_role(app_id, "Mail.ReadWrite", "readwrite", &rw);
    }
    if (basic.n > 0) {
	printf("# %d. Sent Items look-ups before a resend (internetMessageId, "
	       "so a send that\n#    broke off is not sent twice): ",
	       rw.n > 0 ? 4 : 3);
	rbac_list(&basic);
	printf("\n");
	rbac_role(app_id, "Mail.ReadBasic", "readbasic", &basic);
    }
    printf("# Check: each mailbox above is InScope True, any other mailbox "
	   "False.\n");
    printf("Test-ServicePrincipalAuthorization -Identity $AppId "
	   "-Resource \"");
    {
	struct strbuf r;

	strbuf_init(&r, STRBUF_MAX_SMALL);
	rbac_ps(&r, send.mb[0]);
	printf("%s\"\n", strbuf_log_str(&r));
	strbuf_reset(&r);
	if (acct->rbac_probe_mailbox)
	    rbac_ps(&r, acct->rbac_probe_mailbox);
	printf("Test-ServicePrincipalAuthorization -Identity $AppId "
	       "-Resource \"%s\"\n\n", acct->rbac_probe_mailbox ?
	       strbuf_log_str(&r) : "<a mailbox this configuration does "
	       "not use>");
	strbuf_free(&r);
    }
    printf("# Then remove the application permissions Mail.Send, "
	   "Mail.ReadWrite and\n# Mail.ReadBasic.All of the app in Entra "
	   "ID (API permissions, revoke the admin\n# consent): permissions "
	   "are additive, and that grant alone reaches every\n# mailbox of "
	   "the tenant.  Changes can take an hour or more to apply.  Then\n"
	   "# set rbac_probe_mailbox in [account %s] and run: m365ctl test "
	   "%s\n", acct->name, acct->name);
    strbuf_free(&app);
    return (CTL_OK);
}

/*
 * ctl_rbac_probe - the rbac step of m365ctl test: tag ("ok", "warn",
 * "--") with text and remedy (may be empty), or NULL: no step
 */
const char *ctl_rbac_probe(const struct conf *conf, struct http *http,
			           const struct conf_account *acct,
			           const char *token, char *text, size_t len,
			           char *remedy, size_t rlen)
{
    struct rbac_set send, rw, basic;
    struct m365_result res, own;
    const char *probe = acct->rbac_probe_mailbox;
    char   *none[1] = {NULL};
    int     rc, denied = 0;

    remedy[0] = 0;
    if (acct->auth == CONF_AUTH_DELEGATED) {
	if (probe == NULL)
	    return (NULL);
	snprintf(text, len, "rbac_probe_mailbox is for app-only accounts; "
		 "account %s is delegated (it reaches what its user may)",
		 acct->name);
	return ("--");
    }
    if (probe == NULL) {
	snprintf(text, len, "not checked whether the app can reach "
		 "mailboxes this configuration does not use");
	snprintf(remedy, rlen, "set rbac_probe_mailbox = a mailbox outside "
		 "this configuration in [account %s]; m365ctl rbac %s prints "
		 "the commands that limit the app", acct->name, acct->name);
	return ("--");
    }
    rbac_sets(conf, acct, &send, &rw, &basic);
    if (rbac_has(&send, probe) || rbac_has(&rw, probe)) {
	snprintf(text, len, "rbac_probe_mailbox %s is a mailbox this "
		 "configuration uses, so it proves nothing", probe);
	snprintf(remedy, rlen, "name a mailbox of the tenant that no "
		 "account or [source] uses");
	return ("warn");
    }
    result_init(&res);
    rc = graph_sent_find(http, conf, probe, token,
			 "<m365relay-rbac-probe@invalid>", none, 0, 0, &res);
    if (rc == GRAPH_FIND_NONE || rc == GRAPH_FIND_FOUND) {
	snprintf(text, len, "unrestricted: the app read Sent Items of %s, a "
		 "mailbox this configuration does not use; it can reach every "
		 "mailbox of the tenant", probe);
	snprintf(remedy, rlen, "limit it with RBAC for Applications: "
		 "m365ctl rbac %s prints the commands", acct->name);
	return ("warn");
    }
    if (rc != GRAPH_FIND_DENIED) {
	snprintf(text, len, "cannot tell whether the app is limited to this "
		 "configuration's mailboxes: %s", res.text);
	return ("--");
    }
    result_init(&own);
    if (resolve_probe(conf, http, acct, token, &denied, &own) != 0) {
	snprintf(text, len, "cannot tell: access to %s is denied, but so is "
		 "access to the account's own mailbox %s (the app may not "
		 "read mail at all); Test-ServicePrincipalAuthorization shows "
		 "the Mail.Send scope", probe, acct->mailbox);
	return ("--");
    }
    snprintf(text, len, "scoped: access to %s (outside this configuration) "
	     "is denied (HTTP 403), %s is readable", probe, acct->mailbox);
    return ("ok");
}
