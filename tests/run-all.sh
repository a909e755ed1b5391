#!/usr/bin/env bash
# tests/run-all.sh - install what is needed, build, and run every test.
#
#	bash tests/run-all.sh            (as root on Debian 12; CI runs it)
#
# 1. Installs the Debian packages the build and the tests need (apt-get,
#    only when one is missing; needs root).
# 2. autoreconf -fi, then an out-of-tree build in build/ with
#    --enable-werror, and "make check": unit tests, the Microsoft 365
#    emulator tests and the end-to-end tests (the real-Postfix test needs
#    root; without it it is skipped).
# 3. A second build in build-asan/ with --enable-sanitizers that runs the
#    unit tests again under AddressSanitizer + UndefinedBehaviorSanitizer.
# 4. The Debian package (tests/pkg/test-package.sh, needs root): built in
#    build/deb, checked with lintian, installed on this machine, the quick
#    start with the installed programs, the units under systemd in a
#    throwaway container, then purged.
# 5. RUN_DISTCHECK=1 also runs "make distcheck" (slow).
#
# Prints one line per test with its own "N passed, N failed" totals and
# ends with the sum over both runs: "N passed, N failed".  Exits non-zero
# when anything failed (a test, the build or make check itself).

set -u
export LC_ALL=C

top=$(cd "$(dirname "$0")/.." && pwd) || exit 1
cd "$top" || exit 1
jobs=${JOBS:-2}

PACKAGES="autoconf automake libtool pkg-config make gcc libmilter-dev
libcurl4-openssl-dev libcjson-dev libssl-dev postfix swaks miltertest
python3 openssl curl ca-certificates iproute2 util-linux m4 libwrap0
python3-dkim dpkg-dev debhelper lintian adduser procps systemd
systemd-container strace"

TOTAL_PASS=0 TOTAL_FAIL=0 PROBLEMS=""

say() { printf '==> %s\n' "$*"; }
note() { PROBLEMS="$PROBLEMS
  - $*"; }
problem() { note "$@"; TOTAL_FAIL=$((TOTAL_FAIL + 1)); }

# install_packages - apt-get install whatever of PACKAGES is missing
install_packages() {
    local p missing=""
    for p in $PACKAGES; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null |
	    grep -q '^install ok installed$' || missing="$missing $p"
    done
    if [ -z "$missing" ]; then
	say "packages: all installed"
	return 0
    fi
    if [ "$(id -u)" != 0 ]; then
	echo "run-all.sh: missing Debian packages:$missing" >&2
	echo "run-all.sh: run as root, or install them: apt-get install --no-install-recommends$missing" >&2
	return 1
    fi
    say "packages: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    if ! apt-get update -q >/dev/null ||
	! apt-get install -y -q --no-install-recommends $missing >/dev/null; then
	echo "run-all.sh: apt-get install failed for:$missing" >&2
	return 1
    fi
}

# collect DIR LABEL - add the subtest totals of every test log under DIR
#
# A test's totals are the last "N passed, N failed" line of its .log.  A
# test that failed (per its .trs) without reporting a failure counts as
# one failure (a crash, a sanitizer report, a wrong exit code).
collect() {
    local dir=$1 label=$2 trs log res p f line name
    while IFS= read -r trs; do
	log=${trs%.trs}.log
	res=$(sed -n 's/^:test-result: //p' "$trs" | head -n 1)
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" 2>/dev/null | tail -n 1)
	p=0 f=0
	if [ -n "$line" ]; then
	    p=${line%% passed*}
	    f=${line#*passed, }; f=${f%% failed}
	fi
	name=${log#"$dir"/}; name=${name%.log}
	case "$res" in
	PASS|XFAIL)
	    [ -z "$line" ] && p=1 ;;
	SKIP)
	    printf '    %-34s SKIP (%s)\n' "$name" \
		"$(grep -m1 -iE 'skip|requires|need' "$log" 2>/dev/null | cut -c1-60)"
	    continue ;;
	*)
	    [ "$f" -eq 0 ] && f=1
	    note "$label: $name: $res (see $log)" ;;
	esac
	printf '    %-34s %s  %s passed, %s failed\n' "$name" "$res" "$p" "$f"
	TOTAL_PASS=$((TOTAL_PASS + p))
	TOTAL_FAIL=$((TOTAL_FAIL + f))
    done < <(find "$dir" -name '*.trs' | sort)
}

