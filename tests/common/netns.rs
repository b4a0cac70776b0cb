//! Network namespaces and veth pairs for root integration tests.
//!
//! Every namespace gets a name unique to this process (pid + counter), so tests
//! running in parallel, or next to another helper's tests, never meet. Drop
//! deletes the namespace, which also removes its veth ends (deleting one end
//! of a pair deletes both) and any TUN device a daemon made inside it.
#![allow(dead_code)]

use std::io;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT_NS: AtomicU32 = AtomicU32::new(0);

/// Why a root test could not run. In CI (`ESPGATE_CI=1`) this is a failure;
/// elsewhere the test prints it and passes as skipped.
pub fn skip(test: &str, reason: &str) {
    if std::env::var("ESPGATE_CI").as_deref() == Ok("1") {
        panic!("{test}: cannot run in CI: {reason}");
    }
    eprintln!("SKIP {test}: {reason}");
}

/// Effective uid 0, read from /proc so the tests need no libc binding.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Whether `prog` can be run (found on PATH or given as a path).
pub fn have_tool(prog: &str) -> bool {
    if prog.contains('/') {
        return std::path::Path::new(prog).exists();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

/// Run a command; a non-zero exit becomes an error carrying its stderr.
pub fn run(cmd: &mut Command) -> io::Result<Output> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{:?} failed ({}): {}{}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        )));
    }
    Ok(out)
}

