# tests/fetch.sh - shared pieces of the m365-fetch end-to-end tests
# (tests/e2e/test-fetch*.sh).  Source it from bash after tests/lib.sh and
# tests/postfix.sh, inside the namespaces (see tests/e2e/ns.sh):
#
#	fx_conf                 emulator, $CONF ([global] user = $RUSER,
#	                        graph_url/login_url with the host names)
#	...append [source] sections to $CONF...
#	fx_postfix PORT         users, permissions, a private Postfix that
#	                        delivers local.test to Maildirs under
#	                        $PF_DIR/mail/ (unknown users refused 550
#	                        5.1.1, messages over 2 MB 552 5.3.4)
#
# Settings: RUSER (runs m365-fetch, default m365test), MBX (Maildir user,
# default m365mbx), FETCH (the binary).  Results: CONF, MD (the Maildir
# of $MBX).  Helpers: fetch, fetch_rc, mkin, imid, put, md_count,
# wait_md, mbb, msg_where, log_has.

RUSER=${RUSER:-m365test}
MBX=${MBX:-m365mbx}
FETCH=${FETCH:-$top_builddir/fetch/m365-fetch}

# fx_conf - start the emulator and write $CONF for it
fx_conf() {
    emu_setup || return 1
    CONF=$T/m365relay.conf
    write_conf "$CONF"
    sed -i -e "s|^[[:space:]]*login_url[[:space:]]*=.*|login_url = https://login.microsoftonline.com:$EMU_PORT|" \
	-e "s|^[[:space:]]*graph_url[[:space:]]*=.*|graph_url = https://graph.microsoft.com:$EMU_PORT|" \
	-e "s|^[[:space:]]*\[global\][[:space:]]*$|[global]\nuser = $RUSER|" "$CONF"
}

# fx_postfix PORT [USER...] - users ($RUSER, $MBX and USER...), file
# permissions for $RUSER, and a private Postfix on 127.0.0.1:PORT
fx_postfix() {
    local port=$1 u
    shift
    for u in "$RUSER" "$MBX" "$@"; do
	pf_user "$u" || { echo "fx_postfix: cannot create user $u" >&2; return 1; }
    done
    chmod 755 "$T" "$T/certs"
    chmod 644 "$CONF" "$T/certs/ca.pem" "$T/certs/client.pem"
    mkdir -p "$T/state"
    chown -R "$RUSER" "$T/state"
    chmod 700 "$T/state"
    chown "$RUSER" "$T/secret" "$T/certs/client.key"
    chmod 600 "$T/secret" "$T/certs/client.key"
    touch "$T/relay.log"
    chown "$RUSER" "$T/relay.log"
    chmod 640 "$T/relay.log"
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
    setpriv --reuid="$RUSER" --regid="$(id -g "$RUSER")" --init-groups \
	"$FETCH" -c "$CONF" "$@" > "$FETCH_OUT" 2>&1
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
    wait_until 10 sh -c "ss -Hltn 'sport = :$port' | grep -q ."
}

# fetch_within SECS ARGS... - fetch under a time limit; FETCH_RC is its
# exit code (124: killed at the limit), FETCH_SECS how long it ran
fetch_within() {
    local limit=$1 t0
    shift
    NRUN=$((NRUN + 1))
    FETCH_OUT=$T/fetch.$NRUN.out
    t0=$(date +%s)
    timeout "$limit" setpriv --reuid="$RUSER" --regid="$(id -g "$RUSER")" \
	--init-groups "$FETCH" -c "$CONF" "$@" > "$FETCH_OUT" 2>&1
    FETCH_RC=$?
    FETCH_SECS=$(( $(date +%s) - t0 ))
}
