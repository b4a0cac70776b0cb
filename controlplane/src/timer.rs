//! Timers of one IKE SA (quinn-proto's `TimerTable` idea): a fixed array
//! indexed by [`Timer`], the next deadline is the minimum.

use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Resend the outstanding request (RFC 7296 §2.1).
    Retransmit = 0,
    /// Silence for the DPD interval: send an empty INFORMATIONAL (§2.4).
    Dpd = 1,
    /// IKE SA hard lifetime: delete it.
    IkeLifetime = 2,
    /// Half-open SA or failed handshake kept too long: drop it.
    Idle = 3,
}

const COUNT: usize = 4;

impl Timer {
    pub const ALL: [Timer; COUNT] = [
        Timer::Retransmit,
        Timer::Dpd,
        Timer::IkeLifetime,
        Timer::Idle,
    ];
}

#[derive(Clone, Copy, Debug, Default)]
pub struct TimerTable {
    data: [Option<Instant>; COUNT],
}

impl TimerTable {
    pub fn set(&mut self, t: Timer, at: Instant) {
        self.data[t as usize] = Some(at);
    }
    pub fn get(&self, t: Timer) -> Option<Instant> {
        self.data[t as usize]
    }
    pub fn stop(&mut self, t: Timer) {
        self.data[t as usize] = None;
    }
    pub fn next_timeout(&self) -> Option<Instant> {
        self.data.iter().flatten().min().copied()
    }
    /// Clears and returns the timers due at `now`.
    pub fn take_expired(&mut self, now: Instant) -> impl Iterator<Item = Timer> {
        let mut due = [None; COUNT];
        for (i, t) in Timer::ALL.iter().enumerate() {
            if self.data[i].is_some_and(|at| at <= now) {
                self.data[i] = None;
                due[i] = Some(*t);
            }
        }
        due.into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn next_is_min_and_expired_are_cleared() {
        let t0 = Instant::now();
        let mut tt = TimerTable::default();
        assert_eq!(tt.next_timeout(), None);
        tt.set(Timer::Dpd, t0 + Duration::from_secs(30));
        tt.set(Timer::Retransmit, t0 + Duration::from_millis(500));
        assert_eq!(tt.next_timeout(), Some(t0 + Duration::from_millis(500)));
        let due: Vec<_> = tt.take_expired(t0 + Duration::from_secs(1)).collect();
        assert_eq!(due, vec![Timer::Retransmit]);
        assert_eq!(tt.get(Timer::Retransmit), None);
        assert_eq!(tt.next_timeout(), Some(t0 + Duration::from_secs(30)));
        tt.stop(Timer::Dpd);
        assert_eq!(tt.next_timeout(), None);
    }
}
