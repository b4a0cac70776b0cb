#!/usr/bin/env bash
# veth load test (issue 7), root only. In ONE run, on one namespace topology
#
#   h1 (YELLOW .100.10, BLUE .200.10) -- gw1 -- wan (kernel router) -- gw2 -- h2 (PURPLE .10.11)
#
# (scripts/loadtest/topo.sh: the names and addresses of
# scripts/strongswan/topo.sh, WAN MTU 1600 so 1500-byte packets fit after
# ESP, Q rx/tx queues per veth), it measures these configurations for 64,
# 512, 1400-byte and IMIX (7:4:1 of 64/576/1500) IP packets:
#
#   forward-qQ     bench xdp_forward (AF_XDP, no crypto) on both gateways,
#                  one thread per queue: the I/O ceiling (the WAN router gets
#                  routes to the LANs for this leg only)
#   swan-t1/t2     strongSwan kernel-libipsec on both gateways, 1 / 2 tunnels
#                  (scripts/strongswan/charon-ns.sh), AES-256-CBC/SHA-256
#   espgate-wW-tN  `espgate run -c` on both gateways, W = 1, 2 workers
#                  (= queues), N = 1 tunnel (YELLOW→PURPLE), 2 tunnels
#                  (+ BLUE→PURPLE); skipped with the reason when the binary
#                  cannot run it
#
# The topology is built with Q = 1 for forward-q1, swan-*, espgate-w1-*
# and rebuilt with Q = 2 for forward-q2, espgate-w2-* (a veth's queue
# count is fixed at creation; one AF_XDP socket per queue and worker).
# Each flow is sent from 8 source ports so that it spreads over the queues.
#
# Traffic: bench `pktgen send` in h1 (one process per tunnel/flow, probes
# with sequence numbers and CLOCK_MONOTONIC send times) to `pktgen sink` in
# h2. Per point: offered/delivered pps and Gbps, loss %, latency p50/p99,
# CPU per packet of the gateway processes (per worker thread for espgate)
# and of the whole machine (from /proc). Raw JSON lines go to
# bench/out/loadtest-<time>/results.jsonl; a table and three ratio lines end
# the output.
#
#   scripts/loadtest.sh [--quick] [--secs S] [--rounds R] [--sizes "64 1400"]
#                       [--legs "forward swan espgate"] [--rate PPS]
#                       [--espgate PATH] [--no-build] [--report] [--keep]
#
#   --quick   2 s per point, sizes 64 and 1400, one round (~2 minutes)
#   --rate    total offered packets/s (0 = as fast as the generator goes)
#   --report  then run scripts/loadtest-report.sh on this run
#
# Bounded: every generator has a duration, the whole script runs under
# `timeout`; namespaces, daemons and generators are removed by an EXIT trap.
# Traffic only goes to addresses inside the namespaces created here.
set -euo pipefail
SELF=$(readlink -f "$0")
cd "$(dirname "$SELF")/.."
ROOT=$(pwd)

QUICK=0; SECS=5; ROUNDS=1; SIZES="64 512 1400 imix"; LEGS="forward swan espgate"
RATE=0; KEEP=0; REPORT=0; BUILD=1; ESPGATE=${ESPGATE:-}
ORIG_ARGS=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; SECS=2; ROUNDS=1; SIZES="64 1400"; shift ;;
        --secs) SECS=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --sizes) SIZES=$2; shift 2 ;;
        --legs) LEGS=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --espgate) ESPGATE=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --report) REPORT=1; shift ;;
        --keep) KEEP=1; shift ;;
        *) sed -n '2,44p' "$SELF" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "loadtest: needs root (network namespaces, XDP)" >&2; exit 2; }
for t in ip python3 ss ping; do
    command -v "$t" >/dev/null || { echo "loadtest: $t missing (scripts/install-deps.sh)" >&2; exit 2; }
done

