#!/usr/bin/env bash
# Tracking points through POST /api/v1/events on loopback, committed durably before the
# reply, on SQLite (WAL, synchronous=FULL) and on PostgreSQL (default synchronous_commit=on).
# Usage: bash benches/ledger.sh [seconds]   (PostgreSQL part needs 127.0.0.1:5432, trust auth)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN="${1:-10}"
PG_URL="${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
cargo build --release --quiet --bin closeloop --example loadgen
BIN=target/release/closeloop
LOAD=target/release/examples/loadgen
WORK="$(mktemp -d)"
trap 'pkill -TERM -f "closeloop --config $WORK" || true; rm -rf "$WORK"' EXIT

run() { # name config port
  local name="$1" config="$2" port="$3"
  local key
  key="$("$BIN" --config "$config" apikey create --name bench --role admin 2>/dev/null)"
  "$BIN" --config "$config" serve 2>"$WORK/$name.log" &
  local pid=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
  echo "== $name"
  # One worker: every point pays a whole commit; 64 workers: group commit shares them.
  "$LOAD" --url "http://127.0.0.1:$port" --key "$key" --concurrency 1 --seconds "$SECONDS_PER_RUN"
  "$LOAD" --url "http://127.0.0.1:$port" --key "$key" --concurrency 64 --seconds "$SECONDS_PER_RUN"
  "$LOAD" --url "http://127.0.0.1:$port" --key "$key" --rate 2000 --seconds "$SECONDS_PER_RUN"
  echo "server RSS after load: $(( $(awk '/VmRSS/ {print $2}' /proc/$pid/status) / 1024 )) MB"
  kill -TERM "$pid"; wait "$pid" || true
}

printf 'listen = "127.0.0.1:18181"\ndatabase_url = "sqlite://%s/bench.db"\n' "$WORK" > "$WORK/sqlite.toml"
run sqlite "$WORK/sqlite.toml" 18181

if pg_isready -q -h 127.0.0.1 -p 5432; then
  SCHEMA="clbench_$$"
  psql -q "$PG_URL" -c "CREATE SCHEMA $SCHEMA"
  printf 'listen = "127.0.0.1:18182"\ndatabase_url = "%s?options=-c%%20search_path%%3D%s"\n[security]\ndata_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="\n' \
    "$PG_URL" "$SCHEMA" > "$WORK/pg.toml"
  run postgres "$WORK/pg.toml" 18182
  psql -q "$PG_URL" -c "DROP SCHEMA $SCHEMA CASCADE" 2>/dev/null
else
  echo "== postgres: skipped (no server on 127.0.0.1:5432)"
fi
