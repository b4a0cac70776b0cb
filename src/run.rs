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
    let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::from_be);
    let d = u32::from(dst);
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (net, gw, mask) = (hex(f.get(1)?)?, hex(f.get(2)?)?, hex(f.get(7)?)?);
            // /proc/net/route prints addresses in host (little-endian) order.
            let (net, gw, mask) = (net.swap_bytes(), gw.swap_bytes(), mask.swap_bytes());
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
    let out: u64 = gw
        .workers()
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
