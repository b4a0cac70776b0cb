//! Benchmark helpers shared by the criterion benches.

pub mod loadtest;
