//! `ldap2exo audit gal` end to end: the real binary against the campus fixture's slapd and
//! the tenant emulator, after a full sync. Each finding is caused for real (the tenant
//! changed through the emulator's side door, or LDAP changed without a sync) and asserted
//! with its code, its person and the exact completeness ratio.

use ldap2exo_emulator::{Emulator, GroupLicense, MailObject, Seed, User};
use serde_json::Value;

use crate::support::cli::Install;
use crate::support::slapd::{self, Slapd, SlapdOptions};
use crate::sync::{campus_emulator, converge, runtime, sync};

/// The campus tenant after a full sync, with LDAP still there to change.
struct Site {
    install: Install,
    server: Slapd,
    emu: Emulator,
    _rt: tokio::runtime::Runtime,
}

fn synced() -> Site {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::with_tenant(&server, &emu);
    sync(&install, 0);
    converge(&install, 3);
    Site {
        install,
        server,
        emu,
        _rt: rt,
    }
}

/// People the campus fixture should show in the GAL, counted from the LDIF itself: entries
/// under `ou=people` with a mail address, less the disabled (`shadowExpire: 1`), the hidden
/// (`employeeType: service`) and the broken entries (tests/fixtures/README.md "Broken
/// entries": quarantined, so not expected in the tenant).
fn fixture_should_be() -> usize {
    const BROKEN: [&str; 7] = [
        "zbaker",
        "kwright",
        "lmoreau",
        "eanderson2",
        "hwolfe",
        "anna maria",
        "pnovak",
    ];
    let ldif = std::fs::read_to_string(slapd::campus_ldif()).unwrap();
    ldif.split("\n\n")
        .map(|e| e.lines().collect::<Vec<_>>())
        .filter(|e| {
            e.iter()
                .any(|l| l.starts_with("dn: ") && l.contains(",ou=people,"))
        })
        .filter(|e| e.iter().any(|l| l.starts_with("mail: ")))
        .filter(|e| !e.contains(&"shadowExpire: 1") && !e.contains(&"employeeType: service"))
        .filter(|e| {
            let uid = e.iter().find_map(|l| l.strip_prefix("uid: ")).unwrap_or("");
            !BROKEN.contains(&uid)
        })
        .count()
}

/// `audit gal --format json ARGS`, expecting exit `code`.
fn audit(install: &Install, code: i32, args: &[&str]) -> Value {
    let mut all = vec!["audit", "gal", "--format", "json"];
    all.extend_from_slice(args);
    let run = install.run(&all);
    assert_eq!(
        run.code, code,
        "exit code of {all:?}\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    run.json()
}

/// `(code, uid)` of every finding.
fn findings(report: &Value) -> Vec<(String, String)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["code"].as_str().unwrap().to_owned(),
                f["uid"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(c, u)| ((*c).to_owned(), (*u).to_owned()))
        .collect()
}

/// The summary says exactly `resolvable` of `should_be`.
fn assert_ratio(report: &Value, resolvable: usize, should_be: usize) {
    let s = &report["summary"];
    assert_eq!(
        (s["resolvable"].as_u64(), s["should_be"].as_u64()),
        (Some(resolvable as u64), Some(should_be as u64)),
        "{s}"
    );
    assert_eq!(
        s["ratio"].as_f64(),
        Some(resolvable as f64 / should_be as f64)
    );
}

/// Changes one tenant object behind ldap2exo's back.
fn change(emu: &Emulator, upn: &str, f: impl FnOnce(&mut User)) {
    let mut u = emu
        .user(upn)
        .unwrap_or_else(|| panic!("{upn} not in the tenant"));
    f(&mut u);
    emu.add_user(u);
}

