#!/usr/bin/env bash
# 10,000 SSE clients on one core-api instance: memory per idle client and event delivery
# latency. Starts the release server (pinned to core 0) with the bundled simulator answering
# after 8 s (so the analysis is idle while the clients connect, then events flow to all of
# them), and the load generator pinned to core 1.
#
#   bash benches/sse_load.sh            # CLIENTS=10000 by default
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-10000}
PORT=${PORT:-18480}
KEY=bench-key-0123456789abcdef
cargo build --release --quiet -p core-api -p benches
work=$(mktemp -d)
cat > "$work/core-api.toml" <<TOML
[simulator]
latency_ms = 8000
latency_jitter_ms = 0
movements_per_day = 20.0
TOML
ulimit -n "$(ulimit -Hn)"
CORE_API_CONFIG="$work/core-api.toml" API_KEYS="bench:$KEY" PORT=$PORT DATA_DIR="$work/data" \
  RUST_LOG=warn RATE_PER_KEY=100000 taskset -c 0 ./target/release/core-api > "$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
  sleep 0.1
done
# The server gets core 0 and the generator core 1, so neither steals the other's time.
taskset -c 1 ./target/release/sse_load "http://127.0.0.1:$PORT" "$KEY" "$CLIENTS" "$server"
kill $server 2>/dev/null || true
# The machine's floor, in the same run and on the same cores: the bare write loop, no HTTP,
# no runtime, no channels.
echo "floor (one blocking write per client per event, $CLIENTS loopback connections):"
taskset -c 0 ./target/release/sse_floor write $((PORT + 1)) "$CLIENTS" &
writer=$!
taskset -c 1 ./target/release/sse_floor read $((PORT + 1)) "$CLIENTS"
wait $writer
