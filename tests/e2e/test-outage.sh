#!/bin/bash
#
# test-outage.sh - Microsoft 365 misbehaving: a hanging token endpoint,
# a stuck token lock, an error reply too large to read
#
# Issue 7.6: the account lock was held during the token request, every
# waiting process then made its own request with the full timeout, and
# a failure was not remembered: 20 parallel relays against a hanging
# token endpoint with timeout = 5 took 100 s in all and made 18 token
# requests.  Now a failed token request is remembered (state_dir/tokens/
# NAME.fail) for token_retry_interval seconds: the 20 finish in about
# one timeout, with one token request, all deferred with the same 4.x.x
# reason; after the interval the next delivery asks again and sends.  A
# lock holder that never finishes does not hold up the others beyond
# timeout + a margin.
#
# Issue 7.10: a 4xx reply whose body is over the 4 MB cap was reported as
# "connection to Graph lost after the whole message was sent".
#
# The hanging endpoint is the emulator's "slow" fault with a delay well
# beyond the relay's timeout (tests/emulator/README.md).  Run by "make
# check"; needs python3, openssl and curl.

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top_srcdir/tests/lib.sh"

relay_setup outage
TIMEOUT=5
# concurrency_wait is shorter than the timeout: the token request must
# not hold the mailbox's request slots, or the relays that wait for one
# would defer with "mailbox busy" instead of the token's reason.
sed -i "s/^\\[global\\]\$/[global]\\ntimeout = $TIMEOUT\\nconcurrency_wait = 1s/" "$CONF"
N=20

# now_ms - wall clock in milliseconds
now_ms() {
    echo $(($(date +%s%N) / 1000000))
}

# reason FILE - the first output line without the "remembered" note
reason() {
    head -n 1 "$1" | sed 's/ \[no new token request before [0-9:]*\]$//'
}

# send CONF QID - one delivery of $T/m1 from bob@contoso.test to
# QID@example.net (queue id QID), output in $T/QID.out; sets rc and
# elapsed (milliseconds)
send() {
    local t0
    t0=$(now_ms)
    timeout 60 "$RELAY" -c "$1" -q "$2" -f bob@contoso.test -- \
	"$2@example.net" <"$T/m1" >"$T/$2.out" 2>&1
    rc=$?
    elapsed=$(($(now_ms) - t0))
}

# within MSG MS - ok when the last send took less than MS milliseconds
within() {
    if [ "$elapsed" -lt "$2" ]; then
	ok "$1 (${elapsed} ms)"
    else
	bad "$1: took ${elapsed} ms, want < $2 ms"
    fi
}

printf 'From: Bob <bob@contoso.test>\nTo: x@example.net\nSubject: outage\nDate: Sat, 28 Nov 2026 10:00:00 +0000\nMessage-ID: <outage.%s@test.example>\n\nbody\n' "$$" >"$T/m1"

# ------------------------------- 20 relays, hanging token endpoint

# No token is cached yet: every relay needs one.  The endpoint accepts
# the connection and does not answer for 60 s.
emu_ctl POST /_emu/faults \
    '[{"match":"token","action":"slow","delay":60,"count":1000}]' >/dev/null
t0=$(now_ms)
relay_burst "$N" h "$T/m1" "$CONF"
elapsed=$(($(now_ms) - t0))
t_eq "$N parallel relays, hanging token endpoint: all defer (75)" "$codes" \
    "$(printf '75%.0s' $(seq 1 $N))"
if [ "$elapsed" -lt $(((TIMEOUT + 4) * 1000)) ]; then
    ok "$N parallel relays finish in about one timeout (${elapsed} ms, timeout ${TIMEOUT} s)"
else
    bad "$N parallel relays took ${elapsed} ms (timeout ${TIMEOUT} s; want < $((TIMEOUT + 4)) s)"
fi
ntok=$(emu_stat token_requests)
t_eq "$N parallel relays: one token request" "$ntok" 1
t_match "first line is 4.x.x and names the timeout" "$(head -n 1 "$T/h0.out")" \
    '^4\.[0-9]+\.[0-9]+ account app: no access token, will try again: .*[Tt]imeout'
nreasons=$(for ((i = 0; i < N; i++)); do reason "$T/h$i.out"; done | sort -u | wc -l)
t_eq "$N parallel relays: one and the same reason" "$nreasons" 1
memo=$T/state/tokens/app.fail
if [ -f "$memo" ]; then
    t_eq "the failure is remembered in state_dir/tokens/app.fail, mode 600" \
	"$(stat -c %a "$memo")" 600
    t_eq "... owned like the token store" "$(stat -c %U:%G "$memo")" \
	"$(stat -c %U:%G "$T/state/tokens")"
else
    bad "the failure is remembered in $memo"
fi

# Within the interval: at once, same reason, no token request.
send "$CONF" h20
t_eq "a delivery during the interval defers (75)" "$rc" 75
within "a delivery during the interval defers at once" 2000
t_eq "... with the same reason" "$(reason "$T/h20.out")" "$(reason "$T/h0.out")"
t_match "... and says when the next token request may be made" \
    "$(head -n 1 "$T/h20.out")" '\[no new token request before [0-9]{2}:[0-9]{2}:[0-9]{2}\]$'
