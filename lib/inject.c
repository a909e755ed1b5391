/*
 * NAME
 *	inject 3
 * SUMMARY
 *	hand one message to the local MTA: SMTP client or sendmail
 * DESCRIPTION
 *	See inject.h.
 *
 *	SMTP is spoken here, not by libcurl: libcurl's SMTP client sends
 *	"MAIL FROM:<address>" with SIZE=, AUTH= and (for UTF-8 addresses
 *	only) SMTPUTF8, and no option adds another parameter - the
 *	address is always closed with ">" after whatever was passed - so
 *	it cannot declare BODY=8BITMIME (RFC 6152) or SMTPUTF8 for a
 *	UTF-8 header (RFC 6531/6532).  The client is small on purpose:
 *	one MTA on a local network, no TLS, no AUTH, no pipelining; the
 *	timeouts are those of RFC 5321 section 4.5.3.2.
 *
 *	A 5xx reply that cannot be about the message (to the greeting,
 *	EHLO/HELO, or 530: the MTA wants TLS or AUTH first) is INJECT_TEMP:
 *	the MTA is unusable, the message must stay where it is.  A 4xx
 *	reply to the end of the data is a definite refusal, so data_sent
 *	is cleared (no "maybe a duplicate" on the retry).  After any
 *	failure the connection is closed (QUIT) and the next message
 *	opens a new one; a kept connection that the MTA closed meanwhile
 *	(idle timeout) is noticed before MAIL FROM and replaced once.
 *
 *	sendmail never reads from a pipe: the whole message (trace fields,
 *	LF line ends) is first written to an unlinked temporary file, the
 *	state hook runs, and only then is sendmail started with that file
 *	as its standard input.  sendmail -i takes the end of its input as
 *	the end of the message, so a pipe that closes early (m365-fetch
 *	killed half-way) would queue a truncated message; a file that is
 *	complete before sendmail starts cannot be shortened by anything
 *	that happens to m365-fetch afterwards.  The child runs in its own
 *	process group (a SIGINT or SIGTERM meant for m365-fetch does not
 *	stop it half-way); its output goes to another unlinked temporary
 *	file.  The caller ignores SIGPIPE (m365-fetch does).
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include "addr.h"
#include "inject.h"
#include "log.h"
#include "util.h"

#define INJECT_BUF		65536
#define INJECT_LINE		2048	/* longest reply line kept */
#define INJECT_GREET_WAIT	300	/* RFC 5321 4.5.3.2.1-2: 5 minutes */
#define INJECT_CMD_WAIT		300	/* MAIL, RCPT: 5 minutes */
#define INJECT_DATA_WAIT	120	/* DATA: 2 minutes */
#define INJECT_BLOCK_WAIT	180	/* a data block: 3 minutes */
#define INJECT_RESPONSE_WAIT	600	/* end of data: 10 minutes */
#define INJECT_QUIT_WAIT	5

enum inject_stage {
    STAGE_CONNECT = 0, STAGE_MAIL, STAGE_RCPT, STAGE_DATA, STAGE_DATA_END,
};

struct inject {
    const struct conf *conf;
    int     sendmail;			/* 1: run conf->sendmail_path */
    char   *host;			/* for relay=, without brackets */
    char    port[8];
    char   *sendmail_path;
    char    helo[256];
    int     fd;				/* SMTP connection, or -1 */
    char    relay[200];			/* host[ip]:port of fd */
    int     ext_8bitmime;		/* EHLO keywords of fd's MTA */
    int     ext_smtputf8;
    int     ext_size;
    char    in[INJECT_BUF];		/* unread input from fd */
    size_t  inlen;
    enum inject_step step;		/* how far inject_open() got */
    int     err;			/* errno of the last failure on fd
					 * (ETIMEDOUT: no answer in time) */
    char    greeting[400];		/* last line of fd's greeting */
};

/* One SMTP reply: its code and last line (printable). */
struct inject_reply {
    int     code;			/* 0: no reply (res->reply says why) */
    char    text[400];
};

/* What the message needs from the MTA, from one pass over it. */
struct inject_info {
    int     eight_bit;			/* a byte >= 0x80 anywhere */
    int     utf8_header;		/* header (or an address) is UTF-8 */
    long long size;			/* bytes as sent over SMTP, about */
};

/* One message being read: prefix, then the file; line ends converted. */
struct inject_reader {
    const char *prefix;
    size_t  prefix_len;
    size_t  prefix_off;
    int     fd;
    char   *ibuf;
    size_t  ilen;
    size_t  ipos;
    int     in_eof;
    int     err;			/* errno of a failed read */
    int     crlf;			/* 1: CRLF out (SMTP), 0: LF (sendmail) */
    int     last_cr;
    int     pending_cr;
    long long bytes;
    const struct inject_msg *msg;
    int     data_end_done;		/* data_end called and succeeded */
    int     data_end_failed;
};

static void inject_close(struct inject *, int);

/* inject_status_name - for logs */

const char *inject_status_name(enum inject_status s)
{
    switch (s) {
    case INJECT_OK:
	return ("sent");
    case INJECT_TEMP:
    case INJECT_RCPT:
    case INJECT_NOEXT:
	return ("deferred");
    case INJECT_PERM:
    default:
	return ("bounced");
    }
}

/* inject_helo_name - this host's name for EHLO, or "localhost" */

static void inject_helo_name(char *buf, size_t len)
{
    if (gethostname(buf, len) < 0 || buf[0] == 0
	|| strspn(buf, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		  "0123456789.-") != strlen(buf))
	snprintf(buf, len, "localhost");
    buf[len - 1] = 0;
}

/*
 * inject_create - a delivery target for deliver_to, as conf_load()
 * parsed it (conf_parse_deliver(): the one parser)
 */
struct inject *inject_create(const struct conf *conf, const char *deliver_to,
			             char *err, size_t errlen)
{
    struct inject *inj;
    char   *host;
    long    port;

    if (deliver_to == NULL || *deliver_to == 0) {
	snprintf(err, errlen, "deliver_to is not set");
	return (NULL);
    }
    if (conf_parse_deliver(deliver_to, &host, &port, err, errlen) < 0)
	return (NULL);
    inj = xcalloc(1, sizeof(*inj));
    inj->conf = conf;
    inj->fd = -1;
    if (host == NULL) {				/* sendmail */
	inj->sendmail = 1;
	inj->sendmail_path = xstrdup(conf->sendmail_path && *conf->sendmail_path ?
				     conf->sendmail_path : "/usr/sbin/sendmail");
	inj->host = xstrdup(inj->sendmail_path);
	return (inj);
    }
    inj->host = host;
    snprintf(inj->port, sizeof(inj->port), "%ld", port);
    snprintf(inj->relay, sizeof(inj->relay), "%s[%s]:%s", host, host,
	     inj->port);
    inject_helo_name(inj->helo, sizeof(inj->helo));
    return (inj);
}

