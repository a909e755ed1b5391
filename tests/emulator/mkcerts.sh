#!/bin/sh
# mkcerts.sh - test certificates for the Microsoft 365 emulator
#
# Usage: mkcerts.sh DIR
#
# Creates in DIR (idempotent: nothing is done when every file exists):
#   ca.pem ca.key          test CA (self-signed, RSA 2048)
#   server.pem server.key  server certificate signed by the test CA, SAN
#                          IP:127.0.0.1, IP:::1, DNS:localhost,
#                          DNS:graph.microsoft.com, DNS:login.microsoftonline.com,
#                          DNS:outlook.office.com (upload URLs of attachments)
#   client.pem client.key  self-signed RSA 2048 certificate for the
#                          client-credentials certificate flow
# Keys are mode 0600.  Only the openssl command-line tool is used.

set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
dir=$1
command -v openssl >/dev/null 2>&1 || {
    echo "$0: the openssl command is missing (Debian: apt-get install openssl)" >&2
    exit 1
}

all_present=yes
for f in ca.pem ca.key server.pem server.key client.pem client.key; do
    [ -s "$dir/$f" ] || all_present=no
done
[ "$all_present" = yes ] && exit 0

mkdir -p "$dir"
umask 077
work=$(mktemp -d "${TMPDIR:-/tmp}/mkcerts.XXXXXX")
trap 'rm -rf "$work"' EXIT

quiet() {
    # Run an openssl command; show its output only when it fails.
    if ! "$@" >"$work/out" 2>&1; then
        echo "$0: failed: $*" >&2
        cat "$work/out" >&2
        exit 1
    fi
}

# Test CA.
quiet openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
    -keyout "$work/ca.key" -out "$work/ca.pem" \
    -subj "/O=m365relay tests/CN=m365relay test CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash"

# Server certificate signed by the CA.
cat >"$work/server.ext" <<'EOF'
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,IP:::1,DNS:localhost,DNS:graph.microsoft.com,DNS:login.microsoftonline.com,DNS:outlook.office.com
authorityKeyIdentifier = keyid
subjectKeyIdentifier = hash
EOF
quiet openssl req -new -newkey rsa:2048 -nodes -sha256 \
    -keyout "$work/server.key" -out "$work/server.csr" \
    -subj "/O=m365relay tests/CN=localhost"
quiet openssl x509 -req -sha256 -days 3650 -in "$work/server.csr" \
    -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
    -CAserial "$work/ca.srl" -extfile "$work/server.ext" -out "$work/server.pem"

# Client certificate for certificate credentials (self-signed, as
# uploaded to an Entra app registration).
quiet openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
    -keyout "$work/client.key" -out "$work/client.pem" \
    -subj "/CN=m365relay test client"

for f in ca.key server.key client.key; do
    chmod 600 "$work/$f"
    mv -f "$work/$f" "$dir/$f"
done
for f in ca.pem server.pem client.pem; do
    chmod 644 "$work/$f"
    mv -f "$work/$f" "$dir/$f"
done
exit 0
