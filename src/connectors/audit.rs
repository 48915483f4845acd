//! `connectors audit`: any tenant's connectors (not only ldap2exo's) against the recommended
//! shape of TENANT_FACTS "Connectors", each check pass, warn or fail with the reason and a fix.
//!
//! Fail marks what lets others relay as you, loops or loses mail, or leaves on-prem mail
//! external; warn marks what weakens the setup without opening it (enhanced filtering off,
//! `CertificateValidation` instead of `DomainValidation`, a disabled connector, no TLS
//! required). The command exits 1 on any fail; warnings alone exit 0.

use serde_json::{Map, Value, json};

use super::powershell::render;
use super::shape::NOBODY_CERTIFICATE;
use super::{bare_domain, flag, name_of, strings, text};

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One check's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    /// A stable id, e.g. `inbound-onprem-identity`.
    pub check: &'static str,
    pub status: Status,
    /// The connector it is about, if one.
    pub connector: Option<String>,
    pub reason: String,
    /// The PowerShell (or ldap2exo command) that fixes it.
    pub fix: Option<String>,
}

/// What the audit knows of the site: `[tenant] accepted_domains`, and from `[connectors]` (if
/// configured) the certificate name and smart host, used in the fixes.
#[derive(Debug, Clone, Default)]
pub struct Site {
    pub accepted_domains: Vec<String>,
    pub certificate_name: Option<String>,
    pub smart_host: Option<String>,
    /// `[migration] onprem_routing_domain`: migrating mailboxes forward to `<uid>@<it>`.
    pub onprem_routing_domain: Option<String>,
    /// `[connectors] close_back_door`, when configured: `Some(false)` means the site has not
    /// closed it yet on purpose (a warning, not a failure).
    pub close_back_door: Option<bool>,
}

fn finding(
    check: &'static str,
    status: Status,
    c: Option<&Value>,
    reason: String,
    fix: Option<String>,
) -> Finding {
    Finding {
        check,
        status,
        connector: c.map(|c| name_of(c).to_owned()),
        reason,
        fix,
    }
}

fn set(noun: &str, c: &Value, params: Value) -> Option<String> {
    let mut p = Map::new();
    p.insert("Identity".into(), json!(name_of(c)));
    if let Value::Object(m) = params {
        p.extend(m);
    }
    Some(render(&format!("Set-{noun}"), &p))
}

fn kind(c: &Value) -> String {
    text(c, "ConnectorType")
        .unwrap_or("Partner")
        .to_ascii_lowercase()
}

fn enabled(c: &Value) -> bool {
    c.get("Enabled").and_then(Value::as_bool) != Some(false)
}

fn domains(c: &Value, k: &str) -> Vec<String> {
    strings(c.get(k).unwrap_or(&Value::Null))
        .iter()
        .map(|d| bare_domain(d))
        .collect()
}

/// All checks over the tenant's connectors.
pub fn audit(inbound: &[Value], outbound: &[Value], site: &Site) -> Vec<Finding> {
    let mut out = Vec::new();
    for c in inbound.iter().chain(outbound).filter(|c| !enabled(c)) {
        out.push(finding(
            "connector-enabled",
            Status::Warn,
            Some(c),
            "disabled: it neither routes nor identifies mail, and is not counted below".into(),
            None,
        ));
    }
    let on_prem_in: Vec<&Value> = inbound
        .iter()
        .filter(|c| enabled(c) && kind(c) == "onpremises")
        .collect();
    if on_prem_in.is_empty() {
        out.push(finding(
            "inbound-onprem-present",
            Status::Fail,
            None,
            "no enabled inbound OnPremises connector: mail from the Linux side arrives as external (no internal sender resolution, spam filtering of colleagues)".into(),
            Some("ldap2exo connectors apply".into()),
        ));
    }
    for c in &on_prem_in {
        inbound_on_premises(c, site, &mut out);
    }
    back_door(inbound, site, &mut out);
    outbound_checks(outbound, site, &mut out);
    out
}

