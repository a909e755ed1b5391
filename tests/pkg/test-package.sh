#!/usr/bin/env bash
# test-package.sh - the Debian package, built, installed on this machine
# and used the way an administrator does:
#
#   1. contrib/debian/build-deb.sh builds it (dpkg-buildpackage from the
#      release tarball); lintian reports no error and no warning.
#   2. dpkg -i (apt-get -f install for missing dependencies); the files,
#      owners and modes, the system user, the conffile, units installed
#      but not enabled, /etc/postfix untouched, the units' exposure
#      (systemd-analyze security --offline) below 2.0.
#   3. The quick start with the INSTALLED programs, in private namespaces:
#      m365-relay -n with an account in /etc/m365relay.conf, then one
#      message through a private Postfix whose m365 transport runs
#      /usr/bin/m365-relay, to the Microsoft 365 emulator.
#   4. The units under a real systemd: a throwaway container
#      (systemd-nspawn on an overlay of this machine's root, private
#      network) where the system Postfix is set up as README.Debian says;
#      m365-milter, m365-fetch (SMTP), m365-fetch-once with the
#      deliver_to = sendmail drop-in, the timer, the exposure levels, an
#      upgrade that restarts an enabled unit, a purge that stops it.
#   5. dpkg --purge: programs, configuration, state and statoverride gone.
#
# Not part of "make check": it installs a package system-wide.
# tests/run-all.sh runs it after the builds.  Needs root on Debian 12;
# skipped (exit 77) without root, and when m365relay is installed or
# /etc/m365relay.conf or /var/lib/m365relay exist (it would replace or
# delete them).  Whatever happens, the package is purged at the end and
# a user m365relay that did not exist before is removed.
#
# Environment: PKG_OUT, where the package is built (default
# $top_builddir/deb); PKG_DEB, a .deb to test instead of building one
# (lintian then checks that file).

# shellcheck disable=SC2317  # helper functions run through check()
set -u

# shellcheck source=tests/e2e/ns.sh
. "$(dirname "$0")/../e2e/ns.sh"

PKG=m365relay
RUSER=m365relay
CONFFILE=/etc/m365relay.conf
STATEDIR=/var/lib/m365relay
UNITS="m365-milter.service m365-fetch.service m365-fetch-once.service m365-fetch.timer
m365-lmtpd.service m365-keepalive.service m365-keepalive.timer"
# The long-running services and the service units of the timers.
SERVICES="m365-milter.service m365-fetch.service m365-fetch-once.service
m365-lmtpd.service m365-keepalive.service"
# Exposure levels (systemd-analyze security) must stay below this.
MAX_EXPOSURE=2.0

# exposure_ok UNIT LEVEL - ok when LEVEL (e.g. 1.4) is below MAX_EXPOSURE
exposure_ok() {
    if [ -n "$2" ] && awk -v l="$2" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(l < m) }'; then
	ok "$1: exposure $2 (below $MAX_EXPOSURE)"
    else
	bad "$1: exposure [$2], want below $MAX_EXPOSURE"
    fi
}

# exposure_of UNIT - the overall exposure level in systemd-analyze's output
# on stdin
exposure_of() {
    sed -n "s/.*Overall exposure level for $1: \([0-9.]*\).*/\1/p" | tail -n 1
}

# stat_is MSG PATH WANT - "MODE OWNER GROUP" of PATH is WANT
stat_is() {
    t_eq "$1" "$(stat -c '%a %U %G' "$2" 2>&1)" "$3"
}

# unit_links - how many enable symlinks of m365-* units exist
unit_links() {
    find /etc/systemd/system -path '*.wants/m365-*' 2>/dev/null | wc -l
}

# mail_marker_in FILE MARKER - FILE has the line MARKER
mail_marker_in() {
    grep -q -- "$2" "$1" 2>/dev/null
}

