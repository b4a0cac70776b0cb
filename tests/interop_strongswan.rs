//! espgate against a real strongSwan (root only), in the seed's topology:
//! h1 -- gw1 (espgate, Site1: YELLOW + BLUE) -- wan -- gw2 (strongSwan
//! with kernel-libipsec, Site2: PURPLE) -- h2.
//!
//! espgate runs as `espgate run` with a TUN LAN and the `udp` WAN backend
//! (ESP-in-UDP on 4500, which is all libipsec speaks; `force_encap`), and
//! `ESPGATE_KEYLOG` so its keys can be compared with the ones charon logs.
//!
//! For each direction of initiation it checks: one IKE SA up on both ends,
//! both child SAs (YELLOW from IKE_AUTH, BLUE from CREATE_CHILD_SA with PFS)
//! with SPIs that mirror each other, equal keys per SPI, answered pings,
//! strongSwan's packet counters, and tshark decrypting every ESP packet on
//! the WAN with strongSwan's keys.
//!
//! `interop_handshake_times` (ignored; run it with `--ignored`) measures
//! INIT+AUTH and CREATE_CHILD_SA times on the WAN capture, both directions,
//! N rounds (`ESPGATE_INTEROP_N`, default 20). Set `ESPGATE_BIN` to a
//! release build for meaningful numbers.

#[path = "common/netns.rs"]
mod netns;
#[path = "common/strongswan.rs"]
mod strongswan;

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use netns::{ping, Capture, NetNs, SeedTopology, BLUE_HOST, PURPLE_HOST, YELLOW_HOST};
use strongswan::{
    available, tshark_decrypt, Charon, ChildSa, Dir, EspSuite, HandshakeKind, IkeSa, KeyLog, Site,
    SwanConfig, TEST_PSK,
};

const TUN: &str = "egtun";

fn preconditions(test: &str) -> bool {
    if !netns::is_root() {
        netns::skip(test, "needs root (network namespaces, TUN, UDP 500)");
        return false;
    }
    if let Err(why) = available() {
        netns::skip(test, &why);
        return false;
    }
    for tool in ["ip", "ping", "tcpdump", "tshark", "ethtool"] {
        if !netns::have_tool(tool) {
            netns::skip(test, &format!("{tool} not installed"));
            return false;
        }
    }
    true
}

fn espgate_bin() -> PathBuf {
    std::env::var_os("ESPGATE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_espgate")))
}

/// Site1's gateway.toml: the seed's ACL, strongSwan's test PSK.
fn site1_config(control: &Path, esp: EspSuite) -> String {
    let esp = match esp {
        EspSuite::Cbc => "aes256-sha256",
        EspSuite::Gcm => "aes256gcm16",
    };
    format!(
        r#"[gateway]
name = "site1"
workers = 1
local_address = "10.255.1.2"
control_socket = "{control}"

[[interfaces]]
name = "{TUN}"
role = "lan"
backend = "tun"
prefixes = ["192.168.100.0/24", "192.168.200.0/24"]

[[interfaces]]
name = "wan0"
role = "wan"
backend = "udp"

[ike]
local_id = "10.255.1.2"
proposals = ["aes256-sha256-modp2048"]
force_encap = true
dpd_secs = 0

[[peers]]
name = "site2"
address = "10.255.2.2"
id = "10.255.2.2"
psk = "{TEST_PSK}"

[esp]
proposals = ["{esp}"]
pfs = "modp2048"

[acl]
name = "s2svpn_to_site2"
no_match = "bypass"
text = """
object-group network SITE1
 network-object 192.168.100.0 255.255.255.0
 network-object 192.168.200.0 255.255.255.0
object-group network SITE2
 network-object 172.16.10.0 255.255.255.0
access-list s2svpn_to_site2 extended permit ip object-group SITE1 object-group SITE2 log default
"""
"#,
        control = control.display()
    )
}

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

