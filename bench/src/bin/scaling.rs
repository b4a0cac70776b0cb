//! In-memory scaling bench (issue 7 item 2): the full worker pipeline on
//! `mem` rings with 1 and 2 workers, one and two tunnels; and the SA table
//! at 1, 10k and 1M installed SAs (throughput ratio, memory per SA).
//!
//! Pipeline design, for a 2-core machine: a generator and a sink thread
//! running beside 2 pinned workers would steal their cores, so the stages
//! run store-and-forward and nothing else is busy while one is timed:
//!
//! 1. the generator pre-fills Site1's LAN rings (gates closed: the workers'
//!    ports report nothing to receive), untimed;
//! 2. Site1's gate opens; its workers (cores 0 and 1) classify, hand off and
//!    encrypt into WAN rings large enough to hold every packet; timed from
//!    the first packet a worker receives to the last one it sends;
//! 3. Site2's gate opens; its workers decrypt into LAN rings, timed alike;
//! 4. the sink drains and checks Site2's LAN rings, untimed.
//!
//! Each site thus has both cores to itself, as two gateways on their own
//! boxes would, and the delivered rate of the pipeline is the slower
//! stage's. Idle workers of the other site sleep (`idle_sleep` 50 µs).
//!
//! Args: `[--quick] [--packets N] [--rounds R] [--sas 1,10000,1000000]
//! [--skip-pipeline] [--skip-sa] [--secs S] [--sa-size 64]`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use espgate_dataplane::acquire::AcquireLimits;
use espgate_dataplane::api::{
    ControlMsg, DataplaneEvent, Direction, Lifetime, RuleId, SaKeys, SaParams, Selector, Spi,
    SpiAllocator, Suite, TunnelEnds,
};
use espgate_dataplane::buf::{Burst, Frame, Pool};
use espgate_dataplane::esp::{decap_burst, encap_burst};
use espgate_dataplane::io::mem::{MemHost, MemLink, MemPort, MemStatsHandle};
use espgate_dataplane::io::{IoError, IoStats, PacketIo};
use espgate_dataplane::runtime::{Dataplane, WorkerSpec};
use espgate_dataplane::sa::Sa;
use espgate_dataplane::sa_table::SaTable;
use espgate_dataplane::spd::{acl, DefaultAction, Spd};
use espgate_dataplane::worker::WorkerConfig;

const SIZES: [usize; 2] = [64, 1400];
const SUITE: Suite = Suite::Aes256CbcHmacSha256;

/// Two crypto-ACL lines = two tunnels (rule 0: YELLOW, rule 1: BLUE).
const SITE1_ACL: &str = "\
access-list s2svpn_to_site2 extended permit ip 192.168.100.0 255.255.255.0 172.16.10.0 255.255.255.0
access-list s2svpn_to_site2 extended permit ip 192.168.200.0 255.255.255.0 172.16.10.0 255.255.255.0
";
const SITE2_ACL: &str = "\
access-list s2svpn_to_site1 extended permit ip 172.16.10.0 255.255.255.0 192.168.100.0 255.255.255.0
access-list s2svpn_to_site1 extended permit ip 172.16.10.0 255.255.255.0 192.168.200.0 255.255.255.0
";

/// Counts live heap bytes, so memory per SA is measured exactly (RSS is
/// muddied by memory the allocator keeps from earlier runs). One relaxed
/// atomic add per allocation; the packet path does not allocate.
struct Counting;

static LIVE: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to `System` unchanged and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as u64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as u64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as u64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as u64, Ordering::Relaxed);
        LIVE.fetch_sub(l.size() as u64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn heap_live() -> u64 {
    LIVE.load(Ordering::Relaxed)
}

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Resident set size of this process in bytes (Linux `/proc/self/statm`).
fn rss_bytes() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(1) as usize
}

