//! Integration tests of ldap2exo, in one test binary (one build, one link).
//!
//! `support` holds the shared helpers (a private slapd, …); each other module tests one
//! area against real servers or emulators.

#[path = "../support/mod.rs"]
mod support;

mod audit;
mod bill;
mod cli;
mod connectors;
mod daemon;
mod directory_shapes;
mod dry_run;
mod handovers;
mod incremental;
mod inventory;
mod licences;
mod logs;
mod migrate;
mod notify;
mod packaging;
mod plans;
mod real_tenant;
mod restore;
mod rollover;
mod source;
mod state;
mod sync;
mod tenant;
