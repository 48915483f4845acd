//! Removals across runs and the operator's approvals, through the real binary against slapd
//! and the tenant emulator: the rolling windows (`safety.max_deletes_per_24h`, `_per_7d`),
//! `--approve-removals N --scope S` (a DN subtree or an LDAP filter), a blocked run that
//! still creates its arrivals, and the approval as `status` shows it.

use ldap2exo::plan::{HeldOutcome, Op, Verdict};
use ldap2exo::state::{Stage, Store};

use crate::support::cli::{DAY, Install, Run};
use crate::support::slapd::{Slapd, SlapdOptions};
use crate::sync::{by_upn, campus_emulator, live, runtime, sync};

const PEOPLE: &str = "ou=people,dc=example,dc=edu";

/// An OU under ou=people with `n` people `<prefix>1`…, `departmentNumber` = `dept`.
fn ou_ldif(ou: &str, prefix: &str, n: usize, dept: &str) -> String {
    let mut s = format!("dn: ou={ou},{PEOPLE}\nobjectClass: organizationalUnit\nou: {ou}\n\n");
    for i in 1..=n {
        s.push_str(&format!(
            "dn: uid={prefix}{i},ou={ou},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {prefix}{i}\n\
             cn: {prefix} {i}\nsn: {prefix}\ngivenName: Person{i}\ndisplayName: {prefix} {i}\n\
             mail: {prefix}{i}@example.edu\ndepartmentNumber: {dept}\n\n"
        ));
    }
    s
}

fn dn(ou: &str, uid: &str) -> String {
    format!("uid={uid},ou={ou},{PEOPLE}")
}

