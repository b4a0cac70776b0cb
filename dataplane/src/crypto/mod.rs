//! ESP crypto: per-SA cipher state and batched seal/open.
//!
//! [`SaCipher`] holds the expanded keys of one SA, only those its direction
//! uses (an inbound CBC SA never encrypts, an outbound one never decrypts).
//! `seal_burst` (outbound) and `open_burst` (inbound) take up to 64 ESP
//! packets of that SA, laid out by the caller, and never allocate. CBC suites encrypt across packets
//! ([`cbc_mb`]); HMAC key pads are hashed once per SA ([`hmac`]); GCM goes
//! packet by packet ([`gcm`]).

pub mod cbc_mb;
pub mod ctr_vaes;
pub mod gcm;
pub mod hmac;
pub mod sha256_x2;

use std::fmt;

use aes::cipher::consts::U16;
use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, BlockSizeUser, KeyInit};
use aes::{Aes128Dec, Aes128Enc, Aes256Dec, Aes256Enc};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use crate::api::{Direction, SaKeys, Suite};

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

/// MAC of a CBC suite; implemented by the two HMAC key types so each CBC
/// key set names its hash in its type (no per-SA tag or function pointer).
trait CbcMac {
    fn mac_burst<'a>(&self, items: impl Iterator<Item = sha256_x2::MacItem<'a>>);
}

impl CbcMac for HmacSha256Key {
    #[inline]
    fn mac_burst<'a>(&self, items: impl Iterator<Item = sha256_x2::MacItem<'a>>) {
        sha256_x2::mac_burst(self, items)
    }
}

impl CbcMac for HmacSha1Key {
    #[inline]
    fn mac_burst<'a>(&self, items: impl Iterator<Item = sha256_x2::MacItem<'a>>) {
        for (data, esn, seq_hi, out) in items {
            let mut sfx = [0u8; 4];
            self.mac(data, seq_hi_suffix(esn, seq_hi, &mut sfx), out);
        }
    }
}

/// Inbound CBC + HMAC: an inbound SA only ever decrypts. It keeps the raw
/// cipher key and the HMAC states; the decryption schedule (240 B for
/// AES-256, most of an SA) is expanded on the stack once per burst — ~45 ns
/// per burst of up to 64 packets (criterion: no change at 64 B, within
/// noise at 1408 B), against 1M SAs × 208 B of memory and four cold cache
/// lines per burst when traffic is spread over many SAs. (Inbound GCM does
/// not do this: its per-burst setup with the GHASH key cost 9% at 64 B.)
struct CbcOpen<D, M> {
    key: [u8; 32],
    key_len: u8,
    mac: M,
    _cipher: std::marker::PhantomData<D>,
}

impl<D, M> Drop for CbcOpen<D, M> {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

/// Outbound CBC encryption keys: the VAES kernel's round keys when the CPU
/// has VAES, else the `aes` crate's schedule — one of them, not both (the
/// CPU's features do not change while the SA lives).
#[allow(
    clippy::large_enum_variant,
    reason = "E is an AES schedule of 176-240 B; clippy sizes the generic as 0"
)]
enum EncKeys<E> {
    Vaes(RoundKeys),
    Crate(E),
}

/// IVs are AES_iv_key(iv_nonce || counter): unpredictable to anyone without
/// the key (RFC 3602 §2.3), never repeated within the SA, and a burst's IVs
/// come from one parallel AES call.
struct IvGen {
    key: Aes128Enc,
    nonce: u64,
    ctr: u64,
}

/// Outbound CBC + HMAC.
struct CbcSeal<E, M> {
    enc: EncKeys<E>,
    iv: IvGen,
    mac: M,
}

/// Each variant boxed at its own size: an SA pays for the keys of its
/// suite and direction only (304 B for inbound AES-256-CBC + HMAC-SHA-256),
/// and `SaCipher` itself is a tag and a pointer.
enum Imp {
    Open256(Box<CbcOpen<Aes256Dec, HmacSha256Key>>),
    Open128(Box<CbcOpen<Aes128Dec, HmacSha256Key>>),
    Open256Sha1(Box<CbcOpen<Aes256Dec, HmacSha1Key>>),
    Seal256(Box<CbcSeal<Aes256Enc, HmacSha256Key>>),
    Seal128(Box<CbcSeal<Aes128Enc, HmacSha256Key>>),
    Seal256Sha1(Box<CbcSeal<Aes256Enc, HmacSha1Key>>),
    Gcm(Box<GcmSa>),
}

/// GCM runs the same keys both ways; the suite (128 or 256) and direction
/// live here so that `SaCipher` needs no fields beside its tag and pointer.
struct GcmSa {
    gcm: Gcm,
    suite: Suite,
    dir: Direction,
}

/// Expanded keys of one unidirectional SA; zeroized on drop, `Debug` shows
/// the suite and direction only.
pub struct SaCipher {
    imp: Imp,
}

