/*
 * NAME
 *	mime 3
 * SUMMARY
 *	streaming MIME structure parser, transfer decoding, RFC 2047/2231
 * DESCRIPTION
 *	See mime.h.  The scanner is fed the body in blocks of any size
 *	(mime_scan_feed(): by mime_parse() from the stored body, or by
 *	msg.c's tap while the body is stored) and cuts them into line
 *	pieces: a whole line when the block holds it, else pieces of it.
 *	A line start shorter than MIME_LINE_HEAD bytes without its line
 *	end waits in head[] for the next block (or the end of the body),
 *	so a delimiter line, which is short, is always seen whole; a
 *	longer line can never be one.  Delimiters are only looked for at
 *	the start of a line and only while a multipart is open; the
 *	innermost open multipart is tried first, and a delimiter of an
 *	outer one ends every part inside it.  Inside content only lines
 *	that start with "-" can matter, so mime_scan_skip() jumps from
 *	"-" to "-" (base64 has none); the bytes it passes over are
 *	counted for a base64 leaf (mime_b64_count()), which gives its
 *	decoded size without a pass of its own.
 *
 *	All text that leaves this module is valid UTF-8 without NUL
 *	bytes: Graph takes JSON, and JSON strings are UTF-8.
 * DIAGNOSTICS
 *	Nothing here logs or exits.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <iconv.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mime.h"
#include "util.h"

#define MIME_BLOCK	(64 * 1024)	/* body bytes read at a time */
#define MIME_LINE_HEAD	1024		/* a delimiter line is shorter */
#define MIME_TEXT_MAX	(16UL * 1024 * 1024)	/* converted text at most */
#define MIME_SECTIONS	64		/* RFC 2231 continuations kept */

/* UTF-8 of U+FFFD, the replacement character. */
#define MIME_REPLACEMENT "\xEF\xBF\xBD"

/* ------------------------------------------------------------ UTF-8 */

/* mime_utf8_seq - length of the valid UTF-8 sequence at s, or 0 */

static size_t mime_utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    unsigned char lo = 0x80, hi = 0xBF;
    size_t  len, i;

    if (c < 0x80)
	return (1);
    if (c >= 0xC2 && c <= 0xDF)
	len = 2;
    else if (c >= 0xE0 && c <= 0xEF)
	len = 3;
    else if (c >= 0xF0 && c <= 0xF4)
	len = 4;
    else
	return (0);
    if (n < len)
	return (0);
    /* The second byte's range excludes overlong forms and surrogates. */
    if (c == 0xE0)
	lo = 0xA0;
    else if (c == 0xED)
	hi = 0x9F;
    else if (c == 0xF0)
	lo = 0x90;
    else if (c == 0xF4)
	hi = 0x8F;
    if (s[1] < lo || s[1] > hi)
	return (0);
    for (i = 2; i < len; i++)
	if (s[i] < 0x80 || s[i] > 0xBF)
	    return (0);
    return (len);
}

/*
 * mime_utf8_put - append s, keeping valid UTF-8; every byte that does
 * not start a valid sequence, and NUL, becomes U+FFFD
 */
static void mime_utf8_put(struct strbuf *out, const unsigned char *s,
			          size_t n)
{
    size_t  i = 0, run = 0, k;

    while (i < n) {
	if (s[i] != 0 && (k = mime_utf8_seq(s + i, n - i)) > 0) {
	    i += k;
	    run += k;
	    continue;
	}
	strbuf_append(out, s + i - run, run);
	strbuf_puts(out, MIME_REPLACEMENT);
	run = 0;
	i++;
    }
    strbuf_append(out, s + i - run, run);
}

/* mime_utf8_valid - is s (n bytes) valid UTF-8 without NUL? */

static int mime_utf8_valid(const unsigned char *s, size_t n)
{
    size_t  i = 0, k;

    while (i < n) {
	if (s[i] == 0 || (k = mime_utf8_seq(s + i, n - i)) == 0)
	    return (0);
	i += k;
    }
    return (1);
}

/* mime_charset_utf8 - a charset whose text needs no conversion */

static int mime_charset_utf8(const char *cs)
{
    return (cs == NULL || *cs == 0 || strcasecmp(cs, "utf-8") == 0
	    || strcasecmp(cs, "utf8") == 0 || strcasecmp(cs, "us-ascii") == 0
	    || strcasecmp(cs, "ascii") == 0);
}

/* mime_iconv_put - append text converted from charset cd; U+FFFD for junk */

static void mime_iconv_put(struct strbuf *out, iconv_t cd,
			           const char *s, size_t n)
{
    char    obuf[4096];
    char   *ip;
    size_t  ileft = n;
    char   *op;
    size_t  oleft;
    size_t  rc;

    memcpy(&ip, &s, sizeof(ip));		/* iconv() takes char ** */
    while (ileft > 0 && !strbuf_failed(out)) {
	op = obuf;
	oleft = sizeof(obuf);
	rc = iconv(cd, &ip, &ileft, &op, &oleft);
	/* iconv's output is UTF-8; NUL still becomes U+FFFD. */
	mime_utf8_put(out, (unsigned char *) obuf, (size_t) (op - obuf));
	if (rc != (size_t) -1)
	    continue;
	if (errno == E2BIG)
	    continue;
	/* EILSEQ or EINVAL (cut short): one byte is junk, go on after it. */
	strbuf_puts(out, MIME_REPLACEMENT);
	ip++;
	ileft--;
	(void) iconv(cd, NULL, NULL, NULL, NULL);
    }
    op = obuf;
    oleft = sizeof(obuf);
    (void) iconv(cd, NULL, NULL, &op, &oleft);
    strbuf_append(out, obuf, (size_t) (op - obuf));
}

/* mime_charset_put - append text in a charset as UTF-8 */

static void mime_charset_put(struct strbuf *out, const char *charset,
			             const char *s, size_t n)
{
    iconv_t cd;

    if (mime_charset_utf8(charset)
	|| mime_utf8_valid((const unsigned char *) s, n)) {
	mime_utf8_put(out, (const unsigned char *) s, n);
	return;
    }
    if ((cd = iconv_open("UTF-8", charset)) == (iconv_t) -1) {
	mime_utf8_put(out, (const unsigned char *) s, n);
	return;
    }
    mime_iconv_put(out, cd, s, n);
    iconv_close(cd);
}

/* mime_to_utf8 - text in charset as UTF-8; malloc()ed; NULL: too long */

char   *mime_to_utf8(const char *charset, const char *s, size_t n)
{
    struct strbuf out;

    strbuf_init(&out, MIME_TEXT_MAX);
    mime_charset_put(&out, charset, s, n);
    if (!strbuf_failed(&out) && out.data == NULL)
	strbuf_puts(&out, "");
    return (strbuf_take(&out));
}

/* -------------------------------------------------- transfer decoding */

static const signed char mime_b64[256] = {
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62, -1, -1, -1, 63,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -1, -1, -1,
    -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
    15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, -1,
    -1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
    41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
};

/* Quoted-printable states. */
#define QP_TEXT		0		/* ordinary text */
#define QP_EQ		1		/* after "=" */
#define QP_HEX		2		/* after "=" and one hex digit */
#define QP_SOFT		3		/* after "=" and white space */

/* mime_hex - value of a hex digit, or -1 */

static int mime_hex(int c)
{
    if (c >= '0' && c <= '9')
	return (c - '0');
    if (c >= 'A' && c <= 'F')
	return (c - 'A' + 10);
    if (c >= 'a' && c <= 'f')
	return (c - 'a' + 10);
    return (-1);
}

/* mime_dec_init - a decoder for one transfer encoding */

void    mime_dec_init(struct mime_dec *d, enum mime_cte cte)
{
    memset(d, 0, sizeof(*d));
    d->cte = cte;
}

/* mime_b64_update - base64: skip junk, "=" ends a quantum */

/*
 * Two base64 bytes at a time: mime_b64_pair[a | b << 8] holds the 12
 * bits of the alphabet bytes a and b, or MIME_B64_PAIR_NOT.  128 KB,
 * made on the first use (most programs never decode base64).
 */
#define MIME_B64_PAIR_NOT	0x8000
static unsigned short mime_b64_pair[65536];
static pthread_once_t mime_b64_once = PTHREAD_ONCE_INIT;

/* mime_b64_pair_init - fill mime_b64_pair from mime_b64 */

static void mime_b64_pair_init(void)
{
    int     a, b;

    for (a = 0; a < 256; a++)
	for (b = 0; b < 256; b++)
	    mime_b64_pair[a | b << 8] = mime_b64[a] < 0 || mime_b64[b] < 0 ?
		MIME_B64_PAIR_NOT :
		(unsigned short) (mime_b64[a] << 6 | mime_b64[b]);
}

/* mime_b64_eol - a CRLF at in[i] (a line end between two quanta)? */

static inline int mime_b64_eol(const unsigned char *in, size_t i, size_t n)
{
    return (i + 2 <= n && in[i] == '\r' && in[i + 1] == '\n');
}

/*
 * Sixteen base64 bytes at a time where the CPU can (x86-64 with SSSE3,
 * chosen at run time): mime_b64_blocks() decodes blocks of 16 alphabet
 * bytes; in the first block that holds anything else (a line end, "=",
 * junk) it decodes the whole quanta before that byte and stops, and
 * the byte loop below takes the rest.  Each block stores 16 bytes of
 * which at most 12 count, 16 bytes before the end of the input, so it
 * never writes past out + (bytes read): within what mime_dec_update()
 * promises.
 */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MIME_B64_SIMD	1

static int mime_b64_simd;			/* 1: mime_b64_blocks(), 2: also
					 * mime_b64_blocks32() */

/*
 * The tables, indexed by the low and the high four bits of a byte.  A
 * byte is in the alphabet when lo_class[low] & hi_class[high] is 0:
 * each bit of hi_class names a range of high bits (0x10: none of its
 * bytes; 0x01: 0x2_, of which only "+" and "/"; 0x02: 0x3_, digits;
 * 0x04: 0x4_ and 0x6_, all but the first; 0x08: 0x5_ and 0x7_, up to
 * "Z" and "z"), and lo_class has that bit set for the low bits that
 * range refuses.  shift[] is what to add to a byte of the alphabet to
 * get its value, by its high bits ("/" is moved to index 1).
 */
