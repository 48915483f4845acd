//! Mail-flow connectors: `New-`/`Set-`/`Remove-InboundConnector` and
//! `New-`/`Set-`/`Remove-OutboundConnector` over the store's `inbound_connectors` /
//! `outbound_connectors` (JSON objects shaped like `Get-*Connector` output).
//!
//! Parameter names and types follow Microsoft's cmdlet reference pages
//! (learn.microsoft.com/powershell/module/exchange/new-inboundconnector, set-inboundconnector,
//! new-outboundconnector, set-outboundconnector; source MicrosoftDocs/office-docs-powershell
//! `exchange/exchange-ps/exchange/*.md`). Each refusal is listed with its source in the
//! emulator README ("Connectors"); those marked "chosen, unconfirmed" there have no published
//! error text.

use super::ExoError;
use super::cmdlets::{Params, unchanged_warning};
use crate::store::Store;
use serde_json::{Map, Value, json};

/// Which of the two connector lists a cmdlet works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

/// The longest `-Name` (New-OutboundConnector: "The maximum length is 64 characters"; the
/// same limit is assumed for inbound connectors).
const MAX_NAME: usize = 64;

const INBOUND: &[&str] = &[
    "AssociatedAcceptedDomains",
    "CloudServicesMailEnabled",
    "Comment",
    "ConnectorSource",
    "ConnectorType",
    "EFSkipIPs",
    "EFSkipLastIP",
    "EFSkipMailGateway",
    "EFTestMode",
    "EFUsers",
    "Enabled",
    "RequireTls",
    "RestrictDomainsToCertificate",
    "RestrictDomainsToIPAddresses",
    "ScanAndDropRecipients",
    "SenderDomains",
    "SenderIPAddresses",
    "TlsSenderCertificateName",
    "TreatMessagesAsInternal",
    "TrustedOrganizations",
];

const OUTBOUND: &[&str] = &[
    "AllAcceptedDomains",
    "CloudServicesMailEnabled",
    "Comment",
    "ConnectorSource",
    "ConnectorType",
    "Enabled",
    "IsTransportRuleScoped",
    "LinkForModifiedConnector",
    "RecipientDomains",
    "RouteAllMessagesViaOnPremises",
    "SenderRewritingEnabled",
    "SmartHosts",
    "TestMode",
    "TlsDomain",
    "TlsSettings",
    "UseMXRecord",
    "ValidationRecipients",
];

const BOOLS: &[&str] = &[
    "CloudServicesMailEnabled",
    "EFSkipLastIP",
    "EFTestMode",
    "Enabled",
    "RequireTls",
    "RestrictDomainsToCertificate",
    "RestrictDomainsToIPAddresses",
    "TreatMessagesAsInternal",
    "AllAcceptedDomains",
    "IsTransportRuleScoped",
    "RouteAllMessagesViaOnPremises",
    "SenderRewritingEnabled",
    "TestMode",
    "UseMXRecord",
];

const LISTS: &[&str] = &[
    "AssociatedAcceptedDomains",
    "EFSkipIPs",
    "EFSkipMailGateway",
    "EFUsers",
    "ScanAndDropRecipients",
    "SenderDomains",
    "SenderIPAddresses",
    "TrustedOrganizations",
    "RecipientDomains",
    "SmartHosts",
    "ValidationRecipients",
];

