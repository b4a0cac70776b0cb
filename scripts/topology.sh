#!/usr/bin/env bash
# The seed's two-site network in network namespaces (root only).
#
#   eg-y   YELLOW host  eth0 192.168.100.10/24 ─┐
#   eg-b   BLUE host    eth0 192.168.200.10/24 ─┤ lan-y 192.168.100.1/24
#                                                │ lan-b 192.168.200.1/24
#   eg-gw1 Site1 gateway                  wan0 10.255.1.2/24
#                                                │
#   eg-wan WAN router   to-gw1 10.255.1.1/24, to-gw2 10.255.2.1/24, forwarding on
#                                                │
#   eg-gw2 Site2 gateway                  wan0 10.255.2.2/24, lan-p 172.16.10.1/24
#   eg-p   PURPLE hosts eth0 172.16.10.11/24 and 172.16.10.21/24
#
# Hosts route by default via their gateway, gateways via the WAN router.
# The WAN router has no routes to the LANs, as on the Internet: LAN-to-LAN
# traffic gets through only inside the tunnel (gateway to gateway works).
#
# Usage: scripts/topology.sh up [--wan-mtu N] [--forward]
#        scripts/topology.sh down
#        scripts/topology.sh show
#
# Every interface gets a fixed MAC (table below) so gateway configs can name
# their next hop's MAC (`peer_mac`) without an ARP lookup:
#   eg-y eth0 02:e9:64:00:00:0a   eg-gw1 lan-y  02:e9:64:00:00:01
#   eg-b eth0 02:e9:c8:00:00:0a   eg-gw1 lan-b  02:e9:c8:00:00:01
#   eg-gw1 wan0 02:e9:01:00:00:02 eg-wan to-gw1 02:e9:01:00:00:01
#   eg-gw2 wan0 02:e9:02:00:00:02 eg-wan to-gw2 02:e9:02:00:00:01
#   eg-gw2 lan-p 02:e9:10:00:00:01 eg-p eth0    02:e9:10:00:00:0b
#
# IP forwarding in the gateway namespaces is OFF unless --forward: espgate
# takes protected traffic off the wire with XDP, and with forwarding off the
# kernel can never leak cleartext LAN traffic onto the WAN when espgate is
# not running. Use --forward for a kernel IPsec peer (strongSwan).
#
# XDP on veth (what the af_xdp backend relies on, kernel 6.x):
# * native (driver) XDP attaches on veth only when the PEER's MTU is at most
#   ~3500 bytes (one page minus XDP headroom and skb_shared_info), since our
#   program is not multi-buffer aware; with a larger peer MTU the backend
#   falls back to generic (SKB) XDP. Keep --wan-mtu ≤ 3500 for native mode.
# * AF_XDP on veth works in copy mode only (no zero-copy).
# * For AF_XDP rx the native program needs nothing on the peer. Only
#   XDP_REDIRECT *into* a veth (ndo_xdp_xmit, not used here) needs an XDP
#   program or GRO on the peer's end.
set -euo pipefail

NS=(eg-y eg-b eg-gw1 eg-wan eg-gw2 eg-p)

die() { echo "topology.sh: $*" >&2; exit 1; }

# veth NS1 IF1 MAC1 NS2 IF2 MAC2
veth() {
    ip link add "$2" netns "$1" address "$3" type veth peer name "$5" netns "$4" address "$6"
    ip -n "$1" link set "$2" up
    ip -n "$4" link set "$5" up
}

up() {
    local wan_mtu="" forward=0
    while [ $# -gt 0 ]; do
        case "$1" in
            --wan-mtu) [ $# -ge 2 ] || die "--wan-mtu needs a value"; wan_mtu="$2"; shift 2 ;;
            --forward) forward=1; shift ;;
            *) die "unknown option $1" ;;
        esac
    done
    [ "$(id -u)" = 0 ] || die "needs root"
    for ns in "${NS[@]}"; do
        ip netns list | grep -qw "^$ns" && die "$ns exists; run '$0 down' first"
    done
    for ns in "${NS[@]}"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done

    veth eg-y eth0 02:e9:64:00:00:0a eg-gw1 lan-y 02:e9:64:00:00:01
    veth eg-b eth0 02:e9:c8:00:00:0a eg-gw1 lan-b 02:e9:c8:00:00:01
    veth eg-gw1 wan0 02:e9:01:00:00:02 eg-wan to-gw1 02:e9:01:00:00:01
    veth eg-wan to-gw2 02:e9:02:00:00:01 eg-gw2 wan0 02:e9:02:00:00:02
    veth eg-gw2 lan-p 02:e9:10:00:00:01 eg-p eth0 02:e9:10:00:00:0b

    ip -n eg-y addr add 192.168.100.10/24 dev eth0
    ip -n eg-b addr add 192.168.200.10/24 dev eth0
    ip -n eg-gw1 addr add 192.168.100.1/24 dev lan-y
    ip -n eg-gw1 addr add 192.168.200.1/24 dev lan-b
    ip -n eg-gw1 addr add 10.255.1.2/24 dev wan0
    ip -n eg-wan addr add 10.255.1.1/24 dev to-gw1
    ip -n eg-wan addr add 10.255.2.1/24 dev to-gw2
    ip -n eg-gw2 addr add 10.255.2.2/24 dev wan0
    ip -n eg-gw2 addr add 172.16.10.1/24 dev lan-p
    ip -n eg-p addr add 172.16.10.11/24 dev eth0
    ip -n eg-p addr add 172.16.10.21/24 dev eth0

    ip -n eg-y route add default via 192.168.100.1
    ip -n eg-b route add default via 192.168.200.1
    ip -n eg-p route add default via 172.16.10.1
    ip -n eg-gw1 route add default via 10.255.1.1
    ip -n eg-gw2 route add default via 10.255.2.1

    ip netns exec eg-wan sysctl -qw net.ipv4.ip_forward=1
    for gw in eg-gw1 eg-gw2; do
        ip netns exec "$gw" sysctl -qw net.ipv4.ip_forward="$forward"
    done

    if [ -n "$wan_mtu" ]; then
        ip -n eg-gw1 link set wan0 mtu "$wan_mtu"
        ip -n eg-wan link set to-gw1 mtu "$wan_mtu"
        ip -n eg-wan link set to-gw2 mtu "$wan_mtu"
        ip -n eg-gw2 link set wan0 mtu "$wan_mtu"
    fi
    echo "topology up: ${NS[*]}"
}

down() {
    # Deleting a namespace deletes the veth ends in it, and so the pairs.
    local ns
    for ns in "${NS[@]}"; do
        if ip netns list | grep -qw "^$ns"; then
            ip netns del "$ns"
        fi
    done
    echo "topology down"
}

show() {
    local ns
    for ns in "${NS[@]}"; do
        echo "== $ns"
        ip -n "$ns" -br addr 2>/dev/null || echo "(absent)"
    done
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
    up) up "$@" ;;
    down) down ;;
    show) show ;;
    *) die "usage: $0 up [--wan-mtu N] [--forward] | down | show" ;;
esac