impl fmt::Debug for SaCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SaCipher {{ suite: {:?}, dir: {:?}, keys: <hidden> }}",
            self.suite(),
            self.dir()
        )
    }
}

impl SaCipher {
    /// Expands the keys `dir` needs: inbound CBC keeps the decryption
    /// schedule, outbound CBC the encryption schedule and IV key.
    pub fn new(suite: Suite, dir: Direction, keys: &SaKeys) -> Result<SaCipher, CryptoError> {
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
        if suite.is_aead() {
            let (key, salt) = keys.encr.split_at(suite.cipher_key_len());
            let salt: [u8; 4] = salt.try_into().map_err(|_| bad_key())?;
            let gcm = Gcm::new(key, salt).ok_or_else(bad_key)?;
            return Ok(SaCipher {
                imp: Imp::Gcm(Box::new(GcmSa { gcm, suite, dir })),
            });
        }
        let k = &keys.encr[..];
        let i = &keys.integ[..];
        let imp = match (dir, suite) {
            (Direction::Inbound, Suite::Aes256CbcHmacSha256) => Imp::Open256(Box::new(
                CbcOpen::new(k, HmacSha256Key::sha256(i)).ok_or_else(bad_key)?,
            )),
            (Direction::Inbound, Suite::Aes128CbcHmacSha256) => Imp::Open128(Box::new(
                CbcOpen::new(k, HmacSha256Key::sha256(i)).ok_or_else(bad_key)?,
            )),
            (Direction::Inbound, Suite::Aes256CbcHmacSha1) => Imp::Open256Sha1(Box::new(
                CbcOpen::new(k, HmacSha1Key::sha1(i)).ok_or_else(bad_key)?,
            )),
            (Direction::Outbound, Suite::Aes256CbcHmacSha256) => Imp::Seal256(Box::new(
                CbcSeal::new(k, HmacSha256Key::sha256(i)).ok_or_else(bad_key)?,
            )),
            (Direction::Outbound, Suite::Aes128CbcHmacSha256) => Imp::Seal128(Box::new(
                CbcSeal::new(k, HmacSha256Key::sha256(i)).ok_or_else(bad_key)?,
            )),
            (Direction::Outbound, Suite::Aes256CbcHmacSha1) => Imp::Seal256Sha1(Box::new(
                CbcSeal::new(k, HmacSha1Key::sha1(i)).ok_or_else(bad_key)?,
            )),
            (_, Suite::Aes128Gcm16 | Suite::Aes256Gcm16) => return Err(bad_key()),
        };
        Ok(SaCipher { imp })
    }

    pub fn suite(&self) -> Suite {
        match &self.imp {
            Imp::Open256(_) | Imp::Seal256(_) => Suite::Aes256CbcHmacSha256,
            Imp::Open128(_) | Imp::Seal128(_) => Suite::Aes128CbcHmacSha256,
            Imp::Open256Sha1(_) | Imp::Seal256Sha1(_) => Suite::Aes256CbcHmacSha1,
            Imp::Gcm(g) => g.suite,
        }
    }

    pub fn dir(&self) -> Direction {
        match &self.imp {
            Imp::Open256(_) | Imp::Open128(_) | Imp::Open256Sha1(_) => Direction::Inbound,
            Imp::Seal256(_) | Imp::Seal128(_) | Imp::Seal256Sha1(_) => Direction::Outbound,
            Imp::Gcm(g) => g.dir,
        }
    }

