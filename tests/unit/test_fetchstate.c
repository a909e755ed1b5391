/*
 * NAME
 *	test_fetchstate 1
 * SUMMARY
 *	unit tests for fetchstate.c: round trip, transitions, bounded done
 *	list, crash-recovery decisions, lock, damaged files
 */
#include "config.h"

#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"
#include "fetchstate.h"
#include "t.h"
#include "t_file.h"
#include "util.h"

static struct conf conf;
static char dir[256];

/* setup - a private state_dir */

static void setup(void)
{
    t_tmpdir(dir, sizeof(dir), "test_fetchstate");
    memset(&conf, 0, sizeof(conf));
    conf.state_dir = dir;
    conf.path = "test.conf";
}

/* teardown - remove what the tests wrote */

static void teardown(void)
{
    char    cmd[600];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
	fprintf(stderr, "cannot remove %s\n", dir);
}

static void test_transitions(void)
{
    struct fetchstate st;
    struct fetchstate_pending *p;

    memset(&st, 0, sizeof(st));
    p = fetchstate_pending_set(&st, "AAA", "<m1@x>", FETCHSTATE_INJECTING, NULL);
    T_EQ_INT(st.npending, 1);
    T_EQ_INT(p->state, FETCHSTATE_INJECTING);
    T_EQ_INT(fetchstate_recovery(p), FETCHSTATE_REDO_INJECT);
    T_OK(p->at > 0);

    /* NULL imid/reply keep what is there. */
    p = fetchstate_pending_set(&st, "AAA", NULL, FETCHSTATE_DATA_SENT, NULL);
    T_EQ_INT(st.npending, 1);
    T_EQ_STR(p->imid, "<m1@x>");
    T_EQ_INT(fetchstate_recovery(p), FETCHSTATE_REDO_INJECT_DUP);
    p = fetchstate_pending_set(&st, "AAA", NULL, FETCHSTATE_INJECTED,
			       "250 2.0.0 Ok: queued as ABC");
    T_EQ_INT(fetchstate_recovery(p), FETCHSTATE_REDO_AFTER);
    T_EQ_STR(p->mta_reply, "250 2.0.0 Ok: queued as ABC");

    p = fetchstate_pending_set(&st, "BBB", NULL, FETCHSTATE_REJECTED, "550 no");
    T_EQ_INT(st.npending, 2);
    T_EQ_INT(fetchstate_recovery(p), FETCHSTATE_REDO_REJECT);
    T_OK(p->imid == NULL);

    /* Finishing moves a message from pending to done (id may be the entry's). */
    fetchstate_finish(&st, st.pending[0].id);
    T_EQ_INT(st.npending, 1);
    T_OK(fetchstate_pending_find(&st, "AAA") == NULL);
    T_OK(fetchstate_pending_find(&st, "BBB") != NULL);
    T_OK(fetchstate_done_has(&st, "AAA"));
    T_OK(!fetchstate_done_has(&st, "BBB"));
    fetchstate_pending_drop(&st, "BBB");
    fetchstate_pending_drop(&st, "nothing");
    T_EQ_INT(st.npending, 0);
    T_OK(!fetchstate_done_has(&st, "BBB"));
    fetchstate_clear(&st);
    T_EQ_INT(st.ndone, 0);
}

static void test_done_bounded(void)
{
    struct fetchstate st;
    char    id[32];
    int     i;

    memset(&st, 0, sizeof(st));
    for (i = 0; i < FETCHSTATE_DONE_MAX + 10; i++) {
	snprintf(id, sizeof(id), "id-%d", i);
	fetchstate_done_add(&st, id);
    }
    T_EQ_INT(st.ndone, FETCHSTATE_DONE_MAX);
    T_OK(!fetchstate_done_has(&st, "id-0"));
    T_OK(!fetchstate_done_has(&st, "id-9"));
    T_OK(fetchstate_done_has(&st, "id-10"));
    snprintf(id, sizeof(id), "id-%d", FETCHSTATE_DONE_MAX + 9);
    T_OK(fetchstate_done_has(&st, id));
    T_EQ_STR(st.done[st.ndone - 1], id);

    /* A duplicate is not added twice and evicts nothing. */
    fetchstate_done_add(&st, "id-10");
    T_EQ_INT(st.ndone, FETCHSTATE_DONE_MAX);
    T_OK(fetchstate_done_has(&st, "id-10"));
    T_EQ_STR(st.done[0], "id-10");
    fetchstate_done_add(&st, "");
    fetchstate_done_add(&st, NULL);
    T_EQ_INT(st.ndone, FETCHSTATE_DONE_MAX);
    fetchstate_clear(&st);
}