#[test]
fn after_a_full_sync_the_audit_is_clean_and_complete_and_writes_nothing() {
    let n = fixture_should_be();
    assert_eq!(n, 36, "the fixture changed: recount it");
    let site = synced();
    site.emu.reset_counters();
    let report = audit(&site.install, 0, &[]);
    assert_eq!(findings(&report), []);
    assert_ratio(&report, n, n);
    assert_eq!(report["summary"]["people"], 39);
    let quarantined = report["quarantined"].as_array().unwrap();
    assert_eq!(quarantined.len(), 7, "broken entries are listed as such");
    assert!(
        quarantined
            .iter()
            .any(|q| q["dn"].as_str().unwrap().starts_with("uid=zbaker,")),
        "{quarantined:?}"
    );
    let text = site.install.run(&["audit", "gal"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(
        text.stdout
            .contains(&format!("GAL completeness: {n}/{n} people (100.0 %)")),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("Quarantined LDAP entries (7)"));
    // The client secret and the LDAP bind password reach neither the report nor the log.
    for (key, secret) in &site.install.env {
        assert!(
            !text.stdout.contains(secret.as_str()) && !text.stderr.contains(secret.as_str()),
            "{key} leaked"
        );
    }
    assert!(text.stderr.contains("GAL audited"), "{}", text.stderr);
    assert_eq!(site.emu.counters().writes(), 0, "the audit writes nothing");
}

#[test]
fn a_person_not_yet_in_the_tenant_is_missing() {
    let site = synced();
    site.server.add_ldif(
        "dn: uid=newbie,ou=people,dc=example,dc=edu\nobjectClass: inetOrgPerson\nuid: newbie\ncn: Nora Newbie\n\
         sn: Newbie\ngivenName: Nora\ndisplayName: Nora Newbie\nmail: newbie@example.edu\n\
         entryUUID: 5d0c7a3e-2b4f-4e61-9c8a-0000000000a1\n",
    );
    let report = audit(&site.install, 1, &[]);
    assert_eq!(
        findings(&report),
        pairs(&[("missing_from_tenant", "newbie")])
    );
    assert_eq!(
        report["findings"][0]["expected"], "newbie@example.edu",
        "{report}"
    );
    assert_ratio(&report, 36, 37);
}

#[test]
fn a_person_hidden_by_hand_is_a_finding_but_a_hidden_service_mailbox_is_not() {
    let site = synced();
    change(&site.emu, "epatel@example.edu", |u| {
        u.hidden_from_address_lists_enabled = true;
    });
    let report = audit(&site.install, 1, &[]);
    assert_eq!(findings(&report), pairs(&[("hidden_in_gal", "epatel")]));
    assert_ratio(&report, 35, 36);
    // helpdesk is hidden by hidden_filter, and hidden in the tenant: no finding above.
    assert!(
        site.emu
            .user("helpdesk@example.edu")
            .unwrap()
            .hidden_from_address_lists_enabled
    );
}

#[test]
fn a_wrong_primary_and_a_missing_alias_are_each_named() {
    let site = synced();
    change(&site.emu, "adavis@example.edu", |u| {
        u.proxy_addresses = u
            .proxy_addresses
            .iter()
            .filter(|p| !p.eq_ignore_ascii_case("smtp:alice.davis@staff.example.edu"))
            .map(|p| match p.to_ascii_lowercase().as_str() {
                "smtp:adavis@staff.example.edu" => "smtp:adavis@staff.example.edu".to_owned(),
                "smtp:a.davis@example.edu" => "SMTP:a.davis@example.edu".to_owned(),
                _ => p.clone(),
            })
            .collect();
    });
    let report = audit(&site.install, 1, &[]);
    assert_eq!(
        findings(&report),
        pairs(&[
            ("primary_address_wrong", "adavis"),
            ("address_missing", "adavis")
        ])
    );
    let by_code = |c: &str| {
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["code"] == c)
            .unwrap()
            .clone()
    };
    assert_eq!(
        by_code("address_missing")["expected"],
        "alice.davis@staff.example.edu"
    );
    let primary = by_code("primary_address_wrong");
    assert_eq!(primary["expected"], "adavis@staff.example.edu");
    assert_eq!(primary["found"], "a.davis@example.edu");
    // Her LDAP mail is still one of her proxy addresses: senders still resolve to her.
    assert_ratio(&report, 36, 36);
}

#[test]
fn a_mail_user_routed_away_from_on_prem_is_named() {
    let site = synced();
    change(&site.emu, "epatel@example.edu", |u| {
        u.external_email_address = Some("esha.patel@gmail.com".into());
    });
    let report = audit(&site.install, 1, &[]);
    assert_eq!(
        findings(&report),
        pairs(&[("external_address_wrong", "epatel")])
    );
    let f = &report["findings"][0];
    assert_eq!(f["expected"], "epatel@staff.example.edu");
    assert_eq!(f["found"], "esha.patel@gmail.com");
    assert_ratio(&report, 36, 36);
}

#[test]
fn a_mailbox_that_does_not_own_the_forward_target_is_named() {
    let site = synced();
    change(&site.emu, "bmiller@example.edu", |u| {
        u.proxy_addresses
            .retain(|p| !p.eq_ignore_ascii_case("smtp:bmiller@exampleedu.mail.onmicrosoft.com"));
    });
    let report = audit(&site.install, 1, &[]);
    assert_eq!(
        findings(&report),
        pairs(&[("forward_target_not_owned", "bmiller")])
    );
    let f = &report["findings"][0];
    assert_eq!(f["expected"], "bmiller@exampleedu.mail.onmicrosoft.com");
    assert!(f["message"].as_str().unwrap().contains("bounces"), "{f}");
    assert_ratio(&report, 36, 36);
}

#[test]
fn a_forward_into_the_tenant_while_the_tenant_holds_a_mail_user_is_a_loop() {
    let site = synced();
    site.server.modify(
        "dn: uid=adavis,ou=people,dc=example,dc=edu\nchangetype: modify\nadd: mailForwardingAddress\n\
         mailForwardingAddress: adavis@exampleedu.mail.onmicrosoft.com\n",
    );
    let report = audit(&site.install, 1, &[]);
    assert_eq!(findings(&report), pairs(&[("forward_loop", "adavis")]));
    let f = &report["findings"][0];
    assert_eq!(f["found"], "MailUser");
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("adavis@staff.example.edu"),
        "names where the MailUser routes: {f}"
    );
    assert_ratio(&report, 36, 36);
}

