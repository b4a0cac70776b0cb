//! Wiring: one gateway = the crypto ACL compiled to an SPD, the worker pool
//! with its ports, the IKE daemon, and the views `show` renders.
//!
//! Used by `espgate run` (ports from the config) and `espgate demo` (two
//! gateways joined by in-memory links in one process).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use crossbeam::channel::{bounded, unbounded, Sender};
use espgate_controlplane::config::{
    Config as IkeConfig, Identity, PeerConfig, Psk as IkePsk, RuleEntry,
};
use espgate_controlplane::daemon::{Daemon, Datagram, Inspect, UdpIke};
use espgate_controlplane::machine::{IkeEvent, Machine, Stats as IkeStats, Transmit};
use espgate_controlplane::show::IkeSaView as MachineIkeSa;
use espgate_dataplane::acquire::{AcquireLimits, AcquireMode as DpAcquireMode};
use espgate_dataplane::api::{Direction, Selector, SpiAllocator};
use espgate_dataplane::io::udp::{IkeChannel, IkeDatagram};
use espgate_dataplane::io::PacketIo;
use espgate_dataplane::runtime::{Dataplane, WorkerSpec};
use espgate_dataplane::spd::{acl, show as acl_show, Action, Spd};
use espgate_dataplane::wire::{IpVersion, Ipv4Packet, Ipv4Repr, Ipv6Packet, UdpPacket};
use espgate_dataplane::worker::{SaSnapshot, WorkerConfig, WorkerSnapshot};

use crate::config::{AcquireMode, Config};
use crate::keylog::KeyLog;
use crate::show::{self, EspSaState, EspSaView, IpsecSaView, ShowIkeSa, ShowIpsecSa, ShowWhat};

/// How IKE reaches the wire.
pub enum IkeIo {
    /// Kernel UDP sockets on the IKE and NAT-T ports of the local address
    /// (the AF_XDP program passes IKE to the kernel).
    Sockets { ike_port: u16, nat_port: u16 },
    /// A kernel socket on the IKE port; NAT-T IKE shares the dataplane's
    /// ESP-in-UDP socket (`udp` backend) and comes and goes by channel.
    SharedNatT {
        ike_port: u16,
        nat_port: u16,
        channel: IkeChannel,
    },
    /// Through the dataplane's WAN port: IKE packets the workers punt, and
    /// IP packets the daemon builds and injects (in-memory WAN links).
    Dataplane,
}

/// The ports of one worker.
pub struct WorkerPorts {
    pub lan: Box<dyn PacketIo>,
    pub wan: Box<dyn PacketIo>,
    pub core: Option<usize>,
}

