//! Security policy database: the crypto ACL compiled to a classifier.
//!
//! * [`acl`] parses Cisco ASA/IOS access lists and object groups and expands
//!   each ACL line into entries, one per child SA.
//! * [`Spd`] is one immutable compiled snapshot of the expanded entries:
//!   first match wins; `permit` = [`Action::Protect`], `deny` =
//!   [`Action::Bypass`], no match = the [`DefaultAction`] (drop by default, as
//!   a gateway with no route for the traffic would).
//! * [`SpdHandle`] publishes snapshots RCU style: the control path stores a
//!   new `Arc<Spd>`, each worker loads the current one once per burst.
//! * [`HitCounters`] are owned by one worker each (`hitcnt=` of
//!   `show access-list`) and summed on read; no counter is shared.

pub mod acl;
mod classify;
pub mod show;

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use ipnet::IpNet;
use serde::Serialize;

use crate::api::{FlowKey, RuleId, Selector};
pub use classify::TreeStats;
use classify::{Boxed, Tree, CHUNK};

/// What a matching rule does with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Action {
    /// `permit`: send it through the rule's child SA.
    Protect,
    /// `deny`: send it in the clear.
    Bypass,
}

/// What happens to a packet that matches no rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum DefaultAction {
    #[default]
    Drop,
    Bypass,
}

/// One expanded ACL entry in priority order; `id` is its index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub id: RuleId,
    pub action: Action,
    pub selector: Selector,
}

/// The classifier's answer for one flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Encrypt with the outbound SA of this rule (Acquire if none yet).
    Protect(RuleId),
    /// Forward in the clear: a `deny` rule matched (`Some`), or no rule
    /// matched and the default action is bypass (`None`).
    Bypass(Option<RuleId>),
    /// No rule matched and the default action is drop.
    #[default]
    Drop,
}

impl Verdict {
    pub fn rule(self) -> Option<RuleId> {
        match self {
            Verdict::Protect(r) | Verdict::Bypass(Some(r)) => Some(r),
            _ => None,
        }
    }
}

/// Set-up errors of a snapshot.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpdError {
    #[error("too many rules: {0} (the limit is {max})", max = u32::MAX - 1)]
    TooManyRules(usize),
    /// More than ~1,000 rules overlap in one spot of the classifier.
    #[error("the rules overlap too much to compile ({family})")]
    TooComplex { family: &'static str },
    #[error("access list {0:?} is not defined")]
    UnknownAccessList(String),
}

static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

/// An immutable, compiled SPD snapshot.
pub struct Spd {
    rules: Vec<Rule>,
    /// `verdicts[i]` for rule `i`, and the default one last: the hot path
    /// reads this small table instead of the rules.
    verdicts: Vec<Verdict>,
    default: DefaultAction,
    v4: Tree<u32>,
    v6: Tree<u128>,
    stats: [TreeStats; 2],
    version: u64,
    /// Combined-SA mode: `sa_of[i]` = the rule whose child SA protects
    /// entry `i` (the first `permit`). Empty: every entry its own SA.
    sa_of: Vec<RuleId>,
}

impl fmt::Debug for Spd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spd")
            .field("rules", &self.rules.len())
            .field("default", &self.default)
            .field("version", &self.version)
            .field("v4", &self.stats[0])
            .field("v6", &self.stats[1])
            .finish()
    }
}

impl Default for Spd {
    /// No rules: everything gets the default action (drop).
    fn default() -> Self {
        Spd::empty(DefaultAction::Drop)
    }
}

fn default_verdict(d: DefaultAction) -> Verdict {
    match d {
        DefaultAction::Drop => Verdict::Drop,
        DefaultAction::Bypass => Verdict::Bypass(None),
    }
}

fn ports(r: &std::ops::RangeInclusive<u16>) -> (u32, u32) {
    (*r.start() as u32, *r.end() as u32)
}

fn proto_range(p: Option<u8>) -> (u32, u32) {
    match p {
        Some(p) => (p as u32, p as u32),
        None => (0, 255),
    }
}

impl Spd {
    pub fn empty(default: DefaultAction) -> Spd {
        Spd {
            rules: Vec::new(),
            verdicts: vec![default_verdict(default)],
            default,
            v4: Tree::empty(),
            v6: Tree::empty(),
            stats: [TreeStats::default(); 2],
            version: NEXT_VERSION.fetch_add(1, Ordering::Relaxed),
            sa_of: Vec::new(),
        }
    }

