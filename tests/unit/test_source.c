/*
 * NAME
 *	test_source 1
 * SUMMARY
 *	unit tests for source.c: a [source]'s mailbox, "shared", folder,
 *	and the folder walk with its classification of Graph's replies
 * DESCRIPTION
 *	source_resolve() gets its replies from a script: each step names
 *	the request it expects (parent id and path element, turned into
 *	the URL by graph_url() and graph_folder_query(), which have their
 *	own tests) and the reply Graph gives.  The replies are Graph's own
 *	(graph-facts.md; the error bodies of Microsoft's documentation).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "graph.h"
#include "http.h"
#include "source.h"
#include "strbuf.h"
#include "t.h"

#define ERRBODY(code, msg) "{\"error\":{\"code\":\"" code "\",\"message\":\"" \
    msg "\",\"innerError\":{\"request-id\":\"rid-1\"}}}"

/* test_mailbox - the source's own mailbox, else the account's, else /me */

static void test_mailbox(void)
{
    struct conf_account acct;
    struct conf_source src;

    memset(&acct, 0, sizeof(acct));
    memset(&src, 0, sizeof(src));
    T_OK(source_mailbox(&src) == NULL);
    src.acct = &acct;
    T_OK(source_mailbox(&src) == NULL);
    acct.mailbox = "bob@contoso.test";
    T_EQ_STR(source_mailbox(&src), "bob@contoso.test");
    src.mailbox = "";
    T_EQ_STR(source_mailbox(&src), "bob@contoso.test");
    src.mailbox = "shared@contoso.test";
    T_EQ_STR(source_mailbox(&src), "shared@contoso.test");
}

/*
 * test_shared - another mailbox than the account's own; an account
 * without a mailbox owns none (the rule of oauth_scope() and
 * m365-fetch's remedy; m365ctl's own copy said "not shared" there)
 */
static void test_shared(void)
{
    struct conf_account acct;
    struct conf_source src;

    memset(&acct, 0, sizeof(acct));
    memset(&src, 0, sizeof(src));
    src.acct = &acct;
    T_EQ_INT(source_shared(&src), 0);		/* /me: its own */
    acct.mailbox = "bob@contoso.test";
    T_EQ_INT(source_shared(&src), 0);
    src.mailbox = "BOB@Contoso.Test";
    T_EQ_INT(source_shared(&src), 0);
    src.mailbox = "\"bob\"@contoso.test";	/* same mailbox, quoted */
    T_EQ_INT(source_shared(&src), 0);
    src.mailbox = "shared@contoso.test";
    T_EQ_INT(source_shared(&src), 1);
    acct.mailbox = NULL;
    T_EQ_INT(source_shared(&src), 1);
    src.acct = NULL;
    T_EQ_INT(source_shared(&src), 1);
}

/* test_folder - the folder path, "inbox" when unset */

static void test_folder(void)
{
    struct conf_source src;

    memset(&src, 0, sizeof(src));
    T_EQ_STR(source_folder(&src), "inbox");
    src.folder = "";
    T_EQ_STR(source_folder(&src), "inbox");
    src.folder = "Projects/2026";
    T_EQ_STR(source_folder(&src), "Projects/2026");
}

/* test_mailbox_missing - the error codes that mean "no usable mailbox" */

static void test_mailbox_missing(void)
{
    static const struct {
	long    status;
	const char *body;
	int     want;
    }       cases[] = {
	{404, ERRBODY("MailboxNotEnabledForRESTAPI", "The mailbox is either "
		      "inactive, soft-deleted, or is hosted on-premise."), 1},
	{404, ERRBODY("ErrorInvalidUser", "The requested user "
		      "'x@contoso.test' is invalid."), 1},
	{404, ERRBODY("errornonexistentmailbox", "no mailbox"), 1},
	{404, ERRBODY("ErrorItemNotFound", "The specified object was not "
		      "found in the store."), 0},
	{404, "", 0},
	{403, ERRBODY("ErrorAccessDenied", "Access is denied."), 0},
    };
    struct http_resp r;
    size_t  i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
	http_resp_init(&r);
	r.status = cases[i].status;
	strbuf_puts(&r.body, cases[i].body);
	T_CHECK(source_mailbox_missing(&r) == cases[i].want, "case %lu: %s",
		(unsigned long) i, cases[i].body);
	http_resp_free(&r);
    }
}

