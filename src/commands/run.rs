//! `sync`, `plan` and `apply`: read LDAP and the tenant, plan, and (for a real run) apply,
//! recording the run in the state store.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::time::Duration;

use tracing::Instrument;

use super::output::{self, write_out};
use super::partial;
use super::quiet::{self, QuietRun};
use super::{CommandError, Exit, approval, now};
use crate::apply::{self, ActionResult};
use crate::cli::{ApplyArgs, PlanArgs, Selection as SelectionArgs, SyncArgs};
use crate::config::Config;
use crate::desired;
use crate::ids::Anchor;
use crate::inventory::{self, Inventory};
use crate::notify;
use crate::plan::{self, Plan, Scope, Verdict};
use crate::progress::{self, Phase, Progress};
use crate::report::{self, Format};
use crate::shutdown::Stop;
use crate::source::{self, Selection, incremental};
use crate::state::lock::{self, Lock};
use crate::state::{
    LdapSyncCommit, ManagedObject, Outcome, RunEnd, RunMode, RunScope, Stage, Store,
    TenantSyncCommit,
};
use crate::tenant::{Tenant, TenantStats};

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
    /// Connected and read when credentials are configured (always for a real run).
    tenant: Option<(Tenant, Inventory)>,
    /// State rows the tenant contradicted (adopted, missing, changed), as reconciled: a real
    /// run records them before applying, so each action starts from the tenant's truth.
    drifted: Vec<ManagedObject>,
    /// The entries and cookie of an incremental LDAP read, stored once the run applied every
    /// change (never by a dry run, a blocked or a failed run).
    ldap_commit: Option<LdapSyncCommit>,
    /// The tenant as an incremental read saw it, stored after applying (whatever the
    /// outcome: changes after the read, this run's own included, come with the next round).
    tenant_commit: Option<TenantSyncCommit>,
    /// Set when the run may be quiet (`plan::quiet`): what deciding whether to keep its plan
    /// needs at the end.
    quiet: Option<QuietRun>,
    /// What the plan adds to the base of partial planning (`plan::partial`), for a real run
    /// that may leave one; and the closure it covers when it planned partially.
    draft: Option<partial::Draft>,
    closure: Option<partial::Touched>,
    /// What started the run (`sync`, `apply`, `daemon`, …), for the notification.
    command: String,
    /// The run lock, held until the run is recorded as finished.
    _lock: Lock,
    progress: Progress,
    /// Shows the progress until the run is applied or dropped.
    renderer: progress::Renderer,
}

/// What a real run did: for its report, its exit code, the daemon's metrics and the
/// notification.
pub struct Finished {
    pub run_id: i64,
    pub outcome: Outcome,
    pub plan: Plan,
    pub results: Vec<ActionResult>,
    /// The tenant's request counters over the whole run (inventory read and apply).
    pub stats: TenantStats,
}

impl Finished {
    /// The exit code of INTERFACE.md: 1 for a run a signal stopped, 3 when the safety gate
    /// held removals back, 1 when an action failed or conflicted, else 0.
    pub fn exit(&self) -> Exit {
        let t = apply::Tally::of(&self.results);
        if self.outcome == Outcome::Interrupted {
            Exit::Failed
        } else if self.plan.safety.verdict == Verdict::Blocked {
            Exit::Blocked
        } else if t.failed + t.conflict + t.not_started > 0 {
            Exit::Failed
        } else {
            Exit::Ok
        }
    }
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
    end_run(store, run_id, Outcome::Failed, error).await
}

/// Records a run that ended before it applied anything.
async fn end_run(
    store: &Store,
    run_id: i64,
    outcome: Outcome,
    error: &dyn std::fmt::Display,
) -> Result<(), CommandError> {
    let end = RunEnd {
        outcome,
        source_count: None,
        verdict: None,
        summary: None,
        results: None,
        error: Some(error.to_string()),
    };
    store.finish_run(run_id, &end, now()?).await?;
    store.close().await;
    Ok(())
}

/// A run recorded as started, under the run lock.
struct Opened {
    store: Store,
    run_id: i64,
    started: i64,
    lock: Lock,
}

/// Takes the run lock, then opens (and migrates) the state store, so that no two processes
/// migrate or plan at once; marks runs a dead process left `running` as interrupted; records
/// this run as started.
async fn open_run(
    config: &Config,
    mode: RunMode,
    scope: RunScope,
    command: &str,
) -> Result<Opened, CommandError> {
    let path = &config.state.path;
    // A missing directory is a configuration error naming it, not a lock-file failure.
    crate::state::require_directory(path)?;
    let started = now()?;
    let lock = Lock::acquire(path, lock::Kind::Run, command, started).await?;
    let store = Store::open(path).await?;
    for id in store.mark_abandoned_runs().await? {
        tracing::warn!(
            run = id,
            "an earlier run ended without finishing (crash or kill); marked interrupted, this run does what is left"
        );
    }
    let run_id = store.begin_run(mode, scope, command, started).await?;
    tracing::Span::current().record("id", run_id);
    Ok(Opened {
        store,
        run_id,
        started,
        lock,
    })
}

/// Waits for `work` unless a stop comes first: then the run ends as interrupted (nothing has
/// been applied while reading, so dropping the read loses nothing).
async fn unless_stopped<T>(
    run: &Opened,
    stop: &Stop,
    work: impl std::future::Future<Output = T>,
) -> Result<T, CommandError> {
    tokio::select! {
        done = work => Ok(done),
        () = stop.requested() => {
            interrupted(&run.store, run.run_id, stop).await?;
            unreachable!("interrupted ends the run once a stop is requested")
        }
    }
}