# ===================================================================
# phase_flow - inside private namespaces: the quick start with the
# installed programs and a private Postfix
phase_flow() {
    e2e_inside
    . "$top_srcdir/tests/lib.sh"
    . "$top_srcdir/tests/postfix.sh"
    t_init pkg-flow
    trap 'pf_stop; t_cleanup' EXIT
    e2e_private_hosts

    emu_setup
    # An account for the emulator in the installed /etc/m365relay.conf
    # (written in place: mode and group stay the package's); state_dir
    # is left at its built-in default, /var/lib/m365relay.
    write_conf "$T/conf"
    sed -e '/^state_dir = /d' "$T/conf" > "$CONFFILE"
    chmod 755 "$T" "$T/certs"
    chmod 644 "$T/certs/ca.pem" "$T/certs/client.pem"
    chown "$RUSER" "$T/secret" "$T/certs/client.key"
    touch "$T/relay.log"
    chown "$RUSER" "$T/relay.log"
    stat_is "$CONFFILE keeps 0640 root:$RUSER when edited" "$CONFFILE" "640 root $RUSER"

    local out
    out=$(runuser -u "$RUSER" -- /usr/bin/m365-relay -n 2>&1)
    t_match "installed m365-relay -n as $RUSER reads $CONFFILE: configuration OK" \
	"$out" '^configuration OK$'
    check "installed m365ctl test app (connection test against the emulator)" \
	/usr/bin/m365ctl test app
    out=$(/usr/sbin/m365-milter -n 2>&1)
    t_match "installed m365-milter -n: configuration OK" "$out" '^configuration OK$'

    # The private Postfix (tests/postfix.sh) with the installed relay.
    # shellcheck disable=SC2034  # read by pf_setup
    PF_RELAY=/usr/bin/m365-relay PF_CONF=$CONFFILE PF_RELAY_USER=$RUSER
    if ! pf_setup "$T/pf" 2525 2526 || ! pf_start; then
	bad "a private Postfix with the m365 transport starts"
	t_done
    fi
    t_match "the m365 transport runs the installed m365-relay" \
	"$(grep -A1 '^m365[[:space:]]' "$PF_ETC/master.cf")" \
	"argv=/usr/bin/m365-relay -c $CONFFILE "

    local subj="package quick start"
    send_msg 2525 bob@contoso.test ops@example.com,oncall@example.org \
	"$T/m1.eml" "$subj" 'From: Monitoring <bob@contoso.test>' \
	'To: Operations <ops@example.com>' >/dev/null
    if wait_sent "$subj" 1 30; then
	ok "one message through Postfix and /usr/bin/m365-relay to the emulator"
    else
	bad "one message through Postfix and /usr/bin/m365-relay to the emulator"
	tail -n 20 "$PF_MAILLOG" | sed 's/^/#   /'
    fi
    check "the emulator got it from bob@contoso.test for both recipients" \
	sent_check "$subj" count=1 mailbox=bob@contoso.test \
	rcpts=ops@example.com,oncall@example.org
    check "Postfix logged the delivery through the m365 transport" \
	pf_wait_log 'relay=m365, .*status=sent' 10
    check "m365-relay logged it as sent" grep -q 'status=sent' "$T/relay.log"
    stat_is "state_dir $STATEDIR stays 0700 $RUSER" "$STATEDIR" "700 $RUSER $RUSER"
    t_done
}

