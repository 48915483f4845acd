//! `ldap2exo migrate`: IMAP migration of a cohort, end to end against the campus slapd and the
//! strict tenant emulator: MailUsers become licensed mailboxes forwarding to on-prem, a batch
//! is created with the master-user CSV, sync does not fight it, cutover rewrites the LDAP
//! forward and the next sync converges. The IMAP master password reaches nothing but the CSV.

use ldap2exo::source::{self, Selection};
use ldap2exo_emulator::{DomainConfig, DomainType, Emulator, RecipientKind, User};
use serde_json::Value;

use crate::support::cli::{Install, Run};
use crate::support::slapd::{Slapd, SlapdOptions};
use crate::sync::{assert_settled, by_upn, campus_emulator, campus_emulator_with, runtime, sync};

const MASTER_PASSWORD: &str = "Imap-Master,\"pw\"-7c1e5a";
const COHORT: [&str; 2] = ["adavis", "jmueller"];

/// An installation with a `[migration]` section; secrets through the environment, logs at
/// debug level.
fn migration_install(server: &Slapd, emu: &Emulator) -> Install {
    let mut install = Install::with_tenant(server, emu);
    let mut text = std::fs::read_to_string(&install.config).unwrap();
    text.push_str(&format!(
        "\n[migration]\nimap_server = \"imap.example.edu\"\nmaster_user = \"migration\"\n\
         onprem_routing_domain = \"mbox.example.edu\"\nwrite_bind_dn = \"{}\"\n",
        server.root_dn()
    ));
    std::fs::write(&install.config, text).unwrap();
    install.env.extend([
        (
            "LDAP2EXO__MIGRATION__MASTER_PASSWORD".to_owned(),
            MASTER_PASSWORD.to_owned(),
        ),
        (
            "LDAP2EXO__MIGRATION__WRITE_BIND_PASSWORD".to_owned(),
            server.root_password().to_owned(),
        ),
        ("LDAP2EXO_LOG".to_owned(), "debug".to_owned()),
    ]);
    install
}

/// The campus tenant with the on-prem routing domain as an InternalRelay accepted domain, as
/// a migration needs.
fn migration_emulator(rt: &tokio::runtime::Runtime) -> Emulator {
    campus_emulator_with(rt, Vec::new(), |c| {
        c.tenant.domains.push(DomainConfig {
            name: "mbox.example.edu".into(),
            verified: true,
            domain_type: DomainType::InternalRelay,
        });
    })
}

