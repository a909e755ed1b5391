#!/bin/bash
#
# t-domains.sh - deliver mode: which recipients the milter sends through
# Graph is conf_milter_delivers() (lib/conf.c, unit-tested in test_conf
# and fuzzed by fuzz_conf), the one rule for deliver_domains.
#
# t-domains.lua sends recipients the rule decides (an absolute domain
# with its final dot, other case, a look-alike domain, the parent of a
# ".sub" entry, a local name) to a milter with deliver_domains and to
# one without.  This wrapper checks the recipients the emulator received:
# the absolute form arrives without the dot, as Postfix would deliver it.
# Skips (77) only when miltertest is missing.

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/milter/lib-milter.sh"

t_init milter-domains
milter_need
milter_user
emu_setup
milter_emu_conf "$T/d.conf" "mode = deliver" \
    "deliver_domains = contoso.test .graph.test" "tmp_dir = $T/spool"
grep -v '^deliver_domains' "$T/d.conf" >"$T/all.conf"
milter_start all "$T/all.conf"
PID_ALL=$MILTER_PID
SOCK_ALL=$MILTER_SOCK
milter_start d "$T/d.conf"
PID=$MILTER_PID

mt_run "deliver_domains: miltertest t-domains.lua" t-domains.lua \
    "LUADIR=$LUADIR" "SOCK_ALL=unix:$SOCK_ALL"

# rcpts SUBJECT - the recipients the emulator received for a message
rcpts() {
    emu_ctl GET /_emu/sent | "$PYTHON" -c '
import json, sys
print(" ".join(" ".join(sorted(m["recipients"])) for m in json.load(sys.stdin)
               if m["subject"] == sys.argv[1]))' "$1"
}
t_eq "listed domains: Graph got the absolute form without its dot" \
    "$(rcpts dom1)" "carol@contoso.test dave@sub.graph.test"
t_eq "deliver_domains unset: the absolute form, not the local names" \
    "$(rcpts dom2)" "carol@contoso.test"
log_has "the delivery line names the recipient without the dot" \
    " DOM1: to=<carol@contoso\\.test>, .*status=sent"

milter_stop "$PID"
check "SIGTERM: exit status 0" test $? = 0
milter_stop "$PID_ALL"
check "SIGTERM: second milter exit status 0" test $? = 0
t_done
