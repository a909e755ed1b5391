#!/bin/bash
#
# test-metrics.sh - metrics, expiry warnings, keep-alive and admin notices
# (issue 13.1, 13.2) with m365-relay and m365ctl against the emulator
#
# 1. m365-relay sends, defers (503, 429 and the Retry-After that follows)
#    and bounces (too many recipients) messages of account "app";
#    "m365ctl status --prometheus" shows exactly those counts, the Graph
#    requests by status, the 429, the token request; --output writes the
#    same text to a 0644 file atomically, and the counts survive (every
#    relay is a new process; the file is read back by a new m365ctl).
# 2. keep-alive: "m365ctl keepalive" leaves a fresh refresh token alone
#    and renews one that has been unused for 40 days (its issue time in
#    the token file set back), as the emulator's token statistics show.
# 3. offline: a revoked grant (AADSTS50173) makes account "deleg" offline:
#    the metric is 1 with aadsts="50173"; admin_address gets exactly one
#    notice per change (offline, back online after m365ctl login) through
#    a capture sendmail_path, however often keepalive runs.
# 4. expiry: a certificate that expires in 10 days and a secret_expires 5
#    days away warn in m365ctl status, m365ctl test, the log (once a day,
#    not per message) and the metrics.
# 5. inbound: m365-fetch injects one message (capture sendmail) and parks
#    one over max_message_size: the source's counters and last round.

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top_srcdir/tests/lib.sh"

relay_setup metrics

# The capture "sendmail": one file per notice, arguments first.
mkdir -p "$T/mail"
chmod 777 "$T/mail"
cat >"$T/sendmail" <<EOF
#!/bin/sh
f=\$(mktemp "$T/mail/notice.XXXXXX")
{ printf 'ARGS: %s\n' "\$*"; cat; } >"\$f"
exit 0
EOF
chmod 755 "$T/sendmail"
sed -i "/^\[global\]/a admin_address = postmaster@example.org\nsendmail_path = $T/sendmail" "$CONF"

# prom - m365ctl status --prometheus into $T/prom; the exit code
prom() {
    "$CTL" -c "${1:-$CONF}" status --prometheus >"$T/prom" 2>"$T/prom.err"
}

# value LINE-START - the value of the sample whose name and labels are
# exactly LINE-START (e.g. 'm365relay_throttled_total{account="app"}')
value() {
    awk -v k="$1" 'substr($0, 1, length(k)) == k && substr($0, length(k) + 1, 1) == " " { print $2 }' "$T/prom"
}

# expect_value MSG SAMPLE WANT
expect_value() {
    t_eq "$1: $2" "$(value "$2")" "$3"
}

# notices - how many notices the capture sendmail got
notices() {
    ls "$T/mail" | wc -l
}

# token_set ACCOUNT KEY VALUE - change a number in the token file
token_set() {
    python3 -c '
import json, os, sys
p = sys.argv[1]
d = json.load(open(p))
d[sys.argv[2]] = int(sys.argv[3])
with open(p + ".t", "w") as f:
    json.dump(d, f)
os.chmod(p + ".t", 0o600)
os.rename(p + ".t", p)
' "$T/state/tokens/$1.json" "$2" "$3"
}

# mkmsg FILE - a small message from bob@contoso.test
mkmsg() {
    printf 'From: bob@contoso.test\nTo: x@example.net\nSubject: metrics %s\nMessage-ID: <%s.%s@test.example>\n\nHello.\n' \
	"$1" "${1##*/}" "$$" >"$1"
}

if ! ctl_login "$T/login.out"; then
    bad "m365ctl login deleg (device code through the emulator)"
    t_done
fi

# ------------------------------------------------------ 1. the counters

for i in 1 2 3; do
    mkmsg "$T/m$i"
    relay "$T/m$i" -c "$CONF" -q QS$i -f bob@contoso.test -- "s$i@example.net"
    t_eq "message $i sent (exit 0)" "$rc" 0
done

mkmsg "$T/m4"
emu_fault '{"match": "sendMail", "status": 503}'
relay "$T/m4" -c "$CONF" -q QD1 -f bob@contoso.test -- d1@example.net
t_eq "503: deferred (exit 75)" "$rc" 75
dsn503=${first%% *}
t_match "503: a 4.x.x code" "$dsn503" '^4\.[0-9]+\.[0-9]+$'

