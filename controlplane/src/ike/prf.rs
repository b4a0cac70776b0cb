//! PRF_HMAC_SHA2_256 (RFC 4868 §2.1.2) and prf+ (RFC 7296 §2.13).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Output length of PRF_HMAC_SHA2_256, also its preferred key length.
pub const PRF_LEN: usize = 32;

/// RFC 7296 §2.13: the counter byte stops at 255.
pub const PRF_PLUS_MAX: usize = 255 * PRF_LEN;

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length (long ones are hashed, RFC 2104 §2),
    // so this never fails.
    match <HmacSha256 as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable_hmac(),
    }
}

#[cold]
fn unreachable_hmac() -> HmacSha256 {
    // Only reachable if the hmac crate starts rejecting key lengths.
    debug_assert!(false, "HMAC rejected a key");
    <HmacSha256 as KeyInit>::new(&Default::default())
}

/// prf(key, data_1 | data_2 | ...).
pub fn prf(key: &[u8], data: &[&[u8]]) -> [u8; PRF_LEN] {
    let mut m = mac(key);
    for d in data {
        m.update(d);
    }
    m.finalize().into_bytes().into()
}

/// prf+(key, seed) truncated to `len` bytes (RFC 7296 §2.13):
/// T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n).
/// `len` is clamped to [`PRF_PLUS_MAX`]; callers ask for at most a few hundred bytes.
pub fn prf_plus(key: &[u8], seed: &[&[u8]], len: usize) -> Zeroizing<Vec<u8>> {
    let len = len.min(PRF_PLUS_MAX);
    let mut out = Zeroizing::new(Vec::with_capacity(len + PRF_LEN));
    let mut t = Zeroizing::new([0u8; PRF_LEN]);
    let mut n: u8 = 1;
    while out.len() < len {
        let mut m = mac(key);
        if n > 1 {
            m.update(&t[..]);
        }
        for s in seed {
            m.update(s);
        }
        m.update(&[n]);
        t.copy_from_slice(&m.finalize().into_bytes());
        out.extend_from_slice(&t[..]);
        n = n.wrapping_add(1);
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prf_plus_is_the_chained_prf() {
        let k = b"key";
        let s = b"seed";
        let out = prf_plus(k, &[s], 70);
        let t1 = prf(k, &[s, &[1]]);
        let t2 = prf(k, &[&t1, s, &[2]]);
        let t3 = prf(k, &[&t2, s, &[3]]);
        assert_eq!(&out[..32], &t1);
        assert_eq!(&out[32..64], &t2);
        assert_eq!(&out[64..70], &t3[..6]);
    }

    #[test]
    fn prf_plus_caps_at_255_blocks() {
        assert_eq!(prf_plus(b"k", &[b"s"], 100_000).len(), PRF_PLUS_MAX);
    }

    #[test]
    fn split_seed_equals_joined_seed() {
        assert_eq!(prf(b"k", &[b"ab", b"cd"]), prf(b"k", &[b"abcd"]));
    }
}
