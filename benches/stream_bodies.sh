#!/usr/bin/env bash
# What large and hostile classification-stream bodies cost one core-api process: peak
# resident memory for a 64 MiB JSON array and the same rows as NDJSON, and how long two
# 8 MiB bodies of blank lines take while /healthz is probed (see the header of
# benches/src/bin/stream_bodies.rs). The server runs on core 0, the client on core 1.
#
#   bash benches/stream_bodies.sh
#   CORE_API_BIN="/tmp/core-api-old ./target/release/core-api" bash benches/stream_bodies.sh
#                                       # builds side by side in one run
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-18580}
KEY=bench-key-0123456789abcdef
cargo build --release --quiet -p core-api -p benches
BINS=${CORE_API_BIN:-./target/release/core-api}
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
echo "== $(date -u +%F) on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
# A fresh server for every case, so no case starts with another's memory.
for bin in $BINS; do
  echo "== server: $bin"
  for case in array ndjson blank; do
    API_KEYS="bench:$KEY" PORT=$PORT DATA_DIR="$work/data" RUST_LOG=warn RATE_PER_KEY=100000 \
      taskset -c 0 "$bin" > "$work/server.log" 2>&1 &
    server=$!
    for _ in $(seq 100); do
      curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
      sleep 0.1
    done
    taskset -c 1 ./target/release/stream_bodies "http://127.0.0.1:$PORT" "$KEY" "$server" "$case"
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=
    rm -rf "$work/data"
  done
done
