//! The desired connectors against the tenant's: per connector create, change, adopt, ok,
//! refused or remove, and the cmdlet call each stands for.
//!
//! Ownership: ldap2exo changes only connectors it made (name with the prefix and
//! [`super::MARKER`] in the Comment). A same-named connector without the marker, or another
//! connector that would compete with a desired one (the same certificate on an OnPremises
//! inbound connector, `*` on an inbound Partner connector, overlapping recipient domains on an
//! outbound one), is refused unless named in `--adopt`; adopting renames it and sets it to the
//! desired shape. A connector ldap2exo made for a role no longer configured (the outbound
//! Partner `*` after `route_internet_via_on_prem` is turned off) is removed.

use serde_json::{Map, Value, json};

use super::shape::{Desired, Role};
use super::{Direction, bare_domain, flag, is_ours, name_of, strings, text};

/// What `apply` does for one desired connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Change,
    Adopt,
    Ok,
    Refused,
    /// A connector ldap2exo made for a role no longer wanted (`route_internet_via_on_prem`
    /// turned off).
    Remove,
}

/// One property that differs: the tenant's value and the wanted one.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub property: &'static str,
    pub before: Value,
    pub after: Value,
}

/// One desired connector and what to do about it.
#[derive(Debug, Clone)]
pub struct Item {
    pub desired: Desired,
    pub action: Action,
    /// The tenant's connector this item changes (same name, or the adopted one).
    pub existing: Option<Value>,
    pub changes: Vec<Change>,
    /// Why it is refused.
    pub reason: Option<String>,
}

impl Item {
    /// The cmdlet and parameters this item stands for; `None` for ok and refused.
    pub fn call(&self) -> Option<(String, Map<String, Value>)> {
        let noun = self.desired.role.direction().noun();
        let mut p = Map::new();
        match self.action {
            Action::Ok | Action::Refused => None,
            Action::Remove => {
                let existing = self.existing.as_ref().map(name_of).unwrap_or_default();
                p.insert("Identity".into(), json!(existing));
                Some((format!("Remove-{noun}"), p))
            }
            Action::Create => {
                p.insert("Name".into(), json!(self.desired.name));
                for (k, v) in &self.desired.params {
                    let empty = v.is_null() || v.as_array().is_some_and(Vec::is_empty);
                    if !empty {
                        p.insert((*k).into(), v.clone());
                    }
                }
                Some((format!("New-{noun}"), p))
            }
            Action::Change | Action::Adopt => {
                let existing = self.existing.as_ref().map(name_of).unwrap_or_default();
                p.insert("Identity".into(), json!(existing));
                for c in &self.changes {
                    p.insert(c.property.into(), c.after.clone());
                }
                // New-/Set-OutboundConnector: SmartHosts "must be specified on the same
                // command line" as UseMXRecord $false.
                if p.contains_key("UseMXRecord")
                    && let Some(h) = self.desired.get("SmartHosts")
                {
                    p.insert("SmartHosts".into(), h.clone());
                }
                Some((format!("Set-{noun}"), p))
            }
        }
    }
}

/// Compares `desired` with the tenant's connectors. `adopt`: names of foreign connectors the
/// operator allows ldap2exo to take over (`--adopt`).
pub fn diff(
    desired: Vec<Desired>,
    inbound: &[Value],
    outbound: &[Value],
    prefix: &str,
    adopt: &[String],
) -> Vec<Item> {
    let list = |role: Role| match role.direction() {
        Direction::Inbound => inbound,
        Direction::Outbound => outbound,
    };
    let unwanted: Vec<Role> = Role::ALL
        .into_iter()
        .filter(|r| !desired.iter().any(|d| d.role == *r))
        .collect();
    let mut items: Vec<Item> = desired
        .into_iter()
        .map(|d| item(d.clone(), list(d.role), prefix, adopt))
        .collect();
    // Only a connector ldap2exo made (prefix and marker) is ever removed.
    for role in unwanted {
        let name = format!("{prefix} {}", role.suffix());
        if let Some(c) = list(role)
            .iter()
            .find(|c| name_of(c).eq_ignore_ascii_case(&name) && is_ours(c, prefix))
        {
            items.push(Item {
                desired: Desired {
                    role,
                    name,
                    params: vec![],
                },
                action: Action::Remove,
                existing: Some(c.clone()),
                changes: vec![],
                reason: None,
            });
        }
    }
    items
}

