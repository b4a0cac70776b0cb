//! Packets waiting for an SA: bounded, time-limited, Acquire deduplicated.
//!
//! When a packet matches a `permit` line whose child SA does not exist yet,
//! the worker raises one `Acquire` per (rule, peer) and — unlike Cisco and
//! strongSwan, which drop it — parks the packet here. When the SA is
//! installed the parked packets go out first, in arrival order; when the
//! negotiation fails or takes longer than the time limit they are dropped
//! and counted. [`AcquireMode::Drop`] gives Cisco's behaviour (the Acquire is
//! still raised, the packet is dropped).
//!
//! Memory is bounded: at most `max_pending` keys, each holding at most
//! `max_packets` packets and `max_bytes` bytes. A key's ring is allocated
//! the first time its slot is used and reused after, so parking a packet
//! never allocates once the queue has warmed up.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::api::RuleId;

/// One pending SA: the rule and the peer the SA is negotiated with.
pub type AcquireKey = (RuleId, IpAddr);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AcquireMode {
    /// Park packets until the SA is up (no first-packet loss).
    #[default]
    Queue,
    /// Drop them (Cisco ASA/IOS behaviour).
    Drop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcquireLimits {
    pub mode: AcquireMode,
    /// Packets parked per pending SA.
    pub max_packets: usize,
    /// Bytes parked per pending SA.
    pub max_bytes: usize,
    /// How long an Acquire may stay unanswered before its packets are
    /// dropped and a new Acquire may be raised.
    pub timeout: Duration,
    /// Pending SAs at once; more are refused (packets dropped and counted).
    pub max_pending: usize,
}

impl Default for AcquireLimits {
    fn default() -> Self {
        AcquireLimits {
            mode: AcquireMode::Queue,
            max_packets: 64,
            max_bytes: 256 * 1024,
            timeout: Duration::from_secs(3),
            max_pending: 64,
        }
    }
}

/// What happened to a packet handed to [`AcquireQueue::enqueue`].
#[derive(Debug, PartialEq, Eq)]
pub enum Enqueue<T> {
    /// Parked. `raise_acquire` is true for the first packet of a key.
    Queued { raise_acquire: bool },
    /// Not parked (drop mode, or a limit was hit): the caller counts the
    /// drop and frees `frame`.
    Dropped { frame: T, raise_acquire: bool },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AcquireStats {
    /// Acquire events raised.
    pub acquires: u64,
    pub queued: u64,
    /// Parked packets sent after their SA came up.
    pub released: u64,
    pub dropped_full: u64,
    pub dropped_timeout: u64,
    pub dropped_failed: u64,
    /// Drop mode: packets that found no SA.
    pub dropped_no_sa: u64,
    /// No free slot for another pending SA.
    pub dropped_too_many_pending: u64,
}

struct Pending<T> {
    key: Option<AcquireKey>,
    since: Instant,
    bytes: usize,
    packets: VecDeque<T>,
}

pub struct AcquireQueue<T> {
    limits: AcquireLimits,
    slots: Vec<Pending<T>>,
    stats: AcquireStats,
}

impl<T> AcquireQueue<T> {
    pub fn new(limits: AcquireLimits) -> AcquireQueue<T> {
        AcquireQueue {
            slots: Vec::with_capacity(limits.max_pending),
            limits,
            stats: AcquireStats::default(),
        }
    }

    pub fn stats(&self) -> AcquireStats {
        self.stats
    }

    pub fn limits(&self) -> AcquireLimits {
        self.limits
    }

    /// Keys with an Acquire outstanding.
    pub fn pending(&self) -> impl Iterator<Item = AcquireKey> + '_ {
        self.slots.iter().filter_map(|s| s.key)
    }

    /// Packets parked for `key`.
    pub fn queued(&self, key: AcquireKey) -> usize {
        self.find(key).map_or(0, |i| self.slots[i].packets.len())
    }

    fn find(&self, key: AcquireKey) -> Option<usize> {
        self.slots.iter().position(|s| s.key == Some(key))
    }

    /// Opens a slot for `key`; `None` when `max_pending` are in use.
    fn open(&mut self, key: AcquireKey, now: Instant) -> Option<usize> {
        let i = match self.slots.iter().position(|s| s.key.is_none()) {
            Some(i) => i,
            None if self.slots.len() < self.limits.max_pending => {
                self.slots.push(Pending {
                    key: None,
                    since: now,
                    bytes: 0,
                    packets: VecDeque::with_capacity(self.limits.max_packets),
                });
                self.slots.len() - 1
            }
            None => return None,
        };
        let s = &mut self.slots[i];
        s.key = Some(key);
        s.since = now;
        s.bytes = 0;
        self.stats.acquires += 1;
        Some(i)
    }

    /// Parks `frame` (of `len` bytes) for `key`, or says why not.
    pub fn enqueue(&mut self, key: AcquireKey, frame: T, len: usize, now: Instant) -> Enqueue<T> {
        let (i, raise_acquire) = match self.find(key) {
            Some(i) => (i, false),
            None => match self.open(key, now) {
                Some(i) => (i, true),
                None => {
                    self.stats.dropped_too_many_pending += 1;
                    return Enqueue::Dropped {
                        frame,
                        raise_acquire: false,
                    };
                }
            },
        };
        if self.limits.mode == AcquireMode::Drop {
            self.stats.dropped_no_sa += 1;
            return Enqueue::Dropped {
                frame,
                raise_acquire,
            };
        }
        let s = &mut self.slots[i];
        if s.packets.len() >= self.limits.max_packets || s.bytes + len > self.limits.max_bytes {
            self.stats.dropped_full += 1;
            return Enqueue::Dropped {
                frame,
                raise_acquire,
            };
        }
        s.bytes += len;
        s.packets.push_back(frame);
        self.stats.queued += 1;
        Enqueue::Queued { raise_acquire }
    }

    /// The next parked packet of `key`, oldest first (call once its SA is
    /// installed, then [`sa_installed`](Self::sa_installed)).
    pub fn pop(&mut self, key: AcquireKey) -> Option<T> {
        let i = self.find(key)?;
        let f = self.slots[i].packets.pop_front()?;
        self.stats.released += 1;
        Some(f)
    }

    /// The SA for `key` is up: the Acquire is answered. Parked packets not
    /// yet taken with [`pop`](Self::pop) are returned through `drop`.
    pub fn sa_installed(&mut self, key: AcquireKey) {
        if let Some(i) = self.find(key) {
            let s = &mut self.slots[i];
            s.key = None;
            // The caller popped everything; anything left is a logic error
            // upstream, counted rather than leaked silently.
            self.stats.dropped_failed += s.packets.len() as u64;
            s.packets.clear();
        }
    }

    /// Negotiation for `key` failed: its packets are dropped via `drop`.
    pub fn fail(&mut self, key: AcquireKey, mut drop: impl FnMut(T)) {
        if let Some(i) = self.find(key) {
            let s = &mut self.slots[i];
            s.key = None;
            for f in s.packets.drain(..) {
                self.stats.dropped_failed += 1;
                drop(f);
            }
        }
    }

    /// Drops the packets of every Acquire older than the time limit; the
    /// next packet for such a key raises a new Acquire.
    pub fn expire(&mut self, now: Instant, mut drop: impl FnMut(T)) {
        let timeout = self.limits.timeout;
        for s in &mut self.slots {
            if s.key.is_some() && now.saturating_duration_since(s.since) >= timeout {
                s.key = None;
                for f in s.packets.drain(..) {
                    self.stats.dropped_timeout += 1;
                    drop(f);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(r: u32) -> AcquireKey {
        (RuleId(r), "10.255.2.2".parse().unwrap())
    }

    #[test]
    fn hundred_packets_one_acquire_all_released_in_order() {
        let mut q = AcquireQueue::new(AcquireLimits {
            max_packets: 128,
            ..AcquireLimits::default()
        });
        let t0 = Instant::now();
        let mut raised = 0;
        for i in 0..100u32 {
            match q.enqueue(key(1), i, 100, t0) {
                Enqueue::Queued { raise_acquire } => raised += raise_acquire as u32,
                Enqueue::Dropped { .. } => panic!("packet {i} dropped"),
            }
        }
        assert_eq!(raised, 1);
        assert_eq!(q.stats().acquires, 1);
        let out: Vec<u32> = std::iter::from_fn(|| q.pop(key(1))).collect();
        assert_eq!(out, (0..100).collect::<Vec<_>>());
        q.sa_installed(key(1));
        assert_eq!(q.pending().count(), 0);
        assert_eq!(q.stats().released, 100);
    }

    #[test]
    fn limits_timeout_failure_and_drop_mode_are_counted() {
        let t0 = Instant::now();
        let mut q = AcquireQueue::new(AcquireLimits {
            max_packets: 2,
            max_bytes: 1000,
            timeout: Duration::from_secs(1),
            max_pending: 1,
            mode: AcquireMode::Queue,
        });
        assert_eq!(
            q.enqueue(key(1), 1, 10, t0),
            Enqueue::Queued {
                raise_acquire: true
            }
        );
        assert_eq!(
            q.enqueue(key(1), 2, 10, t0),
            Enqueue::Queued {
                raise_acquire: false
            }
        );
        assert!(matches!(
            q.enqueue(key(1), 3, 10, t0),
            Enqueue::Dropped { frame: 3, .. }
        ));
        assert_eq!(q.stats().dropped_full, 1);
        // A second key finds no free slot.
        assert!(matches!(
            q.enqueue(key(2), 4, 10, t0),
            Enqueue::Dropped { frame: 4, .. }
        ));
        assert_eq!(q.stats().dropped_too_many_pending, 1);
        let mut dropped = Vec::new();
        q.expire(t0 + Duration::from_millis(500), |f| dropped.push(f));
        assert!(dropped.is_empty());
        q.expire(t0 + Duration::from_secs(1), |f| dropped.push(f));
        assert_eq!(dropped, vec![1, 2]);
        assert_eq!(q.stats().dropped_timeout, 2);
        // After the time-out a new Acquire is raised.
        assert_eq!(
            q.enqueue(key(1), 5, 10, t0 + Duration::from_secs(2)),
            Enqueue::Queued {
                raise_acquire: true
            }
        );
        q.fail(key(1), |f| dropped.push(f));
        assert_eq!(dropped, vec![1, 2, 5]);
        assert_eq!(q.stats().dropped_failed, 1);
        // Byte limit.
        assert_eq!(
            q.enqueue(key(3), 6, 900, t0),
            Enqueue::Queued {
                raise_acquire: true
            }
        );
        assert!(matches!(
            q.enqueue(key(3), 7, 200, t0),
            Enqueue::Dropped { .. }
        ));

        let mut cisco = AcquireQueue::new(AcquireLimits {
            mode: AcquireMode::Drop,
            ..AcquireLimits::default()
        });
        assert_eq!(
            cisco.enqueue(key(1), 1, 10, t0),
            Enqueue::Dropped {
                frame: 1,
                raise_acquire: true
            }
        );
        assert_eq!(
            cisco.enqueue(key(1), 2, 10, t0),
            Enqueue::Dropped {
                frame: 2,
                raise_acquire: false
            }
        );
        assert_eq!(cisco.stats().acquires, 1);
    }
}
