#!/usr/bin/env bash
# test-proxy.sh - HTTP proxy and TLS inspection (issue 13.3), end to end
#
# A real CONNECT proxy on loopback (tests/proxy.py: CONNECT only, optional
# Basic authentication, logs every tunnel) in front of the Microsoft 365
# emulator; the Microsoft host names resolve to 127.0.0.1 in the private
# namespaces, so the proxy's log names the login and Graph hosts.
#
# Checks, with m365-relay run as the service user:
#   - proxy = in [global]: the token request and sendMail both go through
#     the proxy (a tunnel to each host); -n and m365ctl check say so
#   - no_proxy: the listed host bypasses the proxy
#   - [account] proxy overrides [global]'s; proxy = none goes direct
#   - https_proxy / no_proxy from the environment are used only when the
#     key is unset (proxy = none and proxy = URL both win over them)
#   - proxy_credentials_file: the right user:password works; a wrong one
#     and none at all defer naming proxy_credentials_file (407); a
#     world-readable file is refused (-n, and the relay defers)
#   - a proxy that is down, or refuses the tunnel: exit 75, 4.4.x, the
#     text names the proxy; never a bounce
#   - ca_extra_file: login served with a certificate of a CA in the
#     system bundle (bind-mounted in the namespace), Graph with the
#     emulator's test CA (the "inspecting proxy's" CA): ca_file breaks
#     the login host, ca_extra_file (bundle + extra) works
#   - m365-milter in deliver mode and m365-fetch take the proxy too
#
# Needs root (namespaces, useradd), python3, openssl, curl, miltertest.
# Without root it is skipped (exit 77).

set -u

. "$(dirname "$0")/ns.sh"
e2e_start test-proxy.sh "namespaces, useradd, bind mounts" \
    "run tests/run-all.sh, which installs them (as root)" \
    setpriv miltertest mount

# ---- inside the namespaces
. "$top_srcdir/tests/lib.sh"

RUSER=m365test
MILTER=$top_builddir/milter/m365-milter
FETCH=$top_builddir/fetch/m365-fetch

t_init proxy
e2e_private_hosts
e2e_conf "$RUSER" || { bad "the emulator starts"; t_done; }
conf_real_hosts "$CONF"
e2e_user "$RUSER" || { bad "create user $RUSER"; t_done; }
BASE=$CONF
RUID=$(id -u "$RUSER")
RGID=$(id -g "$RUSER")
LOGIN=login.microsoftonline.com:$EMU_PORT
GRAPH=graph.microsoft.com:$EMU_PORT
unset https_proxy HTTPS_PROXY http_proxy all_proxy ALL_PROXY no_proxy NO_PROXY

# as_user CMD... - run CMD as the service user (environment kept)
as_user() {
    setpriv --reuid="$RUID" --regid="$RGID" --init-groups "$@"
}

# proxy_start NAME ARGS... - start tests/proxy.py (log $T/NAME.log);
# the port in $PORT, the process id in $PROXY_PID
proxy_start() {
    local name=$1
    shift
    : >"$T/$name.log"
    "$PYTHON" "$top_srcdir/tests/proxy.py" --port 0 --log "$T/$name.log" "$@" \
	>"$T/$name.out" 2>&1 &
    PROXY_PID=$!
    t_bg_pid "$PROXY_PID"
    if ! wait_until 10 grep -q '^proxy ready on ' "$T/$name.out"; then
	sed 's/^/#   /' "$T/$name.out"
	bad "proxy $name starts"
	t_done
    fi
    PORT=$(sed -n 's/^proxy ready on \([0-9]*\)$/\1/p' "$T/$name.out")
}

proxy_start p1
P1=$PORT
proxy_start p2 --auth 'proxyuser:pa:ss word'
P2=$PORT
proxy_start deny --deny graph.microsoft.com
PD=$PORT
# A port where nothing listens (the proxy is down).
proxy_start gone
PG=$PORT
kill "$PROXY_PID" 2>/dev/null
wait_until 5 sh -c "! ss -Hltn 'sport = :$PG' | grep -q ." ||
    bad "the stopped proxy's port is closed"

# tunnels NAME HOST:PORT - tunnels the proxy NAME opened to that target
tunnels() {
    grep -c "^CONNECT $2 200\$" "$T/$1.log"
}

