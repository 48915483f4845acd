//! Access tokens for the two audiences ldap2exo needs, through azure_identity 1.0.
//!
//! The credential (client secret, certificate assertion, managed identity or workload
//! identity) is built from `[tenant]` with our own HTTP client as its transport (one HTTP
//! stack, and the extra trust anchor from `tenant.ca_file` applies to the token endpoint too)
//! and `tenant.endpoints.login` as its authority host. The credential caches one token per
//! scope and fetches a new one five minutes before expiry.
//!
//! A token can still be refused before its expiry (revoked, clock skew, or a test that
//! expires it). azure_identity 1.0 offers no "bypass the cache" option, so [`TokenSource`]
//! builds a fresh credential (an empty cache) when a service answers 401 with the token we
//! sent; requests that raced with it see the new credential and do not rebuild again.
//!
//! Scopes: `<resource>/.default` for the cloud `[tenant.endpoints]` points at
//! ([`Scopes::for_endpoints`]). Token requests that fail on the way are retried by
//! azure_core's retry policy with the executor's attempt count and backoff steps; when they
//! still fail, [`TenantError::Auth`] carries the whole cause chain ("Connection refused",
//! "invalid peer certificate: UnknownIssuer", Entra's `AADSTS…` text), never the secret.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{
    ClientAssertionCredential, ClientAssertionCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use tokio::sync::Mutex;

use super::error::TenantError;
use super::jwt::CertificateAssertion;
use crate::config::{Credential, TenantConfig};
use crate::secret::Secret;

/// The resource a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Graph,
    Exchange,
}

impl Audience {
    pub fn as_str(self) -> &'static str {
        match self {
            Audience::Graph => "graph",
            Audience::Exchange => "exchange",
        }
    }
}

/// The scopes asked for, `<resource>/.default` (the form client credentials need).
/// [`Default`] is the worldwide cloud's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scopes {
    pub graph: String,
    pub exchange: String,
}

impl Default for Scopes {
    fn default() -> Self {
        Self {
            graph: "https://graph.microsoft.com/.default".into(),
            exchange: "https://outlook.office365.com/.default".into(),
        }
    }
}

/// Microsoft Graph service roots of Microsoft's clouds: worldwide (and GCC), US Government
/// L4 (GCC High), US Government L5 (DoD), China (21Vianet). Source:
/// learn.microsoft.com/graph/deployments ("Microsoft Graph and Graph Explorer service root
/// endpoints"); /graph/sdks/national-clouds: a `.default` scope "MUST use the domain of the
/// Microsoft Graph service root endpoint for the national cloud deployment".
const GRAPH_HOSTS: &[&str] = &[
    "graph.microsoft.com",
    "graph.microsoft.us",
    "dod-graph.microsoft.us",
    "microsoftgraph.chinacloudapi.cn",
];

/// Exchange Online hosts of the same clouds, the `-ConnectionUri` hosts of
/// `Connect-ExchangeOnline -ExchangeEnvironmentName O365Default / O365USGovGCCHigh /
/// O365USGovDoD / O365China` (office-docs-powershell `app-only-auth-powershell-v2.md`;
/// Microsoft 365 URL and IP ranges for USGovDoD list `outlook-dod.office365.us` beside
/// `webmail.apps.mil`). The admin API's token audience is the host's origin.
const EXCHANGE_HOSTS: &[&str] = &[
    "outlook.office365.com",
    "outlook.office365.us",
    "outlook-dod.office365.us",
    "webmail.apps.mil",
    "partner.outlook.cn",
];

impl Scopes {
    /// The scopes for `[tenant.endpoints]`: an explicit `graph_scope` / `exchange_scope`
    /// wins; else `https://<host>/.default` when the endpoint is one of Microsoft's known
    /// hosts (so a sovereign cloud gets its own audience); else the worldwide scope (a test
    /// emulator or a proxy on another host issues tokens for those names).
    pub fn for_endpoints(endpoints: &crate::config::Endpoints) -> Scopes {
        let worldwide = Scopes::default();
        let derive = |url: &str, known: &[&str], fallback: String| -> String {
            reqwest::Url::parse(url)
                .ok()
                .filter(|u| u.scheme() == "https" && u.port().is_none())
                .and_then(|u| {
                    let host = u.host_str()?.to_ascii_lowercase();
                    known
                        .contains(&host.as_str())
                        .then(|| format!("https://{host}/.default"))
                })
                .unwrap_or(fallback)
        };
        Scopes {
            graph: endpoints
                .graph_scope
                .clone()
                .unwrap_or_else(|| derive(&endpoints.graph, GRAPH_HOSTS, worldwide.graph.clone())),
            exchange: endpoints.exchange_scope.clone().unwrap_or_else(|| {
                derive(
                    &endpoints.exchange,
                    EXCHANGE_HOSTS,
                    worldwide.exchange.clone(),
                )
            }),
        }
    }
}

