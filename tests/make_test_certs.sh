#!/usr/bin/env bash
# Test PKI for DICOM TLS with openssl (also the example in docs/deployment.md):
#   ca.crt/ca.key        a throw-away CA
#   node.crt/node.key    the node's server certificate (CN dicomnode, SAN 127.0.0.1)
#   client.crt/client.key  a modality/PACS client certificate signed by the same CA
# Usage: tests/make_test_certs.sh OUTDIR
set -euo pipefail
out=${1:?usage: make_test_certs.sh OUTDIR}
mkdir -p "$out" && cd "$out"
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=dicomnode test CA" \
  -keyout ca.key -out ca.crt 2>/dev/null
for name in node client; do
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$name" -keyout $name.key -out $name.csr 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > $name.ext
  openssl x509 -req -in $name.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
    -extfile $name.ext -out $name.crt 2>/dev/null
done
chmod 600 ./*.key
