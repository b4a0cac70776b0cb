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
        assert_ne!(a, mk());
        let dec = aes::Aes256Dec::from(&aes);
        for (x, y) in a.iter_mut().zip(mk()) {
            let iv: [u8; 16] = x[..16].try_into().unwrap();
            decrypt(&dec, &iv, &mut x[16..]);
            assert_eq!(*x, y);
        }
    }
}