static void test_round_trip(void)
{
    struct fetchstate st, back;
    struct stat sb;
    char    err[600], path[512];
    char   *text;

    memset(&st, 0, sizeof(st));
    st.folder = xstrdup("Help desk/New");
    st.folder_id = xstrdup("AQMkAGI2=");
    st.delta_link = xstrdup("https://graph.microsoft.com/v1.0/users/a%40b/"
			    "mailFolders/X/messages/delta?$deltatoken=abc");
    fetchstate_pending_set(&st, "M1", "<one@x>", FETCHSTATE_INJECTED,
			   "250 2.0.0 Ok: queued as 4XyZ");
    fetchstate_pending_set(&st, "M2", NULL, FETCHSTATE_DATA_SENT, NULL);
    fetchstate_done_add(&st, "D1");
    fetchstate_done_add(&st, "D2");
    fetchstate_folder_set(&st, "Processed", "F-1");
    fetchstate_set_offline(&st, "AADSTS50173 invalid_grant", "m365ctl login a");
    st.notified = 1;
    st.not_before = 1700000100;
    st.injected = 42;
    st.rejected = 3;

    /* Through the file: 0600, and every field back. */
    T_EQ_INT(fetchstate_save(&conf, "helpdesk", &st, err, sizeof(err)), 0);
    T_EQ_INT(fetchstate_path(&conf, "helpdesk", ".json", path, sizeof(path)), 0);
    T_EQ_INT(stat(path, &sb), 0);
    T_EQ_INT(sb.st_mode & 0777, 0600);
    snprintf(path, sizeof(path), "%s/sources", dir);
    T_EQ_INT(stat(path, &sb), 0);
    T_EQ_INT(sb.st_mode & 0777, 0700);
    T_EQ_INT(fetchstate_load(&conf, "helpdesk", &back, err, sizeof(err)), 0);
    T_EQ_STR(back.folder, "Help desk/New");
    T_EQ_STR(back.folder_id, "AQMkAGI2=");
    T_EQ_STR(back.delta_link, st.delta_link);
    T_EQ_INT(back.npending, 2);
    T_EQ_STR(back.pending[0].id, "M1");
    T_EQ_STR(back.pending[0].imid, "<one@x>");
    T_EQ_INT(back.pending[0].state, FETCHSTATE_INJECTED);
    T_EQ_STR(back.pending[0].mta_reply, "250 2.0.0 Ok: queued as 4XyZ");
    T_EQ_INT(back.pending[0].at, st.pending[0].at);
    T_EQ_STR(back.pending[1].id, "M2");
    T_OK(back.pending[1].imid == NULL);
    T_EQ_INT(back.pending[1].state, FETCHSTATE_DATA_SENT);
    T_EQ_INT(back.ndone, 2);
    T_EQ_STR(back.done[0], "D1");
    T_EQ_STR(back.done[1], "D2");
    T_EQ_STR(fetchstate_folder_get(&back, "Processed"), "F-1");
    T_OK(fetchstate_folder_get(&back, "Other") == NULL);
    T_EQ_INT(back.offline, 1);
    T_EQ_STR(back.last_error, "AADSTS50173 invalid_grant");
    T_EQ_STR(back.remedy, "m365ctl login a");
    T_EQ_INT(back.notified, 1);
    T_EQ_INT(back.offline_since, st.offline_since);
    T_EQ_INT(back.not_before, 1700000100);
    T_EQ_INT(back.injected, 42);
    T_EQ_INT(back.rejected, 3);
    fetchstate_clear(&back);

    /* The documented JSON names. */
    text = fetchstate_format(&st);
    T_CONTAINS(text, "\"delta_link\"");
    T_CONTAINS(text, "\"state\":\t\"injected\"");
    T_CONTAINS(text, "\"state\":\t\"data_sent\"");
    T_CONTAINS(text, "\"mta_reply\"");
    T_CONTAINS(text, "\"done\"");
    T_CONTAINS(text, "\"offline\":\ttrue");
    free(text);
    fetchstate_clear(&st);

    /* A missing file is an empty state. */
    T_EQ_INT(fetchstate_load(&conf, "never", &back, err, sizeof(err)), 0);
    T_OK(back.delta_link == NULL && back.npending == 0 && !back.offline);
    fetchstate_clear(&back);
}

