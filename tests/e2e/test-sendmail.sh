#!/usr/bin/env bash
# test-sendmail.sh - end to end through a real, private Sendmail 8.17
# (the Debian packages, unpacked, not installed; tests/sendmail.sh):
#
#   1. swaks -> Sendmail -> mailertable -> the m365 mailer of
#      contrib/sendmail/m365.m4 -> m365-relay (as an unprivileged user)
#      -> the Microsoft 365 emulator.  Exit 75 leaves the message in
#      Sendmail's queue; "sendmail -q" delivers it once afterwards.
#   2. swaks -> Sendmail with INPUT_MAIL_FILTER (contrib/sendmail/
#      milter.mc) -> m365-milter in deliver mode -> the emulator.  The
#      milter removes the recipients it delivered and the message is
#      discarded when none is left; a transient Graph failure is a 451
#      to the client, whose resend is delivered exactly once; local
#      recipients continue to Sendmail's own mailer.
#
# Needs root (namespaces, Sendmail running mailers as other users,
# useradd), swaks, m4, libwrap0 and the apt mirror for the Sendmail
# packages (cached in $top_builddir/tests/.sendmail-debs);
# tests/run-all.sh installs what is missing.  Without root it is skipped
# (exit 77).  It re-executes itself inside private net/uts/mount/pid
# namespaces: the only network is loopback, /etc/hosts (with the FQDN on
# 127.0.0.1 and ::1, or Sendmail sleeps 60 s) and resolv.conf are
# private, and every process it started dies with it.

# shellcheck disable=SC2317  # helper functions run through check()
set -u

. "$(dirname "$0")/ns.sh"

if [ -z "${M365_E2E_IN_NS:-}" ]; then
    e2e_outside test-sendmail.sh "private Sendmail, namespaces, useradd" \
	"run tests/run-all.sh, which installs them (as root)" \
	swaks runuser m4 dpkg apt-get useradd
    . "$top_srcdir/tests/sendmail.sh"
    # The Sendmail packages come from the apt mirror: fetch them before
    # the network namespace cuts it off.
    if ! sm_fetch || ! sm_check_libs; then
	echo "not ok - the unpacked Sendmail 8.17 is not usable (see above)"
	echo "  run tests/run-all.sh, which installs them (libwrap0, and the sendmail packages via apt-get download)"
	echo "0 passed, 1 failed"
	exit 1
    fi
    # Sendmail logs only through syslog(3), to the one /dev/log of the
    # machine (a mount namespace does not give it its own /dev): two runs at
    # once would catch each other's lines.  Take turns.
    exec 9>"${TMPDIR:-/tmp}/m365relay-test-sendmail.lock"
    flock -w 600 9 || { echo "not ok - another test-sendmail.sh holds the lock"; echo "0 passed, 1 failed"; exit 1; }
    e2e_enter "$@"
fi

# ---- inside the namespaces
e2e_inside

. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/sendmail.sh"

MILTER=$top_builddir/milter/m365-milter
SMPORT=2526
MPORT=8894
RUSER=m365test
MPID=

t_init sendmail
# shellcheck disable=SC2329  # run by the EXIT trap
stop_all() {
    sm_stop
    stop_milter
    sm_syslog_stop
}
trap 'stop_all; t_cleanup' EXIT

e2e_private_hosts

# ---- emulator, configuration, the unprivileged user
e2e_conf "$RUSER" || { bad "emulator starts"; t_done; }
e2e_user "$RUSER" || { bad "create user $RUSER"; t_done; }
M=$T/msg
mkdir -p "$M"

# ---- helpers (and from tests/lib.sh: make_msg, smtp_send, swaks_said,
# sent_count, wait_sent, sent_check, flush_until_sent, term_wait)

# local_is RCPT N - the file sink holds exactly N deliveries for RCPT
local_is() {
    [ "$(sm_local_count "$1")" -eq "$2" ]
}

# stop_milter - stop m365-milter (SIGTERM; libmilter may take ~5 s)
stop_milter() {
    [ -n "$MPID" ] || return 0
    term_wait "$MPID" 8
    MPID=
}

