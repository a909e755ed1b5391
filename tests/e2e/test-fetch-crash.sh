#!/usr/bin/env bash
# test-fetch-crash.sh - kill -9 of m365-fetch at random points while it
# injects through sendmail (deliver_to = sendmail):
#
#   the Microsoft 365 emulator (40 messages of 1 MB) -> m365-fetch (as an
#   unprivileged user) -> a slow reader -> Postfix's real sendmail(1) and
#   postdrop -> a private Postfix -> local(8) -> Maildir
#
# m365-fetch is killed 25 times at random moments, then run until a round
# completes.  Every third kill also takes the helper process that runs
# sendmail for m365-fetch, with sendmail (its process group), as a
# power loss or "kill the whole service" would.  Counted over the
# Maildir: lost messages (no copy), truncated copies (body not
# byte-identical) and duplicates.  Expected: 0 lost, 0 truncated, no
# duplicate from a kill of m365-fetch alone (the helper records how
# sendmail ended, and the restart reads it), and at most one duplicate
# per kill of the helper, each announced by the warning "may get this
# message twice" for that message (the documented window: the MTA took
# the message, and nothing survived to record it).
#
# The slow reader (a pipe that passes 32 KB every 20 ms) stands between
# m365-fetch and Postfix's sendmail, so that a kill often falls while
# sendmail is still reading - the window in which sendmail -i, which
# takes the end of its input for the end of the message, would queue a
# truncated message if its input could end early.
#
# Needs root (namespaces, a private Postfix, useradd); without root it
# is skipped (exit 77).

# shellcheck disable=SC2317  # helper functions run through check()
set -u

. "$(dirname "$0")/ns.sh"
e2e_start test-fetch-crash.sh "private Postfix, namespaces, useradd" \
    "run tests/run-all.sh as root: it installs postfix and the rest (CI does)" \
    postfix postconf postqueue setpriv

# ---- inside the namespaces
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/postfix.sh"
. "$top_srcdir/tests/fetch.sh"

SMTP_PORT=2545
NMSG=${CRASH_MESSAGES:-40}
NKILL=${CRASH_KILLS:-25}
fx_init fetch-crash
SM_POSTFIX=$(command -v sendmail || echo /usr/sbin/sendmail)
[ -x "$SM_POSTFIX" ] || { bad "Postfix's sendmail is installed ($SM_POSTFIX)"; t_done; }

sed -i "s|^\[global\]$|[global]\nsendmail_path = $T/bin/sendmail|" "$CONF"
fx_source crash CrashIn sendmail read
fx_postfix "$SMTP_PORT" || { bad "private Postfix set up and started"; t_done; }
ok "private Postfix on 127.0.0.1:$SMTP_PORT"

# Postfix's sendmail run by an unprivileged user may use the private
# configuration only when the default main.cf allows it (this mount
# namespace's copy does).
cp /etc/postfix/main.cf "$T/default-main.cf"
echo "alternate_config_directories = $PF_ETC" >> "$T/default-main.cf"
mount --bind "$T/default-main.cf" /etc/postfix/main.cf ||
    { bad "private default main.cf for Postfix's sendmail"; t_done; }
mkdir -p "$T/bin"
cat > "$T/bin/slowcat.py" <<'EOF'
import os, sys, time
while True:
    data = os.read(0, 32768)
    if not data:
        break
    os.write(1, data)
    time.sleep(0.02)
EOF
cat > "$T/bin/sendmail" <<EOF
#!/bin/bash
# Postfix's sendmail behind a slow reader (tests/e2e/test-fetch-crash.sh)
set -o pipefail
python3 $T/bin/slowcat.py | MAIL_CONFIG=$PF_ETC $SM_POSTFIX "\$@"
EOF
chmod 755 "$T/bin" "$T/bin/sendmail"
chmod 644 "$T/bin/slowcat.py"
printf 'Subject: sendmail check\n\nok\n' |
    setpriv --reuid="$RUSER" --regid="$(id -g "$RUSER")" --init-groups \
	"$T/bin/sendmail" -i -f "$RUSER@local.test" -- "$MBX@local.test" > "$T/sm-check.out" 2>&1
check "Postfix's sendmail works for $RUSER through the slow reader$(sed 's/^/: /' "$T/sm-check.out" | head -n 3)" \
    test ! -s "$T/sm-check.out"
pf_wait_empty 30 || bad "the check message is delivered"

emu_folder_add bob@contoso.test CrashIn >/dev/null || bad "create folder CrashIn"
emu_gen_messages bob@contoso.test 1000000 "$NMSG" CrashIn > "$T/ids" ||
    bad "generate $NMSG messages"
check "$NMSG messages of 1 MB wait in CrashIn" test "$(wc -l < "$T/ids")" = "$NMSG"

