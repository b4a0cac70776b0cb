//! strongSwan as an IKEv2/ESP peer in root integration tests.
//!
//! * [`SwanConfig`] renders the seed's Site1/Site2 configs from the templates
//!   in `scripts/strongswan/` (the same files `charon-ns.sh` uses).
//! * [`Charon`] runs one charon inside a network namespace with every file in
//!   its own directory, and stops it on Drop.
//! * [`parse_list_sas`] reads `swanctl --list-sas --pretty`: IKE and child SAs
//!   with SPIs and byte/packet counters.
//! * [`parse_charon_log`] reads the charon file log (levels `ike 4`, `chd 4`)
//!   into the ESP SA keys per direction ([`EspSaKeys`]), the IKE SA secrets,
//!   and the handshake times. Debian's strongSwan is built without the
//!   `save-keys` plugin, so the log is the only place the keys appear.
//!
//! See scripts/strongswan/README.md for what each piece relies on.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::netns::{run, run_bounded, NetNs};

pub const CHARON: &str = "/usr/lib/ipsec/charon";
pub const SWANCTL: &str = "swanctl";
/// The fixed PSK of every test (the templates' `@PSK@`).
pub const TEST_PSK: &str = "espgate-interop-test-psk-0123456789";

fn templates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/strongswan")
}

/// Whether charon and swanctl are installed; `Err` names what is missing.
pub fn available() -> Result<(), String> {
    if !Path::new(CHARON).exists() {
        return Err(format!(
            "{CHARON} not found (Debian package strongswan-charon)"
        ));
    }
    if !super::netns::have_tool(SWANCTL) {
        return Err("swanctl not found (Debian package strongswan-swanctl)".into());
    }
    let libipsec = "/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so";
    if !Path::new(libipsec).exists() {
        return Err(format!("{libipsec} not found (libcharon-extra-plugins)"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Configuration

/// Which end of the seed scenario this strongSwan plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// Site1-FW, 10.255.1.2: children YELLOW and BLUE to PURPLE.
    Site1,
    /// Site2-FW, 10.255.2.2: PURPLE to YELLOW and BLUE.
    Site2,
}

/// The child SA proposal (IKE is always aes256-sha256-modp2048).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EspSuite {
    /// aes256-sha256-modp2048: AES-256-CBC + HMAC-SHA-256-128, PFS group 14.
    Cbc,
    /// aes256gcm16-modp2048: AES-256-GCM-16, PFS group 14.
    Gcm,
}

impl EspSuite {
    pub fn proposal(self) -> &'static str {
        match self {
            EspSuite::Cbc => "aes256-sha256-modp2048",
            EspSuite::Gcm => "aes256gcm16-modp2048",
        }
    }
}

/// swanctl's `start_action` for both children. With kernel-libipsec `trap`
/// installs the routes into ipsec0 but never starts the tunnel (libipsec
/// raises no acquire), so tests initiate with [`Charon::initiate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAction {
    None,
    Trap,
    Start,
}