/* One request the walk is expected to send, and Graph's reply. */
struct step {
    const char *parent;			/* folder id the element is under */
    const char *elem;
    int     rc;				/* what get returns */
    long    status;
    const char *body;
};

/* The scripted Graph of one walk. */
struct script {
    const struct conf *conf;
    const char *mailbox;
    const struct step *steps;
    size_t  nsteps;
    size_t  next;			/* requests made */
    int     ambiguous;			/* ambiguous() calls */
    char    ambiguous_name[64];
    int     wrong;			/* an unexpected request */
};

/* script_get - the walk's request: check it, give the scripted reply */

static int script_get(void *ctx, const char *url, struct http_resp *resp)
{
    struct script *sc = ctx;
    const struct step *st;
    char   *query, *want;

    if (sc->next >= sc->nsteps) {
	sc->wrong++;
	return (-1);
    }
    st = sc->steps + sc->next++;
    query = graph_folder_query(st->parent, st->elem);
    want = graph_url(sc->conf, sc->mailbox, query);
    if (url == NULL || strcmp(url, want) != 0) {
	printf("# request %lu: %s, want %s\n", (unsigned long) sc->next,
	       url ? url : "(null)", want);
	sc->wrong++;
    }
    free(query);
    free(want);
    resp->status = st->status;
    strbuf_puts(&resp->body, st->body);
    return (st->rc);
}

/* script_ambiguous - note the name */

static void script_ambiguous(void *ctx, const char *name)
{
    struct script *sc = ctx;

    sc->ambiguous++;
    snprintf(sc->ambiguous_name, sizeof(sc->ambiguous_name), "%s", name);
}

#define INBOX "{\"id\":\"AAMkInbox\",\"displayName\":\"Inbox\"," \
    "\"totalItemCount\":5,\"unreadItemCount\":2}"
#define LIST(items) "{\"@odata.context\":\"x\",\"value\":[" items "]}"
#define ITEM(id, name) "{\"id\":\"" id "\",\"displayName\":\"" name "\"}"

struct walk_case {
    const char *name;
    const char *path;
    const char *mailbox;
    struct step steps[3];
    size_t  nsteps;
    enum source_folder_status want;
    const char *want_id;		/* OK */
    const char *want_elem;		/* the element of the last request */
    int     want_depth;
    long    want_status;		/* resp.status (not for OK) */
    int     want_rc;			/* get_rc (FAILED) */
    int     want_ambiguous;
};

