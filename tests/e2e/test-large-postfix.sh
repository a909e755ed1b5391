#!/usr/bin/env bash
# test-large-postfix.sh - large messages (issue 10) end to end through a
# real, private Postfix:
#
#   SMTP -> Postfix (message_size_limit 200 MB) -> pipe(8) m365 transport
#     -> m365-relay -> the Microsoft 365 emulator: a JSON draft,
#        attachments, upload sessions on outlook.office.com, /send
#
# Messages of 3.5, 10, 35 and 150 MB (tests/large.sh: one PDF, or
# several attachments: text + HTML in multipart/alternative, an inline
# PNG named by cid: in multipart/related, a PDF with an RFC 2231 name, a
# quoted-printable CSV with an RFC 2047 name, a message/rfc822 part)
# each arrive exactly once, with the header fields a JSON draft keeps
# and every attachment byte for byte (sha256 of the decoded bytes, in
# the emulator's record and in the MIME the recipients get), the inline
# image inline with its Content-ID, upload ranges of 320 KiB multiples
# under 4 MiB.  Faults: 503 on the upload ranges (deferred, draft
# deleted, the retry sends once); kill -9 of m365-relay during an
# upload (the next delivery from that mailbox removes the orphan draft,
# the retry sends once); a 5 MB multipart/signed message (5.3.4 with
# the reason, in the maillog and the bounce); 160 MB (5.3.4 before any
# request); an app without Mail.ReadWrite (large_messages = yes:
# deferred 4.7.x with the remedy, delivered once it is granted; the
# same with large_messages = auto, the default).
#
# LARGE_CASES=ERE runs only the size cases of section 1 whose names
# match (e.g. LARGE_CASES='3.5MB'); the fault cases always run.
#
# Needs root (namespaces, a private Postfix, useradd) and postfix;
# about 1.2 GB free in $TMPDIR (the 150 MB message, Postfix's queue
# file, the relay's spool, the emulator's copy); every file is deleted
# as soon as it was checked.  Without root it is skipped (exit 77).

# shellcheck disable=SC2317  # helper functions run through check()
set -u

. "$(dirname "$0")/ns.sh"
e2e_start test-large-postfix.sh "private Postfix, namespaces, useradd" \
    "run tests/run-all.sh as root: it installs postfix and the rest (CI does)" \
    postfix postqueue postsuper postconf runuser pgrep

# ---- inside the namespaces
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/postfix.sh"
. "$top_srcdir/tests/large.sh"

t_init large-postfix
trap 'pf_stop; t_cleanup' EXIT
e2e_private_hosts
T0=$(date +%s)

RUSER=m365test
NOPERM_ID=11111111-0000-0000-0000-0000000000a1

# 150 MB message, queue file, spool, the emulator's copy: 1.3 GB
check "1.3 GB free in $T" large_disk 1300000
[ "$FAIL" = 0 ] || t_done

# ---- emulator and configuration
e2e_conf "$RUSER" || { bad "emulator starts"; t_done; }
conf_real_hosts "$CONF"
# Uploads go to outlook.office.com on the emulator's port; no pacing
# (it has its own test); account app (the default) sends 150 MB
# through drafts.  Two accounts of an app without Mail.ReadWrite, one
# of the app that has it with large_messages = auto (the default).
large_conf "$CONF" "outlook.office.com:$EMU_PORT"
large_account "$CONF" noperm "$NOPERM_ID" @noperm.test "large_messages = yes"
large_account "$CONF" noauto "$NOPERM_ID" @noauto.test
large_account "$CONF" auto "$EMU_APP_SECRET" @auto.test
large_app_roles "$NOPERM_ID" Mail.Send ||
    { bad "emulator: app without Mail.ReadWrite added"; t_done; }
e2e_user "$RUSER" || { bad "create user $RUSER"; t_done; }
check "m365-relay -n: configuration OK" \
    sh -c "runuser -u $RUSER -- '$RELAY' -c '$CONF' -n 2>&1 | grep -q 'configuration OK'"

# ---- Postfix, taking messages up to 200 MB
PF_RELAY=$RELAY PF_CONF=$CONF pf_setup "$T/pf" 2525 2526 ||
    { bad "private Postfix set up"; t_done; }
large_postfix || { bad "postconf message_size_limit"; t_done; }
pf_start || { bad "private Postfix starts"; t_done; }
ok "private Postfix (message_size_limit = 200 MB) listens on 127.0.0.1:2525"
M=$T/msg
mkdir -p "$M"

FROM_H=$LARGE_FROM TO_H=$LARGE_TO CC_H=$LARGE_CC RT_H=$LARGE_RT RCPTS=$LARGE_RCPTS

# ---- helpers

