//! The Entra ID token endpoint (`POST /{tenant}/oauth2/v2.0/token`, client credentials) and
//! access-token checks for the two APIs.
//!
//! Tokens are opaque random strings mapped to an audience and an expiry: clients must not
//! parse access tokens anyway, and an opaque token cannot be forged by a test. Audiences are
//! Microsoft's real resource names (`https://graph.microsoft.com`,
//! `https://outlook.office365.com`) even though the emulator listens elsewhere, because
//! ldap2exo asks for them by name. A client assertion (PS256 or RS256 JWT) is verified against the
//! configured certificate with aws-lc-rs (through rustls-webpki), like Entra checks the
//! certificate uploaded to the app registration.

use crate::config::TenantConfig;
use crate::util::{b64url_decode, fold, iso8601, now_unix, random_token};
use crate::wire::{Req, Resp};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub const GRAPH_RESOURCE: &str = "https://graph.microsoft.com";
pub const EXCHANGE_RESOURCE: &str = "https://outlook.office365.com";
const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
const EXCHANGE_APP_ID: &str = "00000002-0000-0ff1-ce00-000000000000";
/// Entra tolerates this much clock skew on assertion `exp`/`nbf`.
const CLOCK_SKEW_SECS: u64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A token-endpoint refusal, rendered as Entra's `{error, error_description, ...}`.
    #[error("AADSTS{aadsts}: {text}")]
    Token {
        status: u16,
        error: &'static str,
        aadsts: u32,
        text: String,
    },
}

/// Why an API refused a bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerProblem {
    Missing,
    Malformed,
    Unknown,
    Expired,
    WrongAudience,
}

impl std::fmt::Display for BearerProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BearerProblem::Missing => "Access token is empty.",
            BearerProblem::Malformed => "Invalid JWT token. Token format not valid.",
            BearerProblem::Unknown => "Access token validation failure. Invalid signature.",
            BearerProblem::Expired => "Lifetime validation failed, the token is expired.",
            BearerProblem::WrongAudience => "Access token validation failure. Invalid audience.",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Audience {
    Graph,
    Exchange,
}

#[derive(Debug, Clone)]
struct TokenInfo {
    audience: Audience,
    expires: Instant,
}

/// Issued access tokens.
#[derive(Debug, Default)]
pub struct TokenTable {
    tokens: HashMap<String, TokenInfo>,
}

impl TokenTable {
    pub fn issue(&mut self, audience: Audience, lifetime: Duration) -> String {
        let t = format!("emu.{}", random_token());
        self.tokens.insert(
            t.clone(),
            TokenInfo {
                audience,
                expires: Instant::now() + lifetime,
            },
        );
        t
    }

    /// Makes every token issued so far expired: "the token ran out mid-run".
    pub fn expire_all(&mut self) {
        let past = Instant::now() - Duration::from_millis(1);
        for t in self.tokens.values_mut() {
            t.expires = past;
        }
    }

    /// Checks an `Authorization` header for the given API.
    pub fn check(
        &self,
        authorization: Option<&str>,
        audience: Audience,
    ) -> Result<(), BearerProblem> {
        let h = authorization
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .ok_or(BearerProblem::Missing)?;
        let (scheme, token) = h.split_once(' ').ok_or(BearerProblem::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(BearerProblem::Malformed);
        }
        let info = self
            .tokens
            .get(token.trim())
            .ok_or(BearerProblem::Unknown)?;
        if info.expires <= Instant::now() {
            return Err(BearerProblem::Expired);
        }
        if info.audience != audience {
            return Err(BearerProblem::WrongAudience);
        }
        Ok(())
    }
}

fn token_err(status: u16, error: &'static str, aadsts: u32, text: impl Into<String>) -> AuthError {
    AuthError::Token {
        status,
        error,
        aadsts,
        text: text.into(),
    }
}

