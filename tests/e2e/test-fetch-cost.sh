#!/usr/bin/env bash
# test-fetch-cost.sh - what m365-fetch's state costs per message, and
# what its cheaper writes still guarantee:
#
#   the Microsoft 365 emulator -> m365-fetch (as an unprivileged user,
#   under strace -f -c) -> SMTP on loopback -> a real, private Postfix
#   -> local(8) -> Maildir
#
# a. A round of N messages of 10 KB (after a warm-up round that fetched
#    the token and resolved the folder) makes at most 2 fsyncs per
#    message plus 2 for the round (the durable data_sent of each message,
#    the durable end of the round; lib/fetchstate.c), at most as many
#    renames, and makes the state directory only once per round (the
#    old code: 8 fsyncs, 4 renames and 4 mkdirs per message).  Every
#    message arrives once and ends read.
# b. kill -9 while the after-action (PATCH) hangs: NAME.json holds the
#    durable data_sent, NAME.json.next the visible "injected" (written
#    without fsync); the restart only marks the message read - one copy,
#    no duplicate warning - and the end of its round removes the .next.
# c. What a power loss may do to that visible write (NAME.json.next lost
#    or left empty): the restart finds data_sent and injects again with
#    the warning "may get this message twice" - the documented window,
#    announced, never silent; nothing is lost.
#
# Needs root (namespaces, a private Postfix, useradd) and strace; without
# root it is skipped (exit 77).

# shellcheck disable=SC2317  # helper functions run through check()
set -u

. "$(dirname "$0")/ns.sh"
e2e_start test-fetch-cost.sh "private Postfix, namespaces, useradd" \
    "run tests/run-all.sh as root: it installs postfix, strace and the rest (CI does)" \
    postfix postconf postqueue setpriv strace

# ---- inside the namespaces
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/postfix.sh"

SMTP_PORT=2555
N=${COST_MESSAGES:-20}
. "$top_srcdir/tests/fetch.sh"
fx_init fetch-cost
M=$T/msgs
mkdir -p "$M"

fx_source cost CostIn "$SMTP_PORT" read
fx_postfix "$SMTP_PORT" || { bad "private Postfix set up and started"; t_done; }
ok "private Postfix on 127.0.0.1:$SMTP_PORT"
emu_folder_add bob@contoso.test CostIn >/dev/null || bad "create folder CostIn"
STATE=$T/state/sources/cost.json

# syscalls FILE NAME... - calls of these system calls in strace -c's FILE
syscalls() {
    local f=$1
    shift
    # columns: % time, seconds, usecs/call, calls, [errors,] syscall
    awk -v names=" $* " 'index(names, " " $NF " ") { n += $4 }
	END { print n + 0 }' "$f"
}

# pending_state FILE ID - the pending state of message ID in FILE, or "-"
pending_state() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    print("-")
    sys.exit(0)
print(d.get("pending", {}).get(sys.argv[2], {}).get("state", "-"))
EOF
}

# ---- a. the cost of a round of N messages
fetch_rc 0 "a: warm-up round (token, folder) exits 0" --once cost
emu_gen_messages bob@contoso.test 10240 "$N" CostIn > "$T/ids" ||
    bad "a: generate $N messages"
check "a: $N messages of 10 KB wait in CostIn" test "$(wc -l < "$T/ids")" = "$N"
NRUN=$((NRUN + 1))
# LeakSanitizer cannot run under ptrace (a --enable-sanitizers build).
ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 \
    strace -f -c -o "$T/strace.a" \
    -e trace=fsync,fdatasync,rename,renameat,renameat2,mkdir,mkdirat \
    "${FX_FETCH[@]}" --once cost > "$T/fetch.$NRUN.out" 2>&1
check "a: the round exits 0" test $? = 0
sed 's/^/# /' "$T/strace.a"
fs=$(syscalls "$T/strace.a" fsync fdatasync)
rn=$(syscalls "$T/strace.a" rename renameat renameat2)
mk=$(syscalls "$T/strace.a" mkdir mkdirat)
echo "# $N messages: $fs fsyncs, $rn renames, $mk mkdirs"
check "a: at most 2 fsyncs per message and 2 per round ($fs for $N messages)" \
    test "$fs" -le $((2 * N + 2))
check "a: at most 2 renames per message and 2 per round ($rn for $N messages)" \
    test "$rn" -le $((2 * N + 2))
check "a: the state directory is made at most twice per round, not per write ($mk mkdirs)" \
    test "$mk" -le 2
