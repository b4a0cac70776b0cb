//! Support for the end-to-end veth tests: the seed topology (scripts/
//! topology.sh with a prefix of our own), gateway processes, captures,
//! bounded commands, and reading `espgate show --json` and tshark output.
//!
//! Every guard tears down on drop, so a failing assertion (a panic) still
//! stops the processes and deletes the namespaces.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn ci() -> bool {
    std::env::var("ESPGATE_CI").as_deref() == Ok("1")
}

/// Effective uid 0 (from /proc, no libc call needed).
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

pub fn have_tool(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

/// AF_XDP sockets exist in this kernel (socket(AF_XDP) does not answer
/// EAFNOSUPPORT).
pub fn af_xdp_available() -> bool {
    const AF_XDP: libc::c_int = 44;
    // SAFETY: plain socket(2); the fd is closed right away.
    let fd = unsafe { libc::socket(AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: we own fd.
    unsafe { libc::close(fd) };
    true
}

pub use crate::netns::run_bounded;

/// Like [`run_bounded`], but a non-zero exit is an error.
pub fn run_ok(cmd: &mut Command, limit: Duration) -> io::Result<Output> {
    let out = run_bounded(cmd, limit)?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd:?}: {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        )));
    }
    Ok(out)
}

/// `ip netns exec NS PROG ...`.
pub fn in_ns(ns: &str, prog: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, prog]);
    c
}

/// Sends `sig` to a child we spawned (by its pid) and waits up to `grace`,
/// then kills it.
pub fn stop_child(child: &mut Child, sig: libc::c_int, grace: Duration) {
    if let Ok(None) = child.try_wait() {
        // SAFETY: kill(2) on the pid of our own child, which has not been
        // reaped yet (try_wait said it is running), so the pid is ours.
        unsafe { libc::kill(child.id() as libc::pid_t, sig) };
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// The seed's namespaces, built by scripts/topology.sh with `prefix`;
/// `down` on drop.
pub struct Topology {
    pub prefix: String,
}

fn topology_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/topology.sh")
}

impl Topology {
    pub fn up(prefix: &str, extra: &[&str]) -> io::Result<Topology> {
        // A leftover of a killed earlier run with the same prefix.
        let _ = run_bounded(
            Command::new("bash")
                .arg(topology_script())
                .args(["down", "--prefix", prefix]),
            Duration::from_secs(30),
        );
        let t = Topology {
            prefix: prefix.to_string(),
        };
        run_ok(
            Command::new("bash")
                .arg(topology_script())
                .args(["up", "--prefix", prefix])
                .args(extra),
            Duration::from_secs(60),
        )?;
        Ok(t)
    }

    /// The namespace of `role` (y, b, r1, gw1, wan, gw2, r2, p).
    pub fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = run_bounded(
            Command::new("bash")
                .arg(topology_script())
                .args(["down", "--prefix", &self.prefix]),
            Duration::from_secs(30),
        );
    }
}

/// An `espgate run` process inside a namespace; SIGTERM on drop. Prints
/// its log when dropped during a panic.
pub struct Gateway {
    pub name: String,
    child: Child,
    pub log: PathBuf,
    pub socket: PathBuf,
}