/// The run's mapper, and what starting it again takes (a refresh that starts over in full).
struct Mapping<'c> {
    config: &'c Config,
    sel: Selection,
    migrating: BTreeSet<Anchor>,
    mapper: desired::Mapper<'c>,
}

impl<'c> Mapping<'c> {
    fn new(config: &'c Config, sel: &Selection, migrating: BTreeSet<Anchor>) -> Self {
        let mut m = Mapping {
            config,
            sel: sel.clone(),
            migrating,
            mapper: desired::Mapper::new(config),
        };
        m.mapper = m.fresh();
        m
    }

    fn fresh(&self) -> desired::Mapper<'c> {
        let mapper = desired::Mapper::new(self.config).selecting(&self.sel);
        match &self.config.migration {
            Some(m) => mapper.migrating(self.migrating.clone(), &m.onprem_routing_domain),
            None => mapper,
        }
    }

    /// The sink of [`incremental::read`]: maps each entry; `None` drops what was mapped so far.
    fn take(&mut self, entry: Option<&source::RawEntry>, progress: &Progress) {
        match entry {
            Some(entry) => {
                progress.step();
                self.mapper.push(entry);
            }
            None => self.mapper = self.fresh(),
        }
    }
}

/// Reads the whole selection from LDAP, mapping each entry as it arrives (the raw directory is
/// never held in memory): a paged full read, or an incremental one (`ldap.content_sync`)
/// whose changes and stored entries make up the same whole directory. With `quiet_first` a
/// refresh that finds nothing changed leaves the stored entries to [`fill_ldap`].
async fn read_ldap<'c>(
    config: &'c Config,
    sel: &Selection,
    run: &Opened,
    progress: &Progress,
    stop: &Stop,
    extra_migrating: &BTreeSet<Anchor>,
    quiet_first: bool,
) -> Result<(Mapping<'c>, incremental::Read), CommandError> {
    // People migrating by IMAP stay mailboxes forwarding to on-prem until cutover.
    let mut anchors: BTreeSet<Anchor> = match run.store.migrating().await {
        Ok(m) => m.into_keys().collect(),
        Err(e) => {
            fail_run(&run.store, run.run_id, &e).await?;
            return Err(e.into());
        }
    };
    anchors.extend(extra_migrating.iter().cloned());
    if config.migration.is_none() && !anchors.is_empty() {
        // Without the section LDAP alone would decide, and their mailboxes, which may hold
        // migrated mail already, would be planned back into MailUsers.
        let e = CommandError::Usage(format!(
            "the state store has {} people migrating by IMAP (`ldap2exo migrate status`), but the configuration has no [migration] section: without its onprem_routing_domain their mailboxes would be planned back into MailUsers; restore the section (or the LDAP2EXO__MIGRATION__* variables) and run again",
            anchors.len()
        ));
        fail_run(&run.store, run.run_id, &e).await?;
        return Err(e);
    }
    let mut mapping = Mapping::new(config, sel, anchors);
    progress.phase(Phase::ReadingLdap, None);
    let mut sink = |entry: Option<&source::RawEntry>| mapping.take(entry, progress);
    let read = incremental::read(
        &config.ldap,
        sel,
        &run.store,
        run.started,
        quiet_first,
        &mut sink,
    );
    match unless_stopped(run, stop, read).await? {
        Ok(read) => Ok((mapping, read)),
        Err(e) => {
            let e = CommandError::from(e);
            fail_run(&run.store, run.run_id, &e).await?;
            Err(e)
        }
    }
}

/// Maps the stored entries a quiet refresh left ([`incremental::Read::fill`]).
async fn fill_ldap(
    config: &Config,
    run: &Opened,
    progress: &Progress,
    stop: &Stop,
    mapping: &mut Mapping<'_>,
    read: &mut incremental::Read,
) -> Result<(), CommandError> {
    let mut sink = |entry: Option<&source::RawEntry>| mapping.take(entry, progress);
    let fill = read.fill(&config.ldap, &run.store, run.started, &mut sink);
    if let Err(e) = unless_stopped(run, stop, fill).await? {
        let e = CommandError::from(e);
        fail_run(&run.store, run.run_id, &e).await?;
        return Err(e);
    }
    Ok(())
}

/// The state store's objects as the tenant shows them, and the tenant with its inventory
/// (when credentials are configured): drift found, objects adopted after a lost state store.
struct TenantView {
    objects: Vec<ManagedObject>,
    drift: Vec<plan::DriftNote>,
    drifted: Vec<ManagedObject>,
    tenant: Option<(Tenant, Inventory)>,
    /// How the tenant was read, with `tenant.incremental_read`.
    tenant_read: Option<incremental::ReadReport>,
    /// What a real run stores of an incremental tenant read.
    tenant_commit: Option<TenantSyncCommit>,
    /// The incremental read's [`inventory::incremental::Read::fixed`].
    fixed: Option<String>,
}

