//! Two dataplanes (Site1 and Site2 of the seed) joined by in-memory links:
//! the whole worker loop — classify, acquire queue, encap, handoff, decap,
//! inbound policy — with SAs installed by hand instead of by IKE.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use espgate_dataplane::acquire::AcquireLimits;
use espgate_dataplane::api::{
    ControlMsg, DataplaneEvent, Direction, Lifetime, RuleId, SaKeys, SaParams, Selector, Spi,
    SpiAllocator, Suite, TunnelEnds,
};
use espgate_dataplane::io::mem::{MemHost, MemLink};
use espgate_dataplane::runtime::{Dataplane, WorkerSpec};
use espgate_dataplane::spd::{acl, DefaultAction, Spd};
use espgate_dataplane::worker::WorkerConfig;

const SITE1: &str = "object-group network SITE1
 network-object 192.168.100.0 255.255.255.0
 network-object 192.168.200.0 255.255.255.0
object-group network SITE2
 network-object 172.16.10.0 255.255.255.0
access-list s2svpn_to_site2 extended permit ip object-group SITE1 object-group SITE2
";
const SITE2: &str = "object-group network SITE1
 network-object 192.168.100.0 255.255.255.0
 network-object 192.168.200.0 255.255.255.0
object-group network SITE2
 network-object 172.16.10.0 255.255.255.0
access-list s2svpn_to_site1 extended permit ip object-group SITE2 object-group SITE1
";

fn spd(text: &str, name: &str) -> Arc<Spd> {
    let cfg = acl::parse(text).unwrap();
    Arc::new(Spd::from_acl(&cfg, name, DefaultAction::Drop).unwrap())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// An IPv4 ICMP echo request with a sequence number in its payload.
fn ping(src: &str, dst: &str, seq: u16, len: usize) -> Vec<u8> {
    let total = 20 + 8 + len;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 1;
    let (s, d): (Ipv4Addr, Ipv4Addr) = (src.parse().unwrap(), dst.parse().unwrap());
    p[12..16].copy_from_slice(&s.octets());
    p[16..20].copy_from_slice(&d.octets());
    let mut sum = 0u32;
    for c in p[..20].chunks(2) {
        sum += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p[20] = 8;
    p[26..28].copy_from_slice(&seq.to_be_bytes());
    p
}

fn seq_of(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[26], p[27]])
}

struct Site {
    dp: Dataplane,
    /// The LAN as seen from each worker's LAN port (one NIC queue each).
    hosts: Vec<MemHost>,
}

fn site(
    acl: &str,
    name: &str,
    peer: &str,
    workers: u8,
    wan: Vec<espgate_dataplane::io::mem::MemPort>,
) -> Site {
    let mut specs = Vec::new();
    let mut hosts = Vec::new();
    for (i, wan) in wan.into_iter().enumerate() {
        let (lan, h) = MemLink::pair(256);
        hosts.push(MemHost::new(h, 512));
        specs.push(WorkerSpec {
            cfg: WorkerConfig {
                id: i as u8,
                workers,
                peer: ip(peer),
                acquire: AcquireLimits {
                    max_packets: 128,
                    ..AcquireLimits::default()
                },
                pool_frames: 1024,
                idle_sleep: Duration::from_micros(50),
            },
            lan: Box::new(lan),
            wan: Box::new(wan),
            core: None,
        });
    }
    Site {
        dp: Dataplane::spawn(specs, spd(acl, name)),
        hosts,
    }
}