    /// Bytes of heap the key set takes (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of_val;
        match &self.imp {
            Imp::Open256(b) => size_of_val(&**b),
            Imp::Open128(b) => size_of_val(&**b),
            Imp::Open256Sha1(b) => size_of_val(&**b),
            Imp::Seal256(b) => size_of_val(&**b),
            Imp::Seal128(b) => size_of_val(&**b),
            Imp::Seal256Sha1(b) => size_of_val(&**b),
            Imp::Gcm(b) => size_of_val(&**b),
        }
    }

    /// Encrypts and authenticates up to 64 ESP packets of this SA in place
    /// (more are processed in chunks of 64). Never allocates. A job whose
    /// length does not fit the suite (see [`ct_range`]) is a caller bug:
    /// it is skipped and its bytes are left as they are. On an inbound
    /// cipher (also a caller bug) every packet is zeroed, so no plaintext
    /// leaves under an ESP header.
    pub fn seal_burst(&mut self, jobs: &mut [SealJob<'_>]) {
        for chunk in jobs.chunks_mut(MAX_BURST) {
            match &mut self.imp {
                Imp::Seal256(c) => c.seal(Suite::Aes256CbcHmacSha256, chunk),
                Imp::Seal128(c) => c.seal(Suite::Aes128CbcHmacSha256, chunk),
                Imp::Seal256Sha1(c) => c.seal(Suite::Aes256CbcHmacSha1, chunk),
                Imp::Gcm(g) => gcm_seal(&g.gcm, g.suite, chunk),
                Imp::Open256(_) | Imp::Open128(_) | Imp::Open256Sha1(_) => {
                    debug_assert!(false, "seal_burst on an inbound SA");
                    for j in chunk.iter_mut() {
                        j.esp.fill(0);
                    }
                }
            }
        }
    }

    /// For each job: verifies the ICV in constant time and, only if it is
    /// good, decrypts in place. Sets `job.ok`. Malformed lengths give
    /// `ok = false` with the packet untouched; so does every packet on an
    /// outbound cipher (a caller bug).
    pub fn open_burst(&mut self, jobs: &mut [OpenJob<'_>]) {
        match &mut self.imp {
            Imp::Open256(c) => c.open(Suite::Aes256CbcHmacSha256, jobs),
            Imp::Open128(c) => c.open(Suite::Aes128CbcHmacSha256, jobs),
            Imp::Open256Sha1(c) => c.open(Suite::Aes256CbcHmacSha1, jobs),
            Imp::Gcm(g) => gcm_open(&g.gcm, g.suite, jobs),
            Imp::Seal256(_) | Imp::Seal128(_) | Imp::Seal256Sha1(_) => {
                debug_assert!(false, "open_burst on an outbound SA");
                for j in jobs.iter_mut() {
                    j.ok = false;
                }
            }
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

impl<D, M> CbcOpen<D, M>
where
    D: BlockCipherDecrypt + BlockSizeUser<BlockSize = U16> + KeyInit,
    M: CbcMac,
{
    /// None if `key` is not the cipher's key length.
    fn new(key: &[u8], mac: M) -> Option<Self> {
        // Checks the length the way the per-burst expansion will.
        D::new_from_slice(key).ok()?;
        let mut k = [0u8; 32];
        k.get_mut(..key.len())?.copy_from_slice(key);
        Some(CbcOpen {
            key: k,
            key_len: key.len() as u8,
            mac,
            _cipher: std::marker::PhantomData,
        })
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
            self.mac.mac_burst(items);
            // Zeroized on drop (the `aes` crate's "zeroize" feature).
            let Ok(dec) = D::new_from_slice(&self.key[..self.key_len as usize]) else {
                chunk.iter_mut().for_each(|j| j.ok = false);
                continue;
            };
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
                cbc_mb::decrypt(&dec, &iv, ct);
                j.ok = true;
            }
            want.zeroize();
        }
    }
}

impl<E, M> CbcSeal<E, M>
where
    E: BlockCipherEncrypt + BlockSizeUser<BlockSize = U16> + KeyInit,
    M: CbcMac,
{
    /// None if `key` is not the cipher's key length.
    fn new(key: &[u8], mac: M) -> Option<Self> {
        let enc = match ctr_vaes::available().then(|| RoundKeys::new(key)).flatten() {
            Some(rk) => EncKeys::Vaes(rk),
            None => EncKeys::Crate(E::new_from_slice(key).ok()?),
        };
        let mut iv_key = [0u8; 16];
        rand::fill(&mut iv_key[..]);
        let iv = IvGen {
            key: Aes128Enc::new(&iv_key.into()),
            nonce: rand::random(),
            ctr: 0,
        };
        iv_key.zeroize();
        Some(CbcSeal { enc, iv, mac })
    }

    fn seal(&mut self, suite: Suite, jobs: &mut [SealJob<'_>]) {
        debug_assert!(jobs.len() <= MAX_BURST);
        let icv_len = suite.icv_len();
        // IVs of the whole burst in one parallel AES call.
        let mut ivs = [aes::Block::default(); MAX_BURST];
        let n = jobs.len().min(MAX_BURST);
        for iv in ivs[..n].iter_mut() {
            iv[..8].copy_from_slice(&self.iv.nonce.to_be_bytes());
            iv[8..].copy_from_slice(&self.iv.ctr.to_be_bytes());
            self.iv.ctr = self.iv.ctr.wrapping_add(1);
        }
        self.iv.key.encrypt_blocks(&mut ivs[..n]);

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
        match &self.enc {
            EncKeys::Vaes(rk) => {
                // Refuses only without VAES, which `new` checked; should it
                // ever, send zeros (the ICV still covers them) rather than
                // the plaintext.
                if !cbc_mb::encrypt_multi_vaes(rk, regions) {
                    for r in regions.iter_mut() {
                        cbc_mb::CbcBuf::iv_and_data(r).fill(0);
                    }
                }
            }
            EncKeys::Crate(e) => cbc_mb::encrypt_multi(e, regions),
        }

        self.mac.mac_burst(jobs.iter_mut().filter_map(|j| {
            let (_, end) = ct_range(suite, j.esp.len())?;
            let (data, icv) = j.esp.split_at_mut(end);
            Some((&*data, j.esn, j.seq_hi, &mut icv[..icv_len]))
        }));
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

impl Drop for IvGen {
    fn drop(&mut self) {
        // AES round keys zeroize themselves (aes feature "zeroize", and
        // `RoundKeys: ZeroizeOnDrop`); the HMAC states in `HmacKey::drop`.
        self.nonce.zeroize();
    }
}