# The whole run is bounded: re-run this script under timeout (SIGTERM runs
# the cleanup trap; SIGKILL 20 s later if that hangs).
if [ -z "${LOADTEST_INNER:-}" ]; then
    nsizes=$(echo "$SIZES" | wc -w)
    budget=$(( 600 + ROUNDS * 8 * nsizes * (SECS + 4) + ROUNDS * 8 * 40 ))
    [ "$BUILD" = 1 ] && budget=$((budget + 1200))
    LOADTEST_INNER=1 exec timeout --foreground -k 20 "$budget" "$SELF" "${ORIG_ARGS[@]}"
fi

LT=scripts/loadtest/lt.py
SW=scripts/strongswan
TOPO=scripts/loadtest/topo.sh
B=$ROOT/target/release
if [ "$BUILD" = 1 ]; then
    echo "== building bench binaries (release)"
    cargo build -q --release -p espgate-bench --bin pktgen --bin xdp_forward
fi
for b in pktgen xdp_forward; do
    [ -x "$B/$b" ] || { echo "loadtest: $B/$b missing (cargo build --release -p espgate-bench --bins)" >&2; exit 2; }
done
if [[ " $LEGS " == *" espgate "* ]] && [ -z "$ESPGATE" ]; then
    ESPGATE=$B/espgate
    if [ "$BUILD" = 1 ]; then
        echo "== building espgate (release)"
        cargo build -q --release --bin espgate || echo "loadtest: espgate build failed" >&2
    fi
fi

RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/bench/out/loadtest-$RUN_ID
W=$OUT/work
mkdir -p "$W"
ln -sfn "loadtest-$RUN_ID" "$ROOT/bench/out/loadtest-latest"
RES=$OUT/results.jsonl
SKIP=$OUT/skipped.txt
: >"$RES"

P="lt$$"
H1=${P}h1; GW1=${P}gw1; WAN=${P}wan; GW2=${P}gw2; H2=${P}h2
BG_PIDS=()
SWAN_UP=()

