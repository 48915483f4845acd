//! `ldap2exo sync --dry-run`, `plan`, `check-config` and `status` end to end: the real binary
//! against a private slapd serving the campus fixture, with a real SQLite state store.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ldap2exo::plan::{Op, Plan, Verdict};

use crate::support::cli::{DAY, Install, T0};
use crate::support::slapd::{self, Slapd, SlapdOptions};

fn ops(plan: &Plan) -> BTreeMap<String, Op> {
    plan.actions.iter().map(|a| (a.uid.clone(), a.op)).collect()
}

fn golden(name: &str) -> PathBuf {
    slapd::fixtures_dir().join("golden").join(name)
}

/// Compares `actual` with the golden file; `LDAP2EXO_BLESS=1` rewrites the file instead.
fn assert_golden(name: &str, actual: &str) {
    let path = golden(name);
    if std::env::var_os("LDAP2EXO_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run the test with LDAP2EXO_BLESS=1 to create it)",
            path.display()
        )
    });
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b);
        panic!(
            "{} differs from the output (first differing line {:?}); review and rerun with LDAP2EXO_BLESS=1 if intended\n--- actual ---\n{actual}",
            path.display(),
            first.map(|i| i + 1)
        );
    }
}

#[test]
fn the_fixture_dry_run_matches_the_golden_reports() {
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::new(&server);
    for (format, file) in [
        ("text", "dry-run.txt"),
        ("json", "dry-run.json"),
        ("csv", "dry-run.csv"),
        ("markdown", "dry-run.md"),
    ] {
        let run = install.run(&["sync", "--dry-run", "--format", format]);
        assert_eq!(run.code, 0, "{format}: {}", run.stderr);
        assert_golden(file, &run.stdout);
    }
}

#[test]
fn the_fixture_is_classified_and_every_broken_entry_quarantined() {
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::new(&server);
    let plan = install.dry_run(0, &[]);
    let json = serde_json::to_value(&plan).unwrap();
    for key in [
        "create",
        "update",
        "convert",
        "disable",
        "enable",
        "delete",
        "unchanged",
        "quarantined",
    ] {
        assert!(json["summary"][key].is_u64(), "summary.{key} missing");
    }
    assert_eq!(json["safety"]["verdict"], "ok");

    let kind = |uid: &str| {
        let a = plan
            .actions
            .iter()
            .find(|a| a.uid == uid)
            .unwrap_or_else(|| panic!("{uid} not planned"));
        assert_eq!(a.op, Op::Create);
        a.kind.as_str()
    };
    for uid in [
        "bmiller",
        "lwisniewski",
        "hkowalski",
        "pchen",
        "dkim",
        "sgarcia",
        "cwong",
        "hlee",
    ] {
        assert_eq!(kind(uid), "mailbox", "{uid} forwards into the tenant");
    }
    for uid in [
        "dgarcia",
        "mrossi",
        "gbrown",
        "ofernandez",
        "adavis",
        "obrien",
        "annguyen",
    ] {
        assert_eq!(kind(uid), "mail_user", "{uid}");
    }
    let hidden = |uid: &str| {
        plan.actions.iter().find(|a| a.uid == uid).unwrap().changes["hiddenFromAddressLists"].1
            == Some(true.into())
    };
    assert!(hidden("helpdesk") && hidden("noreply") && hidden("admissions") && !hidden("adavis"));
    let display = |uid: &str| {
        plan.actions.iter().find(|a| a.uid == uid).unwrap().changes["displayName"]
            .1
            .clone()
    };
    assert_eq!(display("annguyen"), Some("Nguyễn Văn An".into()));
    assert_eq!(display("lwisniewski"), Some("Łukasz Wiśniewski".into()));
    assert_eq!(display("obrien"), Some("Seán O'Brien".into()));
    for uid in ["fschmidt", "rsilva", "jsmith"] {
        assert!(
            !ops(&plan).contains_key(uid),
            "{uid} is disabled in LDAP and was never provisioned"
        );
    }
    assert_eq!(plan.source.disabled_in_ldap, 3);

    let quarantined: BTreeMap<&str, (&str, &str)> = plan
        .quarantined
        .iter()
        .map(|q| {
            (
                q.dn.split(',').next().unwrap(),
                (q.field.as_str(), q.reason.as_str()),
            )
        })
        .collect();
    let expect = [
        ("uid=zbaker", "mail", "zoe.baker(at)example.edu"),
        (
            "uid=kwright",
            "mail",
            "example.org is not an accepted domain",
        ),
        ("uid=lmoreau", "aliases", "lea.moreau@example.org"),
        (
            "uid=eanderson2",
            "aliases",
            "already claimed by uid=eanderson,",
        ),
        ("uid=hwolfe", "display_name", "285 characters"),
        ("uid=anna maria", "uid", "cannot be a user principal name"),
        ("uid=pnovak", "forward", "petr.novak@@gmail.com"),
    ];
    assert_eq!(quarantined.len(), expect.len(), "{quarantined:#?}");
    for (rdn, field, needle) in expect {
        let (f, reason) = quarantined
            .get(rdn)
            .unwrap_or_else(|| panic!("{rdn} not quarantined"));
        assert_eq!(*f, field, "{rdn}");
        assert!(reason.contains(needle), "{rdn}: {reason}");
    }
    assert_eq!(
        plan.summary.create + plan.summary.quarantined + plan.source.disabled_in_ldap,
        plan.source.entries
    );
}

