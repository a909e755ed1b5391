#!/bin/bash
#
# relay.sh - benchmark: private Postfix -> m365-relay -> Microsoft 365 emulator
#
#	bash tests/bench/relay.sh            (as root, after "make")
#
# A benchmark, not a test (not in "make check").  It starts the bundled
# emulator and a private Postfix on loopback (tests/postfix.sh), submits
#   - 1,000 messages of 10 KB, then
#   - 20 messages of 2.5 MB
# with smtp-source(1) (parallel SMTP sessions), waits until Postfix's
# queue is empty, and prints per phase:
#   messages/s    messages / wall time from the first submission to the
#                 empty queue (SMTP submission and Postfix included)
#   CPU ms        user+system CPU time of each m365-relay run
#   peak RSS      maximum resident set size of each m365-relay run
#   token req.    token endpoint requests during the phase (emulator
#                 statistics); at steady state the target is 0 per
#                 message: one per account per token lifetime
# Every m365-relay run is wrapped in /usr/bin/time (GNU time).
# Large messages (issue 10: 150 MB, 20 x 10 MB through drafts, CPU next
# to curl, spool use) have their own benchmark: tests/bench/large.sh.
#
# Comparison (issue 11: the send ledger and the request slots must cost
# less than 10% CPU per message and keep RSS flat): with
# BENCH_BASE=/path/to/m365-relay of another build (e.g. the commit
# before a change, built in a separate directory), the 10 KB phase runs
# for both builds in the same run, alternating (this build, the other,
# BENCH_ROUNDS times) against the same Postfix and emulator, and a last
# table compares them: CPU ms per message and RSS (means over all their
# runs), messages/s.  The other build gets the same configuration
# without the keys it does not know (its m365-relay -n tells).
#
# Settings (environment): BENCH_SMALL (1000), BENCH_LARGE (20),
# BENCH_SESSIONS (smtp-source parallel sessions, 8), BENCH_PORT (first
# of two free loopback ports, 2625), PF_CONCURRENCY (4), BENCH_BASE (see
# above), BENCH_ROUNDS (2), KEEP_TMP=1 keeps the work directory.

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/postfix.sh"

N_SMALL=${BENCH_SMALL:-1000}
N_LARGE=${BENCH_LARGE:-20}
SESSIONS=${BENCH_SESSIONS:-8}
PORT=${BENCH_PORT:-2625}
SMALL_SIZE=10240
LARGE_SIZE=2621440

[ "$(id -u)" = 0 ] || bench_die "run as root (a private Postfix needs root)"
[ -x "$RELAY" ] || bench_die "$RELAY not built: run make first"
[ -x /usr/bin/time ] || bench_die "/usr/bin/time missing: apt-get install time"
SMTP_SOURCE=$(command -v smtp-source || echo /usr/sbin/smtp-source)
[ -x "$SMTP_SOURCE" ] || bench_die "smtp-source missing (Debian package postfix)"

t_init bench
emu_setup
CONF=$T/relay.conf
write_conf "$CONF"

# pipe(8) runs the relay as an unprivileged user: it must reach the
# work directory, read its config, secret and key, write state and log.
RUSER=${PF_RELAY_USER:-m365test}
e2e_user "$RUSER" || bench_die "cannot create user $RUSER"
: >"$T/time.log"
chown "$RUSER" "$T/time.log"

# The wrapper that pipe(8) runs: GNU time around m365-relay, one line
# "elapsed user system maxrss_kb" per run appended to time.log.  The
# relay and its configuration are the two lines of $T/bin/target (pipe
# passes "-c CONF" first: replaced), so that a phase can switch builds.
mkdir -p "$T/bin"
cat >"$T/bin/relay-timed" <<EOF
#!/bin/sh
{ read -r relay; read -r conf; } < $T/bin/target
shift 2
exec /usr/bin/time -a -o $T/time.log -f "%e %U %S %M" "\$relay" -c "\$conf" "\$@"
EOF
chmod 755 "$T/bin" "$T/bin/relay-timed"
# use RELAY CONF - the build that the next runs use
use() {
    printf '%s\n%s\n' "$1" "$2" >"$T/bin/target"
    chmod 644 "$T/bin/target"
}
use "$RELAY" "$CONF"
if [ -n "${BENCH_BASE:-}" ]; then
    [ -x "$BENCH_BASE" ] || bench_die "BENCH_BASE=$BENCH_BASE is not an executable"
    CONF_BASE=$T/relay-base.conf
    cp "$CONF" "$CONF_BASE"
    for k in $("$BENCH_BASE" -n -c "$CONF" 2>&1 |
	sed -n 's/.*unknown key "\([a-z_]*\)".*/\1/p'); do
	sed -i "/^$k[[:space:]]*=/d" "$CONF_BASE"
    done
    chmod 644 "$CONF_BASE"
    runuser -u "$RUSER" -- "$BENCH_BASE" -n -c "$CONF_BASE" >/dev/null 2>&1 ||
	bench_die "the BENCH_BASE relay rejects the configuration: $(runuser -u "$RUSER" -- "$BENCH_BASE" -n -c "$CONF_BASE" 2>&1 | head -n 2)"
