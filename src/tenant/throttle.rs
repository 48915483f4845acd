//! The adaptive concurrency limiter, one per service, shared by every request to it.
//!
//! Microsoft's limits are per app and tenant, not per connection, so the right number of
//! requests in flight is learnt rather than configured: start with a few, grow slowly while
//! requests succeed and the service reports headroom (`x-ms-throttle-limit-percentage` is
//! only sent above 80 % of a budget), halve on a 429 (additive increase, multiplicative
//! decrease, like TCP). A 429's `Retry-After` also pauses every request to the service until
//! it has passed: the budget is shared, so the others would only collect 429s of their own.

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

#[derive(Debug)]
struct State {
    limit: f64,
    in_flight: u32,
    paused_until: Option<Instant>,
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

    /// Waits for a free slot and for any pause to end; answers the permit and how long it
    /// waited for a pause (waiting for a slot is queueing, not throttling).
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
                    _ if (s.in_flight as f64) < s.limit.floor() => {
                        s.in_flight += 1;
                        return (Permit { limiter: self }, paused);
                    }
                    _ => None,
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

    /// A 429: halve the limit and hold every request back for `pause`.
    pub fn throttled(&self, pause: Duration) {
        let mut s = self.lock();
        s.limit = (s.limit / 2.0).max(self.min);
        let until = Instant::now() + pause;
        if s.paused_until.is_none_or(|p| p < until) {
            s.paused_until = Some(until);
        }
    }

    /// A success: grow by one slot per "limit" successes, unless the service says the budget
    /// is more than 80 % used.
    pub fn succeeded(&self, limit_percentage: Option<f64>) {
        let grew = {
            let mut s = self.lock();
            let near_limit = limit_percentage.is_some_and(|p| p >= 0.8);
            if near_limit {
                false
            } else {
                let before = s.limit.floor();
                s.limit = (s.limit + 1.0 / s.limit).min(self.max);
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
    async fn shrinks_on_throttling_and_grows_slowly() {
        let l = limiter();
        l.throttled(Duration::ZERO);
        assert_eq!(l.limit(), 2);
        l.throttled(Duration::ZERO);
        l.throttled(Duration::ZERO);
        assert_eq!(l.limit(), 1);
        for _ in 0..3 {
            l.succeeded(None);
        }
        assert_eq!(l.limit(), 2, "one slot per `limit` successes");
        for _ in 0..100 {
            l.succeeded(Some(0.9));
        }
        assert_eq!(l.limit(), 2, "no growth near the limit");
        for _ in 0..1000 {
            l.succeeded(None);
        }
        assert_eq!(l.limit(), 8, "capped");
    }

    #[tokio::test]
    async fn admits_no_more_than_the_limit_and_pauses() {
        let l = limiter();
        let permits: Vec<_> = [(); 4].iter().map(|_| l.acquire()).collect();
        let mut held = Vec::new();
        for p in permits {
            held.push(p.await.0);
        }
        let fifth = tokio::time::timeout(Duration::from_millis(20), l.acquire()).await;
        assert!(fifth.is_err(), "a fifth request must wait");
        drop(held.pop());
        let (_p, waited) = l.acquire().await;
        assert_eq!(waited, Duration::ZERO);
        drop(held);
        drop(_p);
        l.throttled(Duration::from_millis(50));
        let (_p, waited) = l.acquire().await;
        assert!(waited >= Duration::from_millis(40), "{waited:?}");
    }
}
