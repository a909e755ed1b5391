/*
 * NAME
 *	test_ndr 1
 * SUMMARY
 *	unit tests for ndr.c (an Exchange Online NDR read by its
 *	structure) and dsn.c (the RFC 3464 DSN made of it)
 * DESCRIPTION
 *	The samples follow the layout of real Exchange Online reports (see
 *	tests/emulator/README.md, "Non-delivery reports", for the public
 *	samples they are modelled on): multipart/report with a
 *	multipart/alternative explanation, message/delivery-status and
 *	the returned message (message/rfc822) or its header
 *	(text/rfc822-headers); a delay notice; a report in German; a
 *	report without the machine part (the text is the fallback); and
 *	messages that only look like reports (Subject), which are not.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dsn.h"
#include "log.h"
#include "msg.h"
#include "ndr.h"
#include "strbuf.h"
#include "util.h"
#include "t.h"
#include "t_file.h"

static char tmpdir[256];

/* An English NDR: unknown recipient, the whole message returned. */
static const char ndr_en[] =
"Received: from SA1PR00MB0001.namprd00.prod.outlook.com (2603:10b6:806::1)\n"
" by SA1PR00MB0002.namprd00.prod.outlook.com with HTTPS; Tue, 1 Dec 2026\n"
" 10:00:05 +0000\n"
"MIME-Version: 1.0\n"
"From: Microsoft Outlook\n"
"\t<MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@contoso.onmicrosoft.com>\n"
"To: <relay@contoso.test>\n"
"Date: Tue, 1 Dec 2026 10:00:04 +0000\n"
"Content-Type: multipart/report; report-type=delivery-status;\n"
"\tboundary=\"b1_0f3c\"\n"
"X-MS-Exchange-Message-Is-Ndr:\n"
"Content-Language: en-US\n"
"Message-ID:\n"
" <5c1e6a0e-1111-4d2a-8e5e-000000000001@SA1PR00MB0001.namprd00.prod.outlook.com>\n"
"In-Reply-To: <app-123@app.example>\n"
"References: <app-123@app.example>\n"
"Subject: Undeliverable: Your invoice\n"
"Auto-Submitted: auto-replied\n"
"\n"
"--b1_0f3c\n"
"Content-Type: multipart/alternative; boundary=\"b2_0f3c\"\n"
"\n"
"--b2_0f3c\n"
"Content-Type: text/plain; charset=\"us-ascii\"\n"
"Content-Transfer-Encoding: quoted-printable\n"
"\n"
"Your message to nobody@remote.example couldn't be delivered.\n"
"\n"
"nobody wasn't found at remote.example.\n"
"\n"
"Status code: 550 5.1.10\n"
"Remote server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recip=\n"
"ient nobody@remote.example not found by SMTP address lookup'\n"
"\n"
"--b2_0f3c\n"
"Content-Type: text/html; charset=\"us-ascii\"\n"
"\n"
"<html><body><p>Your message to nobody@remote.example couldn't be "
"delivered.</p></body></html>\n"
"--b2_0f3c--\n"
"\n"
"--b1_0f3c\n"
"Content-Type: message/delivery-status\n"
"\n"
"Reporting-MTA: dns;SA1PR00MB0001.namprd00.prod.outlook.com\n"
"Received-From-MTA: dns;SA1PR00MB0002.namprd00.prod.outlook.com\n"
"Arrival-Date: Tue, 1 Dec 2026 10:00:02 +0000\n"
"\n"
"Final-Recipient: rfc822;nobody@remote.example\n"
"Action: failed\n"
"Status: 5.1.10\n"
"Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient\n"
" nobody@remote.example not found by SMTP address lookup\n"
"\n"
"--b1_0f3c\n"
"Content-Type: message/rfc822\n"
"\n"
"From: App <noreply@app.example>\n"
"To: nobody@remote.example\n"
"Subject: Your invoice\n"
"Message-ID: <app-123@app.example>\n"
"Date: Tue, 1 Dec 2026 10:00:00 +0000\n"
"MIME-Version: 1.0\n"
"Content-Type: text/plain\n"
"\n"
"Body of the original with a line\n"
"Message-ID: <not-this-one@app.example>\n"
"\n"
"--b1_0f3c--\n";

