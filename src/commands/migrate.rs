//! `migrate plan|start|status|cutover`: IMAP migration of a cohort to Exchange Online
//! mailboxes (TENANT_FACTS, "IMAP migration"). The cohort's mailboxes are made by the
//! ordinary sync path for exactly these uids, planned as migrating (mailboxes forwarding to
//! on-prem until cutover); the state store records only those whose actions succeeded. The
//! endpoint and the batches are created here; cutover rewrites the LDAP forward and runs the
//! same sync path for those it cut over. The IMAP master password goes only into the batch
//! CSV.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use serde::Serialize;
use serde_json::{Value, json};

use super::run::{dry_plan_migrating, real_run, real_run_migrating};
use super::{CommandError, Exit, TenantWatch, now};
use crate::apply::Outcome;
use crate::cli::{
    Cohort, MigrateCommand, MigrateCutoverArgs, MigratePlanArgs, MigrateStartArgs,
    MigrateStatusArgs, Selection as SelectionArgs, StatusFormat,
};
use crate::config::{Config, MigrationConfig};
use crate::desired::{self, Kind};
use crate::ids::Anchor;
use crate::inventory::TenantObject;
use crate::migration::{self, ForwardChange};
use crate::plan::Op;
use crate::shutdown::Stop;
use crate::source::{self, Selection};
use crate::state::{MigrationPerson, MigrationStage, Store};
use crate::tenant::Tenant;
use crate::tenant::migration::ImapEndpoint;

/// The IMAP migration endpoint ldap2exo creates and uses.
const ENDPOINT_NAME: &str = "ldap2exo-imap";

/// `Get-MigrationUser` statuses reached after the first full sync, after which a cutover
/// loses no mail the first pass copied (the incremental passes follow the cutover). Names of
/// the `MigrationUserStatus` enumeration (Microsoft Learn, exchange-server-api jj939831).
const SYNCED: [&str; 7] = [
    "Synced",
    "IncrementalSyncing",
    "IncrementalSynced",
    "Completing",
    "CompletionSynced",
    "Completed",
    "CompletedWithWarnings",
];

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
        MigrateCommand::Status(a) => status(config, m, a).await,
        MigrateCommand::Cutover(a) => cutover(config, m, a, stop).await,
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
    /// The LDAP forward today (outside the tenant): cutover replaces it.
    forward: Option<String>,
    /// LDAP already forwards into the tenant: nothing to migrate.
    in_tenant: bool,
}

/// The cohort: who LDAP has, who it quarantines or marks as leaving (uid or DN, reason), and
/// asked uids it lacks.
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
            forward: r.forward.map(|f| f.to_string()),
            anchor: r.anchor,
            uid: r.uid,
            dn: r.dn,
            alias: r.alias,
            primary: r.primary.to_string(),
        })
        .collect();
    // Quarantined entries, and those the disabled rule marks as leaving: nobody to migrate.
    let quarantined: Vec<(String, String)> = d
        .quarantined
        .iter()
        .map(|q| {
            (
                q.uid.clone().unwrap_or_else(|| q.dn.clone()),
                format!("{}: {}", q.field, q.reason),
            )
        })
        .chain(d.disabled.iter().map(|x| {
            (
                x.uid.clone().unwrap_or_else(|| x.dn.clone()),
                "ldap.rules.disabled_filter: leaving".to_owned(),
            )
        }))
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

impl PlanLine {
    fn new(uid: &str, state: &str, can_start: bool, detail: &str) -> Self {
        PlanLine {
            uid: uid.to_owned(),
            state: state.to_owned(),
            can_start,
            detail: detail.to_owned(),
        }
    }
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
    let to_migrate = cohort.members.iter().filter(|p| !p.in_tenant).count();
    if let Some(why) = too_large(to_migrate, m) {
        eprintln!("ldap2exo: {why}");
        return Ok(Exit::Blocked);
    }
    {
        let tenant = Tenant::connect(&config.tenant)?;
        check_routing_domain(tenant.exchange(), m).await?;
    }
    let mut lines: Vec<PlanLine> = Vec::new();
    for u in &cohort.missing {
        lines.push(PlanLine::new(
            u,
            "not_in_ldap",
            false,
            "no LDAP entry matches",
        ));
    }
    for (u, why) in &cohort.quarantined {
        lines.push(PlanLine::new(u, "quarantined", false, why));
    }
    let anchors: BTreeSet<Anchor> = cohort.members.iter().map(|p| p.anchor.clone()).collect();
    let uids: Vec<String> = cohort.members.iter().map(|p| p.uid.clone()).collect();
    let (the_plan, inventory) = if uids.is_empty() {
        (None, None)
    } else {
        let sel = SelectionArgs {
            only: uids,
            max_deletes: None,
            approval: Default::default(),
        };
        let (p, i) = dry_plan_migrating(config, &sel, &anchors, "migrate plan", stop).await?;
        (Some(p), i)
    };
    let recorded = {
        let store = Store::open(&config.state.path).await?;
        let people = store.migration_people().await?;
        store.close().await;
        people
    };
    let mut rows = Vec::new();
    for p in &cohort.members {
        let action = the_plan
            .as_ref()
            .and_then(|pl| pl.actions.iter().find(|a| a.anchor == p.anchor));
        let seen = inventory.as_ref().and_then(|i| i.managed.get(&p.anchor));
        let l = judge(p, recorded.get(&p.anchor), action, seen);
        if l.can_start
            && l.state != "in_batch"
            && l.state != "already_in_tenant"
            && let Some(pw) = &m.master_password
        {
            rows.push(migration::csv_row(&p.primary, &p.uid, &m.master_user, pw));
        }
        lines.push(l);
    }
    let batches = migration::split(rows, migration::MAX_ROWS, migration::MAX_BYTES);
    let bill = the_plan.as_ref().and_then(|p| p.licences.clone());
    let short = bill.as_ref().is_some_and(|b| b.short() > 0);
    let report = PlanReport {
        // Like `start`: someone to migrate, nobody who cannot, licences enough.
        can_start: lines.iter().any(|l| l.state != "already_in_tenant")
            && lines.iter().all(|l| l.can_start)
            && !short,
        licences_needed: bill.as_ref().map(|b| b.needed),
        licences_free: bill.as_ref().map(|b| b.free),
        batches: batches.len(),
        csv_bytes: batches
            .iter()
            .map(|b| migration::csv(b).expose().len())
            .sum(),
        people: lines,
    };
    write_plan(&report, args.format)?;
    Ok(if report.can_start {
        Exit::Ok
    } else {
        Exit::Failed
    })
}

