#!/usr/bin/env bash
# test-lmtp.sh - the LMTP path (issue 14.2) through a real, private
# Postfix:
#
#   swaks -> Postfix :2525 -> queue -> lmtp(8) "m365lmtp" transport over
#   a unix socket -> m365-lmtpd -> the Microsoft 365 emulator
#
# (the transport of contrib/postfix: lmtp_send_xforward_command, a
# connection cache, concurrency 4, recipient limit 500).  Cases:
# several messages, each sent exactly once to exactly its envelope
# recipients, logged under Postfix's queue id (XFORWARD); a message to
# three recipients of which Microsoft 365 refuses one by name (400
# ErrorInvalidRecipients "Recipient 'x' is not resolved", the text
# reported in microsoftgraph/ruby-connect-rest-sample#15 and
# Azure/Microsoft365R#119): that one bounces (5.1.1), the two others get
# it; 429 with Retry-After: Postfix
# defers (4.x), the next message to the mailbox is deferred without a
# request (Retry-After memory), both go out once after the wait; 202
# with Retry-After: sent, and the next message waits; a
# connection reset after Graph took the body (ambiguous): deferred, the
# retry finds it in Sent Items, no duplicate; a 5 MB message through a
# draft; fewer TLS connections to Graph than messages (connection
# reuse, the emulator's connection count); SIGTERM while Graph holds its
# answer (the delivery finishes and is answered); kill -9 then (Postfix
# defers, the retry finds the message in Sent Items: once); 8 deliveries
# at once, at most 4 Graph requests per mailbox (request slots).
#
# Needs root (namespaces, a private Postfix, useradd), postfix and swaks
# (tests/run-all.sh installs them); skipped (77) without root.

# shellcheck disable=SC2317  # helper functions run through check()
set -u

. "$(dirname "$0")/ns.sh"
e2e_start test-lmtp.sh "private Postfix, namespaces, useradd" \
    "run tests/run-all.sh as root: it installs postfix, swaks and the rest (CI does)" \
    postfix postqueue postsuper postconf swaks runuser usermod

# ---- inside the namespaces
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/postfix.sh"

LMTPD=$top_builddir/lmtp/m365-lmtpd
RUSER=m365test
LPID=
T0=$(date +%s)

t_init lmtp
trap 'pf_stop; [ -z "$LPID" ] || kill -9 "$LPID" 2>/dev/null; t_cleanup' EXIT
e2e_private_hosts

if [ ! -x "$LMTPD" ]; then
    bad "m365-lmtpd is built ($LMTPD missing: run make)"
    t_done
fi

# ---- emulator, configuration (sent_items_wait 2 s, timeout 3 s)
e2e_conf "$RUSER" || { bad "emulator starts"; t_done; }
conf_real_hosts "$CONF"
sed -i -e '/^sent_items_wait[[:space:]]*=/d' \
    -e 's/^\[global\]$/[global]\nsent_items_wait = 2\ntimeout = 3/' "$CONF"
# Large messages: upload sessions on outlook.office.com (the test CA names it).
sed -i "s|^\[global\]\$|[global]\nupload_hosts = outlook.office.com:$EMU_PORT|" "$CONF"
e2e_user "$RUSER" || { bad "create user $RUSER"; t_done; }
mkdir -p "$T/run" "$T/msg"
chown "$RUSER:$RUSER" "$T/run"
chmod 750 "$T/run"
SOCK=$T/run/lmtp.sock

"$LMTPD" -c "$CONF" -p "unix:$SOCK" -s 8 >> "$T/lmtpd.out" 2>&1 &
LPID=$!
wait_until 10 test -S "$SOCK" ||
    { sed 's/^/#   /' "$T/lmtpd.out"; bad "m365-lmtpd listens"; t_done; }
ok "m365-lmtpd listens on $SOCK (as $RUSER, mode $(stat -c %a "$SOCK"))"

