#!/bin/bash
#
# test-once.sh - exactly once (issue 11): the send ledger, the look-up in
# Sent Items before a resend, the request slots; m365-relay runs against
# the Microsoft 365 emulator, the MTA's retries played by running the
# relay again on the same message (as Postfix does with a queue file).
#
#   a. faults after Graph has the message (the emulator carries the
#      request out, then fails): a reset, a time-out, 500/502/503/504,
#      kill -9 of the relay while Graph has it: the retry finds the copy
#      in Sent Items: sent once, logged "(confirmed in Sent Items)"; a
#      third run: "already sent" from the ledger, no request;
#   b. 503 before Graph has it: the retry defers while sent_items_wait
#      runs, then sends: delivered once;
#   c. the Sent Items copy appears late (the emulator's sent_items_delay):
#      defers, then confirms, never a second send; the same for a draft
#      whose immutable id answers 404 until its copy is filed;
#   d. without read permission (the app has Mail.Send only): the retry
#      sends again with a logged warning naming Mail.ReadBasic.All (at
#      most the one documented duplicate); the least privilege
#      (Mail.Send + Mail.ReadBasic.All) resolves like Mail.ReadWrite;
#      m365ctl test and status say whether duplicates are possible;
#   e. a message without a Message-ID gets the same one on every retry;
#      another message with a reused Message-ID is not "already sent";
#   f. 200 deliveries, each with a kill -9 at a random point and retries
#      until sent: 0 lost, 0 duplicates (with read permission); 40 more
#      without read permission: 0 lost, every duplicate logged;
#   g. 50 parallel deliveries from one mailbox with the emulator's
#      MailboxConcurrency limit (4) on: never more than 4 at once, no
#      429, all 50 delivered once; two mailboxes in parallel: 4 each;
#   h. save_to_sent_items in an old file: a configuration error.
#
# Run by "make check"; needs python3, curl, openssl.

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top_srcdir/tests/lib.sh"

relay_setup once
[ -x "$CTL" ] || CTL=$top_builddir/relay/m365ctl	# the old layout

# conf_global FILE KEY VALUE - set KEY in [global] of FILE (replacing it)
conf_global() {
    sed -i -e "/^$2[[:space:]]*=/d" -e "s|^\[global\]\$|[global]\n$2 = $3|" "$1"
}

# conf_compat FILE - drop the keys an m365-relay without issue 11 does
# not know (so that its behaviour, not its parser, is what fails)
conf_compat() {
    local k
    for k in sent_items_wait concurrency_wait ledger_lifetime; do
	if "$RELAY" -n -c "$1" 2>&1 | grep -q "unknown key \"$k\""; then
	    echo "# note: this m365-relay does not know $k (code before issue 11)"
	    sed -i "/^$k[[:space:]]*=/d" "$1"
	fi
    done
}

conf_global "$CONF" sent_items_wait 2
conf_compat "$CONF"
APP_ID=$EMU_APP_SECRET

# msg FILE SUBJECT [HEADER...] - a message (make_msg) to x@example.net
msg() {
    local f=$1 s=$2
    shift 2
    make_msg "$f" "$s" "From: bob@contoso.test" "To: x@example.net" "$@"
}

# run QID FILE [CONF] - deliver FILE from bob@contoso.test to x@example.net
run() {
    relay "$2" -c "${3:-$CONF}" -q "$1" -f bob@contoso.test -- x@example.net
}

# logq QID - the relay's log lines of a queue id
logq() {
    grep " $1: " "$LOG"
}

# estat KEY - an emulator counter
estat() {
    emu_stat "$1"
}

# roles ROLE... - the secret app's application roles; its token renewed
roles() {
    local list
    list=$(printf '"%s",' "$@")
    emu_ctl POST /_emu/config \
	"{\"apps\": {\"$APP_ID\": {\"roles\": [${list%,}]}}}" >/dev/null
    rm -f "$T"/state/tokens/app.*
}

# -------------------- a. faults after Graph has the message: once