# hold_it QID - put QID on hold; true once it is in the hold queue
hold_it() {
    postsuper -c "$PF_ETC" -h "$1" >/dev/null 2>&1
    pf_queue_json | "$PYTHON" -c '
import json, sys
sys.exit(0 if any(json.loads(l).get("queue_id") == sys.argv[1] and
                  json.loads(l).get("queue_name") == "hold"
                  for l in sys.stdin if l.strip()) else 1)' "$1"
}

# bounce_has QID ERE - a bounce (DSN) about QID in the local maildir of
# $RUSER has "Status: 5.3.4" and text matching ERE (lines unfolded)
bounce_has() {
    "$PYTHON" - "$PF_DIR/mail/$RUSER" "$1" "$2" <<'PYEOF'
import glob, os, re, sys
for p in glob.glob(os.path.join(sys.argv[1], "new", "*")) + \
        glob.glob(os.path.join(sys.argv[1], "cur", "*")):
    m = open(p, "rb").read().decode("utf-8", "replace")
    if ("X-Postfix-Queue-ID: " + sys.argv[2]) in m and "Status: 5.3.4" in m \
            and re.search(sys.argv[3], " ".join(m.split())):
        sys.exit(0)
sys.exit(1)
PYEOF
}

# upload_stopped NAME - the upload session of attachment NAME took some
# ranges, then stopped (not complete)
upload_stopped() {
    emu_ctl GET /_emu/uploads | "$PYTHON" -c '
import json, sys
u = [x for x in json.load(sys.stdin) if x.get("name") == sys.argv[1]]
sys.exit(0 if u and u[0].get("chunks") and u[0].get("state") != "complete" else 1)' "$1"
}

# quiet_queue / release_queue - hold whatever waits in the queue (a case
# that counts the emulator's requests must not see retries of others),
# and release it
quiet_queue() {
    postsuper -c "$PF_ETC" -h ALL >/dev/null 2>&1
}
release_queue() {
    postsuper -c "$PF_ETC" -H ALL >/dev/null 2>&1
}

# done_or_failed MANIFEST QID - the message arrived, or Postfix gave up
# on this attempt (bounced or deferred: no use waiting)
done_or_failed() {
    large_sent_ge "$1" 1 ||
	grep -Eq -- "$2: to=<[^>]*>, relay=m365, .*status=(bounced|deferred)" "$PF_MAILLOG"
}

# large_submit FILE SENDER RCPTS - submit; sets qid (empty on failure)
large_submit() {
    qid=$(large_smtp 2525 "$2" "$3" "$1")
    [ -n "$qid" ] || sed 's/^/#   SMTP: /' "$1.smtp"
}

# secs SIZE - a wait in seconds for a message of SIZE bytes (>= 60)
secs() {
    echo $(( 60 + $1 * 2 / 1000000 ))
}

