/*
 * NAME
 *	lmtp 3h
 * SUMMARY
 *	m365-lmtpd: one LMTP session (RFC 2033) over the delivery core
 * SYNOPSIS
 *	#include "lmtp.h"
 * DESCRIPTION
 *	lmtp_session() talks LMTP on a connected socket until the client
 *	says QUIT, goes away, stays idle for LMTP_IDLE seconds or the
 *	server stops (lmtp_stop()): LHLO, XFORWARD (IDENT is the queue id
 *	of the logs), MAIL FROM (SIZE=, BODY=7BIT|8BITMIME, SMTPUTF8),
 *	RCPT TO (at most LMTP_MAX_RCPT, then 452 4.5.3: the client sends
 *	the rest in another transaction), DATA, RSET, NOOP, QUIT; replies
 *	are buffered and written when no more input is waiting
 *	(PIPELINING, RFC 2920).  DATA is dot-unstuffed into a struct msg
 *	through msg_stream_put() (msg.h): the body stays in memory up to
 *	LMTP_MEM_LIMIT and is spooled beyond, so memory does not grow with
 *	the message.  Then the message goes through deliver() (deliver.h),
 *	the core m365-relay uses: account by sender, size, send ledger,
 *	Retry-After, request slots, drafts for large messages.  One reply
 *	per accepted recipient follows, in RCPT order.
 *
 *	Per-recipient results: Graph sends a message to all its
 *	recipients or to none.  When it refuses one recipient by name
 *	(400 ErrorInvalidRecipients, "Recipient 'x' is not resolved"),
 *	nothing was sent: that recipient gets 550 5.1.1 and the message
 *	goes again to the others (lmtp_rejected_rcpt()); every other
 *	result is every remaining recipient's.
 *
 *	The queue id: XFORWARD IDENT when the client sends it (Postfix:
 *	lmtp_send_xforward_command = yes), else the "id" of the first
 *	Received: field (the one Postfix added), else "L" and 10 hex
 *	digits of SHA-256 over the sender and the header section (the same
 *	on a retry of the same message).
 *
 *	lmtp_conf_install() makes a loaded configuration the current one
 *	(the previous is freed when its last user releases it);
 *	lmtp_conf_acquire() / lmtp_conf_release() take and drop a
 *	reference: a delivery keeps the configuration it started with
 *	across a reload.  lmtp_conf_shutdown() drops the current one.
 *
 *	lmtp_pool_set() gives the sessions the server's pool of HTTPS
 *	clients (httppool.h): a delivery takes one, made from the
 *	configuration generation it runs with, and puts it back, so
 *	connections to Graph and the token endpoint stay open across
 *	messages and sessions (at most one per host per delivery in
 *	progress, the idle ones closed after idle_timeout).
 *
 *	lmtp_reply_code() is the LMTP reply code for a result: 250 for
 *	2.X.X, 452 for 4.5.3, 451 for other 4.X.X, 552 for 5.3.4, 554
 *	for 5.6.X, 550 for other 5.X.X.  lmtp_rejected_rcpt() returns the
 *	index of the recipient that a Graph refusal names ('x' or "x",
 *	compared with addr_same()), or n when it names none of them.
 * DIAGNOSTICS
 *	Protocol errors are answered (5.5.X) and counted; after
 *	LMTP_MAX_ERRORS the session ends with 421.  Nothing is logged per
 *	command; one line per recipient per delivery (deliver_log()).
 */
#ifndef M365_LMTP_H
#define M365_LMTP_H

#include <stddef.h>

#include "conf.h"
#include "http.h"
#include "status.h"

#define LMTP_MAX_RCPT	500		/* Exchange Online per message */
#define LMTP_MEM_LIMIT	(256 * 1024)	/* body bytes before spooling */
#define LMTP_IDLE	300		/* s without a command (RFC 5321) */
#define LMTP_MAX_ERRORS	20		/* bad commands before 421 */

struct lmtp_conf {
    struct conf *conf;
    unsigned long gen;			/* bumped by every install */
    int     refs;
};

struct lmtp_worker {
    const char *hostname;		/* for the greeting */
};

struct http_pool;

extern void lmtp_conf_install(struct conf *);
extern struct lmtp_conf *lmtp_conf_acquire(void);
extern void lmtp_conf_release(struct lmtp_conf *);
extern void lmtp_conf_shutdown(void);

extern void lmtp_session(int fd, struct lmtp_worker *);
extern void lmtp_pool_set(struct http_pool *);
extern void lmtp_stop(void);
extern int lmtp_stopping(void);

extern int lmtp_reply_code(const struct m365_result *);
extern size_t lmtp_rejected_rcpt(const char *text, char **rcpts, size_t n);

#endif
