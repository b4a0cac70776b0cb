//! One unidirectional ESP SA as the dataplane runs it.
//!
//! [`Sa`] = read-mostly constants (cipher, suite, SPI, tunnel ends, the
//! prebuilt outer header, selector, lifetime limits) followed by [`SaState`]
//! (sequence number, replay window, lifetime usage, counters), which every
//! burst writes. The two are separate structs so the hot written fields do
//! not share cache lines with the constants more than they must (DPDK
//! `rte_ipsec_sa` layout idea). Nothing here reads the clock: every input
//! carries `now`.

use std::net::IpAddr;
use std::time::Instant;

use arrayvec::ArrayVec;

use crate::api::{
    DataplaneEvent, Direction, ExpireReason, FlowKey, Lifetime, RuleId, SaCounters, SaParams,
    Selector, Spi, Suite, TunnelEnds,
};
use crate::crypto::SaCipher;
use crate::error::Error;
use crate::replay::ReplayWindow;
use crate::wire::{ip::protocol, ipv4, ipv6, udp, IpVersion, Ipv4Packet, Ipv4Repr, Ipv6Packet};
use crate::wire::{Ipv6Repr, UdpPacket, UdpRepr};

/// RFC 4303 §2: ESP header = SPI + sequence number.
pub const ESP_HEADER_LEN: usize = crate::wire::esp::HEADER_LEN;

/// TTL / hop limit of the outer header.
pub const OUTER_TTL: u8 = 64;

/// Where an SA's lifetime and expiry events go. Events are rare (at most one
/// soft and one hard per SA), so a trait call per event costs nothing on the
/// packet path; implementations must not block.
pub trait EventSink {
    fn event(&mut self, ev: DataplaneEvent);
}

/// A fixed-capacity sink the worker drains after every burst. Each SA group
/// raises at most two events per burst, so a capacity of 2 × the number of
/// groups per burst (≤ 128) never overflows; if it does, the event is lost
/// and [`EventSink`] users should size it so it cannot.
impl<const N: usize> EventSink for ArrayVec<DataplaneEvent, N> {
    fn event(&mut self, ev: DataplaneEvent) {
        let _ = self.try_push(ev);
    }
}

/// For tests and the control path.
impl EventSink for Vec<DataplaneEvent> {
    fn event(&mut self, ev: DataplaneEvent) {
        self.push(ev);
    }
}

/// The outer tunnel header (IPv4 or IPv6, optionally + UDP) built once at
/// install. Per packet only the lengths (and the IPv4 DF bit and checksum)
/// change; the IPv4 checksum is finished from a precomputed partial sum.
#[derive(Clone, Debug)]
pub struct OuterTemplate {
    bytes: [u8; ipv6::HEADER_LEN + udp::HEADER_LEN],
    len: u8,
    ip: IpVersion,
    udp: bool,
    /// One's complement sum of the IPv4 header with total length, flags and
    /// checksum zero.
    v4_partial: u32,
}

