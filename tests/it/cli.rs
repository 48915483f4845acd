//! The operator's view through the real binary: `status`, what a missing state directory,
//! report file or plan file means, the top of the reports, `--only` typos, and the help.

use ldap2exo::apply::Tally;
use ldap2exo::desired::{Kind, Quarantined};
use ldap2exo::ids::Anchor;
use ldap2exo::plan::Verdict;
use ldap2exo::state::{ManagedObject, Outcome, RunEnd, RunMode, RunScope, Stage, Store};

use crate::support::cli::{DAY, Install, T0};
use crate::support::slapd::{Slapd, SlapdOptions};
use crate::sync::{campus_emulator, runtime};

/// An LDAP server nobody listens on: for commands that must fail before reading LDAP.
const NO_LDAP: &str =
    "[ldap]\nurl = \"ldap://127.0.0.1:9\"\nbase_dn = \"ou=people,dc=example,dc=edu\"\n";

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn object(i: usize, stage: Stage, due: Option<i64>) -> ManagedObject {
    ManagedObject {
        anchor: Anchor::new(&format!("anchor-{i:03}")).unwrap(),
        kind: Kind::MailUser,
        uid: format!("person{i:03}"),
        dn: format!("uid=person{i:03},ou=people,dc=example,dc=edu"),
        tenant_object_id: Some(format!("oid-{i}")),
        attributes: Default::default(),
        stage,
        created_at: T0,
        updated_at: T0,
        disabled_at: due.map(|d| d - 30 * DAY),
        delete_due_at: due,
        deleted_at: None,
    }
}

/// A store with a dry run, a real full sync that applied 39 and failed 2, a real sync that
/// failed before applying, `disabled` objects pending deletion on two days and `quarantined`
/// entries (all but two with the same reason).
fn seed(install: &Install, disabled: usize, quarantined: usize) {
    block_on(async {
        let store = Store::open(&install.state).await.unwrap();
        let dry = store
            .begin_run(RunMode::DryRun, RunScope::Full, "sync --dry-run", T0)
            .await
            .unwrap();
        let summary = serde_json::json!({"create": 41, "update": 0, "convert": 0, "disable": 0,
            "enable": 0, "delete": 0, "purge": 0, "unchanged": 0, "quarantined": 7, "held": 0});
        let end = |outcome, results: Option<Tally>, error: Option<&str>| RunEnd {
            outcome,
            source_count: Some(49),
            verdict: Some("ok"),
            summary: Some(summary.clone()),
            results: results.map(|t| serde_json::to_value(t).unwrap()),
            error: error.map(str::to_owned),
        };
        store
            .finish_run(dry, &end(Outcome::Ok, None, None), T0 + 2)
            .await
            .unwrap();
        let real = store
            .begin_run(RunMode::Apply, RunScope::Full, "sync", T0 + 600)
            .await
            .unwrap();
        let tally = Tally {
            done: 39,
            failed: 2,
            ..Tally::default()
        };
        store
            .finish_run(
                real,
                &end(Outcome::Ok, Some(tally), Some("2 actions failed")),
                T0 + 600 + 185,
            )
            .await
            .unwrap();
        let broken = store
            .begin_run(RunMode::Apply, RunScope::Full, "sync", T0 + DAY)
            .await
            .unwrap();
        let failed = RunEnd {
            outcome: Outcome::Failed,
            source_count: None,
            verdict: None,
            summary: None,
            results: None,
            error: Some("reading LDAP failed: cannot connect".into()),
        };
        store
            .finish_run(broken, &failed, T0 + DAY + 1)
            .await
            .unwrap();
        for i in 0..disabled {
            let due = T0 + if i % 2 == 0 { 10 } else { 20 } * DAY;
            store
                .upsert_object(&object(i, Stage::Disabled, Some(due)))
                .await
                .unwrap();
        }
        store
            .upsert_object(&object(999, Stage::Active, None))
            .await
            .unwrap();
        let entries: Vec<Quarantined> = (0..quarantined)
            .map(|i| Quarantined {
                dn: format!("uid=q{i:03},ou=people,dc=example,dc=edu"),
                anchor: None,
                uid: Some(format!("q{i:03}")),
                field: "mail".into(),
                reason: if i < 2 {
                    format!("`q{i}(at)example.edu` is not an e-mail address (no @)")
                } else {
                    format!("`q{i}@example.org`: domain example.org is not an accepted domain of the tenant")
                },
            })
            .collect();
        store.replace_quarantine(&entries, T0).await.unwrap();
        store.close().await;
    });
}

