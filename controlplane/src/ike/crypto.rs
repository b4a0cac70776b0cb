//! SK payload protection (RFC 7296 §3.14) with ENCR_AES_CBC-256 and
//! AUTH_HMAC_SHA2_256_128, and PSK authentication data (RFC 7296 §2.15).

use aes::Aes256;
use cbc::cipher::{block_padding::NoPadding, BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::keys::{IKE_ENCR_KEY_LEN, IKE_INTEG_KEY_LEN};
use super::prf::{prf, PRF_LEN};

/// IKE header length (RFC 7296 §3.1).
pub const IKE_HEADER_LEN: usize = 28;
/// Payload type of the Encrypted and Authenticated payload (RFC 7296 §3.14).
pub const PAYLOAD_SK: u8 = 46;
const BLOCK: usize = 16;
/// AUTH_HMAC_SHA2_256_128 truncates to 128 bits (RFC 4868 §2.3).
pub const ICV_LEN: usize = 16;
/// RFC 7296 §2.15.
const KEY_PAD: &[u8] = b"Key Pad for IKEv2";

/// Why an SK-protected message was rejected. Each is a counted drop, never
/// answered (RFC 7296 §2.21.2: an integrity failure is silently discarded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SkError {
    #[error("message shorter than the IKE header")]
    TooShort,
    #[error("no SK payload in the payload chain")]
    NoSkPayload,
    #[error("payload length field runs past the message")]
    BadPayloadLength,
    #[error("SK payload is not the last payload")]
    SkNotLast,
    #[error("ciphertext is not a whole number of AES blocks")]
    BadCiphertextLength,
    #[error("integrity check value mismatch")]
    BadIcv,
    #[error("pad length exceeds the decrypted data")]
    BadPadding,
}

/// The two keys protecting one direction of an IKE SA.
#[derive(Clone, Copy)]
pub struct SkKeys<'a> {
    pub encr: &'a [u8; IKE_ENCR_KEY_LEN],
    pub integ: &'a [u8; IKE_INTEG_KEY_LEN],
}

fn hmac(key: &[u8]) -> Hmac<Sha256> {
    match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        // HMAC takes any key length; kept total without unwrap.
        Err(_) => <Hmac<Sha256> as KeyInit>::new(&Default::default()),
    }
}

/// Builds `prefix | SK payload` where `prefix` is the IKE header (whose last
/// next-payload field must already say SK) plus any cleartext payloads, and
/// `inner` are the encoded inner payloads whose first type is `first_inner`.
/// Patches the header's length field, encrypts with a random IV and appends
/// the ICV over everything before it.
pub fn seal(prefix: &[u8], first_inner: u8, inner: &[u8], keys: SkKeys<'_>) -> Vec<u8> {
    let mut iv = [0u8; BLOCK];
    rand::rng().fill_bytes(&mut iv);
    seal_with_iv(prefix, first_inner, inner, keys, iv)
}

fn seal_with_iv(
    prefix: &[u8],
    first_inner: u8,
    inner: &[u8],
    keys: SkKeys<'_>,
    iv: [u8; BLOCK],
) -> Vec<u8> {
    // Padding + pad-length byte make the plaintext a multiple of the block;
    // RFC 7296 §3.14 lets padding be any value, zeros are fine.
    let pad = (BLOCK - (inner.len() + 1) % BLOCK) % BLOCK;
    let ct_len = inner.len() + pad + 1;
    let sk_len = 4 + BLOCK + ct_len + ICV_LEN;
    let total = prefix.len() + sk_len;
    let mut msg = Vec::with_capacity(total);
    msg.extend_from_slice(prefix);
    if msg.len() >= IKE_HEADER_LEN {
        msg[24..28].copy_from_slice(&(total as u32).to_be_bytes());
    }
    msg.push(first_inner);
    msg.push(0);
    msg.extend_from_slice(&(sk_len as u16).to_be_bytes());
    msg.extend_from_slice(&iv);
    let ct_start = msg.len();
    msg.extend_from_slice(inner);
    msg.resize(ct_start + ct_len - 1, 0);
    msg.push(pad as u8);
    let enc = cbc::Encryptor::<Aes256>::new(keys.encr.into(), &iv.into());
    // ct_len is a multiple of BLOCK by construction, so NoPadding succeeds.
    let _ = enc.encrypt_padded::<NoPadding>(&mut msg[ct_start..], ct_len);
    let mut m = hmac(keys.integ);
    m.update(&msg);
    let tag = m.finalize().into_bytes();
    msg.extend_from_slice(&tag[..ICV_LEN]);
    msg
}

