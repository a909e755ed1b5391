/*
 * NAME
 *	fuzz_model 3h
 * SUMMARY
 *	an independent, strict reader of the recipients Graph could see
 * SYNOPSIS
 *	#include "fuzz_model.h"
 * DESCRIPTION
 *	fuzz_model_rcpts() reads a message (or a header section) the way a
 *	strict MIME parser would, without any code of the relay: lines end
 *	at CRLF, a bare CR or a bare LF; the header section ends at the
 *	first empty line; a line starting with SP or HT continues the
 *	field before it; a field is To, Cc or Bcc when the text before its
 *	first colon, without trailing SP/HT, is one of those names in any
 *	case.  Each such value is unfolded and read as an RFC 5322 address
 *	list: quoted strings, nested comments, domain literals, angle
 *	addresses with obsolete routes, groups.  Every mailbox gives its
 *	addr-spec, the local part unquoted, without white space or
 *	comments (the form of addr_internal()).
 *
 *	A value whose reading depends on the parser is "ambiguous": an
 *	unterminated quoted string, comment, domain literal or "<", text
 *	after ">", a second "<" in one mailbox, "@", "<" or a domain
 *	literal in a display name or group name (Python's email package
 *	takes "a@x <b@y>" as two addresses), a group without a name, a
 *	group in a group.  The relay must never hand such a value to Graph.
 *
 *	fuzz_model_rcpts() calls found(addr, arg) for every address (a
 *	NUL-terminated string, valid during the call) and returns 0, or
 *	-1 with *why set when a To/Cc/Bcc value is ambiguous.
 */
#ifndef M365_FUZZ_MODEL_H
#define M365_FUZZ_MODEL_H

#include <stddef.h>

extern int fuzz_model_rcpts(const char *msg, size_t len,
			            void (*found) (const char *, void *),
			            void *arg, const char **why);

#endif
