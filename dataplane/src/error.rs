//! Drop reasons (one counter each) and set-up errors.
