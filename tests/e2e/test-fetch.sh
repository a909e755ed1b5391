#!/usr/bin/env bash
# test-fetch.sh - end to end for the inbound poller m365-fetch:
#
#   the Microsoft 365 emulator's mailboxes (delta, $value, PATCH, move,
#   DELETE) -> m365-fetch (as an unprivileged user) -> SMTP on loopback
#   -> a real, private Postfix -> local(8) -> Maildir
#
# Every case asserts what arrived in the Maildir (exact body bytes, the
# original header block, how many copies), what happened in the emulated
# mailbox (read, moved with a new id, deleted, left unread) and what
# m365-fetch logged.
#
# Needs root (namespaces, a private Postfix, useradd) and the Debian
# package postfix; without root it is skipped (exit 77).  It re-executes
# itself inside private net/uts/mount/pid namespaces like test-postfix.sh:
# the only network is loopback and every process it started dies with it.

# shellcheck disable=SC2317  # helper functions run through check()
set -u

. "$(dirname "$0")/ns.sh"
e2e_start test-fetch.sh "private Postfix, namespaces, useradd" \
    "run tests/run-all.sh as root: it installs postfix and the rest (CI does)" \
    postfix postconf postqueue setpriv

# ---- inside the namespaces
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/postfix.sh"

RUSER=m365test          # runs m365-fetch
MBX=m365mbx             # local Maildir user the sources deliver to
ADM=m365adm             # local Maildir user that gets the offline notice
SMTP_PORT=2525
. "$top_srcdir/tests/fetch.sh"
fx_init fetch

# ---- emulator, configuration
fx_source read inbox "$SMTP_PORT" read "reject_folder = Rejected" "page_size = 10"
fx_source move MoveIn "$SMTP_PORT" move:Processed
fx_source del DelIn "$SMTP_PORT" delete
fx_source paged Paged "$SMTP_PORT" read "page_size = 2"
fx_source rej RejIn "$SMTP_PORT" read "reject_folder = Rejected"
fx_source term TermIn "$SMTP_PORT" read
fx_source badrcpt BadIn "$SMTP_PORT" read "reject_folder = Rejected" "notify = $MBX@local.test"
sed -i '/^\[source badrcpt\]/,$ s|^recipients = .*|recipients = nosuchuser@local.test|' "$CONF"
cat >> "$CONF" <<EOF

[source shared]
account = deleg
mailbox = shared@contoso.test
folder = inbox
deliver_to = smtp://127.0.0.1:$SMTP_PORT
recipients = $MBX@local.test
after = read
notify = $ADM@local.test
EOF

QUIRK_PORT=2599
fx_source quirk QuirkIn "$QUIRK_PORT" read "reject_folder = Rejected"

# ---- Postfix: local.test delivered by local(8) into Maildirs
# (mail_spool_directory ends in "/"); unknown local users are refused
# at RCPT (550 5.1.1); messages over 2 MB are refused (552 5.3.4).
fx_postfix "$SMTP_PORT" "$ADM" || { bad "private Postfix set up and started"; t_done; }
ok "private Postfix on 127.0.0.1:$SMTP_PORT delivers local.test to $PF_DIR/mail/USER/"
MDA=$PF_DIR/mail/$ADM

for f in MoveIn DelIn Paged RejIn BadIn QuirkIn TermIn Processed Rejected; do
    emu_folder_add bob@contoso.test "$f" >/dev/null || bad "create folder $f in the emulator"
done

# ---- helpers (fetch, fetch_rc, mkin, imid, put, md_count, wait_md,
# mbb, msg_where, log_has: tests/fetch.sh)

