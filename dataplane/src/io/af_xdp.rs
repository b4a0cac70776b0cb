//! AF_XDP backend: one XDP socket per (interface, rx queue), UMEM and rings
//! from `xdpilone`, steering by our own XDP program ([`super::bpf`]).
//!
//! **Frames are IP packets.** The wire carries Ethernet; the pipeline works
//! on IP. On rx the 14-byte Ethernet header is dropped and the IP packet is
//! copied into a pool [`Frame`] at the default [`HEADROOM`] (so encap can
//! still prepend 128 bytes). On tx an Ethernet header is written in front of
//! the IP packet: source = this interface's MAC, destination = the port's
//! next hop, fixed at start-up ([`AfXdpConfig::peer_mac`], or resolved once
//! from the kernel's ARP table for [`AfXdpConfig::next_hop`]). A LAN port
//! with many hosts behind different MACs needs per-destination resolution,
//! which this backend does not do (yet).
//!
//! **Copying.** The backend always copies between UMEM and pool frames: in
//! copy mode (veth) the kernel copies anyway, and it keeps UMEM chunks out
//! of the pipeline's ownership rules. UMEM chunks are split in two fixed
//! halves: rx chunks cycle fill ring → rx ring → fill ring (the packet is
//! copied out before the chunk goes back), tx chunks cycle free list → tx
//! ring → completion ring → free list. Both loops move whole bursts.
//!
//! **Sizes.** In copy mode the kernel puts 256 bytes of XDP headroom in
//! front of each received frame, so a 2048-byte chunk holds Ethernet frames
//! up to 1792 bytes (IP MTU ≤ 1778); longer ones are dropped by the kernel
//! (see [`AfXdpPort::kernel_rx_dropped`]). Each port has its own UMEM (no
//! sharing between queues).
//!
//! **Modes.** [`XdpMode::Auto`] attaches the program in native (driver) mode
//! and falls back to generic (SKB) mode; veth supports native XDP when the
//! peer's MTU is small enough (≤ ~3500). The socket binds with `XDP_COPY`
//! unless [`AfXdpConfig::zero_copy`] asks for zero-copy.

use std::ffi::CString;
use std::io;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::num::NonZeroU32;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;
use xdpilone::xdp::XdpDesc;
use xdpilone::{DeviceQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig};

use super::bpf::{self, AttachMode, RedirectRules, XdpAttachment, XdpProgram, XskMap};
use super::{IoError, IoStats, PacketIo};
use crate::buf::{Burst, Pool, PortId, BURST_MAX, HEADROOM};

/// Bytes of one UMEM chunk. The kernel reserves 256 bytes of XDP headroom in
/// each, leaving 1792 for an Ethernet frame: a 1500-byte MTU fits.
pub const CHUNK_SIZE: u32 = 2048;
/// Untagged Ethernet header.
pub const ETH_HEADER_LEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;

// Rx frames keep the pool's default headroom: encap must be able to prepend
// outer IP + UDP + ESP + IV in place.
const _: () = assert!(HEADROOM >= 128);

/// Where the XDP program runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpMode {
    /// Native first, generic if the driver refuses.
    #[default]
    Auto,
    Native,
    Generic,
}

/// One AF_XDP port.
#[derive(Clone, Debug)]
pub struct AfXdpConfig {
    pub ifname: String,
    /// Rx queue for [`AfXdpPort::open`]; [`AfXdpPort::open_queues`] ignores it.
    pub queue: u32,
    pub mode: XdpMode,
    /// Try a zero-copy bind first (falls back to copy mode).
    pub zero_copy: bool,
    /// What the XDP program sends to us instead of the kernel.
    pub rules: RedirectRules,
    /// Destination MAC of every frame we send. Wins over `next_hop`.
    pub peer_mac: Option<[u8; 6]>,
    /// Next hop whose MAC is looked up in the kernel's ARP table at start-up
    /// (after a UDP datagram to its discard port makes the kernel resolve it).
    pub next_hop: Option<Ipv4Addr>,
    /// UMEM chunks per socket (power of two ≥ 2 × 64): half rx, half tx.
    pub umem_chunks: u32,
    /// Stamped on received frames.
    pub port: PortId,
}

