//! Parser, expansion and `show access-list` against the seed's ACL.

use espgate_dataplane::api::{FlowKey, RuleId, Selector};
use espgate_dataplane::spd::acl::{self, AclError};
use espgate_dataplane::spd::{self, show};
use espgate_dataplane::spd::{Action, DefaultAction, HitCounters, Spd, Verdict};

/// The seed's Site1-FW config (object names from the walkthrough's colours).
const SEED: &str = "\
object network YELLOW
 subnet 192.168.100.0 255.255.255.0
object network BLUE
 subnet 192.168.200.0 255.255.255.0
object network PURPLE
 subnet 172.16.10.0 255.255.255.0
object-group network SITE1
 network-object object YELLOW
 network-object object BLUE
object-group network SITE2
 network-object object PURPLE
access-list s2svpn_to_site2 extended permit ip object-group SITE1 object-group SITE2 log default
";

fn flow(src: &str, dst: &str, proto: u8, sp: u16, dp: u16) -> FlowKey {
    FlowKey {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        proto,
        src_port: sp,
        dst_port: dp,
    }
}

#[test]
fn seed_acl_expands_like_the_asa() {
    let cfg = acl::parse(SEED).unwrap();
    let list = cfg.access_list("s2svpn_to_site2").unwrap();
    assert_eq!(list.lines.len(), 1);
    let e: Vec<_> = list.entries().collect();
    assert_eq!(e.len(), 2);
    // BLUE first, then YELLOW, as the seed's `show access-list` lists them.
    assert_eq!(
        e[0].selector,
        Selector::between(
            "192.168.200.0/24".parse().unwrap(),
            "172.16.10.0/24".parse().unwrap()
        )
    );
    assert_eq!(e[1].selector.src, "192.168.100.0/24".parse().unwrap());
    assert_eq!((e[0].id, e[1].id), (RuleId(0), RuleId(1)));
    assert!(e.iter().all(|e| e.action == Action::Protect));
    assert_eq!(
        cfg.object_group("SITE1").unwrap(),
        &[
            "192.168.100.0/24".parse().unwrap(),
            "192.168.200.0/24".parse().unwrap()
        ]
    );
}

#[test]
fn seed_show_access_list_format() {
    let cfg = acl::parse(SEED).unwrap();
    let list = cfg.access_list("s2svpn_to_site2").unwrap();
    let spd = Spd::from_acl(&cfg, "s2svpn_to_site2", DefaultAction::Drop).unwrap();
    let mut w1 = HitCounters::new(&spd);
    let mut w2 = HitCounters::new(&spd);
    let flows = [
        flow("192.168.100.10", "172.16.10.11", 1, 0, 0),
        flow("192.168.200.20", "172.16.10.21", 1, 0, 0),
        flow("192.168.200.20", "172.16.10.21", 1, 0, 0),
        flow("10.0.0.1", "172.16.10.21", 1, 0, 0),
    ];
    let mut out = [Verdict::Drop; 4];
    spd.classify_burst(&flows, &mut out);
    assert_eq!(
        out,
        [
            Verdict::Protect(RuleId(1)),
            Verdict::Protect(RuleId(0)),
            Verdict::Protect(RuleId(0)),
            Verdict::Drop
        ]
    );
    w1.record(&out[..2]);
    w2.record(&out[2..]);
    let hits = HitCounters::sum(&spd, [&w1, &w2]);
    assert_eq!(hits, vec![2, 1]);

    let zero = show::render(&show::view(list, &[]));
    let lines: Vec<&str> = zero.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "access-list s2svpn_to_site2; 2 elements; name hash: 0x{:08x}",
            show::fnv1a32("s2svpn_to_site2")
        )
    );
    let strip = |l: &str| l.rsplit_once(' ').unwrap().0.to_string();
    assert_eq!(strip(lines[1]), "access-list s2svpn_to_site2 line 1 extended permit ip object-group SITE1 object-group SITE2 log default (hitcnt=0)");
    assert_eq!(strip(lines[2]), "  access-list s2svpn_to_site2 line 1 extended permit ip 192.168.200.0 255.255.255.0 172.16.10.0 255.255.255.0 log default (hitcnt=0)");
    assert_eq!(strip(lines[3]), "  access-list s2svpn_to_site2 line 1 extended permit ip 192.168.100.0 255.255.255.0 172.16.10.0 255.255.255.0 log default (hitcnt=0)");
    assert_eq!(lines.len(), 4);
    for l in &lines[1..] {
        let h = l.rsplit_once(' ').unwrap().1;
        assert!(h.starts_with("0x") && h.len() == 10, "{h}");
    }

    let v = show::view(list, &hits);
    assert_eq!(v.lines[0].hitcnt, 3, "parent = sum of children");
    let text = show::render(&v);
    assert!(text.contains("log default (hitcnt=3)"), "{text}");
    assert!(text
        .contains("192.168.200.0 255.255.255.0 172.16.10.0 255.255.255.0 log default (hitcnt=2)"));
    // Hash ids are stable: same text, same id.
    assert_eq!(text, show::render(&show::view(list, &hits)));
}

