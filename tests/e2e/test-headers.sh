#!/bin/bash
#
# test-headers.sh - what m365-relay changes in a header section, and what
# it must not change, checked on the MIME the emulator received
#
# Graph takes the recipients of a MIME message from its To, Cc and Bcc
# header fields (no envelope).  Header lines are therefore security
# relevant: a line break that Exchange honours but the relay does not see
# would add a recipient.  The emulator parses the MIME with Python's email
# package, which ends a header line at CR, LF or CRLF, like the behaviour
# reported for Exchange (tests/emulator/README.md).  Cases:
#   - a bare CR in Subject, in a To: comment, in an X- field, a CR CR
#     pair, a NUL: Graph is never asked to deliver to a non-envelope
#     address and the header section it gets has CRLF line ends only
#     (issue 7.2); nor through a display name, encoded word or group
#     name that Python's email package reads as an address;
#   - a first header line starting with white space: no bare LF in what
#     Graph gets; "To : x" (space before the colon) is a To field that
#     Exchange sees (issue 7.10);
#   - a DKIM-signed message (relaxed/relaxed, h= with To and Cc, a
#     repeated address): its To/Cc bytes are untouched and the signature
#     still verifies when no recipient had to be removed (issue 8.2);
#   - a header-only message reaches Graph byte for byte, without an added
#     empty line (issue 8.7).
#
# Run by "make check"; needs python3 and openssl.  The DKIM cases need the
# Debian package python3-dkim (dkimpy); without it they fail, naming it.

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top_srcdir/tests/lib.sh"

relay_setup headers

# ---------------------------------------------------------------- helpers
# (and from tests/lib.sh: relay, emu_reset, t_eq)

# sent EXPR - a Python expression over the recorded messages d; a list
# is printed space separated
sent() {
    emu_ctl GET /_emu/sent | json_eval "(lambda v: ' '.join(v)
    if isinstance(v, list) else str(v))($1)"
}

# eml EXPR [ARG] - a Python expression over b, the MIME bytes of the last
# message Graph accepted, and h, its header section (up to the first
# empty line of any form, as a strict reader would cut it); ARG is
# sys.argv[3]
eml() {
    local path
    path=$(sent "d[-1]['eml_path'] if d else ''")
    if [ -z "$path" ] || [ ! -f "$path" ]; then
	echo "(no message recorded)"
	return 0
    fi
    "$PYTHON" -c '
import re, sys
b = open(sys.argv[2], "rb").read()
m = re.search(rb"(\r\n|\r(?!\n)|\n)(\r\n|\r(?!\n)|\n)", b)
h = b[:m.start() + len(m.group(1))] if m else b
print(eval(sys.argv[1]))' "$1" "$path" "${2:-}"
}

# clean_header MSG - the header section Graph got has CRLF line ends
# only, no bare CR, no bare LF, no NUL
clean_header() {
    t_eq "$1: header section has CRLF line ends only, no NUL" \
	"$(eml 're.search(rb"\r(?!\n)|(?<!\r)\n|\x00", h) is None')" True
}

# send_one MSG FILE RCPT... - deliver, expect exit 0 and exactly RCPTs
send_one() {
    local msg=$1 file=$2 want
    shift 2
    emu_reset
    relay "$file" -c "$CONF" -f bob@contoso.test -- "$@"
    t_eq "$msg: exit 0" "$rc" 0
    want=$(printf '%s\n' "$@" | sort | tr '\n' ' ' | sed 's/ $//')
    t_eq "$msg: Graph delivers to the envelope recipients only" \
	"$(sent "sorted(d[0]['recipients']) if len(d) == 1 else len(d)")" \
	"$want"
}

# case_clean MSG TEXT - TEXT (printf format) as a message to
# x@example.org: delivered to it alone, CRLF-only header section
case_clean() {
    printf "$2" >"$T/case"
    send_one "$1" "$T/case" x@example.org
    clean_header "$1"
}

# ------------------------------------------------- bare CR in the header

case_clean "bare CR in Subject" \
    'From: bob@contoso.test\nTo: x@example.org\nSubject: hello\rBcc: evil@example.net\n\nbody\n'