impl AfXdpConfig {
    /// A WAN-facing port: ESP and ESP-in-UDP (4500) come to us; IKE, ARP,
    /// ICMP and the rest go to the kernel.
    pub fn wan(ifname: &str) -> AfXdpConfig {
        AfXdpConfig::new(ifname)
    }

    /// A LAN-facing port: traffic to the remote protected LANs comes to us
    /// (to be encrypted); everything else goes to the kernel.
    pub fn lan(ifname: &str, remote_lans: Vec<ipnet::IpNet>) -> AfXdpConfig {
        let mut cfg = AfXdpConfig::new(ifname);
        cfg.rules = RedirectRules {
            esp: false,
            udp_encap_port: None,
            dst_prefixes: remote_lans,
        };
        cfg
    }

    /// Same as [`AfXdpConfig::wan`].
    pub fn new(ifname: &str) -> AfXdpConfig {
        AfXdpConfig {
            ifname: ifname.to_string(),
            queue: 0,
            mode: XdpMode::Auto,
            zero_copy: false,
            rules: RedirectRules {
                esp: true,
                udp_encap_port: Some(4500),
                dst_prefixes: Vec::new(),
            },
            peer_mac: None,
            next_hop: None,
            umem_chunks: 4096,
            port: PortId(0),
        }
    }
}

/// The program, its map and the attachment, shared by the ports (queues) of
/// one interface; the program detaches when the last port is dropped.
struct Steering {
    // The program holds its own reference; ours keeps the map reachable
    // for the lifetime of the ports it names.
    #[allow(dead_code)]
    map: XskMap,
    prog: XdpProgram,
    // Read only through Drop (detaches on netlink attach; closes the link fd).
    #[allow(dead_code)]
    attachment: XdpAttachment,
    mode: AttachMode,
}

/// An anonymous, page-aligned mapping for the UMEM.
struct Area {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: `Area` owns its mapping exclusively; moving it to another thread
// moves that ownership (no thread-local state).
unsafe impl Send for Area {}

impl Area {
    fn new(len: usize) -> io::Result<Area> {
        // SAFETY: anonymous private mapping, no fd; result checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(p as *mut u8)
            .map(|ptr| Area { ptr, len })
            .ok_or_else(|| io::Error::other("mmap returned null"))
    }

    fn as_slice_ptr(&self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(self.ptr, self.len)
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe the mapping created in `new`; the
        // rings that referenced it were dropped before (field order).
        unsafe { libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, self.len) };
    }
}

/// One AF_XDP socket on one (interface, queue).
pub struct AfXdpPort {
    // Rings first: they are dropped (and the socket closed) before the
    // UMEM area is unmapped.
    rx: RingRx,
    tx: RingTx,
    fq_cq: DeviceQueue,
    steering: Arc<Steering>,
    area: Area,
    /// Rx chunks waiting for room in the fill ring (capacity: all rx chunks).
    fill_pending: Vec<u64>,
    /// Tx chunks we own (capacity: all tx chunks).
    tx_free: Vec<u64>,
    eth_src: [u8; 6],
    eth_dst: [u8; 6],
    ifname: String,
    queue: u32,
    port: PortId,
    zero_copy: bool,
    stats: IoStats,
}

fn os(ifname: &str, what: &str, source: io::Error) -> IoError {
    IoError::Os {
        what: format!("{ifname}: {what}"),
        source,
    }
}

fn setup(ifname: &str, what: impl std::fmt::Display) -> IoError {
    IoError::Setup(format!("{ifname}: {what}"))
}

fn errno(e: xdpilone::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.get_raw().abs())
}

impl AfXdpPort {
    /// Opens queue `cfg.queue` of `cfg.ifname`, loads and attaches the XDP
    /// program. Must run in the network namespace of the interface.
    pub fn open(cfg: &AfXdpConfig) -> Result<AfXdpPort, IoError> {
        let mut ports = Self::open_queues(cfg, &[cfg.queue])?;
        ports.pop().ok_or_else(|| setup(&cfg.ifname, "no queue"))
    }