/// Reads the tenant (see [`TenantView`]); `started` is the first half of an incremental read
/// when the run fetched it already (to see whether it can be quiet).
async fn read_tenant(
    config: &Config,
    tenant: Option<Tenant>,
    run: &Opened,
    progress: &Progress,
    stop: &Stop,
    started: Option<inventory::incremental::Start>,
    closure: Option<&partial::Touched>,
) -> Result<TenantView, CommandError> {
    let Some(tenant) = tenant else {
        tracing::info!("no tenant credentials configured: planning against the state store alone");
        return Ok(TenantView {
            objects: run.store.objects().await?,
            drift: Vec::new(),
            drifted: Vec::new(),
            tenant: None,
            tenant_read: None,
            tenant_commit: None,
            fixed: None,
        });
    };
    progress.watch(&tenant);
    progress.phase(Phase::ReadingTenant, None);
    let read = async {
        if !config.tenant.incremental_read {
            let inventory = inventory::read_with_licences(
                &tenant,
                &config.tenant.anchor_attribute,
                config.tenant.mailbox_sku.as_deref(),
            )
            .await?;
            return Ok((inventory, None));
        }
        let (t, store, now) = (&config.tenant, &run.store, run.started);
        let started = match started {
            Some(s) => s,
            None => inventory::incremental::start(&tenant, t, store, now).await?,
        };
        let read = match (closure, started) {
            (Some(c), inventory::incremental::Start::Changes(changes)) => {
                inventory::incremental::finish_read_only(t, store, changes, &c.users, &c.recipients)
                    .await?
            }
            (_, started) => {
                inventory::incremental::finish_read(&tenant, t, store, now, started).await?
            }
        };
        Ok::<_, CommandError>((
            read.inventory,
            Some((read.report, (read.commit, read.fixed))),
        ))
    };
    let (inventory, incremental) = match unless_stopped(run, stop, read).await? {
        Ok(read) => read,
        Err(e) => {
            fail_run(&run.store, run.run_id, &e).await?;
            return Err(e);
        }
    };
    let (tenant_read, commit) = incremental.unzip();
    let (tenant_commit, fixed) = commit.unzip();
    // Read after the tenant, whose raw listings are gone by now: read before, the rows
    // and the listings were in memory together (heaptrack of a 20,000-person plan).
    let objects = match closure {
        Some(c) => run.store.objects_of(&c.anchors).await?,
        None => run.store.objects().await?,
    };
    let reconciled = inventory::reconcile(objects, &inventory, run.started);
    let touched: BTreeSet<&Anchor> = reconciled.drift.iter().map(|d| &d.anchor).collect();
    let drifted = reconciled
        .objects
        .iter()
        .filter(|o| touched.contains(&o.anchor))
        .cloned()
        .collect();
    let drift = reconciled
        .drift
        .into_iter()
        .map(|d| plan::DriftNote {
            anchor: d.anchor,
            uid: d.uid,
            kind: d.kind.as_str().to_owned(),
            detail: d.detail,
        })
        .collect();
    Ok(TenantView {
        objects: reconciled.objects,
        drift,
        drifted,
        tenant: Some((tenant, inventory)),
        tenant_read,
        tenant_commit,
        fixed,
    })
}

/// Reads LDAP and, when it can be reached, the tenant; reconciles the state store's view with
/// what the tenant really holds; maps and plans. The run is recorded as started, under the
/// run lock; the caller finishes it. A stop requested before the plan is made ends the run as
/// `interrupted`. `watch` gets the tenant client as soon as there is one, so a caller can read
/// its request counters even when the run fails.
async fn compute(
    config: &Config,
    args: &SelectionArgs,
    mode: RunMode,
    command: &str,
    stop: &Stop,
    watch: &TenantWatch,
) -> Result<Computed, CommandError> {
    compute_with(config, args, mode, command, stop, watch, &BTreeSet::new()).await
}

/// [`compute`], planning the people of `extra_migrating` as migrating by IMAP although the
/// state store does not say so yet (`migrate plan`: what `migrate start` would do).
async fn compute_with(
    config: &Config,
    args: &SelectionArgs,
    mode: RunMode,
    command: &str,
    stop: &Stop,
    watch: &TenantWatch,
    extra_migrating: &BTreeSet<Anchor>,
) -> Result<Computed, CommandError> {
    let (sel, scope, run_scope) = selection(args);
    // A dry run reads the tenant too when it can: it must plan what a real run would. A
    // real run cannot go without it; its configuration is checked before anything is read.
    let tenant = match mode == RunMode::Apply || tenant_configured(config) {
        true => Some(Tenant::connect(&config.tenant)?),
        false => None,
    };
    if let Some(t) = &tenant {
        let _ = watch.set(t.clone());
    }
    let run = open_run(config, mode, run_scope, command).await?;
    let (progress, renderer) = progress::start();
    let may_be_quiet = quiet::eligible(config, args, tenant.is_some(), !extra_migrating.is_empty());
    let generation = run.store.planning_generation().await?;
    let (mut mapping, mut read) = read_ldap(
        config,
        &sel,
        &run,
        &progress,
        stop,
        extra_migrating,
        may_be_quiet,
    )
    .await?;
    let mut tenant_start = None;
    let mut closure = None;
    if let (true, Some(t)) = (read.deferred, &tenant) {
        progress.watch(t);
        progress.phase(Phase::ReadingTenant, None);
        match take_quiet(config, &run, t, &read, stop, generation).await? {
            Quiet::Taken(taken) => {
                let (mut plan, tenant_read) = *taken;
                plan.source.read = read.report;
                plan.tenant_read = Some(tenant_read.report);
                after_planning(&plan, scope, &run).await?;
                interrupted(&run.store, run.run_id, stop).await?;
                return Ok(Computed {
                    plan,
                    store: run.store,
                    run_id: run.run_id,
                    started: run.started,
                    tenant: tenant.map(|t| (t, tenant_read.inventory)),
                    drifted: Vec::new(),
                    ldap_commit: read.commit,
                    tenant_commit: Some(tenant_read.commit),
                    quiet: Some(QuietRun {
                        generation,
                        fixed: tenant_read.fixed,
                    }),
                    draft: None,
                    closure: None,
                    command: command.to_owned(),
                    _lock: run.lock,
                    progress,
                    renderer,
                });
            }
            Quiet::Plan(start) => tenant_start = Some(start),
        }
        if let Some(inventory::incremental::Start::Changes(changes)) = &tenant_start {
            let found = partial::find(config, &run.store, &read, changes, run.started).await;
            closure = failing(&run, found).await?;
        }
        match &closure {
            Some(c) => fill_closure(&run, &progress, stop, &mut mapping, &mut read, c).await?,
            None => fill_ldap(config, &run, &progress, stop, &mut mapping, &mut read).await?,
        }
    }
    let view = read_tenant(
        config,
        tenant,
        &run,
        &progress,
        stop,
        tenant_start,
        closure.as_ref(),
    )
    .await?;
    progress.phase(Phase::Planning, None);
    let coverage = Coverage {
        scope,
        closure: closure.as_ref(),
        draft: mode == RunMode::Apply && may_be_quiet,
    };
    let (mut plan, draft) = make_plan(config, args, coverage, mapping.mapper, &view, &run).await?;
    plan.source.read = read.report;
    plan.tenant_read = view.tenant_read.clone();
    interrupted(&run.store, run.run_id, stop).await?;
    let quiet = match (may_be_quiet, view.fixed) {
        (true, Some(fixed)) => Some(QuietRun { generation, fixed }),
        _ => None,
    };
    Ok(Computed {
        plan,
        store: run.store,
        run_id: run.run_id,
        started: run.started,
        tenant: view.tenant,
        drifted: view.drifted,
        ldap_commit: read.commit,
        tenant_commit: view.tenant_commit,
        quiet,
        draft,
        closure,
        command: command.to_owned(),
        _lock: run.lock,
        progress,
        renderer,
    })
}

