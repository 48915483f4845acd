//! The adaptive concurrency limiter, one per service, shared by every request to it.
//!
//! Microsoft's limits are per app and tenant, not per connection, so the right number of
//! requests in flight is learnt rather than configured: start with a few, grow slowly while
//! requests succeed and the service reports headroom (`x-ms-throttle-limit-percentage` is
//! only sent above 80 % of a budget).
//!
//! Two kinds of refusal are told apart, because they call for different answers:
//! - A 429 with `Retry-After` says a budget (requests per window) is spent. Every request to
//!   the service waits until then (the budget is shared; the others would only collect 429s
//!   of their own), but the number in flight stays: it was the rate, not the concurrency,
//!   that ran out. The limiter also learns the budget: how many requests it admitted since
//!   the window began, and the window's length (from its start to the end of the pause).
//!   From then on it admits at most that many per window and waits out the rest of the
//!   window itself, instead of spending requests on 429s; each window in which it used its
//!   whole allowance without a refusal it allows a little more, so a grown budget is found.
//! - Exchange's concurrency refusal ("maximum number of concurrent requests", no
//!   `Retry-After`) and a 429 without `Retry-After` say too many are in flight: the limit
//!   drops to what the service accepted (below the number in flight at the refusal), and the
//!   level refused is remembered, so growth past it is slow; nothing is paused.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Start and bounds of the number of concurrent requests to one service.
#[derive(Debug, Clone, Copy)]
pub struct Concurrency {
    pub initial: u32,
    pub min: u32,
    pub max: u32,
}

/// A `Retry-After` longer than this is a penalty, not the end of a budget window: it is
/// waited out but not learnt from.
const LONGEST_LEARNT_WINDOW: Duration = Duration::from_secs(10);

/// A budget learnt from a 429: `budget` requests per `window`.
#[derive(Debug, Clone, Copy)]
struct Learnt {
    budget: u32,
    window: Duration,
}

#[derive(Debug)]
struct State {
    limit: f64,
    in_flight: u32,
    paused_until: Option<Instant>,
    /// When the current budget window began (the first request admitted after a pause or
    /// after the previous window ended), and how many requests were admitted since.
    window_start: Option<Instant>,
    admitted: u32,
    learnt: Option<Learnt>,
    /// The number in flight when the service last refused for concurrency.
    refused_at: Option<u32>,
}

#[derive(Debug)]
pub struct AdaptiveLimiter {
    state: Mutex<State>,
    notify: Notify,
    min: f64,
    max: f64,
}

/// One admitted request; dropping it frees the slot.
#[derive(Debug)]
pub struct Permit<'a> {
    limiter: &'a AdaptiveLimiter,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.limiter.lock().in_flight -= 1;
        self.limiter.notify.notify_waiters();
    }
}