fn show(run: &Run) -> String {
    format!("stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr)
}

/// `migrate start` until the whole cohort is in a batch (mailbox provisioning takes a few
/// seconds in the strict emulator); each repeat must be harmless.
fn start_until_batched(install: &Install, seen: &mut String) -> Run {
    for _ in 0..12 {
        let run = install.run(&[
            "migrate", "start", "--only", COHORT[0], COHORT[1], "--batch", "cohort1",
        ]);
        seen.push_str(&run.stdout);
        seen.push_str(&run.stderr);
        if run.code == 0 {
            return run;
        }
        assert_eq!(run.code, 1, "{}", show(&run));
        assert!(
            run.stdout.contains("run migrate start again"),
            "{}",
            show(&run)
        );
        std::thread::sleep(std::time::Duration::from_millis(800));
    }
    panic!("the cohort never got into a batch");
}

fn forward_in_ldap(server: &Slapd, rt: &tokio::runtime::Runtime, uid: &str) -> Vec<String> {
    let entries = rt
        .block_on(source::read(
            &server.ldap_config(),
            &Selection::Only(vec![uid.into()]),
        ))
        .unwrap();
    entries[0].values("mailForwardingAddress").to_vec()
}

fn mailbox(emu: &Emulator, uid: &str) -> User {
    by_upn(&emu.state(), &format!("{uid}@example.edu")).clone()
}

#[test]
fn a_cohort_migrates_from_mail_users_to_mailboxes_and_cuts_over() {
    let rt = runtime();
    let emu = migration_emulator(&rt);
    emu.set_migration_sync_ms(300);
    let server = Slapd::start(SlapdOptions::default());
    let mut install = migration_install(&server, &emu);
    let mut seen = String::new();
    let record = |run: &Run, seen: &mut String| {
        seen.push_str(&run.stdout);
        seen.push_str(&run.stderr);
    };
    let first = sync(&install, 0);
    record(&first, &mut seen);
    for uid in COHORT {
        assert_eq!(
            mailbox(&emu, uid).recipient_type_details,
            Some(RecipientKind::MailUser)
        );
    }

    // Plan: a quarantined person stops the cohort and is named; without them it could start.
    let run = install.run(&[
        "migrate", "plan", "--only", "adavis", "jmueller", "kwright", "--format", "json",
    ]);
    record(&run, &mut seen);
    assert_eq!(run.code, 1, "{}", show(&run));
    let report = run.json();
    let people = report["people"].as_array().unwrap();
    let state_of = |uid: &str| {
        people
            .iter()
            .find(|p| p["uid"] == uid)
            .unwrap_or_else(|| panic!("{uid} not in {report:#}"))["state"]
            .clone()
    };
    assert_eq!(state_of("kwright"), "quarantined");
    assert_eq!(state_of("adavis"), "mail_user_to_license");
    assert_eq!(report["batches"], 1);
    let run = install.run(&["migrate", "plan", "--only", "adavis", "jmueller"]);
    record(&run, &mut seen);
    assert_eq!(run.code, 0, "{}", show(&run));
    assert!(run.stdout.contains("Licences: 2 needed"), "{}", run.stdout);
    // Someone LDAP already forwards into the tenant is skipped, as start skips them.
    let run = install.run(&[
        "migrate", "plan", "--only", "adavis", "jmueller", "bmiller", "--format", "json",
    ]);
    record(&run, &mut seen);
    assert_eq!(run.code, 0, "{}", show(&run));
    let report = run.json();
    let bmiller = report["people"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["uid"] == "bmiller")
        .unwrap()
        .clone();
    assert_eq!(
        (&bmiller["state"], &bmiller["can_start"]),
        (&Value::from("already_in_tenant"), &Value::from(true)),
        "{report:#}"
    );
    assert_eq!(report["batches"], 1);
    let run = install.run(&["migrate", "plan", "--only", "bmiller"]);
    assert_eq!(run.code, 1, "nobody to migrate: {}", show(&run));
    assert_eq!(emu.migration_csvs().len(), 0, "a plan creates nothing");

    // Start: licensed in place, forwarding to on-prem, one batch with exactly their rows.
    start_until_batched(&install, &mut seen);
    for uid in COHORT {
        let u = mailbox(&emu, uid);
        assert_eq!(
            u.recipient_type_details,
            Some(RecipientKind::UserMailbox),
            "{uid}"
        );
        assert_eq!(
            u.forwarding_smtp_address.as_deref(),
            Some(format!("{uid}@mbox.example.edu").as_str())
        );
        assert!(!u.deliver_to_mailbox_and_forward);
        // The mailbox owns the routing address before cutover points LDAP at it.
        let routing = format!("smtp:{uid}@exampleedu.mail.onmicrosoft.com");
        assert!(
            u.proxy_addresses
                .iter()
                .any(|p| p.eq_ignore_ascii_case(&routing)),
            "{uid}: {:?}",
            u.proxy_addresses
        );
    }
    let csvs = emu.migration_csvs();
    assert_eq!(csvs.len(), 1, "{csvs:?}");
    assert_eq!(csvs[0].0, "cohort1");
    let mut lines: Vec<&str> = csvs[0].1.lines().collect();
    assert_eq!(lines.remove(0), "EmailAddress,UserName,Password");
    lines.sort();
    assert_eq!(
        lines,
        [
            "adavis@staff.example.edu,adavis*migration,\"Imap-Master,\"\"pw\"\"-7c1e5a\"",
            "jmueller@staff.example.edu,jmueller*migration,\"Imap-Master,\"\"pw\"\"-7c1e5a\"",
        ]
    );
    // Repeated: idempotent, no second endpoint or batch for the same people.
    let again = install.run(&["migrate", "start", "--only", "adavis", "jmueller"]);
    record(&again, &mut seen);
    assert_eq!(again.code, 0, "{}", show(&again));
    assert!(again.stdout.contains("already in migration batch cohort1"));
    assert_eq!(emu.migration_csvs().len(), 1);
    let calls = emu.counters();
    assert_eq!(calls.endpoint("EXO New-MigrationEndpoint").requests, 1);
    assert_eq!(calls.endpoint("EXO New-MigrationBatch").requests, 1);

    // A plan by LDAP filter finds the same people, already in their batch.
    let run = install.run(&[
        "migrate",
        "plan",
        "--filter",
        "(|(uid=adavis)(uid=jmueller))",
        "--format",
        "json",
    ]);
    record(&run, &mut seen);
    assert_eq!(run.code, 0, "{}", show(&run));
    let people = run.json()["people"].clone();
    assert_eq!(people.as_array().unwrap().len(), 2, "{people:#}");
    assert!(
        people
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["state"] == "in_batch"),
        "{people:#}"
    );

    // Sync does not fight the migration: nothing planned, nothing written.
    assert_settled(&install, &emu);
    // Nor does the GAL audit: a migrating person's mailbox is what the mapping wants.
    let run = install.run(&["audit", "gal", "--format", "json"]);
    record(&run, &mut seen);
    assert_eq!(run.code, 0, "audit during the migration: {}", show(&run));

    // Status: the batch and its people with their stage.
    std::thread::sleep(std::time::Duration::from_millis(400));
    let run = install.run(&["migrate", "status", "--format", "json"]);
    record(&run, &mut seen);
    assert_eq!(run.code, 0, "{}", show(&run));
    let st = run.json();
    assert_eq!(st["batches"][0]["name"], "cohort1");
    assert_eq!(st["batches"][0]["status"], "Synced");
    let users = st["users"].as_array().unwrap();
    assert_eq!(users.len(), 2, "{st:#}");
    let text = install.run(&["migrate", "status", "--batch", "cohort1"]);
    record(&text, &mut seen);
    assert!(
        text.stdout.contains("cohort1") && text.stdout.contains("adavis@staff.example.edu"),
        "{}",
        show(&text)
    );
    assert!(
        users
            .iter()
            .all(|u| u["stage"] == "batched" && u["status"] == "Synced")
    );
    // A forwarding changed in Exchange (OWA) is named: sync compares it only with the store.
    let before = mailbox(&emu, "adavis");
    let mut changed = before.clone();
    changed.forwarding_smtp_address = Some("adavis.private@gmail.com".into());
    emu.add_user(changed);
    let run = install.run(&["migrate", "status"]);
    record(&run, &mut seen);
    assert_eq!(run.code, 1, "{}", show(&run));
    assert!(
        run.stderr.contains(
            "adavis: the mailbox forwards to adavis.private@gmail.com instead of adavis@mbox.example.edu: changed in Exchange (e.g. Outlook on the web), or [migration] onprem_routing_domain changed since start"
        ),
        "{}",
        show(&run)
    );
    emu.add_user(before);

    // Cutover of someone not migrating is refused by name.
    let run = install.run(&["migrate", "cutover", "--only", "bthompson"]);
    record(&run, &mut seen);
    assert_eq!(run.code, 1, "{}", show(&run));
    assert!(
        run.stderr.contains("bthompson: not migrating"),
        "{}",
        show(&run)
    );

    // Cutover without --apply prints the LDIF and changes nothing.
    let run = install.run(&["migrate", "cutover", "--only", "adavis", "jmueller"]);
    record(&run, &mut seen);
    assert_eq!(run.code, 0, "{}", show(&run));
    assert!(run.stdout.contains(
        "dn: uid=adavis,ou=people,dc=example,dc=edu\nchangetype: modify\nreplace: mailForwardingAddress\nmailForwardingAddress: adavis@exampleedu.mail.onmicrosoft.com\n-\n"
    ), "{}", run.stdout);
    assert!(
        run.stderr
            .contains("run at once: ldap2exo sync --only adavis jmueller"),
        "{}",
        show(&run)
    );
    assert!(forward_in_ldap(&server, &rt, "adavis").is_empty());

    // A write bind without the right to write: nothing changes, nobody is cut over.
    install.env.extend([
        (
            "LDAP2EXO__MIGRATION__WRITE_BIND_DN".to_owned(),
            server.service_dn().to_owned(),
        ),
        (
            "LDAP2EXO__MIGRATION__WRITE_BIND_PASSWORD".to_owned(),
            server.service_password().to_owned(),
        ),
    ]);
    let run = install.run(&["migrate", "cutover", "--only", "adavis", "--apply"]);
    record(&run, &mut seen);
    assert_eq!(run.code, 1, "{}", show(&run));
    assert!(run.stderr.contains("writing LDAP failed"), "{}", show(&run));
    assert!(
        run.stdout
            .contains("adavis: NOT cut over: modifying `uid=adavis,ou=people,dc=example,dc=edu`")
            && run.stdout.contains("insufficientAccessRights (50)"),
        "{}",
        show(&run)
    );
    // The LDIF printed is what LDAP still lacks.
    assert!(
        run.stdout
            .contains("dn: uid=adavis,ou=people,dc=example,dc=edu"),
        "{}",
        show(&run)
    );
    assert!(forward_in_ldap(&server, &rt, "adavis").is_empty());
    install.env.truncate(install.env.len() - 2);

    // With --apply the forward points into the tenant, and the same command removes the
    // forwarding to on-prem at once: no mail goes back and forth until the next sync.
    let run = install.run(&["migrate", "cutover", "--only", "adavis", "--apply"]);
    record(&run, &mut seen);
    assert_eq!(run.code, 0, "{}", show(&run));
    assert_eq!(
        forward_in_ldap(&server, &rt, "adavis"),
        ["adavis@exampleedu.mail.onmicrosoft.com"]
    );
    assert_eq!(mailbox(&emu, "adavis").forwarding_smtp_address, None);
    assert_eq!(
        mailbox(&emu, "jmueller").forwarding_smtp_address.as_deref(),
        Some("jmueller@mbox.example.edu"),
        "only the person cut over"
    );
    assert!(run.stdout.contains("adavis: cut over"), "{}", show(&run));
    assert!(
        !run.stdout.contains("dn: "),
        "all written: no LDIF\n{}",
        show(&run)
    );
    // Again: already done, not a failure.
    let run = install.run(&["migrate", "cutover", "--only", "adavis", "--apply"]);
    record(&run, &mut seen);
    assert_eq!(run.code, 0, "{}", show(&run));
    assert!(
        run.stdout.contains("adavis: already cut over on 20"),
        "{}",
        show(&run)
    );
    let run = install.run(&["migrate", "status", "--batch", "no-such-batch"]);
    assert_eq!(run.code, 1, "{}", show(&run));
    assert!(
        run.stderr.contains("no migration batch no-such-batch"),
        "{}",
        show(&run)
    );

    // The operator applies the printed LDIF by hand; the state store still says `batched`.
    // LDAP forwarding into the tenant wins: the next sync removes the forwarding.
    let mut writer = server.ldap_config();
    writer.bind_dn = Some(server.root_dn().to_owned());
    writer.bind_password = Some(ldap2exo::secret::Secret::new(
        server.root_password().to_owned(),
    ));
    let (done, outcome) = rt.block_on(source::replace_values(
        &writer,
        &[(
            "uid=jmueller,ou=people,dc=example,dc=edu".to_owned(),
            "mailForwardingAddress".to_owned(),
            "jmueller@exampleedu.mail.onmicrosoft.com".to_owned(),
        )],
    ));
    outcome.unwrap();
    assert_eq!(done, 1);
    let report = install.dir.path().join("report.json");
    let run = install.run(&[
        "sync",
        "--format",
        "json",
        "--output",
        report.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", show(&run));
    record(&run, &mut seen);
    for uid in COHORT {
        let u = mailbox(&emu, uid);
        assert_eq!(u.forwarding_smtp_address, None, "{uid}");
        assert_eq!(u.recipient_type_details, Some(RecipientKind::UserMailbox));
        let routing = format!("smtp:{uid}@exampleedu.mail.onmicrosoft.com");
        assert!(
            u.proxy_addresses
                .iter()
                .any(|p| p.eq_ignore_ascii_case(&routing)),
            "{:?}",
            u.proxy_addresses
        );
    }
    assert_settled(&install, &emu);
    // After cutover and sync the GAL audit is clean, and everyone resolves.
    let run = install.run(&["audit", "gal", "--format", "json"]);
    record(&run, &mut seen);
    assert_eq!(run.code, 0, "audit after cutover: {}", show(&run));
    let summary = &run.json()["summary"];
    assert_eq!(summary["resolvable"], summary["should_be"], "{summary:#}");

    // The master password: only in the CSV the emulator received.
    assert!(seen.contains("DEBUG"), "debug logging was on");
    assert!(
        !seen.contains("Imap-Master"),
        "the master password was printed"
    );
    // Nor the LDAP write bind's password, which a refused write put through the error path.
    assert!(
        !seen.contains(server.service_password()),
        "the LDAP write password was printed"
    );
    // The state store (with its WAL), the report file, the configuration.
    let mut stored = Vec::new();
    assert!(report.exists());
    for entry in std::fs::read_dir(install.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            stored.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(!String::from_utf8_lossy(&stored).contains("Imap-Master"));
    let dump = serde_json::to_string(&emu.state()).unwrap();
    assert!(!dump.contains("Imap-Master"));
    assert!(emu.migration_csvs()[0].1.contains("Imap-Master"));
}

#[test]
fn migrate_needs_its_section_and_names_bad_keys() {
    let rt = runtime();
    let emu = migration_emulator(&rt);
    let server = Slapd::start(SlapdOptions::default());
    let plain = Install::with_tenant(&server, &emu);
    let run = plain.run(&["migrate", "status"]);
    assert_eq!(run.code, 2, "{}", show(&run));
    assert!(run.stderr.contains("`migration`"), "{}", run.stderr);

    let mut install = migration_install(&server, &emu);
    install
        .env
        .retain(|(k, _)| k != "LDAP2EXO__MIGRATION__MASTER_PASSWORD");
    let run = install.run(&["migrate", "plan", "--only", "adavis"]);
    assert_eq!(run.code, 2, "{}", show(&run));
    assert!(
        run.stderr.contains("migration.master_password_file"),
        "{}",
        run.stderr
    );

    let install = migration_install(&server, &emu);
    let text = std::fs::read_to_string(&install.config).unwrap().replace(
        "master_user = \"migration\"",
        "master_user = \"migration\"\nsecurity = \"starttls\"",
    );
    std::fs::write(&install.config, text).unwrap();
    let run = install.run(&["migrate", "plan", "--only", "adavis"]);
    assert_eq!(run.code, 2, "{}", show(&run));
    assert!(run.stderr.contains("migration.security"), "{}", run.stderr);
}

#[test]
fn plan_and_start_name_who_lacks_a_licence_and_start_goes_on_without_them() {
    let rt = runtime();
    let emu = migration_emulator(&rt);
    let server = Slapd::start(SlapdOptions::default());
    let install = migration_install(&server, &emu);
    sync(&install, 0);
    // One licence left for a cohort of two.
    let mut tenant = emu.tenant();
    let used = emu
        .state()
        .users
        .iter()
        .filter(|u| u.deleted_unix.is_none() && !u.assigned_licenses.is_empty())
        .count() as u32;
    tenant.skus[0].prepaid_units = used + 1;
    emu.seed(ldap2exo_emulator::Seed {
        tenant: Some(tenant),
        ..Default::default()
    })
    .unwrap();
    emu.reset_counters();

    let run = install.run(&[
        "migrate", "plan", "--only", "adavis", "jmueller", "--format", "json",
    ]);
    assert_eq!(run.code, 1, "{}", show(&run));
    let report = run.json();
    assert_eq!(report["licences_needed"], 2);
    assert_eq!(report["licences_free"], 1);
    let held: Vec<&Value> = report["people"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] == "held")
        .collect();
    assert_eq!(held.len(), 1, "{report:#}");
    assert!(
        held[0]["detail"].as_str().unwrap().contains("licence"),
        "{report:#}"
    );
    assert_eq!(emu.counters().writes(), 0, "a plan writes nothing");

    // Started anyway: the one who got the licence goes into a batch, the other is named.
    let held_uid = held[0]["uid"].as_str().unwrap().to_owned();
    let mut last = None;
    for _ in 0..12 {
        let run = install.run(&["migrate", "start", "--only", "adavis", "jmueller"]);
        assert_eq!(run.code, 1, "{}", show(&run));
        let done = !emu.migration_csvs().is_empty();
        last = Some(run);
        if done {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(800));
    }
    let run = last.unwrap();
    assert!(
        run.stderr
            .contains(&format!("{held_uid}: provisioning failed")),
        "{}",
        show(&run)
    );
    let csvs = emu.migration_csvs();
    assert_eq!(csvs.len(), 1, "{csvs:?}");
    assert_eq!(csvs[0].1.lines().count(), 2, "header and one row");
    assert!(!csvs[0].1.contains(&format!("{held_uid}*migration")));
    // The one whose start failed is not recorded: the daemon must not license them later.
    let run = install.run(&["migrate", "status", "--format", "json"]);
    let users = run.json()["users"].clone();
    let recorded: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["uid"].as_str())
        .collect();
    assert_eq!(recorded.len(), 1, "{users:#}");
    assert!(!recorded.contains(&held_uid.as_str()), "{users:#}");
}

/// Replaces `from` by `to` in the installation's configuration file.
fn edit_config(install: &Install, from: &str, to: &str) {
    let text = std::fs::read_to_string(&install.config).unwrap();
    assert!(text.contains(from), "{from}");
    std::fs::write(&install.config, text.replace(from, to)).unwrap();
}

#[test]
fn a_cohort_larger_than_max_cohort_is_refused_before_anything_changes() {
    let rt = runtime();
    let emu = migration_emulator(&rt);
    let server = Slapd::start(SlapdOptions::default());
    let install = migration_install(&server, &emu);
    sync(&install, 0);
    edit_config(
        &install,
        "master_user = \"migration\"",
        "master_user = \"migration\"\nmax_cohort = 1",
    );
    emu.reset_counters();
    let run = install.run(&["migrate", "plan", "--only", "adavis", "jmueller"]);
    assert_eq!(run.code, 3, "{}", show(&run));
    assert!(
        run.stderr.contains("2 people") && run.stderr.contains("migration.max_cohort (1)"),
        "{}",
        show(&run)
    );
    let run = install.run(&["migrate", "start", "--only", "adavis", "jmueller"]);
    assert_eq!(run.code, 3, "{}", show(&run));
    assert!(
        run.stderr.contains("2 people") && run.stderr.contains("migration.max_cohort (1)"),
        "{}",
        show(&run)
    );
    assert_eq!(emu.counters().writes(), 0, "nothing changed");
    assert_eq!(
        mailbox(&emu, "adavis").recipient_type_details,
        Some(RecipientKind::MailUser)
    );
    let run = install.run(&["migrate", "status", "--format", "json"]);
    assert_eq!(run.code, 0, "{}", show(&run));
    assert_eq!(
        run.json()["users"],
        serde_json::json!([]),
        "nobody recorded"
    );
}

#[test]
fn an_existing_endpoint_with_another_server_is_refused_naming_both() {
    let rt = runtime();
    let emu = migration_emulator(&rt);
    emu.set_migration_sync_ms(300);
    let server = Slapd::start(SlapdOptions::default());
    let install = migration_install(&server, &emu);
    sync(&install, 0);
    let mut seen = String::new();
    start_until_batched(&install, &mut seen);
    // A --batch name Exchange has for other people is refused, not suffixed.
    let run = install.run(&[
        "migrate",
        "start",
        "--only",
        "bthompson",
        "--batch",
        "cohort1",
    ]);
    assert_eq!(run.code, 2, "{}", show(&run));
    assert!(
        run.stderr
            .contains("migration batch cohort1 for other people"),
        "{}",
        show(&run)
    );
    assert_eq!(
        mailbox(&emu, "bthompson").recipient_type_details,
        Some(RecipientKind::MailUser),
        "nobody licensed"
    );
    edit_config(
        &install,
        "imap_server = \"imap.example.edu\"",
        "imap_server = \"imap2.example.edu\"\nimap_port = 143\nsecurity = \"tls\"",
    );
    // Refused before the cohort is licensed: nobody licensed, nobody recorded.
    let run = install.run(&["migrate", "start", "--only", "bthompson"]);
    assert_eq!(run.code, 2, "{}", show(&run));
    for both in [
        "RemoteServer imap.example.edu, migration.imap_server imap2.example.edu",
        "Port 993, migration.imap_port 143",
        "Security Ssl, migration.security Tls",
    ] {
        assert!(run.stderr.contains(both), "{both}: {}", show(&run));
    }
    let calls = emu.counters();
    assert_eq!(calls.endpoint("EXO New-MigrationEndpoint").requests, 1);
    assert_eq!(calls.endpoint("EXO New-MigrationBatch").requests, 1);
    assert_eq!(
        mailbox(&emu, "bthompson").recipient_type_details,
        Some(RecipientKind::MailUser),
        "nobody licensed"
    );
    let run = install.run(&["migrate", "status", "--format", "json"]);
    let users = run.json()["users"].to_string();
    assert!(!users.contains("bthompson"), "nobody recorded: {users}");
}

#[test]
fn the_onprem_routing_domain_must_be_an_internal_relay_accepted_domain() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let install = migration_install(&server, &emu);
    sync(&install, 0);
    emu.reset_counters();
    // Not an address domain of people.
    edit_config(
        &install,
        "accepted_domains = [\"example.edu\"",
        "accepted_domains = [\"mbox.example.edu\", \"example.edu\"",
    );
    let run = install.run(&["migrate", "plan", "--only", "adavis"]);
    assert_eq!(run.code, 2, "{}", show(&run));
    assert!(
        run.stderr
            .contains("`mbox.example.edu` is in tenant.accepted_domains")
            && run.stderr.contains("migration.onprem_routing_domain"),
        "{}",
        show(&run)
    );
    edit_config(
        &install,
        "accepted_domains = [\"mbox.example.edu\", \"example.edu\"",
        "accepted_domains = [\"example.edu\"",
    );
    for cmd in ["plan", "start"] {
        let run = install.run(&["migrate", cmd, "--only", "adavis"]);
        assert_eq!(run.code, 2, "{cmd}: {}", show(&run));
        assert!(
            run.stderr
                .contains("mbox.example.edu is not an accepted domain")
                && run.stderr.contains("-DomainType InternalRelay"),
            "{cmd}: {}",
            show(&run)
        );
    }
    // Accepted, but Authoritative: named with the Set-AcceptedDomain to run.
    let mut tenant = emu.tenant();
    tenant.domains.push(DomainConfig {
        name: "mbox.example.edu".into(),
        verified: true,
        domain_type: DomainType::Authoritative,
    });
    emu.seed(ldap2exo_emulator::Seed {
        tenant: Some(tenant),
        ..Default::default()
    })
    .unwrap();
    let run = install.run(&["migrate", "start", "--only", "adavis"]);
    assert_eq!(run.code, 2, "{}", show(&run));
    assert!(
        run.stderr.contains("of type Authoritative")
            && run.stderr.contains(
                "Set-AcceptedDomain -Identity mbox.example.edu -DomainType InternalRelay"
            ),
        "{}",
        show(&run)
    );
    assert_eq!(emu.counters().writes(), 0, "nothing changed");
    assert_eq!(
        mailbox(&emu, "adavis").recipient_type_details,
        Some(RecipientKind::MailUser)
    );
}

