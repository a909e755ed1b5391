#!/usr/bin/env bash
# test-postfix.sh - end to end through a real, private Postfix on loopback:
#
#   swaks / sendmail(1) -> Postfix (transport_maps or content_filter)
#     -> pipe(8) m365 transport -> m365-relay (as an unprivileged user)
#     -> the Microsoft 365 emulator (HTTPS, OAuth2, Graph sendMail)
#
# Every case asserts what the emulator received (/_emu/sent: the exact
# recipient set, the From, the mailbox, the MIME bytes) and what Postfix
# did (queue, maillog) and m365-relay logged.
#
# Needs root (namespaces, a private Postfix, useradd) and the Debian
# packages postfix and swaks (tests/run-all.sh installs them).  Without
# root it is skipped (exit 77).  It re-executes itself inside private
# net/uts/mount/pid namespaces: the only network is loopback, /etc/hosts
# and resolv.conf are private (graph.microsoft.com and
# login.microsoftonline.com resolve to 127.0.0.1), and every process it
# started dies with it.  Layout: see /work/shared/docs/real-mta-testing.md.

# shellcheck disable=SC2317  # helper functions run through check()
set -u

. "$(dirname "$0")/ns.sh"
e2e_start test-postfix.sh "private Postfix, namespaces, useradd" \
    "run tests/run-all.sh as root: it installs postfix, swaks and the rest (CI does)" \
    postfix postqueue postsuper swaks runuser

# ---- inside the namespaces
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/postfix.sh"

t_init postfix
# Stop Postfix before lib.sh cleans up the work directory.
trap 'pf_stop; t_cleanup' EXIT

e2e_private_hosts

RUSER=m365test
APP_ID=$EMU_APP_SECRET
CERT_ID=$EMU_APP_CERT
DELEG_ID=$EMU_APP_DELEG

# ---- emulator and configuration
# Use the real host names (resolved to 127.0.0.1 by the private
# /etc/hosts; the test certificate names them), so that relay= in the
# log names graph.microsoft.com.  The relay runs as $RUSER: m365ctl
# (run as root here) hands its token files to that user.
e2e_conf "$RUSER" || { bad "emulator starts"; t_done; }
conf_real_hosts "$CONF"
e2e_user "$RUSER" || { bad "create user $RUSER"; t_done; }

check "m365-relay -n as $RUSER: configuration OK" \
    sh -c "runuser -u $RUSER -- '$RELAY' -c '$CONF' -n 2>&1 | grep -q 'configuration OK'"

# ---- helpers (and from tests/lib.sh: make_msg, smtp_send, sent_count,
# wait_sent, sent_check, flush_until_sent)

# relay_log_has ERE - the relay's log file has a matching line
relay_log_has() {
    grep -Eq -- "$1" "$T/relay.log"
}

# faults_left - number of faults the emulator still holds unconsumed faults
faults_left() {
    emu_ctl GET /_emu/faults | python3 -c '
import json, sys
d = json.load(sys.stdin)
if isinstance(d, dict):
    d = d.get("faults", [])
print(sum(int(f.get("count", 1)) for f in d))'
}

# no_faults_left - every injected fault was consumed
no_faults_left() {
    [ "$(faults_left)" = 0 ]
}

# fault_seen_not_sent SUBJECT - Graph refused the message, none went out
fault_seen_not_sent() {
    [ "$(faults_left)" = 0 ] && [ "$(sent_count "$1")" = 0 ]
}

# ---- Postfix
pf_setup "$T/pf" 2525 2526 || { bad "private Postfix set up"; t_done; }
pf_start || { bad "private Postfix starts"; t_done; }
ok "private Postfix listens on 127.0.0.1:2525 and :2526 (content_filter)"
M=$T/msg
mkdir -p "$M"

# ---- a. SMTP -> transport_maps -> m365 pipe -> Graph (app, secret)
S="a transport_maps"
qid=$(send_msg 2525 bob@contoso.test rcpt1@example.com "$M/a" "$S" \
    "From: Bob <bob@contoso.test>" "To: Rcpt One <rcpt1@example.com>")
check "a: Postfix accepted the SMTP message" test -n "$qid"
check "a: delivered to Graph" wait_sent "$S" 1
check "a: one message, exact recipients, From, mailbox, client, body" \
    sent_check "$S" count=1 rcpts=rcpt1@example.com from=bob@contoso.test \
	mailbox=bob@contoso.test client_id=$APP_ID to=rcpt1@example.com "body=body-marker-a-transport_maps"
check "a: queue empty" pf_wait_empty 10
check "a: maillog: status=sent via m365" \
    pf_wait_log "$qid: to=<rcpt1@example.com>, relay=m365, .*status=sent" 5
