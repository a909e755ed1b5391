#!/usr/bin/env bash
# test-bounce.sh - bounces come home (issue 12), end to end through a
# real, private Postfix:
#
#   app -> SMTP (MAIL FROM bounces@app.example) -> Postfix :2525 ->
#   pipe(8) -> m365-relay -> the Microsoft 365 emulator (202) -> the
#   emulator files an NDR (NDR rule: unknown recipient) in the sending
#   mailbox's Inbox, as Exchange Online does -> m365-fetch, [source]
#   mode = bounces -> SMTP :2525 -> Postfix -> local(8) -> the Maildir
#   of bounces@app.example (a virtual alias of a local user)
#
# Cases: a. an unknown recipient: one DSN (RFC 3464: Status 5.1.10,
# Action failed, the original Message-ID in the returned headers, null
# envelope sender, From MAILER-DAEMON), the report moved after the MTA
# said 250, no second DSN in a later round; b. a null-sender original:
# no DSN, the report handled; c. a report of a message not in the send
# ledger: unmatched = keep leaves it in the Inbox unread, unmatched =
# postmaster:ADDR forwards it; an expired ledger record is unmatched;
# d. a delay notice (German): Action delayed, Status 4.4.7; e. a report
# without its machine part (French): the text gives the Status; f. kill
# -9 of m365-fetch between the injection and the move: the next round
# only moves the report, no second DSN; g. m365ctl status counts.
#
# Needs root (namespaces, a private Postfix, useradd) and postfix; skipped
# without root (exit 77).

# shellcheck disable=SC2317  # helper functions run through check()
set -u

. "$(dirname "$0")/ns.sh"
e2e_start test-bounce.sh "private Postfix, namespaces, useradd" \
    "run tests/run-all.sh as root: it installs postfix and the rest (CI does)" \
    postfix postconf postqueue setpriv

# ---- inside the namespaces
PF_DOMAINS="remote.example"
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/postfix.sh"

RUSER=m365test          # runs m365-relay (pipe) and m365-fetch
MBX=m365bnc             # the Maildir behind bounces@app.example
ADM=m365pm              # the postmaster of unmatched reports
SMTP_PORT=2525
CTL=$top_builddir/ctl/m365ctl
. "$top_srcdir/tests/fetch.sh"
fx_init bounce

# ---- configuration: the relay sends as bob (account app, the default);
# the bounce source reads bob's Inbox and moves handled reports
cat >> "$CONF" <<EOF

[source ndr]
account = app
mailbox = bob@contoso.test
folder = inbox
deliver_to = smtp://127.0.0.1:$SMTP_PORT
mode = bounces
bounce_from = MAILER-DAEMON@relay.contoso.test
unmatched = keep
after = move:Bounces
EOF
# NDR rules of the emulator (README "Non-delivery reports").
emu_ctl POST /_emu/config '{"ndr_rules": [
 {"recipient": "nobody@remote.example", "action": "failed", "status": "5.1.10", "lang": "en"},
 {"recipient": "slow@remote.example", "action": "delayed", "status": "4.4.7", "lang": "de"},
 {"recipient": "gone@remote.example", "action": "failed", "status": "5.1.10", "lang": "fr", "machine": false}]}' >/dev/null ||
    bad "emulator takes the NDR rules"
emu_folder_add bob@contoso.test Bounces >/dev/null || bad "create folder Bounces"

fx_postfix "$SMTP_PORT" "$ADM" || { bad "private Postfix set up and started"; t_done; }
# bounces@app.example is the application's bounce address.
printf 'bounces@app.example\t%s@local.test\n' "$MBX" > "$PF_ETC/virtual"
postconf -c "$PF_ETC" -e "virtual_alias_domains = app.example" \
    "virtual_alias_maps = texthash:$PF_ETC/virtual"
pf_postfix reload >/dev/null 2>&1
ok "private Postfix: remote.example -> m365-relay, app.example -> $MBX's Maildir"
MDA=$PF_DIR/mail/$ADM
M=$T/msg
mkdir -p "$M"

fetch -n
check "m365-fetch -n: a mode = bounces source without recipients is OK" \
    grep -q 'configuration OK' "$FETCH_OUT"

# ---- helpers

