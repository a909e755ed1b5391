/*
 * NAME
 *	proxy 3
 * SUMMARY
 *	HTTP proxy and extra CA certificates (TLS inspection) for libcurl
 * DESCRIPTION
 *	See proxy.h.  http.c calls proxy_apply() after curl_easy_reset()
 *	for every request and proxy_explain() when the transfer failed.
 *
 *	Why CURLOPT_SSL_CTX_FUNCTION and not CURLOPT_CAINFO_BLOB for
 *	ca_extra_file: a blob replaces the CA file just as CURLOPT_CAINFO
 *	does, so the system bundle would have to be found (its path
 *	differs between distributions, and a CApath-only setup has no
 *	single file), read and copied by us, and updates of the bundle
 *	would be missed.  The callback runs after libcurl has loaded its
 *	own trust anchors (the system bundle or ca_file) into the SSL_CTX
 *	and only adds the extra certificates to that X509 store.
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "log.h"
#include "proxy.h"
#include "strbuf.h"
#include "util.h"

#define PROXY_CRED_MAX	4096		/* bytes of proxy_credentials_file */
#define PROXY_CA_MAX	(1024 * 1024)	/* bytes of ca_extra_file */
#define PROXY_LOOPBACK	"localhost,127.0.0.1,::1"

struct proxy {
    STACK_OF(X509) *extra;		/* ca_extra_file, or NULL */
    char   *extra_file;
    char   *account;			/* chosen account, or NULL: [global] */
    char   *url;			/* "" = direct */
    char   *no_proxy;			/* or NULL */
    char   *cred_file;			/* or NULL */
    char    from[80];
    char   *user;			/* from cred_file, read when needed */
    char   *password;
    char   *cred_read;			/* the file user/password came from */
    int     used;			/* the last request went through url */
    char    host[256];			/* the last request's host */
};

/* proxy_check_url - "none" or http://HOST:PORT; 0 or -1 with why */

int     proxy_check_url(const char *v, char *why, size_t len)
{
    const char *host, *end, *port;
    char    digits[8];
    size_t  n;
    long    num;

    if (strcmp(v, "none") == 0)
	return (0);
    if (strncasecmp(v, "http://", 7) != 0) {
	snprintf(why, len, "write http://HOST:PORT (the proxy's address; "
		 "https is tunnelled through it with CONNECT) or none");
	return (-1);
    }
    host = v + 7;
    if (strchr(host, '@') != NULL) {
	snprintf(why, len, "no user:password in the proxy URL: put them "
		 "into the file named by proxy_credentials_file");
	return (-1);
    }
    if (*host == '[') {
	if ((end = strchr(host, ']')) == NULL || end == host + 1) {
	    snprintf(why, len, "an IPv6 proxy address is written "
		     "http://[ADDRESS]:PORT");
	    return (-1);
	}
	port = end + 1;
    } else {
	port = host + strcspn(host, ":/?# \t");
	end = port;
    }
    if (end == host) {
	snprintf(why, len, "the proxy URL names no host");
	return (-1);
    }
    if (*port != ':') {
	snprintf(why, len, "write the proxy's port: http://HOST:PORT "
		 "(there is no usual default)");
	return (-1);
    }
    port++;
    n = strspn(port, "0123456789");
    if (port[n] != 0 && strcmp(port + n, "/") != 0) {
	snprintf(why, len, "the proxy URL may name only http://HOST:PORT "
		 "(no path, no blanks)");
	return (-1);
    }
    if (n == 0 || n >= sizeof(digits)) {
	snprintf(why, len, "bad proxy port (1 to 65535)");
	return (-1);
    }
    memcpy(digits, port, n);
    digits[n] = 0;
    if (parse_long(digits, 1, 65535, &num) < 0) {
	snprintf(why, len, "bad proxy port %s (1 to 65535)", digits);
	return (-1);
    }
    for (; host < end; host++)
	if (!isalnum((unsigned char) *host) && !strchr(".-_:[]", *host)) {
	    snprintf(why, len, "bad character in the proxy host name");
	    return (-1);
	}
    return (0);
}

/* proxy_env - the first set, non-empty variable of names; its name */

static const char *proxy_env(const char *const *names, const char **which)
{
    const char *v;

    for (; *names; names++)
	if ((v = getenv(*names)) != NULL && *v != 0) {
	    *which = *names;
	    return (v);
	}
    return (NULL);
}

/*
 * proxy_choose - the proxy an account's requests take (acct NULL: the
 * [global] keys), see proxy.h.  The strings point into conf or environ.
 */
void    proxy_choose(const struct conf *conf, const struct conf_account *a,
		             struct proxy_choice *pc)
{
    static const char *const env_proxy[] = {
	"https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", 0,
    };
    static const char *const env_no[] = {"no_proxy", "NO_PROXY", 0};
    const char *which = "";
    const char *key_np;

