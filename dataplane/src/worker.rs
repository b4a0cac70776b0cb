//! The run-to-completion worker: one per core, owning its SA shard.
//!
//! The per-packet path reads top to bottom in [`Worker::poll`]:
//! rx burst → classify → encap/decap per SA group → tx burst. Control
//! messages, snapshots and IKE injection are handled between bursts. There
//! is no lock, allocation or syscall per packet here; the I/O backends batch
//! their syscalls per burst.
//!
//! Ownership: the inbound SA of SPI `s` lives on worker `s.shard()`; the
//! outbound SA of rule `r` on worker `r % workers` ([`outbound_owner`]),
//! unless the control plane negotiated per-worker SAs for the rule (RFC 9611
//! `SA_RESOURCE_INFO`): then worker `w` has its own outbound SA of the rule
//! and encrypts the rule's packets it receives itself, so one tunnel's
//! traffic spreads over the cores. A packet that arrives on a worker with
//! no SA for its rule is handed to the owner through a lock-free
//! `ArrayQueue` (counted `HandoffFull` when the queue is full).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;
use crossbeam::channel::{Receiver, Sender, TrySendError};
use crossbeam::queue::ArrayQueue;

use crate::acquire::{AcquireLimits, AcquireQueue, Enqueue};
use crate::api::{
    ControlMsg, DataplaneEvent, Direction, FlowKey, RuleId, SaCounters, Spi, Suite, TunnelEnds,
};
use crate::buf::{Burst, Frame, Pool, PortId, BURST_MAX};
use crate::error::{DropCounters, DropReason};
use crate::esp::{decap_burst, encap_burst, GroupResult};
use crate::io::{IoStats, PacketIo};
use crate::sa_table::SaTable;
use crate::spd::{HitCounters, Spd, Verdict};
use crate::wire::ip::protocol;
use crate::wire::{flow_key, IpVersion, Ipv4Packet, Ipv6Packet, UdpPacket};

/// IKE's ports (RFC 7296 §2, RFC 3948 §2.2).
const IKE_PORT: u16 = 500;
const NAT_T_PORT: u16 = 4500;

/// Frames marked with this port came from the LAN side.
pub const LAN: PortId = PortId(0);
/// Frames marked with this port came from the WAN side.
pub const WAN: PortId = PortId(1);

/// Rules whose packets one outbound burst gathers into separate runs.
const OPEN_RUNS: usize = 4;

pub use crate::api::outbound_owner;

/// Per-worker settings.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Worker index == the SPI shard it owns.
    pub id: u8,
    pub workers: u8,
    /// The crypto-map peer an Acquire names.
    pub peer: IpAddr,
    pub acquire: AcquireLimits,
    /// Frames in this worker's pool.
    pub pool_frames: usize,
    /// Sleep when a poll found nothing to do (0 = busy poll).
    pub idle_sleep: Duration,
}

/// Queues through which workers hand packets to the owner of their SA.
pub struct Handoff {
    lan: Vec<ArrayQueue<Frame>>,
    wan: Vec<ArrayQueue<Frame>>,
}

impl Handoff {
    pub fn new(workers: u8, depth: usize) -> Handoff {
        Handoff {
            lan: (0..workers).map(|_| ArrayQueue::new(depth)).collect(),
            wan: (0..workers).map(|_| ArrayQueue::new(depth)).collect(),
        }
    }
}

/// Requests answered between bursts (not on the packet path).
pub enum Query {
    Snapshot(Sender<WorkerSnapshot>),
}

/// One SA as `show crypto ipsec sa` needs it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SaSnapshot {
    pub spi: Spi,
    pub dir: Direction,
    pub rule: RuleId,
    pub child_id: u32,
    pub suite: Suite,
    pub tunnel: TunnelEnds,
    pub counters: SaCounters,
    /// Outbound: last sequence number sent. Inbound: highest received.
    pub seq: u64,
    pub replay_window: u32,
    /// Received sequence numbers among the last 64 (bit 0 = `seq`).
    pub replay_bits: u64,
    /// Remaining (kB, seconds) before the hard lifetime.
    pub remaining_kb: Option<u64>,
    pub remaining_secs: Option<u64>,
    pub overhead: usize,
}

