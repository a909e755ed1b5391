/*
 * NAME
 *	ctl_login 3
 * SUMMARY
 *	m365ctl login: interactive sign-in of a delegated account
 * SYNOPSIS
 *	#include "ctl.h"
 *
 *	int	ctl_login(conf, acct, method)
 * DESCRIPTION
 *	Three ways to sign in, all ending in auth_store_login():
 *
 *	CTL_LOGIN_DEVICE (device authorization grant): prints Microsoft's
 *	instruction ("To sign in, use a web browser to open the page
 *	https://microsoft.com/devicelogin and enter the code ..."), then
 *	polls the token endpoint every "interval" seconds (slow_down adds
 *	5 s) until the user signed in, declined, or the code expired.
 *
 *	CTL_LOGIN_BROWSER (authorization code + PKCE S256): listens on
 *	127.0.0.1 (and ::1 when available) on an ephemeral port, prints
 *	the authorize URL with redirect_uri http://localhost:PORT/ (the
 *	identity platform ignores the port of a localhost redirect URI),
 *	opens a browser when a display is available, accepts the one
 *	redirect request (CTL_BROWSER_TIMEOUT seconds at most), checks the
 *	state in constant time, redeems the code and answers the browser
 *	with a small page.
 *
 *	CTL_LOGIN_PASTE: the same without a listener (hosts without a
 *	browser): redirect_uri http://localhost; the user opens the URL
 *	elsewhere and pastes the address the browser ended on ("This site
 *	can't be reached" is expected), which holds code and state.
 * DIAGNOSTICS
 *	CTL_OK; CTL_FAIL with a message naming the AADSTS code and the
 *	remedy; EX_TEMPFAIL when the identity platform was unreachable.
 *	Neither the codes nor the tokens are printed or logged.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "addr.h"
#include "auth.h"
#include "conf.h"
#include "ctl.h"
#include "http.h"
#include "log.h"
#include "oauth.h"
#include "source.h"
#include "strbuf.h"
#include "tokstore.h"
#include "util.h"

extern char **environ;

/* Seconds one browser connection may take to send its request. */
#define CTL_REQUEST_TIMEOUT	10

/* Transport errors in a row before device-code polling gives up. */
#define CTL_POLL_MAX_TRANSIENT	5

/* ctl_oauth_exit - exit status for a failed identity platform request */

static int ctl_oauth_exit(const struct oauth_error *oe)
{
    return (oe->cls == OAUTH_TRANSIENT ? EX_TEMPFAIL : CTL_FAIL);
}

/* ctl_sleep - sleep whole seconds, resuming after signals */

static void ctl_sleep(long seconds)
{
    struct timespec req, rem;

    req.tv_sec = seconds;
    req.tv_nsec = 0;
    while (nanosleep(&req, &rem) < 0 && errno == EINTR)
	req = rem;
}

/* ctl_login_device - device authorization grant */

static int ctl_login_device(struct http *http, const struct conf *conf,
			            const struct conf_account *acct,
			            struct oauth_token *tok)
{
    struct oauth_device dev;
    struct oauth_error oe;
    double  deadline;
    long    interval;
    long    lifetime;
    int     transient = 0;
    int     rc = CTL_FAIL;

    memset(&dev, 0, sizeof(dev));
    memset(&oe, 0, sizeof(oe));
    if (oauth_device_start(http, conf, acct, &dev, &oe) < 0) {
	ctl_print_oauth_error("device code request", &oe, acct->name);
	oauth_device_free(&dev);
	return (ctl_oauth_exit(&oe));
    }
    lifetime = dev.expires_in > 0 ? dev.expires_in : 900;
    if (dev.message && dev.message[0])
	printf("%s\n", dev.message);
    else
	printf("To sign in, open %s and enter the code %s\n",
	       dev.verification_uri ? dev.verification_uri :
	       "https://microsoft.com/devicelogin",
	       dev.user_code ? dev.user_code : "(none)");
    printf("Sign in as the owner of mailbox %s (or as a user with Send As "
	   "rights on it).  Waiting up to %ld min ...\n",
	   acct->mailbox ? acct->mailbox : "(none)", lifetime / 60);
    fflush(stdout);

