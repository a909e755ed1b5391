#!/bin/bash
# test-emulator.sh - behaviour of the Microsoft 365 emulator (curl + openssl only)
#
# Checks the identity platform flows (device code, authorization code with
# PKCE, refresh rotation, revocation, client credentials with a secret and
# with a certificate assertion built here with the openssl CLI), Graph
# users and sendMail (exact MIME bytes, recipients, errors, permissions),
# mailboxes (folders, delta paging and incremental rounds, $value, PATCH,
# move, DELETE, shared-mailbox permissions), drafts in JSON and MIME form,
# attachments, upload sessions and send of a draft (the rebuilt MIME),
# every fault kind, the statistics and the control API.

set -u
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$top_srcdir/tests/lib.sh"

t_init emulator
emu_setup

TOKEN_PATH=/$EMU_TENANT/oauth2/v2.0/token
GRAPH_SCOPE=https://graph.microsoft.com

# req METHOD PATH CURL-ARGS... - sets STATUS; body in $T/body, headers in $T/hdr
req() {
    local method=$1 path=$2
    shift 2
    STATUS=$(emu_curl -o "$T/body" -D "$T/hdr" -w '%{http_code}' \
        -X "$method" "$@" "$EMU_URL$path") || STATUS="curl-failed"
}

# token CURL-ARGS... - POST to the token endpoint
token() {
    req POST "$TOKEN_PATH" "$@"
}

# field EXPR - evaluate EXPR over the last JSON body
field() {
    json_eval "$1" <"$T/body" 2>/dev/null
}

# header NAME - value of a response header of the last request
header() {
    tr -d '\r' <"$T/hdr" | sed -n "s/^$1: *//Ip" | tail -n 1
}