# one_case NAME KIND SIZE - generate, send, check, clean up (only the
# NAMEs matching the ERE $LARGE_CASES when that is set)
one_case() {
    local name=$1 kind=$2 size=$3 tag f t0 t1 n
    if [ -n "${LARGE_CASES:-}" ] && ! printf '%s\n' "$name" | grep -Eq -- "$LARGE_CASES"; then
	echo "# $name: skipped (LARGE_CASES)"
	return
    fi
    tag=${name//./p}
    tag="P${tag//[^A-Za-z0-9]/}"
    f=$M/$tag.eml
    large_gen "$f" "$kind" "$size" "$tag" "$FROM_H" "$TO_H" "$CC_H" "$RT_H" ||
	{ bad "$name: message generated"; return; }
    n=$(stat -c %s "$f")
    t0=$(date +%s)
    large_submit "$f" bob@contoso.test "$RCPTS"
    check "$name: Postfix accepted the $n-byte message" test -n "$qid"
    rm -f "$f"
    [ -n "$qid" ] || return
    wait_until "$(secs "$n")" done_or_failed "$f.json" "$qid"
    check "$name: delivered to Graph" large_wait_sent "$f.json" 1 1
    t1=$(date +%s)
    check "$name: maillog: status=sent via m365" \
	pf_wait_log "$qid: to=<rcpt1@example.com>, relay=m365, .*status=sent" 10
    check "$name: relay log: sent from a draft" \
	large_log_has "$qid: to=<rcpt1@example.com>, .*status=sent \(202 .*from a draft"
    check "$name: queue empty" pf_wait_empty 20
    check "$name: recipients, header fields, text, every attachment byte for byte, inline image" \
	large_verify "$f.json" "$RCPTS"
    check "$name: upload ranges: 320 KiB multiples under 4 MiB, every byte, no refusal" \
	large_uploads_ok "$f.json"
    check "$name: no draft left in the mailbox" large_drafts_are bob@contoso.test 0
    pf_flush
    sleep 1
    check "$name: exactly once" test "$(large_sent_count "$f.json")" = 1
    echo "# $name: $n bytes, queued to done in $((t1 - t0)) s"
    large_eml_drop "$f.json"
}

# ---- 1. sizes and shapes
one_case "3.5MB one" one 3500k
one_case "3.5MB several" several 3500k
one_case "10MB one" one 10M
one_case "10MB several" several 10M
one_case "35MB one" one 35M
one_case "35MB several" several 35M
# 150 MB: the account's limit is 157286400 bytes; Postfix adds its
# Received: and Return-Path: lines, so a little less.
one_case "150MB several" several 149.9M

# ---- 2. 503 on the upload ranges: deferred, draft deleted, retry once
S=P503
f=$M/$S.eml
large_gen "$f" one 15M "$S" "$FROM_H" "$TO_H" || bad "503: message generated"
emu_ctl POST /_emu/faults '[{"match": "upload", "status": 503, "after": 1, "count": 100}]' >/dev/null
large_submit "$f" bob@contoso.test rcpt1@example.com
check "503: Postfix accepted the message" test -n "$qid"
rm -f "$f"
check "503: maillog: deferred with a 4.x.x status" \
    pf_wait_log "$qid: to=<rcpt1@example.com>, relay=m365, .*dsn=4\.[0-9.]+, status=deferred" 90
check "503: the message waits in Postfix's queue" pf_queue_has rcpt1@example.com
check "503: the first range was taken, then the upload stopped" upload_stopped "scan-$S.pdf"
check "503: relay log: the upload stopped at a byte in the middle (HTTP 503)" \
    large_log_has "upload of scan-$S\.pdf stopped at byte [1-9][0-9]* of [0-9]+ \(HTTP 503\)"
check "503: the draft was deleted" large_drafts_are bob@contoso.test 0
check "503: nothing sent" test "$(large_sent_count "$f.json")" = 0
emu_ctl DELETE /_emu/faults >/dev/null
check "503: after the fault, a queue run delivers it" \
    large_flush_until pf_flush "$f.json" 1 90
check "503: queue empty" pf_wait_empty 20
pf_flush
sleep 2
check "503: delivered exactly once, complete" large_verify "$f.json" rcpt1@example.com
check "503: no draft left" large_drafts_are bob@contoso.test 0
large_eml_drop "$f.json"

# ---- 3. kill -9 during an upload: the orphan draft goes, retry once
S=PKILL
f=$M/$S.eml
large_gen "$f" one 15M "$S" "$FROM_H" "$TO_H" || bad "kill: message generated"
# The second range waits 30 s in the emulator: the relay sits in it.
emu_fault '{"match": "upload", "action": "slow", "delay": 30, "after": 1}'
large_submit "$f" bob@contoso.test rcpt1@example.com
kqid=$qid
check "kill: Postfix accepted the message" test -n "$kqid"
rm -f "$f"
# the slow range has begun: the fault is consumed
check "kill: the upload reached its second range" wait_until 60 large_faults_gone
rpid=$(pgrep -f -- "m365-relay -c .* -q $kqid " | head -n 1)
check "kill: m365-relay for $kqid found" test -n "$rpid"
[ -n "$rpid" ] && kill -9 "$rpid"
# Keep the killed message out of the way (Postfix would retry it in
# 2-4 s) until another delivery from the mailbox has run.
check "kill: the message is on hold in Postfix's queue" wait_until 10 hold_it "$kqid"
check "kill: maillog: the delivery was deferred" \
    pf_wait_log "$kqid: to=<rcpt1@example.com>, relay=m365, .*status=deferred" 10
check "kill: the killed upload left its draft behind" test "$(large_drafts_of "$f.json")" = 1
check "kill: nothing sent" test "$(large_sent_count "$f.json")" = 0
# another large message from the same mailbox
S2=PKILLNEXT
f2=$M/$S2.eml
large_gen "$f2" one 3500k "$S2" "$FROM_H" "$TO_H" || bad "kill: second message generated"
large_submit "$f2" bob@contoso.test rcpt1@example.com
check "kill: the next large message from bob is delivered" large_wait_sent "$f2.json" 1 90
rm -f "$f2"
check "kill: ... and it removed the orphan draft" test "$(large_drafts_of "$f.json")" = 0
check "kill: relay log: the orphan of $kqid was removed" \
    large_log_has "(removed|deleted).*draft.*$kqid|$kqid.*(removed|deleted).*draft"
postsuper -c "$PF_ETC" -H "$kqid" >/dev/null 2>&1
check "kill: released, a queue run delivers the killed message" \
    large_flush_until pf_flush "$f.json" 1 90
check "kill: queue empty" pf_wait_empty 20
pf_flush
sleep 2
check "kill: the killed message arrived exactly once, complete" \
    large_verify "$f.json" rcpt1@example.com
check "kill: 0 drafts left in the emulator" large_drafts_are bob@contoso.test 0
large_eml_drop "$f.json"

# ---- 4, 5. bounces: the sender is local (m365test@local.test, the default
# account sends for it), so the bounce lands in its maildir.
# bounce_case NAME KIND SIZE WHY - a message that bounces with 5.3.4 and
# the text WHY (an ERE) in the maillog, the relay log and the bounce,
# without any request to the emulator (the rest of the queue is held)
bounce_case() {
    local name=$1 kind=$2 size=$3 why=$4 tag r0
    tag=P${name//[^A-Za-z0-9]/}
    f=$M/$tag.eml
    large_gen "$f" "$kind" "$size" "$tag" "$FROM_H" "$TO_H" || bad "$name: message generated"
    quiet_queue
    r0=$(emu_stat requests)
    large_submit "$f" "$RUSER@local.test" rcpt1@example.com
    check "$name: Postfix accepted the message" test -n "$qid"
    rm -f "$f"
    check "$name: maillog: bounced 5.3.4 ($why)" \
	pf_wait_log "$qid: to=<rcpt1@example.com>, relay=m365, .*dsn=5\.3\.4, status=bounced \(.*$why" 120
    check "$name: relay log: bounced 5.3.4 ($why)" \
	large_log_has "$qid: to=<rcpt1@example.com>, .*dsn=5\.3\.4, status=bounced .*$why"
    check "$name: the bounce to the sender says 5.3.4 and why" \
	wait_until 30 bounce_has "$qid" "$why"
    check "$name: the emulator got no request at all" test "$(emu_stat requests)" = "$r0"
    check "$name: queue empty" pf_wait_empty 30
    release_queue
}
# A 5 MB signed message cannot be split: the reason and what to do.
bounce_case "signed" signed 5M "multipart/signed part: a signed or encrypted message cannot be split.*send it without"
# 160 MB: over the account's 150 MB, before any request.
bounce_case "160MB" one 160M "exceeds max_message_size 157286400"

# ---- 6. no Mail.ReadWrite
# noperm_case NAME SENDER SUBJECT - an app without Mail.ReadWrite: the
# draft is refused (403): deferred with the remedy (no bounce, no draft
# left, nothing sent); once the admin grants it, the queue drains
noperm_case() {
    local name=$1 sender=$2 f=$M/$3.eml
    large_gen "$f" one 3500k "$3" "From: Alice <alice@contoso.test>" "$TO_H" ||
	bad "$name: message generated"
    large_submit "$f" "$sender" rcpt1@example.com
    check "$name: Postfix accepted the message" test -n "$qid"
    rm -f "$f"
    check "$name: maillog: deferred 4.7.x, not bounced" \
	pf_wait_log "$qid: to=<rcpt1@example.com>, relay=m365, .*dsn=4\.7\.[0-9]+, status=deferred" 60
    check "$name: relay log: deferred, names Mail.ReadWrite (the remedy)" \
	large_log_has "$qid: to=<rcpt1@example.com>, .*dsn=4\.7\.[0-9]+, status=deferred .*Mail\.ReadWrite"
    check "$name: the message waits in the queue" pf_queue_has rcpt1@example.com
    check "$name: no draft left" large_drafts_are alice@contoso.test 0
    check "$name: nothing sent" test "$(large_sent_count "$f.json")" = 0
    large_app_roles "$NOPERM_ID" Mail.Send Mail.ReadWrite
    check "$name: once granted, a queue run delivers it" \
	large_flush_until pf_flush "$f.json" 1 60
    check "$name: queue empty" pf_wait_empty 20
    check "$name: delivered exactly once, complete" large_verify "$f.json" rcpt1@example.com
    large_app_roles "$NOPERM_ID" Mail.Send
}
# large_messages = yes
noperm_case noperm app@noperm.test PNOPERM
# large_messages = auto (the default): the access token is not read
# (tokens are opaque), the draft is tried, the same 403 defers
noperm_case noauto app@noauto.test PNOAUTO

# large_messages = auto with an app that has Mail.ReadWrite: drafts
S=PAUTO
f=$M/$S.eml
large_gen "$f" one 3500k "$S" "From: Alice <alice@contoso.test>" "$TO_H" ||
    bad "auto: message generated"
large_submit "$f" app@auto.test rcpt1@example.com
check "auto: Postfix accepted the message" test -n "$qid"
rm -f "$f"
wait_until 60 done_or_failed "$f.json" "$qid"
check "auto, Mail.ReadWrite granted: delivered through a draft" large_wait_sent "$f.json" 1 1
check "auto: complete" large_verify "$f.json" rcpt1@example.com
check "auto: queue empty" pf_wait_empty 20

echo "# test-large-postfix.sh: $(( $(date +%s) - T0 )) s"
t_done
