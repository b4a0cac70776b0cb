//! Two `Machine`s against each other in memory (quinn-proto's `Pair`): a
//! simulated clock, a wire queue with injectable loss, no sockets. The
//! scenario is the seed's: Site1 (10.255.1.2) with YELLOW and BLUE, Site2
//! (10.255.2.2) with PURPLE.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use espgate_controlplane::config::{Config, PeerConfig, Psk, RuleEntry};
use espgate_controlplane::machine::{IkeEvent, Machine, Reason, Transmit};
use espgate_dataplane::api::{
    ControlMsg, DataplaneEvent, Direction, ExpireReason, FlowKey, RuleId, SaParams, Selector, Spi,
    SpiAllocator, Suite,
};

const SITE1: &str = "10.255.1.2";
const SITE2: &str = "10.255.2.2";
const YELLOW: &str = "192.168.100.0/24";
const BLUE: &str = "192.168.200.0/24";
const PURPLE: &str = "172.16.10.0/24";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sel(src: &str, dst: &str) -> Selector {
    Selector::between(src.parse().unwrap(), dst.parse().unwrap())
}

fn site1() -> Config {
    let mut c = Config::new(ip(SITE1));
    c.peers.push(PeerConfig::new(
        ip(SITE2),
        Psk::new(b"cisco123-s2s".to_vec()),
    ));
    c.rules = vec![
        RuleEntry {
            rule: RuleId(1),
            selector: sel(YELLOW, PURPLE),
            more: Vec::new(),
            peer: ip(SITE2),
        },
        RuleEntry {
            rule: RuleId(2),
            selector: sel(BLUE, PURPLE),
            more: Vec::new(),
            peer: ip(SITE2),
        },
    ];
    c
}

fn site2() -> Config {
    let mut c = Config::new(ip(SITE2));
    c.peers.push(PeerConfig::new(
        ip(SITE1),
        Psk::new(b"cisco123-s2s".to_vec()),
    ));
    c.rules = vec![
        RuleEntry {
            rule: RuleId(11),
            selector: sel(PURPLE, YELLOW),
            more: Vec::new(),
            peer: ip(SITE1),
        },
        RuleEntry {
            rule: RuleId(12),
            selector: sel(PURPLE, BLUE),
            more: Vec::new(),
            peer: ip(SITE1),
        },
    ];
    c
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    A,
    B,
}

type LossFn = Box<dyn FnMut(usize, Side, &Transmit) -> bool>;

struct Pair {
    now: Instant,
    a: Machine,
    b: Machine,
    a_addr: IpAddr,
    /// Datagrams in flight: (receiver, datagram).
    wire: VecDeque<(Side, Transmit)>,
    /// Every datagram handed to the wire (after loss), with its sender.
    sent: Vec<(Side, Transmit)>,
    /// Number of datagrams the machines emitted (before loss).
    emitted: usize,
    ctl_a: Vec<ControlMsg>,
    ctl_b: Vec<ControlMsg>,
    ev_a: Vec<IkeEvent>,
    ev_b: Vec<IkeEvent>,
    /// Returns true to drop the n-th emitted datagram.
    lose: LossFn,
    /// Deliver a random in-flight datagram instead of the oldest (xorshift state; 0 = FIFO).
    reorder: u32,
}

impl Pair {
    fn new(a: Config, b: Config) -> Pair {
        let a_addr = a.local;
        Pair {
            now: Instant::now(),
            a: Machine::new(a, Arc::new(SpiAllocator::new(4))),
            b: Machine::new(b, Arc::new(SpiAllocator::new(4))),
            a_addr,
            wire: VecDeque::new(),
            sent: Vec::new(),
            emitted: 0,
            ctl_a: Vec::new(),
            ctl_b: Vec::new(),
            ev_a: Vec::new(),
            ev_b: Vec::new(),
            lose: Box::new(|_, _, _| false),
            reorder: 0,
        }
    }

    fn seed() -> Pair {
        Pair::new(site1(), site2())
    }

