//! Ordo's coordinator node runtime.