/// Everything a worker counts, sent on request.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WorkerSnapshot {
    pub worker: u8,
    pub sas: Vec<SaSnapshot>,
    pub spd_version: u64,
    pub hits: Vec<u64>,
    pub drops: Vec<(String, u64)>,
    pub lan: IoCounters,
    pub wan: IoCounters,
    pub acquires: u64,
    pub events_lost: u64,
}

#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct IoCounters {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

impl From<IoStats> for IoCounters {
    fn from(s: IoStats) -> Self {
        IoCounters {
            rx_packets: s.rx_packets,
            tx_packets: s.tx_packets,
            rx_dropped: s.rx_dropped,
            tx_dropped: s.tx_dropped,
        }
    }
}

/// The channels a worker is wired with.
pub struct WorkerLinks {
    pub ctrl: Receiver<ControlMsg>,
    pub query: Receiver<Query>,
    pub events: Sender<DataplaneEvent>,
    /// IKE datagrams that arrived on the WAN port, as whole IP packets.
    pub punt: Sender<Vec<u8>>,
    /// IP packets (IKE) the control plane wants sent on the WAN port.
    pub inject: Receiver<Vec<u8>>,
    pub handoff: Arc<Handoff>,
}

/// What an outer packet from the WAN is.
enum WanKind {
    Esp(Spi),
    Ike,
    Clear,
}

/// The SPI of an ESP packet (in IP or in UDP 4500), IKE, or neither.
fn wan_kind(p: &[u8]) -> Result<WanKind, DropReason> {
    let (proto, payload) = match IpVersion::of(p)? {
        IpVersion::V4 => {
            let ip = Ipv4Packet::new_checked(p)?;
            (ip.protocol(), ip.payload())
        }
        IpVersion::V6 => {
            let ip = Ipv6Packet::new_checked(p)?;
            (ip.next_header(), ip.payload())
        }
    };
    let spi_at = |b: &[u8]| -> Result<Spi, DropReason> {
        let s: [u8; 4] = b
            .get(..4)
            .and_then(|s| s.try_into().ok())
            .ok_or(DropReason::Truncated)?;
        Ok(Spi(u32::from_be_bytes(s)))
    };
    match proto {
        protocol::ESP => Ok(WanKind::Esp(spi_at(payload)?)),
        protocol::UDP => {
            let udp = UdpPacket::new_checked(payload)?;
            match udp.dst_port() {
                IKE_PORT => Ok(WanKind::Ike),
                NAT_T_PORT => match spi_at(udp.payload()) {
                    // RFC 3948 §2.2: zero marker = IKE; one 0xff byte = keepalive.
                    Ok(Spi(0)) => Ok(WanKind::Ike),
                    Ok(spi) => Ok(WanKind::Esp(spi)),
                    Err(_) => Err(DropReason::Malformed),
                },
                _ => Ok(WanKind::Clear),
            }
        }
        _ => Ok(WanKind::Clear),
    }
}

/// Events raised while processing one burst; drained into the channel after.
type Events = ArrayVec<DataplaneEvent, { 2 * BURST_MAX }>;

pub struct Worker {
    cfg: WorkerConfig,
    pool: Pool,
    sas: SaTable,
    spd: Arc<Spd>,
    hits: HitCounters,
    acquire: AcquireQueue<Frame>,
    drops: DropCounters,
    lan: Box<dyn PacketIo>,
    wan: Box<dyn PacketIo>,
    links: WorkerLinks,
    events: Events,
    events_lost: u64,
    lan_tx: Burst,
    wan_tx: Burst,
    /// Outbound SAs waiting for their child's inbound SA (the SPI) to see
    /// a packet ([`ControlMsg::InstallSaAfterPeer`]); usually empty.
    awaiting_peer: Vec<(Spi, Box<crate::api::SaParams>)>,
}

impl Worker {
    pub fn new(
        cfg: WorkerConfig,
        pool: Pool,
        spd: Arc<Spd>,
        lan: Box<dyn PacketIo>,
        wan: Box<dyn PacketIo>,
        links: WorkerLinks,
    ) -> Worker {
        Worker {
            sas: SaTable::new(cfg.id),
            hits: HitCounters::new(&spd),
            acquire: AcquireQueue::new(cfg.acquire),
            spd,
            pool,
            drops: DropCounters::default(),
            lan,
            wan,
            links,
            events: Events::new(),
            events_lost: 0,
            lan_tx: Burst::new(),
            wan_tx: Burst::new(),
            awaiting_peer: Vec::new(),
            cfg,
        }
    }

    pub fn id(&self) -> u8 {
        self.cfg.id
    }

