//! The tenant: clients for Microsoft Graph and the Exchange Online admin API, with
//! authentication, throttling and retries.
//!
//! [`Tenant::connect`] builds everything from `[tenant]` without touching the network; the
//! first call fetches a token. Both clients share one HTTP client (one TLS stack, the extra
//! trust anchor from `tenant.ca_file`) and one credential; each service has its own adaptive
//! limiter, because Graph and Exchange throttle independently.
//!
//! Layout: [`auth`] (tokens through azure_identity), [`jwt`] (the certificate client
//! assertion), [`http`] (HTTP client and retrying executor), [`throttle`] (the limiter),
//! [`graph`] and [`exchange`] (the two APIs), [`error`] (one error type).

pub mod auth;
pub mod error;
pub mod exchange;
pub mod graph;
pub mod http;
pub mod jwt;
pub mod migration;
pub mod throttle;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::Url;
use serde_json::Value;

pub use auth::{Audience, Scopes};
pub use error::{Service, TenantError};
pub use exchange::{Exchange, NewMailUser, hashtable};
pub use graph::{
    AssignedLicense, BatchRequest, BatchResponse, DeltaRound, DeltaRoundOf, Domain,
    ExtensionAttributes, Graph, GraphUser, RemovedUser, SubscribedSku, UserQuery, odata_string,
};
pub use http::Repeat;
pub use jwt::AssertionAlgorithm;
pub use throttle::Concurrency;

use crate::config::{Credential, TenantConfig};
use auth::TokenSource;
use http::{Counters, Executor};
use throttle::AdaptiveLimiter;

/// Knobs of the HTTP layer. The defaults suit the real services; tests and the benchmark
/// shorten the waits.
#[derive(Debug, Clone)]
pub struct TenantOptions {
    pub connect_timeout: Duration,
    /// Whole-request timeout. Graph's gateway gives up after about 100 s.
    pub request_timeout: Duration,
    /// Attempts per request (first try included) before giving up.
    pub max_attempts: u32,
    /// First backoff step without `Retry-After`; doubles per attempt, with jitter.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// A longer `Retry-After` is cut to this (a broken header must not stall a run for hours).
    pub max_retry_after: Duration,
    pub graph_concurrency: Concurrency,
    /// Exchange publishes no limits: a few requests at a time, more only while it keeps up.
    pub exchange_concurrency: Concurrency,
    /// How certificate client assertions are signed: PS256 with `x5t#S256` (the default,
    /// Microsoft's current documentation) or RS256 with `x5t`. See [`jwt`].
    pub assertion_algorithm: AssertionAlgorithm,
    /// Token scopes. `None` (the default): derived from `[tenant.endpoints]`, see
    /// [`Scopes::for_endpoints`].
    pub scopes: Option<Scopes>,
}

impl Default for TenantOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            max_attempts: 8,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(300),
            graph_concurrency: Concurrency {
                initial: 4,
                min: 1,
                max: 32,
            },
            // Start with two; grow to eight only while Exchange answers without 429 (the
            // benchmark showed four in flight cannot use a budget of 200 writes/s at 10 ms).
            exchange_concurrency: Concurrency {
                initial: 2,
                min: 1,
                max: 8,
            },
            assertion_algorithm: AssertionAlgorithm::default(),
            scopes: None,
        }
    }
}

/// Request statistics of one service since connect.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ServiceStats {
    /// HTTP requests sent (a `$batch` envelope is one; retries included).
    pub requests: u64,
    /// Requests (or `$batch` sub-requests) sent again after a failure.
    pub retries: u64,
    /// 429 answers, `$batch` sub-requests included.
    pub throttled: u64,
    /// 5xx answers, `$batch` sub-requests included.
    pub server_errors: u64,
    /// Connection, TLS and timeout failures.
    pub transport_errors: u64,
    /// 401s answered with a fresh token.
    pub token_refreshes: u64,
    /// Time requests spent waiting for `Retry-After`, backoff or a throttling pause, summed
    /// over requests.
    pub waited: Duration,
    /// The limiter's current number of concurrent requests.
    pub concurrency: u32,
    /// Answers by HTTP status class: `[2xx, 3xx, 4xx, 5xx]`, retries included (a `$batch`
    /// envelope counts once); requests that got no answer are `transport_errors`.
    pub by_class: [u64; 4],
}

/// Statistics of both services.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TenantStats {
    pub graph: ServiceStats,
    pub exchange: ServiceStats,
}

impl TenantStats {
    pub fn requests(&self) -> u64 {
        self.graph.requests + self.exchange.requests
    }
    pub fn retries(&self) -> u64 {
        self.graph.retries + self.exchange.retries
    }
    pub fn throttled(&self) -> u64 {
        self.graph.throttled + self.exchange.throttled
    }
    pub fn waited(&self) -> Duration {
        self.graph.waited + self.exchange.waited
    }
}

