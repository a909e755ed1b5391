#!/bin/bash
#
# test-rbac.sh - least privilege for app-only accounts (issue 13.4)
#
# m365ctl rbac ACCOUNT prints the Exchange Online RBAC for Applications
# commands (New-ServicePrincipal, New-ManagementScope with a recipient
# filter on exactly the mailboxes this file uses, New-ManagementRole-
# Assignment of "Application Mail.Send", and "Application Mail.ReadWrite"
# / "Application Mail.ReadBasic" where the configuration uses them); the
# cases: the default file, large_messages = no, a [source] of the app,
# two accounts of one app, quoting of odd addresses, a national cloud, a
# delegated account (refused, 64).
#
# m365ctl test ACCOUNT and its rbac step against the emulator, whose
# per-app "mailboxes" rule plays an Exchange RBAC scope (403
# ErrorAccessDenied outside it; tests/emulator/README.md): without
# rbac_probe_mailbox "--" and how to set it; an unscoped app "warn
# unrestricted" with the remedy m365ctl rbac; a scoped app "ok scoped",
# while mail from its own mailbox still goes out and mail from a mailbox
# outside the scope is deferred, not bounced; an app that may read no
# mail "--" (cannot tell); a probe mailbox the file uses "warn".
#
# Needs python3, curl and openssl; skips (77) without them.

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top_srcdir/tests/lib.sh"

relay_setup rbac
[ -x "$CTL" ] || { bad "$CTL is built (run make first)"; t_done; }

# ctl CONF ARGS... - m365ctl with CONF; sets rc, out
ctl() {
    local c=$1
    shift
    "$CTL" -c "$c" "$@" >"$T/ctl.out" 2>&1 </dev/null
    rc=$?
    out=$(cat "$T/ctl.out")
}

# has MSG TEXT - the last output holds TEXT (a fixed string)
has() {
    if grep -qF -- "$2" "$T/ctl.out"; then
	ok "$1"
    else
	bad "$1: no \"$2\" in:"
	sed 's/^/#   /' "$T/ctl.out"
    fi
}

# lacks MSG TEXT - the last output does not hold TEXT
lacks() {
    if grep -qF -- "$2" "$T/ctl.out"; then
	bad "$1: unexpected \"$2\" in:"
	grep -F -- "$2" "$T/ctl.out" | sed 's/^/#   /'
    else
	ok "$1"
    fi
}

# variant NAME SED... - $T/NAME.conf: $CONF edited by the sed expressions
variant() {
    local f=$T/$1.conf
    shift
    sed "$@" "$CONF" >"$f"
    V=$f
}

APP=$EMU_APP_SECRET
SCOPE="m365relay $APP"

# ---- m365ctl rbac: the default file (account app: bob, large_messages auto)
ctl "$CONF" rbac app
t_eq "rbac app: exit 0" "$rc" 0
has "the app id is filled in" "\$AppId = \"$APP\""
has "the service principal" "New-ServicePrincipal -AppId \$AppId -ObjectId \$ObjectId -DisplayName \"m365relay app\""
has "how to find the Object ID" "(Get-MgServicePrincipal -Filter \"appId eq '$APP'\").Id"
has "a send scope on exactly bob's mailbox" \
    "New-ManagementScope -Name \"$SCOPE send\" -RecipientRestrictionFilter \"PrimarySmtpAddress -eq 'bob@contoso.test'\""
has "Application Mail.Send on that scope" \
    "New-ManagementRoleAssignment -Name \"$SCOPE Mail.Send\" -App \$AppId -Role \"Application Mail.Send\" -CustomResourceScope \"$SCOPE send\""
has "large_messages = auto: Application Mail.ReadWrite for drafts" \
    "-Role \"Application Mail.ReadWrite\" -CustomResourceScope \"$SCOPE readwrite\""
lacks "Mail.ReadWrite covers Sent Items look-ups: no Mail.ReadBasic" "Application Mail.ReadBasic"
has "the tenant is named" "tenant $EMU_TENANT"
has "the check command" "Test-ServicePrincipalAuthorization -Identity \$AppId -Resource \"bob@contoso.test\""
has "remove the tenant-wide grant" "remove the application permissions Mail.Send"
has "Microsoft's page" "https://learn.microsoft.com/exchange/permissions-exo/application-rbac"
lacks "the other apps' mailboxes are not in it" "shared@contoso.test"
lacks "the delegated account's mailbox is not in it" "alice@contoso.test"
has "global cloud: plain Connect-ExchangeOnline" "Connect-ExchangeOnline"
lacks "global cloud: no environment name" "ExchangeEnvironmentName"

# ---- large_messages = no: Mail.ReadBasic for Sent Items, no ReadWrite
variant nolarge 's|^mailbox = bob@contoso.test$|mailbox = bob@contoso.test\nlarge_messages = no|'
ctl "$V" rbac app
has "large_messages = no: Mail.ReadBasic for the Sent Items look-ups" \
    "New-ManagementRoleAssignment -Name \"$SCOPE Mail.ReadBasic\" -App \$AppId -Role \"Application Mail.ReadBasic\" -CustomResourceScope \"$SCOPE readbasic\""
has "... on bob's mailbox" "-Name \"$SCOPE readbasic\" -RecipientRestrictionFilter \"PrimarySmtpAddress -eq 'bob@contoso.test'\""
lacks "large_messages = no: no Mail.ReadWrite" "Application Mail.ReadWrite"