# ======================================================================
# 1. The m365 mailer (contrib/sendmail/m365.m4) with m365-relay
SM_RELAY=$RELAY SM_CONF=$CONF SM_MAILER_USER=$RUSER SM_MILTER='' \
    sm_setup "$T/sm1" "$SMPORT" || { bad "Sendmail with the m365 mailer set up"; t_done; }
check "m365.m4: the .cf defines mailer m365 running m365-relay as $RUSER with \$i \$g \$u" \
    grep -Eq "^Mm365,.*P=$RELAY, F=[A-Za-z0-9]*m[A-Za-z0-9]*, U=$RUSER:" "$SM_CF"
check "m365.m4: A= passes -c CONF -q \$i -f \$g -- \$u" \
    grep -Eq "A=m365-relay -c $CONF -q \\\$i -f \\\$g -- \\\$u" "$SM_CF"
check "mailertable: /parse routes bob@example.com to mailer m365, host graph" \
    sh -c "printf '/parse r@example.com\n' | '$SM_BIN' -C '$SM_CF' -bt 2>&1 | grep -q 'mailer m365, host graph'"
sm_start || { bad "Sendmail (m365 mailer) starts on 127.0.0.1:$SMPORT"; t_done; }
ok "Sendmail 8.17 listens on 127.0.0.1:$SMPORT (m365 mailer)"

# m1: two domains, one message, one m365-relay run, one Graph message
S="m1 mailer"
qid=$(send_msg "$SMPORT" bob@contoso.test r1@example.com,r2@example.org "$M/m1" "$S" \
    "From: Bob <bob@contoso.test>" "To: r1@example.com, r2@example.org")
check "m1: Sendmail accepted the message" test -n "$qid"
check "m1: delivered to Graph" wait_sent "$S" 1
check "m1: one Graph message to exactly r1 and r2 (batched by F=m)" \
    sent_check "$S" count=1 rcpts=r1@example.com,r2@example.org body="body-marker-m1-mailer"
check "m1: Sendmail's queue is empty" sm_wait_empty 10
check "m1: Sendmail logged mailer=m365 stat=Sent" \
    sm_wait_log "$qid: to=.*mailer=m365, .*stat=Sent" 5
check "m1: m365-relay logged Sendmail's queue id (\$i) for both recipients" \
    sh -c "grep -q '$qid: to=<r1@example.com>, .*status=sent' '$T/relay.log' &&
	   grep -q '$qid: to=<r2@example.org>, .*status=sent' '$T/relay.log'"
check "m1: nothing went to the local sink" test "$(sm_local_count)" -eq 0
sleep 1
check "m1: still exactly one Graph message" sent_check "$S" count=1 rcpts=r1@example.com,r2@example.org

# m2: 503 from Graph -> exit 75 -> queued; "sendmail -q" delivers once
S="m2 deferred"
emu_fault \
    '{"match": "sendMail", "status": 503, "code": "ErrorServerBusy", "retry_after": 1, "count": 1}'
qid=$(send_msg "$SMPORT" bob@contoso.test later@example.com "$M/m2" "$S" \
    "From: bob@contoso.test" "To: later@example.com")
check "m2: Sendmail accepted the message" test -n "$qid"
check "m2: the mailer's exit 75 was logged as Deferred" \
    sm_wait_log "$qid: to=.*mailer=m365, .*stat=Deferred" 15
check "m2: sendmail -bp lists the message" sm_queue_has later@example.com
check "m2: nothing accepted by Graph yet" test "$(sent_count "$S")" -eq 0
sleep 1.5
check "m2: after the fault, sendmail -q delivers it" flush_until_sent sm_flush "$S" 1 10
check "m2: queue empty" sm_wait_empty 10
sm_flush
sleep 1
check "m2: delivered exactly once, to exactly the recipient" sent_check "$S" count=1 rcpts=later@example.com

# m3: a permanent Graph error bounces (the DSN goes to the sender)
S="m3 permanent"
emu_fault \
    '{"match": "sendMail", "status": 400, "code": "ErrorInvalidRecipients", "message": "At least one recipient is not valid.", "count": 1}'
