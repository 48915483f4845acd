//! Progress of a long run, so that a quiet minute is never a mystery.
//!
//! On a terminal, long runs show progress (phase, done/total, rate, ETA; an indicatif bar,
//! honest about throttling waits); off a terminal, a progress log line every few seconds.
//!
//! The pipeline updates a cheap shared [`Progress`] (atomics behind an `Arc`): which phase
//! runs, how much of it is done, how many actions failed. A renderer task, started with the
//! run by [`start`], reads it: when standard error is a terminal and the logs are text
//! ([`crate::telemetry::draws_bar`]), it redraws an indicatif bar a few times a second (log
//! lines are written around it, see [`write_around_bar`]); otherwise it logs one INFO line
//! every `LDAP2EXO_PROGRESS_SECONDS` (default 10) seconds, and nothing at all for a run that
//! ends before the first interval. Both say when the tenant throttled us since the last
//! look, so a stall is explained rather than guessed at.

use std::io::Write;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::tenant::Tenant;

/// The environment variable that sets the interval between progress lines, in seconds.
pub const INTERVAL_VAR: &str = "LDAP2EXO_PROGRESS_SECONDS";
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// How often the bar is redrawn.
const BAR_TICK: Duration = Duration::from_millis(200);

/// What a run is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Starting,
    ReadingLdap,
    ReadingTenant,
    Planning,
    /// Actions that give addresses up, before anyone claims them.
    ApplyingReleases,
    Applying,
    /// Blocking the sign-in of the MailUsers this run created.
    BlockingSignIns,
}

impl Phase {
    const ALL: [Phase; 7] = [
        Phase::Starting,
        Phase::ReadingLdap,
        Phase::ReadingTenant,
        Phase::Planning,
        Phase::ApplyingReleases,
        Phase::Applying,
        Phase::BlockingSignIns,
    ];

    /// The `phase` field of a progress line.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::ReadingLdap => "reading_ldap",
            Phase::ReadingTenant => "reading_tenant",
            Phase::Planning => "planning",
            Phase::ApplyingReleases => "applying_releases",
            Phase::Applying => "applying",
            Phase::BlockingSignIns => "blocking_sign_ins",
        }
    }

    /// The bar's prefix.
    fn label(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::ReadingLdap => "reading LDAP",
            Phase::ReadingTenant => "reading the tenant",
            Phase::Planning => "planning",
            Phase::ApplyingReleases => "applying (releases)",
            Phase::Applying => "applying",
            Phase::BlockingSignIns => "blocking sign-ins",
        }
    }

    fn from_u8(n: u8) -> Phase {
        Phase::ALL
            .get(usize::from(n))
            .copied()
            .unwrap_or(Phase::Starting)
    }
}

/// The shared progress of one run; clones see the same counters.
#[derive(Debug, Clone)]
pub struct Progress(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    phase: AtomicU8,
    done: AtomicU64,
    /// 0 while the phase's total is unknown.
    total: AtomicU64,
    /// Actions failed or in conflict so far, over every phase.
    failed: AtomicU64,
    phase_started: Mutex<Instant>,
    /// Whose throttling statistics explain a stall.
    tenant: OnceLock<Tenant>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress(Arc::new(Inner {
            phase: AtomicU8::new(Phase::Starting as u8),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            phase_started: Mutex::new(Instant::now()),
            tenant: OnceLock::new(),
        }))
    }
}

impl Progress {
    /// Progress that nobody shows (tests, callers without a renderer).
    pub fn new() -> Progress {
        Progress::default()
    }

