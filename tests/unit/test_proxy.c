/* test_proxy - which proxy a request takes, no_proxy, ca_extra_file */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "proxy.h"
#include "strbuf.h"
#include "t.h"
#include "t_file.h"

static char t_dir[200];

/* t_clear_env - none of the proxy variables set */

static void t_clear_env(void)
{
    static const char *const names[] = {
	"https_proxy", "HTTPS_PROXY", "http_proxy", "all_proxy", "ALL_PROXY",
	"no_proxy", "NO_PROXY", 0,
    };
    int     i;

    for (i = 0; names[i]; i++)
	unsetenv(names[i]);
}

static void test_check_url(void)
{
    char    why[300];

    T_EQ_INT(proxy_check_url("none", why, sizeof(why)), 0);
    T_EQ_INT(proxy_check_url("http://proxy.example.com:3128", why,
			     sizeof(why)), 0);
    T_EQ_INT(proxy_check_url("HTTP://10.0.0.1:8080/", why, sizeof(why)), 0);
    T_EQ_INT(proxy_check_url("http://[::1]:3128", why, sizeof(why)), 0);
    T_EQ_INT(proxy_check_url("proxy:3128", why, sizeof(why)), -1);
    T_CONTAINS(why, "http://HOST:PORT");
    T_EQ_INT(proxy_check_url("https://proxy:3128", why, sizeof(why)), -1);
    T_EQ_INT(proxy_check_url("http://proxy", why, sizeof(why)), -1);
    T_CONTAINS(why, "port");
    T_EQ_INT(proxy_check_url("http://proxy:0", why, sizeof(why)), -1);
    T_EQ_INT(proxy_check_url("http://proxy:65536", why, sizeof(why)), -1);
    T_EQ_INT(proxy_check_url("http://:3128", why, sizeof(why)), -1);
    T_CONTAINS(why, "no host");
    T_EQ_INT(proxy_check_url("http://u:p@proxy:3128", why, sizeof(why)), -1);
    T_CONTAINS(why, "proxy_credentials_file");
    T_EQ_INT(proxy_check_url("http://proxy:3128/x", why, sizeof(why)), -1);
    T_EQ_INT(proxy_check_url("http://[]:3128", why, sizeof(why)), -1);
    T_EQ_INT(proxy_check_url("http://pro%78y:3128", why, sizeof(why)), -1);
}

static void test_bypassed(void)
{
    T_EQ_INT(proxy_host_bypassed(NULL, "graph.microsoft.com"), 0);
    T_EQ_INT(proxy_host_bypassed("", "graph.microsoft.com"), 0);
    T_EQ_INT(proxy_host_bypassed("*", "graph.microsoft.com"), 1);
    T_EQ_INT(proxy_host_bypassed("microsoft.com", "graph.microsoft.com"), 1);
    T_EQ_INT(proxy_host_bypassed(".microsoft.com", "graph.microsoft.com"), 1);
    T_EQ_INT(proxy_host_bypassed("example.org, Graph.Microsoft.com",
				 "graph.microsoft.com"), 1);
    T_EQ_INT(proxy_host_bypassed("example.org graph.microsoft.com",
				 "graph.microsoft.com"), 1);
    T_EQ_INT(proxy_host_bypassed("soft.com", "graph.microsoft.com"), 0);
    T_EQ_INT(proxy_host_bypassed("graph.microsoft.com.evil",
				 "graph.microsoft.com"), 0);
    T_EQ_INT(proxy_host_bypassed("login.microsoftonline.com",
				 "graph.microsoft.com"), 0);
}

