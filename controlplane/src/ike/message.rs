//! IKE header and whole messages (RFC 7296 §3.1), the SK payload's sealing
//! and opening (§3.14), and the UDP 4500 non-ESP marker (RFC 3948 §2.2).
//!
//! # Encrypted messages
//!
//! The codec lays out the SK payload; the crypto (outside this module)
//! fills in IV, ciphertext and ICV through [`SkSealer`] / [`SkOpener`]:
//!
//! ```text
//!  0            28           32          ct_start      icv_start    end
//!  | IKE header | SK gen hdr | IV        | ciphertext  | ICV        |
//!  |<---------- associated_data -------->|  (AEAD, RFC 5282 §5.1)
//!  |<------------------ integrity_covered ------------>| (RFC 7296 §3.14)
//! ```
//!
//! When [`SkSealer::seal`] runs, every length field (IKE header, SK payload)
//! is final, the plaintext (inner payloads, zero padding, Pad Length byte)
//! sits at `ciphertext()` to be encrypted in place, and IV and ICV are
//! zero-filled. The sealer writes the IV, encrypts, then computes the ICV
//! over `integrity_covered()` (or the AEAD tag with `associated_data()`) and
//! writes it at `icv()`.

use std::fmt;
use std::ops::Range;

use super::codec::{LengthPrefixed, LengthWidth, Reader};
use super::payload::{
    decode_chain, encode_chain, first_type, Encrypted, ExchangeType, Notify, NotifyType, Payload,
    PayloadType, GENERIC_HEADER_LEN,
};
use crate::error::DecodeError;

/// IKE header flags (RFC 7296 §3.1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u8);

impl Flags {
    /// Set by the original initiator of the IKE SA.
    pub const INITIATOR: Flags = Flags(0x08);
    /// "Can speak a higher major version"; we never set it.
    pub const VERSION: Flags = Flags(0x10);
    /// The message is a response.
    pub const RESPONSE: Flags = Flags(0x20);

    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flags(0x{:02x}", self.0)?;
        for (flag, name) in [
            (Flags::INITIATOR, " I"),
            (Flags::VERSION, " V"),
            (Flags::RESPONSE, " R"),
        ] {
            if self.contains(flag) {
                f.write_str(name)?;
            }
        }
        f.write_str(")")
    }
}

/// IKE header (RFC 7296 §3.1) without the fields derived from the payloads:
/// Next Payload and Length are computed by [`Message::encode`] and checked by
/// [`Message::decode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    pub spi_i: [u8; 8],
    /// All zero in the IKE_SA_INIT request.
    pub spi_r: [u8; 8],
    /// Major version in the high nibble; [`Header::VERSION_2_0`] when sending.
    pub version: u8,
    pub exchange: ExchangeType,
    pub flags: Flags,
    pub message_id: u32,
}

/// What [`Header::peek`] reads: the header plus its derived fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeekedHeader {
    pub header: Header,
    pub next_payload: PayloadType,
    pub length: u32,
}

impl Header {
    /// RFC 7296 §3.1: 28 bytes.
    pub const LEN: usize = 28;
    /// Major version 2, minor version 0.
    pub const VERSION_2_0: u8 = 0x20;

    pub fn new(
        exchange: ExchangeType,
        spi_i: [u8; 8],
        spi_r: [u8; 8],
        message_id: u32,
        flags: Flags,
    ) -> Header {
        Header {
            spi_i,
            spi_r,
            version: Header::VERSION_2_0,
            exchange,
            flags,
            message_id,
        }
    }

    pub fn is_response(&self) -> bool {
        self.flags.contains(Flags::RESPONSE)
    }

    pub fn is_initiator(&self) -> bool {
        self.flags.contains(Flags::INITIATOR)
    }

    /// Reads the 28-byte header without checking the version or the length,
    /// so that a responder can still answer INVALID_MAJOR_VERSION or route a
    /// message by SPI before decoding it.
    pub fn peek(datagram: &[u8]) -> Result<PeekedHeader, DecodeError> {
        let mut r = Reader::new(datagram);
        let spi_i = r.take_array("IKE header")?;
        let spi_r = r.take_array("IKE header")?;
        let next_payload = PayloadType(r.u8("IKE header")?);
        let version = r.u8("IKE header")?;
        let exchange = ExchangeType(r.u8("IKE header")?);
        let flags = Flags(r.u8("IKE header")?);
        let message_id = r.u32("IKE header")?;
        let length = r.u32("IKE header")?;
        Ok(PeekedHeader {
            header: Header {
                spi_i,
                spi_r,
                version,
                exchange,
                flags,
                message_id,
            },
            next_payload,
            length,
        })
    }