impl Gateway {
    /// Starts `espgate run -c config` in `ns` and waits (bounded) for its
    /// control socket.
    pub fn start(name: &str, ns: &str, config: &Path, dir: &Path) -> io::Result<Gateway> {
        let log = dir.join(format!("{name}.log"));
        let socket = dir.join(format!("{name}.sock"));
        let child = in_ns(ns, env!("CARGO_BIN_EXE_espgate"))
            .args(["run", "-c"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log)?)
            .stderr(fs::File::create(&log)?.try_clone()?)
            .spawn()?;
        let mut gw = Gateway {
            name: name.to_string(),
            child,
            log,
            socket,
        };
        let start = Instant::now();
        loop {
            if let Some(st) = gw.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "{name} exited ({st}): {}",
                    gw.log_text()
                )));
            }
            if gw.log_text().contains("running") && gw.socket.exists() {
                return Ok(gw);
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(io::Error::other(format!(
                    "{name} not up within 30 s: {}",
                    gw.log_text()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `espgate show WHAT --json` against this gateway's control socket.
    pub fn show(&self, what: &str) -> Value {
        let out = run_ok(
            Command::new(env!("CARGO_BIN_EXE_espgate"))
                .args(["show", what, "--json", "--socket"])
                .arg(&self.socket),
            Duration::from_secs(15),
        )
        .unwrap_or_else(|e| panic!("{}: show {what}: {e}", self.name));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{}: show {what}: not JSON ({e}): {}",
                self.name,
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// `espgate show WHAT` as text (for the test's output).
    pub fn show_text(&self, what: &str) -> String {
        run_bounded(
            Command::new(env!("CARGO_BIN_EXE_espgate"))
                .args(["show", what, "--socket"])
                .arg(&self.socket),
            Duration::from_secs(15),
        )
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|e| e.to_string())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        stop_child(&mut self.child, libc::SIGTERM, Duration::from_secs(5));
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.name, self.log_text());
        }
    }
}

/// tcpdump writing a pcap in a namespace; SIGINT on [`Capture::finish`] or
/// drop.
pub struct Capture {
    child: Option<Child>,
    pub path: PathBuf,
}

impl Capture {
    pub fn start(ns: &str, iface: &str, path: &Path, max_packets: u32) -> io::Result<Capture> {
        let err = path.with_extension("stderr");
        let child = in_ns(ns, "tcpdump")
            .args(["-n", "-U", "--immediate-mode", "-i", iface, "-c"])
            .arg(max_packets.to_string())
            .arg("-w")
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&err)?)
            .spawn()?;
        let mut cap = Capture {
            child: Some(child),
            path: path.to_path_buf(),
        };
        let start = Instant::now();
        // tcpdump says "listening on" once the socket is bound.
        while !fs::read_to_string(&err)
            .unwrap_or_default()
            .contains("listening on")
        {
            if let Some(c) = cap.child.as_mut() {
                if let Some(st) = c.try_wait()? {
                    return Err(io::Error::other(format!(
                        "tcpdump exited ({st}): {}",
                        fs::read_to_string(&err).unwrap_or_default()
                    )));
                }
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(io::Error::other("tcpdump did not start within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        Ok(cap)
    }

    pub fn finish(mut self) -> PathBuf {
        self.stop();
        self.path.clone()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, libc::SIGINT, Duration::from_secs(5));
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One `ping` run: the summary and which sequence numbers were answered.
#[derive(Debug, Default)]
pub struct Ping {
    pub transmitted: u32,
    pub received: u32,
    pub replied: BTreeSet<u32>,
    pub text: String,
}

pub fn parse_ping(text: &str) -> Ping {
    let mut p = Ping {
        text: text.to_string(),
        ..Ping::default()
    };
    for l in text.lines() {
        if l.contains("bytes from") {
            if let Some(seq) = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("icmp_seq="))
                .and_then(|s| s.parse().ok())
            {
                p.replied.insert(seq);
            }
        }
        if l.contains("packets transmitted") {
            let mut parts = l.split(',');
            let num = |s: Option<&str>| {
                s.and_then(|s| s.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0)
            };
            p.transmitted = num(parts.next());
            p.received = num(parts.next());
        }
    }
    p
}

/// `ping -n -c COUNT -i INTERVAL -W WAIT DST` in `ns`, bounded in time.
pub fn ping(ns: &str, dst: &str, count: u32, interval: &str, wait_s: u32) -> Ping {
    let limit = Duration::from_secs(u64::from(count) + u64::from(wait_s) + 30);
    let out = run_bounded(
        in_ns(ns, "ping").args([
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            interval,
            "-W",
            &wait_s.to_string(),
            dst,
        ]),
        limit,
    )
    .unwrap_or_else(|e| panic!("ping {dst} from {ns}: {e}"));
    parse_ping(&String::from_utf8_lossy(&out.stdout))
}

/// One child SA as `show ike-sa --json` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSa {
    pub src: String,
    pub dst: String,
    pub spi_in: u32,
    pub spi_out: u32,
}

/// The IKE SAs of `show ike-sa --json`, each with its children.
pub fn ike_children(v: &Value) -> Vec<Vec<ChildSa>> {
    let sas = v["sas"].as_array().cloned().unwrap_or_default();
    sas.iter()
        .map(|sa| {
            sa["children"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|c| ChildSa {
                    src: c["selector"]["src"].as_str().unwrap_or("").to_string(),
                    dst: c["selector"]["dst"].as_str().unwrap_or("").to_string(),
                    spi_in: c["spi_in"].as_u64().unwrap_or(0) as u32,
                    spi_out: c["spi_out"].as_u64().unwrap_or(0) as u32,
                })
                .collect()
        })
        .collect()
}

/// One `show ipsec-sa --json` entry: selector, SPIs and counters.
#[derive(Debug, Clone)]
pub struct EspSa {
    pub src: String,
    pub dst: String,
    pub spi_in: u32,
    pub spi_out: u32,
    pub encaps: u64,
    pub decaps: u64,
    pub auth_fail: u64,
    pub replay: u64,
    pub udp_encap: bool,
}

pub fn ipsec_sas(v: &Value) -> Vec<EspSa> {
    v["sas"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let c = &s["counters"];
            let n = |k: &str| c[k].as_u64().unwrap_or(u64::MAX);
            EspSa {
                src: s["selector"]["src"].as_str().unwrap_or("").to_string(),
                dst: s["selector"]["dst"].as_str().unwrap_or("").to_string(),
                spi_in: s["inbound"]["spi"].as_u64().unwrap_or(0) as u32,
                spi_out: s["outbound"]["spi"].as_u64().unwrap_or(0) as u32,
                encaps: n("encaps"),
                decaps: n("decaps"),
                auth_fail: n("auth_fail"),
                replay: n("replay"),
                udp_encap: s["outbound"]["udp_encap"].as_bool().unwrap_or(false),
            }
        })
        .collect()
}

/// One IPv4 frame of a capture as tshark decodes it.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    pub src: String,
    pub dst: String,
    pub proto: u8,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub esp_spi: Option<u32>,
    pub ike_exchange: Option<u8>,
    pub ike_msgid: Option<u32>,
    /// The IKE header's Response flag.
    pub ike_response: bool,
    pub icmp: bool,
}

