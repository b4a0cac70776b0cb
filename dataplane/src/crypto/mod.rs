//! ESP crypto: per-SA cipher state and batched seal/open.
