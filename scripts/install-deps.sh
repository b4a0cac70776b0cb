#!/usr/bin/env bash
# Debian packages the tests and benches use: OpenSSL and scapy (independent
# ESP/crypto cross-checks), strongSwan (IKEv2 interop peer), tshark/tcpdump
# (captures), iperf3 and iproute2 (veth load tests).
set -euo pipefail
pkgs=(openssl python3-scapy python3-cryptography tshark tcpdump iperf3 iproute2 iputils-ping ethtool python3-matplotlib
      strongswan-charon strongswan-swanctl libcharon-extra-plugins
      libstrongswan-standard-plugins libstrongswan-extra-plugins)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# strongSwan's charon is started by our tests, not by systemd.
systemctl disable --now strongswan 2>/dev/null || true
