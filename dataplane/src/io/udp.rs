//! ESP-in-UDP (RFC 3948) on an ordinary UDP socket, usually port 4500.
//!
//! Runs unprivileged. The pipeline works on whole IP packets, so:
//! * **rx**: each datagram is copied into a frame and an outer IPv4/IPv6 +
//!   UDP header is synthesized in front of it (source from the datagram,
//!   destination from `IP_PKTINFO` or the socket's address). The UDP
//!   checksum of that synthetic header is 0: it never crossed a wire.
//! * **tx**: the outer IP + UDP header that ESP encapsulation wrote is
//!   stripped and the rest is sent to (outer dst address, UDP dst port).
//!
//! Batching: receive uses `recvmmsg` with UDP GRO through quinn-udp (one
//! syscall brings up to [`RX_SLOTS`] buffers, each holding up to 64
//! coalesced datagrams); send coalesces consecutive datagrams to the same
//! destination and of the same size into one GSO `sendmsg`. Datagrams that
//! cannot be coalesced go out with one `sendmsg` each (quinn-udp has no
//! `sendmmsg`). Both directions copy each datagram once (socket buffer ↔
//! frame): GRO/GSO need contiguous buffers larger than one frame.
//!
//! IKE shares the socket (RFC 3948 §2.2: IKE on 4500 starts with a 4-byte
//! zero non-ESP marker). Such datagrams go whole, marker included, to a
//! bounded channel the control plane reads ([`IkeChannel::rx`]); the control
//! plane sends its own 4500 datagrams (marker included, as the IKE machine
//! writes them) through [`IkeChannel::tx`], which this port drains at every
//! `rx_burst` and `tx_burst`. So the IKE daemon binds only port 500 itself
//! when the WAN uses this backend. NAT keepalives (one 0xFF byte, §2.3) are
//! counted and dropped.

use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr, UdpSocket};

use arrayvec::ArrayVec;
use crossbeam::channel::{bounded, Receiver, Sender, TrySendError};
use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};

use super::{IoError, IoStats, PacketIo};
use crate::buf::{Burst, Pool, PortId, FRAME_SIZE, HEADROOM};

/// Receive buffers per `recvmmsg` call.
pub const RX_SLOTS: usize = 8;
/// Bytes per receive buffer: the largest GRO aggregate the kernel builds.
const RX_SLOT_BYTES: usize = 64 * 1024;
/// Largest GSO send (the kernel limit for one UDP datagram train).
const TX_GSO_BYTES: usize = 64 * 1024;
/// RFC 3948 §2.2 non-ESP marker.
pub const NON_ESP_MARKER: [u8; 4] = [0; 4];
const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const UDP_HEADER: usize = 8;
const PROTO_UDP: u8 = 17;
/// Largest UDP payload that fits a frame behind the synthesized headers.
const MAX_PAYLOAD: usize = FRAME_SIZE - HEADROOM;

/// An IKE datagram received on, or to be sent from, the shared 4500
/// socket: the whole UDP payload, non-ESP marker included (the fields match
/// `espgate_controlplane::daemon::Datagram`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IkeDatagram {
    /// Our address the datagram arrived on (receive); ignored on send.
    pub local: SocketAddr,
    /// The other side: the sender on receive, the destination on send.
    pub remote: SocketAddr,
    pub data: Vec<u8>,
}

/// The control plane's end of the shared socket.
pub struct IkeChannel {
    /// IKE datagrams received on the port.
    pub rx: Receiver<IkeDatagram>,
    /// IKE datagrams for the port to send.
    pub tx: Sender<IkeDatagram>,
}

#[derive(Clone, Debug)]
pub struct UdpConfig {
    pub bind: SocketAddr,
    /// Frames received are tagged with this port id.
    pub port: PortId,
    /// Lets several workers bind the same address (the kernel spreads flows).
    pub reuse_port: bool,
    /// Capacity of each IKE channel direction.
    pub ike_queue: usize,
}

impl UdpConfig {
    pub fn new(bind: SocketAddr) -> UdpConfig {
        UdpConfig {
            bind,
            port: PortId(0),
            reuse_port: false,
            ike_queue: 256,
        }
    }
}

