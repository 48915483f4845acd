//! `ldap2exo daemon`: a sync at each tick of `[daemon] schedule`, until SIGTERM or SIGINT.
//!
//! - The daemon holds the state store's daemon lock for its life (a second daemon is refused,
//!   naming the first) and each tick takes the run lock like any `sync` (a manual run between
//!   two ticks is fine; a tick that finds one going is skipped and counted).
//! - Runs never overlap: ticks that pass while a run goes on are skipped and counted
//!   (`ldap2exo_ticks_skipped_total{reason="overlap"}`), and the next run waits for the next
//!   tick after it.
//! - A stop lets the run in flight finish its actions in flight within
//!   `daemon.shutdown_grace_seconds`, records it as `interrupted`, and exits 0; the next start
//!   (or `sync`) does what is left, from the state store and its journal.
//! - [`http`] serves `/healthz`, `/readyz` and `/metrics` on `[daemon] listen`.
//!
//! The scheduler runs on the machine's clock; `LDAP2EXO_NOW` (tests) only moves the clock the
//! runs plan with.

pub mod http;
pub mod metrics;
pub mod schedule;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::cli::Selection;
use crate::commands::{self, CommandError, Finished};
use crate::config::Config;
use crate::report::{self, Format};
use crate::shutdown::Stop;
use crate::state::lock::{self, Lock, LockError};
use crate::state::{Outcome, StateError, Store};
use http::{Health, LastRun};
use metrics::Metrics;
use schedule::Schedule;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Another daemon holds the daemon lock (the message names it), or the lock file cannot
    /// be used.
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("configuration key `{key}`: {message}")]
    Config { key: &'static str, message: String },
    #[error("cannot listen on {addr} (daemon.listen): {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl DaemonError {
    /// Whether the configuration is at fault (exit 2), not the moment.
    pub fn is_configuration(&self) -> bool {
        match self {
            DaemonError::Config { .. } => true,
            DaemonError::State(e) => e.is_configuration(),
            _ => false,
        }
    }
}

/// Unix seconds by the machine's clock.
pub(crate) fn unix_now() -> i64 {
    unix_now_ms() / 1000
}

fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What the daemon needs before its first tick; each failure here is worth an exit code, and
/// nothing is created (a store, a report) before all of it is known to work.
async fn start(
    config: &Config,
) -> Result<(Schedule, tokio::net::TcpListener, Lock, Store), DaemonError> {
    let config_error = |key, message| DaemonError::Config { key, message };
    let schedule =
        Schedule::parse(&config.daemon.schedule).map_err(|m| config_error("daemon.schedule", m))?;
    let addr: SocketAddr =
        config.daemon.listen.parse().map_err(|e| {
            config_error("daemon.listen", format!("`{}`: {e}", config.daemon.listen))
        })?;
    // Every tick would fail without the tenant: say so now, not every 15 minutes.
    if config.tenant.tenant_id.is_none() || config.tenant.credential_kind().is_err() {
        return Err(config_error(
            "tenant",
            "the daemon applies its runs, so it needs tenant.tenant_id and a credential (`ldap2exo check-config` lists what is missing)".into(),
        ));
    }
    if let Some(path) = &config.daemon.report_file {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if dir.is_some_and(|d| !d.is_dir()) {
            return Err(config_error(
                "daemon.report_file",
                format!("the directory of {} does not exist", path.display()),
            ));
        }
    }
    // A missing directory is a configuration error naming it, not a lock-file failure.
    crate::state::require_directory(&config.state.path)?;
    let lock = Lock::acquire(&config.state.path, lock::Kind::Daemon, "daemon", unix_now()).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Listen { addr, source })?;
    let store = Store::open(&config.state.path).await?;
    // A run a dead process left `running` is marked now, if no manual run holds the store,
    // so that `status` and `/readyz` do not wait for the first tick to say so.
    if let Ok(run) = Lock::acquire(&config.state.path, lock::Kind::Run, "daemon", unix_now()).await
    {
        for id in store.mark_abandoned_runs().await? {
            tracing::warn!(
                run = id,
                "an earlier run ended without finishing (crash or kill); marked interrupted"
            );
        }
        drop(run);
    }
    Ok((schedule, listener, lock, store))
}

/// Runs the daemon until `stop`; see the module documentation.
pub async fn run(config: &Config, run_now: bool, stop: &Stop) -> Result<(), DaemonError> {
    let (schedule, listener, mut lock, store) = start(config).await?;
    let last = store
        .last_real_run()
        .await?
        .map(|(finished_at, succeeded)| LastRun {
            finished_at,
            succeeded,
        });
    let health = Arc::new(Health {
        metrics: Metrics::new(),
        store: store.clone(),
        schedule: schedule.clone(),
        ready_intervals: config.daemon.ready_intervals,
        last: Mutex::new(last),
    });
    health
        .metrics
        .restarted(store.last_success().await?, last.map(|l| l.finished_at));
    refresh_gauges(&health).await;
    let bound = listener
        .local_addr()
        .map_or_else(|_| config.daemon.listen.clone(), |a| a.to_string());
    let server = http::serve(listener, health.clone());
    tracing::info!(listen = %bound, schedule = %config.daemon.schedule, pid = std::process::id(), "daemon started");

    if run_now && !stop.is_requested() {
        tick(config, &health, &schedule, unix_now(), stop).await;
    }
    while !stop.is_requested() {
        let Some(next) = schedule.next_after(unix_now()) else {
            tracing::warn!(schedule = %config.daemon.schedule, "the schedule has no further tick; stopping");
            break;
        };
        if let Err(e) = lock.set_next_run(Some(next)) {
            tracing::warn!(error = %e, "cannot record the next run in the lock file; `status` will not show it");
        }
        tracing::info!(next_run = %crate::plan::rfc3339(next), "next run scheduled");
        let wait = Duration::from_millis((next * 1000 - unix_now_ms()).max(0) as u64);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.requested() => break,
        }
        // While the run goes on, `status` says so instead of showing a time already past.
        let _ = lock.set_next_run(None);
        tick(config, &health, &schedule, next, stop).await;
    }
    let _ = lock.set_next_run(None);
    server.abort();
    store.close().await;
    tracing::info!("daemon stopped");
    Ok(())
}

