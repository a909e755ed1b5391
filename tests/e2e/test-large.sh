#!/bin/bash
#
# test-large.sh - large messages (issue 10): m365-relay sends a message
# over Graph's 4 MB request limit through a draft, its attachments and
# upload sessions, against the emulator
#
# Each case runs m365-relay as Postfix pipe(8) would and checks the exit
# code and first output line, what the emulator received (the rebuilt
# message: GET /_emu/sent and its .eml, the upload sessions and their
# ranges: GET /_emu/uploads, the drafts left: GET /_emu/drafts) and the
# relay's log.  The decoded content of every attachment must arrive
# byte for byte (mime_parts compares SHA-256 of the decoded parts).
#
# Account "app" (client secret, mailbox bob@contoso.test) gets
# large_messages = yes; upload_hosts names the emulator's upload host
# (localhost:PORT: the emulator answers an upload session on another
# host name than Graph's 127.0.0.1).
#
# Run by "make check"; needs python3 and openssl.

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top_srcdir/tests/lib.sh"

relay_setup large
# Large messages for account app; uploads only to the emulator's host.
sed -i "s|^state_dir = .*|&\nupload_hosts = localhost:$EMU_PORT|" "$CONF"
sed -i '/^\[account app\]/a large_messages = yes' "$CONF"
# As root, state files go to a user that exists for the whole run (the
# default m365relay may come and go with other tests on this machine).
if [ "$(id -u)" = 0 ]; then
    sed -i "s|^state_dir = .*|&\nuser = nobody|" "$CONF"
fi

# ---------------------------------------------------------------- helpers

