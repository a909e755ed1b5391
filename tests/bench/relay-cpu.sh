#!/bin/bash
#
# relay-cpu.sh - benchmark: CPU of one m365-relay delivery in a fresh
# process, against curl posting the same request in a fresh process
# (issue 14.4)
#
#	bash tests/bench/relay-cpu.sh          (as root, after "make")
#
# A benchmark, not a test (not in "make check").  It starts the bundled
# emulator, gets an app token, and then alternates, BENCH_RUNS (30) times:
#   relay   m365-relay -c CONF -q ID -f bob@contoso.test -- one@example.net
#           < a 10 KB message, as the unprivileged user (token cached in
#           state_dir, as at steady state; every run a new queue id, so
#           the send ledger sends it)
#   curl    curl POSTing the same message, base64, to sendMail with the
#           same token, same user
#   base    (with BENCH_BASE=/path/to/m365-relay of another build) that
#           relay, same configuration
# each timed by wait4() (python3); it prints the median and spread of
# user+system CPU and the median ratio relay/curl (pair by pair).  (Peak
# RSS is not shown: a child's ru_maxrss starts at its parent's.)
# Both use the system CA store: the runs happen in a private mount
# namespace whose /etc/ssl/certs is a copy of the real one with the
# emulator's test CA added (to the bundle and as a hash link), and the
# relay's configuration has no ca_file.  BENCH_CA=file measures with
# ca_file = the emulator CA instead (curl --cacert).
#
# Where the time of one delivery goes (perf record --call-graph dwarf,
# 30 runs, system CA store, 2-core VM, 2026-12-02; shares of the
# relay process's samples, total about 15 ms CPU after the cut below):
#   ~25 %  kernel outside our calls: execve, mapping and faulting in
#          ~34 shared libraries (libcurl's own dependencies: OpenSSL,
#          GnuTLS via librtmp, nghttp2, libssh2, LDAP, Kerberos, ...)
#   ~19 %  dynamic linking (ld.so symbol lookup and relocation)
#   ~21 %  the HTTPS request: TCP + TLS handshake (SSL_CTX_new 2.5 %,
#          chain verification 2.5 %, OpenSSL's DRBG set-up on the first
#          random bytes 4 %) and the 10 KB sendMail
#   ~18 %  the send ledger (issue 11: a lock file and two state files
#          per message, written with fsync and rename; ext4 inode
#          allocation dominates)
#    ~4 %  libcurl/OpenSSL global init (openssl.cnf 2 %, error strings
#          2 %), ~4 % exit handlers (OPENSSL_cleanup 2 %)
#    <1 %  our own code (configuration, MIME streaming, base64, JSON)
# Before the cut the same run cost about 39 ms: libcurl's default trust
# store is its CA bundle, and OpenSSL 3 parsed all ~140 certificates of
# ca-certificates.crt on every run (about 60 % of the CPU).  Now http.c
# points libcurl at the hashed CA directory (CURLOPT_CAPATH, no
# CURLOPT_CAINFO) when ca_file is unset: one certificate is loaded, by
# its hash, when the handshake needs it.  Figures of this script (20
# runs each, medians, system CA store): relay 16.1 ms, curl 36.5 ms,
# the relay before the cut 39.9 ms; relay/curl 0.44 (before: about
# 1.06).  With BENCH_CA=file (one CA on both sides, 30 runs): relay
# 16.9 ms, curl 12.6 ms, before 16.2 ms; relay/curl 1.34 - there the
# send ledger's files and fsyncs are most of the difference.
# Tried and not kept (no difference beyond the noise of 30 pairs,
# +-2 %): skipping openssl.cnf (OPENSSL_INIT_NO_LOAD_CONFIG; it would
# also ignore an administrator's provider or policy settings), not
# loading OpenSSL's error strings (worse error texts), no OpenSSL
# atexit clean-up.  TLS session resumption across processes was not
# added: a prototype (CURLOPT_SSL_CTX_FUNCTION setting a new-session
# callback that wrote the DER session, mode 0600, to state_dir, and an
# info callback that set it with SSL_set_session() at handshake start;
# the emulator resumed it, openssl s_client said "Reused") measured
# 1.00 x the relay without it (40 pairs): what it saves (the server's
# chain parsed and verified, ~5 %) is what it costs here (the session
# holds the server certificate, decoded again when read, and every
# TLS 1.3 handshake brings a new ticket: one more file written per
# delivery).
#
# Settings (environment): BENCH_RUNS (30), BENCH_SIZE (10240),
# BENCH_BASE (see above), BENCH_CA (system|file), KEEP_TMP=1.

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
top_builddir=${top_builddir:-$(pwd)}
. "$top_srcdir/tests/lib.sh"

RUNS=${BENCH_RUNS:-30}
SIZE=${BENCH_SIZE:-10240}

