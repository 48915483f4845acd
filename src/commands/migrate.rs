//! `migrate plan|start|status|cutover`: IMAP migration of a cohort to Exchange Online
//! mailboxes (TENANT_FACTS, "IMAP migration"). The cohort is recorded in the state store;
//! its mailboxes are made by the ordinary sync path (`real_run` for exactly these uids), which
//! then plans them as mailboxes forwarding to on-prem until cutover; the endpoint and the
//! batches are created here. The IMAP master password goes only into the batch CSV.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use serde::Serialize;
use serde_json::{Value, json};

use super::run::{dry_plan_migrating, real_run};
use super::{CommandError, Exit, TenantWatch, now};
use crate::cli::{
    Cohort, MigrateCommand, MigrateCutoverArgs, MigratePlanArgs, MigrateStartArgs,
    MigrateStatusArgs, Selection as SelectionArgs, StatusFormat,
};
use crate::config::{Config, MigrationConfig};
use crate::desired::{self, Kind};
use crate::ids::Anchor;
use crate::migration::{self, ForwardChange};
use crate::plan::Op;
use crate::shutdown::Stop;
use crate::source::{self, Selection};
use crate::state::{MigrationStage, Store};
use crate::tenant::Tenant;
use crate::tenant::migration::ImapEndpoint;

/// The IMAP migration endpoint ldap2exo creates and uses.
const ENDPOINT_NAME: &str = "ldap2exo-imap";

/// `Get-MigrationUser` statuses after which a cutover loses no mail the first pass copied
/// (the last incremental pass follows the cutover).
const SYNCED: [&str; 3] = ["Synced", "Completed", "IncrementalSynced"];

pub async fn migrate(
    config: &Config,
    command: &MigrateCommand,
    stop: &Stop,
) -> Result<Exit, CommandError> {
    let m = config.migration.as_ref().ok_or_else(|| {
        CommandError::Usage(
            "configuration key `migration`: the [migration] section is missing (imap_server, master_user, master_password_file, onprem_routing_domain)".into(),
        )
    })?;
    match command {
        MigrateCommand::Plan(a) => plan(config, m, a, stop).await,
        MigrateCommand::Start(a) => start(config, m, a, stop).await,
        MigrateCommand::Status(a) => status(config, a).await,
        MigrateCommand::Cutover(a) => cutover(config, m, a).await,
    }
}

/// A person of the cohort as LDAP maps them.
#[derive(Debug, Clone)]
struct Member {
    anchor: Anchor,
    uid: String,
    dn: String,
    alias: String,
    primary: String,
    /// LDAP already forwards into the tenant: nothing to migrate.
    in_tenant: bool,
}

/// The cohort: who LDAP has, who it quarantines (uid or DN, reason), and asked uids it lacks.
struct CohortRead {
    members: Vec<Member>,
    quarantined: Vec<(String, String)>,
    missing: Vec<String>,
}

/// Reads the cohort from LDAP: `--only` uids or `--filter` ANDed with `ldap.filter`.
async fn read_cohort(
    config: &Config,
    only: &[String],
    filter: Option<&str>,
) -> Result<CohortRead, CommandError> {
    let (ldap, sel) = match filter {
        Some(f) => {
            let f = f.trim();
            if !(f.starts_with('(') && f.ends_with(')')) {
                return Err(CommandError::Usage(format!(
                    "--filter `{f}` is not an LDAP filter in parentheses"
                )));
            }
            let mut ldap = config.ldap.clone();
            ldap.filter = format!("(&{}{f})", config.ldap.filter);
            (ldap, Selection::All)
        }
        None => (config.ldap.clone(), Selection::Only(only.to_vec())),
    };
    let entries = source::read(&ldap, &sel).await?;
    let d = desired::build(&entries, config, &BTreeSet::new());
    let members: Vec<Member> = d
        .recipients
        .into_iter()
        .map(|r| Member {
            in_tenant: r.kind == Kind::Mailbox,
            anchor: r.anchor,
            uid: r.uid,
            dn: r.dn,
            alias: r.alias,
            primary: r.primary.to_string(),
        })
        .collect();
    let quarantined: Vec<(String, String)> = d
        .quarantined
        .iter()
        .map(|q| {
            (
                q.uid.clone().unwrap_or_else(|| q.dn.clone()),
                format!("{}: {}", q.field, q.reason),
            )
        })
        .collect();
    let found: BTreeSet<String> = members
        .iter()
        .map(|m| m.uid.to_lowercase())
        .chain(quarantined.iter().map(|(u, _)| u.to_lowercase()))
        .collect();
    let missing = only
        .iter()
        .filter(|u| !found.contains(&u.to_lowercase()))
        .cloned()
        .collect();
    Ok(CohortRead {
        members,
        quarantined,
        missing,
    })
}