# conf NAME GLOBAL ACCOUNT - $T/NAME.conf: $BASE with the lines GLOBAL
# (\n-separated) after [global] and ACCOUNT after [account app]
conf() {
    local f=$T/$1.conf
    awk -v g="$2" -v a="$3" '
	{ print }
	/^\[global\]$/ && g != "" { print g }
	/^\[account app\]$/ && a != "" { print a }' "$BASE" >"$f"
    chmod 644 "$f"
    C=$f
}

# send CONF TAG [VAR=VALUE...] - m365-relay as the service user delivers
# a new message (subject TAG) from bob@contoso.test to TAG@example.net,
# with a fresh token store (the token request is made); rc, first, out
send() {
    local c=$1 tag=$2
    shift 2
    rm -rf "$T/state/tokens"
    make_msg "$T/m.$tag" "$tag"
    env "$@" setpriv --reuid="$RUID" --regid="$RGID" --init-groups \
	"$RELAY" -c "$c" -q "Q${tag^^}" -f bob@contoso.test -- \
	"$tag@example.net" <"$T/m.$tag" >"$T/out" 2>"$T/err"
    rc=$?
    first=$(head -n 1 "$T/out")
    out=$(cat "$T/out" "$T/err")
}

# delivered TAG - the emulator recorded a message with subject TAG
delivered() {
    [ "$(emu_ctl GET /_emu/sent | json_eval "len([m for m in d if m['subject'] == '$1'])")" = 1 ]
}

# counts NAME - "LOGIN-TUNNELS GRAPH-TUNNELS" of proxy NAME
counts() {
    echo "$(tunnels "$1" "$LOGIN") $(tunnels "$1" "$GRAPH")"
}

# ---- 1. proxy in [global]: token and Graph requests through it
conf global "proxy = http://127.0.0.1:$P1" ""
check "-n accepts proxy = in [global]" as_user "$RELAY" -n -c "$C"
t_match "m365-relay -n shows the proxy in use" "$(as_user "$RELAY" -n -c "$C" 2>&1)" \
    "^account app: proxy http://127\.0\.0\.1:$P1 \(proxy in \[global\]\)"
t_match "m365ctl check shows the proxy in use" "$(as_user "$CTL" -c "$C" check 2>&1)" \
    "account app: proxy http://127\.0\.0\.1:$P1 \(proxy in \[global\]\)"
send "$C" prx1
t_eq "global proxy: delivered (exit 0)" "$rc" 0
check "global proxy: the emulator has the message" delivered prx1
t_eq "global proxy: one tunnel to the login host, one to Graph" "$(counts p1)" "1 1"

# ---- 2. no_proxy: Graph goes direct
conf noproxy "proxy = http://127.0.0.1:$P1
no_proxy = example.org, .graph.microsoft.com" ""
: >"$T/p1.log"
send "$C" prx2
t_eq "no_proxy: delivered" "$rc" 0
t_eq "no_proxy: login through the proxy, Graph not" "$(counts p1)" "1 0"

# ---- 3. the account's proxy wins over [global]'s; none is direct
conf acctnone "proxy = http://127.0.0.1:$PG" "proxy = none"
: >"$T/p1.log"
send "$C" prx3
t_eq "[account] proxy = none over a [global] proxy that is down: delivered" "$rc" 0
conf acctp1 "proxy = http://127.0.0.1:$PG" "proxy = http://127.0.0.1:$P1"
send "$C" prx4
t_eq "[account] proxy over [global]'s: delivered" "$rc" 0
t_eq "[account] proxy: its tunnels" "$(counts p1)" "1 1"

# ---- 4. environment variables only when the key is unset
conf env "" ""
: >"$T/p1.log"
send "$C" prx5 "https_proxy=http://127.0.0.1:$P1"
t_eq "https_proxy without the key: delivered" "$rc" 0
t_eq "https_proxy without the key: through that proxy" "$(counts p1)" "1 1"
t_match "-n names the environment variable" \
    "$(https_proxy=http://u:secret@127.0.0.1:$P1 as_user "$RELAY" -n -c "$C" 2>&1)" \
    "account app: proxy http://\*\*\*@127\.0\.0\.1:$P1 \(environment variable https_proxy\)"
t_nomatch "-n never shows the password of an environment proxy URL" \
    "$(https_proxy=http://u:secret@127.0.0.1:$P1 as_user "$RELAY" -n -c "$C" 2>&1)" secret
