//! The HTTP layer under the Graph and Exchange clients: one `reqwest::Client` (rustls with
//! the aws-lc-rs backend, the system roots plus `tenant.ca_file`, timeouts) and a request
//! executor per service that adds the bearer token and decides about retries.
//!
//! Retry rules, from Microsoft's throttling guidance:
//! - 429: always retried (the request was not executed), after `Retry-After` (seconds, may be
//!   a decimal such as `2.128`) or, without it, exponential backoff with jitter; every request
//!   to that service pauses too (see [`super::throttle`]).
//! - 503: the service did not take the request ("temporarily unavailable"), so it is retried
//!   like a 429 but without pausing the others.
//! - 500, 502, 504 and connection or timeout failures: the request may have been executed,
//!   so only requests that are safe to repeat (GET, PUT, PATCH, DELETE, or marked idempotent
//!   by the caller because a uniqueness rule makes a replay harmless) are retried.
//! - 401: one fresh token, one more try (see [`super::auth`]).
//! - Attempts are bounded; what is still failing then becomes a typed error.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::time::Instant;

use super::TenantOptions;
use super::auth::{Audience, TokenSource};
use super::error::{Service, TenantError};
use super::throttle::AdaptiveLimiter;

/// Builds the one HTTP client: system trust roots plus the PEM bundle in `ca_file`.
pub fn build_client(
    ca_file: Option<&std::path::Path>,
    options: &TenantOptions,
) -> Result<reqwest::Client, TenantError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("ldap2exo/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(options.connect_timeout)
        .timeout(options.request_timeout)
        .pool_idle_timeout(Duration::from_secs(60));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            TenantError::Config(format!(
                "cannot read tenant.ca_file {}: {e}",
                path.display()
            ))
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| TenantError::Config(format!("tenant.ca_file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(TenantError::Config(format!(
                "tenant.ca_file {} holds no certificate",
                path.display()
            )));
        }
        builder = builder.tls_certs_merge(certs);
    }
    builder
        .build()
        .map_err(|e| TenantError::Config(format!("cannot set up the HTTP client: {e}")))
}

/// Counters of one service, for `Tenant::stats()`.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub throttled: AtomicU64,
    pub server_errors: AtomicU64,
    pub transport_errors: AtomicU64,
    pub token_refreshes: AtomicU64,
    pub waited_micros: AtomicU64,
}

impl Counters {
    pub fn waited(&self, d: Duration) {
        self.waited_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether a request may be sent again after it may have been executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// Replaying it changes nothing (reads, PATCH/PUT/DELETE, or a create guarded by a
    /// uniqueness rule).
    Safe,
    /// Replaying it could do the work twice: no retry after a possible execution.
    Unsafe,
}

/// One request to a service.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<Value>,
    pub repeat: Repeat,
}

impl Call {
    pub fn new(method: Method, url: Url) -> Self {
        let repeat = if method == Method::POST {
            Repeat::Unsafe
        } else {
            Repeat::Safe
        };
        Self {
            method,
            url,
            headers: Vec::new(),
            body: None,
            repeat,
        }
    }
    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((HeaderName::from_static(name), v));
        }
        self
    }
    pub fn repeat(mut self, repeat: Repeat) -> Self {
        self.repeat = repeat;
        self
    }
}

/// A response that was not retried: 2xx, or a refusal the caller turns into an error.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json<T: DeserializeOwned>(&self, service: Service) -> Result<T, TenantError> {
        serde_json::from_slice(&self.body).map_err(|e| TenantError::Protocol {
            service,
            message: format!("HTTP {}: body is not the expected JSON: {e}", self.status),
        })
    }
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Sends requests to one service with its token, limiter and retry policy.
#[derive(Debug)]
pub struct Executor {
    pub service: Service,
    audience: Audience,
    http: reqwest::Client,
    tokens: Arc<TokenSource>,
    pub limiter: AdaptiveLimiter,
    pub counters: Counters,
    options: Arc<TenantOptions>,
    /// Scheme, host and port every URL (also every `@odata.nextLink`) must have, so a token
    /// is never sent anywhere else.
    origin: String,
}

