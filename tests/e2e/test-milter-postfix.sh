#!/usr/bin/env bash
# test-milter-postfix.sh - m365-milter in filter mode in front of a real,
# private Postfix (tests/postfix.sh), end to end:
#
#   swaks / sendmail(1) -> Postfix smtpd / pickup+cleanup
#     -> smtpd_milters / non_smtpd_milters = m365-milter (filter mode,
#        the lines of contrib/postfix/main.cf.milter)
#     -> queue -> pipe(8) m365 transport -> m365-relay
#     -> the Microsoft 365 emulator
#
# Checks: rewriting of the envelope sender and From: (display name
# kept, Reply-To: with the original address) as the emulator recorded
# it; the size limit at SMTP time (552 5.3.4 at the end of DATA and for
# SIZE= at MAIL FROM); the unknown-sender policy (reject: 550 5.7.1;
# accept: delivered elsewhere, unchanged); a Message-ID added when
# missing, the same one after a deferred retry.
#
# Needs root (namespaces, a private Postfix, useradd), postfix and swaks
# (tests/run-all.sh installs them).  Without root it is skipped (exit
# 77).  It re-executes itself inside private net/uts/mount/pid
# namespaces: loopback only, private /etc/hosts and resolv.conf, and
# every process it started dies with it.

# shellcheck disable=SC2317  # helper functions run through check()
set -u

. "$(dirname "$0")/ns.sh"
e2e_start test-milter-postfix.sh "private Postfix, namespaces, useradd" \
    "run tests/run-all.sh, which installs them (as root)" \
    postfix postqueue postsuper postcat postconf swaks runuser

# ---- inside the namespaces
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/postfix.sh"

MILTER=$top_builddir/milter/m365-milter
MPORT=8894		# unknown_sender = reject (smtpd :2525, non_smtpd)
MPORT2=8895		# unknown_sender = accept (smtpd :2527)
RUSER=m365test
MIDRE='<[0-9a-f]{32}@milter\.e2e\.test>'
MPIDS=()

t_init milter-postfix
# shellcheck disable=SC2329  # run by the EXIT trap
stop_all() {
    local p
    pf_stop
    for p in ${MPIDS[@]+"${MPIDS[@]}"}; do kill -9 "$p" 2>/dev/null; done
}
trap 'stop_all; t_cleanup' EXIT

e2e_private_hosts

if [ ! -x "$MILTER" ]; then
    bad "m365-milter is built ($MILTER missing: run make)"
    t_done
fi

# ---- emulator and configuration
e2e_conf "$RUSER" || { bad "emulator starts"; t_done; }
# No default account (so that unknown senders exist); account "app"
# (senders @contoso.test, mailbox bob@contoso.test) takes at most 20 KB.
sed -i -e '/^default = yes$/d' \
    -e 's|^mailbox = bob@contoso.test$|mailbox = bob@contoso.test\nmax_message_size = 20K|' "$CONF"
e2e_user "$RUSER" || { bad "create user $RUSER"; t_done; }
mkdir -p "$T/spool"
chown "$RUSER" "$T/spool"
chmod 700 "$T/spool"

# start_milter CONF PORT - start m365-milter in the foreground (as root:
# it drops to $RUSER) and wait for its socket
start_milter() {
    "$MILTER" -c "$1" -f -P "$T/milter.$2.pid" > "$T/milter.$2.out" 2>&1 &
    MPIDS+=("$!")
    if ! wait_port "$2"; then
	sed 's/^/#   /' "$T/milter.$2.out"
	return 1
    fi
}

filter_conf "$T/milter-reject.conf" reject "$MPORT" milter.e2e.test
filter_conf "$T/milter-accept.conf" accept "$MPORT2" milter.e2e.test
check "m365-milter -n: configuration OK" \
    sh -c "'$MILTER' -c '$T/milter-reject.conf' -n 2>&1 | grep -q 'configuration OK'"
start_milter "$T/milter-reject.conf" "$MPORT" ||
    { bad "m365-milter (unknown_sender = reject) listens on 127.0.0.1:$MPORT"; t_done; }
start_milter "$T/milter-accept.conf" "$MPORT2" ||
    { bad "m365-milter (unknown_sender = accept) listens on 127.0.0.1:$MPORT2"; t_done; }
