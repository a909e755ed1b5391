#!/bin/bash
#
# t-reload.sh - m365-milter as a daemon: reload, signals, -n, exit codes
#
# m365-milter runs as two processes: the supervisor (pid file, $!) and
# its child, the worker that runs libmilter (see m365-milter(8),
# SIGNALS).  This test checks:
# - SIGHUP to the supervisor reloads into a new handle: a message in
#   flight finishes with the old configuration, the next one uses the
#   new (t-reload.lua); the worker is not restarted;
# - a broken configuration is refused on reload (file:line logged), the
#   old one stays;
# - SIGUSR1 reloads as well;
# - SIGTERM to the pid in the pid file stops both processes cleanly:
#   exit 0, socket and pid file removed;
# - kill -9 of the worker makes the supervisor exit non-zero (70) and
#   leaves a stale unix socket, which the next milter replaces;
# - kill -9 of the supervisor stops the worker too (nothing orphaned);
# - -n, usage and listen errors give 0/78, 64 and 71 (also without -f:
#   the starting command waits for the outcome); without -f the milter
#   detaches and writes the supervisor's pid to its pid file.
# Skips (77) only when miltertest is missing.

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/milter/lib-milter.sh"

t_init milter-reload
milter_need
milter_user

CONF=$T/m.conf
conf1() {
    milter_base_conf "$CONF.new"
    printf '\n[milter]\nunknown_sender = accept\nrewrite_sender = no\nadd_message_id = no\n' >>"$CONF.new"
    mv "$CONF.new" "$CONF"
}
conf2() {
    milter_base_conf "$CONF.new"
    printf '\n[milter]\nunknown_sender = reject\nrewrite_sender = yes\nadd_message_id = no\n' >>"$CONF.new"
    mv "$CONF.new" "$CONF"
}
conf1

# count REGEX - lines of the log matching REGEX
count() {
    grep -Ec -- "$1" "$LOG"
}

# signal_reload SIG PID REGEX - send SIG, wait for one more REGEX line
signal_reload() {
    local n
    n=$(count "$3")
    kill "-$1" "$2"
    wait_until 10 sh -c "[ \$(grep -Ec -- '$3' '$LOG') -gt $n ]"
}

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
"$MILTER" -f -c "$CONF" -p "inet:$port@127.0.0.1" -P "$T/run/busy.pid" >/dev/null 2>&1
rc=$?
check "port in use: exit 71 (got $rc)" test "$rc" = 71
check "port in use: no pid file left behind" test ! -e "$T/run/busy.pid"
log_has "port in use: the worker's error is logged" \
    "error: cannot listen on inet:$port@127\\.0\\.0\\.1: check that the port is free"
"$MILTER" -c "$CONF" -p "inet:$port@127.0.0.1" -P "$T/run/busy.pid" >/dev/null 2>&1
rc=$?
check "port in use, without -f: the starting command exits 71 (got $rc)" \
    test "$rc" = 71
check "port in use, without -f: no pid file left behind" \
    test ! -e "$T/run/busy.pid"

# Two processes: the supervisor (pid file) and the worker (its child).
milter_start r "$CONF"
PID=$MILTER_PID
WORKER=$MILTER_WORKER
check "the pid file names the supervisor (\$!)" \
    test "$(cat "$T/run/r.pid")" = "$PID"
check "the supervisor has one child, the worker" \
    test -n "$WORKER" -a "$(pgrep -P "$PID" | wc -l)" = 1
check "the worker logged that it listens, naming its supervisor" \
    grep -Eq "m365-milter\\[$WORKER\\]: m365-milter started: listening on unix:.*, supervisor pid $PID\$" "$LOG"
if [ "$(id -u)" = 0 ]; then
    check "started as root: the worker runs as $RUN_USER" \
	test "$(milter_uid "$WORKER")" = "$RUN_UID"
    check "started as root: the supervisor runs as $RUN_USER" \
	test "$(milter_uid "$PID")" = "$RUN_UID"
fi

# SIGHUP while a message is in flight.
cat >"$T/reload.sh" <<EOF
. "$top_srcdir/tests/lib.sh" >/dev/null 2>&1
T="$T" CONF="$CONF"
$(declare -f milter_base_conf conf2 count signal_reload)
RUN_USER="$RUN_USER" LOG="$LOG"
conf2
signal_reload HUP "\$(cat "$T/run/r.pid")" 'reloaded the configuration'
EOF
mt_run "SIGHUP reload: in-flight message keeps config 1, new ones get config 2" \
    t-reload.lua "LUADIR=$LUADIR" PHASE=first "RELOAD=$T/reload.sh"
log_has "SIGHUP: the supervisor passes the reload on" \
    "m365-milter\\[$PID\\]: supervisor: SIGHUP: reload requested; passing it on to the worker \\(pid $WORKER\\) as SIGUSR1"
log_has "SIGHUP: the worker reloaded" \
    "m365-milter\\[$WORKER\\]: reloaded the configuration from .*/m\\.conf"
log_has "in-flight message: old configuration (no sender rewrite)" \
    ' INFLIGHT: milter: from=<app@app\.test>, account=app, .*changed=none$'
log_has "new message: new configuration (sender rewritten)" \
    ' NEWCONF: milter: from=<app@app\.test>, account=app, .*changed=sender=<bob@contoso\.test>'
check "SIGHUP: the same worker still runs (no restart)" \
    test "$(milter_worker "$PID")" = "$WORKER"