mkmsg "$T/m5"
emu_fault '{"match": "sendMail", "status": 429, "retry_after": 30}'
relay "$T/m5" -c "$CONF" -q QT1 -f bob@contoso.test -- t1@example.net
t_eq "429: deferred (exit 75)" "$rc" 75
dsn429=${first%% *}
# Retry-After in force: the next delivery defers without a request.
relay "$T/m5" -c "$CONF" -q QT1 -f bob@contoso.test -- t1@example.net
t_eq "Retry-After in force: deferred (exit 75)" "$rc" 75
t_match "Retry-After in force: says so" "$out" 'asked to wait'

rcpts=()
for ((i = 0; i < 501; i++)); do rcpts+=("r$i@example.net"); done
mkmsg "$T/m6"
relay "$T/m6" -c "$CONF" -q QB1 -f bob@contoso.test -- "${rcpts[@]}"
t_eq "501 recipients: bounced (exit 65)" "$rc" 65
t_match "501 recipients: 5.5.3" "$first" '^5\.5\.3 '

prom
t_eq "status --prometheus exits 0" "$?" 0
expect_value "sent" 'm365relay_messages_total{account="app",status="sent"}' 3
if [ "$dsn503" = "$dsn429" ]; then
    expect_value "deferred" "m365relay_messages_total{account=\"app\",status=\"deferred\",class=\"$dsn503\"}" 3
else
    expect_value "deferred (503)" "m365relay_messages_total{account=\"app\",status=\"deferred\",class=\"$dsn503\"}" 1
    # The 429 and the delivery that met its Retry-After.
    expect_value "deferred (429)" "m365relay_messages_total{account=\"app\",status=\"deferred\",class=\"$dsn429\"}" 2
fi
cp "$T/prom" "${KEEP_PROM:-/dev/null}" 2>/dev/null
expect_value "bounced" 'm365relay_messages_total{account="app",status="bounced",class="5.5.3"}' 1
expect_value "Graph 202" 'm365relay_graph_requests_total{account="app",status="202"}' 3
expect_value "Graph 503" 'm365relay_graph_requests_total{account="app",status="503"}' 1
expect_value "Graph 429" 'm365relay_graph_requests_total{account="app",status="429"}' 1
expect_value "throttled" 'm365relay_throttled_total{account="app"}' 1
expect_value "one token request" 'm365relay_token_requests_total{account="app"}' 1
expect_value "nothing throttled for cert" 'm365relay_throttled_total{account="cert"}' 0
ra=$(value 'm365relay_retry_after_seconds{account="app"}')
if [ -n "$ra" ] && [ "$ra" -gt 0 ] && [ "$ra" -le 30 ]; then
    ok "Retry-After in force: retry_after_seconds $ra"
else
    bad "Retry-After in force: retry_after_seconds [$ra], want 1-30"
fi
expect_value "online" 'm365relay_account_offline{account="app",aadsts=""}' 0
t_match "HELP and TYPE lines" "$(cat "$T/prom")" '^# TYPE m365relay_messages_total counter$'
t_nomatch "no token value in the metrics" "$(cat "$T/prom")" "$(cat "$T/secret")"
t_eq "every family has HELP and TYPE" "$(grep -c '^# HELP ' "$T/prom")" \
    "$(grep -c '^# TYPE ' "$T/prom")"
t_eq "every sample starts with m365relay_" \
    "$(grep -v '^#' "$T/prom" | grep -vc '^m365relay_[a-z_]*{[^}]*} -\?[0-9][0-9]*$')" 0
