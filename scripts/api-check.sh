#!/usr/bin/env bash
# Checks the server against its own OpenAPI document with schemathesis, a property-based API
# tester: it generates requests for every route from the document (valid and invalid ones) and
# fails on any 5xx, on a status or content type the document does not list, and on an answer
# that does not match its schema. Bounded: a few examples per route and at most
# API_CHECK_MAX_TIME seconds (default 120). The server (`vmsdb serve --app ledger`, the debug
# build) runs on a free loopback port in a temporary data directory and is always stopped.
#
# schemathesis comes from PyPI into a virtualenv under the cargo target directory (made once,
# reused). Needs python3 with venv and curl.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
venv="$target_dir/api-check-venv"
schemathesis_version="4.32.5"
max_time="${API_CHECK_MAX_TIME:-120}"
max_examples="${API_CHECK_MAX_EXAMPLES:-25}"

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$schemathesis_version"; then
  echo "installing schemathesis $schemathesis_version into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==$schemathesis_version"
fi

cargo build -q -p vmsdb --bin vmsdb

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

"$target_dir/debug/vmsdb" serve --app ledger --data-dir "$work/data" --listen 127.0.0.1:0 \
  2>"$work/server.log" &
server_pid=$!

# The server logs its address right after binding; wait for it, then for /ready (bounded).
addr=""
for _ in $(seq 1 300); do
  addr="$(sed -n 's/.*listening addr=\([0-9.:]*\).*/\1/p' "$work/server.log" | head -n 1)"
  if [ -n "$addr" ] && curl -sf "http://$addr/ready" >/dev/null; then
    break
  fi
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log"; echo "vmsdb exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { cat "$work/server.log"; echo "vmsdb did not start" >&2; exit 1; }
echo "vmsdb serve --app ledger at http://$addr; schemathesis for at most ${max_time}s"

# From the temporary directory, so the files schemathesis keeps (.schemathesis/) go with it.
status=0
cd "$work"
"$venv/bin/schemathesis" run "http://$addr/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$max_examples" --max-time "$max_time" --seed 1 \
  --generation-database none --no-color --workers 2 || status=$?

if [ "$status" -ne 0 ]; then
  echo "schemathesis found problems (status $status); the server's log:" >&2
  tail -n 50 "$work/server.log" >&2
fi
exit "$status"