    /// Opens one port per rx queue in `queues`, sharing one program.
    pub fn open_queues(cfg: &AfXdpConfig, queues: &[u32]) -> Result<Vec<AfXdpPort>, IoError> {
        let name = &cfg.ifname;
        let c_name = CString::new(name.as_str()).map_err(|_| setup(name, "bad interface name"))?;
        // SAFETY: `c_name` is a valid NUL-terminated string for the call.
        let ifindex = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
        if ifindex == 0 {
            return Err(os(name, "no such interface", io::Error::last_os_error()));
        }
        let eth_src = interface_mac(name).map_err(|e| os(name, "read MAC", e))?;
        let eth_dst = match (cfg.peer_mac, cfg.next_hop) {
            (Some(mac), _) => mac,
            (None, Some(hop)) => resolve_neighbour(hop, Duration::from_secs(3))
                .map_err(|e| os(name, &format!("resolve next hop {hop}"), e))?,
            (None, None) => return Err(setup(name, "needs peer_mac or next_hop")),
        };
        let max_queue = queues.iter().copied().max().unwrap_or(0);
        let map = XskMap::create(max_queue.saturating_add(1).max(1)).map_err(|e| setup(name, e))?;
        let prog = XdpProgram::load(
            &bpf::redirect_program(map.as_raw_fd(), &cfg.rules).map_err(|e| setup(name, e))?,
        )
        .map_err(|e| setup(name, e))?;

        let mut ports = Vec::with_capacity(queues.len());
        let mut pending_sockets = Vec::with_capacity(queues.len());
        for &q in queues {
            let p = PortParts::open(cfg, ifindex, q, eth_src, eth_dst)?;
            pending_sockets.push((q, p.rx.as_raw_fd()));
            ports.push(p);
        }
        for &(q, fd) in &pending_sockets {
            map.insert(q, fd).map_err(|e| setup(name, e))?;
        }
        let attachment = attach(&prog, ifindex, cfg.mode).map_err(|e| setup(name, e))?;
        let steering = Arc::new(Steering {
            mode: attachment.mode(),
            map,
            prog,
            attachment,
        });
        Ok(ports
            .into_iter()
            .map(|p| p.finish(steering.clone()))
            .collect())
    }

    /// Where the XDP program runs (native or generic), as attached.
    pub fn attach_mode(&self) -> AttachMode {
        self.steering.mode
    }