# ===================================================================
# phase_units - inside the throwaway systemd container: README.Debian's
# steps and the units under systemd
phase_units() {
    . "$top_srcdir/tests/lib.sh"
    t_init pkg-units
    # This container is thrown away: no policy-rc.d here, so that the
    # maintainer scripts may start and stop units as on a normal system.
    rm -f /usr/sbin/policy-rc.d
    emu_setup

    # 1. An account (README.Debian, step 1).
    install -d -o root -g "$RUSER" -m 0750 /etc/m365relay
    install -o "$RUSER" -g "$RUSER" -m 0600 "$T/secret" /etc/m365relay/app.secret
    install -m 0644 "$CA_FILE" /etc/m365relay/ca.pem
    cat > "$CONFFILE" <<EOF
[global]
login_url = $EMU_URL
graph_url = $EMU_URL
ca_file = /etc/m365relay/ca.pem

[milter]
socket = inet:8894@127.0.0.1

[account app]
tenant = $EMU_TENANT
client_id = $EMU_APP_SECRET
auth = secret
secret_file = /etc/m365relay/app.secret
mailbox = bob@contoso.test
senders = @contoso.test
default = yes

[source inbox]
account = app
mailbox = bob@contoso.test
deliver_to = smtp://127.0.0.1:25
recipients = root@localhost
interval = 10
EOF
    check "m365-relay -n as $RUSER in the container" \
	sh -c "runuser -u $RUSER -- m365-relay -n | grep -q 'configuration OK'"

    # 2. The system Postfix, as README.Debian says (the milter on TCP:
    # Debian's smtpd runs chrooted).
    cat >> /etc/postfix/master.cf <<'EOF'
m365      unix  -       n       n       -       -       pipe
  flags=Rq user=m365relay argv=/usr/bin/m365-relay -c /etc/m365relay.conf -q ${queue_id} -f ${sender} -- ${recipient}
EOF
    printf 'example.com     m365:graph\n' > /etc/postfix/transport_m365
    # shellcheck disable=SC2016  # $myhostname, $smtpd_milters: Postfix's
    postconf -e 'inet_interfaces = loopback-only' 'inet_protocols = ipv4' \
	'mydestination = localhost, $myhostname' 'myorigin = $myhostname' \
	'relayhost =' 'alias_maps =' \
	'default_transport = error:no mail leaves this test container' \
	'transport_maps = texthash:/etc/postfix/transport_m365' \
	'm365_destination_recipient_limit = 500' \
	'm365_destination_concurrency_limit = 4' \
	'smtpd_milters = inet:127.0.0.1:8894' \
	'non_smtpd_milters = $smtpd_milters' 'milter_default_action = tempfail'
    systemctl restart postfix
    if ! wait_port 25; then
	bad "the system Postfix of the container listens on port 25"
	t_done
    fi

    # 3. m365-milter under systemd, in front of the m365 transport.
    check "systemctl start m365-milter" systemctl start m365-milter
    check "m365-milter listens (journal)" wait_until 15 sh -c \
	"journalctl -u m365-milter -o cat | grep -q 'listening on inet:8894@127.0.0.1'"
    t_eq "m365-milter runs as $RUSER" \
	"$(ps -o user= -p "$(systemctl show -P MainPID m365-milter)" 2>&1)" "$RUSER"
    local subj="package units milter"
    send_msg 25 bob@contoso.test ops@example.com "$T/m1.eml" "$subj" \
	'From: bob@contoso.test' 'To: ops@example.com' >/dev/null
    check "Postfix -> m365-milter -> m365 transport -> emulator" wait_sent "$subj" 1 30
    check "the milter saw it (journal)" sh -c \
	"journalctl -u m365-milter -o cat | grep -q 'milter: from=<bob@contoso.test>, account=app'"

    # 3b. m365-lmtpd under systemd: Postfix's lmtp(8) client delivers
    # example.net to it (contrib/postfix/master.cf.lmtp; the postfix
    # user in group m365relay for the 0660 socket).
    usermod -a -G "$RUSER" postfix
    sed -n '/^m365lmtp[[:space:]]/,/^[^[:space:]]/p' \
	"$top_srcdir/contrib/postfix/master.cf.lmtp" >> /etc/postfix/master.cf
    printf 'example.net     m365lmtp:unix:/run/m365relay/lmtp.sock\n' \
	>> /etc/postfix/transport_m365
    postconf -e 'm365lmtp_destination_recipient_limit = 500' \
	'm365lmtp_destination_concurrency_limit = 4'
    systemctl restart postfix
    check "systemctl start m365-lmtpd" systemctl start m365-lmtpd
    check "m365-lmtpd listens on /run/m365relay/lmtp.sock" \
	wait_until 15 test -S /run/m365relay/lmtp.sock
    t_eq "m365-lmtpd runs as $RUSER" \
	"$(ps -o user= -p "$(systemctl show -P MainPID m365-lmtpd)" 2>&1)" "$RUSER"
    subj="package units lmtp"
    send_msg 25 bob@contoso.test ops@example.net "$T/m2.eml" "$subj" \
	'From: bob@contoso.test' 'To: ops@example.net' >/dev/null
    check "Postfix -> lmtp(8) -> m365-lmtpd -> emulator" wait_sent "$subj" 1 30
    check "m365-lmtpd logged it as sent (journal)" sh -c \
	"journalctl -u m365-lmtpd -o cat | grep -q 'to=<ops@example.net>, .*status=sent'"
    # /run/m365relay is shared: stopping the milter keeps the LMTP socket.
    systemctl stop m365-milter
    check "stopping m365-milter keeps /run/m365relay/lmtp.sock" \
	test -S /run/m365relay/lmtp.sock
    systemctl start m365-milter
    systemctl stop m365-lmtpd

    # 4. m365-fetch.service, deliver_to = smtp://127.0.0.1:25.
    make_msg "$T/in1.eml" "package units fetch smtp" 'From: carol@example.net' \
	'To: bob@contoso.test'
    emu_put_message bob@contoso.test "$T/in1.eml" >/dev/null
    check "systemctl start m365-fetch.service" systemctl start m365-fetch.service
    check "m365-fetch.service delivered a message into /var/mail/root over SMTP" \
	wait_until 30 mail_marker_in /var/mail/root body-marker-package-units-fetch-smtp
    systemctl stop m365-fetch.service

    # 5. m365-fetch-once.service with deliver_to = sendmail and the
    # drop-in of README.Debian (postdrop's group instead of its
    # set-group-ID bit, which the hardening ignores).
    sed -i 's|^deliver_to = .*|deliver_to = sendmail|' "$CONFFILE"
    mkdir -p /etc/systemd/system/m365-fetch-once.service.d
    cat > /etc/systemd/system/m365-fetch-once.service.d/sendmail.conf <<'EOF'
[Service]
SupplementaryGroups=postdrop
ReadWritePaths=/var/spool/postfix/maildrop
RestrictAddressFamilies=AF_NETLINK
EOF
    systemctl daemon-reload
    make_msg "$T/in2.eml" "package units fetch sendmail" 'From: carol@example.net' \
	'To: bob@contoso.test'
    emu_put_message bob@contoso.test "$T/in2.eml" >/dev/null
    check "systemctl start m365-fetch-once.service (deliver_to = sendmail)" \
	timeout 60 systemctl start m365-fetch-once.service
    check "m365-fetch-once handed it to /usr/sbin/sendmail (journal)" sh -c \
	"journalctl -u m365-fetch-once -o cat | grep -q 'relay=/usr/sbin/sendmail, dsn=2.0.0, status=sent'"
    check "and Postfix delivered it into /var/mail/root" \
	wait_until 30 mail_marker_in /var/mail/root body-marker-package-units-fetch-sendmail

    # 6. The timer.
    check "systemctl enable --now m365-fetch.timer" systemctl enable --now m365-fetch.timer
    check "m365-fetch.timer is active" systemctl is-active --quiet m365-fetch.timer
    systemctl disable --now m365-fetch.timer >/dev/null 2>&1

    # 7. Exposure levels under the running systemd.
    local u
    for u in $SERVICES; do
	exposure_ok "$u (systemd-analyze security)" \
	    "$(systemd-analyze security --no-pager "$u" 2>&1 | exposure_of "$u")"
    done

    # 8. An upgrade restarts an enabled unit; a purge stops it.
    systemctl enable m365-milter >/dev/null 2>&1
    local pid1 pid2
    pid1=$(systemctl show -P MainPID m365-milter)
    if dpkg -i "$PKG_DEB" >"$T/upgrade.out" 2>&1; then
	ok "dpkg -i again (upgrade path) in the container"
    else
	bad "dpkg -i again (upgrade path) in the container"
	sed 's/^/#   /' "$T/upgrade.out"
    fi
    wait_until 10 systemctl is-active --quiet m365-milter
    pid2=$(systemctl show -P MainPID m365-milter)
    if [ "$pid2" != 0 ] && [ "$pid2" != "$pid1" ]; then
	ok "the upgrade restarted the enabled m365-milter ($pid1 -> $pid2)"
    else
	bad "the upgrade restarted the enabled m365-milter: MainPID $pid1 -> $pid2"
    fi
    check "dpkg --purge in the container" dpkg --purge "$PKG"
    if systemctl is-active --quiet m365-milter; then
	bad "the purge stopped m365-milter"
    else
	ok "the purge stopped m365-milter"
    fi
    t_eq "the purge removed the enable symlinks" \
	"$(unit_links)" 0
    t_done
}

