#!/bin/bash
#
# lmtp.sh - benchmark: m365-lmtpd, CPU per 10 KB message and memory over
# many messages, against the pipe helper m365-relay (issue 14.2)
#
#	bash tests/bench/lmtp.sh      (after "make"; root or not)
#
# A benchmark, not a test (not in "make check").  It starts the bundled
# emulator and m365-lmtpd on a unix socket and drives it with
# tests/lmtp-client.py: BENCH_CONNS (4) LMTP connections in parallel,
# each kept for all its messages (as Postfix's lmtp(8) with its
# connection cache does), LHLO once, then MAIL, RCPT, DATA per message.
# Figures:
#   CPU ms/msg   user+system CPU of the m365-lmtpd process (all its
#                threads; /proc/PID/stat) over the phase / messages; the
#                client and the emulator are not counted
#   msg/s        messages / wall time of the phase
#   conns        TLS connections the emulator accepted in the phase
#   VmRSS        of m365-lmtpd after the phase
# Phases: 50 messages of warm-up, then BENCH_N (2,000), then on to
# BENCH_TOTAL (10,000) in steps of 2,000 (RSS that keeps growing would be
# a leak per message).  The pipe helper: BENCH_PIPE (200) runs of
# m365-relay, one process per message as Postfix's pipe(8) runs it,
# measured with /usr/bin/time (CPU and peak RSS of each run, means).
# For the floor of a kept-alive HTTPS client (curl, one process) see
# tests/bench/milter-deliver.sh.
#
# Settings (environment): BENCH_N (2000), BENCH_TOTAL (10000),
# BENCH_CONNS (4), BENCH_SIZE (10240), BENCH_PIPE (200), KEEP_TMP=1.

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
top_builddir=${top_builddir:-$(pwd)}
. "$top_srcdir/tests/lib.sh"

LMTPD=$top_builddir/lmtp/m365-lmtpd
CLIENT="$PYTHON $top_srcdir/tests/lmtp-client.py"
N=${BENCH_N:-2000}
TOTAL=${BENCH_TOTAL:-10000}
CONNS=${BENCH_CONNS:-4}
SIZE=${BENCH_SIZE:-10240}
PIPE_N=${BENCH_PIPE:-200}
HZ=$(getconf CLK_TCK)

[ -x "$LMTPD" ] || bench_die "$LMTPD not built: run make first"
[ -x "$RELAY" ] || bench_die "$RELAY not built: run make first"
[ -x /usr/bin/time ] || bench_die "/usr/bin/time missing: apt-get install time"

t_init bench-lmtp
emu_setup
CONF=$T/m365relay.conf
write_conf "$CONF"
RUN_AS=()
if [ "$(id -u)" = 0 ]; then
    # The daemon drops root, the relay refuses it: both as a test user.
    sed -i "s|^\[global\]\$|[global]\nuser = m365test|" "$CONF"
    e2e_user m365test || bench_die "cannot create user m365test"
    RUN_AS=(runuser -u m365test --)
fi
mkdir -p "$T/run"
[ "$(id -u)" = 0 ] && chown m365test "$T/run"
SOCK=$T/run/lmtp.sock
"$LMTPD" -c "$CONF" -p "unix:$SOCK" -s "$CONNS" >"$T/lmtpd.out" 2>&1 &
LPID=$!
t_bg_pid "$LPID"
wait_until 10 test -S "$SOCK" || bench_die "m365-lmtpd does not start: $(cat "$T/lmtpd.out")"
sized_msg "$T/msg" "$SIZE" "Bob <bob@contoso.test>" carol@contoso.test "bench lmtp"
sed -i "s|^Subject: |Message-ID: <bench.$$@e2e.test>\nSubject: |" "$T/msg"

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
vmrss() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status"; }

# phase NAME COUNT FIRST - COUNT messages (numbered from FIRST), one row
phase() {
    local name=$1 count=$2 t0 t1 c0 c1 k0
    k0=$(emu_stat connections)
    c0=$(ticks "$LPID")
    t0=$(date +%s.%N)
    $CLIENT "$SOCK" send bob@contoso.test carol@contoso.test "$T/msg" \
	"$count" "$CONNS" "$3" >"$T/$name.out" ||
	bench_die "phase $name: $(grep -v ' 250 ' "$T/$name.out" | head -n 3)"
    t1=$(date +%s.%N)
    c1=$(ticks "$LPID")
    printf '%-24s %7d %8.3f %8.0f %6d %8d\n' "$name" "$count" \
	"$(echo "($c1 - $c0) * 1000 / $HZ / $count" | bc -l)" \
	"$(echo "$count / ($t1 - $t0)" | bc -l)" \
	$(( $(emu_stat connections) - k0 )) "$(vmrss "$LPID")"
}

echo "m365-lmtpd: lmtp-client.py ($CONNS kept LMTP connections) -> m365-lmtpd"
echo "-> emulator, $SIZE-byte messages, $(nproc) CPUs"
echo
printf '%-24s %7s %8s %8s %6s %8s\n' phase msgs CPU_ms msg/s conns VmRSS_kB
phase lmtp-warmup 50 0
phase lmtp "$N" 50
done_n=$N
while [ "$done_n" -lt "$TOTAL" ]; do
    n=$(( TOTAL - done_n < 2000 ? TOTAL - done_n : 2000 ))
    phase "lmtp-to-$((done_n + n))" "$n" $((done_n + 50))
    done_n=$((done_n + n))
done

# The pipe helper: one m365-relay process per message.
: >"$T/pipe.time"
[ "$(id -u)" = 0 ] && chown m365test "$T/pipe.time"
t0=$(date +%s.%N)
for ((i = 1; i <= PIPE_N; i++)); do
    sed "s|^Message-ID: <bench\\.|Message-ID: <pipe$i.|" "$T/msg" >"$T/pipe.msg"
    "${RUN_AS[@]}" /usr/bin/time -a -o "$T/pipe.time" -f "%U %S %M" \
	"$RELAY" -c "$CONF" -q "P$i" -f bob@contoso.test -- \
	carol@contoso.test <"$T/pipe.msg" >/dev/null ||
	bench_die "m365-relay run $i failed"
done
t1=$(date +%s.%N)
awk -v n="$PIPE_N" -v w="$(echo "$t1 - $t0" | bc -l)" \
    '{ c += ($1 + $2) * 1000; r += $3 }
     END { printf "%-24s %7d %8.3f %8.0f %6s %8d\n", "pipe (m365-relay)", n, c / n, n / w, "-", r / n }' \
    "$T/pipe.time"
echo "(pipe: /usr/bin/time per run, means; VmRSS_kB is the mean peak RSS"
echo " of one run)"
term_wait "$LPID" 15
ok "benchmark finished"
t_done
