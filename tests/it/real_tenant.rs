//! `ldap2exo sync` against a tenant that behaves like Microsoft's: the strict emulator's
//! propagation delays between Exchange and Graph, 404s right after a create, mailboxes that
//! take a while to appear, addresses held by groups, group-assigned licences without
//! Exchange, lost answers and refused restores. Each test is one "done when" of the issue
//! "Correct against the real tenant", end to end: real slapd, the emulator over HTTPS, a real
//! SQLite state store.

use ldap2exo_emulator::{
    FaultAction, FaultConfig, FaultRule, GroupLicense, MailObject, MailObjectKind, Origin,
    RecipientKind, SkuConfig, User,
};
use serde_json::Value;

use crate::support::cli::{DAY, Install, Run, T0};
use crate::support::slapd::{Slapd, SlapdOptions};
use crate::sync::{
    QALI_BACK, assert_no_duplicates, assert_settled, by_upn, campus_emulator, campus_emulator_with,
    converge_after, live, runtime, show_run, stamp_of, stamped, sync,
};

/// The JSON report of a real run (`--format json`): the plan plus `results` and `applied`.
fn sync_json(install: &Install) -> (Run, Value) {
    let run = install.run(&["sync", "--format", "json"]);
    let report = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", show_run(&run)));
    (run, report)
}

fn has(u: &User, proxy: &str) -> bool {
    u.proxy_addresses.iter().any(|p| p == proxy)
}

fn primaries(u: &User) -> Vec<&String> {
    u.proxy_addresses
        .iter()
        .filter(|p| p.starts_with("SMTP:"))
        .collect()
}

#[test]
fn a_first_sync_with_microsofts_timing_converges_in_two_runs_and_the_third_writes_nothing() {
    let rt = runtime();
    // Mailboxes take longer to appear than ldap2exo waits within a run.
    let emu = campus_emulator_with(&rt, Vec::new(), |cfg| {
        cfg.realism.mailbox_provisioning_ms = 6_000;
        cfg.realism.create_404_ms = 800;
        cfg.realism.exchange_to_graph_ms = 2_000;
        cfg.realism.graph_to_exchange_ms = 2_000;
    });
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::with_tenant(&server, &emu);

    let first = sync(&install, 0);
    assert!(
        first.stdout.contains("Applied: 39 done, 0 pending")
            || first
                .stdout
                .contains(" pending, 0 skipped, 0 conflicts, 0 failed"),
        "{}",
        show_run(&first)
    );
    assert!(
        first.stdout.contains("pending: create bmiller"),
        "a mailbox still being provisioned is shown as pending: {}",
        show_run(&first)
    );
    std::thread::sleep(std::time::Duration::from_millis(6_500));
    let second = sync(&install, 0);
    assert!(
        second
            .stdout
            .contains(" 0 pending, 0 skipped, 0 conflicts, 0 failed"),
        "the second run finishes every pending mailbox: {}",
        show_run(&second)
    );
    let state = emu.state();
    assert_no_duplicates(&state);
    assert_eq!(stamped(&state), 39);
    let bmiller = by_upn(&state, "bmiller@example.edu");
    assert_eq!(
        bmiller.recipient_type_details,
        Some(RecipientKind::UserMailbox)
    );
    assert!(
        has(bmiller, "smtp:bmiller@exampleedu.mail.onmicrosoft.com"),
        "the mailbox owns the LDAP forward target: {:?}",
        bmiller.proxy_addresses
    );
    assert_eq!(primaries(bmiller), ["SMTP:bmiller@staff.example.edu"]);

    std::thread::sleep(std::time::Duration::from_millis(2_500));
    // The third run writes nothing.
    assert_settled(&install, &emu);
}

#[test]
fn a_second_sync_during_propagation_creates_nothing_twice_and_reports_no_drift() {
    let rt = runtime();
    let emu = campus_emulator_with(&rt, Vec::new(), |cfg| {
        cfg.realism.exchange_to_graph_ms = 8_000;
        cfg.realism.graph_to_exchange_ms = 8_000;
        cfg.realism.mailbox_provisioning_ms = 1_000;
    });
    let server = Slapd::start(SlapdOptions::default());
    let mut install = Install::with_tenant(&server, &emu);
    // Wait out the 404 right after a create, not Graph's view of the new MailUsers: the
    // second run starts while Graph does not show them yet.
    install.env.push((
        "LDAP2EXO__TENANT__PROPAGATION_WAIT_SECONDS".into(),
        "2".into(),
    ));
    let (first, _) = sync_json(&install);
    assert_eq!(first.code, 0, "{}", show_run(&first));

    let (second, report) = sync_json(&install);
    assert_eq!(second.code, 0, "{}", show_run(&second));
    assert_eq!(report["summary"]["create"], 0, "{}", show_run(&second));
    assert!(
        report
            .get("drift")
            .is_none_or(|d| d.as_array().is_some_and(Vec::is_empty)),
        "values still propagating are no drift: {}",
        report["drift"]
    );
    let state = emu.state();
    assert_no_duplicates(&state);
    assert_eq!(stamped(&state), 39);

    // Once everything has propagated, the rest (sign-in of the MailUsers, the mailboxes'
    // addresses) is finished and a further run writes nothing.
    std::thread::sleep(std::time::Duration::from_millis(8_500));
    converge_after(&install, 2, &[first, second]);
    let state = emu.state();
    assert!(
        !by_upn(&state, "adavis@example.edu").account_enabled,
        "a MailUser's sign-in is blocked once Graph shows it"
    );
    assert_settled(&install, &emu);
}

