//! The daemon's Prometheus metrics, served on `/metrics` in the OpenMetrics text format
//! (which Prometheus scrapes natively), through the `prometheus-client` crate.
//!
//! Labels carry only fixed words (outcome, op, service, status class, stage, reason): never a
//! uid, an address or anything secret, so a scrape shows no personal data and the number of
//! series stays small.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::apply::{ActionResult, Outcome as ActionOutcome};
use crate::state::Outcome;
use crate::tenant::{ServiceStats, TenantStats};

type Labels1 = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];

/// Every metric the daemon exports. Cheap to share: each field is an `Arc` inside.
pub struct Metrics {
    registry: Registry,
    runs: Family<Labels1, Counter>,
    actions: Family<Labels2, Counter>,
    ticks_skipped: Family<Labels1, Counter>,
    ldap_entries: Counter,
    requests: Family<Labels2, Counter>,
    throttled: Family<Labels1, Counter>,
    waited: Family<Labels1, Counter<f64, AtomicU64>>,
    duration: Histogram,
    last_success: Gauge,
    last_run: Gauge,
    pub(super) quarantined: Gauge,
    pub(super) pending_deletions: Gauge,
    mailboxes_pending: Gauge,
    pub(super) managed: Family<Labels1, Gauge>,
    ready: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ldap2exo");
        let m = Metrics {
            runs: Family::default(),
            actions: Family::default(),
            ticks_skipped: Family::default(),
            ldap_entries: Counter::default(),
            requests: Family::default(),
            throttled: Family::default(),
            waited: Family::default(),
            // 1 s to about 9 hours.
            duration: Histogram::new(exponential_buckets(1.0, 2.0, 16)),
            last_success: Gauge::default(),
            last_run: Gauge::default(),
            quarantined: Gauge::default(),
            pending_deletions: Gauge::default(),
            mailboxes_pending: Gauge::default(),
            managed: Family::default(),
            ready: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "runs",
            "Runs by outcome (ok, partial, failed, blocked, interrupted)",
            m.runs.clone(),
        );
        r.register(
            "actions",
            "Tenant actions by op and outcome",
            m.actions.clone(),
        );
        r.register(
            "ticks_skipped",
            "Scheduled runs skipped: overlap (the previous run was still going) or locked (another process held the state store)",
            m.ticks_skipped.clone(),
        );
        r.register(
            "ldap_entries_read",
            "LDAP entries read by full runs",
            m.ldap_entries.clone(),
        );
        r.register(
            "tenant_requests",
            "HTTP requests to the tenant by service (graph, exchange) and status class (2xx..5xx, transport_error)",
            m.requests.clone(),
        );
        r.register(
            "tenant_throttled",
            "429 and concurrency refusals by service",
            m.throttled.clone(),
        );
        r.register(
            "tenant_wait_seconds",
            "Time requests waited for Retry-After, backoff or a throttling pause, by service",
            m.waited.clone(),
        );
        r.register(
            "run_duration_seconds",
            "Wall time of runs",
            m.duration.clone(),
        );
        r.register(
            "last_success_timestamp_seconds",
            "When the last run that succeeded (ok or partial) finished, Unix seconds",
            m.last_success.clone(),
        );
        r.register(
            "last_run_timestamp_seconds",
            "When the last run finished, Unix seconds",
            m.last_run.clone(),
        );
        r.register(
            "quarantined_entries",
            "LDAP entries the last full run could not use",
            m.quarantined.clone(),
        );
        r.register(
            "pending_deletions",
            "Leavers disabled and waiting for their grace period",
            m.pending_deletions.clone(),
        );
        r.register(
            "mailboxes_pending",
            "Actions of the last run left pending (a mailbox Exchange is still provisioning)",
            m.mailboxes_pending.clone(),
        );
        r.register(
            "managed_objects",
            "Objects in the state store by stage",
            m.managed.clone(),
        );
        r.register(
            "ready",
            "1 when the daemon is ready (what /readyz answers), judged at each scrape",
            m.ready.clone(),
        );
        Metrics { registry, ..m }
    }

    /// A run ended (or failed before applying: `results` empty, `stats` `None`).
    pub fn run_ended(
        &self,
        outcome: Outcome,
        elapsed: Duration,
        finished_at: i64,
        entries: Option<usize>,
        results: &[ActionResult],
        stats: Option<&TenantStats>,
    ) {
        self.runs
            .get_or_create(&[("outcome", outcome.as_str())])
            .inc();
        self.duration.observe(elapsed.as_secs_f64());
        self.last_run.set(finished_at);
        if matches!(outcome, Outcome::Ok | Outcome::Partial) {
            self.last_success.set(finished_at);
        }
        if let Some(n) = entries {
            self.ldap_entries.inc_by(n as u64);
        }
        let mut pending = 0;
        for r in results {
            let outcome = match r.outcome {
                ActionOutcome::Done => "done",
                ActionOutcome::Pending(_) => {
                    pending += 1;
                    "pending"
                }
                ActionOutcome::Skipped(_) => "skipped",
                ActionOutcome::Conflict(_) => "conflict",
                ActionOutcome::Failed(_) => "failed",
                ActionOutcome::NotStarted(_) => "not_started",
            };
            self.actions
                .get_or_create(&[("op", r.op.as_str()), ("outcome", outcome)])
                .inc();
        }
        self.mailboxes_pending.set(pending);
        if let Some(stats) = stats {
            self.requests_of("graph", &stats.graph);
            self.requests_of("exchange", &stats.exchange);
        }
    }

    fn requests_of(&self, service: &'static str, s: &ServiceStats) {
        for (class, n) in ["2xx", "3xx", "4xx", "5xx"].into_iter().zip(s.by_class) {
            if n > 0 {
                self.requests
                    .get_or_create(&[("service", service), ("status", class)])
                    .inc_by(n);
            }
        }
        if s.transport_errors > 0 {
            self.requests
                .get_or_create(&[("service", service), ("status", "transport_error")])
                .inc_by(s.transport_errors);
        }
        self.throttled
            .get_or_create(&[("service", service)])
            .inc_by(s.throttled);
        self.waited
            .get_or_create(&[("service", service)])
            .inc_by(s.waited.as_secs_f64());
    }

    /// Seeds the timestamps from the state store when the daemon starts, so a restart does
    /// not look like a long outage to `time() - last_success` alerts, and creates every
    /// `runs_total` series at 0, so `increase()` sees the first run of each outcome.
    pub fn restarted(&self, last_success: Option<i64>, last_run: Option<i64>) {
        if let Some(t) = last_success {
            self.last_success.set(t);
        }
        if let Some(t) = last_run {
            self.last_run.set(t);
        }
        for outcome in [
            Outcome::Ok,
            Outcome::Partial,
            Outcome::Failed,
            Outcome::Blocked,
            Outcome::Interrupted,
        ] {
            let _ = self.runs.get_or_create(&[("outcome", outcome.as_str())]);
        }
    }

    /// A scheduled run did not happen; `reason` is `overlap` or `locked`.
    pub fn ticks_skipped(&self, reason: &'static str, n: u64) {
        self.ticks_skipped
            .get_or_create(&[("reason", reason)])
            .inc_by(n);
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_moves_its_counters_and_nothing_personal_is_exported() {
        let m = Metrics::new();
        let results = vec![ActionResult {
            op: crate::plan::Op::Create,
            anchor: crate::ids::Anchor::new("0b1c-secret-anchor").unwrap(),
            uid: "jmueller".into(),
            outcome: ActionOutcome::Failed("address jm@example.edu is taken".into()),
        }];
        let mut stats = TenantStats::default();
        stats.exchange.by_class = [3, 0, 1, 0];
        stats.exchange.throttled = 1;
        m.run_ended(
            Outcome::Partial,
            Duration::from_secs(3),
            1_700_000_000,
            Some(39),
            &results,
            Some(&stats),
        );
        let text = m.encode();
        for line in [
            "ldap2exo_runs_total{outcome=\"partial\"} 1",
            "ldap2exo_actions_total{op=\"create\",outcome=\"failed\"} 1",
            "ldap2exo_tenant_requests_total{service=\"exchange\",status=\"2xx\"} 3",
            "ldap2exo_ldap_entries_read_total 39",
            "ldap2exo_last_success_timestamp_seconds 1700000000",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        for private in ["jmueller", "0b1c", "example.edu"] {
            assert!(!text.contains(private), "{private} leaked into\n{text}");
        }
    }
}
