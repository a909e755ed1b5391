#!/usr/bin/env bash
# test-fetch-hardening.sh - m365-fetch against hostile or odd input, end
# to end (the Microsoft 365 emulator -> m365-fetch -> a real, private
# Postfix, or a scripted SMTP server where a real one cannot misbehave):
#
#   a. $value larger than the source's max_message_size: the download
#      stops at the cap, the message is parked with the cause logged
#   b. an endless $value stream: stops at the cap, nothing fills the disk
#   c. a $value that goes silent: the round ends after [global] timeout
#      seconds, not after an hour; the message is fetched later
#   d. a deltaLink saved under another graph_url is dropped (resync),
#      never sent the bearer token
#   e. 8-bit content: MAIL FROM carries BODY=8BITMIME, and SMTPUTF8 for
#      a raw UTF-8 header (RFC 6152, 6531, 6532) - Postfix's own log of
#      the SMTP session shows the parameters
#   f. an MTA without 8BITMIME gets no 8-bit message: the source goes
#      offline, the message stays unread; 7-bit mail still flows
#   g. a first header line that starts with white space does not
#      disappear into the trace fields (the visible From stays)
#
# Needs root (namespaces, a private Postfix, useradd); without root it
# is skipped (exit 77).  Runs inside private net/uts/mount/pid
# namespaces like test-fetch.sh.

# shellcheck disable=SC2317  # helper functions run through check()
set -u

. "$(dirname "$0")/ns.sh"
e2e_start test-fetch-hardening.sh "private Postfix, namespaces, useradd" \
    "run tests/run-all.sh as root: it installs postfix and the rest (CI does)" \
    postfix postconf postqueue setpriv timeout

# ---- inside the namespaces
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/postfix.sh"
. "$top_srcdir/tests/fetch.sh"

SMTP_PORT=2535
SEVEN_PORT=2539
fx_init fetch-hardening
# A short [global] timeout: a silent download must end after it.
sed -i "s|^\[global\]$|[global]\ntimeout = 5|" "$CONF"
# src NAME FOLDER PORT [LINES...] - a [source] of bob's mailbox into
# the SMTP server on 127.0.0.1:PORT, after = read, reject_folder Rejected
src() {
    fx_source "$1" "$2" "$3" read "reject_folder = Rejected" "${@:4}"
}
src big BigIn "$SMTP_PORT" "max_message_size = 1M"
src slow SlowIn "$SMTP_PORT"
src dl DeltaIn "$SMTP_PORT"
src fid FidIn "$SMTP_PORT"
src seven SevenIn "$SEVEN_PORT"

fx_postfix "$SMTP_PORT" || { bad "private Postfix set up and started"; t_done; }
# Postfix logs every SMTP command of loopback clients (the MAIL FROM
# parameters are checked there).
postconf -c "$PF_ETC" -e "debug_peer_list = 127.0.0.1" "debug_peer_level = 1" &&
    pf_postfix reload >/dev/null 2>&1 || bad "debug_peer_list for 127.0.0.1"
ok "private Postfix on 127.0.0.1:$SMTP_PORT"
for f in BigIn SlowIn DeltaIn FidIn SevenIn Rejected; do
    emu_folder_add bob@contoso.test "$f" >/dev/null || bad "create folder $f in the emulator"
done
fetch -n
check "m365-fetch -n: configuration OK" grep -q 'configuration OK' "$FETCH_OUT"

M=$T/msg
mkdir -p "$M"

# ---- a. larger than max_message_size (1M): parked, the cause logged
BIG=$(emu_gen_messages bob@contoso.test 3000000 1 BigIn)
BIG_IMID=$(mbb "[m['internetMessageId'] for m in f('BigIn')['messages'] if m['id'] == '$BIG'][0]")
fetch_rc 0 "a: a round with a message over max_message_size exits 0" --once big
check "a: the log names max_message_size as the cause" \
    log_has "big: id=$BIG, .*dsn=5\.3\.4, status=skipped \(the message is larger than max_message_size = 1048576 bytes"
w=$(msg_where "$BIG_IMID")
check "a: the message is parked in Rejected: $w" test "${w% *}" = Rejected
check "a: it never reached the MTA" test "$(md_count "$BIG_IMID")" = 0
check "a: Postfix never saw it (no 552)" sh -c "! grep -q '552' '$PF_MAILLOG'"
v0=$(emu_stat value_requests)
fetch_rc 0 "a: the next round exits 0" --once big
check "a: not downloaded again" test "$(emu_stat value_requests)" = "$v0"

