//! Not enough mailbox licences, end to end (issue 8, item 7): the real binary against a
//! private slapd and the strict tenant emulator over HTTPS, with a real SQLite state store.
//! The plan shows the licences it needs against those free and warns; the run fails only the
//! people who cannot get one, leaves a converting person the working MailUser they were and
//! creates nothing half-made for a new one; once licences are free, the next runs finish them
//! in plan order.

use ldap2exo::desired::Kind;
use ldap2exo::ids::Anchor;
use ldap2exo::plan::{HeldOutcome, LicenceBill, Op, Plan};
use ldap2exo::state::Store;
use ldap2exo_emulator::{Emulator, RecipientKind, Seed, StateDump, User};

use crate::support::cli::Install;
use crate::support::slapd::{Slapd, SlapdOptions};
use crate::sync::{
    assert_no_duplicates, assert_settled, by_upn, campus_emulator, converge, live, runtime,
    show_run, stamp_of, stamped, sync,
};

/// The campus fixture's mailbox licence.
const SKU: &str = "EXCHANGESTANDARD";
/// Its SKU id (`SkuConfig::exchange_online_plan1`).
const SKU_ID: &str = "4b9405b0-7788-4568-add1-99614e613b69";
/// Alice Davis: a MailUser on the Linux server whose mailbox moves to Exchange Online.
const MOVER: &str = "adavis";
const MOVER_UPN: &str = "adavis@example.edu";
const MOVER_ANCHOR: &str = "5d0c7a3e-2b4f-4e61-9c8a-000000000006";
/// A new person whose mailbox is in Exchange Online from the start.
const NEWCOMER: &str = "nnewton";
const NEWCOMER_UPN: &str = "nnewton@example.edu";

const MOVE_INTO_THE_TENANT: &str = "dn: uid=adavis,ou=people,dc=example,dc=edu\nchangetype: modify\n\
     add: mailForwardingAddress\nmailForwardingAddress: adavis@exampleedu.mail.onmicrosoft.com\n";

const NEWCOMER_LDIF: &str = "dn: uid=nnewton,ou=people,dc=example,dc=edu\nobjectClass: top\n\
     objectClass: person\nobjectClass: organizationalPerson\nobjectClass: inetOrgPerson\n\
     objectClass: mailRecipientExt\nuid: nnewton\ncn: Nora Newton\nsn: Newton\ngivenName: Nora\n\
     displayName: Nora Newton\nmail: nnewton@example.edu\no: Example University\nou: Physics\n\
     title: Lecturer\nmailForwardingAddress: nnewton@exampleedu.mail.onmicrosoft.com\n";

/// Live users holding the mailbox licence.
fn consumed(state: &StateDump) -> u32 {
    live(state)
        .iter()
        .filter(|u| {
            u.assigned_licenses
                .iter()
                .any(|l| l.eq_ignore_ascii_case(SKU_ID))
        })
        .count() as u32
}

/// Sets the purchased units of the mailbox licence, as buying or cancelling some would.
fn set_units(emu: &Emulator, units: u32) {
    let mut tenant = emu.tenant();
    let sku = tenant
        .skus
        .iter_mut()
        .find(|s| s.sku_id == SKU_ID)
        .expect("the campus tenant has the mailbox licence");
    sku.prepaid_units = units;
    emu.seed(Seed {
        tenant: Some(tenant),
        ..Seed::default()
    })
    .expect("the emulator takes the new tenant configuration");
}

fn held(plan: &Plan) -> Vec<(Op, &str, HeldOutcome)> {
    plan.actions
        .iter()
        .filter_map(|a| a.held.as_ref().map(|h| (a.op, a.uid.as_str(), h.outcome)))
        .collect()
}

fn newcomer(state: &StateDump) -> Option<&User> {
    live(state).into_iter().find(|u| {
        u.user_principal_name.eq_ignore_ascii_case(NEWCOMER_UPN) || u.mail_nickname == NEWCOMER
    })
}

/// The state store's row of the mover: its kind, and whether it has one at all.
fn state_kind(install: &Install, anchor: &str) -> Option<Kind> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::open(&install.state).await.unwrap();
        let anchor = Anchor::new(anchor).unwrap();
        let kind = store.object(&anchor).await.unwrap().map(|o| o.kind);
        store.close().await;
        kind
    })
}

/// Every state row of a uid (the newcomer's anchor is slapd's entryUUID, unknown here).
fn state_rows_of(install: &Install, uid: &str) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::open(&install.state).await.unwrap();
        let n = store
            .objects()
            .await
            .unwrap()
            .iter()
            .filter(|o| o.uid == uid)
            .count();
        store.close().await;
        n
    })
}

