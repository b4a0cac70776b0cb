//! Child SA negotiation: ESP proposals ↔ [`Suite`], proposal selection as
//! responder, traffic-selector narrowing (RFC 7296 §2.9) and the record of
//! one established child SA.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::time::Instant;

use espgate_dataplane::api::{RuleId, Selector, Spi, Suite};
use ipnet::IpNet;

use super::payload::{
    AddrRange, Proposal, ProtocolId, TrafficSelector, Transform, TransformId, TransformType,
};
use crate::config::RuleEntry;

/// ENCR transform and key bits of a suite (RFC 7296 §3.3.2, RFC 4106 §8.4).
fn encr_of(s: Suite) -> (TransformId, u16) {
    match s {
        Suite::Aes256CbcHmacSha256 | Suite::Aes256CbcHmacSha1 => (TransformId::ENCR_AES_CBC, 256),
        Suite::Aes128CbcHmacSha256 => (TransformId::ENCR_AES_CBC, 128),
        Suite::Aes128Gcm16 => (TransformId::ENCR_AES_GCM_16, 128),
        Suite::Aes256Gcm16 => (TransformId::ENCR_AES_GCM_16, 256),
    }
}

/// INTEG transform of a suite; `None` for AEAD.
fn integ_of(s: Suite) -> Option<TransformId> {
    match s {
        Suite::Aes256CbcHmacSha256 | Suite::Aes128CbcHmacSha256 => {
            Some(TransformId::AUTH_HMAC_SHA2_256_128)
        }
        Suite::Aes256CbcHmacSha1 => Some(TransformId::AUTH_HMAC_SHA1_96),
        Suite::Aes128Gcm16 | Suite::Aes256Gcm16 => None,
    }
}

/// The transforms that describe `suite` in an ESP proposal.
pub fn suite_transforms(suite: Suite, dh: Option<u16>, esn: bool) -> Vec<Transform> {
    let (encr, bits) = encr_of(suite);
    let mut t = vec![Transform::new(TransformType::ENCR, encr).with_key_len(bits)];
    if let Some(integ) = integ_of(suite) {
        t.push(Transform::new(TransformType::INTEG, integ));
    }
    if let Some(g) = dh {
        t.push(Transform::new(TransformType::DH, TransformId(g)));
    }
    let e = if esn {
        TransformId::ESN_YES
    } else {
        TransformId::ESN_NO
    };
    t.push(Transform::new(TransformType::ESN, e));
    t
}

/// Our ESP proposals, numbered from 1, all carrying our inbound SPI.
pub fn esp_proposals(suites: &[Suite], spi_in: Spi, dh: Option<u16>, esn: bool) -> Vec<Proposal> {
    suites
        .iter()
        .enumerate()
        .map(|(i, s)| Proposal {
            num: (i + 1).min(255) as u8,
            protocol: ProtocolId::ESP,
            spi: spi_in.0.to_be_bytes().to_vec(),
            transforms: suite_transforms(*s, dh, esn),
        })
        .collect()
}

/// What the responder picked from the initiator's proposals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChosenEsp {
    pub num: u8,
    pub suite: Suite,
    pub esn: bool,
    /// PFS group, when the exchange does DH (CREATE_CHILD_SA only).
    pub dh: Option<u16>,
    /// The proposer's inbound SPI = our outbound SPI.
    pub peer_spi: u32,
}

impl ChosenEsp {
    /// The single proposal of the response, with our inbound SPI.
    pub fn response(&self, spi_in: Spi) -> Proposal {
        Proposal {
            num: self.num,
            protocol: ProtocolId::ESP,
            spi: spi_in.0.to_be_bytes().to_vec(),
            transforms: suite_transforms(self.suite, self.dh, self.esn),
        }
    }
}

fn has(p: &Proposal, tt: TransformType, id: TransformId, bits: Option<u16>) -> bool {
    p.transforms_of(tt).any(|t| t.id == id && t.key_len == bits)
}

