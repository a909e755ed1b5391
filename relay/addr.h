/*
 * NAME
 *	addr 3h
 * SUMMARY
 *	RFC 5322 address-list parsing for To/Cc/Bcc/From header values
 * SYNOPSIS
 *	#include "addr.h"
 * DESCRIPTION
 *	addr_parse() splits an (unfolded or folded) header value into
 *	mailboxes.  It understands display names (atoms, quoted strings
 *	with escapes, RFC 2047 encoded words, which are never decoded),
 *	comments (nested), angle addresses with obsolete routes, bare
 *	addr-specs, groups ("Team: a@x, b@y;", "undisclosed-recipients:;")
 *	and stray commas.  Each item records the addr-spec (without angle
 *	brackets, routes or comments) and the byte span of the whole
 *	mailbox in the value, so a caller can rebuild the list keeping the
 *	original text of the mailboxes it keeps.
 *
 *	addr_same() compares two addr-specs the way Exchange does:
 *	case-insensitive, angle brackets and surrounding space ignored.
 * DIAGNOSTICS
 *	addr_parse() returns -1 on unparseable input (unbalanced quotes,
 *	brackets or comments); items parsed so far are kept.
 */
#ifndef M365_ADDR_H
#define M365_ADDR_H

#include <stddef.h>

struct addr_item {
    char   *addr;			/* addr-spec, e.g. "a@example.com" */
    size_t  start;			/* span of the mailbox text */
    size_t  end;			/* (end exclusive) */
    int     group;			/* 0, or 1.. for the Nth group */
};

struct addr_group {
    size_t  name_start;			/* span of "Name:" incl. colon */
    size_t  name_end;
};

struct addr_list {
    struct addr_item *items;
    size_t  n;
    struct addr_group *groups;		/* groups[k-1] for group k */
    size_t  ngroups;
};

extern int addr_parse(const char *value, size_t len, struct addr_list *out);
extern void addr_list_free(struct addr_list *);
extern int addr_same(const char *a, const char *b);
extern char *addr_strip(const char *addr);	/* "<a@b>" -> "a@b" */

#endif
