#!/usr/bin/env bash
# Writes the "veth load test" section of bench/REPORT.md (between the
# loadtest:begin/end markers; the rest of the file is kept) and its PNG
# plots in bench/report/ from one scripts/loadtest.sh run:
#
#   scripts/loadtest-report.sh [RUN_DIR]     (default: bench/out/loadtest-latest)
#
# Plots: throughput vs packet size, espgate scaling vs workers, latency CDF
# at 1400 B. Needs python3-matplotlib (installed here with apt-get when
# missing and run as root).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
RUN=${1:-bench/out/loadtest-latest}
[ -f "$RUN/results.jsonl" ] || { echo "loadtest-report: no $RUN/results.jsonl (run scripts/loadtest.sh first)" >&2; exit 2; }
# The Debian package installs into the system python, which need not be the
# python3 first on PATH (pyenv, venv).
PY=""
for p in python3 /usr/bin/python3; do
    if command -v "$p" >/dev/null && "$p" -c 'import matplotlib' 2>/dev/null; then PY=$p; break; fi
done
if [ -z "$PY" ]; then
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-matplotlib >/dev/null
        PY=/usr/bin/python3
    else
        echo "loadtest-report: python3-matplotlib missing (apt-get install python3-matplotlib)" >&2; exit 2
    fi
fi
"$PY" scripts/loadtest/lt.py report "$RUN" bench/REPORT.md bench/report