#[test]
fn group_members_network_objects_and_hosts() {
    let cfg = acl::parse(
        "object-group network SITE1
 network-object 192.168.100.0 255.255.255.0
 network-object host 192.168.200.7
 network-object 2001:db8:1::/48
object-group network ALL
 group-object SITE1
 network-object host 2001:db8::1
access-list A extended permit tcp object-group SITE1 any eq https
access-list A extended deny udp any4 range 1000 2000 10.0.0.0 0.0.0.255 gt 1023
access-list A remark keep the rest in the clear
access-list A extended permit ip object-group ALL object-group ALL
access-list 101 permit icmp 10.1.0.0 0.0.255.255 host 10.2.0.1
ip access-list extended IOSLIST
 10 permit esp any6 2001:db8::/32
 remark hi
 deny 50 any any
",
    )
    .unwrap();
    let a = cfg.access_list("A").unwrap();
    let l1: Vec<_> = a.lines[0]
        .entries
        .iter()
        .map(|e| e.selector.clone())
        .collect();
    // any = any4 + any6; family mismatches skipped; members last first.
    assert_eq!(l1.len(), 3);
    assert_eq!(l1[0].src, "2001:db8:1::/48".parse().unwrap());
    assert_eq!(l1[0].dst, "::/0".parse().unwrap());
    assert_eq!(l1[1].src, "192.168.200.7/32".parse().unwrap());
    assert_eq!(l1[2].src, "192.168.100.0/24".parse().unwrap());
    assert_eq!(l1[2].dst_ports, 443..=443);
    assert_eq!(l1[2].proto, Some(6));
    let l2 = &a.lines[1].entries[0];
    assert_eq!(l2.action, Action::Bypass);
    assert_eq!(l2.selector.src_ports, 1000..=2000);
    assert_eq!(l2.selector.dst_ports, 1024..=65535);
    assert_eq!(l2.selector.dst, "10.0.0.0/24".parse().unwrap());
    assert_eq!(
        l2.text,
        "extended deny udp any4 range 1000 2000 10.0.0.0 255.255.255.0 gt 1023"
    );
    assert!(a.lines[2].entries.is_empty());
    assert_eq!(a.lines[2].number, 3);
    // ALL = 3 v4/v6 members of SITE1 + one v6 host: 2*2 v4 + 2*2 v6 pairs.
    assert_eq!(a.lines[3].entries.len(), 8);
    assert_eq!(a.lines[3].entries[0].id, RuleId(4));
    let ios = cfg.access_list("101").unwrap();
    assert_eq!(
        ios.lines[0].entries[0].selector.src,
        "10.1.0.0/16".parse().unwrap()
    );
    assert_eq!(
        ios.lines[0].entries[0].selector.dst,
        "10.2.0.1/32".parse().unwrap()
    );
    let named = cfg.access_list("IOSLIST").unwrap();
    assert_eq!(named.lines.len(), 3);
    assert_eq!(named.lines[0].entries[0].selector.proto, Some(50));
    assert_eq!(named.lines[2].entries.len(), 2);
    // Rendering a full list never panics and numbers every line.
    let text = show::render(&show::view(a, &[]));
    assert!(text.contains("access-list A line 3 remark keep the rest in the clear"));
    assert!(text.contains("access-list A; 12 elements;"));
}

