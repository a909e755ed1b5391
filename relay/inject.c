/*
 * NAME
 *	inject 3
 * SUMMARY
 *	hand one message to the local MTA: libcurl SMTP client or sendmail
 * DESCRIPTION
 *	See inject.h.  No SMTP is written by hand: libcurl speaks it
 *	(EHLO, MAIL FROM, RCPT TO, DATA, dot-stuffing, the final ".").
 *	The MTA's reply lines are taken from libcurl's debug callback
 *	(CURLINFO_HEADER_IN), which is the only place libcurl shows them;
 *	nothing secret passes on this connection.  The commands libcurl
 *	sends (CURLINFO_HEADER_OUT) tell which stage a failure belongs to.
 *
 *	A 5xx reply that cannot be about the message (to the greeting,
 *	EHLO/HELO, or 530: the MTA wants TLS or AUTH first) is INJECT_TEMP:
 *	the MTA is unusable, the message must stay where it is.  A 4xx
 *	reply to the end of the data is a definite refusal, so data_sent
 *	is cleared (no "maybe a duplicate" on the retry).
 *
 *	The sendmail child runs in its own process group, so a SIGINT or
 *	SIGTERM meant for m365-fetch does not kill it half-way; its
 *	output goes to an unlinked temporary file (no pipe deadlock).  The
 *	caller ignores SIGPIPE (m365-fetch does).
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include <curl/curl.h>

#include "addr.h"
#include "inject.h"
#include "log.h"
#include "util.h"

#define INJECT_BUF		65536
#define INJECT_RESPONSE_WAIT	600	/* RFC 5321 4.5.3.2.6: 10 minutes */
#define INJECT_LOW_SPEED_TIME	300

enum inject_stage {
    STAGE_CONNECT = 0, STAGE_MAIL, STAGE_RCPT, STAGE_DATA, STAGE_DATA_END,
};

struct inject {
    const struct conf *conf;
    int     sendmail;			/* 1: run conf->sendmail_path */
    char   *url;			/* smtp://host:port/ehlo-name */
    char   *host;			/* for relay=, without brackets */
    char   *sendmail_path;
    CURL   *curl;
    int     fresh;			/* open a new connection next time */
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
    enum inject_stage stage;
    int     quit;			/* QUIT sent: ignore later replies */
    char    reply[400];			/* last complete reply line */
};

/* inject_status_name - for logs */

const char *inject_status_name(enum inject_status s)
{
    switch (s) {
    case INJECT_OK:
	return ("sent");
    case INJECT_TEMP:
    case INJECT_RCPT:
	return ("deferred");
    case INJECT_PERM:
    default:
	return ("bounced");
    }
}

/* inject_parse_target - smtp://host[:port][/] into host, port */