# md_intact FILE SOURCE GRAPHID - the delivered copy of FILE: exactly one,
# body bytes identical, the original header block unchanged, and our
# trace fields (X-M365Relay-Source naming SOURCE and GRAPHID, Received)
md_intact() {
    python3 - "$MD" "$1" "$2" "$3" <<'EOF'
import os, sys
md, orig_path, source, gid = sys.argv[1:5]
orig = open(orig_path, "rb").read().replace(b"\r\n", b"\n")
ohdr, obody = orig.split(b"\n\n", 1)
mid = [l for l in ohdr.split(b"\n") if l.lower().startswith(b"message-id:")][0].split(b":", 1)[1].strip()
found = []
for sub in ("new", "cur"):
    d = os.path.join(md, sub)
    for name in os.listdir(d) if os.path.isdir(d) else []:
        data = open(os.path.join(d, name), "rb").read().replace(b"\r\n", b"\n")
        hdr, body = data.split(b"\n\n", 1)
        if any(l.lower().startswith(b"message-id:") and l.split(b":", 1)[1].strip() == mid
               for l in hdr.split(b"\n")):
            found.append((name, hdr, body))
errs = []
if len(found) != 1:
    errs.append("%d copies of %s in %s" % (len(found), mid.decode(), md))
for name, hdr, body in found:
    if body != obody:
        errs.append("%s: body differs (%d bytes, want %d)" % (name, len(body), len(obody)))
    if ohdr not in hdr:
        errs.append("%s: the original header block is not intact" % name)
    low = hdr.lower()
    trace = [l for l in hdr.split(b"\n") if l.lower().startswith(b"x-m365relay-source:")]
    if not trace or source.encode() not in trace[0] or gid.encode() not in hdr:
        errs.append("%s: no X-M365Relay-Source naming %s and id %s: %r" % (name, source, gid, trace))
    if low.count(b"\nreceived:") + low.startswith(b"received:") < 2:
        errs.append("%s: fewer than two Received: fields (ours and Postfix's)" % name)
for e in errs:
    print("  md_intact: " + e, file=sys.stderr)
sys.exit(1 if errs else 0)
EOF
}

M=$T/msg
mkdir -p "$M"

fetch -n
check "m365-fetch -n: configuration OK" grep -q 'configuration OK' "$FETCH_OUT"
fetch --once read
rc=$?
check "m365-fetch refuses root without M365RELAY_ALLOW_ROOT" \
    sh -c "! env -u M365RELAY_ALLOW_ROOT '$FETCH' -c '$CONF' --once read >/dev/null 2>&1"
test "$rc" = 0 || bad "an empty first round of source read exits 0 (exit $rc)"

# ---- a. after = read: MIME intact, marked read, exactly once
for i in 1 2 3; do
    mkin "$M/a$i" "a$i"
    eval "A$i=\$(put inbox \"\$M/a$i\")"
done
fetch_rc 0 "a: a round of source read exits 0" --once read
for i in 1 2 3; do
    gid=; eval "gid=\$A$i"
    check "a: message $i arrives once in the Maildir with the MIME intact" \
	wait_md "$(imid "$M/a$i")" 1
    check "a: message $i: body bytes, header block, trace fields" md_intact "$M/a$i" read "$gid"
    check "a: message $i is marked read in the mailbox" \
	test "$(msg_where "$(imid "$M/a$i")")" = "Inbox read"
done
check "a: log line per message (house format, status=sent)" \
    log_has "read: id=$A1, message-id=$(imid "$M/a1"), size=[0-9]+, to=<$MBX@local.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:$SMTP_PORT, .*dsn=2\.0\.0, status=sent \(250 "
fetch_rc 0 "a: a second round exits 0" --once read
sleep 1
check "a: the second round injected nothing again" \
    test "$(md_count "$(imid "$M/a1")")$(md_count "$(imid "$M/a2")")$(md_count "$(imid "$M/a3")")" = 111

# ---- b. after = move:Processed (new id) and after = delete
mkin "$M/b1" b1
B1=$(put MoveIn "$M/b1")
mkin "$M/b2" b2
B2=$(put DelIn "$M/b2")
fetch_rc 0 "b: a round of sources move and del exits 0" --once move del
check "b: moved message arrives intact" wait_md "$(imid "$M/b1")" 1
check "b: moved message: body, headers, trace" md_intact "$M/b1" move "$B1"
check "b: after = move:Processed: the message is in Processed" \
    test "$(msg_where "$(imid "$M/b1")")" = "Processed unread"
check "b: the moved message has a new id" \
    test "$(mbb "[m['id'] for m in f('Processed')['messages']][0]")" != "$B1"
check "b: MoveIn is empty" test "$(mbb "len(f('MoveIn')['messages'])")" = 0
check "b: deleted message arrives intact" wait_md "$(imid "$M/b2")" 1
check "b: deleted message: body, headers, trace" md_intact "$M/b2" del "$B2"
check "b: after = delete: the message is in Deleted Items" \
    test "$(msg_where "$(imid "$M/b2")")" = "Deleted Items unread"
fetch_rc 0 "b: the next round exits 0" --once move del
sleep 1
check "b: @removed entries in the next delta round inject nothing" \
    test "$(md_count "$(imid "$M/b1")")$(md_count "$(imid "$M/b2")")" = 11

