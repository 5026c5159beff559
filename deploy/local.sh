#!/usr/bin/env bash
# The distributed shape (deploy/compose.yaml) as local processes, for machines without a
# container engine, and the end-to-end check the test command runs:
#
#   Redis (its own, on a free port, append-only on) · osmem-server (an in-memory
#   OpenSearch-compatible server standing in for Elasticsearch: there is none here) · the
#   bureau simulator · two integrations instances · two core-api instances
#
# then starts an analysis on core-api #1, follows its SSE stream from core-api #2, and checks
# the stored transactions through #2's query API against the stream's counts; then starts a
# slower one on #1, kills #1 (SIGKILL) mid-pages and checks #2 takes it over to the end.
#
#   bash deploy/local.sh            # KEEP=1 leaves everything running and prints the URLs
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
cargo build --release --quiet -p core-api -p integrations
bin=$root/target/release
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url
  for _ in $(seq 150); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "not answering: $1" >&2; return 1
}
fail() { echo "deploy/local.sh: FAILED: $*" >&2; for f in "$work"/*.log; do echo "--- $f"; tail -5 "$f"; done >&2; exit 1; }

# Redis, as compose runs it: append-only persistence.
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --appendonly yes --save "" --dir "$work" \
  --logfile "$work/redis.log" --daemonize no &
pids+=($!)
export REDIS_URL="redis://127.0.0.1:$redis_port"

# The search server.
osmem=${OSMEM_SERVER_BIN:-}
if [ -z "$osmem" ]; then
  [ -x .venv/bin/python ] || { python3 -m venv .venv && .venv/bin/pip install -q osmem-server==0.1.6; }
  osmem=$(.venv/bin/python -c "import osmem_server; print(osmem_server.resolve_binary())")
fi
es_port=$(free_port)
"$osmem" -addr "127.0.0.1:$es_port" -no-stdin-watch -no-ja > "$work/osmem.log" 2>&1 &
pids+=($!)
export ELASTICSEARCH_URL="http://127.0.0.1:$es_port"
echo "== search: osmem-server at $ELASTICSEARCH_URL (OpenSearch-compatible, in memory; not Elasticsearch)"

# The bureau simulator (the partners; the real bureaus cannot be reached from here).
sim_port=$(free_port)
SIMULATOR_ADMIN_TOKEN="local-simulator-admin-0123456789" \
  "$bin/integrations" simulate --port "$sim_port" --settings '{"latency_ms": 20}' > "$work/simulator.log" 2>&1 &
pids+=($!)
sed -e "s#http://127.0.0.1:8091#http://127.0.0.1:$sim_port#" -e '/token_env/d' \
  integrations/integrations.example.toml > "$work/partners.toml"

# Two integrations instances sharing Redis (permits and retry queue), each answering only
# the core API (its caller secret; callbacks to 127.0.0.1 only).
export KEY_PREFIX="local-$$"
export INTEGRATIONS_SECRET="local-integrations-secret-0123456789"
export QUEUE_KEY="local-queue-key-$$-0123456789abcdef-0123456789"
export METRICS_TOKEN="local-metrics-token-$$-0123456789"
int_ports=()
for i in 1 2; do
  p=$(free_port); int_ports+=("$p")
  RUST_LOG=warn "$bin/integrations" serve --config "$work/partners.toml" --port "$p" > "$work/integrations-$i.log" 2>&1 &
  pids+=($!)
done

# Two core-api instances: Redis event log and snapshots, the search store, each with its own
# integrations instance; shared keys so either serves the other's analyses and tokens.
export API_KEYS="acme:local-key-0123456789abcdef"
export EVENTS_TOKEN_KEY="local-events-token-key-0123456789" CPF_HASH_KEY="local-cpf-hash-key-0123456789"
export ELASTICSEARCH_INDEX="local-$$-transactions"
api_ports=() api_pids=()
for i in 1 2; do
  p=$(free_port); api_ports+=("$p")
  HOST=127.0.0.1 PORT=$p PUBLIC_URL="http://127.0.0.1:$p" INTEGRATIONS_URL="http://127.0.0.1:${int_ports[$((i-1))]}" \
    DATA_DIR="$work/data-$i" RUN_LEASE_MS=2000 RUST_LOG=warn "$bin/core-api" > "$work/core-api-$i.log" 2>&1 &
  pids+=($!) api_pids+=($!)
done
for p in "${int_ports[@]}"; do wait_http "http://127.0.0.1:$p/healthz" || fail "integrations on $p"; done
for p in "${api_ports[@]}"; do wait_http "http://127.0.0.1:$p/readyz" || fail "core-api on $p"; done
a="http://127.0.0.1:${api_ports[0]}" b="http://127.0.0.1:${api_ports[1]}"
echo "== core-api at $a and $b; integrations at ${int_ports[*]}; simulator at $sim_port; Redis at $redis_port"

if [ -n "${KEEP:-}" ]; then
  echo "== running; API key ${API_KEYS#*:}; Ctrl-C stops everything"
  wait
fi

key=${API_KEYS#*:}
started=$(curl -sf -H "authorization: Bearer $key" -H 'content-type: application/json' \
  -d '{"cpf": "529.982.247-25"}' "$a/v1/analyses") || fail "starting an analysis on #1"
id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$started")
events_url=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["events_url"])' <<<"$started")
echo "== analysis $id started on #1; following it on #2"
curl -sfN --max-time 60 "$b$events_url" > "$work/events.txt" || fail "the SSE stream on #2"
grep -q "^event: analysis.completed" "$work/events.txt" || fail "no analysis.completed on #2: $(tail -3 "$work/events.txt")"
stored=$(grep -A1 "^event: transactions.stored" "$work/events.txt" | tail -1 | python3 -c 'import json,sys; print(json.loads(sys.stdin.read()[6:])["stored"])')
count=0 cursor=""
while :; do
  page=$(curl -sf -H "authorization: Bearer $key" "$b/v1/analyses/$id/transactions?limit=1000$cursor") || fail "the query API on #2"
  read -r n next < <(python3 -c 'import json,sys; p=json.load(sys.stdin); print(len(p["transactions"]), p.get("next_cursor",""))' <<<"$page")
  count=$((count + n))
  [ -n "$next" ] || break
  cursor="&cursor=$next"
done
categories=$(curl -sf -H "authorization: Bearer $key" "$b/v1/analyses/$id/categories") || fail "categories on #2"
in_categories=$(python3 -c 'import json,sys; print(sum(c["count"] for c in json.load(sys.stdin)["categories"]))' <<<"$categories")
echo "== stream said $stored stored; the store returns $count transactions, $in_categories in categories"
[ "$stored" -gt 0 ] && [ "$count" = "$stored" ] && [ "$in_categories" = "$stored" ] || fail "stored counts disagree"
# What Prometheus scrapes: every instance's /metrics with the metrics token, and only with it.
for target in "$a" "$b" "http://127.0.0.1:${int_ports[0]}" "http://127.0.0.1:${int_ports[1]}"; do
  curl -sf -H "authorization: Bearer $METRICS_TOKEN" "$target/metrics" | grep -q "^# TYPE " || fail "metrics of $target with the token"
  code=$(curl -s -o /dev/null -w '%{http_code}' "$target/metrics")
  [ "$code" = 401 ] || fail "metrics of $target without the token answered $code"
done
echo "== every instance's metrics answer the metrics token only"
# The instance running an analysis dies mid-pages: the other takes it over to the end. The
# bureaus slow down first (300 ms a request, about 2,000 movements: five pages).
curl -sf -X PUT -H "authorization: Bearer local-simulator-admin-0123456789" -H 'content-type: application/json' \
  -d '{"latency_ms": 300, "movements_per_day": 22}' "http://127.0.0.1:$sim_port/admin/settings" > /dev/null \
  || fail "slowing the simulator"
started=$(curl -sf -H "authorization: Bearer $key" -H 'content-type: application/json' \
  -d '{"cpf": "111.444.777-35"}' "$a/v1/analyses") || fail "starting the second analysis on #1"
id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$started")
events_url=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["events_url"])' <<<"$started")
curl -sfN --max-time 90 "$b$events_url" > "$work/takeover.txt" &
follower=$!
for _ in $(seq 300); do
  n=$(curl -sf -H "authorization: Bearer $key" "$b/v1/analyses/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["stored"])') || n=0
  [ "$n" -gt 0 ] && break
  sleep 0.05
done
[ "$n" -gt 0 ] || fail "no page of $id stored within 15 s"
kill -9 "${api_pids[0]}"
wait "${api_pids[0]}" 2>/dev/null || true
echo "== killed core-api #1 (SIGKILL) after $n transactions of $id were stored; following on #2"
wait "$follower" || fail "the SSE stream on #2 after the kill: $(tail -3 "$work/takeover.txt")"
grep -q "^event: analysis.resumed" "$work/takeover.txt" || fail "no analysis.resumed on #2"
grep -q "^event: analysis.completed" "$work/takeover.txt" || fail "no analysis.completed on #2: $(tail -3 "$work/takeover.txt")"
python3 - "$work/takeover.txt" <<'PY' || fail "event ids on #2 are not 1..n once each"
import sys
ids = [int(l[4:]) for l in open(sys.argv[1]) if l.startswith("id: ")]
sys.exit(0 if ids == list(range(1, len(ids) + 1)) else 1)
PY
echo "== #2 took the analysis over and completed it: event ids 1..$(grep -c '^id: ' "$work/takeover.txt"), once each"
echo "== deploy/local.sh: passed"
