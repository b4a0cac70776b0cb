#!/usr/bin/env bash
# The test command (README, .ci/run): formatting, lints, and every test of the
# workspace. Tests that need root or a tool print why when they skip; in CI
# (ESPGATE_CI=1) a missing tool is a failure instead.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The dataplane API boundary: the control plane may only use `api`.
if grep -rnE 'espgate_dataplane::(\{|[a-z_]+)' controlplane/src | grep -vE 'espgate_dataplane::api' ; then
    echo "controlplane reaches past espgate_dataplane::api (see DESIGN.md)" >&2
    exit 1
fi
cargo test --workspace --release -- --test-threads=2