check "a: relay log: Postfix queue id, relay=graph.microsoft.com[bob@contoso.test], status=sent (202 Accepted, request-id=...)" \
    wait_grep 5 "$qid: to=<rcpt1@example.com>, relay=graph\.microsoft\.com(:[0-9]+)?\[bob@contoso\.test\], delay=[0-9.e+-]+, dsn=2\.0\.0, status=sent \(202 Accepted, request-id=[0-9a-f-]+" "$T/relay.log"
reqid=$(emu_ctl GET /_emu/sent | python3 -c '
import json, sys
r = [x for x in json.load(sys.stdin) if x.get("subject") == sys.argv[1]]
print(r[0].get("request_id", "") if r else "")' "$S")
check "a: the logged request-id is Graph's" relay_log_has "$qid: .*request-id=$reqid"
check "a: no secret or token in the relay log" \
    sh -c "! grep -qF -- \"\$(cat '$T/secret')\" '$T/relay.log' && ! grep -qiE 'bearer|access_token|refresh_token|client_secret=' '$T/relay.log'"

# ---- b. sendmail(1) -> postdrop -> pickup -> m365
S="b sendmail"
make_msg "$M/b" "$S" "From: bob@contoso.test" "To: rcpt2@example.org"
check "b: sendmail -C accepts the message" \
    sh -c "sendmail -C '$PF_ETC' -f bob@contoso.test -i rcpt2@example.org < '$M/b'"
check "b: delivered to Graph" wait_sent "$S" 1
check "b: exact recipient, From, body" \
    sent_check "$S" count=1 rcpts=rcpt2@example.org from=bob@contoso.test "body=body-marker-b-sendmail"
check "b: queue empty" pf_wait_empty 10

# ---- c. content_filter listener: a local domain goes to Graph too
S="c content_filter"
qid=$(send_msg 2526 bob@contoso.test ops@local.test "$M/c" "$S" \
    "From: bob@contoso.test" "To: Ops <ops@local.test>")
check "c: delivered to Graph" wait_sent "$S" 1
check "c: exact recipient, From" sent_check "$S" count=1 rcpts=ops@local.test from=bob@contoso.test
check "c: maillog: relay=m365, not local" pf_wait_log "$qid: to=<ops@local.test>, relay=m365, .*status=sent" 5
check "c: queue empty" pf_wait_empty 10

# ---- d. 429 / 503 from sendMail: deferred in Postfix, then delivered once
dn=0
# Retry-After 6 s: the relay remembers it, so Postfix's quicker retries (2-4 s
# backoff here) defer locally and cannot deliver before the checks below.
for fault in "429 ApplicationThrottled 6" "503 ErrorServerBusy 6"; do
    read -r st code ra <<< "$fault"
    dn=$((dn + 1))
    S="d$dn $st"
    rcpt="throttled$dn@example.com"
    emu_ctl POST /_emu/faults \
	"[{\"match\": \"sendMail\", \"status\": $st, \"code\": \"$code\", \"retry_after\": $ra, \"count\": 1}]" >/dev/null
    qid=$(send_msg 2525 bob@contoso.test "$rcpt" "$M/d$dn" "$S" \
	"From: bob@contoso.test" "To: $rcpt")
    check "d: $st: maillog: deferred with a 4.x.x status" \
	pf_wait_log "$qid: to=<$rcpt>, relay=m365, .*dsn=4\.[0-9.]+, status=deferred" 10
    check "d: $st: the message waits in Postfix's queue" pf_queue_has "$rcpt"
    check "d: $st: the fault was consumed and nothing was accepted yet" fault_seen_not_sent "$S"
    check "d: $st: relay log names the deferral" \
	wait_grep 5 "$qid: to=<$rcpt>, .*status=deferred" "$T/relay.log"
    check "d: $st: after the fault, a flush delivers it" flush_until_sent pf_flush "$S" 1 15
    check "d: $st: queue empty" pf_wait_empty 10
    sleep 2
    check "d: $st: delivered exactly once" sent_check "$S" count=1 "rcpts=$rcpt"
done

# ---- e. 202 + Retry-After is success: delivered once, never resent
S="e accepted with retry-after"
emu_fault \
    '{"match": "sendMail", "action": "accept_retry_after", "retry_after": 2, "count": 1}'
qid=$(send_msg 2525 bob@contoso.test once@example.com "$M/e" "$S" \
    "From: bob@contoso.test" "To: once@example.com")
check "e: delivered" wait_sent "$S" 1
check "e: maillog: status=sent" pf_wait_log "$qid: to=<once@example.com>, relay=m365, .*status=sent" 10
check "e: queue empty" pf_wait_empty 10
for i in 1 2 3 4; do pf_flush; sleep 1; done
check "e: still exactly one message after several queue runs" sent_check "$S" count=1 rcpts=once@example.com
check "e: the 202 + Retry-After fault was used" no_faults_left

# ---- f. delegated account: device-code sign-in, revoked grant, re-login
# acct_block NAME - the "account NAME" block of m365ctl status (stdin)
acct_block() {
    awk -v name="$1" '/^account /{ f = ($2 == name) } f'
}

# login_step NAME LOGFILE - ctl_login, recorded as one test result
login_step() {
    if ctl_login "$2"; then
	ok "$1"
    else
	bad "$1"
	return 1
    fi
}

if login_step "f: m365ctl login deleg (device code, approved in the emulator)" "$T/login1.out"; then
    S="f0 delegated"
    send_msg 2525 alice@contoso.test friend@example.com "$M/f0" "$S" \
	"From: Alice <alice@contoso.test>" "To: friend@example.com" >/dev/null
    check "f: delegated account delivers" wait_sent "$S" 1
    check "f: from alice's mailbox with the delegated app" \
	sent_check "$S" count=1 rcpts=friend@example.com from=alice@contoso.test \
	    mailbox=alice@contoso.test client_id=$DELEG_ID
    check "f: queue empty" pf_wait_empty 10

    emu_ctl POST /_emu/revoke '{"user": "alice@contoso.test"}' >/dev/null
    emu_ctl POST /_emu/expire '{"user": "alice@contoso.test"}' >/dev/null
    S="f1 revoked"
    qid=$(send_msg 2525 alice@contoso.test later@example.com "$M/f1" "$S" \
	"From: Alice <alice@contoso.test>" "To: later@example.com")
    check "f: revoked grant: deferred" \
	pf_wait_log "$qid: to=<later@example.com>, relay=m365, .*dsn=4\.[0-9.]+, status=deferred" 10
    check "f: revoked grant: the message waits in the queue" pf_queue_has later@example.com
    check "f: revoked grant: nothing sent" test "$(sent_count "$S")" = 0
    "$CTL" -c "$CONF" status > "$T/status.out" 2>&1
    acct_block deleg < "$T/status.out" > "$T/status.deleg"
    check "f: m365ctl status: deleg is offline" grep -Eq 'state:[[:space:]]*offline' "$T/status.deleg"
    check "f: m365ctl status: names AADSTS50173" grep -q 'AADSTS50173' "$T/status.deleg"
    check "f: m365ctl status: remedy 'm365ctl login deleg'" grep -q 'm365ctl login deleg' "$T/status.deleg"
    check "f: m365ctl status: the app account stays online" \
	sh -c "grep -A3 '^account app' '$T/status.out' | grep -Eq 'state:[[:space:]]*online'"

    if login_step "f: m365ctl login deleg again" "$T/login2.out"; then
	check "f: after the new sign-in a flush delivers the deferred mail" flush_until_sent pf_flush "$S" 1 15
	check "f: queue empty" pf_wait_empty 10
	sleep 1
	check "f: delivered exactly once, to exactly the recipient" \
	    sent_check "$S" count=1 rcpts=later@example.com from=alice@contoso.test mailbox=alice@contoso.test
	"$CTL" -c "$CONF" status 2>&1 | acct_block deleg > "$T/status2.deleg"
	check "f: m365ctl status: deleg is online again" \
	    grep -Eq 'state:[[:space:]]*online' "$T/status2.deleg"
    fi
fi
pf_purge

# ---- g. recipients: Graph must deliver to exactly the envelope recipients
S="g1 bcc only"
send_msg 2525 bob@contoso.test hidden@example.com "$M/g1" "$S" \
    "From: bob@contoso.test" "To: undisclosed-recipients:;" >/dev/null
check "g: Bcc-only recipient delivered" wait_sent "$S" 1
check "g: Bcc-only: exactly the envelope recipient" sent_check "$S" count=1 rcpts=hidden@example.com

S="g2 to cc bcc"
send_msg 2525 bob@contoso.test to1@example.com,cc1@example.org,bcc1@example.net "$M/g2" "$S" \
    "From: bob@contoso.test" "To: To One <to1@example.com>" "Cc: cc1@example.org" >/dev/null
check "g: To+Cc+Bcc delivered" wait_sent "$S" 1
check "g: To+Cc+Bcc: exactly the three, To and Cc kept" \
    sent_check "$S" count=1 rcpts=to1@example.com,cc1@example.org,bcc1@example.net \
	to=to1@example.com cc=cc1@example.org

S="g3 split"
qid=$(send_msg 2525 bob@contoso.test x@one-a.test,y@one-b.test "$M/g3" "$S" \
    "From: bob@contoso.test" "To: x@one-a.test, y@one-b.test" "Cc: hdronly@one-a.test")
check "g: split deliveries (recipient limit 1): two Graph messages" wait_sent "$S" 2
check "g: split: each message names only its own recipient" \
    sent_check "$S" count=2 "rcpts=x@one-a.test|y@one-b.test" never=hdronly@one-a.test
check "g: split: Postfix made two m365one deliveries" \
    sh -c "[ \$(grep -c '$qid: to=<.*relay=m365one, .*status=sent' '$PF_MAILLOG') -eq 2 ]"

S="g4 header only"
send_msg 2525 bob@contoso.test a4@example.com "$M/g4" "$S" \
    "From: bob@contoso.test" "To: a4@example.com, c4@example.com" >/dev/null
check "g: recipient in the header only: delivered" wait_sent "$S" 1
check "g: recipient in the header only: gets nothing" \
    sent_check "$S" count=1 rcpts=a4@example.com never=c4@example.com

S="g5 many"
many="" tohdr=""
for i in $(seq -w 1 120); do
    many="$many,r$i@example.com"
    [ "$i" -le 60 ] && tohdr="$tohdr, r$i@example.com"
done
many=${many#,} tohdr=${tohdr#, }
qid=$(send_msg 2525 bob@contoso.test "$many" "$M/g5" "$S" \
    "From: bob@contoso.test" "To: $tohdr")
check "g: 120 recipients: delivered" wait_sent "$S" 1 30
check "g: 120 recipients: one sendMail with exactly those 120" sent_check "$S" count=1 "rcpts=$many"
check "g: 120 recipients: one m365-relay run" \
    sh -c "[ \$(grep -c '$qid: to=<r[0-9]*@example.com>, relay=m365, .*status=sent' '$PF_MAILLOG') -eq 120 ]"

S="g6 address forms"
send_msg 2525 bob@contoso.test john@example.com,ann@example.com,bo@example.org,carl@example.net,enc@example.com,q@example.org "$M/g6" "$S" \
    "From: \"Bob, Notifier\" <bob@contoso.test>" \
    "To: \"Doe, John\" <john@example.com>, Team: ann@example.com, \"Bo, B\" <bo@example.org>;" \
    "Cc: (comment) carl@example.net (Carl), =?UTF-8?B?SsO8cmdlbiBNw7xsbGVy?= <enc@example.com>, \"quote \\\"d\\\" name\" <q@example.org>" >/dev/null
check "g: address forms: delivered" wait_sent "$S" 1
check "g: address forms: exactly the six, From kept" \
    sent_check "$S" count=1 rcpts=john@example.com,ann@example.com,bo@example.org,carl@example.net,enc@example.com,q@example.org \
	from=bob@contoso.test "body=body-marker-g6-address-forms"
check "g: queue empty" pf_wait_empty 15

# ---- h. app-only with a certificate (the secret account sent a-e)
S="h certificate"
send_msg 2525 notify@cert.test certrcpt@example.com "$M/h" "$S" \
    "From: Shared <shared@contoso.test>" "To: certrcpt@example.com" >/dev/null
check "h: certificate account delivers" wait_sent "$S" 1
check "h: from the shared mailbox with the certificate app" \
    sent_check "$S" count=1 rcpts=certrcpt@example.com from=shared@contoso.test \
	mailbox=shared@contoso.test client_id=$CERT_ID
check "h: secret account delivered with its own app" \
    sent_check "a transport_maps" mailbox=bob@contoso.test client_id=$APP_ID
check "h: queue empty" pf_wait_empty 10

# ---- i. 20 parallel deliveries with an expired token: one token request
S="i parallel"
emu_ctl POST /_emu/expire "{\"client_id\": \"$APP_ID\"}" >/dev/null
tok0=$(emu_stat token_requests)
make_msg "$M/i" "$S" "From: bob@contoso.test" "To: burst@example.com"
pids=""
for i in $(seq 1 20); do
    swaks --server 127.0.0.1:2525 --from bob@contoso.test --to "burst$i@example.com" \
	--data "@$M/i" > "$M/i.$i.out" 2>&1 &
    pids="$pids $!"
done
# shellcheck disable=SC2086
wait $pids
check "i: 20 messages delivered" wait_sent "$S" 20 40
check "i: queue empty" pf_wait_empty 15
tok1=$(emu_stat token_requests)
check "i: exactly one token request for the burst (was $tok0, now $tok1)" test "$((tok1 - tok0))" -eq 1
check "i: each message went to its own recipient" \
    sent_check "$S" count=20 "rcpts=$(seq -f 'burst%g@example.com' -s '|' 1 20)"

t_done