/// Every IPv4 frame of `pcap` (`tshark -r`), first IP layer only (the outer
/// header; inner headers of ESP are not visible, and of cleartext they are
/// the only ones).
pub fn tshark_frames(pcap: &Path) -> io::Result<Vec<Frame>> {
    let out = run_ok(
        Command::new("tshark")
            .arg("-r")
            .arg(pcap)
            .args(["-n", "-Y", "ip", "-T", "fields", "-E", "separator=|"])
            .args(["-E", "occurrence=f"])
            .args(["-e", "ip.src", "-e", "ip.dst", "-e", "ip.proto"])
            .args(["-e", "udp.srcport", "-e", "udp.dstport", "-e", "esp.spi"])
            .args(["-e", "isakmp.exchangetype", "-e", "icmp.type"])
            .args(["-e", "isakmp.messageid", "-e", "isakmp.flags"]),
        Duration::from_secs(60),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().filter_map(parse_frame).collect())
}

fn num<T: TryFrom<u64>>(s: &str) -> Option<T> {
    let s = s.trim();
    let v = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok()?,
        None => s.parse().ok()?,
    };
    T::try_from(v).ok()
}

fn parse_frame(line: &str) -> Option<Frame> {
    let f: Vec<&str> = line.split('|').collect();
    if f.len() < 10 {
        return None;
    }
    Some(Frame {
        src: f[0].to_string(),
        dst: f[1].to_string(),
        proto: num(f[2])?,
        sport: num(f[3]),
        dport: num(f[4]),
        esp_spi: num(f[5]),
        ike_exchange: num(f[6]),
        icmp: !f[7].trim().is_empty(),
        ike_msgid: num(f[8]),
        ike_response: num::<u8>(f[9]).is_some_and(|fl| fl & 0x20 != 0),
    })
}