    pub fn idle_sleep(&self) -> Duration {
        self.cfg.idle_sleep
    }

    /// One round of the loop; returns how many packets it moved.
    pub fn poll(&mut self, now: Instant) -> usize {
        self.apply_control(now);
        let mut work = 0;

        let mut rx = Burst::new();
        if self.lan.rx_burst(&mut self.pool, &mut rx).is_err() {
            self.drops.count(DropReason::NoBuffer);
        }
        work += rx.len();
        self.outbound(&mut rx, now);
        // Packets other workers classified for a rule this worker owns.
        take_handoff(&self.links.handoff.lan[self.cfg.id as usize], &mut rx);
        work += rx.len();
        let mut verdicts = [Verdict::Drop; BURST_MAX];
        for (v, f) in verdicts.iter_mut().zip(rx.frames()) {
            *v = Verdict::Protect(RuleId(f.tag));
        }
        let n = rx.len();
        self.dispatch_outbound(&mut rx, &verdicts[..n], now);

        if self.wan.rx_burst(&mut self.pool, &mut rx).is_err() {
            self.drops.count(DropReason::NoBuffer);
        }
        take_handoff(&self.links.handoff.wan[self.cfg.id as usize], &mut rx);
        work += rx.len();
        self.inbound(&mut rx, now);

        work += self.inject();
        self.flush_tx();
        self.expire_acquires(now);
        self.flush_events();
        work
    }

    /// LAN → WAN: classify, then encrypt each run of packets that share a
    /// rule with that rule's SA.
    fn outbound(&mut self, rx: &mut Burst, now: Instant) {
        if rx.is_empty() {
            return;
        }
        let mut keys = [EMPTY_FLOW; BURST_MAX];
        let mut verdicts = [Verdict::Drop; BURST_MAX];
        let mut not_ip = Burst::new();
        let mut valid = 0;
        rx.retain_into(
            |f| match flow_key(f.data()) {
                Ok(k) => {
                    keys[valid] = k;
                    valid += 1;
                    true
                }
                Err(_) => false,
            },
            &mut not_ip,
        );
        for f in not_ip.drain() {
            self.drop_frame(f, DropReason::NotIp);
        }
        self.spd
            .classify_burst(&keys[..valid], &mut verdicts[..valid]);
        self.hits.record(&verdicts[..valid]);
        self.dispatch_outbound(rx, &verdicts[..valid], now);
    }

    /// Sends each classified packet its way: drop, clear, hand-off to the
    /// SA's owner, the acquire queue, or a run of packets for one SA.
    /// Packets of up to [`OPEN_RUNS`] rules interleaved in one burst are
    /// gathered per rule (order kept within a rule, so within an SA): each
    /// SA then encrypts one long run, which keeps the multi-buffer CBC lanes
    /// full, instead of many short ones.
    fn dispatch_outbound(&mut self, rx: &mut Burst, verdicts: &[Verdict], now: Instant) {
        let mut runs: [(Option<RuleId>, Burst); OPEN_RUNS] =
            std::array::from_fn(|_| (None, Burst::new()));
        for (mut f, verdict) in rx.drain().zip(verdicts.iter().copied()) {
            match verdict {
                Verdict::Drop => self.drop_frame(f, DropReason::PolicyDeny),
                Verdict::Bypass(_) => push_tx(&mut self.wan_tx, f, &mut *self.wan, &mut self.pool),
                Verdict::Protect(entry) => {
                    let rule = self.spd.sa_rule(entry);
                    // A per-worker SA of the rule (RFC 9611) encrypts here;
                    // without one the packet goes to the rule's owner, which
                    // has the rule's first SA or queues for it.
                    let local = self.sas.outbound_index(rule).is_some();
                    let owner = outbound_owner(rule, self.cfg.workers);
                    if !local && owner != self.cfg.id {
                        f.tag = rule.0;
                        self.hand_off(owner, LAN, f);
                    } else if !local {
                        self.queue_for_sa(rule, f, now);
                    } else {
                        let k = match runs.iter().position(|r| r.0 == Some(rule)) {
                            Some(k) => k,
                            None => {
                                // A free run, else send the fullest one now.
                                let k =
                                    runs.iter().position(|r| r.0.is_none()).unwrap_or_else(|| {
                                        (0..OPEN_RUNS).max_by_key(|&i| runs[i].1.len()).unwrap_or(0)
                                    });
                                let (r, run) = &mut runs[k];
                                self.flush_encap(run, *r, now);
                                *r = Some(rule);
                                k
                            }
                        };
                        let (r, run) = &mut runs[k];
                        if run.is_full() {
                            self.flush_encap(run, *r, now);
                        }
                        let _ = run.push(f);
                    }
                }
            }
        }
        for (r, run) in runs.iter_mut() {
            self.flush_encap(run, *r, now);
        }
    }

