//! The IKEv2 state machine of one gateway, sans I/O (quinn-proto style).
//!
//! Methods, in the order a driver uses them:
//! * inputs: [`Machine::handle_datagram`], [`Machine::handle_timeout`],
//!   [`Machine::handle_dataplane`], and the commands
//!   [`Machine::initiate`], [`Machine::delete_child`], [`Machine::delete_ike_sa`];
//! * outputs, drained after every input: [`Machine::poll_transmit`] →
//!   [`Machine::poll_control`] → [`Machine::poll_event`] → [`Machine::poll_timeout`];
//! * getters: [`Machine::ike_sas`], [`Machine::stats`].
//!
//! The machine never reads the clock (every input carries `now`), never
//! touches a socket and never panics on input: bad datagrams are counted in
//! [`Stats`] and dropped, negotiation failures become [`IkeEvent`]s and the
//! Notify the RFC asks for.
//!
//! UDP 4500: [`Machine::handle_datagram`] takes the datagram as the socket
//! delivered it. On the NAT-T port (`local.port() == config.nat_port`) it must
//! start with the 4-byte non-ESP marker, which the machine strips; ESP
//! packets and NAT keepalives there are counted and ignored. Datagrams from
//! [`Machine::poll_transmit`] to or from the NAT-T port carry the marker.

mod wire;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use espgate_dataplane::api::{
    outbound_owner, ControlMsg, DataplaneEvent, Direction, RuleId, SaKeys, SaParams, Selector, Spi,
    SpiAllocator, TunnelEnds,
};
use rand::Rng;
use serde::Serialize;

use crate::config::{Config, Identity, PeerConfig};
use crate::ike::child::{
    accept_esp_response, accept_narrowed_all, esp_proposals, ike_proposal, narrow, narrow_combined,
    select_esp, select_ike, ts_lists, ChildSa, ChosenEsp,
};
use crate::ike::crypto::{auth_matches, psk_auth, SkKeys};
use crate::ike::dh::{DhKeyPair, GROUP_MODP2048};
use crate::ike::keys::{child_keys, ike_keys, skeyseed, skeyseed_rekey};
use crate::ike::message::{classify_udp4500, with_non_esp_marker, Udp4500};
use crate::ike::payload::{
    AuthPayload, Delete, IdPayload, KePayload, Nonce, Notify, SaPayload, TsPayload,
};
use crate::ike::sa::{
    ChildRequest, IkeRekey, IkeSa, IkeState, Outstanding, Pending, Request, Role,
};
use crate::ike::{
    AuthMethod, ExchangeType, Flags, Header, IdType, NotifyType, Payload, ProtocolId,
};
use crate::show::{ChildSaView, IkeSaView, SelectorSide};
use crate::timer::Timer;
use wire::{id_body, nat_hash, Payloads};

/// Nonce length we send: the PRF's key size, ≥ 16 as RFC 7296 §2.10 requires.
const NONCE_LEN: usize = 32;
/// RFC 7296 §2.10: nonces are 16..=256 bytes.
const NONCE_RANGE: std::ops::RangeInclusive<usize> = 16..=256;
/// A responder's half-open SA (IKE_SA_INIT answered, no IKE_AUTH) is dropped after this.
const HALF_OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Backoff stops doubling here, so a large retry count stays sane.
const MAX_RETRANSMIT_DELAY: Duration = Duration::from_secs(64);
/// How long the IKE responder waits before rekeying a child SA on soft
/// expiry, so that the initiator's rekey (same lifetime) usually wins.
const CHILD_REKEY_DEFER: Duration = Duration::from_secs(10);
/// IKE SAs any one peer may have at once before new IKE_SA_INIT are refused.
const MAX_SAS_PER_PEER: usize = 8;

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub data: Vec<u8>,
}

/// Why something failed or went down; each is counted in [`Stats`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Reason {
    /// PSK/AUTH mismatch (ours or the peer's AUTHENTICATION_FAILED).
    AuthenticationFailed,
    NoProposalChosen,
    TsUnacceptable,
    /// The peer wants another DH group (we only do group 14).
    InvalidKePayload {
        group: u16,
    },
    /// Another error notify from the peer.
    PeerError(u16),
    /// Our request went unanswered after all retransmissions (incl. DPD).
    Timeout,
    /// The peer's answer lacked something the exchange needs.
    BadResponse(&'static str),
    /// The dataplane allocator has no inbound SPI left.
    NoSpi,
    /// Configuration lacks the peer or rule.
    NotConfigured,
    /// The peer deleted it.
    DeletedByPeer,
    /// We deleted it (command, hard expiry, lifetime).
    DeletedLocally,
    /// The peer's INITIAL_CONTACT replaced the SA (RFC 7296 §2.4).
    InitialContact,
    /// A rekeyed child SA replaced it.
    Rekeyed,
}

/// What happened, for logging. Not needed to drive the machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum IkeEvent {
    IkeUp {
        tunnel_id: u32,
        peer: IpAddr,
        role: Role,
        nat_t: bool,
    },
    IkeDown {
        tunnel_id: u32,
        peer: IpAddr,
        reason: Reason,
    },
    /// An IKE SA negotiation failed before it was up.
    IkeFailed { peer: IpAddr, reason: Reason },
    ChildUp {
        tunnel_id: u32,
        child_id: u32,
        rule: RuleId,
        spi_in: Spi,
        spi_out: Spi,
        rekey: bool,
    },
    ChildDown {
        tunnel_id: u32,
        child_id: u32,
        rule: RuleId,
        reason: Reason,
    },
    ChildFailed {
        peer: IpAddr,
        rule: Option<RuleId>,
        reason: Reason,
    },
}

/// Counters; each drop and failure reason has one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub malformed: u64,
    pub bad_icv: u64,
    pub unknown_spi: u64,
    pub unknown_peer: u64,
    pub esp_on_ike_port: u64,
    pub nat_keepalives: u64,
    pub unexpected: u64,
    pub retransmits: u64,
    pub duplicate_requests: u64,
    pub auth_failed: u64,
    pub no_proposal_chosen: u64,
    pub ts_unacceptable: u64,
    pub invalid_ke: u64,
    pub timeouts: u64,
    pub ike_up: u64,
    pub child_up: u64,
    pub child_rekeyed: u64,
    pub child_deleted: u64,
    pub ike_deleted: u64,
    pub peer_errors: u64,
}

/// The IKEv2 machine of one gateway: all its IKE SAs with all peers.
pub struct Machine {
    cfg: Config,
    spis: Arc<SpiAllocator>,
    sas: Vec<IkeSa>,
    next_tunnel_id: u32,
    next_child_id: u32,
    transmits: VecDeque<Transmit>,
    controls: VecDeque<ControlMsg>,
    events: VecDeque<IkeEvent>,
    stats: Stats,
    /// Key pairs made ahead by [`Machine::precompute_dh`]; each used once.
    spare_dh: Vec<DhKeyPair>,
}

fn random_spi() -> [u8; 8] {
    let mut s = [0u8; 8];
    rand::rng().fill_bytes(&mut s);
    // Non-zero first half so a datagram on 4500 is never mistaken for the
    // non-ESP marker's absence, and SPIi is never zero (RFC 7296 §3.1).
    if s[..4] == [0; 4] {
        s[0] = 1;
    }
    s
}

fn random_nonce() -> Vec<u8> {
    let mut n = vec![0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut n);
    n
}

fn id_payload(id: &Identity) -> IdPayload {
    IdPayload {
        id_type: IdType(id.id_type()),
        data: id.data(),
    }
}

/// Our keys (send) and the peer's (receive) for one IKE SA.
fn sk_keys(sa: &IkeSa, ours: bool) -> Option<SkKeys<'_>> {
    let k = sa.keys.as_ref()?;
    let initiator_side = (sa.role == Role::Initiator) == ours;
    Some(if initiator_side {
        SkKeys {
            encr: &k.sk_ei,
            integ: &k.sk_ai,
        }
    } else {
        SkKeys {
            encr: &k.sk_er,
            integ: &k.sk_ar,
        }
    })
}

fn reason_of(n: NotifyType) -> Reason {
    match n {
        NotifyType::AUTHENTICATION_FAILED => Reason::AuthenticationFailed,
        NotifyType::NO_PROPOSAL_CHOSEN => Reason::NoProposalChosen,
        NotifyType::TS_UNACCEPTABLE => Reason::TsUnacceptable,
        NotifyType::INVALID_KE_PAYLOAD => Reason::InvalidKePayload { group: 0 },
        other => Reason::PeerError(other.0),
    }
}

impl Machine {
    pub fn new(cfg: Config, spis: Arc<SpiAllocator>) -> Machine {
        Machine {
            cfg,
            spis,
            sas: Vec::new(),
            next_tunnel_id: 1,
            next_child_id: 1,
            transmits: VecDeque::new(),
            controls: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            spare_dh: Vec::new(),
        }
    }

    // ------------------------------------------------------------ getters

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// `show crypto ikev2 sa` / `show crypto ipsec sa` data.
    pub fn ike_sas(&self, now: Instant) -> Vec<IkeSaView> {
        self.sas
            .iter()
            .map(|sa| IkeSaView {
                tunnel_id: sa.tunnel_id,
                local: sa.local,
                remote: sa.remote,
                status: match sa.state {
                    IkeState::Established => "READY",
                    IkeState::Deleting => "DELETE",
                    _ => "IN-NEG",
                },
                role: sa.role,
                encr: "AES-CBC",
                keysize: self.cfg.ike_proposal.encr_key_bits,
                hash: "SHA256",
                dh_group: self.cfg.ike_proposal.dh_group,
                auth_sign: "PSK",
                auth_verify: "PSK",
                lifetime_secs: self.cfg.ike_lifetime_secs,
                active_secs: sa
                    .established_at
                    .map_or(0, |t| now.saturating_duration_since(t).as_secs()),
                nat_t: sa.encap,
                children: sa
                    .children
                    .iter()
                    .map(|c| {
                        let (l, r) = SelectorSide::split(&c.selector);
                        ChildSaView {
                            rule: c.rule,
                            local_selector: l,
                            remote_selector: r,
                            spi_in: c.spi_in,
                            spi_out: c.spi_out,
                            suite: c.suite,
                            pfs_group: c.pfs_group,
                            child_id: c.child_id,
                            created_at: now.saturating_duration_since(c.created_at).as_secs(),
                        }
                    })
                    .collect(),
            })
            .collect()
    }

    // ------------------------------------------------------------ outputs

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_control(&mut self) -> Option<ControlMsg> {
        self.controls.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<IkeEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sas
            .iter()
            .filter_map(|sa| sa.timers.next_timeout())
            .min()
    }

    // ------------------------------------------------------------ commands

