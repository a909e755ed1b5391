# tests/postfix.sh - a private Postfix instance on loopback for tests,
# the quick start and the benchmark.  Source it from bash (after
# tests/lib.sh):
#
#	. "$top_srcdir/tests/postfix.sh"
#	PF_RELAY=/path/to/m365-relay PF_CONF=/path/to/m365relay.conf \
#	    pf_setup DIR 2525 [FILTER_PORT]
#	pf_start; ...; pf_wait_empty 10; pf_stop
#
# The instance has its own config, queue, data directory and log file
# under DIR and never touches /etc/postfix or /var/spool/postfix.  It
# listens on 127.0.0.1 only, does no DNS, and everything that is not
# routed to the m365 transports bounces locally (default_transport =
# error), so nothing can leave the machine.  It needs root (postfix
# start, useradd) and the Debian postfix package.  Layout and settings
# follow /work/shared/docs/real-mta-testing.md section 3.
#
# Settings (environment, read by pf_setup):
#   PF_RELAY        the transport helper (default $RELAY)
#   PF_CONF         its m365relay.conf (default $CONF)
#   PF_RELAY_USER   unprivileged user pipe(8) runs it as (default m365test;
#                   created when missing)
#   PF_MAIL_OWNER   Postfix mail_owner of the instance (default m365pf;
#                   created when missing)
#   PF_DOMAINS      recipient domains routed to m365:graph (one fixed
#                   nexthop, so a message is not split by domain)
#   PF_ONE_DOMAINS  recipient domains routed to m365one:graph, a second
#                   pipe service with recipient limit 1 (split deliveries)
#   PF_WRAPPER      words put before the relay in the pipe argv (e.g. a
#                   measuring wrapper for the benchmark); default none
#   PF_RCPT_LIMIT   m365_destination_recipient_limit (default 500)
#   PF_CONCURRENCY  m365_destination_concurrency_limit (default 4)
#   PF_MINIMAL_BACKOFF / PF_MAXIMAL_BACKOFF / PF_QUEUE_RUN_DELAY
#                   retry timing (defaults 2s / 4s / 1s: deferred mail
#                   comes back within seconds)
#
# Results (set by pf_setup): PF_DIR, PF_PORT, PF_FILTER_PORT, PF_ETC,
# PF_MAILLOG.  The local domain is local.test; mail to it through the
# filter listener (PF_FILTER_PORT, content_filter=m365:graph) goes to
# Graph too.

PF_MAIL_OWNER=${PF_MAIL_OWNER:-m365pf}
PF_RELAY_USER=${PF_RELAY_USER:-m365test}
PF_DOMAINS=${PF_DOMAINS:-"example.com example.org example.net contoso.test fabrikam.test"}
PF_ONE_DOMAINS=${PF_ONE_DOMAINS:-"one-a.test one-b.test"}

# pf_setup - write the configuration of a private instance in DIR
pf_setup() {
    local dir=$1 port=$2 fport=${3:-$(($2 + 1))}
    local relay=${PF_RELAY:-${RELAY:-}} conf=${PF_CONF:-${CONF:-}}
    local rlimit=${PF_RCPT_LIMIT:-500} conc=${PF_CONCURRENCY:-4} d
    local cmd="${PF_WRAPPER:+$PF_WRAPPER }$relay -c $conf"

    if [ -z "$dir" ] || [ -z "$port" ]; then
	echo "usage: pf_setup DIR PORT [FILTER_PORT]" >&2; return 2
    fi
    if [ "$(id -u)" != 0 ]; then
	echo "pf_setup: a private Postfix needs root (postfix start, useradd)" >&2; return 1
    fi
    if ! command -v postfix >/dev/null 2>&1 && [ ! -x /usr/sbin/postfix ]; then
	echo "pf_setup: postfix is not installed: apt-get install postfix (tests/run-all.sh does it)" >&2
	return 1
    fi
    if [ -z "$relay" ] || [ -z "$conf" ]; then
	echo "pf_setup: set PF_RELAY (or RELAY) and PF_CONF (or CONF)" >&2; return 2
    fi
    case "$dir$relay$conf" in
    *[[:space:]]*) echo "pf_setup: paths must not contain white space" >&2; return 2;;
    esac
    sys_user "$PF_MAIL_OWNER" || return 1
    sys_user "$PF_RELAY_USER" || return 1

    # shellcheck disable=SC2034  # results for the caller
    PF_DIR=$dir PF_PORT=$port PF_FILTER_PORT=$fport
    PF_ETC=$dir/etc PF_MAILLOG=$dir/log/maillog
    mkdir -p "$dir/etc" "$dir/spool" "$dir/data" "$dir/log" "$dir/mail" || return 1
    # Postfix daemons run as mail_owner and must reach their queue.
    chmod 755 "$dir"
    chown "$PF_MAIL_OWNER" "$dir/data"
    chmod 1777 "$dir/mail"

    cat > "$dir/etc/main.cf" <<EOF
