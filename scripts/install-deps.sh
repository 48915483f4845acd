#!/usr/bin/env bash
# Installs what ldap2exo's demo, tests and benchmarks need on Debian, each only if missing (a
# second run does nothing): a C compiler and make (build-essential: aws-lc-sys and the bundled
# SQLite compile C), slapd and the LDAP client tools (for the fixture directory), openssl (a test
# makes an X.509 v1 certificate rcgen cannot), systemd-analyze (a test verifies the systemd
# units in packaging/), and for the benchmarks GNU time (peak memory), curl and python3.
# The Rust toolchain itself comes from rustup and is not installed here.
set -euo pipefail

command -v cargo >/dev/null || {
  echo "cargo not found: install Rust (https://rustup.rs), then run this again" >&2
  exit 1
}

missing=()
{ command -v cc && command -v make; } >/dev/null || missing+=(build-essential)
[ -x /usr/sbin/slapd ] || missing+=(slapd)
command -v ldapsearch >/dev/null || missing+=(ldap-utils)
[ -x /usr/bin/time ] || missing+=(time)
command -v openssl >/dev/null || missing+=(openssl)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${missing[*]} from Debian's packages" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
