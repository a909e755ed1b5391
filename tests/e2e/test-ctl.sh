#!/bin/bash
#
# test-ctl.sh - m365ctl against the Microsoft 365 emulator
#
# Covers: check / -n (OK, and a broken file: exit 78 with file:line),
# usage errors (exit 64), login of an app-only account (refused with an
# explanation), device-code login driven through the emulator's control
# API, browser login (PKCE + loopback listener: the authorize URL is
# fetched with curl, the 302 Location is handed to m365ctl's listener),
# paste login (the Location fed on stdin), a declined sign-in (AADSTS65004)
# and a foreign state, status (text and --json, no token values), test for
# the delegated, client-secret and certificate accounts, test --send
# (recorded by the emulator), a wrong client secret (AADSTS7000215 and its
# remedy), a revoked grant (AADSTS50173: test fails, status shows the
# account offline with "m365ctl login deleg"; a new login brings it back),
# logout, consent-url, and (as root) token files owned by [global] user.
#
# Inbound sources ([source NAME] sections of m365-fetch): status lists
# them after the accounts (text, and --json with "kind": "source"; NAME
# filters both; the state file is read, never changed), a state file
# marked offline shows the error and the remedy, counts and a damaged
# file; test SOURCE resolves the folder (well-known name, display name,
# missing folder), reports 403 ErrorAccessDenied with the app-only and
# the delegated (Full Access, Mail.ReadWrite.Shared) remedy, and checks
# deliver_to (a tiny SMTP server answering 220 or 554, a closed port,
# an executable or not executable sendmail_path); login lists the
# sources that use the account; with m365-fetch built, a real round
# through the SMTP sink shows the injected count, and a revoked grant
# puts the source offline until m365ctl login.
#
# Needs python3, curl and openssl; skips (77) without them.

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top_srcdir/tests/lib.sh"

t_init ctl

command -v python3 >/dev/null 2>&1 || skip_all "python3 not installed"
command -v curl >/dev/null 2>&1 || skip_all "curl not installed"
[ -x "$CTL" ] || { bad "$CTL is built (run make first)"; t_done; }

emu_setup
CONF=$T/relay.conf
write_conf "$CONF"
TOK=$T/state/tokens

# ---------------------------------------------------------------- helpers

# ctl ARGS... - run m365ctl with the test configuration; sets rc, out
ctl() {
    "$CTL" -c "$CONF" "$@" >"$T/ctl.out" 2>&1 </dev/null
    rc=$?
    out=$(cat "$T/ctl.out")
}

# show - the last output, indented, for a failed case
show() {
    printf '%s\n' "$out" | sed 's/^/#   /'
}

# expect_rc MSG WANT - exit code of the last ctl run
expect_rc() {
    if [ "$rc" = "$2" ]; then
	ok "$1: exit $rc"
    else
	bad "$1: exit $rc, want $2"
	show
    fi
}

# has MSG TEXT - the last output contains TEXT
has() {
    if printf '%s\n' "$out" | grep -qF -- "$2"; then
	ok "$1"
    else
	bad "$1: output lacks [$2]"
	show
    fi
}

# lacks MSG TEXT - the last output does not contain TEXT
lacks() {
    if printf '%s\n' "$out" | grep -qF -- "$2"; then
	bad "$1: output contains [$2]"
	show
    else
	ok "$1"
    fi
}

# json_is MSG EXPR WANT - json_eval EXPR over the last output is WANT
json_is() {
    t_eq "$1" "$(json_eval "$2" <"$T/ctl.out")" "$3"
}

# json_has_keys MSG EXPR KEY... - the JSON list EXPR (over the last
# output) names every KEY; one result per KEY ("MSG KEY")
json_has_keys() {
    local msg=$1 keys k
    keys=$(json_eval "$2" <"$T/ctl.out")
    shift 2
    for k in "$@"; do
	case $keys in
	*"\"$k\""*) ok "$msg $k" ;;
	*) bad "$msg $k ($keys)" ;;
	esac
    done
}

# expect_offline MSG NAME - m365ctl status NAME (text and --json) shows
# NAME offline after a revoked grant: AADSTS50173 and the remedy
expect_offline() {
    ctl status "$2"
    has "$1: offline" "state:          offline"
    has "$1: AADSTS50173" "AADSTS50173"
    has "$1: remedy m365ctl login deleg" "m365ctl login deleg"
    ctl status --json "$2"
    json_is "$1: status --json offline, AADSTS50173, remedy" \
	'd[0]["state"] + " " + str("50173" in (d[0]["last_error"] or "")) + " " + str("m365ctl login deleg" in (d[0]["remedy"] or ""))' \
	"offline True True"
}

# file_mode FILE - octal permission bits
file_mode() {
    stat -c %a "$1"
}