    pub fn is_zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// The loaded steering program (for [`bpf::test_run`]).
    pub fn program(&self) -> &XdpProgram {
        &self.steering.prog
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    pub fn queue(&self) -> u32 {
        self.queue
    }

    pub fn macs(&self) -> ([u8; 6], [u8; 6]) {
        (self.eth_src, self.eth_dst)
    }

    /// Packets the kernel dropped for this socket: rx ring full, or no
    /// chunk on the fill ring (counted in `rx_dropped`; `XDP_STATISTICS` v2
    /// keeps ring-full apart). A `getsockopt`, not for the packet path.
    pub fn kernel_rx_dropped(&self) -> u64 {
        self.fq_cq
            .statistics_v2()
            .map(|s| s.rx_dropped + s.rx_ring_full)
            .unwrap_or(0)
    }

    /// Gives rx chunks back to the kernel, as many as the fill ring takes.
    fn refill(&mut self) {
        if self.fill_pending.is_empty() {
            return;
        }
        let mut w = self.fq_cq.fill(self.fill_pending.len() as u32);
        let n = w.insert(self.fill_pending.iter().copied()) as usize;
        w.commit();
        drop(w);
        self.fill_pending.drain(..n);
        if self.fq_cq.needs_wakeup() {
            self.fq_cq.wake();
        }
    }

    /// Takes transmitted chunks back from the completion ring.
    fn reap(&mut self) {
        let room = (self.tx_free.capacity() - self.tx_free.len()) as u32;
        if room == 0 {
            return;
        }
        let mut r = self.fq_cq.complete(room);
        while let Some(addr) = r.read() {
            self.tx_free.push(addr & !u64::from(CHUNK_SIZE - 1));
        }
        r.release();
    }

    /// Kicks the kernel to send what the tx ring holds. Copy mode sends at
    /// most a batch per call and answers EAGAIN when more is left, so a few
    /// calls (bounded) per burst.
    fn kick(&mut self) {
        for _ in 0..4 {
            if !self.tx.needs_wakeup() {
                return;
            }
            // SAFETY: zero-length sendto on our own socket fd; no buffers.
            let r = unsafe {
                libc::sendto(
                    self.tx.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if r >= 0 {
                return;
            }
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EBUSY) => continue,
                // ENOBUFS/ENETDOWN: the kernel keeps the descriptors; the
                // next burst kicks again.
                _ => return,
            }
        }
    }

    /// The bytes of a chunk region the kernel handed us, if in bounds.
    fn umem_bytes(&self, addr: u64, len: u32) -> Option<&[u8]> {
        let start = usize::try_from(addr).ok()?;
        let end = start.checked_add(len as usize)?;
        if end > self.area.len {
            return None;
        }
        // SAFETY: [start, end) lies inside the mapping (checked above), and
        // the chunk came from the rx ring, so the kernel does not write it
        // until we put it back on the fill ring.
        Some(unsafe { std::slice::from_raw_parts(self.area.ptr.as_ptr().add(start), len as usize) })
    }
}

/// A socket bound but not yet in the XSKMAP.
struct PortParts {
    rx: RingRx,
    tx: RingTx,
    fq_cq: DeviceQueue,
    area: Area,
    fill_pending: Vec<u64>,
    tx_free: Vec<u64>,
    cfg_name: String,
    queue: u32,
    port: PortId,
    eth_src: [u8; 6],
    eth_dst: [u8; 6],
    zero_copy: bool,
}

impl PortParts {
    fn open(
        cfg: &AfXdpConfig,
        ifindex: u32,
        queue: u32,
        eth_src: [u8; 6],
        eth_dst: [u8; 6],
    ) -> Result<PortParts, IoError> {
        let name = &cfg.ifname;
        let chunks = cfg.umem_chunks;
        if !chunks.is_power_of_two() || chunks < 2 * BURST_MAX as u32 {
            return Err(setup(
                name,
                format!("umem_chunks {chunks}: need a power of two ≥ 128"),
            ));
        }
        let half = chunks / 2;
        let area = Area::new(chunks as usize * CHUNK_SIZE as usize)
            .map_err(|e| os(name, "mmap UMEM", e))?;
        let umem_cfg = UmemConfig {
            fill_size: half,
            complete_size: half,
            frame_size: CHUNK_SIZE,
            headroom: 0,
            flags: 0,
        };
        // SAFETY: `area` is a page-aligned mapping of `chunks * CHUNK_SIZE`
        // bytes that outlives the sockets: it is stored in the port after
        // the rings, which are dropped first.
        let umem = unsafe { Umem::new(umem_cfg, area.as_slice_ptr()) }
            .map_err(|e| os(name, "register UMEM", errno(e)))?;
        let mut info = IfInfo::invalid();
        info.from_ifindex(ifindex)
            .map_err(|e| os(name, "interface info", errno(e)))?;
        info.set_queue(queue);
        let sock =
            Socket::with_shared(&info, &umem).map_err(|e| os(name, "XDP socket", errno(e)))?;
        let mut fq_cq = umem
            .fq_cq(&sock)
            .map_err(|e| os(name, "fill/completion rings", errno(e)))?;
        let ring = NonZeroU32::new(half);
        let modes: &[u16] = if cfg.zero_copy {
            &[SocketConfig::XDP_BIND_ZEROCOPY, SocketConfig::XDP_BIND_COPY]
        } else {
            &[SocketConfig::XDP_BIND_COPY]
        };
        let mut last = None;
        let mut bound = None;
        for &copy_flag in modes {
            let user = umem
                .rx_tx(
                    &sock,
                    &SocketConfig {
                        rx_size: ring,
                        tx_size: ring,
                        bind_flags: copy_flag | SocketConfig::XDP_BIND_NEED_WAKEUP,
                    },
                )
                .map_err(|e| os(name, "rx/tx rings", errno(e)))?;
            match bind_with_retry(&umem, &user) {
                Ok(()) => {
                    bound = Some((user, copy_flag == SocketConfig::XDP_BIND_ZEROCOPY));
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let (user, zero_copy) = match bound {
            Some(b) => b,
            None => {
                let e = last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL));
                return Err(os(name, &format!("bind queue {queue}"), e));
            }
        };
        let rx = user
            .map_rx()
            .map_err(|e| os(name, "map rx ring", errno(e)))?;
        let tx = user
            .map_tx()
            .map_err(|e| os(name, "map tx ring", errno(e)))?;

        // Rx chunks [0, half) go to the fill ring now; tx chunks [half, all)
        // start on our free list.
        let mut fill = fq_cq.fill(half);
        let filled = fill.insert((0..half).map(|i| u64::from(i) * u64::from(CHUNK_SIZE)));
        fill.commit();
        drop(fill);
        if filled != half {
            return Err(setup(
                name,
                format!("fill ring took {filled} of {half} chunks"),
            ));
        }
        let mut tx_free = Vec::with_capacity(half as usize);
        tx_free.extend((half..chunks).map(|i| u64::from(i) * u64::from(CHUNK_SIZE)));
        Ok(PortParts {
            rx,
            tx,
            fq_cq,
            area,
            fill_pending: Vec::with_capacity(half as usize),
            tx_free,
            cfg_name: name.clone(),
            queue,
            port: cfg.port,
            eth_src,
            eth_dst,
            zero_copy,
        })
    }

    fn finish(self, steering: Arc<Steering>) -> AfXdpPort {
        AfXdpPort {
            rx: self.rx,
            tx: self.tx,
            fq_cq: self.fq_cq,
            steering,
            area: self.area,
            fill_pending: self.fill_pending,
            tx_free: self.tx_free,
            eth_src: self.eth_src,
            eth_dst: self.eth_dst,
            ifname: self.cfg_name,
            queue: self.queue,
            port: self.port,
            zero_copy: self.zero_copy,
            stats: IoStats::default(),
        }
    }
}

/// A socket that was just closed on the same queue keeps it busy for a
/// moment: retry EBUSY with doubling sleeps, ~1.3 s at most.
fn bind_with_retry(umem: &Umem, user: &xdpilone::User) -> io::Result<()> {
    let mut delay = Duration::from_millis(10);
    for _ in 0..8 {
        match umem.bind(user) {
            Ok(()) => return Ok(()),
            Err(e) if e.get_raw().abs() == libc::EBUSY => {
                std::thread::sleep(delay);
                delay *= 2;
            }
            Err(e) => return Err(errno(e)),
        }
    }
    Err(io::Error::from_raw_os_error(libc::EBUSY))
}

/// Native first for `Auto`; EBUSY (a program being detached) retried.
fn attach(prog: &XdpProgram, ifindex: u32, mode: XdpMode) -> Result<XdpAttachment, bpf::BpfError> {
    let modes: &[AttachMode] = match mode {
        XdpMode::Auto => &[AttachMode::Driver, AttachMode::Skb],
        XdpMode::Native => &[AttachMode::Driver],
        XdpMode::Generic => &[AttachMode::Skb],
    };
    let mut last = None;
    for &m in modes {
        let mut delay = Duration::from_millis(10);
        for _ in 0..6 {
            match XdpAttachment::attach(prog, ifindex, m) {
                Ok(a) => return Ok(a),
                Err(e) if busy(&e) => {
                    std::thread::sleep(delay);
                    delay *= 2;
                    last = Some(e);
                }
                Err(e) => {
                    last = Some(e);
                    break;
                }
            }
        }
    }
    Err(last.unwrap_or(bpf::BpfError::BadJump))
}

fn busy(e: &bpf::BpfError) -> bool {
    match e {
        bpf::BpfError::Syscall { source, .. } | bpf::BpfError::Netlink(source) => {
            source.raw_os_error() == Some(libc::EBUSY)
        }
        _ => false,
    }
}

impl PacketIo for AfXdpPort {
    fn rx_burst(&mut self, pool: &mut Pool, burst: &mut Burst) -> Result<usize, IoError> {
        self.refill();
        let want = burst.room() as u32;
        if want == 0 {
            return Ok(0);
        }
        let mut descs = ArrayVec::<XdpDesc, BURST_MAX>::new();
        {
            let mut r = self.rx.receive(want);
            while let Some(d) = r.read() {
                if descs.try_push(d).is_err() {
                    break;
                }
            }
            r.release();
        }
        let mut got = 0;
        for d in &descs {
            // Aligned mode: the descriptor points past the kernel's headroom
            // into the chunk; the chunk base is the address rounded down.
            let chunk = d.addr & !u64::from(CHUNK_SIZE - 1);
            let ok = match self.umem_bytes(d.addr, d.len) {
                Some(bytes) => match ip_payload(bytes) {
                    Some(ip) => match pool.get() {
                        Some(mut frame) => {
                            if frame.set_data(ip) {
                                frame.port = self.port;
                                self.stats.rx_bytes += ip.len() as u64;
                                match burst.push(frame) {
                                    Ok(()) => true,
                                    Err(frame) => {
                                        pool.put(frame);
                                        false
                                    }
                                }
                            } else {
                                pool.put(frame);
                                false
                            }
                        }
                        None => false,
                    },
                    None => false,
                },
                None => false,
            };
            if ok {
                got += 1;
            } else {
                self.stats.rx_dropped += 1;
            }
            if self.fill_pending.len() < self.fill_pending.capacity() {
                self.fill_pending.push(chunk);
            }
        }
        self.stats.rx_packets += got as u64;
        self.refill();
        Ok(got)
    }

