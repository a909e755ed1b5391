#!/usr/bin/env bash
# test-lmtp-proto.sh - m365-lmtpd (issue 14.2) driven directly by an LMTP
# client (tests/lmtp-client.py), against the Microsoft 365 emulator:
#
# - started as root: the socket is born with the [global] user as owner
#   and mode 0660 (-m 0660), the process runs as that user, -n says
#   "configuration OK", a socket directory anybody can write to and a
#   TCP address that is not loopback are refused;
# - pipelined commands in one write, a dot-stuffed body (lines ".",
#   "..x", ".x" on the wire): the emulator gets the unstuffed lines;
#   one reply per recipient after DATA; RSET forgets the recipients;
# - the queue id of the log: XFORWARD IDENT, else the Received: id,
#   else a generated "L..." one; the one log format;
# - several messages over one connection: one TLS connection;
# - TCP on 127.0.0.1; -s 1 serves one session at a time (the next
#   connection waits in the listen queue);
# - SIGHUP reloads (a bad file keeps the old configuration), SIGTERM
#   stops and removes the socket.
#
# Needs root (namespaces, useradd); skipped (77) without it.

# shellcheck disable=SC2317  # helper functions run through check()
set -u

. "$(dirname "$0")/ns.sh"
e2e_start test-lmtp-proto.sh "namespaces, useradd, a daemon that drops root" \
    "run tests/run-all.sh as root (CI does)" runuser pgrep stat

# ---- inside the namespaces
. "$top_srcdir/tests/lib.sh"

LMTPD=$top_builddir/lmtp/m365-lmtpd
CLIENT="$PYTHON $top_srcdir/tests/lmtp-client.py"
RUSER=m365test
LPID=

t_init lmtp-proto
trap '[ -z "$LPID" ] || kill -9 "$LPID" 2>/dev/null; t_cleanup' EXIT
e2e_private_hosts

if [ ! -x "$LMTPD" ]; then
    bad "m365-lmtpd is built ($LMTPD missing: run make)"
    t_done
fi
e2e_conf "$RUSER" || { bad "emulator starts"; t_done; }
conf_real_hosts "$CONF"
e2e_user "$RUSER" || { bad "create user $RUSER"; t_done; }
mkdir -p "$T/run" "$T/msg"
chown "$RUSER" "$T/run"
chmod 750 "$T/run"
SOCK=$T/run/lmtp.sock

check "m365-lmtpd -n: configuration OK" \
    sh -c "'$LMTPD' -c '$CONF' -n 2>&1 | grep -q 'configuration OK'"
check "m365-lmtpd refuses a TCP address that is not loopback" \
    sh -c "'$LMTPD' -c '$CONF' -p inet:2003@0.0.0.0 2>&1 | grep -q 'not a loopback address'"
mkdir -p "$T/open"
chmod 1777 "$T/open"
check "m365-lmtpd refuses a socket directory anybody can write to" \
    sh -c "'$LMTPD' -c '$CONF' -p unix:$T/open/l.sock 2>&1 | grep -q 'can be written to by others'"

# start_lmtpd - in the background as root; it drops to $RUSER
start_lmtpd() {
    "$LMTPD" -c "$CONF" -p "unix:$SOCK" -s 4 -m 0660 -v >> "$T/lmtpd.out" 2>&1 &
    LPID=$!
    wait_until 10 test -S "$SOCK"
}
start_lmtpd || { sed 's/^/#   /' "$T/lmtpd.out"; bad "m365-lmtpd listens"; t_done; }
ok "m365-lmtpd listens on $SOCK"
t_eq "the socket belongs to $RUSER, mode 660" \
    "$(stat -c '%U %a' "$SOCK")" "$RUSER 660"
t_eq "the daemon runs as $RUSER" "$(ps -o user= -p "$LPID" | tr -d ' ')" "$RUSER"

