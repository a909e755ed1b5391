/*
 * NAME
 *	proxy 3h
 * SUMMARY
 *	HTTP proxy and extra CA certificates (TLS inspection) for libcurl
 * SYNOPSIS
 *	#include "proxy.h"
 * DESCRIPTION
 *	Which proxy a request takes is decided here, deliberately, for
 *	every request: libcurl's own reading of the proxy environment
 *	variables is always overridden (CURLOPT_PROXY and CURLOPT_NOPROXY
 *	are always set).
 *
 *	proxy_choose() - the proxy of an account: the account's proxy key,
 *	else the [global] one; "none" means a direct connection.  Only
 *	when neither sets the key: the environment variables libcurl
 *	would use for an https URL (https_proxy, HTTPS_PROXY, all_proxy,
 *	ALL_PROXY, in this order).  no_proxy likewise: the account's key,
 *	else [global]'s; the environment's no_proxy/NO_PROXY only when the
 *	proxy came from the environment.  Loopback names (localhost,
 *	127.0.0.1, ::1) never go through a proxy.  proxy_credentials_file
 *	(account, else [global]) holds "user:password" for the proxy.
 *
 *	proxy_check_url() - is a proxy key's value usable: "none" or
 *	http://HOST:PORT (no path, no user:password: those go into
 *	proxy_credentials_file, never into the configuration or argv).
 *
 *	proxy_create() makes the per-client state: it reads the
 *	certificates of [global] ca_extra_file (PEM, at least one) once.
 *	They are added to libcurl's CA store (the system bundle, or
 *	ca_file) through CURLOPT_SSL_CTX_FUNCTION for every new TLS
 *	connection (OpenSSL backend only), so a TLS-inspecting proxy's CA
 *	is trusted next to the public CAs instead of instead of them.
 *	libcurl's CA store cache is turned off then (CURLOPT_CA_CACHE_
 *	TIMEOUT 0): each connection starts from the unmodified bundle.
 *
 *	proxy_set_account() chooses the account whose proxy the following
 *	requests take (auth_token() and the token requests call it
 *	through http_set_account()).  proxy_apply() sets the options of
 *	one request on a reset curl handle; it reads the credentials file
 *	when first needed (file_read_private(): private, owned by the
 *	running user, as root by root or the [global] user).
 *	proxy_explain() rewrites a transport error of that request so that
 *	it names the proxy and the fix (proxy down, tunnel refused, 407
 *	naming proxy_credentials_file); a proxy's status is never taken
 *	for Microsoft's (*status becomes 0).
 *
 *	proxy_host_bypassed() - does a host match a no_proxy list (commas
 *	or blanks between entries, "*" for all, an entry matches the host
 *	and its subdomains, a leading dot is ignored, case-insensitive).
 *
 *	proxy_print() writes one line per account saying which proxy it
 *	uses and why, and the ca_extra_file line, for -n and m365ctl
 *	check; nothing when no account uses a proxy and no ca_extra_file
 *	is set.  Credentials are never shown (user:password in an
 *	environment variable's URL is masked).
 * DIAGNOSTICS
 *	proxy_create() and proxy_apply() return NULL/-1 with err naming
 *	the file and the fix.
 */
#ifndef M365_PROXY_H
#define M365_PROXY_H

#include <stddef.h>
#include <stdio.h>

#include "conf.h"

struct proxy;

struct proxy_choice {
    const char *url;			/* "" = direct */
    const char *no_proxy;		/* or NULL */
    const char *cred_file;		/* or NULL */
    char    from[80];			/* where url came from, for people */
};

extern int proxy_check_url(const char *value, char *why, size_t len);
extern void proxy_choose(const struct conf *, const struct conf_account *,
			         struct proxy_choice *);
extern int proxy_host_bypassed(const char *list, const char *host);
extern struct proxy *proxy_create(const struct conf *, char *err, size_t len);
extern void proxy_free(struct proxy *);
extern void proxy_set_account(struct proxy *, const struct conf *,
			              const struct conf_account *);
extern int proxy_apply(struct proxy *, void *curl, const char *url,
		               char *err, size_t len);
extern void proxy_explain(struct proxy *, void *curl, int curl_code,
			          long *status, char *error, size_t len);
extern int proxy_print(const struct conf *, FILE *);

#endif
