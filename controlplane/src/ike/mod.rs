//! IKEv2 (RFC 7296).

pub mod crypto;
pub mod dh;
pub mod keys;
pub mod prf;