# token_field ACCOUNT KEY - a value from the token store (for negative checks)
token_field() {
    python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
v = d.get(sys.argv[2])
print(v if v else "")
' "$TOK/$1.json" "$2"
}

# bg_ctl OUT ARGS... - start m365ctl in the background (stdin: /dev/null)
bg_ctl() {
    local outf=$1
    shift
    "$CTL" -c "$CONF" "$@" >"$outf" 2>&1 </dev/null &
    bg=$!
    t_bg_pid "$bg"
}

# bg_wait MSG OUTF - wait for the background m365ctl (at most 30 s); rc
bg_wait() {
    local i
    for i in $(seq 1 300); do
	kill -0 "$bg" 2>/dev/null || break
	sleep 0.1
    done
    if kill -0 "$bg" 2>/dev/null; then
	kill "$bg" 2>/dev/null
	bad "$1: m365ctl did not finish within 30 s"
    fi
    wait "$bg"
    rc=$?
    out=$(cat "$2")
}

# authorize_url FILE - the authorize URL m365ctl printed
authorize_url() {
    grep -o "$EMU_URL/[^ ]*/oauth2/v2.0/authorize?[^ ]*" "$1" | head -n 1
}

# location URL - fetch URL like a browser would, print the redirect target
location() {
    emu_curl -o /dev/null -w '%{redirect_url}' "$1"
}

# device_login MSG - a complete device-code sign-in of "deleg"
device_login() {
    local code
    bg_ctl "$T/login.out" login deleg
    if ! wait_until 15 emu_user_code; then
	bad "$1: a device code is pending at the emulator"
	kill "$bg" 2>/dev/null
	return
    fi
    code=$(emu_user_code)
    if wait_until 10 grep -qF "$code" "$T/login.out"; then
	ok "$1: m365ctl shows the user code $code"
    else
	bad "$1: m365ctl shows the user code $code"
    fi
    emu_ctl POST /_emu/device/approve "{\"user_code\": \"$code\"}" >/dev/null
    bg_wait "$1" "$T/login.out"
    expect_rc "$1" 0
    has "$1: says where the token is" \
	"account deleg: signed in, token stored in $TOK/deleg.json"
}

# ------------------------------------------------------------ check, usage

ctl check
expect_rc "check" 0
has "check prints configuration OK" "configuration OK"

ctl -n
expect_rc "-n" 0

"$CTL" -V >"$T/ctl.out" 2>&1
rc=$?; out=$(cat "$T/ctl.out")
expect_rc "-V" 0
has "-V names the program" "m365ctl"

ctl frobnicate
expect_rc "unknown command" 64
ctl status --bogus
expect_rc "unknown option" 64
ctl test nosuchaccount
expect_rc "unknown account" 64
has "unknown account lists the accounts" "deleg app cert"

BROKEN=$T/broken.conf
cp "$CONF" "$BROKEN"
cat >>"$BROKEN" <<'EOF'

[account bad]
tenant = contoso.test
client_id = 11111111-0000-0000-0000-000000000009
auth = magic
mailbox = bad@contoso.test
EOF
badline=$(grep -n '^auth = magic' "$BROKEN" | cut -d: -f1)
CONF=$BROKEN ctl check
expect_rc "check with a broken file" 78
has "the error names file:line" "$BROKEN:$badline:"
lacks "a broken file is not OK" "configuration OK"
CONF=$BROKEN ctl status
expect_rc "any command with a broken file" 78

chmod 644 "$T/secret"
ctl check
expect_rc "check with a world-readable secret file" 78
has "the error says chmod 600" "chmod 600"
chmod 600 "$T/secret"

# ------------------------------------------------------- app-only accounts

ctl login app
expect_rc "login of an app-only account" 64
has "login app explains that no sign-in is needed" "needs no sign-in"

ctl test app
expect_rc "test app (client secret)" 0
has "test app: token step" "ok   token: got an access token (app-only, client secret"
has "test app: mailbox step" "ok   mailbox: bob@contoso.test exists"
has "test app: opaque token noted" "cannot inspect app roles (token is opaque)"
has "test app: summary" "result: all checks passed"

ctl test cert
expect_rc "test cert (certificate)" 0
has "test cert: token step" "ok   token: got an access token (app-only, certificate"
has "test cert: mailbox step" "ok   mailbox: shared@contoso.test exists"

if [ -f "$TOK/app.json" ] && [ "$(file_mode "$TOK/app.json")" = 600 ]; then
    ok "app token file exists with mode 600"
else
    bad "app token file exists with mode 600"
fi

# A wrong client secret: no cached token, so the token endpoint decides.
ctl logout app
expect_rc "logout app" 0
cp "$T/secret" "$T/secret.good"
(umask 077 && echo wrong-secret-value >"$T/secret")
ctl test app
expect_rc "test app with a wrong secret" 1
has "wrong secret: AADSTS7000215" "AADSTS7000215"
has "wrong secret: remedy" "the client secret is wrong"
has "wrong secret: FAIL token line" "FAIL token:"
cp "$T/secret.good" "$T/secret"
chmod 600 "$T/secret"
ctl status app
has "status app after the failure shows the error" "AADSTS7000215"