# A broken configuration is refused; the running one stays.
cp "$CONF" "$CONF.good"
sed -i 's/^unknown_sender = reject$/unknown_sender = perhaps/' "$CONF"
if signal_reload HUP "$PID" 'keeping the previous configuration'; then
    ok "bad reload: refused and logged"
else
    bad "bad reload: no \"keeping the previous configuration\" in $LOG"
fi
log_has "bad reload: the reason is logged as file:line" 'error: .*/m\.conf:[0-9]+: .*perhaps'
mt_run "bad reload: config 2 still applies" t-reload.lua "LUADIR=$LUADIR" PHASE=after
check "bad reload: the milter still runs" kill -0 "$PID" "$WORKER"

# SIGUSR1 reloads too.
conf1
if signal_reload USR1 "$PID" 'reloaded the configuration'; then
    ok "SIGUSR1: reload logged"
else
    bad "SIGUSR1: no reload logged in $LOG"
fi
log_has "SIGUSR1: the supervisor passes the reload on" \
    "supervisor: SIGUSR1: reload requested; passing it on to the worker"
mt_run "SIGUSR1: config 1 applies again" t-reload.lua "LUADIR=$LUADIR" PHASE=conf1

# SIGTERM to the pid in the pid file stops both processes.
milter_stop "$(cat "$T/run/r.pid")"
rc=$?
check "SIGTERM: clean stop, exit 0 (got $rc)" test "$rc" = 0
check "SIGTERM: the worker is gone too" sh -c "! kill -0 $WORKER 2>/dev/null"
check "SIGTERM: pid file removed" test ! -e "$T/run/r.pid"
check "SIGTERM: socket removed" test ! -e "$MILTER_SOCK"
log_has "SIGTERM: the supervisor stops the worker" \
    "m365-milter\\[$PID\\]: supervisor: SIGTERM: stopping the worker \\(pid $WORKER\\)"
log_has "SIGTERM: the worker stopped" "m365-milter\\[$WORKER\\]: m365-milter stopping\$"

# kill -9 of the worker: the supervisor exits non-zero; the unix socket
# stays behind, and the next milter replaces it.
cp "$CONF.good" "$CONF"
milter_start s "$CONF"
kill -KILL "$MILTER_WORKER"
wait "$MILTER_PID"
rc=$?
check "worker killed: the supervisor exits 70 (got $rc)" test "$rc" = 70
log_has "worker killed: the supervisor logs why" \
    "supervisor: the worker \\(pid $MILTER_WORKER\\) was killed by signal 9 "
check "worker killed: pid file removed" test ! -e "$T/run/s.pid"
check "worker killed: a stale socket is left behind" test -S "$MILTER_SOCK"
milter_start s "$CONF"
check "a new milter replaces the stale socket" kill -0 "$MILTER_PID" "$MILTER_WORKER"
mt_run "the new milter answers" t-reload.lua "LUADIR=$LUADIR" PHASE=after

# kill -9 of the supervisor: the worker stops by itself.
W=$MILTER_WORKER
kill -KILL "$MILTER_PID"
wait "$MILTER_PID" 2>/dev/null
if wait_until 15 sh -c "! kill -0 $W 2>/dev/null"; then
    ok "supervisor killed: the worker stops too"
else
    bad "supervisor killed: the worker $W still runs 15 s later"
    kill -KILL "$W" 2>/dev/null
fi
check "supervisor killed: the worker removed its socket" test ! -e "$MILTER_SOCK"

# Without -f: detach, pid file, SIGHUP reloads, SIGTERM stops.
"$MILTER" -c "$CONF" -p "unix:$T/run/bg.sock" -P "$T/run/bg.pid"
rc=$?
check "daemon: the starting command exits 0 (got $rc)" test "$rc" = 0
check "daemon: it listens when the starting command returns" test -S "$T/run/bg.sock"
if wait_until 10 test -s "$T/run/bg.pid"; then
    bgpid=$(cat "$T/run/bg.pid")
    bgworker=$(milter_worker "$bgpid")
    check "daemon: pid file names a running process" kill -0 "$bgpid"
    check "daemon: the supervisor is its own session leader" \
	test "$(ps -o sid= -p "$bgpid" | tr -d ' ')" = "$bgpid"
    check "daemon: the worker is the supervisor's child" \
	test -n "$bgworker" -a "$(ps -o sid= -p "${bgworker:-1}" | tr -d ' ')" = "$bgpid"
    if [ "$(id -u)" = 0 ]; then
	check "daemon: both processes run as $RUN_USER" \
	    test "$(milter_uid "$bgpid")/$(milter_uid "$bgworker")" = "$RUN_UID/$RUN_UID"
    fi
    if signal_reload HUP "$bgpid" "m365-milter\\[$bgworker\\]: reloaded the configuration"; then
	ok "daemon: SIGHUP reloads"
    else
	bad "daemon: no reload logged after SIGHUP"
    fi
    kill -TERM "$bgpid"
    if wait_until 15 sh -c "! kill -0 $bgpid 2>/dev/null"; then
	ok "daemon: stops on SIGTERM"
    else
	bad "daemon: still running 15 s after SIGTERM"
	kill -KILL "$bgpid"
    fi
    check "daemon: the worker stopped too" sh -c "! kill -0 $bgworker 2>/dev/null"
    check "daemon: pid file and socket removed" \
	test ! -e "$T/run/bg.pid" -a ! -e "$T/run/bg.sock"
else
    bad "daemon: no pid file $T/run/bg.pid"
fi

t_done