impl StartAction {
    fn as_str(self) -> &'static str {
        match self {
            StartAction::None => "none",
            StartAction::Trap => "trap",
            StartAction::Start => "start",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SwanConfig {
    pub site: Site,
    pub esp: EspSuite,
    pub start_action: StartAction,
    pub psk: String,
    /// Log at level 1 only: no key dumps (then [`Charon::key_log`] finds no
    /// keys), for timing runs where the dumps' file writes would count.
    pub quiet_log: bool,
    /// Replace the IKE proposal (default `aes256-sha256-modp2048`), e.g. to
    /// provoke NO_PROPOSAL_CHOSEN.
    pub ike_proposal: Option<String>,
    /// Replace the ESP proposal chosen by `esp` (any swanctl syntax).
    pub esp_proposal: Option<String>,
}

impl SwanConfig {
    pub fn new(site: Site) -> SwanConfig {
        SwanConfig {
            site,
            esp: EspSuite::Cbc,
            start_action: StartAction::None,
            psk: TEST_PSK.to_string(),
            quiet_log: false,
            ike_proposal: None,
            esp_proposal: None,
        }
    }

    /// Write `dir/strongswan.conf` and `dir/swanctl.conf` (and `dir/run/`).
    pub fn render(&self, dir: &Path) -> io::Result<()> {
        let t = templates_dir();
        std::fs::create_dir_all(dir.join("run"))?;
        let dir_s = dir
            .to_str()
            .ok_or_else(|| io::Error::other("instance dir is not UTF-8"))?;
        let mut conf =
            std::fs::read_to_string(t.join("strongswan.conf.in"))?.replace("@DIR@", dir_s);
        if self.quiet_log {
            for (from, to) in [
                ("ike = 4", "ike = 1"),
                ("chd = 4", "chd = 1"),
                ("knl = 2", "knl = 1"),
                ("cfg = 2", "cfg = 1"),
            ] {
                conf = conf.replace(from, to);
            }
        }
        std::fs::write(dir.join("strongswan.conf"), conf)?;
        let site = match self.site {
            Site::Site1 => "site1.swanctl.conf.in",
            Site::Site2 => "site2.swanctl.conf.in",
        };
        let sw = std::fs::read_to_string(t.join(site))?
            .replace(
                "@ESP@",
                self.esp_proposal.as_deref().unwrap_or(self.esp.proposal()),
            )
            .replace(
                "@IKE@",
                self.ike_proposal
                    .as_deref()
                    .unwrap_or("aes256-sha256-modp2048"),
            )
            .replace("@START@", self.start_action.as_str())
            .replace("@PSK@", &self.psk);
        std::fs::write(dir.join("swanctl.conf"), sw)
    }
}

// ---------------------------------------------------------------------------
// The daemon

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

/// One charon running in a namespace. Drop stops it (SIGTERM, then SIGKILL)
/// and removes its directory, unless the thread is panicking or
/// `ESPGATE_KEEP_SWAN=1`: then the directory (config, log) is kept and its
/// path printed, for the post-mortem.
#[derive(Debug)]
pub struct Charon {
    ns: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl Charon {
    /// Render `cfg` into a fresh directory, start charon in `ns`, wait for its
    /// vici socket and load the config.
    pub fn spawn(ns: &NetNs, cfg: &SwanConfig) -> io::Result<Charon> {
        let k = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "espgate-swan-{}-{}-{}",
            std::process::id(),
            k,
            ns.name()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        cfg.render(&dir)?;
        Charon::start(ns, &dir)
    }

    /// Start charon in `ns` with the config already in `dir`
    /// (strongswan.conf whose paths point into `dir`, and swanctl.conf).
    ///
    /// charon's pid file path is compiled in (/run/charon.pid) and a second
    /// instance refuses to start while it exists, so `dir/run` is bound over
    /// /run in the mount namespace `ip netns exec` makes for the command:
    /// the host and the other instances never see it.
    pub fn start(ns: &NetNs, dir: &Path) -> io::Result<Charon> {
        let dir = dir.canonicalize()?;
        let run_dir = dir.join("run");
        std::fs::create_dir_all(&run_dir)?;
        let _ = std::fs::remove_file(run_dir.join("charon.pid"));
        let _ = std::fs::remove_file(run_dir.join("charon.vici"));
        let stdout = std::fs::File::create(dir.join("charon.stdout"))?;
        let stderr = stdout.try_clone()?;
        // `ip netns exec` and `sh` both exec, so the child's pid is charon's.
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "sh", "-c"])
            .arg(
                "mount --bind \"$1/run\" /run || exit 97; \
                 STRONGSWAN_CONF=\"$1/strongswan.conf\" exec \"$2\"",
            )
            .arg("sh")
            .arg(&dir)
            .arg(CHARON)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()?;
        let mut c = Charon {
            ns: ns.name().to_string(),
            dir,
            child: Some(child),
        };
        let sock = c.vici_socket();
        let start = Instant::now();
        while !sock.exists() {
            if let Some(ch) = c.child.as_mut() {
                if let Some(st) = ch.try_wait()? {
                    c.child = None;
                    return Err(io::Error::other(format!(
                        "charon in {} exited at start ({st}): {}",
                        c.ns,
                        c.tail(20)
                    )));
                }
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(io::Error::other(format!(
                    "charon in {}: no vici socket after 10 s: {}",
                    c.ns,
                    c.tail(20)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        c.swanctl(&["--load-all", "--file", &c.path_str("swanctl.conf")])?;
        Ok(c)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("charon.log")
    }

    pub fn vici_socket(&self) -> PathBuf {
        self.dir.join("run/charon.vici")
    }

    fn path_str(&self, f: &str) -> String {
        self.dir.join(f).to_string_lossy().into_owned()
    }

    fn tail(&self, n: usize) -> String {
        let mut s = String::new();
        for f in ["charon.stdout", "charon.log"] {
            if let Ok(t) = std::fs::read_to_string(self.dir.join(f)) {
                let lines: Vec<&str> = t.lines().collect();
                s.push_str(&lines[lines.len().saturating_sub(n)..].join("\n"));
                s.push('\n');
            }
        }
        s
    }

    /// `swanctl OP --uri <this instance> ARGS...` (swanctl wants the URI
    /// after the command), bounded to 30 s. Fails on a non-zero exit.
    pub fn swanctl(&self, args: &[&str]) -> io::Result<String> {
        let (op, rest) = args
            .split_first()
            .ok_or_else(|| io::Error::other("swanctl needs a command"))?;
        let uri = format!("unix://{}", self.vici_socket().display());
        let mut c = Command::new(SWANCTL);
        c.env("STRONGSWAN_CONF", self.dir.join("strongswan.conf"))
            .arg(op)
            .args(["--uri", &uri])
            .args(rest);
        let out = run_bounded(&mut c, Duration::from_secs(30))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "swanctl {op} failed ({}): {text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(text)
    }

    /// `swanctl --initiate --child NAME` and wait until it is established
    /// (or fails); returns how long swanctl took.
    pub fn initiate(&self, child: &str, timeout_s: u32) -> io::Result<Duration> {
        let t = Instant::now();
        self.swanctl(&[
            "--initiate",
            "--child",
            child,
            "--timeout",
            &timeout_s.to_string(),
        ])?;
        Ok(t.elapsed())
    }

    pub fn list_sas(&self) -> io::Result<Vec<IkeSa>> {
        let out = self.swanctl(&["--list-sas", "--pretty"])?;
        parse_list_sas(&out).map_err(|e| io::Error::other(format!("{e}: {out}")))
    }

    pub fn log_text(&self) -> io::Result<String> {
        std::fs::read_to_string(self.log_path())
    }

    /// Keys, secrets and handshake times from this instance's log so far.
    pub fn key_log(&self) -> io::Result<KeyLog> {
        Ok(parse_charon_log(&self.log_text()?))
    }

    fn stop(&mut self) {
        // SIGTERM lets charon delete its SAs and TUN device cleanly.
        super::netns::stop_child(&mut self.child, "-TERM");
    }
}

impl Drop for Charon {
    fn drop(&mut self) {
        self.stop();
        let keep =
            std::thread::panicking() || std::env::var("ESPGATE_KEEP_SWAN").as_deref() == Ok("1");
        if keep {
            eprintln!("strongSwan files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Make sure nothing is left of a previous run's charon using `dir`
/// (for scripts that crashed); not needed by tests using [`Charon`].
pub fn kill_stale(dir: &Path) -> io::Result<()> {
    let pid_file = dir.join("run/charon.pid");
    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
        let pid = pid.trim();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        if exe.as_deref() == Some(Path::new(CHARON)) {
            run(Command::new("kill").args(["-KILL", pid]))?;
        }
        std::fs::remove_file(pid_file)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// swanctl --list-sas --pretty

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// A line that is none of `key = value`, `name {`, `name [`, `}`, `]`.
    BadLine(usize, String),
    /// A `}` or `]` without an opener, or input ending inside a section.
    Unbalanced(usize),
    /// A field an SA must have is missing.
    MissingField(&'static str),
    /// A field that does not parse as its type (SPI hex, counter, ...).
    BadField(&'static str, String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::BadLine(n, l) => write!(f, "line {n}: unexpected {l:?}"),
            ParseError::Unbalanced(n) => write!(f, "line {n}: unbalanced braces"),
            ParseError::MissingField(k) => write!(f, "missing field {k}"),
            ParseError::BadField(k, v) => write!(f, "field {k}: bad value {v:?}"),
        }
    }
}

/// A vici message as swanctl's `--pretty` prints it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViciSection {
    pub values: Vec<(String, String)>,
    pub lists: Vec<(String, Vec<String>)>,
    pub sections: Vec<(String, ViciSection)>,
}

impl ViciSection {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
    pub fn list(&self, k: &str) -> Option<&[String]> {
        self.lists
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_slice())
    }
    pub fn section(&self, k: &str) -> Option<&ViciSection> {
        self.sections.iter().find(|(n, _)| n == k).map(|(_, s)| s)
    }
}

/// Parse `--pretty` output: one top-level section per message
/// (`list-sa event {`, ..., `list-sas reply {`).
pub fn parse_vici_pretty(text: &str) -> Result<Vec<(String, ViciSection)>, ParseError> {
    enum Open {
        Section(String, ViciSection),
        List(String, Vec<String>),
    }
    let mut top = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(Open::List(_, items)) = stack.last_mut() {
            if line == "]" {
                if let Some(Open::List(name, items)) = stack.pop() {
                    match stack.last_mut() {
                        Some(Open::Section(_, s)) => s.lists.push((name, items)),
                        _ => return Err(ParseError::Unbalanced(n)),
                    }
                }
            } else {
                items.push(line.to_string());
            }
            continue;
        }
        if line == "}" {
            match stack.pop() {
                Some(Open::Section(name, sec)) => match stack.last_mut() {
                    Some(Open::Section(_, parent)) => parent.sections.push((name, sec)),
                    Some(Open::List(..)) => return Err(ParseError::Unbalanced(n)),
                    None => top.push((name, sec)),
                },
                _ => return Err(ParseError::Unbalanced(n)),
            }
        } else if let Some(name) = line.strip_suffix(" {") {
            stack.push(Open::Section(name.to_string(), ViciSection::default()));
        } else if let Some(name) = line.strip_suffix(" = [") {
            if stack.is_empty() {
                return Err(ParseError::BadLine(n, line.to_string()));
            }
            stack.push(Open::List(name.to_string(), Vec::new()));
        } else if let Some((k, v)) = line.split_once(" = ") {
            match stack.last_mut() {
                Some(Open::Section(_, s)) => s.values.push((k.to_string(), v.to_string())),
                _ => return Err(ParseError::BadLine(n, line.to_string())),
            }
        } else if let Some(k) = line.strip_suffix(" =") {
            // An empty value prints as "key = " and loses its trailing blank.
            match stack.last_mut() {
                Some(Open::Section(_, s)) => s.values.push((k.to_string(), String::new())),
                _ => return Err(ParseError::BadLine(n, line.to_string())),
            }
        } else {
            return Err(ParseError::BadLine(n, line.to_string()));
        }
    }
    if !stack.is_empty() {
        return Err(ParseError::Unbalanced(text.lines().count()));
    }
    Ok(top)
}

/// One IKE SA of `swanctl --list-sas`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeSa {
    /// The connection name (`site2`).
    pub name: String,
    pub uniqueid: u32,
    pub state: String,
    pub local_host: IpAddr,
    pub local_port: u16,
    pub remote_host: IpAddr,
    pub remote_port: u16,
    pub initiator: bool,
    pub initiator_spi: u64,
    pub responder_spi: u64,
    pub encr_alg: String,
    pub encr_keysize: Option<u32>,
    pub integ_alg: Option<String>,
    pub prf_alg: Option<String>,
    pub dh_group: Option<String>,
    pub children: Vec<ChildSa>,
}

/// One child SA of an [`IkeSa`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSa {
    /// The child config name (`YELLOW`).
    pub name: String,
    pub uniqueid: u32,
    pub reqid: u32,
    pub state: String,
    pub mode: String,
    pub protocol: String,
    pub encap: bool,
    pub spi_in: u32,
    pub spi_out: u32,
    pub encr_alg: String,
    pub encr_keysize: Option<u32>,
    pub integ_alg: Option<String>,
    /// PFS group of this child's exchange (absent for the IKE_AUTH child).
    pub dh_group: Option<String>,
    pub bytes_in: u64,
    pub packets_in: u64,
    pub bytes_out: u64,
    pub packets_out: u64,
    pub local_ts: Vec<String>,
    pub remote_ts: Vec<String>,
}

fn field<'a>(s: &'a ViciSection, k: &'static str) -> Result<&'a str, ParseError> {
    s.get(k).ok_or(ParseError::MissingField(k))
}

fn num<T: std::str::FromStr>(s: &ViciSection, k: &'static str) -> Result<T, ParseError> {
    let v = field(s, k)?;
    v.parse()
        .map_err(|_| ParseError::BadField(k, v.to_string()))
}

fn num_or_zero(s: &ViciSection, k: &'static str) -> Result<u64, ParseError> {
    match s.get(k) {
        None => Ok(0),
        Some(v) => v
            .parse()
            .map_err(|_| ParseError::BadField(k, v.to_string())),
    }
}

fn hex_u32(s: &ViciSection, k: &'static str) -> Result<u32, ParseError> {
    let v = field(s, k)?;
    u32::from_str_radix(v, 16).map_err(|_| ParseError::BadField(k, v.to_string()))
}

fn hex_u64(s: &ViciSection, k: &'static str) -> Result<u64, ParseError> {
    let v = field(s, k)?;
    u64::from_str_radix(v, 16).map_err(|_| ParseError::BadField(k, v.to_string()))
}

fn opt_num(s: &ViciSection, k: &'static str) -> Result<Option<u32>, ParseError> {
    s.get(k)
        .map(|v| {
            v.parse()
                .map_err(|_| ParseError::BadField(k, v.to_string()))
        })
        .transpose()
}

fn parse_child(name: &str, s: &ViciSection) -> Result<ChildSa, ParseError> {
    Ok(ChildSa {
        name: s.get("name").unwrap_or(name).to_string(),
        uniqueid: num(s, "uniqueid")?,
        reqid: num(s, "reqid")?,
        state: field(s, "state")?.to_string(),
        mode: field(s, "mode")?.to_string(),
        protocol: field(s, "protocol")?.to_string(),
        encap: s.get("encap") == Some("yes"),
        spi_in: hex_u32(s, "spi-in")?,
        spi_out: hex_u32(s, "spi-out")?,
        encr_alg: field(s, "encr-alg")?.to_string(),
        encr_keysize: opt_num(s, "encr-keysize")?,
        integ_alg: s.get("integ-alg").map(str::to_string),
        dh_group: s.get("dh-group").map(str::to_string),
        bytes_in: num_or_zero(s, "bytes-in")?,
        packets_in: num_or_zero(s, "packets-in")?,
        bytes_out: num_or_zero(s, "bytes-out")?,
        packets_out: num_or_zero(s, "packets-out")?,
        local_ts: s.list("local-ts").unwrap_or_default().to_vec(),
        remote_ts: s.list("remote-ts").unwrap_or_default().to_vec(),
    })
}

fn parse_ike(name: &str, s: &ViciSection) -> Result<IkeSa, ParseError> {
    let ip = |k: &'static str| -> Result<IpAddr, ParseError> {
        let v = field(s, k)?;
        v.parse()
            .map_err(|_| ParseError::BadField(k, v.to_string()))
    };
    let mut children = Vec::new();
    if let Some(cs) = s.section("child-sas") {
        for (cname, c) in &cs.sections {
            children.push(parse_child(cname, c)?);
        }
    }
    Ok(IkeSa {
        name: name.to_string(),
        uniqueid: num(s, "uniqueid")?,
        state: field(s, "state")?.to_string(),
        local_host: ip("local-host")?,
        local_port: num(s, "local-port")?,
        remote_host: ip("remote-host")?,
        remote_port: num(s, "remote-port")?,
        initiator: s.get("initiator") == Some("yes"),
        initiator_spi: hex_u64(s, "initiator-spi")?,
        responder_spi: hex_u64(s, "responder-spi")?,
        encr_alg: field(s, "encr-alg")?.to_string(),
        encr_keysize: opt_num(s, "encr-keysize")?,
        integ_alg: s.get("integ-alg").map(str::to_string),
        prf_alg: s.get("prf-alg").map(str::to_string),
        dh_group: s.get("dh-group").map(str::to_string),
        children,
    })
}

/// The IKE SAs in `swanctl --list-sas --pretty` output.
pub fn parse_list_sas(text: &str) -> Result<Vec<IkeSa>, ParseError> {
    let mut out = Vec::new();
    for (msg, body) in parse_vici_pretty(text)? {
        if msg != "list-sa event" {
            continue;
        }
        for (name, s) in &body.sections {
            out.push(parse_ike(name, s)?);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// The charon log: keys, secrets, handshake times

/// Direction of an ESP SA as seen by the instance whose log it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    In,
    Out,
}

/// One ESP SA with its keys, as a dataplane would install it.
#[derive(Clone, PartialEq, Eq)]
pub struct EspSaKeys {
    /// Child config name and strongSwan's unique id (`YELLOW{3}`).
    pub child: String,
    pub child_uid: u32,
    pub dir: Dir,
    pub spi: u32,
    /// strongSwan's names: `AES_CBC_256`, `AES_GCM_16_256`.
    pub encr_alg: String,
    /// For AES-GCM the 4-byte salt is appended (RFC 4106 KEYMAT).
    pub encr_key: Vec<u8>,
    /// `HMAC_SHA2_256_128`; None for AEAD.
    pub integ_alg: Option<String>,
    pub integ_key: Vec<u8>,
    /// Outer addresses: for `Out` src is this instance, for `In` the peer.
    pub src: IpAddr,
    pub dst: IpAddr,
    pub local_ts: String,
    pub remote_ts: String,
    /// Whether this instance initiated the exchange that made the child.
    pub initiator: bool,
}

impl fmt::Debug for EspSaKeys {
    // Test logs show which SA, never the key bytes themselves.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EspSaKeys")
            .field("child", &self.child)
            .field("child_uid", &self.child_uid)
            .field("dir", &self.dir)
            .field("spi", &format_args!("{:08x}", self.spi))
            .field("encr_alg", &self.encr_alg)
            .field("encr_key_len", &self.encr_key.len())
            .field("integ_alg", &self.integ_alg)
            .field("integ_key_len", &self.integ_key.len())
            .field("src", &self.src)
            .field("dst", &self.dst)
            .field("initiator", &self.initiator)
            .finish()
    }
}

impl EspSaKeys {
    pub fn encr_key_hex(&self) -> String {
        hex(&self.encr_key)
    }
    pub fn integ_key_hex(&self) -> String {
        hex(&self.integ_key)
    }

    /// One line of Wireshark's `esp_sa` UAT file (what strongSwan's
    /// save-keys plugin would write), so tshark can decrypt a capture.
    /// None for an algorithm Wireshark has no name for here.
    pub fn wireshark_esp_sa(&self) -> Option<String> {
        let encr = match self.encr_alg.as_str() {
            a if a.starts_with("AES_CBC") => "AES-CBC [RFC3602]",
            a if a.starts_with("AES_GCM_16") => "AES-GCM with 16 octet ICV [RFC4106]",
            a if a.starts_with("AES_GCM_12") => "AES-GCM with 12 octet ICV [RFC4106]",
            a if a.starts_with("AES_GCM_8") => "AES-GCM with 8 octet ICV [RFC4106]",
            a if a.starts_with("AES_CTR") => "AES-CTR [RFC3686]",
            "NULL" => "NULL",
            _ => return None,
        };
        let integ = match self.integ_alg.as_deref() {
            None => "NULL",
            Some("HMAC_SHA2_256_128") => "HMAC-SHA-256-128 [RFC4868]",
            Some("HMAC_SHA2_384_192") => "HMAC-SHA-384-192 [RFC4868]",
            Some("HMAC_SHA2_512_256") => "HMAC-SHA-512-256 [RFC4868]",
            Some("HMAC_SHA1_96") => "HMAC-SHA-1-96 [RFC2404]",
            Some(_) => return None,
        };
        let fam = if self.src.is_ipv4() { "IPv4" } else { "IPv6" };
        Some(format!(
            "\"{fam}\",\"{}\",\"{}\",\"0x{:08x}\",\"{encr}\",\"0x{}\",\"{integ}\",\"0x{}\"",
            self.src,
            self.dst,
            self.spi,
            self.encr_key_hex(),
            if self.integ_key.is_empty() {
                String::new()
            } else {
                self.integ_key_hex()
            }
        ))
    }
}

/// A `%B` hex dump from the log ("label => N bytes @ 0x..." + hex lines).
#[derive(Clone, PartialEq, Eq)]
pub struct HexDump {
    /// Milliseconds since midnight (the log's `HH:MM:SS.mmm`).
    pub time_ms: u32,
    pub thread: u32,
    /// The IKE SA's unique id (from the `<name|uid>` prefix), if known.
    pub ike_uid: Option<u32>,
    pub label: String,
    pub bytes: Vec<u8>,
}

impl fmt::Debug for HexDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HexDump({:?}, {} bytes)", self.label, self.bytes.len())
    }
}

/// The secrets of one IKE SA (as derived at IKE_SA_INIT or an IKE rekey).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IkeSecrets {
    pub ike_uid: Option<u32>,
    pub dh_secret: Vec<u8>,
    pub skeyseed: Vec<u8>,
    pub sk_d: Vec<u8>,
    pub sk_ai: Vec<u8>,
    pub sk_ar: Vec<u8>,
    pub sk_ei: Vec<u8>,
    pub sk_er: Vec<u8>,
    pub sk_pi: Vec<u8>,
    pub sk_pr: Vec<u8>,
}

impl fmt::Debug for IkeSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IkeSecrets(ike_uid {:?})", self.ike_uid)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeKind {
    /// IKE_SA_INIT + IKE_AUTH with the first child.
    InitAuth,
    /// CREATE_CHILD_SA for an additional child.
    CreateChild,
    /// CREATE_CHILD_SA with REKEY_SA for an existing child.
    RekeyChild,
}

/// How long an exchange took on the initiator, from the log timestamps
/// (millisecond resolution): first request generated → child established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    pub kind: HandshakeKind,
    pub child: String,
    pub millis: u32,
}

