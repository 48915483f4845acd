//! Incremental LDAP reads (`ldap.content_sync`, RFC 4533 refreshOnly against slapd's
//! `syncprov`): an incremental run plans what a full read plans, falls back to a full read when
//! it must, is held by the same safety gates, and never moves its cookie past a failed action.

use ldap2exo::plan::{Op, Plan};
use ldap2exo::state::{LdapSyncCommit, LdapSyncMark, Store};
use ldap2exo_emulator::{FaultAction, FaultConfig, FaultRule};

use crate::support::cli::{Install, Run};
use crate::support::slapd::{PEOPLE_DN, Slapd, SlapdOptions};
use crate::sync::{by_upn, campus_emulator, live, runtime};

/// The bind DN may read without a size limit: a refresh cannot be paged (README).
fn unlimited() -> SlapdOptions {
    SlapdOptions {
        service_limits: "size=unlimited time=unlimited".into(),
        ..SlapdOptions::default()
    }
}

fn with_content_sync(install: &mut Install) {
    for (k, v) in [
        ("LDAP2EXO__LDAP__CONTENT_SYNC", "true"),
        ("LDAP2EXO__SAFETY__MAX_DELETE_PERCENT", "100"),
        ("LDAP2EXO__SAFETY__MAX_SOURCE_SHRINK_PERCENT", "100"),
    ] {
        install.env.push((k.into(), v.into()));
    }
}

/// A dry run of the same installation with the switches `keys` left out (so off).
fn dry_run_without(install: &Install, keys: &[&str]) -> Plan {
    let mut env = install.env.clone();
    env.retain(|(k, _)| !keys.contains(&k.as_str()));
    let run = Install {
        dir: tempfile::tempdir().unwrap(),
        config: install.config.clone(),
        state: install.state.clone(),
        now: install.now,
        env,
    }
    .run(&["sync", "--dry-run", "--format", "json"]);
    expect(&run, 0, &format!("the dry run without {keys:?}"));
    run.plan()
}

/// The same installation with content synchronisation off: a paged full read.
fn full_read(install: &Install) -> Plan {
    let plan = dry_run_without(install, &["LDAP2EXO__LDAP__CONTENT_SYNC"]);
    assert_eq!(
        plan.source.read, None,
        "a paged read reports no content sync"
    );
    plan
}

/// Runs `sql` on the installation's state store, as an operator with sqlite3 would.
fn write_by_hand(rt: &tokio::runtime::Runtime, install: &Install, sql: &'static str) {
    rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", install.state.display()))
            .await
            .unwrap();
        sqlx::query(sql).execute(&pool).await.unwrap();
        pool.close().await;
    });
}

