#!/bin/bash
#
# t-rewrite.sh - rewrite_sender: the milter never answers 250 for mail
# that the relay cannot send (issue 8.1)
#
# Filter mode with rewrite_sender = yes; account "cert" sends for
# *@cert.example from mailbox bob@contoso.test, and there is no default
# account.  The milter rewrites the sender to bob@contoso.test (checked
# with miltertest, t-rewrite.lua); m365-relay, as Postfix's transport,
# must then send the message with that sender against the emulator (it
# used to bounce with 5.7.1 "no account sends for <bob@contoso.test>",
# and the bounce to the rewritten sender went nowhere).  Two accounts
# that share a mailbox: -n warns, and the milter rejects at end of
# message what the relay's account would refuse for size.  Skips (77)
# only when miltertest is missing.

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/milter/lib-milter.sh"

t_init milter-rewrite
milter_need
milter_user
emu_setup
write_conf "$T/emu.conf"
LOG=$T/relay.log
: >"$LOG"
CONF=$T/r.conf
# The emulator's [global] section, then the accounts of this test.
sed -n '1,/^\[account /p' "$T/emu.conf" | sed '$d' >"$CONF"
sed -i "s|^\\[global\\]\$|[global]\\nuser = $RUN_USER|" "$CONF"
# account NAME MAILBOX SENDERS [LINE] - an app-only (client secret) account
account() {
    printf '\n[account %s]\ntenant = %s\nclient_id = %s\nauth = secret\n' \
	"$1" "$EMU_TENANT" "$EMU_APP_SECRET"
    printf 'secret_file = %s\nmailbox = %s\nsenders = %s\n' "$T/secret" "$2" "$3"
    [ -z "${4:-}" ] || printf '%s\n' "$4"
}
{
    account cert bob@contoso.test '*@cert.example'
    account small shared@contoso.test @small.test 'max_message_size = 2K'
    account big shared@contoso.test @big.test
} >>"$CONF"
cat >>"$CONF" <<EOF

[milter]
mode = filter
unknown_sender = reject
rewrite_sender = yes
rewrite_from = yes
add_reply_to = no
EOF
if [ "$(id -u)" = 0 ]; then
    chmod 711 "$T/certs"
    chmod 644 "$T/certs/ca.pem"
    milter_own "$T/state" "$T/secret" "$LOG"
fi

# -n: valid for both programs, with a warning about the shared mailbox.
"$MILTER" -n -c "$CONF" >"$T/n.out" 2>&1
rc=$?
check "m365-milter -n: exit 0 (got $rc)" test "$rc" = 0
check "m365-milter -n: configuration OK" grep -qx 'configuration OK' "$T/n.out"
check "m365-milter -n: warns that account big sends through account small" \
    grep -q "r\\.conf:[0-9]*: warning: account big has the mailbox shared@contoso\\.test of account small" "$T/n.out"
[ "$(id -u)" = 0 ] && export M365RELAY_ALLOW_ROOT=1
"$RELAY" -n -c "$CONF" >"$T/n.out" 2>&1
rc=$?
check "m365-relay -n: exit 0 (got $rc)" test "$rc" = 0
check "m365-relay -n: the same warning" \
    grep -q "warning: account big has the mailbox shared@contoso\\.test of account small" "$T/n.out"

milter_start rw "$CONF"
PID=$MILTER_PID
mt_run "rewrite_sender: miltertest t-rewrite.lua" t-rewrite.lua "LUADIR=$LUADIR"

log_has "cert.example sender rewritten to the account's mailbox" \
    ' RWC1: milter: from=<app@cert\.example>, account=cert, size=[0-9]+, nrcpt=1, changed=sender=<bob@contoso\.test> from=<bob@contoso\.test>'
log_has "over the relay account's limit: 552 at end of message" \
    ' RWS1: milter-reject: END-OF-MESSAGE from <u@big\.test>: 552 5\.3\.4 .*account small, which sends for the rewritten sender <shared@contoso\.test>'
log_has "under the limit: rewritten" \
    ' RWS2: milter: from=<u@big\.test>, account=big, .*changed=sender=<shared@contoso\.test>'

# What Postfix then does: its pipe transport runs m365-relay with the
# rewritten sender.  It must send (not bounce 5.7.1 to bob@contoso.test).
printf 'From: Cert App <bob@contoso.test>\nTo: Rcpt <rcpt@example.net>\nSubject: rwc1\nDate: Sat, 28 Nov 2026 10:00:00 +0000\nMessage-ID: <rwc1@cert.example>\n\nrewritten sender\n' >"$T/rwc1.eml"
run_relay() {
    if [ "$(id -u)" = 0 ]; then
	setpriv --reuid="$RUN_USER" --regid="$(id -g "$RUN_USER")" --clear-groups \
	    "$RELAY" "$@"
    else
	"$RELAY" "$@"
    fi
}
run_relay -c "$CONF" -q RWC1 -f bob@contoso.test -- rcpt@example.net \
    <"$T/rwc1.eml" >"$T/relay.out" 2>&1
rc=$?
check "m365-relay sends for the rewritten sender <bob@contoso.test>: exit 0 (got $rc: $(head -n 1 "$T/relay.out"))" \
    test "$rc" = 0
check "the emulator got it from mailbox bob@contoso.test" \
    test "$(emu_ctl GET /_emu/sent | json_eval '[m["mailbox"] for m in d if m["subject"] == "rwc1"]')" = '["bob@contoso.test"]'

milter_stop "$PID"
check "SIGTERM: exit status 0" test $? = 0
t_done
