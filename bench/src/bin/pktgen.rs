//! Bounded UDP load generator and sink for the veth load test.
//!
//! ```text
//! pktgen send --dst IP:PORT [--bind IP] [--size 64|512|1400|imix]
//!             [--count N] [--duration SECS] [--rate PPS] [--flow K] [--batch N]
//!             [--ports N]
//! pktgen sink --bind IP:PORT [--duration SECS] [--idle SECS] [--flows N] [--max-seq N]
//! ```
//!
//! `send` writes a probe (flow, sequence number, `CLOCK_MONOTONIC` send
//! time; see `espgate_bench::loadtest`) into every packet and sends them with
//! `sendmmsg` in batches, at `--rate` packets per second (0 = as fast as the
//! socket takes them). It stops at `--count` packets or `--duration`
//! seconds, whichever comes first; both are capped (`MAX_COUNT`,
//! `MAX_SECS`). `--size` is the IP packet length (IPv4 + UDP + payload).
//! Only private or loopback IPv4 destinations are accepted, and never from
//! the host's own network namespace (unless the destination is loopback):
//! the load test runs inside namespaces it creates.
//!
//! `--ports N` sends from N sockets (N source ports), batch by batch in
//! turn: one flow's packets then hash to several queues of a multi-queue
//! interface, as the many connections inside one real tunnel do. Sequence
//! numbers stay per flow, so what the queues reorder shows up as late.
//!
//! `sink` counts what arrives: delivered packets and IP bytes, duplicates,
//! late (reordered) packets and gaps per flow, and one-way latency from the
//! probes' send times. It stops `--idle` seconds after the last packet (once
//! one arrived) or at `--duration`.
//!
//! Both print one JSON line of results on stdout.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use espgate_bench::loadtest::{
    in_init_netns, is_test_address, monotonic_ns, LatencyHist, Opts, Probe, SeqTracker, SeqVerdict,
    SizeMix, IP_UDP_OVERHEAD, MAX_IP_LEN,
};

/// Hard caps: no run sends more or longer than this, whatever it is asked.
const MAX_COUNT: u64 = 500_000_000;
const MAX_SECS: f64 = 300.0;
const MAX_BATCH: usize = 64;
const MAX_FLOWS: usize = 8;
const RX_BUF: usize = 2048;
/// `SO_NO_CHECK` (asm-generic/socket.h; not exported by libc for x86).
const SO_NO_CHECK: i32 = 11;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.split_first() {
        Some((mode, rest)) if mode == "send" => Opts::parse(rest).and_then(|o| send(&o)),
        Some((mode, rest)) if mode == "sink" => Opts::parse(rest).and_then(|o| sink(&o)),
        _ => Err("usage: pktgen send --dst IP:PORT ... | pktgen sink --bind IP:PORT ...".into()),
    };
    match result {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("pktgen: {e}");
            std::process::exit(2);
        }
    }
}

fn setsockopt_int(fd: i32, level: i32, name: i32, value: i32) -> std::io::Result<()> {
    // SAFETY: `value` outlives the call; the length matches its type.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn secs_opt(o: &Opts, key: &str, default: f64) -> Result<f64, String> {
    let s: f64 = o.get(key, default)?;
    if !(s > 0.0 && s <= MAX_SECS) {
        return Err(format!(
            "--{key}: 0 < seconds <= {MAX_SECS} expected, got {s}"
        ));
    }
    Ok(s)
}

