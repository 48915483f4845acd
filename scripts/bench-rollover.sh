#!/usr/bin/env bash
# Benchmark of a term's rollover: N generated people (default 40,000) in slapd are provisioned
# into the tenant emulator, then CHANGES of them leave and CHANGES new ones arrive (default
# N/2 each) and one sync with the removal approval rolls the tenant over.
#
#   scripts/bench-rollover.sh [N] [CHANGES]
#
# The emulator runs in strict mode (404 window after a create, propagation between Exchange
# and Graph, at most 3 Exchange calls in flight) with a write budget per service, scaled tenfold
# from the rates ldap2exo's bill assumes (`[tenant.budget]`: Graph 20 writes/s, Microsoft's
# published figure; Exchange 5/s, a conservative choice, Microsoft publishes none) so the run
# ends on a 2-core machine. Exchange calls are short against the budget (3 slots of 8 ms carry
# 375 calls/s) on the assumption that at Microsoft, too, the budget binds before the 3
# concurrent calls do; with slow calls the slots bind instead and the share of the budget
# falls (30 + 20 ms, the earlier defaults, gave about 40 %).
#   BENCH_GRAPH_BUDGET      Graph writes per second (default 200)
#   BENCH_EXCHANGE_BUDGET   Exchange write cmdlets per second (default 50)
#   BENCH_LATENCY_MS        added to every answer of both services (default 3)
#   BENCH_EXCHANGE_MS       processing time of every cmdlet, inside Exchange's 3 slots, so
#                           an Exchange call takes LATENCY + this (default 5)
#   BENCH_CONCURRENCY       tenant.concurrency (default 16)
#   BENCH_PROVISION_FAST    when set, the initial provisioning runs at 2,000 writes/s per
#                           service and 1 ms latency (on 2 cores it is then bound by CPU,
#                           about twice as fast at 40,000); the budgets above apply from the
#                           plan on, so the rollover's figures are unchanged
#   BENCH_KEEP              when set, the work directory (counters, logs, state) is kept
#   BENCH_LOG               ldap2exo's log filter in the phases' *.err files (default error;
#                           the progress lines the report reads are always logged)
# Phases: load slapd, initial provisioning (sync), LDAP rollover (ldapmodify), `plan --output`,
# the rollover sync (`--max-deletes CHANGES`). Per phase it prints the wall time, requests and
# writes per service (the emulator's counters), the writes per second as a share of each
# budget, requests per changed person per service and ldap2exo's peak memory
# (GNU time), and the plan's estimate (`bill.estimated_seconds`) beside the measured sync.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-40000}"
changes="${2:-$((n / 2))}"
graph_budget="${BENCH_GRAPH_BUDGET:-200}"
exo_budget="${BENCH_EXCHANGE_BUDGET:-50}"
latency="${BENCH_LATENCY_MS:-3}"
exo_ms="${BENCH_EXCHANGE_MS:-5}"
concurrency="${BENCH_CONCURRENCY:-16}"
if [ -n "${BENCH_PROVISION_FAST:-}" ]; then
  prov_graph_budget=2000 prov_exo_budget=2000 prov_latency=1
else
  prov_graph_budget=$graph_budget prov_exo_budget=$exo_budget prov_latency=$latency
fi
if [ "$changes" -gt "$n" ]; then
  echo "CHANGES ($changes) cannot exceed N ($n)" >&2
  exit 2
fi
scripts/install-deps.sh
cargo build --quiet --release --locked --bin ldap2exo --example fixture_ldap
cargo build --quiet --release --locked -p ldap2exo-emulator --bin ldap2exo-emulator

