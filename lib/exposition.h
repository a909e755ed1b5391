/*
 * NAME
 *	exposition 3h
 * SUMMARY
 *	Prometheus text exposition of the counters and gauges
 * SYNOPSIS
 *	#include "exposition.h"
 * DESCRIPTION
 *	metrics_exposition() writes the Prometheus text exposition format
 *	(version 0.0.4) for every account and source of the configuration:
 *	the counters of metrics.h and gauges read from the other state
 *	files (token store, throttle state, source state, certificate and
 *	secret expiry).  Every metric name starts with m365relay_, every
 *	family has its HELP and TYPE lines, samples carry account= or
 *	source= labels (values escaped).  No secret goes in: no token, no
 *	secret, no error text (only AADSTS numbers).
 *	metrics_write_file() writes the exposition to a file atomically
 *	(temporary file and rename, mode 0644) for node_exporter's
 *	textfile collector.
 * DIAGNOSTICS
 *	metrics_exposition(): 0, or -1 when a file could not be read (the
 *	rest is written).  metrics_write_file(): 0, or -1 with err filled.
 */
#ifndef M365_EXPOSITION_H
#define M365_EXPOSITION_H

#include <stddef.h>
#include <time.h>

#include "conf.h"
#include "strbuf.h"

extern int metrics_exposition(const struct conf *, struct strbuf *,
			              time_t now);
extern int metrics_write_file(const struct conf *, const char *path,
			              char *err, size_t errlen);

#endif
