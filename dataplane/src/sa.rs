//! A security association: constant part and mutable state.