# pkg_test - tests/pkg/test-package.sh, its log and result in build/pkg/
# in the form collect reads (outside build/tests, which make check's
# collect reads); the package itself is built in build/deb
pkg_test() {
    local dir=$top/build/pkg rc=0 res
    mkdir -p "$dir" || { problem "package: cannot create $dir"; return; }
    rm -f "$dir/test-package.log" "$dir/test-package.trs"
    top_srcdir=$top top_builddir=$top/build \
	bash "$top/tests/pkg/test-package.sh" >"$dir/test-package.log" 2>&1 || rc=$?
    case $rc in
    0) res=PASS ;;
    77) res=SKIP ;;
    *) res=FAIL ;;
    esac
    printf ':test-result: %s\n' "$res" >"$dir/test-package.trs"
    printf '%s: tests/pkg/test-package.sh\n' "$res"
    collect "$dir" "package"
}

# prepare_srcdir - out-of-tree builds need an unconfigured source tree
prepare_srcdir() {
    if [ -f "$top/config.status" ]; then
	say "the source tree was configured in place; make distclean there so that build/ can be used"
	(cd "$top" && make distclean >/dev/null 2>&1) || rm -f "$top/config.status" "$top/config.h"
    fi
    say "autoreconf -fi"
    autoreconf -fi >"$top/autoreconf.out" 2>&1 || {
	cat "$top/autoreconf.out" >&2
	return 1
    }
    rm -f "$top/autoreconf.out"
}

# build DIR CONFIGURE_ARGS... - configure and make in DIR
build() {
    local dir=$1; shift
    mkdir -p "$top/$dir" && cd "$top/$dir" || return 1
    say "$dir: configure $*"
    "$top/configure" "$@" >configure.out 2>&1 || {
	tail -n 30 configure.out >&2
	return 1
    }
    say "$dir: make -j$jobs"
    make -j"$jobs" >make.out 2>&1 || {
	grep -E 'error|warning' make.out | head -n 40 >&2
	tail -n 20 make.out >&2
	return 1
    }
}

# check_in DIR LABEL [MAKE-ARGS...] - make check (with MAKE-ARGS) in the
# built DIR (the current directory), print and collect its results; a
# failing make check without a failed test (a check program did not
# build, ...) is counted here
check_in() {
    local dir=$1 label=$2 rc=0 f0
    shift 2
    make check "$@" >check.out 2>&1 || rc=$?
    grep -E '^(PASS|FAIL|SKIP|XFAIL|XPASS|ERROR):' check.out
    f0=$TOTAL_FAIL
    collect "$top/$dir/tests" "$label"
    if [ "$rc" -ne 0 ]; then
	if [ "$TOTAL_FAIL" -eq "$f0" ]; then
	    problem "$label: make check in $dir/ exited $rc (see $dir/check.out)"
	else
	    note "$label: make check in $dir/ exited $rc (see $dir/test-suite.log)"
	fi
    fi
}

start=$SECONDS
install_packages || exit 1
prepare_srcdir || { echo "run-all.sh: autoreconf failed" >&2; exit 1; }

# --- 1. build with -Werror, full make check
if build build --enable-werror; then
    say "build: make check (unit, emulator and end-to-end tests)"
    check_in build "make check"
else
    problem "build/ (--enable-werror) did not build"
fi

# --- 2. unit tests again under ASan + UBSan
cd "$top" || exit 1
if build build-asan --enable-sanitizers --enable-werror; then
    say "build-asan: unit tests under AddressSanitizer + UndefinedBehaviorSanitizer"
    export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:halt_on_error=1:detect_leaks=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
    # TESTS='$(UNIT_TESTS)' is expanded by make from Makefile.am's list.
    # shellcheck disable=SC2016
    check_in build-asan "sanitizers" 'TESTS=$(UNIT_TESTS)'
else
    problem "build-asan/ (--enable-sanitizers) did not build"
fi

# --- 3. the Debian package
cd "$top" || exit 1
say "Debian package: build, lintian, install, quick start with the installed programs, units under systemd, purge"
pkg_test

# --- 4. optional: distcheck
if [ "${RUN_DISTCHECK:-0}" = 1 ]; then
    cd "$top/build" || exit 1
    say "build: make distcheck"
    if make distcheck >distcheck.out 2>&1; then
	TOTAL_PASS=$((TOTAL_PASS + 1))
    else
	tail -n 30 distcheck.out >&2
	problem "make distcheck failed (see build/distcheck.out)"
    fi
fi

if [ -n "$PROBLEMS" ]; then
    echo "run-all.sh: problems:$PROBLEMS"
fi
echo "run-all.sh: done in $((SECONDS - start)) s"
echo "$TOTAL_PASS passed, $TOTAL_FAIL failed"
[ "$TOTAL_FAIL" -eq 0 ]
