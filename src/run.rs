//! `espgate run -c FILE`: one gateway on real interfaces until SIGINT/SIGTERM.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use espgate_dataplane::api::Direction;
use espgate_dataplane::io::af_xdp::{AfXdpConfig, AfXdpPort};
use espgate_dataplane::io::tun::TunPort;
use espgate_dataplane::io::udp::{IkeChannel, UdpConfig, UdpPort};
use espgate_dataplane::io::PacketIo;
use espgate_dataplane::spd::Action;
use espgate_dataplane::worker::{LAN, WAN};
use ipnet::IpNet;

use crate::config::{Backend, Config, Interface, Role};
use crate::ctl::CtlServer;
use crate::gateway::{compile_acl, Gateway, IkeIo, WorkerPorts};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// The IPv4 next hop towards `dst` from the kernel's main routing table
/// (`/proc/net/route`): the gateway of the longest matching route, or `dst`
/// itself when it is on-link.
fn next_hop(dst: Ipv4Addr) -> Option<Ipv4Addr> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    next_hop_in(&table, dst)
}

fn next_hop_in(table: &str, dst: Ipv4Addr) -> Option<Ipv4Addr> {
    // The kernel prints each address as the native-endian u32 of its
    // network-order bytes: `from_be` turns that into the address's value.
    let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::from_be);
    let d = u32::from(dst);
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (net, gw, mask) = (hex(f.get(1)?)?, hex(f.get(2)?)?, hex(f.get(7)?)?);
            (d & mask == net).then_some((mask.count_ones(), gw))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, gw)| if gw == 0 { dst } else { Ipv4Addr::from(gw) })
}

fn first_v4(nets: &[IpNet]) -> Option<Ipv4Addr> {
    nets.iter().find_map(|n| match n {
        IpNet::V4(n) => Some(n.network()),
        IpNet::V6(_) => None,
    })
}

/// One AF_XDP port per worker on `iface` (queues `queue..queue + workers`).
fn xdp_ports(
    iface: &Interface,
    mut cfg: AfXdpConfig,
    toward: Option<Ipv4Addr>,
    workers: usize,
) -> anyhow::Result<Vec<Box<dyn PacketIo>>> {
    cfg.queue = iface.queue;
    cfg.peer_mac = iface.peer_mac.map(|m| m.0);
    if cfg.peer_mac.is_none() {
        cfg.next_hop = toward.and_then(next_hop);
    }
    // RSS spreads packets over every rx queue; a queue with no worker's
    // socket on it would hand its packets to the kernel, which (forwarding
    // off) drops them — refuse that instead of losing traffic silently.
    let rx_queues = std::fs::read_dir(format!("/sys/class/net/{}/queues", iface.name))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count()
        })
        .unwrap_or(0);
    if rx_queues > iface.queue as usize + workers {
        bail!(
            "interface {} has {rx_queues} rx queues but queues {}..{} are served ({workers} worker(s)): set gateway.workers to {} or reduce the NIC's queues (ethtool -L)",
            iface.name,
            iface.queue,
            iface.queue as usize + workers,
            rx_queues - iface.queue as usize
        );
    }
    let queues: Vec<u32> = (0..workers as u32).map(|w| iface.queue + w).collect();
    let ports = AfXdpPort::open_queues(&cfg, &queues)
        .with_context(|| format!("interface {} (af_xdp)", iface.name))?;
    Ok(ports
        .into_iter()
        .map(|p| Box::new(p) as Box<dyn PacketIo>)
        .collect())
}

