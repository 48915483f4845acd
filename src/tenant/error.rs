//! [`TenantError`]: every failure of the tenant layer, typed so that `apply/` can tell a
//! per-object refusal (record it, go on) from a tenant-wide problem (stop the run).
//!
//! No variant carries a secret: messages come from the services' error bodies (which never
//! echo a secret or token) or are written here, and request bodies are never included.

use std::time::Duration;

/// Which API a request went to; used in errors, logs and statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// Microsoft Graph v1.0.
    Graph,
    /// The Exchange Online admin API (`InvokeCommand`).
    Exchange,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Graph => "graph",
            Service::Exchange => "exchange",
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// The tenant configuration cannot be used (missing ids or credential, unreadable CA or
    /// certificate file). Raised by `Tenant::connect`, before any network traffic.
    #[error("tenant configuration: {0}")]
    Config(String),

    /// No token could be obtained (wrong secret, unknown app, certificate not uploaded, token
    /// endpoint unreachable or not trusted, ...). The message is azure_identity's text
    /// followed by every distinct cause under it, e.g. "… retry policy expired …: tcp connect
    /// error: Connection refused (os error 111)", "…: invalid peer certificate:
    /// UnknownIssuer" or Entra's "AADSTS7000215: Invalid client secret provided …". It never
    /// contains the secret (Entra does not echo it, and it is redacted if anything did).
    #[error("cannot get a token for {audience}: {message}")]
    Auth {
        audience: &'static str,
        message: String,
    },

    /// The service refused our token even after one fresh token was fetched.
    #[error("{service} refused the access token (after one refresh): {message}")]
    Unauthorized { service: Service, message: String },

    /// 403: the app lacks a permission or an Entra role.
    #[error("{service} denied the request (missing permission or role?): {message}")]
    Forbidden { service: Service, message: String },

    /// The object does not exist (Graph 404, Exchange ManagementObjectNotFoundException).
    #[error("{service}: {what} not found")]
    NotFound { service: Service, what: String },

    /// Exchange: "The proxy address ... is already being used [by the proxy addresses or
    /// LegacyExchangeDN of "<holder>"]". The address (or UPN) belongs to another object,
    /// possibly a soft-deleted one, which Exchange names when it can.
    #[error("the address {address} is already used by {}", holder.as_deref().map(|h| format!("the recipient \"{h}\"")).unwrap_or_else(|| "another recipient (perhaps one in the recycle bin)".into()))]
    AddressInUse {
        address: String,
        holder: Option<String>,
    },

    /// A uniqueness conflict other than a proxy address: Graph `ObjectConflict`
    /// (userPrincipalName, mail) or an Exchange `Name` already in use.
    #[error("{service}: another object already has this {property}: {message}")]
    Conflict {
        service: Service,
        property: String,
        message: String,
    },

    /// 429s kept coming until the attempt limit was reached.
    #[error("{service} kept throttling (429) after {attempts} attempts")]
    Throttled {
        service: Service,
        attempts: u32,
        retry_after: Option<Duration>,
    },

    /// 5xx kept coming until the attempt limit was reached, or a 5xx on a request that is
    /// not safe to repeat.
    #[error("{service} is unavailable (HTTP {status}) after {attempts} attempts: {message}")]
    Unavailable {
        service: Service,
        status: u16,
        attempts: u32,
        message: String,
    },

    /// The request never reached the service (connection refused, DNS, TLS handshake), or a
    /// request that is safe to repeat kept failing on the way (after its retries).
    #[error("{service}: connection failed after {attempts} attempts: {message}")]
    Transport {
        service: Service,
        attempts: u32,
        message: String,
    },

    /// The request left and may have been executed, but no answer says whether: a request
    /// that is not safe to repeat ([`super::Repeat::Unsafe`], e.g. `New-MailUser`) met a
    /// timeout, a reset connection or a cut-off body after it was sent, or a 500, 502 or 504
    /// (a gateway can time out while the cmdlet runs on). It is never retried here: the
    /// caller has to look (by name, address or stamp) whether the object exists. A 503 is not
    /// ambiguous (the service says it did not take the request) and is retried.
    /// `what` names the request (`POST …/InvokeCommand New-MailUser`), `message` what
    /// happened.
    #[error("{service}: {what} may or may not have been executed: {message}")]
    Ambiguous {
        service: Service,
        what: String,
        message: String,
    },

    /// Any other refusal, with the service's own code and message. For Exchange, `code` is
    /// the exception type (`Microsoft.Exchange...Exception`) when the body names one, and
    /// `message` is `<cmdlet>: <the service's own reason>`.
    #[error("{service} refused the request (HTTP {status}, {code}): {message}")]
    Refused {
        service: Service,
        status: u16,
        code: String,
        message: String,
    },

    /// A `$batch` request that was not run because the request it depends on failed (424).
    #[error("graph: batch request {id} not run because request {depends_on} failed")]
    FailedDependency { id: String, depends_on: String },

    /// The licence has no free units left.
    #[error("no {sku} licences left: all purchased units are assigned")]
    NoLicensesLeft { sku: String },

    /// The licence named in the configuration is not among the tenant's subscribed SKUs.
    #[error("the tenant has no subscription for licence {sku} (known: {known})")]
    UnknownSku { sku: String, known: String },

    /// The delta token expired (Graph keeps them about 7 days): do a full read, then start a
    /// new delta round.
    #[error("graph: the delta token has expired; a full read is needed")]
    DeltaExpired,

    /// The service answered something this client does not understand.
    #[error("{service}: unexpected response: {message}")]
    Protocol { service: Service, message: String },
}

impl TenantError {
    /// Whether retrying the same operation later might succeed (throttling, outages,
    /// connection trouble). `apply/` uses it to keep an object for the next run instead of
    /// recording a permanent failure.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            TenantError::Throttled { .. }
                | TenantError::Unavailable { .. }
                | TenantError::Transport { .. }
        )
    }

    /// Whether the outcome is unknown ([`TenantError::Ambiguous`]): the change may have been
    /// made, so the caller must look before doing it again.
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, TenantError::Ambiguous { .. })
    }
}
