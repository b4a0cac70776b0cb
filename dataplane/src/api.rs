//! Types shared between the dataplane and the control plane.
//!
//! This is the only part of `espgate-dataplane` the control plane may use
//! (DESIGN.md: the dependency arrow points controlplane → `api`). Everything
//! here is plain data: no threads, no sockets, no clock.

use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Security Parameter Index. Inbound SPIs are chosen by the dataplane and
/// encode the worker (shard) that owns the SA, so lookup needs no lock and no
/// shared table: `shard` (4 bits) | `generation` (8 bits) | `slot` (20 bits).
/// The generation changes each time a slot is reused, so a stale SPI of a
/// deleted SA never names a live one. Outbound SPIs are the peer's choice and
/// carry no meaning for us.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Spi(pub u32);

impl Spi {
    pub const SHARD_BITS: u32 = 4;
    pub const GEN_BITS: u32 = 8;
    pub const SLOT_BITS: u32 = 20;
    /// Largest number of workers an SPI can name.
    pub const MAX_SHARDS: usize = 1 << Self::SHARD_BITS;
    /// Slots per shard (1M): the SA table of one worker never grows past this.
    pub const SLOTS_PER_SHARD: usize = 1 << Self::SLOT_BITS;

    /// Builds an inbound SPI. `generation` 0 is never used so that no SPI in
    /// RFC 4303 §2.1's reserved range 0..=255 is ever produced.
    pub const fn new(shard: u8, generation: u8, slot: u32) -> Spi {
        Spi(((shard as u32 & 0xf) << 28)
            | ((generation as u32) << Self::SLOT_BITS)
            | (slot & (Self::SLOTS_PER_SHARD as u32 - 1)))
    }
    pub const fn shard(self) -> u8 {
        (self.0 >> 28) as u8
    }
    pub const fn generation(self) -> u8 {
        (self.0 >> Self::SLOT_BITS) as u8
    }
    pub const fn slot(self) -> u32 {
        self.0 & (Self::SLOTS_PER_SHARD as u32 - 1)
    }
}

impl fmt::Debug for Spi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Spi(0x{:08x})", self.0)
    }
}

impl fmt::Display for Spi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:08x}", self.0)
    }
}

/// Hands out inbound SPIs. Shared by the control plane (which allocates when
/// it negotiates a child SA) and the dataplane (which installs the SA in the
/// owning shard). Not on the packet path, so a mutex is fine here.
///
/// Guarantee: an SPI is never handed out twice while it is live; a freed slot
/// comes back with the next generation.
pub struct SpiAllocator {
    shards: u8,
    /// Generation of a slot's first use; random so that two gateways (or a
    /// restarted one) do not hand out the same SPIs.
    first_generation: u8,
    next_shard: AtomicU32,
    state: Mutex<Vec<ShardSlots>>,
}

struct ShardSlots {
    /// Generation to use for each slot the next time it is allocated.
    generation: Vec<u8>,
    live: Vec<bool>,
    free: Vec<u32>,
    next_fresh: u32,
}

impl SpiAllocator {
    /// `shards` = number of workers (1..=16).
    pub fn new(shards: u8) -> SpiAllocator {
        let shards = shards.clamp(1, Spi::MAX_SHARDS as u8);
        let state = (0..shards)
            .map(|_| ShardSlots {
                generation: Vec::new(),
                live: Vec::new(),
                free: Vec::new(),
                next_fresh: 0,
            })
            .collect();
        SpiAllocator {
            shards,
            first_generation: rand::random_range(1..=u8::MAX),
            next_shard: AtomicU32::new(0),
            state: Mutex::new(state),
        }
    }

    pub fn shards(&self) -> u8 {
        self.shards
    }

    /// Allocates an SPI on the next shard (round robin), or `None` when every
    /// slot of that shard is live.
    pub fn allocate(&self) -> Option<Spi> {
        let shard = (self.next_shard.fetch_add(1, Ordering::Relaxed) % self.shards as u32) as u8;
        self.allocate_on(shard)
    }

    /// Allocates an SPI owned by `shard`.
    pub fn allocate_on(&self, shard: u8) -> Option<Spi> {
        if shard >= self.shards {
            return None;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let s = &mut state[shard as usize];
        let slot = if let Some(slot) = s.free.pop() {
            slot
        } else if (s.next_fresh as usize) < Spi::SLOTS_PER_SHARD {
            let slot = s.next_fresh;
            s.next_fresh += 1;
            s.generation.push(self.first_generation);
            s.live.push(false);
            slot
        } else {
            return None;
        };
        let i = slot as usize;
        let generation = s.generation[i];
        s.live[i] = true;
        Some(Spi::new(shard, generation, slot))
    }

    /// Returns an SPI; its slot comes back later under a new generation.
    /// Freeing an SPI that is not live (twice, or a stale generation) is a
    /// no-op, so a late delete can never free someone else's SA.
    pub fn free(&self, spi: Spi) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(s) = state.get_mut(spi.shard() as usize) else {
            return;
        };
        let i = spi.slot() as usize;
        if i >= s.live.len() || !s.live[i] || s.generation[i] != spi.generation() {
            return;
        }
        s.live[i] = false;
        // Skip generation 0 so that no SPI lands in the reserved range.
        s.generation[i] = match s.generation[i].wrapping_add(1) {
            0 => 1,
            g => g,
        };
        s.free.push(spi.slot());
    }

