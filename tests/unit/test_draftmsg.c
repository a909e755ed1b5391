/*
 * NAME
 *	test_draftmsg 1
 * SUMMARY
 *	unit tests for draftmsg.c: a message as the JSON of a Graph draft
 *	(body choice, header fields, attachments, what cannot be split)
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "draftmsg.h"
#include "log.h"
#include "msg.h"
#include "util.h"
#include "t.h"
#include "t_file.h"

static char tmpdir[256];

/* read_msg - the text as m365-relay reads it (spooled) */

static void read_msg(struct msg *m, const char *text)
{
    struct m365_result res;
    char    path[300];
    int     fd;

    snprintf(path, sizeof(path), "%s/in.XXXXXX", tmpdir);
    if ((fd = mkstemp(path)) < 0
	|| write(fd, text, strlen(text)) != (ssize_t) strlen(text)
	|| lseek(fd, 0, SEEK_SET) != 0) {
	printf("not ok - cannot write the test message\n");
	exit(1);
    }
    unlink(path);
    T_EQ_INT(msg_read(m, fd, tmpdir, 0, &res), 0);
    close(fd);
}

/* jstr - a string member along a path ("body.content"), or "" */

static const char *jstr(const cJSON *root, const char *path)
{
    char    key[100];
    const char *dot;
    const cJSON *o = root;

    while ((dot = strchr(path, '.')) != NULL) {
	snprintf(key, sizeof(key), "%.*s", (int) (dot - path), path);
	o = cJSON_GetObjectItemCaseSensitive(o, key);
	path = dot + 1;
    }
    o = cJSON_GetObjectItemCaseSensitive(o, path);
    return (cJSON_IsString(o) ? o->valuestring : "");
}

/* att_json - an attachment's meta made a whole object (content "") */

static cJSON *att_json(const struct draftmsg_att *a)
{
    char    buf[4096];

    snprintf(buf, sizeof(buf), "%s,\"contentBytes\":\"\"}", a->meta);
    return (cJSON_Parse(buf));
}

static const char mixed[] =
"From: =?utf-8?q?J=C3=B6rg?= Sender <bob@contoso.test>\n"
"To: \"Big, Receiver\" <big@example.net>, plain@example.net\n"
"Cc: cc@example.net (The CC)\n"
"Bcc: hidden@example.net\n"
"Reply-To: replies@example.net\n"
"Subject: =?iso-8859-1?q?Gr=FC=DFe?= and more\n"
"Message-ID:  <mid-1@contoso.test>\n"
"X-Priority: 1\n"
"Disposition-Notification-To: bob@contoso.test\n"
"X-One: 1\n"
"X-MS-Exchange-Organization-Foo: internal\n"
"X-Two: 2\n"
"X-Three: 3\n"
"X-Four: 4\n"
"X-Five: 5\n"
"X-Six: 6\n"
"References: <old@x>\n"
"MIME-Version: 1.0\n"
"Content-Type: multipart/mixed; boundary=m\n"
"\n"
"--m\n"
"Content-Type: multipart/alternative; boundary=a\n"
"\n"
"--a\n"
"Content-Type: text/plain; charset=us-ascii\n"
"\n"
"plain text\n"
"--a\n"
"Content-Type: multipart/related; boundary=r\n"
"\n"
"--r\n"
"Content-Type: text/html; charset=iso-8859-1\n"
"Content-Transfer-Encoding: quoted-printable\n"
"\n"
"<p>Gr=FC=DFe</p><img src=3D\"cid:logo@x\">\n"
"--r\n"
"Content-Type: image/png\n"
"Content-ID: <logo@x>\n"
"Content-Transfer-Encoding: base64\n"
"\n"
"iVBORw0KGgo=\n"
"--r\n"
"Content-Type: image/gif\n"
"Content-ID: <unused@x>\n"
"Content-Transfer-Encoding: base64\n"
"\n"
"R0lGODlh\n"
"--r--\n"
"--a--\n"
"--m\n"
"Content-Type: application/pdf; name=\"a.pdf\"\n"
"Content-Disposition: attachment\n"
"Content-Transfer-Encoding: base64\n"
"\n"
"JVBERi0xLjQK\n"
"--m\n"
"Content-Type: text/plain; charset=iso-8859-1\n"
"Content-Disposition: attachment\n"
"\n"
"notes\n"
"--m\n"
"Content-Type: message/rfc822\n"
"\n"
"Subject: Fwd: a/b report\n"
"\n"
"inner\n"
"--m--\n";

/* test_mixed - body, fields and attachments of a typical message */

