#!/usr/bin/env bash
# The whole test suite, as the README's quick start runs it: formatting, lints, every test of
# the workspace, then the distributed shape as local processes (deploy/local.sh). Tests use a
# real Redis: the one at REDIS_URL, else 127.0.0.1:6379, else a redis-server this script
# starts (installing it from Debian if it is missing). The store contract runs against
# osmem-server (PyPI), an in-memory OpenSearch-compatible server installed in .venv here;
# a real Elasticsearch too when ELASTICSEARCH_TEST_URL is set. The page's end-to-end tests run
# in Debian's headless Chromium through chromedriver, installed here when missing; their
# screenshots are kept in target/browser-screenshots/.
set -euo pipefail
cd "$(dirname "$0")"

redis_up() { # host port
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}
if [ -z "${REDIS_URL:-}" ]; then
  if redis_up 127.0.0.1 6379; then
    export REDIS_URL=redis://127.0.0.1:6379
  else
    if ! command -v redis-server >/dev/null; then
      echo "== installing redis-server"
      apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
    fi
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    dir=$(mktemp -d)
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
      --dir "$dir" --logfile "$dir/redis.log" --pidfile "$dir/redis.pid"
    trap 'kill "$(cat "$dir/redis.pid")" 2>/dev/null || true' EXIT
    for _ in $(seq 50); do redis_up 127.0.0.1 "$port" && break; sleep 0.1; done
    export REDIS_URL="redis://127.0.0.1:$port"
  fi
fi
echo "== tests use Redis at $REDIS_URL"

OSMEM_VERSION=0.1.6
CHECK_JSONSCHEMA_VERSION=0.39.0
# The webhook tests verify signatures with the Standard Webhooks project's own Python package.
STANDARDWEBHOOKS_VERSION=1.1.0
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import osmem_server, check_jsonschema, standardwebhooks" 2>/dev/null; then
  echo "== installing osmem-server $OSMEM_VERSION (in-memory OpenSearch-compatible server), check-jsonschema $CHECK_JSONSCHEMA_VERSION and standardwebhooks $STANDARDWEBHOOKS_VERSION in .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q "osmem-server==$OSMEM_VERSION" "check-jsonschema==$CHECK_JSONSCHEMA_VERSION" "standardwebhooks==$STANDARDWEBHOOKS_VERSION"
fi
OSMEM_SERVER_BIN=$(.venv/bin/python -c "import osmem_server; print(osmem_server.resolve_binary())")
export OSMEM_SERVER_BIN REQUIRE_OSMEM=1
echo "== store contract: osmem-server at $OSMEM_SERVER_BIN (compatible server, not Elasticsearch)"
[ -n "${ELASTICSEARCH_TEST_URL:-}" ] || echo "== real-Elasticsearch contract run skipped (ELASTICSEARCH_TEST_URL is not set)"

if ! command -v chromedriver >/dev/null || [ ! -x /usr/bin/chromium ]; then
  echo "== installing chromium and chromium-driver (Debian) for the browser tests"
  apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null
fi
export REQUIRE_BROWSER=1
echo "== browser tests: $(chromium --version 2>/dev/null), $(chromedriver --version | cut -d' ' -f1-2)"

echo "== deploy/compose.yaml: the Compose specification, and its networks as designed"
.venv/bin/check-jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml
.venv/bin/python deploy/check_compose.py

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== the service links no training code (classifier without its train feature)"
if cargo tree -p core-api -e normal --prefix none | grep -qE '^(linfa|ndarray) '; then
  echo "core-api depends on linfa or ndarray: depend on classifier with default-features = false" >&2
  exit 1
fi

echo "== cargo test"
cargo test --workspace --release

# The property tests of the parsers (CPF, dates, tokens, cursors, query strings, the lean
# HTTP head reader, JSON arrays, CSV rows) again with 16 times their usual cases: a short
# fuzz run that costs seconds. The over-HTTP properties keep their fixed counts.
echo "== property tests, 4096 cases each"
PROPTEST_CASES=4096 cargo test --release --quiet -p integrations -p core-api --lib
PROPTEST_CASES=4096 cargo test --release --quiet -p classifier --test properties
echo "== browser screenshots (test artefacts): $(ls target/browser-screenshots/*.png | tr '\n' ' ')"

echo "== deploy/local.sh: the distributed shape as local processes"
bash deploy/local.sh