# app_send SENDER RCPT FILE TAG - the application's message over SMTP
# (smtplib: SENDER "" is the null sender); prints its Message-ID
app_send() {
    local mid
    mid="<$4.$(date +%s%N).$RANDOM@app.example>"
    printf 'From: bob@contoso.test\r\nTo: %s\r\nSubject: bounce %s\r\nDate: %s\r\nMessage-ID: %s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nHello %s.\r\n' \
	"$2" "$4" "$(date -R)" "$mid" "$4" > "$3"
    python3 - "$SMTP_PORT" "$1" "$2" "$3" <<'EOF' || return 1
import smtplib, sys
port, sender, rcpt, path = sys.argv[1:5]
s = smtplib.SMTP("127.0.0.1", int(port))
s.sendmail(sender, [rcpt], open(path, "rb").read())
s.quit()
EOF
    echo "$mid"
}

# inbox_reports - reports (messages) in bob's Inbox
inbox_reports() {
    mbb "len(f('inbox')['messages'])"
}

# inbox_is N - bob's Inbox holds N messages
inbox_is() {
    test "$(inbox_reports 2>/dev/null)" = "$1"
}

# wait_ndr N - until bob's Inbox holds N messages (30 s)
wait_ndr() {
    wait_until 30 inbox_is "$1"
}

# dsn MAILDIR ORIGMID FIELD - the DSNs in MAILDIR that return ORIGMID:
# FIELD "count", or a field of the one found ("return-path", "from",
# "subject", "action", "status", "final", "orig", "diag", "headers")
dsn() {
    python3 - "$1" "$2" "$3" <<'EOF'
import email, email.policy, os, sys
md, mid, field = sys.argv[1:4]
found = []
for sub in ("new", "cur"):
    d = os.path.join(md, sub)
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        m = email.message_from_bytes(open(os.path.join(d, name), "rb").read(),
                                     policy=email.policy.compat32)
        if m.get_content_type() != "multipart/report":
            continue
        info = {"return-path": m.get("Return-Path", ""), "from": m.get("From", ""),
                "subject": m.get("Subject", ""), "headers": "", "in-reply-to":
                m.get("In-Reply-To", "")}
        for part in m.walk():
            ct = part.get_content_type()
            if ct == "message/delivery-status":
                blocks = part.get_payload()
                rc = blocks[1] if len(blocks) > 1 else blocks[0]
                info.update({"action": rc.get("Action", ""), "status": rc.get("Status", ""),
                             "final": rc.get("Final-Recipient", ""),
                             "orig": rc.get("Original-Recipient", ""),
                             "diag": " ".join(str(rc.get("Diagnostic-Code", "")).split()),
                             "mta": blocks[0].get("Reporting-MTA", "")})
            elif ct == "text/rfc822-headers":
                info["headers"] = part.get_payload(decode=True).decode("ascii", "replace")
        if mid in info["headers"] or mid in info["in-reply-to"]:
            found.append(info)
if field == "count":
    print(len(found))
elif found:
    print(found[0].get(field, ""))
EOF
}

# dsn_is MAILDIR ORIGMID N - N DSNs return ORIGMID
dsn_is() {
    test "$(dsn "$1" "$2" count)" = "$3"
}

# md_has MAILDIR TEXT - a message in MAILDIR/new contains TEXT
md_has() {
    grep -rlqF -- "$2" "$1/new"
}

# md_total MAILDIR - messages in a Maildir
md_total() {
    find "$1/new" "$1/cur" -type f 2>/dev/null | wc -l
}

# ---- a. an unknown recipient: one DSN to bounces@app.example
MIDA=$(app_send bounces@app.example nobody@remote.example "$M/a" a) ||
    bad "a: the application's message is accepted by Postfix"
check "a: m365-relay sends it (the emulator accepted it with 202)" \
    wait_until 30 grep -q 'status=sent' "$T/relay.log"
check "a: the emulator files an NDR in bob's Inbox" wait_ndr 1
fetch_rc 0 "a: a round of the bounce source exits 0" --once ndr
check "a: one DSN arrives in the Maildir of bounces@app.example" \
    wait_until 15 dsn_is "$MD" "$MIDA" 1
t_eq "a: exactly one DSN" "$(dsn "$MD" "$MIDA" count)" 1
t_eq "a: Status 5.1.10" "$(dsn "$MD" "$MIDA" status)" 5.1.10
t_eq "a: Action failed" "$(dsn "$MD" "$MIDA" action)" failed
t_match "a: Final-Recipient the unknown recipient" "$(dsn "$MD" "$MIDA" final)" \
    '^rfc822; nobody@remote\.example$'