    /// Writes the header with a zero length field (patched by the caller).
    fn encode_placeholder(&self, next: PayloadType, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.spi_i);
        out.extend_from_slice(&self.spi_r);
        out.extend_from_slice(&[next.0, self.version, self.exchange.0, self.flags.0]);
        out.extend_from_slice(&self.message_id.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
    }
}

/// Offset of the Length field in the IKE header.
const HEADER_LENGTH_OFFSET: usize = 24;

/// An IKE message: header and payloads in wire order. A protected message
/// has an [`Payload::Encrypted`] last payload that is still sealed; open it
/// with [`Message::open_sk`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    pub payloads: Vec<Payload>,
}

impl Message {
    /// Decodes one IKE message (without the non-ESP marker). Checks: major
    /// version 2, header length equal to the datagram length, every payload
    /// length inside the message, SK last, no unknown critical payload.
    pub fn decode(datagram: &[u8]) -> Result<Message, DecodeError> {
        let peeked = Header::peek(datagram)?;
        if peeked.header.version >> 4 != 2 {
            return Err(DecodeError::BadVersion(peeked.header.version));
        }
        if peeked.length as usize != datagram.len() {
            return Err(DecodeError::BadMessageLength {
                header: peeked.length,
                actual: datagram.len(),
            });
        }
        let mut r = Reader::new(datagram.get(Header::LEN..).unwrap_or_default());
        let payloads = decode_chain(peeked.next_payload, &mut r)?;
        Ok(Message {
            header: peeked.header,
            payloads,
        })
    }

