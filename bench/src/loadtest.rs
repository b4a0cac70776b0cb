//! Shared pieces of the veth load test (`pktgen`, `xdp_forward`,
//! `scripts/loadtest.sh`): the probe payload every generated packet carries,
//! packet-size mixes, the sequence tracker and the latency histogram of the
//! sink, and a small option parser.
//!
//! The probe is written at the start of the UDP payload:
//! `magic u32 | flow u32 | seq u64 | send time u64` (big endian), 24 bytes,
//! so the smallest test packet (64-byte IP packet = 36-byte UDP payload)
//! carries it. Send times are `CLOCK_MONOTONIC` nanoseconds: network
//! namespaces share that clock, so the sink in another namespace can
//! subtract them.

use std::collections::HashMap;
use std::net::IpAddr;

/// "EGLT": marks our probes; anything else reaching the sink is counted bad.
pub const MAGIC: u32 = 0x4547_4c54;
/// Bytes of the probe header at the start of the UDP payload.
pub const PROBE_LEN: usize = 24;
/// IPv4 (20) + UDP (8) headers in front of the payload.
pub const IP_UDP_OVERHEAD: usize = 28;
/// Smallest IP packet that carries a probe.
pub const MIN_IP_LEN: usize = IP_UDP_OVERHEAD + PROBE_LEN;
/// Largest IP packet we generate (a 1500-byte MTU).
pub const MAX_IP_LEN: usize = 1500;

/// One probe: which flow, which packet of it, when it was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub flow: u32,
    pub seq: u64,
    pub ts_ns: u64,
}

impl Probe {
    /// Writes the probe at the start of `payload`; false if it is too short.
    pub fn write(&self, payload: &mut [u8]) -> bool {
        let Some(p) = payload.get_mut(..PROBE_LEN) else {
            return false;
        };
        p[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        p[4..8].copy_from_slice(&self.flow.to_be_bytes());
        p[8..16].copy_from_slice(&self.seq.to_be_bytes());
        p[16..24].copy_from_slice(&self.ts_ns.to_be_bytes());
        true
    }

    /// Reads a probe; `None` for a short payload or a wrong magic.
    pub fn read(payload: &[u8]) -> Option<Probe> {
        let p = payload.get(..PROBE_LEN)?;
        let word = |r: std::ops::Range<usize>| {
            p.get(r)
                .map(|b| b.iter().fold(0u64, |a, &x| a << 8 | u64::from(x)))
        };
        if word(0..4)? != u64::from(MAGIC) {
            return None;
        }
        Some(Probe {
            flow: word(4..8)? as u32,
            seq: word(8..16)?,
            ts_ns: word(16..24)?,
        })
    }
}

/// IMIX 7:4:1 of 64, 576 and 1500-byte IP packets, interleaved so that any
/// 12 consecutive packets hold the exact mix.
const IMIX_PATTERN: [usize; 12] = [64, 576, 64, 64, 1500, 64, 576, 64, 64, 576, 64, 576];

/// The IP packet sizes a run generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeMix {
    /// Every packet this many IP bytes.
    Fixed(usize),
    /// IMIX 7:4:1 (64/576/1500).
    Imix,
}

impl SizeMix {
    /// `64`, `512`, `1400`, ... (IP bytes, 52..=1500) or `imix`.
    pub fn parse(s: &str) -> Result<SizeMix, String> {
        if s.eq_ignore_ascii_case("imix") {
            return Ok(SizeMix::Imix);
        }
        match s.parse::<usize>() {
            Ok(n) if (MIN_IP_LEN..=MAX_IP_LEN).contains(&n) => Ok(SizeMix::Fixed(n)),
            _ => Err(format!(
                "size: an IP packet size {MIN_IP_LEN}..={MAX_IP_LEN} or \"imix\" expected, got {s:?}"
            )),
        }
    }

    /// IP length of packet number `seq`.
    pub fn ip_len(&self, seq: u64) -> usize {
        match self {
            SizeMix::Fixed(n) => *n,
            SizeMix::Imix => IMIX_PATTERN[(seq % IMIX_PATTERN.len() as u64) as usize],
        }
    }

    pub fn label(&self) -> String {
        match self {
            SizeMix::Fixed(n) => n.to_string(),
            SizeMix::Imix => "imix".to_string(),
        }
    }
}

/// What the sink learned from one sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqVerdict {
    /// First time seen, in order (higher than every earlier one).
    New,
    /// First time seen but after a higher one (reordered).
    Late,
    /// Seen before.
    Duplicate,
    /// Beyond the tracker's range: not tracked.
    OutOfRange,
}