# children_of PID - the process ids whose parent is PID (from /proc)
children_of() {
    python3 - "$1" <<'EOF'
import os, sys
for p in os.listdir("/proc"):
    try:
        if p.isdigit() and open("/proc/%s/stat" % p).read().rsplit(")", 1)[1].split()[1] == sys.argv[1]:
            print(p)
    except OSError:
        pass
EOF
}

# ---- the kills
kills=0
hkills=0
for ((k = 1; k <= NKILL; k++)); do
    "${FX_FETCH[@]}" --once crash > "$T/kill.$k.out" 2>&1 &
    pid=$!
    sleep "$((RANDOM % 2)).$((RANDOM % 10))$((RANDOM % 10))"
    helpers=$(children_of "$pid")
    if kill -9 "$pid" 2>/dev/null; then
	kills=$((kills + 1))
	if [ $((k % 3)) = 0 ] && [ -n "$helpers" ]; then
	    for h in $helpers; do
		kill -9 -- "-$h" 2>/dev/null && hkills=$((hkills + 1))
	    done
	fi
    fi
    wait "$pid" 2>/dev/null
    # A surviving helper keeps the source locked until sendmail ended:
    # let it finish, so that the next run works instead of being busy.
    for h in $helpers; do
	wait_until 30 sh -c "! kill -0 $h 2>/dev/null"
    done
done
check "m365-fetch was killed $kills times (of $NKILL runs; the others had finished), $hkills times with its sendmail" \
    test "$kills" -ge $((NKILL / 2))

# ---- finish: rounds until one completes
done_rc=1
for ((k = 1; k <= 15; k++)); do
    fetch --once crash && { done_rc=0; break; }
    sleep 1
done
check "a round completes after the kills" test "$done_rc" = 0
check "the Postfix queue drains" pf_wait_empty 120

# ---- count
emu_mailbox bob@contoso.test > "$T/mailbox.json"
python3 - "$MD" "$T/relay.log" "$T/mailbox.json" "$T/ids" > "$T/count.out" <<'EOF'
import json, os, sys
md, logf, mbf, idsf = sys.argv[1:5]
want = set(open(idsf).read().split())
mb = json.load(open(mbf))
msgs = {}
for folder in mb["folders"]:
    for m in folder["messages"]:
        msgs[m["internetMessageId"]] = m
def body(data):
    data = data.replace(b"\r\n", b"\n")
    return data.split(b"\n\n", 1)[1] if b"\n\n" in data else b""
orig = {}
for imid, m in msgs.items():
    orig[imid] = body(open(m["path"], "rb").read())
copies = {}
for sub in ("new", "cur"):
    d = os.path.join(md, sub)
    for name in os.listdir(d) if os.path.isdir(d) else []:
        data = open(os.path.join(d, name), "rb").read()
        hdr = data.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
        for line in hdr.split(b"\n"):
            if line.lower().startswith(b"message-id:"):
                copies.setdefault(line.split(b":", 1)[1].strip().decode(), []).append(body(data))
log = open(logf, errors="replace").read().splitlines()
lost = trunc = dup = unwarned = unread = 0
for imid, m in msgs.items():
    got = copies.get(imid, [])
    # The Graph id changes only on a move; after = read keeps it.
    gid = m["id"]
    warned = sum(1 for l in log if ("id=%s: " % gid) in l
                 and "may get this message twice" in l)
    if not got:
        lost += 1
        print("lost: %s" % imid)
    for b in got:
        if b != orig[imid]:
            trunc += 1
            print("truncated: %s (%d of %d body bytes)" % (imid, len(b), len(orig[imid])))
    if len(got) > 1:
        dup += len(got) - 1
        if len(got) - 1 > warned:
            unwarned += len(got) - 1 - warned
            print("unwarned duplicate: %s (%d copies, %d warnings)" % (imid, len(got), warned))
    if not m["isRead"]:
        unread += 1
print("messages=%d lost=%d truncated=%d duplicates=%d unwarned=%d unread=%d" %
      (len([1 for m in msgs.values() if m["id"] in want]), lost, trunc, dup, unwarned, unread))
EOF
sed 's/^/# /' "$T/count.out"
summary=$(tail -n 1 "$T/count.out")
val() { printf '%s\n' "$summary" | sed -n "s/.*[ ]$1=\([0-9]*\).*/\1/p;s/^$1=\([0-9]*\).*/\1/p" | head -n 1; }
check "all $NMSG messages are in the mailbox list ($summary)" test "$(val messages)" = "$NMSG"
check "no message lost" test "$(val lost)" = 0
check "no truncated copy" test "$(val truncated)" = 0
check "every duplicate was announced for its message ($(val duplicates) duplicates)" \
    test "$(val unwarned)" = 0
check "duplicates only where the helper was killed too ($(val duplicates) <= $hkills)" \
    test "$(val duplicates)" -le "$hkills"
check "every message is marked read" test "$(val unread)" = 0
warned=$(grep -c 'may get this message twice' "$T/relay.log")
echo "# $kills kills ($hkills with the sendmail helper), $(val duplicates) duplicates, $warned duplicate warnings"
t_done
