# tests/large.sh - helpers for the large-message tests (issue 10): make
# big MIME messages with known parts, submit them over SMTP, and check
# what the emulator's recipients got.  Source it from bash after
# tests/lib.sh (it needs $T, $PYTHON, emu_ctl):
#
#	. "$top_srcdir/tests/large.sh"
#
#   large_gen FILE KIND SIZE TAG HEADER...
#			a CRLF message of about SIZE bytes (k, M suffixes:
#			1024-based) and its manifest FILE.json (what the
#			recipients must get); random content from a seed
#			made of TAG, so a TAG gives the same bytes every
#			time.  Adds Date, Message-ID <TAG.large@e2e.test>,
#			Subject "large TAG Größe" (RFC 2047), X-Large-Tag,
#			X-Mailer, References, MIME-Version.  KIND:
#			  one      text/plain (quoted-printable, hard line
#			           breaks) + one PDF (base64) in
#			           multipart/mixed
#			  several  multipart/mixed: multipart/related
#			           (multipart/alternative text + HTML, both
#			           quoted-printable; an inline PNG the HTML
#			           names by cid:), a PDF (RFC 2231 name), a
#			           CSV (quoted-printable, RFC 2047 name), a
#			           message/rfc822 part without a file name
#			  signed   multipart/signed (application/pkcs7-
#			           signature) around a "one" message
#   large_smtp PORT FROM RCPTS FILE [SIZE]
#			submit FILE over SMTP (RCPTS: comma list; SIZE:
#			send SIZE=n at MAIL FROM); print the queue id; the
#			last reply goes to FILE.smtp ("CODE TEXT"); exit 0
#			on 250.  FILE "-": print the reply to MAIL FROM and
#			quit (a SIZE= check)
#   large_sent_count MANIFEST   messages the emulator recorded with the
#			manifest's Message-ID
#   large_wait_sent MANIFEST N SECS   wait until N of them arrived
#   large_flush_until FLUSH MANIFEST N SECS   queue runs until N arrived
#   large_verify MANIFEST [RCPTS [NAME=VALUE...]]
#			the one recorded message with that Message-ID:
#			recipients (RCPTS, a comma list, exactly), the top-
#			level header fields a JSON draft keeps (From, To,
#			Cc, Reply-To, Subject, Message-ID, the X- fields;
#			no Bcc), the message text, every attachment (name,
#			type, size, sha256 of the decoded bytes, inline
#			with its Content-ID) in the record and in the MIME
#			the recipients get; prints what differs.
#			NAME=VALUE: a header field expected other than given
#			to large_gen (To: as rewritten for the recipients)
#   large_drafts MB     drafts left in the Drafts folder of MB (emu_drafts)
#   large_drafts_of MANIFEST   drafts of the manifest's message
#   large_drafts_are MB N   MB's Drafts folder holds N drafts (else says so)
#   large_uploads_ok MANIFEST   the message's upload sessions: one per
#			attachment of 3 MB or more, complete, ranges of 320 KiB
#			multiples (the last may be shorter) of at most 4 MiB,
#			nothing refused (an Authorization header would be)
#   large_eml_drop MANIFEST   delete the emulator's .eml of the message
#   large_faults_gone   the emulator holds no unconsumed fault
#
#   large_disk KB       at least KB free in $T (else says why and fails)
#   large_conf FILE HOST   an m365relay.conf from write_conf made ready for
#			large messages: upload_hosts = HOST, upload_budget =
#			1024M (no pacing), account app (bob@contoso.test, the
#			default) max_message_size = 150M, large_messages = yes
#   large_account FILE NAME CLIENT_ID SENDERS [LINE...]
#			append an [account NAME] of a secret app ($T/secret)
#			for mailbox alice@contoso.test with the extra LINEs
#   large_app_roles CLIENT_ID ROLE...
#			the emulator's app CLIENT_ID (secret $T/secret) has
#			exactly these roles; its access tokens expire now