    /// Idle-time work: makes one DH key pair ahead (up to `keep` spares) so
    /// that a handshake does one modpow per side instead of two. Returns
    /// whether it did work; a driver calls it until false when it would
    /// otherwise sleep.
    pub fn precompute_dh(&mut self, keep: usize) -> bool {
        if self.spare_dh.len() >= keep {
            return false;
        }
        self.spare_dh.push(DhKeyPair::generate());
        true
    }

    fn take_dh(&mut self) -> DhKeyPair {
        self.spare_dh.pop().unwrap_or_else(DhKeyPair::generate)
    }

    /// Starts a child SA for `rule` (as an `Acquire` does).
    pub fn initiate(&mut self, now: Instant, rule: RuleId) {
        self.acquire(now, rule, None);
    }

    /// Deletes one child SA (INFORMATIONAL Delete). False if unknown.
    pub fn delete_child(&mut self, now: Instant, child_id: u32) -> bool {
        let Some(i) = self
            .sas
            .iter()
            .position(|sa| sa.children.iter().any(|c| c.child_id == child_id))
        else {
            return false;
        };
        self.sas[i]
            .queue
            .push_back(Request::DeleteChild { child_id });
        self.kick(i, now);
        true
    }

    /// Rekeys an IKE SA (CREATE_CHILD_SA, RFC 7296 §1.3.2): its child SAs
    /// move to the new IKE SA, the old one is deleted. False if unknown.
    pub fn rekey_ike_sa(&mut self, now: Instant, tunnel_id: u32) -> bool {
        let Some(i) = self.index_of(tunnel_id) else {
            return false;
        };
        if !self.sas[i].queue.contains(&Request::RekeyIke) {
            self.sas[i].queue.push_back(Request::RekeyIke);
        }
        self.kick(i, now);
        true
    }

    /// Deletes an IKE SA and all its children. False if unknown.
    pub fn delete_ike_sa(&mut self, now: Instant, tunnel_id: u32) -> bool {
        let Some(i) = self.sas.iter().position(|sa| sa.tunnel_id == tunnel_id) else {
            return false;
        };
        if self.sas[i].is_up() {
            self.sas[i].queue.clear();
            self.sas[i].queue.push_back(Request::DeleteIke);
            self.kick(i, now);
        } else {
            self.remove_sa(i, Reason::DeletedLocally);
        }
        true
    }

    // ------------------------------------------------------------- inputs

    pub fn handle_dataplane(&mut self, now: Instant, ev: DataplaneEvent) {
        match ev {
            DataplaneEvent::Acquire { rule, peer, .. } => self.acquire(now, rule, Some(peer)),
            DataplaneEvent::SoftExpire { spi, dir, .. } => {
                if let Some((i, child_id)) = self.find_child(spi, dir) {
                    let sa = &mut self.sas[i];
                    if sa.role == Role::Responder {
                        // Both ends see the same soft lifetime; letting the
                        // IKE initiator go first avoids most rekey collisions
                        // (RFC 7296 §2.8.1 resolution is not implemented).
                        let at = now + CHILD_REKEY_DEFER;
                        sa.deferred_rekeys.push((at, child_id));
                        let next = sa.deferred_rekeys.iter().map(|d| d.0).min().unwrap_or(at);
                        sa.timers.set(Timer::ChildRekey, next);
                        return;
                    }
                    self.rekey_child(i, now, child_id);
                }
            }
            DataplaneEvent::HardExpire { spi, dir, .. } => {
                if let Some((i, child_id)) = self.find_child(spi, dir) {
                    if self.sas[i].is_up() {
                        self.sas[i]
                            .queue
                            .push_back(Request::DeleteChild { child_id });
                        self.kick(i, now);
                    } else {
                        self.drop_child(i, child_id, Reason::DeletedLocally);
                    }
                }
            }
            DataplaneEvent::InstallFailed { spi, .. } => {
                if let Some((i, child_id)) = self
                    .find_child(spi, Direction::Inbound)
                    .or_else(|| self.find_child(spi, Direction::Outbound))
                {
                    self.sas[i]
                        .queue
                        .push_back(Request::DeleteChild { child_id });
                    self.kick(i, now);
                }
            }
        }
    }

    /// Queues a rekey of `child_id` unless it is rekeyed or being rekeyed.
    fn rekey_child(&mut self, i: usize, now: Instant, child_id: u32) {
        let sa = &mut self.sas[i];
        let Some(child) = sa.children.iter().find(|c| c.child_id == child_id) else {
            return;
        };
        if !sa.is_up() || child.rekeyed || sa.rekeying(child_id) {
            return;
        }
        let rule = child.rule;
        sa.queue.push_back(Request::CreateChild {
            rule,
            rekey_of: Some(child_id),
            resource: None,
        });
        self.kick(i, now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let mut i = 0;
        // Bounded by the number of SAs; an SA removed in the body is not skipped past.
        while i < self.sas.len() {
            let due: Vec<Timer> = self.sas[i].timers.take_expired(now).collect();
            let tunnel = self.sas[i].tunnel_id;
            for t in due {
                if self.sas.get(i).is_none_or(|sa| sa.tunnel_id != tunnel) {
                    break;
                }
                match t {
                    Timer::Retransmit => self.on_retransmit(i, now),
                    Timer::Dpd => {
                        let sa = &mut self.sas[i];
                        if let Some(iv) = self.cfg.dpd_interval {
                            if sa.is_up()
                                && sa.outstanding.is_none()
                                && sa.last_heard.checked_add(iv).is_some_and(|t| now >= t)
                            {
                                sa.queue.push_back(Request::Dpd);
                            }
                            sa.timers.set_after(Timer::Dpd, now.max(sa.last_heard), iv);
                        }
                        self.kick(i, now);
                    }
                    Timer::ChildRekey => {
                        let sa = &mut self.sas[i];
                        let (due, later): (Vec<_>, Vec<_>) =
                            sa.deferred_rekeys.drain(..).partition(|d| d.0 <= now);
                        sa.deferred_rekeys = later;
                        if let Some(next) = sa.deferred_rekeys.iter().map(|d| d.0).min() {
                            sa.timers.set(Timer::ChildRekey, next);
                        }
                        for (_, child_id) in due {
                            self.rekey_child(i, now, child_id);
                        }
                    }
                    Timer::IkeRekey => {
                        let sa = &mut self.sas[i];
                        if sa.is_up() && !sa.queue.contains(&Request::RekeyIke) {
                            sa.queue.push_back(Request::RekeyIke);
                        }
                        self.kick(i, now);
                    }
                    Timer::IkeLifetime => {
                        // The rekey did not happen in time: delete, and the
                        // next Acquire builds a new IKE SA.
                        let sa = &mut self.sas[i];
                        sa.queue.clear();
                        sa.queue.push_back(Request::DeleteIke);
                        self.kick(i, now);
                    }
                    Timer::Idle => {
                        if !self.sas[i].is_up() {
                            let peer = self.sas[i].peer;
                            self.stats.timeouts += 1;
                            self.fail_pending(i, Reason::Timeout);
                            self.events.push_back(IkeEvent::IkeFailed {
                                peer,
                                reason: Reason::Timeout,
                            });
                            self.remove_sa(i, Reason::Timeout);
                        }
                    }
                }
            }
            if self.sas.get(i).is_some_and(|sa| sa.tunnel_id == tunnel) {
                i += 1;
            }
        }
    }

    pub fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
    ) {
        self.stats.datagrams_in += 1;
        let data = if local.port() == self.cfg.nat_port {
            match classify_udp4500(data) {
                Udp4500::Ike(d) => d,
                Udp4500::Esp(_) => {
                    self.stats.esp_on_ike_port += 1;
                    return;
                }
                Udp4500::NatKeepalive => {
                    self.stats.nat_keepalives += 1;
                    return;
                }
                Udp4500::Malformed => {
                    self.stats.malformed += 1;
                    return;
                }
            }
        } else {
            data
        };
        let Ok(peeked) = Header::peek(data) else {
            self.stats.malformed += 1;
            return;
        };
        let h = peeked.header;
        if h.version >> 4 != 2 || peeked.length as usize != data.len() {
            self.stats.malformed += 1;
            return;
        }
        if h.exchange == ExchangeType::IKE_SA_INIT && !h.is_response() {
            self.on_init_request(now, local, remote, data, h);
            return;
        }
        // A message from the original initiator names us by SPIr.
        let found = if h.is_initiator() {
            self.sas.iter().position(|sa| {
                sa.role == Role::Responder && sa.spi_r == h.spi_r && sa.spi_i == h.spi_i
            })
        } else {
            self.sas.iter().position(|sa| {
                sa.role == Role::Initiator
                    && sa.spi_i == h.spi_i
                    && (sa.spi_r == h.spi_r || sa.state == IkeState::InitSent)
            })
        };
        let Some(i) = found else {
            self.stats.unknown_spi += 1;
            return;
        };
        if h.exchange == ExchangeType::IKE_SA_INIT {
            self.on_init_response(i, now, data, h);
        } else {
            self.on_protected(i, now, local, remote, data, h);
        }
    }

    // ------------------------------------------------------- Acquire

    fn acquire(&mut self, now: Instant, rule: RuleId, peer: Option<IpAddr>) {
        let Some(entry) = self.cfg.rule(rule) else {
            self.events.push_back(IkeEvent::ChildFailed {
                peer: peer.unwrap_or(self.cfg.local),
                rule: Some(rule),
                reason: Reason::NotConfigured,
            });
            return;
        };
        let peer = entry.peer;
        if self.cfg.peer(peer).is_none() {
            self.controls
                .push_back(ControlMsg::AcquireFailed { rule, peer });
            self.events.push_back(IkeEvent::ChildFailed {
                peer,
                rule: Some(rule),
                reason: Reason::NotConfigured,
            });
            return;
        }
        if self
            .sas
            .iter()
            .any(|sa| sa.peer == peer && sa.has_rule(rule))
        {
            return;
        }
        // Prefer an established SA, then one being set up.
        let existing = self
            .sas
            .iter()
            .position(|sa| sa.peer == peer && sa.is_up())
            .or_else(|| {
                self.sas.iter().position(|sa| {
                    sa.peer == peer
                        && matches!(
                            sa.state,
                            IkeState::InitSent | IkeState::AuthSent | IkeState::InitReplied
                        )
                })
            });
        match existing {
            Some(i) if self.sas[i].is_up() => {
                self.sas[i].queue.push_back(Request::CreateChild {
                    rule,
                    rekey_of: None,
                    resource: None,
                });
                self.kick(i, now);
            }
            Some(i) => self.sas[i].pending_rules.push(rule),
            None => self.start_ike_sa(now, peer, rule),
        }
    }

