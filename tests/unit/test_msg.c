/* test_msg - message reading, body spooling, base64 streaming */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>

#include "msg.h"
#include "strbuf.h"
#include "util.h"
#include "t.h"

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

/* pipe_fd - a pipe fed by a child; *pid to reap (exit 0: all written) */

static int pipe_fd(const char *data, size_t len, pid_t *pid)
{
    int     p[2];
    size_t  off = 0;
    ssize_t w;

    if (pipe(p) < 0)
	return (-1);
    if ((*pid = fork()) == 0) {
	close(p[0]);
	signal(SIGPIPE, SIG_IGN);
	while (off < len) {
	    /* Odd write sizes so reads see odd chunk boundaries. */
	    size_t  n = len - off < 4093 ? len - off : 4093;

	    if ((w = write(p[1], data + off, n)) < 0)
		_exit(1);
	    off += (size_t) w;
	}
	_exit(0);
    }
    close(p[1]);
    return (p[0]);
}

/* body_of - the spooled body as a string */

static char *body_of(const struct msg *m)
{
    char   *b = xmalloc((size_t) m->body_len + 1);

    if (m->body_len > 0
	&& pread(m->body_fd, b, (size_t) m->body_len, 0) != (ssize_t) m->body_len)
	b[0] = 0;
    else
	b[m->body_len] = 0;
    return (b);
}

static const struct {
    const char *name;
    const char *in;
    const char *hdr;
    const char *body;
} read_cases[] = {
    {"LF to CRLF", "From: a@x\nTo: b@y\n\nline1\nline2\n",
    "From: a@x\r\nTo: b@y\r\n", "line1\r\nline2\r\n"},
    {"CRLF kept, mixed fixed, bare CR kept",
	"Subject: s\r\n\r\na\r\nb\nc\rd\n\n",
    "Subject: s\r\n", "a\r\nb\r\nc\rd\r\n\r\n"},
    {"mbox From line dropped",
	"From sender@x Mon Jan  1 00:00:00 2024\nSubject: s\n\nbody\n",
    "Subject: s\r\n", "body\r\n"},
    {"no body", "Subject: s\nTo: x@y\n", "Subject: s\r\nTo: x@y\r\n", ""},
    {"no final line end", "Subject: s", "Subject: s\r\n", ""},
    {"empty body after separator", "Subject: s\n\n", "Subject: s\r\n", ""},
    {"header-less input is body", "hello world\nmore\n", "",
    "hello world\r\nmore\r\n"},
    {"leading blank line: header-less", "\nbody\n", "", "body\r\n"},
    {"continuation lines", "Subject: a\n b\n\tc\nTo: x\n\nz",
    "Subject: a\r\n b\r\n\tc\r\nTo: x\r\n", "z"},
    {"non-header line starts the body", "Subject: a\nthis is body\nmore\n",
    "Subject: a\r\n", "this is body\r\nmore\r\n"},
    {"obsolete space before colon", "Subject : a\n\nb", "Subject : a\r\n", "b"},
    {"leading continuation is body", " indented\nx\n", "", " indented\r\nx\r\n"},
    {"mbox line only then body text", "From x\nbody line\n", "", "body line\r\n"},
};

static void test_read_table(void)
{
    size_t  i;
    struct msg m;
    struct m365_result res;
    int     fd;
    char   *b;

    for (i = 0; i < sizeof(read_cases) / sizeof(read_cases[0]); i++) {
	fd = input_fd(read_cases[i].in, strlen(read_cases[i].in));
	T_OK(fd >= 0);
	T_CHECK(msg_read(&m, fd, tmpdir, 0, &res) == 0, "%s: %s %s",
		read_cases[i].name, res.dsn, res.text);
	T_CHECK(strcmp(strbuf_str(&m.hdr), read_cases[i].hdr) == 0,
		"%s: hdr \"%s\"", read_cases[i].name, strbuf_str(&m.hdr));
	b = body_of(&m);
	T_CHECK(strcmp(b, read_cases[i].body) == 0, "%s: body \"%s\"",
		read_cases[i].name, b);
	T_EQ_INT(m.body_len, strlen(read_cases[i].body));
	T_EQ_INT(m.size, (off_t) (m.hdr.len + 2 + strlen(read_cases[i].body)));
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

int     main(void)
{
    const char *base = getenv("TMPDIR");
    char    cmd[300];

    snprintf(tmpdir, sizeof(tmpdir), "%s/test_msg.XXXXXX",
	     base && *base ? base : "/tmp");
    if (mkdtemp(tmpdir) == NULL) {
	perror("mkdtemp");
	return (1);
    }
    T_RUN(test_read_table);
    T_RUN(test_read_big);
    T_RUN(test_too_large);
    T_RUN(test_header_limits);
    T_RUN(test_io_errors);
    T_RUN(test_spool_file);
    T_RUN(test_stream);
    T_RUN(test_stream_rewritten);
    T_RUN(test_stream_error);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
	printf("# could not remove %s\n", tmpdir);
    return (T_DONE());
}