# ===================================================================
# The container: an overlay of this machine's root on a tmpfs, booted by
# systemd-nspawn with a private network; nothing in it reaches the host.

CT_DIR=
CT_NSPAWN=
CT_LEADER=

# ct_boot - boot the container; 1 when it does not come up (log in $T).
# The source tree and the package are bound in at their own paths
# (read-only): nspawn puts a tmpfs on /tmp, and the overlay may show a
# file changed after it was mounted as it was before.
ct_boot() {
    CT_DIR=$(mktemp -d /run/m365-pkg-ct.XXXXXX) || return 1
    mount -t tmpfs -o mode=0755 tmpfs "$CT_DIR" || return 1
    mkdir -p "$CT_DIR/upper" "$CT_DIR/work" "$CT_DIR/root"
    mount -t overlay overlay \
	-o "lowerdir=/,upperdir=$CT_DIR/upper,workdir=$CT_DIR/work" "$CT_DIR/root" ||
	return 1
    systemd-nspawn -D "$CT_DIR/root" -M m365pkg --keep-unit --register=no \
	--bind-ro="$top_srcdir" --bind-ro="$(dirname "$DEB")" --link-journal=no --uuid="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" \
	--private-network --console=pipe -b </dev/null >"$T/nspawn.log" 2>&1 &
    CT_NSPAWN=$!
    # The container's init: nspawn's first child is a helper that forks
    # it and exits.
    wait_until 30 pgrep -P "$CT_NSPAWN" -x systemd || return 1
    CT_LEADER=$(pgrep -P "$CT_NSPAWN" -x systemd | head -n 1)
    wait_until 30 nsenter -t "$CT_LEADER" -a test -S /run/systemd/private ||
	return 1
    # "running" or "degraded" (a host service that cannot run there)
    timeout 90 nsenter -t "$CT_LEADER" -a systemctl is-system-running --wait \
	>"$T/ct-state" 2>&1
    grep -Eq '^(running|degraded)$' "$T/ct-state"
}

