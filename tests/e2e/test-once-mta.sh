#!/usr/bin/env bash
# test-once-mta.sh - exactly once (issue 11) through a real, private
# Postfix, both ways Microsoft 365 gets mail from it:
#
#   pipe   swaks -> Postfix :2525 -> queue -> pipe(8) m365 transport
#          -> m365-relay -> the Microsoft 365 emulator; the MTA's
#          retries come from Postfix's queue (same queue file);
#   milter swaks -> Postfix :2527 (smtpd_milters = m365-milter, mode =
#          deliver) -> the milter sends at the end of DATA; a failure is
#          451 to the client, which sends the message again.
#
# The fault matrix, each through both: a reset after Graph committed the
# message, a time-out after the body (Graph has it, answers late), 500,
# 502, 503 and 504 after the body (Graph has it), 503 before Graph has
# it, kill -9 of the sender while Graph holds its answer (m365-relay;
# the milter's worker), and an MTA restart between the failure and the
# retry.  With read permission (the app has Mail.ReadWrite): every
# message arrives exactly once (0 duplicates, 0 losses).  Without (the
# app has Mail.Send only): at most the one documented duplicate, always
# logged ("a duplicate is possible").  The Sent Items copy appearing late
# (the emulator's sent_items_delay): deferred, then confirmed, no resend.
#
# Needs root (namespaces, a private Postfix, useradd), postfix and swaks
# (tests/run-all.sh installs them).  Without root it is skipped (exit
# 77).

# shellcheck disable=SC2317  # helper functions run through check()
set -u

. "$(dirname "$0")/ns.sh"
e2e_start test-once-mta.sh "private Postfix, namespaces, useradd" \
    "run tests/run-all.sh as root: it installs postfix, swaks and the rest (CI does)" \
    postfix postqueue postsuper postconf swaks runuser pgrep

# ---- inside the namespaces
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/postfix.sh"

MILTER=$top_builddir/milter/m365-milter
MPORT=8897
RUSER=m365test
APP_ID=$EMU_APP_SECRET
MPID=
T0=$(date +%s)

t_init once-mta
# shellcheck disable=SC2329  # run by the EXIT trap
stop_all() {
    pf_stop
    [ -z "$MPID" ] || kill -9 "$MPID" 2>/dev/null
}
trap 'stop_all; t_cleanup' EXIT
e2e_private_hosts

if [ ! -x "$MILTER" ]; then
    bad "m365-milter is built ($MILTER missing: run make)"
    t_done
fi

# ---- emulator and configuration: sent_items_wait 2 s (a 503 that
# Graph did not carry out is sent again 2 s later), timeout 3 s
e2e_conf "$RUSER" || { bad "emulator starts"; t_done; }
conf_real_hosts "$CONF"
sed -i -e '/^sent_items_wait[[:space:]]*=/d' \
    -e 's/^\[global\]$/[global]\nsent_items_wait = 2\ntimeout = 3/' "$CONF"
cat >> "$CONF" <<EOF

[milter]
mode = deliver
socket = inet:$MPORT@127.0.0.1
deliver_domains = milter.test
tmp_dir = $T/spool
EOF
# An m365-relay without issue 11 does not know sent_items_wait: drop it
# (so that what fails on such code is its behaviour, not its parser).
if "$RELAY" -n -c "$CONF" 2>&1 | grep -q 'unknown key "sent_items_wait"'; then
    echo "# note: this m365-relay does not know sent_items_wait (code before issue 11)"
    sed -i '/^sent_items_wait[[:space:]]*=/d' "$CONF"
fi
e2e_user "$RUSER" || { bad "create user $RUSER"; t_done; }
mkdir -p "$T/spool" "$T/run"
chown "$RUSER" "$T/spool" "$T/run"
chmod 700 "$T/spool" "$T/run"
check "m365-relay -n as $RUSER: configuration OK" \
    sh -c "runuser -u $RUSER -- '$RELAY' -c '$CONF' -n 2>&1 | grep -q 'configuration OK'"

# start_milter - m365-milter (deliver mode) in the foreground; it drops
# to $RUSER; MPID is its supervisor
start_milter() {
    "$MILTER" -c "$CONF" -f -P "$T/run/milter.pid" >> "$T/milter.out" 2>&1 &
    MPID=$!
    wait_port "$MPORT"
}
start_milter || { sed 's/^/#   /' "$T/milter.out"; bad "m365-milter listens on :$MPORT"; t_done; }

# ---- Postfix: :2525 routes example.com to the m365 pipe transport;
# :2527 has the milter; milter.test is discarded by Postfix itself, so a
# recipient the milter failed to remove never reaches Graph a second way
PF_RELAY=$RELAY PF_CONF=$CONF pf_setup "$T/pf" 2525 2526 ||
    { bad "private Postfix set up"; t_done; }
postconf -c "$PF_ETC" -e \
    "relay_domains = $(postconf -c "$PF_ETC" -h relay_domains) milter.test" \
    "milter_default_action = tempfail" "milter_protocol = 6"
