//! The reviewed-plan workflow end to end: `plan --output plan.json`, then `apply plan.json`
//! (and `--resume`) against a private slapd and the tenant emulator. A stale plan is refused
//! naming what moved; an unchanged one is applied exactly; a killed apply is continued.

use std::collections::BTreeSet;

use ldap2exo::desired::Kind;
use ldap2exo::plan::{Op, Plan};

use crate::support::cli::Install;
use crate::support::slapd::{Slapd, SlapdOptions};
use crate::sync::{
    assert_no_duplicates, campus_emulator, campus_emulator_with, live, runtime, show_run, stamp_of,
    stamped,
};

fn read_plan(path: &str) -> Plan {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("a plan file")
}

/// `plan --output file`, expecting exit 0; returns the plan written.
fn plan_file(install: &Install, file: &str) -> Plan {
    let run = install.run(&["plan", "--output", file]);
    assert_eq!(run.code, 0, "{}", show_run(&run));
    read_plan(file)
}

#[test]
fn a_stale_plan_is_refused_with_exit_3_naming_the_person_and_field() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::with_tenant(&server, &emu);
    let file = install.dir.path().join("plan.json");
    let file = file.to_str().unwrap();

    plan_file(&install, file);
    server.modify(
        "dn: uid=adavis,ou=people,dc=example,dc=edu\nchangetype: modify\nreplace: displayName\ndisplayName: Alice Q. Davis\n",
    );
    emu.reset_counters();
    let run = install.run(&["apply", file]);
    assert_eq!(run.code, 3, "{}", show_run(&run));
    assert!(
        run.stderr.contains(&format!(
            "ldap2exo: refusing to apply {file}: LDAP, the state store or the tenant changed since the plan was made (1 difference); nothing was written to the tenant:\n  adavis (mail_user): displayName planned \"Alice Davis\" → now \"Alice Q. Davis\"\nReview a new plan (ldap2exo plan --output {file})."
        )),
        "{}",
        show_run(&run)
    );
    assert_eq!(
        emu.counters().writes(),
        0,
        "a stale plan is not applied at all"
    );
    let status = install.run(&["status", "--format", "json"]).json();
    let last = &status["runs"][0];
    assert_eq!(last["command"], "apply", "{status:#}");
    assert_eq!(last["outcome"], "failed", "{status:#}");
    assert!(
        last["error"].as_str().unwrap().contains("stale plan"),
        "{status:#}"
    );
}

#[test]
fn a_plan_applied_unchanged_gives_exactly_its_actions() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::with_tenant(&server, &emu);
    let file = install.dir.path().join("plan.json");
    let file = file.to_str().unwrap();

    let plan = plan_file(&install, file);
    assert!(!plan.actions.is_empty());
    let run = install.run(&["apply", file, "--format", "json"]);
    assert_eq!(run.code, 0, "{}", show_run(&run));
    // The operator sees the reviewed plan, as `sync --dry-run` renders it, before the writes.
    let shown = ldap2exo::report::render(&plan, ldap2exo::report::Format::Text, "apply");
    assert!(run.stderr.contains(&shown), "{}", show_run(&run));

    let report = run.json();
    let results: Vec<(String, String, String)> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["anchor"].as_str().unwrap().to_owned(),
                r["op"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let applied: BTreeSet<(String, String)> = results
        .iter()
        .map(|(a, o, _)| (a.clone(), o.clone()))
        .collect();
    let planned: BTreeSet<(String, String)> = plan
        .actions
        .iter()
        .map(|a| (a.anchor.as_str().to_owned(), a.op.as_str().to_owned()))
        .collect();
    assert_eq!(results.len(), plan.actions.len());
    assert_eq!(applied, planned);
    assert!(results.iter().all(|(_, _, o)| o == "done"), "{results:#?}");
    assert_eq!(
        plan_file(&install, file).actions,
        Vec::new(),
        "nothing is left to plan"
    );
}

/// Creates the tenant executed (MailUsers by Exchange, mailboxes' users by Graph).
fn creates_executed(emu: &ldap2exo_emulator::Emulator) -> (u64, u64) {
    let c = emu.counters();
    (
        c.endpoint("EXO New-MailUser").writes,
        c.endpoint("POST /v1.0/users").writes,
    )
}

