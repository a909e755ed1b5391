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
"$CTL" -c "$BROKEN" check >"$T/ctl.out" 2>&1
rc=$?; out=$(cat "$T/ctl.out")
expect_rc "check with a broken file" 78
has "the error names file:line" "$BROKEN:$badline:"
lacks "a broken file is not OK" "configuration OK"
"$CTL" -c "$BROKEN" status >"$T/ctl.out" 2>&1
rc=$?; out=$(cat "$T/ctl.out")
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
state=$(json_eval '[a["state"] for a in d if a["name"] == "deleg"][0]' <"$T/ctl.out")
[ "$state" = online ] && ok "status --json: deleg online" ||
    bad "status --json: deleg online (got $state)"
keys=$(json_eval 'sorted(d[0].keys())' <"$T/ctl.out")
for k in name auth mailbox state access_expires refresh_issued \
    refresh_age_days token_requests last_error remedy; do
    case $keys in
    *"\"$k\""*) ok "status --json has key $k" ;;
    *) bad "status --json has key $k ($keys)" ;;
    esac
done
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

ctl status deleg
has "status after revocation: offline" "state:          offline"
has "status after revocation: AADSTS50173" "AADSTS50173"
has "status after revocation: remedy" "m365ctl login deleg"
ctl status --json deleg
state=$(json_eval 'd[0]["state"] + " " + str("50173" in (d[0]["last_error"] or "")) + " " + str("m365ctl login deleg" in (d[0]["remedy"] or ""))' <"$T/ctl.out")
[ "$state" = "offline True True" ] && ok "status --json after revocation" ||
    bad "status --json after revocation (got $state)"

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
    "$CTL" -c "$T/root.conf" test app >"$T/ctl.out" 2>&1
    rc=$?; out=$(cat "$T/ctl.out")
    expect_rc "test app as root with user = nobody" 0
    owner=$(stat -c %U "$TOK/app.json" 2>/dev/null)
    [ "$owner" = nobody ] && ok "token file owned by [global] user" ||
	bad "token file owned by [global] user (got $owner)"
    owner=$(stat -c %U "$TOK" 2>/dev/null)
    [ "$owner" = nobody ] && ok "tokens directory owned by [global] user" ||
	bad "tokens directory owned by [global] user (got $owner)"
fi

t_done
