//! IKEv2 payloads (RFC 7296 §3.2–§3.14) and the IANA numbers they carry.
//!
//! Each payload body implements [`Codec`]; the generic payload header (next
//! payload, critical bit, length) is written and checked by the payload chain
//! functions [`encode_chain`] and [`decode_chain`], so a body reader is always
//! bounded by its payload length.
//!
//! IANA numbers are open newtypes: unknown values survive a round trip and
//! `Debug` prints the name or, for unknown values, the number in hex.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;

use espgate_dataplane::api::Selector;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::codec::{Codec, LengthPrefixed, LengthWidth, Reader};
use crate::error::{DecodeError, SelectorError};

/// Defines an open newtype over an IANA number with named constants.
macro_rules! iana_number {
    ($(#[$m:meta])* $name:ident($ty:ty) { $($(#[$cm:meta])* $c:ident = $v:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub $ty);

        #[allow(non_upper_case_globals)]
        impl $name {
            $($(#[$cm])* pub const $c: $name = $name($v);)*

            /// The IANA name, if this value has one here.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($v => Some(stringify!($c)),)*
                    _ => None,
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "{}(0x{:x})", stringify!($name), self.0),
                }
            }
        }
    };
}

iana_number! {
    /// RFC 7296 §3.1 Exchange Type.
    ExchangeType(u8) {
        IKE_SA_INIT = 34,
        IKE_AUTH = 35,
        CREATE_CHILD_SA = 36,
        INFORMATIONAL = 37,
    }
}

iana_number! {
    /// RFC 7296 §3.2 Next Payload type.
    PayloadType(u8) {
        NONE = 0,
        SA = 33,
        KE = 34,
        IDi = 35,
        IDr = 36,
        CERT = 37,
        CERTREQ = 38,
        AUTH = 39,
        Nonce = 40,
        Notify = 41,
        Delete = 42,
        VendorID = 43,
        TSi = 44,
        TSr = 45,
        SK = 46,
        CP = 47,
        EAP = 48,
        /// RFC 7383 encrypted fragment; not supported, decoded as unknown.
        SKF = 53,
    }
}

iana_number! {
    /// RFC 7296 §3.10.1 Notify Message Type (errors < 16384 ≤ status).
    NotifyType(u16) {
        UNSUPPORTED_CRITICAL_PAYLOAD = 1,
        INVALID_IKE_SPI = 4,
        INVALID_MAJOR_VERSION = 5,
        INVALID_SYNTAX = 7,
        INVALID_MESSAGE_ID = 9,
        INVALID_SPI = 11,
        NO_PROPOSAL_CHOSEN = 14,
        INVALID_KE_PAYLOAD = 17,
        AUTHENTICATION_FAILED = 24,
        SINGLE_PAIR_REQUIRED = 34,
        NO_ADDITIONAL_SAS = 35,
        INTERNAL_ADDRESS_FAILURE = 36,
        FAILED_CP_REQUIRED = 37,
        TS_UNACCEPTABLE = 38,
        INVALID_SELECTORS = 39,
        UNACCEPTABLE_ADDRESSES = 40,
        UNEXPECTED_NAT_DETECTED = 41,
        TEMPORARY_FAILURE = 43,
        CHILD_SA_NOT_FOUND = 44,
        INITIAL_CONTACT = 16384,
        SET_WINDOW_SIZE = 16385,
        ADDITIONAL_TS_POSSIBLE = 16386,
        IPCOMP_SUPPORTED = 16387,
        NAT_DETECTION_SOURCE_IP = 16388,
        NAT_DETECTION_DESTINATION_IP = 16389,
        COOKIE = 16390,
        USE_TRANSPORT_MODE = 16391,
        HTTP_CERT_LOOKUP_SUPPORTED = 16392,
        REKEY_SA = 16393,
        ESP_TFC_PADDING_NOT_SUPPORTED = 16394,
        NON_FIRST_FRAGMENTS_ALSO = 16395,
        MOBIKE_SUPPORTED = 16396,
        UPDATE_SA_ADDRESSES = 16400,
        COOKIE2 = 16401,
        NO_NATS_ALLOWED = 16402,
        AUTH_LIFETIME = 16403,
        MULTIPLE_AUTH_SUPPORTED = 16404,
        ANOTHER_AUTH_FOLLOWS = 16405,
        REDIRECT_SUPPORTED = 16406,
        EAP_ONLY_AUTHENTICATION = 16417,
        CHILDLESS_IKEV2_SUPPORTED = 16418,
        IKEV2_FRAGMENTATION_SUPPORTED = 16430,
        SIGNATURE_HASH_ALGORITHMS = 16431,
        /// RFC 9611: per-resource child SAs (one per worker, same selectors).
        SA_RESOURCE_INFO = 16444,
    }
}

impl NotifyType {
    /// RFC 7296 §3.10.1: types below 16384 report errors.
    pub fn is_error(self) -> bool {
        self.0 < 16384
    }
}

iana_number! {
    /// RFC 7296 §3.3.2 Transform Type.
    TransformType(u8) {
        ENCR = 1,
        PRF = 2,
        INTEG = 3,
        DH = 4,
        ESN = 5,
    }
}