#[test]
fn a_rename_of_a_mailbox_changes_the_primary_and_keeps_the_old_one() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::with_tenant(&server, &emu);
    let first = sync(&install, 0);
    std::thread::sleep(std::time::Duration::from_millis(3_000));
    converge_after(&install, 2, &[first]);

    server.modify("dn: uid=bmiller,ou=people,dc=example,dc=edu\nchangetype: modify\nreplace: mail\nmail: brian.miller@staff.example.edu\n");
    server.modify("dn: uid=adavis,ou=people,dc=example,dc=edu\nchangetype: modify\nreplace: mail\nmail: alice.smith@staff.example.edu\n");
    let run = sync(&install, 0);
    let state = emu.state();
    let bmiller = by_upn(&state, "bmiller@example.edu");
    assert_eq!(
        primaries(bmiller),
        ["SMTP:brian.miller@staff.example.edu"],
        "{}",
        show_run(&run)
    );
    assert!(
        has(bmiller, "smtp:bmiller@staff.example.edu"),
        "{:?}",
        bmiller.proxy_addresses
    );
    assert!(
        has(bmiller, "smtp:bmiller@exampleedu.mail.onmicrosoft.com"),
        "the routing address stays: {:?}",
        bmiller.proxy_addresses
    );
    assert!(
        bmiller
            .proxy_addresses
            .iter()
            .any(|p| p.ends_with("@exampleedu.onmicrosoft.com")),
        "the MOERA the tenant added stays: {:?}",
        bmiller.proxy_addresses
    );
    let adavis = by_upn(&state, "adavis@example.edu");
    assert_eq!(primaries(adavis), ["SMTP:alice.smith@staff.example.edu"]);
    assert!(has(adavis, "smtp:adavis@staff.example.edu"));
    assert_settled(&install, &emu);
}

#[test]
fn an_alias_held_by_a_distribution_group_is_reported_while_the_person_is_created() {
    let rt = runtime();
    let emu = campus_emulator_with(&rt, Vec::new(), |cfg| {
        cfg.seed.groups = vec![MailObject {
            name: "Physics Office".into(),
            alias: "physics".into(),
            display_name: Some("Physics Office".into()),
            proxy_addresses: vec![
                "SMTP:physics@example.edu".into(),
                // Alice Davis's LDAP alias.
                "smtp:a.davis@example.edu".into(),
            ],
            kind: MailObjectKind::MailUniversalDistributionGroup,
            ..MailObject::default()
        }];
    });
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::with_tenant(&server, &emu);
    let run = sync(&install, 1);
    assert!(
        run.stdout.contains("conflict: create adavis"),
        "{}",
        show_run(&run)
    );
    assert!(
        run.stdout.contains("a.davis@example.edu") && run.stdout.contains("Physics Office"),
        "the address and its owner are named: {}",
        run.stdout
    );
    let state = emu.state();
    let adavis = by_upn(&state, "adavis@example.edu");
    assert!(stamp_of(adavis).is_some(), "the person is created anyway");
    assert_eq!(primaries(adavis), ["SMTP:adavis@staff.example.edu"]);
    assert!(has(adavis, "smtp:alice.davis@staff.example.edu"));
    assert!(
        !adavis
            .proxy_addresses
            .iter()
            .any(|p| p.eq_ignore_ascii_case("smtp:a.davis@example.edu"))
    );
    assert_eq!(adavis.department.as_deref(), Some("Physics"));

    // Still reported on the next run, and nothing is sent for it.
    std::thread::sleep(std::time::Duration::from_millis(3_000));
    sync(&install, 1);
    emu.reset_counters();
    let again = sync(&install, 1);
    assert!(
        again.stdout.contains("a.davis@example.edu"),
        "{}",
        again.stdout
    );
    assert_eq!(emu.counters().writes(), 0, "{}", show_run(&again));
}