fn expect(run: &Run, code: i32, what: &str) {
    assert_eq!(
        run.code, code,
        "{what}\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
}

fn sync(install: &Install, code: i32) -> Plan {
    let run = install.run(&["sync", "--format", "json"]);
    expect(&run, code, "sync");
    run.plan()
}

fn mark(install: &Install) -> Option<LdapSyncMark> {
    let rt = runtime();
    rt.block_on(async {
        let store = Store::open(&install.state).await.unwrap();
        let mark = store.ldap_sync().await.unwrap();
        store.close().await;
        mark
    })
}

/// What must agree between two plans of the same directory and tenant.
fn assert_same_plan(incremental: &Plan, full: &Plan) {
    let json = |p: &Plan| {
        serde_json::json!({
            "actions": p.actions,
            "summary": p.summary,
            "quarantined": p.quarantined,
            "verdict": p.safety.verdict,
            "entries": p.source.entries,
            "skipped_no_mail": p.source.skipped_no_mail,
            "disabled_in_ldap": p.source.disabled_in_ldap,
            "warnings": p.warnings,
            "licences": p.licences,
        })
    };
    assert_eq!(
        json(incremental),
        json(full),
        "the incremental plan differs from the full read's"
    );
}

/// The state store (with its WAL) holds neither the bind password nor the client secret,
/// although it now keeps LDAP entries and the tenant's users and recipients.
/// `marker` is text only the new rows hold, so the check reads the files that hold them.
fn assert_no_secret_stored(install: &Install, emu: &ldap2exo_emulator::Emulator, marker: &str) {
    let stored = install.state_files_text();
    assert!(stored.contains(marker), "{marker:?} is in the files read");
    let secret = emu.tenant().client_secret.unwrap();
    for s in [crate::support::slapd::SERVICE_PASSWORD, secret.as_str()] {
        assert!(!stored.contains(s), "secret {s:?} in the state store");
    }
}

fn mode(plan: &Plan) -> &str {
    plan.source
        .read
        .as_ref()
        .map_or("none", |r| r.mode.as_str())
}

const NEWCOMER: &str = "dn: uid=nnew,ou=people,dc=example,dc=edu\nobjectClass: inetOrgPerson\nuid: nnew\n\
     cn: Nora New\nsn: New\ngivenName: Nora\ndisplayName: Nora New\nmail: nora.new@example.edu\n";

/// Without a session log slapd answers a refresh with the present phase (the unchanged
/// entries by UUID; whoever is not named left).
#[test]
fn an_incremental_run_plans_what_a_full_read_plans_and_converges() {
    converges(unlimited(), true);
}

/// With `syncprov-sessionlog` it names the entries that left (the delete phase).
#[test]
fn with_a_session_log_an_incremental_run_also_plans_what_a_full_read_plans() {
    let options = SlapdOptions {
        syncprov_sessionlog: Some(1000),
        ..unlimited()
    };
    converges(options, false);
}

/// Syncs, changes the directory in every way a person can change, and compares the plan of
/// the incremental read with the full read's; `present_phase` says which phase the server is
/// expected to use (the refresh's log line counts present entries only for that one).
fn converges(options: SlapdOptions, present_phase: bool) {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(options);
    let mut install = Install::with_tenant(&server, &emu);
    with_content_sync(&mut install);

    let first = sync(&install, 0);
    assert_eq!(mode(&first), "full");
    let reason = first.source.read.as_ref().unwrap().reason.clone().unwrap();
    assert!(reason.contains("no cookie yet"), "{reason}");
    assert!(
        mark(&install).is_some(),
        "the first real run stores a cookie"
    );

    // Nothing changed: an incremental read with nothing in it, and nothing to do.
    let quiet = install.dry_run(0, &[]);
    assert_eq!(mode(&quiet), "incremental");
    let r = quiet.source.read.clone().unwrap();
    assert_eq!((r.changed, r.removed), (0, 0));
    assert_eq!(quiet.actions.len(), 0, "{:?}", quiet.actions);
    assert_same_plan(&quiet, &full_read(&install));

    // An arrival, a change, a rename (modrdn), a deletion, someone leaving the filter, someone
    // hidden and someone disabled by the rules (which a refresh checks for the changed only).
    server.add_ldif(NEWCOMER);
    server.modify(&format!(
        "dn: uid=dgarcia,{PEOPLE_DN}\nchangetype: modify\nreplace: employeeType\nemployeeType: service\n"
    ));
    server.modify(&format!(
        "dn: uid=hlee,{PEOPLE_DN}\nchangetype: modify\nreplace: shadowExpire\nshadowExpire: 1\n"
    ));
    server.modify(&format!(
        "dn: uid=epatel,{PEOPLE_DN}\nchangetype: modify\nreplace: displayName\ndisplayName: Esha Patel-Shah\n"
    ));
    server.modify(&format!(
        "dn: uid=adavis,{PEOPLE_DN}\nchangetype: modrdn\nnewrdn: uid=adavis2\ndeleteoldrdn: 1\n"
    ));
    server.delete(&format!("uid=bmiller,{PEOPLE_DN}"));
    server.modify(&format!(
        "dn: uid=cwong,{PEOPLE_DN}\nchangetype: modify\ndelete: mail\n"
    ));

    let run = install.run(&["sync", "--dry-run", "--format", "json"]);
    expect(&run, 0, "the incremental dry run");
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("refreshed LDAP content"))
        .unwrap_or_else(|| panic!("no refresh logged:\n{}", run.stderr));
    assert_eq!(line.contains(" present="), present_phase, "{line}");
    assert_eq!(line.contains(" deleted=2"), !present_phase, "{line}");
    let incremental = run.plan();
    assert_eq!(mode(&incremental), "incremental");
    let r = incremental.source.read.clone().unwrap();
    assert_eq!((r.changed, r.removed), (5, 2), "{r:?}");
    let full = full_read(&install);
    assert_same_plan(&incremental, &full);
    for (op, uid) in [
        (Op::Create, "nnew"),
        (Op::Update, "epatel"),
        (Op::Update, "adavis2"),
        (Op::Update, "dgarcia"),
        (Op::Disable, "hlee"),
    ] {
        assert!(
            incremental
                .actions
                .iter()
                .any(|a| a.op == op && a.uid == uid),
            "{op:?} {uid} planned: {:?}",
            incremental.actions
        );
    }
    assert_eq!(
        incremental.summary.removals(),
        3,
        "{:?}",
        incremental.summary
    );

    // Applied, the next incremental read is empty and a full reconcile finds nothing to do.
    sync(&install, 0);
    let after = install.dry_run(0, &[]);
    assert_eq!(mode(&after), "incremental");
    let r = after.source.read.clone().unwrap();
    assert_eq!((r.changed, r.removed), (0, 0), "{r:?}");
    assert_eq!(after.actions.len(), 0, "{:?}", after.actions);
    let reconcile = full_read(&install);
    assert_eq!(reconcile.actions.len(), 0, "{:?}", reconcile.actions);
    assert_same_plan(&after, &reconcile);
    // The stored LDAP entries' JSON names attributes in lower case.
    assert_no_secret_stored(&install, &emu, "\"displayname\"");
    let state = emu.state();
    assert_eq!(
        by_upn(&state, "nnew@example.edu").display_name.as_deref(),
        Some("Nora New")
    );
    assert!(
        live(&state)
            .iter()
            .any(|u| u.display_name.as_deref() == Some("Esha Patel-Shah"))
    );
}

#[test]
fn a_refused_cookie_or_an_old_full_read_falls_back_to_a_full_read() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(unlimited());
    let mut install = Install::with_tenant(&server, &emu);
    with_content_sync(&mut install);
    sync(&install, 0);
    let stored = mark(&install).unwrap();

    // A cookie from the future (a provider restored from an older backup sees its consumers'
    // cookies this way) is refused with e-syncRefreshRequired.
    let cookie = String::from_utf8(stored.cookie.clone()).expect("slapd's cookies are text");
    let csn = cookie.find("csn=").expect("a csn in the cookie") + 4;
    let future = format!("{}2099{}", &cookie[..csn], &cookie[csn + 4..]);
    rt.block_on(async {
        let store = Store::open(&install.state).await.unwrap();
        let commit = LdapSyncCommit {
            cookie: future.into_bytes(),
            search: stored.search.clone(),
            full_at: stored.full_at,
            ..LdapSyncCommit::default()
        };
        store.commit_ldap_sync(&commit, install.now).await.unwrap();
        store.close().await;
    });
    server.add_ldif(NEWCOMER);
    let plan = install.dry_run(0, &[]);
    assert_eq!(mode(&plan), "full", "{:?}", plan.source.read);
    let reason = plan.source.read.as_ref().unwrap().reason.clone().unwrap();
    assert!(reason.contains("refused the cookie"), "{reason}");
    assert_same_plan(&plan, &full_read(&install));
    assert!(
        plan.actions
            .iter()
            .any(|a| a.op == Op::Create && a.uid == "nnew")
    );

    // A real run stores a fresh cookie; a day later the interval asks for a full read.
    sync(&install, 0);
    assert_eq!(mode(&install.dry_run(0, &[])), "incremental");
    install.now += 24 * 3600;
    let plan = install.dry_run(0, &[]);
    assert_eq!(mode(&plan), "full");
    let reason = plan.source.read.as_ref().unwrap().reason.clone().unwrap();
    assert!(
        reason.contains("full_reconcile_interval_hours (24)"),
        "{reason}"
    );
    // A changed filter, too.
    install.env.push((
        "LDAP2EXO__LDAP__FILTER".into(),
        "(&(objectClass=inetOrgPerson)(mail=*)(uid=*))".into(),
    ));
    install.now -= 24 * 3600;
    let plan = install.dry_run(0, &[]);
    let reason = plan.source.read.as_ref().unwrap().reason.clone().unwrap();
    assert!(reason.contains("the search changed"), "{reason}");
}