    /// Compiles entries given in priority order; entry `i` gets `RuleId(i)`.
    /// An entry whose src and dst are of different address families can
    /// never match and is kept only so the ids stay in step.
    pub fn new(
        entries: impl IntoIterator<Item = (Action, Selector)>,
        default: DefaultAction,
    ) -> Result<Spd, SpdError> {
        let mut rules = Vec::new();
        let mut b4 = Vec::new();
        let mut b6 = Vec::new();
        for (i, (action, selector)) in entries.into_iter().enumerate() {
            let index = u32::try_from(i)
                .ok()
                .filter(|&i| i < u32::MAX)
                .ok_or(SpdError::TooManyRules(i))?;
            let (pl, ph) = proto_range(selector.proto);
            let (sl, sh) = ports(&selector.src_ports);
            let (dl, dh) = ports(&selector.dst_ports);
            match (selector.src, selector.dst) {
                (IpNet::V4(s), IpNet::V4(d)) => b4.push(Boxed {
                    lo: [u32::from(s.network()), u32::from(d.network()), pl, sl, dl],
                    hi: [
                        u32::from(s.broadcast()),
                        u32::from(d.broadcast()),
                        ph,
                        sh,
                        dh,
                    ],
                    index,
                }),
                (IpNet::V6(s), IpNet::V6(d)) => b6.push(Boxed {
                    lo: [
                        u128::from(s.network()),
                        u128::from(d.network()),
                        pl as u128,
                        sl as u128,
                        dl as u128,
                    ],
                    hi: [
                        u128::from(s.broadcast()),
                        u128::from(d.broadcast()),
                        ph as u128,
                        sh as u128,
                        dh as u128,
                    ],
                    index,
                }),
                _ => {}
            }
            rules.push(Rule {
                id: RuleId(index),
                action,
                selector,
            });
        }
        let (v4, s4) = Tree::build(b4).ok_or(SpdError::TooComplex { family: "IPv4" })?;
        let (v6, s6) = Tree::build(b6).ok_or(SpdError::TooComplex { family: "IPv6" })?;
        let mut verdicts: Vec<Verdict> = rules
            .iter()
            .map(|r| match r.action {
                Action::Protect => Verdict::Protect(r.id),
                Action::Bypass => Verdict::Bypass(Some(r.id)),
            })
            .collect();
        verdicts.push(default_verdict(default));
        Ok(Spd {
            rules,
            verdicts,
            default,
            v4,
            v6,
            stats: [s4, s6],
            version: NEXT_VERSION.fetch_add(1, Ordering::Relaxed),
            sa_of: Vec::new(),
        })
    }

    /// One combined child SA for all `permit` entries (`[acl] sa =
    /// "combined"`, strongSwan's several subnets in one CHILD_SA): each
    /// protected entry is carried by the SA of the first one. Hit counts
    /// stay per entry.
    pub fn combine_protected(mut self) -> Spd {
        let first = self
            .rules
            .iter()
            .find(|r| r.action == Action::Protect)
            .map(|r| r.id);
        self.sa_of = self
            .rules
            .iter()
            .map(|r| match (r.action, first) {
                (Action::Protect, Some(f)) => f,
                _ => r.id,
            })
            .collect();
        self
    }

    /// The rule whose child SA protects `entry` (itself unless combined).
    #[inline]
    pub fn sa_rule(&self, entry: RuleId) -> RuleId {
        self.sa_of.get(entry.0 as usize).copied().unwrap_or(entry)
    }

