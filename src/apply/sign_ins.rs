//! sign_ins: blocks the sign-in of the MailUsers a run creates (MailUsers never sign in),
//! beside the rest of the run.
//!
//! `New-MailUser` makes an Entra user whose account is enabled, and Graph shows that user
//! only after a while (Exchange → Graph propagation; Microsoft publishes no figure). The
//! block is a Graph `PATCH accountEnabled`, so it waits until Graph has most likely caught
//! up, then goes across people through `$batch` (20 per request, each sub-request retried on
//! its own when throttled). Graph's budget is separate from Exchange's, which binds a run:
//! sending the blocks while the Exchange work goes on, rather than after it, takes them off
//! the run's wall time.
//!
//! While the run's actions go on, only full batches are sent, of people whose object is at
//! least as old as Graph has taken to show one (learnt per call: it jumps to the age of the
//! oldest object Graph did not show or showed only after a 404, and creeps down 1/64 when
//! every first try went through). A
//! block answered 404 is tried again with backoff. When the actions are over, the rest is
//! sent at once. What Graph still does not show `tenant.propagation_wait_seconds` after its
//! create (or after the actions, at the latest) is left to the next run, whose inventory sees
//! the account enabled and plans the change.
//! The person is a working MailUser either way.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{ApplyError, Context, DEFERRED};
use crate::ids::Anchor;
use crate::plan::{Field, Op};
use crate::progress;
use crate::tenant::{Service, TenantError};

/// A new MailUser whose sign-in is still to be blocked.
pub(super) struct NewMailUser {
    pub anchor: Anchor,
    pub uid: String,
    /// Entra object id.
    pub id: String,
}

/// Where the actions hand over their new MailUsers; dropping it tells the blocker that no
/// more will come.
pub(super) type Handover = mpsc::UnboundedSender<NewMailUser>;

/// Sub-requests per `$batch` (Graph's limit, TENANT_FACTS "JSON batching").
const BATCH: usize = 20;
/// Why a block is left to the next run.
const NOT_SHOWN: &str = "Graph does not show the object yet; the next run blocks sign-in";

/// Blocks per `update_users` call: eight envelopes, so that a failure of one call touches
/// only its people.
const PER_CALL: usize = BATCH * 8;
const FIRST_PAUSE: Duration = Duration::from_millis(250);
const LONGEST_PAUSE: Duration = Duration::from_secs(4);

/// One new MailUser on its way through the blocker.
struct Waiting {
    user: NewMailUser,
    /// When it was handed over (just after its `New-MailUser`).
    created: Instant,
    /// Not before this.
    next_try: Instant,
    tries: u32,
    /// Its journal row, once a block was sent.
    row: Option<i64>,
}

/// Blocks the sign-in of every MailUser `new` hands over (see the module doc), until the
/// sender is dropped and the last block is answered or deferred. After a stop nothing more
/// is sent: the next run's inventory sees the accounts enabled and plans the change.
///
/// Errors: only the state store's ([`ApplyError`]); a block Graph refuses is journaled
/// `failed` and logged, and the next run tries again.
pub(super) async fn block(
    mut new: mpsc::UnboundedReceiver<NewMailUser>,
    ctx: &Context<'_>,
) -> Result<(), ApplyError> {
    let mut waiting: Vec<Waiting> = Vec::new();
    let mut shows_after = Duration::ZERO;
    // Set when the actions are over: the end of the last round.
    let mut deadline: Option<Instant> = None;
    loop {
        if deadline.is_none() {
            match next_arrival(&mut new, &waiting).await {
                Arrival::User(user) => {
                    let now = Instant::now();
                    waiting.push(Waiting {
                        user,
                        created: now,
                        next_try: now + shows_after,
                        tries: 0,
                        row: None,
                    });
                    continue;
                }
                Arrival::Due => {}
                Arrival::Closed => {
                    deadline = Some(Instant::now() + ctx.visibility_wait);
                    if !waiting.is_empty() {
                        ctx.progress
                            .phase(progress::Phase::BlockingSignIns, Some(waiting.len() as u64));
                    }
                }
            }
        }
        if ctx.stop.is_requested() {
            return defer_all(waiting, ctx, "the run was stopped", deadline.is_some()).await;
        }
        let now = Instant::now();
        let due: Vec<Waiting>;
        (due, waiting) = waiting
            .into_iter()
            .partition(|w| w.next_try <= now || deadline.is_some_and(|_| w.tries == 0));
        if deadline.is_none() && due.len() < BATCH {
            // Not a full batch yet: wait for more (they come back in the same order).
            waiting.extend(due);
            continue;
        }
        let retry = send(due, ctx, &mut shows_after, deadline.is_some()).await?;
        waiting.extend(retry);
        let Some(end) = deadline else { continue };
        if waiting.is_empty() {
            return Ok(());
        }
        let next = waiting.iter().map(|w| w.next_try).min().unwrap_or(end);
        if next > end {
            return defer_all(waiting, ctx, NOT_SHOWN, true).await;
        }
        tokio::time::sleep_until(next.into()).await;
    }
}

