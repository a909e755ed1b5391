/* test_strbuf - strbuf, util encodings, status */
#include "config.h"

#include <errno.h>
#include <stdlib.h>

#include "strbuf.h"
#include "status.h"
#include "util.h"
#include "log.h"
#include "t.h"

static void test_cap(void)
{
    struct strbuf sb;

    strbuf_init(&sb, 8);
    T_EQ_INT(strbuf_puts(&sb, "abcd"), 0);
    T_EQ_INT(strbuf_printf(&sb, "%d", 1234), 0);
    T_EQ_STR(strbuf_str(&sb), "abcd1234");
    T_EQ_INT(strbuf_room(&sb), 0);
    T_EQ_INT(strbuf_failed(&sb), 0);
    strbuf_truncate(&sb, 2);
    T_EQ_STR(sb.data, "ab");
    T_EQ_INT(strbuf_room(&sb), 6);
    strbuf_cleanse(&sb);
    T_OK(sb.data == NULL);
    T_EQ_STR(strbuf_str(&sb), "");
}

/*
 * Past the cap the buffer fails closed: what it held is gone (never
 * usable as if complete), and every later append fails, even one that
 * would fit, until the buffer starts over.
 */
static void test_overflow_sticky(void)
{
    struct strbuf sb;
    char   *p;

    strbuf_init(&sb, 8);
    T_EQ_INT(strbuf_puts(&sb, "abcd1234"), 0);
    errno = 0;
    T_EQ_INT(strbuf_putc(&sb, 'x'), -1);
    T_EQ_INT(errno, EMSGSIZE);
    T_EQ_INT(strbuf_failed(&sb), 1);
    T_OK(sb.data == NULL);
    T_EQ_INT(sb.len, 0);
    T_EQ_STR(strbuf_str(&sb), "");
    T_EQ_STR(strbuf_log_str(&sb), STRBUF_NOT_SHOWN);
    T_EQ_INT(strbuf_room(&sb), 0);
    /* Sticky: nothing gets in after the failure. */
    errno = 0;
    T_EQ_INT(strbuf_append(&sb, "", 0), -1);
    T_EQ_INT(errno, EMSGSIZE);
    T_EQ_INT(strbuf_putc(&sb, 'y'), -1);
    T_EQ_INT(strbuf_puts(&sb, "z"), -1);
    T_EQ_INT(strbuf_printf(&sb, "%s", "w"), -1);
    T_OK(sb.data == NULL);
    strbuf_truncate(&sb, 0);
    T_EQ_INT(strbuf_failed(&sb), 1);
    /* A failed builder has no result. */
    T_OK((p = strbuf_take(&sb)) == NULL);
    free(p);
    /* strbuf_take() started over. */
    T_EQ_INT(strbuf_failed(&sb), 0);
    T_EQ_INT(strbuf_puts(&sb, "ok"), 0);
    T_EQ_STR(strbuf_str(&sb), "ok");
    strbuf_free(&sb);

    /* One printf longer than the cap: nothing half-written stays. */
    strbuf_init(&sb, 8);
    T_EQ_INT(strbuf_puts(&sb, "ab"), 0);
    T_EQ_INT(strbuf_printf(&sb, "%s", "0123456789"), -1);
    T_EQ_INT(strbuf_failed(&sb), 1);
    T_EQ_STR(strbuf_str(&sb), "");
    /* strbuf_reset() starts over too. */
    strbuf_reset(&sb);
    T_EQ_INT(strbuf_failed(&sb), 0);
    T_EQ_INT(strbuf_printf(&sb, "%d", 42), 0);
    T_EQ_STR(strbuf_str(&sb), "42");
    strbuf_free(&sb);

    /* A huge length cannot wrap around the cap check. */
    strbuf_init(&sb, 8);
    T_EQ_INT(strbuf_putc(&sb, 'a'), 0);
    T_EQ_INT(strbuf_append(&sb, "", (size_t) -1), -1);
    T_EQ_INT(strbuf_failed(&sb), 1);
    strbuf_free(&sb);
    T_EQ_INT(strbuf_failed(&sb), 0);
}

