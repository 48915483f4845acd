//! The plan's bill against what apply really sends: a dry run's `bill` compared with the
//! emulator's request counters of the sync that follows, per service. Writes must be equal to
//! the writes that took (a write refused with 404 while its new object propagates between
//! Exchange and Graph is sent again; those retries are not billed); reads are an estimate (a
//! new mailbox is polled for up to 4 times while Exchange provisions it, the bill counts one).

use std::collections::BTreeMap;

use ldap2exo::plan::Op;
use ldap2exo::plan::bill::Bill;
use ldap2exo_emulator::{Counters, Emulator};

use crate::support::cli::{DAY, Install};
use crate::support::slapd::{Slapd, SlapdOptions};
use crate::sync::{campus_emulator, runtime, sync};

const PEOPLE: &str = "ou=people,dc=example,dc=edu";

/// Writes and reads per service (`graph`, `exchange`) in `c`; token requests and the `$batch`
/// envelope (its parts count under their own endpoints) are left out.
fn per_service(c: &Counters) -> BTreeMap<&'static str, (u64, u64)> {
    let mut out: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    for (endpoint, e) in &c.per_endpoint {
        let service = if endpoint.starts_with("EXO ") {
            "exchange"
        } else if endpoint.contains("/v1.0/") && !endpoint.contains("$batch") {
            "graph"
        } else {
            continue;
        };
        let slot = out.entry(service).or_default();
        if e.writes > 0 {
            // A write refused while the object propagates (404 right after its create) is
            // sent again: the bill counts the writes that take, not those retries.
            slot.0 += e.writes - e.errors.min(e.writes);
        } else {
            slot.1 += e.requests;
        }
    }
    out
}

/// Runs a dry run (its bill, and the reads planning itself makes), then the sync, and checks
/// the bill against what the sync sent beyond planning.
fn check_bill(install: &Install, emu: &Emulator, mailbox_creates: u64) -> Bill {
    emu.reset_counters();
    let plan = install.dry_run(0, &[]);
    let planning = per_service(&emu.counters());
    let bill = plan.bill.clone().expect("every plan has a bill");
    emu.reset_counters();
    sync(install, 0);
    let sent = per_service(&emu.counters());
    let counters = emu.counters();
    let listing = || {
        counters
            .per_endpoint
            .iter()
            .map(|(k, e)| {
                format!(
                    "{k}: {} requests, {} writes, {} errors",
                    e.requests, e.writes, e.errors
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    for service in ["graph", "exchange"] {
        let billed = bill.service(service).unwrap();
        let (writes, reads) = sent.get(service).copied().unwrap_or_default();
        let (_, planning_reads) = planning.get(service).copied().unwrap_or_default();
        assert_eq!(
            billed.writes,
            writes,
            "{service} writes: billed {billed:?}, sent {writes}\n{}",
            listing()
        );
        let apply_reads = reads.saturating_sub(planning_reads);
        // Get-Mailbox is polled up to 4 times for a new mailbox; the bill counts once.
        let slack = if service == "exchange" {
            3 * mailbox_creates
        } else {
            0
        };
        assert!(
            billed.reads <= apply_reads && apply_reads <= billed.reads + slack,
            "{service} reads: billed {}, apply sent {apply_reads} (sync {reads}, planning {planning_reads})",
            billed.reads
        );
    }
    bill
}

#[test]
fn the_bill_counts_the_writes_apply_sends_per_service() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let mut install = Install::with_tenant(&server, &emu);

    // The first sync: every person created, MailUsers and mailboxes.
    let plan = install.dry_run(0, &[]);
    let creates = |kind: ldap2exo::desired::Kind| {
        plan.actions
            .iter()
            .filter(|a| a.op == Op::Create && a.kind == kind && a.held.is_none())
            .count() as u64
    };
    let mailboxes = creates(ldap2exo::desired::Kind::Mailbox);
    assert!(mailboxes >= 2 && creates(ldap2exo::desired::Kind::MailUser) >= 5);
    let bill = check_bill(&install, &emu, mailboxes);
    assert!(bill.estimated_seconds > 0);
    assert_eq!(bill.binding.as_deref(), Some("exchange"), "{bill:?}");

    // Then updates (a title, a department, a new alias), and two leavers.
    for (uid, attr, value) in [
        ("adavis", "title", "Dean of Physics"),
        ("jmueller", "ou", "Physics"),
        (
            "kokafor",
            "mailAlternateAddress",
            "kelechi.okafor@staff.example.edu",
        ),
    ] {
        let op = if attr == "mailAlternateAddress" {
            "add"
        } else {
            "replace"
        };
        server.modify(&format!(
            "dn: uid={uid},{PEOPLE}\nchangetype: modify\n{op}: {attr}\n{attr}: {value}\n"
        ));
    }
    for uid in ["obrien", "bmiller"] {
        server.delete(&format!("uid={uid},{PEOPLE}"));
    }
    install
        .env
        .push(("LDAP2EXO__SAFETY__MAX_DELETE_PERCENT".into(), "50".into()));
    install.now += DAY;
    let plan = install.dry_run(0, &[]);
    let ops: Vec<(Op, &str)> = plan
        .actions
        .iter()
        .map(|a| (a.op, a.uid.as_str()))
        .collect();
    assert_eq!(plan.summary.update + plan.summary.disable, 5, "{ops:?}");
    check_bill(&install, &emu, 0);
}