/// A bitmap of the sequence numbers seen in one flow (allocated once).
pub struct SeqTracker {
    bits: Vec<u64>,
    max_seq: u64,
    highest: Option<u64>,
    unique: u64,
}

impl SeqTracker {
    /// Tracks sequence numbers `0..max_seq`.
    pub fn new(max_seq: u64) -> SeqTracker {
        SeqTracker {
            bits: vec![0; max_seq.div_ceil(64) as usize],
            max_seq,
            highest: None,
            unique: 0,
        }
    }

    pub fn record(&mut self, seq: u64) -> SeqVerdict {
        if seq >= self.max_seq {
            return SeqVerdict::OutOfRange;
        }
        let Some(word) = self.bits.get_mut((seq / 64) as usize) else {
            return SeqVerdict::OutOfRange;
        };
        let bit = 1u64 << (seq % 64);
        if *word & bit != 0 {
            return SeqVerdict::Duplicate;
        }
        *word |= bit;
        self.unique += 1;
        match self.highest {
            Some(h) if seq < h => SeqVerdict::Late,
            _ => {
                self.highest = Some(seq);
                SeqVerdict::New
            }
        }
    }

    /// Distinct sequence numbers seen.
    pub fn unique(&self) -> u64 {
        self.unique
    }

    /// The highest sequence number seen.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Packets missing below the highest one seen (tail loss is invisible
    /// here: the sender's count tells it).
    pub fn gaps(&self) -> u64 {
        self.highest.map_or(0, |h| h + 1 - self.unique)
    }
}

/// Latency histogram: 100 ns buckets up to 100 ms, then 100 µs buckets up
/// to 100 s (a userspace IPsec stack under overload queues for seconds),
/// then one overflow bucket.
pub struct LatencyHist {
    buckets: Vec<u32>,
    count: u64,
    max_ns: u64,
}

const FINE_NS: u64 = 100;
const COARSE_NS: u64 = 100_000;
/// Buckets per tier.
const TIER: usize = 1_000_000;
const FINE_END_NS: u64 = FINE_NS * TIER as u64;
const BUCKETS: usize = 2 * TIER;

impl Default for LatencyHist {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHist {
    pub fn new() -> LatencyHist {
        LatencyHist {
            buckets: vec![0; BUCKETS + 1],
            count: 0,
            max_ns: 0,
        }
    }

    fn index(ns: u64) -> usize {
        if ns < FINE_END_NS {
            (ns / FINE_NS) as usize
        } else {
            (TIER + ((ns - FINE_END_NS) / COARSE_NS) as usize).min(BUCKETS)
        }
    }

    /// Upper edge of bucket `i` (< BUCKETS).
    fn upper(i: usize) -> u64 {
        if i < TIER {
            (i as u64 + 1) * FINE_NS
        } else {
            FINE_END_NS + (i - TIER + 1) as u64 * COARSE_NS
        }
    }