static int inject_parse_target(const char *to, char **host_r, long *port_r,
			               char *err, size_t errlen)
{
    const char *p, *end, *hend;
    long    port = 25;
    char    num[16];

    if (strncasecmp(to, "smtp://", 7) != 0)
	goto bad;
    p = to + 7;
    end = p + strcspn(p, "/");
    if (*end == '/' && end[1] != 0)
	goto bad;
    if (*p == '[') {
	if ((hend = memchr(p, ']', (size_t) (end - p))) == NULL || hend == p + 1)
	    goto bad;
	*host_r = xstrndup(p + 1, (size_t) (hend - p - 1));
	hend++;
    } else {
	hend = p + strcspn(p, ":/");
	if (hend == p)
	    goto bad;
	*host_r = xstrndup(p, (size_t) (hend - p));
    }
    if (strspn(*host_r, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	       "0123456789.-:") != strlen(*host_r)) {
	free(*host_r);
	goto bad;
    }
    if (*hend == ':') {
	if ((size_t) (end - hend - 1) >= sizeof(num) || end == hend + 1) {
	    free(*host_r);
	    goto bad;
	}
	snprintf(num, sizeof(num), "%.*s", (int) (end - hend - 1), hend + 1);
	if (parse_long(num, 1, 65535, &port) < 0) {
	    free(*host_r);
	    goto bad;
	}
    } else if (hend != end) {
	free(*host_r);
	goto bad;
    }
    *port_r = port;
    return (0);

bad:
    *host_r = NULL;
    snprintf(err, errlen, "deliver_to \"%s\" is not usable: write "
	     "smtp://127.0.0.1:25, smtp://[::1]:2525 or sendmail", to);
    return (-1);
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

/* inject_create - a delivery target for deliver_to */

struct inject *inject_create(const struct conf *conf, const char *deliver_to,
			             char *err, size_t errlen)
{
    struct inject *inj;
    struct strbuf url;
    char    helo[256];
    char   *host;
    long    port;

    if (deliver_to == NULL || *deliver_to == 0) {
	snprintf(err, errlen, "deliver_to is not set");
	return (NULL);
    }
    inj = xcalloc(1, sizeof(*inj));
    inj->conf = conf;
    if (strcmp(deliver_to, "sendmail") == 0) {
	inj->sendmail = 1;
	inj->sendmail_path = xstrdup(conf->sendmail_path && *conf->sendmail_path ?
				     conf->sendmail_path : "/usr/sbin/sendmail");
	inj->host = xstrdup(inj->sendmail_path);
	return (inj);
    }
    if (inject_parse_target(deliver_to, &host, &port, err, errlen) < 0) {
	free(inj);
	return (NULL);
    }
    if ((inj->curl = curl_easy_init()) == NULL) {
	snprintf(err, errlen, "cannot create a libcurl handle (out of memory?)");
	free(host);
	free(inj);
	return (NULL);
    }
    inject_helo_name(helo, sizeof(helo));
    strbuf_init(&url, STRBUF_MAX_SMALL);
    if (strchr(host, ':'))
	strbuf_printf(&url, "smtp://[%s]:%ld/%s", host, port, helo);
    else
	strbuf_printf(&url, "smtp://%s:%ld/%s", host, port, helo);
    inj->url = strbuf_take(&url);
    inj->host = host;
    return (inj);
}

/* inject_free - close the connection (QUIT), release; NULL is ok */

void    inject_free(struct inject *inj)
{
    if (inj == NULL)
	return;
    if (inj->curl)
	curl_easy_cleanup(inj->curl);
    free(inj->url);
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
    if (r->in_eof)
	return (-1);
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

/* inject_reader_init - read m from its start; free(r->ibuf) afterwards */

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
    r->stage = STAGE_DATA_END;
    if (r->msg->data_end && r->msg->data_end(r->msg->data_end_arg) != 0) {
	r->data_end_failed = 1;
	return (-1);
    }
    r->data_end_done = 1;
    return (0);
}

/* inject_read_cb - CURLOPT_READFUNCTION */

static size_t inject_read_cb(char *buf, size_t size, size_t nitems, void *ctx)
{
    struct inject_reader *r = ctx;
    ssize_t n;

    if ((n = inject_fill(r, buf, size * nitems)) < 0)
	return (CURL_READFUNC_ABORT);
    if (n == 0 && inject_data_end(r) < 0)
	return (CURL_READFUNC_ABORT);
    return ((size_t) n);
}

/* inject_debug_cb - keep the last reply line, follow the stage */

static int inject_debug_cb(CURL *c, curl_infotype type, char *data,
			           size_t len, void *ctx)
{
    struct inject_reader *r = ctx;

    (void) c;
    if (type == CURLINFO_HEADER_IN && !r->quit) {
	while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r'))
	    len--;
	if (len > 0)
	    log_printable(r->reply, sizeof(r->reply), data, len);
    } else if (type == CURLINFO_HEADER_OUT && r->stage != STAGE_DATA_END) {
	if (len >= 9 && strncasecmp(data, "MAIL FROM", 9) == 0)
	    r->stage = STAGE_MAIL;
	else if (len >= 7 && strncasecmp(data, "RCPT TO", 7) == 0)
	    r->stage = STAGE_RCPT;
	else if (len >= 4 && strncasecmp(data, "DATA", 4) == 0)
	    r->stage = STAGE_DATA;
    }
    /* The reply to QUIT (after a failure) is not the one that counts. */
    if (type == CURLINFO_HEADER_OUT && len >= 4 && strncasecmp(data, "QUIT", 4) == 0)
	r->quit = 1;
    return (0);
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

/* inject_address - "<addr>" for libcurl, local part quoted if needed */

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
    strbuf_printf(&sb, "<%s>", q ? q : addr);
    free(q);
    return (strbuf_take(&sb));
}

/* inject_smtp - one SMTP transaction through libcurl */

static int inject_smtp(struct inject *inj, const struct inject_msg *m,
		               struct inject_result *res)
{
    struct inject_reader r;
    struct curl_slist *rcpts = NULL, *np;
    CURL   *c = inj->curl;
    CURLcode rc;
    char   *from;
    char   *a;
    char   *ip = NULL;
    char   *errbuf;
    long    code = 0, port = 0;
    size_t  i;

    inject_reader_init(&r, m, 1);
    errbuf = xcalloc(1, CURL_ERROR_SIZE);

    from = inject_address(m->sender);
    for (i = 0; i < m->nrcpts; i++) {
	a = inject_address(m->rcpts[i]);
	if ((np = curl_slist_append(rcpts, a)) != NULL)
	    rcpts = np;
	free(a);
    }
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, inj->url);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "smtp");
#else
    curl_easy_setopt(c, CURLOPT_PROTOCOLS, (long) CURLPROTO_SMTP);
