#!/bin/bash
#
# t-headers.sh - m365-milter deliver mode: what Graph reads in the header
#
# t-headers.lua sends messages through the milter in deliver mode (every
# recipient with a domain goes to Graph): a bare CR in Subject, in an X-
# field, in a To: comment, a CR CR pair (issue 7.2); a field name with
# white space before the colon (7.10); repeated To/Cc addresses (8.2).
# This wrapper checks what the emulator recorded: Graph delivered to the
# envelope recipients only, the header section has CRLF line ends only,
# To/Cc bytes are kept.  (A message without a body, 8.7, is covered by
# tests/unit/test_msg.c: miltertest always sends a body.)  The emulator reads a bare CR as a
# line break, as reported for Exchange (tests/emulator/README.md).
# Skips (77) only when miltertest is missing.

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/milter/lib-milter.sh"

t_init milter-headers
milter_need
milter_user
emu_setup
write_conf "$T/h.conf"
LOG=$T/relay.log
: >"$LOG"
# The milter runs as RUN_USER: it reads the secrets and the state.
sed -i "s|^\\[global\\]\$|[global]\\nuser = $RUN_USER|" "$T/h.conf"
printf '\n[milter]\nmode = deliver\ntmp_dir = %s\n' "$T/spool" >>"$T/h.conf"
if [ "$(id -u)" = 0 ]; then
    chmod 711 "$T/certs"
    chmod 644 "$T/certs/ca.pem"
    milter_own "$T/state" "$T/secret" "$T/certs/client.key" "$LOG"
fi

milter_start h "$T/h.conf"
PID=$MILTER_PID
mt_run "deliver mode: miltertest t-headers.lua" t-headers.lua \
    "LUADIR=$LUADIR"

# rec MID EXPR - EXPR over m (the record of Message-ID <MID@contoso.test>),
# b (its MIME bytes) and h (its header section, up to the first empty
# line of any form: CRLF, bare CR or bare LF line ends)
rec() {
    emu_ctl GET /_emu/sent | "$PYTHON" -c '
import json, re, sys
mid, expr = sys.argv[1:3]
for m in json.load(sys.stdin):
    if m["message_id"] == "<%s@contoso.test>" % mid:
        b = open(m["eml_path"], "rb").read()
        e = re.search(rb"(\r\n|\r(?!\n)|\n)(\r\n|\r(?!\n)|\n)", b)
        h = b[:e.start() + len(e.group(1))] if e else b
        v = eval(expr)
        print(" ".join(v) if isinstance(v, list) else v)
        break
else:
    print("(no message with Message-ID <%s@contoso.test>)" % mid)' "$1" "$2"
}

for mid in cr-subject cr-xhdr cr-comment cr-cr to-space; do
    t_eq "$mid: Graph delivers to carol only" \
	"$(rec "$mid" "sorted(m['recipients'])")" carol@contoso.test
    t_eq "$mid: header section has CRLF line ends only" \
	"$(rec "$mid" 're.search(rb"\r(?!\n)|(?<!\r)\n|\x00", h) is None')" True
done
t_eq "cr-subject: the text stays in Subject" \
    "$(rec cr-subject "m['subject']")" "hello Bcc: evil@example.net"
t_eq "to-space: Exchange sees the To field" "$(rec to-space "m['to']")" \
    carol@contoso.test
t_eq "dup: Graph delivers to carol and dan" \
    "$(rec dup "sorted(m['recipients'])")" "carol@contoso.test dan@contoso.test"
t_eq "dup: To and Cc bytes kept" \
    "$(rec dup 'b"\r\nTo: carol@contoso.test, Carol <carol@contoso.test>\r\nCc: dan@contoso.test, carol@contoso.test\r\n" in h')" True

milter_stop "$PID"
check "SIGTERM: exit status 0" test $? = 0
t_done