#define MIME_B64_LO_CLASS 0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, \
	0x11, 0x11, 0x13, 0x1A, 0x1B, 0x1B, 0x1B, 0x1A
#define MIME_B64_HI_CLASS 0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08, \
	0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10
#define MIME_B64_SHIFT 0, 63 - '/', 62 - '+', 52 - '0', -'A', -'A', \
	26 - 'a', 26 - 'a', 0, 0, 0, 0, 0, 0, 0, 0

/* mime_b64_alphabet - 0xff for each byte of v in the alphabet, else 0 */

__attribute__((target("ssse3")))
static inline __m128i mime_b64_alphabet(__m128i v, __m128i hi)
{
    const __m128i lo_class = _mm_setr_epi8(MIME_B64_LO_CLASS);
    const __m128i hi_class = _mm_setr_epi8(MIME_B64_HI_CLASS);
    __m128i lo = _mm_and_si128(v, _mm_set1_epi8(0x0f));

    return (_mm_cmpeq_epi8(_mm_and_si128(_mm_shuffle_epi8(lo_class, lo),
					 _mm_shuffle_epi8(hi_class, hi)),
			   _mm_setzero_si128()));
}

/* mime_b64_high - the high four bits of each byte of v */

__attribute__((target("ssse3")))
static inline __m128i mime_b64_high(__m128i v)
{
    return (_mm_and_si128(_mm_srli_epi32(v, 4), _mm_set1_epi8(0x0f)));
}

__attribute__((target("ssse3")))
static size_t mime_b64_blocks(const unsigned char *in, size_t n,
			              unsigned char **op)
{
    const __m128i shift = _mm_setr_epi8(MIME_B64_SHIFT);
    const __m128i order = _mm_setr_epi8(2, 1, 0, 6, 5, 4, 10, 9, 8,
					14, 13, 12, -1, -1, -1, -1);
    __m128i v, hi;
    unsigned char *o = *op;
    size_t  i = 0, k;
    unsigned ok;

    while (i + 16 <= n) {
	/* The body comes from memory, not the cache: ask ahead. */
	_mm_prefetch((const char *) in + i + 2048, _MM_HINT_T0);
	v = _mm_loadu_si128((const __m128i *) (in + i));
	hi = mime_b64_high(v);
	ok = (unsigned) _mm_movemask_epi8(mime_b64_alphabet(v, hi));
	/* All 16, else the whole quanta before the first other byte. */
	k = ok == 0xffff ? 16 : (size_t) __builtin_ctz(~ok) & ~(size_t) 3;
	if (k > 0) {
	    /* "/" shares its high bits with "+": give it index 1. */
	    hi = _mm_add_epi8(hi, _mm_cmpeq_epi8(v, _mm_set1_epi8('/')));
	    v = _mm_add_epi8(v, _mm_shuffle_epi8(shift, hi));
	    /* a b c d -> (a << 6 | b) << 12 | (c << 6 | d) in 32 bits */
	    v = _mm_maddubs_epi16(v, _mm_set1_epi32(0x01400140));
	    v = _mm_madd_epi16(v, _mm_set1_epi32(0x00011000));
	    /* three bytes of each, most significant first (k / 4 count) */
	    _mm_storeu_si128((__m128i *) o, _mm_shuffle_epi8(v, order));
	    o += k / 4 * 3;
	    i += k;
	}
	if (k == 16)
	    continue;
	if (!mime_b64_eol(in, i, n))
	    break;
	i += 2;					/* on with the next line */
    }
    *op = o;
    return (i);
}

/*
 * mime_b64_blocks32 - mime_b64_blocks() 32 bytes at a time (AVX2): the
 * same tables in both 128-bit lanes; each lane gives 12 bytes, which
 * a permutation puts together.  A 76-byte line takes three steps
 * instead of five.  Then mime_b64_blocks() for the rest.
 */
__attribute__((target("avx2")))
static size_t mime_b64_blocks32(const unsigned char *in, size_t n,
				        unsigned char **op)
{
    const __m256i lo_class = _mm256_setr_epi8(MIME_B64_LO_CLASS,
					      MIME_B64_LO_CLASS);
    const __m256i hi_class = _mm256_setr_epi8(MIME_B64_HI_CLASS,
					      MIME_B64_HI_CLASS);
    const __m256i shift = _mm256_setr_epi8(MIME_B64_SHIFT, MIME_B64_SHIFT);
    const __m256i order = _mm256_setr_epi8(2, 1, 0, 6, 5, 4, 10, 9, 8,
					   14, 13, 12, -1, -1, -1, -1,
					   2, 1, 0, 6, 5, 4, 10, 9, 8,
					   14, 13, 12, -1, -1, -1, -1);
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 3, 7);
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256i v, hi, ok;
    unsigned char *o = *op;
    size_t  i = 0, k;
    unsigned mask;

    while (i + 32 <= n) {
	_mm_prefetch((const char *) in + i + 2048, _MM_HINT_T0);
	v = _mm256_loadu_si256((const __m256i *) (in + i));
	hi = _mm256_and_si256(_mm256_srli_epi32(v, 4), low4);
	ok = _mm256_and_si256(_mm256_shuffle_epi8(lo_class,
					       _mm256_and_si256(v, low4)),
			      _mm256_shuffle_epi8(hi_class, hi));
	ok = _mm256_cmpeq_epi8(ok, _mm256_setzero_si256());
	mask = (unsigned) _mm256_movemask_epi8(ok);
	k = mask == 0xffffffffU ? 32 :
	    (size_t) __builtin_ctz(~mask) & ~(size_t) 3;
	if (k > 0) {
	    hi = _mm256_add_epi8(hi, _mm256_cmpeq_epi8(v,
						   _mm256_set1_epi8('/')));
	    v = _mm256_add_epi8(v, _mm256_shuffle_epi8(shift, hi));
	    v = _mm256_maddubs_epi16(v, _mm256_set1_epi32(0x01400140));
	    v = _mm256_madd_epi16(v, _mm256_set1_epi32(0x00011000));
	    v = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(v, order),
					    lanes);
	    _mm256_storeu_si256((__m256i *) o, v);
	    o += k / 4 * 3;
	    i += k;
	}
	if (k == 32)
	    continue;
	if (!mime_b64_eol(in, i, n))
	    break;
	i += 2;
    }
    *op = o;
    return (i);
}

/*
 * mime_b64_count_blocks - the alphabet bytes of the 16-byte blocks at
 * in, up to the first block that holds "=" (which changes the count of
 * a quantum: mime_b64_count() takes it byte by byte), added to *alpha;
 * the bytes counted
 */
__attribute__((target("ssse3")))
static size_t mime_b64_count_blocks(const unsigned char *in, size_t n,
				            size_t *alpha)
{
    __m128i v, sum = _mm_setzero_si128();
    size_t  i;

    for (i = 0; i + 16 <= n; i += 16) {
	v = _mm_loadu_si128((const __m128i *) (in + i));
	if (_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('='))))
	    break;
	/* 1 for each alphabet byte, summed into the two 64-bit halves */
	sum = _mm_add_epi64(sum, _mm_sad_epu8(_mm_and_si128(
			     mime_b64_alphabet(v, mime_b64_high(v)),
						  _mm_set1_epi8(1)),
					      _mm_setzero_si128()));
    }
    *alpha += (size_t) _mm_cvtsi128_si64(sum)
	+ (size_t) _mm_cvtsi128_si64(_mm_unpackhi_epi64(sum, sum));
    return (i);
}

/* mime_b64_simd_init - can this CPU run mime_b64_blocks()? */

static void mime_b64_simd_init(void)
{
    __builtin_cpu_init();
    mime_b64_simd = __builtin_cpu_supports("avx2") ? 2 :
	__builtin_cpu_supports("ssse3") ? 1 : 0;
}
#endif

/* mime_b64_init - the tables, once per process */

static void mime_b64_init(void)
{
    mime_b64_pair_init();
#ifdef MIME_B64_SIMD
    mime_b64_simd_init();
#endif
}

/* mime_dec_simd - see mime.h */

int     mime_dec_simd(int on)
{
#ifdef MIME_B64_SIMD
    int     was;

    (void) pthread_once(&mime_b64_once, mime_b64_init);
    was = mime_b64_simd;
    if (on == 0) {
	mime_b64_simd = 0;
    } else if (on > 0) {
	mime_b64_simd_init();
	if (mime_b64_simd > on)
	    mime_b64_simd = on;
    }
    return (was);
#else
    (void) on;
    return (0);
#endif
}

static size_t mime_b64_update(struct mime_dec *d, const unsigned char *in,
			              size_t n, unsigned char *out)
{
    unsigned char *o = out;
    size_t  i = 0;
    unsigned int x, y;
    int     v;

    (void) pthread_once(&mime_b64_once, mime_b64_init);
    while (i < n) {
#ifdef MIME_B64_SIMD
	if (d->nacc == 0 && mime_b64_simd > 1 && i + 32 <= n)
	    i += mime_b64_blocks32(in + i, n - i, &o);
	if (d->nacc == 0 && mime_b64_simd && i + 16 <= n)
	    i += mime_b64_blocks(in + i, n - i, &o);
#endif
	/* Fast path: runs of four alphabet bytes on a quantum boundary. */
	while (d->nacc == 0 && i + 4 <= n) {
	    x = mime_b64_pair[in[i] | in[i + 1] << 8];
	    y = mime_b64_pair[in[i + 2] | in[i + 3] << 8];
	    if ((x | y) & MIME_B64_PAIR_NOT)
		break;
	    x = x << 12 | y;
	    o[0] = (unsigned char) (x >> 16);
	    o[1] = (unsigned char) (x >> 8);
	    o[2] = (unsigned char) x;
	    o += 3;
	    i += 4;
	}
	if (i >= n)
	    break;
	if (mime_b64_eol(in, i, n)) {
	    i += 2;				/* a line end: skipped */
	    continue;
	}
	if ((v = mime_b64[in[i]]) >= 0) {
	    d->acc = (d->acc << 6) | (unsigned) v;
	    if (++d->nacc == 4) {
		*o++ = (unsigned char) (d->acc >> 16);
		*o++ = (unsigned char) (d->acc >> 8);
		*o++ = (unsigned char) d->acc;
		d->acc = 0;
		d->nacc = 0;
	    }
	} else if (in[i] == '=') {
	    /* Padding: what the quantum holds so far is complete. */
	    if (d->nacc == 2) {
		*o++ = (unsigned char) (d->acc >> 4);
	    } else if (d->nacc == 3) {
		*o++ = (unsigned char) (d->acc >> 10);
		*o++ = (unsigned char) (d->acc >> 2);
	    }
	    d->acc = 0;
	    d->nacc = 0;
	}
	i++;
    }
    return ((size_t) (o - out));
}