    fn new_sa(&mut self, now: Instant, role: Role, local: SocketAddr, remote: SocketAddr) -> IkeSa {
        let tunnel_id = self.next_tunnel_id;
        self.next_tunnel_id = self.next_tunnel_id.wrapping_add(1).max(1);
        IkeSa {
            tunnel_id,
            role,
            state: IkeState::InitSent,
            peer: remote.ip(),
            local,
            remote,
            spi_i: [0; 8],
            spi_r: [0; 8],
            dh: None,
            ni: Vec::new(),
            nr: Vec::new(),
            keys: None,
            init_request: Vec::new(),
            init_response: Vec::new(),
            encap: false,
            next_msg_id: 0,
            peer_next_msg_id: 0,
            last_response: None,
            outstanding: None,
            queue: VecDeque::new(),
            children: Vec::new(),
            pending_rules: Vec::new(),
            pending_outbound: Vec::new(),
            deferred_rekeys: Vec::new(),
            timers: Default::default(),
            created: now,
            established_at: None,
            last_heard: now,
        }
    }

    fn start_ike_sa(&mut self, now: Instant, peer_addr: IpAddr, rule: RuleId) {
        let Some(peer) = self.cfg.peer(peer_addr).cloned() else {
            return;
        };
        let local = SocketAddr::new(self.cfg.local, self.cfg.ike_port);
        let remote = SocketAddr::new(peer.addr, peer.ike_port);
        let mut sa = self.new_sa(now, Role::Initiator, local, remote);
        sa.spi_i = random_spi();
        sa.ni = random_nonce();
        let dh = self.take_dh();
        let mut payloads = vec![
            Payload::Sa(SaPayload {
                proposals: vec![ike_proposal(&[])],
            }),
            Payload::Ke(KePayload {
                group: GROUP_MODP2048,
                data: dh.public().to_vec(),
            }),
            Payload::Nonce(Nonce(sa.ni.clone())),
        ];
        payloads.extend(self.nat_notifies(&sa.spi_i, &[0; 8], local, remote));
        sa.dh = Some(dh);
        sa.pending_rules.push(rule);
        let h = Header::new(
            ExchangeType::IKE_SA_INIT,
            sa.spi_i,
            [0; 8],
            0,
            Flags::INITIATOR,
        );
        let msg = wire::plain(h, payloads);
        sa.init_request = msg.clone();
        sa.next_msg_id = 1;
        sa.timers.set(Timer::Idle, now + HALF_OPEN_TIMEOUT);
        self.sas.push(sa);
        let i = self.sas.len() - 1;
        self.send_request_bytes(i, now, 0, msg, Pending::Init);
    }

    /// NAT_DETECTION_SOURCE_IP / _DESTINATION_IP for a message from `local` to `remote`.
    fn nat_notifies(
        &self,
        spi_i: &[u8; 8],
        spi_r: &[u8; 8],
        local: SocketAddr,
        remote: SocketAddr,
    ) -> [Payload; 2] {
        let src = if self.cfg.force_encap {
            // strongSwan's encap=yes: a source hash that can never match
            // makes the peer believe we are behind a NAT.
            let mut fake = [0u8; 20];
            rand::rng().fill_bytes(&mut fake);
            fake.to_vec()
        } else {
            nat_hash(spi_i, spi_r, local)
        };
        [
            Payload::Notify(Notify::new(NotifyType::NAT_DETECTION_SOURCE_IP, src)),
            Payload::Notify(Notify::new(
                NotifyType::NAT_DETECTION_DESTINATION_IP,
                nat_hash(spi_i, spi_r, remote),
            )),
        ]
    }

    /// Whether a NAT sits between us, from the peer's NAT-D notifies in a
    /// message that came from `remote` to `local` (RFC 7296 §2.23).
    fn nat_detected(
        &self,
        p: &Payloads<'_>,
        spi_i: &[u8; 8],
        spi_r: &[u8; 8],
        local: SocketAddr,
        remote: SocketAddr,
    ) -> bool {
        let want_src = nat_hash(spi_i, spi_r, remote);
        let mut srcs = p.notifies(NotifyType::NAT_DETECTION_SOURCE_IP).peekable();
        let peer_behind = srcs.peek().is_some() && !srcs.any(|n| n.data == want_src);
        let we_behind = p
            .notify(NotifyType::NAT_DETECTION_DESTINATION_IP)
            .is_some_and(|n| n.data != nat_hash(spi_i, spi_r, local));
        peer_behind || we_behind || self.cfg.force_encap
    }

    // ------------------------------------------------ IKE_SA_INIT responder

