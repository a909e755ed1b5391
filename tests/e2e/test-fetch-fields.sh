#!/usr/bin/env bash
# test-fetch-fields.sh - m365-fetch reads header fields with the one
# scanner of the library (msg_hdr_name()/msg_hdr_find() in lib/msg.c,
# also used by msg_read() and rcpt.c): a field written in the obsolete
# form "Name : value" (RFC 5322 section 4.5.3, white space before the
# colon) is that field for m365-fetch too, as it is for the relay, the
# milter and Postfix:
#
#   a. "Return-Path : <a@x>" gives the envelope sender
#   b. "X-M365Relay-Source : NAME; mailbox=..." naming this source and
#      mailbox is a loop: the message is not injected again
#   c. a first line "  Subject : text" starts at "Subject" (it is not
#      left where it would continue the trace fields)
#
# Needs root (namespaces, a private Postfix, useradd); without root it
# is skipped (exit 77).  Runs inside private net/uts/mount/pid
# namespaces like test-fetch.sh.

# shellcheck disable=SC2317  # helper functions run through check()
set -u

. "$(dirname "$0")/ns.sh"
e2e_start test-fetch-fields.sh "private Postfix, namespaces, useradd" \
    "run tests/run-all.sh as root: it installs postfix and the rest (CI does)" \
    postfix postconf postqueue setpriv

# ---- inside the namespaces
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/postfix.sh"
. "$top_srcdir/tests/fetch.sh"

SMTP_PORT=2555
fx_init fetch-fields
fx_source fld FieldsIn "$SMTP_PORT" read "reject_folder = Rejected"
fx_postfix "$SMTP_PORT" || { bad "private Postfix set up and started"; t_done; }
ok "private Postfix on 127.0.0.1:$SMTP_PORT"
for f in FieldsIn Rejected; do
    emu_folder_add bob@contoso.test "$f" >/dev/null || bad "create folder $f in the emulator"
done
M=$T/msg
mkdir -p "$M"

# delivered_file IMID - the delivered copy of a message
delivered_file() {
    grep -l -F -- "$1" "$MD"/new/* "$MD"/cur/* 2>/dev/null | head -n 1
}
# delivered IMID NAME - the NAME field of the delivered copy (first)
delivered() {
    delivered_file "$1" | xargs -r sed -n "s/^$2: //p" | head -n 1 | tr -d '\r'
}

mkin "$M/a" a "Return-Path : <bounce-a@example.org>"
A=$(put FieldsIn "$M/a")
mkin "$M/b" b "X-M365Relay-Source : fld; mailbox=bob@contoso.test; id=AAMkAGfields0000000000000000000000000000000000AAA="
B=$(put FieldsIn "$M/b")
CID="<c.$(date +%s%N)@fetch.test>"
{
    printf '  Subject : first line indented\r\n'
    printf 'From: "Sender c" <sender-c@example.org>\r\nTo: bob@contoso.test\r\n'
    printf 'Date: %s\r\nMessage-ID: %s\r\n\r\nbody of c\r\n' "$(date -R)" "$CID"
} > "$M/c"
C=$(put FieldsIn "$M/c")
fetch_rc 0 "a round with obsolete-syntax fields exits 0" --once fld

check "a: injected" wait_md "$(imid "$M/a")" 1
check "a: the envelope sender is the Return-Path ($(delivered "$(imid "$M/a")" Return-Path))" \
    test "$(delivered "$(imid "$M/a")" Return-Path)" = "<bounce-a@example.org>"

sleep 1
check "b: our own trace field: not injected" test "$(md_count "$(imid "$M/b")")" = 0
check "b: logged as skipped (a loop)" log_has "fld: id=$B, .*status=skipped"
w=$(msg_where "$(imid "$M/b")")
check "b: parked in Rejected like every loop: $w" test "${w% *}" = Rejected

check "c: injected" wait_md "$CID" 1
check "c: injected from the first field (logged)" \
    log_has "fld: id=$C: the header starts with 2 bytes of white space"
check "c: the Subject line is not indented under the trace fields" \
    grep -Eq '^Subject ?: first line indented' "$(delivered_file "$CID")"

check "no token or secret in the log" sh -c "! grep -qF -- \"\$(cat '$T/secret')\" '$T/relay.log'"
t_done
