//! Packets waiting for an SA: bounded, time-limited, Acquire deduplicated.
