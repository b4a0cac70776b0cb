#!/usr/bin/env bash
# The seed's two-site network in network namespaces (root only).
#
#   P-y    YELLOW host  eth0 192.168.100.10/24 ─┐
#   P-b    BLUE host    eth0 192.168.200.10/24 ─┤ yellow 192.168.100.1/24
#                                                │ blue   192.168.200.1/24
#   P-r1   Site1 LAN router                 lan0 10.1.0.2/30
#                                                │
#   P-gw1  Site1 gateway  lan0 10.1.0.1/30, wan0 10.255.1.2/24
#                                                │
#   P-wan  WAN router   to-gw1 10.255.1.1/24, to-gw2 10.255.2.1/24
#                                                │
#   P-gw2  Site2 gateway  wan0 10.255.2.2/24, lan0 10.2.0.1/30
#                                                │
#   P-r2   Site2 LAN router   lan0 10.2.0.2/30, purple 172.16.10.1/24
#   P-p    PURPLE hosts eth0 172.16.10.11/24 and 172.16.10.21/24
#
# P is the prefix (default "eg"), so several copies can exist at once (tests
# use their own). A gateway has ONE LAN interface, as espgate's dataplane
# sends every LAN frame to one next hop: the LAN router, behind which the
# site's protected networks sit. Gateways route their LANs via that router
# and everything else via the WAN router; the WAN router has no routes to
# the LANs, as on the Internet: LAN-to-LAN traffic gets through only inside
# the tunnel (gateway to gateway works).
#
# Usage: scripts/topology.sh up [--prefix P] [--wan-mtu N] [--forward] [--queues N]
#        scripts/topology.sh down [--prefix P]
#        scripts/topology.sh show [--prefix P]
#
# Every interface gets a fixed MAC (table below) so gateway configs can name
# their next hop's MAC (`peer_mac`) without an ARP lookup:
#   gw1 lan0 02:e9:01:01:00:01   r1 lan0   02:e9:01:01:00:02
#   gw1 wan0 02:e9:01:00:00:02   wan to-gw1 02:e9:01:00:00:01
#   gw2 wan0 02:e9:02:00:00:02   wan to-gw2 02:e9:02:00:00:01
#   gw2 lan0 02:e9:02:02:00:01   r2 lan0   02:e9:02:02:00:02
#   y eth0 02:e9:64:00:00:0a  r1 yellow 02:e9:64:00:00:01
#   b eth0 02:e9:c8:00:00:0a  r1 blue   02:e9:c8:00:00:01
#   p eth0 02:e9:10:00:00:0b  r2 purple 02:e9:10:00:00:01
#
# IP forwarding in the gateway namespaces is OFF unless --forward: espgate
# takes protected traffic off the wire with XDP, and with forwarding off the
# kernel can never leak cleartext LAN traffic onto the WAN when espgate is
# not running. Use --forward for a kernel IPsec peer (strongSwan).
#
# Tx checksum offload is off on every veth (see veth() below).
#
# --queues N gives the gateways' veths N rx/tx queues (one AF_XDP socket,
# so one espgate worker, per queue).
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

P=eg
ROLES=(y b r1 gw1 wan gw2 r2 p)

die() { echo "topology.sh: $*" >&2; exit 1; }

names() {
    local r
    for r in "${ROLES[@]}"; do printf '%s ' "$P-$r"; done
}

exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

# veth NS1 IF1 MAC1 NS2 IF2 MAC2 [QUEUES]
veth() {
    local q=()
    [ -n "${7:-}" ] && q=(numrxqueues "$7" numtxqueues "$7")
    ip link add "$2" netns "$1" address "$3" "${q[@]}" type veth \
        peer name "$5" netns "$4" address "$6" "${q[@]}"
    ip -n "$1" link set "$2" up
    ip -n "$4" link set "$5" up
    # Checksums in full on the wire: with tx offload a veth hands on
    # CHECKSUM_PARTIAL packets whose L4 checksum is only the pseudo-header
    # sum, and the AF_XDP copy of such a packet (encrypted as is) arrives
    # at the far host with a wrong TCP/UDP checksum. Real NICs on the LAN
    # send complete checksums.
    ip netns exec "$1" ethtool -K "$2" tx off >/dev/null
    ip netns exec "$4" ethtool -K "$5" tx off >/dev/null
}

