//! The compiled classifier agrees with a plain first-match linear scan.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use espgate_dataplane::api::{FlowKey, Selector};
use espgate_dataplane::spd::{Action, DefaultAction, Spd, Verdict};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

/// Addresses from a small space so that rules overlap and nest.
fn v4() -> impl Strategy<Value = u32> {
    (0u32..4, any::<u32>()).prop_map(|(hi, lo)| (10 << 24) | (hi << 22) | (lo & 0x3f_ffff))
}

fn v6() -> impl Strategy<Value = u128> {
    (0u128..4, any::<u128>())
        .prop_map(|(hi, lo)| (0x2001_0db8u128 << 96) | (hi << 90) | (lo & ((1u128 << 90) - 1)))
}

fn net4() -> impl Strategy<Value = IpNet> {
    (v4(), prop_oneof![Just(0u8), 1u8..=32, 20u8..=32])
        .prop_map(|(a, l)| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), l).unwrap().trunc()))
}

fn net6() -> impl Strategy<Value = IpNet> {
    (v6(), prop_oneof![Just(0u8), 1u8..=128, 90u8..=128])
        .prop_map(|(a, l)| IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), l).unwrap().trunc()))
}

fn port_range() -> impl Strategy<Value = std::ops::RangeInclusive<u16>> {
    prop_oneof![
        3 => Just(0..=u16::MAX),
        2 => (0u16..2000).prop_map(|p| p..=p),
        2 => (0u16..2000, 0u16..500).prop_map(|(a, w)| a..=a.saturating_add(w)),
        1 => (0u16..2000).prop_map(|p| 0..=p),
        1 => (0u16..2000).prop_map(|p| p..=u16::MAX),
    ]
}

fn rule() -> impl Strategy<Value = (Action, Selector)> {
    let nets = prop_oneof![(net4(), net4()), (net6(), net6())];
    (
        nets,
        prop_oneof![
            Just(None),
            Just(Some(6u8)),
            Just(Some(17)),
            Just(Some(1)),
            any::<u8>().prop_map(Some)
        ],
        port_range(),
        port_range(),
        any::<bool>(),
    )
        .prop_map(|((src, dst), proto, sp, dp, permit)| {
            (
                if permit {
                    Action::Protect
                } else {
                    Action::Bypass
                },
                Selector {
                    src,
                    dst,
                    proto,
                    src_ports: sp,
                    dst_ports: dp,
                },
            )
        })
}