t_match "a: Original-Recipient from the send ledger" "$(dsn "$MD" "$MIDA" orig)" \
    '^rfc822; nobody@remote\.example$'
t_match "a: Diagnostic-Code quotes Exchange" "$(dsn "$MD" "$MIDA" diag)" \
    'RESOLVER\.ADR\.RecipientNotFound'
t_match "a: the original Message-ID in the returned headers" \
    "$(dsn "$MD" "$MIDA" headers)" "Message-ID: $MIDA"
t_eq "a: null envelope sender (Return-Path)" "$(dsn "$MD" "$MIDA" return-path)" "<>"
t_eq "a: From: the configured bounce_from" "$(dsn "$MD" "$MIDA" from)" \
    "Mail Delivery System <MAILER-DAEMON@relay.contoso.test>"
t_eq "a: the report left the Inbox" "$(inbox_reports)" 0
t_eq "a: the report is in Bounces" "$(mbb "len(f('Bounces')['messages'])")" 1
check "a: the log names the DSN" log_has 'ndr: id=.*to=<bounces@app\.example>.*status=sent'
fetch_rc 0 "a: a second round exits 0" --once ndr
sleep 1
t_eq "a: still one DSN after another round" "$(dsn "$MD" "$MIDA" count)" 1

# ---- b. a null-sender original: no DSN, the report is handled
N0=$(md_total "$MD")
MIDB=$(app_send "" nobody@remote.example "$M/b" b) || bad "b: sent with the null sender"
check "b: its NDR arrives in the Inbox" wait_ndr 1
fetch_rc 0 "b: a round exits 0" --once ndr
sleep 1
t_eq "b: no DSN (a bounce is never bounced)" "$(md_total "$MD")" "$N0"
check "b: the log names the report and why" \
    grep -qF "report of message-id $MIDB (queue id" "$T/relay.log"
check "b: ... its envelope sender was null" log_has 'envelope sender was null'
t_eq "b: the report was handled (moved)" "$(inbox_reports)" 0
t_eq "b: moved to Bounces, not parked" \
    "$(mbb "[m['flagStatus'] for m in f('Bounces')['messages']]")" \
    '["notFlagged", "notFlagged"]'
check "b: nothing was injected for it" sh -c "! grep -q 'ndr: .*status=bounced' '$T/relay.log'"

# ---- c. reports of no ledger record: keep, then postmaster; expired
sed "s|$MIDA|<stranger.1@elsewhere.example>|g" \
    "$(mbb "f('Bounces')['messages'][0]['path']")" > "$M/c1"
put inbox "$M/c1" >/dev/null || bad "c: file a report of a message not sent through m365relay"
fetch_rc 0 "c: a round exits 0 (unmatched = keep)" --once ndr
sleep 1
t_eq "c: keep: no DSN" "$(md_total "$MD")" "$N0"
t_eq "c: keep: the report stays in the Inbox" "$(inbox_reports)" 1
t_eq "c: keep: unread, not flagged" \
    "$(mbb "[f('inbox')['messages'][0][k] for k in ('isRead', 'flagStatus')]")" \
    '[false, "notFlagged"]'
check "c: keep: logged as not in the send ledger" log_has 'not in the send ledger'
fetch_rc 0 "c: keep: the next round leaves it alone" --once ndr
t_eq "c: keep: still in the Inbox" "$(inbox_reports)" 1
# unmatched = postmaster:ADDR for what comes next
sed -i "s|^unmatched = keep|unmatched = postmaster:$ADM@local.test|" "$CONF"
sed "s|$MIDA|<stranger.2@elsewhere.example>|g" "$M/c1" > "$M/c2"
sed -i "s|stranger\.1|stranger.2|g" "$M/c2"
put inbox "$M/c2" >/dev/null
fetch_rc 0 "c: a round exits 0 (unmatched = postmaster)" --once ndr
check "c: postmaster: the report itself arrives at the postmaster" \
    wait_until 15 md_has "$MDA" stranger.2@elsewhere.example
