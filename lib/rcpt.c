/*
 * NAME
 *	rcpt 3
 * SUMMARY
 *	make Graph deliver to exactly the envelope recipients
 * DESCRIPTION
 *	See rcpt.h.  Details of rcpt_rewrite():
 *
 *	Every public function first runs msg_hdr_clean() over a copy of
 *	the header section (bare CR and NUL become a space, "To :" becomes
 *	"To:"), so it reads the header the way Graph will: msg.c applies
 *	the same rule to every header line it stores, and rcpt_rewrite()
 *	writes the cleaned form.
 *
 *	Header names match case-insensitively; a field is its name line
 *	plus continuation lines.  Envelope recipients may be given with
 *	or without <>; they are compared with addr_same(), so quoting of
 *	the local part does not matter.
 *
 *	A To/Cc field from which nothing is removed is copied byte for
 *	byte (a DKIM signature over To and Cc stays valid), also when it
 *	is empty or names an envelope recipient twice (still one
 *	recipient).  Otherwise its value is rebuilt from the original
 *	text of the kept mailboxes, joined with ", " and folded at 78
 *	columns; the original field-name spelling is kept.  A group keeps
 *	"Name:", its kept members and ";"; a group whose members are all
 *	removed is dropped; a group that was empty
 *	("undisclosed-recipients:;") is kept as written.  A rebuilt field
 *	with no mailbox left is removed.
 *
 *	All Bcc fields are removed; one "Bcc:" field, listing the envelope
 *	recipients that no kept To/Cc mailbox names (envelope order, no
 *	duplicates), goes after the last To/Cc field, or at the end.  An
 *	envelope address is written as an addr-spec, its local part quoted
 *	when needed; each one is parsed back before use, so a recipient
 *	that cannot be written safely (CR, LF, other controls, a broken
 *	domain) is an error rather than a wrong header.
 *
 *	The output uses the line ending of the input: LF when the input
 *	has LF line ends only, else CRLF (also for an input without any
 *	line end), so a message never gets mixed line ends.
 *
 *	rcpt_from_headers() and rcpt_header_from() return addresses in
 *	the internal form (no angle brackets, local part unquoted), the
 *	form an MTA passes as an envelope address.
 * DIAGNOSTICS
 *	-1 with a sentence in err.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "addr.h"
#include "msg.h"
#include "rcpt.h"
#include "util.h"

#define RCPT_OTHER	0
#define RCPT_TO		1
#define RCPT_CC		2
#define RCPT_BCC	3
#define RCPT_FROM	4

#define RCPT_FOLD_COL	78

struct rcpt_field {
    size_t  start;			/* first byte of the name */
    size_t  colon;			/* the colon, or end if none */
    size_t  vend;			/* end of value, without line end */
    size_t  end;			/* end incl. line end */
    int     kind;
};

struct rcpt_fields {
    struct rcpt_field *f;
    size_t  n;
};

struct rcpt_out {
    struct strbuf *sb;
    const char *eol;
    size_t  col;			/* column of the current line */
    size_t  min_col;			/* do not fold before this */
    int     fail;			/* an append hit the size cap */
};

static const char *rcpt_kind_name[] = {"", "To", "Cc", "Bcc", "From"};

/* rcpt_fields_split - cut a header section into fields */

static void rcpt_fields_split(const char *hdr, size_t len,
			              struct rcpt_fields *fl)
{
    struct msg_field mf;
    struct rcpt_field *f;
    size_t  pos = 0;
    int     kind;

    fl->f = NULL;
    fl->n = 0;
    while (msg_hdr_next(hdr, len, &pos, &mf) == 0) {
	for (kind = RCPT_FROM; kind > RCPT_OTHER; kind--)
	    if (mf.name_len == strlen(rcpt_kind_name[kind])
		&& strncasecmp(hdr + mf.start, rcpt_kind_name[kind],
			       mf.name_len) == 0)
		break;
	fl->f = xrealloc(fl->f, (fl->n + 1) * sizeof(*fl->f));
	f = fl->f + fl->n++;
	f->start = mf.start;
	f->colon = mf.colon;
	f->vend = mf.vend;
	f->end = mf.end;
	f->kind = kind;
    }
}

/* rcpt_clean - hdr as every reader sees it: a cleaned copy */

static char *rcpt_clean(const char *hdr, size_t *len)
{
    char   *copy = xmalloc(*len + 1);

    memcpy(copy, hdr, *len);
    *len = msg_hdr_clean(copy, *len);
    copy[*len] = 0;
    return (copy);
}

/* rcpt_put - append bytes, remember a size-cap failure */