    fn machine(&mut self, s: Side) -> &mut Machine {
        match s {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    fn drain(&mut self) {
        for side in [Side::A, Side::B] {
            while let Some(t) = self.machine(side).poll_transmit() {
                let n = self.emitted;
                self.emitted += 1;
                if (self.lose)(n, side, &t) {
                    continue;
                }
                let to = if t.remote.ip() == self.a_addr {
                    Side::A
                } else {
                    Side::B
                };
                self.sent.push((side, t.clone()));
                self.wire.push_back((to, t));
            }
            while let Some(c) = self.machine(side).poll_control() {
                match side {
                    Side::A => self.ctl_a.push(c),
                    Side::B => self.ctl_b.push(c),
                }
            }
            while let Some(e) = self.machine(side).poll_event() {
                match side {
                    Side::A => self.ev_a.push(e),
                    Side::B => self.ev_b.push(e),
                }
            }
        }
    }

    /// Delivers datagrams and fires timers due within `horizon` of now,
    /// at most 100 steps; returns the steps taken.
    fn drive_bounded(&mut self, horizon: Duration) -> usize {
        let limit = self.now + horizon;
        for step in 0..100 {
            self.drain();
            let pick = if self.reorder != 0 && !self.wire.is_empty() {
                self.reorder ^= self.reorder << 13;
                self.reorder ^= self.reorder >> 17;
                self.reorder ^= self.reorder << 5;
                self.reorder as usize % self.wire.len()
            } else {
                0
            };
            if let Some((to, t)) = self.wire.remove(pick) {
                let now = self.now;
                self.machine(to)
                    .handle_datagram(now, t.remote, t.local, &t.data);
                continue;
            }
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(at) if at <= limit => {
                    self.now = self.now.max(at);
                    let now = self.now;
                    self.a.handle_timeout(now);
                    self.b.handle_timeout(now);
                }
                _ => return step,
            }
        }
        panic!("drive_bounded: not quiescent after 100 steps");
    }

    fn drive(&mut self) -> usize {
        self.drive_bounded(Duration::ZERO)
    }

    fn acquire(&mut self, side: Side, rule: u32) {
        let now = self.now;
        let peer = ip(if side == Side::A { SITE2 } else { SITE1 });
        let flow = FlowKey {
            src: ip("192.168.100.10"),
            dst: ip("172.16.10.11"),
            proto: 1,
            src_port: 0,
            dst_port: 0,
        };
        self.machine(side).handle_dataplane(
            now,
            DataplaneEvent::Acquire {
                rule: RuleId(rule),
                peer,
                flow,
            },
        );
    }

    fn take_ctl(&mut self) -> (Vec<ControlMsg>, Vec<ControlMsg>) {
        (
            std::mem::take(&mut self.ctl_a),
            std::mem::take(&mut self.ctl_b),
        )
    }
}

fn installs(ctl: &[ControlMsg]) -> Vec<&SaParams> {
    ctl.iter()
        .filter_map(|c| match c {
            ControlMsg::InstallSa(p) => Some(&**p),
            _ => None,
        })
        .collect()
}

fn one(ctl: &[ControlMsg], dir: Direction) -> SaParams {
    let v: Vec<_> = installs(ctl).into_iter().filter(|p| p.dir == dir).collect();
    assert_eq!(v.len(), 1, "expected one {dir:?} install in {ctl:?}");
    v[0].clone()
}

/// The initiator's outbound SA is exactly the responder's inbound SA and
/// vice versa: same SPI, suite, keys; selectors mirrored.
fn assert_matched(a: &[ControlMsg], b: &[ControlMsg]) -> (SaParams, SaParams) {
    let (a_in, a_out) = (one(a, Direction::Inbound), one(a, Direction::Outbound));
    let (b_in, b_out) = (one(b, Direction::Inbound), one(b, Direction::Outbound));
    assert_eq!(a_out.spi, b_in.spi);
    assert_eq!(b_out.spi, a_in.spi);
    assert_eq!(a_out.keys, b_in.keys);
    assert_eq!(b_out.keys, a_in.keys);
    assert_ne!(a_out.keys, a_in.keys);
    assert_eq!(a_out.suite, b_in.suite);
    assert_eq!(a_out.selector, b_out.selector.reversed());
    assert_eq!(a_in.selector, a_out.selector.reversed());
    assert_eq!(a_out.tunnel.local, b_out.tunnel.remote);
    assert_eq!(a_out.child_id, a_in.child_id);
    assert_eq!(a_out.keys.encr.len(), a_out.suite.encr_keymat_len());
    assert_eq!(a_out.keys.integ.len(), a_out.suite.integ_key_len());
    (a_out, b_out)
}

#[test]
fn seed_scenario_two_children_four_then_two_packets() {
    let mut p = Pair::seed();
    p.acquire(Side::A, 1);
    p.drive();
    assert_eq!(
        p.sent.len(),
        4,
        "IKE_SA_INIT + IKE_AUTH carry the first child"
    );
    let (a, b) = p.take_ctl();
    assert_eq!(installs(&a).len(), 2);
    assert_eq!(installs(&b).len(), 2);
    let (a_out, b_out) = assert_matched(&a, &b);
    assert_eq!(a_out.selector, sel(YELLOW, PURPLE));
    assert_eq!(a_out.rule, RuleId(1));
    assert_eq!(b_out.rule, RuleId(11), "responder maps to its own ACL line");
    assert_eq!(a_out.tunnel.udp_encap, None);
    assert_eq!(a_out.suite, Suite::Aes256CbcHmacSha256);

    p.acquire(Side::A, 2);
    p.drive();
    assert_eq!(p.sent.len(), 6, "CREATE_CHILD_SA is 2 packets");
    let (a, b) = p.take_ctl();
    let (a_out2, b_out2) = assert_matched(&a, &b);
    assert_eq!(a_out2.selector, sel(BLUE, PURPLE));
    assert_eq!(b_out2.rule, RuleId(12));
    assert_ne!(a_out2.spi, a_out.spi);
    assert_ne!(a_out2.keys, a_out.keys);

    // A duplicate Acquire for a rule that is up does nothing.
    p.acquire(Side::A, 1);
    p.drive();
    assert_eq!(p.sent.len(), 6);

    let views = p.a.ike_sas(p.now + Duration::from_secs(13));
    assert_eq!(views.len(), 1);
    let v = &views[0];
    assert_eq!(
        (v.status, v.encr, v.keysize, v.hash, v.dh_group, v.auth_sign),
        ("READY", "AES-CBC", 256, "SHA256", 14, "PSK")
    );
    assert_eq!(v.local, "10.255.1.2:500".parse::<SocketAddr>().unwrap());
    assert_eq!(v.remote, "10.255.2.2:500".parse::<SocketAddr>().unwrap());
    assert_eq!((v.lifetime_secs, v.active_secs), (86_400, 13));
    assert_eq!(v.children.len(), 2);
    assert_eq!(
        v.children[0].local_selector.to_string(),
        "192.168.100.0/0 - 192.168.100.255/65535"
    );
    assert_eq!(
        v.children[0].remote_selector.to_string(),
        "172.16.10.0/0 - 172.16.10.255/65535"
    );
    assert_eq!(v.children[0].spi_out, a_out.spi);
    assert_eq!(
        v.children[1].pfs_group,
        Some(14),
        "CREATE_CHILD_SA used PFS"
    );
    assert_eq!(
        v.children[0].pfs_group, None,
        "IKE_AUTH child has no own DH"
    );
    let json = serde_json::to_string(&views).unwrap();
    assert!(json.contains("\"status\":\"READY\""));
    assert!(json.contains("\"role\":\"INITIATOR\""));
    let bv = p.b.ike_sas(p.now);
    assert_eq!(format!("{:?}", bv[0].role), "Responder");
    assert!(p.ev_a.iter().any(|e| matches!(e, IkeEvent::IkeUp { .. })));
    assert_eq!(p.a.stats().child_up, 2);
    assert_eq!(p.b.stats().child_up, 2);
}

#[test]
fn responder_can_initiate_create_child_too() {
    let mut p = Pair::seed();
    p.acquire(Side::A, 1);
    p.drive();
    p.take_ctl();
    p.acquire(Side::B, 12);
    p.drive();
    assert_eq!(p.sent.len(), 6);
    let (a, b) = p.take_ctl();
    let (b_out, a_out) = assert_matched(&b, &a);
    assert_eq!(b_out.selector, sel(PURPLE, BLUE));
    assert_eq!(a_out.rule, RuleId(2));
}

#[test]
fn pfs_off_and_gcm_child() {
    let mut c1 = site1();
    let mut c2 = site2();
    c1.pfs_group = None;
    c2.pfs_group = None;
    c1.esp_proposals = vec![Suite::Aes256Gcm16, Suite::Aes256CbcHmacSha256];
    c2.esp_proposals = vec![Suite::Aes256Gcm16];
    let mut p = Pair::new(c1, c2);
    p.acquire(Side::A, 1);
    p.drive();
    let (a, b) = p.take_ctl();
    let (a_out, _) = assert_matched(&a, &b);
    assert_eq!(a_out.suite, Suite::Aes256Gcm16);
    assert_eq!(a_out.keys.encr.len(), 36, "GCM key + 4-byte salt");
    assert!(a_out.keys.integ.is_empty());
    p.acquire(Side::A, 2);
    p.drive();
    assert_eq!(p.sent.len(), 6);
    let (a, b) = p.take_ctl();
    assert_matched(&a, &b);
    let v = p.a.ike_sas(p.now);
    assert_eq!(v[0].children[1].pfs_group, None);
    assert_eq!(v[0].children[1].suite, Suite::Aes256Gcm16);
}

#[test]
fn pfs_required_by_responder_but_not_offered_is_no_proposal_chosen() {
    let mut c1 = site1();
    c1.pfs_group = None;
    let mut p = Pair::new(c1, site2());
    p.acquire(Side::A, 1);
    p.drive();
    p.take_ctl();
    p.acquire(Side::A, 2);
    p.drive();
    let (a, b) = p.take_ctl();
    assert!(installs(&a).is_empty() && installs(&b).is_empty());
    assert!(a.iter().any(|c| matches!(
        c,
        ControlMsg::AcquireFailed {
            rule: RuleId(2),
            ..
        }
    )));
    assert_eq!(p.a.stats().no_proposal_chosen, 1);
    assert_eq!(p.b.stats().no_proposal_chosen, 1);
}

#[test]
fn wrong_psk_is_authentication_failed_and_no_sa() {
    let mut c2 = site2();
    c2.peers[0].psk = Psk::new(b"not-the-same".to_vec());
    let mut p = Pair::new(site1(), c2);
    p.acquire(Side::A, 1);
    p.drive();
    assert_eq!(p.sent.len(), 4);
    let (a, b) = p.take_ctl();
    assert!(installs(&a).is_empty());
    assert!(installs(&b).is_empty());
    assert!(a.iter().any(|c| matches!(
        c,
        ControlMsg::AcquireFailed {
            rule: RuleId(1),
            ..
        }
    )));
    assert_eq!(p.b.stats().auth_failed, 1);
    assert_eq!(p.a.stats().auth_failed, 1);
    assert!(p.ev_b.iter().any(|e| matches!(
        e,
        IkeEvent::IkeFailed {
            reason: Reason::AuthenticationFailed,
            ..
        }
    )));
    assert!(p.ev_a.iter().any(|e| matches!(
        e,
        IkeEvent::IkeFailed {
            reason: Reason::AuthenticationFailed,
            ..
        }
    )));
    assert!(p.a.ike_sas(p.now).is_empty());
    assert!(p.b.ike_sas(p.now).is_empty());
}

#[test]
fn no_common_esp_proposal_is_no_proposal_chosen() {
    let mut c2 = site2();
    c2.esp_proposals = vec![Suite::Aes128Gcm16];
    let mut p = Pair::new(site1(), c2);
    p.acquire(Side::A, 1);
    p.drive();
    assert_eq!(p.sent.len(), 4);
    let (a, b) = p.take_ctl();
    assert!(installs(&a).is_empty() && installs(&b).is_empty());
    assert!(a.iter().any(|c| matches!(
        c,
        ControlMsg::AcquireFailed {
            rule: RuleId(1),
            ..
        }
    )));
    assert!(p.ev_a.iter().any(|e| matches!(
        e,
        IkeEvent::ChildFailed {
            reason: Reason::NoProposalChosen,
            ..
        }
    )));
    assert_eq!(p.b.stats().no_proposal_chosen, 1);
    // The IKE SA itself is up (RFC 7296 §1.2: a failed first child does not fail the IKE SA).
    assert_eq!(p.a.ike_sas(p.now)[0].status, "READY");
}

#[test]
fn traffic_selector_mismatch_is_ts_unacceptable() {
    let mut c2 = site2();
    c2.rules.retain(|r| r.rule == RuleId(12)); // only PURPLE → BLUE
    let mut p = Pair::new(site1(), c2);
    p.acquire(Side::A, 1); // YELLOW → PURPLE
    p.drive();
    let (a, b) = p.take_ctl();
    assert!(installs(&a).is_empty() && installs(&b).is_empty());
    assert_eq!(p.b.stats().ts_unacceptable, 1);
    assert_eq!(p.a.stats().ts_unacceptable, 1);
    assert!(a.iter().any(|c| matches!(
        c,
        ControlMsg::AcquireFailed {
            rule: RuleId(1),
            ..
        }
    )));
}

#[test]
fn responder_narrows_and_initiator_installs_narrowed() {
    let mut c1 = site1();
    c1.rules[0].selector = sel("192.168.0.0/16", "172.16.0.0/12");
    let mut c2 = site2();
    c2.rules[0].selector = sel("172.16.10.0/25", YELLOW);
    c2.rules.truncate(1);
    let mut p = Pair::new(c1, c2);
    p.acquire(Side::A, 1);
    p.drive();
    let (a, b) = p.take_ctl();
    let (a_out, _) = assert_matched(&a, &b);
    assert_eq!(a_out.selector, sel(YELLOW, "172.16.10.0/25"));
    // A rekey (or a show) uses the narrowed selector, not the configured one.
    assert_eq!(
        p.a.ike_sas(p.now)[0].children[0].remote_selector.net,
        "172.16.10.0/25".parse().unwrap()
    );
}

#[test]
fn lost_packets_are_retransmitted_and_duplicates_get_cached_response() {
    for lost in 0..4 {
        let mut p = Pair::seed();
        p.lose = Box::new(move |n, _, _| n == lost);
        p.acquire(Side::A, 1);
        p.drive_bounded(Duration::from_secs(10));
        let (a, b) = p.take_ctl();
        assert_matched(&a, &b);
        assert_eq!(p.a.stats().retransmits, 1, "loss of datagram {lost}");
        if lost % 2 == 1 {
            // A lost response: the responder saw the request twice and
            // answered from its cache without building new state.
            assert_eq!(p.b.stats().duplicate_requests, 1, "loss of datagram {lost}");
            assert_eq!(p.b.ike_sas(p.now).len(), 1);
        }
    }
    // CREATE_CHILD_SA response lost.
    let mut p = Pair::seed();
    p.lose = Box::new(|n, _, _| n == 5);
    p.acquire(Side::A, 1);
    p.drive();
    p.acquire(Side::A, 2);
    p.drive_bounded(Duration::from_secs(10));
    let (a, b) = p.take_ctl();
    assert_eq!(installs(&a).len(), 4);
    assert_eq!(
        installs(&b).len(),
        4,
        "duplicate request must not install twice"
    );
    assert_eq!(p.b.stats().duplicate_requests, 1);
}

#[test]
fn random_loss_and_reordering_never_leave_mismatched_keys() {
    let (mut retransmits, mut children_up) = (0, 0);
    for seed in 1..=30u32 {
        let mut p = Pair::seed();
        p.reorder = seed.wrapping_mul(0x9E37_79B9) | 1;
        let mut r = seed.wrapping_mul(0x85EB_CA6B) | 1;
        p.lose = Box::new(move |_, _, _| {
            r ^= r << 13;
            r ^= r >> 17;
            r ^= r << 5;
            r % 5 == 0 // 20 % loss
        });
        p.acquire(Side::A, 1);
        p.acquire(Side::A, 2);
        p.drive_bounded(Duration::from_secs(20));
        let (a, b) = p.take_ctl();
        // Whatever the initiator installed, the responder has the same keys
        // on the same SPI (the reverse can lag: a lost last response).
        for sa in installs(&a) {
            let dir = if sa.dir == Direction::Outbound {
                Direction::Inbound
            } else {
                Direction::Outbound
            };
            let peer = installs(&b)
                .into_iter()
                .find(|x| x.spi == sa.spi && x.dir == dir);
            assert_eq!(peer.map(|x| &x.keys), Some(&sa.keys), "seed {seed}: {sa:?}");
        }
        // Every acquired rule ended up installed or reported as failed.
        for rule in [RuleId(1), RuleId(2)] {
            let up = installs(&a).iter().any(|s| s.rule == rule);
            let failed = a
                .iter()
                .any(|c| matches!(c, ControlMsg::AcquireFailed { rule: r2, .. } if *r2 == rule));
            assert!(
                up || failed,
                "seed {seed}: rule {rule:?} neither up nor failed"
            );
            children_up += up as u32;
        }
        retransmits += p.a.stats().retransmits + p.b.stats().retransmits;
    }
    // The loss really happened and most children still came up.
    assert!(retransmits > 10, "{retransmits}");
    assert!(children_up > 40, "{children_up} of 60");
}

#[test]
fn give_up_after_retries_reports_acquire_failed() {
    let mut p = Pair::seed();
    p.lose = Box::new(|_, side, _| side == Side::A); // A's datagrams all vanish
    p.acquire(Side::A, 1);
    p.drive_bounded(Duration::from_secs(60));
    // Tries: 1 + 4 retransmits at 0.5, 1, 2, 4 s, then give up at +8 s.
    assert_eq!(p.emitted, 5);
    assert_eq!(p.a.stats().retransmits, 4);
    assert_eq!(p.a.stats().timeouts, 1);
    let (a, _) = p.take_ctl();
    assert!(a.iter().any(|c| matches!(
        c,
        ControlMsg::AcquireFailed {
            rule: RuleId(1),
            ..
        }
    )));
    assert!(p.a.ike_sas(p.now).is_empty());
    assert!(p.ev_a.iter().any(|e| matches!(
        e,
        IkeEvent::IkeFailed {
            reason: Reason::Timeout,
            ..
        }
    )));
}

fn deletes(ctl: &[ControlMsg]) -> Vec<(Spi, Direction)> {
    ctl.iter()
        .filter_map(|c| match c {
            ControlMsg::DeleteSa { spi, dir } => Some((*spi, *dir)),
            _ => None,
        })
        .collect()
}

#[test]
fn delete_child_then_ike_sa() {
    let mut p = Pair::seed();
    p.acquire(Side::A, 1);
    p.drive();
    p.acquire(Side::A, 2);
    p.drive();
    let (a, _) = p.take_ctl();
    let first = one(&a[..2], Direction::Outbound);
    let now = p.now;
    assert!(p.a.delete_child(now, first.child_id));
    p.drive();
    assert_eq!(p.sent.len(), 8);
    let (a, b) = p.take_ctl();
    let (da, db) = (deletes(&a), deletes(&b));
    assert_eq!(da.len(), 2);
    assert_eq!(db.len(), 2);
    assert!(da.contains(&(first.spi, Direction::Outbound)));
    assert!(db.contains(&(first.spi, Direction::Inbound)));
    assert_eq!(p.a.ike_sas(p.now)[0].children.len(), 1);
    assert_eq!(p.b.ike_sas(p.now)[0].children.len(), 1);

    let tunnel = p.a.ike_sas(p.now)[0].tunnel_id;
    let now = p.now;
    assert!(p.a.delete_ike_sa(now, tunnel));
    p.drive();
    let (a, b) = p.take_ctl();
    assert_eq!(deletes(&a).len(), 2);
    assert_eq!(deletes(&b).len(), 2);
    assert!(p.a.ike_sas(p.now).is_empty());
    assert!(p.b.ike_sas(p.now).is_empty());
    assert!(p.ev_b.iter().any(|e| matches!(
        e,
        IkeEvent::IkeDown {
            reason: Reason::DeletedByPeer,
            ..
        }
    )));
}

#[test]
fn force_encap_uses_udp_4500_with_marker() {
    let mut c1 = site1();
    c1.force_encap = true;
    let mut p = Pair::new(c1, site2());
    p.acquire(Side::A, 1);
    p.drive();
    assert_eq!(p.sent.len(), 4);
    // INIT on 500; AUTH floated to 4500 with the non-ESP marker.
    assert_eq!(p.sent[0].1.remote.port(), 500);
    assert_eq!(p.sent[2].1.remote.port(), 4500);
    assert_eq!(p.sent[2].1.local.port(), 4500);
    assert_eq!(&p.sent[2].1.data[..4], &[0, 0, 0, 0]);
    assert_eq!(p.sent[3].1.local.port(), 4500);
    let (a, b) = p.take_ctl();
    let (a_out, b_out) = assert_matched(&a, &b);
    assert_eq!(a_out.tunnel.udp_encap, Some((4500, 4500)));
    assert_eq!(
        b_out.tunnel.udp_encap,
        Some((4500, 4500)),
        "peer sees the faked NAT too"
    );
    assert!(p.a.ike_sas(p.now)[0].nat_t);
    // Later exchanges stay on 4500.
    p.acquire(Side::A, 2);
    p.drive();
    assert!(p.sent[4..]
        .iter()
        .all(|(_, t)| t.local.port() == 4500 && t.remote.port() == 4500));
    let (a, _) = p.take_ctl();
    assert_eq!(
        one(&a, Direction::Outbound).tunnel.udp_encap,
        Some((4500, 4500))
    );
}

#[test]
fn soft_expire_rekeys_make_before_break() {
    let mut p = Pair::seed();
    p.acquire(Side::A, 1);
    p.drive();
    let (a, _) = p.take_ctl();
    let old_out = one(&a, Direction::Outbound);
    let old_in = one(&a, Direction::Inbound);
    let now = p.now;
    p.a.handle_dataplane(
        now,
        DataplaneEvent::SoftExpire {
            spi: old_out.spi,
            dir: Direction::Outbound,
            why: ExpireReason::Time,
        },
    );
    p.drive();
    // CREATE_CHILD_SA (2) + Delete of the old child (2).
    assert_eq!(p.sent.len(), 8);
    let (a, b) = p.take_ctl();
    // Initiator: new inbound installed, outbound switched, then old deleted.
    let a_new_in = one(&a, Direction::Inbound);
    let a_rekey: Vec<_> = a
        .iter()
        .filter_map(|c| match c {
            ControlMsg::RekeySa { old, new } => Some((*old, new.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(a_rekey.len(), 1);
    assert_eq!(a_rekey[0].0, old_out.spi);
    let pos = |v: &[ControlMsg], f: &dyn Fn(&ControlMsg) -> bool| v.iter().position(f).unwrap();
    let i_install = pos(&a, &|c| matches!(c, ControlMsg::InstallSa(_)));
    let i_rekey = pos(&a, &|c| matches!(c, ControlMsg::RekeySa { .. }));
    let i_delete = pos(&a, &|c| matches!(c, ControlMsg::DeleteSa { .. }));
    assert!(
        i_install < i_rekey && i_rekey < i_delete,
        "make before break: {a:?}"
    );
    assert!(deletes(&a).contains(&(old_in.spi, Direction::Inbound)));
    // Responder: new inbound + RekeySa, deletes old.
    let b_new_in = one(&b, Direction::Inbound);
    assert_eq!(b_new_in.spi, a_rekey[0].1.spi);
    assert_eq!(b_new_in.keys, a_rekey[0].1.keys);
    let b_rekey: Vec<_> = b
        .iter()
        .filter_map(|c| match c {
            ControlMsg::RekeySa { new, .. } => Some(new.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(b_rekey.len(), 1);
    assert_eq!(b_rekey[0].spi, a_new_in.spi);
    assert_eq!(b_rekey[0].keys, a_new_in.keys);
    assert_eq!(deletes(&b).len(), 2);
    assert_eq!(p.a.ike_sas(p.now)[0].children.len(), 1);
    assert_eq!(p.b.ike_sas(p.now)[0].children.len(), 1);
    assert_eq!(p.a.stats().child_rekeyed, 1);
}

#[test]
fn hard_expire_deletes_the_child_on_both_sides() {
    let mut p = Pair::seed();
    p.acquire(Side::A, 1);
    p.drive();
    let (a, _) = p.take_ctl();
    let inb = one(&a, Direction::Inbound);
    let now = p.now;
    p.a.handle_dataplane(
        now,
        DataplaneEvent::HardExpire {
            spi: inb.spi,
            dir: Direction::Inbound,
            why: ExpireReason::Bytes,
        },
    );
    p.drive();
    let (a, b) = p.take_ctl();
    assert_eq!(deletes(&a).len(), 2);
    assert_eq!(deletes(&b).len(), 2);
    assert!(deletes(&b).contains(&(inb.spi, Direction::Outbound)));
    assert!(p.a.ike_sas(p.now)[0].children.is_empty());
}

#[test]
fn wrong_dh_group_gets_invalid_ke_payload() {
    use espgate_controlplane::ike::payload::{KePayload, NotifyType, Payload};
    use espgate_controlplane::ike::Message;
    let mut p = Pair::seed();
    p.acquire(Side::A, 1);
    let t = p.a.poll_transmit().unwrap();
    let mut m = Message::decode(&t.data).unwrap();
    for pl in &mut m.payloads {
        if let Payload::Ke(ke) = pl {
            *ke = KePayload {
                group: 19,
                data: vec![7; 64],
            };
        }
    }
    let now = p.now;
    p.b.handle_datagram(now, t.remote, t.local, &m.encode());
    let r = p.b.poll_transmit().unwrap();
    let resp = Message::decode(&r.data).unwrap();
    assert!(
        matches!(&resp.payloads[..], [Payload::Notify(n)] if n.ntype == NotifyType::INVALID_KE_PAYLOAD && n.data == [0, 14])
    );
    assert_eq!(p.b.stats().invalid_ke, 1);
    assert!(p.b.ike_sas(now).is_empty(), "no state for a refused INIT");
    p.a.handle_datagram(now, r.remote, r.local, &r.data);
    p.drain();
    assert!(p.ctl_a.iter().any(|c| matches!(
        c,
        ControlMsg::AcquireFailed {
            rule: RuleId(1),
            ..
        }
    )));
    assert!(p.ev_a.iter().any(|e| matches!(
        e,
        IkeEvent::IkeFailed {
            reason: Reason::InvalidKePayload { group: 14 },
            ..
        }
    )));
}

#[test]
fn ike_sa_rekey_keeps_children_and_deletes_old_sa() {
    let mut p = Pair::seed();
    p.acquire(Side::A, 1);
    p.drive();
    p.acquire(Side::A, 2);
    p.drive();
    p.take_ctl();
    let old = p.a.ike_sas(p.now)[0].clone();
    let now = p.now;
    assert!(p.a.rekey_ike_sa(now, old.tunnel_id));
    p.drive();
    // CREATE_CHILD_SA for the IKE SA (2) + Delete of the old IKE SA (2).
    assert_eq!(p.sent.len(), 10);
    let (a, b) = p.take_ctl();
    assert!(
        a.is_empty() && b.is_empty(),
        "child SAs untouched: {a:?} {b:?}"
    );
    let (va, vb) = (p.a.ike_sas(p.now), p.b.ike_sas(p.now));
    assert_eq!((va.len(), vb.len()), (1, 1));
    assert_ne!(va[0].tunnel_id, old.tunnel_id);
    assert_eq!(va[0].children, old.children);
    assert_eq!(vb[0].children.len(), 2);
    assert_eq!(va[0].status, "READY");
    // The new IKE SA works: a new child and a delete run over it.
    p.acquire(Side::B, 12);
    p.acquire(Side::A, 2); // already up: nothing
    p.drive();
    let child = va[0].children[0].child_id;
    let now = p.now;
    assert!(p.a.delete_child(now, child));
    p.drive();
    let (a, b) = p.take_ctl();
    assert_eq!(deletes(&a).len(), 2);
    assert_eq!(deletes(&b).len(), 2);
    // The responder's rekey timer fires later than the initiator's.
    let tunnel = p.b.ike_sas(p.now)[0].tunnel_id;
    let now = p.now;
    assert!(p.b.rekey_ike_sa(now, tunnel));
    p.drive();
    assert_eq!(p.a.ike_sas(p.now).len(), 1);
    assert_eq!(p.b.ike_sas(p.now)[0].children.len(), 1);
    let (a, b) = p.take_ctl();
    assert!(a.is_empty() && b.is_empty());
}

#[test]
fn ike_lifetime_triggers_rekey_before_expiry() {
    let (mut c1, mut c2) = (site1(), site2());
    for c in [&mut c1, &mut c2] {
        c.ike_lifetime_secs = 100;
        c.dpd_interval = None;
    }
    let mut p = Pair::new(c1, c2);
    p.acquire(Side::A, 1);
    p.drive();
    p.take_ctl();
    let old = p.a.ike_sas(p.now)[0].tunnel_id;
    p.drive_bounded(Duration::from_secs(92));
    let v = p.a.ike_sas(p.now);
    assert_eq!(v.len(), 1);
    assert_ne!(v[0].tunnel_id, old, "rekeyed at 90 % of the lifetime");
    assert_eq!(v[0].children.len(), 1);
    let (a, b) = p.take_ctl();
    assert!(a.is_empty() && b.is_empty());
}

#[test]
fn simultaneous_soft_expiry_rekeys_once() {
    let mut p = Pair::seed();
    p.acquire(Side::A, 1);
    p.drive();
    let (a, b) = p.take_ctl();
    let (a_out, b_out) = (one(&a, Direction::Outbound), one(&b, Direction::Outbound));
    let now = p.now;
    p.a.handle_dataplane(
        now,
        DataplaneEvent::SoftExpire {
            spi: a_out.spi,
            dir: Direction::Outbound,
            why: ExpireReason::Time,
        },
    );
    p.b.handle_dataplane(
        now,
        DataplaneEvent::SoftExpire {
            spi: b_out.spi,
            dir: Direction::Outbound,
            why: ExpireReason::Time,
        },
    );
    p.drive_bounded(Duration::from_secs(15));
    // Only the IKE initiator's rekey ran: CREATE_CHILD_SA + Delete = 4.
    assert_eq!(p.sent.len(), 8);
    let (a, b) = p.take_ctl();
    assert_eq!(installs(&a).len(), 1);
    assert_eq!(installs(&b).len(), 1);
    assert_eq!(p.a.ike_sas(p.now)[0].children.len(), 1);
    assert_eq!(p.b.ike_sas(p.now)[0].children.len(), 1);
    // A responder-only soft expiry still rekeys, after the deferral.
    let b_out = p.b.ike_sas(p.now)[0].children[0].spi_out;
    let now = p.now;
    p.b.handle_dataplane(
        now,
        DataplaneEvent::SoftExpire {
            spi: b_out,
            dir: Direction::Outbound,
            why: ExpireReason::Bytes,
        },
    );
    p.drive();
    assert_eq!(p.sent.len(), 8, "deferred");
    p.drive_bounded(Duration::from_secs(15));
    assert_eq!(p.sent.len(), 12);
    assert_eq!(p.b.stats().child_rekeyed, 2);
}

#[test]
fn dpd_liveness_check_when_idle() {
    let mut p = Pair::seed();
    p.acquire(Side::A, 1);
    p.drive();
    let before = p.sent.len();
    // Nothing for 30 s: both sides probe (empty INFORMATIONAL), both answer.
    p.drive_bounded(Duration::from_secs(31));
    assert!(p.sent.len() >= before + 2);
    assert!(p.a.ike_sas(p.now).len() == 1 && p.b.ike_sas(p.now).len() == 1);
    // Peer gone: DPD fails and the SA with its children is removed.
    p.lose = Box::new(|_, side, _| side == Side::B);
    p.drive_bounded(Duration::from_secs(120));
    let (a, _) = p.take_ctl();
    assert_eq!(deletes(&a).len(), 2);
    assert!(p.a.ike_sas(p.now).is_empty());
    assert!(p.ev_a.iter().any(|e| matches!(
        e,
        IkeEvent::IkeDown {
            reason: Reason::Timeout,
            ..
        }
    )));
}

#[test]
fn simultaneous_start_from_both_sides_converges() {
    let mut p = Pair::seed();
    p.acquire(Side::A, 1);
    p.acquire(Side::B, 12);
    p.drive();
    let (a, b) = p.take_ctl();
    // Two IKE SAs (one started by each side), one child each, all matched.
    assert_eq!(installs(&a).len(), 4, "{a:?}");
    assert_eq!(installs(&b).len(), 4);
    assert!(deletes(&a).is_empty() && deletes(&b).is_empty());
    assert_eq!(p.a.ike_sas(p.now).len(), 2);
    assert!(p
        .a
        .ike_sas(p.now)
        .iter()
        .all(|v| v.status == "READY" && v.children.len() == 1));
    let a_out: Vec<SaParams> = installs(&a)
        .into_iter()
        .filter(|s| s.dir == Direction::Outbound)
        .cloned()
        .collect();
    assert_eq!(a_out.len(), 2);
    for ours in a_out {
        let peer_in = installs(&b)
            .into_iter()
            .find(|s| s.spi == ours.spi && s.dir == Direction::Inbound)
            .cloned()
            .unwrap();
        assert_eq!(ours.keys, peer_in.keys);
    }
}

#[test]
fn initial_contact_drops_old_sas_of_the_peer() {
    let mut p = Pair::seed();
    p.acquire(Side::A, 1);
    p.drive();
    p.take_ctl();
    // Site1 restarts: a fresh machine with the same config initiates again.
    p.a = Machine::new(site1(), Arc::new(SpiAllocator::new(4)));
    p.acquire(Side::A, 1);
    p.drive();
    let (_, b) = p.take_ctl();
    assert_eq!(
        deletes(&b).len(),
        2,
        "old child SA dropped by INITIAL_CONTACT"
    );
    assert_eq!(installs(&b).len(), 2);
    assert_eq!(p.b.ike_sas(p.now).len(), 1);
    assert!(p.ev_b.iter().any(|e| matches!(
        e,
        IkeEvent::IkeDown {
            reason: Reason::InitialContact,
            ..
        }
    )));
}

#[test]
fn extreme_config_values_do_not_panic() {
    let (mut c1, mut c2) = (site1(), site2());
    for c in [&mut c1, &mut c2] {
        c.ike_lifetime_secs = u64::MAX;
        c.dpd_interval = Some(Duration::from_secs(u64::MAX / 4));
        c.retransmit_tries = u32::MAX;
        c.retransmit_base = Duration::from_secs(u64::MAX / 2);
    }
    let mut p = Pair::new(c1, c2);
    p.acquire(Side::A, 1);
    p.drive_bounded(Duration::from_secs(3600));
    assert_eq!(p.a.ike_sas(p.now).len(), 1);
    let (a, b) = p.take_ctl();
    assert_matched(&a, &b);
}

#[test]
fn garbage_and_mutated_datagrams_never_panic() {
    let mut p = Pair::seed();
    p.acquire(Side::A, 1);
    p.drive();
    let captured: Vec<Transmit> = p.sent.iter().map(|(_, t)| t.clone()).collect();
    let mut m = Machine::new(site2(), Arc::new(SpiAllocator::new(1)));
    let now = p.now;
    let mut seed: u32 = 0x1234_5678;
    let mut rnd = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for t in &captured {
        for _ in 0..300 {
            let mut d = t.data.clone();
            match rnd() % 3 {
                0 => d.truncate(rnd() as usize % (d.len() + 1)),
                1 => {
                    let i = rnd() as usize % d.len();
                    d[i] ^= 1 << (rnd() % 8);
                }
                _ => d.extend((0..rnd() % 40).map(|_| rnd() as u8)),
            }
            m.handle_datagram(now, t.remote, t.local, &d);
            p.b.handle_datagram(now, t.remote, t.local, &d);
        }
    }
    for n in 0..200 {
        let d: Vec<u8> = (0..n).map(|_| rnd() as u8).collect();
        m.handle_datagram(
            now,
            "10.255.2.2:500".parse().unwrap(),
            "10.255.1.2:500".parse().unwrap(),
            &d,
        );
        m.handle_datagram(
            now,
            "10.255.2.2:4500".parse().unwrap(),
            "10.255.1.2:4500".parse().unwrap(),
            &d,
        );
    }
    assert!(m.stats().malformed + m.stats().unknown_spi + m.stats().bad_icv > 0);
}

/// Wall time of the handshakes in memory (printed, never asserted), cold
/// and with DH key pairs made ahead in idle time (`precompute_dh`).
#[test]
fn measure_handshake_time() {
    let peer = espgate_controlplane::ike::dh::DhKeyPair::generate();
    let mut modpow: Vec<Duration> = (0..10)
        .map(|_| {
            let k = espgate_controlplane::ike::dh::DhKeyPair::generate();
            let t = Instant::now();
            let _ = k.shared_secret(peer.public()).unwrap();
            t.elapsed()
        })
        .collect();
    modpow.sort();
    eprintln!(
        "one MODP-2048 shared-secret modpow (384-bit exponent): median {:?}",
        modpow[5]
    );
    for warm in [false, true] {
        let mut init_auth = Vec::new();
        let mut create_child = Vec::new();
        for _ in 0..10 {
            let mut p = Pair::seed();
            let idle = |p: &mut Pair| {
                if warm {
                    while p.a.precompute_dh(2) | p.b.precompute_dh(2) {}
                }
            };
            idle(&mut p);
            let t0 = Instant::now();
            p.acquire(Side::A, 1);
            p.drive();
            init_auth.push(t0.elapsed());
            idle(&mut p);
            let t1 = Instant::now();
            p.acquire(Side::A, 2);
            p.drive();
            create_child.push(t1.elapsed());
            assert_eq!(p.sent.len(), 6);
            let (a, b) = p.take_ctl();
            assert_eq!((installs(&a).len(), installs(&b).len()), (4, 4));
        }
        init_auth.sort();
        create_child.sort();
        eprintln!(
            "in-memory, {}: INIT+AUTH median {:?}, CREATE_CHILD_SA (PFS) median {:?}",
            if warm { "DH precomputed" } else { "cold" },
            init_auth[init_auth.len() / 2],
            create_child[create_child.len() / 2]
        );
    }
}

fn per_worker(mut c: Config) -> Config {
    c.sa_per_worker = true;
    c
}

/// Outbound installs of `ctl` as (resource, SPI), sorted by resource.
fn outbound_resources(ctl: &[ControlMsg]) -> Vec<(Option<u8>, Spi)> {
    let mut v: Vec<_> = installs(ctl)
        .into_iter()
        .filter(|p| p.dir == Direction::Outbound)
        .map(|p| (p.resource, p.spi))
        .collect();
    v.sort();
    v
}

#[test]
fn per_worker_children_pair_each_worker_with_the_peer_s() {
    let mut p = Pair::new(per_worker(site1()), per_worker(site2()));
    p.acquire(Side::A, 1);
    p.drive();
    // IKE_SA_INIT + IKE_AUTH (first child, for the rule's owner, worker
    // 1 % 4 = 1) + one CREATE_CHILD_SA per other worker.
    assert_eq!(p.sent.len(), 4 + 3 * 2);
    let (a, b) = p.take_ctl();
    assert_eq!(installs(&a).len(), 8);
    // The responder sends on an additional child only once the initiator's
    // first packet on it proves the initiator has its keys.
    let after_peer: Vec<(SaParams, Spi)> = b
        .iter()
        .filter_map(|c| match c {
            ControlMsg::InstallSaAfterPeer { outbound, proof } => {
                Some(((**outbound).clone(), *proof))
            }
            _ => None,
        })
        .collect();
    assert_eq!(after_peer.len(), 3, "one per additional worker");
    assert_eq!(
        installs(&b).len(),
        5,
        "4 inbound + the first child's outbound"
    );
    for (out, proof) in &after_peer {
        let twin_in = installs(&b)
            .into_iter()
            .find(|p| p.spi == *proof)
            .expect("proof is one of our inbound SAs");
        assert_eq!(twin_in.child_id, out.child_id, "same child");
        assert_eq!(twin_in.dir, Direction::Inbound);
    }
    let b: Vec<ControlMsg> = b
        .into_iter()
        .map(|c| match c {
            ControlMsg::InstallSaAfterPeer { outbound, .. } => ControlMsg::InstallSa(outbound),
            c => c,
        })
        .collect();
    assert_eq!(installs(&b).len(), 8);
    let a_out = outbound_resources(&a);
    assert_eq!(
        a_out.iter().map(|x| x.0).collect::<Vec<_>>(),
        vec![Some(0), Some(1), Some(2), Some(3)]
    );
    let first = installs(&a)
        .into_iter()
        .find(|p| p.dir == Direction::Outbound)
        .unwrap();
    assert_eq!(first.resource, Some(1), "first child serves the rule owner");
    for pa in installs(&a) {
        // Each of A's SAs has its twin on B with the same SPI and keys,
        // and both sides put the child on the same worker index.
        let twin = installs(&b)
            .into_iter()
            .find(|pb| pb.spi == pa.spi && pb.dir != pa.dir)
            .unwrap_or_else(|| panic!("no twin for {:?}", pa.spi));
        assert_eq!(twin.keys, pa.keys);
        assert_eq!(twin.resource, pa.resource);
        let w = pa.resource.unwrap();
        let inbound = if pa.dir == Direction::Inbound {
            pa
        } else {
            twin
        };
        assert_eq!(inbound.spi.shard(), w, "inbound SPI on the worker's shard");
        // A sender's outbound selector is its peer's inbound one.
        assert_eq!(twin.selector, pa.selector);
    }
    let keys: std::collections::HashSet<_> =
        installs(&a).iter().map(|p| p.keys.encr.clone()).collect();
    assert_eq!(keys.len(), 8, "every SA has its own keys");
    assert_eq!(p.a.ike_sas(p.now)[0].children.len(), 4);
    assert_eq!(p.b.ike_sas(p.now)[0].children.len(), 4);

    // The rule is up: a further Acquire sends nothing.
    p.acquire(Side::A, 1);
    p.drive();
    assert_eq!(p.sent.len(), 10);
}

#[test]
fn per_worker_offer_unanswered_gives_one_child_as_before() {
    // Site2 (like strongSwan 5.x) ignores SA_RESOURCE_INFO.
    let mut p = Pair::new(per_worker(site1()), site2());
    p.acquire(Side::A, 1);
    p.drive();
    assert_eq!(p.sent.len(), 4);
    let (a, b) = p.take_ctl();
    let (a_out, b_out) = assert_matched(&a, &b);
    assert_eq!(a_out.resource, None, "the peer did not take per-worker SAs");
    assert_eq!(b_out.resource, None);
    // And the other way round: the responder only answers what it is offered.
    let mut p = Pair::new(site1(), per_worker(site2()));
    p.acquire(Side::A, 2);
    p.drive();
    assert_eq!(p.sent.len(), 4);
    let (a, b) = p.take_ctl();
    let (a_out, b_out) = assert_matched(&a, &b);
    assert_eq!((a_out.resource, b_out.resource), (None, None));
}

#[test]
fn per_worker_child_rekey_keeps_its_worker() {
    let mut p = Pair::new(per_worker(site1()), per_worker(site2()));
    p.acquire(Side::A, 1);
    p.drive();
    let (a, _) = p.take_ctl();
    let (_, old_spi) = outbound_resources(&a)
        .into_iter()
        .find(|x| x.0 == Some(2))
        .unwrap();
    let now = p.now;
    p.a.handle_dataplane(
        now,
        DataplaneEvent::SoftExpire {
            spi: old_spi,
            dir: Direction::Outbound,
            why: ExpireReason::Time,
        },
    );
    p.drive();
    let (a, b) = p.take_ctl();
    let new_out: Vec<_> = a
        .iter()
        .filter_map(|c| match c {
            ControlMsg::RekeySa { old, new } => Some((*old, new.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(new_out.len(), 1);
    assert_eq!(new_out[0].0, old_spi);
    assert_eq!(new_out[0].1.resource, Some(2));
    let a_new_in = one(&a, Direction::Inbound);
    assert_eq!((a_new_in.resource, a_new_in.spi.shard()), (Some(2), 2));
    let b_new_in = one(&b, Direction::Inbound);
    assert_eq!(b_new_in.spi, new_out[0].1.spi);
    assert_eq!((b_new_in.resource, b_new_in.spi.shard()), (Some(2), 2));
    assert_eq!(p.a.ike_sas(p.now)[0].children.len(), 4);
    assert_eq!(p.b.ike_sas(p.now)[0].children.len(), 4);
}

/// `[acl] sa = "combined"`: both ACL lines in one rule entry.
fn combined(mut c: Config) -> Config {
    let second = c.rules.remove(1);
    c.rules[0].more.push(second.selector);
    c
}

#[test]
fn combined_child_sa_carries_every_entry_in_one_pair_of_sas() {
    let mut p = Pair::new(combined(site1()), combined(site2()));
    p.acquire(Side::A, 1);
    p.drive();
    assert_eq!(
        p.sent.len(),
        4,
        "one IKE_SA_INIT + IKE_AUTH, no CREATE_CHILD_SA"
    );
    let (a, b) = p.take_ctl();
    let (a_out, b_out) = assert_matched(&a, &b);
    assert_eq!(a_out.selector, sel(YELLOW, PURPLE));
    assert_eq!(a_out.more_selectors, vec![sel(BLUE, PURPLE)]);
    assert_eq!(b_out.rule, RuleId(11));
    // Site2 installs the same two pairs from its side.
    let mut b_pairs = vec![b_out.selector.clone()];
    b_pairs.extend(b_out.more_selectors.clone());
    b_pairs.sort_by_key(|s| s.dst.to_string());
    assert_eq!(b_pairs, vec![sel(PURPLE, YELLOW), sel(PURPLE, BLUE)]);
    let a_in = one(&a, Direction::Inbound);
    assert_eq!(a_in.more_selectors, vec![sel(PURPLE, BLUE)]);
    // BLUE's traffic needs no second child.
    p.acquire(Side::A, 1);
    p.drive();
    assert_eq!(p.sent.len(), 4);
    assert_eq!(p.a.ike_sas(p.now)[0].children.len(), 1);
}

#[test]
fn combined_offer_to_a_per_entry_peer_is_narrowed_to_one_entry() {
    let mut p = Pair::new(combined(site1()), site2());
    p.acquire(Side::A, 1);
    p.drive();
    assert_eq!(p.sent.len(), 4);
    let (a, b) = p.take_ctl();
    let (a_out, b_out) = assert_matched(&a, &b);
    // RFC 7296 §2.9 narrowing: the responder picks one of its entries.
    assert!(a_out.more_selectors.is_empty());
    assert!(b_out.more_selectors.is_empty());
    assert!([sel(YELLOW, PURPLE), sel(BLUE, PURPLE)].contains(&a_out.selector));
}
