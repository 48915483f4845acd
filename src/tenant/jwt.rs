//! The client assertion for certificate credentials: an RS256-signed JWT, as Entra ID
//! documents under "Microsoft identity platform application authentication certificate
//! credentials".
//!
//! azure_identity's own certificate credential needs OpenSSL (PKCS#12); signing the JWT here
//! with aws-lc-rs (already in the tree through rustls) keeps one crypto backend and no
//! OpenSSL. Header: `alg` RS256, `typ` JWT, `x5t#S256` = base64url(SHA-256 of the
//! certificate DER), by which Entra finds the uploaded certificate. Claims: `aud` = the token
//! endpoint, `iss` = `sub` = client id, random `jti`, `nbf`/`iat` now, `exp` in 10 minutes.
//! A fresh assertion is signed for every token request, so none outlives its use.

use std::fmt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use azure_core::http::ClientMethodOptions;
use azure_identity::ClientAssertion;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;

use super::error::TenantError;

/// How long a signed assertion is valid. Entra accepts up to a few hours; ten minutes is
/// what Microsoft's own libraries use.
const LIFETIME_SECS: u64 = 600;

/// Signs client assertions with the app's certificate key. `Debug` shows the client id and
/// the thumbprint only, never the key.
pub struct CertificateAssertion {
    client_id: String,
    token_url: String,
    thumbprint_s256: String,
    key: RsaKeyPair,
    rng: SystemRandom,
}

impl fmt::Debug for CertificateAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAssertion")
            .field("client_id", &self.client_id)
            .field("token_url", &self.token_url)
            .field("x5t#S256", &self.thumbprint_s256)
            .finish_non_exhaustive()
    }
}

impl CertificateAssertion {
    /// Reads a PEM file holding the certificate (the first `CERTIFICATE` block is the app's
    /// own) and its RSA private key (`PRIVATE KEY` or `RSA PRIVATE KEY`).
    pub fn from_pem_file(
        path: &Path,
        client_id: &str,
        token_url: &str,
    ) -> Result<Self, TenantError> {
        let pem = std::fs::read(path).map_err(|e| {
            TenantError::Config(format!(
                "cannot read tenant.certificate_file {}: {e}",
                path.display()
            ))
        })?;
        Self::from_pem(&pem, client_id, token_url).map_err(|m| {
            TenantError::Config(format!("tenant.certificate_file {}: {m}", path.display()))
        })
    }

    /// Like [`Self::from_pem_file`], from bytes. Errors name the problem, never key material.
    pub fn from_pem(pem: &[u8], client_id: &str, token_url: &str) -> Result<Self, String> {
        let cert = CertificateDer::from_pem_slice(pem)
            .map_err(|_| "no CERTIFICATE block found".to_string())?;
        let key = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|_| "no PRIVATE KEY block found".to_string())?;
        let key = match &key {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            _ => return Err("the private key is not an RSA key (Entra needs RS256)".into()),
        }
        .map_err(|_| "the private key is not a usable RSA key (2048 bits or more)".to_string())?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.as_ref());
        Ok(Self {
            client_id: client_id.to_owned(),
            token_url: token_url.to_owned(),
            thumbprint_s256: URL_SAFE_NO_PAD.encode(digest.as_ref()),
            key,
            rng: SystemRandom::new(),
        })
    }

    /// base64url(SHA-256(certificate DER)): what Entra shows as the certificate thumbprint
    /// (in hex) and looks the key up by.
    pub fn thumbprint_s256(&self) -> &str {
        &self.thumbprint_s256
    }

    /// Builds and signs a new assertion valid from now for ten minutes.
    pub fn sign(&self) -> Result<String, String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| "system clock before 1970".to_string())?
            .as_secs();
        let mut jti = [0u8; 16];
        self.rng
            .fill(&mut jti)
            .map_err(|_| "no randomness for jti".to_string())?;
        let header = json!({"alg": "RS256", "typ": "JWT", "x5t#S256": self.thumbprint_s256});
        let claims = json!({
            "aud": self.token_url,
            "iss": self.client_id,
            "sub": self.client_id,
            "jti": URL_SAFE_NO_PAD.encode(jti),
            "nbf": now,
            "iat": now,
            "exp": now + LIFETIME_SECS,
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &self.rng,
                input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| "RS256 signing failed".to_string())?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

#[async_trait::async_trait]
impl ClientAssertion for CertificateAssertion {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        self.sign().map_err(|m| {
            azure_core::Error::with_message(azure_core::error::ErrorKind::Credential, m)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_and_key() -> String {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let params = rcgen::CertificateParams::new(vec!["app".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        format!("{}{}", cert.pem(), key.serialize_pem())
    }

    fn part(jwt: &str, i: usize) -> serde_json::Value {
        let bytes = URL_SAFE_NO_PAD
            .decode(jwt.split('.').nth(i).unwrap())
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn assertion_has_the_documented_header_and_claims() {
        let pem = cert_and_key();
        let url = "https://login.example/t/oauth2/v2.0/token";
        let a = CertificateAssertion::from_pem(pem.as_bytes(), "client", url).unwrap();
        let jwt = a.sign().unwrap();
        let (h, c) = (part(&jwt, 0), part(&jwt, 1));
        assert_eq!(h["alg"], "RS256");
        assert_eq!(h["typ"], "JWT");
        assert_eq!(h["x5t#S256"], a.thumbprint_s256());
        assert_eq!(c["aud"], url);
        assert_eq!(
            (c["iss"].as_str(), c["sub"].as_str()),
            (Some("client"), Some("client"))
        );
        assert_eq!(c["exp"].as_u64().unwrap() - c["nbf"].as_u64().unwrap(), 600);
        // Every assertion is new.
        assert_ne!(part(&a.sign().unwrap(), 1)["jti"], c["jti"]);
        // The key never shows in Debug.
        let dbg = format!("{a:?}");
        assert!(!dbg.contains("PRIVATE") && dbg.contains("client"), "{dbg}");
    }

    #[test]
    fn unusable_files_are_named_without_their_content() {
        let pem = cert_and_key();
        let cert_only: String = pem
            .split_inclusive('\n')
            .take_while(|l| !l.contains("PRIVATE"))
            .collect();
        let err = CertificateAssertion::from_pem(cert_only.as_bytes(), "c", "u").unwrap_err();
        assert!(err.contains("PRIVATE KEY"), "{err}");
        let err = CertificateAssertion::from_pem(b"junk", "c", "u").unwrap_err();
        assert!(err.contains("CERTIFICATE"), "{err}");
    }
}
