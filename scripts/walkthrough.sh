#!/usr/bin/env bash
# The README's curl walk-through: README.md quotes everything below the first blank line
# verbatim (paste it into a shell at the repository root after `cargo build --release --bin
# vmsdb`); vmsdb/tests/walkthrough.rs runs it.
set -eu

BIN="${VMSDB_BIN:-./target/release/vmsdb}"; PORT="${VMSDB_PORT:-8080}"; DATA="${VMSDB_DATA:-/tmp/vmsdb-ledger}"
V="http://127.0.0.1:$PORT"
"$BIN" serve --app ledger --data-dir "$DATA" --listen "127.0.0.1:$PORT" & SERVER=$!
until curl -sf "$V/ready"; do sleep 0.2; done; echo
# open two accounts (each deposit is one transaction, answered once durable)
curl -s -X POST $V/v1/services/accounts/events/Deposit -d '{"account": 1, "entry": 1, "amount": 100}'; echo
curl -s -X POST $V/v1/services/accounts/events/Deposit -d '{"account": 2, "entry": 2, "amount": 5}'; echo
# a transfer with an idempotency key: sent twice, it runs once and both answers are the same
T='{"src_account": 1, "src_entry": 1, "dst_account": 2, "dst_entry": 2, "amount": 30}'
curl -s -X POST $V/v1/services/accounts/events/Transfer -H 'Idempotency-Key: 7/1' -d "$T"; echo
curl -s -X POST $V/v1/services/accounts/events/Transfer -H 'Idempotency-Key: 7/1' -d "$T"; echo
# a business abort is an outcome: "committed": false, "abort": {"kind": "insufficient_balance", ..}
curl -s -X POST $V/v1/services/accounts/events/Transfer -d '{"src_account": 2, "src_entry": 2, "dst_account": 1, "dst_entry": 1, "amount": 500}'; echo
# fire-and-forget: 202 at once with the request id; its status says pending, then committed
curl -s -X POST "$V/v1/services/accounts/events/Deposit?wait=false" -H 'Idempotency-Key: 7/2' -d '{"account": 3, "entry": 3, "amount": 1}'; echo
until curl -s $V/v1/requests/7/2 | grep -q '"committed"'; do sleep 0.05; done
curl -s $V/v1/requests/7/2; echo
# a query at one consistent snapshot
curl -s -X POST $V/v1/queries/balance -d '{"account": 2, "entry": 2}'; echo   # {"account":35,"entry":35}
# metrics; the live console is at $V/ (open it in a browser)
curl -s $V/metrics | grep -E '^vmsdb_(committed_total|http_aborted_total|in_flight_submissions)'
kill $SERVER; wait $SERVER   # SIGTERM: a graceful shutdown, exit 0; a restart on $DATA keeps the balances