#[test]
fn too_few_licences_are_planned_held_and_finished_in_plan_order_once_freed() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::with_tenant(&server, &emu);

    // Enough licences: everybody is created, and the bill says what it took.
    let first = install.dry_run(0, &[]);
    let bill = first.licences.clone().expect("the plan bills the licences");
    assert_eq!((bill.sku.as_str(), bill.free), (SKU, 100));
    assert!(bill.needed > 0 && held(&first).is_empty());
    converge(&install, 3);
    let used = consumed(&emu.state());
    assert_eq!(used, bill.needed, "every mailbox person took one licence");

    // Every licence in use; then Alice's forward moves into the tenant and Nora arrives.
    set_units(&emu, used);
    server.modify(MOVE_INTO_THE_TENANT);
    server.add_ldif(NEWCOMER_LDIF);
    let mover_before = by_upn(&emu.state(), MOVER_UPN).clone();
    assert_eq!(
        mover_before.recipient_type_details,
        Some(RecipientKind::MailUser)
    );

    emu.reset_counters();
    let dry = install.dry_run(0, &[]);
    assert_eq!(
        dry.licences,
        Some(LicenceBill {
            sku: SKU.into(),
            needed: 2,
            free: 0,
            enabled: used,
            consumed: used,
        })
    );
    assert_eq!(
        held(&dry),
        [
            (Op::Create, NEWCOMER, HeldOutcome::Failed),
            (Op::Convert, MOVER, HeldOutcome::Failed)
        ]
    );
    let convert = dry.actions.iter().find(|a| a.uid == MOVER).unwrap();
    assert_eq!(
        convert.held.as_ref().unwrap().reason,
        format!(
            "no licence of {SKU} free ({used} of {used} in use, 2 needed this run); stays a MailUser until one is freed"
        )
    );
    assert_eq!(
        (dry.summary.create, dry.summary.convert, dry.summary.held),
        (0, 0, 2)
    );
    let warnings: Vec<_> = dry
        .warnings
        .iter()
        .filter(|w| w.field == "licences")
        .collect();
    assert_eq!(warnings.len(), 1, "{:#?}", dry.warnings);
    assert!(
        warnings[0]
            .message
            .starts_with(&format!("2 licence(s) of {SKU} short: 2 needed, 0 free")),
        "{}",
        warnings[0].message
    );
    let text = install.run(&["sync", "--dry-run"]);
    // The shortage is in the bill line, beside the requests the run sends.
    assert!(
        text.stdout.lines().any(|l| l.starts_with("bill: ")
            && l.contains(&format!("; licences ({SKU}): 2 needed, 0 free — 2 short"))),
        "{}",
        show_run(&text)
    );
    assert!(
        text.stdout
            .contains("CANNOT BE DONE, not carried out: no licence of"),
        "{}",
        text.stdout
    );
    let md = install.run(&["sync", "--dry-run", "--format", "markdown"]);
    assert!(
        md.stdout
            .contains(&format!("licences ({SKU}): 2 needed, 0 free")),
        "{}",
        md.stdout
    );
    assert_eq!(emu.counters().writes(), 0, "dry runs write nothing");

    // The real run fails exactly those two, clearly, and sends nothing for them.
    let run = sync(&install, 1);
    assert!(
        run.stdout.contains("0 conflicts, 2 failed"),
        "{}",
        show_run(&run)
    );
    for (op, uid) in [("create", NEWCOMER), ("convert", MOVER)] {
        assert!(
            run.stdout
                .contains(&format!("failed: {op} {uid} — no licence of {SKU} free")),
            "{}",
            run.stdout
        );
    }
    assert_eq!(emu.counters().writes(), 0, "{}", show_run(&run));
    let state = emu.state();
    assert_eq!(
        by_upn(&state, MOVER_UPN),
        &mover_before,
        "Alice is still the working MailUser she was"
    );
    assert_eq!(newcomer(&state), None, "nothing half-made exists for Nora");
    assert_eq!(state_kind(&install, MOVER_ANCHOR), Some(Kind::MailUser));
    assert_eq!(state_rows_of(&install, NEWCOMER), 0);

    // Nothing changed: the next run fails them again and writes nothing to the tenant.
    emu.reset_counters();
    let again = sync(&install, 1);
    assert!(
        again.stdout.contains("0 conflicts, 2 failed"),
        "{}",
        show_run(&again)
    );
    assert_eq!(emu.counters().writes(), 0, "{}", show_run(&again));

    // One licence freed, two needed: exactly the first in plan order (the create) gets it.
    set_units(&emu, used + 1);
    let one = install.dry_run(0, &[]);
    assert_eq!(
        one.licences.as_ref().map(|b| (b.needed, b.free)),
        Some((2, 1))
    );
    assert_eq!(held(&one), [(Op::Convert, MOVER, HeldOutcome::Failed)]);
    let run = sync(&install, 1);
    assert!(
        run.stdout.contains(&format!(
            "failed: convert {MOVER} — no licence of {SKU} free"
        )),
        "{}",
        show_run(&run)
    );
    assert!(
        !run.stdout.contains(&format!("failed: create {NEWCOMER}")),
        "{}",
        run.stdout
    );
    let state = emu.state();
    let nora = newcomer(&state).expect("Nora got the free licence");
    assert!(
        nora.assigned_licenses
            .iter()
            .any(|l| l.eq_ignore_ascii_case(SKU_ID))
    );
    assert!(stamp_of(nora).is_some());
    assert_eq!(
        by_upn(&state, MOVER_UPN),
        &mover_before,
        "Alice waits, still a MailUser"
    );
    assert_eq!(state_kind(&install, MOVER_ANCHOR), Some(Kind::MailUser));

    // Another one freed: Alice is converted in place, and everything settles.
    set_units(&emu, used + 2);
    converge(&install, 4);
    let state = emu.state();
    let alice = by_upn(&state, MOVER_UPN);
    assert_eq!(
        alice.id, mover_before.id,
        "converted in place, not made anew"
    );
    assert_eq!(
        alice.recipient_type_details,
        Some(RecipientKind::UserMailbox)
    );
    assert_eq!(state_kind(&install, MOVER_ANCHOR), Some(Kind::Mailbox));
    assert_eq!(
        newcomer(&state).unwrap().recipient_type_details,
        Some(RecipientKind::UserMailbox)
    );
    assert_eq!(consumed(&state), used + 2);
    assert_no_duplicates(&state);
    assert_eq!(stamped(&state), 40);
    let settled = install.dry_run(0, &[]);
    assert_eq!(
        settled.licences.as_ref().map(|b| (b.needed, b.free)),
        Some((0, 0))
    );
    assert!(settled.warnings.iter().all(|w| w.field != "licences"));
    assert_settled(&install, &emu);
}

