//! RFC 4303 tunnel-mode encapsulation and decapsulation of one SA group.
//!
//! The worker cuts each burst into runs of frames that share an SA (DPDK
//! `sa_group`) and calls [`encap_burst`] or [`decap_burst`] once per run.
//! Each call works in three steps — prepare every frame (checks, trailer,
//! headers, sequence numbers for the whole group in one reservation), one
//! `seal_burst`/`open_burst` for the group, finish every frame — and then
//! moves the good frames to the front of the slice and the dropped ones
//! behind them, in order, returning why each was dropped (DPDK
//! `move_bad_mbufs`). The caller counts the reasons in its
//! [`DropCounters`](crate::error::DropCounters) and returns those frames to
//! its pool. No allocation, lock or syscall happens in here.
//!
//! Frame layouts:
//! * encap in: the inner IPv4/IPv6 packet. Out: outer IP [+ UDP] | SPI | SEQ
//!   | IV | ciphertext of (inner | padding | pad length | next header) | ICV.
//! * decap in: the outer IP packet as received, ESP directly in IP (protocol
//!   50) or in UDP (RFC 3948; any port — the I/O side decides what it hands
//!   over). IKE on port 4500 (non-ESP marker: 4 zero bytes) must be sent to
//!   the control plane by the caller; here it is dropped as `Malformed`.
//!   Out: the inner IP packet.

use std::time::Instant;

use arrayvec::ArrayVec;

use crate::api::Spi;
use crate::buf::{Frame, BURST_MAX};
use crate::crypto::{ct_range, OpenJob, SealJob};
use crate::error::DropReason;
use crate::sa::{EventSink, Inbound, Sa, Way, ESP_HEADER_LEN};
use crate::wire::esp::TRAILER_LEN;
use crate::wire::ip::protocol;
use crate::wire::{
    flow_key, EspPacket, EspTrailer, IpVersion, Ipv4Packet, Ipv4Repr, Ipv6Packet, UdpPacket,
    WireError,
};

/// Outcome of one SA group: `frames[..good]` were processed and are ready to
/// go on; `frames[good..good + dropped.len()]` were dropped, `dropped[i]`
/// saying why for `frames[good + i]`. At most [`BURST_MAX`] frames are
/// looked at per call; any beyond `processed()` are left untouched.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GroupResult {
    pub good: usize,
    pub dropped: ArrayVec<DropReason, BURST_MAX>,
}

impl GroupResult {
    pub fn processed(&self) -> usize {
        self.good + self.dropped.len()
    }
}

type Verdicts = [Option<DropReason>; BURST_MAX];

/// Moves the frames with no verdict to the front, keeping the order of both
/// parts. Rotations only happen once a frame was dropped, so the common
/// all-good case costs one pass over the verdicts.
fn partition(frames: &mut [Frame], verdict: &[Option<DropReason>]) -> GroupResult {
    let mut res = GroupResult::default();
    let mut w = 0;
    for (i, v) in verdict.iter().enumerate() {
        match v {
            None => {
                if w != i {
                    frames[w..=i].rotate_right(1);
                }
                w += 1;
            }
            Some(r) => res.dropped.push(*r),
        }
    }
    res.good = w;
    res
}

/// Version, DF bit (IPv4) and length of an inner packet to encrypt.
fn inner_info(data: &[u8]) -> Result<(IpVersion, bool, usize), DropReason> {
    match IpVersion::of(data).map_err(|e| match e {
        WireError::Truncated => DropReason::Truncated,
        _ => DropReason::NotIp,
    })? {
        IpVersion::V4 => {
            let p = Ipv4Packet::new_checked(data)?;
            Ok((IpVersion::V4, p.dont_frag(), p.total_len() as usize))
        }
        IpVersion::V6 => {
            let p = Ipv6Packet::new_checked(data)?;
            // RFC 4301 §8.1 leaves DF for inner IPv6 to us: IPv6 is never
            // fragmented on the path, so neither is its tunnel packet.
            Ok((
                IpVersion::V6,
                true,
                crate::wire::ipv6::HEADER_LEN + p.payload_len() as usize,
            ))
        }
    }
}