/* A kill -9 left states behind: what does a restart do with each? */
static void test_recovery_decisions(void)
{
    static const char json[] =
	"{\"pending\": {"
	"\"A\": {\"state\": \"injecting\", \"at\": 1},"
	"\"B\": {\"state\": \"data_sent\", \"at\": 2},"
	"\"C\": {\"state\": \"injected\", \"mta_reply\": \"250 ok\"},"
	"\"D\": {\"state\": \"rejected\"},"
	"\"E\": {\"state\": \"something-new\"},"
	"\"\": {\"state\": \"injected\"},"
	"\"F\": 7}, \"done\": [\"X\", 5, \"\"], \"delta_link\": null}";
    struct fetchstate st;
    char    err[200];

    T_EQ_INT(fetchstate_parse(json, sizeof(json) - 1, &st, err, sizeof(err)), 0);
    T_EQ_INT(st.npending, 5);
    T_EQ_INT(fetchstate_recovery(fetchstate_pending_find(&st, "A")),
	     FETCHSTATE_REDO_INJECT);
    T_EQ_INT(fetchstate_recovery(fetchstate_pending_find(&st, "B")),
	     FETCHSTATE_REDO_INJECT_DUP);
    T_EQ_INT(fetchstate_recovery(fetchstate_pending_find(&st, "C")),
	     FETCHSTATE_REDO_AFTER);
    T_EQ_INT(fetchstate_recovery(fetchstate_pending_find(&st, "D")),
	     FETCHSTATE_REDO_REJECT);
    /* Unknown: assume the MTA may have it (inject again, log duplicate). */
    T_EQ_INT(fetchstate_recovery(fetchstate_pending_find(&st, "E")),
	     FETCHSTATE_REDO_INJECT_DUP);
    T_OK(fetchstate_pending_find(&st, "F") == NULL);
    T_EQ_INT(st.ndone, 1);
    T_OK(fetchstate_done_has(&st, "X"));
    T_OK(st.delta_link == NULL);
    T_EQ_STR(fetchstate_pstate_name(FETCHSTATE_DATA_SENT), "data_sent");
    fetchstate_clear(&st);

    T_EQ_INT(fetchstate_parse("[1]", 3, &st, err, sizeof(err)), -1);
    T_EQ_INT(fetchstate_parse("{\"a\":", 5, &st, err, sizeof(err)), -1);
}

static void test_damaged_and_names(void)
{
    struct fetchstate st;
    char    err[600], path[512];
    int     fd;

    snprintf(path, sizeof(path), "%s/sources", dir);
    T_EQ_INT(mkdir_p(path, 0700, err, sizeof(err)), 0);
    T_EQ_INT(fetchstate_path(&conf, "bad", ".json", path, sizeof(path)), 0);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    T_OK(fd >= 0);
    T_EQ_INT(write(fd, "not json", 8), 8);
    close(fd);
    T_EQ_INT(fetchstate_load(&conf, "bad", &st, err, sizeof(err)), -1);
    T_CONTAINS(err, "damaged");
    T_CONTAINS(err, path);

    T_EQ_INT(fetchstate_load(&conf, "../etc", &st, err, sizeof(err)), -1);
    T_CONTAINS(err, "invalid source name");
    T_EQ_INT(fetchstate_save(&conf, ".hidden", &st, err, sizeof(err)), -1);
    T_EQ_INT(fetchstate_path(&conf, "a/b", ".json", path, sizeof(path)), -1);
}