t_eq "bare CR in Subject: the text stays in Subject" \
    "$(sent "d[0]['subject']")" "hello Bcc: evil@example.net"
case_clean "bare CR in a To: comment" \
    'From: bob@contoso.test\nTo: x@example.org (note\rBcc: evil@example.net)\nSubject: c\n\nbody\n'
case_clean "bare CR in an X- field (no To/Cc)" \
    'From: bob@contoso.test\nX-Note: a\rCc: evil@example.net\nSubject: x\n\nbody\n'
case_clean "bare CR inside To:" \
    'From: bob@contoso.test\nSubject: s\nTo: x@example.org\rCc: evil@example.net, x@example.org\n\nbody\n'
# CR CR would be an empty line for Exchange: the rest of the header (and
# the Bcc the relay adds) would become body.
case_clean "CR CR in a field (would end the header early)" \
    'From: bob@contoso.test\nX-Early: a\r\r\nSubject: s\n\nbody\n'
# CRLF input with a bare CR: the CRLF line ends are kept.
case_clean "CRLF message with a bare CR" \
    'From: bob@contoso.test\r\nSubject: a\rBcc: evil@example.net\r\nTo: x@example.org\r\n\r\nbody\r\n'
case_clean "NUL in Subject" \
    'From: bob@contoso.test\nTo: x@example.org\nSubject: nul\000Bcc: evil@example.net\n\nbody\n'

# Parser differentials: where Python's email package (the emulator's
# model of Exchange) reads another address, the mailbox is not kept.
case_clean "\"@\" in a display name" \
    'From: bob@contoso.test\nTo: evil@example.net <x@example.org>\nSubject: at in name\n\nbody\n'
t_eq "\"@\" in a display name: x@example.org goes to Bcc" \
    "$(sent "d[0]['bcc']")" x@example.org
case_clean "\"@\" in an encoded word" \
    'From: bob@contoso.test\nTo: =?utf-8?q?evil@example.net?= <x@example.org>\nSubject: ew\n\nbody\n'
case_clean "a group name with \"@\"" \
    'From: bob@contoso.test\nTo: evil@example.net Team: x@example.org;\nSubject: group\n\nbody\n'

# ------------------------------------------------ issue 7.10: line ends

printf ' X-Lead: first line starts with white space\nFrom: bob@contoso.test\nSubject: lead\n\nbody\n' \
    >"$T/lead-ws"
send_one "first header line starts with white space" "$T/lead-ws" \
    x@example.org
t_eq "first line white space: no bare LF anywhere in the MIME" \
    "$(eml 're.search(rb"(?<!\r)\n", b) is None')" True

printf 'From: bob@contoso.test\nTo : x@example.org\nSubject: space before colon\n\nbody\n' \
    >"$T/to-space"
send_one "\"To : x\" (space before the colon)" "$T/to-space" x@example.org
t_eq "\"To : x\": Exchange sees it in To" "$(sent "d[0]['to'] if d else []")" x@example.org
t_eq "\"To : x\": field name written without the space" \
    "$(eml 'b"\r\nTo: x@example.org\r\n" in h')" True

# --------------------------------------------- issue 8.2: To/Cc and DKIM

DKIMPY=
for p in "$PYTHON" python3 /usr/bin/python3; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import dkim' 2>/dev/null
    then
	DKIMPY=$p
	break
    fi
done
if [ -z "$DKIMPY" ]; then
    bad "python3-dkim (dkimpy) is installed (Debian: apt-get install python3-dkim)"
