/* test_msg - message reading and building, body spooling, base64 streaming */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>

#include "msg.h"
#include "strbuf.h"
#include "util.h"
#include "t.h"
#include "t_file.h"

static char tmpdir[256];

/* input_fd - a readable fd holding data (a regular file) */

static int input_fd(const char *data, size_t len)
{
    char    path[300];
    int     fd;

    snprintf(path, sizeof(path), "%s/input.XXXXXX", tmpdir);
    fd = mkstemp(path);
    if (fd < 0)
	return (-1);
    unlink(path);
    if (write(fd, data, len) != (ssize_t) len || lseek(fd, 0, SEEK_SET) != 0) {
	close(fd);
	return (-1);
    }
    return (fd);
}

/*
 * paced_fd - a pipe fed by a child in writes of 4093 bytes (odd: reads
 * see odd chunk boundaries); after the first fast bytes it waits
 * pause_us after each write (Postfix's pipe(8) writes 4 KB at a time,
 * mostly into an empty pipe)
 */
static int paced_fd(const char *data, size_t len, size_t fast,
		            unsigned pause_us, pid_t *pid)
{
    int     p[2];
    size_t  off = 0, n;
    ssize_t w;

    if (pipe(p) < 0)
	return (-1);
    if ((*pid = fork()) == 0) {
	close(p[0]);
	signal(SIGPIPE, SIG_IGN);
	while (off < len) {
	    n = len - off < 4093 ? len - off : 4093;
	    if ((w = write(p[1], data + off, n)) < 0)
		_exit(1);
	    off += (size_t) w;
	    if (off > fast)
		usleep(pause_us);
	}
	_exit(0);
    }
    close(p[1]);
    return (p[0]);
}

/* pipe_fd - a pipe fed by a child; *pid to reap (exit 0: all written) */

static int pipe_fd(const char *data, size_t len, pid_t *pid)
{
    return (paced_fd(data, len, len, 0, pid));
}

/* body_of - the spooled body as a string */

static char *body_of(const struct msg *m)
{
    char   *b = xmalloc((size_t) m->body_len + 1);

    if (m->body_fd < 0 && m->body_len > 0)
	memcpy(b, m->body_mem.data, (size_t) m->body_len);
    if (m->body_fd >= 0 && m->body_len > 0
	&& pread(m->body_fd, b, (size_t) m->body_len, 0) != (ssize_t) m->body_len)
	b[0] = 0;
    else
	b[m->body_len] = 0;
    return (b);
}

/* Header-only input: no empty line, no body (the stream adds none). */
#define HDR_ONLY	1

static const struct {
    const char *name;
    const char *in;
    const char *hdr;
    const char *body;
    int     hdr_only;
    size_t  inlen;			/* 0: strlen(in) */
} read_cases[] = {
    {"LF to CRLF", "From: a@x\nTo: b@y\n\nline1\nline2\n",
    "From: a@x\r\nTo: b@y\r\n", "line1\r\nline2\r\n", 0, 0},
    {"CRLF kept, mixed fixed, bare CR kept",
	"Subject: s\r\n\r\na\r\nb\nc\rd\n\n",
    "Subject: s\r\n", "a\r\nb\r\nc\rd\r\n\r\n", 0, 0},
    {"mbox From line dropped",
	"From sender@x Mon Jan  1 00:00:00 2024\nSubject: s\n\nbody\n",
    "Subject: s\r\n", "body\r\n", 0, 0},
    {"no body", "Subject: s\nTo: x@y\n", "Subject: s\r\nTo: x@y\r\n", "",
    HDR_ONLY, 0},
    {"no final line end", "Subject: s", "Subject: s\r\n", "", HDR_ONLY, 0},
    {"empty body after separator", "Subject: s\n\n", "Subject: s\r\n", "", 0, 0},
    {"header-less input is body", "hello world\nmore\n", "",
    "hello world\r\nmore\r\n", 0, 0},
    {"leading blank line: header-less", "\nbody\n", "", "body\r\n", 0, 0},
    {"continuation lines", "Subject: a\n b\n\tc\nTo: x\n\nz",
    "Subject: a\r\n b\r\n\tc\r\nTo: x\r\n", "z", 0, 0},
    {"non-header line starts the body", "Subject: a\nthis is body\nmore\n",
    "Subject: a\r\n", "this is body\r\nmore\r\n", 0, 0},
    {"obsolete space before colon removed", "Subject \t: a\nTo :b\n\nb",
    "Subject: a\r\nTo:b\r\n", "b", 0, 0},
    {"bare CR in the header is a space, in the body kept",
	"Subject: a\rBcc: e@x\r\nX: \r\rb\r\r\n\nc\rd\n",
    "Subject: a Bcc: e@x\r\nX:   b \r\n", "c\rd\r\n", 0, 0},
    {"NUL in the header is a space", "Subject: a\0Bcc: e@x\n\nb",
    "Subject: a Bcc: e@x\r\n", "b", 0, 22},
    {"CR at a line start: body (not a field)", "Subject: a\n\rBcc: e@x\n",
    "Subject: a\r\n", "\rBcc: e@x\r\n", 0, 0},
    {"leading continuation is body", " indented\nx\n", "", " indented\r\nx\r\n", 0, 0},
    {"mbox line only then body text", "From x\nbody line\n", "", "body line\r\n", 0, 0},
    {"header, empty line, no body", "Subject: s\r\n\r\n", "Subject: s\r\n",
    "", 0, 0},
};

/* read_case_len - input length of read_cases[i] */

static size_t read_case_len(size_t i)
{
    return (read_cases[i].inlen ? read_cases[i].inlen
	    : strlen(read_cases[i].in));
}

static void test_read_table(void)
{
    size_t  i;
    struct msg m;
    struct m365_result res;
    int     fd;
    char   *b;

    for (i = 0; i < sizeof(read_cases) / sizeof(read_cases[0]); i++) {
	fd = input_fd(read_cases[i].in, read_case_len(i));
	T_OK(fd >= 0);
	T_CHECK(msg_read(&m, fd, tmpdir, 0, &res) == 0, "%s: %s %s",
		read_cases[i].name, res.dsn, res.text);
	T_CHECK(strcmp(strbuf_str(&m.hdr), read_cases[i].hdr) == 0,
		"%s: hdr \"%s\"", read_cases[i].name, strbuf_str(&m.hdr));
	b = body_of(&m);
	T_CHECK(strcmp(b, read_cases[i].body) == 0, "%s: body \"%s\"",
		read_cases[i].name, b);
	T_EQ_INT(m.body_len, strlen(read_cases[i].body));
	T_EQ_INT(m.hdr_only, read_cases[i].hdr_only);
	T_EQ_INT(m.size, (off_t) (m.hdr.len + (read_cases[i].hdr_only ? 0 : 2)
				  + strlen(read_cases[i].body)));
	if (m.body_len == 0)
	    T_EQ_INT(m.body_fd, -1);
	free(b);
	msg_free(&m);
	close(fd);
    }
}

/* reference_crlf - independent LF -> CRLF conversion */

static char *reference_crlf(const char *in, size_t n, size_t *outlen)
{
    char   *out = xmalloc(2 * n + 1);
    size_t  i, o = 0;

    for (i = 0; i < n; i++) {
	if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r'))
	    out[o++] = '\r';
	out[o++] = in[i];
    }
    *outlen = o;
    return (out);
}

/*
 * test_lf_simd - bare LF -> CRLF the 32-at-a-time way (where the CPU
 * has it) and the plain way give what reference_crlf() gives: random
 * bodies dense in CR and LF (CR LF, CR CR LF, LF LF, CR alone, a CR
 * at the end of a piece and its LF in the next), fed in pieces of
 * random size, spooled from the first byte and after 10000 in memory
 */
