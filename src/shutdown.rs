//! Stopping cleanly on SIGTERM and SIGINT.
//!
//! The first signal asks the run to stop: no new action starts, the ones in flight finish
//! (within `daemon.shutdown_grace_seconds`), the run is recorded as `interrupted` with what it
//! did, and the next run does the rest from the journal. A second signal ends the process at
//! once; the next run then finds the run still `running` and marks it `interrupted` itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// Whether a stop was asked for. Cloned freely; every clone sees the same request.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    requested: AtomicBool,
    notify: Notify,
}

impl Stop {
    /// A stop that only [`Stop::request`] triggers (tests, and commands that run without
    /// signal handling).
    pub fn new() -> Self {
        Self::default()
    }

    /// Listens for SIGTERM and SIGINT: the first requests a stop, the second exits the
    /// process at once with 128 + the signal's number (143, 130), as a shell reports it.
    pub fn on_signals() -> Self {
        let stop = Self::new();
        let handle = stop.clone();
        // Registered before this returns, so no signal falls between here and the task.
        let mut signals = Signals::new();
        tokio::spawn(async move {
            let mut count = 0u32;
            loop {
                let name = signals.next().await;
                count += 1;
                if count > 1 {
                    tracing::warn!(
                        signal = name,
                        "second signal: stopping now, without waiting for requests in flight"
                    );
                    // The shell's convention: 128 + the signal's number.
                    std::process::exit(if name == "SIGTERM" { 143 } else { 130 });
                }
                tracing::warn!(
                    signal = name,
                    "stopping: no new action starts; those in flight finish (a second signal stops at once)"
                );
                handle.request();
            }
        });
        stop
    }

    pub fn request(&self) {
        self.inner.requested.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    pub fn is_requested(&self) -> bool {
        self.inner.requested.load(Ordering::SeqCst)
    }

    /// Resolves once a stop is requested (at once if it already was).
    pub async fn requested(&self) {
        loop {
            let notified = self.inner.notify.notified();
            if self.is_requested() {
                return;
            }
            notified.await;
        }
    }
}

/// SIGTERM and SIGINT, registered once so that no second signal slips between two waits.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        // Registering fails only without the runtime's signal driver, which ours enables.
        Self {
            term: signal(SignalKind::terminate()).expect("SIGTERM handler"),
            int: signal(SignalKind::interrupt()).expect("SIGINT handler"),
        }
    }

    /// The next signal, by name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_reaches_every_clone_and_every_waiter() {
        let stop = Stop::new();
        let waiter = {
            let s = stop.clone();
            tokio::spawn(async move { s.requested().await })
        };
        assert!(!stop.is_requested());
        tokio::task::yield_now().await;
        stop.clone().request();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the waiter wakes")
            .unwrap();
        // A late waiter returns at once.
        stop.requested().await;
        assert!(stop.is_requested());
    }
}
