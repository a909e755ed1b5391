/*
 * NAME
 *	throttle 3h
 * SUMMARY
 *	remember Retry-After per mailbox across deliveries
 * SYNOPSIS
 *	#include "throttle.h"
 * DESCRIPTION
 *	After a 429 or 503 with Retry-After, throttle_set() records in
 *	state_dir/throttle/MAILBOX until when Graph asked us to wait;
 *	throttle_until() tells the deliveries that follow (other
 *	processes) to defer at once instead of hitting Graph before then.
 *	Waits are capped at THROTTLE_MAX seconds.
 */
#ifndef M365_THROTTLE_H
#define M365_THROTTLE_H

#include <time.h>

#include "conf.h"

#define THROTTLE_MAX	3600

extern time_t throttle_until(const struct conf *, const char *mailbox);
extern int throttle_set(const struct conf *, const char *mailbox, long secs);

#endif