impl OuterTemplate {
    pub fn new(t: &TunnelEnds) -> Result<OuterTemplate, Error> {
        let mut bytes = [0u8; ipv6::HEADER_LEN + udp::HEADER_LEN];
        let (ip, ip_len) = match (t.local, t.remote) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let repr = Ipv4Repr {
                    src_addr: src,
                    dst_addr: dst,
                    protocol: if t.udp_encap.is_some() {
                        protocol::UDP
                    } else {
                        protocol::ESP
                    },
                    payload_len: 0,
                    ttl: OUTER_TTL,
                    dscp_ecn: 0,
                    dont_frag: false,
                };
                let mut p = Ipv4Packet::new_unchecked(&mut bytes[..ipv4::HEADER_LEN]);
                repr.emit(&mut p);
                p.set_total_len(0);
                p.set_checksum(0);
                (IpVersion::V4, ipv4::HEADER_LEN)
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let repr = Ipv6Repr {
                    src_addr: src,
                    dst_addr: dst,
                    next_header: if t.udp_encap.is_some() {
                        protocol::UDP
                    } else {
                        protocol::ESP
                    },
                    payload_len: 0,
                    hop_limit: OUTER_TTL,
                    traffic_class: 0,
                    flow_label: 0,
                };
                repr.emit(&mut Ipv6Packet::new_unchecked(
                    &mut bytes[..ipv6::HEADER_LEN],
                ));
                (IpVersion::V6, ipv6::HEADER_LEN)
            }
            (local, remote) => return Err(Error::MixedTunnelFamilies { local, remote }),
        };
        let mut len = ip_len;
        if let Some((sport, dport)) = t.udp_encap {
            UdpRepr {
                src_port: sport,
                dst_port: dport,
                payload_len: 0,
            }
            .emit(&mut UdpPacket::new_unchecked(
                &mut bytes[ip_len..ip_len + udp::HEADER_LEN],
            ));
            len += udp::HEADER_LEN;
        }
        let v4_partial = if ip == IpVersion::V4 {
            crate::wire::ones_complement_sum(&bytes[..ipv4::HEADER_LEN])
        } else {
            0
        };
        Ok(OuterTemplate {
            bytes,
            len: len as u8,
            ip,
            udp: t.udp_encap.is_some(),
            v4_partial,
        })
    }

    /// Bytes the outer header takes (20, 28, 40 or 48).
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn ip_version(&self) -> IpVersion {
        self.ip
    }

    pub fn udp_encap(&self) -> bool {
        self.udp
    }

    /// Writes the outer header into `out[..self.len()]`, where `out` is the
    /// whole outer packet (header + ESP). `dont_frag` and `ident` apply to
    /// IPv4 only; `ident` must vary between packets that may be fragmented
    /// (RFC 6864 §4.1), so encap passes the low 16 bits of the ESP sequence
    /// number.
    #[inline]
    pub fn emit(&self, out: &mut [u8], dont_frag: bool, ident: u16) {
        let n = self.len();
        let total = out.len();
        out[..n].copy_from_slice(&self.bytes[..n]);
        let ip_len = match self.ip {
            IpVersion::V4 => {
                let flags: u16 = if dont_frag { 0x4000 } else { 0 };
                out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
                out[4..6].copy_from_slice(&ident.to_be_bytes());
                out[6..8].copy_from_slice(&flags.to_be_bytes());
                let sum =
                    self.v4_partial + u32::from(total as u16) + u32::from(ident) + u32::from(flags);
                let c = crate::wire::fold_checksum(sum);
                out[10..12].copy_from_slice(&c.to_be_bytes());
                ipv4::HEADER_LEN
            }
            IpVersion::V6 => {
                let pl = (total - ipv6::HEADER_LEN) as u16;
                out[4..6].copy_from_slice(&pl.to_be_bytes());
                ipv6::HEADER_LEN
            }
        };
        if self.udp {
            let ulen = (total - ip_len) as u16;
            out[ip_len + 4..ip_len + 6].copy_from_slice(&ulen.to_be_bytes());
            if self.ip == IpVersion::V6 {
                // RFC 8200 §8.1: a zero UDP checksum is not allowed over IPv6.
                let c = udp_v6_checksum(out);
                out[ip_len + 6..ip_len + 8].copy_from_slice(&c.to_be_bytes());
            }
            // IPv4: RFC 3948 §2.1 — the checksum is sent as zero.
        }
    }
}

/// Bytes of the outer header of a tunnel (what [`OuterTemplate::len`] would
/// be), without building it.
fn outer_len(t: &TunnelEnds) -> usize {
    let ip = if t.local.is_ipv4() {
        ipv4::HEADER_LEN
    } else {
        ipv6::HEADER_LEN
    };
    ip + if t.udp_encap.is_some() {
        udp::HEADER_LEN
    } else {
        0
    }
}

/// UDP checksum over IPv6 (RFC 8200 §8.1) of `pkt` = IPv6 header + UDP
/// datagram whose checksum field is zero.
fn udp_v6_checksum(pkt: &[u8]) -> u16 {
    let udp = &pkt[ipv6::HEADER_LEN..];
    let mut sum = crate::wire::ones_complement_sum(&pkt[8..40]); // src + dst
    sum += udp.len() as u32;
    sum += u32::from(protocol::UDP);
    // Sum in chunks so that the u32 accumulator cannot overflow.
    for chunk in udp.chunks(1 << 16) {
        sum = (sum & 0xffff) + (sum >> 16) + crate::wire::ones_complement_sum(chunk);
    }
    match crate::wire::fold_checksum(sum) {
        0 => 0xffff,
        c => c,
    }
}