/*
 * mime_b64_count - how many bytes mime_b64_update() would write for
 * these n bytes, without writing them (the size an upload session must
 * name before the first byte).  A block without "=" only adds its
 * alphabet bytes to the quantum; the test is arithmetic on the byte, so
 * that the compiler can do many at once.
 */
static size_t mime_b64_count(struct mime_dec *d, const unsigned char *in,
			             size_t n)
{
    size_t  i = 0, j, alpha = 0, out;
    unsigned char c, blk;

#ifdef MIME_B64_SIMD
    (void) pthread_once(&mime_b64_once, mime_b64_init);
    if (mime_b64_simd)
	i = mime_b64_count_blocks(in, n, &alpha);
#endif
    if (memchr(in + i, '=', n - i) == NULL) {
	for (; i + 64 <= n; i += 64) {
	    for (blk = 0, j = 0; j < 64; j++) {
		c = in[i + j];
		blk += (unsigned char) (((unsigned char) ((c | 0x20) - 'a') < 26)
					| ((unsigned char) (c - '0') < 10)
					| (c == '+') | (c == '/'));
	    }
	    alpha += blk;
	}
	for (; i < n; i++)
	    alpha += mime_b64[in[i]] >= 0;
    }
    /* Whole quanta so far; from the first "=" on, byte by byte. */
    alpha += (size_t) d->nacc;
    d->nacc = (int) (alpha % 4);
    out = alpha / 4 * 3;
    for (; i < n; i++) {
	if (mime_b64[in[i]] >= 0) {
	    if (++d->nacc == 4) {
		out += 3;
		d->nacc = 0;
	    }
	} else if (in[i] == '=') {
	    out += d->nacc == 2 ? 1 : d->nacc == 3 ? 2 : 0;
	    d->nacc = 0;
	}
    }
    return (out);
}

/* mime_qp_ws - emit the pending white space (it is not at a line end) */

static unsigned char *mime_qp_ws(struct mime_dec *d, unsigned char *o)
{
    memcpy(o, d->ws, d->nws);
    o += d->nws;
    d->nws = 0;
    return (o);
}

/* mime_qp_update - quoted-printable, RFC 2045 section 6.7 */

static size_t mime_qp_update(struct mime_dec *d, const unsigned char *in,
			             size_t n, unsigned char *out)
{
    unsigned char *o = out;
    size_t  i;
    int     c, h;

    for (i = 0; i < n; i++) {
	c = in[i];
	switch (d->qp) {
	case QP_EQ:
	    if (mime_hex(c) >= 0) {
		d->qp_hex = (unsigned char) c;
		d->qp = QP_HEX;
		continue;
	    }
	    if (c == '\n') {			/* soft line break */
		d->qp = QP_TEXT;
		continue;
	    }
	    if (c == ' ' || c == '\t' || c == '\r') {
		d->ws[d->nws++] = (unsigned char) c;
		d->qp = QP_SOFT;
		continue;
	    }
	    *o++ = '=';				/* not an escape: keep it */
	    d->qp = QP_TEXT;
	    break;
	case QP_HEX:
	    if ((h = mime_hex(c)) >= 0) {
		*o++ = (unsigned char) ((mime_hex(d->qp_hex) << 4) | h);
		d->qp = QP_TEXT;
		continue;
	    }
	    *o++ = '=';
	    *o++ = d->qp_hex;
	    d->qp = QP_TEXT;
	    break;
	case QP_SOFT:
	    /* "=" then white space: a soft break with padding ... */
	    if (c == '\n') {
		d->nws = 0;
		d->qp = QP_TEXT;
		continue;
	    }
	    if ((c == ' ' || c == '\t' || c == '\r')
		&& d->nws < sizeof(d->ws)) {
		d->ws[d->nws++] = (unsigned char) c;
		continue;
	    }
	    /* ... or a lone "=" followed by text: keep it all. */
	    *o++ = '=';
	    o = mime_qp_ws(d, o);
	    d->qp = QP_TEXT;
	    break;
	}
	/* QP_TEXT, also for the byte that ended an escape attempt. */
	if (c == ' ' || c == '\t' || c == '\r') {
	    if (d->nws == sizeof(d->ws))
		o = mime_qp_ws(d, o);
	    d->ws[d->nws++] = (unsigned char) c;
	} else if (c == '\n') {
	    /* White space at the end of a line is not part of the text. */
	    if (d->nws > 0 && d->ws[d->nws - 1] == '\r')
		*o++ = '\r';
	    d->nws = 0;
	    *o++ = '\n';
	} else if (c == '=') {
	    o = mime_qp_ws(d, o);
	    d->qp = QP_EQ;
	} else {
	    o = mime_qp_ws(d, o);
	    *o++ = (unsigned char) c;
	}
    }
    return ((size_t) (o - out));
}

/* mime_dec_update - decode n bytes; at most n + MIME_DEC_SLACK out */

size_t  mime_dec_update(struct mime_dec *d, const unsigned char *in,
			        size_t n, unsigned char *out)
{
    switch (d->cte) {
    case MIME_CTE_BASE64:
	return (mime_b64_update(d, in, n, out));
    case MIME_CTE_QP:
	return (mime_qp_update(d, in, n, out));
    default:
	memcpy(out, in, n);
	return (n);
    }
}

/* mime_dec_final - flush what is pending at the end of the input */

size_t  mime_dec_final(struct mime_dec *d, unsigned char *out)
{
    unsigned char *o = out;

    if (d->cte == MIME_CTE_BASE64) {
	if (d->nacc == 2) {
	    *o++ = (unsigned char) (d->acc >> 4);
	} else if (d->nacc == 3) {
	    *o++ = (unsigned char) (d->acc >> 10);
	    *o++ = (unsigned char) (d->acc >> 2);
	}
    } else if (d->cte == MIME_CTE_QP) {
	if (d->qp == QP_EQ) {
	    *o++ = '=';
	} else if (d->qp == QP_HEX) {
	    *o++ = '=';
	    *o++ = d->qp_hex;
	}
	/* QP_SOFT: a soft break at the very end; trailing blanks go. */
    }
    mime_dec_init(d, d->cte);
    return ((size_t) (o - out));
}

/* ----------------------------------------------- header value syntax */

/* mime_tspecial - RFC 2045 tspecials and controls end a token */

static int mime_token_char(int c)
{
    return (c > ' ' && c < 127 && strchr("()<>@,;:\\\"/[]?=", c) == NULL);
}

/* mime_skip_cfws - skip white space and (nested) comments */

static const char *mime_skip_cfws(const char *p)
{
    int     depth;

    for (;;) {
	while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
	    p++;
	if (*p != '(')
	    return (p);
	for (depth = 0; *p; p++) {
	    if (*p == '\\' && p[1]) {
		p++;
		continue;
	    }
	    if (*p == '(')
		depth++;
	    else if (*p == ')' && --depth == 0) {
		p++;
		break;
	    }
	}
    }
}

/*
 * mime_param_value - read a parameter value at p (quoted string or
 * token; a token runs to ";" and loses trailing white space, since
 * many mailers leave names with spaces unquoted) into val; returns the
 * position after it
 */
static const char *mime_param_value(const char *p, struct strbuf *val)
{
    const char *e;

    strbuf_reset(val);
    if (*p == '"') {
	for (p++; *p && *p != '"'; p++) {
	    if (*p == '\\' && p[1])
		p++;
	    strbuf_putc(val, *p);
	}
	if (*p == '"')
	    p++;
	while (*p && *p != ';')			/* junk after the quotes */
	    p++;
	return (p);
    }
    for (e = p; *e && *e != ';'; e++)
	 /* void */ ;
    while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
	e--;
    strbuf_append(val, p, (size_t) (e - p));
    while (*e && *e != ';')
	e++;
    return (e);
}

/*
 * mime_param_next - the next "attribute=value" after *pp (which points
 * into the value behind the type or disposition); 0 with attr (lower
 * case) and val filled, -1 at the end
 */
static int mime_param_next(const char **pp, char *attr, size_t attrlen,
			           struct strbuf *val)
{
    const char *p = *pp;
    size_t  n;

    for (;;) {
	/* Skip to the next ";" that starts a parameter. */
	while (*p && *p != ';') {
	    if (*p == '"') {
		for (p++; *p && *p != '"'; p++)
		    if (*p == '\\' && p[1])
			p++;
		if (*p)
		    p++;
		continue;
	    }
	    p++;
	}
	if (*p == 0) {
	    *pp = p;
	    return (-1);
	}
	p = mime_skip_cfws(p + 1);
	for (n = 0; mime_token_char((unsigned char) *p) || *p == '*'; p++)
	    if (n + 1 < attrlen)
		attr[n++] = (char) tolower((unsigned char) *p);
	attr[n] = 0;
	p = mime_skip_cfws(p);
	if (n == 0 || *p != '=')
	    continue;				/* not a parameter: skip it */
	p = mime_skip_cfws(p + 1);
	p = mime_param_value(p, val);
	*pp = p;
	return (0);
    }
}

/* mime_pct_decode - RFC 2231 %XX decoding, appended to out */

static void mime_pct_decode(struct strbuf *out, const char *s, size_t n)
{
    size_t  i;
    int     h, l;

    for (i = 0; i < n; i++) {
	if (s[i] == '%' && i + 2 < n && (h = mime_hex(s[i + 1])) >= 0
	    && (l = mime_hex(s[i + 2])) >= 0) {
	    strbuf_putc(out, (h << 4) | l);
	    i += 2;
	} else {
	    strbuf_putc(out, s[i]);
	}
    }
}