static void rcpt_put(struct rcpt_out *o, const char *p, size_t n)
{
    if (strbuf_append(o->sb, p, n) < 0)
	o->fail = 1;
}

/* rcpt_fold_item - append ", item" or " item", folding before it */

static void rcpt_fold_item(struct rcpt_out *o, int comma,
			           const char *text, size_t len)
{
    const char *nl = memchr(text, '\n', len);
    size_t  first = nl ? (size_t) (nl - text) : len;
    size_t  i;

    if (comma) {
	rcpt_put(o, ",", 1);
	o->col++;
    }
    if (o->col > o->min_col && o->col + 1 + first > RCPT_FOLD_COL) {
	rcpt_put(o, o->eol, strlen(o->eol));
	rcpt_put(o, " ", 1);
	o->col = 1;
    } else {
	rcpt_put(o, " ", 1);
	o->col++;
    }
    rcpt_put(o, text, len);
    if (nl) {
	for (i = len; text[i - 1] != '\n'; i--)
	     /* void */ ;
	o->col = len - i;
    } else {
	o->col += len;
    }
}

/* rcpt_start_field - begin a field with the given name text */

static void rcpt_start_field(struct rcpt_out *o, const char *name, size_t n)
{
    if (o->sb->len > 0 && o->sb->data[o->sb->len - 1] != '\n')
	rcpt_put(o, o->eol, strlen(o->eol));
    rcpt_put(o, name, n);
    o->col = o->min_col = n;
}

/* rcpt_rebuild - write a To/Cc field with only the kept mailboxes */

static void rcpt_rebuild(struct rcpt_out *o, const char *hdr,
			         const struct rcpt_field *f,
			         const struct addr_list *l, const char *keep)
{
    const char *v = hdr + f->colon + 1;
    size_t  ii = 0, gi = 0, k, first;
    int     comma = 0, member;
    const struct addr_group *g;

    rcpt_start_field(o, hdr + f->start, f->colon + 1 - f->start);
    while (ii < l->n || gi < l->ngroups) {
	if (gi < l->ngroups
	    && (ii >= l->n || l->groups[gi].name_start < l->items[ii].start)) {
	    g = l->groups + gi++;
	    for (first = ii; ii < l->n && l->items[ii].group == (int) gi; ii++)
		 /* void */ ;
	    if (first == ii) {
		/* An empty group, as written. */
		rcpt_fold_item(o, comma, v + g->name_start,
			       g->end - g->name_start);
		comma = 1;
		continue;
	    }
	    for (k = first; k < ii && !keep[k]; k++)
		 /* void */ ;
	    if (k == ii)
		continue;			/* all members removed */
	    rcpt_fold_item(o, comma, v + g->name_start,
			   g->name_end - g->name_start);
	    for (member = 0, k = first; k < ii; k++) {
		if (!keep[k])
		    continue;
		rcpt_fold_item(o, member, v + l->items[k].start,
			       l->items[k].end - l->items[k].start);
		member = 1;
	    }
	    rcpt_put(o, ";", 1);
	    o->col++;
	    comma = 1;
	} else {
	    if (keep[ii]) {
		rcpt_fold_item(o, comma, v + l->items[ii].start,
			       l->items[ii].end - l->items[ii].start);
		comma = 1;
	    }
	    ii++;
	}
    }
    rcpt_put(o, o->eol, strlen(o->eol));
}

/* rcpt_env_check - canonical form of one envelope recipient, or NULL */

static char *rcpt_env_check(const char *env, char *err, size_t errlen)
{
    const unsigned char *cp;
    char   *canon, *quoted, *back;
    struct addr_list l;
    int     ok;

    for (cp = (const unsigned char *) env; *cp; cp++) {
	if (*cp < 0x20 || *cp == 0x7f) {
	    snprintf(err, errlen, "envelope recipient \"%.100s\" contains a "
		     "control character; it cannot be put into a header",
		     env);
	    return (NULL);
	}
    }
    canon = addr_internal(env);
    if (*canon == 0) {
	snprintf(err, errlen, "an envelope recipient is empty");
	free(canon);
	return (NULL);
    }
    /* The Bcc: text must parse back to exactly this address. */
    quoted = addr_quote_internal(canon);
    ok = addr_parse(quoted, strlen(quoted), &l) == 0 && l.n == 1
	&& l.ngroups == 0 && !l.items[0].bad;
    if (ok) {
	back = addr_internal(l.items[0].addr);
	ok = strcmp(back, canon) == 0;
	free(back);
    }
    addr_list_free(&l);
    free(quoted);
    if (!ok) {
	snprintf(err, errlen, "envelope recipient \"%.100s\" is not a valid "
		 "mail address (check the domain part)", env);
	free(canon);
	return (NULL);
    }
    return (canon);
}

