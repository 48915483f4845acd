//! The commands behind the CLI: each wires the pipeline `source → desired → plan → report`
//! together with the state store, and says how it ended as an exit code of INTERFACE.md.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::cli::{PlanArgs, Selection as SelectionArgs, StatusArgs, StatusFormat, SyncArgs};
use crate::config::{Config, ConfigError};
use crate::desired;
use crate::plan::{self, Plan, Scope, Verdict};
use crate::report::{self, Format};
use crate::source::{self, Selection, SourceError};
use crate::state::{Outcome, RunEnd, RunMode, RunScope, Stage, StateError, Store};

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
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
}

impl CommandError {
    pub fn exit(&self) -> Exit {
        match self {
            CommandError::Config(_) | CommandError::Usage(_) => Exit::Usage,
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

fn selection(args: &SelectionArgs) -> (Selection, Scope, RunScope) {
    if args.only.is_empty() {
        (Selection::All, Scope::Full, RunScope::Full)
    } else {
        (
            Selection::Only(args.only.clone()),
            Scope::Only,
            RunScope::Only,
        )
    }
}

/// Reads LDAP, maps, and plans; records the run (as a dry run or plan) in the state store.
/// Only the record of the run and the quarantine list are written: never the view of the
/// tenant, so the next run plans the same.
async fn compute(
    config: &Config,
    args: &SelectionArgs,
    mode: RunMode,
) -> Result<Plan, CommandError> {
    let (sel, scope, run_scope) = selection(args);
    let store = Store::open(&config.state.path).await?;
    let started = now()?;
    let run_id = store.begin_run(mode, run_scope, started).await?;

    // Entries are mapped as they arrive, so the raw directory is never held in memory.
    let mut mapper = desired::Mapper::new(config);
    if let Err(e) = source::read_each(&config.ldap, &sel, |entry| mapper.push(&entry)).await {
        let end = RunEnd {
            outcome: Outcome::Failed,
            source_count: None,
            verdict: None,
            summary: None,
            error: Some(e.to_string()),
        };
        store.finish_run(run_id, &end, now()?).await?;
        store.close().await;
        return Err(e.into());
    }
    let clock = std::time::Instant::now();
    let objects = store.objects().await?;
    let known: BTreeSet<_> = objects
        .iter()
        .filter(|o| o.stage != Stage::Deleted)
        .map(|o| o.anchor.clone())
        .collect();
    let desired = mapper.finish(&known);
    let mapped_ms = clock.elapsed().as_millis() as u64;
    let baseline = store.baseline().await?;
    let source_count = desired.source_count;
    let plan = plan::plan(plan::Input {
        desired,
        objects: &objects,
        baseline,
        scope,
        safety: &config.safety,
        max_deletes: args.max_deletes,
        now: started,
    });
    tracing::debug!(
        rss_mb = rss_mb(),
        mapped_ms,
        planned_ms = clock.elapsed().as_millis() as u64 - mapped_ms,
        "mapped and planned"
    );
    for q in &plan.quarantined {
        tracing::warn!(dn = %q.dn, field = %q.field, reason = %q.reason, "entry quarantined");
    }
    if scope == Scope::Full {
        store.replace_quarantine(&plan.quarantined, started).await?;
    }
    let blocked = plan.safety.verdict == Verdict::Blocked;
    let end = RunEnd {
        outcome: if blocked {
            Outcome::Blocked
        } else {
            Outcome::Ok
        },
        source_count: Some(source_count as u64),
        verdict: Some(if blocked { "blocked" } else { "ok" }),
        summary: Some(serde_json::to_value(&plan.summary).expect("summary serialises")),
        error: None,
    };
    store.finish_run(run_id, &end, now()?).await?;
    store.close().await;
    tracing::info!(
        run = run_id,
        entries = source_count,
        create = plan.summary.create,
        update = plan.summary.update,
        disable = plan.summary.disable,
        delete = plan.summary.delete,
        quarantined = plan.summary.quarantined,
        verdict = if blocked { "blocked" } else { "ok" },
        "plan computed"
    );
    Ok(plan)
}

fn write_out(output: Option<&Path>, text: &str) -> Result<(), CommandError> {
    match output {
        Some(path) => std::fs::write(path, text).map_err(|source| CommandError::Write {
            path: path.to_owned(),
            source,
        }),
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error worth a stack of messages.
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
            Ok(())
        }
    }
}

fn verdict_exit(plan: &Plan) -> Exit {
    match plan.safety.verdict {
        Verdict::Ok => Exit::Ok,
        Verdict::Blocked => Exit::Blocked,
    }
}

pub async fn sync(config: &Config, args: &SyncArgs) -> Result<Exit, CommandError> {
    if !args.dry_run {
        return Err(CommandError::Usage(
            "this version of ldap2exo does not write to the tenant yet: run `sync --dry-run`, or `plan --output FILE`".into(),
        ));
    }
    let plan = compute(config, &args.selection, RunMode::DryRun).await?;
    write_out(
        args.output.as_deref(),
        &report::render(&plan, args.format, "sync --dry-run"),
    )?;
    Ok(verdict_exit(&plan))
}

pub async fn plan(config: &Config, args: &PlanArgs) -> Result<Exit, CommandError> {
    let plan = compute(config, &args.selection, RunMode::Plan).await?;
    write_out(
        Some(&args.output),
        &report::render(&plan, Format::Json, "plan"),
    )?;
    eprint!(
        "{}",
        report::render(&plan, Format::Text, "plan")
            .lines()
            .last()
            .map(|l| format!("{l}\n"))
            .unwrap_or_default()
    );
    Ok(verdict_exit(&plan))
}

/// `check-config`: the file already parsed (or we would not be here); now bind to LDAP and
/// list what is missing for each capability.
pub async fn check_config(config: &Config) -> Result<Exit, CommandError> {
    println!("configuration: ok");
    let ldap = match source::check(&config.ldap).await {
        Ok(report) => {
            let who = report.bind_dn.as_deref().unwrap_or("anonymous");
            let paging = match report.paged_results {
                Some(true) => "paged results supported",
                Some(false) => "paged results NOT advertised",
                None => "paged results unknown",
            };
            println!(
                "ldap: ok ({}, {:?}, bound as {who}, base {} exists, {paging}{})",
                report.url,
                report.tls,
                report.base_dn,
                report
                    .vendor
                    .as_deref()
                    .map(|v| format!(", {v}"))
                    .unwrap_or_default()
            );
            for w in &report.warnings {
                println!("ldap: warning: {w}");
            }
            true
        }
        Err(e) => {
            println!("ldap: FAILED: {e}");
            false
        }
    };
    let t = &config.tenant;
    let mut missing = Vec::new();
    if t.tenant_id.is_none() {
        missing.push("tenant.tenant_id");
    }
    if t.client_id.is_none() {
        missing.push("tenant.client_id");
    }
    if t.client_secret.is_none() && t.certificate_file.is_none() {
        missing.push("tenant.client_secret_file (or LDAP2EXO__TENANT__CLIENT_SECRET, or tenant.certificate_file)");
    }
    if missing.is_empty() {
        println!("tenant: credentials configured");
    } else {
        println!(
            "tenant: not configured (dry runs work; writing to the tenant needs: {})",
            missing.join(", ")
        );
    }
    match Store::open(&config.state.path).await {
        Ok(store) => {
            store.close().await;
            println!("state: ok ({})", config.state.path.display());
        }
        Err(e) => {
            println!("state: FAILED: {e}");
            return Ok(Exit::Failed);
        }
    }
    Ok(if ldap { Exit::Ok } else { Exit::Failed })
}

pub async fn status(config: &Config, args: &StatusArgs) -> Result<Exit, CommandError> {
    let store = Store::open(&config.state.path).await?;
    let objects = store.objects().await?;
    let runs = store.runs(10).await?;
    let quarantine = store.quarantine().await?;
    store.close().await;
    let count = |s: Stage| objects.iter().filter(|o| o.stage == s).count();
    let pending: Vec<_> = objects
        .iter()
        .filter(|o| o.stage == Stage::Disabled)
        .collect();
    match args.format {
        StatusFormat::Json => {
            let v = json!({
                "state": config.state.path,
                "managed": {"active": count(Stage::Active), "disabled": count(Stage::Disabled), "deleted": count(Stage::Deleted)},
                "pending_deletions": pending.iter().map(|o| json!({
                    "anchor": o.anchor, "uid": o.uid, "disabled_at": o.disabled_at.map(plan::rfc3339),
                    "delete_due_at": o.delete_due_at.map(plan::rfc3339)})).collect::<Vec<_>>(),
                "runs": runs,
                "quarantined": quarantine,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&v).expect("status serialises")
            );
        }
        StatusFormat::Text => {
            println!("state store: {}", config.state.path.display());
            println!(
                "managed objects: {} active, {} disabled, {} deleted",
                count(Stage::Active),
                count(Stage::Disabled),
                count(Stage::Deleted)
            );
            if !pending.is_empty() {
                println!("\npending deletions ({}):", pending.len());
                for o in pending {
                    println!(
                        "  {:<16} due {}",
                        o.uid,
                        o.delete_due_at.map(plan::rfc3339).unwrap_or_default()
                    );
                }
            }
            println!("\nlast runs:");
            if runs.is_empty() {
                println!("  none yet");
            }
            for r in &runs {
                println!(
                    "  #{:<4} {} {:<8} {:<5} {:<8} {:>6} entries  {}",
                    r.id,
                    plan::rfc3339(r.started_at),
                    r.mode,
                    r.scope,
                    r.outcome,
                    r.source_count
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "-".into()),
                    r.error.as_deref().unwrap_or("")
                );
            }
            if !quarantine.is_empty() {
                println!("\nquarantined ({}):", quarantine.len());
                for q in &quarantine {
                    println!("  ! {}\n      {}: {}", q.dn, q.field, q.reason);
                }
            }
        }
    }
    Ok(Exit::Ok)
}

/// Resident memory in MiB (Linux; 0 elsewhere), for the debug log of large runs.
fn rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
        / 1_048_576
}