/* RFC 2231 sections of one parameter. */
struct mime_sections {
    char   *text[MIME_SECTIONS];	/* raw value of section k */
    int     ext[MIME_SECTIONS];		/* section k was name*k* */
    int     any;
};

/* mime_section_of - is attr name*, name*K or name*K*? Section or -1 */

static int mime_section_of(const char *attr, const char *name, int *ext)
{
    size_t  n = strlen(name);
    const char *p;
    long    k = 0;

    if (strncmp(attr, name, n) != 0 || attr[n] != '*')
	return (-1);
    p = attr + n + 1;
    if (*p == 0) {				/* name*=charset'lang'value */
	*ext = 1;
	return (0);
    }
    if (!isdigit((unsigned char) *p) || (*p == '0' && isdigit((unsigned char) p[1])))
	return (-1);
    while (isdigit((unsigned char) *p) && k < MIME_SECTIONS)
	k = k * 10 + (*p++ - '0');
    if (k >= MIME_SECTIONS)
	return (-1);
    if (*p == '*' && p[1] == 0)
	*ext = 1;
    else if (*p == 0)
	*ext = 0;
    else
	return (-1);
    return ((int) k);
}

/* mime_sections_join - RFC 2231: charset from section 0, then decode */

static char *mime_sections_join(struct mime_sections *sec)
{
    struct strbuf raw;
    char    charset[64];
    const char *t, *q1, *q2;
    char   *res;
    int     k;

    strbuf_init(&raw, STRBUF_MAX_LINE);
    charset[0] = 0;
    for (k = 0; k < MIME_SECTIONS && sec->text[k]; k++) {
	t = sec->text[k];
	if (k == 0 && sec->ext[0] && (q1 = strchr(t, '\'')) != NULL
	    && (q2 = strchr(q1 + 1, '\'')) != NULL) {
	    snprintf(charset, sizeof(charset), "%.*s", (int) (q1 - t), t);
	    t = q2 + 1;
	}
	if (sec->ext[k])
	    mime_pct_decode(&raw, t, strlen(t));
	else
	    strbuf_puts(&raw, t);
    }
    res = strbuf_failed(&raw) ? NULL :
	mime_to_utf8(charset, raw.data ? raw.data : "", raw.len);
    strbuf_free(&raw);
    return (res);
}

/* mime_param_raw - the plain value of a parameter, bytes as written */

static char *mime_param_raw(const char *value, const char *name)
{
    struct strbuf val;
    const char *p = value;
    char    attr[80];
    char   *res = NULL;

    strbuf_init(&val, STRBUF_MAX_LINE);
    while (res == NULL && mime_param_next(&p, attr, sizeof(attr), &val) == 0)
	if (strcmp(attr, name) == 0 && !strbuf_failed(&val))
	    res = xstrdup(val.data ? val.data : "");
    strbuf_free(&val);
    return (res);
}

/* mime_param - one parameter, RFC 2231 and RFC 2047 aware, UTF-8 */

char   *mime_param(const char *value, const char *name)
{
    struct mime_sections sec;
    struct strbuf val;
    const char *p = value;
    char    attr[80];
    char    lname[80];
    char   *plain = NULL, *res;
    int     k, ext, i;

    if (value == NULL)
	return (NULL);
    for (i = 0; name[i] && i < (int) sizeof(lname) - 1; i++)
	lname[i] = (char) tolower((unsigned char) name[i]);
    lname[i] = 0;
    memset(&sec, 0, sizeof(sec));
    strbuf_init(&val, STRBUF_MAX_LINE);
    while (mime_param_next(&p, attr, sizeof(attr), &val) == 0) {
	if (strbuf_failed(&val)) {
	    strbuf_reset(&val);
	    continue;
	}
	if (strcmp(attr, lname) == 0) {
	    if (plain == NULL)
		plain = xstrdup(val.data ? val.data : "");
	} else if ((k = mime_section_of(attr, lname, &ext)) >= 0
		   && sec.text[k] == NULL) {
	    sec.text[k] = xstrdup(val.data ? val.data : "");
	    sec.ext[k] = ext;
	    sec.any = 1;
	}
    }
    strbuf_free(&val);
    if (sec.any) {
	res = mime_sections_join(&sec);
    } else if (plain != NULL) {
	/* Not allowed by RFC 2047 in a quoted string, but common. */
	res = mime_words(plain, strlen(plain));
    } else {
	res = NULL;
    }
    for (k = 0; k < MIME_SECTIONS; k++)
	free(sec.text[k]);
    free(plain);
    return (res);
}

/* ------------------------------------------------------------ RFC 2047 */

/*
 * mime_word - an encoded word "=?charset?B|Q?text?=" at s (n bytes)?
 * Its length, with charset (language dropped), encoding and text span.
 */
static size_t mime_word(const char *s, size_t n, char *cs, size_t cslen,
			        int *enc, const char **text, size_t *tlen)
{
    size_t  i, c0, t0;

    if (n < 8 || s[0] != '=' || s[1] != '?')
	return (0);
    for (i = 2; i < n && s[i] != '?' && mime_token_char((unsigned char) s[i]);
	 i++)
	 /* void */ ;
    if (i == 2 || i >= n || s[i] != '?' || i - 2 >= cslen)
	return (0);
    c0 = i - 2;
    memcpy(cs, s + 2, c0);
    cs[c0] = 0;
    if (strchr(cs, '*'))			/* RFC 2231 language */
	*strchr(cs, '*') = 0;
    i++;
    if (i + 2 >= n || s[i + 1] != '?')
	return (0);
    if (s[i] == 'B' || s[i] == 'b')
	*enc = 'B';
    else if (s[i] == 'Q' || s[i] == 'q')
	*enc = 'Q';
    else
	return (0);
    i += 2;
    t0 = i;
    for (; i < n && s[i] > ' ' && s[i] < 127 && s[i] != '?'; i++)
	 /* void */ ;
    if (i + 1 >= n || s[i] != '?' || s[i + 1] != '=')
	return (0);
    *text = s + t0;
    *tlen = i - t0;
    return (i + 2);
}

/* mime_word_bytes - the bytes an encoded word's text stands for */

static void mime_word_bytes(struct strbuf *raw, int enc, const char *t,
			            size_t n)
{
    struct mime_dec d;
    unsigned char out[256 + MIME_DEC_SLACK];
    size_t  i, k, o;
    int     h, l;

    if (enc == 'B') {
	mime_dec_init(&d, MIME_CTE_BASE64);
	for (i = 0; i < n; i += k) {
	    k = n - i < 256 ? n - i : 256;
	    o = mime_dec_update(&d, (const unsigned char *) t + i, k, out);
	    strbuf_append(raw, out, o);
	}
	o = mime_dec_final(&d, out);
	strbuf_append(raw, out, o);
	return;
    }
    for (i = 0; i < n; i++) {
	if (t[i] == '_')
	    strbuf_putc(raw, ' ');
	else if (t[i] == '=' && i + 2 < n && (h = mime_hex(t[i + 1])) >= 0
		 && (l = mime_hex(t[i + 2])) >= 0) {
	    strbuf_putc(raw, (h << 4) | l);
	    i += 2;
	} else
	    strbuf_putc(raw, t[i]);
    }
}

/* mime_words - decode RFC 2047 encoded words; UTF-8, malloc()ed */

char   *mime_words(const char *s, size_t n)
{
    struct strbuf out, raw;
    char    cs[64], pend_cs[64];
    const char *text;
    size_t  i = 0, lit = 0, wlen, tlen, j;
    int     enc, after_word = 0;

    strbuf_init(&out, STRBUF_MAX_LINE);
    strbuf_init(&raw, STRBUF_MAX_LINE);
    pend_cs[0] = 0;
    while (i < n) {
	if (s[i] != '=' || (wlen = mime_word(s + i, n - i, cs, sizeof(cs),
					     &enc, &text, &tlen)) == 0) {
	    i++;
	    continue;
	}
	/* Literal text since the last word; blanks between words go. */
	for (j = lit; j < i && strchr(" \t\r\n", s[j]); j++)
	     /* void */ ;
	if (!(after_word && j == i)) {
	    if (raw.len) {
		mime_charset_put(&out, pend_cs, raw.data, raw.len);
		strbuf_reset(&raw);
	    }
	    mime_utf8_put(&out, (const unsigned char *) s + lit, i - lit);
	}
	if (raw.len && strcasecmp(cs, pend_cs) != 0) {
	    mime_charset_put(&out, pend_cs, raw.data, raw.len);
	    strbuf_reset(&raw);
	}
	snprintf(pend_cs, sizeof(pend_cs), "%s", cs);
	mime_word_bytes(&raw, enc, text, tlen);
	i += wlen;
	lit = i;
	after_word = 1;
    }
    if (raw.len)
	mime_charset_put(&out, pend_cs, raw.data, raw.len);
    mime_utf8_put(&out, (const unsigned char *) s + lit, n - lit);
    strbuf_free(&raw);
    if (!strbuf_failed(&out) && out.data == NULL)
	strbuf_puts(&out, "");
    return (strbuf_take(&out));
}

/* ---------------------------------------------------------- one part */

/* mime_is - does the part have this type ("text/html")? */

int     mime_is(const struct mime_part *p, const char *type)
{
    return (strcmp(p->type, type) == 0);
}

/* mime_is_multipart - a multipart container (of subtype, when given) */

int     mime_is_multipart(const struct mime_part *p, const char *subtype)
{
    return (p->multipart && (subtype == NULL
			     || strcmp(p->type + 10, subtype) == 0));
}

/* mime_type_parse - "type/subtype" of a Content-Type value; 0 or -1 */

static int mime_type_parse(const char *v, char *type, size_t len)
{
    const char *p = mime_skip_cfws(v);
    size_t  n = 0;
    int     slash = 0;

    for (; mime_token_char((unsigned char) *p) || (*p == '/' && !slash); p++) {
	if (*p == '/')
	    slash = 1;
	if (n + 1 >= len)
	    return (-1);
	type[n++] = (char) tolower((unsigned char) *p);
    }
    type[n] = 0;
    if (!slash || type[0] == '/' || type[n - 1] == '/')
	return (-1);
    return (0);
}