    /// Compiles the access list `name` of a parsed config.
    pub fn from_acl(
        config: &acl::AclConfig,
        name: &str,
        default: DefaultAction,
    ) -> Result<Spd, SpdError> {
        let list = config
            .access_list(name)
            .ok_or_else(|| SpdError::UnknownAccessList(name.to_string()))?;
        Spd::new(
            list.entries().map(|e| (e.action, e.selector.clone())),
            default,
        )
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rule(&self, id: RuleId) -> Option<&Rule> {
        self.rules.get(id.0 as usize)
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn default_action(&self) -> DefaultAction {
        self.default
    }

    /// Unique per compiled snapshot; hit counters reset when it changes.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Tree sizes (IPv4, IPv6).
    pub fn stats(&self) -> [TreeStats; 2] {
        self.stats
    }

    #[inline]
    fn verdict(&self, index: u32) -> Verdict {
        let i = (index as usize).min(self.rules.len());
        self.verdicts.get(i).copied().unwrap_or_default()
    }

    /// Classifies one flow.
    pub fn classify(&self, flow: &FlowKey) -> Verdict {
        let mut out = [Verdict::Drop];
        self.classify_burst(std::slice::from_ref(flow), &mut out);
        out[0]
    }

    /// Classifies `flows` into `out` (up to the shorter length). Allocates
    /// nothing; flows whose src and dst families differ match no rule.
    pub fn classify_burst(&self, flows: &[FlowKey], out: &mut [Verdict]) {
        let n = flows.len().min(out.len());
        for (flows, out) in flows[..n].chunks(CHUNK).zip(out[..n].chunks_mut(CHUNK)) {
            self.classify_chunk(flows, out);
        }
    }

    fn classify_chunk(&self, flows: &[FlowKey], out: &mut [Verdict]) {
        let mut k4 = [[0u32; 5]; CHUNK];
        let mut i4 = [0u8; CHUNK];
        let mut n4 = 0;
        let mut others = false;
        for (i, f) in flows.iter().enumerate() {
            if let (IpAddr::V4(a), IpAddr::V4(b)) = (f.src, f.dst) {
                let (p, s, d) = (f.proto, f.src_port, f.dst_port);
                k4[n4] = [a.into(), b.into(), p as u32, s as u32, d as u32];
                i4[n4] = i as u8;
                n4 += 1;
            } else {
                others = true;
            }
        }
        let mut r = [u32::MAX; CHUNK];
        self.v4.classify_chunk(&k4, n4, &mut r);
        if !others {
            for (o, &h) in out.iter_mut().zip(&r[..n4]) {
                *o = self.verdict(h);
            }
            return;
        }
        let mut hit = [u32::MAX; CHUNK];
        for j in 0..n4 {
            hit[i4[j] as usize] = r[j];
        }
        self.classify_v6(flows, &mut hit);
        for (o, &h) in out.iter_mut().zip(&hit) {
            *o = self.verdict(h);
        }
    }

    /// The IPv6 flows of a chunk; out of line so the IPv4 path stays small.
    #[inline(never)]
    fn classify_v6(&self, flows: &[FlowKey], hit: &mut [u32; CHUNK]) {
        let mut k6 = [[0u128; 5]; CHUNK];
        let mut i6 = [0u8; CHUNK];
        let mut n6 = 0;
        for (i, f) in flows.iter().enumerate() {
            if let (IpAddr::V6(a), IpAddr::V6(b)) = (f.src, f.dst) {
                let (p, s, d) = (f.proto, f.src_port, f.dst_port);
                k6[n6] = [a.into(), b.into(), p as u128, s as u128, d as u128];
                i6[n6] = i as u8;
                n6 += 1;
            }
        }
        let mut r = [u32::MAX; CHUNK];
        self.v6.classify_chunk(&k6, n6, &mut r);
        for j in 0..n6 {
            hit[i6[j] as usize] = r[j];
        }
    }

    /// The plain first-match linear scan the classifier must agree with
    /// (tests and benches use it as the reference).
    pub fn classify_linear(&self, flow: &FlowKey) -> Verdict {
        let i = self
            .rules
            .iter()
            .position(|r| r.selector.matches(flow))
            .map_or(u32::MAX, |i| i as u32);
        self.verdict(i)
    }
}

/// Inbound policy check (RFC 4301 §5.2): a packet decrypted with an SA must
/// match the SA's inbound selector (the outbound one reversed), otherwise it
/// is dropped and counted (`DropReason::PolicyMismatch`).
#[inline]
pub fn inbound_allowed(selector: &Selector, flow: &FlowKey) -> bool {
    selector.matches(flow)
}

/// The current SPD snapshot, replaced RCU style without stopping workers.
pub struct SpdHandle {
    current: ArcSwap<Spd>,
}

impl SpdHandle {
    pub fn new(spd: Arc<Spd>) -> SpdHandle {
        SpdHandle {
            current: ArcSwap::new(spd),
        }
    }

    /// Publishes `spd`; workers see it from their next burst on.
    pub fn store(&self, spd: Arc<Spd>) {
        self.current.store(spd);
    }

    /// Cheap (no refcount traffic in the common case): once per burst.
    pub fn load(&self) -> Guard<Arc<Spd>> {
        self.current.load()
    }

    pub fn load_full(&self) -> Arc<Spd> {
        self.current.load_full()
    }
}

impl fmt::Debug for SpdHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SpdHandle").field(&*self.load()).finish()
    }
}

/// Per-worker hit counts, indexed by `RuleId`. Only its worker writes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HitCounters {
    version: u64,
    hits: Vec<u64>,
}

impl HitCounters {
    pub fn new(spd: &Spd) -> HitCounters {
        HitCounters {
            version: spd.version(),
            hits: vec![0; spd.len()],
        }
    }

    /// Called between bursts after loading a snapshot: a new snapshot
    /// renumbers rules, so counts start again at zero (this allocates only
    /// when the snapshot changed).
    pub fn follow(&mut self, spd: &Spd) {
        if self.version != spd.version() {
            *self = HitCounters::new(spd);
        }
    }

    /// Counts the verdicts of one burst.
    #[inline]
    pub fn record(&mut self, verdicts: &[Verdict]) {
        for v in verdicts {
            if let Some(c) = v.rule().and_then(|r| self.hits.get_mut(r.0 as usize)) {
                *c += 1;
            }
        }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn get(&self, rule: RuleId) -> u64 {
        self.hits.get(rule.0 as usize).copied().unwrap_or(0)
    }

    /// Sums the counters of several workers for snapshot `spd`; counters of
    /// an older snapshot are left out.
    pub fn sum<'a>(spd: &Spd, workers: impl IntoIterator<Item = &'a HitCounters>) -> Vec<u64> {
        let mut total = vec![0; spd.len()];
        for w in workers {
            if w.version == spd.version() {
                for (t, h) in total.iter_mut().zip(&w.hits) {
                    *t += h;
                }
            }
        }
        total
    }
}