qid=$(send_msg "$SMPORT" bob@contoso.test bad@example.com "$M/m3" "$S" \
    "From: bob@contoso.test" "To: bad@example.com")
check "m3: Sendmail logged a permanent failure of the m365 mailer" \
    sm_wait_log "$qid: to=.*mailer=m365, .*dsn=5\.[0-9.]+, stat=" 15
check "m3: nothing accepted by Graph" test "$(sent_count "$S")" -eq 0
check "m3: a bounce went back to the sender" \
    wait_until 15 sh -c "[ \$(grep -liF -x 'X-Envelope-To: bob@contoso.test' '$SM_LOCAL'/*.eml 2>/dev/null | wc -l) -ge 1 ]"
check "m3: the bounce names Graph's reason" \
    sh -c "grep -l 'X-Envelope-To: bob@contoso.test' '$SM_LOCAL'/*.eml | xargs grep -q 'ErrorInvalidRecipients'"
check "m3: queue empty" sm_wait_empty 10
sm_stop

# ======================================================================
# 2. INPUT_MAIL_FILTER -> m365-milter in deliver mode
if [ ! -x "$MILTER" ]; then
    bad "m365-milter is built ($MILTER missing: run make)"
    t_done
fi
cp "$CONF" "$T/milter.conf"
cat >> "$T/milter.conf" <<EOF

[milter]
mode = deliver
socket = inet:$MPORT@127.0.0.1
deliver_domains = example.com example.org
tmp_dir = $T/spool
EOF
mkdir -p "$T/spool"
chown "$RUSER" "$T/spool"
chmod 700 "$T/spool"
chmod 644 "$T/milter.conf"
check "m365-milter -n: configuration OK" \
    sh -c "'$MILTER' -c '$T/milter.conf' -n 2>&1 | grep -q 'configuration OK'"
"$MILTER" -c "$T/milter.conf" -f -P "$T/milter.pid" > "$T/milter.out" 2>&1 &
MPID=$!
if ! wait_port "$MPORT"; then
    sed 's/^/#   /' "$T/milter.out"
    bad "m365-milter listens on 127.0.0.1:$MPORT"
    t_done
fi
ok "m365-milter (deliver mode) listens on 127.0.0.1:$MPORT"
check "m365-milter dropped root: runs as $RUSER" \
    wait_until 5 sh -c "[ \"\$(awk '/^Uid:/ {print \$2}' /proc/$MPID/status)\" = \"\$(id -u $RUSER)\" ]"

SM_MILTER=inet:$MPORT@127.0.0.1 SM_RELAY='' \
    sm_setup "$T/sm2" "$SMPORT" || { bad "Sendmail with INPUT_MAIL_FILTER set up"; t_done; }
check "milter.mc: the .cf has the m365 filter on inet:$MPORT@127.0.0.1 with F=T" \
    grep -Eq "^Xm365, S=inet:$MPORT@127\.0\.0\.1, F=T," "$SM_CF"
sm_start || { bad "Sendmail (milter) starts on 127.0.0.1:$SMPORT"; t_done; }
ok "Sendmail 8.17 listens on 127.0.0.1:$SMPORT (INPUT_MAIL_FILTER m365)"

# d1: all recipients are Graph's: delivered by the milter, discarded
S="d1 deliver"
qid=$(send_msg "$SMPORT" bob@contoso.test a@example.com,b@example.org "$M/d1" "$S" \
    "From: Bob <bob@contoso.test>" "To: a@example.com" "Cc: b@example.org")
check "d1: swaks got 250 (Sendmail queue id $qid)" test -n "$qid"
check "d1: delivered to Graph before the 250" test "$(sent_count "$S")" -ge 1
check "d1: one Graph message to exactly a and b" \
    sent_check "$S" count=1 rcpts=a@example.com,b@example.org body="body-marker-d1-deliver"
check "d1: discarded: Sendmail's queue is empty" sm_wait_empty 10
sleep 1
check "d1: Sendmail delivered nothing itself" test "$(sm_local_count)" -eq 0
check "d1: the milter logged Sendmail's queue id with status=sent" \
    grep -Eq "$qid: to=<a@example\.com>, relay=.*status=sent" "$T/relay.log"
