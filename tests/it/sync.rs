//! `ldap2exo sync` end to end: the real binary against a private slapd serving the campus
//! fixture and the tenant emulator over HTTPS, with a real SQLite state store.

use std::collections::BTreeMap;

use ldap2exo_emulator::{
    DomainConfig, Emulator, EmulatorConfig, RecipientKind, SkuConfig, StateDump, User,
};

use crate::support::cli::{DAY, Install, Run, T0};
use crate::support::slapd::{Slapd, SlapdOptions};

/// The fixture's tenant: example.edu and staff.example.edu verified, initial domain
/// exampleedu.onmicrosoft.com, 100 Exchange Online (Plan 1) licences; Microsoft's timing
/// (the strict emulator's defaults).
pub(crate) fn campus_emulator(rt: &tokio::runtime::Runtime, seed: Vec<User>) -> Emulator {
    campus_emulator_with(rt, seed, |_| {})
}

/// [`campus_emulator`] with the configuration changed by `tweak` first.
pub(crate) fn campus_emulator_with(
    rt: &tokio::runtime::Runtime,
    seed: Vec<User>,
    tweak: impl FnOnce(&mut EmulatorConfig),
) -> Emulator {
    let mut cfg = EmulatorConfig::default();
    cfg.tenant.tenant_name = "exampleedu".into();
    cfg.tenant.domains = ["example.edu", "staff.example.edu"]
        .into_iter()
        .map(|d| DomainConfig {
            name: d.into(),
            verified: true,
            domain_type: ldap2exo_emulator::DomainType::Authoritative,
        })
        .collect();
    cfg.tenant.skus = vec![SkuConfig::exchange_online_plan1(100)];
    cfg.seed.users = seed;
    tweak(&mut cfg);
    rt.block_on(Emulator::start(cfg))
        .expect("the emulator starts")
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub(crate) fn live(state: &StateDump) -> Vec<&User> {
    state
        .users
        .iter()
        .filter(|u| u.deleted_unix.is_none())
        .collect()
}

pub(crate) fn stamp_of(u: &User) -> Option<&str> {
    u.extension_attributes.get(&15).map(String::as_str)
}

pub(crate) fn by_upn<'a>(state: &'a StateDump, upn: &str) -> &'a User {
    live(state)
        .into_iter()
        .find(|u| u.user_principal_name == upn)
        .unwrap_or_else(|| panic!("{upn} not in the tenant"))
}

/// Qasim Ali's entry as it was before he left (the same entryUUID), for tests where he comes
/// back after his object was deleted.
pub(crate) const QALI_BACK: &str = "dn: uid=qali,ou=people,dc=example,dc=edu\nobjectClass: inetOrgPerson\nuid: qali\ncn: Qasim Ali\nsn: Ali\n\
     givenName: Qasim\ndisplayName: Qasim Ali\nmail: qali@example.edu\no: Example University\nou: Computer Science\n\
     title: Student\nentryUUID: 5d0c7a3e-2b4f-4e61-9c8a-000000000038\n";

/// How many live objects carry an ldap2exo stamp.
pub(crate) fn stamped(state: &StateDump) -> usize {
    live(state).iter().filter(|u| stamp_of(u).is_some()).count()
}

/// The tenant is in step: a dry run plans nothing, and a real run writes nothing.
pub(crate) fn assert_settled(install: &Install, emu: &Emulator) {
    emu.reset_counters();
    let planned = install.dry_run(0, &[]).actions;
    assert!(planned.is_empty(), "still planned: {planned:#?}");
    let run = sync(install, 0);
    assert_eq!(emu.counters().writes(), 0, "{}", show_run(&run));
}

/// No anchor is stamped on two live objects.
pub(crate) fn assert_no_duplicates(state: &StateDump) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for u in live(state) {
        if let Some(s) = stamp_of(u) {
            *seen.entry(s).or_default() += 1;
        }
    }
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "duplicated stamps: {dups:?}");
}