else
    openssl genrsa -out "$T/dkim.key" 2048 2>/dev/null
    openssl rsa -in "$T/dkim.key" -pubout -outform DER 2>/dev/null |
	base64 -w0 >"$T/dkim.pub"

    # dkim_sign IN OUT - sign IN (LF line ends) relaxed/relaxed; OUT has
    # LF line ends, as Postfix hands a message to pipe(8)
    dkim_sign() {
	"$DKIMPY" - "$1" "$2" "$T/dkim.key" <<'EOF'
import sys, dkim
src, dst, key = sys.argv[1:4]
msg = open(src, "rb").read().replace(b"\n", b"\r\n")
sig = dkim.sign(msg, b"test", b"contoso.test", open(key, "rb").read(),
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=[b"from", b"to", b"cc", b"subject",
                                 b"date", b"message-id"])
open(dst, "wb").write((sig + msg).replace(b"\r\n", b"\n"))
EOF
    }
    # dkim_verify FILE - True when the DKIM signature of FILE verifies
    # (the public key comes from the test, not from DNS)
    dkim_verify() {
	"$DKIMPY" - "$1" "$T/dkim.pub" <<'EOF'
import sys, dkim
msg = open(sys.argv[1], "rb").read()
if b"\r\n" not in msg:
    msg = msg.replace(b"\n", b"\r\n")
pub = open(sys.argv[2]).read().strip()
def dns(name, timeout=5):
    if name == b"test._domainkey.contoso.test.":
        return ("v=DKIM1; k=rsa; p=" + pub).encode()
    return None
print(bool(dkim.verify(msg, dnsfunc=dns)))
EOF
    }

    cat >"$T/dkim-src" <<'EOF'
From: Bob <bob@contoso.test>
To: Ann <a@example.org>, a@example.org,
	"Ann again" <A@Example.org>
Cc: b@example.org, Ann <a@example.org>
Subject: signed, with repeated addresses
Date: Sat, 28 Nov 2026 10:00:00 +0000
Message-ID: <dkim-dup@contoso.test>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

A signed body.
EOF
    dkim_sign "$T/dkim-src" "$T/dkim-msg"
    t_eq "DKIM: the signed input verifies" "$(dkim_verify "$T/dkim-msg")" True

    send_one "DKIM, repeated To/Cc addresses, all envelope" "$T/dkim-msg" \
	a@example.org b@example.org
    t_eq "DKIM: To bytes untouched" \
	"$(eml 'b"\r\nTo: Ann <a@example.org>, a@example.org,\r\n\t\"Ann again\" <A@Example.org>\r\n" in h')" True
    t_eq "DKIM: Cc bytes untouched" \
	"$(eml 'b"\r\nCc: b@example.org, Ann <a@example.org>\r\n" in h')" True
    t_eq "DKIM: signature verifies on what Graph got" \
	"$(dkim_verify "$(sent "d[0]['eml_path']")")" True

    # An envelope-only recipient: a Bcc field is added (not in h=).
    send_one "DKIM, plus an envelope-only recipient" "$T/dkim-msg" \
	a@example.org b@example.org c@example.org
    t_eq "DKIM + Bcc: c@example.org in Bcc" "$(sent "d[0]['bcc']")" \
	c@example.org
    t_eq "DKIM + Bcc: signature verifies on what Graph got" \
	"$(dkim_verify "$(sent "d[0]['eml_path']")")" True

    # A recipient that must go (split delivery): only that item goes.
    send_one "DKIM, b@example.org removed" "$T/dkim-msg" a@example.org
    t_eq "removal: To untouched (nothing to remove there)" \
	"$(eml 'b"\r\nTo: Ann <a@example.org>, a@example.org,\r\n\t\"Ann again\" <A@Example.org>\r\n" in h')" True
    t_eq "removal: only b@example.org left Cc" \
	"$(eml 'b"\r\nCc: Ann <a@example.org>\r\n" in h')" True
fi

# ------------------------------------------- issue 8.7: header-only mail

# (With a Message-ID: m365-relay adds one to a message that has none.)
printf 'From: bob@contoso.test\r\nTo: x@example.org\r\nSubject: header only\r\nMessage-ID: <hdr-only@e2e.test>\r\n' \
    >"$T/hdr-only"
send_one "header-only message" "$T/hdr-only" x@example.org
t_eq "header-only message: MIME byte for byte, no empty line added" \
    "$(eml 'b == open(sys.argv[3], "rb").read()' "$T/hdr-only")" True
printf 'From: bob@contoso.test\r\nTo: x@example.org\r\nSubject: empty body\r\nMessage-ID: <hdr-empty@e2e.test>\r\n\r\n' \
    >"$T/hdr-empty-body"
send_one "header, empty line, no body" "$T/hdr-empty-body" x@example.org
t_eq "header + empty line: MIME byte for byte" \
    "$(eml 'b == open(sys.argv[3], "rb").read()' "$T/hdr-empty-body")" True

t_done
