//! The seed scenario end to end over veth (root): two real `espgate run`
//! processes with the af_xdp backend in the namespaces of
//! scripts/topology.sh, real pings between the sites' hosts, the show
//! outputs of both gateways, and a capture of the WAN.
//!
//! Skips (with the reason printed) when not root, when AF_XDP or a tool is
//! missing; with ESPGATE_CI=1 and root, a missing tool or a failure to set
//! up is a failure.

mod e2e;
#[path = "common/netns.rs"]
mod netns;
#[path = "common/strongswan.rs"]
mod strongswan;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use e2e::*;

/// The veth tests each build a whole topology; one at a time keeps them
/// from starving each other on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

const TOOLS: &[&str] = &["ip", "ethtool", "ping", "tcpdump", "tshark", "iperf3"];

/// Why the test cannot run, if it cannot.
fn precondition(test: &str) -> Option<String> {
    if !is_root() {
        // Not a CI failure: CI runs the root tests as root.
        eprintln!("SKIP {test}: needs root (network namespaces, XDP)");
        return Some("not root".into());
    }
    if !af_xdp_available() {
        return Some("AF_XDP sockets are not available in this kernel".into());
    }
    for t in TOOLS {
        if !have_tool(t) {
            return Some(format!("{t} not found (scripts/install-deps.sh)"));
        }
    }
    None
}

/// Whether the test can run; if not, says why (see [`skip`]; not being
/// root was already printed).
fn runnable(test: &str) -> bool {
    match precondition(test) {
        None => true,
        Some(why) => {
            if why != "not root" {
                skip(test, &why);
            }
            false
        }
    }
}

/// Prints why the test skips; in CI (and as root) panics instead.
fn skip(test: &str, reason: &str) {
    if ci() && is_root() {
        panic!("{test}: cannot run: {reason}");
    }
    eprintln!("SKIP {test}: {reason}");
}

fn prefix(tag: &str) -> String {
    format!("e2e{}{tag}", std::process::id() % 100_000)
}

/// The child of `children` whose selector is `src` → `dst`.
fn child<'a>(children: &'a [ChildSa], src: &str, dst: &str) -> &'a ChildSa {
    children
        .iter()
        .find(|c| c.src == src && c.dst == dst)
        .unwrap_or_else(|| panic!("no child SA {src} -> {dst} in {children:?}"))
}

fn esp<'a>(sas: &'a [EspSa], src: &str, dst: &str) -> &'a EspSa {
    sas.iter()
        .find(|c| c.src == src && c.dst == dst)
        .unwrap_or_else(|| panic!("no ipsec sa {src} -> {dst} in {sas:?}"))
}

const YELLOW: &str = "192.168.100.0/24";
const BLUE: &str = "192.168.200.0/24";
const PURPLE: &str = "172.16.10.0/24";

#[test]
fn seed_over_veth_af_xdp() {
    seed_over_veth("seed_over_veth_af_xdp", "a", 1);
}

/// Two workers per gateway on veths with two queues: the second child SA's
/// SPI lands in the second worker's shard.
#[test]
fn seed_over_veth_af_xdp_two_workers() {
    seed_over_veth("seed_over_veth_af_xdp_two_workers", "w", 2);
}

