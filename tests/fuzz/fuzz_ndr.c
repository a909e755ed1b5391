/*
 * NAME
 *	fuzz_ndr - libFuzzer target for the NDR reader and the DSN builder
 * SUMMARY
 *	ndr_parse() over a message read by msg_read(), dsn_build() of
 *	what it found, and ndr_parse() of that DSN again
 * DESCRIPTION
 *	The input is the message as m365-fetch downloads it (issue 12).
 *
 *	Invariants (abort() on violation):
 *	- ndr_parse() succeeds; NDR_NONE has no recipients, a report at
 *	  most NDR_MAX_RCPTS; an original Message-ID is "<...>";
 *	  ndr_action() is one of RFC 3464's and ndr_status() a code of
 *	  class 2, 4 or 5;
 *	- for a report, dsn_build() (one envelope recipient) succeeds in
 *	  16 MB and gives 7bit text: no NUL, no byte over 0x7e, CRLF line
 *	  ends only, no line over 998 bytes;
 *	- that DSN is itself a report (NDR_MACHINE) with one recipient
 *	  per recipient of the first one, each with the same Action and
 *	  Status.
 * DIAGNOSTICS
 *	A failed invariant prints one line to stderr, then abort().
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsn.h"
#include "fuzz.h"
#include "msg.h"
#include "ndr.h"
#include "strbuf.h"

static char fuzz_path[4200];
static const char *fuzz_dir;
static int fuzz_fd = -1;

/* fuzz_fail - report and crash */

static void fuzz_fail(const char *what) __attribute__((noreturn));

static void fuzz_fail(const char *what)
{
    fuzz_violated(what);
    abort();
}

/* fuzz_7bit - the DSN is 7bit with CRLF lines of at most 998 bytes */

static void fuzz_7bit(const struct strbuf *sb)
{
    size_t  i, col = 0;

    for (i = 0; i < sb->len; i++) {
	unsigned char c = (unsigned char) sb->data[i];

	if (c == 0 || c > 0x7e)
	    fuzz_fail("the DSN has a NUL or 8-bit byte");
	if (c == '\r' && (i + 1 >= sb->len || sb->data[i + 1] != '\n'))
	    fuzz_fail("the DSN has a bare CR");
	if (c == '\n' && (i == 0 || sb->data[i - 1] != '\r'))
	    fuzz_fail("the DSN has a bare LF");
	col = c == '\n' ? 0 : col + 1;
	if (col > 999)
	    fuzz_fail("the DSN has a line over 998 bytes");
    }
}

/* fuzz_check - the contracts of ndr.h and dsn.h for one report */

static void fuzz_check(const struct ndr *r)
{
    struct dsn_info in;
    struct strbuf sb;
    struct msg m;
    struct m365_result res;
    struct ndr back;
    char   *rcpts[] = {"rcpt@example.org"};
    char    err[300];
    size_t  i;

    if (r->kind == NDR_NONE) {
	if (r->nrcpts != 0)
	    fuzz_fail("not a report, but recipients");
	return;
    }
    if (r->nrcpts > NDR_MAX_RCPTS)
	fuzz_fail("more than NDR_MAX_RCPTS recipients");
    if (r->orig_message_id && (r->orig_message_id[0] != '<'
			       || strchr(r->orig_message_id, '>') == NULL))
	fuzz_fail("an original Message-ID that is not <...>");
    for (i = 0; i < r->nrcpts; i++) {
	const char *st = ndr_status(r->rcpts + i);

	if (strchr("245", st[0]) == NULL || st[1] != '.')
	    fuzz_fail("ndr_status() is not a status code");
    }
    memset(&in, 0, sizeof(in));
    in.host = "relay.example.org";
    in.from = "MAILER-DAEMON@relay.example.org";
    in.to = "sender@example.org";
    in.mailbox = "relay@example.org";
    in.queue_id = "QID";
    in.arrival = 1700000000;
    in.rcpts = rcpts;
    in.nrcpts = 1;
    in.message_id = "<dsn@relay.example.org>";
    in.now = 1700000100;
    strbuf_init(&sb, 16 * 1024 * 1024);
    if (dsn_build(r, &in, &sb) < 0)
	fuzz_fail("dsn_build() failed within 16 MB");
    fuzz_7bit(&sb);
    fuzz_input_set(fuzz_fd, fuzz_path, (const uint8_t *) sb.data, sb.len);
    strbuf_free(&sb);
    if (msg_read(&m, fuzz_fd, fuzz_dir, 0, &res) < 0)
	fuzz_fail("the DSN cannot be read back");
    if (ndr_parse(&m, &back, err, sizeof(err)) < 0)
	fuzz_fail("the DSN cannot be parsed");
    if (back.kind != NDR_MACHINE || back.nrcpts != r->nrcpts)
	fuzz_fail("the DSN is not a report of the same recipients");
    for (i = 0; i < r->nrcpts; i++)
	if (strcmp(ndr_action(back.rcpts + i), ndr_action(r->rcpts + i)) != 0
	    || strcmp(ndr_status(back.rcpts + i),
		      ndr_status(r->rcpts + i)) != 0)
	    fuzz_fail("the DSN changed an Action or Status");
    ndr_free(&back);
    msg_free(&m);
}

/* LLVMFuzzerInitialize - scratch directory and file, quiet logging */

int     LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) fuzz_init("fuzz_ndr", argc, argv);
    fuzz_dir = fuzz_scratch("input", fuzz_path, sizeof(fuzz_path));
    fuzz_fd = fuzz_input_open(fuzz_path);
    return (0);
}

/* LLVMFuzzerTestOneInput - a message */

int     LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct msg m;
    struct m365_result res;
    struct ndr r;
    char    err[300];

    fuzz_input_set(fuzz_fd, fuzz_path, data, size);
    if (msg_read(&m, fuzz_fd, fuzz_dir, 0, &res) == 0) {
	if (ndr_parse(&m, &r, err, sizeof(err)) < 0)
	    fuzz_fail("ndr_parse() failed on a message msg_read() took");
	fuzz_check(&r);
	ndr_free(&r);
    }
    msg_free(&m);
    return (0);
}