#[test]
fn a_server_without_syncprov_or_with_a_size_limit_is_read_with_a_paged_search() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    for (options, expected) in [
        (
            SlapdOptions {
                syncprov: false,
                ..unlimited()
            },
            "load the syncprov overlay",
        ),
        // The fixture's default: 10 entries per unpaged search.
        (SlapdOptions::default(), "size=unlimited"),
    ] {
        let server = Slapd::start(options);
        let mut install = Install::with_tenant(&server, &emu);
        with_content_sync(&mut install);
        let run = install.run(&["sync", "--dry-run", "--format", "json"]);
        expect(&run, 0, "a dry run");
        let plan = run.plan();
        assert_eq!(mode(&plan), "paged");
        let reason = plan.source.read.as_ref().unwrap().reason.clone().unwrap();
        assert!(reason.contains(expected), "{reason}");
        assert!(
            run.stderr.contains("reading with a paged search"),
            "{}",
            run.stderr
        );
        assert_same_plan(&plan, &full_read(&install));
        let text = install.run(&["sync", "--dry-run"]);
        assert!(
            text.stdout.contains("LDAP read in full (paged search)"),
            "{}",
            text.stdout
        );
        // A real run stores no cookie: there is none.
        sync(&install, 0);
        assert_eq!(mark(&install), None);
    }
}

#[test]
fn an_incremental_read_past_the_caps_is_blocked_and_keeps_its_cookie() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(unlimited());
    let mut install = Install::with_tenant(&server, &emu);
    with_content_sync(&mut install);
    install
        .env
        .push(("LDAP2EXO__SAFETY__MAX_DELETES_PER_RUN".into(), "1".into()));
    sync(&install, 0);
    let before = mark(&install).unwrap();
    for uid in ["bmiller", "dgarcia"] {
        server.delete(&format!("uid={uid},{PEOPLE_DN}"));
    }
    let blocked = sync(&install, 3);
    assert_eq!(mode(&blocked), "incremental");
    assert!(
        blocked
            .safety
            .reasons
            .iter()
            .any(|r| r.contains("max_deletes_per_run = 1")),
        "{:?}",
        blocked.safety.reasons
    );
    assert_eq!(
        mark(&install),
        Some(before.clone()),
        "a blocked run keeps its cookie"
    );
    // The same two leavers come again, and an approval lets them go.
    let run = install.run(&["sync", "--format", "json", "--max-deletes", "2"]);
    expect(&run, 0, "the approved run");
    let approved = run.plan();
    assert_eq!(mode(&approved), "incremental");
    assert_eq!(approved.source.read.as_ref().unwrap().removed, 2);
    assert_ne!(mark(&install).unwrap().cookie, before.cookie);
    assert_eq!(install.dry_run(0, &[]).actions.len(), 0);
}

#[test]
fn the_cookie_never_moves_past_a_failed_action() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(unlimited());
    let mut install = Install::with_tenant(&server, &emu);
    with_content_sync(&mut install);
    sync(&install, 0);
    let before = mark(&install).unwrap();

    server.add_ldif(NEWCOMER);
    emu.set_faults(FaultConfig {
        rules: vec![FaultRule {
            endpoint: "EXO New-MailUser".into(),
            action: FaultAction::Fail { status: 400 },
            count: 100,
        }],
        ..FaultConfig::default()
    })
    .unwrap();
    let run = install.run(&["sync", "--format", "json"]);
    expect(&run, 1, "the run whose create fails");
    assert_eq!(
        mark(&install),
        Some(before.clone()),
        "the cookie stays behind the failure"
    );

    // The next run is sent the arrival again and creates it.
    emu.set_faults(FaultConfig::default()).unwrap();
    let retried = sync(&install, 0);
    assert_eq!(mode(&retried), "incremental");
    assert_eq!(retried.source.read.as_ref().unwrap().changed, 1);
    assert!(
        retried
            .actions
            .iter()
            .any(|a| a.op == Op::Create && a.uid == "nnew")
    );
    by_upn(&emu.state(), "nnew@example.edu");
    assert_ne!(mark(&install).unwrap().cookie, before.cookie);
}

/// The same installation with the tenant read in full.
fn full_tenant_read(install: &Install) -> Plan {
    let plan = dry_run_without(install, &["LDAP2EXO__TENANT__INCREMENTAL_READ"]);
    assert_eq!(plan.tenant_read, None);
    plan
}

fn tenant_mode(plan: &Plan) -> &str {
    plan.tenant_read
        .as_ref()
        .map_or("none", |r| r.mode.as_str())
}

/// What must agree between an incremental and a full tenant read of the same tenant.
fn assert_same_tenant_plan(incremental: &Plan, full: &Plan) {
    assert_same_plan(incremental, full);
    assert_eq!(
        serde_json::to_value(&incremental.drift).unwrap(),
        serde_json::to_value(&full.drift).unwrap(),
        "the drift differs"
    );
}

fn incremental_tenant(install: &mut Install) {
    install
        .env
        .push(("LDAP2EXO__TENANT__INCREMENTAL_READ".into(), "true".into()));
}

