#!/usr/bin/env bash
# test-large-milter.sh - large messages (issue 10) through m365-milter in
# deliver mode in front of a real, private Postfix:
#
#   SMTP (smtplib) -> Postfix smtpd (message_size_limit 200 MB)
#     -> smtpd_milters = m365-milter, mode = deliver: at the end of DATA
#        it sends the message itself (a JSON draft, attachments, upload
#        sessions, /send) and removes the recipients it delivered
#     -> the Microsoft 365 emulator
#
# Recipients in deliver_domains go to Graph through the milter; in
# Postfix every domain goes to the discard transport, so a recipient the
# milter failed to remove shows in the maillog (it never reaches Graph a
# second way).
# Checks: 3.5, 10 and 35 MB messages with one and with several
# attachments (tests/large.sh; the 150 MB case runs in
# test-large-postfix.sh only) arrive once, with the header fields a JSON
# draft keeps and every attachment byte for byte, the inline image
# inline; a mixed message (a Graph and a sink.test recipient); 503 on the
# upload ranges (451 to the client, draft deleted, the resend is sent
# once); kill -9 of the milter's worker during an upload (451, the
# orphan draft is removed by the next delivery from the mailbox, the
# resend is sent once); a 5 MB multipart/signed message (5.3.4 with the
# reason in the SMTP reply); the account's limit at MAIL FROM (SIZE=)
# and at the end of DATA (552 5.3.4, no request); an app without
# Mail.ReadWrite (451 4.7.x with the remedy; the resend after the grant
# is sent once).
#
# Needs root (namespaces, a private Postfix, useradd) and postfix;
# about 400 MB free in $TMPDIR.  Without root it is skipped (exit 77).

# shellcheck disable=SC2317  # helper functions run through check()
set -u

. "$(dirname "$0")/ns.sh"
e2e_start test-large-milter.sh "private Postfix, namespaces, useradd" \
    "run tests/run-all.sh as root: it installs postfix and the rest (CI does)" \
    postfix postqueue postsuper postconf runuser pgrep

# ---- inside the namespaces
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/postfix.sh"
. "$top_srcdir/tests/large.sh"

MILTER=$top_builddir/milter/m365-milter
MPORT=8896
RUSER=m365test
NOPERM_ID=11111111-0000-0000-0000-0000000000a1
MPID=

t_init large-milter
# shellcheck disable=SC2329  # run by the EXIT trap
stop_all() {
    pf_stop
    [ -z "$MPID" ] || kill -9 "$MPID" 2>/dev/null
}
trap 'stop_all; t_cleanup' EXIT
e2e_private_hosts
T0=$(date +%s)

if [ ! -x "$MILTER" ]; then
    bad "m365-milter is built ($MILTER missing: run make)"
    t_done
fi
check "400 MB free in $T" large_disk 400000
[ "$FAIL" = 0 ] || t_done

# ---- emulator and configuration
e2e_conf "$RUSER" || { bad "emulator starts"; t_done; }
conf_real_hosts "$CONF"
# Account app (the default): 150 MB, drafts.  Account dflt: the same app
# with the default max_message_size (35 MB).  Account noperm: an app
# without Mail.ReadWrite.
large_conf "$CONF" "outlook.office.com:$EMU_PORT"
large_account "$CONF" dflt "$EMU_APP_SECRET" @dflt.test "large_messages = yes"
large_account "$CONF" noperm "$NOPERM_ID" @noperm.test "large_messages = yes"
cat >> "$CONF" <<EOF

[milter]
mode = deliver
socket = inet:$MPORT@127.0.0.1
deliver_domains = example.com example.org example.net
tmp_dir = $T/spool
EOF
large_app_roles "$NOPERM_ID" Mail.Send ||
    { bad "emulator: app without Mail.ReadWrite added"; t_done; }
e2e_user "$RUSER" || { bad "create user $RUSER"; t_done; }
mkdir -p "$T/spool" "$T/run"
chown "$RUSER" "$T/spool" "$T/run"
chmod 700 "$T/spool" "$T/run"
check "m365-milter -n: configuration OK" \
    sh -c "'$MILTER' -c '$CONF' -n 2>&1 | grep -q 'configuration OK'"