/// A decrypted SK payload.
pub struct Opened {
    /// Type of the first inner payload (the SK header's next-payload field).
    pub first_inner: u8,
    /// The inner payloads, padding removed.
    pub inner: Zeroizing<Vec<u8>>,
    /// Offset of the SK payload header in the message (= end of cleartext payloads).
    pub sk_offset: usize,
}

/// Finds the SK payload (which must be last), checks the ICV in constant time
/// before touching the ciphertext, then decrypts and strips the padding.
pub fn open(msg: &[u8], keys: SkKeys<'_>) -> Result<Opened, SkError> {
    let sk_offset = find_sk(msg)?;
    let body = &msg[sk_offset..];
    if body.len() < 4 {
        return Err(SkError::BadPayloadLength);
    }
    let first_inner = body[0];
    let sk_len = u16::from_be_bytes([body[2], body[3]]) as usize;
    if sk_len != body.len() {
        return Err(SkError::SkNotLast);
    }
    if sk_len < 4 + BLOCK + BLOCK + ICV_LEN {
        return Err(SkError::BadCiphertextLength);
    }
    let icv_at = msg.len() - ICV_LEN;
    let mut m = hmac(keys.integ);
    m.update(&msg[..icv_at]);
    m.verify_truncated_left(&msg[icv_at..])
        .map_err(|_| SkError::BadIcv)?;
    let iv_at = sk_offset + 4;
    let ct = &msg[iv_at + BLOCK..icv_at];
    if !ct.len().is_multiple_of(BLOCK) {
        return Err(SkError::BadCiphertextLength);
    }
    let mut iv = [0u8; BLOCK];
    iv.copy_from_slice(&msg[iv_at..iv_at + BLOCK]);
    let mut buf = Zeroizing::new(ct.to_vec());
    let dec = cbc::Decryptor::<Aes256>::new(keys.encr.into(), &iv.into());
    dec.decrypt_padded::<NoPadding>(&mut buf)
        .map_err(|_| SkError::BadCiphertextLength)?;
    let pad = buf[buf.len() - 1] as usize;
    if pad + 1 > buf.len() {
        return Err(SkError::BadPadding);
    }
    let keep = buf.len() - pad - 1;
    buf.truncate(keep);
    Ok(Opened {
        first_inner,
        inner: buf,
        sk_offset,
    })
}

/// Walks the cleartext payload chain to the SK payload.
fn find_sk(msg: &[u8]) -> Result<usize, SkError> {
    if msg.len() < IKE_HEADER_LEN {
        return Err(SkError::TooShort);
    }
    let mut next = msg[16];
    let mut off = IKE_HEADER_LEN;
    // Each step advances by ≥ 4 bytes, so this ends within len/4 steps.
    while next != PAYLOAD_SK {
        if next == 0 {
            return Err(SkError::NoSkPayload);
        }
        let hdr = msg.get(off..off + 4).ok_or(SkError::BadPayloadLength)?;
        let len = u16::from_be_bytes([hdr[2], hdr[3]]) as usize;
        if len < 4 || off + len > msg.len() {
            return Err(SkError::BadPayloadLength);
        }
        next = hdr[0];
        off += len;
    }
    Ok(off)
}

/// AUTH for shared-key authentication (RFC 7296 §2.15):
/// prf(prf(PSK, "Key Pad for IKEv2"), RealMessage | Nonce(peer) | prf(SK_p, RestOfIDPayload)).
///
/// For the initiator: `real_message` = its IKE_SA_INIT request, `peer_nonce`
/// = Nr, `sk_p` = SK_pi, `id_body` = IDi payload from the ID type onward.
/// For the responder: its IKE_SA_INIT response, Ni, SK_pr, IDr body.
pub fn psk_auth(
    psk: &[u8],
    real_message: &[u8],
    peer_nonce: &[u8],
    sk_p: &[u8],
    id_body: &[u8],
) -> [u8; PRF_LEN] {
    let maced_id = prf(sk_p, &[id_body]);
    let key = Zeroizing::new(prf(psk, &[KEY_PAD]));
    prf(&key[..], &[real_message, peer_nonce, &maced_id])
}

