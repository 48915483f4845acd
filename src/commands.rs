//! The commands behind the CLI: each wires the pipeline `source → desired → plan → report`
//! together with the state store, and says how it ended as an exit code of INTERFACE.md.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::apply;
use crate::cli::{
    ApplyArgs, PlanArgs, Selection as SelectionArgs, StatusArgs, StatusFormat, SyncArgs,
};
use crate::config::{Config, ConfigError, Credential};
use crate::desired;
use crate::ids::Anchor;
use crate::inventory::{self, Inventory};
use crate::plan::{self, Plan, Scope, Verdict};
use crate::report::{self, Format};
use crate::source::{self, Selection, SourceError};
use crate::state::{ManagedObject, Outcome, RunEnd, RunMode, RunScope, Stage, StateError, Store};
use crate::tenant::{Tenant, TenantError};

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
}

impl CommandError {
    pub fn exit(&self) -> Exit {
        match self {
            CommandError::Config(_) | CommandError::Usage(_) => Exit::Usage,
            CommandError::Tenant(TenantError::Config(_)) => Exit::Usage,
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

/// A computed plan with what applying it needs.
struct Computed {
    plan: Plan,
    store: Store,
    run_id: i64,
    started: i64,
    source_count: usize,
    /// Connected and read when credentials are configured (always for a real run).
    tenant: Option<(Tenant, Inventory)>,
    /// State rows the tenant contradicted (adopted, missing, changed), as reconciled: a real
    /// run records them before applying, so each action starts from the tenant's truth.
    drifted: Vec<ManagedObject>,
}

/// Whether the configuration can reach the tenant at all.
fn tenant_configured(config: &Config) -> bool {
    config.tenant.tenant_id.is_some() && config.tenant.credential_kind().is_ok()
}

async fn fail_run(
    store: &Store,
    run_id: i64,
    error: &dyn std::fmt::Display,
) -> Result<(), CommandError> {
    let end = RunEnd {
        outcome: Outcome::Failed,
        source_count: None,
        verdict: None,
        summary: None,
        error: Some(error.to_string()),
    };
    store.finish_run(run_id, &end, now()?).await?;
    store.close().await;
    Ok(())
}

/// Reads LDAP and, when it can be reached, the tenant; reconciles the state store's view with
/// what the tenant really holds (drift, objects adopted after a lost state store); maps and
/// plans. The run is recorded as started; the caller finishes it.
async fn compute(
    config: &Config,
    args: &SelectionArgs,
    mode: RunMode,
) -> Result<Computed, CommandError> {
    let (sel, scope, run_scope) = selection(args);
    // A dry run reads the tenant too when it can: it must plan what a real run would. A
    // real run cannot go without it; its configuration is checked before anything is read.
    let tenant = match mode == RunMode::Apply || tenant_configured(config) {
        true => Some(Tenant::connect(&config.tenant)?),
        false => None,
    };
    let store = Store::open(&config.state.path).await?;
    let started = now()?;
    let run_id = store.begin_run(mode, run_scope, started).await?;

    // Entries are mapped as they arrive, so the raw directory is never held in memory.
    let mut mapper = desired::Mapper::new(config);
    if let Err(e) = source::read_each(&config.ldap, &sel, |entry| mapper.push(&entry)).await {
        fail_run(&store, run_id, &e).await?;
        return Err(e.into());
    }

    let mut objects = store.objects().await?;
    let mut drift = Vec::new();
    let mut drifted = Vec::new();
    let tenant = match tenant {
        Some(tenant) => match inventory::read_with_licences(
            &tenant,
            &config.tenant.anchor_attribute,
            config.tenant.mailbox_sku.as_deref(),
        )
        .await
        {
            Ok(inventory) => {
                let reconciled = inventory::reconcile(&objects, &inventory, started);
                objects = reconciled.objects;
                drift = reconciled.drift;
                let touched: BTreeSet<&Anchor> = drift.iter().map(|d| &d.anchor).collect();
                drifted = objects
                    .iter()
                    .filter(|o| touched.contains(&o.anchor))
                    .cloned()
                    .collect();
                Some((tenant, inventory))
            }
            Err(e) => {
                fail_run(&store, run_id, &e).await?;
                return Err(e.into());
            }
        },
        None => {
            tracing::info!(
                "no tenant credentials configured: planning against the state store alone"
            );
            None
        }
    };

    let clock = std::time::Instant::now();
    let known: BTreeSet<_> = objects
        .iter()
        .filter(|o| o.stage != Stage::Deleted)
        .map(|o| o.anchor.clone())
        .collect();
    let desired = mapper.finish(&known);
    let mapped_ms = clock.elapsed().as_millis() as u64;
    let baseline = store.baseline().await?;
    let journaled_creates = store.journaled_creates().await?;
    let source_count = desired.source_count;
    let mut plan = plan::plan(plan::Input {
        desired,
        objects: &objects,
        baseline,
        scope,
        safety: &config.safety,
        max_deletes: args.max_deletes,
        tenant: tenant.as_ref().map(|(_, inventory)| inventory),
        journaled_creates: &journaled_creates,
        now: started,
    });
    plan.source.only = args.only.clone();
    plan.drift = drift
        .into_iter()
        .map(|d| plan::DriftNote {
            anchor: d.anchor,
            uid: d.uid,
            kind: d.kind.as_str().to_owned(),
            detail: d.detail,
        })
        .collect();
    tracing::debug!(
        rss_mb = rss_mb(),
        mapped_ms,
        planned_ms = clock.elapsed().as_millis() as u64 - mapped_ms,
        "mapped and planned"
    );
    for q in &plan.quarantined {
        tracing::warn!(dn = %q.dn, field = %q.field, reason = %q.reason, "entry quarantined");
    }
    for d in &plan.drift {
        tracing::warn!(uid = %d.uid, kind = %d.kind, detail = %d.detail, "tenant drifted from the state store");
    }
    if scope == Scope::Full {
        store.replace_quarantine(&plan.quarantined, started).await?;
    }
    tracing::info!(
        run = run_id,
        entries = source_count,
        create = plan.summary.create,
        update = plan.summary.update,
        convert = plan.summary.convert,
        disable = plan.summary.disable,
        delete = plan.summary.delete,
        purge = plan.summary.purge,
        held = plan.summary.held,
        quarantined = plan.summary.quarantined,
        verdict = if plan.safety.verdict == Verdict::Blocked {
            "blocked"
        } else {
            "ok"
        },
        "plan computed"
    );
    Ok(Computed {
        plan,
        store,
        run_id,
        started,
        source_count,
        tenant,
        drifted,
    })
}

/// Records a dry run or plan as finished.
async fn finish_planned(c: Computed) -> Result<Plan, CommandError> {
    let blocked = c.plan.safety.verdict == Verdict::Blocked;
    let end = RunEnd {
        outcome: if blocked {
            Outcome::Blocked
        } else {
            Outcome::Ok
        },
        source_count: Some(c.source_count as u64),
        verdict: Some(if blocked { "blocked" } else { "ok" }),
        summary: Some(serde_json::to_value(&c.plan.summary).expect("summary serialises")),
        error: None,
    };
    c.store.finish_run(c.run_id, &end, now()?).await?;
    c.store.close().await;
    Ok(c.plan)
}

/// Writes a report to `output`, or to standard output. A failed write (a full disk, an
/// unwritable path, EIO) is [`CommandError::Write`] naming the file or "standard output", so
/// the run exits non-zero instead of leaving a truncated report behind. The one exception is
/// a closed pipe on standard output (`ldap2exo … | head`): the reader is gone, the report ends
/// quietly.
fn write_out(
    output: Option<&Path>,
    report: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<(), CommandError> {
    use std::io::Write;
    match output {
        Some(path) => {
            let written = std::fs::File::create(path).and_then(|f| {
                let mut w = std::io::BufWriter::new(f);
                report(&mut w)?;
                w.flush()?;
                // Surface errors the kernel reports only on sync (NFS, quota).
                w.get_ref().sync_data()
            });
            written.map_err(|source| CommandError::Write {
                path: path.to_owned(),
                source,
            })
        }
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let written = report(&mut out).and_then(|()| out.flush());
            stdout_outcome(written)
        }
    }
}

/// The outcome of writing a report to standard output: a closed pipe is fine, any other
/// error is the command's.
fn stdout_outcome(written: std::io::Result<()>) -> Result<(), CommandError> {
    match written {
        Err(e) if !is_broken_pipe(&e) => Err(CommandError::Write {
            path: PathBuf::from("standard output"),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// EPIPE, also when a serializer wrapped it in another error.
fn is_broken_pipe(e: &std::io::Error) -> bool {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        return true;
    }
    // `io::Error::source` skips the wrapped error itself; `get_ref` gives it.
    let mut next: Option<&(dyn std::error::Error + 'static)> = e
        .get_ref()
        .map(|inner| inner as &(dyn std::error::Error + 'static));
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return is_broken_pipe(io);
        }
        next = err.source();
    }
    false
}

fn verdict_exit(plan: &Plan) -> Exit {
    match plan.safety.verdict {
        Verdict::Ok => Exit::Ok,
        Verdict::Blocked => Exit::Blocked,
    }
}

pub async fn sync(config: &Config, args: &SyncArgs) -> Result<Exit, CommandError> {
    if args.dry_run {
        let plan = finish_planned(compute(config, &args.selection, RunMode::DryRun).await?).await?;
        write_out(args.output.as_deref(), |w| {
            report::write(w, &plan, None, args.format, "sync --dry-run")
        })?;
        return Ok(verdict_exit(&plan));
    }
    let computed = compute(config, &args.selection, RunMode::Apply).await?;
    execute(
        config,
        computed,
        args.format,
        args.output.as_deref(),
        "sync",
    )
    .await
}

/// Applies a computed plan and records the run: the shared end of `sync` and `apply`.
async fn execute(
    config: &Config,
    c: Computed,
    format: Format,
    output: Option<&Path>,
    title: &str,
) -> Result<Exit, CommandError> {
    let Some((tenant, inventory)) = &c.tenant else {
        unreachable!("a real run always connects to the tenant");
    };
    let blocked = c.plan.safety.verdict == Verdict::Blocked;
    for obj in &c.drifted {
        c.store.upsert_object(obj).await?;
    }
    let ctx = apply::Context {
        tenant,
        store: &c.store,
        config,
        inventory,
        run_id: c.run_id,
        now: c.started,
        allow_removals: !blocked,
        concurrency: config.tenant.concurrency.max(1) as usize,
        visibility_wait: std::time::Duration::from_secs(u64::from(
            config.tenant.propagation_wait_seconds,
        )),
    };
    let clock = std::time::Instant::now();
    let results = apply::apply(&c.plan, &ctx).await?;
    let failed = results
        .iter()
        .filter(|r| {
            matches!(
                r.outcome,
                apply::Outcome::Failed(_) | apply::Outcome::Conflict(_)
            )
        })
        .count();
    let stats = tenant.stats();
    tracing::info!(
        actions = results.len(),
        failed,
        requests = stats.requests(),
        retries = stats.retries(),
        throttled = stats.throttled(),
        elapsed_ms = clock.elapsed().as_millis() as u64,
        "plan applied"
    );
    let outcome = match (blocked, failed) {
        (true, _) => Outcome::Blocked,
        (false, 0) => Outcome::Ok,
        (false, f) if f == results.len() => Outcome::Failed,
        _ => Outcome::Partial,
    };
    let end = RunEnd {
        outcome,
        source_count: Some(c.source_count as u64),
        verdict: Some(if blocked { "blocked" } else { "ok" }),
        summary: Some(serde_json::to_value(&c.plan.summary).expect("summary serialises")),
        error: (failed > 0).then(|| format!("{failed} actions failed")),
    };
    c.store.finish_run(c.run_id, &end, now()?).await?;
    c.store.close().await;
    write_out(output, |w| {
        report::write(w, &c.plan, Some(&results), format, title)
    })?;
    Ok(if blocked {
        Exit::Blocked
    } else if failed > 0 {
        Exit::Failed
    } else {
        Exit::Ok
    })
}

pub async fn plan(config: &Config, args: &PlanArgs) -> Result<Exit, CommandError> {
    let plan = finish_planned(compute(config, &args.selection, RunMode::Plan).await?).await?;
    write_out(Some(&args.output), |w| {
        report::write(w, &plan, None, Format::Json, "plan")
    })?;
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

/// `apply plan.json`: applies exactly the reviewed plan, after checking that planning now
/// gives the same actions (LDAP, the state store and the tenant have not moved since).
pub async fn apply_file(config: &Config, args: &ApplyArgs) -> Result<Exit, CommandError> {
    let text = std::fs::read_to_string(&args.plan).map_err(|source| CommandError::Read {
        path: args.plan.clone(),
        source,
    })?;
    let reviewed: Plan = serde_json::from_str(&text).map_err(|e| {
        CommandError::Usage(format!(
            "{} is not an ldap2exo plan: {e}",
            args.plan.display()
        ))
    })?;
    let selection = SelectionArgs {
        only: reviewed.source.only.clone(),
        max_deletes: reviewed.safety.approved_removals,
    };
    let computed = compute(config, &selection, RunMode::Apply).await?;
    if computed.plan.actions != reviewed.actions
        || computed.plan.safety.verdict != reviewed.safety.verdict
    {
        let why = "LDAP, the state store or the tenant changed since the plan was made; review a new plan";
        fail_run(&computed.store, computed.run_id, &why).await?;
        return Err(CommandError::Stale(format!(
            "{}: {why}",
            args.plan.display()
        )));
    }
    execute(
        config,
        computed,
        args.format,
        args.output.as_deref(),
        "apply",
    )
    .await
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
        missing.push("tenant.tenant_id".to_owned());
    }
    if t.client_id.is_none() && t.credential_kind().ok() != Some(Credential::ManagedIdentity) {
        missing.push("tenant.client_id".to_owned());
    }
    if let Err(e) = t.credential_kind() {
        missing.push(e);
    }
    if t.mailbox_sku.is_none() {
        missing.push(
            "tenant.mailbox_sku (to license people whose mailbox is in Exchange Online)".to_owned(),
        );
    }
    let mut tenant_ok = true;
    if t.tenant_id.is_some() && t.credential_kind().is_ok() {
        // Gets a token for each audience and reads the domains through both APIs.
        let checked = async {
            let tenant = Tenant::connect(t)?;
            let check = tenant.check().await?;
            if let Some(sku) = &t.mailbox_sku {
                let found = tenant.graph().resolve_sku(sku).await?;
                return Ok::<_, TenantError>((check, Some(found)));
            }
            Ok((check, None))
        };
        match checked.await {
            Ok((check, sku)) => {
                println!(
                    "tenant: ok ({:?} credential, tokens for Graph and Exchange, {} domains, {} accepted domains)",
                    check.credential,
                    check.domains.len(),
                    check.accepted_domains.len()
                );
                for d in &t.accepted_domains {
                    if !check
                        .accepted_domains
                        .iter()
                        .any(|a| a.eq_ignore_ascii_case(d))
                    {
                        tenant_ok = false;
                        println!(
                            "tenant: FAILED: {d} (tenant.accepted_domains) is not an accepted domain of the tenant"
                        );
                    }
                }
                if let Some(sku) = sku {
                    println!(
                        "tenant: licence {} has {} units free",
                        sku.sku_part_number,
                        sku.available()
                    );
                }
            }
            Err(e) => {
                tenant_ok = false;
                println!("tenant: FAILED: {e}");
            }
        }
    }
    if !missing.is_empty() {
        println!(
            "tenant: missing (dry runs work without): {}",
            missing.join("; ")
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
    Ok(if ldap && tenant_ok {
        Exit::Ok
    } else {
        Exit::Failed
    })
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

#[cfg(test)]
mod report_write_tests {
    use super::*;

    #[test]
    fn a_full_disk_is_an_error_naming_the_file() {
        let full = Path::new("/dev/full");
        if full.exists() {
            let err = write_out(Some(full), |w| w.write_all(&[b'x'; 100_000])).unwrap_err();
            assert!(err.to_string().contains("/dev/full"), "{err}");
            assert_eq!(err.exit(), Exit::Failed);
        }
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no/such/dir/report.json");
        let err = write_out(Some(&missing), |w| w.write_all(b"{}")).unwrap_err();
        assert!(err.to_string().contains("report.json"), "{err}");
    }

    #[test]
    fn standard_output_errors_count_except_a_closed_pipe() {
        use std::io::{Error, ErrorKind};
        assert!(stdout_outcome(Ok(())).is_ok());
        assert!(stdout_outcome(Err(Error::from(ErrorKind::BrokenPipe))).is_ok());
        // Wrapped by a serializer.
        let wrapped = Error::other(Error::from(ErrorKind::BrokenPipe));
        assert!(stdout_outcome(Err(wrapped)).is_ok());
        let err = stdout_outcome(Err(Error::from_raw_os_error(28))).unwrap_err();
        assert!(err.to_string().contains("standard output"), "{err}");
        assert_eq!(err.exit(), Exit::Failed);
    }
}
