//! HMAC-SHA-256 of a burst, two packets at a time through SHA-NI.
//!
//! `sha256rnds2` has a multi-cycle latency and each SHA-256 round depends
//! on the previous one, so one message leaves the SHA unit idle between
//! rounds. Interleaving the rounds of two independent messages fills those
//! gaps (the two-stream idea of intel-ipsec-mb's SHA-NI HMAC). The kernel is
//! picked at run time; without SHA-NI each packet goes through
//! `sha2::block_api::compress256` (which has its own portable fallback).

use zeroize::Zeroize;

use super::hmac::{final_blocks, split_blocks, write_digest, HmacSha256Key};

/// One message of a burst: the hashed bytes, whether the ESN high half is
/// appended (hashed, not sent), that high half, and where the ICV goes.
pub type MacItem<'a> = (&'a [u8], bool, u32, &'a mut [u8]);

fn compress1(st: &mut [u32; 8], blocks: &[[u8; 64]]) {
    if !blocks.is_empty() {
        sha2::block_api::compress256(st, blocks)
    }
}

/// Whether this CPU runs the two-stream kernel (`sha`, `sse4.1`, `ssse3`).
pub fn has_shani() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("sha")
            && std::arch::is_x86_feature_detected!("sse4.1")
            && std::arch::is_x86_feature_detected!("ssse3")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Compresses `a` into `sa` and `b` into `sb`; the common prefix of
/// block counts runs interleaved when `x2` (SHA-NI present).
pub fn compress_pair(
    x2: bool,
    sa: &mut [u32; 8],
    a: &[[u8; 64]],
    sb: &mut [u32; 8],
    b: &[[u8; 64]],
) {
    let common = a.len().min(b.len());
    #[cfg(target_arch = "x86_64")]
    if x2 && common > 0 {
        // SAFETY: `x2` is only true when `has_shani()` saw the features
        // this kernel is compiled for.
        unsafe { shani::compress2(sa, &a[..common], sb, &b[..common]) };
        compress1(sa, &a[common..]);
        compress1(sb, &b[common..]);
        return;
    }
    let _ = (x2, common);
    compress1(sa, a);
    compress1(sb, b);
}

/// Writes HMAC-SHA-256 (truncated to each output's length) of every item.
pub fn mac_burst<'a>(key: &HmacSha256Key, items: impl Iterator<Item = MacItem<'a>>) {
    let x2 = has_shani();
    let mut items = items;
    while let Some(a) = items.next() {
        match items.next() {
            Some(b) => mac_pair(key, x2, a, b),
            None => {
                let mut sfx = [0u8; 4];
                let n = suffix(a.1, a.2, &mut sfx);
                key.mac(a.0, &sfx[..n], a.3);
            }
        }
    }
}

fn suffix(esn: bool, seq_hi: u32, buf: &mut [u8; 4]) -> usize {
    *buf = seq_hi.to_be_bytes();
    if esn {
        4
    } else {
        0
    }
}

fn mac_pair(key: &HmacSha256Key, x2: bool, a: MacItem<'_>, b: MacItem<'_>) {
    let (da, esn_a, hi_a, out_a) = a;
    let (db, esn_b, hi_b, out_b) = b;
    let mut sfx_a = [0u8; 4];
    let mut sfx_b = [0u8; 4];
    let na = suffix(esn_a, hi_a, &mut sfx_a);
    let nb = suffix(esn_b, hi_b, &mut sfx_b);

    let mut sa = key.inner_state();
    let mut sb = key.inner_state();
    let (ba, ra) = split_blocks(da);
    let (bb, rb) = split_blocks(db);
    compress_pair(x2, &mut sa, ba, &mut sb, bb);

    let mut fa = [[0u8; 64]; 2];
    let mut fb = [[0u8; 64]; 2];
    let ua = final_blocks(ra, &sfx_a[..na], 64 + (da.len() + na) as u64, &mut fa);
    let ub = final_blocks(rb, &sfx_b[..nb], 64 + (db.len() + nb) as u64, &mut fb);
    compress_pair(x2, &mut sa, &fa[..ua], &mut sb, &fb[..ub]);

    let mut oa = [[0u8; 64]; 1];
    let mut ob = [[0u8; 64]; 1];
    key.outer_block(&sa, &mut oa[0]);
    key.outer_block(&sb, &mut ob[0]);
    let mut ta = key.outer_state();
    let mut tb = key.outer_state();
    compress_pair(x2, &mut ta, &oa, &mut tb, &ob);
    write_digest(&ta, out_a);
    write_digest(&tb, out_b);

    sa.zeroize();
    sb.zeroize();
    ta.zeroize();
    tb.zeroize();
    // `fa`/`fb` hold only hashed packet bytes (ciphertext, public); the
    // outer blocks hold inner digests.
    oa.zeroize();
    ob.zeroize();
}

#[cfg(target_arch = "x86_64")]
mod shani {
    //! Two-stream SHA-256 compression with SHA-NI. The structure follows
    //! `sha2`'s single-stream x86 backend (Intel's reference sequence),
    //! with every step done for stream A and then stream B so the two
    //! dependency chains overlap in the pipeline.

    use core::arch::x86_64::*;

