#!/usr/bin/env bash
# strongSwan's handshake times for issue 5's comparison (root): Site1 and
# Site2 in namespaces (topo.sh), N rounds of
#   swanctl --initiate --child YELLOW   (IKE_SA_INIT + IKE_AUTH, 4 packets)
#   swanctl --initiate --child BLUE     (CREATE_CHILD_SA with PFS, 2 packets)
#   swanctl --terminate --ike site2
# Times come from the initiator's charon log (ms resolution, logged at level
# 1 so key dumps do not slow it): "initiating IKE_SA" or "generating
# CREATE_CHILD_SA request" -> "CHILD_SA ... established". Also the wall time
# of each swanctl --initiate (includes swanctl's own start-up).
#
#   handshake-times.sh [N=100] [cbc|gcm]
set -euo pipefail
cd "$(dirname "$0")"
N=${1:-100}; ESP=${2:-cbc}
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 2; }
P="swh$$"; WORK=$(mktemp -d /tmp/swan-hs.XXXXXX)
cleanup() {
    set +e
    ./charon-ns.sh stop "${P}gw1" "$WORK/gw1"
    ./charon-ns.sh stop "${P}gw2" "$WORK/gw2"
    ./topo.sh down "$P"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
./topo.sh up "$P"
SWAN_LOG=quiet ./charon-ns.sh render site1 "$WORK/gw1" "$ESP" none
SWAN_LOG=quiet ./charon-ns.sh render site2 "$WORK/gw2" "$ESP" none
./charon-ns.sh start "${P}gw2" "$WORK/gw2"
./charon-ns.sh start "${P}gw1" "$WORK/gw1"
: >"$WORK/wall"
for i in $(seq 1 "$N"); do
    for c in YELLOW BLUE; do
        t0=$(date +%s%N)
        ./charon-ns.sh swanctl "$WORK/gw1" --initiate --child "$c" --timeout 10 >/dev/null
        t1=$(date +%s%N)
        echo "$c $(( (t1 - t0) / 1000 ))" >>"$WORK/wall"
    done
    ./charon-ns.sh swanctl "$WORK/gw1" --terminate --ike site2 --timeout 10 >/dev/null
done
python3 - "$WORK/gw1/charon.log" "$WORK/wall" "$N" "$ESP" <<'PY'
import re, statistics, sys
log, wall, n, esp = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def ms(t):
    h, m, s = t.split(":"); s, f = s.split(".")
    return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(f)
pending, res = {}, {"init+auth": [], "create_child": []}
for line in open(log):
    m = re.match(r"(\S+) \d+\[\w+\] <([^>]*)> (.*)", line)
    if not m: continue
    t, tag, msg = ms(m.group(1)), m.group(2).split("|")[-1], m.group(3)
    if msg.startswith("initiating IKE_SA "):
        pending[tag] = ("init+auth", t)
    elif msg.startswith("generating CREATE_CHILD_SA request") and "REKEY_SA" not in msg:
        pending[tag] = ("create_child", t)
    elif msg.startswith("CHILD_SA ") and " established " in msg and tag in pending:
        k, t0 = pending.pop(tag); res[k].append(t - t0)
w = {"YELLOW": [], "BLUE": []}
for line in open(wall):
    c, us = line.split(); w[c].append(int(us) / 1000)
def stat(v):
    if not v: return "no samples"
    v = sorted(v)
    return f"median {statistics.median(v):.1f} ms, p90 {v[int(len(v) * 0.9) - 1 if len(v) >= 10 else -1]:.1f} ms, min {v[0]:.1f} ms (n={len(v)})"
print(f"strongSwan {esp} IKE_SA_INIT+IKE_AUTH (log):      {stat(res['init+auth'])}")
print(f"strongSwan {esp} CREATE_CHILD_SA+PFS (log):       {stat(res['create_child'])}")
print(f"strongSwan {esp} swanctl --initiate YELLOW (wall): {stat(w['YELLOW'])}")
print(f"strongSwan {esp} swanctl --initiate BLUE (wall):   {stat(w['BLUE'])}")
PY