/* rcpt_rewrite - To/Cc/Bcc that name exactly the envelope recipients */

int     rcpt_rewrite(const char *raw, size_t hdrlen, char *const *env,
		             size_t nenv, struct strbuf *out,
		             struct rcpt_plan *plan, char *err, size_t errlen)
{
    char   *hdr = NULL;
    struct rcpt_fields fl;
    struct addr_list *lists = NULL;
    char  **keeps = NULL;
    char  **envc;
    char   *covered, *changed = NULL;
    char   *canon, *q;
    struct rcpt_out o;
    struct rcpt_plan dummy;
    size_t  ne = 0, i, j, e;
    long    last_tocc = -1;
    int     ret = -1;
    char    perr[256];

    if (plan == NULL)
	plan = &dummy;
    memset(plan, 0, sizeof(*plan));
    if (nenv == 0) {
	snprintf(err, errlen, "no envelope recipients were given");
	return (-1);
    }
    envc = xcalloc(nenv, sizeof(*envc));
    covered = xcalloc(nenv, 1);
    for (i = 0; i < nenv; i++) {
	if ((canon = rcpt_env_check(env[i], err, errlen)) == NULL)
	    goto done_env;
	for (j = 0; j < ne && strcasecmp(envc[j], canon) != 0; j++)
	     /* void */ ;
	if (j < ne)
	    free(canon);			/* duplicate */
	else
	    envc[ne++] = canon;
    }
    hdr = rcpt_clean(raw, &hdrlen);
    rcpt_fields_split(hdr, hdrlen, &fl);
    lists = xcalloc(fl.n ? fl.n : 1, sizeof(*lists));
    keeps = xcalloc(fl.n ? fl.n : 1, sizeof(*keeps));
    changed = xcalloc(fl.n ? fl.n : 1, 1);

    /* Decide which To/Cc mailboxes stay. */
    for (i = 0; i < fl.n; i++) {
	struct rcpt_field *f = fl.f + i;

	if (f->kind != RCPT_TO && f->kind != RCPT_CC && f->kind != RCPT_BCC)
	    continue;
	if (addr_parse_err(hdr + f->colon + 1, f->vend - f->colon - 1,
			   lists + i, perr, sizeof(perr)) < 0) {
	    if (f->kind == RCPT_BCC) {
		plan->removed += lists[i].n ? lists[i].n : 1;
		continue;			/* removed anyway */
	    }
	    snprintf(err, errlen, "cannot parse the %s: header: %s; the "
		     "message is refused rather than risk a wrong recipient",
		     rcpt_kind_name[f->kind], perr);
	    goto done;
	}
	if (f->kind == RCPT_BCC) {
	    plan->removed += lists[i].n;
	    continue;
	}
	last_tocc = (long) i;
	keeps[i] = xcalloc(lists[i].n ? lists[i].n : 1, 1);
	for (j = 0; j < lists[i].n; j++) {
	    const struct addr_item *it = lists[i].items + j;

	    e = ne;
	    if (!it->bad) {
		canon = addr_internal(it->addr);
		for (e = 0; e < ne && strcasecmp(envc[e], canon) != 0; e++)
		     /* void */ ;
		free(canon);
	    }
	    if (e < ne) {
		/* Repeated: kept too, as written (DKIM signs To/Cc). */
		covered[e] = 1;
		keeps[i][j] = 1;
		plan->kept++;
	    } else {
		changed[i] = 1;
		plan->removed++;
	    }
	}
    }

    /* Write the new header section. */
    o.sb = out;
    /* LF only when the input has LF line ends only: never mixed. */
    o.eol = memchr(hdr, '\n', hdrlen) && !memmem(hdr, hdrlen, "\r\n", 2)
	? "\n" : "\r\n";
    o.col = o.min_col = 0;
    o.fail = 0;
    for (i = 0; i <= fl.n; i++) {
	if (i < fl.n) {
	    struct rcpt_field *f = fl.f + i;

	    if (f->kind == RCPT_BCC)
		continue;
	    if ((f->kind != RCPT_TO && f->kind != RCPT_CC) || !changed[i]) {
		rcpt_put(&o, hdr + f->start, f->end - f->start);
	    } else {
		for (j = 0; j < lists[i].n && !keeps[i][j]; j++)
		     /* void */ ;
		if (j < lists[i].n)
		    rcpt_rebuild(&o, hdr, f, lists + i, keeps[i]);
	    }
	    if ((long) i != last_tocc)
		continue;
	} else if (last_tocc >= 0) {
	    break;
	}
	/* After the last To/Cc field, or at the end: the Bcc: field. */
	for (e = 0; e < ne && covered[e]; e++)
	     /* void */ ;
	if (e == ne)
	    continue;
	rcpt_start_field(&o, "Bcc:", 4);
	for (j = 0; e < ne; e++) {
	    if (covered[e])
		continue;
	    q = addr_quote_internal(envc[e]);
	    rcpt_fold_item(&o, j > 0, q, strlen(q));
	    free(q);
	    j++;
	}
	plan->bcc = j;
	rcpt_put(&o, o.eol, strlen(o.eol));
    }
    if (o.fail) {
	snprintf(err, errlen, "the rewritten header section would exceed "
		 "%lu bytes", (unsigned long) out->max);
	goto done;
    }
    ret = 0;

done:
    for (i = 0; i < fl.n; i++) {
	addr_list_free(lists + i);
	free(keeps[i]);
    }
    free(lists);
    free(keeps);
    free(changed);
    free(fl.f);
    free(hdr);
done_env:
    for (i = 0; i < ne; i++)
	free(envc[i]);
    free(envc);
    free(covered);
    return (ret);
}

