//! Frames with headroom/tailroom, a fixed pool, and bursts of up to 64.
//!
//! A [`Frame`] owns one fixed-size buffer. The packet sits in the middle:
//! [`HEADROOM`] bytes in front leave space for the outer IP + UDP + ESP
//! header + IV that encapsulation prepends, and the space behind it holds the
//! ESP padding, trailer and ICV — so encap and decap never copy the payload.
//! The [`Pool`] allocates every frame once, at start-up; the packet path only
//! moves frames between the pool, bursts and queues (DPDK `rte_mbuf` style).

use std::sync::Arc;

use arrayvec::ArrayVec;
use crossbeam::queue::ArrayQueue;

/// Bytes per frame buffer: a 1500-byte MTU packet plus all ESP overhead fits
/// with room to spare; jumbo frames are out of scope.
pub const FRAME_SIZE: usize = 2048;

/// Room reserved in front of a received packet: outer IPv6 (40) + UDP (8) +
/// ESP header (8) + IV (16) = 72, rounded up to keep the payload aligned.
pub const HEADROOM: usize = 128;

/// Largest burst the pipeline moves at once.
pub const BURST_MAX: usize = 64;

/// Which interface a frame came in on or goes out of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortId(pub u8);

/// One packet buffer. `data()` is the packet; the bytes around it are
/// headroom and tailroom.
pub struct Frame {
    buf: Box<[u8; FRAME_SIZE]>,
    head: u16,
    len: u16,
    /// Interface the packet arrived on (rx) or must leave by (tx).
    pub port: PortId,
    /// Scratch for the worker (mbuf "userdata"): the rule of a packet
    /// handed to the worker that owns its SA, so it is not classified twice.
    pub tag: u32,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("head", &self.head)
            .field("len", &self.len)
            .field("port", &self.port)
            .finish()
    }
}

impl Frame {
    /// Allocates a frame. Only [`Pool::new`] and tests should call this: the
    /// packet path takes frames from a pool.
    pub fn new() -> Frame {
        Frame {
            buf: Box::new([0u8; FRAME_SIZE]),
            head: HEADROOM as u16,
            len: 0,
            port: PortId(0),
            tag: 0,
        }
    }

    /// Empties the frame and restores the default headroom.
    pub fn reset(&mut self) {
        self.head = HEADROOM as u16;
        self.len = 0;
        self.port = PortId(0);
        self.tag = 0;
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn headroom(&self) -> usize {
        self.head as usize
    }

    pub fn tailroom(&self) -> usize {
        FRAME_SIZE - self.head as usize - self.len as usize
    }

    pub fn data(&self) -> &[u8] {
        &self.buf[self.head as usize..(self.head + self.len) as usize]
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.head as usize..(self.head + self.len) as usize]
    }

    /// The whole buffer and the packet's offset in it, for code that works
    /// on headroom and packet together (encap writes headers in front).
    pub fn raw_mut(&mut self) -> (&mut [u8; FRAME_SIZE], usize, usize) {
        (&mut self.buf, self.head as usize, self.len as usize)
    }

    /// Replaces the packet with `bytes` at the default headroom. Returns
    /// false (frame unchanged) if it does not fit.
    pub fn set_data(&mut self, bytes: &[u8]) -> bool {
        if bytes.len() > FRAME_SIZE - HEADROOM {
            return false;
        }
        self.head = HEADROOM as u16;
        self.len = bytes.len() as u16;
        self.buf[HEADROOM..HEADROOM + bytes.len()].copy_from_slice(bytes);
        true
    }

    /// Sets the packet to `len` bytes starting at `head` in the buffer
    /// (after an I/O backend wrote into `raw_mut`). False if out of range.
    pub fn set_bounds(&mut self, head: usize, len: usize) -> bool {
        if head.checked_add(len).is_none_or(|end| end > FRAME_SIZE) {
            return false;
        }
        self.head = head as u16;
        self.len = len as u16;
        true
    }

