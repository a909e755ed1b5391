/*
 * NAME
 *	fuzz_model 3
 * SUMMARY
 *	an independent, strict reader of the recipients Graph could see
 * DESCRIPTION
 *	See fuzz_model.h.  Written from RFC 5322 (sections 2.2, 3.2 and
 *	3.4, with the obsolete routes and dots of section 4.4) and from
 *	what Python's email package does with line ends, not from relay
 *	code: the fuzz targets compare the relay's reading with this one.
 *	Plain malloc(); the fuzz targets treat out of memory as a crash.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fuzz_model.h"

#define FM_ATOM		1
#define FM_QSTR		2
#define FM_DLIT		3
#define FM_COMMENT	4
#define FM_SPECIAL	5

#define FM_SPECIALS	"()<>[]:;@,.\""

struct fm_tok {
    int     type;
    int     ch;				/* FM_SPECIAL: the character */
    const char *p;			/* the token's text */
    size_t  n;
};

struct fm_toks {
    struct fm_tok *t;
    size_t  n;
    size_t  cap;
};

/* fm_alloc - realloc() that crashes on failure (a fuzzing finding) */

static void *fm_alloc(void *p, size_t n)
{
    if ((p = realloc(p, n ? n : 1)) == NULL)
	abort();
    return (p);
}

/* fm_add - append a token */

static void fm_add(struct fm_toks *tl, int type, int ch, const char *p,
		           size_t n)
{
    if (tl->n == tl->cap) {
	tl->cap = tl->cap ? 2 * tl->cap : 32;
	tl->t = fm_alloc(tl->t, tl->cap * sizeof(*tl->t));
    }
    tl->t[tl->n].type = type;
    tl->t[tl->n].ch = ch;
    tl->t[tl->n].p = p;
    tl->t[tl->n].n = n;
    tl->n++;
}

/* fm_close - end of a quoted string, comment or literal; 0 if none */

static size_t fm_close(const char *v, size_t n, size_t i, char close,
		               int nest)
{
    int     depth = 1;

    /* v[i] is the opening character; quoted-pair escapes anything. */
    for (i++; i < n; i++) {
	if (v[i] == '\\')
	    i++;
	else if (v[i] == close && --depth == 0)
	    return (i + 1);
	else if (nest && v[i] == '(')
	    depth++;
    }
    return (0);
}

/* fm_tokenize - an unfolded value into tokens; -1 when unterminated */

static int fm_tokenize(const char *v, size_t n, struct fm_toks *tl,
		               const char **why)
{
    size_t  i = 0, e;

    while (i < n) {
	if (v[i] == ' ' || v[i] == '\t') {
	    i++;
	    continue;
	}
	switch (v[i]) {
	case '"':
	    if ((e = fm_close(v, n, i, '"', 0)) == 0) {
		*why = "an unterminated quoted string";
		return (-1);
	    }
	    fm_add(tl, FM_QSTR, 0, v + i, e - i);
	    break;
	case '(':
	    if ((e = fm_close(v, n, i, ')', 1)) == 0) {
		*why = "an unterminated comment";
		return (-1);
	    }
	    fm_add(tl, FM_COMMENT, 0, v + i, e - i);
	    break;
	case '[':
	    if ((e = fm_close(v, n, i, ']', 0)) == 0) {
		*why = "an unterminated domain literal";
		return (-1);
	    }
	    fm_add(tl, FM_DLIT, 0, v + i, e - i);
	    break;
	case ')':
	case ']':
	    *why = "a stray \")\" or \"]\"";
	    return (-1);
	case '<':
	case '>':
	case ':':
	case ';':
	case '@':
	case ',':
	case '.':
	    e = i + 1;
	    fm_add(tl, FM_SPECIAL, v[i], v + i, 1);
	    break;
	default:
	    for (e = i; e < n && v[e] != ' ' && v[e] != '\t'
		 && strchr(FM_SPECIALS, v[e]) == NULL; e++)
		 /* void */ ;
	    fm_add(tl, FM_ATOM, 0, v + i, e - i);
	    break;
	}
	i = e;
    }
    return (0);
}

/* fm_is - is t the special ch */

static int fm_is(const struct fm_tok *t, int ch)
{
    return (t->type == FM_SPECIAL && t->ch == ch);
}

/*
 * fm_phrase - tokens [a, b) are a display or group name: words, dots
 * and comments, with at least min_words words (a group needs a name;
 * parsers agree on ". <a@x>", not on "a@x <b@y>")
 */
static int fm_phrase(const struct fm_toks *tl, size_t a, size_t b,
		             size_t min_words)
{
    size_t  words = 0;

    for (; a < b; a++) {
	if (tl->t[a].type == FM_ATOM || tl->t[a].type == FM_QSTR)
	    words++;
	else if (tl->t[a].type != FM_COMMENT && !fm_is(tl->t + a, '.'))
	    return (0);
    }
    return (words >= min_words);
}

/* fm_emit - addr-spec of tokens [a, b), local part unquoted */

static void fm_emit(const struct fm_toks *tl, size_t a, size_t b,
		            void (*found) (const char *, void *), void *arg)
{
    char   *s = NULL;
    size_t  len = 0, k, cap = 1;
    const struct fm_tok *t;

    for (k = a; k < b; k++)
	cap += tl->t[k].n;
    s = fm_alloc(s, cap);
    for (k = a; k < b; k++) {
	t = tl->t + k;
	if (t->type == FM_COMMENT)
	    continue;
	if (t->type == FM_QSTR) {
	    size_t  i;

	    for (i = 1; i + 1 < t->n; i++) {
		if (t->p[i] == '\\' && i + 2 < t->n)
		    i++;
		s[len++] = t->p[i];
	    }
	} else {
	    memcpy(s + len, t->p, t->n);
	    len += t->n;
	}
    }
    s[len] = 0;
    if (len > 0)
	found(s, arg);
    free(s);
}

