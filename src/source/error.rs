//! Errors of the LDAP source.
//!
//! Every variant names where it happened (the URL, the base DN) and, where the server
//! answered, its result code and message. None of them carries the bind password: the
//! password is only ever handed to the bind call, and server messages are scrubbed of it
//! anyway (see [`redact`]).

use std::error::Error as StdError;
use std::path::PathBuf;

/// Why reading from LDAP failed. A read that could not return every matching entry is
/// always one of these, never a shorter list.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The URL cannot be used (not `ldap://` or `ldaps://`, StartTLS with `ldaps://`, …).
    #[error("LDAP URL `{url}` cannot be used: {message}")]
    Url { url: String, message: String },

    /// The extra trust anchor in `ldap.ca_file` could not be loaded.
    #[error("cannot use CA file {}: {message}", path.display())]
    CaFile { path: PathBuf, message: String },

    /// No connection: DNS, TCP, refused, connect timeout.
    #[error("cannot connect to {url}: {message}")]
    Connect { url: String, message: String },

    /// TLS (LDAPS or StartTLS) failed, most often certificate verification. `message` says
    /// in words what is wrong and what to do (see [`tls_refusal`]).
    #[error("TLS with {url} failed: {message}")]
    Tls { url: String, message: String },

    /// The simple bind was refused.
    #[error("bind to {url} as {bind_dn} failed: {} (rc {rc}){}", rc_name(*rc), detail(message))]
    Bind {
        url: String,
        bind_dn: String,
        rc: u32,
        message: String,
    },

    /// A configured filter does not parse.
    #[error("LDAP filter `{filter}` is not valid")]
    Filter { filter: String },

    /// The base DN does not exist (result code 32, noSuchObject).
    #[error("base DN `{base_dn}` does not exist on {url}{}", detail(message))]
    NoSuchBase {
        url: String,
        base_dn: String,
        message: String,
    },

    /// The server stopped early because of a size, time or administrative limit.
    #[error(
        "incomplete read of `{base_dn}` on {url}: {} (rc {rc}) after {entries} entries{}; \
         a partial result is never used",
        rc_name(*rc),
        detail(message)
    )]
    Limit {
        url: String,
        base_dn: String,
        rc: u32,
        entries: usize,
        message: String,
    },

    /// A referral (result code 10) or search continuation references, which are not
    /// followed: the entries behind them would be missing from the result.
    #[error(
        "search of `{base_dn}` on {url} returned referrals that are not followed ({}); \
         entries behind them would be missing",
        if refs.is_empty() { "no URL given".to_owned() } else { refs.join(", ") }
    )]
    Referral {
        url: String,
        base_dn: String,
        refs: Vec<String>,
    },

    /// The server sent an entry that is not a well-formed SearchResultEntry.
    #[error(
        "search of `{base_dn}` on {url} returned an entry that cannot be read: {message}; \
         a partial result is never used"
    )]
    Malformed {
        url: String,
        base_dn: String,
        message: String,
    },

    /// The connection broke while a search was running.
    #[error(
        "connection to {url} was lost while reading `{base_dn}` after {entries} entries: {message}"
    )]
    Dropped {
        url: String,
        base_dn: String,
        entries: usize,
        message: String,
    },

    /// The server did not answer in time (client-side timeout).
    #[error("{url} did not answer within {seconds} s while reading `{base_dn}`")]
    Timeout {
        url: String,
        base_dn: String,
        seconds: u64,
    },

    /// A modify (`migrate cutover --apply`) the server refused or did not answer.
    #[error("modifying `{dn}` on {url} failed: {} ({rc}){}{}", rc_name(*rc), detail(message), modify_hint(*rc))]
    Modify {
        url: String,
        dn: String,
        rc: u32,
        message: String,
    },

    /// Any other non-zero result code.
    #[error("search of `{base_dn}` on {url} failed: {} (rc {rc}){}", rc_name(*rc), detail(message))]
    Search {
        url: String,
        base_dn: String,
        rc: u32,
        message: String,
    },
}