# ------------------------------------------------------ device-code login

ctl test deleg
expect_rc "test deleg before any sign-in" 1
has "test deleg says to sign in" "m365ctl login deleg"

device_login "device-code login"
if [ -f "$TOK/deleg.json" ] && [ "$(file_mode "$TOK/deleg.json")" = 600 ]; then
    ok "deleg token file exists with mode 600"
else
    bad "deleg token file exists with mode 600"
fi

ctl status
expect_rc "status" 0
has "status shows deleg online" "state:          online"
at=$(token_field deleg access_token)
rt=$(token_field deleg refresh_token)
if [ -n "$at" ] && [ -n "$rt" ] && ! grep -qF -e "$at" -e "$rt" "$T/ctl.out"; then
    ok "status shows no token values"
else
    bad "status shows no token values"
fi

ctl status --json
expect_rc "status --json" 0
if python3 -m json.tool "$T/ctl.out" >/dev/null 2>&1; then
    ok "status --json is valid JSON"
else
    bad "status --json is valid JSON"
    show
fi
json_is "status --json: deleg online" '[a["state"] for a in d if a["name"] == "deleg"][0]' online
json_has_keys "status --json has key" 'sorted(d[0].keys())' name auth mailbox \
    state access_expires refresh_issued refresh_age_days token_requests \
    last_error remedy
if ! grep -qF -e "$at" -e "$rt" "$T/ctl.out"; then
    ok "status --json shows no token values"
else
    bad "status --json shows no token values"
fi

ctl test deleg
expect_rc "test deleg (delegated)" 0
has "test deleg: token step" "ok   token: got an access token (delegated, expires in"
has "test deleg: signed-in user" "ok   user: signed in as alice@contoso.test"
has "test deleg: Mail.Send granted" "ok   permission: Mail.Send granted"
lacks "test deleg shows no token value" "$at"

sent0=$(emu_sent_count)
ctl test deleg --send bob@contoso.test
expect_rc "test deleg --send" 0
has "test --send: accepted" "ok   send: 2.0.0"
sent1=$(emu_sent_count)
if [ "$sent1" = $((sent0 + 1)) ]; then
    ok "the emulator recorded one test message"
else
    bad "the emulator recorded one test message ($sent0 -> $sent1)"
fi
rec=$(emu_ctl GET /_emu/sent | json_eval 'd[-1]["mailbox"] + " " + ",".join(d[-1]["recipients"]) + " " + d[-1]["subject"]')
[ "$rec" = "alice@contoso.test bob@contoso.test m365relay connection test" ] &&
    ok "test message: mailbox, recipient, subject" ||
    bad "test message: mailbox, recipient, subject (got $rec)"

# The cert account's mailbox matches the app account's senders pattern:
# --send must still use the cert account.
ctl test cert --send alice@contoso.test
expect_rc "test cert --send (account forced)" 0
rec=$(emu_ctl GET /_emu/sent | json_eval 'd[-1]["mailbox"] + " " + d[-1]["client_id"]')
[ "$rec" = "shared@contoso.test $EMU_APP_CERT" ] &&
    ok "test cert --send used the cert app" ||
    bad "test cert --send used the cert app (got $rec)"

ctl test deleg --send 'not an address'
expect_rc "test --send with a bad address" 64

# ---------------------------------------------------------- browser login

bg_ctl "$T/browser.out" login deleg --browser
if wait_until 10 grep -q "/oauth2/v2.0/authorize?" "$T/browser.out"; then
    ok "browser login prints the authorize URL"
else
    bad "browser login prints the authorize URL"
fi
url=$(authorize_url "$T/browser.out")
case $url in
*code_challenge_method=S256*) ok "authorize URL uses PKCE S256" ;;
*) bad "authorize URL uses PKCE S256 ($url)" ;;
esac
loc=$(location "$url")
case $loc in
http://localhost:[0-9]*/\?code=*) ok "the emulator redirects to the loopback listener" ;;
*) bad "the emulator redirects to the loopback listener (got [$loc])" ;;
esac
# A stray request (favicon) does not end the wait.
port=$(printf '%s\n' "$loc" | sed -n 's|^http://localhost:\([0-9]*\)/.*|\1|p')
curl -sS --noproxy '*' -o /dev/null "http://127.0.0.1:$port/favicon.ico" 2>/dev/null
page=$(curl -sS --noproxy '*' "$loc")
case $page in
*"Signed in, you can close this window"*) ok "the listener answers the browser" ;;
*) bad "the listener answers the browser (got [$page])" ;;
esac
bg_wait "browser login" "$T/browser.out"
expect_rc "browser login" 0
has "browser login stored the token" "account deleg: signed in, token stored in"

