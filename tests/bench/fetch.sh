#!/bin/bash
#
# fetch.sh - benchmark: Microsoft 365 emulator mailbox -> m365-fetch ->
# private Postfix (SMTP on loopback) -> local(8) Maildir
#
#	bash tests/bench/fetch.sh            (as root, after "make")
#
# A benchmark, not a test (not in "make check").  It fills bob's inbox in
# the bundled emulator with BENCH_N (2,000) generated messages of mixed
# sizes - half 5 KB, 35 % 50 KB, 12.5 % 200 KB, the rest 1 MB, and one of
# 30 MB - then runs "m365-fetch --once" (as an unprivileged user, wrapped
# in GNU time) until a round completes, and prints:
#   messages/min   messages injected per minute of m365-fetch wall time
#                  (delta paging, $value download, SMTP injection into
#                  Postfix and the mark-read PATCH all included)
#   MB/s           MIME bytes injected per second of wall time
#   peak RSS       maximum resident set size of m365-fetch (%M of time)
#   CPU s          user + system CPU time of m365-fetch
#   Postfix        seconds until Postfix had delivered everything to the
#                  Maildir (after the round ended)
#   CPU/message    that CPU time divided by the messages
# and checks that every message arrived exactly once and ended read.
#
# Settings (environment): BENCH_N (2000), BENCH_PAGE (page_size, 50),
# BENCH_PORT (a free loopback port, 2725), KEEP_TMP=1 keeps the work
# directory.  BENCH_SIZE=BYTES gives every message that size instead of
# the mix (10240 for the "CPU per 10 KB message" figure).  BENCH_STRACE=1
# runs m365-fetch under "strace -f -c" and adds the state-file system
# calls per message (fsync, fdatasync, rename, mkdir, openat); strace
# slows the process down, so take CPU and messages/min from a run
# without it.

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/postfix.sh"

N=${BENCH_N:-2000}
PAGE=${BENCH_PAGE:-50}
PORT=${BENCH_PORT:-2725}
RUSER=${PF_RELAY_USER:-m365test}
MBX=m365mbx
. "$top_srcdir/tests/fetch.sh"

[ "$(id -u)" = 0 ] || bench_die "run as root (a private Postfix needs root)"
[ -x "$FETCH" ] || bench_die "$FETCH not built: run make first"
[ -x "$RELAY" ] || bench_die "$RELAY not built: run make first"
[ -x /usr/bin/time ] || bench_die "/usr/bin/time missing: apt-get install time"
[ "$N" -ge 10 ] || bench_die "BENCH_N must be at least 10"

t_init benchfetch
trap 'pf_stop; t_cleanup' EXIT
e2e_conf "$RUSER"
fx_source bench inbox "$PORT" read "page_size = $PAGE"
e2e_user "$RUSER" || bench_die "cannot create user $RUSER"
sys_user "$MBX" || bench_die "cannot create user $MBX"

PF_RELAY=$RELAY PF_CONF=$CONF pf_setup "$T/pf" "$PORT" $((PORT + 1)) ||
    bench_die "private Postfix set up failed"
# 30 MB of MIME plus headers must fit; local(8) writes Maildirs.
postconf -c "$PF_ETC" -e "message_size_limit = 41943040" \
    "mailbox_size_limit = 0" "default_destination_concurrency_limit = 8" ||
    bench_die "postconf failed"
pf_start || bench_die "private Postfix does not start"
MD=$PF_DIR/mail/$MBX

# ---- fill the mailbox
n_small=$((N / 2))
n_50k=$((N * 35 / 100))
n_200k=$((N / 8))
n_1m=$((N - 1 - n_small - n_50k - n_200k))
t0=$(date +%s.%N)
specs=("5120 $n_small" "51200 $n_50k" "31457280 1" "204800 $n_200k" "1048576 $n_1m")
if [ -n "${BENCH_SIZE:-}" ]; then
    echo "# every message $BENCH_SIZE bytes (BENCH_SIZE)"
    specs=("$BENCH_SIZE $N")
else
    echo "# filling bob's inbox: $n_small x 5 KB, $n_50k x 50 KB, $n_200k x 200 KB, $n_1m x 1 MB, 1 x 30 MB"
fi
for spec in "${specs[@]}"; do
    set -- $spec
    emu_gen_messages bob@contoso.test "$1" "$2" >/dev/null ||
	bench_die "the emulator could not generate $2 messages of $1 bytes"
done
t1=$(date +%s.%N)
TOTAL_BYTES=$(emu_mb_eval bob@contoso.test 'sum(m["size"] for m in f("inbox")["messages"])')
COUNT=$(emu_mb_eval bob@contoso.test 'len(f("inbox")["messages"])')
[ "$COUNT" = "$N" ] || bench_die "the inbox holds $COUNT messages, not $N"
printf '# mailbox ready: %d messages, %.1f MB, in %.1f s\n' "$COUNT" \
    "$(echo "$TOTAL_BYTES / 1048576" | bc -l)" "$(echo "$t1 - $t0" | bc -l)"