impl Executor {
    pub fn new(
        service: Service,
        audience: Audience,
        base: &Url,
        http: reqwest::Client,
        tokens: Arc<TokenSource>,
        limiter: AdaptiveLimiter,
        options: Arc<TenantOptions>,
    ) -> Self {
        Self {
            service,
            audience,
            http,
            tokens,
            limiter,
            counters: Counters::default(),
            options,
            origin: base.origin().ascii_serialization(),
        }
    }

    /// Parses a URL the service gave us (a next or delta link) and checks it points back at
    /// the same service.
    pub fn same_origin(&self, link: &str) -> Result<Url, TenantError> {
        let url = Url::parse(link).map_err(|e| TenantError::Protocol {
            service: self.service,
            message: format!("link `{link}` is not a URL: {e}"),
        })?;
        if url.origin().ascii_serialization() != self.origin {
            return Err(TenantError::Protocol {
                service: self.service,
                message: format!("link `{link}` leaves {}", self.origin),
            });
        }
        Ok(url)
    }

    /// Sends `call`, retrying as the module documentation says. Answers the first response
    /// that is not retried; exhausted retries become `Throttled`, `Unavailable`,
    /// `Transport` or `Unauthorized`.
    pub async fn send(&self, call: &Call) -> Result<Reply, TenantError> {
        let max = self.options.max_attempts.max(1);
        let mut attempt = 0u32;
        let mut refreshed = false;
        loop {
            attempt += 1;
            let (permit, paused) = self.limiter.acquire().await;
            self.counters.waited(paused);
            let token = self.tokens.token(self.audience).await?;
            let mut rb = self
                .http
                .request(call.method.clone(), call.url.clone())
                .bearer_auth(token.expose());
            for (k, v) in &call.headers {
                rb = rb.header(k, v);
            }
            if let Some(body) = &call.body {
                rb = rb.json(body);
            }
            Counters::bump(&self.counters.requests);
            let result = match rb.send().await {
                Ok(r) => {
                    let status = r.status();
                    let headers = r.headers().clone();
                    r.bytes().await.map(|body| Reply {
                        status,
                        headers,
                        body: body.to_vec(),
                    })
                }
                Err(e) => Err(e),
            };
            let reply = match result {
                Ok(reply) => reply,
                Err(e) => {
                    drop(permit);
                    Counters::bump(&self.counters.transport_errors);
                    let message = transport_message(&e);
                    if call.repeat == Repeat::Unsafe || attempt >= max {
                        return Err(TenantError::Transport {
                            service: self.service,
                            attempts: attempt,
                            message,
                        });
                    }
                    let wait = self.backoff(attempt);
                    tracing::debug!(service = %self.service, method = %call.method, attempt, wait_ms = wait.as_millis() as u64, error = %message, "connection failed; retrying");
                    self.pause(wait).await;
                    continue;
                }
            };
            let status = reply.status.as_u16();
            let retry_after =
                retry_after(&reply.headers).map(|d| d.min(self.options.max_retry_after));
            match status {
                401 if !refreshed => {
                    drop(permit);
                    refreshed = true;
                    // Not counted as an attempt: the request was refused, not executed.
                    attempt -= 1;
                    Counters::bump(&self.counters.token_refreshes);
                    self.tokens.refresh(self.audience, &token).await?;
                    continue;
                }
                401 => {
                    return Err(TenantError::Unauthorized {
                        service: self.service,
                        message: error_message(&reply),
                    });
                }
                429 => {
                    Counters::bump(&self.counters.throttled);
                    let wait = retry_after.unwrap_or_else(|| self.backoff(attempt));
                    self.limiter.throttled(wait);
                    drop(permit);
                    if attempt >= max {
                        tracing::warn!(service = %self.service, method = %call.method, attempts = attempt, "still throttled; giving up on this request");
                        return Err(TenantError::Throttled {
                            service: self.service,
                            attempts: attempt,
                            retry_after,
                        });
                    }
                    if attempt >= 3 {
                        tracing::warn!(service = %self.service, attempt, wait_ms = wait.as_millis() as u64, "throttled repeatedly; waiting");
                    } else {
                        tracing::debug!(service = %self.service, attempt, wait_ms = wait.as_millis() as u64, "throttled; waiting");
                    }
                    Counters::bump(&self.counters.retries);
                    // The limiter's pause holds this request back as well as the others.
                    continue;
                }
                500 | 502 | 503 | 504 => {
                    drop(permit);
                    Counters::bump(&self.counters.server_errors);
                    let repeatable = status == 503 || call.repeat == Repeat::Safe;
                    if !repeatable || attempt >= max {
                        return Err(TenantError::Unavailable {
                            service: self.service,
                            status,
                            attempts: attempt,
                            message: error_message(&reply),
                        });
                    }
                    let wait = retry_after.unwrap_or_else(|| self.backoff(attempt));
                    tracing::debug!(service = %self.service, method = %call.method, status, attempt, wait_ms = wait.as_millis() as u64, "server error; retrying");
                    self.pause(wait).await;
                    continue;
                }
                _ => {
                    if reply.status.is_success() {
                        self.limiter.succeeded(limit_percentage(&reply.headers));
                    }
                    drop(permit);
                    return Ok(reply);
                }
            }
        }
    }