/* fm_mailbox - one list element [a, b); -1 when ambiguous */

static int fm_mailbox(const struct fm_toks *tl, size_t a, size_t b,
		              void (*found) (const char *, void *), void *arg,
		              const char **why)
{
    size_t  k, lt = b, gt = b;

    for (k = a; k < b; k++) {
	if (fm_is(tl->t + k, '<')) {
	    if (lt < b) {
		*why = "a second \"<\" in one mailbox";
		return (-1);
	    }
	    lt = k;
	} else if (fm_is(tl->t + k, '>')) {
	    if (lt == b || gt < b) {
		*why = "a stray \">\"";
		return (-1);
	    }
	    gt = k;
	}
    }
    if (lt == b) {
	/* addr-spec: any word, dot, "@" or literal, comments ignored. */
	fm_emit(tl, a, b, found, arg);
	return (0);
    }
    if (gt == b) {
	*why = "an unterminated \"<\"";
	return (-1);
    }
    if (!fm_phrase(tl, a, lt, 0)) {
	*why = "a display name that is not a phrase (\"@\", a literal)";
	return (-1);
    }
    for (k = gt + 1; k < b; k++) {
	if (tl->t[k].type != FM_COMMENT) {
	    *why = "text after \">\"";
	    return (-1);
	}
    }
    /* An obsolete route "@a,@b:" before the address (CFWS allowed). */
    for (k = lt + 1; k < gt && tl->t[k].type == FM_COMMENT; k++)
	 /* void */ ;
    if (k < gt && fm_is(tl->t + k, '@')) {
	while (k < gt && !fm_is(tl->t + k, ':'))
	    k++;
	if (k == gt) {
	    *why = "a route without \":\"";
	    return (-1);
	}
	k++;
    }
    fm_emit(tl, k, gt, found, arg);
    return (0);
}

/* fm_list - one unfolded To/Cc/Bcc value */

static int fm_list(const char *v, size_t n,
		           void (*found) (const char *, void *), void *arg,
		           const char **why)
{
    struct fm_toks tl;
    size_t  i, start = 0;
    int     group = 0, angle = 0, ret = 0;

    memset(&tl, 0, sizeof(tl));
    if (fm_tokenize(v, n, &tl, why) < 0) {
	free(tl.t);
	return (-1);
    }
    for (i = 0; i <= tl.n && ret == 0; i++) {
	if (i < tl.n && fm_is(tl.t + i, '<'))
	    angle = 1;
	else if (i < tl.n && fm_is(tl.t + i, '>'))
	    angle = 0;
	if (i < tl.n && angle)
	    continue;
	if (i < tl.n && fm_is(tl.t + i, ':')) {
	    if (group) {
		*why = "a group inside a group";
		ret = -1;
	    } else if (!fm_phrase(&tl, start, i, 1)) {
		*why = "a group name that is not a phrase";
		ret = -1;
	    }
	    group = 1;
	    start = i + 1;
	    continue;
	}
	if (i < tl.n && !fm_is(tl.t + i, ',') && !fm_is(tl.t + i, ';'))
	    continue;
	ret = fm_mailbox(&tl, start, i, found, arg, why);
	if (i < tl.n && fm_is(tl.t + i, ';'))
	    group = 0;
	start = i + 1;
    }
    free(tl.t);
    return (ret);
}

/* fm_kind - is the field name To, Cc or Bcc */

static int fm_kind(const char *p, size_t n)
{
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
	n--;
    return ((n == 2 && (strncasecmp(p, "to", 2) == 0
			|| strncasecmp(p, "cc", 2) == 0))
	    || (n == 3 && strncasecmp(p, "bcc", 3) == 0));
}

/* fuzz_model_rcpts - addresses of all To/Cc/Bcc fields */

int     fuzz_model_rcpts(const char *m, size_t len,
			         void (*found) (const char *, void *),
			         void *arg, const char **why)
{
    char   *val = NULL;
    size_t  vlen = 0, pos = 0, e, next;
    const char *colon;
    int     rcpt = 0, ret = 0;

    val = fm_alloc(NULL, len + 1);
    for (;;) {
	/* The next line: it ends at CRLF, CR or LF. */
	for (e = pos; e < len && m[e] != '\r' && m[e] != '\n'; e++)
	     /* void */ ;
	next = e + (e + 1 < len && m[e] == '\r' && m[e + 1] == '\n' ? 2 : 1);
	if (pos < len && e > pos && (m[pos] == ' ' || m[pos] == '\t')) {
	    if (rcpt) {
		memcpy(val + vlen, m + pos, e - pos);
		vlen += e - pos;
	    }
	    pos = next;
	    continue;
	}
	/* A new field, an empty line or the end: the last field is done. */
	if (rcpt && (ret = fm_list(val, vlen, found, arg, why)) < 0)
	    break;
	rcpt = 0;
	vlen = 0;
	if (pos >= len || e == pos)
	    break;				/* the end of the header */
	if ((colon = memchr(m + pos, ':', e - pos)) != NULL
	    && fm_kind(m + pos, (size_t) (colon - m - pos))) {
	    rcpt = 1;
	    vlen = e - (size_t) (colon - m) - 1;
	    memcpy(val, colon + 1, vlen);
	}
	pos = next;
    }
    free(val);
    return (ret);
}