    memset(pc, 0, sizeof(*pc));
    if (a && a->proxy) {
	pc->url = a->proxy;
	snprintf(pc->from, sizeof(pc->from), "proxy in [account %.40s]",
		 a->name);
    } else if (conf && conf->proxy) {
	pc->url = conf->proxy;
	snprintf(pc->from, sizeof(pc->from), "proxy in [global]");
    }
    key_np = (a && a->no_proxy) ? a->no_proxy : conf ? conf->no_proxy : NULL;
    if (pc->url) {
	if (strcmp(pc->url, "none") == 0)
	    pc->url = "";
	pc->no_proxy = key_np;
    } else if ((pc->url = proxy_env(env_proxy, &which)) != NULL) {
	snprintf(pc->from, sizeof(pc->from), "environment variable %s",
		 which);
	pc->no_proxy = key_np ? key_np : proxy_env(env_no, &which);
    } else {
	pc->url = "";
    }
    if (*pc->url == 0) {
	pc->no_proxy = NULL;
	if (pc->from[0] == 0)
	    snprintf(pc->from, sizeof(pc->from), "no proxy key or variable");
	return;
    }
    pc->cred_file = (a && a->proxy_credentials_file) ?
	a->proxy_credentials_file :
	conf ? conf->proxy_credentials_file : NULL;
}

/* proxy_host_bypassed - does host match an entry of a no_proxy list? */

int     proxy_host_bypassed(const char *list, const char *host)
{
    const char *p = list, *e;
    size_t  n, hl = strlen(host);

    if (list == NULL)
	return (0);
    while (*p) {
	p += strspn(p, ", \t");
	e = p + strcspn(p, ", \t");
	if (*p == '.')
	    p++;
	n = (size_t) (e - p);
	if (n == 1 && *p == '*')
	    return (1);
	if (n > 0 && (hl == n || (hl > n && host[hl - n - 1] == '.'))
	    && strncasecmp(host + hl - n, p, n) == 0)
	    return (1);
	p = e;
    }
    return (0);
}

/* proxy_printable - a proxy URL without user:password, for people */

static void proxy_printable(char *buf, size_t len, const char *url)
{
    const char *at, *start;
    char    tmp[300];

    start = strstr(url, "://");
    start = start ? start + 3 : url;
    at = strchr(start, '@');
    if (at && (size_t) (at - start) < strcspn(start, "/?#")) {
	snprintf(tmp, sizeof(tmp), "%.*s***@%s", (int) (start - url), url,
		 at + 1);
	log_printable(buf, len, tmp, strlen(tmp));
    } else
	log_printable(buf, len, url, strlen(url));
}

/* proxy_forget_creds - wipe what was read from a credentials file */

static void proxy_forget_creds(struct proxy *p)
{
    xfree_secret(p->user);
    xfree_secret(p->password);
    free(p->cred_read);
    p->user = p->password = p->cred_read = NULL;
}

/* proxy_load_extra - the certificates of ca_extra_file; NULL with err */

