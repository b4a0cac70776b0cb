//! Configuration of one gateway's control plane (what `Machine::new` needs).
//! The root binary builds it from TOML; tests build it directly.

use std::net::IpAddr;
use std::time::Duration;

use espgate_dataplane::api::{Lifetime, RuleId, Selector, Suite};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// IKE port (RFC 7296 §2).
pub const IKE_PORT: u16 = 500;
/// NAT-T port (RFC 3948 §1).
pub const NAT_T_PORT: u16 = 4500;

/// A pre-shared key. Zeroized on drop; `Debug` never prints it.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct Psk(Vec<u8>);

impl Psk {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Psk {
        Psk(bytes.into())
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Psk(<{} bytes>)", self.0.len())
    }
}

/// An IKE identity (RFC 7296 §3.5). IP identities default to the address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// ID_IPV4_ADDR / ID_IPV6_ADDR.
    Addr(IpAddr),
    /// ID_FQDN.
    Fqdn(String),
}

impl Identity {
    /// ID Type (RFC 7296 §3.5).
    pub fn id_type(&self) -> u8 {
        match self {
            Identity::Addr(IpAddr::V4(_)) => 1,
            Identity::Fqdn(_) => 2,
            Identity::Addr(IpAddr::V6(_)) => 5,
        }
    }
    /// Identification Data.
    pub fn data(&self) -> Vec<u8> {
        match self {
            Identity::Addr(IpAddr::V4(a)) => a.octets().to_vec(),
            Identity::Addr(IpAddr::V6(a)) => a.octets().to_vec(),
            Identity::Fqdn(s) => s.as_bytes().to_vec(),
        }
    }
    /// RestOfIDPayload for AUTH (RFC 7296 §2.15): ID type, 3 reserved bytes, data.
    pub fn auth_body(&self) -> Vec<u8> {
        let mut v = vec![self.id_type(), 0, 0, 0];
        v.extend_from_slice(&self.data());
        v
    }
}

/// One remote gateway.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    pub addr: IpAddr,
    /// Where the peer listens for IKE (500) and NAT-T (4500); configurable so
    /// tests can run two daemons on one host.
    pub ike_port: u16,
    pub nat_port: u16,
    pub psk: Psk,
    /// What we send as IDi/IDr to this peer; default our address.
    pub local_id: Option<Identity>,
    /// What the peer must present as IDi/IDr. `None` accepts any ID whose
    /// AUTH verifies with this peer's PSK (the PSK is chosen by address).
    pub remote_id: Option<Identity>,
}

impl PeerConfig {
    pub fn new(addr: IpAddr, psk: Psk) -> PeerConfig {
        PeerConfig {
            addr,
            ike_port: IKE_PORT,
            nat_port: NAT_T_PORT,
            psk,
            local_id: None,
            remote_id: None,
        }
    }
}

/// One expanded crypto-ACL entry this gateway protects: traffic from
/// `selector.src` (local side) to `selector.dst` (remote side) goes to `peer`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleEntry {
    pub rule: RuleId,
    pub selector: Selector,
    /// One combined child SA for several ACL entries (`[acl] sa =
    /// "combined"`): the other entries' selectors, proposed with `selector`
    /// as TSi/TSr lists. Empty: one child SA for this entry alone.
    pub more: Vec<Selector>,
    pub peer: IpAddr,
}

impl RuleEntry {
    /// `selector` then `more`.
    pub fn selectors(&self) -> impl Iterator<Item = &Selector> + '_ {
        std::iter::once(&self.selector).chain(self.more.iter())
    }
}

/// The IKE SA proposal. Only the seed's suite is implemented, so this is a
/// record of it (what `show crypto ikev2 sa` prints) rather than a choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IkeProposal {
    /// ENCR_AES_CBC key bits.
    pub encr_key_bits: u16,
    /// PRF_HMAC_SHA2_256 / AUTH_HMAC_SHA2_256_128.
    pub prf_sha256: bool,
    pub dh_group: u16,
}

impl Default for IkeProposal {
    fn default() -> Self {
        IkeProposal {
            encr_key_bits: 256,
            prf_sha256: true,
            dh_group: 14,
        }
    }
}

/// Everything one gateway's [`crate::machine::Machine`] needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub local: IpAddr,
    pub ike_port: u16,
    pub nat_port: u16,
    pub peers: Vec<PeerConfig>,
    pub ike_proposal: IkeProposal,
    /// ESP suites in order of preference; as responder we take the first of
    /// the initiator's proposals that matches any of these.
    pub esp_proposals: Vec<Suite>,
    /// PFS DH group for CREATE_CHILD_SA (only 14 is supported).
    pub pfs_group: Option<u16>,
    pub rules: Vec<RuleEntry>,
    pub ike_lifetime_secs: u64,
    pub child_lifetime: Lifetime,
    pub replay_window: u32,
    pub esn: bool,
    /// Pretend a NAT sits in the path so ESP is always UDP-encapsulated on
    /// 4500 (strongSwan `encap=yes`; its kernel-libipsec needs it).
    pub force_encap: bool,
    /// First retransmission after this; doubles each time (RFC 7296 §2.1).
    pub retransmit_base: Duration,
    /// Transmissions of one request before giving up (incl. the first).
    pub retransmit_tries: u32,
    /// Liveness check after this much silence; `None` disables DPD.
    pub dpd_interval: Option<Duration>,
    /// Offer one child SA per dataplane worker for each rule (RFC 9611
    /// `SA_RESOURCE_INFO`), so one tunnel's traffic is encrypted on every
    /// core. Only peers that answer the notify get them; others (e.g.
    /// strongSwan 5.x) see one child SA per rule, as before. Off by default:
    /// `show` then lists one child SA per ACL entry, as the ASA does.
    pub sa_per_worker: bool,
}

impl Config {
    /// A gateway at `local` with the seed's proposals and defaults.
    pub fn new(local: IpAddr) -> Config {
        Config {
            local,
            ike_port: IKE_PORT,
            nat_port: NAT_T_PORT,
            peers: Vec::new(),
            ike_proposal: IkeProposal::default(),
            esp_proposals: vec![Suite::Aes256CbcHmacSha256],
            pfs_group: Some(14),
            rules: Vec::new(),
            ike_lifetime_secs: 86_400,
            child_lifetime: Lifetime::CISCO_DEFAULT,
            replay_window: 64,
            esn: false,
            force_encap: false,
            retransmit_base: Duration::from_millis(500),
            retransmit_tries: 5,
            dpd_interval: Some(Duration::from_secs(30)),
            sa_per_worker: false,
        }
    }

    pub fn peer(&self, addr: IpAddr) -> Option<&PeerConfig> {
        self.peers.iter().find(|p| p.addr == addr)
    }

    pub fn rule(&self, rule: espgate_dataplane::api::RuleId) -> Option<&RuleEntry> {
        self.rules.iter().find(|r| r.rule == rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psk_debug_is_redacted() {
        let p = Psk::new(b"topsecret".to_vec());
        assert_eq!(format!("{p:?}"), "Psk(<9 bytes>)");
    }

    #[test]
    fn identity_auth_body() {
        let id = Identity::Addr("10.255.1.2".parse().unwrap());
        assert_eq!(id.auth_body(), vec![1, 0, 0, 0, 10, 255, 1, 2]);
        assert_eq!(
            Identity::Fqdn("gw".into()).auth_body(),
            vec![2, 0, 0, 0, b'g', b'w']
        );
    }
}