# ---- pipelining and dot-stuffing in one write
SUBJ="lmtp proto dots"
{
    printf 'LHLO client.test\r\n'
    printf 'MAIL FROM:<bob@contoso.test> BODY=8BITMIME SIZE=300\r\n'
    printf 'RCPT TO:<gone@example.com>\r\nRSET\r\n'
    printf 'XFORWARD NAME=localhost ADDR=127.0.0.1 IDENT=4XfwdQ1d\r\n'
    printf 'MAIL FROM:<bob@contoso.test>\r\n'
    printf 'RCPT TO:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n'
    printf 'From: bob@contoso.test\r\nTo: a@example.com\r\nSubject: %s\r\n' "$SUBJ"
    printf 'Message-ID: <dots.%s@e2e.test>\r\n\r\n' "$$"
    printf 'first line\r\n..\r\n...two dots\r\n..one dot\r\nlast line\r\n.\r\n'
    printf 'NOOP\r\nQUIT\r\n'
} > "$T/msg/dots.lmtp"
$CLIENT "$SOCK" raw "$T/msg/dots.lmtp" > "$T/dots.out" 2>&1
t_match "pipelined: every reply, in order, one per recipient after DATA" \
    "$(tr -d '\r' < "$T/dots.out" | grep -v '^250-' | sed 1d | tr '\n' '|')" \
    '^250 XFORWARD [A-Z ]*\|250 2\.1\.0 Ok\|250 2\.1\.5 Ok\|250 2\.0\.0 Ok\|250 2\.0\.0 Ok\|250 2\.1\.0 Ok\|250 2\.1\.5 Ok\|250 2\.1\.5 Ok\|354 [^|]*\|250 2\.0\.0 202 Accepted[^|]*\|250 2\.0\.0 202 Accepted[^|]*\|250 2\.0\.0 Ok\|221 2\.0\.0 Bye\|$'
check "dots: sent once, to exactly the recipients after RSET" \
    sent_check "$SUBJ" count=1 "rcpts=a@example.com,b@example.net" never=gone@example.com
emu_ctl GET /_emu/sent > "$T/sent.json"
check "dots: the body Graph got is unstuffed (., ..two dots, .one dot)" \
    "$PYTHON" -c '
import json, sys
r = [x for x in json.load(open(sys.argv[1])) if x.get("subject") == sys.argv[2]][0]
eml = open(r["eml_path"], "rb").read()
want = b"\r\n\r\nfirst line\r\n.\r\n..two dots\r\n.one dot\r\nlast line\r\n"
sys.exit(0 if want in eml else 1)' "$T/sent.json" "$SUBJ"
check "the log line: XFORWARD IDENT is the queue id, the one format" \
    grep -qE '^.* 4XfwdQ1d: to=<a@example\.com>, relay=graph\.microsoft\.com:[0-9]+\[bob@contoso\.test\], delay=[0-9.e-]+, dsn=2\.0\.0, status=sent \(202 Accepted' "$T/relay.log"

# ---- XFORWARD holds for one transaction
{
    printf 'LHLO client.test\r\nXFORWARD IDENT=4XfwdOnce\r\n'
    for n in 1 2; do
	printf 'MAIL FROM:<bob@contoso.test>\r\nRCPT TO:<xf%s@example.com>\r\nDATA\r\n' "$n"
	printf 'From: bob@contoso.test\r\nTo: xf%s@example.com\r\nSubject: lmtp proto xf %s\r\n' "$n" "$n"
	printf 'Message-ID: <xf%s.%s@e2e.test>\r\n\r\nbody\r\n.\r\n' "$n" "$$"
    done
    printf 'QUIT\r\n'
} > "$T/msg/xf.lmtp"
$CLIENT "$SOCK" raw "$T/msg/xf.lmtp" > "$T/xf.out" 2>&1
check "XFORWARD: the first message under its IDENT" \
    grep -q ' 4XfwdOnce: to=<xf1@example.com>, .*status=sent' "$T/relay.log"
check "XFORWARD: the next transaction without it has an id of its own" \
    grep -qE ' L[0-9a-f]{10}: to=<xf2@example\.com>, .*status=sent' "$T/relay.log"