/// One run (for the tick at `due`, Unix seconds): a full sync, observed for the metrics,
/// `/readyz` and the report file; the ticks that passed meanwhile are counted as skipped.
async fn tick(config: &Config, health: &Health, schedule: &Schedule, due: i64, stop: &Stop) {
    let clock = Instant::now();
    let everyone = Selection {
        only: Vec::new(),
        max_deletes: None,
        approval: Default::default(),
    };
    let watch = commands::TenantWatch::new();
    let result = commands::real_run(config, &everyone, "daemon", stop, &watch)
        .instrument(commands::run_span("daemon"))
        .await;
    let finished_at = unix_now();
    let m = &health.metrics;
    let stats = watch.get().map(|t| t.stats());
    let ended = match &result {
        Ok(f) => {
            let entries = Some(f.plan.source.entries);
            m.run_ended(
                f.outcome,
                clock.elapsed(),
                finished_at,
                entries,
                &f.results,
                Some(&f.stats),
            );
            log_finished(f);
            if let Some(path) = &config.daemon.report_file {
                write_report(path, f);
            }
            Some(f.outcome)
        }
        Err(CommandError::Lock(e @ LockError::Busy { .. })) => {
            m.ticks_skipped("locked", 1);
            tracing::warn!(error = %e, "scheduled run skipped: another run holds the state store");
            None
        }
        Err(CommandError::Interrupted(why)) => {
            m.run_ended(
                Outcome::Interrupted,
                clock.elapsed(),
                finished_at,
                None,
                &[],
                stats.as_ref(),
            );
            tracing::info!(reason = %why, "scheduled run interrupted");
            Some(Outcome::Interrupted)
        }
        Err(e) => {
            m.run_ended(
                Outcome::Failed,
                clock.elapsed(),
                finished_at,
                None,
                &[],
                stats.as_ref(),
            );
            tracing::error!(error = %e, "scheduled run failed");
            Some(Outcome::Failed)
        }
    };
    // A run a signal stopped says nothing about health: the daemon is stopping.
    if let Some(outcome) = ended.filter(|o| *o != Outcome::Interrupted) {
        *health.last.lock().expect("never poisoned") = Some(LastRun {
            finished_at,
            succeeded: matches!(outcome, Outcome::Ok | Outcome::Partial),
        });
    }
    refresh_gauges(health).await;
    let _ = health.readiness(finished_at).await;
    let missed = schedule.ticks_between(due, unix_now());
    if missed > 0 {
        m.ticks_skipped("overlap", missed);
        tracing::info!(
            missed,
            "the run outlasted scheduled ticks; they were skipped"
        );
    }
}

fn log_finished(f: &Finished) {
    let t = crate::apply::Tally::of(&f.results);
    let s = &f.plan.summary;
    match f.outcome {
        Outcome::Blocked => tracing::error!(
            run = f.run_id,
            reasons = %f.plan.safety.reasons.join("; "),
            "scheduled run blocked by the safety gate: removals held back; review with `ldap2exo sync --dry-run`, approve with `ldap2exo sync --max-deletes N`"
        ),
        Outcome::Failed => tracing::error!(
            run = f.run_id,
            failed = t.failed,
            conflicts = t.conflict,
            "scheduled run failed: no action succeeded"
        ),
        _ => tracing::info!(
            run = f.run_id,
            outcome = f.outcome.as_str(),
            create = s.create,
            update = s.update,
            disable = s.disable,
            delete = s.delete,
            done = t.done,
            failed = t.failed,
            conflicts = t.conflict,
            "scheduled run finished"
        ),
    }
}

/// Writes the run's text report over `path` (through a temporary file and a rename, so a
/// reader never sees half a report). A failure is logged, never fatal: the run is recorded.
fn write_report(path: &Path, f: &Finished) {
    let mut text = Vec::new();
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let written = report::write(&mut text, &f.plan, Some(&f.results), Format::Text, "daemon")
        .and_then(|()| std::fs::write(&tmp, &text))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the run's report (daemon.report_file)");
    }
}

/// Sets the gauges read from the state store.
async fn refresh_gauges(health: &Health) {
    match health.store.counts().await {
        Ok(c) => {
            let m = &health.metrics;
            m.quarantined.set(c.quarantined);
            m.pending_deletions.set(c.disabled);
            for (stage, n) in [
                ("active", c.active),
                ("disabled", c.disabled),
                ("deleted", c.deleted),
            ] {
                m.managed.get_or_create(&[("stage", stage)]).set(n);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot count the state store's objects for the metrics")
        }
    }
}