/// One cohort member's verdict from what the dry run planned for them (`action`), the
/// tenant (`seen`) and the state store (`recorded`).
fn judge(
    p: &Member,
    recorded: Option<&MigrationPerson>,
    action: Option<&crate::plan::Action>,
    seen: Option<&TenantObject>,
) -> PlanLine {
    let uid = p.uid.as_str();
    if let Some(batch) = recorded
        .filter(|r| r.stage.is_migrating())
        .and_then(|r| r.batch.as_deref())
    {
        return PlanLine::new(
            uid,
            "in_batch",
            true,
            &format!("already in migration batch {batch}"),
        );
    }
    if p.in_tenant {
        // Skipped, as `start` skips them: not a reason the cohort cannot start.
        return PlanLine::new(
            uid,
            "already_in_tenant",
            true,
            "LDAP already forwards into the tenant: nothing to migrate; skipped",
        );
    }
    match (action, seen) {
        (Some(a), _) if a.held.is_some() => {
            let why = a
                .held
                .as_ref()
                .map(|h| h.reason.as_str())
                .unwrap_or_default();
            PlanLine::new(uid, "held", false, why)
        }
        (Some(a), _) if a.op == Op::Create => PlanLine::new(
            uid,
            "not_provisioned",
            true,
            "created as a licensed mailbox",
        ),
        (Some(a), _) if a.op == Op::Convert => PlanLine::new(
            uid,
            "mail_user_to_license",
            true,
            "the MailUser is licensed in place",
        ),
        (_, Some(t)) if t.mailbox_pending => PlanLine::new(
            uid,
            "mailbox_provisioning",
            true,
            "licensed; Exchange is still provisioning the mailbox",
        ),
        _ => PlanLine::new(uid, "mailbox_exists", true, "the mailbox exists"),
    }
}

fn stdout_error(e: std::io::Error) -> CommandError {
    CommandError::Write {
        path: "standard output".into(),
        source: e,
    }
}

fn write_plan(report: &PlanReport, format: StatusFormat) -> Result<(), CommandError> {
    let mut out = std::io::stdout().lock();
    if format == StatusFormat::Json {
        serde_json::to_writer_pretty(&mut out, report).expect("the report serialises");
        return writeln!(out).map_err(stdout_error);
    }
    for l in &report.people {
        let mark = if l.can_start { "ok  " } else { "STOP" };
        writeln!(out, "{mark} {:<20} {:<22} {}", l.uid, l.state, l.detail).map_err(stdout_error)?;
    }
    if let (Some(n), Some(f)) = (report.licences_needed, report.licences_free) {
        writeln!(out, "Licences: {n} needed, {f} free").map_err(stdout_error)?;
    }
    writeln!(
        out,
        "Batches: {} ({} bytes of CSV)\n{}",
        report.batches,
        report.csv_bytes,
        if report.can_start {
            "The cohort can start."
        } else {
            "The cohort cannot start as it is."
        }
    )
    .map_err(stdout_error)
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
    let password = m.master_password.as_ref().ok_or_else(|| {
        CommandError::Usage(
            "configuration key `migration.master_password_file`: no IMAP master password".into(),
        )
    })?;
    let cohort = read_cohort_args(config, &args.cohort).await?;
    let (members, mut failed) = left_out(&cohort);
    if members.is_empty() {
        eprintln!("ldap2exo: nobody to migrate");
        return Ok(Exit::Failed);
    }
    if let Some(why) = too_large(members.len(), m) {
        eprintln!("ldap2exo: {why}");
        return Ok(Exit::Blocked);
    }
    // What would make the start fail after licensing is checked first: licensing in place
    // cannot be undone by ldap2exo.
    {
        let tenant = Tenant::connect(&config.tenant)?;
        let ex = tenant.exchange();
        check_routing_domain(ex, m).await?;
        check_endpoint(ex, m).await?;
        if let Some(name) = &args.batch {
            check_batch_name(ex, name, &members).await?;
        }
    }
    let started = now()?;
    tracing::info!(
        people = members.len(),
        "provisioning the migration cohort's mailboxes"
    );
    // Step 1: the ordinary sync path, for exactly these people, planned as migrating; the
    // state store records them only once their actions succeeded (else the daemon would go
    // on licensing someone whose start failed or was held).
    let sel = SelectionArgs {
        only: members.iter().map(|p| p.uid.clone()).collect(),
        max_deletes: None,
        approval: Default::default(),
    };
    let anchors: BTreeSet<Anchor> = members.iter().map(|p| p.anchor.clone()).collect();
    let finished = real_run_migrating(
        config,
        &sel,
        "migrate start",
        stop,
        &TenantWatch::new(),
        &anchors,
    )
    .await?;
    let mut unsuccessful = BTreeSet::new();
    for r in &finished.results {
        let why = match &r.outcome {
            Outcome::Failed(why)
            | Outcome::Conflict(why)
            | Outcome::NotStarted(why)
            | Outcome::Skipped(why) => why,
            Outcome::Done | Outcome::Pending(_) => continue,
        };
        if anchors.contains(&r.anchor) {
            eprintln!("ldap2exo: {}: provisioning failed: {why}", r.uid);
            unsuccessful.insert(r.anchor.clone());
            failed = true;
        }
    }
    let members: Vec<&Member> = members
        .into_iter()
        .filter(|p| !unsuccessful.contains(&p.anchor))
        .collect();
    let store = Store::open(&config.state.path).await?;
    for p in &members {
        store
            .start_migration(&p.anchor, &p.uid, &p.primary, started)
            .await?;
    }
    store.close().await;
    // Step 2: the endpoint and the batches, for those whose mailbox is ready.
    let store = Store::open(&config.state.path).await?;
    let tenant = Tenant::connect(&config.tenant)?;
    let ex = tenant.exchange();
    let (ready, not_ready) = ready_members(&store, ex, m, &members).await?;
    if !ready.is_empty() {
        ensure_endpoint(ex, m).await?;
        let base = args
            .batch
            .clone()
            .unwrap_or_else(|| default_batch_name(started));
        create_batches(&store, ex, m, password, &ready, &base).await?;
    }
    store.close().await;
    Ok(if failed || not_ready {
        Exit::Failed
    } else {
        Exit::Ok
    })
}