static void test_mixed(void)
{
    struct msg m;
    struct draftmsg j;
    struct m365_result res;
    cJSON  *root, *arr, *a;
    const struct draftmsg_att *att;
    int     n;

    read_msg(&m, mixed);
    result_init(&res);
    T_EQ_INT(draftmsg_build(&j, &m, &m.hdr, "Q1", &res), 0);
    root = cJSON_Parse(j.meta);
    T_OK(root != NULL);
    T_EQ_STR(jstr(root, "subject"), "Gr\xC3\xBC\xC3\x9F" "e and more");
    T_EQ_STR(jstr(root, "body.contentType"), "html");
    T_EQ_STR(jstr(root, "body.content"), "<p>Gr\xC3\xBC\xC3\x9F" "e</p>"
	     "<img src=\"cid:logo@x\">");
    T_EQ_STR(jstr(root, "from.emailAddress.address"), "bob@contoso.test");
    T_EQ_STR(jstr(root, "from.emailAddress.name"), "J\xC3\xB6rg Sender");
    arr = cJSON_GetObjectItemCaseSensitive(root, "toRecipients");
    T_EQ_INT(cJSON_GetArraySize(arr), 2);
    T_EQ_STR(jstr(cJSON_GetArrayItem(arr, 0), "emailAddress.name"),
	     "Big, Receiver");
    T_EQ_STR(jstr(cJSON_GetArrayItem(arr, 1), "emailAddress.address"),
	     "plain@example.net");
    arr = cJSON_GetObjectItemCaseSensitive(root, "ccRecipients");
    T_EQ_STR(jstr(cJSON_GetArrayItem(arr, 0), "emailAddress.name"), "The CC");
    arr = cJSON_GetObjectItemCaseSensitive(root, "bccRecipients");
    T_EQ_STR(jstr(cJSON_GetArrayItem(arr, 0), "emailAddress.address"),
	     "hidden@example.net");
    arr = cJSON_GetObjectItemCaseSensitive(root, "replyTo");
    T_EQ_INT(cJSON_GetArraySize(arr), 1);
    T_EQ_STR(jstr(root, "importance"), "high");
    T_OK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root,
						  "isReadReceiptRequested")));
    /* Five X- fields at most, Exchange's own left out. */
    arr = cJSON_GetObjectItemCaseSensitive(root, "internetMessageHeaders");
    T_EQ_INT(cJSON_GetArraySize(arr), 5);
    T_EQ_STR(jstr(cJSON_GetArrayItem(arr, 0), "name"), "X-Priority");
    T_EQ_STR(jstr(cJSON_GetArrayItem(arr, 1), "name"), "X-One");
    T_EQ_STR(jstr(cJSON_GetArrayItem(arr, 2), "name"), "X-Two");
    T_EQ_STR(jstr(cJSON_GetArrayItem(arr, 4), "value"), "4");
    arr = cJSON_GetObjectItemCaseSensitive(root, "singleValueExtendedProperties");
    T_EQ_STR(jstr(cJSON_GetArrayItem(arr, 0), "id"), "String 0x1035");
    T_EQ_STR(jstr(cJSON_GetArrayItem(arr, 0), "value"), "<mid-1@contoso.test>");
    T_OK(strstr(j.meta, "References") == NULL);
    T_OK(strstr(j.meta, "plain text") == NULL);	/* the dropped alternative */
    cJSON_Delete(root);

    /* Attachments: the two images, the PDF, the text file, the .eml. */
    T_EQ_INT(j.natt, 5);
    for (n = 0; n < (int) j.natt && n < 5; n++) {
	att = j.att + n;
	a = att_json(att);
	T_OK(a != NULL);
	T_OK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(a, "@odata.type"))
	     && strcmp(cJSON_GetObjectItemCaseSensitive(a, "@odata.type")->
		       valuestring, "#microsoft.graph.fileAttachment") == 0);
	switch (n) {
	case 0:
	    T_EQ_STR(jstr(a, "contentType"), "image/png");
	    T_EQ_STR(jstr(a, "contentId"), "logo@x");
	    T_OK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "isInline")));
	    T_EQ_STR(att->name, "attachment-1.png");
	    T_EQ_INT(att->size, 8);
	    break;
	case 1:
	    /* In the related part: inline, though the HTML does not use it. */
	    T_EQ_STR(jstr(a, "contentId"), "unused@x");
	    T_EQ_INT(att->is_inline, 1);
	    break;
	case 2:
	    T_EQ_STR(att->name, "a.pdf");
	    T_EQ_INT(att->is_inline, 0);
	    T_EQ_INT(att->size, 9);
	    break;
	case 3:
	    T_EQ_STR(jstr(a, "contentType"), "text/plain; charset=iso-8859-1");
	    T_EQ_STR(att->name, "attachment-4.txt");
	    break;
	case 4:
	    T_EQ_STR(jstr(a, "contentType"), "message/rfc822");
	    T_EQ_STR(att->name, "Fwd_ a_b report.eml");
	    break;
	}
	cJSON_Delete(a);
    }
    draftmsg_free(&j);
    msg_free(&m);
}