/// Counters beyond [`IoStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpStats {
    pub ike_rx: u64,
    pub ike_tx: u64,
    /// IKE datagrams dropped because the control plane's queue was full.
    pub ike_dropped: u64,
    pub keepalives: u64,
    /// `sendmsg` calls that carried more than one datagram.
    pub gso_batches: u64,
    /// Frames handed to tx that were not UDP-in-IP (e.g. raw ESP).
    pub tx_not_udp: u64,
    pub recv_calls: u64,
    pub send_calls: u64,
}

/// Where the rx loop stopped when the burst filled up.
#[derive(Clone, Copy, Default)]
struct Pending {
    /// Buffers filled by the last `recvmmsg`.
    count: usize,
    /// Next buffer to take datagrams from.
    slot: usize,
    /// Byte offset of the next datagram in that buffer.
    offset: usize,
}

pub struct UdpPort {
    socket: UdpSocket,
    state: UdpSocketState,
    local: SocketAddr,
    port: PortId,
    rx_slots: Vec<Box<[u8]>>,
    rx_meta: [RecvMeta; RX_SLOTS],
    pending: Pending,
    tx_buf: Box<[u8]>,
    ike_to_cp: Sender<IkeDatagram>,
    ike_from_cp: Receiver<IkeDatagram>,
    stats: IoStats,
    udp_stats: UdpStats,
}

fn os(what: &str) -> impl FnOnce(std::io::Error) -> IoError + '_ {
    move |source| IoError::Os {
        what: what.to_string(),
        source,
    }
}

