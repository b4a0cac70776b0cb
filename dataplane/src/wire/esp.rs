//! ESP header and trailer (RFC 4303 §2).
//!
//! On the wire: SPI (4) | sequence number, low 32 bits (4) | payload (IV,
//! ciphertext, ICV — their sizes depend on the SA, so the view stops at
//! "payload"). The trailer — padding, pad length, next header — lives at the
//! end of the *decrypted* payload; [`EspTrailer`] reads and writes it there.

use super::{read_u32, Result, WireError};

mod field {
    use crate::wire::{Field, Rest};
    pub const SPI: Field = 0..4;
    pub const SEQ: Field = 4..8;
    pub const PAYLOAD: Rest = 8..;
}

/// SPI + sequence number.
pub const HEADER_LEN: usize = field::SEQ.end;
/// Pad length + next header.
pub const TRAILER_LEN: usize = 2;

/// A read/write view of an ESP packet.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct EspPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EspPacket<T> {
    pub const fn new_unchecked(buffer: T) -> EspPacket<T> {
        EspPacket { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<EspPacket<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn spi(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SPI)
    }
    /// Low 32 bits of the sequence number (ESN high bits are never sent).
    pub fn sequence_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> EspPacket<&'a T> {
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EspPacket<T> {
    pub fn set_spi(&mut self, v: u32) {
        self.buffer.as_mut()[field::SPI].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_sequence_number(&mut self, v: u32) {
        self.buffer.as_mut()[field::SEQ].copy_from_slice(&v.to_be_bytes());
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// A checked ESP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EspRepr {
    pub spi: u32,
    pub sequence_number: u32,
}

impl EspRepr {
    /// RFC 4303 §2.1: SPIs 1..=255 are reserved by IANA and 0 is local use
    /// only, so none of them may appear on the wire.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &EspPacket<&T>) -> Result<EspRepr> {
        if p.spi() <= 255 {
            return Err(WireError::Malformed);
        }
        Ok(EspRepr {
            spi: p.spi(),
            sequence_number: p.sequence_number(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut EspPacket<T>) {
        p.set_spi(self.spi);
        p.set_sequence_number(self.sequence_number);
    }
}

/// The ESP trailer at the end of a decrypted payload: padding bytes
/// 1, 2, 3, …, then pad length and next header (RFC 4303 §2.4–2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EspTrailer {
    pub pad_len: u8,
    pub next_header: u8,
}

impl EspTrailer {
    /// Padding needed so that `payload_len` + padding + 2 is a multiple of
    /// `block_len` (a power of two, ≥ 4 per RFC 4303 §2.4).
    pub const fn pad_len_for(payload_len: usize, block_len: usize) -> usize {
        let used = payload_len + TRAILER_LEN;
        (block_len - used % block_len) % block_len
    }

    /// Reads the last two bytes of `plain` (payload + padding + trailer).
    /// Truncated if the pad length reaches past the start of `plain`.
    pub fn parse(plain: &[u8]) -> Result<EspTrailer> {
        let n = plain.len();
        if n < TRAILER_LEN {
            return Err(WireError::Truncated);
        }
        let t = EspTrailer {
            pad_len: plain[n - 2],
            next_header: plain[n - 1],
        };
        if t.pad_len as usize + TRAILER_LEN > n {
            return Err(WireError::Truncated);
        }
        Ok(t)
    }

    /// True if the padding of `plain` is the default 1, 2, 3, … (RFC 4303
    /// §2.4: the receiver should check it). Call only after `parse`.
    pub fn padding_ok(&self, plain: &[u8]) -> bool {
        let end = plain.len() - TRAILER_LEN;
        let pad = &plain[end - self.pad_len as usize..end];
        pad.iter().enumerate().all(|(i, b)| *b == (i + 1) as u8)
    }

    /// Bytes of the inner packet in `plain`.
    pub fn payload_len(&self, plain_len: usize) -> usize {
        plain_len - self.pad_len as usize - TRAILER_LEN
    }

    /// Writes padding 1, 2, 3, … and the trailer into `tail`, which must be
    /// exactly `pad_len + 2` bytes.
    pub fn emit(&self, tail: &mut [u8]) {
        let n = tail.len();
        debug_assert_eq!(n, self.pad_len as usize + TRAILER_LEN);
        for (i, b) in tail[..n - TRAILER_LEN].iter_mut().enumerate() {
            *b = (i + 1) as u8;
        }
        tail[n - 2] = self.pad_len;
        tail[n - 1] = self.next_header;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPI 0x10000001, sequence 1, then 8 payload bytes.
    static PACKET_BYTES: [u8; 16] = [
        0x10, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03,
        0x04,
    ];
    static PAYLOAD_BYTES: [u8; 8] = [0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04];

    fn repr() -> EspRepr {
        EspRepr {
            spi: 0x1000_0001,
            sequence_number: 1,
        }
    }

    #[test]
    fn test_deconstruct() {
        let p = EspPacket::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(p.spi(), 0x1000_0001);
        assert_eq!(p.sequence_number(), 1);
        assert_eq!(p.payload(), &PAYLOAD_BYTES[..]);
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0xa5u8; 16];
        let mut p = EspPacket::new_unchecked(&mut bytes[..]);
        p.set_spi(0x1000_0001);
        p.set_sequence_number(1);
        p.payload_mut().copy_from_slice(&PAYLOAD_BYTES);
        assert_eq!(bytes, PACKET_BYTES);
    }

    #[test]
    fn test_check_len() {
        assert_eq!(
            EspPacket::new_checked(&PACKET_BYTES[..7]).unwrap_err(),
            WireError::Truncated
        );
        let p = EspPacket::new_checked(&PACKET_BYTES[..8]).unwrap();
        assert!(p.payload().is_empty());
    }

    #[test]
    fn test_parse() {
        let p = EspPacket::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(EspRepr::parse(&p).unwrap(), repr());
        let reserved = [0, 0, 0, 0xff, 0, 0, 0, 1];
        let p = EspPacket::new_checked(&reserved[..]).unwrap();
        assert_eq!(EspRepr::parse(&p).unwrap_err(), WireError::Malformed);
    }

    #[test]
    fn test_emit() {
        let mut bytes = [0u8; 16];
        bytes[8..].copy_from_slice(&PAYLOAD_BYTES);
        repr().emit(&mut EspPacket::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, PACKET_BYTES);
    }

    #[test]
    fn test_buffer_len() {
        assert_eq!(repr().buffer_len(), 8);
    }

    #[test]
    fn trailer_round_trip_and_checks() {
        assert_eq!(EspTrailer::pad_len_for(20, 16), 10);
        assert_eq!(EspTrailer::pad_len_for(14, 16), 0);
        assert_eq!(EspTrailer::pad_len_for(20, 4), 2);
        let t = EspTrailer {
            pad_len: 3,
            next_header: 4,
        };
        let mut plain = [0xeeu8; 9];
        t.emit(&mut plain[4..]);
        assert_eq!(&plain[4..], &[1, 2, 3, 3, 4]);
        let back = EspTrailer::parse(&plain).unwrap();
        assert_eq!(back, t);
        assert!(back.padding_ok(&plain));
        assert_eq!(back.payload_len(plain.len()), 4);
        plain[5] = 9;
        assert!(!back.padding_ok(&plain));
        assert_eq!(
            EspTrailer::parse(&[8, 4]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(EspTrailer::parse(&[4]).unwrap_err(), WireError::Truncated);
    }
}