#[test]
fn a_managed_mail_user_with_a_group_licence_without_exchange_stays_a_mail_user() {
    let rt = runtime();
    let stream = SkuConfig::without_exchange(100);
    let stream_id = stream.sku_id.clone();
    // Alice Davis, provisioned by an earlier ldap2exo, and since then given a Teams-like
    // licence without Exchange by a group.
    let adavis = User {
        user_principal_name: "adavis@example.edu".into(),
        mail_nickname: "adavis".into(),
        display_name: Some("Alice Davis".into()),
        given_name: Some("Alice".into()),
        surname: Some("Davis".into()),
        department: Some("Physics".into()),
        account_enabled: false,
        recipient_type_details: Some(RecipientKind::MailUser),
        exchange_name: Some("adavis".into()),
        external_email_address: Some("adavis@staff.example.edu".into()),
        proxy_addresses: vec![
            "SMTP:adavis@staff.example.edu".into(),
            "smtp:a.davis@example.edu".into(),
            "smtp:alice.davis@staff.example.edu".into(),
        ],
        extension_attributes: [(
            15,
            "ldap2exo:5d0c7a3e-2b4f-4e61-9c8a-000000000006".to_owned(),
        )]
        .into(),
        group_licenses: vec![GroupLicense {
            sku_id: stream_id,
            group_id: "0f0f0f0f-0000-4000-8000-00000000aaaa".into(),
        }],
        origin: Origin::Exchange,
        ..User::default()
    };
    let emu = campus_emulator_with(&rt, vec![adavis], |cfg| cfg.tenant.skus.push(stream));
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::with_tenant(&server, &emu);
    let (run, report) = sync_json(&install);
    assert_eq!(run.code, 0, "{}", show_run(&run));
    let text = report.to_string();
    assert!(!text.contains("kind mail_user → mailbox"), "{text}");
    assert!(
        report["actions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["uid"] != "adavis" || a["op"] == "update"),
        "adopted as the MailUser it is, never converted: {}",
        report["actions"]
    );
    let state = emu.state();
    let adavis = by_upn(&state, "adavis@example.edu");
    assert_eq!(adavis.recipient_type_details, Some(RecipientKind::MailUser));
    assert!(install.dry_run(0, &[]).actions.is_empty());
}

#[test]
fn a_lost_new_mail_user_answer_is_adopted_not_blocked() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    emu.set_faults(FaultConfig {
        rules: vec![FaultRule {
            endpoint: "EXO New-MailUser".into(),
            action: FaultAction::DropResponse,
            count: 1,
        }],
        ..FaultConfig::default()
    })
    .unwrap();
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::with_tenant(&server, &emu);
    let run = sync(&install, 0);
    assert!(
        run.stderr.contains("found and adopted its object"),
        "{}",
        show_run(&run)
    );
    let state = emu.state();
    assert_no_duplicates(&state);
    assert_eq!(stamped(&state), 39, "{}", show_run(&run));
    assert_eq!(
        emu.counters().endpoint("EXO New-MailUser").requests,
        31,
        "one New-MailUser per MailUser, the lost one not sent again"
    );
    std::thread::sleep(std::time::Duration::from_millis(3_000));
    converge_after(&install, 2, &[run]);
}

#[test]
fn a_person_back_within_the_grace_period_with_a_new_mail_and_aliases_gets_them_all() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let mut install = Install::with_tenant(&server, &emu);
    sync(&install, 0);
    server.modify("dn: uid=rjensen,ou=people,dc=example,dc=edu\nchangetype: modify\nadd: shadowExpire\nshadowExpire: 1\n");
    install.now = T0 + DAY;
    let run = install.run(&["sync", "--max-deletes", "1"]);
    assert_eq!(run.code, 0, "{}", show_run(&run));
    assert!(by_upn(&emu.state(), "rjensen@example.edu").hidden_from_address_lists_enabled);

    // Back as staff two weeks later: new mail, new aliases, same entryUUID.
    install.now = T0 + 15 * DAY;
    server.modify(
        "dn: uid=rjensen,ou=people,dc=example,dc=edu\nchangetype: modify\ndelete: shadowExpire\n-\nadd: objectClass\nobjectClass: mailRecipientExt\n-\nreplace: mail\nmail: rasmus.jensen@staff.example.edu\n-\nreplace: mailAlternateAddress\nmailAlternateAddress: r.jensen@staff.example.edu\nmailAlternateAddress: rj@example.edu\n-\nreplace: displayName\ndisplayName: Dr. Rasmus Jensen\n",
    );
    let back = sync(&install, 0);
    let state = emu.state();
    let rjensen = by_upn(&state, "rjensen@example.edu");
    assert!(
        !rjensen.hidden_from_address_lists_enabled,
        "{}",
        show_run(&back)
    );
    assert_eq!(primaries(rjensen), ["SMTP:rasmus.jensen@staff.example.edu"]);
    assert!(
        has(rjensen, "smtp:r.jensen@staff.example.edu"),
        "{:?}",
        rjensen.proxy_addresses
    );
    assert!(
        has(rjensen, "smtp:rj@example.edu"),
        "{:?}",
        rjensen.proxy_addresses
    );
    assert_eq!(
        rjensen.external_email_address.as_deref(),
        Some("rasmus.jensen@staff.example.edu"),
        "mail to the MailUser goes to the new on-prem address"
    );
    assert_eq!(rjensen.display_name.as_deref(), Some("Dr. Rasmus Jensen"));
    assert_settled(&install, &emu);
}

