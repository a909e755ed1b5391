#!/bin/bash
#
# t-socket-mode.sh - the milter's unix socket gets [milter] socket_mode,
# whose only default is the one in the configuration table (0660): 0600
# gives 0600, and 0 (accepted, "0 to 0777" in m365relay.conf(5)) gives
# a socket only root can connect to (Sendmail's daemon runs as root)
# instead of quietly 0660.  Needs no miltertest and no emulator.

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/milter/lib-milter.sh"

t_init milter-socket-mode
if [ ! -x "$MILTER" ]; then
    bad "$MILTER is built (run make first)"
    t_done
fi
milter_user
milter_own "$T/run" "$T/state"

# mode_case NAME MODE-LINE WANT - start the milter, check the socket mode
mode_case() {
    local name=$1 line=$2 want=$3
    milter_base_conf "$T/$name.conf"
    printf '\n[milter]\n%s\n' "$line" >>"$T/$name.conf"
    milter_start "$name" "$T/$name.conf"
    t_eq "${line:-no socket_mode}: the socket has mode $want" \
	"$(stat -c %a "$MILTER_SOCK")" "$want"
    milter_stop "$MILTER_PID"
    t_eq "$name: clean stop" "$?" 0
}

mode_case default "" 660
mode_case m600 "socket_mode = 0600" 600
mode_case m0 "socket_mode = 0" 0
t_done