# start_milter - m365-milter in the foreground (as root: it drops to
# $RUSER); MPID is its supervisor
start_milter() {
    "$MILTER" -c "$CONF" -f -P "$T/run/milter.pid" >> "$T/milter.out" 2>&1 &
    MPID=$!
    wait_port "$MPORT"
}
start_milter || { sed 's/^/#   /' "$T/milter.out"; bad "m365-milter (deliver mode) listens on :$MPORT"; t_done; }
ok "m365-milter (deliver mode) listens on 127.0.0.1:$MPORT"

# ---- Postfix: the milter at SMTP time.  Postfix discards what is left
# to it (never a second way to Graph): its maillog shows each recipient
# the milter left in the message (local1@sink.test, or a Graph one it
# failed to remove).
PF_RELAY=$RELAY PF_CONF=$CONF pf_setup "$T/pf" 2525 2526 ||
    { bad "private Postfix set up"; t_done; }
printf '%s\tdiscard:left in the message by the milter\n' example.com example.org example.net \
    > "$PF_ETC/transport"
printf 'sink.test\tdiscard:kept for the MTA\n' >> "$PF_ETC/transport"
large_postfix || { bad "postconf message_size_limit"; t_done; }
postconf -c "$PF_ETC" -e "relay_domains = example.com example.org example.net sink.test" \
    "smtpd_milters = inet:127.0.0.1:$MPORT" "milter_default_action = tempfail" \
    "milter_protocol = 6" "milter_content_timeout = 900s" ||
    { bad "postconf for the milter"; t_done; }
check "postfix check with the milter settings" postfix -c "$PF_ETC" check
pf_start || { bad "private Postfix starts"; t_done; }
ok "private Postfix (smtpd_milters = m365-milter in deliver mode) listens on 127.0.0.1:2525"
M=$T/msg
mkdir -p "$M"

FROM_H=$LARGE_FROM TO_H=$LARGE_TO CC_H=$LARGE_CC RT_H=$LARGE_RT RCPTS=$LARGE_RCPTS

# ---- helpers

# replied ERE - the last SMTP reply of the message sent from $f matches
replied() {
    grep -Eq -- "$1" "$f.smtp"
}

# pf_untouched QID [RCPT_ERE] - Postfix itself delivered (or tried) QID
# to nobody (to no recipient matching RCPT_ERE)
pf_untouched() {
    ! grep -Eq -- "$1: to=<${2:-[^>]*}>, relay=" "$PF_MAILLOG"
}

# send FILE SENDER RCPTS - submit; sets qid (empty unless 250)
send() {
    qid=$(large_smtp 2525 "$2" "$3" "$1")
}

# worker - the milter's worker process (the supervisor's child)
worker() {
    pgrep -P "$MPID" | head -n 1
}