# ct_stop - power the container off and remove the overlay
ct_stop() {
    if [ -n "$CT_NSPAWN" ]; then
	term_wait "$CT_NSPAWN" 30
	CT_NSPAWN=
    fi
    if [ -n "$CT_DIR" ]; then
	umount "$CT_DIR/root" 2>/dev/null
	umount "$CT_DIR" 2>/dev/null
	rmdir "$CT_DIR" 2>/dev/null
	CT_DIR=
    fi
}

# run_phase NAME CMD... - run a phase of this script (CMD...); add its
# "ok"/"not ok" lines to ours
run_phase() {
    local name=$1 out rc p f
    shift
    out=$T/phase-$name.out
    "$@" >"$out" 2>&1
    rc=$?
    grep -Ev '^[0-9]+ passed, [0-9]+ failed$' "$out"
    p=$(grep -c '^ok - ' "$out")
    f=$(grep -c '^not ok - ' "$out")
    PASS=$((PASS + p))
    FAIL=$((FAIL + f))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
	bad "phase $name exited $rc without a failed check (see above)"
    fi
}

case "${PKG_PHASE:-}" in
flow) phase_flow; exit ;;
units) phase_units; exit ;;
esac

# ===================================================================
# The outer test, on this machine.

e2e_outside test-package.sh "it installs a Debian package system-wide" \
    "run tests/run-all.sh as root: it installs dpkg-dev, debhelper, lintian, systemd, systemd-container, postfix, swaks and the rest (CI does)" \
    dpkg apt-get dpkg-buildpackage lintian systemd-analyze systemd-nspawn \
    nsenter postfix swaks runuser
if dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -q 'installed'; then
    echo "SKIP: the package $PKG is installed on this machine; this test would purge it"
    exit 77
fi
for f in "$CONFFILE" "$STATEDIR"; do
    if [ -e "$f" ]; then
	echo "SKIP: $f exists (a source install?); this test would replace or delete it"
	exit 77
    fi
done

. "$top_srcdir/tests/lib.sh"
t_init package
user_existed=no
id "$RUSER" >/dev/null 2>&1 && user_existed=yes
installed=no

# pkg_cleanup - whatever happened: no container, no package, no new user
pkg_cleanup() {
    local rc=$?
    ct_stop
    if [ "$installed" = yes ]; then
	dpkg --purge "$PKG" >/dev/null 2>&1
    fi
    if [ "$user_existed" = no ] && id "$RUSER" >/dev/null 2>&1; then
	deluser --system "$RUSER" >/dev/null 2>&1 || userdel "$RUSER" 2>/dev/null
	getent group "$RUSER" >/dev/null && groupdel "$RUSER" 2>/dev/null
    fi
    (exit "$rc")
    t_cleanup
}
trap pkg_cleanup EXIT

postfix_sum() {
    find /etc/postfix -type f -print0 | sort -z | xargs -0 sha256sum
}
postfix_before=$(postfix_sum)

# ---- 1. build and lintian
out_dir=${PKG_OUT:-$top_builddir/deb}
if [ -n "${PKG_DEB:-}" ]; then
    DEB=$PKG_DEB
    lint_target=$DEB
else
    if "$top_srcdir/contrib/debian/build-deb.sh" "$out_dir" >"$T/build.out" 2>&1; then
	ok "contrib/debian/build-deb.sh builds the package"
    else
	bad "contrib/debian/build-deb.sh builds the package"
	sed 's/^/#   /' "$T/build.out"
	t_done
    fi
    DEB=$(find "$out_dir" -maxdepth 1 \
	-name "${PKG}_*_$(dpkg --print-architecture).deb" | head -n 1)
    lint_target=$(find "$out_dir" -maxdepth 1 -name "${PKG}_*.changes" | head -n 1)
fi
export PKG_DEB=$DEB
[ -f "$DEB" ] || { bad "a .deb to test ($DEB)"; t_done; }
echo "# package: $DEB"
lintian --fail-on error,warning "$lint_target" >"$T/lintian.out" 2>&1
lrc=$?
if [ "$lrc" -eq 0 ] && ! grep -Eq '^[EW]: ' "$T/lintian.out"; then
    ok "lintian: no error and no warning"
else
    bad "lintian: no error and no warning (exit $lrc)"
fi
sed 's/^/# lintian: /' "$T/lintian.out"

# ---- 2. install and inspect
export DEBIAN_FRONTEND=noninteractive
installed=yes
if dpkg -i "$DEB" >"$T/install.out" 2>&1 ||
   apt-get -f install -y -q >>"$T/install.out" 2>&1; then
    :
fi
t_eq "dpkg -i (apt-get -f install): the package is installed" \
    "$(dpkg-query -W -f='${Status}' "$PKG" 2>&1)" "install ok installed"
if [ "$FAIL" -ne 0 ]; then
    sed 's/^/#   /' "$T/install.out"
    t_done
fi
check "the postinst names the next steps (README.Debian)" \
    grep -q 'README.Debian' "$T/install.out"

for f in /usr/bin/m365-relay /usr/bin/m365ctl /usr/bin/m365-fetch \
    /usr/sbin/m365-milter /usr/sbin/m365-lmtpd; do
    check "program $f" test -x "$f"
done
for f in man5/m365relay.conf.5 man8/m365-relay.8 man8/m365ctl.8 \
    man8/m365-fetch.8 man8/m365-milter.8 man8/m365-lmtpd.8; do
    check "man page $f" test -f "/usr/share/man/$f.gz"