/// Transform ID (RFC 7296 §3.3.2). Its meaning depends on the transform
/// type, so `Debug` prints the number; the constants carry the type prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TransformId(pub u16);

#[allow(non_upper_case_globals)]
impl TransformId {
    pub const ENCR_3DES: TransformId = TransformId(3);
    pub const ENCR_AES_CBC: TransformId = TransformId(12);
    pub const ENCR_AES_CTR: TransformId = TransformId(13);
    pub const ENCR_AES_GCM_8: TransformId = TransformId(18);
    pub const ENCR_AES_GCM_12: TransformId = TransformId(19);
    pub const ENCR_AES_GCM_16: TransformId = TransformId(20);
    pub const ENCR_CHACHA20_POLY1305: TransformId = TransformId(28);
    pub const PRF_HMAC_SHA1: TransformId = TransformId(2);
    pub const PRF_HMAC_SHA2_256: TransformId = TransformId(5);
    pub const PRF_HMAC_SHA2_384: TransformId = TransformId(6);
    pub const PRF_HMAC_SHA2_512: TransformId = TransformId(7);
    pub const AUTH_NONE: TransformId = TransformId(0);
    pub const AUTH_HMAC_SHA1_96: TransformId = TransformId(2);
    pub const AUTH_HMAC_SHA2_256_128: TransformId = TransformId(12);
    pub const AUTH_HMAC_SHA2_384_192: TransformId = TransformId(13);
    pub const AUTH_HMAC_SHA2_512_256: TransformId = TransformId(14);
    pub const MODP_1024: TransformId = TransformId(2);
    pub const MODP_2048: TransformId = TransformId(14);
    pub const MODP_3072: TransformId = TransformId(15);
    pub const MODP_4096: TransformId = TransformId(16);
    pub const ECP_256: TransformId = TransformId(19);
    pub const ECP_384: TransformId = TransformId(20);
    pub const Curve25519: TransformId = TransformId(31);
    pub const ESN_NO: TransformId = TransformId(0);
    pub const ESN_YES: TransformId = TransformId(1);
}

impl fmt::Debug for TransformId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TransformId({})", self.0)
    }
}

/// RFC 7296 §3.3.5 Key Length attribute (TV format).
pub const ATTR_KEY_LENGTH: u16 = 14;
/// Attribute Format bit: set for TV (2-byte value in the length field).
const ATTR_TV: u16 = 0x8000;

iana_number! {
    /// RFC 7296 §3.3.1 Protocol ID.
    ProtocolId(u8) {
        NONE = 0,
        IKE = 1,
        AH = 2,
        ESP = 3,
    }
}

iana_number! {
    /// RFC 7296 §3.5 ID Type.
    IdType(u8) {
        ID_IPV4_ADDR = 1,
        ID_FQDN = 2,
        ID_RFC822_ADDR = 3,
        ID_IPV6_ADDR = 5,
        ID_DER_ASN1_DN = 9,
        ID_DER_ASN1_GN = 10,
        ID_KEY_ID = 11,
    }
}

iana_number! {
    /// RFC 7296 §3.8 Auth Method.
    AuthMethod(u8) {
        RSA_SIG = 1,
        SHARED_KEY_MIC = 2,
        DSS_SIG = 3,
        DIGITAL_SIGNATURE = 14,
    }
}

iana_number! {
    /// RFC 7296 §3.13.1 Traffic Selector Type.
    TsType(u8) {
        TS_IPV4_ADDR_RANGE = 7,
        TS_IPV6_ADDR_RANGE = 8,
    }
}

// ---------------------------------------------------------------- SA payload

/// SA payload (RFC 7296 §3.3): proposals in order of preference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaPayload {
    pub proposals: Vec<Proposal>,
}

/// Proposal substructure (RFC 7296 §3.3.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// Proposal number: 1 for the first, same or +1 for each next one.
    pub num: u8,
    pub protocol: ProtocolId,
    /// Empty for the initial IKE SA, the new IKE SPI when rekeying the IKE
    /// SA, the sender's inbound SPI (4 bytes) for ESP/AH.
    pub spi: Vec<u8>,
    pub transforms: Vec<Transform>,
}

/// Transform substructure (RFC 7296 §3.3.2).
///
/// `other_attrs` holds attributes other than KEY_LENGTH. RFC 7296 §3.3.6 says
/// a transform with an attribute the responder does not understand must be
/// rejected, so proposal selection should treat a transform with a
/// non-empty `other_attrs` as unacceptable; they are kept so that the
/// payload round-trips.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transform {
    pub ttype: TransformType,
    pub id: TransformId,
    pub key_len: Option<u16>,
    pub other_attrs: Vec<Attribute>,
}

/// A transform attribute other than KEY_LENGTH (RFC 7296 §3.3.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    /// Attribute type without the format bit.
    pub atype: u16,
    pub value: AttributeValue,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttributeValue {
    /// TV format: a 2-byte value.
    Tv(u16),
    /// TLV format: a variable-length value.
    Tlv(Vec<u8>),
}

impl Transform {
    pub fn new(ttype: TransformType, id: TransformId) -> Transform {
        Transform {
            ttype,
            id,
            key_len: None,
            other_attrs: Vec::new(),
        }
    }