fn run_code(run: &Run, code: i32, what: &str) {
    assert_eq!(
        run.code, code,
        "{what}\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
}

fn hidden(emu: &ldap2exo_emulator::Emulator, uid: &str) -> bool {
    by_upn(&emu.state(), &format!("{uid}@example.edu")).hidden_from_address_lists_enabled
}

fn stage(rt: &tokio::runtime::Runtime, install: &Install, uid: &str) -> Stage {
    rt.block_on(async {
        let store = Store::open_read_only(&install.state).await.unwrap();
        let objects = store.objects().await.unwrap();
        store.close().await;
        objects
            .into_iter()
            .find(|o| o.uid == uid)
            .unwrap_or_else(|| panic!("{uid} not in the state store"))
            .stage
    })
}

/// Caps wide enough that only what a test sets matters.
fn wide_caps(install: &mut Install) {
    for (k, v) in [
        ("LDAP2EXO__SAFETY__MAX_DELETE_PERCENT", "100"),
        ("LDAP2EXO__SAFETY__MAX_SOURCE_SHRINK_PERCENT", "100"),
    ] {
        install.env.push((k.into(), v.into()));
    }
}

/// The campus with a physics OU of three (plus `more` OUs as `(ou, prefix, n, department)`),
/// synced under `max_deletes_per_run = 1`, then the three physicists deleted from LDAP: more
/// leavers than the cap lets go.
fn physics_leaving(
    rt: &tokio::runtime::Runtime,
    more: &[(&str, &str, usize, &str)],
) -> (ldap2exo_emulator::Emulator, Slapd, Install) {
    let emu = campus_emulator(rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    server.add_ldif(&ou_ldif("physics", "phys", 3, "42"));
    for (ou, prefix, n, dept) in more {
        server.add_ldif(&ou_ldif(ou, prefix, *n, dept));
    }
    let mut install = Install::with_tenant(&server, &emu);
    install
        .env
        .push(("LDAP2EXO__SAFETY__MAX_DELETES_PER_RUN".into(), "1".into()));
    sync(&install, 0);
    for uid in ["phys1", "phys2", "phys3"] {
        server.delete(&dn("physics", uid));
    }
    (emu, server, install)
}

#[test]
fn the_rolling_window_blocks_the_second_of_two_runs_under_the_per_run_cap() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    server.add_ldif(&ou_ldif("physics", "phys", 4, "42"));
    let mut install = Install::with_tenant(&server, &emu);
    wide_caps(&mut install);
    for (k, v) in [
        ("LDAP2EXO__SAFETY__MAX_DELETES_PER_RUN", "2"),
        ("LDAP2EXO__SAFETY__MAX_DELETES_PER_24H", "3"),
        ("LDAP2EXO__SAFETY__MAX_DELETES_PER_7D", "5"),
    ] {
        install.env.push((k.into(), v.into()));
    }
    sync(&install, 0);

    // Two leave: within the run's cap of 2 and the day's 3.
    server.delete(&dn("physics", "phys1"));
    server.delete(&dn("physics", "phys2"));
    sync(&install, 0);
    assert!(hidden(&emu, "phys1") && hidden(&emu, "phys2"));

    // Two more an hour later: 2 is within the run's cap, but 2 + 2 > 3 in 24 h.
    install.now += 3600;
    server.delete(&dn("physics", "phys3"));
    server.delete(&dn("physics", "phys4"));
    let run = install.run(&["sync"]);
    run_code(&run, 3, "the day's window is full");
    assert!(
        run.stdout.contains(
            "2 removals planned and 2 already applied in the last 24 h, more than safety.max_deletes_per_24h = 3"
        ),
        "{}",
        run.stdout
    );
    assert!(!hidden(&emu, "phys3") && !hidden(&emu, "phys4"));
    let status = install.run(&["status", "--format", "json"]).json();
    assert_eq!(
        status["removals"],
        serde_json::json!({"last_24h": 2, "max_per_24h": 3, "last_7d": 2, "max_per_7d": 5})
    );
    let text = install.run(&["status"]).stdout;
    assert!(
        text.contains("removals: 2 in the last 24 h of 3, 2 in 7 d of 5"),
        "{text}"
    );

    // A day later the first two have left the day's window, not the week's: 2 + 2 <= 5.
    install.now += DAY;
    sync(&install, 0);
    assert!(hidden(&emu, "phys3") && hidden(&emu, "phys4"));
    let status = install.run(&["status", "--format", "json"]).json();
    assert_eq!(status["removals"]["last_24h"], 2);
    assert_eq!(status["removals"]["last_7d"], 4);
}

#[test]
fn a_scoped_approval_lets_through_exactly_n_of_its_scope_and_none_outside() {
    let rt = runtime();
    let (emu, server, mut install) = physics_leaving(&rt, &[("chemistry", "chem", 3, "43")]);
    install.env.push(("SUDO_USER".into(), "opsadmin".into()));
    for uid in ["chem1", "chem2", "chem3"] {
        server.delete(&dn("chemistry", uid));
    }

    // The scope in another spelling than slapd's: DNs compare case and space insensitively.
    let scope = "OU=Physics, ou=people,dc=example,dc=edu";
    let plan = install.dry_run(3, &["--approve-removals", "2", "--scope", scope]);
    let approved = plan
        .safety
        .approval
        .as_ref()
        .expect("the approval in the plan");
    assert_eq!((approved.removals, approved.scope.as_str()), (2, scope));
    assert_eq!(plan.safety.verdict, Verdict::Blocked);
    assert_eq!(plan.safety.held_removals, 4);
    let going: Vec<&str> = plan
        .actions
        .iter()
        .filter(|a| a.op == Op::Disable && a.held.is_none())
        .map(|a| a.uid.as_str())
        .collect();
    assert_eq!(going, ["phys1", "phys2"]);
    for a in plan.actions.iter().filter(|a| a.held.is_some()) {
        let h = a.held.as_ref().unwrap();
        assert_eq!(h.outcome, HeldOutcome::Skipped, "{a:?}");
        let why = if a.uid.starts_with("chem") {
            "outside the approved scope"
        } else {
            "beyond the 2 removals approved"
        };
        assert!(h.reason.contains(why), "{}: {}", a.uid, h.reason);
    }

    let run = install.run(&["sync", "--approve-removals", "2", "--scope", scope]);
    run_code(&run, 3, "held removals block the run");
    for uid in ["phys1", "phys2"] {
        assert!(hidden(&emu, uid), "{uid} approved and disabled");
        assert_eq!(stage(&rt, &install, uid), Stage::Disabled);
    }
    for uid in ["phys3", "chem1", "chem2", "chem3"] {
        assert!(!hidden(&emu, uid), "{uid} held");
        assert_eq!(stage(&rt, &install, uid), Stage::Active);
    }
    assert!(
        run.stdout.contains("HELD BACK BY THE SAFETY GATE"),
        "{}",
        run.stdout
    );

    let status = install.run(&["status", "--format", "json"]).json();
    let last = &status["runs"][0];
    assert_eq!(last["command"], "sync");
    assert_eq!(
        last["approval"],
        serde_json::json!({
            "removals": 2, "scope": scope, "approved_by": "opsadmin",
            "let_through": ["phys1", "phys2"],
        })
    );
    let text = install.run(&["status"]).stdout;
    assert!(
        text.contains(&format!(
            "approved by opsadmin: --approve-removals 2 --scope {scope}; let through 2 (phys1, phys2)"
        )),
        "{text}"
    );

    // The approved removals count in later windows: with a day's cap of 5, the 4 held
    // plus the 2 let through are one too many without an approval.
    wide_caps(&mut install);
    for (k, v) in [
        ("LDAP2EXO__SAFETY__MAX_DELETES_PER_RUN", "50"),
        ("LDAP2EXO__SAFETY__MAX_DELETES_PER_24H", "5"),
    ] {
        install.env.push((k.into(), v.into()));
    }
    let plan = install.dry_run(3, &[]);
    assert_eq!(
        plan.safety.reasons,
        [
            "4 removals planned and 2 already applied in the last 24 h, more than safety.max_deletes_per_24h = 5"
        ]
    );
    // An approval that covers them lifts the window for exactly those.
    let plan = install.dry_run(0, &["--approve-removals", "4", "--scope", PEOPLE]);
    assert_eq!((plan.summary.disable, plan.summary.held), (4, 0));
}

#[test]
fn a_filter_scope_matches_entries_still_in_ldap_by_their_anchor() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    server.add_ldif(&ou_ldif("physics", "phys", 2, "42"));
    server.add_ldif(&ou_ldif("chemistry", "chem", 2, "43"));
    let install = Install::with_tenant(&server, &emu);
    sync(&install, 0);
    // phys1 and chem1 drop out of the filter (no mail) but stay in LDAP; phys2 is deleted.
    for (ou, uid) in [("physics", "phys1"), ("chemistry", "chem1")] {
        server.modify(&format!(
            "dn: {}\nchangetype: modify\ndelete: mail\n",
            dn(ou, uid)
        ));
    }
    server.delete(&dn("physics", "phys2"));
    let run = install.run(&[
        "sync",
        "--approve-removals",
        "5",
        "--scope",
        "(departmentNumber=42)",
    ]);
    run_code(
        &run,
        3,
        "chem1, and phys2 whose entry is gone, are not in the filter scope",
    );
    assert!(hidden(&emu, "phys1"));
    assert!(
        !hidden(&emu, "phys2"),
        "gone from LDAP: only a DN scope matches it"
    );
    assert!(!hidden(&emu, "chem1"));
    assert_eq!(live(&emu.state()).len(), 43, "nobody deleted");
}