# ---- Postfix: lmtp.test and lmtp2.test go to m365-lmtpd over LMTP
PF_DOMAINS="contoso.test example.com" PF_ONE_DOMAINS="" \
    PF_RELAY=$RELAY PF_CONF=$CONF pf_setup "$T/pf" 2525 2526 ||
    { bad "private Postfix set up"; t_done; }
# Postfix's lmtp client (mail_owner) reaches the 0660 socket as a member
# of the user's group: contrib/postfix says "usermod -a -G m365relay postfix".
usermod -a -G "$RUSER" "$PF_MAIL_OWNER"
postconf -c "$PF_ETC" -e \
    "relay_domains = contoso.test example.com lmtp.test lmtp2.test" \
    "m365lmtp_destination_recipient_limit = 500" \
    "m365lmtp_destination_concurrency_limit = 4" \
    "m365lmtp_destination_concurrency_failed_cohort_limit = 100"
printf 'lmtp.test\tm365lmtp:unix:%s\nlmtp2.test\tm365lmtp:unix:%s\n' "$SOCK" "$SOCK" \
    >> "$PF_ETC/transport"
# The service as contrib/postfix/master.cf.lmtp ships it, on our socket.
grep -v '^#' "$top_srcdir/contrib/postfix/master.cf.lmtp" |
    sed "s|/run/m365relay/lmtp.sock|$SOCK|" >> "$PF_ETC/master.cf"
check "postfix check with the lmtp transport" postfix -c "$PF_ETC" check
pf_start || { bad "private Postfix starts"; t_done; }
ok "private Postfix: lmtp.test and lmtp2.test through m365lmtp:unix:$SOCK"

# lmtp_sent QID RCPT - Postfix logged RCPT of QID as sent over LMTP
lmtp_sent() {
    pf_wait_log "$1: to=<$2>, relay=[^,]*lmtp\\.sock[^,]*, .*status=sent" 20
}

# drain SECS - flush Postfix's queue until it is empty
drain() {
    local i
    for ((i = 0; i < $1 * 2; i++)); do
	pf_queue_empty && return 0
	pf_flush
	sleep 0.5
    done
    pf_queue_empty
}

# ---- 1. several messages, exactly once, exact recipients, queue ids
conn0=$(emu_ctl GET /_emu/stats | json_eval 'd.get("connections", -1)')
req0=$(emu_ctl GET /_emu/stats | json_eval 'd["requests"]')
declare -a QIDS
for i in 1 2 3 4 5 6; do
    QIDS[i]=$(send_msg 2525 bob@contoso.test "a$i@lmtp.test,b$i@lmtp2.test" \
	"$T/msg/m$i" "lmtp once $i" "From: bob@contoso.test" "To: a$i@lmtp.test")
done
for i in 1 2 3 4 5 6; do
    check "message $i: Postfix accepted it" test -n "${QIDS[i]}"
    check "message $i: Postfix logged a$i sent over LMTP" lmtp_sent "${QIDS[i]}" "a$i@lmtp.test"
    check "message $i: Postfix logged b$i sent over LMTP" lmtp_sent "${QIDS[i]}" "b$i@lmtp2.test"
done
for i in 1 2 3 4 5 6; do
    check "message $i: sent once, to exactly a$i and b$i" \
	sent_check "lmtp once $i" count=1 "rcpts=a$i@lmtp.test,b$i@lmtp2.test"
    check "message $i: m365-lmtpd logged it under Postfix's queue id" \
	grep -qE " ${QIDS[i]}: to=<a$i@lmtp\\.test>, relay=graph\\.microsoft\\.com:[0-9]+\\[bob@contoso\\.test\\], delay=[0-9.e-]+, dsn=2\\.0\\.0, status=sent \\(202 Accepted" "$T/relay.log"
done

# ---- 2. connection reuse: a burst of messages, few TLS connections
for i in $(seq 1 20); do
    send_msg 2525 bob@contoso.test "burst$i@lmtp.test" "$T/msg/burst" \
	"lmtp burst $i" "From: bob@contoso.test" "To: burst$i@lmtp.test" >/dev/null