pub(crate) fn sync(install: &Install, code: i32) -> Run {
    let run = install.run(&["sync"]);
    assert_eq!(
        run.code, code,
        "sync exit code\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    run
}

/// New MailUsers' sign-ins are blocked while the Exchange work of the run goes on (Graph's
/// budget is separate from Exchange's, which binds), not in a phase of their own after it:
/// with 40 more MailUsers and Exchange calls of 40 ms, a batch of blocks goes out before the
/// last Exchange cmdlet. Every MailUser ends blocked, each block journaled once.
#[test]
fn sign_ins_are_blocked_beside_the_exchange_work() {
    let rt = runtime();
    let emu = campus_emulator_with(&rt, Vec::new(), |cfg| {
        cfg.realism.exchange_cmdlet_ms = 40;
        cfg.realism.exchange_to_graph_ms = 300;
    });
    let server = forty_arrivals();
    let install = Install::with_tenant(&server, &emu);
    let run = sync(&install, 0);
    assert!(run.stdout.contains(" 0 failed"), "{}", run.stdout);

    let state = emu.state();
    let mail_users = mail_users(&state);
    assert!(mail_users.len() >= 40, "{}", mail_users.len());
    for u in &mail_users {
        assert!(!u.account_enabled, "{} can sign in", u.user_principal_name);
    }
    let journal = journal(&rt, &install);
    let ids = |exchange: bool| -> Vec<i64> {
        journal
            .iter()
            .filter(|j| {
                let cmdlet = j.step.starts_with("New-") || j.step.starts_with("Set-");
                if exchange {
                    cmdlet
                } else {
                    j.step == "PATCH accountEnabled"
                }
            })
            .map(|j| j.id)
            .collect()
    };
    let (cmdlets, blocks) = (ids(true), ids(false));
    assert_eq!(blocks.len(), mail_users.len(), "one block per MailUser");
    assert!(
        journal
            .iter()
            .filter(|j| j.step == "PATCH accountEnabled")
            .all(|j| j.result == "ok"),
        "{journal:#?}"
    );
    let first_block = blocks.iter().min().unwrap();
    let last_cmdlet = cmdlets.iter().max().unwrap();
    assert!(
        first_block < last_cmdlet,
        "the first block (journal row {first_block}) came after the last Exchange cmdlet ({last_cmdlet}):\n{}",
        run.stderr
    );
}

/// A slow action does not hold back the ones after it: a mailbox waits seconds for Exchange
/// to provision it, and with one working slot (8 actions started at once) an action at least
/// 8 places after a mailbox starts while the mailbox still waits. Collected in plan order,
/// the 8th after it could only start once it had finished, and the run idled behind it.
#[test]
fn a_mailbox_being_provisioned_does_not_hold_back_the_actions_after_it() {
    let rt = runtime();
    let emu = campus_emulator_with(&rt, Vec::new(), |cfg| {
        cfg.realism.mailbox_provisioning_ms = 3_000;
    });
    let server = forty_arrivals();
    let mut install = Install::with_tenant(&server, &emu);
    install
        .env
        .push(("LDAP2EXO__TENANT__CONCURRENCY".into(), "1".into()));
    let plan = install.dry_run(0, &[]);
    let place: BTreeMap<String, usize> = plan
        .actions
        .iter()
        .enumerate()
        .map(|(i, a)| (a.anchor.to_string(), i))
        .collect();
    let run = sync(&install, 0);
    assert!(run.stdout.contains(" 0 failed"), "{}", show_run(&run));

    // Each action's first and last step, by journal row (the rows are numbered as the steps
    // start); the sign-in blocks run beside the actions and are left out.
    let journal = journal(&rt, &install);
    let mut span: BTreeMap<usize, (i64, i64)> = BTreeMap::new();
    let mut mailboxes = Vec::new();
    for j in journal.iter().filter(|j| j.step != "PATCH accountEnabled") {
        let i = place[&j.anchor];
        let s = span.entry(i).or_insert((j.id, j.id));
        *s = (s.0.min(j.id), s.1.max(j.id));
        if j.step == "assignLicense" {
            mailboxes.push(i);
        }
    }
    assert!(!mailboxes.is_empty(), "{journal:#?}");
    let span = &span;
    let overtaken: Vec<(usize, usize)> = mailboxes
        .iter()
        .flat_map(|&m| {
            span.iter()
                .filter(move |&(&i, &(first, _))| i >= m + 8 && first < span[&m].1)
                .map(move |(&i, _)| (m, i))
        })
        .collect();
    assert!(
        !overtaken.is_empty(),
        "no action 8 or more places after a mailbox ({mailboxes:?}) started before it finished:\n{}",
        show_run(&run)
    );
}

#[test]
fn the_first_sync_creates_the_plan_and_the_second_writes_nothing() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::with_tenant(&server, &emu);

    let planned = install.dry_run(0, &[]);
    assert_eq!(planned.summary.create, 39);
    assert_eq!(
        emu.counters().writes(),
        0,
        "a dry run writes nothing to the tenant"
    );

    let run = sync(&install, 0);
    assert!(
        run.stdout
            .contains("Applied: 39 done, 0 pending, 0 skipped, 0 conflicts, 0 failed"),
        "{}",
        run.stdout
    );
    let state = emu.state();
    assert_no_duplicates(&state);
    let stamped: Vec<&User> = live(&state)
        .into_iter()
        .filter(|u| stamp_of(u).is_some())
        .collect();
    assert_eq!(stamped.len(), 39);

    let adavis = by_upn(&state, "adavis@example.edu");
    assert_eq!(adavis.recipient_type_details, Some(RecipientKind::MailUser));
    assert_eq!(
        adavis.external_email_address.as_deref(),
        Some("adavis@staff.example.edu")
    );
    assert!(
        adavis
            .proxy_addresses
            .contains(&"SMTP:adavis@staff.example.edu".to_string()),
        "{:?}",
        adavis.proxy_addresses
    );
    assert!(
        adavis
            .proxy_addresses
            .iter()
            .any(|p| p.eq_ignore_ascii_case("smtp:a.davis@example.edu"))
    );
    assert_eq!(adavis.department.as_deref(), Some("Physics"));
    assert!(!adavis.account_enabled, "a MailUser cannot sign in");
    assert_eq!(
        stamp_of(adavis),
        Some("ldap2exo:5d0c7a3e-2b4f-4e61-9c8a-000000000006")
    );

    let bmiller = by_upn(&state, "bmiller@example.edu");
    assert_eq!(
        bmiller.recipient_type_details,
        Some(RecipientKind::UserMailbox)
    );
    assert!(!bmiller.assigned_licenses.is_empty());
    assert!(
        bmiller
            .proxy_addresses
            .iter()
            .any(|p| p.eq_ignore_ascii_case("smtp:bmiller@exampleedu.mail.onmicrosoft.com")),
        "the mailbox owns the forward target: {:?}",
        bmiller.proxy_addresses
    );
    assert!(
        bmiller
            .proxy_addresses
            .contains(&"SMTP:bmiller@staff.example.edu".to_string()),
        "{:?}",
        bmiller.proxy_addresses
    );
    assert!(by_upn(&state, "helpdesk@example.edu").hidden_from_address_lists_enabled);

    emu.reset_counters();
    let again = install.dry_run(0, &[]);
    assert!(again.actions.is_empty(), "{:#?}", again.actions);
    assert!(again.drift.is_empty(), "{:#?}", again.drift);
    sync(&install, 0);
    assert_eq!(emu.counters().writes(), 0, "a second sync sends no write");
}

