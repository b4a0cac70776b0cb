#!/usr/bin/env python3
"""Known-answer vectors for IKEv2 key derivation, taken from a real
strongSwan exchange: reads a charon log written at `ike 4`, `chd 4` (the
template's levels), recomputes every derivation with Python's hmac/hashlib
(PRF HMAC-SHA-256 only) and prints the vectors as JSON.

    kat-from-log.py CHARON_LOG [--ike-uid N]

RFC 7296 2.14: SKEYSEED = prf(Ni | Nr, g^ir);
  {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr}
    = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)
RFC 7296 2.15: AUTH = prf(prf(PSK, "Key Pad for IKEv2"), octets), octets =
  the sender's first message | peer nonce | prf(SK_px, IDx')
RFC 7296 2.17: KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr)
  = encr_i | integ_i | encr_r | integ_r     (integ absent for AEAD)

Where the inputs come from in the log: g^ir = "shared Diffie Hellman
secret"; Ni | Nr = the 64-byte "seed" dumped for the IKE_AUTH child
(the same nonces); SPIi | SPIr = first 16 bytes of a "natd_chunk" dump
once the responder SPI is known; the child seed = the CHD "seed" dump
right before the child's keys (64 bytes, or 320 = g^ir | Ni | Nr with PFS).
Exit status 1 when any recomputed value differs from the logged one.
"""
import hashlib
import hmac
import json
import re
import sys


def parse(path):
    """All %B dumps: dicts with thread, ike uid, label, bytes, in log order."""
    dumps, cur, events = [], {}, []
    line_re = re.compile(r"\S+ (\d+)\[(\w+)\] (?:<(?:[^>|]*\|)?(\d+)> )?(.*)$")
    for line in open(path, errors="replace"):
        m = line_re.match(line.rstrip("\n"))
        if not m:
            continue
        th, _grp, uid, msg = m.groups()
        h = re.match(r"(.*) => (\d+) bytes @ ", msg)
        if h:
            d = {"thread": th, "ike": uid, "label": h.group(1), "len": int(h.group(2)), "bytes": b""}
            if d["len"]:
                cur[th] = d
            dumps.append(d)
            events.append(("dump", d))
            continue
        x = re.match(r"\s*\d+: ((?:[0-9A-F]{2} )*[0-9A-F]{2})", msg)
        if th in cur and x:
            d = cur[th]
            need = d["len"] - len(d["bytes"])
            d["bytes"] += bytes(int(t, 16) for t in x.group(1).split()[: min(16, need)])
            if len(d["bytes"]) >= d["len"]:
                cur.pop(th)
            continue
        cur.pop(th, None)
        c = re.match(r"(?:inbound |outbound )?CHILD_SA (\S+)\{(\d+)\} established with SPIs (\w+)_i (\w+)_o", msg)
        if c:
            events.append(("child", {"thread": th, "ike": uid, "name": c.group(1), "uid": int(c.group(2)),
                                     "spi_in": c.group(3), "spi_out": c.group(4)}))
    return dumps, events


def prf(k, d):
    return hmac.new(k, d, hashlib.sha256).digest()


def prf_plus(k, s, n):
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = prf(k, t + s + bytes([i]))
        out += t
        i += 1
    return out[:n]


