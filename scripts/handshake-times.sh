#!/usr/bin/env bash
# Issue 5's handshake times, espgate against strongSwan (root): builds a
# release espgate and runs the ignored test `interop_handshake_times`
# (tests/interop_strongswan.rs), N rounds per direction:
#   espgate initiates (a fresh gateway per round; ping YELLOW, ping BLUE)
#   strongSwan initiates (swanctl --initiate YELLOW, BLUE; --terminate)
# and prints the median INIT+AUTH and CREATE_CHILD_SA (+PFS 14) times as
# seen on the WAN between the gateways, plus strongSwan's own log times for
# its rounds. scripts/strongswan/handshake-times.sh is strongSwan vs itself.
#
#   scripts/handshake-times.sh [N=20]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20}
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 2; }
cargo build --release --bin espgate
BIN=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/espgate
ESPGATE_BIN="$BIN" ESPGATE_INTEROP_N="$N" \
    cargo test --test interop_strongswan -- --ignored --nocapture interop_handshake_times 2>&1 |
    grep -E '^(espgate|strongSwan) initiates|^test result'
