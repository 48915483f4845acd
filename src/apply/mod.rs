//! apply: executes a plan against the tenant, one idempotent action per person.
//!
//! Each action runs as a short sequence of steps. Every step is written to the journal when
//! it starts and when its outcome is known, and the state store is updated after every step
//! that succeeded, so a crash loses nothing and the next run plans exactly what is still
//! missing. Actions of different people run concurrently; the tenant client's limiter keeps
//! them within Microsoft's throttling. A failed action is recorded on its person and never
//! stops the rest.
//!
//! Every changed field is written through the request its [`Field::writer`] names, and an
//! action proves at its end that it handled (or visibly deferred) every field the plan
//! changed: a change can never be recorded as applied without being sent.
//!
//! Ownership: an existing object is touched only when the tenant shows our stamp
//! (`ldap2exo:<anchor>` in `tenant.anchor_attribute`) on it ([`Inventory`]). Creates are
//! idempotent: an answer that never came is journaled `unknown`, and the object is then
//! found by the UPN and `Name` we chose (that is the proof) and adopted, never created twice.
//!
//! Licences: the plan already holds the actions it has no free mailbox licence for (sent
//! nothing, reported failed). A licence can still go between planning and the call: a new
//! mailbox person is created only after a fresh `GET /subscribedSkus` shows one free, and a
//! user whose `assignLicense` is refused all the same is kept blocked and recorded for the
//! next run to finish (see `steps.rs`, `licence_free` and `unlicensed`); a MailUser whose
//! convert is refused stays the MailUser it was, its state row untouched.

mod sign_ins;
mod steps;

pub(crate) use steps::until_visible;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::config::Config;
use crate::desired::Kind;
use crate::ids::Anchor;
use crate::inventory::{Inventory, TenantObject, smtp_proxy};
use crate::plan::{Action, Field, Fields, HeldOutcome, Op, Phase, Plan, Writer};
use crate::progress::{self, Progress};
use crate::secret::Secret;
use crate::state::{ManagedObject, Stage, StateError, Store};
use crate::tenant::{Tenant, TenantError};

/// What stops a whole run: the state store failing (then nothing can be recorded safely).
/// Tenant errors are per action and end up in [`ActionResult`].
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    State(#[from] StateError),
}

/// How one action ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum Outcome {
    Done,
    /// Done as far as the tenant allows now; the rest (a mailbox Exchange is still
    /// provisioning, an object Graph does not show yet) follows on a later run.
    Pending(String),
    /// Not attempted (a safety gate held it back).
    Skipped(String),
    /// An address, UPN or Name belongs to an object ldap2exo does not manage. Nothing of
    /// it was forced; the rest of the person may have been applied (the detail says).
    Conflict(String),
    Failed(String),
    /// Never started: the run was stopped (SIGTERM/SIGINT) first. The next run plans it again.
    NotStarted(String),
}

/// How many actions of a run ended each way: the `applied` object of a report, the `results`
/// of a run in the state store, and what `status` and the metrics count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    pub done: usize,
    pub pending: usize,
    pub skipped: usize,
    pub conflict: usize,
    pub failed: usize,
    #[serde(default)]
    pub not_started: usize,
}