/// Somebody else takes the last free licence while a run is under way: once `endpoint` has
/// been answered for the first time, a user outside ldap2exo is given the last unit.
///
/// The emulator counts a request as its handler starts, so the count alone does not say the
/// request was answered: taking the licence at once raced the handler (the suite saw the
/// first `GET subscribedSkus` already find it taken). The emulator delays every request by
/// `LATENCY_MS` before its handler runs, so the run's next request is handled no sooner than
/// `LATENCY_MS` after this one's answer: half of it after the count falls between the two
/// with `LATENCY_MS / 2` to spare on either side.
fn take_the_last_licence_after(emu: &Emulator, endpoint: &str, run: impl FnOnce()) {
    std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while emu.counters().endpoint(endpoint).requests == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{endpoint} was never called"
                );
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            std::thread::sleep(std::time::Duration::from_millis(LATENCY_MS / 2));
            emu.add_user(User {
                user_principal_name: "interloper@example.edu".into(),
                mail_nickname: "interloper".into(),
                display_name: Some("Somebody Else".into()),
                usage_location: Some("DE".into()),
                assigned_licenses: vec![SKU_ID.into()],
                ..User::default()
            });
        });
        run();
        watcher.join().expect("the watcher ends");
    });
}

const LATENCY_MS: u64 = 300;

/// The campus synced with enough licences, then exactly one left free and Nora added: the
/// plan gives her the free one.
fn one_free_for_the_newcomer(emu: &Emulator, server: &Slapd, install: &Install) -> u32 {
    converge(install, 3);
    let used = consumed(&emu.state());
    set_units(emu, used + 1);
    server.add_ldif(NEWCOMER_LDIF);
    let plan = install.dry_run(0, &[]);
    assert_eq!(
        plan.licences.as_ref().map(|b| (b.needed, b.free)),
        Some((1, 1))
    );
    assert!(held(&plan).is_empty());
    let mut faults = emu.faults();
    faults.latency_ms = LATENCY_MS;
    emu.set_faults(faults).unwrap();
    emu.reset_counters();
    used
}

