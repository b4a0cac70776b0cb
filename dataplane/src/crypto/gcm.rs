//! AES-GCM for ESP (RFC 4106): nonce = 4-byte salt || 8-byte explicit IV,
//! AAD = SPI || SEQ (|| SEQ high half first with ESN), 16-byte tag.
//!
//! GCM is parallel inside one packet (CTR keystream, GHASH), so each
//! packet goes on its own: CTR through the VAES kernel of [`super::ctr_vaes`]
//! and GHASH through the `ghash` crate (PCLMULQDQ) when the CPU has VAES,
//! else the whole packet through `aes-gcm`.

use aes::{Aes128Enc, Aes256Enc};
use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{array::Array, AeadInOut, KeyInit};
use aes_gcm::AesGcm;
use ghash::universal_hash::UniversalHash;
use ghash::GHash;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use super::ctr_vaes::{self, RoundKeys};

/// The `aes-gcm` fallback. Over the encrypt-only AES types: GCM never runs
/// the inverse cipher, and `aes_gcm::Aes256Gcm` would keep a decryption
/// schedule (240 B) that is never used.
pub enum GcmKey {
    Aes128(AesGcm<Aes128Enc, U12>),
    Aes256(AesGcm<Aes256Enc, U12>),
}

/// The AAD of RFC 4106 §5: 8 bytes, or 12 with ESN.
pub fn aad(spi_seq: &[u8; 8], seq_hi: u32, esn: bool, out: &mut [u8; 12]) -> usize {
    if esn {
        out[..4].copy_from_slice(&spi_seq[..4]);
        out[4..8].copy_from_slice(&seq_hi.to_be_bytes());
        out[8..].copy_from_slice(&spi_seq[4..]);
        12
    } else {
        out[..8].copy_from_slice(spi_seq);
        8
    }
}

/// One of the two key sets, never both: the CPU's features do not change
/// while the SA lives.
enum Keys {
    /// The VAES path: round keys and GHASH key H = E(K, 0^128).
    Fast(RoundKeys, GHash),
    Crate(GcmKey),
}

pub struct Gcm {
    keys: Keys,
    salt: [u8; 4],
}

impl Gcm {
    /// `key` is the cipher key (16 or 32 bytes); returns None otherwise.
    pub fn new(key: &[u8], salt: [u8; 4]) -> Option<Gcm> {
        if !matches!(key.len(), 16 | 32) {
            return None;
        }
        let fast = if ctr_vaes::available() {
            RoundKeys::new(key).and_then(|rk| {
                let mut h = ctr_vaes::encrypt_block(&rk, [0u8; 16])?;
                let g = GHash::new(&h.into());
                h.zeroize();
                Some(Keys::Fast(rk, g))
            })
        } else {
            None
        };
        let keys = match fast {
            Some(k) => k,
            None => Keys::Crate(match key.len() {
                16 => GcmKey::Aes128(AesGcm::new_from_slice(key).ok()?),
                _ => GcmKey::Aes256(AesGcm::new_from_slice(key).ok()?),
            }),
        };
        Some(Gcm { keys, salt })
    }

    fn j0(&self, explicit_iv: &[u8; 8], counter: u32) -> [u8; 16] {
        let mut j = [0u8; 16];
        j[..4].copy_from_slice(&self.salt);
        j[4..12].copy_from_slice(explicit_iv);
        j[12..].copy_from_slice(&counter.to_be_bytes());
        j
    }

    fn ghash_tag(g: &GHash, aad: &[u8], ct: &[u8], mask: &[u8; 16]) -> [u8; 16] {
        let mut g = g.clone();
        g.update_padded(aad);
        g.update_padded(ct);
        let mut lens = ghash::Block::default();
        lens[..8].copy_from_slice(&(aad.len() as u64 * 8).to_be_bytes());
        lens[8..].copy_from_slice(&(ct.len() as u64 * 8).to_be_bytes());
        g.update(&[lens]);
        let t = g.finalize();
        let mut out = [0u8; 16];
        for ((o, a), b) in out.iter_mut().zip(t.iter()).zip(mask.iter()) {
            *o = a ^ b;
        }
        out
    }

    fn nonce(&self, explicit_iv: &[u8; 8]) -> Array<u8, aes_gcm::aead::consts::U12> {
        let mut n = Array::<u8, aes_gcm::aead::consts::U12>::default();
        n[..4].copy_from_slice(&self.salt);
        n[4..].copy_from_slice(explicit_iv);
        n
    }