/* inject_free - close the connection (QUIT), release; NULL is ok */

void    inject_free(struct inject *inj)
{
    if (inj == NULL)
	return;
    inject_close(inj, 1);
    free(inj->host);
    free(inj->sendmail_path);
    free(inj);
}

/* inject_peek - the next input byte, -1 at the end, -2 on error */

static int inject_peek(struct inject_reader *r)
{
    ssize_t n;

    if (r->prefix_off < r->prefix_len)
	return ((unsigned char) r->prefix[r->prefix_off]);
    if (r->ipos < r->ilen)
	return ((unsigned char) r->ibuf[r->ipos]);
    if (r->in_eof || r->err)
	return (r->err ? -2 : -1);
    for (;;) {
	n = read(r->fd, r->ibuf, INJECT_BUF);
	if (n < 0 && errno == EINTR)
	    continue;
	break;
    }
    if (n < 0) {
	r->err = errno;
	return (-2);
    }
    r->ipos = 0;
    r->ilen = (size_t) n;
    if (n == 0) {
	r->in_eof = 1;
	return (-1);
    }
    return ((unsigned char) r->ibuf[0]);
}

/* inject_consume - move past the byte inject_peek() returned */

static void inject_consume(struct inject_reader *r)
{
    if (r->prefix_off < r->prefix_len)
	r->prefix_off++;
    else
	r->ipos++;
}

/*
 * inject_reader_init - read m from m->start, after the prefix; a failed
 * seek shows as r->err.  free(r->ibuf) afterwards.
 */
static void inject_reader_init(struct inject_reader *r,
			               const struct inject_msg *m, int crlf)
{
    memset(r, 0, sizeof(*r));
    r->prefix = m->prefix ? m->prefix : "";
    r->prefix_len = strlen(r->prefix);
    r->fd = m->fd;
    r->ibuf = xmalloc(INJECT_BUF);
    r->crlf = crlf;
    r->msg = m;
    if (lseek(m->fd, m->start, SEEK_SET) < 0)
	r->err = errno;
}

/*
 * inject_fill - up to max converted bytes; 0 at the end, -1 on a read
 * error.  CRLF mode turns a bare LF into CRLF; LF mode turns CRLF into
 * LF (a lone CR stays).
 */
static ssize_t inject_fill(struct inject_reader *r, char *out, size_t max)
{
    size_t  n = 0;
    int     c;

    while (n + 2 <= max) {
	if ((c = inject_peek(r)) == -2)
	    return (-1);
	if (c == -1) {
	    if (r->pending_cr) {
		out[n++] = '\r';
		r->pending_cr = 0;
	    }
	    break;
	}
	if (r->crlf) {
	    if (c == '\n' && !r->last_cr)
		out[n++] = '\r';
	    out[n++] = (char) c;
	    r->last_cr = (c == '\r');
	    inject_consume(r);
	    continue;
	}
	if (r->pending_cr) {
	    r->pending_cr = 0;
	    if (c == '\n') {
		out[n++] = '\n';
		inject_consume(r);
	    } else {
		out[n++] = '\r';
	    }
	    continue;
	}
	inject_consume(r);
	if (c == '\r')
	    r->pending_cr = 1;
	else
	    out[n++] = (char) c;
    }
    r->bytes += (long long) n;
    return ((ssize_t) n);
}

/* inject_data_end - call the caller's hook once; 0 to go on */

static int inject_data_end(struct inject_reader *r)
{
    if (r->data_end_done)
	return (0);
    if (r->msg->data_end && r->msg->data_end(r->msg->data_end_arg) != 0) {
	r->data_end_failed = 1;
	return (-1);
    }
    r->data_end_done = 1;
    return (0);
}

/* inject_utf8 - validate UTF-8 across calls; 0 once something is bad */

static int inject_utf8(int *want, int c)
{
    if (*want > 0) {
	if ((c & 0xC0) != 0x80)
	    return (0);
	(*want)--;
	return (1);
    }
    if (c < 0x80)
	return (1);
    if (c >= 0xC2 && c <= 0xDF)
	*want = 1;
    else if (c >= 0xE0 && c <= 0xEF)
	*want = 2;
    else if (c >= 0xF0 && c <= 0xF4)
	*want = 3;
    else
	return (0);
    return (1);
}

/* inject_ascii - no byte >= 0x80 in s (NULL is ASCII) */

static int inject_ascii(const char *s)
{
    for (; s && *s; s++)
	if ((unsigned char) *s >= 0x80)
	    return (0);
    return (1);
}

/*
 * inject_scan - one pass over the message as it will be sent: 8-bit
 * bytes anywhere (RFC 6152 BODY=8BITMIME), a header that is UTF-8 with
 * non-ASCII bytes, or a non-ASCII envelope address (RFC 6531/6532
 * SMTPUTF8), and the size (RFC 1870).  -1 on a read error (errno).
 */
static int inject_scan(const struct inject_msg *m, struct inject_info *info)
{
    struct inject_reader r;
    char   *buf = xmalloc(INJECT_BUF);
    ssize_t n, i;
    int     c, in_header = 1, line_len = 0, want = 0, hdr_ok = 1;
    int     hdr_8bit = 0;
    size_t  k;

    memset(info, 0, sizeof(*info));
    inject_reader_init(&r, m, 1);
    while ((n = inject_fill(&r, buf, INJECT_BUF)) > 0) {
	info->size += n;
	for (i = 0; i < n; i++) {
	    c = (unsigned char) buf[i];
	    if (c >= 0x80)
		info->eight_bit = 1;
	    if (!in_header)
		continue;
	    if (c == '\n') {
		/* CRLF mode: "\r\n" alone is the blank line. */
		if (line_len <= 1)
		    in_header = 0;
		line_len = 0;
		continue;
	    }
	    line_len++;
	    if (c >= 0x80)
		hdr_8bit = 1;
	    if (hdr_ok && !inject_utf8(&want, c))
		hdr_ok = 0;
	}
    }
    free(buf);
    free(r.ibuf);
    if (n < 0) {
	errno = r.err;
	return (-1);
    }
    info->utf8_header = (hdr_8bit && hdr_ok && want == 0);
    if (!inject_ascii(m->sender))
	info->utf8_header = 1;
    for (k = 0; k < m->nrcpts; k++)
	if (!inject_ascii(m->rcpts[k]))
	    info->utf8_header = 1;
    return (0);
}

/* inject_fail - fill res: status, enhanced code, reply text */

static void inject_fail(struct inject_result *res, enum inject_status status,
			        const char *dsn, const char *fmt,...)
    __attribute__((format(printf, 4, 5)));