#[test]
fn an_incremental_tenant_read_sees_what_changed_behind_our_back_like_a_full_read() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let mut install = Install::with_tenant(&server, &emu);
    incremental_tenant(&mut install);

    let first = sync(&install, 0);
    assert_eq!(tenant_mode(&first), "full");
    let reason = first.tenant_read.as_ref().unwrap().reason.clone().unwrap();
    assert!(reason.contains("nothing stored yet"), "{reason}");

    // The run's own writes come with the next round; nothing is left to do.
    let quiet = install.dry_run(0, &[]);
    assert_eq!(tenant_mode(&quiet), "incremental");
    assert!(quiet.actions.is_empty(), "{:?}", quiet.actions);
    assert_same_tenant_plan(&quiet, &full_tenant_read(&install));
    sync(&install, 0);

    // Behind our back: a display name changed, a managed MailUser deleted, and a foreign
    // user took the address a newcomer wants.
    let mut seed = emu
        .state()
        .users
        .into_iter()
        .find(|u| u.user_principal_name == "epatel@example.edu")
        .unwrap();
    seed.display_name = Some("Somebody Else".into());
    // An Exchange MailUser nobody stamped, holding the newcomer's address.
    let mut stranger = crate::support::emulator::seed_user(900);
    stranger.proxy_addresses = vec!["SMTP:nora.new@example.edu".into()];
    stranger.mail = Some("nora.new@example.edu".into());
    stranger.recipient_type_details = Some(ldap2exo_emulator::RecipientKind::MailUser);
    stranger.external_email_address = Some("SMTP:nora@elsewhere.example".into());
    emu.seed(ldap2exo_emulator::Seed {
        users: vec![seed, stranger],
        ..Default::default()
    })
    .unwrap();
    let config = ldap2exo::config::Config::load(&install.config, install.env.clone()).unwrap();
    let gone = by_upn(&emu.state(), "jmueller@example.edu").id.clone();
    rt.block_on(async {
        let tenant = ldap2exo::tenant::Tenant::connect(&config.tenant).unwrap();
        assert!(tenant.graph().delete_user(&gone).await.unwrap());
    });
    server.add_ldif(NEWCOMER);

    let plan = install.dry_run(0, &[]);
    assert_eq!(tenant_mode(&plan), "incremental");
    assert!(plan.tenant_read.as_ref().unwrap().removed >= 1);
    for (uid, kind) in [("epatel", "changed"), ("jmueller", "missing")] {
        assert!(
            plan.drift.iter().any(|d| d.uid == uid && d.kind == kind),
            "{uid} {kind}: {:#?}",
            plan.drift
        );
    }
    assert!(
        plan.actions
            .iter()
            .any(|a| a.uid == "nnew" && a.held.is_some()),
        "the newcomer's address is taken: {:#?}",
        plan.actions
    );
    assert_same_tenant_plan(&plan, &full_tenant_read(&install));

    // Repaired, and then nothing differs from a full read.
    let run = install.run(&["sync", "--format", "json"]);
    assert!(run.code == 0 || run.code == 1, "{}", run.stderr);
    let after = install
        .run(&["sync", "--dry-run", "--format", "json"])
        .plan();
    assert_eq!(tenant_mode(&after), "incremental");
    assert_same_tenant_plan(&after, &full_tenant_read(&install));
    assert_eq!(
        by_upn(&emu.state(), "epatel@example.edu")
            .display_name
            .as_deref(),
        Some("Esha Patel")
    );
}

#[test]
fn an_expired_delta_link_reads_the_tenant_in_full() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let mut install = Install::with_tenant(&server, &emu);
    incremental_tenant(&mut install);
    sync(&install, 0);
    emu.expire_delta_tokens();
    let plan = install.dry_run(0, &[]);
    assert_eq!(tenant_mode(&plan), "full");
    let reason = plan.tenant_read.as_ref().unwrap().reason.clone().unwrap();
    assert!(reason.contains("refused the delta link"), "{reason}");
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    // A real run stores the new link: the next read is incremental again.
    sync(&install, 0);
    assert_eq!(tenant_mode(&install.dry_run(0, &[])), "incremental");
    install.now += 24 * 3600;
    let plan = install.dry_run(0, &[]);
    let reason = plan.tenant_read.as_ref().unwrap().reason.clone().unwrap();
    assert!(reason.contains("full_read_interval_hours (24)"), "{reason}");
}

/// Both incremental reads on, and full reads no sooner than in a year (so that only what a
/// test changes decides whether a run can be quiet).
fn quiet_install(server: &Slapd, emu: &ldap2exo_emulator::Emulator) -> Install {
    let mut install = Install::with_tenant(server, emu);
    with_content_sync(&mut install);
    incremental_tenant(&mut install);
    for (k, v) in [
        ("LDAP2EXO__LDAP__FULL_RECONCILE_INTERVAL_HOURS", "8760"),
        ("LDAP2EXO__TENANT__FULL_READ_INTERVAL_HOURS", "8760"),
    ] {
        install.env.push((k.into(), v.into()));
    }
    install
}

/// The plan of the same installation with both incremental reads off: mapped and planned
/// from full reads.
fn full_reads(install: &Install) -> Plan {
    let plan = dry_run_without(
        install,
        &[
            "LDAP2EXO__LDAP__CONTENT_SYNC",
            "LDAP2EXO__TENANT__INCREMENTAL_READ",
        ],
    );
    assert_eq!(plan.unchanged_since_run, None, "full reads are never quiet");
    plan
}

/// Real runs until the plan is kept: until one plans nothing, then, once the tenant shows
/// everything the writes caused (mailboxes Exchange provisions seconds after a licence,
/// propagation between Graph and Exchange), one more that reads it so. Returns its plan.
fn settle(install: &Install, emu: &ldap2exo_emulator::Emulator) -> Plan {
    for _ in 0..4 {
        let plan = sync(install, 0);
        if plan.actions.is_empty() && plan.drift.is_empty() {
            emu.wait_settled();
            let plan = sync(install, 0);
            assert!(plan.actions.is_empty(), "{:?}", plan.actions);
            return plan;
        }
    }
    panic!("four runs did not converge");
}