/// What only an inbound SA has: the replay window and the counters of what
/// decap checks. `verified` counts packets whose ICV was good (the public
/// `decrypt` and `verify`, always equal); the delivered packets are
/// [`SaState::packets`] (`decaps`).
#[derive(Debug)]
pub(crate) struct Inbound {
    pub(crate) replay: ReplayWindow,
    pub(crate) verified: u64,
    // Anyone who can send to the gateway can make these grow (they are
    // counted before the ICV check), so they stay 64-bit.
    pub(crate) replay_drops: u64,
    pub(crate) auth_fail: u64,
    pub(crate) truncated: u64,
    pub(crate) recv_errors: u64,
    // Only the peer, after a good ICV, can make these grow: 2^32 of them on
    // one SA is a broken peer, so they saturate.
    pub(crate) bad_padding: u32,
    pub(crate) bad_next_header: u32,
    pub(crate) policy_mismatch: u32,
}

/// What only an outbound SA has. Every packet sent is encapsulated,
/// encrypted and digested once, so [`SaState::packets`] is all three
/// counters.
#[derive(Debug)]
pub(crate) struct Outbound {
    /// Next sequence number to send (starts at 1, RFC 4303 §3.3.3).
    pub(crate) next_seq: u64,
    pub(crate) outer: OuterTemplate,
}

#[derive(Debug)]
pub(crate) enum Way {
    In(Inbound),
    Out(Outbound),
}

/// What a burst changes: sequence numbers, the replay window, lifetime
/// usage, counters.
#[derive(Debug)]
pub struct SaState {
    /// Inner bytes and packets carried: lifetime usage and the `bytes` and
    /// `encaps`/`decaps` counters at once.
    bytes: u64,
    packets: u64,
    started: Instant,
    soft_raised: bool,
    hard_expired: bool,
    pub(crate) way: Way,
}

/// [`SaCounters`] rebuilt from an SA's compact counters. Derefs to the
/// public type, so `*sa.counters()` reads like a field.
#[derive(Clone, Copy, Debug)]
pub struct Counters(SaCounters);

impl std::ops::Deref for Counters {
    type Target = SaCounters;
    fn deref(&self) -> &SaCounters {
        &self.0
    }
}

/// One ESP SA: constants then state. See the module doc.
pub struct Sa {
    pub(crate) cipher: SaCipher,
    spi: Spi,
    esn: bool,
    /// A combined child SA's further selectors; `None` (no allocation, one
    /// word: a thin box) for the usual one-entry SA.
    // A thin box (8 B) instead of a `Vec` (24 B) in every SA: combined SAs
    // are rare and the table holds up to a million SAs.
    #[allow(clippy::box_collection)]
    pub(crate) more: Option<Box<Vec<Selector>>>,
    rule: RuleId,
    child_id: u32,
    lifetime: Lifetime,
    tunnel: TunnelEnds,
    pub(crate) selector: Selector,
    pub(crate) state: SaState,
}