/// `result`, or the run recorded as failed with its error.
async fn failing<T, E: Into<CommandError>>(
    run: &Opened,
    result: Result<T, E>,
) -> Result<T, CommandError> {
    match result {
        Ok(v) => Ok(v),
        Err(e) => {
            let e = e.into();
            fail_run(&run.store, run.run_id, &e).await?;
            Err(e)
        }
    }
}

/// Maps only the closure's entries ([`incremental::Read::fill_only`]): the stored ones and
/// the refresh's changes among them.
async fn fill_closure(
    run: &Opened,
    progress: &Progress,
    stop: &Stop,
    mapping: &mut Mapping<'_>,
    read: &mut incremental::Read,
    closure: &partial::Touched,
) -> Result<(), CommandError> {
    mapping.take(None, progress);
    let mut sink = |entry: Option<&source::RawEntry>| mapping.take(entry, progress);
    let fill = read.fill_only(&run.store, &closure.entries, &mut sink);
    let filled = unless_stopped(run, stop, fill).await?;
    failing(run, filled).await
}

/// Whether a run whose LDAP refresh found nothing changed is quiet ([`quiet::take`]).
enum Quiet {
    /// The kept plan, and the tenant read that found nothing changed.
    Taken(Box<(Plan, inventory::incremental::Read)>),
    /// Something changed: plan, with the tenant's changes already fetched.
    Plan(inventory::incremental::Start),
}

/// Fetches the tenant's changes and takes the kept plan when nothing else changed either.
async fn take_quiet(
    config: &Config,
    run: &Opened,
    tenant: &Tenant,
    read: &incremental::Read,
    stop: &Stop,
    generation: i64,
) -> Result<Quiet, CommandError> {
    let start = inventory::incremental::start(tenant, &config.tenant, &run.store, run.started);
    let start = match unless_stopped(run, stop, start).await? {
        Ok(start) => start,
        Err(e) => {
            let e = CommandError::from(e);
            fail_run(&run.store, run.run_id, &e).await?;
            return Err(e);
        }
    };
    let kept = quiet::take(config, &run.store, read, &start, generation, run.started).await?;
    Ok(match (kept, start) {
        (Some(plan), inventory::incremental::Start::Changes(changes)) => {
            quiet::announce(&plan);
            Quiet::Taken(Box::new((plan, changes.quiet(&config.tenant))))
        }
        (_, start) => Quiet::Plan(start),
    })
}

/// What a plan covers: everybody or `--only` people, or the closure of the changes
/// (`plan::partial`); and whether the run keeps what the plan adds to the next run's base.
struct Coverage<'a> {
    scope: Scope,
    closure: Option<&'a partial::Touched>,
    draft: bool,
}