# expect DESC STATUS [EXPR VALUE]... - check status and JSON fields
expect() {
    local desc=$1 want=$2 got
    shift 2
    if [ "$STATUS" != "$want" ]; then
        bad "$desc (HTTP $STATUS, want $want)"
        sed 's/^/#   /' "$T/body"
        echo
        return 0
    fi
    while [ $# -ge 2 ]; do
        got=$(field "$1")
        if [ "$got" != "$2" ]; then
            bad "$desc ($1 is '$got', want '$2')"
            return 0
        fi
        shift 2
    done
    ok "$desc"
}

b64url() {
    openssl base64 -A | tr '+/' '-_' | tr -d '='
}

# send_mime PATH FILE TOKEN [CURL-ARGS...] - sendMail in MIME form
send_mime() {
    local path=$1 file=$2 tok=$3
    shift 3
    openssl base64 -A <"$file" >"$T/mime.b64"
    req POST "$path" -H "Authorization: Bearer $tok" \
        -H 'Content-Type: text/plain' --data-binary "@$T/mime.b64" "$@"
}

sent_field() {
    emu_ctl GET /_emu/sent | json_eval "$1"
}

#
# Device authorization grant.
#
req POST "/$EMU_TENANT/oauth2/v2.0/devicecode" \
    --data-urlencode "client_id=$EMU_APP_DELEG" \
    --data-urlencode "scope=offline_access $GRAPH_SCOPE/Mail.Send $GRAPH_SCOPE/User.Read"
expect "devicecode returns a user code" 200 \
    'd["verification_uri"]' https://microsoft.com/devicelogin \
    'd["interval"]' 1 'd["expires_in"]' 900
DEVICE_CODE=$(field 'd["device_code"]')
USER_CODE=$(field 'd["user_code"]')
check "GET /_emu/device lists the user code" \
    test "$(emu_user_code)" = "$USER_CODE"

poll_device() {
    token --data-urlencode "grant_type=urn:ietf:params:oauth:grant-type:device_code" \
        --data-urlencode "client_id=$EMU_APP_DELEG" \
        --data-urlencode "device_code=$1"
}
poll_device "$DEVICE_CODE"
expect "device code pending before approval" 400 \
    'd["error"]' authorization_pending 'd["error_codes"]' '[70016]'
check "AADSTS body format" field \
    'd["error_description"].startswith("AADSTS70016: ") and "Trace ID: " in d["error_description"] and d["error_uri"].endswith("code=70016") and d["trace_id"] and d["correlation_id"] and d["timestamp"] or sys.exit(1)'
check "approve via control API" emu_ctl POST /_emu/device/approve \
    "{\"user_code\": \"$USER_CODE\", \"user\": \"alice@contoso.test\"}"
sleep 1.1
poll_device "$DEVICE_CODE"
expect "approved device code yields tokens" 200 \
    'd["token_type"]' Bearer 'd["expires_in"]' 3600 \
    '"refresh_token" in d and "access_token" in d' true
DEV_AT=$(field 'd["access_token"]')
DEV_RT=$(field 'd["refresh_token"]')
sleep 1.1
poll_device "$DEVICE_CODE"
expect "a redeemed device code cannot be used again" 400 'd["error"]' invalid_grant

# slow_down (a code with a 5 s interval, polled twice at once)
emu_ctl POST /_emu/config '{"device_interval": 5}' >/dev/null
req POST "/$EMU_TENANT/oauth2/v2.0/devicecode" \
    --data-urlencode "client_id=$EMU_APP_DELEG" --data-urlencode "scope=$GRAPH_SCOPE/Mail.Send"
emu_ctl POST /_emu/config '{"device_interval": 1}' >/dev/null
DC_SLOW=$(field 'd["device_code"]')
poll_device "$DC_SLOW"
expect "first poll: authorization_pending" 400 'd["error"]' authorization_pending
poll_device "$DC_SLOW"
expect "polling faster than the interval gives slow_down" 400 'd["error"]' slow_down

# declined
req POST "/$EMU_TENANT/oauth2/v2.0/devicecode" \
    --data-urlencode "client_id=$EMU_APP_DELEG" --data-urlencode "scope=$GRAPH_SCOPE/Mail.Send"
DC2=$(field 'd["device_code"]')
check "deny via control API" emu_ctl POST /_emu/device/deny \
    "{\"user_code\": \"$(field 'd["user_code"]')\"}"
poll_device "$DC2"
expect "denied device code: authorization_declined" 400 'd["error"]' authorization_declined

# expired
emu_ctl POST /_emu/config '{"device_expires_in": 1}' >/dev/null
req POST "/$EMU_TENANT/oauth2/v2.0/devicecode" \
    --data-urlencode "client_id=$EMU_APP_DELEG" --data-urlencode "scope=$GRAPH_SCOPE/Mail.Send"
DC3=$(field 'd["device_code"]')
emu_ctl POST /_emu/config '{"device_expires_in": 900}' >/dev/null
sleep 1.2
poll_device "$DC3"
expect "expired device code: expired_token 70019" 400 \
    'd["error"]' expired_token 'd["error_codes"]' '[70019]'

# no offline_access: no refresh token
req POST "/$EMU_TENANT/oauth2/v2.0/devicecode" \
    --data-urlencode "client_id=$EMU_APP_DELEG" --data-urlencode "scope=$GRAPH_SCOPE/Mail.Send"
DC4=$(field 'd["device_code"]')
emu_ctl POST /_emu/device/approve "{\"user_code\": \"$(field 'd["user_code"]')\"}" >/dev/null
poll_device "$DC4"
expect "without offline_access there is no refresh token" 200 \
    '"refresh_token" in d' false

#
# Authorization code + PKCE (S256).
#
VERIFIER=$(openssl rand -base64 48 | tr '+/' '-_' | tr -d '=\n')
CHALLENGE=$(printf '%s' "$VERIFIER" | openssl dgst -sha256 -binary | b64url)
REDIRECT=http://127.0.0.1:8400/callback
authorize() {
    req GET "/organizations/oauth2/v2.0/authorize" -G \
        --data-urlencode "client_id=$EMU_APP_DELEG" \
        --data-urlencode "response_type=code" \
        --data-urlencode "redirect_uri=$REDIRECT" \
        --data-urlencode "scope=offline_access $GRAPH_SCOPE/Mail.Send $GRAPH_SCOPE/Mail.Send.Shared" \
        --data-urlencode "state=st-123" "$@"
}
authorize --data-urlencode "code_challenge=$CHALLENGE" \
    --data-urlencode "code_challenge_method=S256"
LOCATION=$(header Location)
if [ "$STATUS" = 302 ] && [[ $LOCATION == "$REDIRECT?code="*"&state=st-123" ]]; then
    ok "authorize redirects with code and state"
else
    bad "authorize redirects with code and state (HTTP $STATUS, Location $LOCATION)"
fi
CODE=$(printf '%s' "$LOCATION" | sed -n 's/.*[?&]code=\([^&]*\).*/\1/p')
authorize --data-urlencode "code_challenge=$CHALLENGE" \
    --data-urlencode "code_challenge_method=plain"
check "authorize with code_challenge_method=plain is a 400 page" \
    test "$STATUS" = 400
authorize
check "authorize without a PKCE challenge is a 400 page" test "$STATUS" = 400

redeem() {
    token --data-urlencode "grant_type=authorization_code" \
        --data-urlencode "client_id=$EMU_APP_DELEG" \
        --data-urlencode "code=$CODE" --data-urlencode "redirect_uri=$2" \
        --data-urlencode "code_verifier=$1"
}
redeem "${VERIFIER}x" "$REDIRECT"
expect "wrong PKCE verifier is rejected" 400 \
    'd["error"]' invalid_grant 'd["error_codes"]' '[501481]'
redeem "$VERIFIER" "http://127.0.0.1:8401/callback"
expect "different redirect_uri is rejected" 400 'd["error"]' invalid_grant
redeem "$VERIFIER" "$REDIRECT"
expect "correct PKCE verifier yields tokens" 200 \
    '"refresh_token" in d' true
CODE_AT=$(field 'd["access_token"]')
CODE_RT=$(field 'd["refresh_token"]')
redeem "$VERIFIER" "$REDIRECT"
expect "an authorization code is redeemed only once" 400 \
    'd["error_codes"]' '[54005]'

#
# Refresh token rotation.
#
refresh() {
    token --data-urlencode "grant_type=refresh_token" \
        --data-urlencode "client_id=$EMU_APP_DELEG" \
        --data-urlencode "refresh_token=$1" \
        --data-urlencode "scope=offline_access $GRAPH_SCOPE/Mail.Send"
}
refresh "$DEV_RT"
expect "refresh returns new tokens" 200 '"refresh_token" in d' true
RT2=$(field 'd["refresh_token"]')
check "the refresh token rotates" test "$RT2" != "$DEV_RT" -a -n "$RT2"
refresh "$DEV_RT"
expect "the old refresh token stays valid" 200
refresh "not-a-refresh-token"
expect "unknown refresh token: invalid_grant" 400 'd["error"]' invalid_grant

#
# Client credentials.
#
client_secret() {
    token --data-urlencode "grant_type=client_credentials" \
        --data-urlencode "client_id=$EMU_APP_SECRET" \
        --data-urlencode "scope=${2:-$GRAPH_SCOPE/.default}" \
        --data-urlencode "client_secret@$1"
}
client_secret "$T/secret"
expect "client credentials with the right secret" 200 \
    'd["scope"]' "$GRAPH_SCOPE/.default" '"refresh_token" in d' false
APP_AT=$(field 'd["access_token"]')
printf 'wrong-secret' >"$T/badsecret"
client_secret "$T/badsecret"
expect "wrong client secret: 401 invalid_client 7000215" 401 \
    'd["error"]' invalid_client 'd["error_codes"]' '[7000215]'
client_secret "$T/secret" "$GRAPH_SCOPE/Mail.Send"
expect "client credentials need a /.default scope" 400 \
    'd["error"]' invalid_scope 'd["error_codes"]' '[1002012]'
token --data-urlencode "grant_type=client_credentials" \
    --data-urlencode "client_id=99999999-0000-0000-0000-000000000000" \
    --data-urlencode "scope=$GRAPH_SCOPE/.default" --data-urlencode "client_secret=x"
expect "unknown client id: unauthorized_client 700016" 400 \
    'd["error"]' unauthorized_client 'd["error_codes"]' '[700016]'
req POST "/contoso.test/oauth2/v2.0/token" -u "$EMU_APP_SECRET:$(cat "$T/secret")" \
    --data-urlencode "grant_type=client_credentials" \
    --data-urlencode "scope=$GRAPH_SCOPE/.default"
expect "client secret via HTTP Basic authentication" 200
req POST "/wrong.test/oauth2/v2.0/token" --data-urlencode "grant_type=client_credentials"
expect "unknown tenant: AADSTS90002" 400 'd["error_codes"]' '[90002]'

#
# Certificate credentials: a JWT assertion built with the openssl CLI.
#
# make_assertion ALG [AUD] - print a signed client assertion
make_assertion() {
    local alg=$1 aud=${2:-https://login.microsoftonline.com/$EMU_TENANT_ID/oauth2/v2.0/token}
    local now hdr claims sigopt=() tp
    now=$(date +%s)
    if [ "$alg" = PS256 ]; then
        tp=$(openssl x509 -in "$T/certs/client.pem" -outform DER |
            openssl dgst -sha256 -binary | b64url)
        hdr=$(printf '{"alg":"PS256","typ":"JWT","x5t#S256":"%s"}' "$tp" | b64url)
        sigopt=(-sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest)
    else
        tp=$(openssl x509 -in "$T/certs/client.pem" -outform DER |
            openssl dgst -sha1 -binary | b64url)
        hdr=$(printf '{"alg":"RS256","typ":"JWT","x5t":"%s"}' "$tp" | b64url)
    fi
    claims=$(printf '{"aud":"%s","iss":"%s","sub":"%s","jti":"%s","nbf":%d,"iat":%d,"exp":%d}' \
        "$aud" "$EMU_APP_CERT" "$EMU_APP_CERT" "$(openssl rand -hex 16)" \
        "$now" "$now" $((now + 600)) | b64url)
    printf '%s.%s.%s' "$hdr" "$claims" "$(printf '%s.%s' "$hdr" "$claims" |
        openssl dgst -sha256 -sign "$T/certs/client.key" ${sigopt[@]+"${sigopt[@]}"} |
        b64url)"
}
assert_token() {
    token --data-urlencode "grant_type=client_credentials" \
        --data-urlencode "client_id=$EMU_APP_CERT" \
        --data-urlencode "scope=$GRAPH_SCOPE/.default" \
        --data-urlencode "client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer" \
        --data-urlencode "client_assertion=$1"
}
JWT=$(make_assertion PS256)
assert_token "$JWT"
expect "PS256 assertion (x5t#S256) is accepted" 200 \
    'd["scope"]' "$GRAPH_SCOPE/.default"
CERT_AT=$(field 'd["access_token"]')
assert_token "$(make_assertion RS256 "$EMU_URL/$EMU_TENANT/oauth2/v2.0/token")"
expect "RS256 assertion (x5t) is accepted" 200
# Tamper: replace the claims with other claims (longer exp), keep the signature.
IFS=. read -r J_H J_C J_S <<<"$JWT"
J_C2=$(printf '%s' "$J_C" | tr -- '-_' '+/' | { c=$(cat); while [ $(( ${#c} % 4 )) -ne 0 ]; do c="$c="; done; printf '%s' "$c"; } |
    openssl base64 -d -A | sed 's/"exp":\([0-9]*\)/"exp":\19/' | b64url)
assert_token "$J_H.$J_C2.$J_S"
expect "tampered assertion: 401 invalid_client 700027" 401 \
    'd["error"]' invalid_client 'd["error_codes"]' '[700027]'
# PKCS#1 v1.5 signature labelled PS256 must fail the PSS check.
J_SIG_V15=$(printf '%s.%s' "$J_H" "$J_C" | openssl dgst -sha256 -sign "$T/certs/client.key" | b64url)
assert_token "$J_H.$J_C.$J_SIG_V15"
expect "PS256 header with an RS256 signature is rejected" 401 'd["error_codes"]' '[700027]'
assert_token "$(make_assertion PS256 https://login.microsoftonline.com/other.test/oauth2/v2.0/token)"
expect "assertion for another tenant's token endpoint is rejected" 401 \
    'd["error_codes"]' '[700027]'

#
# Graph: users.
#
req GET /v1.0/users/alice@contoso.test -H "Authorization: Bearer $APP_AT"
expect "GET /users/{upn}" 200 'd["userPrincipalName"]' alice@contoso.test \
    'd["displayName"]' Alice 'd["mail"]' alice@contoso.test
check "every response has a request-id" test -n "$(header request-id)"
req GET /v1.0/me -H "Authorization: Bearer $DEV_AT"
expect "GET /me with a delegated token" 200 'd["userPrincipalName"]' alice@contoso.test
req GET /v1.0/users/nobody@contoso.test -H "Authorization: Bearer $APP_AT"
expect "unknown user: 404" 404 'd["error"]["code"]' Request_ResourceNotFound
req GET /v1.0/users/onprem@contoso.test -H "Authorization: Bearer $APP_AT"
expect "mailbox not enabled for REST: 404" 404 'd["error"]["code"]' MailboxNotEnabledForRESTAPI
req GET /v1.0/users/alice@contoso.test
expect "no token: 401 InvalidAuthenticationToken" 401 \
    'd["error"]["code"]' InvalidAuthenticationToken \
    '"request-id" in d["error"]["innerError"]' true
req GET /v1.0/users/alice@contoso.test -H "Authorization: Bearer bogus"
expect "unknown token: 401" 401 'd["error"]["code"]' InvalidAuthenticationToken

#
# Graph: sendMail.
#
emu_ctl POST /_emu/reset >/dev/null
printf '%s\r\n' \
    'From: Bob <bob@contoso.test>' \
    'To: "Doe, John" <John@Example.org>, plain@example.org' \
    'Cc: Carol <carol@example.net>,' \
    ' (comment) dave@example.net' \
    'Bcc: secret@example.com' \
    'Subject: =?UTF-8?B?SGVsbG8gV8O2cmxk?=' \
    'Message-ID: <test-1@contoso.test>' \
    'MIME-Version: 1.0' \
    'Content-Type: text/plain; charset=utf-8' \
    '' >"$T/msg1.eml"
head -c 2000 /dev/urandom | openssl base64 >>"$T/msg1.eml"
send_mime /v1.0/users/bob@contoso.test/sendMail "$T/msg1.eml" "$APP_AT" \
    -H 'Expect: 100-continue' -H 'client-request-id: crid-1' -v 2>"$T/curl.err"
expect "sendMail MIME (app token) is accepted" 202
check "202 has an empty body" test ! -s "$T/body"
check "client-request-id is echoed" test "$(header client-request-id)" = crid-1
check "request-id header on 202" test -n "$(header request-id)"
check "Expect: 100-continue is answered with 100 Continue" grep -q 'HTTP/1.1 100 Continue' "$T/curl.err"
check "one message recorded" test "$(emu_sent_count)" = 1
EML=$(sent_field 'd[0]["eml_path"]')
check "recorded .eml has the exact MIME bytes" cmp "$EML" "$T/msg1.eml"
check "sent/000001.json exists" test -s "$EMU_DATA/sent/000001.json"
check "recipients are To+Cc+Bcc in header order" test "$(sent_field 'd[0]["recipients"]')" = \
    '["john@example.org", "plain@example.org", "carol@example.net", "dave@example.net", "secret@example.com"]'
check "bcc recorded" test "$(sent_field 'd[0]["bcc"]')" = '["secret@example.com"]'
check "recorded fields" test "$(sent_field '[d[0][k] for k in ("seq","mailbox","form","from","subject","message_id","client_id","principal")]')" = \
    "[1, \"bob@contoso.test\", \"mime\", \"bob@contoso.test\", \"Hello W\\u00f6rld\", \"<test-1@contoso.test>\", \"$EMU_APP_SECRET\", \"$EMU_APP_SECRET\"]"
check "recorded size" test "$(sent_field 'd[0]["size"]')" = "$(wc -c <"$T/msg1.eml")"
check "recorded request_id matches the response" test "$(sent_field 'd[0]["request_id"]')" = "$(header request-id)"

printf 'From: bob@contoso.test\r\nSubject: none\r\n\r\nbody\r\n' >"$T/norcpt.eml"
send_mime /v1.0/users/bob@contoso.test/sendMail "$T/norcpt.eml" "$APP_AT"
expect "no recipients: 400 ErrorInvalidRecipients" 400 \
    'd["error"]["code"]' ErrorInvalidRecipients
req POST /v1.0/users/bob@contoso.test/sendMail -H "Authorization: Bearer $APP_AT" \
    -H 'Content-Type: text/plain' --data-binary 'not*base64!'
expect "bad base64: 400 ErrorMimeContentInvalidBase64String" 400 \
    'd["error"]["code"]' ErrorMimeContentInvalidBase64String
head -c 4194305 /dev/zero | tr '\0' A >"$T/big.b64"
req POST /v1.0/users/bob@contoso.test/sendMail -H "Authorization: Bearer $APP_AT" \
    -H 'Content-Type: text/plain' --data-binary "@$T/big.b64"
expect "body over 4 MB: 413" 413 'd["error"]["code"]' RequestEntityTooLarge \
    'd["error"]["message"]' "The maximum request length supported is 4MB."
head -c 4194304 /dev/zero | tr '\0' A >"$T/max.b64"
req POST /v1.0/users/bob@contoso.test/sendMail -H "Authorization: Bearer $APP_AT" \
    -H 'Content-Type: text/plain' --data-binary "@$T/max.b64"
check "a body of exactly 4 MB is not a 413" test "$STATUS" != 413
check "errors recorded nothing" test "$(emu_sent_count)" = 1

cat >"$T/msg.json" <<'EOF'
{"message": {"subject": "JSON form", "body": {"contentType": "Text", "content": "hi"},
 "toRecipients": [{"emailAddress": {"address": "To1@example.org"}}],
 "ccRecipients": [{"emailAddress": {"address": "cc1@example.org", "name": "C"}}],
 "bccRecipients": [{"emailAddress": {"address": "bcc1@example.org"}}]},
 "saveToSentItems": false}
EOF
req POST /v1.0/users/shared@contoso.test/sendMail -H "Authorization: Bearer $CERT_AT" \
    -H 'Content-Type: application/json' --data-binary "@$T/msg.json"
expect "sendMail JSON form (certificate app token) is accepted" 202
check "JSON form recorded" test "$(sent_field '[d[1][k] for k in ("form","mailbox","recipients","save_to_sent_items")]')" = \
    '["json", "shared@contoso.test", ["to1@example.org", "cc1@example.org", "bcc1@example.org"], false]'

# Delegated permissions and send-as.
printf 'From: alice@contoso.test\r\nTo: x@example.org\r\nSubject: d\r\n\r\nhi\r\n' >"$T/alice.eml"
printf 'From: shared@contoso.test\r\nTo: x@example.org\r\nSubject: d\r\n\r\nhi\r\n' >"$T/shared.eml"
printf 'From: bob@contoso.test\r\nTo: x@example.org\r\nSubject: d\r\n\r\nhi\r\n' >"$T/bob.eml"
send_mime /v1.0/me/sendMail "$T/alice.eml" "$DEV_AT"
expect "delegated send from own mailbox (/me)" 202
send_mime /v1.0/users/alice@contoso.test/sendMail "$T/bob.eml" "$DEV_AT"
expect "From: not the mailbox nor send-as: 403 ErrorSendAsDenied" 403 \
    'd["error"]["code"]' ErrorSendAsDenied
send_mime /v1.0/users/shared@contoso.test/sendMail "$T/shared.eml" "$DEV_AT"
expect "shared mailbox without Mail.Send.Shared: 403 ErrorSendAsDenied" 403 \
    'd["error"]["code"]' ErrorSendAsDenied
send_mime /v1.0/users/shared@contoso.test/sendMail "$T/shared.eml" "$CODE_AT"
expect "shared mailbox with Mail.Send.Shared and send_as: accepted" 202
send_mime /v1.0/users/bob@contoso.test/sendMail "$T/bob.eml" "$CODE_AT"
expect "mailbox not in send_as: 403 ErrorSendAsDenied" 403 \
    'd["error"]["code"]' ErrorSendAsDenied
send_mime /v1.0/users/alice@contoso.test/sendMail "$T/shared.eml" "$DEV_AT"
expect "From: a send_as address of the mailbox owner is allowed" 202
check "sent count after permission checks" test "$(emu_sent_count)" = 5

#
# Revocation and expiry.
#
emu_ctl POST /_emu/expire '{"user": "alice@contoso.test"}' >/dev/null
req GET /v1.0/me -H "Authorization: Bearer $CODE_AT"
expect "expired access token: 401" 401 'd["error"]["code"]' InvalidAuthenticationToken
emu_ctl POST /_emu/revoke '{"user": "alice@contoso.test"}' >/dev/null
refresh "$RT2"
expect "revoked grant: invalid_grant 50173" 400 \
    'd["error"]' invalid_grant 'd["error_codes"]' '[50173]'
check "50173 description" field 'd["error_description"].startswith("AADSTS50173: The provided grant has expired due to it being revoked") or sys.exit(1)'
refresh "$CODE_RT"
expect "every refresh token of the user is revoked" 400 'd["error_codes"]' '[50173]'

#
# Faults.
#
emu_ctl POST /_emu/reset >/dev/null
printf 'From: bob@contoso.test\r\nTo: f@example.org\r\nSubject: fault\r\n\r\nhi\r\n' >"$T/f.eml"
send_app() {
    send_mime /v1.0/users/bob@contoso.test/sendMail "$T/f.eml" "$APP_AT"
}
emu_ctl POST /_emu/faults '[{"match": "sendMail", "status": 429, "retry_after": 5}]' >/dev/null
send_app
expect "fault 429" 429 'd["error"]["code"]' ApplicationThrottled
check "429 carries Retry-After: 5" test "$(header Retry-After)" = 5
check "429 recorded nothing" test "$(emu_sent_count)" = 0
send_app
expect "the fault is consumed: next send accepted" 202

emu_ctl POST /_emu/faults '{"match": "sendMail", "status": 503, "count": 2}' >/dev/null
check "GET /_emu/faults shows the remaining count" test \
    "$(emu_ctl GET /_emu/faults | json_eval '[f["count"] for f in d]')" = '[2]'
send_app
expect "fault 503 (1/2)" 503 'd["error"]["code"]' ErrorServerBusy
send_app
expect "fault 503 (2/2)" 503
send_app
expect "after count faults: accepted" 202

emu_ctl POST /_emu/faults '[{"match": "sendMail", "action": "accept_retry_after", "retry_after": 7}]' >/dev/null
before=$(emu_sent_count)
send_app
expect "202 + Retry-After" 202
check "202 carries Retry-After: 7" test "$(header Retry-After)" = 7
check "202 + Retry-After recorded exactly once" test "$(emu_sent_count)" = $((before + 1))

emu_ctl POST /_emu/faults '[{"match": "sendMail", "action": "reset_after_body", "deliver": true}]' >/dev/null
before=$(emu_sent_count)
send_app 2>/dev/null   # curl reports the reset
check "reset_after_body: no HTTP response" test "$STATUS" = curl-failed -o "$STATUS" = 000
check "reset_after_body with deliver: recorded" test "$(emu_sent_count)" = $((before + 1))
emu_ctl POST /_emu/faults '[{"match": "any", "action": "reset_after_body"}]' >/dev/null
send_app 2>/dev/null   # curl reports the reset
check "reset_after_body without deliver: no response" test "$STATUS" = curl-failed -o "$STATUS" = 000
check "reset_after_body without deliver: not recorded" test "$(emu_sent_count)" = $((before + 1))

emu_ctl POST /_emu/faults '[{"match": "sendMail", "action": "slow", "delay": 1.5}]' >/dev/null
t0=$(date +%s%N)
send_app
t1=$(date +%s%N)
expect "slow fault then normal answer" 202
check "slow fault took >= 1.5 s" test $(( (t1 - t0) / 1000000 )) -ge 1500

emu_ctl POST /_emu/faults '[{"match": "token", "status": 400, "error": "invalid_grant", "aadsts": 700082}]' >/dev/null
client_secret "$T/secret"
expect "token fault with a real AADSTS body" 400 \
    'd["error"]' invalid_grant 'd["error_codes"]' '[700082]' \
    'd["error_description"].startswith("AADSTS700082: The refresh token has expired due to inactivity")' true
emu_ctl POST /_emu/faults '[{"match": "token", "aadsts": 50173, "error": "invalid_grant"}]' >/dev/null
refresh "$DEV_RT"
expect "token fault: status defaults to 400 for an AADSTS fault" 400 \
    'd["error_codes"]' '[50173]' 'd["error_uri"]' "https://login.microsoftonline.com/error?code=50173"
emu_ctl POST /_emu/faults '[{"match": "token", "status": 503}]' >/dev/null
client_secret "$T/secret"
expect "token fault 503: temporarily_unavailable" 503 'd["error"]' temporarily_unavailable
emu_ctl POST /_emu/faults '[{"match": "users", "status": 403, "code": "ErrorAccessDenied", "message": "Access to OData is disabled."}]' >/dev/null
req GET /v1.0/users/bob@contoso.test -H "Authorization: Bearer $APP_AT"
expect "users fault with custom code" 403 'd["error"]["code"]' ErrorAccessDenied \
    'd["error"]["message"]' "Access to OData is disabled."
emu_ctl POST /_emu/faults '[{"match": "sendMail", "status": 401}]' >/dev/null
send_app
expect "fault 401 on sendMail" 401 'd["error"]["code"]' InvalidAuthenticationToken
check "401 carries WWW-Authenticate" test -n "$(header WWW-Authenticate)"
emu_ctl POST /_emu/faults '[{"match": "sendMail", "status": 504}, {"match": "token", "status": 500}]' >/dev/null
emu_ctl DELETE /_emu/faults >/dev/null
check "DELETE /_emu/faults clears the queue" test "$(emu_ctl GET /_emu/faults)" = '[]'
send_app
expect "no fault after DELETE" 202
check "bad fault definitions are refused" test "$(emu_curl -o /dev/null -w '%{http_code}' \
    -X POST --data-binary '[{"match": "nothing"}]' "$EMU_URL/_emu/faults")" = 400

#
# Statistics.
#
emu_ctl POST /_emu/reset >/dev/null
client_secret "$T/secret"
client_secret "$T/badsecret"
refresh "$DEV_RT"
send_app
send_app
send_mime /v1.0/users/bob@contoso.test/sendMail "$T/norcpt.eml" "$APP_AT"
req GET /v1.0/users/bob@contoso.test -H "Authorization: Bearer $APP_AT"
check "stats: token_requests" test "$(emu_stat token_requests)" = 3
check "stats: by_grant.client_credentials" test "$(emu_stat by_grant.client_credentials)" = 2
check "stats: by_grant.refresh_token" test "$(emu_stat by_grant.refresh_token)" = 1
check "stats: sendmail_requests" test "$(emu_stat sendmail_requests)" = 3
check "stats: sendmail_accepted" test "$(emu_stat sendmail_accepted)" = 2
check "stats: requests" test "$(emu_stat requests)" = 7

#
# Connection reuse and parallel requests.
#
emu_curl -v -o /dev/null -o /dev/null -H "Authorization: Bearer $APP_AT" \
    "$EMU_URL/v1.0/users/bob@contoso.test" "$EMU_URL/v1.0/users/alice@contoso.test" \
    2>"$T/keepalive.err"
check "HTTP/1.1 keep-alive: the second request reuses the connection" \
    grep -qi 're-using existing connection' "$T/keepalive.err"
emu_ctl POST /_emu/reset >/dev/null
emu_ctl POST /_emu/faults '[{"match": "sendMail", "action": "slow", "delay": 1, "count": 8}]' >/dev/null
openssl base64 -A <"$T/f.eml" >"$T/f.b64"
pids=()
t0=$(date +%s%N)
for i in 1 2 3 4 5 6 7 8; do
    emu_curl -o /dev/null -w '%{http_code}\n' -H "Authorization: Bearer $APP_AT" \
        -H 'Content-Type: text/plain' --data-binary "@$T/f.b64" \
        "$EMU_URL/v1.0/users/bob@contoso.test/sendMail" >"$T/par.$i" &
    pids+=($!)
done
wait "${pids[@]}"
t1=$(date +%s%N)
check "8 parallel sends all accepted" test "$(cat "$T"/par.* | sort -u)" = 202
check "8 parallel sends recorded" test "$(emu_sent_count)" = 8
check "parallel requests are served concurrently (< 6 s for 8 x 1 s)" \
    test $(( (t1 - t0) / 1000000 )) -lt 6000

#
# Mailboxes (m365-fetch): folders, delta with paging, $value, PATCH, move,
# DELETE, permissions, faults and the control API.
#
emu_ctl POST /_emu/reset >/dev/null
client_secret "$T/secret"
MB_AT=$(field 'd["access_token"]')
# deleg_token SCOPES - a delegated access token for login_user (auth code + PKCE)
deleg_token() {
    local v c loc code
    v=$(openssl rand -base64 48 | tr '+/' '-_' | tr -d '=\n')
    c=$(printf '%s' "$v" | openssl dgst -sha256 -binary | b64url)
    req GET "/organizations/oauth2/v2.0/authorize" -G \
        --data-urlencode "client_id=$EMU_APP_DELEG" --data-urlencode "response_type=code" \
        --data-urlencode "redirect_uri=$REDIRECT" --data-urlencode "scope=$1" \
        --data-urlencode "code_challenge=$c" --data-urlencode "code_challenge_method=S256"
    loc=$(header Location)
    code=$(printf '%s' "$loc" | sed -n 's/.*[?&]code=\([^&]*\).*/\1/p')
    token --data-urlencode "grant_type=authorization_code" \
        --data-urlencode "client_id=$EMU_APP_DELEG" --data-urlencode "code=$code" \
        --data-urlencode "redirect_uri=$REDIRECT" --data-urlencode "code_verifier=$v"
    field 'd["access_token"]'
}
# greq METHOD PATH TOKEN [CURL-ARGS...] - a Graph request with a bearer token
greq() {
    local method=$1 path=$2 tok=$3
    shift 3
    req "$method" "$path" -H "Authorization: Bearer $tok" "$@"
}
BOB=/v1.0/users/bob@contoso.test
SEL='$select=id,internetMessageId,isRead,from,subject'

# mkmime FILE N - a message with CRLF line ends and a unique Message-ID
mkmime() {
    printf '%s\r\n' "From: \"Sender $2\" <sender$2@example.org>" 'To: bob@contoso.test' \
        "Subject: mailbox test $2" "Message-ID: <mbtest-$2@example.org>" \
        'MIME-Version: 1.0' 'Content-Type: text/plain; charset=us-ascii' '' \
        "Body of message $2." 'Second line.' >"$1"
}
for i in 1 2 3 4 5; do
    mkmime "$T/in$i.eml" "$i"
    eval "ID$i=\$(emu_put_message bob@contoso.test \"\$T/in$i.eml\")"
done
check "emu_put_message returns Graph-shaped ids" test "${ID1#AAMk}" != "$ID1" -a "$ID1" != "$ID2"
check "GET /_emu/mailbox lists 5 unread inbox messages" test \
    "$(emu_mb_eval bob@contoso.test '[m["isRead"] for m in f("inbox")["messages"]]')" = \
    '[false, false, false, false, false]'
check "control API: internetMessageId from the MIME" test \
    "$(emu_mb_eval bob@contoso.test 'f("inbox")["messages"][0]["internetMessageId"]')" = '<mbtest-1@example.org>'

greq GET "$BOB/mailFolders/inbox" "$MB_AT"
expect "GET mailFolders/inbox (well-known name)" 200 'd["displayName"]' Inbox \
    'd["totalItemCount"]' 5 'd["unreadItemCount"]' 5
INBOX_ID=$(field 'd["id"]')
greq GET "$BOB/mailFolders('Inbox')" "$MB_AT"
expect "GET mailFolders('Inbox') syntax" 200 'd["id"]' "$INBOX_ID"
greq GET "$BOB/mailFolders/$INBOX_ID" "$MB_AT"
expect "GET mailFolders/{id}" 200 'd["displayName"]' Inbox
greq GET "$BOB/mailFolders/Processed" "$MB_AT"
expect "a display name is not a folder id: 400 ErrorInvalidIdMalformed" 400 \
    'd["error"]["code"]' ErrorInvalidIdMalformed
greq GET "$BOB/mailFolders" "$MB_AT" -G --data-urlencode "\$filter=displayName eq 'Processed'"
expect "mailFolders \$filter: no Processed folder yet" 200 'len(d["value"])' 0
greq POST "$BOB/mailFolders" "$MB_AT" -H 'Content-Type: application/json' \
    --data-binary '{"displayName": "Processed"}'
expect "POST mailFolders creates a folder: 201" 201 'd["displayName"]' Processed
PROC_ID=$(field 'd["id"]')
greq POST "$BOB/mailFolders" "$MB_AT" -H 'Content-Type: application/json' \
    --data-binary '{"displayName": "processed"}'
expect "an existing folder name: 409 ErrorFolderExists" 409 'd["error"]["code"]' ErrorFolderExists
greq GET "$BOB/mailFolders" "$MB_AT" -G --data-urlencode "\$filter=displayName eq 'processed'"
expect "mailFolders \$filter=displayName eq (case-insensitive)" 200 \
    'len(d["value"])' 1 'd["value"][0]["id"]' "$PROC_ID"
check "control API folders: finds the same folder" \
    test "$(emu_folder_add bob@contoso.test Processed)" = "$PROC_ID"
greq POST "$BOB/mailFolders/inbox/childFolders" "$MB_AT" -H 'Content-Type: application/json' \
    --data-binary '{"displayName": "Sub"}'
expect "POST mailFolders/inbox/childFolders" 201 'd["parentFolderId"]' "$INBOX_ID"
SUB_ID=$(field 'd["id"]')
greq GET "$BOB/mailFolders/inbox/childFolders" "$MB_AT" -G --data-urlencode "\$filter=displayName eq 'Sub'"
expect "childFolders \$filter finds the subfolder" 200 'd["value"][0]["id"]' "$SUB_ID"
greq GET "$BOB/mailFolders" "$MB_AT" -G --data-urlencode "\$filter=displayName eq 'Sub'"
expect "mailFolders lists only top-level folders" 200 'len(d["value"])' 0
greq GET "$BOB/mailFolders/inbox" "$MB_AT"
expect "childFolderCount of the inbox" 200 'd["childFolderCount"]' 1
check "control API folders with a parent: the same subfolder" test \
    "$(emu_ctl POST /_emu/mailbox/bob@contoso.test/folders '{"displayName": "sub", "parent": "Inbox"}' | json_eval 'd["id"]')" = "$SUB_ID"
greq GET "$BOB/mailFolders?\$top=3" "$MB_AT"
expect "mailFolders \$top=3 pages with @odata.nextLink" 200 'len(d["value"])' 3 \
    '"$skip=3" in d["@odata.nextLink"]' true
greq GET "$BOB/mailFolders" "$MB_AT" -G --data-urlencode "\$filter=startswith(displayName,'P')"
expect "unsupported \$filter: 400" 400 'd["error"]["code"]' ErrorInvalidUrlQueryFilter

# Delta: three pages of 2, 2 and 1, then a deltaLink.
greq GET "$BOB/mailFolders/inbox/messages/delta?$SEL" "$MB_AT" -H 'Prefer: odata.maxpagesize=2'
expect "delta page 1: 2 messages and a nextLink" 200 'len(d["value"])' 2 \
    '"@odata.nextLink" in d and "@odata.deltaLink" not in d' true \
    'd["@odata.nextLink"].startswith("https://127.0.0.1:'"$EMU_PORT"'/v1.0/users/bob@contoso.test/mailFolders/inbox/messages/delta?$skiptoken=")' true \
    'd["value"][0]["id"]' "$ID1" 'd["value"][0]["internetMessageId"]' '<mbtest-1@example.org>' \
    'd["value"][0]["from"]["emailAddress"]["address"]' sender1@example.org \
    'd["value"][0]["isRead"]' false 'd["value"][0]["subject"]' 'mailbox test 1' \
    '"bodyPreview" in d["value"][0] or "receivedDateTime" in d["value"][0]' false
check "Preference-Applied: odata.maxpagesize=2" test "$(header Preference-Applied)" = odata.maxpagesize=2
NEXT=$(field 'd["@odata.nextLink"]')
greq GET "${NEXT#"$EMU_URL"}" "$MB_AT" -H 'Prefer: odata.maxpagesize=2'
expect "delta page 2 (\$skiptoken)" 200 'len(d["value"])' 2 'd["value"][0]["id"]' "$ID3" \
    'd["value"][0]["subject"]' 'mailbox test 3'
greq GET "${NEXT#"$EMU_URL"}" "$MB_AT" -H 'Prefer: odata.maxpagesize=2'
expect "a \$skiptoken can be replayed (same page)" 200 'd["value"][0]["id"]' "$ID3"
NEXT=$(field 'd["@odata.nextLink"]')
greq GET "${NEXT#"$EMU_URL"}" "$MB_AT" -H 'Prefer: odata.maxpagesize=2'
expect "delta page 3: last message and a deltaLink" 200 'len(d["value"])' 1 \
    '"$deltatoken=" in d["@odata.deltaLink"] and "@odata.nextLink" not in d' true
DLINK=$(field 'd["@odata.deltaLink"]')
greq GET "${DLINK#"$EMU_URL"}" "$MB_AT"
expect "deltaLink without changes: empty page and a deltaLink" 200 'len(d["value"])' 0 \
    '"@odata.deltaLink" in d' true

# $value: exact bytes, chunked, no Content-Length; ids URL-encoded work too.
greq GET "$BOB/messages/$ID2/\$value" "$MB_AT"
expect "\$value answers 200" 200
check "\$value returns the exact MIME bytes" cmp "$T/body" "$T/in2.eml"
check "\$value: Transfer-Encoding chunked" test "$(header Transfer-Encoding)" = chunked
check "\$value: no Content-Length" test -z "$(header Content-Length)"
check "\$value: Content-Type text/plain" test "$(header Content-Type)" = text/plain
greq GET "$BOB/messages/$(printf '%s' "$ID2" | sed 's/=/%3D/g')/\$value" "$MB_AT"
check "\$value with a URL-encoded id" cmp "$T/body" "$T/in2.eml"
greq GET "$BOB/messages/AAMkAGnotthere0000000000000000000000000000000000AAA=" "$MB_AT"
expect "unknown message id: 404 ErrorItemNotFound" 404 'd["error"]["code"]' ErrorItemNotFound
greq GET "$BOB/messages/bogus" "$MB_AT"
expect "malformed message id: 400 ErrorInvalidIdMalformed" 400 'd["error"]["code"]' ErrorInvalidIdMalformed

# PATCH, move, DELETE.
greq PATCH "$BOB/messages/$ID1" "$MB_AT" -H 'Content-Type: application/json' --data-binary '{"isRead": true}'
expect "PATCH isRead: 200 with the message" 200 'd["isRead"]' true 'd["id"]' "$ID1"
greq PATCH "$BOB/messages/$ID5" "$MB_AT" -H 'Content-Type: application/json' \
    --data-binary '{"flag": {"flagStatus": "flagged"}}'
expect "PATCH flag" 200 'd["flag"]["flagStatus"]' flagged 'd["isRead"]' false
greq POST "$BOB/messages/$ID2/move" "$MB_AT" -H 'Content-Type: application/json' \
    --data-binary '{"destinationId": "Processed"}'
expect "move to a display name: 400 (needs an id or well-known name)" 400
greq POST "$BOB/messages/$ID2/move" "$MB_AT" -H 'Content-Type: application/json' \
    --data-binary "{\"destinationId\": \"$PROC_ID\"}"
expect "move: 201 with the moved message" 201 'd["parentFolderId"]' "$PROC_ID" \
    'd["internetMessageId"]' '<mbtest-2@example.org>'
MOVED=$(field 'd["id"]')
check "move gives the message a new id" test -n "$MOVED" -a "$MOVED" != "$ID2"
greq GET "$BOB/messages/$ID2" "$MB_AT"
expect "the old id is gone after a move: 404" 404
greq GET "$BOB/messages/$MOVED/\$value" "$MB_AT"
check "the moved message keeps its MIME" cmp "$T/body" "$T/in2.eml"
greq DELETE "$BOB/messages/$ID3" "$MB_AT"
expect "DELETE: 204" 204
check "DELETE moved it to Deleted Items" test \
    "$(emu_mb_eval bob@contoso.test '[m["internetMessageId"] for m in f("deleteditems")["messages"]]')" = \
    '["<mbtest-3@example.org>"]'
check "Processed holds the moved message" test \
    "$(emu_mb_eval bob@contoso.test '[m["id"] for m in f("Processed")["messages"]]')" = "[\"$MOVED\"]"
mkmime "$T/in6.eml" 6
ID6=$(emu_put_message bob@contoso.test "$T/in6.eml")
greq GET "${DLINK#"$EMU_URL"}" "$MB_AT"
expect "incremental delta after the changes" 200 \
    '[(x["id"], x.get("@removed", {}).get("reason"), x.get("isRead")) for x in d["value"]] == [("'"$ID1"'", None, True), ("'"$ID5"'", None, False), ("'"$ID2"'", "deleted", None), ("'"$ID3"'", "deleted", None), ("'"$ID6"'", None, False)]' true \
    'sorted(d["value"][0])' '["@odata.etag", "@odata.type", "from", "id", "internetMessageId", "isRead", "subject"]'
DLINK2=$(field 'd["@odata.deltaLink"]')
greq GET "$BOB/mailFolders/$PROC_ID/messages/delta" "$MB_AT"
expect "delta of a custom folder (no \$select: full messages)" 200 \
    'd["value"][0]["id"]' "$MOVED" '"receivedDateTime" in d["value"][0]' true
PLINK=$(field 'd["@odata.deltaLink"]')
greq GET "$BOB/mailFolders/inbox/messages?\$top=2&\$select=subject" "$MB_AT"
expect "GET mailFolders/inbox/messages with \$top" 200 'len(d["value"])' 2 \
    '"@odata.nextLink" in d' true

# Permissions.
emu_ctl POST /_emu/config "{\"apps\": {\"$EMU_APP_SECRET\": {\"roles\": [\"Mail.Send\"]}}}" >/dev/null
client_secret "$T/secret"
SEND_AT=$(field 'd["access_token"]')
emu_ctl POST /_emu/config "{\"apps\": {\"$EMU_APP_SECRET\": {\"roles\": [\"Mail.Send\", \"Mail.Read\"]}}}" >/dev/null
client_secret "$T/secret"
READ_AT=$(field 'd["access_token"]')
emu_ctl POST /_emu/config "{\"apps\": {\"$EMU_APP_SECRET\": {\"roles\": [\"Mail.Send\", \"Mail.ReadWrite\"]}}}" >/dev/null
D_SEND=$(deleg_token "offline_access $GRAPH_SCOPE/Mail.Send")
D_RW=$(deleg_token "offline_access $GRAPH_SCOPE/Mail.ReadWrite")
D_SH=$(deleg_token "offline_access $GRAPH_SCOPE/Mail.ReadWrite $GRAPH_SCOPE/Mail.ReadWrite.Shared")
emu_ctl POST /_emu/config '{"login_user": "bob@contoso.test"}' >/dev/null
D_BOB=$(deleg_token "offline_access $GRAPH_SCOPE/Mail.ReadWrite.Shared")
emu_ctl POST /_emu/config '{"login_user": "alice@contoso.test"}' >/dev/null
# METHOD PATH TOKEN-VARIABLE STATUS ERROR-CODE JSON-BODY DESCRIPTION
# ("-": none); a request of each row, its status and error code checked
DELTA=mailFolders/inbox/messages/delta
while IFS='|' read -r method path tokvar want code json desc; do
    if [ "$json" = - ]; then
        greq "$method" "$path" "${!tokvar}"
    else
        greq "$method" "$path" "${!tokvar}" -H 'Content-Type: application/json' \
            --data-binary "$json"
    fi
    if [ "$code" = - ]; then
        expect "$desc" "$want"
    else
        expect "$desc" "$want" 'd["error"]["code"]' "$code"
    fi
done <<EOF
GET|$BOB/$DELTA|SEND_AT|403|ErrorAccessDenied|-|app token without Mail.Read*: 403 ErrorAccessDenied
GET|$BOB/$DELTA|READ_AT|200|-|-|app token with Mail.Read may read
PATCH|$BOB/messages/$ID4|READ_AT|403|ErrorAccessDenied|{"isRead": true}|app token with Mail.Read may not PATCH: 403
GET|/v1.0/me/$DELTA|D_SEND|403|ErrorAccessDenied|-|delegated without Mail.ReadWrite: 403 on the own mailbox
GET|/v1.0/me/$DELTA|D_RW|200|-|-|delegated Mail.ReadWrite: own mailbox via /me
GET|/v1.0/users/shared@contoso.test/$DELTA|D_RW|403|ErrorAccessDenied|-|delegated Mail.ReadWrite only: shared mailbox 403
GET|/v1.0/users/shared@contoso.test/$DELTA|D_SH|200|-|-|delegated Mail.ReadWrite.Shared + full_access: shared mailbox
GET|/v1.0/users/shared@contoso.test/$DELTA|D_BOB|403|ErrorAccessDenied|-|Mail.ReadWrite.Shared without full_access: 403
GET|/v1.0/users/onprem@contoso.test/mailFolders/inbox|MB_AT|404|MailboxNotEnabledForRESTAPI|-|mailbox not enabled for REST: 404
EOF

# Faults.
emu_ctl POST /_emu/faults '[{"match": "delta", "status": 429, "retry_after": 3}]' >/dev/null
greq GET "${DLINK2#"$EMU_URL"}" "$MB_AT"
expect "delta fault 429" 429 'd["error"]["code"]' ApplicationThrottled
check "delta 429 carries Retry-After: 3" test "$(header Retry-After)" = 3
emu_ctl POST /_emu/faults '[{"match": "delta", "action": "gone"}]' >/dev/null
greq GET "$BOB/mailFolders/inbox/messages/delta" "$MB_AT"
expect "a gone fault does not hit a delta request without a token" 200
check "the gone fault is still queued" test "$(emu_ctl GET /_emu/faults | json_eval 'len(d)')" = 1
FRESH=$(field 'd["@odata.deltaLink"]')
greq GET "${DLINK2#"$EMU_URL"}" "$MB_AT"
expect "gone: 410 SyncStateNotFound on a deltaLink" 410 'd["error"]["code"]' SyncStateNotFound
check "410 carries a Location" test -n "$(header Location)"
greq GET "${FRESH#"$EMU_URL"}" "$MB_AT"
expect "after gone every older deltaLink stays invalid (410)" 410
greq GET "${PLINK#"$EMU_URL"}" "$MB_AT"
expect "a 410 of one folder leaves another folder's deltaLink valid" 200
greq GET "$BOB/mailFolders/inbox/messages/delta?$SEL" "$MB_AT"
expect "full resync after 410: every inbox message again" 200 'len(d["value"])' 4
greq GET "$(field 'd["@odata.deltaLink"]' | sed "s|^$EMU_URL||")" "$MB_AT"
expect "the new deltaLink works" 200 'len(d["value"])' 0
greq GET "$BOB/mailFolders/inbox/messages/delta?\$deltatoken=garbage" "$MB_AT"
expect "a malformed deltatoken: 400" 400
emu_ctl POST /_emu/faults '[{"match": "value", "action": "truncate"}]' >/dev/null
rm -f "$T/body"
greq GET "$BOB/messages/$ID4/\$value" "$MB_AT" 2>/dev/null
check "value truncate: the transfer fails" test "$STATUS" = curl-failed
check "value truncate: fewer bytes than the message" test "$(wc -c <"$T/body")" -lt "$(wc -c <"$T/in4.eml")"
emu_ctl POST /_emu/faults "[{\"match\": \"value\", \"status\": 500, \"path_contains\": \"$ID4\"}]" >/dev/null
greq GET "$BOB/messages/$ID5/\$value" "$MB_AT"
expect "value fault with path_contains: another message passes" 200
check "value fault with path_contains: the fault stays queued" \
    test "$(emu_ctl GET /_emu/faults | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 1
greq GET "$BOB/messages/$(printf '%s' "$ID4" | sed 's/=/%3D/g')/\$value" "$MB_AT"
expect "value fault with path_contains: that message (URL-encoded id) fails" 500
greq GET "$BOB/messages/$ID4/\$value" "$MB_AT"
expect "value fault with path_contains: used up, the message passes" 200
check "value fault with path_contains: exact bytes afterwards" cmp "$T/body" "$T/in4.eml"
req POST /_emu/faults -H 'Content-Type: application/json' \
    --data-binary '[{"match": "value", "path_contains": ""}]'
expect "an empty path_contains is refused" 400
emu_ctl POST /_emu/faults '[{"match": "patch", "action": "slow", "delay": 1.2}]' >/dev/null
t0=$(date +%s%N)
greq PATCH "$BOB/messages/$ID4" "$MB_AT" -H 'Content-Type: application/json' --data-binary '{"isRead": true}'
t1=$(date +%s%N)
expect "patch slow fault, then the PATCH" 200 'd["isRead"]' true
check "patch slow fault took >= 1.2 s" test $(( (t1 - t0) / 1000000 )) -ge 1200
for k in move delete mailFolders message; do
    emu_ctl POST /_emu/faults "[{\"match\": \"$k\", \"status\": 503, \"retry_after\": 1}]" >/dev/null
done
greq POST "$BOB/messages/$ID5/move" "$MB_AT" -H 'Content-Type: application/json' --data-binary '{"destinationId": "archive"}'
expect "move fault 503" 503 'd["error"]["code"]' ErrorServerBusy
greq DELETE "$BOB/messages/$ID5" "$MB_AT"
expect "delete fault 503" 503
greq GET "$BOB/mailFolders/inbox" "$MB_AT"
expect "mailFolders fault 503" 503
greq GET "$BOB/messages/$ID5" "$MB_AT"
expect "message fault 503" 503
check "the message is untouched by the faults" test \
    "$(emu_mb_eval bob@contoso.test "[m['id'] for m in f('inbox')['messages'] if m['id'] == '$ID5']")" = "[\"$ID5\"]"
check "a gone fault must match delta" test "$(emu_curl -o /dev/null -w '%{http_code}' \
    -X POST --data-binary '[{"match": "any", "action": "gone"}]' "$EMU_URL/_emu/faults")" = 400
check "stats: delta_requests and value_requests" test \
    "$(emu_stat delta_requests)" -ge 10 -a "$(emu_stat value_requests)" -ge 4

# Generated messages (large ones are written in pieces, streamed back).
GEN=$(emu_gen_messages shared@contoso.test 3000000 2)
check "generate 2 messages of 3 MB" test "$(printf '%s\n' "$GEN" | wc -l)" = 2
GID=$(printf '%s\n' "$GEN" | head -n 1)
greq GET "/v1.0/users/shared@contoso.test/messages/$GID/\$value" "$MB_AT"
SZ=$(wc -c <"$T/body")
check "generated message: about 3 MB ($SZ bytes)" test "$SZ" -gt 2990000 -a "$SZ" -le 3000000
check "generated message: size in the control API matches \$value" test \
    "$(emu_mb_eval shared@contoso.test "[m['size'] for m in f('inbox')['messages'] if m['id'] == '$GID'][0]")" = "$SZ"
check "generated message: a MIME multipart with a base64 part" \
    grep -q '^Content-Transfer-Encoding: base64' "$T/body"

# Out-of-band changes through the control API; sendMail lands in Sent Items.
check "control API PATCH: mark unread" emu_ctl PATCH "/_emu/mailbox/bob@contoso.test/messages/$ID1" '{"isRead": false}'
check "control API DELETE: remove a message" emu_ctl DELETE "/_emu/mailbox/bob@contoso.test/messages/$ID6"
check "control API: unknown user is a 404" test "$(emu_curl -o /dev/null -w '%{http_code}' \
    "$EMU_URL/_emu/mailbox/nobody@contoso.test")" = 404
send_mime /v1.0/users/bob@contoso.test/sendMail "$T/f.eml" "$MB_AT"
check "sendMail files a copy in Sent Items (read)" test \
    "$(emu_mb_eval bob@contoso.test '[(m["subject"], m["isRead"]) for m in f("sentitems")["messages"]]')" = '[["fault", true]]'
emu_ctl POST /_emu/reset >/dev/null
check "reset drops the Sent Items copies, keeps the mailbox" test \
    "$(emu_mb_eval bob@contoso.test '(len(f("sentitems")["messages"]), len(f("inbox")["messages"]))')" = '[0, 3]'
emu_ctl POST /_emu/reset '{"mailboxes": true}' >/dev/null
check "reset with mailboxes empties them" test \
    "$(emu_mb_eval bob@contoso.test 'sum(len(x["messages"]) for x in d["folders"])')" = 0

#
# Drafts, attachments, upload sessions and send of a draft (large
# messages, issue 10): Microsoft's rules as tests/emulator/README.md cites.
#
emu_ctl POST /_emu/reset '{"mailboxes": true}' >/dev/null
client_secret "$T/secret"
RW_AT=$(field 'd["access_token"]')
IMM='Prefer: IdType="ImmutableId"'
JSON='Content-Type: application/json'
# draft_json FILE SUBJECT [EXTRA-JSON] - a JSON message with an HTML body,
# To/Cc/Bcc, an X- header and a Message-ID as PidTagInternetMessageId
draft_json() {
    cat >"$1" <<EOF
{"subject": "$2", "importance": "high",
 "body": {"contentType": "HTML", "content": "<p>Report <img src=\"cid:logo@x\"></p>"},
 "toRecipients": [{"emailAddress": {"address": "To1@example.org", "name": "To One"}}],
 "ccRecipients": [{"emailAddress": {"address": "cc1@example.org"}}],
 "bccRecipients": [{"emailAddress": {"address": "hidden@example.net"}}],
 "internetMessageHeaders": [{"name": "X-Relay-Test", "value": "large-$2"}],
 "singleValueExtendedProperties": [{"id": "String 0x1035", "value": "<$2@example.org>"}]${3:+, $3}}
EOF
}
draft_json "$T/d1.json" d1
greq POST "$BOB/messages" "$RW_AT" -H "$JSON" -H "$IMM" --data-binary "@$T/d1.json"
expect "JSON draft: 201 with the message" 201 'd["isDraft"]' true \
    'd["subject"]' d1 'd["internetMessageId"]' '<d1@example.org>' \
    'd["toRecipients"][0]["emailAddress"]["address"]' To1@example.org \
    'd["bccRecipients"][0]["emailAddress"]["address"]' hidden@example.net \
    'd["hasAttachments"]' false 'd["body"]["contentType"]' HTML
D1=$(field 'd["id"]')
check "Prefer IdType=ImmutableId: Preference-Applied" test "$(header Preference-Applied)" = 'IdType="ImmutableId"'
check "an immutable id (AAkA...)" test "${D1#AAkA}" != "$D1"
greq POST "$BOB/messages" "$RW_AT" -H "$JSON" \
    --data-binary '{"subject": "d2", "internetMessageId": "<d2@example.org>", "toRecipients": [{"emailAddress": {"address": "a@example.org"}}]}'
expect "JSON draft with internetMessageId, no Prefer: a regular id" 201 \
    'd["internetMessageId"]' '<d2@example.org>' 'd["id"].startswith("AAMk")' true
D2=$(field 'd["id"]')
check "no Prefer: no Preference-Applied" test -z "$(header Preference-Applied)"
greq POST "$BOB/messages" "$RW_AT" -H "$JSON" \
    --data-binary '{"subject": "bad", "internetMessageHeaders": [{"name": "References", "value": "<a@b>"}]}'
expect "JSON draft: a header that is not X-: 400 InvalidInternetMessageHeader" 400 \
    'd["error"]["code"]' InvalidInternetMessageHeader
greq POST "$BOB/messages" "$RW_AT" -H "$JSON" --data-binary '{"subject": "bad", "toRecipients": [{"emailAddress": {}}]}'
expect "JSON draft: a recipient without address: 400 ErrorInvalidRecipients" 400 \
    'd["error"]["code"]' ErrorInvalidRecipients
printf '%s\r\n' 'From: Bob <bob@contoso.test>' 'To: mime-to@example.org' 'Bcc: mime-bcc@example.net' \
    'Subject: mime draft' 'Message-ID: <mime-1@example.org>' 'References: <r1@example.org>' \
    'MIME-Version: 1.0' 'Content-Type: text/plain; charset=us-ascii' '' 'MIME body.' >"$T/m1.eml"
openssl base64 -A <"$T/m1.eml" >"$T/m1.b64"
greq POST "$BOB/messages" "$RW_AT" -H 'Content-Type: text/plain' -H "$IMM" --data-binary "@$T/m1.b64"
expect "MIME draft (text/plain, base64): 201" 201 'd["isDraft"]' true \
    'd["internetMessageId"]' '<mime-1@example.org>' 'd["subject"]' 'mime draft'
M1=$(field 'd["id"]')
greq POST "$BOB/messages" "$RW_AT" -H 'Content-Type: text/plain' --data-binary 'not*base64!'
expect "MIME draft with bad base64: 400 ErrorMimeContentInvalidBase64String" 400 \
    'd["error"]["code"]' ErrorMimeContentInvalidBase64String
greq POST "$BOB/messages" "$RW_AT" -H 'Content-Type: text/plain' --data-binary "@$T/big.b64"
expect "draft request over 4 MB: 413" 413 'd["error"]["code"]' RequestEntityTooLarge
greq POST "$BOB/mailFolders/drafts/messages" "$RW_AT" -H "$JSON" --data-binary '{"subject": "in folder"}'
expect "POST mailFolders/drafts/messages: 201" 201 'd["isDraft"]' true
D3=$(field 'd["id"]')
check "emu_drafts: 4 drafts in Drafts" test "$(emu_drafts bob@contoso.test)" = 4
greq GET "$BOB/mailFolders('drafts')/messages?\$select=subject,isDraft" "$RW_AT" -H "$IMM"
expect "GET mailFolders('drafts')/messages lists them (immutable ids)" 200 \
    'sorted(x["subject"] for x in d["value"])' '["d1", "d2", "in folder", "mime draft"]' \
    "\"$D1\" in [x[\"id\"] for x in d[\"value\"]]" true
greq GET "$BOB/messages/$D1" "$RW_AT"
expect "GET of a draft by its immutable id" 200 'd["isDraft"]' true 'd["subject"]' d1
greq GET "$BOB/messages/$D2" "$RW_AT" -H "$IMM"
expect "GET by a regular id, Prefer ImmutableId: the immutable id comes back" 200 \
    'd["id"].startswith("AAkA")' true
greq GET "$BOB/messages/$M1/\$value" "$RW_AT"
check "\$value of a MIME draft: its MIME" cmp "$T/body" "$T/m1.eml"
# permissions: Mail.ReadWrite (app role or delegated scope)
while IFS='|' read -r tokvar path desc; do
    greq POST "$path" "${!tokvar}" -H "$JSON" --data-binary '{"subject": "denied"}'
    expect "$desc" 403 'd["error"]["code"]' ErrorAccessDenied
done <<EOF
SEND_AT|$BOB/messages|draft, app token with Mail.Send only: 403
READ_AT|$BOB/messages|draft, app token with Mail.Read: 403
D_SEND|/v1.0/me/messages|draft, delegated Mail.Send only: 403
D_RW|/v1.0/users/shared@contoso.test/messages|draft in another mailbox without Mail.ReadWrite.Shared: 403
EOF
greq POST /v1.0/me/messages "$D_RW" -H "$JSON" --data-binary '{"subject": "mine"}'
expect "draft, delegated Mail.ReadWrite, own mailbox (/me): 201" 201
greq POST "/v1.0/users/shared@contoso.test/messages" "$D_SH" -H "$JSON" --data-binary '{"subject": "shared"}'
expect "draft in a shared mailbox: Mail.ReadWrite.Shared + full access: 201" 201

# Attachments under 3 MB: POST .../attachments.
head -c 20000 /dev/urandom >"$T/logo.png"
head -c 150000 /dev/urandom >"$T/small.pdf"
att_json() {   # att_json FILE NAME TYPE INLINE [CID]
    printf '{"@odata.type": "#microsoft.graph.fileAttachment", "name": "%s", "contentType": "%s", "isInline": %s%s, "contentBytes": "' \
        "$2" "$3" "$4" "${5:+, \"contentId\": \"$5\"}"
    openssl base64 -A <"$1"
    printf '"}'
}
att_json "$T/logo.png" logo.png image/png true logo@x >"$T/a1.json"
greq POST "$BOB/messages/$D1/attachments" "$RW_AT" -H "$JSON" --data-binary "@$T/a1.json"
expect "POST attachments (inline image): 201" 201 \
    'd["@odata.type"]' '#microsoft.graph.fileAttachment' 'd["size"]' 20000 \
    'd["isInline"]' true 'd["contentId"]' logo@x 'd["name"]' logo.png \
    "d[\"contentBytes\"] == \"$(openssl base64 -A <"$T/logo.png")\"" true
att_json "$T/small.pdf" "Rechnung März.pdf" application/pdf false >"$T/a2.json"
greq POST "$BOB/messages/$D1/attachments" "$RW_AT" -H "$JSON" --data-binary "@$T/a2.json"
expect "POST attachments (a PDF with a non-ASCII name): 201" 201 'd["name"]' 'Rechnung März.pdf'
greq POST "$BOB/messages/$D1/attachments" "$RW_AT" -H "$JSON" --data-binary '{"name": "x", "contentBytes": "eA=="}'
expect "attachment without @odata.type: 422 UnprocessableType" 422 'd["error"]["code"]' UnprocessableType
{ printf '{"@odata.type": "#microsoft.graph.fileAttachment", "name": "big", "contentBytes": "'
  cat "$T/big.b64"; printf '"}'; } >"$T/abig.json"
greq POST "$BOB/messages/$D1/attachments" "$RW_AT" -H "$JSON" --data-binary "@$T/abig.json"
expect "attachment request over 4 MB: 413" 413 'd["error"]["code"]' RequestEntityTooLarge
greq POST "$BOB/messages/$D1/attachments" "$SEND_AT" -H "$JSON" --data-binary "@$T/a2.json"
expect "attachment, app token with Mail.Send only: 403" 403 'd["error"]["code"]' ErrorAccessDenied
greq GET "$BOB/messages/$D1/attachments" "$RW_AT"
expect "GET attachments lists them (no content)" 200 'len(d["value"])' 2 \
    '"contentBytes" in d["value"][0]' false

# Upload sessions (3 MB to 150 MB).
session() {   # session MSG-ID SIZE NAME [EXTRA-JSON]: sets STATUS, body
    greq POST "$BOB/messages/$1/attachments/createUploadSession" "${SESS_AT:-$RW_AT}" -H "$JSON" \
        --data-binary "{\"AttachmentItem\": {\"attachmentType\": \"file\", \"name\": \"$3\", \"size\": $2${4:+, $4}}}"
}
session "$D1" 2999999 small.bin
expect "createUploadSession under 3 MB: 400 ErrorAttachmentSizeShouldNotBeLessThanMinimumSize" 400 \
    'd["error"]["code"]' ErrorAttachmentSizeShouldNotBeLessThanMinimumSize
session "$D1" 157286401 huge.bin
expect "createUploadSession over 150 MB: 400 ErrorMessageSizeExceeded" 400 \
    'd["error"]["code"]' ErrorMessageSizeExceeded
SESS_AT=$SEND_AT session "$D1" 3000000 x.bin
expect "createUploadSession, app token with Mail.Send only: 403" 403 'd["error"]["code"]' ErrorAccessDenied
head -c 7000000 /dev/urandom >"$T/report.pdf"
head -c 3000000 "$T/report.pdf" >"$T/three.bin"
session "$D1" 7000000 report.pdf '"contentType": "application/pdf"'
expect "createUploadSession of 7 MB: 201" 201 'd["nextExpectedRanges"]' '["0-"]' \
    'd["uploadUrl"].startswith("https://localhost:'"$EMU_PORT"'/api/v2.0/Users(")' true \
    '"/AttachmentSessions(" in d["uploadUrl"] and "?authtoken=" in d["uploadUrl"]' true
UP1=$(field 'd["uploadUrl"]')
check "expirationDateTime is in the future" field \
    '__import__("datetime").datetime.strptime(d["expirationDateTime"], "%Y-%m-%dT%H:%M:%SZ") > __import__("datetime").datetime.utcnow() or sys.exit(1)'
# put_range URL FILE START END [CURL-ARGS...] - PUT bytes START..END of FILE
put_range() {
    local url=$1 file=$2 s=$3 e=$4 total
    shift 4
    total=$(wc -c <"$file")
    dd if="$file" bs=1M iflag=skip_bytes,count_bytes skip="$s" count=$((e - s + 1)) \
        status=none >"$T/range"
    STATUS=$(emu_curl -o "$T/body" -D "$T/hdr" -w '%{http_code}' -X PUT \
        -H "Content-Range: bytes $s-$e/$total" \
        -H "Content-Type: ${PUT_CTYPE:-application/octet-stream}" \
        "$@" --data-binary "@$T/range" "$url") || STATUS=curl-failed
}
upload_field() {   # upload_field EXPR-OVER-SESSION-u: of the newest session
    emu_ctl GET /_emu/uploads | json_eval "(lambda u: $1)(d[-1])"
}
put_range "${UP1/localhost/127.0.0.1}" "$T/report.pdf" 0 2097151
expect "uploadUrl used on the Graph host name: 404" 404
put_range "$UP1" "$T/report.pdf" 0 2097151 -H "Authorization: Bearer $RW_AT"
expect "PUT with an Authorization header: 401 InvalidAudienceForResource" 401 \
    'd["error"]["code"]' InvalidAudienceForResource
put_range "${UP1%%\?*}?authtoken=wrong" "$T/report.pdf" 0 2097151
expect "PUT with a wrong authtoken: 401" 401
put_range "${UP1%%\?*}?authtoken=%C3%A9" "$T/report.pdf" 0 2097151
expect "PUT with a non-ASCII authtoken: 401" 401
put_range "$UP1" "$T/report.pdf" 0 4194304
expect "a byte range over 4 MiB: 413" 413
PUT_CTYPE=text/plain put_range "$UP1" "$T/report.pdf" 0 2097151
expect "Content-Type other than application/octet-stream: 415" 415
put_range "$UP1" "$T/report.pdf" 1000 2097151
expect "a range that leaves a gap: 416" 416
check "refused PUTs stored nothing" test "$(upload_field 'u["received"]')" = 0
put_range "$UP1" "$T/report.pdf" 0 2097151
expect "first range 0-2097151 (not a 320 KiB multiple, as Microsoft's example): 200" 200 \
    'd["nextExpectedRanges"]' '["2097152"]' '"expirationDateTime" in d' true
put_range "$UP1" "$T/report.pdf" 0 2097151
expect "the same range again (overlap): 416" 416
put_range "$UP1" "$T/report.pdf" 1048576 3145727
expect "an overlapping range: 416" 416
put_range "$UP1" "$T/report.pdf" 3145728 4194303
expect "a range after a gap: 416" 416
dd if="$T/report.pdf" bs=1M iflag=skip_bytes,count_bytes skip=2097152 count=999 status=none >"$T/range"
STATUS=$(emu_curl -o "$T/body" -w '%{http_code}' -X PUT -H 'Content-Range: bytes 2097152-2098151/7000000' \
    -H 'Content-Type: application/octet-stream' --data-binary "@$T/range" "$UP1")
expect "Content-Range and body length differ: 400" 400
STATUS=$(emu_curl -o "$T/body" -w '%{http_code}' -X PUT -H 'Content-Type: application/octet-stream' \
    --data-binary "@$T/range" "$UP1")
expect "PUT without Content-Range: 400" 400
put_range "$UP1" "$T/report.pdf" 2097152 5242879
expect "second range: 200" 200 'd["nextExpectedRanges"]' '["5242880"]'
put_range "$UP1" "$T/report.pdf" 5242880 6999999
expect "last range: 201 Created" 201
check "201 has a Location with the attachment id" \
    test -n "$(header Location | sed -n "s|^https://localhost:$EMU_PORT/api/v2.0/.*/Attachments('AAMk[^']*')\$|ok|p")"
check "/_emu/uploads: complete, the chunk sizes, the refusals" test \
    "$(upload_field '[u["state"], u["received"], u["chunks"], sorted({r["status"] for r in u["refused"]})]')" = \
    '["complete", 7000000, [2097152, 3145728, 1757120], [400, 401, 404, 413, 415, 416]]'
put_range "$UP1" "$T/report.pdf" 5242880 6999999
expect "PUT after the upload completed: 404" 404
# cancel, expiry
session "$D1" 3000000 cancel.bin
UP2=$(field 'd["uploadUrl"]')
STATUS=$(emu_curl -o /dev/null -w '%{http_code}' -X DELETE "$UP2")
check "DELETE uploadUrl cancels: 204" test "$STATUS" = 204
put_range "$UP2" "$T/three.bin" 0 1048575
expect "PUT to a cancelled session: 404" 404
session "$D1" 3000000 late.bin
UP3=$(field 'd["uploadUrl"]')
put_range "$UP3" "$T/three.bin" 0 1048575
expect "a session before expiry: 200" 200
check "POST /_emu/uploads/expire" emu_ctl POST /_emu/uploads/expire '{}'
put_range "$UP3" "$T/three.bin" 1048576 2097151
expect "PUT after expirationDateTime: 401" 401 'd["error"]["code"]' InvalidAuthenticationToken
check "/_emu/uploads: expired" test "$(upload_field 'u["state"]')" = expired
greq GET "$BOB/messages/$D1/attachments" "$RW_AT"
expect "the draft has 3 attachments (2 posted, 1 uploaded)" 200 \
    '[a["name"] for a in d["value"]]' '["logo.png", "Rechnung M\u00e4rz.pdf", "report.pdf"]'
check "/_emu/drafts: attachments and their sha256" test \
    "$(emu_ctl GET '/_emu/drafts?mailbox=bob@contoso.test' | json_eval "[a[\"sha256\"] for x in d if x[\"immutableId\"] == \"$D1\" for a in x[\"attachments\"]]")" = \
    "[\"$(sha256sum <"$T/logo.png" | cut -d' ' -f1)\", \"$(sha256sum <"$T/small.pdf" | cut -d' ' -f1)\", \"$(sha256sum <"$T/report.pdf" | cut -d' ' -f1)\"]"

# Send of a draft: what the recipients get.
emu_ctl POST /_emu/config "{\"apps\": {\"$EMU_APP_SECRET\": {\"roles\": [\"Mail.ReadWrite\"]}}}" >/dev/null
client_secret "$T/secret"
RWONLY_AT=$(field 'd["access_token"]')
emu_ctl POST /_emu/config "{\"apps\": {\"$EMU_APP_SECRET\": {\"roles\": [\"Mail.Send\", \"Mail.ReadWrite\"]}}}" >/dev/null
greq POST "$BOB/messages/$D1/send" "$RWONLY_AT"
expect "send, app token with Mail.ReadWrite but not Mail.Send: 403" 403 'd["error"]["code"]' ErrorAccessDenied
emu_ctl POST /_emu/reset >/dev/null
session "$D1" 3000000 never-finished.bin
UPO=$(field 'd["uploadUrl"]')
put_range "$UPO" "$T/three.bin" 0 1048575
greq POST "$BOB/messages/$D1/send" "$RW_AT"
expect "POST messages/{id}/send: 202" 202
check "send: empty body" test ! -s "$T/body"
check "send: the draft left Drafts" test "$(emu_drafts bob@contoso.test)" = 3
greq GET "$BOB/messages/$D1" "$RW_AT"
expect "send: the immutable id now names the Sent Items copy" 200 'd["isDraft"]' false \
    'd["hasAttachments"]' true
check "send: a copy in Sent Items" test \
    "$(emu_mb_eval bob@contoso.test '[m["subject"] for m in f("sentitems")["messages"]]')" = '["d1"]'
put_range "$UPO" "$T/three.bin" 1048576 2097151
expect "send: an unfinished upload session of the draft is gone (404)" 404
check "send: the sent record names the unfinished session" test \
    "$(sent_field 'len(d[0]["open_upload_sessions"])')" = 1
check "send: recorded once" test "$(emu_sent_count)" = 1
check "sent record" test "$(sent_field '[d[0][k] for k in ("form", "draft_form", "recipients", "bcc", "message_id", "mailbox")]')" = \
    '["draft", "json", ["to1@example.org", "cc1@example.org", "hidden@example.net"], ["hidden@example.net"], "<d1@example.org>", "bob@contoso.test"]'
EML=$(emu_sent_mime -1)
mime_parts "$EML" >"$T/parts"
sed 's/^/#   /' "$T/parts"
check "rebuilt MIME: 4 parts, body first" test "$(wc -l <"$T/parts")" = 4 -a \
    "$(sed -n '1s/^[^ ]* [^ ]* \([^ ]*\).*/\1/p' "$T/parts")" = text/html
check "rebuilt MIME: the inline image, byte for byte, inline, its Content-ID" \
    grep -qx "$(sha256sum <"$T/logo.png" | cut -d' ' -f1) 20000 image/png inline logo.png <logo@x>" "$T/parts"
check "rebuilt MIME: the posted PDF, byte for byte, its decoded name" \
    grep -qx "$(sha256sum <"$T/small.pdf" | cut -d' ' -f1) 150000 application/pdf attachment Rechnung_März.pdf -" "$T/parts"
check "rebuilt MIME: the uploaded 7 MB PDF, byte for byte" \
    grep -qx "$(sha256sum <"$T/report.pdf" | cut -d' ' -f1) 7000000 application/pdf attachment report.pdf -" "$T/parts"
check "rebuilt MIME: the inline image sits in multipart/related with the HTML" \
    grep -q 'multipart/related' "$EML"
check "rebuilt MIME: Subject, Message-ID, To, Cc, X- header, Importance" test \
    "$(for h in Subject Message-ID To Cc X-Relay-Test Importance; do mime_header "$EML" $h; done | tr '\n' '|')" = \
    'd1|<d1@example.org>|To One <To1@example.org>|cc1@example.org|large-d1|high|'
check "rebuilt MIME: no Bcc header" test -z "$(mime_header "$EML" Bcc)"
check "rebuilt MIME: a Date" test -n "$(mime_header "$EML" Date)"
greq POST "$BOB/messages/$D1/send" "$RW_AT"
expect "send again: the message is no draft any more: 404" 404 'd["error"]["code"]' ErrorItemNotFound
greq POST "$BOB/messages/$D3/send" "$RW_AT"
expect "send of a draft without recipients: 400 ErrorInvalidRecipients" 400 \
    'd["error"]["code"]' ErrorInvalidRecipients
greq POST "$BOB/messages" "$RW_AT" -H "$JSON" \
    --data-binary '{"subject": "as alice", "from": {"emailAddress": {"address": "alice@contoso.test"}}, "toRecipients": [{"emailAddress": {"address": "a@example.org"}}]}'
greq POST "$BOB/messages/$(field 'd["id"]')/send" "$RW_AT"
expect "send with a From the mailbox may not use: 403 ErrorSendAsDenied" 403 \
    'd["error"]["code"]' ErrorSendAsDenied
# A MIME draft is sent as its MIME: a later attachment does not reach the recipients.
greq POST "$BOB/messages/$M1/attachments" "$RW_AT" -H "$JSON" --data-binary "@$T/a2.json"
expect "attachment to a MIME draft: 201" 201
greq POST "$BOB/messages/$M1/send" "$RW_AT"
expect "send of a MIME draft: 202" 202
check "MIME draft: the recipients get its MIME, byte for byte" cmp "$(emu_sent_mime -1)" "$T/m1.eml"
check "MIME draft: recipients from its header, the later attachment dropped" test \
    "$(sent_field '[d[-1][k] for k in ("draft_form", "recipients", "attachments")] + [[a["name"] for a in d[-1]["dropped_attachments"]]]')" = \
    '["mime", ["mime-to@example.org", "mime-bcc@example.net"], [], ["Rechnung M\u00e4rz.pdf"]]'
greq POST "$BOB/messages/$D2/send" "$RW_AT"
expect "send by a regular id: 202" 202
greq GET "$BOB/messages/$D2" "$RW_AT"
expect "a regular id dies when /send moves the draft to Sent Items" 404
# DELETE of a draft.
session "$D3" 3000000 orphan.bin
UP4=$(field 'd["uploadUrl"]')
before=$(emu_drafts bob@contoso.test)
greq DELETE "$BOB/messages/$D3" "$RW_AT"
expect "DELETE a draft: 204" 204
check "DELETE: one draft less" test "$(emu_drafts bob@contoso.test)" = $((before - 1))
put_range "$UP4" "$T/three.bin" 0 1048575
expect "the upload session of a deleted draft: 404" 404

# Faults of the large-message path.
greq POST "$BOB/messages" "$RW_AT" -H "$JSON" -H "$IMM" --data-binary "@$T/d1.json"
D5=$(field 'd["id"]')
emu_fault '{"match": "createUploadSession", "status": 404}'
session "$D5" 3500000 f.bin
expect "createUploadSession 404 (transient, demisto/content#41448)" 404 \
    'd["error"]["code"]' ErrorItemNotFound
head -c 3500000 /dev/urandom >"$T/f.bin"
session "$D5" 3500000 f.bin
expect "createUploadSession again: 201" 201
UP5=$(field 'd["uploadUrl"]')
emu_fault '{"match": "upload", "status": 503, "after": 1}'
put_range "$UP5" "$T/f.bin" 0 999999
expect "upload fault with after 1: the 1st range passes" 200
put_range "$UP5" "$T/f.bin" 1000000 1999999
expect "upload fault: 503 on the 2nd range" 503 'd["error"]["code"]' ErrorServerBusy
put_range "$UP5" "$T/f.bin" 1000000 1999999
expect "the 2nd range again: 200" 200 'd["nextExpectedRanges"]' '["2000000"]'
emu_fault '{"match": "upload", "action": "reset_after_body"}'
put_range "$UP5" "$T/f.bin" 2000000 2999999 2>/dev/null
check "upload reset_after_body: no response" test "$STATUS" = curl-failed -o "$STATUS" = 000
check "upload reset_after_body: the range was not stored" test "$(upload_field 'u["received"]')" = 2000000
emu_fault '{"match": "upload", "action": "slow", "delay": 1}'
t0=$(date +%s%N)
put_range "$UP5" "$T/f.bin" 2000000 2999999
t1=$(date +%s%N)
expect "upload slow fault, then the range" 200
check "upload slow fault took >= 1 s" test $(( (t1 - t0) / 1000000 )) -ge 1000
emu_fault '{"match": "upload", "action": "expire"}'
put_range "$UP5" "$T/f.bin" 3000000 3499999
expect "upload expire fault: the session expires, 401" 401
for k in draft attachment send; do
    emu_fault "{\"match\": \"$k\", \"status\": 429, \"retry_after\": 2}"
done
greq POST "$BOB/messages" "$RW_AT" -H "$JSON" --data-binary '{"subject": "x"}'
expect "draft fault 429" 429 'd["error"]["code"]' ApplicationThrottled
greq POST "$BOB/messages/$D5/attachments" "$RW_AT" -H "$JSON" --data-binary "@$T/a1.json"
expect "attachment fault 429" 429
greq POST "$BOB/messages/$D5/send" "$RW_AT"
expect "send fault 429: not sent" 429
check "send fault: the draft is still in Drafts" test \
    "$(emu_ctl GET /_emu/drafts | json_eval "[x[\"immutableId\"] for x in d].count(\"$D5\")")" = 1
emu_fault '{"match": "send", "action": "reset_after_body", "deliver": true}'
before=$(emu_sent_count)
greq POST "$BOB/messages/$D5/send" "$RW_AT" 2>/dev/null
check "send reset_after_body with deliver: no response, but sent" \
    test "$STATUS" != 202 -a "$(emu_sent_count)" = $((before + 1))
check "bad fault definitions: expire needs match upload" test "$(emu_curl -o /dev/null -w '%{http_code}' \
    -X POST --data-binary '[{"match": "send", "action": "expire"}]' "$EMU_URL/_emu/faults")" = 400
check "stats of the large-message path" test "$(emu_ctl GET /_emu/stats | json_eval \
    '[d["drafts_sent"] > 0, d["createuploadsession_requests"] >= 2, d["upload_requests"] >= 6, d["send_requests"] >= 2, d["max_concurrent"]["bob@contoso.test"] >= 1, d["max_upload_window"]["bob@contoso.test"] > 1000000]')" = \
    '[true, true, true, true, true, true]'

# The most concurrent requests per mailbox (issue 11 reads it).
emu_ctl POST /_emu/reset >/dev/null
greq POST "$BOB/messages" "$RW_AT" -H "$JSON" -H "$IMM" --data-binary "@$T/d1.json"
D7=$(field 'd["id"]')
emu_fault '{"match": "message", "action": "slow", "delay": 1, "count": 3}'
pids=()
for i in 1 2 3; do
    emu_curl -o /dev/null -H "Authorization: Bearer $RW_AT" "$EMU_URL$BOB/messages/$D7" &
    pids+=($!)
done
wait "${pids[@]}"
check "stats max_concurrent: 3 parallel requests to one mailbox" test \
    "$(emu_ctl GET /_emu/stats | json_eval 'd["max_concurrent"]["bob@contoso.test"]')" = 3

# Optional limits: upload budget, the mailbox's maximum message size.
emu_ctl POST /_emu/config '{"upload_budget": {"bytes": 300000, "seconds": 30}}' >/dev/null
greq POST "$BOB/messages/$D7/attachments" "$RW_AT" -H "$JSON" --data-binary "@$T/a2.json"
expect "upload budget: the first 200 kB pass" 201
greq POST "$BOB/messages/$D7/attachments" "$RW_AT" -H "$JSON" --data-binary "@$T/a2.json"
expect "upload budget: 429 ApplicationThrottled beyond it" 429 'd["error"]["code"]' ApplicationThrottled
check "upload budget: Retry-After until the window frees" test "$(header Retry-After)" -ge 25
emu_ctl POST /_emu/config '{"upload_budget": null, "users": {"bob@contoso.test": {"max_send_size": 3600000}}}' >/dev/null
session "$D7" 3500000 toobig.bin
expect "max_send_size: an attachment beyond it: 400 ErrorMessageSizeExceeded" 400 \
    'd["error"]["code"]' ErrorMessageSizeExceeded
emu_ctl POST /_emu/config '{"users": {"bob@contoso.test": {"max_send_size": null}}}' >/dev/null

# 150 MB: the largest attachment, uploaded in ranges of 12 x 320 KiB; the
# emulator keeps the bytes in files (bounded memory).
hwm() { sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$EMU_PID/status"; }
head -c 157286400 /dev/urandom >"$T/max.bin"
greq POST "$BOB/messages" "$RW_AT" -H "$JSON" -H "$IMM" \
    --data-binary '{"subject": "150 MB", "toRecipients": [{"emailAddress": {"address": "big@example.org"}}]}'
D6=$(field 'd["id"]')
hwm0=$(hwm)
session "$D6" 157286400 max.bin
expect "createUploadSession of exactly 150 MB: 201" 201
UP6=$(field 'd["uploadUrl"]')
s=0
while [ "$s" -lt 157286400 ]; do
    e=$((s + 3932160 - 1))
    [ "$e" -lt 157286400 ] || e=157286399
    put_range "$UP6" "$T/max.bin" "$s" "$e"
    case $STATUS in 200|201) ;; *) break ;; esac
    s=$((e + 1))
done
check "150 MB uploaded in 40 ranges (last one 201)" test "$STATUS" = 201 -a \
    "$(upload_field 'len(u["chunks"])')" = 40
greq POST "$BOB/messages/$D6/send" "$RW_AT"
expect "150 MB draft sent: 202" 202
rm -f "$T/range"
check "150 MB: the recipients' attachment decodes byte for byte" test \
    "$(mime_parts "$(emu_sent_mime -1)" | sed -n '2p' | cut -d' ' -f1,2)" = \
    "$(sha256sum <"$T/max.bin" | cut -d' ' -f1) 157286400"
hwm1=$(hwm)
check "150 MB: the emulator's peak memory grew by less than 32 MB ($hwm0 -> $hwm1 kB)" \
    test $((hwm1 - hwm0)) -lt 32768
rm -f "$T/max.bin" "$(emu_sent_mime -1)"

#
# Logs never contain tokens; clean exit on SIGTERM.
#
check "requests.log has one line per request" grep -q ' POST /v1.0/users/bob@contoso.test/sendMail 202$' "$EMU_DATA/requests.log"
leak=no
for tok in "$APP_AT" "$DEV_AT" "$DEV_RT" "$CERT_AT" "$(cat "$T/secret")"; do
    grep -qF -- "$tok" "$EMU_DATA/requests.log" "$T/emu.out" && leak=yes
done
check "no token or secret in requests.log or the emulator output" test $leak = no
kill -TERM "$EMU_PID"
wait "$EMU_PID"
rc=$?
EMU_PID=
check "SIGTERM: the emulator exits with 0" test $rc = 0

t_done
