#!/usr/bin/env bash
# The demo: the campus fixture directory in a private slapd (Debian's package; no Docker)
# and the tenant emulator as a process (HTTPS with a throw-away CA), then ldap2exo's main
# job against them: check-config, a dry run, the real sync, a second sync that has nothing
# left to do, status, the GAL audit, and the mail-flow connectors planned, made and audited. Extra arguments go to the dry run, e.g. `--format markdown`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
if [ ! -x target/debug/ldap2exo ]; then
  echo "first build of ldap2exo, the fixture tool and the tenant emulator: about 10 minutes" \
    "on 2 cores (later runs take seconds)" >&2
fi
cargo build --locked --bin ldap2exo --example fixture_ldap
cargo build --locked -p ldap2exo-emulator --bin ldap2exo-emulator

work=$(mktemp -d)
emulator_pid=""
cleanup() {
  if [ -n "$emulator_pid" ]; then kill "$emulator_pid" 2>/dev/null || true; wait "$emulator_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

target/debug/ldap2exo-emulator --listen 127.0.0.1:0 --url-out "$work/url" --ca-out "$work/ca.pem" \
  --state-dump "$work/tenant.json" --tenant-name exampleedu \
  --domain example.edu --domain staff.example.edu \
  --sku 4b9405b0-7788-4568-add1-99614e613b69:EXCHANGESTANDARD:100:exchange >"$work/emulator.log" 2>&1 &
emulator_pid=$!
for _ in $(seq 100); do [ -s "$work/url" ] && break; sleep 0.1; done
[ -s "$work/url" ] || { cat "$work/emulator.log" >&2; echo "the tenant emulator did not start" >&2; exit 1; }
url=$(cat "$work/url")
echo "tenant emulator: $url" >&2

export LDAP2EXO__TENANT__TENANT_ID=00000000-0000-4000-8000-00000000e0e0
export LDAP2EXO__TENANT__CLIENT_ID=11111111-1111-4111-8111-111111111111
export LDAP2EXO__TENANT__CLIENT_SECRET=emulator-secret
export LDAP2EXO__TENANT__CA_FILE="$work/ca.pem"
export LDAP2EXO__TENANT__MAILBOX_SKU=EXCHANGESTANDARD
export LDAP2EXO__TENANT__USAGE_LOCATION=DE
export LDAP2EXO__TENANT__ENDPOINTS__LOGIN="$url" LDAP2EXO__TENANT__ENDPOINTS__GRAPH="$url"
export LDAP2EXO__TENANT__ENDPOINTS__EXCHANGE="$url"
# Errors only: the warnings of these runs (each quarantined entry, three times) are what the
# dry run's report lists.
export LDAP2EXO_LOG=error
export DEMO_ARGS="$*"

target/debug/examples/fixture_ldap -- bash -c '
set -e
if [ -t 1 ]; then bold=$(printf "\033[1m") plain=$(printf "\033[0m"); else bold="" plain=""; fi
step() { printf "\n%s\$ ldap2exo %s%s\n" "$bold" "$*" "$plain"; }
step check-config;       target/debug/ldap2exo check-config
step sync --dry-run $DEMO_ARGS; target/debug/ldap2exo sync --dry-run $DEMO_ARGS || [ $? -eq 3 ]
step sync;               target/debug/ldap2exo sync --format text | tail -n 4
step "sync   # again: nothing left to do"; target/debug/ldap2exo sync | tail -n 4
step status;             target/debug/ldap2exo status
step "audit gal   # is everyone in the GAL, and right?"; target/debug/ldap2exo audit gal | tail -n 2
step "connectors plan   # the mail-flow connectors of the hybrid"
target/debug/ldap2exo connectors plan | sed -n "1,/^The on-prem side/p" | head -n 24 || true
step connectors apply;   target/debug/ldap2exo connectors apply
step connectors audit;   target/debug/ldap2exo connectors audit | sed "/^The on-prem side/,\$d"
'
