#!/usr/bin/env bash
# Benchmark of incremental runs (README "Incremental runs"): N generated people (default
# 10,000) in slapd with syncprov are synced into the tenant emulator with
# `ldap.content_sync` and `tenant.incremental_read` on; then it times
#   - a no-op cycle (`sync` when nothing changed: it takes the last plan, README "Quiet runs"),
#   - a cycle with CHANGED people's passwords changed in LDAP (the server sends their entries
#     again, with nothing ldap2exo reads changed: it stays quiet),
#   - a cycle with CHANGED people (default 10) renamed in LDAP, and another right after it
#     (planned partially, README "Partial plans": the first completes the kept plan of a
#     quiet run, the second that of the first, whose own writes it reads back),
#   - for comparison, a no-op cycle with both switches off (full reads),
# and prints per cycle the wall time, ldap2exo's peak memory, the LDAP searches it sent (its
# log), the requests Graph and Exchange answered (the emulator's counters) and the actions
# applied.
#
#   scripts/bench-incremental.sh [N] [CHANGED]
#
# The emulator runs with 2,000 writes/s per service and 1 ms latency, so the provisioning is
# bound by CPU (about 15 s per 1,000 people on 2 cores); the cycles measured send few writes.
#   BENCH_EXCHANGE_MARGIN  tenant.exchange_margin_seconds (default 5 here, 900 in production:
#                          with 900 every cycle within 15 minutes of the provisioning lists
#                          every recipient again)
#   BENCH_KEEP   when set, the work directory (counters, logs, state) is kept
#   BENCH_LOG    LDAP2EXO_LOG for every cycle (default: warnings, the reads' info lines the
#                table counts and the phase timings it prints), e.g. `info,ldap2exo=debug`
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-10000}"
changed="${2:-10}"
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
  --sku "4b9405b0-7788-4568-add1-99614e613b69:EXCHANGESTANDARD:$((2 * n + 1000)):exchange" \
  >"$emu/log" 2>&1 &
echo $! >"$emu/pid"
for _ in $(seq 100); do [ -s "$emu/url" ] && break; sleep 0.1; done
url=$(cat "$emu/url")

cat >"$work/phases.sh" <<'SH'
set -euo pipefail
curl -sf --cacert "$CA" -X PUT "$URL/_emulator/faults" -H 'content-type: application/json' -d '{
  "graph_write_budget": {"limit": 2000, "window_ms": 1000},
  "exchange_write_budget": {"limit": 2000, "window_ms": 1000},
  "latency_ms": 1, "fractional_retry_after": true}' >/dev/null
phase() {
  local name=$1; shift
  curl -sf --cacert "$CA" -X POST "$URL/_emulator/counters/reset" >/dev/null
  date +%s.%N >"$W/$name.start"
  local rc=0
  /usr/bin/time -v -o "$W/$name.time" "$@" >"$W/$name.out" 2>"$W/$name.err" || rc=$?
  date +%s.%N >"$W/$name.end"
  echo "$rc" >"$W/$name.rc"
  curl -sf --cacert "$CA" "$URL/_emulator/counters" >"$W/$name.counters"
}
l2e="target/release/ldap2exo sync --format json"
phase provision $l2e
# The first incremental cycle reads back the provisioning's own writes, and the emulator
# finishes what Exchange does after a write (mailboxes, propagation) for a while longer: real
# runs until one reads no change in the tenant and plans nothing, which keeps its plan.
for i in 1 2 3 4 5; do
  phase "settle$i" $l2e
  python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))
sys.exit(0 if not p["actions"] and p["tenant_read"]["changed"] == 0 else 1)' "$W/settle$i.out" && break
done
echo "$i" >"$W/settle.runs"
# modify NAME ATTRIBUTE VALUE: sets ATTRIBUTE of the first CHANGED generated people to VALUE
# followed by their number.
modify() {
  python3 - "$CHANGED" "$2" "$3" >"$W/$1.ldif" <<'PY'
import sys
n, attribute, value = int(sys.argv[1]), sys.argv[2], sys.argv[3]
for i in range(n):
    print(f"dn: uid=g1x{i:06d},ou=generated,dc=example,dc=edu\nchangetype: modify\n"
          f"replace: {attribute}\n{attribute}: {value}{i}\n")
PY
  /usr/bin/ldapmodify -x -H "$FIXTURE_LDAP_URL" -D "$FIXTURE_ROOT_DN" -w "$FIXTURE_ROOT_PASSWORD" \
    -f "$W/$1.ldif" >"$W/$1.ldapmodify"
}
phase noop $l2e
modify passwords userPassword new-secret-
phase passwords $l2e
modify changes displayName "Renamed Person "
phase changed $l2e
modify changes2 displayName "Renamed Again "
phase changed2 $l2e
phase full env LDAP2EXO__LDAP__CONTENT_SYNC=false LDAP2EXO__TENANT__INCREMENTAL_READ=false $l2e
SH