/// A [`quiet_install`] of the campus directory, provisioned and settled. (The runtime comes
/// first: the bindings drop in reverse order, the emulator before its runtime.)
fn converged() -> (
    tokio::runtime::Runtime,
    ldap2exo_emulator::Emulator,
    Slapd,
    Install,
) {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(unlimited());
    let install = quiet_install(&server, &emu);
    sync(&install, 0);
    settle(&install, &emu);
    (rt, emu, server, install)
}

/// Asserts that a dry run now takes the kept plan, and that it is what full reads plan.
fn assert_taken(install: &Install, what: &str) -> Plan {
    let run = install.run(&["sync", "--dry-run", "--format", "json"]);
    expect(&run, 0, what);
    let plan = run.plan();
    assert!(
        plan.unchanged_since_run.is_some(),
        "{what}: the kept plan is taken\n{}",
        run.stderr
    );
    assert_same_plan(&plan, &full_reads(install));
    plan
}

/// Asserts that a dry run now plans again (something changed), and plans what full reads
/// plan.
fn assert_planned(install: &Install, what: &str) -> Plan {
    let run = install.run(&["sync", "--dry-run", "--format", "json"]);
    expect(&run, 0, what);
    let plan = run.plan();
    assert_eq!(
        plan.unchanged_since_run, None,
        "{what}: planned again\n{}",
        run.stderr
    );
    assert_same_plan(&plan, &full_reads(install));
    plan
}

/// Changes the tenant's user `upn` behind ldap2exo's back.
fn change_user(
    emu: &ldap2exo_emulator::Emulator,
    upn: &str,
    change: impl FnOnce(&mut ldap2exo_emulator::User),
) {
    let mut user = by_upn(&emu.state(), upn).clone();
    change(&mut user);
    emu.seed(ldap2exo_emulator::Seed {
        users: vec![user],
        ..Default::default()
    })
    .unwrap();
}

/// A real run that takes the kept plan: it says so, and exits 0.
fn quiet_real_run(install: &Install, what: &str) -> Run {
    let run = install.run(&["sync"]);
    expect(&run, 0, what);
    assert!(
        run.stdout.contains("its plan stands"),
        "{what}\n{}\n{}",
        run.stdout,
        run.stderr
    );
    run
}