# The text format's rules, checked here (promtool, when installed, too):
# one HELP and one TYPE (counter or gauge) per family, before its
# samples; labels name="value" with \\, \" and \n escapes; a float value.
if out=$("$PYTHON" - "$T/prom" <<'PYEOF' 2>&1
import re, sys
typed, helped, seen_sample = {}, set(), set()
label = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:%s(?:,%s)*)?\})? (\S+)$' % (label, label))
for n, line in enumerate(open(sys.argv[1]), 1):
    line = line.rstrip("\n")
    m = re.match(r'^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$', line)
    if m:
        kind, name, rest = m.groups()
        if name in seen_sample:
            sys.exit("line %d: %s after a sample of %s" % (n, kind, name))
        if kind == "TYPE":
            if name in typed or rest not in ("counter", "gauge"):
                sys.exit("line %d: bad or second TYPE for %s" % (n, name))
            typed[name] = rest
        else:
            if name in helped:
                sys.exit("line %d: second HELP for %s" % (n, name))
            helped.add(name)
        continue
    m = sample.match(line)
    if not m:
        sys.exit("line %d: not a sample: %s" % (n, line))
    if m.group(1) not in typed or m.group(1) not in helped:
        sys.exit("line %d: %s has no HELP or TYPE before it" % (n, m.group(1)))
    float(m.group(3))
    seen_sample.add(m.group(1))
if not seen_sample:
    sys.exit("no sample")
PYEOF
); then
    ok "the exposition keeps the text format's rules"
else
    bad "the exposition keeps the text format's rules: $out"
fi
if command -v promtool >/dev/null 2>&1; then
    if promtool check metrics <"$T/prom" >"$T/promtool.out" 2>&1; then
	ok "promtool check metrics"
    else
	bad "promtool check metrics: $(cat "$T/promtool.out")"
    fi
fi

"$CTL" -c "$CONF" status --prometheus --output "$T/m365relay.prom"
t_eq "--output exits 0" "$?" 0
t_eq "--output file mode 0644" "$(stat -c %a "$T/m365relay.prom")" 644
t_eq "--output holds the same counters" \
    "$(grep _total "$T/m365relay.prom")" "$(grep _total "$T/prom")"
t_eq "no temporary file left" "$(ls "$T" | grep -c '^m365relay.prom.')" 0
rm -f "$T/state/throttle/"*

# ------------------------------------------------------ 2. keep-alive

before=$(emu_stat by_grant.refresh_token)
"$CTL" -c "$CONF" keepalive >"$T/ka.out" 2>&1
t_eq "keepalive exits 0" "$?" 0
t_eq "keepalive: a fresh refresh token is left alone" \
    "$(emu_stat by_grant.refresh_token)" "$before"
token_set deleg refresh_issued $(($(date +%s) - 40 * 86400))
"$CTL" -c "$CONF" keepalive >"$T/ka.out" 2>&1
t_eq "keepalive (idle 40 days) exits 0" "$?" 0
t_eq "keepalive: an idle refresh token is renewed" \
    "$(emu_stat by_grant.refresh_token)" "$((before + 1))"
t_match "keepalive: logged" "$(cat "$LOG")" \
    'account deleg: keep-alive: refresh token renewed \(unused for 40 days'
prom
age=$(value 'm365relay_refresh_token_age_seconds{account="deleg"}')
if [ -n "$age" ] && [ "$age" -lt 60 ]; then
    ok "refresh token age after the keep-alive: $age s"
else
    bad "refresh token age after the keep-alive: [$age], want < 60"
fi
"$CTL" -c "$CONF" keepalive >"$T/ka.out" 2>&1
t_eq "keepalive again: no second refresh" \
    "$(emu_stat by_grant.refresh_token)" "$((before + 1))"
t_eq "no notice while everything is online" "$(notices)" 0

# ------------------------------------------------------ 3. offline, notices

emu_ctl POST /_emu/revoke '{"user": "alice@contoso.test"}' >/dev/null
printf 'From: alice@contoso.test\nTo: x@example.net\nSubject: offline\n\nHi.\n' >"$T/ma"
relay "$T/ma" -c "$CONF" -q QO1 -f alice@contoso.test -- o1@example.net
t_eq "revoked grant: deferred (exit 75)" "$rc" 75
prom
expect_value "offline with its AADSTS code" \
    'm365relay_account_offline{account="deleg",aadsts="50173"}' 1
expect_value "the refused token" \
    'm365relay_graph_requests_total{account="deleg",status="401"}' 1
expect_value "the failed refresh" \
    'm365relay_token_failures_total{account="deleg",class="reauth"}' 1