    interval = dev.interval > 0 ? dev.interval : 5;
    deadline = time_mono() + (double) lifetime;
    for (;;) {
	if (time_mono() + (double) interval > deadline + 1) {
	    fprintf(stderr, "m365ctl: the code %s expired before the "
		    "sign-in was completed (%ld min): run m365ctl login %s "
		    "again\n", dev.user_code ? dev.user_code : "",
		    lifetime / 60, acct->name);
	    break;
	}
	ctl_sleep(interval);
	memset(&oe, 0, sizeof(oe));
	if (oauth_device_poll(http, conf, acct, &dev, tok, &oe) == 0) {
	    rc = CTL_OK;
	    break;
	}
	if (oe.cls == OAUTH_PENDING) {
	    transient = 0;
	    continue;
	}
	if (oe.cls == OAUTH_SLOW_DOWN) {
	    interval += 5;
	    msg_debug("slow_down: polling every %ld s now", interval);
	    continue;
	}
	if (oe.cls == OAUTH_DECLINED) {
	    fprintf(stderr, "m365ctl: the sign-in was declined at the "
		    "Microsoft sign-in page (%s): run m365ctl login %s "
		    "again and accept the permissions\n",
		    oe.error[0] ? oe.error : "authorization_declined",
		    acct->name);
	    break;
	}
	if (oe.cls == OAUTH_EXPIRED) {
	    fprintf(stderr, "m365ctl: the code %s expired before the "
		    "sign-in was completed: run m365ctl login %s again and "
		    "sign in within %ld min\n",
		    dev.user_code ? dev.user_code : "", acct->name,
		    lifetime / 60);
	    break;
	}
	if (oe.cls == OAUTH_TRANSIENT && ++transient < CTL_POLL_MAX_TRANSIENT) {
	    fprintf(stderr, "m365ctl: warning: polling the token endpoint "
		    "failed (%s), trying again\n",
		    oe.description[0] ? oe.description : oe.error);
	    continue;
	}
	ctl_print_oauth_error("sign-in", &oe, acct->name);
	rc = ctl_oauth_exit(&oe);
	break;
    }
    oauth_device_free(&dev);
    return (rc);
}

/*
 * ctl_query_get - the decoded value of one parameter of a query string
 * ("a=1&b=x%20y", decoded by url_form_decode()), or NULL.  The caller
 * frees the result with xfree_secret() (it may be an authorization code).
 */
static char *ctl_query_get(const char *query, const char *name)
{
    size_t  nlen = strlen(name);
    const char *cp = query;
    const char *end;
    const char *val;

    while (cp && *cp) {
	end = cp + strcspn(cp, "&;#");
	if ((size_t) (end - cp) > nlen && strncmp(cp, name, nlen) == 0
	    && cp[nlen] == '=') {
	    val = cp + nlen + 1;
	    return (url_form_decode(val, (size_t) (end - val)));
	}
	if (*end != '&' && *end != ';')
	    break;
	cp = end + 1;
    }
    return (NULL);
}

/* ctl_html_escape - text for an HTML page */

static void ctl_html_escape(struct strbuf *out, const char *text)
{
    for (; *text; text++) {
	switch (*text) {
	case '<':
	    strbuf_puts(out, "&lt;");
	    break;
	case '>':
	    strbuf_puts(out, "&gt;");
	    break;
	case '&':
	    strbuf_puts(out, "&amp;");
	    break;
	case '"':
	    strbuf_puts(out, "&quot;");
	    break;
	case '\'':
	    strbuf_puts(out, "&#39;");
	    break;
	default:
	    strbuf_putc(out, (unsigned char) *text < 0x20 ? ' ' : *text);
	}
    }
}

/* ctl_http_reply - answer the browser; the page is small and static */

