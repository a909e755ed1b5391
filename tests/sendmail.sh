# tests/sendmail.sh - a private Sendmail 8.17 instance on loopback for
# tests.  Source it from bash (after tests/lib.sh):
#
#	. "$top_srcdir/tests/sendmail.sh"
#	sm_fetch                       # OUTSIDE a network namespace
#	SM_MILTER=inet:8894@127.0.0.1 sm_setup DIR 2526
#	sm_start; ...; sm_flush; sm_queue; sm_stop
#
# Sendmail is not installed (the sendmail-bin package conflicts with
# postfix): sm_fetch downloads sendmail-bin, sendmail-base and
# sendmail-cf with "apt-get download" into a cache directory and unpacks
# them there with "dpkg -x".  The instance has its own .cf (built from an
# .mc with the shipped m4 files), queue, aliases, mailertable and pid
# file under DIR; it listens on 127.0.0.1:PORT only and does no DNS.
# Recipes and the reasons for each setting:
# /work/shared/docs/real-mta-testing.md section 4.
#
# Sendmail resolves its own host name before it reads the .cf and sleeps
# 60 s when that needs DNS: run it in a mount namespace with a private
# /etc/hosts that has the FQDN on 127.0.0.1 and ::1 (the e2e tests do).
# It logs only through syslog: sm_syslog_start binds /dev/log when no
# syslog daemon listens there and writes the lines to $SM_DIR/log/syslog.
#
# Routing (mailertable; nothing is ever sent over the network):
#   SM_M365_DOMAINS   -> mailer m365, host "graph" (contrib/sendmail/m365.m4
#                        running $SM_RELAY -c $SM_CONF as $SM_MAILER_USER);
#                        only when SM_RELAY is set; otherwise these domains
#                        go to the file sink like everything else
#   SM_LOCAL_DOMAINS and every other domain -> mailer "sinkfile", which
#                        stores each delivery in $SM_DIR/local/ (first
#                        line "X-Envelope-To: RCPT"), as user nobody.
#
# Settings (environment, read by sm_setup):
#   SM_CACHE          download/unpack cache
#                     (default $top_builddir/tests/.sendmail-debs)
#   SM_MILTER         milter socket (inet:PORT@127.0.0.1 or local:/path);
#                     empty: no milter.  The INPUT_MAIL_FILTER line is
#                     taken from contrib/sendmail/milter.mc with S= replaced.
#   SM_RELAY, SM_CONF m365-relay and its m365relay.conf (for MAILER(m365))
#   SM_MAILER_USER    user the m365 mailer runs as (default m365test;
#                     created when missing)
#   SM_M365_DOMAINS   default "example.com example.org example.net"
#   SM_LOCAL_DOMAINS  default "local.test"
#
# Results (set by sm_setup): SM_DIR, SM_PORT, SM_CF, SM_BIN (the sendmail
# binary), SM_SYSLOG, SM_LOCAL (the sink directory).

SM_MAILER_USER=${SM_MAILER_USER:-m365test}
SM_M365_DOMAINS=${SM_M365_DOMAINS:-"example.com example.org example.net"}
SM_LOCAL_DOMAINS=${SM_LOCAL_DOMAINS:-"local.test"}
SM_SINK_PID=

# sm_cache - the download/unpack cache directory
sm_cache() {
    printf '%s\n' "${SM_CACHE:-${top_builddir:-.}/tests/.sendmail-debs}"
}

