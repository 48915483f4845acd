//! The commands behind the CLI: each wires the pipeline `source → desired → plan → apply →
//! report` together with the state store, and says how it ended as an exit code of
//! INTERFACE.md.
//!
//! - `run`: `sync`, `plan` and `apply`, the commands that plan (and apply) a run;
//! - `check`: `check-config`;
//! - `status`: `status`, which reads only the state store;
//! - `audit`: `audit gal`, which reads LDAP and the tenant and writes nothing;
//! - `connectors`: `connectors plan|apply|audit|postfix`, the mail-flow connectors;
//! - `migrate`: `migrate plan|start|status|cutover`, IMAP migration of a cohort;
//! - `restore`: `restore <uid>...`, people ldap2exo deleted, back from the recycle bin;
//! - `output`: where reports go, and what a failed write means.

mod approval;
mod audit;
mod check;
mod connectors;
mod migrate;
mod output;
mod partial;
mod quiet;
mod restore;
mod run;
mod status;

pub use audit::audit;
pub use check::check_config;
pub use connectors::connectors;
pub use migrate::migrate;
pub use restore::restore;
pub use run::{Finished, TenantWatch, apply_file, plan, sync};
pub(crate) use run::{real_run, run_span};
pub use status::status;

use std::path::{Path, PathBuf};

use crate::apply;
use crate::config::{Config, ConfigError};
use crate::source::SourceError;
use crate::state::StateError;
use crate::tenant::TenantError;

/// Exit codes of INTERFACE.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Failed = 1,
    Usage = 2,
    Blocked = 3,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("reading LDAP failed: {0}")]
    Source(#[from] SourceError),
    /// `migrate cutover --apply`: a modify refused or not answered.
    #[error("writing LDAP failed: {0}")]
    LdapWrite(SourceError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tenant(#[from] TenantError),
    #[error(transparent)]
    Apply(#[from] apply::ApplyError),
    #[error("refusing to apply {0}")]
    Stale(String),
    /// The `--output` file cannot be created: found before anything is read or applied.
    #[error("cannot write the report to {path}: {source}; nothing was done")]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Another run (or daemon) holds the state store, or its lock file cannot be used.
    #[error("cannot start: {0}")]
    Lock(#[from] crate::state::lock::LockError),
    /// A stop (SIGTERM/SIGINT) came before anything was applied.
    #[error("{0}")]
    Interrupted(String),
    #[error(transparent)]
    Daemon(#[from] crate::daemon::DaemonError),
}

impl From<crate::inventory::incremental::ReadError> for CommandError {
    fn from(e: crate::inventory::incremental::ReadError) -> Self {
        match e {
            crate::inventory::incremental::ReadError::Tenant(e) => CommandError::Tenant(e),
            crate::inventory::incremental::ReadError::State(e) => CommandError::State(e),
        }
    }
}

impl From<crate::source::incremental::ReadError> for CommandError {
    fn from(e: crate::source::incremental::ReadError) -> Self {
        match e {
            crate::source::incremental::ReadError::Source(e) => CommandError::Source(e),
            crate::source::incremental::ReadError::State(e) => CommandError::State(e),
        }
    }
}

/// `daemon`: runs until SIGTERM/SIGINT; a clean stop is exit 0.
pub async fn daemon(
    config: &Config,
    args: &crate::cli::DaemonArgs,
    stop: &crate::shutdown::Stop,
) -> Result<Exit, CommandError> {
    crate::daemon::run(config, args.run_now, stop).await?;
    Ok(Exit::Ok)
}

impl CommandError {
    pub fn exit(&self) -> Exit {
        match self {
            CommandError::Config(_) | CommandError::Usage(_) => Exit::Usage,
            // The plan file named on the command line: missing, unreadable or not a plan.
            CommandError::Read { .. } | CommandError::Output { .. } => Exit::Usage,
            CommandError::State(e) if e.is_configuration() => Exit::Usage,
            CommandError::Daemon(e) if e.is_configuration() => Exit::Usage,
            CommandError::Tenant(TenantError::Config(_)) => Exit::Usage,
            // A safety gate: the reviewed plan no longer holds, nothing was written.
            CommandError::Stale(_) => Exit::Blocked,
            _ => Exit::Failed,
        }
    }
}

/// The clock, in Unix seconds. `LDAP2EXO_NOW` (Unix seconds or RFC 3339) replaces it, so a
/// grace period can be tested without waiting 30 days.
pub fn now() -> Result<i64, CommandError> {
    if let Ok(v) = std::env::var("LDAP2EXO_NOW") {
        if let Ok(secs) = v.parse::<i64>() {
            return Ok(secs);
        }
        return humantime::parse_rfc3339(&v)
            .map(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0)
            })
            .map_err(|e| {
                CommandError::Usage(format!(
                    "LDAP2EXO_NOW=`{v}` is neither Unix seconds nor RFC 3339: {e}"
                ))
            });
    }
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0))
}

pub fn load_config(path: &Path) -> Result<Config, CommandError> {
    Ok(Config::load(path, std::env::vars())?)
}

/// The configuration for `status`, which reads only the state store and so needs no
/// secrets (see [`Config::load_without_secrets`]).
pub fn load_config_without_secrets(path: &Path) -> Result<Config, CommandError> {
    Ok(Config::load_without_secrets(path, std::env::vars())?)
}