/// A converged installation takes its last plan while nothing changes, and plans again as
/// soon as LDAP, the tenant, the configuration, the state store or the clock (a grace
/// period ending) gives a reason.
#[test]
fn a_quiet_run_takes_the_last_plan_until_something_changes() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(unlimited());
    let mut install = quiet_install(&server, &emu);
    install
        .env
        .push(("LDAP2EXO__SAFETY__GRACE_PERIOD_DAYS".into(), "2".into()));
    sync(&install, 0);
    let settled = settle(&install, &emu);

    let taken = assert_taken(&install, "nothing changed");
    assert_eq!(mode(&taken), "incremental");
    assert_eq!(tenant_mode(&taken), "incremental");
    // A real run takes it too, and keeps it for the next.
    quiet_real_run(&install, "a quiet real run");
    let kept = assert_taken(&install, "after a quiet real run")
        .unchanged_since_run
        .unwrap();
    // `status` says what the incremental reads keep.
    let status = install.run(&["status"]);
    expect(&status, 0, "status");
    for line in [
        "incremental LDAP read: cookie stored ".to_owned(),
        "incremental tenant read: stored ".to_owned(),
        format!("quiet runs: the plan of run {kept} stands while nothing changes"),
    ] {
        assert!(
            status.stdout.contains(&line),
            "{line:?} in\n{}",
            status.stdout
        );
    }
    let status = install.run(&["status", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(json["incremental"]["kept_plan"]["run"], kept);
    assert_eq!(
        json["incremental"]["ldap"]["entries"].as_u64(),
        Some(settled.source.entries as u64),
        "{}",
        status.stdout
    );

    // LDAP: a changed display name.
    server.modify(&format!(
        "dn: uid=epatel,{PEOPLE_DN}\nchangetype: modify\nreplace: displayName\ndisplayName: Esha Patel-Shah\n"
    ));
    let plan = assert_planned(&install, "a changed LDAP entry");
    assert!(
        plan.actions
            .iter()
            .any(|a| a.uid == "epatel" && a.op == Op::Update)
    );
    settle(&install, &emu);
    assert_taken(&install, "settled after the LDAP change");
    // The kept plan is in the state store; no secret is.
    assert_no_secret_stored(&install, &emu, "\"safety\":{\"verdict\":\"ok\"");

    // The tenant: a display name changed behind our back.
    change_user(&emu, "epatel@example.edu", |u| {
        u.display_name = Some("Somebody Else".into())
    });
    let plan = assert_planned(&install, "a user changed in the tenant");
    assert!(
        plan.drift.iter().any(|d| d.uid == "epatel"),
        "{:?}",
        plan.drift
    );
    settle(&install, &emu);
    assert_taken(&install, "settled after the tenant change");
    // Only Graph shows this one: a MailUser's sign-in enabled behind our back.
    change_user(&emu, "dgarcia@example.edu", |u| {
        assert!(!u.account_enabled, "a MailUser's sign-in is blocked");
        u.account_enabled = true;
    });
    assert_planned(&install, "a sign-in enabled in Entra");
    settle(&install, &emu);
    assert_taken(&install, "settled after the sign-in change");

    // The configuration.
    let mut changed = install.env.clone();
    changed.push(("LDAP2EXO__SAFETY__MAX_DELETES_PER_RUN".into(), "7".into()));
    let other = Install {
        dir: tempfile::tempdir().unwrap(),
        config: install.config.clone(),
        state: install.state.clone(),
        now: install.now,
        env: changed,
    };
    assert_planned(&other, "a changed configuration");

    // The state store, written by someone else than a run.
    write_by_hand(
        &rt,
        &install,
        "UPDATE managed_objects SET updated_at = updated_at + 1 WHERE uid = 'epatel'",
    );
    assert_planned(&install, "a state row written by hand");
    settle(&install, &emu);
    assert_taken(&install, "settled after the state change");

    // The clock: a leaver's grace period ends while nothing else changes.
    server.delete(&format!("uid=bmiller,{PEOPLE_DN}"));
    let plan = assert_planned(&install, "a leaver");
    assert!(
        plan.actions
            .iter()
            .any(|a| a.uid == "bmiller" && a.op == Op::Disable)
    );
    settle(&install, &emu);
    assert_taken(&install, "settled with a leaver in the grace period");
    install.now += 3 * 24 * 3600;
    let plan = assert_planned(&install, "a grace period ended");
    assert!(
        plan.actions
            .iter()
            .any(|a| a.uid == "bmiller" && a.op == Op::Delete),
        "{:?}",
        plan.actions
    );
}

/// An action held for a conflict is not a failure of the run's own: the cookie moves on, and
/// while the conflict stays the plan that holds it is taken again.
#[test]
fn a_held_action_lets_the_cookie_move_and_its_plan_is_taken_again() {
    let (_rt, emu, server, install) = converged();

    // A MailUser nobody stamped holds the address a newcomer wants.
    let mut stranger = crate::support::emulator::seed_user(901);
    stranger.proxy_addresses = vec!["SMTP:nora.new@example.edu".into()];
    stranger.mail = Some("nora.new@example.edu".into());
    stranger.recipient_type_details = Some(ldap2exo_emulator::RecipientKind::MailUser);
    stranger.external_email_address = Some("SMTP:nora@elsewhere.example".into());
    emu.seed(ldap2exo_emulator::Seed {
        users: vec![stranger],
        ..Default::default()
    })
    .unwrap();
    server.add_ldif(NEWCOMER);
    let before = mark(&install).unwrap();
    let held = sync(&install, 1);
    assert!(
        held.actions
            .iter()
            .any(|a| a.uid == "nnew" && a.held.is_some()),
        "{:?}",
        held.actions
    );
    assert_ne!(
        mark(&install).unwrap().cookie,
        before.cookie,
        "a held action does not hold the cookie back"
    );
    // The next run reads the newcomer from the stored entries, and holds it again.
    let again = sync(&install, 1);
    assert_eq!(mode(&again), "incremental");
    assert_eq!(again.source.read.as_ref().unwrap().changed, 0);
    assert!(
        again
            .actions
            .iter()
            .any(|a| a.uid == "nnew" && a.held.is_some())
    );
    let taken = install.dry_run(0, &[]);
    assert!(taken.unchanged_since_run.is_some(), "the held plan is kept");
    assert!(
        taken
            .actions
            .iter()
            .any(|a| a.uid == "nnew" && a.held.is_some())
    );
    assert_same_plan(&taken, &full_reads(&install));
}

/// A user that is not ours matters to a plan only as the holder of its UPN and addresses:
/// its other properties changing leaves a run quiet, its addresses or a stamp of ours do not.
#[test]
fn a_foreign_user_breaks_a_quiet_run_only_through_what_it_holds() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(unlimited());
    let install = quiet_install(&server, &emu);
    // A cloud-only account nobody stamped.
    let mut stranger = crate::support::emulator::seed_user(903);
    stranger.mail = Some("seed0903@example.edu".into());
    emu.seed(ldap2exo_emulator::Seed {
        users: vec![stranger],
        ..Default::default()
    })
    .unwrap();
    sync(&install, 0);
    settle(&install, &emu);
    assert_taken(&install, "nothing changed");
    let change = |f: &dyn Fn(&mut ldap2exo_emulator::User)| {
        change_user(&emu, "seed0903@example.edu", f);
    };

    // Its job title and its sign-in: listed by the delta round, and the run stays quiet.
    change(&|u| {
        u.job_title = Some("Visiting Scholar".into());
        u.account_enabled = !u.account_enabled;
    });
    assert_taken(&install, "a foreign user's job title and sign-in");
    quiet_real_run(&install, "a quiet real run");
    assert!(
        install.state_files_text().contains("Visiting Scholar"),
        "the quiet run stored the user as the round listed it"
    );
    assert_taken(&install, "after storing the foreign user's change");

    // Its addresses: a holder of something else now.
    change(&|u| u.mail = Some("visiting.scholar@example.edu".into()));
    assert_planned(&install, "a foreign user's mail");
    settle(&install, &emu);
    assert_taken(&install, "settled after the foreign user's mail");

    // A stamp of ours on it, even one that names no anchor.
    change(&|u| {
        u.extension_attributes
            .insert(15, "ldap2exo:not an anchor".into());
    });
    assert_planned(&install, "a stamp of ours on a foreign user");
}

/// An entry the server sends again because something ldap2exo does not read changed (a
/// password) is no change: the run stays quiet, the cookie moves on, and the entry counts as
/// changed only together with a change ldap2exo reads. Without a session log slapd answers
/// with the present phase, naming every unchanged entry.
#[test]
fn a_password_change_leaves_a_run_quiet() {
    password_change_leaves_a_run_quiet(unlimited());
}

/// The same with a session log: slapd answers with the delete phase.
#[test]
fn a_password_change_leaves_a_run_quiet_with_a_session_log() {
    password_change_leaves_a_run_quiet(SlapdOptions {
        syncprov_sessionlog: Some(1000),
        ..unlimited()
    });
}