/// A counter of /proc/net/snmp (a header line and a value line per
/// protocol: `Udp: InDatagrams ... RcvbufErrors ...`).
pub fn snmp_counter(snmp: &str, proto: &str, name: &str) -> Option<u64> {
    let tag = format!("{proto}:");
    let mut lines = snmp.lines().filter(|l| l.starts_with(&tag));
    let names = lines.next()?;
    let values = lines.next()?;
    let i = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// The inner (LAN) address space of the seed.
pub fn is_inner(addr: &str) -> bool {
    addr.starts_with("192.168.") || addr.starts_with("172.16.")
}

/// The seed's crypto ACL as the site's config text (object-groups).
pub fn acl(site: u8) -> String {
    let (src, dst) = if site == 1 {
        ("SITE1", "SITE2")
    } else {
        ("SITE2", "SITE1")
    };
    format!(
        r#"object-group network SITE1
 network-object 192.168.100.0 255.255.255.0
 network-object 192.168.200.0 255.255.255.0
object-group network SITE2
 network-object 172.16.10.0 255.255.255.0
access-list s2svpn_to_site{peer} extended permit ip object-group {src} object-group {dst} log default
"#,
        peer = 3 - site
    )
}

/// A gateway config for `espgate run` over the topology's lan0/wan0 with
/// the af_xdp backend.
pub fn gateway_config(site: u8, workers: usize, force_encap: bool, socket: &Path) -> String {
    let (local, peer, prefixes) = if site == 1 {
        (
            "10.255.1.2",
            "10.255.2.2",
            r#"["192.168.100.0/24", "192.168.200.0/24"]"#,
        )
    } else {
        ("10.255.2.2", "10.255.1.2", r#"["172.16.10.0/24"]"#)
    };
    format!(
        r#"[gateway]
name = "site{site}"
workers = {workers}
local_address = "{local}"
control_socket = "{socket}"

[[interfaces]]
name = "lan0"
role = "lan"
backend = "af_xdp"
queue = 0
prefixes = {prefixes}

[[interfaces]]
name = "wan0"
role = "wan"
backend = "af_xdp"
queue = 0

[ike]
local_id = "{local}"
proposals = ["aes256-sha256-modp2048"]
force_encap = {force_encap}

[[peers]]
name = "site{peer_site}"
address = "{peer}"
id = "{peer}"
psk = "e2e-veth-pre-shared-key"

[esp]
proposals = ["aes256-sha256"]
pfs = "modp2048"

[acl]
name = "s2svpn_to_site{peer_site}"
text = """
{acl}"""

[acquire]
mode = "queue"
# Generous: a debug build on a loaded machine needs a while for modp2048.
timeout_ms = 15000
"#,
        socket = socket.display(),
        peer_site = 3 - site,
        acl = acl(site),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_output_parses() {
        let p = parse_ping(
            "64 bytes from 172.16.10.11: icmp_seq=1 ttl=62 time=473 ms\n\
             64 bytes from 172.16.10.11: icmp_seq=3 ttl=62 time=0.5 ms\n\
             5 packets transmitted, 2 received, 60% packet loss, time 1272ms\n",
        );
        assert_eq!((p.transmitted, p.received), (5, 2));
        assert_eq!(p.replied.into_iter().collect::<Vec<_>>(), vec![1, 3]);
    }

    #[test]
    fn snmp_counter_reads_the_value_under_its_name() {
        let t = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                 Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors\n\
                 Udp: 6207 0 17 5 17\n";
        assert_eq!(snmp_counter(t, "Udp", "InDatagrams"), Some(6207));
        assert_eq!(snmp_counter(t, "Udp", "RcvbufErrors"), Some(17));
        assert_eq!(snmp_counter(t, "Tcp", "RcvbufErrors"), None);
    }

    #[test]
    fn tshark_line_parses() {
        let f = parse_frame("10.255.1.2|10.255.2.2|50|||0x00100000||||").unwrap();
        assert_eq!((f.proto, f.esp_spi, f.icmp), (50, Some(0x0010_0000), false));
        let f = parse_frame("10.255.2.2|10.255.1.2|17|500|500||34||0|0x20").unwrap();
        assert_eq!((f.dport, f.ike_exchange), (Some(500), Some(34)));
        assert_eq!((f.ike_msgid, f.ike_response), (Some(0), true));
        assert!(parse_frame("garbage").is_none());
    }
}