/// Constant-time comparison of AUTH data.
pub fn auth_matches(expected: &[u8], received: &[u8]) -> bool {
    expected.len() == received.len() && bool::from(expected.ct_eq(received))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(next: u8) -> Vec<u8> {
        let mut h = vec![0u8; IKE_HEADER_LEN];
        h[..8].copy_from_slice(&[1; 8]);
        h[8..16].copy_from_slice(&[2; 8]);
        h[16] = next;
        h[17] = 0x20;
        h[18] = 35;
        h
    }

    const EK: [u8; 32] = [0x11; 32];
    const AK: [u8; 32] = [0x22; 32];

    fn keys() -> SkKeys<'static> {
        SkKeys {
            encr: &EK,
            integ: &AK,
        }
    }

    #[test]
    fn seal_open_round_trip_all_lengths() {
        for n in 0..40 {
            let inner: Vec<u8> = (0..n as u8).collect();
            let msg = seal(&header(PAYLOAD_SK), 41, &inner, keys());
            assert_eq!(
                u32::from_be_bytes(msg[24..28].try_into().unwrap()) as usize,
                msg.len()
            );
            let o = open(&msg, keys()).unwrap();
            assert_eq!(o.first_inner, 41);
            assert_eq!(&o.inner[..], &inner[..]);
            assert_eq!(o.sk_offset, IKE_HEADER_LEN);
            assert_eq!((msg.len() - IKE_HEADER_LEN - 4 - 16 - ICV_LEN) % 16, 0);
        }
    }

    #[test]
    fn any_flipped_bit_fails_the_icv() {
        let msg = seal(&header(PAYLOAD_SK), 41, b"hello world", keys());
        for i in 0..msg.len() {
            let mut m = msg.clone();
            m[i] ^= 0x01;
            assert!(open(&m, keys()).is_err(), "flip at {i} accepted");
        }
        let other = [0x33; 32];
        assert_eq!(
            open(
                &msg,
                SkKeys {
                    encr: &EK,
                    integ: &other
                }
            )
            .err(),
            Some(SkError::BadIcv)
        );
    }

    #[test]
    fn known_answer_against_manual_cbc_hmac() {
        // The ciphertext must be plain AES-256-CBC of inner|pad|padlen under
        // the IV, and the ICV HMAC-SHA-256 truncated to 16 bytes.
        let iv = [0x5a; 16];
        let msg = seal_with_iv(&header(PAYLOAD_SK), 41, &[0xab; 10], keys(), iv);
        let mut pt = [0u8; 16];
        pt[..10].copy_from_slice(&[0xab; 10]);
        pt[15] = 5;
        let mut block = pt;
        let enc = cbc::Encryptor::<Aes256>::new((&EK).into(), &iv.into());
        enc.encrypt_padded::<NoPadding>(&mut block, 16).unwrap();
        assert_eq!(&msg[IKE_HEADER_LEN + 4..IKE_HEADER_LEN + 20], &iv);
        assert_eq!(&msg[IKE_HEADER_LEN + 20..IKE_HEADER_LEN + 36], &block);
    }

    #[test]
    fn truncated_and_garbage_never_panic() {
        let msg = seal(
            &header(PAYLOAD_SK),
            41,
            b"abcdefghijklmnopqrstuvwxyz",
            keys(),
        );
        for n in 0..msg.len() {
            let _ = open(&msg[..n], keys());
        }
        let mut bad = header(40);
        bad.extend_from_slice(&[46, 0, 0, 2]);
        assert_eq!(open(&bad, keys()).err(), Some(SkError::BadPayloadLength));
        assert_eq!(open(&header(0), keys()).err(), Some(SkError::NoSkPayload));
    }

    #[test]
    fn auth_compare_is_exact() {
        let a = psk_auth(
            b"secret",
            b"msg",
            b"nonce",
            &[1; 32],
            b"\x01\0\0\0\x0a\xff\x01\x02",
        );
        let b = psk_auth(
            b"secreT",
            b"msg",
            b"nonce",
            &[1; 32],
            b"\x01\0\0\0\x0a\xff\x01\x02",
        );
        assert!(auth_matches(&a, &a));
        assert!(!auth_matches(&a, &b));
        assert!(!auth_matches(&a, &a[..31]));
    }
}
