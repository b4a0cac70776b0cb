//! State of one IKE SA: SPIs, keys, message-ID windows (size 1), the
//! outstanding request with its retransmission state, the cached last
//! response, and the child SAs it carries.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use espgate_dataplane::api::{RuleId, SaParams, Selector, Spi, Suite};

use super::child::ChildSa;
use super::dh::DhKeyPair;
use super::keys::IkeKeys;
use crate::timer::TimerTable;

/// Which side started the IKE SA (fixed for its life; RFC 7296 §2.2 "original initiator").
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Role {
    Initiator,
    Responder,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IkeState {
    /// Initiator: IKE_SA_INIT request sent.
    InitSent,
    /// Initiator: IKE_AUTH request sent.
    AuthSent,
    /// Responder: IKE_SA_INIT answered, waiting for IKE_AUTH.
    InitReplied,
    Established,
    /// Delete of the IKE SA sent; waiting for the answer.
    Deleting,
}

/// A child SA being negotiated by a request of ours.
pub struct ChildRequest {
    pub rule: RuleId,
    /// What we propose, local → remote.
    pub selector: Selector,
    /// Combined child SA: further selectors proposed with `selector`.
    pub more: Vec<Selector>,
    pub spi_in: Spi,
    pub suites: Vec<Suite>,
    pub pfs: Option<DhKeyPair>,
    pub ni: Vec<u8>,
    /// The child this one replaces (rekey), by child_id.
    pub rekey_of: Option<u32>,
    /// RFC 9611 resource (our worker) this child's SAs serve; sent as
    /// SA_RESOURCE_INFO. `None` when per-worker SAs are off.
    pub resource: Option<u8>,
}

/// Our half of an IKE SA rekey (RFC 7296 §1.3.2) in flight.
pub struct IkeRekey {
    /// SPIi of the new IKE SA (ours, as its initiator).
    pub spi_i: [u8; 8],
    pub ni: Vec<u8>,
    pub dh: DhKeyPair,
}

/// What our outstanding request is about, so the response can be matched.
pub enum Pending {
    Init,
    Auth(Option<ChildRequest>),
    CreateChild(ChildRequest),
    DeleteChild { child_id: u32 },
    DeleteIke,
    Dpd,
    RekeyIke(IkeRekey),
}

/// Work queued behind the window of size 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// `resource`: an additional per-worker child SA (RFC 9611) for a rule
    /// that has its first one; `None` for the first child and for rekeys
    /// (which keep the old child's resource).
    CreateChild {
        rule: RuleId,
        rekey_of: Option<u32>,
        resource: Option<u8>,
    },
    DeleteChild {
        child_id: u32,
    },
    DeleteIke,
    Dpd,
    RekeyIke,
}

pub struct Outstanding {
    pub msg_id: u32,
    /// The datagram as sent (with the non-ESP marker on 4500).
    pub datagram: Vec<u8>,
    pub transmissions: u32,
    pub next_delay: Duration,
    pub what: Pending,
}

pub struct IkeSa {
    pub tunnel_id: u32,
    pub role: Role,
    pub state: IkeState,
    pub peer: IpAddr,
    /// Current local and remote endpoint (move to 4500 after NAT detection).
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub spi_i: [u8; 8],
    pub spi_r: [u8; 8],
    pub dh: Option<DhKeyPair>,
    pub ni: Vec<u8>,
    pub nr: Vec<u8>,
    pub keys: Option<IkeKeys>,
    /// RealMessage1 / RealMessage2 of RFC 7296 §2.15.
    pub init_request: Vec<u8>,
    pub init_response: Vec<u8>,
    /// NAT detected (or forced): child SAs use ESP-in-UDP.
    pub encap: bool,
    /// Message ID of our next request.
    pub next_msg_id: u32,
    /// Message ID we expect on the peer's next request.
    pub peer_next_msg_id: u32,
    /// Our answer to the peer's last request, for retransmitted requests.
    pub last_response: Option<(u32, Vec<u8>)>,
    pub outstanding: Option<Outstanding>,
    pub queue: VecDeque<Request>,
    pub children: Vec<ChildSa>,
    /// Rules acquired while the IKE SA was not yet up.
    pub pending_rules: Vec<RuleId>,
    /// Responder side of a rekey: the new outbound SA, switched to when the
    /// initiator deletes the old child (make-before-break), keyed by old child_id.
    pub pending_outbound: Vec<(u32, Box<SaParams>)>,
    /// Child rekeys held back until the given time (responder side).
    pub deferred_rekeys: Vec<(Instant, u32)>,
    pub timers: TimerTable,
    pub created: Instant,
    pub established_at: Option<Instant>,
    pub last_heard: Instant,
}

impl IkeSa {
    /// Our own SPI, which identifies the SA locally.
    pub fn local_spi(&self) -> [u8; 8] {
        match self.role {
            Role::Initiator => self.spi_i,
            Role::Responder => self.spi_r,
        }
    }

    pub fn is_up(&self) -> bool {
        self.state == IkeState::Established
    }

    /// Whether a child for `rule` exists or is being negotiated.
    pub fn has_rule(&self, rule: RuleId) -> bool {
        self.children.iter().any(|c| c.rule == rule && !c.rekeyed)
            || self.pending_rules.contains(&rule)
            || self.queue.iter().any(
                |r| matches!(r, Request::CreateChild { rule: r2, rekey_of: None, .. } if *r2 == rule),
            )
            || match self.outstanding.as_ref().map(|o| &o.what) {
                Some(Pending::Auth(Some(c))) | Some(Pending::CreateChild(c)) => c.rule == rule,
                _ => false,
            }
    }

    /// Whether a rekey of `child_id` is queued or in flight.
    pub fn rekeying(&self, child_id: u32) -> bool {
        self.queue
            .iter()
            .any(|r| matches!(r, Request::CreateChild { rekey_of: Some(c), .. } if *c == child_id))
            || matches!(self.outstanding.as_ref().map(|o| &o.what),
                Some(Pending::CreateChild(c)) if c.rekey_of == Some(child_id))
    }
}