    pub fn with_key_len(mut self, bits: u16) -> Transform {
        self.key_len = Some(bits);
        self
    }
}

/// "Last Substruc" values (RFC 7296 §3.3.1, §3.3.2).
const MORE_PROPOSALS: u8 = 2;
const MORE_TRANSFORMS: u8 = 3;

impl Codec<'_> for SaPayload {
    fn encode(&self, out: &mut Vec<u8>) {
        for (i, p) in self.proposals.iter().enumerate() {
            let more = i + 1 < self.proposals.len();
            p.encode_substruct(more, out);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<SaPayload, DecodeError> {
        let mut proposals = Vec::new();
        while !r.is_empty() {
            let more = r.u8("proposal header")?;
            let proposal = Proposal::read_substruct(r)?;
            match (more, r.is_empty()) {
                (0, true) | (MORE_PROPOSALS, false) => {}
                _ => return Err(DecodeError::BadLastSubstructure { what: "proposal" }),
            }
            proposals.push(proposal);
        }
        if proposals.is_empty() {
            return Err(DecodeError::Empty("SA payload"));
        }
        Ok(SaPayload { proposals })
    }
}

impl Proposal {
    fn encode_substruct(&self, more: bool, out: &mut Vec<u8>) {
        debug_assert!(
            self.spi.len() <= u8::MAX as usize && self.transforms.len() <= u8::MAX as usize
        );
        let mut p = LengthPrefixed::new(out, 2, LengthWidth::U16);
        p.extend_from_slice(&[if more { MORE_PROPOSALS } else { 0 }, 0, 0, 0]);
        p.push(self.num);
        p.push(self.protocol.0);
        p.push(self.spi.len() as u8);
        p.push(self.transforms.len() as u8);
        p.extend_from_slice(&self.spi);
        for (i, t) in self.transforms.iter().enumerate() {
            let more = i + 1 < self.transforms.len();
            t.encode_substruct(more, &mut p);
        }
    }

    /// Reads a proposal whose first byte (last-substructure) was consumed.
    fn read_substruct(r: &mut Reader<'_>) -> Result<Proposal, DecodeError> {
        r.u8("proposal header")?; // reserved
        let len = r.u16("proposal header")? as usize;
        let mut p = r
            .sub(
                len.checked_sub(4)
                    .ok_or(DecodeError::BadSubstructureLength { what: "proposal" })?,
                "proposal",
            )
            .map_err(|_| DecodeError::BadSubstructureLength { what: "proposal" })?;
        let num = p.u8("proposal")?;
        let protocol = ProtocolId(p.u8("proposal")?);
        let spi_size = p.u8("proposal")?;
        let num_transforms = p.u8("proposal")?;
        let spi = p.bytes(spi_size as usize, "proposal SPI")?.to_vec();
        let mut transforms = Vec::with_capacity(num_transforms as usize);
        while !p.is_empty() {
            let more = p.u8("transform header")?;
            let t = Transform::read_substruct(&mut p)?;
            match (more, p.is_empty()) {
                (0, true) | (MORE_TRANSFORMS, false) => {}
                _ => return Err(DecodeError::BadLastSubstructure { what: "transform" }),
            }
            transforms.push(t);
        }
        if transforms.len() != num_transforms as usize {
            return Err(DecodeError::CountMismatch { what: "transform" });
        }
        Ok(Proposal {
            num,
            protocol,
            spi,
            transforms,
        })
    }

    /// The SPI as a u32, for ESP/AH proposals (4-byte SPI).
    pub fn spi_u32(&self) -> Option<u32> {
        Some(u32::from_be_bytes(self.spi.as_slice().try_into().ok()?))
    }

    /// Transforms of one type, in the sender's order.
    pub fn transforms_of(&self, ttype: TransformType) -> impl Iterator<Item = &Transform> {
        self.transforms.iter().filter(move |t| t.ttype == ttype)
    }
}

impl Transform {
    fn encode_substruct(&self, more: bool, out: &mut Vec<u8>) {
        let mut t = LengthPrefixed::new(out, 2, LengthWidth::U16);
        t.extend_from_slice(&[if more { MORE_TRANSFORMS } else { 0 }, 0, 0, 0]);
        t.push(self.ttype.0);
        t.push(0);
        t.extend_from_slice(&self.id.0.to_be_bytes());
        if let Some(bits) = self.key_len {
            t.extend_from_slice(&(ATTR_TV | ATTR_KEY_LENGTH).to_be_bytes());
            t.extend_from_slice(&bits.to_be_bytes());
        }
        for a in &self.other_attrs {
            let atype = a.atype & !ATTR_TV;
            match &a.value {
                AttributeValue::Tv(v) => {
                    t.extend_from_slice(&(ATTR_TV | atype).to_be_bytes());
                    t.extend_from_slice(&v.to_be_bytes());
                }
                AttributeValue::Tlv(v) => {
                    t.extend_from_slice(&atype.to_be_bytes());
                    t.extend_from_slice(&(v.len() as u16).to_be_bytes());
                    t.extend_from_slice(v);
                }
            }
        }
    }

    /// Reads a transform whose first byte (last-substructure) was consumed.
    fn read_substruct(r: &mut Reader<'_>) -> Result<Transform, DecodeError> {
        r.u8("transform header")?; // reserved
        let len = r.u16("transform header")? as usize;
        let mut t = r
            .sub(
                len.checked_sub(4)
                    .ok_or(DecodeError::BadSubstructureLength { what: "transform" })?,
                "transform",
            )
            .map_err(|_| DecodeError::BadSubstructureLength { what: "transform" })?;
        let ttype = TransformType(t.u8("transform")?);
        t.u8("transform")?; // reserved
        let id = TransformId(t.u16("transform")?);
        let mut key_len = None;
        let mut other_attrs = Vec::new();
        while !t.is_empty() {
            let raw = t.u16("transform attribute")?;
            let atype = raw & !ATTR_TV;
            let value = if raw & ATTR_TV != 0 {
                AttributeValue::Tv(t.u16("transform attribute")?)
            } else {
                let n = t.u16("transform attribute")? as usize;
                let v = t.bytes(n, "transform attribute").map_err(|_| {
                    DecodeError::BadSubstructureLength {
                        what: "transform attribute",
                    }
                })?;
                AttributeValue::Tlv(v.to_vec())
            };
            match (atype, value) {
                (ATTR_KEY_LENGTH, AttributeValue::Tv(bits)) if key_len.is_none() => {
                    key_len = Some(bits)
                }
                (ATTR_KEY_LENGTH, _) => return Err(DecodeError::BadAttribute(atype)),
                (atype, value) => other_attrs.push(Attribute { atype, value }),
            }
        }
        Ok(Transform {
            ttype,
            id,
            key_len,
            other_attrs,
        })
    }
}

// ------------------------------------------------------- KE, Nonce, ID, AUTH

/// Key Exchange payload (RFC 7296 §3.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KePayload {
    /// Diffie-Hellman group number (a DH transform ID, e.g. 14 = MODP_2048).
    pub group: u16,
    pub data: Vec<u8>,
}