/// IPv4/UDP packet of `total` bytes from `src`:`sport` to 172.16.10.11:9.
fn udp_packet(src: Ipv4Addr, sport: u16, total: usize) -> Vec<u8> {
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&Ipv4Addr::new(172, 16, 10, 11).octets());
    let mut sum = 0u32;
    for c in p[..20].chunks(2) {
        sum += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&9u16.to_be_bytes());
    p[24..26].copy_from_slice(&((total - 20) as u16).to_be_bytes());
    p
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn sa_params(spi: Spi, dir: Direction, rule: u32, src_net: &str) -> SaParams {
    let (local, remote) = match dir {
        Direction::Outbound => ("10.255.1.2", "10.255.2.2"),
        Direction::Inbound => ("10.255.2.2", "10.255.1.2"),
    };
    SaParams {
        spi,
        dir,
        suite: SUITE,
        keys: SaKeys {
            encr: vec![rule as u8 + 1; 32],
            integ: vec![rule as u8 + 7; 32],
        },
        tunnel: TunnelEnds {
            local: ip(local),
            remote: ip(remote),
            udp_encap: None,
        },
        selector: Selector::between(
            src_net
                .parse()
                .unwrap_or_else(|_| "0.0.0.0/0".parse().unwrap_or_default()),
            "172.16.10.0/24".parse().unwrap_or_default(),
        ),
        esn: false,
        replay_window: 64,
        lifetime: Lifetime::UNLIMITED,
        rule: RuleId(rule),
        child_id: rule + 1,
        resource: None,
        more_selectors: Vec::new(),
    }
}

// ---------------------------------------------------------------- pipeline

/// Timestamps and counts one port keeps for the bench (ns since `base`,
/// 0 = not yet).
#[derive(Default)]
struct PortClock {
    first_rx: AtomicU64,
    last_tx: AtomicU64,
    tx: AtomicU64,
}

impl PortClock {
    fn reset(&self) {
        self.first_rx.store(0, Ordering::Relaxed);
        self.last_tx.store(0, Ordering::Relaxed);
        self.tx.store(0, Ordering::Relaxed);
    }
}

/// A mem port behind a gate: receives nothing while the gate is closed,
/// and notes when its worker first received and last sent. One clock read
/// per burst, not per packet.
struct GatedPort {
    inner: MemPort,
    gate: Arc<AtomicBool>,
    clock: Arc<PortClock>,
    base: Instant,
}

impl GatedPort {
    fn ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64 + 1
    }
}

impl PacketIo for GatedPort {
    fn rx_burst(&mut self, pool: &mut Pool, burst: &mut Burst) -> Result<usize, IoError> {
        if !self.gate.load(Ordering::Acquire) {
            return Ok(0);
        }
        let n = self.inner.rx_burst(pool, burst)?;
        if n > 0 && self.clock.first_rx.load(Ordering::Relaxed) == 0 {
            self.clock.first_rx.store(self.ns(), Ordering::Relaxed);
        }
        Ok(n)
    }

    fn tx_burst(&mut self, pool: &mut Pool, burst: &mut Burst) -> Result<usize, IoError> {
        let n = self.inner.tx_burst(pool, burst)?;
        if n > 0 {
            self.clock.tx.fetch_add(n as u64, Ordering::Relaxed);
            self.clock.last_tx.store(self.ns(), Ordering::Relaxed);
        }
        Ok(n)
    }

    fn stats(&self) -> IoStats {
        self.inner.stats()
    }
}

struct Site {
    dp: Dataplane,
    gate: Arc<AtomicBool>,
    /// The outside ends of the LAN ports (generator or sink).
    hosts: Vec<MemHost>,
    lan_clock: Vec<Arc<PortClock>>,
    wan_clock: Vec<Arc<PortClock>>,
    lan_stats: Vec<MemStatsHandle>,
    wan_stats: Vec<MemStatsHandle>,
}

impl Site {
    fn new(acl_text: &str, name: &str, peer: &str, wan: Vec<MemPort>, ring: usize) -> Site {
        let base = Instant::now();
        let workers = wan.len() as u8;
        let gate = Arc::new(AtomicBool::new(false));
        let mut specs = Vec::new();
        let (mut hosts, mut lan_clock, mut wan_clock) = (Vec::new(), Vec::new(), Vec::new());
        let (mut lan_stats, mut wan_stats) = (Vec::new(), Vec::new());
        for (i, wan) in wan.into_iter().enumerate() {
            let (lan, h) = MemLink::pair(ring);
            hosts.push(MemHost::new(h, 256));
            let (lc, wc) = (
                Arc::new(PortClock::default()),
                Arc::new(PortClock::default()),
            );
            lan_stats.push(lan.stats_handle());
            wan_stats.push(wan.stats_handle());
            let port = |inner, clock: &Arc<PortClock>| GatedPort {
                inner,
                gate: gate.clone(),
                clock: clock.clone(),
                base,
            };
            specs.push(WorkerSpec {
                cfg: WorkerConfig {
                    id: i as u8,
                    workers,
                    peer: ip(peer),
                    acquire: AcquireLimits::default(),
                    pool_frames: 1024,
                    idle_sleep: Duration::from_micros(50),
                },
                lan: Box::new(port(lan, &lc)),
                wan: Box::new(port(wan, &wc)),
                core: Some(i),
            });
            lan_clock.push(lc);
            wan_clock.push(wc);
        }
        let cfg = acl::parse(acl_text).unwrap_or_else(|e| panic!("bench ACL: {e}"));
        let spd = Spd::from_acl(&cfg, name, DefaultAction::Drop)
            .unwrap_or_else(|e| panic!("bench SPD: {e}"));
        Site {
            dp: Dataplane::spawn(specs, Arc::new(spd)),
            gate,
            hosts,
            lan_clock,
            wan_clock,
            lan_stats,
            wan_stats,
        }
    }