printf 'milter.test\tdiscard:left in the message by the milter\n' >> "$PF_ETC/transport"
cat >> "$PF_ETC/master.cf" <<EOF
127.0.0.1:2527	inet	n	-	n	-	-	smtpd
  -o smtpd_milters=inet:127.0.0.1:$MPORT
  -o syslog_name=postfix-test/milter
EOF
check "postfix check with the milter listener" postfix -c "$PF_ETC" check
pf_start && wait_port 2527 || { bad "private Postfix starts"; t_done; }
ok "private Postfix: :2525 pipe transport, :2527 m365-milter deliver mode"
M=$T/msg
mkdir -p "$M"

# ---- helpers

# relay_log QID - the lines of a queue id in the relay's and milter's log
relay_log() {
    grep -E " $1: " "$T/relay.log"
}

# roles ROLE... - the app's application roles; its tokens expire
roles() {
    local list
    list=$(printf '"%s",' "$@")
    emu_ctl POST /_emu/config \
	"{\"apps\": {\"$APP_ID\": {\"roles\": [${list%,}]}}}" >/dev/null
    emu_ctl POST /_emu/expire "{\"client_id\": \"$APP_ID\"}" >/dev/null
}

# relay_pid QID - the m365-relay process Postfix runs for a queue id
relay_pid() {
    pgrep -f -- "m365-relay .*-q $1 " | head -n 1
}

# worker - the milter's worker process (the supervisor's child)
worker() {
    pgrep -P "$MPID" | head -n 1
}

# restart_mta - Postfix down and up again (its queue stays)
restart_mta() {
    pf_stop
    sleep 0.5
    pf_start && wait_port 2527
}

# drain QID SECS - flush Postfix's queue until QID is gone from it
drain() {
    local i
    for ((i = 0; i < $2 * 2; i++)); do
	pf_queue_empty && return 0
	pf_flush
	sleep 0.5
    done
    pf_queue_empty
}

# once_or_logged SUBJECT QID... - no read permission: delivered once, or
# twice with the duplicate logged (at most the documented one)
once_or_logged() {
    local s=$1 n q
    shift
    n=$(sent_count "$s")
    [ "$n" = 1 ] && return 0
    [ "$n" = 2 ] || { echo "  $n copies of '$s'" >&2; return 1; }
    for q in "$@"; do
	relay_log "$q" | grep -q 'a duplicate is possible' && return 0
    done
    echo "  2 copies of '$s', and no log line says a duplicate is possible" >&2
    return 1
}

# pipe_case NAME FAULT MODE [WANT] - through Postfix's queue and pipe(8).
# MODE: plain, restart (Postfix restarted before the retry), kill
# (m365-relay killed while Graph holds its answer).  WANT: once (read
# permission: exactly one copy, the retry confirmed in Sent Items or
# "not accepted" as the fault says) or logged (no read permission)
pipe_case() {
    local name=$1 fault=$2 mode=$3 want=${4:-once} s rcpt pid
    s="pipe $name"
    rcpt="p$(date +%s%N | tail -c 7)@example.com"
    emu_fault "$fault"
    qid=$(send_msg 2525 bob@contoso.test "$rcpt" "$M/p" "$s" \
	"From: bob@contoso.test" "To: $rcpt")
    check "pipe $name: Postfix accepted it" test -n "$qid"
    if [ "$mode" = kill ]; then
	check "pipe $name: Graph has it while m365-relay waits" wait_sent "$s" 1 15
	pid=$(relay_pid "$qid")
	check "pipe $name: the m365-relay process found" test -n "$pid"
	[ -n "$pid" ] && kill -9 "$pid"
	check "pipe $name: Postfix defers it (the command died)" \
	    pf_wait_log "$qid: to=<$rcpt>, relay=m365, .*status=deferred" 20
    else
	check "pipe $name: the first try deferred" \
	    pf_wait_log "$qid: to=<$rcpt>, relay=m365, .*dsn=4\.[0-9.]+, status=deferred" 20
    fi
    [ "$mode" = restart ] && { restart_mta || bad "pipe $name: Postfix restarted"; }
    check "pipe $name: Postfix's retries drain the queue" drain "$qid" 40
    sleep 0.5
    if [ "$want" = once ]; then
	check "pipe $name: delivered exactly once" sent_check "$s" count=1 "rcpts=$rcpt"
	check "pipe $name: the retry was settled by the ledger or Sent Items" \
	    sh -c "grep -E ' $qid: .*(confirmed in Sent Items|was not accepted|send ledger)' '$T/relay.log'"
    else
	check "pipe $name: at most one duplicate, and it is logged" once_or_logged "$s" "$qid"
	check "pipe $name: not lost" sent_ge "$s" 1
    fi
}