impl Codec<'_> for KePayload {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.group.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.data);
    }

    fn read(r: &mut Reader<'_>) -> Result<KePayload, DecodeError> {
        let group = r.u16("KE payload")?;
        r.bytes(2, "KE payload")?;
        Ok(KePayload {
            group,
            data: r.rest().to_vec(),
        })
    }
}

/// Nonce payload (RFC 7296 §3.9). Length limits (16..=256) are checked by
/// the state machine, not here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nonce(pub Vec<u8>);

impl Codec<'_> for Nonce {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
    fn read(r: &mut Reader<'_>) -> Result<Nonce, DecodeError> {
        Ok(Nonce(r.rest().to_vec()))
    }
}

/// Identification payload, IDi or IDr (RFC 7296 §3.5).
///
/// Its encoding ([`Codec::get_encoding`]) is exactly the `RestOfIDPayload`
/// (IDi'/IDr') that PSK authentication signs (RFC 7296 §2.15).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdPayload {
    pub id_type: IdType,
    pub data: Vec<u8>,
}

impl IdPayload {
    /// ID_IPV4_ADDR / ID_IPV6_ADDR for an address.
    pub fn from_addr(addr: IpAddr) -> IdPayload {
        match addr {
            IpAddr::V4(a) => IdPayload {
                id_type: IdType::ID_IPV4_ADDR,
                data: a.octets().to_vec(),
            },
            IpAddr::V6(a) => IdPayload {
                id_type: IdType::ID_IPV6_ADDR,
                data: a.octets().to_vec(),
            },
        }
    }
}

impl IdPayload {
    /// ID_FQDN (RFC 7296 §3.5).
    pub fn fqdn(name: &str) -> IdPayload {
        IdPayload {
            id_type: IdType::ID_FQDN,
            data: name.as_bytes().to_vec(),
        }
    }

    /// The address of an ID_IPV4_ADDR / ID_IPV6_ADDR identity.
    pub fn addr(&self) -> Option<IpAddr> {
        match self.id_type {
            IdType::ID_IPV4_ADDR => Some(IpAddr::from(
                <[u8; 4]>::try_from(self.data.as_slice()).ok()?,
            )),
            IdType::ID_IPV6_ADDR => Some(IpAddr::from(
                <[u8; 16]>::try_from(self.data.as_slice()).ok()?,
            )),
            _ => None,
        }
    }
}

impl Codec<'_> for IdPayload {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.id_type.0, 0, 0, 0]);
        out.extend_from_slice(&self.data);
    }
    fn read(r: &mut Reader<'_>) -> Result<IdPayload, DecodeError> {
        let id_type = IdType(r.u8("ID payload")?);
        r.bytes(3, "ID payload")?;
        Ok(IdPayload {
            id_type,
            data: r.rest().to_vec(),
        })
    }
}

/// Authentication payload (RFC 7296 §3.8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthPayload {
    pub method: AuthMethod,
    pub data: Vec<u8>,
}

impl Codec<'_> for AuthPayload {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.method.0, 0, 0, 0]);
        out.extend_from_slice(&self.data);
    }
    fn read(r: &mut Reader<'_>) -> Result<AuthPayload, DecodeError> {
        let method = AuthMethod(r.u8("AUTH payload")?);
        r.bytes(3, "AUTH payload")?;
        Ok(AuthPayload {
            method,
            data: r.rest().to_vec(),
        })
    }
}