fn adopted(adopt: &[String], c: &Value) -> bool {
    adopt.iter().any(|a| a.eq_ignore_ascii_case(name_of(c)))
}

fn item(d: Desired, list: &[Value], prefix: &str, adopt: &[String]) -> Item {
    let same_name = list
        .iter()
        .find(|c| name_of(c).eq_ignore_ascii_case(&d.name));
    // Foreign connectors that would do this connector's job beside it. Two connectors for one
    // job leave it to Exchange which applies, so every rival must go (or be the one adopted).
    let rivals: Vec<&Value> = list
        .iter()
        .filter(|c| !is_ours(c, prefix) && competes(&d, c))
        .filter(|c| !same_name.is_some_and(|n| name_of(n).eq_ignore_ascii_case(name_of(c))))
        .collect();
    let (taken, left): (Vec<&Value>, Vec<&Value>) =
        rivals.into_iter().partition(|c| adopted(adopt, c));
    if !left.is_empty() {
        let reason = format!(
            "{} not made by ldap2exo would compete with it ({}); left alone: remove it, or name it with --adopt to let ldap2exo take it over",
            quoted(&left),
            d.role.describe()
        );
        return refused(d, left.first().map(|c| (*c).clone()), reason);
    }
    let candidates = same_name.iter().count() + taken.len();
    if candidates > 1 {
        let mut all: Vec<&Value> = same_name.into_iter().collect();
        all.extend(taken);
        let reason = format!(
            "{} would all do this job ({}), and one connector can be adopted for it: remove the others by hand, then adopt one",
            quoted(&all),
            d.role.describe()
        );
        return refused(d, all.first().map(|c| (*c).clone()), reason);
    }
    if let Some(c) = same_name {
        if !is_ours(c, prefix) && !adopted(adopt, c) {
            let reason = format!(
                "a connector named `{}` exists but was not made by ldap2exo (no \"{}\" in its Comment); left alone: name it with --adopt to let ldap2exo change it",
                name_of(c),
                super::MARKER
            );
            return refused(d, Some(c.clone()), reason);
        }
        let changes = changes(&d, c, false);
        let action = match (changes.is_empty(), is_ours(c, prefix)) {
            (true, _) => Action::Ok,
            (false, true) => Action::Change,
            (false, false) => Action::Adopt,
        };
        return Item {
            desired: d,
            action,
            existing: Some(c.clone()),
            changes,
            reason: None,
        };
    }
    match taken.first() {
        Some(c) => Item {
            changes: changes(&d, c, true),
            desired: d,
            action: Action::Adopt,
            existing: Some((*c).clone()),
            reason: None,
        },
        None => Item {
            desired: d,
            action: Action::Create,
            existing: None,
            changes: vec![],
            reason: None,
        },
    }
}

