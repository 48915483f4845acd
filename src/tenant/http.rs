//! The HTTP layer under the Graph and Exchange clients: one `reqwest::Client` (rustls with
//! the aws-lc-rs backend, the system roots plus `tenant.ca_file`, timeouts) and a request
//! executor per service that adds the bearer token and decides about retries.
//!
//! Retry rules, from Microsoft's throttling guidance:
//! - 429: always retried (the request was not executed), after `Retry-After` (seconds, may be
//!   a decimal such as `2.128`) or, without it, exponential backoff with jitter; every request
//!   to that service pauses too (see [`super::throttle`], which also learns a pace from it).
//! - 503: the service did not take the request ("temporarily unavailable"), so it is retried
//!   like a 429 but without pausing the others.
//! - 500, 502, 504 and failures after the request left (timeout, reset connection, a body
//!   cut off): the request may have been executed, so only requests that are safe to repeat
//!   (GET, PUT, PATCH, DELETE, or marked [`Repeat::Safe`] by the caller) are retried. For the
//!   others the answer is [`TenantError::Ambiguous`]: the caller must look before trying
//!   again.
//! - Failures before anything was sent (connection refused, DNS, TLS handshake, connect
//!   timeout) are retried for every request: nothing can have been executed. When retries
//!   run out they are [`TenantError::Transport`].
//! - Exchange's concurrency refusal ("You have reached the maximum number of concurrent
//!   requests per tenant. Please wait and try again", plain text or JSON, seen with 429 and
//!   without `Retry-After`) is throttling whatever the status: the Exchange limiter drops
//!   below the number in flight, and the request is tried again after a short wait (the
//!   request was refused, not run); nothing else pauses. So is a 429 without `Retry-After`.
//!   Source: GreyCorbel/ExoHelper `Commands/Public/Invoke-ExoCommand.ps1`, which checks the
//!   text independently of the status.
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
    /// Answers by status class: 2xx, 3xx, 4xx, 5xx (a `$batch` envelope counts once).
    pub by_class: [AtomicU64; 4],
}