async fn read_cohort_args(config: &Config, c: &Cohort) -> Result<CohortRead, CommandError> {
    read_cohort(config, &c.only, c.filter.as_deref()).await
}

/// One person's verdict in `migrate plan`.
#[derive(Debug, Serialize)]
struct PlanLine {
    uid: String,
    /// `mail_user_to_license`, `not_provisioned`, `mailbox_exists`, `mailbox_provisioning`,
    /// `in_batch`, `already_in_tenant`, `quarantined`, `held`, `not_in_ldap`.
    state: String,
    can_start: bool,
    detail: String,
}

#[derive(Debug, Serialize)]
struct PlanReport {
    people: Vec<PlanLine>,
    licences_needed: Option<u32>,
    licences_free: Option<u32>,
    batches: usize,
    csv_bytes: usize,
    can_start: bool,
}

async fn plan(
    config: &Config,
    m: &MigrationConfig,
    args: &MigratePlanArgs,
    stop: &Stop,
) -> Result<Exit, CommandError> {
    let cohort = read_cohort_args(config, &args.cohort).await?;
    let mut lines: Vec<PlanLine> = Vec::new();
    let line = |uid: &str, state: &str, can: bool, detail: String| PlanLine {
        uid: uid.to_owned(),
        state: state.into(),
        can_start: can,
        detail,
    };
    for u in &cohort.missing {
        lines.push(line(
            u,
            "not_in_ldap",
            false,
            "no LDAP entry matches".into(),
        ));
    }
    for (u, why) in &cohort.quarantined {
        lines.push(line(u, "quarantined", false, why.clone()));
    }
    let anchors: BTreeSet<Anchor> = cohort.members.iter().map(|p| p.anchor.clone()).collect();
    let uids: Vec<String> = cohort.members.iter().map(|p| p.uid.clone()).collect();
    let (the_plan, inventory) = if uids.is_empty() {
        (None, None)
    } else {
        let sel = SelectionArgs {
            only: uids,
            max_deletes: None,
        };
        let (p, i) = dry_plan_migrating(config, &sel, &anchors, "migrate plan", stop).await?;
        (Some(p), i)
    };
    let recorded = {
        crate::state::require_directory(&config.state.path)?;
        let store = Store::open(&config.state.path).await?;
        let people = store.migration_people().await?;
        store.close().await;
        people
    };
    let mut rows = Vec::new();
    for p in &cohort.members {
        if let Some(batch) = recorded
            .get(&p.anchor)
            .filter(|r| r.stage.is_migrating())
            .and_then(|r| r.batch.as_deref())
        {
            lines.push(line(
                &p.uid,
                "in_batch",
                true,
                format!("already in migration batch {batch}"),
            ));
            continue;
        }
        if p.in_tenant {
            lines.push(line(
                &p.uid,
                "already_in_tenant",
                false,
                "LDAP already forwards into the tenant: nothing to migrate".into(),
            ));
            continue;
        }
        let action = the_plan
            .as_ref()
            .and_then(|pl| pl.actions.iter().find(|a| a.anchor == p.anchor));
        let seen = inventory.as_ref().and_then(|i| i.managed.get(&p.anchor));
        let l = match (action, seen) {
            (Some(a), _) if a.held.is_some() => {
                let why = a
                    .held
                    .as_ref()
                    .map(|h| h.reason.clone())
                    .unwrap_or_default();
                line(&p.uid, "held", false, why)
            }
            (Some(a), _) if a.op == Op::Create => line(
                &p.uid,
                "not_provisioned",
                true,
                "created as a licensed mailbox".into(),
            ),
            (Some(a), _) if a.op == Op::Convert => line(
                &p.uid,
                "mail_user_to_license",
                true,
                "the MailUser is licensed in place".into(),
            ),
            (_, Some(t)) if t.mailbox_pending => line(
                &p.uid,
                "mailbox_provisioning",
                true,
                "licensed; Exchange is still provisioning the mailbox".into(),
            ),
            _ => line(&p.uid, "mailbox_exists", true, "the mailbox exists".into()),
        };
        if l.can_start
            && let Some(pw) = &m.master_password
        {
            rows.push(migration::csv_row(&p.primary, &p.uid, &m.master_user, pw));
        }
        lines.push(l);
    }
    let batches = migration::split(rows, migration::MAX_ROWS, migration::MAX_BYTES);
    let csv_bytes = batches
        .iter()
        .map(|b| migration::csv(b).expose().len())
        .sum();
    let bill = the_plan.as_ref().and_then(|p| p.licences.clone());
    let short = bill.as_ref().is_some_and(|b| b.short() > 0);
    let report = PlanReport {
        can_start: !lines.is_empty() && lines.iter().all(|l| l.can_start) && !short,
        licences_needed: bill.as_ref().map(|b| b.needed),
        licences_free: bill.as_ref().map(|b| b.free),
        batches: batches.len(),
        csv_bytes,
        people: lines,
    };
    let mut out = std::io::stdout().lock();
    let w = |e: std::io::Error| CommandError::Write {
        path: "standard output".into(),
        source: e,
    };
    match args.format {
        StatusFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &report).expect("the report serialises");
            writeln!(out).map_err(w)?;
        }
        StatusFormat::Text => {
            for l in &report.people {
                let mark = if l.can_start { "ok  " } else { "STOP" };
                writeln!(out, "{mark} {:<20} {:<22} {}", l.uid, l.state, l.detail).map_err(w)?;
            }
            if let (Some(n), Some(f)) = (report.licences_needed, report.licences_free) {
                writeln!(out, "Licences: {n} needed, {f} free").map_err(w)?;
            }
            writeln!(
                out,
                "Batches: {} ({} bytes of CSV)",
                report.batches, report.csv_bytes
            )
            .map_err(w)?;
            writeln!(
                out,
                "{}",
                if report.can_start {
                    "The cohort can start."
                } else {
                    "The cohort cannot start as it is."
                }
            )
            .map_err(w)?;
        }
    }
    Ok(if report.can_start {
        Exit::Ok
    } else {
        Exit::Failed
    })
}

