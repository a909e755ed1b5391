#!/bin/bash
#
# milter.sh - benchmark: Postfix throughput with and without m365-milter
# (filter mode), and the milter's memory after many messages
#
#	bash tests/bench/milter.sh            (as root, after "make")
#
# A benchmark, not a test (not in "make check").  It starts a private
# Postfix on loopback (tests/postfix.sh) whose test domain bench.test
# goes to discard(8), so that only SMTP, Postfix and the milter are
# measured (Graph delivery is measured by tests/bench/relay.sh), then:
#
#   1. no milter:    BENCH_N (2,000) messages of 1 KB with smtp-source
#   2. with milter, TCP: the same, smtpd_milters = m365-milter on
#                    inet:127.0.0.1 (filter mode, rewrite_sender/
#                    rewrite_from/add_reply_to/add_message_id all on:
#                    every message is changed)
#   3. with milter, unix socket: the same through a second m365-milter
#                    instance listening on a unix socket
#   4. more messages through the unix-socket milter until BENCH_TOTAL
#      (10,000) have passed it
#
# and prints messages/s per phase (first submission until discard(8)
# logged the last one) and the milter's VmRSS / VmHWM (/proc/PID/status)
# at start, after phase 3 and after BENCH_TOTAL messages.  Memory that
# keeps growing between the last two points would mean a leak per
# message.  (TCP is much slower than the unix socket for ANY milter:
# small milter packets on loopback TCP wait for delayed ACKs; the same
# happens with a 15-line libmilter milter.)
#
# Settings (environment): BENCH_N (2000), BENCH_TOTAL (10000),
# BENCH_SESSIONS (smtp-source parallel sessions, 8), BENCH_SIZE (1024
# bytes), BENCH_PORT (2625; it also uses the next port), BENCH_MPORT
# (TCP milter port, 8896), KEEP_TMP=1 keeps the work directory.
#
# It re-executes itself in private net/uts/mount/pid namespaces (only
# loopback, private /etc/hosts): every process it started dies with it.

set -u

. "$(dirname "$0")/../e2e/ns.sh"
. "$top_srcdir/tests/lib.sh"

[ "$(id -u)" = 0 ] || bench_die "run as root (a private Postfix needs root)"
[ -n "${M365_E2E_IN_NS:-}" ] || e2e_enter "$@"
e2e_inside
. "$top_srcdir/tests/postfix.sh"

N=${BENCH_N:-2000}
TOTAL=${BENCH_TOTAL:-10000}
SESSIONS=${BENCH_SESSIONS:-8}
SIZE=${BENCH_SIZE:-1024}
PORT=${BENCH_PORT:-2625}
MPORT=${BENCH_MPORT:-8896}
MILTER=$top_builddir/milter/m365-milter
RUSER=${PF_RELAY_USER:-m365test}

[ -x "$MILTER" ] || bench_die "$MILTER not built: run make first"
[ -x "$RELAY" ] || bench_die "$RELAY not built: run make first"
SMTP_SOURCE=$(command -v smtp-source || echo /usr/sbin/smtp-source)
[ -x "$SMTP_SOURCE" ] || bench_die "smtp-source missing (Debian package postfix)"
[ "$TOTAL" -ge "$N" ] || bench_die "BENCH_TOTAL ($TOTAL) must be >= BENCH_N ($N)"

t_init bench-milter
MPID=
MPID_TCP=
trap 'rc=$?; pf_stop; kill -9 $MPID $MPID_TCP 2>/dev/null; (exit $rc); t_cleanup' EXIT

e2e_private_hosts

# The configuration needs a Graph endpoint only on paper: filter mode
# never calls it.  The emulator is started anyway, as for every test.
e2e_conf "$RUSER"
e2e_user "$RUSER" || bench_die "cannot create user $RUSER"
MCONF=$T/milter.conf
filter_conf "$MCONF" reject "$MPORT" bench.e2e.test
mkdir -p "$T/spool"
chown "$RUSER" "$T/spool"
chmod 700 "$T/spool"

# A second instance on a unix socket that Postfix's smtpd (running as
# its mail_owner) may use: socket_mode 0666 here instead of adding the
# mail_owner to the milter user's group.  The milter's user creates the
# socket: the directory is its own.
mkdir -p "$T/run"
chown "$RUSER" "$T/run"
MSOCK=$T/run/milter.sock
sed -e "s|^socket = .*|socket = unix:$MSOCK\nsocket_mode = 0666|" "$MCONF" > "$T/unix.conf"
chmod 644 "$T/unix.conf"

"$MILTER" -c "$MCONF" -f > "$T/milter.out" 2>&1 &
MPID_TCP=$!
disown "$MPID_TCP"
wait_port "$MPORT" || { cat "$T/milter.out" >&2; bench_die "m365-milter (TCP) did not start"; }
"$MILTER" -c "$T/unix.conf" -f > "$T/milter-unix.out" 2>&1 &
MPID=$!
disown "$MPID"
wait_until 10 test -S "$MSOCK" ||
    { cat "$T/milter-unix.out" >&2; tail -n 3 "$T/relay.log" >&2; bench_die "m365-milter (unix socket) did not start"; }

