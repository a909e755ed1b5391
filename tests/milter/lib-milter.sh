# lib-milter.sh - helpers for the miltertest scripts (tests/milter/t-*.sh)
#
# Usage (bash, after tests/lib.sh and t_init):
#	. "$top_srcdir/tests/milter/lib-milter.sh"
#
#   milter_need            skip (77) when miltertest is missing; fail
#                          when the milter is not built
#   milter_user            RUN_USER: the [global] user the milter runs as
#                          (nobody when the tests run as root, so the
#                          privilege drop is exercised); prepares $T
#   milter_base_conf FILE  [global] + two delegated accounts, no emulator
#   milter_emu_conf FILE [LINE...]  write_conf for the emulator, usable by
#                          RUN_USER, LOG set; [milter] with the LINEs
#   milter_start NAME CONF [ARGS...]   start "m365-milter -f" on
#                          unix:$T/run/NAME.sock, pid file $T/run/NAME.pid;
#                          waits until it listens and (as root) until the
#                          supervisor has dropped its privileges too; sets
#                          MILTER_PID (the supervisor, = $!, the pid in
#                          the pid file), MILTER_WORKER (the libmilter
#                          process, its child), MILTER_SOCK
#   milter_worker PID      print the worker's pid (the supervisor's child)
#   milter_uid PID         print the real uid of a process
#   milter_uid_is PID UID  true when PID's real uid is UID
#   milter_stop PID        SIGTERM, wait; returns the exit status
#   mt_run NAME LUA [NAME=VALUE...]    run miltertest -s LUA with
#                          -D SOCK=... and the given globals; ok/bad NAME
#   log_has MSG REGEX      ok when $LOG has a line matching REGEX (ERE)
#   log_lacks MSG REGEX    ok when it has none

MILTER=$top_builddir/milter/m365-milter
LUADIR=$top_srcdir/tests/milter
LOG=

# milter_need - miltertest present, milter built
milter_need() {
    command -v miltertest >/dev/null 2>&1 ||
	skip_all "miltertest is not installed (Debian: apt-get install miltertest)"
    if [ ! -x "$MILTER" ]; then
	bad "$MILTER is built (run make first)"
	t_done
    fi
}

# milter_user - pick RUN_USER; as root let it reach $T's files
milter_user() {
    if [ "$(id -u)" = 0 ]; then
	RUN_USER=nobody
	RUN_UID=$(id -u nobody)
	chmod 711 "$T"
    else
	RUN_USER=$(id -un)
	RUN_UID=$(id -u)
    fi
    mkdir -p "$T/state" "$T/spool" "$T/run"
    chmod 700 "$T/state" "$T/spool" "$T/run"
    LOG=$T/milter.log
    : >"$LOG"
    if [ "$(id -u)" = 0 ]; then
	chown "$RUN_USER" "$T/state" "$T/spool" "$T/run" "$LOG"
    fi
    export RUN_USER RUN_UID LOG
}

# milter_own FILE... - give files to RUN_USER (as root)
milter_own() {
    if [ "$(id -u)" = 0 ]; then
	chown -R "$RUN_USER" "$@"
    fi
}

# milter_base_conf FILE - [global] and accounts for filter-mode tests
milter_base_conf() {
    cat >"$1" <<EOF
# m365relay.conf for the milter tests (no emulator needed)
[global]
state_dir = $T/state
log_file = $LOG
user = $RUN_USER
graph_url = https://127.0.0.1:9
login_url = https://127.0.0.1:9

[account app]
tenant = contoso.test
client_id = 11111111-0000-0000-0000-000000000001
auth = delegated
mailbox = bob@contoso.test
senders = @app.test bob@contoso.test
max_message_size = 2K

[account big]
tenant = contoso.test
client_id = 11111111-0000-0000-0000-000000000001
auth = delegated
mailbox = shared@contoso.test
senders = @big.test
EOF
}

