//! What IPv4 and IPv6 share: protocol numbers, the version nibble, and the
//! 5-tuple the classifier and the inbound policy check look at.

use std::net::IpAddr;

use super::{ipv4, ipv6, read_u16, Ipv4Packet, Ipv6Packet, Result, WireError};
use crate::api::FlowKey;

/// IANA protocol numbers used here.
pub mod protocol {
    pub const HOPOPT: u8 = 0;
    pub const ICMP: u8 = 1;
    /// IP-in-IP: ESP next header for an inner IPv4 packet (tunnel mode).
    pub const IPV4: u8 = 4;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    /// ESP next header for an inner IPv6 packet (tunnel mode).
    pub const IPV6: u8 = 41;
    pub const IPV6_ROUTE: u8 = 43;
    pub const IPV6_FRAG: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    /// No next header: an ESP dummy packet (RFC 4303 §2.6).
    pub const NO_NEXT_HEADER: u8 = 59;
    pub const IPV6_OPTS: u8 = 60;
    pub const SCTP: u8 = 132;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpVersion {
    V4,
    V6,
}

impl IpVersion {
    /// Reads the version nibble of an IP packet.
    pub fn of(packet: &[u8]) -> Result<IpVersion> {
        match packet.first().map(|b| b >> 4) {
            None => Err(WireError::Truncated),
            Some(4) => Ok(IpVersion::V4),
            Some(6) => Ok(IpVersion::V6),
            Some(_) => Err(WireError::Unsupported),
        }
    }

