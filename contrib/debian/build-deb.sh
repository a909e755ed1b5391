#!/bin/sh
# contrib/debian/build-deb.sh - build the Debian package of this tree
#
#	contrib/debian/build-deb.sh [OUTDIR]
#
# Makes the release tarball ("make dist"), unpacks it in OUTDIR (default
# build-deb/ in the source tree), puts contrib/debian in place as debian/
# and runs "dpkg-buildpackage -b": OUTDIR/m365relay_VERSION-1_ARCH.deb.
# Install it with "apt-get install ./OUTDIR/m365relay_*.deb".
#
# Why contrib/debian and not debian/: the top level holds the upstream
# project; a distribution packages a release tarball with a debian/ of
# its own, and an upstream debian/ would be in its way (Debian's upstream
# guide asks upstreams not to ship one).  Building from the tarball also
# proves that the tarball is complete.
#
# Run as root, it installs the missing build dependencies (the
# Build-Depends of contrib/debian/control) with apt-get; otherwise it
# names them.  Needs a Debian 12 (or later) system.

set -eu
export LC_ALL=C

top=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$top/build-deb}
control=$top/contrib/debian/control

die() { printf 'build-deb.sh: %s\n' "$*" >&2; exit 1; }
say() { printf '==> %s\n' "$*"; }

# build_depends - the Build-Depends field of the control file, one line
build_depends() {
    sed -n '/^Build-Depends:/,/^[^ ]/{s/^Build-Depends://;/^[^ ]/d;p;}' "$control" |
	tr '\n' ' ' | tr -s ' '
}

# ---- 1. build dependencies
if ! command -v dpkg-buildpackage >/dev/null 2>&1 ||
   ! dpkg-checkbuilddeps "$control" >/dev/null 2>&1; then
    deps="dpkg-dev, $(build_depends)"
    if [ "$(id -u)" != 0 ]; then
	die "missing build dependencies; as root: apt-get satisfy --no-install-recommends '$deps'"
    fi
    say "installing the build dependencies: $deps"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null || die "apt-get update failed"
    apt-get satisfy -y -q --no-install-recommends "$deps" >/dev/null ||
	die "apt-get satisfy '$deps' failed"
fi

# ---- 2. the release tarball
mkdir -p "$out"
out=$(cd "$out" && pwd)
case "$out" in
*[[:space:]]*) die "the output directory must not contain white space: $out" ;;
esac
if [ ! -x "$top/configure" ]; then
    say "autoreconf -fi"
    (cd "$top" && autoreconf -fi) >"$out/autoreconf.out" 2>&1 ||
	die "autoreconf -fi failed (see $out/autoreconf.out)"
fi
rm -f "$out"/m365relay-*.tar.gz
if [ -f "$top/config.status" ]; then
    say "make dist (in the source tree, which is configured in place)"
    make -C "$top" dist-gzip >"$out/dist.out" 2>&1 ||
	die "make dist failed (see $out/dist.out)"
    mv "$top"/m365relay-*.tar.gz "$out/"
else
    say "make dist (in $out/dist)"
    rm -rf "$out/dist"
    mkdir "$out/dist"
    (cd "$out/dist" && "$top/configure" -q && make dist-gzip) >"$out/dist.out" 2>&1 ||
	die "configure or make dist failed (see $out/dist.out)"
    mv "$out"/dist/m365relay-*.tar.gz "$out/"
    rm -rf "$out/dist"
fi
tarball=$(ls "$out"/m365relay-*.tar.gz)
version=${tarball##*/m365relay-}
version=${version%.tar.gz}

# ---- 3. the source tree with debian/
debversion=$(dpkg-parsechangelog -l "$top/contrib/debian/changelog" -S Version)
case "$debversion" in
"$version"-*) ;;
*) die "contrib/debian/changelog is at $debversion, the tarball at $version: add an entry (dch -c contrib/debian/changelog -v $version-1)" ;;
esac
src=$out/m365relay-$version
rm -rf "$src" "$out"/m365relay_*
cp "$tarball" "$out/m365relay_$version.orig.tar.gz"
tar -xzf "$tarball" -C "$out"
cp -R "$src/contrib/debian" "$src/debian"
rm -f "$src/debian/build-deb.sh"

# ---- 4. dpkg-buildpackage
say "dpkg-buildpackage -b (log: $out/build.out)"
(cd "$src" && dpkg-buildpackage -b -us -uc) >"$out/build.out" 2>&1 || {
    tail -n 30 "$out/build.out" >&2
    die "dpkg-buildpackage failed (see $out/build.out)"
}
ls "$out"/m365relay_"$debversion"_*.deb
