//! Packets waiting for an SA: bounded, time-limited, Acquire deduplicated.
//!
//! A packet that matches a `permit` entry with no outbound SA yet is queued
//! under its (rule, peer) key, and only the first one raises an `Acquire`.
//! When the control plane installs the SA the worker calls
//! [`AcquireQueue::sa_installed`] before its next burst, so the queued
//! packets leave first and in arrival order; on failure or time-out they are
//! dropped and counted. Cisco and strongSwan lose these first packets (the
//! seed's "first ping lost"); [`AcquireMode::Drop`] gives that behaviour.
//!
//! One queue per worker, no locks. Everything is allocated up front: a slab
//! of `max_pending` slots, each with room for `max_packets` packets, and a
//! key index sized for `max_pending` keys, so enqueueing never allocates.
//! The clock is never read here: callers pass `now`.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::api::RuleId;

/// One SA to be: the ACL entry and the peer it goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct AcquireKey {
    pub rule: RuleId,
    pub peer: IpAddr,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum AcquireMode {
    /// Hold packets until the SA is there (espgate's default).
    #[default]
    Queue,
    /// Drop them but still raise the Acquire (Cisco's behaviour).
    Drop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct AcquireLimits {
    /// Packets held per pending SA.
    pub max_packets: usize,
    /// Bytes held per pending SA.
    pub max_bytes: usize,
    /// How long an Acquire may stay unanswered; then its packets are
    /// dropped and the next packet raises a fresh Acquire.
    pub timeout: Duration,
    /// Pending SAs per worker.
    pub max_pending: usize,
    pub mode: AcquireMode,
}

impl Default for AcquireLimits {
    /// IKE_SA_INIT + IKE_AUTH take a few round trips, and retransmissions
    /// back off over seconds (RFC 7296 §2.1): 5 s covers a slow first
    /// exchange without holding stale packets for long.
    fn default() -> Self {
        AcquireLimits {
            max_packets: 64,
            max_bytes: 128 * 1024,
            timeout: Duration::from_secs(5),
            max_pending: 256,
            mode: AcquireMode::Queue,
        }
    }
}

/// Why a waiting packet was dropped (one counter each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum AcquireDrop {
    /// `max_packets` already queued for this SA.
    QueueFull,
    /// `max_bytes` would be exceeded.
    QueueBytes,
    /// `max_pending` SAs already pending on this worker.
    TooManyPending,
    /// `AcquireMode::Drop`.
    DropMode,
    /// The Acquire was not answered within `timeout`.
    Timeout,
    /// The control plane gave up (`ControlMsg::AcquireFailed`).
    Failed,
}

/// What happened to an enqueued packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Enqueue<T> {
    Queued {
        /// True for the first packet of a key: send one `Acquire`.
        raise_acquire: bool,
    },
    /// The packet comes back so the caller can return it to its pool.
    Dropped {
        reason: AcquireDrop,
        frame: T,
        raise_acquire: bool,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AcquireCounters {
    pub acquires: u64,
    pub queued: u64,
    pub delivered: u64,
    pub queue_full: u64,
    pub queue_bytes: u64,
    pub too_many_pending: u64,
    pub drop_mode: u64,
    pub timeout: u64,
    pub failed: u64,
}

impl AcquireCounters {
    fn count(&mut self, reason: AcquireDrop, n: u64) {
        let c = match reason {
            AcquireDrop::QueueFull => &mut self.queue_full,
            AcquireDrop::QueueBytes => &mut self.queue_bytes,
            AcquireDrop::TooManyPending => &mut self.too_many_pending,
            AcquireDrop::DropMode => &mut self.drop_mode,
            AcquireDrop::Timeout => &mut self.timeout,
            AcquireDrop::Failed => &mut self.failed,
        };
        *c += n;
    }

    /// All packets dropped, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.queue_full
            + self.queue_bytes
            + self.too_many_pending
            + self.drop_mode
            + self.timeout
            + self.failed
    }

    pub fn add(&mut self, o: &AcquireCounters) {
        self.acquires += o.acquires;
        self.queued += o.queued;
        self.delivered += o.delivered;
        self.queue_full += o.queue_full;
        self.queue_bytes += o.queue_bytes;
        self.too_many_pending += o.too_many_pending;
        self.drop_mode += o.drop_mode;
        self.timeout += o.timeout;
        self.failed += o.failed;
    }
}

struct Slot<T> {
    key: Option<AcquireKey>,
    since: Instant,
    bytes: usize,
    /// Capacity `max_packets`, never exceeded, so it never reallocates.
    frames: VecDeque<T>,
}

/// One worker's packets waiting for SAs. `T` is the worker's packet handle.
pub struct AcquireQueue<T> {
    limits: AcquireLimits,
    slots: Vec<Slot<T>>,
    index: HashMap<AcquireKey, u32>,
    free: Vec<u32>,
    counters: AcquireCounters,
}

impl<T> AcquireQueue<T> {
    /// Allocates every slot now; `now` only seeds the unused timestamps.
    pub fn new(limits: AcquireLimits, now: Instant) -> AcquireQueue<T> {
        let slots = (0..limits.max_pending)
            .map(|_| Slot {
                key: None,
                since: now,
                bytes: 0,
                frames: VecDeque::with_capacity(match limits.mode {
                    AcquireMode::Queue => limits.max_packets,
                    AcquireMode::Drop => 0,
                }),
            })
            .collect();
        AcquireQueue {
            limits,
            slots,
            index: HashMap::with_capacity(limits.max_pending),
            free: (0..limits.max_pending as u32).rev().collect(),
            counters: AcquireCounters::default(),
        }
    }