fi

PF_RELAY=$T/bin/relay-timed PF_CONF=$CONF pf_setup "$T/pf" "$PORT" ||
    bench_die "pf_setup failed"
pf_start || bench_die "the private Postfix did not start (see $PF_MAILLOG)"
trap 'rc=$?; pf_stop; (exit $rc); t_cleanup' EXIT

# Text messages from the app account's mailbox (bob@contoso.test,
# routed by senders = @contoso.test).
for m in "small $SMALL_SIZE" "large $LARGE_SIZE"; do
    set -- $m
    sized_msg "$T/$1.eml" "$2" "Bench <bob@contoso.test>" bench@example.net \
	"m365relay benchmark"
done

# Warm up: one message, so that the app account holds a token (steady
# state), then forget the emulator's counters.
"$SMTP_SOURCE" -F "$T/small.eml" -f bob@contoso.test -t warmup@example.net \
    -m 1 "127.0.0.1:$PF_PORT" || bench_die "smtp-source failed"
pf_wait_empty 60 || bench_die "warm-up message not delivered (see $PF_MAILLOG)"
[ "$(emu_sent_count)" = 1 ] ||
    bench_die "warm-up message did not reach the emulator: $(tail -n 3 "$T/relay.log")"

# phase NAME FILE COUNT - submit COUNT copies, wait, collect figures
RESULTS=()
phase() {
    local name=$1 file=$2 count=$3 t0 t1 size
    size=$(stat -c %s "$file")
    emu_ctl POST /_emu/reset '{}' >/dev/null
    : >"$T/time.log"
    t0=$(date +%s.%N)
    "$SMTP_SOURCE" -F "$file" -f bob@contoso.test -t bench@example.net \
	-s "$SESSIONS" -m "$count" "127.0.0.1:$PF_PORT" ||
	bench_die "smtp-source failed in phase $name"
    pf_wait_empty $((60 + count / 5)) || bench_die "phase $name: queue not empty"
    t1=$(date +%s.%N)
    RESULT_WALL=$(python3 -c "print($t1 - $t0)")
    RESULT_SENT=$(emu_sent_count)
    RESULTS+=("$(python3 - "$name" "$count" "$size" "$t0" "$t1" \
	"$T/time.log" "$(emu_sent_count)" "$(emu_stat token_requests)" \
	"$(emu_stat sendmail_requests)" <<'EOF'
import sys, statistics
name, count, size, t0, t1, tlog, sent, tok, sreq = sys.argv[1:]
count, size, sent = int(count), int(size), int(sent)
wall = float(t1) - float(t0)
runs = []
for line in open(tlog):
    f = line.split()
    if len(f) == 4:
        try:
            e, u, s, m = float(f[0]), float(f[1]), float(f[2]), int(f[3])
        except ValueError:
            continue
        runs.append(((u + s) * 1000.0, m, e))
cpu = sorted(r[0] for r in runs) or [0]
rss = sorted(r[1] for r in runs) or [0]
el = sorted(r[2] for r in runs) or [0]
def p95(v):
    return v[min(len(v) - 1, int(round(0.95 * (len(v) - 1))))]
print("%-14s %6d %9d %7.1f %8.1f %5d %6d %7.1f %7.1f %7.1f %8d %8d %7.2f %6s %6s" % (
    name, count, size, wall, sent / wall if wall > 0 else 0, sent, len(runs),
    statistics.mean(cpu), p95(cpu), cpu[-1],
    int(statistics.mean(rss)), rss[-1], statistics.mean(el), tok, sreq))
EOF
)")
}