# one_case NAME KIND SIZE - generate, send, check, clean up
one_case() {
    local name=$1 kind=$2 size=$3 tag n t0
    tag=${name//./p}
    tag="M${tag//[^A-Za-z0-9]/}"
    f=$M/$tag.eml
    large_gen "$f" "$kind" "$size" "$tag" "$FROM_H" "$TO_H" "$CC_H" "$RT_H" ||
	{ bad "$name: message generated"; return; }
    n=$(stat -c %s "$f")
    t0=$(date +%s)
    send "$f" bob@contoso.test "$RCPTS"
    check "$name: 250 at the end of DATA (the milter sent it, then discarded it)" replied '^250 '
    echo "# $name: $n bytes, SMTP transaction $(( $(date +%s) - t0 )) s"
    rm -f "$f"
    check "$name: delivered to Graph once" test "$(large_sent_count "$f.json")" = 1
    check "$name: recipients, header fields, text, every attachment byte for byte, inline image" \
	large_verify "$f.json" "$RCPTS"
    check "$name: upload ranges: 320 KiB multiples under 4 MiB, every byte, no refusal" \
	large_uploads_ok "$f.json"
    check "$name: milter log: status=sent from a draft, under Postfix's queue id" \
	large_log_has "${qid:-none}: to=<rcpt1@example\.com>, relay=graph\.microsoft\.com[^ ]*\[bob@contoso\.test\], .*status=sent \(202 .*from a draft"
    check "$name: milter log: all 3 recipients delivered, message discarded" \
	large_log_has "${qid:-none}: milter: all 3 recipient\(s\) delivered by Microsoft 365; message discarded"
    check "$name: no draft left" large_drafts_are bob@contoso.test 0
    check "$name: maillog: Postfix discarded it (milter-discard)" \
	pf_wait_log "${qid:-none}: milter-discard: END-OF-MESSAGE" 5
    check "$name: queue empty" pf_wait_empty 5
    check "$name: Postfix delivered it to nobody itself" pf_untouched "${qid:-none}"
    large_eml_drop "$f.json"
}

# ---- 1. sizes and shapes
one_case "3.5MB one" one 3500k
one_case "3.5MB several" several 3500k
one_case "10MB one" one 10M
one_case "10MB several" several 10M
one_case "35MB one" one 34.9M
one_case "35MB several" several 34.9M

# ---- 2. mixed: one recipient through Graph, one left to Postfix
S=MMIXED
f=$M/$S.eml
large_gen "$f" several 5M "$S" "$FROM_H" "To: rcpt1@example.com, local1@sink.test" ||
    bad "mixed: message generated"
send "$f" bob@contoso.test rcpt1@example.com,local1@sink.test
check "mixed: 250 at the end of DATA" replied '^250 '
check "mixed: Graph got it once, for rcpt1 only (To: rewritten to it), complete" \
    large_verify "$f.json" rcpt1@example.com "To=rcpt1@example.com"
check "mixed: Postfix delivered it to local1 (discard transport)" \
    pf_wait_log "${qid:-none}: to=<local1@sink\.test>, relay=none, .*status=sent" 10
check "mixed: ... and not to rcpt1 (the milter removed it)" \
    pf_untouched "${qid:-none}" 'rcpt1@example\.com'
check "mixed: milter log: 1 delivered by Microsoft 365, 1 left for the MTA" \
    large_log_has "milter: 1 recipient\\(s\\) delivered by Microsoft 365 and removed; 1 left for the MTA"
check "mixed: queue empty" pf_wait_empty 20
rm -f "$f"
large_eml_drop "$f.json"

# ---- 3. 503 on the upload ranges: 451, draft deleted, the resend once
S=M503
f=$M/$S.eml
large_gen "$f" one 15M "$S" "$FROM_H" "$TO_H" || bad "503: message generated"
emu_ctl POST /_emu/faults '[{"match": "upload", "status": 503, "after": 1, "count": 100}]' >/dev/null
send "$f" bob@contoso.test rcpt1@example.com
check "503: 451 4.x.x at the end of DATA" replied '^451 4\.[0-9]+\.[0-9]+ '
check "503: milter log: the upload stopped in the middle (HTTP 503)" \
    large_log_has "upload of scan-$S\\.pdf stopped at byte [1-9][0-9]* of [0-9]+ \\(HTTP 503\\)"
check "503: the draft was deleted" large_drafts_are bob@contoso.test 0
check "503: nothing sent" test "$(large_sent_count "$f.json")" = 0
check "503: nothing queued" pf_wait_empty 5
emu_ctl DELETE /_emu/faults >/dev/null
send "$f" bob@contoso.test rcpt1@example.com
check "503: the client's resend: 250" replied '^250 '
check "503: delivered exactly once, complete" large_verify "$f.json" rcpt1@example.com
check "503: no draft left" large_drafts_are bob@contoso.test 0
rm -f "$f"
large_eml_drop "$f.json"

# ---- 4. kill -9 of the milter's worker during an upload
S=MKILL
f=$M/$S.eml
large_gen "$f" one 15M "$S" "$FROM_H" "$TO_H" || bad "kill: message generated"
emu_fault '{"match": "upload", "action": "slow", "delay": 30, "after": 1}'
large_smtp 2525 bob@contoso.test rcpt1@example.com "$f" > /dev/null &
spid=$!
check "kill: the upload reached its second range" wait_until 120 large_faults_gone
wpid=$(worker)
check "kill: the milter's worker found" test -n "$wpid"
[ -n "$wpid" ] && kill -9 "$wpid"
wait "$spid"
check "kill: the client got 451 (milter_default_action = tempfail)" replied '^451 '
check "kill: the killed upload left its draft behind" test "$(large_drafts_of "$f.json")" = 1
check "kill: nothing sent" test "$(large_sent_count "$f.json")" = 0
# The supervisor exits 70 when its worker was killed, so that the service
# manager (systemd: Restart=on-failure) starts the milter again: do that.
wait "$MPID"
check "kill: the supervisor exits 70 (EX_SOFTWARE) for its service manager" test $? = 70
MPID=
if start_milter; then ok "kill: m365-milter started again"; else bad "kill: m365-milter started again"; fi
S2=MKILLNEXT
f2=$M/$S2.eml
large_gen "$f2" one 3500k "$S2" "$FROM_H" "$TO_H" || bad "kill: second message generated"
qid=$(large_smtp 2525 bob@contoso.test rcpt1@example.com "$f2")
check "kill: the next large message from bob: 250" grep -q '^250 ' "$f2.smtp"
check "kill: ... delivered once" test "$(large_sent_count "$f2.json")" = 1
check "kill: ... and the orphan draft is gone" test "$(large_drafts_of "$f.json")" = 0
check "kill: milter log: the orphan was removed" \
    large_log_has "removed the unsent draft of an earlier attempt"
rm -f "$f2"
send "$f" bob@contoso.test rcpt1@example.com
check "kill: the client's resend: 250" replied '^250 '
check "kill: the killed message arrived exactly once, complete" \
    large_verify "$f.json" rcpt1@example.com
check "kill: 0 drafts left in the emulator" large_drafts_are bob@contoso.test 0
rm -f "$f"
large_eml_drop "$f.json"

# ---- 5. a 5 MB signed message: 5.3.4 with the reason, at SMTP time
S=MSIGNED
f=$M/$S.eml
large_gen "$f" signed 5M "$S" "$FROM_H" "$TO_H" || bad "signed: message generated"
d0=$(emu_stat draft_requests)
send "$f" bob@contoso.test rcpt1@example.com
check "signed: 55x 5.3.4 at the end of DATA, saying a signed message cannot be split" \
    replied '^55[0-4] 5\.3\.4 .*(signed|signature)'
check "signed: the reply says what the sender can do" replied 'send it without'
check "signed: no draft request" test "$(emu_stat draft_requests)" = "$d0"
check "signed: nothing queued" pf_wait_empty 5
rm -f "$f"

# ---- 6. the account's limit (Exchange Online's MaxSendSize)
r0=$(emu_stat requests)
out=$(large_smtp 2525 bob@contoso.test rcpt1@example.com - 167772160)
t_match "size: SIZE=160 MB, account app (150 MB): 552 5.3.4 at MAIL FROM" "$out" '^552 5\.3\.4'
out=$(large_smtp 2525 bob@contoso.test rcpt1@example.com - 157000000)
t_match "size: SIZE=157000000, account app (150 MB): 250" "$out" '^250'
out=$(large_smtp 2525 x@dflt.test rcpt1@example.com - 36700161)
t_match "size: SIZE=35 MB + 1, account dflt (default 35 MB): 552 5.3.4" "$out" '^552 5\.3\.4'
out=$(large_smtp 2525 x@dflt.test rcpt1@example.com - 20000000)
t_match "size: SIZE=20 MB, account dflt: 250 (no 3 MB limit left)" "$out" '^250'
S=MOVER
f=$M/$S.eml
large_gen "$f" one 35.2M "$S" "From: Alice <alice@contoso.test>" "$TO_H" || bad "size: message generated"
send "$f" x@dflt.test rcpt1@example.com
check "size: 35.2 MB without SIZE=, account dflt: 552 5.3.4 at the end of DATA" \
    replied '^552 5\.3\.4'
check "size: the emulator got no request for any of these" test "$(emu_stat requests)" = "$r0"
check "size: nothing queued" pf_wait_empty 5
rm -f "$f"

# ---- 7. no Mail.ReadWrite: 451 4.7.x with the remedy; after the grant, once
S=MNOPERM
f=$M/$S.eml
large_gen "$f" one 3500k "$S" "From: Alice <alice@contoso.test>" "$TO_H" ||
    bad "noperm: message generated"
send "$f" app@noperm.test rcpt1@example.com
check "noperm: 451 4.7.x at the end of DATA" replied '^451 4\.7\.[0-9]+ '
check "noperm: milter log: deferred, names Mail.ReadWrite (the remedy)" \
    large_log_has "to=<rcpt1@example.com>, .*dsn=4\\.7\\.[0-9]+, status=deferred .*Mail\\.ReadWrite"
check "noperm: no draft left" large_drafts_are alice@contoso.test 0
check "noperm: nothing sent" test "$(large_sent_count "$f.json")" = 0
large_app_roles "$NOPERM_ID" Mail.Send Mail.ReadWrite
send "$f" app@noperm.test rcpt1@example.com
check "noperm: once granted, the client's resend: 250" replied '^250 '
check "noperm: delivered exactly once, complete" large_verify "$f.json" rcpt1@example.com
rm -f "$f"

check "the milter's spool directory is empty" test -z "$(ls -A "$T/spool")"
echo "# test-large-milter.sh: $(( $(date +%s) - T0 )) s"
t_done
