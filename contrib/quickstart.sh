#!/usr/bin/env bash
# contrib/quickstart.sh - see m365relay work, on a fresh Debian machine,
# without a Microsoft 365 tenant:
#
#	sudo bash contrib/quickstart.sh          start and send a sample
#	sudo bash contrib/quickstart.sh stop     stop what it started
#
# It installs the Debian packages it needs, builds m365relay, starts the
# bundled Microsoft 365 emulator (tests/emulator: identity platform +
# Graph sendMail, HTTPS on 127.0.0.1) and a private Postfix on
# 127.0.0.1:2525 whose "m365" pipe transport runs m365-relay, sends a
# sample notification through local SMTP with swaks, and shows it as it
# arrived in the emulated mailbox.  Nothing is sent off this machine:
# both servers listen on loopback only and the system's own Postfix
# configuration (/etc/postfix) is not touched.
#
# Settings: QS_DIR (default /tmp/m365relay-quickstart), QS_PORT (SMTP
# port, default 2525; the content_filter listener is QS_PORT+1).

set -eu
export LC_ALL=C

top=$(cd "$(dirname "$0")/.." && pwd)
QS_DIR=${QS_DIR:-/tmp/m365relay-quickstart}
QS_PORT=${QS_PORT:-2525}
QS_USER=${QS_USER:-m365relay}

PACKAGES="autoconf automake libtool pkg-config make gcc libmilter-dev
libcurl4-openssl-dev libcjson-dev libssl-dev postfix swaks miltertest
python3 openssl curl ca-certificates iproute2 util-linux m4"

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }

# qs_stop - stop the Postfix instance and the emulator of an earlier run
qs_stop() {
    local pid
    if [ -f "$QS_DIR/pf/etc/main.cf" ]; then
	postfix -c "$QS_DIR/pf/etc" stop >/dev/null 2>&1 || true
    fi
    if [ -f "$QS_DIR/emu.pid" ]; then
	pid=$(cat "$QS_DIR/emu.pid")
	case "$pid" in
	''|*[!0-9]*) ;;
	*) if grep -q m365emu "/proc/$pid/cmdline" 2>/dev/null; then
	       kill "$pid" 2>/dev/null || true
	   fi ;;
	esac
	rm -f "$QS_DIR/emu.pid"
    fi
}

[ "$(id -u)" = 0 ] ||
    die "run as root (sudo bash contrib/quickstart.sh): it installs packages, creates the system user $QS_USER and starts a private Postfix"

if [ "${1:-}" = stop ]; then
    qs_stop
    echo "quickstart: stopped the private Postfix and the emulator (files stay in $QS_DIR)"
    exit 0
fi

# ---- 1. packages
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null |
	grep -q '^install ok installed$' || missing="$missing $p"
done
if [ -n "$missing" ]; then
    say "installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing >/dev/null
else
    say "Debian packages: all installed"
fi

# ---- 2. build
if [ -f "$top/config.status" ]; then
    build=$top			# configured in place: build there
    say "building m365relay in $build"
else
    build=$top/build
    say "building m365relay in $build"
    if [ ! -x "$top/configure" ]; then
	(cd "$top" && autoreconf -fi) >/dev/null 2>&1 || die "autoreconf -fi failed in $top"
    fi
    mkdir -p "$build"
    if [ ! -f "$build/config.status" ]; then
	(cd "$build" && "$top/configure" -q) || die "configure failed (see $build/config.log)"
    fi
fi
make -C "$build" -j2 >"$build/quickstart-make.out" 2>&1 ||
    { tail -n 30 "$build/quickstart-make.out" >&2; die "make failed (see $build/quickstart-make.out)"; }

# ---- 3. emulator and configuration (tests/lib.sh does the work)
qs_stop
rm -rf "$QS_DIR"
mkdir -p "$QS_DIR"
chmod 755 "$QS_DIR"
# shellcheck disable=SC2034  # read by tests/lib.sh
top_srcdir=$top top_builddir=$build
# shellcheck source=../tests/lib.sh
. "$top/tests/lib.sh"
# shellcheck source=../tests/postfix.sh
. "$top/tests/postfix.sh"
T=$QS_DIR			# lib.sh's work directory (no t_init: no cleanup trap)
export T

if ss -Hltn "sport = :$QS_PORT" 2>/dev/null | grep -q . ||
   ss -Hltn "sport = :$((QS_PORT + 1))" 2>/dev/null | grep -q .; then
    die "port $QS_PORT or $((QS_PORT + 1)) is in use on this machine; choose others with QS_PORT=..."
fi

say "starting the Microsoft 365 emulator"
emu_setup
echo "$EMU_PID" > "$QS_DIR/emu.pid"
echo "emulator: $EMU_URL (tenant contoso.test; log $QS_DIR/emu.out)"

CONF=$QS_DIR/m365relay.conf
write_conf "$CONF"
sed -i "s|^\[global\]$|[global]\nuser = $QS_USER|" "$CONF"
sys_user "$QS_USER"
chmod 755 "$QS_DIR/certs"
chmod 644 "$CONF" "$QS_DIR/certs/ca.pem" "$QS_DIR/certs/client.pem"
chown -R "$QS_USER" "$QS_DIR/state"
chown "$QS_USER" "$QS_DIR/secret" "$QS_DIR/certs/client.key"
touch "$QS_DIR/relay.log"
chown "$QS_USER" "$QS_DIR/relay.log"