#[derive(Debug, Clone, Default)]
pub struct KeyLog {
    pub esp: Vec<EspSaKeys>,
    pub ike: Vec<IkeSecrets>,
    pub handshakes: Vec<Handshake>,
    pub dumps: Vec<HexDump>,
}

impl KeyLog {
    /// The ESP SA with this SPI (the latest one, if a SPI was reused).
    pub fn by_spi(&self, spi: u32) -> Option<&EspSaKeys> {
        self.esp.iter().rev().find(|k| k.spi == spi)
    }
}

pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// One parsed log line: `HH:MM:SS.mmm TT[GRP] <name|uid> message`.
struct LogLine<'a> {
    time_ms: u32,
    thread: u32,
    ike_uid: Option<u32>,
    msg: &'a str,
}

fn parse_time(t: &str) -> Option<u32> {
    let (hms, ms) = t.split_once('.').unwrap_or((t, "0"));
    let mut it = hms.split(':');
    let h: u32 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let s: u32 = it.next()?.parse().ok()?;
    let ms: u32 = ms.parse().ok()?;
    Some(((h * 60 + m) * 60 + s) * 1000 + ms)
}

fn parse_line(line: &str) -> Option<LogLine<'_>> {
    let (time, rest) = line.split_once(' ')?;
    let time_ms = parse_time(time)?;
    let (tg, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let thread: u32 = tg.split_once('[')?.0.parse().ok()?;
    let (ike_uid, msg) = match rest.strip_prefix('<') {
        Some(r) => {
            let (tag, m) = r.split_once("> ").unwrap_or((r.trim_end_matches('>'), ""));
            let uid = tag.rsplit('|').next().and_then(|u| u.parse().ok());
            (uid, m)
        }
        None => (None, rest),
    };
    Some(LogLine {
        time_ms,
        thread,
        ike_uid,
        msg,
    })
}