impl Direction {
    fn parameters(self) -> &'static [&'static str] {
        match self {
            Direction::Inbound => INBOUND,
            Direction::Outbound => OUTBOUND,
        }
    }

    fn list(self, store: &mut Store) -> &mut Vec<Value> {
        match self {
            Direction::Inbound => &mut store.inbound_connectors,
            Direction::Outbound => &mut store.outbound_connectors,
        }
    }

    /// The properties a new connector has when a parameter is not given.
    fn defaults(self) -> Value {
        match self {
            Direction::Inbound => json!({
                "AssociatedAcceptedDomains": [], "CloudServicesMailEnabled": false,
                "Comment": null, "ConnectorSource": "Default", "ConnectorType": "Partner",
                "EFSkipIPs": [], "EFSkipLastIP": false, "EFSkipMailGateway": [],
                "EFTestMode": false, "EFUsers": [], "Enabled": true, "RequireTls": false,
                "RestrictDomainsToCertificate": false, "RestrictDomainsToIPAddresses": false,
                "ScanAndDropRecipients": [], "SenderDomains": [], "SenderIPAddresses": [],
                "TlsSenderCertificateName": null, "TreatMessagesAsInternal": false,
                "TrustedOrganizations": [],
            }),
            Direction::Outbound => json!({
                "AllAcceptedDomains": false, "CloudServicesMailEnabled": false,
                "Comment": null, "ConnectorSource": "Default", "ConnectorType": "Partner",
                "Enabled": true, "IsTransportRuleScoped": false,
                "LinkForModifiedConnector": null, "RecipientDomains": [],
                "RouteAllMessagesViaOnPremises": false, "SenderRewritingEnabled": false,
                "SmartHosts": [], "TestMode": false, "TlsDomain": null, "TlsSettings": null,
                "UseMXRecord": true, "ValidationRecipients": [],
            }),
        }
    }
}

/// `New-InboundConnector` / `New-OutboundConnector`: answers the new connector.
pub fn new_connector(
    store: &mut Store,
    dir: Direction,
    m: Map<String, Value>,
) -> Result<Value, ExoError> {
    let mut allowed = vec!["Name"];
    allowed.extend_from_slice(dir.parameters());
    let p = Params::new(m, &allowed)?;
    let name = p.required("Name")?;
    check_name(&name)?;
    if dir == Direction::Inbound {
        // New-InboundConnector: `-SenderDomains <MultiValuedProperty>` is mandatory.
        p.required_list("SenderDomains")?;
    }
    if find(dir.list(store), &name).is_some() {
        return Err(ExoError::NameInUse(name));
    }
    let mut c = dir.defaults();
    let guid = store.rng.uuid();
    c["Name"] = json!(name);
    c["Identity"] = json!(name);
    c["Guid"] = json!(guid);
    c["Id"] = json!(name);
    apply(&p, dir, &mut c)?;
    validate(&p, dir, &c)?;
    dir.list(store).push(c.clone());
    store.seq += 1;
    Ok(c)
}

/// `Set-InboundConnector` / `Set-OutboundConnector -Identity`: answers warnings (the
/// unchanged warning when nothing changed).
pub fn set_connector(
    store: &mut Store,
    dir: Direction,
    m: Map<String, Value>,
) -> Result<Vec<String>, ExoError> {
    let mut allowed = vec!["Identity", "Name"];
    allowed.extend_from_slice(dir.parameters());
    let p = Params::new(m, &allowed)?;
    let identity = p.required("Identity")?;
    let i = find(dir.list(store), &identity).ok_or_else(|| ExoError::NotFound(identity.clone()))?;
    let before = dir.list(store)[i].clone();
    let mut c = before.clone();
    if let Some(name) = p.string("Name")? {
        check_name(&name)?;
        let clash = find(dir.list(store), &name).is_some_and(|j| j != i);
        if clash {
            return Err(ExoError::NameInUse(name));
        }
        c["Name"] = json!(name);
        c["Identity"] = json!(name);
        c["Id"] = json!(name);
    }
    apply(&p, dir, &mut c)?;
    validate(&p, dir, &c)?;
    if c == before {
        return Ok(vec![unchanged_warning(&identity)]);
    }
    dir.list(store)[i] = c;
    store.seq += 1;
    Ok(vec![])
}

/// `Remove-InboundConnector` / `Remove-OutboundConnector -Identity`.
pub fn remove_connector(
    store: &mut Store,
    dir: Direction,
    m: Map<String, Value>,
) -> Result<(), ExoError> {
    let p = Params::new(m, &["Identity"])?;
    let identity = p.required("Identity")?;
    let i = find(dir.list(store), &identity).ok_or_else(|| ExoError::NotFound(identity.clone()))?;
    dir.list(store).remove(i);
    store.seq += 1;
    Ok(())
}

/// The connector whose Name, Identity or Guid is `identity` (case-insensitive).
fn find(list: &[Value], identity: &str) -> Option<usize> {
    list.iter().position(|c| {
        ["Name", "Identity", "Guid"].iter().any(|k| {
            c.get(k)
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case(identity))
        })
    })
}

