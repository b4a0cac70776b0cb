//! Helpers shared by the ESP integration tests: SA parameters for every
//! suite and tunnel shape, inner packets, frames.
#![allow(dead_code)]

use std::net::IpAddr;
use std::time::Instant;

use espgate_dataplane::api::{
    Direction, Lifetime, RuleId, SaKeys, SaParams, Selector, Spi, Suite, TunnelEnds,
};
use espgate_dataplane::buf::Frame;
use espgate_dataplane::sa::Sa;

pub const SUITES: [Suite; 5] = [
    Suite::Aes256CbcHmacSha256,
    Suite::Aes128CbcHmacSha256,
    Suite::Aes256CbcHmacSha1,
    Suite::Aes128Gcm16,
    Suite::Aes256Gcm16,
];

/// Deterministic key material of the right lengths for `suite`.
pub fn keys(suite: Suite, seed: u8) -> SaKeys {
    SaKeys {
        encr: (0..suite.encr_keymat_len())
            .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
            .collect(),
        integ: (0..suite.integ_key_len())
            .map(|i| seed.wrapping_mul(17).wrapping_add(0x80 + i as u8))
            .collect(),
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub suite: Suite,
    pub inner_v6: bool,
    pub outer_v6: bool,
    pub udp: bool,
    pub esn: bool,
}

impl Shape {
    pub fn all() -> Vec<Shape> {
        let mut v = Vec::new();
        for suite in SUITES {
            for inner_v6 in [false, true] {
                for outer_v6 in [false, true] {
                    for udp in [false, true] {
                        for esn in [false, true] {
                            v.push(Shape {
                                suite,
                                inner_v6,
                                outer_v6,
                                udp,
                                esn,
                            });
                        }
                    }
                }
            }
        }
        v
    }

    pub fn simple(suite: Suite) -> Shape {
        Shape {
            suite,
            inner_v6: false,
            outer_v6: false,
            udp: false,
            esn: false,
        }
    }

    pub fn site1(&self) -> IpAddr {
        if self.outer_v6 {
            "fd00:ff:1::2".parse().unwrap()
        } else {
            "10.255.1.2".parse().unwrap()
        }
    }

    pub fn site2(&self) -> IpAddr {
        if self.outer_v6 {
            "fd00:ff:2::2".parse().unwrap()
        } else {
            "10.255.2.2".parse().unwrap()
        }
    }

    /// YELLOW → PURPLE in the seed scenario (or its IPv6 twin).
    pub fn selector(&self) -> Selector {
        if self.inner_v6 {
            Selector::between(
                "fd00:100::/64".parse().unwrap(),
                "fd00:10::/64".parse().unwrap(),
            )
        } else {
            Selector::between(
                "192.168.100.0/24".parse().unwrap(),
                "172.16.10.0/24".parse().unwrap(),
            )
        }
    }

    pub fn inbound_spi(&self) -> Spi {
        Spi::new(0, 1, 42)
    }

    /// The outbound SA of site 1 and the matching inbound SA of site 2.
    pub fn params(&self, dir: Direction) -> SaParams {
        let (local, remote) = match dir {
            Direction::Outbound => (self.site1(), self.site2()),
            Direction::Inbound => (self.site2(), self.site1()),
        };
        SaParams {
            spi: self.inbound_spi(),
            dir,
            suite: self.suite,
            keys: keys(self.suite, 1),
            tunnel: TunnelEnds {
                local,
                remote,
                udp_encap: self.udp.then_some((4500, 4500)),
            },
            selector: self.selector(),
            esn: self.esn,
            replay_window: 128,
            lifetime: Lifetime::UNLIMITED,
            rule: RuleId(1),
            child_id: 1,
            resource: None,
            more_selectors: Vec::new(),
        }
    }

    pub fn pair(&self, now: Instant) -> (Sa, Sa) {
        (
            Sa::new(self.params(Direction::Outbound), now).unwrap(),
            Sa::new(self.params(Direction::Inbound), now).unwrap(),
        )
    }

    pub fn inner(&self, payload_len: usize, tag: u8) -> Vec<u8> {
        if self.inner_v6 {
            inner_v6(payload_len, tag)
        } else {
            inner_v4(payload_len, tag)
        }
    }
}

fn ones_sum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// IPv4/UDP 192.168.100.10:1234 → 172.16.10.11:5001 with `payload_len`
/// bytes of payload, valid header checksum, UDP checksum 0.
pub fn inner_v4(payload_len: usize, tag: u8) -> Vec<u8> {
    let total = 20 + 8 + payload_len;
    let mut b = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0x12,
        tag,
        0x40,
        0,
        63,
        17,
        0,
        0,
        192,
        168,
        100,
        10,
        172,
        16,
        10,
        11,
    ];
    let c = ones_sum(&b);
    b[10..12].copy_from_slice(&c.to_be_bytes());
    let ulen = 8 + payload_len;
    b.extend_from_slice(&[0x04, 0xd2, 0x13, 0x89, (ulen >> 8) as u8, ulen as u8, 0, 0]);
    b.extend((0..payload_len).map(|i| (i as u8).wrapping_add(tag)));
    b
}

/// IPv6/UDP fd00:100::10 → fd00:10::11, ports 1234 → 5001.
pub fn inner_v6(payload_len: usize, tag: u8) -> Vec<u8> {
    let ulen = 8 + payload_len;
    let mut b = vec![0x60, 0, 0, tag, (ulen >> 8) as u8, ulen as u8, 17, 63];
    b.extend_from_slice(
        &"fd00:100::10"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    b.extend_from_slice(
        &"fd00:10::11"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    // A real checksum so that scapy/tshark see a sane packet.
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&b[8..40]);
    pseudo.extend_from_slice(&(ulen as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 17]);
    let mut udp = vec![0x04, 0xd2, 0x13, 0x89, (ulen >> 8) as u8, ulen as u8, 0, 0];
    udp.extend((0..payload_len).map(|i| (i as u8).wrapping_add(tag)));
    pseudo.extend_from_slice(&udp);
    let c = match ones_sum(&pseudo) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    b.extend_from_slice(&udp);
    b
}

pub fn frame(bytes: &[u8]) -> Frame {
    let mut f = Frame::new();
    assert!(f.set_data(bytes));
    f
}

pub fn frames(packets: &[Vec<u8>]) -> Vec<Frame> {
    packets.iter().map(|p| frame(p)).collect()
}
