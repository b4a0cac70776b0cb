//! Anti-replay window (RFC 4303 §3.4.3) kept as an RFC 6479 bitmap, and the
//! ESN high-bits inference of RFC 4303 Appendix A2.
//!
//! Two phases, as in boringtun: [`ReplayWindow::check`] runs before the ICV
//! is verified (cheap rejection of replays without spending crypto on them)
//! and must not change state; [`ReplayWindow::update`] runs only after the
//! ICV was good, re-checks (two copies of one packet may sit in one burst)
//! and marks the number as seen. Forged packets therefore never move the
//! window.

use crate::error::{DropReason, Error};

/// Bits per bitmap bucket (RFC 6479 §2).
const BUCKET_BITS: u64 = 64;
/// RFC 4303 §3.4.3: the default (and minimum) window is 32 packets; we use
/// 64 and above, in steps of one bucket.
pub const MIN_WINDOW: u32 = 64;
/// The largest window we accept.
pub const MAX_WINDOW: u32 = 4096;
/// Window used for ESN inference when replay checking is disabled.
const INFERENCE_WINDOW: u64 = 64;

/// Buckets a window of up to 64 packets needs (RFC 6479 §2: one more than
/// the window covers, so that it may straddle a bucket boundary).
const INLINE_BUCKETS: usize = 2;

/// The bitmap and the window size. Windows of up to 64 packets (the RFC
/// 4303 default of 32 rounds up to 64, and so does the IKE config default)
/// keep their two buckets inline, so the common SA owns no heap and decap
/// follows no pointer; the size lives in the enum's padding.
#[derive(Clone, PartialEq, Eq)]
enum Bits {
    Inline {
        size: u16,
        buckets: [u64; INLINE_BUCKETS],
    },
    /// The bucket count is a power of two ≥ size/64 + 1.
    Heap { size: u16, buckets: Box<[u64]> },
}

/// Sliding window over the 64-bit sequence number space.
#[derive(Clone, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Highest sequence number authenticated so far; 0 = none yet
    /// (sequence numbers start at 1, RFC 4303 §3.3.3).
    last: u64,
    bits: Bits,
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("last", &self.last)
            .field("size", &self.size())
            .finish()
    }
}

impl ReplayWindow {
    /// `window` packets, rounded up to a multiple of 64 (so RFC 4303's
    /// default of 32 becomes 64); must be 0 (replay check disabled) or at
    /// most 4096 after rounding.
    pub fn new(window: u32) -> Result<ReplayWindow, Error> {
        let size = u64::from(window).div_ceil(BUCKET_BITS) * BUCKET_BITS;
        if window != 0 && !(u64::from(MIN_WINDOW)..=u64::from(MAX_WINDOW)).contains(&size) {
            return Err(Error::ReplayWindow(window));
        }
        let n = (size / BUCKET_BITS + 1).next_power_of_two() as usize;
        // ≤ MAX_WINDOW, checked above.
        let size = size as u16;
        let bits = if n <= INLINE_BUCKETS {
            Bits::Inline {
                size,
                buckets: [0; INLINE_BUCKETS],
            }
        } else {
            Bits::Heap {
                size,
                buckets: vec![0u64; n].into_boxed_slice(),
            }
        };
        Ok(ReplayWindow { last: 0, bits })
    }

    /// Window size in packets (0 = disabled).
    pub fn size(&self) -> u32 {
        self.size64() as u32
    }

    #[inline]
    fn size64(&self) -> u64 {
        match &self.bits {
            Bits::Inline { size, .. } | Bits::Heap { size, .. } => u64::from(*size),
        }
    }

    #[inline]
    fn buckets(&self) -> &[u64] {
        match &self.bits {
            Bits::Inline { buckets, .. } => buckets,
            Bits::Heap { buckets, .. } => buckets,
        }
    }

    #[inline]
    fn buckets_mut(&mut self) -> &mut [u64] {
        match &mut self.bits {
            Bits::Inline { buckets, .. } => buckets,
            Bits::Heap { buckets, .. } => buckets,
        }
    }

    /// Highest sequence number accepted so far (0 = none).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Bytes of heap this window uses (none for windows of up to 64).
    pub fn heap_bytes(&self) -> usize {
        match &self.bits {
            Bits::Inline { .. } => 0,
            Bits::Heap { buckets, .. } => buckets.len() * 8,
        }
    }

    /// Bucket index and bit of `seq` in `buckets` (a power-of-two count).
    #[inline]
    fn locate(buckets: &[u64], seq: u64) -> (usize, u64) {
        let mask = buckets.len() as u64 - 1;
        (
            ((seq / BUCKET_BITS) & mask) as usize,
            1u64 << (seq % BUCKET_BITS),
        )
    }