done
check "burst: 20 messages sent" wait_until 30 sh -c \
    "[ \$(grep -c 'to=<burst[0-9]*@lmtp.test>, relay=graph.*status=sent' '$T/relay.log') -ge 20 ]"
conn1=$(emu_ctl GET /_emu/stats | json_eval 'd.get("connections", -1)')
req1=$(emu_ctl GET /_emu/stats | json_eval 'd["requests"]')
if [ "$conn0" = -1 ]; then
    bad "the emulator counts its connections (/_emu/stats connections)"
else
    echo "# 26 messages, $((req1 - req0)) requests, $((conn1 - conn0)) new TLS connections"
    t_match "26 messages over LMTP: new TLS connections at most 4 deliveries at once x 2 hosts ($((conn1 - conn0)))" \
	"$((conn1 - conn0))" '^[0-8]$'
fi

check "Postfix has no complaint about the connection cache setting" \
    sh -c "! grep -q 'connection_cache_destinations.*lookup problem' '$PF_MAILLOG'"
check "Postfix reused its cached LMTP connections (conn_use=2 or more)" \
    grep -qE 'to=<burst[0-9]+@lmtp\.test>, relay=[^,]*lmtp\.sock[^,]*, conn_use=[2-9]' "$PF_MAILLOG"

# ---- 3. Microsoft 365 refuses one recipient by name: only it bounces
emu_fault '{"match":"sendMail","status":400,"code":"ErrorInvalidRecipients","message":"At least one recipient isn'"'"'t valid., Recipient '"'"'nobody@lmtp.test'"'"' is not resolved. All recipients must be resolved before a message can be submitted.","count":1}'
qid=$(send_msg 2525 bob@contoso.test "ok1@lmtp.test,nobody@lmtp.test,ok2@lmtp2.test" \
    "$T/msg/rej" "lmtp one refused" "From: bob@contoso.test" "To: ok1@lmtp.test, nobody@lmtp.test, ok2@lmtp2.test")
check "refused: Postfix bounces nobody@ with 5.1.1" \
    pf_wait_log "$qid: to=<nobody@lmtp.test>, relay=[^,]*lmtp\\.sock[^,]*, .*dsn=5\\.1\\.1, status=bounced .*not resolved" 20
check "refused: ok1@ sent" lmtp_sent "$qid" ok1@lmtp.test
check "refused: ok2@ sent" lmtp_sent "$qid" ok2@lmtp2.test
check "refused: Graph got it once, for ok1 and ok2 only" \
    sent_check "lmtp one refused" count=1 "rcpts=ok1@lmtp.test,ok2@lmtp2.test" never=nobody@lmtp.test
check "refused: the sender gets a bounce for nobody@ only" \
    wait_until 20 sh -c "grep -q '$qid: to=<nobody@lmtp.test>.*status=bounced' '$PF_MAILLOG' && grep -q 'sender non-delivery notification' '$PF_MAILLOG'"

# ---- 4. 429 + Retry-After: deferred, remembered, then sent once
emu_fault '{"match":"sendMail","status":429,"code":"ApplicationThrottled","message":"Application is over its MailboxConcurrency limit.","retry_after":6,"count":1}'
qa=$(send_msg 2525 bob@contoso.test "ra1@lmtp.test" "$T/msg/ra1" "lmtp retry-after 1" \
    "From: bob@contoso.test" "To: ra1@lmtp.test")
check "429: Postfix defers it (4.x)" \
    pf_wait_log "$qa: to=<ra1@lmtp.test>, relay=[^,]*lmtp\\.sock[^,]*, .*dsn=4\\.[0-9.]+, status=deferred" 20
reqa=$(emu_ctl GET /_emu/stats | json_eval 'd["requests"]')
qb=$(send_msg 2525 bob@contoso.test "ra2@lmtp.test" "$T/msg/ra2" "lmtp retry-after 2" \
    "From: bob@contoso.test" "To: ra2@lmtp.test")
check "Retry-After memory: the next message is deferred without a request" \
    pf_wait_log "$qb: to=<ra2@lmtp.test>, relay=[^,]*lmtp\\.sock[^,]*, .*dsn=4\\.7\\.0, status=deferred .*Retry-After" 20
