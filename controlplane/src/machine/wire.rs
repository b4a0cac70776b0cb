//! Adapter between the machine and the codec (`ike::{message,payload}`):
//! whole messages in the clear (IKE_SA_INIT) and SK-protected ones, using
//! `ike::crypto::{seal, open}` for the SK payload, plus payload look-ups.
//! The codec's own `SkSealer`/`SkOpener` route is not used so that the SK
//! crypto stays in one tested place (`ike::crypto`).

use std::net::{IpAddr, SocketAddr};

use sha1::{Digest, Sha1};

use crate::error::DecodeError;
use crate::ike::codec::Reader;
use crate::ike::crypto::{self, SkError, SkKeys};
use crate::ike::payload::{
    decode_chain, encode_chain, first_type, AuthPayload, Delete, IdPayload, KePayload, Notify,
    NotifyType, Payload, PayloadType, Proposal, TrafficSelector,
};
use crate::ike::{Header, Message};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("SK payload: {0}")]
    Sk(#[from] SkError),
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    #[error("SK payload nested inside SK")]
    NestedSk,
}

pub fn plain(header: Header, payloads: Vec<Payload>) -> Vec<u8> {
    Message { header, payloads }.encode()
}

pub fn sealed(header: Header, inner: &[Payload], keys: SkKeys<'_>) -> Vec<u8> {
    let mut prefix = Message {
        header,
        payloads: Vec::new(),
    }
    .encode();
    if let Some(next) = prefix.get_mut(16) {
        *next = PayloadType::SK.0;
    }
    let mut body = Vec::with_capacity(512);
    encode_chain(inner, PayloadType::NONE, &mut body);
    crypto::seal(&prefix, first_type(inner).0, &body, keys)
}

pub fn open(data: &[u8], keys: SkKeys<'_>) -> Result<Vec<Payload>, WireError> {
    let o = crypto::open(data, keys)?;
    let mut r = Reader::new(&o.inner);
    let payloads = decode_chain(PayloadType(o.first_inner), &mut r)?;
    if payloads.iter().any(|p| matches!(p, Payload::Encrypted(_))) {
        return Err(WireError::NestedSk);
    }
    Ok(payloads)
}

/// NAT_DETECTION_*_IP data: SHA-1(SPIi | SPIr | IP | port) (RFC 7296 §2.23).
pub fn nat_hash(spi_i: &[u8; 8], spi_r: &[u8; 8], addr: SocketAddr) -> Vec<u8> {
    let mut h = Sha1::new();
    h.update(spi_i);
    h.update(spi_r);
    match addr.ip() {
        IpAddr::V4(a) => h.update(a.octets()),
        IpAddr::V6(a) => h.update(a.octets()),
    }
    h.update(addr.port().to_be_bytes());
    h.finalize().to_vec()
}

/// Typed look-ups over a decoded payload list.
pub struct Payloads<'a>(pub &'a [Payload]);

impl<'a> Payloads<'a> {
    pub fn proposals(&self) -> Option<&'a [Proposal]> {
        self.0.iter().find_map(|p| match p {
            Payload::Sa(s) => Some(s.proposals.as_slice()),
            _ => None,
        })
    }
    pub fn ke(&self) -> Option<&'a KePayload> {
        self.0.iter().find_map(|p| match p {
            Payload::Ke(k) => Some(k),
            _ => None,
        })
    }
    pub fn nonce(&self) -> Option<&'a [u8]> {
        self.0.iter().find_map(|p| match p {
            Payload::Nonce(n) => Some(n.0.as_slice()),
            _ => None,
        })
    }
    pub fn idi(&self) -> Option<&'a IdPayload> {
        self.0.iter().find_map(|p| match p {
            Payload::IdI(i) => Some(i),
            _ => None,
        })
    }
    pub fn idr(&self) -> Option<&'a IdPayload> {
        self.0.iter().find_map(|p| match p {
            Payload::IdR(i) => Some(i),
            _ => None,
        })
    }
    pub fn auth(&self) -> Option<&'a AuthPayload> {
        self.0.iter().find_map(|p| match p {
            Payload::Auth(a) => Some(a),
            _ => None,
        })
    }
    pub fn tsi(&self) -> Option<&'a [TrafficSelector]> {
        self.0.iter().find_map(|p| match p {
            Payload::TsI(t) => Some(t.selectors.as_slice()),
            _ => None,
        })
    }
    pub fn tsr(&self) -> Option<&'a [TrafficSelector]> {
        self.0.iter().find_map(|p| match p {
            Payload::TsR(t) => Some(t.selectors.as_slice()),
            _ => None,
        })
    }
    pub fn notify(&self, ntype: NotifyType) -> Option<&'a Notify> {
        self.0.iter().find_map(|p| match p {
            Payload::Notify(n) if n.ntype == ntype => Some(n),
            _ => None,
        })
    }
    pub fn notifies(&self, ntype: NotifyType) -> impl Iterator<Item = &'a Notify> {
        self.0.iter().filter_map(move |p| match p {
            Payload::Notify(n) if n.ntype == ntype => Some(n),
            _ => None,
        })
    }
    /// The first error notify (type < 16384), if any.
    pub fn error(&self) -> Option<NotifyType> {
        self.0.iter().find_map(|p| match p {
            Payload::Notify(n) if n.ntype.is_error() => Some(n.ntype),
            _ => None,
        })
    }
    pub fn deletes(&self) -> impl Iterator<Item = &'a Delete> {
        self.0.iter().filter_map(|p| match p {
            Payload::Delete(d) => Some(d),
            _ => None,
        })
    }
}

/// RestOfIDPayload (RFC 7296 §2.15): ID type, three reserved bytes, data.
pub fn id_body(id: &IdPayload) -> Vec<u8> {
    let mut v = vec![id.id_type.0, 0, 0, 0];
    v.extend_from_slice(&id.data);
    v
}