static STACK_OF(X509) *proxy_load_extra(const char *path, char *err,
					         size_t len)
{
    STACK_OF(X509) *certs;
    struct strbuf sb;
    BIO    *bio;
    X509   *x;

    if (file_read(path, PROXY_CA_MAX, &sb, err, len) < 0)
	return (NULL);
    certs = sk_X509_new_null();
    bio = BIO_new_mem_buf(strbuf_str(&sb), (int) sb.len);
    while (certs && bio
	   && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
	if (!sk_X509_push(certs, x))
	    X509_free(x);
    ERR_clear_error();			/* the end of the file is an "error" */
    BIO_free(bio);
    strbuf_free(&sb);
    if (certs == NULL || sk_X509_num(certs) == 0) {
	snprintf(err, len, "ca_extra_file %s holds no PEM certificate "
		 "(expected the proxy's CA certificate, \"-----BEGIN "
		 "CERTIFICATE-----\")", path);
	sk_X509_pop_free(certs, X509_free);
	return (NULL);
    }
    return (certs);
}

/* proxy_create - per-client state; reads ca_extra_file */

struct proxy *proxy_create(const struct conf *conf, char *err, size_t len)
{
    struct proxy *p = xcalloc(1, sizeof(*p));

    if (conf && conf->ca_extra_file) {
	if ((p->extra = proxy_load_extra(conf->ca_extra_file, err,
					 len)) == NULL) {
	    free(p);
	    return (NULL);
	}
	p->extra_file = xstrdup(conf->ca_extra_file);
    }
    proxy_set_account(p, conf, NULL);
    return (p);
}

/* proxy_free - release; NULL is fine */

void    proxy_free(struct proxy *p)
{
    if (p == NULL)
	return;
    sk_X509_pop_free(p->extra, X509_free);
    free(p->extra_file);
    free(p->account);
    free(p->url);
    free(p->no_proxy);
    free(p->cred_file);
    proxy_forget_creds(p);
    free(p);
}

/* proxy_set_account - the following requests take this account's proxy */

void    proxy_set_account(struct proxy *p, const struct conf *conf,
			          const struct conf_account *a)
{
    struct proxy_choice pc;

    if (p == NULL)
	return;
    proxy_choose(conf, a, &pc);
    free(p->account);
    free(p->url);
    free(p->no_proxy);
    free(p->cred_file);
    p->account = a ? xstrdup(a->name) : NULL;
    p->url = xstrdup(pc.url);
    p->no_proxy = pc.no_proxy ? xstrdup(pc.no_proxy) : NULL;
    p->cred_file = pc.cred_file ? xstrdup(pc.cred_file) : NULL;
    snprintf(p->from, sizeof(p->from), "%s", pc.from);
}

/* proxy_read_creds - user and password from cred_file; -1 with err */

static int proxy_read_creds(struct proxy *p, char *err, size_t len)
{
    struct strbuf sb;
    char    why[400];
    const char *text, *colon;
    size_t  n;

    if (p->cred_read && strcmp(p->cred_read, p->cred_file) == 0)
	return (0);
    proxy_forget_creds(p);
    if (file_read_private(p->cred_file, "proxy credentials file",
			  PROXY_CRED_MAX, &sb, why, sizeof(why)) < 0) {
	snprintf(err, len, "cannot use proxy_credentials_file: %s", why);
	return (-1);
    }
    text = strbuf_str(&sb);
    n = strcspn(text, "\r\n");		/* the first line only */
    if ((colon = memchr(text, ':', n)) == NULL || colon == text) {
	snprintf(err, len, "proxy_credentials_file %s must hold one line "
		 "user:password", p->cred_file);
	strbuf_cleanse(&sb);
	return (-1);
    }
    p->user = xstrndup(text, (size_t) (colon - text));
    p->password = xstrndup(colon + 1, n - (size_t) (colon + 1 - text));
    p->cred_read = xstrdup(p->cred_file);
    strbuf_cleanse(&sb);
    return (0);
}

/* proxy_ssl_ctx_cb - add ca_extra_file's certificates to the store */

static CURLcode proxy_ssl_ctx_cb(CURL *c, void *ssl_ctx, void *arg)
{
    STACK_OF(X509) *certs = arg;
    X509_STORE *store = SSL_CTX_get_cert_store((SSL_CTX *) ssl_ctx);
    int     i;

    (void) c;
    for (i = 0; i < sk_X509_num(certs); i++)
	if (X509_STORE_add_cert(store, sk_X509_value(certs, i)) != 1)
	    ERR_clear_error();		/* already there: fine */
    return (CURLE_OK);
}

/* proxy_url_host - the host of an URL, lower case, without brackets */

static void proxy_url_host(char *buf, size_t len, const char *url)
{
    const char *h = strstr(url, "://"), *at;
    size_t  n;

    h = h ? h + 3 : url;
    n = strcspn(h, "/?#");
    if ((at = memchr(h, '@', n)) != NULL) {
	n -= (size_t) (at + 1 - h);
	h = at + 1;
    }
    if (*h == '[') {
	h++;
	n = strcspn(h, "]");
    } else
	n = strcspn(h, ":/?#");
    if (n >= len)
	n = len - 1;
    memcpy(buf, h, n);
    buf[n] = 0;
}

/*
 * proxy_apply - the proxy options of one request on a reset handle:
 * always CURLOPT_PROXY (libcurl reads no variable of its own then) and
 * CURLOPT_NOPROXY; credentials; the extra CA certificates.  0, or -1
 * with err (credentials file unusable: nothing sent).
 */
int     proxy_apply(struct proxy *p, void *curl, const char *url,
		            char *err, size_t len)
{
    CURL   *c = curl;
    struct strbuf np;

    if (p == NULL)
	return (0);
    if (p->extra) {
	if (curl_easy_setopt(c, CURLOPT_SSL_CTX_FUNCTION,
			     proxy_ssl_ctx_cb) != CURLE_OK) {
	    snprintf(err, len, "ca_extra_file %s cannot be used: this "
		     "libcurl is not built with OpenSSL (use ca_file with "
		     "a bundle that holds the system CAs and the proxy's)",
		     p->extra_file);
	    return (-1);
	}
	curl_easy_setopt(c, CURLOPT_SSL_CTX_DATA, p->extra);
#if LIBCURL_VERSION_NUM >= 0x075700
	curl_easy_setopt(c, CURLOPT_CA_CACHE_TIMEOUT, 0L);
#endif
    }
    proxy_url_host(p->host, sizeof(p->host), url);
    p->used = (*p->url != 0 && !proxy_host_bypassed(PROXY_LOOPBACK, p->host)
	       && !proxy_host_bypassed(p->no_proxy, p->host));
    /* "" turns the proxy off, also one set in the environment. */
    curl_easy_setopt(c, CURLOPT_PROXY, p->url);
    if (*p->url == 0)
	return (0);
    strbuf_init(&np, STRBUF_MAX_SMALL);
    strbuf_printf(&np, "%s%s%s", PROXY_LOOPBACK, p->no_proxy ? "," : "",
		  p->no_proxy ? p->no_proxy : "");
    curl_easy_setopt(c, CURLOPT_NOPROXY, strbuf_failed(&np) ?
		     PROXY_LOOPBACK : strbuf_str(&np));
    strbuf_free(&np);
    curl_easy_setopt(c, CURLOPT_HTTPPROXYTUNNEL, 1L);
    if (p->cred_file && p->used) {
	if (proxy_read_creds(p, err, len) < 0)
	    return (-1);
	curl_easy_setopt(c, CURLOPT_PROXYUSERNAME, p->user);
	curl_easy_setopt(c, CURLOPT_PROXYPASSWORD, p->password);
	curl_easy_setopt(c, CURLOPT_PROXYAUTH, (long) CURLAUTH_ANY);
    }
    return (0);
}

/*
 * proxy_explain - after a failed transfer that went through the proxy:
 * error (libcurl's text) becomes a sentence naming the proxy and the
 * fix; a status that was the proxy's answer to CONNECT is cleared.
 */
void    proxy_explain(struct proxy *p, void *curl, int curl_code,
		              long *status, char *error, size_t len)
{
    char    shown[200], what[400];
    long    connect_code = 0;

    if (p == NULL || !p->used)
	return;
    curl_easy_getinfo((CURL *) curl, CURLINFO_HTTP_CONNECTCODE,
		      &connect_code);
    proxy_printable(shown, sizeof(shown), p->url);
    snprintf(what, sizeof(what), "%s", error);
    if (connect_code == 407) {
	if (p->cred_file)
	    snprintf(error, len, "the proxy %s (%s) refused the credentials "
		     "in proxy_credentials_file %s (HTTP 407): check the "
		     "user:password there", shown, p->from, p->cred_file);
	else
	    snprintf(error, len, "the proxy %s (%s) asks for credentials "
		     "(HTTP 407): put user:password into a private file and "
		     "name it with proxy_credentials_file", shown, p->from);
    } else if (connect_code >= 300) {
	snprintf(error, len, "the proxy %s (%s) refused the tunnel to %s "
		 "(CONNECT answered HTTP %ld): allow that host on the proxy, "
		 "or list it in no_proxy", shown, p->from, p->host,
		 connect_code);
    } else if (curl_code == CURLE_COULDNT_RESOLVE_PROXY
	       || curl_code == CURLE_COULDNT_CONNECT) {
	snprintf(error, len, "cannot connect to the proxy %s (%s): %s; is "
		 "the proxy running, is that its address?", shown, p->from,
		 what);
    } else {
	snprintf(error, len, "%s (through the proxy %s, %s)", what, shown,
		 p->from);
    }
    if (connect_code >= 300 || (status && *status == connect_code))
	if (status)
	    *status = 0;
}

/* proxy_print - which proxy each account uses, for -n; lines written */

int     proxy_print(const struct conf *conf, FILE *fp)
{
    struct proxy_choice pc;
    const struct conf_account *a;
    char    shown[200];
    int     n = 0;

    if (conf == NULL)
	return (0);
    if (conf->ca_extra_file) {
	fprintf(fp, "TLS: CA certificates of ca_extra_file %s are trusted "
		"in addition to %s\n", conf->ca_extra_file,
		conf->ca_file ? conf->ca_file : "the system bundle");
	n++;
    }
    for (a = conf->accounts; a; a = a->next) {
	proxy_choose(conf, a, &pc);
	if (*pc.url == 0)
	    continue;
	proxy_printable(shown, sizeof(shown), pc.url);
	fprintf(fp, "account %s: proxy %s (%s)%s%s%s%s\n", a->name, shown,
		pc.from, pc.no_proxy ? ", no_proxy " : "",
		pc.no_proxy ? pc.no_proxy : "",
		pc.cred_file ? ", credentials from " : "",
		pc.cred_file ? pc.cred_file : "");
	n++;
    }
    return (n);
}