#[test]
fn a_managed_object_whose_person_is_gone_is_named_until_sync_hides_it() {
    let site = synced();
    site.server.delete("uid=qali,ou=people,dc=example,dc=edu");
    let report = audit(&site.install, 1, &[]);
    assert_eq!(
        findings(&report),
        pairs(&[("managed_object_without_person", "qali")])
    );
    assert_eq!(
        report["findings"][0]["anchor"],
        "5d0c7a3e-2b4f-4e61-9c8a-000000000038"
    );
    assert_ratio(&report, 35, 35);
    // Sync hides and blocks the leaver for the grace period: that is no finding.
    let run = site.install.run(&["sync", "--max-deletes", "1"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let report = audit(&site.install, 0, &[]);
    assert_ratio(&report, 35, 35);
}

#[test]
fn an_address_held_by_an_unmanaged_group_names_the_group_and_its_type() {
    let site = synced();
    change(&site.emu, "adavis@example.edu", |u| {
        u.proxy_addresses
            .retain(|p| !p.eq_ignore_ascii_case("smtp:a.davis@example.edu"));
    });
    site.emu
        .seed(Seed {
            groups: vec![MailObject {
                name: "Physics Office".into(),
                alias: "physicsoffice".into(),
                proxy_addresses: vec!["SMTP:a.davis@example.edu".into()],
                ..MailObject::default()
            }],
            ..Seed::default()
        })
        .unwrap();
    let report = audit(&site.install, 1, &[]);
    assert_eq!(
        findings(&report),
        pairs(&[("address_held_by_unmanaged", "adavis")])
    );
    let f = &report["findings"][0];
    assert_eq!(f["expected"], "a.davis@example.edu");
    let holder = f["holder"].as_str().unwrap();
    assert!(
        holder.contains("Physics Office") && holder.contains("MailUniversalDistributionGroup"),
        "{holder}"
    );
    assert_ratio(&report, 36, 36);
}

#[test]
fn a_mail_user_licensed_through_a_group_is_named() {
    let site = synced();
    change(&site.emu, "epatel@example.edu", |u| {
        u.group_licenses = vec![GroupLicense {
            sku_id: "4b9405b0-7788-4568-add1-99614e613b69".into(),
            group_id: "0b5d6f4e-1c1a-4d0e-9a35-5f0c9d3b7a11".into(),
        }];
    });
    let report = audit(&site.install, 1, &[]);
    assert_eq!(
        findings(&report),
        pairs(&[("mail_user_licensed", "epatel")])
    );
    assert_eq!(report["findings"][0]["field"], "assignedPlans");
    assert_ratio(&report, 36, 36);
}

/// RFC 4180 rows (quoted fields may hold commas, quotes and line breaks).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows
}

#[test]
fn csv_and_markdown_carry_the_findings_and_exit_codes_follow_the_interface() {
    let site = synced();
    change(&site.emu, "epatel@example.edu", |u| {
        u.hidden_from_address_lists_enabled = true;
    });

    let csv = site.install.run(&["audit", "gal", "--format", "csv"]);
    assert_eq!(csv.code, 1, "{}", csv.stderr);
    let rows = parse_csv(&csv.stdout);
    assert_eq!(
        rows[0],
        [
            "code", "uid", "anchor", "field", "expected", "found", "holder", "message", "fix"
        ]
    );
    assert!(rows.iter().all(|r| r.len() == 9), "{rows:?}");
    let hidden: Vec<_> = rows.iter().filter(|r| r[0] == "hidden_in_gal").collect();
    assert_eq!(hidden.len(), 1);
    assert_eq!(hidden[0][1], "epatel");
    assert!(
        hidden[0][7].contains("epatel@staff.example.edu"),
        "{:?}",
        hidden[0]
    );
    assert_eq!(rows.iter().filter(|r| r[0] == "quarantined").count(), 7);

    let md = site.install.run(&["audit", "gal", "--format", "markdown"]);
    assert_eq!(md.code, 1, "{}", md.stderr);
    assert!(
        md.stdout
            .contains("**GAL completeness: 35/36 people (97.2 %)**"),
        "{}",
        md.stdout
    );
    assert!(
        md.stdout
            .contains("| `hidden_in_gal` | epatel | HiddenFromAddressListsEnabled |")
    );
    assert!(md.stdout.contains("## Quarantined LDAP entries (7)"));

    let text = site.install.run(&["audit", "gal"]);
    assert_eq!(text.code, 1);
    assert!(
        text.stdout.contains("[hidden_in_gal] epatel:"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("Fix: run `ldap2exo sync`"));
    assert!(
        text.stdout
            .contains("GAL completeness: 35/36 people (97.2 %)")
    );

    // --only audits just those people: one with the finding, one without.
    let only = audit(&site.install, 1, &["--only", "epatel"]);
    assert_eq!(findings(&only), pairs(&[("hidden_in_gal", "epatel")]));
    assert_ratio(&only, 0, 1);
    let clean = audit(&site.install, 0, &["--only", "adavis"]);
    assert_ratio(&clean, 1, 1);

    // --output: the report goes to the file; one that cannot be created is exit 2.
    let file = site.install.dir.path().join("audit.json");
    let run = site.install.run(&[
        "audit",
        "gal",
        "--format",
        "json",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(written["summary"]["should_be"], 36);
    let missing = site.install.dir.path().join("no/such/dir/audit.json");
    let run = site
        .install
        .run(&["audit", "gal", "--output", missing.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);

    // No state store is needed: its directory may not even exist.
    let config = std::fs::read_to_string(&site.install.config).unwrap();
    let state = format!("{:?}", site.install.state.display().to_string());
    assert!(config.contains(&state));
    std::fs::write(
        &site.install.config,
        config.replace(&state, "\"/nonexistent/ldap2exo/state.db\""),
    )
    .unwrap();
    let stateless = audit(&site.install, 1, &[]);
    assert_eq!(findings(&stateless), pairs(&[("hidden_in_gal", "epatel")]));
}

#[test]
fn without_tenant_credentials_the_audit_is_a_configuration_error() {
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::new(&server);
    let run = install.run(&["audit", "gal"]);
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("tenant.tenant_id"), "{}", run.stderr);
}