    pub fn limits(&self) -> &AcquireLimits {
        &self.limits
    }

    pub fn counters(&self) -> AcquireCounters {
        self.counters
    }

    /// Keys with an Acquire outstanding.
    pub fn pending(&self) -> usize {
        self.index.len()
    }

    pub fn is_pending(&self, key: &AcquireKey) -> bool {
        self.index.contains_key(key)
    }

    /// Packets queued for `key`.
    pub fn queued(&self, key: &AcquireKey) -> usize {
        self.index
            .get(key)
            .and_then(|&s| self.slots.get(s as usize))
            .map_or(0, |s| s.frames.len())
    }

    fn drop_frame(&mut self, reason: AcquireDrop, frame: T, raise_acquire: bool) -> Enqueue<T> {
        self.counters.count(reason, 1);
        Enqueue::Dropped {
            reason,
            frame,
            raise_acquire,
        }
    }

    /// Holds `frame` (of `bytes` bytes) until the SA for `key` is there.
    pub fn enqueue(&mut self, key: AcquireKey, frame: T, bytes: usize, now: Instant) -> Enqueue<T> {
        let (slot, raise_acquire) = match self.index.get(&key) {
            Some(&s) => (s, false),
            None => {
                let Some(s) = self.free.pop() else {
                    // Untracked keys raise nothing: an Acquire per packet
                    // would flood the control plane. A slot frees up at the
                    // latest when the oldest Acquire times out.
                    return self.drop_frame(AcquireDrop::TooManyPending, frame, false);
                };
                self.index.insert(key, s);
                let Some(slot) = self.slots.get_mut(s as usize) else {
                    return self.drop_frame(AcquireDrop::TooManyPending, frame, false);
                };
                slot.key = Some(key);
                slot.since = now;
                slot.bytes = 0;
                self.counters.acquires += 1;
                (s, true)
            }
        };
        if self.limits.mode == AcquireMode::Drop {
            return self.drop_frame(AcquireDrop::DropMode, frame, raise_acquire);
        }
        let (max_packets, max_bytes) = (self.limits.max_packets, self.limits.max_bytes);
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return self.drop_frame(AcquireDrop::TooManyPending, frame, raise_acquire);
        };
        if s.frames.len() >= max_packets {
            return self.drop_frame(AcquireDrop::QueueFull, frame, raise_acquire);
        }
        if s.bytes.saturating_add(bytes) > max_bytes {
            return self.drop_frame(AcquireDrop::QueueBytes, frame, raise_acquire);
        }
        debug_assert!(s.frames.len() < s.frames.capacity());
        s.frames.push_back(frame);
        s.bytes += bytes;
        self.counters.queued += 1;
        Enqueue::Queued { raise_acquire }
    }

    /// Frees the slot of `key`, handing each queued packet to `each` in
    /// arrival order; returns how many there were.
    fn release(&mut self, key: &AcquireKey, mut each: impl FnMut(T)) -> usize {
        let Some(s) = self.index.remove(key) else {
            return 0;
        };
        let Some(slot) = self.slots.get_mut(s as usize) else {
            return 0;
        };
        let n = slot.frames.len();
        for f in slot.frames.drain(..) {
            each(f);
        }
        slot.key = None;
        slot.bytes = 0;
        self.free.push(s);
        n
    }

    /// The SA for `key` is installed: `send` gets the queued packets in
    /// arrival order (call before the next burst so they go out first).
    pub fn sa_installed(&mut self, key: &AcquireKey, send: impl FnMut(T)) -> usize {
        let n = self.release(key, send);
        self.counters.delivered += n as u64;
        n
    }

    /// The control plane gave up on `key`: its packets go to `drop`.
    pub fn fail(&mut self, key: &AcquireKey, drop: impl FnMut(T)) -> usize {
        let n = self.release(key, drop);
        self.counters.count(AcquireDrop::Failed, n as u64);
        n
    }

    /// Drops the packets of every Acquire older than `timeout`, handing
    /// them to `drop`; returns how many keys expired. O(max_pending): call it
    /// once in a while (e.g. every few ms), not per burst.
    pub fn expire(&mut self, now: Instant, mut drop: impl FnMut(AcquireKey, T)) -> usize {
        let timeout = self.limits.timeout;
        let mut expired = 0;
        for i in 0..self.slots.len() {
            let Some(slot) = self.slots.get(i) else { break };
            let Some(key) = slot.key else { continue };
            if now.saturating_duration_since(slot.since) < timeout {
                continue;
            }
            let n = self.release(&key, |f| drop(key, f));
            self.counters.count(AcquireDrop::Timeout, n as u64);
            expired += 1;
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_after_release() {
        let now = Instant::now();
        let limits = AcquireLimits {
            max_pending: 1,
            ..AcquireLimits::default()
        };
        let mut q: AcquireQueue<u32> = AcquireQueue::new(limits, now);
        let k = |r| AcquireKey {
            rule: RuleId(r),
            peer: "10.255.2.2".parse().unwrap(),
        };
        for r in 0..10 {
            assert_eq!(
                q.enqueue(k(r), r, 100, now),
                Enqueue::Queued {
                    raise_acquire: true
                }
            );
            assert!(matches!(
                q.enqueue(k(r + 100), 7, 100, now),
                Enqueue::Dropped {
                    reason: AcquireDrop::TooManyPending,
                    raise_acquire: false,
                    ..
                }
            ));
            let mut got = Vec::new();
            assert_eq!(q.sa_installed(&k(r), |f| got.push(f)), 1);
            assert_eq!(got, vec![r]);
        }
        assert_eq!(q.counters().too_many_pending, 10);
    }
}
