//! Plain AF_XDP forwarding between a LAN and a WAN interface, no crypto:
//! the I/O ceiling of the veth load test. Same burst loop shape as an
//! espgate worker (rx burst → tx burst on the other port, sleep when idle),
//! same backend (`AfXdpPort`), so the gap to espgate is the ESP work.
//!
//! ```text
//! xdp_forward --lan IF --wan IF --remote PFX[,PFX..] --local PFX[,PFX..]
//!             (--lan-mac MAC | --lan-next-hop IP) (--wan-mac MAC | --wan-next-hop IP)
//!             [--duration SECS] [--mode auto|native|generic] [--idle-sleep-us N]
//!             [--umem-chunks N] [--queues N]
//! ```
//!
//! Run it inside the gateway's namespace. The LAN port's XDP program takes
//! packets for `--remote` prefixes, the WAN port's takes packets for
//! `--local` prefixes; everything else (ARP, ...) stays with the kernel.
//! TTL is decremented as a router would. `--queues N` opens queues
//! 0..N on both interfaces and runs one thread (`xdpfwd-qK`) per queue,
//! LAN queue K <-> WAN queue K, as espgate runs one worker per queue. Stops at `--duration` (default 60,
//! at most 600 s) or on SIGINT/SIGTERM, then prints one JSON line of
//! counters.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use espgate_bench::loadtest::Opts;
use espgate_dataplane::buf::{Burst, Pool, PortId};
use espgate_dataplane::io::af_xdp::{AfXdpConfig, AfXdpPort, XdpMode};
use espgate_dataplane::io::bpf::RedirectRules;
use espgate_dataplane::io::{IoStats, PacketIo};
use ipnet::IpNet;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

const MAX_SECS: f64 = 600.0;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match Opts::parse(&args).and_then(|o| run(&o)) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("xdp_forward: {e}");
            std::process::exit(2);
        }
    }
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!("MAC aa:bb:cc:dd:ee:ff expected, got {s:?}"));
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).map_err(|_| format!("bad MAC {s:?}"))?;
    }
    Ok(mac)
}

fn prefixes(o: &Opts, key: &str) -> Result<Vec<IpNet>, String> {
    o.required(key)?
        .split(',')
        .map(|p| {
            p.trim()
                .parse()
                .map_err(|_| format!("--{key}: bad prefix {p:?}"))
        })
        .collect()
}

fn port_config(o: &Opts, side: &str, dst: Vec<IpNet>, port: u8) -> Result<AfXdpConfig, String> {
    let mut cfg = AfXdpConfig::new(o.required(side)?);
    cfg.rules = RedirectRules {
        esp: false,
        udp_encap_port: None,
        dst_prefixes: dst,
    };
    cfg.mode = match o.str("mode").unwrap_or("auto") {
        "auto" => XdpMode::Auto,
        "native" => XdpMode::Native,
        "generic" => XdpMode::Generic,
        m => return Err(format!("--mode: auto|native|generic expected, got {m:?}")),
    };
    cfg.port = PortId(port);
    cfg.umem_chunks = o.get("umem-chunks", 4096u32)?;
    if let Some(mac) = o.str(&format!("{side}-mac")) {
        cfg.peer_mac = Some(parse_mac(mac)?);
    } else {
        let hop: Ipv4Addr = o
            .required(&format!("{side}-next-hop"))
            .map_err(|_| format!("--{side}-mac or --{side}-next-hop is required"))?
            .parse()
            .map_err(|_| format!("--{side}-next-hop: IPv4 address expected"))?;
        cfg.next_hop = Some(hop);
    }
    Ok(cfg)
}

/// Decrements IPv4 TTL / IPv6 hop limit (IPv4 checksum updated
/// incrementally, RFC 1624); false if the packet must not be forwarded.
fn hop(ip: &mut [u8]) -> bool {
    match ip.first().map(|b| b >> 4) {
        Some(4) if ip.len() >= 20 => {
            if ip[8] <= 1 {
                return false;
            }
            ip[8] -= 1;
            let sum = u32::from(u16::from_be_bytes([ip[10], ip[11]])) + 0x0100;
            let sum = (sum & 0xffff) + (sum >> 16);
            ip[10..12].copy_from_slice(&(sum as u16).to_be_bytes());
            true
        }
        Some(6) if ip.len() >= 40 => {
            if ip[7] <= 1 {
                return false;
            }
            ip[7] -= 1;
            true
        }
        _ => false,
    }
}

/// Moves one burst from `from` to `to`; returns the packets received.
fn forward(
    from: &mut AfXdpPort,
    to: &mut AfXdpPort,
    pool: &mut Pool,
    burst: &mut Burst,
    rejected: &mut Burst,
    hop_dropped: &mut u64,
) -> Result<usize, String> {
    let n = from.rx_burst(pool, burst).map_err(|e| e.to_string())?;
    if n == 0 {
        return Ok(0);
    }
    let mut bad = 0;
    for f in burst.frames_mut() {
        if !hop(f.data_mut()) {
            f.truncate(0);
            bad += 1;
        }
    }
    if bad > 0 {
        burst.retain_into(|f| !f.is_empty(), rejected);
        *hop_dropped += rejected.len() as u64;
        rejected.free_all(pool);
    }
    to.tx_burst(pool, burst).map_err(|e| e.to_string())?;
    Ok(n)
}