fn check_name(name: &str) -> Result<(), ExoError> {
    if name.chars().count() > MAX_NAME {
        return Err(ExoError::Validation(format!(
            "The length of the property is too long. The maximum length is {MAX_NAME} and the length of the value provided is {}.",
            name.chars().count()
        )));
    }
    Ok(())
}

impl Params {
    fn required_list(&self, k: &str) -> Result<Vec<String>, ExoError> {
        match self.list(k)? {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(ExoError::Parameter(format!(
                "Cannot validate argument on parameter '{k}'. The argument is null or empty. Provide an argument that is not null or empty, and then try the command again."
            ))),
        }
    }
}

/// Copies the given parameters onto `c`, typed and with enums canonicalised.
fn apply(p: &Params, dir: Direction, c: &mut Value) -> Result<(), ExoError> {
    for k in dir.parameters() {
        if !p.has(k) {
            continue;
        }
        let v = if BOOLS.contains(k) {
            json!(p.bool(k)?)
        } else if LISTS.contains(k) {
            json!(p.list(k)?.unwrap_or_default())
        } else {
            match *k {
                "ConnectorType" => json!(enum_value(p, k, &["OnPremises", "Partner"])?),
                "ConnectorSource" => json!(enum_value(
                    p,
                    k,
                    &["Default", "Migrated", "HybridWizard", "AdminUI"]
                )?),
                "TlsSettings" => json!(enum_value(
                    p,
                    k,
                    &[
                        "EncryptionOnly",
                        "CertificateValidation",
                        "DomainValidation"
                    ]
                )?),
                _ => json!(p.string(k)?),
            }
        };
        c[*k] = v;
    }
    Ok(())
}

/// An enum parameter: one of `values` (case-insensitive, answered in its canonical case), or
/// null. The refusal is PowerShell's enum-binding text.
fn enum_value(p: &Params, k: &str, values: &[&str]) -> Result<Option<String>, ExoError> {
    let Some(s) = p.string(k)? else {
        return Ok(None);
    };
    values
        .iter()
        .find(|v| v.eq_ignore_ascii_case(&s))
        .map(|v| Some((*v).to_string()))
        .ok_or_else(|| {
            ExoError::Parameter(format!(
                "Cannot process argument transformation on parameter '{k}'. Cannot convert value \"{s}\" to type \"{k}\". Error: \"Unable to match the identifier name {s} to a valid enumerator name. Specify one of the following enumerator names and try again: {}\"",
                values.join(", ")
            ))
        })
}

fn flag(c: &Value, k: &str) -> bool {
    c[k].as_bool() == Some(true)
}