/// Why a cohort of `people` to migrate is refused by `migration.max_cohort` (exit 3), or
/// `None`. Licensing in place cannot be undone by ldap2exo: a safety gate, nothing changed.
fn too_large(people: usize, m: &MigrationConfig) -> Option<String> {
    (people > m.max_cohort).then(|| {
        format!(
            "the cohort has {people} people, more than migration.max_cohort ({}): nothing changed; start smaller cohorts or raise migration.max_cohort",
            m.max_cohort
        )
    })
}

/// Refuses (exit 2) unless `Get-AcceptedDomain` lists `[migration] onprem_routing_domain`
/// as InternalRelay: a mailbox forwarding to a domain the tenant does not accept is external
/// automatic forwarding, which Exchange Online blocks by default (outbound spam policy
/// `AutoForwardingMode Automatic`); mail to an InternalRelay domain is internal.
async fn check_routing_domain(
    ex: &crate::tenant::Exchange,
    m: &MigrationConfig,
) -> Result<(), CommandError> {
    let domains = ex.get_accepted_domains().await?;
    match routing_domain_problem(&domains, &m.onprem_routing_domain) {
        None => Ok(()),
        Some(why) => Err(CommandError::Usage(why)),
    }
}

/// Why the accepted domains (`Get-AcceptedDomain`: DomainName, DomainType) do not carry
/// `domain` as InternalRelay, with what to do; `None` when they do.
fn routing_domain_problem(domains: &[Value], domain: &str) -> Option<String> {
    let found = domains.iter().find(|d| {
        ["DomainName", "Name", "Identity"].iter().any(|k| {
            d.get(*k)
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case(domain))
        })
    });
    let why = "the mailboxes' forwarding to on-prem would be external automatic forwarding, which Exchange Online blocks by default";
    match found
        .and_then(|d| d.get("DomainType"))
        .and_then(Value::as_str)
    {
        Some(t) if t.eq_ignore_ascii_case("InternalRelay") => None,
        Some(t) => Some(format!(
            "migration.onprem_routing_domain {domain} is an accepted domain of type {t}, not InternalRelay: {why}; run Set-AcceptedDomain -Identity {domain} -DomainType InternalRelay; nothing changed"
        )),
        None => Some(format!(
            "migration.onprem_routing_domain {domain} is not an accepted domain of the tenant: {why}; add and verify the domain in the Microsoft 365 admin center, then run Set-AcceptedDomain -Identity {domain} -DomainType InternalRelay (New-AcceptedDomain exists only in on-premises Exchange); nothing changed"
        )),
    }
}

/// Refuses (exit 2) a `--batch` name Exchange already has for people outside `members`:
/// their batch is not this cohort's. A batch holding only members is a repeated start.
async fn check_batch_name(
    ex: &crate::tenant::Exchange,
    name: &str,
    members: &[&Member],
) -> Result<(), CommandError> {
    let ours: BTreeSet<String> = members
        .iter()
        .map(|p| p.primary.to_ascii_lowercase())
        .collect();
    let others: Vec<String> = ex
        .migration_users(Some(name))
        .await?
        .iter()
        .filter_map(|u| u.get("Identity").and_then(Value::as_str))
        .filter(|i| !ours.contains(&i.to_ascii_lowercase()))
        .map(str::to_owned)
        .collect();
    if others.is_empty() {
        return Ok(());
    }
    Err(CommandError::Usage(format!(
        "--batch {name}: Exchange already has a migration batch {name} for other people ({}{}); choose another name; nothing changed",
        others
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
        if others.len() > 5 { ", …" } else { "" }
    )))
}

/// The members to migrate; reports (on standard error) who is left out and why, and whether
/// anyone was.
fn left_out(cohort: &CohortRead) -> (Vec<&Member>, bool) {
    let mut any = false;
    for u in &cohort.missing {
        eprintln!("ldap2exo: {u}: no LDAP entry matches; left out");
        any = true;
    }
    for (u, why) in &cohort.quarantined {
        eprintln!("ldap2exo: {u}: quarantined ({why}); left out");
        any = true;
    }
    let mut members = Vec::new();
    for p in &cohort.members {
        if p.in_tenant {
            eprintln!(
                "ldap2exo: {}: LDAP already forwards into the tenant; nothing to migrate",
                p.uid
            );
        } else {
            members.push(p);
        }
    }
    (members, any)
}

/// Every migration user Exchange lists (`Get-MigrationUser`), as lower-case address →
/// the value of `property` (`BatchId`, `Status`).
async fn migration_users_by(
    ex: &crate::tenant::Exchange,
    property: &str,
) -> Result<BTreeMap<String, String>, CommandError> {
    Ok(ex
        .migration_users(None)
        .await?
        .iter()
        .filter_map(|u| {
            Some((
                u.get("Identity")?.as_str()?.to_ascii_lowercase(),
                u.get(property)?.as_str()?.to_owned(),
            ))
        })
        .collect())
}

/// Who of `members` can go into a batch now: not in one yet, a `UserMailbox` in Exchange,
/// forwarding to on-prem. Says for each of the others why not; the flag is true when
/// someone must wait for a later `migrate start`. Someone Exchange already lists in a
/// migration batch (a start that stopped after creating it) is recorded, not batched again.
async fn ready_members<'m>(
    store: &Store,
    ex: &crate::tenant::Exchange,
    m: &MigrationConfig,
    members: &[&'m Member],
) -> Result<(Vec<&'m Member>, bool), CommandError> {
    let people = store.migration_people().await?;
    let in_tenant_batches = migration_users_by(ex, "BatchId").await?;
    let mut ready = Vec::new();
    let mut waiting = false;
    for p in members {
        let batch = people
            .get(&p.anchor)
            .and_then(|r| r.batch.clone())
            .or_else(|| {
                in_tenant_batches
                    .get(&p.primary.to_ascii_lowercase())
                    .cloned()
            });
        if let Some(batch) = batch {
            store.set_migration_batch(&p.anchor, &batch, now()?).await?;
            println!("{}: already in migration batch {batch}", p.uid);
            continue;
        }
        let id = store
            .object(&p.anchor)
            .await?
            .and_then(|o| o.tenant_object_id);
        let why = match id {
            None => Some("not provisioned yet"),
            Some(id) => mailbox_not_ready(
                ex.get_mailbox(&id).await?.as_ref(),
                &onprem_target(m, &p.uid),
            ),
        };
        match why {
            Some(why) => {
                println!("{}: {why}; run migrate start again", p.uid);
                waiting = true;
            }
            None => ready.push(*p),
        }
    }
    Ok((ready, waiting))
}