fn no_latency(emu: &Emulator) {
    let mut faults = emu.faults();
    faults.latency_ms = 0;
    emu.set_faults(faults).unwrap();
}

#[test]
fn a_licence_taken_after_planning_is_noticed_before_anybody_is_created() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::with_tenant(&server, &emu);
    let used = one_free_for_the_newcomer(&emu, &server, &install);

    // The inventory reads the licences; right after, somebody takes the last one.
    let mut run = None;
    take_the_last_licence_after(&emu, "GET /v1.0/subscribedSkus", || {
        run = Some(install.run(&["sync"]));
    });
    let run = run.unwrap();
    assert_eq!(run.code, 1, "{}", show_run(&run));
    assert!(
        run.stdout.contains(&format!(
            "failed: create {NEWCOMER} — no licence of {SKU} free ({} of {} in use) when the person was about to be created; nothing was created"
        , used + 1, used + 1)),
        "{}",
        show_run(&run)
    );
    let c = emu.counters();
    assert_eq!(
        c.endpoint("GET /v1.0/subscribedSkus").requests,
        2,
        "read again right before the create"
    );
    assert_eq!(c.endpoint("POST /v1.0/users").requests, 0);
    assert_eq!(c.writes(), 0, "{}", show_run(&run));
    assert_eq!(newcomer(&emu.state()), None);
    assert_eq!(state_rows_of(&install, NEWCOMER), 0);
    no_latency(&emu);

    // Now the plan knows: held, nothing written; once a licence is freed, Nora is created.
    emu.reset_counters();
    let plan = install.dry_run(0, &[]);
    assert_eq!(held(&plan), [(Op::Create, NEWCOMER, HeldOutcome::Failed)]);
    sync(&install, 1);
    assert_eq!(emu.counters().writes(), 0);
    set_units(&emu, used + 2);
    converge(&install, 3);
    let state = emu.state();
    let nora = newcomer(&state).expect("created once a licence is free");
    assert_eq!(
        nora.recipient_type_details,
        Some(RecipientKind::UserMailbox)
    );
    assert_no_duplicates(&state);
    assert_settled(&install, &emu);
}

#[test]
fn a_user_whose_licence_went_between_create_and_assign_is_blocked_and_finished_later() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::with_tenant(&server, &emu);
    let used = one_free_for_the_newcomer(&emu, &server, &install);

    // The licence is still free right before `POST /users`, and gone right after it.
    let mut run = None;
    take_the_last_licence_after(&emu, "POST /v1.0/users", || {
        run = Some(install.run(&["sync"]));
    });
    let run = run.unwrap();
    assert_eq!(run.code, 1, "{}", show_run(&run));
    assert!(
        run.stdout.contains(&format!(
            "failed: create {NEWCOMER} — assignLicense: no {SKU} licences left"
        )),
        "{}",
        show_run(&run)
    );
    assert!(
        run.stdout.contains("was created but got no mailbox (its sign-in is blocked); the next run licenses it once a licence is free"),
        "{}",
        run.stdout
    );
    no_latency(&emu);
    let state = emu.state();
    let nora = newcomer(&state).expect("kept, not deleted: a soft-deleted user would hold her UPN");
    assert!(
        !nora.account_enabled,
        "nobody can sign in to the unlicensed user"
    );
    assert!(nora.assigned_licenses.is_empty());
    assert!(stamp_of(nora).is_some(), "recognisably hers");
    assert_eq!(
        state_rows_of(&install, NEWCOMER),
        1,
        "recorded, so nothing is created twice"
    );

    // Still none free: the plan counts the licence she needs and holds her; nothing written.
    emu.reset_counters();
    let plan = install.dry_run(0, &[]);
    assert_eq!(
        plan.licences.as_ref().map(|b| (b.needed, b.free)),
        Some((1, 0))
    );
    assert_eq!(held(&plan), [(Op::Update, NEWCOMER, HeldOutcome::Failed)]);
    sync(&install, 1);
    assert_eq!(emu.counters().writes(), 0);

    // A licence freed: the same user is licensed and finished.
    set_units(&emu, used + 2);
    converge(&install, 3);
    let state = emu.state();
    let done = newcomer(&state).unwrap();
    assert_eq!(done.id, nora.id, "the same user, not a second one");
    assert_eq!(
        done.recipient_type_details,
        Some(RecipientKind::UserMailbox)
    );
    assert!(done.account_enabled, "a mailbox owner signs in");
    assert_no_duplicates(&state);
    assert_settled(&install, &emu);
}
