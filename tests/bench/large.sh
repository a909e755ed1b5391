#!/bin/bash
#
# large.sh - benchmark of large messages (issue 10): private Postfix ->
# m365-relay -> Microsoft 365 emulator (a draft, upload sessions, send)
#
#	bash tests/bench/large.sh            (as root, after "make")
#
# A benchmark, not a test (not in "make check").  It starts the bundled
# emulator and a private Postfix on loopback (tests/postfix.sh) and
# measures:
#
#   1. One message of 150 MB (a text part and one PDF of about 109 MB,
#      base64; tests/large.sh) through Postfix -> m365-relay, BENCH_REPEAT
#      times (5; each time to another recipient, so the send ledger
#      takes it as a new delivery), medians:
#        - peak RSS of m365-relay (target: at most 32 MB);
#        - its CPU time (user + system) next to that of curl uploading
#          the same decoded bytes, in the same ranges, to an upload
#          session of the same emulator, in one curl process that first
#          makes the draft and the session (target: at most 2x curl);
#          as often, in turn with the relay's runs;
#        - the spool floor, measured in the same run: what any relay
#          that must keep the message while it uploads pays besides
#          curl's work - dd reading the message from a pipe and writing
#          it to a file in the relay's temporary directory, dd reading
#          it back, rm (the relay does this, plus the MIME parse and the
#          base64 decoding);
#        - spool disk use: the most bytes m365-relay held in temporary
#          files at any time (sampled every 20 ms from /proc/PID/fd)
#          next to the message size (target: at most one copy), and
#          the most bytes in Postfix's queue.
#   2. 20 messages of 10 MB (each through a draft and an upload session)
#      next to 20 messages of 2.5 MB (each one sendMail request):
#      messages per minute from the first submission to the empty queue,
#      CPU time and peak RSS per m365-relay run.
#
# upload_budget is 1024M here (the largest allowed): the benchmark
# measures the relay, not Outlook's upload limit of 15 MB per 30 s per
# app and mailbox, which paces the default configuration to about 3
# messages of 10 MB per minute per mailbox.  BENCH_PACED=1 adds the
# 20 x 10 MB phase with the default budget (takes about 7 minutes).
#
# Each timed step starts after a sync (settle), so that the write-back of
# the last run's 150 MB files does not fall into it.
# Every timed process (m365-relay, curl, dd) is run by $T/bin/timed, which
# takes its user and system time from wait4() in microseconds (GNU time
# prints 10 ms steps, too coarse next to curl's 70 ms).  Needs root,
# postfix, curl, /usr/bin/python3 and about 1 GB free in $TMPDIR.
# Settings (environment): BENCH_N (20), BENCH_SESSIONS (parallel SMTP
# clients, 8), BENCH_PORT (2725), BENCH_REPEAT (5), BENCH_PACED,
# KEEP_TMP=1.

# shellcheck disable=SC2317  # functions run through wait_until
top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/postfix.sh"
. "$top_srcdir/tests/large.sh"

N=${BENCH_N:-20}
R=${BENCH_REPEAT:-5}
SESSIONS=${BENCH_SESSIONS:-8}
PORT=${BENCH_PORT:-2725}

[ "$(id -u)" = 0 ] || bench_die "run as root (a private Postfix needs root)"
[ -x "$RELAY" ] || bench_die "$RELAY not built: run make first"
[ -x /usr/bin/python3 ] || bench_die "/usr/bin/python3 missing: apt-get install python3"
command -v curl >/dev/null || bench_die "curl missing: apt-get install curl"

t_init bench-large
large_disk 1100000 || bench_die "not enough free disk space in $T"
emu_setup
CONF=$T/relay.conf
write_conf "$CONF"
# The app account (bob@contoso.test) sends up to 150 MB through drafts;
# upload sessions live on localhost (the emulator's second host name).
large_conf "$CONF" "localhost:$EMU_PORT"