/* rcpt_from_headers - To, Cc and Bcc addresses, for "sendmail -t" */

int     rcpt_from_headers(const char *raw, size_t hdrlen, char ***rcpts_r,
			          size_t *n_r, char *err, size_t errlen)
{
    char   *hdr = rcpt_clean(raw, &hdrlen);
    struct rcpt_fields fl;
    struct addr_list l;
    char  **list = NULL;
    size_t  n = 0, i, j, k;
    char   *canon;
    char    perr[256];

    *rcpts_r = NULL;
    *n_r = 0;
    rcpt_fields_split(hdr, hdrlen, &fl);
    for (i = 0; i < fl.n; i++) {
	struct rcpt_field *f = fl.f + i;

	if (f->kind != RCPT_TO && f->kind != RCPT_CC && f->kind != RCPT_BCC)
	    continue;
	if (addr_parse_err(hdr + f->colon + 1, f->vend - f->colon - 1, &l,
			   perr, sizeof(perr)) < 0) {
	    snprintf(err, errlen, "cannot parse the %s: header: %s",
		     rcpt_kind_name[f->kind], perr);
	    addr_list_free(&l);
	    goto fail;
	}
	for (j = 0; j < l.n; j++) {
	    if (l.items[j].bad) {
		snprintf(err, errlen, "the %s: header contains \"%.100s\", "
			 "which is not a mail address",
			 rcpt_kind_name[f->kind], l.items[j].addr);
		addr_list_free(&l);
		goto fail;
	    }
	    canon = addr_internal(l.items[j].addr);
	    if (*canon == 0) {
		/* To: "" unquotes to nothing: not an address. */
		snprintf(err, errlen, "the %s: header contains \"%.100s\", "
			 "which is not a mail address",
			 rcpt_kind_name[f->kind], l.items[j].addr);
		free(canon);
		addr_list_free(&l);
		goto fail;
	    }
	    for (k = 0; k < n && strcasecmp(list[k], canon) != 0; k++)
		 /* void */ ;
	    if (k < n) {
		free(canon);
		continue;
	    }
	    list = xrealloc(list, (n + 1) * sizeof(*list));
	    list[n++] = canon;
	}
	addr_list_free(&l);
    }
    free(fl.f);
    free(hdr);
    *rcpts_r = list;
    *n_r = n;
    return (0);

fail:
    free(fl.f);
    free(hdr);
    rcpt_list_free(list, n);
    return (-1);
}

/* rcpt_header_from - first From: address (internal form), or NULL */

char   *rcpt_header_from(const char *raw, size_t hdrlen)
{
    char   *hdr = rcpt_clean(raw, &hdrlen);
    struct rcpt_fields fl;
    struct addr_list l;
    char   *res = NULL;
    size_t  i, j;

    rcpt_fields_split(hdr, hdrlen, &fl);
    for (i = 0; i < fl.n; i++) {
	if (fl.f[i].kind != RCPT_FROM)
	    continue;
	if (addr_parse(hdr + fl.f[i].colon + 1,
		       fl.f[i].vend - fl.f[i].colon - 1, &l) == 0) {
	    for (j = 0; j < l.n && l.items[j].bad; j++)
		 /* void */ ;
	    if (j < l.n)
		res = addr_internal(l.items[j].addr);
	}
	addr_list_free(&l);
	break;
    }
    free(fl.f);
    free(hdr);
    return (res);
}

/* rcpt_list_free - free a list from rcpt_from_headers() */

void    rcpt_list_free(char **list, size_t n)
{
    size_t  i;

    if (list == NULL)
	return;
    for (i = 0; i < n; i++)
	free(list[i]);
    free(list);
}