#endif
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_MAIL_FROM, from);
    curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpts);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, inject_read_cb);
    curl_easy_setopt(c, CURLOPT_READDATA, &r);
    curl_easy_setopt(c, CURLOPT_VERBOSE, 1L);
    curl_easy_setopt(c, CURLOPT_DEBUGFUNCTION, inject_debug_cb);
    curl_easy_setopt(c, CURLOPT_DEBUGDATA, &r);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, inj->conf->connect_timeout > 0 ?
		     inj->conf->connect_timeout : 15L);
    curl_easy_setopt(c, CURLOPT_SERVER_RESPONSE_TIMEOUT,
		     (long) INJECT_RESPONSE_WAIT);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (long) INJECT_LOW_SPEED_TIME);
    if (inj->fresh)
	curl_easy_setopt(c, CURLOPT_FRESH_CONNECT, 1L);

    if (lseek(m->fd, 0, SEEK_SET) < 0) {
	rc = CURLE_READ_ERROR;
	r.err = errno;
    } else {
	rc = curl_easy_perform(c);
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    if (curl_easy_getinfo(c, CURLINFO_PRIMARY_IP, &ip) != CURLE_OK || ip == NULL)
	ip = NULL;
    curl_easy_getinfo(c, CURLINFO_PRIMARY_PORT, &port);
    if (ip && *ip)
	snprintf(res->relay, sizeof(res->relay), "%s[%s]:%ld", inj->host, ip,
		 port);
    else
	snprintf(res->relay, sizeof(res->relay), "%s[%s]", inj->host,
		 inj->host);
    curl_easy_setopt(c, CURLOPT_MAIL_RCPT, (struct curl_slist *) 0);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, (char *) 0);
    curl_slist_free_all(rcpts);
    free(from);

    res->code = (int) code;
    res->bytes = r.bytes;
    res->data_sent = r.data_end_done;
    inj->fresh = (rc != CURLE_OK);

    if (rc == CURLE_OK && code >= 200 && code < 300) {
	res->status = INJECT_OK;
	snprintf(res->reply, sizeof(res->reply), "%s", r.reply[0] ? r.reply :
		 "250 Ok");
	inject_dsn(res->dsn, sizeof(res->dsn), r.reply, 2, "2.0.0");
    } else if (r.data_end_failed) {
	res->status = INJECT_TEMP;
	res->data_sent = 0;
	snprintf(res->dsn, sizeof(res->dsn), "4.3.0");
	snprintf(res->reply, sizeof(res->reply), "transaction abandoned "
		 "before the end of the data: the delivery state could not be "
		 "recorded");
    } else if (r.err) {
	res->status = INJECT_TEMP;
	snprintf(res->dsn, sizeof(res->dsn), "4.3.0");
	snprintf(res->reply, sizeof(res->reply), "cannot read the spooled "
		 "message: %s", strerror(r.err));
    } else if (code >= 500 && code < 600) {
	snprintf(res->reply, sizeof(res->reply), "%s", r.reply[0] ? r.reply :
		 curl_easy_strerror(rc));
	inject_dsn(res->dsn, sizeof(res->dsn), r.reply, 5, "5.0.0");
	if (r.stage == STAGE_CONNECT || code == 530)
	    /* Greeting, EHLO/HELO, or TLS/AUTH demanded: not this message. */
	    res->status = INJECT_TEMP;
	else if (r.stage == STAGE_RCPT && strncmp(res->dsn, "5.1.", 4) == 0
		 && strcmp(res->dsn, "5.1.7") != 0
		 && strcmp(res->dsn, "5.1.8") != 0)
	    res->status = INJECT_RCPT;
	else
	    res->status = INJECT_PERM;
    } else if (code >= 400 && code < 500) {
	res->status = INJECT_TEMP;
	snprintf(res->reply, sizeof(res->reply), "%s", r.reply[0] ? r.reply :
		 curl_easy_strerror(rc));
	inject_dsn(res->dsn, sizeof(res->dsn), r.reply, 4, "4.0.0");
	/* A 4xx to the end of the data is a definite "not taken". */
	res->data_sent = 0;
    } else {
	char    detail[CURL_ERROR_SIZE];

	res->status = INJECT_TEMP;
	log_printable(detail, sizeof(detail), errbuf, strlen(errbuf));
	snprintf(res->dsn, sizeof(res->dsn), "4.4.%d",
		 r.data_end_done ? 2 : 1);
	snprintf(res->reply, sizeof(res->reply), "%s%s%s%s",
		 r.data_end_done ? "connection lost after the end of the "
		 "data, the MTA may have the message: " : "",
		 curl_easy_strerror(rc), detail[0] ? ": " : "", detail);
    }
    free(errbuf);
    free(r.ibuf);
    return (res->status == INJECT_OK ? 0 : -1);
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
    if (fd < 0 || lseek(fd, 0, SEEK_SET) < 0)
	return;
    if ((n = read(fd, tmp, sizeof(tmp) - 1)) <= 0)
	return;
    k = strcspn(tmp, "\r\n");
    if (k > (size_t) n)
	k = (size_t) n;
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

