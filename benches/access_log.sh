#!/usr/bin/env bash
# The access log's cost on GET /api/v1/customers/{id} (one entry per read), on loopback:
# the same release binary with `access_log = true` and `access_log = false`, alternated
# twice in one run, on SQLite and (when a server answers on 127.0.0.1:5432) PostgreSQL.
# Usage: bash benches/access_log.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN="${1:-10}"
PG_URL="${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
cargo build --release --quiet --bin closeloop --example loadgen
BIN=target/release/closeloop
LOAD=target/release/examples/loadgen
WORK="$(mktemp -d)"
SERVER=""
cleanup() {
  if [ -n "$SERVER" ]; then kill -TERM "$SERVER" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# run NAME CONFIG PORT: one server, 64 workers then an open loop at 1,000/s; the numbers
# go to $WORK/NAME.txt as "rps p99" lines.
run() {
  local name="$1" config="$2" port="$3"
  local key
  key="$("$BIN" --config "$config" apikey create --name bench --role admin 2>/dev/null)"
  "$BIN" --config "$config" serve 2>"$WORK/$name.log" &
  SERVER=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
  : > "$WORK/$name.txt"
  for mode in "--concurrency 64" "--rate 1000"; do
    # shellcheck disable=SC2086
    line="$("$LOAD" --read --url "http://127.0.0.1:$port" --key "$key" $mode --seconds "$SECONDS_PER_RUN")"
    echo "$name: $line"
    echo "$line" | sed -E 's/.*= ([0-9]+) requests\/s.*p99 ([0-9.]+) ms.*/\1 \2/' >> "$WORK/$name.txt"
  done
  curl -s "http://127.0.0.1:$port/metrics" | grep -E '^access_log_(written|dropped)_total' | sed "s/^/$name: /" || true
  kill -TERM "$SERVER"; wait "$SERVER" || true
  SERVER=""
}

# ratio DB: access log on / off per load, from the two rounds of each.
ratio() {
  local db="$1"
  paste "$WORK/$db-on-1.txt" "$WORK/$db-on-2.txt" "$WORK/$db-off-1.txt" "$WORK/$db-off-2.txt" |
    awk -v db="$db" 'BEGIN { split("64 workers|open loop 1,000/s", load, "|") }
      { on_rps = ($1 + $3) / 2; off_rps = ($5 + $7) / 2; on_p99 = ($2 + $4) / 2; off_p99 = ($6 + $8) / 2;
        printf "%s, %s: on %.0f req/s p99 %.2f ms | off %.0f req/s p99 %.2f ms | on/off throughput %.3f, p99 %.2f\n",
          db, load[NR], on_rps, on_p99, off_rps, off_p99, on_rps / off_rps, on_p99 / off_p99 }'
}

bench() { # DB URL (@MODE@ and @ROUND@ filled in) EXTRA-TOML
  local db="$1" url="$2" extra="$3" port=18290
  for round in 1 2; do
    for mode in on off; do
      port=$((port + 1))
      local dburl="${url//@MODE@/$mode}"
      dburl="${dburl//@ROUND@/$round}"
      local flag=true; [ "$mode" = off ] && flag=false
      printf 'listen = "127.0.0.1:%s"\ndatabase_url = "%s"\naccess_log = %s\n%s' \
        "$port" "$dburl" "$flag" "$extra" > "$WORK/$db-$mode-$round.toml"
      run "$db-$mode-$round" "$WORK/$db-$mode-$round.toml" "$port"
    done
  done
  ratio "$db"
}

bench sqlite "sqlite://$WORK/@MODE@-@ROUND@.db" ""

if pg_isready -q -h 127.0.0.1 -p 5432; then
  SCHEMA="clbench_al_$$"
  # One schema per server: a fresh database each, like the SQLite files.
  for round in 1 2; do for mode in on off; do
    psql -q "$PG_URL" -c "CREATE SCHEMA ${SCHEMA}_${mode}_${round}"
  done; done
  bench postgres "$PG_URL?options=-c%20search_path%3D${SCHEMA}_@MODE@_@ROUND@" \
    $'[security]\ndata_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="\n'
  for round in 1 2; do for mode in on off; do
    psql -q "$PG_URL" -c "DROP SCHEMA ${SCHEMA}_${mode}_${round} CASCADE" 2>/dev/null
  done; done
else
  echo "== postgres: skipped (no server on 127.0.0.1:5432)"
fi