phase "10KB" "$T/small.eml" "$N_SMALL"
phase "2.5MB" "$T/large.eml" "$N_LARGE"

# The comparison: 10 KB, this build and BENCH_BASE alternating.
COMPARE=()
if [ -n "${BENCH_BASE:-}" ]; then
    : >"$T/cmp-this.log"
    : >"$T/cmp-base.log"
    : >"$T/cmp-this.wall"
    : >"$T/cmp-base.wall"
    for ((round = 1; round <= ${BENCH_ROUNDS:-2}; round++)); do
	for who in this base; do
	    if [ "$who" = base ]; then
		use "$BENCH_BASE" "$CONF_BASE"
	    else
		use "$RELAY" "$CONF"
	    fi
	    phase "10KB $who #$round" "$T/small.eml" "$N_SMALL"
	    cat "$T/time.log" >>"$T/cmp-$who.log"
	    echo "$RESULT_WALL $RESULT_SENT" >>"$T/cmp-$who.wall"
	done
    done
    use "$RELAY" "$CONF"
    COMPARE+=("$(python3 - "$T" <<'EOF'
import statistics, sys
t = sys.argv[1]
def runs(who):
    out = []
    for line in open("%s/cmp-%s.log" % (t, who)):
        f = line.split()
        if len(f) == 4:
            try:
                out.append(((float(f[1]) + float(f[2])) * 1000.0, int(f[3])))
            except ValueError:
                pass
    return out
def rate(who):
    wall = sent = 0.0
    for line in open("%s/cmp-%s.wall" % (t, who)):
        w, s = line.split()
        wall += float(w)
        sent += float(s)
    return sent / wall if wall else 0
res = {}
print("build    runs  cpu_ms/msg    rss_kb   max_rss    msg/s")
for who in ("this", "base"):
    r = runs(who)
    cpu = statistics.mean(x[0] for x in r) if r else 0
    rss = statistics.mean(x[1] for x in r) if r else 0
    res[who] = (cpu, rss)
    print("%-6s %6d %11.3f %9d %9d %8.1f" % (who, len(r), cpu, int(rss),
          max((x[1] for x in r), default=0), rate(who)))
c = (res["this"][0] / res["base"][0] - 1) * 100 if res["base"][0] else 0
m = (res["this"][1] / res["base"][1] - 1) * 100 if res["base"][1] else 0
print("this build vs base: CPU per message %+.1f%%, mean peak RSS %+.1f%%" % (c, m))
EOF
)")
fi

echo
echo "m365relay benchmark: private Postfix -> m365-relay -> emulator on 127.0.0.1"
echo "($(nproc) CPUs; smtp-source sessions $SESSIONS;" \
    "m365_destination_concurrency_limit ${PF_CONCURRENCY:-4})"
echo
printf '%-14s %6s %9s %7s %8s %5s %6s %7s %7s %7s %8s %8s %7s %6s %6s\n' \
    phase msgs bytes wall_s msg/s sent runs cpu_ms p95_cpu max_cpu \
    rss_kb max_rss run_s tokreq posts
for r in "${RESULTS[@]}"; do
    printf '%s\n' "$r"
done
echo
echo "cpu_ms/p95_cpu/max_cpu: user+system CPU per m365-relay run (mean, 95th"
echo "percentile, max); rss_kb/max_rss: peak RSS per run (mean, max); run_s:"
echo "mean wall time per run (includes waiting for the emulator); tokreq: token"
echo "requests during the phase (after a warm-up message); posts: sendMail requests."
if [ ${#COMPARE[@]} -gt 0 ]; then
    echo
    echo "10 KB: this build ($RELAY) vs BENCH_BASE ($BENCH_BASE),"
    echo "${BENCH_ROUNDS:-2} phases each, alternating:"
    printf '%s\n' "${COMPARE[@]}"
fi

# A failure of the relay shows as sent < msgs; say so.
bad_runs=$(grep -c 'status=deferred\|status=bounced' "$T/relay.log")
[ "$bad_runs" -eq 0 ] || echo "note: $bad_runs deferred/bounced log lines in $T/relay.log"
ok "benchmark finished"
t_done
