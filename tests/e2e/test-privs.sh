#!/bin/bash
#
# test-privs.sh - root never acts on a name the relay user controls, and
# no program that holds secrets can dump core (issue 7, items 1 and 8)
#
# The relay user here is "nobody"; the attacker runs as nobody too.
#
#  1. The milter socket race: m365-milter is started as root 200 times
#     with its socket in a directory that nobody owns, while a process of
#     nobody's renames a symbolic link to a root-only file over the
#     socket as soon as the socket appears.  Before the fix root then
#     chmod/chowned the link's target (the file became nobody's, 0660).
#     With strace the same attack is made deterministic: every chmod and
#     chown system call is delayed by 0.3 s, so the link is in place
#     before the milter acts on the name.  The target must stay
#     root:root 0600 with its content.
#  2. A socket directory that others can write to is refused.
#  3. log_file as a symbolic link or a hard link to a root-only file:
#     the milter (root at that point) must not append to it; a new log
#     file goes to the relay user.
#  4. Lock files (token store through m365ctl, source lock through
#     m365-fetch) as hard or symbolic links to a root-only file: the
#     file keeps its owner.
#  5. m365-relay, m365-fetch, m365ctl and m365-milter are not dumpable
#     (their /proc/PID files belong to root although they run as nobody)
#     and have a core size limit of 0, even when started with
#     "ulimit -c unlimited"; the milter again after dropping root.
#
# Needs root (skips otherwise), user nobody, perl; strace is optional.

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/milter/lib-milter.sh"

t_init privs

[ "$(id -u)" = 0 ] || skip_all "needs root (the milter starts as root)"
id nobody >/dev/null 2>&1 || skip_all "needs the user nobody"
command -v perl >/dev/null 2>&1 || skip_all "perl is not installed"
command -v setpriv >/dev/null 2>&1 || skip_all "setpriv is not installed"
for prog in "$MILTER" "$RELAY" "$CTL" "$top_builddir/fetch/m365-fetch"; do
    [ -x "$prog" ] || skip_all "$prog not built (run make first)"
done
FETCH=$top_builddir/fetch/m365-fetch
TRIES=${PRIVS_TRIES:-200}

milter_user				# RUN_USER=nobody; $T/run, $T/state
NOGROUP=$(id -gn nobody)
AS_NOBODY=(setpriv --reuid=nobody --regid="$NOGROUP" --clear-groups)

# target NAME - a root-only file (root:root 0600) with known content
target() {
    printf 'root only %s\n' "$1" >"$T/$1"
    chown root:root "$T/$1"
    chmod 600 "$T/$1"
}

# untouched MSG NAME - the target still is root:root 0600, same content
untouched() {
    local got
    got="$(stat -c '%u:%g %a' "$T/$2") $(cat "$T/$2")"
    if [ "$got" = "0:0 600 root only $2" ]; then
	ok "$1"
    else
	bad "$1: the root-only file is now: $got"
    fi
}

milter_base_conf "$T/m.conf"
SOCK=$T/run/m.sock

# -------------------------------------------------- 1. the socket race

# The attacker: as soon as the socket exists, rename a symbolic link to
# the target over it.  Counts its successful renames.
cat >"$T/attack.pl" <<'EOF'
my ($sock, $target, $stop) = @ARGV;
my $tmp = "$sock.evil";
my $n = 0;
$| = 1;
until (-e $stop) {
    next unless lstat($sock) && -S _;
    unlink $tmp;
    symlink($target, $tmp) or next;
    $n++ if rename($tmp, $sock);
}
print "$n\n";
EOF
chmod 644 "$T/attack.pl"