fn child(
    spi: Spi,
    dir: Direction,
    rule: u32,
    sel: Selector,
    local: &str,
    remote: &str,
) -> SaParams {
    SaParams {
        spi,
        dir,
        suite: Suite::Aes256CbcHmacSha256,
        keys: SaKeys {
            encr: vec![rule as u8 + 1; 32],
            integ: vec![rule as u8 + 7; 32],
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
        child_id: rule + 1,
        resource: None,
        more_selectors: Vec::new(),
    }
}

/// Installs the child SA of `rule` (Site1 selector `sel`) on both sites.
fn install(
    s1: &Site,
    s2: &Site,
    spis1: &SpiAllocator,
    spis2: &SpiAllocator,
    rule: u32,
    sel: Selector,
) {
    let (in1, in2) = (spis1.allocate().unwrap(), spis2.allocate().unwrap());
    let (a, b) = ("10.255.1.2", "10.255.2.2");
    // Site1 → Site2 uses Site2's inbound SPI, with the same keys.
    let out1 = child(in2, Direction::Outbound, rule, sel.clone(), a, b);
    let in_2 = child(in2, Direction::Inbound, rule, sel.clone(), b, a);
    let mut out2 = child(in1, Direction::Outbound, rule, sel.reversed(), b, a);
    let mut in_1 = child(in1, Direction::Inbound, rule, sel.reversed(), a, b);
    out2.keys.encr[0] ^= 0xff;
    in_1.keys.encr[0] ^= 0xff;
    // Inbound SAs must match what they decrypt: remote → local.
    let in_2 = SaParams {
        selector: sel.clone(),
        ..in_2
    };
    let in_1 = SaParams {
        selector: sel.reversed(),
        ..in_1
    };
    s2.dp.send(ControlMsg::InstallSa(Box::new(in_2)));
    s1.dp.send(ControlMsg::InstallSa(Box::new(in_1)));
    s2.dp.send(ControlMsg::InstallSa(Box::new(out2)));
    s1.dp.send(ControlMsg::InstallSa(Box::new(out1)));
}

fn collect(hosts: &mut [MemHost], want: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        for h in hosts.iter_mut() {
            got.extend(h.recv_all());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    got
}

/// Site1 and Site2 of the seed, `workers` each, worker `w` of one joined to
/// worker `w` of the other by its own WAN link.
fn two_sites(workers: u8) -> (Site, Site) {
    let (mut wan1, mut wan2) = (Vec::new(), Vec::new());
    for _ in 0..workers {
        let (a, b) = MemLink::pair(512);
        wan1.push(a);
        wan2.push(b);
    }
    (
        site(SITE1, "s2svpn_to_site2", "10.255.2.2", workers, wan1),
        site(SITE2, "s2svpn_to_site1", "10.255.1.2", workers, wan2),
    )
}

fn run_seed(workers: u8) {
    let (mut s1, mut s2) = two_sites(workers);
    let (spis1, spis2) = (SpiAllocator::new(workers), SpiAllocator::new(workers));

    // 100 pings YELLOW → PURPLE before any SA exists: queued, one Acquire.
    for i in 0..100 {
        assert!(s1.hosts[0].send(&ping("192.168.100.10", "172.16.10.11", i, 100)));
    }
    let ev = s1.dp.events().recv_timeout(Duration::from_secs(5)).unwrap();
    let DataplaneEvent::Acquire { rule, peer, flow } = ev else {
        panic!("expected Acquire, got {ev:?}");
    };
    assert_eq!(peer, ip("10.255.2.2"));
    assert_eq!(flow.dst, ip("172.16.10.11"));
    let sel = s1.dp_rule_selector(rule);
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        s1.dp.events().try_recv().is_err(),
        "exactly one Acquire for 100 packets"
    );
    install(&s1, &s2, &spis1, &spis2, rule.0, sel);
    let got = collect(&mut s2.hosts, 100);
    assert_eq!(got.len(), 100, "all queued packets delivered");
    let seqs: Vec<u16> = got.iter().map(|p| seq_of(p)).collect();
    assert_eq!(
        seqs,
        (0..100).collect::<Vec<_>>(),
        "in order, no duplicates"
    );
    assert_eq!(got[0], ping("192.168.100.10", "172.16.10.11", 0, 100));

    // Replies PURPLE → YELLOW go through Site2's outbound SA.
    for i in 0..10 {
        assert!(s2.hosts[0].send(&ping("172.16.10.11", "192.168.100.10", i, 100)));
    }
    assert_eq!(collect(&mut s1.hosts, 10).len(), 10);

    // Clear traffic that should be protected is refused by Site2.
    let snaps = s1.dp.snapshot(Duration::from_secs(2));
    let encaps: u64 = snaps
        .iter()
        .flat_map(|s| &s.sas)
        .filter(|s| s.dir == Direction::Outbound)
        .map(|s| s.counters.encaps)
        .sum();
    assert_eq!(encaps, 100);
    let hits: u64 = snaps.iter().map(|s| s.hits[rule.0 as usize]).sum();
    assert_eq!(hits, 100);
    let snaps2 = s2.dp.snapshot(Duration::from_secs(2));
    let decaps: u64 = snaps2
        .iter()
        .flat_map(|s| &s.sas)
        .filter(|s| s.dir == Direction::Inbound)
        .map(|s| s.counters.decaps)
        .sum();
    assert_eq!(decaps, 100);
    s1.dp.stop();
    s2.dp.stop();
}

impl Site {
    fn dp_rule_selector(&self, rule: RuleId) -> Selector {
        let cfg = acl::parse(SITE1).unwrap();
        let spd = Spd::from_acl(&cfg, "s2svpn_to_site2", DefaultAction::Drop).unwrap();
        spd.rule(rule).unwrap().selector.clone()
    }
}

#[test]
fn seed_one_worker_first_packets_queued_not_lost() {
    run_seed(1);
}

#[test]
fn seed_two_workers_handoff_by_spi_and_rule() {
    run_seed(2);
}

/// RFC 9611 per-worker SAs: with one child SA of the rule per worker, each
/// worker encrypts the packets its own LAN queue receives (no handoff), and
/// the peer's worker of the same index decrypts them.
#[test]
fn per_worker_sas_encrypt_on_the_worker_that_receives() {
    let workers = 2u8;
    let (mut s1, mut s2) = two_sites(workers);
    let spis2 = SpiAllocator::new(workers);
    // The object-group line expands to two entries; take YELLOW's.
    let rule = (0..2)
        .map(RuleId)
        .find(|r| s1.dp_rule_selector(*r).src.contains(&ip("192.168.100.10")))
        .unwrap();
    let sel = s1.dp_rule_selector(rule);
    let mut spi_of = Vec::new();
    for w in 0..workers {
        let spi = spis2.allocate_on(w).unwrap();
        spi_of.push(spi);
        let (a, b) = ("10.255.1.2", "10.255.2.2");
        let mut out1 = child(spi, Direction::Outbound, rule.0, sel.clone(), a, b);
        let mut in2 = child(spi, Direction::Inbound, rule.0, sel.clone(), b, a);
        for p in [&mut out1, &mut in2] {
            p.resource = Some(w);
            p.keys.encr[1] ^= w + 1;
        }
        s2.dp.send(ControlMsg::InstallSa(Box::new(in2)));
        s1.dp.send(ControlMsg::InstallSa(Box::new(out1)));
    }
    std::thread::sleep(Duration::from_millis(50));
    // Flow A on LAN queue 0, flow B on queue 1, interleaved.
    for i in 0..50 {
        assert!(s1.hosts[0].send(&ping("192.168.100.10", "172.16.10.11", i, 100)));
        assert!(s1.hosts[1].send(&ping("192.168.100.20", "172.16.10.11", 1000 + i, 100)));
    }
    let got = collect(&mut s2.hosts, 100);
    assert_eq!(got.len(), 100, "all delivered");
    for (src, base) in [([192, 168, 100, 10], 0u16), ([192, 168, 100, 20], 1000)] {
        let seqs: Vec<u16> = got
            .iter()
            .filter(|p| p[12..16] == src)
            .map(|p| seq_of(p))
            .collect();
        assert_eq!(
            seqs,
            (base..base + 50).collect::<Vec<_>>(),
            "flow order kept"
        );
    }
    let snaps = s1.dp.snapshot(Duration::from_secs(2));
    for s in &snaps {
        let out: Vec<_> = s
            .sas
            .iter()
            .filter(|x| x.dir == Direction::Outbound)
            .collect();
        assert_eq!(out.len(), 1, "worker {} has its own SA", s.worker);
        assert_eq!(out[0].spi, spi_of[s.worker as usize]);
        assert_eq!(
            out[0].counters.encaps, 50,
            "worker {} encrypted what it received, nothing handed off",
            s.worker
        );
    }
    let snaps2 = s2.dp.snapshot(Duration::from_secs(2));
    for s in &snaps2 {
        let decaps: u64 = s
            .sas
            .iter()
            .filter(|x| x.dir == Direction::Inbound)
            .map(|x| x.counters.decaps)
            .sum();
        assert_eq!(
            decaps, 50,
            "site2 worker {} decrypted its SA's half",
            s.worker
        );
        assert_eq!(s.wan.rx_packets, 50, "and received them on its own queue");
    }
    s1.dp.stop();
    s2.dp.stop();
}

/// `[acl] sa = "combined"`: both expanded entries share the first one's
/// child SA — one Acquire, one SA pair, hit counts still per entry, and the
/// peer's inbound check accepts both entries' traffic.
#[test]
fn combined_sa_carries_both_entries_with_per_entry_hits() {
    let s1_spd = |t: &str, n: &str| {
        let cfg = acl::parse(t).unwrap();
        Arc::new(
            Spd::from_acl(&cfg, n, DefaultAction::Drop)
                .unwrap()
                .combine_protected(),
        )
    };
    let (mut s1, mut s2) = two_sites(1);
    s1.dp
        .send(ControlMsg::UpdateSpd(s1_spd(SITE1, "s2svpn_to_site2")));
    s2.dp
        .send(ControlMsg::UpdateSpd(s1_spd(SITE2, "s2svpn_to_site1")));
    std::thread::sleep(Duration::from_millis(50));
    let srcs = ["192.168.100.10", "192.168.200.10"];
    for i in 0..20 {
        for src in srcs {
            assert!(s1.hosts[0].send(&ping(src, "172.16.10.11", i, 100)));
        }
    }
    let ev = s1.dp.events().recv_timeout(Duration::from_secs(5)).unwrap();
    let DataplaneEvent::Acquire { rule, .. } = ev else {
        panic!("expected Acquire, got {ev:?}");
    };
    assert_eq!(rule, RuleId(0), "the first permit's SA serves both entries");
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        s1.dp.events().try_recv().is_err(),
        "one Acquire for both entries"
    );
    let (e0, e1) = (
        s1.dp_rule_selector(RuleId(0)),
        s1.dp_rule_selector(RuleId(1)),
    );
    let spi = Spi::new(0, 1, 7);
    let (l, r) = ("10.255.1.2", "10.255.2.2");
    let mut out1 = child(spi, Direction::Outbound, 0, e0.clone(), l, r);
    let mut in2 = child(spi, Direction::Inbound, 0, e0.clone(), r, l);
    out1.more_selectors = vec![e1.clone()];
    // Without the second selector Site2 would drop BLUE's packets as
    // policy mismatches; with it both entries pass.
    in2.more_selectors = vec![e1];
    s2.dp.send(ControlMsg::InstallSa(Box::new(in2)));
    s1.dp.send(ControlMsg::InstallSa(Box::new(out1)));
    let got = collect(&mut s2.hosts, 40);
    assert_eq!(got.len(), 40, "both entries' queued packets delivered");
    let snaps = s1.dp.snapshot(Duration::from_secs(2));
    assert_eq!(snaps[0].hits[0], 20, "hits stay per entry");
    assert_eq!(snaps[0].hits[1], 20);
    let snaps2 = s2.dp.snapshot(Duration::from_secs(2));
    let sa = snaps2[0]
        .sas
        .iter()
        .find(|x| x.dir == Direction::Inbound)
        .unwrap();
    assert_eq!((sa.counters.decaps, sa.counters.policy_mismatch), (40, 0));
    s1.dp.stop();
    s2.dp.stop();
}