fn quoted(connectors: &[&Value]) -> String {
    connectors
        .iter()
        .map(|c| format!("`{}`", name_of(c)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn refused(d: Desired, existing: Option<Value>, reason: String) -> Item {
    Item {
        desired: d,
        action: Action::Refused,
        existing,
        changes: vec![],
        reason: Some(reason),
    }
}

/// The properties of `c` that differ from `d` (with `rename`, the Name too).
pub fn changes(d: &Desired, c: &Value, rename: bool) -> Vec<Change> {
    let mut out = Vec::new();
    if rename && name_of(c) != d.name {
        out.push(Change {
            property: "Name",
            before: json!(name_of(c)),
            after: json!(d.name),
        });
    }
    for (k, want) in &d.params {
        let have = c.get(*k).cloned().unwrap_or(Value::Null);
        if !same(k, want, &have) {
            out.push(Change {
                property: k,
                before: have,
                after: want.clone(),
            });
        }
    }
    out
}

/// Whether the tenant's value `have` is the wanted `want`: lists as case-insensitive sets of
/// bare domains (`smtp:*;1` is `*`), null as false / empty, strings case-insensitive but the
/// Comment.
fn same(k: &str, want: &Value, have: &Value) -> bool {
    match want {
        Value::Array(_) => {
            let set = |v: &Value| {
                let mut s: Vec<String> = strings(v).iter().map(|x| bare_domain(x)).collect();
                s.sort();
                s.dedup();
                s
            };
            set(want) == set(have)
        }
        Value::Bool(b) => have.as_bool().unwrap_or(false) == *b,
        Value::Null => have.is_null() || have.as_str() == Some(""),
        Value::String(s) if k == "Comment" => have.as_str().map(str::trim) == Some(s.trim()),
        Value::String(s) => have.as_str().is_some_and(|h| h.eq_ignore_ascii_case(s)),
        other => other == have,
    }
}

/// Whether `c` (not ldap2exo's) would do the job of `d` beside it.
fn competes(d: &Desired, c: &Value) -> bool {
    let kind = |c: &Value| {
        text(c, "ConnectorType")
            .unwrap_or("Partner")
            .to_ascii_lowercase()
    };
    let domains =
        |v: &Value| -> Vec<String> { strings(v).iter().map(|x| bare_domain(x)).collect() };
    match d.role {
        Role::InboundOnPremises => {
            let want = d.get("TlsSenderCertificateName").and_then(Value::as_str);
            kind(c) == "onpremises"
                && want.is_some_and(|w| {
                    text(c, "TlsSenderCertificateName").is_some_and(|h| h.eq_ignore_ascii_case(w))
                })
        }
        Role::BackDoor => {
            kind(c) == "partner"
                && domains(c.get("SenderDomains").unwrap_or(&Value::Null))
                    .iter()
                    .any(|x| x == "*")
        }
        Role::OutboundOnPremises => {
            let want = domains(d.get("RecipientDomains").unwrap_or(&Value::Null));
            let have = domains(c.get("RecipientDomains").unwrap_or(&Value::Null));
            flag(c, "AllAcceptedDomains")
                || have.iter().any(|h| {
                    h == "*"
                        || want.iter().any(|w| {
                            w == h
                                || h.strip_prefix("*.")
                                    .is_some_and(|s| w.ends_with(&format!(".{s}")))
                        })
                })
        }
        Role::OutboundInternet => domains(c.get("RecipientDomains").unwrap_or(&Value::Null))
            .iter()
            .any(|x| x == "*"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConnectorsConfig, TenantConfig};

    fn tenant() -> TenantConfig {
        toml::from_str(
            r#"accepted_domains = ["example.edu", "staff.example.edu"]
onmicrosoft_domain = "exampleedu.onmicrosoft.com"
routing_domain = "exampleedu.mail.onmicrosoft.com"
upn_domain = "example.edu""#,
        )
        .unwrap()
    }

    fn config(internet: bool) -> ConnectorsConfig {
        ConnectorsConfig {
            smart_host: Some("mx-in.example.edu".into()),
            certificate_name: Some("mail.example.edu".into()),
            on_prem_public_ips: vec![],
            route_internet_via_on_prem: internet,
            close_back_door: true,
            name_prefix: "ldap2exo".into(),
        }
    }

    fn created(d: &Desired) -> Value {
        let item = Item {
            desired: d.clone(),
            action: Action::Create,
            existing: None,
            changes: vec![],
            reason: None,
        };
        let (_, mut p) = item.call().unwrap();
        // What Get- answers: every parameter, the address spaces as live output shows them.
        for (k, v) in &d.params {
            p.entry(k.to_string()).or_insert(v.clone());
        }
        p.insert("SenderDomains".into(), json!(["smtp:*;1"]));
        Value::Object(p)
    }

    #[test]
    fn an_empty_tenant_gets_creates_and_a_created_one_is_ok() {
        let want = super::super::desired(&config(true), &tenant(), None);
        let items = diff(want.clone(), &[], &[], "ldap2exo", &[]);
        assert_eq!(items.len(), 4);
        assert!(items.iter().all(|i| i.action == Action::Create));
        let inbound: Vec<Value> = want[..2].iter().map(created).collect();
        let mut outbound: Vec<Value> = want[2..].iter().map(created).collect();
        for o in &mut outbound {
            o.as_object_mut().unwrap().remove("SenderDomains");
        }
        let items = diff(want, &inbound, &outbound, "ldap2exo", &[]);
        assert!(items.iter().all(|i| i.action == Action::Ok), "{items:#?}");
    }

    #[test]
    fn a_foreign_connector_is_refused_unless_adopted() {
        let want = super::super::desired(&config(false), &tenant(), None);
        let hand = json!({"Name": "To campus", "ConnectorType": "OnPremises",
            "RecipientDomains": ["example.edu"], "UseMXRecord": true, "Comment": null});
        let items = diff(
            want.clone(),
            &[],
            std::slice::from_ref(&hand),
            "ldap2exo",
            &[],
        );
        let out = &items[2];
        assert_eq!(out.action, Action::Refused);
        assert!(out.reason.as_ref().unwrap().contains("`To campus`"));
        let items = diff(want, &[], &[hand], "ldap2exo", &["to campus".into()]);
        let out = &items[2];
        assert_eq!(out.action, Action::Adopt);
        let (cmdlet, p) = out.call().unwrap();
        assert_eq!(cmdlet, "Set-OutboundConnector");
        assert_eq!(p["Identity"], "To campus");
        assert_eq!(p["Name"], "ldap2exo outbound to on-prem");
        assert_eq!(p["SmartHosts"], json!(["mx-in.example.edu"]));
    }

    #[test]
    fn the_outbound_on_prem_connector_checks_the_certificate_name_and_routes_the_migration_domain()
    {
        let want = super::super::desired(&config(false), &tenant(), Some("mbox.example.edu"));
        let out = &want[2];
        assert_eq!(out.role, Role::OutboundOnPremises);
        assert_eq!(out.get("TlsSettings"), Some(&json!("DomainValidation")));
        assert_eq!(out.get("TlsDomain"), Some(&json!("mail.example.edu")));
        assert_eq!(
            out.get("RecipientDomains"),
            Some(&json!([
                "example.edu",
                "staff.example.edu",
                "mbox.example.edu"
            ]))
        );
        let mut default_door = config(false);
        default_door.close_back_door = false;
        let open = super::super::desired(&default_door, &tenant(), None);
        assert!(
            open.iter().all(|d| d.role != Role::BackDoor),
            "the back door is closed only when asked"
        );
        let without = super::super::desired(&config(false), &tenant(), None);
        assert_eq!(
            without[2].get("RecipientDomains"),
            Some(&json!(["example.edu", "staff.example.edu"]))
        );
    }

    #[test]
    fn every_rival_must_go_and_only_one_can_be_adopted() {
        let want = super::super::desired(&config(false), &tenant(), None);
        let to_postfix = json!({"Name": "To Postfix", "ConnectorType": "OnPremises",
            "RecipientDomains": ["example.edu"], "Comment": null});
        let everything = json!({"Name": "Everything out", "ConnectorType": "OnPremises",
            "RecipientDomains": ["smtp:*;1"], "RouteAllMessagesViaOnPremises": true});
        let outbound = [to_postfix, everything];
        let adopt_one = diff(
            want.clone(),
            &[],
            &outbound,
            "ldap2exo",
            &["To Postfix".into()],
        );
        assert_eq!(adopt_one[2].action, Action::Refused);
        assert!(
            adopt_one[2]
                .reason
                .as_ref()
                .unwrap()
                .contains("`Everything out`"),
            "{:?}",
            adopt_one[2].reason
        );
        let adopt_both = diff(
            want.clone(),
            &[],
            &outbound,
            "ldap2exo",
            &["To Postfix".into(), "Everything out".into()],
        );
        assert_eq!(adopt_both[2].action, Action::Refused);
        assert!(
            adopt_both[2]
                .reason
                .as_ref()
                .unwrap()
                .contains("one connector can be adopted"),
            "{:?}",
            adopt_both[2].reason
        );
        // A same-named connector adopted does not hide a second one doing the same job.
        let door = json!({"Name": "ldap2exo inbound back door", "ConnectorType": "Partner",
            "SenderDomains": ["*"], "Enabled": false});
        let allow_all = json!({"Name": "Partner allow all", "ConnectorType": "Partner",
            "SenderDomains": ["smtp:*;1"]});
        let items = diff(
            want,
            &[door, allow_all],
            &[],
            "ldap2exo",
            &["ldap2exo inbound back door".into()],
        );
        assert_eq!(items[1].desired.name, "ldap2exo inbound back door");
        assert_eq!(items[1].action, Action::Refused);
        assert!(
            items[1]
                .reason
                .as_ref()
                .unwrap()
                .contains("`Partner allow all`")
        );
    }
}