ok "two m365-milter instances (filter mode) listen on :$MPORT and :$MPORT2"
check "m365-milter dropped root: runs as $RUSER" \
    wait_until 5 sh -c "[ \"\$(awk '/^Uid:/ {print \$2}' /proc/${MPIDS[0]}/status)\" = \"\$(id -u $RUSER)\" ]"

# ---- Postfix: tests/postfix.sh plus the lines of contrib/postfix/main.cf.milter
PF_RELAY=$RELAY PF_CONF=$CONF pf_setup "$T/pf" 2525 2526 ||
    { bad "private Postfix set up"; t_done; }
grep -E '^[a-z_]+[[:space:]]*=' "$top_srcdir/contrib/postfix/main.cf.milter" |
    sed "s|inet:127\.0\.0\.1:8894|inet:127.0.0.1:$MPORT|" > "$T/milter.lines"
check "contrib/postfix/main.cf.milter sets smtpd_milters, non_smtpd_milters, milter_default_action" \
    sh -c "grep -q '^smtpd_milters' '$T/milter.lines' && grep -q '^non_smtpd_milters' '$T/milter.lines' &&
	   grep -q '^milter_default_action' '$T/milter.lines'"
while IFS= read -r line; do
    postconf -c "$PF_ETC" -e "$line"
done < "$T/milter.lines"
# Postfix would add a Message-ID itself for clients on its own
# interfaces; leave that to the milter.  sink.test: a file transport for
# mail that does not go to Graph.
postconf -c "$PF_ETC" -e "local_header_rewrite_clients =" \
    "relay_domains = $(postconf -c "$PF_ETC" -h relay_domains) sink.test"
printf 'sink.test\tsink:\n' >> "$PF_ETC/transport"
mkdir -p "$T/bin" "$T/sink"
chmod 1777 "$T/sink"
cat > "$T/bin/sink" <<EOF
#!/bin/sh
# sink SENDER RCPT - store one delivery in $T/sink/
f="$T/sink/\$(date +%s.%N).\$\$"
{ printf 'X-Envelope: %s -> %s\n' "\$1" "\$2"; cat; } > "\$f.tmp" || exit 75
mv "\$f.tmp" "\$f.eml"
EOF
chmod 755 "$T/bin" "$T/bin/sink"
cat >> "$PF_ETC/master.cf" <<EOF
sink		unix	-	n	n	-	-	pipe
  flags=Rq user=nobody argv=$T/bin/sink \${sender} \${recipient}
127.0.0.1:2527	inet	n	-	n	-	-	smtpd
  -o smtpd_milters=inet:127.0.0.1:$MPORT2
  -o syslog_name=postfix-test/accept
EOF
check "postfix check with the milter settings" postfix -c "$PF_ETC" check
pf_start || { bad "private Postfix starts"; t_done; }
wait_port 2527 || { bad "Postfix listens on :2527"; t_done; }
ok "private Postfix with smtpd_milters + non_smtpd_milters listens on :2525 (and :2527)"

# ---- helpers (and from tests/lib.sh: make_msg, smtp_send, swaks_said,
# sent_count, wait_sent, flush_until_sent, term_wait)

# The messages have no Message-ID unless a case gives one as a header.
MAKE_MSG_NO_ID=1

# swaks_reply_to FILE CMD_ERE REPLY_ERE - the reply right after the
# client line matching CMD_ERE matches REPLY_ERE
swaks_reply_to() {
    awk -v c="$2" -v r="$3" '
	/^ *-> / { last = $0; next }
	/^<[-*]+ / { if (last ~ c && $0 ~ r) found = 1 }
	END { exit !found }' "$1.swaks"
}