/// The planning phase: maps what LDAP gave against the state store and tenant, plans, logs
/// the plan, and (for a full read) records the quarantine.
async fn make_plan(
    config: &Config,
    args: &SelectionArgs,
    coverage: Coverage<'_>,
    mapper: desired::Mapper<'_>,
    view: &TenantView,
    run: &Opened,
) -> Result<(Plan, Option<partial::Draft>), CommandError> {
    let Coverage {
        scope,
        closure,
        draft: want_draft,
    } = coverage;
    let clock = std::time::Instant::now();
    let known: BTreeSet<_> = view
        .objects
        .iter()
        .filter(|o| o.stage != Stage::Deleted)
        .map(|o| o.anchor.clone())
        .collect();
    let mut desired = mapper.finish(&known);
    let outside = match closure {
        Some(c) => partial::complete(&run.store, c, &mut desired, &view.objects).await?,
        None => plan::Outside::default(),
    };
    let draft = want_draft.then(|| partial::Draft::of(&desired, &view.objects));
    let mapped_ms = clock.elapsed().as_millis() as u64;
    let baseline = run.store.baseline().await?;
    let journaled_creates = run.store.journaled_creates().await?;
    let recent_removals = run.store.recent_removals(run.started).await?;
    let approval = match approval::resolve(config, &args.approval).await {
        Ok(a) => a,
        Err(e) => {
            fail_run(&run.store, run.run_id, &e).await?;
            return Err(e);
        }
    };
    let mut plan = plan::plan(plan::Input {
        desired,
        objects: &view.objects,
        baseline,
        scope,
        safety: &config.safety,
        max_deletes: args.max_deletes,
        approval: approval.as_ref(),
        recent_removals,
        tenant: view.tenant.as_ref().map(|(_, inventory)| inventory),
        journaled_creates: &journaled_creates,
        outside,
        now: run.started,
    });
    plan.partial = closure.map(|c| plan::Partially {
        since_run: c.base_run,
        entries: c.entries.len(),
        anchors: c.anchors.len(),
    });
    plan.source.only = args.only.clone();
    plan.drift = view.drift.clone();
    plan.bill = Some(plan::bill::bill(
        &plan,
        &plan::bill::Facts {
            objects: &view.objects,
            tenant: view.tenant.as_ref().map(|(_, inventory)| inventory),
            usage_location: config.tenant.usage_location.is_some(),
            budget: &config.tenant.budget,
        },
    ));
    tracing::debug!(
        rss_mb = rss_mb(),
        mapped_ms,
        planned_ms = clock.elapsed().as_millis() as u64 - mapped_ms,
        "mapped and planned"
    );
    after_planning(&plan, scope, run).await?;
    Ok((plan, draft))
}

/// What every plan is followed by, made or taken: its warnings logged, the quarantine
/// recorded (for a full read), the summary logged.
async fn after_planning(plan: &Plan, scope: Scope, run: &Opened) -> Result<(), CommandError> {
    for q in &plan.quarantined {
        tracing::warn!(dn = %q.dn, field = %q.field, reason = %q.reason, "entry quarantined");
    }
    for d in &plan.drift {
        tracing::warn!(uid = %d.uid, kind = %d.kind, detail = %d.detail, "tenant drifted from the state store");
    }
    if scope == Scope::Full {
        run.store
            .replace_quarantine(&plan.quarantined, run.started)
            .await?;
    }
    tracing::info!(
        run = run.run_id,
        entries = plan.source.entries,
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
    Ok(())
}

/// The tenant client of a run, once connected: its request counters outlive a failed run.
pub type TenantWatch = std::sync::OnceLock<Tenant>;

/// Ends the run as interrupted when a stop was requested (between reading and applying).
async fn interrupted(store: &Store, run_id: i64, stop: &Stop) -> Result<(), CommandError> {
    if !stop.is_requested() {
        return Ok(());
    }
    let why = "stopped (SIGTERM/SIGINT) before anything was applied";
    end_run(store, run_id, Outcome::Interrupted, &why).await?;
    store.close().await;
    Err(CommandError::Interrupted(why.into()))
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
        source_count: Some(c.plan.source.entries as u64),
        verdict: Some(if blocked { "blocked" } else { "ok" }),
        summary: Some(serde_json::to_value(&c.plan.summary).expect("summary serialises")),
        results: None,
        error: None,
    };
    let ended = now()?;
    c.store.finish_run(c.run_id, &end, ended).await?;
    approval::record(&c.store, c.run_id, &c.plan, None, ended).await?;
    c.store.close().await;
    Ok(c.plan)
}

fn verdict_exit(plan: &Plan) -> Exit {
    match plan.safety.verdict {
        Verdict::Ok => Exit::Ok,
        Verdict::Blocked => Exit::Blocked,
    }
}

/// A dry run over `selection` with `migrating` planned as migrating by IMAP (`migrate
/// plan`): the plan `migrate start` would apply, with the tenant's inventory when it can be
/// read. Recorded as a dry run; changes nothing.
pub(crate) async fn dry_plan_migrating(
    config: &Config,
    selection: &SelectionArgs,
    migrating: &BTreeSet<Anchor>,
    command: &str,
    stop: &Stop,
) -> Result<(Plan, Option<Inventory>), CommandError> {
    let mut c = compute_with(
        config,
        selection,
        RunMode::DryRun,
        command,
        stop,
        &TenantWatch::new(),
        migrating,
    )
    .await?;
    let inventory = c.tenant.take().map(|(_, i)| i);
    Ok((finish_planned(c).await?, inventory))
}

/// A span for one run; its `id` is filled in once the state store has numbered the run.
pub(crate) fn run_span(command: &str) -> tracing::Span {
    tracing::info_span!("run", id = tracing::field::Empty, command)
}

pub async fn sync(config: &Config, args: &SyncArgs, stop: &Stop) -> Result<Exit, CommandError> {
    let command = if args.dry_run {
        "sync --dry-run"
    } else {
        "sync"
    };
    sync_inner(config, args, stop)
        .instrument(run_span(command))
        .await
}