: >"$T/p1.log"
send "$C" prx6 "HTTPS_PROXY=http://127.0.0.1:$P1" "no_proxy=graph.microsoft.com"
t_eq "HTTPS_PROXY + no_proxy from the environment: delivered" "$rc" 0
t_eq "no_proxy from the environment: Graph direct" "$(counts p1)" "1 0"
conf envnone "proxy = none" ""
: >"$T/p1.log"
send "$C" prx7 "https_proxy=http://127.0.0.1:$P1" "HTTPS_PROXY=http://127.0.0.1:$P1" \
    "all_proxy=http://127.0.0.1:$P1"
t_eq "proxy = none with https_proxy set: delivered" "$rc" 0
t_eq "proxy = none: the environment's proxy is not used (libcurl's own reading is off)" \
    "$(counts p1)" "0 0"
conf envkey "proxy = http://127.0.0.1:$P1" ""
send "$C" prx8 "https_proxy=http://127.0.0.1:$PG" "no_proxy=*"
t_eq "proxy = URL wins over https_proxy and no_proxy=* of the environment" "$rc" 0
t_eq "proxy = URL: its tunnels" "$(counts p1)" "1 1"

# ---- 5. proxy credentials
printf 'proxyuser:pa:ss word\n' >"$T/pcred"
printf 'proxyuser:wrong\n' >"$T/pbad"
chown "$RUSER" "$T/pcred" "$T/pbad"
chmod 600 "$T/pcred" "$T/pbad"
conf cred "proxy = http://127.0.0.1:$P2
proxy_credentials_file = $T/pcred" ""
send "$C" prx9
t_eq "proxy_credentials_file with the right user:password: delivered" "$rc" 0
t_eq "authenticated tunnels" "$(counts p2)" "1 1"
t_match "-n names the credentials file" "$(as_user "$RELAY" -n -c "$C" 2>&1)" \
    "credentials from $T/pcred"
t_nomatch "the password is in no output or log" "$(cat "$T/out" "$T/err" "$T/relay.log")" 'pa:ss'
conf credbad "proxy = http://127.0.0.1:$P2" "proxy_credentials_file = $T/pbad"
send "$C" prx10
t_eq "a wrong password: deferred (75)" "$rc" 75
t_match "a wrong password: 4.4.x naming proxy_credentials_file and the 407" "$first" \
    "^4\.4\.[0-9] .*proxy http://127\.0\.0\.1:$P2 .*proxy_credentials_file $T/pbad .*407"
conf crednone "proxy = http://127.0.0.1:$P2" ""
send "$C" prx11
t_eq "no credentials for a proxy that wants them: deferred (75)" "$rc" 75
t_match "no credentials: the text says to set proxy_credentials_file" "$first" \
    "^4\.4\.[0-9] .*asks for credentials \(HTTP 407\).*proxy_credentials_file"
chmod 644 "$T/pcred"
conf credopen "proxy = http://127.0.0.1:$P2
proxy_credentials_file = $T/pcred" ""
as_user "$RELAY" -n -c "$C" >"$T/n.out" 2>&1
t_eq "a world-readable credentials file: -n fails (78)" "$?" 78
t_match "-n names the file" "$(cat "$T/n.out")" "proxy_credentials_file: .*$T/pcred"
send "$C" prx12
t_eq "a world-readable credentials file: deferred (75), nothing sent" "$rc" 75
t_match "the text names the file" "$first" "^4\.[0-9.]+ .*proxy_credentials_file.*$T/pcred"
chmod 600 "$T/pcred"

# ---- 6. a proxy that is down or refuses the tunnel defers, never bounces
conf down "proxy = http://127.0.0.1:$PG" ""
send "$C" prx13
t_eq "proxy down: deferred (75)" "$rc" 75
t_match "proxy down: 4.4.x naming the proxy" "$first" \
    "^4\.4\.[0-9] .*cannot connect to the proxy http://127\.0\.0\.1:$PG \(proxy in \[global\]\)"
if delivered prx13; then bad "proxy down: a message was sent"; else ok "proxy down: nothing was sent"; fi
conf deny "proxy = http://127.0.0.1:$PD" ""
send "$C" prx14
t_eq "CONNECT refused for Graph: deferred (75)" "$rc" 75
t_match "CONNECT refused: 4.4.x, the proxy refused the tunnel to Graph" "$first" \
    "^4\.4\.[0-9] .*the proxy http://127\.0\.0\.1:$PD .*refused the tunnel to graph\.microsoft\.com \(CONNECT answered HTTP 403\)"