"$CTL" -c "$CONF" keepalive >"$T/ka.out" 2>&1
"$CTL" -c "$CONF" keepalive >>"$T/ka.out" 2>&1
t_eq "offline: one notice for two keepalive runs" "$(notices)" 1
n1=$(ls "$T/mail" | head -n 1)
t_match "notice: to admin_address, null sender" "$(head -n 1 "$T/mail/$n1")" \
    'ARGS: -i -f +-- postmaster@example.org$|ARGS: -i -f <> -- postmaster@example.org$'
t_match "notice: subject" "$(cat "$T/mail/$n1")" '^Subject: m365relay on .*: account deleg is offline$'
t_match "notice: cause and fix" "$(cat "$T/mail/$n1")" 'AADSTS50173'
t_match "notice: Auto-Submitted" "$(cat "$T/mail/$n1")" '^Auto-Submitted: auto-generated$'
t_match "notice: logged" "$(cat "$LOG")" 'notice to=<postmaster@example.org>.*status=.*account deleg is offline'

if ! ctl_login "$T/login2.out"; then
    bad "m365ctl login deleg again"
fi
"$CTL" -c "$CONF" keepalive >"$T/ka.out" 2>&1
"$CTL" -c "$CONF" keepalive >>"$T/ka.out" 2>&1
t_eq "back online: one more notice" "$(notices)" 2
t_match "notice: back online" "$(cat "$T"/mail/*)" 'Subject: m365relay on .*: account deleg is back online'
prom
expect_value "online again" 'm365relay_account_offline{account="deleg",aadsts=""}' 0

# ------------------------------------------------------ 4. expiry

# A certificate of the test key that expires in 10 days; a secret in 5.
openssl req -x509 -new -key "$T/certs/client.key" -days 10 \
    -subj "/CN=m365relay soon" -out "$T/soon.pem" 2>/dev/null
secret_day=$(date -d '+5 days' +%F)
cert_end=$(date -d "$(openssl x509 -enddate -noout -in "$T/soon.pem" | cut -d= -f2)" +%s)
cert_day=$(date -d "@$cert_end" +%F)
EXP=$T/expiry.conf
cp "$CONF" "$EXP"
cat >>"$EXP" <<EOF

[account soon]
tenant = $EMU_TENANT
client_id = $EMU_APP_CERT
auth = certificate
certificate_file = $T/soon.pem
key_file = $T/certs/client.key
mailbox = shared@contoso.test
senders = @soon.test

[account sec]
tenant = $EMU_TENANT
client_id = $EMU_APP_SECRET
auth = secret
secret_file = $T/secret
secret_expires = $secret_day
mailbox = bob@contoso.test
senders = @sec.test
EOF

"$CTL" -c "$EXP" status soon sec >"$T/st.out" 2>&1
t_match "status: certificate warning" "$(cat "$T/st.out")" \
    "certificate: +WARNING: certificate $T/soon.pem of account soon expires on $cert_day \\(in 10 days\\): create a new certificate"
t_match "status: secret warning" "$(cat "$T/st.out")" \
    "client secret: +WARNING: client secret of account sec expires on $secret_day \\(in 5 days\\): create a new client secret"
"$CTL" -c "$EXP" status --json sec >"$T/st.json" 2>&1
t_eq "status --json: secret_warning" \
    "$(json_eval 'str(d[0]["secret_warning"]) + " " + str(d[0]["secret_expires"] > 0)' <"$T/st.json")" "True True"
"$CTL" -c "$EXP" status cert >"$T/st2.out" 2>&1
t_match "status: a certificate far from expiry does not warn" \
    "$(cat "$T/st2.out")" "certificate: +certificate $T/certs/client.pem of account cert expires on [0-9-]+ \\(in [0-9]+ days\\)$"

"$CTL" -c "$EXP" test soon >"$T/test.out" 2>&1
t_match "test: certificate warning" "$(cat "$T/test.out")" \
    "^warn expiry: certificate $T/soon.pem of account soon expires on $cert_day \\(in 10 days\\)"
"$CTL" -c "$EXP" test sec >"$T/test2.out" 2>&1
t_eq "test sec: passes (warnings are not failures)" "$?" 0
t_match "test: secret warning" "$(cat "$T/test2.out")" \
    "^warn expiry: client secret of account sec expires on $secret_day \\(in 5 days\\)"