impl Tally {
    pub fn of(results: &[ActionResult]) -> Self {
        let mut t = Tally::default();
        for r in results {
            *match r.outcome {
                Outcome::Done => &mut t.done,
                Outcome::Pending(_) => &mut t.pending,
                Outcome::Skipped(_) => &mut t.skipped,
                Outcome::Conflict(_) => &mut t.conflict,
                Outcome::Failed(_) => &mut t.failed,
                Outcome::NotStarted(_) => &mut t.not_started,
            } += 1;
        }
        t
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ActionResult {
    pub op: Op,
    pub anchor: Anchor,
    pub uid: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Everything an action needs besides the action itself.
pub struct Context<'a> {
    pub tenant: &'a Tenant,
    pub store: &'a Store,
    pub config: &'a Config,
    pub inventory: &'a Inventory,
    pub run_id: i64,
    pub now: i64,
    /// False when the safety verdict is blocked: disables and deletes are skipped.
    pub allow_removals: bool,
    /// Actions of different people working at once (`tenant.concurrency`); an action that
    /// waits for the tenant parks and gives its slot to another (see [`Workers`]).
    pub concurrency: usize,
    /// How long a step waits for an object that the service has just created but does not
    /// show yet (404 right after a create, propagation between Exchange and Graph):
    /// `tenant.propagation_wait_seconds`. Microsoft publishes no figure; CIPP waits 3 s after
    /// `New-Mailbox`, and reports of 404s after `POST /users` speak of seconds.
    pub visibility_wait: Duration,
    /// Once requested, no further action starts (its outcome is `NotStarted`).
    pub stop: &'a crate::shutdown::Stop,
    /// How long an action in flight may go on after a stop (`daemon.shutdown_grace_seconds`);
    /// one still running then is cut off and reported failed, its journal step left
    /// `pending` for the next run to check.
    pub grace: Duration,
    /// Counts finished actions for the progress display.
    pub progress: &'a Progress,
}

/// Applies every action of `plan`; returns one result per action, in plan order. The
/// sign-ins of new MailUsers are blocked beside the actions ([`sign_ins`]).
pub async fn apply(plan: &Plan, ctx: &Context<'_>) -> Result<Vec<ActionResult>, ApplyError> {
    let (handover, new_mail_users) = tokio::sync::mpsc::unbounded_channel();
    let (results, blocked) = futures_util::future::join(
        apply_actions(plan, ctx, handover),
        sign_ins::block(new_mail_users, ctx),
    )
    .await;
    let results = results?;
    blocked?;
    Ok(results)
}

/// The actions of both phases; `handover` is dropped when they are over, which tells the
/// sign-in blocker that no more new MailUsers come.
async fn apply_actions(
    plan: &Plan,
    ctx: &Context<'_>,
    handover: sign_ins::Handover,
) -> Result<Vec<ActionResult>, ApplyError> {
    let released: BTreeSet<String> = plan
        .actions
        .iter()
        .filter(|a| a.phase == Phase::Release && a.held.is_none())
        .flat_map(|a| crate::plan::released_values(&a.changes))
        .collect();
    let workers = Workers::new(ctx.concurrency);
    let mut results = Vec::with_capacity(plan.actions.len());
    // Every release finishes before any claim starts (the plan lists releases first).
    for phase in [Phase::Release, Phase::Main] {
        let count = plan.actions.iter().filter(|a| a.phase == phase).count();
        let shown = match phase {
            Phase::Release => progress::Phase::ApplyingReleases,
            Phase::Main => progress::Phase::Applying,
        };
        if count > 0 {
            ctx.progress.phase(shown, Some(count as u64));
        }
        // Started in plan order, taken as they finish: collected in order (`buffered`), a
        // slow action (a mailbox Exchange is provisioning, seconds) held back every start
        // after the next `started()` ones, and the run stalled behind it (measured: Exchange
        // idle for 3 s at a time in a 2,000-person rollover).
        let (handover, released, workers) = (&handover, &released, &workers);
        let mut done: Vec<(usize, Result<ActionResult, ApplyError>)> =
            futures_util::stream::iter(plan.actions.iter().filter(|a| a.phase == phase))
                .enumerate()
                .map(|(i, action)| async move {
                    (i, run(action, ctx, handover, released, workers).await)
                })
                .buffer_unordered(workers.started())
                .collect()
                .await;
        done.sort_unstable_by_key(|(i, _)| *i);
        for (_, r) in done {
            results.push(r?);
        }
    }
    Ok(results)
}

/// Journal result of a step the tenant could not take yet; a later run does it.
const DEFERRED: &str = "deferred";

/// Actions may wait for a while in the middle (an object the service has just created and
/// does not show yet answers 404 for seconds; Exchange frees a released address only after a
/// while). `tenant.concurrency` actions work at once; one that waits parks, giving its slot
/// to another (many more are started than work, so one is ready), and takes a slot again
/// when its wait is over. The services' limiters hold a request slot only during a request.
///
/// It also learns how long a new object takes to become visible after its create, per create
/// request (see `Job::step_visible`), so the first call on a new object waits that long,
/// parked, instead of spending requests (and write budget) on 404s.
pub(crate) struct Workers {
    slots: tokio::sync::Semaphore,
    concurrency: usize,
    visible_after: Mutex<BTreeMap<String, Duration>>,
}

/// A first call answered within this of the learnt visibility delay went out without waiting
/// for the service's pace ([`Workers::learn_visible_after`]).
const PROMPT: Duration = Duration::from_millis(100);

/// How many actions may be started per working slot: the rest wait parked.
const STARTED_PER_SLOT: usize = 8;

impl Workers {
    fn new(concurrency: usize) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            slots: tokio::sync::Semaphore::new(concurrency),
            concurrency,
            visible_after: Mutex::new(BTreeMap::new()),
        }
    }

    /// How long objects made by `create` have taken to become visible (zero until learnt).
    fn visible_after(&self, create: &str) -> Duration {
        let learnt = self.visible_after.lock().unwrap_or_else(|e| e.into_inner());
        learnt.get(create).copied().unwrap_or_default()
    }

    /// Learns from the first call on an object made by `create`, from when its tries were
    /// `answered` (since the create): the last one went through, the others found nothing.
    /// Waiting too long costs a parked action a little time; waiting too short costs a
    /// request of the binding budget. So the estimate jumps up to the answer of the last try
    /// that found nothing (the object was still hidden then, at the latest) and creeps down
    /// (1/64 per first try that went through and was answered within [`PROMPT`] of the
    /// estimate), following a service that got faster without many 404s. A first try answered
    /// later says nothing about the estimate: it waited for the service's pace (counted, they
    /// took the estimate from 0.4 s to 2 ms in a 2,000-person rollover). Either way about one
    /// new MailUser in eight draws a 404 while the estimate settles just under the window.
    /// Not up to the start of the try that went through: that includes the backoff
    /// and the wait for the service's pace, and a 400 ms window was learnt as 6.1-6.8 s at
    /// the start of a 2,000-person rollover; every new MailUser then waited that long,
    /// parked, and Exchange idled for seconds once all started actions were waiting.
    fn learn_visible_after(&self, create: &str, answered: &[Duration]) {
        let mut learnt = self.visible_after.lock().unwrap_or_else(|e| e.into_inner());
        let entry = learnt.entry(create.to_owned()).or_default();
        let before = *entry;
        *entry = match answered {
            [] => *entry,
            [first] if *first <= *entry + PROMPT => *entry * 63 / 64,
            [_] => *entry,
            [.., missed, _] => (*entry).max(*missed),
        };
        if *entry > before {
            tracing::debug!(
                create,
                from_ms = before.as_millis() as u64,
                to_ms = entry.as_millis() as u64,
                tries = answered.len(),
                "new objects take longer to show; waiting that long before the first call"
            );
        }
    }

    /// Actions started at once (working or parked).
    fn started(&self) -> usize {
        self.concurrency * STARTED_PER_SLOT
    }