/// The on-prem forwarding a migrating person's mailbox must carry.
fn onprem_target(m: &MigrationConfig, uid: &str) -> String {
    format!("{uid}@{}", m.onprem_routing_domain).to_ascii_lowercase()
}

fn strip_smtp(v: &str) -> &str {
    v.split_once(':')
        .filter(|(p, _)| p.eq_ignore_ascii_case("smtp"))
        .map_or(v, |(_, a)| a)
}

async fn start(
    config: &Config,
    m: &MigrationConfig,
    args: &MigrateStartArgs,
    stop: &Stop,
) -> Result<Exit, CommandError> {
    if let Some(b) = &args.batch
        && (b.trim().is_empty() || b.chars().count() > 60)
    {
        // Exchange allows 64 characters (New-MigrationBatch -Name); 4 are kept for `-<n>`.
        return Err(CommandError::Usage(format!(
            "--batch `{b}`: a batch name has 1 to 60 characters"
        )));
    }
    let cohort = read_cohort_args(config, &args.cohort).await?;
    let mut failed = false;
    for u in &cohort.missing {
        eprintln!("ldap2exo: {u}: no LDAP entry matches; left out");
        failed = true;
    }
    for (u, why) in &cohort.quarantined {
        eprintln!("ldap2exo: {u}: quarantined ({why}); left out");
        failed = true;
    }
    let members: Vec<&Member> = cohort
        .members
        .iter()
        .filter(|p| {
            if p.in_tenant {
                eprintln!(
                    "ldap2exo: {}: LDAP already forwards into the tenant; nothing to migrate",
                    p.uid
                );
            }
            !p.in_tenant
        })
        .collect();
    if members.is_empty() {
        eprintln!("ldap2exo: nobody to migrate");
        return Ok(Exit::Failed);
    }
    let started = now()?;
    crate::state::require_directory(&config.state.path)?;
    {
        let store = Store::open(&config.state.path).await?;
        for p in &members {
            store
                .start_migration(&p.anchor, &p.uid, &p.primary, started)
                .await?;
        }
        store.close().await;
    }
    tracing::info!(
        people = members.len(),
        "migration cohort recorded; provisioning the mailboxes"
    );
    // Step 1: the ordinary sync path, for exactly these people.
    let sel = SelectionArgs {
        only: members.iter().map(|p| p.uid.clone()).collect(),
        max_deletes: None,
    };
    let finished = real_run(config, &sel, "migrate start", stop, &TenantWatch::new()).await?;
    if finished.exit() != Exit::Ok {
        failed = true;
        eprintln!(
            "ldap2exo: provisioning did not finish for everyone (see the log); run migrate start again"
        );
    }
    // Step 2: the endpoint and the batches, for those whose mailbox is ready.
    let store = Store::open(&config.state.path).await?;
    let people = store.migration_people().await?;
    let tenant = Tenant::connect(&config.tenant)?;
    let ex = tenant.exchange();
    let mut ready: Vec<&Member> = Vec::new();
    for p in &members {
        let row = people.get(&p.anchor);
        if let Some(batch) = row.and_then(|r| r.batch.as_deref()) {
            println!("{}: already in migration batch {batch}", p.uid);
            continue;
        }
        let id = store
            .object(&p.anchor)
            .await?
            .and_then(|o| o.tenant_object_id);
        let Some(id) = id else {
            println!("{}: not provisioned yet; run migrate start again", p.uid);
            failed = true;
            continue;
        };
        let mailbox = ex.get_mailbox(&id).await?;
        let is_mailbox = mailbox
            .as_ref()
            .and_then(|v| v.get("RecipientTypeDetails"))
            .and_then(Value::as_str)
            == Some("UserMailbox");
        let forwarding = mailbox
            .as_ref()
            .and_then(|v| v.get("ForwardingSmtpAddress"))
            .and_then(Value::as_str)
            .map(|f| strip_smtp(f).to_ascii_lowercase());
        if !is_mailbox {
            println!(
                "{}: the mailbox is still being provisioned (minutes after licensing); run migrate start again",
                p.uid
            );
            failed = true;
        } else if forwarding.as_deref() != Some(onprem_target(m, &p.uid).as_str()) {
            println!(
                "{}: the forwarding to on-prem is not set yet; run migrate start again",
                p.uid
            );
            failed = true;
        } else {
            ready.push(p);
        }
    }
    if !ready.is_empty() {
        let password = m.master_password.as_ref().ok_or_else(|| {
            CommandError::Usage(
                "configuration key `migration.master_password_file`: no IMAP master password"
                    .into(),
            )
        })?;
        ensure_endpoint(ex, m).await?;
        let rows = ready
            .iter()
            .map(|p| migration::csv_row(&p.primary, &p.uid, &m.master_user, password))
            .collect();
        let chunks = migration::split(rows, migration::MAX_ROWS, migration::MAX_BYTES);
        let base = args
            .batch
            .clone()
            .unwrap_or_else(|| default_batch_name(started));
        let taken: BTreeSet<String> = ex
            .migration_batches(None)
            .await?
            .iter()
            .filter_map(|b| b.get("Identity").and_then(Value::as_str))
            .map(str::to_ascii_lowercase)
            .collect();
        let names = free_names(&base, chunks.len(), &taken);
        let mut offset = 0;
        for (chunk, name) in chunks.iter().zip(&names) {
            let csv = migration::csv(chunk);
            ex.new_migration_batch(name, ENDPOINT_NAME, &csv).await?;
            let now = now()?;
            for p in &ready[offset..offset + chunk.len()] {
                store.set_migration_batch(&p.anchor, name, now).await?;
                println!("{}: in migration batch {name}", p.uid);
            }
            tracing::info!(batch = %name, people = chunk.len(), "migration batch created and started");
            offset += chunk.len();
        }
    }
    store.close().await;
    Ok(if failed { Exit::Failed } else { Exit::Ok })
}