def main():
    path = sys.argv[1]
    want_uid = sys.argv[sys.argv.index("--ike-uid") + 1] if "--ike-uid" in sys.argv else None
    dumps, events = parse(path)
    ok = True

    def first(label, uid):
        for d in dumps:
            if d["label"] == label and (uid is None or d["ike"] == uid) and len(d["bytes"]) == d["len"]:
                return d["bytes"]
        return None

    uids = [d["ike"] for d in dumps if d["label"] == "SKEYSEED"]
    if not uids:
        print("no SKEYSEED in the log (needs ike >= 4)", file=sys.stderr)
        return 1
    uid = want_uid or uids[0]
    gir = first("shared Diffie Hellman secret", uid)
    seed_auth = next((d["bytes"] for d in dumps if d["label"] == "seed" and d["ike"] == uid and d["len"] == 64), None)
    natd = next((d["bytes"] for d in dumps if d["label"] == "natd_chunk" and d["ike"] == uid
                 and d["bytes"][8:16] != bytes(8)), None)
    if gir is None or seed_auth is None or natd is None:
        print("log lacks g^ir, the IKE_AUTH child seed or a natd_chunk", file=sys.stderr)
        return 1
    ni, nr, spi_i, spi_r = seed_auth[:32], seed_auth[32:], natd[:8], natd[8:16]
    names = ["Sk_d", "Sk_ai", "Sk_ar", "Sk_ei", "Sk_er", "Sk_pi", "Sk_pr"]
    skeyseed = prf(ni + nr, gir)
    ok &= skeyseed == first("SKEYSEED", uid)
    keymat = prf_plus(skeyseed, ni + nr + spi_i + spi_r, 32 * len(names))
    ike = {"prf": "PRF_HMAC_SHA2_256", "g_ir": gir.hex(), "ni": ni.hex(), "nr": nr.hex(),
           "spi_i": spi_i.hex(), "spi_r": spi_r.hex(), "skeyseed": skeyseed.hex()}
    for i, n in enumerate(names):
        v = keymat[32 * i:32 * (i + 1)]
        ok &= v == first(n + " secret", uid)
        ike[n.lower()] = v.hex()
    sk_d = keymat[:32]

    # PSK AUTH (RFC 7296 2.15): AUTH = prf(prf(PSK, "Key Pad for IKEv2"),
    # octets); the log dumps "secret" (the PSK), "octets = ..." and "AUTH = ..."
    # for the AUTH we send and for the peer's we verify.
    auth = []
    seq = [d for d in dumps if d["ike"] == uid and d["label"] in
           ("secret", "octets = message + nonce + prf(Sk_px, IDx')", "AUTH = prf(prf(secret, keypad), octets)")]
    octets = psk = None
    for d in seq:
        if d["label"] == "secret":
            psk = d["bytes"]
        elif d["label"].startswith("octets"):
            octets = d["bytes"]
        elif psk is not None and octets is not None:
            v = prf(prf(psk, b"Key Pad for IKEv2"), octets)
            ok &= v == d["bytes"]
            auth.append({"psk": psk.decode("latin-1"), "octets": octets.hex(), "auth": v.hex(),
                         "matches": v == d["bytes"]})
            octets = None
    ike["auth"] = auth

    children, pending = [], {}
    for kind, e in events:
        if e["ike"] != uid:
            continue
        if kind == "dump":
            p = pending.setdefault(e["thread"], {})
            if e["label"] in ("seed", "DH secret") or e["label"].endswith(" key"):
                p[e["label"]] = e["bytes"]
        elif kind == "child":
            p = pending.pop(e["thread"], {})
            if "seed" not in p or "encryption initiator key" not in p:
                continue
            ei, er = p["encryption initiator key"], p["encryption responder key"]
            ai, ar = p.get("integrity initiator key", b""), p.get("integrity responder key", b"")
            km = prf_plus(sk_d, p["seed"], 2 * (len(ei) + len(ai)))
            o = 0
            got = []
            for ln in (len(ei), len(ai), len(er), len(ar)):
                got.append(km[o:o + ln])
                o += ln
            match = got == [ei, ai, er, ar]
            ok &= match
            children.append({"child": e["name"], "uid": e["uid"], "spi_in": e["spi_in"], "spi_out": e["spi_out"],
                             "seed": p["seed"].hex(), "pfs_g_ir": p.get("DH secret", b"").hex(),
                             "encr_i": ei.hex(), "integ_i": ai.hex(), "encr_r": er.hex(), "integ_r": ar.hex(),
                             "matches": match})
    print(json.dumps({"source": path, "ike_uid": uid, "ike": ike, "children": children, "all_match": ok}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
