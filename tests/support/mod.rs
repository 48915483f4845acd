//! Shared helpers for the integration tests: a private slapd ([`slapd`]) and the `ldap2exo`
//! binary run against it with its own state store ([`cli`]), the tenant emulator
//! ([`emulator`]) and a local SMTP listener for the notification mails ([`smtp`]).
//!
//! Not every test module uses every helper.
#![allow(dead_code)]

pub mod cli;
pub mod emulator;
pub mod slapd;
pub mod smtp;