fault_after() {
    local name=$1 fault=$2 qid=$3 conf=${4:-$CONF} s
    s="a $name"
    emu_reset
    msg "$T/$qid.eml" "$s"
    emu_fault "$fault"
    run "$qid" "$T/$qid.eml" "$conf"
    t_eq "$name: the first try defers (75)" "$rc" 75
    t_match "$name: says it may have been accepted" "$first" \
	'^4\.[0-9]\.[0-9] .*may have (been )?accepted'
    t_eq "$name: Graph has it" "$(sent_count "$s")" 1
    run "$qid" "$T/$qid.eml" "$conf"
    t_eq "$name: the retry: sent (0)" "$rc" 0
    t_match "$name: logged as found in Sent Items" "$(logq "$qid" | tail -n 1)" \
	'status=sent \(already sent at .*, request-id .* \(confirmed in Sent Items\)\)'
    t_eq "$name: delivered once" "$(sent_count "$s")" 1
    n=$(estat sendmail_requests)
    run "$qid" "$T/$qid.eml" "$conf"
    t_eq "$name: a third run: sent (0)" "$rc" 0
    t_match "$name: the ledger says sent" "$(logq "$qid" | tail -n 1)" \
	'status=sent \(already sent at .*\(send ledger; not sent again\)\)'
    t_eq "$name: no request of the third run" "$(estat sendmail_requests)" "$n"
    t_eq "$name: still once" "$(sent_count "$s")" 1
}

fault_after "reset after commit" \
    '{"match":"sendMail","action":"reset_after_body","deliver":true}' QRESET
sed 's/^\[global\]$/[global]\ntimeout = 2/' "$CONF" >"$T/t2.conf"
fault_after "timeout after the body" \
    '{"match":"sendMail","action":"slow","deliver":true,"delay":4}' QTIME \
    "$T/t2.conf"
for st in 500 502 503 504; do
    fault_after "$st after the body" \
	"{\"match\":\"sendMail\",\"status\":$st,\"deliver\":true}" "Q$st"
done

# kill -9 while Graph has the message (its answer held back 30 s)
emu_reset
S="a kill"
msg "$T/kill.eml" "$S"
emu_fault '{"match":"sendMail","action":"slow","deliver":true,"delay":30}'
"$RELAY" -c "$CONF" -q QKILL -f bob@contoso.test -- x@example.net \
    <"$T/kill.eml" >"$T/kill.out" 2>&1 &
kpid=$!
if wait_until 10 sent_ge "$S" 1; then
    ok "kill -9: Graph accepted, the relay still waits"
else
    bad "kill -9: Graph accepted the message"
fi
kill -9 "$kpid" 2>/dev/null
wait "$kpid" 2>/dev/null
t_eq "kill -9: nothing logged for it" "$(logq QKILL | grep -c 'status=')" 0
run QKILL "$T/kill.eml"
t_eq "kill -9: the MTA's retry: sent (0)" "$rc" 0
t_match "kill -9: the retry found it in Sent Items" "$(logq QKILL | tail -n 1)" \
    'confirmed in Sent Items'
t_eq "kill -9: delivered once" "$(sent_count "$S")" 1

# ------------- b. 503 before Graph has it: wait, then send once

emu_reset
S="b not accepted"
msg "$T/b.eml" "$S"
emu_fault '{"match":"sendMail","status":503}'
run QB "$T/b.eml"
t_eq "503, not accepted: deferred" "$rc" 75
run QB "$T/b.eml"
t_eq "503: the retry at once defers" "$rc" 75
t_match "503: not in Sent Items yet, checking again until" "$first" \
    '^4\.4\.2 .*not in Sent Items of bob@contoso\.test yet .*checking again until .*then sending again'
t_eq "503: nothing sent yet" "$(sent_count "$S")" 0
sleep 2.2
run QB "$T/b.eml"
t_eq "503: after sent_items_wait: sent" "$rc" 0
t_match "503: logged: not accepted, sending again" "$(logq QB)" \
    'was not accepted: no copy in Sent Items of bob@contoso\.test [0-9]+ s later; sending again'
t_eq "503: delivered once" "$(sent_count "$S")" 1

# A split delivery (one recipient per run, as a recipient limit of 1
# makes Postfix do) is two deliveries: the copy of the first in Sent
# Items (same Message-ID) is not taken for the second.
emu_reset
S="b split"
msg "$T/split.eml" "$S" "Cc: y@example.net"
relay "$T/split.eml" -c "$CONF" -q QSPLIT -f bob@contoso.test -- x@example.net
t_eq "split: the first delivery (x) sent" "$rc" 0
emu_fault '{"match":"sendMail","status":503}'
relay "$T/split.eml" -c "$CONF" -q QSPLIT -f bob@contoso.test -- y@example.net
t_eq "split: the second delivery (y): 503, deferred" "$rc" 75
relay "$T/split.eml" -c "$CONF" -q QSPLIT -f bob@contoso.test -- y@example.net
t_eq "split: y's copy is not x's: defers while sent_items_wait runs" "$rc" 75
sleep 2.2
relay "$T/split.eml" -c "$CONF" -q QSPLIT -f bob@contoso.test -- y@example.net
t_eq "split: then y is sent" "$rc" 0
check "split: one message to x, one to y" \
    sent_check "$S" count=2 "rcpts=x@example.net|y@example.net"