    /// Grows the packet by `n` bytes at the front; returns the new front
    /// bytes, or `None` if the headroom is too small.
    pub fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.head as usize {
            return None;
        }
        self.head -= n as u16;
        self.len += n as u16;
        let h = self.head as usize;
        Some(&mut self.buf[h..h + n])
    }

    /// Removes `n` bytes from the front (e.g. the outer headers on decap).
    pub fn trim_front(&mut self, n: usize) -> bool {
        if n > self.len as usize {
            return false;
        }
        self.head += n as u16;
        self.len -= n as u16;
        true
    }

    /// Grows the packet by `n` bytes at the back; returns them, or `None` if
    /// the tailroom is too small.
    pub fn append(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.tailroom() {
            return None;
        }
        let end = (self.head + self.len) as usize;
        self.len += n as u16;
        Some(&mut self.buf[end..end + n])
    }

    /// Shortens the packet to `len` bytes (no-op if already shorter).
    pub fn truncate(&mut self, len: usize) {
        if len < self.len as usize {
            self.len = len as u16;
        }
    }
}

impl Default for Frame {
    fn default() -> Self {
        Frame::new()
    }
}

/// A fixed set of frames allocated once. `get`/`put` never allocate: the free
/// list's capacity is the pool size, so `put` never grows it.
///
/// Frames handed from one worker to another end up in the other worker's
/// pool. Pools of one dataplane therefore share an overflow queue: a `put`
/// into a full pool parks the frame there and a `get` from an empty pool
/// takes it back, so frames drift between workers without any pool growing
/// or starving. The overflow is only touched when a pool is full or empty.
pub struct Pool {
    free: Vec<Frame>,
    capacity: usize,
    overflow: Option<Arc<ArrayQueue<Frame>>>,
    /// `get` calls that found the pool empty (counted as NoBuffer drops).
    pub exhausted: u64,
}

impl Pool {
    pub fn new(frames: usize) -> Pool {
        let mut free = Vec::with_capacity(frames);
        free.extend((0..frames).map(|_| Frame::new()));
        Pool {
            free,
            capacity: frames,
            overflow: None,
            exhausted: 0,
        }
    }

    /// A pool that shares `overflow` with the other workers' pools.
    pub fn with_overflow(frames: usize, overflow: Arc<ArrayQueue<Frame>>) -> Pool {
        let mut pool = Pool::new(frames);
        pool.overflow = Some(overflow);
        pool
    }

    pub fn get(&mut self) -> Option<Frame> {
        let frame = self
            .free
            .pop()
            .or_else(|| self.overflow.as_ref().and_then(|o| o.pop()));
        match frame {
            Some(mut f) => {
                f.reset();
                Some(f)
            }
            None => {
                self.exhausted += 1;
                None
            }
        }
    }

    /// Returns a frame. A frame beyond the pool's capacity (one that came
    /// from another worker) goes to the shared overflow; with no room
    /// anywhere it is freed rather than growing the free list.
    pub fn put(&mut self, frame: Frame) {
        if self.free.len() < self.capacity {
            self.free.push(frame);
        } else if let Some(o) = &self.overflow {
            let _ = o.push(frame);
        }
    }