    fn reset_clocks(&self) {
        for c in self.lan_clock.iter().chain(&self.wan_clock) {
            c.reset();
        }
    }

    fn sa_count(&self) -> usize {
        self.dp
            .snapshot(Duration::from_secs(5))
            .iter()
            .map(|s| s.sas.len())
            .sum()
    }
}

/// Opens `site`'s gate and waits until `expect_rx` packets have been
/// received on the `rx` ports and the `tx` ports stopped sending. Returns
/// (packets sent on `tx`, seconds from first receive to last send).
fn run_stage(
    site: &Site,
    rx: &[MemStatsHandle],
    expect_rx: u64,
    rx_clock: &[Arc<PortClock>],
    tx_clock: &[Arc<PortClock>],
) -> (u64, f64) {
    let received = |h: &[MemStatsHandle]| -> u64 { h.iter().map(|s| s.get().rx_packets).sum() };
    let rx0 = received(rx);
    site.reset_clocks();
    site.gate.store(true, Ordering::Release);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = u64::MAX;
    let mut stable = 0;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
        let sent: u64 = tx_clock.iter().map(|c| c.tx.load(Ordering::Relaxed)).sum();
        if received(rx) - rx0 >= expect_rx && sent == last {
            stable += 1;
            if stable >= 5 {
                break;
            }
        } else {
            stable = 0;
        }
        last = sent;
    }
    site.gate.store(false, Ordering::Release);
    let first = rx_clock
        .iter()
        .map(|c| c.first_rx.load(Ordering::Relaxed))
        .filter(|t| *t > 0)
        .min()
        .unwrap_or(0);
    let end = tx_clock
        .iter()
        .map(|c| c.last_tx.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    let sent = tx_clock.iter().map(|c| c.tx.load(Ordering::Relaxed)).sum();
    (sent, end.saturating_sub(first) as f64 / 1e9)
}

#[derive(Clone, Copy, Default)]
struct PipeResult {
    encrypt_mpps: f64,
    decrypt_mpps: f64,
    delivered: u64,
    offered: u64,
}

impl PipeResult {
    /// Two gateways in series deliver at the slower one's rate.
    fn mpps(&self) -> f64 {
        self.encrypt_mpps.min(self.decrypt_mpps)
    }
}