enum Arrival {
    User(NewMailUser),
    /// A block waiting for a retry is due.
    Due,
    Closed,
}

/// The next new MailUser, or the moment a retry falls due, whichever comes first. Retries
/// wake the blocker only when they make a full batch with the others due; otherwise they
/// wait for more people or for the end of the actions.
async fn next_arrival(
    new: &mut mpsc::UnboundedReceiver<NewMailUser>,
    waiting: &[Waiting],
) -> Arrival {
    let now = Instant::now();
    let mut times: Vec<Instant> = waiting.iter().map(|w| w.next_try).collect();
    // The moment BATCH of them are due, when it is still ahead (linear: no full sort per
    // arrival, however many wait).
    let full = (times.len() >= BATCH)
        .then(|| *times.select_nth_unstable(BATCH - 1).1)
        .filter(|t| *t > now);
    let sleep = async {
        match full {
            Some(t) => tokio::time::sleep_until(t.into()).await,
            None => std::future::pending().await,
        }
    };
    if times.len() >= BATCH && full.is_none() {
        return Arrival::Due;
    }
    tokio::select! {
        user = new.recv() => user.map_or(Arrival::Closed, Arrival::User),
        () = sleep => Arrival::Due,
    }
}

/// What one call's answers say about how long Graph takes to show a new MailUser.
#[derive(Default)]
struct Learnt {
    /// The oldest object Graph did not show yet (answered 404).
    not_yet: Option<Duration>,
    /// The oldest object shown after an earlier 404: Graph took about that long.
    after_404: Option<Duration>,
    /// Some object was shown at its first try.
    at_once: bool,
}

impl Learnt {
    /// Jumps up to what the answers showed Graph needs; creeps down by 1/64 when every
    /// first try went through, following a Graph that got faster without many 404s.
    fn update(&self, shows_after: Duration) -> Duration {
        match (self.not_yet.max(self.after_404), self.at_once) {
            (Some(longer), _) => shows_after.max(longer),
            (None, true) => shows_after * 63 / 64,
            (None, false) => shows_after,
        }
    }
}

