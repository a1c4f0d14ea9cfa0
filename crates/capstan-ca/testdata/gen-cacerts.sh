#!/usr/bin/env bash
# Regenerates the plugged-in CA fixtures (Istio's cacerts layout) with openssl, valid 100 years.
#   cacerts-rsa-pkcs1/  RSA-2048 root -> CA; ca-key.pem is PKCS#1 ("RSA PRIVATE KEY")
#   cacerts-ec-sec1/    P-256 root -> CA; ca-key.pem is SEC1 ("EC PRIVATE KEY")
#   cacerts-ec-pkcs8/   P-256 root -> intermediate -> CA; ca-key.pem is PKCS#8;
#                       cert-chain.pem = CA, intermediate, root (as Istio's tools write it)
#   csr-rsa1024.pem     a validly self-signed CSR for an RSA-1024 key (the CA refuses the key)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
DAYS=36500
ca_ext() { printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n'; }

gen() { # gen DIR KEYALG KEYFORMAT LEVELS
  local dir=$1 alg=$2 fmt=$3 levels=$4 tmp
  tmp=$(mktemp -d); mkdir -p "$dir"
  key() { if [[ $alg == rsa ]]; then openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null;
          else openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; fi; }
  key "$tmp/root.key"
  openssl req -x509 -new -key "$tmp/root.key" -days $DAYS -subj "/O=Capstan Test/CN=Root CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$tmp/root.pem"
  local parent=root chain=""
  for ((i = 1; i < levels; i++)); do
    key "$tmp/mid$i.key"
    openssl req -new -key "$tmp/mid$i.key" -subj "/O=Capstan Test/CN=Intermediate $i" -out "$tmp/mid$i.csr"
    openssl x509 -req -in "$tmp/mid$i.csr" -CA "$tmp/$parent.pem" -CAkey "$tmp/$parent.key" -CAcreateserial \
      -days $DAYS -extfile <(ca_ext) -out "$tmp/mid$i.pem" 2>/dev/null
    chain="$(cat "$tmp/mid$i.pem")"$'\n'"$chain"; parent=mid$i
  done
  key "$tmp/ca.key"
  openssl req -new -key "$tmp/ca.key" -subj "/O=Capstan Test/CN=Capstan CA" -out "$tmp/ca.csr"
  openssl x509 -req -in "$tmp/ca.csr" -CA "$tmp/$parent.pem" -CAkey "$tmp/$parent.key" -CAcreateserial \
    -days $DAYS -extfile <(ca_ext) -out "$dir/ca-cert.pem" 2>/dev/null
  case $fmt in
    pkcs8) cp "$tmp/ca.key" "$dir/ca-key.pem" ;;
    pkcs1) openssl rsa -in "$tmp/ca.key" -traditional -out "$dir/ca-key.pem" 2>/dev/null ;;
    sec1) openssl ec -in "$tmp/ca.key" -out "$dir/ca-key.pem" 2>/dev/null ;;
  esac
  cp "$tmp/root.pem" "$dir/root-cert.pem"
  { cat "$dir/ca-cert.pem"; [[ -n $chain ]] && printf '%s' "$chain"; cat "$tmp/root.pem"; } >"$dir/cert-chain.pem"
  rm -rf "$tmp"
}
gen cacerts-rsa-pkcs1 rsa pkcs1 1
gen cacerts-ec-sec1 ec sec1 1
gen cacerts-ec-pkcs8 ec pkcs8 2
openssl req -new -newkey rsa:1024 -nodes -keyout /dev/null -subj /CN=weak -out csr-rsa1024.pem 2>/dev/null
