//! Shared helpers for the integration tests: a private slapd (see [`slapd`]).
//!
//! Not every test module uses every helper.
#![allow(dead_code)]

pub mod cli;
pub mod slapd;

pub use slapd::{Slapd, SlapdOptions};
