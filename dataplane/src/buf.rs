//! Frames with headroom/tailroom, a fixed pool, and bursts of up to 64.
