//! The four mail-flow connectors of the Linux hybrid (issue 12, TENANT_FACTS "Connectors"):
//! what they should look like, how a tenant differs, the PowerShell each change stands for,
//! how any tenant's connectors measure up, and the Postfix side to match.
//!
//! Everything here is pure and synchronous; `commands::connectors` reads the tenant and writes.
//!
//! - [`shape`]: the desired connectors from `[connectors]` and `[tenant]`;
//! - [`diff`]: desired against `Get-InboundConnector` / `Get-OutboundConnector`, with the
//!   ownership rules (what ldap2exo may change);
//! - [`powershell`]: rendering a cmdlet call as PowerShell;
//! - [`audit`]: the checks of the recommended shape for any tenant;
//! - [`postfix`]: the on-prem Postfix snippet.

pub mod audit;
pub mod diff;
pub mod postfix;
pub mod powershell;
pub mod shape;

use serde_json::Value;

pub use audit::{Finding, Status, audit};
pub use diff::{Action, Change, Item, diff};
pub use shape::{Desired, Role, desired};

/// What every connector ldap2exo made carries in its `Comment`; with the name prefix it marks
/// a connector as ldap2exo's to change.
pub const MARKER: &str = "Managed by ldap2exo";

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorsError {
    /// A write would put `*` in RecipientDomains of an OnPremises connector: mail for every
    /// domain would go to on-prem, and back, in a loop (TENANT_FACTS "Connectors").
    #[error(
        "refusing {cmdlet} on `{name}`: `*` in RecipientDomains of an OnPremises connector would send all mail to on-prem"
    )]
    StarOnPremises { cmdlet: String, name: String },
}

/// Inbound (`*-InboundConnector`) or outbound (`*-OutboundConnector`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    /// `InboundConnector` / `OutboundConnector`, the noun of the cmdlets.
    pub fn noun(self) -> &'static str {
        match self {
            Direction::Inbound => "InboundConnector",
            Direction::Outbound => "OutboundConnector",
        }
    }
}

/// Refuses a `New-`/`Set-OutboundConnector` whose result would route `*` on an OnPremises
/// connector. `params` are the call's parameters; `existing` the connector a `Set-` changes.
/// Applies whatever the desired shape says, as a last guard before the tenant is written.
pub fn guard_star(
    cmdlet: &str,
    params: &serde_json::Map<String, Value>,
    existing: Option<&Value>,
) -> Result<(), ConnectorsError> {
    if !cmdlet.ends_with("OutboundConnector") {
        return Ok(());
    }
    let pick = |k: &str| {
        params
            .get(k)
            .or_else(|| existing.and_then(|e| e.get(k)))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let on_prem = pick("ConnectorType")
        .as_str()
        .is_some_and(|t| t.eq_ignore_ascii_case("OnPremises"));
    let star = strings(&pick("RecipientDomains"))
        .iter()
        .any(|d| bare_domain(d) == "*");
    if on_prem && star {
        let name = params
            .get("Identity")
            .or_else(|| params.get("Name"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        return Err(ConnectorsError::StarOnPremises {
            cmdlet: cmdlet.to_owned(),
            name,
        });
    }
    Ok(())
}

/// The strings of a list property (a lone string counts as a one-element list; null as empty).
pub fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Value::String(s) if !s.is_empty() => vec![s.clone()],
        _ => vec![],
    }
}

/// A domain as written in an address space: live `Get-InboundConnector` output shows
/// `SenderDomains` as `smtp:*;1` (type, domain, cost); the bare domain is compared.
pub fn bare_domain(d: &str) -> String {
    let d = d.trim();
    let d = d
        .split_once(':')
        .filter(|(t, _)| t.eq_ignore_ascii_case("smtp"))
        .map_or(d, |(_, rest)| rest);
    let d = d.split_once(';').map_or(d, |(dom, _)| dom);
    d.to_ascii_lowercase()
}

/// A connector property's string value (empty is none).
pub fn text<'a>(c: &'a Value, k: &str) -> Option<&'a str> {
    c.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// A connector property's boolean value (absent is false).
pub fn flag(c: &Value, k: &str) -> bool {
    c.get(k).and_then(Value::as_bool) == Some(true)
}

/// A connector's Name (or Identity).
pub fn name_of(c: &Value) -> &str {
    text(c, "Name")
        .or_else(|| text(c, "Identity"))
        .unwrap_or("")
}

/// Whether `c` is a connector ldap2exo made with this `prefix`: its name starts with the
/// prefix and its Comment carries [`MARKER`].
pub fn is_ours(c: &Value, prefix: &str) -> bool {
    let name = name_of(c).to_ascii_lowercase();
    name.starts_with(&prefix.to_ascii_lowercase())
        && text(c, "Comment").is_some_and(|m| m.contains(MARKER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn address_space_forms_compare_bare() {
        assert_eq!(bare_domain("smtp:*;1"), "*");
        assert_eq!(bare_domain("SMTP:Example.EDU;1"), "example.edu");
        assert_eq!(bare_domain("example.edu"), "example.edu");
    }

    #[test]
    fn the_guard_refuses_star_on_premises_whatever_the_shape_says() {
        let p = json!({"Name": "x", "ConnectorType": "OnPremises", "RecipientDomains": ["*"]});
        let p = p.as_object().unwrap();
        assert!(guard_star("New-OutboundConnector", p, None).is_err());
        // A Set- that only adds `*` to an existing OnPremises connector.
        let existing =
            json!({"Name": "x", "ConnectorType": "OnPremises", "RecipientDomains": ["a.edu"]});
        let p = json!({"Identity": "x", "RecipientDomains": ["a.edu", "smtp:*;1"]});
        assert!(
            guard_star(
                "Set-OutboundConnector",
                p.as_object().unwrap(),
                Some(&existing)
            )
            .is_err()
        );
        let p = json!({"Name": "y", "ConnectorType": "Partner", "RecipientDomains": ["*"]});
        assert!(guard_star("New-OutboundConnector", p.as_object().unwrap(), None).is_ok());
    }
}