/// Renders an Entra token-endpoint error body.
pub fn token_error_response(e: &AuthError, trace_id: &str) -> Resp {
    let AuthError::Token {
        status,
        error,
        aadsts,
        text,
    } = e;
    let ts = iso8601(now_unix()).replace('T', " ");
    let description = format!(
        "AADSTS{aadsts}: {text} Trace ID: {trace_id} Correlation ID: {trace_id} Timestamp: {ts}"
    );
    Resp::json(
        *status,
        &json!({
            "error": error,
            "error_description": description,
            "error_codes": [aadsts],
            "timestamp": ts,
            "trace_id": trace_id,
            "correlation_id": trace_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={aadsts}"),
        }),
    )
}

/// Whether `tenant` (from the URL) names this tenant: its id or one of its verified domains.
pub fn tenant_matches(cfg: &TenantConfig, tenant: &str) -> bool {
    let t = fold(tenant);
    t == fold(&cfg.tenant_id)
        || t == cfg.initial_domain()
        || cfg.domains.iter().any(|d| d.verified && fold(&d.name) == t)
}

/// Handles the token request; answers the audience and the token on success.
pub fn token_request(
    cfg: &TenantConfig,
    tenant_in_path: &str,
    req: &Req,
    table: &mut TokenTable,
    lifetime: Duration,
) -> Result<Value, AuthError> {
    if !tenant_matches(cfg, tenant_in_path) {
        return Err(token_err(
            400,
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant_in_path}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        ));
    }
    if req.method != "POST" {
        return Err(token_err(
            400,
            "invalid_request",
            900561,
            "The endpoint only accepts POST requests.",
        ));
    }
    let form: HashMap<String, String> = form_urlencoded::parse(&req.body).into_owned().collect();
    let need = |k: &str| -> Result<&String, AuthError> {
        form.get(k).filter(|v| !v.is_empty()).ok_or_else(|| {
            token_err(
                400,
                "invalid_request",
                900144,
                format!("The request body must contain the following parameter: '{k}'."),
            )
        })
    };
    let grant = need("grant_type")?;
    if grant != "client_credentials" {
        return Err(token_err(
            400,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant}'."),
        ));
    }
    let client_id = need("client_id")?;
    if !client_id.eq_ignore_ascii_case(&cfg.client_id) {
        return Err(token_err(
            400,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant_in_path}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        ));
    }
    let scope = need("scope")?;
    let audience = parse_scope(scope, tenant_in_path)?;

    match (form.get("client_secret"), form.get("client_assertion")) {
        (Some(secret), None) => {
            if cfg.client_secret.as_deref() != Some(secret.as_str()) {
                return Err(token_err(
                    401,
                    "invalid_client",
                    7000215,
                    format!(
                        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                        cfg.client_id
                    ),
                ));
            }
        }
        (None, Some(assertion)) => {
            let t = form
                .get("client_assertion_type")
                .map(String::as_str)
                .unwrap_or("");
            if t != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
                return Err(token_err(
                    400,
                    "invalid_request",
                    50027,
                    "JWT token is invalid or malformed: client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
                ));
            }
            verify_assertion(cfg, tenant_in_path, assertion)?;
        }
        (Some(_), Some(_)) => {
            return Err(token_err(
                400,
                "invalid_request",
                700025,
                "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.",
            ));
        }
        (None, None) => {
            return Err(token_err(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            ));
        }
    }
    let secs = lifetime.as_secs();
    let token = table.issue(audience, lifetime);
    Ok(json!({
        "token_type": "Bearer",
        "expires_in": secs,
        "ext_expires_in": secs,
        "access_token": token,
    }))
}