# Private test instance (tests/postfix.sh).  Loopback only, no DNS.
compatibility_level = 3.6
config_directory = $dir/etc
queue_directory = $dir/spool
data_directory = $dir/data
mail_owner = $PF_MAIL_OWNER
setgid_group = postdrop
maillog_file = $dir/log/maillog
maillog_file_prefixes = $dir/log
myhostname = mx.local.test
mydomain = local.test
myorigin = \$myhostname
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination = local.test, \$myhostname
mail_spool_directory = $dir/mail/
alias_maps =
alias_database =
local_recipient_maps =
relayhost =
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
biff = no
# Nothing leaves the machine: whatever is not routed below bounces here.
default_transport = error:outbound mail disabled in this test instance
relay_transport = error:outbound mail disabled in this test instance
relay_domains = $PF_DOMAINS $PF_ONE_DOMAINS
transport_maps = texthash:$dir/etc/transport
# The m365 pipe transport: one fixed nexthop (m365:graph), so the
# recipients of a message reach m365-relay together.
m365_destination_recipient_limit = $rlimit
m365_destination_concurrency_limit = $conc
m365_destination_concurrency_failed_cohort_limit = 100
# Second transport with one recipient per delivery (split deliveries).
m365one_destination_recipient_limit = 1
m365one_destination_concurrency_failed_cohort_limit = 100
# Fast retries so that deferred mail comes back within seconds.
queue_run_delay = ${PF_QUEUE_RUN_DELAY:-1s}
minimal_backoff_time = ${PF_MINIMAL_BACKOFF:-2s}
maximal_backoff_time = ${PF_MAXIMAL_BACKOFF:-4s}
delay_warning_time = 0h
EOF
    : > "$dir/etc/transport"
    for d in $PF_DOMAINS; do printf '%s\tm365:graph\n' "$d"; done >> "$dir/etc/transport"
    for d in $PF_ONE_DOMAINS; do printf '%s\tm365one:graph\n' "$d"; done >> "$dir/etc/transport"

    cat > "$dir/etc/master.cf" <<EOF
# service	type	private	unpriv	chroot	wakeup	maxproc	command + args
127.0.0.1:$port	inet	n	-	n	-	-	smtpd
127.0.0.1:$fport	inet	n	-	n	-	-	smtpd
  -o content_filter=m365:graph
  -o syslog_name=postfix-test/filtered
pickup		unix	n	-	n	60	1	pickup
cleanup		unix	n	-	n	-	0	cleanup
qmgr		unix	n	-	n	300	1	qmgr
rewrite		unix	-	-	n	-	-	trivial-rewrite
bounce		unix	-	-	n	-	0	bounce
defer		unix	-	-	n	-	0	bounce
trace		unix	-	-	n	-	0	bounce
verify		unix	-	-	n	-	1	verify
flush		unix	n	-	n	1000?	0	flush
proxymap	unix	-	-	n	-	-	proxymap
showq		unix	n	-	n	-	-	showq
error		unix	-	-	n	-	-	error
retry		unix	-	-	n	-	-	error
discard		unix	-	-	n	-	-	discard
local		unix	-	n	n	-	-	local
anvil		unix	-	-	n	-	1	anvil
scache		unix	-	-	n	-	1	scache
postlog		unix-dgram n	-	n	-	1	postlogd
m365		unix	-	n	n	-	-	pipe
  flags=Rq user=$PF_RELAY_USER argv=$cmd -q \${queue_id} -f \${sender} -- \${recipient}
m365one		unix	-	n	n	-	-	pipe
  flags=Rq user=$PF_RELAY_USER argv=$cmd -q \${queue_id} -f \${sender} -- \${recipient}
EOF
    postfix -c "$dir/etc" check ||
	{ echo "pf_setup: postfix -c $dir/etc check failed (see above)" >&2; return 1; }
}

# pf_postfix - run postfix(1) on the private instance
pf_postfix() {
    postfix -c "$PF_ETC" "$@"
}

# pf_start - start the instance and wait for both listeners
pf_start() {
    pf_postfix start >/dev/null 2>&1 || pf_postfix start || return 1
    wait_port "$PF_PORT" && wait_port "$PF_FILTER_PORT"
}

# pf_stop - stop the instance (no error when it is not running)
pf_stop() {
    [ -n "${PF_ETC:-}" ] && [ -d "$PF_ETC" ] || return 0
    pf_postfix stop >/dev/null 2>&1 || true
}

# pf_queue_json - the queue as JSON lines (postqueue -j)
pf_queue_json() {
    postqueue -c "$PF_ETC" -j 2>/dev/null
}

# pf_queue_count - number of messages in the queue (all queues)
pf_queue_count() {
    pf_queue_json | grep -c '^{' || true
}

# pf_queue_has - true when the queue holds a message for RECIPIENT
# (optionally in queue QUEUE_NAME, e.g. deferred)
pf_queue_has() {
    local q
    q=$(pf_queue_json) || return 1
    printf '%s\n' "$q" | python3 -c '
import json, sys
rcpt, qname = sys.argv[1].lower(), sys.argv[2]
for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    m = json.loads(line)
    if qname and m.get("queue_name") != qname:
        continue
    if any(r.get("address", "").lower() == rcpt for r in m.get("recipients", [])):
        sys.exit(0)
sys.exit(1)' "$1" "${2:-}"
}

# pf_flush - attempt delivery of all queued mail now
pf_flush() {
    postqueue -c "$PF_ETC" -f
}

# pf_queue_empty - the queue holds no message
pf_queue_empty() {
    [ "$(pf_queue_count)" -eq 0 ]
}

# pf_wait_empty - wait up to TIMEOUT seconds (default 20) for an empty queue
pf_wait_empty() {
    wait_until "${1:-20}" pf_queue_empty && return 0
    echo "pf_wait_empty: queue not empty after ${1:-20} s:" >&2
    postqueue -c "$PF_ETC" -p >&2
    return 1
}

# pf_wait_log ERE [TIMEOUT] - wait up to TIMEOUT seconds (20) for a
# maillog line matching ERE
pf_wait_log() {
    wait_grep "${2:-20}" "$1" "$PF_MAILLOG"
}

# pf_purge - delete every queued message
pf_purge() {
    postsuper -c "$PF_ETC" -d ALL >/dev/null 2>&1 || true
}
