//! Validated identifiers that travel through the whole pipeline.
//!
//! Each newtype can only be built through a constructor that checks what the tenant will
//! accept, so code further down never has to ask "is this a real address?" again.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a value is not a valid identifier. The message is meant for a quarantine report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("is empty")]
    Empty,
    #[error("`{0}` is too long ({1} characters, at most {2})")]
    TooLong(String, usize, usize),
    #[error("`{0}` is not an e-mail address ({1})")]
    BadAddress(String, &'static str),
    #[error("`{0}` contains a control character")]
    ControlCharacter(String),
}

/// The stable key of a person: by default the LDAP `entryUUID`.
///
/// A rename in LDAP (new uid, new mail) keeps the anchor, so it is an update and never a
/// delete followed by a create.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Anchor(String);

impl Anchor {
    /// The stamp value written into `extensionAttribute15` is `ldap2exo:<anchor>`, and
    /// extension attributes hold at most 1024 characters.
    pub const MAX_LEN: usize = 1000;

    pub fn new(value: &str) -> Result<Self, IdError> {
        let value = value.trim();
        if value.is_empty() {
            return Err(IdError::Empty);
        }
        if value.chars().any(char::is_control) {
            return Err(IdError::ControlCharacter(value.to_owned()));
        }
        let len = value.chars().count();
        if len > Self::MAX_LEN {
            return Err(IdError::TooLong(value.to_owned(), len, Self::MAX_LEN));
        }
        // entryUUID compares case-insensitively; keep one spelling so the anchor is stable.
        Ok(Self(value.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Anchor {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<Anchor> for String {
    fn from(value: Anchor) -> Self {
        value.0
    }
}

impl fmt::Display for Anchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An SMTP address as Exchange Online accepts it in `EmailAddresses` / `proxyAddresses`.
///
/// Exchange compares addresses case-insensitively, so the whole address is kept in lower case:
/// two spellings of one address must never look like two addresses in a diff.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SmtpAddress(String);

/// Characters RFC 5322 allows in a dot-atom local part. Exchange accepts the same set.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

/// Checks a dot-atom: no empty atoms, so no leading, trailing or doubled dots.
fn is_dot_atom(s: &str, allowed: impl Fn(char) -> bool) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(&allowed))
}

impl SmtpAddress {
    /// RFC 5321: local part at most 64 octets, the whole path at most 254.
    pub const MAX_LOCAL: usize = 64;
    pub const MAX_LEN: usize = 254;

    pub fn parse(value: &str) -> Result<Self, IdError> {
        let value = value.trim();
        if value.is_empty() {
            return Err(IdError::Empty);
        }
        let bad = |why| IdError::BadAddress(value.to_owned(), why);
        let (local, domain) = value.rsplit_once('@').ok_or_else(|| bad("no @"))?;
        if local.is_empty() {
            return Err(bad("empty local part"));
        }
        if !local.is_ascii() {
            return Err(bad(
                "non-ASCII local part; Exchange Online does not accept it",
            ));
        }
        if !is_dot_atom(local, is_atext) {
            return Err(bad(
                "local part has a character or dot Exchange Online refuses",
            ));
        }
        if local.len() > Self::MAX_LOCAL {
            return Err(bad("local part longer than 64 characters"));
        }
        if !is_domain(domain) {
            return Err(bad("domain is not a valid DNS name"));
        }
        if value.len() > Self::MAX_LEN {
            return Err(IdError::TooLong(
                value.to_owned(),
                value.len(),
                Self::MAX_LEN,
            ));
        }
        Ok(Self(value.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn local_part(&self) -> &str {
        self.0.rsplit_once('@').map(|(l, _)| l).unwrap_or(&self.0)
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
    }
}

/// A DNS host name: labels of letters, digits and inner hyphens, at least two labels.
pub fn is_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && domain.len() <= 253
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

impl TryFrom<String> for SmtpAddress {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<SmtpAddress> for String {
    fn from(value: SmtpAddress) -> Self {
        value.0
    }
}

impl fmt::Display for SmtpAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user principal name in Entra ID: `<local>@<verified domain>`.
///
/// Entra allows letters, digits and `' . - _ ! # ^ ~` in the local part, at most 64 of them,
/// and no dot at either end. Whether the domain is verified is checked against the
/// configuration by `desired`, not here.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Upn(String);

impl Upn {
    pub const MAX_LOCAL: usize = 64;
    pub const MAX_LEN: usize = 113;

    pub fn new(local: &str, domain: &str) -> Result<Self, IdError> {
        Self::parse(&format!("{local}@{domain}"))
    }

    pub fn parse(value: &str) -> Result<Self, IdError> {
        let value = value.trim();
        if value.is_empty() {
            return Err(IdError::Empty);
        }
        let bad = |why| IdError::BadAddress(value.to_owned(), why);
        let (local, domain) = value.rsplit_once('@').ok_or_else(|| bad("no @"))?;
        let upn_char = |c: char| c.is_ascii_alphanumeric() || "'-_!#^~".contains(c);
        if !is_dot_atom(local, upn_char) {
            return Err(bad(
                "user name has a character or dot Entra ID refuses in a UPN",
            ));
        }
        if local.len() > Self::MAX_LOCAL {
            return Err(bad("user name longer than 64 characters"));
        }
        if !is_domain(domain) {
            return Err(bad("domain is not a valid DNS name"));
        }
        if value.len() > Self::MAX_LEN {
            return Err(IdError::TooLong(
                value.to_owned(),
                value.len(),
                Self::MAX_LEN,
            ));
        }
        Ok(Self(value.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Upn {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Upn> for String {
    fn from(value: Upn) -> Self {
        value.0
    }
}

impl fmt::Display for Upn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalised_and_checked() {
        let a = SmtpAddress::parse(" Jane.Doe@Example.EDU ").unwrap();
        assert_eq!(a.as_str(), "jane.doe@example.edu");
        assert_eq!(a.local_part(), "jane.doe");
        assert_eq!(a.domain(), "example.edu");
        for bad in [
            "",
            "jane",
            "@example.edu",
            "jane@",
            "jane..doe@example.edu",
            ".jane@example.edu",
            "jane@example",
            "jane doe@example.edu",
            "jürgen@example.edu",
            "jane@-x.edu",
            "jane@exa_mple.edu",
        ] {
            assert!(SmtpAddress::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("{}@example.edu", "a".repeat(65));
        assert!(SmtpAddress::parse(&long).is_err());
    }

    #[test]
    fn upn_refuses_what_entra_refuses() {
        assert_eq!(
            Upn::new("o'brien", "Example.edu").unwrap().as_str(),
            "o'brien@example.edu"
        );
        for bad in ["a+b", "a b", "a/b", ".ab", "ab.", "a..b", "a(b)"] {
            assert!(Upn::new(bad, "example.edu").is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn anchor_is_trimmed_and_lowercased() {
        assert_eq!(Anchor::new(" ABC-1 ").unwrap().as_str(), "abc-1");
        assert_eq!(Anchor::new("  "), Err(IdError::Empty));
        assert!(Anchor::new("a\nb").is_err());
    }
}