reqb=$(emu_ctl GET /_emu/stats | json_eval 'd["requests"]')
t_eq "Retry-After memory: no Graph request meanwhile" "$((reqb - reqa))" 0
check "429: both go out after the wait" drain 40
check "429: ra1 sent once" sent_check "lmtp retry-after 1" count=1 rcpts=ra1@lmtp.test
check "429: ra2 sent once" sent_check "lmtp retry-after 2" count=1 rcpts=ra2@lmtp.test

# ---- 4b. 202 with Retry-After: sent, and the wait is remembered
emu_fault '{"match":"sendMail","action":"accept_retry_after","retry_after":5,"count":1}'
qc=$(send_msg 2525 bob@contoso.test "ra3@lmtp.test" "$T/msg/ra3" "lmtp accepted retry-after" \
    "From: bob@contoso.test" "To: ra3@lmtp.test")
check "202 + Retry-After: Postfix logs it sent" lmtp_sent "$qc" ra3@lmtp.test
qd=$(send_msg 2525 bob@contoso.test "ra4@lmtp.test" "$T/msg/ra4" "lmtp after accepted retry-after" \
    "From: bob@contoso.test" "To: ra4@lmtp.test")
check "202 + Retry-After: the next message waits (4.7.0, deferred)" \
    pf_wait_log "$qd: to=<ra4@lmtp.test>, relay=[^,]*lmtp\\.sock[^,]*, .*dsn=4\\.7\\.0, status=deferred" 20
check "202 + Retry-After: then it goes out" drain 40
check "202 + Retry-After: the first sent once" \
    sent_check "lmtp accepted retry-after" count=1 rcpts=ra3@lmtp.test
check "202 + Retry-After: the second sent once" \
    sent_check "lmtp after accepted retry-after" count=1 rcpts=ra4@lmtp.test

# ---- 5. a reset after Graph took the body: no duplicate
emu_fault '{"match":"sendMail","action":"reset_after_body","deliver":true,"count":1}'
qr=$(send_msg 2525 bob@contoso.test "amb@lmtp.test" "$T/msg/amb" "lmtp ambiguous" \
    "From: bob@contoso.test" "To: amb@lmtp.test")
check "ambiguous: Postfix defers it" \
    pf_wait_log "$qr: to=<amb@lmtp.test>, relay=[^,]*lmtp\\.sock[^,]*, .*dsn=4\\.[0-9.]+, status=deferred" 20
check "ambiguous: the retries drain the queue" drain 40
check "ambiguous: delivered exactly once" sent_check "lmtp ambiguous" count=1 rcpts=amb@lmtp.test
check "ambiguous: the retry was settled in Sent Items or the ledger" \
    grep -qE " $qr: .*(confirmed in Sent Items|send ledger)" "$T/relay.log"

# ---- 6. 5 MB through a draft
sized_msg "$T/msg/big" 5000000 bob@contoso.test big@lmtp.test "lmtp five MB"
drafts0=$(emu_ctl GET /_emu/stats | json_eval 'd.get("drafts_created", 0)')
qbig=$(smtp_send 2525 bob@contoso.test big@lmtp.test "$T/msg/big")
check "5 MB: Postfix logged it sent over LMTP" \
    pf_wait_log "$qbig: to=<big@lmtp.test>, relay=[^,]*lmtp\\.sock[^,]*, .*status=sent" 60
check "5 MB: sent once" sent_check "lmtp five MB" count=1 rcpts=big@lmtp.test
drafts1=$(emu_ctl GET /_emu/stats | json_eval 'd.get("drafts_created", 0)')
t_eq "5 MB: through one draft" "$((drafts1 - drafts0))" 1
t_eq "5 MB: no draft left behind" "$(emu_drafts bob@contoso.test)" 0

