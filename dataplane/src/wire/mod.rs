//! Zero-copy views over packet bytes (smoltcp `wire` style).