    fn tx_burst(&mut self, pool: &mut Pool, burst: &mut Burst) -> Result<usize, IoError> {
        self.reap();
        let mut descs = ArrayVec::<XdpDesc, BURST_MAX>::new();
        let base = self.area.ptr;
        let area_len = self.area.len;
        for frame in burst.drain() {
            let ip = frame.data();
            let ethertype = match ip.first().map(|b| b >> 4) {
                Some(4) => Some(ETHERTYPE_IPV4),
                Some(6) => Some(ETHERTYPE_IPV6),
                _ => None,
            };
            let len = ETH_HEADER_LEN + ip.len();
            if self.tx_free.is_empty() {
                // Copy mode completes during the kick's sendto, so chunks
                // of earlier bursts are usually back by now.
                self.reap();
            }
            match (ethertype, self.tx_free.pop()) {
                (Some(et), Some(chunk))
                    if len <= CHUNK_SIZE as usize && chunk as usize + len <= area_len =>
                {
                    // SAFETY: the chunk came off our free list, so neither
                    // the tx nor the completion ring holds it and the kernel
                    // does not read it; [chunk, chunk + len) is inside the
                    // mapping (checked in the guard).
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(base.as_ptr().add(chunk as usize), len)
                    };
                    dst[0..6].copy_from_slice(&self.eth_dst);
                    dst[6..12].copy_from_slice(&self.eth_src);
                    dst[12..14].copy_from_slice(&et.to_be_bytes());
                    dst[ETH_HEADER_LEN..].copy_from_slice(ip);
                    descs.push(XdpDesc {
                        addr: chunk,
                        len: len as u32,
                        options: 0,
                    });
                }
                (_, chunk) => {
                    if let Some(c) = chunk {
                        self.tx_free.push(c);
                    }
                    self.stats.tx_dropped += 1;
                }
            }
            pool.put(frame);
        }
        let mut sent = 0;
        if !descs.is_empty() {
            let mut w = self.tx.transmit(descs.len() as u32);
            sent = w.insert(descs.iter().copied()) as usize;
            w.commit();
            drop(w);
            // The tx ring is as large as the tx half of the UMEM, so it has
            // room for every chunk we own; anything else goes back unsent.
            for d in &descs[sent..] {
                self.tx_free.push(d.addr);
                self.stats.tx_dropped += 1;
            }
            for d in &descs[..sent] {
                self.stats.tx_bytes += u64::from(d.len) - ETH_HEADER_LEN as u64;
            }
            self.stats.tx_packets += sent as u64;
        }
        if sent > 0 || self.tx.pending() > 0 {
            self.kick();
        }
        Ok(sent)
    }