#[test]
fn people_change_move_leave_and_come_back() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let mut install = Install::with_tenant(&server, &emu);
    sync(&install, 0);

    // Rename, alias change, migration into the tenant, a leaver, a marked leaver.
    server.modify("dn: uid=adavis,ou=people,dc=example,dc=edu\nchangetype: modify\nreplace: mail\nmail: alice.smith@staff.example.edu\n-\nreplace: displayName\ndisplayName: Alice Smith\n");
    server.modify("dn: uid=mzhang,ou=people,dc=example,dc=edu\nchangetype: modify\nreplace: mailAlternateAddress\nmailAlternateAddress: mei.z@example.edu\n");
    server.modify("dn: uid=wtaylor,ou=people,dc=example,dc=edu\nchangetype: modify\nadd: objectClass\nobjectClass: mailRecipientExt\n-\nadd: mailForwardingAddress\nmailForwardingAddress: wtaylor@exampleedu.mail.onmicrosoft.com\n");
    server.delete("uid=qali,ou=people,dc=example,dc=edu");
    server.modify("dn: uid=rjensen,ou=people,dc=example,dc=edu\nchangetype: modify\nadd: shadowExpire\nshadowExpire: 1\n");
    let run = install.run(&["sync", "--max-deletes", "2"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);

    let state = emu.state();
    assert_no_duplicates(&state);
    let adavis = by_upn(&state, "adavis@example.edu");
    assert!(
        adavis
            .proxy_addresses
            .contains(&"SMTP:alice.smith@staff.example.edu".to_string()),
        "{:?}",
        adavis.proxy_addresses
    );
    assert!(
        adavis
            .proxy_addresses
            .iter()
            .any(|p| p == "smtp:adavis@staff.example.edu"),
        "the old primary stays: {:?}",
        adavis.proxy_addresses
    );
    assert_eq!(adavis.display_name.as_deref(), Some("Alice Smith"));
    let mzhang = by_upn(&state, "mzhang@example.edu");
    assert!(
        mzhang
            .proxy_addresses
            .iter()
            .any(|p| p == "smtp:mei.z@example.edu")
    );
    assert!(
        !mzhang
            .proxy_addresses
            .iter()
            .any(|p| p == "smtp:mei.zhang@example.edu"),
        "{:?}",
        mzhang.proxy_addresses
    );
    let wtaylor = by_upn(&state, "wtaylor@example.edu");
    assert_eq!(
        wtaylor.recipient_type_details,
        Some(RecipientKind::UserMailbox),
        "licensed in place"
    );
    assert!(
        wtaylor
            .proxy_addresses
            .iter()
            .any(|p| p.eq_ignore_ascii_case("smtp:wtaylor@exampleedu.mail.onmicrosoft.com"))
    );
    let qali = by_upn(&state, "qali@example.edu");
    assert!(
        qali.hidden_from_address_lists_enabled,
        "a leaver is hidden, not deleted"
    );
    assert!(by_upn(&state, "rjensen@example.edu").hidden_from_address_lists_enabled);

    // Back within the grace period: shown again, same object.
    install.now = T0 + 10 * DAY;
    server.modify(
        "dn: uid=rjensen,ou=people,dc=example,dc=edu\nchangetype: modify\ndelete: shadowExpire\n",
    );
    sync(&install, 0);
    let state = emu.state();
    assert!(!by_upn(&state, "rjensen@example.edu").hidden_from_address_lists_enabled);

    // Deleted only when the grace period is over.
    install.now = T0 + 29 * DAY;
    sync(&install, 0);
    assert!(
        live(&emu.state())
            .iter()
            .any(|u| u.user_principal_name == "qali@example.edu")
    );
    install.now = T0 + 31 * DAY;
    sync(&install, 0);
    let state = emu.state();
    assert!(
        !live(&state)
            .iter()
            .any(|u| u.user_principal_name == "qali@example.edu"),
        "deleted after the grace period"
    );
    let deleted = state
        .users
        .iter()
        .find(|u| u.user_principal_name == "qali@example.edu" && u.deleted_unix.is_some());
    let deleted_id = deleted.expect("soft-deleted, restorable").id.clone();

    // Back after the deletion (the same entry, restored in LDAP from a backup): the object is
    // restored from the recycle bin, which still holds the addresses, instead of created.
    install.now = T0 + 40 * DAY;
    server.add_ldif(QALI_BACK);
    sync(&install, 0);
    let state = emu.state();
    let qali = by_upn(&state, "qali@example.edu");
    assert_eq!(qali.id, deleted_id, "restored, not created again");
    assert!(!qali.hidden_from_address_lists_enabled);
    assert_no_duplicates(&state);

    assert_settled(&install, &emu);
}

