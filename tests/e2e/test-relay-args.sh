#!/bin/bash
#
# test-relay-args.sh - the command-line forms m365-relay accepts
#
# Postfix pipe(8) runs "m365-relay -c FILE -q ID -f SENDER -- RCPT..."
# (contrib/postfix/master.cf.m365), Sendmail "-q $i -f $g -- $u"
# (contrib/sendmail/m365.m4), applications "m365-relay -t -i" or
# "-oi -f sender rcpt" like sendmail(1).  Every form must pick the same
# sender and recipients: the sender chooses the account (robot@cert.test
# -> account cert, mailbox shared@contoso.test), which the emulator
# records, with the recipients.  The message has no From: field, so a
# sender the relay failed to read would be the user's name instead (and
# the default account "app", mailbox bob@contoso.test).  A command-line
# error defers (4.3.5, a master.cf typo must not bounce mail).
#
# sendmail(1) takes a value with -o, -B, -N and -F, attached or as the
# next word ("-N never"); that word is not a recipient.
#
# Run by "make check"; needs python3 and openssl.

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top_srcdir/tests/lib.sh"

t_init relay-args

[ -x "$RELAY" ] || skip_all "$RELAY not built (run make first)"
command -v python3 >/dev/null 2>&1 || skip_all "python3 not installed"

emu_setup
CONF=$T/relay.conf
write_conf "$CONF"
[ "$(id -u)" = 0 ] && export M365RELAY_ALLOW_ROOT=1

MSG=$T/msg
printf 'To: t-to@example.net\nCc: t-cc@example.net\nSubject: args\n\nbody\n' \
    >"$MSG"
# For -t without -f: the sender from From:.
MSG_T=$T/msg-t
{ printf 'From: Bob <bob@contoso.test>\n'; cat "$MSG"; } >"$MSG_T"

# args_run ARGS... - run the relay on $IN (default $MSG) after forgetting
# what the emulator recorded; sets rc, first (first stdout line), out
args_run() {
    emu_reset
    "$RELAY" "$@" <"${IN:-$MSG}" >"$T/out" 2>"$T/err"
    rc=$?
    first=$(head -n 1 "$T/out")
    out=$(cat "$T/out" "$T/err")
}

# args_sent - "MAILBOX: RCPT RCPT..." of each message the emulator got
args_sent() {
    emu_ctl GET /_emu/sent | json_eval \
	'"; ".join(m["mailbox"] + ": " + " ".join(sorted(m["recipients"])) for m in d)'
}

# args_case NAME WANT ARGS... - the relay exits 0 and the emulator got
# exactly WANT ("MAILBOX: RCPT...")
args_case() {
    local name=$1 want=$2
    shift 2
    args_run "$@"
    if [ "$rc" = 0 ]; then
	ok "$name: exit 0"
    else
	bad "$name: exit $rc, want 0 (output: $out)"
    fi
    t_eq "$name: account and recipients" "$(args_sent)" "$want"
}

CERT="shared@contoso.test: a@example.net"

args_case "Postfix pipe: -c -q -f SENDER -- RCPT" "$CERT" \
    -c "$CONF" -q QARGS1 -f robot@cert.test -- a@example.net
t_match "-q names the queue id in the log" "$(cat "$T/relay.log")" \
    'QARGS1: to=<a@example\.net>, .* status=sent'
args_case "-fSENDER attached, no --" "$CERT" \
    -c "$CONF" -frobot@cert.test a@example.net
args_case "-r SENDER" "$CERT" -c "$CONF" -r robot@cert.test -- a@example.net
args_case "-rSENDER attached" "$CERT" -c "$CONF" -rrobot@cert.test -- \
    a@example.net
args_case "-oi -i -odb -B8BITMIME -NNEVER -F NAME ignored" "$CERT" \
    -c "$CONF" -oi -i -odb -B8BITMIME -NNEVER -F "Robot R" \
    -f robot@cert.test -- a@example.net
args_case "-N, -B, -o take the next word, as in sendmail(1)" "$CERT" \
    -c "$CONF" -N never -B 8BITMIME -o i -f robot@cert.test -- a@example.net
args_case "-v -v" "bob@contoso.test: b@example.net" \
    -c "$CONF" -v -v -f bob@contoso.test -- b@example.net
args_case "two recipients" "$CERT c@example.net" \
    -c "$CONF" -f robot@cert.test -- a@example.net c@example.net
IN=$MSG_T args_case "-t -i -oi: recipients and sender from the header" \
    "bob@contoso.test: t-cc@example.net t-to@example.net" \
    -c "$CONF" -t -i -oi
args_case "-t with -f and a recipient on the command line too" \
    "shared@contoso.test: a@example.net t-cc@example.net t-to@example.net" \
    -c "$CONF" -t -f robot@cert.test a@example.net

# The first recipient ends the options: "-n" after it is an address (no
# GNU-style reordering that would turn this into a configuration check).
args_run -c "$CONF" -f bob@contoso.test b@example.net -n
t_nomatch "an option after the first recipient is not an option" "$out" \
    'configuration OK'
t_eq "... but a recipient" "$(args_sent)" "bob@contoso.test: -n b@example.net"

# -n alone checks the configuration.
args_run -c "$CONF" -n
t_eq "-n: exit code" "$rc" 0
t_eq "-n: configuration OK" "$first" "configuration OK"

# Command-line errors defer with 4.3.5.
args_run -c "$CONF" -f bob@contoso.test -x -- b@example.net
t_eq "unknown option: exit code" "$rc" 75
t_match "unknown option: 4.3.5" "$first" \
    '^4\.3\.5 m365-relay: command-line error \(unknown option\)'
args_run -c "$CONF" --bogus-option -f bob@contoso.test -- b@example.net
t_eq "unknown long option: exit code" "$rc" 75
t_match "unknown long option: 4.3.5" "$first" '^4\.3\.5 .*\(unknown option\)'
args_run -c "$CONF" -f
t_eq "-f without a value: exit code" "$rc" 75
t_match "-f without a value: 4.3.5" "$first" \
    '^4\.3\.5 .*\(option needs a value\)'
args_run -c "$CONF" -f bob@contoso.test -q
t_eq "-q without a value: exit code" "$rc" 75
t_eq "nothing was sent on a command-line error" "$(args_sent)" ""

t_done
