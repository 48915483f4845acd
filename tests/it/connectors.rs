//! `ldap2exo connectors plan|apply|audit|postfix` through the real binary against the tenant
//! emulator: the four connectors from an empty tenant to no difference, hand-made connectors
//! left alone unless adopted, every audit check right and wrong, and the Postfix snippet.

use ldap2exo_emulator::Emulator;
use serde_json::{Value, json};

use crate::support::cli::{Install, Run};
use crate::support::slapd::{Slapd, SlapdOptions};
use crate::sync::{campus_emulator_with, runtime};

const CONNECTORS: &str = "\n[connectors]\nsmart_host = \"mx-in.example.edu\"\ncertificate_name = \"mail.example.edu\"\nclose_back_door = true\n";

fn install(server: &Slapd, emu: &Emulator, extra: &str) -> Install {
    let install = Install::with_tenant(server, emu);
    let mut text = std::fs::read_to_string(&install.config).unwrap();
    text.push_str(extra);
    std::fs::write(&install.config, text).unwrap();
    install
}

fn emulator(rt: &tokio::runtime::Runtime, inbound: Vec<Value>, outbound: Vec<Value>) -> Emulator {
    campus_emulator_with(rt, vec![], |cfg| {
        cfg.seed.inbound_connectors = inbound;
        cfg.seed.outbound_connectors = outbound;
    })
}

fn expect(run: &Run, code: i32, what: &str) {
    assert_eq!(
        run.code, code,
        "exit code of {what}\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
}

fn by_name<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|c| c["Name"] == name)
        .unwrap_or_else(|| panic!("no connector {name} in {list:#?}"))
}

#[test]
fn plan_on_an_empty_tenant_then_apply_then_plan_shows_no_difference() {
    let rt = runtime();
    let emu = emulator(&rt, vec![], vec![]);
    let server = Slapd::start(SlapdOptions::default());
    let install = install(&server, &emu, CONNECTORS);

    let plan = install.run(&["connectors", "plan"]);
    expect(&plan, 1, "plan on an empty tenant");
    assert_eq!(
        plan.stdout.matches("\ncreate ").count() + usize::from(plan.stdout.starts_with("create ")),
        3,
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains(
        "PS> New-InboundConnector -Name \"ldap2exo inbound from on-prem\" -CloudServicesMailEnabled $false"
    ), "{}", plan.stdout);
    assert!(plan.stdout.contains("-SenderDomains \"*\""));
    assert!(
        plan.stdout
            .contains("New-OutboundConnector -Name \"ldap2exo outbound to on-prem\"")
    );
    assert!(
        plan.stdout
            .contains("-RecipientDomains example.edu,staff.example.edu")
    );
    assert!(
        plan.stdout
            .contains("-TlsSettings DomainValidation -UseMXRecord $false")
    );
    assert!(plan.stdout.contains("The on-prem side to match"));
    assert!(
        emu.state().inbound_connectors.is_empty(),
        "plan writes nothing"
    );

    let json = install.run(&["connectors", "plan", "--format", "json"]);
    expect(&json, 1, "plan --format json");
    let v = json.json();
    assert_eq!(v["summary"]["create"], 3);
    assert_eq!(v["connectors"][0]["action"], "create");
    assert!(
        v["connectors"][0]["powershell"]
            .as_str()
            .unwrap()
            .starts_with("New-InboundConnector")
    );

    let apply = install.run(&["connectors", "apply"]);
    expect(&apply, 0, "apply");
    let state = emu.state();
    assert_eq!(state.inbound_connectors.len(), 2);
    assert_eq!(state.outbound_connectors.len(), 1);
    let on_prem = by_name(&state.inbound_connectors, "ldap2exo inbound from on-prem");
    assert_eq!(on_prem["ConnectorType"], "OnPremises");
    assert_eq!(on_prem["TreatMessagesAsInternal"], true);
    assert_eq!(on_prem["CloudServicesMailEnabled"], false);
    assert_eq!(on_prem["TlsSenderCertificateName"], "mail.example.edu");
    // Partner-only parameters (Set-InboundConnector) are left at their defaults.
    assert_eq!(on_prem["RestrictDomainsToCertificate"], false);
    assert_eq!(
        on_prem["EFSkipLastIP"], true,
        "no public addresses configured"
    );
    let door = by_name(&state.inbound_connectors, "ldap2exo inbound back door");
    assert_eq!(door["ConnectorType"], "Partner");
    assert_eq!(door["SenderDomains"], json!(["*"]));
    assert_eq!(
        door["TlsSenderCertificateName"],
        "no-sender-has-this-certificate.invalid"
    );
    let out = by_name(&state.outbound_connectors, "ldap2exo outbound to on-prem");
    assert_eq!(out["SmartHosts"], json!(["mx-in.example.edu"]));
    assert_eq!(out["UseMXRecord"], false);
    assert_eq!(out["TlsDomain"], "mail.example.edu");

    let again = install.run(&["connectors", "plan"]);
    expect(&again, 0, "plan after apply");
    assert!(
        again
            .stdout
            .contains("summary: 0 create, 0 change, 0 adopt, 3 ok, 0 refused, 0 remove"),
        "{}",
        again.stdout
    );
    assert!(!again.stdout.contains("PS>"));

    // The audit of what apply made passes.
    let audit = install.run(&["connectors", "audit", "--format", "json"]);
    expect(&audit, 0, "audit after apply");
    assert_eq!(audit.json()["summary"]["fail"], 0, "{}", audit.stdout);
    assert_eq!(audit.json()["summary"]["warn"], 0, "{}", audit.stdout);
}

