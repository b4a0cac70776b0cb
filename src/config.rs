//! `gateway.toml`: what one espgate gateway runs.
//!
//! Values are checked while they are read (newtypes with `try_from`), so a
//! bad value's error carries the toml span of that value; checks that need
//! several fields run after, on fields kept as [`Spanned`]. Either way a
//! [`ConfigError::Invalid`] names the file, line, column and field and says
//! what was expected.
//!
//! The crypto ACL stays raw text here (inline `text` or `file`); the
//! gateway parses it with `espgate_dataplane::spd::acl::parse`.

use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use espgate_dataplane::api::{Lifetime, Suite};
use espgate_dataplane::spd::acl::{self, AclConfig};
use espgate_dataplane::spd::{DefaultAction, Spd};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use toml::Spanned;
use zeroize::Zeroizing;

/// Most workers an inbound SPI can name (`api::Spi::MAX_SHARDS`).
pub const MAX_WORKERS: usize = espgate_dataplane::api::Spi::MAX_SHARDS;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{col}: {field}: {expected}")]
    Invalid {
        file: PathBuf,
        line: usize,
        col: usize,
        field: String,
        expected: String,
    },
}

// ---------------------------------------------------------------- values

/// `lan` (cleartext, protected networks) or `wan` (ESP side).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Lan,
    Wan,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    AfXdp,
    Udp,
    Tun,
    Mem,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoMatch {
    /// Packets matching no ACL line go out in clear (Cisco crypto map).
    Bypass,
    Drop,
}

/// How `permit` entries map to child SAs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SaPerAcl {
    /// One child SA per expanded entry, as the ASA does (the seed).
    #[default]
    PerEntry,
    /// One child SA for all entries, its TSi/TSr listing every entry's
    /// networks (strongSwan's several subnets in one CHILD_SA).
    Combined,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AcquireMode {
    /// Hold packets while the SA is negotiated (the first ping is not lost).
    Queue,
    /// Drop them, as Cisco does.
    Drop,
}

/// An Ethernet address written `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr(pub [u8; 6]);

impl TryFrom<String> for MacAddr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let mut out = [0u8; 6];
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!("MAC address aa:bb:cc:dd:ee:ff expected, got {s:?}"));
        }
        for (o, p) in out.iter_mut().zip(parts) {
            *o = u8::from_str_radix(p, 16)
                .map_err(|_| format!("MAC address aa:bb:cc:dd:ee:ff expected, got {s:?}"))?;
        }
        Ok(MacAddr(out))
    }
}

impl From<MacAddr> for String {
    fn from(m: MacAddr) -> String {
        m.to_string()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Diffie-Hellman groups by IKEv2 transform ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DhGroup {
    /// MODP-2048, group 14 (RFC 3526).
    Modp2048,
}

impl DhGroup {
    pub fn number(self) -> u16 {
        match self {
            DhGroup::Modp2048 => 14,
        }
    }
    fn parse(s: &str) -> Option<DhGroup> {
        match s {
            "modp2048" => Some(DhGroup::Modp2048),
            _ => None,
        }
    }
}

/// IKE SA cipher.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IkeEncr {
    Aes128Cbc,
    Aes256Cbc,
}

impl IkeEncr {
    pub fn key_bits(self) -> u16 {
        match self {
            IkeEncr::Aes128Cbc => 128,
            IkeEncr::Aes256Cbc => 256,
        }
    }
}

/// IKE SA integrity and PRF (the same hash for both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IkeHash {
    Sha256,
}

/// `aes256-sha256-modp2048`: encryption-integrity/prf-DH group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IkeProposal {
    pub encr: IkeEncr,
    pub hash: IkeHash,
    pub dh: DhGroup,
}

const IKE_PROPOSAL_EXPECTED: &str =
    "an IKE proposal like \"aes256-sha256-modp2048\" (encryption aes128|aes256, hash sha256, DH modp2048)";

impl TryFrom<String> for IkeProposal {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bad = || format!("{IKE_PROPOSAL_EXPECTED}, got {s:?}");
        let mut it = s.split('-');
        let encr = match it.next() {
            Some("aes128") => IkeEncr::Aes128Cbc,
            Some("aes256") => IkeEncr::Aes256Cbc,
            _ => return Err(bad()),
        };
        let hash = match it.next() {
            Some("sha256") => IkeHash::Sha256,
            _ => return Err(bad()),
        };
        let dh = it.next().and_then(DhGroup::parse).ok_or_else(bad)?;
        if it.next().is_some() {
            return Err(bad());
        }
        Ok(IkeProposal { encr, hash, dh })
    }
}

impl From<IkeProposal> for String {
    fn from(p: IkeProposal) -> String {
        p.to_string()
    }
}

impl fmt::Display for IkeProposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = match self.encr {
            IkeEncr::Aes128Cbc => "aes128",
            IkeEncr::Aes256Cbc => "aes256",
        };
        write!(f, "{e}-sha256-modp{}", 2048)
    }
}

/// An ESP proposal: `aes256-sha256`, `aes128-sha256`, `aes256-sha1`,
/// `aes128gcm16`, `aes256gcm16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EspProposal(pub Suite);