# ---- rounds until one completes (exit 0)
rounds=0 wall=0 cpu=0 peak=0
while :; do
    rounds=$((rounds + 1))
    strace=()
    [ -n "${BENCH_STRACE:-}" ] &&
	strace=(strace -f -c -o "$T/strace.$rounds" -e
	    trace=fsync,fdatasync,rename,renameat,renameat2,mkdir,mkdirat,openat)
    /usr/bin/time -o "$T/time.$rounds" -f '%e %M %U %S' \
	"${strace[@]}" \
	setpriv --reuid="$RUSER" --regid="$(id -g "$RUSER")" --init-groups \
	"$FETCH" -c "$CONF" --once bench >"$T/fetch.$rounds.out" 2>&1
    rc=$?
    read -r e m u s <"$T/time.$rounds" || bench_die "no timing of round $rounds"
    wall=$(echo "$wall + $e" | bc -l)
    cpu=$(echo "$cpu + $u + $s" | bc -l)
    [ "$m" -gt "$peak" ] && peak=$m
    echo "# round $rounds: exit $rc, ${e} s, peak RSS ${m} KB"
    [ "$rc" = 0 ] && break
    [ "$rc" = 75 ] || { tail -n 20 "$T/fetch.$rounds.out" >&2; bench_die "m365-fetch exited $rc"; }
    [ "$rounds" -lt 5 ] || bench_die "no complete round after 5 tries (see $T/fetch.*.out)"
done
t_end=$(date +%s.%N)

# ---- Postfix drains into the Maildir
md_files() {
    find "$MD/new" "$MD/cur" -type f 2>/dev/null | wc -l
}
limit=600
while [ "$(md_files)" -lt "$N" ] && [ $limit -gt 0 ]; do
    sleep 0.5
    limit=$((limit - 1))
done
t_md=$(date +%s.%N)
DELIVERED=$(md_files)
UNREAD=$(emu_mb_eval bob@contoso.test 'sum(1 for m in f("inbox")["messages"] if not m["isRead"])')
DUPS=$(find "$MD/new" "$MD/cur" -type f -exec grep -m1 -ih '^Message-ID:' {} + 2>/dev/null |
    sort | uniq -d | wc -l)
BIG_OK=$(find "$MD/new" "$MD/cur" -type f -size +30000k 2>/dev/null | wc -l)
SENT=$(grep -c 'status=sent' "$T/relay.log")

echo
mix="one of 30 MB"
[ -n "${BENCH_SIZE:-}" ] && mix="each $BENCH_SIZE bytes"
echo "m365-fetch benchmark: $N messages ($(echo "$TOTAL_BYTES / 1048576" | bc -l | xargs printf '%.1f') MB, $mix), page_size $PAGE"
printf '  rounds             %d\n' "$rounds"
printf '  wall time          %.1f s\n' "$wall"
printf '  messages/min       %.0f\n' "$(echo "$N * 60 / $wall" | bc -l)"
printf '  MB/s               %.1f\n' "$(echo "$TOTAL_BYTES / 1048576 / $wall" | bc -l)"
printf '  peak RSS           %d KB\n' "$peak"
printf '  CPU                %.2f s (user + system)\n' "$cpu"
printf '  CPU/message        %.2f ms\n' "$(echo "$cpu * 1000 / $N" | bc -l)"
if [ -n "${BENCH_STRACE:-}" ]; then
    # strace -c: % time, seconds, usecs/call, calls, [errors,] syscall
    for sc in fsync fdatasync rename renameat renameat2 mkdir mkdirat openat; do
	c=$(awk -v sc="$sc" '$NF == sc { n += $4 } END { print n + 0 }' \
	    "$T"/strace.*)
	[ "$c" = 0 ] && continue
	printf '  %-18s %d calls, %.2f per message\n' "$sc" "$c" "$(echo "$c / $N" | bc -l)"
    done
fi
printf '  Postfix drained    %.1f s after the round\n' "$(echo "$t_md - $t_end" | bc -l)"
printf '  log status=sent    %d\n' "$SENT"
printf '  in the Maildir     %d (duplicates: %d; 30 MB message: %d)\n' "$DELIVERED" "$DUPS" "$BIG_OK"
printf '  left unread        %d\n' "$UNREAD"
[ -n "${BENCH_SIZE:-}" ] && BIG_OK=1		# no 30 MB message in this run
if [ "$DELIVERED" = "$N" ] && [ "$DUPS" = 0 ] && [ "$UNREAD" = 0 ] && [ "$BIG_OK" = 1 ]; then
    echo "  result             every message arrived exactly once and ended read"
else
    FAIL=1
    echo "  result             INCOMPLETE (work directory kept: $T)"
    exit 1
fi