static void test_lf_simd(void)
{
    static const char pick[] = "\r\n\nab-=0\t ";
    const size_t hlen = 12;			/* "Subject: s\n\n" */
    size_t  n, i, wlen, off, k;
    char   *in, *want, *got;
    struct msg m;
    struct msg_stream *ms;
    struct m365_result res;
    unsigned seed = 5;
    int     round, simd, had = msg_lf_simd(-1), bad = 0;

    for (round = 0; round < 120; round++) {
	n = hlen + 1 + (size_t) (round * 7919) % 300000;
	in = xmalloc(n);
	memcpy(in, "Subject: s\n\n", hlen);
	for (i = hlen; i < n; i++) {
	    seed = seed * 1103515245 + 12345;
	    /* mostly long runs, sometimes a thicket of line ends */
	    in[i] = (seed >> 16) % (round % 3 == 0 ? 3 : 90) == 0 ?
		pick[(seed >> 8) % (sizeof(pick) - 1)] :
		(char) ('A' + (seed >> 20) % 26);
	}
	want = reference_crlf(in + hlen, n - hlen, &wlen);
	for (simd = 0; simd < 2; simd++) {
	    (void) msg_lf_simd(simd);
	    ms = msg_stream_create(&m, tmpdir, round % 2 ? 10000 : 0, 0);
	    for (off = 0; off < n; off += k) {
		seed = seed * 1103515245 + 12345;
		k = 1 + (seed >> 12) % (round % 4 == 0 ? 40 : 200000);
		k = k < n - off ? k : n - off;
		msg_stream_put(ms, in + off, k);
	    }
	    T_EQ_INT(msg_stream_finish(ms, &res), 0);
	    got = body_of(&m);
	    if (m.body_len != (off_t) wlen || memcmp(got, want, wlen) != 0
		|| m.size != (off_t) (m.hdr.len + 2 + wlen))
		bad++;
	    free(got);
	    msg_free(&m);
	}
	free(want);
	free(in);
    }
    T_CHECK(bad == 0, "%d bodies differ from the reference", bad);
    (void) msg_lf_simd(had);
    T_EQ_INT(msg_lf_simd(-1), had);
    printf("# LF -> CRLF thirty-two at a time on this CPU: %s\n",
	   had ? "yes" : "no");
}

/* Long lines, CR/LF split across 64 KB reads, via file and pipe. */

static void test_read_big(void)
{
    const size_t hlen = 12;		/* "Subject: s\n\n" */
    size_t  n = 300000, i, wlen;
    char   *in = xmalloc(n);
    char   *want, *got;
    struct msg m;
    struct m365_result res;
    int     fd, round, status;
    pid_t   pid = 0;

    memcpy(in, "Subject: s\n\n", hlen);
    for (i = hlen; i < n; i++)
	in[i] = (char) ('a' + i % 26);
    /* A 200 KB line, then short lines; CRLF straddling the 64 KB reads. */
    for (i = 210000; i < n; i += 37)
	in[i] = '\n';
    in[65535] = '\r';
    in[65536] = '\n';
    in[131071] = '\r';
    in[131072] = '\n';
    in[196607] = '\n';
    in[196608] = '\n';
    want = reference_crlf(in + hlen, n - hlen, &wlen);
    for (round = 0; round < 2; round++) {
	fd = round == 0 ? input_fd(in, n) : pipe_fd(in, n, &pid);
	T_OK(fd >= 0);
	T_EQ_INT(msg_read(&m, fd, tmpdir, 0, &res), 0);
	T_EQ_INT(m.body_len, wlen);
	got = body_of(&m);
	T_OK(m.body_len == (off_t) wlen && memcmp(got, want, wlen) == 0);
	free(got);
	msg_free(&m);
	close(fd);
	if (round == 1) {
	    T_OK(waitpid(pid, &status, 0) == pid && WIFEXITED(status)
		 && WEXITSTATUS(status) == 0);
	}
    }
    free(want);
    free(in);
}

/* tap_collect - msg_tap() callback: append to a strbuf, check the order */

struct tap_seen {
    struct strbuf sb;
    int     out_of_order;
    size_t  calls;
};

static void tap_collect(void *ctx, const char *p, size_t n, off_t off,
			        struct msg_cut *cut)
{
    (void) cut;
    struct tap_seen *t = ctx;

    if (off != (off_t) t->sb.len)
	t->out_of_order = 1;
    strbuf_append(&t->sb, p, n);
    t->calls++;
}

/*
 * A body of several MB: the spool buffer grows from 64 KB to 1 MB on
 * the way (lines shorter and longer than either, CRLF and bare LF
 * across both sizes); the file and the tap get every byte in order.
 */
static void test_read_several_mb(void)
{
    const size_t hlen = 12;		/* "Subject: s\n\n" */
    size_t  n = 3500000, i, wlen;
    char   *in = xmalloc(n);
    char   *want, *got;
    struct msg m;
    struct msg_stream *ms;
    struct m365_result res;
    struct tap_seen t;
    int     fd, status;
    pid_t   pid = 0;

    memcpy(in, "Subject: s\n\n", hlen);
    for (i = hlen; i < n; i++)
	in[i] = (char) ('a' + i % 26);
    for (i = hlen + 40; i < 1500000; i += 77)
	in[i] = '\n';
    for (i = 2800000; i < n; i += 61) {
	in[i] = '\n';
	if (i % 3 == 0)
	    in[i - 1] = '\r';
    }
    /* 1500000 .. 2800000: one line of 1.3 MB; CRLF around 1 MB, 2 MB */
    in[1048575] = '\r';
    in[1048576] = '\n';
    in[1048577 + 65536] = '\n';
    in[2097151] = '\r';
    want = reference_crlf(in + hlen, n - hlen, &wlen);
    fd = pipe_fd(in, n, &pid);
    T_OK(fd >= 0);
    memset(&t, 0, sizeof(t));
    strbuf_init(&t.sb, 8 * n);
    ms = msg_stream_create(&m, tmpdir, 0, 0);
    msg_tap(&m, tap_collect, NULL, &t);
    T_EQ_INT(msg_stream_read(ms, fd, &res), 0);
    T_EQ_INT(m.body_len, wlen);
    got = body_of(&m);
    T_OK(m.body_len == (off_t) wlen && memcmp(got, want, wlen) == 0);
    T_EQ_INT(t.sb.len, wlen);
    T_OK(t.sb.len == wlen && memcmp(t.sb.data, want, wlen) == 0);
    T_EQ_INT(t.out_of_order, 0);
    /* 1 MB blocks after the first MB: far fewer than 64 KB ones */
    T_CHECK(t.calls > 3 && t.calls < 30, "%lu tap calls",
	    (unsigned long) t.calls);
    T_OK(waitpid(pid, &status, 0) == pid && WIFEXITED(status)
	 && WEXITSTATUS(status) == 0);
    free(got);
    msg_free(&m);
    close(fd);
    strbuf_free(&t.sb);
    free(want);
    free(in);
}

/*
 * read_paced - read in (with 1 ms pauses or without) from a paced
 * writer; the reader's voluntary context switches (each wait for the
 * writer, each pause), or -1 when the body is not want
 */
static long read_paced(const char *in, size_t n, const char *want,
		               size_t wlen, int pauses)
{
    struct msg m;
    struct m365_result res;
    struct rusage ru0, ru1;
    char   *got;
    long    sw = -1;
    int     fd, status, was;
    pid_t   pid;

    if ((fd = paced_fd(in, n, 1200000, 200, &pid)) < 0)
	return (-1);
    was = msg_read_pauses(pauses);
    (void) getrusage(RUSAGE_SELF, &ru0);
    if (msg_read(&m, fd, tmpdir, 0, &res) == 0) {
	(void) getrusage(RUSAGE_SELF, &ru1);
	got = body_of(&m);
	if (m.body_len == (off_t) wlen && memcmp(got, want, wlen) == 0)
	    sw = ru1.ru_nvcsw - ru0.ru_nvcsw;
	free(got);
    }
    (void) msg_read_pauses(was);
    msg_free(&m);
    close(fd);
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status)
	|| WEXITSTATUS(status) != 0)
	sw = -1;
    return (sw);
}

/*
 * Pauses after short reads (from 1 MB on): the same body, and the
 * reader wakes up far less often than once per 4 KB write.  Timing:
 * up to three tries (a loaded machine may slow the writer to a write
 * per pause, when pausing cannot help).
 */
