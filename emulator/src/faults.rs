//! Fault injection and limits, plus the request counters tests assert on.
//!
//! Limits follow Graph's identity throttling model in a simplified, deterministic form: a
//! budget of N units per fixed window (Microsoft uses sliding windows; a fixed one makes
//! `Retry-After` exact and tests fast). Like the real service, refused requests still count
//! against the budget. Random faults use a seeded PRNG so a failing test replays identically.

use crate::util::Prng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("error_rate and drop_rate must be between 0 and 1, got {0}")]
    BadRate(f64),
    #[error("status {0} cannot be injected (use 429, 500, 502, 503 or 504)")]
    BadStatus(u16),
    #[error("a budget needs a limit and a window above zero")]
    BadBudget,
    #[error("fault rule for {0:?}: status {1} cannot be injected (use 400..=599)")]
    BadRuleStatus(String, u16),
}

/// What a targeted fault rule does to a matching request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer this status without executing the request (JSON `{"fail":{"status":503}}`).
    Fail { status: u16 },
    /// Execute the request, then cut the response off mid-body (JSON `"drop_response"`).
    DropResponse,
    /// Exchange only: answer 200 with `@adminapi.errors` and do nothing (a non-terminating
    /// error; JSON `"non_terminating_error"`).
    NonTerminatingError,
}

/// The next `count` requests whose counter label is `endpoint` (e.g. `EXO New-MailUser`,
/// `POST /v1.0/directory/deletedItems/{id}/restore`) get `action`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    pub endpoint: String,
    pub action: FaultAction,
    pub count: u32,
}

/// `limit` units per `window_ms` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub limit: u32,
    pub window_ms: u64,
}

/// Everything a test can turn on. All fields default to "off".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultConfig {
    /// Graph writes (POST/PATCH/DELETE, assignLicense, restore) per window, app-wide.
    pub graph_write_budget: Option<Budget>,
    /// Graph resource units per window (a write costs 1, GET /users 2 or 1 with `$select`,
    /// other reads 1), like the identity "resource units" limit.
    pub graph_resource_budget: Option<Budget>,
    /// Exchange admin API write cmdlets (New-/Set-/Remove-) per window.
    pub exchange_write_budget: Option<Budget>,
    /// Exchange admin API calls of any kind per window.
    pub exchange_request_budget: Option<Budget>,
    /// Probability (0..1) that a request (or `$batch` sub-request) fails with a status drawn
    /// from `error_statuses` instead of being executed.
    pub error_rate: f64,
    pub error_statuses: Vec<u16>,
    /// `Retry-After` for randomly injected 429/503, seconds.
    pub injected_retry_after_secs: u64,
    /// Added to every API response (not to `/_emulator` calls).
    pub latency_ms: u64,
    /// Probability (0..1) that a response is cut off mid-body (the request was executed).
    pub drop_rate: f64,
    /// Cut off exactly the next N responses mid-body (deterministic variant of `drop_rate`).
    pub drop_next: u32,
    /// Whether the token endpoint is subject to latency, drops and random errors.
    pub include_token_endpoint: bool,
    /// Send `Retry-After` with millisecond decimals (Graph sometimes does, e.g. `2.128`)
    /// instead of whole seconds rounded up.
    pub fractional_retry_after: bool,
    /// Seed of the PRNG behind `error_rate` and `drop_rate`.
    pub seed: u64,
    /// Targeted faults, checked before budgets and random faults; the first rule with a
    /// matching endpoint and a count left applies (and its count goes down).
    pub rules: Vec<FaultRule>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            graph_write_budget: None,
            graph_resource_budget: None,
            exchange_write_budget: None,
            exchange_request_budget: None,
            error_rate: 0.0,
            error_statuses: vec![429, 500, 503, 504],
            injected_retry_after_secs: 1,
            latency_ms: 0,
            drop_rate: 0.0,
            drop_next: 0,
            include_token_endpoint: false,
            fractional_retry_after: false,
            seed: 1,
            rules: Vec::new(),
        }
    }
}