#[test]
fn unmanaged_objects_are_never_touched_and_clashes_are_reported() {
    let rt = runtime();
    let breakglass = User {
        user_principal_name: "breakglass@exampleedu.onmicrosoft.com".into(),
        mail_nickname: "breakglass".into(),
        display_name: Some("Break Glass".into()),
        account_enabled: true,
        ..User::default()
    };
    let squatter = User {
        user_principal_name: "adavis.cloud@example.edu".into(),
        mail_nickname: "adaviscloud".into(),
        display_name: Some("Alice (cloud)".into()),
        proxy_addresses: vec!["SMTP:adavis@staff.example.edu".into()],
        recipient_type_details: Some(RecipientKind::MailUser),
        external_email_address: Some("alice@elsewhere.example".into()),
        account_enabled: true,
        ..User::default()
    };
    let emu = campus_emulator(&rt, vec![breakglass, squatter]);
    let before: Vec<User> = emu.state().users;
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::with_tenant(&server, &emu);

    let run = sync(&install, 1);
    assert!(
        run.stdout.contains("conflict: create adavis"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("adavis.cloud@example.edu"),
        "the clash names the other object: {}",
        run.stdout
    );
    let run = sync(&install, 1);
    assert!(
        run.stdout.contains("Applied: 1 done") || run.stdout.contains("0 done"),
        "{}",
        run.stdout
    );

    let after = emu.state();
    for seeded in &before {
        let now = after
            .users
            .iter()
            .find(|u| u.id == seeded.id)
            .expect("still there");
        assert_eq!(now, seeded, "{} was changed", seeded.user_principal_name);
    }
    assert_no_duplicates(&after);
}

#[test]
fn a_lost_state_store_is_rebuilt_from_the_stamps() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::with_tenant(&server, &emu);
    sync(&install, 0);
    let count = live(&emu.state()).len();

    for entry in std::fs::read_dir(install.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().contains("state.db") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let plan = install.dry_run(0, &[]);
    assert_eq!(plan.summary.create, 0, "{:#?}", plan.actions);
    assert_eq!(
        plan.drift.iter().filter(|d| d.kind == "adopted").count(),
        39
    );
    sync(&install, 0);
    assert_eq!(live(&emu.state()).len(), count, "nothing was created twice");
    assert_no_duplicates(&emu.state());
    let after = install.dry_run(0, &[]);
    assert!(
        after.actions.is_empty(),
        "{:#?}",
        &after.actions[..after.actions.len().min(3)]
    );
}

#[test]
fn changes_behind_our_back_are_repaired() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::with_tenant(&server, &emu);
    sync(&install, 0);

    let mut seed = emu
        .state()
        .users
        .into_iter()
        .find(|u| u.user_principal_name == "epatel@example.edu")
        .unwrap();
    seed.display_name = Some("Somebody Else".into());
    emu.seed(ldap2exo_emulator::Seed {
        users: vec![seed],
        ..Default::default()
    })
    .unwrap();
    let plan = install.dry_run(0, &[]);
    assert!(
        plan.drift
            .iter()
            .any(|d| d.uid == "epatel" && d.kind == "changed"),
        "{:#?}",
        plan.drift
    );
    sync(&install, 0);
    assert_eq!(
        by_upn(&emu.state(), "epatel@example.edu")
            .display_name
            .as_deref(),
        Some("Esha Patel")
    );
}

