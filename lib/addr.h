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
 *	and stray commas.  An RFC 2047 word with an RFC 5322 special in it
 *	("=?utf-8?q?a@x?=", not allowed in a phrase) is not taken as one
 *	word but as the atoms and specials other parsers see in it.  The
 *	rule is: wherever a common parser (Python's email package, the
 *	emulator's model of Exchange) could see another address, the item
 *	is bad, so it is never kept in a header Graph reads.
 *
 *	Each item records the addr-spec (without angle brackets, routes
 *	or comments) and the byte span of the whole mailbox in the value,
 *	so a caller can rebuild the list keeping the original text of the
 *	mailboxes it keeps, and where its "<" is: the display name of
 *	"Name <a@x>" is the text before it.  addr_comments() returns the
 *	comments of an item ("(Name)" of the old form "a@x (Name)"),
 *	joined by one space, line ends removed; malloc()ed.
 *
 *	An element that is not a mailbox (a phrase without address, two
 *	addresses without a comma, "<>", a domain literal other than "["
 *	letters, digits, ".", ":", "-" "]", a display name with "@" in it,
 *	a group whose name is not a phrase, such as "a@x Cc: b@y;": its
 *	"name:" and each member) still yields an item, with
 *	bad = 1 and addr set to its text; such an item never matches an
 *	address (addr_same() with a bad item's addr is meaningless), so a
 *	caller drops it or reports it.
 *
 *	addr_parse_err() is addr_parse() with an error text.
 *
 *	addr_same() compares two addr-specs the way Exchange does:
 *	case-insensitive, angle brackets and surrounding space ignored,
 *	quoting of the local part ignored ("a b"@x equals a b@x).
 *
 *	addr_internal() returns that comparison form: no angle brackets,
 *	local part unquoted (the form Postfix passes as ${recipient}).
 *	addr_quote() turns an internal or written address into an
 *	addr-spec that is safe in a header: the local part is quoted
 *	(RFC 5322 quoted-string) when it is not a dot-atom.
 *	addr_quote_internal() does the same for an address known to be in
 *	internal form, whose quote characters are literal (an internal
 *	form can look like written quoting: "a".b@x).  Results of
 *	addr_strip(), addr_internal() and addr_quote*() are malloc()ed.
 * DIAGNOSTICS
 *	addr_parse() returns -1 on unparseable input (unbalanced quotes,
 *	brackets or comments, a NUL byte, text after "<address>" without a
 *	comma, nested "<" or groups); items parsed so far are kept.
 */
#ifndef M365_ADDR_H
#define M365_ADDR_H

#include <stddef.h>

struct addr_item {
    char   *addr;			/* addr-spec, e.g. "a@example.com" */
    size_t  start;			/* span of the mailbox text */
    size_t  end;			/* (end exclusive) */
    size_t  lt;				/* the "<" of <addr>, end if none */
    int     group;			/* 0, or 1.. for the Nth group */
    int     bad;			/* not a mailbox (see above) */
};

struct addr_group {
    size_t  name_start;			/* span of "Name:" incl. colon */
    size_t  name_end;
    size_t  end;			/* end of the group incl. ";" */
};

struct addr_list {
    struct addr_item *items;
    size_t  n;
    struct addr_group *groups;		/* groups[k-1] for group k */
    size_t  ngroups;
};

extern int addr_parse(const char *value, size_t len, struct addr_list *out);
extern int addr_parse_err(const char *value, size_t len,
			          struct addr_list *out, char *err, size_t errlen);
extern void addr_list_free(struct addr_list *);
extern char *addr_comments(const char *value, const struct addr_item *);
extern int addr_same(const char *a, const char *b);
extern char *addr_strip(const char *addr);	/* "<a@b>" -> "a@b" */
extern char *addr_internal(const char *addr);	/* "<\"a b\"@x>" -> a b@x */
extern char *addr_quote(const char *addr);	/* a b@x -> "a b"@x */
extern char *addr_quote_internal(const char *addr);

#endif
