/*
 * NAME
 *	test_inject 1
 * SUMMARY
 *	unit tests for inject.c: nothing cut short goes to the MTA
 * DESCRIPTION
 *	An envelope address that is too long for its SMTP command is never
 *	sent cut short (issue 8.6): inject_message() fails with a 4.x.x
 *	before it opens any connection, so the message stays with
 *	m365-fetch (deferred) and the MTA sees no transaction at all.  The
 *	target is 127.0.0.1 port 1, where nothing listens: a transaction
 *	that had started would fail with "cannot connect" instead.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "inject.h"
#include "log.h"
#include "strbuf.h"
#include "util.h"
#include "t.h"

static struct conf conf;
static struct inject *inj;

/* message_fd - a small message in an unlinked temporary file */

static int message_fd(void)
{
    static const char text[] = "Subject: cap\r\n\r\nbody\r\n";
    int     fd = inject_tmpfile(NULL);

    T_OK(fd >= 0);
    T_OK(fd >= 0 && write(fd, text, sizeof(text) - 1)
	 == (ssize_t) sizeof(text) - 1);
    return (fd);
}

/* check_refused - inject m: 4.x.x naming why, before any connection */

static void check_refused(const struct inject_msg *m, const char *dsn,
			          const char *why)
{
    struct inject_result res;

    T_EQ_INT(inject_message(inj, m, &res), -1);
    T_EQ_INT(res.status, INJECT_TEMP);
    T_EQ_STR(res.dsn, dsn);
    T_CONTAINS(res.reply, why);
    T_CONTAINS(res.reply, "nothing was sent");
    T_OK(strstr(res.reply, "connect") == NULL);
    T_EQ_INT(res.data_sent, 0);
    T_EQ_INT(res.bytes, 0);
}

static void test_address_past_cap(void)
{
    char   *huge = xmalloc(STRBUF_MAX_SMALL + 100);
    char   *rcpts[2];
    struct inject_msg m;
    char    err[300];

    memset(&conf, 0, sizeof(conf));
    conf.connect_timeout = 2;
    inj = inject_create(&conf, "smtp://127.0.0.1:1", err, sizeof(err));
    T_CHECK(inj != NULL, "inject_create: %s", err);
    if (inj == NULL)
	return;
    memset(huge, 'a', STRBUF_MAX_SMALL);
    snprintf(huge + STRBUF_MAX_SMALL, 100, "@example.com");

    memset(&m, 0, sizeof(m));
    m.fd = message_fd();
    m.rcpts = rcpts;
    m.nrcpts = 2;
    rcpts[0] = "ok@example.com";
    rcpts[1] = "also@example.com";

    /* The envelope sender. */
    m.sender = huge;
    check_refused(&m, "4.1.7", "envelope sender address is longer than "
		  "16384 bytes");

    /* The second recipient: not even MAIL FROM goes out. */
    m.sender = "sender@example.com";
    rcpts[1] = huge;
    check_refused(&m, "4.1.3", "recipient address 2 is longer than "
		  "16384 bytes");

    close(m.fd);
    inject_free(inj);
    free(huge);
}

int     main(void)
{
    log_open("test_inject");
    T_RUN(test_address_past_cap);
    return (T_DONE());
}