#   large_log_has ERE   a line of $T/relay.log (the log_file) matches
#   large_postfix       the private Postfix (tests/postfix.sh) takes
#			messages up to 200 MB (and delivers its bounces)
#
# LARGE_FROM, LARGE_TO, LARGE_CC, LARGE_RT: header lines for large_gen
# (bob@contoso.test to rcpt1@example.com, cc1@example.org);
# LARGE_RCPTS: those two and a Bcc recipient, hidden@example.net.

# shellcheck disable=SC2034  # used by the scripts that source this file
LARGE_FROM="From: Bob Sender <bob@contoso.test>"
LARGE_TO="To: Rcpt One <rcpt1@example.com>"
LARGE_CC="Cc: Carbon Copy <cc1@example.org>"
LARGE_RT="Reply-To: Replies <replies@contoso.test>"
LARGE_RCPTS=rcpt1@example.com,cc1@example.org,hidden@example.net

# large_bytes SIZE - SIZE with a k or M suffix (1024-based) in bytes
large_bytes() {
    case $1 in
    *[kK]) echo $(( ${1%[kK]} * 1024 ));;
    *M) "$PYTHON" -c 'import sys; print(int(float(sys.argv[1]) * 1048576))' "${1%M}";;
    *) echo "$1";;
    esac
}