# sm_fetch - download and unpack the Sendmail packages (needs the apt
# mirror: call it before entering a network namespace)
sm_fetch() {
    local cache d
    cache=$(sm_cache)
    [ -x "$cache/root/usr/libexec/sendmail/sendmail" ] &&
	[ -f "$cache/root/usr/share/sendmail/cf/m4/cf.m4" ] && return 0
    if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg >/dev/null 2>&1; then
	echo "sm_fetch: apt-get and dpkg are needed to fetch Sendmail (Debian/Ubuntu only)" >&2
	return 1
    fi
    mkdir -p "$cache" || return 1
    # apt-get download as root drops to _apt; let it write here.
    if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then
	chown _apt "$cache"
    fi
    if ! ls "$cache"/sendmail-bin_*.deb "$cache"/sendmail-base_*.deb \
	"$cache"/sendmail-cf_*.deb >/dev/null 2>&1; then
	# Stale or missing package lists (a fresh machine): update once, retry.
	(cd "$cache" && apt-get download -q sendmail-bin sendmail-base sendmail-cf) >"$cache/download.log" 2>&1 ||
	{ [ "$(id -u)" = 0 ] && apt-get update -q >>"$cache/download.log" 2>&1 &&
	  (cd "$cache" && apt-get download -q sendmail-bin sendmail-base sendmail-cf) >>"$cache/download.log" 2>&1; } || {
	    echo "sm_fetch: apt-get download sendmail-bin sendmail-base sendmail-cf failed in $cache:" >&2
	    sed 's/^/  /' "$cache/download.log" >&2
	    echo "sm_fetch: run tests/run-all.sh (it runs apt-get update and installs what the tests need)" >&2
	    return 1
	}
    fi
    rm -rf "$cache/root"
    for d in "$cache"/sendmail-bin_*.deb "$cache"/sendmail-base_*.deb "$cache"/sendmail-cf_*.deb; do
	dpkg -x "$d" "$cache/root" || {
	    echo "sm_fetch: dpkg -x $d failed" >&2
	    return 1
	}
    done
    [ -x "$cache/root/usr/libexec/sendmail/sendmail" ] || {
	echo "sm_fetch: $cache/root/usr/libexec/sendmail/sendmail missing after unpacking" >&2
	return 1
    }
}

# sm_check_libs - the unpacked binary finds all its shared libraries
sm_check_libs() {
    local missing
    missing=$(ldd "$(sm_cache)/root/usr/libexec/sendmail/sendmail" 2>/dev/null | grep 'not found')
    if [ -n "$missing" ]; then
	echo "sm_check_libs: the unpacked sendmail misses libraries:" >&2
	printf '  %s\n' "$missing" >&2
	echo "  (libwrap.so.0: apt-get install libwrap0; tests/run-all.sh installs it)" >&2
	return 1
    fi
}

# sm_syslog_start FILE - receive syslog datagrams on /dev/log into FILE
# (only when nothing listens there; a stale socket is replaced)
sm_syslog_start() {
    python3 - "$1" <<'EOF' &
import os, signal, socket, sys
path = "/dev/log"
if os.path.exists(path):
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        probe.connect(path)
        sys.exit(0)          # a live syslog daemon: leave it alone
    except OSError:
        os.unlink(path)      # stale socket of an earlier run
    finally:
        probe.close()
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o666)
def stop(*_):
    try:
        os.unlink(path)
    finally:
        os._exit(0)
signal.signal(signal.SIGTERM, stop)
with open(sys.argv[1], "a", buffering=1) as f:
    while True:
        f.write(s.recv(65536).decode(errors="replace").rstrip("\n") + "\n")
EOF
    SM_SINK_PID=$!
    local i
    for i in $(seq 50); do
	[ -S /dev/log ] && return 0
	kill -0 "$SM_SINK_PID" 2>/dev/null || return 0
	sleep 0.1
    done
}

# sm_syslog_stop - stop the syslog sink (removes /dev/log)
sm_syslog_stop() {
    [ -z "$SM_SINK_PID" ] || term_wait "$SM_SINK_PID"
    SM_SINK_PID=
}

