#!/bin/sh
#
# NAME
#	run.sh - run every built libFuzzer target for a while
# SYNOPSIS
#	tests/fuzz/run.sh [-t SECONDS] [TARGET...]
# DESCRIPTION
#	Runs each fuzz target (tests/fuzz/fuzz_NAME in the build tree, as
#	made by ./configure --enable-fuzzer CC=clang && make) for SECONDS
#	(default 20, or $FUZZ_SECONDS) with its dictionary
#	(tests/fuzz/NAME.dict in the source tree).  TARGET names such as
#	"addr" or "fuzz_addr" limit the run; default: every target built.
#
#	The corpus of each target grows in $FUZZ_CORPUS/NAME (default
#	tests/fuzz/corpus/NAME in the build tree) so later runs start
#	where earlier ones stopped; a crashing input is written to
#	$FUZZ_ARTIFACTS/NAME/ (default tests/fuzz/artifacts/NAME/), and
#	the libFuzzer log to $FUZZ_ARTIFACTS/NAME.log.
#
#	Not part of "make check": it takes minutes and needs clang.
# DIAGNOSTICS
#	Exit 0 when no target crashed, 1 when one did (the crash file and
#	log are named), 2 on a usage error or when no target is built.
#
set -u

seconds=${FUZZ_SECONDS:-20}
if [ "${1:-}" = "-t" ]; then
    [ $# -ge 2 ] || { echo "usage: $0 [-t SECONDS] [TARGET...]" >&2; exit 2; }
    seconds=$2
    shift 2
fi
case $seconds in
    ''|*[!0-9]*) echo "$0: -t wants a number of seconds, not \"$seconds\"" >&2
		 exit 2 ;;
esac

# The script lives in the source tree; the targets are in the build tree.
srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
builddir=${top_builddir:-.}
corpus_root=${FUZZ_CORPUS:-$builddir/tests/fuzz/corpus}
art_root=${FUZZ_ARTIFACTS:-$builddir/tests/fuzz/artifacts}

all="addr rcpt conf oauth graph msg fetchstate"
if [ $# -gt 0 ]; then
    targets=
    for t in "$@"; do
	targets="$targets ${t#fuzz_}"
    done
else
    targets=$all
fi

# Sanitizer findings must stop the run, not scroll past.
ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export ASAN_OPTIONS UBSAN_OPTIONS

ran=0
failed=0
for t in $targets; do
    bin=$builddir/tests/fuzz/fuzz_$t
    dict=$srcdir/tests/fuzz/$t.dict
    if [ ! -x "$bin" ]; then
	if [ $# -gt 0 ]; then
	    echo "$0: $bin is not built; run ./configure --enable-fuzzer" \
		 "CC=clang && make" >&2
	    failed=1
	fi
	continue
    fi
    if [ ! -r "$dict" ]; then
	echo "$0: cannot read $dict (set top_srcdir to the source tree)" >&2
	exit 2
    fi
    mkdir -p "$corpus_root/$t" "$art_root/$t" || exit 2
    # A first run of fuzz_conf starts from the documented sample.
    if [ "$t" = conf ] && [ -z "$(ls -A "$corpus_root/$t")" ] \
	&& [ -r "$srcdir/contrib/m365relay.conf.sample" ]; then
	cp "$srcdir/contrib/m365relay.conf.sample" "$corpus_root/$t/sample"
    fi
    log=$art_root/$t.log
    printf '%-12s %ss ... ' "fuzz_$t" "$seconds"
    "$bin" -dict="$dict" -max_total_time="$seconds" -print_final_stats=1 \
	-artifact_prefix="$art_root/$t/" "$corpus_root/$t" >"$log" 2>&1
    rc=$?
    ran=$((ran + 1))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep '^#[0-9].*cov:' "$log" | tail -n 1 |
	sed 's/.*cov: \([0-9]*\).*/\1/')
    if [ $rc -eq 0 ]; then
	echo "ok (${execs:-?} runs, cov ${cov:-?})"
    else
	echo "CRASH (exit $rc)"
	grep -E 'invariant violated|ERROR: |runtime error|SUMMARY' "$log" |
	    head -n 5 | sed 's/^/    /'
	for f in "$art_root/$t"/crash-* "$art_root/$t"/leak-* \
		 "$art_root/$t"/oom-* "$art_root/$t"/timeout-*; do
	    [ -f "$f" ] && echo "    reproducer: $f"
	done
	echo "    log: $log"
	failed=1
    fi
done

if [ $ran -eq 0 ]; then
    echo "$0: no fuzz target is built in $builddir/tests/fuzz; run" \
	 "./configure --enable-fuzzer CC=clang && make" >&2
    exit 2
fi
exit $failed