/// `per_worker`: each tunnel has one child SA per worker (RFC 9611, what
/// `ike.sa_per_worker` negotiates), so every worker encrypts the packets it
/// receives; otherwise one SA per tunnel on the rule's owner.
fn pipeline(
    workers: u8,
    tunnels: u32,
    per_worker: bool,
    packets: usize,
    rounds: usize,
) -> Vec<(usize, PipeResult)> {
    // Rings hold a whole round, so no stage ever waits for the next.
    let ring = packets;
    let (mut wan1, mut wan2) = (Vec::new(), Vec::new());
    for _ in 0..workers {
        let (a, b) = MemLink::pair(ring);
        wan1.push(a);
        wan2.push(b);
    }
    let mut s1 = Site::new(SITE1_ACL, "s2svpn_to_site2", "10.255.2.2", wan1, ring);
    let mut s2 = Site::new(SITE2_ACL, "s2svpn_to_site1", "10.255.1.2", wan2, ring);
    let spis2 = SpiAllocator::new(workers);
    let nets = ["192.168.100.0/24", "192.168.200.0/24"];
    let mut want = 0;
    for rule in 0..tunnels {
        // Tunnel r's inbound SA on Site2 lives on the worker that receives
        // it: Site1's worker w sends on its own WAN link w — the owner of
        // rule r (r % workers), or every worker with per-worker SAs.
        let owner = (rule % workers as u32) as u8;
        let senders: Vec<Option<u8>> = if per_worker {
            (0..workers).map(Some).collect()
        } else {
            vec![None]
        };
        for resource in senders {
            let shard = resource.unwrap_or(owner);
            let Some(spi) = spis2.allocate_on(shard) else {
                panic!("no SPI on shard {shard}");
            };
            let net = nets[rule as usize];
            let sa = |dir| {
                let mut p = sa_params(spi, dir, rule, net);
                p.resource = resource;
                // Every SA its own keys, as IKE would derive them.
                p.keys.encr[0] ^= shard;
                Box::new(p)
            };
            s2.dp.send(ControlMsg::InstallSa(sa(Direction::Inbound)));
            s1.dp.send(ControlMsg::InstallSa(sa(Direction::Outbound)));
            want += 1;
        }
    }
    let t = Instant::now();
    while (s1.sa_count() < want || s2.sa_count() < want) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let srcs = [
        Ipv4Addr::new(192, 168, 100, 10),
        Ipv4Addr::new(192, 168, 200, 10),
    ];
    let mut out = Vec::new();
    let mut buf = vec![0u8; 2048];
    for size in SIZES {
        // 8 flows per tunnel. One tunnel: flows spread over the LAN queues
        // (RSS); two tunnels: tunnel r's flows on queue r (flow steering
        // aligned with SA ownership).
        let mut templates: Vec<(usize, Vec<u8>)> = Vec::new();
        for (rule, src) in srcs.iter().enumerate().take(tunnels as usize) {
            for flow in 0..8u16 {
                let q = if tunnels == 1 {
                    flow as usize % workers as usize
                } else {
                    rule % workers as usize
                };
                templates.push((q, udp_packet(*src, 10_000 + flow, size)));
            }
        }
        let mut best = PipeResult::default();
        for _ in 0..rounds {
            let mut offered = 0u64;
            for i in 0..packets {
                let (q, p) = &templates[i % templates.len()];
                if s1.hosts[*q].send(p) {
                    offered += 1;
                }
            }
            let (enc, t1) = run_stage(&s1, &s1.lan_stats, offered, &s1.lan_clock, &s1.wan_clock);
            let (dec, t2) = run_stage(&s2, &s2.wan_stats, enc, &s2.wan_clock, &s2.lan_clock);
            let mut delivered = 0u64;
            for h in s2.hosts.iter_mut() {
                while let Some(n) = h.recv_into(&mut buf) {
                    if n == size && buf[16..20] == [172, 16, 10, 11] {
                        delivered += 1;
                    }
                }
            }
            let r = PipeResult {
                encrypt_mpps: if t1 > 0.0 { enc as f64 / t1 / 1e6 } else { 0.0 },
                decrypt_mpps: if t2 > 0.0 { dec as f64 / t2 / 1e6 } else { 0.0 },
                delivered,
                offered,
            };
            if delivered != dec {
                eprintln!("scaling: sink got {delivered} good packets of {dec} decrypted");
            }
            if r.mpps() > best.mpps() {
                best = r;
            }
        }
        out.push((size, best));
    }
    s1.dp.stop();
    s2.dp.stop();
    out
}

// ---------------------------------------------------------------- SA table

const BURST: usize = 32;
/// SAs traffic is spread over in the "spread" pattern (or all, if fewer).
const ACTIVE: usize = 4096;

struct SaScale {
    installed: usize,
    rss_per_sa: f64,
    heap_per_sa: f64,
    one_mpps: f64,
    spread_mpps: f64,
    install_secs: f64,
}