/// Why Exchange's `Get-Mailbox` answer does not show a mailbox ready to migrate into, or
/// `None` when it does.
fn mailbox_not_ready(mailbox: Option<&Value>, onprem_target: &str) -> Option<&'static str> {
    let text = |k: &str| mailbox.and_then(|v| v.get(k)).and_then(Value::as_str);
    if text("RecipientTypeDetails") != Some("UserMailbox") {
        return Some("the mailbox is still being provisioned (minutes after licensing)");
    }
    let forwarding = text("ForwardingSmtpAddress").map(|f| strip_smtp(f).to_ascii_lowercase());
    if forwarding.as_deref() != Some(onprem_target) {
        return Some("the forwarding to on-prem is not set yet");
    }
    None
}

/// Creates the migration batches for `ready` (split within Exchange's limits, named from
/// `base` with names no batch has) and records each person's batch.
async fn create_batches(
    store: &Store,
    ex: &crate::tenant::Exchange,
    m: &MigrationConfig,
    password: &crate::secret::Secret,
    ready: &[&Member],
    base: &str,
) -> Result<(), CommandError> {
    let rows = ready
        .iter()
        .map(|p| migration::csv_row(&p.primary, &p.uid, &m.master_user, password))
        .collect();
    let chunks = migration::split(rows, migration::MAX_ROWS, migration::MAX_BYTES);
    let taken: BTreeSet<String> = ex
        .migration_batches(None)
        .await?
        .iter()
        .filter_map(|b| b.get("Identity").and_then(Value::as_str))
        .map(str::to_ascii_lowercase)
        .collect();
    let names = free_names(base, chunks.len(), &taken);
    let mut people = ready.iter();
    for (chunk, name) in chunks.iter().zip(&names) {
        ex.new_migration_batch(name, ENDPOINT_NAME, &migration::csv(chunk))
            .await?;
        let now = now()?;
        for p in people.by_ref().take(chunk.len()) {
            store.set_migration_batch(&p.anchor, name, now).await?;
            println!("{}: in migration batch {name}", p.uid);
        }
        tracing::info!(batch = %name, people = chunk.len(), "migration batch created and started");
    }
    Ok(())
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

/// Creates the IMAP endpoint unless one of that name exists; one that exists must copy from
/// the server `[migration]` names (never silently from an old one).
async fn ensure_endpoint(
    ex: &crate::tenant::Exchange,
    m: &MigrationConfig,
) -> Result<(), CommandError> {
    if check_endpoint(ex, m).await? {
        return Ok(());
    }
    ex.new_imap_endpoint(&ImapEndpoint {
        name: ENDPOINT_NAME,
        remote_server: &m.imap_server,
        port: m.imap_port,
        security: m.security.as_cmdlet(),
    })
    .await?;
    tracing::info!(endpoint = ENDPOINT_NAME, server = %m.imap_server, "IMAP migration endpoint created");
    Ok(())
}

/// Whether the endpoint exists; one that exists and differs from `[migration]` is refused
/// (exit 2) naming both values.
async fn check_endpoint(
    ex: &crate::tenant::Exchange,
    m: &MigrationConfig,
) -> Result<bool, CommandError> {
    let endpoints = ex.migration_endpoints().await?;
    let existing = endpoints.iter().find(|e| {
        ["Identity", "Name"].iter().any(|k| {
            e.get(*k)
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case(ENDPOINT_NAME))
        })
    });
    match existing.map(|e| endpoint_mismatch(e, m)) {
        None => Ok(false),
        Some(None) => Ok(true),
        Some(Some(diff)) => Err(CommandError::Usage(format!(
            "the migration endpoint {ENDPOINT_NAME} in the tenant differs from [migration]: {diff}; correct the configuration, or remove the endpoint (Remove-MigrationEndpoint {ENDPOINT_NAME}, once no batch uses it) so that migrate start makes it anew; nothing changed"
        ))),
    }
}

/// How an existing endpoint (`Get-MigrationEndpoint`: RemoteServer, Port, Security) differs
/// from `[migration]`, naming both values; `None` when it does not.
fn endpoint_mismatch(e: &Value, m: &MigrationConfig) -> Option<String> {
    let text = |k: &str| match e.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "none".to_owned(),
    };
    let mut diffs = Vec::new();
    let (server, port, security) = (text("RemoteServer"), text("Port"), text("Security"));
    if !server.eq_ignore_ascii_case(&m.imap_server) {
        diffs.push(format!(
            "RemoteServer {server}, migration.imap_server {}",
            m.imap_server
        ));
    }
    if port != m.imap_port.to_string() {
        diffs.push(format!("Port {port}, migration.imap_port {}", m.imap_port));
    }
    if !security.eq_ignore_ascii_case(m.security.as_cmdlet()) {
        diffs.push(format!(
            "Security {security}, migration.security {}",
            m.security.as_cmdlet()
        ));
    }
    (!diffs.is_empty()).then(|| diffs.join("; "))
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

