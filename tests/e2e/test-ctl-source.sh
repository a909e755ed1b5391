#!/bin/bash
#
# test-ctl-source.sh - m365ctl test SOURCE judges a [source] with
# m365-fetch's own code (issue 9): the folder walk of source.c and the
# MTA session of inject.c (inject_probe()), not copies of them.
#
# Covers: the deliver step opens the session an injection opens - the
# greeting, EHLO, then QUIT, never MAIL FROM - so an MTA that refuses
# EHLO and HELO fails the test (a greeting alone does not make an MTA
# usable), an MTA without 8BITMIME is a warning (m365-fetch cannot pass
# an 8-bit message to it), a 554 greeting fails, a usable MTA passes and
# gets no mail; with deliver_to = sendmail the program m365-fetch would
# run is checked (missing, a directory, executable) and not run; the
# folder step classifies Graph's replies as m365-fetch
# does: a 404 to the folder lookup without a mailbox error code means
# the folder does not exist, for m365ctl test and for m365-fetch alike.
# The SMTP server is tests/quirk-smtp.py on 127.0.0.1.
#
# Needs python3, curl and openssl; skips (77) without them.

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top_srcdir/tests/lib.sh"

t_init ctl-source

command -v python3 >/dev/null 2>&1 || skip_all "python3 not installed"
command -v curl >/dev/null 2>&1 || skip_all "curl not installed"
command -v ss >/dev/null 2>&1 || skip_all "ss (iproute2) not installed"
[ -x "$CTL" ] || { bad "$CTL is built (run make first)"; t_done; }
FETCH=$top_builddir/fetch/m365-fetch

emu_setup
CONF=$T/relay.conf
write_conf "$CONF"