# sm_setup DIR PORT - write the configuration of a private instance in DIR
sm_setup() {
    local dir=$1 port=$2 cache root cf d mgroup milter_line=""
    if [ -z "$dir" ] || [ -z "$port" ]; then
	echo "usage: sm_setup DIR PORT" >&2; return 2
    fi
    if [ "$(id -u)" != 0 ]; then
	echo "sm_setup: a private Sendmail needs root (it runs mailers as other users)" >&2
	return 1
    fi
    command -v m4 >/dev/null 2>&1 ||
	{ echo "sm_setup: m4 is not installed (apt-get install m4; tests/run-all.sh does it)" >&2; return 1; }
    case "$dir${SM_RELAY:-}${SM_CONF:-}${SM_MILTER:-}" in
    *[[:space:]]*) echo "sm_setup: paths must not contain white space" >&2; return 2;;
    esac
    cache=$(sm_cache)
    root=$cache/root
    [ -x "$root/usr/libexec/sendmail/sendmail" ] || sm_fetch || return 1
    sm_check_libs || return 1
    sys_user "$SM_MAILER_USER" || return 1
    mgroup=$(id -gn "$SM_MAILER_USER") || return 1

    # shellcheck disable=SC2034  # results for the caller
    SM_DIR=$dir SM_PORT=$port SM_CF=$dir/etc/sendmail.cf
    SM_BIN=$root/usr/libexec/sendmail/sendmail SM_SYSLOG=$dir/log/syslog
    SM_LOCAL=$dir/local
    mkdir -p "$dir/etc" "$dir/spool/mqueue" "$dir/run" "$dir/log" "$dir/local" "$dir/bin" || return 1
    chmod 755 "$dir" "$dir/etc" "$dir/bin"
    chmod 700 "$dir/spool/mqueue"
    chmod 1777 "$dir/local"
    touch "$dir/spool/statistics"
    : >"$SM_SYSLOG"

    # The shipped cf tree plus contrib's m365 mailer, as an administrator
    # installs it: cp contrib/sendmail/m365.m4 <cf>/mailer/.
    rm -rf "$dir/cf"
    cp -r "$root/usr/share/sendmail/cf" "$dir/cf" || return 1
    cp "${top_srcdir:?}/contrib/sendmail/m365.m4" "$dir/cf/mailer/m365.m4" || return 1

    printf 'hosts\tfiles\npasswd\tfiles\naliases\tfiles\n' >"$dir/etc/service.switch"
    printf 'postmaster: root\nMAILER-DAEMON: postmaster\n' >"$dir/etc/aliases"
    printf 'mx.e2e.test\n' >"$dir/etc/local-host-names"

    # The file sink: one file per delivery, envelope recipient first.
    cat >"$dir/bin/sinkfile" <<EOF
#!/bin/sh
# sinkfile RCPT - store one delivery in $dir/local/
f="$dir/local/\$(date +%s.%N).\$\$"
{ printf 'X-Envelope-To: %s\n' "\$1"; cat; } >"\$f.tmp" || exit 75
mv "\$f.tmp" "\$f.eml"
EOF
    chmod 755 "$dir/bin/sinkfile"

    {
	if [ -n "${SM_RELAY:-}" ]; then
	    for d in $SM_M365_DOMAINS; do printf '%s\tm365:graph\n' "$d"; done
	fi
	for d in $SM_LOCAL_DOMAINS; do printf '%s\tsinkfile:%s\n' "$d" "$d"; done
	# Everything else stays on this machine too (an error: mailer here
	# would also refuse MAIL FROM from those domains).
	printf '.\tsinkfile:outbound.invalid\n'
    } >"$dir/etc/mailertable"

    if [ -n "${SM_MILTER:-}" ]; then
	milter_line=$(grep '^INPUT_MAIL_FILTER' "$top_srcdir/contrib/sendmail/milter.mc" | head -n 1 |
	    sed "s|S=[^,']*|S=$SM_MILTER|")
	[ -n "$milter_line" ] || {
	    echo "sm_setup: no INPUT_MAIL_FILTER line in contrib/sendmail/milter.mc" >&2
	    return 1
	}
    fi

    cat >"$dir/etc/sendmail.mc" <<EOF
