//! TUN backend in a private network namespace (root only; otherwise the
//! test prints why it skipped, and fails under ESPGATE_CI=1).

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use espgate_dataplane::buf::{Burst, Pool, PortId};
use espgate_dataplane::io::tun::TunPort;
use espgate_dataplane::io::PacketIo;

fn skip(why: &str) {
    if std::env::var("ESPGATE_CI").as_deref() == Ok("1") {
        panic!("io_tun cannot run: {why}");
    }
    eprintln!("SKIP io_tun: {why}");
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// IPv4 + UDP packet 10.77.0.2:7000 → 10.77.0.1:`dport` with `payload`;
/// the UDP checksum is 0 (allowed for IPv4).
fn udp_packet(dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = 28 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 77, 0, 2]);
    p[16..20].copy_from_slice(&[10, 77, 0, 1]);
    let mut sum: u32 = p[..20]
        .chunks(2)
        .map(|w| u16::from_be_bytes([w[0], w[1]]) as u32)
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p[20..22].copy_from_slice(&7000u16.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

#[test]
fn tun_moves_packets_both_ways_in_a_private_netns() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip("needs root (CAP_NET_ADMIN) to create a TUN device");
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return skip("the `ip` tool (iproute2) is missing");
    }
    // The namespace belongs to this thread only and disappears with it.
    let r = std::thread::spawn(|| -> Result<(), String> {
        // SAFETY: unshare affects only the calling thread's namespaces.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut tun = TunPort::open("espgt0", PortId(1)).map_err(|e| e.to_string())?;
        assert_eq!(tun.name(), "espgt0");
        assert!(ip(&["link", "set", "lo", "up"]));
        assert!(ip(&["addr", "add", "10.77.0.1/24", "dev", "espgt0"]));
        assert!(ip(&["link", "set", "espgt0", "up"]));
        let mut pool = Pool::new(64);

        // Kernel → TUN: a datagram routed into the device shows up in rx.
        let sock = UdpSocket::bind("10.77.0.1:6000").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = None;
        while got.is_none() && Instant::now() < deadline {
            sock.send_to(b"to-the-lan", "10.77.0.2:5000").unwrap();
            std::thread::sleep(Duration::from_millis(20));
            let mut b = Burst::new();
            tun.rx_burst(&mut pool, &mut b).unwrap();
            got = b
                .frames()
                .iter()
                .find(|f| f.data().len() > 28 && f.data()[9] == 17)
                .map(|f| f.data().to_vec());
            assert!(b.frames().iter().all(|f| f.port == PortId(1)));
            b.free_all(&mut pool);
        }
        let pkt = got.expect("UDP packet read from the TUN");
        assert_eq!(pkt[0] >> 4, 4, "no packet-info prefix (IFF_NO_PI)");
        assert_eq!(&pkt[16..20], &[10, 77, 0, 2]);
        assert_eq!(&pkt[28..], b"to-the-lan");

        // TUN → kernel: a packet we write is delivered to the socket.
        let mut b = Burst::new();
        let mut f = pool.get().unwrap();
        f.set_data(&udp_packet(6000, b"from-the-lan"));
        b.push(f).unwrap();
        assert_eq!(tun.tx_burst(&mut pool, &mut b).unwrap(), 1);
        let mut buf = [0u8; 64];
        let (n, from) = sock.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"from-the-lan");
        assert_eq!(from, "10.77.0.2:7000".parse().unwrap());

        // A garbage write is counted, not fatal.
        let mut f = pool.get().unwrap();
        f.set_data(&[0xff; 3]);
        b.push(f).unwrap();
        tun.tx_burst(&mut pool, &mut b).unwrap();
        let s = tun.stats();
        assert_eq!(s.tx_packets + s.tx_dropped, 2);
        assert_eq!(pool.available(), 64);
        Ok(())
    })
    .join()
    .expect("tun thread");
    if let Err(why) = r {
        skip(&why);
    }
}

#[test]
fn bad_names_are_refused() {
    assert!(TunPort::open("", PortId(0)).is_err());
    assert!(TunPort::open("a-name-much-too-long-for-ifnamsiz", PortId(0)).is_err());
}
