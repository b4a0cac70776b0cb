#!/usr/bin/env python3
"""Independent IKEv2 key-derivation vectors (RFC 7296 §2.13, §2.14, §2.15, §2.17).

Uses python `cryptography` for HMAC-SHA-256 and Python integers for MODP-2048,
so it shares no code with the Rust implementation. Prints `name = hex` lines;
controlplane/tests/vectors/ike_kdf.txt is this script's output, and
controlplane/tests/kat_ike_kdf.rs checks the Rust code against it (and runs
this script live when python3 + cryptography are available).
"""
from cryptography.hazmat.primitives import hashes, hmac

# RFC 3526 §3, group 14.
P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD1"
    "29024E088A67CC74020BBEA63B139B22514A08798E3404DD"
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245"
    "E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3D"
    "C2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F"
    "83655D23DCA3AD961C62F356208552BB9ED529077096966D"
    "670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9"
    "DE2BCBF6955817183995497CEA956AE515D2261898FA0510"
    "15728E5A8AACAA68FFFFFFFFFFFFFFFF",
    16,
)


def prf(key: bytes, data: bytes) -> bytes:
    h = hmac.HMAC(key, hashes.SHA256())
    h.update(data)
    return h.finalize()


def prf_plus(key: bytes, seed: bytes, n: int) -> bytes:
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = prf(key, t + seed + bytes([i]))
        out += t
        i += 1
    return out[:n]


def be(x: int, n: int) -> bytes:
    return x.to_bytes(n, "big")


def pattern(start: int, n: int) -> bytes:
    return bytes((start + i) & 0xFF for i in range(n))


def emit(name: str, value: bytes) -> None:
    print(f"{name} = {value.hex()}")


def main() -> None:
    # The fixed exchange. Secrets are 64-byte exponents as the Rust side uses.
    xi = pattern(0x10, 64)
    xr = pattern(0x80, 64)
    ni = pattern(0x01, 32)
    nr = pattern(0x41, 32)
    spi_i = bytes.fromhex("0011223344556677")
    spi_r = bytes.fromhex("8899aabbccddeeff")
    gi = pow(2, int.from_bytes(xi, "big"), P)
    gr = pow(2, int.from_bytes(xr, "big"), P)
    gir = be(pow(gr, int.from_bytes(xi, "big"), P), 256)
    assert gir == be(pow(gi, int.from_bytes(xr, "big"), P), 256)

    print("# IKEv2 KDF vectors from scripts/ike_kat.py (python cryptography).")
    print("# RFC 7296 §2.14 SKEYSEED/SK_*, §2.17 child KEYMAT, §2.15 PSK AUTH;")
    print("# DH is MODP-2048 (RFC 3526 §3), PRF is HMAC-SHA-256 (RFC 4868).")
    emit("dh_secret_i", xi)
    emit("dh_secret_r", xr)
    emit("dh_public_i", be(gi, 256))
    emit("dh_public_r", be(gr, 256))
    emit("g_ir", gir)
    emit("ni", ni)
    emit("nr", nr)
    emit("spi_i", spi_i)
    emit("spi_r", spi_r)

    skeyseed = prf(ni + nr, gir)
    emit("skeyseed", skeyseed)
    # PRF 32 + integ 32 (HMAC-SHA-256-128 key) + encr 32 (AES-CBC-256).
    names = [("sk_d", 32), ("sk_ai", 32), ("sk_ar", 32), ("sk_ei", 32),
             ("sk_er", 32), ("sk_pi", 32), ("sk_pr", 32)]
    km = prf_plus(skeyseed, ni + nr + spi_i + spi_r, sum(n for _, n in names))
    keys, off = {}, 0
    for name, n in names:
        keys[name] = km[off:off + n]
        emit(name, keys[name])
        off += n

    # PSK AUTH for the initiator (RFC 7296 §2.15) over a fixed "message 1"
    # and IDi = ID_IPV4_ADDR 10.255.1.2 (body from the ID type onward).
    psk = b"cisco123-shared-secret"
    msg1 = pattern(0x20, 100)
    idi_body = bytes([1, 0, 0, 0, 10, 255, 1, 2])
    auth_i = prf(prf(psk, b"Key Pad for IKEv2"), msg1 + nr + prf(keys["sk_pi"], idi_body))
    emit("psk", psk)
    emit("auth_msg1", msg1)
    emit("auth_idi_body", idi_body)
    emit("auth_i", auth_i)

    # Child SA in IKE_AUTH: KEYMAT = prf+(SK_d, Ni | Nr), no PFS.
    # Suite AES-256-CBC + HMAC-SHA-256-128: encr 32, integ 32 per direction.
    c = prf_plus(keys["sk_d"], ni + nr, 2 * (32 + 32))
    emit("child_cbc_encr_i2r", c[0:32])
    emit("child_cbc_integ_i2r", c[32:64])
    emit("child_cbc_encr_r2i", c[64:96])
    emit("child_cbc_integ_r2i", c[96:128])

    # CREATE_CHILD_SA with PFS: fresh nonces and DH, KEYMAT = prf+(SK_d, g^ir(new) | Ni | Nr).
    # Suite AES-256-GCM-16: encr = 32-byte key | 4-byte salt, no integ key.
    xi2 = pattern(0x33, 64)
    xr2 = pattern(0x99, 64)
    ni2 = pattern(0xA0, 32)
    nr2 = pattern(0xC0, 32)
    gr2 = pow(2, int.from_bytes(xr2, "big"), P)
    gir2 = be(pow(gr2, int.from_bytes(xi2, "big"), P), 256)
    emit("pfs_secret_i", xi2)
    emit("pfs_secret_r", xr2)
    emit("pfs_g_ir", gir2)
    emit("ni2", ni2)
    emit("nr2", nr2)
    g = prf_plus(keys["sk_d"], gir2 + ni2 + nr2, 2 * 36)
    emit("child_gcm_pfs_encr_i2r", g[0:36])
    emit("child_gcm_pfs_encr_r2i", g[36:72])


if __name__ == "__main__":
    main()