/* A German delay notice: header only returned, two recipients. */
static const char delay_de[] =
"MIME-Version: 1.0\n"
"From: Microsoft Outlook <MicrosoftExchange329e@contoso.onmicrosoft.com>\n"
"To: <relay@contoso.test>\n"
"Content-Type: multipart/report; report-type=\"delivery-status\";\n"
" boundary=\"=_dly\"\n"
"X-MS-Exchange-Message-Is-Ndr:\n"
"Content-Language: de-DE\n"
"Subject: =?utf-8?Q?Zustellung_verz=C3=B6gert:_Bericht?=\n"
"Auto-Submitted: auto-replied\n"
"\n"
"--=_dly\n"
"Content-Type: text/plain; charset=\"utf-8\"\n"
"Content-Transfer-Encoding: base64\n"
"\n"
/* "Die Zustellung an folgende Empfänger verzögert sich:\n" (UTF-8) */
"RGllIFp1c3RlbGx1bmcgYW4gZm9sZ2VuZGUgRW1wZsOkbmdlciB2ZXJ6w7ZnZXJ0IHNpY2g6\n"
"Cg==\n"
"\n"
"--=_dly\n"
"Content-Type: message/delivery-status\n"
"\n"
"Reporting-MTA: dns; AM0PR00MB0003.eurprd00.prod.outlook.com\n"
"\n"
"Final-Recipient: RFC822; <slow@remote.example>\n"
"Action: Delayed\n"
"Status: 4.4.7\n"
"Diagnostic-Code: smtp; 451 4.4.0 Message delayed\n"
"\n"
"Original-Recipient: rfc822;slow2@remote.example\n"
"Final-Recipient: rfc822;slow2@remote.example\n"
"Action: delayed\n"
"Status: 4.4.316\n"
"\n"
"--=_dly\n"
"Content-Type: text/rfc822-headers\n"
"\n"
"From: noreply@app.example\n"
"Subject: =?utf-8?Q?Gr=C3=BC=C3=9Fe?=\n"
"Message-ID: <dly-9@app.example>\n"
"\n"
"--=_dly--\n";

/*
 * The machine part lost (a client re-encoded the report): the text and
 * In-Reply-To are the fallback.
 */
static const char human_only[] =
"MIME-Version: 1.0\n"
"From: Microsoft Outlook <MicrosoftExchange329e@contoso.onmicrosoft.com>\n"
"To: <relay@contoso.test>\n"
"X-MS-Exchange-Message-Is-Ndr:\n"
"In-Reply-To:\n"
" <orig-77@app.example>\n"
"References: <older@app.example>\n"
" <orig-77@app.example>\n"
"Subject: Non remis : rapport\n"
"Auto-Submitted: auto-replied\n"
"Content-type: multipart/mixed; boundary=\"MX\"\n"
"\n"
"--MX\n"
"Content-type: text/plain; charset=\"UTF-8\"\n"
"\n"
"Votre message n'a pas pu \xc3\xaatre remis.\n"
"Status code: 550 5.7.350\n"
"Reported error: 550 5.7.350 Remote server returned message detected as spam\n"
"--MX--\n";

/* Looks like a bounce by its Subject only: not a report. */
static const char not_report[] =
"From: someone@example.org\n"
"To: relay@contoso.test\n"
"Subject: Undeliverable: Mail delivery failed\n"
"Message-ID: <person-1@example.org>\n"
"In-Reply-To: <app-123@app.example>\n"
"\n"
"Status: 5.1.1 -- a person writing about a bounce\n";

/* A report forwarded by a person: inside message/rfc822, not ours. */
static const char forwarded[] =
"From: someone@example.org\n"
"To: relay@contoso.test\n"
"Subject: FW: Undeliverable\n"
"Content-Type: multipart/mixed; boundary=\"F\"\n"
"\n"
"--F\n"
"Content-Type: text/plain\n"
"\n"
"see below\n"
"--F\n"
"Content-Type: message/rfc822\n"
"\n"
"Content-Type: multipart/report; report-type=delivery-status; boundary=\"I\"\n"
"X-MS-Exchange-Message-Is-Ndr:\n"
"Auto-Submitted: auto-replied\n"
"\n"
"--I\n"
"Content-Type: message/delivery-status\n"
"\n"
"Reporting-MTA: dns; x\n"
"\n"
"Final-Recipient: rfc822;a@b\n"
"Action: failed\n"
"Status: 5.1.1\n"
"--I--\n"
"--F--\n";

/* read_msg - message text (LF) read as m365-fetch reads it */