    /// Waits for a working slot.
    async fn enter(&self) -> Slot<'_> {
        // The semaphore is never closed.
        if let Ok(p) = self.slots.acquire().await {
            p.forget();
        }
        Slot {
            workers: self,
            held: std::sync::atomic::AtomicBool::new(true),
        }
    }
}

/// An action's working slot; given back while it is parked and when it is dropped (also when
/// the action is cut off in the middle).
pub(crate) struct Slot<'a> {
    workers: &'a Workers,
    held: std::sync::atomic::AtomicBool,
}

impl Slot<'_> {
    /// Awaits `wait` without the slot, then takes one again.
    pub(crate) async fn park<F: std::future::Future>(&self, wait: F) -> F::Output {
        use std::sync::atomic::Ordering;
        if self.held.swap(false, Ordering::SeqCst) {
            self.workers.slots.add_permits(1);
        }
        let out = wait.await;
        if let Ok(p) = self.workers.slots.acquire().await {
            p.forget();
        }
        self.held.store(true, Ordering::SeqCst);
        out
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.held.load(std::sync::atomic::Ordering::SeqCst) {
            self.workers.slots.add_permits(1);
        }
    }
}

async fn run(
    action: &Action,
    ctx: &Context<'_>,
    late: &sign_ins::Handover,
    released: &BTreeSet<String>,
    workers: &Workers,
) -> Result<ActionResult, ApplyError> {
    let outcome = if let Some(held) = &action.held {
        // The plan knew from the tenant it read: nothing is sent.
        match held.outcome {
            HeldOutcome::Conflict => Outcome::Conflict(held.reason.clone()),
            HeldOutcome::Failed => Outcome::Failed(held.reason.clone()),
            HeldOutcome::Skipped => Outcome::Skipped(held.reason.clone()),
        }
    } else if (action.op.is_removal() || action.op == Op::Purge) && !ctx.allow_removals {
        // A purge destroys what a restore could bring back: held back with the removals.
        Outcome::Skipped("the safety verdict is blocked: nothing is disabled or deleted".into())
    } else if ctx.stop.is_requested() {
        Outcome::NotStarted(NOT_STARTED.into())
    } else {
        let job = async {
            // Many more actions are started than work at once (see `Workers`): one that is
            // still waiting for its first slot when the run is stopped has not started.
            let slot = tokio::select! {
                biased;
                () = ctx.stop.requested() => None,
                slot = workers.enter() => Some(slot),
            };
            let Some(slot) = slot.filter(|_| !ctx.stop.is_requested()) else {
                return Ok(Outcome::NotStarted(NOT_STARTED.into()));
            };
            let mut job = Job::new(action, ctx, late, released, &slot).await?;
            Ok::<_, ApplyError>(match job.execute().await {
                Ok(()) => job.outcome(),
                Err(Stop::Conflict(why)) => Outcome::Conflict(why),
                Err(Stop::Failed(why) | Stop::NoLicence(why)) => Outcome::Failed(why),
                Err(Stop::State(e)) => return Err(e.into()),
            })
        };
        let cut_off = async {
            ctx.stop.requested().await;
            tokio::time::sleep(ctx.grace).await;
        };
        tokio::select! {
            outcome = job => outcome?,
            () = cut_off => Outcome::Failed(format!(
                "cut off: the run was stopped and this action did not finish within {} s; the next run checks how far it got",
                ctx.grace.as_secs()
            )),
        }
    };
    let (op, uid) = (action.op.as_str(), &action.uid);
    ctx.progress
        .action_finished(matches!(outcome, Outcome::Failed(_) | Outcome::Conflict(_)));
    match &outcome {
        Outcome::Done => tracing::debug!(op, uid = %uid, "action applied"),
        Outcome::Pending(why) => {
            tracing::info!(op, uid = %uid, reason = %why, "action applied; the rest follows later")
        }
        Outcome::Skipped(why) => tracing::info!(op, uid = %uid, reason = %why, "action skipped"),
        Outcome::Conflict(why) => {
            tracing::warn!(op, uid = %uid, reason = %why, "action not fully applied: conflict")
        }
        Outcome::Failed(why) => tracing::warn!(op, uid = %uid, error = %why, "action failed"),
        Outcome::NotStarted(_) => {}
    }
    Ok(ActionResult {
        op: action.op,
        anchor: action.anchor.clone(),
        uid: action.uid.clone(),
        outcome,
    })
}

/// The outcome of an action a stopped run did not start.
const NOT_STARTED: &str = "the run was stopped before this action started; the next run does it";

/// Why an action stopped early.
enum Stop {
    Conflict(String),
    Failed(String),
    /// `assignLicense` refused: no unit of the licence is free (reported as failed; the
    /// caller decides what the person is left as).
    NoLicence(String),
    State(StateError),
}

impl From<StateError> for Stop {
    fn from(e: StateError) -> Self {
        Stop::State(e)
    }
}