fn default_batch_name(now: i64) -> String {
    let t = crate::plan::rfc3339(now);
    // 2026-09-01T00:00:00Z → ldap2exo-20260901-000000
    let digits: String = t.chars().filter(char::is_ascii_digit).collect();
    format!(
        "ldap2exo-{}-{}",
        &digits[..8],
        &digits[8..14.min(digits.len())]
    )
}

/// `count` batch names from `base` that no batch in `taken` (lower case) has.
fn free_names(base: &str, count: usize, taken: &BTreeSet<String>) -> Vec<String> {
    let mut names = Vec::new();
    let mut n = 0usize;
    while names.len() < count {
        let name = if n == 0 && count == 1 {
            base.to_owned()
        } else {
            migration::batch_name(base, n, usize::MAX)
        };
        n += 1;
        if !taken.contains(&name.to_ascii_lowercase()) {
            names.push(name);
        }
    }
    names
}

/// Creates the IMAP endpoint unless one of that name exists.
async fn ensure_endpoint(
    ex: &crate::tenant::Exchange,
    m: &MigrationConfig,
) -> Result<(), CommandError> {
    let exists = ex.migration_endpoints().await?.iter().any(|e| {
        ["Identity", "Name"].iter().any(|k| {
            e.get(*k)
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case(ENDPOINT_NAME))
        })
    });
    if !exists {
        ex.new_imap_endpoint(&ImapEndpoint {
            name: ENDPOINT_NAME,
            remote_server: &m.imap_server,
            port: m.imap_port,
            security: m.security.as_cmdlet(),
        })
        .await?;
        tracing::info!(endpoint = ENDPOINT_NAME, server = %m.imap_server, "IMAP migration endpoint created");
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct StatusUser {
    email: String,
    uid: Option<String>,
    stage: Option<MigrationStage>,
    batch: Option<String>,
    status: Option<String>,
    items_synced: Option<u64>,
    error: Option<String>,
}

async fn status(config: &Config, args: &MigrateStatusArgs) -> Result<Exit, CommandError> {
    let store = Store::open(&config.state.path).await?;
    let people = store.migration_people().await?;
    store.close().await;
    let tenant = Tenant::connect(&config.tenant)?;
    let ex = tenant.exchange();
    let batches = ex.migration_batches(args.batch.as_deref()).await?;
    let users = ex.migration_users(args.batch.as_deref()).await?;
    let by_email: BTreeMap<String, _> = people
        .values()
        .map(|p| (p.email.to_ascii_lowercase(), p))
        .collect();
    let mut rows: Vec<StatusUser> = Vec::new();
    let mut seen = BTreeSet::new();
    for u in &users {
        let email = u
            .get("Identity")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_ascii_lowercase();
        let p = by_email.get(&email);
        seen.insert(email.clone());
        rows.push(StatusUser {
            uid: p.map(|p| p.uid.clone()),
            stage: p.map(|p| p.stage),
            batch: u
                .get("BatchId")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| p.and_then(|p| p.batch.clone())),
            status: u.get("Status").and_then(Value::as_str).map(str::to_owned),
            items_synced: u.get("SyncedItemCount").and_then(Value::as_u64),
            error: u
                .get("ErrorSummary")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            email,
        });
    }
    for p in people.values() {
        let in_scope = args.batch.is_none() || p.batch.as_deref() == args.batch.as_deref();
        if in_scope && !seen.contains(&p.email.to_ascii_lowercase()) {
            rows.push(StatusUser {
                email: p.email.clone(),
                uid: Some(p.uid.clone()),
                stage: Some(p.stage),
                batch: p.batch.clone(),
                status: None,
                items_synced: None,
                error: None,
            });
        }
    }
    let batch_rows: Vec<Value> = batches
        .iter()
        .map(|b| {
            json!({
                "name": b.get("Identity"),
                "status": b.get("Status"),
                "total": b.get("TotalCount"),
                "synced": b.get("SyncedCount"),
                "failed": b.get("FailedCount"),
            })
        })
        .collect();
    let mut out = std::io::stdout().lock();
    let w = |e: std::io::Error| CommandError::Write {
        path: "standard output".into(),
        source: e,
    };
    match args.format {
        StatusFormat::Json => {
            let v = json!({"batches": batch_rows, "users": rows});
            serde_json::to_writer_pretty(&mut out, &v).expect("serialises");
            writeln!(out).map_err(w)?;
        }
        StatusFormat::Text => {
            writeln!(out, "Batches:").map_err(w)?;
            for b in &batch_rows {
                let s = |k: &str| match &b[k] {
                    Value::Null => "-".to_owned(),
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                };
                writeln!(
                    out,
                    "  {:<28} {:<12} total {} synced {} failed {}",
                    s("name"),
                    s("status"),
                    s("total"),
                    s("synced"),
                    s("failed")
                )
                .map_err(w)?;
            }
            writeln!(out, "People:").map_err(w)?;
            for r in &rows {
                writeln!(
                    out,
                    "  {:<16} {:<32} {:<10} {:<28} {:<12} items {}{}",
                    r.uid.as_deref().unwrap_or("-"),
                    r.email,
                    r.stage.map_or("-", MigrationStage::as_str),
                    r.batch.as_deref().unwrap_or("-"),
                    r.status.as_deref().unwrap_or("-"),
                    r.items_synced.map_or("-".into(), |n| n.to_string()),
                    r.error
                        .as_deref()
                        .map(|e| format!(" error: {e}"))
                        .unwrap_or_default()
                )
                .map_err(w)?;
            }
        }
    }
    Ok(Exit::Ok)
}

