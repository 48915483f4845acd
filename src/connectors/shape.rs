//! The desired connectors: the recommended shape of TENANT_FACTS "Connectors", filled in from
//! `[connectors]` and `[tenant]`.
//!
//! Parameter names and values follow Microsoft's reference pages for New-InboundConnector and
//! New-OutboundConnector (learn.microsoft.com/powershell/module/exchange/…; source
//! MicrosoftDocs/office-docs-powershell `exchange/exchange-ps/exchange/*.md`).

use serde_json::{Value, json};

use super::{Direction, MARKER};
use crate::config::{ConnectorsConfig, TenantConfig};

/// The certificate name the back-door connector demands. `.invalid` is reserved (RFC 2606,
/// RFC 6761 §6.4): no public CA issues a certificate for it, so no sender can present it and
/// every message that does not match a more specific connector is refused.
pub const NOBODY_CERTIFICATE: &str = "no-sender-has-this-certificate.invalid";

/// The four connectors of the Linux hybrid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Inbound OnPremises from the Linux side: internal, identified by certificate.
    InboundOnPremises,
    /// Inbound Partner for `*` that only a certificate nobody has satisfies.
    BackDoor,
    /// Outbound OnPremises for the accepted domains to the smart host.
    OutboundOnPremises,
    /// Outbound Partner for `*` to the smart host (all internet mail leaves through on-prem).
    OutboundInternet,
}

impl Role {
    pub fn direction(self) -> Direction {
        match self {
            Role::InboundOnPremises | Role::BackDoor => Direction::Inbound,
            Role::OutboundOnPremises | Role::OutboundInternet => Direction::Outbound,
        }
    }

    /// Every role, in the order they are planned.
    pub const ALL: [Role; 4] = [
        Role::InboundOnPremises,
        Role::BackDoor,
        Role::OutboundOnPremises,
        Role::OutboundInternet,
    ];

    /// The name after the prefix.
    pub fn suffix(self) -> &'static str {
        match self {
            Role::InboundOnPremises => "inbound from on-prem",
            Role::BackDoor => "inbound back door",
            Role::OutboundOnPremises => "outbound to on-prem",
            Role::OutboundInternet => "outbound internet via on-prem",
        }
    }

    /// What the connector is for, in a few words.
    pub fn describe(self) -> &'static str {
        match self {
            Role::InboundOnPremises => {
                "inbound OnPremises: mail from the Linux side, treated as internal"
            }
            Role::BackDoor => {
                "inbound Partner for *: closes direct delivery that bypasses the Linux side"
            }
            Role::OutboundOnPremises => {
                "outbound OnPremises: mail for on-prem people to the smart host"
            }
            Role::OutboundInternet => {
                "outbound Partner for *: internet mail leaves through on-prem"
            }
        }
    }
}