    /// Enters `phase`, with `total` steps when they are known.
    pub fn phase(&self, phase: Phase, total: Option<u64>) {
        self.log_finished(phase.as_str());
        let i = &self.0;
        i.done.store(0, Ordering::Relaxed);
        i.total.store(total.unwrap_or(0), Ordering::Relaxed);
        i.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// Logs (DEBUG) how long the current phase took and restarts its clock: where a run's
    /// time goes, for an operator or a benchmark reading the log.
    fn log_finished(&self, next: &str) {
        let i = &self.0;
        let took = std::mem::replace(
            &mut *i.phase_started.lock().expect("never poisoned"),
            Instant::now(),
        )
        .elapsed();
        tracing::debug!(
            phase = Phase::from_u8(i.phase.load(Ordering::Relaxed)).as_str(),
            elapsed_ms = took.as_millis() as u64,
            next,
            "phase finished"
        );
    }

    /// One more step of the phase done (an entry read, an action finished).
    pub fn step(&self) {
        self.0.done.fetch_add(1, Ordering::Relaxed);
    }

    /// One action finished; `failed` when it failed or met a conflict.
    pub fn action_finished(&self, failed: bool) {
        if failed {
            self.0.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.step();
    }

    /// Reads throttling statistics from `tenant` from now on.
    pub fn watch(&self, tenant: &Tenant) {
        let _ = self.0.tenant.set(tenant.clone());
    }

    pub fn snapshot(&self) -> Snapshot {
        let i = &self.0;
        let stats = i.tenant.get().map(Tenant::stats).unwrap_or_default();
        let total = i.total.load(Ordering::Relaxed);
        Snapshot {
            phase: Phase::from_u8(i.phase.load(Ordering::Relaxed)),
            done: i.done.load(Ordering::Relaxed),
            total: (total > 0).then_some(total),
            failed: i.failed.load(Ordering::Relaxed),
            elapsed: i.phase_started.lock().expect("never poisoned").elapsed(),
            throttled: stats.throttled(),
            waited: stats.waited(),
        }
    }
}

/// The progress at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    pub phase: Phase,
    pub done: u64,
    pub total: Option<u64>,
    pub failed: u64,
    /// Since the phase began.
    pub elapsed: Duration,
    /// 429s since the tenant was connected.
    pub throttled: u64,
    /// Time requests spent waiting out throttling and backoff, summed over requests.
    pub waited: Duration,
}

impl Snapshot {
    /// Steps per second over the phase so far; none before a step is done.
    pub fn rate_per_s(&self) -> Option<f64> {
        let secs = self.elapsed.as_secs_f64();
        (self.done > 0 && secs > 0.0).then(|| self.done as f64 / secs)
    }

    /// Seconds left at the phase's rate so far, when its total is known.
    pub fn eta_s(&self) -> Option<u64> {
        let left = self.total?.saturating_sub(self.done);
        let rate = self.rate_per_s()?;
        Some((left as f64 / rate).ceil() as u64)
    }
}

/// What changed between two looks: whether the tenant throttled us in between.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Line {
    pub now: Snapshot,
    /// 429s since the previous look.
    pub throttled: u64,
    /// Waiting summed over requests since the previous look.
    pub waited: Duration,
}

impl Line {
    pub fn new(previous: Option<&Snapshot>, now: Snapshot) -> Line {
        let (throttled, waited) = previous.map_or((0, Duration::ZERO), |p| (p.throttled, p.waited));
        Line {
            now,
            throttled: now.throttled.saturating_sub(throttled),
            waited: now.waited.saturating_sub(waited),
        }
    }

    /// The fields of the progress log line.
    pub fn fields(&self) -> LineFields {
        let s = &self.now;
        LineFields {
            phase: s.phase.as_str(),
            done: s.done,
            total: s.total,
            failed: s.failed,
            rate_per_s: s.rate_per_s().map(|r| (r * 10.0).round() / 10.0),
            eta_s: s.eta_s(),
            throttled: self.throttled,
            waited_s: (self.waited.as_secs_f64() * 10.0).round() / 10.0,
        }
    }

    /// Logs the line at INFO.
    fn log(&self) {
        let f = self.fields();
        let message = match f.throttled {
            0 => "progress",
            _ => "progress; the tenant throttled us, waiting",
        };
        tracing::info!(
            phase = f.phase,
            done = f.done,
            total = f.total,
            failed = f.failed,
            rate_per_s = f.rate_per_s,
            eta_s = f.eta_s,
            throttled = f.throttled,
            waited_s = f.waited_s,
            "{message}"
        );
    }