fn inbound_on_premises(c: &Value, site: &Site, out: &mut Vec<Finding>) {
    identity(c, site, out);
    flags(c, out);
}

/// How the connector recognises the Linux side: a certificate name (in an accepted domain),
/// not a shared address.
fn identity(c: &Value, site: &Site, out: &mut Vec<Finding>) {
    let cert = text(c, "TlsSenderCertificateName");
    let ips = strings(c.get("SenderIPAddresses").unwrap_or(&Value::Null));
    let want_cert = site
        .certificate_name
        .clone()
        .unwrap_or_else(|| "<certificate name>".into());
    let identity_fix = set(
        "InboundConnector",
        c,
        json!({"TlsSenderCertificateName": want_cert, "SenderIPAddresses": []}),
    );
    match (cert, ips.is_empty()) {
        (Some(n), _) => match &site.certificate_name {
            Some(w) if !w.eq_ignore_ascii_case(n) => out.push(finding(
                "inbound-onprem-identity",
                Status::Warn,
                Some(c),
                format!(
                    "identified by the certificate name {n}, but [connectors] certificate_name is {w}: one of the two is wrong, and the Postfix side ldap2exo prints presents {w}"
                ),
                identity_fix,
            )),
            _ => out.push(finding(
                "inbound-onprem-identity",
                Status::Pass,
                Some(c),
                format!("identified by the certificate name {n}"),
                None,
            )),
        },
        (None, false) => out.push(finding(
            "inbound-onprem-identity",
            Status::Fail,
            Some(c),
            format!(
                "inbound OnPremises connector identified by IP address {} instead of a certificate: a shared NAT or hosting address lets others relay as you (Microsoft message center MC1226222 names IP-based OnPremises connectors an anti-pattern)",
                ips.join(", ")
            ),
            identity_fix,
        )),
        (None, true) => out.push(finding(
            "inbound-onprem-identity",
            Status::Fail,
            Some(c),
            "inbound OnPremises connector with neither a certificate name nor sender addresses: it cannot tell the Linux side from anyone else".into(),
            identity_fix,
        )),
    }
    if let Some(n) = cert {
        let base = n.trim_start_matches("*.").to_ascii_lowercase();
        let ours = site.accepted_domains.iter().any(|d| {
            let d = d.to_ascii_lowercase();
            base == d || base.ends_with(&format!(".{d}"))
        });
        if !site.accepted_domains.is_empty() && !ours {
            out.push(finding(
                "inbound-onprem-certificate-domain",
                Status::Warn,
                Some(c),
                format!("the certificate name {n} is not in an accepted domain: Exchange Online attributes such mail to a tenant by the certificate's domain first (MC1226222)"),
                None,
            ));
        }
    }
}

/// The switches of the inbound OnPremises connector: internal, cross-premises headers,
/// enhanced filtering, TLS.
fn flags(c: &Value, out: &mut Vec<Finding>) {
    let internal = flag(c, "TreatMessagesAsInternal");
    out.push(finding(
        "inbound-onprem-internal",
        if internal { Status::Pass } else { Status::Fail },
        Some(c),
        if internal {
            "TreatMessagesAsInternal is $true: on-prem senders are internal".into()
        } else {
            "TreatMessagesAsInternal is $false: without Exchange on-prem nothing else marks mail from the Linux side as internal (display-name resolution, internal out-of-office, no Junk)".into()
        },
        (!internal).then(|| {
            set(
                "InboundConnector",
                c,
                json!({"TreatMessagesAsInternal": true, "CloudServicesMailEnabled": false}),
            )
        }).flatten(),
    ));
    let cross = flag(c, "CloudServicesMailEnabled");
    out.push(finding(
        "inbound-onprem-cross-premises",
        if cross { Status::Fail } else { Status::Pass },
        Some(c),
        if cross {
            "CloudServicesMailEnabled is $true: X-MS-Exchange-CrossPremises-* headers from the Linux side are promoted to organization headers, which no Exchange server sets and anyone relaying through it could forge; it also forbids TreatMessagesAsInternal".into()
        } else {
            "CloudServicesMailEnabled is $false".into()
        },
        cross
            .then(|| set("InboundConnector", c, json!({"CloudServicesMailEnabled": false})))
            .flatten(),
    ));
    let skip_ips = strings(c.get("EFSkipIPs").unwrap_or(&Value::Null));
    let ef = flag(c, "EFSkipLastIP") || !skip_ips.is_empty();
    out.push(finding(
        "inbound-onprem-enhanced-filtering",
        if ef { Status::Pass } else { Status::Warn },
        Some(c),
        if ef {
            "enhanced filtering is set (EFSkipLastIP or EFSkipIPs)".into()
        } else {
            "no enhanced filtering: SPF, DMARC and IP reputation of internet mail relayed by the Linux side are judged by the on-prem address, so spoofing goes unseen and good mail can be junked".into()
        },
        (!ef)
            .then(|| set("InboundConnector", c, json!({"EFSkipLastIP": true})))
            .flatten(),
    ));
}