async fn sync_inner(config: &Config, args: &SyncArgs, stop: &Stop) -> Result<Exit, CommandError> {
    let dest = output::open(args.output.as_deref())?;
    if args.dry_run {
        let plan = finish_planned(
            compute(
                config,
                &args.selection,
                RunMode::DryRun,
                "sync --dry-run",
                stop,
                &TenantWatch::new(),
            )
            .await?,
        )
        .await?;
        let clock = std::time::Instant::now();
        write_out(dest, |w| {
            report::write(w, &plan, None, args.format, "sync --dry-run")
        })?;
        tracing::debug!(
            format = ?args.format,
            elapsed_ms = clock.elapsed().as_millis() as u64,
            "wrote the report"
        );
        return Ok(verdict_exit(&plan));
    }
    let finished = real_run(config, &args.selection, "sync", stop, &TenantWatch::new()).await?;
    write_out(dest, |w| {
        report::write(
            w,
            &finished.plan,
            Some(&finished.results),
            args.format,
            "sync",
        )
    })?;
    Ok(finished.exit())
}

/// A real run over `selection`: plan, apply, record, notify. The daemon's tick and `sync`
/// share it; `watch` gets the tenant client (for its counters, also when the run fails).
pub(crate) async fn real_run(
    config: &Config,
    selection: &SelectionArgs,
    command: &str,
    stop: &Stop,
    watch: &TenantWatch,
) -> Result<Finished, CommandError> {
    real_run_migrating(config, selection, command, stop, watch, &BTreeSet::new()).await
}

/// [`real_run`], planning the people of `extra_migrating` as migrating by IMAP although the
/// state store does not say so yet (`migrate start`: the cohort is recorded only for those
/// whose actions succeeded, so a failed run leaves nobody for the daemon to license).
pub(crate) async fn real_run_migrating(
    config: &Config,
    selection: &SelectionArgs,
    command: &str,
    stop: &Stop,
    watch: &TenantWatch,
    extra_migrating: &BTreeSet<Anchor>,
) -> Result<Finished, CommandError> {
    let run = async {
        let computed = compute_with(
            config,
            selection,
            RunMode::Apply,
            command,
            stop,
            watch,
            extra_migrating,
        )
        .await?;
        execute(config, computed, stop).await
    };
    let result = run.await;
    if let Err(e) = &result {
        notify_failure(config, command, e).await;
    }
    result
}

/// Mails a run that failed before it applied anything (LDAP or the tenant unreachable, a
/// stop while reading). Problems of the command line or configuration are the operator's at
/// the terminal and are not mailed; neither is a run refused because another holds the lock.
async fn notify_failure(config: &Config, command: &str, e: &CommandError) {
    let outcome = match e {
        CommandError::Source(_)
        | CommandError::Tenant(_)
        | CommandError::Apply(_)
        | CommandError::State(_) => Outcome::Failed,
        CommandError::Interrupted(_) => Outcome::Interrupted,
        _ => return,
    };
    if e.exit() == Exit::Usage || !config.notify.enabled() {
        return;
    }
    let Ok(store) = Store::open(&config.state.path).await else {
        return;
    };
    let notice = notify::Notice::of_run(
        None,
        command,
        outcome,
        &notify::host_name(),
        None,
        None,
        Some(&e.to_string()),
    );
    notify::after_run(config, &store, notice, now().unwrap_or_default()).await;
    store.close().await;
}

/// Stores the entries and cookie of an incremental LDAP read when every change it covers is
/// in the tenant or held by the plan (`complete`). After a failure, a block or a stop the old
/// cookie stays, so the next run is sent the same changes again.
async fn commit_ldap_read(
    store: &Store,
    commit: Option<&LdapSyncCommit>,
    now: i64,
    complete: bool,
) -> Result<(), CommandError> {
    let Some(commit) = commit else {
        return Ok(());
    };
    if !complete {
        tracing::info!("not every change was applied: the LDAP cookie stays where it was");
        return Ok(());
    }
    store.commit_ldap_sync(commit, now).await?;
    tracing::debug!(
        full = commit.full,
        upserts = commit.upserts.len(),
        removes = commit.removes.len(),
        "stored the LDAP entries and cookie"
    );
    Ok(())
}

/// Leaves the base of partial planning for the next run (`plan::partial`): this run's plan
/// when it covered everybody and committed its LDAP read; the last one's, with the marks of
/// this run's reads, when it took that plan (quiet); none otherwise.
async fn leave_base(
    config: &Config,
    c: Ending<'_>,
    q: &QuietRun,
    complete: bool,
) -> Result<(), CommandError> {
    let clock = std::time::Instant::now();
    match (c.draft, complete, c.plan.unchanged_since_run) {
        (_, true, Some(_)) => c.store.advance_plan_base().await?,
        (Some(draft), true, None) if c.plan.source.scope == "full" => {
            let run = partial::BaseRun {
                run_id: c.run_id,
                planned_at: c.started,
                plan: c.plan,
                fixed: &q.fixed,
                draft,
                touched: c.closure,
            };
            if let Err(e) = partial::write(config, c.store, run).await {
                tracing::warn!(error = %e, "cannot keep this plan for partial planning: the next run plans everybody");
                c.store.drop_plan_base().await?;
            }
        }
        _ => c.store.drop_plan_base().await?,
    }
    tracing::debug!(
        elapsed_ms = clock.elapsed().as_millis() as u64,
        "base for partial planning left"
    );
    Ok(())
}

/// What [`leave_base`] needs of a finished real run.
struct Ending<'a> {
    store: &'a Store,
    run_id: i64,
    started: i64,
    plan: &'a Plan,
    draft: Option<&'a partial::Draft>,
    closure: Option<&'a partial::Touched>,
}