/*
 * mime_clean_name - a file name fit for an attachment: the part after
 * the last "/" or "\", control characters made "_", surrounding blanks
 * gone, at most MIME_NAME_MAX bytes (never cutting a character)
 */
static char *mime_clean_name(char *name)
{
    char   *p, *base = name;
    size_t  n, k;

    if (name == NULL)
	return (NULL);
    for (p = name; *p; p++)
	if (*p == '/' || *p == '\\')
	    base = p + 1;
    memmove(name, base, strlen(base) + 1);
    for (p = name; *p; p++)
	if ((unsigned char) *p < 0x20 || *p == 0x7f)
	    *p = '_';
    for (p = name; *p == ' '; p++)
	 /* void */ ;
    memmove(name, p, strlen(p) + 1);
    n = strlen(name);
    while (n > 0 && name[n - 1] == ' ')
	n--;
    if (n > MIME_NAME_MAX) {
	for (k = 0; k < MIME_NAME_MAX;) {
	    size_t  s = mime_utf8_seq((unsigned char *) name + k, n - k);

	    if (s == 0 || k + s > MIME_NAME_MAX)
		break;
	    k += s;
	}
	n = k;
    }
    name[n] = 0;
    if (n == 0) {
	free(name);
	return (NULL);
    }
    return (name);
}

/* mime_clean_cid - a Content-ID without <>, printable, or NULL */

static char *mime_clean_cid(char *v)
{
    char   *p = v, *e;

    if (v == NULL)
	return (NULL);
    while (*p == ' ' || *p == '\t')
	p++;
    if (*p == '<')
	p++;
    for (e = p; *e > ' ' && *e < 127 && *e != '>' && *e != '<'; e++)
	 /* void */ ;
    if (e == p || e - p > 250) {
	free(v);
	return (NULL);
    }
    memmove(v, p, (size_t) (e - p));
    v[e - p] = 0;
    return (v);
}

/*
 * mime_part_header - fill a part from its header section (hdr, len);
 * in_digest: the default type is message/rfc822 (RFC 2046 5.1.5)
 */
static void mime_part_header(struct mime_part *p, const char *hdr,
			             size_t len, int in_digest)
{
    size_t  pos;
    char   *ct, *cte, *cd, *name = NULL, *cs;
    const char *v;
    char   *bnd;

    pos = 0;
    ct = msg_hdr_find(hdr, len, "Content-Type", &pos);
    if (ct == NULL || mime_type_parse(ct, p->type, sizeof(p->type)) < 0)
	snprintf(p->type, sizeof(p->type), "%s", in_digest ?
		 "message/rfc822" : "text/plain");
    if (ct && (cs = mime_param_raw(ct, "charset")) != NULL) {
	char   *c;

	for (c = cs; *c; c++)
	    *c = (char) tolower((unsigned char) *c);
	if (*cs && strlen(cs) < 64 && strspn(cs, "abcdefghijklmnopqrstuvwxyz"
				       "0123456789-_.:+()") == strlen(cs))
	    p->charset = cs;
	else
	    free(cs);
    }
    if (strncmp(p->type, "multipart/", 10) == 0 && ct
	&& (bnd = mime_param_raw(ct, "boundary")) != NULL) {
	/* RFC 2046: 1 to 70 characters; take up to 200 from the wild. */
	if (*bnd && strlen(bnd) <= 200 && strpbrk(bnd, "\r\n") == NULL) {
	    p->boundary = bnd;
	    p->multipart = 1;
	} else {
	    free(bnd);
	}
    }

    pos = 0;
    p->cte = MIME_CTE_IDENTITY;
    if ((cte = msg_hdr_find(hdr, len, "Content-Transfer-Encoding", &pos))) {
	v = mime_skip_cfws(cte);
	if (strncasecmp(v, "base64", 6) == 0)
	    p->cte = MIME_CTE_BASE64;
	else if (strncasecmp(v, "quoted-printable", 16) == 0)
	    p->cte = MIME_CTE_QP;
	else if (*v && strncasecmp(v, "7bit", 4) != 0
		 && strncasecmp(v, "8bit", 4) != 0
		 && strncasecmp(v, "binary", 6) != 0)
	    p->cte = MIME_CTE_UNKNOWN;
	free(cte);
    }
    /* A container or a message is never encoded (RFC 2045 6.4). */
    if (p->multipart || mime_is(p, "message/rfc822"))
	p->cte = MIME_CTE_IDENTITY;

    pos = 0;
    if ((cd = msg_hdr_find(hdr, len, "Content-Disposition", &pos))) {
	v = mime_skip_cfws(cd);
	if (strncasecmp(v, "inline", 6) == 0)
	    p->disp = MIME_DISP_INLINE;
	else if (strncasecmp(v, "attachment", 10) == 0)
	    p->disp = MIME_DISP_ATTACHMENT;
	name = mime_param(cd, "filename");
	free(cd);
    }
    if (name == NULL && ct)
	name = mime_param(ct, "name");
    p->name = mime_clean_name(name);
    free(ct);

    pos = 0;
    p->content_id = mime_clean_cid(msg_hdr_find(hdr, len, "Content-ID", &pos));
}

/* mime_body_read - body bytes at off (memory or spool); -1 on error */

ssize_t mime_body_read(const struct msg *m, void *buf, size_t n, off_t off)
{
    ssize_t got = msg_body_pread(m, buf, n, off);

    if (got == 0 && n > 0 && off < m->body_len) {
	errno = EIO;				/* shorter than it should be */
	return (-1);
    }
    return (got);
}

/* mime_add_part - a new part; NULL over MIME_MAX_PARTS */

static struct mime_part *mime_add_part(struct mime *mime, int parent)
{
    struct mime_part *p;

    if (mime->nparts >= MIME_MAX_PARTS) {
	mime->over_limit = 1;
	return (NULL);
    }
    if (mime->nparts == mime->cap) {
	mime->cap = mime->cap ? 2 * mime->cap : 16;
	mime->parts = xrealloc(mime->parts, mime->cap * sizeof(*p));
    }
    p = mime->parts + mime->nparts++;
    memset(p, 0, sizeof(*p));
    p->parent = parent;
    p->depth = parent < 0 ? 0 : mime->parts[parent].depth + 1;
    return (p);
}

/* -------------------------------------------------------------- scanner */

#define SCAN_HDR	0		/* reading a part header */
#define SCAN_BODY	1		/* reading content */

struct mime_scan {
    struct mime *mime;
    off_t   fed;			/* body bytes seen so far */
    unsigned char head[MIME_LINE_HEAD];	/* a line start too short to judge */
    size_t  nhead;
    off_t   head_off;			/* body offset of head[0] */
    int     open[MIME_MAX_DEPTH];	/* multiparts whose delimiters count */
    int     nopen;
    int     cur;			/* the part the next line belongs to */
    int     state;
    struct strbuf hdr;			/* header of part cur */
    int     at_line_start;
    int     last_cr;			/* the last piece ended with CR */
    int     prev_eol;			/* length of the last line end */
    int     stop;			/* a limit was reached */
    int     partial;			/* not every byte was seen */
    int     cnt_part;			/* base64 part being counted, or -1 */
    struct mime_dec cnt;
    off_t   cnt_total;
};

/* mime_scan_count - content bytes of part cur: count a base64 part */

static void mime_scan_count(struct mime_scan *s, const unsigned char *q,
			            size_t n)
{
    if (s->cnt_part == s->cur && n > 0)
	s->cnt_total += (off_t) mime_b64_count(&s->cnt, q, n);
}

static void mime_scan_content(struct mime_scan *, off_t);

/* mime_scan_header_done - the header of part cur ends; content at off */

static void mime_scan_header_done(struct mime_scan *s, off_t off)
{
    struct mime_part *p = s->mime->parts + s->cur;
    const struct mime_part *parent = p->parent >= 0 ?
    s->mime->parts + p->parent : NULL;

    mime_part_header(p, s->hdr.data ? s->hdr.data : "", s->hdr.len,
		     parent != NULL && mime_is_multipart(parent, "digest"));
    strbuf_reset(&s->hdr);
    mime_scan_content(s, off);
}

/* mime_scan_content - the content of part cur starts at off */

static void mime_scan_content(struct mime_scan *s, off_t off)
{
    struct mime_part *p = s->mime->parts + s->cur;

    p->body_start = off;
    s->state = SCAN_BODY;
    s->cnt_part = -1;
    if (!p->multipart && p->cte == MIME_CTE_BASE64) {
	s->cnt_part = s->cur;
	mime_dec_init(&s->cnt, MIME_CTE_BASE64);
	s->cnt_total = 0;
    }
    if (p->multipart) {
	if (s->nopen >= MIME_MAX_DEPTH) {
	    s->mime->over_limit = 1;
	    s->stop = 1;
	    return;
	}
	s->open[s->nopen++] = s->cur;
    }
}

/* mime_scan_end - part i ends at a delimiter line at off (or the end) */

static void mime_scan_end(struct mime_scan *s, int i, off_t off, int eol)
{
    struct mime_part *p = s->mime->parts + i;
    unsigned char rest[4];

    if (i == s->cur && s->state == SCAN_HDR)
	mime_scan_header_done(s, off);		/* a header without content */
    if (p->ended)
	return;
    p->body_end = off - eol > p->body_start ? off - eol : p->body_start;
    p->ended = 1;
    if (i == s->cnt_part) {
	/* Every content byte was counted: the decoded size is known. */
	p->decoded_size = s->cnt_total + (off_t) mime_dec_final(&s->cnt, rest);
	p->size_known = !s->partial;
	s->cnt_part = -1;
    }
}

/*
 * mime_scan_delim - is the line piece (n bytes at q, at the start of a
 * line) a delimiter of an open multipart?  Its level in s->open, or -1;
 * *close when it is a close delimiter.  last: the piece ends the body.
 */