static const struct walk_case walk_cases[] = {
    {"well-known name", "inbox", "bob@contoso.test",
	{{NULL, "inbox", 0, 200, INBOX}}, 1,
    SOURCE_FOLDER_OK, "AAMkInbox", "inbox", 0, 0, 0, 0},
    {"well-known name of /me", "Inbox", NULL,
	{{NULL, "Inbox", 0, 200, INBOX}}, 1,
    SOURCE_FOLDER_OK, "AAMkInbox", "Inbox", 0, 0, 0, 0},
    {"display name, then a child; empty elements skipped", "/Projects//2026/",
	"bob@contoso.test",
	{{NULL, "Projects", 0, 200, LIST(ITEM("AAMkProj", "Projects"))},
	{"AAMkProj", "2026", 0, 200, LIST(ITEM("AAMk2026", "2026"))}}, 2,
    SOURCE_FOLDER_OK, "AAMk2026", "2026", 1, 0, 0, 0},
    {"two folders of one name: the first", "Dup", "bob@contoso.test",
	{{NULL, "Dup", 0, 200, LIST(ITEM("AAMk1", "Dup") "," ITEM("AAMk2",
								"Dup"))}}, 1,
    SOURCE_FOLDER_OK, "AAMk1", "Dup", 0, 0, 0, 1},
    {"no folder of that name", "Projects/Nowhere", "bob@contoso.test",
	{{NULL, "Projects", 0, 200, LIST(ITEM("AAMkProj", "Projects"))},
	{"AAMkProj", "Nowhere", 0, 200, LIST("")}}, 2,
    SOURCE_FOLDER_NONE, NULL, "Nowhere", 1, 200, 0, 0},
    {"an object without an id", "inbox", "bob@contoso.test",
	{{NULL, "inbox", 0, 200, "{\"displayName\":\"Inbox\"}"}}, 1,
    SOURCE_FOLDER_NONE, NULL, "inbox", 0, 200, 0, 0},
    {"404 ErrorItemNotFound: the folder does not exist", "junkemail",
	"bob@contoso.test",
	{{NULL, "junkemail", 0, 404, ERRBODY("ErrorItemNotFound", "The "
			 "specified object was not found in the store.")}}, 1,
    SOURCE_FOLDER_MISSING, NULL, "junkemail", 0, 404, 0, 0},
    /* m365ctl's own walk took these for "no user or mailbox". */
    {"404 without a mailbox code: the folder does not exist", "inbox",
	"bob@contoso.test",
	{{NULL, "inbox", 0, 404, ERRBODY("Request_ResourceNotFound",
					 "Resource not found.")}}, 1,
    SOURCE_FOLDER_MISSING, NULL, "inbox", 0, 404, 0, 0},
    {"404 without a body: the folder does not exist", "inbox",
	"bob@contoso.test", {{NULL, "inbox", 0, 404, ""}}, 1,
    SOURCE_FOLDER_MISSING, NULL, "inbox", 0, 404, 0, 0},
    {"404 ErrorInvalidUser: the mailbox", "inbox", "nobody@contoso.test",
	{{NULL, "inbox", 0, 404, ERRBODY("ErrorInvalidUser", "The requested "
				 "user 'nobody@contoso.test' is invalid.")}}, 1,
    SOURCE_FOLDER_GRAPH, NULL, "inbox", 0, 404, 0, 0},
    {"404 MailboxNotEnabledForRESTAPI: the mailbox", "inbox",
	"onprem@contoso.test",
	{{NULL, "inbox", 0, 404, ERRBODY("MailboxNotEnabledForRESTAPI", "The "
					 "mailbox is either inactive, soft-"
					 "deleted, or is hosted on-premise.")}},
	1, SOURCE_FOLDER_GRAPH, NULL, "inbox", 0, 404, 0, 0},
    /* m365ctl's own walk took a 400 for a missing folder, m365-fetch not. */
    {"400 ErrorInvalidIdMalformed: a Graph error", "A/B", "bob@contoso.test",
	{{NULL, "A", 0, 200, LIST(ITEM("AAMkA", "A"))},
	{"AAMkA", "B", 0, 400, ERRBODY("ErrorInvalidIdMalformed", "Id is "
				       "malformed.")}}, 2,
    SOURCE_FOLDER_GRAPH, NULL, "B", 1, 400, 0, 0},
    {"403 ErrorAccessDenied", "inbox", "ceo@contoso.test",
	{{NULL, "inbox", 0, 403, ERRBODY("ErrorAccessDenied", "Access is "
					 "denied. Check credentials and try "
					 "again.")}}, 1,
    SOURCE_FOLDER_GRAPH, NULL, "inbox", 0, 403, 0, 0},
    {"429 keeps its reply", "inbox", "bob@contoso.test",
	{{NULL, "inbox", 0, 429, ERRBODY("ApplicationThrottled", "busy")}}, 1,
    SOURCE_FOLDER_GRAPH, NULL, "inbox", 0, 429, 0, 0},
    {"no reply: the caller's reason", "A/B", "bob@contoso.test",
	{{NULL, "A", 0, 200, LIST(ITEM("AAMkA", "A"))},
	{"AAMkA", "B", -2, 0, ""}}, 2,
    SOURCE_FOLDER_FAILED, NULL, "B", 1, 0, -2, 0},
    {"a reply that is not JSON", "inbox", "bob@contoso.test",
	{{NULL, "inbox", 0, 200, "<html>proxy</html>"}}, 1,
    SOURCE_FOLDER_BAD_REPLY, NULL, "inbox", 0, 200, 0, 0},
    {"a JSON reply that is no object", "inbox", "bob@contoso.test",
	{{NULL, "inbox", 0, 200, "[1]"}}, 1,
    SOURCE_FOLDER_BAD_REPLY, NULL, "inbox", 0, 200, 0, 0},
    {"an empty path sends nothing", "//", "bob@contoso.test", {{0}}, 0,
    SOURCE_FOLDER_EMPTY, NULL, NULL, 0, 0, 0, 0},
};