/// Applies a computed plan and records the run: the shared end of `sync` and `apply`.
async fn execute(config: &Config, c: Computed, stop: &Stop) -> Result<Finished, CommandError> {
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
        progress: &c.progress,
        // Under a scoped approval the plan holds every removal it does not cover.
        allow_removals: c.plan.safety.removals_go(),
        concurrency: config.tenant.concurrency.max(1) as usize,
        visibility_wait: Duration::from_secs(u64::from(config.tenant.propagation_wait_seconds)),
        stop,
        grace: Duration::from_secs(u64::from(config.daemon.shutdown_grace_seconds)),
    };
    let clock = std::time::Instant::now();
    let results = apply::apply(&c.plan, &ctx).await?;
    c.renderer.finish();
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
    let tally = apply::Tally::of(&results);
    // In a stopped run a failure may be an action cut off after the grace: the run as a whole
    // is interrupted, not failed, and the next run finishes it.
    let stopped = stop.is_requested() && tally.not_started + tally.failed > 0;
    let outcome = match (blocked, failed) {
        _ if stopped => Outcome::Interrupted,
        (true, _) => Outcome::Blocked,
        (false, 0) => Outcome::Ok,
        (false, f) if f == results.len() => Outcome::Failed,
        _ => Outcome::Partial,
    };
    // A held action was never sent: known from the reads, reported, and planned again from
    // the stored entries by every run until what holds it goes. It does not hold the cookie.
    let held: BTreeSet<(&Anchor, plan::Op)> = c
        .plan
        .actions
        .iter()
        .filter(|a| a.held.is_some())
        .map(|a| (&a.anchor, a.op))
        .collect();
    let failed_sent = results
        .iter()
        .filter(|r| !held.contains(&(&r.anchor, r.op)))
        .filter(|r| {
            matches!(
                r.outcome,
                apply::Outcome::Failed(_) | apply::Outcome::Conflict(_)
            )
        })
        .count();
    let complete = !blocked && !stopped && failed_sent == 0 && tally.not_started == 0;
    commit_ldap_read(&c.store, c.ldap_commit.as_ref(), c.started, complete).await?;
    if let Some(commit) = &c.tenant_commit {
        c.store.commit_tenant_sync(commit, c.started).await?;
    }
    let end = RunEnd {
        outcome,
        source_count: Some(c.plan.source.entries as u64),
        verdict: Some(if blocked { "blocked" } else { "ok" }),
        summary: Some(serde_json::to_value(&c.plan.summary).expect("summary serialises")),
        results: Some(serde_json::to_value(tally).expect("counts serialise")),
        error: match (outcome, failed) {
            (Outcome::Interrupted, _) => Some(format!(
                "stopped (SIGTERM/SIGINT): {} actions not started, {} failed or cut off; the next run does them",
                tally.not_started, tally.failed
            )),
            (_, 0) => None,
            (_, f) => Some(format!("{f} actions failed")),
        },
    };
    let ended = now()?;
    c.store.finish_run(c.run_id, &end, ended).await?;
    if let Some(q) = &c.quiet {
        let ending = Ending {
            store: &c.store,
            run_id: c.run_id,
            started: c.started,
            plan: &c.plan,
            draft: c.draft.as_ref(),
            closure: c.closure.as_ref(),
        };
        leave_base(config, ending, q, complete).await?;
        let ending = quiet::Ending {
            plan: &c.plan,
            run_id: c.run_id,
            started: c.started,
            ldap: c.ldap_commit.as_ref().filter(|_| complete),
            tenant: c.tenant_commit.as_ref(),
        };
        quiet::keep(config, &c.store, q, ending).await?;
    }
    approval::record(&c.store, c.run_id, &c.plan, Some(&results), ended).await?;
    let notice = notify::Notice::of_run(
        Some(c.run_id),
        &c.command,
        outcome,
        &notify::host_name(),
        Some(&c.plan),
        Some(&results),
        end.error.as_deref(),
    );
    notify::after_run(config, &c.store, notice, ended).await;
    c.store.close().await;
    Ok(Finished {
        run_id: c.run_id,
        outcome,
        plan: c.plan,
        results,
        stats,
    })
}

pub async fn plan(config: &Config, args: &PlanArgs, stop: &Stop) -> Result<Exit, CommandError> {
    let dest = output::open(Some(&args.output))?;
    let computed = compute(
        config,
        &args.selection,
        RunMode::Plan,
        "plan",
        stop,
        &TenantWatch::new(),
    )
    .instrument(run_span("plan"))
    .await?;
    let plan = finish_planned(computed).await?;
    write_out(dest, |w| {
        report::write(w, &plan, None, Format::Json, "plan")
    })?;
    // The text people sign off goes to standard output (`> plan.txt`); `apply` prints the
    // same before it writes. On a terminal it already ends with the bill and the verdict.
    print!("{}", report::render(&plan, Format::Text, "plan"));
    if !std::io::stdout().is_terminal() {
        if let Some(bill) = report::bill_line(&plan) {
            eprintln!("{bill}");
        }
        eprint!("{}", report::verdict_and_summary(&plan));
    }
    Ok(verdict_exit(&plan))
}

/// `apply plan.json`: applies exactly the reviewed plan, after checking that planning now
/// gives the same actions (LDAP, the state store and the tenant have not moved since).
pub async fn apply_file(
    config: &Config,
    args: &ApplyArgs,
    stop: &Stop,
) -> Result<Exit, CommandError> {
    apply_inner(config, args, stop)
        .instrument(run_span("apply"))
        .await
}