#[test]
fn a_second_dry_run_plans_the_same_and_both_are_recorded() {
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::new(&server);
    let first = install.dry_run(0, &[]);
    let second = install.dry_run(0, &[]);
    assert_eq!(first, second);
    let status = install.run(&["status", "--format", "json"]).json();
    let runs = status["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert!(
        runs.iter()
            .all(|r| r["mode"] == "dry_run" && r["outcome"] == "ok")
    );
    assert_eq!(
        status["managed"]["active"], 0,
        "a dry run never records tenant objects"
    );
    assert_eq!(status["quarantined"].as_array().unwrap().len(), 7);
}

#[test]
fn renames_are_updates_that_keep_the_old_address() {
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::new(&server);
    install.record_applied(&install.dry_run(0, &[]));
    assert!(
        install.dry_run(0, &[]).actions.is_empty(),
        "applied state plans nothing"
    );

    server.modify(
        "dn: uid=adavis,ou=people,dc=example,dc=edu\nchangetype: modify\nreplace: mail\nmail: alice.smith@staff.example.edu\n",
    );
    server.modify("dn: uid=gbrown,ou=people,dc=example,dc=edu\nchangetype: modrdn\nnewrdn: uid=gbrown2\ndeleteoldrdn: 1\n");
    let plan = install.dry_run(0, &[]);
    assert_eq!(
        (
            plan.summary.create,
            plan.summary.disable,
            plan.summary.update
        ),
        (0, 0, 2),
        "{:#?}",
        plan.actions
    );

    let adavis = plan.actions.iter().find(|a| a.uid == "adavis").unwrap();
    assert_eq!(
        adavis.changes["primarySmtpAddress"].1,
        Some("alice.smith@staff.example.edu".into())
    );
    assert_eq!(
        adavis.changes["retainedAddresses"].1,
        Some(serde_json::json!(["adavis@staff.example.edu"]))
    );
    let gbrown = plan.actions.iter().find(|a| a.uid == "gbrown2").unwrap();
    assert_eq!(
        gbrown.changes["userPrincipalName"],
        (
            Some("gbrown@example.edu".into()),
            Some("gbrown2@example.edu".into())
        )
    );
}

#[test]
fn migrated_people_convert_and_leavers_go_through_the_grace_period() {
    let server = Slapd::start(SlapdOptions::default());
    let mut install = Install::new(&server);
    install.record_applied(&install.dry_run(0, &[]));

    server.modify(
        "dn: uid=wtaylor,ou=people,dc=example,dc=edu\nchangetype: modify\nadd: objectClass\nobjectClass: mailRecipientExt\n-\nadd: mailForwardingAddress\nmailForwardingAddress: wtaylor@exampleedu.mail.onmicrosoft.com\n",
    );
    server.delete("uid=qali,ou=people,dc=example,dc=edu");
    server.modify("dn: uid=rjensen,ou=people,dc=example,dc=edu\nchangetype: modify\nadd: shadowExpire\nshadowExpire: 1\n");
    // Two removals of 39 managed people are over the 5% cap: approved for this run.
    install.dry_run(3, &[]);
    let plan = install.dry_run(0, &["--max-deletes", "2"]);
    assert_eq!(
        ops(&plan),
        BTreeMap::from([
            ("qali".into(), Op::Disable),
            ("rjensen".into(), Op::Disable),
            ("wtaylor".into(), Op::Convert)
        ])
    );
    let reason = |uid: &str| {
        plan.actions
            .iter()
            .find(|a| a.uid == uid)
            .unwrap()
            .reason
            .clone()
            .unwrap()
    };
    assert!(reason("qali").contains("no longer matched"));
    assert!(reason("rjensen").contains("disabled in LDAP"));
    install.record_applied(&plan);

    install.now = T0 + 29 * DAY;
    assert!(
        install.dry_run(0, &[]).actions.is_empty(),
        "still within the grace period"
    );

    // Back within the grace period: the same anchor is enabled, not created again.
    server.modify(
        "dn: uid=rjensen,ou=people,dc=example,dc=edu\nchangetype: modify\ndelete: shadowExpire\n",
    );
    let plan = install.dry_run(0, &[]);
    assert_eq!(ops(&plan), BTreeMap::from([("rjensen".into(), Op::Enable)]));
    install.record_applied(&plan);

    install.now = T0 + 30 * DAY;
    let plan = install.dry_run(0, &[]);
    assert_eq!(ops(&plan), BTreeMap::from([("qali".into(), Op::Delete)]));
    assert!(
        plan.actions[0]
            .reason
            .as_ref()
            .unwrap()
            .contains("grace period of 30 days")
    );
}