/// A flow at a corner of a rule (or just outside it), or random.
fn probe(rules: &[(Action, Selector)], pick: usize, corner: u32, noise: u64) -> FlowKey {
    let Some((_, s)) = rules.get(pick % rules.len().max(1)) else {
        return FlowKey {
            src: IpAddr::V4(Ipv4Addr::from(noise as u32)),
            dst: IpAddr::V4(Ipv4Addr::from((noise >> 32) as u32)),
            proto: 6,
            src_port: 1,
            dst_port: 2,
        };
    };
    // Each of the 5 fields independently: low edge, high edge, one below, one above, inside.
    let sel = |i: u32| (corner / 5u32.pow(i)) % 5;
    fn ip(n: &IpNet, k: u32, noise: u64) -> IpAddr {
        match n {
            IpNet::V4(n) => {
                let (lo, hi) = (u32::from(n.network()), u32::from(n.broadcast()));
                let v = match k {
                    0 => lo,
                    1 => hi,
                    2 => lo.wrapping_sub(1),
                    3 => hi.wrapping_add(1),
                    _ => lo + (noise as u32) % (hi - lo).saturating_add(1).max(1),
                };
                IpAddr::V4(v.into())
            }
            IpNet::V6(n) => {
                let (lo, hi) = (u128::from(n.network()), u128::from(n.broadcast()));
                let v = match k {
                    0 => lo,
                    1 => hi,
                    2 => lo.wrapping_sub(1),
                    3 => hi.wrapping_add(1),
                    _ => lo + (noise as u128) % (hi - lo).saturating_add(1).max(1),
                };
                IpAddr::V6(v.into())
            }
        }
    }
    fn port(r: &std::ops::RangeInclusive<u16>, k: u32, noise: u64) -> u16 {
        let (lo, hi) = (*r.start(), *r.end());
        match k {
            0 => lo,
            1 => hi,
            2 => lo.wrapping_sub(1),
            3 => hi.wrapping_add(1),
            _ => lo + (noise as u16) % (hi - lo).saturating_add(1).max(1),
        }
    }
    let proto = match (s.proto, sel(2)) {
        (Some(p), 0 | 1) => p,
        (Some(p), 2) => p.wrapping_sub(1),
        (Some(p), 3) => p.wrapping_add(1),
        _ => [6, 17, 1, 50][(noise % 4) as usize],
    };
    FlowKey {
        src: ip(&s.src, sel(0), noise),
        dst: ip(&s.dst, sel(1), noise >> 7),
        proto,
        src_port: port(&s.src_ports, sel(3), noise >> 13),
        dst_port: port(&s.dst_ports, sel(4), noise >> 29),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn classifier_matches_linear_scan(
        rules in prop::collection::vec(rule(), 0..120),
        probes in prop::collection::vec((any::<usize>(), 0u32..3125, any::<u64>()), 1..200),
        bypass in any::<bool>(),
    ) {
        let default = if bypass { DefaultAction::Bypass } else { DefaultAction::Drop };
        let spd = Spd::new(rules.clone(), default).unwrap();
        let flows: Vec<FlowKey> = probes.iter().map(|&(p, c, n)| probe(&rules, p, c, n)).collect();
        let mut out = vec![Verdict::Drop; flows.len()];
        spd.classify_burst(&flows, &mut out);
        for (f, v) in flows.iter().zip(&out) {
            prop_assert_eq!(*v, spd.classify_linear(f), "flow {:?}", f);
        }
    }
}

#[test]
fn large_rule_sets_match_linear_scan() {
    // Deterministic larger run: many overlapping rules, bursts of odd sizes.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let rules = prop::collection::vec(rule(), 2000)
        .new_tree(&mut runner)
        .unwrap()
        .current();
    let spd = Spd::new(rules.clone(), DefaultAction::Drop).unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut flows = Vec::new();
    for i in 0..20_000usize {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        flows.push(probe(
            &rules,
            i.wrapping_mul(7919),
            (seed % 3125) as u32,
            seed,
        ));
    }
    let mut out = vec![Verdict::Drop; flows.len()];
    for chunk in (0..flows.len()).step_by(37) {
        let end = (chunk + 37).min(flows.len());
        spd.classify_burst(&flows[chunk..end], &mut out[chunk..end]);
    }
    let mut protected = 0;
    for (f, v) in flows.iter().zip(&out) {
        assert_eq!(*v, spd.classify_linear(f), "flow {f:?}");
        protected += matches!(v, Verdict::Protect(_)) as usize;
    }
    assert!(protected > 1000, "probes hit rules: {protected}");
}

#[test]
fn short_output_and_mixed_families() {
    let spd = Spd::new(
        [(
            Action::Protect,
            Selector::between("10.0.0.0/8".parse().unwrap(), "0.0.0.0/0".parse().unwrap()),
        )],
        DefaultAction::Bypass,
    )
    .unwrap();
    let f = FlowKey {
        src: "10.0.0.1".parse().unwrap(),
        dst: "1.1.1.1".parse().unwrap(),
        proto: 6,
        src_port: 1,
        dst_port: 2,
    };
    let flows = [f; 100];
    let mut out = [Verdict::Drop; 10];
    spd.classify_burst(&flows, &mut out); // shorter out: only 10 written
    assert!(out.iter().all(|v| matches!(v, Verdict::Protect(_))));
    let mixed = FlowKey {
        dst: "::1".parse().unwrap(),
        ..f
    };
    assert_eq!(spd.classify(&mixed), Verdict::Bypass(None));
}

#[test]
fn handle_publishes_snapshots_while_workers_classify() {
    use espgate_dataplane::api::RuleId;
    use espgate_dataplane::spd::{HitCounters, SpdHandle};
    use std::sync::Arc;

    let sel = Selector::between(
        "192.168.100.0/24".parse().unwrap(),
        "172.16.10.0/24".parse().unwrap(),
    );
    let protect =
        Arc::new(Spd::new([(Action::Protect, sel.clone())], DefaultAction::Drop).unwrap());
    let bypass = Arc::new(Spd::new([(Action::Bypass, sel)], DefaultAction::Drop).unwrap());
    let f = FlowKey {
        src: "192.168.100.10".parse().unwrap(),
        dst: "172.16.10.11".parse().unwrap(),
        proto: 1,
        src_port: 0,
        dst_port: 0,
    };
    let handle = SpdHandle::new(protect.clone());
    let mut hits = HitCounters::new(&handle.load());
    let mut out = [Verdict::Drop; 4];
    handle.load().classify_burst(&[f; 4], &mut out);
    hits.record(&out);
    assert_eq!(hits.get(RuleId(0)), 4);

    handle.store(bypass.clone());
    let snap = handle.load();
    hits.follow(&snap);
    assert_eq!(hits.get(RuleId(0)), 0, "a new snapshot renumbers rules");
    assert_eq!(snap.classify(&f), Verdict::Bypass(Some(RuleId(0))));
    assert_eq!(
        HitCounters::sum(&protect, [&hits]),
        vec![0],
        "stale counters left out"
    );

    // A worker keeps classifying while snapshots are swapped under it.
    std::thread::scope(|s| {
        let worker = s.spawn(|| {
            let mut seen = [0usize; 2];
            for _ in 0..2000 {
                let spd = handle.load();
                match spd.classify(&f) {
                    Verdict::Protect(_) => seen[0] += 1,
                    Verdict::Bypass(Some(_)) => seen[1] += 1,
                    v => panic!("unexpected {v:?}"),
                }
            }
            seen
        });
        for i in 0..200 {
            handle.store(if i % 2 == 0 {
                protect.clone()
            } else {
                bypass.clone()
            });
        }
        let seen = worker.join().unwrap();
        assert_eq!(seen[0] + seen[1], 2000);
    });
}
