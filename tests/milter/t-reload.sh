#!/bin/bash
#
# t-reload.sh - m365-milter as a daemon: reload, signals, -n, exit codes
#
# - SIGUSR1 reloads into a new handle: a message in flight finishes with
#   the old configuration, the next one uses the new (t-reload.lua);
# - a broken configuration is refused on reload, the old one stays;
# - SIGHUP stops the milter cleanly (libmilter owns SIGHUP; see
#   m365-milter(8), SIGNALS);
# - a stale unix socket left by a killed milter is replaced;
# - -n, usage and listen errors give 0/78, 64 and 71; without -f the
#   milter detaches and writes its pid file.
# Skips (77) only when miltertest is missing.

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/milter/lib-milter.sh"

t_init milter-reload
milter_need
milter_user

CONF=$T/m.conf
conf1() {
    milter_base_conf "$CONF"
    printf '\n[milter]\nunknown_sender = accept\nrewrite_sender = no\nadd_message_id = no\n' >>"$CONF"
}
conf2() {
    milter_base_conf "$CONF.new"
    printf '\n[milter]\nunknown_sender = reject\nrewrite_sender = yes\nadd_message_id = no\n' >>"$CONF.new"
    mv "$CONF.new" "$CONF"
}
conf1

# -n and exit codes.
out=$("$MILTER" -n -c "$CONF" 2>&1)
check "-n: configuration OK, exit 0" test "$?/$out" = "0/configuration OK"
printf '[milter]\nmode = sideways\n' >"$T/bad.conf"
out=$("$MILTER" -n -c "$T/bad.conf" 2>&1)
rc=$?
check "-n: bad configuration exits 78 (got $rc)" test "$rc" = 78
if printf '%s\n' "$out" | grep -q "bad.conf:2: "; then
    ok "-n: the problem is reported as file:line"
else
    bad "-n: no file:line in: $out"
fi
"$MILTER" -x >/dev/null 2>&1
rc=$?
check "unknown option: exit 64 (got $rc)" test "$rc" = 64
"$MILTER" -f -c "$CONF" -p "inet:10029" >/dev/null 2>&1
rc=$?
check "inet socket without an address: exit 78 (got $rc)" test "$rc" = 78
port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$PYTHON" -c '
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1)
time.sleep(30)' "$port" &
t_bg_pid $!
wait_until 5 "$PYTHON" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])))' "$port"
"$MILTER" -f -c "$CONF" -p "inet:$port@127.0.0.1" >/dev/null 2>&1
rc=$?
check "port in use: exit 71 (got $rc)" test "$rc" = 71

# Reload while a message is in flight.
milter_start r "$CONF"
PID=$MILTER_PID
cat >"$T/reload.sh" <<EOF
. "$top_srcdir/tests/lib.sh" >/dev/null 2>&1
T="$T" CONF="$CONF"
$(declare -f milter_base_conf conf2)
RUN_USER="$RUN_USER" LOG="$LOG"
conf2
n=\$(grep -c 'reloaded the configuration' "$LOG")
kill -USR1 $PID
wait_until 10 sh -c "[ \\\$(grep -c 'reloaded the configuration' '$LOG') -gt \$n ]"
EOF
mt_run "reload: in-flight message keeps config 1, new ones get config 2" \
    t-reload.lua "LUADIR=$LUADIR" PHASE=first "RELOAD=$T/reload.sh"
log_has "reload logged" 'reloaded the configuration from .*/m\.conf'
log_has "in-flight message: old configuration (no sender rewrite)" \
    ' INFLIGHT: milter: from=<app@app\.test>, account=app, .*changed=none$'
log_has "new message: new configuration (sender rewritten)" \
    ' NEWCONF: milter: from=<app@app\.test>, account=app, .*changed=sender=<bob@contoso\.test>'

# A broken configuration is refused; the running one stays.
cp "$CONF" "$CONF.good"
sed -i 's/^unknown_sender = reject$/unknown_sender = perhaps/' "$CONF"
n=$(grep -c 'keeping the previous configuration' "$LOG")
kill -USR1 "$PID"
if wait_until 10 sh -c "[ \$(grep -c 'keeping the previous configuration' '$LOG') -gt $n ]"; then
    ok "bad reload: refused and logged"
else
    bad "bad reload: no \"keeping the previous configuration\" in $LOG"
fi
log_has "bad reload: the reason is logged as file:line" 'error: .*/m\.conf:[0-9]+: .*perhaps'
mt_run "bad reload: config 2 still applies" t-reload.lua "LUADIR=$LUADIR" PHASE=after
check "bad reload: the milter still runs" kill -0 "$PID"

# SIGHUP: libmilter stops the milter (clean exit, pid file removed).
kill -HUP "$PID"
wait "$PID"
rc=$?
check "SIGHUP: clean stop, exit 0 (got $rc)" test "$rc" = 0
check "SIGHUP: pid file removed" test ! -e "$T/run/r.pid"

# A stale socket from a killed milter does not stop the next one.
cp "$CONF.good" "$CONF"
milter_start s "$CONF"
kill -KILL "$MILTER_PID"
wait "$MILTER_PID" 2>/dev/null
check "SIGKILL leaves a stale socket behind" test -S "$MILTER_SOCK"
milter_start s "$CONF"
check "a new milter replaces the stale socket" kill -0 "$MILTER_PID"
mt_run "the new milter answers" t-reload.lua "LUADIR=$LUADIR" PHASE=after
kill -TERM "$MILTER_PID"
wait "$MILTER_PID"
check "SIGTERM: exit 0" test $? = 0

# Without -f: detach, pid file, runs until SIGTERM.
"$MILTER" -c "$CONF" -p "unix:$T/run/bg.sock" -P "$T/run/bg.pid"
rc=$?
check "daemon: the parent exits 0 (got $rc)" test "$rc" = 0
if wait_until 10 test -s "$T/run/bg.pid"; then
    bgpid=$(cat "$T/run/bg.pid")
    check "daemon: pid file names a running process" kill -0 "$bgpid"
    check "daemon: it is its own session leader" \
	test "$(ps -o sid= -p "$bgpid" | tr -d ' ')" = "$bgpid"
    kill -TERM "$bgpid"
    if wait_until 15 sh -c "! kill -0 $bgpid 2>/dev/null"; then
	ok "daemon: stops on SIGTERM"
    else
	bad "daemon: still running 15 s after SIGTERM"
	kill -KILL "$bgpid"
    fi
else
    bad "daemon: no pid file $T/run/bg.pid"
fi

t_done