async fn cutover(
    config: &Config,
    m: &MigrationConfig,
    args: &MigrateCutoverArgs,
) -> Result<Exit, CommandError> {
    if args.apply && m.write_bind_dn.is_none() {
        return Err(CommandError::Usage(
            "configuration key `migration.write_bind_dn`: --apply writes to LDAP and needs a write bind (else leave out --apply and apply the printed LDIF yourself)".into(),
        ));
    }
    let forward = &config.ldap.attributes.forward;
    if forward.is_empty() {
        return Err(CommandError::Usage(
            "configuration key `ldap.attributes.forward`: no forward attribute is mapped".into(),
        ));
    }
    let cohort = read_cohort(config, &args.only, None).await?;
    let mut refused: Vec<String> = Vec::new();
    for u in &cohort.missing {
        refused.push(format!("{u}: no LDAP entry matches"));
    }
    for (u, why) in &cohort.quarantined {
        refused.push(format!("{u}: quarantined ({why})"));
    }
    let store = Store::open(&config.state.path).await?;
    let people = store.migration_people().await?;
    let statuses: BTreeMap<String, String> = if args.force {
        BTreeMap::new()
    } else {
        let tenant = Tenant::connect(&config.tenant)?;
        tenant
            .exchange()
            .migration_users(None)
            .await?
            .iter()
            .filter_map(|u| {
                Some((
                    u.get("Identity")?.as_str()?.to_ascii_lowercase(),
                    u.get("Status")?.as_str()?.to_owned(),
                ))
            })
            .collect()
    };
    let mut changes: Vec<(Anchor, ForwardChange)> = Vec::new();
    for p in &cohort.members {
        let Some(row) = people.get(&p.anchor).filter(|r| r.stage.is_migrating()) else {
            refused.push(format!("{}: not migrating (migrate start first)", p.uid));
            continue;
        };
        if !args.force {
            let st = statuses.get(&row.email.to_ascii_lowercase());
            if !st.is_some_and(|s| SYNCED.contains(&s.as_str())) {
                refused.push(format!(
                    "{}: migration not synced (status {}); wait, or use --force",
                    p.uid,
                    st.map_or("none: not in a batch", String::as_str)
                ));
                continue;
            }
        }
        changes.push((
            p.anchor.clone(),
            ForwardChange {
                dn: p.dn.clone(),
                attribute: forward.clone(),
                value: format!("{}@{}", p.alias, config.tenant.routing_domain),
            },
        ));
    }
    for r in &refused {
        eprintln!("ldap2exo: cutover refused for {r}");
    }
    let only: Vec<ForwardChange> = changes.iter().map(|(_, c)| c.clone()).collect();
    print!("{}", migration::ldif(&only));
    if args.apply && !changes.is_empty() {
        let mut ldap = config.ldap.clone();
        ldap.bind_dn = m.write_bind_dn.clone();
        ldap.bind_password = m.write_bind_password.clone();
        let mods: Vec<(String, String, String)> = only
            .iter()
            .map(|c| (c.dn.clone(), c.attribute.clone(), c.value.clone()))
            .collect();
        source::replace_values(&ldap, &mods).await?;
        let now = now()?;
        for (anchor, c) in &changes {
            store.mark_cutover(anchor, now).await?;
            tracing::info!(dn = %c.dn, forward = %c.value, "cut over: the LDAP forward points into the tenant");
        }
    }
    store.close().await;
    Ok(if refused.is_empty() {
        Exit::Ok
    } else {
        Exit::Failed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_names_avoid_taken_ones() {
        let taken: BTreeSet<String> = ["cohort".to_owned(), "cohort-2".to_owned()].into();
        assert_eq!(free_names("fresh", 1, &taken), ["fresh"]);
        assert_eq!(free_names("cohort", 1, &taken), ["cohort-3"]);
        assert_eq!(free_names("cohort", 2, &taken), ["cohort-1", "cohort-3"]);
        assert_eq!(
            default_batch_name(1_788_220_800),
            "ldap2exo-20260901-000000"
        );
    }
}