PF_RELAY=$RELAY PF_CONF=$CONF pf_setup "$T/pf" "$PORT" || bench_die "pf_setup failed"
postconf -c "$PF_ETC" -e "local_header_rewrite_clients =" \
    "relay_domains = $(postconf -c "$PF_ETC" -h relay_domains) bench.test" \
    "smtpd_milters =" "non_smtpd_milters =" "milter_default_action = tempfail"
printf 'bench.test\tdiscard:benchmark\n' >> "$PF_ETC/transport"
pf_start || bench_die "the private Postfix did not start (see $PF_MAILLOG)"

# The message: From: the app (account "app", senders @contoso.test), no
# Message-ID, so the milter changes sender, From:, Reply-To: and adds a
# Message-ID in every message.
sized_msg "$T/msg.eml" "$SIZE" "Bench App <app@contoso.test>" sink@bench.test \
    "m365-milter benchmark"

# discarded_count - messages discard(8) has finished so far
discarded_count() {
    grep -c 'relay=none, .*status=sent (benchmark)' "$PF_MAILLOG" 2>/dev/null || true
}

# vm KEY [PID] - VmRSS / VmHWM of the (unix-socket) milter in kB
vm() {
    awk -v k="$1:" '$1 == k { print $2 }' "/proc/${2:-$MPID}/status"
}

# run COUNT - submit COUNT messages, wait until all were discarded;
# sets WALL (seconds) and RATE (messages/s)
run() {
    local count=$1 before t0 t1 i
    before=$(discarded_count)
    t0=$(date +%s.%N)
    "$SMTP_SOURCE" -F "$T/msg.eml" -f app@contoso.test -t sink@bench.test \
	-s "$SESSIONS" -m "$count" "127.0.0.1:$PORT" > "$T/smtp-source.out" 2>&1 ||
	{ cat "$T/smtp-source.out" >&2; bench_die "smtp-source failed"; }
    for ((i = 0; i < 6000; i++)); do
	[ $(( $(discarded_count) - before )) -ge "$count" ] && break
	sleep 0.1
    done
    t1=$(date +%s.%N)
    [ $(( $(discarded_count) - before )) -ge "$count" ] ||
	bench_die "only $(( $(discarded_count) - before )) of $count messages passed (see $PF_MAILLOG, $T/smtp-source.out)"
    read -r WALL RATE <<< "$(python3 -c 'import sys; w = float(sys.argv[2]) - float(sys.argv[1]); print("%.2f %.0f" % (w, int(sys.argv[3]) / w))' \
	"$t0" "$t1" "$count")"
}

# Each phase starts with 50 messages of warm-up.
run 50
run "$N"; wall0=$WALL rate0=$RATE

# use_milter SPEC - point smtpd_milters and non_smtpd_milters at SPEC
use_milter() {
    postconf -c "$PF_ETC" -e "smtpd_milters = $1" "non_smtpd_milters = $1"
    pf_postfix reload > /dev/null 2>&1
    sleep 1
}

use_milter "inet:127.0.0.1:$MPORT"
run 50
run "$N"; wall1=$WALL rate1=$RATE
rsst=$(vm VmRSS "$MPID_TCP") hwmt=$(vm VmHWM "$MPID_TCP")

use_milter "unix:$MSOCK"
rss0=$(vm VmRSS) hwm0=$(vm VmHWM)
run 50
run "$N"; wallu=$WALL rateu=$RATE
done1=$((N + 50))
rss1=$(vm VmRSS) hwm1=$(vm VmHWM)
rest=$((TOTAL - done1))
if [ "$rest" -gt 0 ]; then
    run "$rest"; wall2=$WALL rate2=$RATE
else
    wall2=0 rate2=0 rest=0
fi
rss2=$(vm VmRSS) hwm2=$(vm VmHWM)

# The milter really changed the messages (a sample from its log).
changed=$(grep -c 'changed=sender=<bob@contoso.test>' "$T/relay.log" || true)

echo
echo "m365-milter benchmark: smtp-source -> private Postfix -> discard(8), 127.0.0.1"
echo "($(nproc) CPUs; $SESSIONS parallel SMTP sessions; $(stat -c %s "$T/msg.eml")-byte messages;"
echo " milter in filter mode rewriting sender, From:, Reply-To: and adding a Message-ID)"
echo
printf '%-34s %8s %8s %8s\n' phase msgs wall_s msg/s
printf '%-34s %8d %8s %8s\n' "without milter" "$N" "$wall0" "$rate0"
printf '%-34s %8d %8s %8s\n' "with m365-milter, inet (TCP)" "$N" "$wall1" "$rate1"
printf '%-34s %8d %8s %8s\n' "with m365-milter, unix socket" "$N" "$wallu" "$rateu"
printf '%-34s %8d %8s %8s\n' "with m365-milter, unix, to $TOTAL" "$rest" "$wall2" "$rate2"
echo
printf '%-34s %10s %10s\n' "m365-milter memory (unix socket)" "VmRSS_kB" "VmHWM_kB"
printf '%-34s %10s %10s\n' "started, idle" "$rss0" "$hwm0"
printf '%-34s %10s %10s\n' "after $done1 messages" "$rss1" "$hwm1"
printf '%-34s %10s %10s\n' "after $TOTAL messages" "$rss2" "$hwm2"
printf '%-34s %10s %10s\n' "(TCP instance after $done1)" "$rsst" "$hwmt"
echo
echo "milter log lines with the sender rewritten: $changed (of $((TOTAL + N + 50)) through a milter)"
ok "benchmark finished"
t_done
