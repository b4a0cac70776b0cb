//! Packets that must be dropped, each with the right reason and counter;
//! lifetimes; sequence exhaustion; random bytes into decap.

mod esp_util;

use std::time::{Duration, Instant};

use esp_util::*;
use espgate_dataplane::api::{
    DataplaneEvent, Direction, ExpireReason, Lifetime, SaParams, Spi, Suite, TunnelEnds,
};
use espgate_dataplane::buf::Frame;
use espgate_dataplane::crypto::{SaCipher, SealJob};
use espgate_dataplane::error::{DropCounters, DropReason};
use espgate_dataplane::esp::{decap_burst, encap_burst, peek_spi};
use espgate_dataplane::sa::{OuterTemplate, Sa};
use espgate_dataplane::sa_table::SaTable;

/// Encapsulates `inner` with a fresh outbound SA of `shape` after setting
/// its next sequence number to `seq`.
fn encap_one(shape: &Shape, out: &mut Sa, inner: &[u8]) -> Frame {
    let mut fs = vec![frame(inner)];
    let r = encap_burst(out, &mut fs, Instant::now(), &mut Vec::new());
    assert_eq!(r.good, 1);
    let _ = shape;
    fs.pop().unwrap()
}

/// Builds an ESP packet by hand: `plain` is the complete plaintext
/// (inner | padding | pad length | next header), sealed with the keys of
/// `shape` so that the ICV is good and only the trailer is wrong.
fn hand_made(shape: &Shape, seq: u32, plain: &[u8]) -> Frame {
    let s = shape.suite;
    let mut esp = vec![0u8; 8 + s.iv_len() + plain.len() + s.icv_len()];
    esp[..4].copy_from_slice(&shape.inbound_spi().0.to_be_bytes());
    esp[4..8].copy_from_slice(&seq.to_be_bytes());
    esp[8 + s.iv_len()..8 + s.iv_len() + plain.len()].copy_from_slice(plain);
    let mut c = SaCipher::new(s, Direction::Outbound, &keys(s, 1)).unwrap();
    c.seal_burst(&mut [SealJob {
        esp: &mut esp,
        seq_hi: 0,
        esn: false,
    }]);
    let tpl = OuterTemplate::new(&TunnelEnds {
        local: shape.site1(),
        remote: shape.site2(),
        udp_encap: None,
    })
    .unwrap();
    let mut pkt = vec![0u8; tpl.len()];
    pkt.extend_from_slice(&esp);
    tpl.emit(&mut pkt, false, seq as u16);
    frame(&pkt)
}

fn trailer(inner: &[u8], pad: &[u8], next_header: u8) -> Vec<u8> {
    let mut p = inner.to_vec();
    p.extend_from_slice(pad);
    p.push(pad.len() as u8);
    p.push(next_header);
    p
}

fn decap_one(inb: &mut Sa, f: Frame) -> Result<Frame, DropReason> {
    let mut fs = vec![f];
    let r = decap_burst(inb, &mut fs, Instant::now(), &mut Vec::new());
    if r.good == 1 {
        Ok(fs.pop().unwrap())
    } else {
        Err(r.dropped[0])
    }
}

#[test]
fn tampered_icv_and_ciphertext_fail_auth() {
    for suite in SUITES {
        let shape = Shape::simple(suite);
        let (mut out, mut inb) = shape.pair(Instant::now());
        for at_end in [true, false] {
            let genuine = encap_one(&shape, &mut out, &shape.inner(100, 1));
            let mut f = frame(genuine.data());
            let len = f.len();
            // Flip a bit of the ICV, or of the ciphertext.
            let i = if at_end {
                len - 1
            } else {
                len - suite.icv_len() - 5
            };
            f.data_mut()[i] ^= 0x01;
            assert_eq!(decap_one(&mut inb, f).unwrap_err(), DropReason::BadIcv);
            // A forgery does not move the window: the genuine packet with
            // the same sequence number still gets through.
            decap_one(&mut inb, genuine).unwrap();
        }
        assert_eq!(inb.counters().auth_fail, 2, "{suite:?}");
        assert_eq!(inb.counters().decaps, 2);
    }
}