/// `InstallSaAfterPeer`: an IKE responder's additional child SA is not used
/// for sending until the peer's first packet on that child arrives, so no
/// packet goes out on keys the peer may not have installed yet.
#[test]
fn outbound_after_peer_waits_for_the_child_s_first_inbound_packet() {
    let (mut s1, mut s2) = two_sites(1);
    let rule = (0..2)
        .map(RuleId)
        .find(|r| s1.dp_rule_selector(*r).src.contains(&ip("192.168.100.10")))
        .unwrap();
    let sel = s1.dp_rule_selector(rule);
    let (a, b) = ("10.255.1.2", "10.255.2.2");
    // Child A: both directions, as after IKE_AUTH. Site2's rule for the
    // return traffic is the SPD's own entry for PURPLE → YELLOW.
    let r2 = (0..2u32)
        .find(|r| {
            let cfg = acl::parse(SITE2).unwrap();
            let spd = Spd::from_acl(&cfg, "s2svpn_to_site1", DefaultAction::Drop).unwrap();
            spd.rule(RuleId(*r))
                .is_some_and(|x| x.selector.dst.contains(&ip("192.168.100.10")))
        })
        .unwrap();
    let pair = |spi1: Spi, spi2: Spi, key: u8| {
        // Site1 → Site2 on spi2, Site2 → Site1 on spi1.
        let mut v = vec![
            (
                1,
                child(spi2, Direction::Outbound, rule.0, sel.clone(), a, b),
            ),
            (2, child(spi2, Direction::Inbound, r2, sel.clone(), b, a)),
            (
                2,
                child(spi1, Direction::Outbound, r2, sel.reversed(), b, a),
            ),
            (
                1,
                child(spi1, Direction::Inbound, rule.0, sel.reversed(), a, b),
            ),
        ];
        for (_, p) in v.iter_mut() {
            p.keys.encr[2] = key;
        }
        v
    };
    let send = |s: &Site, p: SaParams| s.dp.send(ControlMsg::InstallSa(Box::new(p)));
    let (a1, a2) = (Spi::new(0, 1, 1), Spi::new(0, 1, 2));
    for (site, p) in pair(a1, a2, 0xa) {
        send(if site == 1 { &s1 } else { &s2 }, p);
    }
    std::thread::sleep(Duration::from_millis(50));
    let back = |s2: &mut Site, s1: &mut Site, from: u16| {
        for i in 0..5 {
            assert!(s2.hosts[0].send(&ping("172.16.10.11", "192.168.100.10", from + i, 64)));
        }
        collect(&mut s1.hosts, 5).len()
    };
    assert_eq!(back(&mut s2, &mut s1, 0), 5);
    // Child B negotiated, Site2 responder: its inbound and the outbound
    // that waits; Site1 has not installed B yet.
    let (b1, b2) = (Spi::new(0, 1, 3), Spi::new(0, 1, 4));
    let mut b_sas = pair(b1, b2, 0xb);
    let (_, b_in2) = b_sas.remove(1);
    let (_, b_out2) = b_sas.remove(1);
    send(&s2, b_in2);
    s2.dp.send(ControlMsg::InstallSaAfterPeer {
        outbound: Box::new(b_out2),
        proof: b2,
    });
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        back(&mut s2, &mut s1, 10),
        5,
        "still on child A: nothing lost"
    );
    // Site1 installs B (the CREATE_CHILD_SA response arrived) and sends on it.
    for (_, p) in b_sas {
        send(&s1, p);
    }
    std::thread::sleep(Duration::from_millis(50));
    assert!(s1.hosts[0].send(&ping("192.168.100.10", "172.16.10.11", 99, 64)));
    assert_eq!(collect(&mut s2.hosts, 1).len(), 1);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(back(&mut s2, &mut s1, 20), 5, "now on child B");
    let snaps = s1.dp.snapshot(Duration::from_secs(2));
    let decaps = |spi: Spi| {
        snaps[0]
            .sas
            .iter()
            .find(|x| x.spi == spi && x.dir == Direction::Inbound)
            .map(|x| x.counters.decaps)
    };
    assert_eq!(decaps(a1), Some(10), "A carried the first two rounds");
    assert_eq!(decaps(b1), Some(5), "B carried the last once proven");
    s1.dp.stop();
    s2.dp.stop();
}