#[test]
fn a_blocked_run_still_creates_the_arrivals_and_leaves_the_leavers() {
    let rt = runtime();
    let (emu, server, install) = physics_leaving(&rt, &[]);
    server.add_ldif(&ou_ldif("chemistry", "chem", 2, "43"));
    let run = install.run(&["sync"]);
    run_code(&run, 3, "too many leavers");
    for uid in ["chem1", "chem2"] {
        assert!(!hidden(&emu, uid), "{uid} created and shown");
        assert_eq!(stage(&rt, &install, uid), Stage::Active);
    }
    for uid in ["phys1", "phys2", "phys3"] {
        assert!(!hidden(&emu, uid), "{uid} untouched");
        assert_eq!(stage(&rt, &install, uid), Stage::Active);
    }
}

#[test]
fn approval_flags_are_checked_before_anything_runs() {
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::new(&server);
    for (args, names) in [
        (&["sync", "--approve-removals", "2"][..], "--scope"),
        (&["sync", "--scope", PEOPLE][..], "--approve-removals"),
        (
            &[
                "plan",
                "--output",
                "p.json",
                "--approve-removals",
                "1",
                "--scope",
                "(uid=x",
            ][..],
            "(uid=x",
        ),
        (
            &[
                "sync",
                "--max-deletes",
                "3",
                "--approve-removals",
                "1",
                "--scope",
                PEOPLE,
            ][..],
            "--max-deletes",
        ),
    ] {
        let run = install.run(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(names), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn apply_takes_the_approval_from_the_plan_and_refuses_another() {
    let rt = runtime();
    let (emu, _server, install) = physics_leaving(&rt, &[]);
    let scope = format!("ou=physics,{PEOPLE}");
    let path = install.dir.path().join("plan.json");
    let path = path.to_str().unwrap();
    let run = install.run(&[
        "plan",
        "--output",
        path,
        "--approve-removals",
        "3",
        "--scope",
        &scope,
    ]);
    run_code(&run, 0, "the approval covers every removal");
    let other = install.run(&["apply", path, "--approve-removals", "2", "--scope", &scope]);
    run_code(&other, 2, "another approval than the plan's");
    assert!(
        other.stderr.contains("--approve-removals 3"),
        "{}",
        other.stderr
    );
    assert!(!hidden(&emu, "phys1"));
    let run = install.run(&["apply", path]);
    run_code(&run, 0, "the plan's approval");
    for uid in ["phys1", "phys2", "phys3"] {
        assert!(hidden(&emu, uid), "{uid}");
    }
}