/// Syncs until a dry run plans nothing (at most `tries` syncs); returns how many it took.
pub(crate) fn converge(install: &Install, tries: usize) -> usize {
    converge_after(install, tries, &[])
}

/// Syncs until a dry run plans nothing, at most `tries` times. On failure it prints what
/// every run printed (those before it, `earlier`, included), so a rare failure can be read
/// from the test log alone.
pub(crate) fn converge_after(install: &Install, tries: usize, earlier: &[Run]) -> usize {
    let mut log: Vec<String> = earlier.iter().map(show_run).collect();
    for n in 1..=tries {
        let run = install.run(&["sync"]);
        log.push(show_run(&run));
        assert!(
            run.code == 0 || run.code == 1,
            "sync must finish or fail cleanly:\n{}",
            log.join("\n")
        );
        if install.dry_run(0, &[]).actions.is_empty() {
            return n;
        }
    }
    panic!(
        "no convergence after {tries} syncs: {:#?}\n\nwhat the runs printed:\n{}",
        install.dry_run(0, &[]).actions,
        log.join("\n")
    );
}

pub(crate) fn show_run(run: &Run) -> String {
    format!(
        "--- exit {}\n--- stdout\n{}\n--- stderr\n{}",
        run.code, run.stdout, run.stderr
    )
}

