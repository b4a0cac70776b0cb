//! I/O backends behind one trait: bursts in, bursts out.
//!
//! Every backend moves whole IP packets (outer or inner) in [`Frame`]s taken
//! from the worker's [`Pool`]; a backend that does not see IP headers on the
//! wire (plain UDP sockets) synthesizes them on receive and strips them on
//! transmit, so the worker's pipeline is the same whatever the backend.

use crate::buf::{Burst, Pool};

/// Counters every backend keeps (summed per worker by the caller).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Packets the backend could not receive into a frame (pool empty, too big).
    pub rx_dropped: u64,
    /// Packets handed to `tx_burst` that did not go out (ring full, send error).
    pub tx_dropped: u64,
}

/// Set-up and fatal I/O errors (per-packet problems are counted, not returned).
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("{what}: {source}")]
    Os {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
}

/// A packet interface driven in bursts.
pub trait PacketIo: Send {
    /// Receives up to `burst.room()` packets into frames taken from `pool`,
    /// appending them to `burst`. Never blocks for long: returns 0 when
    /// nothing is ready. Returns the number of packets added.
    fn rx_burst(&mut self, pool: &mut Pool, burst: &mut Burst) -> Result<usize, IoError>;

    /// Sends every frame of `burst` (leaving it empty) and returns each frame
    /// to `pool`. Packets that cannot go out are counted in
    /// `IoStats::tx_dropped`. Returns the number sent.
    fn tx_burst(&mut self, pool: &mut Pool, burst: &mut Burst) -> Result<usize, IoError>;

    fn stats(&self) -> IoStats;
}

pub mod af_xdp;
pub mod bpf;
pub mod mem;
pub mod tun;
pub mod udp;