#[test]
fn a_changed_property_is_planned_and_corrected_with_its_powershell() {
    let rt = runtime();
    let emu = emulator(&rt, vec![], vec![]);
    let server = Slapd::start(SlapdOptions::default());
    let install = install(&server, &emu, CONNECTORS);
    expect(&install.run(&["connectors", "apply"]), 0, "first apply");
    // Someone switches enhanced filtering to explicit addresses in the portal.
    let with_ips = format!("{CONNECTORS}on_prem_public_ips = [\"203.0.113.4\"]\n");
    let install2 = self::install(&server, &emu, &with_ips);
    let plan = install2.run(&["connectors", "plan"]);
    expect(&plan, 1, "plan with a changed setting");
    assert!(
        plan.stdout
            .contains("change   ldap2exo inbound from on-prem"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("EFSkipLastIP: $true → $false"),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains(
        "PS> Set-InboundConnector -Identity \"ldap2exo inbound from on-prem\" -EFSkipIPs 203.0.113.4 -EFSkipLastIP $false"
    ), "{}", plan.stdout);
    expect(
        &install2.run(&["connectors", "apply"]),
        0,
        "apply the change",
    );
    let state = emu.state();
    let c = by_name(&state.inbound_connectors, "ldap2exo inbound from on-prem");
    assert_eq!(c["EFSkipIPs"], json!(["203.0.113.4"]));
    expect(
        &install2.run(&["connectors", "plan"]),
        0,
        "plan after the change",
    );
}

#[test]
fn route_internet_adds_the_partner_star_connector_and_never_star_on_premises() {
    let rt = runtime();
    let emu = emulator(&rt, vec![], vec![]);
    let server = Slapd::start(SlapdOptions::default());
    let install = install(
        &server,
        &emu,
        &format!("{CONNECTORS}route_internet_via_on_prem = true\n"),
    );
    let plan = install.run(&["connectors", "plan", "--format", "json"]);
    expect(&plan, 1, "plan");
    assert_eq!(plan.json()["summary"]["create"], 4);
    expect(&install.run(&["connectors", "apply"]), 0, "apply");
    let state = emu.state();
    assert_eq!(state.outbound_connectors.len(), 2);
    let internet = by_name(
        &state.outbound_connectors,
        "ldap2exo outbound internet via on-prem",
    );
    assert_eq!(internet["ConnectorType"], "Partner");
    assert_eq!(internet["RecipientDomains"], json!(["*"]));
    assert_eq!(internet["SmartHosts"], json!(["mx-in.example.edu"]));
    for c in &state.outbound_connectors {
        if c["ConnectorType"] == "OnPremises" {
            let domains = c["RecipientDomains"].as_array().unwrap();
            assert!(!domains.contains(&json!("*")), "{c:#}");
        }
    }
    expect(&install.run(&["connectors", "plan"]), 0, "plan after apply");

    // Turned off again: the Partner `*` connector ldap2exo made goes, nothing else.
    let off = self::install(&server, &emu, CONNECTORS);
    let plan = off.run(&["connectors", "plan"]);
    expect(&plan, 1, "plan with route_internet_via_on_prem off");
    assert!(
        plan.stdout.contains(
            "PS> Remove-OutboundConnector -Identity \"ldap2exo outbound internet via on-prem\""
        ),
        "{}",
        plan.stdout
    );
    let apply = off.run(&["connectors", "apply"]);
    expect(&apply, 0, "apply with route_internet_via_on_prem off");
    assert!(
        apply
            .stdout
            .contains("removed  ldap2exo outbound internet via on-prem"),
        "{}",
        apply.stdout
    );
    let state = emu.state();
    assert_eq!(state.outbound_connectors.len(), 1);
    assert_eq!(
        state.outbound_connectors[0]["Name"],
        "ldap2exo outbound to on-prem"
    );
    expect(
        &off.run(&["connectors", "plan"]),
        0,
        "plan after the removal",
    );
}

fn hand_made() -> (Vec<Value>, Vec<Value>) {
    // Same name as ldap2exo's inbound connector, without the marker in its Comment.
    let inbound = vec![json!({
        "Name": "ldap2exo inbound from on-prem", "Identity": "ldap2exo inbound from on-prem",
        "ConnectorType": "OnPremises", "SenderDomains": ["smtp:*;1"],
        "SenderIPAddresses": ["203.0.113.4"], "TlsSenderCertificateName": null,
        "TreatMessagesAsInternal": false, "CloudServicesMailEnabled": false,
        "RequireTls": false, "RestrictDomainsToCertificate": false, "Enabled": true, "Comment": "made by hand"
    })];
    // Another name, the same role: routes the accepted domain to on-prem by MX.
    let outbound = vec![json!({
        "Name": "To campus", "Identity": "To campus", "ConnectorType": "OnPremises",
        "RecipientDomains": ["example.edu"], "SmartHosts": [], "UseMXRecord": true,
        "TlsSettings": null, "TlsDomain": null, "Enabled": true, "Comment": null
    })];
    (inbound, outbound)
}

#[test]
fn a_hand_made_connector_is_reported_and_left_alone_unless_adopted() {
    let rt = runtime();
    let (inbound, outbound) = hand_made();
    let emu = emulator(&rt, inbound, outbound);
    let server = Slapd::start(SlapdOptions::default());
    let install = install(&server, &emu, CONNECTORS);
    let before = emu.state();

    let plan = install.run(&["connectors", "plan"]);
    expect(&plan, 1, "plan");
    assert!(
        plan.stdout
            .contains("REFUSED  ldap2exo inbound from on-prem"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("not made by ldap2exo"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains("`To campus` not made by ldap2exo would compete"),
        "{}",
        plan.stdout
    );

    let apply = install.run(&["connectors", "apply"]);
    expect(&apply, 1, "apply with foreign connectors");
    assert!(
        apply
            .stdout
            .contains("REFUSED  ldap2exo inbound from on-prem"),
        "{}",
        apply.stdout
    );
    assert!(
        apply
            .stdout
            .contains("REFUSED  ldap2exo outbound to on-prem"),
        "{}",
        apply.stdout
    );
    let after = emu.state();
    assert_eq!(
        after.inbound_connectors[0], before.inbound_connectors[0],
        "unchanged"
    );
    assert_eq!(
        after.outbound_connectors, before.outbound_connectors,
        "unchanged"
    );
    // The back door has no rival, but closing it while the Linux side's connector is not
    // ours would refuse all on-prem mail: it waits.
    assert!(
        apply.stdout.contains(
            "REFUSED  ldap2exo inbound back door: held: the inbound OnPremises connector is not in place"
        ),
        "{}",
        apply.stdout
    );
    assert_eq!(after.inbound_connectors.len(), 1, "no back door yet");

    let adopt = install.run(&[
        "connectors",
        "apply",
        "--adopt",
        "To campus",
        "--adopt",
        "ldap2exo inbound from on-prem",
    ]);
    expect(&adopt, 0, "apply --adopt");
    assert!(
        adopt
            .stdout
            .contains("adopted  ldap2exo outbound to on-prem"),
        "{}",
        adopt.stdout
    );
    let state = emu.state();
    assert_eq!(
        state.outbound_connectors.len(),
        1,
        "renamed, not duplicated"
    );
    let out = by_name(&state.outbound_connectors, "ldap2exo outbound to on-prem");
    assert_eq!(out["UseMXRecord"], false);
    assert!(
        out["Comment"]
            .as_str()
            .unwrap()
            .contains("Managed by ldap2exo")
    );
    let inb = by_name(&state.inbound_connectors, "ldap2exo inbound from on-prem");
    assert_eq!(inb["TlsSenderCertificateName"], "mail.example.edu");
    assert_eq!(inb["TreatMessagesAsInternal"], true);
    assert!(
        adopt.stdout.contains("created  ldap2exo inbound back door"),
        "once the Linux side's connector is in place the back door is closed: {}",
        adopt.stdout
    );
    expect(
        &install.run(&["connectors", "plan"]),
        0,
        "plan after adopting",
    );
}

/// A tenant set up the recommended way by hand (other names, no ldap2exo marker).
fn good() -> (Vec<Value>, Vec<Value>) {
    let inbound = vec![
        json!({"Name": "On-prem in", "Identity": "On-prem in", "ConnectorType": "OnPremises",
               "SenderDomains": ["smtp:*;1"], "TlsSenderCertificateName": "mail.example.edu",
               "TreatMessagesAsInternal": true, "CloudServicesMailEnabled": false,
               "EFSkipLastIP": true, "EFSkipIPs": [], "SenderIPAddresses": [], "Enabled": true}),
        json!({"Name": "Back door", "Identity": "Back door", "ConnectorType": "Partner",
               "SenderDomains": ["smtp:*;1"], "TlsSenderCertificateName": "nobody.invalid",
               "RestrictDomainsToCertificate": true, "RequireTls": true, "Enabled": true}),
    ];
    let outbound = vec![json!({"Name": "To on-prem", "Identity": "To on-prem",
        "ConnectorType": "OnPremises", "RecipientDomains": ["example.edu", "staff.example.edu"],
        "SmartHosts": ["mx-in.example.edu"], "UseMXRecord": false, "TlsSettings": "DomainValidation",
        "TlsDomain": "mx-in.example.edu", "Enabled": true})];
    (inbound, outbound)
}

/// `connectors audit --format json` on a tenant with these connectors: exit code and findings.
fn audit(server: &Slapd, inbound: Vec<Value>, outbound: Vec<Value>) -> (i32, Vec<Value>, String) {
    let rt = runtime();
    let emu = emulator(&rt, inbound, outbound);
    let install = install(server, &emu, CONNECTORS);
    let run = install.run(&["connectors", "audit", "--format", "json"]);
    let v = run.json();
    (
        run.code,
        v["findings"].as_array().unwrap().clone(),
        run.stdout,
    )
}

fn status_of<'a>(findings: &'a [Value], check: &str) -> Vec<&'a Value> {
    findings.iter().filter(|f| f["check"] == check).collect()
}

#[test]
fn each_audit_check_passes_right_and_fails_or_warns_wrong_with_the_reason() {
    let server = Slapd::start(SlapdOptions::default());
    let (code, findings, out) = audit(&server, good().0, good().1);
    assert_eq!(code, 0, "{out}");
    for check in [
        "inbound-onprem-identity",
        "inbound-onprem-internal",
        "inbound-onprem-cross-premises",
        "inbound-onprem-enhanced-filtering",
        "back-door",
        "outbound-onprem-star",
        "outbound-onprem-tls",
    ] {
        let f = status_of(&findings, check);
        assert_eq!(f.len(), 1, "{check}: {out}");
        assert_eq!(f[0]["status"], "pass", "{check}: {out}");
    }
    assert!(findings.iter().all(|f| f["status"] == "pass"), "{out}");

    // (what to break, the check, its status, words of the reason, the exit code)
    type Break = fn(&mut Vec<Value>, &mut Vec<Value>);
    let cases: Vec<(Break, &str, &str, &str, i32)> = vec![
        (
            |i, _| i[0]["TlsSenderCertificateName"] = json!("relay.example.edu"),
            "inbound-onprem-identity",
            "warn",
            "but [connectors] certificate_name is mail.example.edu",
            0,
        ),
        (
            |_, o| o[0]["SmartHosts"] = json!(["mx2.example.edu"]),
            "outbound-onprem-smart-host",
            "warn",
            "delivers to mx2.example.edu, but [connectors] smart_host is mx-in.example.edu",
            0,
        ),
        (
            |i, _| {
                i.push(
                    json!({"Name": "Partner allow all", "Identity": "Partner allow all",
                    "ConnectorType": "Partner", "SenderDomains": ["smtp:*;1"],
                    "RestrictDomainsToCertificate": false, "Enabled": true}),
                )
            },
            "back-door-rival",
            "fail",
            "restricts nothing and competes with `Back door`",
            1,
        ),
        (
            |i, _| {
                i[0]["TlsSenderCertificateName"] = Value::Null;
                i[0]["SenderIPAddresses"] = json!(["203.0.113.4"]);
            },
            "inbound-onprem-identity",
            "fail",
            "identified by IP address 203.0.113.4 instead of a certificate",
            1,
        ),
        (
            |i, _| i[0]["TreatMessagesAsInternal"] = json!(false),
            "inbound-onprem-internal",
            "fail",
            "TreatMessagesAsInternal is $false",
            1,
        ),
        (
            |i, _| i[0]["CloudServicesMailEnabled"] = json!(true),
            "inbound-onprem-cross-premises",
            "fail",
            "CrossPremises",
            1,
        ),
        (
            |i, _| i[0]["EFSkipLastIP"] = json!(false),
            "inbound-onprem-enhanced-filtering",
            "warn",
            "no enhanced filtering",
            0,
        ),
        (
            |i, _| {
                i.remove(1);
            },
            "back-door",
            "fail",
            "no back door closed",
            1,
        ),
        (
            |i, _| {
                i.remove(0);
            },
            "inbound-onprem-present",
            "fail",
            "no enabled inbound OnPremises",
            1,
        ),
        (
            |_, o| o[0]["RecipientDomains"] = json!(["*"]),
            "outbound-onprem-star",
            "fail",
            "* as its address space",
            1,
        ),
        (
            |_, o| o[0]["UseMXRecord"] = json!(true),
            "outbound-onprem-mx",
            "fail",
            "UseMXRecord is $true",
            1,
        ),
        (
            |_, o| {
                o[0]["TlsSettings"] = json!("CertificateValidation");
                o[0]["TlsDomain"] = Value::Null;
            },
            "outbound-onprem-tls",
            "warn",
            "checks the certificate chain but not the name",
            0,
        ),
        (
            |_, o| o[0]["TlsSettings"] = Value::Null,
            "outbound-onprem-tls",
            "fail",
            "not sent over TLS",
            1,
        ),
        (
            |_, o| {
                o.clear();
            },
            "outbound-onprem-present",
            "fail",
            "no enabled outbound OnPremises",
            1,
        ),
        (
            |i, _| i[0]["TlsSenderCertificateName"] = json!("relay.hoster.example.net"),
            "inbound-onprem-certificate-domain",
            "warn",
            "not in an accepted domain",
            0,
        ),
        (
            |_, o| o[0]["RecipientDomains"] = json!(["example.edu"]),
            "outbound-onprem-domains",
            "warn",
            "staff.example.edu",
            0,
        ),
        (
            |i, _| i[1]["Enabled"] = json!(false),
            "back-door",
            "fail",
            "no back door closed",
            1,
        ),
    ];
    for (break_it, check, status, words, code) in cases {
        let (mut inbound, mut outbound) = good();
        break_it(&mut inbound, &mut outbound);
        let (got, findings, out) = audit(&server, inbound, outbound);
        let f = status_of(&findings, check);
        assert!(
            f.iter()
                .any(|f| f["status"] == status && f["reason"].as_str().unwrap().contains(words)),
            "{check} should {status} with “{words}”:\n{out}"
        );
        assert_eq!(got, code, "exit code for {check}:\n{out}");
        if status == "fail"
            && check != "inbound-onprem-present"
            && check != "back-door"
            && check != "outbound-onprem-present"
        {
            assert!(
                f.iter().any(|f| f["fix"]
                    .as_str()
                    .is_some_and(|x| x.starts_with("Set-") || x.starts_with("Remove-"))),
                "{check} has a fix:\n{out}"
            );
        }
    }
}

#[test]
fn audit_text_gives_reason_fix_and_the_postfix_side() {
    let server = Slapd::start(SlapdOptions::default());
    let rt = runtime();
    let (mut inbound, outbound) = good();
    inbound[0]["TlsSenderCertificateName"] = Value::Null;
    inbound[0]["SenderIPAddresses"] = json!(["203.0.113.4"]);
    let emu = emulator(&rt, inbound, outbound);
    let install = install(&server, &emu, CONNECTORS);
    let run = install.run(&["connectors", "audit"]);
    expect(&run, 1, "audit");
    assert!(run.stdout.contains("FAIL  inbound-onprem-identity [On-prem in]: inbound OnPremises connector identified by IP address 203.0.113.4 instead of a certificate"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("fix: Set-InboundConnector -Identity \"On-prem in\""),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("The on-prem side to match"));
    let md = install.run(&["connectors", "audit", "--format", "markdown"]);
    expect(&md, 1, "audit markdown");
    assert!(md.stdout.starts_with("| status | check |"), "{}", md.stdout);
}

#[test]
fn the_postfix_snippet_names_exactly_the_two_onmicrosoft_domains_and_the_tenant_id() {
    let server = Slapd::start(SlapdOptions::default());
    let rt = runtime();
    let emu = emulator(&rt, vec![], vec![]);
    let install = install(&server, &emu, CONNECTORS);
    let run = install.run(&["connectors", "postfix"]);
    expect(&run, 0, "postfix");
    let routes: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| !l.starts_with('#') && l.trim_end().ends_with(" exo:"))
        .collect();
    let domains: Vec<&str> = routes
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        domains,
        [
            "exampleedu.onmicrosoft.com",
            "exampleedu.mail.onmicrosoft.com"
        ],
        "{}",
        run.stdout
    );
    let policies: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.ends_with(" secure match=.mail.protection.outlook.com"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        policies, domains,
        "TLS is mandatory for exactly the routed domains"
    );
    assert!(
        !run.stdout.lines().any(|l| l.trim_start().starts_with('*')),
        "never a * route"
    );
    let tenant_id = emu.tenant().tenant_id;
    assert!(
        run.stdout
            .contains(&format!("X-MS-Exchange-CrossTenant-Id:(?!\\s*{tenant_id}")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("secure match=.mail.protection.outlook.com")
    );
    assert!(run.stdout.contains("smtpd_tls_ask_ccert=yes"));
    // The transport to Exchange Online presents the certificate the connector knows.
    assert!(
        run.stdout
            .contains("exo unix - - y - - smtp\n  -o smtp_tls_chain_files="),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("the key and certificate chain for mail.example.edu"),
        "{}",
        run.stdout
    );
    // The listener for Exchange Online is bound to the smart host's address only, and it
    // presents the same certificate (the outbound connector checks its name).
    assert!(
        run.stdout.contains(
            "<local address for mx-in.example.edu>:smtp inet n - y - - smtpd\n  -o smtpd_tls_security_level=encrypt\n  -o smtpd_tls_chain_files=/etc/postfix/exo.pem"
        ),
        "{}",
        run.stdout
    );
    // The secret is not needed and never printed.
    let secret = emu.tenant().client_secret.unwrap();
    assert!(!run.stdout.contains(&secret));
}

#[test]
fn connectors_configuration_errors_name_the_key() {
    let server = Slapd::start(SlapdOptions::default());
    let rt = runtime();
    let emu = emulator(&rt, vec![], vec![]);
    let missing = install(&server, &emu, "");
    for args in [&["connectors", "plan"][..], &["connectors", "postfix"]] {
        let run = missing.run(args);
        expect(&run, 2, &format!("{args:?} without [connectors]"));
        assert!(
            run.stderr.contains("connectors.smart_host"),
            "{}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "nothing to paste: {}", run.stdout);
    }
    // An --adopt that names no connector is a mistake to say, not to ignore.
    let configured = install(&server, &emu, CONNECTORS);
    let run = configured.run(&["connectors", "apply", "--adopt", "Nope"]);
    expect(&run, 2, "--adopt of an unknown connector");
    assert!(run.stderr.contains("--adopt `Nope`"), "{}", run.stderr);
    assert!(emu.state().inbound_connectors.is_empty(), "nothing written");
    for (extra, key) in [
        (
            "\n[connectors]\nsmart_host = \"not a host\"\ncertificate_name = \"mail.example.edu\"\n",
            "connectors.smart_host",
        ),
        (
            "\n[connectors]\nsmart_host = \"mx-in.example.edu\"\n",
            "connectors.certificate_name",
        ),
        (
            &format!("{CONNECTORS}on_prem_public_ips = [\"203.0.113.400\"]\n"),
            "connectors.on_prem_public_ips",
        ),
        (
            &format!("{CONNECTORS}name_prefix = \"\"\n"),
            "connectors.name_prefix",
        ),
        (&format!("{CONNECTORS}smarthost = \"x\"\n"), "smarthost"),
        (
            "\n[connectors]\nsmart_host = \"exampleedu-mail-onmicrosoft-com.mail.protection.outlook.com\"\ncertificate_name = \"mail.example.edu\"\n",
            "a loop",
        ),
        (
            "\n[connectors]\nsmart_host = \"10.1.2.3\"\ncertificate_name = \"mail.example.edu\"\n",
            "not a public address",
        ),
    ] {
        let bad = install(&server, &emu, extra);
        let run = bad.run(&["connectors", "audit"]);
        expect(&run, 2, key);
        assert!(run.stderr.contains(key), "{key}: {}", run.stderr);
    }
}
