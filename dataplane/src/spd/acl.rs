//! Cisco ASA / IOS extended access lists and network objects.
//!
//! Accepted (one command per line; blank lines and lines starting with `!`
//! or `:` are skipped):
//! ```text
//! object network NAME                 object-group network NAME
//!  host A | subnet A MASK | subnet P   network-object host A | A MASK | P
//!  description ...                     network-object object NAME
//!                                      group-object NAME | description ...
//! access-list NAME extended permit|deny PROTO SRC [PORTS] DST [PORTS] [log ...]
//! access-list NAME remark TEXT
//! access-list 101 permit|deny ...      (IOS numbered)
//! ip access-list extended NAME         (IOS named; then " [SEQ] permit|deny ..." lines)
//! ```
//! SRC/DST: `any` | `any4` | `any6` | `host A` | `A MASK` | `P` (a prefix
//! `2001:db8::/32`) | `object-group NAME` | `object NAME`. MASK is a netmask
//! (`255.255.255.0`) or an IOS wildcard (`0.0.0.255`), told apart by shape;
//! `0.0.0.0 255.255.255.255` is IOS "any", `A 0.0.0.0` with A ≠ 0 is IOS
//! "host A". PROTO: `ip` (any), `tcp`, `udp`, `icmp`, `icmp6`, `esp`, `ah`,
//! `gre`, `sctp` or a number 0..=255 (0 = any, like `ip`). PORTS (tcp, udp,
//! sctp only): `eq P` | `lt P` | `gt P` | `range P1 P2`, P a number or a
//! well-known name. Anything after `log` is accepted and ignored.
//!
//! **Expansion.** Each ACL line expands into one entry per (source address,
//! destination address) pair of its objects, and each entry is one rule of
//! the SPD with its own [`RuleId`] — and so its own child SA, as the seed's
//! ASA shows (one SA for YELLOW→PURPLE, another for BLUE→PURPLE, both from
//! "line 1"). Pairs of different address families are skipped (a line with
//! no pair left is an error); `any` stands for `any4` and `any6`. Members of
//! an object group are expanded last-configured first, which is the order
//! the seed's `show access-list` lists them in (SITE1 configured YELLOW then
//! BLUE shows BLUE first); since every entry of a line has the line's action,
//! this order only decides which of two overlapping entries' SA is used.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Serialize;

use super::Action;
use crate::api::{RuleId, Selector};

/// A malformed config line: always names the line (1-based) and the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("line {line}: unexpected {token:?}, expected {expected}")]
    Unexpected {
        line: usize,
        token: String,
        expected: &'static str,
    },
    #[error("line {line}: the line ends after {token:?}, expected {expected}")]
    MissingToken {
        line: usize,
        token: String,
        expected: &'static str,
    },
    #[error("line {line}: {token:?} is not an IP address")]
    BadAddress { line: usize, token: String },
    #[error("line {line}: {token:?} is neither a netmask nor a wildcard mask for {addr}")]
    BadMask {
        line: usize,
        token: String,
        addr: String,
    },
    #[error("line {line}: {token:?} is not a port number or known port name")]
    BadPort { line: usize, token: String },
    #[error("line {line}: port range {token:?} is empty")]
    EmptyPortRange { line: usize, token: String },
    #[error("line {line}: {token:?} is not a protocol name or number 0..=255")]
    BadProtocol { line: usize, token: String },
    #[error("line {line}: ports ({token:?}) need protocol tcp, udp or sctp")]
    PortsNeedTcpUdp { line: usize, token: String },
    #[error("line {line}: object {token:?} is not defined (or has no address)")]
    UnknownObject { line: usize, token: String },
    #[error("line {line}: object-group {token:?} is not defined (or is empty)")]
    UnknownObjectGroup { line: usize, token: String },
    #[error("line {line}: {token:?} is already defined as a different kind of object")]
    DuplicateName { line: usize, token: String },
    #[error("line {line}: source and destination never share an address family ({token:?})")]
    FamilyMismatch { line: usize, token: String },
    #[error("line {line}: {token:?} is not supported here")]
    Unsupported { line: usize, token: String },
    #[error(
        "line {line}: unknown command {token:?}, expected object, object-group or access-list"
    )]
    UnknownCommand { line: usize, token: String },
    #[error("line {line}: {token:?} must follow an object, object-group or ip access-list header")]
    OutsideObject { line: usize, token: String },
}

