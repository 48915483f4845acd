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

/// The scopes asked for. The resource names are the worldwide cloud's; the emulator issues
/// tokens for these names too, although it listens elsewhere.
#[derive(Debug, Clone)]
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
    ) -> Result<Self, TenantError> {
        let kind = config.credential_kind().map_err(TenantError::Config)?;
        let mut cloud = CustomConfiguration::default();
        cloud.authority_host = config.endpoints.login.trim_end_matches('/').to_owned();
        let options = ClientOptions {
            transport: Some(Transport::new(Arc::new(http))),
            cloud: Some(Arc::new(CloudConfiguration::from(cloud))),
            ..Default::default()
        };
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
                Some(Arc::new(CertificateAssertion::from_pem_file(
                    path, client_id, &url,
                )?))
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
                message: auth_message(&e),
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

/// azure_identity's message (credential name, Entra's `AADSTS` text, a troubleshooting link)
/// in one line. It never holds the secret: Entra does not echo it and azure_identity does
/// not log request bodies.
fn auth_message(e: &azure_core::Error) -> String {
    e.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("To troubleshoot"))
        .collect::<Vec<_>>()
        .join(" ")
}
