//! Error values of the control plane.
//!
//! [`DecodeError`] is to the IKE codec what rustls' `InvalidMessage` is to
//! TLS: one variant per kind of bad input, naming the structure at fault, and
//! a mapping to the Notify the peer is sent back ([`NotifyType`]).

use std::net::IpAddr;

use crate::ike::payload::{Notify, NotifyType, PayloadType};

/// Why a received IKE message (or a decrypted SK payload chain) was rejected.
///
/// Every malformed input maps to one of these; the decoder never panics.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended inside `what`.
    #[error("message too short: truncated {what}")]
    TooShort { what: &'static str },
    /// Bytes left over after `what` was fully read.
    #[error("trailing bytes after {0}")]
    Trailing(&'static str),
    /// A generic payload header carries a length below 4 or past the end of
    /// the message.
    #[error("bad payload length in {payload:?} payload")]
    BadLength { payload: PayloadType },
    /// The IKE header length does not match the datagram.
    #[error("IKE header says {header} bytes, datagram has {actual}")]
    BadMessageLength { header: u32, actual: usize },
    /// Unknown payload type with the critical bit set (RFC 7296 §2.5): the
    /// caller answers UNSUPPORTED_CRITICAL_PAYLOAD with this type as data.
    #[error("unsupported critical payload type {0}")]
    UnknownCritical(u8),
    /// Major version other than 2 (RFC 7296 §3.1): answer
    /// INVALID_MAJOR_VERSION.
    #[error("unsupported IKE version 0x{0:02x}")]
    BadVersion(u8),
    /// Traffic selector type other than TS_IPV4_ADDR_RANGE/TS_IPV6_ADDR_RANGE.
    #[error("unsupported traffic selector type {0}")]
    BadTsType(u8),
    /// A substructure (proposal, transform, attribute, traffic selector)
    /// length field is too small, too large, or wrong for its type.
    #[error("bad {what} length")]
    BadSubstructureLength { what: &'static str },
    /// The "last substructure" byte of a proposal/transform is neither the
    /// value for "more" nor 0, or disagrees with what follows.
    #[error("bad last-substructure marker in {what}")]
    BadLastSubstructure { what: &'static str },
    /// A count field (number of transforms, selectors, SPIs) does not match
    /// the entries present.
    #[error("{what} count does not match its contents")]
    CountMismatch { what: &'static str },
    /// A list that must hold at least one entry is empty.
    #[error("empty {0}")]
    Empty(&'static str),
    /// An SPI whose size is not allowed where it appears.
    #[error("bad SPI size {size} in {what}")]
    BadSpiSize { what: &'static str, size: u8 },
    /// A transform attribute we cannot represent (KEY_LENGTH twice or in TLV
    /// form).
    #[error("bad transform attribute type {0}")]
    BadAttribute(u16),
    /// RFC 7296 §3.14: the SK payload must be the last payload.
    #[error("encrypted (SK) payload is not the last payload")]
    SkNotLast,
    /// The SK payload is shorter than IV + ICV, or its plaintext is not a
    /// whole number of blocks.
    /// An SK payload inside a decrypted SK payload.
    #[error("SK payload nested inside an SK payload")]
    NestedSk,
    #[error("encrypted (SK) payload has a bad length")]
    BadSkLength,
    /// The decrypted Pad Length byte points before the start of the plaintext.
    #[error("bad padding in decrypted SK payload")]
    BadPadding,
}

impl DecodeError {
    /// The complete error Notify payload to answer with (RFC 7296 §3.10.1:
    /// UNSUPPORTED_CRITICAL_PAYLOAD carries the one-byte payload type).
    pub fn to_notify(&self) -> Notify {
        let data = match self {
            DecodeError::UnknownCritical(t) => vec![*t],
            _ => Vec::new(),
        };
        Notify::new(NotifyType::from(self), data)
    }
}

impl From<&DecodeError> for NotifyType {
    /// The error Notify to send back for a message that failed to decode
    /// (RFC 7296 §2.21: INVALID_SYNTAX only inside a protected exchange; the
    /// caller decides whether to answer at all).
    fn from(e: &DecodeError) -> NotifyType {
        match e {
            DecodeError::UnknownCritical(_) => NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD,
            DecodeError::BadVersion(_) => NotifyType::INVALID_MAJOR_VERSION,
            _ => NotifyType::INVALID_SYNTAX,
        }
    }
}

/// Why a traffic selector cannot be turned into an `api::Selector` exactly.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The address range is not exactly one prefix (e.g. 10.0.0.1-10.0.0.5).
    /// `TrafficSelector::covering_net` gives the smallest prefix that holds
    /// it, which is wider than what the peer asked for.
    #[error("address range {start}-{end} is not a prefix")]
    NotPrefix { start: IpAddr, end: IpAddr },
    /// Start address above end address.
    #[error("empty address range {start}-{end}")]
    EmptyAddrRange { start: IpAddr, end: IpAddr },
    /// Start port above end port (includes the OPAQUE range 65535-0).
    #[error("empty port range {start}-{end}")]
    EmptyPortRange { start: u16, end: u16 },
    /// Source and destination selectors name different IP protocols.
    #[error("IP protocol {src} does not match {dst}")]
    ProtoMismatch { src: u8, dst: u8 },
    /// Source IPv4 and destination IPv6, or the other way round.
    #[error("source and destination selectors are of different address families")]
    FamilyMismatch,
}