impl AclError {
    pub fn line(&self) -> usize {
        match self {
            AclError::Unexpected { line, .. }
            | AclError::MissingToken { line, .. }
            | AclError::BadAddress { line, .. }
            | AclError::BadMask { line, .. }
            | AclError::BadPort { line, .. }
            | AclError::EmptyPortRange { line, .. }
            | AclError::BadProtocol { line, .. }
            | AclError::PortsNeedTcpUdp { line, .. }
            | AclError::UnknownObject { line, .. }
            | AclError::UnknownObjectGroup { line, .. }
            | AclError::DuplicateName { line, .. }
            | AclError::FamilyMismatch { line, .. }
            | AclError::Unsupported { line, .. }
            | AclError::UnknownCommand { line, .. }
            | AclError::OutsideObject { line, .. } => *line,
        }
    }

    pub fn token(&self) -> &str {
        match self {
            AclError::Unexpected { token, .. }
            | AclError::MissingToken { token, .. }
            | AclError::BadAddress { token, .. }
            | AclError::BadMask { token, .. }
            | AclError::BadPort { token, .. }
            | AclError::EmptyPortRange { token, .. }
            | AclError::BadProtocol { token, .. }
            | AclError::PortsNeedTcpUdp { token, .. }
            | AclError::UnknownObject { token, .. }
            | AclError::UnknownObjectGroup { token, .. }
            | AclError::DuplicateName { token, .. }
            | AclError::FamilyMismatch { token, .. }
            | AclError::Unsupported { token, .. }
            | AclError::UnknownCommand { token, .. }
            | AclError::OutsideObject { token, .. } => token,
        }
    }
}

/// A parsed configuration: objects, object groups and access lists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AclConfig {
    objects: HashMap<String, Vec<IpNet>>,
    groups: HashMap<String, Vec<IpNet>>,
    lists: Vec<AccessList>,
}

/// One named access list, its lines in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccessList {
    pub name: String,
    pub lines: Vec<AclLine>,
}

/// One configured line (`line N` in `show access-list`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AclLine {
    /// 1-based position in its access list (remarks count, as on the ASA).
    pub number: u32,
    /// The line as configured after the list name, tokens single-spaced
    /// (`extended permit ip object-group SITE1 object-group SITE2 log default`).
    pub text: String,
    /// Empty for remarks.
    pub entries: Vec<AclEntry>,
    /// Whether `show access-list` lists the entries under the line (it does
    /// when objects were expanded or the line became several entries).
    pub expanded: bool,
}

/// One expanded entry: a rule of the SPD and a child SA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AclEntry {
    pub id: RuleId,
    pub action: Action,
    pub selector: Selector,
    /// The entry as `show access-list` prints it, after the list name and
    /// line number (`extended permit ip 192.168.200.0 255.255.255.0 ...`).
    pub text: String,
}

impl AccessList {
    /// Every entry in priority order; entry `i` has `RuleId(i)`.
    pub fn entries(&self) -> impl Iterator<Item = &AclEntry> {
        self.lines.iter().flat_map(|l| l.entries.iter())
    }
}

impl AclConfig {
    pub fn access_lists(&self) -> &[AccessList] {
        &self.lists
    }

    pub fn access_list(&self, name: &str) -> Option<&AccessList> {
        self.lists.iter().find(|l| l.name == name)
    }

    /// Addresses of `object network NAME`.
    pub fn object(&self, name: &str) -> Option<&[IpNet]> {
        self.objects.get(name).map(Vec::as_slice)
    }