pub fn run(cfg: Config) -> anyhow::Result<()> {
    let workers = cfg.workers();
    let (_, spd) = compile_acl(&cfg)?;
    let mut remote_lans: Vec<IpNet> = Vec::new();
    for r in spd.rules().iter().filter(|r| r.action == Action::Protect) {
        if !remote_lans.contains(&r.selector.dst) {
            remote_lans.push(r.selector.dst);
        }
    }
    let peer = cfg.peers.first().map(|p| p.get_ref().address);
    let ifaces: Vec<&Interface> = cfg.interfaces.iter().map(|i| i.get_ref()).collect();
    let (Some(lan), Some(wan)) = (
        ifaces.iter().find(|i| i.role == Role::Lan),
        ifaces.iter().find(|i| i.role == Role::Wan),
    ) else {
        bail!(
            "{}: one lan and one wan interface expected",
            cfg.source.display()
        );
    };
    if ifaces.iter().filter(|i| i.role == Role::Lan).count() > 1 {
        eprintln!(
            "espgate: only the first lan interface ({}) is used; route the other LANs behind it",
            lan.name
        );
    }
    let one_worker = |what: &str| -> anyhow::Result<()> {
        if workers > 1 {
            bail!(
                "{}: the {what} backend runs one worker; set gateway.workers = 1",
                cfg.source.display()
            );
        }
        Ok(())
    };

    let lan_ports: Vec<Box<dyn PacketIo>> = match lan.backend {
        Backend::AfXdp => {
            let mut x = AfXdpConfig::lan(&lan.name, remote_lans.clone());
            x.port = LAN;
            xdp_ports(lan, x, first_v4(&lan.prefixes), workers)?
        }
        Backend::Tun => {
            one_worker("tun")?;
            vec![Box::new(
                TunPort::open(&lan.name, LAN).with_context(|| format!("interface {}", lan.name))?,
            )]
        }
        other => bail!(
            "{}: backend {other:?} is not available for a lan interface",
            cfg.source.display()
        ),
    };
    let mut ike_io = IkeIo::Sockets {
        ike_port: 500,
        nat_port: 4500,
    };
    let wan_ports: Vec<Box<dyn PacketIo>> = match wan.backend {
        Backend::AfXdp => {
            let mut x = AfXdpConfig::wan(&wan.name);
            x.port = WAN;
            let toward = match peer {
                Some(IpAddr::V4(p)) => Some(p),
                _ => None,
            };
            xdp_ports(wan, x, toward, workers)?
        }
        Backend::Udp => {
            one_worker("udp")?;
            let port = wan.udp_port.unwrap_or(4500);
            let mut u = UdpConfig::new(SocketAddr::new(cfg.gateway.local_address, port));
            u.port = WAN;
            let (p, channel): (UdpPort, IkeChannel) =
                UdpPort::bind(&u).with_context(|| format!("interface {} (udp)", wan.name))?;
            ike_io = IkeIo::SharedNatT {
                ike_port: 500,
                nat_port: port,
                channel,
            };
            vec![Box::new(p)]
        }
        other => bail!(
            "{}: backend {other:?} is not available for a wan interface",
            cfg.source.display()
        ),
    };
    let cores: Vec<Option<usize>> = match &cfg.gateway.cores {
        Some(c) => c.get_ref().iter().map(|&c| Some(c)).collect(),
        None => vec![None; workers],
    };
    let ports = lan_ports
        .into_iter()
        .zip(wan_ports)
        .zip(cores)
        .map(|((lan, wan), core)| WorkerPorts { lan, wan, core })
        .collect();
    let gw = Arc::new(Gateway::start(&cfg, ports, ike_io)?);
    let gw2 = gw.clone();
    let ctl_path = cfg.control_socket();
    let _ctl = CtlServer::spawn(&ctl_path, move |line| gw2.handle_request(line))
        .with_context(|| format!("control socket {}", ctl_path.display()))?;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    eprintln!(
        "espgate: {} running ({workers} worker(s), control socket {})",
        cfg.gateway.name,
        ctl_path.display()
    );
    while !STOP.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        for l in gw.take_log() {
            eprintln!("espgate: {l}");
        }
    }
    let workers = gw.workers();
    for w in &workers {
        // Port counters and drop reasons are not in any show view yet; the
        // exit log is where a lossy run can be traced.
        eprintln!(
            "espgate: worker {}: lan {:?}, wan {:?}, drops {:?}",
            w.worker, w.lan, w.wan, w.drops
        );
    }
    let out: u64 = workers
        .iter()
        .flat_map(|w| &w.sas)
        .filter(|s| s.dir == Direction::Outbound)
        .map(|s| s.counters.encaps)
        .sum();
    eprintln!(
        "espgate: {} stopping ({out} packets encapsulated)",
        cfg.gateway.name
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_hop_reads_proc_net_route() {
        // `ip route`: default via 10.255.1.1, 10.1.0.0/30 on-link,
        // 192.168.100.0/24 via 10.1.0.2 (as /proc/net/route prints them on
        // this machine).
        let hex = |a: [u8; 4]| format!("{:08X}", u32::from_ne_bytes(a));
        let row = |net: [u8; 4], gw: [u8; 4], mask: [u8; 4]| {
            format!(
                "wan0\t{}\t{}\t0003\t0\t0\t0\t{}\t0\t0\t0\n",
                hex(net),
                hex(gw),
                hex(mask)
            )
        };
        let table = String::from(
            "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n",
        ) + &row([0, 0, 0, 0], [10, 255, 1, 1], [0, 0, 0, 0])
            + &row([10, 1, 0, 0], [0, 0, 0, 0], [255, 255, 255, 252])
            + &row([192, 168, 100, 0], [10, 1, 0, 2], [255, 255, 255, 0]);
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            next_hop_in(&table, ip("192.168.100.0")),
            Some(ip("10.1.0.2"))
        );
        assert_eq!(next_hop_in(&table, ip("10.1.0.2")), Some(ip("10.1.0.2")));
        assert_eq!(
            next_hop_in(&table, ip("10.255.2.2")),
            Some(ip("10.255.1.1"))
        );
    }
}
