//! IKEv2 (RFC 7296): wire codec, payloads and messages.
//!
//! * [`codec`]: `Reader` (bounded, never overruns), the `Codec` trait and the
//!   `LengthPrefixed` writer.
//! * [`payload`]: IANA numbers as open newtypes and one type per payload.
//! * [`message`]: header, whole messages, SK sealing/opening, UDP 4500
//!   framing.
//!
//! ```
//! use espgate_controlplane::ike::payload::*;
//! use espgate_controlplane::ike::{Flags, Header, Message};
//!
//! let request = Message {
//!     header: Header::new(ExchangeType::IKE_SA_INIT, [7; 8], [0; 8], 0, Flags::INITIATOR),
//!     payloads: vec![
//!         Payload::Sa(SaPayload {
//!             proposals: vec![Proposal {
//!                 num: 1,
//!                 protocol: ProtocolId::IKE,
//!                 spi: vec![],
//!                 transforms: vec![
//!                     Transform::new(TransformType::ENCR, TransformId::ENCR_AES_CBC).with_key_len(256),
//!                     Transform::new(TransformType::PRF, TransformId::PRF_HMAC_SHA2_256),
//!                     Transform::new(TransformType::INTEG, TransformId::AUTH_HMAC_SHA2_256_128),
//!                     Transform::new(TransformType::DH, TransformId::MODP_2048),
//!                 ],
//!             }],
//!         }),
//!         Payload::Ke(KePayload { group: 14, data: vec![0; 256] }),
//!         Payload::Nonce(Nonce(vec![1; 32])),
//!     ],
//! };
//! let datagram = request.encode();
//! match Message::decode(&datagram) {
//!     Ok(m) => assert_eq!(m, request),
//!     // Answer with e.to_notify() (inside a protected
//!     // exchange) or drop, as RFC 7296 §2.21 says.
//!     Err(e) => panic!("{e}"),
//! }
//! ```

pub mod codec;
pub mod message;
pub mod payload;

pub mod child;
pub mod crypto;
pub mod dh;
pub mod keys;
pub mod prf;
pub mod sa;

pub use message::{Flags, Header, Message, SkLayout, SkOpenError, SkOpener, SkSealer};
pub use payload::{
    AuthMethod, ExchangeType, IdType, NotifyType, Payload, PayloadType, ProtocolId, TransformId,
    TransformType, TsType,
};

// Kept apart from the block above so that merges adding modules there do
// not conflict with it.
pub use codec::{Codec, Reader};
