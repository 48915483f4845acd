//! The command line, as the README's "Commands and exit codes" promises it. Scripts depend on
//! these names.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::report::Format;

#[derive(Debug, Parser)]
#[command(
    name = "ldap2exo",
    version,
    about = "Provision Exchange Online recipients from OpenLDAP",
    after_help = AFTER_HELP
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

const AFTER_HELP: &str = "\
Exit codes:
  0  finished; every action succeeded or is pending (dry run, plan: computed, verdict ok)
  1  some actions failed or met a conflict, or a fatal error (LDAP or tenant unreachable,
     bind refused, an incomplete read, a state store that cannot be opened);
     for `audit gal`: findings
  2  invalid command line or configuration (a missing plan file, an --output file that
     cannot be created, a missing state directory; the message names the key or file)
  3  the safety verdict is blocked: nothing was disabled or deleted (under --approve-removals:
     only the removals it let through were, the rest are held); or `apply` refused a
     stale plan (LDAP, the state store or the tenant moved since it was made; the message
     names each person and field): nothing was written to the tenant

Environment:
  LDAP2EXO_CONFIG          the configuration file (like --config)
  LDAP2EXO_LOG             log filter on standard error, e.g. warn, info, debug (or RUST_LOG)
  LDAP2EXO__SECTION__KEY   overrides a configuration key, e.g. LDAP2EXO__LDAP__PAGE_SIZE=1000;
                           secrets: LDAP2EXO__LDAP__BIND_PASSWORD, LDAP2EXO__TENANT__CLIENT_SECRET,
                           LDAP2EXO__MIGRATION__MASTER_PASSWORD";

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
    /// Validate the configuration, bind to LDAP, get tenant tokens, check the licence and the
    /// state store, and list what is missing.
    CheckConfig,
    /// Read LDAP, plan against the state store, and report (with --dry-run, change nothing).
    Sync(SyncArgs),
    /// Write the plan to a file for review; change nothing.
    Plan(PlanArgs),
    /// Apply exactly a reviewed plan; refuse if LDAP, the state or the tenant moved since.
    Apply(ApplyArgs),
    /// Show the last runs, managed objects, pending deletions and quarantined entries (reads
    /// only the state store; needs no secrets).
    Status(StatusArgs),
    /// Run a sync at each tick of `[daemon] schedule` until SIGTERM/SIGINT, serving /healthz,
    /// /readyz and /metrics on `[daemon] listen`.
    Daemon(DaemonArgs),
    /// Check the tenant against LDAP and report what is wrong, with the fix; writes nothing.
    Audit(AuditArgs),
    /// The four mail-flow connectors of the Linux hybrid: plan, apply, audit, and the Postfix
    /// side to match.
    Connectors(ConnectorsArgs),
    /// IMAP migration of a cohort to Exchange Online mailboxes: plan, start, status, cutover.
    #[command(subcommand)]
    Migrate(MigrateCommand),
    /// Bring back people ldap2exo deleted, from the tenant's recycle bin (within Microsoft's
    /// 30 days). Exit 0 when all were restored, 1 when one could not be.
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The uids to restore (as `status` and the reports name them).
    #[arg(required = true, num_args = 1.., value_name = "UID")]
    pub uids: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ConnectorsArgs {
    #[command(subcommand)]
    pub command: ConnectorsCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConnectorsCommand {
    /// Show how the tenant's connectors differ from `[connectors]` and the PowerShell each
    /// change stands for; change nothing. Exit 0 when nothing is to do, 1 otherwise.
    Plan {
        /// text (ends with the Postfix side to match) or json for scripts.
        #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
        format: StatusFormat,
    },
    /// Create or correct the connectors; connectors ldap2exo did not make are left alone
    /// unless named with --adopt. Exit 0 when all succeeded, 1 when one failed or was refused.
    Apply {
        /// Let ldap2exo take over (rename and reshape) this connector it did not make.
        #[arg(long, value_name = "NAME")]
        adopt: Vec<String>,
    },
    /// Check any tenant's connectors against the recommended shape: pass, warn or fail, with
    /// the reason and the fix. Exit 0 when nothing fails (warnings allowed), 1 otherwise.
    Audit {
        /// text (ends with the Postfix side to match), json for scripts, markdown for tickets.
        #[arg(long, value_enum, default_value_t = AuditFormat::Text)]
        format: AuditFormat,
    },
    /// Print only the Postfix snippet for the on-prem side (for redirection into a file).
    Postfix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuditFormat {
    Text,
    Json,
    Markdown,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// What `audit` checks (`audit gal`; more audits can be added beside it).
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Is everyone who should be in the GAL there, and right? Reads LDAP and every recipient
    /// of the tenant; exit 0 without findings, 1 with findings, 2 for bad configuration.
    Gal(AuditGalArgs),
}

#[derive(Debug, Args)]
pub struct AuditGalArgs {
    /// Report format: text for people, json for scripts, csv for spreadsheets, markdown for
    /// tickets.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Write the report here instead of standard output (created before anything is read).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Audit just these uids (stamped objects whose person is gone are then not looked for).
    #[arg(long, num_args = 1.., value_name = "UID")]
    pub only: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Run a sync at once on start, then follow the schedule.
    #[arg(long)]
    pub run_now: bool,
}

#[derive(Debug, Args)]
pub struct Selection {
    /// Provision on demand: just these uids; nobody else is planned, least of all as leaving.
    #[arg(long, num_args = 1.., value_name = "UID")]
    pub only: Vec<String>,

    /// Allow up to N removals (disable + delete) this run, beyond the configured caps and
    /// rolling windows; more than N planned blocks them all.
    #[arg(long, value_name = "N")]
    pub max_deletes: Option<u32>,

    #[command(flatten)]
    pub approval: Approval,
}

/// `--approve-removals N --scope S`: the operator approves up to N removals within S.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct Approval {
    /// Approve up to N removals (disable + delete) within --scope this run, beyond the
    /// configured caps and rolling windows. The first N in scope (in plan order) go; the rest,
    /// and every removal outside the scope, are held back and the run ends blocked (exit 3).
    #[arg(
        long,
        value_name = "N",
        requires = "scope",
        conflicts_with = "max_deletes"
    )]
    pub approve_removals: Option<u32>,

    /// What --approve-removals covers: a DN (a leaver whose last-seen DN is it or below it) or
    /// an LDAP filter starting with `(` (a leaver whose entry under ldap.base_dn matches it; a
    /// leaver whose entry is gone from LDAP can only be matched by a DN).
    #[arg(
        long,
        value_name = "DN|FILTER",
        requires = "approve_removals",
        value_parser = parse_scope
    )]
    pub scope: Option<String>,
}