#[test]
fn faults_end_cleanly_and_the_next_run_converges_without_duplicates() {
    use ldap2exo_emulator::{Budget, FaultConfig};
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::with_tenant(&server, &emu);
    emu.set_faults(FaultConfig {
        // 10% of requests fail with 503, writes are throttled (429 storms with Retry-After),
        // and 2% of responses are cut off after the request was executed.
        error_rate: 0.10,
        error_statuses: vec![503],
        graph_write_budget: Some(Budget {
            limit: 20,
            window_ms: 1000,
        }),
        exchange_write_budget: Some(Budget {
            limit: 20,
            window_ms: 1000,
        }),
        drop_rate: 0.02,
        seed: 7,
        ..FaultConfig::default()
    })
    .unwrap();
    // Every token expires in the middle of the run.
    let expire = {
        std::thread::scope(|scope| {
            let handle = scope.spawn(|| install.run(&["sync"]));
            std::thread::sleep(std::time::Duration::from_millis(1500));
            emu.expire_tokens();
            handle.join().unwrap()
        })
    };
    assert!(
        expire.code == 0 || expire.code == 1,
        "{}\n{}",
        expire.stdout,
        expire.stderr
    );
    let counters = emu.counters();
    assert!(counters.total.throttled > 0, "the budget produced 429s");
    assert!(counters.total.faults > 0, "503s were injected");

    let runs = converge_after(&install, 4, std::slice::from_ref(&expire));
    let state = emu.state();
    assert_no_duplicates(&state);
    assert_eq!(stamped(&state), 39, "after {runs} more syncs");
}

#[test]
fn a_killed_sync_is_finished_by_the_next_without_duplicates() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
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
    let planned = install.dry_run(0, &[]).summary.create;
    assert!(planned > 300);

    // Kill at a pseudo-random point of the first sync (varies with the clock, within 0.3–2.3 s).
    let delay = 300
        + (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_millis() as u64
            * 2);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ldap2exo"))
        .arg("--config")
        .arg(&install.config)
        .arg("sync")
        .env("LDAP2EXO_NOW", install.now.to_string())
        .env("LDAP2EXO_LOG", "warn")
        .envs(install.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(delay));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let created_before = live(&emu.state()).len();

    converge(&install, 3);
    let state = emu.state();
    assert_no_duplicates(&state);
    let stamped: Vec<&User> = live(&state)
        .into_iter()
        .filter(|u| stamp_of(u).is_some())
        .collect();
    assert_eq!(
        stamped.len(),
        planned,
        "killed after {delay} ms with {created_before} objects made"
    );

    // Nothing the killed run made is unknown to the state store.
    let status = install.run(&["status", "--format", "json"]).json();
    assert_eq!(
        status["managed"]["active"].as_u64().unwrap() as usize,
        planned
    );
}

#[test]
fn a_removed_forward_leaves_the_mailbox_and_says_what_to_do() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::with_tenant(&server, &emu);
    sync(&install, 0);
    let before = by_upn(&emu.state(), "bmiller@example.edu").clone();

    server.modify("dn: uid=bmiller,ou=people,dc=example,dc=edu\nchangetype: modify\ndelete: mailForwardingAddress\n");
    let run = sync(&install, 1);
    assert!(
        run.stdout.contains("failed: convert bmiller"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("cannot become a MailUser in place"),
        "{}",
        run.stdout
    );
    assert_eq!(
        by_upn(&emu.state(), "bmiller@example.edu"),
        &before,
        "the mailbox is left as it is"
    );
}

#[test]
fn apply_takes_exactly_the_reviewed_plan_and_refuses_a_stale_one() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::with_tenant(&server, &emu);
    let file = install.dir.path().join("plan.json");
    let file = file.to_str().unwrap();

    assert_eq!(install.run(&["plan", "--output", file]).code, 0);
    assert_eq!(emu.counters().writes(), 0, "plan changes nothing");
    server.modify("dn: uid=adavis,ou=people,dc=example,dc=edu\nchangetype: modify\nreplace: title\ntitle: Dean\n");
    let run = install.run(&["apply", file]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("changed since the plan was made"),
        "{}",
        run.stderr
    );
    assert_eq!(
        emu.counters().writes(),
        0,
        "a stale plan is not applied at all"
    );

    assert_eq!(install.run(&["plan", "--output", file]).code, 0);
    let run = install.run(&["apply", file]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("Applied: 39 done"), "{}", run.stdout);
    assert!(install.dry_run(0, &[]).actions.is_empty());
}