# ------------- c. the Sent Items copy is late: defer, confirm, no resend

emu_reset
sed 's/^sent_items_wait = .*/sent_items_wait = 60/' "$CONF" >"$T/late.conf"
emu_ctl POST /_emu/config '{"sent_items_delay": 3}' >/dev/null
S="c late copy"
msg "$T/c.eml" "$S"
emu_fault '{"match":"sendMail","action":"reset_after_body","deliver":true}'
run QLATE "$T/c.eml" "$T/late.conf"
t_eq "late copy: first try defers" "$rc" 75
run QLATE "$T/c.eml" "$T/late.conf"
t_eq "late copy: the copy is not there yet: defers" "$rc" 75
t_match "late copy: says it checks again" "$first" 'not in Sent Items of .* yet'
t_eq "late copy: no second send" "$(sent_count "$S")" 1
sleep 3.2
run QLATE "$T/c.eml" "$T/late.conf"
t_eq "late copy: it appeared: sent (0)" "$rc" 0
t_match "late copy: confirmed in Sent Items" "$(logq QLATE | tail -n 1)" \
    'confirmed in Sent Items'
t_eq "late copy: delivered once" "$(sent_count "$S")" 1
t_eq "late copy: sendMail posted once" "$(estat sendmail_requests)" 1

# The draft path: after /send its immutable id answers 404 until the
# copy is filed ("Getting the message in Sent Items may not succeed
# immediately after sending").  Earlier code sent it a second time.
emu_reset
emu_ctl POST /_emu/reset '{"mailboxes": true}' >/dev/null
sed -i 's/^\[global\]$/[global]\nupload_budget = 1024M/' "$T/late.conf"
sed -i "s|^\\[global\\]\$|[global]\nupload_hosts = localhost:$EMU_PORT|" "$T/late.conf"
sed -i 's/^senders = @contoso.test$/&\nlarge_messages = yes\nmax_message_size = 20M/' "$T/late.conf"
conf_compat "$T/late.conf"
"$PYTHON" - "$T/big.eml" <<'EOF'
import base64, os, sys
data = base64.encodebytes(os.urandom(3200 * 1024)).replace(b"\n", b"\r\n")
with open(sys.argv[1], "wb") as f:
    f.write(b"From: bob@contoso.test\r\nTo: x@example.net\r\n"
            b"Subject: c late draft\r\nMessage-ID: <late-draft@e2e.test>\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n"
            b"\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b\r\n"
            b"Content-Type: application/octet-stream; name=a.bin\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + data +
            b"--b--\r\n")
EOF
emu_fault '{"match":"send","action":"reset_after_body","deliver":true}'
run QLATED "$T/big.eml" "$T/late.conf"
t_eq "late draft copy: the send's answer lost, the id not found: defers" "$rc" 75
t_eq "late draft copy: Graph sent it" "$(sent_count "c late draft")" 1
run QLATED "$T/big.eml" "$T/late.conf"
t_eq "late draft copy: still not in Sent Items: defers again" "$rc" 75
t_eq "late draft copy: not sent twice" "$(sent_count "c late draft")" 1
sleep 3.2
run QLATED "$T/big.eml" "$T/late.conf"
t_eq "late draft copy: found: sent (0)" "$rc" 0
t_eq "late draft copy: delivered once" "$(sent_count "c late draft")" 1
t_eq "late draft copy: one draft made" "$(estat drafts_created)" 1
emu_ctl POST /_emu/config '{"sent_items_delay": 0}' >/dev/null

# ------------------------- d. without read permission; least privilege

emu_reset
roles Mail.Send
S="d no read"
msg "$T/d.eml" "$S"
emu_fault '{"match":"sendMail","action":"reset_after_body","deliver":true}'
run QNOREAD "$T/d.eml"
t_eq "no read permission: first try defers" "$rc" 75
t_match "no read permission: may have been accepted" "$first" 'may have (been )?accepted'
run QNOREAD "$T/d.eml"
t_eq "no read permission: the retry sends again (0)" "$rc" 0
t_eq "no read permission: the one documented duplicate" "$(sent_count "$S")" 2
t_match "no read permission: the duplicate is logged with the fix" \
    "$(logq QNOREAD)" \
    'may have been accepted by Microsoft 365, and account app may not read Sent Items of bob@contoso\.test .*a duplicate is possible \(to prevent it, grant app .* Mail\.ReadBasic\.All'