    fn on_init_request(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
        h: Header,
    ) {
        if h.spi_r != [0; 8] || h.message_id != 0 || h.spi_i == [0; 8] {
            self.stats.malformed += 1;
            return;
        }
        if let Some(sa) = self
            .sas
            .iter()
            .find(|sa| sa.role == Role::Responder && sa.spi_i == h.spi_i && sa.peer == remote.ip())
        {
            if let Some((0, resp)) = &sa.last_response {
                let t = Transmit {
                    local: sa.local,
                    remote: sa.remote,
                    data: resp.clone(),
                };
                self.stats.duplicate_requests += 1;
                self.push_transmit(t);
            }
            return;
        }
        let Some(peer) = self.cfg.peer(remote.ip()).cloned() else {
            self.stats.unknown_peer += 1;
            self.events.push_back(IkeEvent::IkeFailed {
                peer: remote.ip(),
                reason: Reason::NotConfigured,
            });
            return;
        };
        if self.sas.iter().filter(|sa| sa.peer == peer.addr).count() >= MAX_SAS_PER_PEER {
            self.stats.unexpected += 1;
            return;
        }
        let msg = match crate::ike::Message::decode(data) {
            Ok(m) => m,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        let p = Payloads(&msg.payloads);
        let (Some(props), Some(ke), Some(ni)) = (p.proposals(), p.ke(), p.nonce()) else {
            self.stats.malformed += 1;
            return;
        };
        if !NONCE_RANGE.contains(&ni.len()) {
            self.stats.malformed += 1;
            return;
        }
        let nat_port = self.cfg.nat_port;
        let error_reply = |n: Notify| {
            let rh = Header::new(
                ExchangeType::IKE_SA_INIT,
                h.spi_i,
                [0; 8],
                0,
                Flags::RESPONSE,
            );
            let msg = wire::plain(rh, vec![Payload::Notify(n)]);
            Transmit {
                local,
                remote,
                data: frame_for(local.port(), nat_port, msg),
            }
        };
        let Some(num) = select_ike(props) else {
            self.stats.no_proposal_chosen += 1;
            self.events.push_back(IkeEvent::IkeFailed {
                peer: peer.addr,
                reason: Reason::NoProposalChosen,
            });
            let t = error_reply(Notify::new(NotifyType::NO_PROPOSAL_CHOSEN, Vec::new()));
            self.push_transmit(t);
            return;
        };
        if ke.group != GROUP_MODP2048 {
            self.stats.invalid_ke += 1;
            self.events.push_back(IkeEvent::IkeFailed {
                peer: peer.addr,
                reason: Reason::InvalidKePayload { group: ke.group },
            });
            let t = error_reply(Notify::new(
                NotifyType::INVALID_KE_PAYLOAD,
                GROUP_MODP2048.to_be_bytes().to_vec(),
            ));
            self.push_transmit(t);
            return;
        }
        let dh = self.take_dh();
        let Ok(shared) = dh.shared_secret(&ke.data) else {
            self.stats.malformed += 1;
            return;
        };
        let mut sa = self.new_sa(now, Role::Responder, local, remote);
        sa.state = IkeState::InitReplied;
        sa.spi_i = h.spi_i;
        sa.spi_r = random_spi();
        sa.ni = ni.to_vec();
        sa.nr = random_nonce();
        sa.encap = self.nat_detected(&p, &sa.spi_i, &[0; 8], local, remote);
        let seed = skeyseed(&sa.ni, &sa.nr, &shared);
        sa.keys = Some(ike_keys(&seed[..], &sa.ni, &sa.nr, &sa.spi_i, &sa.spi_r));
        let mut chosen = ike_proposal(&[]);
        chosen.num = num;
        let mut payloads = vec![
            Payload::Sa(SaPayload {
                proposals: vec![chosen],
            }),
            Payload::Ke(KePayload {
                group: GROUP_MODP2048,
                data: dh.public().to_vec(),
            }),
            Payload::Nonce(Nonce(sa.nr.clone())),
        ];
        payloads.extend(self.nat_notifies(&sa.spi_i, &sa.spi_r, local, remote));
        let rh = Header::new(
            ExchangeType::IKE_SA_INIT,
            sa.spi_i,
            sa.spi_r,
            0,
            Flags::RESPONSE,
        );
        let resp = wire::plain(rh, payloads);
        sa.init_request = data.to_vec();
        sa.init_response = resp.clone();
        sa.peer_next_msg_id = 1;
        let framed = frame_for(local.port(), self.cfg.nat_port, resp);
        sa.last_response = Some((0, framed.clone()));
        sa.timers.set(Timer::Idle, now + HALF_OPEN_TIMEOUT);
        self.sas.push(sa);
        self.push_transmit(Transmit {
            local,
            remote,
            data: framed,
        });
    }

    // ------------------------------------------------ IKE_SA_INIT initiator

    fn on_init_response(&mut self, i: usize, now: Instant, data: &[u8], h: Header) {
        if self.sas[i].state != IkeState::InitSent || h.message_id != 0 || !h.is_response() {
            self.stats.unexpected += 1;
            return;
        }
        let Ok(msg) = crate::ike::Message::decode(data) else {
            self.stats.malformed += 1;
            return;
        };
        let p = Payloads(&msg.payloads);
        if let Some(err) = p.error() {
            let reason = match err {
                NotifyType::INVALID_KE_PAYLOAD => {
                    self.stats.invalid_ke += 1;
                    let group = p
                        .notify(err)
                        .and_then(|n| n.data.get(..2).map(|g| u16::from_be_bytes([g[0], g[1]])))
                        .unwrap_or(0);
                    Reason::InvalidKePayload { group }
                }
                NotifyType::NO_PROPOSAL_CHOSEN => {
                    self.stats.no_proposal_chosen += 1;
                    Reason::NoProposalChosen
                }
                other => {
                    self.stats.peer_errors += 1;
                    reason_of(other)
                }
            };
            self.fail_ike(i, reason);
            return;
        }
        if let Some(cookie) = p.notify(NotifyType::COOKIE) {
            // RFC 7296 §2.6: resend the request with the cookie first.
            let cookie = cookie.data.clone();
            self.resend_init_with_cookie(i, now, cookie);
            return;
        }
        let (Some(props), Some(ke), Some(nr)) = (p.proposals(), p.ke(), p.nonce()) else {
            self.stats.malformed += 1;
            return;
        };
        if h.spi_r == [0; 8]
            || select_ike(props).is_none()
            || props.len() != 1
            || !NONCE_RANGE.contains(&nr.len())
        {
            self.fail_ike(i, Reason::BadResponse("IKE_SA_INIT response"));
            return;
        }
        let Some(dh) = self.sas[i].dh.take() else {
            return;
        };
        let Ok(shared) = dh.shared_secret(&ke.data) else {
            self.stats.malformed += 1;
            self.fail_ike(i, Reason::BadResponse("KE"));
            return;
        };
        let (local, remote) = (self.sas[i].local, self.sas[i].remote);
        let nat = self.nat_detected(&p, &h.spi_i, &h.spi_r, local, remote);
        let peer = self.cfg.peer(self.sas[i].peer).cloned();
        let nat_port = self.cfg.nat_port;
        let sa = &mut self.sas[i];
        sa.spi_r = h.spi_r;
        sa.nr = nr.to_vec();
        sa.init_response = data.to_vec();
        let seed = skeyseed(&sa.ni, &sa.nr, &shared);
        sa.keys = Some(ike_keys(&seed[..], &sa.ni, &sa.nr, &sa.spi_i, &sa.spi_r));
        sa.encap = nat;
        if nat {
            // RFC 7296 §2.23: float to 4500 from IKE_AUTH on.
            sa.local = SocketAddr::new(sa.local.ip(), nat_port);
            sa.remote = SocketAddr::new(sa.remote.ip(), peer.as_ref().map_or(4500, |p| p.nat_port));
        }
        sa.outstanding = None;
        sa.timers.stop(Timer::Retransmit);
        sa.last_heard = now;
        self.send_auth(i, now);
    }

    fn resend_init_with_cookie(&mut self, i: usize, now: Instant, cookie: Vec<u8>) {
        let Ok(mut msg) = crate::ike::Message::decode(&self.sas[i].init_request) else {
            return;
        };
        msg.payloads
            .retain(|p| !matches!(p, Payload::Notify(n) if n.ntype == NotifyType::COOKIE));
        msg.payloads
            .insert(0, Payload::Notify(Notify::new(NotifyType::COOKIE, cookie)));
        let bytes = msg.encode();
        self.sas[i].init_request = bytes.clone();
        self.sas[i].outstanding = None;
        self.send_request_bytes(i, now, 0, bytes, Pending::Init);
    }

    fn local_id(&self, peer: &PeerConfig) -> Identity {
        peer.local_id
            .clone()
            .unwrap_or(Identity::Addr(self.cfg.local))
    }

    fn child_request(
        &mut self,
        i: usize,
        rule: RuleId,
        rekey_of: Option<u32>,
        pfs: bool,
        resource: Option<u8>,
    ) -> Result<ChildRequest, Reason> {
        let entry = self.cfg.rule(rule).ok_or(Reason::NotConfigured)?;
        let old = rekey_of.and_then(|c| self.sas[i].children.iter().find(|x| x.child_id == c));
        // A rekey keeps the (possibly narrowed) selector and the resource of
        // the old child. A first child serves the worker that owns the rule,
        // so it routes the same whether or not the peer takes per-worker SAs.
        let selector = old.map_or_else(|| entry.selector.clone(), |c| c.selector.clone());
        let more = old.map_or_else(|| entry.more.clone(), |c| c.more.clone());
        let resource = match old {
            Some(c) => c.resource,
            None if self.per_worker() => {
                Some(resource.unwrap_or(outbound_owner(rule, self.spis.shards())))
            }
            None => None,
        };
        let spi_in = self.allocate_spi(resource).ok_or(Reason::NoSpi)?;
        Ok(ChildRequest {
            rule,
            selector,
            more,
            spi_in,
            suites: self.cfg.esp_proposals.clone(),
            pfs: (pfs && self.cfg.pfs_group.is_some()).then(|| self.take_dh()),
            ni: random_nonce(),
            rekey_of,
            resource,
        })
    }

    /// Per-worker child SAs (RFC 9611) are offered: configured and more
    /// than one worker to spread over.
    fn per_worker(&self) -> bool {
        self.cfg.sa_per_worker && self.spis.shards() > 1
    }

    /// An inbound SPI on the shard of `resource` (so the worker that sends
    /// on the child also receives on it), else on the next shard.
    fn allocate_spi(&self, resource: Option<u8>) -> Option<Spi> {
        match resource {
            Some(r) => self.spis.allocate_on(r % self.spis.shards()),
            None => self.spis.allocate(),
        }
    }

    /// The peer took per-worker SAs for `rule`: queue a child for every
    /// worker that has none and is not getting one.
    fn add_worker_children(&mut self, i: usize, rule: RuleId) {
        let shards = self.spis.shards();
        let sa = &mut self.sas[i];
        for w in 0..shards {
            let have = sa
                .children
                .iter()
                .any(|c| c.rule == rule && !c.rekeyed && c.resource == Some(w))
                || sa.queue.iter().any(|r| {
                    matches!(r, Request::CreateChild { rule: r2, rekey_of: None, resource: Some(x) }
                        if *r2 == rule && *x == w)
                })
                || matches!(sa.outstanding.as_ref().map(|o| &o.what),
                    Some(Pending::CreateChild(c)) | Some(Pending::Auth(Some(c)))
                        if c.rule == rule && c.resource == Some(w));
            if !have {
                sa.queue.push_back(Request::CreateChild {
                    rule,
                    rekey_of: None,
                    resource: Some(w),
                });
            }
        }
    }

    fn child_payloads(&self, c: &ChildRequest, with_nonce: bool) -> Vec<Payload> {
        let dh = c.pfs.as_ref().map(|_| GROUP_MODP2048);
        let mut v = vec![Payload::Sa(SaPayload {
            proposals: esp_proposals(&c.suites, c.spi_in, dh, self.cfg.esn),
        })];
        if with_nonce {
            v.push(Payload::Nonce(Nonce(c.ni.clone())));
        }
        if let Some(k) = &c.pfs {
            v.push(Payload::Ke(KePayload {
                group: GROUP_MODP2048,
                data: k.public().to_vec(),
            }));
        }
        let (tsi, tsr) = ts_lists(&c.selector, &c.more);
        v.push(Payload::TsI(TsPayload { selectors: tsi }));
        v.push(Payload::TsR(TsPayload { selectors: tsr }));
        if let Some(r) = c.resource {
            v.push(resource_notify(r));
        }
        v
    }

    fn send_auth(&mut self, i: usize, now: Instant) {
        let Some(peer) = self.cfg.peer(self.sas[i].peer).cloned() else {
            self.fail_ike(i, Reason::NotConfigured);
            return;
        };
        let first = if self.sas[i].pending_rules.is_empty() {
            None
        } else {
            Some(self.sas[i].pending_rules.remove(0))
        };
        let child = match first.map(|r| self.child_request(i, r, None, false, None)) {
            Some(Ok(c)) => Some(c),
            Some(Err(reason)) => {
                if let Some(rule) = first {
                    self.controls.push_back(ControlMsg::AcquireFailed {
                        rule,
                        peer: peer.addr,
                    });
                    self.events.push_back(IkeEvent::ChildFailed {
                        peer: peer.addr,
                        rule: Some(rule),
                        reason,
                    });
                }
                None
            }
            None => None,
        };
        let id = self.local_id(&peer);
        let idp = id_payload(&id);
        let Some(keys) = self.sas[i].keys.as_ref() else {
            return;
        };
        let sa = &self.sas[i];
        let auth = psk_auth(
            peer.psk.as_bytes(),
            &sa.init_request,
            &sa.nr,
            &keys.sk_pi,
            &id_body(&idp),
        );
        let mut inner = vec![
            Payload::IdI(idp),
            Payload::Auth(AuthPayload {
                method: AuthMethod::SHARED_KEY_MIC,
                data: auth.to_vec(),
            }),
        ];
        // RFC 7296 §2.4: only when this is our sole IKE SA with the peer,
        // or a simultaneous start would make each side drop the other's SA.
        let tunnel_id = self.sas[i].tunnel_id;
        if !self
            .sas
            .iter()
            .any(|s| s.peer == peer.addr && s.tunnel_id != tunnel_id)
        {
            inner.push(Payload::Notify(Notify::new(
                NotifyType::INITIAL_CONTACT,
                Vec::new(),
            )));
        }
        if let Some(c) = &child {
            inner.extend(self.child_payloads(c, false));
        }
        self.sas[i].state = IkeState::AuthSent;
        self.send_request(i, now, ExchangeType::IKE_AUTH, &inner, Pending::Auth(child));
    }

    // ------------------------------------------------ protected exchanges

    fn on_protected(
        &mut self,
        i: usize,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
        h: Header,
    ) {
        if h.is_response() {
            let matches = self.sas[i]
                .outstanding
                .as_ref()
                .is_some_and(|o| o.msg_id == h.message_id);
            if !matches {
                self.stats.unexpected += 1;
                return;
            }
        } else {
            let sa = &self.sas[i];
            if sa.state == IkeState::InitSent || sa.keys.is_none() {
                self.stats.unexpected += 1;
                return;
            }
            if h.message_id.wrapping_add(1) == sa.peer_next_msg_id {
                // A retransmitted request: resend our cached answer, once
                // the ICV shows it really is the peer's.
                let Some(keys) = sk_keys(sa, false) else {
                    return;
                };
                if crate::ike::crypto::open(data, keys).is_err() {
                    self.stats.bad_icv += 1;
                    return;
                }
                if let Some((id, resp)) = &sa.last_response {
                    if *id == h.message_id {
                        let t = Transmit {
                            local: sa.local,
                            remote: sa.remote,
                            data: resp.clone(),
                        };
                        self.stats.duplicate_requests += 1;
                        self.push_transmit(t);
                    }
                }
                return;
            }
            if h.message_id != sa.peer_next_msg_id {
                self.stats.unexpected += 1;
                return;
            }
        }
        let Some(keys) = sk_keys(&self.sas[i], false) else {
            return;
        };
        let payloads = match wire::open(data, keys) {
            Ok(p) => p,
            Err(wire::WireError::Sk(_)) => {
                self.stats.bad_icv += 1;
                return;
            }
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        // Authenticated: follow the peer's address (NAT mapping may change).
        let sa = &mut self.sas[i];
        sa.last_heard = now;
        sa.remote = remote;
        sa.local = local;
        if let (Some(iv), true) = (self.cfg.dpd_interval, sa.is_up()) {
            sa.timers.set_after(Timer::Dpd, now, iv);
        }
        let p = Payloads(&payloads);
        let tunnel_id = self.sas[i].tunnel_id;
        if h.is_response() {
            let Some(out) = self.sas[i].outstanding.take() else {
                return;
            };
            self.sas[i].timers.stop(Timer::Retransmit);
            match out.what {
                Pending::Auth(child) => self.on_auth_response(i, now, &p, child),
                Pending::CreateChild(c) => self.on_create_child_response(i, now, &p, c),
                Pending::DeleteChild { child_id } => {
                    self.drop_child(i, child_id, Reason::DeletedLocally);
                    self.stats.child_deleted += 1;
                }
                Pending::DeleteIke => {
                    self.stats.ike_deleted += 1;
                    self.remove_sa(i, Reason::DeletedLocally);
                    return;
                }
                Pending::RekeyIke(r) => {
                    self.on_ike_rekey_response(i, now, &p, r);
                    return;
                }
                Pending::Dpd | Pending::Init => {}
            }
            if let Some(i) = self.index_of(tunnel_id) {
                self.kick(i, now);
            }
        } else {
            match h.exchange {
                ExchangeType::IKE_AUTH => self.on_auth_request(i, now, h.message_id, &p),
                ExchangeType::CREATE_CHILD_SA => {
                    self.on_create_child_request(i, now, h.message_id, &p)
                }
                ExchangeType::INFORMATIONAL => {
                    self.on_informational_request(i, now, h.message_id, &p)
                }
                _ => {
                    self.stats.unexpected += 1;
                }
            }
        }
    }

    fn on_auth_request(&mut self, i: usize, now: Instant, msg_id: u32, p: &Payloads<'_>) {
        if self.sas[i].state != IkeState::InitReplied || self.sas[i].role != Role::Responder {
            self.stats.unexpected += 1;
            return;
        }
        let peer_addr = self.sas[i].peer;
        let Some(peer) = self.cfg.peer(peer_addr).cloned() else {
            return;
        };
        let (Some(idi), Some(auth)) = (p.idi(), p.auth()) else {
            self.stats.malformed += 1;
            return;
        };
        let id_ok = peer
            .remote_id
            .as_ref()
            .is_none_or(|want| want.id_type() == idi.id_type.0 && want.data() == idi.data);
        let Some(keys) = self.sas[i].keys.as_ref() else {
            return;
        };
        let sa = &self.sas[i];
        let expected = psk_auth(
            peer.psk.as_bytes(),
            &sa.init_request,
            &sa.nr,
            &keys.sk_pi,
            &id_body(idi),
        );
        if !id_ok
            || auth.method != AuthMethod::SHARED_KEY_MIC
            || !auth_matches(&expected, &auth.data)
        {
            self.stats.auth_failed += 1;
            self.events.push_back(IkeEvent::IkeFailed {
                peer: peer_addr,
                reason: Reason::AuthenticationFailed,
            });
            let n = [Payload::Notify(Notify::new(
                NotifyType::AUTHENTICATION_FAILED,
                Vec::new(),
            ))];
            self.respond(i, msg_id, ExchangeType::IKE_AUTH, &n);
            self.remove_sa(i, Reason::AuthenticationFailed);
            return;
        }
        // Our AUTH over the IKE_SA_INIT response (RFC 7296 §2.15).
        let idr = id_payload(&self.local_id(&peer));
        let our_auth = psk_auth(
            peer.psk.as_bytes(),
            &sa.init_response,
            &sa.ni,
            &keys.sk_pr,
            &id_body(&idr),
        );
        let ni = sa.ni.clone();
        let nr = sa.nr.clone();
        let tunnel_id = sa.tunnel_id;
        self.establish(i, now);
        if p.notify(NotifyType::INITIAL_CONTACT).is_some() {
            self.initial_contact(i);
        }
        // INITIAL_CONTACT may have removed SAs before this one.
        let Some(i) = self.index_of(tunnel_id) else {
            return;
        };
        let mut inner = vec![
            Payload::IdR(idr),
            Payload::Auth(AuthPayload {
                method: AuthMethod::SHARED_KEY_MIC,
                data: our_auth.to_vec(),
            }),
        ];
        if p.proposals().is_some() {
            match self.accept_child(i, now, p, false, &ni, &nr, None) {
                Ok(child_payloads) => inner.extend(child_payloads),
                Err(n) => inner.push(Payload::Notify(Notify::new(n, Vec::new()))),
            }
        }
        self.respond(i, msg_id, ExchangeType::IKE_AUTH, &inner);
        self.kick(i, now);
    }

    /// Responder side of a child SA (IKE_AUTH or CREATE_CHILD_SA): choose,
    /// narrow, derive, install; returns the response payloads or the error
    /// notify to send.
    #[allow(clippy::too_many_arguments)]
    fn accept_child(
        &mut self,
        i: usize,
        now: Instant,
        p: &Payloads<'_>,
        pfs_exchange: bool,
        ni: &[u8],
        nr: &[u8],
        pfs: Option<&DhKeyPair>,
    ) -> Result<Vec<Payload>, NotifyType> {
        let peer = self.sas[i].peer;
        let props = p.proposals().ok_or(NotifyType::INVALID_SYNTAX)?;
        let (Some(tsi), Some(tsr)) = (p.tsi(), p.tsr()) else {
            return Err(NotifyType::INVALID_SYNTAX);
        };
        let Some(chosen) = select_esp(
            props,
            &self.cfg.esp_proposals,
            pfs_exchange,
            self.cfg.pfs_group,
            self.cfg.esn,
        ) else {
            self.stats.no_proposal_chosen += 1;
            self.events.push_back(IkeEvent::ChildFailed {
                peer,
                rule: None,
                reason: Reason::NoProposalChosen,
            });
            return Err(NotifyType::NO_PROPOSAL_CHOSEN);
        };
        let rekey_of = p
            .notify(NotifyType::REKEY_SA)
            .and_then(|n| n.spi_u32())
            .and_then(|spi| {
                self.sas[i]
                    .children
                    .iter()
                    .find(|c| c.spi_out == Spi(spi) && !c.rekeyed)
            })
            .map(|c| (c.child_id, c.rule, c.resource));
        // Several TS on a side: a combined child SA if one of our rules is
        // combined; else narrow to the best single pair (RFC 7296 §2.9).
        let combined = (tsi.len() > 1 || tsr.len() > 1)
            .then(|| narrow_combined(tsi, tsr, &self.cfg.rules, peer))
            .flatten();
        let narrowed =
            combined.or_else(|| narrow(tsi, tsr, &self.cfg.rules, peer).map(|(r, s)| (r, vec![s])));
        let Some((rule, mut pairs)) = narrowed else {
            self.stats.ts_unacceptable += 1;
            self.events.push_back(IkeEvent::ChildFailed {
                peer,
                rule: rekey_of.map(|r| r.1),
                reason: Reason::TsUnacceptable,
            });
            return Err(NotifyType::TS_UNACCEPTABLE);
        };
        let rule = rekey_of.map_or(rule, |r| r.1);
        let selector = pairs.remove(0);
        let more = pairs;
        let shared = match (chosen.dh, pfs, p.ke()) {
            (Some(g), Some(k), Some(ke)) if ke.group == g => Some(
                k.shared_secret(&ke.data)
                    .map_err(|_| NotifyType::INVALID_SYNTAX)?,
            ),
            (Some(_), _, _) => {
                self.stats.invalid_ke += 1;
                return Err(NotifyType::INVALID_KE_PAYLOAD);
            }
            (None, _, _) => None,
        };
        // RFC 9611: the peer offers per-worker SAs; its identifier names
        // its worker, which we pair with ours of the same index. A rekey
        // keeps the old child's resource.
        let offered = p
            .notify(NotifyType::SA_RESOURCE_INFO)
            .map(|n| n.data.first().copied().unwrap_or(0));
        let resource = match rekey_of {
            Some(r) => r.2,
            None if self.per_worker() => offered.map(|k| k % self.spis.shards()),
            None => None,
        };
        let Some(spi_in) = self.allocate_spi(resource) else {
            self.events.push_back(IkeEvent::ChildFailed {
                peer,
                rule: Some(rule),
                reason: Reason::NoSpi,
            });
            return Err(NotifyType::NO_ADDITIONAL_SAS);
        };
        let Some(sk_d) = self.sas[i].keys.as_ref().map(|k| k.sk_d) else {
            return Err(NotifyType::INVALID_SYNTAX);
        };
        let keys = child_keys(&sk_d, shared.as_ref().map(|s| &s[..]), ni, nr, chosen.suite);
        // The peer initiated this exchange: its i→r keys protect our inbound.
        self.install_child(
            i,
            now,
            rule,
            selector.clone(),
            more.clone(),
            &chosen,
            spi_in,
            keys.i2r.clone(),
            keys.r2i.clone(),
            rekey_of.map(|r| r.0),
            false,
            resource,
        );
        let mut v = vec![
            Payload::Sa(SaPayload {
                proposals: vec![chosen.response(spi_in)],
            }),
            Payload::Nonce(Nonce(nr.to_vec())),
        ];
        if let (Some(k), Some(g)) = (pfs, chosen.dh) {
            v.push(Payload::Ke(KePayload {
                group: g,
                data: k.public().to_vec(),
            }));
        }
        // TSi is the initiator's (= peer's = our remote) side.
        let (ts_local, ts_remote) = ts_lists(&selector, &more);
        v.push(Payload::TsI(TsPayload {
            selectors: ts_remote,
        }));
        v.push(Payload::TsR(TsPayload {
            selectors: ts_local,
        }));
        if let Some(r) = resource {
            v.push(resource_notify(r));
        }
        if !pfs_exchange {
            // In IKE_AUTH, nonces come from IKE_SA_INIT.
            v.retain(|p| !matches!(p, Payload::Nonce(_)));
        }
        Ok(v)
    }

    #[allow(clippy::too_many_arguments)]
    fn install_child(
        &mut self,
        i: usize,
        now: Instant,
        rule: RuleId,
        selector: Selector,
        more: Vec<Selector>,
        chosen: &ChosenEsp,
        spi_in: Spi,
        keys_in: SaKeys,
        keys_out: SaKeys,
        rekey_of: Option<u32>,
        we_initiated: bool,
        resource: Option<u8>,
    ) {
        let child_id = self.next_child_id;
        self.next_child_id = self.next_child_id.wrapping_add(1).max(1);
        let sa = &self.sas[i];
        let udp_encap = sa.encap.then_some((sa.local.port(), sa.remote.port()));
        let tunnel = TunnelEnds {
            local: self.cfg.local,
            remote: sa.peer,
            udp_encap,
        };
        let spi_out = Spi(chosen.peer_spi);
        let params = |spi, dir, keys, selector, more_selectors| SaParams {
            spi,
            dir,
            suite: chosen.suite,
            keys,
            tunnel,
            selector,
            esn: chosen.esn,
            replay_window: self.cfg.replay_window,
            lifetime: self.cfg.child_lifetime,
            rule,
            child_id,
            resource,
            more_selectors,
        };
        let more_in = more.iter().map(Selector::reversed).collect();
        let inbound = params(
            spi_in,
            Direction::Inbound,
            keys_in,
            selector.reversed(),
            more_in,
        );
        let outbound = params(
            spi_out,
            Direction::Outbound,
            keys_out,
            selector.clone(),
            more.clone(),
        );
        self.controls
            .push_back(ControlMsg::InstallSa(Box::new(inbound)));
        let old = rekey_of.and_then(|c| {
            self.sas[i]
                .children
                .iter()
                .find(|x| x.child_id == c)
                .map(|x| (x.child_id, x.spi_out))
        });
        match old {
            Some((old_id, old_out)) if we_initiated => {
                self.controls.push_back(ControlMsg::RekeySa {
                    old: old_out,
                    new: Box::new(outbound),
                });
                self.mark_rekeyed(i, old_id);
                self.sas[i]
                    .queue
                    .push_back(Request::DeleteChild { child_id: old_id });
            }
            Some((old_id, _)) => {
                // Make-before-break: keep sending on the old SA until the
                // initiator deletes it, by which time it has the new inbound.
                self.mark_rekeyed(i, old_id);
                self.sas[i]
                    .pending_outbound
                    .push((old_id, Box::new(outbound)));
            }
            // A responder's additional per-worker child: the initiator
            // installs its keys only when our response arrives, so we send
            // on it only after its first packet on the child reached us
            // (the rule's first SA carries the traffic until then).
            None if !we_initiated
                && resource.is_some()
                && self.sas[i]
                    .children
                    .iter()
                    .any(|c| c.rule == rule && !c.rekeyed) =>
            {
                self.controls.push_back(ControlMsg::InstallSaAfterPeer {
                    outbound: Box::new(outbound),
                    proof: spi_in,
                })
            }
            None => self
                .controls
                .push_back(ControlMsg::InstallSa(Box::new(outbound))),
        }
        let tunnel_id = self.sas[i].tunnel_id;
        self.sas[i].children.push(ChildSa {
            child_id,
            rule,
            selector,
            suite: chosen.suite,
            esn: chosen.esn,
            pfs_group: chosen.dh,
            spi_in,
            spi_out,
            created_at: now,
            rekeyed: false,
            resource,
            more,
        });
        self.stats.child_up += 1;
        if old.is_some() {
            self.stats.child_rekeyed += 1;
        }
        self.events.push_back(IkeEvent::ChildUp {
            tunnel_id,
            child_id,
            rule,
            spi_in,
            spi_out,
            rekey: old.is_some(),
        });
    }

    fn mark_rekeyed(&mut self, i: usize, child_id: u32) {
        if let Some(c) = self.sas[i]
            .children
            .iter_mut()
            .find(|c| c.child_id == child_id)
        {
            c.rekeyed = true;
        }
    }

    fn on_auth_response(
        &mut self,
        i: usize,
        now: Instant,
        p: &Payloads<'_>,
        child: Option<ChildRequest>,
    ) {
        let peer_addr = self.sas[i].peer;
        let Some(peer) = self.cfg.peer(peer_addr).cloned() else {
            return;
        };
        let auth_ok = match (p.idr(), p.auth(), self.sas[i].keys.as_ref()) {
            (Some(idr), Some(auth), Some(keys)) => {
                let id_ok = peer
                    .remote_id
                    .as_ref()
                    .is_none_or(|want| want.id_type() == idr.id_type.0 && want.data() == idr.data);
                let sa = &self.sas[i];
                let expected = psk_auth(
                    peer.psk.as_bytes(),
                    &sa.init_response,
                    &sa.ni,
                    &keys.sk_pr,
                    &id_body(idr),
                );
                id_ok
                    && auth.method == AuthMethod::SHARED_KEY_MIC
                    && auth_matches(&expected, &auth.data)
            }
            _ => false,
        };
        if !auth_ok {
            let peer_said = p.error();
            self.stats.auth_failed += 1;
            if let Some(c) = &child {
                self.spis.free(c.spi_in);
                self.controls.push_back(ControlMsg::AcquireFailed {
                    rule: c.rule,
                    peer: peer_addr,
                });
            }
            let reason = match peer_said {
                Some(n) if n != NotifyType::AUTHENTICATION_FAILED => reason_of(n),
                _ => Reason::AuthenticationFailed,
            };
            self.fail_ike(i, reason);
            return;
        }
        self.establish(i, now);
        if let Some(c) = child {
            let ni = self.sas[i].ni.clone();
            let nr = self.sas[i].nr.clone();
            self.finish_child(i, now, p, c, &ni, &nr);
        }
    }

    /// Initiator side: the response to our child SA request.
    fn finish_child(
        &mut self,
        i: usize,
        now: Instant,
        p: &Payloads<'_>,
        c: ChildRequest,
        ni: &[u8],
        nr: &[u8],
    ) {
        let fail = |m: &mut Machine, reason: Reason| m.fail_child(i, &c, reason);
        if let Some(err) = p.error() {
            fail(self, reason_of(err));
            return;
        }
        if !NONCE_RANGE.contains(&nr.len()) {
            fail(self, Reason::BadResponse("nonce"));
            return;
        }
        let pfs = c.pfs.as_ref().map(|_| GROUP_MODP2048);
        let chosen = p
            .proposals()
            .and_then(|props| accept_esp_response(props, &c.suites, pfs, self.cfg.esn));
        let mut pairs = match (p.tsi(), p.tsr()) {
            (Some(tsi), Some(tsr)) => accept_narrowed_all(&c.selector, &c.more, tsi, tsr),
            _ => Vec::new(),
        };
        let selector = (!pairs.is_empty()).then(|| pairs.remove(0));
        let more = pairs;
        let (Some(chosen), Some(selector)) = (chosen, selector) else {
            // The peer's half stays until its lifetime or DPD ends it; we
            // have no child record to name in a Delete.
            fail(self, Reason::BadResponse("child SA proposal or TS"));
            return;
        };
        let shared = match (&c.pfs, p.ke()) {
            (Some(k), Some(ke)) if ke.group == GROUP_MODP2048 => match k.shared_secret(&ke.data) {
                Ok(s) => Some(s),
                Err(_) => {
                    fail(self, Reason::BadResponse("KE"));
                    return;
                }
            },
            (Some(_), _) => {
                fail(self, Reason::BadResponse("KE missing"));
                return;
            }
            (None, _) => None,
        };
        let Some(sk_d) = self.sas[i].keys.as_ref().map(|k| k.sk_d) else {
            return;
        };
        let keys = child_keys(&sk_d, shared.as_ref().map(|s| &s[..]), ni, nr, chosen.suite);
        // RFC 9611: only a peer that answers SA_RESOURCE_INFO takes more
        // than one child SA for the same selectors.
        let peer_per_worker = p.notify(NotifyType::SA_RESOURCE_INFO).is_some();
        let resource = c.resource.filter(|_| peer_per_worker);
        // We initiated: i→r protects our outbound.
        self.install_child(
            i,
            now,
            c.rule,
            selector,
            more,
            &chosen,
            c.spi_in,
            keys.r2i.clone(),
            keys.i2r.clone(),
            c.rekey_of,
            true,
            resource,
        );
        if resource.is_some() && c.rekey_of.is_none() {
            self.add_worker_children(i, c.rule);
            self.kick(i, now);
        }
    }

    fn on_create_child_request(&mut self, i: usize, now: Instant, msg_id: u32, p: &Payloads<'_>) {
        if !self.sas[i].is_up() {
            self.stats.unexpected += 1;
            return;
        }
        let is_ike_rekey = p
            .proposals()
            .is_some_and(|ps| ps.iter().any(|x| x.protocol == ProtocolId::IKE));
        if is_ike_rekey {
            match self.on_ike_rekey_request(i, now, p) {
                Ok((reply, new_sa)) => {
                    self.respond(i, msg_id, ExchangeType::CREATE_CHILD_SA, &reply);
                    self.sas.push(*new_sa);
                    let j = self.sas.len() - 1;
                    self.establish(j, now);
                }
                Err(n) => {
                    let data = if n == NotifyType::INVALID_KE_PAYLOAD {
                        GROUP_MODP2048.to_be_bytes().to_vec()
                    } else {
                        Vec::new()
                    };
                    let reply = [Payload::Notify(Notify::new(n, data))];
                    self.respond(i, msg_id, ExchangeType::CREATE_CHILD_SA, &reply);
                }
            }
            return;
        }
        let reply = {
            match p.nonce() {
                Some(ni) if NONCE_RANGE.contains(&ni.len()) => {
                    let ni = ni.to_vec();
                    let nr = random_nonce();
                    let dh = p.ke().map(|_| self.take_dh());
                    match self.accept_child(i, now, p, true, &ni, &nr, dh.as_ref()) {
                        Ok(v) => v,
                        Err(NotifyType::INVALID_KE_PAYLOAD) => vec![Payload::Notify(Notify::new(
                            NotifyType::INVALID_KE_PAYLOAD,
                            GROUP_MODP2048.to_be_bytes().to_vec(),
                        ))],
                        Err(n) => vec![Payload::Notify(Notify::new(n, Vec::new()))],
                    }
                }
                _ => vec![Payload::Notify(Notify::new(
                    NotifyType::INVALID_SYNTAX,
                    Vec::new(),
                ))],
            }
        };
        self.respond(i, msg_id, ExchangeType::CREATE_CHILD_SA, &reply);
    }

    fn on_create_child_response(
        &mut self,
        i: usize,
        now: Instant,
        p: &Payloads<'_>,
        c: ChildRequest,
    ) {
        let nr = p.nonce().map(<[u8]>::to_vec).unwrap_or_default();
        let ni = c.ni.clone();
        self.finish_child(i, now, p, c, &ni, &nr);
    }

    /// The new IKE SA of a rekey: same peer and endpoints, the old SA's
    /// child SAs and queued work move to it (RFC 7296 §2.18).
    fn rekeyed_sa(
        &mut self,
        now: Instant,
        i: usize,
        role: Role,
        spi_i: [u8; 8],
        spi_r: [u8; 8],
        keys: crate::ike::keys::IkeKeys,
    ) -> IkeSa {
        let (local, remote) = (self.sas[i].local, self.sas[i].remote);
        let mut sa = self.new_sa(now, role, local, remote);
        let old = &mut self.sas[i];
        sa.state = IkeState::Established;
        sa.spi_i = spi_i;
        sa.spi_r = spi_r;
        sa.keys = Some(keys);
        sa.encap = old.encap;
        sa.peer = old.peer;
        sa.children = std::mem::take(&mut old.children);
        sa.pending_outbound = std::mem::take(&mut old.pending_outbound);
        sa.deferred_rekeys = std::mem::take(&mut old.deferred_rekeys);
        if let Some(next) = sa.deferred_rekeys.iter().map(|d| d.0).min() {
            sa.timers.set(Timer::ChildRekey, next);
        }
        sa.pending_rules = std::mem::take(&mut old.pending_rules);
        sa.queue = old
            .queue
            .drain(..)
            .filter(|r| matches!(r, Request::CreateChild { .. } | Request::DeleteChild { .. }))
            .collect();
        sa
    }

    /// Responder side of an IKE SA rekey: the reply and the new SA.
    fn on_ike_rekey_request(
        &mut self,
        i: usize,
        now: Instant,
        p: &Payloads<'_>,
    ) -> Result<(Vec<Payload>, Box<IkeSa>), NotifyType> {
        let props = p.proposals().ok_or(NotifyType::INVALID_SYNTAX)?;
        let Some(num) = select_ike(props) else {
            self.stats.no_proposal_chosen += 1;
            return Err(NotifyType::NO_PROPOSAL_CHOSEN);
        };
        let spi_i: [u8; 8] = props
            .iter()
            .find(|x| x.num == num && x.protocol == ProtocolId::IKE)
            .and_then(|x| x.spi.as_slice().try_into().ok())
            .ok_or(NotifyType::INVALID_SYNTAX)?;
        let ni = p
            .nonce()
            .filter(|n| NONCE_RANGE.contains(&n.len()))
            .ok_or(NotifyType::INVALID_SYNTAX)?
            .to_vec();
        let ke = p
            .ke()
            .filter(|k| k.group == GROUP_MODP2048)
            .ok_or_else(|| {
                self.stats.invalid_ke += 1;
                NotifyType::INVALID_KE_PAYLOAD
            })?;
        let dh = self.take_dh();
        let shared = dh
            .shared_secret(&ke.data)
            .map_err(|_| NotifyType::INVALID_SYNTAX)?;
        let old_sk_d = self.sas[i]
            .keys
            .as_ref()
            .map(|k| k.sk_d)
            .ok_or(NotifyType::INVALID_SYNTAX)?;
        let spi_r = random_spi();
        let nr = random_nonce();
        let seed = skeyseed_rekey(&old_sk_d, &shared, &ni, &nr);
        let keys = ike_keys(&seed[..], &ni, &nr, &spi_i, &spi_r);
        // The peer started the rekey, so it is the new SA's original initiator.
        let sa = self.rekeyed_sa(now, i, Role::Responder, spi_i, spi_r, keys);
        let mut chosen = ike_proposal(&spi_r);
        chosen.num = num;
        let reply = vec![
            Payload::Sa(SaPayload {
                proposals: vec![chosen],
            }),
            Payload::Nonce(Nonce(nr)),
            Payload::Ke(KePayload {
                group: GROUP_MODP2048,
                data: dh.public().to_vec(),
            }),
        ];
        Ok((reply, Box::new(sa)))
    }

    /// Initiator side of an IKE SA rekey: build the new SA, delete the old.
    fn on_ike_rekey_response(&mut self, i: usize, now: Instant, p: &Payloads<'_>, r: IkeRekey) {
        if let Some(err) = p.error() {
            // Keep the old SA; its hard lifetime (or a retry) follows.
            self.stats.peer_errors += 1;
            let peer = self.sas[i].peer;
            self.events.push_back(IkeEvent::IkeFailed {
                peer,
                reason: reason_of(err),
            });
            self.kick(i, now);
            return;
        }
        let parsed = (|| {
            let props = p.proposals()?;
            let [prop] = props else { return None };
            select_ike(props)?;
            let spi_r: [u8; 8] = prop.spi.as_slice().try_into().ok()?;
            let nr = p
                .nonce()
                .filter(|n| NONCE_RANGE.contains(&n.len()))?
                .to_vec();
            let ke = p.ke().filter(|k| k.group == GROUP_MODP2048)?;
            let shared = r.dh.shared_secret(&ke.data).ok()?;
            Some((spi_r, nr, shared))
        })();
        let Some((spi_r, nr, shared)) = parsed else {
            self.stats.malformed += 1;
            self.kick(i, now);
            return;
        };
        let Some(old_sk_d) = self.sas[i].keys.as_ref().map(|k| k.sk_d) else {
            return;
        };
        let seed = skeyseed_rekey(&old_sk_d, &shared, &r.ni, &nr);
        let keys = ike_keys(&seed[..], &r.ni, &nr, &r.spi_i, &spi_r);
        let sa = self.rekeyed_sa(now, i, Role::Initiator, r.spi_i, spi_r, keys);
        self.sas.push(sa);
        let j = self.sas.len() - 1;
        self.establish(j, now);
        self.kick(j, now);
        self.sas[i].queue.clear();
        self.sas[i].queue.push_back(Request::DeleteIke);
        self.kick(i, now);
    }

    /// Our child SA request failed: free its SPI, count, tell the dataplane.
    fn fail_child(&mut self, i: usize, c: &ChildRequest, reason: Reason) {
        let peer = self.sas[i].peer;
        self.spis.free(c.spi_in);
        match &reason {
            Reason::NoProposalChosen => self.stats.no_proposal_chosen += 1,
            Reason::TsUnacceptable => self.stats.ts_unacceptable += 1,
            Reason::InvalidKePayload { .. } => self.stats.invalid_ke += 1,
            _ => self.stats.peer_errors += 1,
        }
        if c.rekey_of.is_none() {
            self.controls
                .push_back(ControlMsg::AcquireFailed { rule: c.rule, peer });
        }
        self.events.push_back(IkeEvent::ChildFailed {
            peer,
            rule: Some(c.rule),
            reason,
        });
    }

    fn on_informational_request(&mut self, i: usize, now: Instant, msg_id: u32, p: &Payloads<'_>) {
        let mut reply = Vec::new();
        let mut delete_ike = false;
        for d in p.deletes() {
            match d.protocol {
                ProtocolId::IKE => delete_ike = true,
                ProtocolId::ESP => {
                    let mut ours = Vec::new();
                    for spi in d.spis_u32() {
                        let found = self.sas[i]
                            .children
                            .iter()
                            .find(|c| c.spi_out == Spi(spi))
                            .map(|c| (c.child_id, c.spi_in));
                        if let Some((child_id, spi_in)) = found {
                            self.switch_pending_outbound(i, child_id);
                            self.drop_child(i, child_id, Reason::DeletedByPeer);
                            self.stats.child_deleted += 1;
                            ours.push(spi_in.0);
                        }
                    }
                    if !ours.is_empty() {
                        reply.push(Payload::Delete(Delete::esp(&ours)));
                    }
                }
                _ => {}
            }
        }
        self.respond(i, msg_id, ExchangeType::INFORMATIONAL, &reply);
        if delete_ike {
            self.stats.ike_deleted += 1;
            self.remove_sa(i, Reason::DeletedByPeer);
        } else {
            self.kick(i, now);
        }
    }

    /// Responder side of a rekey: the initiator deleted the old child, so
    /// the new outbound SA takes over now.
    fn switch_pending_outbound(&mut self, i: usize, old_child: u32) {
        let sa = &mut self.sas[i];
        let Some(pos) = sa
            .pending_outbound
            .iter()
            .position(|(c, _)| *c == old_child)
        else {
            return;
        };
        let (_, new) = sa.pending_outbound.swap_remove(pos);
        let old_out = sa
            .children
            .iter()
            .find(|c| c.child_id == old_child)
            .map(|c| c.spi_out);
        if let Some(old) = old_out {
            self.controls.push_back(ControlMsg::RekeySa { old, new });
        } else {
            self.controls.push_back(ControlMsg::InstallSa(new));
        }
    }

    // ------------------------------------------------------ bookkeeping

    fn establish(&mut self, i: usize, now: Instant) {
        let sa = &mut self.sas[i];
        sa.state = IkeState::Established;
        sa.established_at = Some(now);
        sa.timers.stop(Timer::Idle);
        sa.timers.set_after(
            Timer::IkeLifetime,
            now,
            Duration::from_secs(self.cfg.ike_lifetime_secs),
        );
        if let Some(iv) = self.cfg.dpd_interval {
            sa.timers.set_after(Timer::Dpd, now, iv);
        }
        // Rekey before the hard lifetime; the initiator goes first so the
        // two sides rarely collide (RFC 7296 §2.8.1 is not implemented).
        let pct = if sa.role == Role::Initiator { 90 } else { 95 };
        sa.timers.set_after(
            Timer::IkeRekey,
            now,
            Duration::from_secs(self.cfg.ike_lifetime_secs / 100 * pct),
        );
        let rules: Vec<RuleId> = sa.pending_rules.drain(..).collect();
        for rule in rules {
            sa.queue.push_back(Request::CreateChild {
                rule,
                rekey_of: None,
                resource: None,
            });
        }
        self.stats.ike_up += 1;
        let ev = IkeEvent::IkeUp {
            tunnel_id: sa.tunnel_id,
            peer: sa.peer,
            role: sa.role,
            nat_t: sa.encap,
        };
        self.events.push_back(ev);
    }

    /// RFC 7296 §2.4: INITIAL_CONTACT means the peer forgot its other SAs
    /// with us; drop them (without sending Delete).
    fn initial_contact(&mut self, keep: usize) {
        let peer = self.sas[keep].peer;
        let keep_id = self.sas[keep].tunnel_id;
        while let Some(j) = self
            .sas
            .iter()
            // Only established SAs are "old"; one in negotiation is a
            // fresh attempt of ours and is left to finish.
            .position(|sa| {
                sa.peer == peer && sa.tunnel_id != keep_id && sa.established_at.is_some()
            })
        {
            self.remove_sa(j, Reason::InitialContact);
        }
    }

    fn drop_child(&mut self, i: usize, child_id: u32, reason: Reason) {
        let sa = &mut self.sas[i];
        let Some(pos) = sa.children.iter().position(|c| c.child_id == child_id) else {
            return;
        };
        let c = sa.children.remove(pos);
        sa.pending_outbound.retain(|(old, _)| *old != child_id);
        self.controls.push_back(ControlMsg::DeleteSa {
            spi: c.spi_in,
            dir: Direction::Inbound,
        });
        self.controls.push_back(ControlMsg::DeleteSa {
            spi: c.spi_out,
            dir: Direction::Outbound,
        });
        self.spis.free(c.spi_in);
        let reason = if c.rekeyed { Reason::Rekeyed } else { reason };
        self.events.push_back(IkeEvent::ChildDown {
            tunnel_id: sa.tunnel_id,
            child_id,
            rule: c.rule,
            reason,
        });
    }

    /// Removes an IKE SA with all its children (DeleteSa for each).
    fn remove_sa(&mut self, i: usize, reason: Reason) {
        let ids: Vec<u32> = self.sas[i].children.iter().map(|c| c.child_id).collect();
        for id in ids {
            self.drop_child(i, id, reason.clone());
        }
        let sa = self.sas.remove(i);
        if let Some(Outstanding {
            what: Pending::Auth(Some(c)) | Pending::CreateChild(c),
            ..
        }) = &sa.outstanding
        {
            self.spis.free(c.spi_in);
        }
        if sa.established_at.is_some() {
            self.events.push_back(IkeEvent::IkeDown {
                tunnel_id: sa.tunnel_id,
                peer: sa.peer,
                reason,
            });
        }
    }

    /// AcquireFailed for every rule waiting on this SA.
    fn fail_pending(&mut self, i: usize, reason: Reason) {
        let sa = &mut self.sas[i];
        let peer = sa.peer;
        let mut rules: Vec<RuleId> = sa.pending_rules.drain(..).collect();
        for r in sa.queue.drain(..) {
            if let Request::CreateChild {
                rule,
                rekey_of: None,
                resource: None,
            } = r
            {
                rules.push(rule);
            }
        }
        if let Some(Outstanding {
            what: Pending::Auth(Some(c)) | Pending::CreateChild(c),
            ..
        }) = &sa.outstanding
        {
            if c.rekey_of.is_none() {
                rules.push(c.rule);
            }
        }
        for rule in rules {
            self.controls
                .push_back(ControlMsg::AcquireFailed { rule, peer });
            self.events.push_back(IkeEvent::ChildFailed {
                peer,
                rule: Some(rule),
                reason: reason.clone(),
            });
        }
    }

    /// An IKE SA negotiation failed: give up its rules and drop it.
    fn fail_ike(&mut self, i: usize, reason: Reason) {
        let peer = self.sas[i].peer;
        self.fail_pending(i, reason.clone());
        self.events.push_back(IkeEvent::IkeFailed {
            peer,
            reason: reason.clone(),
        });
        self.remove_sa(i, reason);
    }

    fn index_of(&self, tunnel_id: u32) -> Option<usize> {
        self.sas.iter().position(|sa| sa.tunnel_id == tunnel_id)
    }

    fn find_child(&self, spi: Spi, dir: Direction) -> Option<(usize, u32)> {
        self.sas.iter().enumerate().find_map(|(i, sa)| {
            sa.children
                .iter()
                .find(|c| match dir {
                    Direction::Inbound => c.spi_in == spi,
                    Direction::Outbound => c.spi_out == spi,
                })
                .map(|c| (i, c.child_id))
        })
    }

    // ----------------------------------------------------- sending

    /// Sends the next queued request if the window (size 1) is free.
    fn kick(&mut self, i: usize, now: Instant) {
        // Each pass either sends one request (then the window is full) or
        // drops one queued entry, so this ends within queue length passes.
        while self
            .sas
            .get(i)
            .is_some_and(|sa| sa.is_up() && sa.outstanding.is_none())
        {
            let Some(req) = self.sas[i].queue.pop_front() else {
                return;
            };
            match req {
                Request::CreateChild {
                    rule,
                    rekey_of,
                    resource,
                } => {
                    if rekey_of
                        .is_some_and(|c| !self.sas[i].children.iter().any(|x| x.child_id == c))
                    {
                        continue;
                    }
                    match self.child_request(i, rule, rekey_of, true, resource) {
                        Ok(c) => {
                            let mut inner = Vec::new();
                            if let Some(old) = rekey_of.and_then(|id| {
                                self.sas[i].children.iter().find(|x| x.child_id == id)
                            }) {
                                inner.push(Payload::Notify(Notify::child(
                                    ProtocolId::ESP,
                                    old.spi_in.0,
                                    NotifyType::REKEY_SA,
                                    Vec::new(),
                                )));
                            }
                            inner.extend(self.child_payloads(&c, true));
                            self.send_request(
                                i,
                                now,
                                ExchangeType::CREATE_CHILD_SA,
                                &inner,
                                Pending::CreateChild(c),
                            );
                        }
                        Err(reason) => {
                            let peer = self.sas[i].peer;
                            if rekey_of.is_none() {
                                self.controls
                                    .push_back(ControlMsg::AcquireFailed { rule, peer });
                            }
                            self.events.push_back(IkeEvent::ChildFailed {
                                peer,
                                rule: Some(rule),
                                reason,
                            });
                        }
                    }
                }
                Request::DeleteChild { child_id } => {
                    let Some(spi_in) = self.sas[i]
                        .children
                        .iter()
                        .find(|c| c.child_id == child_id)
                        .map(|c| c.spi_in)
                    else {
                        continue;
                    };
                    let inner = [Payload::Delete(Delete::esp(&[spi_in.0]))];
                    self.send_request(
                        i,
                        now,
                        ExchangeType::INFORMATIONAL,
                        &inner,
                        Pending::DeleteChild { child_id },
                    );
                }
                Request::DeleteIke => {
                    let inner = [Payload::Delete(Delete::ike())];
                    self.sas[i].state = IkeState::Deleting;
                    // Send even though no longer "up".
                    self.send_request(
                        i,
                        now,
                        ExchangeType::INFORMATIONAL,
                        &inner,
                        Pending::DeleteIke,
                    );
                    return;
                }
                Request::Dpd => {
                    self.send_request(i, now, ExchangeType::INFORMATIONAL, &[], Pending::Dpd);
                }
                Request::RekeyIke => {
                    let r = IkeRekey {
                        spi_i: random_spi(),
                        ni: random_nonce(),
                        dh: self.take_dh(),
                    };
                    let inner = [
                        Payload::Sa(SaPayload {
                            proposals: vec![ike_proposal(&r.spi_i)],
                        }),
                        Payload::Nonce(Nonce(r.ni.clone())),
                        Payload::Ke(KePayload {
                            group: GROUP_MODP2048,
                            data: r.dh.public().to_vec(),
                        }),
                    ];
                    self.send_request(
                        i,
                        now,
                        ExchangeType::CREATE_CHILD_SA,
                        &inner,
                        Pending::RekeyIke(r),
                    );
                }
            }
        }
    }

    fn header(&self, i: usize, exchange: ExchangeType, msg_id: u32, response: bool) -> Header {
        let sa = &self.sas[i];
        let mut flags = Flags::default();
        if sa.role == Role::Initiator {
            flags = flags | Flags::INITIATOR;
        }
        if response {
            flags = flags | Flags::RESPONSE;
        }
        Header::new(exchange, sa.spi_i, sa.spi_r, msg_id, flags)
    }

    fn send_request(
        &mut self,
        i: usize,
        now: Instant,
        exchange: ExchangeType,
        inner: &[Payload],
        what: Pending,
    ) {
        let msg_id = self.sas[i].next_msg_id;
        let h = self.header(i, exchange, msg_id, false);
        let Some(keys) = sk_keys(&self.sas[i], true) else {
            return;
        };
        let msg = wire::sealed(h, inner, keys);
        self.sas[i].next_msg_id = msg_id.wrapping_add(1);
        self.send_request_bytes(i, now, msg_id, msg, what);
    }

    fn send_request_bytes(
        &mut self,
        i: usize,
        now: Instant,
        msg_id: u32,
        msg: Vec<u8>,
        what: Pending,
    ) {
        let sa = &mut self.sas[i];
        let data = frame_for(sa.local.port(), self.cfg.nat_port, msg);
        sa.outstanding = Some(Outstanding {
            msg_id,
            datagram: data.clone(),
            transmissions: 1,
            next_delay: self
                .cfg
                .retransmit_base
                .saturating_mul(2)
                .min(MAX_RETRANSMIT_DELAY),
            what,
        });
        sa.timers
            .set_after(Timer::Retransmit, now, self.cfg.retransmit_base);
        let t = Transmit {
            local: sa.local,
            remote: sa.remote,
            data,
        };
        self.push_transmit(t);
    }

    fn respond(&mut self, i: usize, msg_id: u32, exchange: ExchangeType, inner: &[Payload]) {
        let h = self.header(i, exchange, msg_id, true);
        let Some(keys) = sk_keys(&self.sas[i], true) else {
            return;
        };
        let msg = wire::sealed(h, inner, keys);
        let sa = &mut self.sas[i];
        let data = frame_for(sa.local.port(), self.cfg.nat_port, msg);
        sa.peer_next_msg_id = msg_id.wrapping_add(1);
        sa.last_response = Some((msg_id, data.clone()));
        let t = Transmit {
            local: sa.local,
            remote: sa.remote,
            data,
        };
        self.push_transmit(t);
    }

    fn on_retransmit(&mut self, i: usize, now: Instant) {
        let tries = self.cfg.retransmit_tries.max(1);
        let sa = &mut self.sas[i];
        let Some(out) = sa.outstanding.as_mut() else {
            return;
        };
        if out.transmissions >= tries {
            self.stats.timeouts += 1;
            let up = sa.established_at.is_some();
            if up {
                self.fail_pending(i, Reason::Timeout);
                self.remove_sa(i, Reason::Timeout);
            } else {
                self.fail_ike(i, Reason::Timeout);
            }
            return;
        }
        out.transmissions += 1;
        let delay = out.next_delay;
        out.next_delay = delay.saturating_mul(2).min(MAX_RETRANSMIT_DELAY);
        let t = Transmit {
            local: sa.local,
            remote: sa.remote,
            data: out.datagram.clone(),
        };
        sa.timers.set_after(Timer::Retransmit, now, delay);
        self.stats.retransmits += 1;
        self.push_transmit(t);
    }

    fn push_transmit(&mut self, t: Transmit) {
        self.stats.datagrams_out += 1;
        self.transmits.push_back(t);
    }
}

/// Adds the non-ESP marker when sending from the NAT-T port (RFC 3948 §2.2).
fn frame_for(local_port: u16, nat_port: u16, msg: Vec<u8>) -> Vec<u8> {
    if local_port == nat_port {
        with_non_esp_marker(&msg)
    } else {
        msg
    }
}

/// RFC 9611 §3: SA_RESOURCE_INFO, protocol 0 and no SPI; the optional
/// resource identifier is our worker index, so two espgates pair their
/// workers' SAs the same way.
fn resource_notify(resource: u8) -> Payload {
    Payload::Notify(Notify::new(NotifyType::SA_RESOURCE_INFO, vec![resource]))
}
