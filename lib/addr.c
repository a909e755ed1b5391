/*
 * NAME
 *	addr 3
 * SUMMARY
 *	RFC 5322 address-list parsing for To/Cc/Bcc/From header values
 * DESCRIPTION
 *	See addr.h.  The value is first cut into tokens (atoms, quoted
 *	strings, domain literals, comments, specials; CR, LF, SP and TAB
 *	are white space, so folded values need no unfolding).  The token
 *	list is then split into list elements at top-level "," and ";"
 *	(outside angle brackets, so an obsolete route "<@a,@b:u@d>" stays
 *	one element); a top-level ":" outside angle brackets opens a
 *	group.  RFC 2047 encoded words are atoms and are never decoded.
 *
 *	Parsing is strict about structure (balanced quotes, comments,
 *	brackets; nothing but comments after an angle address) because a
 *	mistake there could hand a copy to the wrong person, and lenient
 *	about content: an element that is not a mailbox becomes a "bad"
 *	item, which callers drop.
 * DIAGNOSTICS
 *	addr_parse_err() returns -1 and a sentence in err.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "strbuf.h"
#include "util.h"

#define TK_ATOM		1
#define TK_QSTR		2
#define TK_DLIT		3
#define TK_COMMENT	4
#define TK_SPECIAL	5

struct addr_tok {
    int     type;
    int     ch;				/* the special character */
    size_t  start;
    size_t  end;
};

struct addr_toks {
    struct addr_tok *t;
    size_t  n;
    size_t  cap;
};

#define ADDR_IS_WSP(c)	((c) == ' ' || (c) == '\t' || (c) == '\r' || (c) == '\n')
#define ADDR_SPECIALS	"()<>[]:;@\\,.\""

/* addr_err - fill the caller's error buffer, if any */

static int addr_err(char *err, size_t errlen, const char *text, size_t pos)
{
    if (err && errlen)
	snprintf(err, errlen, "%s (at byte %lu of the address list)",
		 text, (unsigned long) pos);
    return (-1);
}

/* addr_tok_add - append a token */

static void addr_tok_add(struct addr_toks *tl, int type, int ch,
			         size_t start, size_t end)
{
    if (tl->n == tl->cap) {
	tl->cap = tl->cap ? 2 * tl->cap : 16;
	tl->t = xrealloc(tl->t, tl->cap * sizeof(*tl->t));
    }
    tl->t[tl->n].type = type;
    tl->t[tl->n].ch = ch;
    tl->t[tl->n].start = start;
    tl->t[tl->n].end = end;
    tl->n++;
}

/* addr_atom_char - may this byte appear in an atom (lenient atext) */

static int addr_atom_char(unsigned char c)
{
    if (ADDR_IS_WSP(c))
	return (0);
    if (c < 128 && strchr("()<>[]:;@,.\"", c) != NULL)
	return (0);
    return (1);				/* incl. "\\", CTLs, UTF-8 */
}

/* addr_encoded_word - length of an RFC 2047 word at s, or 0 */

static size_t addr_encoded_word(const char *s, size_t len)
{
    size_t  i = 2;
    int     q;

    if (len < 8 || s[0] != '=' || s[1] != '?')
	return (0);
    /*
     * charset ? encoding ? text ?= ; no white space anywhere, and no
     * RFC 5322 special (RFC 2047 section 5: not in a phrase): other
     * parsers take "=?utf-8?q?a@x?=" as an address, "a,b" as two
     * elements.  Such a word is cut into atoms and specials instead.
     */
    for (q = 0; q < 2; q++) {
	size_t  begin = i;

	while (i < len && s[i] != '?' && !ADDR_IS_WSP((unsigned char) s[i])
	       && strchr(ADDR_SPECIALS, s[i]) == NULL)
	    i++;
	if (i >= len || s[i] != '?' || i == begin)
	    return (0);
	i++;
    }
    while (i + 1 < len && !(s[i] == '?' && s[i + 1] == '=')) {
	if (ADDR_IS_WSP((unsigned char) s[i]) || s[i] == '?'
	    || strchr(ADDR_SPECIALS, s[i]) != NULL)
	    return (0);
	i++;
    }
    if (i + 1 >= len)
	return (0);
    return (i + 2);
}