# milter_start NAME CONF [ARGS...] - start the milter in the foreground
milter_start() {
    local name=$1 conf=$2
    shift 2
    MILTER_SOCK=$T/run/$name.sock
    "$MILTER" -f -c "$conf" -p "unix:$MILTER_SOCK" -P "$T/run/$name.pid" "$@" \
	>"$T/$name.out" 2>&1 &
    MILTER_PID=$!
    t_bg_pid "$MILTER_PID"
    if ! wait_until 10 test -S "$MILTER_SOCK"; then
	sed 's/^/#   /' "$T/$name.out" "$LOG"
	bad "m365-milter ($name) starts and listens on $MILTER_SOCK"
	t_done
    fi
    # The supervisor drops its privileges just after the worker listens.
    if [ "$(id -u)" = 0 ]; then
	wait_until 10 milter_uid_is "$MILTER_PID" "$RUN_UID"
    fi
    MILTER_WORKER=$(milter_worker "$MILTER_PID")
}

# milter_worker PID - the worker process of the supervisor PID
milter_worker() {
    pgrep -P "$1" | head -n 1
}

# milter_uid PID - real uid of a process (empty when it does not exist)
milter_uid() {
    awk '/^Uid:/ { print $2 }' "/proc/$1/status" 2>/dev/null
}

# milter_uid_is PID UID - the process runs with real uid UID
milter_uid_is() {
    [ "$(milter_uid "$1")" = "$2" ]
}

# milter_stop PID - SIGTERM and wait (libmilter needs up to ~5 s)
milter_stop() {
    local rc=0
    kill -TERM "$1" 2>/dev/null || return 99
    wait "$1" || rc=$?
    return $rc
}

# mt_run NAME LUA [VAR=VALUE...] - one miltertest script
mt_run() {
    local name=$1 lua=$2 rc
    local -a defs=()
    shift 2
    for d in "$@"; do
	defs+=(-D "$d")
    done
    miltertest -D "SOCK=unix:$MILTER_SOCK" "${defs[@]}" -s "$LUADIR/$lua" \
	>"$T/mt.out" 2>&1
    rc=$?
    sed 's/^/# /' "$T/mt.out"
    if [ $rc -eq 0 ] && ! grep -q '^FAIL' "$T/mt.out"; then
	ok "$name"
    else
	bad "$name (miltertest exit $rc)"
    fi
}

# log_has MSG REGEX - the milter log has a matching line
log_has() {
    if grep -Eq -- "$2" "$LOG"; then
	ok "$1"
    else
	bad "$1: no line /$2/ in $LOG; last lines:"
	tail -n 5 "$LOG" | sed 's/^/#   /'
    fi
}

# log_lacks MSG REGEX - the milter log has no matching line
log_lacks() {
    if grep -Eq -- "$2" "$LOG"; then
	bad "$1: unexpected line /$2/ in $LOG:"
	grep -E -- "$2" "$LOG" | head -n 3 | sed 's/^/#   /'
    else
	ok "$1"
    fi
}

# milter_emu_conf FILE [LINE...] - a configuration against the emulator
# (after emu_setup): write_conf with [global] user = RUN_USER, LOG = its
# log file, then [milter] and the LINEs; as root RUN_USER gets the
# state, the secret, the client key and the log
milter_emu_conf() {
    local f=$1
    shift
    write_conf "$f"
    LOG=$T/relay.log
    : >"$LOG"
    sed -i "s|^\\[global\\]\$|[global]\\nuser = $RUN_USER|" "$f"
    printf '\n[milter]\n' >>"$f"
    printf '%s\n' "$@" >>"$f"
    if [ "$(id -u)" = 0 ]; then
	chmod 711 "$T/certs"
	chmod 644 "$T/certs/ca.pem"
	milter_own "$T/state" "$T/secret" "$T/certs/client.key" "$LOG"
    fi
}