stop_pid() { # stop_pid PID: TERM, up to 5 s, then KILL (only our own children)
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    set +e
    local pid d
    for pid in "${BG_PIDS[@]}"; do stop_pid "$pid"; done
    for d in "${SWAN_UP[@]}"; do $SW/charon-ns.sh stop x "$d" 2>/dev/null; done
    $TOPO down "$P" 2>/dev/null
    # Small logs stay with the results (daemon logs, SA views, configs).
    mkdir -p "$OUT/logs"
    cp "$W"/*.log "$W"/*.toml "$W"/*-sa*.txt "$OUT/logs/" 2>/dev/null
    find "$W" -maxdepth 1 -name '*.err' -size +0 -exec cp {} "$OUT/logs/" \; 2>/dev/null
    if [ "$KEEP" = 0 ]; then rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

skip() { echo "$*" | tee -a "$SKIP" >&2; }

mac() { ip -n "$1" -j link show "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])'; }

python3 - "$OUT/env.json" "$QUICK" "$SECS" "$ROUNDS" "$RATE" <<'PY'
import json, os, platform, sys, time
path, quick, secs, rounds, rate = sys.argv[1:]
cpu = "?"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip(); break
env = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "cpu": cpu,
       "nproc": os.cpu_count(), "kernel": platform.release(),
       "loadavg": open("/proc/loadavg").read().split()[:3],
       "mode": "quick" if quick == "1" else "full", "secs": float(secs),
       "rounds": int(rounds), "rate": int(rate)}
json.dump(env, open(path, "w")); print(json.dumps(env))
PY

CUR_Q=0
topo() { # topo QUEUES: (re)build the namespaces with QUEUES queues per veth
    [ "$CUR_Q" = "$1" ] && return 0
    $TOPO down "$P"
    echo "== topology $P, $1 queue(s) per veth"
    $TOPO up "$P" "$1" 1600
    CUR_Q=$1
    MAC_H1=$(mac "$H1" lan0); MAC_H2=$(mac "$H2" lan0)
    MAC_WAN1=$(mac "$WAN" site1); MAC_WAN2=$(mac "$WAN" site2)
}

# reach SRC DST: one ping through the path, a few tries (tunnels come up on
# the first packets).
reach() {
    local src=$1 i
    for i in $(seq 1 "${2:-10}"); do
        ip netns exec "$H1" ping -c 1 -W 1 -I "$src" 172.16.10.11 >/dev/null 2>&1 && return 0
    done
    return 1
}

# UDP receive-buffer drops in h2: packets the sink itself lost (it shares
# the cores), told apart from what the gateways lost.
rcvbuf_errors() {
    ip netns exec "$H2" awk '/^Udp:/ { if (!h) { for (i = 2; i <= NF; i++) if ($i == "RcvbufErrors") c = i; h = 1 } else print $c }' /proc/net/snmp
}

# measure CONFIG LEG WORKERS TUNNELS SIZE ROUND GW_PIDS...
measure() {
    local config=$1 leg=$2 workers=$3 tunnels=$4 size=$5 round=$6; shift 6
    local tag="$config-$size-r$round" sink_pid i f rate sends=() pids=()
    ip netns exec "$H2" "$B/pktgen" sink --bind 172.16.10.11:9000 --duration $((SECS + 20)) \
        --idle 0.7 --flows 2 >"$W/$tag.sink" 2>"$W/$tag.sink.err" &
    sink_pid=$!
    for i in $(seq 1 60); do
        ip netns exec "$H2" ss -Huln 'sport = :9000' 2>/dev/null | grep -q . && break
        sleep 0.05
    done
    python3 $LT snap "$@" >"$W/$tag.before"
    local rb0 rb1
    rb0=$(rcvbuf_errors)
    rate=$(( RATE / tunnels ))
    for f in $(seq 0 $((tunnels - 1))); do
        local src=192.168.100.10
        [ "$f" = 1 ] && src=192.168.200.10
        ip netns exec "$H1" "$B/pktgen" send --dst 172.16.10.11:9000 --bind "$src" --size "$size" \
            --duration "$SECS" --rate "$rate" --flow "$f" --ports 8 >"$W/$tag.send$f" 2>"$W/$tag.send$f.err" &
        pids+=($!); sends+=("$W/$tag.send$f")
    done
    for i in "${pids[@]}"; do wait "$i" || true; done
    python3 $LT snap "$@" >"$W/$tag.after"
    wait "$sink_pid" || true
    rb1=$(rcvbuf_errors)
    python3 $LT combine \
        --meta "{\"leg\":\"$leg\",\"config\":\"$config\",\"workers\":$workers,\"tunnels\":$tunnels,\"size\":\"$size\",\"round\":$round,\"secs\":$SECS,\"rate\":$RATE,\"sink_rcvbuf_drops\":$(( ${rb1:-0} - ${rb0:-0} )),\"loadavg1\":$(cut -d' ' -f1 /proc/loadavg)}" \
        --before "$W/$tag.before" --after "$W/$tag.after" --sink "$W/$tag.sink" --send "${sends[@]}" >>"$RES"
    python3 - "$RES" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
f = lambda v, n=1: "-" if v is None else f"{v:.{n}f}"
print(f"   {r['config']:>14} {r['size']:>5}: offered {r['offered_pps']/1e3:8.1f} kpps {r['offered_gbps']:6.3f} Gbps"
      f" | delivered {r['delivered_pps']/1e3:8.1f} kpps {r['delivered_gbps']:6.3f} Gbps"
      f" | loss {r['loss_pct']:5.1f}% | p50 {f(r['lat_p50_us'],0)} p99 {f(r['lat_p99_us'],0)} us"
      f" | gw {f(r.get('gw_ns_per_pkt'),0)} ns/pkt"
      + (f" | sink dropped {r['sink_rcvbuf_drops']}" if r.get('sink_rcvbuf_drops') else ""))
PY
}

run_sizes() { # run_sizes CONFIG LEG WORKERS TUNNELS ROUND PIDS...
    local config=$1 leg=$2 workers=$3 tunnels=$4 round=$5 size; shift 5
    for size in $SIZES; do
        measure "$config" "$leg" "$workers" "$tunnels" "$size" "$round" "$@"
    done
}

# ---------------------------------------------------------------- (a) forward
leg_forward() {
    local round=$1 q=$2 p1 p2 i
    echo "-- forward (xdp_forward, no crypto), $q queue(s), round $round"
    ip -n "$WAN" route add 192.168.100.0/24 via 10.255.1.2
    ip -n "$WAN" route add 192.168.200.0/24 via 10.255.1.2
    ip -n "$WAN" route add 172.16.10.0/24 via 10.255.2.2
    local dur=$(( $(echo "$SIZES" | wc -w) * (SECS + 6) + 30 ))
    ip netns exec "$GW1" "$B/xdp_forward" --lan lan0 --wan wan0 --remote 172.16.10.0/24 \
        --local 192.168.100.0/24,192.168.200.0/24 --lan-mac "$MAC_H1" --wan-mac "$MAC_WAN1" \
        --queues "$q" --duration "$dur" >"$W/fwd-gw1-r$round.json" 2>"$W/fwd-gw1-r$round.err" &
    p1=$!; BG_PIDS+=("$p1")
    ip netns exec "$GW2" "$B/xdp_forward" --lan lan0 --wan wan0 \
        --remote 192.168.100.0/24,192.168.200.0/24 --local 172.16.10.0/24 \
        --lan-mac "$MAC_H2" --wan-mac "$MAC_WAN2" \
        --queues "$q" --duration "$dur" >"$W/fwd-gw2-r$round.json" 2>"$W/fwd-gw2-r$round.err" &
    p2=$!; BG_PIDS+=("$p2")
    for i in $(seq 1 50); do
        grep -q ready "$W/fwd-gw1-r$round.err" && grep -q ready "$W/fwd-gw2-r$round.err" && break
        sleep 0.1
    done
    if reach 192.168.100.10 && reach 192.168.200.10; then
        run_sizes "forward-q$q" forward "$q" 1 "$round" "$p1" "$p2"
    else
        skip "forward-q$q: no connectivity through xdp_forward: $(cat "$W/fwd-gw1-r$round.err" "$W/fwd-gw2-r$round.err" | tail -n 4 | tr '\n' ' ')"
    fi
    stop_pid "$p1"; stop_pid "$p2"
    cat "$W/fwd-gw1-r$round.json" "$W/fwd-gw2-r$round.json" >>"$OUT/xdp_forward.jsonl" 2>/dev/null || true
    ip -n "$WAN" route del 192.168.100.0/24
    ip -n "$WAN" route del 192.168.200.0/24
    ip -n "$WAN" route del 172.16.10.0/24
}

# ---------------------------------------------------------------- (b) strongSwan
leg_swan() {
    local round=$1 tunnels=$2 d1=$W/swan-gw1 d2=$W/swan-gw2 p1 p2
    echo "-- strongSwan kernel-libipsec, $tunnels tunnel(s), round $round"
    if ! command -v swanctl >/dev/null || [ ! -x /usr/lib/ipsec/charon ]; then
        skip "swan-t$tunnels: strongSwan (swanctl, charon) not installed"; return 0
    fi
    for g in "$GW1" "$GW2"; do ip netns exec "$g" sysctl -qw net.ipv4.ip_forward=1; done
    SWAN_LOG=quiet $SW/charon-ns.sh render site1 "$d1" cbc none
    SWAN_LOG=quiet $SW/charon-ns.sh render site2 "$d2" cbc none
    local ok=1
    SWAN_UP+=("$d2"); ( $SW/charon-ns.sh start "$GW2" "$d2" ) || ok=0
    SWAN_UP+=("$d1"); ( $SW/charon-ns.sh start "$GW1" "$d1" ) || ok=0
    if [ "$ok" = 1 ]; then
        $SW/charon-ns.sh swanctl "$d1" --initiate --child YELLOW --timeout 10 >"$W/swan-init.out" 2>&1 || ok=0
        if [ "$tunnels" = 2 ]; then
            $SW/charon-ns.sh swanctl "$d1" --initiate --child BLUE --timeout 10 >>"$W/swan-init.out" 2>&1 || ok=0
        fi
    fi
    if [ "$ok" = 1 ] && reach 192.168.100.10 && { [ "$tunnels" = 1 ] || reach 192.168.200.10; }; then
        p1=$(cat "$d1/run/charon.pid"); p2=$(cat "$d2/run/charon.pid")
        run_sizes "swan-t$tunnels" swan 0 "$tunnels" "$round" "$p1" "$p2"
        $SW/charon-ns.sh swanctl "$d1" --list-sas >"$W/swan-sas-t$tunnels-r$round.txt" 2>&1 || true
    else
        skip "swan-t$tunnels: tunnel did not come up: $(tail -n 3 "$W/swan-init.out" 2>/dev/null | tr '\n' ' ')"
    fi
    $SW/charon-ns.sh stop "$GW1" "$d1" || true
    $SW/charon-ns.sh stop "$GW2" "$d2" || true
    SWAN_UP=()
    for g in "$GW1" "$GW2"; do ip netns exec "$g" sysctl -qw net.ipv4.ip_forward=0; done
}

# ---------------------------------------------------------------- (c) espgate
# espgate_config SITE WORKERS TUNNELS FILE: the seed's gateway for this
# topology (interfaces lan0/wan0, next-hop MACs given, no rekey during the run).
espgate_config() {
    local site=$1 workers=$2 tunnels=$3 file=$4 cores="[0]"
    [ "$workers" = 2 ] && cores="[0, 1]"
    local name local_addr peer_addr lan_pfx lan_mac wan_mac acl
    if [ "$site" = site1 ]; then
        local_addr=10.255.1.2; peer_addr=10.255.2.2; lan_mac=$MAC_H1; wan_mac=$MAC_WAN1
        lan_pfx='"192.168.100.0/24", "192.168.200.0/24"'
        acl="access-list lt_acl extended permit ip 192.168.100.0 255.255.255.0 172.16.10.0 255.255.255.0"
        [ "$tunnels" = 2 ] && acl="$acl
access-list lt_acl extended permit ip 192.168.200.0 255.255.255.0 172.16.10.0 255.255.255.0"
    else
        local_addr=10.255.2.2; peer_addr=10.255.1.2; lan_mac=$MAC_H2; wan_mac=$MAC_WAN2
        lan_pfx='"172.16.10.0/24"'
        acl="access-list lt_acl extended permit ip 172.16.10.0 255.255.255.0 192.168.100.0 255.255.255.0"
        [ "$tunnels" = 2 ] && acl="$acl
access-list lt_acl extended permit ip 172.16.10.0 255.255.255.0 192.168.200.0 255.255.255.0"
    fi
    cat >"$file" <<EOF
# generated by scripts/loadtest.sh
[gateway]
name = "lt-$site"
workers = $workers
cores = $cores
local_address = "$local_addr"
control_socket = "$W/espgate-$site.sock"

[[interfaces]]
name = "lan0"
role = "lan"
backend = "af_xdp"
queue = 0
prefixes = [$lan_pfx]
peer_mac = "$lan_mac"

[[interfaces]]
name = "wan0"
role = "wan"
backend = "af_xdp"
queue = 0
peer_mac = "$wan_mac"

[ike]
local_id = "$local_addr"
proposals = ["aes256-sha256-modp2048"]
lifetime_secs = 86400
dpd_secs = 30
force_encap = false
# one child SA per worker (RFC 9611), so one tunnel uses both workers
sa_per_worker = true

[[peers]]
name = "peer"
address = "$peer_addr"
id = "$peer_addr"
psk = "loadtest-psk-0123456789abcdef"

[esp]
proposals = ["aes256-sha256"]
pfs = "modp2048"
lifetime_secs = 28800
lifetime_kb = 1000000000
replay_window = 1024
esn = false

[acl]
name = "lt_acl"
no_match = "bypass"
text = """
$acl
"""

[acquire]
mode = "queue"
max_packets = 64
max_bytes = 262144
timeout_ms = 3000
EOF
}

ESPGATE_DEAD=""
leg_espgate() {
    local round=$1 workers=$2 tunnels=$3 p1 p2 i
    local cfg="espgate-w$workers-t$tunnels"
    echo "-- espgate, $workers worker(s), $tunnels tunnel(s), round $round"
    if [ -n "$ESPGATE_DEAD" ]; then skip "$cfg: $ESPGATE_DEAD"; return 0; fi
    if [ ! -x "$ESPGATE" ]; then
        ESPGATE_DEAD="no espgate binary at $ESPGATE"; skip "$cfg: $ESPGATE_DEAD"; return 0
    fi
    espgate_config site1 "$workers" "$tunnels" "$W/$cfg-gw1.toml"
    espgate_config site2 "$workers" "$tunnels" "$W/$cfg-gw2.toml"
    if ! "$ESPGATE" check -c "$W/$cfg-gw1.toml" >"$W/$cfg-check.out" 2>&1; then
        skip "$cfg: espgate check rejects the generated config: $(tail -n 3 "$W/$cfg-check.out" | tr '\n' ' ')"
        return 0
    fi
    ip netns exec "$GW2" "$ESPGATE" run -c "$W/$cfg-gw2.toml" >"$W/$cfg-gw2.log" 2>&1 &
    p2=$!; BG_PIDS+=("$p2")
    ip netns exec "$GW1" "$ESPGATE" run -c "$W/$cfg-gw1.toml" >"$W/$cfg-gw1.log" 2>&1 &
    p1=$!; BG_PIDS+=("$p1")
    for i in $(seq 1 20); do
        kill -0 "$p1" 2>/dev/null && kill -0 "$p2" 2>/dev/null || break
        sleep 0.1
    done
    if ! kill -0 "$p1" 2>/dev/null || ! kill -0 "$p2" 2>/dev/null; then
        local why
        why=$(cat "$W/$cfg-gw1.log" "$W/$cfg-gw2.log" | grep -v '^$' | tail -n 2 | tr '\n' ' ')
        ESPGATE_DEAD="espgate run exited at start: $why"
        skip "$cfg: $ESPGATE_DEAD"
        stop_pid "$p1"; stop_pid "$p2"; return 0
    fi
    if reach 192.168.100.10 15 && { [ "$tunnels" = 1 ] || reach 192.168.200.10 15; }; then
        run_sizes "$cfg" espgate "$workers" "$tunnels" "$round" "$p1" "$p2"
        "$ESPGATE" show ipsec-sa --socket "$W/espgate-site1.sock" >"$W/$cfg-ipsec-sa-r$round.txt" 2>&1 || true
    else
        skip "$cfg: no traffic through the espgate tunnel after 15 pings: $(tail -n 3 "$W/$cfg-gw1.log" | tr '\n' ' ')"
    fi
    stop_pid "$p1"; stop_pid "$p2"
}

for round in $(seq 1 "$ROUNDS"); do
    for q in 1 2; do
        topo "$q"
        for leg in $LEGS; do
            case "$leg" in
                forward) leg_forward "$round" "$q" ;;
                swan) if [ "$q" = 1 ]; then leg_swan "$round" 1; leg_swan "$round" 2; fi ;;
                espgate) leg_espgate "$round" "$q" 1; leg_espgate "$round" "$q" 2 ;;
                *) echo "unknown leg $leg" >&2; exit 2 ;;
            esac
        done
    done
done
[ -f "$SKIP" ] && sort -u "$SKIP" -o "$SKIP"

echo "== results: $RES"
python3 $LT summary "$RES" | tee "$OUT/summary.txt"
if [ "$REPORT" = 1 ]; then
    scripts/loadtest-report.sh "$OUT"
fi