    pub fn record(&mut self, ns: u64) {
        let i = Self::index(ns);
        self.buckets[i] = self.buckets[i].saturating_add(1);
        self.count += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max_ns(&self) -> u64 {
        self.max_ns
    }

    /// The latency below which `pct` percent of the samples lie (upper edge
    /// of its bucket); `None` without samples.
    pub fn percentile(&self, pct: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((pct / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, &c) in self.buckets.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return Some(if i == BUCKETS {
                    self.max_ns
                } else {
                    Self::upper(i).min(self.max_ns.max(1))
                });
            }
        }
        Some(self.max_ns)
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds (shared by all network namespaces).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Addresses a load generator may send to: loopback and private ranges,
/// which in the load test only exist inside its namespaces.
pub fn is_test_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_loopback() || a.is_private(),
        IpAddr::V6(a) => a.is_loopback() || (a.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// True when this process runs in the host's (pid 1's) network namespace.
/// The generators refuse to flood from there.
pub fn in_init_netns() -> bool {
    let ino = |p: &str| std::fs::read_link(p).ok();
    match (ino("/proc/self/ns/net"), ino("/proc/1/ns/net")) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// `--key value` options and bare flags (`--key` followed by another option
/// or nothing is stored with an empty value).
pub struct Opts {
    map: HashMap<String, String>,
}

impl Opts {
    /// Parses `args` (without the program name). Positional words are an error.
    pub fn parse(args: &[String]) -> Result<Opts, String> {
        let mut map = HashMap::new();
        let mut i = 0;
        while i < args.len() {
            let key = args[i]
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {:?}", args[i]))?;
            let value = match args.get(i + 1) {
                Some(v) if !v.starts_with("--") => {
                    i += 1;
                    v.clone()
                }
                _ => String::new(),
            };
            map.insert(key.to_string(), value);
            i += 1;
        }
        Ok(Opts { map })
    }

    pub fn flag(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    pub fn required(&self, key: &str) -> Result<&str, String> {
        self.str(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("--{key} is required"))
    }

    /// A parsed value or `default` when absent.
    pub fn get<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        match self.str(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{key}: bad value {v:?}")),
        }
    }

    /// Keys given that are not in `known` (typos would silently be ignored).
    pub fn unknown(&self, known: &[&str]) -> Vec<String> {
        let mut u: Vec<String> = self
            .map
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .cloned()
            .collect();
        u.sort();
        u
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_round_trip_and_rejects() {
        let p = Probe {
            flow: 3,
            seq: 0x0102_0304_0506_0708,
            ts_ns: 42,
        };
        let mut buf = [0u8; 36];
        assert!(p.write(&mut buf));
        assert_eq!(Probe::read(&buf), Some(p));
        assert_eq!(&buf[..4], b"EGLT");
        assert!(!p.write(&mut [0u8; 23]));
        assert_eq!(Probe::read(&buf[..23]), None);
        buf[0] ^= 1;
        assert_eq!(Probe::read(&buf), None);
    }

    #[test]
    fn imix_is_7_4_1_in_every_window_of_12() {
        let m = SizeMix::Imix;
        for start in 0..24u64 {
            let mut c = HashMap::new();
            for s in start..start + 12 {
                *c.entry(m.ip_len(s)).or_insert(0) += 1;
            }
            assert_eq!(c.get(&64), Some(&7));
            assert_eq!(c.get(&576), Some(&4));
            assert_eq!(c.get(&1500), Some(&1));
        }
        assert_eq!(SizeMix::parse("IMIX"), Ok(SizeMix::Imix));
        assert_eq!(SizeMix::parse("64"), Ok(SizeMix::Fixed(64)));
        assert!(SizeMix::parse("51").is_err());
        assert!(SizeMix::parse("1501").is_err());
        assert!(SizeMix::parse("x").is_err());
    }

    #[test]
    fn seq_tracker_counts_dup_late_gap() {
        let mut t = SeqTracker::new(100);
        assert_eq!(t.record(0), SeqVerdict::New);
        assert_eq!(t.record(2), SeqVerdict::New);
        assert_eq!(t.record(1), SeqVerdict::Late);
        assert_eq!(t.record(2), SeqVerdict::Duplicate);
        assert_eq!(t.record(5), SeqVerdict::New);
        assert_eq!(t.record(100), SeqVerdict::OutOfRange);
        assert_eq!(t.unique(), 4);
        assert_eq!(t.highest(), Some(5));
        assert_eq!(t.gaps(), 2); // 3 and 4
    }

    #[test]
    fn histogram_percentiles() {
        let mut h = LatencyHist::new();
        assert_eq!(h.percentile(50.0), None);
        for us in 1..=100u64 {
            h.record(us * 1000);
        }
        assert_eq!(h.percentile(50.0), Some(50_100));
        assert_eq!(h.percentile(99.0), Some(99_100));
        assert_eq!(h.percentile(100.0), Some(100_000)); // capped at the max seen
        let mut h = LatencyHist::new();
        h.record(1_500_000_000); // 1.5 s: the coarse tier
        h.record(1_000_000_000_000); // beyond the last bucket
        assert_eq!(h.percentile(50.0), Some(1_500_100_000));
        assert_eq!(h.percentile(100.0), Some(1_000_000_000_000));
        assert_eq!(h.max_ns(), 1_000_000_000_000);
    }

    #[test]
    fn only_private_destinations() {
        assert!(is_test_address("172.16.10.11".parse().unwrap()));
        assert!(is_test_address("127.0.0.1".parse().unwrap()));
        assert!(is_test_address("fd00::1".parse().unwrap()));
        assert!(!is_test_address("8.8.8.8".parse().unwrap()));
        assert!(!is_test_address("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn opts_parse() {
        let a: Vec<String> = ["--size", "64", "--quick", "--rate", "0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let o = Opts::parse(&a).unwrap();
        assert_eq!(o.str("size"), Some("64"));
        assert!(o.flag("quick"));
        assert_eq!(o.get("rate", 5u64), Ok(0));
        assert_eq!(o.get("count", 7u64), Ok(7));
        assert!(o.required("dst").is_err());
        assert_eq!(o.unknown(&["size", "rate"]), vec!["quick".to_string()]);
        assert!(Opts::parse(&["x".to_string()]).is_err());
    }
}