impl FaultConfig {
    pub fn validate(&self) -> Result<(), FaultError> {
        for r in [self.error_rate, self.drop_rate] {
            if !(0.0..=1.0).contains(&r) {
                return Err(FaultError::BadRate(r));
            }
        }
        for s in &self.error_statuses {
            if ![429, 500, 502, 503, 504].contains(s) {
                return Err(FaultError::BadStatus(*s));
            }
        }
        for r in &self.rules {
            if let FaultAction::Fail { status } = r.action
                && !(400..=599).contains(&status)
            {
                return Err(FaultError::BadRuleStatus(r.endpoint.clone(), status));
            }
        }
        for b in [
            self.graph_write_budget,
            self.graph_resource_budget,
            self.exchange_write_budget,
            self.exchange_request_budget,
        ]
        .into_iter()
        .flatten()
        {
            if b.limit == 0 || b.window_ms == 0 {
                return Err(FaultError::BadBudget);
            }
        }
        Ok(())
    }
}

/// Which budget a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Graph,
    Exchange,
}

#[derive(Debug, Default, Clone)]
struct Window {
    start: Option<Instant>,
    used: u64,
}

impl Window {
    /// Charges `cost`; answers the time until the window resets when over budget.
    fn charge(&mut self, b: Budget, cost: u64, now: Instant) -> Result<u64, Duration> {
        let len = Duration::from_millis(b.window_ms);
        let start = match self.start {
            Some(s) if now.duration_since(s) < len => s,
            _ => {
                self.used = 0;
                self.start = Some(now);
                now
            }
        };
        self.used += cost;
        if self.used > b.limit as u64 {
            Err(len
                .saturating_sub(now.duration_since(start))
                .max(Duration::from_millis(1)))
        } else {
            Ok(self.used * 100 / b.limit as u64)
        }
    }
}

/// What the fault layer decided for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Go ahead; `limit_percentage` is how much of the tightest budget is used.
    Proceed { limit_percentage: Option<u64> },
    /// 429 with this Retry-After.
    Throttle(Duration),
    /// An injected error status.
    Inject(u16),
}

/// Mutable fault state: the configuration, budget windows and the PRNG.
#[derive(Debug)]
pub struct FaultState {
    pub config: FaultConfig,
    rng: Prng,
    graph_writes: Window,
    graph_units: Window,
    exo_writes: Window,
    exo_requests: Window,
}

impl FaultState {
    pub fn new(config: FaultConfig) -> Self {
        let rng = Prng::new(config.seed);
        FaultState {
            config,
            rng,
            graph_writes: Window::default(),
            graph_units: Window::default(),
            exo_writes: Window::default(),
            exo_requests: Window::default(),
        }
    }

    /// Replaces the configuration, resetting windows and the PRNG so a test starts clean.
    pub fn set(&mut self, config: FaultConfig) {
        *self = FaultState::new(config);
    }

    /// Budget check then random fault, for one API request (or one `$batch` sub-request).
    pub fn decide(&mut self, api: Api, is_write: bool, units: u64) -> Verdict {
        let now = Instant::now();
        let c = &self.config;
        let mut pct: Option<u64> = None;
        let mut wait: Option<Duration> = None;
        let mut charge = |w: &mut Window, b: Option<Budget>, cost: u64| {
            // A `$batch` envelope costs nothing: its sub-requests are charged one by one.
            if let (Some(b), true) = (b, cost > 0) {
                match w.charge(b, cost, now) {
                    Ok(p) => pct = Some(pct.map_or(p, |q: u64| q.max(p))),
                    Err(d) => wait = Some(wait.map_or(d, |w: Duration| w.max(d))),
                }
            }
        };
        match api {
            Api::Graph => {
                charge(&mut self.graph_units, c.graph_resource_budget, units);
                if is_write {
                    charge(&mut self.graph_writes, c.graph_write_budget, 1);
                }
            }
            Api::Exchange => {
                charge(&mut self.exo_requests, c.exchange_request_budget, 1);
                if is_write {
                    charge(&mut self.exo_writes, c.exchange_write_budget, 1);
                }
            }
        }
        if let Some(d) = wait {
            return Verdict::Throttle(d);
        }
        if let Some(s) = self.random_error() {
            return Verdict::Inject(s);
        }
        Verdict::Proceed {
            limit_percentage: pct,
        }
    }

    /// The action of the first targeted rule for this endpoint with a count left (consumed).
    pub fn take_rule(&mut self, endpoint: &str) -> Option<FaultAction> {
        let r = self
            .config
            .rules
            .iter_mut()
            .find(|r| r.count > 0 && r.endpoint == endpoint)?;
        r.count -= 1;
        Some(r.action.clone())
    }