async fn apply_inner(config: &Config, args: &ApplyArgs, stop: &Stop) -> Result<Exit, CommandError> {
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
        approval: approval::of_plan(&reviewed, &args.approval, &args.plan)?,
    };
    let dest = output::open(args.output.as_deref())?;
    let computed = match compute(
        config,
        &selection,
        RunMode::Apply,
        "apply",
        stop,
        &TenantWatch::new(),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            notify_failure(config, "apply", &e).await;
            return Err(e);
        }
    };
    let digest = plan::digest(&reviewed);
    let done = match record_plan(&computed, &digest).await {
        Ok(done) => done,
        Err(e) => {
            fail_run(&computed.store, computed.run_id, &e).await?;
            return Err(e);
        }
    };
    let moved = match args.resume {
        true => plan::unexplained(&reviewed, &computed.plan, &done.keys().cloned().collect()),
        false => plan::moved(&reviewed, &computed.plan),
    };
    if !moved.is_empty() {
        let resumable = args.resume
            || plan::unexplained(&reviewed, &computed.plan, &done.keys().cloned().collect())
                .is_empty();
        let message = stale_message(
            &args.plan,
            &computed.plan,
            &moved,
            &done,
            args.resume,
            resumable,
        );
        // The run's record keeps one line; the message names everything.
        let record = format!(
            "stale plan {}: {} differences since it was made, e.g. {}",
            args.plan.display(),
            moved.len(),
            moved[0]
        );
        fail_run(&computed.store, computed.run_id, &record).await?;
        return Err(CommandError::Stale(message));
    }
    // What is applied, as the operator reviewed it: the plan (or, resuming, what is left
    // of it), in the text form of `sync --dry-run`, before anything is written.
    if args.resume && !done.is_empty() {
        let runs: BTreeSet<i64> = done.values().copied().collect();
        eprintln!(
            "Resuming {}: {} of its {} actions were done by {}; applying the {} left.",
            args.plan.display(),
            // Resumable: every action left pairs with one of the plan's.
            reviewed
                .actions
                .len()
                .saturating_sub(computed.plan.actions.len()),
            reviewed.actions.len(),
            runs_named(&runs),
            computed.plan.actions.len()
        );
        eprint!("{}", report::render(&computed.plan, Format::Text, "apply"));
    } else {
        eprint!("{}", report::render(&reviewed, Format::Text, "apply"));
    }
    let finished = execute(config, computed, stop).await?;
    write_out(dest, |w| {
        report::write(
            w,
            &finished.plan,
            Some(&finished.results),
            args.format,
            "apply",
        )
    })?;
    Ok(finished.exit())
}

/// Records on the run which reviewed plan it applies; returns the actions an earlier,
/// interrupted apply of the same plan finished (with the run that did each).
async fn record_plan(
    c: &Computed,
    digest: &str,
) -> Result<BTreeMap<(Anchor, plan::Op), i64>, CommandError> {
    c.store.set_run_plan(c.run_id, digest).await?;
    Ok(c.store
        .finished_by_plan(digest)
        .await?
        .into_iter()
        .filter(|(_, _, run)| *run != c.run_id)
        .filter_map(|(anchor, op, run)| {
            let op = plan::Op::ALL.into_iter().find(|o| o.as_str() == op)?;
            Some(((anchor, op), run))
        })
        .collect())
}

fn runs_named(runs: &BTreeSet<i64>) -> String {
    let ids: Vec<String> = runs.iter().map(i64::to_string).collect();
    match ids.len() {
        1 => format!("run {}", ids[0]),
        _ => format!("runs {}", ids.join(", ")),
    }
}

/// At most this many moved lines in a stale plan's message; the rest are counted.
const MOVED_SHOWN: usize = 50;

/// Why `apply` refuses `file`: what moved, person by person and field by field, and what to
/// do: review a new plan, or (when all that moved is what an interrupted apply of this plan
/// did, `resumable`) resume it.
fn stale_message(
    file: &std::path::Path,
    now: &Plan,
    moved: &[plan::Moved],
    done: &BTreeMap<(Anchor, plan::Op), i64>,
    resume: bool,
    resumable: bool,
) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{}: LDAP, the state store or the tenant changed since the plan was made ({} {}); nothing was written to the tenant:",
        file.display(),
        moved.len(),
        if moved.len() == 1 {
            "difference"
        } else {
            "differences"
        }
    );
    for m in moved.iter().take(MOVED_SHOWN) {
        let _ = write!(out, "\n  {m}");
        if let plan::Moved::Gone { anchor, op, .. } = m
            && let Some(run) = done.get(&(anchor.clone(), *op))
        {
            let _ = write!(out, " — done by run {run}, an apply of this plan");
        }
    }
    if moved.len() > MOVED_SHOWN {
        let _ = write!(out, "\n  … and {} more", moved.len() - MOVED_SHOWN);
    }
    let runs: BTreeSet<i64> = done.values().copied().collect();
    let new_plan = format!(
        "review a new plan (ldap2exo plan --output {})",
        file.display()
    );
    let _ = match (runs.is_empty(), resume, resumable) {
        (true, _, _) => write!(out, "\nR{}.", &new_plan[1..]),
        (false, true, _) => write!(
            out,
            "\nThese are not what the earlier apply of this plan ({}) left: {new_plan}.",
            runs_named(&runs)
        ),
        (false, false, true) if now.actions.is_empty() => write!(
            out,
            "\nThis plan was applied already by {}: nothing of it is left to do.",
            runs_named(&runs)
        ),
        (false, false, true) => write!(
            out,
            "\nThis plan was partly applied by {} (interrupted): re-run with --resume to continue it, or {new_plan}.",
            runs_named(&runs)
        ),
        (false, false, false) => write!(
            out,
            "\nThis plan was partly applied by {}, and more has moved since: {new_plan}.",
            runs_named(&runs)
        ),
    };
    out
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