# ---- b. an endless $value stream (50 MB at most in this test)
mkin "$M/b1" b1
B1=$(put BigIn "$M/b1")
emu_ctl POST /_emu/faults "[{\"match\": \"value\", \"action\": \"endless\", \"limit\": 50000000, \"path_contains\": \"$B1\"}]" >/dev/null
fetch_within 120 --once big
sent=$(emu_stat value_endless_bytes)
check "b: the download stopped near the cap (the server streamed $sent filler bytes)" \
    test "$sent" -lt 8000000
check "b: the round ends (exit $FETCH_RC, $FETCH_SECS s)" test "$FETCH_RC" = 0
check "b: logged with max_message_size" log_has "big: id=$B1, .*status=skipped \(the message is larger than max_message_size"
w=$(msg_where "$(imid "$M/b1")")
check "b: parked in Rejected: $w" test "${w% *}" = Rejected
check "b: not injected" test "$(md_count "$(imid "$M/b1")")" = 0
emu_ctl DELETE /_emu/faults >/dev/null

# ---- c. a $value that goes silent: [global] timeout = 5 ends it
mkin "$M/c1" c1
C1=$(put SlowIn "$M/c1")
emu_ctl POST /_emu/faults "[{\"match\": \"value\", \"action\": \"silent\", \"delay\": 40, \"path_contains\": \"$C1\"}]" >/dev/null
fetch_within 100 --once slow
check "c: a silent download ends after about timeout (5 s), not the server's 40 s ($FETCH_SECS s)" \
    test "$FETCH_SECS" -le 20
check "c: the round defers (exit $FETCH_RC)" test "$FETCH_RC" = 75
check "c: the message stays unread, not injected" \
    test "$(msg_where "$(imid "$M/c1")") $(md_count "$(imid "$M/c1")")" = "SlowIn unread 0"
emu_ctl DELETE /_emu/faults >/dev/null
fetch_rc 0 "c: the next round completes" --once slow
check "c: the message arrives once" wait_md "$(imid "$M/c1")" 1

# ---- d. a deltaLink saved under another graph_url
mkin "$M/d1" d1
put DeltaIn "$M/d1" >/dev/null
fetch_rc 0 "d: a first round of source dl" --once dl
check "d: its message arrives" wait_md "$(imid "$M/d1")" 1
# The "old host": records each request and whether it carried a token.
REC_PORT=2540
cat > "$T/rec.py" <<'EOF'
import http.server, ssl, sys
port, cert, key, logf = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(logf, "a") as f:
            f.write("%s %s auth=%s\n" % (self.command, self.path.split("?")[0],
                    "yes" if self.headers.get("Authorization") else "no"))
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("127.0.0.1", port), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
s.socket = ctx.wrap_socket(s.socket, server_side=True)
s.serve_forever()
EOF
: > "$T/rec.log"
python3 "$T/rec.py" "$REC_PORT" "$T/certs/server.pem" "$T/certs/server.key" "$T/rec.log" 2>"$T/rec.err" &
t_bg_pid $!
rec_up() { ss -Hltn "sport = :$REC_PORT" | grep -q .; }
wait_until 10 rec_up || bad "d: the old-host recorder listens"
python3 - "$T/state/sources/dl.json" "https://graph.microsoft.com:$EMU_PORT" "https://127.0.0.1:$REC_PORT" <<'EOF' || bad "d: move the saved deltaLink to the old host"
import json, sys
p, new, old = sys.argv[1:4]
d = json.load(open(p))
assert d["delta_link"].startswith(new + "/"), d["delta_link"]
d["delta_link"] = old + d["delta_link"][len(new):]
open(p, "w").write(json.dumps(d))
EOF
mkin "$M/d2" d2
put DeltaIn "$M/d2" >/dev/null
fetch_rc 0 "d: a round with a deltaLink of another host exits 0" --once dl
check "d: the old host got no request ($(cat "$T/rec.log"))" test ! -s "$T/rec.log"
check "d: the dropped link is logged" log_has "dl: the saved deltaLink https://127\.0\.0\.1:$REC_PORT/.* is not under graph_url"
check "d: the new message arrives" wait_md "$(imid "$M/d2")" 1
sleep 1
check "d: the earlier message is not injected again after the resync" \
    test "$(md_count "$(imid "$M/d1")")" = 1