t_match "test: result with warnings" "$(cat "$T/test2.out")" '^result: all checks passed \(with warnings\)$'

# The log: once a day per account, not per message.
for i in 1 2 3; do
    mkmsg "$T/e$i"
    relay "$T/e$i" -c "$EXP" -q QE$i -f robot@sec.test -- "e$i@example.net"
    t_eq "account sec: message $i sent" "$rc" 0
done
"$CTL" -c "$EXP" keepalive >"$T/ka.out" 2>&1
t_eq "log: the secret warning once for three messages and a keepalive" \
    "$(grep -c "client secret of account sec expires on $secret_day (in 5 days)" "$LOG")" 1
t_eq "log: the certificate warning once (keepalive)" \
    "$(grep -c "certificate $T/soon.pem of account soon expires on $cert_day (in 10 days)" "$LOG")" 1
t_match "notice: expiry" "$(cat "$T"/mail/*)" 'Subject: m365relay on .*: account sec: a credential expires soon'
n=$(notices)
"$CTL" -c "$EXP" keepalive >"$T/ka.out" 2>&1
t_eq "notice: expiry mailed once a day" "$(notices)" "$n"

prom "$EXP"
expect_value "metrics: certificate warning" \
    'm365relay_credential_expiry_warning{account="soon",credential="certificate"}' 1
expect_value "metrics: certificate expiry time" \
    'm365relay_certificate_expiry_timestamp_seconds{account="soon"}' "$cert_end"
expect_value "metrics: secret warning" \
    'm365relay_credential_expiry_warning{account="sec",credential="secret"}' 1
expect_value "metrics: secret expiry time" \
    'm365relay_secret_expiry_timestamp_seconds{account="sec"}' \
    "$(date -u -d "$secret_day" +%s)"
expect_value "metrics: no warning for cert" \
    'm365relay_credential_expiry_warning{account="cert",credential="certificate"}' 0

# ------------------------------------------------------ 5. inbound

# A [source] of bob's inbox through a capture sendmail; a message over
# max_message_size (1K) is parked, a small one injected.
cat >"$T/sendmail-in" <<EOF
#!/bin/sh
cat >"\$(mktemp "$T/inbox.XXXXXX")"
exit 0
EOF
chmod 755 "$T/sendmail-in"
IN=$T/in.conf
sed -e "s|^sendmail_path = .*|sendmail_path = $T/sendmail-in|" "$CONF" >"$IN"
cat >>"$IN" <<EOF

[source in]
account = app
mailbox = bob@contoso.test
deliver_to = sendmail
recipients = x@local.test
max_message_size = 1K
EOF
printf 'From: carol@example.net\nTo: bob@contoso.test\nSubject: small\n\nHi.\n' >"$T/small.eml"
emu_put_message bob@contoso.test "$T/small.eml" >/dev/null
emu_gen_messages bob@contoso.test 5000 >/dev/null
"$top_builddir/fetch/m365-fetch" -c "$IN" --once in >"$T/fetch.out" 2>&1
t_eq "m365-fetch: a round exits 0" "$?" 0
prom "$IN"
expect_value "inbound injected" 'm365relay_inbound_injected_total{source="in"}' 1
expect_value "inbound parked" 'm365relay_inbound_parked_total{source="in"}' 1
expect_value "source online" 'm365relay_source_offline{source="in",aadsts=""}' 0
last=$(value 'm365relay_source_last_success_timestamp_seconds{source="in"}')
if [ -n "$last" ] && [ "$last" -gt $(($(date +%s) - 300)) ]; then
    ok "last successful round: $last"
else
    bad "last successful round: [$last], want the last minutes"
fi
t_eq "the injected message went to sendmail" "$(ls "$T" | grep -c '^inbox\.')" 1

# A bad date is a configuration error with file:line.
sed -i "s/^secret_expires = .*/secret_expires = 2026-02-30/" "$EXP"
"$CTL" -c "$EXP" -n >"$T/n.out" 2>&1
t_eq "secret_expires 2026-02-30: exit 78" "$?" 78
t_match "secret_expires 2026-02-30: file:line" "$(cat "$T/n.out")" \
    "^$EXP:[0-9]+: bad date \"2026-02-30\" for secret_expires"

t_done
