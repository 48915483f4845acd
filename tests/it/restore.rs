//! `ldap2exo restore <uid>...` end to end: leavers deleted by a real sync (grace period 0)
//! come back from the emulator's recycle bin with their addresses, stamp and state row; one
//! past Microsoft's 30 days (purged in the emulator) fails alone, saying what is left.

use ldap2exo::desired::Kind;
use ldap2exo::state::{Stage, Store};
use ldap2exo_emulator::{Emulator, FaultAction, FaultConfig, FaultRule, RecipientKind, User};

use crate::support::cli::{DAY, Install, Run};
use crate::support::slapd::{Slapd, SlapdOptions};
use crate::sync::{campus_emulator, live, runtime, stamp_of, sync};

const PEOPLE: &str = "ou=people,dc=example,dc=edu";

fn restore(install: &Install, uids: &[&str]) -> Run {
    let mut args = vec!["restore"];
    args.extend_from_slice(uids);
    install.run(&args)
}

fn live_user(emu: &Emulator, upn: &str) -> Option<User> {
    live(&emu.state())
        .into_iter()
        .find(|u| u.user_principal_name == upn)
        .cloned()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn state_row(
    rt: &tokio::runtime::Runtime,
    install: &Install,
    uid: &str,
) -> ldap2exo::state::ManagedObject {
    rt.block_on(async {
        let store = Store::open(&install.state).await.unwrap();
        let objects = store.objects().await.unwrap();
        store.close().await;
        objects
            .into_iter()
            .find(|o| o.uid == uid)
            .unwrap_or_else(|| panic!("no state row for {uid}"))
    })
}

#[test]
fn deleted_leavers_come_back_with_their_addresses_and_one_past_the_window_fails_alone() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let mut install = Install::with_tenant(&server, &emu);
    sync(&install, 0);
    let before = emu.state();
    let find = |upn: &str| {
        live(&before)
            .into_iter()
            .find(|u| u.user_principal_name == upn)
            .cloned()
            .unwrap()
    };
    let (adavis, bmiller, jmueller, kokafor) = (
        find("adavis@example.edu"),
        find("bmiller@example.edu"),
        find("jmueller@example.edu"),
        find("kokafor@example.edu"),
    );
    assert_eq!(adavis.recipient_type_details, Some(RecipientKind::MailUser));
    assert_eq!(
        bmiller.recipient_type_details,
        Some(RecipientKind::UserMailbox)
    );

    // Three people leave; with no grace period the second sync deletes them.
    for uid in ["adavis", "bmiller", "jmueller", "kokafor"] {
        server.delete(&format!("uid={uid},{PEOPLE}"));
    }
    install
        .env
        .push(("LDAP2EXO__SAFETY__GRACE_PERIOD_DAYS".into(), "0".into()));
    install
        .env
        .push(("LDAP2EXO__SAFETY__MAX_DELETE_PERCENT".into(), "50".into()));
    sync(&install, 0);
    install.now += 60;
    sync(&install, 0);
    for upn in [
        "adavis@example.edu",
        "bmiller@example.edu",
        "jmueller@example.edu",
        "kokafor@example.edu",
    ] {
        assert!(live_user(&emu, upn).is_none(), "{upn} was deleted");
    }
    assert_eq!(state_row(&rt, &install, "adavis").stage, Stage::Deleted);
    // jmueller's object is past Microsoft's 30 days: purged from the recycle bin.
    assert!(emu.expire_deleted(&jmueller.id));
    // Restored people get the normal grace period from now on.
    install
        .env
        .retain(|(k, _)| k != "LDAP2EXO__SAFETY__GRACE_PERIOD_DAYS");
    install.now += 2 * DAY;
    // kokafor's removal was wrong: the entry is back in LDAP before anyone syncs.
    server.add_ldif(&fixture_entry("kokafor"));

    let run = restore(
        &install,
        &[
            "adavis", "jmueller", "bmiller", "nobody", "cwong", "kokafor",
        ],
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let line = |uid: &str| {
        run.stdout
            .lines()
            .find(|l| l.starts_with(&format!("{uid}: ")))
            .unwrap_or_else(|| panic!("no line for {uid}:\n{}\n{}", run.stdout, run.stderr))
            .to_owned()
    };
    let due = ldap2exo::plan::rfc3339(install.now + 30 * DAY)[..10].to_owned();
    for uid in ["adavis", "bmiller"] {
        let l = line(uid);
        assert!(l.contains("restored hidden"), "{l}");
        assert!(
            l.contains(&format!(
                "deleted again on {due} unless its LDAP entry returns"
            )),
            "{l}"
        );
    }
    let gone = line("jmueller");
    assert!(gone.contains("not restored"), "{gone}");
    assert!(gone.contains("2 days ago"), "{gone}");
    assert!(gone.contains("gone for good"), "{gone}");
    assert!(gone.contains("What is left"), "{gone}");
    assert!(gone.contains("creates a new mail user"), "{gone}");
    assert!(line("nobody").contains("not managed by ldap2exo"));
    assert!(line("cwong").contains("not deleted (stage active): nothing to restore"));
    // kokafor is in LDAP: restored, then synced at once (shown, up to date).
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("kokafor: "))
        .collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert!(
        lines[0].contains("restored (mail_user") && lines[0].contains("a sync of it follows"),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains("synced: shown"), "{}", lines[1]);
    assert_eq!(state_row(&rt, &install, "kokafor").stage, Stage::Active);
    let k = live_user(&emu, "kokafor@example.edu").expect("kokafor is back");
    assert_eq!(k.id, kokafor.id, "the same object");
    assert_eq!(
        sorted(k.proxy_addresses.clone()),
        sorted(kokafor.proxy_addresses.clone())
    );
    assert!(!k.hidden_from_address_lists_enabled, "shown again");

    // The same objects, with the same addresses and stamp, hidden as leavers.
    for (before, kind) in [(&adavis, Kind::MailUser), (&bmiller, Kind::Mailbox)] {
        let now = live_user(&emu, &before.user_principal_name)
            .unwrap_or_else(|| panic!("{} is back", before.user_principal_name));
        assert_eq!(now.id, before.id, "the same object, not a new one");
        assert_eq!(
            sorted(now.proxy_addresses.clone()),
            sorted(before.proxy_addresses.clone())
        );
        assert_eq!(stamp_of(&now), stamp_of(before));
        assert!(now.hidden_from_address_lists_enabled);
        let uid = before.user_principal_name.split('@').next().unwrap();
        let row = state_row(&rt, &install, uid);
        assert_eq!(row.stage, Stage::Disabled);
        assert_eq!(row.kind, kind);
        assert_eq!(row.deleted_at, None);
        assert_eq!(row.delete_due_at, Some(install.now + 30 * DAY));
    }
    assert!(live_user(&emu, "jmueller@example.edu").is_none());
    assert_eq!(state_row(&rt, &install, "jmueller").stage, Stage::Deleted);

    // Recorded as a run, with its journal.
    let status = install.run(&["status", "--format", "json"]);
    assert!(status.stdout.contains("\"restore\""), "{}", status.stdout);

    // Nothing more to do for the restored people (the leavers wait for their new date).
    let plan = install.dry_run(0, &[]);
    assert!(
        plan.actions
            .iter()
            .all(|a| !["adavis", "bmiller", "kokafor"].contains(&a.uid.as_str())),
        "{:#?}",
        plan.actions
    );
    // A restored person who is in LDAP again comes back active: the next sync shows them.
    server.add_ldif(&fixture_entry("adavis"));
    sync(&install, 0);
    let back = live_user(&emu, "adavis@example.edu").unwrap();
    assert_eq!(back.id, adavis.id);
    assert!(!back.hidden_from_address_lists_enabled);
}