/// CERT or CERTREQ payload (RFC 7296 §3.6, §3.7), kept raw: espgate
/// authenticates with PSK only, but peers may still send CERTREQ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertPayload {
    pub encoding: u8,
    pub data: Vec<u8>,
}

impl Codec<'_> for CertPayload {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.encoding);
        out.extend_from_slice(&self.data);
    }
    fn read(r: &mut Reader<'_>) -> Result<CertPayload, DecodeError> {
        Ok(CertPayload {
            encoding: r.u8("CERT payload")?,
            data: r.rest().to_vec(),
        })
    }
}

// ------------------------------------------------------ Notify, Delete, VID

/// Notify payload (RFC 7296 §3.10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notify {
    /// `ProtocolId::NONE` unless the notification is about a child SA.
    pub protocol: ProtocolId,
    pub spi: Vec<u8>,
    pub ntype: NotifyType,
    pub data: Vec<u8>,
}

impl Notify {
    /// A notification about the IKE SA (no SPI).
    pub fn new(ntype: NotifyType, data: Vec<u8>) -> Notify {
        Notify {
            protocol: ProtocolId::NONE,
            spi: Vec::new(),
            ntype,
            data,
        }
    }

    /// A notification about a child SA (e.g. REKEY_SA with the old ESP SPI).
    pub fn child(protocol: ProtocolId, spi: u32, ntype: NotifyType, data: Vec<u8>) -> Notify {
        Notify {
            protocol,
            spi: spi.to_be_bytes().to_vec(),
            ntype,
            data,
        }
    }

    pub fn spi_u32(&self) -> Option<u32> {
        Some(u32::from_be_bytes(self.spi.as_slice().try_into().ok()?))
    }
}

impl Codec<'_> for Notify {
    fn encode(&self, out: &mut Vec<u8>) {
        debug_assert!(self.spi.len() <= u8::MAX as usize);
        out.push(self.protocol.0);
        out.push(self.spi.len() as u8);
        out.extend_from_slice(&self.ntype.0.to_be_bytes());
        out.extend_from_slice(&self.spi);
        out.extend_from_slice(&self.data);
    }
    fn read(r: &mut Reader<'_>) -> Result<Notify, DecodeError> {
        let protocol = ProtocolId(r.u8("Notify payload")?);
        let spi_size = r.u8("Notify payload")?;
        let ntype = NotifyType(r.u16("Notify payload")?);
        let spi = r.bytes(spi_size as usize, "Notify SPI")?.to_vec();
        Ok(Notify {
            protocol,
            spi,
            ntype,
            data: r.rest().to_vec(),
        })
    }
}

/// Delete payload (RFC 7296 §3.11).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    pub protocol: ProtocolId,
    /// 0 for IKE (no SPIs: the IKE SA of the message is meant), 4 for ESP/AH.
    pub spi_size: u8,
    /// Each exactly `spi_size` bytes.
    pub spis: Vec<Vec<u8>>,
}

impl Delete {
    /// Deletes the IKE SA the message belongs to.
    pub fn ike() -> Delete {
        Delete {
            protocol: ProtocolId::IKE,
            spi_size: 0,
            spis: Vec::new(),
        }
    }

    /// Deletes ESP SAs by their (our inbound) SPIs.
    pub fn esp(spis: &[u32]) -> Delete {
        Delete {
            protocol: ProtocolId::ESP,
            spi_size: 4,
            spis: spis.iter().map(|s| s.to_be_bytes().to_vec()).collect(),
        }
    }

    /// The SPIs as u32 when they are 4 bytes each.
    pub fn spis_u32(&self) -> impl Iterator<Item = u32> + '_ {
        self.spis
            .iter()
            .filter_map(|s| Some(u32::from_be_bytes(s.as_slice().try_into().ok()?)))
    }
}

impl Codec<'_> for Delete {
    fn encode(&self, out: &mut Vec<u8>) {
        debug_assert!(self.spis.iter().all(|s| s.len() == self.spi_size as usize));
        out.push(self.protocol.0);
        out.push(self.spi_size);
        out.extend_from_slice(&(self.spis.len() as u16).to_be_bytes());
        for s in &self.spis {
            out.extend_from_slice(s);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Delete, DecodeError> {
        let protocol = ProtocolId(r.u8("Delete payload")?);
        let spi_size = r.u8("Delete payload")?;
        let count = r.u16("Delete payload")? as usize;
        if spi_size == 0 && count != 0 {
            return Err(DecodeError::BadSpiSize {
                what: "Delete payload",
                size: 0,
            });
        }
        if spi_size > 0 && r.left() != count * spi_size as usize {
            return Err(DecodeError::CountMismatch { what: "Delete SPI" });
        }
        let mut spis = Vec::with_capacity(count);
        for _ in 0..count {
            spis.push(r.bytes(spi_size as usize, "Delete SPI")?.to_vec());
        }
        Ok(Delete {
            protocol,
            spi_size,
            spis,
        })
    }
}

/// Vendor ID payload (RFC 7296 §3.12).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VendorId(pub Vec<u8>);

impl Codec<'_> for VendorId {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
    fn read(r: &mut Reader<'_>) -> Result<VendorId, DecodeError> {
        Ok(VendorId(r.rest().to_vec()))
    }
}

