#!/usr/bin/env bash
# strongSwan-to-strongSwan baseline for issue 7 (root): the seed topology in
# namespaces (scripts/strongswan/topo.sh), Site1 and Site2 as strongSwan with
# kernel-libipsec (userspace ESP-in-UDP over a TUN device), iperf3 from the
# YELLOW host to the PURPLE host through the tunnel. Also measures the same
# path with plain kernel forwarding (no IPsec) first, as the I/O reference.
#
#   scripts/swan-baseline.sh [-t SECONDS] [--esp cbc|gcm] [--keep]
#
# Every run is bounded (iperf3 -t, timeouts); traffic only goes to
# addresses inside the namespaces created here, which are removed on exit.
# Last lines (machine-readable):
#   swan-baseline <esp> tcp: X Gbps
#   swan-baseline <esp> udp1400 flood: X Gbps, Y kpps delivered, loss Z% ...
#   swan-baseline <esp> udp1400 best under 1% loss: X Gbps
set -euo pipefail
cd "$(dirname "$0")/.."

T=5; ESP=cbc; KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        -t) T=$2; shift 2 ;;
        --esp) ESP=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        *) sed -n '2,16p' "$0" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "swan-baseline: needs root (network namespaces)" >&2; exit 2; }
for t in iperf3 python3 swanctl /usr/lib/ipsec/charon; do
    command -v "$t" >/dev/null || { echo "swan-baseline: $t missing (scripts/install-deps.sh)" >&2; exit 2; }
done

P="swb$$"
WORK=$(mktemp -d /tmp/swan-baseline.XXXXXX)
SW=scripts/strongswan
H1=${P}h1; H2=${P}h2; WAN=${P}wan; GW1=${P}gw1; GW2=${P}gw2

