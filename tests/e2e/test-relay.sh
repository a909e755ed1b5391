#!/bin/bash
#
# test-relay.sh - m365-relay run directly (no MTA) against the emulator
#
# Every case runs the relay the way Postfix pipe(8) or an application
# would, then checks four things: the exit code, the first output line
# ("X.Y.Z text"), what the emulator recorded (GET /_emu/sent: recipients,
# MIME bytes) and the relay's own log line in $T/relay.log.
#
# Accounts (tests/lib.sh write_conf): "app" (client secret, mailbox
# bob@contoso.test, default), "cert" (certificate, shared@contoso.test,
# senders @cert.test), "deleg" (delegated, alice@contoso.test, signed in
# here with the device-code flow through the emulator's control API).
#
# Run by "make check"; needs python3 and openssl, not root (as root the
# relay is allowed with M365RELAY_ALLOW_ROOT=1, which this script sets).

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top_srcdir/tests/lib.sh"

relay_setup relay
APP_ID=11111111-0000-0000-0000-000000000002
# relay= names the Graph host (graph.microsoft.com in production; here
# the emulator's host:port from graph_url).
RELAY_HOST=${EMU_URL#https://}

# ---------------------------------------------------------------- helpers
# (and from tests/lib.sh: relay, emu_reset, emu_fault, relay_burst, t_eq,
# t_match)

# expect_rc MSG WANT - check the exit code of the last relay run
expect_rc() {
    if [ "$rc" = "$2" ]; then
	ok "$1: exit $rc"
    else
	bad "$1: exit $rc, want $2 (output: $out)"
    fi
}

# expect_first MSG REGEX - check the first output line (extended regex)
expect_first() {
    if printf '%s\n' "$first" | grep -Eq -- "$2"; then
	ok "$1: first line \"$first\""
    else
	bad "$1: first line \"$first\" does not match /$2/ (output: $out)"
    fi
}

# re STRING - STRING quoted for grep -E
re() {
    printf '%s' "$1" | sed 's/[].[*^$\\+?(){}|]/\\&/g'
}

# expect_log MSG QID RCPT MAILBOX DSN STATUS - one delivery log line (DSN
# is an extended regex, so "4.[0-9]+.[0-9]+" matches any 4.x.x)
expect_log() {
    local pat
    pat="$(re "$2"): to=<$(re "$3")>, relay=$(re "$RELAY_HOST")\\[$(re "$4")\\], delay=[0-9]+(\\.[0-9]+)?, dsn=$5, status=$6 \\("
    if grep -Eq -- "$pat" "$LOG" 2>/dev/null; then
	ok "$1: log line for <$3> status=$6 dsn=$5"
    else
	bad "$1: no log line /$pat/ in $LOG; last lines: $(tail -n 3 "$LOG" 2>/dev/null)"
    fi
}

# sent EXPR - evaluate a Python expression over the recorded messages s
sent() {
    emu_ctl GET /_emu/sent | python3 -c '
import json, sys
s = json.load(sys.stdin)
v = eval(sys.argv[1])
print(" ".join(v) if isinstance(v, list) else v)' "$1"
}

# rcpts N - recipients of recorded message N, sorted, space separated
rcpts() {
    sent "sorted(s[$1]['recipients'])"
}

# same_mime MSG FILE - the MIME of the first recorded message is FILE,
# byte for byte
same_mime() {
    local eml
    eml=$(sent "s[0]['eml_path']")
    if cmp -s "$eml" "$2"; then
	ok "$1"
    else
	bad "$1: $(cmp "$eml" "$2" 2>&1)"
    fi
}

# sorted WORDS... - the words sorted, space separated
sorted() {
    printf '%s\n' "$@" | sort | tr '\n' ' ' | sed 's/ $//'
}

# mkmsg FILE FROM [HEADER...] - a small message with LF line ends
mkmsg() {
    local f=$1 from=$2; shift 2
    {
	printf 'From: %s\n' "$from"
	for h in "$@"; do printf '%s\n' "$h"; done
	printf 'Subject: test %s\n' "${f##*/}"
	printf 'Date: Sat, 28 Nov 2026 10:00:00 +0000\n'
	printf 'Message-ID: <%s.%s@test.example>\n' "${f##*/}" "$$"
	printf 'MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n'
	printf '\nHello from the m365-relay test suite.\n'
    } >"$f"
}

# mkbig FILE BYTES - a message to big@example.net with a body of about
# BYTES (lines of 77 bytes)
mkbig() {
    {
	printf 'From: bob@contoso.test\nTo: big@example.net\nSubject: big\n\n'
	python3 -c '
import sys
line = "0123456789" * 7 + "abcdef\n"
sys.stdout.write(line * (int(sys.argv[1]) // len(line)))' "$2"
    } >"$1"
}

# estat KEY - one emulator statistic
estat() {
    emu_stat "$1"
}

# ------------------------------------------------------------ config check

"$RELAY" -n -c "$CONF" >"$T/out" 2>&1
rc=$?
t_eq "-n on a good configuration exits 0" "$rc" 0
t_match "-n prints configuration OK" "$(cat "$T/out")" '^configuration OK$'

cp "$CONF" "$T/broken.conf"
badline=$(($(wc -l <"$T/broken.conf") + 3))
printf '\n[account broken]\nauth = sorcery\n' >>"$T/broken.conf"
"$RELAY" -n -c "$T/broken.conf" >"$T/out" 2>&1
rc=$?
t_eq "-n on a broken configuration exits 78 (EX_CONFIG)" "$rc" 78
t_match "-n names file:line of the bad key" "$(cat "$T/out")" \
    "broken\\.conf:$badline:"

# A command-line error (a master.cf typo) defers instead of bouncing.
printf 'Subject: x\n\nbody\n' >"$T/musage"
relay "$T/musage" -c "$CONF" --bogus-option -f bob@contoso.test -- x@example.net
expect_rc "unknown option defers (master.cf typo must not bounce)" 75
expect_first "unknown option" '^4\.3\.5 m365-relay: command-line error'
relay "$T/musage" -c "$CONF" -f
expect_rc "option without its value defers" 75

# ----------------------------------------------------- plain app delivery

emu_reset
mkmsg "$T/m1" bob@contoso.test 'To: one@example.net'
relay "$T/m1" -c "$CONF" -q QAPP1 -f bob@contoso.test -- one@example.net
expect_rc "app account, one recipient" 0
t_eq "app: one message recorded" "$(sent 'len(s)')" 1
t_eq "app: sent from the app account's mailbox" "$(sent "s[0]['mailbox']")" \
    bob@contoso.test
t_eq "app: recipients" "$(rcpts 0)" one@example.net
expect_log "app" QAPP1 one@example.net bob@contoso.test 2.0.0 sent
t_match "app: log names the request-id" "$(grep QAPP1 "$LOG")" \
    'request-id='
t_eq "app: first delivery made 1 token request" "$(estat token_requests)" 1

# A second delivery reuses the cached token.
emu_reset
relay "$T/m1" -c "$CONF" -q QAPP2 -f bob@contoso.test -- one@example.net
expect_rc "app account, cached token" 0
t_eq "app: cached token, no token request" "$(estat token_requests)" 0

# ------------------------------------------------------ certificate account

emu_reset
mkmsg "$T/mc" shared@contoso.test 'To: cert@example.net'
relay "$T/mc" -c "$CONF" -q QCERT -f robot@cert.test -- cert@example.net
expect_rc "certificate account" 0
t_eq "cert: sent from shared@contoso.test" "$(sent "s[0]['mailbox']")" \
    shared@contoso.test
t_eq "cert: sent by the certificate app" "$(sent "s[0]['client_id']")" \
    11111111-0000-0000-0000-000000000003
expect_log "cert" QCERT cert@example.net shared@contoso.test 2.0.0 sent

# ---------------------------------------------------------- unknown sender

sed '/^[[:space:]]*default[[:space:]]*=/d' "$CONF" >"$T/nodefault.conf"
emu_reset
mkmsg "$T/mu" nobody@elsewhere.test 'To: one@example.net'
relay "$T/mu" -c "$T/nodefault.conf" -q QNOACCT -f nobody@elsewhere.test \
    -- one@example.net
expect_rc "sender without an account" 77
expect_first "sender without an account" '^5\.7\.1 '
t_eq "no account: nothing sent" "$(estat sendmail_requests)" 0
t_eq "no account: no token request" "$(estat token_requests)" 0
t_match "no account: bounced in the log" "$(grep QNOACCT "$LOG")" \
    'to=<one@example\.net>.*dsn=5\.7\.1, status=bounced'

# Postfix pipe(8) passes the null sender of a bounce as MAILER-DAEMON
# (its null_sender default): it must take the "<>" account like -f "".
sed 's/^senders = @cert.test$/senders = @cert.test <>/' "$CONF" \
    >"$T/nullsender.conf"
grep -q '^senders = @cert.test <>$' "$T/nullsender.conf" ||
    bad "could not add <> to the cert account's senders"
for ns in MAILER-DAEMON ''; do
    emu_reset
    relay "$T/mc" -c "$T/nullsender.conf" -q QNULL -f "$ns" -- \
	cert@example.net
    expect_rc "null sender \"$ns\"" 0
    t_eq "null sender \"$ns\": sent by the <> account" \
	"$(sent "s[0]['mailbox']")" shared@contoso.test
done

# --------------------------------------------------------------- recipients

# Bcc only: no To/Cc at all, envelope recipients become Bcc.
emu_reset
mkmsg "$T/mb" bob@contoso.test 'To: undisclosed-recipients:;'
relay "$T/mb" -c "$CONF" -q QBCC -f bob@contoso.test -- b1@example.net \
    b2@example.net
expect_rc "Bcc-only" 0
t_eq "Bcc-only: recipients" "$(rcpts 0)" "b1@example.net b2@example.net"
t_eq "Bcc-only: all in Bcc" "$(sent "sorted(s[0]['bcc'])")" \
    "b1@example.net b2@example.net"
t_eq "Bcc-only: To empty" "$(sent "len(s[0]['to'])")" 0
expect_log "Bcc-only" QBCC b1@example.net bob@contoso.test 2.0.0 sent
expect_log "Bcc-only" QBCC b2@example.net bob@contoso.test 2.0.0 sent

# To + Cc + Bcc, plus an envelope-only recipient (alias expansion).
emu_reset
mkmsg "$T/mtcb" bob@contoso.test 'To: Tom <to@example.net>' \
    'Cc: cc@example.net' 'Bcc: bcc@example.net'
relay "$T/mtcb" -c "$CONF" -q QTCB -f bob@contoso.test -- to@example.net \
    cc@example.net bcc@example.net extra@example.net
expect_rc "To+Cc+Bcc" 0
t_eq "To+Cc+Bcc: recipients" "$(rcpts 0)" \
    "bcc@example.net cc@example.net extra@example.net to@example.net"
t_eq "To+Cc+Bcc: To" "$(sent "s[0]['to']")" to@example.net
t_eq "To+Cc+Bcc: Cc" "$(sent "s[0]['cc']")" cc@example.net
t_eq "To+Cc+Bcc: Bcc" "$(sent "sorted(s[0]['bcc'])")" \
    "bcc@example.net extra@example.net"
expect_log "To+Cc+Bcc" QTCB extra@example.net bob@contoso.test 2.0.0 sent

# Header recipients that are not envelope recipients get no copy.
emu_reset
mkmsg "$T/mhdr" bob@contoso.test \
    'To: yes@example.net, notenv@example.net' 'Cc: alsonot@example.net' \
    'Bcc: bccnot@example.net'
relay "$T/mhdr" -c "$CONF" -q QHDR -f bob@contoso.test -- yes@example.net
expect_rc "header-only recipients" 0
t_eq "header-only recipients: only the envelope recipient" "$(rcpts 0)" \
    yes@example.net
if grep -qi 'notenv@\|alsonot@\|bccnot@' "$(sent "s[0]['eml_path']")"; then
    bad "header-only recipients: removed addresses still in the sent MIME"
else
    ok "header-only recipients: removed from the sent MIME"
fi
if grep -q 'notenv\|alsonot\|bccnot' "$LOG"; then
    bad "header-only recipients: logged as if delivered"
else
    ok "header-only recipients: not in the log"
fi

# Split delivery: one message, two disjoint envelope subsets (Postfix
# splitting by recipient limit or destination).
emu_reset
mkmsg "$T/msplit" bob@contoso.test \
    'To: s1@example.net, s2@example.net, s3@example.net' \
    'Cc: s4@example.net'
relay "$T/msplit" -c "$CONF" -q QSPLIT -f bob@contoso.test -- \
    s1@example.net s4@example.net
rc1=$rc
relay "$T/msplit" -c "$CONF" -q QSPLIT -f bob@contoso.test -- \
    s2@example.net s3@example.net
t_eq "split delivery: both parts exit 0" "$rc1 $rc" "0 0"
t_eq "split delivery: two messages" "$(sent 'len(s)')" 2
t_eq "split delivery: first part" "$(rcpts 0)" "s1@example.net s4@example.net"
t_eq "split delivery: second part" "$(rcpts 1)" "s2@example.net s3@example.net"
t_eq "split delivery: first part To" "$(sent "s[0]['to']")" s1@example.net
t_eq "split delivery: first part Cc" "$(sent "s[0]['cc']")" s4@example.net
t_eq "split delivery: second part Cc empty" "$(sent "len(s[1]['cc'])")" 0

# 120 recipients: 60 in To, 60 envelope-only.
emu_reset
env120=()
for i in $(seq -w 1 120); do env120+=("r$i@example.net"); done
to60=$(printf '%s, ' "${env120[@]:0:60}" | sed 's/, $//')
mkmsg "$T/m120" bob@contoso.test "To: $to60"
relay "$T/m120" -c "$CONF" -q Q120 -f bob@contoso.test -- "${env120[@]}"
expect_rc "120 recipients" 0
t_eq "120 recipients: one message" "$(sent 'len(s)')" 1
t_eq "120 recipients: all of them" "$(rcpts 0)" "$(sorted "${env120[@]}")"
t_eq "120 recipients: 60 in To" "$(sent "len(s[0]['to'])")" 60
t_eq "120 recipients: 60 in Bcc" "$(sent "len(s[0]['bcc'])")" 60
t_eq "120 recipients: 120 log lines" "$(grep -c 'Q120: to=<r' "$LOG")" 120

# Address forms: quoted names with commas, comments, groups, encoded
# words, upper-case domain, folded header.
emu_reset
mkmsg "$T/mforms" bob@contoso.test \
    'To: "Doe, John" <john@example.net>, jane@EXAMPLE.net (Jane Roe),' \
    '  Team: t1@example.net, "T Two" <t2@example.net>;' \
    'Cc: =?UTF-8?B?SsO8cmdlbiBNw7xsbGVy?= <juergen@example.net>,' \
    ' (comment only) <paren@example.net>, "quoted@local"@example.net'
relay "$T/mforms" -c "$CONF" -q QFORMS -f bob@contoso.test -- \
    john@example.net jane@example.net t1@example.net juergen@example.net \
    '"quoted@local"@example.net'
expect_rc "address forms" 0
t_eq "address forms: exactly the envelope recipients" "$(rcpts 0)" \
    "$(sorted '"quoted@local"@example.net' jane@example.net john@example.net \
	juergen@example.net t1@example.net)"
t_eq "address forms: John and Jane kept in To" \
    "$(sent "' '.join(x for x in s[0]['to'] if x.startswith('j'))")" \
    "john@example.net jane@example.net"
t_eq "address forms: no Bcc needed" "$(sent "len(s[0]['bcc'])")" 0
if grep -q 't2@example\.net\|paren@example\.net' "$(sent "s[0]['eml_path']")"
then
    bad "address forms: non-envelope group member/comment address still sent"
else
    ok "address forms: t2 and paren removed from the MIME"
fi

# -------------------------------------------------------------- -t mode

emu_reset
mkmsg "$T/mt" bob@contoso.test 'To: t-to@example.net' 'Cc: t-cc@example.net' \
    'Bcc: t-bcc@example.net'
relay "$T/mt" -c "$CONF" -t -i -oi
expect_rc "-t (recipients from headers, sender from From:)" 0
t_eq "-t: recipients" "$(rcpts 0)" \
    "t-bcc@example.net t-cc@example.net t-to@example.net"
t_eq "-t: Bcc kept as Bcc" "$(sent "s[0]['bcc']")" t-bcc@example.net
t_eq "-t: sent from the app mailbox" "$(sent "s[0]['mailbox']")" \
    bob@contoso.test
expect_log "-t" NOQUEUE t-to@example.net bob@contoso.test 2.0.0 sent

emu_reset
relay "$T/mt" -c "$CONF" -t -f bob@contoso.test
expect_rc "-t with -f" 0
t_eq "-t with -f: recipients" "$(rcpts 0)" \
    "t-bcc@example.net t-cc@example.net t-to@example.net"

# ------------------------------------------------------------- MIME bytes

# A message whose recipients need no rewriting arrives byte for byte,
# with CRLF line ends.
{
    printf 'From: Bob <bob@contoso.test>\n'
    printf 'To: mime@example.net\n'
    printf 'Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\n'
    printf 'Date: Sat, 28 Nov 2026 10:00:00 +0000\n'
    printf 'Message-ID: <mime.%s@test.example>\n' "$$"
    printf 'X-Long: %s\n' "$(printf 'x%.0s' $(seq 1 200))"
    printf 'MIME-Version: 1.0\n'
    printf 'Content-Type: text/plain; charset=utf-8\n'
    printf 'Content-Transfer-Encoding: 8bit\n'
    printf '\n'
    printf 'Grüße aus dem Test.\n'
    printf '.\n'
    printf '.leading dot stays\n'
    printf 'From the middle of a line\n'
    printf 'trailing space   \n'
    printf '\n'
    printf 'last line\n'
} >"$T/mmime"
sed 's/$/\r/' "$T/mmime" >"$T/mmime.crlf"
emu_reset
relay "$T/mmime" -c "$CONF" -q QMIME -f bob@contoso.test -- mime@example.net
expect_rc "MIME bytes (LF input)" 0
same_mime "MIME bytes: LF input recorded as the same bytes with CRLF" \
    "$T/mmime.crlf"

emu_reset
relay "$T/mmime.crlf" -c "$CONF" -q QMIME2 -f bob@contoso.test -- \
    mime@example.net
expect_rc "MIME bytes (CRLF input)" 0
same_mime "MIME bytes: CRLF input recorded unchanged (no doubled CR)" \
    "$T/mmime.crlf"

# With an envelope-only recipient the only change is one Bcc: header.
emu_reset
relay "$T/mmime" -c "$CONF" -q QMIME3 -f bob@contoso.test -- \
    mime@example.net hidden@example.net
expect_rc "MIME bytes with added Bcc" 0
eml=$(sent "s[0]['eml_path']")
t_eq "MIME bytes: one Bcc header naming the envelope-only recipient" \
    "$(grep -ci '^bcc:' "$eml") $(grep -i '^bcc:' "$eml" | tr -d '\r')" \
    "1 Bcc: hidden@example.net"
if grep -vi '^bcc:' "$eml" | cmp -s - "$T/mmime.crlf"; then
    ok "MIME bytes: everything but the Bcc header unchanged"
else
    bad "MIME bytes: more than the Bcc header changed"
fi

# A leading mbox "From " line is not part of the message.
{ printf 'From bob@contoso.test Sat Nov 28 10:00:00 2026\n'; cat "$T/mmime"; } \
    >"$T/mmbox"
emu_reset
relay "$T/mmbox" -c "$CONF" -q QMBOX -f bob@contoso.test -- mime@example.net
expect_rc "mbox From_ line" 0
same_mime "MIME bytes: leading mbox From_ line dropped" "$T/mmime.crlf"

# --------------------------------------------------------- size limit

emu_reset
mkbig "$T/mbig" 3300000
relay "$T/mbig" -c "$CONF" -q QBIG -f bob@contoso.test -- big@example.net
# large_messages = auto (the default) with an app-only account: the
# token is not read, the draft path is taken (test-large.sh has the rest)
expect_rc "message over the 4 MB request limit: sent (auto: through a draft)" 0
t_eq "over 4 MB: no sendMail request" "$(estat sendmail_requests)" 0
t_match "over 4 MB: logged as sent from a draft" "$(grep QBIG "$LOG")" \
    'to=<big@example\.net>, relay=.*dsn=2\.0\.0, status=sent .*from a draft'


# Just under the limit is sent (raw 3,000,000 bytes -> base64 4,000,000).
emu_reset
mkbig "$T/mnear" 2900000
relay "$T/mnear" -c "$CONF" -q QNEAR -f bob@contoso.test -- big@example.net
expect_rc "message just under the limit" 0
t_eq "just under the limit: recorded" "$(sent 'len(s)')" 1

# -------------------------------------------------- throttling (429)

emu_reset
mkmsg "$T/mt1" bob@contoso.test 'To: thr@example.net'
emu_fault '{"match":"sendMail","status":429,"retry_after":4,"code":"ApplicationThrottled","message":"Application is over its MailboxConcurrency limit."}'
relay "$T/mt1" -c "$CONF" -q QTHR1 -f bob@contoso.test -- thr@example.net
expect_rc "429 + Retry-After" 75
expect_first "429 + Retry-After" '^4\.[0-9]+\.[0-9]+ '
t_eq "429: nothing recorded" "$(sent 'len(s)')" 0
expect_log "429" QTHR1 thr@example.net bob@contoso.test '4.[0-9]+.[0-9]+' \
    deferred
n_send=$(estat sendmail_requests)
n_tok=$(estat token_requests)
relay "$T/mt1" -c "$CONF" -q QTHR2 -f bob@contoso.test -- thr@example.net
expect_rc "delivery while throttled" 75
expect_first "delivery while throttled" '^4\.[0-9]+\.[0-9]+ '
t_match "delivery while throttled: mentions the wait" "$first" \
    '[Rr]etry-[Aa]fter|[Ww]ait|[Tt]hrottl|until'
t_eq "delivery while throttled: no sendMail request" \
    "$(estat sendmail_requests)" "$n_send"
t_eq "delivery while throttled: no token request" "$(estat token_requests)" \
    "$n_tok"
# Another mailbox is not affected.
relay "$T/mc" -c "$CONF" -q QTHR3 -f robot@cert.test -- cert@example.net
expect_rc "other mailbox not throttled" 0
sleep 5
relay "$T/mt1" -c "$CONF" -q QTHR4 -f bob@contoso.test -- thr@example.net
expect_rc "after the Retry-After wait" 0
t_eq "after the wait: delivered" "$(sent "s[-1]['recipients']")" thr@example.net
expect_log "after the wait" QTHR4 thr@example.net bob@contoso.test 2.0.0 sent

# A Retry-After too large to be meant literally (no documented ceiling,
# graph-facts.md section 9) still means "wait": capped, not ignored.
emu_reset
emu_fault '{"match":"sendMail","status":429,"retry_after":"99999999999","code":"ApplicationThrottled","message":"Application is over its MailboxConcurrency limit."}'
relay "$T/mt1" -c "$CONF" -q QTHRBIG1 -f bob@contoso.test -- thr@example.net
expect_rc "429 + huge Retry-After" 75
n_send=$(estat sendmail_requests)
relay "$T/mt1" -c "$CONF" -q QTHRBIG2 -f bob@contoso.test -- thr@example.net
expect_rc "huge Retry-After: the next delivery defers" 75
t_eq "huge Retry-After: the next delivery sends no request" \
    "$(estat sendmail_requests)" "$n_send"
emu_reset

# ---------------------------------------------------- 503, 504, 202+RA

emu_reset
emu_fault '{"match":"sendMail","status":503,"code":"ErrorServerBusy","message":"The server cannot service this request right now."}'
relay "$T/mt1" -c "$CONF" -q Q503 -f bob@contoso.test -- thr@example.net
expect_rc "503" 75
expect_first "503" '^4\.[0-9]+\.[0-9]+ '
expect_log "503" Q503 thr@example.net bob@contoso.test '4.[0-9]+.[0-9]+' \
    deferred

emu_reset
emu_fault '{"match":"sendMail","status":504,"code":"UnknownError","message":"Gateway Timeout"}'
relay "$T/mt1" -c "$CONF" -q Q504 -f bob@contoso.test -- thr@example.net
expect_rc "504" 75
expect_first "504" '^4\.[0-9]+\.[0-9]+ '

emu_reset
emu_fault '{"match":"sendMail","action":"accept_retry_after","retry_after":3}'
relay "$T/mt1" -c "$CONF" -q Q202RA -f bob@contoso.test -- thr@example.net
expect_rc "202 + Retry-After is success" 0
t_eq "202 + Retry-After: exactly one message recorded" "$(sent 'len(s)')" 1
t_eq "202 + Retry-After: exactly one sendMail request (never resent)" \
    "$(estat sendmail_requests)" 1
expect_log "202 + Retry-After" Q202RA thr@example.net bob@contoso.test \
    2.0.0 sent
sleep 3

# ------------------------------------------------- 401: refresh once

emu_reset
relay "$T/mt1" -c "$CONF" -q Q401A -f bob@contoso.test -- thr@example.net
t0=$(estat token_requests)
emu_ctl POST /_emu/expire "{\"client_id\":\"$APP_ID\"}" >/dev/null
# The same message once more: forget the send ledger, or it is "already sent".
rm -f "$T"/state/ledger/*
relay "$T/mt1" -c "$CONF" -q Q401B -f bob@contoso.test -- thr@example.net
expect_rc "401 once: refreshed and delivered" 0
t_eq "401 once: one more token request" "$(estat token_requests)" $((t0 + 1))
t_eq "401 once: two messages in all, one per delivery" "$(sent 'len(s)')" 2
expect_log "401 once" Q401B thr@example.net bob@contoso.test 2.0.0 sent

# ---------------------------------------------------- 403 send-as denied

emu_reset
mkmsg "$T/mdeny" carol@contoso.test 'To: deny@example.net'
relay "$T/mdeny" -c "$CONF" -q QDENY -f bob@contoso.test -- deny@example.net
expect_rc "403 ErrorSendAsDenied" 77
expect_first "403 ErrorSendAsDenied" '^5\.7\.1 '
t_eq "send-as denied: nothing recorded" "$(sent 'len(s)')" 0
expect_log "send-as denied" QDENY deny@example.net bob@contoso.test 5.7.1 \
    bounced

# ------------------------------------- connection reset after the body

emu_reset
emu_fault '{"match":"sendMail","action":"reset_after_body","deliver":true}'
relay "$T/mt1" -c "$CONF" -q QRESET -f bob@contoso.test -- thr@example.net
expect_rc "reset after the body" 75
expect_first "reset after the body" '^4\.[0-9]+\.[0-9]+ '
t_match "reset after the body: says it may have been accepted" "$first" \
    'may have (been )?accepted'
t_eq "reset after the body: not resent in the same run" \
    "$(estat sendmail_requests)" 1

# The same on a reused connection (token request first, then sendMail on
# the same connection): libcurl must not resend the message by itself.
emu_reset
rm -f "$T/state/tokens/app.json"
emu_fault '{"match":"sendMail","action":"reset_after_body","deliver":true}'
relay "$T/mt1" -c "$CONF" -q QRESET2 -f bob@contoso.test -- thr@example.net
expect_rc "reset after the body, reused connection" 75
t_eq "reset on a reused connection: one token request" \
    "$(estat token_requests)" 1
t_eq "reset on a reused connection: sendMail posted once" \
    "$(estat sendmail_requests)" 1
t_eq "reset on a reused connection: one message recorded" "$(sent 'len(s)')" 1

# ------------------------------- 202, then the connection breaks
# Graph's status line says 202 Accepted (with Retry-After), then the
# response body is cut short.  The message was accepted: exit 0, never a
# defer that makes the MTA send it again; the Retry-After still counts.
# A stand-in Graph (HTTPS with the emulator's certificate) on 127.0.0.1;
# the token still comes from the emulator.

python3 - "$T/fake202" "$T/certs/server.pem" "$T/certs/server.key" <<'PY' &
import socket, ssl, sys
base = sys.argv[1]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
plain = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
plain.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
plain.bind(("127.0.0.1", 0))
plain.listen(5)
srv = ctx.wrap_socket(plain, server_side=True)
with open(base + ".port.tmp", "w") as f:
    f.write(str(srv.getsockname()[1]))
import os
os.rename(base + ".port.tmp", base + ".port")
srv.settimeout(60)
while True:
    try:
        c, _ = srv.accept()
    except socket.timeout:
        break
    except (ssl.SSLError, OSError):
        continue
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    clen = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            clen = int(value.strip())
    while len(body) < clen:
        chunk = c.recv(65536)
        if not chunk:
            break
        body += chunk
    with open(base + ".requests", "a") as f:
        f.write(head.split(b"\r\n")[0].decode() + " %d\n" % len(body))
    c.sendall(b"HTTP/1.1 202 Accepted\r\nrequest-id: fake-202-id\r\n"
              b"Retry-After: 30\r\nContent-Length: 100\r\n\r\npartial")
    c.close()
PY
fake_pid=$!
t_bg_pid "$fake_pid"
for i in $(seq 1 50); do
    [ -s "$T/fake202.port" ] && break
    sleep 0.1
done
if [ -s "$T/fake202.port" ]; then
    fake_port=$(cat "$T/fake202.port")
    sed "s|^graph_url = .*|graph_url = https://127.0.0.1:$fake_port|" "$CONF" \
	>"$T/fake202.conf"
    emu_reset
    relay "$T/mt1" -c "$T/fake202.conf" -q Q202CUT -f bob@contoso.test -- \
	thr@example.net
    expect_rc "202 then a cut-off body: accepted" 0
    t_eq "202 then a cut-off body: no status line on stdout" "$first" ""
    t_eq "202 then a cut-off body: posted once" \
	"$(grep -c 'POST /v1.0/users/bob@contoso.test/sendMail' \
	    "$T/fake202.requests" 2>/dev/null)" 1
    t_match "202 then a cut-off body: logged as sent" \
	"$(grep Q202CUT "$LOG")" 'dsn=2\.0\.0, status=sent \(202 Accepted, request-id=fake-202-id\)'
    relay "$T/mt1" -c "$T/fake202.conf" -q Q202NEXT -f bob@contoso.test -- \
	thr@example.net
    expect_rc "202 then a cut-off body: its Retry-After defers the next" 75
    t_eq "202 then a cut-off body: the next one waits, no request" \
	"$(grep -c sendMail "$T/fake202.requests" 2>/dev/null)" 1
else
    bad "202 then a cut-off body: the stand-in Graph did not start"
fi
kill "$fake_pid" 2>/dev/null
wait "$fake_pid" 2>/dev/null
emu_reset

# ---------------------------------------------------- slow response

sed 's/^\[global\]$/[global]\ntimeout = 2/' "$CONF" >"$T/timeout.conf"
grep -q '^timeout = 2$' "$T/timeout.conf" || bad "could not set timeout = 2"
emu_reset
emu_fault '{"match":"sendMail","action":"slow","delay":6}'
t_start=$(date +%s)
relay "$T/mt1" -c "$T/timeout.conf" -q QSLOW -f bob@contoso.test -- \
    thr@example.net
t_used=$(($(date +%s) - t_start))
expect_rc "slow response beyond timeout = 2" 75
expect_first "slow response" '^4\.[0-9]+\.[0-9]+ '
if [ "$t_used" -lt 6 ]; then
    ok "slow response: gave up after ${t_used}s (timeout 2s)"
else
    bad "slow response: took ${t_used}s, timeout is 2s"
fi
# Let the emulator finish the slow request before the next case.
sleep $((7 - t_used > 0 ? 7 - t_used : 0))

# ------------------------------------------------- token endpoint fault

emu_reset
emu_ctl POST /_emu/expire "{\"client_id\":\"$APP_ID\"}" >/dev/null
emu_fault '{"match":"token","status":401,"error":"invalid_client","aadsts":7000215}'
relay "$T/mt1" -c "$CONF" -q QTOK -f bob@contoso.test -- thr@example.net
expect_rc "token endpoint: invalid_client AADSTS7000215" 75
expect_first "token endpoint fault" '^4\.[0-9]+\.[0-9]+ '
t_match "token endpoint fault: names AADSTS7000215" "$out" 'AADSTS7000215'
t_match "token endpoint fault: remedy mentions the client secret" "$out" \
    '[Ss]ecret'
t_match "token endpoint fault: in the log" "$(grep QTOK "$LOG")" \
    'status=deferred.*7000215'
t_eq "token endpoint fault: nothing recorded" "$(sent 'len(s)')" 0

# The fault is gone: the next delivery gets a token and sends.  (The
# failure is remembered for token_retry_interval, see test-outage.sh:
# forget it, as if the interval had passed.)
rm -f "$T/state/tokens/app.fail"
emu_reset
relay "$T/mt1" -c "$CONF" -q QTOK2 -f bob@contoso.test -- thr@example.net
expect_rc "after the token fault clears" 0

# --------------------------------------------- ErrorInvalidRecipients

emu_reset
emu_fault '{"match":"sendMail","status":400,"code":"ErrorInvalidRecipients","message":"At least one recipient is not valid., A message can'"'"'t be sent because it contains no recipients."}'
relay "$T/mt1" -c "$CONF" -q QINV -f bob@contoso.test -- thr@example.net
expect_rc "ErrorInvalidRecipients" 67
expect_first "ErrorInvalidRecipients" '^5\.1\.1 '
expect_log "ErrorInvalidRecipients" QINV thr@example.net bob@contoso.test \
    5.1.1 bounced

# ------------------------------ parallel deliveries, one token refresh

# Make the cached app token expire on the relay's side: a token that
# lives AUTH_EXPIRY_MARGIN (lib/auth.h) + 2 s is stale after 2 seconds.
margin=$(sed -n 's/^#define[[:space:]]*AUTH_EXPIRY_MARGIN[[:space:]]*\([0-9]*\).*/\1/p' \
    "$top_srcdir/lib/auth.h")
emu_reset
emu_ctl POST /_emu/config "{\"access_token_lifetime\":$((${margin:-300} + 2))}" \
    >/dev/null
emu_ctl POST /_emu/expire "{\"client_id\":\"$APP_ID\"}" >/dev/null
relay "$T/mt1" -c "$CONF" -q QPAR0 -f bob@contoso.test -- thr@example.net
emu_ctl POST /_emu/config '{"access_token_lifetime":3600}' >/dev/null
sleep 3
emu_reset
relay_burst 10 par "$T/mt1" "$CONF"
t_eq "10 parallel deliveries, expired token: all exit 0" "$codes" 0000000000
t_eq "10 parallel deliveries: exactly 1 token request" \
    "$(estat token_requests)" 1
t_eq "10 parallel deliveries: 10 messages" "$(sent 'len(s)')" 10

# The same after Graph refuses the cached token (401 in every process).
emu_reset
emu_ctl POST /_emu/expire "{\"client_id\":\"$APP_ID\"}" >/dev/null
relay_burst 10 pbr "$T/mt1" "$CONF"
t_eq "10 parallel deliveries after a 401: all exit 0" "$codes" 0000000000
t_eq "10 parallel deliveries after a 401: exactly 1 token request" \
    "$(estat token_requests)" 1

# ----------------------------------------------- delegated account

# Sign in with the device-code flow: m365ctl polls, the test approves the
# code through the emulator's control API (the "user" at the browser).
emu_reset
if [ -x "$CTL" ]; then
    "$CTL" -c "$CONF" login deleg --device-code >"$T/login.out" 2>&1 &
    login_pid=$!
    t_bg_pid $login_pid
    code=""
    wait_until 15 emu_user_code && code=$(emu_user_code)
    if [ -n "$code" ]; then
	ok "delegated: device code $code issued"
	emu_ctl POST /_emu/device/approve \
	    "{\"user_code\":\"$code\",\"user\":\"alice@contoso.test\"}" >/dev/null
    else
	bad "delegated: no device code issued: $(cat "$T/login.out")"
    fi
    wait $login_pid
    lrc=$?
    t_eq "delegated: m365ctl login --device-code exits 0" "$lrc" 0
    t_match "delegated: m365ctl prints the user code" "$(cat "$T/login.out")" \
	"${code:-NO-CODE}"

    emu_reset
    mkmsg "$T/md" alice@contoso.test 'To: deleg@example.net'
    relay "$T/md" -c "$CONF" -q QDELEG -f alice@contoso.test -- \
	deleg@example.net
    expect_rc "delegated account" 0
    t_eq "delegated: sent from alice's mailbox" "$(sent "s[0]['mailbox']")" \
	alice@contoso.test
    t_eq "delegated: principal is the signed-in user" \
	"$(sent "s[0]['principal']")" alice@contoso.test
    t_eq "delegated: cached token from the login, no token request" \
	"$(estat token_requests)" 0
    expect_log "delegated" QDELEG deleg@example.net alice@contoso.test \
	2.0.0 sent

    # Revoked grant: the next refresh fails with AADSTS50173, the mail
    # is deferred and the account needs a new sign-in.
    emu_reset
    emu_ctl POST /_emu/revoke '{"user":"alice@contoso.test"}' >/dev/null
    relay "$T/md" -c "$CONF" -q QREVOKE -f alice@contoso.test -- \
	deleg@example.net
    expect_rc "delegated, revoked grant" 75
    expect_first "delegated, revoked grant" '^4\.[0-9]+\.[0-9]+ '
    t_match "revoked grant: names AADSTS50173" "$out" '50173'
    t_match "revoked grant: says to sign in again" "$out" \
	'm365ctl login deleg'
    # Offline: the next delivery does not even ask the token endpoint.
    n_tok=$(estat token_requests)
    relay "$T/md" -c "$CONF" -q QREVOKE2 -f alice@contoso.test -- \
	deleg@example.net
    expect_rc "delegated, offline account" 75
    t_eq "offline account: no token request" "$(estat token_requests)" "$n_tok"
else
    bad "delegated: $CTL not built, delegated account not tested"
fi

# ------------------------------------------------------ secrets in logs

secret=$(cat "$T/secret")
if [ -n "$secret" ] && grep -qF -- "$secret" "$LOG" "$T"/*.out "$T/out" \
    "$T/err" 2>/dev/null; then
    bad "the client secret appears in the log or output"
else
    ok "the client secret never appears in the log or output"
fi
if grep -qi 'bearer' "$LOG"; then
    bad "the log contains \"Bearer\""
else
    ok "the log never contains \"Bearer\""
fi
# Every token the store holds (access and refresh) must stay out of it.
leaks=0
for f in "$T"/state/tokens/*.json; do
    [ -f "$f" ] || continue
    for tok in $(python3 -c '
import json, sys
def walk(v):
    if isinstance(v, dict):
        for k, x in v.items():
            if "token" in k and isinstance(x, str) and len(x) >= 16:
                print(x)
            walk(x)
    elif isinstance(v, list):
        for x in v:
            walk(x)
walk(json.load(open(sys.argv[1])))' "$f"); do
	grep -qF -- "$tok" "$LOG" && leaks=$((leaks + 1))
    done
done
t_eq "no access or refresh token appears in the log" "$leaks" 0

t_done