/// Checks a `--scope`: an LDAP filter that parses, or something shaped like a DN.
fn parse_scope(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.starts_with('(') {
        if crate::source::filter::is_valid(s) {
            return Ok(s.to_owned());
        }
        return Err(format!("{s} is not a valid LDAP filter (RFC 4515)"));
    }
    if s.contains('=') && !s.starts_with('=') {
        return Ok(s.to_owned());
    }
    Err(format!(
        "{s:?} is neither a DN (like ou=staff,dc=example,dc=edu) nor an LDAP filter in parentheses"
    ))
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Compute and show the plan; write nothing to the tenant.
    #[arg(long)]
    pub dry_run: bool,

    /// Report format: text for people, json for scripts, csv for spreadsheets, markdown for
    /// tickets.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Write the report here instead of standard output (created before anything is done).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    #[command(flatten)]
    pub selection: Selection,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Where to write the JSON plan (created before anything is read).
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

    /// Continue an apply of this plan that was interrupted (signal, kill, network loss):
    /// accepted when all that moved since the plan was made is what that apply did.
    #[arg(long)]
    pub resume: bool,

    /// Report format: text for people, json for scripts, csv for spreadsheets, markdown for
    /// tickets.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Write the report here instead of standard output (created before anything is done).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// The plan carries its approval; given here, both must equal the plan's.
    #[command(flatten)]
    pub approval: ApplyApproval,
}

/// `apply`'s `--approve-removals N --scope S`: optional, checked against the plan's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct ApplyApproval {
    /// Must equal the plan's `safety.approval.removals`.
    #[arg(long, value_name = "N", requires = "scope")]
    pub approve_removals: Option<u32>,

    /// Must equal the plan's `safety.approval.scope`.
    #[arg(
        long,
        value_name = "DN|FILTER",
        requires = "approve_removals",
        value_parser = parse_scope
    )]
    pub scope: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Output format: text for people, json (complete lists, RFC 3339 times) for scripts.
    #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
    pub format: StatusFormat,

    /// How many of the most recent runs to show.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub runs: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    Text,
    Json,
}

// ---- `migrate` (IMAP migration) ----

/// `migrate plan|start|status|cutover`.
#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Who is in the cohort and whether it could start; changes nothing (exit 1 when someone
    /// cannot).
    Plan(MigratePlanArgs),
    /// Licenses the cohort's mailboxes through the sync path, with a forwarding to on-prem,
    /// then creates the IMAP endpoint and the migration batches. Repeat it to continue.
    Start(MigrateStartArgs),
    /// The migration batches and users as Exchange Online reports them.
    Status(MigrateStatusArgs),
    /// Prints (or with --apply writes) the LDIF that points each forward at the routing
    /// address.
    Cutover(MigrateCutoverArgs),
}

/// Who migrates: uids, or an LDAP filter ANDed with the configured one.
#[derive(Debug, Args)]
pub struct Cohort {
    #[arg(long, num_args = 1.., value_name = "UID", required_unless_present = "filter", conflicts_with = "filter")]
    pub only: Vec<String>,

    /// An LDAP filter, e.g. `(ou=Physics)`; combined with `ldap.filter`.
    #[arg(long, value_name = "LDAP-FILTER")]
    pub filter: Option<String>,
}

#[derive(Debug, Args)]
pub struct MigratePlanArgs {
    #[command(flatten)]
    pub cohort: Cohort,

    #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
    pub format: StatusFormat,
}

#[derive(Debug, Args)]
pub struct MigrateStartArgs {
    #[command(flatten)]
    pub cohort: Cohort,

    /// The migration batch's name (default `ldap2exo-<date>-<time>`); `-2`, `-3`, … are
    /// added when the cohort needs several batches or the name is taken.
    #[arg(long, value_name = "NAME")]
    pub batch: Option<String>,
}

#[derive(Debug, Args)]
pub struct MigrateStatusArgs {
    #[arg(long, value_name = "NAME")]
    pub batch: Option<String>,

    #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
    pub format: StatusFormat,
}

#[derive(Debug, Args)]
pub struct MigrateCutoverArgs {
    #[arg(long, num_args = 1.., value_name = "UID", required = true)]
    pub only: Vec<String>,

    /// Write the LDIF to LDAP with `migration.write_bind_dn` (else it is only printed).
    #[arg(long)]
    pub apply: bool,

    /// Cut over people whose migration is not synced yet.
    #[arg(long)]
    pub force: bool,
}