#[test]
fn a_restore_exchange_does_not_confirm_is_still_recorded_and_not_repeated() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let mut install = Install::with_tenant(&server, &emu);
    sync(&install, 0);
    server.delete(&format!("uid=adavis,{PEOPLE}"));
    install
        .env
        .push(("LDAP2EXO__SAFETY__GRACE_PERIOD_DAYS".into(), "0".into()));
    sync(&install, 0);
    install.now += 60;
    sync(&install, 0);
    assert_eq!(state_row(&rt, &install, "adavis").stage, Stage::Deleted);
    install
        .env
        .retain(|(k, _)| k != "LDAP2EXO__SAFETY__GRACE_PERIOD_DAYS");

    // The restore goes through; Exchange then refuses every look at the recipient.
    emu.set_faults(FaultConfig {
        rules: vec![FaultRule {
            endpoint: "EXO Get-Recipient".into(),
            action: FaultAction::Fail { status: 400 },
            count: 1000,
        }],
        ..Default::default()
    })
    .unwrap();
    let run = restore(&install, &["adavis"]);
    let out = format!("{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.code, 0, "{out}");
    assert!(run.stdout.contains("adavis: restored hidden"), "{out}");
    assert!(
        run.stdout.contains("Exchange did not show it back"),
        "{out}"
    );
    // The object is live again, and the state store says so: a second restore does not
    // call it gone for good.
    assert!(live_user(&emu, "adavis@example.edu").is_some(), "{out}");
    assert_eq!(state_row(&rt, &install, "adavis").stage, Stage::Disabled);
    emu.set_faults(FaultConfig::default()).unwrap();
    let again = restore(&install, &["adavis"]);
    assert_eq!(again.code, 1, "{}", again.stdout);
    assert!(
        again.stdout.contains("not deleted (stage disabled)"),
        "{}",
        again.stdout
    );
}