async fn status(
    config: &Config,
    m: &MigrationConfig,
    args: &MigrateStatusArgs,
) -> Result<Exit, CommandError> {
    let store = Store::open(&config.state.path).await?;
    let people = store.migration_people().await?;
    let tenant = Tenant::connect(&config.tenant)?;
    let ex = tenant.exchange();
    let found = ex.migration_batches(args.batch.as_deref()).await?;
    if let Some(name) = &args.batch
        && found.is_empty()
    {
        store.close().await;
        eprintln!("ldap2exo: no migration batch {name}");
        return Ok(Exit::Failed);
    }
    let batches: Vec<Value> = found
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
    let users = ex.migration_users(args.batch.as_deref()).await?;
    let rows = join_status(&users, &people, args.batch.as_deref());
    let mut problems = status_problems(&rows);
    // Sync compares the forwarding only with the state store: a change in OWA shows here.
    for p in people.values().filter(|p| {
        p.stage.is_migrating()
            && (args.batch.is_none() || p.batch.as_deref() == args.batch.as_deref())
    }) {
        let Some(id) = store
            .object(&p.anchor)
            .await?
            .and_then(|o| o.tenant_object_id)
        else {
            continue;
        };
        let want = onprem_target(m, &p.uid);
        let mailbox = ex.get_mailbox(&id).await?;
        let have = mailbox
            .as_ref()
            .and_then(|v| v.get("ForwardingSmtpAddress"))
            .and_then(Value::as_str)
            .map(|f| strip_smtp(f).to_ascii_lowercase());
        if mailbox.is_some() && have.as_deref() != Some(want.as_str()) {
            problems.push(format!(
                "{}: the mailbox forwards to {} instead of {want}: changed in Exchange (e.g. Outlook on the web), or [migration] onprem_routing_domain changed since start; mail stays in Exchange Online",
                p.uid,
                have.as_deref().unwrap_or("nobody")
            ));
        }
    }
    store.close().await;
    write_status(&batches, &rows, args.format)?;
    for p in &problems {
        eprintln!("ldap2exo: {p}");
    }
    Ok(if problems.is_empty() {
        Exit::Ok
    } else {
        Exit::Failed
    })
}

/// `Get-MigrationUser` statuses that need the operator (MigrationUserStatus, Microsoft
/// Learn, exchange-server-api jj939831).
const STUCK: [&str; 6] = [
    "Failed",
    "IncrementalFailed",
    "CompletionFailed",
    "Corrupted",
    "Stopped",
    "IncrementalStopped",
];

/// Why `migrate status` exits 1: a user failed or stopped, or a person the state store has
/// in a batch (before cutover) that Exchange does not list.
fn status_problems(rows: &[StatusUser]) -> Vec<String> {
    rows.iter()
        .filter_map(|r| {
            let who = r.uid.as_deref().unwrap_or(r.email.as_str());
            match r.status.as_deref() {
                Some(s) if STUCK.contains(&s) => Some(format!(
                    "{who}: migration {s}{}",
                    r.error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                )),
                None if r.stage == Some(MigrationStage::Batched) => Some(format!(
                    "{who}: in batch {} by the state store, but Exchange lists no migration user",
                    r.batch.as_deref().unwrap_or("-")
                )),
                _ => None,
            }
        })
        .collect()
}

