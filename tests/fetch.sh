# tests/fetch.sh - shared pieces of the m365-fetch end-to-end tests
# (tests/e2e/test-fetch*.sh).  Source it from bash after tests/lib.sh and
# tests/postfix.sh, inside the namespaces (see tests/e2e/ns.sh):
#
#	fx_init NAME            t_init NAME (Postfix stopped at the end),
#	                        m365-fetch built, private /etc/hosts,
#	                        fx_conf; a failure ends the test
#	fx_conf                 emulator, $CONF ([global] user = $RUSER,
#	                        graph_url/login_url with the host names)
#	...append [source] sections to $CONF (fx_source)...
#	fx_postfix PORT         users, permissions, a private Postfix that
#	                        delivers local.test to Maildirs under
#	                        $PF_DIR/mail/ (unknown users refused 550
#	                        5.1.1, messages over 2 MB 552 5.3.4)
#
# Settings: RUSER (runs m365-fetch, default m365test), MBX (Maildir user,
# default m365mbx), FETCH (the binary).  Results: CONF, MD (the Maildir
# of $MBX), FX_FETCH (m365-fetch -c $CONF as $RUSER, an array).
# Helpers: fx_source, fetch, fetch_rc, fetch_within, mkin, imid, put,
# md_count, wait_md, mbb, msg_where, log_has, fx_quirk.

RUSER=${RUSER:-m365test}
MBX=${MBX:-m365mbx}
FETCH=${FETCH:-$top_builddir/fetch/m365-fetch}

# fx_init NAME - the start of a test-fetch*.sh inside the namespaces:
# t_init NAME (pf_stop at the end), m365-fetch is built, a private
# /etc/hosts, fx_conf; a failure ends the test
fx_init() {
    t_init "$1"
    trap 'pf_stop; t_cleanup' EXIT
    [ -x "$FETCH" ] || { bad "m365-fetch is built ($FETCH)"; t_done; }
    e2e_private_hosts
    fx_conf || { bad "emulator starts"; t_done; }
}

# fx_conf - start the emulator and write $CONF for it
fx_conf() {
    e2e_conf "$RUSER" || return 1
    conf_real_hosts "$CONF"
}

# fx_source NAME FOLDER TO AFTER [LINE...] - append a [source] of bob's
# mailbox (account app) delivering to $MBX@local.test: TO is a port
# (SMTP to 127.0.0.1:PORT) or another deliver_to; then the LINEs
fx_source() {
    local name=$1 folder=$2 to=$3 after=$4 l
    shift 4
    case $to in
    *[!0-9]*) ;;
    *) to=smtp://127.0.0.1:$to ;;
    esac
    {
	printf '\n[source %s]\naccount = app\nmailbox = bob@contoso.test\n' "$name"
	printf 'folder = %s\ndeliver_to = %s\n' "$folder" "$to"
	printf 'recipients = %s@local.test\nafter = %s\n' "$MBX" "$after"
	for l in "$@"; do printf '%s\n' "$l"; done
    } >> "$CONF"
}

# fx_postfix PORT [USER...] - users ($RUSER, $MBX and USER...), file
# permissions for $RUSER, and a private Postfix on 127.0.0.1:PORT
fx_postfix() {
    local port=$1 u
    shift
    e2e_user "$RUSER" || { echo "fx_postfix: cannot create user $RUSER" >&2; return 1; }
    for u in "$MBX" "$@"; do
	sys_user "$u" || { echo "fx_postfix: cannot create user $u" >&2; return 1; }
    done
    FX_FETCH=(setpriv --reuid="$RUSER" --regid="$(id -g "$RUSER")" --init-groups
	"$FETCH" -c "$CONF")
    PF_RELAY=$RELAY PF_CONF=$CONF pf_setup "$T/pf" "$port" $((port + 1)) || return 1
    postconf -c "$PF_ETC" -e "local_recipient_maps = proxy:unix:passwd.byname" \
	"message_size_limit = 2000000" "home_mailbox =" || return 1
    pf_start || return 1
    MD=$PF_DIR/mail/$MBX
}

NRUN=0
# fetch ARGS... - run m365-fetch as $RUSER; output in $T/fetch.N.out
# (FETCH_OUT names it), the exit code is returned
fetch() {
    NRUN=$((NRUN + 1))
    FETCH_OUT=$T/fetch.$NRUN.out
    "${FX_FETCH[@]}" "$@" > "$FETCH_OUT" 2>&1
}

# fetch_rc WANT MSG ARGS... - one round; ok when it exits with WANT
fetch_rc() {
    local want=$1 msg=$2 rc
    shift 2
    fetch "$@"
    rc=$?
    if [ "$rc" = "$want" ]; then
	ok "$msg"
    else
	bad "$msg (m365-fetch $* exited $rc, want $want)"
	sed 's/^/#   /' "$FETCH_OUT" | tail -n 20
    fi
}