static void inject_fail(struct inject_result *res, enum inject_status status,
			        const char *dsn, const char *fmt,...)
{
    va_list ap;

    res->status = status;
    snprintf(res->dsn, sizeof(res->dsn), "%s", dsn);
    va_start(ap, fmt);
    vsnprintf(res->reply, sizeof(res->reply), fmt, ap);
    va_end(ap);
}

/* inject_dsn - the enhanced status code in a reply, or the default */

static void inject_dsn(char *dsn, size_t len, const char *reply, int cls,
		               const char *def)
{
    const char *p = reply;
    size_t  a, b, c;

    /* "250 2.0.0 text" or "250-2.0.0 text": skip the code. */
    while (*p && isdigit((unsigned char) *p))
	p++;
    if (*p == ' ' || *p == '-')
	p++;
    if (*p - '0' == cls && p[1] == '.') {
	a = 1;
	b = strspn(p + 2, "0123456789");
	c = (b > 0 && b <= 3 && p[2 + b] == '.') ?
	    strspn(p + 3 + b, "0123456789") : 0;
	if (b > 0 && b <= 3 && c > 0 && c <= 3
	    && (p[3 + b + c] == 0 || p[3 + b + c] == ' ')) {
	    snprintf(dsn, len, "%.*s", (int) (a + 1 + b + 1 + c), p);
	    return;
	}
    }
    snprintf(dsn, len, "%s", def);
}

/* inject_address - "<addr>", local part quoted if needed; NULL: too long */

static char *inject_address(const char *addr)
{
    struct strbuf sb;
    char   *q;

    strbuf_init(&sb, STRBUF_MAX_SMALL);
    if (addr == NULL || *addr == 0 || strcmp(addr, "<>") == 0) {
	strbuf_puts(&sb, "<>");
	return (strbuf_take(&sb));
    }
    q = addr_quote(addr);
    strbuf_printf(&sb, "<%s>", q);
    free(q);
    return (strbuf_take(&sb));
}

/* inject_addresses_free - the first n of inject_addresses(), the array */

static void inject_addresses_free(char **a, size_t n)
{
    while (a != NULL && n > 0)
	free(a[--n]);
    free(a);
}

/*
 * inject_addresses - "<sender>", then "<rcpt>" for each recipient;
 * NULL (res set) when one is too long to be sent whole: then nothing
 * is sent at all, not even MAIL FROM.
 */
static char **inject_addresses(const struct inject_msg *m,
			               struct inject_result *res)
{
    char  **a = xcalloc(m->nrcpts + 1, sizeof(*a));
    size_t  i;

    for (i = 0; i <= m->nrcpts; i++) {
	if ((a[i] = inject_address(i ? m->rcpts[i - 1] : m->sender)) != NULL)
	    continue;
	if (i == 0)
	    inject_fail(res, INJECT_TEMP, "4.1.7", "the envelope sender "
			"address is longer than %lu bytes; nothing was sent",
			(unsigned long) STRBUF_MAX_SMALL);
	else
	    inject_fail(res, INJECT_TEMP, "4.1.3", "recipient address %lu "
			"is longer than %lu bytes; nothing was sent",
			(unsigned long) i, (unsigned long) STRBUF_MAX_SMALL);
	inject_addresses_free(a, i);
	return (NULL);
    }
    return (a);
}

/* inject_wait - poll fd for events up to secs; 1 ready, 0 timeout, -1 */

static int inject_wait(int fd, short events, int secs)
{
    struct pollfd pfd;
    double  deadline = time_mono() + secs;
    double  left;
    int     n;

    for (;;) {
	pfd.fd = fd;
	pfd.events = events;
	pfd.revents = 0;
	left = deadline - time_mono();
	if (left < 0)
	    left = 0;
	n = poll(&pfd, 1, (int) (left * 1000) + 1);
	if (n < 0 && errno == EINTR)
	    continue;
	if (n < 0)
	    return (-1);
	if (n == 0 && time_mono() < deadline)
	    continue;
	return (n);
    }
}

/* inject_close - end the SMTP session (QUIT when asked), forget it */

static void inject_close(struct inject *inj, int quit)
{
    char    line[INJECT_LINE];

    if (inj->fd < 0)
	return;
    if (quit && send(inj->fd, "QUIT\r\n", 6, MSG_NOSIGNAL) == 6
	&& inject_wait(inj->fd, POLLIN, INJECT_QUIT_WAIT) > 0)
	(void) recv(inj->fd, line, sizeof(line), 0);
    close(inj->fd);
    inj->fd = -1;
    inj->inlen = 0;
    inj->ext_8bitmime = inj->ext_smtputf8 = inj->ext_size = 0;
}

/* inject_send - write all of buf within secs per block; 0 or -1 (errno) */

static int inject_send(struct inject *inj, const char *buf, size_t len,
		               int secs)
{
    ssize_t n;
    int     w;

    while (len > 0) {
	n = send(inj->fd, buf, len, MSG_NOSIGNAL);
	if (n > 0) {
	    buf += n;
	    len -= (size_t) n;
	    continue;
	}
	if (n < 0 && errno == EINTR)
	    continue;
	if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
	    return (-1);
	if ((w = inject_wait(inj->fd, POLLOUT, secs)) <= 0) {
	    if (w == 0)
		errno = ETIMEDOUT;
	    return (-1);
	}
    }
    return (0);
}

/*
 * inject_line - the next line from the MTA, without CR LF, cut to len;
 * 0, or -1 with why filled (timeout, lost connection).
 */
static int inject_line(struct inject *inj, char *line, size_t len, int secs,
		               char *why, size_t whylen)
{
    char   *nl;
    size_t  k;
    ssize_t n;
    int     w;

    for (;;) {
	if ((nl = memchr(inj->in, '\n', inj->inlen)) != NULL
	    || inj->inlen == sizeof(inj->in)) {
	    k = nl ? (size_t) (nl - inj->in) : inj->inlen;
	    if (k > 0 && inj->in[k - 1] == '\r')
		k--;
	    log_printable(line, len, inj->in, k);
	    k = nl ? (size_t) (nl - inj->in) + 1 : inj->inlen;
	    memmove(inj->in, inj->in + k, inj->inlen - k);
	    inj->inlen -= k;
	    return (0);
	}
	n = recv(inj->fd, inj->in + inj->inlen, sizeof(inj->in) - inj->inlen, 0);
	if (n > 0) {
	    inj->inlen += (size_t) n;
	    continue;
	}
	if (n == 0) {
	    inj->err = 0;
	    snprintf(why, whylen, "lost connection with %s", inj->relay);
	    return (-1);
	}
	if (errno == EINTR)
	    continue;
	if (errno != EAGAIN && errno != EWOULDBLOCK) {
	    inj->err = errno;
	    snprintf(why, whylen, "lost connection with %s: %s", inj->relay,
		     strerror(errno));
	    return (-1);
	}
	if ((w = inject_wait(inj->fd, POLLIN, secs)) <= 0) {
	    inj->err = w == 0 ? ETIMEDOUT : errno;
	    snprintf(why, whylen, "%s with %s: %s", w == 0 ? "timeout "
		     "waiting for the reply" : "poll", inj->relay,
		     w == 0 ? "no answer" : strerror(inj->err));
	    return (-1);
	}
    }
}