impl UdpPort {
    /// Binds the socket and returns the port and the control plane's end of
    /// the IKE channel.
    pub fn bind(cfg: &UdpConfig) -> Result<(UdpPort, IkeChannel), IoError> {
        use socket2::{Domain, Protocol, Socket, Type};
        let domain = if cfg.bind.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
            .map_err(os("creating UDP socket"))?;
        if cfg.bind.is_ipv6() {
            sock.set_only_v6(false)
                .map_err(os("clearing IPV6_V6ONLY"))?;
        }
        if cfg.reuse_port {
            sock.set_reuse_port(true)
                .map_err(os("setting SO_REUSEPORT"))?;
        }
        sock.bind(&cfg.bind.into()).map_err(|source| IoError::Os {
            what: format!("binding UDP {}", cfg.bind),
            source,
        })?;
        let socket: UdpSocket = sock.into();
        let state = UdpSocketState::new(UdpSockRef::from(&socket))
            .map_err(os("configuring UDP socket (GRO/GSO/pktinfo)"))?;
        let local = socket.local_addr().map_err(os("reading local address"))?;
        let (to_cp, cp_rx) = bounded(cfg.ike_queue.max(1));
        let (cp_tx, from_cp) = bounded(cfg.ike_queue.max(1));
        let port = UdpPort {
            socket,
            state,
            local,
            port: cfg.port,
            rx_slots: (0..RX_SLOTS)
                .map(|_| vec![0u8; RX_SLOT_BYTES].into_boxed_slice())
                .collect(),
            rx_meta: [RecvMeta::default(); RX_SLOTS],
            pending: Pending::default(),
            tx_buf: vec![0u8; TX_GSO_BYTES].into_boxed_slice(),
            ike_to_cp: to_cp,
            ike_from_cp: from_cp,
            stats: IoStats::default(),
            udp_stats: UdpStats::default(),
        };
        Ok((
            port,
            IkeChannel {
                rx: cp_rx,
                tx: cp_tx,
            },
        ))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn udp_stats(&self) -> UdpStats {
        self.udp_stats
    }

    /// Largest number of datagrams the kernel takes in one GSO send (1 when
    /// GSO is unavailable).
    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Sends what the control plane queued, bounded by the queue's capacity.
    fn drain_ike(&mut self) {
        for _ in 0..64 {
            let Ok(d) = self.ike_from_cp.try_recv() else {
                return;
            };
            let t = Transmit {
                destination: d.remote,
                ecn: None,
                contents: &d.data,
                segment_size: None,
                src_ip: None,
            };
            self.udp_stats.send_calls += 1;
            match self.state.try_send(UdpSockRef::from(&self.socket), &t) {
                Ok(()) => self.udp_stats.ike_tx += 1,
                Err(_) => self.udp_stats.ike_dropped += 1,
            }
        }
    }

    /// Turns the datagrams of the last `recvmmsg` into frames until the
    /// burst is full; remembers where it stopped.
    fn take_pending(&mut self, pool: &mut Pool, burst: &mut Burst) -> usize {
        let mut added = 0;
        while self.pending.slot < self.pending.count {
            let meta = self.rx_meta[self.pending.slot];
            let total = meta.len.min(RX_SLOT_BYTES);
            let stride = if meta.stride == 0 { total } else { meta.stride };
            while self.pending.offset < total {
                if burst.room() == 0 {
                    return added;
                }
                let start = self.pending.offset;
                let end = (start + stride).min(total);
                self.pending.offset = end;
                let from = canonical(meta.addr);
                let to_ip = meta
                    .dst_ip
                    .map(canonical_ip)
                    .unwrap_or_else(|| canonical_ip(self.local.ip()));
                let to = SocketAddr::new(to_ip, self.local.port());
                // Split borrow: the slot is read while stats and pool change.
                let slot = std::mem::take(&mut self.rx_slots[self.pending.slot]);
                if self.deliver(&slot[start..end], from, to, pool, burst) {
                    added += 1;
                }
                self.rx_slots[self.pending.slot] = slot;
            }
            self.pending.slot += 1;
            self.pending.offset = 0;
        }
        added
    }

    /// One received datagram: IKE to the control plane, keepalive dropped,
    /// ESP into a frame with synthesized headers. True if a frame was added.
    fn deliver(
        &mut self,
        dgram: &[u8],
        from: SocketAddr,
        to: SocketAddr,
        pool: &mut Pool,
        burst: &mut Burst,
    ) -> bool {
        if dgram.len() == 1 && dgram[0] == 0xff {
            self.udp_stats.keepalives += 1;
            return false;
        }
        if dgram.len() >= 4 && dgram[..4] == NON_ESP_MARKER {
            let d = IkeDatagram {
                local: to,
                remote: from,
                data: dgram.to_vec(),
            };
            match self.ike_to_cp.try_send(d) {
                Ok(()) => self.udp_stats.ike_rx += 1,
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.udp_stats.ike_dropped += 1
                }
            }
            return false;
        }
        let v4 = matches!((from.ip(), to.ip()), (IpAddr::V4(_), IpAddr::V4(_)));
        let outer = if v4 { IPV4_HEADER } else { IPV6_HEADER } + UDP_HEADER;
        if dgram.len() > MAX_PAYLOAD {
            self.stats.rx_dropped += 1;
            return false;
        }
        let Some(mut frame) = pool.get() else {
            self.stats.rx_dropped += 1;
            return false;
        };
        let head = HEADROOM - outer;
        {
            let (buf, _, _) = frame.raw_mut();
            buf[HEADROOM..HEADROOM + dgram.len()].copy_from_slice(dgram);
            write_outer(&mut buf[head..HEADROOM], from, to, dgram.len());
        }
        frame.set_bounds(head, outer + dgram.len());
        frame.port = self.port;
        self.stats.rx_packets += 1;
        self.stats.rx_bytes += frame.len() as u64;
        match burst.push(frame) {
            Ok(()) => true,
            Err(f) => {
                pool.put(f);
                self.stats.rx_dropped += 1;
                false
            }
        }
    }

