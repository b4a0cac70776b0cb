//! Why a packet was dropped ([`DropReason`], one per-worker counter each) and
//! set-up errors ([`Error`]).
//!
//! The packet path never returns an error value with data in it: a dropped
//! packet is counted under its reason and its frame goes back to the pool.

use std::fmt;

use crate::api::{Direction, Spi, Suite};

/// Data-free reason a packet was dropped; indexes [`DropCounters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than its headers say, or than the suite's minimum.
    Truncated,
    /// Headers present but inconsistent (bad version, lengths, IHL, fragments).
    Malformed,
    /// No inbound SA for this SPI in this shard (or a stale generation).
    UnknownSpi,
    /// Sequence number already seen inside the window.
    Replay,
    /// Sequence number left of the replay window.
    TooOld,
    /// ICV check failed (wrong key, tampered packet).
    BadIcv,
    /// ESP padding not 1, 2, 3, … or longer than the payload (RFC 4303 §2.4).
    BadPadding,
    /// Next header neither IPv4 (4) nor IPv6 (41) in tunnel mode.
    BadNextHeader,
    /// A dummy packet (next header 59, RFC 4303 §2.6): dropped on purpose.
    DummyPacket,
    /// Decrypted inner packet outside the SA's traffic selector.
    PolicyMismatch,
    /// A protected packet with no outbound SA (acquire off or queue full).
    NoSa,
    /// The sequence number space is used up; the SA must be rekeyed.
    SeqOverflow,
    /// The SA passed a hard lifetime limit.
    HardExpired,
    /// No frame room (head/tailroom) or pool empty.
    NoBuffer,
    /// The cross-worker handoff queue was full.
    HandoffFull,
    /// Inner packet is neither IPv4 nor IPv6.
    NotIp,
    /// Crypto ACL denies the packet and bypass is not allowed.
    PolicyDeny,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 17] = [
        DropReason::Truncated,
        DropReason::Malformed,
        DropReason::UnknownSpi,
        DropReason::Replay,
        DropReason::TooOld,
        DropReason::BadIcv,
        DropReason::BadPadding,
        DropReason::BadNextHeader,
        DropReason::DummyPacket,
        DropReason::PolicyMismatch,
        DropReason::NoSa,
        DropReason::SeqOverflow,
        DropReason::HardExpired,
        DropReason::NoBuffer,
        DropReason::HandoffFull,
        DropReason::NotIp,
        DropReason::PolicyDeny,
    ];
    pub const COUNT: usize = Self::ALL.len();

    pub const fn index(self) -> usize {
        self as usize
    }

    /// Stable snake_case name, for `show` output and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::Malformed => "malformed",
            DropReason::UnknownSpi => "unknown_spi",
            DropReason::Replay => "replay",
            DropReason::TooOld => "too_old",
            DropReason::BadIcv => "bad_icv",
            DropReason::BadPadding => "bad_padding",
            DropReason::BadNextHeader => "bad_next_header",
            DropReason::DummyPacket => "dummy_packet",
            DropReason::PolicyMismatch => "policy_mismatch",
            DropReason::NoSa => "no_sa",
            DropReason::SeqOverflow => "seq_overflow",
            DropReason::HardExpired => "hard_expired",
            DropReason::NoBuffer => "no_buffer",
            DropReason::HandoffFull => "handoff_full",
            DropReason::NotIp => "not_ip",
            DropReason::PolicyDeny => "policy_deny",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Per-worker drop counters, one per [`DropReason`]; summed on read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropCounters(pub [u64; DropReason::COUNT]);

impl Default for DropCounters {
    fn default() -> Self {
        DropCounters([0; DropReason::COUNT])
    }
}

impl DropCounters {
    #[inline]
    pub fn count(&mut self, why: DropReason) {
        self.0[why.index()] += 1;
    }

    pub fn get(&self, why: DropReason) -> u64 {
        self.0[why.index()]
    }

    pub fn add(&mut self, o: &DropCounters) {
        for (a, b) in self.0.iter_mut().zip(o.0.iter()) {
            *a += b;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Non-zero counters with their reasons.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|r| (*r, self.0[r.index()]))
            .filter(|(_, n)| *n != 0)
    }
}

/// Set-up errors of the dataplane (installing SAs, configuring workers).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("SPI {spi} belongs to shard {owner}, not to this worker's shard {shard}")]
    WrongShard { spi: Spi, owner: u8, shard: u8 },
    #[error("inbound SPI {0} is already installed")]
    SpiInUse(Spi),
    #[error("no {dir:?} SA with SPI {spi}")]
    NoSuchSa { spi: Spi, dir: Direction },
    #[error("replay window of {0} packets is outside 64..=4096 (or 0 to disable)")]
    ReplayWindow(u32),
    #[error("{suite:?} needs {expected} bytes of {which} key, got {got}")]
    KeyLength {
        suite: Suite,
        which: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("tunnel endpoints {local} and {remote} are not the same IP version")]
    MixedTunnelFamilies {
        local: std::net::IpAddr,
        remote: std::net::IpAddr,
    },
    #[error("rule id {0:?} is too large for the outbound SA index")]
    RuleId(crate::api::RuleId),
    #[error("crypto set-up failed: {0}")]
    Crypto(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_reason_in_index_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r}");
        }
        let mut c = DropCounters::default();
        c.count(DropReason::Replay);
        c.count(DropReason::Replay);
        c.count(DropReason::PolicyDeny);
        assert_eq!(c.get(DropReason::Replay), 2);
        assert_eq!(c.total(), 3);
        assert_eq!(c.iter().count(), 2);
    }
}