# large_gen FILE KIND SIZE TAG HEADER... - see above
large_gen() {
    local file=$1 kind=$2 size tag=$4
    size=$(large_bytes "$3")
    shift 4
    "$PYTHON" - "$file" "$kind" "$size" "$tag" "$@" <<'PYEOF'
import base64, binascii, hashlib, json, random, sys, zlib

path, kind, size, tag = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
extra = sys.argv[5:]
rnd = random.Random(zlib.crc32(("%s/%s/%d" % (tag, kind, size)).encode()))
out = open(path, "wb")
manifest = {"tag": tag, "kind": kind, "message_id": "<%s.large@e2e.test>" % tag,
            "subject": "large %s Größe" % tag, "attachments": [], "headers": {},
            "x_headers": {"X-Large-Tag": tag, "X-Mailer": "m365relay large test"}}
written = 0

def w(b):
    global written
    if isinstance(b, str):
        b = b.encode()
    out.write(b)
    written += len(b)

def crlf(s):
    return s.replace("\r\n", "\n").replace("\n", "\r\n")

def qp_hard(text):
    """quoted-printable with hard line breaks (text): CRLF lines"""
    lines = []
    for line in text.split("\r\n"):
        enc = binascii.b2a_qp(line.encode(), quotetabs=False, istext=True,
                              header=False).decode()
        lines.append(enc.replace("\n", "\r\n"))
    return "\r\n".join(lines)

def qp_binary(data):
    """quoted-printable of bytes with every CR and LF encoded: only soft
    line breaks, so the decoded bytes do not depend on how a transport
    writes line ends"""
    enc = binascii.b2a_qp(data, quotetabs=False, istext=False, header=False)
    return enc.replace(b"\n", b"\r\n")

def att(name, ctype, data_sha, size, inline=False, cid=None):
    manifest["attachments"].append({"name": name, "contentType": ctype,
                                    "size": size, "sha256": data_sha,
                                    "isInline": inline, "contentId": cid})

def b64_stream(nbytes, head=b"", tail=b""):
    """write nbytes of content (head, random bytes, tail) as base64
    lines of 76 characters; return (sha256, size)"""
    sha = hashlib.sha256()
    block = 57 * 2048
    buf = [b""]
    def emit(final=False):
        while len(buf[0]) >= block or (final and buf[0]):
            chunk, buf[0] = buf[0][:block], buf[0][block:]
            sha.update(chunk)
            w(base64.encodebytes(chunk).replace(b"\n", b"\r\n"))
    buf[0] += head
    left = nbytes - len(head) - len(tail)
    while left > 0:
        take = min(block, left)
        buf[0] += rnd.randbytes(take)
        left -= take
        emit()
    buf[0] += tail
    emit(True)
    return sha.hexdigest(), nbytes

def b64_fit(avail):
    """decoded bytes whose base64 lines take at most avail bytes"""
    return max(57, (avail // 78) * 57)

def text_body(marker):
    t = ("Hello,\n\nthis is the message text of %s: %s.\n"
         "Gr\u00fc\u00dfe aus K\u00f6ln, \u00e7a va? \u20ac 10,00 = zehn Euro.\n"
         ". a line that starts with a dot\n"
         "From a line that starts with From\n"
         "A long line: %s\n\n-- \nThe large-message test\n"
         % (tag, marker, "x" * 120))
    return crlf(t)

def html_body(marker, cid):
    t = ("<html><head><meta charset=\"utf-8\"></head><body>\n"
         "<p>%s: Gr\u00fc\u00dfe aus K\u00f6ln \u20ac</p>\n"
         "<p><img src=\"cid:%s\" alt=\"logo\"></p>\n"
         ". dot line\n</body></html>\n" % (marker, cid))
    return crlf(t)

header = [
    "Date: Mon, 02 Jun 2025 10:00:00 +0200",
    "Message-ID: " + manifest["message_id"],
] + extra + [
    "Subject: =?UTF-8?Q?large_%s_Gr=C3=B6=C3=9Fe?=" % tag,
    "X-Large-Tag: " + tag,
    "X-Mailer: m365relay large test",
    "References: <earlier.%s@e2e.test>" % tag,
    "MIME-Version: 1.0",
]
for h in extra:
    k, _, v = h.partition(":")
    manifest["headers"][k.strip()] = v.strip()

def part_one(total, b):
    """text/plain + one PDF in multipart/mixed, boundary b; fill total"""
    w("Content-Type: multipart/mixed; boundary=\"%s\"\r\n\r\n" % b)
    w("This is a multi-part message in MIME format.\r\n")
    w("--%s\r\nContent-Type: text/plain; charset=utf-8\r\n"
      "Content-Transfer-Encoding: quoted-printable\r\n\r\n" % b)
    w(qp_hard(text_body("large-text-" + tag)) + "\r\n")
    name = "scan-%s.pdf" % tag
    w("--%s\r\nContent-Type: application/pdf; name=\"%s\"\r\n"
      "Content-Transfer-Encoding: base64\r\n"
      "Content-Disposition: attachment; filename=\"%s\"\r\n\r\n" % (b, name, name))
    n = b64_fit(total - written - len(b) - 8)
    sha, n = b64_stream(n, b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", b"\n%%EOF\n")
    att(name, "application/pdf", sha, n)
    w("--%s--\r\n" % b)
    manifest["body"] = {"type": "text", "markers": ["large-text-" + tag,
                                                    "Grüße aus Köln"]}

if kind == "one":
    w("\r\n".join(header) + "\r\n")
    part_one(size, "=_one_" + tag)
elif kind == "signed":
    b = "=_signed_" + tag
    w("\r\n".join(header) + "\r\n")
    w("Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\";"
      " micalg=sha-256;\r\n boundary=\"%s\"\r\n\r\n"
      "This is an S/MIME signed message\r\n\r\n--%s\r\n" % (b, b))
    part_one(size - 4096, "=_inner_" + tag)
    w("\r\n--%s\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n"
      "Content-Transfer-Encoding: base64\r\n"
      "Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n" % b)
    b64_stream(2048)
    w("\r\n--%s--\r\n" % b)
    manifest["attachments"] = []
elif kind == "several":
    bm, br, ba = "=_mixed_" + tag, "=_related_" + tag, "=_alt_" + tag
    cid = "logo.%s@e2e.test" % tag
    w("\r\n".join(header) + "\r\n")
    w("Content-Type: multipart/mixed; boundary=\"%s\"\r\n\r\n" % bm)
    w("This is a multi-part message in MIME format.\r\n")
    w("--%s\r\nContent-Type: multipart/related; type=\"multipart/alternative\";"
      " boundary=\"%s\"\r\n\r\n" % (bm, br))
    w("--%s\r\nContent-Type: multipart/alternative; boundary=\"%s\"\r\n\r\n" % (br, ba))
    w("--%s\r\nContent-Type: text/plain; charset=utf-8\r\n"
      "Content-Transfer-Encoding: quoted-printable\r\n\r\n" % ba)
    w(qp_hard(text_body("large-text-" + tag)) + "\r\n")
    w("--%s\r\nContent-Type: text/html; charset=utf-8\r\n"
      "Content-Transfer-Encoding: quoted-printable\r\n\r\n" % ba)
    w(qp_hard(html_body("large-html-" + tag, cid)) + "\r\n")
    w("--%s--\r\n\r\n" % ba)
    # the inline image: 4 % of the message
    w("--%s\r\nContent-Type: image/png; name=\"logo.png\"\r\n"
      "Content-Transfer-Encoding: base64\r\nContent-ID: <%s>\r\n"
      "Content-Disposition: inline; filename=\"logo.png\"\r\n\r\n" % (br, cid))
    sha, n = b64_stream(b64_fit(size * 4 // 100), b"\x89PNG\r\n\x1a\n")
    att("logo.png", "image/png", sha, n, True, cid)
    w("--%s--\r\n\r\n" % br)
    # a CSV in quoted-printable: 8 % of the message
    csv_name = "Daten \u00e4 %s.csv" % tag
    w("--%s\r\nContent-Type: text/csv; charset=utf-8;\r\n name=\"%s\"\r\n"
      "Content-Transfer-Encoding: quoted-printable\r\n"
      "Content-Disposition: attachment;\r\n filename=\"%s\"\r\n\r\n"
      % (bm, "=?UTF-8?B?%s?=" % base64.b64encode(csv_name.encode()).decode(),
         "=?UTF-8?B?%s?=" % base64.b64encode(csv_name.encode()).decode()))
    want, rows, n = size * 8 // 100, [], 0
    rows.append("id;name;amount;note\r\n".encode())
    n = len(rows[0])
    i = 0
    while n < want * 9 // 10:
        i += 1
        r = ("%d;M\u00fcller %d;%d,%02d \u20ac;=%d.%d sum, tab\there\r\n"
             % (i, rnd.randrange(1000), rnd.randrange(10000), i % 100, i, i % 7)).encode()
        if i % 50 == 0:
            r = b"." + r
        rows.append(r)
        n += len(r)
    data = b"".join(rows)
    w(qp_binary(data) + b"\r\n")
    att(csv_name, "text/csv", hashlib.sha256(data).hexdigest(), len(data))
    # a message/rfc822 part without a file name: 4 % of the message
    inner_subj = "Forwarded %s" % tag
    lines = ["From: Carol <carol@example.org>", "To: bob@contoso.test",
             "Subject: " + inner_subj, "Date: Sun, 01 Jun 2025 09:00:00 +0200",
             "Message-ID: <inner.%s@e2e.test>" % tag, "MIME-Version: 1.0",
             "Content-Type: text/plain; charset=us-ascii", "", "Inner body."]
    want = size * 4 // 100
    j, have = 0, sum(len(x) + 2 for x in lines)
    while have < want:
        j += 1
        lines.append(("." if j % 40 == 0 else "") +
                     "inner line %07d %s" % (j, "abcdefghij" * 5))
        have += len(lines[-1]) + 2
    inner = ("\r\n".join(lines) + "\r\n").encode()
    w("--%s\r\nContent-Type: message/rfc822\r\n\r\n" % bm)
    w(inner + b"\r\n")
    att(inner_subj + ".eml", "message/rfc822",
        hashlib.sha256(inner).hexdigest(), len(inner))
    # the PDF: the rest
    pdf_name = "Bericht \u00dcbersicht %s.pdf" % tag
    w("--%s\r\nContent-Type: application/pdf\r\n"
      "Content-Transfer-Encoding: base64\r\n"
      "Content-Disposition: attachment;\r\n"
      " filename*=UTF-8''Bericht%%20%%C3%%9Cbersicht%%20%s.pdf\r\n\r\n" % (bm, tag))
    n = b64_fit(size - written - len(bm) - 8)
    sha, n = b64_stream(n, b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n", b"\n%%EOF\n")
    att(pdf_name, "application/pdf", sha, n)
    w("--%s--\r\n" % bm)
    manifest["body"] = {"type": "html", "markers": ["large-html-" + tag,
                                                    "Grüße aus Köln",
                                                    "cid:" + cid]}
else:
    sys.exit("large_gen: unknown kind " + kind)
out.close()
manifest["size"] = written
json.dump(manifest, open(path + ".json", "w"), indent=1, ensure_ascii=False)
PYEOF
}

# large_smtp PORT FROM RCPTS FILE [SIZE] - see above
large_smtp() {
    "$PYTHON" - "$@" <<'PYEOF'
import re, smtplib, sys
port, frm, rcpts, path = int(sys.argv[1]), sys.argv[2], sys.argv[3].split(","), sys.argv[4]
size = sys.argv[5] if len(sys.argv) > 5 else None
def done(code, text, rc):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = " ".join(text.split())
    with open(path + ".smtp", "w") as f:
        f.write("%d %s\n" % (code, text))
    m = re.search(r"queued as ([0-9A-Za-z]+)", text)
    if m and rc == 0:
        print(m.group(1))
    sys.exit(rc)
try:
    s = smtplib.SMTP("127.0.0.1", port, timeout=1200)
    s.ehlo("client.e2e.test")
    opts = ["SIZE=%s" % size] if size else []
    code, text = s.mail(frm, opts)
    if path == "-":
        print(code, " ".join(text.decode("utf-8", "replace").split()))
        s.rset()
        s.quit()
        sys.exit(0 if code == 250 else 1)
    if code != 250:
        done(code, text, 1)
    for r in rcpts:
        code, text = s.rcpt(r)
        if code not in (250, 251):
            done(code, text, 1)
    with open(path, "rb") as f:
        data = f.read()
    code, text = s.data(data)
    try:
        s.quit()
    except Exception:
        pass
    done(code, text, 0 if code == 250 else 1)
except smtplib.SMTPResponseException as e:
    done(e.smtp_code, e.smtp_error, 1)
except (OSError, smtplib.SMTPException) as e:
    done(0, "client error: %s" % e, 1)
PYEOF
}

# large_sent_count MANIFEST - recorded messages with its Message-ID
large_sent_count() {
    emu_ctl GET /_emu/sent | "$PYTHON" -c '
import json, sys
mid = json.load(open(sys.argv[1]))["message_id"].strip("<>").lower()
print(sum(1 for r in json.load(sys.stdin)
          if str(r.get("message_id") or "").strip().strip("<>").lower() == mid))' "$1"
}

# large_sent_ge MANIFEST N - at least N such messages arrived
large_sent_ge() {
    [ "$(large_sent_count "$1")" -ge "$2" ]
}

# large_wait_sent MANIFEST N SECS - wait until N such messages arrived
large_wait_sent() {
    wait_until "$3" large_sent_ge "$1" "$2" && return 0
    echo "  $(large_sent_count "$1") of $2 messages with Message-ID $(json_eval 'd["message_id"]' <"$1")" >&2
    return 1
}

# large_flush_until FLUSH MANIFEST N SECS - run FLUSH (a queue run)
# every 2 s until N such messages arrived
large_flush_until() {
    local i
    for ((i = 0; i < $4; i += 2)); do
        large_sent_ge "$2" "$3" && return 0
        "$1"
        sleep 2
    done
    large_sent_ge "$2" "$3"
}

# large_verify MANIFEST [RCPTS [NAME=VALUE...]] - see above
large_verify() {
    emu_ctl GET /_emu/sent >"$T/large-sent.json" || { echo "  cannot read /_emu/sent" >&2; return 1; }
    MIMEWALK_DIR=$top_srcdir/tests "$PYTHON" - "$1" "$T/large-sent.json" "${2:-}" "${@:3}" <<'PYEOF'
import base64, binascii, email.header, email.parser, email.policy, email.utils
import hashlib, json, os, sys

man = json.load(open(sys.argv[1]))
recs = json.load(open(sys.argv[2]))
for kv in sys.argv[4:]:
    k, _, v = kv.partition("=")
    man["headers"][k] = v
want_rcpts = sorted(a.strip().lower() for a in sys.argv[3].split(",") if a.strip())
errors = []
def err(s):
    errors.append(s)
def norm_id(s):
    return str(s or "").strip().strip("<>").lower()

mid = norm_id(man["message_id"])
mine = [r for r in recs if norm_id(r.get("message_id")) == mid]
if len(mine) != 1:
    print("  %d records with Message-ID %s, want 1" % (len(mine), man["message_id"]), file=sys.stderr)
    sys.exit(1)
rec = mine[0]
if rec.get("form") != "draft":
    err("record form %r, want 'draft' (sent through a draft)" % rec.get("form"))
if want_rcpts and sorted(a.lower() for a in rec.get("recipients", [])) != want_rcpts:
    err("recipients %s, want %s" % (sorted(rec.get("recipients", [])), want_rcpts))

# --- attachments as the emulator received them (sha256 of the bytes)
def key(a):
    return (a["name"], a["sha256"])
got = rec.get("attachments") or []
want = man["attachments"]
if len(got) != len(want):
    err("%d attachments, want %d: %s" % (len(got), len(want),
        [(a.get("name"), a.get("size")) for a in got]))
for w in want:
    m = [a for a in got if a.get("sha256") == w["sha256"]]
    if not m:
        err("attachment %r (%d bytes, sha256 %s...): no received attachment has its bytes"
            % (w["name"], w["size"], w["sha256"][:12]))
        continue
    a = m[0]
    if a.get("name") != w["name"]:
        err("attachment %r arrived named %r" % (w["name"], a.get("name")))
    if a.get("size") != w["size"]:
        err("attachment %r size %r, want %d" % (w["name"], a.get("size"), w["size"]))
    if str(a.get("contentType", "")).split(";")[0].strip().lower() != w["contentType"]:
        err("attachment %r type %r, want %s" % (w["name"], a.get("contentType"), w["contentType"]))
    if bool(a.get("isInline")) != w["isInline"]:
        err("attachment %r isInline %r, want %r" % (w["name"], a.get("isInline"), w["isInline"]))
    if w["contentId"] and norm_id(a.get("contentId")) != norm_id(w["contentId"]):
        err("attachment %r contentId %r, want %r" % (w["name"], a.get("contentId"), w["contentId"]))
for a in rec.get("dropped_attachments") or []:
    err("attachment %r was dropped (added to a MIME draft)" % a.get("name"))
for s in rec.get("open_upload_sessions") or []:
    err("upload session %s was still open at the send" % s)

# --- the MIME the recipients get: header, text, parts (streamed)
path = rec.get("eml_path")
f = open(path, "rb")
head = []
for line in f:
    if line in (b"\r\n", b"\n"):
        break
    head.append(line)
hdr = email.parser.BytesParser(policy=email.policy.default).parsebytes(b"".join(head) + b"\r\n")

def addrs(v):
    return sorted((n, a.lower()) for n, a in email.utils.getaddresses([str(v or "")]))
for name, value in man["headers"].items():
    if name.lower() in ("from", "to", "cc", "reply-to"):
        if addrs(hdr.get(name)) != addrs(value):
            err("%s: %r, want %r" % (name, str(hdr.get(name)), value))
    elif name.lower() == "bcc":
        pass
    elif str(hdr.get(name) or "").strip() != value:
        err("%s: %r, want %r" % (name, str(hdr.get(name)), value))
if hdr.get("Bcc") is not None:
    err("the recipients see a Bcc: header: %r" % str(hdr.get("Bcc")))
if str(hdr.get("Subject")) != man["subject"]:
    err("Subject: %r, want %r" % (str(hdr.get("Subject")), man["subject"]))
if norm_id(hdr.get("Message-ID")) != mid:
    err("Message-ID: %r, want %s" % (str(hdr.get("Message-ID")), man["message_id"]))
for name, value in man["x_headers"].items():
    if str(hdr.get(name) or "").strip() != value:
        err("%s: %r, want %r" % (name, hdr.get(name), value))
if hdr.get("Date") is None:
    err("no Date: header")

# the leaf parts, streamed (tests/mimewalk.py), texts kept
sys.path.insert(0, os.environ["MIMEWALK_DIR"])
import mimewalk
leaves = list(mimewalk.walk(
    f, hdr, lambda h: h.get_content_maintype() == "text"
    and h.get_content_disposition() != "attachment", trim_eof=True))

texts = [l for l in leaves if l.keep]
body = man["body"]
want_type = "text/" + ("html" if body["type"] == "html" else "plain")
cands = [l for l in texts if l.h.get_content_type() == want_type]
if not cands:
    err("no %s message text in the MIME the recipients get (parts: %s)"
        % (want_type, [l.h.get_content_type() for l in leaves]))
else:
    cs = cands[0].h.get_content_charset() or "us-ascii"
    txt = b"".join(cands[0].text).decode(cs, "replace")
    for mk in body["markers"]:
        if mk not in txt:
            err("the %s text lacks %r" % (want_type, mk))
for w in want:
    m = [l for l in leaves if l.sha.hexdigest() == w["sha256"]]
    if not m:
        err("attachment %r: no part of the delivered MIME decodes to its bytes" % w["name"])
        continue
    l = m[0]
    disp = l.h.get_content_disposition()
    if w["isInline"]:
        if disp != "inline":
            err("inline image %r: Content-Disposition %r in the delivered MIME" % (w["name"], disp))
        if norm_id(l.h.get("Content-ID")) != norm_id(w["contentId"]):
            err("inline image %r: Content-ID %r, want <%s>" % (w["name"], l.h.get("Content-ID"), w["contentId"]))
        if "multipart/related" not in l.parents:
            err("inline image %r is not in a multipart/related (parents %s)" % (w["name"], l.parents))
    elif disp != "attachment":
        err("attachment %r: Content-Disposition %r" % (w["name"], disp))
    if (l.h.get_filename() or "") != w["name"]:
        err("attachment %r: file name %r in the delivered MIME" % (w["name"], l.h.get_filename()))
for e in errors:
    print("  " + e, file=sys.stderr)
sys.exit(1 if errors else 0)
PYEOF
}

# large_drafts MB - drafts left in the Drafts folder of MB
large_drafts() {
    emu_drafts "$1"
}

# large_drafts_of MANIFEST - drafts (any mailbox) of the manifest's message
large_drafts_of() {
    emu_ctl GET /_emu/drafts | "$PYTHON" -c '
import json, sys
mid = json.load(open(sys.argv[1]))["message_id"].strip("<>").lower()
print(sum(1 for x in json.load(sys.stdin)
          if str(x.get("internetMessageId") or "").strip("<>").lower() == mid))' "$1"
}

# large_drafts_are MB N - the emulator holds N drafts in MB's Drafts folder
large_drafts_are() {
    local n
    n=$(large_drafts "$1")
    [ "$n" = "$2" ] && return 0
    echo "  $n drafts in $1, want $2" >&2
    return 1
}

# large_uploads_ok MANIFEST - the upload sessions of the manifest's message
# took every byte in ranges of 320 KiB multiples (the last one may be
# shorter) of at most 4 MiB, none was refused (an Authorization header
# would be), and each completed; prints the number of sessions
large_uploads_ok() {
    emu_ctl GET /_emu/sent >"$T/up-sent.json" && emu_ctl GET /_emu/uploads >"$T/uploads.json" ||
	return 1
    "$PYTHON" - "$1" "$T/up-sent.json" "$T/uploads.json" <<'EOF'
import json, sys
man = json.load(open(sys.argv[1]))
mid = man["message_id"].strip("<>").lower()
rec = [r for r in json.load(open(sys.argv[2]))
       if str(r.get("message_id") or "").strip("<>").lower() == mid]
if len(rec) != 1:
    sys.exit("  %d records" % len(rec))
ups = [u for u in json.load(open(sys.argv[3])) if u.get("message") == rec[0].get("draft_id")]
errs = []
for u in ups:
    ch = u.get("chunks") or []
    if u.get("state") != "complete":
        errs.append("session %s state %s" % (u["name"], u.get("state")))
    if sum(ch) != u.get("size"):
        errs.append("session %s: %d of %d bytes" % (u["name"], sum(ch), u.get("size")))
    for c in ch[:-1]:
        if c % 327680 or c > 4194304:
            errs.append("session %s: range of %d bytes" % (u["name"], c))
    if ch and ch[-1] > 4194304:
        errs.append("session %s: last range of %d bytes" % (u["name"], ch[-1]))
    if u.get("refused"):
        errs.append("session %s: refused requests %s" % (u["name"], u["refused"]))
big = [a for a in man["attachments"] if a["size"] >= 3000000]
if len(ups) != len(big):
    errs.append("%d upload sessions, want %d (one per attachment of 3 MB or more)" % (len(ups), len(big)))
for e in errs:
    print("  " + e, file=sys.stderr)
print(len(ups))
sys.exit(1 if errs else 0)
EOF
}

# large_faults_gone - the emulator holds no unconsumed fault
large_faults_gone() {
    [ "$(emu_ctl GET /_emu/faults | json_eval 'len(d) if isinstance(d, list) else len(d.get("faults", []))')" = 0 ]
}

# large_eml_drop MANIFEST - delete the emulator's .eml of the message (disk)
large_eml_drop() {
    emu_ctl GET /_emu/sent | "$PYTHON" -c '
import json, os, sys
mid = json.load(open(sys.argv[1]))["message_id"].strip("<>").lower()
for r in json.load(sys.stdin):
    if str(r.get("message_id") or "").strip("<>").lower() == mid and r.get("eml_path"):
        try:
            os.unlink(r["eml_path"])
        except OSError:
            pass' "$1"
}

# large_disk KB - at least KB free in $T
large_disk() {
    local avail
    avail=$(df -Pk "$T" | awk 'NR == 2 {print $4}')
    [ "${avail:-0}" -ge "$1" ] && return 0
    echo "  need $(($1 / 1024)) MB free in $T, have $((${avail:-0} / 1024)) MB" >&2
    return 1
}

# large_conf FILE HOST - see above
large_conf() {
    sed -i -e "s|^\[global\]\$|[global]\nupload_hosts = $2\nupload_budget = 1024M|" \
        -e 's|^senders = @contoso.test$|&\nmax_message_size = 150M\nlarge_messages = yes|' "$1"
}

# large_account FILE NAME CLIENT_ID SENDERS [LINE...] - see above
large_account() {
    local file=$1 name=$2 id=$3 senders=$4 line
    shift 4
    {
        printf '\n[account %s]\ntenant = %s\nclient_id = %s\nauth = secret\n' "$name" "$EMU_TENANT" "$id"
        printf 'secret_file = %s\nmailbox = alice@contoso.test\nsenders = %s\n' "$T/secret" "$senders"
        for line in "$@"; do printf '%s\n' "$line"; done
    } >>"$file"
}

# large_app_roles CLIENT_ID ROLE... - see above
large_app_roles() {
    local id=$1 roles
    shift
    roles=$(printf '"%s", ' "$@")
    emu_ctl POST /_emu/config "{\"apps\": {\"$id\": {\"secret\": \"$(cat "$T/secret")\", \"roles\": [${roles%, }]}}}" >/dev/null &&
        emu_ctl POST /_emu/expire "{\"client_id\": \"$id\"}" >/dev/null
}

# large_log_has ERE - a line of the relay's (or milter's) log matches
large_log_has() {
    grep -Eq -- "$1" "$T/relay.log"
}

# large_postfix - the private Postfix takes messages up to 200 MB, and
# local(8) delivers its bounces of them
large_postfix() {
    postconf -c "$PF_ETC" -e "message_size_limit = 209715200" "mailbox_size_limit = 0"
}
