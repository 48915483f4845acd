#!/usr/bin/env bash
# Benchmark: provision N generated people (default 5,000) into the tenant emulator under a
# write budget like Graph's (429 with Retry-After beyond it) and report the throughput as a
# share of that budget, and the speed-up over one request at a time (measured on a smaller
# population, default 300, since one at a time is slow by design).
#
#   scripts/bench-tenant.sh [N] [N_SEQUENTIAL]
#
# Budget and latency: BENCH_BUDGET writes per second for each API (default 200; Microsoft's
# Graph identity limit is about 20 per second per app and tenant, scaled up so the benchmark
# ends in minutes), BENCH_LATENCY_MS added to every answer (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-5000}"
n_seq="${2:-300}"
budget="${BENCH_BUDGET:-200}"
latency="${BENCH_LATENCY_MS:-10}"
scripts/install-deps.sh
cargo build --quiet --release --locked --bin ldap2exo --example fixture_ldap
cargo build --quiet --release --locked -p ldap2exo-emulator --bin ldap2exo-emulator

work=$(mktemp -d)
# Emulators start inside command substitutions (subshells), so their pids go to files.
cleanup() {
  for f in "$work"/*/pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

# Starts an emulator with the budget; prints its URL.
emulator() {
  local dir=$1
  mkdir -p "$dir"
  target/release/ldap2exo-emulator --listen 127.0.0.1:0 --url-out "$dir/url" --ca-out "$dir/ca.pem" \
    --tenant-name exampleedu --domain example.edu --domain staff.example.edu \
    --sku 4b9405b0-7788-4568-add1-99614e613b69:EXCHANGESTANDARD:100000:exchange >"$dir/log" 2>&1 &
  echo $! >"$dir/pid"
  for _ in $(seq 100); do [ -s "$dir/url" ] && break; sleep 0.1; done
  local url; url=$(cat "$dir/url")
  curl -sf --cacert "$dir/ca.pem" -X PUT "$url/_emulator/faults" -H 'content-type: application/json' -d "{
    \"graph_write_budget\": {\"limit\": $budget, \"window_ms\": 1000},
    \"exchange_write_budget\": {\"limit\": $budget, \"window_ms\": 1000},
    \"latency_ms\": $latency, \"fractional_retry_after\": true}" >/dev/null
  echo "$url"
}

# Runs one sync of `count` generated people against a fresh emulator and state; prints
# "seconds people graph_writes exchange_writes throttled".
run() {
  local count=$1 concurrency=$2 dir="$work/run-$1-$2"
  local url; url=$(emulator "$dir")
  LDAP2EXO__TENANT__TENANT_ID=00000000-0000-4000-8000-00000000e0e0 \
  LDAP2EXO__TENANT__CLIENT_ID=11111111-1111-4111-8111-111111111111 \
  LDAP2EXO__TENANT__CLIENT_SECRET=emulator-secret LDAP2EXO__TENANT__CA_FILE="$dir/ca.pem" \
  LDAP2EXO__TENANT__MAILBOX_SKU=EXCHANGESTANDARD LDAP2EXO__TENANT__USAGE_LOCATION=DE \
  LDAP2EXO__TENANT__ENDPOINTS__LOGIN="$url" LDAP2EXO__TENANT__ENDPOINTS__GRAPH="$url" \
  LDAP2EXO__TENANT__ENDPOINTS__EXCHANGE="$url" LDAP2EXO__TENANT__CONCURRENCY="$concurrency" \
  LDAP2EXO__STATE__PATH="$dir/state.db" LDAP2EXO_LOG=error LDAP2EXO__SAFETY__MAX_DELETES_PER_RUN=0 \
  BENCH_DIR="$dir" \
    target/release/examples/fixture_ldap --generate "$count" -- bash -c '
      start=$(date +%s.%N)
      target/release/ldap2exo sync --output "$BENCH_DIR/report.txt" || true
      end=$(date +%s.%N)
      echo "$start $end" > "$BENCH_DIR/times"'
  read -r start end <"$dir/times"
  local counters; counters=$(curl -sf --cacert "$dir/ca.pem" "$url/_emulator/counters")
  python3 - "$start" "$end" "$counters" "$dir/report.txt" <<'PY'
import json, sys, re
start, end, counters, report = float(sys.argv[1]), float(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
graph = sum(v["writes"] for k, v in counters["per_endpoint"].items() if not k.startswith("EXO "))
exo = sum(v["writes"] for k, v in counters["per_endpoint"].items() if k.startswith("EXO "))
done = re.search(r"Applied: (\d+) done", open(report).read())
print(f"{end-start:.2f} {done.group(1) if done else 0} {graph} {exo} {counters['total']['throttled']}")
PY
}

read -r secs done graph exo throttled < <(run "$n" 16)
read -r s_secs s_done _ _ _ < <(run "$n_seq" 1)
python3 - "$secs" "$done" "$graph" "$exo" "$throttled" "$s_secs" "$s_done" "$budget" "$latency" <<'PY'
import sys
secs, done, graph, exo, throttled, s_secs, s_done, budget, latency = sys.argv[1:]
secs, done, graph, exo, throttled = float(secs), int(done), int(graph), int(exo), int(throttled)
s_secs, s_done, budget = float(s_secs), int(s_done), int(budget)
share = max(graph, exo) / secs / budget
rate, s_rate = done / secs, s_done / s_secs
print(f"\nldap2exo tenant benchmark: budget {budget} writes/s per API, {latency} ms added latency")
print(f"concurrent (16 people at a time): {done} people provisioned in {secs:.1f} s = {rate:.1f} people/s")
print(f"  writes: Graph {graph}, Exchange {exo}; 429s received: {throttled}")
print(f"  throughput: {max(graph, exo) / secs:.1f} writes/s on the busier API = {share * 100:.0f}% of the budget (target >= 80%)")
print(f"one at a time: {s_done} people in {s_secs:.1f} s = {s_rate:.1f} people/s")
print(f"speed-up over one request at a time: {rate / s_rate:.1f}x")
PY
