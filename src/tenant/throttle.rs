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
//!   that ran out. The limiter also learns a pace from it: the requests answered since the
//!   previous pause, the last moment nothing was in flight or the start (at most the last
//!   10 s), over the time from then to the end of this one. From
//!   then on it spaces requests evenly at that pace instead of spending requests on 429s;
//!   while the pace is what holds requests back it creeps up (quickly until a further 429
//!   says where the budget is, then slowly), and each further 429 takes it down by a
//!   twentieth. An even pace fits every window the service may count in (fixed or
//!   sliding, of any length): one that runs a little fast meets its 429 near a window's end,
//!   where the pause is short. (A burst-then-wait budget per learnt window does not: a
//!   window begun off the service's boundaries straddles two of them, and the runs measured
//!   55-62 % of Exchange's budget.)
//! - Exchange's concurrency refusal ("maximum number of concurrent requests", no
//!   `Retry-After`) and a 429 without `Retry-After` say too many are in flight: the limit
//!   drops below the number in flight when the refused request was admitted, and that
//!   level is remembered, so growth past it is slow; nothing is paused.

use std::collections::VecDeque;
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

/// Nothing of ours in flight for this long ends a busy period: the next request starts the
/// count the first pace is learnt from anew. A run reads the tenant (one listing page at a
/// time, for minutes at 40,000 people), plans, then writes: counted together, the 429 that
/// ends the first burst of writes taught a pace of a tenth of the budget (measured: a 40,000
/// rollover crawled at 8 Exchange requests per second five minutes in).
const IDLE_RESTART: Duration = Duration::from_millis(200);

/// What a further 429 leaves of the pace.
const PACE_DECREASE: f64 = 0.95;

/// What each request the pace held back adds to it, in requests per second. Such requests
/// come at the pace, so the pace grows by 1 % per second whatever it is: back from a decrease
/// in about 5 s.
const PACE_GROWTH: f64 = 0.01;

/// [`PACE_GROWTH`] until a 429 first lowers the learnt pace: 5 % per second. The first pace
/// is a guess from one burst, and it comes out low when the burst began inside the service's
/// budget window (measured: about 40 of Exchange's 50 per second at the start of a 2,000-person
/// rollover, 20 s to grow back at 1 %); the next 429 costs no more than the one it replaces.
const FIRST_PACE_GROWTH: f64 = 0.05;

#[derive(Debug)]
struct State {
    limit: f64,
    in_flight: u32,
    paused_until: Option<Instant>,
    /// When the requests counted for learning the first pace were admitted: since the last
    /// pause, the last idle moment ([`IDLE_RESTART`]) or the start, at most the last
    /// [`LONGEST_LEARNT_WINDOW`].
    admissions: VecDeque<Instant>,
    /// Since when nothing of ours is in flight.
    idle_since: Option<Instant>,
    /// The pace learnt from 429s, in requests per second, and when it lets the next go.
    pace: Option<f64>,
    next_at: Option<Instant>,
    /// Whether a request waited for the pace since the last one was admitted.
    held_back: bool,
    /// Whether a 429 has lowered the learnt pace yet ([`FIRST_PACE_GROWTH`] until then).
    cut: bool,
    /// The number in flight when the service last refused for concurrency.
    refused_at: Option<u32>,
}

impl State {
    /// Counts a request admitted `now` for learning the first pace (see `admissions`).
    fn count_admission(&mut self, now: Instant) {
        let idle = self.in_flight == 0
            && self
                .idle_since
                .is_some_and(|t| now.saturating_duration_since(t) >= IDLE_RESTART);
        if idle {
            self.admissions.clear();
        }
        while self
            .admissions
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > LONGEST_LEARNT_WINDOW)
        {
            self.admissions.pop_front();
        }
        self.admissions.push_back(now);
        self.idle_since = None;
    }
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
    /// How many requests were in flight, this one included, when it was admitted.
    level: u32,
}

