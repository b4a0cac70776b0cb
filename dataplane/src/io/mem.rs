//! In-memory links for tests, the demo and benches.
//!
//! [`MemLink::pair`] gives two [`MemPort`]s joined back to back: what one
//! sends, the other receives. Frames *move* between the two sides, they are
//! not copied. To keep every [`Pool`] at its size, each hop is an exchange:
//! the receiver hands one of its own free frames back through a `spare`
//! ring for every frame it takes, and the sender takes one spare frame for
//! every frame it sends. The link owns exactly `capacity` frames per
//! direction, spread over the `fwd` and `spare` rings, so neither ring can
//! overflow and nothing is allocated after [`MemLink::pair`].
//!
//! [`MemHost`] is the outside world's end of a port (a LAN host, a test):
//! it sends and receives plain packet bytes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam::queue::ArrayQueue;

use super::{IoError, IoStats, PacketIo};
use crate::buf::{Burst, Frame, Pool, PortId, BURST_MAX};

/// One direction of a link.
struct Ring {
    /// Frames in flight, in order.
    fwd: ArrayQueue<Frame>,
    /// Empty frames the receiver gave back for the sender's pool.
    spare: ArrayQueue<Frame>,
}

impl Ring {
    fn new(capacity: usize) -> Ring {
        let spare = ArrayQueue::new(capacity);
        for _ in 0..capacity {
            // Cannot fail: exactly `capacity` frames into a ring of that size.
            let _ = spare.push(Frame::new());
        }
        Ring {
            fwd: ArrayQueue::new(capacity),
            spare,
        }
    }
}

/// Packets lost or reordered on purpose, for tests of loss and reordering.
/// Counted per sending port, by packet index starting at 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Drop every Nth packet sent (counted in `tx_dropped` and `faults_dropped`).
    pub drop_every: Option<u32>,
    /// Hold back every Nth packet and send it after the next one.
    pub reorder_every: Option<u32>,
}

/// Counts shared by both ends, readable from any thread (the worker owns
/// the port; a test or `show` reads these).
#[derive(Default)]
struct SharedStats {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    rx_dropped: AtomicU64,
    tx_dropped: AtomicU64,
    faults_dropped: AtomicU64,
}

/// Adds to a counter only the owning port's thread writes: a plain load
/// and store, no atomic read-modify-write on the packet path.
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

impl SharedStats {
    fn snapshot(&self) -> IoStats {
        IoStats {
            rx_packets: self.rx_packets.load(Ordering::Relaxed),
            rx_bytes: self.rx_bytes.load(Ordering::Relaxed),
            tx_packets: self.tx_packets.load(Ordering::Relaxed),
            tx_bytes: self.tx_bytes.load(Ordering::Relaxed),
            rx_dropped: self.rx_dropped.load(Ordering::Relaxed),
            tx_dropped: self.tx_dropped.load(Ordering::Relaxed),
        }
    }
}

/// Creates in-memory links.
pub struct MemLink;

impl MemLink {
    /// Two ports joined back to back, each direction holding up to
    /// `capacity` packets in flight (at least 1).
    pub fn pair(capacity: usize) -> (MemPort, MemPort) {
        let capacity = capacity.max(1);
        let a_to_b = Arc::new(Ring::new(capacity));
        let b_to_a = Arc::new(Ring::new(capacity));
        let a = MemPort::new(a_to_b.clone(), b_to_a.clone());
        let b = MemPort::new(b_to_a, a_to_b);
        (a, b)
    }
}

/// One end of a [`MemLink`], driven by a worker like any other backend.
pub struct MemPort {
    tx: Arc<Ring>,
    rx: Arc<Ring>,
    port: PortId,
    faults: Faults,
    sent_index: u64,
    held: Option<Frame>,
    stats: Arc<SharedStats>,
}

/// A read-only view of a port's counters that another thread can keep.
#[derive(Clone)]
pub struct MemStatsHandle(Arc<SharedStats>);

impl MemStatsHandle {
    pub fn get(&self) -> IoStats {
        self.0.snapshot()
    }
    /// Packets dropped by fault injection (also in `tx_dropped`).
    pub fn faults_dropped(&self) -> u64 {
        self.0.faults_dropped.load(Ordering::Relaxed)
    }
}

