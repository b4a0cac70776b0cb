#!/usr/bin/env bash
# The seed's two-site topology in network namespaces, joined by veth pairs:
#
#   PFXh1 --- PFXgw1 --- PFXwan --- PFXgw2 --- PFXh2
#   YELLOW .100.10 / BLUE .200.10   10.255.1.2 | 10.255.2.2   PURPLE 172.16.10.11
#
# Every address lives inside these namespaces; nothing touches the host's own
# interfaces, so several copies (different PFX) can run side by side.
#
#   topo.sh up PFX     create (fails if any of the namespaces exists)
#   topo.sh down PFX   delete whatever of them exists (idempotent)
set -euo pipefail

cmd=${1:-}; P=${2:-}
[ -n "$cmd" ] && [ -n "$P" ] || { echo "usage: $0 up|down PREFIX" >&2; exit 2; }
NS=("${P}h1" "${P}gw1" "${P}wan" "${P}gw2" "${P}h2")

down() {
    for ns in "${NS[@]}"; do
        ip netns del "$ns" 2>/dev/null || true
    done
}

# veth NS_A IF_A NS_B IF_B: one pair, created directly inside the two
# namespaces so the interface names never meet in the host namespace.
veth() {
    ip link add "$2" netns "$1" type veth peer name "$4" netns "$3"
    ip -n "$1" link set "$2" up
    ip -n "$3" link set "$4" up
}

up() {
    for ns in "${NS[@]}"; do
        if ip netns list | grep -qw "$ns"; then
            echo "namespace $ns already exists" >&2; exit 1
        fi
    done
    trap 'down' ERR
    for ns in "${NS[@]}"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
    local h1=${P}h1 gw1=${P}gw1 wan=${P}wan gw2=${P}gw2 h2=${P}h2
    veth "$h1" lan0 "$gw1" lan0
    veth "$gw1" wan0 "$wan" site1
    veth "$wan" site2 "$gw2" wan0
    veth "$gw2" lan0 "$h2" lan0

    # Site1 LAN: YELLOW and BLUE on one segment; h1 holds a host in each.
    ip -n "$h1" addr add 192.168.100.10/24 dev lan0
    ip -n "$h1" addr add 192.168.200.10/24 dev lan0
    ip -n "$h1" route add default via 192.168.100.1
    ip -n "$gw1" addr add 192.168.100.1/24 dev lan0
    ip -n "$gw1" addr add 192.168.200.1/24 dev lan0
    ip -n "$gw1" addr add 10.255.1.2/24 dev wan0
    ip -n "$gw1" route add default via 10.255.1.1

    # The WAN only routes between the two outside addresses: a packet for a
    # site LAN that leaks out unencrypted dies here instead of being delivered.
    ip -n "$wan" addr add 10.255.1.1/24 dev site1
    ip -n "$wan" addr add 10.255.2.1/24 dev site2

    ip -n "$gw2" addr add 10.255.2.2/24 dev wan0
    ip -n "$gw2" addr add 172.16.10.1/24 dev lan0
    ip -n "$gw2" route add default via 10.255.2.1
    ip -n "$h2" addr add 172.16.10.11/24 dev lan0
    ip -n "$h2" route add default via 172.16.10.1

    for ns in "$gw1" "$wan" "$gw2"; do
        ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
        ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0
        ip netns exec "$ns" sysctl -qw net.ipv4.conf.default.rp_filter=0
    done
    trap - ERR
}

case "$cmd" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down PREFIX" >&2; exit 2 ;;
esac