/* addr_tokenize - cut a header value into tokens */

static int addr_tokenize(const char *v, size_t len, struct addr_toks *tl,
			         char *err, size_t errlen)
{
    size_t  i = 0, start;
    unsigned char c;
    int     depth;

    /* A NUL would cut an address short in every C string made from it. */
    if (memchr(v, 0, len) != NULL) {
	snprintf(err, errlen, "a NUL byte in the header value");
	return (-1);
    }
    while (i < len) {
	c = (unsigned char) v[i];
	if (ADDR_IS_WSP(c)) {
	    i++;
	    continue;
	}
	start = i;
	switch (c) {
	case 0:
	    return (addr_err(err, errlen, "a NUL byte", start));
	case '(':
	    for (depth = 0; i < len; i++) {
		if (v[i] == '\\') {
		    i++;
		} else if (v[i] == '(') {
		    depth++;
		} else if (v[i] == ')') {
		    if (--depth == 0)
			break;
		}
	    }
	    if (i >= len)
		return (addr_err(err, errlen,
			       "a comment \"(\" is not closed with \")\"", start));
	    addr_tok_add(tl, TK_COMMENT, 0, start, ++i);
	    break;
	case '"':
	    for (i++; i < len && v[i] != '"'; i++)
		if (v[i] == '\\')
		    i++;
	    if (i >= len)
		return (addr_err(err, errlen,
			      "a quoted string has no closing quote", start));
	    addr_tok_add(tl, TK_QSTR, 0, start, ++i);
	    break;
	case '[':
	    for (i++; i < len && v[i] != ']'; i++)
		if (v[i] == '\\')
		    i++;
	    if (i >= len)
		return (addr_err(err, errlen,
			     "a domain literal \"[\" has no closing \"]\"", start));
	    addr_tok_add(tl, TK_DLIT, 0, start, ++i);
	    break;
	case ')':
	    return (addr_err(err, errlen, "\")\" without \"(\"", start));
	case ']':
	    return (addr_err(err, errlen, "\"]\" without \"[\"", start));
	case '<':
	case '>':
	case ':':
	case ';':
	case '@':
	case ',':
	case '.':
	    addr_tok_add(tl, TK_SPECIAL, c, start, ++i);
	    break;
	default:
	    if ((i += addr_encoded_word(v + i, len - i)) == start) {
		while (i < len && addr_atom_char((unsigned char) v[i]))
		    i++;
	    }
	    addr_tok_add(tl, TK_ATOM, 0, start, i);
	    break;
	}
    }
    return (0);
}

/* addr_is_word - atom or quoted string */

static int addr_is_word(const struct addr_tok *t)
{
    return (t->type == TK_ATOM || t->type == TK_QSTR);
}

/* addr_is_sp - is token t the special character ch */

static int addr_is_sp(const struct addr_tok *t, int ch)
{
    return (t->type == TK_SPECIAL && t->ch == ch);
}

/*
 * addr_literal_ok - a domain literal of an address that everyone reads
 * alike: "[" letters, digits, ".", ":" or "-" "]" (IPv4, "IPv6:...",
 * RFC 5321 address literals).  "@", quotes, "[" or white space inside
 * would split the address differently in other parsers (and in
 * addr_internal(), which cuts at the last "@").
 */
