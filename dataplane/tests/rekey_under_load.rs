//! Rekey under load: numbered packets flow Site1 → Site2 at a bounded rate
//! while the child SA is rekeyed 10 times in the order the IKE machine uses
//! (make-before-break): Site2 installs the new inbound SA first, then Site1
//! switches its outbound SA with `RekeySa`, and only after a grace time are
//! the old SAs deleted. Nothing may be lost or duplicated; reordering is
//! counted and printed.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use espgate_dataplane::acquire::AcquireLimits;
use espgate_dataplane::api::{
    ControlMsg, Direction, Lifetime, RuleId, SaKeys, SaParams, Selector, Spi, SpiAllocator, Suite,
    TunnelEnds,
};
use espgate_dataplane::io::mem::{MemHost, MemLink, MemPort};
use espgate_dataplane::runtime::{Dataplane, WorkerSpec};
use espgate_dataplane::spd::{acl, DefaultAction, Spd};
use espgate_dataplane::worker::WorkerConfig;

const SITE1_ACL: &str = "access-list s2svpn_to_site2 extended permit ip 192.168.100.0 255.255.255.0 172.16.10.0 255.255.255.0\n";
const SITE2_ACL: &str = "access-list s2svpn_to_site1 extended permit ip 172.16.10.0 255.255.255.0 192.168.100.0 255.255.255.0\n";

const PACKETS: u32 = 10_000;
const REKEYS: usize = 10;
/// Sender pacing: this many packets, then a pause.
const BATCH: u32 = 8;
const PAUSE: Duration = Duration::from_millis(1);
/// Least time between switching Site1 to the new SA and deleting the old
/// ones. The old inbound SA is deleted only once Site2 has decrypted every
/// packet Site1 encrypted with it (a time-only grace lost packets on this
/// shared 2-core machine when Site2's worker was descheduled).
const GRACE: Duration = Duration::from_millis(10);
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
const DEADLINE: Duration = Duration::from_secs(30);
/// Ring depth: ~1 s of traffic, so a worker or the sink descheduled for a
/// while on a loaded 2-core machine does not overflow a ring (that would be
/// overload loss, not rekey loss; `tx_dropped` in the printed I/O counters).
const RING: usize = 8192;

fn spd(text: &str, name: &str) -> Arc<Spd> {
    let cfg = acl::parse(text).unwrap();
    Arc::new(Spd::from_acl(&cfg, name, DefaultAction::Drop).unwrap())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// IPv4/UDP 192.168.100.10:<port> → 172.16.10.11:9 carrying `seq`.
fn numbered(seq: u32) -> Vec<u8> {
    numbered_from(Ipv4Addr::new(192, 168, 100, 10), seq)
}

fn numbered_from(src: Ipv4Addr, seq: u32) -> Vec<u8> {
    let total = 20 + 8 + 64;
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
    // Several source ports, so that with RSS-like spreading flows differ.
    p[20..22].copy_from_slice(&(10_000 + (seq % 8) as u16).to_be_bytes());
    p[22..24].copy_from_slice(&9u16.to_be_bytes());
    p[24..26].copy_from_slice(&((total - 20) as u16).to_be_bytes());
    p[28..32].copy_from_slice(&seq.to_be_bytes());
    p
}

fn seq_of(p: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(p.get(28..32)?.try_into().ok()?))
}

fn site(acl: &str, name: &str, peer: &str, wan: Vec<MemPort>) -> (Dataplane, Vec<MemHost>) {
    let workers = wan.len() as u8;
    let mut specs = Vec::new();
    let mut hosts = Vec::new();
    for (i, wan) in wan.into_iter().enumerate() {
        let (lan, h) = MemLink::pair(RING);
        hosts.push(MemHost::new(h, 1024));
        specs.push(WorkerSpec {
            cfg: WorkerConfig {
                id: i as u8,
                workers,
                peer: ip(peer),
                acquire: AcquireLimits::default(),
                pool_frames: 2048,
                idle_sleep: Duration::from_micros(50),
            },
            lan: Box::new(lan),
            wan: Box::new(wan),
            core: None,
        });
    }
    (Dataplane::spawn(specs, spd(acl, name)), hosts)
}

/// The SA pair of generation `generation` (keys differ per generation, as
/// a rekey with fresh KEYMAT gives).
fn child(spi: Spi, dir: Direction, generation: u8) -> SaParams {
    child_of(spi, dir, generation, 0)
}