static int mime_scan_delim(struct mime_scan *s, const unsigned char *q,
			           size_t n, int complete, int last,
			           int *close)
{
    const char *b;
    size_t  bl, k;
    int     lvl;

    if (!complete && !last)
	return (-1);				/* longer than any delimiter */
    for (lvl = s->nopen - 1; lvl >= 0; lvl--) {
	b = s->mime->parts[s->open[lvl]].boundary;
	bl = strlen(b);
	if (n < 2 + bl || memcmp(q + 2, b, bl) != 0)
	    continue;
	k = 2 + bl;
	*close = 0;
	if (k + 2 <= n && q[k] == '-' && q[k + 1] == '-') {
	    *close = 1;
	    k += 2;
	}
	while (k < n && (q[k] == ' ' || q[k] == '\t'))
	    k++;				/* transport padding */
	if (k < n && q[k] == '\r')
	    k++;
	if (k < n && q[k] == '\n')
	    k++;
	if (k == n)
	    return (lvl);
    }
    return (-1);
}

/* mime_scan_delimiter - a delimiter of open[lvl] at off; next line at next */

static void mime_scan_delimiter(struct mime_scan *s, int lvl, int close,
				        off_t off, off_t next)
{
    int     mp = s->open[lvl];
    int     i;
    struct mime_part *np;

    /* Every part inside multipart mp that is still open ends here. */
    for (i = s->cur; i >= 0 && i != mp; i = s->mime->parts[i].parent)
	mime_scan_end(s, i, off, s->prev_eol);
    if (close) {
	/* Its epilogue follows: part of mp, no more delimiters of it. */
	s->mime->parts[mp].closed = 1;
	s->nopen = lvl;
	s->cur = mp;
	s->state = SCAN_BODY;
	return;
    }
    s->nopen = lvl + 1;
    if ((np = mime_add_part(s->mime, mp)) == NULL) {
	s->stop = 1;
	return;
    }
    np->start = off;
    np->body_start = next;
    s->cur = (int) (np - s->mime->parts);
    s->state = SCAN_HDR;
    strbuf_reset(&s->hdr);
}

/*
 * mime_scan_piece - one line piece (n bytes at body offset off): a
 * whole line (complete), or, for a longer one, a piece of it that is
 * at least MIME_LINE_HEAD bytes long when it starts the line (so that
 * a delimiter, which is shorter, is always seen whole); last: the
 * piece ends the body
 */
static void mime_scan_piece(struct mime_scan *s, const unsigned char *q,
			            size_t n, int complete, int last, off_t off)
{
    int     lvl, close;

    if (s->at_line_start && s->nopen > 0 && n >= 2 && q[0] == '-'
	&& q[1] == '-'
	&& (lvl = mime_scan_delim(s, q, n, complete, last, &close)) >= 0) {
	mime_scan_delimiter(s, lvl, close, off, off + (off_t) n);
    } else if (s->state == SCAN_HDR) {
	if (s->at_line_start && complete
	    && (n == 1 || (n == 2 && q[0] == '\r')))
	    mime_scan_header_done(s, off + (off_t) n);
	else if (s->hdr.len + n <= MIME_MAX_PART_HEADER)
	    strbuf_append(&s->hdr, q, n);	/* longer: the rest is lost */
    } else {
	mime_scan_count(s, q, n);
    }
    if (complete)
	s->prev_eol = (n >= 2 ? q[n - 2] == '\r' : s->last_cr) ? 2 : 1;
    s->last_cr = (q[n - 1] == '\r');
    s->at_line_start = complete;
}

/*
 * mime_next_dash - the offset of the first line after p[0] that starts
 * with "-" (only such a line can be a delimiter), n when none does;
 * memchr() speed over base64, which has no "-"
 */
static size_t mime_next_dash(const unsigned char *p, size_t n)
{
    const unsigned char *d;
    size_t  j;

    for (j = 1; j < n && (d = memchr(p + j, '-', n - j)) != NULL;
	 j = (size_t) (d - p) + 1)
	if (d[-1] == '\n')
	    return ((size_t) (d - p));
    return (n);
}

/* mime_scan_passed - the line state after content bytes p[0..k), k > 0 */

static void mime_scan_passed(struct mime_scan *s, const unsigned char *p,
			             size_t k)
{
    if (p[k - 1] == '\n') {
	s->prev_eol = (k >= 2 ? p[k - 2] == '\r' : s->last_cr) ? 2 : 1;
	s->at_line_start = 1;
    } else {
	s->at_line_start = 0;
    }
    s->last_cr = p[k - 1] == '\r';
}

/*
 * mime_scan_skip - content bytes up to the next line that starts with
 * "-" (only such a line can be a delimiter): their length, after which
 * the line state is what mime_scan_piece() would have left.  Base64
 * has no "-", so a large part goes by at memchr() speed.
 */
static size_t mime_scan_skip(struct mime_scan *s, const unsigned char *p,
			             size_t n)
{
    size_t  k;

    if (s->at_line_start && p[0] == '-')
	return (0);
    k = mime_next_dash(p, n);
    mime_scan_count(s, p, k);
    mime_scan_passed(s, p, k);
    return (k);
}

/* mime_scan_feed - the next n body bytes */

static void mime_scan_feed(struct mime_scan *s, const unsigned char *p,
			           size_t n)
{
    const unsigned char *nl;
    off_t   off = s->fed;
    size_t  k;

    s->fed += (off_t) n;
    while (n > 0 && !s->stop) {
	if (s->nhead > 0) {
	    /* Complete the line start kept from the last call. */
	    k = sizeof(s->head) - s->nhead;
	    k = k < n ? k : n;
	    if ((nl = memchr(p, '\n', k)) != NULL)
		k = (size_t) (nl - p) + 1;
	    memcpy(s->head + s->nhead, p, k);
	    s->nhead += k;
	    p += k;
	    n -= k;
	    off += (off_t) k;
	    if (nl != NULL || s->nhead == sizeof(s->head)) {
		k = s->nhead;
		s->nhead = 0;
		mime_scan_piece(s, s->head, k, nl != NULL, 0, s->head_off);
	    }
	    continue;
	}
	if (s->state == SCAN_BODY && s->nopen == 0) {
	    mime_scan_count(s, p, n);		/* no structure left */
	    mime_scan_passed(s, p, n);
	    return;
	}
	if (s->state == SCAN_BODY && (k = mime_scan_skip(s, p, n)) > 0) {
	    p += k;
	    n -= k;
	    off += (off_t) k;
	    continue;
	}
	nl = memchr(p, '\n', n);
	if (nl == NULL && s->at_line_start && n < sizeof(s->head)) {
	    memcpy(s->head, p, n);		/* too short to judge yet */
	    s->nhead = n;
	    s->head_off = off;
	    return;
	}
	k = nl ? (size_t) (nl - p) + 1 : n;
	mime_scan_piece(s, p, k, nl != NULL, 0, off);
	p += k;
	n -= k;
	off += (off_t) k;
    }
}

/*
 * mime_scan_hole - the body bytes of hole h were stored decoded: the
 * scan goes past them as the watch that made the hole did (content of
 * a base64 leaf with no line that starts with "-"); when this scan
 * does not stand in such a part (the header was changed since), the
 * sizes are not known
 */
static void mime_scan_hole(struct mime_scan *s, const struct msg_hole *h)
{
    if (s->state == SCAN_BODY && s->cnt_part == s->cur && s->nhead == 0
	&& s->cnt.nacc == 0) {
	s->cnt_total += h->file_len;
	s->cnt.nacc = h->aux[1];
    } else {
	s->partial = 1;
	s->nhead = 0;
    }
    s->mime->parts[s->cur].stored_decoded = 1;
    s->fed += h->body_len;
    s->prev_eol = h->aux[2];
    s->at_line_start = h->aux[3] & 1;
    s->last_cr = (h->aux[3] >> 1) & 1;
}

/* mime_scan_start - a scan of the body of m, whose header is complete */

static struct mime_scan *mime_scan_start(struct mime *mime,
					         const struct msg *m)
{
    struct mime_scan *s = xcalloc(1, sizeof(*s));
    struct mime_part *root;

    memset(mime, 0, sizeof(*mime));
    root = mime_add_part(mime, -1);
    mime_part_header(root, m->hdr.data ? m->hdr.data : "", m->hdr.len, 0);
    s->mime = mime;
    s->cur = 0;
    s->at_line_start = 1;
    strbuf_init(&s->hdr, MIME_MAX_PART_HEADER + MIME_BLOCK);
    mime_scan_content(s, 0);			/* opens a multipart root */
    return (s);
}

/*
 * mime_scan_finish - the body ended at len; 0, or -1 with err set
 * (s->mime keeps what was found)
 */
static int mime_scan_finish(struct mime_scan *s, off_t len, char *err,
			            size_t errlen)
{
    struct mime *mime = s->mime;
    size_t  k;
    int     i;

    if (s->nhead > 0 && !s->stop) {
	k = s->nhead;
	s->nhead = 0;
	mime_scan_piece(s, s->head, k, 0, 1, s->head_off);
    }
    if (s->stop) {
	s->partial = 1;
	snprintf(err, errlen, "the message has more than %d MIME parts "
		 "or parts nested more than %d deep", MIME_MAX_PARTS,
		 MIME_MAX_DEPTH);
    }
    /* The end of the body ends every part still open. */
    for (i = s->cur; i >= 0; i = mime->parts[i].parent)
	mime_scan_end(s, i, len, 0);
    for (k = 0; k < mime->nparts; k++)
	if (!mime->parts[k].ended) {
	    mime->parts[k].body_end = mime->parts[k].body_start;
	    mime->parts[k].ended = 1;
	}
    return (s->stop ? -1 : 0);
}

/* mime_scan_free - release the scan (not the parts) */

static void mime_scan_free(struct mime_scan *s)
{
    strbuf_free(&s->hdr);
    free(s);
}


/* ------------------------------------------------------ online parse */

struct mime_watch {
    const struct msg *m;
    struct mime mime;			/* the result */
    struct mime_scan *scan;
    int     div;			/* part being stored decoded, or -1 */
    struct mime_dec dec;		/* its decoder */
    unsigned char *out;			/* decoded bytes of one block */
    size_t  outcap;
    struct strbuf root_hdr;		/* the header it was parsed with */
    int     bad;			/* bytes out of order: not usable */
    int     finished;
    int     ret;			/* of mime_scan_finish() */
    char    err[256];
};