#[test]
fn secrets_and_tokens_stay_out_of_logs_reports_and_state() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let mut install = Install::with_tenant(&server, &emu);
    install.env.push(("LDAP2EXO_LOG".into(), "trace".into()));
    let secret = emu.tenant().client_secret.unwrap();
    let mut seen = String::new();
    for args in [
        &["check-config"][..],
        &["sync", "--format", "json"],
        &["sync"],
        &["status", "--format", "json"],
    ] {
        let run = install.run(args);
        seen.push_str(&run.stdout);
        seen.push_str(&run.stderr);
    }
    assert!(seen.contains("TRACE") || seen.contains("DEBUG"));
    let stored = install.state_files_text();
    for needle in [
        secret.as_str(),
        crate::support::slapd::SERVICE_PASSWORD,
        "Bearer ",
        "access_token",
        "client_secret=",
    ] {
        assert!(!seen.contains(needle), "{needle:?} in the output");
        assert!(!stored.contains(needle), "{needle:?} in the state store");
    }
    // The random passwords of created users are secrets too: the journal and state never
    // hold a Password parameter.
    assert!(!stored.contains("\"Password\""));
}

/// A MailUser as New-MailUser leaves it, before ldap2exo stamped it.
fn half_made_mail_user(uid: &str, mail: &str, display: &str) -> User {
    User {
        user_principal_name: format!("{uid}@example.edu"),
        mail_nickname: uid.into(),
        display_name: Some(display.into()),
        proxy_addresses: vec![format!("SMTP:{mail}")],
        recipient_type_details: Some(RecipientKind::MailUser),
        external_email_address: Some(mail.into()),
        ..User::default()
    }
}

#[test]
fn an_object_created_just_before_a_crash_is_found_by_the_journal_and_stamped() {
    use ldap2exo::ids::Anchor;
    use ldap2exo::state::{RunMode, RunScope, Store};
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::with_tenant(&server, &emu);
    // What a run killed right after New-MailUser leaves behind: the object, without the
    // stamp, and the journal row with its id; no state row.
    let id = emu.add_user(half_made_mail_user(
        "adavis",
        "adavis@staff.example.edu",
        "Alice Davis",
    ));
    rt.block_on(async {
        let store = Store::open(&install.state).await.unwrap();
        let run = store
            .begin_run(RunMode::Apply, RunScope::Full, "sync", T0)
            .await
            .unwrap();
        let anchor = Anchor::new("5d0c7a3e-2b4f-4e61-9c8a-000000000006").unwrap();
        let row = store
            .journal_start(run, &anchor, "create", "New-MailUser", T0)
            .await
            .unwrap();
        store
            .journal_finish(row, "ok", Some(&format!("created {id}")), T0)
            .await
            .unwrap();
        store.close().await;
    });

    sync(&install, 0);
    let state = emu.state();
    assert_no_duplicates(&state);
    let adavis = by_upn(&state, "adavis@example.edu");
    assert_eq!(
        adavis.id, id,
        "the object the crashed run made is used, not a second one"
    );
    assert_eq!(
        stamp_of(adavis),
        Some("ldap2exo:5d0c7a3e-2b4f-4e61-9c8a-000000000006")
    );
    assert!(install.dry_run(0, &[]).actions.is_empty());
}