/// `"label => N bytes @ 0x..."` → (label, N)
fn dump_header(msg: &str) -> Option<(&str, usize)> {
    let (label, rest) = msg.split_once(" => ")?;
    let (n, tail) = rest.split_once(" bytes")?;
    if !(tail.is_empty() || tail.starts_with(" @ ")) {
        return None;
    }
    Some((label, n.parse().ok()?))
}

/// Bytes of one hex line `"  16: BF 40 6F ...  ascii"`; `want` caps the
/// count so the ASCII column is never read as hex.
fn dump_line(msg: &str, want: usize) -> Option<Vec<u8>> {
    let (off, rest) = msg.trim_start().split_once(": ")?;
    off.parse::<usize>().ok()?;
    let mut out = Vec::with_capacity(16);
    for tok in rest.split(' ').take(want.min(16)) {
        if tok.len() != 2 {
            return None;
        }
        out.push(u8::from_str_radix(tok, 16).ok()?);
    }
    Some(out)
}

/// "ESP:AES_CBC_256/HMAC_SHA2_256_128/MODP_2048/NO_EXT_SEQ" → (encr, integ)
fn esp_algs(proposal: &str) -> Option<(String, Option<String>)> {
    let body = proposal.strip_prefix("ESP:")?;
    let mut parts = body.split('/');
    let encr = parts.next()?.to_string();
    let integ = parts
        .find(|p| p.starts_with("HMAC_") || p.starts_with("AES_XCBC") || p.starts_with("AES_CMAC"))
        .map(str::to_string);
    Some((encr, integ))
}

