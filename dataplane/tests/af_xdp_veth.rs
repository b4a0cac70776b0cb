//! AF_XDP over a veth pair between two namespaces this test makes (root only).
//!
//! Namespace A holds the port (the "gateway"), namespace B the "host".
//! Checks the XDP program's verdicts in the kernel (BPF_PROG_TEST_RUN),
//! that ESP, ESP-in-UDP and traffic to the protected prefix arrive on
//! `rx_burst` with the right bytes, that ICMP/IKE reach the kernel, and that
//! `tx_burst` frames reach the peer. Skips with a reason when not root or
//! when AF_XDP is unavailable; with ESPGATE_CI=1 a failed set-up fails.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use espgate_dataplane::buf::{Burst, Pool, HEADROOM};
use espgate_dataplane::io::af_xdp::{interface_mac, AfXdpConfig, AfXdpPort, XdpMode};
use espgate_dataplane::io::bpf::{self, AttachMode, RedirectRules, XDP_PASS, XDP_REDIRECT};
use espgate_dataplane::io::PacketIo;

const A_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// "Protected LAN" behind A, routed from B via A.
const LAN_HOST: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 5);

fn ci() -> bool {
    std::env::var("ESPGATE_CI").is_ok_and(|v| v == "1")
}

fn skip(why: &str) {
    if ci() {
        panic!("ESPGATE_CI=1 but: {why}");
    }
    eprintln!("SKIP af_xdp_veth: {why}");
}

fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// Two namespaces and a veth pair, deleted on drop (even on panic).
struct Topo {
    a: String,
    b: String,
    va: String,
    vb: String,
}

impl Topo {
    fn new(tag: &str) -> io::Result<Topo> {
        let id = std::process::id() % 100_000;
        let t = Topo {
            a: format!("egt{id}{tag}a"),
            b: format!("egt{id}{tag}b"),
            va: format!("ex{id}{tag}a"),
            vb: format!("ex{id}{tag}b"),
        };
        ip(&["netns", "add", &t.a])?;
        ip(&["netns", "add", &t.b])?;
        ip(&[
            "link", "add", &t.va, "netns", &t.a, "type", "veth", "peer", "name", &t.vb, "netns",
            &t.b,
        ])?;
        let a_cidr = format!("{A_IP}/24");
        let b_cidr = format!("{B_IP}/24");
        ip(&["-n", &t.a, "addr", "add", &a_cidr, "dev", &t.va])?;
        ip(&["-n", &t.b, "addr", "add", &b_cidr, "dev", &t.vb])?;
        for (ns, dev) in [(&t.a, &t.va), (&t.b, &t.vb)] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        ip(&[
            "-n",
            &t.b,
            "route",
            "add",
            "10.78.0.0/24",
            "via",
            &A_IP.to_string(),
        ])?;
        Ok(t)
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth pair with it.
        let _ = ip(&["netns", "del", &self.a]);
        let _ = ip(&["netns", "del", &self.b]);
    }
}

/// Runs `f` on a thread that has entered namespace `ns`.
fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        // SAFETY: setns on a valid netns fd affects only this thread.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}: {}", io::Error::last_os_error());
        f()
    })
}

fn raw_socket(proto: i32) -> OwnedFd {
    // SAFETY: socket(2); checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, proto) };
    assert!(fd >= 0, "raw socket: {}", io::Error::last_os_error());
    // SAFETY: fresh fd.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    }
}

fn raw_send(fd: &OwnedFd, to: Ipv4Addr, payload: &[u8]) {
    let sa = sockaddr(to);
    // SAFETY: buffers valid for the call.
    let r = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            payload.as_ptr() as *const libc::c_void,
            payload.len(),
            0,
            &sa as *const _ as *const libc::sockaddr,
            std::mem::size_of_val(&sa) as u32,
        )
    };
    assert!(r >= 0, "raw sendto: {}", io::Error::last_os_error());
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// ICMP echo to `to` from this namespace; true if a reply came in 1 s.
fn icmp_echo(to: Ipv4Addr) -> bool {
    let fd = raw_socket(libc::IPPROTO_ICMP);
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    // SAFETY: option value valid for the call.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of_val(&tv) as u32,
        )
    };
    let mut req = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1, b'e', b'g'];
    let c = checksum(&req);
    req[2..4].copy_from_slice(&c.to_be_bytes());
    raw_send(&fd, to, &req);
    let start = Instant::now();
    let mut buf = [0u8; 1500];
    while start.elapsed() < Duration::from_secs(1) {
        // SAFETY: buffer valid for the call.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if n >= 28 {
            let ihl = usize::from(buf[0] & 0x0f) * 4;
            if buf[ihl] == 0 && buf[ihl + 4..ihl + 6] == [0x12, 0x34] {
                return true;
            }
        }
    }
    false
}