/// Everything needed to (re)build the credential. Holds the client secret and the signing
/// key; `Debug` shows neither.
struct Recipe {
    kind: Credential,
    tenant_id: String,
    client_id: Option<String>,
    secret: Option<Secret>,
    assertion: Option<Arc<CertificateAssertion>>,
    options: ClientOptions,
}

impl Recipe {
    fn build(&self) -> Result<Arc<dyn TokenCredential>, TenantError> {
        let err = |e: azure_core::Error| {
            TenantError::Config(format!("cannot set up the {:?} credential: {e}", self.kind))
        };
        let client_id = || {
            self.client_id.clone().ok_or_else(|| {
                TenantError::Config(format!(
                    "tenant.client_id is required for the {:?} credential",
                    self.kind
                ))
            })
        };
        Ok(match self.kind {
            Credential::ClientSecret => {
                let secret = self.secret.as_ref().ok_or_else(|| {
                    TenantError::Config(
                        "credential client_secret needs tenant.client_secret_file or LDAP2EXO__TENANT__CLIENT_SECRET".into(),
                    )
                })?;
                ClientSecretCredential::new(
                    &self.tenant_id,
                    client_id()?,
                    azure_core::credentials::Secret::new(secret.expose().to_owned()),
                    Some(ClientSecretCredentialOptions {
                        client_options: self.options.clone(),
                    }),
                )
                .map_err(err)?
            }
            Credential::Certificate => {
                let assertion = self.assertion.clone().ok_or_else(|| {
                    TenantError::Config(
                        "credential certificate needs tenant.certificate_file".into(),
                    )
                })?;
                ClientAssertionCredential::new(
                    self.tenant_id.clone(),
                    client_id()?,
                    SharedAssertion(assertion),
                    Some(ClientAssertionCredentialOptions {
                        client_options: self.options.clone(),
                    }),
                )
                .map_err(err)?
            }
            Credential::ManagedIdentity => {
                ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                    user_assigned_id: self.client_id.clone().map(UserAssignedId::ClientId),
                    client_options: self.options.clone(),
                }))
                .map_err(err)?
            }
            Credential::WorkloadIdentity => {
                // The federated token file and (unless configured) the client id come from
                // the environment the workload identity webhook sets up.
                WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                    credential_options: ClientAssertionCredentialOptions {
                        client_options: self.options.clone(),
                    },
                    client_id: self.client_id.clone(),
                    tenant_id: Some(self.tenant_id.clone()),
                    token_file_path: None,
                }))
                .map_err(err)?
            }
        })
    }
}

/// `ClientAssertionCredential` owns its assertion; sharing it lets a rebuilt credential reuse
/// the parsed key.
#[derive(Debug)]
struct SharedAssertion(Arc<CertificateAssertion>);

#[async_trait::async_trait]
impl azure_identity::ClientAssertion for SharedAssertion {
    async fn secret(
        &self,
        options: Option<azure_core::http::ClientMethodOptions<'_>>,
    ) -> azure_core::Result<String> {
        self.0.secret(options).await
    }
}