#[test]
fn an_object_whose_create_was_never_journaled_is_found_by_its_planned_upn() {
    use ldap2exo::ids::Anchor;
    use ldap2exo::state::{RunMode, RunScope, Store};
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::with_tenant(&server, &emu);
    // Killed while New-MailUser was answering: the object exists, the journal row is still
    // `pending` (no id), and there is no state row.
    let id = emu.add_user(half_made_mail_user(
        "epatel",
        "epatel@staff.example.edu",
        "Esha Patel",
    ));
    let anchor = rt.block_on(async {
        let store = Store::open(&install.state).await.unwrap();
        let run = store
            .begin_run(RunMode::Apply, RunScope::Full, "sync", T0)
            .await
            .unwrap();
        let plan = install.dry_run(0, &["--only", "epatel"]);
        let anchor: Anchor = plan.actions[0].anchor.clone();
        store
            .journal_start(run, &anchor, "create", "New-MailUser", T0)
            .await
            .unwrap();
        store.close().await;
        anchor
    });

    sync(&install, 0);
    let state = emu.state();
    assert_no_duplicates(&state);
    let epatel = by_upn(&state, "epatel@example.edu");
    assert_eq!(
        epatel.id, id,
        "the half-made object is completed, not duplicated or refused"
    );
    assert_eq!(
        stamp_of(epatel),
        Some(format!("ldap2exo:{anchor}").as_str())
    );
    assert!(install.dry_run(0, &[]).actions.is_empty());
}

/// The campus with 40 more people in ou=arrivals, each a MailUser to create.
fn forty_arrivals() -> Slapd {
    let server = Slapd::start(SlapdOptions::default());
    let mut ldif = String::from(
        "dn: ou=arrivals,ou=people,dc=example,dc=edu\nobjectClass: organizationalUnit\nou: arrivals\n\n",
    );
    for i in 1..=40 {
        ldif.push_str(&format!(
            "dn: uid=new{i},ou=arrivals,ou=people,dc=example,dc=edu\nobjectClass: inetOrgPerson\n\
             uid: new{i}\ncn: New {i}\nsn: New\ndisplayName: New {i}\nmail: new{i}@example.edu\n\n"
        ));
    }
    server.add_ldif(&ldif);
    server
}

fn mail_users(state: &StateDump) -> Vec<&User> {
    live(state)
        .into_iter()
        .filter(|u| u.recipient_type_details == Some(RecipientKind::MailUser))
        .collect()
}

/// Every journal row of every person in the state store.
fn journal(rt: &tokio::runtime::Runtime, install: &Install) -> Vec<ldap2exo::state::JournalRecord> {
    rt.block_on(async {
        let store = ldap2exo::state::Store::open_read_only(&install.state)
            .await
            .unwrap();
        let mut rows = Vec::new();
        for o in store.objects().await.unwrap() {
            rows.extend(store.journal(&o.anchor).await.unwrap());
        }
        store.close().await;
        rows
    })
}

/// A new MailUser Graph does not show within `tenant.propagation_wait_seconds` of its create
/// is left to the next run, during the actions too, not tried again every few seconds for
/// the rest of a long run: each block is journaled `deferred` after a few tries, the account
/// stays as it is, and the run does not fail.
#[test]
fn a_block_graph_cannot_take_is_deferred_after_the_propagation_wait() {
    let rt = runtime();
    let emu = campus_emulator_with(&rt, Vec::new(), |cfg| {
        cfg.realism.exchange_cmdlet_ms = 150;
        cfg.realism.exchange_to_graph_ms = 600_000;
    });
    let server = forty_arrivals();
    let mut install = Install::with_tenant(&server, &emu);
    install.env.push((
        "LDAP2EXO__TENANT__PROPAGATION_WAIT_SECONDS".into(),
        "1".into(),
    ));
    let run = sync(&install, 0);
    assert!(run.stdout.contains(" 0 failed"), "{}", run.stdout);
    let state = emu.state();
    let mail_users = mail_users(&state);
    assert!(mail_users.len() >= 40, "{}", mail_users.len());
    let blocks: Vec<_> = journal(&rt, &install)
        .into_iter()
        .filter(|j| j.step == "PATCH accountEnabled")
        .collect();
    assert_eq!(blocks.len(), mail_users.len(), "{blocks:#?}");
    assert!(blocks.iter().all(|j| j.result == "deferred"), "{blocks:#?}");
    // At most 4 tries each (after 0, 250, 750, 1,750 ms): within the second after its
    // create, not every 4 s until the actions, some 12 s of 150 ms cmdlets, are over.
    let tries = emu
        .counters()
        .per_endpoint
        .get("PATCH /v1.0/users/{id}")
        .map_or(0, |c| c.requests);
    assert!(
        tries <= 4 * mail_users.len() as u64,
        "{tries} blocks for {} MailUsers",
        mail_users.len()
    );
}