/// `espgate run` inside a namespace. Drop stops it (SIGTERM, then SIGKILL)
/// and removes its directory unless the thread panics.
struct Espgate {
    dir: PathBuf,
    child: Option<Child>,
}

/// One line of espgate's key log.
#[derive(Clone, PartialEq, Eq)]
struct OurKey {
    spi: u32,
    dir: Dir,
    suite: String,
    encr: Vec<u8>,
    integ: Vec<u8>,
}

impl std::fmt::Debug for OurKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "OurKey({:08x} {:?} {} <{}+{} bytes>)",
            self.spi,
            self.dir,
            self.suite,
            self.encr.len(),
            self.integ.len()
        )
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn parse_keylog(text: &str) -> Vec<OurKey> {
    text.lines()
        .filter_map(|l| {
            let mut k = OurKey {
                spi: 0,
                dir: Dir::In,
                suite: String::new(),
                encr: Vec::new(),
                integ: Vec::new(),
            };
            for f in l.split_whitespace() {
                let (name, v) = f.split_once('=')?;
                match name {
                    "spi" => k.spi = u32::from_str_radix(v.strip_prefix("0x")?, 16).ok()?,
                    "dir" => {
                        k.dir = match v {
                            "in" => Dir::In,
                            "out" => Dir::Out,
                            _ => return None,
                        }
                    }
                    "suite" => k.suite = v.to_string(),
                    "encr" => k.encr = unhex(v)?,
                    "integ" => k.integ = unhex(v)?,
                    _ => {}
                }
            }
            Some(k)
        })
        .collect()
}

/// A child SA as `espgate show ike-sa --json` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OurChild {
    local: String,
    remote: String,
    spi_in: u32,
    spi_out: u32,
}

#[derive(Debug, Clone)]
struct OurIke {
    status: String,
    role: String,
    local: String,
    remote: String,
    children: Vec<OurChild>,
}

fn parse_show_ike(json: &str) -> Result<Vec<OurIke>, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("{e}: {json}"))?;
    let s = |v: &serde_json::Value, k: &str| -> Result<String, String> {
        v.get(k)
            .and_then(|x| x.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("no {k} in {v}"))
    };
    let n = |v: &serde_json::Value, k: &str| -> Result<u32, String> {
        v.get(k)
            .and_then(|x| x.as_u64())
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| format!("no {k} in {v}"))
    };
    let mut out = Vec::new();
    for sa in v
        .get("sas")
        .and_then(|x| x.as_array())
        .ok_or_else(|| format!("no sas: {json}"))?
    {
        let mut children = Vec::new();
        for c in sa
            .get("children")
            .and_then(|x| x.as_array())
            .ok_or_else(|| format!("no children: {sa}"))?
        {
            let sel = c.get("selector").ok_or_else(|| format!("{c}"))?;
            children.push(OurChild {
                local: s(sel, "src")?,
                remote: s(sel, "dst")?,
                spi_in: n(c, "spi_in")?,
                spi_out: n(c, "spi_out")?,
            });
        }
        out.push(OurIke {
            status: s(sa, "status")?,
            role: s(sa, "role")?,
            local: s(sa, "local")?,
            remote: s(sa, "remote")?,
            children,
        });
    }
    Ok(out)
}