impl std::fmt::Debug for Sa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sa")
            .field("spi", &self.spi)
            .field("dir", &self.dir())
            .field("suite", &self.suite())
            .field("esn", &self.esn)
            .field("tunnel", &self.tunnel)
            .field("rule", &self.rule)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Sa {
    /// Builds the SA. `params` is consumed: its keys are zeroized when it
    /// drops at the end of this call, and the expanded keys live only in
    /// the [`SaCipher`], which zeroizes them on drop.
    pub fn new(params: SaParams, now: Instant) -> Result<Sa, Error> {
        let suite = params.suite;
        let cipher = SaCipher::new(suite, params.dir, &params.keys)
            .map_err(|e| Error::Crypto(e.to_string()))?;
        // Mixed families are an error in both directions, not only where
        // the template is built.
        if params.tunnel.local.is_ipv4() != params.tunnel.remote.is_ipv4() {
            return Err(Error::MixedTunnelFamilies {
                local: params.tunnel.local,
                remote: params.tunnel.remote,
            });
        }
        let way = match params.dir {
            Direction::Inbound => Way::In(Inbound {
                replay: ReplayWindow::new(params.replay_window)?,
                verified: 0,
                replay_drops: 0,
                auth_fail: 0,
                truncated: 0,
                recv_errors: 0,
                bad_padding: 0,
                bad_next_header: 0,
                policy_mismatch: 0,
            }),
            Direction::Outbound => Way::Out(Outbound {
                next_seq: 1,
                outer: OuterTemplate::new(&params.tunnel)?,
            }),
        };
        Ok(Sa {
            cipher,
            spi: params.spi,
            esn: params.esn,
            more: (!params.more_selectors.is_empty()).then(|| Box::new(params.more_selectors)),
            rule: params.rule,
            child_id: params.child_id,
            lifetime: params.lifetime,
            tunnel: params.tunnel,
            selector: params.selector,
            state: SaState {
                bytes: 0,
                packets: 0,
                started: now,
                soft_raised: false,
                hard_expired: false,
                way,
            },
        })
    }

    pub fn spi(&self) -> Spi {
        self.spi
    }
    pub fn dir(&self) -> Direction {
        match self.state.way {
            Way::In(_) => Direction::Inbound,
            Way::Out(_) => Direction::Outbound,
        }
    }
    pub fn suite(&self) -> Suite {
        self.cipher.suite()
    }
    pub fn esn(&self) -> bool {
        self.esn
    }
    pub fn tunnel(&self) -> &TunnelEnds {
        &self.tunnel
    }
    pub fn selector(&self) -> &Selector {
        &self.selector
    }
    pub fn rule(&self) -> RuleId {
        self.rule
    }
    pub fn child_id(&self) -> u32 {
        self.child_id
    }
    pub fn lifetime(&self) -> &Lifetime {
        &self.lifetime
    }
    /// The public counters, rebuilt from the compact ones.
    pub fn counters(&self) -> Counters {
        let st = &self.state;
        let mut c = SaCounters {
            bytes: st.bytes,
            ..SaCounters::default()
        };
        match &st.way {
            Way::Out(_) => {
                c.encaps = st.packets;
                c.encrypt = st.packets;
                c.digest = st.packets;
            }
            Way::In(i) => {
                c.decaps = st.packets;
                c.decrypt = i.verified;
                c.verify = i.verified;
                c.replay = i.replay_drops;
                c.auth_fail = i.auth_fail;
                c.truncated = i.truncated;
                c.recv_errors = i.recv_errors;
                c.bad_padding = u64::from(i.bad_padding);
                c.bad_next_header = u64::from(i.bad_next_header);
                c.policy_mismatch = u64::from(i.policy_mismatch);
            }
        }
        Counters(c)
    }
    /// The outer header template (outbound SAs only).
    pub fn outer(&self) -> Option<&OuterTemplate> {
        match &self.state.way {
            Way::Out(o) => Some(&o.outer),
            Way::In(_) => None,
        }
    }
    /// Replay window size in packets (0 = off; always 0 outbound).
    pub fn replay_window(&self) -> u32 {
        match &self.state.way {
            Way::In(i) => i.replay.size(),
            Way::Out(_) => 0,
        }
    }
    /// Outbound: the next sequence number to be sent. Inbound: the highest
    /// authenticated one.
    pub fn seq(&self) -> u64 {
        match &self.state.way {
            Way::Out(o) => o.next_seq,
            Way::In(i) => i.replay.last(),
        }
    }
    /// Inbound: which of the 64 sequence numbers up to [`seq`](Self::seq)
    /// were received, bit 0 = `seq` itself (what `show crypto ipsec sa`
    /// prints as the anti-replay bitmap). Outbound or no window: 0.
    pub fn replay_bits(&self) -> u64 {
        let Way::In(i) = &self.state.way else {
            return 0;
        };
        if i.replay.size() == 0 {
            return 0;
        }
        let last = i.replay.last();
        (0..64u64)
            .take_while(|&b| b < last)
            .filter(|&b| i.replay.check(last - b).is_err())
            .fold(0, |bits, b| bits | 1 << b)
    }
    /// Bytes and packets carried so far (inner packet bytes).
    pub fn usage(&self) -> (u64, u64) {
        (self.state.bytes, self.state.packets)
    }
    pub fn started(&self) -> Instant {
        self.state.started
    }
    /// Once true, every packet of this SA is dropped with `HardExpired`.
    pub fn is_hard_expired(&self) -> bool {
        self.state.hard_expired
    }
    /// Remaining lifetime for `show`: (kB, seconds), `None` if unlimited.
    pub fn remaining(&self, now: Instant) -> (Option<u64>, Option<u64>) {
        let kb = (self.lifetime.hard_bytes != u64::MAX)
            .then(|| self.lifetime.hard_bytes.saturating_sub(self.state.bytes) / 1024);
        let secs = (self.lifetime.hard_secs != u64::MAX).then(|| {
            let used = now.saturating_duration_since(self.state.started).as_secs();
            self.lifetime.hard_secs.saturating_sub(used)
        });
        (kb, secs)
    }
    /// Most bytes ESP adds to an inner packet on this SA: outer header, ESP
    /// header, IV, worst-case padding, trailer, ICV (`show`'s "ESP overhead").
    pub fn max_overhead(&self) -> usize {
        let suite = self.suite();
        // An inbound SA's packets arrive under the peer's outer header,
        // which has the same shape as ours would.
        let outer = match self.outer() {
            Some(o) => o.len(),
            None => outer_len(&self.tunnel),
        };
        outer + ESP_HEADER_LEN + suite.iv_len() + suite.block_len() - 1
            + crate::wire::esp::TRAILER_LEN
            + suite.icv_len()
    }
    /// Bytes of heap this SA owns beyond `size_of::<Sa>()`: the key set
    /// and, for replay windows above 64, the bitmap.
    pub fn heap_bytes(&self) -> usize {
        let replay = match &self.state.way {
            Way::In(i) => i.replay.heap_bytes(),
            Way::Out(_) => 0,
        };
        let more = self.more.as_ref().map_or(0, |v| {
            std::mem::size_of::<Vec<Selector>>() + v.capacity() * std::mem::size_of::<Selector>()
        });
        self.cipher.heap_bytes() + replay + more
    }

    /// Largest outbound sequence number: 2^32 − 1 without ESN (RFC 4303
    /// §3.3.3: never cycle; the SA must be rekeyed first). With ESN we stop
    /// one short of 2^64 − 1 so that "next" always fits in a u64.
    fn seq_limit(&self) -> u64 {
        if self.esn {
            u64::MAX - 1
        } else {
            u64::from(u32::MAX)
        }
    }

    /// Reserves up to `n` consecutive sequence numbers in one step (DPDK
    /// `esn_outb_update_sqn`), fewer when the space runs out. Returns the
    /// first number and how many were granted. Using up the space raises
    /// `HardExpire(SeqExhausted)` once; later calls grant nothing.
    /// Inbound SAs grant nothing (a caller bug).
    pub(crate) fn reserve_seq(&mut self, n: usize, events: &mut dyn EventSink) -> (u64, usize) {
        let limit = self.seq_limit();
        let Way::Out(o) = &mut self.state.way else {
            return (0, 0);
        };
        let first = o.next_seq;
        let left = (limit + 1).saturating_sub(first);
        let granted = (n as u64).min(left);
        o.next_seq = first + granted;
        if o.next_seq > limit {
            self.hard_expire(ExpireReason::SeqExhausted, events);
        }
        (first, granted as usize)
    }

    /// Sets the next outbound sequence number (tests and benches that start
    /// near the end of the space). No effect on an inbound SA.
    #[doc(hidden)]
    pub fn set_next_seq(&mut self, seq: u64) {
        if let Way::Out(o) = &mut self.state.way {
            o.next_seq = seq;
        }
    }

    /// Packets this SA may still carry before its hard packet limit.
    pub(crate) fn packets_left(&self) -> u64 {
        self.lifetime
            .hard_packets
            .saturating_sub(self.state.packets)
    }

    fn hard_expire(&mut self, why: ExpireReason, events: &mut dyn EventSink) {
        if !self.state.hard_expired {
            self.state.hard_expired = true;
            events.event(DataplaneEvent::HardExpire {
                spi: self.spi,
                dir: self.dir(),
                why,
            });
        }
    }

    fn soft_expire(&mut self, why: ExpireReason, events: &mut dyn EventSink) {
        if !self.state.soft_raised && !self.state.hard_expired {
            self.state.soft_raised = true;
            events.event(DataplaneEvent::SoftExpire {
                spi: self.spi,
                dir: self.dir(),
                why,
            });
        }
    }

    /// Checks the time limits at the start of a burst. Returns false when the
    /// SA is hard-expired (its packets must be dropped).
    pub fn check_time(&mut self, now: Instant, events: &mut dyn EventSink) -> bool {
        if self.state.hard_expired {
            return false;
        }
        let age = now.saturating_duration_since(self.state.started).as_secs();
        if age >= self.lifetime.hard_secs {
            self.hard_expire(ExpireReason::Time, events);
            return false;
        }
        if age >= self.lifetime.soft_secs {
            self.soft_expire(ExpireReason::Time, events);
        }
        true
    }

    /// Adds a burst's usage and raises soft/hard events for the byte and
    /// packet limits. Byte limits are enforced per burst (the burst that
    /// crosses one still goes out); the packet limit is exact because
    /// encap/decap take no more than [`packets_left`](Self::packets_left).
    pub(crate) fn account(&mut self, packets: u64, bytes: u64, events: &mut dyn EventSink) {
        self.state.packets += packets;
        self.state.bytes += bytes;
        let (p, b, l) = (self.state.packets, self.state.bytes, self.lifetime);
        if b >= l.hard_bytes {
            self.hard_expire(ExpireReason::Bytes, events);
        } else if p >= l.hard_packets {
            self.hard_expire(ExpireReason::Packets, events);
        } else if b >= l.soft_bytes {
            self.soft_expire(ExpireReason::Bytes, events);
        } else if p >= l.soft_packets {
            self.soft_expire(ExpireReason::Packets, events);
        }
    }
}

