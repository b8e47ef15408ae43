#!/usr/bin/env bash
# Runs every test of the workspace. Slow suites are bounded by default; see README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace
