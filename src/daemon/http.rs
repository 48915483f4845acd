//! The daemon's HTTP endpoints on `[daemon] listen`, for monitoring and orchestrators:
//!
//! - `GET /healthz`: 200 while the process serves requests (liveness);
//! - `GET /readyz`: 200 when the last run succeeded (ok or partial), no more than
//!   `daemon.ready_intervals` scheduled ticks have passed since it finished, and the state
//!   store answers; else 503 with the reason in the body (readiness: what monitoring alerts
//!   on). Counting ticks, not seconds, keeps irregular schedules (`0 0 8,12 * * 1-5`) and
//!   daylight-saving days right;
//! - `GET /metrics`: the metrics of [`super::metrics`].
//!
//! Plain HTTP/1.1 through hyper; put it behind a proxy or keep it on loopback (the default)
//! if the network is not trusted. Nothing it answers is secret or personal.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::metrics::Metrics;
use super::schedule::Schedule;
use crate::state::Store;

/// What `/readyz` judges: the last run's end, shared with the daemon loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastRun {
    /// Unix seconds.
    pub finished_at: i64,
    pub succeeded: bool,
}

/// State shared by the endpoints and the daemon loop.
pub struct Health {
    pub metrics: Metrics,
    pub store: Store,
    pub schedule: Schedule,
    pub ready_intervals: u32,
    pub last: Mutex<Option<LastRun>>,
}

impl Health {
    /// `Ok` when ready, else why not.
    pub async fn readiness(&self, now: i64) -> Result<(), String> {
        let last = *self.last.lock().expect("never poisoned");
        let verdict = match last {
            None => Err("no run has finished yet".to_owned()),
            Some(l) if !l.succeeded => Err(format!(
                "the last run (recorded at {}) did not succeed: see `ldap2exo status`",
                crate::plan::rfc3339(l.finished_at)
            )),
            Some(l) => {
                let missed = self.schedule.ticks_between(l.finished_at, now);
                if missed > u64::from(self.ready_intervals.max(1)) {
                    Err(format!(
                        "the last successful run finished at {}; {missed} scheduled runs have passed since (at most {} allowed)",
                        crate::plan::rfc3339(l.finished_at),
                        self.ready_intervals
                    ))
                } else {
                    Ok(())
                }
            }
        };
        let verdict = match verdict {
            Ok(()) => match tokio::time::timeout(Duration::from_secs(5), self.store.ping()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("the state store does not answer: {e}")),
                Err(_) => Err("the state store did not answer within 5 s".to_owned()),
            },
            e => e,
        };
        self.metrics.set_ready(verdict.is_ok());
        verdict
    }
}

/// Serves the endpoints on `listener` (bound at start, so that a taken port fails the start,
/// not a later request) until the returned task is aborted.
pub fn serve(listener: TcpListener, health: Arc<Health>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a connection on daemon.listen");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let health = health.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| answer(req, health.clone()));
                // A client that never finishes its request headers is dropped.
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "health connection ended with an error");
                }
            });
        }
    })
}

async fn answer(
    req: Request<Incoming>,
    health: Arc<Health>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    const TEXT: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "GET only\n".into(),
        ));
    }
    Ok(match req.uri().path() {
        "/healthz" => reply(StatusCode::OK, TEXT, "ok\n".into()),
        "/readyz" => match health.readiness(super::unix_now()).await {
            Ok(()) => reply(StatusCode::OK, TEXT, "ready\n".into()),
            Err(why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                format!("not ready: {why}\n"),
            ),
        },
        "/metrics" => {
            // Readiness is judged now, so `ldap2exo_ready` is never older than the scrape.
            let _ = health.readiness(super::unix_now()).await;
            reply(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                health.metrics.encode(),
            )
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: try /healthz, /readyz or /metrics\n".into(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_counts_the_ticks_missed_since_the_last_success() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).await.unwrap();
        let health = Health {
            metrics: Metrics::new(),
            store,
            schedule: Schedule::parse("*/10 * * * * *").unwrap(),
            ready_intervals: 3,
            last: Mutex::new(None),
        };
        let t = 1_700_000_000; // a multiple of 10 seconds
        let why = health.readiness(t).await.unwrap_err();
        assert!(why.contains("no run"), "{why}");
        *health.last.lock().unwrap() = Some(LastRun {
            finished_at: t,
            succeeded: true,
        });
        assert_eq!(health.readiness(t + 30).await, Ok(()), "3 ticks missed");
        let why = health.readiness(t + 40).await.unwrap_err();
        assert!(why.contains("4 scheduled runs have passed"), "{why}");
        assert!(health.metrics.encode().contains("ldap2exo_ready 0"));
        *health.last.lock().unwrap() = Some(LastRun {
            finished_at: t,
            succeeded: false,
        });
        let why = health.readiness(t + 1).await.unwrap_err();
        assert!(why.contains("did not succeed"), "{why}");
    }
}