    pub fn max_attempts(&self) -> u32 {
        self.options.max_attempts.max(1)
    }

    /// Sleeps before a retry and counts it.
    pub async fn pause(&self, wait: Duration) {
        Counters::bump(&self.counters.retries);
        let start = Instant::now();
        tokio::time::sleep(wait).await;
        self.counters.waited(start.elapsed());
    }

    /// Exponential backoff with "equal jitter": half fixed, half random, so clients that
    /// failed together do not come back together.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self.options.backoff_base.as_secs_f64();
        let exp = base * 2f64.powi(attempt.saturating_sub(1).min(16) as i32);
        let capped = exp.min(self.options.backoff_max.as_secs_f64());
        Duration::from_secs_f64(capped / 2.0 + capped / 2.0 * random_unit())
    }
}

/// A uniform number in [0, 1) from the system RNG (jitter needs no reproducibility).
fn random_unit() -> f64 {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut b = [0u8; 8];
    let _ = aws_lc_rs::rand::SystemRandom::new().fill(&mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// `Retry-After` in seconds (Graph sometimes sends decimals such as `2.128`). The HTTP-date
/// form is not used by Graph or Exchange; it falls back to backoff.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(v)
}

pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// `x-ms-throttle-limit-percentage`: the share of the budget used, as a fraction (0.8 = 80 %);
/// Graph sends it only above 0.8.
fn limit_percentage(headers: &HeaderMap) -> Option<f64> {
    headers
        .get("x-ms-throttle-limit-percentage")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `error.message` of a Graph or Exchange error body, or the status text.
pub fn error_message(reply: &Reply) -> String {
    let v = reply.value();
    v["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| {
            reply
                .status
                .canonical_reason()
                .unwrap_or("no message")
                .to_owned()
        })
}

/// The error chain of a reqwest failure in one line (reqwest's Display alone says only
/// "error sending request").
fn transport_message(e: &reqwest::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    if e.is_timeout() {
        parts.push("timed out".into());
    }
    parts.dedup();
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_decimals_and_refuses_garbage() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(" 2.128 "),
            Some(Duration::from_millis(2128))
        );
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn jitter_stays_within_half_and_full_backoff() {
        for _ in 0..100 {
            let r = random_unit();
            assert!((0.0..1.0).contains(&r));
        }
    }
}