    fn flush_encap(&mut self, run: &mut Burst, rule: Option<RuleId>, now: Instant) {
        let Some(rule) = rule else { return };
        if run.is_empty() {
            return;
        }
        let Some(sa) = self.sas.outbound(rule) else {
            // Deleted between classification and now: count, never leak.
            for f in run.drain() {
                self.drops.count(DropReason::NoSa);
                self.pool.put(f);
            }
            return;
        };
        let res = encap_burst(sa, run.frames_mut(), now, &mut self.events);
        self.finish_group(run, &res, WAN);
    }

    /// Sends the good frames of a processed group on, drops the rest.
    fn finish_group(&mut self, run: &mut Burst, res: &GroupResult, to: PortId) {
        let processed = res.processed();
        for (i, f) in run.drain().enumerate() {
            if i < res.good {
                let (tx, io) = if to == WAN {
                    (&mut self.wan_tx, &mut *self.wan)
                } else {
                    (&mut self.lan_tx, &mut *self.lan)
                };
                push_tx(tx, f, io, &mut self.pool);
            } else if i < processed {
                self.drops.count(res.dropped[i - res.good]);
                self.pool.put(f);
            } else {
                // encap/decap look at BURST_MAX frames at most; runs never
                // exceed that, so this is unreachable — but never leak.
                self.drops.count(DropReason::NoBuffer);
                self.pool.put(f);
            }
        }
    }

    fn queue_for_sa(&mut self, rule: RuleId, f: Frame, now: Instant) {
        let peer = self.cfg.peer;
        let flow = flow_key(f.data()).ok();
        let len = f.len();
        match self.acquire.enqueue((rule, peer), f, len, now) {
            Enqueue::Queued { raise_acquire } => {
                if raise_acquire {
                    if let Some(flow) = flow {
                        self.event(DataplaneEvent::Acquire { rule, peer, flow });
                    }
                }
            }
            Enqueue::Dropped {
                frame,
                raise_acquire,
            } => {
                if raise_acquire {
                    if let Some(flow) = flow {
                        self.event(DataplaneEvent::Acquire { rule, peer, flow });
                    }
                }
                self.drop_frame(frame, DropReason::NoSa);
            }
        }
    }

    /// WAN → LAN: hand IKE to the control plane, decrypt each run of ESP
    /// packets that share an SPI, and police clear traffic.
    fn inbound(&mut self, rx: &mut Burst, now: Instant) {
        let mut run = Burst::new();
        let mut run_spi = None;
        for f in rx.drain() {
            match wan_kind(f.data()) {
                Err(why) => self.drop_frame(f, why),
                Ok(WanKind::Ike) => {
                    if self.links.punt.try_send(f.data().to_vec()).is_err() {
                        self.drops.count(DropReason::HandoffFull);
                    }
                    self.pool.put(f);
                }
                Ok(WanKind::Clear) => self.inbound_clear(f),
                Ok(WanKind::Esp(spi)) => {
                    let shard = spi.shard();
                    if shard != self.cfg.id {
                        if shard < self.cfg.workers {
                            self.hand_off(shard, WAN, f);
                        } else {
                            self.drop_frame(f, DropReason::UnknownSpi);
                        }
                        continue;
                    }
                    if run_spi != Some(spi) || run.is_full() {
                        self.flush_decap(&mut run, run_spi, now);
                        run_spi = Some(spi);
                    }
                    let _ = run.push(f);
                }
            }
        }
        self.flush_decap(&mut run, run_spi, now);
    }

    fn flush_decap(&mut self, run: &mut Burst, spi: Option<Spi>, now: Instant) {
        let Some(spi) = spi else { return };
        if run.is_empty() {
            return;
        }
        let Some(sa) = self.sas.inbound(spi) else {
            for f in run.drain() {
                self.drops.count(DropReason::UnknownSpi);
                self.pool.put(f);
            }
            return;
        };
        let res = decap_burst(sa, run.frames_mut(), now, &mut self.events);
        self.finish_group(run, &res, LAN);
        if res.good > 0 && !self.awaiting_peer.is_empty() {
            self.peer_proved(spi, now);
        }
    }