/* inject_sendmail - run sendmail -i -f SENDER -- RCPT... */

static int inject_sendmail(struct inject *inj, const struct inject_msg *m,
			           struct inject_result *res)
{
    struct inject_reader r;
    char  **argv;
    char   *obuf = NULL;
    char    out[300];
    int     in[2] = {-1, -1}, ep[2] = {-1, -1};
    int     outfd, status = 0, werr = 0, child_err = 0;
    ssize_t n;
    pid_t   pid;
    size_t  i, k = 0;

    snprintf(res->relay, sizeof(res->relay), "%s", inj->sendmail_path);
    if ((outfd = inject_tmpfile(NULL)) < 0 || pipe(in) < 0 || pipe(ep) < 0) {
	res->status = INJECT_TEMP;
	snprintf(res->dsn, sizeof(res->dsn), "4.3.0");
	snprintf(res->reply, sizeof(res->reply), "cannot prepare to run %s: "
		 "%s", inj->sendmail_path, strerror(errno));
	goto close_all;
    }
    (void) fcntl(ep[1], F_SETFD, FD_CLOEXEC);
    (void) fcntl(ep[0], F_SETFD, FD_CLOEXEC);
    (void) fcntl(in[1], F_SETFD, FD_CLOEXEC);
    argv = xcalloc(m->nrcpts + 6, sizeof(char *));
    argv[k++] = xstrdup(inj->sendmail_path);
    argv[k++] = xstrdup("-i");
    argv[k++] = xstrdup("-f");
    argv[k++] = xstrdup(m->sender && *m->sender ? m->sender : "<>");
    argv[k++] = xstrdup("--");
    for (i = 0; i < m->nrcpts; i++)
	argv[k++] = xstrdup(m->rcpts[i]);
    argv[k] = NULL;