static int addr_literal_ok(const char *p, size_t n)
{
    size_t  i;

    if (n < 3)
	return (0);
    for (i = 1; i + 1 < n; i++) {
	if ((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z')
	    || (p[i] >= '0' && p[i] <= '9') || p[i] == '.' || p[i] == ':'
	    || p[i] == '-')
	    continue;
	return (0);
    }
    return (1);
}

/* addr_spec_build - addr-spec from tokens (no comments); 0 or -1 */

static int addr_spec_build(const char *v, struct addr_tok **t, size_t n,
			           struct strbuf *out)
{
    size_t  i = 0;
    int     prev_word = 0, words = 0;

    /* local-part: words and dots (obsolete and sloppy dots accepted) */
    for (; i < n && !addr_is_sp(t[i], '@'); i++) {
	if (addr_is_word(t[i])) {
	    if (prev_word)
		return (-1);
	    prev_word = 1;
	    words++;
	} else if (addr_is_sp(t[i], '.')) {
	    prev_word = 0;
	} else {
	    return (-1);
	}
	strbuf_append(out, v + t[i]->start, t[i]->end - t[i]->start);
    }
    if (words == 0)
	return (-1);
    if (i == n)
	return (0);				/* local only, e.g. "root" */
    strbuf_putc(out, '@');
    i++;
    if (i == n)
	return (-1);
    if (t[i]->type == TK_DLIT) {
	if (!addr_literal_ok(v + t[i]->start, t[i]->end - t[i]->start))
	    return (-1);
	strbuf_append(out, v + t[i]->start, t[i]->end - t[i]->start);
	return (i + 1 == n ? 0 : -1);
    }
    /* domain: atom *("." atom) */
    for (prev_word = 0, words = 0; i < n; i++) {
	if (t[i]->type == TK_ATOM) {
	    if (prev_word)
		return (-1);
	    prev_word = 1;
	    words++;
	} else if (addr_is_sp(t[i], '.')) {
	    if (!prev_word)
		return (-1);
	    prev_word = 0;
	} else {
	    return (-1);
	}
	strbuf_append(out, v + t[i]->start, t[i]->end - t[i]->start);
    }
    return (words && prev_word ? 0 : -1);
}

/* addr_item_add - tokens of one list element as an item (bad_group: bad) */

static void addr_item_add(const char *v, const struct addr_toks *tl,
			          size_t first, size_t last, int group,
			          int bad_group, struct addr_list *out)
{
    struct addr_tok **sig = xmalloc((last - first + 1) * sizeof(*sig));
    struct addr_item *it;
    struct strbuf sb;
    size_t  n = 0, i, lt = 0, gt = 0, p;
    int     bad = 0, angle = 0;

    for (i = first; i <= last; i++)
	if (tl->t[i].type != TK_COMMENT)
	    sig[n++] = &tl->t[i];
    for (i = 0; i < n; i++) {
	if (addr_is_sp(sig[i], '<')) {
	    angle = 1;
	    lt = i;
	} else if (addr_is_sp(sig[i], '>')) {
	    gt = i;
	}
    }
    strbuf_init(&sb, STRBUF_MAX_HEADERS);
    if (angle) {
	/* The display name: atoms, quoted strings, obsolete dots. */
	for (i = 0; i < lt; i++)
	    if (!addr_is_word(sig[i]) && !addr_is_sp(sig[i], '.'))
		bad = 1;
	p = lt + 1;
	if (p < gt && addr_is_sp(sig[p], '@')) {
	    /* Obsolete route "@a,@b:" - skip to its colon. */
	    while (p < gt && !addr_is_sp(sig[p], ':'))
		p++;
	    p++;				/* p > gt: no colon, bad */
	}
	if (!bad && (p >= gt || addr_spec_build(v, sig + p, gt - p, &sb) < 0))
	    bad = 1;
    } else if (addr_spec_build(v, sig, n, &sb) < 0) {
	bad = 1;
    }
    if (bad_group || strbuf_failed(&sb))
	bad = 1;				/* too long: never a mailbox */
    if (bad) {
	/* The element's own words, so the item never matches a mailbox. */
	strbuf_reset(&sb);
	for (i = 0; i < n; i++) {
	    if (i > 0 && sig[i]->start != sig[i - 1]->end)
		strbuf_putc(&sb, ' ');
	    strbuf_append(&sb, v + sig[i]->start, sig[i]->end - sig[i]->start);
	}
    }
    out->items = xrealloc(out->items, (out->n + 1) * sizeof(*out->items));
    it = out->items + out->n++;
    it->addr = strbuf_take(&sb);
    if (it->addr == NULL)
	it->addr = xstrdup("");
    it->start = tl->t[first].start;
    it->end = tl->t[last].end;
    it->lt = angle ? sig[lt]->start : it->end;
    it->group = group;
    it->bad = bad;
    free(sig);
}

/* addr_parse_err - parse an address list, with an error text */

int     addr_parse_err(const char *v, size_t len, struct addr_list *out,
		               char *err, size_t errlen)
{
    struct addr_toks tl;
    size_t  i, j, k;
    int     group = 0, angle, ret = 0, bad_group = 0, words;
    struct addr_group *g;

    memset(out, 0, sizeof(*out));
    memset(&tl, 0, sizeof(tl));
    if (err && errlen)
	err[0] = 0;
    if (addr_tokenize(v, len, &tl, err, errlen) < 0) {
	free(tl.t);
	return (-1);
    }
    for (i = 0; i < tl.n; i = j + 1) {
	/* Find the end of this list element. */
	angle = 0;
	for (j = i; j < tl.n; j++) {
	    struct addr_tok *t = tl.t + j;

	    if (addr_is_sp(t, ',') || addr_is_sp(t, ';')
		|| (addr_is_sp(t, ':') && !angle))
		break;
	    if (addr_is_sp(t, '>')) {
		ret = addr_err(err, errlen, "\">\" without \"<\"", t->start);
		goto done;
	    }
	    if (!addr_is_sp(t, '<'))
		continue;
	    if (angle) {
		ret = addr_err(err, errlen, "a second \"<\" in one mailbox",
			       t->start);
		goto done;
	    }
	    angle = 1;
	    for (k = j + 1; k < tl.n && !addr_is_sp(tl.t + k, '>'); k++) {
		if (addr_is_sp(tl.t + k, '<')) {
		    ret = addr_err(err, errlen, "\"<\" inside \"<...>\"",
				   tl.t[k].start);
		    goto done;
		}
	    }
	    if (k == tl.n) {
		ret = addr_err(err, errlen, "\"<\" is not closed with \">\"",
			       t->start);
		goto done;
	    }
	    /* After "<...>" only comments, then "," ";" or the end. */
	    for (j = k + 1; j < tl.n && tl.t[j].type == TK_COMMENT; j++)
		 /* void */ ;
	    if (j < tl.n && !addr_is_sp(tl.t + j, ',')
		&& !addr_is_sp(tl.t + j, ';')) {
		ret = addr_err(err, errlen, "text after \"<address>\" that is"
			     " not separated by a comma", tl.t[j].start);
		goto done;
	    }
	    break;
	}
	if (j < tl.n && addr_is_sp(tl.t + j, ':')) {
	    /* Group start: "Name:" (a colon with angle set cannot occur). */
	    if (group || bad_group) {
		ret = addr_err(err, errlen, "a group inside a group",
			       tl.t[j].start);
		goto done;
	    }

	    /*
	     * The name must be a phrase (words, obsolete dots): in
	     * "a@x Cc: b@y;" other parsers see the address "a@xCc".  A
	     * group with another name is no group: its name and members
	     * are bad items, which callers drop.
	     */
	    for (words = 0, k = i; k < j; k++) {
		if (addr_is_word(tl.t + k))
		    words++;
		else if (tl.t[k].type != TK_COMMENT
			 && !addr_is_sp(tl.t + k, '.'))
		    bad_group = 1;
	    }
	    if (words == 0)
		bad_group = 1;
	    if (bad_group) {
		addr_item_add(v, &tl, i, j, 0, 1, out);
		continue;
	    }
	    out->groups = xrealloc(out->groups,
				(out->ngroups + 1) * sizeof(*out->groups));
	    g = out->groups + out->ngroups++;
	    g->name_start = tl.t[i].start;
	    g->name_end = g->end = tl.t[j].end;
	    group = (int) out->ngroups;
	    continue;
	}
	/* Skip empty elements (",," or only comments). */
	for (k = i; k < j && tl.t[k].type == TK_COMMENT; k++)
	     /* void */ ;
	if (k < j) {
	    addr_item_add(v, &tl, i, j - 1, group, bad_group, out);
	    if (group)
		out->groups[group - 1].end = tl.t[j - 1].end;
	}
	if (j < tl.n && addr_is_sp(tl.t + j, ';')) {
	    if (group)
		out->groups[group - 1].end = tl.t[j].end;
	    group = bad_group = 0;
	}
	/* A ";" outside a group is taken as a list separator. */
    }
done:
    free(tl.t);
    return (ret);
}

/* addr_parse - parse an address list */

int     addr_parse(const char *value, size_t len, struct addr_list *out)
{
    return (addr_parse_err(value, len, out, (char *) 0, 0));
}

/* addr_list_free - release items and groups */

void    addr_list_free(struct addr_list *l)
{
    size_t  i;

    if (l == NULL)
	return;
    for (i = 0; i < l->n; i++)
	free(l->items[i].addr);
    free(l->items);
    free(l->groups);
    memset(l, 0, sizeof(*l));
}

/* addr_comments - the comments of an item, space-separated; free() it */

char   *addr_comments(const char *v, const struct addr_item *it)
{
    struct addr_toks tl;
    const char *s = v + it->start;
    char   *out;
    size_t  i, k, o = 0;
    char    err[100];

    memset(&tl, 0, sizeof(tl));
    if (addr_tokenize(s, it->end - it->start, &tl, err, sizeof(err)) < 0)
	tl.n = 0;
    /* Each comment and a space: at most twice the item's text. */
    out = xmalloc(2 * (it->end - it->start) + 1);
    for (i = 0; i < tl.n; i++) {
	if (tl.t[i].type != TK_COMMENT)
	    continue;
	if (o > 0)
	    out[o++] = ' ';
	for (k = tl.t[i].start; k < tl.t[i].end; k++)
	    if (s[k] != '\r' && s[k] != '\n')
		out[o++] = s[k];
    }
    free(tl.t);
    out[o] = 0;
    return (out);
}

/* addr_trim - span of s without surrounding space and one <> pair */

static void addr_trim(const char *s, size_t *start, size_t *end)
{
    size_t  b = 0, e = strlen(s);

    while (b < e && ADDR_IS_WSP((unsigned char) s[b]))
	b++;
    while (e > b && ADDR_IS_WSP((unsigned char) s[e - 1]))
	e--;
    if (e - b >= 2 && s[b] == '<' && s[e - 1] == '>') {
	b++;
	e--;
	while (b < e && ADDR_IS_WSP((unsigned char) s[b]))
	    b++;
	while (e > b && ADDR_IS_WSP((unsigned char) s[e - 1]))
	    e--;
    }
    *start = b;
    *end = e;
}

/* addr_strip - "<a@b>" -> "a@b"; free() the result */

char   *addr_strip(const char *addr)
{
    size_t  b, e;

    addr_trim(addr, &b, &e);
    return (xstrndup(addr + b, e - b));
}

/* addr_written_local - is s[0..n) a written local part with quoting */

static int addr_written_local(const char *s, size_t n)
{
    size_t  i = 0;
    int     quotes = 0;

    /* Words separated by dots; a word is a quoted string or has no '"'. */
    while (i < n) {
	if (s[i] == '"') {
	    for (i++; i < n && s[i] != '"'; i++)
		if (s[i] == '\\')
		    i++;
	    if (i >= n)
		return (0);
	    i++;
	    quotes++;
	    if (i < n && s[i] != '.')
		return (0);
	} else {
	    while (i < n && s[i] != '.' && s[i] != '"')
		i++;
	    if (i < n && s[i] == '"')
		return (0);
	}
	if (i < n)
	    i++;				/* the dot */
    }
    return (quotes > 0);
}

/* addr_internal - unquoted comparison form; free() the result */

char   *addr_internal(const char *addr)
{
    size_t  b, e, i, llen;
    const char *at;
    char   *out, *o;
    int     quoted = 0;

    addr_trim(addr, &b, &e);
    out = xstrndup(addr + b, e - b);
    at = strrchr(out, '@');
    llen = at ? (size_t) (at - out) : strlen(out);

    /*
     * Only a local part written with RFC 5322 quoting is unquoted; a
     * '"' that is not quoting syntax is taken literally (an MTA's
     * internal form, e.g. Postfix's ${recipient}, has no quoting).
     */
    if (!addr_written_local(out, llen))
	return (out);
    for (o = out, i = 0; i < llen; i++) {
	if (out[i] == '"') {
	    quoted = !quoted;
	} else if (quoted && out[i] == '\\' && i + 1 < llen) {
	    *o++ = out[++i];
	} else {
	    *o++ = out[i];
	}
    }
    memmove(o, out + llen, strlen(out + llen) + 1);
    return (out);
}

/* addr_same - same mailbox, as Exchange compares addresses */

int     addr_same(const char *a, const char *b)
{
    char   *ia = addr_internal(a);
    char   *ib = addr_internal(b);
    int     same = strcasecmp(ia, ib) == 0;

    free(ia);
    free(ib);
    return (same);
}

/* addr_dot_atom - is s[0..n) a dot-atom (RFC 5322, UTF-8 allowed) */

static int addr_dot_atom(const char *s, size_t n)
{
    size_t  i;

    if (n == 0 || s[0] == '.' || s[n - 1] == '.')
	return (0);
    for (i = 0; i < n; i++) {
	unsigned char c = (unsigned char) s[i];

	if (c == '.') {
	    if (i + 1 < n && s[i + 1] == '.')
		return (0);
	} else if (c <= ' ' || c == 127
		   || (c < 128 && strchr(ADDR_SPECIALS, c) != NULL)) {
	    return (0);
	}
    }
    return (1);
}

/* addr_quote - header-safe addr-spec of a written or internal address */

char   *addr_quote(const char *addr)
{
    char   *bare = addr_internal(addr);
    char   *out = addr_quote_internal(bare);

    free(bare);
    return (out);
}

/*
 * addr_quote_internal - header-safe addr-spec of an address that is
 * already in internal form (addr_internal()); free() the result.  Its
 * quotes are taken literally: the internal form of "\"a\".b"@x is
 * "a".b@x, which addr_quote() would read as written (a.b@x).
 */
char   *addr_quote_internal(const char *addr)
{
    char   *bare = addr_strip(addr);
    const char *at = strrchr(bare, '@');
    size_t  llen = at ? (size_t) (at - bare) : strlen(bare);
    struct strbuf sb;
    size_t  i;

    if (addr_dot_atom(bare, llen))
	return (bare);
    /* Two bytes per input byte and the quotes at most: never cut. */
    strbuf_init(&sb, 2 * strlen(bare) + 2);
    strbuf_putc(&sb, '"');
    for (i = 0; i < llen; i++) {
	if (bare[i] == '"' || bare[i] == '\\')
	    strbuf_putc(&sb, '\\');
	strbuf_putc(&sb, bare[i]);
    }
    strbuf_putc(&sb, '"');
    if (at)
	strbuf_puts(&sb, at);
    free(bare);
    return (strbuf_take(&sb));
}