LDAP2EXO__TENANT__TENANT_ID=00000000-0000-4000-8000-00000000e0e0 \
LDAP2EXO__TENANT__CLIENT_ID=11111111-1111-4111-8111-111111111111 \
LDAP2EXO__TENANT__CLIENT_SECRET=emulator-secret LDAP2EXO__TENANT__CA_FILE="$emu/ca.pem" \
LDAP2EXO__TENANT__MAILBOX_SKU=EXCHANGESTANDARD LDAP2EXO__TENANT__USAGE_LOCATION=DE \
LDAP2EXO__TENANT__ENDPOINTS__LOGIN="$url" LDAP2EXO__TENANT__ENDPOINTS__GRAPH="$url" \
LDAP2EXO__TENANT__ENDPOINTS__EXCHANGE="$url" \
LDAP2EXO__TENANT__BUDGET__GRAPH_WRITES_PER_SECOND=2000 \
LDAP2EXO__TENANT__BUDGET__EXCHANGE_REQUESTS_PER_SECOND=2000 \
LDAP2EXO__LDAP__CONTENT_SYNC=true LDAP2EXO__TENANT__INCREMENTAL_READ=true \
LDAP2EXO__TENANT__EXCHANGE_MARGIN_SECONDS="${BENCH_EXCHANGE_MARGIN:-5}" \
LDAP2EXO__STATE__PATH="$work/state.db" LDAP2EXO_LOG="${BENCH_LOG:-warn,ldap2exo::source=info,ldap2exo::inventory=info,ldap2exo::progress=debug,ldap2exo::commands::run=debug}" \
W="$work" URL="$url" CA="$emu/ca.pem" CHANGED="$changed" \
  target/release/examples/fixture_ldap --generate "$n" --content-sync -- bash "$work/phases.sh" \
  2>"$work/fixture.err" ||
  { cat "$work/fixture.err" >&2; echo "the benchmark's phases failed" >&2; exit 1; }

python3 - "$work" "$n" "$changed" <<'PY'
import json, re, sys
w, n, changed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rd = lambda f: open(f"{w}/{f}").read()
secs = lambda p: float(rd(f"{p}.end")) - float(rd(f"{p}.start"))

def requests(p):
    out = {"graph": 0, "exchange": 0}
    for label, v in json.loads(rd(f"{p}.counters"))["per_endpoint"].items():
        if "oauth2" in label:
            continue
        out["exchange" if label.startswith("EXO ") else "graph"] += v.get("requests", 0)
    return out

def ldap_searches(p):
    err = rd(f"{p}.err")
    s = sum(int(x) for x in re.findall(r"refreshed LDAP content.*? searches=(\d+)", err))
    # A paged read logs no count of its own: one search per page plus one per rule.
    return s if s else "paged"

def rss(p):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", rd(f"{p}.time"))
    return int(m.group(1)) / 1024

def plan(p):
    return json.loads(rd(f"{p}.out"))

print(f"\nldap2exo incremental benchmark: {n} generated people (plus the campus fixture)")
print(f"{'cycle':34} {'wall s':>8} {'peak MB':>8} {'LDAP searches':>14} {'Graph req':>10} "
      f"{'Exchange req':>13} {'actions':>8}  reads (LDAP / tenant)")
for p, title in (("provision", "initial provisioning (full reads)"),
                 ("settle1", "first incremental (own writes)"),
                 ("noop", "no-op, incremental"),
                 ("passwords", f"{changed} passwords changed, incremental"),
                 ("changed", f"{changed} people changed, incremental"),
                 ("changed2", f"{changed} changed again, incremental"),
                 ("full", "no-op, full reads (switches off)")):
    try:
        r, pl = requests(p), plan(p)
    except ValueError:
        print(f"{title:34} {secs(p):8.2f}  failed (exit {rd(p + '.rc').strip()}): {rd(p + '.err').strip().splitlines()[-1]}")
        continue
    modes = (pl["source"].get("read", {}).get("mode", "paged"),
             (pl.get("tenant_read") or {}).get("mode", "full listing"))
    if pl.get("unchanged_since_run"):
        modes = (modes[0], modes[1] + f", plan of run {pl['unchanged_since_run']} taken")
    if pl.get("partial"):
        modes = (modes[0], modes[1] + f", partial: {pl['partial']['anchors']} people planned")
    print(f"{title:34} {secs(p):8.2f} {rss(p):8.0f} {str(ldap_searches(p)):>14} {r['graph']:10} "
          f"{r['exchange']:13} {len(pl['actions']):8}  {modes[0]} / {modes[1]}  (exit {rd(p + '.rc').strip()})")
def phases(p):
    """Milliseconds per phase from the run's `phase finished` lines (the last one ends when
    the actions are applied), and the rest of the wall time (commits, report, exit)."""
    ms = {}
    for name, n in re.findall(r'phase finished phase="?(\w+)"? elapsed_ms=(\d+)', rd(f"{p}.err")):
        ms[name] = ms.get(name, 0) + int(n)
    ms.pop("starting", None)
    base = re.findall(r'base for partial planning left elapsed_ms=(\d+)', rd(f"{p}.err"))
    ms["base"] = sum(int(b) for b in base)
    ms["rest"] = max(0, round(secs(p) * 1000) - sum(ms.values()))
    return ", ".join(f"{k} {v}" for k, v in ms.items())

print("\nwhere each cycle's time went, ms (phases from ldap2exo's log; base = keeping the plan "
      "for partial planning; rest = commits, report, exit):")
for p, title in (("provision", "provisioning"), ("settle1", "first incremental"),
                 ("noop", "no-op, incremental"), ("passwords", f"{changed} passwords"),
                 ("changed", f"{changed} changed"), ("changed2", f"{changed} changed again"),
                 ("full", "no-op, full reads")):
    print(f"  {title:22} {phases(p)}")
settled = int(rd("settle.runs"))
print(f"(settling took {settled} incremental runs until the tenant showed no change, "
      f"{sum(secs(f'settle{i}') for i in range(1, settled + 1)):.1f} s in all)")
PY