# ---- a [source] of the app reads helpdesk@: ReadWrite covers it
cp "$T/nolarge.conf" "$T/src.conf"
printf '\n[source help]\naccount = app\nmailbox = helpdesk@contoso.test\ndeliver_to = sendmail\nrecipients = root\n' >>"$T/src.conf"
ctl "$T/src.conf" rbac app
has "a [source]: Mail.ReadWrite on exactly its mailbox" \
    "-Name \"$SCOPE readwrite\" -RecipientRestrictionFilter \"PrimarySmtpAddress -eq 'helpdesk@contoso.test'\""
has "... while bob keeps Mail.ReadBasic" "-Name \"$SCOPE readbasic\" -RecipientRestrictionFilter \"PrimarySmtpAddress -eq 'bob@contoso.test'\""

# ---- two accounts of one app, odd but valid addresses
cp "$CONF" "$T/two.conf"
cat >>"$T/two.conf" <<EOF

[account app2]
tenant = $EMU_TENANT
client_id = $APP
auth = secret
secret_file = $T/secret
mailbox = o'neil\$x@contoso.test
senders = @two.test
EOF
ctl "$T/two.conf" rbac app
has "one app, two accounts: both mailboxes in the send scope, quoted for OPATH and PowerShell" \
    "-RecipientRestrictionFilter \"PrimarySmtpAddress -eq 'bob@contoso.test' -or PrimarySmtpAddress -eq 'o''neil\`\$x@contoso.test'\""
has "the other account is named" "Also for the accounts of the same app (RBAC is per app): app2"

# ---- a national cloud
variant gov 's|^\[global\]$|[global]\ncloud = usgov|'
ctl "$V" rbac app
has "usgov: Connect-ExchangeOnline for GCC High" "Connect-ExchangeOnline -ExchangeEnvironmentName O365USGovGCCHigh"

# ---- a delegated account: RBAC for Applications does not apply
ctl "$CONF" rbac deleg
t_eq "rbac deleg: usage error (64)" "$rc" 64
has "rbac deleg: says why" "account deleg is delegated"
ctl "$CONF" rbac nosuch
t_eq "rbac of an unknown account: 64" "$rc" 64

# ---- m365ctl test: the rbac step
ctl "$CONF" test app
t_eq "test app without rbac_probe_mailbox: still passes" "$rc" 0
has "without rbac_probe_mailbox: not checked" "--   rbac: not checked whether the app can reach mailboxes this configuration does not use"
has "... and how to check it" "remedy: set rbac_probe_mailbox = a mailbox outside this configuration in [account app]; m365ctl rbac app prints"

variant probe 's|^mailbox = bob@contoso.test$|mailbox = bob@contoso.test\nrbac_probe_mailbox = alice@contoso.test|'
PROBE=$V
ctl "$PROBE" test app
has "an unscoped app reads a mailbox outside the file: warn" "warn rbac: unrestricted: the app read Sent Items of alice@contoso.test"
has "... with the remedy" "remedy: limit it with RBAC for Applications: m365ctl rbac app prints the commands"
t_eq "... a warning, not a failure (exit 0)" "$rc" 0

# The emulator's RBAC scope: app $APP reaches bob's mailbox only.
emu_ctl POST /_emu/config "{\"apps\": {\"$APP\": {\"mailboxes\": [\"bob@contoso.test\"]}}}" >/dev/null
ctl "$PROBE" test app
has "a scoped app: ok scoped" "ok   rbac: scoped: access to alice@contoso.test (outside this configuration) is denied (HTTP 403), bob@contoso.test is readable"
t_eq "a scoped app: test passes" "$rc" 0
make_msg "$T/m1" "rbac in scope"
relay "$T/m1" -c "$CONF" -f bob@contoso.test -- carol@example.net
t_eq "a scoped app still sends from its own mailbox" "$rc" 0
variant outside 's|^mailbox = bob@contoso.test$|mailbox = alice@contoso.test|'
make_msg "$T/m2" "rbac outside"
relay "$T/m2" -c "$V" -f bob@contoso.test -- carol@example.net
t_eq "a mailbox outside the scope: deferred (75), never bounced" "$rc" 75
t_match "... 4.7.x access denied" "$first" '^4\.7\.[0-9] .*ErrorAccessDenied|^4\.7\.[0-9] .*denied'

# An app that may read no mail at all: 403 everywhere, so it cannot tell.
emu_ctl POST /_emu/config "{\"apps\": {\"$APP\": {\"roles\": [\"Mail.Send\"]}}}" >/dev/null
ctl "$PROBE" test app --fresh
has "no read permission: cannot tell" "--   rbac: cannot tell: access to alice@contoso.test is denied, but so is access to the account's own mailbox bob@contoso.test"
emu_ctl POST /_emu/config "{\"apps\": {\"$APP\": {\"roles\": [\"Mail.Send\", \"Mail.ReadWrite\"]}}}" >/dev/null

# A probe mailbox the configuration uses proves nothing.
variant same 's|^mailbox = bob@contoso.test$|mailbox = bob@contoso.test\nrbac_probe_mailbox = BOB@contoso.test|'
ctl "$V" test app
has "a probe mailbox the file uses: warn" "warn rbac: rbac_probe_mailbox BOB@contoso.test is a mailbox this configuration uses"

# rbac_probe_mailbox must be an address.
variant badprobe 's|^mailbox = bob@contoso.test$|mailbox = bob@contoso.test\nrbac_probe_mailbox = nobody|'
ctl "$V" check
t_eq "a bad rbac_probe_mailbox: configuration error (78)" "$rc" 78
has "... named with its line" "bad rbac_probe_mailbox \"nobody\""

t_done