# ---- b2. the cached id of the move target is stale (the folder was
# deleted and created again): Graph answers the move with 404
# ErrorItemNotFound, the same reply as for a message that is gone.  The
# message must still end in Processed - not stay unread in MoveIn with
# the source believing it was moved.
python3 - "$T/state/sources/move.json" <<'EOF' || bad "b2: edit the state of source move"
import json, sys
p = sys.argv[1]
d = json.load(open(p))
assert d["folder_ids"].get("Processed"), d["folder_ids"]
d["folder_ids"]["Processed"] = "AAMkAGdeletedfolder" + "0" * 40 + "AAA="
open(p, "w").write(json.dumps(d))
EOF
mkin "$M/b3" b3
B3=$(put MoveIn "$M/b3")
fetch_rc 0 "b2: a round with a stale cached move target exits 0" --once move
check "b2: the message arrives once" wait_md "$(imid "$M/b3")" 1
check "b2: it ends in Processed, not left in MoveIn: $(msg_where "$(imid "$M/b3")")" \
    test "$(msg_where "$(imid "$M/b3")")" = "Processed unread"
check "b2: the folder id is resolved again" \
    sh -c "! grep -q AAMkAGdeletedfolder '$T/state/sources/move.json'"

# ---- c. paging: 7 messages, page_size 2
PAGED=()
for i in 1 2 3 4 5 6 7; do
    mkin "$M/c$i" "c$i"
    put Paged "$M/c$i" >/dev/null
    PAGED+=("$(imid "$M/c$i")")
done
d0=$(emu_stat delta_requests)
fetch_rc 0 "c: a round of source paged (page_size 2) exits 0" --once paged
d1=$(emu_stat delta_requests)
check "c: the round followed nextLinks over >= 4 delta pages ($((d1 - d0)) requests)" test $((d1 - d0)) -ge 4
sleep 1
all=ok
for id in "${PAGED[@]}"; do
    wait_md "$id" 1 10 2>/dev/null && [ "$(md_count "$id")" = 1 ] || all="missing $id"
done
check "c: all 7 messages arrived exactly once" test "$all" = ok
check "c: all 7 are marked read" test "$(mbb "sorted({m['isRead'] for m in f('Paged')['messages']})")" = '[true]'

# ---- d. the MTA is down: round defers, nothing lost, later exactly once
pf_stop
pf_wait_closed() { ! ss -Hltn "sport = :$SMTP_PORT" | grep -q .; }
wait_until 10 pf_wait_closed
mkin "$M/d1" d1
D1=$(put inbox "$M/d1")
fetch_rc 75 "d: MTA down: the round exits 75" --once read
check "d: MTA down: the message stays unread in the inbox" \
    test "$(msg_where "$(imid "$M/d1")")" = "Inbox unread"
fetch_rc 75 "d: MTA still down: again 75" --once read
pf_start || bad "d: Postfix starts again"
fetch_rc 0 "d: MTA back: the round exits 0" --once read
check "d: the message arrives" wait_md "$(imid "$M/d1")" 1
check "d: body, headers, trace" md_intact "$M/d1" read "$D1"
check "d: now marked read" test "$(msg_where "$(imid "$M/d1")")" = "Inbox read"
fetch_rc 0 "d: another round" --once read
sleep 1
check "d: delivered exactly once" test "$(md_count "$(imid "$M/d1")")" = 1

# ---- e. kill -9 between injection and mark: no duplicate, ends read
# (the PATCH is held for 30 s: longer than the rest of the case, so the
# read mark seen at the end comes from the restarted m365-fetch)
emu_ctl POST /_emu/faults '[{"match": "patch", "action": "slow", "delay": 30}]' >/dev/null
mkin "$M/e1" e1
put inbox "$M/e1" >/dev/null
p0=$(emu_stat patch_requests)
"${FX_FETCH[@]}" --once read > "$T/fetch.kill.out" 2>&1 &
fpid=$!
patch_above() { [ "$(emu_stat patch_requests)" -gt "$1" ]; }
if wait_until 20 patch_above "$p0"; then
    ok "e: m365-fetch injected and waits in the PATCH"
    kill -9 "$fpid"
    wait "$fpid" 2>/dev/null
    check "e: the injected message arrives (before the kill)" wait_md "$(imid "$M/e1")" 1
    check "e: still unread after the kill" test "$(msg_where "$(imid "$M/e1")")" = "Inbox unread"
    fetch_rc 0 "e: the restarted round exits 0" --once read
    check "e: marked read by the restarted m365-fetch" test "$(msg_where "$(imid "$M/e1")")" = "Inbox read"
    fetch_rc 0 "e: one more round" --once read
    sleep 1
    check "e: no duplicate in the Maildir" test "$(md_count "$(imid "$M/e1")")" = 1
