//! AES-CBC encryption across packets (the intel-ipsec-mb multi-buffer idea).
//!
//! CBC encryption is serial inside one packet: block i+1 needs ciphertext
//! block i, so one packet keeps a single AES chain in flight and the AES
//! units idle for most of each round's latency. Here up to [`LANES`]
//! packets advance together, one block of each per backend call, and a lane
//! whose packet ends takes the next packet of the burst at once.
//! Decryption is parallel inside a packet already; [`decrypt`] uses the
//! `cbc` crate as is.

use aes::cipher::{
    array::Array, consts::U16, typenum::Unsigned, Block, BlockCipherDecrypt, BlockCipherEncBackend,
    BlockCipherEncClosure, BlockCipherEncrypt, BlockModeDecrypt, BlockModeEncrypt, BlockSizeUser,
    InnerIvInit, ParBlocks,
};
use zeroize::Zeroize;

use super::ctr_vaes::RoundKeys;

/// Packets in flight at once. Eight 14-round AES-256 chains cover the
/// 4-cycle `aesenc` latency on two AES pipes (8 × 14 / 2 = 56 = 14 × 4).
pub const LANES: usize = 8;

/// A packet as CBC sees it: a 16-byte IV, then the data (a whole number
/// of 16-byte blocks, at least one).
pub trait CbcBuf {
    fn iv_and_data(&mut self) -> &mut [u8];
}

impl CbcBuf for &mut [u8] {
    fn iv_and_data(&mut self) -> &mut [u8] {
        self
    }
}

impl CbcBuf for Vec<u8> {
    fn iv_and_data(&mut self) -> &mut [u8] {
        self
    }
}

fn well_formed(len: usize) -> bool {
    len >= 32 && len.is_multiple_of(16)
}

/// Encrypts every buffer in place, `LANES` packets at a time. Buffers that
/// are not IV + whole blocks are left as they are (the caller validated).
pub fn encrypt_multi<C, B>(cipher: &C, bufs: &mut [B])
where
    C: BlockCipherEncrypt + BlockSizeUser<BlockSize = U16>,
    B: CbcBuf,
{
    cipher.encrypt_with_backend(Multi::<B, LANES> { bufs });
}

/// Same as [`encrypt_multi`] with a chosen lane count (for the benches).
pub fn encrypt_multi_lanes<C, B, const N: usize>(cipher: &C, bufs: &mut [B])
where
    C: BlockCipherEncrypt + BlockSizeUser<BlockSize = U16>,
    B: CbcBuf,
{
    cipher.encrypt_with_backend(Multi::<B, N> { bufs });
}

struct Multi<'a, B, const N: usize> {
    bufs: &'a mut [B],
}

impl<B, const N: usize> BlockSizeUser for Multi<'_, B, N> {
    type BlockSize = U16;
}

impl<B: CbcBuf, const N: usize> BlockCipherEncClosure for Multi<'_, B, N> {
    // Inlined into the backend's `#[target_feature]` entry point, so the
    // AES round instructions inline here too.
    #[inline(always)]
    fn call<K: BlockCipherEncBackend<BlockSize = U16>>(self, backend: &K) {
        let mut pending = self.bufs.iter_mut();
        // lane[l] = the not yet encrypted rest of a packet; chain[l] = its
        // previous ciphertext block (the IV at first).
        let mut lane: [&mut [u8]; N] = core::array::from_fn(|_| Default::default());
        let mut chain: [Block<K>; N] = core::array::from_fn(|_| Block::<K>::default());
        let mut active = 0;
        loop {
            while active < N {
                let Some(buf) = pending.next() else { break };
                let d = buf.iv_and_data();
                if !well_formed(d.len()) {
                    continue;
                }
                let (iv, data) = d.split_at_mut(16);
                chain[active].copy_from_slice(iv);
                lane[active] = data;
                active += 1;
            }
            if active == 0 {
                break;
            }
            for (c, d) in chain[..active].iter_mut().zip(lane.iter()) {
                for (x, p) in c.iter_mut().zip(d.iter()) {
                    *x ^= p;
                }
            }
            encrypt_blocks(backend, &mut chain[..active]);
            let mut l = 0;
            while l < active {
                let (head, rest) = core::mem::take(&mut lane[l]).split_at_mut(16);
                head.copy_from_slice(&chain[l]);
                if rest.is_empty() {
                    active -= 1;
                    lane.swap(l, active);
                    chain.swap(l, active);
                } else {
                    lane[l] = rest;
                    l += 1;
                }
            }
        }
        for c in chain.iter_mut() {
            c.zeroize();
        }
    }
}