    /// The ESP next-header value that says "tunnel mode, this version".
    pub const fn esp_next_header(self) -> u8 {
        match self {
            IpVersion::V4 => protocol::IPV4,
            IpVersion::V6 => protocol::IPV6,
        }
    }
}

/// Bounded walk over IPv6 extension headers, so a chain of them can not keep
/// the worker busy.
const MAX_EXT_HEADERS: usize = 8;

/// Extracts the 5-tuple of an IPv4 or IPv6 packet. Ports are those of TCP,
/// UDP and SCTP, 0 for other protocols and for non-first fragments. IPv6
/// extension headers (hop-by-hop, routing, fragment, destination options) are
/// skipped, up to 8 of them. A first fragment or unfragmented TCP/UDP/SCTP
/// packet too short for its ports is `Truncated`.
pub fn flow_key(ip_packet: &[u8]) -> Result<FlowKey> {
    match IpVersion::of(ip_packet)? {
        IpVersion::V4 => {
            let p = Ipv4Packet::new_checked(ip_packet)?;
            let proto = p.protocol();
            let first = p.frag_offset() == 0;
            let (src_port, dst_port) = if first {
                ports(proto, p.payload())?
            } else {
                (0, 0)
            };
            Ok(FlowKey {
                src: IpAddr::V4(p.src_addr()),
                dst: IpAddr::V4(p.dst_addr()),
                proto,
                src_port,
                dst_port,
            })
        }
        IpVersion::V6 => {
            let p = Ipv6Packet::new_checked(ip_packet)?;
            let mut next = p.next_header();
            let mut rest = p.payload();
            let mut first = true;
            for _ in 0..MAX_EXT_HEADERS {
                match next {
                    protocol::HOPOPT | protocol::IPV6_ROUTE | protocol::IPV6_OPTS => {
                        if rest.len() < 8 {
                            return Err(WireError::Truncated);
                        }
                        let len = (rest[1] as usize + 1) * 8;
                        if rest.len() < len {
                            return Err(WireError::Truncated);
                        }
                        next = rest[0];
                        rest = &rest[len..];
                    }
                    protocol::IPV6_FRAG => {
                        if rest.len() < 8 {
                            return Err(WireError::Truncated);
                        }
                        first = read_u16(rest, 2..4) & 0xfff8 == 0;
                        next = rest[0];
                        rest = &rest[8..];
                    }
                    _ => break,
                }
            }
            let (src_port, dst_port) = if first { ports(next, rest)? } else { (0, 0) };
            Ok(FlowKey {
                src: IpAddr::V6(p.src_addr()),
                dst: IpAddr::V6(p.dst_addr()),
                proto: next,
                src_port,
                dst_port,
            })
        }
    }
}

fn ports(proto: u8, l4: &[u8]) -> Result<(u16, u16)> {
    match proto {
        protocol::TCP | protocol::UDP | protocol::SCTP => {
            if l4.len() < 4 {
                return Err(WireError::Truncated);
            }
            Ok((read_u16(l4, 0..2), read_u16(l4, 2..4)))
        }
        _ => Ok((0, 0)),
    }
}

/// Smallest header of each version, for quick length checks.
pub const fn min_header_len(v: IpVersion) -> usize {
    match v {
        IpVersion::V4 => ipv4::HEADER_LEN,
        IpVersion::V6 => ipv6::HEADER_LEN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// scapy: IP(src="192.168.100.10", dst="172.16.10.11")/UDP(sport=1234,
    /// dport=53) with 2 bytes of payload (checksums irrelevant here).
    fn udp4() -> Vec<u8> {
        let mut b = vec![
            0x45, 0, 0, 30, 0, 0, 0x40, 0, 64, 17, 0, 0, 192, 168, 100, 10, 172, 16, 10, 11,
        ];
        b.extend_from_slice(&[0x04, 0xd2, 0x00, 0x35, 0, 10, 0, 0, 0xab, 0xcd]);
        b
    }

    fn v6(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0x60, 0, 0, 0, 0, payload.len() as u8, next, 64];
        b.extend_from_slice(&"fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&"fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn v4_udp_ports() {
        let k = flow_key(&udp4()).unwrap();
        assert_eq!(k.src, "192.168.100.10".parse::<IpAddr>().unwrap());
        assert_eq!(k.dst, "172.16.10.11".parse::<IpAddr>().unwrap());
        assert_eq!((k.proto, k.src_port, k.dst_port), (17, 1234, 53));
    }

    #[test]
    fn v4_non_first_fragment_has_no_ports() {
        let mut b = udp4();
        b[6] = 0x00;
        b[7] = 0x01; // offset 8 bytes
        let k = flow_key(&b).unwrap();
        assert_eq!((k.src_port, k.dst_port), (0, 0));
    }

    #[test]
    fn v4_icmp_and_truncated_tcp() {
        let mut b = udp4();
        b[9] = protocol::ICMP;
        assert_eq!(flow_key(&b).unwrap().src_port, 0);
        let mut t = udp4();
        t[9] = protocol::TCP;
        t[3] = 22; // only 2 bytes of L4
        t.truncate(22);
        assert_eq!(flow_key(&t).unwrap_err(), WireError::Truncated);
    }

    #[test]
    fn v6_tcp_through_extension_headers() {
        // hop-by-hop (8 bytes) → destination options (8 bytes) → TCP
        let mut pl = vec![protocol::IPV6_OPTS, 0, 1, 4, 0, 0, 0, 0];
        pl.extend_from_slice(&[protocol::TCP, 0, 1, 4, 0, 0, 0, 0]);
        pl.extend_from_slice(&[0x01, 0xbb, 0xc0, 0x00, 0, 0, 0, 0]);
        let k = flow_key(&v6(protocol::HOPOPT, &pl)).unwrap();
        assert_eq!((k.proto, k.src_port, k.dst_port), (6, 443, 0xc000));
    }

    #[test]
    fn v6_fragment_and_errors() {
        let mut pl = vec![protocol::UDP, 0, 0x00, 0x08, 0, 0, 0, 1];
        pl.extend_from_slice(&[1, 2, 3, 4]);
        let k = flow_key(&v6(protocol::IPV6_FRAG, &pl)).unwrap();
        assert_eq!((k.proto, k.src_port), (17, 0));
        assert_eq!(flow_key(&[]).unwrap_err(), WireError::Truncated);
        assert_eq!(flow_key(&[0x50]).unwrap_err(), WireError::Unsupported);
        let ext = v6(protocol::HOPOPT, &[protocol::TCP, 5, 0, 0]);
        assert_eq!(flow_key(&ext).unwrap_err(), WireError::Truncated);
    }

    proptest::proptest! {
        #[test]
        fn flow_key_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..128)) {
            let _ = flow_key(&bytes);
        }
    }
}
