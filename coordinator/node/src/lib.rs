//! # ordo-node: one coordinator's logic, without I/O
//!
//! (Crate docs are written with the `Node` type below.)

pub mod storage;