/*
 * inject_reply - one complete reply (every line of a multi-line one);
 * rp->code and rp->text (the last line) are set; with ehlo the
 * extension keywords are noted.  0, or -1 with rp->text saying why.
 */
static int inject_reply(struct inject *inj, int secs, int ehlo,
			        struct inject_reply *rp)
{
    char    line[INJECT_LINE];
    const char *kw;
    int     first = 1;

    rp->code = 0;
    rp->text[0] = 0;
    for (;;) {
	if (inject_line(inj, line, sizeof(line), secs, rp->text,
			sizeof(rp->text)) < 0)
	    return (-1);
	if (!isdigit((unsigned char) line[0]) || !isdigit((unsigned char) line[1])
	    || !isdigit((unsigned char) line[2])
	    || (line[3] != 0 && line[3] != ' ' && line[3] != '-')
	    || line[0] < '2' || line[0] > '5') {
	    snprintf(rp->text, sizeof(rp->text), "malformed reply from %.150s: "
		     "%.200s", inj->relay, line);
	    return (-1);
	}
	if (first)
	    rp->code = (line[0] - '0') * 100 + (line[1] - '0') * 10
		+ (line[2] - '0');
	first = 0;
	snprintf(rp->text, sizeof(rp->text), "%.399s", line);
	if (ehlo && line[3] != 0) {
	    kw = line + 4;
	    if (strncasecmp(kw, "8BITMIME", 8) == 0 && (kw[8] == 0 || kw[8] == ' '))
		inj->ext_8bitmime = 1;
	    else if (strncasecmp(kw, "SMTPUTF8", 8) == 0
		     && (kw[8] == 0 || kw[8] == ' '))
		inj->ext_smtputf8 = 1;
	    else if (strncasecmp(kw, "SIZE", 4) == 0
		     && (kw[4] == 0 || kw[4] == ' '))
		inj->ext_size = 1;
	}
	if (line[3] != '-')
	    return (0);
    }
}

/* inject_command - send one command line, read its reply; 0 or -1 */

static int inject_command(struct inject *inj, int secs, int ehlo,
			          struct inject_reply *rp, const char *fmt,...)
    __attribute__((format(printf, 5, 6)));

static int inject_command(struct inject *inj, int secs, int ehlo,
			          struct inject_reply *rp, const char *fmt,...)
{
    struct strbuf cmd;
    va_list ap;
    int     rc;

    strbuf_init(&cmd, STRBUF_MAX_LINE);
    va_start(ap, fmt);
    rc = strbuf_vprintf(&cmd, fmt, ap);
    va_end(ap);
    if (rc == 0)
	rc = strbuf_puts(&cmd, "\r\n");
    if (rc < 0) {
	strbuf_free(&cmd);
	rp->code = 0;
	snprintf(rp->text, sizeof(rp->text), "SMTP command too long");
	return (-1);
    }
    if (inject_send(inj, cmd.data, cmd.len, secs) < 0) {
	strbuf_free(&cmd);
	rp->code = 0;
	snprintf(rp->text, sizeof(rp->text), "lost connection with %s: %s",
		 inj->relay, strerror(errno));
	return (-1);
    }
    strbuf_free(&cmd);
    return (inject_reply(inj, secs, ehlo, rp));
}

/*
 * inject_connect_addr - non-blocking connect within secs; fd or -1.
 * TCP_NODELAY: the final "." goes out in a write of its own after the
 * data_end hook; with Nagle it waited for the ACK of the data, which
 * the MTA delays (about 40 ms per message on Linux).
 */
static int inject_connect_addr(const struct addrinfo *ai, int secs)
{
    socklen_t len = sizeof(int);
    int     fd, err = 0, w, one = 1;

    if ((fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC
		     | SOCK_NONBLOCK, ai->ai_protocol)) < 0)
	return (-1);
    (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
	return (fd);
    if (errno != EINPROGRESS) {
	err = errno;
	close(fd);
	errno = err;
	return (-1);
    }
    if ((w = inject_wait(fd, POLLOUT, secs)) <= 0) {
	close(fd);
	errno = w == 0 ? ETIMEDOUT : errno;
	return (-1);
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
	close(fd);
	errno = err ? err : EIO;
	return (-1);
    }
    return (fd);
}

/*
 * inject_open - connect (within secs), greeting and EHLO (HELO when
 * EHLO is refused; each reply within wait seconds).  0, or -1 with res
 * filled (always INJECT_TEMP: not about a message).  inj->step tells
 * how far it got, inj->err the errno of a failed step.
 */
static int inject_open(struct inject *inj, int secs, int wait,
		               struct inject_result *res)
{
    struct addrinfo hints, *ais = NULL, *ai;
    struct inject_reply rp;
    char    ip[64], dsn[12];
    int     rc, err = 0;

    inj->step = INJECT_STEP_RESOLVE;
    inj->err = 0;
    inj->greeting[0] = 0;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(inj->relay, sizeof(inj->relay), "%s[%s]:%s", inj->host,
	     inj->host, inj->port);
    if ((rc = getaddrinfo(inj->host, inj->port, &hints, &ais)) != 0) {
	inject_fail(res, INJECT_TEMP, "4.4.4", "cannot find the address of "
		    "%s: %s", inj->host, gai_strerror(rc));
	return (-1);
    }
    inj->step = INJECT_STEP_CONNECT;
    for (ai = ais; ai; ai = ai->ai_next) {
	if ((inj->fd = inject_connect_addr(ai, secs)) >= 0)
	    break;
	err = errno;
    }
    if (inj->fd >= 0 && getnameinfo(ai->ai_addr, ai->ai_addrlen, ip, sizeof(ip),
				   NULL, 0, NI_NUMERICHOST) == 0)
	snprintf(inj->relay, sizeof(inj->relay), "%s[%s]:%s", inj->host, ip,
		 inj->port);
    freeaddrinfo(ais);
    if (inj->fd < 0) {
	inj->err = err ? err : ECONNREFUSED;
	inject_fail(res, INJECT_TEMP, "4.4.1", "connect to %s: %s",
		    inj->relay, strerror(inj->err));
	return (-1);
    }
    inj->step = INJECT_STEP_GREETING;
    inj->inlen = 0;
    inj->ext_8bitmime = inj->ext_smtputf8 = inj->ext_size = 0;
    rc = inject_reply(inj, wait, 0, &rp);
    snprintf(inj->greeting, sizeof(inj->greeting), "%s", rp.text);
    if (rc < 0 || rp.code != 220) {
	inject_dsn(dsn, sizeof(dsn), rp.text, 4, "4.4.2");
	inject_fail(res, INJECT_TEMP, dsn, "%s", rp.text[0] ? rp.text :
		    "no greeting");
	res->code = rp.code;
	inject_close(inj, rp.code != 0);
	return (-1);
    }
    inj->step = INJECT_STEP_HELLO;
    if (inject_command(inj, wait, 1, &rp, "EHLO %s", inj->helo) == 0
	&& rp.code / 100 != 2 && rp.code != 421)
	(void) inject_command(inj, wait, 0, &rp, "HELO %s", inj->helo);
    if (rp.code / 100 != 2) {
	inject_dsn(dsn, sizeof(dsn), rp.text, 4, "4.4.2");
	inject_fail(res, INJECT_TEMP, dsn, "%s", rp.text);
	res->code = rp.code;
	inject_close(inj, rp.code != 0);
	return (-1);
    }
    inj->step = INJECT_STEP_READY;
    return (0);
}