RUSER=${PF_RELAY_USER:-m365test}
e2e_user "$RUSER" || bench_die "cannot create user $RUSER"
: >"$T/time.log"
chown "$RUSER" "$T/time.log"
mkdir -p "$T/bin"
# timed LOG PROGRAM ARG... - run PROGRAM (stdin, stdout and stderr are
# its own), append "wall_s user_s sys_s maxrss_kb" of it to LOG, exit
# with its status.  /usr/bin/python3: pipe(8) runs it as $RUSER.
cat >"$T/bin/timed" <<'EOF'
#!/usr/bin/python3
import os, sys, time
log, argv = sys.argv[1], sys.argv[2:]
t0 = time.monotonic()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
with open(log, "a") as f:
    f.write("%.6f %.6f %.6f %d\n" % (time.monotonic() - t0, ru.ru_utime,
                                     ru.ru_stime, ru.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
EOF
cat >"$T/bin/relay-timed" <<EOF
#!/bin/sh
exec $T/bin/timed $T/time.log $RELAY "\$@"
EOF
chmod 755 "$T/bin" "$T/bin/timed" "$T/bin/relay-timed"

PF_RELAY=$T/bin/relay-timed PF_CONF=$CONF pf_setup "$T/pf" "$PORT" ||
    bench_die "pf_setup failed"
large_postfix || bench_die "postconf failed"
pf_start || bench_die "the private Postfix did not start (see $PF_MAILLOG)"
SAMPLER=
trap 'rc=$?; [ -z "$SAMPLER" ] || kill "$SAMPLER" 2>/dev/null; pf_stop; (exit $rc); t_cleanup' EXIT
M=$T/msg
mkdir -p "$M"

# Warm up: one message, so that the app account holds a token.
sized_msg "$M/warm.eml" 2000 "Bench <bob@contoso.test>" warm@example.net "warm-up"
large_smtp "$PORT" bob@contoso.test warm@example.net "$M/warm.eml" >/dev/null ||
    bench_die "warm-up not accepted: $(cat "$M/warm.eml.smtp")"
pf_wait_empty 60 || bench_die "warm-up message not delivered (see $PF_MAILLOG)"
[ "$(emu_sent_count)" = 1 ] ||
    bench_die "warm-up message did not reach the emulator: $(tail -n 3 "$T/relay.log")"

# sampler OUT - every 20 ms until killed: the most bytes m365-relay
# processes hold in regular files that are unlinked (their spool) or
# under /tmp, and the most bytes in Postfix's queue; written to OUT
sampler() {
    # exec: the PID that is killed at the end is python's own
    exec "$PYTHON" - "$1" "$PF_DIR/spool" <<'PYEOF'
import os, stat, sys, time
out, spool = sys.argv[1], sys.argv[2]
tmax = qmax = 0
def queue_bytes():
    n = 0
    for q in ("incoming", "active", "deferred", "hold", "maildrop"):
        for dp, _, fs in os.walk(os.path.join(spool, q)):
            for f in fs:
                try:
                    n += os.lstat(os.path.join(dp, f)).st_size
                except OSError:
                    pass
    return n
last = 0
while True:
    t = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if open("/proc/%s/comm" % pid).read().strip() != "m365-relay":
                continue
            fds = os.listdir("/proc/%s/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            p = "/proc/%s/fd/%s" % (pid, fd)
            try:
                st = os.stat(p)
                target = os.readlink(p)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and (target.endswith(" (deleted)") or target.startswith("/tmp/")) \
                    and not target.startswith(os.path.dirname(spool)):
                t += st.st_size
    tmax = max(tmax, t)
    qmax = max(qmax, queue_bytes())
    now = time.time()
    if now - last > 0.2:
        with open(out + ".tmp", "w") as f:
            f.write("%d %d\n" % (tmax, qmax))
        os.rename(out + ".tmp", out)
        last = now
    time.sleep(0.02)
PYEOF
}

# runs FILE - "n cpu_mean_ms cpu_p95_ms cpu_max_ms rss_mean_kb rss_max_kb
# elapsed_mean_s" over the m365-relay runs in a time.log
runs() {
    "$PYTHON" - "$1" <<'PYEOF'
import statistics, sys
runs = []
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) == 4:
        try:
            runs.append(((float(f[1]) + float(f[2])) * 1000.0, int(f[3]), float(f[0])))
        except ValueError:
            pass
if not runs:
    print("0 0 0 0 0 0 0")
    sys.exit()
cpu = sorted(r[0] for r in runs)
rss = sorted(r[1] for r in runs)
p95 = cpu[min(len(cpu) - 1, int(round(0.95 * (len(cpu) - 1))))]
print(len(runs), "%.0f" % statistics.mean(cpu), "%.0f" % p95, "%.0f" % cpu[-1],
      "%.0f" % statistics.mean(rss), rss[-1], "%.2f" % statistics.mean(r[2] for r in runs))
PYEOF
}

# ======================================================================
# 1. 150 MB
TAG=B150
f=$M/$TAG.eml
large_gen "$f" one 149.9M "$TAG" "From: Bench <bob@contoso.test>" "To: big1@example.net" ||
    bench_die "large_gen failed"
size=$(stat -c %s "$f")
# the decoded PDF, for curl
"$PYTHON" - "$f" "$T/pdf.bin" <<'PYEOF' || bench_die "cannot decode the PDF part"
import binascii, sys
src, out = sys.argv[1], sys.argv[2]
state, o = "hdr", open(out, "wb")
for line in open(src, "rb"):
    if state == "hdr" and line.lower().startswith(b"content-type: application/pdf"):
        state = "parthdr"
    elif state == "parthdr" and line in (b"\r\n", b"\n"):
        state = "body"
    elif state == "body":
        if line.startswith(b"--"):
            break
        o.write(binascii.a2b_base64(line))
o.close()
PYEOF
pdf_size=$(stat -c %s "$T/pdf.bin")
token=$(emu_curl --fail-with-body -d "grant_type=client_credentials&client_id=$EMU_APP_SECRET&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default" \
    --data-urlencode "client_secret@$T/secret" \
    "$EMU_URL/$EMU_TENANT/oauth2/v2.0/token" | json_eval 'd["access_token"]') ||
    bench_die "curl: no token"
# The draft and the session are made by the same curl process as the
# PUTs would be, but their URLs are only known afterwards: make them
# first (timed too), then time the PUTs.
cat > "$T/curl-pre.sh" <<EOF
id=\$(curl -sS --noproxy '*' --cacert '$CA_FILE' -H 'Authorization: Bearer $token' \
    -H 'Content-Type: application/json' -H 'Prefer: IdType="ImmutableId"' \
    -d '{"subject": "curl floor", "toRecipients": [{"emailAddress": {"address": "floor@example.net"}}]}' \
    '$EMU_URL/v1.0/users/bob@contoso.test/messages' | sed -n 's/.*"id": *"\\([^"]*\\)".*/\\1/p')
curl -sS --noproxy '*' --cacert '$CA_FILE' -H 'Authorization: Bearer $token' \
    -H 'Content-Type: application/json' \
    -d '{"AttachmentItem": {"attachmentType": "file", "name": "floor.pdf", "size": $pdf_size, "contentType": "application/pdf"}}' \
    "$EMU_URL/v1.0/users/bob@contoso.test/messages/\$id/attachments/createUploadSession" |
    sed -n 's/.*"uploadUrl": *"\\([^"]*\\)".*/\\1/p'
EOF

# curl_floor I - curl uploads the decoded PDF in the relay's ranges
# ($T/chunks.d) to a new upload session; its times go to curl.time.I
curl_floor() {
    local url start=0 c n
    url=$("$T/bin/timed" "$T/curl-pre.time.$1" sh "$T/curl-pre.sh") ||
	bench_die "curl: draft or session failed"
    [ -n "$url" ] || bench_die "curl: no uploadUrl"
    : > "$T/curl.cfg"
    for c in "$T"/chunks.d/*; do
	n=$(stat -c %s "$c")
	[ "$start" = 0 ] || echo next >> "$T/curl.cfg"
	cat >> "$T/curl.cfg" <<EOF
url = "$url"
upload-file = "$c"
header = "Content-Type: application/octet-stream"
header = "Content-Range: bytes $start-$((start + n - 1))/$pdf_size"
cacert = "$CA_FILE"
noproxy = "*"
silent
show-error
output = "/dev/null"
write-out = "%{http_code}\\n"
EOF
	start=$((start + n))
    done
    "$T/bin/timed" "$T/curl.time.$1" curl -K "$T/curl.cfg" > "$T/curl.codes" ||
	bench_die "curl PUTs failed"
    grep -qv '^20[01]$' "$T/curl.codes" && bench_die "curl: a PUT was refused: $(sort "$T/curl.codes" | uniq -c)"
    [ "$(emu_ctl GET /_emu/uploads | json_eval '[u for u in d if u["name"] == "floor.pdf"][-1]["state"]')" = complete ] ||
	bench_die "curl: the upload session is not complete"
}

# spool_floor I - dd reads the message from a pipe and writes it to a
# file in the relay's temporary directory, dd reads it back, rm; times
# to spool-in.time.I and spool-out.time.I
spool_floor() {
    local sp=${TMPDIR:-/tmp}/m365-bench-floor.$$
    cat "$f" | "$T/bin/timed" "$T/spool-in.time.$1" \
	dd of="$sp" bs=256k 2>/dev/null || bench_die "dd into $sp failed"
    "$T/bin/timed" "$T/spool-out.time.$1" \
	sh -c 'dd if="$1" of=/dev/null bs=256k 2>/dev/null && rm -f "$1"' sh "$sp" ||
	bench_die "dd from $sp failed"
}

# settle - write back what earlier steps left dirty (the queue files and
# stored messages of the last run, 150 MB each) before the next timed
# step, so that no measurement shares the machine with that write-back
settle() {
    sync
    sleep 0.2
}

: >"$T/time.log"
emu_ctl POST /_emu/reset '{}' >/dev/null
sampler "$T/spool.max" &
SAMPLER=$!
t_sub=0 t_del=0
for ((r = 1; r <= R; r++)); do
    # another recipient each time: a new delivery for the send ledger
    settle
    t0=$(date +%s.%N)
    large_smtp "$PORT" bob@contoso.test "big$r@example.net" "$f" >/dev/null ||
	bench_die "150 MB message not accepted: $(cat "$f.smtp")"
    t1=$(date +%s.%N)
    large_wait_sent "$f.json" "$r" 900 || bench_die "150 MB message not delivered: $(tail -n 3 "$T/relay.log")"
    pf_wait_empty 60 || bench_die "150 MB: queue not empty"
    t2=$(date +%s.%N)
    t_sub=$("$PYTHON" -c "print($t_sub + $t1 - $t0)")
    t_del=$("$PYTHON" -c "print($t_del + $t2 - $t1)")
    if [ "$r" = 1 ]; then
	large_verify "$f.json" big1@example.net ||
	    bench_die "150 MB message arrived damaged (see above)"
	# the ranges the relay used, for curl
	emu_ctl GET /_emu/uploads | json_eval \
	    '" ".join(str(c) for c in [u for u in d if u["name"] == "scan-B150.pdf"][-1]["chunks"])' \
	    > "$T/chunks" || bench_die "no upload session of the relay"
	mkdir -p "$T/chunks.d"
	# shellcheck disable=SC2046  # one argument per range
	"$PYTHON" - "$T/pdf.bin" "$T/chunks.d" $(cat "$T/chunks") <<'PYEOF' || bench_die "cannot split the PDF"
import sys
src, d, sizes = sys.argv[1], sys.argv[2], [int(x) for x in sys.argv[3:]]
with open(src, "rb") as f:
    for i, n in enumerate(sizes):
        with open("%s/%04d" % (d, i), "wb") as o:
            o.write(f.read(n))
    if f.read(1):
        sys.exit("the ranges do not cover the file")
PYEOF
	rm -f "$T/pdf.bin"
    fi
    large_eml_drop "$f.json"
    settle
    curl_floor "$r"
    settle
    spool_floor "$r"
done
sleep 0.3
kill "$SAMPLER" 2>/dev/null
wait "$SAMPLER" 2>/dev/null
SAMPLER=
read -r tmp_max queue_max < "$T/spool.max"
rm -rf "$T/chunks.d" "$f"
nchunks=$(wc -w < "$T/chunks")
cp "$T/time.log" "$T/time.B150.log"

# ======================================================================
# 2. 20 x 10 MB (drafts) next to 20 x 2.5 MB (sendMail)
# phase NAME SIZE - N distinct messages (their own Message-ID), sent by
# up to SESSIONS clients at once; one result line
RESULTS=()
phase() {
    local name=$1 size=$2 i t0 t1 pids=() sent msize
    for ((i = 1; i <= N; i++)); do
	large_gen "$M/$name.$i.eml" one "$size" "${name//./p}x$i" \
	    "From: Bench <bob@contoso.test>" "To: bench$i@example.net" ||
	    bench_die "large_gen failed"
    done
    msize=$(stat -c %s "$M/$name.1.eml")
    emu_ctl POST /_emu/reset '{}' >/dev/null
    : >"$T/time.log"
    settle
    t0=$(date +%s.%N)
    for ((i = 1; i <= N; i++)); do
	large_smtp "$PORT" bob@contoso.test "bench$i@example.net" "$M/$name.$i.eml" >/dev/null &
	pids+=("$!")
	if [ "${#pids[@]}" -ge "$SESSIONS" ]; then
	    wait "${pids[0]}"
	    pids=("${pids[@]:1}")
	fi
    done
    wait "${pids[@]}"
    wait_until 900 sent_all "$N" || bench_die "phase $name: not all $N messages arrived"
    pf_wait_empty 120 || bench_die "phase $name: queue not empty"
    t1=$(date +%s.%N)
    sent=$(emu_sent_count)
    rm -f "$M/$name".*.eml
    emu_ctl GET /_emu/sent | json_eval '"\n".join(r["eml_path"] for r in d)' | xargs -r rm -f
    # shellcheck disable=SC2046  # runs: one argument per figure
    RESULTS+=("$("$PYTHON" -c '
import sys
name, n, msize, t0, t1, sent, drafts, posts = sys.argv[1:9]
runs = sys.argv[9:]
wall = float(t1) - float(t0)
print("%-16s %4s %9s %8.1f %8.1f %5s %6s %7s %7s %7s %8s %8s %6s %6s" % (
    name, n, msize, wall, int(sent) * 60.0 / wall, sent, *runs[:6], drafts, posts))' \
	"$name" "$N" "$msize" "$t0" "$t1" "$sent" "$(emu_stat drafts_sent)" \
	"$(emu_stat sendmail_requests)" $(runs "$T/time.log"))")
}

# sent_all N - the emulator recorded at least N messages
sent_all() {
    [ "$(emu_sent_count)" -ge "$1" ]
}
phase "10MB-draft" 10M
phase "2.5MB-sendMail" 2500k
if [ -n "${BENCH_PACED:-}" ]; then
    sed -i 's|^upload_budget = 1024M$|upload_budget = 15M|' "$CONF"
    phase "10MB-paced15M" 10M
fi

# ======================================================================
echo
echo "m365relay large-message benchmark: private Postfix -> m365-relay -> emulator on 127.0.0.1"
echo "($(nproc) CPUs, $(uname -r); upload_budget 1024M unless noted)"
echo
echo "1. One message of $size bytes (a PDF of $pdf_size decoded bytes in one upload session), $R times"
"$PYTHON" - "$T" "$R" "$size" "$tmp_max" "$queue_max" "$nchunks" "$t_sub" "$t_del" <<'PYEOF'
import statistics, sys
T, R, size, tmp_max, q_max, nch, t_sub, t_del = sys.argv[1:]
R, size, tmp_max, q_max = int(R), int(size), int(tmp_max), int(q_max)
def times(path):
    """wall, cpu (ms), rss (KB) of a line of timed"""
    f = open(path).read().split()[-4:]
    return float(f[0]), (float(f[1]) + float(f[2])) * 1000.0, int(f[3])
def med(xs):
    return statistics.median(xs)
relay = []
for line in open(T + "/time.B150.log"):
    f = line.split()
    if len(f) == 4:
        relay.append((float(f[0]), (float(f[1]) + float(f[2])) * 1000.0, int(f[3])))
if len(relay) != R:
    sys.exit("expected %d m365-relay runs for the 150 MB message, got %d" % (R, len(relay)))
curl = [times("%s/curl.time.%d" % (T, i)) for i in range(1, R + 1)]
pre = [times("%s/curl-pre.time.%d" % (T, i)) for i in range(1, R + 1)]
sp_in = [times("%s/spool-in.time.%d" % (T, i)) for i in range(1, R + 1)]
sp_out = [times("%s/spool-out.time.%d" % (T, i)) for i in range(1, R + 1)]
r_cpu = med([x[1] for x in relay])
c_cpu = med([x[1] for x in curl])
f_cpu = med([a[1] + b[1] for a, b in zip(sp_in, sp_out)])
r_rss = max(x[2] for x in relay)
ratio = r_cpu / c_cpu if c_cpu else float("inf")
def yn(b):
    return "yes" if b else "NO"
def spread(xs):
    return "%.0f-%.0f" % (min(xs), max(xs))
print("   SMTP submission to Postfix (mean):     %7.1f s" % (float(t_sub) / R))
print("   queued to delivered (mean):            %7.1f s" % (float(t_del) / R))
print("   m365-relay run (wall, median):         %7.1f s" % med([x[0] for x in relay]))
print("   m365-relay peak RSS (max of runs):     %7.1f MB   (target <= 32 MB: %s)" % (r_rss / 1024.0, yn(r_rss <= 32 * 1024)))
print("   m365-relay CPU (user+sys, median):     %7.0f ms   (runs: %s)" % (r_cpu, spread([x[1] for x in relay])))
print("   curl CPU, %s PUTs of the same ranges:  %7.0f ms   (runs: %s; wall %.1f s, RSS %.1f MB;"
      % (nch, c_cpu, spread([x[1] for x in curl]), med([x[0] for x in curl]), max(x[2] for x in curl) / 1024.0))
print("       token, draft and createUploadSession by curl before: %.0f ms more)" % med([x[1] for x in pre]))
print("   relay CPU / curl CPU:                  %7.2f      (target <= 2: %s)" % (ratio, yn(ratio <= 2)))
print("   spool floor (dd pipe -> file, file ->, rm): %4.0f ms   (runs: %s)"
      % (f_cpu, spread([a[1] + b[1] for a, b in zip(sp_in, sp_out)])))
print("   relay CPU / (curl + spool floor):      %7.2f      (what the MIME parse and decoding add)"
      % (r_cpu / (c_cpu + f_cpu) if c_cpu + f_cpu else float("inf")))
# the relay spools what pipe(8) gives it: the message plus Postfix's
# Received: and Return-Path: lines (a few hundred bytes), LF as CRLF
print("   relay temporary files, peak:           %7.1f MB = %.3f copies of the message (target <= 1: %s)"
      % (tmp_max / 1048576.0, tmp_max / float(size), yn(tmp_max <= size + 4096)))
print("   Postfix queue, peak:                   %7.1f MB = %.3f copies (Postfix's own queue file)"
      % (q_max / 1048576.0, q_max / float(size)))
PYEOF
echo
echo "2. $N messages each, up to $SESSIONS SMTP clients at once"
printf '%-16s %4s %9s %8s %8s %5s %6s %7s %7s %7s %8s %8s %6s %6s\n' \
    phase msgs bytes wall_s msg/min sent runs cpu_ms p95_cpu max_cpu rss_kb max_rss drafts posts
for r in "${RESULTS[@]}"; do
    printf '%s\n' "$r"
done
echo
echo "cpu_ms/p95_cpu/max_cpu: user+system CPU per m365-relay run (mean, 95th"
echo "percentile, max); rss_kb/max_rss: peak RSS per run (mean, max); drafts:"
echo "messages sent through a draft; posts: sendMail requests."
bad_runs=$(grep -c 'status=deferred\|status=bounced' "$T/relay.log")
[ "$bad_runs" -eq 0 ] || echo "note: $bad_runs deferred/bounced log lines in $T/relay.log"
ok "benchmark finished"
t_done