    pub fn is_live(&self, spi: Spi) -> bool {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .get(spi.shard() as usize)
            .and_then(|s| {
                let i = spi.slot() as usize;
                Some(*s.live.get(i)? && s.generation[i] == spi.generation())
            })
            .unwrap_or(false)
    }
}

/// Which way an SA carries traffic, seen from this gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    Inbound,
    Outbound,
}

/// ESP transform suites. Names follow the IKEv2 transform IDs they map to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Suite {
    /// ENCR_AES_CBC 256 + AUTH_HMAC_SHA2_256_128 (RFC 3602, RFC 4868).
    Aes256CbcHmacSha256,
    /// ENCR_AES_CBC 128 + AUTH_HMAC_SHA2_256_128.
    Aes128CbcHmacSha256,
    /// ENCR_AES_CBC 256 + AUTH_HMAC_SHA1_96 (RFC 2404, legacy).
    Aes256CbcHmacSha1,
    /// ENCR_AES_GCM_16 with a 128-bit key (RFC 4106).
    Aes128Gcm16,
    /// ENCR_AES_GCM_16 with a 256-bit key (RFC 4106).
    Aes256Gcm16,
}

impl Suite {
    /// Cipher key bytes, without the GCM salt.
    pub const fn cipher_key_len(self) -> usize {
        match self {
            Suite::Aes128CbcHmacSha256 | Suite::Aes128Gcm16 => 16,
            _ => 32,
        }
    }
    /// Bytes of key material the ESP encryption key takes from KEYMAT
    /// (RFC 4106 §8.1: GCM takes key || 4-byte salt).
    pub const fn encr_keymat_len(self) -> usize {
        self.cipher_key_len() + self.salt_len()
    }
    pub const fn salt_len(self) -> usize {
        if self.is_aead() {
            4
        } else {
            0
        }
    }
    /// Bytes of KEYMAT the integrity key takes (0 for AEAD).
    pub const fn integ_key_len(self) -> usize {
        match self {
            Suite::Aes256CbcHmacSha256 | Suite::Aes128CbcHmacSha256 => 32,
            Suite::Aes256CbcHmacSha1 => 20,
            _ => 0,
        }
    }
    pub const fn iv_len(self) -> usize {
        if self.is_aead() {
            8
        } else {
            16
        }
    }
    pub const fn icv_len(self) -> usize {
        match self {
            Suite::Aes256CbcHmacSha1 => 12,
            _ => 16,
        }
    }
    /// Padding alignment of the encrypted part (RFC 4303 §2.4).
    pub const fn block_len(self) -> usize {
        if self.is_aead() {
            4
        } else {
            16
        }
    }
    pub const fn is_aead(self) -> bool {
        matches!(self, Suite::Aes128Gcm16 | Suite::Aes256Gcm16)
    }
    /// Cisco-style transform name, as `show crypto ipsec sa` prints it.
    pub const fn transform_name(self) -> &'static str {
        match self {
            Suite::Aes256CbcHmacSha256 => "esp-aes-256 esp-sha256-hmac",
            Suite::Aes128CbcHmacSha256 => "esp-aes esp-sha256-hmac",
            Suite::Aes256CbcHmacSha1 => "esp-aes-256 esp-sha-hmac",
            Suite::Aes128Gcm16 => "esp-aes-gcm",
            Suite::Aes256Gcm16 => "esp-aes-gcm-256",
        }
    }
}

/// ESP keys of one SA. `encr` is the cipher key followed by the salt for
/// GCM (exactly `suite.encr_keymat_len()` bytes); `integ` is the HMAC key
/// (`suite.integ_key_len()` bytes, empty for GCM). Zeroized on drop; `Debug`
/// never prints them.
#[derive(Clone, Default, PartialEq, Eq, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
pub struct SaKeys {
    pub encr: Vec<u8>,
    pub integ: Vec<u8>,
}

impl fmt::Debug for SaKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SaKeys {{ encr: <{} bytes>, integ: <{} bytes> }}",
            self.encr.len(),
            self.integ.len()
        )
    }
}