/*
 * inject_alive - a kept connection is usable: nothing is waiting to be
 * read (an idle MTA closes with EOF or a 421 first).
 */
static int inject_alive(struct inject *inj)
{
    struct pollfd pfd;

    if (inj->fd < 0)
	return (0);
    pfd.fd = inj->fd;
    pfd.events = POLLIN;
    pfd.revents = 0;
    return (inj->inlen == 0 && poll(&pfd, 1, 0) == 0);
}

/*
 * inject_classify - a refusal: res from the reply to the command of
 * stage (see inject.h for the rules).
 */
static void inject_classify(struct inject_result *res,
			            const struct inject_reply *rp,
			            enum inject_stage stage)
{
    res->code = rp->code;
    snprintf(res->reply, sizeof(res->reply), "%s", rp->text);
    if (rp->code >= 500) {
	inject_dsn(res->dsn, sizeof(res->dsn), rp->text, 5, "5.0.0");
	if (rp->code == 530)
	    /* TLS or AUTH demanded: the MTA's setup, not this message. */
	    res->status = INJECT_TEMP;
	else if (stage == STAGE_RCPT && strncmp(res->dsn, "5.1.", 4) == 0
		 && strcmp(res->dsn, "5.1.7") != 0
		 && strcmp(res->dsn, "5.1.8") != 0)
	    res->status = INJECT_RCPT;
	else
	    res->status = INJECT_PERM;
    } else {
	res->status = INJECT_TEMP;
	inject_dsn(res->dsn, sizeof(res->dsn), rp->text, 4, "4.0.0");
    }
}

/*
 * inject_data - the message after DATA's 354: dot-stuffed, CRLF, then
 * data_end, then the final ".".  0, or -1 with res filled.
 */
static int inject_data(struct inject *inj, struct inject_reader *r,
		               struct inject_result *res)
{
    char   *ibuf = xmalloc(INJECT_BUF);
    char   *obuf = xmalloc(2 * INJECT_BUF + 8);
    ssize_t n, i;
    size_t  o = 0;
    int     bol = 1, rc = -1;

    while ((n = inject_fill(r, ibuf, INJECT_BUF)) > 0) {
	for (i = 0; i < n; i++) {
	    if (bol && ibuf[i] == '.')
		obuf[o++] = '.';		/* RFC 5321 4.5.2 */
	    obuf[o++] = ibuf[i];
	    bol = (ibuf[i] == '\n');
	}
	if (inject_send(inj, obuf, o, INJECT_BLOCK_WAIT) < 0)
	    goto lost;
	o = 0;
    }
    if (n < 0) {
	inject_fail(res, INJECT_TEMP, "4.3.0", "cannot read the spooled "
		    "message: %s", strerror(r->err));
	goto out;
    }
    if (!bol && inject_send(inj, "\r\n", 2, INJECT_BLOCK_WAIT) < 0)
	goto lost;
    if (inject_data_end(r) < 0) {
	inject_fail(res, INJECT_TEMP, "4.3.0", "transaction abandoned before "
		    "the end of the data: the delivery state could not be "
		    "recorded");
	goto out;
    }
    if (inject_send(inj, ".\r\n", 3, INJECT_BLOCK_WAIT) < 0)
	goto lost;
    rc = 0;
    goto out;

lost:
    inject_fail(res, INJECT_TEMP, "4.4.2", "lost connection with %s while "
		"sending the message: %s", inj->relay, strerror(errno));
out:
    free(ibuf);
    free(obuf);
    return (rc);
}

/* inject_smtp - one SMTP transaction on the (kept or new) connection */

static int inject_smtp(struct inject *inj, const struct inject_msg *m,
		               struct inject_result *res)
{
    struct inject_reader r;
    struct inject_reply rp;
    struct inject_info info;
    struct strbuf params;
    char  **addr;			/* "<sender>", "<rcpt>"... */
    size_t  i;
    int     attempt, reused, ok = 0, in_data = 0, refused_at_end = 0;

    if (inject_scan(m, &info) < 0) {
	snprintf(res->relay, sizeof(res->relay), "%s", inj->relay);
	inject_fail(res, INJECT_TEMP, "4.3.0", "cannot read the spooled "
		    "message: %s", strerror(errno));
	return (-1);
    }
    strbuf_init(&params, STRBUF_MAX_SMALL);
    inject_reader_init(&r, m, 1);
    if ((addr = inject_addresses(m, res)) == NULL)
	goto done;