fn back_door(inbound: &[Value], site: &Site, out: &mut Vec<Finding>) {
    let closed = inbound.iter().find(|c| {
        enabled(c)
            && kind(c) == "partner"
            && domains(c, "SenderDomains").iter().any(|d| d == "*")
            && ((flag(c, "RestrictDomainsToCertificate")
                && text(c, "TlsSenderCertificateName").is_some())
                || (flag(c, "RestrictDomainsToIPAddresses")
                    && !strings(c.get("SenderIPAddresses").unwrap_or(&Value::Null)).is_empty()))
    });
    match closed {
        Some(c) => {
            out.push(finding(
                "back-door",
                Status::Pass,
                Some(c),
                "an inbound Partner connector for * accepts only a certificate or addresses the senders must have".into(),
                None,
            ));
            // A second Partner connector for `*` that restricts nothing competes with it for
            // the same mail: which one applies is not defined, and the door may stay open.
            for open in inbound.iter().filter(|o| {
                enabled(o)
                    && name_of(o) != name_of(c)
                    && kind(o) == "partner"
                    && domains(o, "SenderDomains").iter().any(|d| d == "*")
                    && !flag(o, "RestrictDomainsToCertificate")
                    && !flag(o, "RestrictDomainsToIPAddresses")
            }) {
                out.push(finding(
                    "back-door-rival",
                    Status::Fail,
                    Some(open),
                    format!(
                        "another inbound Partner connector for * restricts nothing and competes with `{}` for the same mail: which one applies is not defined, so the back door may stay open",
                        name_of(c)
                    ),
                    Some(format!(
                        "Remove-InboundConnector -Identity {}",
                        super::powershell::string(name_of(open))
                    )),
                ));
            }
        }
        None if inbound
            .iter()
            .any(|o| name_of(o).eq_ignore_ascii_case("ldap2exo inbound back door")) =>
        {
            out.push(finding(
                "back-door",
                Status::Fail,
                None,
                "no back door closed (`ldap2exo inbound back door` exists but is disabled or no longer restricted): anyone can deliver straight to the tenant's MX or its onmicrosoft domains, bypassing the Linux gateway's filtering and policy".into(),
                Some("ldap2exo connectors apply (with --adopt if it was changed by hand)".into()),
            ));
        }
        None => {
            let mut p = Map::new();
            for (k, v) in [
                ("Name", json!("ldap2exo inbound back door")),
                ("ConnectorType", json!("Partner")),
                ("SenderDomains", json!(["*"])),
                ("TlsSenderCertificateName", json!(NOBODY_CERTIFICATE)),
                ("RestrictDomainsToCertificate", json!(true)),
                ("RequireTls", json!(true)),
            ] {
                p.insert(k.into(), v);
            }
            let (status, why) = match site.close_back_door {
                Some(false) => (
                    Status::Warn,
                    "no back door closed yet (connectors.close_back_door is false): anyone can deliver straight to the tenant's MX or its onmicrosoft domains, bypassing the Linux gateway; close it once the Linux side delivers with its certificate and the MX points at it",
                ),
                _ => (
                    Status::Fail,
                    "no back door closed: anyone can deliver straight to the tenant's MX or its onmicrosoft domains, bypassing the Linux gateway's filtering and policy",
                ),
            };
            out.push(finding(
                "back-door",
                status,
                None,
                why.into(),
                Some(format!(
                    "set connectors.close_back_door = true and run ldap2exo connectors apply; or by hand: {}",
                    render("New-InboundConnector", &p)
                )),
            ));
        }
    }
}