/// Exchange's migration users beside the state store's people (by mailbox address); people
/// the store has in scope but Exchange does not list come last, without a status.
fn join_status(
    users: &[Value],
    people: &BTreeMap<Anchor, MigrationPerson>,
    batch: Option<&str>,
) -> Vec<StatusUser> {
    let by_email: BTreeMap<String, &MigrationPerson> = people
        .values()
        .map(|p| (p.email.to_ascii_lowercase(), p))
        .collect();
    let text = |u: &Value, k: &str| u.get(k).and_then(Value::as_str).map(str::to_owned);
    let mut seen = BTreeSet::new();
    let mut rows: Vec<StatusUser> = users
        .iter()
        .map(|u| {
            let email = text(u, "Identity").unwrap_or_default().to_ascii_lowercase();
            let p = by_email.get(&email);
            seen.insert(email.clone());
            StatusUser {
                uid: p.map(|p| p.uid.clone()),
                stage: p.map(|p| p.stage),
                batch: text(u, "BatchId").or_else(|| p.and_then(|p| p.batch.clone())),
                status: text(u, "Status"),
                items_synced: u.get("SyncedItemCount").and_then(Value::as_u64),
                error: text(u, "ErrorSummary").filter(|s| !s.is_empty()),
                email,
            }
        })
        .collect();
    for p in people.values() {
        let in_scope = batch.is_none() || p.batch.as_deref() == batch;
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
    rows
}

fn write_status(
    batches: &[Value],
    rows: &[StatusUser],
    format: StatusFormat,
) -> Result<(), CommandError> {
    let mut out = std::io::stdout().lock();
    if format == StatusFormat::Json {
        let v = json!({"batches": batches, "users": rows});
        serde_json::to_writer_pretty(&mut out, &v).expect("the status serialises");
        return writeln!(out).map_err(stdout_error);
    }
    writeln!(out, "Batches:").map_err(stdout_error)?;
    for b in batches {
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
        .map_err(stdout_error)?;
    }
    writeln!(out, "People:").map_err(stdout_error)?;
    for r in rows {
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
        .map_err(stdout_error)?;
    }
    Ok(())
}

async fn cutover(
    config: &Config,
    m: &MigrationConfig,
    args: &MigrateCutoverArgs,
    stop: &Stop,
) -> Result<Exit, CommandError> {
    if args.apply && m.write_bind_dn.is_none() {
        return Err(CommandError::Usage(
            "configuration key `migration.write_bind_dn`: --apply writes to LDAP and needs a write bind (else leave out --apply and apply the printed LDIF yourself)".into(),
        ));
    }
    if config.ldap.attributes.forward.is_empty() {
        return Err(CommandError::Usage(
            "configuration key `ldap.attributes.forward`: no forward attribute is mapped".into(),
        ));
    }
    let cohort = read_cohort(config, &args.only, None).await?;
    let store = Store::open(&config.state.path).await?;
    let people = store.migration_people().await?;
    let tenant = Tenant::connect(&config.tenant)?;
    let ex = tenant.exchange();
    let statuses = migration_users_by(ex, "Status").await?;
    let owning = routing_owners(&store, ex, config, &cohort, &people).await?;
    let target = Cutover {
        attribute: &config.ldap.attributes.forward,
        routing_domain: &config.tenant.routing_domain,
        statuses: &statuses,
        force: args.force,
        owning: &owning,
    };
    let (changes, refused, already) = target.changes(&cohort, &people);
    for a in &already {
        println!("{a}");
    }
    for r in &refused {
        eprintln!("ldap2exo: cutover refused for {r}");
    }
    for p in cohort
        .members
        .iter()
        .filter(|p| changes.iter().any(|(a, _)| *a == p.anchor))
    {
        if let Some(f) = &p.forward {
            // The on-prem server applied it; after cutover it would have to be an Exchange
            // Online forwarding or inbox rule.
            eprintln!(
                "ldap2exo: warning: {}: the cutover replaces the forward to {f}",
                p.uid
            );
        }
    }
    let ldif: Vec<ForwardChange> = changes.iter().map(|(_, c)| c.clone()).collect();
    if !args.apply {
        print!("{}", migration::ldif(&ldif));
    }
    let uid_of = |a: &Anchor| {
        cohort
            .members
            .iter()
            .find(|p| p.anchor == *a)
            .map(|p| p.uid.clone())
    };
    if !args.apply || changes.is_empty() {
        store.close().await;
        if !changes.is_empty() {
            let uids: Vec<String> = changes.iter().filter_map(|(a, _)| uid_of(a)).collect();
            // Until that sync the mailbox forwards back to on-prem, which now forwards here.
            eprintln!(
                "ldap2exo: after applying this LDIF, run at once: ldap2exo sync --only {} (it removes the forwarding to on-prem)",
                uids.join(" ")
            );
        }
        return Ok(if refused.is_empty() {
            Exit::Ok
        } else {
            Exit::Failed
        });
    }
    let mut ldap = config.ldap.clone();
    ldap.bind_dn = m.write_bind_dn.clone();
    ldap.bind_password = m.write_bind_password.clone();
    let mods: Vec<(String, String, String)> = ldif
        .iter()
        .map(|c| (c.dn.clone(), c.attribute.clone(), c.value.clone()))
        .collect();
    let (done, outcome) = source::replace_values(&ldap, &mods).await;
    let written: Vec<String> = changes[..done]
        .iter()
        .filter_map(|(a, _)| uid_of(a))
        .collect();
    let not_written: Vec<String> = changes[done..]
        .iter()
        .filter_map(|(a, _)| uid_of(a))
        .collect();
    for line in write_report(&written, &not_written, outcome.as_ref().err()) {
        println!("{line}");
    }
    if done < ldif.len() {
        // Only what LDAP lacks: the operator may apply it once the cause is fixed.
        print!("{}", migration::ldif(&ldif[done..]));
    }
    // Whoever LDAP now forwards into the tenant is cut over, also when a later modify failed.
    let now = now()?;
    for (anchor, c) in &changes[..done] {
        store.mark_cutover(anchor, now).await?;
        tracing::info!(dn = %c.dn, forward = %c.value, "cut over: the LDAP forward points into the tenant");
    }
    store.close().await;
    // At once, the ordinary sync for exactly them: the forwarding to on-prem goes now, not
    // at the next daemon run (until then mail would go back and forth).
    let cut: Vec<String> = changes[..done]
        .iter()
        .filter_map(|(a, _)| uid_of(a))
        .collect();
    let mut synced_ok = true;
    if !cut.is_empty() {
        let sel = SelectionArgs {
            only: cut,
            max_deletes: None,
            approval: Default::default(),
        };
        let uids = sel.only.join(" ");
        let finished = match real_run(config, &sel, "migrate cutover", stop, &TenantWatch::new())
            .await
        {
            Ok(f) => f,
            Err(e) => {
                // LDAP is changed already: say what is left to do, then the error.
                eprintln!(
                    "ldap2exo: the LDAP forwards are changed, but the sync that removes the forwarding to on-prem did not run; run ldap2exo sync --only {uids} now"
                );
                return Err(e);
            }
        };
        for r in &finished.results {
            if let Outcome::Failed(why) | Outcome::Conflict(why) | Outcome::NotStarted(why) =
                &r.outcome
            {
                eprintln!(
                    "ldap2exo: {}: removing the forwarding failed: {why}; run ldap2exo sync --only {} again",
                    r.uid, r.uid
                );
                synced_ok = false;
            }
        }
    }
    outcome.map_err(CommandError::LdapWrite)?;
    Ok(if refused.is_empty() && synced_ok {
        Exit::Ok
    } else {
        Exit::Failed
    })
}

/// One line per person of a cutover's LDAP write: `written` are cut over; of the others, the
/// first had `error`, the rest were not tried (the write stops at the first refusal).
fn write_report(
    written: &[String],
    not_written: &[String],
    error: Option<&crate::source::SourceError>,
) -> Vec<String> {
    let mut lines: Vec<String> = written.iter().map(|u| format!("{u}: cut over")).collect();
    for (i, u) in not_written.iter().enumerate() {
        let why = match (i, error) {
            (0, Some(e)) => e.to_string(),
            (0, None) => "not written".to_owned(),
            _ => format!("not tried: the LDAP write stopped at {}", not_written[0]),
        };
        lines.push(format!("{u}: NOT cut over: {why}"));
    }
    lines
}

/// The cohort's migrating people whose mailbox (`Get-Mailbox` `EmailAddresses`) already owns
/// `<alias>@<tenant.routing_domain>`, the address cutover points the LDAP forward at.
async fn routing_owners(
    store: &Store,
    ex: &crate::tenant::Exchange,
    config: &Config,
    cohort: &CohortRead,
    people: &BTreeMap<Anchor, MigrationPerson>,
) -> Result<BTreeSet<Anchor>, CommandError> {
    let mut owning = BTreeSet::new();
    for p in &cohort.members {
        if !people
            .get(&p.anchor)
            .is_some_and(|r| r.stage.is_migrating())
        {
            continue;
        }
        let Some(id) = store
            .object(&p.anchor)
            .await?
            .and_then(|o| o.tenant_object_id)
        else {
            continue;
        };
        let routing = format!("{}@{}", p.alias, config.tenant.routing_domain);
        if owns_address(ex.get_mailbox(&id).await?.as_ref(), &routing) {
            owning.insert(p.anchor.clone());
        }
    }
    Ok(owning)
}

/// Whether a `Get-Mailbox` answer lists `address` among its `EmailAddresses`.
fn owns_address(mailbox: Option<&Value>, address: &str) -> bool {
    mailbox
        .and_then(|v| v.get("EmailAddresses"))
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .any(|e| strip_smtp(e).eq_ignore_ascii_case(address))
        })
}

/// What a cutover changes: the forward attribute, the routing domain, Exchange's migration
/// status per mailbox address, whether `--force` skips the status check, and who already
/// owns the routing address.
struct Cutover<'a> {
    attribute: &'a str,
    routing_domain: &'a str,
    statuses: &'a BTreeMap<String, String>,
    force: bool,
    owning: &'a BTreeSet<Anchor>,
}

