#!/usr/bin/env bash
# Durable jobs: jobs completed per second (SQLite; PostgreSQL with one and two worker
# processes) and lateness of 100,000 timers due within the same minute.
# Usage: bash benches/jobs.sh [jobs] [timers]   (PostgreSQL part needs 127.0.0.1:5432)
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS="${1:-20000}"
TIMERS="${2:-100000}"
PG_URL="${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
cargo build --release --quiet --example jobsbench
BENCH=target/release/examples/jobsbench
WORK="$(mktemp -d)"
SCHEMAS=()
cleanup() {
  for s in "${SCHEMAS[@]}"; do psql -q "$PG_URL" -c "DROP SCHEMA IF EXISTS $s CASCADE" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
export RUST_LOG=warn

fresh_pg() { # a new schema per run, so no run pays for an earlier one's dead rows
  local s="cljobs_$$_$1"
  SCHEMAS+=("$s")
  psql -q "$PG_URL" -c "CREATE SCHEMA $s"
  echo "$PG_URL?options=-c%20search_path%3D$s"
}

echo "== SQLite"
"$BENCH" throughput --database "sqlite://$WORK/t1.db" --jobs "$JOBS" --processes 1
"$BENCH" timers --database "sqlite://$WORK/t2.db" --jobs "$TIMERS" --window-seconds 60 --processes 1
if pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "== PostgreSQL"
  "$BENCH" throughput --database "$(fresh_pg a)" --jobs "$JOBS" --processes 1
  "$BENCH" throughput --database "$(fresh_pg b)" --jobs "$JOBS" --processes 2
  "$BENCH" timers --database "$(fresh_pg c)" --jobs "$TIMERS" --window-seconds 60 --processes 1
  "$BENCH" timers --database "$(fresh_pg d)" --jobs "$TIMERS" --window-seconds 60 --processes 2
else
  echo "== PostgreSQL: skipped (no server on 127.0.0.1:5432)"
fi