static void ctl_http_reply(int fd, int code, const char *title,
			           const char *text)
{
    struct strbuf page;
    struct strbuf head;
    const char *reason = code == 200 ? "OK" : code == 404 ? "Not Found" :
    code == 405 ? "Method Not Allowed" : "Bad Request";
    const char *p;
    size_t  left;
    ssize_t n;

    strbuf_init(&page, STRBUF_MAX_SMALL);
    strbuf_puts(&page, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
		"<title>m365ctl</title></head>\n<body style=\"font-family:"
		"sans-serif\"><h1>");
    ctl_html_escape(&page, title);
    strbuf_puts(&page, "</h1>\n<p>");
    ctl_html_escape(&page, text);
    strbuf_puts(&page, "</p></body></html>\n");
    strbuf_init(&head, STRBUF_MAX_SMALL);
    strbuf_printf(&head, "HTTP/1.1 %d %s\r\nContent-Type: text/html; "
		  "charset=utf-8\r\nContent-Length: %lu\r\nCache-Control: "
		  "no-store\r\nConnection: close\r\n\r\n", code, reason,
		  (unsigned long) page.len);
    strbuf_append(&head, page.data, page.len);
    /* A page cut short is not sent (head.len is 0 once head failed). */
    left = strbuf_failed(&page) ? 0 : head.len;
    for (p = head.data; left > 0; p += n, left -= (size_t) n) {
	if ((n = send(fd, p, left, MSG_NOSIGNAL)) < 0) {
	    if (errno == EINTR) {
		n = 0;
		continue;
	    }
	    break;
	}
    }
    strbuf_free(&page);
    strbuf_free(&head);
}

/*
 * ctl_read_request - read one HTTP request head; return the request
 * target of a GET ("/?code=..."), or NULL (reply already sent).
 */
static char *ctl_read_request(int fd)
{
    char    buf[8192];
    size_t  len = 0;
    ssize_t n;
    struct timeval tv;
    char   *sp1, *sp2;

    tv.tv_sec = CTL_REQUEST_TIMEOUT;
    tv.tv_usec = 0;
    (void) setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    while (len < sizeof(buf) - 1) {
	if ((n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0)) < 0) {
	    if (errno == EINTR)
		continue;
	    return (NULL);
	}
	if (n == 0)
	    break;
	len += (size_t) n;
	buf[len] = 0;
	if (strstr(buf, "\r\n\r\n") || strstr(buf, "\n\n"))
	    break;
    }
    buf[len] = 0;
    if ((sp1 = strchr(buf, ' ')) == NULL
	|| (sp2 = strchr(sp1 + 1, ' ')) == NULL) {
	ctl_http_reply(fd, 400, "Bad request", "This is m365ctl waiting for "
		       "the Microsoft sign-in redirect.");
	OPENSSL_cleanse(buf, sizeof(buf));
	return (NULL);
    }
    if (sp1 - buf != 3 || strncmp(buf, "GET", 3) != 0) {
	ctl_http_reply(fd, 405, "Method not allowed", "This is m365ctl "
		       "waiting for the Microsoft sign-in redirect.");
	OPENSSL_cleanse(buf, sizeof(buf));
	return (NULL);
    }
    *sp2 = 0;
    sp1 = xstrdup(sp1 + 1);
    OPENSSL_cleanse(buf, sizeof(buf));
    return (sp1);
}

/* ctl_listen - a listening loopback socket; port 0 picks one */