#[test]
fn a_shrunken_directory_is_blocked_with_exit_code_3() {
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::new(&server);
    install.record_applied(&install.dry_run(0, &[]));
    for uid in [
        "bthompson",
        "cmartin",
        "fhussain",
        "iivanova",
        "kdubois",
        "lrossi",
    ] {
        server.delete(&format!("uid={uid},ou=people,dc=example,dc=edu"));
    }
    let plan = install.dry_run(3, &[]);
    assert_eq!(plan.safety.verdict, Verdict::Blocked);
    assert_eq!(
        plan.summary.disable, 6,
        "a blocked plan still shows what it would do"
    );
    assert!(
        plan.safety
            .reasons
            .iter()
            .any(|r| r.contains("fewer than the 49 of the last good run")),
        "{:?}",
        plan.safety.reasons
    );

    let text = install.run(&["sync", "--dry-run"]);
    assert_eq!(text.code, 3);
    assert!(text.stdout.contains("Safety: BLOCKED"), "{}", text.stdout);

    let approved = install.dry_run(0, &["--max-deletes", "6"]);
    assert_eq!(approved.safety.verdict, Verdict::Ok);
    install.dry_run(3, &["--max-deletes", "5"]);
}

#[test]
fn an_empty_read_is_blocked() {
    let server = Slapd::start(SlapdOptions::default());
    let mut install = Install::new(&server);
    install.record_applied(&install.dry_run(0, &[]));
    install.env.push((
        "LDAP2EXO__LDAP__FILTER".into(),
        "(uid=nobody-has-this-uid)".into(),
    ));
    let plan = install.dry_run(3, &["--max-deletes", "1000"]);
    assert_eq!(plan.source.entries, 0);
    assert!(plan.safety.reasons[0].contains("no entries"));
}

#[test]
fn only_plans_just_the_named_people_and_escapes_them() {
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::new(&server);
    install.record_applied(&install.dry_run(0, &[]));
    server.modify("dn: uid=adavis,ou=people,dc=example,dc=edu\nchangetype: modify\nreplace: title\ntitle: Dean\n");

    let plan = install.dry_run(0, &["--only", "adavis", "newperson"]);
    assert_eq!(ops(&plan), BTreeMap::from([("adavis".into(), Op::Update)]));
    assert_eq!(plan.source.entries, 1);

    let plan = install.dry_run(0, &["--only", "o'brien*)(uid=*", "*"]);
    assert!(
        plan.actions.is_empty() && plan.source.entries == 0,
        "{:#?}",
        plan.actions
    );
    assert_eq!(
        plan.safety.verdict,
        Verdict::Ok,
        "an --only run is never judged as a shrunken directory"
    );

    // A named person whom LDAP marks disabled is planned as leaving; nobody else is.
    server.modify("dn: uid=adavis,ou=people,dc=example,dc=edu\nchangetype: modify\nadd: shadowExpire\nshadowExpire: 1\n");
    let plan = install.dry_run(0, &["--only", "adavis", "--max-deletes", "1"]);
    assert_eq!(ops(&plan), BTreeMap::from([("adavis".into(), Op::Disable)]));
}

