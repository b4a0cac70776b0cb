#!/usr/bin/env bash
# The end-to-end veth tests (root): two `espgate run` over AF_XDP, and
# strongSwan as Site2, in namespaces of their own (scripts/topology.sh with
# a per-run prefix). Release build, so the iperf3 numbers mean something;
# a failure to set up fails instead of skipping.
#
# Usage: scripts/e2e.sh [TEST-NAME-FILTER]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "e2e.sh: needs root" >&2; exit 1; }
ESPGATE_CI=1 cargo test --release --test e2e_veth -- --nocapture --test-threads 1 "$@"