    pub fn available(&self) -> usize {
        self.free.len()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Up to [`BURST_MAX`] frames moving through the pipeline together; fixed
/// capacity on the stack, so it never allocates.
#[derive(Debug, Default)]
pub struct Burst {
    frames: ArrayVec<Frame, BURST_MAX>,
}

impl Burst {
    pub fn new() -> Burst {
        Burst {
            frames: ArrayVec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.frames.is_full()
    }

    pub fn room(&self) -> usize {
        BURST_MAX - self.frames.len()
    }

    /// Adds a frame; gives it back if the burst is full.
    pub fn push(&mut self, frame: Frame) -> Result<(), Frame> {
        self.frames.try_push(frame).map_err(|e| e.element())
    }

    pub fn pop(&mut self) -> Option<Frame> {
        self.frames.pop()
    }

    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    pub fn frames_mut(&mut self) -> &mut [Frame] {
        &mut self.frames
    }

    /// Takes every frame out, in order.
    pub fn drain(&mut self) -> arrayvec::Drain<'_, Frame, BURST_MAX> {
        self.frames.drain(..)
    }

    /// Keeps the frames for which `keep` is true, in order; the others go to
    /// `rejected` (DPDK's `move_bad_mbufs`: the caller counts and frees them).
    pub fn retain_into(&mut self, mut keep: impl FnMut(&Frame) -> bool, rejected: &mut Burst) {
        let mut kept = ArrayVec::<Frame, BURST_MAX>::new();
        for f in self.frames.drain(..) {
            if keep(&f) {
                kept.push(f);
            } else if let Err(f) = rejected.push(f) {
                // `rejected` is a burst of the same capacity, so this cannot
                // happen when it started empty; keep the frame rather than lose it.
                kept.push(f);
            }
        }
        self.frames = kept;
    }

    /// Returns every frame to `pool`.
    pub fn free_all(&mut self, pool: &mut Pool) {
        for f in self.frames.drain(..) {
            pool.put(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepend_append_trim_stay_in_bounds() {
        let mut f = Frame::new();
        assert!(f.set_data(&[1, 2, 3, 4]));
        assert_eq!(f.headroom(), HEADROOM);
        f.prepend(8).unwrap().fill(9);
        assert_eq!(f.data(), &[9, 9, 9, 9, 9, 9, 9, 9, 1, 2, 3, 4]);
        assert!(f.prepend(HEADROOM).is_none(), "headroom overrun must fail");
        f.append(2).unwrap().copy_from_slice(&[5, 6]);
        assert_eq!(f.len(), 14);
        assert!(f.trim_front(8));
        assert_eq!(f.data(), &[1, 2, 3, 4, 5, 6]);
        assert!(!f.trim_front(7));
        assert!(f.append(f.tailroom() + 1).is_none());
        f.truncate(2);
        assert_eq!(f.data(), &[1, 2]);
        assert!(!f.set_data(&[0u8; FRAME_SIZE]));
        assert!(!f.set_bounds(FRAME_SIZE - 1, 2));
    }

    #[test]
    fn pool_is_fixed_and_counts_exhaustion() {
        let mut pool = Pool::new(2);
        let a = pool.get().unwrap();
        let b = pool.get().unwrap();
        assert!(pool.get().is_none());
        assert_eq!(pool.exhausted, 1);
        pool.put(a);
        pool.put(b);
        pool.put(Frame::new()); // foreign frame: dropped, pool does not grow
        assert_eq!(pool.available(), 2);
    }

    #[test]
    fn pools_share_overflow_so_handed_off_frames_come_back() {
        let overflow = Arc::new(ArrayQueue::new(8));
        let mut a = Pool::with_overflow(2, overflow.clone());
        let mut b = Pool::with_overflow(2, overflow);
        // a's frames end up in b (handoff), b is full, so they overflow...
        let (x, y) = (a.get().unwrap(), a.get().unwrap());
        b.put(x);
        b.put(y);
        assert_eq!(b.available(), 2);
        // ...and a gets them back instead of starving.
        assert!(a.get().is_some() && a.get().is_some());
        assert!(a.get().is_none());
    }

    #[test]
    fn burst_caps_at_64_and_retains_in_order() {
        let mut pool = Pool::new(70);
        let mut burst = Burst::new();
        for i in 0..BURST_MAX {
            let mut f = pool.get().unwrap();
            f.set_data(&[i as u8]);
            burst.push(f).unwrap();
        }
        let extra = pool.get().unwrap();
        assert!(burst.push(extra).is_err());
        let mut bad = Burst::new();
        burst.retain_into(|f| f.data()[0] % 2 == 0, &mut bad);
        assert_eq!(burst.len(), 32);
        assert_eq!(bad.len(), 32);
        assert!(burst
            .frames()
            .windows(2)
            .all(|w| w[0].data()[0] < w[1].data()[0]));
        burst.free_all(&mut pool);
        bad.free_all(&mut pool);
        assert_eq!(pool.available(), 69);
    }
}
