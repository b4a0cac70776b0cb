//! ESP round trips: every suite × inner/outer IP version × ESP-in-UDP × ESN.

mod esp_util;

use std::time::Instant;

use esp_util::*;
use espgate_dataplane::api::SaCounters;
use espgate_dataplane::esp::{decap_burst, encap_burst, esp_offset, peek_spi};
use espgate_dataplane::wire::{EspPacket, IpVersion, Ipv4Packet, Ipv4Repr, Ipv6Packet, UdpPacket};

const SIZES: [usize; 7] = [0, 1, 13, 64, 511, 512, 1400];

#[test]
fn round_trip_every_shape() {
    let now = Instant::now();
    for shape in Shape::all() {
        let (mut out, mut inb) = shape.pair(now);
        let inner: Vec<Vec<u8>> = SIZES
            .iter()
            .enumerate()
            .map(|(i, n)| shape.inner(*n, i as u8))
            .collect();
        let mut fs = frames(&inner);
        let mut ev = Vec::new();
        let r = encap_burst(&mut out, &mut fs, now, &mut ev);
        assert_eq!(r.good, inner.len(), "{shape:?}: {:?}", r.dropped);
        for (i, f) in fs.iter().enumerate() {
            check_outer(&shape, f.data(), i as u32 + 1, inner[i].len());
            assert_eq!(peek_spi(f.data()).unwrap(), shape.inbound_spi());
        }
        let r = decap_burst(&mut inb, &mut fs, now, &mut ev);
        assert_eq!(r.good, inner.len(), "{shape:?}: {:?}", r.dropped);
        for (f, want) in fs.iter().zip(&inner) {
            assert_eq!(f.data(), &want[..], "{shape:?}");
        }
        let n = inner.len() as u64;
        let bytes: u64 = inner.iter().map(|p| p.len() as u64).sum();
        assert_eq!(
            *out.counters(),
            SaCounters {
                encaps: n,
                encrypt: n,
                digest: n,
                bytes,
                ..Default::default()
            }
        );
        assert_eq!(
            *inb.counters(),
            SaCounters {
                decaps: n,
                decrypt: n,
                verify: n,
                bytes,
                ..Default::default()
            }
        );
        assert!(ev.is_empty());
    }
}

/// The outer header is what the SA says: addresses, protocol 50 or UDP
/// 4500 (zero checksum over IPv4), valid IPv4 checksum, SPI, sequence, and
/// an ESP length that fits the suite's padding.
fn check_outer(shape: &Shape, pkt: &[u8], seq: u32, inner_len: usize) {
    let (esp_at, esp_len) = esp_offset(pkt).unwrap();
    match IpVersion::of(pkt).unwrap() {
        IpVersion::V4 => {
            assert!(!shape.outer_v6);
            let p = Ipv4Packet::new_checked(pkt).unwrap();
            let r = Ipv4Repr::parse(&p).unwrap();
            assert_eq!(std::net::IpAddr::V4(r.src_addr), shape.site1());
            assert_eq!(std::net::IpAddr::V4(r.dst_addr), shape.site2());
            assert_eq!(r.protocol, if shape.udp { 17 } else { 50 });
            assert_eq!(p.total_len() as usize, pkt.len());
            assert_eq!(r.ttl, 64);
            if shape.udp {
                let u = UdpPacket::new_checked(p.payload()).unwrap();
                assert_eq!((u.src_port(), u.dst_port(), u.checksum()), (4500, 4500, 0));
            }
        }
        IpVersion::V6 => {
            assert!(shape.outer_v6);
            let p = Ipv6Packet::new_checked(pkt).unwrap();
            assert_eq!(std::net::IpAddr::V6(p.src_addr()), shape.site1());
            assert_eq!(p.next_header(), if shape.udp { 17 } else { 50 });
            assert_eq!(p.payload_len() as usize + 40, pkt.len());
            if shape.udp {
                assert_ne!(UdpPacket::new_checked(p.payload()).unwrap().checksum(), 0);
            }
        }
    }
    let esp = EspPacket::new_checked(&pkt[esp_at..esp_at + esp_len]).unwrap();
    assert_eq!(esp.spi(), shape.inbound_spi().0);
    assert_eq!(esp.sequence_number(), seq);
    let s = shape.suite;
    let ct = esp_len - 8 - s.iv_len() - s.icv_len();
    assert_eq!(ct % s.block_len(), 0);
    assert!(ct >= inner_len + 2 && ct < inner_len + 2 + s.block_len());
}

#[test]
fn esn_round_trip_across_2_pow_32() {
    let now = Instant::now();
    for suite in SUITES {
        let shape = Shape {
            esn: true,
            ..Shape::simple(suite)
        };
        let (mut out, mut inb) = shape.pair(now);
        // Round 0 ends just below 2^32, round 1 crosses it (the receiver infers
        // the high half from where its window stood before the burst).
        out.set_next_seq((1u64 << 32) - 6);
        let mut ev = Vec::new();
        for round in 0..3 {
            let inner: Vec<Vec<u8>> = (0..4).map(|i| shape.inner(40, round * 4 + i)).collect();
            let mut fs = frames(&inner);
            assert_eq!(encap_burst(&mut out, &mut fs, now, &mut ev).good, 4);
            let r = decap_burst(&mut inb, &mut fs, now, &mut ev);
            assert_eq!(r.good, 4, "{suite:?} round {round}: {:?}", r.dropped);
            for (f, want) in fs.iter().zip(&inner) {
                assert_eq!(f.data(), &want[..]);
            }
        }
        assert_eq!(inb.seq(), (1u64 << 32) + 5, "{suite:?}");
        assert_eq!(out.seq(), (1u64 << 32) + 6);
    }
}

#[test]
fn one_packet_groups_and_full_bursts() {
    let now = Instant::now();
    let shape = Shape::simple(espgate_dataplane::api::Suite::Aes256CbcHmacSha256);
    let (mut out, mut inb) = shape.pair(now);
    let mut ev = Vec::new();
    let inner: Vec<Vec<u8>> = (0..64).map(|i| shape.inner(i * 20, i as u8)).collect();
    let mut fs = frames(&inner);
    assert_eq!(encap_burst(&mut out, &mut fs, now, &mut ev).good, 64);
    // Decap one by one, out of order within the window.
    for i in (0..64).rev() {
        let r = decap_burst(&mut inb, &mut fs[i..i + 1], now, &mut ev);
        assert_eq!(r.good, 1);
        assert_eq!(fs[i].data(), &inner[i][..]);
    }
}
