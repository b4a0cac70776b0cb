#!/usr/bin/env python3
"""Independent ESP cross-check for espgate, using scapy's SecurityAssociation
(and python `cryptography` underneath), code we did not write.

Reads one job per line on stdin and prints one result line per job:

  decrypt SUITE ENCR_HEX INTEG_HEX|- SPI LOCAL REMOTE UDP(0|1) ESN_HI|- OUTER_HEX
      -> the inner packet in hex
  encrypt SUITE ENCR_HEX INTEG_HEX|- SPI LOCAL REMOTE UDP(0|1) ESN_HI|- SEQ INNER_HEX
      -> the outer packet (IP [+ UDP 4500] + ESP) in hex

LOCAL/REMOTE are the tunnel ends of the *sender*; ESN_HI "-" = ESN off,
else ESN on with that high half. SUITE is espgate's api::Suite name. A job
that fails prints "ERR <reason>" instead.

scapy 2.5 leaves the ESN high bits out of the HMAC (it only puts them in
the AEAD AAD), so for CBC+HMAC with ESN this script computes and checks the
ICV itself with python's hmac over ESP || seq_hi (RFC 4303 §2.2.1) and
lets scapy do the decryption/encryption.
"""

import hashlib
import hmac
import struct
import sys
import warnings

warnings.filterwarnings("ignore")

from scapy.layers.inet import IP, UDP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402
from scapy.layers.ipsec import ESP, SecurityAssociation  # noqa: E402
from scapy.packet import Raw, raw  # noqa: E402

SUITES = {
    # name: (crypt_algo, auth_algo, hmac digest, icv_len)
    "Aes256CbcHmacSha256": ("AES-CBC", "SHA2-256-128", hashlib.sha256, 16),
    "Aes128CbcHmacSha256": ("AES-CBC", "SHA2-256-128", hashlib.sha256, 16),
    "Aes256CbcHmacSha1": ("AES-CBC", "HMAC-SHA1-96", hashlib.sha1, 12),
    "Aes128Gcm16": ("AES-GCM", None, None, 16),
    "Aes256Gcm16": ("AES-GCM", None, None, 16),
}


def ip_cls(addr):
    return IPv6 if ":" in addr else IP


def make_sa(a):
    crypt, auth, _, _ = SUITES[a.suite]
    hdr = ip_cls(a.local)(src=a.local, dst=a.remote)
    kw = dict(
        crypt_algo=crypt,
        crypt_key=bytes.fromhex(a.encr),
        tunnel_header=hdr,
    )
    if auth:
        kw.update(auth_algo=auth, auth_key=bytes.fromhex(a.integ))
    if a.udp:
        kw["nat_t_header"] = UDP(sport=4500, dport=4500)
    if a.esn_hi is not None:
        kw.update(esn_en=True, esn=a.esn_hi)
    return SecurityAssociation(ESP, spi=a.spi, **kw)


def hmac_esn_needed(a):
    return a.esn_hi is not None and SUITES[a.suite][1] is not None


def esn_icv(a, esp_bytes_wo_icv):
    _, _, digest, icv_len = SUITES[a.suite]
    m = hmac.new(bytes.fromhex(a.integ), esp_bytes_wo_icv + struct.pack("!I", a.esn_hi), digest)
    return m.digest()[:icv_len]


def decrypt(a, data):
    sa = make_sa(a)
    icv_len = SUITES[a.suite][3]
    pkt = ip_cls(a.local)(data)
    if ESP not in pkt:
        return "ERR no ESP layer"
    verify = True
    if hmac_esn_needed(a):
        esp = raw(pkt[ESP])
        if not hmac.compare_digest(esn_icv(a, esp[:-icv_len]), esp[-icv_len:]):
            return "ERR ICV (ESN) mismatch"
        verify = False
    return raw(sa.decrypt(pkt, verify=verify)).hex()


def encrypt(a, seq, inner_bytes):
    sa = make_sa(a)
    icv_len = SUITES[a.suite][3]
    inner = (IPv6 if inner_bytes[0] >> 4 == 6 else IP)(inner_bytes)
    out = sa.encrypt(inner, seq_num=seq)
    b = bytearray(raw(out))
    if a.udp and b[0] >> 4 == 4:
        # scapy 2.5 freezes the IPv4 + UDP header before the ESP payload is
        # attached, leaving UDP length = 8: fix the length (checksum stays 0).
        ihl = (b[0] & 0x0F) * 4
        b[ihl + 4:ihl + 6] = struct.pack("!H", len(b) - ihl)
    if hmac_esn_needed(a):
        esp = raw(out[ESP])
        b[len(b) - icv_len:] = esn_icv(a, esp[:-icv_len])
    return bytes(b).hex()


class Args:
    pass


def main():
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return
    # Imported here so that --help works without scapy.
    for line in sys.stdin:
        f = line.split()
        if not f:
            continue
        try:
            a = Args()
            mode, a.suite, a.encr, a.integ, spi, a.local, a.remote, udp, esn = f[:9]
            a.integ = "" if a.integ == "-" else a.integ
            a.spi = int(spi)
            a.udp = udp == "1"
            a.esn_hi = None if esn == "-" else int(esn)
            if mode == "decrypt":
                print(decrypt(a, bytes.fromhex(f[9])))
            elif mode == "encrypt":
                print(encrypt(a, int(f[9]), bytes.fromhex(f[10])))
            else:
                print("ERR unknown mode %s" % mode)
        except Exception as e:  # one bad line must not hide the others
            print("ERR %s: %s" % (type(e).__name__, e))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