QPORT=$("$PYTHON" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
echo ok >"$T/quirk.mode"
: >"$T/quirk.log"
"$PYTHON" "$top_srcdir/tests/quirk-smtp.py" "$QPORT" "$T/quirk.mode" \
    "$T/quirk.log" 2>"$T/quirk.err" &
t_bg_pid $!
wait_port "$QPORT" || { bad "quirk-smtp.py listens on port $QPORT"; t_done; }

cat >>"$CONF" <<EOF

[source q]
account = app
deliver_to = smtp://127.0.0.1:$QPORT
recipients = helpdesk@localhost
EOF
D="deliver: smtp://127\.0\.0\.1:$QPORT"

# ctl_test MODE [FILE] - the quirk server's MODE, then m365ctl test q
# with FILE (default $CONF): rc, out
ctl_test() {
    echo "$1" >"$T/quirk.mode"
    "$CTL" -c "${2:-$CONF}" test q >"$T/ctl.out" 2>&1 </dev/null
    rc=$?
    out=$(cat "$T/ctl.out")
    printf '%s\n' "$out" | sed 's/^/# /'
}

# ---- the MTA session of an injection, without a transaction
ctl_test ok
t_eq "usable MTA: exit" "$rc" 0
t_match "usable MTA: the greeting" "$out" "^ok   $D: the MTA answers: 220 quirk\.test ESMTP$"
t_nomatch "usable MTA: 8BITMIME offered, no warning" "$out" "8BITMIME"
t_eq "usable MTA: no MAIL FROM was sent" "$(cat "$T/quirk.log")" ""

ctl_test helo554
t_eq "EHLO and HELO refused: exit" "$rc" 1
t_match "EHLO and HELO refused: FAIL with the reply" "$out" \
    "^FAIL $D: the MTA refuses EHLO and HELO: 554 5\.7\.1 <[^>]*>: Helo command rejected"
t_match "EHLO and HELO refused: remedy" "$out" "remedy: .*smtpd_helo_restrictions"
t_nomatch "EHLO and HELO refused: not reported as working" "$out" "^ok   deliver"

ctl_test 7bit
t_eq "MTA without 8BITMIME: exit (a warning)" "$rc" 0
t_match "MTA without 8BITMIME: session ok" "$out" "^ok   $D: the MTA answers: 220 "
t_match "MTA without 8BITMIME: warned" "$out" \
    "^warn $D: the MTA does not offer 8BITMIME \(RFC 6152\)"
t_match "MTA without 8BITMIME: remedy" "$out" "remedy: enable 8BITMIME"
t_match "MTA without 8BITMIME: result with warnings" "$out" \
    "^result: all checks passed \(with warnings\)$"

ctl_test greet554
t_eq "554 greeting: exit" "$rc" 1
t_match "554 greeting: FAIL with the reply" "$out" \
    "^FAIL $D: the MTA refuses the connection: 554 5\.3\.2 "
t_eq "no MAIL FROM in any probe" "$(cat "$T/quirk.log")" ""

# ---- deliver_to = sendmail: the program m365-fetch would run, not run
SM=$T/bin/sendmail
SCONF=$T/sendmail.conf
sed -e "s|^\[global\]|[global]\nsendmail_path = $SM|" \
    -e "s|^deliver_to = smtp://.*|deliver_to = sendmail|" "$CONF" >"$SCONF"
ctl_test ok "$SCONF"
t_eq "no sendmail: exit" "$rc" 1
t_match "no sendmail: FAIL" "$out" "^FAIL deliver: sendmail: $SM: No such file or directory$"
t_match "no sendmail: remedy" "$out" "remedy: install the MTA"
mkdir -p "$SM"
ctl_test ok "$SCONF"
t_match "sendmail is a directory: FAIL" "$out" "^FAIL deliver: sendmail: $SM is not a regular file$"
t_match "sendmail is a directory: remedy" "$out" "remedy: set sendmail_path"
rmdir "$SM"
printf '#!/bin/sh\ntouch "%s"\nexit 0\n' "$T/sendmail.ran" >"$SM"
chmod 755 "$SM"
ctl_test ok "$SCONF"
t_eq "executable sendmail: exit" "$rc" 0
t_match "executable sendmail: ok" "$out" "^ok   deliver: sendmail: $SM is executable \(runs as \"$SM -i \[-B 8BITMIME\] -f SENDER -- RECIPIENTS\"\)$"
check "executable sendmail: not run by the test" test ! -e "$T/sendmail.ran"

# ---- the folder walk: Graph's replies judged as m365-fetch judges them
emu_ctl POST /_emu/faults '[{"match": "any", "path_contains": "mailFolders", "status": 404, "code": "ResourceNotFound", "message": "Resource could not be discovered.", "count": 1}]' >/dev/null
ctl_test ok
t_eq "folder 404 without a mailbox code: exit" "$rc" 1
t_match "folder 404 without a mailbox code: the folder does not exist" "$out" \
    "^FAIL folder: GET /users/\{mailbox\}/mailFolders/inbox: folder \"inbox\" does not exist in mailbox bob@contoso\.test \(HTTP 404 ResourceNotFound\)"
t_match "folder 404: remedy names the folder key" "$out" \
    "remedy: fix \"folder\" in \[source q\]"
t_nomatch "folder 404: not taken for a missing mailbox" "$out" "no user or mailbox"

if [ -x "$FETCH" ]; then
    emu_ctl POST /_emu/faults '[{"match": "any", "path_contains": "mailFolders", "status": 404, "code": "ResourceNotFound", "message": "Resource could not be discovered.", "count": 1}]' >/dev/null
    M365RELAY_ALLOW_ROOT=1 "$FETCH" -c "$CONF" --once q >"$T/fetch.out" 2>&1
    sed 's/^/# /' "$T/fetch.out"
    err=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("last_error") or "")' \
	"$T/state/sources/q.json")
    t_eq "m365-fetch, same reply: the same verdict" "$err" \
	"folder \"inbox\" does not exist in mailbox bob@contoso.test"
else
    echo "# $FETCH not built: m365-fetch's verdict is not compared"
fi
emu_ctl DELETE /_emu/faults >/dev/null

t_done
