/*
 * NAME
 *	fuzz_fetchstate - libFuzzer target for m365-fetch state files
 * SUMMARY
 *	fetchstate_parse(), fetchstate_format() and the state operations
 * DESCRIPTION
 *	The input is the body of state_dir/sources/NAME.json.  It is a
 *	local file, but it survives crashes, disk-full conditions and
 *	hand edits, and it decides whether a message is injected again,
 *	so it is parsed like foreign input.
 *
 *	Invariants (abort() on violation):
 *	- fetchstate_parse() fails with an error text or gives a state;
 *	- the state formats, the text parses back, and formatting that
 *	  again gives the same text (what m365-fetch writes is what it
 *	  reads after a restart);
 *	- the done list stays within FETCHSTATE_DONE_MAX, every done and
 *	  pending id is found again, every pending entry has a recovery
 *	  action of the four documented ones and a state name;
 *	- the usual round of operations (pending_set, done_add, finish,
 *	  folder_set, set_offline, set_online) keeps those properties.
 * DIAGNOSTICS
 *	A failed invariant prints one line to stderr, then abort().
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fetchstate.h"
#include "fuzz.h"
#include "log.h"
#include "util.h"

/* fuzz_fail - report a broken invariant and crash */

static void fuzz_fail(const char *what)
{
    fuzz_violated(what);
    abort();
}

/* fuzz_check_state - lookups agree with the arrays */

static void fuzz_check_state(struct fetchstate *st)
{
    size_t  i;
    enum fetchstate_action act;

    if (st->ndone > FETCHSTATE_DONE_MAX)
	fuzz_fail("the done list is longer than FETCHSTATE_DONE_MAX");
    for (i = 0; i < st->ndone; i++)
	if (st->done[i] == NULL || !fetchstate_done_has(st, st->done[i]))
	    fuzz_fail("a done id is not found");
    for (i = 0; i < st->npending; i++) {
	struct fetchstate_pending *p = st->pending + i;

	if (p->id == NULL || fetchstate_pending_find(st, p->id) != p)
	    fuzz_fail("a pending id is not found");
	act = fetchstate_recovery(p);
	if (act != FETCHSTATE_REDO_INJECT && act != FETCHSTATE_REDO_INJECT_DUP
	    && act != FETCHSTATE_REDO_AFTER && act != FETCHSTATE_REDO_REJECT)
	    fuzz_fail("a recovery action outside the documented four");
	if (fetchstate_pstate_name(p->state) == NULL)
	    fuzz_fail("a pending state without a name");
    }
    for (i = 0; i < st->nfolders; i++)
	if (st->folders[i].name == NULL || st->folders[i].id == NULL
	    || fetchstate_folder_get(st, st->folders[i].name) == NULL)
	    fuzz_fail("a folder cache entry is not found");
}

/* fuzz_round_trip - format, parse back, format again: same text */

static void fuzz_round_trip(const struct fetchstate *st)
{
    struct fetchstate back;
    char   *text, *again;
    char    err[256];

    if ((text = fetchstate_format(st)) == NULL)
	fuzz_fail("fetchstate_format() failed");
    if (fetchstate_parse(text, strlen(text), &back, err, sizeof(err)) < 0)
	fuzz_fail("the formatted state does not parse back");
    if ((again = fetchstate_format(&back)) == NULL)
	fuzz_fail("fetchstate_format() failed on the parsed state");
    if (strcmp(text, again) != 0) {
	fprintf(stderr, "first:\n%s\nsecond:\n%s\n", text, again);
	fuzz_fail("format(parse(format(state))) differs from format(state)");
    }
    fuzz_check_state(&back);
    fetchstate_clear(&back);
    free(text);
    free(again);
}

/* LLVMFuzzerInitialize - quiet logging, crash on out of memory */

int     LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return (fuzz_init("fuzz_fetchstate", argc, argv));
}

/* LLVMFuzzerTestOneInput - one state file */

int     LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fetchstate st;
    char    err[256];
    char   *id;
    char   *json = malloc(size ? size : 1);

    if (json == NULL)
	return (0);
    memcpy(json, data, size);
    err[0] = 0;
    if (fetchstate_parse(json, size, &st, err, sizeof(err)) < 0) {
	if (err[0] == 0)
	    fuzz_fail("fetchstate_parse() failed without an error text");
	fetchstate_clear(&st);
	free(json);
	return (0);
    }
    fuzz_check_state(&st);
    fuzz_round_trip(&st);

    /* One round of m365-fetch's bookkeeping. */
    (void) fetchstate_pending_set(&st, "AAMkAD-fuzz=", "<x@example.com>",
				  FETCHSTATE_INJECTED, "250 2.0.0 Ok");
    fetchstate_done_add(&st, "AAMkAD-done=");
    if (st.npending > 0) {
	id = xstrdup(st.pending[0].id);		/* finish() frees its own */
	fetchstate_finish(&st, id);
	if (!fetchstate_done_has(&st, id) || fetchstate_pending_find(&st, id))
	    fuzz_fail("a finished message is not moved to the done list");
	free(id);
    }
    fetchstate_folder_set(&st, "Processed", "AQMkAD-folder=");
    (void) fetchstate_set_offline(&st, "invalid_grant", "m365ctl login x");
    fuzz_check_state(&st);
    fuzz_round_trip(&st);
    (void) fetchstate_set_online(&st);
    if (st.npending > 0) {
	id = xstrdup(st.pending[st.npending - 1].id);
	fetchstate_pending_drop(&st, id);
	if (fetchstate_pending_find(&st, id) != NULL)
	    fuzz_fail("a dropped pending id is still found");
	free(id);
    }
    fuzz_check_state(&st);
    fetchstate_clear(&st);
    free(json);
    return (0);
}
