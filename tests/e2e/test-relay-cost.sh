#!/bin/bash
#
# test-relay-cost.sh - what m365-relay's per-process cut changed (issue
# 14.4) still behaves: the system CA store without ca_file
#
# Without ca_file the relay trusts the system CA store through OpenSSL's
# hashed directory (X509_get_default_cert_dir(), /usr/lib/ssl/certs ->
# /etc/ssl/certs on Debian), which loads only the CA a handshake needs,
# instead of parsing every certificate of libcurl's bundle
# (ca-certificates.crt).  Each case runs the relay (as an unprivileged
# user) in a private mount namespace with its own /etc/ssl/certs,
# against the emulator, whose test CA is:
#   1. only in the hashed directory (a link HASH.0), not in the bundle:
#      delivered; the bundle file is never opened (strace)
#   2. nowhere: deferred with the certificate error (verification on)
#   3. only in the bundle, in a directory without hash links: delivered
#      (the bundle is used as before)
#   4. ca_file set: the emulator CA from ca_file, nothing from the
#      system directory is needed (delivered with an empty directory)
#   5. only in the bundle (added by hand), the directory hashed without
#      it: delivered, as before (a failed verification by the directory
#      is tried again with the bundle; nothing was sent the first time)
# Needs root (mount namespaces, the unprivileged user); skips otherwise.

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top_srcdir/tests/lib.sh"

[ "$(id -u)" = 0 ] || skip_all "needs root (private mount namespaces)"
command -v unshare >/dev/null || skip_all "unshare missing (util-linux)"
command -v setpriv >/dev/null || skip_all "setpriv missing (util-linux)"
[ -d /etc/ssl/certs ] || skip_all "no /etc/ssl/certs"

t_init relay-cost
emu_setup
CONF=$T/relay.conf
write_conf "$CONF"
RUSER=${PF_RELAY_USER:-m365test}
e2e_user "$RUSER" || { bad "cannot create user $RUSER"; t_done; }
AS="setpriv --reuid=$(id -u "$RUSER") --regid=$(id -g "$RUSER") --clear-groups --"
sed '/^ca_file/d' "$CONF" >"$T/sys.conf"
chmod 644 "$T/sys.conf"
mkmsg_plain() {
    printf 'From: Bob <bob@contoso.test>\nTo: one@example.net\nSubject: %s\n\nbody of %s\n' "$1" "$1" >"$T/$1.eml"
    chmod 644 "$T/$1.eml"
}

# certdir NAME - a copy of /etc/ssl/certs without the hash links and
# without the bundle, to build each case from
certdir() {
    local d=$T/certs-$1
    mkdir -p "$d"
    find /etc/ssl/certs -maxdepth 1 -type l -name '*.pem' -exec cp -P {} "$d/" \;
    chmod 755 "$d"
    echo "$d"
}

# run DIR CONF SUBJECT - the relay with DIR as /etc/ssl/certs; sets rc, out
run() {
    local dir=$1 conf=$2 subj=$3
    mkmsg_plain "$subj"
    out=$(unshare -m sh -c 'mount --bind "$1" /etc/ssl/certs && shift && exec "$@"' sh \
	"$dir" env ${STRACE:+ASAN_OPTIONS=detect_leaks=0} $STRACE $AS "$RELAY" -c "$conf" -q "$subj" \
	-f bob@contoso.test -- one@example.net <"$T/$subj.eml" 2>&1)
    rc=$?
}
STRACE=
HASH=$(openssl x509 -hash -noout -in "$CA_FILE")

# ---- 1. only in the hashed directory
d1=$(certdir dir)
cp /etc/ssl/certs/ca-certificates.crt "$d1/"
cp "$CA_FILE" "$d1/m365emu-test-ca.pem"
ln -s m365emu-test-ca.pem "$d1/$HASH.0"
openssl rehash "$d1" 2>/dev/null || c_rehash "$d1" >/dev/null 2>&1
chmod -R a+rX "$d1"
# (LeakSanitizer cannot run under strace: no leak check in that run.)
if command -v strace >/dev/null; then
    STRACE="strace -f -e trace=openat -o $T/strace-c1"
fi
run "$d1" "$T/sys.conf" c1
t_eq "CA only in the hashed directory: delivered ($out)" "$rc" 0
t_eq "... recorded by the emulator" "$(emu_sent_count)" 1
if [ -n "$STRACE" ]; then
    check "... the CA bundle was not read" \
	sh -c "! grep -q 'ca-certificates.crt' '$T/strace-c1'"
    check "... the CA was loaded by its hash" grep -q "$HASH.0" "$T/strace-c1"
fi
STRACE=

# ---- 2. nowhere
d2=$(certdir none)
cp /etc/ssl/certs/ca-certificates.crt "$d2/"
openssl rehash "$d2" 2>/dev/null || c_rehash "$d2" >/dev/null 2>&1
chmod -R a+rX "$d2"
run "$d2" "$T/sys.conf" c2
t_eq "CA nowhere: deferred" "$rc" 75
case "$out" in
    4.*certificate*|4.*SSL*|4.*issuer*) ok "... with the certificate error ($out)" ;;
    *) bad "... with the certificate error: got [$out]" ;;
esac
t_eq "... nothing sent" "$(emu_sent_count)" 1

# ---- 3. only in the bundle, no hash links
d3=$(certdir bundle)
cat /etc/ssl/certs/ca-certificates.crt "$CA_FILE" >"$d3/ca-certificates.crt"
chmod -R a+rX "$d3"
run "$d3" "$T/sys.conf" c3
t_eq "CA only in the bundle, directory not hashed: delivered ($out)" "$rc" 0
t_eq "... recorded by the emulator" "$(emu_sent_count)" 2

# ---- 4. ca_file set, empty system directory
d4=$T/certs-empty
mkdir -p "$d4"
chmod 755 "$d4"
run "$d4" "$CONF" c4
t_eq "ca_file with an empty system store: delivered ($out)" "$rc" 0
t_eq "... recorded by the emulator" "$(emu_sent_count)" 3

# ---- 5. in the bundle only, hashed directory without it
d5=$(certdir byhand)
cat /etc/ssl/certs/ca-certificates.crt "$CA_FILE" >"$d5/ca-certificates.crt"
openssl rehash "$d5" 2>/dev/null || c_rehash "$d5" >/dev/null 2>&1
chmod -R a+rX "$d5"
run "$d5" "$T/sys.conf" c5
t_eq "CA added to the bundle by hand, hashed directory without it: delivered ($out)" "$rc" 0
t_eq "... recorded by the emulator once" "$(emu_sent_count)" 4
t_eq "... sendMail asked once (4 in all)" "$(emu_stat sendmail_requests)" 4
t_done