# ------------------------------------------------------------ paste login

# paste_login OUTF [FILTER] - paste login; FILTER edits the Location
paste_login() {
    local outf=$1 filter=${2:-cat} fifo=$T/paste.fifo
    rm -f "$fifo"
    mkfifo "$fifo"
    "$CTL" -c "$CONF" login deleg --paste <"$fifo" >"$outf" 2>&1 &
    bg=$!
    t_bg_pid "$bg"
    exec 3>"$fifo"
    if wait_until 10 grep -q "/oauth2/v2.0/authorize?" "$outf"; then
	loc=$(location "$(authorize_url "$outf")")
    else
	loc=
    fi
    printf '%s\n' "$loc" | $filter >&3
    exec 3>&-
    bg_wait "paste login" "$outf"
}

paste_login "$T/paste.out"
case $loc in
http://localhost/\?code=*) ok "paste: redirect to http://localhost" ;;
*) bad "paste: redirect to http://localhost (got [$loc])" ;;
esac
expect_rc "paste login" 0
has "paste login stored the token" "account deleg: signed in, token stored in"

paste_login "$T/paste2.out" "sed s/state=[0-9a-f]*/state=0123456789abcdef0123456789abcdef/"
expect_rc "paste login with a foreign state" 1
has "foreign state is refused" "does not match"

emu_ctl POST /_emu/config '{"authorize_deny": true}' >/dev/null
paste_login "$T/paste3.out"
expect_rc "paste login, consent declined" 1
has "declined: AADSTS65004 shown" "AADSTS65004"
has "declined: remedy shown" "remedy:"
emu_ctl POST /_emu/config '{"authorize_deny": false}' >/dev/null

# ------------------------------------------------------- revoked grant

emu_ctl POST /_emu/revoke '{"user": "alice@contoso.test"}' >/dev/null
ctl test deleg
expect_rc "test deleg after revocation" 1
has "revoked: AADSTS50173" "AADSTS50173"
has "revoked: remedy names m365ctl login deleg" "m365ctl login deleg"

expect_offline "status after revocation" deleg

ctl test deleg
has "test deleg while offline names the remedy" "m365ctl login deleg"

device_login "login after revocation"
ctl status deleg
has "status after a new login: online" "state:          online"
ctl test deleg
expect_rc "test deleg after a new login" 0

# ------------------------------------------- mailbox and permission faults

ALT=$T/alt.conf
sed -e 's/^mailbox = bob@contoso.test/mailbox = onprem@contoso.test/' \
    -e 's/^mailbox = shared@contoso.test/mailbox = nobody@contoso.test/' \
    -e 's/^mailbox = alice@contoso.test/mailbox = shared@contoso.test/' \
    "$CONF" >"$ALT"
CONF_SAVED=$CONF
CONF=$ALT

ctl test app
expect_rc "test with a mailbox not enabled for REST" 1
has "not enabled for REST: the Graph code" "MailboxNotEnabledForRESTAPI"
has "not enabled for REST: licence remedy" "Exchange Online licence"

ctl test cert
expect_rc "test with an unknown mailbox" 1
has "unknown mailbox: FAIL mailbox line" "FAIL mailbox:"
has "unknown mailbox: remedy names the mailbox key" "check \"mailbox\" of [account cert]"

ctl test deleg
expect_rc "test deleg for a shared mailbox without Mail.Send.Shared" 1
has "shared mailbox: Mail.Send.Shared missing" "FAIL send-as:"
has "shared mailbox: remedy adds the scope" "scopes = Mail.Send.Shared"

sed -i 's/^auth = delegated/auth = delegated\nscopes = Mail.Send.Shared/' "$ALT"
device_login "login with Mail.Send.Shared"
ctl test deleg --send bob@contoso.test
expect_rc "test deleg for a shared mailbox with Mail.Send.Shared" 0
has "shared mailbox: scope granted" "ok   send-as:"
rec=$(emu_ctl GET /_emu/sent | json_eval 'd[-1]["mailbox"] + " " + d[-1]["from"]')
case $rec in
"shared@contoso.test "*shared@contoso.test*) ok "shared mailbox: sent as shared@contoso.test" ;;
*) bad "shared mailbox: sent as shared@contoso.test (got $rec)" ;;
esac
CONF=$CONF_SAVED

emu_ctl POST /_emu/faults '[{"match": "users", "status": 403, "code": "ErrorAccessDenied", "message": "Access to OData is disabled.", "count": 1}]' >/dev/null
ctl test app
expect_rc "test with an application access policy denial" 1
has "access denied: the Graph code" "ErrorAccessDenied"
has "access denied: RBAC remedy" "RBAC for Applications"
emu_ctl DELETE /_emu/faults >/dev/null

