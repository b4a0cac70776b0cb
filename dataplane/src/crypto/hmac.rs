//! HMAC (RFC 2104) over the raw SHA-1 / SHA-256 compression functions, with
//! the inner and outer padded-key states computed once per SA.
//!
//! Working on the compression function instead of `hmac::Hmac` lets the ESP
//! path hash `SPI|SEQ|IV|ciphertext` straight from the packet and append the
//! ESN high bits (RFC 4303 §3.3.2.1) from a stack block, without copying
//! or buffering, and lets two packets share one SHA-NI pipeline
//! ([`super::sha256_x2`]).

use zeroize::Zeroize;

/// A SHA state that absorbs whole 64-byte blocks. Implemented on the state
/// array itself so the hash is part of the key's type: an SA with
/// thousands of siblings does not carry a function pointer per key.
pub trait Compress {
    fn compress(&mut self, blocks: &[[u8; 64]]);
}

impl Compress for [u32; 8] {
    fn compress(&mut self, blocks: &[[u8; 64]]) {
        sha2::block_api::compress256(self, blocks)
    }
}

impl Compress for [u32; 5] {
    fn compress(&mut self, blocks: &[[u8; 64]]) {
        sha1::block_api::compress(self, blocks)
    }
}

/// Largest ICV suffix that is hashed but not sent (the ESN high 32 bits).
pub const MAX_SUFFIX: usize = 4;

/// HMAC key for a SHA-family hash with a `W`-word state and 64-byte blocks.
pub struct HmacKey<const W: usize> {
    inner: [u32; W],
    outer: [u32; W],
}

pub type HmacSha256Key = HmacKey<8>;
pub type HmacSha1Key = HmacKey<5>;

const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];
const SHA1_IV: [u32; 5] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0];

impl HmacKey<8> {
    pub fn sha256(key: &[u8]) -> Self {
        HmacKey::new(key, SHA256_IV)
    }
}

impl HmacKey<5> {
    pub fn sha1(key: &[u8]) -> Self {
        HmacKey::new(key, SHA1_IV)
    }
}

/// Views `data` as whole 64-byte blocks plus the remainder.
pub fn split_blocks(data: &[u8]) -> (&[[u8; 64]], &[u8]) {
    use aes::cipher::array::{typenum::U64, Array};
    let (blocks, rest) = Array::<u8, U64>::slice_as_chunks(data);
    (Array::cast_slice_to_core(blocks), rest)
}

/// Builds the final padded block(s) of a message whose last `rest.len()`
/// bytes (< 64) are followed by `suffix`, `total` bytes in all including the
/// already-absorbed key block. Returns how many of the two blocks are used.
pub fn final_blocks(rest: &[u8], suffix: &[u8], total: u64, out: &mut [[u8; 64]; 2]) -> usize {
    // Written in place (no scratch copy), so a caller hashing a secret
    // (a long HMAC key) only has `out` to wipe.
    *out = [[0u8; 64]; 2];
    let n = rest.len() + suffix.len();
    out[0][..rest.len()].copy_from_slice(rest);
    for (i, b) in suffix.iter().chain([0x80u8].iter()).enumerate() {
        let p = rest.len() + i;
        out[p / 64][p % 64] = *b;
    }
    let used = if n + 9 <= 64 { 1 } else { 2 };
    out[used - 1][56..].copy_from_slice(&(total * 8).to_be_bytes());
    used
}