check "d1: still exactly one Graph message" sent_check "$S" count=1 rcpts=a@example.com,b@example.org

# d2: 503 from Graph -> 451 to the client; its resend goes out once
S="d2 transient"
emu_fault \
    '{"match": "sendMail", "status": 503, "code": "ErrorServerBusy", "retry_after": 1, "count": 1}'
qid=$(send_msg "$SMPORT" bob@contoso.test t@example.com "$M/d2" "$S" \
    "From: bob@contoso.test" "To: t@example.com")
check "d2: swaks got no 250" test -z "$qid"
check "d2: swaks got 451 4.x.x at the end of DATA" swaks_said "$M/d2" '451 4\.[0-9]+\.[0-9]+'
check "d2: Graph accepted nothing" test "$(sent_count "$S")" -eq 0
check "d2: Sendmail kept nothing" sm_wait_empty 5
# The client retries (like an application or an MTA queue would) until
# the fault and its Retry-After are over.
tries=0
qid=
while [ "$tries" -lt 20 ]; do
    tries=$((tries + 1))
    qid=$(smtp_send "$SMPORT" bob@contoso.test t@example.com "$M/d2")
    [ -n "$qid" ] && break
    swaks_said "$M/d2" '4[0-9][0-9] ' || break
    sleep 0.5
done
check "d2: a resend is accepted (after $tries tries)" test -n "$qid"
sleep 1
check "d2: delivered exactly once" sent_check "$S" count=1 rcpts=t@example.com
check "d2: queue empty" sm_wait_empty 5
check "d2: Sendmail delivered nothing itself" test "$(sm_local_count)" -eq 0

# d3: mixed Graph + local recipients
S="d3 mixed"
qid=$(send_msg "$SMPORT" bob@contoso.test c@example.com,ops@local.test "$M/d3" "$S" \
    "From: bob@contoso.test" "To: c@example.com, Ops <ops@local.test>")
check "d3: swaks got 250" test -n "$qid"
check "d3: one Graph message to exactly c@example.com (deliver_domains)" \
    sent_check "$S" count=1 rcpts=c@example.com body="body-marker-d3-mixed"
check "d3: Sendmail delivered ops@local.test with its own mailer" \
    wait_until 10 local_is ops@local.test 1
check "d3: that copy is the message" \
    sh -c "grep -l 'body-marker-d3-mixed' '$SM_LOCAL'/*.eml | xargs grep -qixF 'X-Envelope-To: ops@local.test'"
check "d3: Sendmail did not deliver c@example.com as well" test "$(sm_local_count c@example.com)" -eq 0
check "d3: Sendmail logged the local delivery stat=Sent" \
    sm_wait_log "$qid: to=.*ops@local.test.*mailer=sinkfile, .*stat=Sent" 5
check "d3: queue empty" sm_wait_empty 10
sleep 1
check "d3: still exactly one Graph message" sent_check "$S" count=1 rcpts=c@example.com

# d4: only local recipients: the milter sends nothing
S="d4 local only"
qid=$(send_msg "$SMPORT" bob@contoso.test desk@local.test "$M/d4" "$S" \
    "From: bob@contoso.test" "To: desk@local.test")
check "d4: swaks got 250" test -n "$qid"
check "d4: delivered locally" wait_until 10 local_is desk@local.test 1
check "d4: nothing went to Graph" test "$(sent_count "$S")" -eq 0

# d5: the milter is down: F=T makes Sendmail answer 4xx (nothing lost)
stop_milter
S="d5 milter down"
qid=$(send_msg "$SMPORT" bob@contoso.test down@example.com "$M/d5" "$S" \
    "From: bob@contoso.test" "To: down@example.com")
check "d5: milter down: no 250" test -z "$qid"
check "d5: milter down: a 4xx reply" swaks_said "$M/d5" '4[0-9][0-9] 4\.'
check "d5: nothing queued, nothing sent" \
    sh -c "[ \$(find '$SM_DIR/spool/mqueue' -name 'qf*' | wc -l) -eq 0 ] && [ \$(ls '$SM_LOCAL' | grep -c down) -eq 0 ]"

sm_stop
t_done