# mkin FILE TAG [HEADER...] - a message with CRLF line ends, 8-bit UTF-8,
# a leading dot, "From " and trailing blanks in the body
mkin() {
    local f=$1 tag=$2 h
    shift 2
    {
	printf 'From: "Sender %s" <sender@example.org>\r\n' "$tag"
	printf 'To: bob@contoso.test\r\n'
	printf 'Subject: fetch %s\r\n' "$tag"
	printf 'Date: %s\r\n' "$(date -R)"
	printf 'Message-ID: <%s.%s.%s@fetch.test>\r\n' "$tag" "$(date +%s%N)" "$RANDOM"
	for h in "$@"; do printf '%s\r\n' "$h"; done
	printf 'MIME-Version: 1.0\r\n'
	printf 'Content-Type: text/plain; charset=utf-8\r\n'
	printf 'Content-Transfer-Encoding: 8bit\r\n\r\n'
	printf 'Body of %s: Gr\xc3\xbc\xc3\x9fe \xe2\x80\x93 \xc3\xbcn\xc3\xafc\xc3\xb6d\xc3\xa9.\r\n' "$tag"
	printf '.a line that starts with a dot\r\n.\r\n'
	printf 'From the start of a line\r\n'
	printf 'trailing blanks   \r\n\r\nend-of-%s\r\n' "$tag"
    } > "$f"
}

# imid FILE - the Message-ID of a message file
imid() {
    sed -n 's/^Message-ID: \(<[^>]*>\).*/\1/Ip' "$1" | head -n 1
}

# put FOLDER FILE [MB] - file a message in the emulated mailbox; print its id
put() {
    emu_put_message "${3:-bob@contoso.test}" "$2" "$1"
}

# md_count IMID [MAILDIR] - copies of the message in the Maildir
md_count() {
    python3 - "${2:-$MD}" "$1" <<'EOF'
import os, sys
md, want = sys.argv[1], sys.argv[2].encode()
n = 0
for sub in ("new", "cur"):
    d = os.path.join(md, sub)
    for name in os.listdir(d) if os.path.isdir(d) else []:
        with open(os.path.join(d, name), "rb") as f:
            head = f.read().replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
        for line in head.split(b"\n"):
            if line.lower().startswith(b"message-id:") and line.split(b":", 1)[1].strip() == want:
                n += 1
print(n)
EOF
}

# wait_md IMID N [TIMEOUT] - wait until the Maildir holds N copies
wait_md() {
    local limit=$(( ${3:-15} * 10 )) i
    for ((i = 0; i < limit; i++)); do
	[ "$(md_count "$1")" -ge "$2" ] && return 0
	sleep 0.1
    done
    echo "  wait_md: $(md_count "$1") copies of $1 after ${3:-15} s, want $2" >&2
    return 1
}

# mbb EXPR - emu_mb_eval over bob's mailbox
mbb() {
    emu_mb_eval bob@contoso.test "$1"
}

# msg_where IMID [MB] - "FOLDER read|unread" of the message with that
# internetMessageId, one line per copy
msg_where() {
    emu_mb_eval "${2:-bob@contoso.test}" "'\\n'.join('%s %s' % (x['displayName'], 'read' if m['isRead'] else 'unread') for x in d['folders'] for m in x['messages'] if m['internetMessageId'] == '$1')"
}

# log_has ERE - m365-fetch's log (log_file) has a matching line
log_has() {
    grep -Eq -- "$1" "$T/relay.log"
}

# fx_quirk PORT NAME MODE - start tests/quirk-smtp.py on 127.0.0.1:PORT
# in MODE (greet554, mail530, data451, 7bit, ok); $T/NAME.mode switches
# the mode, $T/NAME.log is its log.  1 when it does not listen.
fx_quirk() {
    local port=$1 name=$2
    echo "$3" > "$T/$name.mode"
    : > "$T/$name.log"
    python3 "$top_srcdir/tests/quirk-smtp.py" "$port" "$T/$name.mode" \
	"$T/$name.log" 2>"$T/$name.err" &
    t_bg_pid $!
    wait_port "$port"
}

# fetch_within SECS ARGS... - fetch under a time limit; FETCH_RC is its
# exit code (124: killed at the limit), FETCH_SECS how long it ran
fetch_within() {
    local limit=$1 t0
    shift
    NRUN=$((NRUN + 1))
    FETCH_OUT=$T/fetch.$NRUN.out
    t0=$(date +%s)
    timeout "$limit" "${FX_FETCH[@]}" "$@" > "$FETCH_OUT" 2>&1
    FETCH_RC=$?
    FETCH_SECS=$(( $(date +%s) - t0 ))
}