#[derive(Default)]
struct ThreadState {
    /// Last message parsed on this thread was a response: we initiated.
    initiator: Option<bool>,
    proposal: Option<(String, Option<String>)>,
    encr_i: Vec<u8>,
    encr_r: Vec<u8>,
    integ_i: Vec<u8>,
    integ_r: Vec<u8>,
    dump: Option<(HexDump, usize)>,
}

/// Extract ESP SA keys, IKE secrets and handshake times from a charon file
/// log written with `chd >= 4` and `ike >= 4` (the template's levels).
///
/// The log prints, per child SA and on the thread that handles the message:
/// `parsed <EXCHANGE> request|response`, `selected proposal: ESP:...`, four
/// dumps `encryption|integrity initiator|responder key => N bytes`, then
/// `CHILD_SA NAME{uid} established with SPIs XXXXXXXX_i YYYYYYYY_o and TS
/// L === R`. `_i`/`_o` are inbound/outbound SPIs of this instance; the
/// "initiator" keys protect traffic from the exchange's initiator, so which
/// pair is outbound follows from whether the message just parsed was a
/// response (we initiated) or a request. Outer addresses come from
/// `IKE_SA name[uid] established between L[id]...R[id]`.
pub fn parse_charon_log(text: &str) -> KeyLog {
    let mut out = KeyLog::default();
    let mut threads: HashMap<u32, ThreadState> = HashMap::new();
    let mut ike_addrs: HashMap<Option<u32>, (IpAddr, IpAddr)> = HashMap::new();
    let mut last_addrs: Option<(IpAddr, IpAddr)> = None;
    let mut pending: HashMap<Option<u32>, (HandshakeKind, u32)> = HashMap::new();
    let mut ike_secrets: HashMap<Option<u32>, IkeSecrets> = HashMap::new();

    for line in text.lines() {
        let Some(l) = parse_line(line) else { continue };
        let st = threads.entry(l.thread).or_default();

        // Continue a hex dump in progress on this thread.
        if let Some((mut d, want)) = st.dump.take() {
            if let Some(b) = dump_line(l.msg, want - d.bytes.len()) {
                d.bytes.extend_from_slice(&b);
                if d.bytes.len() < want {
                    st.dump = Some((d, want));
                } else {
                    finish_dump(d, st, &mut ike_secrets, &mut out);
                }
                continue;
            }
            // A dump cut short is dropped: a short key would be wrong.
        }

        if let Some((label, n)) = dump_header(l.msg) {
            let d = HexDump {
                time_ms: l.time_ms,
                thread: l.thread,
                ike_uid: l.ike_uid,
                label: label.to_string(),
                bytes: Vec::with_capacity(n),
            };
            if n == 0 {
                finish_dump(d, st, &mut ike_secrets, &mut out);
            } else {
                st.dump = Some((d, n));
            }
            continue;
        }

        let m = l.msg;
        if let Some(r) = m.strip_prefix("parsed ") {
            if r.contains(" response ") {
                st.initiator = Some(true);
            } else if r.contains(" request ") {
                st.initiator = Some(false);
            }
        } else if let Some(p) = m.strip_prefix("selected proposal: ") {
            if let Some(a) = esp_algs(p) {
                st.proposal = Some(a);
            }
        } else if m.starts_with("initiating IKE_SA ") {
            pending.insert(l.ike_uid, (HandshakeKind::InitAuth, l.time_ms));
        } else if m.starts_with("generating CREATE_CHILD_SA request") {
            let kind = if m.contains(" N(REKEY_SA)") {
                HandshakeKind::RekeyChild
            } else {
                HandshakeKind::CreateChild
            };
            pending.insert(l.ike_uid, (kind, l.time_ms));
        } else if let Some(r) = m.strip_prefix("IKE_SA ") {
            if let Some((_, between)) = r.split_once(" established between ") {
                if let Some(a) = parse_between(between) {
                    ike_addrs.insert(l.ike_uid, a);
                    last_addrs = Some(a);
                }
                if let Some(s) = ike_secrets.remove(&l.ike_uid) {
                    out.ike.push(s);
                }
            }
        } else if let Some(r) = m
            .strip_prefix("CHILD_SA ")
            .or_else(|| m.strip_prefix("inbound CHILD_SA "))
            .or_else(|| m.strip_prefix("outbound CHILD_SA "))
        {
            // A rekey (make-before-break) logs "inbound CHILD_SA ..
            // established" when the keys are derived and "outbound ..." once
            // the old SA is gone, maybe on another thread: both directions'
            // records come from the first line.
            let known = |uid| out.esp.iter().any(|k: &EspSaKeys| k.child_uid == uid);
            if let Some(ev) = parse_child_established(r).filter(|ev| !known(ev.uid)) {
                let addrs = ike_addrs.get(&l.ike_uid).copied().or(last_addrs);
                if let (Some((local, remote)), Some(init), Some((encr, integ))) =
                    (addrs, st.initiator, st.proposal.clone())
                {
                    let (out_e, out_a, in_e, in_a) = if init {
                        (&st.encr_i, &st.integ_i, &st.encr_r, &st.integ_r)
                    } else {
                        (&st.encr_r, &st.integ_r, &st.encr_i, &st.integ_i)
                    };
                    let mk = |dir, spi, e: &Vec<u8>, a: &Vec<u8>, src, dst| EspSaKeys {
                        child: ev.name.clone(),
                        child_uid: ev.uid,
                        dir,
                        spi,
                        encr_alg: encr.clone(),
                        encr_key: e.clone(),
                        integ_alg: integ.clone(),
                        integ_key: a.clone(),
                        src,
                        dst,
                        local_ts: ev.local_ts.clone(),
                        remote_ts: ev.remote_ts.clone(),
                        initiator: init,
                    };
                    out.esp
                        .push(mk(Dir::In, ev.spi_in, in_e, in_a, remote, local));
                    out.esp
                        .push(mk(Dir::Out, ev.spi_out, out_e, out_a, local, remote));
                }
                st.encr_i.clear();
                st.encr_r.clear();
                st.integ_i.clear();
                st.integ_r.clear();
                if st.initiator == Some(true) {
                    // The first child established after our request closes
                    // the exchange.
                    if let Some((kind, t0)) = pending.remove(&l.ike_uid) {
                        let ms = if l.time_ms >= t0 {
                            l.time_ms - t0
                        } else {
                            l.time_ms + 86_400_000 - t0
                        };
                        out.handshakes.push(Handshake {
                            kind,
                            child: ev.name.clone(),
                            millis: ms,
                        });
                    }
                }
            }
        }
    }
    out
}