/* test_unsplittable - signed or encrypted: 5.3.4 that says why */

static void test_unsplittable(void)
{
    static const char *const types[] = {
	"multipart/signed; protocol=\"application/pkcs7-signature\"; "
	"boundary=s",
	"multipart/encrypted; protocol=\"application/pgp-encrypted\"; "
	"boundary=s",
	"application/pkcs7-mime; smime-type=enveloped-data",
	"application/x-pkcs7-mime",
	0,
    };
    char    text[1024];
    struct msg m;
    struct draftmsg j;
    struct m365_result res;
    int     i;

    for (i = 0; types[i]; i++) {
	snprintf(text, sizeof(text), "From: bob@contoso.test\nTo: x@y.test\n"
		 "Content-Type: %s\n\n--s\n\nx\n--s--\n", types[i]);
	read_msg(&m, text);
	result_init(&res);
	T_EQ_INT(draftmsg_build(&j, &m, &m.hdr, "Q2", &res), -1);
	T_EQ_STR(res.dsn, "5.3.4");
	T_EQ_INT(res.status, M365_PERM);
	T_CONTAINS(res.text, "signature");
	draftmsg_free(&j);
	msg_free(&m);
    }
}

/* test_single - a message that is one PDF: no body, one attachment */

static void test_single(void)
{
    struct msg m;
    struct draftmsg j;
    struct m365_result res;
    cJSON  *root;

    read_msg(&m, "From: bob@contoso.test\nTo: x@y.test\nSubject: scan\n"
	     "Content-Type: application/pdf; name=scan.pdf\n"
	     "Content-Transfer-Encoding: base64\n\nJVBERi0xLjQK\n");
    result_init(&res);
    T_EQ_INT(draftmsg_build(&j, &m, &m.hdr, "Q3", &res), 0);
    T_EQ_INT(j.natt, 1);
    T_EQ_STR(j.att[0].name, "scan.pdf");
    root = cJSON_Parse(j.meta);
    T_EQ_STR(jstr(root, "body.contentType"), "text");
    T_EQ_STR(jstr(root, "body.content"), "");
    T_OK(cJSON_GetObjectItemCaseSensitive(root, "singleValueExtendedProperties")
	 == NULL);				/* no Message-ID: none */
    cJSON_Delete(root);
    draftmsg_free(&j);
    msg_free(&m);
}

/*
 * test_big_body - a text whose JSON is over 4 MB goes as a file, with a
 * note: raw over 4 MB, and raw under 4 MB that JSON escaping makes larger
 */
static void test_big_body(void)
{
    static const int lines[] = {90000, 80000, 70000};
    static const int attached[] = {1, 1, 0};
    struct strbuf sb;
    struct msg m;
    struct draftmsg j;
    struct m365_result res;
    cJSON  *root;
    int     i, k;

    for (k = 0; k < 3; k++) {
	strbuf_init(&sb, 8 * 1024 * 1024);
	strbuf_puts(&sb, "From: bob@contoso.test\nTo: x@y.test\n"
		    "Content-Type: text/plain; charset=utf-8\n\n");
	for (i = 0; i < lines[k]; i++)
	    strbuf_puts(&sb, "a \"quoted\" line that JSON escapes\t\\ "
			"0123456789\n");
	read_msg(&m, sb.data);
	result_init(&res);
	T_EQ_INT(draftmsg_build(&j, &m, &m.hdr, "Q4", &res), 0);
	T_EQ_INT(j.body_attached, attached[k]);
	T_EQ_INT(j.natt, attached[k]);
	if (attached[k]) {
	    T_EQ_INT(j.att[0].size, (long long) m.body_len);
	    T_EQ_STR(j.att[0].name, "attachment-1.txt");
	    root = cJSON_Parse(j.meta);
	    T_OK(strstr(jstr(root, "body.content"), "is attached") != NULL);
	    T_OK(strlen(j.meta) < 4096);
	    cJSON_Delete(root);
	} else {
	    T_OK(strlen(j.meta) > 3 * 1024 * 1024
		 && strlen(j.meta) < 4 * 1024 * 1024);
	}
	draftmsg_free(&j);
	msg_free(&m);
	strbuf_free(&sb);
    }
}

int     main(void)
{
    log_to_file("/dev/null");
    t_tmpdir(tmpdir, sizeof(tmpdir), "test_draftmsg");
    T_RUN(test_mixed);
    T_RUN(test_unsplittable);
    T_RUN(test_single);
    T_RUN(test_big_body);
    rmdir(tmpdir);
    return (T_DONE());
}