static void test_read_pause(void)
{
    const size_t hlen = 12;		/* "Subject: p\n\n" */
    size_t  n = 3300000, i, wlen;
    char   *in = xmalloc(n), *want;
    long    on = -1, off = -1;
    int     try;

    T_EQ_INT(msg_read_pauses(-1), 1);		/* on by default */
    memcpy(in, "Subject: p\n\n", hlen);
    for (i = hlen; i < n; i++)
	in[i] = i % 77 == 76 ? '\n' : (char) ('A' + i % 26);
    want = reference_crlf(in + hlen, n - hlen, &wlen);
    for (try = 0; try < 3; try++) {
	off = read_paced(in, n, want, wlen, 0);
	on = read_paced(in, n, want, wlen, 1);
	if (on < 0 || off < 0 || on * 2 < off)
	    break;
    }
    T_CHECK(on >= 0 && off >= 0, "same body with and without pauses "
	    "(%ld, %ld)", on, off);
    T_CHECK(on * 2 < off, "%ld waits with pauses, %ld without", on, off);
    printf("# %ld waits with pauses, %ld without (%d tries)\n", on, off,
	   try < 3 ? try + 1 : 3);
    T_EQ_INT(msg_read_pauses(-1), 1);
    free(want);
    free(in);
}

/* Too large: read to the end (writer not cut off), then 5.3.4. */

static void test_too_large(void)
{
    size_t  n = 1024 * 1024, i;
    char   *in = xmalloc(n);
    struct msg m;
    struct m365_result res;
    int     fd, status;
    pid_t   pid;

    memcpy(in, "Subject: big\n\n", 14);
    for (i = 14; i < n; i++)
	in[i] = i % 64 == 63 ? '\n' : 'x';
    fd = pipe_fd(in, n, &pid);
    T_EQ_INT(msg_read(&m, fd, tmpdir, 100000, &res), -1);
    T_EQ_STR(res.dsn, "5.3.4");
    T_EQ_INT(res.sysexit, EX_DATAERR);
    T_EQ_INT(res.status, M365_PERM);
    /* 16 header bytes + 1048562 body bytes + a CR for each of 16384 LFs */
    T_CONTAINS(res.text, "1064962");
    T_CONTAINS(res.text, "100000");
    T_OK(waitpid(pid, &status, 0) == pid && WIFEXITED(status)
	 && WEXITSTATUS(status) == 0);
    msg_free(&m);
    close(fd);

    /* Exactly at the limit is fine. */
    fd = input_fd("Subject: s\n\nab", 14);
    T_EQ_INT(msg_read(&m, fd, tmpdir, 16, &res), 0);
    T_EQ_INT(m.size, 16);
    msg_free(&m);
    close(fd);
    fd = input_fd("Subject: s\n\nab", 14);
    T_EQ_INT(msg_read(&m, fd, tmpdir, 15, &res), -1);
    T_EQ_STR(res.dsn, "5.3.4");
    msg_free(&m);
    close(fd);
    free(in);
}

static void test_header_limits(void)
{
    size_t  n = STRBUF_MAX_HEADERS + 200000, i;
    char   *in = xmalloc(n);
    struct msg m;
    struct m365_result res;
    int     fd, status;
    pid_t   pid;

    /* Many header lines. */
    for (i = 0; i + 20 <= n - 10; i += 20)
	memcpy(in + i, "X-Filler: 123456789\n", 20);
    memcpy(in + i, "\nbody\n", 6);
    fd = pipe_fd(in, i + 6, &pid);
    T_EQ_INT(msg_read(&m, fd, tmpdir, 0, &res), -1);
    T_EQ_STR(res.dsn, "5.6.0");
    T_EQ_INT(res.sysexit, EX_DATAERR);
    T_CONTAINS(res.text, "header");
    T_OK(waitpid(pid, &status, 0) == pid && WIFEXITED(status)
	 && WEXITSTATUS(status) == 0);
    msg_free(&m);
    close(fd);

    /* One endless header line. */
    memcpy(in, "Subject: ", 9);
    memset(in + 9, 'y', n - 9);
    fd = pipe_fd(in, n, &pid);
    T_EQ_INT(msg_read(&m, fd, tmpdir, 0, &res), -1);
    T_EQ_STR(res.dsn, "5.6.0");
    T_OK(waitpid(pid, &status, 0) == pid && WIFEXITED(status)
	 && WEXITSTATUS(status) == 0);
    msg_free(&m);
    close(fd);

    /* Empty input. */
    fd = input_fd("", 0);
    T_EQ_INT(msg_read(&m, fd, tmpdir, 0, &res), -1);
    T_EQ_STR(res.dsn, "5.6.0");
    msg_free(&m);
    close(fd);
    free(in);
}

static void test_io_errors(void)
{
    struct msg m;
    struct m365_result res;
    int     fd;
    char    bad[300];

    /* Spool directory missing: temporary failure. */
    snprintf(bad, sizeof(bad), "%s/no/such/dir", tmpdir);
    fd = input_fd("Subject: s\n\nbody\n", 17);
    T_EQ_INT(msg_read(&m, fd, bad, 0, &res), -1);
    T_EQ_STR(res.dsn, "4.3.0");
    T_EQ_INT(res.sysexit, EX_TEMPFAIL);
    T_CONTAINS(res.text, "no/such/dir");
    msg_free(&m);
    close(fd);

    /* Unreadable input. */
    T_EQ_INT(msg_read(&m, -1, tmpdir, 0, &res), -1);
    T_EQ_STR(res.dsn, "4.3.0");
    msg_free(&m);

    /* A directory without the body: no spool file is needed. */
    fd = input_fd("Subject: s\n", 11);
    T_EQ_INT(msg_read(&m, fd, bad, 0, &res), 0);
    msg_free(&m);
    close(fd);
}

/* The spool file is private and already unlinked. */

static void test_spool_file(void)
{
    struct msg m;
    struct m365_result res;
    struct stat st;
    int     fd;

    fd = input_fd("Subject: s\n\nbody\n", 17);
    T_EQ_INT(msg_read(&m, fd, tmpdir, 0, &res), 0);
    T_OK(m.body_fd >= 0);
    T_EQ_INT(fstat(m.body_fd, &st), 0);
    T_EQ_INT(st.st_mode & 0777, 0600);
    T_EQ_INT(st.st_nlink, 0);
    T_OK(fcntl(m.body_fd, F_GETFD) & FD_CLOEXEC);
    msg_free(&m);
    close(fd);
}

/* read_stream - drain a msg_src with a cycle of request sizes */

static char *read_stream(struct msg_src *s, const size_t *sizes, size_t nsizes,
			         size_t stop_after, size_t *len)
{
    struct strbuf sb;
    char   *buf = xmalloc(70000);
    size_t  k = 0, got;

    strbuf_init(&sb, 64UL * 1024 * 1024);
    for (;;) {
	size_t  want = sizes[k++ % nsizes];

	/* curl calls with size 1 and nitems = its buffer size. */
	memset(buf, '#', want);
	got = msg_src_read(buf, 1, want, s);
	if (got == CURL_READFUNC_ABORT || got > want)
	    break;
	if (got == 0)
	    break;
	strbuf_append(&sb, buf, got);
	if (stop_after && sb.len >= stop_after)
	    break;
    }
    free(buf);
    *len = sb.len;
    return (strbuf_take(&sb));
}

