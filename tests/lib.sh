# lib.sh - shell helpers shared by every m365relay script test
#
# Usage (bash):   . "$top_srcdir/tests/lib.sh"
#
#   t_init NAME            fresh work dir $T, cleanup trap, PASS=0 FAIL=0
#   ok MSG | bad MSG       record a result ("ok - MSG" / "not ok - MSG")
#   check MSG CMD...       run CMD; ok when it exits 0 (output shown on failure)
#   skip_all REASON        skip the whole test (exit 77, automake's SKIP)
#   t_done                 "N passed, N failed"; exit 0 only if FAIL=0
#   t_bg_pid PID           kill PID at cleanup
#   wait_until SECS CMD... poll CMD every 0.1 s until it succeeds
#   json_eval EXPR         evaluate a Python expression over d = JSON on stdin
#
#   emu_setup              certificates, $T/emu.json, start the emulator
#   emu_ctl METHOD PATH [JSON]   call the emulator (control API or any path)
#   emu_sent_count, emu_stat KEY, emu_user_code, emu_stop
#   emu_fault JSON         queue one fault (a JSON object) at the emulator
#   ctl_login LOGFILE      device-code sign-in of account deleg, approved in the emulator
#   emu_put_message MB FILE [FOLDER [JSON-EXTRA]]   file a message; print its id
#   emu_gen_messages MB SIZE [COUNT [FOLDER]]       generated messages; print ids
#   emu_mailbox MB         the mailbox as JSON (folders with their messages)
#   emu_mb_eval MB EXPR    json_eval EXPR over the mailbox JSON, with helpers
#                          f(NAME) = folder by well-known or display name
#   emu_folder_add MB NAME create a folder; print its id
#   write_conf FILE        an m365relay.conf for the emulator
#   t_eq MSG GOT WANT | t_match MSG TEXT ERE | t_nomatch MSG TEXT ERE
#
#   relay_setup NAME       t_init, emulator, CONF=$T/relay.conf, LOG
#   relay INPUT ARGS...    run m365-relay; sets rc, first, out
#   emu_reset              forget sent mail, stats, faults, throttle state
#   relay_burst N TAG MSG CONF   N relays at once (QTAGi to TAGi@example.net)
#
#   sys_user NAME          a system user (useradd), when missing
#   wait_port PORT         wait until 127.0.0.1:PORT listens (10 s)
#   wait_grep SECS ERE FILE   wait until a line of FILE matches
#   e2e_conf USER          emulator, CONF=$T/m365relay.conf, [global] user
#   conf_real_hosts FILE   login_url/graph_url with Microsoft's host names
#   e2e_user USER          create USER; $T, $CONF, state, key, log for it
#   make_msg FILE SUBJECT HEADER...   CRLF message with a body-marker line
#   smtp_send PORT SENDER RCPTS FILE  swaks; print the MTA's queue id
#   send_msg PORT SENDER RCPTS FILE SUBJECT HEADER...  make_msg, smtp_send
#   swaks_said FILE ERE    the swaks transcript has a matching reply
#   sent_count SUBJECT, wait_sent SUBJECT N [SECS]   mail the emulator got
#   sent_check SUBJECT KEY=VALUE...   assert the emulator's records
#   flush_until_sent FLUSH SUBJECT N SECS   queue runs until N arrived
#   term_wait PID [SECS]   SIGTERM, then SIGKILL after SECS; TW_RC
#   filter_conf FILE UNKNOWN PORT DOMAIN   $CONF + [milter] filter mode
#   sized_msg FILE SIZE FROM TO SUBJECT   a text message of SIZE bytes
#   bench_die MSG          a benchmark stops: "SCRIPT: MSG", exit 1
#   emu_drafts MB          drafts left in the Drafts folder of MB
#   emu_sent_mime N        .eml of the Nth recorded message (-1: the last)
#   mime_parts FILE        decoded leaf parts: sha256 size type disposition name cid
#   mime_header FILE NAME  a top-level header field of a MIME file
#
# Works under "set -u".  Only 127.0.0.1 is contacted.