    for (attempt = 0; attempt < 2; attempt++) {
	if (inj->fd >= 0 && !inject_alive(inj))
	    inject_close(inj, 0);
	reused = (inj->fd >= 0);
	if (!reused && inject_open(inj, inj->conf->connect_timeout > 0 ?
				   (int) inj->conf->connect_timeout : 15,
				   INJECT_GREET_WAIT, res) < 0)
	    goto done;
	if (info.eight_bit && !inj->ext_8bitmime) {
	    /* RFC 6152 section 3: no 8-bit data to a 7-bit MTA. */
	    inject_fail(res, INJECT_NOEXT, "4.3.0", "the message contains "
			"8-bit data, and the MTA at %s does not offer "
			"8BITMIME (RFC 6152)", inj->relay);
	    goto done;
	}
	strbuf_reset(&params);
	if (info.eight_bit)
	    strbuf_puts(&params, " BODY=8BITMIME");
	if (info.utf8_header && inj->ext_smtputf8)
	    strbuf_puts(&params, " SMTPUTF8");
	if (inj->ext_size && info.size > 0)
	    strbuf_printf(&params, " SIZE=%lld", info.size);
	if (inject_command(inj, INJECT_CMD_WAIT, 0, &rp, "MAIL FROM:%s%s",
			   addr[0], strbuf_str(&params)) == 0)
	    break;
	/* A kept connection that died meanwhile: once more, afresh. */
	inject_close(inj, 0);
	if (!reused || attempt > 0) {
	    inject_fail(res, INJECT_TEMP, "4.4.2", "%s", rp.text);
	    goto done;
	}
    }
    if (rp.code / 100 != 2) {
	inject_classify(res, &rp, STAGE_MAIL);
	goto fail;
    }
    for (i = 1; i <= m->nrcpts; i++) {
	if (inject_command(inj, INJECT_CMD_WAIT, 0, &rp, "RCPT TO:%s",
			   addr[i]) < 0) {
	    inject_fail(res, INJECT_TEMP, "4.4.2", "%s", rp.text);
	    goto fail;
	}
	if (rp.code / 100 != 2) {
	    inject_classify(res, &rp, STAGE_RCPT);
	    goto fail;
	}
    }
    if (inject_command(inj, INJECT_DATA_WAIT, 0, &rp, "DATA") < 0) {
	inject_fail(res, INJECT_TEMP, "4.4.2", "%s", rp.text);
	goto fail;
    }
    if (rp.code != 354) {
	if (rp.code / 100 == 2)
	    rp.code = 554;			/* no data phase: never "sent" */
	inject_classify(res, &rp, STAGE_DATA);
	goto fail;
    }
    in_data = 1;
    if (inject_data(inj, &r, res) < 0)
	goto fail;
    if (inject_reply(inj, INJECT_RESPONSE_WAIT, 0, &rp) < 0) {
	/* The end of the data went out: the MTA may have the message. */
	inject_fail(res, INJECT_TEMP, "4.4.2", "connection lost after the end "
		    "of the data, the MTA may have the message: %s", rp.text);
	goto fail;
    }
    in_data = 0;
    res->code = rp.code;
    if (rp.code / 100 == 2) {
	res->status = INJECT_OK;
	snprintf(res->reply, sizeof(res->reply), "%s", rp.text);
	inject_dsn(res->dsn, sizeof(res->dsn), rp.text, 2, "2.0.0");
	ok = 1;
	goto done;
    }
    /* A 4xx or 5xx to the end of the data is a definite "not taken". */
    refused_at_end = 1;
    inject_classify(res, &rp, STAGE_DATA_END);

fail:
    /* In the data phase without its reply: just hang up, no "QUIT" text. */
    inject_close(inj, !in_data);
done:
    snprintf(res->relay, sizeof(res->relay), "%s", inj->relay);
    res->bytes = r.bytes;
    res->data_sent = r.data_end_done && !refused_at_end;
    if (!ok && res->status == INJECT_OK)
	res->status = INJECT_TEMP;
    free(r.ibuf);
    inject_addresses_free(addr, m->nrcpts + 1);
    strbuf_free(&params);
    return (ok ? 0 : -1);
}

/* inject_tmpfile - an unlinked temporary file in dir ($TMPDIR, /tmp) */

int     inject_tmpfile(const char *dir)
{
    char    path[4096];
    int     fd;

    dir = file_tmpdir(dir);
    if (snprintf(path, sizeof(path), "%s/m365-fetch.XXXXXX", dir)
	>= (int) sizeof(path)) {
	errno = ENAMETOOLONG;
	return (-1);
    }
    if ((fd = mkostemp(path, O_CLOEXEC)) < 0)
	return (-1);
    (void) unlink(path);
    return (fd);
}

/* inject_first_line - the first output line of sendmail, printable */

static void inject_first_line(int fd, char *buf, size_t len)
{
    char    tmp[400];
    ssize_t n;
    size_t  k;

    buf[0] = 0;
    if (fd < 0 || (n = pread(fd, tmp, sizeof(tmp) - 1, 0)) <= 0)
	return;
    tmp[n] = 0;
    k = strcspn(tmp, "\r\n");
    log_printable(buf, len, tmp, k);
}

/* inject_argv_free - release a NULL-terminated argument vector */

static void inject_argv_free(char **argv)
{
    char  **p;

    for (p = argv; *p; p++)
	free(*p);
    free(argv);
}

/*
 * inject_spool - the whole message as sendmail gets it (trace fields,
 * LF line ends) into the unlinked file fd; *eight_bit_r says whether a
 * byte >= 0x80 is in it.  0, or -1 with res filled.
 */
static int inject_spool(const struct inject_msg *m, int fd, int *eight_bit_r,
			        struct inject_reader *r,
			        struct inject_result *res)
{
    char   *buf = xmalloc(INJECT_BUF);
    ssize_t n, i;
    int     rc = 0;

    *eight_bit_r = 0;
    inject_reader_init(r, m, 0);
    while ((n = inject_fill(r, buf, INJECT_BUF)) > 0) {
	for (i = 0; i < n && !*eight_bit_r; i++)
	    if ((unsigned char) buf[i] >= 0x80)
		*eight_bit_r = 1;
	if (file_write_all(fd, buf, (size_t) n) < 0) {
	    inject_fail(res, INJECT_TEMP, "4.3.0", "cannot write the message "
			"for sendmail to a temporary file in %s: %s (set "
			"TMPDIR to a directory with room)", file_tmpdir(NULL),
			strerror(errno));
	    rc = -1;
	    break;
	}
    }
    if (n < 0) {
	inject_fail(res, INJECT_TEMP, "4.3.0", "cannot read the spooled "
		    "message: %s", strerror(r->err));
	rc = -1;
    }
    free(buf);
    if (rc == 0 && lseek(fd, 0, SEEK_SET) < 0) {
	inject_fail(res, INJECT_TEMP, "4.3.0", "cannot rewind the message for "
		    "sendmail: %s", strerror(errno));
	rc = -1;
    }
    return (rc);
}

/*
 * inject_sendmail_result - res from how sendmail ended: exec_errno
 * (it could not be run), else its wait status, and its first output
 * line.  An exit status is sendmail's definite answer; a signal leaves
 * open whether the MTA kept the message (data_sent).
 */