/// `https://graph.microsoft.com/.default` (or the app-id form) → Graph; the Exchange one →
/// Exchange. Client credentials allow exactly one `/.default` scope.
fn parse_scope(scope: &str, tenant: &str) -> Result<Audience, AuthError> {
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    let invalid = |s: &str| {
        token_err(
            400,
            "invalid_scope",
            1002012,
            format!(
                "The provided value for scope {s} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        )
    };
    let mut found = None;
    for s in &scopes {
        let Some(resource) = s.strip_suffix("/.default") else {
            return Err(invalid(s));
        };
        let resource = resource.trim_end_matches('/').to_ascii_lowercase();
        let aud = match resource.as_str() {
            GRAPH_RESOURCE | GRAPH_APP_ID => Audience::Graph,
            EXCHANGE_RESOURCE | "https://outlook.office.com" | EXCHANGE_APP_ID => {
                Audience::Exchange
            }
            _ => {
                return Err(token_err(
                    400,
                    "invalid_resource",
                    500011,
                    format!(
                        "The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
                    ),
                ));
            }
        };
        if found.is_some_and(|f| f != aud) {
            return Err(token_err(
                400,
                "invalid_scope",
                28000,
                format!(
                    "Provided value for the input parameter scope '{scope}' is not valid because it contains more than one resource. Scope {scope} is not valid."
                ),
            ));
        }
        found = Some(aud);
    }
    found.ok_or_else(|| invalid(scope))
}

/// Verifies a client assertion (PS256 with `x5t#S256`, as Microsoft's current
/// certificate-credentials page documents, or RS256 with `x5t` or `x5t#S256`, as the older
/// page and Microsoft's own Rust SDK send): header, signature against the configured certificate,
/// `aud` (this tenant's token endpoint), `iss`/`sub` (the client id), `exp`/`nbf`.
fn verify_assertion(cfg: &TenantConfig, tenant: &str, jwt: &str) -> Result<(), AuthError> {
    let malformed = |why: &str| {
        token_err(
            400,
            "invalid_request",
            50027,
            format!("JWT token is invalid or malformed ({why})."),
        )
    };
    let Some(pem) = &cfg.client_certificate_pem else {
        return Err(token_err(
            401,
            "invalid_client",
            700027,
            "Client assertion contains an invalid signature. [Reason - The key was not found.]",
        ));
    };
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return Err(malformed("three dot-separated parts expected"));
    }
    let header: Value = b64url_decode(parts[0])
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| malformed("header"))?;
    let claims: Value = b64url_decode(parts[1])
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| malformed("payload"))?;
    let signature = b64url_decode(parts[2]).ok_or_else(|| malformed("signature encoding"))?;

    let alg = header["alg"].as_str().unwrap_or("");
    if alg == "PS256" && header["x5t#S256"].as_str().is_none() {
        // learn.microsoft.com/entra/identity-platform/certificate-credentials: PS256 goes
        // with the SHA-256 thumbprint.
        return Err(token_err(
            401,
            "invalid_client",
            700027,
            "Client assertion contains an invalid signature. [Reason - PS256 needs the x5t#S256 header.]",
        ));
    }
    if alg != "RS256" && alg != "PS256" {
        return Err(token_err(
            401,
            "invalid_client",
            700027,
            format!(
                "Client assertion contains an invalid signature. [Reason - The algorithm {} is not supported.]",
                header["alg"]
            ),
        ));
    }
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|_| {
        token_err(
            500,
            "server_error",
            0,
            "emulator: configured client certificate is not PEM",
        )
    })?;
    // Entra finds the key by thumbprint: x5t#S256 (SHA-256) or the older x5t (SHA-1).
    let s256 =
        crate::util::b64url(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der).as_ref());
    let s1 = crate::util::b64url(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &der).as_ref(),
    );
    let thumb_ok = header["x5t#S256"]
        .as_str()
        .map(|t| t.trim_end_matches('=') == s256)
        .unwrap_or(false)
        || header["x5t"]
            .as_str()
            .map(|t| t.trim_end_matches('=') == s1)
            .unwrap_or(false);
    if !thumb_ok {
        return Err(token_err(
            401,
            "invalid_client",
            700027,
            format!(
                "Client assertion contains an invalid signature. [Reason - The key was not found., Thumbprint of key used by client: '{}']",
                header["x5t#S256"]
                    .as_str()
                    .or(header["x5t"].as_str())
                    .unwrap_or("")
            ),
        ));
    }
    let cert = webpki::EndEntityCert::try_from(&der).map_err(|_| {
        token_err(
            500,
            "server_error",
            0,
            "emulator: configured client certificate does not parse",
        )
    })?;
    let signed = format!("{}.{}", parts[0], parts[1]);
    let scheme = if alg == "PS256" {
        webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY
    } else {
        webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256
    };
    cert.verify_signature(scheme, signed.as_bytes(), &signature)
        .map_err(|_| {
            token_err(
                401,
                "invalid_client",
                700027,
                "Client assertion failed signature validation.",
            )
        })?;

    let aud = claims["aud"].as_str().unwrap_or("");
    let aud_ok = aud.starts_with("https://")
        && [
            format!("/{tenant}/oauth2/v2.0/token"),
            format!("/{tenant}/oauth2/token"),
        ]
        .iter()
        .any(|suffix| {
            aud.to_ascii_lowercase()
                .ends_with(&suffix.to_ascii_lowercase())
        });
    if !aud_ok {
        return Err(token_err(
            400,
            "invalid_request",
            50027,
            format!(
                "JWT token is invalid or malformed: the audience '{aud}' is not this tenant's token endpoint."
            ),
        ));
    }
    for claim in ["iss", "sub"] {
        if !claims[claim]
            .as_str()
            .is_some_and(|v| v.eq_ignore_ascii_case(&cfg.client_id))
        {
            return Err(token_err(
                401,
                "invalid_client",
                700021,
                format!(
                    "Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://docs.microsoft.com/en-us/azure/active-directory/develop/active-directory-certificate-credentials . (claim {claim})"
                ),
            ));
        }
    }
    if claims["jti"].as_str().is_none_or(str::is_empty) {
        return Err(malformed("missing jti"));
    }
    let now = now_unix();
    let exp = claims["exp"]
        .as_u64()
        .ok_or_else(|| malformed("missing exp"))?;
    let nbf = claims["nbf"].as_u64().unwrap_or(0);
    if exp + CLOCK_SKEW_SECS < now || nbf > now + CLOCK_SKEW_SECS {
        return Err(token_err(
            401,
            "invalid_client",
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}.",
                iso8601(now),
                iso8601(nbf),
                iso8601(exp)
            ),
        ));
    }
    Ok(())
}

