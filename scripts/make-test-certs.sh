#!/usr/bin/env bash
# Writes the TLS fixtures of the https health-probe tests (tests/fixtures/tls/): a test
# certificate authority and a server certificate it signed for 127.0.0.1 and localhost, both
# valid for 100 years. Test-only keys: never trust this CA anywhere else.
set -euo pipefail
cd "$(dirname "$0")/../tests/fixtures/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 36500 \
  -subj "/CN=cutover test CA" -keyout ca.key -out ca.pem \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/CN=localhost" -keyout server.key -out server.csr
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 36500 \
  -extfile <(printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n') \
  -out server.pem
rm -f server.csr ca.srl ca.key