impl Permit<'_> {
    /// How many requests were in flight, this one included, when it was admitted: the most
    /// of ours the service can have been handling when it got this one.
    pub fn level(&self) -> u32 {
        self.level
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        {
            let mut s = self.limiter.lock();
            s.in_flight -= 1;
            if s.in_flight == 0 {
                s.idle_since = Some(Instant::now());
            }
        }
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
                admissions: VecDeque::new(),
                idle_since: None,
                pace: None,
                next_at: None,
                held_back: false,
                cut: false,
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

    /// Waits for a free slot, for any pause to end and for the learnt pace to allow
    /// another request; answers the permit and how long it waited for a pause or the pace
    /// (waiting for a slot is queueing, not throttling).
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
                match (s.paused_until, s.next_at) {
                    (Some(until), _) if until > now => Some(until),
                    (_, Some(next)) if next > now => {
                        s.held_back = true;
                        Some(next)
                    }
                    _ => {
                        s.paused_until = None;
                        if (s.in_flight as f64) < s.limit.floor() {
                            s.count_admission(now);
                            s.in_flight += 1;
                            if let Some(p) = s.pace {
                                // A request the pace held back: the pace may be below the
                                // budget. Once per request, however many waited.
                                let p = if std::mem::take(&mut s.held_back) {
                                    p + if s.cut {
                                        PACE_GROWTH
                                    } else {
                                        FIRST_PACE_GROWTH
                                    }
                                } else {
                                    p
                                };
                                s.pace = Some(p);
                                s.next_at = Some(now + Duration::from_secs_f64(1.0 / p));
                            }
                            let level = s.in_flight;
                            return (
                                Permit {
                                    limiter: self,
                                    level,
                                },
                                paused,
                            );
                        }
                        None
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

    /// A 429 with `Retry-After` (a spent budget): every request waits `retry_after`. The
    /// first 429 of a pause teaches the limiter a pace, or lowers the one it has (see the
    /// module documentation).
    pub fn throttled(&self, retry_after: Duration) {
        let mut s = self.lock();
        let now = Instant::now();
        let until = now + retry_after;
        let first = s.paused_until.is_none_or(|p| p <= now);
        if first && retry_after <= LONGEST_LEARNT_WINDOW {
            s.pace = match (s.pace, s.admissions.front().copied()) {
                (Some(p), _) => {
                    s.cut = true;
                    Some(p * PACE_DECREASE)
                }
                (None, Some(start)) => {
                    // The requests still in flight were admitted after the budget ran out,
                    // or nearly: count only those answered.
                    let answered = (s.admissions.len() as u32)
                        .saturating_sub(s.in_flight)
                        .max(1);
                    let window = until.saturating_duration_since(start).as_secs_f64();
                    Some(answered as f64 / window.max(0.001))
                }
                (None, None) => None,
            };
        }
        if s.paused_until.is_none_or(|p| p < until) {
            s.paused_until = Some(until);
        }
        // After the pause the first request goes at once, the rest at the pace.
        s.next_at = None;
        s.admissions.clear();
    }

    /// Too many requests in flight (Exchange's concurrency refusal, a 429 without
    /// `Retry-After`) for a request admitted at `level` ([`Permit::level`]): the limit drops
    /// below that level, which is remembered so growth past it is slow. Nothing pauses.
    ///
    /// The level is the one at admission, not the number in flight when the refusal comes
    /// back: by then the limit may already have dropped for an earlier refusal of the same
    /// burst, fewer are in flight, and counting those would lower the limit a second time,
    /// below what the service accepts (measured: runs stuck at 2 of Exchange's 3 slots for
    /// minutes, a third of the budget lost).
    pub fn refused(&self, level: u32) {
        let mut s = self.lock();
        let level = level.max(1);
        s.refused_at = Some(level);
        s.limit = (level as f64 - 1.0).min(s.limit).max(self.min);
    }

    /// [`Self::refused`] for a refusal without a permit of its own (a sub-request of a
    /// `$batch`): the level is the number in flight now, the batch's request included.
    pub fn refused_now(&self) {
        let level = self.lock().in_flight + 1;
        self.refused(level);
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

    /// The pace learnt from 429s, in requests per second.
    pub fn pace(&self) -> Option<f64> {
        self.lock().pace
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
        l.refused(held[2].level());
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
    async fn late_refusals_of_one_burst_lower_the_limit_once() {
        let l = limiter();
        let held: Vec<_> = futures_util::future::join_all((0..4).map(|_| l.acquire()))
            .await
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(
            held.iter().map(Permit::level).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        let mut held = held.into_iter();
        let (first, second, third, fourth) = (
            held.next().unwrap(),
            held.next().unwrap(),
            held.next().unwrap(),
            held.next().unwrap(),
        );
        // The service allows 3: the fourth is refused; the others end.
        l.refused(fourth.level());
        drop(fourth);
        drop(first);
        drop(second);
        assert_eq!(l.limit(), 3);
        // Another request of the same burst, admitted at 4, is refused only now, when a
        // single one is in flight: the limit stays where the service accepts.
        l.refused(4);
        assert_eq!(l.limit(), 3, "not lowered again for the same level");
        drop(third);
        // A refusal at a level the service accepted before says it accepts fewer now.
        let (p, _) = l.acquire().await;
        let (q, _) = l.acquire().await;
        let (r, _) = l.acquire().await;
        l.refused(r.level());
        assert_eq!(l.limit(), 2);
        drop((p, q, r));
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
    async fn a_429_pauses_everything_and_teaches_a_pace() {
        let l = limiter();
        // Five admitted since counting began; three answered, then a 429 while two are in
        // flight.
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(l.acquire().await.0);
        }
        drop(held.pop());
        held.push(l.acquire().await.0);
        drop(held.pop());
        drop(held.pop());
        l.throttled(Duration::from_millis(300));
        drop(held);
        assert_eq!(l.limit(), 4, "a spent budget leaves the concurrency alone");
        let pace = l.pace().expect("learnt");
        // Three answered over the 300 ms until the pause ends (and the few before it).
        assert!((9.0..=10.0).contains(&pace), "{pace}");
        // Everything waits for the pause to end.
        let (p, waited) = l.acquire().await;
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
        drop(p);
        // Then requests go one per 1/pace (about 100 ms), not in a burst.
        let start = Instant::now();
        for _ in 0..2 {
            let (p, waited) = l.acquire().await;
            assert!(waited >= Duration::from_millis(80), "{waited:?}");
            drop(p);
        }
        assert!(start.elapsed() >= Duration::from_millis(180));
        // The pace held requests back, so it crept up; a further 429 takes a twentieth off.
        let grown = l.pace().unwrap();
        assert!(grown > pace, "{grown} > {pace}");
        l.throttled(Duration::from_millis(10));
        let lowered = l.pace().unwrap();
        assert!((lowered - grown * 0.95).abs() < 1e-9, "{lowered}");
        // A 429 of the same pause does not lower it twice.
        l.throttled(Duration::from_millis(5));
        assert_eq!(l.pace(), Some(lowered));
    }

    #[tokio::test]
    async fn a_pace_is_learnt_from_the_burst_not_from_the_listing_before_it() {
        let l = limiter();
        // A listing: three requests one after the other, then a pause to plan.
        for _ in 0..3 {
            drop(l.acquire().await.0);
        }
        tokio::time::sleep(IDLE_RESTART + Duration::from_millis(100)).await;
        // The writes: four at once, two answered, then a 429 that ends in 100 ms.
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(l.acquire().await.0);
        }
        drop(held.pop());
        drop(held.pop());
        l.throttled(Duration::from_millis(100));
        // Two answered over about 100 ms: 20 per second. Counting the listing too would
        // give five over 400 ms, 12.5 per second.
        let pace = l.pace().expect("learnt");
        assert!((16.0..=20.5).contains(&pace), "{pace}");
    }

    #[tokio::test]
    async fn the_first_pace_grows_fast_until_a_429_lowers_it() {
        let l = limiter();
        drop(l.acquire().await.0);
        // One answered over about 200 ms: some 5 per second, so the requests below are spaced
        // 200 ms apart and each is held back even on a busy machine.
        l.throttled(Duration::from_millis(200));
        let learnt = l.pace().expect("learnt");
        // Spaced at the pace, so every request but the first after the pause is held back.
        async fn grow(l: &AdaptiveLimiter, n: usize) {
            for _ in 0..n {
                drop(l.acquire().await.0);
            }
        }
        let before = l.pace().unwrap();
        grow(&l, 4).await;
        let fast = l.pace().unwrap() - before;
        assert!(
            (3.0 * FIRST_PACE_GROWTH - 1e-9..=4.0 * FIRST_PACE_GROWTH + 1e-9).contains(&fast),
            "{fast} from {learnt}"
        );
        l.throttled(Duration::from_millis(20));
        let before = l.pace().unwrap();
        grow(&l, 4).await;
        let slow = l.pace().unwrap() - before;
        assert!(
            (3.0 * PACE_GROWTH - 1e-9..=4.0 * PACE_GROWTH + 1e-9).contains(&slow),
            "{slow}"
        );
    }

    #[tokio::test]
    async fn a_long_retry_after_is_waited_out_but_not_learnt() {
        let l = limiter();
        drop(l.acquire().await.0);
        l.throttled(LONGEST_LEARNT_WINDOW + Duration::from_secs(1));
        assert!(l.pace().is_none());
    }
}