/// Rule 0 protects YELLOW (192.168.100.0/24), rule 1 BLUE (192.168.200.0/24).
fn child_of(spi: Spi, dir: Direction, generation: u8, rule: u32) -> SaParams {
    let src = ["192.168.100.0/24", "192.168.200.0/24"][rule as usize];
    let sel = Selector::between(src.parse().unwrap(), "172.16.10.0/24".parse().unwrap());
    let (local, remote) = match dir {
        Direction::Outbound => ("10.255.1.2", "10.255.2.2"),
        Direction::Inbound => ("10.255.2.2", "10.255.1.2"),
    };
    SaParams {
        spi,
        dir,
        suite: Suite::Aes256CbcHmacSha256,
        keys: SaKeys {
            encr: vec![generation.wrapping_mul(3).wrapping_add(1 + rule as u8); 32],
            integ: vec![generation.wrapping_mul(5).wrapping_add(2); 32],
        },
        tunnel: TunnelEnds {
            local: ip(local),
            remote: ip(remote),
            udp_encap: None,
        },
        selector: sel,
        esn: false,
        replay_window: 64,
        lifetime: Lifetime::UNLIMITED,
        rule: RuleId(rule),
        child_id: generation as u32 + 1 + 100 * rule,
        resource: None,
        more_selectors: Vec::new(),
    }
}

/// Waits until every worker of `dp` has applied the control messages sent
/// before this call: workers drain their control queue before answering a
/// snapshot query.
fn barrier(dp: &Dataplane) {
    let snaps = dp.snapshot(Duration::from_secs(5));
    assert_eq!(
        snaps.len(),
        dp.workers() as usize,
        "a worker did not answer"
    );
}

/// Counter of SA `spi` in direction `dir` on `dp`, summed over workers.
fn sa_count(dp: &Dataplane, spi: Spi, dir: Direction) -> Option<u64> {
    let snaps = dp.snapshot(Duration::from_secs(5));
    let mut found = None;
    for sa in snaps.iter().flat_map(|s| &s.sas) {
        if sa.spi == spi && sa.dir == dir {
            let c = match dir {
                Direction::Outbound => sa.counters.encaps,
                Direction::Inbound => sa.counters.decaps,
            };
            *found.get_or_insert(0) += c;
        }
    }
    found
}

