/*
 * NAME
 *	mlfi 3h
 * SUMMARY
 *	m365-milter: libmilter callbacks (filter mode and deliver mode)
 * SYNOPSIS
 *	#include "mlfi.h"
 * DESCRIPTION
 *	mlfi_register() registers the callbacks with libmilter under the
 *	name "m365-milter".  Each SMTP connection gets one context
 *	(allocated at MAIL FROM, freed in xxfi_close); each message
 *	takes a reference to the current configuration at MAIL FROM and
 *	drops it at end of message or abort (see policy.h).
 *
 *	Filter mode checks the envelope sender's account, the size
 *	(SIZE= at MAIL FROM, byte count at end of message) and rewrites
 *	the sender, From: and Message-ID as configured.  Deliver mode
 *	sends the message through the relay core (deliver_with()) at end
 *	of message and removes the recipients it delivered; while Graph
 *	works it sends progress replies (smfi_progress()) every 10
 *	seconds so that the MTA's milter timeout does not expire.  The
 *	body is never kept in filter mode (it is only counted and
 *	hashed); in deliver mode it is held in a struct msg (memory up
 *	to memory_limit, then an unlinked temporary file).
 *
 *	mlfi_shutdown() closes the connections kept alive for deliver
 *	mode (call it after smfi_main() returns).
 * DIAGNOSTICS
 *	mlfi_register() returns MI_SUCCESS or MI_FAILURE.
 */
#ifndef M365_MILTER_MLFI_H
#define M365_MILTER_MLFI_H

extern int mlfi_register(void);
extern void mlfi_shutdown(void);

#endif