impl MemPort {
    fn new(tx: Arc<Ring>, rx: Arc<Ring>) -> MemPort {
        MemPort {
            tx,
            rx,
            port: PortId(0),
            faults: Faults::default(),
            sent_index: 0,
            held: None,
            stats: Arc::new(SharedStats::default()),
        }
    }

    /// Received frames are tagged with this port id.
    pub fn with_port(mut self, port: PortId) -> MemPort {
        self.port = port;
        self
    }

    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    pub fn stats_handle(&self) -> MemStatsHandle {
        MemStatsHandle(self.stats.clone())
    }

    /// Packets this end can send before the link is full.
    pub fn tx_room(&self) -> usize {
        self.tx.spare.len()
    }

    /// Packets waiting to be received on this end.
    pub fn pending(&self) -> usize {
        self.rx.fwd.len()
    }

    /// Sends a frame held back by reordering, if any (so that a test's last
    /// packet is not stuck). Returns true if one went out.
    pub fn flush(&mut self, pool: &mut Pool) -> bool {
        match self.held.take() {
            Some(f) => self.send_one(f, pool),
            None => false,
        }
    }

    /// Exchanges `frame` for a spare frame of the link. On a full link the
    /// frame goes back to `pool` and is counted as dropped.
    fn send_one(&mut self, frame: Frame, pool: &mut Pool) -> bool {
        let len = frame.len() as u64;
        match self.tx.spare.pop() {
            Some(spare) => {
                // Cannot fail: a spare was taken, so `fwd` has room for one.
                if let Err(f) = self.tx.fwd.push(frame) {
                    pool.put(f);
                    let _ = self.tx.spare.push(spare);
                    bump(&self.stats.tx_dropped, 1);
                    return false;
                }
                pool.put(spare);
                bump(&self.stats.tx_packets, 1);
                bump(&self.stats.tx_bytes, len);
                true
            }
            None => {
                pool.put(frame);
                bump(&self.stats.tx_dropped, 1);
                false
            }
        }
    }
}