#[test]
fn exit_codes_follow_the_interface() {
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::new(&server);

    let run = install.run(&["sync"]);
    assert_eq!(
        run.code, 2,
        "a real run needs tenant credentials: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("tenant configuration"),
        "{}",
        run.stderr
    );
    assert_eq!(
        install.run(&["sync", "--dry-run", "--format", "yaml"]).code,
        2
    );
    assert_eq!(install.run(&["frobnicate"]).code, 2);

    let text = std::fs::read_to_string(&install.config).unwrap();
    std::fs::write(
        &install.config,
        text.replace("[state]", "[state]\npaht = \"x\""),
    )
    .unwrap();
    let run = install.run(&["sync", "--dry-run"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("paht"), "{}", run.stderr);
    std::fs::write(&install.config, text).unwrap();

    let mut down = Install::with_toml(
        &server
            .ldap_toml()
            .replace(&server.ldap_url(), "ldap://127.0.0.1:9"),
    );
    down.env = install.env.clone();
    let run = down.run(&["sync", "--dry-run"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("127.0.0.1:9"), "{}", run.stderr);
    let status = down.run(&["status", "--format", "json"]).json();
    assert_eq!(status["runs"][0]["outcome"], "failed");
}

#[test]
fn output_goes_to_a_file_and_plan_writes_json() {
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::new(&server);
    let out = install.dir.path().join("report.md");
    let run = install.run(&[
        "sync",
        "--dry-run",
        "--format",
        "markdown",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0);
    assert!(run.stdout.is_empty());
    assert!(
        std::fs::read_to_string(&out)
            .unwrap()
            .starts_with("# ldap2exo sync --dry-run")
    );

    let file = install.dir.path().join("plan.json");
    let run = install.run(&["plan", "--output", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // The text people sign off, on standard output (`> plan.txt`): what `sync --dry-run`
    // shows, under the plan's title.
    assert!(
        run.stdout.starts_with("ldap2exo plan at "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("Summary: 39 to create"),
        "{}",
        run.stdout
    );
    let plan: Plan = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(plan.summary.create, 39);
    // The bill: in the file for scripts, and on standard error beside the verdict.
    let bill = plan.bill.expect("the plan has its bill");
    let exchange = bill.service("exchange").unwrap();
    assert_eq!(bill.binding.as_deref(), Some("exchange"));
    assert_eq!(bill.estimated_seconds, exchange.seconds);
    assert!(
        run.stderr.lines().any(|l| l.starts_with(&format!(
            "bill: {} Exchange requests (~{} s at 5/s, binding), ",
            exchange.writes + exchange.reads,
            exchange.seconds
        ))),
        "{}",
        run.stderr
    );
}

#[test]
fn check_config_binds_and_reports_what_is_missing() {
    let server = Slapd::start(SlapdOptions::default());
    let mut install = Install::new(&server);
    let run = install.run(&["check-config"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("ldap: ok"), "{}", run.stdout);
    assert!(run.stdout.contains("tenant: missing"), "{}", run.stdout);

    install.env = vec![(
        "LDAP2EXO__LDAP__BIND_PASSWORD".into(),
        "wrong-password-4711".into(),
    )];
    let run = install.run(&["check-config"]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("ldap: FAILED"), "{}", run.stdout);
    assert!(
        !run.stdout.contains("wrong-password-4711") && !run.stderr.contains("wrong-password-4711")
    );
}

#[test]
fn secrets_reach_no_output_and_no_state() {
    let server = Slapd::start(SlapdOptions::default());
    let mut install = Install::new(&server);
    let secret = "tenant-client-secret-0815";
    install
        .env
        .push(("LDAP2EXO__TENANT__CLIENT_SECRET".into(), secret.into()));
    install.env.push(("LDAP2EXO_LOG".into(), "trace".into()));
    let mut seen = String::new();
    for args in [
        &["sync", "--dry-run"][..],
        &["sync", "--dry-run", "--format", "json"],
        &["sync", "--dry-run", "--format", "csv"],
        &["check-config"],
        &["status", "--format", "json"],
    ] {
        let run = install.run(args);
        seen.push_str(&run.stdout);
        seen.push_str(&run.stderr);
    }
    install.env[0].1 = "a-wrong-bind-password".into();
    let run = install.run(&["sync", "--dry-run"]);
    assert_eq!(run.code, 1);
    seen.push_str(&run.stdout);
    seen.push_str(&run.stderr);
    assert!(
        seen.contains("TRACE") || seen.contains("DEBUG"),
        "trace logging was on"
    );

    let mut stored = Vec::new();
    for entry in std::fs::read_dir(install.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().contains("state.db") {
            stored.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(!stored.is_empty());
    let stored = String::from_utf8_lossy(&stored);
    for s in [slapd::SERVICE_PASSWORD, secret, "a-wrong-bind-password"] {
        assert!(!seen.contains(s), "secret {s:?} in output");
        assert!(!stored.contains(s), "secret {s:?} in the state store");
    }
}