done
for u in $UNITS; do
    check "unit /lib/systemd/system/$u" test -f "/lib/systemd/system/$u"
done
check "README.Debian" test -f /usr/share/doc/$PKG/README.Debian.gz

pw=$(getent passwd "$RUSER")
t_match "system user $RUSER: home $STATEDIR, no login shell" "$pw" \
    "^$RUSER:x:[0-9]+:[0-9]+:[^:]*:$STATEDIR:/usr/sbin/nologin\$"
uid=$(id -u "$RUSER" 2>/dev/null || echo 99999)
if [ "$uid" -lt 1000 ]; then
    ok "$RUSER is a system user (uid $uid)"
else
    bad "$RUSER is a system user (uid $uid)"
fi
check "group $RUSER" getent group "$RUSER"
stat_is "$CONFFILE is 0640 root:$RUSER" "$CONFFILE" "640 root $RUSER"
t_match "$CONFFILE is a conffile" \
    "$(dpkg-query -W -f='${Conffiles}' "$PKG")" "^ $CONFFILE [0-9a-f]+\$"
check "$CONFFILE is the commented sample" cmp -s "$CONFFILE" \
    "$top_srcdir/contrib/m365relay.conf.sample"
stat_is "$STATEDIR is 0700 $RUSER:$RUSER" "$STATEDIR" "700 $RUSER $RUSER"
t_eq "no unit enabled by the package" \
    "$(unit_links)" 0
t_eq "/etc/postfix untouched by the installation" "$(postfix_sum)" "$postfix_before"

out=$(/usr/bin/m365-relay -n 2>&1)
rc=$?
t_eq "m365-relay -n on the sample (no account yet): exit 78" "$rc" 78
t_match "  and the error names $CONFFILE:LINE and the fix" "$out" \
    "^$CONFFILE:[0-9]+: no \\[account NAME\\] section.*add the account"

# shellcheck disable=SC2046  # one word per unit
check "systemd-analyze verify of the installed units (programs, man pages)" \
    systemd-analyze verify $(printf '/lib/systemd/system/%s ' $UNITS)
for u in $SERVICES; do
    exposure_ok "$u (systemd-analyze security --offline)" \
	"$(systemd-analyze security --offline=yes --no-pager "/lib/systemd/system/$u" 2>&1 |
	    exposure_of "$u")"
done

# ---- 3. the quick start with the installed programs
run_phase flow unshare --net --uts --mount --pid --fork --kill-child \
    --mount-proc env M365_E2E_IN_NS=1 PKG_PHASE=flow bash "$me"

# ---- 4. the units under systemd, in a throwaway container
if ct_boot; then
    ok "a throwaway systemd container boots"
    run_phase units nsenter -t "$CT_LEADER" -a env PKG_PHASE=units \
	top_srcdir="$top_srcdir" top_builddir="$top_srcdir" PKG_DEB="$DEB" \
	PATH=/usr/sbin:/usr/bin:/sbin:/bin bash "$me"
else
    bad "a throwaway systemd container boots (systemd-nspawn on an overlay of /)"
    sed 's/^/#   /' "$T/nspawn.log" "$T/ct-state" 2>/dev/null | tail -n 20
fi
ct_stop

# ---- 5. purge
if dpkg --purge "$PKG" >"$T/purge.out" 2>&1; then
    ok "dpkg --purge $PKG"
    installed=no
else
    bad "dpkg --purge $PKG"
    sed 's/^/#   /' "$T/purge.out"
fi
for f in /usr/bin/m365-relay /usr/sbin/m365-milter "$CONFFILE" "$STATEDIR" \
    /lib/systemd/system/m365-milter.service; do
    check "purged: $f is gone" test ! -e "$f"
done
t_eq "purged: no statoverride left" \
    "$(dpkg-statoverride --list 2>/dev/null | grep -c "$CONFFILE\|$STATEDIR")" 0
t_eq "/etc/postfix untouched after the purge" "$(postfix_sum)" "$postfix_before"
check "the user $RUSER stays after the purge (README.Debian)" id "$RUSER"
t_done