t_eq "CONNECT refused: the token still came through the proxy" "$(tunnels deny "$LOGIN")" 1

# ---- 7. ca_extra_file: system bundle + the inspecting proxy's CA
X=$T/pubca
mkdir -p "$X"
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 30 -keyout "$X/ca.key" \
    -out "$X/ca.pem" -subj "/CN=m365relay test public CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" >/dev/null 2>&1
openssl req -newkey rsa:2048 -nodes -keyout "$X/front.key" -out "$X/front.csr" \
    -subj "/CN=login.microsoftonline.com" >/dev/null 2>&1
printf 'subjectAltName=DNS:login.microsoftonline.com\nextendedKeyUsage=serverAuth\n' >"$X/ext"
openssl x509 -req -in "$X/front.csr" -CA "$X/ca.pem" -CAkey "$X/ca.key" \
    -CAcreateserial -days 30 -sha256 -extfile "$X/ext" -out "$X/front.pem" >/dev/null 2>&1 ||
    bad "the public test CA signs the login host's certificate"
# The system CA store with the public test CA in it, both as a file
# (ca-certificates.crt) and by hash (the directory): a private copy of
# /etc/ssl/certs mounted over it in this mount namespace.
SYSCERTS=/etc/ssl/certs
mkdir -p "$T/syscerts"
cp -a "$SYSCERTS/." "$T/syscerts/"
cp "$X/ca.pem" "$T/syscerts/m365relay-test-public-ca.pem"
ln -s m365relay-test-public-ca.pem "$T/syscerts/$(openssl x509 -hash -noout -in "$X/ca.pem").0"
cat "$X/ca.pem" >>"$T/syscerts/ca-certificates.crt"
chmod 755 "$T/syscerts"
chmod 644 "$T/syscerts/ca-certificates.crt" "$T/syscerts/m365relay-test-public-ca.pem"
mount --bind "$T/syscerts" "$SYSCERTS" || bad "bind-mount a system CA store with the public test CA"
proxy_start front --tls-front "$X/front.pem" "$X/front.key" --upstream "127.0.0.1:$EMU_PORT"
FRONT=login.microsoftonline.com:$PORT
grep -v '^ca_file' "$BASE" | sed "s|^login_url = .*|login_url = https://$FRONT|" >"$T/tls.base"
BASE0=$BASE
BASE=$T/tls.base
conf tlsfile "proxy = http://127.0.0.1:$P1
ca_file = $CA_FILE" ""
send "$C" prx15
t_eq "ca_file = the proxy's CA only: the public login host fails, deferred" "$rc" 75
t_match "ca_file only: a certificate problem, through the proxy" "$first" \
    "^4\.[0-9.]+ .*(certificate|SSL).*through the proxy http://127\.0\.0\.1:$P1"
conf tlsnone "proxy = http://127.0.0.1:$P1" ""
send "$C" prx16
t_eq "system bundle only: Graph (the inspecting CA) fails, deferred" "$rc" 75
conf tlsextra "proxy = http://127.0.0.1:$P1
ca_extra_file = $CA_FILE" ""
: >"$T/p1.log"
send "$C" prx17
t_eq "ca_extra_file: system bundle + the proxy's CA, both hosts work" "$rc" 0
check "ca_extra_file: delivered" delivered prx17
t_eq "ca_extra_file: through the proxy (login front, Graph)" \
    "$(tunnels p1 "$FRONT") $(tunnels p1 "$GRAPH")" "1 1"
check "ca_extra_file: the login host was the public-CA front" grep -q '^FRONT accepted' "$T/front.log"
t_match "-n says what ca_extra_file does" "$(as_user "$RELAY" -n -c "$C" 2>&1)" \
    "CA certificates of ca_extra_file $CA_FILE are trusted in addition to the system bundle"
printf 'not a certificate\n' >"$T/junk.pem"
chmod 644 "$T/junk.pem"
conf tlsjunk "ca_extra_file = $T/junk.pem" ""
send "$C" prx18
t_eq "a ca_extra_file without a certificate: deferred" "$rc" 75
t_match "it names the file" "$out" "ca_extra_file $T/junk.pem holds no PEM certificate"
BASE=$BASE0
umount "$SYSCERTS"

