//! IKEv2 (RFC 7296): wire codec, payloads and messages.

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