/// Outer tunnel endpoints. `udp_encap = Some((src_port, dst_port))` puts ESP
/// in UDP (RFC 3948), normally (4500, 4500).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TunnelEnds {
    pub local: IpAddr,
    pub remote: IpAddr,
    pub udp_encap: Option<(u16, u16)>,
}

/// Traffic selector of a child SA (one expanded ACL entry). `proto` None =
/// any protocol. Ports are inclusive ranges; `0..=65535` = any.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Selector {
    pub src: IpNet,
    pub dst: IpNet,
    pub proto: Option<u8>,
    pub src_ports: RangeInclusive<u16>,
    pub dst_ports: RangeInclusive<u16>,
}

impl Selector {
    /// Any protocol and port between two prefixes.
    pub fn between(src: IpNet, dst: IpNet) -> Selector {
        Selector {
            src,
            dst,
            proto: None,
            src_ports: 0..=u16::MAX,
            dst_ports: 0..=u16::MAX,
        }
    }

    /// The same selector seen from the peer (src and dst swapped).
    pub fn reversed(&self) -> Selector {
        Selector {
            src: self.dst,
            dst: self.src,
            proto: self.proto,
            src_ports: self.dst_ports.clone(),
            dst_ports: self.src_ports.clone(),
        }
    }

    pub fn matches(&self, flow: &FlowKey) -> bool {
        self.src.contains(&flow.src)
            && self.dst.contains(&flow.dst)
            && self.proto.is_none_or(|p| p == flow.proto)
            && self.src_ports.contains(&flow.src_port)
            && self.dst_ports.contains(&flow.dst_port)
    }
}

/// A 5-tuple as the classifier sees it. Ports are 0 for protocols without
/// ports (ICMP: type/code are not used as ports here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FlowKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

/// Index of an expanded crypto-ACL entry (one per child SA, as Cisco does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RuleId(pub u32);

/// SA lifetime limits. `u64::MAX` = no limit. The dataplane raises
/// `SoftExpire` once when any soft limit is crossed and stops using the SA at
/// any hard limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifetime {
    pub soft_bytes: u64,
    pub hard_bytes: u64,
    pub soft_packets: u64,
    pub hard_packets: u64,
    pub soft_secs: u64,
    pub hard_secs: u64,
}

impl Lifetime {
    pub const UNLIMITED: Lifetime = Lifetime {
        soft_bytes: u64::MAX,
        hard_bytes: u64::MAX,
        soft_packets: u64::MAX,
        hard_packets: u64::MAX,
        soft_secs: u64::MAX,
        hard_secs: u64::MAX,
    };

    /// Cisco ASA defaults: 4,608,000 kB and 28,800 s hard; soft at ~90%.
    pub const CISCO_DEFAULT: Lifetime = Lifetime {
        soft_bytes: 4_608_000 * 1024 / 10 * 9,
        hard_bytes: 4_608_000 * 1024,
        soft_packets: u64::MAX,
        hard_packets: u64::MAX,
        soft_secs: 28_800 / 10 * 9,
        hard_secs: 28_800,
    };
}

impl Default for Lifetime {
    fn default() -> Self {
        Lifetime::CISCO_DEFAULT
    }
}

/// The worker that owns the outbound SA of `rule` (its first SA, when the
/// rule has per-worker SAs). The control plane offers that worker's index
/// with the rule's first child SA.
pub fn outbound_owner(rule: RuleId, workers: u8) -> u8 {
    (rule.0 % workers.max(1) as u32) as u8
}

/// Everything the dataplane needs to run one unidirectional ESP SA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaParams {
    pub spi: Spi,
    pub dir: Direction,
    pub suite: Suite,
    pub keys: SaKeys,
    pub tunnel: TunnelEnds,
    /// Outbound: what the SA protects (local → remote). Inbound: what the
    /// decrypted inner packets must match (remote → local).
    pub selector: Selector,
    pub esn: bool,
    /// Anti-replay window in packets (64..=4096); 0 disables replay checks.
    pub replay_window: u32,
    pub lifetime: Lifetime,
    /// The crypto-ACL entry this SA serves.
    pub rule: RuleId,
    /// Groups the inbound and outbound SA of one child SA (Cisco `conn_id`).
    pub child_id: u32,
    /// RFC 9611 per-resource SA: `Some(w)` = this outbound SA carries the
    /// rule's traffic that arrives on worker `w` (mod the worker count), so
    /// one tunnel's encryption spreads over the cores; its inbound twin's
    /// SPI is allocated on shard `w`. `None` = the rule's one SA, on
    /// [`outbound_owner`].
    #[serde(default)]
    pub resource: Option<u8>,
    /// A combined child SA (one SA for several ACL entries) carries these
    /// selectors too; inbound packets may match any of them.
    #[serde(default)]
    pub more_selectors: Vec<Selector>,
}

