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
    errno = 0;
    T_EQ_INT(strbuf_putc(&sb, 'x'), -1);
    T_EQ_INT(errno, EMSGSIZE);
    T_EQ_STR(strbuf_str(&sb), "abcd1234");
    strbuf_truncate(&sb, 2);
    T_EQ_STR(sb.data, "ab");
    strbuf_cleanse(&sb);
    T_OK(sb.data == NULL);
    T_EQ_STR(strbuf_str(&sb), "");
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
    result_set(&r, M365_TEMP, EX_TEMPFAIL, "4.4.1", "timeout\nafter %d s", 30);
    T_EQ_STR(r.text, "timeout?after 30 s");
    T_EQ_STR(result_disposition(&r), "deferred");
    result_set(&r, M365_PERM, EX_NOUSER, "5.1.1", "no");
    T_EQ_STR(result_disposition(&r), "bounced");
    log_printable(buf, sizeof(buf), "0123456789abcdefghij", 20);
    T_EQ_STR(buf, "0123456789ab...");
}

int     main(void)
{
    T_RUN(test_cap);
    T_RUN(test_base64);
    T_RUN(test_numbers);
    T_RUN(test_result);
    return (T_DONE());
}
