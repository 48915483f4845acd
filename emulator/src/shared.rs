//! State shared by the server tasks: the tenant store, issued tokens, fault state and
//! counters, each behind its own mutex (never held across an await), plus fixed settings.

use crate::auth::TokenTable;
use crate::faults::{Api, Counters, FaultAction, FaultState, Verdict};
use crate::store::Store;
use crate::util::Prng;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Settings {
    pub token_lifetime: Duration,
    pub delta_token_lifetime: Duration,
    pub delta_expired_status: u16,
    pub advanced_query_lag: Duration,
    pub realism: crate::config::Realism,
}

pub struct Shared {
    pub store: Mutex<Store>,
    /// Exchange cmdlet calls being processed now (concurrency refusals).
    pub exchange_in_flight: std::sync::atomic::AtomicUsize,
    /// HTTP requests received and not yet answered (any endpoint), so a test can wait until
    /// what a killed client sent has been handled.
    pub requests_in_flight: std::sync::atomic::AtomicUsize,
    /// Exchange nextLink tokens already used (they are single use in strict mode).
    pub used_next_links: Mutex<std::collections::HashSet<String>>,
    pub tokens: Mutex<TokenTable>,
    pub faults: Mutex<FaultState>,
    pub counters: Mutex<Counters>,
    pub request_ids: Mutex<Prng>,
    pub settings: Settings,
    /// `https://127.0.0.1:PORT`, used to build `@odata.nextLink` and friends.
    pub base_url: String,
    pub ca_pem: String,
    pub state_dump_path: Option<PathBuf>,
}

/// What the fault layer decided, already formatted for the API's error writer.
pub enum Gate {
    /// Run it; `drop`: cut the response off afterwards (targeted rule).
    Proceed {
        limit_percentage: Option<u64>,
        drop: bool,
    },
    /// Exchange: answer 200 with `@adminapi.errors`, do nothing (targeted rule).
    NonTerminating,
    Throttle {
        retry_after: String,
    },
    Inject {
        status: u16,
        retry_after: String,
    },
}

/// A poisoned mutex only means a handler panicked mid-update; the emulator keeps serving so
/// the test sees the real failure rather than a cascade of poison errors.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn request_id(&self) -> String {
        lock(&self.request_ids).uuid()
    }

    /// Counts the request, then asks the fault layer whether it may run.
    pub fn gate(&self, api: Api, endpoint: &str, is_write: bool, units: u64) -> Gate {
        let (verdict, retry, rule) = {
            let mut f = lock(&self.faults);
            let rule = f.take_rule(endpoint);
            let v = match rule {
                Some(FaultAction::Fail { status }) => Verdict::Inject(status),
                Some(FaultAction::NonTerminatingError) => Verdict::Proceed {
                    limit_percentage: None,
                },
                _ => f.decide(api, is_write, units),
            };
            let retry = match &v {
                Verdict::Throttle(d) => f.retry_after(*d),
                _ => f.config.injected_retry_after_secs.max(1).to_string(),
            };
            (v, retry, rule)
        };
        let mut c = lock(&self.counters);
        c.bump(endpoint, |e| e.requests += 1);
        match verdict {
            Verdict::Proceed { .. } if rule == Some(FaultAction::NonTerminatingError) => {
                c.bump(endpoint, |e| e.faults += 1);
                Gate::NonTerminating
            }
            Verdict::Proceed { limit_percentage } => {
                if is_write {
                    c.bump(endpoint, |e| e.writes += 1);
                }
                let drop = rule == Some(FaultAction::DropResponse);
                if drop {
                    c.bump(endpoint, |e| e.dropped += 1);
                }
                Gate::Proceed {
                    limit_percentage,
                    drop,
                }
            }
            Verdict::Throttle(_) => {
                c.bump(endpoint, |e| e.throttled += 1);
                Gate::Throttle { retry_after: retry }
            }
            Verdict::Inject(429) => {
                c.bump(endpoint, |e| e.throttled += 1);
                Gate::Inject {
                    status: 429,
                    retry_after: retry,
                }
            }
            Verdict::Inject(s) => {
                c.bump(endpoint, |e| e.faults += 1);
                Gate::Inject {
                    status: s,
                    retry_after: retry,
                }
            }
        }
    }

    /// Records a refusal (status ≥ 400) produced by a handler.
    pub fn count_error(&self, endpoint: &str, status: u16) {
        if status >= 400 {
            lock(&self.counters).bump(endpoint, |e| e.errors += 1);
        }
    }
}