impl Cutover<'_> {
    /// The LDAP change for each member that may be cut over; for the others (and the uids
    /// LDAP lacks or quarantines) why not; and who is already cut over (not a failure).
    fn changes(
        &self,
        cohort: &CohortRead,
        people: &BTreeMap<Anchor, MigrationPerson>,
    ) -> (Vec<(Anchor, ForwardChange)>, Vec<String>, Vec<String>) {
        let mut refused: Vec<String> = cohort
            .missing
            .iter()
            .map(|u| format!("{u}: no LDAP entry matches"))
            .chain(
                cohort
                    .quarantined
                    .iter()
                    .map(|(u, why)| format!("{u}: quarantined ({why})")),
            )
            .collect();
        let mut changes = Vec::new();
        let mut already = Vec::new();
        for p in &cohort.members {
            if let Some(row) = people
                .get(&p.anchor)
                .filter(|r| r.stage == MigrationStage::Cutover)
            {
                let on = row.cutover_at.map_or_else(
                    || "an unrecorded date".to_owned(),
                    |t| crate::plan::rfc3339(t)[..10].to_owned(),
                );
                already.push(format!("{}: already cut over on {on}", p.uid));
                continue;
            }
            let Some(row) = people.get(&p.anchor).filter(|r| r.stage.is_migrating()) else {
                refused.push(format!("{}: not migrating (migrate start first)", p.uid));
                continue;
            };
            let Some(st) = self.statuses.get(&row.email.to_ascii_lowercase()) else {
                // --force too: nothing was ever copied.
                refused.push(format!(
                    "{}: in no migration batch Exchange lists (migrate start first)",
                    p.uid
                ));
                continue;
            };
            if !self.force && !SYNCED.contains(&st.as_str()) {
                refused.push(format!(
                    "{}: migration not synced (status {st}); wait, or use --force",
                    p.uid
                ));
                continue;
            }
            let routing = format!("{}@{}", p.alias, self.routing_domain);
            if !self.owning.contains(&p.anchor) {
                refused.push(format!(
                    "{}: the mailbox does not own {routing} yet (the on-prem forward would bounce); run ldap2exo sync --only {} first",
                    p.uid, p.uid
                ));
                continue;
            }
            changes.push((
                p.anchor.clone(),
                ForwardChange {
                    dn: p.dn.clone(),
                    attribute: self.attribute.to_owned(),
                    value: routing,
                },
            ));
        }
        (changes, refused, already)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(uid: &str) -> Member {
        Member {
            anchor: Anchor::new(&format!("uuid-{uid}")).unwrap(),
            uid: uid.into(),
            dn: format!("uid={uid},ou=people,dc=example,dc=edu"),
            alias: uid.into(),
            primary: format!("{uid}@example.edu"),
            forward: None,
            in_tenant: false,
        }
    }

    fn person(uid: &str, stage: MigrationStage, batch: Option<&str>) -> MigrationPerson {
        MigrationPerson {
            anchor: Anchor::new(&format!("uuid-{uid}")).unwrap(),
            uid: uid.into(),
            email: format!("{uid}@example.edu"),
            batch: batch.map(str::to_owned),
            stage,
            started_at: 0,
            updated_at: 0,
            cutover_at: None,
        }
    }

    #[test]
    fn a_mailbox_is_ready_once_exchange_shows_it_forwarding_to_on_prem() {
        let target = "jdoe@mbox.example.edu";
        assert!(
            mailbox_not_ready(None, target)
                .unwrap()
                .contains("provisioned")
        );
        let mail_user = json!({"RecipientTypeDetails": "MailUser"});
        assert!(mailbox_not_ready(Some(&mail_user), target).is_some());
        let unforwarded =
            json!({"RecipientTypeDetails": "UserMailbox", "ForwardingSmtpAddress": null});
        assert!(
            mailbox_not_ready(Some(&unforwarded), target)
                .unwrap()
                .contains("forwarding")
        );
        let ready = json!({"RecipientTypeDetails": "UserMailbox", "ForwardingSmtpAddress": "smtp:JDoe@mbox.example.edu"});
        assert_eq!(mailbox_not_ready(Some(&ready), target), None);
    }

    #[test]
    fn cutover_takes_only_synced_migrating_owning_people_and_names_the_others() {
        let cohort = CohortRead {
            members: [
                "synced",
                "syncing",
                "stranger",
                "done",
                "unbatched",
                "bare",
                "incr",
            ]
            .map(member)
            .to_vec(),
            quarantined: vec![("broken".into(), "mail: bad".into())],
            missing: vec!["ghost".into()],
        };
        let people: BTreeMap<Anchor, MigrationPerson> = [
            person("synced", MigrationStage::Batched, Some("b1")),
            person("syncing", MigrationStage::Batched, Some("b1")),
            person("done", MigrationStage::Cutover, Some("b1")),
            person("unbatched", MigrationStage::Started, None),
            person("bare", MigrationStage::Batched, Some("b1")),
            person("incr", MigrationStage::Batched, Some("b1")),
        ]
        .into_iter()
        .map(|p| (p.anchor.clone(), p))
        .collect();
        let statuses: BTreeMap<String, String> = [
            ("synced@example.edu", "Synced"),
            ("syncing@example.edu", "Syncing"),
            ("bare@example.edu", "Synced"),
            ("incr@example.edu", "IncrementalSyncing"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .into();
        // Everybody owns the routing address but `bare`.
        let owning: BTreeSet<Anchor> = ["synced", "syncing", "unbatched", "incr"]
            .map(|u| member(u).anchor)
            .into();
        let cut = Cutover {
            attribute: "mailForwardingAddress",
            routing_domain: "t.mail.onmicrosoft.com",
            statuses: &statuses,
            force: false,
            owning: &owning,
        };
        let (changes, refused, already) = cut.changes(&cohort, &people);
        assert_eq!(already, ["done: already cut over on an unrecorded date"]);
        let values: Vec<&str> = changes.iter().map(|c| c.1.value.as_str()).collect();
        assert_eq!(
            values,
            [
                "synced@t.mail.onmicrosoft.com",
                "incr@t.mail.onmicrosoft.com"
            ]
        );
        let refused = refused.join("\n");
        for who in [
            "ghost",
            "broken",
            "syncing: migration not synced (status Syncing)",
            "stranger: not migrating",
            "unbatched: in no migration batch",
            "bare: the mailbox does not own bare@t.mail.onmicrosoft.com",
        ] {
            assert!(refused.contains(who), "{who}: {refused}");
        }
        // --force skips only the status check: never batched or not owning is still refused.
        let forced = Cutover { force: true, ..cut };
        let (changes, refused, _) = forced.changes(&cohort, &people);
        assert_eq!(changes.len(), 3, "{refused:?}");
        let refused = refused.join("\n");
        assert!(
            refused.contains("unbatched: in no migration batch"),
            "{refused}"
        );
        assert!(
            refused.contains("bare: the mailbox does not own"),
            "{refused}"
        );
    }

    #[test]
    fn the_onprem_routing_domain_must_be_accepted_as_internal_relay() {
        let d = "mbox.example.edu";
        let relay = [json!({"DomainName": "MBOX.example.edu", "DomainType": "InternalRelay"})];
        assert_eq!(routing_domain_problem(&relay, d), None);
        let auth = [json!({"DomainName": d, "DomainType": "Authoritative"})];
        let why = routing_domain_problem(&auth, d).unwrap();
        assert!(why.contains("of type Authoritative"), "{why}");
        assert!(
            why.contains("Set-AcceptedDomain -Identity mbox.example.edu -DomainType InternalRelay"),
            "{why}"
        );
        let other = [json!({"DomainName": "example.edu", "DomainType": "InternalRelay"})];
        let why = routing_domain_problem(&other, d).unwrap();
        assert!(
            why.contains("mbox.example.edu is not an accepted domain"),
            "{why}"
        );
        assert!(
            why.contains("Microsoft 365 admin center")
                && why.contains("Set-AcceptedDomain -Identity"),
            "{why}"
        );
    }

    #[test]
    fn a_partial_ldap_write_names_who_is_cut_over_and_who_is_not() {
        let e = crate::source::SourceError::Modify {
            url: "ldap://ldap".into(),
            dn: "uid=b,dc=x".into(),
            rc: 65,
            message: "attribute 'mailForwardingAddress' not allowed".into(),
        };
        let lines = write_report(&["a".into()], &["b".into(), "c".into()], Some(&e));
        assert_eq!(lines[0], "a: cut over");
        assert!(
            lines[1].starts_with("b: NOT cut over: ")
                && lines[1].contains("objectClassViolation (65): attribute 'mailForwardingAddress' not allowed: the entry lacks an objectClass that allows it"),
            "{lines:?}"
        );
        assert_eq!(
            lines[2],
            "c: NOT cut over: not tried: the LDAP write stopped at b"
        );
    }

    #[test]
    fn the_routing_address_is_owned_only_when_exchange_lists_it() {
        let mb = json!({"EmailAddresses": ["SMTP:jdoe@example.edu", "smtp:JDoe@t.mail.onmicrosoft.com"]});
        assert!(owns_address(Some(&mb), "jdoe@t.mail.onmicrosoft.com"));
        assert!(!owns_address(Some(&mb), "other@t.mail.onmicrosoft.com"));
        assert!(!owns_address(None, "jdoe@t.mail.onmicrosoft.com"));
    }

    #[test]
    fn status_joins_exchange_users_with_the_state_store() {
        let people: BTreeMap<Anchor, MigrationPerson> = [
            person("a", MigrationStage::Batched, Some("b1")),
            person("b", MigrationStage::Started, None),
        ]
        .into_iter()
        .map(|p| (p.anchor.clone(), p))
        .collect();
        let users = [
            json!({"Identity": "A@example.edu", "BatchId": "b1", "Status": "Syncing", "SyncedItemCount": 7, "ErrorSummary": ""}),
        ];
        let rows = join_status(&users, &people, None);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (
                rows[0].uid.as_deref(),
                rows[0].items_synced,
                rows[0].error.as_deref()
            ),
            (Some("a"), Some(7), None)
        );
        assert_eq!(
            (rows[1].uid.as_deref(), rows[1].status.as_deref()),
            (Some("b"), None)
        );
        // Scoped to a batch: b (in none) is left out.
        assert_eq!(join_status(&users, &people, Some("b1")).len(), 1);
    }

    #[test]
    fn status_names_failed_stopped_and_batched_people_exchange_does_not_list() {
        let people: BTreeMap<Anchor, MigrationPerson> = [
            person("ok", MigrationStage::Batched, Some("b1")),
            person("bad", MigrationStage::Batched, Some("b1")),
            person("halt", MigrationStage::Batched, Some("b1")),
            person("lost", MigrationStage::Batched, Some("b1")),
            person("new", MigrationStage::Started, None),
            person("gone", MigrationStage::Cutover, Some("b0")),
        ]
        .into_iter()
        .map(|p| (p.anchor.clone(), p))
        .collect();
        let users = [
            json!({"Identity": "ok@example.edu", "Status": "IncrementalSynced"}),
            json!({"Identity": "bad@example.edu", "Status": "Failed", "ErrorSummary": "login refused"}),
            json!({"Identity": "halt@example.edu", "Status": "Stopped"}),
        ];
        let problems = status_problems(&join_status(&users, &people, None)).join("\n");
        assert!(
            problems.contains("bad: migration Failed: login refused"),
            "{problems}"
        );
        assert!(problems.contains("halt: migration Stopped"), "{problems}");
        assert!(problems.contains("lost: in batch b1"), "{problems}");
        for fine in ["ok", "new", "gone"] {
            assert!(!problems.contains(&format!("{fine}:")), "{problems}");
        }
    }

    #[test]
    fn an_endpoint_is_compared_with_the_configuration_naming_both_values() {
        let m = MigrationConfig {
            imap_server: "imap.example.edu".into(),
            imap_port: 993,
            security: crate::config::ImapSecurity::Ssl,
            master_user: "migration".into(),
            master_password_file: None,
            master_password: None,
            onprem_routing_domain: "mbox.example.edu".into(),
            write_bind_dn: None,
            write_bind_password_file: None,
            write_bind_password: None,
            max_cohort: 500,
        };
        let same = json!({"Identity": "ldap2exo-imap", "RemoteServer": "IMAP.example.edu", "Port": 993, "Security": "Ssl"});
        assert_eq!(endpoint_mismatch(&same, &m), None);
        let old = json!({"RemoteServer": "old.example.edu", "Port": "143", "Security": "Tls"});
        let diff = endpoint_mismatch(&old, &m).unwrap();
        for both in [
            "RemoteServer old.example.edu, migration.imap_server imap.example.edu",
            "Port 143, migration.imap_port 993",
            "Security Tls, migration.security Ssl",
        ] {
            assert!(diff.contains(both), "{both}: {diff}");
        }
    }

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