# ------------------------------------------------- logout, consent-url

ctl logout deleg
expect_rc "logout deleg" 0
has "logout says what was removed" "removed $TOK/deleg.json"
[ ! -e "$TOK/deleg.json" ] && ok "logout removed the token file" ||
    bad "logout removed the token file"
ctl status deleg
has "status after logout: not signed in" "state:          not signed in"
ctl logout deleg
expect_rc "logout twice" 0
has "second logout: nothing to remove" "nothing to remove"

ctl consent-url app
expect_rc "consent-url app" 0
has "consent-url prints an adminconsent URL" "/adminconsent?"
has "consent-url names the client id" "client_id=$EMU_APP_SECRET"
has "consent-url says who opens it" "Administrator"

# ------------------------------------------- root: files owned by user

if [ "$(id -u)" = 0 ] && id nobody >/dev/null 2>&1; then
    sed 's|^\[global\]|[global]\nuser = nobody|' "$CONF" >"$T/root.conf"
    "$CTL" -c "$T/root.conf" logout app >/dev/null 2>&1
    CONF=$T/root.conf ctl test app
    expect_rc "test app as root with user = nobody" 0
    owner=$(stat -c %U "$TOK/app.json" 2>/dev/null)
    [ "$owner" = nobody ] && ok "token file owned by [global] user" ||
	bad "token file owned by [global] user (got $owner)"
    owner=$(stat -c %U "$TOK" 2>/dev/null)
    [ "$owner" = nobody ] && ok "tokens directory owned by [global] user" ||
	bad "tokens directory owned by [global] user (got $owner)"
    # The rest runs as root without that user: root trusts only its own.
    chown -R root: "$TOK"
fi

# ------------------------------------------- inbound sources ([source])

FETCH=$top_builddir/fetch/m365-fetch
SRCSTATE=$T/state/sources

# A tiny SMTP server on 127.0.0.1: greets with GREETING (an empty one:
# says nothing); when that is a 220 it accepts every message ("250 ...
# queued as SINKn") and appends a line per message to LOG.  The port
# goes to PORTFILE.
cat >"$T/smtp.py" <<'EOF'
import os, socketserver, sys, threading, time
portfile, greeting, log = sys.argv[1], sys.argv[2], sys.argv[3]
lock = threading.Lock()
count = [0]
class H(socketserver.StreamRequestHandler):
    def w(self, s):
        self.wfile.write((s + "\r\n").encode())
    def handle(self):
        if not greeting:
            time.sleep(30)
            return
        self.w(greeting)
        if not greeting.startswith("220"):
            return
        while True:
            line = self.rfile.readline()
            if not line:
                return
            cmd = line.strip().upper()
            if cmd.startswith((b"EHLO", b"HELO")):
                self.w("250 sink")
            elif cmd.startswith((b"MAIL", b"RCPT", b"RSET", b"NOOP")):
                self.w("250 2.0.0 Ok")
            elif cmd == b"DATA":
                self.w("354 End data with <CR><LF>.<CR><LF>")
                size = 0
                while True:
                    l = self.rfile.readline()
                    if not l or l in (b".\r\n", b".\n"):
                        break
                    size += len(l)
                with lock:
                    count[0] += 1
                    n = count[0]
                    with open(log, "a") as f:
                        f.write("message %d size %d\n" % (n, size))
                self.w("250 2.0.0 Ok: queued as SINK%d" % n)
            elif cmd == b"QUIT":
                self.w("221 2.0.0 Bye")
                return
            else:
                self.w("502 5.5.2 Error: command not recognized")