static void read_msg(struct msg *m, const char *text)
{
    struct m365_result res;
    char    path[300];
    int     fd;

    snprintf(path, sizeof(path), "%s/in.XXXXXX", tmpdir);
    fd = mkstemp(path);
    unlink(path);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t) strlen(text)
	|| lseek(fd, 0, SEEK_SET) != 0) {
	printf("not ok - cannot write the test message\n");
	exit(1);
    }
    memset(m, 0, sizeof(*m));
    T_EQ_INT(msg_read(m, fd, tmpdir, 0, &res), 0);
    close(fd);
}

/* parse - a sample through ndr_parse() */

static void parse(const char *text, struct ndr *r)
{
    struct msg m;
    char    err[300];

    read_msg(&m, text);
    T_EQ_INT(ndr_parse(&m, r, err, sizeof(err)), 0);
    msg_free(&m);
}

/* test_english - the machine part wins; the original from message/rfc822 */

static void test_english(void)
{
    struct ndr r;

    parse(ndr_en, &r);
    T_EQ_INT(r.kind, NDR_MACHINE);
    T_EQ_INT(r.exchange, 1);
    T_EQ_INT(r.nrcpts, 1);
    T_EQ_STR(r.rcpts[0].final_rcpt, "nobody@remote.example");
    T_EQ_STR(r.rcpts[0].action, "failed");
    T_EQ_STR(r.rcpts[0].status, "5.1.10");
    T_EQ_STR(r.rcpts[0].diag, "smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound;"
	     " Recipient nobody@remote.example not found by SMTP address "
	     "lookup");
    T_EQ_STR(r.reporting_mta, "dns;SA1PR00MB0001.namprd00.prod.outlook.com");
    T_EQ_STR(r.arrival_date, "Tue, 1 Dec 2026 10:00:02 +0000");
    T_EQ_STR(r.orig_message_id, "<app-123@app.example>");
    T_EQ_STR(r.orig_from, "rfc822");
    T_EQ_STR(r.report_message_id, "<5c1e6a0e-1111-4d2a-8e5e-000000000001@"
	     "SA1PR00MB0001.namprd00.prod.outlook.com>");
    /* The text/plain part, quoted-printable decoded. */
    T_CONTAINS(r.human, "Recipient nobody@remote.example not found");
    /* Only the header of the returned message. */
    T_CONTAINS(r.orig_hdr.data, "Subject: Your invoice");
    T_OK(strstr(r.orig_hdr.data, "not-this-one") == NULL);
    T_OK(strstr(r.orig_hdr.data, "Body of") == NULL);
    T_EQ_STR(ndr_action(r.rcpts), "failed");
    ndr_free(&r);
}

/* test_delay - a delay notice in German: two delayed recipients */

static void test_delay(void)
{
    struct ndr r;

    parse(delay_de, &r);
    T_EQ_INT(r.kind, NDR_MACHINE);
    T_EQ_INT(r.nrcpts, 2);
    T_EQ_STR(r.rcpts[0].final_rcpt, "slow@remote.example");
    T_EQ_STR(r.rcpts[0].action, "delayed");	/* lower case */
    T_EQ_STR(r.rcpts[0].status, "4.4.7");
    T_EQ_STR(r.rcpts[1].orig_rcpt, "slow2@remote.example");
    T_EQ_STR(ndr_status(r.rcpts + 1), "4.4.316");
    T_OK(r.arrival_date == NULL);
    T_EQ_STR(r.orig_message_id, "<dly-9@app.example>");
    T_CONTAINS(r.human, "Empf\xc3\xa4nger verz\xc3\xb6gert");
    T_EQ_INT(dsn_delayed(&r), 1);
    ndr_free(&r);
}

/* test_human - no machine part: the text and In-Reply-To */

static void test_human(void)
{
    struct ndr r;

    parse(human_only, &r);
    T_EQ_INT(r.kind, NDR_HUMAN);
    T_EQ_INT(r.nrcpts, 1);
    T_OK(r.rcpts[0].final_rcpt == NULL);
    T_EQ_STR(r.rcpts[0].status, "5.7.350");
    T_EQ_STR(ndr_action(r.rcpts), "failed");
    T_EQ_STR(r.rcpts[0].diag, "Status code: 550 5.7.350");
    T_EQ_STR(r.orig_message_id, "<orig-77@app.example>");
    T_EQ_STR(r.orig_from, "in-reply-to");
    T_EQ_INT(r.orig_hdr.len, 0);
    ndr_free(&r);
}