    /// Encodes the message as is (an [`Payload::Encrypted`] payload is copied
    /// raw). Use [`Message::encode_with_sk`] to build a protected message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        {
            let mut w = LengthPrefixed::new(&mut out, HEADER_LENGTH_OFFSET, LengthWidth::U32);
            self.header
                .encode_placeholder(first_type(&self.payloads), &mut w);
            encode_chain(&self.payloads, PayloadType::NONE, &mut w);
        }
        out
    }

    /// Encodes `self.payloads` (sent in the clear, normally none) followed by
    /// an SK payload holding `inner`, sealed by `sealer` (see the module
    /// doc). `self.payloads` must not contain an SK payload itself.
    pub fn encode_with_sk<S: SkSealer + ?Sized>(
        &self,
        inner: &[Payload],
        sealer: &mut S,
    ) -> Result<Vec<u8>, S::Error> {
        debug_assert!(
            !self
                .payloads
                .iter()
                .any(|p| matches!(p, Payload::Encrypted(_))),
            "encode_with_sk adds the SK payload itself"
        );
        let iv_len = sealer.iv_len();
        let icv_len = sealer.icv_len();
        let block = sealer.block_len().max(1);
        let mut out = Vec::with_capacity(256);
        let first = if self.payloads.is_empty() {
            PayloadType::SK
        } else {
            first_type(&self.payloads)
        };
        self.header.encode_placeholder(first, &mut out);
        encode_chain(&self.payloads, PayloadType::SK, &mut out);

        let sk_start = out.len();
        out.extend_from_slice(&[first_type(inner).0, 0, 0, 0]);
        let iv_start = out.len();
        out.resize(iv_start + iv_len, 0);
        let ct_start = out.len();
        encode_chain(inner, PayloadType::NONE, &mut out);
        let pad = (block - (out.len() - ct_start + 1) % block) % block;
        out.resize(out.len() + pad, 0);
        out.push(pad as u8);
        let icv_start = out.len();
        out.resize(icv_start + icv_len, 0);
        let end = out.len();

        let sk_len = u16::try_from(end - sk_start).unwrap_or(u16::MAX);
        out[sk_start + 2..sk_start + 4].copy_from_slice(&sk_len.to_be_bytes());
        let total = u32::try_from(end).unwrap_or(u32::MAX);
        out[HEADER_LENGTH_OFFSET..HEADER_LENGTH_OFFSET + 4].copy_from_slice(&total.to_be_bytes());

        let layout = SkLayout {
            iv_start,
            ct_start,
            icv_start,
            end,
        };
        sealer.seal(&mut out, &layout)?;
        Ok(out)
    }

    /// The SK payload, if the message has one (it is always last).
    pub fn encrypted(&self) -> Option<&Encrypted> {
        match self.payloads.last() {
            Some(Payload::Encrypted(e)) => Some(e),
            _ => None,
        }
    }

    /// Where IV, ciphertext and ICV sit in the datagram this message was
    /// decoded from, for a cipher with the given lengths. `block_len` is the
    /// cipher's block size (ciphertext must be a non-empty multiple of it;
    /// pass 1 for AEAD/stream ciphers).
    pub fn sk_layout(
        &self,
        datagram_len: usize,
        iv_len: usize,
        icv_len: usize,
        block_len: usize,
    ) -> Result<SkLayout, DecodeError> {
        let body = self.encrypted().ok_or(DecodeError::BadSkLength)?.body.len();
        let iv_start = datagram_len
            .checked_sub(body)
            .filter(|&s| s >= Header::LEN + GENERIC_HEADER_LEN)
            .ok_or(DecodeError::BadSkLength)?;
        let ct_len = body
            .checked_sub(iv_len + icv_len)
            .filter(|&n| n > 0 && n % block_len.max(1) == 0)
            .ok_or(DecodeError::BadSkLength)?;
        let ct_start = iv_start + iv_len;
        Ok(SkLayout {
            iv_start,
            ct_start,
            icv_start: ct_start + ct_len,
            end: datagram_len,
        })
    }

    /// Verifies and decrypts the SK payload of this message, which was
    /// decoded from `datagram`, and decodes the inner payload chain.
    pub fn open_sk<O: SkOpener + ?Sized>(
        &self,
        datagram: &[u8],
        opener: &mut O,
    ) -> Result<Vec<Payload>, SkOpenError<O::Error>> {
        let enc = self.encrypted().ok_or(DecodeError::BadSkLength)?;
        let layout = self.sk_layout(
            datagram.len(),
            opener.iv_len(),
            opener.icv_len(),
            opener.block_len(),
        )?;
        // The layout is computed from this message; make sure the datagram is
        // really the one it was decoded from before handing it to the crypto.
        if datagram.get(layout.iv_start..) != Some(enc.body.as_slice()) {
            return Err(DecodeError::BadSkLength.into());
        }
        let plaintext = opener
            .open(datagram, &layout)
            .map_err(SkOpenError::Crypto)?;
        Ok(decode_inner(enc.first_inner, &plaintext)?)
    }

    /// The first Notify of type `ntype` among the (clear) payloads.
    pub fn notify(&self, ntype: NotifyType) -> Option<&Notify> {
        find_notify(&self.payloads, ntype)
    }
}

/// The first Notify of type `ntype` in a payload list.
pub fn find_notify(payloads: &[Payload], ntype: NotifyType) -> Option<&Notify> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.ntype == ntype => Some(n),
        _ => None,
    })
}

/// Decodes the inner payload chain of a decrypted SK payload: `plaintext` is
/// the decrypted data including padding and the Pad Length byte; `first` is
/// the SK payload's Next Payload field.
pub fn decode_inner(first: PayloadType, plaintext: &[u8]) -> Result<Vec<Payload>, DecodeError> {
    let (&pad, rest) = plaintext.split_last().ok_or(DecodeError::BadPadding)?;
    let chain_len = rest
        .len()
        .checked_sub(pad as usize)
        .ok_or(DecodeError::BadPadding)?;
    let mut r = Reader::new(&rest[..chain_len]);
    let payloads = decode_chain(first, &mut r)?;
    if payloads.iter().any(|p| matches!(p, Payload::Encrypted(_))) {
        return Err(DecodeError::NestedSk);
    }
    Ok(payloads)
}

/// Byte ranges of an SK payload inside a whole message (see module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SkLayout {
    pub iv_start: usize,
    pub ct_start: usize,
    pub icv_start: usize,
    pub end: usize,
}

