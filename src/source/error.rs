//! Errors of the LDAP source.
//!
//! Every variant names where it happened (the URL, the base DN) and, where the server
//! answered, its result code and message. None of them carries the bind password: the
//! password is only ever handed to the bind call, and server messages are scrubbed of it
//! anyway (see [`redact`]).

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

    /// TLS (LDAPS or StartTLS) failed, most often certificate verification.
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
            Self::Bind { rc, .. } | Self::Limit { rc, .. } | Self::Search { rc, .. } => Some(*rc),
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
        21 => "invalidAttributeSyntax",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        80 => "other",
        _ => "unknown result code",
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
}