/* test_resolve - the walk: requests, ids, and the outcome */

static void test_resolve(void)
{
    struct conf conf;
    struct script sc;
    struct source_walk walk = {script_get, script_ambiguous, &sc};
    struct source_folder f;
    size_t  i;

    memset(&conf, 0, sizeof(conf));
    conf.graph_url = "https://graph.test";
    for (i = 0; i < sizeof(walk_cases) / sizeof(walk_cases[0]); i++) {
	const struct walk_case *c = walk_cases + i;

	t_current = c->name;
	memset(&sc, 0, sizeof(sc));
	sc.conf = &conf;
	sc.mailbox = c->mailbox;
	sc.steps = c->steps;
	sc.nsteps = c->nsteps;
	T_EQ_INT(source_resolve(&conf, c->mailbox, c->path, &walk, &f), c->want);
	T_EQ_INT(f.status, c->want);
	T_EQ_INT(sc.next, c->nsteps);
	T_EQ_INT(sc.wrong, 0);
	T_EQ_INT(sc.ambiguous, c->want_ambiguous);
	if (c->want_ambiguous)
	    T_EQ_STR(sc.ambiguous_name, c->want_elem);
	if (c->want_id)
	    T_EQ_STR(f.id, c->want_id);
	else
	    T_OK(f.id == NULL);
	if (c->want_elem) {
	    T_EQ_STR(f.elem, c->want_elem);
	    T_EQ_INT(f.depth, c->want_depth);
	} else
	    T_OK(f.elem == NULL);
	if (c->want != SOURCE_FOLDER_OK)
	    T_EQ_INT(f.resp.status, c->want_status);
	if (c->want == SOURCE_FOLDER_FAILED)
	    T_EQ_INT(f.get_rc, c->want_rc);
	if (c->want == SOURCE_FOLDER_GRAPH)
	    T_OK(f.resp.body.len > 0);		/* the caller reads the error */
	source_resolve_free(&f);
	T_OK(f.id == NULL && f.elem == NULL);
    }
    t_current = "test_resolve";
}

/* test_resolve_details - the found folder's name and counts */

static void test_resolve_details(void)
{
    static const struct step steps[] = {{NULL, "inbox", 0, 200, INBOX}};
    static const struct step nocount[] = {{NULL, "X", 0, 200,
    LIST("{\"id\":\"AAMkX\",\"displayName\":\"X\\u0007\"}")}};
    struct conf conf;
    struct script sc;
    struct source_walk walk = {script_get, NULL, &sc};
    struct source_folder f;

    memset(&conf, 0, sizeof(conf));
    conf.graph_url = "https://graph.test";
    memset(&sc, 0, sizeof(sc));
    sc.conf = &conf;
    sc.mailbox = "bob@contoso.test";
    sc.steps = steps;
    sc.nsteps = 1;
    T_EQ_INT(source_resolve(&conf, sc.mailbox, "inbox", &walk, &f),
	     SOURCE_FOLDER_OK);
    T_EQ_STR(f.name, "Inbox");
    T_EQ_INT(f.total, 5);
    T_EQ_INT(f.unread, 2);
    T_EQ_INT(f.resp.body.len, 0);		/* released when found */
    source_resolve_free(&f);

    /* No counts; a control character is not printed as it is. */
    memset(&sc, 0, sizeof(sc));
    sc.conf = &conf;
    sc.mailbox = "bob@contoso.test";
    sc.steps = nocount;
    sc.nsteps = 1;
    T_EQ_INT(source_resolve(&conf, sc.mailbox, "X", &walk, &f),
	     SOURCE_FOLDER_OK);
    T_EQ_STR(f.id, "AAMkX");
    T_OK(strchr(f.name, '\a') == NULL);
    T_EQ_INT(f.total, -1);
    T_EQ_INT(f.unread, -1);
    source_resolve_free(&f);
}

int     main(void)
{
    T_RUN(test_mailbox);
    T_RUN(test_shared);
    T_RUN(test_folder);
    T_RUN(test_mailbox_missing);
    T_RUN(test_resolve);
    T_RUN(test_resolve_details);
    return (T_DONE());
}
