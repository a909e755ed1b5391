#!/bin/bash
#
# test-statefile.sh - running as root, state is written, locked and
# removed only in the directory that was opened and checked (issue 9.2)
#
# The relay user is "nobody"; it owns state_dir, as in production, and
# plants symbolic links there (the attacker runs as nobody too).  Each
# target is a root-only file (root:root 0600, known content) or a
# directory of root's that must stay empty.
#
#  1. m365-relay as root (M365RELAY_ALLOW_ROOT=1), Graph answers 429 with
#     Retry-After, so the relay records the wait in state_dir/throttle:
#     a. throttle/ is a link to a root-only directory holding a file
#        named like the mailbox: that file is untouched, the relay says
#        why it could not record the wait;
#     b. throttle/ is real, the mailbox's file a link to a root-only
#        file: the link is replaced by the record, its target untouched.
#  2. m365-fetch as root: sources/ a link to root's directory: refused,
#     nothing is created there.
#  3. m365ctl logout as root: tokens/ a link to root's directory holding
#     the account's token file: it is not removed.
#  4. m365-milter started as root with its pid file in a directory that
#     is a link nobody made: refused (exit 71), no pid file written into
#     root's directory.
#
# Needs root (skips otherwise), user nobody, setpriv, python3, openssl.

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/milter/lib-milter.sh"

t_init statefile

[ "$(id -u)" = 0 ] || skip_all "needs root (the programs run as root here)"
id nobody >/dev/null 2>&1 || skip_all "needs the user nobody"
command -v setpriv >/dev/null 2>&1 || skip_all "setpriv is not installed"
FETCH=$top_builddir/fetch/m365-fetch
for prog in "$RELAY" "$CTL" "$FETCH" "$MILTER"; do
    [ -x "$prog" ] || skip_all "$prog not built (run make first)"
done
NOGROUP=$(id -gn nobody)
AS_NOBODY=(setpriv --reuid=nobody --regid="$NOGROUP" --clear-groups)
export M365RELAY_ALLOW_ROOT=1

emu_setup
CONF=$T/relay.conf
write_conf "$CONF"
LOG=$T/relay.log
sed -i 's/^\[global\]$/[global]\nuser = nobody/' "$CONF"
cat >>"$CONF" <<EOF

[source inbox]
account = app
mailbox = bob@contoso.test
folder = inbox
deliver_to = smtp://127.0.0.1:9
recipients = bob@local.test
after = read
EOF
chmod 711 "$T"
chown nobody:"$NOGROUP" "$T/state"
STATE=$T/state
MAILBOX=bob@contoso.test

# target NAME - a root-only file (root:root 0600) with known content
target() {
    printf 'root only %s\n' "$(basename "$1")" >"$1"
    chown root:root "$1"
    chmod 600 "$1"
}

# untouched MSG FILE - still root:root 0600 with its content
untouched() {
    local got
    got="$(stat -c '%u:%g %a' "$2" 2>&1) $(cat "$2" 2>&1)"
    if [ "$got" = "0:0 600 root only $(basename "$2")" ]; then
	ok "$1"
    else
	bad "$1: the root-only file is now: $got"
    fi
}

# rootdir NAME - an empty directory of root's (0700); prints its path
rootdir() {
    mkdir -m 700 "$T/$1"
    printf '%s\n' "$T/$1"
}

# nobody_link TARGET LINK - a symbolic link made by the relay user
nobody_link() {
    rm -rf "$2"
    "${AS_NOBODY[@]}" ln -s "$1" "$2"
}

printf 'From: bob@contoso.test\r\nTo: thr@example.net\r\nSubject: s\r\n\r\nbody\r\n' \
    >"$T/msg"

# relay_429 QID - one delivery that Graph answers with 429 + Retry-After
relay_429() {
    emu_ctl POST /_emu/faults '[{"match":"sendMail","status":429,"retry_after":30,"code":"ApplicationThrottled","message":"Too many requests"}]' >/dev/null
    "$RELAY" -c "$CONF" -q "$1" -f "$MAILBOX" -- thr@example.net \
	<"$T/msg" >"$T/relay.out" 2>&1
    rc=$?
    t_eq "$1: 429 defers (exit 75)" "$rc" 75
}