t_eq "... and makes no token request" "$(emu_stat token_requests)" 1

# ------------------------------------------------------ recovery

# A short interval (token_retry_interval) so that the test can wait it.
# Its own failure first (the endpoint still hangs), then the endpoint
# comes back: the failure is remembered for those 3 seconds only.
sed "s/^\\[global\\]\$/[global]\\ntoken_retry_interval = 3/" "$CONF" \
    >"$T/short.conf"
rm -f "$memo"
send "$T/short.conf" r0
t_eq "token_retry_interval = 3: the hanging endpoint times out (75)" "$rc" 75
emu_ctl DELETE /_emu/faults >/dev/null
send "$T/short.conf" r1
t_eq "the endpoint is back, but the failure is still remembered: defers" "$rc" 75
t_eq "... without a token request" "$(emu_stat token_requests)" 2
sleep 3
send "$T/short.conf" r2
t_eq "after token_retry_interval the next delivery asks again and sends" "$rc" 0
t_eq "... with one more token request" "$(emu_stat token_requests)" 3
check "... and the remembered failure is gone" test ! -e "$memo"
check "... and the message reached Microsoft 365" \
    test "$(emu_ctl GET /_emu/sent | json_eval '[m["recipients"] for m in d]')" = '[["r2@example.net"]]'

# A failure after an answer (not a hang) is remembered the same way.
emu_ctl POST /_emu/reset '{"tokens": true}' >/dev/null
rm -f "$T/state/tokens/app.json"
emu_ctl POST /_emu/faults \
    '[{"match":"token","status":503,"count":1000}]' >/dev/null
for i in 1 2 3; do
    send "$T/short.conf" "s$i"
    eval "src$i=\$rc"
done
t_eq "503 from the token endpoint: three deferrals" "$src1$src2$src3" 757575
t_eq "503 from the token endpoint: one token request for three deliveries" \
    "$(emu_stat token_requests)" 1
t_eq "503: the same reason each time" "$(reason "$T/s3.out")" "$(reason "$T/s1.out")"
emu_ctl DELETE /_emu/faults >/dev/null

# ---------------------------------------- a lock holder that hangs

# Another process holds the account's token lock and never finishes
# (stopped, or stuck on a dead file system).  The relay gives up after
# timeout + a margin instead of waiting for it for ever.
rm -f "$memo" "$T/state/tokens/app.json"
sed "s/^timeout = $TIMEOUT\$/timeout = 1/" "$CONF" >"$T/t1.conf"
touch "$T/state/tokens/app.lock"
# -o: only flock itself holds the lock, so killing it releases the lock.
flock -o "$T/state/tokens/app.lock" sleep 40 &
holder=$!
t_bg_pid "$holder"
sleep 0.3
send "$T/t1.conf" l1
t_eq "a stuck lock holder: the relay defers (75)" "$rc" 75
within "a stuck lock holder: gave up after timeout 1 s + margin" 20000
t_match "a stuck lock holder: 4.4.1 says another process is asking" \
    "$(head -n 1 "$T/l1.out")" '^4\.4\.1 account app: .*another process is asking the token endpoint'
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null

# ------------------------------- an error reply larger than 4 MB (7.10)

emu_ctl POST /_emu/reset '{}' >/dev/null
"$PYTHON" -c '
import json, sys
print(json.dumps([{"match": "sendMail", "status": int(sys.argv[1]),
                   "code": "BadRequest", "message": "x" * (5 << 20)}]))' 400 \
    >"$T/bigfault.json"
emu_curl --fail -X POST -H 'Content-Type: application/json' \
    --data-binary "@$T/bigfault.json" "$EMU_URL/_emu/faults" >/dev/null
send "$CONF" big1
first=$(head -n 1 "$T/big1.out")
t_eq "400 with a 5 MB body: defers (75)" "$rc" 75
t_match "400 with a 5 MB body: Graph's status, the body not read" "$first" \
    '^4\.3\.0 unexpected reply from Graph \(400 \(no error details\); the reply body was not read: .*larger than'
if printf '%s\n' "$first" | grep -q 'connection to Graph lost'; then
    bad "400 with a 5 MB body: not \"connection lost\": $first"
else
    ok "400 with a 5 MB body: not \"connection lost\""
fi
"$PYTHON" -c '
import json
print(json.dumps([{"match": "sendMail", "status": 413,
                   "code": "RequestEntityTooLarge", "message": "x" * (5 << 20)}]))' \
    >"$T/bigfault.json"
emu_curl --fail -X POST -H 'Content-Type: application/json' \
    --data-binary "@$T/bigfault.json" "$EMU_URL/_emu/faults" >/dev/null
send "$CONF" big2
t_eq "413 with a 5 MB body: too large (65, 5.3.4)" \
    "$rc/$(head -n 1 "$T/big2.out" | cut -c1-5)" "65/5.3.4"

t_done
