//! ESP crypto: per-SA cipher state and batched seal/open.
//!
//! [`SaCipher`] holds the expanded keys of one SA. `seal_burst` and
//! `open_burst` take up to 64 ESP packets of that SA, laid out by the
//! caller, and never allocate. CBC suites encrypt across packets
//! ([`cbc_mb`]); HMAC key pads are hashed once per SA ([`hmac`]); GCM goes
//! packet by packet ([`gcm`]).

pub mod cbc_mb;
pub mod ctr_vaes;
pub mod gcm;
pub mod hmac;
pub mod sha256_x2;

use std::fmt;

use aes::cipher::{BlockCipherEncrypt, KeyInit};
use aes::{Aes128Dec, Aes128Enc, Aes256Dec, Aes256Enc};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use crate::api::{SaKeys, Suite};

use self::ctr_vaes::RoundKeys;
use self::gcm::Gcm;
use self::hmac::{HmacSha1Key, HmacSha256Key};

/// Packets one burst call takes at most.
pub const MAX_BURST: usize = 64;

/// SPI and low sequence number in front of the IV (RFC 4303 §2).
pub const ESP_HDR_LEN: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("{suite:?}: encryption key must be {want} bytes, got {got}")]
    BadKeyLength {
        suite: Suite,
        want: usize,
        got: usize,
    },
    #[error("{suite:?}: integrity key must be {want} bytes, got {got}")]
    BadIntegKeyLength {
        suite: Suite,
        want: usize,
        got: usize,
    },
}

/// One outbound ESP packet: `SPI | SEQ | IV | plaintext (padded) | ICV`.
/// `seal_burst` fills in the IV, encrypts and writes the ICV.
pub struct SealJob<'a> {
    pub esp: &'a mut [u8],
    pub seq_hi: u32,
    pub esn: bool,
}

/// One inbound ESP packet, same layout; `ok` says whether the ICV was good
/// (and so whether the payload is now plaintext).
pub struct OpenJob<'a> {
    pub esp: &'a mut [u8],
    pub seq_hi: u32,
    pub esn: bool,
    pub ok: bool,
}

/// Where the encrypted part of an ESP packet of `len` bytes lies, if the
/// length fits the suite: `(start, end)`, `end` = start of the ICV.
pub fn ct_range(suite: Suite, len: usize) -> Option<(usize, usize)> {
    let start = ESP_HDR_LEN + suite.iv_len();
    let end = len.checked_sub(suite.icv_len())?;
    let ct = end.checked_sub(start)?;
    (ct >= suite.block_len() && ct.is_multiple_of(suite.block_len())).then_some((start, end))
}

enum Mac {
    Sha256(HmacSha256Key),
    Sha1(HmacSha1Key),
}

/// Expanded keys of a CBC + HMAC SA.
struct CbcHmac<E, D> {
    enc: E,
    dec: D,
    /// Round keys for the VAES multi-buffer kernel, when the CPU has VAES.
    vaes: Option<RoundKeys>,
    /// IVs are AES_iv_key(iv_nonce || counter): unpredictable to anyone
    /// without the key (RFC 3602 §2.3), never repeated within the SA, and
    /// a burst's IVs come from one parallel AES call.
    iv_key: Aes128Enc,
    iv_nonce: u64,
    iv_ctr: u64,
    mac: Mac,
}

enum Imp {
    Cbc256(CbcHmac<Aes256Enc, Aes256Dec>),
    Cbc128(CbcHmac<Aes128Enc, Aes128Dec>),
    // Boxed: the fallback and VAES key sets make it the largest variant.
    Gcm(Box<Gcm>),
}

/// Expanded keys for one SA; zeroized on drop, `Debug` shows the suite only.
pub struct SaCipher {
    suite: Suite,
    imp: Imp,
}

impl fmt::Debug for SaCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SaCipher {{ suite: {:?}, keys: <hidden> }}", self.suite)
    }
}

