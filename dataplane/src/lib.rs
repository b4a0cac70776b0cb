//! espgate dataplane: zero-copy wire views, packet pool and bursts, ESP
//! (RFC 4303) with batched AES-NI crypto, SAs sharded by SPI, the crypto-ACL
//! SPD, and the run-to-completion workers with their I/O backends.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod acquire;
pub mod api;
pub mod buf;
pub mod crypto;
pub mod error;
pub mod esp;
pub mod io;
pub mod replay;
pub mod runtime;
pub mod sa;
pub mod sa_table;
pub mod spd;
pub mod wire;
pub mod worker;