check "d: the new deltaLink is under graph_url" \
    python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))["delta_link"].startswith(sys.argv[2] + "/") else 1)' \
    "$T/state/sources/dl.json" "https://graph.microsoft.com:$EMU_PORT"

# ---- e. 8BITMIME and SMTPUTF8 declared to Postfix
# mkmsg FILE SENDER SUBJECT BODY - CRLF message; SUBJECT and BODY as bytes
mkmsg() {
    {
	printf 'From: <%s>\r\nTo: bob@contoso.test\r\nSubject: %b\r\n' "$2" "$3"
	printf 'Date: %s\r\nMessage-ID: <%s.%s@fetch.test>\r\n' "$(date -R)" "${2%@*}" "$(date +%s%N)"
	printf 'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n'
	printf 'Content-Transfer-Encoding: 8bit\r\n\r\n%b\r\n' "$4"
    } > "$1"
}
mkmsg "$M/e7" seven-bit@example.org "plain ascii" "ascii body"
mkmsg "$M/e8" eight-bit@example.org "plain ascii" "Gr\\xc3\\xbc\\xc3\\x9fe aus M\\xc3\\xbcnchen"
mkmsg "$M/eu" utf8-header@example.org "Gr\\xc3\\xbc\\xc3\\x9fe \\xe2\\x80\\x93 raw UTF-8" "body \\xc3\\xa9"
for f in e7 e8 eu; do put FidIn "$M/$f" >/dev/null; done
fetch_rc 0 "e: a round of source fid exits 0" --once fid
for f in e7 e8 eu; do
    check "e: message $f arrives once" wait_md "$(imid "$M/$f")" 1
done
# mailfrom ADDR - Postfix's log of our MAIL FROM command for ADDR
mailfrom() { grep -E "< [^ ]+: MAIL FROM:<$1>" "$PF_MAILLOG" | tail -n 1 | sed 's/.*: MAIL FROM:/MAIL FROM:/'; }
m7=$(mailfrom seven-bit@example.org)
m8=$(mailfrom eight-bit@example.org)
mu=$(mailfrom utf8-header@example.org)
check "e: 7-bit: MAIL FROM without BODY=: $m7" \
    sh -c "case '$m7' in 'MAIL FROM:<seven-bit@example.org>'*BODY=*) exit 1;; 'MAIL FROM:'*) exit 0;; esac; exit 1"
check "e: 8-bit body: BODY=8BITMIME, no SMTPUTF8: $m8" \
    sh -c "case '$m8' in *SMTPUTF8*) exit 1;; *' BODY=8BITMIME'*) exit 0;; esac; exit 1"
check "e: raw UTF-8 header: BODY=8BITMIME and SMTPUTF8: $mu" \
    sh -c "case '$mu' in *' BODY=8BITMIME'*' SMTPUTF8'*) exit 0;; esac; exit 1"
# md_same FILE - the delivered copy holds FILE's header lines and body bytes
md_same() {
    python3 - "$MD" "$1" <<'EOF'
import os, sys
md, orig = sys.argv[1], open(sys.argv[2], "rb").read().replace(b"\r\n", b"\n")
ohdr, obody = orig.split(b"\n\n", 1)
mid = [l for l in ohdr.split(b"\n") if l.lower().startswith(b"message-id:")][0]
for sub in ("new", "cur"):
    for name in os.listdir(os.path.join(md, sub)):
        data = open(os.path.join(md, sub, name), "rb").read().replace(b"\r\n", b"\n")
        hdr, body = data.split(b"\n\n", 1)
        if mid in hdr.split(b"\n"):
            sys.exit(0 if body == obody and ohdr in hdr else 1)
sys.exit(1)
EOF
}
for f in e8 eu; do
    check "e: message $f: header and body bytes unchanged" md_same "$M/$f"
done