static int ctl_listen(int family, int *port)
{
    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
    socklen_t slen;
    int     fd;
    int     on = 1;

    if ((fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
	return (-1);
    if (family == AF_INET) {
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((unsigned short) *port);
	if (bind(fd, (struct sockaddr *) &sin, sizeof(sin)) < 0)
	    goto fail;
	slen = sizeof(sin);
	if (getsockname(fd, (struct sockaddr *) &sin, &slen) < 0)
	    goto fail;
	*port = ntohs(sin.sin_port);
    } else {
	(void) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	sin6.sin6_addr = in6addr_loopback;
	sin6.sin6_port = htons((unsigned short) *port);
	if (bind(fd, (struct sockaddr *) &sin6, sizeof(sin6)) < 0)
	    goto fail;
    }
    if (listen(fd, 8) < 0)
	goto fail;
    return (fd);

fail:
    close(fd);
    return (-1);
}

/* ctl_open_browser - start xdg-open when there is a display; optional */

static void ctl_open_browser(const char *url)
{
    posix_spawn_file_actions_t fa;
    char   *args[3];
    pid_t   pid;

    if (getenv("DISPLAY") == NULL && getenv("WAYLAND_DISPLAY") == NULL)
	return;
    if (posix_spawn_file_actions_init(&fa) != 0)
	return;
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null",
				     O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null",
				     O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null",
				     O_WRONLY, 0);
    args[0] = (char *) "xdg-open";
    args[1] = xstrdup(url);
    args[2] = NULL;
    if (posix_spawnp(&pid, "xdg-open", &fa, NULL, args, environ) == 0)
	msg_debug("started xdg-open, pid %ld", (long) pid);
    posix_spawn_file_actions_destroy(&fa);
    free(args[1]);
}

/* ctl_state_ok - constant-time comparison of the returned state */

static int ctl_state_ok(const char *got, const char *want)
{
    size_t  len = strlen(want);

    return (got != NULL && strlen(got) == len
	    && CRYPTO_memcmp(got, want, len) == 0);
}

/*
 * ctl_authorize_error - the identity platform sent the browser back with
 * error=...&error_description=...: print it with the remedy.
 */
static void ctl_authorize_error(const struct conf_account *acct,
				        const char *error, const char *desc)
{
    struct oauth_error oe;
    char    remedy[600];

    char    line[sizeof(oe.description)];
    size_t  i, o;

    memset(&oe, 0, sizeof(oe));
    oe.http_status = 400;
    snprintf(oe.error, sizeof(oe.error), "%s", error ? error : "error");
    /* Microsoft's description has CRLF before "Trace ID:": one line. */
    for (i = o = 0; desc && desc[i] && o + 1 < sizeof(line); i++) {
	if ((unsigned char) desc[i] < 0x20) {
	    if (o > 0 && line[o - 1] != ' ')
		line[o++] = ' ';
	} else
	    line[o++] = desc[i];
    }
    line[o] = 0;
    log_printable(oe.description, sizeof(oe.description), line, o);
    oe.aadsts = oauth_aadsts_from_text(desc);
    oe.cls = oauth_classify(oe.http_status, oe.error, oe.aadsts);
    fprintf(stderr, "m365ctl: sign-in failed at the authorize page: %s: "
	    "%s\n", oe.error, oe.description[0] ? oe.description :
	    "(no description)");
    if (oe.aadsts == 65004 || strcmp(oe.error, "access_denied") == 0)
	fprintf(stderr, "m365ctl: remedy: the user or an administrator "
		"declined the permissions; run m365ctl login %s again and "
		"accept them, or let an administrator consent "
		"(m365ctl consent-url %s)\n", acct->name, acct->name);
    else {
	oauth_remedy(&oe, acct->name, remedy, sizeof(remedy));
	if (remedy[0])
	    fprintf(stderr, "m365ctl: remedy: %s\n", remedy);
    }
}

/*
 * ctl_redeem_query - take code/state (or error) from the query of the
 * redirect and redeem the code.  page_title and page_text tell the
 * browser what happened.
 */
static int ctl_redeem_query(struct http *http, const struct conf *conf,
			            const struct conf_account *acct,
			            const char *query, const char *state,
			            const char *redirect_uri, const char *verifier,
			            struct oauth_token *tok,
			            const char **page_title,
			            const char **page_text)
{
    struct oauth_error oe;
    char   *code = ctl_query_get(query, "code");
    char   *got_state = ctl_query_get(query, "state");
    char   *error = ctl_query_get(query, "error");
    char   *desc = ctl_query_get(query, "error_description");
    int     rc = CTL_FAIL;

    *page_title = "Sign-in failed";
    if (error) {
	ctl_authorize_error(acct, error, desc);
	*page_text = "Microsoft reported an error; m365ctl shows it and the "
	    "remedy in the terminal.";
    } else if (code == NULL || code[0] == 0) {
	fprintf(stderr, "m365ctl: the address has no \"code\" parameter: "
		"paste the whole address the browser ended on, beginning "
		"with http://localhost\n");
	*page_text = "No authorization code in the request.";
    } else if (!ctl_state_ok(got_state, state)) {
	fprintf(stderr, "m365ctl: the \"state\" in the address does not match "
		"this sign-in (an old or foreign sign-in page?): run m365ctl "
		"login %s again and use the new URL\n", acct->name);
	*page_text = "The state parameter does not match this sign-in.";
    } else {
	memset(&oe, 0, sizeof(oe));
	if (oauth_redeem_code(http, conf, acct, code, redirect_uri, verifier,
			      tok, &oe) < 0) {
	    ctl_print_oauth_error("redeeming the authorization code", &oe,
				  acct->name);
	    *page_text = "The authorization code could not be redeemed; "
		"m365ctl shows the reason in the terminal.";
	    rc = ctl_oauth_exit(&oe);
	} else {
	    *page_title = "Signed in";
	    *page_text = "Signed in, you can close this window.";
	    rc = CTL_OK;
	}
    }
    xfree_secret(code);
    free(got_state);
    free(error);
    free(desc);
    return (rc);
}

/*
 * ctl_login_nonces - the PKCE verifier and challenge and the state of an
 * authorization code flow; 0, or -1 after saying why
 */
static int ctl_login_nonces(char *verifier, size_t vlen, char *challenge,
			            size_t clen, char *state33)
{
    if (oauth_pkce_new(verifier, vlen, challenge, clen) < 0
	|| random_hex(state33, 16) < 0) {
	fprintf(stderr, "m365ctl: no random bytes for the sign-in: OpenSSL's "
		"random generator and /dev/urandom both failed\n");
	return (-1);
    }
    return (0);
}

/* ctl_login_browser - authorization code + PKCE with a loopback listener */

static int ctl_login_browser(struct http *http, const struct conf *conf,
			             const struct conf_account *acct,
			             struct oauth_token *tok)
{
    char    verifier[160];
    char    challenge[160];
    char    state[33];
    char    redirect_uri[64];
    struct pollfd pfd[2];
    const char *title = "Sign-in failed";
    const char *text = "";
    char   *url = NULL;
    char   *target = NULL;
    char   *query = NULL;
    double  deadline;
    double  left;
    int     nfd = 0;
    int     port = 0;
    int     port6;
    int     fd, cfd = -1;
    int     rc = CTL_FAIL;
    int     i;

    if ((fd = ctl_listen(AF_INET, &port)) < 0) {
	fprintf(stderr, "m365ctl: cannot listen on 127.0.0.1: %s; use "
		"--device-code or --paste instead\n", strerror(errno));
	return (CTL_FAIL);
    }
    pfd[nfd].fd = fd;
    pfd[nfd++].events = POLLIN;
    port6 = port;
    if ((fd = ctl_listen(AF_INET6, &port6)) >= 0) {
	pfd[nfd].fd = fd;
	pfd[nfd++].events = POLLIN;
    }
    snprintf(redirect_uri, sizeof(redirect_uri), "http://localhost:%d/", port);
    if (ctl_login_nonces(verifier, sizeof(verifier), challenge,
			 sizeof(challenge), state) < 0)
	goto done;
    if ((url = oauth_authorize_url(conf, acct, redirect_uri, challenge,
				   state)) == NULL) {
	fprintf(stderr, "m365ctl: cannot build the authorize URL for account "
		"%s\n", acct->name);
	goto done;
    }
    printf("Open this URL in a browser on this machine and sign in as the "
	   "owner of mailbox %s:\n\n%s\n\n", acct->mailbox ? acct->mailbox :
	   "(none)", url);
    printf("Waiting for the browser on %s (up to %d min) ...\n",
	   redirect_uri, CTL_BROWSER_TIMEOUT / 60);
    fflush(stdout);
    ctl_open_browser(url);

    deadline = time_mono() + CTL_BROWSER_TIMEOUT;
    for (;;) {
	if ((left = deadline - time_mono()) <= 0) {
	    fprintf(stderr, "m365ctl: no sign-in within %d min: run m365ctl "
		    "login %s again, or use --device-code or --paste when "
		    "the browser runs on another machine\n",
		    CTL_BROWSER_TIMEOUT / 60, acct->name);
	    goto done;
	}
	if (poll(pfd, (nfds_t) nfd, (int) (left * 1000) + 1) < 0) {
	    if (errno == EINTR)
		continue;
	    fprintf(stderr, "m365ctl: poll: %s\n", strerror(errno));
	    goto done;
	}
	for (i = 0; i < nfd && cfd < 0; i++) {
	    if ((pfd[i].revents & POLLIN) == 0)
		continue;
	    if ((cfd = accept4(pfd[i].fd, NULL, NULL, SOCK_CLOEXEC)) < 0)
		continue;
	    if ((target = ctl_read_request(cfd)) == NULL
		|| (query = strchr(target, '?')) == NULL
		|| (strstr(query, "code=") == NULL
		    && strstr(query, "error=") == NULL)) {
		if (target)
		    ctl_http_reply(cfd, 404, "Not found", "This is m365ctl "
				   "waiting for the Microsoft sign-in "
				   "redirect.");
		xfree_secret(target);
		target = NULL;
		close(cfd);
		cfd = -1;
	    }
	}
	if (cfd >= 0)
	    break;
    }
    rc = ctl_redeem_query(http, conf, acct, query + 1, state, redirect_uri,
			  verifier, tok, &title, &text);
    ctl_http_reply(cfd, rc == CTL_OK ? 200 : 400, title, text);
    close(cfd);

done:
    for (i = 0; i < nfd; i++)
	close(pfd[i].fd);
    xfree_secret(target);
    free(url);
    OPENSSL_cleanse(verifier, sizeof(verifier));
    return (rc);
}

/* ctl_login_paste - authorization code + PKCE, address pasted back */

static int ctl_login_paste(struct http *http, const struct conf *conf,
			           const struct conf_account *acct,
			           struct oauth_token *tok)
{
    static const char redirect_uri[] = "http://localhost";
    char    verifier[160];
    char    challenge[160];
    char    state[33];
    const char *title, *text;
    char   *url;
    char   *line = NULL;
    size_t  cap = 0;
    ssize_t len;
    char   *query;
    int     rc = CTL_FAIL;

    if (ctl_login_nonces(verifier, sizeof(verifier), challenge,
			 sizeof(challenge), state) < 0)
	return (CTL_FAIL);
    if ((url = oauth_authorize_url(conf, acct, redirect_uri, challenge,
				   state)) == NULL) {
	fprintf(stderr, "m365ctl: cannot build the authorize URL for account "
		"%s\n", acct->name);
	return (CTL_FAIL);
    }
    printf("1. Open this URL in a browser (any machine) and sign in as the "
	   "owner of mailbox %s:\n\n%s\n\n", acct->mailbox ? acct->mailbox :
	   "(none)", url);
    printf("2. The browser ends on a page that cannot be loaded, with an "
	   "address beginning with %s/?code=\n", redirect_uri);
    printf("3. Copy that whole address from the address bar, paste it "
	   "here and press Enter:\n");
    fflush(stdout);
    free(url);

    len = getline(&line, &cap, stdin);
    if (len <= 0) {
	fprintf(stderr, "m365ctl: no address read from standard input\n");
	goto done;
    }
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'
		       || line[len - 1] == ' ' || line[len - 1] == '\t'))
	line[--len] = 0;
    query = line + strspn(line, " \t");
    if (strchr(query, '?'))
	query = strchr(query, '?') + 1;
    if (strstr(query, "code=") == NULL && strstr(query, "error=") == NULL) {
	fprintf(stderr, "m365ctl: the pasted text has no code= parameter: "
		"paste the whole address the browser ended on, beginning "
		"with %s\n", redirect_uri);
	goto done;
    }
    rc = ctl_redeem_query(http, conf, acct, query, state, redirect_uri,
			  verifier, tok, &title, &text);