fn finish_dump(
    d: HexDump,
    st: &mut ThreadState,
    ike: &mut HashMap<Option<u32>, IkeSecrets>,
    out: &mut KeyLog,
) {
    match d.label.as_str() {
        "encryption initiator key" => st.encr_i = d.bytes.clone(),
        "encryption responder key" => st.encr_r = d.bytes.clone(),
        "integrity initiator key" => st.integ_i = d.bytes.clone(),
        "integrity responder key" => st.integ_r = d.bytes.clone(),
        label => {
            let s = ike.entry(d.ike_uid).or_insert_with(|| IkeSecrets {
                ike_uid: d.ike_uid,
                ..IkeSecrets::default()
            });
            let slot = match label {
                "shared Diffie Hellman secret" => Some(&mut s.dh_secret),
                "SKEYSEED" => Some(&mut s.skeyseed),
                "Sk_d secret" => Some(&mut s.sk_d),
                "Sk_ai secret" => Some(&mut s.sk_ai),
                "Sk_ar secret" => Some(&mut s.sk_ar),
                "Sk_ei secret" => Some(&mut s.sk_ei),
                "Sk_er secret" => Some(&mut s.sk_er),
                "Sk_pi secret" => Some(&mut s.sk_pi),
                "Sk_pr secret" => Some(&mut s.sk_pr),
                _ => None,
            };
            if let Some(slot) = slot {
                *slot = d.bytes.clone();
            }
        }
    }
    out.dumps.push(d);
}

/// "10.255.1.2[id]...10.255.2.2[id]" → (local, remote)
fn parse_between(s: &str) -> Option<(IpAddr, IpAddr)> {
    let (l, r) = s.split_once("...")?;
    let l = l.split('[').next()?.parse().ok()?;
    let r = r.split('[').next()?.parse().ok()?;
    Some((l, r))
}

struct ChildEstablished {
    name: String,
    uid: u32,
    spi_in: u32,
    spi_out: u32,
    local_ts: String,
    remote_ts: String,
}