    if ((pid = fork()) < 0) {
	inject_argv_free(argv);
	res->status = INJECT_TEMP;
	snprintf(res->dsn, sizeof(res->dsn), "4.3.0");
	snprintf(res->reply, sizeof(res->reply), "cannot fork: %s",
		 strerror(errno));
	goto close_all;
    }
    if (pid == 0) {
	int     e;

	(void) setpgid(0, 0);
	signal(SIGPIPE, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	if (dup2(in[0], STDIN_FILENO) < 0 || dup2(outfd, STDOUT_FILENO) < 0
	    || dup2(outfd, STDERR_FILENO) < 0)
	    _exit(EX_OSERR);
	close(in[0]);
	close(outfd);
	execv(inj->sendmail_path, argv);
	e = errno;
	if (write(ep[1], &e, sizeof(e)) < 0)
	    _exit(EX_OSERR);
	_exit(EX_OSERR);
    }
    inject_argv_free(argv);
    close(in[0]);
    in[0] = -1;
    close(ep[1]);
    ep[1] = -1;
    while ((n = read(ep[0], &child_err, sizeof(child_err))) < 0 && errno == EINTR)
	 /* void */ ;
    if (n > 0) {
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
	     /* void */ ;
	res->status = INJECT_TEMP;
	res->code = 127;
	snprintf(res->dsn, sizeof(res->dsn), "4.3.5");
	snprintf(res->reply, sizeof(res->reply), "cannot run %s: %s; set "
		 "sendmail_path in [global] or use deliver_to = smtp://...",
		 inj->sendmail_path, strerror(child_err));
	goto close_all;
    }

    /* Stream the message; a child that quits early ends it (EPIPE). */
    inject_reader_init(&r, m, 0);
    obuf = xmalloc(INJECT_BUF);
    if (lseek(m->fd, 0, SEEK_SET) < 0)
	r.err = errno;
    while (r.err == 0 && (n = inject_fill(&r, obuf, INJECT_BUF)) > 0) {
	if (file_write_all(in[1], obuf, (size_t) n) < 0) {
	    werr = errno;
	    break;
	}
    }
    if (r.err == 0 && werr == 0 && n == 0 && inject_data_end(&r) == 0) {
	close(in[1]);				/* the end of the data */
	in[1] = -1;
    } else {
	/* Abandon: the child must not take a partial message. */
	(void) kill(pid, SIGKILL);
    }
    if (in[1] >= 0) {
	close(in[1]);
	in[1] = -1;
    }
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
	 /* void */ ;
    inject_first_line(outfd, out, sizeof(out));
    res->bytes = r.bytes;
    res->data_sent = r.data_end_done;
    free(r.ibuf);

    if (!r.data_end_done) {
	res->status = INJECT_TEMP;
	res->data_sent = 0;
	snprintf(res->dsn, sizeof(res->dsn), "4.3.0");
	if (r.data_end_failed)
	    snprintf(res->reply, sizeof(res->reply), "abandoned before the "
		     "end of the data: the delivery state could not be "
		     "recorded");
	else if (r.err)
	    snprintf(res->reply, sizeof(res->reply), "cannot read the "
		     "spooled message: %s", strerror(r.err));
	else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
	    snprintf(res->reply, sizeof(res->reply), "%s quit before reading "
		     "the whole message (exit %d)%s%s", inj->sendmail_path,
		     WEXITSTATUS(status), out[0] ? ": " : "", out);
	else
	    snprintf(res->reply, sizeof(res->reply), "cannot write to %s: %s",
		     inj->sendmail_path, strerror(werr ? werr : EPIPE));
	goto close_all;
    }
    if (WIFSIGNALED(status)) {
	res->status = INJECT_TEMP;
	res->code = 128 + WTERMSIG(status);
	snprintf(res->dsn, sizeof(res->dsn), "4.3.0");
	snprintf(res->reply, sizeof(res->reply), "%s was killed by signal %d",
		 inj->sendmail_path, WTERMSIG(status));
	goto close_all;
    }
    res->code = WEXITSTATUS(status);
    switch (res->code) {
    case 0:
	res->status = INJECT_OK;
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

close_all:
    free(obuf);
    if (outfd >= 0)
	close(outfd);
    if (in[0] >= 0)
	close(in[0]);
    if (in[1] >= 0)
	close(in[1]);
    if (ep[0] >= 0)
	close(ep[0]);
    if (ep[1] >= 0)
	close(ep[1]);
    return (res->status == INJECT_OK ? 0 : -1);
}

/* inject_message - hand one message to the MTA */

int     inject_message(struct inject *inj, const struct inject_msg *m,
		               struct inject_result *res)
{
    memset(res, 0, sizeof(*res));
    if (m->nrcpts == 0) {
	res->status = INJECT_RCPT;
	snprintf(res->dsn, sizeof(res->dsn), "5.5.1");
	snprintf(res->reply, sizeof(res->reply), "no recipients configured");
	snprintf(res->relay, sizeof(res->relay), "none");
	return (-1);
    }
    if (inj->sendmail)
	return (inject_sendmail(inj, m, res));
    return (inject_smtp(inj, m, res));
}