    /// Addresses of `object-group network NAME`, in configured order.
    pub fn object_group(&self, name: &str) -> Option<&[IpNet]> {
        self.groups.get(name).map(Vec::as_slice)
    }
}

/// Parses a whole config text. Every line is either understood or an error.
pub fn parse(text: &str) -> Result<AclConfig, AclError> {
    let mut p = Parser {
        cfg: AclConfig::default(),
        ctx: Context::None,
    };
    for (i, raw) in text.lines().enumerate() {
        let toks: Vec<&str> = raw.split_whitespace().collect();
        if toks.is_empty() || toks[0].starts_with('!') || toks[0].starts_with(':') {
            continue;
        }
        let indented = raw.starts_with(char::is_whitespace);
        p.line(
            Toks {
                toks: &toks,
                pos: 0,
                line: i + 1,
            },
            indented,
        )?;
    }
    Ok(p.cfg)
}

enum Context {
    None,
    Object(String),
    Group(String),
    IosList(String),
}

struct Parser {
    cfg: AclConfig,
    ctx: Context,
}

struct Toks<'a> {
    toks: &'a [&'a str],
    pos: usize,
    line: usize,
}

impl<'a> Toks<'a> {
    fn peek(&self) -> Option<&'a str> {
        self.toks.get(self.pos).copied()
    }

    fn last(&self) -> String {
        self.pos
            .checked_sub(1)
            .and_then(|p| self.toks.get(p))
            .unwrap_or(&"")
            .to_string()
    }

    fn next(&mut self, expected: &'static str) -> Result<&'a str, AclError> {
        match self.toks.get(self.pos) {
            Some(t) => {
                self.pos += 1;
                Ok(t)
            }
            None => Err(AclError::MissingToken {
                line: self.line,
                token: self.last(),
                expected,
            }),
        }
    }

    fn unexpected(&self, token: &str, expected: &'static str) -> AclError {
        AclError::Unexpected {
            line: self.line,
            token: token.to_string(),
            expected,
        }
    }

    fn end(&self) -> Result<(), AclError> {
        match self.peek() {
            None => Ok(()),
            Some(t) => Err(self.unexpected(t, "end of line")),
        }
    }

    fn rest(&self, from: usize) -> String {
        self.toks.get(from..).unwrap_or(&[]).join(" ")
    }
}

/// A SRC or DST operand before expansion.
enum Operand {
    Any,
    Net(IpNet),
    Object(Vec<IpNet>),
}

impl Parser {
    fn line(&mut self, mut t: Toks<'_>, indented: bool) -> Result<(), AclError> {
        let cmd = t.next("a command")?;
        match cmd {
            "object" => {
                self.ctx = Context::None;
                let kind = t.next("network")?;
                if kind != "network" {
                    return Err(t.unexpected(kind, "network"));
                }
                let name = t.next("an object name")?;
                t.end()?;
                if self.cfg.groups.contains_key(name) {
                    return Err(AclError::DuplicateName {
                        line: t.line,
                        token: name.to_string(),
                    });
                }
                self.cfg.objects.entry(name.to_string()).or_default();
                self.ctx = Context::Object(name.to_string());
                Ok(())
            }
            "object-group" => {
                self.ctx = Context::None;
                let kind = t.next("network")?;
                if kind != "network" {
                    return Err(AclError::Unsupported {
                        line: t.line,
                        token: kind.to_string(),
                    });
                }
                let name = t.next("an object-group name")?;
                t.end()?;
                if self.cfg.objects.contains_key(name) {
                    return Err(AclError::DuplicateName {
                        line: t.line,
                        token: name.to_string(),
                    });
                }
                self.cfg.groups.entry(name.to_string()).or_default();
                self.ctx = Context::Group(name.to_string());
                Ok(())
            }
            "access-list" => {
                self.ctx = Context::None;
                let name = t.next("an access-list name")?;
                let start = t.pos;
                match t.peek() {
                    Some("remark") => {
                        self.push_remark(name, t.rest(start));
                        Ok(())
                    }
                    Some("extended") => {
                        t.pos += 1;
                        self.ace(name, t, start)
                    }
                    // IOS numbered lists leave out "extended".
                    Some("permit" | "deny") => self.ace(name, t, start),
                    Some(other) => Err(t.unexpected(other, "extended, remark, permit or deny")),
                    None => Err(AclError::MissingToken {
                        line: t.line,
                        token: name.to_string(),
                        expected: "extended or remark",
                    }),
                }
            }
            "ip" | "ipv6" if !indented => {
                self.ctx = Context::None;
                let kind = t.next("access-list")?;
                if kind != "access-list" {
                    return Err(t.unexpected(kind, "access-list"));
                }
                let kind = t.next("extended")?;
                if kind != "extended" && cmd == "ip" {
                    return Err(AclError::Unsupported {
                        line: t.line,
                        token: kind.to_string(),
                    });
                }
                let name = if cmd == "ipv6" {
                    kind
                } else {
                    t.next("an access-list name")?
                };
                t.end()?;
                self.list_mut(name);
                self.ctx = Context::IosList(name.to_string());
                Ok(())
            }
            _ => self.subcommand(cmd, t),
        }
    }