"$CTL" -c "$CONF" test app >"$T/ctl.out" 2>&1
t_match "m365ctl test: duplicates possible, which permission" "$(cat "$T/ctl.out")" \
    'warn +duplicates: possible for this account'
t_match "m365ctl test: the remedy names Mail.ReadBasic.All" "$(cat "$T/ctl.out")" \
    'remedy: to prevent duplicates, grant app .* Mail\.ReadBasic\.All'

emu_reset
roles Mail.Send Mail.ReadBasic.All
S="d least privilege"
msg "$T/d2.eml" "$S"
emu_fault '{"match":"sendMail","action":"reset_after_body","deliver":true}'
run QBASIC "$T/d2.eml"
t_eq "Mail.ReadBasic.All: first try defers" "$rc" 75
run QBASIC "$T/d2.eml"
t_eq "Mail.ReadBasic.All: the retry: sent (0)" "$rc" 0
t_match "Mail.ReadBasic.All is enough to look" "$(logq QBASIC | tail -n 1)" \
    'confirmed in Sent Items'
t_eq "Mail.ReadBasic.All: delivered once" "$(sent_count "$S")" 1
"$CTL" -c "$CONF" test app >"$T/ctl.out" 2>&1
t_match "m365ctl test: duplicates prevented" "$(cat "$T/ctl.out")" \
    'ok +duplicates: prevented: Sent Items of bob@contoso\.test is readable'
roles Mail.Send Mail.ReadWrite

# m365ctl status (delegated: from the granted scopes)
if ctl_login "$T/login1.out"; then
    "$CTL" -c "$CONF" status deleg >"$T/status.out" 2>&1
    t_match "m365ctl status: duplicates possible without Mail.ReadBasic" \
	"$(cat "$T/status.out")" \
	'duplicates: +possible: .*lacks Mail\.ReadBasic\); to prevent them, add Mail\.ReadBasic to "scopes" in \[account deleg\]'
    sed -i 's/^senders = alice@contoso.test @delegated.test$/&\nscopes = Mail.ReadBasic/' "$CONF"
    if ctl_login "$T/login2.out"; then
	"$CTL" -c "$CONF" status deleg >"$T/status.out" 2>&1
	t_match "m365ctl status: prevented with Mail.ReadBasic" \
	    "$(cat "$T/status.out")" 'duplicates: +prevented: Sent Items is readable'
	"$CTL" -c "$CONF" status --json deleg >"$T/status.json" 2>&1
	t_eq "m365ctl status --json: duplicates" \
	    "$(json_eval 'd[0]["duplicates"]' <"$T/status.json")" prevented
    else
	bad "m365ctl login with scopes = Mail.ReadBasic"
    fi
else
    bad "m365ctl login deleg"
fi

# ------------------------------------------------- e. Message-ID

emu_reset
S="e no message-id"
MAKE_MSG_NO_ID=1 msg "$T/e.eml" "$S"
emu_fault '{"match":"sendMail","action":"reset_after_body","deliver":true}'
run QNOID "$T/e.eml"
t_eq "no Message-ID: first try defers" "$rc" 75
mid=$(emu_ctl GET /_emu/sent | json_eval 'd[-1]["message_id"]')
t_match "no Message-ID: the relay added one" "$mid" '^<[0-9a-f]{32}@[^>]+>$'
t_match "no Message-ID: logged" "$(logq QNOID)" "message-id=$mid \\(added"
run QNOID "$T/e.eml"
t_eq "no Message-ID: the retry finds the same one in Sent Items" "$rc" 0
t_eq "no Message-ID: delivered once" "$(sent_count "$S")" 1
t_match "no Message-ID: confirmed" "$(logq QNOID | tail -n 1)" 'confirmed in Sent Items'
# Another queue file with the same text is another message.
run QNOID2 "$T/e.eml"
t_eq "no Message-ID, another queue id: a new message" "$(sent_count "$S")" 2

emu_reset
MAKE_MSG_NO_ID=1 msg "$T/r1.eml" "e reuse one" "Message-ID: <reused@e2e.test>"
MAKE_MSG_NO_ID=1 msg "$T/r2.eml" "e reuse two" "Message-ID: <reused@e2e.test>"
run QREUSE1 "$T/r1.eml"
run QREUSE2 "$T/r2.eml"
t_eq "a reused Message-ID, another body: sent (0)" "$rc" 0
t_eq "a reused Message-ID, another body: not taken for the first" \
    "$(sent_count "e reuse two")" 1