/* put_file - write text to path (a stand-in for what a crash left) */

static void put_file(const char *path, const char *text)
{
    int     fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

    T_OK(fd >= 0);
    if (fd < 0)
	return;
    T_EQ_INT(write(fd, text, strlen(text)), (long) strlen(text));
    close(fd);
}

/* load_state - fetchstate_load() of source "round" into *st; its id's state */

static int load_state(struct fetchstate *st, const char *id)
{
    struct fetchstate_pending *p;
    char    err[600];

    T_EQ_INT(fetchstate_load(&conf, "round", st, err, sizeof(err)), 0);
    p = fetchstate_pending_find(st, id);
    return (p ? (int) p->state : -1);
}

/*
 * test_write_round - the writes of a round as fetch.c makes them: per
 * message data_sent durable (NAME.json, a new gen), injected visible
 * (NAME.json.next, same gen), done carried by the next write, one
 * durable write at the end.  A kill -9 keeps the visible write; what a
 * power loss may leave of it (nothing, an empty or a damaged file, an
 * older generation) falls back to the durable data_sent.
 */
static void test_write_round(void)
{
    struct fetchstate_file f;
    struct fetchstate st, back;
    struct stat sb;
    char    err[600], json[512], next[512], old[520], id[16];
    char    gen[FETCHSTATE_GEN_LEN + 1];
    int     i;

    memset(&st, 0, sizeof(st));
    T_EQ_INT(fetchstate_path(&conf, "round", ".json", json, sizeof(json)), 0);
    T_EQ_INT(fetchstate_path(&conf, "round", ".json.next", next,
			     sizeof(next)), 0);
    snprintf(old, sizeof(old), "%s.old", next);
    T_EQ_INT(fetchstate_open(&conf, "round", &f, err, sizeof(err)), 0);

    /* No durable generation yet: even a visible write is durable. */
    T_EQ_INT(fetchstate_write(&f, &st, FETCHSTATE_VISIBLE, err,
			      sizeof(err)), 0);
    T_EQ_INT(f.durable, 1);
    T_EQ_INT(f.visible, 0);
    T_EQ_INT(strlen(st.gen), FETCHSTATE_GEN_LEN);
    T_EQ_INT(access(next, F_OK), -1);

    for (i = 0; i < 3; i++) {
	snprintf(id, sizeof(id), "M%d", i);
	memcpy(gen, st.gen, sizeof(gen));
	fetchstate_pending_set(&st, id, NULL, FETCHSTATE_DATA_SENT, NULL);
	T_EQ_INT(fetchstate_write(&f, &st, FETCHSTATE_DURABLE, err,
				  sizeof(err)), 0);
	T_OK(strcmp(gen, st.gen) != 0);
	fetchstate_pending_set(&st, id, NULL, FETCHSTATE_INJECTED, "250 ok");
	T_EQ_INT(fetchstate_write(&f, &st, FETCHSTATE_VISIBLE, err,
				  sizeof(err)), 0);
	/* A kill -9 now: the restart only repeats the after-action. */
	T_EQ_INT(load_state(&back, id), FETCHSTATE_INJECTED);
	T_EQ_STR(back.gen, st.gen);
	fetchstate_clear(&back);
	fetchstate_finish(&st, id);
    }
    /* Two fsyncs per message: one durable write each. */
    T_EQ_INT(f.durable, 1 + 3);
    T_EQ_INT(f.visible, 3);
    T_EQ_INT(stat(next, &sb), 0);
    T_EQ_INT(sb.st_mode & 0777, 0600);

    /* The finished messages rode along with the next durable write. */
    T_EQ_INT(load_state(&back, "M2"), FETCHSTATE_INJECTED);
    T_OK(fetchstate_done_has(&back, "M0") && fetchstate_done_has(&back, "M1"));
    fetchstate_clear(&back);

    /* A power loss took the visible write: data_sent (the warning). */
    T_EQ_INT(rename(next, old), 0);
    T_EQ_INT(load_state(&back, "M2"), FETCHSTATE_DATA_SENT);
    T_EQ_INT(fetchstate_recovery(fetchstate_pending_find(&back, "M2")),
	     FETCHSTATE_REDO_INJECT_DUP);
    T_OK(fetchstate_done_has(&back, "M1"));
    fetchstate_clear(&back);
    put_file(next, "");				/* ... or left it empty */
    T_EQ_INT(load_state(&back, "M2"), FETCHSTATE_DATA_SENT);
    fetchstate_clear(&back);
    put_file(next, "{\"gen\": \"");		/* ... or cut short */
    T_EQ_INT(load_state(&back, "M2"), FETCHSTATE_DATA_SENT);
    fetchstate_clear(&back);
    T_EQ_INT(rename(old, next), 0);
    T_EQ_INT(load_state(&back, "M2"), FETCHSTATE_INJECTED);
    fetchstate_clear(&back);

    /* The end of the round: durable; the stale .next is removed. */
    T_EQ_INT(link(next, old), 0);
    fetchstate_finish(&st, "M2");
    T_EQ_INT(fetchstate_write(&f, &st, FETCHSTATE_DURABLE, err,
			      sizeof(err)), 0);
    fetchstate_close(&f);
    T_EQ_INT(access(next, F_OK), -1);
    T_EQ_INT(f.dirfd, -1);

    /* A leftover of an earlier generation is ignored (not "injected"). */
    T_EQ_INT(rename(old, next), 0);
    T_EQ_INT(load_state(&back, "M2"), -1);
    T_OK(fetchstate_done_has(&back, "M2"));
    T_EQ_STR(back.gen, st.gen);
    fetchstate_clear(&back);

    /* Without NAME.json (moved away), NAME.json.next is ignored too. */
    T_EQ_INT(unlink(json), 0);
    T_EQ_INT(load_state(&back, "M2"), -1);
    T_OK(back.gen[0] == 0 && back.ndone == 0);
    fetchstate_clear(&back);

    /* A file of an older version (no gen): the first write is durable. */
    put_file(json, "{\"pending\": {\"X\": {\"state\": \"injecting\"}}}");
    T_EQ_INT(load_state(&back, "X"), FETCHSTATE_INJECTING);
    T_OK(back.gen[0] == 0);
    T_EQ_INT(fetchstate_open(&conf, "round", &f, err, sizeof(err)), 0);
    T_EQ_INT(fetchstate_write(&f, &back, FETCHSTATE_VISIBLE, err,
			      sizeof(err)), 0);
    T_EQ_INT(f.durable, 1);
    T_EQ_INT(f.visible, 0);
    fetchstate_close(&f);
    fetchstate_clear(&back);

    /* fetchstate_save() writes a new generation: a .next is then stale. */
    T_EQ_INT(fetchstate_open(&conf, "round", &f, err, sizeof(err)), 0);
    T_EQ_INT(fetchstate_write(&f, &st, FETCHSTATE_DURABLE, err,
			      sizeof(err)), 0);
    fetchstate_pending_set(&st, "Y", NULL, FETCHSTATE_INJECTED, NULL);
    T_EQ_INT(fetchstate_write(&f, &st, FETCHSTATE_VISIBLE, err,
			      sizeof(err)), 0);
    fetchstate_close(&f);			/* the last write was visible */
    T_EQ_INT(access(next, F_OK), 0);
    fetchstate_pending_drop(&st, "Y");
    T_EQ_INT(fetchstate_save(&conf, "round", &st, err, sizeof(err)), 0);
    T_EQ_INT(load_state(&back, "Y"), -1);
    fetchstate_clear(&back);
    T_EQ_INT(access(next, F_OK), -1);

    /* Names are checked before anything is opened. */
    T_EQ_INT(fetchstate_open(&conf, "../x", &f, err, sizeof(err)), -1);
    T_CONTAINS(err, "invalid source name");
    fetchstate_clear(&st);
}