/// DH policy for one proposal. `pfs_exchange` is false in IKE_AUTH, where
/// DH transforms of a child proposal are ignored (RFC 7296 §1.2).
fn pick_dh(p: &Proposal, pfs_exchange: bool, want: Option<u16>) -> Result<Option<u16>, ()> {
    if !pfs_exchange {
        return Ok(None);
    }
    let offered: Vec<u16> = p.transforms_of(TransformType::DH).map(|t| t.id.0).collect();
    let none_ok = offered.is_empty() || offered.contains(&0);
    match want {
        Some(g) if offered.contains(&g) => Ok(Some(g)),
        Some(_) => Err(()),
        // We do not require PFS but support group 14: accept it if the
        // initiator insists.
        None if none_ok => Ok(None),
        None if offered.contains(&super::dh::GROUP_MODP2048) => Ok(Some(super::dh::GROUP_MODP2048)),
        None => Err(()),
    }
}

fn pick_esn(p: &Proposal, want: bool) -> Option<bool> {
    let yes = has(p, TransformType::ESN, TransformId::ESN_YES, None);
    let no = has(p, TransformType::ESN, TransformId::ESN_NO, None)
        || p.transforms_of(TransformType::ESN).next().is_none();
    match (want, yes, no) {
        (true, true, _) => Some(true),
        (_, _, true) => Some(false),
        (false, true, false) => Some(true),
        _ => None,
    }
}

/// The first of the initiator's ESP proposals (in its order) that matches one
/// of our suites, or `None` → NO_PROPOSAL_CHOSEN.
pub fn select_esp(
    offered: &[Proposal],
    ours: &[Suite],
    pfs_exchange: bool,
    pfs: Option<u16>,
    esn: bool,
) -> Option<ChosenEsp> {
    for p in offered {
        if p.protocol != ProtocolId::ESP {
            continue;
        }
        let Some(peer_spi) = p.spi_u32() else {
            continue;
        };
        let Ok(dh) = pick_dh(p, pfs_exchange, pfs) else {
            continue;
        };
        let Some(esn) = pick_esn(p, esn) else {
            continue;
        };
        for &suite in ours {
            let (encr, bits) = encr_of(suite);
            if !has(p, TransformType::ENCR, encr, Some(bits)) {
                continue;
            }
            let integ_ok = match integ_of(suite) {
                Some(i) => has(p, TransformType::INTEG, i, None),
                None => p
                    .transforms_of(TransformType::INTEG)
                    .all(|t| t.id == TransformId::AUTH_NONE),
            };
            if integ_ok {
                return Some(ChosenEsp {
                    num: p.num,
                    suite,
                    esn,
                    dh,
                    peer_spi,
                });
            }
        }
    }
    None
}

/// The initiator's reading of the responder's single proposal: which of our
/// suites it is, and the responder's SPI. `None` if it is not one we offered.
pub fn accept_esp_response(
    resp: &[Proposal],
    offered: &[Suite],
    pfs: Option<u16>,
    esn: bool,
) -> Option<ChosenEsp> {
    let p = match resp {
        [p] => p,
        _ => return None,
    };
    let chosen = select_esp(std::slice::from_ref(p), offered, pfs.is_some(), pfs, esn)?;
    // The responder must not drop PFS we asked for.
    if pfs.is_some() && chosen.dh != pfs {
        return None;
    }
    Some(chosen)
}

/// IKE SA proposal: ENCR_AES_CBC-256, PRF_HMAC_SHA2_256,
/// AUTH_HMAC_SHA2_256_128, MODP-2048 (the only suite implemented).
pub fn ike_proposal(spi: &[u8]) -> Proposal {
    Proposal {
        num: 1,
        protocol: ProtocolId::IKE,
        spi: spi.to_vec(),
        transforms: vec![
            Transform::new(TransformType::ENCR, TransformId::ENCR_AES_CBC).with_key_len(256),
            Transform::new(TransformType::PRF, TransformId::PRF_HMAC_SHA2_256),
            Transform::new(TransformType::INTEG, TransformId::AUTH_HMAC_SHA2_256_128),
            Transform::new(TransformType::DH, TransformId::MODP_2048),
        ],
    }
}

