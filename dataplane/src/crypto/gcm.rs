//! AES-GCM for ESP (RFC 4106): nonce = 4-byte salt || 8-byte explicit IV,
//! AAD = SPI || SEQ (|| SEQ high half first with ESN), 16-byte tag.
//!
//! GCM is parallel inside one packet (CTR keystream, GHASH), so each
//! packet goes through `aes-gcm` on its own.

use aes_gcm::aead::{array::Array, AeadInOut, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use zeroize::Zeroize;

pub enum GcmKey {
    Aes128(Aes128Gcm),
    Aes256(Aes256Gcm),
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

pub struct Gcm {
    key: GcmKey,
    salt: [u8; 4],
}

impl Gcm {
    /// `key` is the cipher key (16 or 32 bytes); returns None otherwise.
    pub fn new(key: &[u8], salt: [u8; 4]) -> Option<Gcm> {
        let key = match key.len() {
            16 => GcmKey::Aes128(Aes128Gcm::new_from_slice(key).ok()?),
            32 => GcmKey::Aes256(Aes256Gcm::new_from_slice(key).ok()?),
            _ => return None,
        };
        Some(Gcm { key, salt })
    }

    fn nonce(&self, explicit_iv: &[u8; 8]) -> Array<u8, aes_gcm::aead::consts::U12> {
        let mut n = Array::<u8, aes_gcm::aead::consts::U12>::default();
        n[..4].copy_from_slice(&self.salt);
        n[4..].copy_from_slice(explicit_iv);
        n
    }

    /// Encrypts `data` in place and returns the tag.
    pub fn seal(&self, explicit_iv: &[u8; 8], aad: &[u8], data: &mut [u8], tag: &mut [u8]) {
        let nonce = self.nonce(explicit_iv);
        let t = match &self.key {
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
        let nonce = self.nonce(explicit_iv);
        let Ok(tag) = <&Array<u8, aes_gcm::aead::consts::U16>>::try_from(tag) else {
            return false;
        };
        match &self.key {
            GcmKey::Aes128(k) => k.decrypt_inout_detached(&nonce, aad, data.into(), tag),
            GcmKey::Aes256(k) => k.decrypt_inout_detached(&nonce, aad, data.into(), tag),
        }
        .is_ok()
    }
}

impl Drop for Gcm {
    fn drop(&mut self) {
        // The AES and GHASH keys are zeroized by aes-gcm's own drop
        // (feature "zeroize").
        self.salt.zeroize();
    }
}