static void test_lock(void)
{
    char    err[600];
    int     a, b, c;

    a = fetchstate_lock(&conf, "locked", err, sizeof(err));
    T_OK(a >= 0);
    b = fetchstate_lock(&conf, "locked", err, sizeof(err));
    T_EQ_INT(b, -2);
    T_CONTAINS(err, "another m365-fetch process");
    c = fetchstate_lock(&conf, "other", err, sizeof(err));
    T_OK(c >= 0);
    fetchstate_unlock(a);
    b = fetchstate_lock(&conf, "locked", err, sizeof(err));
    T_OK(b >= 0);
    fetchstate_unlock(b);
    fetchstate_unlock(c);
}

/*
 * test_root_links - m365-fetch as root: the state goes to the [global]
 * user; a sources directory that is a link the user made, or a link at
 * the state file's name, leaves root's files alone (skipped unless root)
 */
static void test_root_links(void)
{
    struct fetchstate st;
    struct passwd *pw;
    struct stat sb;
    struct conf c = conf;
    char    err[600], state[300], rootdir[300], path[600], keep[600];
    int     fd;

    if (geteuid() != 0 || (pw = getpwnam("nobody")) == NULL) {
	printf("# test_root_links skipped: needs root and user nobody\n");
	return;
    }
    memset(&st, 0, sizeof(st));
    snprintf(state, sizeof(state), "%s/users", dir);
    snprintf(rootdir, sizeof(rootdir), "%s/rootdir", dir);
    T_EQ_INT(mkdir(state, 0700), 0);
    T_EQ_INT(mkdir(rootdir, 0700), 0);
    c.state_dir = state;
    c.user = "nobody";

    /* Written by root, owned by the user, with its directory. */
    T_EQ_INT(fetchstate_save(&c, "src", &st, err, sizeof(err)), 0);
    T_EQ_INT(fetchstate_path(&c, "src", ".json", path, sizeof(path)), 0);
    T_EQ_INT(lstat(path, &sb), 0);
    T_EQ_INT(sb.st_uid, pw->pw_uid);
    T_EQ_INT(sb.st_mode & 07777, 0600);

    /* A link at the file's name is replaced, its target kept. */
    snprintf(keep, sizeof(keep), "%s/sources/src.keep", state);
    fd = open(keep, O_WRONLY | O_CREAT | O_EXCL, 0600);
    T_OK(fd >= 0);
    if (fd >= 0)
	close(fd);
    T_EQ_INT(unlink(path), 0);
    T_EQ_INT(symlink(keep, path), 0);
    T_EQ_INT(fetchstate_save(&c, "src", &st, err, sizeof(err)), 0);
    T_EQ_INT(lstat(path, &sb), 0);
    T_OK(S_ISREG(sb.st_mode));
    T_EQ_INT(stat(keep, &sb), 0);
    T_EQ_INT(sb.st_size, 0);
    T_EQ_INT(sb.st_uid, 0);

    /* The sources directory replaced by a link to root's directory. */
    snprintf(path, sizeof(path), "%s/sources", state);
    snprintf(keep, sizeof(keep), "%s/sources.old", state);
    T_EQ_INT(rename(path, keep), 0);
    T_EQ_INT(symlink(rootdir, path), 0);
    T_EQ_INT(chown(state, pw->pw_uid, pw->pw_gid), 0);
    T_EQ_INT(fetchstate_save(&c, "src", &st, err, sizeof(err)), -1);
    T_CONTAINS(err, "not a directory");
    T_EQ_INT(fetchstate_lock(&c, "src", err, sizeof(err)), -1);
    snprintf(path, sizeof(path), "%s/src.json", rootdir);
    T_EQ_INT(access(path, F_OK), -1);
    snprintf(path, sizeof(path), "%s/src.lock", rootdir);
    T_EQ_INT(access(path, F_OK), -1);
    T_EQ_INT(stat(rootdir, &sb), 0);
    T_EQ_INT(sb.st_uid, 0);
}