/// Once people are migrating, a configuration that lost `[migration]` (a daemon started
/// without the LDAP2EXO__MIGRATION__* variables, say) must not plan their mailboxes back into
/// MailUsers, nor have `audit gal` advise taking their licence away: both refuse, exit 2.
#[test]
fn without_the_migration_section_sync_and_audit_refuse_while_people_migrate() {
    let rt = runtime();
    let emu = migration_emulator(&rt);
    let server = Slapd::start(SlapdOptions::default());
    let install = migration_install(&server, &emu);
    sync(&install, 0);
    let run = install.run(&["migrate", "start", "--only", "adavis"]);
    assert!(run.code == 0 || run.code == 1, "{}", show(&run));
    assert_eq!(
        mailbox(&emu, "adavis").recipient_type_details,
        Some(RecipientKind::UserMailbox),
        "{}",
        show(&run)
    );

    let text = std::fs::read_to_string(&install.config).unwrap();
    let start = text.find("\n[migration]").expect("the section");
    std::fs::write(&install.config, &text[..start]).unwrap();
    emu.reset_counters();
    for args in [&["sync", "--dry-run"][..], &["sync"], &["audit", "gal"]] {
        let run = install.run(args);
        assert_eq!(run.code, 2, "{args:?}: {}", show(&run));
        assert!(
            run.stderr.contains("1 people migrating by IMAP")
                && run.stderr.contains("no [migration] section"),
            "{args:?}: {}",
            show(&run)
        );
    }
    assert_eq!(emu.counters().writes(), 0, "nothing written");
    assert_eq!(
        mailbox(&emu, "adavis").recipient_type_details,
        Some(RecipientKind::UserMailbox)
    );
}