# mime_check SUBJECT CHECK... - checks on the one emulator record with
# SUBJECT and its MIME headers:
#   count=N  from=ADDR  rcpts=A,B  header=NAME:ERE (exactly one such
#   header, value matches)  noheader=NAME  msgid=VALUE  body=TEXT
#   only=NAME,NAME... (no header outside these and the original's)
mime_check() {
    emu_ctl GET /_emu/sent > "$T/sent.json" || return 1
    "$PYTHON" - "$T/sent.json" "$@" <<'EOF'
import email, email.policy, json, re, sys
recs = [r for r in json.load(open(sys.argv[1])) if r.get("subject") == sys.argv[2]]
errs = []
checks = sys.argv[3:]
want = 1
for c in checks:
    if c.startswith("count="):
        want = int(c[6:])
if len(recs) != want:
    errs.append("%d records with subject %r, want %d" % (len(recs), sys.argv[2], want))
for r in recs:
    raw = open(r["eml_path"], "rb").read()
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    names = [k.lower() for k in msg.keys()]
    for c in checks:
        k, _, v = c.partition("=")
        if k == "from" and r.get("from", "").lower() != v.lower():
            errs.append("from %r, want %r" % (r.get("from"), v))
        elif k == "rcpts" and sorted(r.get("recipients", [])) != sorted(v.lower().split(",")):
            errs.append("recipients %s, want %s" % (r.get("recipients"), v))
        elif k == "header":
            name, _, rx = v.partition(":")
            vals = msg.get_all(name) or []
            if len(vals) != 1:
                errs.append("%d %s: headers, want 1 (%s)" % (len(vals), name, vals))
            elif not re.search(rx, " ".join(vals[0].split())):
                errs.append("%s: %r does not match %r" % (name, vals[0], rx))
        elif k == "noheader" and msg.get_all(v):
            errs.append("unexpected %s: %s" % (v, msg.get_all(v)))
        elif k == "msgid":
            vals = msg.get_all("Message-ID") or []
            if [x.strip() for x in vals] != [v]:
                errs.append("Message-ID %s, want [%s]" % (vals, v))
        elif k == "body" and v.encode() not in raw:
            errs.append("MIME lacks %r" % v)
        elif k == "only":
            allowed = set(x.lower() for x in v.split(","))
            extra = sorted(set(names) - allowed)
            if extra:
                errs.append("unexpected headers: %s" % extra)
for e in errs:
    print("  " + e, file=sys.stderr)
sys.exit(1 if errs else 0)
EOF
}