    fn stats(&self) -> IoStats {
        self.stats
    }
}

/// The IP packet inside an Ethernet frame, if it is IPv4/IPv6.
fn ip_payload(frame: &[u8]) -> Option<&[u8]> {
    let et = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    if et != ETHERTYPE_IPV4 && et != ETHERTYPE_IPV6 {
        return None;
    }
    frame.get(ETH_HEADER_LEN..)
}

/// The MAC address of `ifname` in the caller's network namespace.
pub fn interface_mac(ifname: &str) -> io::Result<[u8; 6]> {
    // SAFETY: plain socket(2); result checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let sock = OwnedSock(fd);
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = ifname.as_bytes();
    if name.len() >= req.ifr_name.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR reads `ifr_name` and writes `ifr_hwaddr` of the
    // `ifreq` we own, valid for the call.
    let r = unsafe { libc::ioctl(sock.0, libc::SIOCGIFHWADDR, &mut req) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after a successful SIOCGIFHWADDR the union holds `ifru_hwaddr`.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *m = *b as u8;
    }
    Ok(mac)
}

struct OwnedSock(RawFd);
impl Drop for OwnedSock {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.0) };
    }
}

/// Looks `hop` up in the kernel's ARP table (`/proc/net/arp`), first making
/// the kernel resolve it with a datagram to its discard port; polls until
/// `timeout`.
pub fn resolve_neighbour(hop: Ipv4Addr, timeout: Duration) -> io::Result<[u8; 6]> {
    if let Some(mac) = arp_lookup(hop)? {
        return Ok(mac);
    }
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    let _ = sock.send_to(&[0], (IpAddr::V4(hop), 9));
    let start = Instant::now();
    while start.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(20));
        if let Some(mac) = arp_lookup(hop)? {
            return Ok(mac);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no ARP entry for {hop}"),
    ))
}