impl SourceError {
    /// The LDAP result code the server sent, when there was one.
    pub fn rc(&self) -> Option<u32> {
        match self {
            Self::Bind { rc, .. }
            | Self::Limit { rc, .. }
            | Self::Search { rc, .. }
            | Self::Modify { rc, .. } => Some(*rc),
            Self::NoSuchBase { .. } => Some(32),
            Self::Referral { .. } => Some(10),
            _ => None,
        }
    }

    /// True when the read stopped at a server limit (size, time, administrative).
    pub fn is_limit(&self) -> bool {
        matches!(self, Self::Limit { .. })
    }
}

fn detail(message: &str) -> String {
    let m = message.trim();
    if m.is_empty() {
        String::new()
    } else {
        format!(": {m}")
    }
}

/// The rustls error somewhere in `error`'s chain of causes, if any. `std::io::Error` needs
/// its own step: its `source()` skips the error it wraps, which is where tokio-rustls puts
/// the handshake failure.
pub(crate) fn find_rustls<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            && let Some(found) = find_rustls(inner)
        {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// A TLS refusal in words: what is wrong (mostly with the server's certificate) and what to
/// do about it, instead of a library's Debug output such as
/// `Other(OtherError(UnsupportedCertVersion))`, which leaves an administrator guessing.
pub fn tls_refusal(error: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    use rustls::Error as E;
    let cert = match error {
        E::InvalidCertificate(c) => c,
        E::NoCertificatesPresented => {
            return "the server sent no certificate: configure TLSCertificateFile and \
                    TLSCertificateKeyFile on the server"
                .into();
        }
        E::PeerIncompatible(why) => {
            return format!(
                "the server speaks no TLS this client accepts ({why:?}): enable TLS 1.2 or 1.3 \
                 with a current cipher suite on the server"
            );
        }
        E::AlertReceived(alert) => {
            return format!(
                "the server ended the TLS handshake with the alert {alert:?}: its TLS \
                 configuration (certificate, key, protocols) is likely broken; see its log"
            );
        }
        other => return format!("the TLS handshake failed: {other}"),
    };
    match cert {
        C::Other(other) => match other.0.downcast_ref::<webpki::Error>() {
            Some(webpki::Error::UnsupportedCertVersion) => "the server's certificate is X.509 \
                version 1; only version 3 certificates are accepted: reissue it with v3 \
                extensions (subjectAltName, basicConstraints)"
                .into(),
            Some(webpki::Error::CaUsedAsEndEntity) => "the server presents a CA certificate \
                (basicConstraints CA:TRUE) as its own: reissue it as an end-entity certificate \
                with CA:FALSE"
                .into(),
            Some(webpki::Error::ExtensionValueInvalid) => {
                "the server's certificate has an extension that cannot be parsed: reissue it".into()
            }
            Some(e) => format!(
                "the server's certificate was refused ({e:?}): check it with `openssl s_client \
                 -connect HOST:PORT -showcerts` and reissue it"
            ),
            None => format!(
                "the server's certificate was refused ({other}): check it with `openssl \
                 s_client -connect HOST:PORT -showcerts`"
            ),
        },
        C::UnknownIssuer => "the server's certificate is not signed by a CA this host trusts: \
            set ldap.ca_file to the PEM file of the CA that signed it"
            .into(),
        C::NotValidForName => "the server's certificate does not name the host in ldap.url: \
            use a host name the certificate lists, or reissue it with that name in \
            subjectAltName"
            .into(),
        C::NotValidForNameContext {
            expected,
            presented,
        } => format!(
            "the server's certificate does not name {} (the host in ldap.url){}: use a host name \
             the certificate lists, or reissue it with that name in subjectAltName",
            expected.to_str(),
            if presented.is_empty() {
                "; it lists no subjectAltName at all".to_owned()
            } else {
                format!("; it names {}", presented.join(", "))
            }
        ),
        C::Expired => "the server's certificate has expired: renew it on the server".into(),
        C::ExpiredContext { not_after, .. } => format!(
            "the server's certificate expired on {}: renew it on the server",
            date(not_after.as_secs())
        ),
        C::NotValidYet => "the server's certificate is not valid yet: check the clocks of this \
            host and of the server"
            .into(),
        C::NotValidYetContext { not_before, .. } => format!(
            "the server's certificate is not valid before {}: check the clocks of this host and \
             of the server",
            date(not_before.as_secs())
        ),
        C::BadSignature => "the server's certificate has a signature that does not match its \
            issuer's key: the server sends a wrong chain or the certificate was altered; fix \
            the certificate files on the server or reissue it"
            .into(),
        C::BadEncoding => "the server's certificate cannot be parsed (bad DER encoding): \
            reissue it"
            .into(),
        C::Revoked => "the server's certificate has been revoked: reissue it".into(),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => "the server's certificate is \
            not for TLS servers: reissue it with extendedKeyUsage serverAuth (or without \
            extendedKeyUsage)"
            .into(),
        #[allow(deprecated, reason = "older rustls paths still produce it")]
        C::UnsupportedSignatureAlgorithm
        | C::UnsupportedSignatureAlgorithmContext { .. }
        | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => "the server's \
            certificate is signed with an algorithm that is not accepted (for example SHA-1 or \
            MD5): reissue it signed with SHA-256 or better"
            .into(),
        other => format!(
            "the server's certificate was refused ({other}): check it with `openssl s_client \
             -connect HOST:PORT -showcerts`"
        ),
    }
}

/// A Unix time as an RFC 3339 date (UTC), for certificate validity in messages.
fn date(secs: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The RFC 4511 name of an LDAP result code.
pub fn rc_name(rc: u32) -> &'static str {
    match rc {
        0 => "success",
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        7 => "authMethodNotSupported",
        8 => "strongerAuthRequired",
        10 => "referral",
        11 => "adminLimitExceeded",
        12 => "unavailableCriticalExtension",
        13 => "confidentialityRequired",
        16 => "noSuchAttribute",
        17 => "undefinedAttributeType",
        18 => "inappropriateMatching",
        19 => "constraintViolation",
        20 => "attributeOrValueExists",
        21 => "invalidAttributeSyntax",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        54 => "loopDetect",
        64 => "namingViolation",
        65 => "objectClassViolation",
        66 => "notAllowedOnNonLeaf",
        67 => "notAllowedOnRDN",
        68 => "entryAlreadyExists",
        69 => "objectClassModsProhibited",
        80 => "other",
        _ => "unknown result code",
    }
}

/// What a modify's result code means for the entry (RFC 4511 appendix A), when it is not
/// plain from the name.
fn modify_hint(rc: u32) -> &'static str {
    match rc {
        65 => {
            ": the entry lacks an objectClass that allows it (add one that allows the attribute, or map ldap.attributes.forward to an attribute the entry may have)"
        }
        50 => ": the write bind (migration.write_bind_dn) may not change this attribute",
        21 => ": the server's schema does not accept this value for the attribute",
        _ => "",
    }
}