impl<const W: usize> HmacKey<W>
where
    [u32; W]: Compress,
{
    fn new(key: &[u8], iv: [u32; W]) -> Self {
        let mut k = [0u8; 64];
        if key.len() > 64 {
            // RFC 2104: long keys are hashed first. ESP keys never are, but
            // the KAT vectors of RFC 4231 test it.
            let mut st = iv;
            let (blocks, rest) = split_blocks(key);
            st.compress(blocks);
            let mut fin = [[0u8; 64]; 2];
            let used = final_blocks(rest, &[], key.len() as u64, &mut fin);
            st.compress(&fin[..used]);
            fin.zeroize();
            for (i, w) in st.iter().enumerate() {
                k[4 * i..4 * i + 4].copy_from_slice(&w.to_be_bytes());
            }
            st.zeroize();
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let mut pad = [[0u8; 64]; 1];
        let mut inner = iv;
        let mut outer = iv;
        for (p, b) in pad[0].iter_mut().zip(k.iter()) {
            *p = b ^ 0x36;
        }
        inner.compress(&pad);
        for (p, b) in pad[0].iter_mut().zip(k.iter()) {
            *p = b ^ 0x5c;
        }
        outer.compress(&pad);
        pad[0].zeroize();
        k.zeroize();
        HmacKey { inner, outer }
    }

    /// Digest size in bytes.
    pub const fn output_len(&self) -> usize {
        4 * W
    }

    /// Inner state after the ipad block; start of every message.
    pub fn inner_state(&self) -> [u32; W] {
        self.inner
    }

    /// Writes the first `out.len()` bytes (≤ digest size) of
    /// HMAC(key, data || suffix).
    pub fn mac(&self, data: &[u8], suffix: &[u8], out: &mut [u8]) {
        let mut st = self.inner;
        let (blocks, rest) = split_blocks(data);
        st.compress(blocks);
        let mut fin = [[0u8; 64]; 2];
        let total = 64 + data.len() as u64 + suffix.len() as u64;
        let used = final_blocks(rest, suffix, total, &mut fin);
        st.compress(&fin[..used]);
        self.finish(&mut st, out);
    }

    /// Outer hash of an inner digest state; writes the truncated MAC.
    pub fn finish(&self, inner: &mut [u32; W], out: &mut [u8]) {
        let mut blk = [[0u8; 64]; 1];
        self.outer_block(inner, &mut blk[0]);
        let mut st = self.outer;
        st.compress(&blk);
        write_digest(&st, out);
        st.zeroize();
        inner.zeroize();
    }

    /// The single padded block the outer hash absorbs.
    pub fn outer_block(&self, inner: &[u32; W], blk: &mut [u8; 64]) {
        *blk = [0u8; 64];
        for (i, w) in inner.iter().enumerate() {
            blk[4 * i..4 * i + 4].copy_from_slice(&w.to_be_bytes());
        }
        blk[4 * W] = 0x80;
        blk[56..].copy_from_slice(&((64 + 4 * W as u64) * 8).to_be_bytes());
    }

    pub fn outer_state(&self) -> [u32; W] {
        self.outer
    }
}

/// Big-endian digest bytes of `st`, truncated to `out.len()`.
pub fn write_digest<const W: usize>(st: &[u32; W], out: &mut [u8]) {
    for (chunk, w) in out.chunks_mut(4).zip(st.iter()) {
        let b = w.to_be_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

impl<const W: usize> Drop for HmacKey<W> {
    fn drop(&mut self) {
        self.inner.zeroize();
        self.outer.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{KeyInit, Mac};

    #[test]
    fn matches_hmac_crate_for_all_lengths_and_suffixes() {
        let key: Vec<u8> = (0..32u8).collect();
        let k = HmacKey::sha256(&key);
        let k1 = HmacKey::sha1(&key[..20]);
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        for len in 0..data.len() {
            for suffix in [&[][..], &[1, 2, 3, 4][..]] {
                let mut want = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
                want.update(&data[..len]);
                want.update(suffix);
                let want = want.finalize().into_bytes();
                let mut got = [0u8; 32];
                k.mac(&data[..len], suffix, &mut got);
                assert_eq!(&got[..], &want[..], "len {len}");

                let mut want = hmac::Hmac::<sha1::Sha1>::new_from_slice(&key[..20]).unwrap();
                want.update(&data[..len]);
                want.update(suffix);
                let want = want.finalize().into_bytes();
                let mut got = [0u8; 12];
                k1.mac(&data[..len], suffix, &mut got);
                assert_eq!(&got[..], &want[..12], "sha1 len {len}");
            }
        }
    }
}
