#!/usr/bin/env bash
# Platform callbacks acknowledged durably, end to end on loopback: a real `closeloop serve`
# receives encrypted, signed callbacks (each a distinct message) from `loadgen`, on SQLite
# and on PostgreSQL. Prints rate, latency and server memory (idle and after load).
# Usage: bash benches/callbacks.sh [seconds] [wecom|dingtalk|feishu]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN="${1:-10}"
PLATFORM="${2:-wecom}"
PG_URL="${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
cargo build --release --quiet --bin closeloop --example loadgen
BIN=target/release/closeloop
LOAD=target/release/examples/loadgen
WORK="$(mktemp -d)"
trap 'pkill -TERM -f "closeloop --config $WORK" || true; rm -rf "$WORK"' EXIT
CORP=wwcl0000000000001 TOKEN=QDG6eK KEY=jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C
WECOM="[wecom]
corp_id = \"$CORP\"
agent_id = 1000002
secret = \"bench\"
token = \"$TOKEN\"
encoding_aes_key = \"$KEY\"
# No WeCom API in this benchmark: the discard port refuses at once.
api_base = \"http://127.0.0.1:9\""
DT_KEY=dingclbench000001 DT_TOKEN=mryue DT_AES=Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7
DINGTALK="[dingtalk]
app_key = \"$DT_KEY\"
app_secret = \"bench\"
token = \"$DT_TOKEN\"
aes_key = \"$DT_AES\"
api_base = \"http://127.0.0.1:9\"
oapi_base = \"http://127.0.0.1:9\""
FS_KEY=Fq3BucfwoJQMjXxrwi3I6fFildR0NgmI FS_TOKEN=vtoken-bench
FEISHU="[feishu]
app_id = \"cli_bench\"
app_secret = \"bench\"
verification_token = \"$FS_TOKEN\"
encrypt_key = \"$FS_KEY\"
api_base = \"http://127.0.0.1:9\""
case "$PLATFORM" in
  wecom) SECTION="$WECOM"; TARGET=(--wecom-corp "$CORP" --wecom-token "$TOKEN" --wecom-key "$KEY") ;;
  dingtalk) SECTION="$DINGTALK"; TARGET=(--dingtalk-app-key "$DT_KEY" --dingtalk-token "$DT_TOKEN" --dingtalk-aes-key "$DT_AES") ;;
  feishu) SECTION="$FEISHU"; TARGET=(--feishu-encrypt-key "$FS_KEY" --feishu-token "$FS_TOKEN") ;;
  *) echo "unknown platform $PLATFORM (wecom, dingtalk or feishu)"; exit 2 ;;
esac
rss() { echo "$(( $(awk '/VmRSS/ {print $2}' "/proc/$1/status") / 1024 )) MB"; }

run() { # name config port
  local name="$1" config="$2" port="$3"
  "$BIN" --config "$config" serve 2>"$WORK/$name.log" &
  local pid=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
  sleep 1
  echo "== $PLATFORM on $name (server RSS idle: $(rss $pid))"
  local args=(--url "http://127.0.0.1:$port" "${TARGET[@]}" --seconds "$SECONDS_PER_RUN")
  "$LOAD" "${args[@]}" --concurrency 64
  "$LOAD" "${args[@]}" --rate 2000
  echo "server RSS after load: $(rss $pid)"
  kill -TERM "$pid"; wait "$pid" || true
}

printf 'listen = "127.0.0.1:18191"\ndatabase_url = "sqlite://%s/bench.db"\n%s\n' "$WORK" "$SECTION" > "$WORK/sqlite.toml"
run sqlite "$WORK/sqlite.toml" 18191
if pg_isready -q -h 127.0.0.1 -p 5432; then
  SCHEMA="clcb_$$"
  psql -q "$PG_URL" -c "CREATE SCHEMA $SCHEMA"
  printf 'listen = "127.0.0.1:18192"\ndatabase_url = "%s?options=-c%%20search_path%%3D%s"\n[security]\ndata_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="\n%s\n' \
    "$PG_URL" "$SCHEMA" "$SECTION" > "$WORK/pg.toml"
  run postgres "$WORK/pg.toml" 18192
  psql -q "$PG_URL" -c "DROP SCHEMA $SCHEMA CASCADE" >/dev/null 2>&1
else
  echo "== postgres: skipped (no server on 127.0.0.1:5432)"
fi