/// Removes `secret` from `text`, so a server or library message can never carry it.
pub(crate) fn redact(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(s) if !s.is_empty() && text.contains(s) => text.replace(s, "[redacted]"),
        _ => text.to_owned(),
    }
}

/// The URL as shown in messages: any `user:password@` part is dropped.
pub(crate) fn display_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_place_and_code() {
        let e = SourceError::Limit {
            url: "ldap://ldap.example.edu".into(),
            base_dn: "ou=people,dc=example,dc=edu".into(),
            rc: 4,
            entries: 20,
            message: String::new(),
        };
        let s = e.to_string();
        assert!(s.contains("ldap://ldap.example.edu"), "{s}");
        assert!(s.contains("ou=people,dc=example,dc=edu"), "{s}");
        assert!(s.contains("sizeLimitExceeded (rc 4)"), "{s}");
        assert!(s.contains("after 20 entries"), "{s}");
        assert!(e.is_limit());
        assert_eq!(e.rc(), Some(4));
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(
            redact("bad password hunter2!", Some("hunter2")),
            "bad password [redacted]!"
        );
        assert_eq!(redact("nothing", Some("")), "nothing");
        assert_eq!(redact("nothing", None), "nothing");
        assert_eq!(
            display_url("ldaps://u:pw@ldap.example.edu:636/dc=x"),
            "ldaps://ldap.example.edu:636/dc=x"
        );
        assert_eq!(display_url("ldap://127.0.0.1:389"), "ldap://127.0.0.1:389");
    }

    fn v1_refusal() -> rustls::Error {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
            std::sync::Arc::new(webpki::Error::UnsupportedCertVersion),
        )))
    }

    #[test]
    fn certificate_refusals_are_sentences_that_say_what_to_do() {
        use rustls::CertificateError as C;
        let said = |e: rustls::Error| tls_refusal(&e);
        let v1 = said(v1_refusal());
        assert!(v1.contains("X.509 version 1"), "{v1}");
        assert!(v1.contains("reissue it with v3 extensions"), "{v1}");
        assert!(!v1.contains("OtherError"), "{v1}");

        let unknown = said(C::UnknownIssuer.into());
        assert!(
            unknown.contains("not signed by a CA this host trusts"),
            "{unknown}"
        );
        assert!(unknown.contains("ldap.ca_file"), "{unknown}");

        let name = said(
            C::NotValidForNameContext {
                expected: rustls::pki_types::ServerName::try_from("ldap.example.edu")
                    .unwrap()
                    .to_owned(),
                presented: vec!["DnsName(\"other.example.edu\")".into()],
            }
            .into(),
        );
        assert!(name.contains("does not name ldap.example.edu"), "{name}");
        assert!(name.contains("other.example.edu"), "{name}");
        assert!(said(C::NotValidForName.into()).contains("subjectAltName"));

        let expired = said(
            C::ExpiredContext {
                time: rustls::pki_types::UnixTime::since_unix_epoch(
                    std::time::Duration::from_secs(1_800_000_000),
                ),
                not_after: rustls::pki_types::UnixTime::since_unix_epoch(
                    std::time::Duration::from_secs(1_788_220_800),
                ),
            }
            .into(),
        );
        assert!(
            expired.contains("expired on 2026-09-01T00:00:00Z"),
            "{expired}"
        );
        assert!(expired.contains("renew it"), "{expired}");
        assert!(said(C::Expired.into()).contains("has expired"));

        let early = said(
            C::NotValidYetContext {
                time: rustls::pki_types::UnixTime::since_unix_epoch(
                    std::time::Duration::from_secs(0),
                ),
                not_before: rustls::pki_types::UnixTime::since_unix_epoch(
                    std::time::Duration::from_secs(1_788_220_800),
                ),
            }
            .into(),
        );
        assert!(early.contains("not valid before 2026-09-01"), "{early}");
        assert!(early.contains("clocks"), "{early}");
        assert!(said(C::NotValidYet.into()).contains("not valid yet"));

        let sig = said(C::BadSignature.into());
        assert!(sig.contains("signature that does not match"), "{sig}");

        // The rest: still a sentence about the certificate, never a bare Debug dump.
        let other = said(C::UnknownRevocationStatus.into());
        assert!(
            other.starts_with("the server's certificate was refused"),
            "{other}"
        );
        let ca = said(rustls::Error::InvalidCertificate(C::Other(
            rustls::OtherError(std::sync::Arc::new(webpki::Error::CaUsedAsEndEntity)),
        )));
        assert!(ca.contains("CA certificate"), "{ca}");
        let handshake = said(rustls::Error::HandshakeNotComplete);
        assert!(
            handshake.starts_with("the TLS handshake failed"),
            "{handshake}"
        );
    }

    #[test]
    fn the_rustls_error_is_found_behind_io_and_ldap_errors() {
        // tokio-rustls hands the handshake failure over inside an io::Error, whose
        // `source()` skips it; ldap3 wraps that io::Error once more.
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, v1_refusal());
        let ldap = ldap3::LdapError::from(io);
        let found = find_rustls(&ldap).expect("found by type");
        assert!(tls_refusal(found).contains("X.509 version 1"));

        let direct = ldap3::LdapError::from(v1_refusal());
        assert!(find_rustls(&direct).is_some());

        let unrelated = ldap3::LdapError::from(std::io::Error::other("connection reset"));
        assert!(find_rustls(&unrelated).is_none());

        let e = SourceError::Tls {
            url: "ldaps://ldap.example.edu:636".into(),
            message: tls_refusal(found),
        };
        let s = e.to_string();
        assert!(s.starts_with("TLS with ldaps://ldap.example.edu:636 failed: the server's certificate is X.509 version 1"), "{s}");
    }
}
