#!/usr/bin/env bash
# The load test's namespaces: the seed's two sites, as in
# scripts/strongswan/topo.sh (same names, interfaces and addresses, so the
# strongSwan helper scripts run on it unchanged), with QUEUES rx/tx queues on
# every veth (espgate and xdp_forward bind one AF_XDP socket per queue and
# run one worker per queue) and a WAN MTU of WAN_MTU (1600 default: a
# 1500-byte LAN packet still fits after ESP).
#
#   PFXh1 --lan0-- PFXgw1 --wan0/site1-- PFXwan --site2/wan0-- PFXgw2 --lan0-- PFXh2
#   192.168.100.10    .100.1, .200.1      10.255.1.1              172.16.10.1    172.16.10.11
#   192.168.200.10    10.255.1.2          10.255.2.1              10.255.2.2
#
#   topo.sh up PFX [QUEUES] [WAN_MTU]   create (fails if a namespace exists)
#   topo.sh down PFX                    delete whatever of them exists
#
# IP forwarding is ON in the WAN router only; the gateways start with it off
# (espgate/xdp_forward take their traffic with XDP; a kernel IPsec peer
# turns it on). The WAN has no route to the LANs (cleartext leaks die there).
set -euo pipefail

cmd=${1:-}; P=${2:-}; Q=${3:-1}; MTU=${4:-1600}
[ -n "$cmd" ] && [ -n "$P" ] || { echo "usage: $0 up|down PREFIX [QUEUES] [WAN_MTU]" >&2; exit 2; }
NS=("${P}h1" "${P}gw1" "${P}wan" "${P}gw2" "${P}h2")

down() {
    local ns
    for ns in "${NS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
}

veth() { # veth NS_A IF_A NS_B IF_B [MTU]
    ip link add "$2" netns "$1" numtxqueues "$Q" numrxqueues "$Q" type veth \
        peer name "$4" netns "$3" numtxqueues "$Q" numrxqueues "$Q"
    if [ -n "${5:-}" ]; then
        ip -n "$1" link set "$2" mtu "$5"
        ip -n "$3" link set "$4" mtu "$5"
    fi
    ip -n "$1" link set "$2" up
    ip -n "$3" link set "$4" up
}

up() {
    local ns
    for ns in "${NS[@]}"; do
        if ip netns list | grep -qw "$ns"; then echo "namespace $ns already exists" >&2; exit 1; fi
    done
    trap 'down' ERR
    for ns in "${NS[@]}"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
    local h1=${P}h1 gw1=${P}gw1 wan=${P}wan gw2=${P}gw2 h2=${P}h2
    veth "$h1" lan0 "$gw1" lan0
    veth "$gw1" wan0 "$wan" site1 "$MTU"
    veth "$wan" site2 "$gw2" wan0 "$MTU"
    veth "$gw2" lan0 "$h2" lan0

    ip -n "$h1" addr add 192.168.100.10/24 dev lan0
    ip -n "$h1" addr add 192.168.200.10/24 dev lan0
    ip -n "$h1" route add default via 192.168.100.1
    ip -n "$gw1" addr add 192.168.100.1/24 dev lan0
    ip -n "$gw1" addr add 192.168.200.1/24 dev lan0
    ip -n "$gw1" addr add 10.255.1.2/24 dev wan0
    ip -n "$gw1" route add default via 10.255.1.1
    ip -n "$wan" addr add 10.255.1.1/24 dev site1
    ip -n "$wan" addr add 10.255.2.1/24 dev site2
    ip -n "$gw2" addr add 10.255.2.2/24 dev wan0
    ip -n "$gw2" addr add 172.16.10.1/24 dev lan0
    ip -n "$gw2" route add default via 10.255.2.1
    ip -n "$h2" addr add 172.16.10.11/24 dev lan0
    ip -n "$h2" route add default via 172.16.10.1

    for ns in "$gw1" "$wan" "$gw2"; do
        ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0
        ip netns exec "$ns" sysctl -qw net.ipv4.conf.default.rp_filter=0
    done
    ip netns exec "$wan" sysctl -qw net.ipv4.ip_forward=1
    ip netns exec "$gw1" sysctl -qw net.ipv4.ip_forward=0
    ip netns exec "$gw2" sysctl -qw net.ipv4.ip_forward=0
    trap - ERR
}

case "$cmd" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down PREFIX [QUEUES] [WAN_MTU]" >&2; exit 2 ;;
esac
