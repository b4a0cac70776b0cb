//! `espgate demo`: the two-site walkthrough in one process, unprivileged.
//!
//! Site1 (10.255.1.2, YELLOW 192.168.100.0/24 and BLUE 192.168.200.0/24)
//! and Site2 (10.255.2.2, PURPLE 172.16.10.0/24) are two real gateways —
//! workers, SPD, ESP, the IKEv2 daemon — joined by an in-memory WAN link
//! that carries their IKE and ESP packets with the seed's addresses (binding
//! UDP 500 would need root). The LAN hosts are in-memory too: the demo pings
//! from YELLOW and BLUE, and the PURPLE hosts answer.
//!
//! It replays the seed: YELLOW → PURPLE brings the tunnel up on demand (4
//! IKE packets, first ping not lost), BLUE → PURPLE adds a second child SA
//! with CREATE_CHILD_SA (2 packets), then prints Site1's three show outputs
//! and checks what the seed shows, ending with `demo: N passed, M failed`.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use espgate_dataplane::api::Direction;
use espgate_dataplane::io::mem::{MemHost, MemLink};
use espgate_dataplane::wire::{Ipv4Packet, Ipv4Repr};

use crate::config::Config;
use crate::gateway::{Gateway, IkeIo, WorkerPorts};
use crate::show::ShowWhat;

/// What tells the two sites' configurations apart.
struct SiteSpec<'a> {
    name: &'a str,
    local: &'a str,
    lans: &'a str,
    peer_name: &'a str,
    peer: &'a str,
    acl: &'a str,
    from: &'a str,
    to: &'a str,
}

fn site_toml(s: &SiteSpec) -> String {
    let SiteSpec {
        name,
        local,
        lans,
        peer_name,
        peer,
        acl,
        from,
        to,
    } = s;
    format!(
        r#"
[gateway]
name = "{name}"
workers = 1
local_address = "{local}"

[[interfaces]]
name = "inside"
role = "lan"
backend = "mem"
prefixes = [{lans}]

[[interfaces]]
name = "outside"
role = "wan"
backend = "mem"

[ike]
proposals = ["aes256-sha256-modp2048"]

[[peers]]
name = "{peer_name}"
address = "{peer}"
psk = "demo-pre-shared-key"

[esp]
proposals = ["aes256-sha256"]
pfs = "modp2048"

[acl]
name = "{acl}"
text = """
object-group network SITE1
 network-object 192.168.100.0 255.255.255.0
 network-object 192.168.200.0 255.255.255.0
object-group network SITE2
 network-object 172.16.10.0 255.255.255.0
access-list {acl} extended permit ip object-group {from} object-group {to} log default
"""
"#
    )
}

/// The demo's own verdicts.
struct Checks {
    passed: usize,
    failed: usize,
}

impl Checks {
    fn check(&mut self, ok: bool, what: impl AsRef<str>) {
        let mark = if ok { "ok  " } else { "FAIL" };
        println!("  [{mark}] {}", what.as_ref());
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
    }
}

/// The Internet checksum (RFC 1071) of an ICMP message.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 ICMP echo (request `kind` 8, reply 0) with `len` data bytes.
fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, kind: u8, id: u16, seq: u16, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; 20 + 8 + len];
    let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
    Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: 1,
        payload_len: 8 + len,
        ttl: 64,
        dscp_ecn: 0,
        dont_frag: true, // like ping
    }
    .emit(&mut ip);
    let icmp = ip.payload_mut();
    icmp[0] = kind;
    icmp[4..6].copy_from_slice(&id.to_be_bytes());
    icmp[6..8].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in icmp[8..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let c = checksum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// (src, dst, type, seq) of an ICMP echo packet.
fn parse_echo(p: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u8, u16)> {
    if p.len() < 28 || p[0] >> 4 != 4 || p[9] != 1 {
        return None;
    }
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    Some((src, dst, p[20], u16::from_be_bytes([p[26], p[27]])))
}

/// PURPLE's hosts: answer every echo request that reaches them.
fn spawn_responder(mut lan: MemHost, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut answered = 0;
        while !stop.load(Ordering::Relaxed) {
            let pkts = lan.recv_all();
            if pkts.is_empty() {
                std::thread::sleep(Duration::from_micros(200));
            }
            for p in pkts {
                if let Some((src, dst, 8, seq)) = parse_echo(&p) {
                    let id = u16::from_be_bytes([p[24], p[25]]);
                    let reply = icmp_echo(dst, src, 0, id, seq, p.len() - 28);
                    if lan.send(&reply) {
                        answered += 1;
                    }
                }
            }
        }
        answered
    })
}