/// `uid`'s entry from the fixture (the same entryUUID).
pub(crate) fn fixture_entry(uid: &str) -> String {
    let fixture = include_str!("../fixtures/campus.ldif");
    let start = fixture
        .find(&format!("dn: uid={uid},"))
        .expect("in the fixture");
    let rest = &fixture[start..];
    let end = rest.find("\n\n").unwrap_or(rest.len());
    format!("{}\n", &rest[..end])
}

#[test]
fn a_person_back_in_ldap_under_a_new_entry_uuid_is_restored_and_taken_over_by_the_sync() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let mut install = Install::with_tenant(&server, &emu);
    sync(&install, 0);
    let bmiller = live_user(&emu, "bmiller@example.edu").unwrap();
    let users_before = live(&emu.state()).len();

    // He leaves; with no grace period the second sync deletes his mailbox.
    server.delete(&format!("uid=bmiller,{PEOPLE}"));
    install
        .env
        .push(("LDAP2EXO__SAFETY__GRACE_PERIOD_DAYS".into(), "0".into()));
    sync(&install, 0);
    install.now += 60;
    sync(&install, 0);
    assert!(live_user(&emu, "bmiller@example.edu").is_none());
    install
        .env
        .retain(|(k, _)| k != "LDAP2EXO__SAFETY__GRACE_PERIOD_DAYS");

    // His entry is put back from a backup: slapd gives it a new entryUUID.
    let new_anchor = "7e1c0000-0000-4000-8000-0000000000d1";
    let entry = crate::handovers::readded("bmiller", new_anchor);
    server.add_ldif(&entry);

    let run = restore(&install, &["bmiller"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("bmiller: "))
        .collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert!(
        lines[0].contains("restored hidden")
            && lines[0].contains(&format!("back under a new anchor ({new_anchor}"))
            && !lines[0].contains("unless its LDAP entry returns"),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains("synced: shown"), "{}", lines[1]);

    // His own mailbox, shown, on the new anchor, with every address; nothing created.
    let state = emu.state();
    let back = live_user(&emu, "bmiller@example.edu").expect("bmiller is back");
    assert_eq!(back.id, bmiller.id, "the same object");
    assert!(!back.hidden_from_address_lists_enabled, "shown again");
    assert!(back.account_enabled);
    assert_eq!(
        stamp_of(&back),
        Some(format!("ldap2exo:{new_anchor}").as_str())
    );
    assert_eq!(
        sorted(back.proxy_addresses.clone()),
        sorted(bmiller.proxy_addresses.clone())
    );
    assert_eq!(live(&state).len(), users_before, "no second object");
    let row = state_row(&rt, &install, "bmiller");
    assert_eq!(
        (row.anchor.to_string(), row.stage),
        (new_anchor.to_owned(), Stage::Active)
    );
    let plan = install.dry_run(0, &[]);
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
}
