//! Traffic selector ↔ dataplane `Selector` conversions.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use espgate_controlplane::error::SelectorError;
use espgate_controlplane::ike::payload::*;
use espgate_dataplane::api::Selector;
use ipnet::IpNet;

fn v4(s: [u8; 4], e: [u8; 4]) -> TrafficSelector {
    TrafficSelector {
        ip_proto: 0,
        start_port: 0,
        end_port: 65535,
        addrs: AddrRange::V4(Ipv4Addr::from(s), Ipv4Addr::from(e)),
    }
}

#[test]
fn prefixes_convert_exactly() {
    for net in [
        "10.1.0.0/24",
        "0.0.0.0/0",
        "192.0.2.7/32",
        "2001:db8::/32",
        "::/0",
        "2001:db8::1/128",
    ] {
        let net: IpNet = net.parse().unwrap();
        let ts = TrafficSelector::from_net(net, 0, 0..=65535);
        assert_eq!(ts.to_net(), Ok(net));
        assert_eq!(ts.covering_net(), Ok(net));
        assert_eq!(
            ts.ts_type(),
            if net.addr().is_ipv4() {
                TsType::TS_IPV4_ADDR_RANGE
            } else {
                TsType::TS_IPV6_ADDR_RANGE
            }
        );
    }
    // A host address not at the network start is truncated by from_net.
    let ts = TrafficSelector::from_net("10.1.0.9/24".parse().unwrap(), 0, 0..=65535);
    assert_eq!(ts.start_addr(), IpAddr::V4(Ipv4Addr::new(10, 1, 0, 0)));
    assert_eq!(ts.end_addr(), IpAddr::V4(Ipv4Addr::new(10, 1, 0, 255)));
}

#[test]
fn non_prefix_ranges() {
    let ts = v4([10, 0, 0, 1], [10, 0, 0, 5]);
    assert_eq!(
        ts.to_net(),
        Err(SelectorError::NotPrefix {
            start: Ipv4Addr::new(10, 0, 0, 1).into(),
            end: Ipv4Addr::new(10, 0, 0, 5).into()
        })
    );
    assert_eq!(ts.covering_net(), Ok("10.0.0.0/29".parse().unwrap()));
    // Aligned start but end one short of the prefix end.
    let ts = v4([10, 0, 0, 0], [10, 0, 0, 254]);
    assert!(ts.to_net().is_err());
    assert_eq!(ts.covering_net(), Ok("10.0.0.0/24".parse().unwrap()));
    let v6 = TrafficSelector {
        ip_proto: 0,
        start_port: 0,
        end_port: 65535,
        addrs: AddrRange::V6(
            "2001:db8::1".parse().unwrap(),
            "2001:db8::1:0".parse::<Ipv6Addr>().unwrap(),
        ),
    };
    assert!(matches!(v6.to_net(), Err(SelectorError::NotPrefix { .. })));
    assert_eq!(v6.covering_net(), Ok("2001:db8::/111".parse().unwrap()));
}

#[test]
fn empty_ranges() {
    let ts = v4([10, 0, 0, 5], [10, 0, 0, 1]);
    assert!(matches!(
        ts.to_net(),
        Err(SelectorError::EmptyAddrRange { .. })
    ));
    let mut ts = v4([10, 0, 0, 0], [10, 0, 0, 255]);
    ts.start_port = 65535;
    ts.end_port = 0; // RFC 7296 §3.13.1 OPAQUE
    assert_eq!(
        ts.ports(),
        Err(SelectorError::EmptyPortRange {
            start: 65535,
            end: 0
        })
    );
    assert!(selector_from_ts(&ts, &v4([0; 4], [255; 4])).is_err());
}

#[test]
fn pair_to_selector() {
    let mut src = v4([10, 1, 0, 0], [10, 1, 0, 255]);
    let mut dst = v4([10, 2, 0, 0], [10, 2, 0, 255]);
    let sel = selector_from_ts(&src, &dst).unwrap();
    assert_eq!(
        sel,
        Selector::between(
            "10.1.0.0/24".parse().unwrap(),
            "10.2.0.0/24".parse().unwrap()
        )
    );
    dst.ip_proto = 6;
    dst.start_port = 443;
    dst.end_port = 443;
    let sel = selector_from_ts(&src, &dst).unwrap();
    assert_eq!(sel.proto, Some(6));
    assert_eq!(sel.dst_ports, 443..=443);
    assert_eq!(sel.src_ports, 0..=65535);
    src.ip_proto = 17;
    assert_eq!(
        selector_from_ts(&src, &dst),
        Err(SelectorError::ProtoMismatch { src: 17, dst: 6 })
    );
    let v6 = TrafficSelector::from_net("2001:db8::/64".parse().unwrap(), 0, 0..=65535);
    assert_eq!(
        selector_from_ts(&v6, &dst),
        Err(SelectorError::FamilyMismatch)
    );
}

#[test]
fn selector_round_trip() {
    let sel = Selector {
        src: "192.168.10.0/24".parse().unwrap(),
        dst: "172.16.0.0/12".parse().unwrap(),
        proto: Some(17),
        src_ports: 500..=500,
        dst_ports: 1000..=2000,
    };
    let (s, d) = ts_from_selector(&sel);
    assert_eq!(s.ip_proto, 17);
    assert_eq!(selector_from_ts(&s, &d), Ok(sel.clone()));
    assert_eq!(selector_from_ts(&d, &s), Ok(sel.reversed()));
}
