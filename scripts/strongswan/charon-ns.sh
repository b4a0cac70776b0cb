#!/usr/bin/env bash
# Run one strongSwan charon inside a network namespace, with all its files in
# one directory (DIR):
#
#   charon-ns.sh render site1|site2 DIR [cbc|gcm] [trap|start|none]
#                               write DIR/strongswan.conf and DIR/swanctl.conf
#                               from the templates here (PSK: $SWAN_PSK or the
#                               fixed test PSK; SWAN_LOG=quiet drops the
#                               key dumps for timing runs)
#   charon-ns.sh start NS DIR   start charon in NS and load DIR/swanctl.conf
#   charon-ns.sh stop NS DIR    stop it (SIGTERM, then SIGKILL after 5 s)
#   charon-ns.sh swanctl DIR ARGS...   run swanctl against that instance
#
# Why a bind mount: charon's pid file path is compiled in (/var/run ->
# /run/charon.pid) and it refuses to start when another instance's pid file is
# there. `ip netns exec` already gives the command its own mount namespace, so
# binding DIR/run over /run inside it is invisible to the host and to other
# instances. The vici socket is configured into DIR/run too, and swanctl
# reaches it from the host namespace by path (unix sockets with a path are not
# tied to a network namespace).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CHARON=${CHARON:-/usr/lib/ipsec/charon}
TEST_PSK=${SWAN_PSK:-espgate-interop-test-psk-0123456789}

usage() { sed -n '2,13p' "$0" >&2; exit 2; }

render() {
    local site=$1 dir=$2 esp=${3:-cbc} start=${4:-}
    case "$site" in site1|site2) ;; *) usage ;; esac
    # Site1 starts the tunnel on interesting traffic (the seed's Site1-FW),
    # Site2 only answers, unless told otherwise.
    if [ -z "$start" ]; then
        if [ "$site" = site1 ]; then start=trap; else start=none; fi
    fi
    local prop
    case "$esp" in
        cbc) prop=aes256-sha256-modp2048 ;;
        gcm) prop=aes256gcm16-modp2048 ;;
        *) echo "esp must be cbc or gcm" >&2; exit 2 ;;
    esac
    mkdir -p "$dir/run"
    dir=$(cd "$dir" && pwd)
    local levels=()
    if [ "${SWAN_LOG:-keys}" = quiet ]; then
        # Hex dumps of every key and message cost milliseconds per exchange.
        levels=(-e 's/^\( *\)ike = 4$/\1ike = 1/' -e 's/^\( *\)chd = 4$/\1chd = 1/'
                -e 's/^\( *\)knl = 2$/\1knl = 1/' -e 's/^\( *\)cfg = 2$/\1cfg = 1/')
    fi
    sed -e "s|@DIR@|$dir|g" "${levels[@]}" "$HERE/strongswan.conf.in" >"$dir/strongswan.conf"
    sed -e "s|@ESP@|$prop|g" -e "s|@START@|$start|g" -e "s|@PSK@|$TEST_PSK|g" \
        "$HERE/$site.swanctl.conf.in" >"$dir/swanctl.conf"
}

# swan DIR --command [ARGS...]: swanctl wants --uri after the command.
swan() {
    local dir=$1 op=$2; shift 2
    STRONGSWAN_CONF="$dir/strongswan.conf" swanctl "$op" --uri "unix://$dir/run/charon.vici" "$@"
}

start() {
    local ns=$1 dir
    dir=$(cd "$2" && pwd)
    [ -x "$CHARON" ] || { echo "charon not found at $CHARON" >&2; exit 3; }
    [ -f "$dir/strongswan.conf" ] && [ -f "$dir/swanctl.conf" ] \
        || { echo "$dir lacks strongswan.conf/swanctl.conf (run render)" >&2; exit 2; }
    mkdir -p "$dir/run"
    rm -f "$dir/run/charon.pid" "$dir/run/charon.vici"
    # setsid: charon must outlive this script and not get the caller's ^C.
    setsid ip netns exec "$ns" sh -c '
        mount --bind "$1/run" /run || exit 1
        STRONGSWAN_CONF="$1/strongswan.conf" exec "$2"' sh "$dir" "$CHARON" \
        >"$dir/charon.stdout" 2>&1 </dev/null &
    local i
    for i in $(seq 1 100); do
        [ -S "$dir/run/charon.vici" ] && break
        if ! kill -0 $! 2>/dev/null; then
            echo "charon in $ns exited at start:" >&2
            tail -n 20 "$dir/charon.stdout" "$dir/charon.log" >&2 2>/dev/null || true
            exit 1
        fi
        sleep 0.05
    done
    [ -S "$dir/run/charon.vici" ] || { echo "charon in $ns: no vici socket after 5 s" >&2; exit 1; }
    swan "$dir" --load-all --file "$dir/swanctl.conf" >"$dir/load.out" 2>&1 \
        || { cat "$dir/load.out" >&2; exit 1; }
}

stop() {
    local ns=$1 dir=$2 pid i
    [ -f "$dir/run/charon.pid" ] || return 0
    pid=$(cat "$dir/run/charon.pid")
    # The pid file was written inside the namespace but pids are global (no
    # pid namespace); check it is really our charon before signalling.
    if [ -n "$pid" ] && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$CHARON")" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/run/charon.pid" "$dir/run/charon.vici"
    : "$ns"
}

case "${1:-}" in
    render) shift; [ $# -ge 2 ] || usage; render "$@" ;;
    start) [ $# -eq 3 ] || usage; start "$2" "$3" ;;
    stop) [ $# -eq 3 ] || usage; stop "$2" "$3" ;;
    swanctl) shift; [ $# -ge 1 ] || usage; d=$1; shift; swan "$(cd "$d" && pwd)" "$@" ;;
    *) usage ;;
esac