/// Whether an IKE proposal contains our suite; returns the proposal number.
pub fn select_ike(offered: &[Proposal]) -> Option<u8> {
    offered
        .iter()
        .find(|p| {
            p.protocol == ProtocolId::IKE
                && has(p, TransformType::ENCR, TransformId::ENCR_AES_CBC, Some(256))
                && has(p, TransformType::PRF, TransformId::PRF_HMAC_SHA2_256, None)
                && has(
                    p,
                    TransformType::INTEG,
                    TransformId::AUTH_HMAC_SHA2_256_128,
                    None,
                )
                && has(p, TransformType::DH, TransformId::MODP_2048, None)
        })
        .map(|p| p.num)
}

fn range_of(net: IpNet) -> (IpAddr, IpAddr) {
    (net.network(), net.broadcast())
}

fn as_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

fn ts_range(ts: &TrafficSelector) -> (IpAddr, IpAddr) {
    match ts.addrs {
        AddrRange::V4(s, e) => (s.into(), e.into()),
        AddrRange::V6(s, e) => (s.into(), e.into()),
    }
}

fn intersect_ports(
    a: &RangeInclusive<u16>,
    b: &RangeInclusive<u16>,
) -> Option<RangeInclusive<u16>> {
    let s = *a.start().max(b.start());
    let e = *a.end().min(b.end());
    (s <= e).then_some(s..=e)
}

fn intersect_proto(a: u8, b: Option<u8>) -> Option<Option<u8>> {
    match (a, b) {
        (0, b) => Some(b),
        (a, None) => Some(Some(a)),
        (a, Some(b)) if a == b => Some(Some(a)),
        _ => None,
    }
}

/// ts ∩ (net, ports, proto) as a prefix; `None` when empty or not a prefix.
fn intersect(
    ts: &TrafficSelector,
    net: IpNet,
    ports: &RangeInclusive<u16>,
) -> Option<(IpNet, RangeInclusive<u16>)> {
    let (ts_s, ts_e) = ts_range(ts);
    let (n_s, n_e) = range_of(net);
    if ts_s.is_ipv4() != n_s.is_ipv4() {
        return None;
    }
    let s = as_u128(ts_s).max(as_u128(n_s));
    let e = as_u128(ts_e).min(as_u128(n_e));
    if s > e {
        return None;
    }
    // Intersection with a prefix: either the whole prefix (TS covers it) or
    // the TS range itself (inside it), which must then be a prefix.
    let result = if s == as_u128(n_s) && e == as_u128(n_e) {
        net
    } else {
        let probe = TrafficSelector {
            addrs: ts.addrs,
            ..ts.clone()
        };
        let n = probe.to_net().ok()?;
        if as_u128(n.network()) != s || as_u128(n.broadcast()) != e {
            return None;
        }
        n
    };
    let ports = intersect_ports(&(ts.start_port..=ts.end_port), ports)?;
    Some((result, ports))
}

/// Whether the TS range lies inside `net`.
fn ts_within(ts: &TrafficSelector, net: IpNet) -> bool {
    let (s, e) = ts_range(ts);
    net.contains(&s) && net.contains(&e)
}