: "${top_srcdir:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
: "${top_builddir:=$top_srcdir}"
top_srcdir=$(cd "$top_srcdir" && pwd)
top_builddir=$(cd "$top_builddir" && pwd)
export top_srcdir top_builddir
export RELAY=$top_builddir/relay/m365-relay
# The real interpreter (skips wrapper scripts such as pyenv shims, which
# cost a noticeable startup time on every JSON check).
: "${PYTHON:=$(python3 -c 'import sys; print(sys.executable or "python3")' 2>/dev/null || echo python3)}"
export CTL=$top_builddir/ctl/m365ctl

EMU_APP_DELEG=11111111-0000-0000-0000-000000000001
EMU_APP_SECRET=11111111-0000-0000-0000-000000000002
EMU_APP_CERT=11111111-0000-0000-0000-000000000003
EMU_TENANT=contoso.test
EMU_TENANT_ID=11111111-2222-3333-4444-555555555555

PASS=0
FAIL=0
T=
T_NAME=
_t_pids=()
EMU_PID=

# t_cleanup - kill what the test started; remove $T unless it failed
t_cleanup() {
    local rc=$? pid
    for pid in ${_t_pids[@]+"${_t_pids[@]}"}; do
        kill "$pid" 2>/dev/null || :
    done
    for pid in ${_t_pids[@]+"${_t_pids[@]}"}; do
        wait "$pid" 2>/dev/null || :
    done
    _t_pids=()
    if [ -n "$T" ] && [ -d "$T" ]; then
        if [ "$FAIL" -ne 0 ] || [ -n "${KEEP_TMP:-}" ]; then
            echo "# work directory kept: $T"
        else
            rm -rf "$T"
        fi
    fi
    return $rc
}

# t_init NAME - fresh work directory and cleanup trap
t_init() {
    T_NAME=$1
    PASS=0
    FAIL=0
    T=$(mktemp -d "${TMPDIR:-/tmp}/m365-$T_NAME.XXXXXX") || {
        echo "cannot create a temporary directory under ${TMPDIR:-/tmp}" >&2
        exit 99
    }
    chmod 700 "$T"
    export T
    trap t_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    echo "# $T_NAME: work directory $T"
}

# t_bg_pid PID - remember a background process to kill at cleanup
t_bg_pid() {
    _t_pids+=("$1")
}

ok() {
    PASS=$((PASS + 1))
    echo "ok - $*"
}

bad() {
    FAIL=$((FAIL + 1))
    echo "not ok - $*"
}