static void test_stream(void)
{
    static const size_t body_sizes[] = {0, 1, 2, 3, 4, 5, 65535, 65536, 200000};
    static const size_t one[] = {1};
    static const size_t seven[] = {7};
    static const size_t big[] = {16384};
    static const size_t mixed[] = {1, 2, 3, 5, 4, 16384, 7, 65536, 6, 13};
    static const struct {
	const size_t *sizes;
	size_t  n;
    } patterns[] = {
	{one, 1}, {seven, 1}, {big, 1}, {mixed, 10},
    };
    size_t  bi, pi, i, n, rawlen, wantlen, gotlen;
    char   *in, *raw, *want, *got;
    struct msg m;
    struct m365_result res;
    struct msg_src *s;
    int     fd;

    for (bi = 0; bi < sizeof(body_sizes) / sizeof(body_sizes[0]); bi++) {
	size_t  bs = body_sizes[bi];
	unsigned int seed = 12345;

	n = 25 + bs;
	in = xmalloc(n);
	memcpy(in, "Subject: stream test\n\n", 22);
	memcpy(in + 22, "", 0);
	/* Binary body without LF, with CRLF pairs; size stays bs. */
	for (i = 0; i < bs; i++) {
	    seed = seed * 1103515245 + 12345;
	    in[22 + i] = (char) ((seed >> 16) & 0xff);
	    if (in[22 + i] == '\n' || in[22 + i] == '\r')
		in[22 + i] = 'L';
	    if (i % 100 == 98 && i + 1 < bs) {
		in[22 + i] = '\r';
		in[22 + i + 1] = '\n';
		i++;
	    }
	}
	fd = input_fd(in, 22 + bs);
	T_EQ_INT(msg_read(&m, fd, tmpdir, 0, &res), 0);
	T_EQ_INT(m.body_len, bs);

	/* Expected: base64 of header + CRLF + body, encoded in one go. */
	rawlen = m.hdr.len + 2 + bs;
	raw = xmalloc(rawlen + 1);
	memcpy(raw, m.hdr.data, m.hdr.len);
	memcpy(raw + m.hdr.len, "\r\n", 2);
	memcpy(raw + m.hdr.len + 2, in + 22, bs);
	want = xmalloc(base64_encoded_len(rawlen) + 1);
	wantlen = base64_encode(want, (unsigned char *) raw, rawlen);

	s = msg_src_create(&m.hdr, &m);
	T_EQ_INT(msg_src_length(s), wantlen);
	for (pi = 0; pi < sizeof(patterns) / sizeof(patterns[0]); pi++) {
	    if (bs > 70000 && patterns[pi].sizes == one)
		continue;			/* slow, and covered by 7 */
	    T_EQ_INT(msg_src_rewind(s), 0);
	    got = read_stream(s, patterns[pi].sizes, patterns[pi].n, 0, &gotlen);
	    T_CHECK(gotlen == wantlen && memcmp(got, want, wantlen) == 0,
		    "body %lu pattern %lu: got %lu bytes, want %lu",
		    (unsigned long) bs, (unsigned long) pi,
		    (unsigned long) gotlen, (unsigned long) wantlen);
	    free(got);
	    /* Rewind in the middle, then read all again. */
	    got = read_stream(s, patterns[pi].sizes, patterns[pi].n,
			      wantlen / 2 + 1, &gotlen);
	    free(got);
	    T_EQ_INT(msg_src_rewind(s), 0);
	    got = read_stream(s, mixed, 10, 0, &gotlen);
	    T_CHECK(gotlen == wantlen && memcmp(got, want, wantlen) == 0,
		    "body %lu pattern %lu after rewind", (unsigned long) bs,
		    (unsigned long) pi);
	    free(got);
	}
	msg_src_free(s);
	msg_free(&m);
	close(fd);
	free(raw);
	free(want);
	free(in);
    }
}

/* A rewritten header replaces the original one in the stream. */

static void test_stream_rewritten(void)
{
    struct msg m;
    struct m365_result res;
    struct strbuf hdr;
    struct msg_src *s;
    const char *want_raw = "Bcc: a@x\r\nSubject: s\r\n\r\nbody\r\n";
    char    want[100];
    char   *got;
    size_t  wantlen, gotlen;
    static const size_t sizes[] = {3, 1};
    int     fd;

    fd = input_fd("Subject: s\n\nbody\n", 17);
    T_EQ_INT(msg_read(&m, fd, tmpdir, 0, &res), 0);
    strbuf_init(&hdr, STRBUF_MAX_HEADERS);
    strbuf_puts(&hdr, "Bcc: a@x\r\nSubject: s\r\n");
    s = msg_src_create(&hdr, &m);
    wantlen = base64_encode(want, (const unsigned char *) want_raw,
			    strlen(want_raw));
    T_EQ_INT(msg_src_length(s), wantlen);
    got = read_stream(s, sizes, 2, 0, &gotlen);
    T_OK(gotlen == wantlen && memcmp(got, want, wantlen) == 0);
    free(got);
    msg_src_free(s);

    /* A header without a final line end still gets an empty line. */
    strbuf_reset(&hdr);
    strbuf_puts(&hdr, "Subject: s");
    s = msg_src_create(&hdr, &m);
    wantlen = base64_encode(want, (const unsigned char *)
			    "Subject: s\r\n\r\nbody\r\n", 20);
    T_EQ_INT(msg_src_length(s), wantlen);
    got = read_stream(s, sizes, 2, 0, &gotlen);
    T_OK(gotlen == wantlen && memcmp(got, want, wantlen) == 0);
    free(got);
    msg_src_free(s);
    strbuf_free(&hdr);
    msg_free(&m);
    close(fd);
}

/* A spool file that is shorter than body_len aborts the transfer. */

static void test_stream_error(void)
{
    struct msg m;
    struct msg_src *s;
    char    buf[64];
    size_t  got, total = 0;
    int     i;

    memset(&m, 0, sizeof(m));
    strbuf_init(&m.hdr, 100);
    strbuf_puts(&m.hdr, "Subject: s\r\n");
    m.body_fd = input_fd("0123456789", 10);
    m.body_len = 1000;
    s = msg_src_create(&m.hdr, &m);
    T_EQ_STR(msg_src_error(s), "");
    for (i = 0; i < 100; i++) {
	got = msg_src_read(buf, 1, sizeof(buf), s);
	if (got == 0 || got == CURL_READFUNC_ABORT)
	    break;
	total += got;
    }
    T_EQ_INT(got, CURL_READFUNC_ABORT);
    T_OK(total < (size_t) msg_src_length(s));
    T_CONTAINS(msg_src_error(s), "shorter");
    msg_src_free(s);
    msg_free(&m);
}

 /*
  * Incremental construction (the milter).
  */

/* incr_build - headers (name/value pairs), then body in chunks of csize */

static int incr_build(struct msg *m, size_t mem_limit, off_t max_size,
		              const char *const *hdrs, const char *body,
		              size_t blen, size_t csize, struct m365_result *res)
{
    size_t  off, k;

    msg_init(m, tmpdir, mem_limit, max_size);
    for (; hdrs && hdrs[0]; hdrs += 2)
	if (msg_add_header(m, hdrs[0], hdrs[1], res) < 0)
	    return (-1);
    for (off = 0; off < blen; off += k) {
	k = blen - off < csize ? blen - off : csize;
	if (msg_add_body(m, body + off, k, res) < 0)
	    return (-1);
    }
    return (msg_finish(m, res));
}

/* stream_all - the whole base64 stream of a message */

static char *stream_all(const struct msg *m, size_t *len)
{
    static const size_t sizes[] = {7, 16384, 1, 65536, 5};
    struct msg_src *s = msg_src_create(&m->hdr, m);
    char   *out;

    T_EQ_INT(msg_src_length(s), base64_encoded_len((size_t) m->size));
    out = read_stream(s, sizes, 5, 0, len);
    T_EQ_INT(*len, msg_src_length(s));
    msg_src_free(s);
    return (out);
}

/* mem_body - the in-memory body as a string ("" when none) */

static const char *mem_body(const struct msg *m)
{
    return (m->body_mem.data ? m->body_mem.data : "");
}