    fn subcommand(&mut self, cmd: &str, mut t: Toks<'_>) -> Result<(), AclError> {
        let outside = || AclError::OutsideObject {
            line: t.line,
            token: cmd.to_string(),
        };
        match (&self.ctx, cmd) {
            (
                Context::None,
                "description" | "host" | "subnet" | "network-object" | "group-object",
            ) => Err(outside()),
            (_, "description") => Ok(()),
            (Context::Object(name), "host" | "subnet") => {
                let name = name.clone();
                let net = if cmd == "host" {
                    let a = t.next("an IP address")?;
                    host(addr(a, t.line)?)
                } else {
                    self.net_operand(&mut t)?
                };
                t.end()?;
                // ASA keeps one address per object: a new one replaces it.
                self.cfg.objects.insert(name, vec![net]);
                Ok(())
            }
            (Context::Group(name), "network-object" | "group-object") => {
                let name = name.clone();
                let nets = if cmd == "group-object" {
                    let g = t.next("an object-group name")?;
                    self.group(g, t.line)?.to_vec()
                } else {
                    match t.peek() {
                        Some("host") => {
                            t.pos += 1;
                            let a = t.next("an IP address")?;
                            vec![host(addr(a, t.line)?)]
                        }
                        Some("object") => {
                            t.pos += 1;
                            let o = t.next("an object name")?;
                            self.object(o, t.line)?.to_vec()
                        }
                        _ => vec![self.net_operand(&mut t)?],
                    }
                };
                t.end()?;
                self.cfg.groups.entry(name).or_default().extend(nets);
                Ok(())
            }
            (Context::IosList(name), "permit" | "deny" | "remark") => {
                let name = name.clone();
                t.pos -= 1;
                self.ios_ace(&name, t)
            }
            (Context::IosList(name), seq) if seq.parse::<u32>().is_ok() => {
                let name = name.clone();
                if t.peek() == Some("remark") {
                    self.push_remark(&name, t.rest(t.pos));
                    return Ok(());
                }
                self.ios_ace(&name, t)
            }
            (Context::None, _) => Err(AclError::UnknownCommand {
                line: t.line,
                token: cmd.to_string(),
            }),
            _ => Err(t.unexpected(cmd, "a command valid inside this object or list")),
        }
    }

    fn ios_ace(&mut self, name: &str, t: Toks<'_>) -> Result<(), AclError> {
        if t.peek() == Some("remark") {
            self.push_remark(name, t.rest(t.pos));
            return Ok(());
        }
        let start = t.pos;
        self.ace(name, t, start)
    }

