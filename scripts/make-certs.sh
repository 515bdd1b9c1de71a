#!/usr/bin/env bash
# Makes a test CA and certificates for Atoll's mutual TLS ([security]).
#
#   scripts/make-certs.sh DIR [IP_OR_NAME ...]
#
# Writes into DIR:
#   ca.pem, ca-key.pem          the cluster CA
#   pd.pem, pd-key.pem          CN atoll-pd
#   server.pem, server-key.pem  CN atoll-server (stores)
#   client.pem, client-key.pem  CN atoll-client (clients, atoll-ctl)
# Every certificate is valid for 127.0.0.1, localhost and each extra
# IP address or DNS name given, as server and as client (mutual TLS: each
# process is both). Keys are EC P-256, PKCS#8. Valid for 825 days.
# For tests and trials; production deployments use their own PKI.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 DIR [IP_OR_NAME ...]" >&2
    exit 2
fi
dir=$1
shift
command -v openssl >/dev/null || { echo "openssl is not installed (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$dir"
cd "$dir"

san="IP:127.0.0.1,DNS:localhost"
for h in "$@"; do
    if [[ $h =~ ^[0-9.]+$ || $h == *:* ]]; then san+=",IP:$h"; else san+=",DNS:$h"; fi
done

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

if [[ ! -f ca.pem ]]; then
    key ca-key.pem
    openssl req -x509 -new -key ca-key.pem -sha256 -days 825 -subj "/O=atoll/CN=atoll-test-ca" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem
fi

leaf() { # name cn
    key "$1-key.pem"
    openssl req -new -key "$1-key.pem" -subj "/O=atoll/CN=$2" -out "$1.csr"
    printf '%s\n' \
        "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=serverAuth,clientAuth" \
        "subjectAltName=$san" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -sha256 \
        -days 825 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}

leaf pd atoll-pd
leaf server atoll-server
leaf client atoll-client
rm -f ca.srl
chmod 600 ./*-key.pem
echo "certificates for [$san] in $dir"