cleanup() {
    set +e
    [ -n "${SRV_PID:-}" ] && kill "$SRV_PID" 2>/dev/null
    $SW/charon-ns.sh stop "$GW1" "$WORK/gw1" 2>/dev/null
    $SW/charon-ns.sh stop "$GW2" "$WORK/gw2" 2>/dev/null
    $SW/topo.sh down "$P"
    if [ "$KEEP" = 1 ]; then echo "files kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

$SW/topo.sh up "$P"

# iperf3 server in h2 for exactly one test, bounded in time.
serve() {
    ip netns exec "$H2" timeout $((T + 20)) iperf3 -s -1 -B 172.16.10.11 >/dev/null 2>&1 &
    SRV_PID=$!
    for _ in $(seq 1 50); do
        ip netns exec "$H2" ss -ltn 2>/dev/null | grep -q ':5201 ' && return 0
        sleep 0.1
    done
    echo "iperf3 server did not start" >&2; exit 1
}

# client NAME ARGS...: one bounded iperf3 run from YELLOW, JSON to WORK/NAME.json
client() {
    local name=$1; shift
    serve
    ip netns exec "$H1" timeout $((T + 20)) iperf3 -c 172.16.10.11 -B 192.168.100.10 \
        -t "$T" -J "$@" >"$WORK/$name.json" 2>"$WORK/$name.err" || true
    wait "$SRV_PID" 2>/dev/null || true
    SRV_PID=
}

summary() { # summary NAME LABEL → prints one line, sets $LAST
    LAST=$(python3 - "$WORK/$1.json" "$2" <<'PY'
import json, sys
path, label = sys.argv[1], sys.argv[2]
try:
    j = json.load(open(path))
except Exception as e:
    print(f"{label}: no result ({e})"); sys.exit(0)
if "error" in j:
    print(f"{label}: iperf3 error: {j['error']}"); sys.exit(0)
end = j["end"]
if j["start"]["test_start"]["protocol"] == "TCP":
    gbps = end["sum_received"]["bits_per_second"] / 1e9
    print(f"{label}: {gbps:.3f} Gbps")
else:                                 # UDP: what the receiver got
    s, r = end["sum_sent"], end["sum_received"]
    blen = j["start"]["test_start"]["blksize"]
    secs = r["seconds"] or 1
    got = r["bytes"] // blen
    kpps = got / secs / 1e3
    gbps = got * (blen + 28) * 8 / secs / 1e9     # IP packet bits
    offered = s["packets"] * (blen + 28) * 8 / (s["seconds"] or 1) / 1e9
    loss = 100.0 * (1 - got / s["packets"]) if s["packets"] else 0.0
    print(f"{label}: {gbps:.3f} Gbps, {kpps:.1f} kpps delivered, loss {loss:.1f}% "
          f"(offered {offered:.3f} Gbps of {blen + 28} B IP packets)")
PY
)
    echo "$LAST"
}

echo "== $(date -u +%FT%TZ) $(uname -r), $(nproc) cpus:$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), load $(cut -d' ' -f1-3 /proc/loadavg)"

# 1. Plain kernel forwarding: the WAN learns the site LANs for this part only.
ip -n "$WAN" route add 192.168.100.0/24 via 10.255.1.2
ip -n "$WAN" route add 172.16.10.0/24 via 10.255.2.2
client plain_tcp
client plain_udp1400 -u -b 0 -l 1372
echo "-- plain forwarding (no IPsec), ${T}s each"
summary plain_tcp "plain tcp"; PLAIN_TCP=$LAST
summary plain_udp1400 "plain udp1400"; PLAIN_UDP=$LAST
ip -n "$WAN" route del 192.168.100.0/24
ip -n "$WAN" route del 172.16.10.0/24

# 2. strongSwan kernel-libipsec on both gateways.
$SW/charon-ns.sh render site1 "$WORK/gw1" "$ESP" none
$SW/charon-ns.sh render site2 "$WORK/gw2" "$ESP" none
$SW/charon-ns.sh start "$GW2" "$WORK/gw2"
$SW/charon-ns.sh start "$GW1" "$WORK/gw1"
t0=$(date +%s%N)
$SW/charon-ns.sh swanctl "$WORK/gw1" --initiate --child YELLOW --timeout 10 >"$WORK/initiate.out"
t1=$(date +%s%N)
echo "-- strongSwan $ESP (kernel-libipsec, ESP-in-UDP), tunnel up in $(( (t1 - t0) / 1000000 )) ms (swanctl --initiate)"
ip netns exec "$H1" ping -c 2 -i 0.2 -W 2 172.16.10.11 >/dev/null \
    || { echo "no connectivity through the tunnel" >&2; exit 1; }
client swan_tcp
client swan_udp1400 -u -b 0 -l 1372
client swan_udp64 -u -b 0 -l 36
summary swan_tcp "strongswan tcp"; SWAN_TCP=$LAST
summary swan_udp1400 "strongswan udp1400"; SWAN_UDP=$LAST
summary swan_udp64 "strongswan udp64"
# A UDP flood on 2 shared cores mostly measures who gets the CPU (iperf3's
# sender starves libipsec's threads), so also offer fixed rates: the best
# rate delivered with < 1% loss is the capacity figure.
BEST=0
for rate in 25M 50M 75M 100M 150M 200M 400M; do
    client "swan_udp1400_$rate" -u -b "$rate" -l 1372
    summary "swan_udp1400_$rate" "strongswan udp1400 @$rate"
    BEST=$(python3 - "$LAST" "$BEST" <<'PY'
import re, sys
line, best = sys.argv[1], float(sys.argv[2])
m = re.search(r": ([0-9.]+) Gbps.*loss ([0-9.]+)%", line)
if m and float(m.group(2)) < 1.0:
    best = max(best, float(m.group(1)))
print(f"{best:.3f}")
PY
)
done
$SW/charon-ns.sh swanctl "$WORK/gw1" --list-sas | sed 's/^/   /'

echo "-- last lines"
echo "swan-baseline plain tcp: ${PLAIN_TCP#plain tcp: }"
echo "swan-baseline plain udp1400: ${PLAIN_UDP#plain udp1400: }"
echo "swan-baseline $ESP tcp: ${SWAN_TCP#strongswan tcp: }"
echo "swan-baseline $ESP udp1400 flood: ${SWAN_UDP#strongswan udp1400: }"
echo "swan-baseline $ESP udp1400 best under 1% loss: $BEST Gbps"