static void test_incr_memory(void)
{
    static const char *const hdrs[] = {
	"From", "a@x", "To", "b@y", "Subject", "hi", 0,
    };
    struct msg m;
    struct m365_result res;

    T_EQ_INT(incr_build(&m, 1024, 0, hdrs, "line1\r\nline2\r\n", 14, 5,
			&res), 0);
    T_EQ_STR(strbuf_str(&m.hdr), "From: a@x\r\nTo: b@y\r\nSubject: hi\r\n");
    T_EQ_INT(m.body_fd, -1);
    T_EQ_STR(mem_body(&m), "line1\r\nline2\r\n");
    T_EQ_INT(m.body_len, 14);
    T_EQ_INT(m.size, (off_t) m.hdr.len + 2 + 14);
    T_OK(m.wbuf == NULL);
    msg_free(&m);
    T_EQ_INT(m.body_fd, -1);
    T_OK(m.hdr.data == NULL && m.body_mem.data == NULL);

    /* Bare LF made CRLF, also when CR and LF come in separate chunks. */
    T_EQ_INT(incr_build(&m, 1024, 0, hdrs, "a\nb\r\nc\rd\r", 9, 1, &res), 0);
    T_EQ_STR(mem_body(&m), "a\r\nb\r\nc\rd\r");
    T_EQ_INT(m.body_len, 10);
    msg_free(&m);
    msg_init(&m, tmpdir, 1024, 0);
    T_EQ_INT(msg_add_body(&m, "x\r", 2, &res), 0);
    T_EQ_INT(msg_add_body(&m, "\ny\n", 3, &res), 0);
    T_EQ_INT(msg_finish(&m, &res), 0);
    T_EQ_STR(mem_body(&m), "x\r\ny\r\n");
    T_EQ_INT(m.size, 2 + 6);
    msg_free(&m);

    /* Exactly mem_limit bytes stay in memory; one more spools. */
    T_EQ_INT(incr_build(&m, 10, 0, hdrs, "0123456789", 10, 3, &res), 0);
    T_EQ_INT(m.body_fd, -1);
    T_EQ_INT(m.body_mem.len, 10);
    T_OK(m.body_mem.cap <= 11);
    msg_free(&m);
    T_EQ_INT(incr_build(&m, 10, 0, hdrs, "0123456789A", 11, 3, &res), 0);
    T_OK(m.body_fd >= 0);
    T_EQ_INT(m.body_mem.len, 0);
    T_EQ_INT(m.body_len, 11);
    msg_free(&m);

    /* Header only: no body call at all, no empty line streamed. */
    T_EQ_INT(incr_build(&m, 1024, 0, hdrs, "", 0, 1, &res), 0);
    T_EQ_INT(m.body_fd, -1);
    T_EQ_INT(m.body_len, 0);
    T_EQ_INT(m.hdr_only, 1);
    T_EQ_INT(m.size, (off_t) m.hdr.len);
    msg_free(&m);
    /* An empty body call: the MTA had a body (empty), the line stays. */
    msg_init(&m, tmpdir, 1024, 0);
    T_EQ_INT(msg_add_header(&m, "Subject", "s", &res), 0);
    T_EQ_INT(msg_add_body(&m, "", 0, &res), 0);
    T_EQ_INT(msg_finish(&m, &res), 0);
    T_EQ_INT(m.hdr_only, 0);
    T_EQ_INT(m.size, (off_t) m.hdr.len + 2);
    msg_free(&m);
}

static void test_incr_spool(void)
{
    static const char *const hdrs[] = {"Subject", "big", 0};
    size_t  n = 3 * 1024 * 1024 + 17, i;
    char   *body = xmalloc(n);
    char   *got;
    struct msg m;
    struct m365_result res;
    struct stat st;

    for (i = 0; i < n; i++)
	body[i] = i % 80 == 78 ? '\r' : i % 80 == 79 ? '\n' : (char) ('A' + i % 26);
    T_EQ_INT(incr_build(&m, 100000, 0, hdrs, body, n, 65535, &res), 0);
    T_OK(m.body_fd >= 0);
    T_EQ_INT(m.body_mem.len, 0);
    T_OK(m.body_mem.data == NULL);
    T_EQ_INT(m.body_len, n);
    T_EQ_INT(m.size, (off_t) m.hdr.len + 2 + (off_t) n);
    T_EQ_INT(fstat(m.body_fd, &st), 0);
    T_EQ_INT(st.st_size, n);
    T_EQ_INT(st.st_mode & 0777, 0600);
    T_EQ_INT(st.st_nlink, 0);
    T_OK(fcntl(m.body_fd, F_GETFD) & FD_CLOEXEC);
    got = body_of(&m);
    T_OK(memcmp(got, body, n) == 0);
    free(got);
    msg_free(&m);
    free(body);
}

/*
 * The milter path and the pipe path give the same base64 stream, in
 * memory or spooled, whatever the chunking.
 */

static void test_incr_stream_equal(void)
{
    static const size_t body_sizes[] = {0, 1, 2, 3, 100, 65535, 65536, 300001};
    static const size_t limits[] = {0, 64, 1024 * 1024};
    static const size_t chunks[] = {1, 4093, 65535};
    static const char *const hdrs[] = {
	"From", "Alice <a@example.com>",
	"Subject", "a folded\n\tsubject line",
	"To", "b@example.com,\r\n c@example.com",
	0,
    };
    const char *text_hdr = "From: Alice <a@example.com>\n"
	"Subject: a folded\n\tsubject line\n"
	"To: b@example.com,\n c@example.com\n\n";
    size_t  hl = strlen(text_hdr), bi, li, ci, i, wantlen, gotlen;
    struct msg ref, m;
    struct m365_result res;
    char   *text, *body, *want, *got;
    int     fd;

    for (bi = 0; bi < sizeof(body_sizes) / sizeof(body_sizes[0]); bi++) {
	size_t  bs = body_sizes[bi];

	/* A CRLF body; the reference reads the LF version of it. */
	body = xmalloc(bs + 1);
	text = xmalloc(hl + bs + 1);
	memcpy(text, text_hdr, hl);
	for (i = 0; i < bs; i++)
	    body[i] = i % 61 == 59 ? '\r' : i % 61 == 60 ? '\n'
		: (char) ('a' + i % 23);
	memcpy(text + hl, body, bs);
	/* No body: the milter saw no empty line either. */
	fd = input_fd(text, bs == 0 ? hl - 1 : hl + bs);
	T_OK(fd >= 0);
	T_EQ_INT(msg_read(&ref, fd, tmpdir, 0, &res), 0);
	T_EQ_INT(ref.hdr_only, bs == 0);
	close(fd);
	want = stream_all(&ref, &wantlen);
	for (li = 0; li < sizeof(limits) / sizeof(limits[0]); li++) {
	    for (ci = 0; ci < sizeof(chunks) / sizeof(chunks[0]); ci++) {
		if (chunks[ci] == 1 && bs > 70000)
		    continue;			/* slow; 4093 covers it */
		T_EQ_INT(incr_build(&m, limits[li], 0, hdrs, body, bs,
				    chunks[ci], &res), 0);
		T_EQ_STR(strbuf_str(&m.hdr), strbuf_str(&ref.hdr));
		T_EQ_INT(m.size, ref.size);
		T_EQ_INT(m.body_len, ref.body_len);
		T_OK(bs == 0 || (m.body_fd >= 0) == (bs > limits[li]));
		got = stream_all(&m, &gotlen);
		T_CHECK(gotlen == wantlen && memcmp(got, want, wantlen) == 0,
			"body %lu limit %lu chunk %lu: streams differ",
			(unsigned long) bs, (unsigned long) limits[li],
			(unsigned long) chunks[ci]);
		free(got);
		msg_free(&m);
	    }
	}
	free(want);
	msg_free(&ref);
	free(text);
	free(body);
    }
}

/*
 * test_stream_api - msg_stream_put() in chunks of any size builds the
 * message msg_read() builds from the same bytes (a "From " line, folded
 * and LF/CRLF header lines, a CRLF split between chunks, no empty line,
 * body only, empty input), in memory (mem_limit) or spooled
 */