/*
 * Storing a large base64 part decoded.  Once a base64 leaf has more
 * than mime_decoded_after content bytes (4 MB: the message is then
 * far over what one sendMail request takes, and goes through a draft,
 * which wants the part decoded), the watch decodes the rest of it as
 * it goes by and has msg.c store that instead (a msg_cut; the hole in
 * the file is a quarter smaller than the base64, and the upload later
 * copies decoded bytes instead of decoding from the spool).  It starts
 * at a line start on a quantum boundary and stops before the first
 * line that starts with "-", which might be a delimiter (base64 has
 * no "-"); the rest of the part is then stored as it is.  Only the
 * watch's own scan decides, so the stored structure is the one
 * mime_parse() hands out.
 */
static off_t mime_decoded_after = MIME_STORE_DECODED_AFTER;

/*
 * A block larger than this is stored as it is (the decoded bytes of a
 * block are held until msg.c writes them: memory stays bounded when a
 * milter body held in memory up to memory_limit, 64 MB at most, goes
 * to the spool in one block).
 */
#define MIME_DIVERT_BLOCK	(2 * 1024 * 1024)

/* mime_store_decoded_after - see mime.h */

off_t   mime_store_decoded_after(off_t bytes)
{
    off_t   was = mime_decoded_after;

    mime_decoded_after = bytes;
    return (was);
}

/*
 * mime_watch_until - how many of the n bytes at q to feed to the scan
 * before a part can be stored decoded (cut: NULL when this block is
 * stored as it is); 0 when it starts at q (w->div is then set)
 */
static size_t mime_watch_until(struct mime_watch *w, const unsigned char *q,
			               size_t n, const struct msg_cut *cut)
{
    struct mime_scan *s = w->scan;
    struct mime_part *p = s->mime->parts + s->cur;
    const unsigned char *nl;
    off_t   at;

    if (cut == NULL || cut->to > cut->from)
	return (n);
    if (s->state == SCAN_HDR) {
	nl = memchr(q, '\n', n);		/* look again after each line */
	return (nl ? (size_t) (nl - q) + 1 : n);
    }
    if (s->cnt_part != s->cur || p->stored_decoded)
	return (mime_next_dash(q, n));		/* a new part there? */
    at = p->body_start + mime_decoded_after;
    if (s->fed + (off_t) n <= at)
	return (n);
    if (s->fed < at)
	return ((size_t) (at - s->fed));	/* then look again */
    if (s->nhead == 0 && s->at_line_start && s->cnt.nacc == 0
	&& q[0] != '-') {
	w->div = s->cur;
	mime_dec_init(&w->dec, MIME_CTE_BASE64);
	return (0);
    }
    nl = memchr(q, '\n', n);			/* try at the next line */
    return (nl ? (size_t) (nl - q) + 1 : n);
}

/*
 * mime_watch_divert - store content bytes of part w->div decoded: from
 * q (block offset at) up to the first line that starts with "-"; the
 * number of bytes taken (0: the part goes on as it is, also when the
 * block cannot be cut)
 */
static size_t mime_watch_divert(struct mime_watch *w, const unsigned char *q,
			                size_t n, size_t at, struct msg_cut *cut)
{
    struct mime_scan *s = w->scan;
    size_t  k, olen;

    k = s->at_line_start && q[0] == '-' ? 0 : mime_next_dash(q, n);
    if (k == 0 || cut == NULL || cut->to > cut->from) {
	w->div = -1;				/* the rest as it is */
	return (0);
    }
    if (w->outcap < k + MIME_DEC_SLACK) {
	w->outcap = k + MIME_DEC_SLACK;
	w->out = xrealloc(w->out, w->outcap);
    }
    olen = mime_dec_update(&w->dec, q, k, w->out);
    s->mime->parts[w->div].stored_decoded = 1;
    /* The scan goes on as if it had counted these bytes. */
    s->fed += (off_t) k;
    s->cnt_total += (off_t) olen;
    s->cnt.nacc = w->dec.nacc;
    mime_scan_passed(s, q, k);
    cut->from = at;
    cut->to = at + k;
    cut->data = (const char *) w->out;
    cut->len = olen;
    cut->aux[0] = (int) w->dec.acc;
    cut->aux[1] = w->dec.nacc;
    cut->aux[2] = s->prev_eol;
    cut->aux[3] = s->at_line_start | s->last_cr << 1;
    if (k < n)
	w->div = -1;
    return (k);
}

/* mime_watch_tap - msg_tap() callback: parse the body as it is stored */

static void mime_watch_tap(void *ctx, const char *p, size_t n, off_t off,
			           struct msg_cut *cut)
{
    struct mime_watch *w = ctx;
    const unsigned char *q = (const unsigned char *) p;
    size_t  k, at;

    if (w->bad || w->finished)
	return;
    if (w->scan == NULL && off == 0) {
	strbuf_init(&w->root_hdr, STRBUF_MAX_HEADERS);
	strbuf_append(&w->root_hdr, w->m->hdr.data ? w->m->hdr.data : "",
		      w->m->hdr.len);
	w->scan = mime_scan_start(&w->mime, w->m);
    }
    if (w->scan == NULL || off != w->scan->fed) {
	w->bad = 1;				/* the body was dropped */
	w->div = -1;
	return;
    }
    if (n > MIME_DIVERT_BLOCK)
	cut = NULL;				/* stored as it is */
    while (n > 0) {
	at = (size_t) (q - (const unsigned char *) p);
	if (w->scan->stop) {
	    mime_scan_feed(w->scan, q, n);	/* counts them, no more */
	    break;
	}
	if (w->div >= 0 && (k = mime_watch_divert(w, q, n, at, cut)) > 0) {
	    /* stored decoded */
	} else if ((k = mime_watch_until(w, q, n, cut)) > 0) {
	    mime_scan_feed(w->scan, q, k);
	} else if ((k = mime_watch_divert(w, q, n, at, cut)) == 0) {
	    /* Never happens (both ask the same); never loop either. */
	    w->div = -1;
	    mime_scan_feed(w->scan, q, n);
	    k = n;
	}
	q += k;
	n -= k;
    }
}

/* mime_watch_free - msg_tap() callback: release the watch */

static void mime_watch_free(void *ctx)
{
    struct mime_watch *w = ctx;

    if (w->scan)
	mime_scan_free(w->scan);
    mime_free(&w->mime);
    strbuf_free(&w->root_hdr);
    free(w->out);
    free(w);
}

/* mime_watch - see mime.h */

void    mime_watch(struct msg *m)
{
    struct mime_watch *w = xcalloc(1, sizeof(*w));

    w->m = m;
    w->div = -1;
    msg_tap(m, mime_watch_tap, mime_watch_free, w);
}

/* mime_copy - a deep copy of the parts of src */

static void mime_copy(struct mime *dst, const struct mime *src)
{
    struct mime_part *p;
    size_t  i;

    *dst = *src;
    dst->cap = src->nparts ? src->nparts : 1;
    dst->parts = xmalloc(dst->cap * sizeof(*p));
    memcpy(dst->parts, src->parts, src->nparts * sizeof(*p));
    for (i = 0; i < src->nparts; i++) {
	p = dst->parts + i;
	p->charset = p->charset ? xstrdup(p->charset) : NULL;
	p->boundary = p->boundary ? xstrdup(p->boundary) : NULL;
	p->name = p->name ? xstrdup(p->name) : NULL;
	p->content_id = p->content_id ? xstrdup(p->content_id) : NULL;
    }
}

/*
 * mime_watched - the online result for m when it is usable: it saw
 * every body byte, and the header section is the one it started with
 */
static struct mime_watch *mime_watched(const struct msg *m)
{
    struct mime_watch *w;

    if (m->tap != mime_watch_tap || (w = m->tap_ctx) == NULL || w->bad
	|| w->scan == NULL || w->scan->fed != m->body_len
	|| w->root_hdr.len != m->hdr.len
	|| (m->hdr.len > 0
	    && memcmp(w->root_hdr.data, m->hdr.data, m->hdr.len) != 0))
	return (NULL);
    if (!w->finished) {
	w->ret = mime_scan_finish(w->scan, m->body_len, w->err,
				  sizeof(w->err));
	w->finished = 1;
    }
    return (w);
}

/* mime_parse - the structure of message m; see mime.h */

int     mime_parse(struct mime *mime, const struct msg *m, char *err,
		           size_t errlen)
{
    struct mime_watch *w;
    struct mime_scan *s;
    const struct msg_hole *h;
    unsigned char *buf;
    ssize_t got = 0;
    off_t   off;
    int     ret;

    if ((w = mime_watched(m)) != NULL) {
	mime_copy(mime, &w->mime);
	if (w->ret < 0)
	    snprintf(err, errlen, "%s", w->err);
	return (w->ret);
    }
    s = mime_scan_start(mime, m);
    buf = xmalloc(MIME_BLOCK);
    /* Read until no structure is left (a single part has none). */
    for (off = 0; off < m->body_len && !s->stop
	 && (s->state == SCAN_HDR || s->nopen > 0); off += got) {
	if ((got = mime_body_read(m, buf, MIME_BLOCK, off)) == MSG_IN_HOLE
	    && (h = msg_hole_at(m, off)) != NULL && h->body_off == off) {
	    mime_scan_hole(s, h);
	    got = h->body_len;
	    continue;
	}
	if (got <= 0)
	    break;
	mime_scan_feed(s, buf, (size_t) got);
    }
    free(buf);
    if (off < m->body_len)
	s->partial = 1;				/* sizes not all counted */
    ret = mime_scan_finish(s, m->body_len, err, errlen);
    if (got == MSG_IN_HOLE) {
	snprintf(err, errlen, "cannot read the spooled message body: "
		 "offset %lld is inside a part stored decoded",
		 (long long) off);
	ret = -1;
    } else if (got < 0) {
	snprintf(err, errlen, "cannot read the spooled message body: %s",
		 strerror(errno));
	ret = -1;
    }
    mime_scan_free(s);
    return (ret);
}

/* mime_free - release the parts */

void    mime_free(struct mime *mime)
{
    size_t  i;

    for (i = 0; i < mime->nparts; i++) {
	free(mime->parts[i].charset);
	free(mime->parts[i].boundary);
	free(mime->parts[i].name);
	free(mime->parts[i].content_id);
    }
    free(mime->parts);
    memset(mime, 0, sizeof(*mime));
}