    /// The bar's message: rate, ETA, failures, throttling.
    pub fn message(&self) -> String {
        let s = &self.now;
        let mut parts = Vec::new();
        if s.total.is_none() && s.done > 0 {
            parts.push(format!("{} so far", s.done));
        }
        if let Some(rate) = s.rate_per_s() {
            parts.push(format!("{rate:.1}/s"));
        }
        if let Some(eta) = s.eta_s() {
            parts.push(format!(
                "ETA {}",
                humantime::format_duration(Duration::from_secs(eta))
            ));
        }
        if s.failed > 0 {
            parts.push(format!("{} failed", s.failed));
        }
        if self.throttled > 0 {
            parts.push(format!("throttled {}×, waiting", self.throttled));
        }
        parts.join(", ")
    }
}

/// The fields of a progress log line; an unknown total, rate or ETA is left out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LineFields {
    pub phase: &'static str,
    pub done: u64,
    pub total: Option<u64>,
    pub failed: u64,
    /// Steps per second over the phase, to a tenth.
    pub rate_per_s: Option<f64>,
    pub eta_s: Option<u64>,
    /// 429s since the previous line.
    pub throttled: u64,
    /// Seconds requests spent waiting since the previous line, summed over requests, to a
    /// tenth.
    pub waited_s: f64,
}

/// The interval between progress lines: `LDAP2EXO_PROGRESS_SECONDS`, default 10 s. A value
/// that is not a positive number of seconds is named in a warning (once) and the default used.
pub fn interval() -> Duration {
    static WARNED: std::sync::Once = std::sync::Once::new();
    let value = std::env::var(INTERVAL_VAR).ok();
    interval_from(value.as_deref()).unwrap_or_else(|why| {
        WARNED.call_once(|| tracing::warn!(variable = INTERVAL_VAR, "{why}"));
        DEFAULT_INTERVAL
    })
}

/// [`interval`] from the variable's value; the error says what is wrong with it.
fn interval_from(value: Option<&str>) -> Result<Duration, String> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(DEFAULT_INTERVAL);
    };
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            format!(
                "{INTERVAL_VAR}=`{v}` is not a positive number of seconds; progress lines come every {} s",
                DEFAULT_INTERVAL.as_secs()
            )
        })
}

/// The bar being drawn, if any: log lines are written around it.
static BAR: RwLock<Option<ProgressBar>> = RwLock::new(None);

/// Writes `buf` to standard error without tearing the bar (hidden, written, redrawn).
pub fn write_around_bar(buf: &[u8]) -> std::io::Result<()> {
    let bar = BAR.read().unwrap_or_else(|e| e.into_inner()).clone();
    match bar {
        Some(bar) => bar.suspend(|| std::io::stderr().lock().write_all(buf)),
        None => std::io::stderr().lock().write_all(buf),
    }
}

/// Starts showing a new run's progress (a bar or periodic log lines, see the module doc).
/// Must be called within the tokio runtime; the rendering stops when the [`Renderer`] is
/// finished or dropped.
pub fn start() -> (Progress, Renderer) {
    let progress = Progress::new();
    let task = if crate::telemetry::draws_bar() {
        tokio::spawn(draw_bar(progress.clone()))
    } else {
        tokio::spawn(log_lines(progress.clone(), interval()))
    };
    let watched = progress.clone();
    (
        progress,
        Renderer {
            task,
            progress: watched,
        },
    )
}

/// Stops the progress display when finished or dropped, and logs how long the last phase
/// took (`next="done"`).
#[derive(Debug)]
pub struct Renderer {
    task: tokio::task::JoinHandle<()>,
    progress: Progress,
}

impl Renderer {
    /// Stops and clears the display (before the report is written).
    pub fn finish(self) {}
}

impl Drop for Renderer {
    fn drop(&mut self) {
        self.progress.log_finished("done");
        self.task.abort();
        let bar = BAR.write().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
    }
}

