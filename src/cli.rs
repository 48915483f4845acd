//! The command line, as INTERFACE.md promises it. Scripts depend on these names.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::report::Format;

#[derive(Debug, Parser)]
#[command(
    name = "ldap2exo",
    version,
    about = "Provision Exchange Online recipients from OpenLDAP"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "LDAP2EXO_CONFIG", default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,

    /// Log format: text or JSON lines on standard error, or the systemd journal.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (with a progress bar on a terminal).
    Text,
    /// One JSON object per line.
    Json,
    /// The systemd journal (falls back to text on standard error without a journal socket).
    Journald,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration, bind to LDAP, and list what is missing.
    CheckConfig,
    /// Read LDAP, plan against the state store, and report (with --dry-run, change nothing).
    Sync(SyncArgs),
    /// Write the plan to a file for review; change nothing.
    Plan(PlanArgs),
    /// Apply exactly a reviewed plan; refuse if LDAP, the state or the tenant moved since.
    Apply(ApplyArgs),
    /// Show the last runs, managed objects, pending deletions and quarantined entries.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct Selection {
    /// Provision on demand: just these uids; nobody else is planned, least of all as leaving.
    #[arg(long, num_args = 1.., value_name = "UID")]
    pub only: Vec<String>,

    /// Allow up to N removals (disable + delete) this run, beyond the configured caps.
    #[arg(long, value_name = "N")]
    pub max_deletes: Option<u32>,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Compute and show the plan; write nothing to the tenant.
    #[arg(long)]
    pub dry_run: bool,

    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Write the report here instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    #[command(flatten)]
    pub selection: Selection,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Where to write the JSON plan.
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,

    #[command(flatten)]
    pub selection: Selection,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The plan written by `plan --output`.
    #[arg(value_name = "PLAN")]
    pub plan: PathBuf,

    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Write the report here instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
    pub format: StatusFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    Text,
    Json,
}
