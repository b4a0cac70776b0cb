//! Security policy database: the crypto ACL compiled to a classifier.

/// An immutable SPD snapshot (placeholder until the classifier lands).
#[derive(Debug, Default)]
pub struct Spd {}
