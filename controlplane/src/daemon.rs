//! The driver around the sans-IO [`Machine`]: it owns the clock, feeds the
//! machine datagrams, dataplane events and timeouts, and carries out what the
//! machine asks for (datagrams to send, control messages for the dataplane).
//!
//! Everything arrives on crossbeam channels, so one `select!` waits on all
//! inputs and the next timer at once. Sockets sit in [`UdpIke`]: one
//! receiving thread per socket turns datagrams into channel messages. The
//! dataplane is reached through a plain callback, so the same daemon drives
//! an in-process dataplane or one behind a Unix socket.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{select, Receiver, Sender};
use espgate_dataplane::api::{ControlMsg, DataplaneEvent};
use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};

use crate::machine::{IkeEvent, Machine, Transmit};

/// One received datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub data: Vec<u8>,
}

/// A question or command for the machine (`show crypto ikev2 sa`, delete
/// on shutdown), run on the daemon thread between inputs; what it makes the
/// machine send goes out right after.
pub type Inspect = Box<dyn FnOnce(&mut Machine, Instant) + Send>;

/// Longest the loop sleeps with no timer pending, so `stop` is noticed.
const IDLE_WAIT: Duration = Duration::from_millis(200);

pub struct Daemon {
    machine: Machine,
    datagrams: Receiver<Datagram>,
    events: Receiver<DataplaneEvent>,
    inspect: Receiver<Inspect>,
    send: Box<dyn FnMut(Transmit) + Send>,
    dataplane: Box<dyn FnMut(ControlMsg) + Send>,
    log: Box<dyn FnMut(&IkeEvent) + Send>,
}

impl Daemon {
    pub fn new(
        machine: Machine,
        datagrams: Receiver<Datagram>,
        events: Receiver<DataplaneEvent>,
        inspect: Receiver<Inspect>,
        send: Box<dyn FnMut(Transmit) + Send>,
        dataplane: Box<dyn FnMut(ControlMsg) + Send>,
        log: Box<dyn FnMut(&IkeEvent) + Send>,
    ) -> Daemon {
        Daemon {
            machine,
            datagrams,
            events,
            inspect,
            send,
            dataplane,
            log,
        }
    }

    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// Runs until `stop` is set or every input channel is closed.
    pub fn run(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            if !self.step(IDLE_WAIT) {
                break;
            }
        }
    }

    /// Waits for one input (or the next timer, or `max_wait`), handles it,
    /// then drains the machine's outputs. False when the inputs are closed.
    pub fn step(&mut self, max_wait: Duration) -> bool {
        // Idle time (nothing waiting) makes the next handshake's DH key
        // pairs, so a tunnel comes up with one modpow per side instead of
        // two; a waiting input is never delayed by it.
        let idle = self.datagrams.is_empty() && self.events.is_empty() && self.inspect.is_empty();
        let max_wait = if idle && self.machine.precompute_dh(2) {
            Duration::ZERO
        } else {
            max_wait
        };
        let now = Instant::now();
        let wait = self
            .machine
            .poll_timeout()
            .map(|t| t.saturating_duration_since(now))
            .unwrap_or(max_wait)
            .min(max_wait);
        let mut open = true;
        select! {
            recv(self.datagrams) -> d => match d {
                Ok(d) => self.machine.handle_datagram(Instant::now(), d.local, d.remote, &d.data),
                Err(_) => open = false,
            },
            recv(self.events) -> ev => match ev {
                Ok(ev) => self.machine.handle_dataplane(Instant::now(), ev),
                Err(_) => open = false,
            },
            recv(self.inspect) -> q => {
                if let Ok(q) = q {
                    q(&mut self.machine, Instant::now());
                }
            },
            default(wait) => {}
        }
        let now = Instant::now();
        if self.machine.poll_timeout().is_some_and(|t| t <= now) {
            self.machine.handle_timeout(now);
        }
        self.drain();
        open
    }

    fn drain(&mut self) {
        while let Some(msg) = self.machine.poll_control() {
            (self.dataplane)(msg);
        }
        while let Some(t) = self.machine.poll_transmit() {
            (self.send)(t);
        }
        while let Some(ev) = self.machine.poll_event() {
            (self.log)(&ev);
        }
    }
}

/// IKE's two UDP sockets (500 and 4500 by default), driven with quinn-udp.
pub struct UdpIke {
    sockets: Vec<(Arc<UdpSocket>, Arc<UdpSocketState>, SocketAddr)>,
}

impl UdpIke {
    /// Binds `local` on both ports. Port 0 picks a free port (tests).
    pub fn bind(local: IpAddr, ike_port: u16, nat_port: u16) -> io::Result<UdpIke> {
        UdpIke::bind_ports(local, &[ike_port, nat_port])
    }