# ---- 6b. per-mailbox limit: Postfix may run 8 deliveries at once, Graph
# still sees at most 4 requests for the mailbox (request slots), each
# message goes out once (a delivery that found no slot in
# concurrency_wait was deferred with 4.7.0 and sent later)
postconf -c "$PF_ETC" -e "m365lmtp_destination_concurrency_limit = 8"
pf_postfix reload >/dev/null 2>&1
emu_fault '{"match":"sendMail","action":"slow","deliver":true,"delay":2,"count":8}'
PARS=()
for i in $(seq 1 8); do
    send_msg 2525 bob@contoso.test "par$i@lmtp.test" "$T/msg/par$i" \
	"lmtp parallel $i" "From: bob@contoso.test" "To: par$i@lmtp.test" >/dev/null &
    PARS+=($!)
done
wait "${PARS[@]}"
check "8 at once: the queue drains" drain 60
for i in $(seq 1 8); do
    check "8 at once: message $i sent once" sent_check "lmtp parallel $i" count=1 "rcpts=par$i@lmtp.test"
done
t_match "8 at once: at most 4 requests at a time for bob@contoso.test" \
    "$(emu_ctl GET /_emu/stats | json_eval "d['max_concurrent'].get('bob@contoso.test', 0)")" '^[1-4]$'
postconf -c "$PF_ETC" -e "m365lmtp_destination_concurrency_limit = 4"
pf_postfix reload >/dev/null 2>&1

# start_lmtpd - m365-lmtpd again (after a kill or a stop)
start_lmtpd() {
    "$LMTPD" -c "$CONF" -p "unix:$SOCK" -s 8 >> "$T/lmtpd.out" 2>&1 &
    LPID=$!
    wait_until 10 test -S "$SOCK"
}

# ---- 7. SIGTERM while Graph holds its answer (2 s, below timeout = 3):
# the delivery finishes and is answered
emu_fault '{"match":"sendMail","action":"slow","deliver":true,"delay":2,"count":1}'
qt=$(send_msg 2525 bob@contoso.test "term@lmtp.test" "$T/msg/term" "lmtp sigterm" \
    "From: bob@contoso.test" "To: term@lmtp.test")
check "SIGTERM: Graph has the message while m365-lmtpd waits" wait_sent "lmtp sigterm" 1 15
term_wait "$LPID" 15
LPID=
t_eq "SIGTERM: m365-lmtpd stops with status 0" "$TW_RC" 0
check "SIGTERM: the delivery in progress was finished and answered" lmtp_sent "$qt" term@lmtp.test
check "SIGTERM: sent once" sent_check "lmtp sigterm" count=1 rcpts=term@lmtp.test
start_lmtpd || bad "m365-lmtpd starts again"

# ---- 8. kill -9 while Graph holds its answer: no answer, Postfix keeps
# the message; the retry finds it in Sent Items (the ledger said sending)
emu_fault '{"match":"sendMail","action":"slow","deliver":true,"delay":60,"count":1}'
qk=$(send_msg 2525 bob@contoso.test "kill@lmtp.test" "$T/msg/kill" "lmtp kill" \
    "From: bob@contoso.test" "To: kill@lmtp.test")
check "kill -9: Graph has the message while m365-lmtpd waits" wait_sent "lmtp kill" 1 15
kill -9 "$LPID"
wait "$LPID" 2>/dev/null
LPID=
check "kill -9: Postfix defers it (lost connection)" \
    pf_wait_log "$qk: to=<kill@lmtp.test>, relay=[^,]*lmtp\\.sock[^,]*, .*status=deferred" 20
start_lmtpd || bad "m365-lmtpd starts again after kill -9"
check "kill -9: the retries drain the queue" drain 40
check "kill -9: delivered exactly once" sent_check "lmtp kill" count=1 rcpts=kill@lmtp.test
check "kill -9: the retry was settled in Sent Items" \
    grep -qE " $qk: .*confirmed in Sent Items" "$T/relay.log"

check "Postfix's queue is empty at the end" drain 20
term_wait "$LPID" 15
LPID=
t_eq "m365-lmtpd stops with status 0" "$TW_RC" 0
echo "# test-lmtp.sh: $(( $(date +%s) - T0 )) s"
t_done