fn password_change_leaves_a_run_quiet(options: SlapdOptions) {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(options);
    let install = quiet_install(&server, &emu);
    sync(&install, 0);
    settle(&install, &emu);
    assert_taken(&install, "nothing changed");
    let password = |uid: &str, secret: &str| {
        server.modify(&format!(
            "dn: uid={uid},{PEOPLE_DN}\nchangetype: modify\nreplace: userPassword\nuserPassword: {secret}\n"
        ));
    };

    password("epatel", "first-new-secret");
    let taken = assert_taken(&install, "a password changed");
    let read = taken.source.read.clone().unwrap();
    assert_eq!((read.mode.as_str(), read.changed), ("incremental", 0));
    let before = mark(&install).unwrap();
    let run = quiet_real_run(&install, "a quiet real run");
    assert!(
        run.stderr.contains("a change ldap2exo does not read"),
        "the log says why the entry is no change\n{}",
        run.stderr
    );
    assert_ne!(
        mark(&install).unwrap().cookie,
        before.cookie,
        "the quiet run stored the refresh's cookie"
    );
    assert!(
        !install.state_files_text().contains("first-new-secret"),
        "the password is neither read nor stored"
    );
    assert_taken(&install, "after the quiet run");

    // A password change while the tenant changed: the run plans from the stored entries,
    // the one sent again among them once, exactly as a full read.
    password("epatel", "another-new-secret");
    change_user(&emu, "epatel@example.edu", |u| {
        u.display_name = Some("Somebody Else".into())
    });
    let plan = assert_planned(&install, "a password and the tenant changed");
    assert_eq!(plan.source.read.as_ref().unwrap().changed, 0);
    assert!(plan.quarantined.iter().all(|q| !q.dn.contains("epatel")));
    assert!(
        plan.drift.iter().any(|d| d.uid == "epatel"),
        "{:?}",
        plan.drift
    );
    settle(&install, &emu);
    assert_taken(&install, "settled after the tenant change");

    // With a change ldap2exo reads, only that entry is a change.
    password("epatel", "second-new-secret");
    server.modify(&format!(
        "dn: uid=dgarcia,{PEOPLE_DN}\nchangetype: modify\nreplace: displayName\ndisplayName: Diego Garcia-Lopez\n"
    ));
    let plan = assert_planned(&install, "a password and a display name changed");
    assert_eq!(plan.source.read.as_ref().unwrap().changed, 1);
    let updates: Vec<_> = plan
        .actions
        .iter()
        .map(|a| (a.uid.as_str(), a.op))
        .collect();
    assert_eq!(updates, [("dgarcia", Op::Update)]);
}

/// A dry run that plans only the people the changes touch ([`Plan::partial`]), asserted to
/// plan what full reads plan; `most` is how many anchors it may have planned.
fn assert_partial(install: &Install, most: usize, what: &str) -> Plan {
    let run = install.run(&["sync", "--dry-run", "--format", "json"]);
    expect(&run, 0, what);
    let plan = run.plan();
    let partial = plan
        .partial
        .unwrap_or_else(|| panic!("{what}: planned partially\n{}", run.stderr));
    assert!(
        partial.anchors <= most,
        "{what}: {partial:?} planned, at most {most} expected\n{}",
        run.stderr
    );
    assert_same_whole_plan(&plan, &full_reads(install));
    plan
}

/// Two plans equal in everything but what belongs to their run (clock, read reports, what
/// was planned partially).
fn assert_same_whole_plan(partial: &Plan, full: &Plan) {
    let json = |p: &Plan| {
        let mut p = p.clone();
        p.generated_at.clear();
        p.source.read = None;
        p.tenant_read = None;
        p.unchanged_since_run = None;
        p.partial = None;
        serde_json::to_string_pretty(&p).unwrap()
    };
    let (a, b) = (json(partial), json(full));
    assert!(
        a == b,
        "the partial plan differs from full reads'\n--- partial\n{a}\n--- full\n{b}"
    );
}

/// Once a run converged, a change is planned for the people it touches alone, whatever it
/// touches: a display name, an alias handed from one person to another, a leaver and a
/// newcomer who wants the leaver's address, a tenant object taking an address somebody
/// wants; each plan is what full reads plan, and applied it leaves a base for the next.
#[test]
fn a_partial_plan_covers_only_whom_a_change_touches() {
    let (rt, emu, server, install) = converged();

    server.modify(&format!(
        "dn: uid=epatel,{PEOPLE_DN}\nchangetype: modify\nreplace: displayName\ndisplayName: Esha Patel-Shah\n"
    ));
    let plan = assert_partial(&install, 1, "a display name");
    assert_eq!(plan.actions.len(), 1, "{:?}", plan.actions);
    sync(&install, 0);

    // An alias moves from one person to another: both, nobody else.
    server.modify(&format!(
        "dn: uid=kokafor,{PEOPLE_DN}\nchangetype: modify\ndelete: mailAlternateAddress\nmailAlternateAddress: k.okafor@example.edu\n"
    ));
    server.modify(&format!(
        "dn: uid=mrossi,{PEOPLE_DN}\nchangetype: modify\nadd: mailAlternateAddress\nmailAlternateAddress: k.okafor@example.edu\n"
    ));
    assert_partial(&install, 3, "an alias handed over");
    sync(&install, 0);
    settle(&install, &emu);

    // A leaver, and a newcomer who wants the leaver's address.
    server.delete(&format!("uid=rsilva,{PEOPLE_DN}"));
    server.add_ldif(&format!(
        "dn: uid=rsilva2,{PEOPLE_DN}\nobjectClass: inetOrgPerson\nuid: rsilva2\ncn: Rita Silva\nsn: Silva\n\
         givenName: Rita\nmail: rsilva@staff.example.edu\n"
    ));
    let plan = assert_partial(&install, 4, "a leaver and a newcomer");
    assert!(
        plan.actions.iter().any(|a| a.uid == "rsilva2"),
        "{:?}",
        plan.actions
    );
    sync(&install, 0);
    settle(&install, &emu);

    // A cloud-only account takes an address a newcomer is about to want.
    let mut stranger = crate::support::emulator::seed_user(904);
    stranger.mail = Some("nora.new@example.edu".into());
    emu.seed(ldap2exo_emulator::Seed {
        users: vec![stranger],
        ..Default::default()
    })
    .unwrap();
    server.add_ldif(NEWCOMER);
    let plan = assert_partial(&install, 4, "a newcomer whose address a stranger holds");
    assert!(
        plan.actions
            .iter()
            .any(|a| a.uid == "nnew" && a.held.is_some()),
        "{:?}",
        plan.actions
    );
    // A conflict: the run says so in its exit code.
    sync(&install, 1);
    // Unchanged, the next run takes that plan; with somebody else changed, the held create
    // is planned again beside them (the base's actions are always looked at again).
    assert_taken(&install, "the held create alone");
    server.modify(&format!(
        "dn: uid=epatel,{PEOPLE_DN}\nchangetype: modify\nreplace: displayName\ndisplayName: Esha Patel\n"
    ));
    let again = assert_partial(&install, 2, "the held create, again");
    assert_eq!(again.summary.held, 1, "{:?}", again.summary);
    assert_eq!(again.summary.update, 1, "{:?}", again.summary);

    // A stored entry of the closure (the held newcomer) that cannot be read: the run plans
    // everybody, reading LDAP in full, as an incremental read does.
    write_by_hand(
        &rt,
        &install,
        "UPDATE ldap_entries SET entry = 'not JSON' WHERE entry LIKE '%uid=nnew,%'",
    );
    let run = install.run(&["sync", "--dry-run", "--format", "json"]);
    expect(&run, 0, "a stored entry that cannot be read");
    let plan = run.plan();
    assert_eq!(plan.partial, None, "{}", run.stderr);
    assert_eq!(mode(&plan), "full", "{:?}", plan.source.read);
    assert!(run.stderr.contains("planning everybody"), "{}", run.stderr);
    assert_same_whole_plan(&plan, &full_reads(&install));
}