    /// Would `seq` be accepted? Does not change the window.
    #[inline]
    pub fn check(&self, seq: u64) -> Result<(), DropReason> {
        if seq == 0 {
            return Err(DropReason::TooOld);
        }
        let size = self.size64();
        if size == 0 || seq > self.last {
            return Ok(());
        }
        if seq + size <= self.last {
            return Err(DropReason::TooOld);
        }
        let buckets = self.buckets();
        let (b, bit) = Self::locate(buckets, seq);
        if buckets[b] & bit != 0 {
            Err(DropReason::Replay)
        } else {
            Ok(())
        }
    }

    /// Marks `seq` as received after its ICV was verified, sliding the
    /// window forward if it is the highest yet. Re-checks, so a duplicate
    /// later in the same burst is still caught.
    #[inline]
    pub fn update(&mut self, seq: u64) -> Result<(), DropReason> {
        self.check(seq)?;
        if self.size64() == 0 {
            self.last = self.last.max(seq);
            return Ok(());
        }
        let last = self.last;
        let buckets = self.buckets_mut();
        if seq > last {
            let mask = buckets.len() as u64 - 1;
            let top = last / BUCKET_BITS;
            let new_top = seq / BUCKET_BITS;
            let diff = new_top - top;
            if diff > mask {
                // A jump past the whole bitmap: nothing in it stays valid.
                buckets.fill(0);
            } else {
                for i in 1..=diff {
                    buckets[((top + i) & mask) as usize] = 0;
                }
            }
        }
        let (b, bit) = Self::locate(buckets, seq);
        buckets[b] |= bit;
        self.last = last.max(seq);
        Ok(())
    }