impl AdaptiveLimiter {
    pub fn new(c: Concurrency) -> Self {
        let min = c.min.max(1) as f64;
        let max = (c.max as f64).max(min);
        Self {
            state: Mutex::new(State {
                limit: (c.initial as f64).clamp(min, max),
                in_flight: 0,
                paused_until: None,
                window_start: None,
                admitted: 0,
                learnt: None,
                refused_at: None,
            }),
            notify: Notify::new(),
            min,
            max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every update is one step.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a free slot, for any pause to end and for the learnt budget to allow
    /// another request; answers the permit and how long it waited for a pause or the
    /// budget (waiting for a slot is queueing, not throttling).
    pub async fn acquire(&self) -> (Permit<'_>, Duration) {
        let mut paused = Duration::ZERO;
        loop {
            // Register for wake-ups before looking, so a release in between is not lost.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let pause = {
                let mut s = self.lock();
                let now = Instant::now();
                match s.paused_until {
                    Some(until) if until > now => Some(until),
                    _ => {
                        s.paused_until = None;
                        // A window is over: the next begins with this request. A window whose
                        // whole allowance went through without a 429 allows a little more.
                        if let (Some(start), Some(l)) = (s.window_start, s.learnt)
                            && now >= start + l.window
                        {
                            if s.admitted >= l.budget {
                                let more = (l.budget / 20).max(1);
                                s.learnt = Some(Learnt {
                                    budget: l.budget.saturating_add(more),
                                    ..l
                                });
                            }
                            s.window_start = None;
                        }
                        match (s.window_start, s.learnt) {
                            (Some(start), Some(l)) if s.admitted >= l.budget => {
                                Some(start + l.window)
                            }
                            _ if (s.in_flight as f64) < s.limit.floor() => {
                                if s.window_start.is_none() {
                                    s.window_start = Some(now);
                                    s.admitted = 0;
                                }
                                s.admitted += 1;
                                s.in_flight += 1;
                                return (Permit { limiter: self }, paused);
                            }
                            _ => None,
                        }
                    }
                }
            };
            match pause {
                Some(until) => {
                    let start = Instant::now();
                    tokio::time::sleep_until(until).await;
                    paused += start.elapsed();
                }
                None => notified.await,
            }
        }
    }

    /// A 429 with `Retry-After` (a spent budget): every request waits `retry_after`; the
    /// first 429 of a window teaches the limiter the budget (see the module documentation).
    pub fn throttled(&self, retry_after: Duration) {
        let mut s = self.lock();
        let now = Instant::now();
        let until = now + retry_after;
        let first = s.paused_until.is_none_or(|p| p <= now);
        if first
            && let Some(start) = s.window_start
            && retry_after <= LONGEST_LEARNT_WINDOW
        {
            // The requests still in flight were admitted after the budget ran out, or
            // nearly: count only those answered.
            let budget = s.admitted.saturating_sub(s.in_flight).max(1);
            s.learnt = Some(Learnt {
                budget,
                window: until.saturating_duration_since(start),
            });
        }
        if s.paused_until.is_none_or(|p| p < until) {
            s.paused_until = Some(until);
        }
        // The next window begins with the first request after the pause.
        s.window_start = None;
        s.admitted = 0;
    }

    /// Too many requests in flight (Exchange's concurrency refusal, a 429 without
    /// `Retry-After`): the limit drops below the number in flight, and that level is
    /// remembered so growth past it is slow. Nothing pauses.
    pub fn refused(&self) {
        let mut s = self.lock();
        let level = s.in_flight.max(1);
        s.refused_at = Some(level);
        s.limit = (level as f64 - 1.0).min(s.limit).max(self.min);
    }

    /// A success: grow by one slot per "limit" successes (per 500 × "limit" at or past the
    /// level last refused), unless the service says the budget is more than 80 % used.
    pub fn succeeded(&self, limit_percentage: Option<f64>) {
        let grew = {
            let mut s = self.lock();
            let near_limit = limit_percentage.is_some_and(|p| p >= 0.8);
            if near_limit {
                false
            } else {
                let before = s.limit.floor();
                let cautious = s.refused_at.is_some_and(|r| s.limit + 1.0 >= r as f64);
                // Each probe past the refused level costs a refused request: probe rarely.
                let step = if cautious { 500.0 * s.limit } else { s.limit };
                s.limit = (s.limit + 1.0 / step).min(self.max);
                s.limit.floor() > before
            }
        };
        if grew {
            self.notify.notify_waiters();
        }
    }

    /// The current number of slots.
    pub fn limit(&self) -> u32 {
        self.lock().limit.floor() as u32
    }

    /// The budget learnt from 429s: requests per window.
    pub fn learnt_budget(&self) -> Option<(u32, Duration)> {
        self.lock().learnt.map(|l| (l.budget, l.window))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> AdaptiveLimiter {
        AdaptiveLimiter::new(Concurrency {
            initial: 4,
            min: 1,
            max: 8,
        })
    }

    #[tokio::test]
    async fn refusals_shrink_below_the_number_in_flight_and_growth_past_it_is_slow() {
        let l = limiter();
        let held: Vec<_> = futures_util::future::join_all((0..3).map(|_| l.acquire()))
            .await
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        l.refused();
        assert_eq!(l.limit(), 2, "one below the three in flight");
        drop(held);
        let (_p, waited) = l.acquire().await;
        assert_eq!(waited, Duration::ZERO, "a refusal pauses nothing");
        drop(_p);
        for _ in 0..2 {
            l.succeeded(None);
        }
        assert_eq!(l.limit(), 2, "one slot per `limit` successes");
        for _ in 0..100 {
            l.succeeded(Some(0.9));
        }
        assert_eq!(l.limit(), 2, "no growth near the limit");
        for _ in 0..500 {
            l.succeeded(None);
        }
        assert_eq!(l.limit(), 2, "slow growth up to the level refused");
        for _ in 0..1_000 {
            l.succeeded(None);
        }
        assert_eq!(l.limit(), 3);
        for _ in 0..100_000 {
            l.succeeded(None);
        }
        assert_eq!(l.limit(), 8, "capped");
    }

    #[tokio::test]
    async fn admits_no_more_than_the_limit() {
        let l = limiter();
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(l.acquire().await.0);
        }
        let fifth = tokio::time::timeout(Duration::from_millis(20), l.acquire()).await;
        assert!(fifth.is_err(), "a fifth request must wait");
        drop(held.pop());
        let (_p, waited) = l.acquire().await;
        assert_eq!(waited, Duration::ZERO);
    }

    #[tokio::test]
    async fn a_429_pauses_everything_and_teaches_the_budget_of_a_window() {
        let l = limiter();
        // Five admitted in this window; three answered, then a 429 while two are in flight.
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(l.acquire().await.0);
        }
        drop(held.pop());
        held.push(l.acquire().await.0);
        drop(held.pop());
        drop(held.pop());
        l.throttled(Duration::from_millis(200));
        drop(held);
        assert_eq!(l.limit(), 4, "a spent budget leaves the concurrency alone");
        let (budget, window) = l.learnt_budget().expect("learnt");
        assert_eq!(budget, 3, "the five admitted minus the two still in flight");
        assert!(window >= Duration::from_millis(200), "{window:?}");
        // Everything waits for the pause to end.
        let (p, waited) = l.acquire().await;
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
        drop(p);
        // Then three per window: the fourth waits for the next window, without a 429.
        for _ in 0..2 {
            let (p, waited) = l.acquire().await;
            assert_eq!(waited, Duration::ZERO);
            drop(p);
        }
        let (p, waited) = l.acquire().await;
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
        drop(p);
        // That window's allowance was used up without a 429: the next allows one more.
        assert_eq!(l.learnt_budget().map(|(b, _)| b), Some(4));
    }

    #[tokio::test]
    async fn a_long_retry_after_is_waited_out_but_not_learnt() {
        let l = limiter();
        drop(l.acquire().await.0);
        l.throttled(LONGEST_LEARNT_WINDOW + Duration::from_secs(1));
        assert!(l.learnt_budget().is_none());
    }
}