# milter_case NAME FAULT MODE [WANT] - through m365-milter at SMTP time:
# 451 to the client, which sends the same message again.  MODE: plain,
# restart (Postfix restarted before the client's resend), kill (the
# milter's worker killed while Graph holds its answer)
milter_case() {
    local name=$1 fault=$2 mode=$3 want=${4:-once} s rcpt i spid wpid
    s="milter $name"
    rcpt="m$(date +%s%N | tail -c 7)@milter.test"
    make_msg "$M/m" "$s" "From: bob@contoso.test" "To: $rcpt"
    emu_fault "$fault"
    if [ "$mode" = kill ]; then
	smtp_send 2527 bob@contoso.test "$rcpt" "$M/m" >/dev/null &
	spid=$!
	check "milter $name: Graph has it while the milter waits" wait_sent "$s" 1 15
	wpid=$(worker)
	check "milter $name: the milter's worker found" test -n "$wpid"
	[ -n "$wpid" ] && kill -9 "$wpid"
	wait "$spid"
	wait "$MPID" 2>/dev/null
	MPID=
	start_milter || bad "milter $name: m365-milter started again"
    else
	smtp_send 2527 bob@contoso.test "$rcpt" "$M/m" >/dev/null
    fi
    check "milter $name: the client got 451 4.x.x" swaks_said "$M/m" '451 4\.'
    [ "$mode" = restart ] && { restart_mta || bad "milter $name: Postfix restarted"; }
    # The client tries again (an application, an MTA queue) until 250.
    qid=
    for ((i = 0; i < 20; i++)); do
	qid=$(smtp_send 2527 bob@contoso.test "$rcpt" "$M/m")
	[ -n "$qid" ] && break
	sleep 1
    done
    check "milter $name: the client's resend: 250" test -n "$qid"
    sleep 0.5
    if [ "$want" = once ]; then
	check "milter $name: delivered exactly once" sent_check "$s" count=1 "rcpts=$rcpt"
	check "milter $name: the resend was settled by Sent Items" \
	    sh -c "grep -E ' $qid: .*(confirmed in Sent Items|was not accepted)' '$T/relay.log'"
    else
	check "milter $name: at most one duplicate, and it is logged" \
	    once_or_logged "$s" $(grep -oE ' [0-9A-F]{6,}: to=<'"$rcpt"'>' "$T/relay.log" | awk '{print $1}' | tr -d :)
	check "milter $name: not lost" sent_ge "$s" 1
    fi
    check "milter $name: Postfix delivered it to nobody itself" \
	sh -c "! grep -q 'to=<$rcpt>, relay=none' '$PF_MAILLOG'"
}

# ---- the matrix, with read permission
RESET='{"match":"sendMail","action":"reset_after_body","deliver":true}'
SLOW='{"match":"sendMail","action":"slow","deliver":true,"delay":6}'
HOLD='{"match":"sendMail","action":"slow","deliver":true,"delay":60}'
NOTYET='{"match":"sendMail","status":503}'

for way in pipe milter; do
    ${way}_case "reset after commit" "$RESET" plain
    ${way}_case "timeout after the body" "$SLOW" plain
    for st in 500 502 503 504; do
	${way}_case "$st after the body" "{\"match\":\"sendMail\",\"status\":$st,\"deliver\":true}" plain
    done
    ${way}_case "503 before Graph has it" "$NOTYET" plain
    ${way}_case "kill -9 while Graph holds the answer" "$HOLD" kill
    ${way}_case "reset after commit, MTA restart" "$RESET" restart
    ${way}_case "503 after the body, MTA restart" \
	'{"match":"sendMail","status":503,"deliver":true}' restart
done

# restart_milter - a new m365-milter reads the changed configuration
restart_milter() {
    term_wait "$MPID"
    MPID=
    start_milter || bad "m365-milter started again"
}

# ---- the Sent Items copy appears late: defer, confirm, never resend
sed -i 's/^sent_items_wait = 2$/sent_items_wait = 60/' "$CONF"
restart_milter
emu_ctl POST /_emu/config '{"sent_items_delay": 6}' >/dev/null
pipe_case "late Sent Items copy" "$RESET" plain
t_match "pipe late copy: deferred while the copy was missing" \
    "$(relay_log "$qid")" 'not in Sent Items of bob@contoso\.test yet'
milter_case "late Sent Items copy" "$RESET" plain
t_match "milter late copy: 451 while the copy was missing" \
    "$(grep -h 'not in Sent Items of bob@contoso.test yet' "$T/relay.log" | grep -c milter)" '^[1-9]'
emu_ctl POST /_emu/config '{"sent_items_delay": 0}' >/dev/null
sed -i 's/^sent_items_wait = 60$/sent_items_wait = 2/' "$CONF"
restart_milter

# ---- without read permission: at most the documented duplicate, logged
roles Mail.Send
for way in pipe milter; do
    ${way}_case "no read: reset after commit" "$RESET" plain logged
    ${way}_case "no read: 503 after the body" \
	'{"match":"sendMail","status":503,"deliver":true}' plain logged
    ${way}_case "no read: kill -9" "$HOLD" kill logged
done
check "no read: the log names the permission that prevents duplicates" \
    grep -q 'a duplicate is possible (to prevent it, grant app .* Mail.ReadBasic.All' "$T/relay.log"
roles Mail.Send Mail.ReadWrite

echo "# test-once-mta.sh: $(( $(date +%s) - T0 )) s"
t_done
