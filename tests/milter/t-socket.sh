#!/bin/bash
#
# t-socket.sh - one rule for the milter socket: "m365-milter -p SPEC"
# is judged by conf_check_socket() (lib/conf.c), the same code and the
# same words as "socket = SPEC" in [milter] (unit cases in test_conf).
#
# For each specification, m365-milter -n is run twice, with -p SPEC and
# with socket = SPEC in the file: both refuse it (exit 78) with the same
# text, or both accept it.  Needs no miltertest and no emulator.

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/milter/lib-milter.sh"

t_init milter-socket
if [ ! -x "$MILTER" ]; then
    bad "$MILTER is built (run make first)"
    t_done
fi
milter_user
milter_base_conf "$T/base.conf"

long=unix:/$(printf 'a%.0s' $(seq 1 120))/milter.sock

# SPEC|text of the refusal ("" = accepted)
cases=(
    "inet:8891@|socket \"inet:8891@\" needs a host (like inet:8891@127.0.0.1; the MTA connects there)"
    "inet6:8891|socket \"inet6:8891\" needs a host (like inet6:8891@::1; the MTA connects there)"
    "inet:65536@127.0.0.1|bad port \"65536\" in socket \"inet:65536@127.0.0.1\" (use a number from 1 to 65535)"
    "inet:8891@127.0.0.1/8|bad host \"127.0.0.1/8\" in socket \"inet:8891@127.0.0.1/8\" (use a host name or an IPv4 address; inet6:PORT@ADDR for IPv6)"
    "tcp:8891@127.0.0.1|bad socket type in \"tcp:8891@127.0.0.1\" (use inet:PORT@HOST, inet6:PORT@HOST, unix:/PATH or local:/PATH)"
    "unix:milter.sock|socket \"unix:milter.sock\" needs an absolute path (like unix:"
    "$long|socket path in \""
    "inet:8891@127.0.0.1|"
    "inet6:8891@::1|"
    "local:$T/run/m.sock|"
)

for c in "${cases[@]}"; do
    spec=${c%%|*}
    want=${c#*|}
    "$MILTER" -n -c "$T/base.conf" -p "$spec" >"$T/p.out" 2>"$T/p.err"
    prc=$?
    { cat "$T/base.conf"; printf '\n[milter]\nsocket = %s\n' "$spec"; } \
	>"$T/f.conf"
    "$MILTER" -n -c "$T/f.conf" >"$T/f.out" 2>"$T/f.err"
    frc=$?
    if [ -z "$want" ]; then
	t_eq "-p $spec: accepted" "$prc $(cat "$T/p.out")" "0 configuration OK"
	t_eq "socket = $spec: accepted" "$frc" 0
	continue
    fi
    t_eq "-p ${spec:0:40}: refused with exit 78" "$prc" 78
    perr=$(head -n 1 "$T/p.err")
    ferr=$(head -n 1 "$T/f.err")
    case $perr in
	"m365-milter -p: $want"*) ok "-p ${spec:0:40}: the configuration's words" ;;
	*) bad "-p ${spec:0:40}: got [$perr], want [m365-milter -p: $want...]" ;;
    esac
    t_eq "-p and socket = ${spec:0:40}: the same text" \
	"${perr#m365-milter -p: }" "${ferr#"$T/f.conf":*: }"
    t_eq "socket = ${spec:0:40}: refused with exit 78" "$frc" 78
done
t_done