#[test]
fn wildcard_and_netmask_forms() {
    let cases = [
        ("10.0.0.0 255.0.0.0", "10.0.0.0/8"),
        ("10.0.0.0 0.255.255.255", "10.0.0.0/8"),
        ("10.1.2.3 0.0.0.0", "10.1.2.3/32"),
        ("10.1.2.3 255.255.255.255", "10.1.2.3/32"),
        ("0.0.0.0 0.0.0.0", "0.0.0.0/0"),
        ("0.0.0.0 255.255.255.255", "0.0.0.0/0"),
        ("192.168.1.0/24", "192.168.1.0/24"),
    ];
    for (src, want) in cases {
        let cfg = acl::parse(&format!("access-list X extended permit ip {src} any4")).unwrap();
        let e = cfg
            .access_list("X")
            .unwrap()
            .entries()
            .next()
            .unwrap()
            .clone();
        assert_eq!(e.selector.src, want.parse().unwrap(), "{src}");
    }
}

#[test]
fn inbound_policy_check_uses_the_sa_selector() {
    let cfg = acl::parse(SEED).unwrap();
    let e = cfg
        .access_list("s2svpn_to_site2")
        .unwrap()
        .entries()
        .next()
        .unwrap()
        .clone();
    // Inbound SA of BLUE→PURPLE carries PURPLE→BLUE.
    let inbound = e.selector.reversed();
    assert!(spd::inbound_allowed(
        &inbound,
        &flow("172.16.10.21", "192.168.200.20", 1, 0, 0)
    ));
    assert!(!inbound.matches(&flow("172.16.10.21", "192.168.100.10", 1, 0, 0)));
    assert!(!inbound.matches(&flow("192.168.200.20", "172.16.10.21", 1, 0, 0)));
    let tcp = acl::parse("access-list T extended permit tcp any4 host 10.0.0.1 eq 22").unwrap();
    let sel = tcp
        .access_list("T")
        .unwrap()
        .entries()
        .next()
        .unwrap()
        .selector
        .reversed();
    assert!(sel.matches(&flow("10.0.0.1", "1.2.3.4", 6, 22, 5555)));
    assert!(!sel.matches(&flow("10.0.0.1", "1.2.3.4", 6, 23, 5555)));
    assert!(!sel.matches(&flow("10.0.0.1", "1.2.3.4", 17, 22, 5555)));
}

fn err(text: &str) -> AclError {
    acl::parse(text).unwrap_err()
}