/// Run a command with a wall-clock limit; kills it when the limit passes.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> io::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let start = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            return child.wait_with_output();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{:?} still running after {:?}: {}",
                    cmd,
                    limit,
                    String::from_utf8_lossy(&out.stdout)
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A network namespace that exists while this value lives.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Create `eg<pid>n<k><tag>` with its loopback up. `tag` keeps names
    /// readable in `ip netns list` when a test fails.
    pub fn new(tag: &str) -> io::Result<NetNs> {
        let k = NEXT_NS.fetch_add(1, Ordering::Relaxed);
        let name = format!("eg{}n{}{}", std::process::id(), k, tag);
        run(Command::new("ip").args(["netns", "add", &name]))?;
        // From here on Drop removes it, even if the next step fails.
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NS ARGS...`
    pub fn ip(&self, args: &[&str]) -> io::Result<Output> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command that runs `prog` inside the namespace.
    pub fn command(&self, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, prog]);
        c
    }

    /// Run `prog ARGS...` inside the namespace, failing on a non-zero exit.
    pub fn exec(&self, prog: &str, args: &[&str]) -> io::Result<Output> {
        run(self.command(prog).args(args))
    }

    pub fn sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")])
            .map(|_| ())
    }

    /// Forwarding on, reverse-path filter off: a router between veths.
    pub fn make_router(&self) -> io::Result<()> {
        self.sysctl("net.ipv4.ip_forward", "1")?;
        self.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
        self.sysctl("net.ipv4.conf.default.rp_filter", "0")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A veth pair with one end in each namespace, both up. The ends are created
/// directly inside the namespaces, so their names only need to be unique
/// there and never collide with the host's interfaces.
pub fn veth(a: &NetNs, a_if: &str, b: &NetNs, b_if: &str) -> io::Result<()> {
    run(Command::new("ip").args([
        "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ]))?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}

/// The seed's two sites (DESIGN.md) in five namespaces:
///
/// ```text
/// h1 --lan0-- gw1 --wan0/site1-- wan --site2/wan0-- gw2 --lan0-- h2
/// ```
///
/// h1 holds a YELLOW (192.168.100.10) and a BLUE (192.168.200.10) host;
/// gw1 is Site1 (10.255.1.2, LAN .1 on both), gw2 is Site2 (10.255.2.2,
/// 172.16.10.1), h2 the PURPLE host 172.16.10.11. The WAN namespace only
/// routes between the two outside addresses, so clear text that leaks from a
/// gateway toward the other site is dropped there, never delivered.
/// The gateways have no IPsec configured: that is for the test to plug in.
#[derive(Debug)]
pub struct SeedTopology {
    pub h1: NetNs,
    pub gw1: NetNs,
    pub wan: NetNs,
    pub gw2: NetNs,
    pub h2: NetNs,
}

pub const YELLOW_HOST: &str = "192.168.100.10";
pub const BLUE_HOST: &str = "192.168.200.10";
pub const PURPLE_HOST: &str = "172.16.10.11";
pub const SITE1_WAN: &str = "10.255.1.2";
pub const SITE2_WAN: &str = "10.255.2.2";

impl SeedTopology {
    pub fn new() -> io::Result<SeedTopology> {
        let t = SeedTopology {
            h1: NetNs::new("h1")?,
            gw1: NetNs::new("gw1")?,
            wan: NetNs::new("wan")?,
            gw2: NetNs::new("gw2")?,
            h2: NetNs::new("h2")?,
        };
        veth(&t.h1, "lan0", &t.gw1, "lan0")?;
        veth(&t.gw1, "wan0", &t.wan, "site1")?;
        veth(&t.wan, "site2", &t.gw2, "wan0")?;
        veth(&t.gw2, "lan0", &t.h2, "lan0")?;

        t.h1.ip(&["addr", "add", "192.168.100.10/24", "dev", "lan0"])?;
        t.h1.ip(&["addr", "add", "192.168.200.10/24", "dev", "lan0"])?;
        t.h1.ip(&["route", "add", "default", "via", "192.168.100.1"])?;
        t.gw1
            .ip(&["addr", "add", "192.168.100.1/24", "dev", "lan0"])?;
        t.gw1
            .ip(&["addr", "add", "192.168.200.1/24", "dev", "lan0"])?;
        t.gw1.ip(&["addr", "add", "10.255.1.2/24", "dev", "wan0"])?;
        t.gw1
            .ip(&["route", "add", "default", "via", "10.255.1.1"])?;
        t.wan
            .ip(&["addr", "add", "10.255.1.1/24", "dev", "site1"])?;
        t.wan
            .ip(&["addr", "add", "10.255.2.1/24", "dev", "site2"])?;
        t.gw2.ip(&["addr", "add", "10.255.2.2/24", "dev", "wan0"])?;
        t.gw2
            .ip(&["addr", "add", "172.16.10.1/24", "dev", "lan0"])?;
        t.gw2
            .ip(&["route", "add", "default", "via", "10.255.2.1"])?;
        t.h2.ip(&["addr", "add", "172.16.10.11/24", "dev", "lan0"])?;
        t.h2.ip(&["route", "add", "default", "via", "172.16.10.1"])?;
        for ns in [&t.gw1, &t.wan, &t.gw2] {
            ns.make_router()?;
        }
        Ok(t)
    }
}

/// A bounded tcpdump inside a namespace writing a pcap; stopped (SIGINT, so
/// the file is complete) by [`Capture::finish`] or on Drop.
#[derive(Debug)]
pub struct Capture {
    child: Option<std::process::Child>,
    path: std::path::PathBuf,
}

impl Capture {
    /// `tcpdump -i IFACE -w PATH -U -c MAX_PACKETS FILTER` in `ns`; returns
    /// once tcpdump has opened the interface (the pcap file exists).
    pub fn start(
        ns: &NetNs,
        iface: &str,
        filter: &str,
        path: &std::path::Path,
        max_packets: u32,
    ) -> io::Result<Capture> {
        let _ = std::fs::remove_file(path);
        let mut c = ns.command("tcpdump");
        c.args([
            "-n",
            "--immediate-mode",
            "-i",
            iface,
            "-U",
            "-c",
            &max_packets.to_string(),
            "-w",
        ])
        .arg(path)
        .args(filter.split_whitespace())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let mut cap = Capture {
            child: Some(c.spawn()?),
            path: path.to_path_buf(),
        };
        let start = Instant::now();
        while !path.exists() {
            if let Some(ch) = cap.child.as_mut() {
                if let Some(st) = ch.try_wait()? {
                    cap.child = None;
                    return Err(io::Error::other(format!("tcpdump exited: {st}")));
                }
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(io::Error::other("tcpdump did not start within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The file appears just before the capture is armed.
        std::thread::sleep(Duration::from_millis(200));
        Ok(cap)
    }

    /// Stop the capture and return the pcap path.
    pub fn finish(mut self) -> std::path::PathBuf {
        self.stop();
        self.path.clone()
    }

    fn stop(&mut self) {
        stop_child(&mut self.child, "-INT");
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What `ping -c N` reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingStats {
    pub transmitted: u32,
    pub received: u32,
}

/// Parse iputils ping's summary line
/// ("5 packets transmitted, 4 received, 20% packet loss, time 4005ms").
pub fn parse_ping(out: &str) -> Option<PingStats> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut parts = line.split(',');
    let transmitted = parts.next()?.split_whitespace().next()?.parse().ok()?;
    let received = parts.next()?.split_whitespace().next()?.parse().ok()?;
    Some(PingStats {
        transmitted,
        received,
    })
}

/// `ping -c count -i interval -W 1` from `ns` (optionally from address
/// `src`); bounded by count and by a wall-clock limit. Loss is not an error:
/// the caller asserts on the numbers.
pub fn ping(
    ns: &NetNs,
    src: Option<&str>,
    dst: &str,
    count: u32,
    interval: &str,
) -> io::Result<PingStats> {
    let mut c = ns.command("ping");
    c.args(["-n", "-c", &count.to_string(), "-i", interval, "-W", "1"]);
    if let Some(s) = src {
        c.args(["-I", s]);
    }
    c.arg(dst);
    let out = run_bounded(&mut c, Duration::from_secs(u64::from(count) * 2 + 5))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_ping(&text).ok_or_else(|| io::Error::other(format!("unparsable ping output: {text}")))
}

/// Stops a helper process: `signal` (e.g. "-TERM"), up to 5 s for it to
/// exit, then SIGKILL; always reaped. No-op once taken.
pub fn stop_child(child: &mut Option<std::process::Child>, signal: &str) {
    let Some(mut child) = child.take() else {
        return;
    };
    if let Ok(None) = child.try_wait() {
        let _ = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
    }
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_summary_parses() {
        let s = "--- 172.16.10.11 ping statistics ---\n\
                 5 packets transmitted, 4 received, 20% packet loss, time 4005ms\n";
        assert_eq!(
            parse_ping(s),
            Some(PingStats {
                transmitted: 5,
                received: 4
            })
        );
        let e = "5 packets transmitted, 0 received, +5 errors, 100% packet loss";
        assert_eq!(parse_ping(e).map(|p| p.received), Some(0));
        assert_eq!(parse_ping("garbage"), None);
    }
}