    /// Sends `count` datagrams of `seg` bytes (last may be shorter) that sit
    /// back to back in `tx_buf[..len]`. Falls back to one send each if the
    /// GSO send fails (some devices reject GSO with EIO/EINVAL).
    fn send_batch(&mut self, dest: SocketAddr, len: usize, seg: usize, count: usize) -> usize {
        let t = Transmit {
            destination: dest,
            ecn: None,
            contents: &self.tx_buf[..len],
            segment_size: (count > 1).then_some(seg),
            src_ip: None,
        };
        self.udp_stats.send_calls += 1;
        match self.state.try_send(UdpSockRef::from(&self.socket), &t) {
            Ok(()) => {
                if count > 1 {
                    self.udp_stats.gso_batches += 1;
                }
                self.stats.tx_packets += count as u64;
                self.stats.tx_bytes += len as u64;
                count
            }
            Err(_) if count > 1 => {
                let mut sent = 0;
                let mut off = 0;
                while off < len {
                    let end = (off + seg).min(len);
                    let t = Transmit {
                        destination: dest,
                        ecn: None,
                        contents: &self.tx_buf[off..end],
                        segment_size: None,
                        src_ip: None,
                    };
                    self.udp_stats.send_calls += 1;
                    if self
                        .state
                        .try_send(UdpSockRef::from(&self.socket), &t)
                        .is_ok()
                    {
                        sent += 1;
                        self.stats.tx_packets += 1;
                        self.stats.tx_bytes += (end - off) as u64;
                    } else {
                        self.stats.tx_dropped += 1;
                    }
                    off = end;
                }
                sent
            }
            Err(_) => {
                self.stats.tx_dropped += count as u64;
                0
            }
        }
    }
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// Writes an outer IP + UDP header for a datagram of `payload` bytes into
/// `out` (exactly 28 bytes for IPv4, 48 for IPv6).
fn write_outer(out: &mut [u8], from: SocketAddr, to: SocketAddr, payload: usize) {
    let udp_len = (UDP_HEADER + payload) as u16;
    let ip_len = match (from.ip(), to.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = (IPV4_HEADER + UDP_HEADER + payload) as u16;
            let h = &mut out[..IPV4_HEADER];
            h.fill(0);
            h[0] = 0x45;
            h[2..4].copy_from_slice(&total.to_be_bytes());
            h[6] = 0x40; // DF, as the socket sends with PMTU discovery
            h[8] = 64;
            h[9] = PROTO_UDP;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let c = ipv4_checksum(h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            IPV4_HEADER
        }
        (s, d) => {
            let s = to_v6(s);
            let d = to_v6(d);
            let h = &mut out[..IPV6_HEADER];
            h.fill(0);
            h[0] = 0x60;
            h[4..6].copy_from_slice(&udp_len.to_be_bytes());
            h[6] = PROTO_UDP;
            h[7] = 64;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
            IPV6_HEADER
        }
    };
    let u = &mut out[ip_len..ip_len + UDP_HEADER];
    u[0..2].copy_from_slice(&from.port().to_be_bytes());
    u[2..4].copy_from_slice(&to.port().to_be_bytes());
    u[4..6].copy_from_slice(&udp_len.to_be_bytes());
    u[6..8].copy_from_slice(&[0, 0]);
}

fn to_v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// RFC 791 header checksum (one's complement sum of 16-bit words).
pub(crate) fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for (i, pair) in header.chunks(2).enumerate() {
        if i == 5 {
            continue; // the checksum field itself
        }
        let w = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += w as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The UDP payload of an outer IP+UDP packet and where it goes, or None if
/// the packet is not UDP in IPv4/IPv6 (or is truncated).
pub(crate) fn split_outer(pkt: &[u8]) -> Option<(SocketAddr, &[u8])> {
    let (ip_len, proto, dst) = match pkt.first()? >> 4 {
        4 => {
            let ihl = (*pkt.first()? as usize & 0xf) * 4;
            if ihl < IPV4_HEADER || pkt.len() < ihl {
                return None;
            }
            let d: [u8; 4] = pkt.get(16..20)?.try_into().ok()?;
            (ihl, pkt[9], IpAddr::from(d))
        }
        6 => {
            let d: [u8; 16] = pkt.get(24..40)?.try_into().ok()?;
            (IPV6_HEADER, *pkt.get(6)?, IpAddr::from(d))
        }
        _ => return None,
    };
    if proto != PROTO_UDP {
        return None;
    }
    let udp = pkt.get(ip_len..ip_len + UDP_HEADER)?;
    let port = u16::from_be_bytes([udp[2], udp[3]]);
    Some((SocketAddr::new(dst, port), &pkt[ip_len + UDP_HEADER..]))
}

impl PacketIo for UdpPort {
    fn rx_burst(&mut self, pool: &mut Pool, burst: &mut Burst) -> Result<usize, IoError> {
        self.drain_ike();
        let mut added = self.take_pending(pool, burst);
        // A bounded number of syscalls per burst: stop when the socket is
        // empty, the burst is full, or after a few rounds.
        for _ in 0..4 {
            if burst.room() == 0 {
                break;
            }
            let mut bufs: ArrayVec<IoSliceMut<'_>, RX_SLOTS> = self
                .rx_slots
                .iter_mut()
                .map(|s| IoSliceMut::new(&mut s[..]))
                .collect();
            self.udp_stats.recv_calls += 1;
            let n =
                match self
                    .state
                    .recv(UdpSockRef::from(&self.socket), &mut bufs, &mut self.rx_meta)
                {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    // ICMP errors reported on the socket (port unreachable on a
                    // previous send) are not fatal for a receiving port.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                    Err(source) => {
                        return Err(IoError::Os {
                            what: "recvmmsg on UDP port".into(),
                            source,
                        })
                    }
                };
            drop(bufs);
            self.pending = Pending {
                count: n.min(RX_SLOTS),
                slot: 0,
                offset: 0,
            };
            added += self.take_pending(pool, burst);
        }
        Ok(added)
    }

    fn tx_burst(&mut self, pool: &mut Pool, burst: &mut Burst) -> Result<usize, IoError> {
        self.drain_ike();
        let max_segs = self.state.max_gso_segments().max(1);
        let mut sent = 0;
        // The current GSO train: destination, segment size, bytes, count.
        let mut train: Option<(SocketAddr, usize, usize, usize)> = None;
        let frames: ArrayVec<_, { crate::buf::BURST_MAX }> = burst.drain().collect();
        for frame in frames {
            let Some((dest, payload)) = split_outer(frame.data()) else {
                self.udp_stats.tx_not_udp += 1;
                self.stats.tx_dropped += 1;
                pool.put(frame);
                continue;
            };
            let plen = payload.len();
            // Can this datagram join the train? Same destination, same size
            // as the first (a shorter one may end it), room left.
            if let Some((d, seg, len, count)) = train {
                let joins = d == dest
                    && plen <= seg
                    && count < max_segs
                    && len + plen <= self.tx_buf.len()
                    && len % seg == 0;
                if !joins {
                    sent += self.send_batch(d, len, seg, count);
                    train = None;
                }
            }
            let (d, seg, len, count) = train.unwrap_or((dest, plen.max(1), 0, 0));
            if plen > self.tx_buf.len() {
                self.stats.tx_dropped += 1;
                pool.put(frame);
                continue;
            }
            self.tx_buf[len..len + plen].copy_from_slice(payload);
            train = Some((d, seg, len + plen, count + 1));
            pool.put(frame);
        }
        if let Some((d, seg, len, count)) = train {
            sent += self.send_batch(d, len, seg, count);
        }
        Ok(sent)
    }

    fn stats(&self) -> IoStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outer_header_round_trips() {
        let from: SocketAddr = "10.255.2.2:4500".parse().unwrap();
        let to: SocketAddr = "10.255.1.2:4500".parse().unwrap();
        let mut pkt = vec![0u8; 28 + 5];
        write_outer(&mut pkt[..28], from, to, 5);
        pkt[28..].copy_from_slice(b"hello");
        assert_eq!(
            ipv4_checksum(&pkt[..20]),
            u16::from_be_bytes([pkt[10], pkt[11]])
        );
        let (dest, payload) = split_outer(&pkt).unwrap();
        assert_eq!(dest, to);
        assert_eq!(payload, b"hello");
        // Not UDP: refused.
        pkt[9] = 50;
        assert!(split_outer(&pkt).is_none());
        assert!(split_outer(&[0x45, 0, 0]).is_none());
        assert!(split_outer(&[]).is_none());
    }

    #[test]
    fn ipv4_checksum_matches_rfc1071_example() {
        // Header from RFC 1071 style worked example (checksum 0xb861).
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_checksum(&h), 0xb861);
    }
}