/// Encapsulates a group of inner IP packets with the outbound SA `sa`.
///
/// Checks the SA's time limits first (hard → every frame `HardExpired`),
/// reserves sequence numbers for the whole group at once (exhaustion →
/// `SeqOverflow` for the rest and a `HardExpire` event; never wraps), and
/// drops what does not fit (`NoBuffer`: needs `sa.max_overhead()` of head
/// plus tail room) or is not IP (`NotIp`, `Truncated`, `Malformed`).
/// Lifetime events go to `events`.
pub fn encap_burst(
    sa: &mut Sa,
    frames: &mut [Frame],
    now: Instant,
    events: &mut dyn EventSink,
) -> GroupResult {
    let n = frames.len().min(BURST_MAX);
    let mut verdict: Verdicts = [None; BURST_MAX];
    if !sa.check_time(now, events) {
        verdict[..n].fill(Some(DropReason::HardExpired));
        return partition(frames, &verdict[..n]);
    }
    let Some(outer_len) = sa.outer().map(|o| o.len()) else {
        // An inbound SA cannot send (a caller bug).
        verdict[..n].fill(Some(DropReason::NoSa));
        return partition(frames, &verdict[..n]);
    };
    let suite = sa.suite();
    let (iv_len, icv_len, block) = (suite.iv_len(), suite.icv_len(), suite.block_len());
    let head_need = ESP_HEADER_LEN + iv_len + outer_len;
    // (next header, DF, pad length) per frame
    let mut info = [(0u8, false, 0u8); BURST_MAX];

    let mut candidates = 0usize;
    for (i, f) in frames[..n].iter_mut().enumerate() {
        let (ver, df, len) = match inner_info(f.data()) {
            Ok(x) => x,
            Err(r) => {
                verdict[i] = Some(r);
                continue;
            }
        };
        // Link-layer padding after the IP packet is not ours to encrypt.
        f.truncate(len);
        let pad = EspTrailer::pad_len_for(len, block);
        if f.headroom() < head_need || f.tailroom() < pad + TRAILER_LEN + icv_len {
            verdict[i] = Some(DropReason::NoBuffer);
            continue;
        }
        info[i] = (ver.esp_next_header(), df, pad as u8);
        candidates += 1;
    }

    // Sequence numbers for the whole group in one step; the hard packet
    // limit and sequence exhaustion cut the group short.
    let allowed = (candidates as u64).min(sa.packets_left()) as usize;
    let (first_seq, granted) = sa.reserve_seq(allowed, events);
    let mut seq = first_seq;
    let mut taken = 0usize;
    let mut inner_bytes = 0u64;
    let spi = sa.spi().0.to_be_bytes();
    let esn = sa.esn();
    let mut seqs = [0u64; BURST_MAX];
    for (i, f) in frames[..n].iter_mut().enumerate() {
        if verdict[i].is_some() {
            continue;
        }
        if taken >= allowed {
            verdict[i] = Some(DropReason::HardExpired);
            continue;
        }
        if taken >= granted {
            verdict[i] = Some(DropReason::SeqOverflow);
            continue;
        }
        taken += 1;
        let (next_header, _, pad) = info[i];
        inner_bytes += f.len() as u64;
        // Room was checked above; a failure here would be a bug, dropped.
        let Some(tail) = f.append(pad as usize + TRAILER_LEN + icv_len) else {
            verdict[i] = Some(DropReason::NoBuffer);
            continue;
        };
        let (trailer, _icv) = tail.split_at_mut(pad as usize + TRAILER_LEN);
        EspTrailer {
            pad_len: pad,
            next_header,
        }
        .emit(trailer);
        let Some(hdr) = f.prepend(ESP_HEADER_LEN + iv_len) else {
            verdict[i] = Some(DropReason::NoBuffer);
            continue;
        };
        hdr[..4].copy_from_slice(&spi);
        hdr[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        seqs[i] = seq;
        seq += 1;
    }

    {
        let mut jobs: ArrayVec<SealJob<'_>, BURST_MAX> = ArrayVec::new();
        for (i, f) in frames[..n].iter_mut().enumerate() {
            if verdict[i].is_none() {
                jobs.push(SealJob {
                    esp: f.data_mut(),
                    seq_hi: (seqs[i] >> 32) as u32,
                    esn,
                });
            }
        }
        sa.cipher.seal_burst(&mut jobs);
    }

    let mut sent = 0u64;
    if let Way::Out(o) = &sa.state.way {
        for (i, f) in frames[..n].iter_mut().enumerate() {
            if verdict[i].is_some() {
                continue;
            }
            let Some(_) = f.prepend(outer_len) else {
                verdict[i] = Some(DropReason::NoBuffer);
                continue;
            };
            o.outer.emit(f.data_mut(), info[i].1, seqs[i] as u16);
            sent += 1;
        }
    }
    // `sent` is the encaps, encrypt and digest counters at once.
    sa.account(sent, inner_bytes, events);
    partition(frames, &verdict[..n])
}

/// Finds the ESP header in a received outer packet: `(offset, length)` of
/// the ESP part (SPI to ICV). ESP in IPv4/IPv6 directly or in UDP; IPv4
/// fragments are not reassembled (`Malformed`), IPv6 extension headers
/// before ESP are not walked (`Malformed`).
pub fn esp_offset(packet: &[u8]) -> Result<(usize, usize), DropReason> {
    let (proto, start, payload) = match IpVersion::of(packet).map_err(|e| match e {
        WireError::Truncated => DropReason::Truncated,
        _ => DropReason::Malformed,
    })? {
        IpVersion::V4 => {
            let p = Ipv4Packet::new_checked(packet)?;
            Ipv4Repr::parse(&p)?;
            (p.protocol(), p.header_len() as usize, p.payload())
        }
        IpVersion::V6 => {
            let p = Ipv6Packet::new_checked(packet)?;
            (p.next_header(), crate::wire::ipv6::HEADER_LEN, p.payload())
        }
    };
    let (start, esp) = match proto {
        protocol::ESP => (start, payload),
        protocol::UDP => {
            let u = UdpPacket::new_checked(payload)?;
            let esp = u.payload();
            // RFC 3948 §2.2: a zero "SPI" is the non-ESP marker of IKE.
            if esp.len() >= 4 && esp[..4] == [0, 0, 0, 0] {
                return Err(DropReason::Malformed);
            }
            (start + crate::wire::udp::HEADER_LEN, esp)
        }
        _ => return Err(DropReason::Malformed),
    };
    EspPacket::new_checked(esp)?;
    Ok((start, esp.len()))
}

/// The SPI of a received outer ESP packet, for the worker to pick the SA
/// table shard and group the burst. Does not look the SA up.
pub fn peek_spi(packet: &[u8]) -> Result<Spi, DropReason> {
    let (off, _) = esp_offset(packet)?;
    let p = EspPacket::new_unchecked(&packet[off..]);
    Ok(Spi(p.spi()))
}

fn count_drop(c: &mut Inbound, r: DropReason) {
    match r {
        DropReason::Truncated => c.truncated += 1,
        DropReason::Replay | DropReason::TooOld => c.replay_drops += 1,
        DropReason::BadIcv => c.auth_fail += 1,
        DropReason::BadPadding => c.bad_padding = c.bad_padding.saturating_add(1),
        DropReason::BadNextHeader => c.bad_next_header = c.bad_next_header.saturating_add(1),
        DropReason::PolicyMismatch => c.policy_mismatch = c.policy_mismatch.saturating_add(1),
        DropReason::DummyPacket | DropReason::HardExpired => {}
        _ => c.recv_errors += 1,
    }
}

/// Decapsulates a group of received ESP packets that all carry `sa`'s SPI.
///
/// Order per packet, as RFC 4303 §3.4 asks: length checks, replay check
/// (before any crypto), ESN high bits inferred from the window, ICV
/// verified in constant time and only then decryption and the replay-window
/// update, then padding (1, 2, 3, …) and next header (4 or 41; 59 = dummy
/// packet, dropped as `DummyPacket`), then the inner packet must match the
/// SA's selector (`PolicyMismatch`). Each failure is counted in the SA's
/// counters as well as returned.
pub fn decap_burst(
    sa: &mut Sa,
    frames: &mut [Frame],
    now: Instant,
    events: &mut dyn EventSink,
) -> GroupResult {
    let n = frames.len().min(BURST_MAX);
    let mut verdict: Verdicts = [None; BURST_MAX];
    if !sa.check_time(now, events) {
        verdict[..n].fill(Some(DropReason::HardExpired));
        return partition(frames, &verdict[..n]);
    }
    let suite = sa.suite();
    let (iv_len, icv_len) = (suite.iv_len(), suite.icv_len());
    let esn = sa.esn();
    let spi = sa.spi().0;
    let mut seqs = [0u64; BURST_MAX];
    let mut allowed = sa.packets_left();
    let Way::In(inb) = &mut sa.state.way else {
        // An outbound SA cannot receive (a caller bug).
        verdict[..n].fill(Some(DropReason::UnknownSpi));
        return partition(frames, &verdict[..n]);
    };

    for (i, f) in frames[..n].iter_mut().enumerate() {
        let r = (|| {
            let (off, len) = esp_offset(f.data())?;
            f.trim_front(off);
            f.truncate(len);
            if ct_range(suite, len).is_none() {
                return Err(DropReason::Truncated);
            }
            let p = EspPacket::new_unchecked(f.data());
            if p.spi() != spi {
                return Err(DropReason::UnknownSpi);
            }
            let lo = p.sequence_number();
            let hi = if esn { inb.replay.infer_seq_hi(lo) } else { 0 };
            let seq = (u64::from(hi) << 32) | u64::from(lo);
            inb.replay.check(seq)?;
            if allowed == 0 {
                return Err(DropReason::HardExpired);
            }
            allowed -= 1;
            seqs[i] = seq;
            Ok(())
        })();
        if let Err(r) = r {
            verdict[i] = Some(r);
        }
    }

    let mut ok = [false; BURST_MAX];
    {
        let mut jobs: ArrayVec<OpenJob<'_>, BURST_MAX> = ArrayVec::new();
        let mut idx: ArrayVec<usize, BURST_MAX> = ArrayVec::new();
        for (i, f) in frames[..n].iter_mut().enumerate() {
            if verdict[i].is_none() {
                jobs.push(OpenJob {
                    esp: f.data_mut(),
                    seq_hi: (seqs[i] >> 32) as u32,
                    esn,
                    ok: false,
                });
                idx.push(i);
            }
        }
        sa.cipher.open_burst(&mut jobs);
        for (j, i) in jobs.iter().zip(idx.iter()) {
            ok[*i] = j.ok;
        }
    }

    let mut delivered = 0u64;
    let mut inner_bytes = 0u64;
    let start = ESP_HEADER_LEN + iv_len;
    for (i, f) in frames[..n].iter_mut().enumerate() {
        if verdict[i].is_some() {
            continue;
        }
        let r = (|| {
            if !ok[i] {
                return Err(DropReason::BadIcv);
            }
            inb.verified += 1;
            // Authentic: now the window may move (never for forgeries).
            inb.replay.update(seqs[i])?;
            let len = f.len();
            let plain = &f.data()[start..len - icv_len];
            let t = EspTrailer::parse(plain).map_err(|_| DropReason::BadPadding)?;
            if !t.padding_ok(plain) {
                return Err(DropReason::BadPadding);
            }
            let inner_len = t.payload_len(plain.len());
            let want = match t.next_header {
                protocol::IPV4 => IpVersion::V4,
                protocol::IPV6 => IpVersion::V6,
                protocol::NO_NEXT_HEADER => return Err(DropReason::DummyPacket),
                _ => return Err(DropReason::BadNextHeader),
            };
            let inner = &plain[..inner_len];
            if IpVersion::of(inner).ok() != Some(want) {
                return Err(DropReason::BadNextHeader);
            }
            let key = flow_key(inner)?;
            if !crate::sa::allows(&sa.selector, sa.more.as_deref(), &key) {
                return Err(DropReason::PolicyMismatch);
            }
            f.trim_front(start);
            f.truncate(inner_len);
            Ok(inner_len)
        })();
        match r {
            Ok(len) => {
                delivered += 1;
                inner_bytes += len as u64;
            }
            Err(r) => verdict[i] = Some(r),
        }
    }
    for r in verdict[..n].iter().flatten() {
        count_drop(inb, *r);
    }
    // `delivered` is the decaps counter.
    sa.account(delivered, inner_bytes, events);
    partition(frames, &verdict[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_is_stable_both_ways() {
        let mut frames: Vec<Frame> = (0..6u8)
            .map(|i| {
                let mut f = Frame::new();
                f.set_data(&[i]);
                f
            })
            .collect();
        let v = [
            Some(DropReason::Replay),
            None,
            Some(DropReason::BadIcv),
            None,
            None,
            Some(DropReason::Truncated),
        ];
        let r = partition(&mut frames, &v);
        assert_eq!(r.good, 3);
        let order: Vec<u8> = frames.iter().map(|f| f.data()[0]).collect();
        assert_eq!(order, [1, 3, 4, 0, 2, 5]);
        assert_eq!(
            &r.dropped[..],
            &[
                DropReason::Replay,
                DropReason::BadIcv,
                DropReason::Truncated
            ]
        );
    }
}