// -------------------------------------------------------- Traffic selectors

/// TSi or TSr payload (RFC 7296 §3.13).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TsPayload {
    pub selectors: Vec<TrafficSelector>,
}

/// One traffic selector (RFC 7296 §3.13.1). The address family decides the
/// TS type, so a v4 start with a v6 end cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    /// 0 = any protocol.
    pub ip_proto: u8,
    pub start_port: u16,
    pub end_port: u16,
    pub addrs: AddrRange,
}

/// Inclusive address range of a traffic selector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddrRange {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

impl TrafficSelector {
    pub fn ts_type(&self) -> TsType {
        match self.addrs {
            AddrRange::V4(..) => TsType::TS_IPV4_ADDR_RANGE,
            AddrRange::V6(..) => TsType::TS_IPV6_ADDR_RANGE,
        }
    }

    pub fn start_addr(&self) -> IpAddr {
        match self.addrs {
            AddrRange::V4(s, _) => s.into(),
            AddrRange::V6(s, _) => s.into(),
        }
    }

    pub fn end_addr(&self) -> IpAddr {
        match self.addrs {
            AddrRange::V4(_, e) => e.into(),
            AddrRange::V6(_, e) => e.into(),
        }
    }

    /// The selector covering exactly `net`, `ip_proto` (0 = any) and `ports`.
    pub fn from_net(net: IpNet, ip_proto: u8, ports: RangeInclusive<u16>) -> TrafficSelector {
        let addrs = match net {
            IpNet::V4(n) => AddrRange::V4(n.network(), n.broadcast()),
            IpNet::V6(n) => AddrRange::V6(n.network(), n.broadcast()),
        };
        TrafficSelector {
            ip_proto,
            start_port: *ports.start(),
            end_port: *ports.end(),
            addrs,
        }
    }

    /// The prefix the address range is exactly equal to, or
    /// [`SelectorError::NotPrefix`] (e.g. 10.0.0.1-10.0.0.5); use
    /// [`TrafficSelector::covering_net`] when widening is acceptable.
    pub fn to_net(&self) -> Result<IpNet, SelectorError> {
        let net = self.covering_net()?;
        if net.network() == self.start_addr() && net.broadcast() == self.end_addr() {
            Ok(net)
        } else {
            Err(SelectorError::NotPrefix {
                start: self.start_addr(),
                end: self.end_addr(),
            })
        }
    }

    /// The smallest prefix holding the whole address range. It is wider than
    /// the range when the range is not a prefix: never use it to decide
    /// what a peer is allowed to send without checking the range too.
    pub fn covering_net(&self) -> Result<IpNet, SelectorError> {
        let empty = || SelectorError::EmptyAddrRange {
            start: self.start_addr(),
            end: self.end_addr(),
        };
        match self.addrs {
            AddrRange::V4(s, e) => {
                let (s, e) = (u32::from(s), u32::from(e));
                if s > e {
                    return Err(empty());
                }
                let len = (s ^ e).leading_zeros() as u8;
                Ok(Ipv4Net::new(s.into(), len)
                    .map_err(|_| empty())?
                    .trunc()
                    .into())
            }
            AddrRange::V6(s, e) => {
                let (s, e) = (u128::from(s), u128::from(e));
                if s > e {
                    return Err(empty());
                }
                let len = (s ^ e).leading_zeros() as u8;
                Ok(Ipv6Net::new(s.into(), len)
                    .map_err(|_| empty())?
                    .trunc()
                    .into())
            }
        }
    }

    /// The port range, or an error for an empty (or OPAQUE 65535-0) range.
    pub fn ports(&self) -> Result<RangeInclusive<u16>, SelectorError> {
        if self.start_port > self.end_port {
            return Err(SelectorError::EmptyPortRange {
                start: self.start_port,
                end: self.end_port,
            });
        }
        Ok(self.start_port..=self.end_port)
    }
}

/// Builds the dataplane selector for traffic from `src` to `dst` (for the
/// initiator's outbound SA: `src` from TSi, `dst` from TSr). Exact: a range
/// that is not a prefix is [`SelectorError::NotPrefix`]. Protocol 0 on one
/// side takes the other side's protocol; two different non-zero protocols
/// are [`SelectorError::ProtoMismatch`].
pub fn selector_from_ts(
    src: &TrafficSelector,
    dst: &TrafficSelector,
) -> Result<Selector, SelectorError> {
    if src.ts_type() != dst.ts_type() {
        return Err(SelectorError::FamilyMismatch);
    }
    let proto = match (src.ip_proto, dst.ip_proto) {
        (0, 0) => None,
        (0, p) | (p, 0) => Some(p),
        (a, b) if a == b => Some(a),
        (a, b) => return Err(SelectorError::ProtoMismatch { src: a, dst: b }),
    };
    Ok(Selector {
        src: src.to_net()?,
        dst: dst.to_net()?,
        proto,
        src_ports: src.ports()?,
        dst_ports: dst.ports()?,
    })
}

/// The (source, destination) traffic selectors covering exactly `sel`.
pub fn ts_from_selector(sel: &Selector) -> (TrafficSelector, TrafficSelector) {
    let proto = sel.proto.unwrap_or(0);
    (
        TrafficSelector::from_net(sel.src, proto, sel.src_ports.clone()),
        TrafficSelector::from_net(sel.dst, proto, sel.dst_ports.clone()),
    )
}