/// Test helper: an RSA client certificate for client-assertion tests, and a signer. Exposed
/// so ldap2exo's own tests can make certificates the emulator accepts.
pub mod testing {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    pub enum CertError {
        #[error(transparent)]
        Rcgen(#[from] rcgen::Error),
        #[error("signing failed")]
        Sign,
    }

    /// A self-signed RSA-2048 certificate: (certificate PEM, PKCS#8 private key DER).
    pub fn client_certificate(common_name: &str) -> Result<(String, Vec<u8>), CertError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let cert = params.self_signed(&key)?;
        Ok((cert.pem(), key.serialize_der()))
    }

    /// Builds and signs a client assertion for `client_id` against `token_url`, valid for
    /// `lifetime_secs` from now (negative values make an expired one).
    pub fn client_assertion(
        cert_pem: &str,
        key_pkcs8: &[u8],
        client_id: &str,
        token_url: &str,
        lifetime_secs: i64,
    ) -> Result<String, CertError> {
        let der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|_| CertError::Sign)?;
        let thumb = crate::util::b64url(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der).as_ref(),
        );
        let now = now_unix() as i64;
        let header = json!({"alg": "RS256", "typ": "JWT", "x5t#S256": thumb});
        let claims = json!({
            "aud": token_url, "iss": client_id, "sub": client_id,
            "jti": random_token(), "nbf": now - 60, "iat": now - 60, "exp": now + lifetime_secs,
        });
        let input = format!(
            "{}.{}",
            crate::util::b64url(header.to_string().as_bytes()),
            crate::util::b64url(claims.to_string().as_bytes())
        );
        let kp =
            aws_lc_rs::signature::RsaKeyPair::from_pkcs8(key_pkcs8).map_err(|_| CertError::Sign)?;
        let mut sig = vec![0u8; kp.public_modulus_len()];
        kp.sign(
            &aws_lc_rs::signature::RSA_PKCS1_SHA256,
            &aws_lc_rs::rand::SystemRandom::new(),
            input.as_bytes(),
            &mut sig,
        )
        .map_err(|_| CertError::Sign)?;
        Ok(format!("{input}.{}", crate::util::b64url(&sig)))
    }
}