work=$(mktemp -d)
emu="$work/emulator"
mkdir -p "$emu"
cleanup() {
  [ -f "$emu/pid" ] && kill "$(cat "$emu/pid")" 2>/dev/null
  if [ -n "${BENCH_KEEP:-}" ]; then echo "kept the benchmark's files in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

target/release/ldap2exo-emulator --listen 127.0.0.1:0 --url-out "$emu/url" --ca-out "$emu/ca.pem" \
  --tenant-name exampleedu --domain example.edu --domain staff.example.edu \
  --exchange-cmdlet-ms "$exo_ms" \
  --sku "4b9405b0-7788-4568-add1-99614e613b69:EXCHANGESTANDARD:$((2 * n + 1000)):exchange" \
  >"$emu/log" 2>&1 &
echo $! >"$emu/pid"
for _ in $(seq 100); do [ -s "$emu/url" ] && break; sleep 0.1; done
url=$(cat "$emu/url")

# The phases run inside fixture_ldap, while its slapd is up. Each records its start and end,
# the emulator's counters (reset before) and, for ldap2exo, GNU time's report.
cat >"$work/phases.sh" <<'SH'
set -euo pipefail
date +%s.%N >"$W/loaded"
counters() { curl -sf --cacert "$CA" "$URL/_emulator/counters" >"$W/$1.counters"; }
# faults GRAPH_BUDGET EXCHANGE_BUDGET LATENCY_MS: the emulator's write budgets (1 s windows).
faults() {
  curl -sf --cacert "$CA" -X PUT "$URL/_emulator/faults" -H 'content-type: application/json' -d "{
    \"graph_write_budget\": {\"limit\": $1, \"window_ms\": 1000},
    \"exchange_write_budget\": {\"limit\": $2, \"window_ms\": 1000},
    \"latency_ms\": $3, \"fractional_retry_after\": true}" >/dev/null
}
phase() {
  local name=$1; shift
  curl -sf --cacert "$CA" -X POST "$URL/_emulator/counters/reset" >/dev/null
  date +%s.%N >"$W/$name.start"
  local rc=0
  /usr/bin/time -v -o "$W/$name.time" "$@" >"$W/$name.out" 2>"$W/$name.err" || rc=$?
  date +%s.%N >"$W/$name.end"
  echo "$rc" >"$W/$name.rc"
  counters "$name"
}
faults $PROV_GB $PROV_EB $PROV_LAT
phase provision target/release/ldap2exo sync --output "$W/provision.txt"
faults $GB $EB $LAT

# Rollover in LDAP: the first CHANGES generated people leave, CHANGES new ones (seed 2) arrive.
date +%s.%N >"$W/ldap.start"
python3 - "$CHANGES" >"$W/leavers.ldif" <<'PY'
import sys
for i in range(int(sys.argv[1])):
    print(f"dn: uid=g1x{i:06d},ou=generated,dc=example,dc=edu\nchangetype: delete\n")
PY
target/release/examples/fixture_ldap --print-generated "$CHANGES" 2 >"$W/arrivals.ldif"
for f in leavers arrivals; do
  add=""; [ $f = arrivals ] && add="-a"
  /usr/bin/ldapmodify -x -e relax $add -H "$FIXTURE_LDAP_URL" -D "$FIXTURE_ROOT_DN" \
    -w "$FIXTURE_ROOT_PASSWORD" -f "$W/$f.ldif" >"$W/ldap-$f.out"
done
date +%s.%N >"$W/ldap.end"

phase plan target/release/ldap2exo plan --max-deletes "$CHANGES" --output "$W/plan.json"
phase rollover target/release/ldap2exo sync --max-deletes "$CHANGES" --output "$W/rollover.txt"
SH

started=$(date +%s.%N)
LDAP2EXO__TENANT__TENANT_ID=00000000-0000-4000-8000-00000000e0e0 \
LDAP2EXO__TENANT__CLIENT_ID=11111111-1111-4111-8111-111111111111 \
LDAP2EXO__TENANT__CLIENT_SECRET=emulator-secret LDAP2EXO__TENANT__CA_FILE="$emu/ca.pem" \
LDAP2EXO__TENANT__MAILBOX_SKU=EXCHANGESTANDARD LDAP2EXO__TENANT__USAGE_LOCATION=DE \
LDAP2EXO__TENANT__ENDPOINTS__LOGIN="$url" LDAP2EXO__TENANT__ENDPOINTS__GRAPH="$url" \
LDAP2EXO__TENANT__ENDPOINTS__EXCHANGE="$url" LDAP2EXO__TENANT__CONCURRENCY="$concurrency" \
LDAP2EXO__TENANT__BUDGET__GRAPH_WRITES_PER_SECOND="$graph_budget" \
LDAP2EXO__TENANT__BUDGET__EXCHANGE_REQUESTS_PER_SECOND="$exo_budget" \
LDAP2EXO__STATE__PATH="$work/state.db" LDAP2EXO_LOG="${BENCH_LOG:-error},ldap2exo::progress=debug" \
W="$work" URL="$url" CA="$emu/ca.pem" CHANGES="$changes" \
GB="$graph_budget" EB="$exo_budget" LAT="$latency" \
PROV_GB="$prov_graph_budget" PROV_EB="$prov_exo_budget" PROV_LAT="$prov_latency" \
  target/release/examples/fixture_ldap --generate "$n" -- bash "$work/phases.sh" 2>"$work/fixture.err" ||
  { cat "$work/fixture.err" >&2; echo "the benchmark's phases failed" >&2; exit 1; }
echo "$started" >"$work/begin"

python3 - "$work" "$n" "$changes" "$graph_budget" "$exo_budget" "$latency" "$exo_ms" "$concurrency" \
  "$prov_graph_budget" "$prov_exo_budget" "$prov_latency" <<'PY'
import json, re, sys
w, n, changes, gb, eb, lat, exo_ms, conc, pgb, peb, plat = sys.argv[1:]
n, changes, gb, eb, pgb, peb = int(n), int(changes), int(gb), int(eb), int(pgb), int(peb)
rd = lambda f: open(f"{w}/{f}").read().strip()
secs = lambda p: float(rd(f"{p}.end")) - float(rd(f"{p}.start"))

def service(label):
    if label.startswith("EXO ") or label.startswith("POST /adminapi"):
        return "exchange"
    if "oauth2" in label:
        return None
    return "graph"

def counts(p):
    c = json.loads(rd(f"{p}.counters"))
    out = {s: {"requests": 0, "writes": 0, "throttled": 0, "batched": 0} for s in ("graph", "exchange")}
    for label, v in c["per_endpoint"].items():
        s = service(label)
        if s:
            for k in ("requests", "writes", "throttled"):
                out[s][k] += v.get(k, 0)
            out[s]["batched"] += v.get("batched", 0)
    return out

def rss(p):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", rd(f"{p}.time"))
    return int(m.group(1)) / 1024 if m else float("nan")

def applied(p):
    m = re.search(r"Applied: (\d+) done, (\d+) pending, (\d+) skipped, (\d+) conflicts, (\d+) failed", rd(f"{p}.txt"))
    return tuple(int(x) for x in m.groups()) if m else None

print(f"\nldap2exo rollover benchmark: {n} people, {changes} leavers and {changes} arrivals")
print(f"emulator (strict): Graph {gb} writes/s, Exchange {eb} writes/s (1 s windows); "
      f"latency {lat} ms on every answer, +{exo_ms} ms per cmdlet inside Exchange's 3 slots; "
      f"tenant.concurrency {conc}")
if (pgb, peb, plat) != (gb, eb, lat):
    print(f"initial provisioning at Graph {pgb} writes/s, Exchange {peb} writes/s, latency {plat} ms "
          f"(BENCH_PROVISION_FAST); the budgets above from the plan on")
load = float(rd("loaded")) - float(rd("begin"))
print(f"\nload slapd ({n} generated people): {load:.1f} s")
print(f"LDAP rollover (ldapmodify: {changes} deletes, {changes} adds): {secs('ldap'):.1f} s")

peak = 0.0
for p, title, changed in (("provision", "initial provisioning (sync)", None),
                          ("plan", "plan --output", None),
                          ("rollover", "rollover sync --max-deletes", 2 * changes)):
    t, c, mem = secs(p), counts(p), rss(p)
    peak = max(peak, mem)
    bound = {"graph": pgb, "exchange": peb} if p == "provision" else {"graph": gb, "exchange": eb}
    rc = rd(f"{p}.rc")
    a = applied(p) if p != "plan" else None
    if p == "provision" and a:
        changed = a[0] + a[1]
    head = f"\n{title}: {t:.1f} s, peak memory {mem:.0f} MB, exit {rc}"
    if a:
        head += f"; applied: {a[0]} done, {a[1]} pending, {a[2]} skipped, {a[3]} conflicts, {a[4]} failed"
    print(head)
    for s in ("graph", "exchange"):
        v = c[s]
        rate = v["writes"] / t if t else 0
        line = (f"  {s:8} requests {v['requests']:7} (of which in $batch {v['batched']:6}), "
                f"writes {v['writes']:7}, 429s {v['throttled']:6}, "
                f"{rate:6.1f} writes/s = {100 * rate / bound[s]:3.0f} % of its budget")
        if changed:
            http = v["requests"] - v["batched"]
            line += f", {http / changed:.2f} requests per changed person"
            if v["batched"]:
                line += f" ({v['requests'] / changed:.2f} counting each batched one)"
        print(line)
    # Where the time went: ldap2exo logs each phase's end (progress.rs).
    spans = re.findall(r'phase finished phase="?(\w+)"? elapsed_ms=(\d+) next="?(\w+)"?', rd(f"{p}.err"))
    if spans:
        parts = [f"{ph} {int(ms) / 1000:.1f} s" for ph, ms, _ in spans if ph != "starting" or int(ms) > 50]
        rest = t - sum(int(ms) for _, ms, _ in spans) / 1000
        last = spans[-1][2]
        parts.append(f"{'commits, report' if last == 'done' else last} and exit {rest:.1f} s")
        print("  phases: " + ", ".join(parts))
    # Where the requests went, so the next person sees what to cut.
    per = json.loads(rd(f"{p}.counters"))["per_endpoint"]
    for label, v in sorted(per.items(), key=lambda kv: -kv[1].get("requests", 0)):
        if service(label) and v.get("requests", 0) and p != "plan":
            extra = f", {v['requests'] / changed:.2f} per changed person" if changed else ""
            print(f"    {label:40} {v['requests']:7} requests, {v.get('writes', 0):7} writes, "
                  f"{v.get('throttled', 0):5} 429s{extra}")

plan = json.loads(rd("plan.json"))
est = (plan.get("bill") or {}).get("estimated_seconds")
print(f"\nplan estimate of the rollover: {('%.0f s' % est) if est is not None else 'n/a'}; measured {secs('rollover'):.0f} s")
print(f"peak memory of ldap2exo: {peak:.0f} MB (target < 300 MB)")
PY