# ---- f. an MTA that does not offer 8BITMIME (scripted: Postfix always does)
fx_quirk "$SEVEN_PORT" seven 7bit || bad "f: the 7-bit SMTP server listens"
mkmsg "$M/f7" f-seven@example.org "ascii" "ascii body"
mkmsg "$M/f8" f-eight@example.org "ascii" "\\xc3\\xa9t\\xc3\\xa9"
put SevenIn "$M/f7" >/dev/null
put SevenIn "$M/f8" >/dev/null
fetch_rc 75 "f: 8-bit message, MTA without 8BITMIME: the round defers" --once seven
check "f: the 7-bit message went through" grep -q '^MAIL FROM:<f-seven@example.org>' "$T/seven.log"
check "f: the 8-bit message was not sent at all ($(grep -c MAIL "$T/seven.log") MAIL commands)" \
    sh -c "! grep -q 'f-eight@example.org' '$T/seven.log'"
check "f: the 8-bit message stays unread" test "$(msg_where "$(imid "$M/f8")")" = "SevenIn unread"
check "f: the source is offline with the cause and the remedy" \
    log_has "seven: source offline: .*does not offer 8BITMIME.*enable 8BITMIME"
echo ok > "$T/seven.mode"
fetch_rc 0 "f: the MTA offers 8BITMIME again: the round completes" --once seven
check "f: now the 8-bit message goes, with BODY=8BITMIME" \
    grep -q '^MAIL FROM:<f-eight@example.org> BODY=8BITMIME' "$T/seven.log"
check "f: marked read" test "$(msg_where "$(imid "$M/f8")")" = "SevenIn read"
check "f: source back online" log_has "seven: source back online"

# ---- g. a first header line that starts with white space
G1ID="<g1.$(date +%s%N)@fetch.test>"
{
    printf '  From: "Lead Blank" <lead-blank@example.org>\r\n'
    printf 'To: bob@contoso.test\r\nSubject: first line indented\r\n'
    printf 'Date: %s\r\nMessage-ID: %s\r\n\r\nbody of g1\r\n' "$(date -R)" "$G1ID"
} > "$M/g1"
G2ID="<g2.$(date +%s%N)@fetch.test>"
{
    printf ' \r\n\t\r\nFrom: "Blank Lines" <blank-lines@example.org>\r\n'
    printf 'To: bob@contoso.test\r\nSubject: white space lines first\r\n'
    printf 'Date: %s\r\nMessage-ID: %s\r\n\r\nbody of g2\r\n' "$(date -R)" "$G2ID"
} > "$M/g2"
put FidIn "$M/g1" >/dev/null
put FidIn "$M/g2" >/dev/null
fetch_rc 0 "g: a round with indented first header lines exits 0" --once fid
check "g: g1 arrives" wait_md "$G1ID" 1
check "g: g2 arrives" wait_md "$G2ID" 1
# hdr_of IMID NAME - the From (etc.) of the delivered copy, as a reader parses it
hdr_of() {
    python3 - "$MD" "$1" "$2" <<'EOF'
import email, email.policy, os, sys
md, mid, name = sys.argv[1:4]
for sub in ("new", "cur"):
    for fn in os.listdir(os.path.join(md, sub)):
        m = email.message_from_binary_file(open(os.path.join(md, sub, fn), "rb"),
                                           policy=email.policy.compat32)
        if (m["Message-ID"] or "").strip() == mid:
            print(" | ".join(str(v).replace("\n", " ") for v in m.get_all(name, [])))
EOF
}
check "g: g1 keeps its visible From: $(hdr_of "$G1ID" From)" \
    test "$(hdr_of "$G1ID" From)" = '"Lead Blank" <lead-blank@example.org>'
check "g: g1: our trace field did not swallow it: $(hdr_of "$G1ID" X-M365Relay-Source)" \
    sh -c "! echo '$(hdr_of "$G1ID" X-M365Relay-Source)' | grep -q lead-blank"
check "g: g2 keeps its visible From: $(hdr_of "$G2ID" From)" \
    test "$(hdr_of "$G2ID" From)" = '"Blank Lines" <blank-lines@example.org>'
check "g: g1 subject intact" test "$(hdr_of "$G1ID" Subject)" = "first line indented"
check "g: the repair is logged" log_has "fid: id=.*: the header starts with [0-9]+ bytes of white space"

check "no token or secret in the log" sh -c "! grep -qF -- \"\$(cat '$T/secret')\" '$T/relay.log'"
t_done