fn arp_lookup(hop: Ipv4Addr) -> io::Result<Option<[u8; 6]>> {
    let table = std::fs::read_to_string("/proc/net/arp")?;
    Ok(parse_arp(&table, hop))
}

/// `/proc/net/arp`: IP, HW type, flags, HW address, mask, device. Flags 0x0
/// means incomplete.
fn parse_arp(table: &str, hop: Ipv4Addr) -> Option<[u8; 6]> {
    for line in table.lines().skip(1) {
        let mut f = line.split_whitespace();
        let (Some(ip), _, Some(flags), Some(hw)) = (f.next(), f.next(), f.next(), f.next()) else {
            continue;
        };
        if ip.parse::<Ipv4Addr>().ok() != Some(hop) || flags == "0x0" {
            continue;
        }
        if let Some(mac) = parse_mac(hw) {
            return Some(mac);
        }
    }
    None
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for m in mac.iter_mut() {
        *m = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_arp_table_skipping_incomplete() {
        let t = "IP address       HW type     Flags       HW address            Mask     Device\n\
                 10.0.0.1         0x1         0x0         00:00:00:00:00:00     *        eth0\n\
                 10.0.0.2         0x1         0x2         02:aa:bb:cc:dd:ee     *        eth0\n";
        assert_eq!(parse_arp(t, "10.0.0.1".parse().unwrap()), None);
        assert_eq!(
            parse_arp(t, "10.0.0.2".parse().unwrap()),
            Some([2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee])
        );
        assert_eq!(parse_mac("02:aa"), None);
        assert_eq!(parse_mac("1:2:3:4:5:6:7"), None);
    }

    #[test]
    fn ip_payload_strips_ethernet_and_rejects_others() {
        let mut f = [0u8; 20];
        f[12] = 0x08;
        f[14] = 0x45;
        assert_eq!(ip_payload(&f), Some(&f[14..]));
        f[12] = 0x08;
        f[13] = 0x06; // ARP
        assert_eq!(ip_payload(&f), None);
        assert_eq!(ip_payload(&f[..10]), None);
    }
}