/// "YELLOW{3} established with SPIs 9784a7bc_i 9369c1d7_o and TS L === R"
fn parse_child_established(r: &str) -> Option<ChildEstablished> {
    let (head, rest) = r.split_once(" established with SPIs ")?;
    let (name, uid) = head.split_once('{')?;
    let uid = uid.strip_suffix('}')?.parse().ok()?;
    let mut it = rest.split_whitespace();
    let spi_in = u32::from_str_radix(it.next()?.strip_suffix("_i")?, 16).ok()?;
    let spi_out = u32::from_str_radix(it.next()?.strip_suffix("_o")?, 16).ok()?;
    let ts = rest.split_once(" and TS ").map(|x| x.1).unwrap_or("");
    let (lt, rt) = ts.split_once(" === ").unwrap_or((ts, ""));
    Some(ChildEstablished {
        name: name.to_string(),
        uid,
        spi_in,
        spi_out,
        local_ts: lt.trim().to_string(),
        remote_ts: rt.trim().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRETTY: &str = "list-sa event {
  site2 {
    uniqueid = 1
    version = 2
    state = ESTABLISHED
    local-host = 10.255.1.2
    local-port = 4500
    local-id = 10.255.1.2
    remote-host = 10.255.2.2
    remote-port = 4500
    remote-id = 10.255.2.2
    initiator = yes
    initiator-spi = 2a9c9a1bc4c22121
    responder-spi = 8b23935a8255014b
    encr-alg = AES_CBC
    encr-keysize = 256
    integ-alg = HMAC_SHA2_256_128
    prf-alg = PRF_HMAC_SHA2_256
    dh-group = MODP_2048
    child-sas {
      YELLOW-3 {
        name = YELLOW
        uniqueid = 3
        reqid = 1
        state = INSTALLED
        mode = TUNNEL
        protocol = ESP
        encap = yes
        spi-in = 9784a7bc
        spi-out = 9369c1d7
        encr-alg = AES_CBC
        encr-keysize = 256
        integ-alg = HMAC_SHA2_256_128
        bytes-in = 420
        packets-in = 5
        bytes-out = 420
        packets-out = 5
        local-ts = [
          192.168.100.0/24
        ]
        remote-ts = [
          172.16.10.0/24
        ]
      }
    }
  }
}
list-sas reply {
}
";

    #[test]
    fn list_sas_pretty_parses() {
        let sas = parse_list_sas(PRETTY).unwrap();
        assert_eq!(sas.len(), 1);
        let ike = &sas[0];
        assert_eq!(ike.name, "site2");
        assert!(ike.initiator);
        assert_eq!(ike.initiator_spi, 0x2a9c9a1bc4c22121);
        assert_eq!(ike.remote_host, "10.255.2.2".parse::<IpAddr>().unwrap());
        assert_eq!(ike.children.len(), 1);
        let c = &ike.children[0];
        assert_eq!(c.name, "YELLOW");
        assert_eq!((c.spi_in, c.spi_out), (0x9784a7bc, 0x9369c1d7));
        assert_eq!((c.packets_in, c.bytes_out), (5, 420));
        assert_eq!(c.local_ts, vec!["192.168.100.0/24".to_string()]);
        assert_eq!(c.dh_group, None);
        assert!(c.encap);
    }

    #[test]
    fn list_sas_rejects_garbage() {
        assert!(matches!(
            parse_list_sas("list-sa event {\n  x\n"),
            Err(ParseError::BadLine(2, _))
        ));
        assert!(matches!(
            parse_list_sas("}\n"),
            Err(ParseError::Unbalanced(1))
        ));
        let bad_spi = PRETTY.replace("spi-in = 9784a7bc", "spi-in = zz");
        assert!(matches!(
            parse_list_sas(&bad_spi),
            Err(ParseError::BadField("spi-in", _))
        ));
        assert_eq!(parse_list_sas("").unwrap(), vec![]);
    }

    /// Excerpt of a real initiator log (gw1, 5.9.8), shortened keys.
    const LOG: &str = "\
07:07:44.600 14[IKE] <site2|1> initiating IKE_SA site2[1] to 10.255.2.2
07:07:44.603 11[ENC] <site2|1> parsed IKE_SA_INIT response 0 [ SA KE No ]
07:07:44.606 11[IKE] <site2|1> SKEYSEED => 4 bytes @ 0x7f2b68002720
07:07:44.606 11[IKE] <site2|1>    0: 01 02 03 04                                      ....
07:07:44.607 11[ENC] <site2|1> generating IKE_AUTH request 1 [ IDi AUTH SA TSi TSr ]
07:07:44.611 09[ENC] <site2|1> parsed IKE_AUTH response 1 [ IDr AUTH SA TSi TSr ]
07:07:44.611 09[IKE] <site2|1> IKE_SA site2[1] established between 10.255.1.2[10.255.1.2]...10.255.2.2[10.255.2.2]
07:07:44.611 09[CFG] <site2|1> selected proposal: ESP:AES_CBC_256/HMAC_SHA2_256_128/NO_EXT_SEQ
07:07:44.611 09[CHD] <site2|1> encryption initiator key => 18 bytes @ 0x7f2b70001c10
07:07:44.611 09[CHD] <site2|1>    0: BF 0E 3A 46 8D 02 06 61 AA 47 EC 38 8B BF 51 A0  ..:F...a.G.8..Q.
07:07:44.611 05[NET] <site2|1> unrelated line from another thread
07:07:44.611 09[CHD] <site2|1>   16: 41 42                                            AB
07:07:44.611 09[CHD] <site2|1> encryption responder key => 2 bytes @ 0x7f2b70008650
07:07:44.611 09[CHD] <site2|1>    0: 4F 4F                                            OO
07:07:44.611 09[CHD] <site2|1> integrity initiator key => 2 bytes @ 0x7f2b54037810
07:07:44.611 09[CHD] <site2|1>    0: 11 11                                            ..
07:07:44.611 09[CHD] <site2|1> integrity responder key => 2 bytes @ 0x7f2b70000bb0
07:07:44.611 09[CHD] <site2|1>    0: 22 22                                            \"\"
07:07:44.611 09[IKE] <site2|1> CHILD_SA YELLOW{3} established with SPIs 9784a7bc_i 9369c1d7_o and TS 192.168.100.0/24 === 172.16.10.0/24
07:07:45.482 13[ENC] <site2|1> generating CREATE_CHILD_SA request 2 [ SA No KE TSi TSr ]
07:07:45.486 09[ENC] <site1|1> parsed CREATE_CHILD_SA request 2 [ SA No KE TSi TSr ]
07:07:45.486 09[CFG] <site2|1> selected proposal: ESP:AES_GCM_16_256/MODP_2048/NO_EXT_SEQ
07:07:45.489 09[CHD] <site2|1> encryption initiator key => 2 bytes @ 0x7f2b7000a820
07:07:45.489 09[CHD] <site2|1>    0: AA AA                                            ..
07:07:45.489 09[CHD] <site2|1> encryption responder key => 2 bytes @ 0x7f2b7000b1b0
07:07:45.489 09[CHD] <site2|1>    0: BB BB                                            ..
07:07:45.489 09[IKE] <site2|1> CHILD_SA BLUE{4} established with SPIs 3ce162a9_i 76fd8417_o and TS 192.168.200.0/24 === 172.16.10.0/24
07:29:56.615 14[ENC] <site2|1> generating CREATE_CHILD_SA request 3 [ N(REKEY_SA) SA No KE TSi TSr ]
07:29:56.619 11[ENC] <site2|1> parsed CREATE_CHILD_SA response 3 [ SA No KE TSi TSr ]
07:29:56.620 11[CFG] <site2|1> selected proposal: ESP:AES_GCM_16_256/MODP_2048/NO_EXT_SEQ
07:29:56.622 11[CHD] <site2|1> encryption initiator key => 2 bytes @ 0x7f203c004090
07:29:56.622 11[CHD] <site2|1>    0: CC CC                                            ..
07:29:56.622 11[CHD] <site2|1> encryption responder key => 2 bytes @ 0x7f203c002290
07:29:56.622 11[CHD] <site2|1>    0: DD DD                                            ..
07:29:56.622 11[IKE] <site2|1> inbound CHILD_SA YELLOW{5} established with SPIs 7ade42cd_i aceebcc5_o and TS 192.168.100.0/24 === 172.16.10.0/24
07:29:56.630 16[IKE] <site2|1> outbound CHILD_SA YELLOW{5} established with SPIs 7ade42cd_i aceebcc5_o and TS 192.168.100.0/24 === 172.16.10.0/24
";

    #[test]
    fn charon_log_yields_directional_keys() {
        let k = parse_charon_log(LOG);
        assert_eq!(k.esp.len(), 6);
        // The rekeyed YELLOW{5}: we initiated the rekey, so the initiator key
        // goes out; the later "outbound ..." line adds nothing.
        assert_eq!(k.by_spi(0xaceebcc5).unwrap().encr_key_hex(), "cccc");
        assert_eq!(k.by_spi(0x7ade42cd).unwrap().encr_key_hex(), "dddd");
        let out = k.by_spi(0x9369c1d7).unwrap();
        assert_eq!(out.dir, Dir::Out);
        assert!(out.initiator);
        assert_eq!(out.encr_alg, "AES_CBC_256");
        // The 18-byte key spans two hex lines with another thread between.
        assert_eq!(out.encr_key_hex(), "bf0e3a468d020661aa47ec388bbf51a04142");
        assert_eq!(out.integ_key_hex(), "1111");
        assert_eq!(out.src, "10.255.1.2".parse::<IpAddr>().unwrap());
        assert_eq!(out.dst, "10.255.2.2".parse::<IpAddr>().unwrap());
        let inb = k.by_spi(0x9784a7bc).unwrap();
        assert_eq!((inb.dir, inb.encr_key_hex()), (Dir::In, "4f4f".to_string()));
        assert_eq!(inb.src, "10.255.2.2".parse::<IpAddr>().unwrap());

        // As responder of CREATE_CHILD_SA the responder keys go out; GCM has
        // no integrity key.
        let blue_out = k.by_spi(0x76fd8417).unwrap();
        assert!(!blue_out.initiator);
        assert_eq!(blue_out.encr_key_hex(), "bbbb");
        assert_eq!(blue_out.integ_alg, None);
        assert!(blue_out.integ_key.is_empty());
        assert_eq!(k.by_spi(0x3ce162a9).unwrap().encr_key_hex(), "aaaa");
        assert!(blue_out
            .wireshark_esp_sa()
            .unwrap()
            .contains("AES-GCM with 16 octet ICV [RFC4106]"));

        assert_eq!(k.ike.len(), 1);
        assert_eq!(k.ike[0].skeyseed, vec![1, 2, 3, 4]);
        assert_eq!(
            k.handshakes,
            vec![
                Handshake {
                    kind: HandshakeKind::InitAuth,
                    child: "YELLOW".into(),
                    millis: 11
                },
                Handshake {
                    kind: HandshakeKind::RekeyChild,
                    child: "YELLOW".into(),
                    millis: 7
                }
            ]
        );
    }

    #[test]
    fn charon_log_ignores_cut_dumps_and_noise() {
        let cut = "07:07:44.611 09[CHD] <x|1> encryption initiator key => 32 bytes @ 0x1\n\
                   07:07:44.611 09[CHD] <x|1>    0: zz\n\
                   not a log line\n";
        let k = parse_charon_log(cut);
        assert!(k.esp.is_empty());
        assert!(k.dumps.is_empty());
        assert!(parse_charon_log("").esp.is_empty());
    }

    #[test]
    fn wireshark_line_has_uat_shape() {
        let k = parse_charon_log(LOG);
        let l = k.by_spi(0x9369c1d7).unwrap().wireshark_esp_sa().unwrap();
        assert_eq!(
            l,
            "\"IPv4\",\"10.255.1.2\",\"10.255.2.2\",\"0x9369c1d7\",\"AES-CBC [RFC3602]\",\
             \"0xbf0e3a468d020661aa47ec388bbf51a04142\",\"HMAC-SHA-256-128 [RFC4868]\",\"0x1111\""
        );
    }
}

// ---------------------------------------------------------------------------
// Independent check: tshark decrypts a capture with the logged keys

/// One ESP packet of a capture as tshark dissected it with the given keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsharkEsp {
    pub spi: u32,
    /// Inner (decrypted) addresses; None when tshark could not decrypt.
    pub inner: Option<(IpAddr, IpAddr)>,
    /// HMAC check result; None when not checked (AEAD, or no key).
    pub icv_good: Option<bool>,
}