    fn list_mut(&mut self, name: &str) -> &mut AccessList {
        let i = match self.cfg.lists.iter().position(|l| l.name == name) {
            Some(i) => i,
            None => {
                self.cfg.lists.push(AccessList {
                    name: name.to_string(),
                    lines: Vec::new(),
                });
                self.cfg.lists.len() - 1
            }
        };
        &mut self.cfg.lists[i]
    }

    fn push_remark(&mut self, name: &str, text: String) {
        let list = self.list_mut(name);
        let number = list.lines.len() as u32 + 1;
        list.lines.push(AclLine {
            number,
            text,
            entries: Vec::new(),
            expanded: false,
        });
    }

    fn object(&self, name: &str, line: usize) -> Result<&[IpNet], AclError> {
        match self.cfg.objects.get(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(AclError::UnknownObject {
                line,
                token: name.to_string(),
            }),
        }
    }

    fn group(&self, name: &str, line: usize) -> Result<&[IpNet], AclError> {
        match self.cfg.groups.get(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(AclError::UnknownObjectGroup {
                line,
                token: name.to_string(),
            }),
        }
    }

    /// `A MASK` or a prefix `P`.
    fn net_operand(&self, t: &mut Toks<'_>) -> Result<IpNet, AclError> {
        let a = t.next("an address or prefix")?;
        if a.contains('/') {
            return a
                .parse::<IpNet>()
                .map(|n| n.trunc())
                .map_err(|_| AclError::BadAddress {
                    line: t.line,
                    token: a.to_string(),
                });
        }
        let ip = addr(a, t.line)?;
        let IpAddr::V4(v4) = ip else {
            return Err(AclError::BadAddress {
                line: t.line,
                token: a.to_string(),
            });
        };
        let m = t.next("a netmask or wildcard mask")?;
        let mask: Ipv4Addr = m.parse().map_err(|_| AclError::BadMask {
            line: t.line,
            token: m.to_string(),
            addr: a.to_string(),
        })?;
        mask_net(v4, mask).ok_or_else(|| AclError::BadMask {
            line: t.line,
            token: m.to_string(),
            addr: a.to_string(),
        })
    }

    fn operand(&self, t: &mut Toks<'_>) -> Result<Operand, AclError> {
        let line = t.line;
        match t.peek() {
            Some("any") => {
                t.pos += 1;
                Ok(Operand::Any)
            }
            Some("any4") => {
                t.pos += 1;
                Ok(Operand::Net(IpNet::V4(Ipv4Net::default())))
            }
            Some("any6") => {
                t.pos += 1;
                Ok(Operand::Net(IpNet::V6(Ipv6Net::default())))
            }
            Some("host") => {
                t.pos += 1;
                let a = t.next("an IP address")?;
                Ok(Operand::Net(host(addr(a, line)?)))
            }
            Some("object-group") => {
                t.pos += 1;
                let g = t.next("an object-group name")?;
                Ok(Operand::Object(self.group(g, line)?.to_vec()))
            }
            Some("object") => {
                t.pos += 1;
                let o = t.next("an object name")?;
                Ok(Operand::Object(self.object(o, line)?.to_vec()))
            }
            Some(tok @ ("interface" | "object-group-user" | "user" | "security-group")) => {
                Err(AclError::Unsupported {
                    line,
                    token: tok.to_string(),
                })
            }
            Some(tok) if tok.parse::<IpAddr>().is_ok() || tok.contains('/') => {
                Ok(Operand::Net(self.net_operand(t)?))
            }
            Some(tok) => Err(t.unexpected(
                tok,
                "any, any4, any6, host, object, object-group, an address and mask, or a prefix",
            )),
            None => Err(AclError::MissingToken {
                line,
                token: t.last(),
                expected: "an address (any, host A, A MASK, object-group NAME, ...)",
            }),
        }
    }