async fn log_lines(progress: Progress, every: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut previous = None;
    loop {
        ticks.tick().await;
        let now = progress.snapshot();
        Line::new(previous.as_ref(), now).log();
        previous = Some(now);
    }
}

async fn draw_bar(progress: Progress) {
    let bar = ProgressBar::new_spinner();
    *BAR.write().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
    let spinner = ProgressStyle::with_template("{spinner} {prefix}: {msg} [{elapsed}]")
        .expect("a valid template");
    let counted = ProgressStyle::with_template(
        "{spinner} {prefix}: [{bar:30}] {pos}/{len} {msg} [{elapsed}]",
    )
    .expect("a valid template")
    .progress_chars("=> ");
    let mut ticks = tokio::time::interval(BAR_TICK);
    let mut episode = Episode::default();
    let mut shown = None;
    loop {
        ticks.tick().await;
        let now = progress.snapshot();
        let line = Line {
            now,
            throttled: episode.update(now.throttled, Instant::now()),
            waited: Duration::ZERO,
        };
        // Everything is set before the style, so no frame mixes two phases.
        bar.set_length(now.total.unwrap_or(0));
        bar.set_position(now.done);
        bar.set_message(line.message());
        if shown != Some((now.phase, now.total.is_some())) {
            shown = Some((now.phase, now.total.is_some()));
            bar.set_style(match now.total {
                Some(_) => counted.clone(),
                None => spinner.clone(),
            });
            bar.set_prefix(now.phase.label());
            bar.reset_elapsed();
        }
        bar.tick();
    }
}

/// How long the bar keeps saying "throttled" after the last 429: a `Retry-After` wait shows
/// no new 429 while it lasts.
const EPISODE: Duration = Duration::from_secs(15);

/// The 429s of the current throttling episode: counted while they keep coming, forgotten
/// [`EPISODE`] after the last.
#[derive(Debug, Default)]
struct Episode {
    seen: u64,
    count: u64,
    last: Option<Instant>,
}