/// One action being executed, with the state row it keeps up to date.
struct Job<'a, 'c> {
    action: &'a Action,
    ctx: &'a Context<'c>,
    /// Where new MailUsers go to have their sign-in blocked ([`sign_ins`]).
    late: &'a sign_ins::Handover,
    obj: ManagedObject,
    /// Field values before the action (the state's view, or the restored object's).
    before: Fields,
    /// Fields sent (or found already in place) during this action.
    handled: BTreeSet<Field>,
    /// Fields left for a later run, with why.
    deferred: BTreeMap<Field, String>,
    /// Why parts were not applied because somebody else holds an address.
    conflicts: Vec<String>,
    /// The addresses behind `conflicts` (lower case).
    conflicting: BTreeSet<String>,
    /// Values this action sets beyond the plan's (a restored object's sign-in).
    extra: BTreeMap<Field, Value>,
    /// Whether the proxy addresses in hand were read during this action.
    fresh_read: bool,
    /// The addresses `Get-Mailbox` answered when the new mailbox appeared: a read as fresh
    /// as `Get-Recipient`'s, so the address write that follows needs no other (taken then).
    mailbox_read: Option<Vec<String>>,
    /// The anchor the tenant object and the state row carry: the action's own, or, for a
    /// re-anchor, the old one until the new stamp is written.
    from: Anchor,
    /// The action's working slot, given up while it waits (see [`Workers`]).
    slot: &'a Slot<'a>,
    /// The create request this action just made its object with, and when: the next step
    /// that waits for the object to be visible learns from it (then it is taken).
    created: Mutex<Option<(String, std::time::Instant)>>,
    /// Addresses and UPNs (lower case) the plan's release phase gives up: a claim refused for
    /// one of them is retried while Exchange frees it.
    released: &'a BTreeSet<String>,
}

impl<'a, 'c> Job<'a, 'c> {
    async fn new(
        action: &'a Action,
        ctx: &'a Context<'c>,
        late: &'a sign_ins::Handover,
        released: &'a BTreeSet<String>,
        slot: &'a Slot<'a>,
    ) -> Result<Self, StateError> {
        // A re-anchor (`anchor: [old, new]`) works on the object and row of the old anchor.
        let from = match action.changes.get(Field::Anchor.as_str()) {
            Some((Some(Value::String(old)), _)) => {
                Anchor::new(old).unwrap_or_else(|_| action.anchor.clone())
            }
            _ => action.anchor.clone(),
        };
        let existing = ctx.store.object(&from).await?;
        let obj = existing.unwrap_or_else(|| ManagedObject {
            anchor: action.anchor.clone(),
            kind: action.kind,
            uid: action.uid.clone(),
            dn: action.dn.clone(),
            tenant_object_id: None,
            attributes: Fields::new(),
            stage: Stage::Active,
            created_at: ctx.now,
            updated_at: ctx.now,
            disabled_at: None,
            delete_due_at: None,
            deleted_at: None,
        });
        let before = if action.op == Op::Create {
            Fields::new()
        } else {
            obj.attributes.clone()
        };
        Ok(Job {
            action,
            ctx,
            late,
            obj,
            before,
            handled: BTreeSet::new(),
            deferred: BTreeMap::new(),
            conflicts: Vec::new(),
            conflicting: BTreeSet::new(),
            extra: BTreeMap::new(),
            fresh_read: false,
            mailbox_read: None,
            from,
            released,
            slot,
            created: Mutex::new(None),
        })
    }

    fn outcome(&self) -> Outcome {
        if !self.conflicts.is_empty() {
            let mut why = self.conflicts.join("; ");
            why.push_str("; everything else was applied");
            return Outcome::Conflict(why);
        }
        if self.deferred.is_empty() {
            return Outcome::Done;
        }
        let mut reasons: Vec<&str> = self.deferred.values().map(String::as_str).collect();
        reasons.dedup();
        Outcome::Pending(reasons.join("; "))
    }

    fn after(&self, field: Field) -> Option<&Value> {
        if let Some(v) = self.extra.get(&field) {
            return Some(v);
        }
        match self.action.changes.get(field.as_str()) {
            Some((_, after)) => after.as_ref(),
            None => self.before.get(field.as_str()),
        }
    }

    fn after_str(&self, field: Field) -> Option<String> {
        self.after(field).and_then(Value::as_str).map(str::to_owned)
    }

    fn stamp(&self) -> String {
        format!("{}{}", crate::inventory::STAMP_PREFIX, self.action.anchor)
    }

    /// The Exchange parameter and property of the stamp: `CustomAttributeN` for the
    /// configured `extensionAttributeN`.
    fn stamp_parameter(&self) -> String {
        self.ctx
            .config
            .tenant
            .anchor_attribute
            .replace("extensionAttribute", "CustomAttribute")
    }

    /// The planned fields of this action, typed. A key that names no field is a plan this
    /// version cannot apply (written by another version): refuse it rather than guess.
    fn changed_fields(&self) -> Result<BTreeSet<Field>, Stop> {
        self.action
            .changes
            .iter()
            .map(|(k, _)| {
                k.parse::<Field>()
                    .map_err(|e| Stop::Failed(format!("the plan cannot be applied: {e}")))
            })
            .collect()
    }

    /// Records in the state store that `fields` now hold their planned values.
    async fn applied(&mut self, fields: &[Field]) -> Result<(), Stop> {
        for f in fields {
            let key = f.as_str();
            self.handled.insert(*f);
            self.deferred.remove(f);
            if matches!(f, Field::Kind | Field::Anchor) {
                // The kind and the anchor are the row's own columns, not attributes.
                continue;
            }
            match self.after(*f).cloned() {
                Some(v) => self.obj.attributes.insert(*f, v),
                None => self.obj.attributes.remove(key),
            };
        }
        self.obj.uid = self.action.uid.clone();
        self.obj.dn = self.action.dn.clone();
        self.obj.updated_at = self.ctx.now;
        self.ctx.store.upsert_object(&self.obj).await?;
        Ok(())
    }

    fn defer(&mut self, fields: impl IntoIterator<Item = Field>, why: &str) {
        for f in fields {
            if !self.handled.contains(&f) {
                self.deferred.insert(f, why.to_owned());
            }
        }
    }