/// `ping -c count -s size dst` from `src` on Site1's LAN: one request at a
/// time, each waiting up to 2 s. Returns the replies' round-trip times.
fn ping(lan: &mut MemHost, src: &str, dst: &str, count: u16, size: usize) -> Vec<Duration> {
    let (src, dst): (Ipv4Addr, Ipv4Addr) = (
        src.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
        dst.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
    );
    println!("Site1-Host:~$ ping -s {size} -c {count} {dst}");
    println!("PING {dst} ({dst}): {size} data bytes");
    let mut rtts = Vec::new();
    for seq in 0..count {
        let sent = Instant::now();
        lan.send(&icmp_echo(src, dst, 8, 0x4567, seq, size));
        let deadline = sent + Duration::from_secs(2);
        'wait: while Instant::now() < deadline {
            for p in lan.recv_all() {
                if parse_echo(&p) == Some((dst, src, 0, seq)) {
                    let rtt = sent.elapsed();
                    println!(
                        "{} bytes from {dst}: seq={seq} ttl=64 time={:.3} ms",
                        p.len() - 20,
                        rtt.as_secs_f64() * 1e3
                    );
                    rtts.push(rtt);
                    break 'wait;
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let lost = count as usize - rtts.len();
    println!(
        "--- {dst} ping statistics ---\n{count} packets transmitted, {} packets received, {}% packet loss\n",
        rtts.len(),
        lost * 100 / count.max(1) as usize
    );
    rtts
}

fn ike_out(g: &Gateway) -> u64 {
    g.ike_stats().datagrams_out
}

fn print_log(gws: &[&Gateway]) {
    for g in gws {
        for l in g.take_log() {
            println!("  log {l}");
        }
    }
}

/// Runs the demo; `Ok(true)` when every check passed.
pub fn run() -> anyhow::Result<bool> {
    let site1_toml = site_toml(&SiteSpec {
        name: "site1",
        local: "10.255.1.2",
        lans: r#""192.168.100.0/24", "192.168.200.0/24""#,
        peer_name: "site2",
        peer: "10.255.2.2",
        acl: "s2svpn_to_site2",
        from: "SITE1",
        to: "SITE2",
    });
    let site2_toml = site_toml(&SiteSpec {
        name: "site2",
        local: "10.255.2.2",
        lans: r#""172.16.10.0/24""#,
        peer_name: "site1",
        peer: "10.255.1.2",
        acl: "s2svpn_to_site1",
        from: "SITE2",
        to: "SITE1",
    });
    let cfg1 =
        Config::from_str_at(&site1_toml, Path::new("demo/site1.toml")).context("demo config")?;
    let cfg2 =
        Config::from_str_at(&site2_toml, Path::new("demo/site2.toml")).context("demo config")?;
    let (wan1, wan2) = MemLink::pair(1024);
    let (lan1, host1) = MemLink::pair(1024);
    let (lan2, host2) = MemLink::pair(1024);
    let ports = |lan, wan| {
        vec![WorkerPorts {
            lan: Box::new(lan),
            wan: Box::new(wan),
            core: None,
        }]
    };
    let mut site1 = Gateway::start(&cfg1, ports(lan1, wan1), IkeIo::Dataplane)?;
    let mut site2 = Gateway::start(&cfg2, ports(lan2, wan2), IkeIo::Dataplane)?;
    let mut lan = MemHost::new(host1, 1024);
    let stop = Arc::new(AtomicBool::new(false));
    let responder = spawn_responder(MemHost::new(host2, 1024), stop.clone());
    let mut checks = Checks {
        passed: 0,
        failed: 0,
    };

    println!("== espgate demo: the two-site walkthrough (Site1 10.255.1.2 <-> Site2 10.255.2.2)\n");
    println!("Site1# show crypto ikev2 sa");
    print!("{}", site1.show(ShowWhat::IkeSa, false));
    println!();

    println!("== 1. YELLOW -> PURPLE: interesting traffic brings the tunnel up\n");
    let yellow = ping(&mut lan, "192.168.100.10", "172.16.10.11", 5, 100);
    print_log(&[&site1, &site2]);
    let init_auth = ike_out(&site1) + ike_out(&site2);
    checks.check(
        yellow.len() == 5,
        format!(
            "YELLOW->PURPLE: {}/5 echo replies (first ping not lost)",
            yellow.len()
        ),
    );
    checks.check(
        init_auth == 4,
        format!("IKE_SA_INIT + IKE_AUTH took {init_auth} packets (expected 4)"),
    );

    println!("\n== 2. BLUE -> PURPLE: a second child SA under the same IKE SA\n");
    let blue = ping(&mut lan, "192.168.200.10", "172.16.10.21", 5, 200);
    print_log(&[&site1, &site2]);
    let create_child = ike_out(&site1) + ike_out(&site2) - init_auth;
    checks.check(
        blue.len() == 5,
        format!(
            "BLUE->PURPLE: {}/5 echo replies (first ping not lost)",
            blue.len()
        ),
    );
    checks.check(
        create_child == 2,
        format!("CREATE_CHILD_SA took {create_child} packets (expected 2)"),
    );

    println!("\n== 3. Site1's view\n");
    for (cmd, what) in [
        ("show crypto ikev2 sa", ShowWhat::IkeSa),
        ("show crypto ipsec sa", ShowWhat::IpsecSa),
        ("show access-list", ShowWhat::AccessList),
    ] {
        println!("Site1# {cmd}");
        println!("{}", site1.show(what, false));
    }

    println!("== 4. Checks\n");
    let ike1 = site1.ike_sas();
    let ike2 = site2.ike_sas();
    checks.check(
        ike1.len() == 1 && ike2.len() == 1,
        format!("one IKE SA on each side ({} / {})", ike1.len(), ike2.len()),
    );
    let children1: Vec<_> = ike1.iter().flat_map(|s| s.children.iter()).collect();
    let children2: Vec<_> = ike2.iter().flat_map(|s| s.children.iter()).collect();
    checks.check(
        children1.len() == 2,
        format!(
            "two child SAs on Site1 (one per ACL entry): {}",
            children1.len()
        ),
    );
    let spis_match = children1.iter().all(|c| {
        children2
            .iter()
            .any(|d| d.spi_in == c.spi_out && d.spi_out == c.spi_in)
    });
    checks.check(
        spis_match && children2.len() == children1.len(),
        "SPIs in/out of every child SA match the peer's out/in",
    );
    let snaps1: Vec<_> = site1.workers().into_iter().flat_map(|w| w.sas).collect();
    let snaps2: Vec<_> = site2.workers().into_iter().flat_map(|w| w.sas).collect();
    let mut balanced = !snaps1.is_empty();
    for o in snaps1.iter().filter(|s| s.dir == Direction::Outbound) {
        let peer_in = snaps2
            .iter()
            .find(|s| s.dir == Direction::Inbound && s.spi == o.spi);
        let decaps = peer_in.map(|s| s.counters.decaps).unwrap_or(0);
        println!(
            "    SA {}: Site1 encaps {} / Site2 decaps {decaps}",
            o.spi, o.counters.encaps
        );
        balanced &= peer_in.is_some() && o.counters.encaps == decaps && o.counters.encaps >= 5;
    }
    checks.check(
        balanced,
        "encaps on Site1 == decaps on Site2 for every child SA",
    );
    let bitmaps: Vec<u64> = snaps1
        .iter()
        .filter(|s| s.dir == Direction::Inbound)
        .map(|s| s.replay_bits)
        .collect();
    checks.check(
        bitmaps.len() == 2 && bitmaps.iter().all(|b| *b == 0x1f),
        format!("inbound anti-replay bitmaps {bitmaps:x?} (5 replies each: 0x1F, as in the seed)"),
    );
    let acl = site1.acl_view();
    let hits: Vec<u64> = acl
        .lines
        .iter()
        .flat_map(|l| &l.entries)
        .map(|e| e.hitcnt)
        .collect();
    checks.check(
        hits.len() == 2 && hits.iter().all(|h| *h == 5),
        format!("access-list hitcnt per entry: {hits:?} (5 pings each)"),
    );
    let drops: u64 = site1
        .workers()
        .iter()
        .chain(site2.workers().iter())
        .flat_map(|w| w.drops.iter())
        .map(|(_, n)| n)
        .sum();
    checks.check(
        drops == 0,
        format!("packets dropped by either gateway: {drops}"),
    );

    // Shutting Site1 down deletes its IKE SA; the peer must drop it (and its
    // child SAs) at once rather than wait for dead-peer detection.
    let deleted = site1.delete_all();
    let deadline = Instant::now() + Duration::from_secs(2);
    while !site2.ike_sas().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = site2.ike_sas().len();
    checks.check(
        deleted == 1 && left == 0,
        format!("Site1 shutdown sent Delete for {deleted} IKE SA(s); Site2 has {left} left"),
    );

    stop.store(true, Ordering::Relaxed);
    let _ = responder.join();
    site1.stop();
    site2.stop();
    println!("\ndemo: {} passed, {} failed", checks.passed, checks.failed);
    Ok(checks.failed == 0)
}