const ESP_NAMES: [(&str, Suite); 5] = [
    ("aes256-sha256", Suite::Aes256CbcHmacSha256),
    ("aes128-sha256", Suite::Aes128CbcHmacSha256),
    ("aes256-sha1", Suite::Aes256CbcHmacSha1),
    ("aes128gcm16", Suite::Aes128Gcm16),
    ("aes256gcm16", Suite::Aes256Gcm16),
];

impl TryFrom<String> for EspProposal {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        ESP_NAMES
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, suite)| EspProposal(*suite))
            .ok_or_else(|| {
                let names: Vec<&str> = ESP_NAMES.iter().map(|(n, _)| *n).collect();
                format!("one of {} expected, got {s:?}", names.join(", "))
            })
    }
}

impl From<EspProposal> for String {
    fn from(p: EspProposal) -> String {
        p.to_string()
    }
}

impl fmt::Display for EspProposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = ESP_NAMES
            .iter()
            .find(|(_, s)| *s == self.0)
            .map(|(n, _)| *n)
            .unwrap_or("?");
        f.write_str(name)
    }
}

/// `"modp2048"` or `"none"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Pfs(pub Option<DhGroup>);

impl TryFrom<String> for Pfs {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s == "none" {
            return Ok(Pfs(None));
        }
        DhGroup::parse(&s)
            .map(|g| Pfs(Some(g)))
            .ok_or_else(|| format!("\"modp2048\" or \"none\" expected, got {s:?}"))
    }
}

impl From<Pfs> for String {
    fn from(p: Pfs) -> String {
        match p.0 {
            Some(DhGroup::Modp2048) => "modp2048".into(),
            None => "none".into(),
        }
    }
}

/// Anti-replay window in packets, 64..=4096 (RFC 4303 §3.4.3 asks for at
/// least 32; 64 is Cisco's default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct ReplayWindow(pub u32);

impl TryFrom<u64> for ReplayWindow {
    type Error = String;
    fn try_from(v: u64) -> Result<Self, String> {
        if (64..=4096).contains(&v) {
            Ok(ReplayWindow(v as u32))
        } else {
            Err(format!(
                "a replay window of 64..=4096 packets expected, got {v}"
            ))
        }
    }
}

impl From<ReplayWindow> for u64 {
    fn from(w: ReplayWindow) -> u64 {
        w.0 as u64
    }
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow(64)
    }
}

/// A pre-shared key: zeroized on drop, never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Psk(pub Zeroizing<Vec<u8>>);

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Psk(<{} bytes>)", self.0.len())
    }
}

impl<'de> Deserialize<'de> for Psk {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Zeroizing::new(String::deserialize(d)?);
        if s.is_empty() {
            return Err(serde::de::Error::custom(
                "a non-empty pre-shared key expected",
            ));
        }
        Ok(Psk(Zeroizing::new(s.as_bytes().to_vec())))
    }
}