# gen FILE SPEC... - a MIME message from bob to big@example.net; SPEC is
# one part: text:SIZE (text/plain body), html:SIZE (HTML body that shows
# an inline image cid:img1), img:SIZE (inline PNG with Content-ID img1),
# pdf:SIZE (attachment, RFC 2231 name), qp:SIZE (quoted-printable text
# attachment), eml:SIZE (message/rfc822), bin:SIZE (octet-stream);
# bytes are pseudo-random with a fixed seed.  SIZE takes K and M.
gen() {
    "$PYTHON" - "$@" <<'PYEOF'
import random, sys
from email.message import EmailMessage
from email import policy

out, specs = sys.argv[1], sys.argv[2:]
rnd = random.Random(10)
def size(s):
    m = {"K": 1024, "M": 1024 * 1024}
    return int(float(s[:-1]) * m[s[-1]]) if s[-1] in m else int(s)
def data(n):
    return rnd.randbytes(n)
def text(n):
    line = "The quick brown fox jumps over the lazy dog 0123456789 \u00e4\u00f6\u00fc.\n"
    return (line * (n // len(line) + 1))[:n]

msg = EmailMessage(policy=policy.SMTP)
msg["From"] = "Bob Sender <bob@contoso.test>"
msg["To"] = "Big Receiver <big@example.net>"
msg["Subject"] = "Gro\u00dfe Nachricht " + " ".join(specs)  # non-ASCII: RFC 2047 on the way back
msg["Message-ID"] = "<large-%s@contoso.test>" % out.rsplit("/", 1)[-1]
msg["Date"] = "Mon, 30 Nov 2026 10:00:00 +0000"
msg["X-Test-Header"] = "kept as an X- field"
msg["Importance"] = "high"
body = [s for s in specs if s.split(":")[0] in ("text", "html")]
plain = text(size(body[0].split(":")[1])) if body else "no body\n"
msg.set_content(plain)
for s in body:
    kind, n = s.split(":")
    if kind == "html":
        msg.add_alternative("<html><body><p>" + text(size(n)) +
                            "</p><img src=\"cid:img1\"></body></html>",
                            subtype="html")
for s in specs:
    kind, n = s.split(":")
    n = size(n)
    if kind == "img":
        html = msg.get_body(("html",))
        html.add_related(data(n), "image", "png", cid="<img1>",
                         filename="logo.png", disposition="inline")
    elif kind == "pdf":
        msg.add_attachment(data(n), "application", "pdf",
                           filename="Rechnung \u20ac 2026.pdf")
    elif kind == "bin":
        msg.add_attachment(data(n), "application", "octet-stream",
                           filename="data-%d.bin" % n)
    elif kind == "qp":
        msg.add_attachment(text(n), subtype="plain", cte="quoted-printable",
                           filename="notes.txt")
    elif kind == "eml":
        inner = EmailMessage()
        inner["From"] = "c@example.org"
        inner["Subject"] = "Forwarded report"
        inner.set_content(text(n))
        msg.add_attachment(inner, filename="forwarded.eml")
with open(out, "wb") as f:
    f.write(msg.as_bytes())
PYEOF
}

# attachments FILE - the attachment lines of mime_parts: sha256 size
# (type and name: Exchange rebuilds them; the bytes must be the same),
# without the message text parts
attachments() {
    mime_parts "$1" | awk '$3 != "text/plain" && $3 != "text/html" { print $1, $2 }' | sort
}

# sent EXPR - a Python expression over the recorded messages s
sent() {
    emu_ctl GET /_emu/sent | "$PYTHON" -c '
import json, sys
s = json.load(sys.stdin)
v = eval(sys.argv[1])
print(" ".join(map(str, v)) if isinstance(v, list) else v)' "$1"
}

# uploads EXPR - a Python expression over the upload sessions u
uploads() {
    emu_ctl GET /_emu/uploads | "$PYTHON" -c '
import json, sys
u = json.load(sys.stdin)
v = eval(sys.argv[1])
print(" ".join(map(str, v)) if isinstance(v, list) else v)' "$1"
}

# fresh - forget sent messages, stats, faults, drafts and upload sessions
fresh() {
    emu_reset
    emu_ctl POST /_emu/reset '{"mailboxes": true}' >/dev/null
}

# estat KEY - a counter of /_emu/stats
estat() {
    emu_stat "$1"
}

# expect_rc MSG WANT - the exit code of the last relay run
expect_rc() {
    if [ "$rc" = "$2" ]; then
	ok "$1: exit $rc"
    else
	bad "$1: exit $rc, want $2 (output: $out)"
    fi
}

# same_attachments MSG ORIG - the last sent message has ORIG's attachments
same_attachments() {
    local eml
    eml=$(emu_sent_mime -1)
    if [ -n "$eml" ] && [ "$(attachments "$2")" = "$(attachments "$eml")" ]; then
	ok "$1: every attachment arrived byte for byte"
    else
	bad "$1: attachments differ: sent [$(attachments "$2" | tr '\n' ' ')], got [$(attachments "$eml" | tr '\n' ' ')]"
    fi
}

# ----------------------------------------------- a. 3.5 MB, several parts

fresh
gen "$T/a.eml" html:20K img:40K pdf:3300K qp:30K eml:10K
relay "$T/a.eml" -c "$CONF" -q QA -f bob@contoso.test -- big@example.net
expect_rc "a: 3.5 MB with text+HTML, inline image, PDF, text, .eml" 0
t_eq "a: sent once" "$(emu_sent_count)" 1
t_eq "a: as a draft" "$(sent 's[-1]["form"]')" draft
t_eq "a: recipient" "$(sent 's[-1]["recipients"]')" big@example.net
same_attachments "a" "$T/a.eml"
EML=$(emu_sent_mime -1)
t_eq "a: Subject intact" "$(mime_header "$EML" Subject)" "$(mime_header "$T/a.eml" Subject)"
t_eq "a: Message-ID intact" "$(mime_header "$EML" Message-ID)" "$(mime_header "$T/a.eml" Message-ID)"
t_eq "a: X- header kept" "$(mime_header "$EML" X-Test-Header)" "kept as an X- field"
t_eq "a: Importance kept" "$(mime_header "$EML" Importance)" "high"
t_match "a: From with its name" "$(mime_header "$EML" From)" 'Bob Sender <bob@contoso\.test>'
t_match "a: inline image still inline, with its Content-ID" \
    "$(mime_parts "$EML" | awk '$6 == "<img1>" || $6 == "img1" { print $4 }')" '^inline$'
t_match "a: PDF name decoded" "$(mime_parts "$EML" | awk '$3 == "application/pdf" { print $5 }')" \
    'Rechnung_€_2026\.pdf'
t_match "a: forwarded message as .eml" "$(sent '[a["name"] for a in s[-1]["attachments"] if a["contentType"].startswith("message/rfc822")]')" \
    'forwarded\.eml'
t_eq "a: the PDF went by upload session" "$(uploads 'len(u)')" 1
t_eq "a: no draft left" "$(emu_drafts bob@contoso.test)" 0
t_match "a: logged as sent" "$(grep QA "$LOG")" \
    'to=<big@example\.net>, relay=.*dsn=2\.0\.0, status=sent \(202 Accepted.*from a draft'

# -------------------------------------- b. 10 MB, several upload sessions

fresh
gen "$T/b.eml" text:5K pdf:4M bin:3500K bin:2M img:10K html:5K
relay "$T/b.eml" -c "$CONF" -q QB -f bob@contoso.test -- big@example.net
expect_rc "b: 10 MB with several attachments" 0
t_eq "b: sent once" "$(emu_sent_count)" 1
same_attachments "b" "$T/b.eml"
t_eq "b: two upload sessions (4 MB and 3.5 MB), the 2 MB one posted" \
    "$(uploads 'sorted(x["size"] for x in u)')" "3584000 4194304"
t_eq "b: every range but the last of a session a multiple of 320 KiB, under 4 MiB" \
    "$(uploads 'all(c % 327680 == 0 and c < 4194304 for x in u for c in x["chunks"][:-1]) and all(x["chunks"][-1] <= 4194304 for x in u)')" True
t_eq "b: ranges cover each file" "$(uploads 'all(sum(x["chunks"]) == x["size"] for x in u)')" True
t_eq "b: uploads without Authorization" "$(uploads '[r for x in u for r in x["refused"]]')" ""
t_eq "b: no draft left" "$(emu_drafts bob@contoso.test)" 0

# ------------------------------ c. signed over the limit: explained 5.3.4

fresh
"$PYTHON" - "$T/c.eml" <<'PYEOF'
import random, sys
r = random.Random(3)
b64 = __import__("base64").encodebytes(r.randbytes(5 * 1024 * 1024)).decode()
sys.stdout = open(sys.argv[1], "w")
print("From: bob@contoso.test\nTo: big@example.net\nSubject: signed\n"
      "MIME-Version: 1.0\nContent-Type: multipart/signed; "
      "protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=s\n\n"
      "--s\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\n"
      + b64 + "--s\nContent-Type: application/pkcs7-signature\n"
      "Content-Transfer-Encoding: base64\n\nAAAA\n--s--")
PYEOF
relay "$T/c.eml" -c "$CONF" -q QC -f bob@contoso.test -- big@example.net
expect_rc "c: signed 5 MB message" 65
t_match "c: 5.3.4 says why and what to do" "$first" \
    '^5\.3\.4 .*multipart/signed.*signature.*(without the signature|smaller)'
t_eq "c: no draft requested" "$(estat draft_requests)" 0

# ---------------------------- d. over max_message_size: before any request

fresh
sed 's/^large_messages = yes$/&\nmax_message_size = 6M/' "$CONF" >"$T/small.conf"
gen "$T/d.eml" text:1K bin:7M
relay "$T/d.eml" -c "$T/small.conf" -q QD -f bob@contoso.test -- big@example.net
expect_rc "d: over max_message_size" 65
t_match "d: 5.3.4 names the limit" "$first" '^5\.3\.4 message size [0-9]+ exceeds max_message_size 6291456 of account app'
t_eq "d: not a single request (no token either)" "$(estat requests)" 0

# --------------- e. a range fails with 503: deferred, draft deleted, retry

fresh
gen "$T/e.eml" text:5K pdf:4M bin:3500K bin:2M img:10K html:5K
emu_fault '{"match": "upload", "status": 503, "after": 1}'
relay "$T/e.eml" -c "$CONF" -q QE -f bob@contoso.test -- big@example.net
expect_rc "e: 503 on the second range" 75
t_match "e: 4.x.x, nothing sent" "$first" '^4\.[0-9]+\.[0-9]+ .*nothing was sent'
t_eq "e: nothing sent" "$(emu_sent_count)" 0
t_eq "e: the draft was deleted" "$(emu_drafts bob@contoso.test)" 0
relay "$T/e.eml" -c "$CONF" -q QE -f bob@contoso.test -- big@example.net
expect_rc "e: the retry" 0
t_eq "e: sent exactly once" "$(emu_sent_count)" 1
same_attachments "e" "$T/e.eml"

# ------------- f. kill -9 during the upload: the next run removes the draft

# kill_during_upload ID MSG - start the relay, kill -9 it while its second
# range hangs (a slow fault), leave its draft behind
kill_during_upload() {
    local pid i
    emu_fault '{"match": "upload", "action": "slow", "delay": 20, "after": 1}'
    "$RELAY" -c "$CONF" -q "$1" -f bob@contoso.test -- big@example.net \
	<"$2" >"$T/out" 2>&1 &
    pid=$!
    for ((i = 0; i < 200; i++)); do
	[ "$(uploads 'sum(len(x["chunks"]) for x in u)' 2>/dev/null)" -ge 1 ] \
	    2>/dev/null && break
	sleep 0.1
    done
    sleep 0.5
    kill -9 "$pid"
    wait "$pid" 2>/dev/null
    emu_ctl DELETE /_emu/faults >/dev/null
}

fresh
gen "$T/f.eml" text:5K pdf:4M bin:3500K
kill_during_upload QF "$T/f.eml"
t_eq "f: kill -9 left a draft" "$(emu_drafts bob@contoso.test)" 1
t_eq "f: nothing sent" "$(emu_sent_count)" 0
relay "$T/f.eml" -c "$CONF" -q QF -f bob@contoso.test -- big@example.net
expect_rc "f: the retry" 0
t_eq "f: the orphan draft is gone" "$(emu_drafts bob@contoso.test)" 0
t_eq "f: sent exactly once" "$(emu_sent_count)" 1
t_match "f: the removal is logged" "$(grep QF "$LOG")" 'removed the unsent draft of an earlier attempt'

# ---------- g. an orphan of another message goes with the next large one

fresh
gen "$T/g1.eml" text:2K pdf:5M
kill_during_upload QG1 "$T/g1.eml"
t_eq "g: kill -9 left a draft" "$(emu_drafts bob@contoso.test)" 1
gen "$T/g2.eml" html:20K img:40K pdf:3300K
relay "$T/g2.eml" -c "$CONF" -q QG2 -f bob@contoso.test -- big@example.net
expect_rc "g: another message from the mailbox" 0
t_eq "g: the other message's orphan draft is gone" "$(emu_drafts bob@contoso.test)" 0
relay "$T/g1.eml" -c "$CONF" -q QG1 -f bob@contoso.test -- big@example.net
expect_rc "g: the retry of the first" 0
t_eq "g: each sent once" "$(sent 'sorted(x["subject"] for x in s)')" \
    "$(printf '%s\n' "$(mime_header "$T/g2.eml" Subject)" "$(mime_header "$T/g1.eml" Subject)" | sort | tr '\n' ' ' | sed 's/ $//')"

# -------- h. the send went through but the answer was lost: not sent again

fresh
gen "$T/h.eml" text:1K pdf:3500K
emu_fault '{"match": "send", "action": "reset_after_body", "deliver": true}'
relay "$T/h.eml" -c "$CONF" -q QH -f bob@contoso.test -- big@example.net
expect_rc "h: connection lost after the send: the draft tells it went" 0
t_match "h: logged" "$(grep QH "$LOG")" 'no longer a draft: it was sent'
t_eq "h: sent once" "$(emu_sent_count)" 1

# The same, and the question fails too: deferred; the retry asks again.
fresh
gen "$T/h2.eml" text:1K pdf:3500K
emu_fault '{"match": "send", "action": "reset_after_body", "deliver": true}'
emu_fault '{"match": "message", "status": 503}'
relay "$T/h2.eml" -c "$CONF" -q QH2 -f bob@contoso.test -- big@example.net
expect_rc "h2: connection lost after the send, the check fails" 75
t_match "h2: may have gone through" "$first" '^4\.4\.2 .*may have'
t_eq "h2: sent (by the emulator)" "$(emu_sent_count)" 1
relay "$T/h2.eml" -c "$CONF" -q QH2 -f bob@contoso.test -- big@example.net
expect_rc "h2: the retry" 0
t_match "h2: the retry finds it sent" "$(grep QH2 "$LOG" | tail -n 1)" \
    'already sent by an earlier attempt.*no longer a draft'
t_eq "h2: still sent once" "$(emu_sent_count)" 1
relay "$T/h2.eml" -c "$CONF" -q QH2 -f bob@contoso.test -- big@example.net
expect_rc "h2: a third run" 0
t_match "h2: the ledger says sent" "$(grep QH2 "$LOG" | tail -n 1)" 'already sent at .*send ledger'
t_eq "h2: still sent once" "$(emu_sent_count)" 1

# ---------------------- i. no Mail.ReadWrite: deferred, with the remedy

fresh
emu_ctl POST /_emu/config "{\"apps\": {\"$EMU_APP_SECRET\": {\"roles\": [\"Mail.Send\"]}}}" >/dev/null
rm -f "$T"/state/tokens/app.*
gen "$T/i.eml" text:1K pdf:3500K
relay "$T/i.eml" -c "$CONF" -q QI -f bob@contoso.test -- big@example.net
expect_rc "i: no Mail.ReadWrite" 75
t_match "i: 4.7.1 names the permission" "$first" '^4\.7\.1 .*application permission Mail\.ReadWrite'
t_eq "i: no draft left" "$(emu_drafts bob@contoso.test)" 0
emu_ctl POST /_emu/config "{\"apps\": {\"$EMU_APP_SECRET\": {\"roles\": [\"Mail.Send\", \"Mail.ReadWrite\"]}}}" >/dev/null
rm -f "$T"/state/tokens/app.*
relay "$T/i.eml" -c "$CONF" -q QI -f bob@contoso.test -- big@example.net
expect_rc "i: granted: the queue drains" 0

# -------------------- j. an upload URL on a host outside upload_hosts

fresh
sed "/^upload_hosts = /d" "$CONF" >"$T/nohost.conf"
gen "$T/j.eml" text:1K pdf:3500K
relay "$T/j.eml" -c "$T/nohost.conf" -q QJ -f bob@contoso.test -- big@example.net
expect_rc "j: uploadUrl on localhost, upload_hosts the default" 75
t_match "j: refused with the reason" "$first" '^4\.7\.0 refusing to upload to https://localhost:[0-9]+: .*upload_hosts'
t_eq "j: no byte uploaded" "$(estat upload_requests)" 0
t_eq "j: the draft was deleted" "$(emu_drafts bob@contoso.test)" 0
t_nomatch "j: no upload URL in the log" "$(cat "$LOG")" 'authtoken'

# ------------------------- k. createUploadSession answers 404 once

fresh
gen "$T/k.eml" text:1K pdf:3500K
emu_fault '{"match": "createUploadSession", "status": 404}'
relay "$T/k.eml" -c "$CONF" -q QK -f bob@contoso.test -- big@example.net
expect_rc "k: a transient 404 is retried" 0
t_eq "k: sent once" "$(emu_sent_count)" 1

# ------------------------------------------- l. large_messages = no

fresh
sed 's/^large_messages = yes$/large_messages = no/' "$CONF" >"$T/no.conf"
gen "$T/l.eml" text:1K pdf:3500K
relay "$T/l.eml" -c "$T/no.conf" -q QL -f bob@contoso.test -- big@example.net
expect_rc "l: large_messages = no" 65
t_match "l: 5.3.4 says so" "$first" '^5\.3\.4 .*large_messages = no'
t_eq "l: no request to Graph" "$(estat draft_requests)" 0

# ------------- m. the upload budget: waits instead of collecting 429s

fresh
emu_ctl POST /_emu/config '{"upload_budget": {"bytes": 5000000, "seconds": 30}}' >/dev/null
sed 's/^upload_hosts = .*/&\nupload_budget = 4M/' "$CONF" >"$T/pace.conf"
gen "$T/m.eml" text:1K bin:6M
start=$(date +%s)
relay "$T/m.eml" -c "$T/pace.conf" -q QM -f bob@contoso.test -- big@example.net
took=$(($(date +%s) - start))
expect_rc "m: 6 MB with a 4 MB budget per 30 s" 0
t_nomatch "m: no 429" "$(grep QM "$LOG")" 'throttled|429'
t_eq "m: the emulator never refused" "$(uploads '[r for x in u for r in x["refused"]]')" ""
t_eq "m: it waited for the budget (${took}s)" "$([ "$took" -ge 25 ] && echo yes)" yes
emu_ctl POST /_emu/config '{"upload_budget": null}' >/dev/null

# ------------------------------------ n. m365ctl test reports the path

fresh
"$CTL" -c "$CONF" test app >"$T/ctl.out" 2>&1
t_match "n: m365ctl test app: large messages on, proved by a draft" \
    "$(cat "$T/ctl.out")" 'ok +large: on: messages over 4 MB go through a draft \(created a draft in mailbox bob@contoso\.test and deleted it\)'
t_eq "n: the test draft is gone" "$(emu_drafts bob@contoso.test)" 0
emu_ctl POST /_emu/config "{\"apps\": {\"$EMU_APP_SECRET\": {\"roles\": [\"Mail.Send\"]}}}" >/dev/null
"$CTL" -c "$CONF" test app --fresh >"$T/ctl.out" 2>&1
t_match "n: without Mail.ReadWrite: FAIL naming it" "$(cat "$T/ctl.out")" \
    'FAIL large: messages over 4 MB cannot go through a draft: 4\.7\.1 .*application permission Mail\.ReadWrite'
emu_ctl POST /_emu/config "{\"apps\": {\"$EMU_APP_SECRET\": {\"roles\": [\"Mail.Send\", \"Mail.ReadWrite\"]}}}" >/dev/null
rm -f "$T"/state/tokens/app.*

# ------------- o. delegated, large_messages = auto: off without the scope

fresh
ctl_login "$T/login1.out" || bad "o: m365ctl login deleg"
t_nomatch "o: auto does not ask for Mail.ReadWrite" \
    "$(grep 'granted scopes' "$T/login1.out")" 'Mail\.ReadWrite'
t_match "o: login says large messages are deferred" "$(cat "$T/login1.out")" \
    'messages over 4 MB are deferred \(large_messages = auto and Mail\.ReadWrite was not granted\)'
"$CTL" -c "$CONF" test deleg >"$T/ctl.out" 2>&1
t_match "o: m365ctl test deleg: warn, off" "$(cat "$T/ctl.out")" 'warn large: off: large_messages = auto'
sed -e 's/^From: .*/From: Alice <alice@contoso.test>/' \
    -e 's/^Message-ID: <large-/Message-ID: <alice-/' "$T/l.eml" >"$T/p.eml"
relay "$T/p.eml" -c "$CONF" -q QO -f alice@contoso.test -- big@example.net
expect_rc "o: large message from the delegated account: deferred, not bounced" 75
t_match "o: 4.7.1 with the remedy" "$first" '^4\.7\.1 .*large_messages = auto.*large_messages = yes.*m365ctl login.*large_messages = no'

# ------------- p. delegated, large_messages = yes: the sign-in asks for it

fresh
sed -i '/^\[account deleg\]/a large_messages = yes' "$CONF"
relay "$T/p.eml" -c "$CONF" -q QP -f alice@contoso.test -- big@example.net
expect_rc "p: yes, but not signed in with the scope yet" 75
t_match "p: 4.7.1 says run m365ctl login" "$first" '^4\.7\.1 .*Mail\.ReadWrite.*m365ctl login deleg'
ctl_login "$T/login2.out" || bad "p: m365ctl login deleg"
t_match "p: yes asks for Mail.ReadWrite" "$(grep 'granted scopes' "$T/login2.out")" \
    'Mail\.ReadWrite'
t_match "p: login says large messages go through drafts" "$(cat "$T/login2.out")" \
    'messages over 4 MB go through a draft \(Mail\.ReadWrite granted\)'
relay "$T/p.eml" -c "$CONF" -q QP -f alice@contoso.test -- big@example.net
expect_rc "p: the queue drains" 0
t_eq "p: sent once, from alice's draft" "$(sent '[x["mailbox"] + ":" + x["form"] for x in s]')" "alice@contoso.test:draft"
same_attachments "p" "$T/p.eml"
"$CTL" -c "$CONF" test deleg >"$T/ctl.out" 2>&1
t_match "p: m365ctl test deleg: on" "$(cat "$T/ctl.out")" 'ok +large: on: messages over 4 MB go through a draft'

t_done
