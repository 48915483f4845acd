#!/usr/bin/env bash
# Benchmark: read, map and plan N generated people (default 50,000) from a private slapd,
# next to `ldapsearch` dumping the same entries with the same page size and attributes.
# Prints wall time and peak memory (GNU time's maximum resident set size) of both.
#
#   scripts/bench-source.sh [N] [PAGE_SIZE]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-50000}"
page="${2:-500}"
scripts/install-deps.sh
cargo build --quiet --release --locked --bin ldap2exo --example fixture_ldap
export BENCH_PAGE_SIZE="$page" BENCH_N="$n"
exec target/release/examples/fixture_ldap --generate "$n" -- bash -c '
set -euo pipefail
export LDAP2EXO__LDAP__PAGE_SIZE="$BENCH_PAGE_SIZE" LDAP2EXO_LOG=warn
attrs="entryUUID uid mail mailAlternateAddress mailForwardingAddress displayName givenName sn ou title telephoneNumber mobile roomNumber o"
filter="(&(objectClass=inetOrgPerson)(mail=*))"
tmp=$(mktemp -d)
trap "rm -rf $tmp" EXIT
measure() { # label, command...: prints "label seconds peak_kib", best wall time of 3 runs
  local label=$1; shift
  local best="" mem=""
  for _ in 1 2 3; do
    /usr/bin/time -f "%e %M" -o "$tmp/t" "$@" >/dev/null 2>"$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
    read -r secs kib <"$tmp/t"
    if [ -z "$best" ] || awk "BEGIN{exit !($secs < $best)}"; then best=$secs; mem=$kib; fi
  done
  echo "$label $best $mem"
}
count=$(LDAPTLS_CACERT="$FIXTURE_CA_FILE" ldapsearch -LLL -ZZ -x -H "$FIXTURE_LDAP_URL" -D "$FIXTURE_BIND_DN" \
  -w "$FIXTURE_BIND_PASSWORD" -b "$FIXTURE_BASE_DN" -E pr="$BENCH_PAGE_SIZE"/noprompt "$filter" 1.1 | grep -c "^dn:")
read -r _ ls_s ls_kib < <(LDAPTLS_CACERT="$FIXTURE_CA_FILE" measure ldapsearch ldapsearch -LLL -ZZ -x \
  -H "$FIXTURE_LDAP_URL" -D "$FIXTURE_BIND_DN" -w "$FIXTURE_BIND_PASSWORD" -b "$FIXTURE_BASE_DN" \
  -E pr="$BENCH_PAGE_SIZE"/noprompt "$filter" $attrs)
read -r _ l2e_s l2e_kib < <(LDAP2EXO__STATE__PATH="$tmp/state.db" measure ldap2exo \
  target/release/ldap2exo sync --dry-run --format json --output "$tmp/plan.json")
planned=$(grep -c "\"op\": \"create\"" "$tmp/plan.json" || true)
printf "\nldap2exo source benchmark: %s entries matched (%s generated), page size %s, best of 3\n" \
  "$count" "$BENCH_N" "$BENCH_PAGE_SIZE"
printf "%-44s %8s %12s\n" "" "wall s" "peak MB"
awk -v a="$ls_s" -v b="$ls_kib" -v c="$l2e_s" -v d="$l2e_kib" -v p="$planned" "BEGIN {
  printf \"%-44s %8.2f %12.1f\\n\", \"ldapsearch (dump, same attributes)\", a, b / 1024
  printf \"%-44s %8.2f %12.1f\\n\", \"ldap2exo sync --dry-run (read, map, plan)\", c, d / 1024
  printf \"ratio ldap2exo / ldapsearch: %.2fx (target <= 1.5x); peak memory target < 200 MB; %d creates planned\\n\", c / a, p
}"
'