/* test_not_reports - the Subject does not make a report; nor a forward */

static void test_not_reports(void)
{
    struct ndr r;
    char   *t;

    parse(not_report, &r);
    T_EQ_INT(r.kind, NDR_NONE);
    T_OK(r.orig_message_id == NULL);
    ndr_free(&r);
    parse(forwarded, &r);
    T_EQ_INT(r.kind, NDR_NONE);
    ndr_free(&r);
    /* A report without Auto-Submitted and without a machine part. */
    t = xstrdup(human_only);
    memcpy(strstr(t, "Auto-Submitted"), "X-Not-Submitted", 14);
    parse(t, &r);
    T_EQ_INT(r.kind, NDR_NONE);
    ndr_free(&r);
    free(t);
    /* A report whose text has no status code: failed, cause unknown. */
    t = xstrdup(human_only);
    memcpy(strstr(t, "Status code: 550 5.7.350"), "Status code: 550 x.y.zzz", 24);
    memcpy(strstr(t, "550 5.7.350 Remote"), "550 x.y.zzz Remote", 18);
    parse(t, &r);
    T_EQ_INT(r.kind, NDR_HUMAN);
    T_EQ_INT(r.nrcpts, 1);
    T_EQ_STR(ndr_action(r.rcpts), "failed");
    T_EQ_STR(ndr_status(r.rcpts), "5.0.0");
    T_OK(r.rcpts[0].diag == NULL);
    ndr_free(&r);
    free(t);
    /* References: the last id names the message. */
    t = xstrdup(human_only);
    memcpy(strstr(t, "In-Reply-To"), "X-In-Reply-", 11);
    parse(t, &r);
    T_EQ_STR(r.orig_message_id, "<orig-77@app.example>");
    T_EQ_STR(r.orig_from, "references");
    ndr_free(&r);
    free(t);
}

/* info - the ledger's side of a DSN */

static void info(struct dsn_info *in, char **rcpts, size_t n)
{
    memset(in, 0, sizeof(*in));
    in->host = "relay.contoso.test";
    in->from = "MAILER-DAEMON@relay.contoso.test";
    in->to = "bounces@app.example";
    in->mailbox = "relay@contoso.test";
    in->queue_id = "4ABCDEF";
    in->arrival = 1700000000;
    in->rcpts = rcpts;
    in->nrcpts = n;
    in->message_id = "<dsn-1.m365-fetch@relay.contoso.test>";
    in->now = 1700000100;
}

/* test_dsn - the DSN of the English NDR: RFC 3464 fields, headers */

static void test_dsn(void)
{
    struct ndr r;
    struct dsn_info in;
    struct strbuf sb;
    struct msg m;
    struct ndr back;
    char   *rcpts[] = {"Nobody@remote.example"};
    char    err[300];

    parse(ndr_en, &r);
    info(&in, rcpts, 1);
    strbuf_init(&sb, 1024 * 1024);
    T_EQ_INT(dsn_build(&r, &in, &sb), 0);
    T_CONTAINS(sb.data, "From: Mail Delivery System "
	       "<MAILER-DAEMON@relay.contoso.test>\r\n");
    T_CONTAINS(sb.data, "To: <bounces@app.example>\r\n");
    T_CONTAINS(sb.data, "Subject: Undelivered Mail Returned to Sender\r\n");
    T_CONTAINS(sb.data, "Auto-Submitted: auto-replied\r\n");
    T_CONTAINS(sb.data, "In-Reply-To: <app-123@app.example>\r\n");
    T_CONTAINS(sb.data, "Content-Type: multipart/report; "
	       "report-type=delivery-status;");
    T_CONTAINS(sb.data, "\r\nReporting-MTA: dns; relay.contoso.test\r\n");
    T_CONTAINS(sb.data, "X-M365Relay-Queue-ID: 4ABCDEF\r\n");
    T_CONTAINS(sb.data, "\r\nArrival-Date: ");
    T_CONTAINS(sb.data, "Original-Recipient: rfc822; Nobody@remote.example\r\n"
	       "Final-Recipient: rfc822; nobody@remote.example\r\n"
	       "Action: failed\r\nStatus: 5.1.10\r\n"
	       "Remote-MTA: dns;SA1PR00MB0001.namprd00.prod.outlook.com\r\n"
	       "Diagnostic-Code: smtp;550 5.1.10");
    T_CONTAINS(sb.data, "Content-Type: text/rfc822-headers\r\n\r\n"
	       "From: App <noreply@app.example>\r\n");
    T_CONTAINS(sb.data, "Message-ID: <app-123@app.example>\r\n");
    T_CONTAINS(sb.data, "> Status code: 550 5.1.10");
    /* Folded: no line longer than 998, every line CRLF. */
    T_OK(strstr(sb.data, "\n\n") == NULL);

    /* The DSN is itself a report that ndr.c reads back the same. */
    read_msg(&m, sb.data);
    T_EQ_INT(ndr_parse(&m, &back, err, sizeof(err)), 0);
    T_EQ_INT(back.kind, NDR_MACHINE);
    T_EQ_INT(back.nrcpts, 1);
    T_EQ_STR(back.rcpts[0].final_rcpt, "nobody@remote.example");
    T_EQ_STR(back.rcpts[0].status, "5.1.10");
    T_EQ_STR(back.orig_message_id, "<app-123@app.example>");
    T_CONTAINS(back.human, "RESOLVER.ADR.RecipientNotFound");
    ndr_free(&back);
    msg_free(&m);
    strbuf_free(&sb);
    ndr_free(&r);
}