static void test_stream_api(void)
{
    static const char *const inputs[] = {
	"From a@b Mon Jan  1 00:00:00 2026\nSubject: x\n\nbody\n",
	"Subject: a folded\r\n\tline\r\nTo: b@c\n\r\nbody\r\nmore\n",
	"Subject: header only, no empty line",
	"not a header line\nso all body\r\n",
	".\r\n..\r\nX\r\n",
	"",
    };
    static const size_t chunks[] = {1, 2, 3, 4096};
    static const size_t limits[] = {0, 1 << 20};
    struct msg ref, m;
    struct m365_result rref, res;
    struct msg_stream *ms;
    size_t  i, ci, li, off, n, wantlen, gotlen;
    char   *want, *got;
    int     fd, rc_ref, rc;

    for (i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
	size_t  len = strlen(inputs[i]);

	fd = input_fd(inputs[i], len);
	T_OK(fd >= 0);
	rc_ref = msg_read(&ref, fd, tmpdir, 0, &rref);
	close(fd);
	want = rc_ref == 0 ? stream_all(&ref, &wantlen) : NULL;
	for (ci = 0; ci < sizeof(chunks) / sizeof(chunks[0]); ci++) {
	    for (li = 0; li < sizeof(limits) / sizeof(limits[0]); li++) {
		ms = msg_stream_create(&m, tmpdir, limits[li], 0);
		for (off = 0; off < len; off += n) {
		    n = len - off < chunks[ci] ? len - off : chunks[ci];
		    msg_stream_put(ms, inputs[i] + off, n);
		}
		rc = msg_stream_finish(ms, &res);
		T_EQ_INT(rc, rc_ref);
		T_EQ_STR(res.dsn, rref.dsn);
		if (rc == 0 && rc_ref == 0) {
		    T_EQ_STR(strbuf_str(&m.hdr), strbuf_str(&ref.hdr));
		    T_EQ_INT(m.size, ref.size);
		    T_EQ_INT(m.hdr_only, ref.hdr_only);
		    T_OK(m.body_len == 0
			 || (m.body_fd >= 0) == (limits[li] == 0));
		    got = stream_all(&m, &gotlen);
		    T_CHECK(gotlen == wantlen && memcmp(got, want, wantlen) == 0,
			    "input %lu chunk %lu limit %lu: streams differ",
			    (unsigned long) i, (unsigned long) chunks[ci],
			    (unsigned long) limits[li]);
		    free(got);
		}
		msg_free(&m);
	    }
	}
	free(want);
	msg_free(&ref);
    }
}

struct hdr_case {
    const char *name;
    const char *value;
    const char *want;
};

static const struct hdr_case hdr_cases[] = {
    {"Subject", "plain", "Subject: plain\r\n"},
    {"Subject", "a\n\tb", "Subject: a\r\n\tb\r\n"},
    {"Subject", "a\r\n\tb\r\n c", "Subject: a\r\n\tb\r\n c\r\n"},
    {"X-Empty", "", "X-Empty:\r\n"},
    {"X-Trail", "v\r\n", "X-Trail: v\r\n"},
    {"X-Trail2", "v\n\n", "X-Trail2: v\r\n"},
    /* A break without folding white space cannot start a new field... */
    {"X-Inject", "a\nBcc: evil@x", "X-Inject: a\r\n Bcc: evil@x\r\n"},
    /* ...nor end the header section. */
    {"X-Blank", "a\r\n\r\nbody", "X-Blank: a\r\n body\r\n"},
    {"X-Blank2", "a\n\n\tb", "X-Blank2: a\r\n\tb\r\n"},
    /* A lone CR is a space: Exchange could end the line there. */
    {"X-CR", "a\rb", "X-CR: a b\r\n"},
    {"Subject", "hello\rBcc: evil@x", "Subject: hello Bcc: evil@x\r\n"},
    {"X-CR2", "a\r\r\n b\r", "X-CR2: a\r\n b \r\n"},
    {"X-CR3", "\r\r", "X-CR3:   \r\n"},
    /* White space before the colon (obsolete syntax) is dropped. */
    {"To \t", "x@y", "To: x@y\r\n"},
    {"X-Space", "  lead kept", "X-Space:   lead kept\r\n"},
};

static void test_incr_headers(void)
{
    struct msg m;
    struct m365_result res;
    size_t  i;

    for (i = 0; i < sizeof(hdr_cases) / sizeof(hdr_cases[0]); i++) {
	msg_init(&m, tmpdir, 1024, 0);
	T_EQ_INT(msg_add_header(&m, hdr_cases[i].name, hdr_cases[i].value,
				&res), 0);
	T_EQ_INT(msg_finish(&m, &res), 0);
	T_CHECK(strcmp(strbuf_str(&m.hdr), hdr_cases[i].want) == 0,
		"%s: got \"%s\"", hdr_cases[i].name, strbuf_str(&m.hdr));
	T_EQ_INT(m.size, (off_t) strlen(hdr_cases[i].want));
	msg_free(&m);
    }
    /* NULL value is an empty one. */
    msg_init(&m, tmpdir, 1024, 0);
    T_EQ_INT(msg_add_header(&m, "X-Null", NULL, &res), 0);
    T_EQ_STR(strbuf_str(&m.hdr), "X-Null:\r\n");
    msg_free(&m);

    /* Malformed names: 5.6.0, and it sticks. */
    {
	static const char *const bad[] = {"", " Lead", "A:B", "A\nB", "A\rB"};

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
	    msg_init(&m, tmpdir, 1024, 0);
	    T_EQ_INT(msg_add_header(&m, bad[i], "v", &res), -1);
	    T_EQ_STR(res.dsn, "5.6.0");
	    T_EQ_INT(res.status, M365_PERM);
	    T_CONTAINS(res.text, "malformed header field name");
	    T_EQ_INT(msg_add_header(&m, "Subject", "ok", &res), -1);
	    T_EQ_STR(res.dsn, "5.6.0");
	    T_EQ_INT(msg_add_body(&m, "x", 1, &res), -1);
	    T_EQ_INT(msg_finish(&m, &res), -1);
	    T_EQ_STR(res.dsn, "5.6.0");
	    T_EQ_INT(m.hdr.len, 0);
	    msg_free(&m);
	}
	msg_init(&m, tmpdir, 1024, 0);
	T_EQ_INT(msg_add_header(&m, NULL, "v", &res), -1);
	T_EQ_STR(res.dsn, "5.6.0");
	msg_free(&m);
    }

    /* The header section limit. */
    {
	char    value[1001];
	int     n, rc = 0;

	memset(value, 'v', 1000);
	value[1000] = 0;
	msg_init(&m, tmpdir, 1024, 0);
	for (n = 0; n < 2000 && (rc = msg_add_header(&m, "X-Filler", value,
						     &res)) == 0; n++)
	     /* void */ ;
	T_EQ_INT(rc, -1);
	T_EQ_STR(res.dsn, "5.6.0");
	T_CONTAINS(res.text, "header section is larger than");
	T_OK(n > 1000 && n < 1100);
	T_OK(m.hdr.len <= STRBUF_MAX_HEADERS);
	T_EQ_INT(msg_finish(&m, &res), -1);
	T_EQ_STR(res.dsn, "5.6.0");
	msg_free(&m);

	/* One value longer than the whole limit. */
	{
	    size_t  big = STRBUF_MAX_HEADERS + 10;
	    char   *v = xmalloc(big + 1);

	    memset(v, 'w', big);
	    v[big] = 0;
	    msg_init(&m, tmpdir, 1024, 0);
	    T_EQ_INT(msg_add_header(&m, "X-Huge", v, &res), -1);
	    T_EQ_STR(res.dsn, "5.6.0");
	    T_EQ_INT(m.hdr.len, 0);
	    msg_free(&m);
	    free(v);
	}
    }
}