/// Multi-buffer CBC with VAES on 256-bit registers: [`VAES_LANES`] packets,
/// two per register. Returns false (nothing done) without VAES; see
/// [`super::ctr_vaes`] for why the `aes` crate does not get there itself.
pub fn encrypt_multi_vaes<B: CbcBuf>(keys: &RoundKeys, bufs: &mut [B]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if super::ctr_vaes::available() {
        // SAFETY: the features the kernel is compiled for were detected.
        unsafe { vaes::encrypt(keys, bufs) };
        return true;
    }
    let _ = (keys, bufs);
    false
}

/// Packets in flight in [`encrypt_multi_vaes`]: 8 registers × 2 blocks keep
/// 16 independent 4-cycle `vaesenc` chains on two pipes busy.
pub const VAES_LANES: usize = 16;

#[cfg(target_arch = "x86_64")]
mod vaes {
    use super::{well_formed, CbcBuf, RoundKeys, VAES_LANES};
    use core::arch::x86_64::*;
    use zeroize::Zeroize;

    /// Puts the next well-formed packet into an idle lane.
    #[inline]
    fn refill<'a, B: CbcBuf>(
        pending: &mut core::slice::IterMut<'a, B>,
        lane: &mut &'a mut [u8],
        chain: &mut __m128i,
    ) -> bool {
        for buf in pending.by_ref() {
            let d = buf.iv_and_data();
            if !well_formed(d.len()) {
                continue;
            }
            let (iv, data) = d.split_at_mut(16);
            // SAFETY: `iv` is 16 readable bytes; loadu needs no alignment.
            *chain = unsafe { _mm_loadu_si128(iv.as_ptr().cast()) };
            *lane = data;
            return true;
        }
        false
    }

    #[target_feature(enable = "aes,avx2,vaes")]
    pub(super) fn encrypt<B: CbcBuf>(keys: &RoundKeys, bufs: &mut [B]) {
        let nr = keys.rounds();
        let mut rk = [_mm256_setzero_si256(); 15];
        for (d, k) in rk.iter_mut().zip(keys.keys().iter()).take(nr + 1) {
            // SAFETY: `k` is a live 16-byte array; loadu needs no alignment.
            *d = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(k.as_ptr().cast()) });
        }
        let mut pending = bufs.iter_mut();
        // Lane l: the rest of its packet still to encrypt (empty = idle)
        // and its chaining value.
        let mut lane: [&mut [u8]; VAES_LANES] = core::array::from_fn(|_| Default::default());
        let mut chain = [_mm_setzero_si128(); VAES_LANES];
        let mut active = 0;
        for (l, c) in lane.iter_mut().zip(chain.iter_mut()) {
            if refill(&mut pending, l, c) {
                active += 1;
            }
        }
        while active > 0 {
            let mut x = [_mm256_setzero_si256(); VAES_LANES / 2];
            for (i, v) in x.iter_mut().enumerate() {
                let mut half = [_mm_setzero_si128(); 2];
                for (h, out) in half.iter_mut().enumerate() {
                    let l = 2 * i + h;
                    let p = if lane[l].len() >= 16 {
                        // SAFETY: at least 16 readable bytes at `lane[l]`.
                        unsafe { _mm_loadu_si128(lane[l].as_ptr().cast()) }
                    } else {
                        _mm_setzero_si128()
                    };
                    *out = _mm_xor_si128(p, chain[l]);
                }
                *v = _mm256_set_m128i(half[1], half[0]);
            }
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
            for (i, v) in x.iter().enumerate() {
                chain[2 * i] = _mm256_castsi256_si128(*v);
                chain[2 * i + 1] = _mm256_extracti128_si256::<1>(*v);
            }
            for l in 0..VAES_LANES {
                if lane[l].len() < 16 {
                    continue;
                }
                let (head, rest) = core::mem::take(&mut lane[l]).split_at_mut(16);
                // SAFETY: `head` is 16 writable bytes.
                unsafe { _mm_storeu_si128(head.as_mut_ptr().cast(), chain[l]) };
                lane[l] = rest;
                if lane[l].is_empty() && !refill(&mut pending, &mut lane[l], &mut chain[l]) {
                    active -= 1;
                }
            }
        }
        // The broadcast round keys are key material left on the stack.
        rk.zeroize();
    }
}

