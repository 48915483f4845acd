//! source: reads people from OpenLDAP.
//!
//! Knows LDAP (bind, StartTLS/LDAPS, paged search per RFC 2696, filter escaping) and nothing
//! about Exchange. Its one promise: a read either returns every matching entry or fails.
//! A short result from a size or time limit, an unfollowed referral or a dropped connection
//! is an error, because downstream a missing entry means "this person left".

use std::collections::{BTreeMap, BTreeSet};

/// One LDAP entry as read, before any mapping.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RawEntry {
    pub dn: String,
    /// Attribute values by attribute name in lower case (LDAP names are case-insensitive),
    /// in the order the server returned them. An attribute the entry carries as several
    /// instances (a directory loaded with `slapadd -q` can) has the values of all of them.
    pub attrs: BTreeMap<String, Vec<String>>,
    /// Lower-case names of requested attributes that had values that are not UTF-8.
    pub binary: BTreeSet<String>,
    /// The entry also matches `ldap.rules.hidden_filter`.
    pub hidden: bool,
    /// The entry also matches `ldap.rules.disabled_filter`.
    pub disabled: bool,
}

impl RawEntry {
    /// All values of `attr` (any case); empty when absent.
    pub fn values(&self, attr: &str) -> &[String] {
        with_lower_case(attr, |name| self.attrs.get(name).map(Vec::as_slice)).unwrap_or(&[])
    }

    /// The first value of `attr`, if any.
    pub fn first(&self, attr: &str) -> Option<&str> {
        self.values(attr).first().map(String::as_str)
    }

    /// True when `attr` had a value that is not valid UTF-8.
    pub fn is_binary(&self, attr: &str) -> bool {
        !self.binary.is_empty() && with_lower_case(attr, |name| self.binary.contains(name))
    }
}

/// Calls `f` with `name` in ASCII lower case, without allocating for a usual attribute name
/// (the mapping looks up a dozen per entry, so 600,000 at 50,000 people).
fn with_lower_case<T>(name: &str, f: impl FnOnce(&str) -> T) -> T {
    let mut buf = [0u8; 64];
    match buf.get_mut(..name.len()) {
        Some(lower) => {
            lower.copy_from_slice(name.as_bytes());
            lower.make_ascii_lowercase();
            // ASCII case changes keep UTF-8 valid.
            f(std::str::from_utf8(lower).unwrap_or(name))
        }
        None => f(&name.to_ascii_lowercase()),
    }
}

/// Which people a run reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Everyone the configured filter matches: a full run, which may also plan leavers.
    All,
    /// Just these uids (`sync --only`); nobody else is planned.
    Only(Vec<String>),
}

pub mod content_sync;
mod error;
pub mod filter;
pub mod incremental;
mod reader;

pub use error::{SourceError, rc_name, tls_refusal};
pub use reader::{CheckReport, TlsMode, check, read, read_each, replace_values, search_anchors};
