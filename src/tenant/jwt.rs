//! The client assertion for certificate credentials: a signed JWT, as Entra ID documents
//! under "Microsoft identity platform application authentication certificate credentials".
//!
//! Which algorithm: the current page (learn.microsoft.com/entra/identity-platform/
//! certificate-credentials, checked 2026-11) says header `alg` "Should be PS256", `typ` JWT,
//! `x5t#S256` = base64url(SHA-256 of the certificate DER), signature "uses PSS padding"
//! (the docs.azure.cn copy says so explicitly). The previous version of the page
//! (learn.microsoft.com/previous-versions/azure/active-directory/develop/
//! certificate-credentials) says `alg` RS256 with `x5t` = base64url(SHA-1 thumbprint); that
//! is also what Microsoft's Rust SDK sends (azure-sdk-for-rust
//! `client_certificate_credential.rs`). Each documented pair is sent as documented, never a
//! mix: [`AssertionAlgorithm::Ps256`] (the default, RSA-PSS with SHA-256, MGF1-SHA-256, salt
//! 32 bytes: aws-lc-rs `RSA_PSS_SHA256`) with `x5t#S256`, or [`AssertionAlgorithm::Rs256`]
//! (RSASSA-PKCS1-v1_5 SHA-256) with `x5t`. Either lets Entra find the uploaded certificate.
//!
//! azure_identity's own certificate credential needs OpenSSL (PKCS#12); signing the JWT here
//! with aws-lc-rs (already in the tree through rustls) keeps one crypto backend and no
//! OpenSSL. Claims: `aud` = the token endpoint, `iss` = `sub` = client id, random `jti`,
//! `nbf`/`iat` now, `exp` in 10 minutes. A fresh assertion is signed for every token
//! request, so none outlives its use.

use std::fmt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RSA_PSS_SHA256, RsaKeyPair};
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

/// How client assertions are signed; see the module documentation for the sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AssertionAlgorithm {
    /// `alg: PS256` with `x5t#S256`: Microsoft's current documentation.
    #[default]
    Ps256,
    /// `alg: RS256` with `x5t` (SHA-1): the earlier documentation and Microsoft's Rust SDK.
    Rs256,
}

/// Signs client assertions with the app's certificate key. `Debug` shows the client id and
/// the thumbprint only, never the key.
pub struct CertificateAssertion {
    client_id: String,
    token_url: String,
    thumbprint_s256: String,
    thumbprint_sha1: String,
    algorithm: AssertionAlgorithm,
    key: RsaKeyPair,
    rng: SystemRandom,
}

impl fmt::Debug for CertificateAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAssertion")
            .field("client_id", &self.client_id)
            .field("token_url", &self.token_url)
            .field("x5t#S256", &self.thumbprint_s256)
            .field("algorithm", &self.algorithm)
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
            _ => {
                return Err(
                    "the private key is not an RSA key (Entra needs PS256 or RS256)".into(),
                );
            }
        }
        .map_err(|_| "the private key is not a usable RSA key (2048 bits or more)".to_string())?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.as_ref());
        let sha1 =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, cert.as_ref());
        Ok(Self {
            client_id: client_id.to_owned(),
            token_url: token_url.to_owned(),
            thumbprint_s256: URL_SAFE_NO_PAD.encode(digest.as_ref()),
            thumbprint_sha1: URL_SAFE_NO_PAD.encode(sha1.as_ref()),
            algorithm: AssertionAlgorithm::default(),
            key,
            rng: SystemRandom::new(),
        })
    }

    /// The same signer with another algorithm.
    pub fn with_algorithm(mut self, algorithm: AssertionAlgorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    pub fn algorithm(&self) -> AssertionAlgorithm {
        self.algorithm
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
        let (header, padding, alg): (_, &'static dyn aws_lc_rs::signature::RsaEncoding, _) =
            match self.algorithm {
                AssertionAlgorithm::Ps256 => (
                    json!({"alg": "PS256", "typ": "JWT", "x5t#S256": self.thumbprint_s256}),
                    &RSA_PSS_SHA256,
                    "PS256",
                ),
                AssertionAlgorithm::Rs256 => (
                    json!({"alg": "RS256", "typ": "JWT", "x5t": self.thumbprint_sha1}),
                    &RSA_PKCS1_SHA256,
                    "RS256",
                ),
            };
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
            .sign(padding, &self.rng, input.as_bytes(), &mut signature)
            .map_err(|_| format!("{alg} signing failed"))?;
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
        // Current documentation: PS256 with the SHA-256 thumbprint, a PSS signature.
        assert_eq!(h["alg"], "PS256");
        assert_eq!(h["typ"], "JWT");
        assert_eq!(h["x5t#S256"], a.thumbprint_s256());
        assert!(h.get("x5t").is_none(), "{h}");
        assert!(verifies(
            &a,
            &jwt,
            &aws_lc_rs::signature::RSA_PSS_2048_8192_SHA256
        ));
        assert!(!verifies(
            &a,
            &jwt,
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256
        ));
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

    /// Whether the JWT's signature verifies with the signer's public key under `alg`.
    fn verifies(
        a: &CertificateAssertion,
        jwt: &str,
        alg: &'static dyn aws_lc_rs::signature::VerificationAlgorithm,
    ) -> bool {
        use aws_lc_rs::signature::KeyPair as _;
        let (input, sig) = jwt.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        aws_lc_rs::signature::UnparsedPublicKey::new(alg, a.key.public_key().as_ref())
            .verify(input.as_bytes(), &sig)
            .is_ok()
    }

    #[test]
    fn rs256_is_the_older_documented_pair() {
        let pem = cert_and_key();
        let a = CertificateAssertion::from_pem(pem.as_bytes(), "client", "https://l/t")
            .unwrap()
            .with_algorithm(AssertionAlgorithm::Rs256);
        let jwt = a.sign().unwrap();
        let h = part(&jwt, 0);
        assert_eq!(h["alg"], "RS256");
        assert!(h.get("x5t#S256").is_none(), "{h}");
        // SHA-1 of the DER: 20 bytes, 27 base64url characters.
        assert_eq!(h["x5t"].as_str().unwrap().len(), 27);
        assert!(verifies(
            &a,
            &jwt,
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256
        ));
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