# one_start [CMD-PREFIX...] - start the milter as root once (under the
# prefix, e.g. strace), wait until it runs as nobody or has stopped, kill
# it (by process id); remove whatever is left at the socket's name.
one_start() {
    local pid sup worker n=0
    "$@" "$MILTER" -f -c "$T/m.conf" -p "unix:$SOCK" >>"$T/race.out" 2>&1 &
    pid=$!
    while [ $n -lt 500 ] && kill -0 "$pid" 2>/dev/null; do
	# Under strace the supervisor is the tracer's child.
	sup=$pid
	[ $# -gt 0 ] && sup=$(pgrep -P "$pid" | head -n 1)
	worker=
	[ -n "$sup" ] && worker=$(pgrep -P "$sup" | head -n 1)
	if [ -n "$worker" ] && milter_uid_is "$worker" "$RUN_UID"; then
	    break
	fi
	sleep 0.01
	n=$((n + 1))
    done
    sup=$pid
    [ $# -gt 0 ] && sup=$(pgrep -P "$pid" | head -n 1)
    worker=
    [ -n "$sup" ] && worker=$(pgrep -P "$sup" | head -n 1)
    kill -KILL $worker $sup "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    rm -f "$SOCK" "$SOCK.evil"
}

# race NAME TRIES [CMD-PREFIX...] - run the attack against TRIES starts
race() {
    local name=$1 tries=$2 i apid hits
    shift 2
    target "$name"
    rm -f "$T/stop"
    "${AS_NOBODY[@]}" perl "$T/attack.pl" "$SOCK" "$T/$name" "$T/stop" \
	>"$T/attack.out" 2>&1 &
    apid=$!
    t_bg_pid "$apid"
    for ((i = 1; i <= tries; i++)); do
	one_start "$@"
	if [ "$(stat -c '%u:%g %a' "$T/$name")" != "0:0 600" ]; then
	    echo "# start $i changed the target"
	    break
	fi
    done
    touch "$T/stop"
    wait "$apid"
    hits=$(cat "$T/attack.out")
    echo "# $name: $((i > tries ? tries : i)) starts, the attacker replaced the socket $hits times"
    if [ "${hits:-0}" -gt 0 ]; then
	ok "$name: the attacker got to replace the socket (the race was run)"
    else
	bad "$name: the attacker never saw the socket ($hits)"
	sed 's/^/#   /' "$T/attack.out" | tail -n 3
    fi
    untouched "$name: a symbolic link renamed over the socket leaves its target alone" "$name"
}

: >"$T/race.out"
race race-target "$TRIES"
if command -v strace >/dev/null 2>&1; then
    race strace-target 5 strace -f -qq -o /dev/null \
	-e trace=chmod,fchmodat,chown,fchownat,lchown \
	-e inject=chmod,fchmodat,chown,fchownat,lchown:delay_enter=300000
else
    echo "# strace not installed: deterministic variant skipped"
fi

# The milter still starts normally: socket born as nobody, mode 0660.
: >"$LOG"
milter_start ok "$T/m.conf"
check "the socket belongs to nobody" test "$(stat -c %U "$MILTER_SOCK")" = nobody
check "the socket has mode 0660" test "$(stat -c %a "$MILTER_SOCK")" = 660
kill -KILL "$MILTER_WORKER" "$MILTER_PID" 2>/dev/null
wait "$MILTER_PID" 2>/dev/null
rm -f "$MILTER_SOCK"

# ------------------------------------- 2. a socket directory others write

mkdir -p "$T/open"
chmod 1777 "$T/open"
"$MILTER" -f -c "$T/m.conf" -p "unix:$T/open/m.sock" >"$T/open.out" 2>&1 &
pid=$!
t_bg_pid "$pid"
if wait_until 10 sh -c "! kill -0 $pid"; then
    wait "$pid"
    rc=$?
    check "a world-writable socket directory is refused (exit 71)" test "$rc" = 71
else
    bad "a world-writable socket directory is refused: the milter runs"
fi
check "the refusal names the cause and the fix" \
    grep -q "can be written to by others than root and user nobody.*chown nobody: $T/open" "$LOG"
check "no socket was created there" test ! -e "$T/open/m.sock"

# ------------------------------------------------------- 3. the log file

mkdir -p "$T/logs"
chown nobody "$T/logs"
chmod 700 "$T/logs"
sed "s|^log_file = .*|log_file = $T/logs/milter.log|" "$T/m.conf" >"$T/l.conf"

# log_case NAME - start the milter with log_file prepared by the caller
log_case() {
    "$MILTER" -f -v -c "$T/l.conf" -p "unix:$SOCK" >"$T/$1.out" 2>&1 &
    pid=$!
    t_bg_pid "$pid"
    wait_until 10 test -S "$SOCK"
    kill -KILL $(pgrep -P "$pid") "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    rm -f "$SOCK"
}

target log-symlink
"${AS_NOBODY[@]}" ln -s "$T/log-symlink" "$T/logs/milter.log"
log_case log-symlink
untouched "log_file a symbolic link to a root-only file: not written" log-symlink
check "the milter says why it does not use that log_file" \
    grep -q "log file $T/logs/milter.log is a symbolic link" "$T/log-symlink.out"
rm -f "$T/logs/milter.log"

# With fs.protected_hardlinks=0 nobody could make this link itself.
target log-hardlink
ln "$T/log-hardlink" "$T/logs/milter.log"
log_case log-hardlink
untouched "log_file a hard link to a root-only file: not written" log-hardlink
check "the milter says why (hard links)" \
    grep -q "log file $T/logs/milter.log has 2 hard links" "$T/log-hardlink.out"
rm -f "$T/logs/milter.log"

log_case log-new
check "a new log file goes to the relay user" \
    test "$(stat -c '%U %a' "$T/logs/milter.log")" = "nobody 640"
check "and has the milter's lines" grep -q "m365-milter started" "$T/logs/milter.log"

# ---------------------------------------------------------- 4. lock files

mkdir -p "$T/st/tokens" "$T/st/sources"
chown -R nobody "$T/st"
chmod -R 700 "$T/st"
printf 'not-a-real-secret\n' >"$T/secret"
chmod 600 "$T/secret"
cat >"$T/lock.conf" <<EOF
[global]
state_dir = $T/st
log_file = $T/lock.log
user = nobody
graph_url = https://127.0.0.1:9
login_url = https://127.0.0.1:9
timeout = 5

[account app]
tenant = contoso.test
client_id = 11111111-0000-0000-0000-000000000002
auth = secret
secret_file = $T/secret
mailbox = bob@contoso.test
senders = @contoso.test
default = yes

[source inbox]
account = app
mailbox = bob@contoso.test
folder = inbox
deliver_to = smtp://127.0.0.1:9
recipients = bob@local.test
after = read
EOF

# lock_case NAME LINK-KIND LOCK CMD... - LOCK a link to a root-only file
lock_case() {
    local name=$1 kind=$2 lock=$3
    shift 3
    target "$name"
    rm -f "$lock"
    if [ "$kind" = hard ]; then
	ln "$T/$name" "$lock"
    else
	"${AS_NOBODY[@]}" ln -s "$T/$name" "$lock"
    fi
    "$@" >"$T/$name.out" 2>&1
    untouched "$name: $kind link as $(basename "$lock") leaves its target alone" "$name"
    rm -f "$lock"
}

lock_case ctl-hardlock hard "$T/st/tokens/app.lock" \
    "$CTL" -c "$T/lock.conf" test app
check "m365ctl names the hard link" \
    grep -q "lock file $T/st/tokens/app.lock has 2 hard links" "$T/ctl-hardlock.out"
lock_case ctl-softlock soft "$T/st/tokens/app.lock" \
    "$CTL" -c "$T/lock.conf" test app
lock_case fetch-hardlock hard "$T/st/sources/inbox.lock" \
    env M365RELAY_ALLOW_ROOT=1 "$FETCH" -c "$T/lock.conf" --once inbox
check "m365-fetch names the hard link" \
    grep -q "lock file $T/st/sources/inbox.lock has 2 hard links" "$T/lock.log"
lock_case fetch-softlock soft "$T/st/sources/inbox.lock" \
    env M365RELAY_ALLOW_ROOT=1 "$FETCH" -c "$T/lock.conf" --once inbox

# ------------------------------------------------- 5. no core, no ptrace

mkfifo -m 666 "$T/fifo.conf"

# nodump NAME PID - non-dumpable (proc files root's) with core limit 0
nodump() {
    local owner core
    owner=$(stat -c %u "/proc/$2/status" 2>/dev/null)
    core=$(awk '/^Max core file size/ { print $5 " " $6 }' "/proc/$2/limits" 2>/dev/null)
    if [ "$owner" = 0 ]; then
	ok "$1 is not dumpable (its /proc files belong to root)"
    else
	bad "$1 is dumpable: /proc/$2/status belongs to uid '$owner'"
    fi
    if [ "$core" = "0 0" ]; then
	ok "$1 has a core size limit of 0"
    else
	bad "$1 core size limit (soft hard): '$core', want '0 0'"
    fi
}

# blocked NAME CMD... - start CMD as nobody with "ulimit -c unlimited";
# it blocks opening the FIFO configuration, after main()'s first line
blocked() {
    local name=$1 pid
    shift
    (ulimit -c unlimited && exec "${AS_NOBODY[@]}" "$@") >"$T/$name.out" 2>&1 &
    pid=$!
    t_bg_pid "$pid"
    if wait_until 5 sh -c "[ \"\$(readlink /proc/$pid/exe)\" = '$1' ]"; then
	sleep 0.5
	nodump "$name (as nobody)" "$pid"
    else
	bad "$name started"
    fi
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}

blocked m365-relay "$RELAY" -c "$T/fifo.conf" -f a@contoso.test -- b@example.org
blocked m365-fetch "$FETCH" -c "$T/fifo.conf" --once
blocked m365ctl "$CTL" -c "$T/fifo.conf" status
blocked m365-milter "$MILTER" -f -c "$T/fifo.conf" -p "unix:$T/run/x.sock"

# Started as root: both processes after the drop (the kernel resets the
# dumpable flag on every change of ids, so the milter sets it again).
: >"$LOG"
(ulimit -c unlimited && exec "$MILTER" -f -c "$T/m.conf" -p "unix:$SOCK") \
    >"$T/root-milter.out" 2>&1 &
pid=$!
t_bg_pid "$pid"
if wait_until 10 test -S "$SOCK" && wait_until 10 milter_uid_is "$pid" "$RUN_UID"; then
    worker=$(milter_worker "$pid")
    nodump "m365-milter supervisor (root, then nobody)" "$pid"
    nodump "m365-milter worker (root, then nobody)" "$worker"
else
    bad "m365-milter started as root"
fi
kill -TERM "$pid" 2>/dev/null

t_done
