#!/bin/bash
#
# t-deliver.sh - m365-milter in deliver mode against the M365 emulator
#
# The milter sends at end of message through the relay core; t-deliver.lua
# drives it with miltertest (all-Graph, mixed, no-Graph recipients, a 503,
# ErrorInvalidRecipients, 202 + Retry-After, an offline account, a slow
# sendMail answered while progress replies keep miltertest waiting).  This
# wrapper then checks what the emulator recorded (exact recipients, the
# message delivered once after the transient failure, the spooled 20 KB
# body intact) and the delivery log lines (same format as m365-relay).
# Skips (77) only when miltertest is missing.

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/milter/lib-milter.sh"

t_init milter-deliver
milter_need
milter_user
emu_setup
write_conf "$T/d.conf"
LOG=$T/relay.log
: >"$LOG"
# The milter runs as RUN_USER: it reads the secrets and the state.
sed -i "s|^\\[global\\]\$|[global]\\nuser = $RUN_USER|" "$T/d.conf"
cat >>"$T/d.conf" <<EOF

[milter]
mode = deliver
deliver_domains = contoso.test .graph.test
on_account_offline = reject
memory_limit = 1K
tmp_dir = $T/spool
EOF
if [ "$(id -u)" = 0 ]; then
    chmod 711 "$T/certs"
    chmod 644 "$T/certs/ca.pem"
    milter_own "$T/state" "$T/secret" "$T/certs/client.key" "$LOG"
fi

check "m365-milter -n accepts the deliver configuration" \
    "$MILTER" -n -c "$T/d.conf"
# A second milter without deliver_domains: every recipient with a domain.
grep -v '^deliver_domains' "$T/d.conf" >"$T/all.conf"
milter_start all "$T/all.conf"
PID_ALL=$MILTER_PID
SOCK_ALL=$MILTER_SOCK
# Progress replies every second (test-only variable; default 10 s).
M365_MILTER_PROGRESS_INTERVAL=1 milter_start d "$T/d.conf"
PID=$MILTER_PID

mt_run "deliver mode: miltertest t-deliver.lua" t-deliver.lua \
    "LUADIR=$LUADIR" "EMU_URL=$EMU_URL" "CA_FILE=$CA_FILE" "STATE=$T/state" \
    "SOCK_ALL=unix:$SOCK_ALL"

# sent PYEXPR - evaluate over s = the messages the emulator recorded
sent() {
    emu_ctl GET /_emu/sent | "$PYTHON" -c '
import json, sys
s = json.load(sys.stdin)
v = eval(sys.argv[1])
print(" ".join(v) if isinstance(v, list) else v)' "$1"
}
# by_subject SUBJ EXPR - EXPR over the messages m with that subject
by_subject() {
    sent "[str($2) for m in s if m['subject'] == '$1']"
}

check "all-Graph message: exact recipients carol + dave" \
    test "$(by_subject dlv1 "sorted(m['recipients'])")" = \
	"['carol@contoso.test', 'dave@sub.graph.test']"
check "all-Graph message: sent from the account's mailbox" \
    test "$(by_subject dlv1 "m['mailbox']")" = "bob@contoso.test"
check "mixed message: only carol through Graph" \
    test "$(by_subject dlv2 "m['recipients']")" = "['carol@contoso.test']"
check "no-Graph message: Graph not asked" test -z "$(by_subject dlv3 "m['seq']")"
check "transient failure then retry: delivered exactly once" \
    test "$(by_subject dlv4 "m['seq']" | wc -w)" = 1
check "permanent failure: nothing recorded" test -z "$(by_subject dlv5 "m['seq']")"
check "202 + Retry-After: recorded as sent" test "$(by_subject dlv6 "m['seq']" | wc -w)" = 1
check "during Retry-After: not sent" test -z "$(by_subject dlv7 "m['seq']")"
check "offline account: not sent" test -z "$(by_subject dlv8 "m['seq']")"
check "slow Graph: delivered exactly once" \
    test "$(by_subject dlv10 "m['seq']" | wc -w)" = 1
check "no deliver_domains: the bare local name stays with the MTA" \
    test "$(by_subject dlv9 "m['recipients']")" = "['carol@contoso.test']"

# The spooled body arrived byte for byte.
eml=$(by_subject dlv1 "m['eml_path']")
if [ -n "$eml" ] && [ -f "$eml" ]; then
    n=$(grep -c '^line [0-9]\{4\} of the deliver-mode test body \.\{10\}.$' "$eml")
    check "spooled 20 KB body intact (400 lines, got $n)" test "$n" = 400
else
    bad "the emulator kept the MIME of dlv1 ($eml)"
fi

RELAY_HOST=${EMU_URL#https://}
rh=$(printf '%s' "$RELAY_HOST" | sed 's/[.]/\\./g')
log_has "delivery line, same format as m365-relay" \
    " DLV1: to=<carol@contoso\\.test>, relay=$rh\\[bob@contoso\\.test\\], delay=[0-9.e-]+, dsn=2\\.0\\.0, status=sent \\(202 "
log_has "delivery line for the second recipient" \
    " DLV1: to=<dave@sub\\.graph\\.test>, relay=$rh\\[bob@contoso\\.test\\], .*status=sent"
log_has "all delivered: discarded from the MTA" \
    " DLV1: milter: all 2 recipient\\(s\\) delivered by Microsoft 365; message discarded"
log_has "mixed: one delivered, one left" \
    " DLV2: milter: 1 recipient\\(s\\) delivered by Microsoft 365 and removed; 1 left for the MTA"
log_has "no Graph recipient logged" " DLV3: milter: no recipient for Microsoft 365"
log_has "503: 451 4.x.x by the on_graph_error policy" \
    " DLV4: milter-tempfail: 451 4\\.[0-9]+\\.[0-9]+ .*\\(Microsoft 365 unavailable: on_graph_error = tempfail\\)"
log_has "503: delivery line status=deferred" " DLV4: to=<carol@contoso\\.test>, .*dsn=4\\.[0-9.]+, status=deferred"
log_has "ErrorInvalidRecipients: 5.x.x reject with Graph's reason" \
    " DLV5: milter-reject: END-OF-MESSAGE: 55[0-4] 5\\.[0-9]+\\.[0-9]+ .*"
log_has "ErrorInvalidRecipients: delivery line status=bounced" " DLV5: to=<carol@contoso\\.test>, .*dsn=5\\.[0-9.]+, status=bounced"
log_has "202 + Retry-After: status=sent" " DLV6: to=<carol@contoso\\.test>, .*dsn=2\\.0\\.0, status=sent"
log_has "during Retry-After: deferred without asking Graph" \
    " DLV7: milter-tempfail: 451 4\\.7\\.0 Microsoft 365 asked to wait"
log_has "offline account: rejected by on_account_offline = reject" \
    " DLV8: milter-reject: 550 5\\.7\\.0 account deleg has not signed in yet: run m365ctl login deleg \\(account offline: on_account_offline = reject\\)"
log_has "slow Graph: progress replies sent while waiting" \
    " DLV10: milter: progress sent to the MTA \\(waiting for Microsoft 365 for [0-9]+s\\)"
log_has "slow Graph: status=sent" " DLV10: to=<carol@contoso\\.test>, .*dsn=2\\.0\\.0, status=sent"

# Nothing left in the spool directory (unlinked temporary files).
check "spool directory empty" test -z "$(ls -A "$T/spool")"

milter_stop "$PID"
check "SIGTERM: exit status 0" test $? = 0
milter_stop "$PID_ALL"
check "SIGTERM: second milter exit status 0" test $? = 0
t_done