done:
    if (line) {
	OPENSSL_cleanse(line, cap);
	free(line);
    }
    OPENSSL_cleanse(verifier, sizeof(verifier));
    return (rc);
}

/*
 * ctl_login_sources - the [source]s that read mail with this account:
 * which mailbox and folder, and whether the sign-in granted the
 * Mail.ReadWrite (.Shared) that oauth_scope() asked for because of them.
 */
static void ctl_login_sources(const struct conf *conf,
			              const struct conf_account *acct,
			              const struct oauth_token *tok)
{
    const struct conf_source *src;
    const char *mb;
    int     need_rw = 0, need_shared = 0;

    for (src = conf->sources; src; src = src->next) {
	if (src->acct != acct)
	    continue;
	mb = source_mailbox(src);
	printf("account %s: used by source %s (mailbox %s, folder %s, "
	       "deliver_to %s)\n", acct->name, src->name,
	       mb ? mb : "of the signed-in user", source_folder(src),
	       src->deliver_to);
	need_rw = 1;
	if (source_shared(src))
	    need_shared = 1;
    }
    if (!need_rw || tok->scope == NULL || tok->scope[0] == 0)
	return;
    if (need_shared && !ctl_scope_has(tok->scope, "Mail.ReadWrite.Shared"))
	printf("account %s: warning: Mail.ReadWrite.Shared was requested for "
	       "the sources but not granted: an administrator adds the "
	       "delegated permission to app %s and consents (m365ctl "
	       "consent-url %s); then sign in again\n", acct->name,
	       acct->client_id, acct->name);
    else if (!ctl_scope_has(tok->scope, "Mail.ReadWrite")
	     && !ctl_scope_has(tok->scope, "Mail.ReadWrite.Shared"))
	printf("account %s: warning: Mail.ReadWrite was requested for the "
	       "sources but not granted: an administrator adds the delegated "
	       "permission to app %s and consents (m365ctl consent-url %s); "
	       "then sign in again\n", acct->name, acct->client_id,
	       acct->name);
    else
	printf("account %s: the sources resume by themselves at their next "
	       "round; check one with m365ctl test SOURCE\n", acct->name);
}