check "a: all $N messages were sent" \
    test "$(grep -c 'cost: id=.*status=sent' "$T/relay.log")" = "$N"
check "a: every message ends read" test "$(emu_mb_eval bob@contoso.test \
    'sum(1 for m in f("CostIn")["messages"] if not m["isRead"])')" = 0
check "a: the end of the round leaves no cost.json.next" test ! -e "$STATE.next"
pf_wait_empty 30 || bad "a: the Postfix queue drains"
dups=$(find "$MD/new" "$MD/cur" -type f -exec grep -m1 -ih '^Message-ID:' {} + |
    sort | uniq -d | wc -l)
check "a: $N copies in the Maildir, no duplicate" \
    test "$(find "$MD/new" "$MD/cur" -type f | wc -l)/$dups" = "$N/0"

# patch_above N - the emulator has seen more than N PATCH requests
patch_above() {
    [ "$(emu_stat patch_requests)" -gt "$1" ]
}

# kill_in_patch TAG - file a message, run a round with the PATCH held for
# 30 s and kill -9 m365-fetch in it; prints the message file's path and
# its Graph id.  1 when the round never reached the PATCH.
kill_in_patch() {
    local f=$M/$1 id p0 fpid
    mkin "$f" "$1"
    id=$(put CostIn "$f") || return 1
    emu_ctl POST /_emu/faults '[{"match": "patch", "action": "slow", "delay": 30}]' >/dev/null
    p0=$(emu_stat patch_requests)
    "${FX_FETCH[@]}" --once cost > "$T/fetch.kill.$1.out" 2>&1 &
    fpid=$!
    if ! wait_until 20 patch_above "$p0"; then
	kill -9 "$fpid" 2>/dev/null
	wait "$fpid" 2>/dev/null
	emu_ctl DELETE /_emu/faults >/dev/null
	return 1
    fi
    kill -9 "$fpid"
    wait "$fpid" 2>/dev/null
    emu_ctl DELETE /_emu/faults >/dev/null
    echo "$f $id"
}

# ---- b. kill -9 after the 250: the visible write is enough
if set -- $(kill_in_patch b1); [ $# = 2 ]; then
    f=$1 id=$2
    ok "b: m365-fetch injected and was killed in the PATCH"
    check "b: cost.json holds the durable data_sent" \
	test "$(pending_state "$STATE" "$id")" = data_sent
    check "b: cost.json.next holds the visible injected" \
	test "$(pending_state "$STATE.next" "$id")" = injected
    check "b: the message arrived once (before the kill)" wait_md "$(imid "$f")" 1
    fetch_rc 0 "b: the restarted round exits 0" --once cost
    check "b: marked read by the restart" test "$(msg_where "$(imid "$f")")" = "CostIn read"
    check "b: the restart only finished the after-action (logged)" \
	log_has "id=$id: finishing the after-action"
    check "b: no duplicate warning" sh -c "! grep -q 'id=$id: .*twice' '$T/relay.log'"
    sleep 1
    check "b: still one copy" test "$(md_count "$(imid "$f")")" = 1
    check "b: the round's end removed cost.json.next" test ! -e "$STATE.next"
else
    bad "b: m365-fetch reached the PATCH within 20 s"
fi

# ---- c. a power loss takes the visible write: announced, never silent
for how in lost empty; do
    if set -- $(kill_in_patch "c-$how"); [ $# = 2 ]; then
	f=$1 id=$2
	ok "c ($how): m365-fetch injected and was killed in the PATCH"
	case $how in
	lost) rm -f "$STATE.next" ;;
	empty) : > "$STATE.next" ;;
	esac
	check "c ($how): cost.json still holds data_sent" \
	    test "$(pending_state "$STATE" "$id")" = data_sent
	fetch_rc 0 "c ($how): the restarted round exits 0" --once cost
	check "c ($how): the restart injected again with the duplicate warning" \
	    log_has "id=$id: .*may get this message twice"
	wait_md "$(imid "$f")" 2
	sleep 1
	check "c ($how): two copies, the second announced (none lost)" \
	    test "$(md_count "$(imid "$f")")" = 2
	check "c ($how): marked read" test "$(msg_where "$(imid "$f")")" = "CostIn read"
	check "c ($how): nothing pending afterwards" \
	    test "$(pending_state "$STATE" "$id")" = -
    else
	bad "c ($how): m365-fetch reached the PATCH within 20 s"
    fi
done
t_done
