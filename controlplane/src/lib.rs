//! espgate control plane: IKEv2 (RFC 7296) codec, sans-IO state machine and
//! the daemon that drives it.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod config;
pub mod daemon;
pub mod error;
pub mod ike;
pub mod machine;
pub mod show;
pub mod timer;