/// One AES call per `ParBlocksSize` blocks (the backend's interleaved
/// kernel), the rest one by one (independent, so they still overlap).
#[inline(always)]
fn encrypt_blocks<K: BlockCipherEncBackend<BlockSize = U16>>(backend: &K, blocks: &mut [Block<K>]) {
    let par = K::ParBlocksSize::USIZE;
    let mut rest = blocks;
    while rest.len() >= par {
        let (head, tail) = rest.split_at_mut(par);
        if let Ok(p) = <&mut ParBlocks<K>>::try_from(head) {
            backend.encrypt_par_blocks_inplace(p);
        }
        rest = tail;
    }
    if !rest.is_empty() {
        backend.encrypt_tail_blocks_inplace(rest);
    }
}

/// Per-packet CBC with the `cbc` crate: the baseline the multi-buffer path
/// is measured against, and what it must equal.
pub fn encrypt_serial<C, B>(cipher: &C, bufs: &mut [B])
where
    C: BlockCipherEncrypt + BlockSizeUser<BlockSize = U16>,
    B: CbcBuf,
{
    for b in bufs {
        let d = b.iv_and_data();
        if !well_formed(d.len()) {
            continue;
        }
        let (iv, data) = d.split_at_mut(16);
        let Ok(iv) = <&Array<u8, U16>>::try_from(&*iv) else {
            continue;
        };
        let mut enc = cbc::Encryptor::<&C>::inner_iv_init(cipher, iv);
        let (blocks, _) = Array::<u8, U16>::slice_as_chunks_mut(data);
        enc.encrypt_blocks(blocks);
    }
}

/// Decrypts `data` (whole blocks) in place; the `cbc` crate runs the
/// blocks of one packet in parallel.
pub fn decrypt<C>(cipher: &C, iv: &[u8; 16], data: &mut [u8])
where
    C: BlockCipherDecrypt + BlockSizeUser<BlockSize = U16>,
{
    let iv = Array::<u8, U16>::from(*iv);
    let mut dec = cbc::Decryptor::<&C>::inner_iv_init(cipher, &iv);
    let (blocks, _) = Array::<u8, U16>::slice_as_chunks_mut(data);
    dec.decrypt_blocks(blocks);
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::KeyInit;

    #[test]
    fn multi_equals_serial_for_ragged_bursts() {
        let aes = aes::Aes256Enc::new(&[7u8; 32].into());
        let lens = [1usize, 5, 2, 88, 3, 1, 1, 17, 9, 4, 64, 2];
        let mk = || -> Vec<Vec<u8>> {
            lens.iter()
                .enumerate()
                .map(|(i, n)| (0..16 * (n + 1)).map(|j| (i * 31 + j) as u8).collect())
                .collect()
        };
        let mut a = mk();
        let mut b = mk();
        encrypt_multi(&aes, &mut a);
        encrypt_serial(&aes, &mut b);
        assert_eq!(a, b);
        let mut c = mk();
        let rk = RoundKeys::new(&[7u8; 32]).unwrap();
        if encrypt_multi_vaes(&rk, &mut c) {
            assert_eq!(c, b, "VAES kernel");
        } else {
            eprintln!("SKIPPED: VAES kernel (no VAES on this CPU)");
        }
        assert_ne!(a, mk());
        let dec = aes::Aes256Dec::from(&aes);
        for (x, y) in a.iter_mut().zip(mk()) {
            let iv: [u8; 16] = x[..16].try_into().unwrap();
            decrypt(&dec, &iv, &mut x[16..]);
            assert_eq!(*x, y);
        }
    }
}
