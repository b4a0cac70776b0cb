//! Acquire: one event per pending SA, packets held in order, bounded.

use std::time::{Duration, Instant};

use espgate_dataplane::acquire::{
    AcquireDrop, AcquireKey, AcquireLimits, AcquireMode, AcquireQueue, Enqueue,
};
use espgate_dataplane::api::RuleId;

fn key(rule: u32) -> AcquireKey {
    AcquireKey {
        rule: RuleId(rule),
        peer: "10.255.2.2".parse().unwrap(),
    }
}

#[test]
fn burst_of_100_raises_one_acquire_and_delivers_all_in_order() {
    let t0 = Instant::now();
    let limits = AcquireLimits {
        max_packets: 128,
        max_bytes: 1 << 20,
        ..AcquireLimits::default()
    };
    let mut q: AcquireQueue<u32> = AcquireQueue::new(limits, t0);
    let mut acquires = 0;
    for seq in 0..100u32 {
        match q.enqueue(key(1), seq, 128, t0 + Duration::from_millis(seq as u64)) {
            Enqueue::Queued { raise_acquire } => acquires += raise_acquire as u32,
            other => panic!("packet {seq} not queued: {other:?}"),
        }
    }
    assert_eq!(acquires, 1);
    assert_eq!(q.queued(&key(1)), 100);
    // Another rule to the same peer is another SA: its own Acquire.
    assert_eq!(
        q.enqueue(key(2), 1000, 64, t0),
        Enqueue::Queued {
            raise_acquire: true
        }
    );
    let mut out = Vec::new();
    assert_eq!(q.sa_installed(&key(1), |f| out.push(f)), 100);
    assert_eq!(
        out,
        (0..100).collect::<Vec<_>>(),
        "in order, none duplicated"
    );
    assert_eq!(q.sa_installed(&key(1), |f| out.push(f)), 0, "drained once");
    assert!(!q.is_pending(&key(1)) && q.is_pending(&key(2)));
    let c = q.counters();
    assert_eq!(
        (c.acquires, c.queued, c.delivered, c.dropped()),
        (2, 101, 100, 0)
    );
    // Answered: the next packet for rule 1 raises a new Acquire (e.g. after a delete).
    assert_eq!(
        q.enqueue(key(1), 5, 64, t0),
        Enqueue::Queued {
            raise_acquire: true
        }
    );
}

#[test]
fn packet_and_byte_limits_drop_and_count() {
    let t0 = Instant::now();
    let limits = AcquireLimits {
        max_packets: 10,
        max_bytes: 1000,
        ..AcquireLimits::default()
    };
    let mut q: AcquireQueue<u32> = AcquireQueue::new(limits, t0);
    let mut dropped = Vec::new();
    for seq in 0..20u32 {
        if let Enqueue::Dropped {
            reason,
            frame,
            raise_acquire,
        } = q.enqueue(key(1), seq, 50, t0)
        {
            assert!(!raise_acquire);
            assert_eq!(reason, AcquireDrop::QueueFull);
            dropped.push(frame);
        }
    }
    assert_eq!(
        dropped,
        (10..20).collect::<Vec<_>>(),
        "newest dropped, frames returned"
    );
    for seq in 0..3u32 {
        if let Enqueue::Dropped { reason, .. } = q.enqueue(key(2), seq, 400, t0) {
            assert_eq!((seq, reason), (2, AcquireDrop::QueueBytes));
        }
    }
    let c = q.counters();
    assert_eq!((c.queue_full, c.queue_bytes, c.queued), (10, 1, 12));
    let mut out = Vec::new();
    q.sa_installed(&key(1), |f| out.push(f));
    assert_eq!(out, (0..10).collect::<Vec<_>>());
}

#[test]
fn timeout_and_failure_drop_and_count() {
    let t0 = Instant::now();
    let limits = AcquireLimits {
        timeout: Duration::from_secs(2),
        ..AcquireLimits::default()
    };
    let mut q: AcquireQueue<u32> = AcquireQueue::new(limits, t0);
    for seq in 0..5 {
        q.enqueue(key(1), seq, 100, t0);
    }
    for seq in 0..3 {
        q.enqueue(key(2), seq, 100, t0 + Duration::from_secs(1));
    }
    let mut gone = Vec::new();
    assert_eq!(
        q.expire(t0 + Duration::from_millis(1999), |k, f| gone.push((k, f))),
        0
    );
    assert_eq!(
        q.expire(t0 + Duration::from_secs(2), |k, f| gone.push((k, f))),
        1
    );
    assert_eq!(gone, (0..5).map(|f| (key(1), f)).collect::<Vec<_>>());
    assert!(!q.is_pending(&key(1)) && q.is_pending(&key(2)));
    // After a time-out the next packet retries the Acquire.
    assert_eq!(
        q.enqueue(key(1), 9, 100, t0 + Duration::from_secs(3)),
        Enqueue::Queued {
            raise_acquire: true
        }
    );
    let mut failed = Vec::new();
    assert_eq!(q.fail(&key(2), |f| failed.push(f)), 3);
    assert_eq!(failed, vec![0, 1, 2]);
    assert_eq!(q.fail(&key(2), |f| failed.push(f)), 0);
    let c = q.counters();
    assert_eq!((c.timeout, c.failed, c.delivered), (5, 3, 0));
    assert_eq!(q.pending(), 1);
}

#[test]
fn drop_mode_loses_packets_but_still_raises_one_acquire() {
    let t0 = Instant::now();
    let limits = AcquireLimits {
        mode: AcquireMode::Drop,
        ..AcquireLimits::default()
    };
    let mut q: AcquireQueue<u32> = AcquireQueue::new(limits, t0);
    let mut raised = 0;
    for seq in 0..5 {
        match q.enqueue(key(1), seq, 100, t0) {
            Enqueue::Dropped {
                reason: AcquireDrop::DropMode,
                frame,
                raise_acquire,
            } => {
                assert_eq!(frame, seq);
                raised += raise_acquire as u32;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(raised, 1);
    assert_eq!(q.counters().drop_mode, 5);
    assert_eq!(q.sa_installed(&key(1), |_| panic!("nothing queued")), 0);
}