/// An IPv4/UDP packet (UDP checksum 0, allowed for IPv4).
fn udp_packet(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = 28 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

fn eth(ethertype: u16, ip: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[12..14].copy_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(ip);
    f
}

fn ipv6(next: u8, dst: [u8; 16], payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    p[6] = next;
    p[7] = 64;
    p[8..24].copy_from_slice(&[0xfd, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    p[24..40].copy_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

fn esp_v4(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut p = udp_packet(src, dst, 0, 0, &[0xaa; 24]);
    p[9] = 50;
    p
}

fn port_config(ifname: &str, peer_mac: [u8; 6]) -> AfXdpConfig {
    let mut cfg = AfXdpConfig::new(ifname);
    cfg.peer_mac = Some(peer_mac);
    cfg.rules.dst_prefixes = vec![
        "10.78.0.0/24".parse().unwrap(),
        "fd00:78::/64".parse().unwrap(),
    ];
    cfg.umem_chunks = 1024;
    cfg
}

fn open_port(t: &Topo) -> Option<(AfXdpPort, [u8; 6])> {
    let vb = t.vb.clone();
    let b_mac = in_ns(&t.b, move || interface_mac(&vb))
        .join()
        .unwrap()
        .expect("peer MAC");
    let cfg = port_config(&t.va, b_mac);
    match in_ns(&t.a, move || AfXdpPort::open(&cfg)).join().unwrap() {
        Ok(p) => Some((p, b_mac)),
        Err(e) => {
            skip(&format!("AF_XDP set-up failed: {e}"));
            None
        }
    }
}

fn preconditions() -> bool {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        skip_not_root();
        return false;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        skip("iproute2 `ip` not installed");
        return false;
    }
    true
}

/// BPF itself refused (no permission, not built in): a skip, not a bug.
fn bpf_unavailable(e: &bpf::BpfError) -> bool {
    match e {
        bpf::BpfError::Syscall { source, .. } => matches!(
            source.raw_os_error(),
            Some(libc::EPERM) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
        ),
        _ => false,
    }
}

fn skip_not_root() {
    // Not root is an ordinary skip even under CI (CI runs as root).
    eprintln!("SKIP af_xdp_veth: needs root (netns, veth, XDP)");
}

#[test]
fn steering_program_verdicts() {
    if !preconditions() {
        return;
    }
    let t = Topo::new("v").expect("make namespaces");
    let Some((port, _)) = open_port(&t) else {
        return;
    };
    eprintln!(
        "af_xdp: XDP attach mode {:?}, zero-copy {}",
        port.attach_mode(),
        port.is_zero_copy()
    );
    let prog = port.program();
    let run = |f: &[u8]| bpf::test_run(prog, f).expect("BPF_PROG_TEST_RUN") as i32;
    let gw = A_IP;
    let host = B_IP;
    let cases: Vec<(&str, Vec<u8>, i32)> = vec![
        ("ESP v4", eth(0x0800, &esp_v4(host, gw)), XDP_REDIRECT),
        (
            "ESP-in-UDP 4500",
            eth(
                0x0800,
                &udp_packet(host, gw, 4500, 4500, &[0, 0, 1, 0, 0, 0, 0, 1]),
            ),
            XDP_REDIRECT,
        ),
        (
            "IKE on 4500 (non-ESP marker)",
            eth(
                0x0800,
                &udp_packet(host, gw, 4500, 4500, &[0, 0, 0, 0, 1, 2]),
            ),
            XDP_PASS,
        ),
        (
            "NAT keepalive on 4500",
            eth(0x0800, &udp_packet(host, gw, 4500, 4500, &[0xff])),
            XDP_PASS,
        ),
        (
            "IKE on 500",
            eth(0x0800, &udp_packet(host, gw, 500, 500, &[0, 0, 0, 1])),
            XDP_PASS,
        ),
        (
            "UDP to protected LAN",
            eth(0x0800, &udp_packet(host, LAN_HOST, 1000, 9, &[1, 2, 3])),
            XDP_REDIRECT,
        ),
        (
            "UDP next to protected LAN",
            eth(
                0x0800,
                &udp_packet(host, Ipv4Addr::new(10, 78, 1, 5), 1000, 9, &[1]),
            ),
            XDP_PASS,
        ),
        ("ARP", eth(0x0806, &[0u8; 28]), XDP_PASS),
        ("truncated IPv4", eth(0x0800, &[0x45, 0, 0]), XDP_PASS),
        (
            "ESP v6",
            eth(
                0x86dd,
                &ipv6(
                    50,
                    [0xfd, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                    &[1; 16],
                ),
            ),
            XDP_REDIRECT,
        ),
        (
            "v6 to protected LAN",
            eth(
                0x86dd,
                &ipv6(
                    58,
                    [0xfd, 0, 0, 0x78, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5],
                    &[1; 8],
                ),
            ),
            XDP_REDIRECT,
        ),
        (
            "v6 elsewhere",
            eth(
                0x86dd,
                &ipv6(
                    58,
                    [0xfd, 0, 0, 0x79, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5],
                    &[1; 8],
                ),
            ),
            XDP_PASS,
        ),
    ];
    // IPv4 with options: the UDP header moves; the program must follow IHL.
    let mut opt = udp_packet(host, gw, 4500, 4500, &[0, 0, 1, 0, 0, 0, 0, 1]);
    opt.splice(20..20, [1u8, 1, 1, 0]);
    opt[0] = 0x46;
    let with_opts = ("ESP-in-UDP, IPv4 options", eth(0x0800, &opt), XDP_REDIRECT);
    for (what, frame, want) in cases.iter().chain(std::iter::once(&with_opts)) {
        assert_eq!(run(frame), *want, "{what}");
    }
    drop(port);
}

#[test]
fn rx_tx_over_veth() {
    if !preconditions() {
        return;
    }
    let t = Topo::new("r").expect("make namespaces");
    let Some((port, _)) = open_port(&t) else {
        return;
    };
    const N: usize = 20;
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();

    // Gateway side: kernel sockets that must get IKE, and the XSK poller.
    let gw = in_ns(&t.a, move || {
        let mut port = port;
        let ike500 = UdpSocket::bind((A_IP, 500)).unwrap();
        let ike4500 = UdpSocket::bind((A_IP, 4500)).unwrap();
        for s in [&ike500, &ike4500] {
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
        }
        let mut pool = Pool::new(256);
        go_tx.send(()).unwrap();
        let mut esp = 0;
        let mut encap = 0;
        let mut lan = 0;
        let start = Instant::now();
        let mut burst = Burst::new();
        while (esp < N || encap < N || lan < N) && start.elapsed() < Duration::from_secs(5) {
            port.rx_burst(&mut pool, &mut burst).unwrap();
            for f in burst.drain() {
                assert!(f.headroom() >= HEADROOM, "headroom kept for encap");
                let d = f.data();
                assert_eq!(d[0] >> 4, 4, "frames start at the IP header");
                match d[9] {
                    50 => {
                        assert_eq!(&d[12..16], &B_IP.octets());
                        assert_eq!(&d[20..], &[0x5a; 40][..], "ESP bytes");
                        esp += 1;
                    }
                    17 if d[22..24] == 4500u16.to_be_bytes() => {
                        assert_eq!(&d[28..], &[0x11, 0x22, 0x33, 0x44, 9, 9, 9, 9]);
                        encap += 1;
                    }
                    17 => {
                        assert_eq!(&d[16..20], &LAN_HOST.octets());
                        assert_eq!(&d[28..], b"to the protected LAN");
                        lan += 1;
                    }
                    p => panic!("unexpected protocol {p}"),
                }
                pool.put(f);
            }
            if burst.is_empty() {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        let mut buf = [0u8; 64];
        let got500 = ike500.recv(&mut buf).map(|n| buf[..n].to_vec());
        let got4500 = ike4500.recv(&mut buf).map(|n| buf[..n].to_vec());
        done_rx.recv_timeout(Duration::from_secs(5)).unwrap();

        // tx: frames built here must reach B's kernel.
        let sent_at = Instant::now();
        let mut sent = 0;
        for i in 0..N {
            let mut f = pool.get().unwrap();
            assert!(f.set_data(&udp_packet(A_IP, B_IP, 4000, 7777, &[i as u8; 16])));
            burst.push(f).unwrap();
        }
        sent += port.tx_burst(&mut pool, &mut burst).unwrap();
        // A bounded pps measurement (not asserted): many bursts of 64.
        let mut bulk = 0;
        let t0 = Instant::now();
        for _ in 0..300 {
            for _ in 0..64 {
                let mut f = pool.get().unwrap();
                f.set_data(&udp_packet(A_IP, B_IP, 4000, 7778, &[0; 32]));
                let _ = burst.push(f);
            }
            bulk += port.tx_burst(&mut pool, &mut burst).unwrap();
        }
        let tx_pps = bulk as f64 / t0.elapsed().as_secs_f64();
        let stats = port.stats();
        eprintln!(
            "af_xdp: rx {} pkts; tx {} + {bulk} pkts, ~{tx_pps:.0} pps into the tx ring (tx_dropped {}), {:?}",
            stats.rx_packets,
            sent,
            stats.tx_dropped,
            sent_at.elapsed()
        );
        (esp, encap, lan, got500, got4500, sent, port)
    });

    let host = in_ns(&t.b, move || {
        go_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let sink = UdpSocket::bind((B_IP, 7777)).unwrap();
        sink.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let esp = raw_socket(50);
        let udp = UdpSocket::bind((B_IP, 0)).unwrap();
        let ping_ok = icmp_echo(A_IP);
        for _ in 0..N {
            raw_send(&esp, A_IP, &[0x5a; 40]);
            udp.send_to(
                &[0x11, 0x22, 0x33, 0x44, 9, 9, 9, 9],
                SocketAddrV4::new(A_IP, 4500),
            )
            .unwrap();
            udp.send_to(b"to the protected LAN", SocketAddrV4::new(LAN_HOST, 9))
                .unwrap();
        }
        udp.send_to(&[0, 0, 0, 0, 0xee], SocketAddrV4::new(A_IP, 4500))
            .unwrap();
        udp.send_to(b"ike", SocketAddrV4::new(A_IP, 500)).unwrap();
        done_tx.send(()).unwrap();
        let mut got = 0;
        let mut buf = [0u8; 64];
        let start = Instant::now();
        while got < N && start.elapsed() < Duration::from_secs(5) {
            if let Ok((n, from)) = sink.recv_from(&mut buf) {
                assert_eq!(n, 16);
                assert_eq!(from, std::net::SocketAddr::from((A_IP, 4000)));
                got += 1;
            }
        }
        (ping_ok, got)
    });

    let (ping_ok, host_got) = host.join().unwrap();
    let (esp, encap, lan, got500, got4500, sent, port) = gw.join().unwrap();
    assert!(
        ping_ok,
        "ICMP echo to the gateway must be answered by the kernel"
    );
    assert_eq!(
        (esp, encap, lan),
        (N, N, N),
        "ESP / UDP 4500 / LAN packets on rx"
    );
    assert_eq!(got500.expect("IKE on 500 reaches the kernel"), b"ike");
    assert_eq!(
        got4500.expect("IKE (non-ESP marker) on 4500 reaches the kernel"),
        [0, 0, 0, 0, 0xee]
    );
    assert_eq!(sent, N);
    assert_eq!(host_got, N, "peer receives what tx_burst sent");
    drop(port);
}

/// B sends `n` ESP packets to A; A's port counts what arrives (bounded).
fn esp_roundtrip(t: &Topo, port: AfXdpPort, n: usize) -> (usize, AfXdpPort) {
    esp_roundtrip_with_pool(t, port, n, 128)
}

/// As `esp_roundtrip` with a pool of `frames` (0: every packet is dropped
/// for want of a frame, and counted).
fn esp_roundtrip_with_pool(
    t: &Topo,
    port: AfXdpPort,
    n: usize,
    frames: usize,
) -> (usize, AfXdpPort) {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let gw = in_ns(&t.a, move || {
        let mut port = port;
        let mut pool = Pool::new(frames);
        let mut burst = Burst::new();
        go_tx.send(()).unwrap();
        let mut got = 0;
        let dropped_before = port.stats().rx_dropped;
        let start = Instant::now();
        while got + ((port.stats().rx_dropped - dropped_before) as usize) < n
            && start.elapsed() < Duration::from_secs(3)
        {
            got += port.rx_burst(&mut pool, &mut burst).unwrap();
            burst.free_all(&mut pool);
            std::thread::sleep(Duration::from_micros(200));
        }
        (got, port)
    });
    let host = in_ns(&t.b, move || {
        go_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let esp = raw_socket(50);
        for _ in 0..n {
            raw_send(&esp, A_IP, &[0x5a; 40]);
        }
    });
    host.join().unwrap();
    gw.join().unwrap()
}

#[test]
fn jumbo_peer_mtu_needs_generic_xdp() {
    if !preconditions() {
        return;
    }
    let t = Topo::new("j").expect("make namespaces");
    ip(&["-n", &t.b, "link", "set", &t.vb, "mtu", "9000"]).unwrap();
    ip(&["-n", &t.a, "link", "set", &t.va, "mtu", "9000"]).unwrap();
    let vb = t.vb.clone();
    let b_mac = in_ns(&t.b, move || interface_mac(&vb))
        .join()
        .unwrap()
        .unwrap();
    let mut cfg = port_config(&t.va, b_mac);
    cfg.mode = XdpMode::Native;
    let native = {
        let cfg = cfg.clone();
        in_ns(&t.a, move || AfXdpPort::open(&cfg).map(|_| ()))
            .join()
            .unwrap()
    };
    let err = native.expect_err("native XDP on veth with a 9000-byte peer MTU");
    assert!(
        err.to_string().contains(&t.va),
        "error names the interface: {err}"
    );
    eprintln!("af_xdp: native XDP with peer MTU 9000: {err}");
    cfg.mode = XdpMode::Auto;
    let port = match in_ns(&t.a, move || AfXdpPort::open(&cfg)).join().unwrap() {
        Ok(p) => p,
        Err(e) => return skip(&format!("AF_XDP set-up failed: {e}")),
    };
    assert_eq!(
        port.attach_mode(),
        AttachMode::Skb,
        "Auto falls back to generic"
    );
    let (got, port) = esp_roundtrip(&t, port, 10);
    assert_eq!(got, 10, "generic XDP redirects to the socket too");
    drop(port);
}

#[test]
fn reopening_a_queue_right_after_close_works() {
    if !preconditions() {
        return;
    }
    let t = Topo::new("o").expect("make namespaces");
    for round in 0..3 {
        let Some((port, _)) = open_port(&t) else {
            return;
        };
        let (got, port) = esp_roundtrip(&t, port, 5);
        assert_eq!(got, 5, "round {round}");
        // Dropping closes the socket and the BPF link; the next open binds
        // the same queue and attaches a new program at once.
        drop(port);
    }
}

fn link_xdp_state(ns: &str, dev: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", ns, "-d", "link", "show", dev])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn netlink_attach_fallback_detaches_on_drop() {
    if !preconditions() {
        return;
    }
    let t = Topo::new("n").expect("make namespaces");
    let va = t.va.clone();
    let res = in_ns(&t.a, move || -> Result<bool, bpf::BpfError> {
        let map = bpf::XskMap::create(1)?;
        let insns = bpf::redirect_program(map.as_raw_fd(), &RedirectRules::default())?;
        let prog = bpf::XdpProgram::load(&insns)?;
        let c = std::ffi::CString::new(va).unwrap();
        // SAFETY: valid C string.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
        let att = bpf::XdpAttachment::attach_netlink(&prog, ifindex, AttachMode::Skb)?;
        Ok(!att.is_link())
    })
    .join()
    .unwrap();
    match res {
        Ok(netlink) => assert!(netlink),
        Err(e) if bpf_unavailable(&e) => return skip(&format!("BPF unavailable: {e}")),
        Err(e) => panic!("netlink attach: {e}"),
    }
    // The attachment was dropped when the thread returned.
    assert!(
        !link_xdp_state(&t.a, &t.va).contains("xdpgeneric"),
        "program detached on drop"
    );
    // And while attached, `ip` shows it (attach again and look).
    let va = t.va.clone();
    let (ns, dev) = (t.a.clone(), t.va.clone());
    in_ns(&t.a, move || {
        let map = bpf::XskMap::create(1).unwrap();
        let insns = bpf::redirect_program(map.as_raw_fd(), &RedirectRules::default()).unwrap();
        let prog = bpf::XdpProgram::load(&insns).unwrap();
        let c = std::ffi::CString::new(va).unwrap();
        // SAFETY: valid C string.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
        let _att = bpf::XdpAttachment::attach_netlink(&prog, ifindex, AttachMode::Skb).unwrap();
        assert!(link_xdp_state(&ns, &dev).contains("xdpgeneric"));
    })
    .join()
    .unwrap();
}

#[test]
fn verifier_log_comes_back_in_the_error() {
    if !preconditions() {
        return;
    }
    // r0 is never set before exit: the verifier must refuse.
    let mut a = bpf::Asm::new();
    a.exit();
    let insns = a.finish().unwrap();
    match bpf::XdpProgram::load(&insns) {
        Ok(_) => panic!("verifier accepted a program that returns an unset r0"),
        Err(bpf::BpfError::Verifier { log, .. }) => {
            assert!(log.contains("R0"), "log: {log}");
        }
        Err(e) if bpf_unavailable(&e) => skip(&format!("BPF unavailable: {e}")),
        Err(e) => panic!("expected a verifier error, got {e}"),
    }
}

#[test]
fn rx_throughput_is_measured() {
    if !preconditions() {
        return;
    }
    let t = Topo::new("p").expect("make namespaces");
    let Some((port, _)) = open_port(&t) else {
        return;
    };
    const N: usize = 20_000;
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let gw = in_ns(&t.a, move || {
        let mut port = port;
        let mut pool = Pool::new(256);
        let mut burst = Burst::new();
        go_tx.send(()).unwrap();
        let mut got = 0;
        let mut first = None;
        let start = Instant::now();
        let mut idle = Instant::now();
        while got < N && start.elapsed() < Duration::from_secs(5) {
            let n = port.rx_burst(&mut pool, &mut burst).unwrap();
            burst.free_all(&mut pool);
            if n > 0 {
                first.get_or_insert_with(Instant::now);
                got += n;
                idle = Instant::now();
            } else if first.is_some() && idle.elapsed() > Duration::from_millis(300) {
                break;
            }
        }
        let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
        (got, secs, port.kernel_rx_dropped(), port)
    });
    let host = in_ns(&t.b, move || {
        go_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let udp = UdpSocket::bind((B_IP, 0)).unwrap();
        let t0 = Instant::now();
        for i in 0..N {
            let _ = udp.send_to(&(i as u32).to_be_bytes(), SocketAddrV4::new(LAN_HOST, 9));
        }
        t0.elapsed().as_secs_f64()
    });
    let send_secs = host.join().unwrap();
    let (got, secs, kdrop, port) = gw.join().unwrap();
    eprintln!(
        "af_xdp rx: {got}/{N} packets in {secs:.3} s = {:.0} pps (sender {:.0} pps, kernel drops {kdrop})",
        got as f64 / secs.max(1e-9),
        N as f64 / send_secs.max(1e-9)
    );
    assert!(got > 0, "bulk traffic reaches the socket");
    drop(port);
}

#[test]
fn rx_chunks_are_recycled_even_when_frames_run_out() {
    if !preconditions() {
        return;
    }
    let t = Topo::new("c").expect("make namespaces");
    let vb = t.vb.clone();
    let b_mac = in_ns(&t.b, move || interface_mac(&vb))
        .join()
        .unwrap()
        .unwrap();
    let mut cfg = port_config(&t.va, b_mac);
    cfg.umem_chunks = 128; // 64 rx chunks: each batch below needs them back
    let port = match in_ns(&t.a, move || AfXdpPort::open(&cfg)).join().unwrap() {
        Ok(p) => p,
        Err(e) => return skip(&format!("AF_XDP set-up failed: {e}")),
    };
    let (got, port) = esp_roundtrip_with_pool(&t, port, 50, 0);
    assert_eq!(got, 0);
    assert_eq!(port.stats().rx_dropped, 50, "no frame: counted drop");
    let (got, port) = esp_roundtrip_with_pool(&t, port, 50, 128);
    assert_eq!(
        got, 50,
        "chunks of dropped packets went back to the fill ring"
    );
    let (got, port) = esp_roundtrip_with_pool(&t, port, 50, 128);
    assert_eq!(got, 50);
    drop(port);
}
