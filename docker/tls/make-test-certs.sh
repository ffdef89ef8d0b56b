#!/bin/sh
# Make a throw-away CA plus server and client certificates for DICOM TLS tests.
#
#   docker/tls/make-test-certs.sh OUTDIR [NODE_HOSTNAME]
#
# Writes OUTDIR/ca.crt, ca.key, node.crt, node.key (server; SAN = NODE_HOSTNAME, localhost,
# 127.0.0.1) and modality.crt, modality.key (client, for require_client_cert). Keys are
# mode 0600. For tests and pilots only: production certificates come from the hospital PKI.
set -eu
out=${1:?usage: make-test-certs.sh OUTDIR [NODE_HOSTNAME]}
host=${2:-dicomnode}
days=${DAYS:-365}
mkdir -p "$out"
cd "$out"
umask 077

openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$days" \
    -keyout ca.key -out ca.crt -subj "/CN=dicomnode test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null

issue() {  # name CN extendedKeyUsage [SAN]
    openssl req -newkey rsa:2048 -nodes -sha256 -keyout "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
    {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$3"
        if [ -n "${4:-}" ]; then echo "subjectAltName=$4"; fi
    } > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 \
        -days "$days" -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}
issue node "$host" serverAuth,clientAuth "DNS:$host,DNS:localhost,IP:127.0.0.1"
issue modality "MODALITY1" clientAuth
rm -f ca.srl
chmod 0644 ca.crt node.crt modality.crt
chmod 0600 ca.key node.key modality.key
openssl verify -CAfile ca.crt node.crt modality.crt