/// Hands out tokens per audience and replaces a token a service refused.
pub struct TokenSource {
    recipe: Recipe,
    scopes: Scopes,
    current: Mutex<Arc<dyn TokenCredential>>,
    rebuilds: AtomicU64,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("credential", &self.recipe.kind)
            .field("tenant_id", &self.recipe.tenant_id)
            .field("client_id", &self.recipe.client_id)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// Builds the credential from the configuration. Reads local files (certificate,
    /// federated token) but makes no network call.
    pub fn new(
        config: &TenantConfig,
        tenant_id: &str,
        http: reqwest::Client,
        scopes: Scopes,
        tenant_options: &super::TenantOptions,
    ) -> Result<Self, TenantError> {
        let kind = config.credential_kind().map_err(TenantError::Config)?;
        let mut cloud = CustomConfiguration::default();
        cloud.authority_host = config.endpoints.login.trim_end_matches('/').to_owned();
        let ms = |d: std::time::Duration| {
            azure_core::time::Duration::milliseconds(d.as_millis().min(i64::MAX as u128) as i64)
        };
        let mut options = ClientOptions {
            transport: Some(Transport::new(Arc::new(http))),
            cloud: Some(Arc::new(CloudConfiguration::from(cloud))),
            ..Default::default()
        };
        // The same attempt count and backoff as API requests; at most a minute in all.
        options.retry = azure_core::http::RetryOptions::exponential(
            azure_core::http::ExponentialRetryOptions {
                initial_delay: ms(tenant_options.backoff_base),
                max_retries: tenant_options.max_attempts.max(1) - 1,
                max_total_elapsed: azure_core::time::Duration::seconds(60),
                max_delay: ms(tenant_options.backoff_max),
            },
        );
        let assertion = match kind {
            Credential::Certificate => {
                let path = config.certificate_file.as_ref().ok_or_else(|| {
                    TenantError::Config(
                        "credential certificate needs tenant.certificate_file".into(),
                    )
                })?;
                let client_id = config.client_id.as_deref().ok_or_else(|| {
                    TenantError::Config(
                        "tenant.client_id is required for the certificate credential".into(),
                    )
                })?;
                let url = token_url(&config.endpoints.login, tenant_id)?;
                Some(Arc::new(
                    CertificateAssertion::from_pem_file(path, client_id, &url)?
                        .with_algorithm(tenant_options.assertion_algorithm),
                ))
            }
            _ => None,
        };
        let recipe = Recipe {
            kind,
            tenant_id: tenant_id.to_owned(),
            client_id: config.client_id.clone(),
            secret: config.client_secret.clone(),
            assertion,
            options,
        };
        let current = Mutex::new(recipe.build()?);
        Ok(Self {
            recipe,
            scopes,
            current,
            rebuilds: AtomicU64::new(0),
        })
    }

    pub fn kind(&self) -> Credential {
        self.recipe.kind
    }

    /// The scopes tokens are asked for.
    pub fn scopes(&self) -> &Scopes {
        &self.scopes
    }

    /// Belt and braces: neither Entra nor azure_identity echoes the client secret, but an
    /// error text must never carry it, whatever a proxy in between answers.
    fn redact(&self, message: String) -> String {
        match &self.recipe.secret {
            Some(s) if !s.expose().is_empty() => message.replace(s.expose(), "[redacted]"),
            _ => message,
        }
    }

    fn scope(&self, audience: Audience) -> &str {
        match audience {
            Audience::Graph => &self.scopes.graph,
            Audience::Exchange => &self.scopes.exchange,
        }
    }

    /// A valid token for `audience`: cached by the credential, renewed before expiry.
    pub async fn token(&self, audience: Audience) -> Result<Secret, TenantError> {
        let credential = self.current.lock().await.clone();
        self.fetch(&credential, audience).await
    }

    async fn fetch(
        &self,
        credential: &Arc<dyn TokenCredential>,
        audience: Audience,
    ) -> Result<Secret, TenantError> {
        let token = credential
            .get_token(&[self.scope(audience)], None)
            .await
            .map_err(|e| TenantError::Auth {
                audience: audience.as_str(),
                message: self.redact(auth_message(&e)),
            })?;
        Ok(Secret::new(token.token.secret().to_owned()))
    }

    /// Called after a 401 for `stale`: makes sure the next [`Self::token`] is a different
    /// one. Only the first of several concurrent callers rebuilds the credential.
    pub async fn refresh(&self, audience: Audience, stale: &Secret) -> Result<(), TenantError> {
        let mut current = self.current.lock().await;
        let now = self.fetch(&current, audience).await?;
        if now.expose() == stale.expose() {
            tracing::debug!(
                audience = audience.as_str(),
                "token refused before its expiry; fetching a new one"
            );
            *current = self.recipe.build()?;
            self.rebuilds.fetch_add(1, Ordering::Relaxed);
            self.fetch(&current, audience).await?;
        }
        Ok(())
    }

    /// How many times a refused token forced a new credential.
    pub fn refreshes(&self) -> u64 {
        self.rebuilds.load(Ordering::Relaxed)
    }
}

/// The token endpoint, exactly as azure_identity builds it (the authority's path is
/// replaced), because a client assertion's `aud` must match it.
pub fn token_url(login: &str, tenant_id: &str) -> Result<String, TenantError> {
    let base = reqwest::Url::parse(login)
        .map_err(|e| TenantError::Config(format!("tenant.endpoints.login `{login}`: {e}")))?;
    base.join(&format!("/{tenant_id}/oauth2/v2.0/token"))
        .map(|u| u.to_string())
        .map_err(|e| TenantError::Config(format!("tenant.tenant_id `{tenant_id}`: {e}")))
}