static void test_choose(void)
{
    struct conf conf;
    struct conf_account a, b;
    struct proxy_choice pc;

    memset(&conf, 0, sizeof(conf));
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    a.name = "a";
    b.name = "b";
    t_clear_env();

    /* Nothing set: direct. */
    proxy_choose(&conf, &a, &pc);
    T_EQ_STR(pc.url, "");
    T_OK(pc.no_proxy == NULL && pc.cred_file == NULL);

    /* The environment, only when the key is unset. */
    setenv("HTTPS_PROXY", "http://env.example:1", 1);
    setenv("NO_PROXY", "graph.microsoft.com", 1);
    proxy_choose(&conf, &a, &pc);
    T_EQ_STR(pc.url, "http://env.example:1");
    T_EQ_STR(pc.from, "environment variable HTTPS_PROXY");
    T_EQ_STR(pc.no_proxy, "graph.microsoft.com");
    setenv("https_proxy", "http://lower.example:2", 1);
    proxy_choose(&conf, &a, &pc);
    T_EQ_STR(pc.url, "http://lower.example:2");	/* curl's order */
    /* http_proxy is not for https URLs. */
    t_clear_env();
    setenv("http_proxy", "http://plain.example:3", 1);
    proxy_choose(&conf, &a, &pc);
    T_EQ_STR(pc.url, "");
    setenv("ALL_PROXY", "http://all.example:4", 1);
    proxy_choose(&conf, &a, &pc);
    T_EQ_STR(pc.url, "http://all.example:4");

    /* The [global] key wins over the environment, no_proxy too. */
    conf.proxy = "http://global.example:3128";
    setenv("no_proxy", "*", 1);
    proxy_choose(&conf, &a, &pc);
    T_EQ_STR(pc.url, "http://global.example:3128");
    T_EQ_STR(pc.from, "proxy in [global]");
    T_OK(pc.no_proxy == NULL);
    conf.no_proxy = "example.org";
    conf.proxy_credentials_file = "/etc/g.cred";
    proxy_choose(&conf, &a, &pc);
    T_EQ_STR(pc.no_proxy, "example.org");
    T_EQ_STR(pc.cred_file, "/etc/g.cred");

    /* The account's keys win over [global]'s. */
    a.proxy = "http://acct.example:8080";
    a.no_proxy = "graph.microsoft.com";
    a.proxy_credentials_file = "/etc/a.cred";
    proxy_choose(&conf, &a, &pc);
    T_EQ_STR(pc.url, "http://acct.example:8080");
    T_EQ_STR(pc.from, "proxy in [account a]");
    T_EQ_STR(pc.no_proxy, "graph.microsoft.com");
    T_EQ_STR(pc.cred_file, "/etc/a.cred");
    /* b inherits [global]'s; acct NULL is [global]. */
    proxy_choose(&conf, &b, &pc);
    T_EQ_STR(pc.url, "http://global.example:3128");
    T_EQ_STR(pc.cred_file, "/etc/g.cred");
    proxy_choose(&conf, NULL, &pc);
    T_EQ_STR(pc.url, "http://global.example:3128");

    /* none: direct, whatever [global] and the environment say. */
    b.proxy = "none";
    proxy_choose(&conf, &b, &pc);
    T_EQ_STR(pc.url, "");
    T_OK(pc.cred_file == NULL);
    t_clear_env();
}

/* A self-signed CA certificate (EC P-256), twice: a bundle of two. */
static const char t_ca_pem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBmTCCAT+gAwIBAgIUF8BR5796FMUBBpwrBg7huOvBb4gwCgYIKoZIzj0EAwIw\n"
    "ITEfMB0GA1UEAwwWbTM2NXJlbGF5IHVuaXQgdGVzdCBDQTAgFw0yNjEyMDIwMTUz\n"
    "NTlaGA8yMTI2MTEwODAxNTM1OVowITEfMB0GA1UEAwwWbTM2NXJlbGF5IHVuaXQg\n"
    "dGVzdCBDQTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABB8hj8s0mh8SliPy5BC5\n"
    "D0yoizyXA3ujO5lgZ0/8FpmSjZ60uVF0FT9Zdg6+bVEN7GoSYoPmSNYxj0+mfbGf\n"
    "HeqjUzBRMB0GA1UdDgQWBBTZcEt3HkPEedTy0aNtXk+Z+H5sRjAfBgNVHSMEGDAW\n"
    "gBTZcEt3HkPEedTy0aNtXk+Z+H5sRjAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49\n"
    "BAMCA0gAMEUCIQCn/3zLlH/mW+IMRR/yp8pHEhQDVr1aOO/MYk6FdCBxVAIgS/Y2\n"
    "zOoG+amE1yRQFWQJyw7ecEnFPMOeE4d2vBQnXB4=\n"
    "-----END CERTIFICATE-----\n";

static void test_create(void)
{
    struct conf conf;
    struct proxy *p;
    char    path[300], err[512], two[2 * sizeof(t_ca_pem) + 100];

    memset(&conf, 0, sizeof(conf));
    p = proxy_create(NULL, err, sizeof(err));
    T_OK(p != NULL);
    proxy_free(p);

    snprintf(path, sizeof(path), "%s/junk.pem", t_dir);
    t_write_file(path, "no certificate here\n", 0644);
    conf.ca_extra_file = path;
    err[0] = 0;
    T_OK(proxy_create(&conf, err, sizeof(err)) == NULL);
    T_CONTAINS(err, "holds no PEM certificate");
    T_CONTAINS(err, path);
    unlink(path);
    T_OK(proxy_create(&conf, err, sizeof(err)) == NULL);
    T_CONTAINS(err, "No such file");

    /* PEM certificates, text around them allowed (a bundle). */
    snprintf(two, sizeof(two), "# the proxy's CA\n%s%s", t_ca_pem, t_ca_pem);
    t_write_file(path, two, 0644);
    err[0] = 0;
    p = proxy_create(&conf, err, sizeof(err));
    T_OK(p != NULL);
    T_EQ_STR(err, "");
    proxy_free(p);
    unlink(path);
}

int     main(void)
{
    const char *tmp = getenv("TMPDIR");

    if (tmp == NULL || *tmp == 0 || strlen(tmp) > 150)
	tmp = "/tmp";
    snprintf(t_dir, sizeof(t_dir), "%s/test_proxy.XXXXXX", tmp);
    if (mkdtemp(t_dir) == NULL) {
	perror("mkdtemp");
	return (1);
    }
    T_RUN(test_check_url);
    T_RUN(test_bypassed);
    T_RUN(test_choose);
    T_RUN(test_create);
    rmdir(t_dir);
    return (T_DONE());
}