#[test]
fn replayed_duplicate_and_too_old() {
    let shape = Shape::simple(Suite::Aes256CbcHmacSha256);
    let (mut out, mut inb) = shape.pair(Instant::now());
    let first = encap_one(&shape, &mut out, &shape.inner(10, 0));
    let copy = frame(first.data());
    decap_one(&mut inb, first).unwrap();
    assert_eq!(decap_one(&mut inb, copy).unwrap_err(), DropReason::Replay);

    // Two copies of one packet in the same burst: one survives.
    let p = encap_one(&shape, &mut out, &shape.inner(10, 1));
    let mut fs = vec![frame(p.data()), p];
    let r = decap_burst(&mut inb, &mut fs, Instant::now(), &mut Vec::new());
    assert_eq!((r.good, &r.dropped[..]), (1, &[DropReason::Replay][..]));

    // Left of the window (window 128).
    let old = encap_one(&shape, &mut out, &shape.inner(10, 2));
    out.set_next_seq(500);
    let new = encap_one(&shape, &mut out, &shape.inner(10, 3));
    decap_one(&mut inb, new).unwrap();
    assert_eq!(decap_one(&mut inb, old).unwrap_err(), DropReason::TooOld);
    assert_eq!(inb.counters().replay, 3);
}

#[test]
fn truncated_packets() {
    for suite in SUITES {
        let shape = Shape::simple(suite);
        let (mut out, mut inb) = shape.pair(Instant::now());
        let f = encap_one(&shape, &mut out, &shape.inner(30, 0));
        let full = f.data().to_vec();
        // Cut inside the ICV, inside the header, and keep the IP length
        // honest (a short ESP that no longer fits the block size).
        let mut cut = frame(&full[..full.len() - 1]);
        assert_eq!(decap_one(&mut inb, cut).unwrap_err(), DropReason::Truncated);
        cut = frame(&full[..24]);
        assert_eq!(decap_one(&mut inb, cut).unwrap_err(), DropReason::Truncated);
        let mut short = full[..full.len() - 3].to_vec();
        let tl = (short.len() as u16).to_be_bytes();
        short[2..4].copy_from_slice(&tl);
        short[10..12].fill(0);
        let c = checksum(&short[..20]);
        short[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(
            decap_one(&mut inb, frame(&short)).unwrap_err(),
            DropReason::Truncated
        );
        assert_eq!(inb.counters().truncated, 3, "{suite:?}");
    }
}

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

#[test]
fn wrong_spi_is_unknown() {
    let shape = Shape::simple(Suite::Aes128Gcm16);
    let now = Instant::now();
    let (mut out, _) = shape.pair(now);
    // The worker looks the SPI up in its shard's table: unknown → no SA.
    let mut table = SaTable::new(0);
    let mut other = shape.params(Direction::Inbound);
    other.spi = Spi::new(0, 1, 43);
    table.install(other, now).unwrap();
    let f = encap_one(&shape, &mut out, &shape.inner(10, 0));
    let spi = peek_spi(f.data()).unwrap();
    assert!(table.inbound(spi).is_none());
    let mut drops = DropCounters::default();
    drops.count(DropReason::UnknownSpi);
    // If a caller groups it under the wrong SA anyway, decap refuses it.
    let inb = table.inbound(Spi::new(0, 1, 43)).unwrap();
    assert_eq!(decap_one(inb, f).unwrap_err(), DropReason::UnknownSpi);
    assert_eq!(drops.get(DropReason::UnknownSpi), 1);
}

#[test]
fn bad_padding_next_header_dummy_and_policy() {
    for suite in SUITES {
        let shape = Shape::simple(suite);
        let (_, mut inb) = shape.pair(Instant::now());
        let inner = shape.inner(26, 0); // 54 bytes + 2 = 56: needs padding
        let blk = suite.block_len();
        let pad_n = (blk - (inner.len() + 2) % blk) % blk + blk; // ≥ 1 pad byte
        let good_pad: Vec<u8> = (1..=pad_n as u8).collect();
        let mut bad_pad = good_pad.clone();
        bad_pad[0] = 9;
        let mut seq = 1;
        let mut next = |plain: Vec<u8>| {
            seq += 1;
            hand_made(&shape, seq, &plain)
        };
        // Sanity: the hand-made packet with proper padding passes.
        let ok = decap_one(&mut inb, next(trailer(&inner, &good_pad, 4))).unwrap();
        assert_eq!(ok.data(), &inner[..]);
        let cases = [
            (trailer(&inner, &bad_pad, 4), DropReason::BadPadding),
            // Pad length pointing before the start of the payload.
            (
                {
                    let mut p = trailer(&inner, &good_pad, 4);
                    let n = p.len();
                    p[n - 2] = 255;
                    p
                },
                DropReason::BadPadding,
            ),
            (trailer(&inner, &good_pad, 6), DropReason::BadNextHeader),
            (trailer(&inner, &good_pad, 41), DropReason::BadNextHeader),
            (trailer(&inner, &good_pad, 59), DropReason::DummyPacket),
            (
                trailer(&inner_v4_from(&inner, [10, 9, 9, 9]), &good_pad, 4),
                DropReason::PolicyMismatch,
            ),
        ];
        for (plain, want) in cases {
            assert_eq!(
                decap_one(&mut inb, next(plain)).unwrap_err(),
                want,
                "{suite:?}"
            );
        }
        let c = inb.counters();
        assert_eq!(
            (
                c.bad_padding,
                c.bad_next_header,
                c.policy_mismatch,
                c.decaps
            ),
            (2, 2, 1, 1),
            "{suite:?}"
        );
        assert_eq!(c.verify, 7, "all were authentic");
    }
}

/// `inner` with another source address (and a fixed-up checksum).
fn inner_v4_from(inner: &[u8], src: [u8; 4]) -> Vec<u8> {
    let mut p = inner.to_vec();
    p[12..16].copy_from_slice(&src);
    p[10..12].fill(0);
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

fn with_lifetime(shape: &Shape, dir: Direction, lifetime: Lifetime) -> SaParams {
    let mut p = shape.params(dir);
    p.lifetime = lifetime;
    p
}

#[test]
fn lifetime_packets_soft_then_hard() {
    let now = Instant::now();
    let shape = Shape::simple(Suite::Aes256Gcm16);
    let lt = Lifetime {
        soft_packets: 5,
        hard_packets: 10,
        ..Lifetime::UNLIMITED
    };
    let mut out = Sa::new(with_lifetime(&shape, Direction::Outbound, lt), now).unwrap();
    let mut ev = Vec::new();
    let inner: Vec<Vec<u8>> = (0..8).map(|i| shape.inner(20, i)).collect();
    let mut fs = frames(&inner);
    assert_eq!(encap_burst(&mut out, &mut fs, now, &mut ev).good, 8);
    assert_eq!(
        ev,
        [DataplaneEvent::SoftExpire {
            spi: shape.inbound_spi(),
            dir: Direction::Outbound,
            why: ExpireReason::Packets
        }]
    );
    let mut fs = frames(&inner);
    let r = encap_burst(&mut out, &mut fs, now, &mut ev);
    assert_eq!(r.good, 2, "exactly up to the hard limit");
    assert!(r.dropped.iter().all(|d| *d == DropReason::HardExpired));
    assert!(matches!(
        ev[1],
        DataplaneEvent::HardExpire {
            why: ExpireReason::Packets,
            ..
        }
    ));
    let mut fs = frames(&inner[..1]);
    assert_eq!(encap_burst(&mut out, &mut fs, now, &mut ev).good, 0);
    assert_eq!(ev.len(), 2, "each event once");
}

#[test]
fn lifetime_bytes_and_seconds_inbound() {
    let now = Instant::now();
    let shape = Shape::simple(Suite::Aes256CbcHmacSha256);
    let lt = Lifetime {
        soft_bytes: 100,
        hard_bytes: u64::MAX,
        soft_secs: 10,
        hard_secs: 20,
        ..Lifetime::UNLIMITED
    };
    let mut out = Sa::new(shape.params(Direction::Outbound), now).unwrap();
    let mut inb = Sa::new(with_lifetime(&shape, Direction::Inbound, lt), now).unwrap();
    let mut ev = Vec::new();
    let mut fs = frames(&[shape.inner(200, 0)]);
    encap_burst(&mut out, &mut fs, now, &mut ev);
    assert_eq!(decap_burst(&mut inb, &mut fs, now, &mut ev).good, 1);
    assert!(matches!(
        ev[0],
        DataplaneEvent::SoftExpire {
            why: ExpireReason::Bytes,
            dir: Direction::Inbound,
            ..
        }
    ));
    let mut fs = frames(&[shape.inner(20, 1)]);
    encap_burst(&mut out, &mut fs, now, &mut ev);
    let later = now + Duration::from_secs(20);
    let r = decap_burst(&mut inb, &mut fs, later, &mut ev);
    assert_eq!(&r.dropped[..], &[DropReason::HardExpired]);
    assert!(matches!(
        ev[1],
        DataplaneEvent::HardExpire {
            why: ExpireReason::Time,
            ..
        }
    ));
    assert!(inb.is_hard_expired());
}

#[test]
fn sequence_exhaustion_stops_the_sa() {
    let now = Instant::now();
    for esn in [false, true] {
        let shape = Shape {
            esn,
            ..Shape::simple(Suite::Aes128CbcHmacSha256)
        };
        let (mut out, _) = shape.pair(now);
        let limit = if esn {
            u64::MAX - 1
        } else {
            u64::from(u32::MAX)
        };
        out.set_next_seq(limit - 1);
        let mut ev = Vec::new();
        let inner: Vec<Vec<u8>> = (0..5).map(|i| shape.inner(20, i)).collect();
        let mut fs = frames(&inner);
        let r = encap_burst(&mut out, &mut fs, now, &mut ev);
        assert_eq!(r.good, 2, "esn={esn}");
        assert_eq!(&r.dropped[..], &[DropReason::SeqOverflow; 3]);
        assert!(matches!(
            ev[..],
            [DataplaneEvent::HardExpire {
                why: ExpireReason::SeqExhausted,
                ..
            }]
        ));
        // Nothing more goes out, ever: the sequence number never wraps.
        let mut fs = frames(&inner);
        assert_eq!(encap_burst(&mut out, &mut fs, now, &mut ev).good, 0);
        assert_eq!(ev.len(), 1);
    }
}

#[test]
fn not_ip_and_no_room() {
    let now = Instant::now();
    let shape = Shape::simple(Suite::Aes256Gcm16);
    let (mut out, _) = shape.pair(now);
    let mut ev = Vec::new();
    let mut tight = frame(&shape.inner(20, 0));
    let len = tight.len();
    let (raw, head, _) = tight.raw_mut();
    let pkt = raw[head..head + len].to_vec();
    raw[10..10 + len].copy_from_slice(&pkt);
    assert!(tight.set_bounds(10, len)); // only 10 bytes of headroom
    let mut fs = vec![
        frame(&[0x50, 1, 2, 3]),
        tight,
        frame(&[]),
        frame(&shape.inner(5, 1)),
    ];
    let r = encap_burst(&mut out, &mut fs, now, &mut ev);
    assert_eq!(r.good, 1);
    assert_eq!(
        &r.dropped[..],
        &[
            DropReason::NotIp,
            DropReason::NoBuffer,
            DropReason::Truncated
        ]
    );
    assert_eq!(out.seq(), 2, "dropped frames take no sequence number");
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(512))]

    /// Random bytes never panic decap, and never get through.
    #[test]
    fn random_bytes_into_decap(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        let shape = Shape::simple(Suite::Aes256CbcHmacSha256);
        let (_, mut inb) = shape.pair(Instant::now());
        let _ = peek_spi(&bytes);
        let mut fs = vec![frame(&bytes)];
        let r = decap_burst(&mut inb, &mut fs, Instant::now(), &mut Vec::new());
        proptest::prop_assert_eq!(r.good, 0);
    }

    /// Random ESP bodies behind a valid outer header and the right SPI
    /// reach the ICV check and stop there.
    #[test]
    fn random_esp_body_into_decap(
        suite in proptest::sample::select(SUITES.to_vec()),
        body in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        udp in proptest::bool::ANY,
    ) {
        let shape = Shape { udp, ..Shape::simple(suite) };
        let (_, mut inb) = shape.pair(Instant::now());
        let tpl = OuterTemplate::new(&TunnelEnds {
            local: shape.site1(),
            remote: shape.site2(),
            udp_encap: udp.then_some((4500, 4500)),
        })
        .unwrap();
        let mut pkt = vec![0u8; tpl.len()];
        pkt.extend_from_slice(&shape.inbound_spi().0.to_be_bytes());
        pkt.extend_from_slice(&body);
        tpl.emit(&mut pkt, false, 1);
        let mut fs = vec![frame(&pkt)];
        let r = decap_burst(&mut inb, &mut fs, Instant::now(), &mut Vec::new());
        proptest::prop_assert_eq!(r.good, 0);
        let why = r.dropped[0];
        proptest::prop_assert!(
            matches!(why, DropReason::BadIcv | DropReason::Truncated | DropReason::TooOld),
            "{:?}", why
        );
    }

    /// A valid packet with any one byte changed (outer headers included)
    /// is dropped, or — if the change is in a field ESP does not protect
    /// (outer TTL, addresses) — still yields the exact inner packet.
    #[test]
    fn mutated_packet_into_decap(
        suite in proptest::sample::select(SUITES.to_vec()),
        at in 0usize..2000,
        xor in 1u8..=255,
        udp in proptest::bool::ANY,
    ) {
        let shape = Shape { udp, ..Shape::simple(suite) };
        let (mut out, mut inb) = shape.pair(Instant::now());
        let inner = shape.inner(50, 7);
        let f = encap_one(&shape, &mut out, &inner);
        let mut bytes = f.data().to_vec();
        let at = at % bytes.len();
        bytes[at] ^= xor;
        let mut fs = vec![frame(&bytes)];
        let r = decap_burst(&mut inb, &mut fs, Instant::now(), &mut Vec::new());
        if r.good == 1 {
            proptest::prop_assert_eq!(fs[0].data(), &inner[..]);
            proptest::prop_assert!(at < 28, "only outer-header bytes are unprotected");
        }
    }
}