static void test_incr_too_big(void)
{
    static const char *const hdrs[] = {"Subject", "s", 0};	/* 12 bytes */
    size_t  n = 1024 * 1024, i;
    char   *body = xmalloc(n);
    struct msg m;
    struct m365_result res;
    int     rc, fails = 0;

    for (i = 0; i < n; i++)
	body[i] = i % 64 == 63 ? '\n' : 'x';
    /* Over the limit: every call fails with 5.3.4, counting goes on. */
    msg_init(&m, tmpdir, 4096, 100000);
    T_EQ_INT(msg_add_header(&m, "Subject", "s", &res), 0);
    for (i = 0; i < n; i += 4096) {
	rc = msg_add_body(&m, body + i, 4096, &res);
	if (rc < 0) {
	    fails++;
	    T_EQ_STR(res.dsn, "5.3.4");
	    T_EQ_INT(res.sysexit, EX_DATAERR);
	    T_CONTAINS(res.text, "max_message_size 100000");
	}
	/* Nothing is kept past the limit. */
	T_OK(rc == 0 || (m.body_len == 0 && m.body_mem.data == NULL));
    }
    T_OK(fails > 200);
    T_EQ_INT(msg_finish(&m, &res), -1);
    T_EQ_STR(res.dsn, "5.3.4");
    T_EQ_INT(res.status, M365_PERM);
    /* 12 header + 2 + 1048576 body + a CR for each of 16384 LFs */
    T_CONTAINS(res.text, "message size 1064974 bytes exceeds max_message_size "
	       "100000 (the largest of any account");
    T_EQ_INT(m.size, 1064974);
    T_EQ_INT(m.body_len, 0);
    msg_free(&m);

    /* Spooled, then too big: the spool file is emptied. */
    msg_init(&m, tmpdir, 10, 300000);
    T_EQ_INT(msg_add_body(&m, body, 140000, &res), 0);
    T_OK(m.body_fd >= 0);
    {
	struct stat st;

	T_OK(fstat(m.body_fd, &st) == 0 && st.st_size > 70000);
	T_EQ_INT(msg_add_body(&m, body, 200000, &res), -1);
	T_EQ_STR(res.dsn, "5.3.4");
	T_OK(fstat(m.body_fd, &st) == 0 && st.st_size == 0);
    }
    T_EQ_INT(msg_finish(&m, &res), -1);
    msg_free(&m);

    /* Exactly at the limit is fine, one byte more is not. */
    T_EQ_INT(incr_build(&m, 4096, 16, hdrs, "ab", 2, 1, &res), 0);
    T_EQ_INT(m.size, 16);
    msg_free(&m);
    T_EQ_INT(incr_build(&m, 4096, 15, hdrs, "ab", 2, 1, &res), -1);
    T_EQ_STR(res.dsn, "5.3.4");
    msg_free(&m);
    /* Header only: no empty line is sent, none is counted (8.7). */
    T_EQ_INT(incr_build(&m, 4096, 11, hdrs, "", 0, 1, &res), -1);
    T_EQ_STR(res.dsn, "5.3.4");
    msg_free(&m);
    T_EQ_INT(incr_build(&m, 4096, 12, hdrs, "", 0, 1, &res), 0);
    T_EQ_INT(m.size, 12);
    msg_free(&m);
    /* A call past the limit is never followed by a success. */
    msg_init(&m, tmpdir, 4096, 12);		/* "Subject: s1" CRLF: 13 */
    T_EQ_INT(msg_add_header(&m, "Subject", "s1", &res), -1);
    T_EQ_STR(res.dsn, "5.3.4");
    T_EQ_INT(msg_finish(&m, &res), -1);
    msg_free(&m);
    free(body);
}

/* Memory does not grow with the message size. */

static void test_incr_memory_bound(void)
{
    static const size_t limits[] = {1, 1000, 4096, 100000, 1024 * 1024};
    size_t  n = 8 * 1024 * 1024, chunk = 65535, off, k, li;
    char   *body = xmalloc(chunk);
    struct msg m;
    struct m365_result res;
    int     ok;

    memset(body, 'z', chunk);
    for (li = 0; li < sizeof(limits) / sizeof(limits[0]); li++) {
	ok = 1;
	msg_init(&m, tmpdir, limits[li], 0);
	T_EQ_INT(msg_add_header(&m, "Subject", "s", &res), 0);
	for (off = 0; off < n; off += k) {
	    k = n - off < chunk ? n - off : chunk;
	    if (msg_add_body(&m, body, k, &res) < 0)
		ok = 0;
	    if (m.body_mem.cap > limits[li] + 1)
		ok = 0;
	    if (m.body_fd >= 0 && m.body_mem.cap != 0)
		ok = 0;
	}
	T_CHECK(ok, "limit %lu: body_mem grew past the limit",
		(unsigned long) limits[li]);
	T_EQ_INT(msg_finish(&m, &res), 0);
	T_EQ_INT(m.body_len, n);
	T_OK(m.body_fd >= 0);
	msg_free(&m);
    }
    free(body);
}

static void test_incr_errors(void)
{
    struct msg m;
    struct m365_result res;
    char    bad[300];

    /* Spool directory missing: 4.3.0 at the first spill, and it sticks. */
    snprintf(bad, sizeof(bad), "%s/no/such/dir", tmpdir);
    msg_init(&m, bad, 8, 0);
    T_EQ_INT(msg_add_header(&m, "Subject", "s", &res), 0);
    T_EQ_INT(msg_add_body(&m, "12345678", 8, &res), 0);
    T_EQ_INT(msg_add_body(&m, "9", 1, &res), -1);
    T_EQ_STR(res.dsn, "4.3.0");
    T_EQ_INT(res.sysexit, EX_TEMPFAIL);
    T_EQ_INT(res.status, M365_SYSTEM);
    T_CONTAINS(res.text, "no/such/dir");
    T_EQ_INT(msg_add_body(&m, "x", 1, &res), -1);
    T_EQ_STR(res.dsn, "4.3.0");
    T_EQ_INT(msg_finish(&m, &res), -1);
    T_CONTAINS(res.text, "no/such/dir");
    msg_free(&m);

    /* The same directory is fine when the body fits in memory. */
    msg_init(&m, bad, 8, 0);
    T_EQ_INT(msg_add_body(&m, "12345678", 8, &res), 0);
    T_EQ_INT(msg_finish(&m, &res), 0);
    msg_free(&m);

    /* tmpdir is copied: the caller's string may go away. */
    {
	char   *dir = xstrdup(tmpdir);

	msg_init(&m, dir, 0, 0);
	memset(dir, 'X', strlen(dir));
	free(dir);
	T_EQ_INT(msg_add_body(&m, "abc", 3, &res), 0);
	T_EQ_INT(msg_finish(&m, &res), 0);
	T_OK(m.body_fd >= 0);
	msg_free(&m);
    }

    /* Calls out of order. */
    msg_init(&m, tmpdir, 8, 0);
    T_EQ_INT(msg_add_body(&m, "b", 1, &res), 0);
    T_EQ_INT(msg_add_header(&m, "Subject", "late", &res), -1);
    T_EQ_STR(res.dsn, "4.3.0");
    /* A 4.x.x must come with EX_TEMPFAIL: EX_SOFTWARE bounces (style.md 6). */
    T_EQ_INT(res.sysexit, EX_TEMPFAIL);
    T_CONTAINS(res.text, "out of order");
    T_EQ_INT(msg_finish(&m, &res), 0);		/* not poisoned */
    T_EQ_INT(msg_finish(&m, &res), -1);
    T_EQ_INT(msg_add_body(&m, "b", 1, &res), -1);
    msg_free(&m);
    T_EQ_INT(msg_add_header(&m, "Subject", "after free", &res), -1);
    msg_free(&m);				/* twice is fine */

    /* Reuse after msg_free(), as the milter does per message. */
    msg_init(&m, tmpdir, 8, 0);
    T_EQ_INT(msg_add_header(&m, "Subject", "two", &res), 0);
    T_EQ_INT(msg_finish(&m, &res), 0);
    T_EQ_STR(strbuf_str(&m.hdr), "Subject: two\r\n");
    msg_free(&m);
}

/* test_incr_names - header names must be RFC 5322 ftext (fuzzer finding) */