impl Episode {
    /// Takes the throttle count since connect at `at`; returns the episode's 429s.
    fn update(&mut self, throttled: u64, at: Instant) -> u64 {
        if throttled > self.seen {
            self.count += throttled - self.seen;
            self.seen = throttled;
            self.last = Some(at);
        }
        if self.last.is_some_and(|l| at.duration_since(l) > EPISODE) {
            self.count = 0;
            self.last = None;
        }
        self.count
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_interval_variable_is_a_positive_number_of_seconds() {
        assert_eq!(interval_from(None), Ok(DEFAULT_INTERVAL));
        assert_eq!(interval_from(Some(" ")), Ok(DEFAULT_INTERVAL));
        assert_eq!(interval_from(Some("2.5")), Ok(Duration::from_millis(2500)));
        for bad in ["abc", "0", "-1", "inf"] {
            let why = interval_from(Some(bad)).unwrap_err();
            assert!(why.contains(INTERVAL_VAR) && why.contains(bad), "{why}");
        }
    }

    use super::*;

    fn snap(done: u64, total: Option<u64>, secs: u64) -> Snapshot {
        Snapshot {
            phase: Phase::Applying,
            done,
            total,
            failed: 0,
            elapsed: Duration::from_secs(secs),
            throttled: 0,
            waited: Duration::ZERO,
        }
    }

    #[test]
    fn rate_and_eta_follow_the_phase_so_far() {
        let s = snap(300, Some(1_549), 60);
        assert_eq!(s.rate_per_s(), Some(5.0));
        // 1,249 left at 5/s: 249.8 s, rounded up.
        assert_eq!(s.eta_s(), Some(250));
        assert_eq!(snap(1_549, Some(1_549), 60).eta_s(), Some(0));
    }

    #[test]
    fn no_rate_before_the_first_step_and_no_eta_without_a_total() {
        assert_eq!(snap(0, Some(10), 5).rate_per_s(), None);
        assert_eq!(snap(0, Some(10), 5).eta_s(), None);
        assert_eq!(snap(10, None, 5).rate_per_s(), Some(2.0));
        assert_eq!(snap(10, None, 5).eta_s(), None);
        assert_eq!(snap(10, Some(20), 0).rate_per_s(), None);
    }

    #[test]
    fn a_line_counts_throttling_since_the_previous_look() {
        let mut before = snap(10, Some(100), 10);
        before.throttled = 4;
        before.waited = Duration::from_secs(3);
        let mut now = snap(20, Some(100), 20);
        now.throttled = 7;
        now.waited = Duration::from_millis(5_500);
        now.failed = 2;
        let line = Line::new(Some(&before), now);
        assert_eq!(line.throttled, 3);
        assert_eq!(line.waited, Duration::from_millis(2_500));
        assert_eq!(
            line.message(),
            "1.0/s, ETA 1m 20s, 2 failed, throttled 3×, waiting"
        );

        let mut reading = snap(120, None, 4);
        reading.phase = Phase::ReadingLdap;
        assert_eq!(Line::new(None, reading).message(), "120 so far, 30.0/s");

        let calm = Line::new(Some(&now), now);
        assert_eq!(calm.throttled, 0);
        assert_eq!(calm.message(), "1.0/s, ETA 1m 20s, 2 failed");
        // The first look counts everything since connect.
        assert_eq!(Line::new(None, now).throttled, 7);
    }

    #[test]
    fn the_line_rounds_its_fields_and_leaves_out_the_unknown() {
        let mut now = snap(7, Some(21), 3);
        now.phase = Phase::ApplyingReleases;
        now.failed = 1;
        let line = Line {
            now,
            throttled: 2,
            waited: Duration::from_millis(1_260),
        };
        assert_eq!(
            line.fields(),
            LineFields {
                phase: "applying_releases",
                done: 7,
                total: Some(21),
                failed: 1,
                rate_per_s: Some(2.3),
                eta_s: Some(6),
                throttled: 2,
                waited_s: 1.3,
            }
        );
        let mut reading = snap(0, None, 3);
        reading.phase = Phase::ReadingLdap;
        let f = Line::new(None, reading).fields();
        assert_eq!(
            (f.phase, f.total, f.rate_per_s, f.eta_s),
            ("reading_ldap", None, None, None)
        );
        assert_eq!(f.waited_s, 0.0);
    }

    #[test]
    fn the_bar_says_throttled_until_the_429s_stop_for_a_while() {
        let t0 = Instant::now();
        let mut e = Episode::default();
        assert_eq!(e.update(0, t0), 0);
        assert_eq!(e.update(3, t0 + Duration::from_secs(1)), 3);
        // Waiting out a Retry-After: no new 429, still throttled.
        assert_eq!(e.update(3, t0 + Duration::from_secs(10)), 3);
        assert_eq!(e.update(4, t0 + Duration::from_secs(12)), 4);
        assert_eq!(
            e.update(
                4,
                t0 + Duration::from_secs(12) + EPISODE + Duration::from_secs(1)
            ),
            0
        );
        // A new episode counts from its own first 429.
        assert_eq!(e.update(6, t0 + Duration::from_secs(60)), 2);
    }

    #[test]
    fn phases_reset_the_count_but_failures_add_up() {
        let p = Progress::new();
        p.phase(Phase::ApplyingReleases, Some(2));
        p.action_finished(true);
        p.action_finished(false);
        let s = p.snapshot();
        assert_eq!(
            (s.phase, s.done, s.total, s.failed),
            (Phase::ApplyingReleases, 2, Some(2), 1)
        );
        p.phase(Phase::Applying, Some(5));
        p.action_finished(true);
        let s = p.snapshot();
        assert_eq!(
            (s.phase, s.done, s.total, s.failed),
            (Phase::Applying, 1, Some(5), 2)
        );
        p.phase(Phase::Planning, None);
        assert_eq!(p.snapshot().total, None);
    }

    #[test]
    fn phases_round_trip_through_the_atomic() {
        for phase in Phase::ALL {
            assert_eq!(Phase::from_u8(phase as u8), phase);
        }
    }
}