# check MSG CMD... - ok when CMD exits 0; on failure show its output
check() {
    local msg=$1 out rc
    shift
    out=$("$@" 2>&1)
    rc=$?
    if [ $rc -eq 0 ]; then
        ok "$msg"
    else
        bad "$msg (exit $rc: $*)"
        [ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/#   /'
    fi
    return 0
}

# skip_all REASON - skip the whole test (automake: exit 77)
skip_all() {
    echo "1..0 # SKIP $*"
    exit 77
}

# t_done - summary line; exit 0 only when something passed and nothing failed
t_done() {
    echo "$PASS passed, $FAIL failed"
    if [ "$FAIL" -eq 0 ] && [ "$PASS" -gt 0 ]; then
        exit 0
    fi
    exit 1
}

# wait_until SECS CMD... - poll CMD every 0.1 s; 1 on timeout
wait_until() {
    local deadline=$(( $(date +%s%N) / 1000000 + ${1%.*} * 1000 ))
    shift
    while ! "$@" >/dev/null 2>&1; do
        if [ $(( $(date +%s%N) / 1000000 )) -ge $deadline ]; then
            return 1
        fi
        sleep 0.1
    done
    return 0
}

# json_eval EXPR - print EXPR evaluated over d (JSON read from stdin)
json_eval() {
    "$PYTHON" -c '
import json, sys
d = json.load(sys.stdin)
v = eval(sys.argv[1], {"d": d, "json": json, "sys": sys})
print(v if isinstance(v, str) else json.dumps(v))
' "$1"
}

# emu_setup - certificates, configuration, start the emulator
emu_setup() {
    local tool
    for tool in python3 openssl curl; do
        command -v "$tool" >/dev/null 2>&1 ||
            skip_all "$tool is not installed (Debian: apt-get install $tool)"
    done
    [ -n "$T" ] || { echo "emu_setup: call t_init first" >&2; exit 99; }
    "$top_srcdir/tests/emulator/mkcerts.sh" "$T/certs" || {
        bad "mkcerts.sh created the test certificates"
        t_done
    }
    CA_FILE=$T/certs/ca.pem
    EMU_DATA=$T/emu
    (umask 077 && openssl rand -hex 24 | tr -d '\n' >"$T/secret")
    chmod 600 "$T/secret"
    (umask 077 && cat >"$T/emu.json" <<EOF
{
  "tenant": "$EMU_TENANT",
  "tenant_id": "$EMU_TENANT_ID",
  "access_token_lifetime": 3600,
  "device_interval": 1,
  "apps": {
    "$EMU_APP_DELEG": {"public": true},
    "$EMU_APP_SECRET": {"secret": "$(cat "$T/secret")", "roles": ["Mail.Send", "Mail.ReadWrite"]},
    "$EMU_APP_CERT": {"certificate": "$T/certs/client.pem", "roles": ["Mail.Send", "Mail.ReadWrite"]}
  },
  "users": {
    "alice@contoso.test": {"display_name": "Alice", "send_as": ["shared@contoso.test"]},
    "bob@contoso.test": {"display_name": "Bob"},
    "shared@contoso.test": {"display_name": "Shared", "shared": true, "full_access": ["alice@contoso.test"]},
    "onprem@contoso.test": {"display_name": "On-premises user", "rest_disabled": true}
  },
  "login_user": "alice@contoso.test"
}
EOF
    )
    "$PYTHON" "$top_srcdir/tests/emulator/m365emu.py" --port 0 \
        --cert "$T/certs/server.pem" --key "$T/certs/server.key" \
        --data "$EMU_DATA" --config "$T/emu.json" >"$T/emu.out" 2>&1 &
    EMU_PID=$!
    t_bg_pid "$EMU_PID"
    if ! wait_until 15 grep -q '^m365emu ready on ' "$T/emu.out"; then
        sed 's/^/#   /' "$T/emu.out"
        bad "the emulator starts (see $T/emu.out)"
        t_done
    fi
    EMU_PORT=$(sed -n 's|^m365emu ready on https://127\.0\.0\.1:\([0-9]*\).*|\1|p' \
        "$T/emu.out" | head -n 1)
    EMU_URL=https://127.0.0.1:$EMU_PORT
    export EMU_PORT EMU_URL CA_FILE EMU_DATA
}

# emu_curl ARGS... - curl to the emulator with its CA, never a proxy
emu_curl() {
    curl -sS --noproxy '*' --cacert "$CA_FILE" "$@"
}

# emu_ctl METHOD PATH [JSON] - print the response body; 1 on HTTP errors
emu_ctl() {
    local method=$1 path=$2
    if [ $# -ge 3 ]; then
        emu_curl --fail-with-body -X "$method" \
            -H 'Content-Type: application/json' --data-binary "$3" \
            "$EMU_URL$path"
    else
        emu_curl --fail-with-body -X "$method" "$EMU_URL$path"
    fi
}

# emu_sent_count - number of messages the emulator accepted
emu_sent_count() {
    emu_ctl GET /_emu/sent | json_eval 'len(d)'
}

# emu_stat KEY - one counter of /_emu/stats (KEY may be "by_grant.x"); 0 if unset
emu_stat() {
    emu_ctl GET /_emu/stats | "$PYTHON" -c '
import json, sys
d = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    d = d.get(k, 0) if isinstance(d, dict) else 0
print(d)
' "$1"
}

# emu_user_code - the user_code of the newest pending device code (or fail)
emu_user_code() {
    emu_ctl GET /_emu/device | "$PYTHON" -c '
import json, sys
d = [x for x in json.load(sys.stdin) if x["state"] == "pending"]
if not d:
    sys.exit(1)
print(d[-1]["user_code"])
'
}

# emu_put_message MB FILE [FOLDER [JSON-EXTRA]] - file the MIME bytes of FILE
# in mailbox MB (folder default inbox; JSON-EXTRA e.g. '"isRead": true');
# print the new message id
emu_put_message() {
    local mb=$1 file=$2 folder=${3:-inbox} extra=${4:-} req
    req=$(mktemp "${T:-${TMPDIR:-/tmp}}/emu-put.XXXXXX") || return 1
    {
        printf '{"folder": "%s", %s"mime_b64": "' "$folder" "${extra:+$extra, }"
        openssl base64 -A <"$file"
        printf '"}'
    } >"$req"
    emu_curl --fail-with-body -X POST -H 'Content-Type: application/json' \
        --data-binary "@$req" "$EMU_URL/_emu/mailbox/$mb/messages" |
        json_eval 'd["id"]'
    local rc=${PIPESTATUS[0]}
    rm -f "$req"
    return "$rc"
}

# emu_gen_messages MB SIZE [COUNT [FOLDER]] - generate COUNT messages of
# about SIZE bytes in MB; print their ids, one a line
emu_gen_messages() {
    emu_ctl POST "/_emu/mailbox/$1/messages" \
        "{\"folder\": \"${4:-inbox}\", \"size\": $2, \"count\": ${3:-1}}" |
        json_eval '"\n".join(m["id"] for m in d.get("messages", [d]))'
}

# emu_mailbox MB - the mailbox as JSON
emu_mailbox() {
    emu_ctl GET "/_emu/mailbox/$1"
}

# emu_mb_eval MB EXPR - evaluate EXPR over the mailbox JSON d; f(NAME) is
# the folder with that well-known or display name (case-insensitive)
emu_mb_eval() {
    emu_mailbox "$1" | "$PYTHON" -c '
import json, sys
d = json.load(sys.stdin)
def f(name):
    for x in d["folders"]:
        if name.lower() in (str(x["wellKnownName"]).lower(), x["displayName"].lower()):
            return x
    raise SystemExit("no folder %r" % name)
v = eval(sys.argv[1], {"d": d, "f": f, "json": json, "sys": sys})
print(v if isinstance(v, str) else json.dumps(v))
' "$2"
}

# emu_folder_add MB NAME - create a folder (or find it); print its id
emu_folder_add() {
    emu_ctl POST "/_emu/mailbox/$1/folders" "{\"displayName\": \"$2\"}" |
        json_eval 'd["id"]'
}

# emu_fault JSON - queue one fault (a JSON object) at the emulator: the
# next matching request gets it (tests/emulator/README.md)
emu_fault() {
    emu_ctl POST /_emu/faults "[$1]" >/dev/null
}

# emu_stop - stop the emulator
emu_stop() {
    [ -z "$EMU_PID" ] || term_wait "$EMU_PID"
    EMU_PID=
}

# write_conf FILE - m365relay.conf with three accounts for the emulator
write_conf() {
    local file=$1
    mkdir -p "$T/state"
    chmod 700 "$T/state"
    chmod 600 "$T/secret" "$T/certs/client.key"
    cat >"$file" <<EOF
# m365relay.conf for the Microsoft 365 emulator (written by tests/lib.sh)
[global]
login_url = $EMU_URL
graph_url = $EMU_URL
ca_file = $CA_FILE
state_dir = $T/state
log_file = $T/relay.log
# A send that may have been accepted is looked for in Sent Items, then
# sent again at once when not there (the emulator files the copy at
# once); tests/e2e/test-once*.sh test the default wait.
sent_items_wait = 0

[account deleg]
tenant = $EMU_TENANT
client_id = $EMU_APP_DELEG
auth = delegated
mailbox = alice@contoso.test
senders = alice@contoso.test @delegated.test

[account app]
tenant = $EMU_TENANT
client_id = $EMU_APP_SECRET
auth = secret
secret_file = $T/secret
mailbox = bob@contoso.test
senders = @contoso.test
default = yes

[account cert]
tenant = $EMU_TENANT
client_id = $EMU_APP_CERT
auth = certificate
certificate_file = $T/certs/client.pem
key_file = $T/certs/client.key
mailbox = shared@contoso.test
senders = @cert.test
EOF
}

# ctl_login LOGFILE - device-code sign-in of account deleg ($CTL with
# $CONF), approved as alice@contoso.test through the emulator's control API
ctl_login() {
    local out=$1 lp code="" i
    timeout 60 "$CTL" -c "$CONF" login deleg --device-code > "$out" 2>&1 &
    lp=$!
    for ((i = 0; i < 200; i++)); do
	code=$(emu_user_code 2>/dev/null) && [ -n "$code" ] && grep -qF -- "$code" "$out" && break
	code=""
	kill -0 "$lp" 2>/dev/null || break
	sleep 0.1
    done
    if [ -z "$code" ]; then
	echo "  ctl_login: no device code shown by m365ctl:" >&2
	sed 's/^/    /' "$out" >&2
	kill "$lp" 2>/dev/null
	wait "$lp" 2>/dev/null
	return 1
    fi
    emu_ctl POST /_emu/device/approve \
	"{\"user_code\": \"$code\", \"user\": \"alice@contoso.test\"}" >/dev/null
    if ! wait "$lp"; then
	echo "  ctl_login: m365ctl login failed:" >&2
	sed 's/^/    /' "$out" >&2
	return 1
    fi
}

# t_eq MSG GOT WANT - ok when the two strings are equal
t_eq() {
    if [ "$2" = "$3" ]; then
        ok "$1"
    else
        bad "$1: got [$2], want [$3]"
    fi
}

# t_match MSG TEXT REGEX - ok when TEXT matches the extended regex
t_match() {
    if printf '%s\n' "$2" | grep -Eq -- "$3"; then
        ok "$1"
    else
        bad "$1: /$3/ not in: $2"
    fi
}

# t_nomatch MSG TEXT REGEX - ok when TEXT does not match the regex
t_nomatch() {
    if printf '%s\n' "$2" | grep -Eq -- "$3"; then
        bad "$1: /$3/ in: $2"
    else
        ok "$1"
    fi
}

# ---------------------------------------------------- m365-relay scripts

# relay_setup NAME - t_init NAME, skip without the relay, start the
# emulator; CONF ($T/relay.conf, write_conf) and LOG (its log_file); as
# root the relay may run (M365RELAY_ALLOW_ROOT=1)
relay_setup() {
    t_init "$1"
    [ -x "$RELAY" ] || skip_all "$RELAY not built (run make first)"
    emu_setup
    CONF=$T/relay.conf
    write_conf "$CONF"
    LOG=$T/relay.log
    if [ "$(id -u)" = 0 ]; then
        export M365RELAY_ALLOW_ROOT=1
    fi
}

# relay INPUT ARGS... - run m365-relay on INPUT; sets rc, first (the
# first line of stdout) and out (stdout, then stderr)
relay() {
    local in=$1
    shift
    "$RELAY" "$@" <"$in" >"$T/out" 2>"$T/err"
    rc=$?
    first=$(head -n 1 "$T/out")
    out=$(cat "$T/out" "$T/err")
}

# emu_reset - forget recorded messages, stats, faults, throttle state and
# the send ledger (state_dir/throttle/, throttle.h; state_dir/ledger/,
# ledger.h): the next case may send the same message again
emu_reset() {
    emu_ctl POST /_emu/reset '{}' >/dev/null
    rm -f "$T"/state/throttle/* "$T"/state/ledger/* 2>/dev/null
}

# relay_burst N TAG MSG CONF - N relays at once, each delivering MSG from
# bob@contoso.test to TAGi@example.net with queue id QTAGi (TAG in upper
# case), output in $T/TAGi.out, i from 0; codes: their exit codes in order
relay_burst() {
    local n=$1 tag=$2 msg=$3 conf=$4 i
    local -a pids=()
    for ((i = 0; i < n; i++)); do
        "$RELAY" -c "$conf" -q "Q${tag^^}$i" -f bob@contoso.test -- \
            "$tag$i@example.net" <"$msg" >"$T/$tag$i.out" 2>&1 &
        pids[i]=$!
    done
    codes=""
    for ((i = 0; i < n; i++)); do
        wait "${pids[i]}"
        codes="$codes$?"
    done
}

# ------------------------------------------- real MTAs (tests/e2e, bench)

# sys_user NAME - create a system user without home and shell when missing
sys_user() {
    id "$1" >/dev/null 2>&1 && return 0
    useradd --system --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin "$1" ||
        { echo "sys_user: cannot create system user $1 (useradd failed)" >&2; return 1; }
}

# wait_grep SECS ERE FILE - wait up to SECS until a line of FILE matches
# ERE; says so on stderr when none did
wait_grep() {
    wait_until "$1" grep -Eq -- "$2" "$3" && return 0
    echo "wait_grep: no line of $3 matches '$2' after $1 s" >&2
    return 1
}

# wait_port PORT - wait up to 10 s until something listens on 127.0.0.1:PORT
wait_port() {
    wait_until 10 sh -c "ss -Hltn 'sport = :$1' | grep -q ." && return 0
    echo "wait_port: nothing listens on 127.0.0.1:$1 after 10 s" >&2
    return 1
}

# e2e_conf USER - start the emulator, write CONF ($T/m365relay.conf,
# write_conf) with "user = USER" in [global]: the relay, the milter and
# m365-fetch drop to USER
e2e_conf() {
    emu_setup || return 1
    CONF=$T/m365relay.conf
    write_conf "$CONF"
    sed -i -e "s|^[[:space:]]*\[global\][[:space:]]*$|[global]\nuser = $1|" "$CONF"
}

# conf_real_hosts FILE - login_url and graph_url of FILE with Microsoft's
# host names on the emulator's port (a private /etc/hosts maps them to
# 127.0.0.1; the test certificate names them), so that logs name them
conf_real_hosts() {
    sed -i -e "s|^[[:space:]]*login_url[[:space:]]*=.*|login_url = https://login.microsoftonline.com:$EMU_PORT|" \
        -e "s|^[[:space:]]*graph_url[[:space:]]*=.*|graph_url = https://graph.microsoft.com:$EMU_PORT|" "$1"
}

# e2e_user USER - (as root) create USER when missing (sys_user) and let
# it, as it runs the relay, the milter or m365-fetch, reach $T, read
# $CONF and the certificates, and own the state directory, the secret,
# the key and $T/relay.log; 1 when USER cannot be created
e2e_user() {
    sys_user "$1" || return 1
    chmod 755 "$T" "$T/certs"
    chmod 644 "$CONF" "$T/certs/ca.pem" "$T/certs/client.pem"
    mkdir -p "$T/state"
    chown -R "$1" "$T/state"
    chmod 700 "$T/state"
    chown "$1" "$T/secret" "$T/certs/client.key"
    chmod 600 "$T/secret" "$T/certs/client.key"
    touch "$T/relay.log"
    chown "$1" "$T/relay.log"
    chmod 640 "$T/relay.log"
}

# make_msg FILE SUBJECT HEADER... - a message with CRLF line ends: Date,
# a Message-ID (none when MAKE_MSG_NO_ID is set: give one as a HEADER),
# the HEADERs, Subject; the body names the subject and has the line
# body-marker-SUBJECT (blanks as "-")
make_msg() {
    local f=$1 subj=$2 h
    shift 2
    {
        printf 'Date: %s\r\n' "$(date -R)"
        [ -n "${MAKE_MSG_NO_ID:-}" ] ||
            printf 'Message-ID: <%s.%s@e2e.test>\r\n' "$(date +%s%N)" "$RANDOM"
        for h in "$@"; do printf '%s\r\n' "$h"; done
        printf 'Subject: %s\r\n' "$subj"
        printf 'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n'
        printf 'Body for %s.\r\nbody-marker-%s\r\n' "$subj" "${subj// /-}"
    } >"$f"
}

# smtp_send PORT SENDER RCPTS FILE - submit FILE with swaks to
# 127.0.0.1:PORT (RCPTS: comma list); the transcript goes to FILE.swaks;
# prints the queue id when the MTA accepted it (Postfix "queued as ID",
# Sendmail "ID Message accepted")
smtp_send() {
    swaks --server "127.0.0.1:$1" --from "$2" --to "$3" --data "@$4" >"$4.swaks" 2>&1
    sed -n -e 's/.*queued as \([0-9A-Za-z]*\).*/\1/p' \
        -e 's/.*<- *250 2\.0\.0 \([A-Za-z0-9]*\) Message accepted.*/\1/p' \
        "$4.swaks" | tail -n 1
}

# send_msg PORT SENDER RCPTS FILE SUBJECT HEADER... - make_msg FILE
# SUBJECT HEADER..., then smtp_send PORT SENDER RCPTS FILE
send_msg() {
    local port=$1 sender=$2 rcpts=$3 file=$4
    shift 4
    make_msg "$file" "$@"
    smtp_send "$port" "$sender" "$rcpts" "$file"
}

# swaks_said FILE ERE - the transcript of smtp_send FILE has a server
# reply matching ERE
swaks_said() {
    grep -Eq -- "^<[-*]+ +$2" "$1.swaks"
}

# sent_count SUBJECT - messages with that subject the emulator accepted
sent_count() {
    emu_ctl GET /_emu/sent | "$PYTHON" -c '
import json, sys
print(sum(1 for r in json.load(sys.stdin) if r.get("subject") == sys.argv[1]))' "$1"
}

# sent_ge SUBJECT N - at least N messages with SUBJECT arrived
sent_ge() {
    [ "$(sent_count "$1")" -ge "$2" ]
}

# wait_sent SUBJECT N [SECS] - wait (20 s) until N messages with SUBJECT
# arrived
wait_sent() {
    wait_until "${3:-20}" sent_ge "$1" "$2" ||
        { echo "  $(sent_count "$1") of $2 messages with subject '$1'" >&2; return 1; }
}

# sent_check SUBJECT KEY=VALUE... - assert the emulator's records with
# SUBJECT (the recorded recipient addresses are compared as they are):
#   count=N            exactly N records
#   rcpts=A,B|C        the recipient sets, one per record, any order
#   from=ADDR          every record's From address
#   mailbox=ADDR       every record's sending mailbox
#   client_id=ID       every record's client id
#   to=A,B / cc=A,B    every record's To / Cc contains these
#   body=TEXT          every record's MIME bytes contain TEXT
#   never=A,B          no record (any subject) names these recipients
sent_check() {
    local subj=$1
    shift
    emu_ctl GET /_emu/sent >"$T/sent.json" || { echo "  cannot read /_emu/sent" >&2; return 1; }
    "$PYTHON" - "$T/sent.json" "$subj" "$@" <<'EOF'
import json, sys

recs_all = json.load(open(sys.argv[1]))
subj = sys.argv[2]
recs = [r for r in recs_all if r.get("subject") == subj]
errors = []

def addrs(v):
    return sorted(a.strip().lower() for a in v.split(",") if a.strip())

for arg in sys.argv[3:]:
    key, _, val = arg.partition("=")
    if key == "count":
        if len(recs) != int(val):
            errors.append("%d records, want %s" % (len(recs), val))
    elif key == "rcpts":
        want = sorted(addrs(s) for s in val.split("|"))
        got = sorted(sorted(r.get("recipients", [])) for r in recs)
        if got != want:
            errors.append("recipient sets %s, want %s" % (got, want))
    elif key in ("from", "mailbox", "client_id"):
        for r in recs:
            if str(r.get(key, "")).lower() != val.lower():
                errors.append("%s %r, want %r" % (key, r.get(key), val))
    elif key in ("to", "cc"):
        for r in recs:
            have = [x.lower() for x in r.get(key, [])]
            for a in addrs(val):
                if a not in have:
                    errors.append("%s %s lacks %s" % (key, have, a))
    elif key == "body":
        for r in recs:
            data = open(r["eml_path"], "rb").read()
            if val.encode() not in data:
                errors.append("MIME of record %s lacks %r" % (r.get("seq"), val))
    elif key == "never":
        for a in addrs(val):
            for r in recs_all:
                if a in [x.lower() for x in r.get("recipients", [])]:
                    errors.append("record %s (subject %r) went to %s" % (r.get("seq"), r.get("subject"), a))
    else:
        errors.append("sent_check: unknown key " + key)
for e in errors:
    print("  sent_check '%s': %s" % (subj, e), file=sys.stderr)
sys.exit(1 if errors else 0)
EOF
}

# flush_until_sent FLUSH SUBJECT N SECS - run FLUSH (a queue run, e.g.
# pf_flush) every 0.5 s until N messages with SUBJECT arrived
flush_until_sent() {
    local flush=$1 limit=$(( $4 * 2 )) i
    for ((i = 0; i < limit; i++)); do
        sent_ge "$2" "$3" && return 0
        "$flush"
        sleep 0.5
    done
    sent_ge "$2" "$3"
}

# term_wait PID [SECS] - SIGTERM, wait up to SECS (10) for the end, then
# SIGKILL; the exit status in TW_RC
term_wait() {
    local i
    kill -TERM "$1" 2>/dev/null
    for ((i = 0; i < ${2:-10} * 10; i++)); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$1" 2>/dev/null
    wait "$1" 2>/dev/null
    TW_RC=$?
}

# filter_conf FILE UNKNOWN_SENDER PORT DOMAIN - FILE is $CONF plus a
# [milter] section: filter mode on inet:PORT@127.0.0.1, unknown_sender
# = UNKNOWN_SENDER, sender, From: and Reply-To: rewritten, a Message-ID
# @DOMAIN added, tmp_dir $T/spool
filter_conf() {
    cp "$CONF" "$1"
    cat >>"$1" <<EOF

[milter]
mode = filter
socket = inet:$3@127.0.0.1
unknown_sender = $2
rewrite_sender = yes
rewrite_from = yes
add_reply_to = yes
add_message_id = yes
message_id_domain = $4
tmp_dir = $T/spool
EOF
    chmod 644 "$1"
}

# bench_die MSG - a benchmark (not a test) stops: "SCRIPT: MSG" on
# stderr, exit 1
bench_die() {
    echo "${0##*/}: $*" >&2
    exit 1
}

# sized_msg FILE SIZE FROM TO SUBJECT - a plain text message (LF line
# ends, no Date or Message-ID) of exactly SIZE bytes (the header alone
# when it is longer)
sized_msg() {
    "$PYTHON" - "$@" <<'EOF'
import sys
path, size, frm, to, subj = sys.argv[1], int(sys.argv[2]), *sys.argv[3:6]
hdr = ("From: %s\nTo: %s\nSubject: %s\nMIME-Version: 1.0\n"
       "Content-Type: text/plain; charset=us-ascii\n\n" % (frm, to, subj))
line = "The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnop\n"
body = line * ((size - len(hdr)) // len(line) + 1)
with open(path, "w") as f:
    f.write(hdr + body[:max(0, size - len(hdr))])
EOF
}

# emu_drafts MB - the number of drafts left in the Drafts folder of MB
# (orphans of a failed or killed large-message send)
emu_drafts() {
    emu_ctl GET "/_emu/drafts?mailbox=$1" | json_eval 'len(d)'
}

# emu_sent_mime N - the .eml of the Nth message the emulator recorded
# (1 = the first, -1 = the last): for a draft sent with /send, the MIME
# the recipients get, rebuilt with its attachments
emu_sent_mime() {
    emu_ctl GET /_emu/sent | json_eval "d[$1 - 1 if $1 > 0 else $1][\"eml_path\"]"
}

# mime_parts FILE - one line per leaf part of the MIME message FILE, in
# order: "SHA256 SIZE TYPE DISPOSITION FILENAME CONTENT-ID" of the decoded
# content ("-" for what is absent; the filename RFC 2231/2047-decoded,
# blanks as "_").  Streams: a 150 MB message costs no 150 MB of memory.
mime_parts() {
    MIMEWALK_DIR=$top_srcdir/tests "$PYTHON" - "$1" <<'PYEOF'
import os, sys
sys.path.insert(0, os.environ["MIMEWALK_DIR"])
import mimewalk

with open(sys.argv[1], "rb") as f:
    for leaf in mimewalk.walk(f):
        h = leaf.h
        name = (h.get_filename() or "-").replace(" ", "_")
        print(leaf.sha.hexdigest(), leaf.size, h.get_content_type(),
              h.get_content_disposition() or "-", name,
              str(h.get("Content-ID") or "-").strip())
PYEOF
}

# mime_header FILE NAME - the value of the top-level header field NAME of
# the MIME message FILE (RFC 2047-decoded, unfolded; empty when absent)
mime_header() {
    "$PYTHON" - "$1" "$2" <<'PYEOF'
import email, email.policy, sys
with open(sys.argv[1], "rb") as f:
    m = email.message_from_binary_file(f, policy=email.policy.default)
print(m.get(sys.argv[2]) or "")
PYEOF
}

# emu_app_token - print an access token of the emulator's secret app
# (client credentials, after emu_setup and write_conf: $T/secret)
emu_app_token() {
    emu_curl -s -d "client_id=$EMU_APP_SECRET" \
	--data-urlencode "client_secret@$T/secret" \
	-d "scope=https://graph.microsoft.com/.default" \
	-d grant_type=client_credentials \
	"$EMU_URL/$EMU_TENANT/oauth2/v2.0/token" | json_eval 'd["access_token"]'
}