/*
 * test_root_next - as root, NAME.json.next goes to the [global] user
 * like NAME.json (skipped unless root)
 */
static void test_root_next(void)
{
    struct fetchstate_file f;
    struct fetchstate st;
    struct passwd *pw;
    struct stat sb;
    struct conf c = conf;
    char    err[600], state[300], path[600];

    if (geteuid() != 0 || (pw = getpwnam("nobody")) == NULL) {
	printf("# test_root_next skipped: needs root and user nobody\n");
	return;
    }
    memset(&st, 0, sizeof(st));
    snprintf(state, sizeof(state), "%s/next-users", dir);
    T_EQ_INT(mkdir(state, 0700), 0);
    c.state_dir = state;
    c.user = "nobody";
    T_EQ_INT(fetchstate_open(&c, "src", &f, err, sizeof(err)), 0);
    T_EQ_INT(fetchstate_write(&f, &st, FETCHSTATE_DURABLE, err,
			      sizeof(err)), 0);
    T_EQ_INT(fetchstate_write(&f, &st, FETCHSTATE_VISIBLE, err,
			      sizeof(err)), 0);
    fetchstate_close(&f);
    T_EQ_INT(fetchstate_path(&c, "src", ".json.next", path, sizeof(path)), 0);
    T_EQ_INT(lstat(path, &sb), 0);
    T_EQ_INT(sb.st_uid, pw->pw_uid);
    T_EQ_INT(sb.st_mode & 07777, 0600);
    snprintf(path, sizeof(path), "%s/sources", state);
    T_EQ_INT(stat(path, &sb), 0);
    T_EQ_INT(sb.st_uid, pw->pw_uid);
}