    /// Binds `local` on each of `ports` (IKE only, when the dataplane's
    /// ESP-in-UDP socket owns 4500 and hands IKE over by channel).
    pub fn bind_ports(local: IpAddr, ports: &[u16]) -> io::Result<UdpIke> {
        let mut sockets = Vec::new();
        for &port in ports {
            let sock = UdpSocket::bind(SocketAddr::new(local, port)).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("bind {}: {e}", SocketAddr::new(local, port)),
                )
            })?;
            let state = UdpSocketState::new(UdpSockRef::from(&sock))?;
            // quinn-udp makes the socket non-blocking; the receivers block
            // with a timeout instead (so they notice `stop` without spinning).
            sock.set_nonblocking(false)?;
            sock.set_read_timeout(Some(IDLE_WAIT))?;
            let addr = sock.local_addr()?;
            sockets.push((Arc::new(sock), Arc::new(state), addr));
        }
        Ok(UdpIke { sockets })
    }

    /// The bound addresses: IKE port first, then NAT-T.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets.iter().map(|s| s.2).collect()
    }

    /// Starts one thread per socket that forwards datagrams to `tx`.
    pub fn spawn_receivers(
        &self,
        tx: Sender<Datagram>,
        stop: Arc<AtomicBool>,
    ) -> Vec<JoinHandle<()>> {
        self.sockets
            .iter()
            .filter_map(|(sock, state, local)| {
                let (sock, state, local, tx, stop) = (
                    sock.clone(),
                    state.clone(),
                    *local,
                    tx.clone(),
                    stop.clone(),
                );
                std::thread::Builder::new()
                    .name(format!("espgate-ike-rx{}", local.port()))
                    .spawn(move || {
                        let mut buf = vec![0u8; 65536];
                        while !stop.load(Ordering::Relaxed) {
                            let mut meta = [RecvMeta::default()];
                            let mut bufs = [io::IoSliceMut::new(&mut buf)];
                            let n = match state.recv(UdpSockRef::from(&*sock), &mut bufs, &mut meta)
                            {
                                Ok(n) => n,
                                Err(e)
                                    if e.kind() == io::ErrorKind::WouldBlock
                                        || e.kind() == io::ErrorKind::TimedOut =>
                                {
                                    continue
                                }
                                Err(_) => break,
                            };
                            if n == 0 {
                                continue;
                            }
                            let m = meta[0];
                            let local =
                                SocketAddr::new(m.dst_ip.unwrap_or(local.ip()), local.port());
                            // GRO may pack several datagrams; IKE never sends
                            // same-size bursts, but split by stride anyway.
                            for chunk in bufs[0][..m.len].chunks(m.stride.max(1)) {
                                let d = Datagram {
                                    local,
                                    remote: m.addr,
                                    data: chunk.to_vec(),
                                };
                                if tx.send(d).is_err() {
                                    return;
                                }
                            }
                        }
                    })
                    .ok()
            })
            .collect()
    }

    /// A sender for [`Daemon::new`]: picks the socket by the transmit's
    /// local port (4500 after NAT-T floating), else the IKE socket.
    pub fn sender(&self) -> Box<dyn FnMut(Transmit) + Send> {
        let sockets = self.sockets.clone();
        Box::new(move |t: Transmit| {
            let Some((sock, state, _)) = sockets
                .iter()
                .find(|s| s.2.port() == t.local.port())
                .or(sockets.first())
            else {
                return;
            };
            let tx = quinn_udp::Transmit {
                destination: t.remote,
                ecn: None,
                contents: &t.data,
                segment_size: None,
                src_ip: None,
            };
            // A lost IKE datagram is recovered by the machine's retransmission.
            let _ = state.try_send(UdpSockRef::from(&**sock), &tx);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam::channel::unbounded;

    #[test]
    fn udp_ike_round_trips_a_datagram_on_loopback() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let a = UdpIke::bind(lo, 0, 0).unwrap();
        let b = UdpIke::bind(lo, 0, 0).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = unbounded();
        let threads = b.spawn_receivers(tx, stop.clone());
        let mut send = a.sender();
        let (a_ike, b_nat) = (a.local_addrs()[0], b.local_addrs()[1]);
        send(Transmit {
            local: a_ike,
            remote: b_nat,
            data: vec![0, 0, 0, 0, 1, 2, 3],
        });
        let d = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(d.remote, a_ike);
        assert_eq!(d.local.port(), b_nat.port());
        assert_eq!(d.data, vec![0, 0, 0, 0, 1, 2, 3]);
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
    }
}
