//! ldap2exo: provisions Exchange Online recipients from an OpenLDAP directory.
//!
//! The modules follow the data flow `source → desired → plan → apply → report`: `source`
//! reads LDAP, `desired` maps entries to recipients (pure), `inventory` reads the tenant and
//! reconciles it with the state store, `plan` diffs (pure), `apply` executes, `report`
//! renders. Around them: `config`, `state`, `tenant` (the Graph and Exchange clients),
//! `cli`/`commands`, `audit` (read-only checks of the tenant), `telemetry`, `progress` and `notify` (failures mailed); `daemon` runs syncs on
//! a schedule. Planning is pure; I/O stays at the edges.

pub mod apply;
pub mod audit;
pub mod cli;
pub mod commands;
pub mod config;
pub mod connectors;
pub mod daemon;
pub mod desired;
pub mod ids;
pub mod inventory;
pub mod migration;
pub mod notify;
pub mod plan;
pub mod progress;
pub mod report;
pub mod secret;
pub mod shutdown;
pub mod source;
pub mod state;
pub mod telemetry;
pub mod tenant;
