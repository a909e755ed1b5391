/*
 * NAME
 *	fuzz_oauth - libFuzzer target for token endpoint replies
 * SUMMARY
 *	oauth_parse_token() on arbitrary reply bodies
 * DESCRIPTION
 *	The input is the body of a token endpoint reply (JSON from the
 *	identity platform, or whatever a proxy or captive portal sends).
 *	It is parsed as the answer to HTTP 200 and to HTTP 400, and to one
 *	more status picked from the input length (0, 401, 403, 429, 500,
 *	503), so success, error and transport-class paths all run.
 *
 *	Invariants (abort() on violation):
 *	- success only with HTTP 200; then access_token (and any
 *	  refresh_token) is non-empty visible ASCII, since it goes into an
 *	  Authorization header and the token store, and expires_in >= 0;
 *	- on failure no token is returned, the class is not OAUTH_OK, and
 *	  error and description are NUL-terminated printable ASCII (they
 *	  are logged and shown by m365ctl);
 *	- oauth_remedy() and oauth_class_name() give text for every error.
 * DIAGNOSTICS
 *	A failed invariant prints one line to stderr, then abort().
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "log.h"
#include "oauth.h"
#include "util.h"

static const long fuzz_status[] = {0, 401, 403, 429, 500, 503};

#define FUZZ_NSTATUS	(sizeof(fuzz_status) / sizeof(fuzz_status[0]))

/* fuzz_fail - report a broken invariant and crash */

static void fuzz_fail(const char *what, long status)
{
    fprintf(stderr, "fuzz_oauth: invariant violated (HTTP %ld): %s\n",
	    status, what);
    abort();
}

/* fuzz_visible - non-empty, bytes 0x21..0x7e only */

static int fuzz_visible(const char *s)
{
    if (s == NULL || *s == 0)
	return (0);
    for (; *s; s++)
	if ((unsigned char) *s <= 0x20 || (unsigned char) *s >= 0x7f)
	    return (0);
    return (1);
}

/* fuzz_one - parse body as the answer with the given status */

static void fuzz_one(const char *body, long status)
{
    struct oauth_token tok;
    struct oauth_error err;
    char    remedy[1024];
    const char *name;

    if (oauth_parse_token(body, status, &tok, &err) == 0) {
	if (status != 200)
	    fuzz_fail("a token was accepted from a non-200 reply", status);
	if (!fuzz_visible(tok.access_token))
	    fuzz_fail("the access token is empty or not visible ASCII",
		      status);
	if (tok.refresh_token != NULL && !fuzz_visible(tok.refresh_token))
	    fuzz_fail("the refresh token is not visible ASCII", status);
	if (tok.expires_in < 0)
	    fuzz_fail("expires_in is negative", status);
    } else {
	if (tok.access_token || tok.refresh_token || tok.scope)
	    fuzz_fail("a failed parse returned a token", status);
	if (err.cls == OAUTH_OK)
	    fuzz_fail("a failed parse has class OAUTH_OK", status);
	if (!fuzz_printable(err.error, sizeof(err.error)))
	    fuzz_fail("the error name is not printable text", status);
	if (!fuzz_printable(err.description, sizeof(err.description)))
	    fuzz_fail("the description is not printable text", status);
	if (err.description[0] == 0)
	    fuzz_fail("a failed parse without a description", status);
	remedy[0] = 0;
	oauth_remedy(&err, "fuzz", remedy, sizeof(remedy));
	if (memchr(remedy, 0, sizeof(remedy)) == NULL || remedy[0] == 0)
	    fuzz_fail("oauth_remedy() gave no text", status);
	name = oauth_class_name(err.cls);
	if (name == NULL || *name == 0)
	    fuzz_fail("oauth_class_name() gave no text", status);
    }
    oauth_token_free(&tok);
}

/* LLVMFuzzerInitialize - quiet logging, crash on out of memory */

int     LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return (fuzz_init("fuzz_oauth", argc, argv));
}

/* LLVMFuzzerTestOneInput - one reply body */

int     LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char   *body = malloc(size + 1);

    if (body == NULL)
	return (0);
    memcpy(body, data, size);
    body[size] = 0;
    fuzz_one(body, 200);
    fuzz_one(body, 400);
    fuzz_one(body, fuzz_status[size % FUZZ_NSTATUS]);
    free(body);
    return (0);
}