say "m365relay configuration: $CONF"
sed -n '/^\[/,$p' "$CONF" | sed 's/^/    /'
runuser -u "$QS_USER" -- "$RELAY" -c "$CONF" -n

say "connection test of the app-only account (client secret): m365ctl test app"
"$CTL" -c "$CONF" test app || echo "(m365ctl test reported a problem; see above)"

# ---- 4. private Postfix with the m365 transport
say "starting a private Postfix on 127.0.0.1:$QS_PORT (config $QS_DIR/pf/etc)"
# shellcheck disable=SC2034  # read by pf_setup
PF_RELAY=$RELAY PF_CONF=$CONF PF_RELAY_USER=$QS_USER
pf_setup "$QS_DIR/pf" "$QS_PORT" "$((QS_PORT + 1))"
pf_start
grep -A1 '^m365[[:space:]]' "$QS_DIR/pf/etc/master.cf" | sed 's/^/    master.cf: /'
grep 'm365' "$QS_DIR/pf/etc/transport" | head -n 3 | sed 's/^/    transport: /'

# ---- 5. a sample notification through local SMTP
say "sending a sample notification: swaks --server 127.0.0.1:$QS_PORT --from bob@contoso.test --to ops@example.com,oncall@example.org"
msg=$QS_DIR/sample.eml
{
    printf 'Date: %s\r\n' "$(date -R)"
    printf 'From: Monitoring <bob@contoso.test>\r\n'
    printf 'To: Operations <ops@example.com>\r\n'
    printf 'Subject: [quickstart] disk /var is 91%% full on %s\r\n' "$(hostname)"
    printf 'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n'
    printf 'Hello,\r\n\r\nthis notification went from swaks through Postfix and m365-relay\r\n'
    printf 'to Microsoft Graph sendMail (here: the bundled emulator).\r\n'
    printf 'oncall@example.org is only an envelope recipient (a Bcc).\r\n'
} > "$msg"
swaks --server "127.0.0.1:$QS_PORT" --from bob@contoso.test \
    --to ops@example.com,oncall@example.org --data "@$msg" 2>&1 |
    grep -E '^ *<- *250 .*queued' || die "Postfix did not accept the sample message"

# qs_arrived - the emulator accepted a message
qs_arrived() {
    [ "$(emu_sent_count)" -ge 1 ]
}
if ! wait_until 30 qs_arrived; then
    echo "The message did not arrive within 30 s.  Postfix says:" >&2
    postqueue -c "$QS_DIR/pf/etc" -p >&2
    tail -n 20 "$PF_MAILLOG" >&2
    die "see $PF_MAILLOG and $QS_DIR/relay.log"
fi
pf_wait_empty 10 || true

# ---- 6. show what arrived
say "arrived in the emulated mailbox (GET $EMU_URL/_emu/sent)"
emu_ctl GET /_emu/sent | python3 -c '
import json, sys
for r in json.load(sys.stdin):
    print("    sent from mailbox: %s (client %s, %s form)" % (r["mailbox"], r["client_id"], r["form"]))
    print("    recipients:        %s" % ", ".join(r["recipients"]))
    print("    To / Cc / Bcc:     %s / %s / %s" % (", ".join(r.get("to", [])) or "-",
          ", ".join(r.get("cc", [])) or "-", ", ".join(r.get("bcc", [])) or "-"))
    print("    request-id:        %s" % r.get("request_id", ""))
    print("    message as Graph received it (%s):" % r["eml_path"])
    with open(r["eml_path"], "rb") as f:
        for line in f.read().decode("utf-8", "replace").splitlines():
            print("      | " + line)
'

say "m365-relay log line ($QS_DIR/relay.log)"
sed 's/^/    /' "$QS_DIR/relay.log"
say "Postfix log ($PF_MAILLOG)"
grep -E 'relay=m365|removed' "$PF_MAILLOG" | sed 's/^/    /'

cat <<EOF

==> done.  Everything runs on 127.0.0.1 and stays up so you can experiment:
    send more:   swaks --server 127.0.0.1:$QS_PORT --from bob@contoso.test --to someone@example.com
    sendmail:    sendmail -C $QS_DIR/pf/etc -f bob@contoso.test someone@example.com < message
    what arrived: curl -s --cacert $CA_FILE $EMU_URL/_emu/sent
    throttle it: curl -s --cacert $CA_FILE -H 'Content-Type: application/json' -d '[{"match":"sendMail","status":429,"retry_after":30}]' $EMU_URL/_emu/faults
                 (the next message is deferred; see: postqueue -c $QS_DIR/pf/etc -p)
    status:      $CTL -c $CONF status
    logs:        $QS_DIR/relay.log  $PF_MAILLOG  $QS_DIR/emu.out
    stop:        sudo bash $top/contrib/quickstart.sh stop
EOF