/// Run tshark over `pcap` with `keys` as its `esp_sa` table (passed with
/// `-o uat:esp_sa:...`, one record per SA; no user config is touched).
/// Wireshark dissects UDP 4500 as ESP-in-UDP by itself.
pub fn tshark_decrypt(pcap: &Path, keys: &[EspSaKeys]) -> io::Result<Vec<TsharkEsp>> {
    let mut c = Command::new("tshark");
    c.arg("-r").arg(pcap).args([
        "-o",
        "esp.enable_encryption_decode:TRUE",
        "-o",
        "esp.enable_authentication_check:TRUE",
    ]);
    for k in keys {
        if let Some(rec) = k.wireshark_esp_sa() {
            c.arg("-o").arg(format!("uat:esp_sa:{rec}"));
        }
    }
    c.args([
        "-Y",
        "esp",
        "-T",
        "fields",
        "-E",
        "separator=/t",
        "-e",
        "esp.spi",
        "-e",
        "ip.src",
        "-e",
        "ip.dst",
        "-e",
        "esp.icv_good",
    ]);
    let out = run_bounded(&mut c, Duration::from_secs(60))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "tshark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let mut pkts = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 3 {
            continue;
        }
        let spi = f[0].split(',').next().unwrap_or("");
        let spi = u32::from_str_radix(spi.trim_start_matches("0x"), 16)
            .map_err(|_| io::Error::other(format!("tshark spi {spi:?}")))?;
        let srcs: Vec<&str> = f[1].split(',').collect();
        let dsts: Vec<&str> = f[2].split(',').collect();
        let inner = if srcs.len() >= 2 && dsts.len() >= 2 {
            match (srcs[srcs.len() - 1].parse(), dsts[dsts.len() - 1].parse()) {
                (Ok(s), Ok(d)) => Some((s, d)),
                _ => None,
            }
        } else {
            None
        };
        let icv_good = match f.get(3).copied().unwrap_or("") {
            "1" | "True" => Some(true),
            "0" | "False" => Some(false),
            _ => None,
        };
        pkts.push(TsharkEsp {
            spi,
            inner,
            icv_good,
        });
    }
    Ok(pkts)
}
