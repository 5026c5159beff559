#!/usr/bin/env bash
# 10,000 SSE clients on one core-api instance: memory per idle client and event delivery
# latency, in two shapes measured in the same run, then the machine's floor:
#   1. one analysis followed by every client (the worst case: each event goes to all 10,000
#      at the same instant); the bundled simulator answers after 8 s, so the analysis is idle
#      while the clients connect;
#   2. the same on the Redis event log (REDIS_URL, 127.0.0.1:6379 by default, under a key
#      prefix of its own): every client is fed from the instance's one reader of the stream;
#   3. ANALYSES analyses (1,000 by default), CLIENTS/ANALYSES clients on each: the ordinary
#      day, where each screen follows its own analysis. A separate simulator answers after
#      4 to 12 s (so the answers spread as real partners' do) with 180 movements per history,
#      and the partner limits are raised so the bureaus, not the service, set the pace.
# The server is pinned to core 0; the generator (and the simulator) to core 1.
#
#   bash benches/sse_load.sh            # CLIENTS=10000 ANALYSES=1000 by default
#   SHAPES="one-analysis" CORE_API_BIN=/tmp/core-api-old bash benches/sse_load.sh
#                                       # some shapes only, or another build of the server
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-10000}
ANALYSES=${ANALYSES:-1000}
PORT=${PORT:-18480}
KEY=bench-key-0123456789abcdef
SHAPES=${SHAPES:-one-analysis one-analysis-redis many-analyses floor}
CORE_API_BIN=${CORE_API_BIN:-./target/release/core-api}
wants() { [[ " $SHAPES " == *" $1 "* ]]; }
cargo build --release --quiet -p core-api -p integrations -p benches
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n "$(ulimit -Hn)"

# run_once NAME ANALYSES [ENV...]: starts a fresh server with ENV, runs the generator, stops it.
run_once() {
  local name=$1 analyses=$2
  shift 2
  echo "== $name: $CLIENTS clients over $analyses analyses"
  env "$@" API_KEYS="bench:$KEY" PORT=$PORT DATA_DIR="$work/data-$name" RUST_LOG=warn \
    RATE_PER_KEY=100000 taskset -c 0 "$CORE_API_BIN" > "$work/server-$name.log" 2>&1 &
  local server=$!
  pids+=("$server")
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
    sleep 0.1
  done
  taskset -c 1 ./target/release/sse_load "http://127.0.0.1:$PORT" "$KEY" "$CLIENTS" "$server" \
    "$analyses"
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
}

cat > "$work/one.toml" <<TOML
[simulator]
latency_ms = 8000
latency_jitter_ms = 0
movements_per_day = 20.0
TOML
if wants one-analysis; then
  run_once one-analysis 1 CORE_API_CONFIG="$work/one.toml"
fi
if wants one-analysis-redis; then
  run_once one-analysis-redis 1 CORE_API_CONFIG="$work/one.toml" \
    REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}" KEY_PREFIX="sse-bench-$$" \
    EVENTS_TOKEN_KEY="sse-bench-events-key-0123456789" CPF_HASH_KEY="sse-bench-hash-key-0123456789" \
    QUEUE_KEY="sse-bench-queue-key-0123456789abcdef0123"
fi

if wants many-analyses; then
  sim_port=$((PORT + 2))
  taskset -c 1 ./target/release/integrations simulate --port "$sim_port" \
    --settings '{"latency_ms": 4000, "latency_jitter_ms": 8000, "movements_per_day": 2.0}' \
    > "$work/simulator.log" 2>&1 &
  pids+=("$!")
  {
    for kind in consumer rating movements; do
      cat <<TOML
[[partners]]
name = "$kind-sim"
kind = "$kind"
base_url = "http://127.0.0.1:$sim_port"
max_concurrency = 5000
rate_per_sec = 10000
timeout_ms = 20000
TOML
    done
  } > "$work/partners.toml"
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$sim_port/" && break
    sleep 0.1
  done
  run_once many-analyses "$ANALYSES" PARTNERS_CONFIG="$work/partners.toml" ANALYSIS_DEADLINE_SECS=120
fi

# The machine's floor, in the same run and on the same cores: the bare write loop, no HTTP,
# no runtime, no channels, every client written once per event.
if wants floor; then
  echo "floor (one blocking write per client per event, $CLIENTS loopback connections):"
  taskset -c 0 ./target/release/sse_floor write $((PORT + 1)) "$CLIENTS" &
  writer=$!
  taskset -c 1 ./target/release/sse_floor read $((PORT + 1)) "$CLIENTS"
  wait $writer
fi