fn outbound_checks(outbound: &[Value], site: &Site, out: &mut Vec<Finding>) {
    let enabled_out: Vec<&Value> = outbound.iter().filter(|c| enabled(c)).collect();
    let accepted_fix: Value = json!(site.accepted_domains);
    for c in enabled_out.iter().filter(|c| kind(c) == "onpremises") {
        let star = domains(c, "RecipientDomains").iter().any(|d| d == "*");
        out.push(finding(
            "outbound-onprem-star",
            if star { Status::Fail } else { Status::Pass },
            Some(c),
            if star {
                "OnPremises outbound connector with * as its address space: all internet mail goes to the Linux side, and a * route there back to Exchange Online makes a loop; mail for outside domains would also be treated as hybrid mail".into()
            } else {
                "routes named domains only".into()
            },
            star.then(|| {
                // When another OnPremises connector already routes the accepted domains, the
                // `*` one is surplus: narrowing it would leave two for the same domains.
                let others_route_all = !site.accepted_domains.is_empty()
                    && site.accepted_domains.iter().all(|d| {
                        enabled_out.iter().any(|o| {
                            name_of(o) != name_of(c)
                                && kind(o) == "onpremises"
                                && domains(o, "RecipientDomains")
                                    .iter()
                                    .any(|h| h.eq_ignore_ascii_case(d))
                        })
                    });
                if others_route_all {
                    Some(format!(
                        "Remove-OutboundConnector -Identity {}",
                        super::powershell::string(name_of(c))
                    ))
                } else {
                    set(
                        "OutboundConnector",
                        c,
                        json!({"RecipientDomains": accepted_fix, "RouteAllMessagesViaOnPremises": false}),
                    )
                }
            })
            .flatten(),
        ));
    }
    let to_on_prem: Vec<&&Value> = enabled_out
        .iter()
        .filter(|c| kind(c) == "onpremises")
        .collect();
    if to_on_prem.is_empty() {
        out.push(finding(
            "outbound-onprem-present",
            Status::Fail,
            None,
            "no enabled outbound OnPremises connector: mail from Exchange Online to on-prem people goes by MX, as to any stranger".into(),
            Some("ldap2exo connectors apply".into()),
        ));
    } else {
        let covered = |d: &str| {
            to_on_prem.iter().any(|c| {
                flag(c, "AllAcceptedDomains")
                    || domains(c, "RecipientDomains").iter().any(|h| {
                        h == "*"
                            || h == d
                            || h.strip_prefix("*.")
                                .is_some_and(|s| d.ends_with(&format!(".{s}")))
                    })
            })
        };
        let missing: Vec<&String> = site
            .accepted_domains
            .iter()
            .filter(|d| !covered(&d.to_ascii_lowercase()))
            .collect();
        if !missing.is_empty() {
            out.push(finding(
                "outbound-onprem-domains",
                Status::Warn,
                None,
                format!(
                    "accepted domains no outbound OnPremises connector routes: {}",
                    missing
                        .iter()
                        .map(|d| d.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Some("ldap2exo connectors apply".into()),
            ));
        }
        if let Some(d) = &site.onprem_routing_domain
            && !covered(&d.to_ascii_lowercase())
        {
            out.push(finding(
                "outbound-onprem-migration",
                Status::Fail,
                None,
                format!(
                    "the migration's on-prem routing domain {d} is routed by no outbound OnPremises connector: a migrating person's mailbox forwards to <uid>@{d}, and that mail would go by MX instead of to the Linux side"
                ),
                Some("ldap2exo connectors apply".into()),
            ));
        }
    }
    for c in enabled_out.iter().filter(|c| {
        kind(c) == "onpremises" || !strings(c.get("SmartHosts").unwrap_or(&Value::Null)).is_empty()
    }) {
        smart_host_checks(c, site, out);
    }
}

fn smart_host_checks(c: &Value, site: &Site, out: &mut Vec<Finding>) {
    let hosts = strings(c.get("SmartHosts").unwrap_or(&Value::Null));
    let host = site
        .smart_host
        .clone()
        .or_else(|| hosts.first().cloned())
        .unwrap_or_else(|| "<smart host>".into());
    if c.get("UseMXRecord").and_then(Value::as_bool) != Some(false) {
        out.push(finding(
            "outbound-onprem-mx",
            Status::Fail,
            Some(c),
            "UseMXRecord is $true: mail for on-prem goes to the domain's MX, which for a hybrid domain is Exchange Online itself (a loop), or to whoever the DNS names".into(),
            set(
                "OutboundConnector",
                c,
                json!({"UseMXRecord": false, "SmartHosts": [host.clone()]}),
            ),
        ));
    }
    if let Some(want) = &site.smart_host
        && kind(c) == "onpremises"
        && !hosts.is_empty()
        && !hosts.iter().any(|h| h.eq_ignore_ascii_case(want))
    {
        out.push(finding(
            "outbound-onprem-smart-host",
            Status::Warn,
            Some(c),
            format!(
                "delivers to {}, but [connectors] smart_host is {want}: one of the two is wrong",
                hosts.join(", ")
            ),
            set("OutboundConnector", c, json!({"SmartHosts": [want]})),
        ));
    }
    let tls = text(c, "TlsSettings").unwrap_or("").to_ascii_lowercase();
    let tls_domain = text(c, "TlsDomain");
    let fix = set(
        "OutboundConnector",
        c,
        json!({"TlsSettings": "DomainValidation",
               "TlsDomain": site.certificate_name.clone().unwrap_or(host)}),
    );
    let (status, reason) = match (tls.as_str(), tls_domain) {
        ("domainvalidation", Some(d)) => (
            Status::Pass,
            format!("TLS with the certificate checked for the name {d}"),
        ),
        ("certificatevalidation", _) => (
            Status::Warn,
            "TlsSettings CertificateValidation checks the certificate chain but not the name: any valid certificate passes; DomainValidation with TlsDomain also checks the name".into(),
        ),
        ("domainvalidation", None) => (
            Status::Fail,
            "TlsSettings DomainValidation without TlsDomain".into(),
        ),
        _ => (
            Status::Fail,
            format!(
                "TlsSettings {}: mail to on-prem is not sent over TLS with a validated certificate",
                text(c, "TlsSettings").unwrap_or("$null")
            ),
        ),
    };
    out.push(finding(
        "outbound-onprem-tls",
        status,
        Some(c),
        reason,
        (status != Status::Pass).then_some(fix).flatten(),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Site {
        Site {
            accepted_domains: vec!["example.edu".into()],
            certificate_name: Some("mail.example.edu".into()),
            smart_host: Some("mx-in.example.edu".into()),
            onprem_routing_domain: None,
            close_back_door: None,
        }
    }

    #[test]
    fn a_back_door_left_open_on_purpose_warns_and_one_left_open_otherwise_fails() {
        let status = |close: Option<bool>| {
            let f = audit(
                &[],
                &[],
                &Site {
                    close_back_door: close,
                    ..site()
                },
            );
            f.into_iter()
                .find(|f| f.check == "back-door")
                .unwrap()
                .status
        };
        assert_eq!(status(Some(false)), Status::Warn);
        assert_eq!(status(Some(true)), Status::Fail);
        assert_eq!(
            status(None),
            Status::Fail,
            "a tenant audited without [connectors]"
        );
    }

    #[test]
    fn a_star_on_premises_connector_beside_one_for_the_domains_is_removed_not_narrowed() {
        let to_on_prem = json!({"Name": "To on-prem", "ConnectorType": "OnPremises",
            "RecipientDomains": ["example.edu"], "SmartHosts": ["mx-in.example.edu"],
            "UseMXRecord": false, "Enabled": true});
        let everything = json!({"Name": "Everything out", "ConnectorType": "OnPremises",
            "RecipientDomains": ["smtp:*;1"], "RouteAllMessagesViaOnPremises": true,
            "SmartHosts": ["mx-in.example.edu"], "UseMXRecord": false, "Enabled": true});
        let star_fix = |outbound: &[Value]| {
            let mut out = Vec::new();
            outbound_checks(outbound, &site(), &mut out);
            out.into_iter()
                .find(|f| f.check == "outbound-onprem-star" && f.status == Status::Fail)
                .and_then(|f| f.fix)
                .expect("the * connector fails")
        };
        let beside = star_fix(&[to_on_prem, everything.clone()]);
        assert!(
            beside.starts_with("Remove-OutboundConnector -Identity \"Everything out\""),
            "{beside}"
        );
        let alone = star_fix(&[everything]);
        assert!(alone.starts_with("Set-OutboundConnector"), "{alone}");
        assert!(alone.contains("-RecipientDomains example.edu"), "{alone}");
    }

    #[test]
    fn the_migration_routing_domain_must_be_routed_on_prem() {
        let to_on_prem = json!({"Name": "To on-prem", "ConnectorType": "OnPremises",
            "RecipientDomains": ["example.edu"], "SmartHosts": ["mx-in.example.edu"],
            "UseMXRecord": false, "TlsSettings": "DomainValidation",
            "TlsDomain": "mail.example.edu", "Enabled": true});
        let migrating = Site {
            onprem_routing_domain: Some("mbox.example.edu".into()),
            ..site()
        };
        let check = |site: &Site, outbound: Value| {
            let mut out = Vec::new();
            outbound_checks(&[outbound], site, &mut out);
            out.into_iter()
                .find(|f| f.check == "outbound-onprem-migration")
                .map(|f| (f.status, f.reason))
        };
        let (status, reason) = check(&migrating, to_on_prem.clone()).expect("a finding");
        assert_eq!(status, Status::Fail);
        assert!(reason.contains("mbox.example.edu"), "{reason}");
        assert_eq!(
            check(&site(), to_on_prem.clone()),
            None,
            "no migration configured"
        );
        let mut routed = to_on_prem;
        routed["RecipientDomains"] = json!(["example.edu", "mbox.example.edu"]);
        assert_eq!(check(&migrating, routed), None);
    }

    #[test]
    fn an_empty_tenant_fails_the_three_connectors_it_lacks() {
        let f = audit(&[], &[], &site());
        let failed: Vec<&str> = f
            .iter()
            .filter(|f| f.status == Status::Fail)
            .map(|f| f.check)
            .collect();
        assert_eq!(
            failed,
            [
                "inbound-onprem-present",
                "back-door",
                "outbound-onprem-present"
            ]
        );
        let door = f.iter().find(|f| f.check == "back-door").unwrap();
        assert!(
            door.fix
                .as_deref()
                .unwrap()
                .contains("connectors apply; or by hand: New-InboundConnector")
        );
    }

    #[test]
    fn an_ip_identified_connector_gets_a_certificate_fix_with_the_configured_name() {
        let c = json!({"Name": "From campus", "ConnectorType": "OnPremises",
            "SenderIPAddresses": ["203.0.113.4"], "TreatMessagesAsInternal": true,
            "EFSkipLastIP": true, "RequireTls": true});
        let f = audit(&[c], &[], &site());
        let id = f
            .iter()
            .find(|f| f.check == "inbound-onprem-identity")
            .unwrap();
        assert_eq!(id.status, Status::Fail);
        let fix = id.fix.as_deref().unwrap();
        assert!(
            fix.contains("-TlsSenderCertificateName mail.example.edu"),
            "{fix}"
        );
        assert!(fix.contains("-SenderIPAddresses @()"), "{fix}");
    }
}
