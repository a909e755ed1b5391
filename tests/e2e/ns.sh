# ns.sh - shared start of the end-to-end tests that run real MTAs
#
# Sourced first by tests/e2e/test-{postfix,fetch*,milter-postfix,sendmail}.sh:
#
#   . "$(dirname "$0")/ns.sh"
#   if [ -z "${M365_E2E_IN_NS:-}" ]; then
#       e2e_outside NAME "WHY ROOT" "HOW TO INSTALL" CMD...   # skip/fail early
#       ...anything that needs the real network (apt-get download)...
#       e2e_enter "$@"                  # re-run this script in the namespaces
#   fi
#   e2e_inside                          # loopback up, host name mx.e2e.test
#   . "$top_srcdir/tests/lib.sh"; t_init NAME
#   e2e_private_hosts                   # private /etc/hosts and resolv.conf
#
# or, with nothing to do outside but the checks of e2e_outside:
#
#   e2e_start NAME "WHY ROOT" "HOW TO INSTALL" CMD...
#   . "$top_srcdir/tests/lib.sh"; t_init NAME
#   e2e_private_hosts
#
# Inside net/uts/mount/pid namespaces the only network is loopback,
# graph.microsoft.com, login.microsoftonline.com and outlook.office.com (the
# upload host of large messages) resolve to 127.0.0.1,
# no DNS query can leave the machine, and every process the test started
# dies with it (see /work/shared/docs/real-mta-testing.md).

me=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
: "${top_srcdir:=$(dirname "$me")/../..}"
: "${top_builddir:=$top_srcdir}"
top_srcdir=$(cd "$top_srcdir" && pwd)
top_builddir=$(cd "$top_builddir" && pwd)
export top_srcdir top_builddir

# e2e_outside NAME WHY HOW CMD... - skip without root; fail (with what
# to do) when a required program is missing
e2e_outside() {
    local name=$1 why=$2 how=$3 c missing=""
    shift 3
    if [ "$(id -u)" != 0 ]; then
	echo "SKIP: $name needs root ($why)"
	exit 77
    fi
    for c in unshare ip ss python3 curl openssl "$@"; do
	command -v "$c" >/dev/null 2>&1 || missing="$missing $c"
    done
    if [ -n "$missing" ]; then
	echo "not ok - required programs are missing:$missing"
	echo "  $how"
	echo "0 passed, 1 failed"
	exit 1
    fi
}

# e2e_enter ARGS... - re-run this script inside private namespaces
e2e_enter() {
    exec unshare --net --uts --mount --pid --fork --kill-child --mount-proc \
	env M365_E2E_IN_NS=1 bash "$me" "$@"
}

# e2e_inside - first steps inside the namespaces
e2e_inside() {
    ip link set lo up
    hostname mx.e2e.test
}

# e2e_start NAME WHY HOW CMD... - outside the namespaces e2e_outside and
# e2e_enter (the script's arguments are not passed on); inside them
# e2e_inside
e2e_start() {
    if [ -z "${M365_E2E_IN_NS:-}" ]; then
	e2e_outside "$@"
	e2e_enter
    fi
    e2e_inside
}

# e2e_private_hosts - /etc/hosts and resolv.conf of our own (needs $T):
# a dotted host name with ::1 lines (Sendmail sleeps 60 s without them)
# and the Microsoft host names on 127.0.0.1
e2e_private_hosts() {
    cat > "$T/hosts" <<'HOSTS'
127.0.0.1 localhost
127.0.0.1 mx.e2e.test mx
::1 localhost ip6-localhost ip6-loopback
::1 mx.e2e.test mx
127.0.0.1 graph.microsoft.com login.microsoftonline.com outlook.office.com
HOSTS
    printf 'nameserver 127.0.0.1\n' > "$T/resolv.conf"
    mount --bind "$T/hosts" /etc/hosts
    mount --bind "$T/resolv.conf" /etc/resolv.conf
}