#[test]
fn a_restore_refused_with_503_creates_nothing_and_the_next_run_restores() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let mut install = Install::with_tenant(&server, &emu);
    sync(&install, 0);
    server.delete("uid=qali,ou=people,dc=example,dc=edu");
    install.now = T0 + DAY;
    assert_eq!(install.run(&["sync", "--max-deletes", "1"]).code, 0);
    install.now = T0 + 40 * DAY;
    assert_eq!(install.run(&["sync", "--max-deletes", "1"]).code, 0);
    let state = emu.state();
    let deleted_id = state
        .users
        .iter()
        .find(|u| u.user_principal_name == "qali@example.edu" && u.deleted_unix.is_some())
        .expect("soft-deleted")
        .id
        .clone();

    // Back, while the recycle bin answers 503 (more often than the client retries).
    install.now = T0 + 41 * DAY;
    server.add_ldif(QALI_BACK);
    emu.set_faults(FaultConfig {
        rules: vec![FaultRule {
            endpoint: "POST /v1.0/directory/deletedItems/{id}/restore".into(),
            action: FaultAction::Fail { status: 503 },
            count: 20,
        }],
        ..FaultConfig::default()
    })
    .unwrap();
    let refused = sync(&install, 1);
    assert!(
        refused.stdout.contains("failed: create qali") && refused.stdout.contains("503"),
        "the refusal and its status are reported: {}",
        show_run(&refused)
    );
    let state = emu.state();
    assert!(
        !live(&state)
            .iter()
            .any(|u| u.user_principal_name == "qali@example.edu"),
        "nothing is created while the restore is refused"
    );

    emu.set_faults(FaultConfig::default()).unwrap();
    sync(&install, 0);
    let state = emu.state();
    assert_eq!(
        by_upn(&state, "qali@example.edu").id,
        deleted_id,
        "restored, not created"
    );
    assert_no_duplicates(&state);
}

#[test]
fn every_refused_request_names_the_services_reason() {
    let rt = runtime();
    // Someone made a cloud-only user with Alice Davis's UPN.
    let squatter = User {
        user_principal_name: "adavis@example.edu".into(),
        mail_nickname: "adavis-cloud".into(),
        display_name: Some("Alice (cloud)".into()),
        ..User::default()
    };
    let emu = campus_emulator(&rt, vec![squatter]);
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::with_tenant(&server, &emu);
    // Exchange refuses one Set-User with its own words, whatever the cause.
    emu.set_faults(FaultConfig {
        rules: vec![FaultRule {
            endpoint: "EXO Set-User".into(),
            action: FaultAction::Fail { status: 400 },
            count: 1,
        }],
        ..FaultConfig::default()
    })
    .unwrap();
    let (run, report) = sync_json(&install);
    assert_eq!(run.code, 1, "{}", show_run(&run));
    let not_done: Vec<&Value> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] != "done" && r["outcome"] != "pending")
        .collect();
    assert!(not_done.len() >= 2, "{not_done:?}");
    for r in &not_done {
        let detail = r["detail"].as_str().unwrap_or_default();
        // Never the generic envelope text alone: the request, and what the service said.
        assert!(
            !detail.is_empty() && !detail.ends_with("Error executing cmdlet"),
            "{r}"
        );
    }
    let adavis = not_done
        .iter()
        .find(|r| r["uid"] == "adavis")
        .expect("adavis refused");
    assert_eq!(adavis["outcome"], "conflict");
    assert!(
        adavis["detail"]
            .as_str()
            .unwrap()
            .contains("adavis@example.edu"),
        "the address at fault: {adavis}"
    );
    let refused = not_done
        .iter()
        .find(|r| r["detail"].as_str().unwrap().contains("Set-User"))
        .expect("the Set-User refusal is reported");
    let detail = refused["detail"].as_str().unwrap();
    // The service's reason lives in error.details[0] behind `Ex…|Type|`; error.message is
    // only "Error executing cmdlet".
    assert!(
        detail.contains("Injected failure 400") && !detail.contains("Error executing cmdlet"),
        "the reason from error.details, not the generic message: {detail}"
    );
}