    /// Every changed field was sent or visibly deferred: the structural guarantee that a
    /// change is never recorded without being applied.
    fn prove_handled(&self) -> Result<(), Stop> {
        let missed: Vec<&str> = self
            .changed_fields()?
            .into_iter()
            .filter(|f| !self.handled.contains(f) && !self.deferred.contains_key(f))
            .map(Field::as_str)
            .collect();
        if missed.is_empty() {
            Ok(())
        } else {
            Err(Stop::Failed(format!(
                "internal error: {} planned but not applied (nothing recorded for them; the next run plans them again)",
                missed.join(", ")
            )))
        }
    }

    fn tenant_id(&self) -> Result<String, Stop> {
        self.obj
            .tenant_object_id
            .clone()
            .ok_or_else(|| Stop::Failed("the state store has no tenant object id".into()))
    }

    fn seen(&self) -> Option<&'a TenantObject> {
        self.ctx.inventory.managed.get(&self.from)
    }

    /// The tenant object for an existing person, which must carry our stamp.
    fn owned(&mut self) -> Result<String, Stop> {
        let inv = self.ctx.inventory;
        if let Some(ids) = inv.duplicates.get(&self.from) {
            return Err(Stop::Failed(format!(
                "the stamp {} is on {} objects ({}); touching none",
                self.stamp(),
                ids.len(),
                ids.join(", ")
            )));
        }
        match self.seen() {
            Some(t) => {
                self.obj.tenant_object_id = Some(t.id.clone());
                Ok(t.id.clone())
            }
            None => Err(Stop::Failed(format!(
                "no object in the tenant carries the stamp {}; refusing to touch an unmanaged object",
                self.stamp()
            ))),
        }
    }

    async fn execute(&mut self) -> Result<(), Stop> {
        match self.action.op {
            Op::Create => self.create().await?,
            Op::Update => {
                let id = self.owned()?;
                let kind = self.obj.kind;
                self.write_changes(&id, kind, &self.changed_fields()?)
                    .await?;
            }
            Op::Convert => {
                self.owned()?;
                self.convert().await?;
            }
            Op::Disable | Op::Enable => {
                let id = self.owned()?;
                self.lifecycle(&id, self.action.op == Op::Enable).await?;
            }
            Op::Delete => {
                self.owned()?;
                self.delete().await?;
            }
            Op::Purge => self.purge().await?,
        }
        self.prove_handled()
    }

    /// Hides a leaver (and blocks a mailbox owner's sign-in), or brings back someone who
    /// returned within the grace period with every field that changed meanwhile.
    async fn lifecycle(&mut self, id: &str, enable: bool) -> Result<(), Stop> {
        let kind = self.obj.kind;
        self.write_changes(id, kind, &self.changed_fields()?)
            .await?;
        if enable {
            self.obj.stage = Stage::Active;
            self.obj.disabled_at = None;
            self.obj.delete_due_at = None;
        } else if self.deferred.contains_key(&Field::HiddenFromAddressLists) {
            // Not hidden yet (the mailbox is still being provisioned): the row stays active,
            // so the next run plans the disable again instead of losing the hide.
        } else {
            self.obj.stage = Stage::Disabled;
            self.obj.disabled_at = Some(self.ctx.now);
            self.obj.delete_due_at =
                Some(self.ctx.now + i64::from(self.ctx.config.safety.grace_period_days) * 86_400);
        }
        self.applied(&[]).await
    }

    async fn delete(&mut self) -> Result<(), Stop> {
        let id = self.tenant_id()?;
        match self.obj.kind {
            Kind::MailUser => {
                let ex = self.ctx.tenant.exchange();
                self.step("Remove-MailUser", ex.remove_mail_user(&id))
                    .await?;
            }
            Kind::Mailbox => {
                let graph = self.ctx.tenant.graph();
                self.step("DELETE /users", graph.delete_user(&id)).await?;
            }
        }
        self.obj.stage = Stage::Deleted;
        self.obj.deleted_at = Some(self.ctx.now);
        self.applied(&[]).await
    }

    /// Permanently deletes our removed object from the recycle bin (the plan found it there,
    /// stamped with this anchor). Gone already counts as done.
    ///
    /// Graph's `DELETE /directory/deletedItems/{id}` first: Microsoft's page for it names
    /// `User.DeleteRestore.All` as the application permission for users, while older versions
    /// of the same page said "Not supported". When Graph refuses (403), Exchange's
    /// `Remove-MailUser -PermanentlyDelete` purges the soft-deleted MailUser instead, so the
    /// purge works under either reading.
    async fn purge(&mut self) -> Result<(), Stop> {
        let Some(deleted) = self.ctx.inventory.own_deleted.get(&self.action.anchor) else {
            // Gone from the recycle bin since the plan was made: nothing reserves anything.
            self.handled.extend(self.changed_fields()?);
            return Ok(());
        };
        let id = deleted.id.clone();
        let graph = self.ctx.tenant.graph();
        let name = "DELETE /directory/deletedItems";
        let row = self.journal_start(name).await?;
        let found = match graph.purge_deleted_user(&id).await {
            Ok(found) => {
                self.journal_finish(row, "ok", Some(&id)).await?;
                found
            }
            Err(e @ TenantError::Forbidden { .. }) => {
                self.journal_finish(row, "failed", Some(&e.to_string()))
                    .await?;
                let identity = deleted.exchange_guid.clone().unwrap_or_else(|| id.clone());
                let ex = self.ctx.tenant.exchange();
                self.step(
                    "Remove-MailUser -PermanentlyDelete",
                    ex.purge_mail_user(&identity),
                )
                .await?
            }
            Err(e) => return Err(self.failed(row, name, e).await?),
        };
        if !found {
            tracing::info!(uid = %self.action.uid, id = %id, "already gone from the recycle bin");
        }
        // What the object reserved (the plan lists it) is free now.
        self.handled.extend(self.changed_fields()?);
        if self.obj.tenant_object_id.as_deref() == Some(id.as_str()) {
            // A purged object cannot be restored: a returning person is created anew.
            self.obj.tenant_object_id = None;
        }
        // Planned only for people LDAP no longer has: the row, if the state has one, stays
        // deleted; no row is made up for an object only the tenant knew.
        if self.ctx.store.object(&self.obj.anchor).await?.is_some() {
            self.obj.stage = Stage::Deleted;
            self.obj.deleted_at.get_or_insert(self.ctx.now);
            self.ctx.store.upsert_object(&self.obj).await?;
        }
        Ok(())
    }

    async fn convert(&mut self) -> Result<(), Stop> {
        let id = self.tenant_id()?;
        if self.action.kind == Kind::MailUser {
            // Removing the licence would disable the mailbox and leave nobody in the address
            // list; a MailUser cannot be made from a mailbox in place.
            return Err(Stop::Failed(
                "the LDAP forward into the tenant was removed, but an Exchange Online mailbox cannot become a MailUser in place; move the mailbox back by hand (the mailbox is left as it is)".into(),
            ));
        }
        let sku = self.mailbox_sku()?;
        if self.obj.kind == Kind::MailUser {
            // Licensing the MailUser converts it in place; it is never deleted first.
            if let Some(loc) = self.ctx.config.tenant.usage_location.clone() {
                let graph = self.ctx.tenant.graph();
                self.step(
                    "PATCH usageLocation",
                    graph.update_user(&id, &json!({ "usageLocation": loc })),
                )
                .await?;
            }
            match self.license(&id, &sku).await {
                // Nothing was converted: the MailUser still works and its state row is
                // untouched (still kind mail_user), so the next run plans the convert again.
                Err(Stop::NoLicence(why)) => {
                    return Err(Stop::NoLicence(format!(
                        "{why}; stays a MailUser until a licence is freed"
                    )));
                }
                other => other?,
            }
        }
        // Recorded without clearing a deferral: the mailbox may still be provisioning.
        self.handled.insert(Field::Kind);
        self.applied(&[]).await?;
        let mut rest = self.changed_fields()?;
        rest.remove(&Field::Kind);
        self.write_changes(&id, Kind::Mailbox, &rest).await
    }

    /// Writes `fields` (as planned) to the existing object `id`, each through its writer.
    /// Exchange fields of a mailbox that Exchange is still provisioning are deferred.
    async fn write_changes(
        &mut self,
        id: &str,
        kind: Kind,
        fields: &BTreeSet<Field>,
    ) -> Result<(), Stop> {
        let by = |w: Writer| -> BTreeSet<Field> {
            fields.iter().copied().filter(|f| f.writer() == w).collect()
        };
        let (recipient, user, graph) = (
            by(Writer::SetRecipient),
            by(Writer::SetUser),
            by(Writer::GraphPatch),
        );
        // A leaver never gets a mailbox on the way out.
        if kind == Kind::Mailbox && self.action.op != Op::Disable && self.needs_licence() {
            // A mailbox user an earlier run created but could not license (the run stopped
            // between `POST /users` and `assignLicense`).
            let sku = self.mailbox_sku()?;
            self.license(id, &sku).await?;
        }
        let pending = kind == Kind::Mailbox && self.mailbox_pending();
        if pending {
            self.defer(
                recipient.iter().chain(&user).copied(),
                "Exchange is still provisioning the mailbox; its addresses and address-book attributes follow on a later run",
            );
        } else {
            if !recipient.is_empty() {
                self.set_recipient(id, kind, &recipient, None).await?;
            }
            if !user.is_empty() {
                self.set_user(id, &user).await?;
            }
        }
        if !graph.is_empty() {
            self.patch_graph(id, &graph).await?;
        }
        Ok(())
    }

    /// Whether the person's mailbox is licensed but not yet shown by Exchange: as the
    /// inventory saw it, or as this action's licensing left it.
    fn mailbox_pending(&self) -> bool {
        self.deferred.contains_key(&Field::Kind)
            || self.seen().is_some_and(|t| t.mailbox_pending)
                && !self.handled.contains(&Field::Kind)
    }

    /// Graph shows the person's user, unlicensed, and Exchange does not know it: the licence
    /// step of its create never ran.
    fn needs_licence(&self) -> bool {
        !self.handled.contains(&Field::Kind)
            && self
                .seen()
                .is_some_and(|t| t.in_graph && !t.in_exchange && !t.exchange_licensed)
    }

    fn mailbox_sku(&self) -> Result<String, Stop> {
        self.ctx.config.tenant.mailbox_sku.clone().ok_or_else(|| {
            Stop::Failed("tenant.mailbox_sku is not set: cannot license a mailbox".into())
        })
    }

    /// `Set-MailUser` / `Set-Mailbox` for the recipient fields in `fields`. `current`: the
    /// object's proxy addresses as just read (a create's answer); otherwise the inventory's.
    async fn set_recipient(
        &mut self,
        id: &str,
        kind: Kind,
        fields: &BTreeSet<Field>,
        current: Option<Vec<String>>,
    ) -> Result<(), Stop> {
        let mut params = serde_json::Map::new();
        let mut recorded: Vec<Field> = fields.iter().copied().collect();
        if fields.iter().any(|f| f.is_address()) {
            let current = match current.or_else(|| self.mailbox_read.take()) {
                Some(c) => {
                    self.fresh_read = true;
                    c
                }
                None => self.seen().map(|t| t.proxies.clone()).unwrap_or_default(),
            };
            if let Some(value) = self.addresses_param(id, current).await? {
                params.insert("EmailAddresses".into(), value);
            }
        }
        if fields.contains(&Field::Anchor) {
            params.insert(self.stamp_parameter(), json!(self.stamp()));
        }
        for f in fields {
            let Some(param) = f.exchange_property() else {
                continue;
            };
            if *f == Field::ExternalEmailAddress && kind != Kind::MailUser {
                // A mailbox has no external address; the planner drops it with the kind.
                continue;
            }
            if *f == Field::ForwardingSmtpAddress {
                if kind == Kind::Mailbox {
                    // `$null` clears it (cutover); while set, nothing stays in the mailbox.
                    let target = self.after_str(*f);
                    if target.is_some() {
                        params.insert("DeliverToMailboxAndForward".into(), json!(false));
                    }
                    params.insert(param.into(), json!(target));
                }
                continue;
            }
            let v = match f {
                Field::HiddenFromAddressLists => {
                    json!(self.after(*f).and_then(Value::as_bool).unwrap_or(false))
                }
                _ => match self.after_str(*f) {
                    Some(v) => json!(v),
                    // Name, Alias, UPN and the external address cannot be cleared.
                    None => continue,
                },
            };
            params.insert(param.into(), v);
        }
        if !params.is_empty() {
            let ex = self.ctx.tenant.exchange();
            let params = Value::Object(params);
            match kind {
                Kind::MailUser => {
                    self.step_visible("Set-MailUser", || ex.set_mail_user(id, params.clone()))
                        .await?
                }
                Kind::Mailbox => {
                    self.step_visible("Set-Mailbox", || ex.set_mailbox(id, params.clone()))
                        .await?
                }
            }
            if fields.contains(&Field::Anchor) && self.from != self.action.anchor {
                // The object now carries the new stamp: its row follows at once.
                self.obj.anchor = self.action.anchor.clone();
                self.obj.uid = self.action.uid.clone();
                self.obj.dn = self.action.dn.clone();
                self.ctx.store.move_object(&self.from, &self.obj).await?;
                tracing::info!(uid = %self.action.uid, from = %self.from, to = %self.action.anchor, "re-anchored");
            }
        }
        if !self.conflicts.is_empty() {
            // Record the addresses without those somebody else holds: the next run tries
            // them again and reports them again.
            recorded.retain(|f| *f != Field::EmailAddresses);
            self.applied(&recorded).await?;
            self.record_addresses_without_conflicts().await
        } else {
            self.applied(&recorded).await
        }
    }

    /// `Set-User` for the address-book attributes in `fields` (`null` clears one).
    async fn set_user(&mut self, id: &str, fields: &BTreeSet<Field>) -> Result<(), Stop> {
        let mut params = serde_json::Map::new();
        for f in fields {
            if let Some(param) = f.exchange_property() {
                params.insert(param.into(), json!(self.after_str(*f)));
            }
        }
        let ex = self.ctx.tenant.exchange();
        let params = Value::Object(params);
        self.step_visible("Set-User", || ex.set_user(id, params.clone()))
            .await?;
        let fields: Vec<Field> = fields.iter().copied().collect();
        self.applied(&fields).await
    }

    /// Graph `PATCH /users/{id}` for what Graph masters (`accountEnabled`).
    async fn patch_graph(&mut self, id: &str, fields: &BTreeSet<Field>) -> Result<(), Stop> {
        let mut patch = serde_json::Map::new();
        for f in fields {
            if *f == Field::AccountEnabled {
                patch.insert(
                    "accountEnabled".into(),
                    json!(self.after(*f).and_then(Value::as_bool).unwrap_or(false)),
                );
            }
        }
        let graph = self.ctx.tenant.graph();
        let patch = Value::Object(patch);
        self.step_visible("PATCH /users", || graph.update_user(id, &patch))
            .await?;
        let fields: Vec<Field> = fields.iter().copied().collect();
        self.applied(&fields).await
    }

    /// Licences the object, then gives Exchange a few seconds to show the mailbox. When it
    /// does not, the person is left "mailbox pending" for a later run instead of holding a
    /// worker for minutes.
    async fn license(&mut self, id: &str, sku: &str) -> Result<(), Stop> {
        let graph = self.ctx.tenant.graph();
        self.step_visible("assignLicense", || graph.assign_license(id, sku))
            .await?;
        self.obj.kind = Kind::Mailbox;
        self.handled.insert(Field::Kind);
        let ex = self.ctx.tenant.exchange();
        // Each Get-Mailbox spends Exchange's budget: the first waits, parked, as long as
        // mailboxes have taken to appear in this run, the rest back off (3 s in all).
        let licensed_at = std::time::Instant::now();
        let workers = self.slot.workers;
        let first = workers
            .visible_after(MAILBOX_APPEARS)
            .min(Duration::from_secs(30));
        let mut tries = Vec::new();
        for wait in [first, ms(500), ms(1000), ms(1500)] {
            let wait = if tries.is_empty() {
                wait.saturating_sub(licensed_at.elapsed())
            } else {
                wait
            };
            self.slot.park(tokio::time::sleep(wait)).await;
            let found = self.step("Get-Mailbox", ex.get_mailbox(id)).await?;
            tries.push(licensed_at.elapsed());
            if let Some(mailbox) = found {
                workers.learn_visible_after(MAILBOX_APPEARS, &tries);
                let proxies: Vec<String> = strings(mailbox.get("EmailAddresses")).collect();
                self.mailbox_read = Some(proxies).filter(|p| !p.is_empty());
                return Ok(());
            }
        }
        self.deferred.insert(
            Field::Kind,
            "Exchange is still provisioning the mailbox; its addresses follow on a later run"
                .into(),
        );
        Ok(())
    }
}