    /// A random injected status, or none (used for the token endpoint too).
    pub fn random_error(&mut self) -> Option<u16> {
        if self.config.error_rate > 0.0
            && !self.config.error_statuses.is_empty()
            && self.rng.next_f64() < self.config.error_rate
        {
            let i = (self.rng.next_u64() % self.config.error_statuses.len() as u64) as usize;
            return Some(self.config.error_statuses[i]);
        }
        None
    }

    /// Whether to cut this response off mid-body.
    pub fn should_drop(&mut self) -> bool {
        if self.config.drop_next > 0 {
            self.config.drop_next -= 1;
            return true;
        }
        self.config.drop_rate > 0.0 && self.rng.next_f64() < self.config.drop_rate
    }

    /// Formats a Retry-After value as configured.
    pub fn retry_after(&self, d: Duration) -> String {
        if self.config.fractional_retry_after {
            format!("{:.3}", d.as_secs_f64().max(0.001))
        } else {
            d.as_secs_f64().ceil().max(1.0).to_string()
        }
    }
}

/// Per-endpoint counters. Endpoints are labelled like `GET /v1.0/users/{id}`,
/// `POST /v1.0/$batch`, `EXO Set-MailUser`, `POST /{tenant}/oauth2/v2.0/token`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointCounters {
    /// Requests received (batch sub-requests count under their own endpoint).
    pub requests: u64,
    /// Write requests executed by the handler (whatever their outcome), not counting ones
    /// refused by throttling or an injected fault.
    pub writes: u64,
    /// 429 answers sent because a budget was exceeded or a 429 was injected.
    pub throttled: u64,
    /// Injected non-429 errors.
    pub faults: u64,
    /// Responses cut off mid-body.
    pub dropped: u64,
    /// Responses with a status of 400 or more produced by the handler itself (refusals).
    pub errors: u64,
    /// Of `requests`, those that came inside a `POST /$batch` (each also counted there), so
    /// HTTP requests on the wire are `requests - batched`.
    #[serde(default)]
    pub batched: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub total: EndpointCounters,
    pub per_endpoint: BTreeMap<String, EndpointCounters>,
}

impl Counters {
    pub fn bump(&mut self, endpoint: &str, f: impl Fn(&mut EndpointCounters)) {
        f(&mut self.total);
        f(self.per_endpoint.entry(endpoint.to_string()).or_default());
    }

    /// Writes summed over all endpoints: "the second run made zero writes".
    pub fn writes(&self) -> u64 {
        self.total.writes
    }

    pub fn endpoint(&self, endpoint: &str) -> EndpointCounters {
        self.per_endpoint.get(endpoint).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refuses_past_limit_and_resets() {
        let mut f = FaultState::new(FaultConfig {
            graph_write_budget: Some(Budget {
                limit: 2,
                window_ms: 50,
            }),
            ..Default::default()
        });
        assert!(matches!(
            f.decide(Api::Graph, true, 1),
            Verdict::Proceed { .. }
        ));
        assert!(matches!(
            f.decide(Api::Graph, true, 1),
            Verdict::Proceed { .. }
        ));
        assert!(matches!(
            f.decide(Api::Graph, true, 1),
            Verdict::Throttle(_)
        ));
        // Reads are not writes.
        assert!(matches!(
            f.decide(Api::Graph, false, 1),
            Verdict::Proceed { .. }
        ));
        std::thread::sleep(Duration::from_millis(60));
        assert!(matches!(
            f.decide(Api::Graph, true, 1),
            Verdict::Proceed { .. }
        ));
    }

    #[test]
    fn random_errors_are_reproducible() {
        let cfg = FaultConfig {
            error_rate: 0.5,
            seed: 42,
            ..Default::default()
        };
        let run = |c: FaultConfig| {
            let mut f = FaultState::new(c);
            (0..50)
                .map(|_| f.decide(Api::Exchange, false, 1))
                .collect::<Vec<_>>()
        };
        let a = run(cfg.clone());
        assert_eq!(a, run(cfg));
        assert!(a.iter().any(|v| matches!(v, Verdict::Inject(_))));
        assert!(a.iter().any(|v| matches!(v, Verdict::Proceed { .. })));
    }
}