/// Why an SA expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpireReason {
    Bytes,
    Packets,
    Time,
    /// The 32- or 64-bit sequence number space is used up; never wraps.
    SeqExhausted,
}

/// Control plane → dataplane. Applied by the workers between bursts.
#[derive(Debug)]
pub enum ControlMsg {
    InstallSa(Box<SaParams>),
    DeleteSa {
        spi: Spi,
        dir: Direction,
    },
    /// Make `new` the outbound SA of its rule in one step (make-before-break
    /// rekey); `old` keeps decrypting until deleted.
    RekeySa {
        old: Spi,
        new: Box<SaParams>,
    },
    /// Install `outbound` once the inbound SA `proof` (the same child's,
    /// on the same worker) has decrypted a packet: the peer has then
    /// installed the child's keys, so it accepts what we send on
    /// `outbound`. An IKE responder's additional per-worker child SA uses
    /// this: until then the rule's first SA carries the traffic, so nothing
    /// is sent on keys the initiator may not have yet.
    InstallSaAfterPeer {
        outbound: Box<SaParams>,
        proof: Spi,
    },
    /// Publish a new SPD snapshot (RCU style).
    UpdateSpd(std::sync::Arc<crate::spd::Spd>),
    /// The control plane gave up negotiating the SA for `rule`/`peer`:
    /// queued packets are dropped and counted.
    AcquireFailed {
        rule: RuleId,
        peer: IpAddr,
    },
}

/// Dataplane → control plane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataplaneEvent {
    /// A protected packet found no outbound SA. Raised once per (rule, peer)
    /// until the SA is installed or the acquire fails/times out.
    Acquire {
        rule: RuleId,
        peer: IpAddr,
        flow: FlowKey,
    },
    SoftExpire {
        spi: Spi,
        dir: Direction,
        why: ExpireReason,
    },
    HardExpire {
        spi: Spi,
        dir: Direction,
        why: ExpireReason,
    },
    InstallFailed {
        spi: Spi,
        err: String,
    },
}

/// Per-SA counters, named after `show crypto ipsec sa`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaCounters {
    pub encaps: u64,
    pub encrypt: u64,
    pub digest: u64,
    pub decaps: u64,
    pub decrypt: u64,
    pub verify: u64,
    pub bytes: u64,
    pub replay: u64,
    pub auth_fail: u64,
    pub bad_padding: u64,
    pub bad_next_header: u64,
    pub truncated: u64,
    pub policy_mismatch: u64,
    pub send_errors: u64,
    pub recv_errors: u64,
}

impl SaCounters {
    pub fn add(&mut self, o: &SaCounters) {
        self.encaps += o.encaps;
        self.encrypt += o.encrypt;
        self.digest += o.digest;
        self.decaps += o.decaps;
        self.decrypt += o.decrypt;
        self.verify += o.verify;
        self.bytes += o.bytes;
        self.replay += o.replay;
        self.auth_fail += o.auth_fail;
        self.bad_padding += o.bad_padding;
        self.bad_next_header += o.bad_next_header;
        self.truncated += o.truncated;
        self.policy_mismatch += o.policy_mismatch;
        self.send_errors += o.send_errors;
        self.recv_errors += o.recv_errors;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spi_fields_round_trip() {
        let spi = Spi::new(3, 7, 12345);
        assert_eq!((spi.shard(), spi.generation(), spi.slot()), (3, 7, 12345));
        assert!(Spi::new(0, 1, 0).0 > 255, "never in the reserved range");
    }

    #[test]
    fn allocator_never_repeats_a_live_spi() {
        let a = SpiAllocator::new(2);
        let mut live = std::collections::HashSet::new();
        for _ in 0..1000 {
            let s = a.allocate().unwrap();
            assert!(live.insert(s), "duplicate live SPI {s}");
            assert!(s.0 > 255);
        }
        let first: Vec<Spi> = live.iter().copied().take(10).collect();
        for s in &first {
            a.free(*s);
            a.free(*s); // double free is harmless
            live.remove(s);
        }
        for _ in 0..10 {
            let s = a.allocate().unwrap();
            assert!(!first.contains(&s), "freed SPI {s} handed out again");
            assert!(live.insert(s));
        }
        assert_eq!(a.shards(), 2);
        assert!(a.allocate_on(2).is_none());
    }

    #[test]
    fn selector_matches_and_reverses() {
        let sel = Selector::between(
            "192.168.100.0/24".parse().unwrap(),
            "172.16.10.0/24".parse().unwrap(),
        );
        let flow = FlowKey {
            src: "192.168.100.10".parse().unwrap(),
            dst: "172.16.10.11".parse().unwrap(),
            proto: 1,
            src_port: 0,
            dst_port: 0,
        };
        assert!(sel.matches(&flow));
        assert!(!sel.reversed().matches(&flow));
    }
}