/// One connector as it should be: its name and its parameters in the order they are rendered
/// (`Name` not among them).
#[derive(Debug, Clone)]
pub struct Desired {
    pub role: Role,
    pub name: String,
    pub params: Vec<(&'static str, Value)>,
}

impl Desired {
    pub fn get(&self, k: &str) -> Option<&Value> {
        self.params.iter().find(|(n, _)| *n == k).map(|(_, v)| v)
    }
}

/// The connectors `[connectors]` asks for: the inbound and outbound OnPremises ones, the back
/// door with `close_back_door`, the outbound Partner `*` with `route_internet_via_on_prem`.
/// Outbound TLS is `DomainValidation` with `TlsDomain` = `certificate_name`
/// (New-OutboundConnector: it "also verifies that the FQDN of the target certificate matches
/// the domain specified in the TlsDomain parameter", where `CertificateValidation` only checks
/// the chain and revocation; `*.` wildcards are allowed). The certificate name is the one name
/// the configuration promises the Linux side's certificate carries; the smart host's own name
/// (an MX alias, or an IP address) often is not in it.
///
/// `onprem_routing_domain` (`[migration]`, when set) is routed to on-prem too: a migrating
/// person's mailbox forwards to `<uid>@<it>` until cutover.
pub fn desired(
    c: &ConnectorsConfig,
    t: &TenantConfig,
    onprem_routing_domain: Option<&str>,
) -> Vec<Desired> {
    let smart_host = c.smart_host.clone().unwrap_or_default();
    let certificate = c.certificate_name.clone().unwrap_or_default();
    let comment = |role: Role| {
        json!(format!(
            "{MARKER} ({}); changes here are overwritten by ldap2exo connectors apply.",
            role.suffix()
        ))
    };
    let name = |role: Role| format!("{} {}", c.name_prefix, role.suffix());
    let (tls_settings, tls_domain) = ("DomainValidation", json!(certificate));
    let mut out = vec![
        Desired {
            role: Role::InboundOnPremises,
            name: name(Role::InboundOnPremises),
            params: vec![
                ("ConnectorType", json!("OnPremises")),
                ("SenderDomains", json!(["*"])),
                // Only the certificate name: RequireTls and RestrictDomainsToCertificate
                // "apply only to Partner type connectors" (Set-InboundConnector), and a
                // certificate can only be presented over TLS anyway.
                ("TlsSenderCertificateName", json!(certificate)),
                ("TreatMessagesAsInternal", json!(true)),
                ("CloudServicesMailEnabled", json!(false)),
                ("EFSkipLastIP", json!(c.on_prem_public_ips.is_empty())),
                ("EFSkipIPs", json!(c.on_prem_public_ips)),
                ("Enabled", json!(true)),
                ("Comment", comment(Role::InboundOnPremises)),
            ],
        },
        outbound(
            Role::OutboundOnPremises,
            name(Role::OutboundOnPremises),
            "OnPremises",
            json!(routed_on_prem(t, onprem_routing_domain)),
            &smart_host,
            (tls_settings, tls_domain.clone()),
            comment(Role::OutboundOnPremises),
        ),
    ];
    if c.close_back_door {
        out.insert(
            1,
            Desired {
                role: Role::BackDoor,
                name: name(Role::BackDoor),
                params: vec![
                    ("ConnectorType", json!("Partner")),
                    ("SenderDomains", json!(["*"])),
                    ("TlsSenderCertificateName", json!(NOBODY_CERTIFICATE)),
                    ("RestrictDomainsToCertificate", json!(true)),
                    ("RequireTls", json!(true)),
                    ("Enabled", json!(true)),
                    ("Comment", comment(Role::BackDoor)),
                ],
            },
        );
    }
    if c.route_internet_via_on_prem {
        out.push(outbound(
            Role::OutboundInternet,
            name(Role::OutboundInternet),
            "Partner",
            json!(["*"]),
            &smart_host,
            (tls_settings, tls_domain),
            comment(Role::OutboundInternet),
        ));
    }
    out
}

/// The domains the OnPremises connector routes to the Linux side: the accepted domains and
/// the on-prem routing domain of a migration, never `*`.
fn routed_on_prem(t: &TenantConfig, onprem_routing_domain: Option<&str>) -> Vec<String> {
    let mut domains: Vec<String> = t
        .accepted_domains
        .iter()
        .map(String::as_str)
        .chain(onprem_routing_domain)
        .filter(|d| *d != "*")
        .map(str::to_ascii_lowercase)
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    domains.retain(|d| seen.insert(d.clone()));
    domains
}

fn outbound(
    role: Role,
    name: String,
    connector_type: &str,
    recipient_domains: Value,
    smart_host: &str,
    tls: (&str, Value),
    comment: Value,
) -> Desired {
    Desired {
        role,
        name,
        params: vec![
            ("ConnectorType", json!(connector_type)),
            ("RecipientDomains", recipient_domains),
            ("SmartHosts", json!([smart_host])),
            ("UseMXRecord", json!(false)),
            ("TlsSettings", json!(tls.0)),
            ("TlsDomain", tls.1),
            ("RouteAllMessagesViaOnPremises", json!(false)),
            ("AllAcceptedDomains", json!(false)),
            ("CloudServicesMailEnabled", json!(false)),
            ("Enabled", json!(true)),
            ("Comment", comment),
        ],
    }
}