/*
 * ctl_login_large - whether the sign-in lets messages over 4 MB go
 * through a draft (large_messages, and the scope oauth_scope() asked
 * for when it is yes)
 */
static void ctl_login_large(const struct conf_account *acct,
			            const struct oauth_token *tok)
{
    const char *perm = oauth_large_scope(acct);
    int     has = oauth_scope_has(tok->scope, perm)
    || oauth_scope_has(tok->scope, "Mail.ReadWrite.Shared");

    if (acct->large_messages == CONF_LARGE_NO || tok->scope == NULL
	|| tok->scope[0] == 0)
	return;
    if (has)
	printf("account %s: messages over 4 MB go through a draft (%s "
	       "granted)\n", acct->name, perm);
    else if (acct->large_messages == CONF_LARGE_YES)
	printf("account %s: warning: %s was requested for messages over "
	       "4 MB but not granted: an administrator adds the delegated "
	       "permission to app %s and consents (m365ctl consent-url %s); "
	       "then sign in again\n", acct->name, perm, acct->client_id,
	       acct->name);
    else
	printf("account %s: messages over 4 MB are deferred "
	       "(large_messages = auto and %s was not granted); to send "
	       "them through a draft, set large_messages = yes in [account "
	       "%s] and sign in again\n", acct->name, perm, acct->name);
}