/// What `check-config` reports about the tenant.
#[derive(Debug, Clone)]
pub struct TenantCheck {
    pub credential: Credential,
    /// `GET /domains` through Graph.
    pub domains: Vec<Domain>,
    /// `DomainName` of every `Get-AcceptedDomain` result, through Exchange.
    pub accepted_domains: Vec<String>,
}

/// A connected tenant: a Graph client and an Exchange client sharing one credential.
#[derive(Debug, Clone)]
pub struct Tenant {
    graph: Graph,
    exchange: Exchange,
    tokens: Arc<TokenSource>,
}

impl Tenant {
    /// Builds the clients and the credential from `[tenant]` with default options. Makes no
    /// network call; fails on missing ids or credential material, naming the key.
    pub fn connect(config: &TenantConfig) -> Result<Tenant, TenantError> {
        Self::connect_with(config, TenantOptions::default())
    }

    /// Like [`Self::connect`] with explicit HTTP options.
    pub fn connect_with(
        config: &TenantConfig,
        options: TenantOptions,
    ) -> Result<Tenant, TenantError> {
        let tenant_id = config.tenant_id.as_deref().ok_or_else(|| {
            TenantError::Config("tenant.tenant_id is required to connect to the tenant".into())
        })?;
        let options = Arc::new(options);
        let http = http::build_client(config.ca_file.as_deref(), &options)?;
        let scopes = options
            .scopes
            .clone()
            .unwrap_or_else(|| Scopes::for_endpoints(&config.endpoints));
        let tokens = Arc::new(TokenSource::new(
            config,
            tenant_id,
            http.clone(),
            scopes,
            &options,
        )?);
        let parse = |key: &str, s: &str| {
            Url::parse(s).map_err(|e| TenantError::Config(format!("{key} `{s}`: {e}")))
        };
        let graph_base = parse(
            "tenant.endpoints.graph",
            &format!("{}/v1.0", config.endpoints.graph.trim_end_matches('/')),
        )?;
        let exchange_url = parse(
            "tenant.endpoints.exchange",
            &format!(
                "{}/adminapi/beta/{tenant_id}/InvokeCommand",
                config.endpoints.exchange.trim_end_matches('/')
            ),
        )?;
        let graph_exec = Arc::new(Executor::new(
            Service::Graph,
            Audience::Graph,
            &graph_base,
            http.clone(),
            tokens.clone(),
            AdaptiveLimiter::new(options.graph_concurrency),
            options.clone(),
        ));
        let exchange_exec = Arc::new(Executor::new(
            Service::Exchange,
            Audience::Exchange,
            &exchange_url,
            http,
            tokens.clone(),
            AdaptiveLimiter::new(options.exchange_concurrency),
            options,
        ));
        Ok(Tenant {
            graph: Graph::new(graph_exec, graph_base),
            exchange: Exchange::new(exchange_exec, exchange_url, tenant_id),
            tokens,
        })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn exchange(&self) -> &Exchange {
        &self.exchange
    }

    /// Which credential is in use.
    pub fn credential(&self) -> Credential {
        self.tokens.kind()
    }

    pub fn stats(&self) -> TenantStats {
        TenantStats {
            graph: service_stats(self.graph.executor()),
            exchange: service_stats(self.exchange.executor()),
        }
    }

    /// Gets both tokens and reads the domains through both APIs: proves the credential, the
    /// Graph permissions and the Exchange role in one go.
    pub async fn check(&self) -> Result<TenantCheck, TenantError> {
        self.tokens.token(Audience::Graph).await?;
        self.tokens.token(Audience::Exchange).await?;
        let domains = self.graph.domains().await?;
        let accepted_domains = self
            .exchange
            .get_accepted_domains()
            .await?
            .iter()
            .filter_map(|d| {
                d.get("DomainName")
                    .or_else(|| d.get("Name"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect();
        Ok(TenantCheck {
            credential: self.credential(),
            domains,
            accepted_domains,
        })
    }
}

fn service_stats(exec: &Executor) -> ServiceStats {
    let c: &Counters = &exec.counters;
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    ServiceStats {
        requests: n(&c.requests),
        retries: n(&c.retries),
        throttled: n(&c.throttled),
        server_errors: n(&c.server_errors),
        transport_errors: n(&c.transport_errors),
        token_refreshes: n(&c.token_refreshes),
        waited: Duration::from_micros(n(&c.waited_micros)),
        concurrency: exec.limiter.limit(),
        by_class: c.by_class.each_ref().map(n),
    }
}