/* A list of lines keeps its first lines and says that more were cut. */
static void test_lines(void)
{
    struct strbuf sb;
    size_t  cut = strlen(STRBUF_LINES_CUT);

    strbuf_init(&sb, cut + 12);
    T_EQ_INT(strbuf_line(&sb, "one %d", 1), 0);
    T_EQ_INT(strbuf_line(&sb, "two"), 0);
    T_EQ_STR(strbuf_str(&sb), "one 1\ntwo\n");
    T_EQ_INT(strbuf_line(&sb, "three"), -1);
    T_EQ_STR(strbuf_str(&sb), "one 1\ntwo\n" STRBUF_LINES_CUT);
    /* Later lines, short or not, are dropped; the note stays single. */
    T_EQ_INT(strbuf_line(&sb, "4"), -1);
    T_EQ_STR(strbuf_str(&sb), "one 1\ntwo\n" STRBUF_LINES_CUT);
    T_EQ_INT(strbuf_failed(&sb), 0);
    strbuf_free(&sb);

    /* Other appends ate the room: whole lines go for the note. */
    strbuf_init(&sb, cut + 12);
    T_EQ_INT(strbuf_line(&sb, "first"), 0);
    T_EQ_INT(strbuf_puts(&sb, "second line, long\n"), 0);
    T_EQ_INT(strbuf_line(&sb, "x"), -1);
    T_EQ_STR(strbuf_str(&sb), "first\n" STRBUF_LINES_CUT);
    T_EQ_INT(strbuf_failed(&sb), 0);
    strbuf_free(&sb);
}

static void test_base64(void)
{
    char    out[64];
    size_t  n;
    char   *u;

    n = base64_encode(out, (const unsigned char *) "foobar", 6);
    out[n] = 0;
    T_EQ_STR(out, "Zm9vYmFy");
    n = base64_encode(out, (const unsigned char *) "fooba", 5);
    out[n] = 0;
    T_EQ_STR(out, "Zm9vYmE=");
    n = base64_encode(out, (const unsigned char *) "f", 1);
    out[n] = 0;
    T_EQ_STR(out, "Zg==");
    T_EQ_INT(base64_encoded_len(0), 0);
    T_EQ_INT(base64_encoded_len(4), 8);
    u = base64url_encode((const unsigned char *) "\xfb\xff", 2);
    T_EQ_STR(u, "-_8");
    free(u);
    u = url_escape("a b&c=d/é");
    T_EQ_STR(u, "a%20b%26c%3Dd%2F%C3%A9");
    free(u);
}

static void test_numbers(void)
{
    long    v = 0;
    char    hex[33];

    T_EQ_INT(parse_long("42", 0, 100, &v), 0);
    T_EQ_INT(v, 42);
    T_EQ_INT(parse_long("42x", 0, 100, &v), -1);
    T_EQ_INT(parse_long("101", 0, 100, &v), -1);
    T_EQ_INT(parse_long("", 0, 100, &v), -1);
    random_hex(hex, 16);
    T_EQ_INT(strlen(hex), 32);
}

static void test_result(void)
{
    struct m365_result r;
    char    buf[16];

    result_init(&r);
    T_EQ_STR(result_disposition(&r), "sent");
    result_set(&r, M365_TEMP, "4.4.1", "timeout\nafter %d s", 30);
    T_EQ_STR(r.text, "timeout?after 30 s");
    T_EQ_STR(result_disposition(&r), "deferred");
    result_set(&r, M365_PERM, "5.1.1", "no");
    T_EQ_STR(result_disposition(&r), "bounced");
    log_printable(buf, sizeof(buf), "0123456789abcdefghij", 20);
    T_EQ_STR(buf, "0123456789ab...");
}

int     main(void)
{
    T_RUN(test_cap);
    T_RUN(test_overflow_sticky);
    T_RUN(test_lines);
    T_RUN(test_base64);
    T_RUN(test_numbers);
    T_RUN(test_result);
    return (T_DONE());
}