up() {
    local wan_mtu="" forward=0 queues=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --wan-mtu) [ $# -ge 2 ] || die "--wan-mtu needs a value"; wan_mtu="$2"; shift 2 ;;
            --queues) [ $# -ge 2 ] || die "--queues needs a value"; queues="$2"; shift 2 ;;
            --forward) forward=1; shift ;;
            *) die "unknown option $1" ;;
        esac
    done
    [ "$(id -u)" = 0 ] || die "needs root"
    command -v ethtool >/dev/null || die "needs ethtool (apt-get install ethtool)"
    local ns
    for ns in $(names); do
        exists "$ns" && die "$ns exists; run '$0 down --prefix $P' first"
    done
    for ns in $(names); do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done

    veth "$P-y" eth0 02:e9:64:00:00:0a "$P-r1" yellow 02:e9:64:00:00:01
    veth "$P-b" eth0 02:e9:c8:00:00:0a "$P-r1" blue 02:e9:c8:00:00:01
    veth "$P-r1" lan0 02:e9:01:01:00:02 "$P-gw1" lan0 02:e9:01:01:00:01 "$queues"
    veth "$P-gw1" wan0 02:e9:01:00:00:02 "$P-wan" to-gw1 02:e9:01:00:00:01 "$queues"
    veth "$P-wan" to-gw2 02:e9:02:00:00:01 "$P-gw2" wan0 02:e9:02:00:00:02 "$queues"
    veth "$P-gw2" lan0 02:e9:02:02:00:01 "$P-r2" lan0 02:e9:02:02:00:02 "$queues"
    veth "$P-r2" purple 02:e9:10:00:00:01 "$P-p" eth0 02:e9:10:00:00:0b

    ip -n "$P-y" addr add 192.168.100.10/24 dev eth0
    ip -n "$P-b" addr add 192.168.200.10/24 dev eth0
    ip -n "$P-r1" addr add 192.168.100.1/24 dev yellow
    ip -n "$P-r1" addr add 192.168.200.1/24 dev blue
    ip -n "$P-r1" addr add 10.1.0.2/30 dev lan0
    ip -n "$P-gw1" addr add 10.1.0.1/30 dev lan0
    ip -n "$P-gw1" addr add 10.255.1.2/24 dev wan0
    ip -n "$P-wan" addr add 10.255.1.1/24 dev to-gw1
    ip -n "$P-wan" addr add 10.255.2.1/24 dev to-gw2
    ip -n "$P-gw2" addr add 10.255.2.2/24 dev wan0
    ip -n "$P-gw2" addr add 10.2.0.1/30 dev lan0
    ip -n "$P-r2" addr add 10.2.0.2/30 dev lan0
    ip -n "$P-r2" addr add 172.16.10.1/24 dev purple
    ip -n "$P-p" addr add 172.16.10.11/24 dev eth0
    ip -n "$P-p" addr add 172.16.10.21/24 dev eth0

    ip -n "$P-y" route add default via 192.168.100.1
    ip -n "$P-b" route add default via 192.168.200.1
    ip -n "$P-p" route add default via 172.16.10.1
    ip -n "$P-r1" route add default via 10.1.0.1
    ip -n "$P-r2" route add default via 10.2.0.1
    ip -n "$P-gw1" route add 192.168.100.0/24 via 10.1.0.2
    ip -n "$P-gw1" route add 192.168.200.0/24 via 10.1.0.2
    ip -n "$P-gw1" route add default via 10.255.1.1
    ip -n "$P-gw2" route add 172.16.10.0/24 via 10.2.0.2
    ip -n "$P-gw2" route add default via 10.255.2.1

    for ns in "$P-wan" "$P-r1" "$P-r2"; do
        ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
    done
    for ns in "$P-gw1" "$P-gw2"; do
        ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward="$forward"
    done

    if [ -n "$wan_mtu" ]; then
        ip -n "$P-gw1" link set wan0 mtu "$wan_mtu"
        ip -n "$P-wan" link set to-gw1 mtu "$wan_mtu"
        ip -n "$P-wan" link set to-gw2 mtu "$wan_mtu"
        ip -n "$P-gw2" link set wan0 mtu "$wan_mtu"
    fi
    echo "topology up: $(names)"
}

down() {
    # Deleting a namespace deletes the veth ends in it, and so the pairs.
    local ns
    for ns in $(names); do
        if exists "$ns"; then
            ip netns del "$ns"
        fi
    done
    echo "topology down"
}

show() {
    local ns
    for ns in $(names); do
        echo "== $ns"
        ip -n "$ns" -br addr 2>/dev/null || echo "(absent)"
    done
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a value"; P="$2"; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
case "$P" in
    ''|*[!A-Za-z0-9_-]*) die "bad prefix '$P'" ;;
esac
case "$cmd" in
    up) up "${args[@]+"${args[@]}"}" ;;
    down) down ;;
    show) show ;;
    *) die "usage: $0 up [--prefix P] [--wan-mtu N] [--forward] [--queues N] | down [--prefix P] | show [--prefix P]" ;;
esac
