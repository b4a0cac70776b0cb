//! Anti-replay window (RFC 6479 bitmap).