# sink_has ERE - a delivery in the sink matches ERE
sink_has() {
    grep -Eqs -- "$1" "$T"/sink/*.eml
}

# Headers a message may carry on its way: the original ones (make_msg),
# Postfix's Received:, pipe's Return-Path:, and the milter's changes.
ORIG_HDRS=date,subject,mime-version,content-type,from,to,cc
PATH_HDRS=received,return-path
M=$T/msg
mkdir -p "$M"

# ---- r. rewriting: envelope sender, From: (display name kept), Reply-To:
S="r1 rewrite"
qid=$(send_msg 2525 app1@contoso.test r1@example.com "$M/r1" "$S" \
    "From: Build Server <app1@contoso.test>" "To: Ops <r1@example.com>")
check "r1: Postfix accepted the message" test -n "$qid"
check "r1: delivered to Graph" wait_sent "$S" 1
check "r1: Graph got From: Build Server <bob@contoso.test> (the account mailbox, display name kept)" \
    mime_check "$S" from=bob@contoso.test rcpts=r1@example.com \
	'header=From:^"?Build Server"? <bob@contoso\.test>$'
check "r1: Reply-To: the original address app1@contoso.test" \
    mime_check "$S" 'header=Reply-To:(^|<)app1@contoso\.test>?$'
check "r1: a Message-ID was added ($MIDRE)" mime_check "$S" "header=Message-ID:^$MIDRE\$"
check "r1: no other visible header added" \
    mime_check "$S" "only=$ORIG_HDRS,$PATH_HDRS,reply-to,message-id" body=body-marker-r1-rewrite
check "r1: the envelope sender was rewritten (qmgr from=<bob@contoso.test>)" \
    pf_wait_log "$qid: from=<bob@contoso\.test>" 5
check "r1: queue empty" pf_wait_empty 10

S="r2 reply-to kept"
qid=$(send_msg 2525 app2@contoso.test r2@example.com "$M/r2" "$S" \
    "From: \"Doe, Jane\" <app2@contoso.test>" "Reply-To: helpdesk@contoso.test" \
    "To: r2@example.com" "Message-ID: <own.r2@app.e2e.test>")
check "r2: delivered to Graph" wait_sent "$S" 1
check "r2: From: rewritten with the quoted display name kept" \
    mime_check "$S" from=bob@contoso.test 'header=From:^"Doe, Jane" <bob@contoso\.test>$'
check "r2: an existing Reply-To: is kept, not added twice" \
    mime_check "$S" 'header=Reply-To:^helpdesk@contoso\.test$'
check "r2: an existing Message-ID is kept, none added" mime_check "$S" msgid='<own.r2@app.e2e.test>'
check "r2: queue empty" pf_wait_empty 10

# ---- n. sendmail(1) -> pickup -> cleanup -> non_smtpd_milters
S="n non-smtpd"
make_msg "$M/n" "$S" "From: Cron Daemon <app3@contoso.test>" "To: n@example.com"
check "n: sendmail -C accepts the message" \
    sh -c "sendmail -C '$PF_ETC' -f app3@contoso.test -i n@example.com < '$M/n'"
check "n: delivered to Graph" wait_sent "$S" 1
check "n: non_smtpd_milters: From: and Reply-To: rewritten" \
    mime_check "$S" from=bob@contoso.test rcpts=n@example.com \
	'header=From:^"?Cron Daemon"? <bob@contoso\.test>$' 'header=Reply-To:(^|<)app3@contoso\.test>?$'
nqid=$(sed -n 's/.*pickup\[[0-9]*\]: \([0-9A-F]*\): uid=0 from=<app3@contoso\.test>.*/\1/p' "$PF_MAILLOG" | head -n 1)
check "n: non_smtpd_milters: envelope sender rewritten (queue id ${nqid:-none})" \
    pf_wait_log "${nqid:-none}: from=<bob@contoso\.test>" 5
check "n: queue empty" pf_wait_empty 10

# ---- s. size limit (account app: 20 KB) at SMTP time
S="s1 too large"
make_msg "$M/s1" "$S" "From: app1@contoso.test" "To: big@example.com"
head -c 30000 /dev/zero | tr '\0' 'x' | fold -w 76 | sed 's/$/\r/' >> "$M/s1"
qid=$(smtp_send 2525 app1@contoso.test big@example.com "$M/s1")
check "s1: 30 KB message: no 250" test -z "$qid"
check "s1: 552 5.3.4 at the end of DATA" swaks_reply_to "$M/s1" '^ *-> *\.$' '552 5\.3\.4'
check "s1: nothing queued" test "$(pf_queue_count)" -eq 0

# smtp_size PORT SENDER SIZE - "CODE TEXT" of MAIL FROM:<SENDER> SIZE=N
smtp_size() {
    "$PYTHON" - "$@" <<'EOF'
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), local_hostname="client.e2e.test", timeout=30)
s.ehlo()
code, text = s.mail(sys.argv[2], ["SIZE=%s" % sys.argv[3]])
print(code, " ".join(text.decode(errors="replace").split()))
try:
    s.rset()
    s.quit()
except smtplib.SMTPException:
    pass
EOF
}
out=$(smtp_size 2525 app1@contoso.test 50000 2>&1)
check "s2: MAIL FROM SIZE=50000 over the account maximum: 552 5.3.4 (got: $out)" \
    sh -c "printf '%s' '$out' | grep -Eq '^552 5\.3\.4'"
out=$(smtp_size 2525 app1@contoso.test 1000 2>&1)
check "s2: MAIL FROM SIZE=1000: 250 (got: $out)" sh -c "printf '%s' '$out' | grep -Eq '^250'"

S="s3 fits"
make_msg "$M/s3" "$S" "From: app1@contoso.test" "To: fits@example.com"
head -c 10000 /dev/zero | tr '\0' 'y' | fold -w 76 | sed 's/$/\r/' >> "$M/s3"
qid=$(smtp_send 2525 app1@contoso.test fits@example.com "$M/s3")
check "s3: 10 KB message accepted" test -n "$qid"
check "s3: delivered to Graph" wait_sent "$S" 1
check "s3: queue empty" pf_wait_empty 10