# ---- no XFORWARD: the Received: id, else a generated one
make_msg "$T/msg/rcvd" "lmtp proto received" "From: bob@contoso.test" "To: a@example.com"
{ printf 'Received: from x (x [127.0.0.1])\r\n\tby mx.e2e.test (Postfix) with ESMTP id 4RcvdAb12\r\n\tfor <a@example.com>; %s\r\n' "$(date -R)"; cat "$T/msg/rcvd"; } > "$T/msg/rcvd2"
check "Received: a message is sent" $CLIENT "$SOCK" send bob@contoso.test a@example.com "$T/msg/rcvd2"
check "Received: its id is the queue id" grep -q ' 4RcvdAb12: to=<a@example.com>, .*status=sent' "$T/relay.log"
make_msg "$T/msg/none" "lmtp proto noid" "From: bob@contoso.test" "To: a@example.com"
check "no id: a message is sent" $CLIENT "$SOCK" send bob@contoso.test a@example.com "$T/msg/none"
check "no id: a generated L... queue id" grep -qE ' L[0-9a-f]{10}: to=<a@example\.com>, .*status=sent' "$T/relay.log"
# The same message without a Message-ID, sent again (a retry after a lost
# answer): the same queue id, so the same Message-ID, so not sent twice.
MAKE_MSG_NO_ID=1 make_msg "$T/msg/noid" "lmtp proto no message-id" "From: bob@contoso.test" "To: a@example.com"
check "no Message-ID: sent" $CLIENT "$SOCK" send bob@contoso.test a@example.com "$T/msg/noid"
check "no Message-ID: sent again by the client" $CLIENT "$SOCK" send bob@contoso.test a@example.com "$T/msg/noid"
check "no Message-ID: Graph got it once" sent_check "lmtp proto no message-id" count=1 rcpts=a@example.com
t_eq "no Message-ID: both tries logged under one generated queue id" \
    "$(grep -E 'to=<a@example\.com>, .*(202 Accepted|not sent again)' "$T/relay.log" | tail -n 2 | awk '{print $6}' | sort -u | grep -cE '^L[0-9a-f]{10}:$')" 1

# ---- several messages over one connection: one TLS connection
before=$(emu_ctl GET /_emu/stats | json_eval 'd.get("connections", -1)')
make_msg "$T/msg/many" "lmtp proto many" "From: bob@contoso.test" "To: a@example.com"
check "10 messages over one LMTP connection" \
    $CLIENT "$SOCK" send bob@contoso.test a@example.com "$T/msg/many" 10 1
after=$(emu_ctl GET /_emu/stats | json_eval 'd.get("connections", -1)')
if [ "$before" = -1 ]; then
    echo "# note: the emulator counts no connections; the reuse is tested in test-lmtp.sh"
else
    t_match "10 messages: at most 2 new connections to the emulator (token, Graph)" \
	"$((after - before))" '^[0-2]$'
fi

# ---- TCP on loopback, and the session limit (-s 1: a second connection
# waits in the listen queue until the first ends)
"$LMTPD" -c "$CONF" -p inet:2003@127.0.0.1 -s 1 >> "$T/lmtpd2.out" 2>&1 &
L2PID=$!
if wait_port 2003; then
    make_msg "$T/msg/tcp" "lmtp proto tcp" "From: bob@contoso.test" "To: a@example.com"
    check "TCP 127.0.0.1:2003: a message is sent" \
	$CLIENT 127.0.0.1:2003 send bob@contoso.test a@example.com "$T/msg/tcp"
    check "-s 1: a second session waits until the first ends" "$PYTHON" -c '
import socket, sys, time
a = socket.create_connection(("127.0.0.1", 2003))
a.settimeout(5)
if not a.recv(512).startswith(b"220"):
    sys.exit("no greeting on the first connection")
b = socket.create_connection(("127.0.0.1", 2003))
b.settimeout(1.5)
try:
    b.recv(512)
    sys.exit("the second connection was served while the first was open")
except socket.timeout:
    pass
a.sendall(b"QUIT\r\n")
a.recv(512)
a.close()
b.settimeout(5)
if not b.recv(512).startswith(b"220"):
    sys.exit("the second connection got no greeting after the first ended")
b.sendall(b"QUIT\r\n")'
else
    bad "m365-lmtpd listens on inet:2003@127.0.0.1 ($(tail -n 3 "$T/lmtpd2.out"))"
fi
term_wait "$L2PID" 15

# ---- reload: a good file is taken, a bad one keeps the old
kill -HUP "$LPID"
check "SIGHUP: reloaded" wait_grep 10 'reloaded the configuration' "$T/lmtpd.out"
cp "$CONF" "$T/conf.good"
echo "bogus line" >> "$CONF"
kill -HUP "$LPID"
check "SIGHUP with a bad file: the old configuration stays" \
    wait_grep 10 'keeping the previous configuration' "$T/lmtpd.out"
make_msg "$T/msg/after" "lmtp proto after reload" "From: bob@contoso.test" "To: a@example.com"
check "after a failed reload, mail still goes out" \
    $CLIENT "$SOCK" send bob@contoso.test a@example.com "$T/msg/after"
cp "$T/conf.good" "$CONF"

# ---- stop: SIGTERM, exit 0, the socket removed
term_wait "$LPID" 15
LPID=
t_eq "SIGTERM: exit status 0" "$TW_RC" 0
check "SIGTERM: the socket is removed" test ! -e "$SOCK"

t_done