static void inject_sendmail_result(struct inject *inj, int exec_errno,
				           int status, const char *out,
				           struct inject_result *res)
{
    snprintf(res->relay, sizeof(res->relay), "%s", inj->sendmail_path);
    res->data_sent = 0;
    if (exec_errno != 0) {
	res->code = 127;
	inject_fail(res, INJECT_TEMP, "4.3.5", "cannot run %s: %s; set "
		    "sendmail_path in [global] or use deliver_to = smtp://...",
		    inj->sendmail_path, strerror(exec_errno));
	return;
    }
    if (WIFSIGNALED(status)) {
	res->data_sent = 1;
	res->code = 128 + WTERMSIG(status);
	inject_fail(res, INJECT_TEMP, "4.3.0", "%s was killed by signal %d",
		    inj->sendmail_path, WTERMSIG(status));
	return;
    }
    res->code = WIFEXITED(status) ? WEXITSTATUS(status) : EX_SOFTWARE;
    switch (res->code) {
    case 0:
	res->status = INJECT_OK;
	res->data_sent = 1;
	snprintf(res->dsn, sizeof(res->dsn), "2.0.0");
	snprintf(res->reply, sizeof(res->reply), "%s%s", out[0] ? out :
		 "queued by ", out[0] ? "" : inj->sendmail_path);
	break;
    case EX_TEMPFAIL:
    case EX_OSERR:
    case EX_IOERR:
	res->status = INJECT_TEMP;
	inject_dsn(res->dsn, sizeof(res->dsn), out, 4, "4.3.0");
	snprintf(res->reply, sizeof(res->reply), "%s exited %d%s%s",
		 inj->sendmail_path, res->code, out[0] ? ": " : "", out);
	break;
    default:
	res->status = INJECT_PERM;
	inject_dsn(res->dsn, sizeof(res->dsn), out, 5, "5.3.0");
	snprintf(res->reply, sizeof(res->reply), "%s exited %d%s%s",
		 inj->sendmail_path, res->code, out[0] ? ": " : "", out);
	break;
    }
}

/*
 * inject_outcome_write - the helper's record of how sendmail ended, for
 * a run that starts after this one died: "id=", "errno=", "status=",
 * "out=" lines, written atomically (fsync, rename).
 */
static void inject_outcome_write(const char *path, const char *id,
				         int exec_errno, int status,
				         const char *out)
{
    char    buf[1024], err[300];
    int     n;

    n = snprintf(buf, sizeof(buf), "id=%s\nerrno=%d\nstatus=%d\nout=%s\n",
		 id, exec_errno, status, out);
    if (n > 0 && n < (int) sizeof(buf))
	(void) file_write_atomic(path, buf, (size_t) n, 0600, (uid_t) -1,
				 (gid_t) -1, err, sizeof(err));
}

/*
 * inject_sendmail_outcome - how the sendmail of an earlier, killed run
 * ended, from its helper's record at path for message id: 1 (res
 * filled as by inject_message()) or 0 (no record: the helper died too,
 * or never ran).  A record is read once: it is removed.
 */
int     inject_sendmail_outcome(struct inject *inj, const char *path,
				        const char *id, struct inject_result *res)
{
    struct strbuf text;
    char    err[300], want[600], out[300];
    const char *p;
    long    exec_errno = -1, status = -1;
    int     found = 0;

    memset(res, 0, sizeof(*res));
    if (!inj->sendmail || path == NULL || id == NULL)
	return (0);
    strbuf_init(&text, STRBUF_MAX_SMALL);
    if (file_read(path, STRBUF_MAX_SMALL, &text, err, sizeof(err)) < 0) {
	strbuf_free(&text);
	return (0);
    }
    (void) unlink(path);
    snprintf(want, sizeof(want), "id=%s\n", id);
    out[0] = 0;
    if (strncmp(strbuf_str(&text), want, strlen(want)) == 0) {
	for (p = strbuf_str(&text); p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
	    if (strncmp(p, "errno=", 6) == 0)
		exec_errno = strtol(p + 6, NULL, 10);
	    else if (strncmp(p, "status=", 7) == 0)
		status = strtol(p + 7, NULL, 10);
	    else if (strncmp(p, "out=", 4) == 0)
		log_printable(out, sizeof(out), p + 4, strcspn(p + 4, "\n"));
	}
	found = (exec_errno >= 0 && status >= 0);
    }
    strbuf_free(&text);
    if (found)
	inject_sendmail_result(inj, (int) exec_errno, (int) status, out, res);
    return (found);
}

/*
 * inject_helper - the child that runs sendmail and outlives m365-fetch:
 * it starts sendmail, waits for it, records the outcome (m->outcome,
 * when set) and reports it on report_fd.  It keeps the caller's
 * descriptors - the source's lock among them - until sendmail has
 * ended, so that no other m365-fetch works on the source before the
 * outcome is on disk.  Never returns.
 */
static void inject_helper(struct inject *inj, const struct inject_msg *m,
			          char **argv, int msgfd, int outfd,
			          int report_fd)
{
    struct sigaction sa;
    char    out[300];
    int     ep[2], report[2] = {0, 0};
    pid_t   pid;
    ssize_t n;

    (void) setpgid(0, 0);
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGPIPE, &sa, NULL);
    if (pipe2(ep, O_CLOEXEC) < 0 || (pid = fork()) < 0) {
	report[0] = errno;
	goto done;
    }
    if (pid == 0) {
	int     e;

	sa.sa_handler = SIG_DFL;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGPIPE, &sa, NULL);
	if (dup2(msgfd, STDIN_FILENO) < 0 || dup2(outfd, STDOUT_FILENO) < 0
	    || dup2(outfd, STDERR_FILENO) < 0)
	    _exit(EX_OSERR);
	execv(inj->sendmail_path, argv);
	e = errno;
	if (write(ep[1], &e, sizeof(e)) < 0)
	    _exit(EX_OSERR);
	_exit(EX_OSERR);
    }
    close(ep[1]);
    while ((n = read(ep[0], &report[0], sizeof(report[0]))) < 0
	   && errno == EINTR)
	 /* void */ ;
    if (n <= 0)
	report[0] = 0;
    while (waitpid(pid, &report[1], 0) < 0 && errno == EINTR)
	 /* void */ ;
done:
    inject_first_line(outfd, out, sizeof(out));
    if (m->outcome && m->id)
	inject_outcome_write(m->outcome, m->id, report[0], report[1], out);
    if (file_write_all(report_fd, report, sizeof(report)) < 0)
	_exit(EX_IOERR);
    _exit(0);
}

/*
 * inject_sendmail - run sendmail -i [-B 8BITMIME] -f SENDER -- RCPT...
 * with the complete message file as its standard input, through
 * inject_helper().  The state hook (data_end) runs once that file is
 * complete and before sendmail starts: from there on the MTA may have
 * the message.
 */
static int inject_sendmail(struct inject *inj, const struct inject_msg *m,
			           struct inject_result *res)
{
    struct inject_reader r;
    char  **argv;
    char    out[300];
    int     rp[2] = {-1, -1};
    int     report[2];
    int     msgfd = -1, outfd = -1, eight_bit, hstatus;
    ssize_t n;
    pid_t   pid;
    size_t  i, k = 0;