static void test_offline(void)
{
    struct fetchstate st;

    memset(&st, 0, sizeof(st));
    T_EQ_INT(fetchstate_set_offline(&st, "e1", "r1"), 1);
    T_OK(st.offline_since > 0);
    st.notified = 1;
    /* Still offline: not a new period, the notice is not sent again. */
    T_EQ_INT(fetchstate_set_offline(&st, "e2", "r2"), 0);
    T_EQ_INT(st.notified, 1);
    T_EQ_STR(st.last_error, "e2");
    T_EQ_INT(fetchstate_set_online(&st), 1);
    T_EQ_INT(st.offline, 0);
    T_EQ_INT(st.notified, 0);
    T_OK(st.last_error == NULL && st.remedy == NULL);
    T_EQ_INT(fetchstate_set_online(&st), 0);
    /* A new offline period may notify again. */
    T_EQ_INT(fetchstate_set_offline(&st, "e3", "r3"), 1);
    T_EQ_INT(st.notified, 0);
    fetchstate_folder_set(&st, "A", "1");
    fetchstate_folder_set(&st, "B", "2");
    fetchstate_folder_set(&st, "A", "3");
    T_EQ_STR(fetchstate_folder_get(&st, "A"), "3");
    fetchstate_folder_set(&st, "A", NULL);
    T_OK(fetchstate_folder_get(&st, "A") == NULL);
    T_EQ_STR(fetchstate_folder_get(&st, "B"), "2");
    fetchstate_clear(&st);
}

int     main(void)
{
    setup();
    T_RUN(test_transitions);
    T_RUN(test_done_bounded);
    T_RUN(test_round_trip);
    T_RUN(test_recovery_decisions);
    T_RUN(test_damaged_and_names);
    T_RUN(test_lock);
    T_RUN(test_write_round);
    T_RUN(test_offline);
    T_RUN(test_root_links);
    T_RUN(test_root_next);
    teardown();
    return (T_DONE());
}