t_match "a reused Message-ID: logged" "$(logq QREUSE2)" \
    'Message-ID <reused@e2e\.test> was used before by another message'

# ------------- f. kill -9 at random points: 0 lost, 0 unlogged duplicates

# killed_delivery I PREFIX - deliver message PREFIX-I: a first run killed
# after a random 0-60 ms, then runs until one exits 0 (the MTA's retries)
killed_delivery() {
    local i=$1 p=$2 f="$T/kill/$2-$1.eml" pid n
    "$RELAY" -c "$KCONF" -q "Q$p$i" -f bob@contoso.test -- x@example.net \
	<"$f" >/dev/null 2>&1 &
    pid=$!
    sleep "0.0$(printf '%02d' $((RANDOM % 60)))"
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    for n in $(seq 1 40); do
	"$RELAY" -c "$KCONF" -q "Q$p$i" -f bob@contoso.test -- x@example.net \
	    <"$f" >/dev/null 2>&1 && return 0
	sleep 0.3
    done
    return 1
}

# kill_round PREFIX N - N killed deliveries, 8 at a time; then the check
kill_round() {
    local p=$1 n=$2 i
    mkdir -p "$T/kill"
    for ((i = 0; i < n; i++)); do
	if [ $((i % 2)) = 0 ]; then
	    msg "$T/kill/$p-$i.eml" "f $p $i"
	else
	    MAKE_MSG_NO_ID=1 msg "$T/kill/$p-$i.eml" "f $p $i"
	fi
    done
    for ((i = 0; i < n; i++)); do
	killed_delivery "$i" "$p" &
	[ $((i % 8)) = 7 ] && wait
    done
    wait
    emu_ctl GET /_emu/sent >"$T/kill-$p.json"
    "$PYTHON" - "$T/kill-$p.json" "$p" "$n" "$LOG" <<'EOF'
import json, re, sys
recs, p, n, log = json.load(open(sys.argv[1])), sys.argv[2], int(sys.argv[3]), sys.argv[4]
lines = open(log, errors="replace").read().splitlines()
count = {}
for r in recs:
    count[r.get("subject")] = count.get(r.get("subject"), 0) + 1
lost = [i for i in range(n) if count.get("f %s %d" % (p, i), 0) == 0]
dups = [i for i in range(n) if count.get("f %s %d" % (p, i), 0) > 1]
unlogged = [i for i in dups if not any(
    (" Q%s%d: " % (p, i)) in l and "a duplicate is possible" in l for l in lines)]
unsettled = sum(1 for l in lines if re.search(r" Q%s[0-9]+: the send at .* (was accepted|was not accepted|may have been accepted by Microsoft 365, and account)" % p, l))
print("%d %d %d %d" % (len(lost), len(dups), len(unlogged), unsettled))
EOF
}

KCONF=$T/kill.conf
sed 's/^sent_items_wait = .*/sent_items_wait = 1/' "$CONF" >"$KCONF"
emu_reset
read -r lost dups unlogged unsettled <<<"$(kill_round K 200)"
echo "# 200 killed deliveries: $unsettled retries found an unsettled send"
t_eq "kill -9 x 200: none lost" "$lost" 0
t_eq "kill -9 x 200: no duplicate (read permission)" "$dups" 0
t_eq "kill -9 x 200: no unlogged duplicate" "$unlogged" 0
if [ "${unsettled:-0}" -gt 0 ]; then
    ok "kill -9 x 200: some kills hit a send in flight ($unsettled)"
else
    bad "kill -9 x 200: no kill hit a send in flight (the test proves nothing)"
fi

emu_reset
roles Mail.Send
read -r lost dups unlogged unsettled <<<"$(kill_round N 40)"
echo "# 40 killed deliveries without read permission: $dups duplicates"
t_eq "kill -9 x 40, no read permission: none lost" "$lost" 0
t_eq "kill -9 x 40, no read permission: every duplicate logged" "$unlogged" 0
roles Mail.Send Mail.ReadWrite

# ------------------------- g. at most 4 requests per app and mailbox