[ "$(id -u)" = 0 ] || bench_die "run as root (a private mount namespace, an unprivileged user)"
[ -x "$RELAY" ] || bench_die "$RELAY not built: run make first"
[ -z "${BENCH_BASE:-}" ] || [ -x "$BENCH_BASE" ] || bench_die "BENCH_BASE=$BENCH_BASE is not an executable"

t_init bench-relay-cpu
emu_setup
CONF=$T/relay.conf
write_conf "$CONF"
RUSER=${PF_RELAY_USER:-m365test}
e2e_user "$RUSER" || bench_die "cannot create user $RUSER"
AS="setpriv --reuid=$(id -u "$RUSER") --regid=$(id -g "$RUSER") --clear-groups --"
sized_msg "$T/m.eml" "$SIZE" "Bob <bob@contoso.test>" one@example.net "relay-cpu"
base64 -w 0 "$T/m.eml" >"$T/m.b64"
chmod 644 "$T/m.eml" "$T/m.b64"
TOKEN=$(emu_app_token)
[ -n "$TOKEN" ] || bench_die "no token from the emulator"
printf 'header = "Authorization: Bearer %s"\n' "$TOKEN" >"$T/curl.cfg"
chown "$RUSER" "$T/curl.cfg"
chmod 600 "$T/curl.cfg"

CACERT=
CADIR=
if [ "${BENCH_CA:-system}" = system ]; then
    CADIR=$T/syscerts
    cp -a /etc/ssl/certs "$CADIR"
    cat "$CA_FILE" >>"$CADIR/ca-certificates.crt"
    cp "$CA_FILE" "$CADIR/m365emu-test-ca.pem"
    openssl rehash "$CADIR" 2>/dev/null || c_rehash "$CADIR" >/dev/null
    chmod -R a+rX "$CADIR"
    sed -i '/^ca_file/d' "$CONF"
else
    CACERT=$CA_FILE
fi
chmod 644 "$CONF"

# The runs, in a private mount namespace (its own /etc/ssl/certs); each
# process's CPU and peak RSS from wait4() (microseconds; /usr/bin/time
# prints only hundredths of a second).
cat >"$T/runs.py" <<'EOF'
import os, statistics, sys
t, runs, as_user, relay, conf, base, url, cacert = sys.argv[1:9]
as_user = as_user.split()
def run(argv, stdin):
    pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=[
        (os.POSIX_SPAWN_OPEN, 0, stdin, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0)])
    _, status, ru = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit("%s exited %d" % (argv[len(as_user)], os.waitstatus_to_exitcode(status)))
    return ((ru.ru_utime + ru.ru_stime) * 1000.0, 0)
rows = {"relay": [], "curl": [], "base": []}
# One token in state_dir first (steady state), not counted.
run(as_user + [relay, "-c", conf, "-q", "warm", "-f", "bob@contoso.test", "--",
               "one@example.net"], t + "/m.eml")
for i in range(int(runs)):
    rows["relay"].append(run(as_user + [relay, "-c", conf, "-q", "r%d" % i, "-f",
                         "bob@contoso.test", "--", "one@example.net"], t + "/m.eml"))
    rows["curl"].append(run(as_user + ["curl", "-sS", "-o", "/dev/null"] +
                        (["--cacert", cacert] if cacert else []) +
                        ["-K", t + "/curl.cfg", "-H", "Content-Type: text/plain",
                         "--data-binary", "@" + t + "/m.b64", url], "/dev/null"))
    if base:
        rows["base"].append(run(as_user + [base, "-c", conf, "-q", "b%d" % i, "-f",
                            "bob@contoso.test", "--", "one@example.net"], t + "/m.eml"))
print("%-8s %5s %9s %9s %9s" % ("who", "runs", "cpu_ms", "min", "max"))
for w, r in rows.items():
    if r:
        c = sorted(x[0] for x in r)
        print("%-8s %5d %9.1f %9.1f %9.1f" % (w, len(r), statistics.median(c), c[0],
              c[-1]))
for a, b in (("relay", "curl"), ("relay", "base")):
    pairs = [x[0] / y[0] for x, y in zip(rows[a], rows[b]) if y[0] > 0]
    if pairs:
        print("%s/%s CPU, median of %d pairs: %.2f" % (a, b, len(pairs), statistics.median(pairs)))
EOF
unshare -m sh -c '[ -z "$1" ] || mount --bind "$1" /etc/ssl/certs || exit 1; shift; exec "$@"' \
    sh "${CADIR:-}" python3 "$T/runs.py" "$T" "$RUNS" "$AS" "$RELAY" "$CONF" \
    "${BENCH_BASE:-}" "$EMU_URL/v1.0/users/bob@contoso.test/sendMail" "$CACERT" ||
    bench_die "the runs failed"
[ "$(emu_stat sendmail_requests)" -ge $((RUNS * 2)) ] ||
    bench_die "only $(emu_stat sendmail_requests) sendMail requests arrived (see $T/relay.log)"
ok "benchmark finished"
t_done