static void test_incr_names(void)
{
    static const char *const bad[] = {"a b", "\xe9", "X:Y", " X", ""};
    static const char *const good[] = {"Subject", "X-Odd_Name!", "Subject \t"};
    struct m365_result res;
    struct msg m;
    size_t  i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
	msg_init(&m, "/tmp", 1024, 0);
	result_init(&res);
	T_EQ_INT(msg_add_header(&m, bad[i], "x", &res), -1);
	T_EQ_STR(res.dsn, "5.6.0");
	msg_free(&m);
    }
    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
	msg_init(&m, "/tmp", 1024, 0);
	result_init(&res);
	T_EQ_INT(msg_add_header(&m, good[i], "x", &res), 0);
	msg_free(&m);
    }
}

/*
 * A field name longer than the header section limit (issue 8.6): the
 * field is refused whole, never stored without its name (": value").
 */
static void test_incr_name_past_cap(void)
{
    size_t  n = STRBUF_MAX_HEADERS + 10;
    char   *name = xmalloc(n + 1);
    struct m365_result res;
    struct msg m;

    memset(name, 'X', n);
    name[n] = 0;
    msg_init(&m, "/tmp", 1024, 0);
    result_init(&res);
    T_EQ_INT(msg_add_header(&m, "Subject", "kept", &res), 0);
    T_EQ_INT(msg_add_header(&m, name, "value", &res), -1);
    T_EQ_STR(res.dsn, "5.6.0");
    T_CONTAINS(res.text, "header section is larger");
    T_EQ_STR(strbuf_str(&m.hdr), "Subject: kept\r\n");
    msg_free(&m);
    free(name);
}

struct hdr_name_case {
    const char *line;
    size_t  name_len;			/* 0: starts no field */
    size_t  colon;
};

static const struct hdr_name_case hdr_name_cases[] = {
    {"To: a@x", 2, 2},
    {"To : a@x", 2, 3},			/* obsolete syntax */
    {"To\t \t: a@x", 2, 5},
    {"X-Odd_Name!:", 11, 11},
    {"To", 0, 0},				/* no colon */
    {"To ", 0, 0},
    {": a@x", 0, 0},			/* no name */
    {" To: a@x", 0, 0},			/* continuation */
    {"T o: a@x", 0, 0},			/* space inside the name */
    {"To\r: a@x", 0, 0},			/* CR is not white space here */
    {"T\xe9: a@x", 0, 0},			/* 8-bit: not ftext */
    {"From a@x Sat Nov 28", 0, 0},		/* mbox line */
};

/* test_hdr_name - the field name rule msg_read() and rcpt.c share */

static void test_hdr_name(void)
{
    const struct hdr_name_case *c;
    size_t  i, colon;

    for (i = 0; i < sizeof(hdr_name_cases) / sizeof(hdr_name_cases[0]); i++) {
	c = hdr_name_cases + i;
	colon = 999;
	T_CHECK(msg_hdr_name(c->line, strlen(c->line), &colon) == c->name_len,
		"msg_hdr_name(\"%s\") should be %lu", c->line,
		(unsigned long) c->name_len);
	if (c->name_len)
	    T_EQ_INT(colon, c->colon);
	else
	    T_EQ_INT(colon, 999);		/* untouched */
    }
    /* The line may end at n: "To" of "To: x" is no field. */
    T_EQ_INT(msg_hdr_name("To: x", 2, NULL), 0);
    T_EQ_INT(msg_hdr_name("To: x", 3, NULL), 2);
}

/* test_hdr_next - fields with continuation lines, either line end */

static void test_hdr_next(void)
{
    static const char hdr[] = " odd first\r\n\tcontinued\r\n"
    "To : a@x,\r\n b@y\r\n" "Subject: s\n" "no colon here\r\n" "Cc: c@z";
    struct msg_field f;
    size_t  pos = 0, len = sizeof(hdr) - 1;

    /* The first line starts a field even when indented (no name). */
    T_EQ_INT(msg_hdr_next(hdr, len, &pos, &f), 0);
    T_EQ_INT(f.start, 0);
    T_EQ_INT(f.name_len, 0);
    T_EQ_INT(f.colon, f.vend);
    T_EQ_INT(f.vend, strlen(" odd first\r\n\tcontinued"));
    T_EQ_INT(f.end, pos);
    T_EQ_INT(msg_hdr_next(hdr, len, &pos, &f), 0);
    T_EQ_INT(f.name_len, 2);
    T_EQ_INT(hdr[f.colon], ':');
    T_EQ_INT(f.vend - f.start, strlen("To : a@x,\r\n b@y"));
    T_EQ_INT(f.end - f.start, strlen("To : a@x,\r\n b@y\r\n"));
    T_EQ_INT(msg_hdr_next(hdr, len, &pos, &f), 0);
    T_EQ_INT(f.name_len, 7);
    T_EQ_INT(f.vend - f.start, strlen("Subject: s"));	/* LF only */
    T_EQ_INT(msg_hdr_next(hdr, len, &pos, &f), 0);
    T_EQ_INT(f.name_len, 0);
    T_EQ_INT(msg_hdr_next(hdr, len, &pos, &f), 0);
    T_EQ_INT(f.name_len, 2);
    T_EQ_INT(f.end, len);			/* no final line end */
    T_EQ_INT(f.vend, len);
    T_EQ_INT(msg_hdr_next(hdr, len, &pos, &f), -1);
    pos = 0;
    T_EQ_INT(msg_hdr_next(NULL, 0, &pos, &f), -1);
}

/* test_hdr_find - the unfolded value of each NAME field, in order */

static void test_hdr_find(void)
{
    static const char hdr[] = "Return-Path : <a@x>\r\n"
    "X-Trace: one;\r\n two\r\n" "x-trace:three \t\r\n"
    "X-Traced: not this\r\n" " X-Trace: a continuation, not a field\r\n"
    "X-Trace:\r\n" "Message-ID:\n <folded@x>\n";
    size_t  pos = 0, len = sizeof(hdr) - 1;
    char   *v;

    v = msg_hdr_find(hdr, len, "Return-Path", &pos);
    T_EQ_STR(v, " <a@x>");			/* "Name :" is that field */
    free(v);
    pos = 0;
    v = msg_hdr_find(hdr, len, "X-Trace", &pos);
    T_EQ_STR(v, " one; two");			/* line end removed */
    free(v);
    v = msg_hdr_find(hdr, len, "X-TRACE", &pos);
    T_EQ_STR(v, "three");			/* trailing white space */
    free(v);
    v = msg_hdr_find(hdr, len, "X-Trace", &pos);
    T_EQ_STR(v, "");				/* empty, not missing */
    free(v);
    T_OK(msg_hdr_find(hdr, len, "X-Trace", &pos) == NULL);
    T_EQ_INT(pos, len);
    pos = 0;
    v = msg_hdr_find(hdr, len, "Message-ID", &pos);
    T_EQ_STR(v, " <folded@x>");			/* LF line ends */
    free(v);
    pos = 0;
    T_OK(msg_hdr_find(hdr, len, "X-Trac", &pos) == NULL);
    pos = 0;
    T_OK(msg_hdr_find(NULL, 0, "To", &pos) == NULL);
}

int     main(void)
{
    char    cmd[300];

    t_tmpdir(tmpdir, sizeof(tmpdir), "test_msg");
    T_RUN(test_read_table);
    T_RUN(test_read_big);
    T_RUN(test_lf_simd);
    T_RUN(test_read_several_mb);
    T_RUN(test_read_pause);
    T_RUN(test_too_large);
    T_RUN(test_header_limits);
    T_RUN(test_io_errors);
    T_RUN(test_spool_file);
    T_RUN(test_stream);
    T_RUN(test_stream_rewritten);
    T_RUN(test_stream_error);
    T_RUN(test_incr_memory);
    T_RUN(test_incr_spool);
    T_RUN(test_incr_stream_equal);
    T_RUN(test_incr_headers);
    T_RUN(test_incr_too_big);
    T_RUN(test_incr_memory_bound);
    T_RUN(test_incr_errors);
    T_RUN(test_stream_api);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
	printf("# could not remove %s\n", tmpdir);
    T_RUN(test_incr_names);
    T_RUN(test_incr_name_past_cap);
    T_RUN(test_hdr_name);
    T_RUN(test_hdr_next);
    T_RUN(test_hdr_find);
    return (T_DONE());
}