/// The key under which [`Workers`] learns how long a licensed mailbox takes to appear.
const MAILBOX_APPEARS: &str = "assignLicense → Get-Mailbox";

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// A password nobody will use (MailUsers cannot sign in; mailbox owners reset theirs), but
/// one that satisfies Entra's complexity rules: 28 random characters from the system's
/// randomness, with every character class present.
fn random_password() -> Secret {
    use aws_lc_rs::rand::SecureRandom as _;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    // Bytes below 224 (4 × 56) map onto the alphabet without bias; the rest are drawn again.
    const LIMIT: u8 = 224;
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let mut body = String::with_capacity(24);
    while body.len() < 24 {
        let mut bytes = [0u8; 32];
        // The system RNG failing is not something to paper over.
        rng.fill(&mut bytes)
            .expect("the system random number generator failed");
        body.extend(
            bytes
                .iter()
                .filter(|b| **b < LIMIT)
                .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
                .take(24 - body.len()),
        );
    }
    Secret::new(format!("Aa9!{body}"))
}

/// `value` as a list of strings (a JSON array of strings; anything else is empty).
fn strings(v: Option<&Value>) -> impl Iterator<Item = String> + '_ {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
}

/// The proxy list to write when the primary changes: every proxy the object has (the
/// tenant's own `SPO:`, `SIP:`, `X500:`, MOERA kept), the old primary demoted to `smtp:`,
/// `remove` dropped, `add` added, and exactly one `SMTP:`, the new primary.
fn full_address_list(
    current: &[String],
    primary: &str,
    add: &BTreeSet<String>,
    remove: &BTreeSet<String>,
) -> Vec<String> {
    let mut out = vec![format!("SMTP:{primary}")];
    let mut seen: BTreeSet<String> = BTreeSet::from([primary.to_ascii_lowercase()]);
    for p in current {
        match smtp_proxy(p) {
            Some((_, a)) => {
                let a = a.to_ascii_lowercase();
                if !remove.contains(&a) && seen.insert(a.clone()) {
                    out.push(format!("smtp:{a}"));
                }
            }
            None => out.push(p.clone()),
        }
    }
    for a in add {
        if seen.insert(a.clone()) {
            out.push(format!("smtp:{a}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visibility_is_learnt_from_the_last_try_that_found_nothing() {
        let w = Workers::new(1);
        let s = Duration::from_secs_f64;
        // Hidden when the first try was answered at 0.4 s; the second went through, but it
        // started at 6.1 s only because it queued behind the service's pace.
        w.learn_visible_after("New-MailUser", &[s(0.4), s(6.1)]);
        assert_eq!(w.visible_after("New-MailUser"), s(0.4));
        // A first try that went through promptly: a 64th less. One answered long after (it
        // queued behind the pace) says nothing.
        w.learn_visible_after("New-MailUser", &[s(0.45)]);
        assert_eq!(w.visible_after("New-MailUser"), s(0.4) * 63 / 64);
        w.learn_visible_after("New-MailUser", &[s(3.0)]);
        assert_eq!(w.visible_after("New-MailUser"), s(0.4) * 63 / 64);
        // Hidden longer than learnt: up to that, never down.
        w.learn_visible_after("New-MailUser", &[s(0.2), s(0.9), s(1.4)]);
        assert_eq!(w.visible_after("New-MailUser"), s(0.9));
        w.learn_visible_after("New-MailUser", &[s(0.1), s(0.3)]);
        assert_eq!(w.visible_after("New-MailUser"), s(0.9));
        // Per kind of create.
        assert_eq!(w.visible_after("POST /users"), Duration::ZERO);
    }

    #[test]
    fn passwords_are_long_random_and_complex() {
        let a = random_password();
        let b = random_password();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 28);
        // The random part alone, not the fixed prefix, must vary across many draws.
        let distinct: BTreeSet<char> = (0..50)
            .flat_map(|_| random_password().expose()[4..].chars().collect::<Vec<_>>())
            .collect();
        assert!(distinct.len() > 40, "{distinct:?}");
    }

    #[test]
    fn a_full_list_keeps_the_tenants_addresses_and_has_one_primary() {
        let current = vec![
            "SMTP:old@example.edu".to_owned(),
            "smtp:alias@example.edu".to_owned(),
            "smtp:ann@contoso.onmicrosoft.com".to_owned(),
            "SIP:old@example.edu".to_owned(),
            "smtp:gone@example.edu".to_owned(),
        ];
        let add = BTreeSet::from(["new.alias@example.edu".to_owned()]);
        let remove = BTreeSet::from(["gone@example.edu".to_owned()]);
        let list = full_address_list(&current, "new@example.edu", &add, &remove);
        assert_eq!(
            list,
            [
                "SMTP:new@example.edu",
                "smtp:old@example.edu",
                "smtp:alias@example.edu",
                "smtp:ann@contoso.onmicrosoft.com",
                "SIP:old@example.edu",
                "smtp:new.alias@example.edu",
            ]
        );
        assert_eq!(list.iter().filter(|p| p.starts_with("SMTP:")).count(), 1);
    }
}
