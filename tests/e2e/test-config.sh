#!/bin/bash
#
# test-config.sh - configuration and master.cf mistakes defer, never bounce
#
# m365-relay run as Postfix's pipe(8) transport would run it, against the
# emulator.  Each case is an operator mistake that must keep the mail in
# the queue (exit 75, first line "4.3.5 ...", naming the fix) instead of
# bouncing it, and that every program's -n reports:
#   - an empty configuration file, one with only [global] (and [milter]),
#     and one truncated before the first [account NAME] section (issue
#     7.3: they used to pass -n as "configuration OK" and bounce every
#     message with 5.7.1);
#   - no recipient on the command line, i.e. ${recipient} missing in
#     master.cf (issue 8.5: it used to bounce with 5.5.1), also for a
#     sender no account sends for;
#   - a configuration file that starts with a UTF-8 byte order mark
#     (issue 7.10: "missing '='"), and one in the middle of the file.
# Also: m365-relay -t with no recipient in the header stays a permanent
# error (sendmail(1) use by a program; retrying cannot help).
#
# Run by "make check"; needs python3, openssl and curl.

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top_srcdir/tests/lib.sh"

relay_setup config
MILTER=$top_builddir/milter/m365-milter
FETCH=$top_builddir/fetch/m365-fetch

printf 'From: Bob <bob@contoso.test>\nTo: x@example.net\nSubject: cfg\nDate: Sat, 28 Nov 2026 10:00:00 +0000\nMessage-ID: <cfg.%s@test.example>\n\nbody\n' "$$" >"$T/m1"

# ------------------------------------------- no account at all (7.3)

# The emulator's [global] section alone, as a truncated file would have.
sed -n '1,/^\[account /p' "$CONF" | sed '$d' >"$T/global.conf"
: >"$T/empty.conf"
{ cat "$T/global.conf"; printf '[milter]\nmode = filter\n'; } >"$T/milter-only.conf"
# Cut in the middle of the first account header, as a full disk leaves it.
head -c "$(($(grep -b -m 1 '^\[account ' "$CONF" | cut -d: -f1) + 4))" \
    "$CONF" >"$T/truncated.conf"

for c in empty global milter-only truncated; do
    f=$T/$c.conf
    "$RELAY" -n -c "$f" >"$T/n.out" 2>&1
    n_rc=$?
    t_eq "$c: m365-relay -n exits 78" "$n_rc" 78
    t_match "$c: -n names file:line and the missing account" "$(cat "$T/n.out")" \
	"^$(printf '%s' "$f" | sed 's/[.]/\\./g'):[0-9]+: no \\[account NAME\\] section .*add the account"
    t_nomatch "$c: -n does not say configuration OK" "$(cat "$T/n.out")" \
	'configuration OK'

    relay "$T/m1" -c "$f" -q "QNA$c" -f bob@contoso.test -- x@example.net
    t_eq "$c: delivery defers (exit 75), never bounces" "$rc" 75
    # The truncated file's first problem is its cut header line.
    [ "$c" = truncated ] && want='malformed section header "\[acc"' ||
	want='no \[account NAME\] section'
    t_match "$c: first line 4.3.5 names the problem" "$first" \
	"^4\\.3\\.5 configuration error in .*: $want"
done
t_eq "no account: nothing reached Microsoft 365" "$(emu_sent_count)" 0

# Every program that sends or reads mail says the same.
for prog in "$MILTER" "$FETCH"; do
    [ -x "$prog" ] || { bad "${prog##*/} is built"; continue; }
    "$prog" -n -c "$T/global.conf" >"$T/n.out" 2>&1
    n_rc=$?
    t_eq "${prog##*/} -n with only [global]: exit 78" "$n_rc" 78
    t_match "${prog##*/} -n: names the missing account" "$(cat "$T/n.out")" \
	'no \[account NAME\] section'
done
"$CTL" -c "$T/global.conf" -n >"$T/n.out" 2>&1
t_eq "m365ctl -n with only [global]: exit 78" "$?" 78
t_match "m365ctl -n: names the missing account" "$(cat "$T/n.out")" \
    'no \[account NAME\] section'

# The same file with an account: fine.
relay "$T/m1" -c "$CONF" -q QOK -f bob@contoso.test -- x@example.net
t_eq "with an account: sent (exit 0)" "$rc" 0

# ------------------------------------- no recipient: master.cf (8.5)

emu_reset
relay "$T/m1" -c "$CONF" -q QNR1 -f bob@contoso.test
t_eq "no recipient argument: defers (exit 75)" "$rc" 75
t_match "no recipient: 4.3.5 names \${recipient} in master.cf" "$first" \
    '^4\.3\.5 no recipient given: .*master\.cf must end with "-- \$\{recipient\}"'
t_match "no recipient: ... and Sendmail's \$u" "$first" 'A= field with "-- \$u"'
relay "$T/m1" -c "$CONF" -q QNR2 -f bob@contoso.test --
t_eq "\"--\" and nothing after: defers (exit 75)" "$rc" 75
t_match "\"--\" and nothing after: 4.3.5" "$first" '^4\.3\.5 no recipient given'
t_match "no recipient: logged as deferred with the queue id" \
    "$(grep ' QNR1: ' "$LOG")" 'dsn=4\.3\.5, status=deferred \(no recipient given'

# A sender that no account sends for: the typo wins, not 5.7.1.
grep -v '^default = yes$' "$CONF" >"$T/nodefault.conf"
relay "$T/m1" -c "$T/nodefault.conf" -q QNR3 -f nobody@unknown.example
t_eq "no recipient and an unknown sender: defers (exit 75)" "$rc" 75
t_match "no recipient and an unknown sender: 4.3.5, not 5.7.1" "$first" \
    '^4\.3\.5 no recipient given'
t_eq "no recipient: nothing reached Microsoft 365" "$(emu_sent_count)" 0

# sendmail -t: the message names no recipient; permanent (not a typo).
printf 'From: bob@contoso.test\nSubject: no rcpt\n\nbody\n' >"$T/m2"
relay "$T/m2" -c "$CONF" -t -f bob@contoso.test
t_eq "-t without any recipient: exit 64 (EX_USAGE)" "$rc" 64
t_match "-t without any recipient: 5.5.1 says why" "$first" \
    '^5\.5\.1 no recipient addresses found in the message header'

# ------------------------------------------------ UTF-8 BOM (7.10)

printf '\357\273\277' | cat - "$CONF" >"$T/bom.conf"
"$RELAY" -n -c "$T/bom.conf" >"$T/n.out" 2>&1
t_eq "a file starting with a UTF-8 BOM: -n exits 0" "$?" 0
t_match "BOM: configuration OK" "$(cat "$T/n.out")" '^configuration OK$'
relay "$T/m1" -c "$T/bom.conf" -q QBOM -f bob@contoso.test -- x@example.net
t_eq "BOM: the message is sent (exit 0)" "$rc" 0
t_eq "BOM: Microsoft 365 got it" "$(emu_sent_count)" 1

# Two files joined: the BOM of the second is named, with its line.
bomline=$(($(wc -l <"$CONF") + 1))
{ cat "$CONF"; printf '\357\273\277[global]\n'; } >"$T/joined.conf"
"$RELAY" -n -c "$T/joined.conf" >"$T/n.out" 2>&1
t_eq "a BOM in the middle: -n exits 78" "$?" 78
t_match "a BOM in the middle: named with its line" "$(cat "$T/n.out")" \
    "joined\\.conf:$bomline: a UTF-8 byte order mark \\(BOM\\) in the middle"

t_done