# ------------------------------------ 1a. throttle/ a link to root's dir

R1=$(rootdir root-throttle)
target "$R1/$MAILBOX"
nobody_link "$R1" "$STATE/throttle"
relay_429 QLINKDIR
untouched "throttle/ a link: the root-only file named like the mailbox is untouched" \
    "$R1/$MAILBOX"
t_eq "throttle/ a link: nothing else in root's directory" "$(ls -A "$R1")" "$MAILBOX"
check "the relay says why it could not record the wait" \
    grep -q "cannot record Retry-After for $MAILBOX: $STATE/throttle is not a directory" "$LOG"

# ------------------------- 1b. a link at the mailbox's name in throttle/

rm -f "$STATE/throttle"
mkdir -m 700 "$STATE/throttle"
chown nobody:"$NOGROUP" "$STATE/throttle"
target "$T/root-file"
nobody_link "$T/root-file" "$STATE/throttle/$MAILBOX"
relay_429 QLINKFILE
untouched "a link at the throttle file's name: its target is untouched" "$T/root-file"
t_eq "the link was replaced by the record (a file of nobody's, 0600)" \
    "$(stat -c '%F %U %a' "$STATE/throttle/$MAILBOX")" "regular file nobody 600"
"$RELAY" -c "$CONF" -q QWAIT -f "$MAILBOX" -- thr@example.net \
    <"$T/msg" >"$T/relay.out" 2>&1
t_eq "the recorded wait holds for the next delivery (exit 75)" "$?" 75
check "and it says so" grep -q "Retry-After" "$T/relay.out"

# ------------------------------------------ 2. sources/ a link (m365-fetch)

R2=$(rootdir root-sources)
nobody_link "$R2" "$STATE/sources"
"$FETCH" -c "$CONF" --once inbox >"$T/fetch.out" 2>&1
t_eq "sources/ a link: m365-fetch creates nothing in root's directory" \
    "$(ls -A "$R2")" ""
check "m365-fetch names the cause" \
    grep -q "$STATE/sources is not a directory" "$LOG" "$T/fetch.out"

# ------------------------------------------- 3. tokens/ a link (logout)

R3=$(rootdir root-tokens)
target "$R3/app.json"
nobody_link "$R3" "$STATE/tokens"
"$CTL" -c "$CONF" logout app >"$T/logout.out" 2>&1
t_eq "tokens/ a link: m365ctl logout fails" "$?" 1
untouched "tokens/ a link: root's file named like the token file stays" \
    "$R3/app.json"
check "m365ctl logout names the cause" \
    grep -q "$STATE/tokens is not a directory" "$T/logout.out"

# --------------------------------------------- 4. the milter's pid file

milter_user				# $T/run of nobody's, $T/state, LOG
milter_base_conf "$T/m.conf"
R4=$(rootdir root-run)
nobody_link "$R4" "$T/run/piddir"
"$MILTER" -f -c "$T/m.conf" -p "unix:$T/run/m.sock" -P "$T/run/piddir/m.pid" \
    >"$T/milter.out" 2>&1 &
pid=$!
t_bg_pid "$pid"
if wait_until 10 sh -c "! kill -0 $pid"; then
    wait "$pid"
    t_eq "pid file in a linked directory: the milter refuses to start (exit 71)" "$?" 71
else
    bad "pid file in a linked directory: the milter runs"
    kill -KILL $(pgrep -P "$pid") "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
fi
t_eq "no pid file in root's directory" "$(ls -A "$R4")" ""
check "the milter names the cause" \
    grep -q "cannot write the pid file: $T/run/piddir is a symbolic link" \
    "$LOG" "$T/milter.out"

# A link at the pid file's name is replaced, never followed.
target "$T/root-pid"
nobody_link "$T/root-pid" "$T/run/m.pid"
: >"$LOG"
milter_start p "$T/m.conf" -P "$T/run/m.pid"
untouched "a link at the pid file's name: its target is untouched" "$T/root-pid"
t_eq "the pid file names the supervisor" "$(cat "$T/run/m.pid")" "$MILTER_PID"
kill -KILL "$MILTER_WORKER" "$MILTER_PID" 2>/dev/null
wait "$MILTER_PID" 2>/dev/null

t_done