impl Espgate {
    /// Writes the config, starts the gateway in `ns`, waits for its TUN
    /// device and control socket, then brings the TUN up and routes the
    /// remote LAN (PURPLE) into it.
    fn spawn(ns: &NetNs, esp: EspSuite) -> io::Result<Espgate> {
        let k = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "espgate-interop-{}-{}-{}",
            std::process::id(),
            k,
            ns.name()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let control = dir.join("site1.sock");
        std::fs::write(dir.join("site1.toml"), site1_config(&control, esp))?;
        let out = std::fs::File::create(dir.join("espgate.log"))?;
        let err = out.try_clone()?;
        // `ip netns exec` execs, so the child's pid is espgate's.
        let child = ns
            .command(&espgate_bin().to_string_lossy())
            .arg("run")
            .arg("-c")
            .arg(dir.join("site1.toml"))
            .env("ESPGATE_KEYLOG", dir.join("keylog"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()?;
        let mut g = Espgate {
            dir,
            child: Some(child),
        };
        let start = Instant::now();
        loop {
            let tun = ns.ip(&["link", "show", TUN]).is_ok();
            if tun && control.exists() {
                break;
            }
            if let Some(ch) = g.child.as_mut() {
                if let Some(st) = ch.try_wait()? {
                    g.child = None;
                    return Err(io::Error::other(format!(
                        "espgate exited at start ({st}): {}",
                        g.log()
                    )));
                }
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(io::Error::other(format!(
                    "espgate: no {TUN} / control socket after 10 s: {}",
                    g.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Room for outer IP + UDP + ESP header, IV, padding and ICV.
        ns.ip(&["link", "set", TUN, "up", "mtu", "1400"])?;
        ns.ip(&["route", "add", "172.16.10.0/24", "dev", TUN])?;
        Ok(g)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("espgate.log")).unwrap_or_default()
    }

    fn keys(&self) -> Vec<OurKey> {
        parse_keylog(&std::fs::read_to_string(self.dir.join("keylog")).unwrap_or_default())
    }

    fn show_ike(&self) -> Result<Vec<OurIke>, String> {
        let mut c = Command::new(espgate_bin());
        c.args(["show", "ike-sa", "--json", "--socket"])
            .arg(self.dir.join("site1.sock"));
        let out = netns::run_bounded(&mut c, Duration::from_secs(10)).map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "espgate show failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        parse_show_ike(&String::from_utf8_lossy(&out.stdout))
    }

    fn stop(&mut self) {
        netns::stop_child(&mut self.child, "-TERM");
    }
}

impl Drop for Espgate {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() || std::env::var("ESPGATE_KEEP_SWAN").as_deref() == Ok("1") {
            eprintln!(
                "espgate files kept in {}; its log:\n{}",
                self.dir.display(),
                self.log()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Poll `f` every 50 ms until it returns Some, for at most `limit`.
fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn child_name(local: &str) -> &'static str {
    match local {
        "192.168.100.0/24" => "YELLOW",
        "192.168.200.0/24" => "BLUE",
        _ => "?",
    }
}

/// Both ends agree: one IKE SA, two children with mirrored SPIs and equal
/// keys per SPI.
fn check_both_ends(
    test: &str,
    esp: EspSuite,
    ours: &Espgate,
    theirs: &Charon,
    we_initiated: bool,
) -> (OurIke, IkeSa, KeyLog) {
    // Both children must be listed on both sides before comparing.
    let (our_ike, swan_ike) = wait_for(Duration::from_secs(5), || {
        let o = ours.show_ike().ok()?;
        let t = theirs.list_sas().ok()?;
        (o.len() == 1 && o[0].children.len() == 2 && t.len() == 1 && t[0].children.len() == 2)
            .then(|| (o[0].clone(), t[0].clone()))
    })
    .unwrap_or_else(|| {
        panic!(
            "{test}: one IKE SA with two children expected on both ends: ours {:#?}, theirs {:#?}",
            ours.show_ike(),
            theirs.list_sas()
        )
    });
    assert_eq!(our_ike.status, "READY", "{test}");
    assert_eq!(
        our_ike.role,
        if we_initiated {
            "Initiator"
        } else {
            "Responder"
        },
        "{test}"
    );
    assert_eq!(our_ike.local, "10.255.1.2:4500", "{test}: floated to 4500");
    assert_eq!(our_ike.remote, "10.255.2.2:4500", "{test}");
    assert_eq!(swan_ike.state, "ESTABLISHED", "{test}");
    assert_eq!(swan_ike.initiator, !we_initiated, "{test}");
    assert_eq!((swan_ike.local_port, swan_ike.remote_port), (4500, 4500));
    assert_eq!(swan_ike.encr_alg, "AES_CBC");
    assert_eq!(swan_ike.encr_keysize, Some(256));
    assert_eq!(swan_ike.prf_alg.as_deref(), Some("PRF_HMAC_SHA2_256"));
    assert_eq!(swan_ike.dh_group.as_deref(), Some("MODP_2048"));

    let our_keys = ours.keys();
    let swan_keys = theirs.key_log().expect("charon log");
    for oc in &our_ike.children {
        let name = child_name(&oc.local);
        assert_eq!(oc.remote, "172.16.10.0/24", "{test} {name}");
        let sc: &ChildSa = swan_ike
            .children
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("{test}: strongSwan has no {name}: {swan_ike:#?}"));
        assert_eq!(sc.state, "INSTALLED", "{test} {name}");
        assert_eq!(sc.mode, "TUNNEL");
        assert!(sc.encap, "{test} {name}: ESP-in-UDP");
        assert_eq!(sc.local_ts, vec!["172.16.10.0/24".to_string()]);
        assert_eq!(sc.remote_ts, vec![oc.local.clone()]);
        assert_eq!(oc.spi_in, sc.spi_out, "{test} {name}: our in == their out");
        assert_eq!(oc.spi_out, sc.spi_in, "{test} {name}: our out == their in");
        match (name, esp) {
            ("YELLOW", _) if we_initiated => assert_eq!(sc.dh_group, None),
            ("BLUE", _) => assert_eq!(sc.dh_group.as_deref(), Some("MODP_2048"), "PFS 14"),
            _ => {}
        }
        for (spi, our_dir, their_dir) in [
            (oc.spi_in, Dir::In, Dir::Out),
            (oc.spi_out, Dir::Out, Dir::In),
        ] {
            let ok = our_keys
                .iter()
                .rev()
                .find(|k| k.spi == spi && k.dir == our_dir)
                .unwrap_or_else(|| {
                    panic!("{test} {name}: {spi:08x} not in our key log {our_keys:?}")
                });
            let sk = swan_keys
                .by_spi(spi)
                .unwrap_or_else(|| panic!("{test} {name}: {spi:08x} not in charon's log"));
            assert_eq!(sk.dir, their_dir, "{test} {name} {spi:08x}");
            match esp {
                EspSuite::Cbc => {
                    assert_eq!(ok.suite, "aes256-sha256");
                    assert_eq!(sk.encr_alg, "AES_CBC_256");
                    assert_eq!(sk.integ_alg.as_deref(), Some("HMAC_SHA2_256_128"));
                    assert_eq!((ok.encr.len(), ok.integ.len()), (32, 32));
                }
                EspSuite::Gcm => {
                    assert_eq!(ok.suite, "aes256gcm16");
                    assert_eq!(sk.encr_alg, "AES_GCM_16_256");
                    assert_eq!(ok.integ.len(), 0);
                    // key || 4-byte salt, RFC 4106 section 8.1
                    assert_eq!(ok.encr.len(), 36);
                }
            }
            assert!(
                ok.encr == sk.encr_key,
                "{test} {name} {spi:08x}: encryption keys differ"
            );
            assert!(
                ok.integ == sk.integ_key,
                "{test} {name} {spi:08x}: integrity keys differ"
            );
            assert_eq!(sk.initiator, !we_initiated, "{test} {name}");
        }
        eprintln!(
            "{test}: {name}: SPIs in/out {:08x}/{:08x} match, keys match",
            oc.spi_in, oc.spi_out
        );
    }
    (our_ike, swan_ike, swan_keys)
}

/// strongSwan's packet counters for a child after the pings.
fn assert_counters(test: &str, ike: &IkeSa, name: &str, at_least: u64) {
    let c = ike
        .children
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("{test}: no {name}"));
    assert!(
        c.packets_in >= at_least && c.packets_out >= at_least,
        "{test} {name}: strongSwan counted {} in / {} out, want >= {at_least}",
        c.packets_in,
        c.packets_out
    );
}

/// Like [`ping`], but waiting up to 5 s for late replies, so packets the
/// dataplane queued during a handshake and answered afterwards count as
/// answered (an unoptimized build can take seconds for the MODP-2048 work),
/// and so does a reply libipsec's single thread sat on for over a second on
/// a loaded machine.
fn first_pings(ns: &NetNs, src: &str, count: u32) -> netns::PingStats {
    let mut c = ns.command("ping");
    c.args([
        "-n",
        "-c",
        &count.to_string(),
        "-i",
        "0.2",
        "-W",
        "5",
        "-I",
        src,
    ])
    .arg(PURPLE_HOST);
    let out = netns::run_bounded(&mut c, Duration::from_secs(u64::from(count) + 15)).expect("ping");
    let text = String::from_utf8_lossy(&out.stdout);
    netns::parse_ping(&text).unwrap_or_else(|| panic!("unparsable ping output: {text}"))
}

fn interop(test: &str, esp: EspSuite, we_initiate: bool) {
    if !preconditions(test) {
        return;
    }
    let topo = SeedTopology::new().expect("topology");
    let mut site2 = SwanConfig::new(Site::Site2);
    site2.esp = esp;
    let swan = Charon::spawn(&topo.gw2, &site2).expect("charon Site2");
    let ours = Espgate::spawn(&topo.gw1, esp).expect("espgate Site1");
    // espgate sends queued packets as one UDP GSO datagram; the receiving
    // stack splits it, but a capture on the veth path would see the packets
    // glued together and tshark could not check them. Segmenting before
    // the veth keeps one ESP packet per captured datagram.
    topo.gw1
        .exec("ethtool", &["-K", "wan0", "tx-udp-segmentation", "off"])
        .expect("ethtool");
    let pcap = swan.dir().join("wan.pcap");
    let cap = Capture::start(&topo.wan, "site1", "udp", &pcap, 2000).expect("tcpdump");

    let mut sent = 0;
    if we_initiate {
        // YELLOW: Acquire → IKE_SA_INIT + IKE_AUTH; the dataplane queues
        // the first packets meanwhile.
        let first = first_pings(&topo.h1, YELLOW_HOST, 5);
        eprintln!(
            "{test}: YELLOW on demand: {} of the first {} pings lost",
            first.transmitted - first.received,
            first.transmitted
        );
        assert!(first.received >= 1, "{test}: no tunnel: {}", ours.log());
        // BLUE: a second Acquire → CREATE_CHILD_SA (PFS 14).
        let first = first_pings(&topo.h1, BLUE_HOST, 5);
        eprintln!(
            "{test}: BLUE on demand: {} of the first {} pings lost",
            first.transmitted - first.received,
            first.transmitted
        );
        assert!(first.received >= 1, "{test}: no BLUE child: {}", ours.log());
        sent += 5;
    } else {
        let t = swan.initiate("YELLOW", 10).expect("initiate YELLOW");
        eprintln!("{test}: swanctl --initiate YELLOW took {t:?}");
        let t = swan.initiate("BLUE", 10).expect("initiate BLUE");
        eprintln!("{test}: swanctl --initiate BLUE took {t:?}");
    }
    let (_, _, _) = check_both_ends(test, esp, &ours, &swan, we_initiate);
    // With both SAs up every ping is answered.
    for src in [YELLOW_HOST, BLUE_HOST] {
        let p = first_pings(&topo.h1, src, 5);
        assert_eq!(
            (p.transmitted, p.received),
            (5, 5),
            "{test}: pings from {src} over established SAs"
        );
    }
    sent += 5;
    let sas = swan.list_sas().expect("list-sas");
    assert_counters(test, &sas[0], "YELLOW", sent);
    assert_counters(test, &sas[0], "BLUE", 5);

    // Independent check of our ESP: tshark decrypts every ESP packet on the
    // WAN (both directions) with the keys strongSwan logged.
    let pcap = cap.finish();
    let k = swan.key_log().expect("charon log");
    let pkts = tshark_decrypt(&pcap, &k.esp).expect("tshark");
    let undecrypted: Vec<_> = pkts.iter().filter(|p| p.inner.is_none()).collect();
    assert!(
        pkts.len() >= 20,
        "{test}: ESP packets on the WAN: {pkts:#?}"
    );
    assert!(
        undecrypted.is_empty(),
        "{test}: undecryptable ESP: {undecrypted:#?}"
    );
    if esp == EspSuite::Cbc {
        assert!(
            pkts.iter().all(|p| p.icv_good == Some(true)),
            "{test}: bad ICV: {pkts:#?}"
        );
    }
    eprintln!("{test}: tshark decrypted all {} ESP packets", pkts.len());
    if !we_initiate {
        for h in &k.handshakes {
            eprintln!(
                "{test}: strongSwan {:?} {} took {} ms (its log)",
                h.kind, h.child, h.millis
            );
        }
    }
    // strongSwan deletes the IKE SA (INFORMATIONAL with Delete): ours goes
    // with its children.
    swan.swanctl(&["--terminate", "--ike", "site1", "--timeout", "5"])
        .expect("terminate");
    wait_for(Duration::from_secs(5), || {
        ours.show_ike().ok().filter(|v| v.is_empty())
    })
    .unwrap_or_else(|| {
        panic!(
            "{test}: espgate kept the IKE SA after Delete: {:#?}",
            ours.show_ike()
        )
    });
    // Traffic brings a fresh IKE SA up again (espgate initiates).
    let p = first_pings(&topo.h1, YELLOW_HOST, 1);
    assert_eq!(
        p.received,
        1,
        "{test}: no tunnel after Delete: {}",
        ours.log()
    );
    drop(ours);
    drop(swan);
}

#[test]
fn interop_espgate_initiates_cbc() {
    interop("interop_espgate_initiates_cbc", EspSuite::Cbc, true);
}

#[test]
fn interop_strongswan_initiates_cbc() {
    interop("interop_strongswan_initiates_cbc", EspSuite::Cbc, false);
}

#[test]
fn interop_espgate_initiates_gcm() {
    interop("interop_espgate_initiates_gcm", EspSuite::Gcm, true);
}

#[test]
fn interop_strongswan_initiates_gcm() {
    interop("interop_strongswan_initiates_gcm", EspSuite::Gcm, false);
}

#[test]
fn keylog_lines_parse() {
    let k = parse_keylog(
        "spi=0x05100000 dir=in suite=aes256-sha256 encr=00ff integ=0a\n\
         garbage line\n\
         spi=0x148be552 dir=out suite=aes256gcm16 encr=abcd integ=\n",
    );
    assert_eq!(k.len(), 2);
    assert_eq!(
        (k[0].spi, k[0].dir, k[0].encr.clone()),
        (0x0510_0000, Dir::In, vec![0, 255])
    );
    assert_eq!((k[1].dir, k[1].integ.len()), (Dir::Out, 0));
}

// ---------------------------------------------------------------------------
// Handshake times

/// One IKE message seen on the WAN.
#[derive(Debug, Clone)]
struct IkeMsg {
    t: f64,
    exch: u8,
    response: bool,
    ispi: String,
}

/// The IKE messages of a capture, by tshark (it takes IKE behind the
/// non-ESP marker on 4500 apart from ESP by itself).
fn ike_messages(pcap: &Path) -> io::Result<Vec<IkeMsg>> {
    let out = netns::run_bounded(
        Command::new("tshark")
            .arg("-r")
            .arg(pcap)
            .args(["-Y", "isakmp", "-T", "fields", "-e", "frame.time_epoch"])
            .args([
                "-e",
                "isakmp.exchangetype",
                "-e",
                "isakmp.flags",
                "-e",
                "isakmp.ispi",
            ]),
        Duration::from_secs(60),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let flags = f.get(2)?.trim_start_matches("0x");
            Some(IkeMsg {
                t: f.first()?.parse().ok()?,
                exch: f.get(1)?.parse().ok()?,
                response: u8::from_str_radix(flags, 16).ok()? & 0x20 != 0,
                ispi: f.get(3)?.to_string(),
            })
        })
        .collect())
}

/// Handshake times on the wire, ms, one entry per IKE SA (initiator SPI).
#[derive(Debug, Default)]
struct WireTimes {
    /// IKE_SA_INIT request → IKE_AUTH response.
    init_auth: Vec<f64>,
    /// The responder's share of it: request in → response out, both
    /// exchanges (its DH, SKEYSEED, AUTH check, child keys).
    init_auth_responder: Vec<f64>,
    /// The initiator's share: IKE_SA_INIT response → IKE_AUTH request
    /// (its shared secret, SKEYSEED, AUTH).
    init_auth_initiator: Vec<f64>,
    /// The first CREATE_CHILD_SA request → response (all responder work:
    /// a PFS key pair and shared secret, KEYMAT).
    create_child: Vec<f64>,
}

fn wire_times(msgs: &[IkeMsg]) -> WireTimes {
    let mut spis: Vec<&str> = Vec::new();
    for m in msgs {
        if !spis.contains(&m.ispi.as_str()) {
            spis.push(&m.ispi);
        }
    }
    let mut w = WireTimes::default();
    let ms = |a: &IkeMsg, b: &IkeMsg| (b.t - a.t) * 1e3;
    for spi in spis {
        let of: Vec<&IkeMsg> = msgs.iter().filter(|m| m.ispi == spi).collect();
        let first = |exch: u8, resp: bool| {
            of.iter()
                .find(|m| m.exch == exch && m.response == resp)
                .copied()
        };
        if let (Some(a), Some(b), Some(c), Some(d)) = (
            first(34, false),
            first(34, true),
            first(35, false),
            first(35, true),
        ) {
            w.init_auth.push(ms(a, d));
            w.init_auth_responder.push(ms(a, b) + ms(c, d));
            w.init_auth_initiator.push(ms(b, c));
        }
        if let (Some(a), Some(b)) = (first(36, false), first(36, true)) {
            w.create_child.push(ms(a, b));
        }
    }
    w
}

fn print_wire(who: &str, peer: &str, mut w: WireTimes) {
    summary(
        &format!("{who} initiates, INIT+AUTH (wire, total)"),
        &mut w.init_auth,
    );
    summary(
        &format!("{who} initiates, INIT+AUTH: {who}'s share as initiator"),
        &mut w.init_auth_initiator,
    );
    summary(
        &format!("{who} initiates, INIT+AUTH: {peer}'s share as responder"),
        &mut w.init_auth_responder,
    );
    summary(
        &format!("{who} initiates, CREATE_CHILD_SA+PFS (wire = {peer} responding)"),
        &mut w.create_child,
    );
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn summary(what: &str, v: &mut [f64]) {
    let m = median(v);
    let (lo, hi) = (
        v.first().copied().unwrap_or(f64::NAN),
        v.last().copied().unwrap_or(f64::NAN),
    );
    eprintln!(
        "{what}: n={} median {m:.1} ms (min {lo:.1}, max {hi:.1})",
        v.len()
    );
}

/// Both directions, N rounds each, in one run: espgate initiating (a fresh
/// gateway per round: ping YELLOW, ping BLUE) and strongSwan initiating
/// (`swanctl --initiate` YELLOW and BLUE, then `--terminate`). Times are
/// taken on the WAN between the gateways, so each includes both ends'
/// work; strongSwan's own log times for its rounds are printed too.
#[test]
#[ignore = "measurement, not a check: cargo test --test interop_strongswan -- --ignored"]
fn interop_handshake_times() {
    let test = "interop_handshake_times";
    if !preconditions(test) {
        return;
    }
    let n: usize = std::env::var("ESPGATE_INTEROP_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let topo = SeedTopology::new().expect("topology");
    let mut site2 = SwanConfig::new(Site::Site2);
    site2.quiet_log = true;
    let swan = Charon::spawn(&topo.gw2, &site2).expect("charon Site2");

    let pcap = swan.dir().join("ours.pcap");
    let cap = Capture::start(
        &topo.wan,
        "site1",
        "udp port 500 or udp port 4500",
        &pcap,
        100_000,
    )
    .expect("tcpdump");
    for _ in 0..n {
        let ours = Espgate::spawn(&topo.gw1, EspSuite::Cbc).expect("espgate");
        let a = ping(&topo.h1, Some(YELLOW_HOST), PURPLE_HOST, 1, "0.2").expect("ping");
        let b = ping(&topo.h1, Some(BLUE_HOST), PURPLE_HOST, 1, "0.2").expect("ping");
        assert_eq!((a.received, b.received), (1, 1), "{}", ours.log());
        drop(ours);
        // Let charon see the next INITIAL_CONTACT against a settled state.
        std::thread::sleep(Duration::from_millis(100));
    }
    let pcap = cap.finish();
    print_wire(
        "espgate",
        "strongSwan",
        wire_times(&ike_messages(&pcap).expect("tshark")),
    );

    // The last gateway stopped without a Delete: drop its IKE SA here too,
    // or charon would reuse it for the next initiation.
    // (It fails after a retransmit or two, as the peer is gone; the SA is
    // deleted anyway.)
    let _ = swan.swanctl(&["--terminate", "--ike", "site1", "--force", "--timeout", "2"]);
    wait_for(Duration::from_secs(10), || {
        swan.list_sas().ok().filter(|v| v.is_empty())
    })
    .expect("charon kept the dead IKE SA");
    let ours = Espgate::spawn(&topo.gw1, EspSuite::Cbc).expect("espgate");
    let pcap = swan.dir().join("swan.pcap");
    let cap = Capture::start(
        &topo.wan,
        "site1",
        "udp port 500 or udp port 4500",
        &pcap,
        100_000,
    )
    .expect("tcpdump");
    for _ in 0..n {
        swan.initiate("YELLOW", 10).expect("initiate YELLOW");
        swan.initiate("BLUE", 10).expect("initiate BLUE");
        swan.swanctl(&["--terminate", "--ike", "site1", "--timeout", "5"])
            .expect("terminate");
        wait_for(Duration::from_secs(5), || {
            ours.show_ike().ok().filter(|v| v.is_empty())
        })
        .unwrap_or_else(|| {
            panic!(
                "espgate kept the IKE SA after Delete: {:#?}",
                ours.show_ike()
            )
        });
    }
    let pcap = cap.finish();
    print_wire(
        "strongSwan",
        "espgate",
        wire_times(&ike_messages(&pcap).expect("tshark")),
    );
    let k = swan.key_log().expect("log");
    let mut ia: Vec<f64> = k
        .handshakes
        .iter()
        .filter(|h| h.kind == HandshakeKind::InitAuth)
        .map(|h| f64::from(h.millis))
        .collect();
    let mut cc: Vec<f64> = k
        .handshakes
        .iter()
        .filter(|h| h.kind == HandshakeKind::CreateChild)
        .map(|h| f64::from(h.millis))
        .collect();
    summary(
        "strongSwan initiates, INIT+AUTH (its log, ms resolution)",
        &mut ia,
    );
    summary("strongSwan initiates, CREATE_CHILD_SA (its log)", &mut cc);
    drop(ours);
    drop(swan);
}