    static K32: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn rounds4(r: usize, st: &mut [(__m128i, __m128i); 2], w: [__m128i; 2]) {
        let rk = _mm_set_epi32(
            K32[4 * r + 3] as i32,
            K32[4 * r + 2] as i32,
            K32[4 * r + 1] as i32,
            K32[4 * r] as i32,
        );
        let t0 = _mm_add_epi32(w[0], rk);
        let t1 = _mm_add_epi32(w[1], rk);
        st[0].1 = _mm_sha256rnds2_epu32(st[0].1, st[0].0, t0);
        st[1].1 = _mm_sha256rnds2_epu32(st[1].1, st[1].0, t1);
        let t0 = _mm_shuffle_epi32(t0, 0x0E);
        let t1 = _mm_shuffle_epi32(t1, 0x0E);
        st[0].0 = _mm_sha256rnds2_epu32(st[0].0, st[0].1, t0);
        st[1].0 = _mm_sha256rnds2_epu32(st[1].0, st[1].1, t1);
    }

    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn schedule(w: &mut [__m128i; 4], i: usize) -> __m128i {
        let w0 = w[i];
        let w1 = w[(i + 1) % 4];
        let w2 = w[(i + 2) % 4];
        let w3 = w[(i + 3) % 4];
        let t1 = _mm_sha256msg1_epu32(w0, w1);
        let t2 = _mm_alignr_epi8(w3, w2, 4);
        let t3 = _mm_add_epi32(t1, t2);
        w[i] = _mm_sha256msg2_epu32(t3, w3);
        w[i]
    }

    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn load_block(block: &[u8; 64]) -> [__m128i; 4] {
        let p: *const __m128i = block.as_ptr().cast();
        let mask = _mm_set_epi64x(0x0C0D_0E0F_0809_0A0B, 0x0405_0607_0001_0203);
        // SAFETY: `block` is 64 readable bytes; loadu has no alignment need.
        core::array::from_fn(|i| _mm_shuffle_epi8(unsafe { _mm_loadu_si128(p.add(i)) }, mask))
    }

    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn load_state(state: &[u32; 8]) -> (__m128i, __m128i) {
        let p: *const __m128i = state.as_ptr().cast();
        // SAFETY: `state` is 32 readable bytes.
        let (dcba, hgfe) = unsafe { (_mm_loadu_si128(p), _mm_loadu_si128(p.add(1))) };
        let cdab = _mm_shuffle_epi32(dcba, 0xB1);
        let efgh = _mm_shuffle_epi32(hgfe, 0x1B);
        (
            _mm_alignr_epi8(cdab, efgh, 8),
            _mm_blend_epi16(efgh, cdab, 0xF0),
        )
    }

    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn store_state(state: &mut [u32; 8], (abef, cdgh): (__m128i, __m128i)) {
        let feba = _mm_shuffle_epi32(abef, 0x1B);
        let dchg = _mm_shuffle_epi32(cdgh, 0xB1);
        let dcba = _mm_blend_epi16(feba, dchg, 0xF0);
        let hgef = _mm_alignr_epi8(dchg, feba, 8);
        let p: *mut __m128i = state.as_mut_ptr().cast();
        // SAFETY: `state` is 32 writable bytes.
        unsafe {
            _mm_storeu_si128(p, dcba);
            _mm_storeu_si128(p.add(1), hgef);
        }
    }

    /// `a` and `b` must have the same number of blocks (extra blocks of
    /// the longer one are ignored).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) fn compress2(sa: &mut [u32; 8], a: &[[u8; 64]], sb: &mut [u32; 8], b: &[[u8; 64]]) {
        let mut st = [load_state(sa), load_state(sb)];
        for (ba, bb) in a.iter().zip(b.iter()) {
            let save = st;
            let mut wa = load_block(ba);
            let mut wb = load_block(bb);
            for i in 0..4 {
                rounds4(i, &mut st, [wa[i], wb[i]]);
            }
            for r in (4..16).step_by(4) {
                for i in 0..4 {
                    let xa = schedule(&mut wa, i);
                    let xb = schedule(&mut wb, i);
                    rounds4(r + i, &mut st, [xa, xb]);
                }
            }
            for (s, v) in st.iter_mut().zip(save.iter()) {
                s.0 = _mm_add_epi32(s.0, v.0);
                s.1 = _mm_add_epi32(s.1, v.1);
            }
        }
        store_state(sa, st[0]);
        store_state(sb, st[1]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_kernel_matches_sha2() {
        let blocks: Vec<[u8; 64]> = (0..9u8).map(|i| [i.wrapping_mul(37); 64]).collect();
        for na in 0..blocks.len() {
            for nb in [0, 1, na, blocks.len() - 1] {
                let mut want_a = [1u32, 2, 3, 4, 5, 6, 7, 8];
                let mut want_b = [9u32, 10, 11, 12, 13, 14, 15, 16];
                let (mut a, mut b) = (want_a, want_b);
                sha2::block_api::compress256(&mut want_a, &blocks[..na]);
                sha2::block_api::compress256(&mut want_b, &blocks[1..1 + nb.min(8)]);
                compress_pair(
                    has_shani(),
                    &mut a,
                    &blocks[..na],
                    &mut b,
                    &blocks[1..1 + nb.min(8)],
                );
                assert_eq!((a, b), (want_a, want_b), "{na} {nb}");
            }
        }
    }

    #[test]
    fn burst_matches_single_mac() {
        use super::super::hmac::HmacKey;
        let key = HmacKey::sha256(&[0x5a; 32]);
        let data: Vec<Vec<u8>> = (0..7).map(|i| vec![i as u8; 40 + 57 * i]).collect();
        let mut outs = vec![[0u8; 16]; data.len()];
        mac_burst(
            &key,
            data.iter()
                .zip(outs.iter_mut())
                .enumerate()
                .map(|(i, (d, o))| (&d[..], i % 2 == 0, i as u32 * 3, &mut o[..])),
        );
        for (i, (d, o)) in data.iter().zip(outs.iter()).enumerate() {
            let mut want = [0u8; 16];
            let hi = (i as u32 * 3).to_be_bytes();
            let sfx: &[u8] = if i % 2 == 0 { &hi } else { &[] };
            key.mac(d, sfx, &mut want);
            assert_eq!(*o, want, "item {i}");
        }
    }
}
