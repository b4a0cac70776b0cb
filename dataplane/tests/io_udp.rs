//! The UDP (ESP-in-UDP) backend over loopback: header synthesis on rx,
//! stripping on tx, GSO trains, and the shared IKE channel.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use espgate_dataplane::buf::{Burst, Pool, PortId};
use espgate_dataplane::io::udp::{IkeDatagram, UdpConfig, UdpPort};
use espgate_dataplane::io::PacketIo;

fn port() -> (UdpPort, espgate_dataplane::io::udp::IkeChannel) {
    let mut cfg = UdpConfig::new("127.0.0.1:0".parse().unwrap());
    cfg.port = PortId(3);
    UdpPort::bind(&cfg).expect("bind on loopback")
}

/// An outer IPv4 + UDP packet as ESP encap would write it.
fn outer(dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 28];
    p[0] = 0x45;
    p[9] = 17;
    p[12..16].copy_from_slice(&[127, 0, 0, 1]);
    match dst {
        SocketAddr::V4(a) => p[16..20].copy_from_slice(&a.ip().octets()),
        SocketAddr::V6(_) => unreachable!(),
    }
    p[20..22].copy_from_slice(&4500u16.to_be_bytes());
    p[22..24].copy_from_slice(&dst.port().to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// Receives until `want` frames arrived or 10 s passed (bounded loop).
fn rx_until(port: &mut UdpPort, pool: &mut Pool, want: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < want && Instant::now() < deadline {
        let mut b = Burst::new();
        port.rx_burst(pool, &mut b).unwrap();
        for f in b.drain() {
            assert_eq!(f.port, PortId(3));
            got.push(f.data().to_vec());
            pool.put(f);
        }
        if got.len() < want {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    got
}

#[test]
fn esp_datagrams_cross_with_synthesized_headers() {
    let (mut a, _ca) = port();
    let (mut b, _cb) = port();
    let mut pa = Pool::new(256);
    let mut pb = Pool::new(256);
    let mut burst = Burst::new();
    // 40 same-size datagrams (one GSO train if the kernel allows) + 1 short.
    for i in 0..40u32 {
        let mut f = pa.get().unwrap();
        let mut payload = vec![0xab; 200];
        payload[..4].copy_from_slice(&(0x1000 + i).to_be_bytes()); // an SPI-like start
        assert!(f.set_data(&outer(b.local_addr(), &payload)));
        burst.push(f).unwrap();
    }
    let mut f = pa.get().unwrap();
    f.set_data(&outer(b.local_addr(), &[0, 0, 0x20, 1, 9]));
    burst.push(f).unwrap();
    assert_eq!(a.tx_burst(&mut pa, &mut burst).unwrap(), 41);
    assert_eq!(pa.available(), 256, "frames return to the pool");
    if a.max_gso_segments() > 1 {
        assert!(a.udp_stats().gso_batches >= 1, "{:?}", a.udp_stats());
        assert!(a.udp_stats().send_calls < 41);
    } else {
        eprintln!("GSO unavailable here: one sendmsg per datagram");
    }

    let got = rx_until(&mut b, &mut pb, 41);
    assert_eq!(got.len(), 41);
    for (i, p) in got.iter().take(40).enumerate() {
        assert_eq!(p.len(), 28 + 200);
        assert_eq!(p[0], 0x45);
        assert_eq!(p[9], 17);
        assert_eq!(&p[12..16], &[127, 0, 0, 1], "source from the datagram");
        assert_eq!(&p[16..20], &[127, 0, 0, 1], "destination from pktinfo");
        assert_eq!(u16::from_be_bytes([p[20], p[21]]), a.local_addr().port());
        assert_eq!(u16::from_be_bytes([p[22], p[23]]), b.local_addr().port());
        assert_eq!(u16::from_be_bytes([p[24], p[25]]), 208);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 228);
        assert_eq!(&p[28..32], &(0x1000 + i as u32).to_be_bytes(), "order kept");
    }
    assert_eq!(&got[40][28..], &[0, 0, 0x20, 1, 9]);
    assert_eq!(b.stats().rx_packets, 41);
    assert_eq!(a.stats().tx_packets, 41);
}

#[test]
fn non_udp_frames_are_counted_not_sent() {
    let (mut a, _c) = port();
    let mut pool = Pool::new(8);
    let mut burst = Burst::new();
    let mut f = pool.get().unwrap();
    let mut raw = outer("127.0.0.1:9".parse().unwrap(), &[1, 2, 3, 4]);
    raw[9] = 50; // raw ESP cannot go out of a UDP socket
    f.set_data(&raw);
    burst.push(f).unwrap();
    assert_eq!(a.tx_burst(&mut pool, &mut burst).unwrap(), 0);
    assert_eq!(a.udp_stats().tx_not_udp, 1);
    assert_eq!(a.stats().tx_dropped, 1);
    assert_eq!(pool.available(), 8);
}

#[test]
fn ike_shares_the_socket_through_the_channel() {
    let (mut p, chan) = port();
    let mut pool = Pool::new(16);
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // IKE (non-ESP marker) and a NAT keepalive: neither becomes a frame.
    peer.send_to(&[0, 0, 0, 0, 0xde, 0xad], p.local_addr())
        .unwrap();
    peer.send_to(&[0xff], p.local_addr()).unwrap();
    peer.send_to(&[0, 0, 1, 0, 0, 0, 0, 1], p.local_addr())
        .unwrap();
    let got = rx_until(&mut p, &mut pool, 1);
    assert_eq!(got.len(), 1, "only the ESP datagram is a frame");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ike = None;
    while ike.is_none() && Instant::now() < deadline {
        let mut b = Burst::new();
        p.rx_burst(&mut pool, &mut b).unwrap();
        b.free_all(&mut pool);
        ike = chan.rx.try_recv().ok();
    }
    let ike = ike.expect("IKE datagram reaches the control plane");
    assert_eq!(
        ike.data,
        vec![0, 0, 0, 0, 0xde, 0xad],
        "whole datagram, marker kept"
    );
    assert_eq!(ike.remote, peer.local_addr().unwrap());
    assert_eq!(ike.local.port(), p.local_addr().port());
    assert_eq!(p.udp_stats().keepalives, 1);

    // Control plane → peer: sent as given (the IKE machine adds the marker).
    chan.tx
        .send(IkeDatagram {
            local: p.local_addr(),
            remote: peer.local_addr().unwrap(),
            data: vec![0, 0, 0, 0, 1, 2, 3],
        })
        .unwrap();
    let mut b = Burst::new();
    p.tx_burst(&mut pool, &mut b).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(from, p.local_addr());
    assert_eq!(&buf[..n], &[0, 0, 0, 0, 1, 2, 3]);
    assert_eq!(p.udp_stats().ike_tx, 1);
}

#[test]
fn ipv6_outer_headers() {
    let cfg = UdpConfig::new("[::1]:0".parse().unwrap());
    let Ok((mut a, _ca)) = UdpPort::bind(&cfg) else {
        eprintln!("SKIP ipv6_outer_headers: no IPv6 loopback");
        return;
    };
    let (mut b, _cb) = UdpPort::bind(&cfg).unwrap();
    let mut pool = Pool::new(16);
    let mut pkt = vec![0u8; 48];
    pkt[0] = 0x60;
    pkt[6] = 17;
    pkt[24..40].copy_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    pkt[42..44].copy_from_slice(&b.local_addr().port().to_be_bytes());
    pkt.extend_from_slice(&[0, 0, 0x10, 0, 1, 2, 3, 4]);
    let mut burst = Burst::new();
    let mut f = pool.get().unwrap();
    f.set_data(&pkt);
    burst.push(f).unwrap();
    assert_eq!(a.tx_burst(&mut pool, &mut burst).unwrap(), 1);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.is_empty() && Instant::now() < deadline {
        b.rx_burst(&mut pool, &mut burst).unwrap();
        for f in burst.drain() {
            got.push(f.data().to_vec());
            pool.put(f);
        }
    }
    let p = &got[0];
    assert_eq!(p.len(), 48 + 8);
    assert_eq!(p[0] >> 4, 6);
    assert_eq!(u16::from_be_bytes([p[4], p[5]]), 16, "payload length = UDP");
    assert_eq!(p[6], 17);
    assert_eq!(&p[8..24], &std::net::Ipv6Addr::LOCALHOST.octets());
    assert_eq!(u16::from_be_bytes([p[40], p[41]]), a.local_addr().port());
    assert_eq!(&p[48..], &[0, 0, 0x10, 0, 1, 2, 3, 4]);
}

/// Not a test of speed (nothing is asserted about time): prints packets
/// per second over loopback. `cargo test --release -p espgate-dataplane
/// --test io_udp -- --ignored --nocapture`
#[test]
#[ignore]
fn report_loopback_rate() {
    let (mut a, _ca) = port();
    let (mut b, _cb) = port();
    let mut pa = Pool::new(512);
    let mut pb = Pool::new(512);
    let payload = vec![0x11u8; 1400];
    let pkt = outer(b.local_addr(), &payload);
    let total = 200_000usize;
    let (mut sent, mut recvd) = (0usize, 0usize);
    let start = Instant::now();
    while recvd < total && start.elapsed() < Duration::from_secs(20) {
        let mut burst = Burst::new();
        while sent < total && !burst.is_full() {
            let mut f = pa.get().unwrap();
            f.set_data(&pkt);
            burst.push(f).unwrap();
            sent += 1;
        }
        a.tx_burst(&mut pa, &mut burst).unwrap();
        let mut rx = Burst::new();
        recvd += b.rx_burst(&mut pb, &mut rx).unwrap();
        rx.free_all(&mut pb);
        if sent >= total && b.stats().rx_packets as usize == recvd {
            // Let the socket drain; stop when nothing more arrives.
            let mut rx = Burst::new();
            let n = b.rx_burst(&mut pb, &mut rx).unwrap();
            rx.free_all(&mut pb);
            recvd += n;
            if n == 0 {
                std::thread::sleep(Duration::from_millis(5));
                let n = b.rx_burst(&mut pb, &mut rx).unwrap();
                rx.free_all(&mut pb);
                recvd += n;
                if n == 0 {
                    break;
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let s = a.udp_stats();
    eprintln!(
        "udp loopback: sent {} recv {} in {secs:.2}s = {:.2} Mpps, {:.2} Gbit/s payload; sendmsg calls {} (gso trains {}), recvmmsg calls {}, tx_dropped {}",
        a.stats().tx_packets,
        recvd,
        recvd as f64 / secs / 1e6,
        recvd as f64 * 1400.0 * 8.0 / secs / 1e9,
        s.send_calls,
        s.gso_batches,
        b.udp_stats().recv_calls,
        a.stats().tx_dropped
    );
}