# ---- u. unknown sender policy
S="u1 unknown rejected"
qid=$(send_msg 2525 stranger@elsewhere.test u1@sink.test "$M/u1" "$S" \
    "From: Stranger <stranger@elsewhere.test>" "To: u1@sink.test")
check "u1: unknown_sender = reject: no 250" test -z "$qid"
check "u1: 550 5.7.1 at MAIL FROM" swaks_reply_to "$M/u1" 'MAIL FROM' '550 5\.7\.1'
check "u1: nothing delivered" sh -c "! grep -qs 'body-marker-u1' '$T'/sink/*.eml"

S="u2 unknown accepted"
qid=$(send_msg 2527 stranger@elsewhere.test u2@sink.test "$M/u2" "$S" \
    "From: Stranger <stranger@elsewhere.test>" "To: u2@sink.test")
check "u2: unknown_sender = accept: 250" test -n "$qid"
check "u2: delivered to the sink transport" wait_until 10 sink_has 'body-marker-u2-unknown-accepted'
f=$(grep -ls 'body-marker-u2-unknown-accepted' "$T"/sink/*.eml | head -n 1)
check "u2: envelope sender unchanged" grep -q '^X-Envelope: stranger@elsewhere.test -> u2@sink.test' "${f:-/dev/null}"
check "u2: From: unchanged, no Reply-To:, no Message-ID added" \
    sh -c "grep -q '^From: Stranger <stranger@elsewhere.test>' '${f:-/dev/null}' &&
	   ! grep -qi '^Reply-To:' '${f:-/dev/null}' && ! grep -qi '^Message-ID:' '${f:-/dev/null}'"
check "u2: nothing went to Graph" test "$(sent_count "$S")" -eq 0

# ---- i. the Message-ID added at SMTP time survives a deferred retry
S="i retry"
emu_fault \
    '{"match": "sendMail", "status": 503, "code": "ErrorServerBusy", "retry_after": 1, "count": 1}'
qid=$(send_msg 2525 app4@contoso.test later@example.com "$M/i" "$S" \
    "From: app4@contoso.test" "To: later@example.com")
check "i: Postfix accepted the message" test -n "$qid"
check "i: 503 from Graph: deferred" \
    pf_wait_log "$qid: to=<later@example.com>, relay=m365, .*dsn=4\.[0-9.]+, status=deferred" 10
check "i: nothing accepted by Graph yet" test "$(sent_count "$S")" -eq 0
queued_id=$(postcat -c "$PF_ETC" -hq "$qid" 2>/dev/null | sed -n 's/^Message-ID:[[:space:]]*//Ip' | tr -d '\r' | head -n 1)
check "i: the queued message has the milter's Message-ID ($queued_id)" \
    sh -c "printf '%s' '$queued_id' | grep -Eq '^$MIDRE\$'"
sleep 1.5
check "i: after the fault, a flush delivers it" flush_until_sent pf_flush "$S" 1 15
check "i: queue empty" pf_wait_empty 10
sleep 1
check "i: delivered once, with the Message-ID added at SMTP time" \
    mime_check "$S" count=1 rcpts=later@example.com "msgid=$queued_id"

# ---- l. the milter's log: Postfix's queue id (macro i) or NOQUEUE
check "l: the milter logged under Postfix's queue id" \
    grep -Eq "m365-milter\[[0-9]+\]: [0-9A-F]{6,}: " "$T/relay.log"
check "l: the MAIL FROM rejection is logged under NOQUEUE" \
    grep -Eq "m365-milter\[[0-9]+\]: NOQUEUE: .*stranger@elsewhere\.test" "$T/relay.log"

# ---- d. SIGTERM stops the milter cleanly; then the milter is down:
# milter_default_action = tempfail
term_wait "${MPIDS[0]}"
check "d: SIGTERM: m365-milter exits 0 (got $TW_RC)" test "$TW_RC" = 0
term_wait "${MPIDS[1]}"
MPIDS=()
S="d milter down"
qid=$(send_msg 2525 app1@contoso.test down@example.com "$M/d" "$S" \
    "From: app1@contoso.test" "To: down@example.com")
check "d: milter down: no 250" test -z "$qid"
check "d: milter down: 451 4.7.1 (milter_default_action = tempfail)" swaks_said "$M/d" '451 4\.7\.1'

t_done