/// azure_identity's message and every distinct cause under it, in one line: "retry policy
/// expired" alone says nothing, the cause chain says "Connection refused", "invalid peer
/// certificate: UnknownIssuer" or Entra's `AADSTS7000215: Invalid client secret provided`.
/// It never holds the secret: Entra does not echo it and azure_identity does not log request
/// bodies (and [`TokenSource`] redacts it anyway). Troubleshooting links are dropped.
fn auth_message(e: &azure_core::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut add = |text: String| {
        let line = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("To troubleshoot"))
            .collect::<Vec<_>>()
            .join(" ");
        if !line.is_empty() && !parts.iter().any(|p| p.contains(&line)) {
            parts.push(line);
        }
    };
    add(e.to_string());
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        add(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
impl TokenSource {
    /// A token source that always answers `token`, for unit tests of the HTTP layer. A
    /// refresh fails (there is nothing to rebuild).
    pub(crate) fn fixed(token: &str) -> Self {
        #[derive(Debug)]
        struct Fixed(String);
        #[async_trait::async_trait]
        impl TokenCredential for Fixed {
            async fn get_token(
                &self,
                _: &[&str],
                _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
            ) -> azure_core::Result<azure_core::credentials::AccessToken> {
                Ok(azure_core::credentials::AccessToken::new(
                    self.0.clone(),
                    azure_core::time::OffsetDateTime::now_utc()
                        + azure_core::time::Duration::hours(1),
                ))
            }
        }
        Self {
            recipe: Recipe {
                kind: Credential::ClientSecret,
                tenant_id: "test".into(),
                client_id: None,
                secret: None,
                assertion: None,
                options: ClientOptions::default(),
            },
            scopes: Scopes::default(),
            current: Mutex::new(Arc::new(Fixed(token.to_owned()))),
            rebuilds: AtomicU64::new(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Endpoints;

    #[test]
    fn scopes_follow_the_cloud_of_the_endpoints() {
        let ep = |graph: &str, exchange: &str| Endpoints {
            graph: graph.into(),
            exchange: exchange.into(),
            ..Endpoints::default()
        };
        assert_eq!(
            Scopes::for_endpoints(&Endpoints::default()),
            Scopes::default()
        );
        let gcc_high = Scopes::for_endpoints(&ep(
            "https://graph.microsoft.us",
            "https://outlook.office365.us/",
        ));
        assert_eq!(gcc_high.graph, "https://graph.microsoft.us/.default");
        assert_eq!(gcc_high.exchange, "https://outlook.office365.us/.default");
        let dod = Scopes::for_endpoints(&ep(
            "https://dod-graph.microsoft.us",
            "https://webmail.apps.mil",
        ));
        assert_eq!(dod.graph, "https://dod-graph.microsoft.us/.default");
        assert_eq!(dod.exchange, "https://webmail.apps.mil/.default");
        let china = Scopes::for_endpoints(&ep(
            "https://microsoftgraph.chinacloudapi.cn",
            "https://partner.outlook.cn",
        ));
        assert_eq!(
            china.graph,
            "https://microsoftgraph.chinacloudapi.cn/.default"
        );
        assert_eq!(china.exchange, "https://partner.outlook.cn/.default");
        // An emulator or proxy: the worldwide names, unless set explicitly.
        let local = ep("https://127.0.0.1:8443", "https://127.0.0.1:8443");
        assert_eq!(Scopes::for_endpoints(&local), Scopes::default());
        let explicit = Endpoints {
            graph_scope: Some("https://graph.microsoft.us/.default".into()),
            exchange_scope: Some("https://outlook.office365.us/.default".into()),
            ..local
        };
        let s = Scopes::for_endpoints(&explicit);
        assert_eq!(s.graph, "https://graph.microsoft.us/.default");
        assert_eq!(s.exchange, "https://outlook.office365.us/.default");
    }

    #[test]
    fn auth_messages_carry_the_cause_chain() {
        let io = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        );
        let inner = azure_core::Error::new(azure_core::error::ErrorKind::Io, io);
        let outer =
            inner.with_context("retry policy expired and the request will no longer be retried");
        let m = auth_message(&outer);
        assert!(m.contains("retry policy expired"), "{m}");
        assert!(m.contains("Connection refused"), "{m}");
        assert_eq!(m.matches("Connection refused").count(), 1, "{m}");
    }
}
