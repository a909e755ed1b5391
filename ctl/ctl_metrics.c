/*
 * NAME
 *	ctl_metrics 3
 * SUMMARY
 *	m365ctl status --prometheus, m365ctl keepalive, expiry lines
 * SYNOPSIS
 *	#include "ctl.h"
 * DESCRIPTION
 *	ctl_prometheus() prints the Prometheus text exposition of every
 *	account and source (metrics.h) to stdout, or with output set
 *	writes it to that file atomically (mode 0644) for node_exporter's
 *	textfile collector.
 *
 *	ctl_keepalive() is the timer's housekeeping (m365-keepalive.timer):
 *	a keep-alive refresh of every delegated account whose refresh
 *	token has been unused for keepalive_after (alert_keepalive()), the
 *	daily expiry warnings in the log (alert_expiry_daily()), the mail
 *	to admin_address about accounts and sources that went offline or
 *	came back and credentials that expire soon (alert_notify()), and
 *	metrics_file.  Exit 0, or CTL_FAIL when a step failed (the log
 *	says which).
 *
 *	ctl_expiry_status() adds the certificate and client secret expiry
 *	of an account to m365ctl status (text, or the JSON object obj).
 */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cJSON.h>

#include "alert.h"
#include "conf.h"
#include "ctl.h"
#include "http.h"
#include "log.h"
#include "exposition.h"
#include "metrics.h"
#include "strbuf.h"

/* ctl_prometheus - the exposition to stdout, or to output atomically */

int     ctl_prometheus(const struct conf *conf, const char *output)
{
    struct strbuf out;
    char    err[1024];
    int     rc;

    if (output != NULL) {
	if (metrics_write_file(conf, output, err, sizeof(err)) < 0) {
	    fprintf(stderr, "m365ctl: cannot write the metrics to %s: %s\n",
		    output, err);
	    return (CTL_FAIL);
	}
	return (CTL_OK);
    }
    strbuf_init(&out, STRBUF_MAX_JSON);
    rc = metrics_exposition(conf, &out, time(NULL));
    if (out.len > 0)
	fwrite(out.data, 1, out.len, stdout);
    strbuf_free(&out);
    return (rc < 0 ? CTL_FAIL : CTL_OK);
}

/* ctl_keepalive - keepalive: refresh, warn, notify, write metrics_file */

int     ctl_keepalive(const struct conf *conf)
{
    const struct conf_account *acct;
    struct http *http = NULL;
    char    err[1024];
    time_t  now = time(NULL);
    int     failed = 0;

    for (acct = conf->accounts; acct; acct = acct->next) {
	alert_expiry_daily(conf, acct);
	if (acct->auth != CONF_AUTH_DELEGATED)
	    continue;
	if (http == NULL && (http = http_create(conf, err, sizeof(err)))
	    == NULL) {
	    msg_warn("keep-alive: %s", err);
	    failed++;
	    break;
	}
	if (alert_keepalive(conf, http, acct, now) < 0)
	    failed++;
    }
    http_free(http);
    (void) metrics_flush(conf);
    if (alert_notify(conf, time(NULL)) < 0)
	failed++;
    if (conf->metrics_file != NULL
	&& metrics_write_file(conf, conf->metrics_file, err,
			      sizeof(err)) < 0) {
	msg_warn("cannot write metrics_file %s: %s", conf->metrics_file, err);
	failed++;
    }
    return (failed ? CTL_FAIL : CTL_OK);
}

/* ctl_expiry_status - the credential expiry lines of m365ctl status */

void    ctl_expiry_status(const struct conf *conf,
			          const struct conf_account *acct,
			          cJSON *obj, time_t now)
{
    static const char *keys[2][2] = {
	{"certificate_expires", "certificate_warning"},
	{"secret_expires", "secret_warning"},
    };
    static const char *labels[2] = {"certificate:", "client secret:"};
    struct alert_expiry e;
    char    text[600];
    int     i, w;

    alert_expiry(conf, acct, now, &e);
    if (e.err[0] && obj == NULL)
	printf("  %-15s %s\n", labels[ALERT_CERTIFICATE], e.err);
    for (i = 0; i < 2; i++) {
	if ((w = alert_expiry_text(acct, &e, (enum alert_cred) i, now, text,
				   sizeof(text))) < 0)
	    continue;
	if (obj) {
	    cJSON_AddNumberToObject(obj, keys[i][0], (double) e.expires[i]);
	    cJSON_AddBoolToObject(obj, keys[i][1], w);
	} else
	    printf("  %-15s %s%s\n", labels[i], w ? "WARNING: " : "", text);
    }
}
