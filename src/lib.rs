//! ldap2exo: provisions Exchange Online recipients from an OpenLDAP directory.
//!
//! The modules follow the data flow `source → desired → plan → report` (and, next, `apply`),
//! with `config`, `state`, `cli`/`commands` and `telemetry` around it. Planning is pure;
//! I/O stays at the edges.

pub mod apply;
pub mod cli;
pub mod commands;
pub mod config;
pub mod desired;
pub mod ids;
pub mod plan;
pub mod report;
pub mod secret;
pub mod source;
pub mod state;
pub mod telemetry;
pub mod tenant;
