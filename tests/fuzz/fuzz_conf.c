/*
 * NAME
 *	fuzz_conf - libFuzzer target for the m365relay.conf parser
 * SUMMARY
 *	conf_load() on a file written from the input, then the lookups
 * DESCRIPTION
 *	conf_load() reads a path, so each input is written to one file in
 *	a private directory (mkdtemp under $TMPDIR or /tmp, removed at
 *	exit).  Besides "no crash, no leak, no undefined behaviour" the
 *	target checks the documented contract: the result is NULL exactly
 *	when errors holds text, every error is a whole "file:line: ..."
 *	line, and a loaded configuration is consistent (every source has
 *	its account resolved and a deliver host/port that matches
 *	deliver_to, at most one default account).  The lookups every
 *	program makes are then run on it: conf_account_for_sender(),
 *	conf_account(), conf_source(), conf_milter_delivers().
 * DIAGNOSTICS
 *	A failed invariant prints one line to stderr, then abort().
 */
#include "config.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "fuzz.h"
#include "log.h"
#include "strbuf.h"
#include "util.h"

static char fuzz_path[4200];

/* Senders and recipients the routing lookups are asked about. */
static const char *const fuzz_addrs[] = {
    "alice@example.com", "<alerts@contoso.com>", "", "<>",
    "User@Apps.Contoso.COM", "root", "x@sub.contoso.com", 0,
};

/* fuzz_fail - report a broken invariant and crash */

static void fuzz_fail(const char *what, const struct strbuf *errors)
{
    fuzz_violated(what);
    if (errors && errors->len)
	fprintf(stderr, "fuzz_conf: errors:\n%s", errors->data);
    abort();
}

/* fuzz_check_errors - every error is "path:line: text\n" */

static void fuzz_check_errors(const struct strbuf *errors)
{
    size_t  plen = strlen(fuzz_path);
    const char *p = errors->data, *nl;

    if (errors->len == 0)
	return;
    if (p[errors->len - 1] != '\n')
	fuzz_fail("the error text does not end with a newline", errors);
    for (; *p; p = nl + 1) {
	nl = strchr(p, '\n');
	if (strncmp(p, fuzz_path, plen) != 0 || p[plen] != ':')
	    fuzz_fail("an error line does not start with the file name",
		      errors);
    }
}

/* fuzz_check_conf - consistency of a loaded configuration */

static void fuzz_check_conf(const struct conf *c)
{
    const struct conf_account *a;
    const struct conf_source *s;
    const char *const *ap;
    int     ndefault = 0;

    for (a = c->accounts; a; a = a->next) {
	if (a->name == NULL || a->tenant == NULL || a->client_id == NULL)
	    fuzz_fail("an account without name, tenant or client_id", NULL);
	if (conf_account(c, a->name) == NULL)
	    fuzz_fail("conf_account() does not find a loaded account", NULL);
	if (conf_auth_name(a->auth) == NULL)
	    fuzz_fail("conf_auth_name() gave NULL", NULL);
	ndefault += a->is_default != 0;
    }
    if (ndefault > 1)
	fuzz_fail("more than one default account was accepted", NULL);
    for (s = c->sources; s; s = s->next) {
	if (s->name == NULL || conf_source(c, s->name) != s)
	    fuzz_fail("conf_source() does not find a loaded source", NULL);
	if (s->acct == NULL)
	    fuzz_fail("a source whose account was not resolved", NULL);
	if (s->deliver_to == NULL || s->recipients == NULL
	    || s->recipients[0] == NULL)
	    fuzz_fail("a source without deliver_to or recipients", NULL);
	if ((s->deliver_host == NULL) != (s->deliver_port == 0))
	    fuzz_fail("deliver_host and deliver_port disagree", NULL);
    }
    for (ap = fuzz_addrs; *ap; ap++) {
	a = conf_account_for_sender(c, *ap);
	if (a != NULL && conf_account(c, a->name) == NULL)
	    fuzz_fail("conf_account_for_sender() gave a foreign account",
		      NULL);
	(void) conf_milter_delivers(c, *ap);
    }
    (void) conf_source(c, "no such source");
    (void) conf_account(c, "no such account");
}

/* LLVMFuzzerInitialize - scratch directory, quiet logging */

int     LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) fuzz_init("fuzz_conf", argc, argv);
    (void) fuzz_scratch("m365relay.conf", fuzz_path, sizeof(fuzz_path));
    return (0);
}

/* LLVMFuzzerTestOneInput - one configuration file */

int     LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct strbuf errors;
    struct conf *c;
    int     fd;

    if ((fd = open(fuzz_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
		   0600)) < 0
	|| file_write_all(fd, data, size) < 0 || close(fd) < 0) {
	perror(fuzz_path);
	abort();
    }
    strbuf_init(&errors, STRBUF_MAX_JSON);
    c = conf_load(fuzz_path, &errors);
    if (c == NULL && errors.len == 0)
	fuzz_fail("conf_load() failed without an error text", &errors);
    if (c != NULL && errors.len != 0)
	fuzz_fail("conf_load() succeeded but reported errors", &errors);
    fuzz_check_errors(&errors);
    if (c != NULL)
	fuzz_check_conf(c);
    conf_free(c);
    strbuf_free(&errors);
    return (0);
}