fn send(o: &Opts) -> Result<String, String> {
    let unknown = o.unknown(&[
        "dst", "bind", "size", "count", "duration", "rate", "flow", "batch", "ports",
    ]);
    if !unknown.is_empty() {
        return Err(format!("unknown options: {unknown:?}"));
    }
    let dst: SocketAddr = o
        .required("dst")?
        .parse()
        .map_err(|_| "--dst: IPv4:PORT expected".to_string())?;
    let IpAddr::V4(dst_ip) = dst.ip() else {
        return Err("--dst: only IPv4 destinations".into());
    };
    if !is_test_address(dst.ip()) {
        return Err(format!(
            "--dst {dst}: only private or loopback destinations"
        ));
    }
    if in_init_netns() && !dst_ip.is_loopback() {
        return Err("refusing to send from the host's network namespace; run inside a test namespace (ip netns exec)".into());
    }
    let bind: Ipv4Addr = o.get("bind", Ipv4Addr::UNSPECIFIED)?;
    let mix = SizeMix::parse(o.str("size").unwrap_or("1400"))?;
    let count: u64 = o.get("count", MAX_COUNT)?;
    if count == 0 || count > MAX_COUNT {
        return Err(format!("--count: 1..={MAX_COUNT} expected"));
    }
    let secs = secs_opt(o, "duration", 5.0)?;
    let rate: u64 = o.get("rate", 0)?;
    let flow: u32 = o.get("flow", 0)?;
    if flow as usize >= MAX_FLOWS {
        return Err(format!("--flow: 0..{MAX_FLOWS} expected"));
    }
    let batch: usize = o.get("batch", 32)?;
    if batch == 0 || batch > MAX_BATCH {
        return Err(format!("--batch: 1..={MAX_BATCH} expected"));
    }

    let nports: usize = o.get("ports", 1)?;
    if nports == 0 || nports > 64 {
        return Err("--ports: 1..=64 expected".into());
    }
    let mut socks = Vec::with_capacity(nports);
    for _ in 0..nports {
        let sock = UdpSocket::bind((bind, 0)).map_err(|e| format!("bind {bind}: {e}"))?;
        sock.connect(dst)
            .map_err(|e| format!("connect {dst}: {e}"))?;
        let fd = sock.as_raw_fd();
        // No DF bit: a gateway with a smaller MTU fragments instead of dropping.
        setsockopt_int(
            fd,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DONT,
        )
        .map_err(|e| format!("IP_MTU_DISCOVER: {e}"))?;
        // No UDP checksum (0 = none, valid in IPv4). veth offloads tx
        // checksums: the sender leaves a partial sum for the "NIC" to
        // finish, which AF_XDP copy mode forwards unfinished, and the sink's
        // kernel then drops every packet (UdpInCsumErrors). A real NIC
        // would finish it.
        setsockopt_int(fd, libc::SOL_SOCKET, SO_NO_CHECK, 1)
            .map_err(|e| format!("SO_NO_CHECK: {e}"))?;
        let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 4 << 20);
        socks.push(sock);
    }
    let fds: Vec<i32> = socks.iter().map(|s| s.as_raw_fd()).collect();
    let mut turn = 0usize;
    // Short sleeps when pacing should not be stretched by timer slack.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000u64, 0u64, 0u64, 0u64) };

    let mut bufs = vec![[0u8; MAX_IP_LEN]; MAX_BATCH];
    // SAFETY: iovec and mmsghdr are plain C structs; all-zero is valid.
    let mut iovs: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; MAX_BATCH];
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; MAX_BATCH];

    let start = monotonic_ns();
    let deadline = start + (secs * 1e9) as u64;
    let (mut seq, mut ip_bytes, mut errors) = (0u64, 0u64, 0u64);
    loop {
        if seq >= count {
            break;
        }
        let now = monotonic_ns();
        if now >= deadline {
            break;
        }
        let mut n = batch.min((count - seq) as usize);
        if rate > 0 {
            let due = ((now - start) as u128 * rate as u128 / 1_000_000_000) as u64 + 1;
            let allowed = due.saturating_sub(seq);
            if allowed == 0 {
                let next = start + (seq as u128 * 1_000_000_000 / rate as u128) as u64;
                let wait = next.saturating_sub(now).min(deadline - now);
                if wait > 50_000 {
                    std::thread::sleep(Duration::from_nanos(wait.min(1_000_000) - 20_000));
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            n = n.min(allowed as usize);
        }
        for i in 0..n {
            let s = seq + i as u64;
            let len = mix.ip_len(s) - IP_UDP_OVERHEAD;
            Probe {
                flow,
                seq: s,
                ts_ns: now,
            }
            .write(&mut bufs[i]);
            iovs[i].iov_base = bufs[i].as_mut_ptr() as *mut libc::c_void;
            iovs[i].iov_len = len;
            msgs[i].msg_hdr.msg_iov = &mut iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_len = 0;
        }
        let fd = fds[turn % nports];
        turn = turn.wrapping_add(1);
        // SAFETY: `msgs[..n]` point at `iovs`/`bufs`, alive for the call.
        let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as u32, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOBUFS)
                | Some(libc::EAGAIN)
                | Some(libc::ECONNREFUSED)
                | Some(libc::EINTR)
                | Some(libc::EHOSTUNREACH)
                | Some(libc::ENETUNREACH) => {
                    errors += 1;
                    std::thread::yield_now();
                    continue;
                }
                _ => return Err(format!("sendmmsg: {e}")),
            }
        }
        for iov in &iovs[..r as usize] {
            ip_bytes += (iov.iov_len + IP_UDP_OVERHEAD) as u64;
        }
        seq += r as u64;
    }
    let secs_run = (monotonic_ns() - start) as f64 / 1e9;
    Ok(format!(
        "{{\"role\":\"send\",\"flow\":{flow},\"size\":\"{}\",\"dst\":\"{dst}\",\"rate\":{rate},\"ports\":{nports},\"sent\":{seq},\"ip_bytes\":{ip_bytes},\"secs\":{secs_run:.6},\"pps\":{:.1},\"gbps\":{:.6},\"errors\":{errors}}}",
        mix.label(),
        seq as f64 / secs_run,
        ip_bytes as f64 * 8.0 / secs_run / 1e9,
    ))
}

