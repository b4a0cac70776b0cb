//! SPD classification throughput at 10, 1,000 and 10,000 rules.
//!
//! Rules look like a DCI crypto ACL: RFC 1918 prefixes mostly /24../32,
//! half `ip`, the rest tcp/udp/icmp with well-known or ranged destination
//! ports and the odd `gt 1023` source port. Packets: 80% fall inside a
//! random rule, 20% are random. Throughput is flows per second per core;
//! `linear` is the first-match scan the classifier replaces.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use espgate_dataplane::api::{FlowKey, Selector};
use espgate_dataplane::spd::{Action, DefaultAction, Spd, Verdict};
use ipnet::{IpNet, Ipv4Net};

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn prefix(rng: &mut Rng) -> IpNet {
    let (base, len0) = match rng.below(3) {
        0 => (0x0a00_0000u32, 8),
        1 => (0xac10_0000, 12),
        _ => (0xc0a8_0000, 16),
    };
    let len = match rng.below(100) {
        0..=1 => len0,
        2..=11 => 16.max(len0),
        12..=61 => 24,
        62..=76 => 28,
        _ => 32,
    };
    let host_mask = (1u64 << (32 - len0)) as u32 - 1;
    let a = base | (rng.next() as u32 & host_mask);
    IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), len as u8).unwrap().trunc())
}

fn rules(n: usize, rng: &mut Rng) -> Vec<(Action, Selector)> {
    const WELL_KNOWN: [u16; 8] = [22, 53, 80, 443, 500, 3306, 5432, 8080];
    (0..n)
        .map(|_| {
            let proto = match rng.below(100) {
                0..=49 => None,
                50..=79 => Some(6),
                80..=94 => Some(17),
                _ => Some(1),
            };
            let mut sel = Selector::between(prefix(rng), prefix(rng));
            sel.proto = proto;
            if matches!(proto, Some(6 | 17)) {
                sel.dst_ports = match rng.below(10) {
                    0..=4 => {
                        let p = WELL_KNOWN[rng.below(8) as usize];
                        p..=p
                    }
                    5..=6 => {
                        let a = 1024 + rng.below(30_000) as u16;
                        a..=a + rng.below(2000) as u16
                    }
                    _ => 0..=u16::MAX,
                };
                if rng.below(10) == 0 {
                    sel.src_ports = 1024..=u16::MAX;
                }
            }
            let action = if rng.below(10) == 0 {
                Action::Bypass
            } else {
                Action::Protect
            };
            (action, sel)
        })
        .collect()
}

fn flows(rules: &[(Action, Selector)], n: usize, rng: &mut Rng) -> Vec<FlowKey> {
    let inside = |net: &IpNet, r: u64| -> IpAddr {
        let IpNet::V4(n) = net else { unreachable!() };
        let (lo, hi) = (
            u32::from(n.network()) as u64,
            u32::from(n.broadcast()) as u64,
        );
        IpAddr::V4(Ipv4Addr::from((lo + r % (hi - lo + 1)) as u32))
    };
    let port = |r: &std::ops::RangeInclusive<u16>, x: u64| -> u16 {
        let (lo, hi) = (*r.start() as u64, *r.end() as u64);
        (lo + x % (hi - lo + 1)) as u16
    };
    (0..n)
        .map(|_| {
            if rng.below(10) < 8 {
                let (_, s) = &rules[rng.below(rules.len() as u64) as usize];
                FlowKey {
                    src: inside(&s.src, rng.next()),
                    dst: inside(&s.dst, rng.next()),
                    proto: s.proto.unwrap_or(6),
                    src_port: port(&s.src_ports, rng.next()),
                    dst_port: port(&s.dst_ports, rng.next()),
                }
            } else {
                let (src, dst) = (prefix(rng), prefix(rng));
                FlowKey {
                    src: inside(&src, rng.next()),
                    dst: inside(&dst, rng.next()),
                    proto: [6, 17, 1][rng.below(3) as usize],
                    src_port: rng.next() as u16,
                    dst_port: rng.next() as u16,
                }
            }
        })
        .collect()
}

fn classify(c: &mut Criterion) {
    let mut g = c.benchmark_group("spd_classify");
    for &n in &[10usize, 1_000, 10_000] {
        let mut rng = Rng(0x5eed_0000 + n as u64);
        let rs = rules(n, &mut rng);
        let spd = Spd::new(rs.clone(), DefaultAction::Drop).unwrap();
        eprintln!("spd with {n} rules: {:?}", spd.stats()[0]);
        // Many distinct flows so the tree is walked from cold-ish paths.
        let pool = flows(&rs, 64 * 1024, &mut rng);
        for &burst in &[32usize, 64] {
            g.throughput(Throughput::Elements(burst as u64));
            let mut out = vec![Verdict::Drop; burst];
            let mut at = 0usize;
            g.bench_with_input(
                BenchmarkId::new(format!("tree/burst{burst}"), n),
                &n,
                |b, _| {
                    b.iter(|| {
                        at = (at + burst) % (pool.len() - burst);
                        spd.classify_burst(black_box(&pool[at..at + burst]), &mut out);
                        black_box(&out);
                    })
                },
            );
        }
        if n <= 1_000 {
            let burst = 32;
            g.throughput(Throughput::Elements(burst as u64));
            let mut at = 0usize;
            g.bench_with_input(BenchmarkId::new("linear/burst32", n), &n, |b, _| {
                b.iter(|| {
                    at = (at + burst) % (pool.len() - burst);
                    for f in &pool[at..at + burst] {
                        black_box(spd.classify_linear(black_box(f)));
                    }
                })
            });
        }
    }
    g.finish();
}

fn build(c: &mut Criterion) {
    let mut g = c.benchmark_group("spd_build");
    g.sample_size(10);
    let mut rng = Rng(0x5eed_b111);
    let rs = rules(10_000, &mut rng);
    g.bench_function("10000_rules", |b| {
        b.iter(|| Spd::new(black_box(rs.clone()), DefaultAction::Drop).unwrap())
    });
    g.finish();
}

criterion_group!(benches, classify, build);
criterion_main!(benches);