    snprintf(res->relay, sizeof(res->relay), "%s", inj->sendmail_path);
    memset(&r, 0, sizeof(r));
    if ((msgfd = inject_tmpfile(NULL)) < 0 || (outfd = inject_tmpfile(NULL)) < 0
	|| pipe2(rp, O_CLOEXEC) < 0) {
	inject_fail(res, INJECT_TEMP, "4.3.0", "cannot prepare to run %s: %s",
		    inj->sendmail_path, strerror(errno));
	goto close_all;
    }
    if (inject_spool(m, msgfd, &eight_bit, &r, res) < 0)
	goto close_all;
    res->bytes = r.bytes;
    if (m->outcome)
	(void) unlink(m->outcome);		/* an old attempt's record */
    if (inject_data_end(&r) < 0) {
	inject_fail(res, INJECT_TEMP, "4.3.0", "abandoned before sendmail "
		    "started: the delivery state could not be recorded");
	goto close_all;
    }

    argv = xcalloc(m->nrcpts + 8, sizeof(char *));
    argv[k++] = xstrdup(inj->sendmail_path);
    argv[k++] = xstrdup("-i");
    if (eight_bit) {
	argv[k++] = xstrdup("-B");
	argv[k++] = xstrdup("8BITMIME");
    }
    argv[k++] = xstrdup("-f");
    argv[k++] = xstrdup(m->sender && *m->sender ? m->sender : "<>");
    argv[k++] = xstrdup("--");
    for (i = 0; i < m->nrcpts; i++)
	argv[k++] = xstrdup(m->rcpts[i]);
    argv[k] = NULL;

    if ((pid = fork()) < 0) {
	inject_argv_free(argv);
	inject_fail(res, INJECT_TEMP, "4.3.0", "cannot fork: %s",
		    strerror(errno));
	goto close_all;
    }
    if (pid == 0) {
	close(rp[0]);
	inject_helper(inj, m, argv, msgfd, outfd, rp[1]);
    }
    inject_argv_free(argv);
    close(rp[1]);
    rp[1] = -1;
    while ((n = read(rp[0], report, sizeof(report))) < 0 && errno == EINTR)
	 /* void */ ;
    while (waitpid(pid, &hstatus, 0) < 0 && errno == EINTR)
	 /* void */ ;
    if (m->outcome)
	(void) unlink(m->outcome);		/* the outcome is known here */
    if (n != (ssize_t) sizeof(report)) {
	res->data_sent = 1;
	inject_fail(res, INJECT_TEMP, "4.3.0", "lost track of %s: its helper "
		    "process ended without a report", inj->sendmail_path);
	goto close_all;
    }
    inject_first_line(outfd, out, sizeof(out));
    inject_sendmail_result(inj, report[0], report[1], out, res);

close_all:
    free(r.ibuf);
    if (msgfd >= 0)
	close(msgfd);
    if (outfd >= 0)
	close(outfd);
    if (rp[0] >= 0)
	close(rp[0]);
    if (rp[1] >= 0)
	close(rp[1]);
    return (res->status == INJECT_OK ? 0 : -1);
}

/*
 * inject_probe_sendmail - is the sendmail program that inject_sendmail()
 * runs there, a regular file, and executable?
 */
static int inject_probe_sendmail(struct inject *inj, struct inject_probe *p)
{
    struct stat st;

    if (stat(inj->sendmail_path, &st) < 0) {
	p->step = INJECT_STEP_PROGRAM;
	p->err = errno;
	snprintf(p->reply, sizeof(p->reply), "%s: %s", inj->sendmail_path,
		 strerror(p->err));
	return (-1);
    }
    p->step = INJECT_STEP_EXEC;
    if (!S_ISREG(st.st_mode)) {
	snprintf(p->reply, sizeof(p->reply), "%s is not a regular file",
		 inj->sendmail_path);
	return (-1);
    }
    if (access(inj->sendmail_path, X_OK) < 0) {
	p->err = errno;
	snprintf(p->reply, sizeof(p->reply), "%s is not executable (%s)",
		 inj->sendmail_path, strerror(p->err));
	return (-1);
    }
    p->step = INJECT_STEP_READY;
    p->ext_8bitmime = 1;			/* sendmail -B 8BITMIME */
    snprintf(p->reply, sizeof(p->reply), "%s is executable",
	     inj->sendmail_path);
    return (0);
}

/*
 * inject_probe - open a session as inject_message() does, waiting at
 * most secs for each step, then QUIT without a transaction
 */
int     inject_probe(struct inject *inj, int secs, struct inject_probe *p)
{
    struct inject_result res;
    int     rc;

    memset(p, 0, sizeof(*p));
    if (inj->sendmail) {
	snprintf(p->relay, sizeof(p->relay), "%s", inj->sendmail_path);
	return (inject_probe_sendmail(inj, p));
    }
    inject_close(inj, 1);			/* a fresh session */
    memset(&res, 0, sizeof(res));
    rc = inject_open(inj, secs, secs, &res);
    p->step = inj->step;
    p->err = inj->err;
    snprintf(p->relay, sizeof(p->relay), "%s", inj->relay);
    if (rc < 0) {
	p->code = res.code;
	snprintf(p->reply, sizeof(p->reply), "%s", res.reply);
	return (-1);
    }
    p->code = 220;
    snprintf(p->reply, sizeof(p->reply), "%s", inj->greeting);
    p->ext_8bitmime = inj->ext_8bitmime;
    p->ext_smtputf8 = inj->ext_smtputf8;
    p->ext_size = inj->ext_size;
    inject_close(inj, 1);
    return (0);
}

/* inject_message - hand one message to the MTA */

int     inject_message(struct inject *inj, const struct inject_msg *m,
		               struct inject_result *res)
{
    memset(res, 0, sizeof(*res));
    if (m->nrcpts == 0) {
	inject_fail(res, INJECT_RCPT, "5.5.1", "no recipients configured");
	snprintf(res->relay, sizeof(res->relay), "none");
	return (-1);
    }
    if (inj->sendmail)
	return (inject_sendmail(inj, m, res));
    return (inject_smtp(inj, m, res));
}

/*
 * inject_notice - one notice to the administrator: the message in fd
 * (a complete message) to rcpt with the null sender through deliver_to.
 * 0 when the MTA took it; -1 with err filled when deliver_to cannot be
 * used, else with res filled.
 */
int     inject_notice(const struct conf *conf, const char *deliver_to,
		              int fd, char *rcpt,
		              struct inject_result *res, char *err,
		              size_t errlen)
{
    struct inject_msg im;
    struct inject *inj;
    char   *rcpts[1];
    int     rc;

    memset(res, 0, sizeof(*res));
    if ((inj = inject_create(conf, deliver_to, err, errlen)) == NULL)
	return (-1);
    memset(&im, 0, sizeof(im));
    rcpts[0] = rcpt;
    im.fd = fd;
    im.sender = "";
    im.rcpts = rcpts;
    im.nrcpts = 1;
    rc = inject_message(inj, &im, res);
    inject_free(inj);
    snprintf(err, errlen, "%s", res->reply);
    return (rc);
}