/// Responder-side narrowing (RFC 7296 §2.9): the largest
/// `local → remote` selector allowed both by the initiator's TSi (its side =
/// our remote) / TSr (our local) and by one of our rules for `peer`.
/// `None` → TS_UNACCEPTABLE.
pub fn narrow(
    tsi: &[TrafficSelector],
    tsr: &[TrafficSelector],
    rules: &[RuleEntry],
    peer: IpAddr,
) -> Option<(RuleId, Selector)> {
    // With several TS, the first pair may describe the packet that
    // triggered the exchange (RFC 7296 §2.9): then prefer rules covering it.
    let covers = |r: &RuleEntry| match (tsi, tsr) {
        ([ti, _, ..], [tr, _, ..]) => {
            ts_within(tr, r.selector.src) && ts_within(ti, r.selector.dst)
        }
        _ => true,
    };
    let candidates: Vec<&RuleEntry> = rules.iter().filter(|r| r.peer == peer).collect();
    let preferred: Vec<&RuleEntry> = candidates.iter().copied().filter(|r| covers(r)).collect();
    let pool = if preferred.is_empty() {
        candidates
    } else {
        preferred
    };
    let mut best: Option<(u32, RuleId, Selector)> = None;
    for r in pool {
        for want in r.selectors() {
            for ti in tsi {
                for tr in tsr {
                    let Some(sel) = intersect_pair(ti, tr, want) else {
                        continue;
                    };
                    // Prefer the widest result, so a first "triggering
                    // packet" TS (RFC 7296 §2.9) does not narrow the SA to
                    // one host.
                    let width = (sel.src.max_prefix_len() - sel.src.prefix_len()) as u32
                        + (sel.dst.max_prefix_len() - sel.dst.prefix_len()) as u32;
                    if best.as_ref().is_none_or(|(w, _, _)| width > *w) {
                        best = Some((width, r.rule, sel));
                    }
                }
            }
        }
    }
    best.map(|(_, rule, sel)| (rule, sel))
}

/// `local → remote` selector in both (TSi = remote side, TSr = local side)
/// and `want`; `None` when they do not overlap as prefixes.
fn intersect_pair(ti: &TrafficSelector, tr: &TrafficSelector, want: &Selector) -> Option<Selector> {
    let (local, lp) = intersect(tr, want.src, &want.src_ports)?;
    let (remote, rp) = intersect(ti, want.dst, &want.dst_ports)?;
    let p1 = intersect_proto(tr.ip_proto, want.proto)?;
    let proto = intersect_proto(ti.ip_proto, p1)?;
    Some(Selector {
        src: local,
        dst: remote,
        proto,
        src_ports: lp,
        dst_ports: rp,
    })
}

/// Responder side of a combined child SA (several TS on a side): every
/// pair of TSi × TSr narrowed against every selector of one combined rule
/// for `peer` (RFC 7296 §2.9: the SA carries the cross product of its TS
/// sets; we install only the pairs our ACL allows). The rule with the most
/// pairs wins. `None` when no combined rule matches.
pub fn narrow_combined(
    tsi: &[TrafficSelector],
    tsr: &[TrafficSelector],
    rules: &[RuleEntry],
    peer: IpAddr,
) -> Option<(RuleId, Vec<Selector>)> {
    let mut best: Option<(RuleId, Vec<Selector>)> = None;
    for r in rules
        .iter()
        .filter(|r| r.peer == peer && !r.more.is_empty())
    {
        let mut pairs: Vec<Selector> = Vec::new();
        for want in r.selectors() {
            for ti in tsi {
                for tr in tsr {
                    if let Some(sel) = intersect_pair(ti, tr, want) {
                        if !pairs.contains(&sel) {
                            pairs.push(sel);
                        }
                    }
                }
            }
        }
        if !pairs.is_empty() && best.as_ref().is_none_or(|b| pairs.len() > b.1.len()) {
            best = Some((r.rule, pairs));
        }
    }
    best
}

/// Initiator check of a combined child SA's response: the pairs of the
/// responder's TSi × TSr that lie within one of the selectors we proposed
/// (`local → remote`); empty when none does.
pub fn accept_narrowed_all(
    selector: &Selector,
    more: &[Selector],
    tsi: &[TrafficSelector],
    tsr: &[TrafficSelector],
) -> Vec<Selector> {
    let mut out: Vec<Selector> = Vec::new();
    for ti in tsi {
        for tr in tsr {
            let Some(sel) = std::iter::once(selector).chain(more).find_map(|p| {
                accept_narrowed(p, std::slice::from_ref(ti), std::slice::from_ref(tr))
            }) else {
                continue;
            };
            if !out.contains(&sel) {
                out.push(sel);
            }
        }
    }
    out
}

