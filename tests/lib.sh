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
#   ctl_login LOGFILE      device-code sign-in of account deleg, approved in the emulator
#   emu_put_message MB FILE [FOLDER [JSON-EXTRA]]   file a message; print its id
#   emu_gen_messages MB SIZE [COUNT [FOLDER]]       generated messages; print ids
#   emu_mailbox MB         the mailbox as JSON (folders with their messages)
#   emu_mb_eval MB EXPR    json_eval EXPR over the mailbox JSON, with helpers
#                          f(NAME) = folder by well-known or display name
#   emu_folder_add MB NAME create a folder; print its id
#   write_conf FILE        an m365relay.conf for the emulator
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

# emu_stop - stop the emulator
emu_stop() {
    if [ -n "$EMU_PID" ]; then
        kill "$EMU_PID" 2>/dev/null
        wait "$EMU_PID" 2>/dev/null
        EMU_PID=
    fi
    return 0
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