pub struct Gateway {
    local: IpAddr,
    acl_name: String,
    acl: acl::AclConfig,
    dp: Arc<Dataplane>,
    inspect: Sender<Inspect>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

/// The control plane's half of the config.
fn ike_config(cfg: &Config, spd: &Spd) -> anyhow::Result<IkeConfig> {
    let mut ike = IkeConfig::new(cfg.gateway.local_address);
    let local_id = cfg.ike.local_id.as_deref().map(identity);
    for p in &cfg.peers {
        let p = p.get_ref();
        let mut peer = PeerConfig::new(p.address, IkePsk::new(p.key.0.to_vec()));
        peer.local_id = local_id.clone();
        peer.remote_id = p.id.as_deref().map(identity);
        ike.peers.push(peer);
    }
    // One crypto map: every protected ACL entry goes to the first peer,
    // as `crypto map outside_map 1 set peer` does.
    let peer = ike
        .peers
        .first()
        .map(|p| p.addr)
        .ok_or_else(|| anyhow!("{}: no [[peers]] configured", cfg.source.display()))?;
    // Combined: one rule entry (the first permit's) carries every permit's
    // selector, so IKE negotiates one child SA for all of them.
    let protected = spd.rules().iter().filter(|r| r.action == Action::Protect);
    ike.rules = protected
        .clone()
        .filter(|r| spd.sa_rule(r.id) == r.id)
        .map(|r| RuleEntry {
            rule: r.id,
            selector: r.selector.clone(),
            more: protected
                .clone()
                .filter(|m| m.id != r.id && spd.sa_rule(m.id) == r.id)
                .map(|m| m.selector.clone())
                .collect(),
            peer,
        })
        .collect();
    ike.esp_proposals = cfg.esp.proposals.get_ref().iter().map(|p| p.0).collect();
    ike.pfs_group = cfg.esp.pfs.0.map(|g| g.number());
    ike.ike_lifetime_secs = cfg.ike.lifetime_secs;
    ike.child_lifetime = cfg.esp_lifetime();
    ike.replay_window = cfg.esp.replay_window.0;
    ike.esn = cfg.esp.esn;
    ike.force_encap = cfg.ike.force_encap;
    ike.sa_per_worker = cfg.ike.sa_per_worker;
    ike.dpd_interval = (cfg.ike.dpd_secs > 0).then(|| Duration::from_secs(cfg.ike.dpd_secs));
    Ok(ike)
}

fn identity(s: &str) -> Identity {
    match s.parse::<IpAddr>() {
        Ok(a) => Identity::Addr(a),
        Err(_) => Identity::Fqdn(s.to_string()),
    }
}

/// The config's crypto ACL (parsed and checked at load) compiled to an SPD.
pub fn compile_acl(cfg: &Config) -> anyhow::Result<(acl::AclConfig, Spd)> {
    let spd = cfg
        .spd()
        .map_err(|e| anyhow!("{}: [acl]: {e}", cfg.source.display()))?;
    Ok((cfg.acl_parsed.clone(), spd))
}

impl Gateway {
    /// Starts the workers on `ports` (one entry per worker) and the IKE daemon.
    pub fn start(cfg: &Config, ports: Vec<WorkerPorts>, ike_io: IkeIo) -> anyhow::Result<Gateway> {
        if ports.is_empty() {
            bail!("{}: no workers to start", cfg.source.display());
        }
        let (acl, spd) = compile_acl(cfg)?;
        let ike_cfg = ike_config(cfg, &spd)?;
        let workers = ports.len() as u8;
        let spis = Arc::new(SpiAllocator::new(workers));
        let a = &cfg.acquire;
        let limits = AcquireLimits {
            mode: match a.mode {
                AcquireMode::Queue => DpAcquireMode::Queue,
                AcquireMode::Drop => DpAcquireMode::Drop,
            },
            max_packets: a.max_packets,
            max_bytes: a.max_bytes,
            timeout: Duration::from_millis(a.timeout_ms),
            ..AcquireLimits::default()
        };
        let peer = ike_cfg
            .rules
            .first()
            .map(|r| r.peer)
            .unwrap_or(ike_cfg.local);
        let specs = ports
            .into_iter()
            .enumerate()
            .map(|(i, p)| WorkerSpec {
                cfg: WorkerConfig {
                    id: i as u8,
                    workers,
                    peer,
                    acquire: limits,
                    pool_frames: 4096,
                    idle_sleep: Duration::from_micros(20),
                },
                lan: p.lan,
                wan: p.wan,
                core: p.core,
            })
            .collect();
        let dp = Arc::new(Dataplane::spawn(specs, Arc::new(spd)));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();

        let (dgram_tx, dgram_rx) = unbounded::<Datagram>();
        let send: Box<dyn FnMut(Transmit) + Send> = match ike_io {
            IkeIo::Sockets { ike_port, nat_port } => {
                let udp = UdpIke::bind(cfg.gateway.local_address, ike_port, nat_port)
                    .with_context(|| format!("{}: IKE sockets", cfg.source.display()))?;
                threads.extend(udp.spawn_receivers(dgram_tx, stop.clone()));
                udp.sender()
            }
            IkeIo::SharedNatT {
                ike_port,
                nat_port,
                channel,
            } => {
                let udp = UdpIke::bind_ports(cfg.gateway.local_address, &[ike_port])
                    .with_context(|| format!("{}: IKE socket", cfg.source.display()))?;
                threads.extend(udp.spawn_receivers(dgram_tx.clone(), stop.clone()));
                let (rx, stop2) = (channel.rx, stop.clone());
                threads.push(std::thread::spawn(move || {
                    while !stop2.load(Ordering::Relaxed) {
                        if let Ok(d) = rx.recv_timeout(Duration::from_millis(100)) {
                            let d = Datagram {
                                local: d.local,
                                remote: d.remote,
                                data: d.data,
                            };
                            if dgram_tx.send(d).is_err() {
                                break;
                            }
                        }
                    }
                }));
                let mut socket = udp.sender();
                let tx = channel.tx;
                Box::new(move |t: Transmit| {
                    if t.local.port() == nat_port {
                        let _ = tx.try_send(IkeDatagram {
                            local: t.local,
                            remote: t.remote,
                            data: t.data,
                        });
                    } else {
                        socket(t)
                    }
                })
            }
            IkeIo::Dataplane => {
                let (dp2, stop2) = (dp.clone(), stop.clone());
                threads.push(std::thread::spawn(move || {
                    while !stop2.load(Ordering::Relaxed) {
                        if let Ok(pkt) = dp2.punted().recv_timeout(Duration::from_millis(100)) {
                            if let Some(d) = parse_udp(&pkt) {
                                if dgram_tx.send(d).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                }));
                let dp2 = dp.clone();
                Box::new(move |t: Transmit| {
                    if let Some(pkt) = build_udp(t.local, t.remote, &t.data) {
                        dp2.inject(pkt);
                    }
                })
            }
        };
        let (inspect_tx, inspect_rx) = bounded::<Inspect>(16);
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let machine = Machine::new(ike_cfg, spis);
        let (dp2, log2, name) = (dp.clone(), log.clone(), cfg.gateway.name.clone());
        let mut keylog = KeyLog::from_env();
        let mut daemon = Daemon::new(
            machine,
            dgram_rx,
            dp.events().clone(),
            inspect_rx,
            send,
            Box::new(move |msg| {
                if let Some(k) = keylog.as_mut() {
                    k.record(&msg);
                }
                dp2.send(msg)
            }),
            Box::new(move |ev: &IkeEvent| {
                let line = format!("{name}: {}", describe(ev));
                if let Ok(mut l) = log2.lock() {
                    l.push(line);
                }
            }),
        );
        let stop2 = stop.clone();
        threads.push(
            std::thread::Builder::new()
                .name("espgate-ike".into())
                .spawn(move || daemon.run(&stop2))?,
        );
        Ok(Gateway {
            local: cfg.gateway.local_address,
            acl_name: cfg.acl.get_ref().name.clone(),
            acl,
            dp,
            inspect: inspect_tx,
            stop,
            threads,
            log,
        })
    }

    /// IKE events logged since the last call.
    pub fn take_log(&self) -> Vec<String> {
        self.log
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default()
    }

    /// Runs `f` on the IKE daemon's thread and returns its answer.
    fn ask<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Machine, Instant) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = bounded(1);
        let q: Inspect = Box::new(move |m, now| {
            let _ = tx.send(f(m, now));
        });
        self.inspect.send(q).ok()?;
        rx.recv_timeout(Duration::from_secs(2)).ok()
    }

    /// Deletes every IKE SA (INFORMATIONAL Delete to the peer, so it drops
    /// its SAs now instead of at DPD time) and gives the daemon a moment to
    /// send them. Returns how many were deleted.
    pub fn delete_all(&self) -> usize {
        let n = self
            .ask(|m, now| {
                let ids: Vec<u32> = m.ike_sas(now).iter().map(|s| s.tunnel_id).collect();
                ids.into_iter()
                    .filter(|&id| m.delete_ike_sa(now, id))
                    .count()
            })
            .unwrap_or(0);
        if n > 0 {
            std::thread::sleep(Duration::from_millis(200));
        }
        n
    }

    pub fn ike_stats(&self) -> IkeStats {
        self.ask(|m, _| m.stats()).unwrap_or_default()
    }

    pub fn ike_sas(&self) -> Vec<MachineIkeSa> {
        self.ask(|m, now| m.ike_sas(now)).unwrap_or_default()
    }

    pub fn workers(&self) -> Vec<WorkerSnapshot> {
        self.dp.snapshot(Duration::from_secs(2))
    }

    /// Every SA the workers hold, by (SPI, direction).
    fn sa_snapshots(&self) -> Vec<SaSnapshot> {
        self.workers().into_iter().flat_map(|w| w.sas).collect()
    }

    /// The answer to a control-socket line (`show ike-sa [json]`, ...).
    pub fn handle_request(&self, line: &str) -> String {
        match ShowWhat::parse_request(line) {
            Some((what, json)) => self.show(what, json),
            None => format!("error: unknown request {line:?} (expected `show ike-sa|ipsec-sa|access-list [json]`)\n"),
        }
    }

    pub fn show(&self, what: ShowWhat, json: bool) -> String {
        match what {
            ShowWhat::IkeSa => {
                show::to_text_or_json(&self.show_ike_sa(), json, show::render_ike_sa)
            }
            ShowWhat::IpsecSa => {
                show::to_text_or_json(&self.show_ipsec_sa(), json, show::render_ipsec_sa)
            }
            ShowWhat::AccessList => {
                let v = self.acl_view();
                if json {
                    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
                } else {
                    acl_show::render(&v)
                }
            }
        }
    }

    pub fn acl_view(&self) -> acl_show::AclView {
        let mut hits: Vec<u64> = Vec::new();
        for w in self.workers() {
            if hits.len() < w.hits.len() {
                hits.resize(w.hits.len(), 0);
            }
            for (h, x) in hits.iter_mut().zip(&w.hits) {
                *h += x;
            }
        }
        match self.acl.access_list(&self.acl_name) {
            Some(list) => acl_show::view(list, &hits),
            None => acl_show::AclView {
                name: self.acl_name.clone(),
                elements: 0,
                name_hash: acl_show::fnv1a32(&self.acl_name),
                lines: Vec::new(),
            },
        }
    }

    pub fn show_ike_sa(&self) -> ShowIkeSa {
        show::ike_view_from(&self.ike_sas())
    }

    pub fn show_ipsec_sa(&self) -> ShowIpsecSa {
        let snaps = self.sa_snapshots();
        let acl = self.acl_view();
        let entry_text = |rule| {
            acl.lines
                .iter()
                .flat_map(|l| &l.entries)
                .find(|e| e.rule == rule)
                .map(|e| format!("access-list {} {}", acl.name, e.text))
                .unwrap_or_default()
        };
        let find = |spi, dir| snaps.iter().find(|s| s.spi == spi && s.dir == dir);
        let mut sas = Vec::new();
        for ike in self.ike_sas() {
            for c in &ike.children {
                let (Some(i), Some(o)) = (
                    find(c.spi_in, Direction::Inbound),
                    find(c.spi_out, Direction::Outbound),
                ) else {
                    continue;
                };
                let mut counters = o.counters;
                counters.add(&i.counters);
                let esp = |s: &SaSnapshot| EspSaView {
                    spi: s.spi,
                    state: EspSaState::Active,
                    suite: s.suite,
                    pfs_group: c.pfs_group,
                    udp_encap: s.tunnel.udp_encap.is_some(),
                    slot: s.spi.shard() as u32,
                    conn_id: s.child_id,
                    crypto_map: "outside_map".into(),
                    remaining_kb: s.remaining_kb.unwrap_or(0),
                    remaining_secs: s.remaining_secs.unwrap_or(0),
                    replay_detection: s.replay_window > 0,
                    replay_bitmap: replay_words(s),
                };
                let port = if o.tunnel.udp_encap.is_some() {
                    4500
                } else {
                    500
                };
                sas.push(IpsecSaView {
                    interface: "outside".into(),
                    crypto_map: "outside_map".into(),
                    seq_num: 1,
                    local_addr: self.local,
                    acl_line: entry_text(o.rule),
                    selector: Selector {
                        src: c.local_selector.net,
                        dst: c.remote_selector.net,
                        proto: c.local_selector.proto,
                        src_ports: c.local_selector.ports.clone(),
                        dst_ports: c.remote_selector.ports.clone(),
                    },
                    current_peer: ike.remote.ip(),
                    counters,
                    local_endpoint: SocketAddr::new(ike.local.ip(), port),
                    remote_endpoint: SocketAddr::new(ike.remote.ip(), port),
                    path_mtu: 1500,
                    media_mtu: 1500,
                    inbound: esp(i),
                    outbound: esp(o),
                });
            }
        }
        ShowIpsecSa { sas }
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(dp) = Arc::get_mut(&mut self.dp) {
            dp.stop();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The ASA prints the replay bitmap as two 32-bit words with bit 0 the
/// newest packet; we show which of the last 64 sequence numbers were seen,
/// approximated from the highest one when the window is full.
fn replay_words(s: &SaSnapshot) -> Vec<u32> {
    if s.replay_window == 0 {
        return Vec::new();
    }
    let seen = s.seq.min(64);
    let bits: u64 = if seen >= 64 {
        u64::MAX
    } else {
        (1u64 << seen) - 1
    };
    vec![(bits >> 32) as u32, bits as u32]
}

fn describe(ev: &IkeEvent) -> String {
    match ev {
        IkeEvent::IkeUp {
            tunnel_id,
            peer,
            role,
            nat_t,
        } => format!(
            "IKE SA {tunnel_id} with {peer} up ({role:?}{})",
            if *nat_t { ", NAT-T" } else { "" }
        ),
        IkeEvent::IkeDown {
            tunnel_id,
            peer,
            reason,
        } => {
            format!("IKE SA {tunnel_id} with {peer} down: {reason:?}")
        }
        IkeEvent::IkeFailed { peer, reason } => format!("IKE with {peer} failed: {reason:?}"),
        IkeEvent::ChildUp {
            child_id,
            rule,
            spi_in,
            spi_out,
            rekey,
            ..
        } => format!(
            "child SA {child_id} (rule {}) {}: spi in/out {spi_in}/{spi_out}",
            rule.0,
            if *rekey { "rekeyed" } else { "up" }
        ),
        IkeEvent::ChildDown {
            child_id, reason, ..
        } => {
            format!("child SA {child_id} down: {reason:?}")
        }
        IkeEvent::ChildFailed { peer, rule, reason } => {
            format!("child SA with {peer} (rule {rule:?}) failed: {reason:?}")
        }
    }
}

/// A punted IKE packet as the daemon sees it.
fn parse_udp(pkt: &[u8]) -> Option<Datagram> {
    let (src, dst, payload) = match IpVersion::of(pkt).ok()? {
        IpVersion::V4 => {
            let ip = Ipv4Packet::new_checked(pkt).ok()?;
            (
                IpAddr::V4(ip.src_addr()),
                IpAddr::V4(ip.dst_addr()),
                ip.payload(),
            )
        }
        IpVersion::V6 => {
            let ip = Ipv6Packet::new_checked(pkt).ok()?;
            (
                IpAddr::V6(ip.src_addr()),
                IpAddr::V6(ip.dst_addr()),
                ip.payload(),
            )
        }
    };
    let udp = UdpPacket::new_checked(payload).ok()?;
    Some(Datagram {
        local: SocketAddr::new(dst, udp.dst_port()),
        remote: SocketAddr::new(src, udp.src_port()),
        data: udp.payload().to_vec(),
    })
}

/// An IPv4/UDP packet carrying an IKE datagram (checksum 0 is allowed for
/// UDP over IPv4; IKE over an in-memory IPv6 WAN is not used).
fn build_udp(src: SocketAddr, dst: SocketAddr, data: &[u8]) -> Option<Vec<u8>> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
        return None;
    };
    let udp_len = 8 + data.len();
    let mut p = vec![0u8; 20 + udp_len];
    let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
    Ipv4Repr {
        src_addr: s,
        dst_addr: d,
        protocol: 17,
        payload_len: udp_len,
        ttl: 64,
        dscp_ecn: 0,
        dont_frag: false,
    }
    .emit(&mut ip);
    let mut udp = UdpPacket::new_unchecked(ip.payload_mut());
    udp.set_src_port(src.port());
    udp.set_dst_port(dst.port());
    udp.set_len(u16::try_from(udp_len).ok()?);
    udp.set_checksum(0);
    udp.payload_mut().copy_from_slice(data);
    Some(p)
}