/// Round trips (encap on an outbound SA, decap by SPI lookup in the table)
/// per second of thread CPU time, bursts of 32 for one SA each, the SA
/// picked at random among `spis`.
fn round_trips(table: &mut SaTable, spis: &[Spi], size: usize, secs: f64) -> (f64, u64) {
    let now = Instant::now();
    let mut outs: Vec<Sa> = Vec::with_capacity(spis.len());
    for spi in spis {
        if let Ok(mut sa) = Sa::new(
            sa_params(*spi, Direction::Outbound, 0, "192.168.100.0/24"),
            now,
        ) {
            // An earlier run may have used this SPI: go on from its last
            // sequence number, or the replay window drops everything.
            if let Some(inb) = table.inbound(*spi) {
                sa.set_next_seq(inb.seq() + 1);
            }
            outs.push(sa);
        }
    }
    let pkt = udp_packet(Ipv4Addr::new(192, 168, 100, 10), 10_000, size);
    let mut frames: Vec<Frame> = (0..BURST).map(|_| Frame::new()).collect();
    let mut events: Vec<DataplaneEvent> = Vec::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut bad = 0u64;
    let mut one = |table: &mut SaTable| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let j = (rng % outs.len() as u64) as usize;
        for f in frames.iter_mut() {
            f.reset();
            f.set_data(&pkt);
        }
        let now = Instant::now();
        let e = encap_burst(&mut outs[j], &mut frames, now, &mut events);
        let Some(sa) = table.inbound(spis[j]) else {
            bad += BURST as u64;
            return;
        };
        let d = decap_burst(sa, &mut frames, now, &mut events);
        bad += (BURST - e.good.min(d.good)) as u64;
        events.clear();
        black_box(&frames);
    };
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(100) {
        one(table);
    }
    let start = thread_cpu_time();
    let wall = Instant::now();
    let mut n = 0u64;
    loop {
        for _ in 0..16 {
            one(table);
        }
        n += 16;
        let el = thread_cpu_time().saturating_sub(start);
        if el.as_secs_f64() >= secs || wall.elapsed().as_secs_f64() > 20.0 * secs {
            let el = if el.is_zero() { wall.elapsed() } else { el };
            return ((n * BURST as u64) as f64 / el.as_secs_f64() / 1e6, bad);
        }
    }
}

fn sa_scale(count: usize, size: usize, secs: f64) -> SaScale {
    let now = Instant::now();
    let rss0 = rss_bytes();
    let heap0 = heap_live();
    let t = Instant::now();
    let mut table = SaTable::new(0);
    let mut failed = 0;
    for slot in 0..count {
        let spi = Spi::new(0, 1, slot as u32);
        if table
            .install(
                sa_params(spi, Direction::Inbound, 0, "192.168.100.0/24"),
                now,
            )
            .is_err()
        {
            failed += 1;
        }
    }
    let install_secs = t.elapsed().as_secs_f64();
    let rss_per_sa = rss_bytes().saturating_sub(rss0) as f64 / count as f64;
    let heap_per_sa = heap_live().saturating_sub(heap0) as f64 / count as f64;
    if failed > 0 {
        eprintln!("scaling: {failed} of {count} SA installs failed");
    }
    // "one": all traffic on the SA installed last. "spread": up to 4096
    // SAs evenly spread over the table.
    let last = vec![Spi::new(0, 1, count as u32 - 1)];
    let active = count.min(ACTIVE);
    let spread: Vec<Spi> = (0..active)
        .map(|i| Spi::new(0, 1, (i * count / active) as u32))
        .collect();
    let (one_mpps, bad1) = round_trips(&mut table, &last, size, secs);
    let (spread_mpps, bad2) = round_trips(&mut table, &spread, size, secs);
    if bad1 + bad2 > 0 {
        eprintln!("scaling: {} packets failed the round trip", bad1 + bad2);
    }
    drop(table);
    SaScale {
        installed: count,
        rss_per_sa,
        heap_per_sa,
        one_mpps,
        spread_mpps,
        install_secs,
    }
}

