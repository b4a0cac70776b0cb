//! RFC 4303 tunnel-mode encap/decap of one SA group.