/// The TS lists that cover `selector` and `more` (`local → remote`): each
/// side's distinct prefixes, TSi = local side when we initiate.
pub fn ts_lists(
    selector: &Selector,
    more: &[Selector],
) -> (Vec<TrafficSelector>, Vec<TrafficSelector>) {
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    for s in std::iter::once(selector).chain(more) {
        let (l, r) = super::payload::ts_from_selector(s);
        if !local.contains(&l) {
            local.push(l);
        }
        if !remote.contains(&r) {
            remote.push(r);
        }
    }
    (local, remote)
}

/// Initiator check that the responder's (possibly narrowed) TS lie within
/// what we proposed; returns the `local → remote` selector to install.
pub fn accept_narrowed(
    proposed: &Selector,
    tsi: &[TrafficSelector],
    tsr: &[TrafficSelector],
) -> Option<Selector> {
    let (ti, tr) = (tsi.first()?, tsr.first()?);
    let sel = super::payload::selector_from_ts(ti, tr).ok()?;
    let within = proposed.src.contains(&sel.src)
        && proposed.dst.contains(&sel.dst)
        && proposed.src_ports.start() <= sel.src_ports.start()
        && proposed.src_ports.end() >= sel.src_ports.end()
        && proposed.dst_ports.start() <= sel.dst_ports.start()
        && proposed.dst_ports.end() >= sel.dst_ports.end()
        && (proposed.proto.is_none() || proposed.proto == sel.proto);
    within.then_some(sel)
}

/// One established child SA (a pair of ESP SAs) as the machine tracks it.
#[derive(Clone, Debug)]
pub struct ChildSa {
    pub child_id: u32,
    pub rule: RuleId,
    /// local → remote, as installed (after narrowing).
    pub selector: Selector,
    pub suite: Suite,
    pub esn: bool,
    pub pfs_group: Option<u16>,
    pub spi_in: Spi,
    pub spi_out: Spi,
    pub created_at: Instant,
    /// Set when a rekey replaced this child; it is deleted shortly.
    pub rekeyed: bool,
    /// RFC 9611: the worker whose traffic this child carries, when the peer
    /// took per-worker SAs.
    pub resource: Option<u8>,
    /// Combined child SA: the further selectors it carries.
    pub more: Vec<Selector>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(src: &str, dst: &str) -> Selector {
        Selector::between(src.parse().unwrap(), dst.parse().unwrap())
    }

    fn rule(n: u32, src: &str, dst: &str) -> RuleEntry {
        RuleEntry {
            rule: RuleId(n),
            selector: sel(src, dst),
            more: Vec::new(),
            peer: "10.255.1.2".parse().unwrap(),
        }
    }

    fn ts(net: &str) -> TrafficSelector {
        TrafficSelector::from_net(net.parse().unwrap(), 0, 0..=65535)
    }

    #[test]
    fn select_first_acceptable_proposal_in_initiator_order() {
        let offered = esp_proposals(
            &[
                Suite::Aes128Gcm16,
                Suite::Aes256CbcHmacSha256,
                Suite::Aes256Gcm16,
            ],
            Spi(0x1234_5678),
            Some(14),
            false,
        );
        let c = select_esp(
            &offered,
            &[Suite::Aes256Gcm16, Suite::Aes256CbcHmacSha256],
            true,
            Some(14),
            false,
        )
        .unwrap();
        assert_eq!(
            (c.num, c.suite, c.dh, c.peer_spi),
            (2, Suite::Aes256CbcHmacSha256, Some(14), 0x1234_5678)
        );
        assert!(select_esp(&offered, &[Suite::Aes256CbcHmacSha1], true, Some(14), false).is_none());
        // PFS required but not offered.
        let nopfs = esp_proposals(&[Suite::Aes256CbcHmacSha256], Spi(0x1000), None, false);
        assert!(select_esp(&nopfs, &[Suite::Aes256CbcHmacSha256], true, Some(14), false).is_none());
        // DH is ignored in IKE_AUTH.
        assert!(select_esp(
            &nopfs,
            &[Suite::Aes256CbcHmacSha256],
            false,
            Some(14),
            false
        )
        .is_some());
        let back = accept_esp_response(
            &[c.response(Spi(0x9999))],
            &[Suite::Aes256CbcHmacSha256],
            Some(14),
            false,
        )
        .unwrap();
        assert_eq!(
            (back.suite, back.peer_spi),
            (Suite::Aes256CbcHmacSha256, 0x9999)
        );
    }