    /// The inbound SA `spi` decrypted a packet: the peer has the child's
    /// keys, so the outbound SA that waited for this goes into use.
    fn peer_proved(&mut self, spi: Spi, now: Instant) {
        while let Some(i) = self.awaiting_peer.iter().position(|(p, _)| *p == spi) {
            let (_, sa) = self.awaiting_peer.swap_remove(i);
            self.apply(ControlMsg::InstallSa(sa), now);
        }
    }

    /// Clear traffic from the WAN may only pass where a `deny` (bypass)
    /// line or a bypass default allows it; traffic a `permit` line covers
    /// must arrive encrypted.
    fn inbound_clear(&mut self, f: Frame) {
        let Ok(k) = flow_key(f.data()) else {
            return self.drop_frame(f, DropReason::NotIp);
        };
        // Rules are written local → remote; this packet goes remote → local.
        let reversed = FlowKey {
            src: k.dst,
            dst: k.src,
            proto: k.proto,
            src_port: k.dst_port,
            dst_port: k.src_port,
        };
        match self.spd.classify(&reversed) {
            Verdict::Bypass(_) => push_tx(&mut self.lan_tx, f, &mut *self.lan, &mut self.pool),
            Verdict::Protect(_) => self.drop_frame(f, DropReason::PolicyMismatch),
            Verdict::Drop => self.drop_frame(f, DropReason::PolicyDeny),
        }
    }

    fn hand_off(&mut self, owner: u8, from: PortId, f: Frame) {
        let q = if from == LAN {
            &self.links.handoff.lan
        } else {
            &self.links.handoff.wan
        };
        match q.get(owner as usize) {
            Some(q) => {
                if let Err(f) = q.push(f) {
                    self.drop_frame(f, DropReason::HandoffFull);
                }
            }
            None => self.drop_frame(f, DropReason::HandoffFull),
        }
    }

    /// IKE packets from the control plane go out on the WAN port.
    fn inject(&mut self) -> usize {
        let mut n = 0;
        while n < BURST_MAX {
            let Ok(pkt) = self.links.inject.try_recv() else {
                break;
            };
            n += 1;
            let Some(mut f) = self.pool.get() else {
                self.drops.count(DropReason::NoBuffer);
                continue;
            };
            if f.set_data(&pkt) {
                push_tx(&mut self.wan_tx, f, &mut *self.wan, &mut self.pool);
            } else {
                self.drop_frame(f, DropReason::Malformed);
            }
        }
        n
    }

    fn flush_tx(&mut self) {
        if !self.wan_tx.is_empty() {
            let _ = self.wan.tx_burst(&mut self.pool, &mut self.wan_tx);
            self.wan_tx.free_all(&mut self.pool);
        }
        if !self.lan_tx.is_empty() {
            let _ = self.lan.tx_burst(&mut self.pool, &mut self.lan_tx);
            self.lan_tx.free_all(&mut self.pool);
        }
    }

    fn expire_acquires(&mut self, now: Instant) {
        let pool = &mut self.pool;
        let drops = &mut self.drops;
        self.acquire.expire(now, |f| {
            drops.count(DropReason::NoSa);
            pool.put(f);
        });
    }

    fn drop_frame(&mut self, f: Frame, why: DropReason) {
        self.drops.count(why);
        self.pool.put(f);
    }

    fn event(&mut self, ev: DataplaneEvent) {
        if self.events.try_push(ev).is_err() {
            self.events_lost += 1;
        }
    }

    fn flush_events(&mut self) {
        for ev in self.events.drain(..) {
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                self.links.events.try_send(ev)
            {
                self.events_lost += 1;
            }
        }
    }

    /// Applies control messages and answers queries; never blocks.
    fn apply_control(&mut self, now: Instant) {
        for _ in 0..BURST_MAX {
            let Ok(msg) = self.links.ctrl.try_recv() else {
                break;
            };
            self.apply(msg, now);
        }
        while let Ok(Query::Snapshot(reply)) = self.links.query.try_recv() {
            let _ = reply.send(self.snapshot(now));
        }
    }