/// Waits (bounded) until Site2 has decrypted as many packets on `old` as
/// Site1 encrypted with it; Site1 no longer uses `old` when this is called.
fn drain(s1: &Dataplane, s2: &Dataplane, old: Spi) {
    let sent = sa_count(s1, old, Direction::Outbound).unwrap_or(0);
    let t = Instant::now();
    while t.elapsed() < DRAIN_LIMIT {
        if sa_count(s2, old, Direction::Inbound).unwrap_or(0) >= sent {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

struct Outcome {
    lost: usize,
    duplicated: usize,
    reordered: usize,
    received: usize,
}

fn run(workers: u8) -> Outcome {
    let (mut wan1, mut wan2) = (Vec::new(), Vec::new());
    for _ in 0..workers {
        let (a, b) = MemLink::pair(RING);
        wan1.push(a);
        wan2.push(b);
    }
    let (mut s1, mut hosts1) = site(SITE1_ACL, "s2svpn_to_site2", "10.255.2.2", wan1);
    let (mut s2, mut hosts2) = site(SITE2_ACL, "s2svpn_to_site1", "10.255.1.2", wan2);
    let spis2 = SpiAllocator::new(workers);

    let mut inbound = spis2.allocate().unwrap();
    s2.send(ControlMsg::InstallSa(Box::new(child(
        inbound,
        Direction::Inbound,
        0,
    ))));
    barrier(&s2);
    s1.send(ControlMsg::InstallSa(Box::new(child(
        inbound,
        Direction::Outbound,
        0,
    ))));
    barrier(&s1);

    let start = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    // Sender: numbered packets, spread over the LAN queues, paced.
    let sender = {
        let mut hosts = std::mem::take(&mut hosts1);
        let done = done.clone();
        std::thread::spawn(move || {
            let mut sent = 0u32;
            while sent < PACKETS && start.elapsed() < DEADLINE {
                for _ in 0..BATCH.min(PACKETS - sent) {
                    let q = (sent as usize / 4) % hosts.len();
                    let pkt = numbered(sent);
                    // A full link is back-pressure here, not loss: retry.
                    while !hosts[q].send(&pkt) && start.elapsed() < DEADLINE {
                        std::thread::sleep(Duration::from_micros(100));
                    }
                    sent += 1;
                }
                std::thread::sleep(PAUSE);
            }
            done.store(true, Ordering::Relaxed);
            sent
        })
    };
    // Sink: every packet out of Site2's LAN queues, in arrival order.
    let sink = {
        let mut hosts = std::mem::take(&mut hosts2);
        let done = done.clone();
        std::thread::spawn(move || {
            let mut got = Vec::with_capacity(PACKETS as usize);
            let mut buf = [0u8; 2048];
            let mut quiet_since: Option<Instant> = None;
            while start.elapsed() < DEADLINE {
                let mut any = false;
                for h in hosts.iter_mut() {
                    while let Some(n) = h.recv_into(&mut buf) {
                        any = true;
                        if let Some(s) = seq_of(&buf[..n]) {
                            got.push(s);
                        }
                    }
                }
                if got.len() >= PACKETS as usize {
                    break;
                }
                // After the sender stops, wait a little for stragglers.
                if done.load(Ordering::Relaxed) && !any {
                    let q = *quiet_since.get_or_insert_with(Instant::now);
                    if q.elapsed() > Duration::from_secs(2) {
                        break;
                    }
                } else {
                    quiet_since = None;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            got
        })
    };

    // Ten rekeys while traffic flows, the way the IKE machine orders them.
    let mut rekeys = 0;
    while rekeys < REKEYS && !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(40));
        let gen = rekeys as u8 + 1;
        let new_in = spis2.allocate().unwrap();
        s2.send(ControlMsg::InstallSa(Box::new(child(
            new_in,
            Direction::Inbound,
            gen,
        ))));
        barrier(&s2);
        s1.send(ControlMsg::RekeySa {
            old: inbound,
            new: Box::new(child(new_in, Direction::Outbound, gen)),
        });
        barrier(&s1);
        std::thread::sleep(GRACE);
        drain(&s1, &s2, inbound);
        s1.send(ControlMsg::DeleteSa {
            spi: inbound,
            dir: Direction::Outbound,
        });
        s2.send(ControlMsg::DeleteSa {
            spi: inbound,
            dir: Direction::Inbound,
        });
        spis2.free(inbound);
        inbound = new_in;
        rekeys += 1;
    }

    let sent = sender.join().unwrap();
    let got = sink.join().unwrap();
    assert_eq!(sent, PACKETS, "sender hit the deadline");
    assert_eq!(rekeys, REKEYS, "traffic ended before all rekeys ran");

    // Both sites ended on the last SA, and only on it.
    let out: Vec<Spi> = s1
        .snapshot(Duration::from_secs(5))
        .iter()
        .flat_map(|s| s.sas.iter().filter(|a| a.dir == Direction::Outbound))
        .map(|a| a.spi)
        .collect();
    assert_eq!(out, vec![inbound]);
    let snaps2 = s2.snapshot(Duration::from_secs(5));
    let drops = |snaps: &[espgate_dataplane::worker::WorkerSnapshot]| -> Vec<(String, u64)> {
        snaps
            .iter()
            .flat_map(|s| s.drops.iter().filter(|d| d.1 > 0).cloned())
            .collect()
    };
    let snaps1 = s1.snapshot(Duration::from_secs(5));
    let drops1 = drops(&snaps1);
    let io = |snaps: &[espgate_dataplane::worker::WorkerSnapshot]| -> Vec<String> {
        snaps
            .iter()
            .map(|s| {
                format!(
                    "w{}: lan rx {} tx {} txdrop {} wan rx {} tx {} txdrop {}",
                    s.worker,
                    s.lan.rx_packets,
                    s.lan.tx_packets,
                    s.lan.tx_dropped,
                    s.wan.rx_packets,
                    s.wan.tx_packets,
                    s.wan.tx_dropped
                )
            })
            .collect()
    };
    let (io1, io2) = (io(&snaps1), io(&snaps2));
    let drops2 = drops(&snaps2);
    let wan_lost: u64 = snaps2.iter().map(|s| s.wan.rx_dropped).sum();
    s1.stop();
    s2.stop();

    let mut seen = HashSet::new();
    let mut duplicated = 0;
    let mut reordered = 0;
    let mut highest: Option<u32> = None;
    for &s in &got {
        if !seen.insert(s) {
            duplicated += 1;
        }
        if highest.is_some_and(|h| s < h) {
            reordered += 1;
        }
        highest = highest.max(Some(s));
    }
    let lost = (0..PACKETS).filter(|s| !seen.contains(s)).count();
    println!(
        "rekey under load ({workers} worker(s)/site): {PACKETS} sent, {} received, \
         {REKEYS} rekeys, lost {lost}, duplicated {duplicated}, reordered {reordered}, \
         {:.2} s; drops Site1 {drops1:?} Site2 {drops2:?} wan rx {wan_lost}; \
         io Site1 {io1:?} Site2 {io2:?}",
        got.len(),
        start.elapsed().as_secs_f64()
    );
    Outcome {
        lost,
        duplicated,
        reordered,
        received: got.len(),
    }
}

#[test]
fn ten_rekeys_under_load_lose_nothing_one_worker() {
    let o = run(1);
    assert_eq!(o.lost, 0, "lost packets across rekeys");
    assert_eq!(o.duplicated, 0, "duplicated packets");
    assert_eq!(o.received, PACKETS as usize);
    // One worker per site and one flow of rings: nothing can overtake.
    assert_eq!(o.reordered, 0);
}

#[test]
fn ten_rekeys_under_load_lose_nothing_two_workers() {
    // Two LAN queues feed the owner through the hand-off queue, so packets
    // of different queues may be reordered; that is reported, not asserted.
    let o = run(2);
    assert_eq!(o.lost, 0, "lost packets across rekeys");
    assert_eq!(o.duplicated, 0, "duplicated packets");
    assert_eq!(o.received, PACKETS as usize);
}

/// The worker gathers the packets of each rule in a burst into one run
/// (several rules interleaved); every packet must still arrive, in order
/// within its tunnel.
#[test]
fn interleaved_tunnels_keep_order_within_each_sa() {
    const ACL1: &str =
        "access-list a extended permit ip 192.168.100.0 255.255.255.0 172.16.10.0 255.255.255.0
access-list a extended permit ip 192.168.200.0 255.255.255.0 172.16.10.0 255.255.255.0
";
    const ACL2: &str =
        "access-list b extended permit ip 172.16.10.0 255.255.255.0 192.168.100.0 255.255.255.0
access-list b extended permit ip 172.16.10.0 255.255.255.0 192.168.200.0 255.255.255.0
";
    let (a, b) = MemLink::pair(4096);
    let (mut s1, mut h1) = site(ACL1, "a", "10.255.2.2", vec![a]);
    let (mut s2, mut h2) = site(ACL2, "b", "10.255.1.2", vec![b]);
    let spis2 = SpiAllocator::new(1);
    for rule in 0..2 {
        let spi = spis2.allocate().unwrap();
        s2.send(ControlMsg::InstallSa(Box::new(child_of(
            spi,
            Direction::Inbound,
            0,
            rule,
        ))));
        s1.send(ControlMsg::InstallSa(Box::new(child_of(
            spi,
            Direction::Outbound,
            0,
            rule,
        ))));
    }
    barrier(&s2);
    barrier(&s1);
    let srcs = [
        Ipv4Addr::new(192, 168, 100, 10),
        Ipv4Addr::new(192, 168, 200, 10),
    ];
    const N: u32 = 3000;
    let start = Instant::now();
    let mut got: Vec<(u8, u32)> = Vec::new();
    let mut buf = [0u8; 2048];
    let mut sent = 0;
    while (sent < N || got.len() < N as usize) && start.elapsed() < DEADLINE {
        // Irregular interleaving: runs of 1..=3 packets per tunnel.
        let mut k = 0;
        while sent < N && k < 48 {
            let t = ((sent / (1 + sent % 3)) % 2) as usize;
            if !h1[0].send(&numbered_from(srcs[t], sent)) {
                break;
            }
            sent += 1;
            k += 1;
        }
        while let Some(n) = h2[0].recv_into(&mut buf) {
            got.push((buf[14], seq_of(&buf[..n]).unwrap()));
        }
        std::thread::sleep(Duration::from_micros(300));
    }
    s1.stop();
    s2.stop();
    assert_eq!(got.len(), N as usize, "every packet arrives");
    for net in [100u8, 200] {
        let seqs: Vec<u32> = got.iter().filter(|g| g.0 == net).map(|g| g.1).collect();
        assert!(!seqs.is_empty());
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "tunnel 192.168.{net}.0/24 reordered"
        );
    }
}