impl PacketIo for MemPort {
    fn rx_burst(&mut self, pool: &mut Pool, burst: &mut Burst) -> Result<usize, IoError> {
        let mut n = 0;
        while burst.room() > 0 {
            if self.rx.fwd.is_empty() {
                break;
            }
            // Our own frame goes back to the sender in exchange.
            let Some(mine) = pool.get() else {
                // Leave the packet in the ring: it is received once the
                // pool has frames again (or the ring fills and the sender drops).
                break;
            };
            let Some(mut frame) = self.rx.fwd.pop() else {
                pool.put(mine);
                break;
            };
            // Cannot fail: the link's frame count per direction is fixed.
            let _ = self.rx.spare.push(mine);
            frame.port = self.port;
            bump(&self.stats.rx_packets, 1);
            bump(&self.stats.rx_bytes, frame.len() as u64);
            if let Err(f) = burst.push(frame) {
                pool.put(f);
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    fn tx_burst(&mut self, pool: &mut Pool, burst: &mut Burst) -> Result<usize, IoError> {
        let mut sent = 0;
        for frame in burst.drain() {
            self.sent_index += 1;
            let i = self.sent_index;
            if self
                .faults
                .drop_every
                .is_some_and(|n| n > 0 && i.is_multiple_of(n as u64))
            {
                pool.put(frame);
                bump(&self.stats.tx_dropped, 1);
                bump(&self.stats.faults_dropped, 1);
                continue;
            }
            if self.held.is_none()
                && self
                    .faults
                    .reorder_every
                    .is_some_and(|n| n > 0 && i.is_multiple_of(n as u64))
            {
                self.held = Some(frame);
                continue;
            }
            if self.send_one(frame, pool) {
                sent += 1;
            }
            if let Some(h) = self.held.take() {
                if self.send_one(h, pool) {
                    sent += 1;
                }
            }
        }
        Ok(sent)
    }

    fn stats(&self) -> IoStats {
        self.stats.snapshot()
    }
}

/// The outside end of a port: a host or a test that sends and receives raw
/// IP packets. It keeps a small pool of its own; allocation happens only in
/// `recv_vec`, which is for tests and the demo, not the packet path.
pub struct MemHost {
    port: MemPort,
    pool: Pool,
    rx: Burst,
    tx: Burst,
}

impl MemHost {
    /// `frames` = size of the host's own pool (at least the link capacity
    /// is a good choice).
    pub fn new(port: MemPort, frames: usize) -> MemHost {
        MemHost {
            port,
            pool: Pool::new(frames.max(BURST_MAX)),
            rx: Burst::new(),
            tx: Burst::new(),
        }
    }

    /// Sends one packet. False if it did not fit a frame, the host pool is
    /// empty or the link is full.
    pub fn send(&mut self, packet: &[u8]) -> bool {
        let Some(mut f) = self.pool.get() else {
            return false;
        };
        if !f.set_data(packet) {
            self.pool.put(f);
            return false;
        }
        if let Err(f) = self.tx.push(f) {
            self.pool.put(f);
            return false;
        }
        matches!(self.port.tx_burst(&mut self.pool, &mut self.tx), Ok(1))
    }

    /// Receives one packet into `out`; returns its length (packets longer
    /// than `out` are cut to fit), or None when nothing is waiting.
    pub fn recv_into(&mut self, out: &mut [u8]) -> Option<usize> {
        let f = self.next_frame()?;
        let n = f.len().min(out.len());
        out[..n].copy_from_slice(&f.data()[..n]);
        self.pool.put(f);
        Some(n)
    }

    /// Receives one packet as a vector (tests, demo).
    pub fn recv_vec(&mut self) -> Option<Vec<u8>> {
        let f = self.next_frame()?;
        let v = f.data().to_vec();
        self.pool.put(f);
        Some(v)
    }

    /// Every packet waiting now, in order.
    pub fn recv_all(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(p) = self.recv_vec() {
            out.push(p);
        }
        out
    }

    pub fn stats(&self) -> IoStats {
        self.port.stats()
    }

    pub fn port_mut(&mut self) -> &mut MemPort {
        &mut self.port
    }

    fn next_frame(&mut self) -> Option<Frame> {
        if self.rx.is_empty() {
            let _ = self.port.rx_burst(&mut self.pool, &mut self.rx);
            // Bursts pop from the back; reverse so packets come out in order.
            self.rx.frames_mut().reverse();
        }
        self.rx.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_move_and_pools_keep_their_size() {
        let (mut a, mut b) = MemLink::pair(8);
        let mut pa = Pool::new(16);
        let mut pb = Pool::new(16);
        let mut burst = Burst::new();
        for i in 0..5u8 {
            let mut f = pa.get().unwrap();
            f.set_data(&[i; 10]);
            burst.push(f).unwrap();
        }
        assert_eq!(a.tx_burst(&mut pa, &mut burst).unwrap(), 5);
        assert!(burst.is_empty());
        assert_eq!(pa.available(), 16);
        let mut rx = Burst::new();
        assert_eq!(b.rx_burst(&mut pb, &mut rx).unwrap(), 5);
        assert_eq!(pb.available(), 11);
        let first: Vec<u8> = rx.frames().iter().map(|f| f.data()[0]).collect();
        assert_eq!(first, vec![0, 1, 2, 3, 4]);
        rx.free_all(&mut pb);
        assert_eq!(pb.available(), 16);
        assert_eq!(a.stats().tx_packets, 5);
        assert_eq!(b.stats().rx_bytes, 50);
    }

    #[test]
    fn full_link_drops_and_counts() {
        let (mut a, _b) = MemLink::pair(2);
        let mut pool = Pool::new(8);
        let mut burst = Burst::new();
        for _ in 0..3 {
            let mut f = pool.get().unwrap();
            f.set_data(&[1]);
            burst.push(f).unwrap();
        }
        assert_eq!(a.tx_burst(&mut pool, &mut burst).unwrap(), 2);
        assert_eq!(a.stats().tx_dropped, 1);
        assert_eq!(pool.available(), 8);
    }
}