fn seed_over_veth(test: &str, tag: &str, workers: usize) {
    if !runnable(test) {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("temp dir");
    let queues = workers.to_string();
    let topo = match Topology::up(&prefix(tag), &["--queues", &queues]) {
        Ok(t) => t,
        Err(e) => return skip(test, &format!("topology: {e}")),
    };
    let mut gws = match start_sites(&topo, dir.path(), workers, false) {
        Ok(g) => g,
        Err(e) => return skip(test, &format!("espgate run: {e}")),
    };
    let (gw1, gw2) = (&gws[0], &gws[1]);

    // The WAN as the WAN router sees it on Site1's side, from before the
    // first packet (so IKE_SA_INIT is in it) to after the last ping.
    let cap = Capture::start(
        &topo.ns("wan"),
        "to-gw1",
        &dir.path().join("wan.pcap"),
        20_000,
    )
    .expect("tcpdump on the WAN");

    // YELLOW → PURPLE: the tunnel comes up on demand, the first ping is
    // held while it does and answered.
    let y = ping(&topo.ns("y"), "172.16.10.11", 5, "0.2", 10);
    println!("YELLOW -> PURPLE:\n{}", y.text);
    assert!(
        y.replied.contains(&1),
        "first ping (icmp_seq=1) not answered:\n{}",
        y.text
    );
    assert_eq!(y.received, 5, "YELLOW -> PURPLE lost pings:\n{}", y.text);

    // BLUE → PURPLE: a second child SA on the same IKE SA.
    let b = ping(&topo.ns("b"), "172.16.10.21", 5, "0.2", 10);
    println!("BLUE -> PURPLE:\n{}", b.text);
    assert!(
        b.replied.contains(&1),
        "BLUE's first ping lost:\n{}",
        b.text
    );
    assert_eq!(b.received, 5, "BLUE -> PURPLE lost pings:\n{}", b.text);

    // And back: PURPLE → YELLOW over the existing SA.
    let p = ping(&topo.ns("p"), "192.168.100.10", 3, "0.2", 5);
    assert_eq!(p.received, 3, "PURPLE -> YELLOW lost pings:\n{}", p.text);
    std::thread::sleep(Duration::from_millis(300));
    let pcap = cap.finish();

    println!("{}", gw1.show_text("ike-sa"));
    println!("{}", gw1.show_text("ipsec-sa"));

    // One IKE SA, two child SAs, SPIs crossed between the sites.
    let ike1 = ike_children(&gw1.show("ike-sa"));
    let ike2 = ike_children(&gw2.show("ike-sa"));
    assert_eq!(ike1.len(), 1, "site1 IKE SAs: {ike1:?}");
    assert_eq!(ike2.len(), 1, "site2 IKE SAs: {ike2:?}");
    assert_eq!(ike1[0].len(), 2, "site1 child SAs: {ike1:?}");
    assert_eq!(ike2[0].len(), 2, "site2 child SAs: {ike2:?}");
    for lan in [YELLOW, BLUE] {
        let a = child(&ike1[0], lan, PURPLE);
        let b = child(&ike2[0], PURPLE, lan);
        assert_eq!(a.spi_in, b.spi_out, "{lan}: site1 in != site2 out");
        assert_eq!(a.spi_out, b.spi_in, "{lan}: site1 out != site2 in");
    }

    // Every packet one side encrypted, the other decrypted.
    let esp1 = ipsec_sas(&gw1.show("ipsec-sa"));
    let esp2 = ipsec_sas(&gw2.show("ipsec-sa"));
    assert_eq!(esp1.len(), 2, "site1 ipsec sas: {esp1:?}");
    assert_eq!(esp2.len(), 2, "site2 ipsec sas: {esp2:?}");
    for lan in [YELLOW, BLUE] {
        let a = esp(&esp1, lan, PURPLE);
        let b = esp(&esp2, PURPLE, lan);
        println!(
            "{lan}: site1 encaps {} decaps {}, site2 encaps {} decaps {}",
            a.encaps, a.decaps, b.encaps, b.decaps
        );
        assert!(a.encaps >= 5, "{lan}: site1 encaps {}", a.encaps);
        assert_eq!(a.encaps, b.decaps, "{lan}: site1 encaps != site2 decaps");
        assert_eq!(b.encaps, a.decaps, "{lan}: site2 encaps != site1 decaps");
        for s in [a, b] {
            assert_eq!((s.auth_fail, s.replay), (0, 0), "{lan}: {s:?}");
            assert!(!s.udp_encap, "{lan}: UDP-encapsulated without NAT: {s:?}");
        }
    }

    // The WAN carries IKE and ESP only, and tshark decodes our ESP with
    // the SAs' SPIs.
    let frames = tshark_frames(&pcap).expect("tshark");
    check_wan(&frames, &ike1[0], false);
    let esp_count = frames.iter().filter(|f| f.esp_spi.is_some()).count();
    let ike: Vec<(u8, u32, bool)> = frames
        .iter()
        .filter_map(|f| Some((f.ike_exchange?, f.ike_msgid?, f.ike_response)))
        .collect();
    println!(
        "WAN capture: {} IPv4 frames, {esp_count} ESP, {} IKE (exchange, message id, response): {ike:?}",
        frames.len(),
        ike.len()
    );
    // IKE_SA_INIT and IKE_AUTH (request + response each), then
    // CREATE_CHILD_SA for BLUE's child; retransmissions (a debug build on
    // a loaded machine is slow at modp2048) repeat these, and DPD would
    // add INFORMATIONAL exchanges.
    let exchanges: BTreeSet<(u8, u32, bool)> =
        ike.iter().copied().filter(|&(x, _, _)| x != 37).collect();
    let want: BTreeSet<(u8, u32, bool)> = [
        (34, 0, false),
        (34, 0, true),
        (35, 1, false),
        (35, 1, true),
        (36, 2, false),
        (36, 2, true),
    ]
    .into();
    assert_eq!(exchanges, want, "IKE messages on the WAN");

    load(&topo, &gws);
    for g in &mut gws {
        assert!(g.alive(), "{} exited:\n{}", g.name, g.log_text());
    }
    // After the load: still no authentication or replay failures.
    for g in &gws {
        for s in ipsec_sas(&g.show("ipsec-sa")) {
            assert_eq!((s.auth_fail, s.replay), (0, 0), "{}: {s:?}", g.name);
        }
    }
    drop(gws);
    drop(topo);
}

/// `espgate run` for Site1 and Site2 in their gateway namespaces, with
/// `workers` workers and, if `per_worker`, `ike.sa_per_worker` set.
fn start_sites(
    topo: &Topology,
    dir: &std::path::Path,
    workers: usize,
    per_worker: bool,
) -> std::io::Result<Vec<Gateway>> {
    let mut gws = Vec::new();
    for site in [1u8, 2] {
        let sock = dir.join(format!("site{site}.sock"));
        let cfg = dir.join(format!("site{site}.toml"));
        let mut text = gateway_config(site, workers, false, &sock);
        if per_worker {
            text = text.replace(
                "force_encap = false\n",
                "force_encap = false\nsa_per_worker = true\n",
            );
            assert!(text.contains("sa_per_worker = true"));
        }
        std::fs::write(&cfg, text)?;
        gws.push(Gateway::start(
            &format!("site{site}"),
            &topo.ns(&format!("gw{site}")),
            &cfg,
            dir,
        )?);
    }
    Ok(gws)
}

/// `ike.sa_per_worker` between two espgates with 2 workers each: every ACL
/// entry gets one child SA per worker (RFC 9611 SA_RESOURCE_INFO), paired
/// by worker index, and traffic still flows both ways with matching
/// counters.
#[test]
fn per_worker_sas_over_veth_two_workers() {
    let test = "per_worker_sas_over_veth_two_workers";
    if !runnable(test) {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("temp dir");
    let topo = match Topology::up(&prefix("r"), &["--queues", "2"]) {
        Ok(t) => t,
        Err(e) => return skip(test, &format!("topology: {e}")),
    };
    let gws = match start_sites(&topo, dir.path(), 2, true) {
        Ok(g) => g,
        Err(e) => return skip(test, &format!("espgate run: {e}")),
    };
    let (gw1, gw2) = (&gws[0], &gws[1]);
    for (ns, dst) in [("y", "172.16.10.11"), ("b", "172.16.10.21")] {
        let r = ping(&topo.ns(ns), dst, 5, "0.2", 10);
        assert_eq!(r.received, 5, "{ns} -> {dst} lost pings:\n{}", r.text);
    }
    // The second worker's child SAs follow the first ones right away.
    let mut ike1 = Vec::new();
    for _ in 0..50 {
        ike1 = ike_children(&gw1.show("ike-sa"));
        if ike1.first().is_some_and(|c| c.len() >= 4) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ike2 = ike_children(&gw2.show("ike-sa"));
    println!("{}", gw1.show_text("ike-sa"));
    assert_eq!((ike1.len(), ike2.len()), (1, 1), "one IKE SA each");
    assert_eq!(ike1[0].len(), 4, "two child SAs per entry: {ike1:?}");
    assert_eq!(ike2[0].len(), 4, "two child SAs per entry: {ike2:?}");
    for lan in [YELLOW, BLUE] {
        let mine: Vec<&ChildSa> = ike1[0]
            .iter()
            .filter(|c| c.src == lan && c.dst == PURPLE)
            .collect();
        assert_eq!(mine.len(), 2, "{lan}: {mine:?}");
        let shards: BTreeSet<u8> = mine
            .iter()
            .map(|c| espgate_dataplane::api::Spi(c.spi_in).shard())
            .collect();
        assert_eq!(shards, [0, 1].into(), "{lan}: one inbound SA per worker");
        for a in mine {
            let b = ike2[0]
                .iter()
                .find(|b| b.spi_in == a.spi_out)
                .unwrap_or_else(|| panic!("{lan}: no site2 child for {a:?}"));
            assert_eq!(b.spi_out, a.spi_in, "{lan}: SPIs not crossed");
            assert_eq!((b.src.as_str(), b.dst.as_str()), (PURPLE, lan));
        }
    }
    let p = ping(&topo.ns("p"), "192.168.100.10", 3, "0.2", 5);
    assert_eq!(p.received, 3, "PURPLE -> YELLOW lost pings:\n{}", p.text);
    let esp1 = ipsec_sas(&gw1.show("ipsec-sa"));
    let esp2 = ipsec_sas(&gw2.show("ipsec-sa"));
    for a in &esp1 {
        let b = esp2
            .iter()
            .find(|b| b.spi_in == a.spi_out)
            .unwrap_or_else(|| panic!("no site2 SA for {a:?}"));
        println!(
            "{} -> {}: out 0x{:08x} encaps {} / peer decaps {}",
            a.src, a.dst, a.spi_out, a.encaps, b.decaps
        );
        assert_eq!(a.encaps, b.decaps, "{a:?} vs {b:?}");
        assert_eq!(b.encaps, a.decaps, "{a:?} vs {b:?}");
        assert_eq!((a.auth_fail, a.replay, b.auth_fail, b.replay), (0, 0, 0, 0));
    }
    let sent: u64 = esp1.iter().map(|a| a.encaps).sum();
    assert!(sent >= 10, "site1 encrypted {sent} packets");
    drop(gws);
    drop(topo);
}

/// Every IPv4 frame on the WAN is IKE (UDP 500/4500) or ESP (proto 50, or
/// in UDP 4500 when `encap`); none carries an inner address; every ESP SPI
/// is one of the child SAs', in the right direction, and all of them are
/// seen.
fn check_wan(frames: &[Frame], site1_children: &[ChildSa], encap: bool) {
    assert!(!frames.is_empty(), "nothing captured on the WAN");
    let mut out_spis = BTreeSet::new();
    let mut in_spis = BTreeSet::new();
    for f in frames {
        assert!(
            !is_inner(&f.src) && !is_inner(&f.dst),
            "cleartext LAN packet on the WAN: {f:?}"
        );
        assert!(!f.icmp, "ICMP on the WAN: {f:?}");
        let ike = f.proto == 17
            && (matches!(f.dport, Some(500 | 4500)) || matches!(f.sport, Some(500 | 4500)));
        assert!(
            f.proto == 50 || ike,
            "neither IKE nor ESP on the WAN: {f:?}"
        );
        if let Some(spi) = f.esp_spi {
            if encap {
                assert_eq!(f.proto, 17, "ESP not in UDP with force_encap: {f:?}");
            } else {
                assert_eq!(f.proto, 50, "ESP in UDP without NAT: {f:?}");
            }
            match (f.src.as_str(), f.dst.as_str()) {
                ("10.255.1.2", "10.255.2.2") => out_spis.insert(spi),
                ("10.255.2.2", "10.255.1.2") => in_spis.insert(spi),
                _ => panic!("ESP between unexpected addresses: {f:?}"),
            };
        }
    }
    let want_out: BTreeSet<u32> = site1_children.iter().map(|c| c.spi_out).collect();
    let want_in: BTreeSet<u32> = site1_children.iter().map(|c| c.spi_in).collect();
    assert_eq!(out_spis, want_out, "SPIs site1 -> site2 on the wire");
    assert_eq!(in_spis, want_in, "SPIs site2 -> site1 on the wire");
}

/// Modest load through the tunnel: a fast ping burst must lose nothing;
/// iperf3 (TCP with an MSS that fits the ESP overhead into the WAN MTU,
/// then UDP) is measured and printed, not asserted on beyond "it ran".
/// For UDP the loss is traced: packets Site1 encrypted, Site2 decrypted,
/// and datagrams PURPLE's kernel dropped for a full socket buffer.
fn load(topo: &Topology, gws: &[Gateway]) {
    let burst = ping(&topo.ns("y"), "172.16.10.11", 1000, "0.002", 5);
    println!(
        "ping burst YELLOW -> PURPLE: {}/{} answered",
        burst.received, burst.transmitted
    );
    assert_eq!(burst.transmitted, 1000, "{}", burst.text);
    assert_eq!(
        burst.received, 1000,
        "ping burst lost packets:\n{}",
        burst.text
    );

    for (name, args) in [
        ("TCP", vec!["-t", "3", "-M", "1300"]),
        ("UDP 20M", vec!["-t", "3", "-u", "-b", "20M", "-l", "1200"]),
    ] {
        let before = yellow_purple_counters(topo, gws);
        let mut server = in_ns(&topo.ns("p"), "iperf3")
            .args(["-s", "-1", "-B", "172.16.10.11"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("iperf3 server");
        std::thread::sleep(Duration::from_millis(500));
        let out = run_bounded(
            in_ns(&topo.ns("y"), "iperf3")
                .args(["-c", "172.16.10.11", "--connect-timeout", "5000"])
                .args(&args),
            Duration::from_secs(30),
        );
        stop_child(&mut server, libc::SIGTERM, Duration::from_secs(3));
        let after = yellow_purple_counters(topo, gws);
        match out {
            Ok(o) => {
                let text = String::from_utf8_lossy(&o.stdout);
                let summary: Vec<&str> = text
                    .lines()
                    .filter(|l| l.contains("sender") || l.contains("receiver"))
                    .collect();
                println!("iperf3 {name} YELLOW -> PURPLE:\n{}", summary.join("\n"));
                println!(
                    "  site1 encrypted {}, site2 decrypted {}, PURPLE socket-buffer drops {}, veth drops on the path {}",
                    after.0 - before.0,
                    after.1 - before.1,
                    after.2 - before.2,
                    after.3 - before.3
                );
                assert!(
                    o.status.success(),
                    "iperf3 {name}: {}\n{}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            Err(e) => panic!("iperf3 {name}: {e}"),
        }
    }
}

/// (Site1 encaps on YELLOW's child, Site2 decaps on it, PURPLE's
/// UdpRcvbufErrors, rx + tx drops of the veths from r1 to r2).
fn yellow_purple_counters(topo: &Topology, gws: &[Gateway]) -> (u64, u64, u64, u64) {
    let mut veth_drops = 0;
    for (role, ifname) in [
        ("r1", "lan0"),
        ("gw1", "lan0"),
        ("gw1", "wan0"),
        ("wan", "to-gw1"),
        ("wan", "to-gw2"),
        ("gw2", "wan0"),
        ("gw2", "lan0"),
        ("r2", "lan0"),
    ] {
        let stats = run_ok(
            std::process::Command::new("ip").args([
                "-n",
                &topo.ns(role),
                "-s",
                "-j",
                "link",
                "show",
                ifname,
            ]),
            Duration::from_secs(5),
        )
        .ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok());
        if let Some(v) = stats {
            let s = &v[0]["stats64"];
            veth_drops +=
                s["rx"]["dropped"].as_u64().unwrap_or(0) + s["tx"]["dropped"].as_u64().unwrap_or(0);
        }
    }
    let e1 = ipsec_sas(&gws[0].show("ipsec-sa"));
    let e2 = ipsec_sas(&gws[1].show("ipsec-sa"));
    let snmp = run_ok(
        in_ns(&topo.ns("p"), "cat").arg("/proc/net/snmp"),
        Duration::from_secs(5),
    )
    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    .unwrap_or_default();
    (
        esp(&e1, YELLOW, PURPLE).encaps,
        esp(&e2, PURPLE, YELLOW).decaps,
        snmp_counter(&snmp, "Udp", "RcvbufErrors").unwrap_or(0),
        veth_drops,
    )
}

// ---------------------------------------------------------------------------
// strongSwan (kernel-libipsec, encap=yes) as Site2

const PSK: &str = "e2e-veth-pre-shared-key";

/// espgate (Site1) brings the tunnel up on demand from YELLOW's first ping,
/// then BLUE's child with CREATE_CHILD_SA.
#[test]
fn seed_over_veth_strongswan_site2_espgate_initiates() {
    swan_site2(
        "seed_over_veth_strongswan_site2_espgate_initiates",
        "i",
        true,
    );
}

/// strongSwan initiates both children (`swanctl --initiate`); espgate
/// answers.
#[test]
fn seed_over_veth_strongswan_site2_strongswan_initiates() {
    swan_site2(
        "seed_over_veth_strongswan_site2_strongswan_initiates",
        "r",
        false,
    );
}

/// Moves Site2's gateway interfaces from the topology's namespace into a
/// fresh one (`Charon` runs in a [`netns::NetNs`]) and sets them up again:
/// same addresses and routes, forwarding on (strongSwan routes LAN traffic
/// through its TUN device).
fn swan_gateway_ns(topo: &Topology) -> std::io::Result<netns::NetNs> {
    let gw2 = netns::NetNs::new("gw2")?;
    for ifname in ["wan0", "lan0"] {
        run_ok(
            std::process::Command::new("ip").args([
                "-n",
                &topo.ns("gw2"),
                "link",
                "set",
                ifname,
                "netns",
                gw2.name(),
            ]),
            Duration::from_secs(10),
        )?;
        gw2.ip(&["link", "set", ifname, "up"])?;
    }
    gw2.ip(&["addr", "add", "10.255.2.2/24", "dev", "wan0"])?;
    gw2.ip(&["addr", "add", "10.2.0.1/30", "dev", "lan0"])?;
    // charon wants an address of its own inside local_ts (PURPLE) as
    // the source of the routes it installs; the LAN router has .1.
    gw2.ip(&["addr", "add", "172.16.10.254/32", "dev", "lo"])?;
    gw2.ip(&["route", "add", "172.16.10.0/24", "via", "10.2.0.2"])?;
    gw2.ip(&["route", "add", "default", "via", "10.255.2.1"])?;
    gw2.make_router()?;
    Ok(gw2)
}

fn swan_site2(test: &str, tag: &str, espgate_initiates: bool) {
    if !runnable(test) {
        return;
    }
    if let Err(why) = strongswan::available() {
        return skip(test, &why);
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("temp dir");
    let topo = match Topology::up(&prefix(tag), &[]) {
        Ok(t) => t,
        Err(e) => return skip(test, &format!("topology: {e}")),
    };
    let gw2 = match swan_gateway_ns(&topo) {
        Ok(n) => n,
        Err(e) => return skip(test, &format!("Site2 namespace: {e}")),
    };
    let mut swan_cfg = strongswan::SwanConfig::new(strongswan::Site::Site2);
    swan_cfg.psk = PSK.to_string();
    let charon = match strongswan::Charon::spawn(&gw2, &swan_cfg) {
        Ok(c) => c,
        Err(e) => return skip(test, &format!("charon: {e}")),
    };
    let sock = dir.path().join("site1.sock");
    let cfg = dir.path().join("site1.toml");
    // encap = yes on strongSwan's side: ESP in UDP 4500 both ways, so we
    // force it too (our NAT-D then claims a NAT when we initiate).
    std::fs::write(&cfg, gateway_config(1, 1, true, &sock)).expect("write config");
    let mut gw1 = match Gateway::start("site1", &topo.ns("gw1"), &cfg, dir.path()) {
        Ok(g) => g,
        Err(e) => return skip(test, &format!("espgate run: {e}")),
    };

    let cap = Capture::start(
        &topo.ns("wan"),
        "to-gw1",
        &dir.path().join("wan.pcap"),
        20_000,
    )
    .expect("tcpdump on the WAN");
    if espgate_initiates {
        let y = ping(&topo.ns("y"), "172.16.10.11", 5, "0.2", 10);
        println!("YELLOW -> PURPLE:\n{}", y.text);
        assert!(y.replied.contains(&1), "first ping lost:\n{}", y.text);
        assert_eq!(y.received, 5, "YELLOW -> PURPLE:\n{}", y.text);
        let b = ping(&topo.ns("b"), "172.16.10.11", 5, "0.2", 10);
        println!("BLUE -> PURPLE:\n{}", b.text);
        assert!(
            b.replied.contains(&1),
            "BLUE's first ping lost:\n{}",
            b.text
        );
        assert_eq!(b.received, 5, "BLUE -> PURPLE:\n{}", b.text);
    } else {
        charon
            .initiate("YELLOW", 20)
            .expect("swanctl --initiate YELLOW");
        charon
            .initiate("BLUE", 20)
            .expect("swanctl --initiate BLUE");
        for host in ["y", "b"] {
            let p = ping(&topo.ns(host), "172.16.10.11", 5, "0.2", 5);
            assert_eq!(p.received, 5, "{host} -> PURPLE:\n{}", p.text);
        }
    }
    let p = ping(&topo.ns("p"), "192.168.200.10", 3, "0.2", 5);
    assert_eq!(p.received, 3, "PURPLE -> BLUE:\n{}", p.text);
    std::thread::sleep(Duration::from_millis(300));
    let pcap = cap.finish();
    println!("{}", gw1.show_text("ike-sa"));

    // One IKE SA with two children on each side, SPIs crossed, both ends
    // agreeing on UDP encapsulation.
    let ours = ike_children(&gw1.show("ike-sa"));
    let theirs = charon.list_sas().expect("swanctl --list-sas");
    assert_eq!(ours.len(), 1, "espgate IKE SAs: {ours:?}");
    assert_eq!(theirs.len(), 1, "strongSwan IKE SAs: {theirs:#?}");
    assert_eq!(ours[0].len(), 2, "espgate child SAs: {ours:?}");
    assert_eq!(theirs[0].children.len(), 2, "strongSwan: {theirs:#?}");
    assert_eq!(
        theirs[0].initiator, !espgate_initiates,
        "strongSwan's initiator flag"
    );
    assert_eq!(
        (theirs[0].local_port, theirs[0].remote_port),
        (4500, 4500),
        "IKE floated to 4500"
    );
    let esp1 = ipsec_sas(&gw1.show("ipsec-sa"));
    for (lan, name) in [(YELLOW, "YELLOW"), (BLUE, "BLUE")] {
        let a = child(&ours[0], lan, PURPLE);
        let b = theirs[0]
            .children
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name} child at strongSwan: {theirs:#?}"));
        println!(
            "{name}: espgate in/out {:08x}/{:08x}, strongSwan in/out {:08x}/{:08x}",
            a.spi_in, a.spi_out, b.spi_in, b.spi_out
        );
        assert_eq!(a.spi_in, b.spi_out, "{name}: espgate in != strongSwan out");
        assert_eq!(a.spi_out, b.spi_in, "{name}: espgate out != strongSwan in");
        assert!(b.encap, "{name}: strongSwan not UDP-encapsulated");
        let e = esp(&esp1, lan, PURPLE);
        assert!(e.udp_encap, "{name}: espgate not UDP-encapsulated: {e:?}");
        assert_eq!((e.auth_fail, e.replay), (0, 0), "{name}: {e:?}");
        println!(
            "{name}: espgate encaps {} decaps {}, strongSwan packets in {} out {}",
            e.encaps, e.decaps, b.packets_in, b.packets_out
        );
        assert_eq!(e.encaps, b.packets_in, "{name}: our encaps != their in");
        assert_eq!(e.decaps, b.packets_out, "{name}: our decaps != their out");
    }

    // The WAN: IKE and ESP-in-UDP only, with the children's SPIs; the
    // right side started IKE_SA_INIT.
    let frames = tshark_frames(&pcap).expect("tshark");
    check_wan(&frames, &ours[0], true);
    let init = frames
        .iter()
        .find(|f| f.ike_exchange == Some(34) && !f.ike_response)
        .expect("IKE_SA_INIT request on the WAN");
    let initiator = if espgate_initiates {
        "10.255.1.2"
    } else {
        "10.255.2.2"
    };
    assert_eq!(init.src, initiator, "who sent IKE_SA_INIT");

    // tshark decrypts both directions with the keys strongSwan logged:
    // what we encrypted is standard ESP, and we decrypted theirs (the
    // pings came back).
    let keys = charon.key_log().expect("charon log");
    let pkts = strongswan::tshark_decrypt(&pcap, &keys.esp).expect("tshark decrypt");
    let from_us = pkts
        .iter()
        .filter(|p| {
            p.inner
                .is_some_and(|(s, _)| s.to_string().starts_with("192.168."))
        })
        .count();
    println!(
        "tshark: {} ESP packets, {} decrypted, {from_us} from our LANs",
        pkts.len(),
        pkts.iter().filter(|p| p.inner.is_some()).count()
    );
    assert!(!pkts.is_empty(), "no ESP for tshark");
    assert!(
        pkts.iter()
            .all(|p| p.inner.is_some() && p.icv_good == Some(true)),
        "tshark could not decrypt/verify: {pkts:#?}"
    );
    assert!(from_us >= 10, "our ESP decrypted by tshark: {from_us}");

    let burst = ping(&topo.ns("y"), "172.16.10.11", 1000, "0.002", 5);
    println!(
        "ping burst YELLOW -> PURPLE via strongSwan: {}/{} answered",
        burst.received, burst.transmitted
    );
    assert!(burst.received > 0, "{}", burst.text);
    assert!(gw1.alive(), "espgate exited:\n{}", gw1.log_text());
    for s in ipsec_sas(&gw1.show("ipsec-sa")) {
        assert_eq!((s.auth_fail, s.replay), (0, 0), "{s:?}");
    }
    drop(gw1);
    drop(charon);
    drop(gw2);
}
