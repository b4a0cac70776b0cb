//! AES-CTR (GCM's inc32 counter) with VAES on 256-bit registers: two blocks
//! per instruction, 16 blocks in flight.
//!
//! Why not the `aes` crate: its VAES back end is only chosen when the CPU
//! *and OS* expose AVX-512 state (cpufeatures lists `vaes` under `zmm`), so
//! on a Zen 4 guest whose hypervisor hides AVX-512 it falls back to 128-bit
//! AES-NI, 8 blocks at a time, with round keys spilled to the stack. Here the
//! kernel is picked with `is_x86_feature_detected!("vaes")` (AVX2 state is
//! enough) and [`super::gcm`] falls back to `aes-gcm` without it.
//! Round keys come from a plain FIPS-197 key expansion (once per SA).

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Expanded AES encryption key: `rounds + 1` round keys.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct RoundKeys {
    rk: [[u8; 16]; 15],
    // u8, not usize: the struct is kept per SA, and 7 bytes of padding
    // times a million SAs is 7 MB.
    rounds: u8,
}

const SBOX: [u8; 256] = {
    // Computed at compile time from the definition (multiplicative inverse
    // in GF(2^8) followed by the affine map) instead of a typed-in table.
    let mut s = [0u8; 256];
    let mut p: u8 = 1;
    let mut q: u8 = 1;
    loop {
        // p *= 3
        p = p ^ (p << 1) ^ (if p & 0x80 != 0 { 0x1b } else { 0 });
        // q /= 3
        q ^= q << 1;
        q ^= q << 2;
        q ^= q << 4;
        if q & 0x80 != 0 {
            q ^= 0x09;
        }
        let x = q ^ q.rotate_left(1) ^ q.rotate_left(2) ^ q.rotate_left(3) ^ q.rotate_left(4);
        s[p as usize] = x ^ 0x63;
        if p == 1 {
            break;
        }
    }
    s[0] = 0x63;
    s
};

fn sub_word(w: [u8; 4]) -> [u8; 4] {
    [
        SBOX[w[0] as usize],
        SBOX[w[1] as usize],
        SBOX[w[2] as usize],
        SBOX[w[3] as usize],
    ]
}

impl RoundKeys {
    /// FIPS-197 §5.2 key expansion for 16- or 32-byte keys.
    pub fn new(key: &[u8]) -> Option<RoundKeys> {
        let nk = match key.len() {
            16 => 4,
            32 => 8,
            _ => return None,
        };
        let rounds = nk + 6;
        let total = 4 * (rounds + 1);
        let mut w = [[0u8; 4]; 60];
        for (i, c) in key.chunks_exact(4).enumerate() {
            w[i].copy_from_slice(c);
        }
        let mut rcon: u8 = 1;
        for i in nk..total {
            let mut t = w[i - 1];
            if i % nk == 0 {
                t.rotate_left(1);
                t = sub_word(t);
                t[0] ^= rcon;
                rcon = (rcon << 1) ^ (if rcon & 0x80 != 0 { 0x1b } else { 0 });
            } else if nk > 6 && i % nk == 4 {
                t = sub_word(t);
            }
            for b in 0..4 {
                w[i][b] = w[i - nk][b] ^ t[b];
            }
        }
        let mut rk = [[0u8; 16]; 15];
        for (r, k) in rk.iter_mut().enumerate().take(rounds + 1) {
            for c in 0..4 {
                k[4 * c..4 * c + 4].copy_from_slice(&w[4 * r + c]);
            }
        }
        w.zeroize();
        Some(RoundKeys {
            rk,
            rounds: rounds as u8,
        })
    }

    pub fn rounds(&self) -> usize {
        usize::from(self.rounds)
    }

    pub fn keys(&self) -> &[[u8; 16]; 15] {
        &self.rk
    }
}

/// Whether [`ctr32_xor`] can run on this CPU.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("vaes")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("aes")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// E(K, `block`) for one block (the GCM tag mask E(K, J0), and H).
/// Returns None when the CPU lacks the features (see [`available`]).
pub fn encrypt_block(keys: &RoundKeys, block: [u8; 16]) -> Option<[u8; 16]> {
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: the features the kernel is compiled for were detected.
        return Some(unsafe { x86::encrypt_block(keys, block) });
    }
    let _ = (keys, block);
    None
}