# ---- 8. m365-milter in deliver mode through the proxy
mkdir -p "$T/run" "$T/spool"
chown "$RUSER" "$T/run" "$T/spool"
chmod 700 "$T/run" "$T/spool"
# milter_run NAME TAG WANT - m365-milter in deliver mode with $C + a
# [milter] section, one message (subject TAG-1) through miltertest's
# t-warm.lua, which wants the reply WANT (discard: sent; tempfail)
milter_run() {
    local name=$1 tag=$2 want=$3 pid
    printf '\n[milter]\nmode = deliver\ntmp_dir = %s\n' "$T/spool" >>"$C"
    rm -rf "$T/state/tokens"
    "$MILTER" -f -c "$C" -p "unix:$T/run/$name.sock" -P "$T/run/$name.pid" \
	>"$T/$name.out" 2>&1 &
    pid=$!
    t_bg_pid "$pid"
    if ! wait_until 10 test -S "$T/run/$name.sock"; then
	bad "m365-milter ($name) starts"
	sed 's/^/#   /' "$T/$name.out"
	return
    fi
    if miltertest -D "SOCK=unix:$T/run/$name.sock" -D "LUADIR=$top_srcdir/tests/milter" \
	-D N=1 -D "TAG=$tag" -D "WANT=$want" -s "$top_srcdir/tests/milter/t-warm.lua" \
	>"$T/mt.out" 2>&1 && ! grep -q '^FAIL' "$T/mt.out"; then
	ok "milter deliver mode ($name): the reply is $want"
    else
	bad "milter deliver mode ($name): miltertest t-warm.lua wants $want"
	sed 's/^/#   /' "$T/mt.out" "$T/$name.out"
    fi
    kill "$pid" 2>/dev/null
}

conf milter "proxy = http://127.0.0.1:$P1" ""
: >"$T/p1.log"
milter_run milter prxmilter discard
check "milter deliver mode: the emulator has it" delivered prxmilter-1
t_eq "milter deliver mode: token and Graph requests through the proxy" "$(counts p1)" "1 1"
conf milterdown "proxy = http://127.0.0.1:$PG" ""
milter_run milterdown prxmdown tempfail
if delivered prxmdown-1; then bad "milter, proxy down: sent"; else ok "milter, proxy down: nothing sent"; fi
check "milter, proxy down: the log names the proxy" \
    grep -q "PRXMDOWNX1: .*status=deferred.*cannot connect to the proxy http://127.0.0.1:$PG" "$T/relay.log"

# ---- 9. m365-fetch through the proxy
QPORT=$((20000 + RANDOM % 20000))
echo ok >"$T/q.mode"
: >"$T/q.log"
"$PYTHON" "$top_srcdir/tests/quirk-smtp.py" "$QPORT" "$T/q.mode" "$T/q.log" 2>"$T/q.err" &
t_bg_pid $!
wait_port "$QPORT" || bad "the test SMTP server listens"
conf fetch "proxy = http://127.0.0.1:$P1" ""
printf '\n[source in]\naccount = app\nmailbox = bob@contoso.test\nfolder = inbox\n' >>"$C"
printf 'deliver_to = smtp://127.0.0.1:%s\nrecipients = someone@local.test\n' "$QPORT" >>"$C"
make_msg "$T/in.eml" prxfetch
emu_put_message bob@contoso.test "$T/in.eml" >/dev/null || bad "a message in bob's inbox"
rm -rf "$T/state/tokens"
: >"$T/p1.log"
as_user "$FETCH" -c "$C" --once in >"$T/fetch.out" 2>&1
t_eq "m365-fetch through the proxy: the round succeeds" "$?" 0
check "m365-fetch: the message reached the MTA" grep -q '^accepted' "$T/q.log"
t_eq "m365-fetch: token and Graph requests through the proxy" \
    "$(tunnels p1 "$LOGIN") $([ "$(tunnels p1 "$GRAPH")" -ge 1 ] && echo yes)" "1 yes"
sed "s|^proxy = .*|proxy = http://127.0.0.1:$PG|" "$C" >"$T/fetchdown.conf"
chmod 644 "$T/fetchdown.conf"
rm -rf "$T/state/tokens"
as_user "$FETCH" -c "$T/fetchdown.conf" --once in >"$T/fetch.out" 2>&1
t_eq "m365-fetch, proxy down: the round defers (75)" "$?" 75
check "m365-fetch, proxy down: it names the proxy" \
    grep -q "cannot connect to the proxy http://127.0.0.1:$PG" "$T/fetch.out" "$T/relay.log"

t_done