t_eq "c: postmaster: no DSN to the application" "$(md_total "$MD")" "$N0"
t_eq "c: postmaster: moved (the kept one stays)" "$(inbox_reports)" 1
# An expired send ledger record is no match.
MIDX=$(app_send bounces@app.example nobody@remote.example "$M/x" x)
check "c: expired: its NDR arrives" wait_ndr 2
python3 - "$T/state/ledger" "$MIDX" <<'EOF' || bad "c: age the ledger record"
import json, os, sys, time
d, mid = sys.argv[1:3]
for n in os.listdir(d):
    if not n.endswith(".json"):
        continue
    p = os.path.join(d, n)
    rec = json.load(open(p))
    if rec.get("message_id") == mid:
        rec["updated"] = rec["created"] = time.time() - 6 * 86400
        json.dump(rec, open(p, "w"))
        sys.exit(0)
sys.exit(1)
EOF
fetch_rc 0 "c: expired: a round exits 0" --once ndr
check "c: expired: forwarded to the postmaster, not returned" \
    wait_until 15 md_has "$MDA" "$MIDX"
t_eq "c: expired: no DSN to the application" "$(dsn "$MD" "$MIDX" count)" 0

# ---- d. a delay notice (German)
MIDD=$(app_send bounces@app.example slow@remote.example "$M/d" d)
check "d: the delay notice arrives in the Inbox" wait_ndr 2
fetch_rc 0 "d: a round exits 0" --once ndr
check "d: a DSN arrives" wait_until 15 dsn_is "$MD" "$MIDD" 1
t_eq "d: Action delayed" "$(dsn "$MD" "$MIDD" action)" delayed
t_eq "d: Status 4.4.7" "$(dsn "$MD" "$MIDD" status)" 4.4.7
t_eq "d: the subject says delayed" "$(dsn "$MD" "$MIDD" subject)" \
    "Delayed Mail (still being retried)"

# ---- e. a report without its machine part (French): the text
MIDE=$(app_send bounces@app.example gone@remote.example "$M/e" e)
check "e: the report arrives" wait_ndr 2
fetch_rc 0 "e: a round exits 0" --once ndr
check "e: a DSN arrives" wait_until 15 dsn_is "$MD" "$MIDE" 1
t_eq "e: Status from the text: 5.1.10" "$(dsn "$MD" "$MIDE" status)" 5.1.10
t_match "e: Final-Recipient from the send ledger" "$(dsn "$MD" "$MIDE" final)" \
    'gone@remote\.example'
check "e: the log says the machine part is missing" log_has 'no machine-readable part'

# ---- f. kill -9 between the injection and the move: no second DSN
MIDF=$(app_send bounces@app.example nobody@remote.example "$M/f" f)
check "f: its NDR arrives" wait_ndr 2
emu_fault '{"match": "move", "action": "slow", "delay": 30}' >/dev/null
"${FX_FETCH[@]}" --once ndr > "$T/fetch.kill.out" 2>&1 &
FPID=$!
check "f: the DSN is injected, then the move hangs" \
    wait_until 20 dsn_is "$MD" "$MIDF" 1
sleep 0.5
kill -9 "$FPID" 2>/dev/null
wait "$FPID" 2>/dev/null
emu_ctl DELETE /_emu/faults >/dev/null
fetch_rc 0 "f: the next round exits 0" --once ndr
check "f: it finished the after-action of the earlier run" \
    log_has 'finishing the after-action of an earlier run'
sleep 1
t_eq "f: one DSN, not two" "$(dsn "$MD" "$MIDF" count)" 1
t_eq "f: the report is moved now" "$(mbb "len([m for m in f('inbox')['messages'] if '$MIDF' in open(m['path'], errors='replace').read()])")" 0

# ---- g. m365ctl status counts per bounce source
"$CTL" -c "$CONF" status > "$T/status.out" 2>&1
awk '/^source /{f = ($2 == "ndr")} f' "$T/status.out" > "$T/status.ndr"
t_match "g: status shows 8 reports seen" "$(cat "$T/status.ndr")" 'bounce reports: *8($|[^0-9])'
t_match "g: status counts 4 DSNs" "$(cat "$T/status.ndr")" 'DSNs injected: *4($|[^0-9])'
t_match "g: status counts 3 unmatched" "$(cat "$T/status.ndr")" 'unmatched: *3($|[^0-9])'
"$CTL" -c "$CONF" status --json ndr > "$T/status.json" 2>&1
t_eq "g: status --json: reports, DSNs, unmatched" \
    "$(json_eval "[(s['mode'], s['bounce_reports'], s['dsns_injected'], s['unmatched']) for s in (d if isinstance(d, list) else d.get('sources', [])) if s.get('name') == 'ndr']" < "$T/status.json")" \
    '[["bounces", 8, 4, 3]]'

t_done