/// XORs the keystream E(K, `ctr0`), E(K, inc32(`ctr0`)), ... into `data`.
/// Returns false (and leaves `data` alone) when the CPU lacks the features.
pub fn ctr32_xor(keys: &RoundKeys, ctr0: [u8; 16], data: &mut [u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: the features the kernel is compiled for were detected.
        unsafe { x86::ctr32_xor(keys, ctr0, data) };
        return true;
    }
    let _ = (keys, ctr0, data);
    false
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::RoundKeys;
    use core::arch::x86_64::*;
    use zeroize::Zeroize;

    /// Blocks per main-loop step: 8 registers of 2 blocks.
    const WIDE: usize = 16;

    #[target_feature(enable = "aes,sse2")]
    pub(super) fn encrypt_block(keys: &RoundKeys, block: [u8; 16]) -> [u8; 16] {
        // SAFETY (loads/stores below): every pointer comes from a live
        // 16-byte array; loadu/storeu need no alignment.
        let rk = |r: usize| unsafe { _mm_loadu_si128(keys.rk[r].as_ptr().cast()) };
        let mut x = _mm_xor_si128(unsafe { _mm_loadu_si128(block.as_ptr().cast()) }, rk(0));
        for r in 1..keys.rounds() {
            x = _mm_aesenc_si128(x, rk(r));
        }
        x = _mm_aesenclast_si128(x, rk(keys.rounds()));
        let mut out = [0u8; 16];
        unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), x) };
        out
    }

    /// Runs `N` register pairs of counter blocks through AES.
    #[inline]
    #[target_feature(enable = "aes,avx2,vaes")]
    fn rounds<const N: usize>(rk: &[__m256i; 15], nr: usize, x: &mut [__m256i; N]) {
        for v in x.iter_mut() {
            *v = _mm256_xor_si256(*v, rk[0]);
        }
        for k in rk.iter().take(nr).skip(1) {
            for v in x.iter_mut() {
                *v = _mm256_aesenc_epi128(*v, *k);
            }
        }
        for v in x.iter_mut() {
            *v = _mm256_aesenclast_epi128(*v, rk[nr]);
        }
    }

    #[target_feature(enable = "aes,avx2,vaes")]
    pub(super) fn ctr32_xor(keys: &RoundKeys, ctr0: [u8; 16], data: &mut [u8]) {
        let nr = keys.rounds();
        let mut rk = [_mm256_setzero_si256(); 15];
        for (d, k) in rk.iter_mut().zip(keys.rk.iter()).take(nr + 1) {
            // SAFETY: `k` is a live 16-byte array.
            *d = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(k.as_ptr().cast()) });
        }
        // Counters live with their last 32-bit word byte-swapped so a plain
        // 32-bit add is GCM's inc32 (mod 2^32); `swap` undoes it per block.
        let swap = _mm256_setr_epi8(
            0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 15, 14, 13, 12, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
            11, 15, 14, 13, 12,
        );
        // SAFETY: `ctr0` is a live 16-byte array.
        let c0 = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(ctr0.as_ptr().cast()) });
        // Lane 0 = counter + 0, lane 1 = counter + 1.
        let mut ctr = _mm256_add_epi32(
            _mm256_shuffle_epi8(c0, swap),
            _mm256_setr_epi32(0, 0, 0, 0, 0, 0, 0, 1),
        );
        let two = _mm256_setr_epi32(0, 0, 0, 2, 0, 0, 0, 2);
        let next = |ctr: &mut __m256i| {
            let c = _mm256_shuffle_epi8(*ctr, swap);
            *ctr = _mm256_add_epi32(*ctr, two);
            c
        };

        let mut chunks = data.chunks_exact_mut(WIDE * 16);
        for chunk in &mut chunks {
            let mut x = [_mm256_setzero_si256(); 8];
            for v in x.iter_mut() {
                *v = next(&mut ctr);
            }
            rounds(&rk, nr, &mut x);
            for (i, v) in x.iter().enumerate() {
                let p: *mut __m256i = chunk[32 * i..32 * i + 32].as_mut_ptr().cast();
                // SAFETY: `p` points at 32 bytes inside `chunk`.
                unsafe { _mm256_storeu_si256(p, _mm256_xor_si256(_mm256_loadu_si256(p), *v)) };
            }
        }
        let rest = chunks.into_remainder();
        if rest.is_empty() {
            rk.zeroize();
            return;
        }
        // The tail (< 16 blocks) in one parallel pass through a stack buffer.
        let mut x = [_mm256_setzero_si256(); 8];
        let pairs = rest.len().div_ceil(32);
        for v in x.iter_mut().take(pairs) {
            *v = next(&mut ctr);
        }
        rounds(&rk, nr, &mut x);
        let mut ks = [0u8; WIDE * 16];
        for (i, v) in x.iter().enumerate() {
            // SAFETY: 32 bytes at offset 32*i < 256 inside `ks`.
            unsafe { _mm256_storeu_si256(ks[32 * i..].as_mut_ptr().cast(), *v) };
        }
        for (d, k) in rest.iter_mut().zip(ks.iter()) {
            *d ^= k;
        }
        ks.zeroize();
        rk.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::{BlockCipherEncrypt, KeyInit};

    #[test]
    fn sbox_and_key_expansion_match_the_aes_crate() {
        assert_eq!(SBOX[0x00], 0x63);
        assert_eq!(SBOX[0x53], 0xed);
        assert_eq!(SBOX[0xff], 0x16);
        if !available() {
            eprintln!("SKIPPED: no VAES on this CPU");
            return;
        }
        for len in [16usize, 32] {
            let key: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(29)).collect();
            let rk = RoundKeys::new(&key).unwrap();
            let block = [0x3cu8; 16];
            let mut want = aes::Block::from(block);
            match len {
                16 => aes::Aes128Enc::new_from_slice(&key)
                    .unwrap()
                    .encrypt_block(&mut want),
                _ => aes::Aes256Enc::new_from_slice(&key)
                    .unwrap()
                    .encrypt_block(&mut want),
            }
            assert_eq!(encrypt_block(&rk, block).unwrap(), want[..]);
            // CTR over every length up to 3 wide steps, with a counter that
            // wraps its low 32 bits mid-stream.
            let ctr0 = [0xffu8; 16];
            for n in 0..(3 * 256 + 40) {
                let mut got = vec![0u8; n];
                assert!(ctr32_xor(&rk, ctr0, &mut got));
                for (i, chunk) in got.chunks(16).enumerate() {
                    let mut c = ctr0;
                    let lo =
                        u32::from_be_bytes([c[12], c[13], c[14], c[15]]).wrapping_add(i as u32);
                    c[12..].copy_from_slice(&lo.to_be_bytes());
                    let ks = encrypt_block(&rk, c).unwrap();
                    assert_eq!(chunk, &ks[..chunk.len()], "len {len} n {n} block {i}");
                }
            }
        }
    }
}