impl SaCipher {
    pub fn new(suite: Suite, keys: &SaKeys) -> Result<SaCipher, CryptoError> {
        if keys.encr.len() != suite.encr_keymat_len() {
            return Err(CryptoError::BadKeyLength {
                suite,
                want: suite.encr_keymat_len(),
                got: keys.encr.len(),
            });
        }
        if keys.integ.len() != suite.integ_key_len() {
            return Err(CryptoError::BadIntegKeyLength {
                suite,
                want: suite.integ_key_len(),
                got: keys.integ.len(),
            });
        }
        let bad_key = || CryptoError::BadKeyLength {
            suite,
            want: suite.encr_keymat_len(),
            got: keys.encr.len(),
        };
        let imp = if suite.is_aead() {
            let (key, salt) = keys.encr.split_at(suite.cipher_key_len());
            let salt: [u8; 4] = salt.try_into().map_err(|_| bad_key())?;
            Imp::Gcm(Box::new(Gcm::new(key, salt).ok_or_else(bad_key)?))
        } else {
            let mac = match suite {
                Suite::Aes256CbcHmacSha1 => Mac::Sha1(HmacSha1Key::sha1(&keys.integ)),
                _ => Mac::Sha256(HmacSha256Key::sha256(&keys.integ)),
            };
            let mut iv_key = [0u8; 16];
            rand::fill(&mut iv_key[..]);
            let iv_aes = Aes128Enc::new(&iv_key.into());
            iv_key.zeroize();
            let iv_nonce: u64 = rand::random();
            let vaes = if ctr_vaes::available() {
                RoundKeys::new(&keys.encr)
            } else {
                None
            };
            if suite.cipher_key_len() == 32 {
                let enc = Aes256Enc::new_from_slice(&keys.encr).map_err(|_| bad_key())?;
                let dec = Aes256Dec::from(&enc);
                Imp::Cbc256(CbcHmac {
                    enc,
                    dec,
                    vaes,
                    iv_key: iv_aes,
                    iv_nonce,
                    iv_ctr: 0,
                    mac,
                })
            } else {
                let enc = Aes128Enc::new_from_slice(&keys.encr).map_err(|_| bad_key())?;
                let dec = Aes128Dec::from(&enc);
                Imp::Cbc128(CbcHmac {
                    enc,
                    dec,
                    vaes,
                    iv_key: iv_aes,
                    iv_nonce,
                    iv_ctr: 0,
                    mac,
                })
            }
        };
        Ok(SaCipher { suite, imp })
    }

    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// Encrypts and authenticates up to 64 ESP packets of this SA in place
    /// (more are processed in chunks of 64). Never allocates. A job whose
    /// length does not fit the suite (see [`ct_range`]) is a caller bug:
    /// it is skipped and its bytes are left as they are.
    pub fn seal_burst(&mut self, jobs: &mut [SealJob<'_>]) {
        let suite = self.suite;
        for chunk in jobs.chunks_mut(MAX_BURST) {
            match &mut self.imp {
                Imp::Cbc256(c) => c.seal(suite, chunk),
                Imp::Cbc128(c) => c.seal(suite, chunk),
                Imp::Gcm(g) => gcm_seal(g, suite, chunk),
            }
        }
    }

    /// For each job: verifies the ICV in constant time and, only if it is
    /// good, decrypts in place. Sets `job.ok`. Malformed lengths give
    /// `ok = false` with the packet untouched.
    pub fn open_burst(&mut self, jobs: &mut [OpenJob<'_>]) {
        let suite = self.suite;
        match &mut self.imp {
            Imp::Cbc256(c) => c.open(suite, jobs),
            Imp::Cbc128(c) => c.open(suite, jobs),
            Imp::Gcm(g) => gcm_open(g, suite, jobs),
        }
    }
}

fn seq_hi_suffix(esn: bool, seq_hi: u32, buf: &mut [u8; 4]) -> &[u8] {
    *buf = seq_hi.to_be_bytes();
    if esn {
        &buf[..]
    } else {
        &buf[..0]
    }
}

/// The part of a sealed ESP packet that CBC encrypts: IV + ciphertext.
struct CbcRegion<'j, 'a>(&'j mut SealJob<'a>, usize);

impl cbc_mb::CbcBuf for CbcRegion<'_, '_> {
    fn iv_and_data(&mut self) -> &mut [u8] {
        let end = self.1;
        match self.0.esp.get_mut(ESP_HDR_LEN..end) {
            Some(r) => r,
            None => &mut [],
        }
    }
}

impl<E, D> CbcHmac<E, D>
where
    E: BlockCipherEncrypt + aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>,
    D: aes::cipher::BlockCipherDecrypt
        + aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>,
{
    fn seal(&mut self, suite: Suite, jobs: &mut [SealJob<'_>]) {
        debug_assert!(jobs.len() <= MAX_BURST);
        let icv_len = suite.icv_len();
        // IVs of the whole burst in one parallel AES call.
        let mut ivs = [aes::Block::default(); MAX_BURST];
        let n = jobs.len().min(MAX_BURST);
        for iv in ivs[..n].iter_mut() {
            iv[..8].copy_from_slice(&self.iv_nonce.to_be_bytes());
            iv[8..].copy_from_slice(&self.iv_ctr.to_be_bytes());
            self.iv_ctr = self.iv_ctr.wrapping_add(1);
        }
        self.iv_key.encrypt_blocks(&mut ivs[..n]);

        let mut regions: [Option<CbcRegion<'_, '_>>; MAX_BURST] = [const { None }; MAX_BURST];
        let mut count = 0;
        for (job, iv) in jobs.iter_mut().zip(ivs.iter()) {
            let Some((start, end)) = ct_range(suite, job.esp.len()) else {
                continue;
            };
            job.esp[ESP_HDR_LEN..start].copy_from_slice(iv);
            regions[count] = Some(CbcRegion(job, end));
            count += 1;
        }
        let regions = &mut regions[..count];
        let done = match &self.vaes {
            Some(rk) => cbc_mb::encrypt_multi_vaes(rk, regions),
            None => false,
        };
        if !done {
            cbc_mb::encrypt_multi(&self.enc, regions);
        }

        match &self.mac {
            Mac::Sha256(k) => sha256_x2::mac_burst(
                k,
                jobs.iter_mut().filter_map(|j| {
                    let (_, end) = ct_range(suite, j.esp.len())?;
                    let (data, icv) = j.esp.split_at_mut(end);
                    Some((&*data, j.esn, j.seq_hi, &mut icv[..icv_len]))
                }),
            ),
            Mac::Sha1(k) => {
                for j in jobs.iter_mut() {
                    let Some((_, end)) = ct_range(suite, j.esp.len()) else {
                        continue;
                    };
                    let mut sfx = [0u8; 4];
                    let sfx = seq_hi_suffix(j.esn, j.seq_hi, &mut sfx);
                    let (data, icv) = j.esp.split_at_mut(end);
                    k.mac(data, sfx, &mut icv[..icv_len]);
                }
            }
        }
    }

    fn open(&mut self, suite: Suite, jobs: &mut [OpenJob<'_>]) {
        let icv_len = suite.icv_len();
        for chunk in jobs.chunks_mut(MAX_BURST) {
            // All ICVs of the burst first (SHA-256 two packets at a time),
            // then compare and decrypt.
            let mut want = [[0u8; 16]; MAX_BURST];
            let items = chunk.iter().zip(want.iter_mut()).filter_map(|(j, w)| {
                let (_, end) = ct_range(suite, j.esp.len())?;
                Some((&j.esp[..end], j.esn, j.seq_hi, &mut w[..icv_len]))
            });
            match &self.mac {
                Mac::Sha256(k) => sha256_x2::mac_burst(k, items),
                Mac::Sha1(k) => {
                    for (data, esn, seq_hi, out) in items {
                        let mut sfx = [0u8; 4];
                        k.mac(data, seq_hi_suffix(esn, seq_hi, &mut sfx), out);
                    }
                }
            }
            for (j, w) in chunk.iter_mut().zip(want.iter()) {
                j.ok = false;
                let Some((start, end)) = ct_range(suite, j.esp.len()) else {
                    continue;
                };
                let good: bool = w[..icv_len].ct_eq(&j.esp[end..]).into();
                if !good {
                    continue;
                }
                let (head, ct) = j.esp[..end].split_at_mut(start);
                let Ok(iv) = <[u8; 16]>::try_from(&head[ESP_HDR_LEN..]) else {
                    continue;
                };
                cbc_mb::decrypt(&self.dec, &iv, ct);
                j.ok = true;
            }
            want.zeroize();
        }
    }
}

/// Empty slots of the burst's region array hold no packet.
impl<'j, 'a> cbc_mb::CbcBuf for Option<CbcRegion<'j, 'a>> {
    fn iv_and_data(&mut self) -> &mut [u8] {
        match self {
            Some(r) => r.iv_and_data(),
            None => &mut [],
        }
    }
}

fn gcm_seal(g: &Gcm, suite: Suite, jobs: &mut [SealJob<'_>]) {
    let icv_len = suite.icv_len();
    for j in jobs.iter_mut() {
        let Some((start, end)) = ct_range(suite, j.esp.len()) else {
            continue;
        };
        // Explicit IV = the 64-bit sequence number: unique per packet of
        // the SA, which is all RFC 4106 §3.1 asks.
        let mut hdr = [0u8; 8];
        hdr.copy_from_slice(&j.esp[..ESP_HDR_LEN]);
        let seq_lo = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        let iv = ((u64::from(j.seq_hi) << 32) | u64::from(seq_lo)).to_be_bytes();
        j.esp[ESP_HDR_LEN..start].copy_from_slice(&iv);
        let mut aad_buf = [0u8; 12];
        let n = gcm::aad(&hdr, j.seq_hi, j.esn, &mut aad_buf);
        let (body, icv) = j.esp.split_at_mut(end);
        g.seal(&iv, &aad_buf[..n], &mut body[start..], &mut icv[..icv_len]);
    }
}

fn gcm_open(g: &Gcm, suite: Suite, jobs: &mut [OpenJob<'_>]) {
    for j in jobs.iter_mut() {
        j.ok = false;
        let Some((start, end)) = ct_range(suite, j.esp.len()) else {
            continue;
        };
        let mut hdr = [0u8; 8];
        hdr.copy_from_slice(&j.esp[..ESP_HDR_LEN]);
        let mut iv = [0u8; 8];
        iv.copy_from_slice(&j.esp[ESP_HDR_LEN..start]);
        let mut aad_buf = [0u8; 12];
        let n = gcm::aad(&hdr, j.seq_hi, j.esn, &mut aad_buf);
        let (body, icv) = j.esp.split_at_mut(end);
        j.ok = g.open(&iv, &aad_buf[..n], &mut body[start..], icv);
    }
}

impl<E, D> Drop for CbcHmac<E, D> {
    fn drop(&mut self) {
        // AES round keys zeroize themselves (aes feature "zeroize"); the
        // HMAC states in `HmacKey::drop`.
        self.iv_nonce.zeroize();
    }
}