fn strings(c: &Value, k: &str) -> Vec<String> {
    c[k].as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn text(c: &Value, k: &str) -> Option<String> {
    c[k].as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

/// A domain as connector parameters take it: labels of letters, digits and hyphens, with an
/// optional leading `*.` (the reference pages: "you can't embed a wildcard character").
fn valid_domain(d: &str, star_alone: bool) -> bool {
    if star_alone && d == "*" {
        return true;
    }
    let d = d.strip_prefix("*.").unwrap_or(d);
    !d.is_empty()
        && d.contains('.')
        && d.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn invalid(msg: String) -> ExoError {
    ExoError::Validation(msg)
}

/// The rules between parameters, checked on the resulting connector `c`; `p` tells what the
/// command line itself carried (some rules are "in the same command").
fn validate(p: &Params, dir: Direction, c: &Value) -> Result<(), ExoError> {
    let on_prem = c["ConnectorType"].as_str() == Some("OnPremises");
    match dir {
        Direction::Inbound => {
            // Only the values on the command line: seeded connectors may carry the address
            // space form live output shows (`smtp:*;1`).
            for d in p.list("SenderDomains")?.unwrap_or_default() {
                if !valid_domain(&d, true) {
                    return Err(invalid(format!(
                        "\"{d}\" isn't a valid SMTP domain for SenderDomains. Wildcards are supported only as a leading \"*.\" or as \"*\"."
                    )));
                }
            }
            if let Some(n) = p.string("TlsSenderCertificateName")?
                && !valid_domain(&n, false)
            {
                return Err(invalid(format!(
                    "\"{n}\" isn't a valid value for TlsSenderCertificateName: a valid value is an SMTP domain."
                )));
            }
            if flag(c, "TreatMessagesAsInternal") && !on_prem {
                return Err(invalid("TreatMessagesAsInternal can be set to $true only on a connector whose ConnectorType is OnPremises.".into()));
            }
            if flag(c, "TreatMessagesAsInternal") && flag(c, "CloudServicesMailEnabled") {
                return Err(invalid("TreatMessagesAsInternal can't be set to $true when CloudServicesMailEnabled is $true.".into()));
            }
            if on_prem
                && [
                    "RestrictDomainsToCertificate",
                    "RestrictDomainsToIPAddresses",
                ]
                .iter()
                .any(|k| flag(c, k))
            {
                return Err(invalid("RestrictDomainsToCertificate and RestrictDomainsToIPAddresses apply only to Partner type connectors.".into()));
            }
            if flag(c, "RestrictDomainsToCertificate")
                && text(c, "TlsSenderCertificateName").is_none()
            {
                return Err(invalid("RestrictDomainsToCertificate requires TlsSenderCertificateName: specify the certificate name the sending server presents.".into()));
            }
            if flag(c, "RestrictDomainsToIPAddresses") && strings(c, "SenderIPAddresses").is_empty()
            {
                return Err(invalid("RestrictDomainsToIPAddresses requires SenderIPAddresses: specify the addresses the sending server uses.".into()));
            }
        }
        Direction::Outbound => {
            let domains = strings(c, "RecipientDomains");
            for d in &p.list("RecipientDomains")?.unwrap_or_default() {
                if !valid_domain(d, true) {
                    return Err(invalid(format!(
                        "\"{d}\" isn't a valid SMTP domain for RecipientDomains. Wildcards are supported only as a leading \"*.\" or as \"*\"."
                    )));
                }
            }
            if p.bool("UseMXRecord")? == Some(false) && !p.has("SmartHosts") {
                return Err(invalid("SmartHosts must be specified on the same command line when UseMXRecord is $false.".into()));
            }
            if c["UseMXRecord"].as_bool() == Some(false) && strings(c, "SmartHosts").is_empty() {
                return Err(invalid(
                    "SmartHosts is required when UseMXRecord is $false.".into(),
                ));
            }
            match (c["TlsSettings"].as_str(), text(c, "TlsDomain")) {
                (Some("DomainValidation"), None) => {
                    return Err(invalid(
                        "TlsDomain is required when TlsSettings is DomainValidation.".into(),
                    ));
                }
                (Some("DomainValidation"), Some(d))
                    if p.has("TlsDomain") && !valid_domain(&d, false) =>
                {
                    return Err(invalid(format!(
                        "\"{d}\" isn't a valid SMTP domain for TlsDomain."
                    )));
                }
                (s, Some(_))
                    if s != Some("DomainValidation") && p.string("TlsDomain")?.is_some() =>
                {
                    return Err(invalid(
                        "TlsDomain can be set only when TlsSettings is DomainValidation.".into(),
                    ));
                }
                _ => {}
            }
            if flag(c, "RouteAllMessagesViaOnPremises") && !on_prem {
                return Err(invalid("RouteAllMessagesViaOnPremises can be set to $true only on a connector whose ConnectorType is OnPremises.".into()));
            }
            if flag(c, "AllAcceptedDomains") && !on_prem {
                return Err(invalid("AllAcceptedDomains can be set to $true only on a connector whose ConnectorType is OnPremises.".into()));
            }
            let star = domains.iter().any(|d| {
                let d = d.strip_prefix("smtp:").unwrap_or(d);
                d.split(';').next() == Some("*")
            });
            if on_prem && star && !flag(c, "RouteAllMessagesViaOnPremises") {
                return Err(invalid("An outbound connector of type OnPremises can't use \"*\" in RecipientDomains unless RouteAllMessagesViaOnPremises is $true.".into()));
            }
        }
    }
    Ok(())
}
