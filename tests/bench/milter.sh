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

me=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
: "${top_srcdir:=$(dirname "$me")/../..}"
: "${top_builddir:=$top_srcdir}"
top_srcdir=$(cd "$top_srcdir" && pwd)
top_builddir=$(cd "$top_builddir" && pwd)
export top_srcdir top_builddir

die() {
    echo "milter.sh: $*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || die "run as root (a private Postfix needs root)"
if [ -z "${M365_BENCH_IN_NS:-}" ]; then
    exec unshare --net --uts --mount --pid --fork --kill-child --mount-proc \
	env M365_BENCH_IN_NS=1 bash "$me" "$@"
fi
ip link set lo up
hostname mx.e2e.test

. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/postfix.sh"

N=${BENCH_N:-2000}
TOTAL=${BENCH_TOTAL:-10000}
SESSIONS=${BENCH_SESSIONS:-8}
SIZE=${BENCH_SIZE:-1024}
PORT=${BENCH_PORT:-2625}
MPORT=${BENCH_MPORT:-8896}
MILTER=$top_builddir/milter/m365-milter
RUSER=${PF_RELAY_USER:-m365test}

[ -x "$MILTER" ] || die "$MILTER not built: run make first"
[ -x "$RELAY" ] || die "$RELAY not built: run make first"
SMTP_SOURCE=$(command -v smtp-source || echo /usr/sbin/smtp-source)
[ -x "$SMTP_SOURCE" ] || die "smtp-source missing (Debian package postfix)"
[ "$TOTAL" -ge "$N" ] || die "BENCH_TOTAL ($TOTAL) must be >= BENCH_N ($N)"

t_init bench-milter
MPID=
MPID_TCP=
trap 'rc=$?; pf_stop; kill -9 $MPID $MPID_TCP 2>/dev/null; (exit $rc); t_cleanup' EXIT

cat > "$T/hosts" <<'EOF'
127.0.0.1 localhost
127.0.0.1 mx.e2e.test mx
::1 localhost ip6-localhost ip6-loopback
::1 mx.e2e.test mx
EOF
printf 'nameserver 127.0.0.1\n' > "$T/resolv.conf"
mount --bind "$T/hosts" /etc/hosts
mount --bind "$T/resolv.conf" /etc/resolv.conf

# The configuration needs a Graph endpoint only on paper: filter mode
# never calls it.  The emulator is started anyway, as for every test.
emu_setup
CONF=$T/m365relay.conf
write_conf "$CONF"
sed -i -e "s|^[[:space:]]*\[global\][[:space:]]*$|[global]\nuser = $RUSER|" "$CONF"
cat >> "$CONF" <<EOF

[milter]
mode = filter
socket = inet:$MPORT@127.0.0.1
unknown_sender = reject
rewrite_sender = yes
rewrite_from = yes
add_reply_to = yes
add_message_id = yes
message_id_domain = bench.e2e.test
tmp_dir = $T/spool
EOF
pf_user "$RUSER" || die "cannot create user $RUSER"
chmod 755 "$T" "$T/certs"
chmod 644 "$CONF"
chown -R "$RUSER" "$T/state"
chown "$RUSER" "$T/secret" "$T/certs/client.key"
: > "$T/relay.log"
chown "$RUSER" "$T/relay.log"
mkdir -p "$T/spool"
chown "$RUSER" "$T/spool"
chmod 700 "$T/spool"

# A second instance on a unix socket that Postfix's smtpd (running as
# its mail_owner) may use: socket_mode 0666 here instead of adding the
# mail_owner to the milter user's group.
MSOCK=$T/milter.sock
sed -e "s|^socket = .*|socket = unix:$MSOCK\nsocket_mode = 0666|" "$CONF" > "$T/unix.conf"
chmod 644 "$T/unix.conf"

"$MILTER" -c "$CONF" -f > "$T/milter.out" 2>&1 &
MPID_TCP=$!
disown "$MPID_TCP"
pf_wait_port "$MPORT" || { cat "$T/milter.out" >&2; die "m365-milter (TCP) did not start"; }
"$MILTER" -c "$T/unix.conf" -f > "$T/milter-unix.out" 2>&1 &
MPID=$!
disown "$MPID"
for ((i = 0; i < 100; i++)); do
    [ -S "$MSOCK" ] && break
    sleep 0.1
done
[ -S "$MSOCK" ] || { cat "$T/milter-unix.out" >&2; die "m365-milter (unix socket) did not start"; }

PF_RELAY=$RELAY PF_CONF=$CONF pf_setup "$T/pf" "$PORT" || die "pf_setup failed"
postconf -c "$PF_ETC" -e "local_header_rewrite_clients =" \
    "relay_domains = $(postconf -c "$PF_ETC" -h relay_domains) bench.test" \
    "smtpd_milters =" "non_smtpd_milters =" "milter_default_action = tempfail"
printf 'bench.test\tdiscard:benchmark\n' >> "$PF_ETC/transport"
pf_start || die "the private Postfix did not start (see $PF_MAILLOG)"

# The message: From: the app (account "app", senders @contoso.test), no
# Message-ID, so the milter changes sender, From:, Reply-To: and adds a
# Message-ID in every message.
python3 - "$T/msg.eml" "$SIZE" <<'EOF'
import sys
path, size = sys.argv[1], int(sys.argv[2])
hdr = ("From: Bench App <app@contoso.test>\n"
       "To: sink@bench.test\n"
       "Subject: m365-milter benchmark\n"
       "MIME-Version: 1.0\n"
       "Content-Type: text/plain; charset=us-ascii\n\n")
line = "The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnop\n"
body = line * ((size - len(hdr)) // len(line) + 1)
with open(path, "w") as f:
    f.write(hdr + body[:max(0, size - len(hdr))])
EOF

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
	{ cat "$T/smtp-source.out" >&2; die "smtp-source failed"; }
    for ((i = 0; i < 6000; i++)); do
	[ $(( $(discarded_count) - before )) -ge "$count" ] && break
	sleep 0.1
    done
    t1=$(date +%s.%N)
    [ $(( $(discarded_count) - before )) -ge "$count" ] ||
	die "only $(( $(discarded_count) - before )) of $count messages passed (see $PF_MAILLOG, $T/smtp-source.out)"
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