/* test_dsn_delay - delayed: subject, actions; the text quoted as UTF-8 QP */

static void test_dsn_delay(void)
{
    struct ndr r;
    struct dsn_info in;
    struct strbuf sb;
    char   *rcpts[] = {"slow@remote.example", "slow2@remote.example"};

    parse(delay_de, &r);
    info(&in, rcpts, 2);
    in.queue_id = NULL;
    strbuf_init(&sb, 1024 * 1024);
    T_EQ_INT(dsn_build(&r, &in, &sb), 0);
    T_CONTAINS(sb.data, "Subject: Delayed Mail (still being retried)\r\n");
    T_CONTAINS(sb.data, "Action: delayed\r\nStatus: 4.4.7\r\n");
    T_CONTAINS(sb.data, "Action: delayed\r\nStatus: 4.4.316\r\n");
    T_CONTAINS(sb.data, "Original-Recipient: rfc822; slow2@remote.example");
    T_CONTAINS(sb.data, "Empf=C3=A4nger verz=C3=B6gert");
    T_OK(strstr(sb.data, "X-M365Relay-Queue-ID") == NULL);
    /* 7bit: the returned header's RFC 2047 word is kept as it is. */
    T_CONTAINS(sb.data, "Subject: =?utf-8?Q?Gr=C3=BC=C3=9Fe?=\r\n");
    strbuf_free(&sb);

    /* Too long for the caller's limit: -1, never a DSN cut short. */
    strbuf_init(&sb, 200);
    T_EQ_INT(dsn_build(&r, &in, &sb), -1);
    strbuf_free(&sb);
    ndr_free(&r);
}

/* test_dsn_human - text-only report: one entry per envelope recipient */

static void test_dsn_human(void)
{
    struct ndr r;
    struct dsn_info in;
    struct strbuf sb;
    char   *rcpts[] = {"a@remote.example", "b@remote.example"};

    parse(human_only, &r);
    info(&in, rcpts, 2);
    strbuf_init(&sb, 1024 * 1024);
    T_EQ_INT(dsn_build(&r, &in, &sb), 0);
    T_CONTAINS(sb.data, "Original-Recipient: rfc822; a@remote.example\r\n"
	       "Final-Recipient: rfc822; a@remote.example\r\n"
	       "Action: failed\r\nStatus: 5.7.350\r\n");
    T_CONTAINS(sb.data, "Final-Recipient: rfc822; b@remote.example\r\n");
    T_CONTAINS(sb.data, "Diagnostic-Code: smtp; Status code: 550 5.7.350");
    T_CONTAINS(sb.data, "> Votre message n'a pas pu =C3=AAtre remis.");
    T_OK(strstr(sb.data, "text/rfc822-headers") == NULL);
    strbuf_free(&sb);
    ndr_free(&r);
}

int     main(void)
{
    log_to_file("/dev/null");
    t_tmpdir(tmpdir, sizeof(tmpdir), "test_ndr");
    T_RUN(test_english);
    T_RUN(test_delay);
    T_RUN(test_human);
    T_RUN(test_not_reports);
    T_RUN(test_dsn);
    T_RUN(test_dsn_delay);
    T_RUN(test_dsn_human);
    t_rm_rf(tmpdir);
    return (T_DONE());
}