/* ctl_login_report - after the tokens are stored: who, which scopes */

static void ctl_login_report(struct http *http, const struct conf *conf,
			             const struct conf_account *acct,
			             const struct oauth_token *tok)
{
    struct ctl_user user;
    struct http_resp resp;
    const char *who;

    if (tok->scope && tok->scope[0])
	printf("account %s: granted scopes: %s\n", acct->name, tok->scope);
    if (tok->refresh_token == NULL)
	printf("account %s: warning: no refresh token was issued (is "
	       "offline_access allowed?); the sign-in lasts only until the "
	       "access token expires\n", acct->name);
    http_resp_init(&resp);
    if (ctl_get_user(http, conf, NULL, tok->access_token, &user, &resp) == 0) {
	who = user.upn[0] ? user.upn : user.mail;
	printf("account %s: signed in as %s%s%s%s\n", acct->name, who,
	       user.name[0] ? " (" : "", user.name, user.name[0] ? ")" : "");
	if (acct->mailbox && !addr_same(acct->mailbox, user.upn)
	    && !addr_same(acct->mailbox, user.mail)) {
	    if (!ctl_scope_has(tok->scope, "Mail.Send.Shared"))
		printf("account %s: warning: mailbox %s is not the signed-in "
		       "user's: sending needs the scope Mail.Send.Shared; add "
		       "\"scopes = Mail.Send.Shared\" to [account %s] and run "
		       "m365ctl login %s again\n", acct->name, acct->mailbox,
		       acct->name, acct->name);
	    else
		printf("account %s: mailbox %s is not the signed-in user's: "
		       "%s needs Send As or Send on Behalf rights on it "
		       "(Exchange admin center); check with m365ctl test %s "
		       "--send ADDRESS\n", acct->name, acct->mailbox, who,
		       acct->name);
	}
    } else
	msg_debug("GET /me after sign-in: HTTP %ld %s", resp.status,
		  resp.error);
    http_resp_free(&resp);
    ctl_login_sources(conf, acct, tok);
    ctl_login_large(acct, tok);
}