/* ---------------------------------------------------- decoded content */

/*
 * A spooled body is read through a window of MIME_MAP_WINDOW bytes
 * mapped from the spool file (no copy into a buffer of ours; the window
 * moves along, so memory stays bounded); where mmap() fails, pread().
 * mime_stream_window() changes the size for streams opened later.
 */
#define MIME_MAP_WINDOW	(4 * 1024 * 1024)

static size_t mime_map_window = MIME_MAP_WINDOW;

struct mime_stream {
    const struct msg *m;
    off_t   start, end;			/* encoded content span */
    off_t   pos;			/* next encoded byte to read */
    const struct msg_hole *hole;	/* a part of it stored decoded */
    off_t   hpos;			/* next stored byte of the hole */
    struct mime_dec dec;
    enum mime_cte cte;
    int     done;			/* final() called */
    size_t  olen, ooff;			/* decoded bytes in out[] */
    unsigned char *map;			/* mapped window, or NULL */
    off_t   map_off;			/* its file offset */
    size_t  map_len;
    size_t  window;			/* map at most this much at once */
    int     no_map;			/* mmap() failed or off: pread() */
    unsigned char in[MIME_BLOCK];
    unsigned char out[MIME_BLOCK + MIME_DEC_SLACK];
    char    error[256];
};

/* mime_stream_unmap - drop the window */

static void mime_stream_unmap(struct mime_stream *s)
{
    if (s->map != NULL)
	(void) munmap(s->map, s->map_len);
    s->map = NULL;
}

/*
 * mime_stream_span - up to max encoded bytes at s->pos, in memory: *p
 * points into the in-memory body, the mapped window or s->in (max is
 * then at most its size).  Their number; 0 at the end; -1 with
 * s->error set.
 */
static ssize_t mime_stream_span(struct mime_stream *s,
				        const unsigned char **p, size_t max)
{
    const struct msg *m = s->m;
    off_t   left = s->end - s->pos, page, fpos;
    size_t  k = (off_t) max < left ? max : (size_t) left;
    ssize_t got;
    void   *a;

    if (s->hole && s->pos < s->hole->body_off
	&& (off_t) k > s->hole->body_off - s->pos)
	k = (size_t) (s->hole->body_off - s->pos);	/* raw up to it */
    if (left <= 0)
	return (0);
    if (m->body_fd < 0) {
	*p = (const unsigned char *) m->body_mem.data + s->pos;
	return ((ssize_t) k);
    }
    fpos = msg_file_off(m, s->pos);
    if (!s->no_map && (s->map == NULL || fpos < s->map_off
		       || fpos >= s->map_off + (off_t) s->map_len)) {
	mime_stream_unmap(s);
	page = (off_t) sysconf(_SC_PAGESIZE);
	s->map_off = fpos / page * page;
	s->map_len = m->file_len - s->map_off < (off_t) s->window ?
	    (size_t) (m->file_len - s->map_off) : s->window;
	a = mmap(NULL, s->map_len, PROT_READ, MAP_SHARED | MAP_POPULATE,
		 m->body_fd, s->map_off);
	if (a == MAP_FAILED)
	    s->no_map = 1;
	else
	    s->map = a;
    }
    if (s->map != NULL) {
	if ((off_t) k > s->map_off + (off_t) s->map_len - fpos)
	    k = (size_t) (s->map_off + (off_t) s->map_len - fpos);
	*p = s->map + (fpos - s->map_off);
	return ((ssize_t) k);
    }
    k = k < sizeof(s->in) ? k : sizeof(s->in);
    if ((got = mime_body_read(m, s->in, k, s->pos)) <= 0) {
	snprintf(s->error, sizeof(s->error), "cannot read the spooled "
		 "message body: %s", got == MSG_IN_HOLE ? "inside a part "
		 "stored decoded" : got < 0 ? strerror(errno) :
		 "the file is shorter than expected");
	return (-1);
    }
    *p = s->in;
    return (got);
}

/* mime_stream_open - the decoded content of part p */

struct mime_stream *mime_stream_open(const struct msg *m,
				             const struct mime_part *p)
{
    struct mime_stream *s = xcalloc(1, sizeof(*s));

    s->m = m;
    s->start = p->body_start;
    s->end = p->body_end;
    s->cte = p->cte;
    if ((s->hole = msg_hole_at(m, p->body_start)) != NULL
	&& s->hole->body_off >= p->body_end)
	s->hole = NULL;
    s->window = mime_map_window;
    s->no_map = s->window == 0;
    mime_stream_rewind(s);
    return (s);
}

/* mime_stream_rewind - start over */

void    mime_stream_rewind(struct mime_stream *s)
{
    s->pos = s->start;
    s->hpos = 0;
    s->done = 0;
    s->olen = s->ooff = 0;
    s->error[0] = 0;
    mime_dec_init(&s->dec, s->cte);
}

/*
 * mime_stream_hole - at the hole: up to n of its stored (decoded)
 * bytes, read straight into buf; after the last, the decoder goes on
 * from its state at the end of the hole.  -1 with s->error set.
 */
static ssize_t mime_stream_hole(struct mime_stream *s, char *buf, size_t n)
{
    const struct msg_hole *h = s->hole;
    size_t  k;
    ssize_t got;

    if (s->cte != MIME_CTE_BASE64 || s->m->body_fd < 0) {
	snprintf(s->error, sizeof(s->error), "cannot read the spooled "
		 "message body: a part that is not base64 was stored "
		 "decoded");
	return (-1);
    }
    if (s->hpos >= h->file_len) {
	s->dec.acc = (unsigned int) h->aux[0];
	s->dec.nacc = h->aux[1];
	s->pos = h->body_off + h->body_len < s->end ?
	    h->body_off + h->body_len : s->end;
	return (0);
    }
    k = h->file_len - s->hpos < (off_t) n ? (size_t) (h->file_len - s->hpos)
	: n;
    if ((got = msg_file_read(s->m, buf, k, h->file_off + s->hpos)) <= 0) {
	snprintf(s->error, sizeof(s->error), "cannot read the spooled "
		 "message body: %s", got < 0 ? strerror(errno) :
		 "the file is shorter than expected");
	return (-1);
    }
    s->hpos += got;
    return (got);
}

/*
 * mime_stream_read - up to n decoded bytes; 0 at the end, -1 error.
 * Where the caller's buffer has room for all that a span can give
 * (base64 and identity give at most as many bytes as they take), the
 * span is decoded straight into it; else through out[].
 */
ssize_t mime_stream_read(struct mime_stream *s, void *buf, size_t n)
{
    const unsigned char *p;
    size_t  done = 0, k, room;
    ssize_t got;

    while (done < n) {
	if (s->ooff < s->olen) {
	    k = s->olen - s->ooff;
	    k = k < n - done ? k : n - done;
	    memcpy((char *) buf + done, s->out + s->ooff, k);
	    s->ooff += k;
	    done += k;
	    continue;
	}
	if (s->done)
	    break;
	if (s->hole && s->pos == s->hole->body_off) {
	    if ((got = mime_stream_hole(s, (char *) buf + done,
					n - done)) < 0)
		return (-1);
	    done += (size_t) got;
	    continue;
	}
	s->ooff = s->olen = 0;
	room = n - done;
	if (room >= 1024 && s->cte != MIME_CTE_QP) {
	    /* At most 2 bytes more than taken: a quantum begun before. */
	    if ((got = mime_stream_span(s, &p, room - 16)) < 0)
		return (-1);
	    if (got > 0) {
		s->pos += got;
		done += mime_dec_update(&s->dec, p, (size_t) got,
					(unsigned char *) buf + done);
		continue;
	    }
	} else if ((got = mime_stream_span(s, &p, MIME_BLOCK)) < 0) {
	    return (-1);
	} else if (got > 0) {
	    s->pos += got;
	    s->olen = mime_dec_update(&s->dec, p, (size_t) got, s->out);
	    continue;
	}
	s->olen = mime_dec_final(&s->dec, s->out);
	s->done = 1;
    }
    return ((ssize_t) done);
}

/* mime_stream_window - see mime.h */

size_t  mime_stream_window(size_t bytes)
{
    size_t  was = mime_map_window, page = (size_t) sysconf(_SC_PAGESIZE);

    mime_map_window = (bytes + page - 1) / page * page;
    return (was);
}

/* mime_stream_error - why mime_stream_read() failed */

const char *mime_stream_error(const struct mime_stream *s)
{
    return (s->error);
}

/* mime_stream_close - release the stream; NULL is fine */

void    mime_stream_close(struct mime_stream *s)
{
    if (s == NULL)
	return;
    mime_stream_unmap(s);
    free(s);
}

/* mime_decoded_size - the exact decoded size of part p */

int     mime_decoded_size(const struct msg *m, const struct mime_part *p,
			          off_t *size, char *err, size_t errlen)
{
    struct mime_stream *s;
    const unsigned char *in;
    unsigned char *sink;
    ssize_t got;
    off_t   total = 0;

    if (p->cte == MIME_CTE_IDENTITY) {
	*size = p->body_end - p->body_start;
	return (0);
    }
    if (p->size_known) {
	*size = p->decoded_size;		/* counted while parsing */
	return (0);
    }
    s = mime_stream_open(m, p);
    if (p->cte == MIME_CTE_BASE64 && s->hole == NULL) {
	/* Count, do not decode: the same rules as mime_b64_update(). */
	while ((got = mime_stream_span(s, &in, MIME_BLOCK)) > 0) {
	    s->pos += got;
	    total += (off_t) mime_b64_count(&s->dec, in, (size_t) got);
	}
	if (got < 0) {
	    snprintf(err, errlen, "%s", s->error);
	    mime_stream_close(s);
	    return (-1);
	}
	total += (off_t) mime_dec_final(&s->dec, s->out);
	mime_stream_close(s);
	*size = total;
	return (0);
    }
    sink = xmalloc(MIME_BLOCK);
    while ((got = mime_stream_read(s, sink, MIME_BLOCK)) > 0)
	total += got;
    free(sink);
    if (got < 0) {
	snprintf(err, errlen, "%s", mime_stream_error(s));
	mime_stream_close(s);
	return (-1);
    }
    mime_stream_close(s);
    *size = total;
    return (0);
}