    pub fn apply(&mut self, msg: ControlMsg, now: Instant) {
        match msg {
            ControlMsg::InstallSa(p) => {
                let (spi, dir, rule, peer) = (p.spi, p.dir, p.rule, p.tunnel.remote);
                match self.sas.install(*p, now) {
                    Ok(_) if dir == Direction::Outbound => self.release_queued(rule, peer, now),
                    Ok(_) => {}
                    Err(e) => self.event(DataplaneEvent::InstallFailed {
                        spi,
                        err: e.to_string(),
                    }),
                }
            }
            ControlMsg::DeleteSa { spi, dir } => {
                self.sas.remove(spi, dir);
                // A child deleted before its peer proved it.
                self.awaiting_peer.retain(|(proof, sa)| match dir {
                    Direction::Inbound => *proof != spi,
                    Direction::Outbound => sa.spi != spi,
                });
            }
            ControlMsg::InstallSaAfterPeer { outbound, proof } => {
                self.awaiting_peer.push((proof, outbound));
            }
            ControlMsg::RekeySa { old, new } => {
                let (spi, rule, peer) = (new.spi, new.rule, new.tunnel.remote);
                match self.sas.rekey(old, *new, now) {
                    Ok(_) => self.release_queued(rule, peer, now),
                    Err(e) => self.event(DataplaneEvent::InstallFailed {
                        spi,
                        err: e.to_string(),
                    }),
                }
            }
            ControlMsg::UpdateSpd(spd) => {
                self.hits.follow(&spd);
                self.spd = spd;
            }
            ControlMsg::AcquireFailed { rule, peer } => {
                let pool = &mut self.pool;
                let drops = &mut self.drops;
                self.acquire.fail((rule, peer), |f| {
                    drops.count(DropReason::NoSa);
                    pool.put(f);
                });
            }
        }
    }

    /// The SA for `rule` is up: packets queued while it was negotiated go
    /// out first, in arrival order (the first ping is not lost).
    fn release_queued(&mut self, rule: RuleId, peer: IpAddr, now: Instant) {
        let key = (rule, peer);
        let mut run = Burst::new();
        loop {
            while !run.is_full() {
                match self.acquire.pop(key) {
                    Some(f) => {
                        let _ = run.push(f);
                    }
                    None => break,
                }
            }
            if run.is_empty() {
                break;
            }
            self.flush_encap(&mut run, Some(rule), now);
            self.flush_tx();
        }
        self.acquire.sa_installed(key);
    }

    pub fn snapshot(&self, now: Instant) -> WorkerSnapshot {
        let sas = self
            .sas
            .iter()
            .map(|sa| {
                let (kb, secs) = sa.remaining(now);
                SaSnapshot {
                    spi: sa.spi(),
                    dir: sa.dir(),
                    rule: sa.rule(),
                    child_id: sa.child_id(),
                    suite: sa.suite(),
                    tunnel: *sa.tunnel(),
                    counters: *sa.counters(),
                    seq: sa.seq(),
                    replay_window: sa.replay_window(),
                    replay_bits: sa.replay_bits(),
                    remaining_kb: kb,
                    remaining_secs: secs,
                    overhead: sa.max_overhead(),
                }
            })
            .collect();
        WorkerSnapshot {
            worker: self.cfg.id,
            sas,
            spd_version: self.spd.version(),
            hits: (0..self.spd.len() as u32)
                .map(|r| self.hits.get(RuleId(r)))
                .collect(),
            drops: DropReason::ALL
                .iter()
                .map(|r| (r.name().to_string(), self.drops.get(*r)))
                .collect(),
            lan: self.lan.stats().into(),
            wan: self.wan.stats().into(),
            acquires: self.acquire.stats().acquires,
            events_lost: self.events_lost,
        }
    }
}

const EMPTY_FLOW: FlowKey = FlowKey {
    src: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    dst: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    proto: 0,
    src_port: 0,
    dst_port: 0,
};

fn take_handoff(q: &ArrayQueue<Frame>, rx: &mut Burst) {
    while !rx.is_full() {
        let Some(f) = q.pop() else { break };
        let _ = rx.push(f);
    }
}

/// Adds `f` to a tx burst, sending the burst first if it is full.
fn push_tx(tx: &mut Burst, f: Frame, io: &mut dyn PacketIo, pool: &mut Pool) {
    if tx.is_full() {
        let _ = io.tx_burst(pool, tx);
        tx.free_all(pool);
    }
    if let Err(f) = tx.push(f) {
        pool.put(f);
    }
}