impl Codec<'_> for TrafficSelector {
    fn encode(&self, out: &mut Vec<u8>) {
        let mut t = LengthPrefixed::new(out, 2, LengthWidth::U16);
        t.extend_from_slice(&[self.ts_type().0, self.ip_proto, 0, 0]);
        t.extend_from_slice(&self.start_port.to_be_bytes());
        t.extend_from_slice(&self.end_port.to_be_bytes());
        match self.addrs {
            AddrRange::V4(s, e) => {
                t.extend_from_slice(&s.octets());
                t.extend_from_slice(&e.octets());
            }
            AddrRange::V6(s, e) => {
                t.extend_from_slice(&s.octets());
                t.extend_from_slice(&e.octets());
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<TrafficSelector, DecodeError> {
        let ts_type = TsType(r.u8("traffic selector")?);
        let ip_proto = r.u8("traffic selector")?;
        let len = r.u16("traffic selector")? as usize;
        let want = match ts_type {
            TsType::TS_IPV4_ADDR_RANGE => 16,
            TsType::TS_IPV6_ADDR_RANGE => 40,
            other => return Err(DecodeError::BadTsType(other.0)),
        };
        if len != want {
            return Err(DecodeError::BadSubstructureLength {
                what: "traffic selector",
            });
        }
        let mut t = r.sub(len - 4, "traffic selector")?;
        let start_port = t.u16("traffic selector")?;
        let end_port = t.u16("traffic selector")?;
        let addrs = if ts_type == TsType::TS_IPV4_ADDR_RANGE {
            AddrRange::V4(
                t.take_array::<4>("traffic selector")?.into(),
                t.take_array::<4>("traffic selector")?.into(),
            )
        } else {
            AddrRange::V6(
                t.take_array::<16>("traffic selector")?.into(),
                t.take_array::<16>("traffic selector")?.into(),
            )
        };
        Ok(TrafficSelector {
            ip_proto,
            start_port,
            end_port,
            addrs,
        })
    }
}

impl Codec<'_> for TsPayload {
    fn encode(&self, out: &mut Vec<u8>) {
        debug_assert!(self.selectors.len() <= u8::MAX as usize);
        out.extend_from_slice(&[self.selectors.len() as u8, 0, 0, 0]);
        for s in &self.selectors {
            s.encode(out);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<TsPayload, DecodeError> {
        let count = r.u8("TS payload")?;
        r.bytes(3, "TS payload")?;
        let mut selectors = Vec::with_capacity(count as usize);
        while !r.is_empty() {
            selectors.push(TrafficSelector::read(r)?);
        }
        if selectors.len() != count as usize {
            return Err(DecodeError::CountMismatch {
                what: "traffic selector",
            });
        }
        if selectors.is_empty() {
            return Err(DecodeError::Empty("TS payload"));
        }
        Ok(TsPayload { selectors })
    }
}

// ------------------------------------------------------------------- SK

/// Encrypted and Authenticated payload (RFC 7296 §3.14), still sealed:
/// `body` = IV || ciphertext || ICV. `first_inner` is the type of the first
/// payload inside (the SK payload's Next Payload field). See
/// [`super::message`] for sealing and opening.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encrypted {
    pub first_inner: PayloadType,
    pub body: Vec<u8>,
}

// ------------------------------------------------------------ payload chain

/// One payload of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    Sa(SaPayload),
    Ke(KePayload),
    IdI(IdPayload),
    IdR(IdPayload),
    Cert(CertPayload),
    CertReq(CertPayload),
    Auth(AuthPayload),
    Nonce(Nonce),
    Notify(Notify),
    Delete(Delete),
    VendorId(VendorId),
    TsI(TsPayload),
    TsR(TsPayload),
    Encrypted(Encrypted),
    /// A payload type we do not implement, sent without the critical bit:
    /// RFC 7296 §2.5 says skip it. Kept so that the message round-trips.
    Unknown {
        ptype: PayloadType,
        critical: bool,
        body: Vec<u8>,
    },
}

/// Critical bit in the second byte of the generic payload header.
const CRITICAL: u8 = 0x80;
/// Generic payload header length (RFC 7296 §3.2).
pub const GENERIC_HEADER_LEN: usize = 4;

impl Payload {
    pub fn ptype(&self) -> PayloadType {
        match self {
            Payload::Sa(_) => PayloadType::SA,
            Payload::Ke(_) => PayloadType::KE,
            Payload::IdI(_) => PayloadType::IDi,
            Payload::IdR(_) => PayloadType::IDr,
            Payload::Cert(_) => PayloadType::CERT,
            Payload::CertReq(_) => PayloadType::CERTREQ,
            Payload::Auth(_) => PayloadType::AUTH,
            Payload::Nonce(_) => PayloadType::Nonce,
            Payload::Notify(_) => PayloadType::Notify,
            Payload::Delete(_) => PayloadType::Delete,
            Payload::VendorId(_) => PayloadType::VendorID,
            Payload::TsI(_) => PayloadType::TSi,
            Payload::TsR(_) => PayloadType::TSr,
            Payload::Encrypted(_) => PayloadType::SK,
            Payload::Unknown { ptype, .. } => *ptype,
        }
    }

    /// Appends the payload body (everything after the generic header).
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            Payload::Sa(p) => p.encode(out),
            Payload::Ke(p) => p.encode(out),
            Payload::IdI(p) | Payload::IdR(p) => p.encode(out),
            Payload::Cert(p) | Payload::CertReq(p) => p.encode(out),
            Payload::Auth(p) => p.encode(out),
            Payload::Nonce(p) => p.encode(out),
            Payload::Notify(p) => p.encode(out),
            Payload::Delete(p) => p.encode(out),
            Payload::VendorId(p) => p.encode(out),
            Payload::TsI(p) | Payload::TsR(p) => p.encode(out),
            Payload::Encrypted(p) => out.extend_from_slice(&p.body),
            Payload::Unknown { body, .. } => out.extend_from_slice(body),
        }
    }

    /// Parses one payload body. `next` is the generic header's Next Payload
    /// field, needed only by SK (where it names the first inner payload).
    fn read_body(
        ptype: PayloadType,
        critical: bool,
        next: PayloadType,
        r: &mut Reader<'_>,
    ) -> Result<Payload, DecodeError> {
        let p = match ptype {
            PayloadType::SA => Payload::Sa(SaPayload::read(r)?),
            PayloadType::KE => Payload::Ke(KePayload::read(r)?),
            PayloadType::IDi => Payload::IdI(IdPayload::read(r)?),
            PayloadType::IDr => Payload::IdR(IdPayload::read(r)?),
            PayloadType::CERT => Payload::Cert(CertPayload::read(r)?),
            PayloadType::CERTREQ => Payload::CertReq(CertPayload::read(r)?),
            PayloadType::AUTH => Payload::Auth(AuthPayload::read(r)?),
            PayloadType::Nonce => Payload::Nonce(Nonce::read(r)?),
            PayloadType::Notify => Payload::Notify(Notify::read(r)?),
            PayloadType::Delete => Payload::Delete(Delete::read(r)?),
            PayloadType::VendorID => Payload::VendorId(VendorId::read(r)?),
            PayloadType::TSi => Payload::TsI(TsPayload::read(r)?),
            PayloadType::TSr => Payload::TsR(TsPayload::read(r)?),
            PayloadType::SK => Payload::Encrypted(Encrypted {
                first_inner: next,
                body: r.rest().to_vec(),
            }),
            _ if critical => return Err(DecodeError::UnknownCritical(ptype.0)),
            _ => Payload::Unknown {
                ptype,
                critical,
                body: r.rest().to_vec(),
            },
        };
        Ok(p)
    }
}

