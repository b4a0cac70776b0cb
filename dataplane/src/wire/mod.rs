//! Zero-copy views over packet bytes (smoltcp `wire` style).
//!
//! `XxxPacket<T>` reads and writes header fields in place over any
//! `T: AsRef<[u8]>` (setters need `AsMut<[u8]>` too). The contract, as in
//! smoltcp: after [`new_checked`](Ipv4Packet::new_checked) succeeds (which
//! runs `check_len`), no getter and no payload accessor panics, so untrusted
//! bytes must go through `new_checked`. `new_unchecked` is for buffers we
//! built ourselves. Setters that change a length field (`set_total_len`,
//! `set_payload_len`, `set_len`) void that guarantee until `check_len` runs
//! again. `XxxRepr` is a checked value: `parse` from a view (rejecting what we
//! do not support), `emit` into exactly `buffer_len()` bytes.

use crate::error::DropReason;

pub mod esp;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod udp;

pub use esp::{EspPacket, EspRepr, EspTrailer};
pub use ip::{flow_key, protocol, IpVersion};
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6Packet, Ipv6Repr};
pub use udp::{UdpPacket, UdpRepr};

/// Why bytes could not be read as a header. Data-free so that the packet
/// path can map it straight to a drop counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer is shorter than the header or than its length fields say.
    #[error("buffer shorter than the header or its length field")]
    Truncated,
    /// A field holds a value the header cannot have (version, IHL, length).
    #[error("header field out of range")]
    Malformed,
    /// The IPv4 header checksum does not match.
    #[error("bad header checksum")]
    BadChecksum,
    /// Valid, but not something we handle (IPv4 fragments, unknown version).
    #[error("unsupported packet")]
    Unsupported,
}

impl From<WireError> for DropReason {
    fn from(e: WireError) -> DropReason {
        match e {
            WireError::Truncated => DropReason::Truncated,
            WireError::Malformed | WireError::BadChecksum | WireError::Unsupported => {
                DropReason::Malformed
            }
        }
    }
}

pub type Result<T> = core::result::Result<T, WireError>;

/// Offsets of a header's fields.
pub(crate) type Field = core::ops::Range<usize>;
/// A field from an offset to the end of the buffer.
pub(crate) type Rest = core::ops::RangeFrom<usize>;

#[inline]
pub(crate) fn read_u16(b: &[u8], f: Field) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[f]);
    u16::from_be_bytes(a)
}

#[inline]
pub(crate) fn read_u32(b: &[u8], f: Field) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[f]);
    u32::from_be_bytes(a)
}

/// One's complement sum of 16-bit big-endian words (RFC 1071), not yet
/// folded or inverted.
pub(crate) fn ones_complement_sum(data: &[u8]) -> u32 {
    let mut sum = 0u32;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// Folds a one's complement sum to 16 bits and inverts it (RFC 1071).
pub(crate) fn fold_checksum(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
