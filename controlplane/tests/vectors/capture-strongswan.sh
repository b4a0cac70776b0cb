#!/bin/bash
# Recaptures strongswan-5.9.8-ikev2-psk.txt: two charon instances (each in its
# own mount namespace for /run) in a private network namespace, loopback only.
# The initiator brings up child "lan" in IKE_AUTH (AES-CBC/SHA-256) and "lan2"
# with CREATE_CHILD_SA (AES-GCM-16, PFS MODP-2048), then deletes the IKE SA.
# The traffic-selector subnets get addresses on lo because libipsec installs
# routes that need a local address inside the selector.
# Needs root, strongswan-charon, strongswan-swanctl, kernel-libipsec, tcpdump, tshark.
# Usage: sudo ./capture-strongswan.sh OUTDIR   (then inspect OUTDIR/*.log, OUTDIR/pair.pcap)
set -euo pipefail
out=$(realpath "${1:?usage: $0 OUTDIR}")
mkdir -p "$out/init" "$out/resp"
for side in init resp; do
  port=""; [ $side = init ] && port=$'  port = 1500\n  port_nat_t = 14500'
  cat > "$out/$side/strongswan.conf" <<CONF
charon {
  load = random nonce openssl pem pkcs1 x509 revocation constraints pubkey curve25519 hmac kdf sha1 sha2 aes cmac gcm kernel-libipsec kernel-netlink socket-default vici updown
  filelog {
    stdout {
      default = 1
      ike = 4
      chd = 4
      knl = 0
    }
  }
$port
}
CONF
  if [ $side = init ]; then me=127.0.0.1 peer=127.0.0.2 lts=10.1.0.0/24 lts2=10.3.0.0/24 rts=10.2.0.0/24 rts2=10.2.0.0/24
  else me=127.0.0.2 peer=127.0.0.1 lts=10.2.0.0/24 lts2=10.2.0.0/24 rts=10.1.0.0/24 rts2=10.3.0.0/24; fi
  cat > "$out/$side/swanctl.conf" <<CONF
connections {
  seed {
    version = 2
    local_addrs = $me
    remote_addrs = $peer
    proposals = aes256-sha256-modp2048
    local {
      auth = psk
      id = $me
    }
    remote {
      auth = psk
      id = $peer
    }
    children {
      lan {
        local_ts = $lts
        remote_ts = $rts
        esp_proposals = aes256-sha256-modp2048
      }
      lan2 {
        local_ts = $lts2
        remote_ts = $rts2
        esp_proposals = aes256gcm16-modp2048
      }
    }
  }
}
secrets {
  ike-1 {
    secret = "cisco123"
  }
}
CONF
done
charon_in_ns() { # side, then commands run once vici is up
  local side=$1; shift
  unshare -m bash -c "mount -t tmpfs tmpfs /run
    STRONGSWAN_CONF=$out/$side/strongswan.conf /usr/lib/ipsec/charon > $out/$side/charon.log 2>&1 &
    for i in \$(seq 1 50); do [ -S /run/charon.vici ] && break; sleep 0.1; done
    swanctl --load-all --file $out/$side/swanctl.conf > /dev/null
    $*
    kill %1"
}
export -f charon_in_ns
export out
timeout 60 unshare -n bash -c '
  ip link set lo up
  for a in 10.1.0.1/24 10.2.0.1/24 10.3.0.1/24; do ip addr add $a dev lo; done
  tcpdump -i lo -U -w "$out/pair.pcap" udp > /dev/null 2>&1 & tp=$!
  sleep 1
  charon_in_ns resp "sleep 10" & rp=$!
  sleep 2
  charon_in_ns init "timeout 5 swanctl --initiate --child lan --timeout 3 || true; timeout 5 swanctl --initiate --child lan2 --timeout 3 || true; sleep 1"
  wait $rp || true
  sleep 1; kill $tp'
echo "captured: $(tshark -r "$out/pair.pcap" | wc -l) packets in $out/pair.pcap"