/// Type of the first payload of a chain (NONE for an empty chain).
pub fn first_type(payloads: &[Payload]) -> PayloadType {
    payloads.first().map_or(PayloadType::NONE, Payload::ptype)
}

/// Appends a payload chain with generic headers; the last payload's Next
/// Payload field is `after` (NONE normally, SK when an SK payload follows).
/// An SK payload's Next Payload is its `first_inner`: it must be last.
pub fn encode_chain(payloads: &[Payload], after: PayloadType, out: &mut Vec<u8>) {
    for (i, p) in payloads.iter().enumerate() {
        let next = match p {
            Payload::Encrypted(e) => {
                debug_assert!(i + 1 == payloads.len(), "SK payload must be last");
                e.first_inner
            }
            _ => payloads.get(i + 1).map_or(after, Payload::ptype),
        };
        let critical = matches!(p, Payload::Unknown { critical: true, .. });
        let mut w = LengthPrefixed::new(out, 2, LengthWidth::U16);
        w.extend_from_slice(&[next.0, if critical { CRITICAL } else { 0 }, 0, 0]);
        p.encode_body(&mut w);
    }
}

/// Reads a payload chain starting with a payload of type `first` until Next
/// Payload is NONE or an SK payload has been read; the reader must then be
/// empty. Known payloads are parsed whatever their critical bit says
/// (RFC 7296 §3.2: the bit matters only to a receiver that does not know the
/// type).
pub fn decode_chain(first: PayloadType, r: &mut Reader<'_>) -> Result<Vec<Payload>, DecodeError> {
    let mut payloads = Vec::new();
    let mut ptype = first;
    while ptype != PayloadType::NONE {
        let next = PayloadType(r.u8("generic payload header")?);
        let critical = r.u8("generic payload header")? & CRITICAL != 0;
        let len = r.u16("generic payload header")? as usize;
        let body_len = len
            .checked_sub(GENERIC_HEADER_LEN)
            .ok_or(DecodeError::BadLength { payload: ptype })?;
        let mut body = r
            .sub(body_len, "payload")
            .map_err(|_| DecodeError::BadLength { payload: ptype })?;
        let p = Payload::read_body(ptype, critical, next, &mut body)?;
        body.expect_empty("payload body")?;
        let is_sk = matches!(p, Payload::Encrypted(_));
        payloads.push(p);
        if is_sk {
            if !r.is_empty() {
                return Err(DecodeError::SkNotLast);
            }
            return Ok(payloads);
        }
        ptype = next;
    }
    r.expect_empty("payload chain")?;
    Ok(payloads)
}