fn sink(o: &Opts) -> Result<String, String> {
    let unknown = o.unknown(&["bind", "duration", "idle", "flows", "max-seq"]);
    if !unknown.is_empty() {
        return Err(format!("unknown options: {unknown:?}"));
    }
    let bind: SocketAddr = o
        .required("bind")?
        .parse()
        .map_err(|_| "--bind: IP:PORT expected".to_string())?;
    let secs = secs_opt(o, "duration", 30.0)?;
    let idle = secs_opt(o, "idle", 1.0)?;
    let flows: usize = o.get("flows", 2)?;
    if flows == 0 || flows > MAX_FLOWS {
        return Err(format!("--flows: 1..={MAX_FLOWS} expected"));
    }
    let max_seq: u64 = o.get("max-seq", 1 << 26)?;
    if max_seq == 0 || max_seq > 1 << 30 {
        return Err("--max-seq: 1..=2^30 expected".into());
    }

    let sock = UdpSocket::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
    let fd = sock.as_raw_fd();
    let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 64 << 20);
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| format!("SO_RCVTIMEO: {e}"))?;

    let mut trackers: Vec<SeqTracker> = (0..flows).map(|_| SeqTracker::new(max_seq)).collect();
    let mut hist = LatencyHist::new();
    let mut bufs = vec![[0u8; RX_BUF]; MAX_BATCH];
    // SAFETY: plain C structs; all-zero is valid.
    let mut iovs: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; MAX_BATCH];
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; MAX_BATCH];
    for i in 0..MAX_BATCH {
        iovs[i].iov_base = bufs[i].as_mut_ptr() as *mut libc::c_void;
        iovs[i].iov_len = RX_BUF;
        msgs[i].msg_hdr.msg_iov = &mut iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }

    let start = monotonic_ns();
    let deadline = start + (secs * 1e9) as u64;
    let idle_ns = (idle * 1e9) as u64;
    let (mut received, mut dup, mut late, mut bad, mut out_of_range, mut ip_bytes) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut first_rx, mut last_rx) = (0u64, 0u64);
    loop {
        let now = monotonic_ns();
        if now >= deadline || (received > 0 && now - last_rx >= idle_ns) {
            break;
        }
        // SAFETY: `msgs` point at `iovs`/`bufs`, alive for the call.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                MAX_BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) | Some(libc::ECONNREFUSED) => continue,
                _ => return Err(format!("recvmmsg: {e}")),
            }
        }
        let now = monotonic_ns();
        for i in 0..r as usize {
            let len = (msgs[i].msg_len as usize).min(RX_BUF);
            let probe = Probe::read(&bufs[i][..len]);
            let Some(p) = probe.filter(|p| (p.flow as usize) < flows) else {
                bad += 1;
                continue;
            };
            received += 1;
            match trackers[p.flow as usize].record(p.seq) {
                SeqVerdict::Duplicate => {
                    dup += 1;
                    continue;
                }
                SeqVerdict::OutOfRange => out_of_range += 1,
                SeqVerdict::Late => late += 1,
                SeqVerdict::New => {}
            }
            ip_bytes += (len + IP_UDP_OVERHEAD) as u64;
            hist.record(now.saturating_sub(p.ts_ns));
        }
        if r > 0 {
            if first_rx == 0 {
                first_rx = now;
            }
            last_rx = now;
        }
    }
    let unique: u64 = trackers.iter().map(|t| t.unique()).sum::<u64>() + out_of_range;
    let window = if last_rx > first_rx {
        (last_rx - first_rx) as f64 / 1e9
    } else {
        0.0
    };
    let rate = |x: f64| if window > 0.0 { x / window } else { 0.0 };
    let us = |p: f64| hist.percentile(p).map_or(0.0, |ns| ns as f64 / 1e3);
    let cdf: Vec<String> = [
        0.1, 1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 99.9,
        100.0,
    ]
    .iter()
    .map(|&p| format!("[{p},{:.1}]", us(p)))
    .collect();
    let per_flow: Vec<String> = trackers
        .iter()
        .enumerate()
        .filter(|(_, t)| t.unique() > 0)
        .map(|(i, t)| {
            format!(
                "{{\"flow\":{i},\"unique\":{},\"highest\":{},\"gaps\":{}}}",
                t.unique(),
                t.highest().unwrap_or(0),
                t.gaps()
            )
        })
        .collect();
    Ok(format!(
        "{{\"role\":\"sink\",\"bind\":\"{bind}\",\"received\":{received},\"unique\":{unique},\"dup\":{dup},\"late\":{late},\"bad\":{bad},\"out_of_range\":{out_of_range},\"ip_bytes\":{ip_bytes},\"secs\":{window:.6},\"pps\":{:.1},\"gbps\":{:.6},\"lat_samples\":{},\"lat_p50_us\":{:.1},\"lat_p99_us\":{:.1},\"lat_max_us\":{:.1},\"lat_cdf_us\":[{}],\"flows\":[{}]}}",
        rate(unique as f64),
        rate(ip_bytes as f64 * 8.0) / 1e9,
        hist.count(),
        us(50.0),
        us(99.0),
        hist.max_ns() as f64 / 1e3,
        cdf.join(","),
        per_flow.join(","),
    ))
}