fn stats_json(s: IoStats, kernel_dropped: u64) -> String {
    format!(
        "{{\"rx\":{},\"rx_bytes\":{},\"tx\":{},\"tx_bytes\":{},\"rx_dropped\":{},\"tx_dropped\":{},\"kernel_rx_dropped\":{kernel_dropped}}}",
        s.rx_packets, s.rx_bytes, s.tx_packets, s.tx_bytes, s.rx_dropped, s.tx_dropped
    )
}

fn run(o: &Opts) -> Result<String, String> {
    let unknown = o.unknown(&[
        "lan",
        "wan",
        "remote",
        "local",
        "lan-mac",
        "lan-next-hop",
        "wan-mac",
        "wan-next-hop",
        "duration",
        "mode",
        "idle-sleep-us",
        "umem-chunks",
        "queues",
    ]);
    if !unknown.is_empty() {
        return Err(format!("unknown options: {unknown:?}"));
    }
    let secs: f64 = o.get("duration", 60.0)?;
    if !(secs > 0.0 && secs <= MAX_SECS) {
        return Err(format!("--duration: 0 < seconds <= {MAX_SECS} expected"));
    }
    let idle = Duration::from_micros(o.get("idle-sleep-us", 20u64)?);
    let lan_cfg = port_config(o, "lan", prefixes(o, "remote")?, 0)?;
    let wan_cfg = port_config(o, "wan", prefixes(o, "local")?, 1)?;

    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }

    let queues: u32 = o.get("queues", 1)?;
    if !(1..=16).contains(&queues) {
        return Err("--queues: 1..=16 expected".into());
    }
    let qs: Vec<u32> = (0..queues).collect();
    let lans = AfXdpPort::open_queues(&lan_cfg, &qs).map_err(|e| e.to_string())?;
    let wans = AfXdpPort::open_queues(&wan_cfg, &qs).map_err(|e| e.to_string())?;
    let (lan_mode, wan_mode) = match (lans.first(), wans.first()) {
        (Some(l), Some(w)) => (l.attach_mode(), w.attach_mode()),
        _ => return Err("no queue opened".into()),
    };
    eprintln!(
        "xdp_forward: {} ({lan_mode:?}) <-> {} ({wan_mode:?}), {queues} queue(s), ready",
        lan_cfg.ifname, wan_cfg.ifname
    );
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let results: Vec<Result<String, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = lans
            .into_iter()
            .zip(wans)
            .enumerate()
            .map(|(q, (lan, wan))| {
                std::thread::Builder::new()
                    .name(format!("xdpfwd-q{q}"))
                    .spawn_scoped(s, move || forward_loop(q, lan, wan, idle, deadline))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h.join().unwrap_or_else(|_| Err("thread panicked".into())),
                Err(e) => Err(format!("spawn: {e}")),
            })
            .collect()
    });
    let per_queue = results
        .into_iter()
        .collect::<Result<Vec<String>, String>>()?;
    Ok(format!(
        "{{\"role\":\"xdp_forward\",\"secs\":{:.3},\"lan_mode\":\"{lan_mode:?}\",\"wan_mode\":\"{wan_mode:?}\",\"queues\":[{}]}}",
        start.elapsed().as_secs_f64(),
        per_queue.join(","),
    ))
}

/// One queue's run-to-completion loop until the deadline or a signal.
fn forward_loop(
    q: usize,
    mut lan: AfXdpPort,
    mut wan: AfXdpPort,
    idle: Duration,
    deadline: Instant,
) -> Result<String, String> {
    let mut pool = Pool::new(4096);
    let mut burst = Burst::new();
    let mut rejected = Burst::new();
    let mut hop_dropped = 0u64;
    let mut polls = 0u64;
    let mut idle_polls = 0u64;
    loop {
        // The clock and the flag are read once per 256 polls, off the
        // per-burst path.
        if polls.is_multiple_of(256) && (STOP.load(Ordering::Relaxed) || Instant::now() >= deadline)
        {
            break;
        }
        polls += 1;
        let a = forward(
            &mut lan,
            &mut wan,
            &mut pool,
            &mut burst,
            &mut rejected,
            &mut hop_dropped,
        )?;
        let b = forward(
            &mut wan,
            &mut lan,
            &mut pool,
            &mut burst,
            &mut rejected,
            &mut hop_dropped,
        )?;
        if a + b == 0 {
            idle_polls += 1;
            if !idle.is_zero() {
                std::thread::sleep(idle);
            }
        }
    }
    Ok(format!(
        "{{\"queue\":{q},\"polls\":{polls},\"idle_polls\":{idle_polls},\"hop_dropped\":{hop_dropped},\"lan\":{},\"wan\":{}}}",
        stats_json(lan.stats(), lan.kernel_rx_dropped()),
        stats_json(wan.stats(), wan.kernel_rx_dropped()),
    ))
}

#[cfg(test)]
mod tests {
    use super::hop;

    fn checksum(h: &[u8]) -> u16 {
        let mut s: u32 = h
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    #[test]
    fn ttl_decrement_keeps_checksum_valid() {
        for ttl in [2u8, 64, 255] {
            let mut h = [
                0x45, 0, 0, 60, 0x12, 0x34, 0x40, 0, ttl, 17, 0, 0, 192, 168, 100, 10, 172, 16, 10,
                11,
            ];
            let c = checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            assert!(hop(&mut h));
            assert_eq!(h[8], ttl - 1);
            assert_eq!(checksum(&h), 0, "ttl {ttl}");
        }
        let mut h = [0x45u8; 20];
        h[8] = 1;
        assert!(!hop(&mut h));
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        v6[7] = 9;
        assert!(hop(&mut v6));
        assert_eq!(v6[7], 8);
        assert!(!hop(&mut [0x45u8; 10]));
    }
}