impl Serialize for Psk {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

// -------------------------------------------------------------- sections

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub gateway: GatewaySection,
    #[serde(default)]
    pub interfaces: Vec<Spanned<Interface>>,
    pub ike: IkeSection,
    #[serde(default)]
    pub peers: Vec<Spanned<Peer>>,
    pub esp: EspSection,
    pub acl: Spanned<AclSection>,
    #[serde(default)]
    pub acquire: AcquireSection,
    /// The ACL text, from `acl.text` or read from `acl.file` at load.
    #[serde(skip)]
    pub acl_text: String,
    /// `acl_text` parsed (objects, groups, lists with expanded entries).
    #[serde(skip)]
    pub acl_parsed: AclConfig,
    /// The file this was read from (for messages).
    #[serde(skip)]
    pub source: PathBuf,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    pub name: String,
    /// Number of workers; defaults to the length of `cores`, else 1.
    pub workers: Option<Spanned<usize>>,
    /// CPU cores to pin the workers to, one each.
    pub cores: Option<Spanned<Vec<usize>>>,
    /// Our outside (WAN) address: the tunnel's local endpoint.
    pub local_address: IpAddr,
    /// Unix socket for `espgate show`; default: [`default_socket_path`].
    pub control_socket: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    pub name: String,
    pub role: Role,
    pub backend: Backend,
    #[serde(default)]
    pub queue: u32,
    /// Next hop's MAC (af_xdp on the WAN side, when not learned by ARP).
    pub peer_mac: Option<MacAddr>,
    /// The protected networks behind a LAN interface.
    #[serde(default)]
    pub prefixes: Vec<IpNet>,
    /// UDP port of the `udp` backend (RFC 3948: 4500).
    pub udp_port: Option<u16>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IkeSection {
    /// IDi/IDr we send; default: our `local_address`.
    pub local_id: Option<String>,
    pub proposals: Spanned<Vec<IkeProposal>>,
    #[serde(default = "default_ike_lifetime")]
    pub lifetime_secs: u64,
    #[serde(default = "default_dpd")]
    pub dpd_secs: u64,
    /// Always use ESP-in-UDP on 4500, even without NAT.
    #[serde(default)]
    pub force_encap: bool,
    /// Offer one child SA per worker for each ACL entry (RFC 9611), so one
    /// tunnel's traffic is encrypted on every core; peers that do not answer
    /// the offer get one child SA per entry. Off by default (one child SA
    /// per entry, as on the ASA).
    #[serde(default)]
    pub sa_per_worker: bool,
}

fn default_ike_lifetime() -> u64 {
    86_400
}
fn default_dpd() -> u64 {
    30
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub name: String,
    pub address: IpAddr,
    pub psk: Option<Psk>,
    pub psk_file: Option<Spanned<PathBuf>>,
    /// The identity the peer must present; default: its address.
    pub id: Option<String>,
    /// The peer's key, resolved from `psk` or `psk_file` at load.
    #[serde(skip)]
    pub key: Psk,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EspSection {
    pub proposals: Spanned<Vec<EspProposal>>,
    #[serde(default = "default_pfs")]
    pub pfs: Pfs,
    #[serde(default = "default_esp_lifetime")]
    pub lifetime_secs: u64,
    #[serde(default = "default_esp_kb")]
    pub lifetime_kb: u64,
    #[serde(default)]
    pub replay_window: ReplayWindow,
    #[serde(default)]
    pub esn: bool,
}

fn default_pfs() -> Pfs {
    Pfs(Some(DhGroup::Modp2048))
}
fn default_esp_lifetime() -> u64 {
    28_800
}
fn default_esp_kb() -> u64 {
    4_608_000
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AclSection {
    /// The access-list name the lines use (`access-list NAME extended ...`).
    pub name: String,
    pub text: Option<Spanned<String>>,
    pub file: Option<Spanned<PathBuf>>,
    #[serde(default = "default_no_match")]
    pub no_match: NoMatch,
    /// `"per-entry"` (default) or `"combined"`.
    #[serde(default)]
    pub sa: SaPerAcl,
}

fn default_no_match() -> NoMatch {
    NoMatch::Bypass
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AcquireSection {
    #[serde(default = "default_acquire_mode")]
    pub mode: AcquireMode,
    #[serde(default = "default_max_packets")]
    pub max_packets: usize,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_acquire_mode() -> AcquireMode {
    AcquireMode::Queue
}
fn default_max_packets() -> usize {
    64
}
fn default_max_bytes() -> usize {
    256 * 1024
}
fn default_timeout_ms() -> u64 {
    3_000
}

impl Default for AcquireSection {
    fn default() -> Self {
        AcquireSection {
            mode: default_acquire_mode(),
            max_packets: default_max_packets(),
            max_bytes: default_max_bytes(),
            timeout_ms: default_timeout_ms(),
        }
    }
}

/// `/run/espgate/<name>.sock` for root, else `$TMPDIR/espgate-<name>.sock`
/// (the control server creates the directory when it binds).
pub fn default_socket_path(name: &str) -> PathBuf {
    if is_root() {
        Path::new("/run/espgate").join(format!("{name}.sock"))
    } else {
        std::env::temp_dir().join(format!("espgate-{name}.sock"))
    }
}

fn is_root() -> bool {
    // /proc/self/status "Uid:" first field is the real uid; avoid libc here.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

// -------------------------------------------------------------- loading

/// 1-based line and column of byte `offset` in `src`.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |i| offset - i - 1) + 1;
    (line, col)
}

/// The key written on the line where `span` starts (`replay_window` for
/// `replay_window = 10`), or the table header on that line.
fn field_at(src: &str, span: &Range<usize>) -> String {
    let start = span.start.min(src.len());
    let line_start = src[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = src[start..].find('\n').map_or(src.len(), |i| start + i);
    let line = src[line_start..line_end].trim();
    if let Some((k, _)) = line.split_once('=') {
        let k = k.trim();
        if !k.starts_with('[') {
            return k.trim_matches('"').to_string();
        }
    }
    line.trim_matches(|c| c == '[' || c == ']').to_string()
}

impl Config {
    /// Reads, parses and validates `path`. Relative `psk_file` and
    /// `acl.file` paths are taken relative to the config file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Config::from_str_at(&src, path)
    }

    /// Parses and validates `src` as if read from `path`.
    pub fn from_str_at(src: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |span: Range<usize>, field: String, expected: String| {
            let (line, col) = line_col(src, span.start);
            ConfigError::Invalid {
                file: path.to_path_buf(),
                line,
                col,
                field,
                expected,
            }
        };
        let mut cfg: Config = toml::from_str(src).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let field = field_at(src, &span);
            invalid(span, field, e.message().trim().to_string())
        })?;
        cfg.source = path.to_path_buf();
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.validate(src, base, &invalid)?;
        Ok(cfg)
    }

    fn validate(
        &mut self,
        src: &str,
        base: &Path,
        invalid: &dyn Fn(Range<usize>, String, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let g = &self.gateway;
        if g.name.is_empty() || g.name.contains(['/', '\0']) {
            let span = find_key(src, "name").unwrap_or(0..0);
            return Err(invalid(
                span,
                "gateway.name".into(),
                "a non-empty name without '/' expected".into(),
            ));
        }
        if let Some(w) = &g.workers {
            if !(1..=MAX_WORKERS).contains(w.get_ref()) {
                return Err(invalid(
                    w.span(),
                    "gateway.workers".into(),
                    format!("1..={MAX_WORKERS} workers expected, got {}", w.get_ref()),
                ));
            }
        }
        if let Some(c) = &g.cores {
            let n = c.get_ref().len();
            if n == 0 || n > MAX_WORKERS {
                return Err(invalid(
                    c.span(),
                    "gateway.cores".into(),
                    format!("a list of 1..={MAX_WORKERS} core numbers expected"),
                ));
            }
            if let Some(w) = &g.workers {
                if *w.get_ref() != n {
                    return Err(invalid(
                        w.span(),
                        "gateway.workers".into(),
                        format!(
                            "{} workers but {n} cores listed: one core per worker expected",
                            w.get_ref()
                        ),
                    ));
                }
            }
        }

        if self.interfaces.is_empty() {
            return Err(invalid(
                0..0,
                "interfaces".into(),
                "at least one [[interfaces]] with role = \"lan\" and one with role = \"wan\" expected".into(),
            ));
        }
        for role in [Role::Lan, Role::Wan] {
            if !self.interfaces.iter().any(|i| i.get_ref().role == role) {
                return Err(invalid(
                    self.interfaces[0].span(),
                    "interfaces.role".into(),
                    format!("an interface with role = \"{}\" expected", role_name(role)),
                ));
            }
        }
        for i in &self.interfaces {
            let it = i.get_ref();
            let bad = match (it.role, it.backend) {
                (Role::Lan, Backend::Udp) => {
                    Some("backend \"udp\" carries ESP-in-UDP: it belongs on a wan interface")
                }
                (Role::Wan, Backend::Tun) => {
                    Some("backend \"tun\" carries cleartext: it belongs on a lan interface")
                }
                _ => None,
            };
            if let Some(why) = bad {
                return Err(invalid(
                    i.span(),
                    format!("interfaces[{}].backend", it.name),
                    why.into(),
                ));
            }
            if it.role == Role::Lan && it.prefixes.is_empty() {
                return Err(invalid(
                    i.span(),
                    format!("interfaces[{}].prefixes", it.name),
                    "the protected networks behind a lan interface expected (e.g. [\"192.168.100.0/24\"])".into(),
                ));
            }
        }

        for (n, i) in self.interfaces.iter().enumerate() {
            let name = &i.get_ref().name;
            if self.interfaces[..n]
                .iter()
                .any(|o| &o.get_ref().name == name)
            {
                return Err(invalid(
                    i.span(),
                    format!("interfaces[{name}].name"),
                    "a name used by one interface only expected".into(),
                ));
            }
        }
        // A UDP socket cannot send raw ESP (IP protocol 50): with the udp
        // backend every SA must be ESP-in-UDP.
        if let Some(i) = self
            .interfaces
            .iter()
            .find(|i| i.get_ref().role == Role::Wan && i.get_ref().backend == Backend::Udp)
        {
            if !self.ike.force_encap {
                return Err(invalid(
                    find_key(src, "force_encap").unwrap_or(i.span()),
                    "ike.force_encap".into(),
                    format!(
                        "force_encap = true expected: wan interface {} uses the udp backend, which carries only ESP-in-UDP",
                        i.get_ref().name
                    ),
                ));
            }
        }

        if self.ike.proposals.get_ref().is_empty() {
            return Err(invalid(
                self.ike.proposals.span(),
                "ike.proposals".into(),
                format!("at least one proposal expected: {IKE_PROPOSAL_EXPECTED}"),
            ));
        }
        if self.esp.proposals.get_ref().is_empty() {
            return Err(invalid(
                self.esp.proposals.span(),
                "esp.proposals".into(),
                "at least one ESP proposal expected (e.g. [\"aes256-sha256\"])".into(),
            ));
        }
        if self.esp.lifetime_secs == 0 || self.esp.lifetime_kb == 0 || self.ike.lifetime_secs == 0 {
            let key = if self.ike.lifetime_secs == 0 {
                "lifetime_secs"
            } else if self.esp.lifetime_kb == 0 {
                "lifetime_kb"
            } else {
                "lifetime_secs"
            };
            return Err(invalid(
                find_key(src, key).unwrap_or(0..0),
                key.into(),
                "a lifetime greater than 0 expected".into(),
            ));
        }

        if self.peers.is_empty() {
            return Err(invalid(
                0..0,
                "peers".into(),
                "at least one [[peers]] entry expected".into(),
            ));
        }
        for (n, p) in self.peers.iter().enumerate() {
            let peer = p.get_ref();
            if self.peers[..n]
                .iter()
                .any(|o| o.get_ref().name == peer.name)
            {
                return Err(invalid(
                    p.span(),
                    format!("peers[{}].name", peer.name),
                    "a name used by one peer only expected".into(),
                ));
            }
            if peer.address == self.gateway.local_address {
                return Err(invalid(
                    p.span(),
                    format!("peers[{}].address", peer.name),
                    "the peer's address, not our own local_address, expected".into(),
                ));
            }
        }
        for p in &mut self.peers {
            let span = p.span();
            let peer = p.get_mut();
            peer.key = match (&peer.psk, &peer.psk_file) {
                (Some(k), None) => k.clone(),
                (None, Some(f)) => read_psk_file(&base.join(f.get_ref())).map_err(|why| {
                    invalid(f.span(), format!("peers[{}].psk_file", peer.name), why)
                })?,
                _ => {
                    return Err(invalid(
                        span,
                        format!("peers[{}]", peer.name),
                        "exactly one of psk or psk_file expected".into(),
                    ))
                }
            };
        }

        let acl_span = self.acl.span();
        let acl = self.acl.get_ref();
        // Where ACL line 1 is, to turn the parser's line into a file line.
        let (acl_file, first_line) = match (&acl.text, &acl.file) {
            (Some(t), None) => {
                self.acl_text = t.get_ref().clone();
                let start = t.span().start;
                let (line, _) = line_col(src, start);
                // TOML drops a newline right after an opening `"""`.
                let skip = usize::from(src[start..].starts_with("\"\"\"\n"));
                (self.source.clone(), line + skip)
            }
            (None, Some(f)) => {
                let p = base.join(f.get_ref());
                self.acl_text = std::fs::read_to_string(&p).map_err(|e| {
                    invalid(
                        f.span(),
                        "acl.file".into(),
                        format!("a readable ACL file expected; {}: {e}", p.display()),
                    )
                })?;
                (p, 1)
            }
            _ => {
                return Err(invalid(
                    acl_span,
                    "acl".into(),
                    "exactly one of text or file expected".into(),
                ))
            }
        };
        self.acl_parsed = acl::parse(&self.acl_text).map_err(|e| ConfigError::Invalid {
            file: acl_file.clone(),
            line: first_line + e.line() - 1,
            col: 1,
            field: "acl".into(),
            expected: e.to_string(),
        })?;
        let name = &acl.name;
        match self.acl_parsed.access_list(name) {
            Some(list) if list.entries().next().is_some() => {}
            _ => {
                let defined: Vec<&str> = self
                    .acl_parsed
                    .access_lists()
                    .iter()
                    .map(|l| l.name.as_str())
                    .collect();
                return Err(invalid(
                    find_key(src, "name").filter(|r| r.start > acl_span.start).unwrap_or(acl_span),
                    "acl.name".into(),
                    format!(
                        "an access list named {name:?} with at least one entry expected; the ACL text defines {}",
                        if defined.is_empty() { "none".to_string() } else { defined.join(", ") }
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The crypto ACL compiled into an SPD snapshot (unmatched traffic per
    /// `acl.no_match`).
    pub fn spd(&self) -> Result<Spd, espgate_dataplane::spd::SpdError> {
        let default = match self.acl.get_ref().no_match {
            NoMatch::Bypass => DefaultAction::Bypass,
            NoMatch::Drop => DefaultAction::Drop,
        };
        let spd = Spd::from_acl(&self.acl_parsed, &self.acl.get_ref().name, default)?;
        Ok(match self.acl.get_ref().sa {
            SaPerAcl::PerEntry => spd,
            SaPerAcl::Combined => spd.combine_protected(),
        })
    }

    pub fn workers(&self) -> usize {
        match (&self.gateway.workers, &self.gateway.cores) {
            (Some(w), _) => *w.get_ref(),
            (None, Some(c)) => c.get_ref().len(),
            (None, None) => 1,
        }
    }

    pub fn control_socket(&self) -> PathBuf {
        self.gateway
            .control_socket
            .clone()
            .unwrap_or_else(|| default_socket_path(&self.gateway.name))
    }

    /// ESP SA lifetime: hard at the configured kB/seconds, soft at 90%.
    pub fn esp_lifetime(&self) -> Lifetime {
        let hard_bytes = self.esp.lifetime_kb.saturating_mul(1024);
        let hard_secs = self.esp.lifetime_secs;
        Lifetime {
            soft_bytes: hard_bytes / 10 * 9,
            hard_bytes,
            soft_packets: u64::MAX,
            hard_packets: u64::MAX,
            soft_secs: hard_secs / 10 * 9,
            hard_secs,
        }
    }

    /// The networks behind our lan interfaces.
    pub fn lan_prefixes(&self) -> Vec<IpNet> {
        self.interfaces
            .iter()
            .filter(|i| i.get_ref().role == Role::Lan)
            .flat_map(|i| i.get_ref().prefixes.iter().copied())
            .collect()
    }

    /// What `espgate check` prints: the configuration as it will run.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let g = &self.gateway;
        let _ = writeln!(s, "gateway {} ({})", g.name, self.source.display());
        let cores = match &g.cores {
            Some(c) => format!("cores {:?}", c.get_ref()),
            None => "unpinned".into(),
        };
        let _ = writeln!(s, "  workers: {} ({cores})", self.workers());
        let _ = writeln!(s, "  local address: {}", g.local_address);
        let _ = writeln!(s, "  control socket: {}", self.control_socket().display());
        for i in &self.interfaces {
            let i = i.get_ref();
            let _ = write!(
                s,
                "  interface {}: {} via {}, queue {}",
                i.name,
                role_name(i.role),
                backend_name(i.backend),
                i.queue
            );
            if i.backend == Backend::Udp {
                let _ = write!(s, ", udp port {}", i.udp_port.unwrap_or(4500));
            }
            if let Some(m) = i.peer_mac {
                let _ = write!(s, ", peer mac {m}");
            }
            if !i.prefixes.is_empty() {
                let p: Vec<String> = i.prefixes.iter().map(|p| p.to_string()).collect();
                let _ = write!(s, ", protects {}", p.join(" "));
            }
            s.push('\n');
        }
        let ike: Vec<String> = self
            .ike
            .proposals
            .get_ref()
            .iter()
            .map(|p| p.to_string())
            .collect();
        let _ = writeln!(
            s,
            "  ike: id {}, proposals {}, lifetime {} s, dpd {} s{}",
            self.ike
                .local_id
                .clone()
                .unwrap_or_else(|| g.local_address.to_string()),
            ike.join(" "),
            self.ike.lifetime_secs,
            self.ike.dpd_secs,
            if self.ike.force_encap {
                ", force udp encap"
            } else {
                ""
            }
        );
        for p in &self.peers {
            let p = p.get_ref();
            let how = if p.psk_file.is_some() {
                "psk file"
            } else {
                "inline psk"
            };
            let _ = writeln!(
                s,
                "  peer {}: {} id {} ({how}, {} bytes)",
                p.name,
                p.address,
                p.id.clone().unwrap_or_else(|| p.address.to_string()),
                p.key.0.len()
            );
        }
        let esp: Vec<String> = self
            .esp
            .proposals
            .get_ref()
            .iter()
            .map(|p| format!("{p} ({})", p.0.transform_name()))
            .collect();
        let _ = writeln!(
            s,
            "  esp: {}; pfs {}; lifetime {} kB / {} s; replay window {}; esn {}",
            esp.join(", "),
            String::from(self.esp.pfs),
            self.esp.lifetime_kb,
            self.esp.lifetime_secs,
            self.esp.replay_window.0,
            if self.esp.esn { "on" } else { "off" }
        );
        let acl = self.acl.get_ref();
        let _ = writeln!(
            s,
            "  acl {}{}: no match: {}, child SAs: {}",
            acl.name,
            acl.file
                .as_ref()
                .map(|f| format!(" from {}", f.get_ref().display()))
                .unwrap_or_default(),
            match acl.no_match {
                NoMatch::Bypass => "bypass",
                NoMatch::Drop => "drop",
            },
            match acl.sa {
                SaPerAcl::PerEntry => "one per entry",
                SaPerAcl::Combined => "one combined for all permit entries",
            }
        );
        if let Some(list) = self.acl_parsed.access_list(&acl.name) {
            for line in &list.lines {
                let _ = writeln!(s, "    line {} {}", line.number, line.text);
                if line.expanded {
                    for e in &line.entries {
                        let _ = writeln!(s, "      rule {} {}", e.id.0, e.text);
                    }
                }
            }
            let _ = writeln!(
                s,
                "    {} rules (one child SA each)",
                list.entries().count()
            );
        }
        match self.spd() {
            Ok(spd) => {
                let _ = writeln!(
                    s,
                    "    compiled: {} rules, default {:?}",
                    spd.len(),
                    spd.default_action()
                );
            }
            Err(e) => {
                let _ = writeln!(s, "    compile error: {e}");
            }
        }
        let _ = writeln!(
            s,
            "  acquire: {}, up to {} packets / {} bytes, {} ms",
            match self.acquire.mode {
                AcquireMode::Queue => "queue",
                AcquireMode::Drop => "drop",
            },
            self.acquire.max_packets,
            self.acquire.max_bytes,
            self.acquire.timeout_ms
        );
        s
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Lan => "lan",
        Role::Wan => "wan",
    }
}

fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::AfXdp => "af_xdp",
        Backend::Udp => "udp",
        Backend::Tun => "tun",
        Backend::Mem => "mem",
    }
}

/// Span of the first `key =` in `src` (for errors about defaults-filled
/// fields that are not kept as `Spanned`).
fn find_key(src: &str, key: &str) -> Option<Range<usize>> {
    let mut off = 0;
    for line in src.split_inclusive('\n') {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                let start = off + (line.len() - t.len());
                return Some(start..start + key.len());
            }
        }
        off += line.len();
    }
    None
}

/// Reads a PSK file, refusing one that others can read: the key is the
/// whole trust of the tunnel.
fn read_psk_file(path: &Path) -> Result<Psk, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o007 != 0 {
        return Err(format!(
            "{} has mode {mode:04o}, readable by others: a file only its owner (and group) can read expected (chmod 600)",
            path.display()
        ));
    }
    let bytes =
        Zeroizing::new(std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?);
    // A trailing newline from `echo key > file` is not part of the key.
    let mut end = bytes.len();
    while end > 0 && matches!(bytes[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    if end == 0 {
        return Err(format!(
            "{} is empty: a pre-shared key expected",
            path.display()
        ));
    }
    Ok(Psk(Zeroizing::new(bytes[..end].to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use espgate_dataplane::api::RuleId;

    const GOOD: &str = r#"
[gateway]
name = "site1"
workers = 2
cores = [0, 1]
local_address = "10.255.1.2"
control_socket = "/tmp/x.sock"

[[interfaces]]
name = "inside"
role = "lan"
backend = "mem"
prefixes = ["192.168.100.0/24", "192.168.200.0/24"]

[[interfaces]]
name = "outside"
role = "wan"
backend = "udp"
peer_mac = "02:00:00:00:00:01"

[ike]
proposals = ["aes256-sha256-modp2048"]
force_encap = true

[[peers]]
name = "site2"
address = "10.255.2.2"
psk = "cisco123"

[esp]
proposals = ["aes256-sha256", "aes256gcm16"]
replay_window = 1024

[acl]
name = "s2svpn_to_site2"
text = """
access-list s2svpn_to_site2 extended permit ip 192.168.100.0 255.255.255.0 172.16.10.0 255.255.255.0
"""
"#;

    fn load(src: &str) -> Result<Config, ConfigError> {
        Config::from_str_at(src, Path::new("/etc/espgate/t.toml"))
    }

    fn err_of(src: &str) -> (usize, String, String) {
        match load(src) {
            Err(ConfigError::Invalid {
                line,
                field,
                expected,
                file,
                ..
            }) => {
                assert_eq!(file, Path::new("/etc/espgate/t.toml"));
                (line, field, expected)
            }
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    #[test]
    fn acl_sa_modes_and_per_worker_option() {
        let c = load(GOOD).unwrap();
        assert_eq!(c.acl.get_ref().sa, SaPerAcl::PerEntry);
        assert!(!c.ike.sa_per_worker, "per-worker SAs are opt-in");
        let two = GOOD.replace(
            "access-list s2svpn_to_site2 extended permit ip 192.168.100.0 255.255.255.0 172.16.10.0 255.255.255.0\n",
            "access-list s2svpn_to_site2 extended permit ip 192.168.100.0 255.255.255.0 172.16.10.0 255.255.255.0\n\
             access-list s2svpn_to_site2 extended permit ip 192.168.200.0 255.255.255.0 172.16.10.0 255.255.255.0\n",
        );
        let per_entry = load(&two).unwrap().spd().unwrap();
        assert_eq!(per_entry.sa_rule(RuleId(1)), RuleId(1));
        let src = two
            .replace(
                "name = \"s2svpn_to_site2\"\n",
                "name = \"s2svpn_to_site2\"\nsa = \"combined\"\n",
            )
            .replace(
                "force_encap = true\n",
                "force_encap = true\nsa_per_worker = true\n",
            );
        let c = load(&src).unwrap();
        assert!(c.ike.sa_per_worker);
        let spd = c.spd().unwrap();
        assert_eq!(
            spd.sa_rule(RuleId(1)),
            RuleId(0),
            "second entry rides the first's SA"
        );
        assert!(c.summary().contains("one combined for all permit entries"));
        let (_, field, expected) = err_of(&src.replace("sa = \"combined\"", "sa = \"merged\""));
        assert_eq!(field, "sa");
        assert!(expected.contains("per-entry"), "{expected}");
    }

    #[test]
    fn good_config_loads_with_defaults() {
        let c = load(GOOD).unwrap();
        assert_eq!(c.workers(), 2);
        assert_eq!(c.esp.replay_window.0, 1024);
        assert_eq!(c.esp.pfs, Pfs(Some(DhGroup::Modp2048)));
        assert_eq!(c.esp.proposals.get_ref()[1].0, Suite::Aes256Gcm16);
        assert_eq!(c.peers[0].get_ref().key.0.as_slice(), b"cisco123");
        assert_eq!(c.acquire.mode, AcquireMode::Queue);
        assert_eq!(c.acl.get_ref().no_match, NoMatch::Bypass);
        assert!(c.acl_text.contains("172.16.10.0"));
        assert_eq!(c.lan_prefixes().len(), 2);
        assert_eq!(c.esp_lifetime().hard_bytes, 4_608_000 * 1024);
        let s = c.summary();
        assert!(
            s.contains("esp: aes256-sha256 (esp-aes-256 esp-sha256-hmac)"),
            "{s}"
        );
        assert!(!s.contains("cisco123"), "summary must not print the key");
        assert!(
            !format!("{c:?}").contains("cisco123"),
            "Debug must not print the key"
        );
    }

    #[test]
    fn replay_window_out_of_range_names_line_and_field() {
        let src = GOOD.replace("replay_window = 1024", "replay_window = 10");
        let (line, field, expected) = err_of(&src);
        let want = src
            .lines()
            .position(|l| l.starts_with("replay_window"))
            .unwrap()
            + 1;
        assert_eq!(line, want);
        assert_eq!(field, "replay_window");
        assert!(expected.contains("64..=4096"), "{expected}");
    }

    #[test]
    fn bad_values_are_explained() {
        let (_, field, exp) = err_of(&GOOD.replace("\"aes256gcm16\"", "\"des-md5\""));
        assert_eq!(field, "proposals");
        assert!(exp.contains("aes256-sha256"), "{exp}");
        let (_, field, exp) = err_of(&GOOD.replace("aes256-sha256-modp2048", "aes256-md5-modp768"));
        assert_eq!(field, "proposals");
        assert!(exp.contains("IKE proposal"), "{exp}");
        let (_, field, _) = err_of(&GOOD.replace("backend = \"udp\"", "backend = \"dpdk\""));
        assert_eq!(field, "backend");
        let (_, field, _) = err_of(&GOOD.replace("02:00:00:00:00:01", "02:00"));
        assert_eq!(field, "peer_mac");
        let (line, field, exp) = err_of(&GOOD.replace("workers = 2", "workers = 3"));
        assert_eq!((line, field.as_str()), (4, "gateway.workers"));
        assert!(exp.contains("one core per worker"), "{exp}");
        let (_, field, exp) = err_of(&GOOD.replace("psk = \"cisco123\"", ""));
        assert_eq!(field, "peers[site2]");
        assert!(exp.contains("psk"), "{exp}");
        let (_, _, exp) = err_of(&GOOD.replace("name = \"site1\"\n", ""));
        assert!(exp.contains("name"), "{exp}");
        let (_, _, exp) = err_of(&GOOD.replace("local_address", "local_adress"));
        assert!(exp.contains("local_adress"), "{exp}");
        let (_, field, _) = err_of(&GOOD.replace("backend = \"mem\"", "backend = \"udp\""));
        assert_eq!(field, "interfaces[inside].backend");
        let (_, field, exp) = err_of(&GOOD.replace("force_encap = true", "force_encap = false"));
        assert_eq!(field, "ike.force_encap");
        assert!(exp.contains("udp backend"), "{exp}");
        let (_, field, _) = err_of(&GOOD.replace("10.255.2.2", "10.255.1.2"));
        assert_eq!(field, "peers[site2].address");
    }

    #[test]
    fn psk_file_must_not_be_world_readable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("site2.psk");
        std::fs::write(&key, "s3cret\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let src = GOOD.replace("psk = \"cisco123\"", "psk_file = \"site2.psk\"");
        let cfg_path = dir.path().join("gw.toml");
        match Config::from_str_at(&src, &cfg_path) {
            Err(ConfigError::Invalid {
                field, expected, ..
            }) => {
                assert_eq!(field, "peers[site2].psk_file");
                assert!(expected.contains("site2.psk"), "{expected}");
                assert!(expected.contains("0644"), "{expected}");
            }
            other => panic!("world-readable psk file accepted: {other:?}"),
        }
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = Config::from_str_at(&src, &cfg_path).unwrap();
        assert_eq!(c.peers[0].get_ref().key.0.as_slice(), b"s3cret");
    }

    #[test]
    fn acl_from_file_and_exactly_one_source() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("acl.txt"),
            "access-list s2svpn_to_site2 extended permit ip any any\n",
        )
        .unwrap();
        let src = GOOD.replace(
            "text = \"\"\"\naccess-list s2svpn_to_site2 extended permit ip 192.168.100.0 255.255.255.0 172.16.10.0 255.255.255.0\n\"\"\"",
            "file = \"acl.txt\"",
        );
        let c = Config::from_str_at(&src, &dir.path().join("gw.toml")).unwrap();
        assert!(c.acl_text.contains("permit ip any any"));
        let both = GOOD.replace(
            "name = \"s2svpn_to_site2\"",
            "name = \"s2svpn_to_site2\"\nfile = \"acl.txt\"",
        );
        let (_, field, exp) = err_of(&both);
        assert_eq!(field, "acl");
        assert!(exp.contains("exactly one"), "{exp}");
    }

    #[test]
    fn acl_errors_point_at_the_config_line() {
        let src = GOOD.replace(
            "172.16.10.0 255.255.255.0\n\"\"\"",
            "172.16.10.0 255.0.255.0\n\"\"\"",
        );
        let (line, field, exp) = err_of(&src);
        let want = src
            .lines()
            .position(|l| l.starts_with("access-list"))
            .unwrap()
            + 1;
        assert_eq!((line, field.as_str()), (want, "acl"));
        assert!(exp.contains("255.0.255.0"), "{exp}");
        let (_, field, exp) =
            err_of(&GOOD.replace("name = \"s2svpn_to_site2\"", "name = \"other\""));
        assert_eq!(field, "acl.name");
        assert!(exp.contains("s2svpn_to_site2"), "{exp}");
        let c = load(GOOD).unwrap();
        assert_eq!(c.spd().unwrap().len(), 1);
        assert!(c.summary().contains("rule 0") || c.summary().contains("1 rules"));
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("a\nbc\n", 3), (2, 2));
        assert_eq!(line_col("abc", 0), (1, 1));
    }
}