else
    bad "e: m365-fetch reached the PATCH within 20 s"
    kill -9 "$fpid" 2>/dev/null
    wait "$fpid" 2>/dev/null
    sed 's/^/#   /' "$T/fetch.kill.out" | tail -n 20
fi
emu_ctl DELETE /_emu/faults >/dev/null

# ---- f. 410 resync: nothing processed is injected again
# A processed message marked unread again by a user must not come back
# either: the done list covers it.
emu_ctl PATCH "/_emu/mailbox/bob@contoso.test/messages/$A2" '{"isRead": false}' >/dev/null
mkin "$M/f1" f1
F1=$(put inbox "$M/f1")
emu_ctl POST /_emu/faults '[{"match": "delta", "action": "gone"}]' >/dev/null
fetch_rc 0 "f: 410 SyncStateNotFound: the round resyncs and exits 0" --once read
check "f: the gone fault was used" test "$(emu_ctl GET /_emu/faults)" = '[]'
check "f: the new message arrives" wait_md "$(imid "$M/f1")" 1
check "f: new message intact" md_intact "$M/f1" read "$F1"
sleep 1
counts=""
for f in a1 a2 a3 d1 e1; do counts="$counts$(md_count "$(imid "$M/$f")")"; done
check "f: no earlier message injected again after the resync" test "$counts" = 11111
fetch_rc 0 "f: the next round uses the new deltaLink" --once read

# ---- g. 429 with Retry-After on delta: defer, then succeed
mkin "$M/g1" g1
G1=$(put inbox "$M/g1")
emu_ctl POST /_emu/faults '[{"match": "delta", "status": 429, "retry_after": 2}]' >/dev/null
fetch_rc 75 "g: 429 on delta: the round defers (75)" --once read
check "g: nothing injected, the message unread" test "$(md_count "$(imid "$M/g1")") $(msg_where "$(imid "$M/g1")")" = "0 Inbox unread"
sleep 2.5
fetch_rc 0 "g: after Retry-After the round succeeds" --once read
check "g: the message arrives once, intact" wait_md "$(imid "$M/g1")" 1
check "g: body, headers, trace" md_intact "$M/g1" read "$G1"

# ---- h. $value breaks off in the middle: nothing partial is injected
mkin "$M/h1" h1 "X-Padding: $(head -c 3000 /dev/zero | tr '\0' x)"
for i in $(seq 400); do printf 'padding line %04d of a message whose download is cut off\r\n' "$i"; done >> "$M/h1"
H1=$(put inbox "$M/h1")
emu_ctl POST /_emu/faults '[{"match": "value", "action": "truncate"}]' >/dev/null
fetch --once read
rc=$?
check "h: a cut-off download is not success (exit $rc)" test "$rc" = 75
sleep 1
check "h: nothing of it was injected" test "$(md_count "$(imid "$M/h1")")" = 0
check "h: still unread" test "$(msg_where "$(imid "$M/h1")")" = "Inbox unread"
fetch_rc 0 "h: the next round delivers it" --once read
check "h: arrives once with the complete MIME" wait_md "$(imid "$M/h1")" 1
check "h: body, headers, trace" md_intact "$M/h1" read "$H1"

# ---- i. permanent rejection by the MTA (552: too big): reject_folder
mkin "$M/i1" i1
put RejIn "$M/i1" >/dev/null
BIG=$(emu_gen_messages bob@contoso.test 3000000 1 RejIn)
BIG_IMID=$(mbb "[m['internetMessageId'] for m in f('RejIn')['messages'] if m['id'] == '$BIG'][0]")
fetch_rc 0 "i: a round with a message the MTA refuses exits 0" --once rej
check "i: the small message of the round arrives" wait_md "$(imid "$M/i1")" 1
check "i: the refused message is moved to Rejected" test "$(msg_where "$BIG_IMID")" = "Rejected unread" -o \
    "$(msg_where "$BIG_IMID")" = "Rejected read"
check "i: the refusal is logged with the MTA's reply" log_has "rej: id=$BIG, .*dsn=5\.[0-9.]+, status=bounced"
n552=$(grep -c "rej: id=$BIG" "$T/relay.log")
fetch_rc 0 "i: the next round exits 0" --once rej
check "i: not retried" test "$(grep -c "rej: id=$BIG" "$T/relay.log")" = "$n552"
check "i: never delivered" test "$(md_count "$BIG_IMID")" = 0