/// A configuration whose secrets are out of reach: a bind password file that is missing.
fn install_without_secrets() -> Install {
    let mut install = Install::with_toml(&format!(
        "{NO_LDAP}bind_dn = \"cn=ldap2exo,ou=services,dc=example,dc=edu\"\nbind_password_file = \"/nonexistent/bind.secret\"\n"
    ));
    install.env.clear();
    install.now = T0 + DAY + 3 * 3600;
    install
}

#[test]
fn status_needs_no_secrets_and_never_creates_a_store() {
    let install = install_without_secrets();
    let run = install.run(&["status"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(&install.state.display().to_string()),
        "names the missing state file: {}",
        run.stderr
    );
    assert!(
        !install.state.exists(),
        "status created {:?}",
        install.state
    );

    let mut elsewhere = install_without_secrets();
    let nodir = elsewhere.dir.path().join("nodir");
    elsewhere.env.push((
        "LDAP2EXO__STATE__PATH".into(),
        nodir.join("state.db").display().to_string(),
    ));
    let run = elsewhere.run(&["status"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("directory") && run.stderr.contains(&nodir.display().to_string()),
        "{}",
        run.stderr
    );
    assert!(!nodir.exists());

    // Every other command still needs its secrets.
    let run = install.run(&["sync", "--dry-run"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("ldap.bind_password_file"),
        "{}",
        run.stderr
    );

    seed(&install, 1, 1);
    let run = install.run(&["status"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("managed objects: 1 active, 1 disabled"));
}

#[test]
fn status_shows_runs_with_headers_durations_commands_and_counts() {
    let install = install_without_secrets();
    seed(&install, 0, 0);
    let run = install.run(&["status"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = &run.stdout;
    let header = out
        .lines()
        .find(|l| l.contains("STARTED"))
        .unwrap_or_else(|| panic!("no header row:\n{out}"));
    for column in [
        "RUN", "DURATION", "COMMAND", "SCOPE", "CHANGES", "FAILED", "OUTCOME", "ERROR",
    ] {
        assert!(header.contains(column), "{column} missing: {header}");
    }
    let row = |id: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(id))
            .unwrap_or_else(|| panic!("no run {id}:\n{out}"))
    };
    let dry = row("#1");
    assert!(
        dry.contains("sync --dry-run") && dry.contains("41 planned"),
        "{dry}"
    );
    let real = row("#2");
    assert!(
        real.contains("2026-09-01T00:10:00Z")
            && real.contains("3m 05s")
            && real.contains("39 applied")
            && real.contains(" 2 ")
            && real.contains(" sync ")
            && !real.contains(" apply "),
        "a sync is labelled sync, with its applied and failed counts: {real}"
    );
    assert!(row("#3").contains("reading LDAP failed"), "{out}");
    assert!(
        out.contains("last successful full sync: 2026-09-01T00:13:05Z (26 h ago)"),
        "{out}"
    );

    let one = install.run(&["status", "--runs", "1"]);
    assert!(
        one.stdout.contains("#3") && !one.stdout.contains("#2 "),
        "{}",
        one.stdout
    );

    let json = install.run(&["status", "--format", "json"]).json();
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    let real = &runs[1];
    assert_eq!(real["command"], "sync");
    assert_eq!(real["started_at"], "2026-09-01T00:10:00Z");
    assert_eq!(real["duration_seconds"], 185);
    assert_eq!(
        real["summary"]["create"], 41,
        "summary is an object: {real}"
    );
    assert_eq!(real["results"]["done"], 39, "results are an object: {real}");
    assert_eq!(runs[2]["results"], serde_json::Value::Null);
    assert_eq!(json["last_successful_full_sync"], "2026-09-01T00:13:05Z");
}

#[test]
fn status_counts_long_lists_and_lists_at_most_twenty() {
    let install = install_without_secrets();
    seed(&install, 25, 23);
    let run = install.run(&["status"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = &run.stdout;
    assert!(
        out.contains("pending deletions (25), by due date:"),
        "{out}"
    );
    assert!(
        out.contains("2026-09-11  13") && out.contains("2026-09-21  12"),
        "{out}"
    );
    assert!(out.contains("quarantined (23), by reason:"), "{out}");
    assert!(
        out.contains("21  mail: domain … is not an accepted domain of the tenant")
            && out.contains("2  mail: … is not an e-mail address"),
        "{out}"
    );
    assert_eq!(out.matches("… and 5 more").count(), 1, "{out}");
    assert_eq!(out.matches("… and 3 more").count(), 1, "{out}");
    assert_eq!(out.matches("due 2026-09-").count(), 20, "{out}");

    let json = install.run(&["status", "--format", "json"]).json();
    assert_eq!(json["pending_deletions"].as_array().unwrap().len(), 25);
    assert_eq!(json["quarantined"].as_array().unwrap().len(), 23);
    assert_eq!(json["pending_deletions_by_due_date"]["2026-09-11"], 13);
    assert_eq!(
        json["quarantined"][0]["first_seen_at"], "2026-09-01T00:00:00Z",
        "every time in the JSON is RFC 3339"
    );
}

#[test]
fn status_refuses_a_store_of_another_schema_version() {
    let install = install_without_secrets();
    seed(&install, 0, 0);
    let migrations = |sql: &'static str| {
        block_on(async {
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", install.state.display()))
                .await
                .unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        })
    };
    migrations(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (9999, 'future', 1, x'00', 0)",
    );
    let run = install.run(&["status"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("newer ldap2exo"), "{}", run.stderr);

    migrations("DELETE FROM _sqlx_migrations WHERE version >= 4");
    let run = install.run(&["status"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("older than this ldap2exo"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_missing_state_directory_is_a_configuration_error_naming_it() {
    let mut install = Install::with_toml(NO_LDAP);
    let nodir = install.dir.path().join("var/lib/ldap2exo");
    install.env.push((
        "LDAP2EXO__STATE__PATH".into(),
        nodir.join("state.db").display().to_string(),
    ));
    let plan = install.dir.path().join("plan.json");
    for args in [
        vec!["sync", "--dry-run"],
        vec!["plan", "--output", plan.to_str().unwrap()],
    ] {
        let run = install.run(&args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr
                .contains(&format!("directory {}", nodir.display())),
            "{args:?}: {}",
            run.stderr
        );
    }
    let run = install.run(&["check-config"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("state: FAILED") && run.stdout.contains(&nodir.display().to_string()),
        "{}",
        run.stdout
    );
    assert!(!nodir.exists(), "no command creates the state directory");
}

#[test]
fn a_state_path_that_is_a_directory_is_a_configuration_error_saying_so() {
    let mut install = Install::with_toml(NO_LDAP);
    let dir = install.dir.path().join("state");
    std::fs::create_dir(&dir).unwrap();
    install
        .env
        .push(("LDAP2EXO__STATE__PATH".into(), dir.display().to_string()));
    for args in [vec!["sync", "--dry-run"], vec!["status"]] {
        let run = install.run(&args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr
                .contains(&format!("state.path {} is a directory", dir.display())),
            "{args:?}: {}",
            run.stderr
        );
    }
}

#[test]
fn check_config_creates_no_state_store() {
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::new(&server);
    let run = install.run(&["check-config"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!(
            "state: will be created at {} on the first run",
            install.state.display()
        )),
        "{}",
        run.stdout
    );
    assert!(!install.state.exists());
    install.dry_run(0, &[]);
    let run = install.run(&["check-config"]);
    assert!(run.stdout.contains("state: ok"), "{}", run.stdout);
}

#[test]
fn apply_of_a_missing_plan_file_is_a_usage_error() {
    let install = Install::with_toml(NO_LDAP);
    let missing = install.dir.path().join("no-such-plan.json");
    let run = install.run(&["apply", missing.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("no-such-plan.json"), "{}", run.stderr);
}

#[test]
fn a_report_that_cannot_be_written_stops_the_run_before_anything_is_applied() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::with_tenant(&server, &emu);
    let bad = install.dir.path().join("nonexistent/report.txt");
    let bad = bad.to_str().unwrap();
    let plan = install.dir.path().join("plan.json");
    let plan = plan.to_str().unwrap();
    assert_eq!(install.run(&["plan", "--output", plan]).code, 0);
    emu.reset_counters();
    for args in [
        vec!["sync", "--output", bad],
        vec!["sync", "--dry-run", "--output", bad],
        vec!["apply", plan, "--output", bad],
        vec!["plan", "--output", bad],
    ] {
        let run = install.run(&args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains(bad) && run.stderr.contains("nothing was done"),
            "{args:?}: {}",
            run.stderr
        );
    }
    assert_eq!(emu.counters().writes(), 0, "nothing was applied");
    let status = install.run(&["status", "--format", "json"]).json();
    assert_eq!(
        status["runs"].as_array().unwrap().len(),
        1,
        "no run was started: {status}"
    );
}

#[test]
fn an_only_uid_ldap_does_not_have_is_a_warning_in_every_format() {
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::new(&server);
    let plan = install.dry_run(0, &["--only", "ADAVIS", "nosuchuser"]);
    assert_eq!(plan.source.entries, 1, "LDAP matches uids in any case");
    let only: Vec<_> = plan.warnings.iter().filter(|w| w.field == "only").collect();
    assert_eq!(only.len(), 1, "{:#?}", plan.warnings);
    let w = only[0];
    assert_eq!(w.uid.as_deref(), Some("nosuchuser"));
    assert_eq!(w.field, "only");
    assert!(w.message.contains("no LDAP entry"), "{}", w.message);
    for format in ["text", "markdown", "csv"] {
        let run = install.run(&[
            "sync",
            "--dry-run",
            "--only",
            "nosuchuser",
            "--format",
            format,
        ]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(
            run.stdout.contains("nosuchuser") && run.stdout.contains("no LDAP entry"),
            "{format}:\n{}",
            run.stdout
        );
        assert!(
            run.stderr.contains("WARN") && run.stderr.contains("nosuchuser"),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn a_blocked_report_starts_with_the_verdict_and_how_to_approve_it() {
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
    let approve = "To approve 6 removals, review them in this report, then run ldap2exo sync --max-deletes 6, or for a reviewed plan ldap2exo plan --output plan.json --max-deletes 6";
    let plan = install.dry_run(3, &[]);
    let boxes = plan
        .actions
        .iter()
        .filter(|a| a.kind == Kind::Mailbox)
        .count();
    let run = install.run(&["sync", "--dry-run"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    // The header, then the overview, then the detail.
    let top = run.stdout.split("\n\n").nth(1).unwrap();
    assert!(top.starts_with("Planned: 0 to create"), "{top}");
    assert!(top.contains("Safety: BLOCKED"), "{top}");
    assert!(top.contains(approve), "{top}");
    let split = format!("disable  {} MailUsers, {boxes} mailbox", 6 - boxes);
    assert!(top.contains(&split), "{split}: {top}");
    assert!(
        run.stdout
            .trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("Summary: "),
        "the Summary line stays last"
    );

    let md = install.run(&["sync", "--dry-run", "--format", "markdown"]);
    let before_detail = md.stdout.split("\n## ").next().unwrap();
    assert!(before_detail.contains(approve), "{before_detail}");

    let file = install.dir.path().join("plan.json");
    let run = install.run(&["plan", "--output", file.to_str().unwrap()]);
    assert_eq!(run.code, 3);
    assert!(
        run.stderr.contains("Safety: BLOCKED")
            && run
                .stderr
                .contains("fewer than the 49 of the last good run")
            && run.stderr.contains(approve)
            && run.stderr.contains("Summary: "),
        "{}",
        run.stderr
    );
    // The command it gives is the one that approves.
    assert_eq!(
        install.dry_run(0, &["--max-deletes", "6"]).safety.verdict,
        Verdict::Ok
    );
}

#[test]
fn the_help_documents_exit_codes_environment_and_formats() {
    let install = Install::with_toml(NO_LDAP);
    let top = install.run(&["--help"]);
    assert_eq!(top.code, 0);
    for needle in [
        "Exit codes",
        "LDAP2EXO_LOG",
        "LDAP2EXO__SECTION__KEY",
        "tenant tokens",
    ] {
        assert!(top.stdout.contains(needle), "{needle}:\n{}", top.stdout);
    }
    for command in ["sync", "apply", "status"] {
        let help = install.run(&[command, "--help"]).stdout;
        // The option's line, and the next (clap moves help below the option in long help).
        let lines: Vec<&str> = help.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.trim_start().starts_with("--format"))
            .unwrap();
        let format = lines[at..(at + 2).min(lines.len())].join(" ");
        assert!(format.contains("for scripts"), "{command}: {format}");
    }
}