class S(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
srv = S(("127.0.0.1", 0), H)
with open(portfile + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
os.rename(portfile + ".tmp", portfile)
srv.serve_forever()
EOF

# start_smtp NAME GREETING - start the server; its port in $T/NAME.port
start_smtp() {
    "$PYTHON" "$T/smtp.py" "$T/$1.port" "$2" "$T/$1.log" \
	>"$T/$1.out" 2>&1 &
    t_bg_pid $!
    wait_until 10 test -s "$T/$1.port" ||
	bad "the SMTP server $1 starts ($(cat "$T/$1.out"))"
}

start_smtp sink "220 sink.test ESMTP ready"
start_smtp refuser "554 5.7.1 sink.test: no SMTP service here"
start_smtp silent ""
SINK_PORT=$(cat "$T/sink.port")
REFUSE_PORT=$(cat "$T/refuser.port")
SILENT_PORT=$(cat "$T/silent.port")
CLOSED_PORT=$("$PYTHON" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')

mkdir -p "$T/bin"
printf '#!/bin/sh\ncat >/dev/null\nexit 0\n' >"$T/bin/sendmail"
chmod 755 "$T/bin/sendmail"
emu_folder_add bob@contoso.test Processed >/dev/null

SCONF=$T/sources.conf
sed "s|^\[global\]|[global]\nsendmail_path = $T/bin/sendmail|" "$CONF" >"$SCONF"
cat >>"$SCONF" <<EOF

[source inbox]
account = app
deliver_to = smtp://127.0.0.1:$SINK_PORT
recipients = helpdesk@localhost

[source proc]
account = app
folder = Processed
deliver_to = smtp://127.0.0.1:$CLOSED_PORT
recipients = helpdesk@localhost

[source shared]
account = deleg
mailbox = shared@contoso.test
deliver_to = sendmail
recipients = helpdesk

[source app]
account = cert
mailbox = alice@contoso.test
deliver_to = smtp://127.0.0.1:$SINK_PORT
recipients = helpdesk@localhost
EOF
CONF_SAVED=$CONF
CONF=$SCONF

ctl check
expect_rc "check with [source] sections" 0

# status: the sources after the accounts
ctl status
expect_rc "status with sources" 0
has "status lists source inbox" "source inbox"
has "status: a source that never ran" "state:          never run"
has "status: the source's mailbox defaults to the account's" "mailbox:        bob@contoso.test"
has "status: the source's deliver_to" "deliver_to:     smtp://127.0.0.1:$SINK_PORT"
has "status: the source's folder" "folder:         Processed"
has "status: the account names its sources" "sources:        inbox, proc"
pos_acct=$(grep -n '^account cert$' "$T/ctl.out" | cut -d: -f1)
pos_src=$(grep -n '^source inbox$' "$T/ctl.out" | cut -d: -f1)
if [ -n "$pos_acct" ] && [ -n "$pos_src" ] && [ "$pos_acct" -lt "$pos_src" ]; then
    ok "status: sources come after the accounts"
else
    bad "status: sources come after the accounts"
    show
fi

ctl status --json
expect_rc "status --json with sources" 0
json_is "status --json: accounts (kind account), then sources (kind source)" \
    '" ".join("%s:%s" % (o.get("kind"), o["name"]) for o in d)' \
    "account:deleg account:app account:cert source:inbox source:proc source:shared source:app"
json_has_keys "status --json: sources have key" \
    'sorted([o for o in d if o["kind"] == "source"][0].keys())' kind name \
    account mailbox folder deliver_to state offline_since last_round \
    last_success injected rejected pending last_error remedy
json_is "status --json: source shared never ran, shared mailbox" \
    '[(o["state"], o["mailbox"], o["injected"], o["pending"]) for o in d if o["name"] == "shared" and o["kind"] == "source"][0]' \
    '["never run", "shared@contoso.test", 0, 0]'
json_is "status --json: account app lists its sources" \
    '[o["sources"] for o in d if o["kind"] == "account" and o["name"] == "app"][0]' \
    '["inbox", "proc"]'

KINDS='" ".join("%s:%s" % (o["kind"], o["name"]) for o in d)'
ctl status --json inbox
json_is "status NAME filters the sources" "$KINDS" "source:inbox"
ctl status --json app
json_is "status NAME shows an account and a source of that name" "$KINDS" \
    "account:app source:app"
ctl status proc
lacks "status proc: no accounts" "account app"
has "status proc: the source" "source proc"
ctl status nosuch
expect_rc "status of an unknown name" 64
has "unknown name: lists the sources" "sources: inbox proc shared app"

# A state file as m365-fetch writes it (lib/fetchstate.c), marked offline.
mkdir -p "$SRCSTATE"
now=$(date +%s)
cat >"$SRCSTATE/proc.json" <<EOF
{
	"folder":	"Processed",
	"folder_id":	null,
	"delta_link":	null,
	"pending":	{
		"AAMkAGI2TG93AAA=": {
			"imid":	"<p1@example.test>",
			"state":	"injected",
			"mta_reply":	"250 2.0.0 Ok: queued as X1",
			"at":	$now
		}
	},
	"done":	[],
	"folder_ids":	{},
	"offline":	true,
	"last_error":	"403 ErrorAccessDenied: Access is denied. Check credentials and try again. for mailbox bob@contoso.test",
	"remedy":	"grant the application permission Mail.ReadWrite with admin consent",
	"notified":	true,
	"offline_since":	$((now - 120)),
	"not_before":	0,
	"last_round":	$now,
	"last_success":	$((now - 3600)),
	"injected":	7,
	"rejected":	1
}
EOF
chmod 600 "$SRCSTATE/proc.json"
sum0=$(sha256sum <"$SRCSTATE/proc.json")
ctl status proc
expect_rc "status of an offline source" 0
has "offline source: state" "state:          offline"
has "offline source: since" "offline since:"
has "offline source: the error" "last error:     403 ErrorAccessDenied"
has "offline source: the remedy" "remedy:         grant the application permission Mail.ReadWrite"
has "offline source: counts" "messages:       7 injected, 1 rejected, 1 pending"
has "offline source: the last round did not complete" "(did not complete)"
ctl status --json proc
json_is "status --json: offline source" \
    'd[0]["state"] + " " + str(d[0]["injected"]) + " " + str(d[0]["rejected"]) + " " + str(d[0]["pending"]) + " " + str("Mail.ReadWrite" in d[0]["remedy"]) + " " + str(d[0]["last_round_ok"])' \
    "offline 7 1 1 True False"
sum1=$(sha256sum <"$SRCSTATE/proc.json")
[ "$sum0" = "$sum1" ] && ok "status does not change the state file" ||
    bad "status does not change the state file"
[ ! -e "$SRCSTATE/proc.lock" ] && ok "status does not take the source lock" ||
    bad "status does not take the source lock"

echo '{"offline": tru' >"$SRCSTATE/shared.json"
ctl status shared
expect_rc "status with a damaged state file" 1
has "damaged state: state error" "state:          error"
has "damaged state: says what to do" "move it away"
rm -f "$SRCSTATE/shared.json"

# test SOURCE
ctl test inbox
expect_rc "test inbox (app-only, well-known folder, SMTP sink)" 0
has "test inbox: header" "m365ctl test source inbox: account app (app-only, client secret), mailbox bob@contoso.test, folder inbox"
has "test inbox: never ran" "--   state: m365-fetch has not run source inbox yet"
has "test inbox: folder found" "ok   folder: inbox of mailbox bob@contoso.test found"
has "test inbox: the MTA greets" "ok   deliver: smtp://127.0.0.1:$SINK_PORT: the MTA answers: 220 sink.test ESMTP ready"
has "test inbox: summary" "result: all checks passed"

ctl test proc
expect_rc "test proc (closed port)" 1
has "test proc: folder by display name" "ok   folder: Processed of mailbox bob@contoso.test found (\"Processed\""
has "test proc: offline state shown" "warn state: source proc is offline since"
has "test proc: recorded remedy shown" "remedy: grant the application permission Mail.ReadWrite"
has "test proc: connection refused" "FAIL deliver: smtp://127.0.0.1:$CLOSED_PORT: cannot connect to 127.0.0.1 port $CLOSED_PORT: Connection refused"
has "test proc: remedy starts the MTA" "remedy: start the MTA"
[ "$(sha256sum <"$SRCSTATE/proc.json")" = "$sum0" ] &&
    ok "test does not change the state file" || bad "test does not change the state file"

VCONF=$T/variant.conf
sed -e "s|^folder = Processed|folder = Nowhere|" \
    -e "s|smtp://127.0.0.1:$SINK_PORT|smtp://127.0.0.1:$REFUSE_PORT|" "$SCONF" >"$VCONF"
CONF=$VCONF
ctl test proc
expect_rc "test with a missing folder" 1
has "missing folder: named" "FAIL folder: no folder named \"Nowhere\" in mailbox bob@contoso.test"
has "missing folder: remedy" "fix \"folder\" in [source proc]"
ctl test inbox
expect_rc "test with an MTA that refuses" 1
has "refusing MTA: the reply" "FAIL deliver: smtp://127.0.0.1:$REFUSE_PORT: the MTA refuses the connection: 554 5.7.1"
has "refusing MTA: remedy" "mynetworks"
sed -e "s|smtp://127.0.0.1:$SINK_PORT|smtp://127.0.0.1:$SILENT_PORT|" "$SCONF" >"$VCONF"
t0=$(date +%s)
ctl test inbox
t1=$(date +%s)
expect_rc "test with an MTA that never greets" 1
has "silent MTA: the greeting times out" "FAIL deliver: smtp://127.0.0.1:$SILENT_PORT: connected, but no greeting within 5 s"
[ $((t1 - t0)) -le 15 ] && ok "silent MTA: the test gives up after about 5 s" ||
    bad "silent MTA: the test gives up after about 5 s (took $((t1 - t0)) s)"
CONF=$SCONF

emu_ctl POST /_emu/faults '[{"match": "mailFolders", "status": 403, "code": "ErrorAccessDenied", "message": "Access is denied. Check credentials and try again.", "count": 1}]' >/dev/null
ctl test inbox
expect_rc "test inbox with 403 ErrorAccessDenied" 1
has "app-only 403: the Graph code" "FAIL folder: GET /users/{mailbox}/mailFolders/inbox: access to mailbox bob@contoso.test denied (HTTP 403 ErrorAccessDenied"
has "app-only 403: application permission remedy" "application permission Mail.ReadWrite"
has "app-only 403: RBAC remedy" "RBAC for Applications management scope"
emu_ctl DELETE /_emu/faults >/dev/null

ctl test app
has "test NAME of an account and a source: the account" "m365ctl test app: app-only, client secret"
ctl test --source app
expect_rc "test --source app" 0
has "test --source: the source" "m365ctl test source app: account cert (app-only, certificate), mailbox alice@contoso.test"
ctl test --source deleg
expect_rc "test --source of a name that is no source" 64
ctl test inbox --send bob@contoso.test
expect_rc "test SOURCE --send" 64

# Delegated source on a shared mailbox; login lists the sources.
ctl logout deleg
ctl test shared
expect_rc "test shared before sign-in" 1
has "test shared: sign in first" "m365ctl login deleg"
has "test shared: deliver is checked even so" "ok   deliver: sendmail: $T/bin/sendmail is executable"
device_login "login of an account used by a source"
has "login lists the source" "account deleg: used by source shared (mailbox shared@contoso.test, folder inbox, deliver_to sendmail)"
has "login: Mail.ReadWrite.Shared granted" "Mail.ReadWrite.Shared"
ctl test shared
expect_rc "test shared (delegated, Full Access)" 0
has "test shared: folder" "ok   folder: inbox of mailbox shared@contoso.test found"
has "test shared: permission" "ok   permission: Mail.ReadWrite.Shared granted and alice@contoso.test can open mailbox shared@contoso.test"
chmod 644 "$T/bin/sendmail"
ctl test shared
expect_rc "test with a sendmail that is not executable" 1
has "sendmail not executable" "FAIL deliver: sendmail: $T/bin/sendmail is not executable"
chmod 755 "$T/bin/sendmail"

sed -e "/^\[source shared\]/,/^\[/s|^mailbox = shared@contoso.test|mailbox = bob@contoso.test\nfolder = sentitems|" \
    "$SCONF" >"$VCONF"
CONF=$VCONF
ctl test shared
expect_rc "test a mailbox without Full Access" 1
has "no Full Access: 403" "access to mailbox bob@contoso.test denied (HTTP 403 ErrorAccessDenied"
has "no Full Access: remedy names Full Access" "needs Full Access to mailbox bob@contoso.test"
has "no Full Access: remedy names the scope" "Mail.ReadWrite.Shared"
lacks "no Full Access: no permission verdict after the failure" "ok   permission:"
sed -e "/^\[source shared\]/,/^\[/s|^mailbox = shared@contoso.test|mailbox = onprem@contoso.test|" \
    "$SCONF" >"$VCONF"
ctl test shared
expect_rc "test a mailbox not enabled for REST" 1
has "source mailbox not enabled for REST" "MailboxNotEnabledForRESTAPI"
CONF=$SCONF

# fetch_once WANT SOURCE MSG - one round of m365-fetch for SOURCE exits WANT
fetch_once() {
    local frc
    M365RELAY_ALLOW_ROOT=1 "$FETCH" -c "$SCONF" --once "$2" >"$T/fetch.out" 2>&1
    frc=$?
    if [ "$frc" = "$1" ]; then
	ok "$3: exit $1"
    else
	bad "$3: exit $frc (want $1)"
	sed 's/^/#   /' "$T/fetch.out"
    fi
}

# A real round of m365-fetch, then a revoked grant.
if [ -x "$FETCH" ]; then
    emu_gen_messages bob@contoso.test 3000 2 >/dev/null
    fetch_once 0 inbox "m365-fetch --once inbox"
    n=$(wc -l <"$T/sink.log" 2>/dev/null || echo 0)
    t_eq "the SMTP sink got 2 messages" "$n" 2
    ctl status inbox
    has "after a round: online" "state:          online"
    has "after a round: counts" "messages:       2 injected, 0 rejected, 0 pending"
    has "after a round: completed" "(completed)"
    ctl status --json inbox
    json_is "status --json after a round" \
	'd[0]["state"] + " " + str(d[0]["injected"]) + " " + str(d[0]["last_round_ok"]) + " " + str(d[0]["last_success"] is not None)' \
	"online 2 True True"
    ctl test inbox
    has "test after a round: state" "ok   state: last round"

    emu_ctl POST /_emu/revoke '{"user": "alice@contoso.test"}' >/dev/null
    fetch_once 75 shared "m365-fetch --once shared with a revoked grant"
    expect_offline "revoked source shared" shared
    ctl test shared
    expect_rc "test shared with a revoked grant" 1
    has "test shared: the source is offline" "warn state: source shared is offline since"
    has "test shared: remedy" "m365ctl login deleg"
    device_login "login after the source went offline"
    has "login says the sources resume" "the sources resume by themselves"
    fetch_once 0 shared "m365-fetch --once shared after login"
    ctl status shared
    has "after login: source online again" "state:          online"
else
    echo "# $FETCH not built: the m365-fetch rounds are not tested here"
fi
CONF=$CONF_SAVED

t_done