/// Rounds of random changes to a converged installation (people renamed, addresses and
/// aliases moved between them, leavers, newcomers who want a taken or a freed address,
/// rules, a stranger taking an address): every dry run plans what full reads plan, many of
/// them partially, and every real run leaves the next a base.
/// `PARTIAL_ROUNDS` sets how many (default 12); a failure names the round and its changes.
#[test]
fn random_changes_are_planned_partially_as_full_reads_plan_them() {
    let rounds: u64 = std::env::var("PARTIAL_ROUNDS").map_or(12, |n| n.parse().unwrap());
    let (_rt, emu, server, install) = converged();

    let mut people: Vec<&str> = vec![
        "adavis",
        "bmiller",
        "jmueller",
        "obrien",
        "dgarcia",
        "epatel",
        "gnakamura",
        "hkowalski",
        "ijohansson",
        "kokafor",
        "mrossi",
        "pchen",
        "rsilva",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let address = |next: &mut dyn FnMut(usize) -> usize| match next(3) {
        0 => format!("x{}@example.edu", next(6)),
        1 => format!(
            "{}@staff.example.edu",
            ["adavis", "obrien", "pchen", "rsilva"][next(4)]
        ),
        _ => format!(
            "{}@example.edu",
            ["a.davis", "k.okafor", "nora.new"][next(3)]
        ),
    };
    let (mut partial, mut newcomers) = (0, 0);
    for round in 0..rounds {
        let mut done = Vec::new();
        for _ in 0..1 + next(3) {
            let uid = people[next(people.len())];
            let dn = format!("uid={uid},{PEOPLE_DN}");
            let change = match next(7) {
                0 => format!("replace: displayName\ndisplayName: Round {round} {uid}"),
                1 => format!("replace: mail\nmail: {}", address(&mut next)),
                // Only these carry the object class that allows aliases.
                2 | 3 if !["adavis", "jmueller", "obrien", "kokafor", "pchen"].contains(&uid) => {
                    continue;
                }
                2 => format!(
                    "replace: mailAlternateAddress\nmailAlternateAddress: {}",
                    address(&mut next)
                ),
                3 => "replace: mailAlternateAddress".into(),
                4 => "replace: shadowExpire\nshadowExpire: 1".into(),
                5 if people.len() > 8 => {
                    server.delete(&dn);
                    people.retain(|p| *p != uid);
                    done.push(format!("deleted {uid}"));
                    continue;
                }
                _ => {
                    newcomers += 1;
                    let new = format!("new{newcomers}");
                    server.add_ldif(&format!(
                        "dn: uid={new},{PEOPLE_DN}\nobjectClass: inetOrgPerson\nuid: {new}\n\
                         cn: New {newcomers}\nsn: New\nmail: {}\n",
                        address(&mut next)
                    ));
                    done.push(format!("added {new}"));
                    continue;
                }
            };
            server.modify(&format!("dn: {dn}\nchangetype: modify\n{change}\n"));
            done.push(format!("{uid}: {}", change.replace('\n', " ")));
        }
        if next(4) == 0 {
            let mut stranger = crate::support::emulator::seed_user(950 + round as usize);
            stranger.mail = Some(address(&mut next));
            done.push(format!("stranger holds {:?}", stranger.mail));
            emu.seed(ldap2exo_emulator::Seed {
                users: vec![stranger],
                ..Default::default()
            })
            .unwrap();
        }
        let what = format!("round {round}: {done:?}");
        let run = install.run(&["sync", "--dry-run", "--format", "json"]);
        expect(&run, 0, &what);
        let plan = run.plan();
        partial += usize::from(plan.partial.is_some());
        assert_same_whole_plan(&plan, &full_reads(&install));
        let applied = install.run(&["sync", "--format", "json"]);
        assert!(
            applied.code == 0 || applied.code == 1,
            "{what}\n{}",
            applied.stderr
        );
        emu.wait_settled();
    }
    // The others planned everybody for a reason of their own: a mailbox licence taken (the
    // licence counts changed), an action refused (the LDAP read not committed).
    eprintln!("{partial} of {rounds} rounds planned partially");
    assert!(
        partial * 3 >= rounds as usize,
        "{partial} of {rounds} rounds planned partially"
    );
}
