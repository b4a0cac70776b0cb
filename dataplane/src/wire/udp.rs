//! UDP header view (RFC 768). Used for ESP-in-UDP (RFC 3948), where the
//! checksum is sent as zero over IPv4.

use super::{read_u16, Result, WireError};

mod field {
    use crate::wire::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
}

pub const HEADER_LEN: usize = field::CHECKSUM.end;

/// RFC 3948 §2.2 / RFC 7296 §2.23: the NAT-traversal port for ESP-in-UDP.
pub const NAT_T_PORT: u16 = 4500;

/// A read/write view of a UDP datagram.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    pub const fn new_unchecked(buffer: T) -> UdpPacket<T> {
        UdpPacket { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<UdpPacket<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensures header ≤ length field ≤ buffer. `set_len` voids this check.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let l = self.len() as usize;
        if l < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if l > len {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }
    /// Length of header plus payload.
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }
    pub fn is_empty(&self) -> bool {
        self.len() as usize <= HEADER_LEN
    }
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> UdpPacket<&'a T> {
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.len() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    pub fn set_src_port(&mut self, v: u16) {
        self.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_dst_port(&mut self, v: u16) {
        self.buffer.as_mut()[field::DST_PORT].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_len(&mut self, v: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_checksum(&mut self, v: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes());
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let l = self.len() as usize;
        &mut self.buffer.as_mut()[HEADER_LEN..l]
    }
}

/// A checked UDP header. The checksum is not computed: ESP-in-UDP over IPv4
/// sends zero (RFC 3948 §2.1), and over IPv6 the caller fills it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload_len: usize,
}

impl UdpRepr {
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &UdpPacket<&T>) -> Result<UdpRepr> {
        Ok(UdpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            payload_len: p.payload().len(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header with a zero checksum.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut UdpPacket<T>) {
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_len((HEADER_LEN + self.payload_len) as u16);
        p.set_checksum(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// scapy: UDP(sport=4500, dport=4500)/Raw(b"\x01\x02\x03\x04") from
    /// 10.255.1.2 to 10.255.2.2.
    static PACKET_BYTES: [u8; 12] = [
        0x11, 0x94, 0x11, 0x94, 0x00, 0x0c, 0xbf, 0xa6, 0x01, 0x02, 0x03, 0x04,
    ];
    static PAYLOAD_BYTES: [u8; 4] = [1, 2, 3, 4];

    fn repr() -> UdpRepr {
        UdpRepr {
            src_port: 4500,
            dst_port: 4500,
            payload_len: 4,
        }
    }

    #[test]
    fn test_deconstruct() {
        let p = UdpPacket::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(p.src_port(), NAT_T_PORT);
        assert_eq!(p.dst_port(), NAT_T_PORT);
        assert_eq!(p.len(), 12);
        assert_eq!(p.checksum(), 0xbfa6);
        assert_eq!(p.payload(), &PAYLOAD_BYTES[..]);
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0xa5u8; 12];
        let mut p = UdpPacket::new_unchecked(&mut bytes[..]);
        p.set_src_port(4500);
        p.set_dst_port(4500);
        p.set_len(12);
        p.set_checksum(0xbfa6);
        p.payload_mut().copy_from_slice(&PAYLOAD_BYTES);
        assert_eq!(bytes, PACKET_BYTES);
    }

    #[test]
    fn test_check_len() {
        assert_eq!(
            UdpPacket::new_checked(&PACKET_BYTES[..7]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            UdpPacket::new_checked(&PACKET_BYTES[..11]).unwrap_err(),
            WireError::Truncated
        );
        let mut short = PACKET_BYTES;
        short[5] = 7;
        assert_eq!(
            UdpPacket::new_checked(&short[..]).unwrap_err(),
            WireError::Malformed
        );
    }

    #[test]
    fn test_parse() {
        let p = UdpPacket::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(UdpRepr::parse(&p).unwrap(), repr());
    }

    #[test]
    fn test_emit() {
        let mut bytes = [0u8; 12];
        bytes[8..].copy_from_slice(&PAYLOAD_BYTES);
        repr().emit(&mut UdpPacket::new_unchecked(&mut bytes[..]));
        let mut expected = PACKET_BYTES;
        expected[6..8].fill(0);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn test_buffer_len() {
        assert_eq!(repr().buffer_len(), 8);
    }
}