# burst N TAG CONF FROM MSG - N relays at once (distinct recipients
# TAGi@example.net), those that defer run again (up to 30 rounds), like
# the MTA; left: how many never exited 0; waited: how many deferred
burst() {
    local n=$1 tag=$2 conf=$3 from=$4 m=$5 i k
    local -a pids=() done=()
    waited=0
    for ((k = 0; k < 30; k++)); do
	pids=()
	for ((i = 0; i < n; i++)); do
	    [ "${done[i]:-}" = 1 ] && continue
	    "$RELAY" -c "$conf" -q "Q${tag^^}$i" -f "$from" -- \
		"$tag$i@example.net" <"$m" >>"$T/$tag$i.out" 2>&1 &
	    pids[i]=$!
	done
	[ ${#pids[@]} = 0 ] && break
	for i in "${!pids[@]}"; do
	    if wait "${pids[i]}"; then
		done[i]=1
	    else
		waited=$((waited + 1))
	    fi
	done
    done
    left=$((n - ${#done[@]}))
}

# maxconc MB - the most requests the emulator served at once for MB
maxconc() {
    emu_ctl GET /_emu/stats | json_eval "d['max_concurrent'].get('$1', 0)"
}

# once_each TAG N - each TAGi@example.net got exactly one message
once_each() {
    emu_ctl GET /_emu/sent | "$PYTHON" -c '
import json, sys
tag, n = sys.argv[1], int(sys.argv[2])
got = {}
for r in json.load(sys.stdin):
    for a in r["recipients"]:
        got[a] = got.get(a, 0) + 1
bad = [i for i in range(n) if got.get("%s%d@example.net" % (tag, i)) != 1]
sys.exit(1 if bad else 0)' "$1" "$2"
}

emu_reset
emu_ctl POST /_emu/config '{"concurrency_limit": 4}' >/dev/null
msg "$T/g.eml" "g burst"
make_msg "$T/g2.eml" "g burst two" "From: shared@contoso.test" "To: x@example.net"
run QWARM "$T/g.eml" >/dev/null
relay "$T/g2.eml" -c "$CONF" -q QWARM2 -f robot@cert.test -- x@example.net
emu_reset
emu_ctl POST /_emu/faults '[{"match":"sendMail","action":"slow","delay":1,"count":1000}]' >/dev/null
burst 50 c "$CONF" bob@contoso.test "$T/g.eml"
echo "# 50 parallel: $waited deferred tries"
t_eq "50 parallel: all delivered in the end" "$left" 0
check "50 parallel: each recipient got it once" once_each c 50
t_eq "50 parallel: never more than 4 requests at once for the mailbox" \
    "$(maxconc bob@contoso.test)" 4
t_eq "50 parallel: no MailboxConcurrency 429" "$(estat concurrency_throttled)" 0
t_match "50 parallel: the ones that waited too long: 4.7.0 mailbox busy" \
    "$(cat "$T"/c*.out; grep 'QC[0-9]*: .*deferred' "$LOG")" \
    '4\.7\.0.*mailbox bob@contoso\.test busy: all 4 concurrent Graph requests'

emu_reset
emu_ctl POST /_emu/faults '[{"match":"sendMail","action":"slow","delay":1,"count":1000}]' >/dev/null
burst 20 m "$CONF" bob@contoso.test "$T/g.eml" &
b1=$!
burst 20 n "$CONF" robot@cert.test "$T/g2.eml" &
b2=$!
wait "$b1" "$b2"
check "two mailboxes: each recipient of bob's got it once" once_each m 20
check "two mailboxes: each recipient of shared's got it once" once_each n 20
t_eq "two mailboxes: bob's got 4 at once" "$(maxconc bob@contoso.test)" 4
t_eq "two mailboxes: shared's got 4 at once" "$(maxconc shared@contoso.test)" 4
t_eq "two mailboxes: no 429" "$(estat concurrency_throttled)" 0
emu_ctl POST /_emu/config '{"concurrency_limit": 0}' >/dev/null
emu_ctl DELETE /_emu/faults >/dev/null

# ------------------------------------ h. save_to_sent_items removed

cp "$CONF" "$T/old.conf"
sed -i 's/^senders = @contoso.test$/&\nsave_to_sent_items = yes/' "$T/old.conf"
"$RELAY" -n -c "$T/old.conf" >"$T/n.out" 2>&1
t_eq "save_to_sent_items: -n exits 78" "$?" 78
t_match "save_to_sent_items: file:line, why and what to do" "$(cat "$T/n.out")" \
    'old\.conf:[0-9]+: the key save_to_sent_items was removed: .*Sent Items.*delete the line'

t_done
