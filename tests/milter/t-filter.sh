#!/bin/bash
#
# t-filter.sh - m365-milter in filter mode, driven by miltertest
#
# Starts two milters (config A: rewriting on, unknown senders accepted;
# config B: unknown senders rejected, nothing rewritten), runs
# t-filter.lua against them, then checks the log lines: queue id first
# (NOQUEUE before Postfix assigns one, the id re-read at end of message),
# the replies, the changes.  As root the milter drops to "nobody"; the
# test checks that too.  Skips (77) only when miltertest is missing.

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/milter/lib-milter.sh"

t_init milter-filter
milter_need
milter_user

milter_base_conf "$T/a.conf"
cat >>"$T/a.conf" <<EOF

[milter]
unknown_sender = accept
rewrite_sender = yes
rewrite_from = yes
add_reply_to = yes
add_message_id = yes
message_id_domain = milter.test
EOF
milter_base_conf "$T/b.conf"
cat >>"$T/b.conf" <<EOF

[milter]
unknown_sender = reject
rewrite_sender = no
rewrite_from = no
add_message_id = no
EOF

check "m365-milter -n accepts config A" "$MILTER" -n -c "$T/a.conf"
milter_start b "$T/b.conf"
PID_B=$MILTER_PID
SOCK_B=$MILTER_SOCK
milter_start a "$T/a.conf"
PID_A=$MILTER_PID

# Privileges, socket and pid file.
if [ "$(id -u)" = 0 ]; then
    uid=$(awk '/^Uid:/ { print $2, $3, $4, $5 }' "/proc/$PID_A/status")
    if [ "$uid" = "$RUN_UID $RUN_UID $RUN_UID $RUN_UID" ]; then
	ok "started as root, runs as $RUN_USER (uid $uid)"
    else
	bad "started as root, runs as $RUN_USER: Uid line is \"$uid\""
    fi
    check "the socket belongs to $RUN_USER" \
	test "$(stat -c %U "$MILTER_SOCK")" = "$RUN_USER"
fi
check "the socket has mode 0660" test "$(stat -c %a "$MILTER_SOCK")" = 660
check "the pid file names the milter" test "$(cat "$T/run/a.pid")" = "$PID_A"

mt_run "filter mode: miltertest t-filter.lua" t-filter.lua \
    "SOCK_B=unix:$SOCK_B" "LUADIR=$LUADIR"

# The log, as an administrator reads it.
log_has "unknown sender accepted, logged with the queue id" \
    '^.* UNK1: from=<nobody@unknown\.test>: no account for this sender; passed on untouched \(unknown_sender = accept\)$'
log_has "unknown sender rejected with 550 5.7.1" \
    ' UNK2: milter-reject: MAIL FROM <nobody@unknown\.test>: 550 5\.7\.1 no Microsoft 365 account of this relay sends for <nobody@unknown\.test> \(unknown_sender = reject\)$'
log_has "SIZE= rejection logged with 552 5.3.4" \
    ' SIZE1: milter-reject: MAIL FROM <s@app\.test>: 552 5\.3\.4 message size 5000 exceeds the limit of 2048 bytes for <s@app\.test>$'
log_has "no queue id yet at MAIL FROM: NOQUEUE" \
    ' NOQUEUE: milter-reject: MAIL FROM <s@app\.test>: 552 5\.3\.4 message size 2049 '
log_has "byte count rejection at end of message" \
    ' SIZE2: milter-reject: END-OF-MESSAGE from <s@app\.test>: 552 5\.3\.4 message size [0-9]+ exceeds the limit of 2048 bytes'
log_has "rewriting logged: sender, From, Reply-To, Message-ID" \
    ' RW1: milter: from=<app@app\.test>, account=app, size=[0-9]+, nrcpt=1, changed=sender=<bob@contoso\.test> from=<bob@contoso\.test> reply-to=<app@app\.test> message-id=<[0-9a-f]{32}@milter\.test>$'
log_has "nothing to change is logged as changed=none" \
    ' RW4: milter: from=<bob@contoso\.test>, account=app, size=[0-9]+, nrcpt=1, changed=none$'
log_has "queue id re-read at end of message" \
    ' LATEQID7: milter: from=<bob@contoso\.test>, account=app, '
log_has "message after an abort handled" ' AFTERABORT: milter: '
log_lacks "no sender rewrite for the mailbox itself" ' RW4: .*sender=<'
log_has "SIZE= beyond a long rejected with 552 5.3.4" \
    ' SIZEHUGE: milter-reject: MAIL FROM <s@app\.test>: 552 5\.3\.4 message size 99999999999999999999 exceeds the limit of 2048 bytes'
log_has "From: without a domain: no Reply-To" \
    ' RW7: milter: from=<app@app\.test>, account=app, size=[0-9]+, nrcpt=1, changed=sender=<bob@contoso\.test> from=<bob@contoso\.test>$'
log_has "unparseable From: left unchanged, with a warning" \
    ' BADFROM: From: header ".*" is not a mailbox this milter can rewrite .*; left unchanged$'
# The only warning is the one for the unparseable From: above.
if grep -E '(error|warning|fatal|panic):' "$LOG" | grep -vq ' BADFROM: '; then
    bad "no errors or warnings: unexpected lines:"
    grep -E '(error|warning|fatal|panic):' "$LOG" | grep -v ' BADFROM: ' |
	head -n 3 | sed 's/^/#   /'
else
    ok "no errors or warnings (besides the unparseable From:)"
fi

# Clean stop on SIGTERM: exit 0, pid file and socket removed.
milter_stop "$PID_A"
rc=$?
check "SIGTERM: exit status 0 (got $rc)" test "$rc" = 0
check "SIGTERM: pid file removed" test ! -e "$T/run/a.pid"
milter_stop "$PID_B"
check "SIGTERM: second milter exit status 0" test $? = 0
log_has "stop logged" 'm365-milter stopping$'

t_done