    fn ports(&self, t: &mut Toks<'_>, proto: Option<u8>) -> Result<RangeInclusive<u16>, AclError> {
        let Some(op @ ("eq" | "lt" | "gt" | "range" | "neq")) = t.peek() else {
            return Ok(0..=u16::MAX);
        };
        if !matches!(proto, Some(6 | 17 | 132)) {
            return Err(AclError::PortsNeedTcpUdp {
                line: t.line,
                token: op.to_string(),
            });
        }
        t.pos += 1;
        let line = t.line;
        let p1 = port(t.next("a port")?, line)?;
        let empty = |tok: String| AclError::EmptyPortRange { line, token: tok };
        match op {
            "eq" => Ok(p1..=p1),
            "lt" => p1
                .checked_sub(1)
                .map(|h| 0..=h)
                .ok_or_else(|| empty(format!("lt {p1}"))),
            "gt" => p1
                .checked_add(1)
                .map(|l| l..=u16::MAX)
                .ok_or_else(|| empty(format!("gt {p1}"))),
            "range" => {
                let p2 = port(t.next("the last port of the range")?, line)?;
                if p1 > p2 {
                    return Err(empty(format!("range {p1} {p2}")));
                }
                Ok(p1..=p2)
            }
            _ => Err(AclError::Unsupported {
                line,
                token: op.to_string(),
            }),
        }
    }

    /// Parses `permit|deny PROTO SRC [PORTS] DST [PORTS] [log ...]` at
    /// `t.pos`; `start` is where the list's display text begins.
    fn ace(&mut self, name: &str, mut t: Toks<'_>, start: usize) -> Result<(), AclError> {
        let line = t.line;
        let act = t.next("permit or deny")?;
        let action = match act {
            "permit" => Action::Protect,
            "deny" => Action::Bypass,
            other => return Err(t.unexpected(other, "permit or deny")),
        };
        let proto_tok = t.next("a protocol")?;
        let proto = protocol(proto_tok, line)?;
        let src = self.operand(&mut t)?;
        let src_ports = self.ports(&mut t, proto)?;
        let dst = self.operand(&mut t)?;
        let dst_ports = self.ports(&mut t, proto)?;
        let mut log = None;
        match t.peek() {
            None => {}
            Some("log") => log = Some(t.rest(t.pos)),
            Some(tok) => {
                return Err(t.unexpected(
                    tok,
                    "log or end of line (ports are allowed only right after an address)",
                ))
            }
        }
        let has_objects = matches!(src, Operand::Object(_)) || matches!(dst, Operand::Object(_));
        let srcs = expand(src);
        let dsts = expand(dst);
        let text = t.rest(start);
        let list = self.list_mut(name);
        let mut next_id = list.lines.iter().map(|l| l.entries.len()).sum::<usize>() as u32;
        let number = list.lines.len() as u32 + 1;
        let mut entries = Vec::new();
        for s in &srcs {
            for d in &dsts {
                if s.addr().is_ipv4() != d.addr().is_ipv4() {
                    continue;
                }
                let selector = Selector {
                    src: *s,
                    dst: *d,
                    proto,
                    src_ports: src_ports.clone(),
                    dst_ports: dst_ports.clone(),
                };
                let text = entry_text(act, proto_tok, &selector, log.as_deref());
                entries.push(AclEntry {
                    id: RuleId(next_id),
                    action,
                    selector,
                    text,
                });
                next_id += 1;
            }
        }
        if entries.is_empty() {
            return Err(AclError::FamilyMismatch { line, token: text });
        }
        let expanded = has_objects || entries.len() > 1;
        list.lines.push(AclLine {
            number,
            text,
            entries,
            expanded,
        });
        Ok(())
    }
}

/// Object members, last configured first (see the module doc).
fn expand(op: Operand) -> Vec<IpNet> {
    match op {
        Operand::Any => vec![IpNet::V4(Ipv4Net::default()), IpNet::V6(Ipv6Net::default())],
        Operand::Net(n) => vec![n],
        Operand::Object(mut v) => {
            v.reverse();
            v
        }
    }
}