impl SkLayout {
    /// AEAD associated data: IKE header through the SK generic header
    /// (RFC 5282 §5.1).
    pub fn associated_data(&self) -> Range<usize> {
        0..self.iv_start
    }
    /// What the ICV of a non-AEAD integrity algorithm covers: from the IKE
    /// header through the end of the ciphertext (RFC 7296 §3.14).
    pub fn integrity_covered(&self) -> Range<usize> {
        0..self.icv_start
    }
    pub fn iv(&self) -> Range<usize> {
        self.iv_start..self.ct_start
    }
    pub fn ciphertext(&self) -> Range<usize> {
        self.ct_start..self.icv_start
    }
    pub fn icv(&self) -> Range<usize> {
        self.icv_start..self.end
    }
}

/// Length of the AEAD associated data of an SK payload whose body (IV ||
/// ciphertext || ICV) is `sk_body_len` bytes, in a message of `message_len`
/// bytes; `None` when they do not fit a valid message.
pub fn sk_associated_data_len(message_len: usize, sk_body_len: usize) -> Option<usize> {
    message_len
        .checked_sub(sk_body_len)
        .filter(|&n| n >= Header::LEN + GENERIC_HEADER_LEN)
}

/// Encrypts and integrity-protects an SK payload in place; implemented by
/// the IKE SA's crypto (e.g. AES-CBC-256 + HMAC-SHA-256-128).
pub trait SkSealer {
    type Error;
    fn iv_len(&self) -> usize;
    fn icv_len(&self) -> usize;
    /// Plaintext (with Pad Length byte) is padded to a multiple of this.
    fn block_len(&self) -> usize;
    /// `msg` is the whole message laid out as in the module doc: write the
    /// IV at `layout.iv()`, encrypt `layout.ciphertext()` in place, then
    /// write the ICV at `layout.icv()`.
    fn seal(&mut self, msg: &mut [u8], layout: &SkLayout) -> Result<(), Self::Error>;
}

/// Verifies and decrypts an SK payload.
pub trait SkOpener {
    type Error;
    fn iv_len(&self) -> usize;
    fn icv_len(&self) -> usize;
    /// Ciphertext must be a non-empty multiple of this (1 for AEAD).
    fn block_len(&self) -> usize;
    /// Checks the ICV at `layout.icv()` (over `layout.integrity_covered()`,
    /// or as AEAD tag with `layout.associated_data()`) before decrypting,
    /// then returns the decrypted `layout.ciphertext()` including padding
    /// and the Pad Length byte.
    fn open(&mut self, msg: &[u8], layout: &SkLayout) -> Result<Vec<u8>, Self::Error>;
}

/// Failure to open an SK payload: bad framing, or the crypto said no.
#[derive(Debug, thiserror::Error)]
pub enum SkOpenError<E> {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("SK payload failed integrity check or decryption: {0:?}")]
    Crypto(E),
}

// ------------------------------------------------------- UDP 4500 framing

/// RFC 3948 §2.2: IKE on UDP 4500 is prefixed by four zero bytes.
pub const NON_ESP_MARKER: [u8; 4] = [0; 4];
/// RFC 3948 §2.3: a NAT-keepalive is one 0xFF byte.
pub const NAT_KEEPALIVE: u8 = 0xff;

/// What a datagram received on UDP 4500 holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Udp4500<'a> {
    /// An IKE message, marker stripped.
    Ike(&'a [u8]),
    /// An ESP packet (first four bytes are its non-zero SPI).
    Esp(&'a [u8]),
    NatKeepalive,
    /// Shorter than a marker and not a keepalive.
    Malformed,
}

/// Sorts a UDP 4500 datagram into IKE, ESP or keepalive (RFC 3948 §2.2).
pub fn classify_udp4500(datagram: &[u8]) -> Udp4500<'_> {
    match datagram {
        [NAT_KEEPALIVE] => Udp4500::NatKeepalive,
        [0, 0, 0, 0, ike @ ..] => Udp4500::Ike(ike),
        [_, _, _, _, ..] => Udp4500::Esp(datagram),
        _ => Udp4500::Malformed,
    }
}

/// Prefixes an encoded IKE message with the non-ESP marker for UDP 4500.
pub fn with_non_esp_marker(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + NON_ESP_MARKER.len());
    out.extend_from_slice(&NON_ESP_MARKER);
    out.extend_from_slice(message);
    out
}