divert(-1)
# Private test instance (tests/sendmail.sh): 127.0.0.1:$port, no DNS.
divert(0)dnl
VERSIONID(\`m365relay test instance')dnl
OSTYPE(\`linux')dnl
define(\`confDOMAIN_NAME', \`mx.e2e.test')dnl
define(\`confDONT_PROBE_INTERFACES', \`True')dnl
define(\`confDONT_BLAME_SENDMAIL', \`TrustStickyBit')dnl
define(\`confSERVICE_SWITCH_FILE', \`$dir/etc/service.switch')dnl
define(\`QUEUE_DIR', \`$dir/spool/mqueue')dnl
define(\`STATUS_FILE', \`$dir/spool/statistics')dnl
define(\`confPID_FILE', \`$dir/run/sendmail.pid')dnl
define(\`ALIAS_FILE', \`$dir/etc/aliases')dnl
define(\`HELP_FILE', \`$root/etc/mail/helpfile')dnl
define(\`confCW_FILE', \`$dir/etc/local-host-names')dnl
define(\`confDEAD_LETTER_DROP', \`$dir/spool/dead.letter')dnl
define(\`confDEF_USER_ID', \`nobody:nogroup')dnl
define(\`confTO_IDENT', \`0s')dnl
define(\`confLOG_LEVEL', \`14')dnl
define(\`confMILTER_LOG_LEVEL', \`6')dnl
define(\`confMIN_QUEUE_AGE', \`0')dnl
FEATURE(\`no_default_msa')dnl
FEATURE(\`nocanonify')dnl
FEATURE(\`accept_unresolvable_domains')dnl
FEATURE(\`mailertable', \`hash -o $dir/etc/mailertable')dnl
DAEMON_OPTIONS(\`Family=inet, Name=MTA-test, Addr=127.0.0.1, Port=$port')dnl
EOF
    {
	for d in $SM_M365_DOMAINS $SM_LOCAL_DOMAINS; do
	    printf "RELAY_DOMAIN(\`%s')dnl\n" "$d"
	done
	[ -n "$milter_line" ] && printf '%s\n' "$milter_line"
	printf "MAILER(\`local')dnl\nMAILER(\`smtp')dnl\n"
	if [ -n "${SM_RELAY:-}" ]; then
	    printf "define(\`M365_MAILER_PATH', \`%s')dnl\n" "$SM_RELAY"
	    printf "define(\`M365_MAILER_CONF', \`%s')dnl\n" "$SM_CONF"
	    printf "define(\`M365_MAILER_USER', \`%s:%s')dnl\n" "$SM_MAILER_USER" "$mgroup"
	    printf "MAILER(\`m365')dnl\n"
	fi
	printf 'MAILER_DEFINITIONS\n'
	printf 'Msinkfile, P=%s, F=DFMPhnu, U=nobody:nogroup,\n' "$dir/bin/sinkfile"
	printf '\tS=EnvFromSMTP/HdrFromSMTP, R=EnvToSMTP/HdrFromSMTP, T=DNS/RFC822/X-Unix,\n'
	# shellcheck disable=SC2016  # $u is Sendmail's macro
	printf '\tA=sinkfile $u\n'
    } >>"$dir/etc/sendmail.mc"

    cf=$dir/etc/sendmail.cf
    m4 "$dir/cf/m4/cf.m4" "$dir/etc/sendmail.mc" >"$cf" 2>"$dir/log/m4.err" || {
	echo "sm_setup: m4 failed on $dir/etc/sendmail.mc:" >&2
	cat "$dir/log/m4.err" >&2
	return 1
    }
    if [ -s "$dir/log/m4.err" ]; then
	echo "sm_setup: m4 reported problems in $dir/etc/sendmail.mc:" >&2
	cat "$dir/log/m4.err" >&2
	return 1
    fi
    # (makemap warns about the world-writable /tmp; the .cf's
    # DontBlameSendmail covers the daemon, not makemap.  It reads the
    # text file and writes mailertable.db.)
    # shellcheck disable=SC2094
    "$root/usr/libexec/sendmail/makemap" -C "$cf" hash "$dir/etc/mailertable" \
	<"$dir/etc/mailertable" 2>"$dir/log/makemap.err" || {
	echo "sm_setup: makemap of $dir/etc/mailertable failed:" >&2
	cat "$dir/log/makemap.err" >&2
	return 1
    }
    "$SM_BIN" -C "$cf" -bi >"$dir/log/newaliases.out" 2>&1 || {
	echo "sm_setup: sendmail -bi (aliases) failed:" >&2
	cat "$dir/log/newaliases.out" >&2
	return 1
    }
}

# sm_sendmail ARGS... - run the instance's sendmail binary
sm_sendmail() {
    "$SM_BIN" -C "$SM_CF" "$@"
}

# sm_pid - the daemon's pid (first line of the pid file)
sm_pid() {
    [ -f "$SM_DIR/run/sendmail.pid" ] && head -n 1 "$SM_DIR/run/sendmail.pid"
}

# sm_start - start the daemon (no periodic queue runs: sm_flush does them)
sm_start() {
    [ -n "$SM_SINK_PID" ] || sm_syslog_start "$SM_SYSLOG"
    sm_sendmail -bd >"$SM_DIR/log/start.out" 2>&1 || {
	echo "sm_start: sendmail -bd failed:" >&2
	cat "$SM_DIR/log/start.out" >&2
	return 1
    }
    wait_port "$SM_PORT"
}

# sm_stop - stop the daemon and the syslog sink (no error when they are
# not running)
sm_stop() {
    local pid i
    if [ -n "${SM_DIR:-}" ] && pid=$(sm_pid) && [ -n "$pid" ] &&
	kill "$pid" 2>/dev/null; then
	for i in $(seq 50); do
	    kill -0 "$pid" 2>/dev/null || break
	    sleep 0.1
	done
	rm -f "$SM_DIR/run/sendmail.pid"
    fi
    sm_syslog_stop
}

# sm_queue - the queue listing (sendmail -bp)
sm_queue() {
    sm_sendmail -bp 2>/dev/null
}

# sm_queue_count - number of queued messages (qf files)
sm_queue_count() {
    find "$SM_DIR/spool/mqueue" -maxdepth 1 -name 'qf*' 2>/dev/null | wc -l
}

# sm_queue_has RCPT - the queue lists a message for RCPT
sm_queue_has() {
    sm_queue | grep -qiF -- "<$1>"
}

# sm_flush - one queue run in the foreground (sendmail -q)
sm_flush() {
    sm_sendmail -q >/dev/null 2>&1
}

# sm_queue_empty - no message is queued
sm_queue_empty() {
    [ "$(sm_queue_count)" -eq 0 ]
}

# sm_wait_empty [TIMEOUT] - wait for an empty queue (default 20 s)
sm_wait_empty() {
    wait_until "${1:-20}" sm_queue_empty && return 0
    echo "sm_wait_empty: queue not empty after ${1:-20} s:" >&2
    sm_queue >&2
    return 1
}

# sm_wait_log ERE [TIMEOUT] - wait for a syslog line of the instance
sm_wait_log() {
    wait_grep "${2:-20}" "$1" "$SM_SYSLOG"
}

# sm_local_count [RCPT] - deliveries in the file sink (for RCPT)
sm_local_count() {
    if [ -n "${1:-}" ]; then
	grep -liF -x -- "X-Envelope-To: $1" "$SM_LOCAL"/*.eml 2>/dev/null | wc -l
    else
	find "$SM_LOCAL" -maxdepth 1 -name '*.eml' | wc -l
    fi
}