    /// RFC 4303 Appendix A2.2: the high 32 bits of an ESN packet's sequence
    /// number, inferred from its low 32 bits and the window position. A
    /// forged guess only makes the ICV check fail.
    pub fn infer_seq_hi(&self, seq_lo: u32) -> u32 {
        let w = match self.size64() {
            0 => INFERENCE_WINDOW,
            s => s,
        };
        let tl = self.last & 0xffff_ffff;
        let th = (self.last >> 32) as u32;
        let seq_lo = u64::from(seq_lo);
        if tl + 1 >= w {
            // Case A: the window lies within one 2^32 subspace.
            if seq_lo >= tl + 1 - w {
                th
            } else {
                th.wrapping_add(1)
            }
        } else {
            // Case B: the window spans two subspaces; "Tl - W + 1" wraps.
            let bottom = (tl + (1u64 << 32) + 1 - w) & 0xffff_ffff;
            if seq_lo >= bottom {
                // Belongs to the previous subspace (there is none below 0).
                th.saturating_sub(1)
            } else {
                th
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn accept(w: &mut ReplayWindow, seq: u64) -> Result<(), DropReason> {
        w.check(seq)?;
        w.update(seq)
    }

    #[test]
    fn sizes_round_up_and_are_bounded() {
        assert_eq!(ReplayWindow::new(64).unwrap().size(), 64);
        assert_eq!(ReplayWindow::new(100).unwrap().size(), 128);
        assert_eq!(ReplayWindow::new(4096).unwrap().size(), 4096);
        assert_eq!(ReplayWindow::new(0).unwrap().size(), 0);
        assert_eq!(
            ReplayWindow::new(32).unwrap().size(),
            64,
            "RFC default 32 → 64"
        );
        assert!(ReplayWindow::new(4097).is_err());
        assert_eq!(ReplayWindow::new(1024).unwrap().heap_bytes(), 32 * 8);
        assert_eq!(ReplayWindow::new(64).unwrap().heap_bytes(), 0, "inline");
        assert_eq!(ReplayWindow::new(0).unwrap().heap_bytes(), 0);
    }

    #[test]
    fn window_slides() {
        let mut w = ReplayWindow::new(64).unwrap();
        for s in 1..=64 {
            accept(&mut w, s).unwrap();
        }
        assert_eq!(accept(&mut w, 1), Err(DropReason::Replay));
        accept(&mut w, 65).unwrap();
        // 1 is now left of the window (65 - 64 = 1 → too old).
        assert_eq!(w.check(1), Err(DropReason::TooOld));
        assert_eq!(w.check(2), Err(DropReason::Replay));
        // Slide by 100: 66..=101 were never seen and stay acceptable only
        // inside the window.
        accept(&mut w, 165).unwrap();
        assert_eq!(w.check(101), Err(DropReason::TooOld));
        assert_eq!(w.check(102), Ok(()));
        assert_eq!(w.check(165), Err(DropReason::Replay));
        assert_eq!(w.check(0), Err(DropReason::TooOld));
    }

    #[test]
    fn far_future_jump_clears_bitmap() {
        let mut w = ReplayWindow::new(128).unwrap();
        for s in 1..=128 {
            accept(&mut w, s).unwrap();
        }
        accept(&mut w, 1_000_000).unwrap();
        // Everything in the new window except the top was never received,
        // including numbers that alias old buckets.
        for s in (1_000_000 - 127)..1_000_000 {
            assert_eq!(w.check(s), Ok(()), "{s}");
        }
        assert_eq!(w.check(1_000_000 - 128), Err(DropReason::TooOld));
    }

    #[test]
    fn duplicate_in_one_burst_caught_on_update() {
        let mut w = ReplayWindow::new(64).unwrap();
        // Both copies pass the pre-ICV check...
        assert!(w.check(7).is_ok() && w.check(7).is_ok());
        // ...but only one survives the post-ICV update.
        assert_eq!(w.update(7), Ok(()));
        assert_eq!(w.update(7), Err(DropReason::Replay));
    }

    #[test]
    fn disabled_window_accepts_everything_but_tracks_last() {
        let mut w = ReplayWindow::new(0).unwrap();
        accept(&mut w, 5).unwrap();
        accept(&mut w, 5).unwrap();
        accept(&mut w, 1).unwrap();
        assert_eq!(w.last(), 5);
    }

    #[test]
    fn esn_high_bits_across_the_boundary() {
        let mut w = ReplayWindow::new(64).unwrap();
        // Fresh SA: everything is subspace 0.
        assert_eq!(w.infer_seq_hi(1), 0);
        assert_eq!(w.infer_seq_hi(u32::MAX), 0);
        // Just below the boundary (case A).
        let below = (1u64 << 32) - 10;
        accept(&mut w, below).unwrap();
        assert_eq!(w.infer_seq_hi(u32::MAX - 20), 0, "inside the window");
        assert_eq!(w.infer_seq_hi(u32::MAX), 0, "ahead, same subspace");
        assert_eq!(w.infer_seq_hi(3), 1, "wrapped low bits → next subspace");
        // Just past the boundary (case B: window spans both subspaces).
        let above = (1u64 << 32) + 5;
        accept(&mut w, above).unwrap();
        assert_eq!(w.infer_seq_hi(2), 1);
        assert_eq!(w.infer_seq_hi(100), 1);
        assert_eq!(
            w.infer_seq_hi(u32::MAX - 3),
            0,
            "late packet from before the wrap"
        );
        assert_eq!(w.check(u64::from(u32::MAX - 3)), Ok(()));
        assert_eq!(w.check(below), Err(DropReason::Replay));
        // Deep in subspace 7.
        let mut w = ReplayWindow::new(256).unwrap();
        accept(&mut w, (7u64 << 32) | 1000).unwrap();
        assert_eq!(w.infer_seq_hi(900), 7);
        assert_eq!(w.infer_seq_hi(10), 8, "below the window: the next wrap");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Near(u16),
        Jump(u32),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            8 => any::<u16>().prop_map(Op::Near),
            1 => any::<u32>().prop_map(Op::Jump),
        ]
    }

    proptest::proptest! {
        /// The bitmap agrees with a set of every accepted number.
        #[test]
        fn matches_btreeset_model(
            window in proptest::sample::select(vec![64u32, 128, 192, 1024, 4096]),
            ops in proptest::collection::vec(op(), 1..400),
        ) {
            let mut w = ReplayWindow::new(window).unwrap();
            let size = u64::from(w.size());
            let mut seen = BTreeSet::new();
            let mut last = 0u64;
            for op in ops {
                // Mostly numbers near the top of the window, sometimes jumps.
                let seq = match op {
                    Op::Near(d) => (last + 64).saturating_sub(u64::from(d) % (2 * size + 128)),
                    Op::Jump(j) => last + u64::from(j),
                };
                let want = if seq == 0 || (seq <= last && seq + size <= last) {
                    Err(DropReason::TooOld)
                } else if seen.contains(&seq) {
                    Err(DropReason::Replay)
                } else {
                    Ok(())
                };
                proptest::prop_assert_eq!(w.check(seq), want, "seq {} last {}", seq, last);
                proptest::prop_assert_eq!(w.update(seq), want);
                if want.is_ok() {
                    seen.insert(seq);
                    last = last.max(seq);
                }
            }
        }
    }
}