/// Sends one block for each of `due`; journals and records what Graph answered and hands
/// back those it answered 404, with their next try set. `counted`: the progress display
/// shows the blocking phase, so each answered block is a step of it.
async fn send(
    due: Vec<Waiting>,
    ctx: &Context<'_>,
    shows_after: &mut Duration,
    counted: bool,
) -> Result<Vec<Waiting>, ApplyError> {
    let patch = json!({ "accountEnabled": false });
    let mut retry = Vec::new();
    let mut expired = Vec::new();
    let mut due = due.into_iter().peekable();
    while due.peek().is_some() {
        let mut chunk: Vec<Waiting> = due.by_ref().take(PER_CALL).collect();
        for w in &mut chunk {
            if w.row.is_none() {
                w.row = Some(
                    ctx.store
                        .journal_start(
                            ctx.run_id,
                            &w.user.anchor,
                            Op::Create.as_str(),
                            "PATCH accountEnabled",
                            ctx.now,
                        )
                        .await?,
                );
            }
        }
        let updates: Vec<(String, Value)> = chunk
            .iter()
            .map(|w| (w.user.id.clone(), patch.clone()))
            .collect();
        tracing::debug!(blocks = updates.len(), "sending sign-in blocks");
        let answers: Vec<Result<(), TenantError>> =
            match ctx.tenant.graph().update_users(&updates).await {
                Ok(answers) => answers,
                Err(e) => {
                    let why = e.to_string();
                    chunk
                        .iter()
                        .map(|_| {
                            Err(TenantError::Protocol {
                                service: Service::Graph,
                                message: why.clone(),
                            })
                        })
                        .collect()
                }
            };
        tracing::debug!(blocks = updates.len(), "sign-in blocks answered");
        let now = Instant::now();
        // Learnt once per call, not per block: twenty blocks that went through at once
        // say no more than one does.
        let mut shown = Learnt::default();
        for (mut w, answer) in chunk.into_iter().zip(answers) {
            w.tries += 1;
            let age = now - w.created;
            match answer {
                Err(TenantError::NotFound { .. }) if age >= ctx.visibility_wait => {
                    // Not retried for the rest of a long run: the next run's inventory
                    // shows the account enabled and plans the block.
                    shown.not_yet = shown.not_yet.max(Some(age));
                    expired.push(w);
                    continue;
                }
                Err(TenantError::NotFound { .. }) => {
                    shown.not_yet = shown.not_yet.max(Some(age));
                    let pause = FIRST_PAUSE * 2u32.saturating_pow(w.tries - 1);
                    w.next_try = now + pause.min(LONGEST_PAUSE);
                    retry.push(w);
                    continue;
                }
                Ok(()) if w.tries == 1 => shown.at_once = true,
                Ok(()) => shown.after_404 = shown.after_404.max(Some(age)),
                Err(_) => {}
            }
            finish(w, answer, ctx, counted).await?;
        }
        *shows_after = shown.update(*shows_after);
    }
    defer_all(expired, ctx, NOT_SHOWN, counted).await?;
    Ok(retry)
}

/// Journals and records one block's answer.
async fn finish(
    w: Waiting,
    answer: Result<(), TenantError>,
    ctx: &Context<'_>,
    counted: bool,
) -> Result<(), ApplyError> {
    let Some(row) = w.row else { return Ok(()) };
    let store = ctx.store;
    match answer {
        Ok(()) => {
            store
                .journal_finish(row, "ok", Some(&w.user.id), ctx.now)
                .await?;
            if let Some(mut obj) = store.object(&w.user.anchor).await? {
                obj.attributes
                    .insert(Field::AccountEnabled, Value::Bool(false));
                store.upsert_object(&obj).await?;
            }
            tracing::debug!(uid = %w.user.uid, "new MailUser's sign-in blocked");
        }
        Err(e) => {
            let why = e.to_string();
            store
                .journal_finish(row, "failed", Some(&why), ctx.now)
                .await?;
            tracing::warn!(uid = %w.user.uid, error = %why, "blocking a new MailUser's sign-in failed; the next run tries again");
        }
    }
    if counted {
        ctx.progress.step();
    }
    Ok(())
}

/// Leaves the blocks still waiting to the next run, journaling those that were sent.
async fn defer_all(
    waiting: Vec<Waiting>,
    ctx: &Context<'_>,
    why: &str,
    counted: bool,
) -> Result<(), ApplyError> {
    for w in waiting {
        if let Some(row) = w.row {
            ctx.store
                .journal_finish(row, DEFERRED, Some(why), ctx.now)
                .await?;
        }
        tracing::info!(uid = %w.user.uid, reason = why, "a new MailUser's sign-in is blocked on a later run");
        if counted {
            ctx.progress.step();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_s_delay_jumps_up_on_a_404_and_creeps_down_once_per_call() {
        let s = Duration::from_millis(640);
        let ms = Duration::from_millis;
        let at_once = Learnt {
            at_once: true,
            ..Learnt::default()
        };
        assert_eq!(at_once.update(s), ms(630), "one call, one step down");
        let late = Learnt {
            after_404: Some(ms(1700)),
            not_yet: Some(ms(900)),
            at_once: true,
        };
        assert_eq!(late.update(s), ms(1700), "up to the oldest shown late");
        let missing = Learnt {
            not_yet: Some(ms(2000)),
            ..Learnt::default()
        };
        assert_eq!(
            missing.update(s),
            ms(2000),
            "longer than any object not shown yet"
        );
        assert_eq!(Learnt::default().update(s), s, "an error says nothing");
    }
}