    #[test]
    fn narrowing_picks_configured_subset() {
        // Responder (Site2) allows only PURPLE → YELLOW, initiator asks for
        // 192.168.0.0/16 → 172.16.0.0/12 (its side first).
        let rules = [rule(7, "172.16.10.0/24", "192.168.100.0/24")];
        let (r, s) = narrow(
            &[ts("192.168.0.0/16")],
            &[ts("172.16.0.0/12")],
            &rules,
            "10.255.1.2".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(r, RuleId(7));
        assert_eq!(s, sel("172.16.10.0/24", "192.168.100.0/24"));
        // Narrower request stays as asked.
        let (_, s) = narrow(
            &[ts("192.168.100.0/25")],
            &[ts("172.16.10.0/24")],
            &rules,
            "10.255.1.2".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(s.dst, "192.168.100.0/25".parse::<IpNet>().unwrap());
        // Disjoint → TS_UNACCEPTABLE; unknown peer → nothing.
        assert!(narrow(
            &[ts("192.168.200.0/24")],
            &[ts("172.16.10.0/24")],
            &rules,
            "10.255.1.2".parse().unwrap()
        )
        .is_none());
        assert!(narrow(
            &[ts("192.168.100.0/24")],
            &[ts("172.16.10.0/24")],
            &rules,
            "10.9.9.9".parse().unwrap()
        )
        .is_none());
    }

    #[test]
    fn narrowing_prefers_subnet_over_triggering_host() {
        let rules = [rule(1, "172.16.10.0/24", "192.168.100.0/24")];
        let (_, s) = narrow(
            &[ts("192.168.100.10/32"), ts("192.168.100.0/24")],
            &[ts("172.16.10.11/32"), ts("172.16.10.0/24")],
            &rules,
            "10.255.1.2".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(s, sel("172.16.10.0/24", "192.168.100.0/24"));
    }

    #[test]
    fn narrowing_follows_triggering_packet_ts() {
        let rules = [
            rule(1, "172.16.10.0/24", "192.168.100.0/24"),
            rule(2, "172.16.0.0/16", "192.168.200.0/24"),
        ];
        // Without a packet TS the widest rule wins; with one, the rule covering the packet.
        let (r, _) = narrow(
            &[ts("192.168.0.0/16")],
            &[ts("172.16.0.0/12")],
            &rules,
            "10.255.1.2".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(r, RuleId(2));
        let (r, s) = narrow(
            &[ts("192.168.100.10/32"), ts("192.168.0.0/16")],
            &[ts("172.16.10.11/32"), ts("172.16.0.0/12")],
            &rules,
            "10.255.1.2".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(
            (r, s),
            (RuleId(1), sel("172.16.10.0/24", "192.168.100.0/24"))
        );
    }

    #[test]
    fn initiator_accepts_only_subsets() {
        let proposed = sel("192.168.0.0/16", "172.16.0.0/12");
        let s = accept_narrowed(
            &proposed,
            &[ts("192.168.100.0/24")],
            &[ts("172.16.10.0/24")],
        )
        .unwrap();
        assert_eq!(s, sel("192.168.100.0/24", "172.16.10.0/24"));
        assert!(accept_narrowed(&proposed, &[ts("10.0.0.0/8")], &[ts("172.16.10.0/24")]).is_none());
    }

    #[test]
    fn ike_proposal_selects_itself() {
        assert_eq!(select_ike(&[ike_proposal(&[])]), Some(1));
        let mut p = ike_proposal(&[]);
        p.transforms.retain(|t| t.ttype != TransformType::DH);
        assert_eq!(select_ike(&[p]), None);
    }
}