/* ctl_login - sign in a delegated account and store its tokens */

int     ctl_login(const struct conf *conf, const struct conf_account *acct,
		          enum ctl_login_method method)
{
    struct oauth_token tok;
    struct http *http;
    char    err[512];
    char    path[4096];
    int     rc;

    if ((http = http_create(conf, err, sizeof(err))) == NULL) {
	fprintf(stderr, "m365ctl: %s\n", err);
	return (EX_CONFIG);
    }
    memset(&tok, 0, sizeof(tok));
    switch (method) {
    case CTL_LOGIN_BROWSER:
	rc = ctl_login_browser(http, conf, acct, &tok);
	break;
    case CTL_LOGIN_PASTE:
	rc = ctl_login_paste(http, conf, acct, &tok);
	break;
    case CTL_LOGIN_DEVICE:
    default:
	rc = ctl_login_device(http, conf, acct, &tok);
	break;
    }
    if (rc == CTL_OK) {
	ctl_log_quiet(1);
	rc = auth_store_login(conf, acct, &tok, err, sizeof(err));
	ctl_log_quiet(0);
	if (rc < 0) {
	    fprintf(stderr, "m365ctl: account %s: signed in, but the tokens "
		    "could not be stored: %s\n", acct->name, err);
	    rc = CTL_FAIL;
	} else {
	    if (tokstore_path(conf, acct->name, ".json", path,
			      sizeof(path)) < 0)
		snprintf(path, sizeof(path), "%s/tokens", conf->state_dir);
	    printf("account %s: signed in, token stored in %s\n", acct->name,
		   path);
	    ctl_audit("account %s: signed in interactively (%s), tokens "
		      "stored in %s", acct->name, method == CTL_LOGIN_BROWSER ?
		      "browser" : method == CTL_LOGIN_PASTE ? "paste" :
		      "device code", path);
	    ctl_login_report(http, conf, acct, &tok);
	}
    }
    oauth_token_free(&tok);
    http_free(http);
    return (rc);
}