# ---- j. recipient unknown (550 5.1.1): never silently dropped
mkin "$M/j1" j1
put BadIn "$M/j1" >/dev/null
fetch --once badrcpt
rc=$?
check "j: a refused recipient is not success (exit $rc)" test "$rc" != 0
where=$(msg_where "$(imid "$M/j1")")
check "j: the message is kept (still in BadIn unread, or in Rejected): $where" \
    test "$where" = "BadIn unread" -o "$where" = "Rejected unread" -o "$where" = "Rejected read"
check "j: the refusal (5.1.1) is logged" log_has "badrcpt: .*5\.1\.1"
# The source stays offline while the MTA keeps refusing the recipients:
# later rounds must not bring it "back online" (a delta reply is no proof
# that the MTA was fixed) only to put it offline, log it and mail the
# notice again - once per interval in daemon mode.
notices() {
    grep -l 'source badrcpt needs attention' "$MD"/new/* "$MD"/cur/* 2>/dev/null | wc -l
}
check "j: the offline notice arrives" wait_until 15 sh -c "[ \$(grep -l 'source badrcpt needs attention' '$MD'/new/* 2>/dev/null | wc -l) -ge 1 ]"
fetch --once badrcpt
fetch --once badrcpt
rc=$?
check "j: still not success while the recipients are refused (exit $rc)" test "$rc" = 75
check "j: the message is still kept: $(msg_where "$(imid "$M/j1")")" \
    test "$(msg_where "$(imid "$M/j1")")" = "BadIn unread"
check "j: 'source offline' is logged once, not once per round ($(grep -c 'badrcpt: source offline' "$T/relay.log"))" \
    test "$(grep -c 'badrcpt: source offline' "$T/relay.log")" = 1
check "j: no 'back online' between rounds that fail the same way" \
    sh -c "! grep -q 'badrcpt: source back online' '$T/relay.log'"
sleep 1
check "j: one offline notice, not one per round ($(notices))" test "$(notices)" = 1

# ---- k. loop guard: our own trace header for this source is not re-injected
mkin "$M/k1" k1 "X-M365Relay-Source: read; mailbox=bob@contoso.test; id=AAMkAGolderid0000000000000000000000000000000AAA="
K1=$(put inbox "$M/k1")
fetch_rc 0 "k: a round with a looping message exits 0" --once read
sleep 1
check "k: the looping message is not injected" test "$(md_count "$(imid "$M/k1")")" = 0
where=$(msg_where "$(imid "$M/k1")")
check "k: it is handled (moved to Rejected or marked read): $where" \
    test "$where" = "Rejected unread" -o "$where" = "Rejected read" -o "$where" = "Inbox read"
check "k: logged as skipped" log_has "read: id=$K1, .*status=skipped"

# ---- l. shared mailbox (delegated, Mail.ReadWrite.Shared); revoked grant
if ctl_login "$T/login1.out"; then
    ok "l: m365ctl login deleg (device code, approved in the emulator)"
    grep -q 'Mail.ReadWrite.Shared' "$T/login1.out" "$T/state"/* 2>/dev/null ||
	echo "# note: login output does not name Mail.ReadWrite.Shared"
    chown -R "$RUSER" "$T/state"
    mkin "$M/l1" l1
    L1=$(put inbox "$M/l1" shared@contoso.test)
    fetch_rc 0 "l: a round of source shared exits 0" --once shared
    check "l: shared mailbox message arrives" wait_md "$(imid "$M/l1")" 1
    check "l: body, headers, trace" md_intact "$M/l1" shared "$L1"
    check "l: marked read in the shared mailbox" \
	test "$(msg_where "$(imid "$M/l1")" shared@contoso.test)" = "Inbox read"

    emu_ctl POST /_emu/revoke '{"user": "alice@contoso.test"}' >/dev/null
    emu_ctl POST /_emu/expire '{"user": "alice@contoso.test"}' >/dev/null
    mkin "$M/l2" l2
    L2=$(put inbox "$M/l2" shared@contoso.test)
    mkin "$M/l3" l3
    put inbox "$M/l3" >/dev/null
    fetch_rc 75 "l: revoked grant: a round of every source exits 75" --once
    check "l: the other sources continue (source read delivered)" \
	wait_md "$(imid "$M/l3")" 1
    check "l: the shared message stays unread, not injected" \
	test "$(msg_where "$(imid "$M/l2")" shared@contoso.test) $(md_count "$(imid "$M/l2")")" = "Inbox unread 0"
    check "l: the offline state is logged with AADSTS50173 and the remedy" \
	log_has "shared: .*(AADSTS50173|50173).*m365ctl login deleg|shared: .*m365ctl login deleg.*50173"
    "$CTL" -c "$CONF" status > "$T/status.out" 2>&1
    check "l: m365ctl status: account deleg is offline" \
	sh -c "awk '/^account /{f = (\$2 == \"deleg\")} f' '$T/status.out' | grep -Eq 'state:[[:space:]]*offline'"
    check "l: m365ctl status shows source shared offline" \
	sh -c "awk '/^source /{f = (\$2 == \"shared\")} f' '$T/status.out' | grep -q offline"
    check "l: the notification arrives in the admin's Maildir" \
	wait_until 15 sh -c "ls '$MDA/new' 2>/dev/null | grep -q ."
    check "l: the notification names the source and the remedy" \
	sh -c "cat '$MDA'/new/* | grep -q 'shared' && cat '$MDA'/new/* | grep -q 'm365ctl login deleg'"
    fetch_rc 75 "l: still offline: 75" --once shared
    sleep 1
    check "l: one notification per offline period" test "$(ls "$MDA/new" | wc -l)" = 1
    if ctl_login "$T/login2.out"; then
	ok "l: m365ctl login deleg again"
	chown -R "$RUSER" "$T/state"
	fetch_rc 0 "l: the source resumes by itself after the login" --once shared
	check "l: the waiting shared message arrives once" \
	    wait_md "$(imid "$M/l2")" 1
	check "l: body, headers, trace" md_intact "$M/l2" shared "$L2"
	"$CTL" -c "$CONF" status > "$T/status2.out" 2>&1
	awk '/^source /{f = ($2 == "shared")} f' "$T/status2.out" > "$T/status2.shared"
	check "l: m365ctl status: source shared listed and no longer offline" \
	    sh -c "test -s '$T/status2.shared' && ! grep -q offline '$T/status2.shared'"
    else
	bad "l: m365ctl login deleg again"
    fi
else
    bad "l: m365ctl login deleg (device code, approved in the emulator)"
fi

# ---- n. MTA replies that are not about the message (scripted SMTP
# server tests/quirk-smtp.py; $T/quirk.mode picks its behaviour)
fx_quirk "$QUIRK_PORT" quirk greet554 ||
    bad "n: the scripted SMTP server listens on $QUIRK_PORT"
mkin "$M/n1" n1
put QuirkIn "$M/n1" >/dev/null
N1=$(imid "$M/n1")
fetch_rc 75 "n: a 554 greeting (MTA refuses all clients) defers the round" --once quirk
check "n: 554 greeting: the message stays unread in its folder (not parked as refused): $(msg_where "$N1")" \
    test "$(msg_where "$N1")" = "QuirkIn unread"
check "n: 554 greeting: not logged as bounced" sh -c "! grep -q 'quirk: id=.*status=bounced' '$T/relay.log'"
echo mail530 > "$T/quirk.mode"
fetch_rc 75 "n: 530 to MAIL FROM (MTA wants TLS/AUTH) defers the round" --once quirk
check "n: 530: the message stays unread in its folder: $(msg_where "$N1")" \
    test "$(msg_where "$N1")" = "QuirkIn unread"
check "n: 530: not logged as bounced" sh -c "! grep -q 'quirk: id=.*status=bounced' '$T/relay.log'"
echo data451 > "$T/quirk.mode"
fetch_rc 75 "n: 451 to the end of the data defers" --once quirk
check "n: 451 after the data: the MTA saw the data once" test "$(grep -c '^data451' "$T/quirk.log")" = 1
check "n: 451 after the data: the state keeps no ambiguous data_sent entry" \
    sh -c "! grep -q data_sent '$T/state/sources/quirk.json'"
echo ok > "$T/quirk.mode"
fetch_rc 0 "n: MTA fine again: the round exits 0" --once quirk
check "n: accepted exactly once" test "$(grep -c '^accepted' "$T/quirk.log")" = 1
check "n: no false 'may get this message twice' warning after a definite 451" \
    sh -c "! grep -q 'quirk: .*twice' '$T/relay.log'"
check "n: now marked read" test "$(msg_where "$N1")" = "QuirkIn read"

# ---- o. an absurd Retry-After must not park a source for years
emu_ctl POST /_emu/faults '[{"match": "delta", "status": 429, "retry_after": 99999999}]' >/dev/null
fetch_rc 75 "o: 429 with Retry-After 99999999 defers" --once quirk
emu_ctl DELETE /_emu/faults >/dev/null
nb=$(python3 -c 'import json,sys,time; print(int(json.load(open(sys.argv[1]))["not_before"] - time.time()))' "$T/state/sources/quirk.json")
check "o: the wait is capped at an hour (not_before in $nb s)" test "$nb" -le 3600

# ---- p. one message whose $value keeps failing (500, e.g. a corrupt item)
# must not block the source: the others of the round are injected, it
# stays unread, the deltaLink does not move past it, and once Graph
# serves it again the next round delivers it exactly once.
mkin "$M/p1" p1
P1=$(put inbox "$M/p1")
mkin "$M/p2" p2
P2=$(put inbox "$M/p2")
mkin "$M/p3" p3
P3=$(put inbox "$M/p3")
dl_read() {
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("delta_link") or "")' \
	"$T/state/sources/read.json"
}
DL0=$(dl_read)
emu_ctl POST /_emu/faults "[{\"match\": \"value\", \"status\": 500, \"count\": 2, \"path_contains\": \"$P1\"}]" >/dev/null
fetch_rc 75 "p: \$value of one message fails (500): the round defers" --once read
check "p: the other messages of the round arrive" wait_md "$(imid "$M/p2")" 1
check "p: the other messages of the round arrive (2)" wait_md "$(imid "$M/p3")" 1
check "p: body, headers, trace of another message" md_intact "$M/p3" read "$P3"
check "p: the failed message is not injected and stays unread" \
    test "$(md_count "$(imid "$M/p1")") $(msg_where "$(imid "$M/p1")")" = "0 Inbox unread"
check "p: the others are marked read" \
    test "$(msg_where "$(imid "$M/p2")") $(msg_where "$(imid "$M/p3")")" = "Inbox read Inbox read"
check "p: the failure is logged for that message" log_has "read: id=$P1, .*status=deferred.*500"
check "p: the deltaLink did not move past the failed message" test "$(dl_read)" = "$DL0"
fetch_rc 75 "p: still failing: the next round defers again" --once read
check "p: still not injected, still unread" \
    test "$(md_count "$(imid "$M/p1")") $(msg_where "$(imid "$M/p1")")" = "0 Inbox unread"
check "p: the fault is used up" test "$(emu_ctl GET /_emu/faults)" = '[]'
check "p: the deltaLink still did not move" test "$(dl_read)" = "$DL0"
fetch_rc 0 "p: Graph serves it again: the round completes" --once read
check "p: the failed message arrives" wait_md "$(imid "$M/p1")" 1
check "p: exactly once, intact" md_intact "$M/p1" read "$P1"
check "p: now marked read" test "$(msg_where "$(imid "$M/p1")")" = "Inbox read"
sleep 1
check "p: the others were not injected twice" \
    test "$(md_count "$(imid "$M/p2")") $(md_count "$(imid "$M/p3")")" = "1 1"
check "p: the deltaLink moves on once nothing is left" test "$(dl_read)" != "$DL0"

# ---- q. LF-only message whose body starts with lines that look like our
# trace field and a Return-Path, followed by a CRLF blank line: the header
# ends at the first blank line, so the body is neither a loop nor a
# Return-Path.
Q1ID="<q1.$(date +%s%N).$RANDOM@fetch.test>"
{
    printf 'From: "Sender q1" <sender-q1@example.org>\n'
    printf 'To: bob@contoso.test\nSubject: fetch q1 (LF line ends)\n'
    printf 'Date: %s\nMessage-ID: %s\n' "$(date -R)" "$Q1ID"
    printf 'MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n'
    printf 'X-M365Relay-Source: read; mailbox=bob@contoso.test; id=AAMkAGquoted000000000000000000000000000000000AAA=\n'
    printf 'Return-Path: <quoted@example.net>\n'
    printf 'LF-only body that quotes a header above.\n\r\nend-of-q1\n'
} > "$M/q1"
Q1=$(put inbox "$M/q1")
fetch_rc 0 "q: a round with an LF-only message exits 0" --once read
check "q: the message is injected (the body is not read as header)" wait_md "$Q1ID" 1
check "q: not logged as skipped" sh -c "! grep -q 'read: id=$Q1, .*status=skipped' '$T/relay.log'"
check "q: marked read, not parked as a loop" test "$(msg_where "$Q1ID")" = "Inbox read"
q_rp() {
    grep -l -F -- "$Q1ID" "$MD"/new/* "$MD"/cur/* 2>/dev/null | head -n 1 |
	xargs -r sed -n 's/^Return-Path: //p' | head -n 1 | tr -d '\r'
}
check "q: the envelope sender comes from From, not from the body ($(q_rp))" \
    test "$(q_rp)" = "<sender-q1@example.org>"

# ---- r. loop guard: a trace field that names this source but another
# mailbox is not ours; an old field without mailbox= still matches by
# name; a field naming another source for this mailbox still matches.
mkin "$M/r1" r1 "X-M365Relay-Source: read; mailbox=carol@fabrikam.test; id=AAMkAGcarol00000000000000000000000000000000000AAA="
R1=$(put inbox "$M/r1")
mkin "$M/r2" r2 "X-M365Relay-Source: read"
R2=$(put inbox "$M/r2")
mkin "$M/r3" r3 "X-M365Relay-Source: elsewhere; mailbox=BOB@contoso.test; id=AAMkAGelse000000000000000000000000000000000000AAA="
R3=$(put inbox "$M/r3")
fetch_rc 0 "r: a round with foreign and own trace fields exits 0" --once read
check "r: same source name, other mailbox: injected" wait_md "$(imid "$M/r1")" 1
check "r: body, headers, trace" md_intact "$M/r1" read "$R1"
check "r: same source name, other mailbox: not logged as skipped" \
    sh -c "! grep -q 'read: id=$R1, .*status=skipped' '$T/relay.log'"
sleep 1
check "r: old field without mailbox= naming this source: skipped" \
    test "$(md_count "$(imid "$M/r2")")" = 0
check "r: old field: logged as skipped" log_has "read: id=$R2, .*status=skipped"
check "r: another source name for this mailbox: skipped" \
    test "$(md_count "$(imid "$M/r3")")" = 0
check "r: this mailbox: logged as skipped" log_has "read: id=$R3, .*status=skipped"

# ---- m. daemon mode: rounds by itself; SIGTERM ends it cleanly
mkin "$M/m1" m1
M1=$(put inbox "$M/m1")
"${FX_FETCH[@]}" read > "$T/fetch.daemon.out" 2>&1 &
dpid=$!
check "m: the daemon delivers without --once" wait_md "$(imid "$M/m1")" 1 20
check "m: body, headers, trace" md_intact "$M/m1" read "$M1"
is_read() { [ "$(msg_where "$1")" = "Inbox read" ]; }
check "m: marked read" wait_until 10 is_read "$(imid "$M/m1")"
kill -TERM "$dpid"
t0=$(date +%s)
wait "$dpid"
rc=$?
check "m: SIGTERM: the daemon exits 0 (exit $rc)" test "$rc" = 0
check "m: SIGTERM: it exits promptly" test $(( $(date +%s) - t0 )) -le 10

# ---- s. SIGTERM in the middle of a round: the message in hand is
# finished, the rest waits, and a clean stop records no error
mkin "$M/s1" s1
S1=$(put TermIn "$M/s1")
mkin "$M/s2" s2
S2=$(put TermIn "$M/s2")
emu_ctl POST /_emu/faults "[{\"match\": \"value\", \"action\": \"slow\", \"delay\": 3, \"path_contains\": \"$S1\"}]" >/dev/null
"${FX_FETCH[@]}" term > "$T/fetch.daemon2.out" 2>&1 &
dpid=$!
in_download() { [ "$(emu_ctl GET /_emu/faults)" = '[]' ]; }
check "s: the daemon is downloading the first message" wait_until 20 in_download
kill -TERM "$dpid"
wait "$dpid"
rc=$?
check "s: SIGTERM during a round: the daemon exits 0 (exit $rc)" test "$rc" = 0
check "s: the message in hand is delivered" wait_md "$(imid "$M/s1")" 1
check "s: the message in hand is marked read" test "$(msg_where "$(imid "$M/s1")")" = "TermIn read"
check "s: the next message waits, unread" \
    test "$(md_count "$(imid "$M/s2")") $(msg_where "$(imid "$M/s2")")" = "0 TermIn unread"
"$CTL" -c "$CONF" status term > "$T/status.term" 2>&1
awk '/^source /{f = ($2 == "term")} f' "$T/status.term" > "$T/status.term.src"
check "s: m365ctl status lists source term" test -s "$T/status.term.src"
check "s: m365ctl status shows no last error after a clean stop" \
    sh -c "! grep -qi 'last error' '$T/status.term.src'"
check "s: the state records no error" \
    python3 -c 'import json,sys; sys.exit(1 if json.load(open(sys.argv[1])).get("last_error") else 0)' \
    "$T/state/sources/term.json"
fetch_rc 0 "s: the next round completes" --once term
check "s: the waiting message arrives" wait_md "$(imid "$M/s2")" 1
check "s: the first one was not injected twice" test "$(md_count "$(imid "$M/s1")")" = 1

check "no token or secret in the log" sh -c "! grep -qF -- \"\$(cat '$T/secret')\" '$T/relay.log'"
t_done