    /// Encrypts `data` in place and returns the tag.
    pub fn seal(&self, explicit_iv: &[u8; 8], aad: &[u8], data: &mut [u8], tag: &mut [u8]) {
        let key = match &self.keys {
            Keys::Fast(rk, g) => {
                // The kernels only refuse without VAES, which `new` checked;
                // should they ever, the packet leaves with a wrong tag
                // (dropped by the peer), never in the clear.
                let Some(mut mask) = ctr_vaes::encrypt_block(rk, self.j0(explicit_iv, 1)) else {
                    tag.fill(0);
                    return;
                };
                if !ctr_vaes::ctr32_xor(rk, self.j0(explicit_iv, 2), data) {
                    data.fill(0);
                }
                let t = Self::ghash_tag(g, aad, data, &mask);
                for (o, t) in tag.iter_mut().zip(t.iter()) {
                    *o = *t;
                }
                mask.zeroize();
                return;
            }
            Keys::Crate(k) => k,
        };
        let nonce = self.nonce(explicit_iv);
        let t = match key {
            GcmKey::Aes128(k) => k.encrypt_inout_detached(&nonce, aad, data.into()),
            GcmKey::Aes256(k) => k.encrypt_inout_detached(&nonce, aad, data.into()),
        };
        // Only fails past the 2^36-byte message limit, which no packet reaches.
        if let Ok(t) = t {
            tag.copy_from_slice(&t[..tag.len()]);
        }
    }

    /// Checks the tag in constant time and only then decrypts in place.
    pub fn open(&self, explicit_iv: &[u8; 8], aad: &[u8], data: &mut [u8], tag: &[u8]) -> bool {
        let key = match &self.keys {
            Keys::Fast(rk, g) => {
                let Some(mut mask) = ctr_vaes::encrypt_block(rk, self.j0(explicit_iv, 1)) else {
                    return false;
                };
                let want = Self::ghash_tag(g, aad, data, &mask);
                mask.zeroize();
                let good = tag.len() == 16 && bool::from(want[..].ct_eq(tag));
                return good && ctr_vaes::ctr32_xor(rk, self.j0(explicit_iv, 2), data);
            }
            Keys::Crate(k) => k,
        };
        let nonce = self.nonce(explicit_iv);
        let Ok(tag) = <&Array<u8, aes_gcm::aead::consts::U16>>::try_from(tag) else {
            return false;
        };
        match key {
            GcmKey::Aes128(k) => k.decrypt_inout_detached(&nonce, aad, data.into(), tag),
            GcmKey::Aes256(k) => k.decrypt_inout_detached(&nonce, aad, data.into(), tag),
        }
        .is_ok()
    }
}

impl Drop for Gcm {
    fn drop(&mut self) {
        // The round keys zeroize themselves (`ZeroizeOnDrop`), the AES and
        // GHASH keys in their crates' drops (features "zeroize").
        self.salt.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::aead::AeadInOut;

    #[test]
    fn matches_aes_gcm_crate_for_all_lengths() {
        for key_len in [16usize, 32] {
            let key: Vec<u8> = (0..key_len as u8).collect();
            let g = Gcm::new(&key, [9, 8, 7, 6]).unwrap();
            for len in 0..1000 {
                let iv = (len as u64 * 77).to_be_bytes();
                let aad = [1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
                let aad = &aad[..8 + 4 * (len % 2)];
                let pt: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
                let mut nonce = [0u8; 12];
                nonce[..4].copy_from_slice(&[9, 8, 7, 6]);
                nonce[4..].copy_from_slice(&iv);
                let mut want = pt.clone();
                let want_tag = if key_len == 16 {
                    aes_gcm::Aes128Gcm::new_from_slice(&key)
                        .unwrap()
                        .encrypt_inout_detached(&nonce.into(), aad, (&mut want[..]).into())
                } else {
                    aes_gcm::Aes256Gcm::new_from_slice(&key)
                        .unwrap()
                        .encrypt_inout_detached(&nonce.into(), aad, (&mut want[..]).into())
                }
                .unwrap();
                let mut got = pt.clone();
                let mut tag = [0u8; 16];
                g.seal(&iv, aad, &mut got, &mut tag);
                assert_eq!(got, want, "len {len}");
                assert_eq!(&tag[..], &want_tag[..], "len {len}");
                assert!(g.open(&iv, aad, &mut got, &tag));
                assert_eq!(got, pt);
                tag[len % 16] ^= 1;
                let mut again = want.clone();
                assert!(!g.open(&iv, aad, &mut again, &tag));
                assert_eq!(again, want, "nothing decrypted on a bad tag");
            }
        }
    }
}
