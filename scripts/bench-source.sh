#!/usr/bin/env bash
# Benchmark: read, map and plan N generated people (default 50,000) from a private slapd,
# next to `ldapsearch` dumping the same entries with the same page size and attributes.
# Prints wall time (best and median of 5 interleaved rounds) and peak memory (GNU time's
# maximum resident set size, of the best run) of both, each writing to /dev/null,
# then where ldap2exo's time goes: the phase times of one more run with debug logging, taken
# from its own log lines (`read LDAP entries`, `mapped and planned`, `wrote the report`).
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
once() { # label, command...: appends "seconds peak_kib" of one run to $tmp/label
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$tmp/t" "$@" >/dev/null 2>"$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
  cat "$tmp/t" >>"$tmp/$label"
}
summary() { # label: "best_seconds its_peak_kib median_seconds" of its runs
  sort -n "$tmp/$1" | awk "{ s[NR] = \$1; m[NR] = \$2 } END { print s[1], m[1], s[int((NR + 1) / 2)] }"
}
count=$(LDAPTLS_CACERT="$FIXTURE_CA_FILE" ldapsearch -LLL -ZZ -x -H "$FIXTURE_LDAP_URL" -D "$FIXTURE_BIND_DN" \
  -w "$FIXTURE_BIND_PASSWORD" -b "$FIXTURE_BASE_DN" -E pr="$BENCH_PAGE_SIZE"/noprompt "$filter" 1.1 | grep -c "^dn:")
# The state store is created once, by an unmeasured run, as at a site where ldap2exo runs:
# creating it runs every migration, each synced to disk (about 0.1 s here). A dry run
# changes nothing the next one plans from: every measured run plans the same creates.
export LDAP2EXO__STATE__PATH="$tmp/state.db"
target/release/ldap2exo sync --dry-run --format json >/dev/null
# Five rounds, each running ldapsearch and then ldap2exo, so that both meet the machine in
# the same state (on a shared machine, runs minutes apart differed by a third). Both write
# what they read to standard output, which goes to /dev/null: the plan is built and
# serialised in full, but neither pays for a file on disk (`--output` would add writing and
# syncing the 64 MB plan, which ldapsearch is not asked to do).
for _ in 1 2 3 4 5; do
  LDAPTLS_CACERT="$FIXTURE_CA_FILE" once ldapsearch ldapsearch -LLL -ZZ -x -H "$FIXTURE_LDAP_URL" \
    -D "$FIXTURE_BIND_DN" -w "$FIXTURE_BIND_PASSWORD" -b "$FIXTURE_BASE_DN" \
    -E pr="$BENCH_PAGE_SIZE"/noprompt "$filter" $attrs
  once ldap2exo target/release/ldap2exo sync --dry-run --format json
done
read -r ls_s ls_kib ls_med < <(summary ldapsearch)
read -r l2e_s l2e_kib l2e_med < <(summary ldap2exo)
LDAP2EXO_LOG=ldap2exo=debug NO_COLOR=1 /usr/bin/time -f "%e" -o "$tmp/t" \
  target/release/ldap2exo sync --dry-run --format json >"$tmp/plan.json" 2>"$tmp/log"
planned=$(grep -c "\"op\": \"create\"" "$tmp/plan.json" || true)
field() { # message, field: the value of `field` on the first log line with `message`
  grep -F "$1" "$tmp/log" | head -n 1 | grep -o " $2=[0-9]*" | cut -d= -f2
}
logged_s=$(cat "$tmp/t")
connected=$(field "read LDAP entries" connected_ms)
rules=$(field "read LDAP entries" rules_ms)
read_ms=$(field "read LDAP entries" elapsed_ms)
mapped=$(field "mapped and planned" mapped_ms)
plan_ms=$(field "mapped and planned" planned_ms)
output=$(field "wrote the report" elapsed_ms)
printf "\nldap2exo source benchmark: %s entries matched (%s generated), page size %s, 5 interleaved rounds\n" \
  "$count" "$BENCH_N" "$BENCH_PAGE_SIZE"
printf "%-44s %8s %8s %12s\n" "" "best s" "median s" "peak MB"
awk -v a="$ls_s" -v b="$ls_kib" -v am="$ls_med" -v c="$l2e_s" -v d="$l2e_kib" -v cm="$l2e_med" -v p="$planned" "BEGIN {
  printf \"%-44s %8.2f %8.2f %12.1f\\n\", \"ldapsearch (dump, same attributes)\", a, am, b / 1024
  printf \"%-44s %8.2f %8.2f %12.1f\\n\", \"ldap2exo sync --dry-run (read, map, plan)\", c, cm, d / 1024
  printf \"ratio ldap2exo / ldapsearch: %.2fx best, %.2fx median (target <= 1.5x); peak memory target < 150 MB; %d creates planned\\n\", c / a, cm / am, p
}"
awk -v wall="$logged_s" -v rules="$rules" -v conn="$connected" -v read="$read_ms" -v claims="$mapped" \
  -v plan="$plan_ms" -v out="$output" "BEGIN {
  printf \"\\nldap2exo phases, one more run with debug logging (%.2f s wall), ms:\\n\", wall
  line = \"  %-62s %6d\\n\"
  printf line, \"connect + rule searches (hidden/disabled DNs, 2 connections)\", rules
  printf line, \"main connection (connect, StartTLS, bind)\", conn - rules
  printf line, \"LDAP read + map (main paged search, mapping each entry)\", read - conn
  printf line, \"claims (Mapper::finish)\", claims
  printf line, \"plan (plan::plan, bill, state store reads)\", plan
  printf line, \"output (JSON report written to a file, not synced)\", out
  printf line, \"rest (start, config, opening the state store, exit)\", wall * 1000 - read - claims - plan - out
}"
'