// ---------------------------------------------------------------- main

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let value = |f: &str| {
        args.iter()
            .position(|a| a == f)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let quick = flag("--quick");
    let packets: usize = value("--packets")
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 8192 } else { 32768 });
    let rounds: usize = value("--rounds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1 } else { 5 });
    let secs: f64 = value("--secs")
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 0.2 } else { 1.0 });
    let sas: Vec<usize> = value("--sas")
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 10_000, 1_000_000]);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "# {cores} cores, load average {} (other processes share the cores)",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    if !flag("--skip-sa") {
        let size: usize = value("--sa-size")
            .and_then(|v| v.parse().ok())
            .unwrap_or(64);
        println!(
            "# SA table: N inbound SAs in one worker's SaTable; round trip = encap (outbound SA) + \
             decap (SPI lookup in the table), bursts of {BURST} x {size} B, one SA per burst; \
             'one' = all traffic on one SA, 'spread' = random SA among min(N, {ACTIVE}) spread \
             over the table; Mpps per second of thread CPU time"
        );
        println!(
            "# key schedules: aes::Aes256Enc {} B, aes::Aes256Dec {} B, aes::Aes128Enc {} B",
            std::mem::size_of::<aes::Aes256Enc>(),
            std::mem::size_of::<aes::Aes256Dec>(),
            std::mem::size_of::<aes::Aes128Enc>()
        );
        println!(
            "# size_of::<Sa>() = {} B, size_of::<Option<Sa>>() = {} B (slab entry), + 4 B slot index",
            std::mem::size_of::<Sa>(),
            std::mem::size_of::<Option<Sa>>()
        );
        let mut base: Option<f64> = None;
        for n in sas {
            if n == 0 || n > Spi::SLOTS_PER_SHARD {
                continue;
            }
            let heap = Sa::new(
                sa_params(Spi::new(0, 1, 1), Direction::Inbound, 0, "192.168.100.0/24"),
                Instant::now(),
            )
            .map_or(0, |s| s.heap_bytes());
            let r = sa_scale(n, size, secs);
            let b1 = *base.get_or_insert(r.one_mpps);
            println!(
                "sa-table installed={}: one {:.3} Mpps (x{:.2}), spread {:.3} Mpps (x{:.2}); \
                 memory/SA {:.0} B (live heap delta incl. slab + index; RSS delta {:.0} B; \
                 Sa::heap_bytes {heap} B); install {:.2} s",
                r.installed,
                r.one_mpps,
                r.one_mpps / b1,
                r.spread_mpps,
                r.spread_mpps / b1,
                r.heap_per_sa,
                r.rss_per_sa,
                r.install_secs
            );
        }
    }
    if !flag("--skip-pipeline") {
        println!(
            "# pipeline: Site1 encrypt -> mem WAN -> Site2 decrypt, aes-256-cbc+hmac-sha256 (rule 0 YELLOW, rule 1 BLUE), \
             {packets} packets/round, best of {rounds}"
        );
        println!(
            "# stages run store-and-forward: rings pre-filled by the generator and drained by the \
             sink while no stage is timed, so neither competes with the workers (pinned to cores \
             0/1); each site's rate is from its first received to its last sent packet; \
             delivered = the slower site (two gateways in series)"
        );
        // (workers, tunnels, SAs per tunnel: per worker?) — 1 worker has
        // one SA per tunnel either way.
        let cells = [
            (1u8, 1u32, false),
            (2, 1, false),
            (2, 1, true),
            (1, 2, false),
            (2, 2, false),
            (2, 2, true),
        ];
        let mut table = Vec::new();
        for (workers, tunnels, per_worker) in cells {
            let sas = if per_worker { "per-worker" } else { "one" };
            for (size, r) in pipeline(workers, tunnels, per_worker, packets, rounds) {
                println!(
                    "pipeline workers={workers} tunnels={tunnels} sas={sas} size={size}: site1 \
                     encrypt {:.3} Mpps, site2 decrypt {:.3} Mpps, delivered {:.3} Mpps = {:.2} \
                     Gbps, {} of {} delivered",
                    r.encrypt_mpps,
                    r.decrypt_mpps,
                    r.mpps(),
                    r.mpps() * size as f64 * 8.0 / 1e3,
                    r.delivered,
                    r.offered
                );
                table.push((workers, tunnels, per_worker, size, r));
            }
        }
        let get = |w: u8, t: u32, pw: bool, s: usize| {
            table
                .iter()
                .find(|x| x.0 == w && x.1 == t && x.2 == pw && x.3 == s)
                .map_or(0.0, |x| x.4.mpps())
        };
        let ratio = |t: u32, pw: bool, s: usize| {
            let one = get(1, t, false, s);
            if one > 0.0 {
                get(2, t, pw, s) / one
            } else {
                0.0
            }
        };
        for size in SIZES {
            for (t, name) in [(1, "one tunnel"), (2, "two tunnels")] {
                println!(
                    "workers 2 vs 1 ({name}) {size}B: ratio: {:.2} with per-worker SAs, {:.2} with one SA per tunnel",
                    ratio(t, true, size),
                    ratio(t, false, size)
                );
            }
        }
        println!(
            "workers 2 vs 1 (one tunnel): ratio: {:.2}",
            ratio(1, true, 1400)
        );
        println!(
            "workers 2 vs 1 (two tunnels): ratio: {:.2} (per-worker SAs: {:.2})",
            ratio(2, false, 1400),
            ratio(2, true, 1400)
        );
    }
}