/// The inbound policy check on an SA's fields, for callers that hold its
/// state mutably: `flow` matches the selector or one of a combined SA's.
#[inline]
pub(crate) fn allows(selector: &Selector, more: Option<&Vec<Selector>>, flow: &FlowKey) -> bool {
    selector.matches(flow) || more.is_some_and(|m| m.iter().any(|s| s.matches(flow)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SaKeys;

    pub(crate) fn params(dir: Direction, esn: bool) -> SaParams {
        SaParams {
            spi: Spi::new(0, 1, 5),
            dir,
            suite: Suite::Aes256Gcm16,
            keys: SaKeys {
                encr: vec![7; 36],
                integ: vec![],
            },
            tunnel: TunnelEnds {
                local: "10.255.1.2".parse().unwrap(),
                remote: "10.255.2.2".parse().unwrap(),
                udp_encap: None,
            },
            selector: Selector::between(
                "192.168.100.0/24".parse().unwrap(),
                "172.16.10.0/24".parse().unwrap(),
            ),
            esn,
            replay_window: 64,
            lifetime: Lifetime::UNLIMITED,
            rule: RuleId(1),
            child_id: 1,
            resource: None,
            more_selectors: Vec::new(),
        }
    }

    #[test]
    fn seq_reservation_stops_at_32_bits_without_esn() {
        let mut sa = Sa::new(params(Direction::Outbound, false), Instant::now()).unwrap();
        let mut ev = Vec::new();
        assert_eq!(sa.reserve_seq(3, &mut ev), (1, 3));
        sa.set_next_seq(u64::from(u32::MAX) - 1);
        assert_eq!(sa.reserve_seq(5, &mut ev), (u64::from(u32::MAX) - 1, 2));
        assert_eq!(ev.len(), 1);
        assert!(matches!(
            ev[0],
            DataplaneEvent::HardExpire {
                why: ExpireReason::SeqExhausted,
                ..
            }
        ));
        assert_eq!(sa.reserve_seq(1, &mut ev).1, 0);
        assert_eq!(ev.len(), 1, "raised once");
        assert!(sa.is_hard_expired());
    }

    #[test]
    fn seq_reservation_with_esn_crosses_2_32() {
        let mut sa = Sa::new(params(Direction::Outbound, true), Instant::now()).unwrap();
        let mut ev = Vec::new();
        sa.set_next_seq(u64::from(u32::MAX));
        assert_eq!(sa.reserve_seq(4, &mut ev), (u64::from(u32::MAX), 4));
        assert!(ev.is_empty());
        sa.set_next_seq(u64::MAX - 2);
        assert_eq!(
            sa.reserve_seq(8, &mut ev).1,
            2,
            "never reaches u64::MAX + wrap"
        );
        assert_eq!(sa.reserve_seq(1, &mut ev).1, 0);
        assert_eq!(ev.len(), 1);
    }

    #[test]
    fn lifetimes_raise_soft_once_then_hard() {
        let now = Instant::now();
        let mut p = params(Direction::Outbound, false);
        p.lifetime = Lifetime {
            soft_bytes: 1000,
            hard_bytes: 2000,
            soft_secs: 10,
            hard_secs: 20,
            ..Lifetime::UNLIMITED
        };
        let mut sa = Sa::new(p, now).unwrap();
        let mut ev = Vec::new();
        sa.account(1, 999, &mut ev);
        assert!(ev.is_empty());
        sa.account(1, 1, &mut ev);
        sa.account(1, 1, &mut ev);
        assert_eq!(ev.len(), 1);
        assert!(matches!(
            ev[0],
            DataplaneEvent::SoftExpire {
                why: ExpireReason::Bytes,
                ..
            }
        ));
        assert!(sa.check_time(now + std::time::Duration::from_secs(15), &mut ev));
        assert_eq!(ev.len(), 1, "soft already raised");
        assert!(!sa.check_time(now + std::time::Duration::from_secs(20), &mut ev));
        assert!(matches!(
            ev[1],
            DataplaneEvent::HardExpire {
                why: ExpireReason::Time,
                ..
            }
        ));
        sa.account(1, 5000, &mut ev);
        assert_eq!(ev.len(), 2, "hard raised once");
    }

    #[test]
    fn outer_template_v4_checksum_is_valid() {
        let mut t = params(Direction::Outbound, false).tunnel;
        for udp_encap in [None, Some((4500, 4500))] {
            t.udp_encap = udp_encap;
            let tpl = OuterTemplate::new(&t).unwrap();
            let mut pkt = [0xabu8; 100];
            tpl.emit(&mut pkt, true, 0xbeef);
            let p = Ipv4Packet::new_checked(&pkt[..]).unwrap();
            let r = Ipv4Repr::parse(&p).unwrap();
            assert!(r.dont_frag);
            assert_eq!(p.ident(), 0xbeef);
            assert_eq!(r.payload_len, 80);
            assert_eq!(r.ttl, OUTER_TTL);
            if udp_encap.is_some() {
                let u = UdpPacket::new_checked(p.payload()).unwrap();
                assert_eq!((u.src_port(), u.len(), u.checksum()), (4500, 80, 0));
            } else {
                assert_eq!(r.protocol, protocol::ESP);
            }
        }
    }

    #[test]
    fn outer_template_v6_udp_checksum_verifies() {
        let t = TunnelEnds {
            local: "fd00:1::2".parse().unwrap(),
            remote: "fd00:2::2".parse().unwrap(),
            udp_encap: Some((4500, 4500)),
        };
        let tpl = OuterTemplate::new(&t).unwrap();
        assert_eq!(tpl.len(), 48);
        let mut pkt = [0x5au8; 101];
        tpl.emit(&mut pkt, false, 0);
        // A receiver's sum over pseudo-header + datagram must fold to 0.
        let udp = &pkt[40..];
        let mut sum = crate::wire::ones_complement_sum(&pkt[8..40]);
        sum += udp.len() as u32 + 17 + crate::wire::ones_complement_sum(udp);
        assert_eq!(crate::wire::fold_checksum(sum), 0);
        let mixed = TunnelEnds {
            local: "10.0.0.1".parse().unwrap(),
            ..t
        };
        assert!(OuterTemplate::new(&mixed).is_err());
    }
}