impl Counters {
    pub fn waited(&self, d: Duration) {
        self.waited_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    fn answered(&self, status: u16) {
        if let Some(c) = (status / 100)
            .checked_sub(2)
            .and_then(|i| self.by_class.get(i as usize))
        {
            Self::bump(c);
        }
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

/// One request to a service. `Debug` shows the method, URL and header names only: a body can
/// carry a password (`POST /users`, `New-MailUser`).
#[derive(Clone)]
pub struct Call {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<Value>,
    pub repeat: Repeat,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("method", &self.method)
            .field("url", &self.url.as_str())
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("body", &self.body.as_ref().map(|_| "…"))
            .field("repeat", &self.repeat)
            .finish()
    }
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

/// The longest wait, per attempt, before a request refused for concurrency is tried again:
/// the limit has already dropped, so the retry only needs a slot to free up.
const REFUSAL_WAIT: Duration = Duration::from_millis(50);

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
                    // A connect error (refused, DNS, TLS handshake, connect timeout) means
                    // nothing left this machine; anything later (timeout, reset, a body cut
                    // off) may have reached the service.
                    let sent = !e.is_connect();
                    if sent && call.repeat == Repeat::Unsafe {
                        return Err(self.ambiguous(call, message));
                    }
                    if attempt >= max {
                        return Err(TenantError::Transport {
                            service: self.service,
                            attempts: attempt,
                            message,
                        });
                    }
                    let wait = self.backoff(attempt);
                    tracing::debug!(service = %self.service, method = %call.method, attempt, sent, wait_ms = wait.as_millis() as u64, error = %message, "connection failed; retrying");
                    self.pause(wait).await;
                    continue;
                }
            };
            let status = reply.status.as_u16();
            self.counters.answered(status);
            let retry_after =
                retry_after(&reply.headers).map(|d| d.min(self.options.max_retry_after));
            let refused_for_concurrency = self.service == Service::Exchange
                && !reply.status.is_success()
                && is_concurrency_refusal(&reply.body);
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
                _ if status == 429 || refused_for_concurrency => {
                    Counters::bump(&self.counters.throttled);
                    // A spent budget (429 with Retry-After) pauses the whole service inside
                    // the limiter; too many in flight (no Retry-After, or Exchange's
                    // concurrency refusal) shrinks the limit and retries this request soon,
                    // pausing nobody else.
                    let wait = match retry_after {
                        Some(ra) if !refused_for_concurrency => {
                            self.limiter.throttled(ra);
                            None
                        }
                        _ => {
                            self.limiter.refused(permit.level());
                            Some(self.backoff(attempt).min(REFUSAL_WAIT * attempt))
                        }
                    };
                    drop(permit);
                    if attempt >= max {
                        tracing::warn!(service = %self.service, method = %call.method, attempts = attempt, "still throttled; giving up on this request");
                        return Err(TenantError::Throttled {
                            service: self.service,
                            attempts: attempt,
                            retry_after,
                        });
                    }
                    let why = if refused_for_concurrency {
                        "too many concurrent requests"
                    } else {
                        "throttled"
                    };
                    let wait_ms = wait.or(retry_after).unwrap_or_default().as_millis() as u64;
                    if attempt >= 3 {
                        tracing::warn!(service = %self.service, attempt, wait_ms, why, "throttled repeatedly; waiting");
                    } else {
                        tracing::debug!(service = %self.service, attempt, wait_ms, why, pace_per_s = self.limiter.pace(), limit = self.limiter.limit(), "throttled; waiting");
                    }
                    match wait {
                        Some(wait) => self.pause(wait).await,
                        // The limiter's pause holds this request back as well as the others.
                        None => Counters::bump(&self.counters.retries),
                    }
                    continue;
                }
                500 | 502 | 503 | 504 => {
                    drop(permit);
                    Counters::bump(&self.counters.server_errors);
                    if status != 503 && call.repeat == Repeat::Unsafe {
                        return Err(self
                            .ambiguous(call, format!("HTTP {status}: {}", error_message(&reply))));
                    }
                    if attempt >= max {
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

    /// [`TenantError::Ambiguous`] for `call`, named by method and path (never the body).
    fn ambiguous(&self, call: &Call, message: String) -> TenantError {
        tracing::warn!(service = %self.service, method = %call.method, path = call.url.path(), error = %message, "request may have been executed; not repeating it");
        TenantError::Ambiguous {
            service: self.service,
            what: format!("{} {}", call.method, call.url.path()),
            message,
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

/// The longest wait [`parse_retry_after`] answers: one day. The executor cuts it further to
/// `TenantOptions::max_retry_after`; this bound only keeps absurd values (`1e20`, which
/// `f64` parses and `Duration::from_secs_f64` would panic on) from reaching the conversion.
const RETRY_AFTER_CEILING_SECS: f64 = 86_400.0;

/// A `Retry-After` value in seconds (`2`, `2.128`) → how long to wait, at most
/// [`RETRY_AFTER_CEILING_SECS`]. `None` for anything else (negative, NaN, infinite, an
/// HTTP date): the caller backs off instead. Never panics.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let secs: f64 = v.trim().parse().ok()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(secs.min(RETRY_AFTER_CEILING_SECS)).ok()
}

/// Exchange's refusal when a tenant has too many requests running: "You have reached the
/// maximum number of concurrent requests per tenant. Please wait and try again." It comes as
/// plain text or inside the JSON error envelope, so the raw body is searched.
pub fn is_concurrency_refusal(body: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"maximum number of concurrent requests";
    body.windows(NEEDLE.len())
        .any(|w| w.eq_ignore_ascii_case(NEEDLE))
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

/// A scripted HTTP/1.1 server on 127.0.0.1 for the unit tests of this layer and of the
/// Exchange client: every request is recorded and answered by a closure.
#[cfg(test)]
pub(crate) mod mock {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    /// One recorded request.
    #[derive(Debug, Clone)]
    pub struct Seen {
        pub method: String,
        pub target: String,
        pub body: Value,
    }

    pub enum Answer {
        /// Status, extra headers, body.
        Reply(u16, Vec<(&'static str, String)>, Vec<u8>),
        /// Read the request, then close the connection without a word.
        Drop,
    }

    impl Answer {
        pub fn json(status: u16, v: Value) -> Answer {
            Answer::Reply(status, vec![], v.to_string().into_bytes())
        }
    }

    type Handler = dyn Fn(usize, &Seen) -> Answer + Send + Sync;

    pub struct Server {
        pub base: Url,
        pub seen: Arc<Mutex<Vec<Seen>>>,
    }

    impl Server {
        pub fn start(handler: impl Fn(usize, &Seen) -> Answer + Send + Sync + 'static) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let base = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let handler: Arc<Handler> = Arc::new(handler);
            let s = seen.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let (s, h) = (s.clone(), handler.clone());
                    std::thread::spawn(move || serve(stream, &s, &*h));
                }
            });
            Server { base, seen }
        }

        pub fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }

        /// An executor for `service` against this server with a fixed token and short waits.
        pub fn executor(&self, service: Service) -> Arc<Executor> {
            let options = Arc::new(TenantOptions {
                backoff_base: Duration::from_millis(2),
                backoff_max: Duration::from_millis(10),
                max_attempts: 5,
                ..TenantOptions::default()
            });
            let audience = match service {
                Service::Graph => Audience::Graph,
                Service::Exchange => Audience::Exchange,
            };
            Arc::new(Executor::new(
                service,
                audience,
                &self.base,
                build_client(None, &options).unwrap(),
                Arc::new(TokenSource::fixed("test-token")),
                AdaptiveLimiter::new(options.exchange_concurrency),
                options,
            ))
        }
    }

    fn serve(stream: TcpStream, seen: &Mutex<Vec<Seen>>, handler: &Handler) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut out = stream;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let mut parts = line.split_whitespace();
            let (method, target) = (
                parts.next().unwrap_or("").to_owned(),
                parts.next().unwrap_or("").to_owned(),
            );
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 {
                    return;
                }
                if h == "\r\n" {
                    break;
                }
                if let Some((k, v)) = h.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let req = Seen {
                method,
                target,
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            };
            let n = {
                let mut all = seen.lock().unwrap();
                all.push(req.clone());
                all.len() - 1
            };
            match handler(n, &req) {
                Answer::Drop => return,
                Answer::Reply(status, headers, body) => {
                    let mut head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\ncontent-type: application/json\r\n",
                        body.len()
                    );
                    for (k, v) in headers {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    head.push_str("\r\n");
                    if out.write_all(head.as_bytes()).is_err() || out.write_all(&body).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::mock::{Answer, Server};
    use serde_json::json;

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
    fn giant_retry_after_values_are_capped_not_a_panic() {
        let day = Some(Duration::from_secs(86_400));
        // Above ~1.8e19 Duration::from_secs_f64 panics; these must not reach it uncapped.
        for v in [
            "1e20",
            "1e300",
            "18446744073709551616",
            "99999999999999999999999",
        ] {
            assert_eq!(parse_retry_after(v), day, "{v}");
        }
        for v in ["inf", "NaN", "1e400", "-0.5", ""] {
            assert_eq!(parse_retry_after(v), None, "{v}");
        }
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
    }

    #[test]
    fn concurrency_refusals_are_recognised_in_any_body() {
        assert!(is_concurrency_refusal(
            b"You have reached the maximum number of concurrent requests per tenant. Please wait and try again"
        ));
        assert!(is_concurrency_refusal(
            br#"{"error":{"code":"TooManyRequests","message":"Maximum number of concurrent requests reached"}}"#
        ));
        assert!(!is_concurrency_refusal(b"Invalid Operation"));
    }

    fn exchange_call(server: &Server, repeat: Repeat) -> Call {
        Call::new(Method::POST, server.base.join("adminapi").unwrap())
            .json(json!({"CmdletInput": {"CmdletName": "New-MailUser", "Parameters": {"Password": "hunter2"}}}))
            .repeat(repeat)
    }

    #[tokio::test]
    async fn a_concurrency_refusal_is_throttling_and_retried() {
        // 429 without Retry-After and a plain-text body, then a 400 with the same text in
        // JSON (the status does not matter), then success.
        let server = Server::start(|n, _| {
            match n {
            0 => Answer::Reply(429, vec![], b"You have reached the maximum number of concurrent requests per tenant. Please wait and try again".to_vec()),
            1 => Answer::json(400, json!({"error": {"message": "maximum number of concurrent requests per tenant"}})),
            _ => Answer::json(200, json!({"value": []})),
        }
        });
        let exec = server.executor(Service::Exchange);
        let before = exec.limiter.limit();
        let reply = exec
            .send(&exchange_call(&server, Repeat::Unsafe))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(server.seen().len(), 3);
        assert_eq!(exec.counters.throttled.load(Ordering::Relaxed), 2);
        assert!(exec.limiter.limit() <= before);
    }

    #[tokio::test]
    async fn unsafe_requests_that_may_have_run_are_ambiguous() {
        // A dropped connection after the request was read.
        let server = Server::start(|_, _| Answer::Drop);
        let exec = server.executor(Service::Exchange);
        let err = exec
            .send(&exchange_call(&server, Repeat::Unsafe))
            .await
            .unwrap_err();
        assert!(err.is_ambiguous(), "{err:?}");
        assert_eq!(server.seen().len(), 1, "not sent again");
        // The body (a password) never shows in the error or in Call's Debug.
        assert!(!format!("{err:?}").contains("hunter2"));
        assert!(!format!("{:?}", exchange_call(&server, Repeat::Unsafe)).contains("hunter2"));

        // 500, 502 and 504: the gateway may have given up while the work went on.
        for status in [500, 502, 504] {
            let server = Server::start(move |_, _| {
                Answer::json(status, json!({"error": {"message": "gateway"}}))
            });
            let exec = server.executor(Service::Exchange);
            let err = exec
                .send(&exchange_call(&server, Repeat::Unsafe))
                .await
                .unwrap_err();
            assert!(
                matches!(&err, TenantError::Ambiguous { message, .. } if message.contains(&status.to_string())),
                "{status}: {err:?}"
            );
            assert_eq!(server.seen().len(), 1);
        }

        // 503 means "not served": retried, also for an unsafe request.
        let server = Server::start(|n, _| match n {
            0 => Answer::json(503, json!({})),
            _ => Answer::json(200, json!({"value": []})),
        });
        let exec = server.executor(Service::Exchange);
        exec.send(&exchange_call(&server, Repeat::Unsafe))
            .await
            .unwrap();
        assert_eq!(server.seen().len(), 2);

        // A safe request is retried after a drop and after a 504.
        let server = Server::start(|n, _| match n {
            0 => Answer::Drop,
            1 => Answer::json(504, json!({})),
            _ => Answer::json(200, json!({"value": []})),
        });
        let exec = server.executor(Service::Exchange);
        exec.send(&exchange_call(&server, Repeat::Safe))
            .await
            .unwrap();
        assert_eq!(server.seen().len(), 3);
    }

    #[tokio::test]
    async fn nothing_sent_is_transport_and_retried() {
        // A port nobody listens on: connection refused, for every attempt.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Server::start(|_, _| Answer::Drop);
        let exec = server.executor(Service::Exchange);
        let mut call = exchange_call(&server, Repeat::Unsafe);
        call.url = Url::parse(&format!("http://127.0.0.1:{port}/adminapi")).unwrap();
        let err = exec.send(&call).await.unwrap_err();
        assert!(
            matches!(&err, TenantError::Transport { attempts: 5, .. }),
            "{err:?}"
        );
        assert!(!err.is_ambiguous());
    }

    #[test]
    fn jitter_stays_within_half_and_full_backoff() {
        for _ in 0..100 {
            let r = random_unit();
            assert!((0.0..1.0).contains(&r));
        }
    }
}
