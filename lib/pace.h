/*
 * NAME
 *	pace 3h
 * SUMMARY
 *	pace uploads per app and mailbox across processes
 * SYNOPSIS
 *	#include "pace.h"
 * DESCRIPTION
 *	Outlook allows each app 15 MB of uploads (POST, PUT, PATCH bodies)
 *	per mailbox in 30 seconds (graph-facts.md section 3.1; more is
 *	answered with 429).  pace_reserve() books bytes of the budget
 *	(conf->upload_budget per CONF_UPLOAD_WINDOW seconds) for the app
 *	client_id and a mailbox before a request body of that size is
 *	sent: at once when the bookings of the last window leave room,
 *	else after sleeping until enough of them have aged out.  A booking
 *	larger than the whole budget goes through once the window is
 *	empty.
 *
 *	The bookings of all processes are one small file,
 *	state_dir/throttle/upload-HASH.budget (HASH from client_id and the
 *	mailbox), read and rewritten under its flock(): lines
 *	"MILLISECONDS BYTES".  It needs no fsync: after a crash the worst
 *	case is one window without pacing, which Graph answers with 429.
 * DIAGNOSTICS
 *	0 when the bytes may go; -1 with res filled (4.7.0, the message is
 *	deferred) when the wait would end after max_wait seconds, or 4.3.0
 *	when the budget file cannot be used.
 */
#ifndef M365_PACE_H
#define M365_PACE_H

#include "conf.h"
#include "status.h"

extern int pace_reserve(const struct conf *, const char *client_id,
			        const char *mailbox, long long bytes,
			        double max_wait, struct m365_result *);

#endif