#[test]
fn malformed_lines_name_line_and_token() {
    let cases: &[(&str, usize, &str)] = &[
        ("access-list X extended permit ip any", 1, "any"),
        ("\n\naccess-list X extended allow ip any any", 3, "allow"),
        ("access-list X extended permit ipp any any", 1, "ipp"),
        (
            "access-list X extended permit ip 10.0.0.1 255.0.0.0 any",
            1,
            "255.0.0.0",
        ),
        (
            "access-list X extended permit ip 10.0.0.0 0.255.0.255 any",
            1,
            "0.255.0.255",
        ),
        (
            "access-list X extended permit ip 10.0.0.0 255.0.0.x any",
            1,
            "255.0.0.x",
        ),
        (
            "access-list X extended permit ip host 10.0.0.256 any",
            1,
            "10.0.0.256",
        ),
        ("access-list X extended permit ip any any eq 80", 1, "eq"),
        (
            "access-list X extended permit tcp any any eq 70000",
            1,
            "70000",
        ),
        ("access-list X extended permit tcp any any eq wat", 1, "wat"),
        (
            "access-list X extended permit tcp any any range 90 80",
            1,
            "range 90 80",
        ),
        ("access-list X extended permit tcp any any lt 0", 1, "lt 0"),
        ("access-list X extended permit tcp any any neq 80", 1, "neq"),
        (
            "access-list X extended permit ip object-group NOPE any",
            1,
            "NOPE",
        ),
        (
            "access-list X extended permit ip object NOPE any",
            1,
            "NOPE",
        ),
        ("access-list X extended permit ip any any bogus", 1, "bogus"),
        (
            "access-list X extended permit ip any4 any6",
            1,
            "extended permit ip any4 any6",
        ),
        (
            "access-list X extended permit ip any any log default\ncrypto map m 1 match address X",
            2,
            "crypto",
        ),
        (" network-object host 1.2.3.4", 1, "network-object"),
        (
            "object-group network G\n network-object 10.0.0.0",
            2,
            "10.0.0.0",
        ),
        (
            "object-group network G\n subnet 10.0.0.0 255.0.0.0",
            2,
            "subnet",
        ),
        (
            "object network O\n network-object host 1.1.1.1",
            2,
            "network-object",
        ),
        ("object network O\n host 1.1.1.1 extra", 2, "extra"),
        ("object-group service S", 1, "service"),
        ("object network O\nobject-group network O", 2, "O"),
        ("access-list X", 1, "X"),
        ("access-list X standard permit any", 1, "standard"),
        (
            "access-list X extended permit ip interface outside any",
            1,
            "interface",
        ),
        ("access-list X extended permit", 1, "permit"),
        ("access-list X extended permit 256 any any", 1, "256"),
        (
            "access-list X extended permit ip 2001:db8::1 any",
            1,
            "2001:db8::1",
        ),
        (
            "access-list X extended permit ip 2001:db8::/129 any",
            1,
            "2001:db8::/129",
        ),
        (
            "object network EMPTY\naccess-list X extended permit ip object EMPTY any",
            2,
            "EMPTY",
        ),
    ];
    for &(text, line, token) in cases {
        let e = err(text);
        assert_eq!((e.line(), e.token()), (line, token), "{text:?} gave {e}");
        assert!(!e.to_string().is_empty());
    }
}

#[test]
fn missing_tokens_say_what_was_expected() {
    let e = err("access-list X extended permit tcp any host");
    assert!(
        matches!(
            e,
            AclError::MissingToken {
                line: 1,
                expected: "an IP address",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.token(), "host");
    let e = err("access-list X extended permit tcp any any range 10");
    assert!(matches!(e, AclError::MissingToken { .. }), "{e:?}");
    assert!(e.to_string().contains("last port"), "{e}");
}

#[test]
fn first_match_wins_and_default_action() {
    let cfg = acl::parse(
        "access-list X extended deny tcp 10.0.0.0 255.0.0.0 any4 eq 22
access-list X extended permit ip 10.0.0.0 255.0.0.0 any4
",
    )
    .unwrap();
    for (default, nomatch) in [
        (DefaultAction::Drop, Verdict::Drop),
        (DefaultAction::Bypass, Verdict::Bypass(None)),
    ] {
        let spd = Spd::from_acl(&cfg, "X", default).unwrap();
        assert_eq!(
            spd.classify(&flow("10.1.1.1", "8.8.8.8", 6, 999, 22)),
            Verdict::Bypass(Some(RuleId(0)))
        );
        assert_eq!(
            spd.classify(&flow("10.1.1.1", "8.8.8.8", 6, 999, 23)),
            Verdict::Protect(RuleId(1))
        );
        assert_eq!(
            spd.classify(&flow("11.1.1.1", "8.8.8.8", 6, 999, 23)),
            nomatch
        );
        assert_eq!(spd.classify(&flow("10.1.1.1", "::1", 6, 999, 23)), nomatch);
    }
    assert!(Spd::from_acl(&cfg, "Y", DefaultAction::Drop).is_err());
    assert_eq!(
        Spd::default().classify(&flow("10.1.1.1", "8.8.8.8", 6, 1, 2)),
        Verdict::Drop
    );
}