fn addr(tok: &str, line: usize) -> Result<IpAddr, AclError> {
    tok.parse().map_err(|_| AclError::BadAddress {
        line,
        token: tok.to_string(),
    })
}

fn host(a: IpAddr) -> IpNet {
    IpNet::from(a)
}

/// Reads MASK as a netmask or, failing that, an IOS wildcard mask.
fn mask_net(a: Ipv4Addr, mask: Ipv4Addr) -> Option<IpNet> {
    let (a, m) = (u32::from(a), u32::from(mask));
    let net = |len: u32| {
        Ipv4Net::new(Ipv4Addr::from(a), len as u8)
            .ok()
            .map(IpNet::V4)
    };
    // IOS "0.0.0.0 255.255.255.255" = any (as a netmask it would be host 0.0.0.0).
    if a == 0 && m == u32::MAX {
        return net(0);
    }
    let is_netmask = m.leading_ones() + m.trailing_zeros() == 32;
    if is_netmask && a & !m == 0 {
        return net(m.leading_ones());
    }
    let is_wildcard = m.leading_zeros() + m.trailing_ones() == 32;
    if is_wildcard && a & m == 0 {
        return net(m.leading_zeros());
    }
    None
}

fn protocol(tok: &str, line: usize) -> Result<Option<u8>, AclError> {
    let p = match tok {
        "ip" | "ipv6" => return Ok(None),
        "icmp" => 1,
        "tcp" => 6,
        "udp" => 17,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "icmp6" => 58,
        "sctp" => 132,
        n => n.parse::<u8>().map_err(|_| AclError::BadProtocol {
            line,
            token: tok.to_string(),
        })?,
    };
    Ok((p != 0).then_some(p))
}

/// Port names Cisco prints instead of numbers (a common subset).
const PORT_NAMES: &[(&str, u16)] = &[
    ("bgp", 179),
    ("domain", 53),
    ("ftp", 21),
    ("ftp-data", 20),
    ("http", 80),
    ("https", 443),
    ("isakmp", 500),
    ("ldap", 389),
    ("ntp", 123),
    ("smtp", 25),
    ("snmp", 161),
    ("ssh", 22),
    ("syslog", 514),
    ("telnet", 23),
    ("tftp", 69),
    ("www", 80),
];

fn port(tok: &str, line: usize) -> Result<u16, AclError> {
    tok.parse::<u16>()
        .ok()
        .or_else(|| PORT_NAMES.iter().find(|(n, _)| *n == tok).map(|(_, p)| *p))
        .ok_or_else(|| AclError::BadPort {
            line,
            token: tok.to_string(),
        })
}

/// An address as `show access-list` prints it.
fn net_text(n: &IpNet) -> String {
    match n {
        IpNet::V4(n) if n.prefix_len() == 0 => "any4".to_string(),
        IpNet::V6(n) if n.prefix_len() == 0 => "any6".to_string(),
        n if n.prefix_len() == n.max_prefix_len() => format!("host {}", n.addr()),
        IpNet::V4(n) => format!("{} {}", n.network(), n.netmask()),
        IpNet::V6(n) => n.to_string(),
    }
}

fn ports_text(r: &RangeInclusive<u16>) -> String {
    match (*r.start(), *r.end()) {
        (0, u16::MAX) => String::new(),
        (a, b) if a == b => format!(" eq {a}"),
        (0, b) => format!(" lt {}", b as u32 + 1),
        (a, u16::MAX) => format!(" gt {}", a - 1),
        (a, b) => format!(" range {a} {b}"),
    }
}

fn entry_text(act: &str, proto: &str, s: &Selector, log: Option<&str>) -> String {
    let mut t = format!(
        "extended {act} {proto} {}{} {}{}",
        net_text(&s.src),
        ports_text(&s.src_ports),
        net_text(&s.dst),
        ports_text(&s.dst_ports)
    );
    if let Some(log) = log {
        t.push(' ');
        t.push_str(log);
    }
    t
}