#[test]
fn a_killed_apply_is_resumed_and_every_create_is_done_once() {
    let rt = runtime();
    // Microsoft's lags stay on: right after the kill the resumed apply meets objects the
    // killed one made a moment before and not yet shown by the other API, which it may leave
    // pending for the next run, as after a killed `sync` (one `sync` finishes them below).
    let emu = campus_emulator_with(&rt, Vec::new(), |_| {});
    // A little latency, so the kill lands in the middle of the apply.
    emu.set_faults(ldap2exo_emulator::FaultConfig {
        latency_ms: 3,
        ..Default::default()
    })
    .unwrap();
    let server = Slapd::start(SlapdOptions::with_generated(300, 11));
    let mut install = Install::with_tenant(&server, &emu);
    install
        .env
        .push(("LDAP2EXO__LDAP__BASE_DN".into(), "dc=example,dc=edu".into()));
    let file = install.dir.path().join("plan.json");
    let file = file.to_str().unwrap();
    let plan = plan_file(&install, file);
    let creates = |kind: Kind| {
        plan.actions
            .iter()
            .filter(|a| a.op == Op::Create && a.kind == kind && a.held.is_none())
            .count() as u64
    };
    let (users, boxes) = (creates(Kind::MailUser), creates(Kind::Mailbox));
    assert!(users + boxes > 300, "{} actions", plan.actions.len());

    // Kill the apply (SIGKILL) once the tenant has made 60 objects.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ldap2exo"))
        .arg("--config")
        .arg(&install.config)
        .args(["apply", file])
        .env("LDAP2EXO_NOW", install.now.to_string())
        .env("LDAP2EXO_LOG", "warn")
        .envs(install.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    loop {
        let (u, b) = creates_executed(&emu);
        if u + b >= 60 {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the apply ended ({status}) before it was killed, after {u} + {b} creates");
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // What the killed apply had already sent is still being handled (latency, Exchange
    // slots): count only after it is done, or the refused apply below is blamed for it.
    assert!(
        emu.wait_idle(std::time::Duration::from_secs(30)),
        "the emulator is still busy 30 s after the kill"
    );
    let killed_at = creates_executed(&emu);
    assert!(
        killed_at.0 + killed_at.1 < users + boxes,
        "killed mid-way: {killed_at:?} of {users} + {boxes}"
    );

    // Without --resume the partly applied plan is stale, and nothing is written.
    let before = emu.counters();
    let refused = install.run(&["apply", file]);
    assert_eq!(refused.code, 3, "{}", show_run(&refused));
    assert!(
        refused
            .stderr
            .contains("(interrupted): re-run with --resume to continue it"),
        "{}",
        show_run(&refused)
    );
    // What moved is what the killed apply did: a create it finished (no longer planned), or
    // one it cut half-way (its rest is an update now).
    assert!(
        refused
            .stderr
            .contains("no longer planned (create) — done by run ")
            || refused.stderr.contains(": planned create, now update"),
        "{}",
        show_run(&refused)
    );
    let after = emu.counters();
    let wrote: Vec<String> = after
        .per_endpoint
        .iter()
        .filter(|(e, c)| c.writes != before.endpoint(e).writes)
        .map(|(e, c)| format!("{e}: {}", c.writes - before.endpoint(e).writes))
        .collect();
    assert!(wrote.is_empty(), "wrote {wrote:?}\n{}", show_run(&refused));

    let resumed = install.run(&["apply", file, "--resume"]);
    let log = format!(
        "killed at {killed_at:?} creates\n{}\n{}",
        show_run(&refused),
        show_run(&resumed)
    );
    assert_eq!(resumed.code, 0, "{log}");
    assert!(resumed.stderr.contains("Resuming "), "{log}");

    // What the tenant's lags left pending is finished by the next run, sending no create.
    let next = install.run(&["sync"]);
    let log = format!("{log}\n{}", show_run(&next));
    assert_eq!(next.code, 0, "{log}");

    // Every create executed exactly once over both applies: nothing made twice, nothing
    // left out (one whose answer the kill lost is found and adopted, not made again).
    assert_eq!(creates_executed(&emu), (users, boxes), "{log}");
    let state = emu.state();
    assert_no_duplicates(&state);
    assert_eq!(stamped(&state) as u64, users + boxes, "{log}");
    let anchors: BTreeSet<&str> = live(&state).into_iter().filter_map(stamp_of).collect();
    assert_eq!(anchors.len() as u64, users + boxes);
    let left = plan_file(&install, file).actions;
    assert!(
        left.is_empty(),
        "left: {left:#?}\n{}\n{log}",
        journal_of(&install, &left)
    );
}

/// The journal rows of the people of `actions`, to read a failure from the test log alone.
fn journal_of(install: &Install, actions: &[ldap2exo::plan::Action]) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = ldap2exo::state::Store::open(&install.state).await.unwrap();
        let mut out = String::new();
        for a in actions {
            for j in store.journal(&a.anchor).await.unwrap() {
                out.push_str(&format!("{} {j:?}\n", a.uid));
            }
        }
        store.close().await;
        out
    })
}
