use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::*;
use crate::desired::{Disabled, Recipient};
use crate::ids::{SmtpAddress, Upn};

const NOW: i64 = 1_800_000_000;
const DAY: i64 = 86_400;

fn person(anchor: &str, uid: &str, mail: &str) -> Recipient {
    Recipient {
        anchor: Anchor::new(anchor).unwrap(),
        dn: format!("uid={uid},ou=people,dc=example,dc=edu"),
        uid: uid.into(),
        kind: Kind::MailUser,
        upn: Upn::new(uid, "example.edu").unwrap(),
        alias: uid.into(),
        name: uid.into(),
        display_name: format!("Person {uid}"),
        given_name: None,
        surname: None,
        primary: SmtpAddress::parse(mail).unwrap(),
        secondary: BTreeSet::new(),
        external_address: Some(SmtpAddress::parse(mail).unwrap()),
        forward: None,
        forwarding: None,
        department: None,
        job_title: None,
        phone: None,
        mobile: None,
        office: None,
        company: None,
        hidden: false,
    }
}

fn managed(r: &Recipient) -> ManagedObject {
    ManagedObject {
        anchor: r.anchor.clone(),
        kind: r.kind,
        uid: r.uid.clone(),
        dn: r.dn.clone(),
        tenant_object_id: Some(format!("oid-{}", r.uid)),
        attributes: r.fields(),
        stage: Stage::Active,
        created_at: NOW - 100 * DAY,
        updated_at: NOW - 100 * DAY,
        disabled_at: None,
        delete_due_at: None,
        deleted_at: None,
    }
}

fn disabled_since(mut o: ManagedObject, days_ago: i64) -> ManagedObject {
    o.stage = Stage::Disabled;
    o.disabled_at = Some(NOW - days_ago * DAY);
    o.delete_due_at = Some(NOW - days_ago * DAY + 30 * DAY);
    o
}

fn desired(recipients: Vec<Recipient>) -> Desired {
    Desired {
        source_count: recipients.len(),
        recipients,
        ..Default::default()
    }
}

struct Case {
    desired: Desired,
    objects: Vec<ManagedObject>,
    baseline: Option<u64>,
    scope: Scope,
    safety: SafetyConfig,
    max_deletes: Option<u32>,
    approval: Option<super::ScopedApproval>,
    recent: super::RecentRemovals,
    tenant: Option<Inventory>,
}

impl Case {
    fn new(desired: Desired, objects: Vec<ManagedObject>) -> Self {
        Case {
            desired,
            objects,
            baseline: None,
            scope: Scope::Full,
            safety: SafetyConfig::default(),
            max_deletes: None,
            approval: None,
            recent: Default::default(),
            tenant: None,
        }
    }
    fn run(&self) -> Plan {
        plan(Input {
            desired: self.desired.clone(),
            objects: &self.objects,
            baseline: self.baseline,
            scope: self.scope,
            safety: &self.safety,
            max_deletes: self.max_deletes,
            approval: self.approval.as_ref(),
            recent_removals: self.recent,
            tenant: self.tenant.as_ref(),
            journaled_creates: &BTreeSet::new(),
            outside: Default::default(),
            now: NOW,
        })
    }
}

fn only_action(p: &Plan) -> &Action {
    assert_eq!(p.actions.len(), 1, "{:#?}", p.actions);
    &p.actions[0]
}

#[test]
fn new_people_are_created_with_every_field() {
    let mut r = person("a1", "jdoe", "jane.doe@example.edu");
    r.secondary
        .insert(SmtpAddress::parse("jd@example.edu").unwrap());
    let p = Case::new(desired(vec![r]), vec![]).run();
    let a = only_action(&p);
    assert_eq!(a.op, Op::Create);
    assert_eq!(
        a.changes["primarySmtpAddress"],
        (None, Some(json!("jane.doe@example.edu")))
    );
    assert_eq!(
        a.changes["emailAddresses"],
        (None, Some(json!(["jd@example.edu"])))
    );
    assert_eq!(
        a.changes["externalEmailAddress"],
        (None, Some(json!("jane.doe@example.edu")))
    );
    assert!(a.changes.iter().all(|(_, (before, _))| before.is_none()));
    assert_eq!(p.summary.create, 1);
    assert_eq!(p.safety.verdict, Verdict::Ok);
}

#[test]
fn nothing_changes_when_the_state_matches() {
    let r = person("a1", "jdoe", "jane.doe@example.edu");
    let p = Case::new(desired(vec![r.clone()]), vec![managed(&r)]).run();
    assert!(p.actions.is_empty());
    assert_eq!(p.summary.unchanged, 1);
}

#[test]
fn a_mail_change_is_an_update_that_keeps_the_old_primary() {
    let before = person("a1", "jdoe", "jane.doe@example.edu");
    let after = person("a1", "jdoe", "jane.smith@example.edu");
    let p = Case::new(desired(vec![after]), vec![managed(&before)]).run();
    let a = only_action(&p);
    assert_eq!(a.op, Op::Update);
    assert_eq!(
        a.changes["primarySmtpAddress"],
        (
            Some(json!("jane.doe@example.edu")),
            Some(json!("jane.smith@example.edu"))
        )
    );
    assert_eq!(
        a.changes[RETAINED],
        (None, Some(json!(["jane.doe@example.edu"])))
    );
}

#[test]
fn retained_addresses_survive_later_runs_but_yield_to_a_new_owner() {
    let before = person("a1", "jdoe", "jane.doe@example.edu");
    let after = person("a1", "jdoe", "jane.smith@example.edu");
    let mut applied = managed(&after);
    applied
        .attributes
        .insert(Field::RetainedAddresses, json!(["jane.doe@example.edu"]));
    let p = Case::new(desired(vec![after.clone()]), vec![applied.clone()]).run();
    assert!(
        p.actions.is_empty(),
        "retained alias must not flap: {:#?}",
        p.actions
    );

    let newcomer = person("b2", "jdoe2", "jane.doe@example.edu");
    let p = Case::new(desired(vec![after, newcomer]), vec![applied]).run();
    let update = p
        .actions
        .iter()
        .find(|a| a.op == Op::Update)
        .expect("an update");
    assert_eq!(
        update.changes[RETAINED],
        (Some(json!(["jane.doe@example.edu"])), None)
    );
    let _ = before;
}

#[test]
fn a_uid_change_is_an_update_of_the_same_anchor() {
    let before = person("a1", "jdoe", "jane.doe@example.edu");
    let after = person("a1", "jsmith", "jane.doe@example.edu");
    let p = Case::new(desired(vec![after]), vec![managed(&before)]).run();
    let a = only_action(&p);
    assert_eq!(a.op, Op::Update);
    assert_eq!(a.anchor.as_str(), "a1");
    assert!(a.changes.contains_key("userPrincipalName"));
    assert!(a.changes.contains_key("mailNickname"));
    assert_eq!(p.summary.create + p.summary.disable, 0);
}

#[test]
fn a_forward_into_the_tenant_converts_the_mailuser() {
    let before = person("a1", "jdoe", "jane.doe@example.edu");
    let mut after = before.clone();
    after.kind = Kind::Mailbox;
    after.external_address = None;
    after
        .secondary
        .insert(SmtpAddress::parse("jdoe@exampleedu.mail.onmicrosoft.com").unwrap());
    let p = Case::new(desired(vec![after]), vec![managed(&before)]).run();
    let a = only_action(&p);
    assert_eq!(a.op, Op::Convert);
    assert_eq!(
        a.changes[KIND],
        (Some(json!("mail_user")), Some(json!("mailbox")))
    );
    assert_eq!(a.changes["externalEmailAddress"].1, None);
}

#[test]
fn people_missing_from_ldap_are_disabled_not_deleted() {
    let stays = person("a1", "stays", "stays@example.edu");
    let leaves = person("a2", "leaves", "leaves@example.edu");
    let mut case = Case::new(
        desired(vec![stays.clone()]),
        vec![managed(&stays), managed(&leaves)],
    );
    case.safety.max_delete_percent = 100.0;
    let p = case.run();
    let a = only_action(&p);
    assert_eq!((a.op, a.uid.as_str()), (Op::Disable, "leaves"));
    assert!(
        !a.changes.contains_key(ACCOUNT_ENABLED),
        "a MailUser never signs in"
    );
    assert_eq!(a.changes[HIDDEN], (Some(json!(false)), Some(json!(true))));
    assert_eq!(
        a.reason.as_deref(),
        Some("no longer matched by the LDAP filter")
    );
}

#[test]
fn disabled_in_ldap_gives_its_own_reason() {
    let mut leaves = person("a2", "leaves", "leaves@example.edu");
    leaves.kind = Kind::Mailbox;
    let mut d = desired(vec![]);
    d.source_count = 1;
    d.disabled.push(Disabled {
        anchor: leaves.anchor.clone(),
        dn: leaves.dn.clone(),
        uid: Some("leaves".into()),
    });
    let mut case = Case::new(d, vec![managed(&leaves)]);
    case.safety.max_delete_percent = 100.0;
    let a = case.run().actions.remove(0);
    assert_eq!(a.op, Op::Disable);
    assert_eq!(
        a.changes[ACCOUNT_ENABLED],
        (Some(json!(true)), Some(json!(false))),
        "a mailbox owner is blocked"
    );
    assert!(a.reason.unwrap().contains("disabled in LDAP"));
}

#[test]
fn a_quarantined_person_is_not_treated_as_leaving() {
    let r = person("a1", "jdoe", "jane.doe@example.edu");
    let mut d = desired(vec![]);
    d.source_count = 1;
    d.quarantined.push(Quarantined {
        dn: r.dn.clone(),
        anchor: Some(r.anchor.clone()),
        uid: Some("jdoe".into()),
        field: "mail".into(),
        reason: "bad".into(),
    });
    let p = Case::new(d, vec![managed(&r)]).run();
    assert!(p.actions.is_empty());
    assert_eq!((p.summary.unchanged, p.summary.quarantined), (1, 1));
}

#[test]
fn only_runs_plan_nobody_else_as_leaving() {
    let named = person("a1", "named", "named@example.edu");
    let other = person("a2", "other", "other@example.edu");
    let mut case = Case::new(desired(vec![named.clone()]), vec![managed(&other)]);
    case.scope = Scope::Only;
    let p = case.run();
    assert_eq!(only_action(&p).op, Op::Create);
    assert_eq!(p.summary.disable, 0);
}

#[test]
fn deletion_waits_for_the_grace_period() {
    let r = person("a1", "gone", "gone@example.edu");
    let mut d = desired(vec![person("a9", "x", "x@example.edu")]);
    d.source_count = 1;
    let mut case = Case::new(d.clone(), vec![disabled_since(managed(&r), 29)]);
    case.safety.max_delete_percent = 100.0;
    assert_eq!(case.run().summary.delete, 0);
    let mut case = Case::new(d, vec![disabled_since(managed(&r), 30)]);
    case.safety.max_delete_percent = 100.0;
    let p = case.run();
    let del = p
        .actions
        .iter()
        .find(|a| a.op == Op::Delete)
        .expect("a delete");
    assert!(del.reason.as_ref().unwrap().contains("grace period"));
}

#[test]
fn people_back_within_the_grace_period_are_enabled() {
    let r = person("a1", "back", "back@example.edu");
    let mut o = disabled_since(managed(&r), 3);
    o.attributes
        .insert(Field::HiddenFromAddressLists, Value::Bool(true));
    let p = Case::new(desired(vec![r]), vec![o]).run();
    let a = only_action(&p);
    assert_eq!(a.op, Op::Enable);
    assert!(
        !a.changes.contains_key(ACCOUNT_ENABLED),
        "a MailUser stays unable to sign in"
    );
    assert_eq!(a.changes[HIDDEN].1, Some(json!(false)));
}

#[test]
fn deleted_people_who_return_are_created_again() {
    let r = person("a1", "back", "back@example.edu");
    let mut o = managed(&r);
    o.stage = Stage::Deleted;
    o.deleted_at = Some(NOW - DAY);
    let p = Case::new(desired(vec![r]), vec![o]).run();
    assert_eq!(only_action(&p).op, Op::Create);
}

fn population(n: usize) -> Vec<Recipient> {
    (0..n)
        .map(|i| {
            person(
                &format!("a{i:04}"),
                &format!("u{i:04}"),
                &format!("u{i:04}@example.edu"),
            )
        })
        .collect()
}

#[test]
fn an_empty_read_is_blocked_even_with_approval() {
    let people = population(3);
    let objects: Vec<_> = people.iter().map(managed).collect();
    let mut case = Case::new(desired(vec![]), objects);
    case.max_deletes = Some(1000);
    let p = case.run();
    assert_eq!(p.safety.verdict, Verdict::Blocked);
    assert!(p.safety.reasons.iter().any(|r| r.contains("no entries")));
    assert_eq!(
        p.summary.disable, 3,
        "a blocked plan still shows what it would do"
    );
}

#[test]
fn a_shrunken_read_is_blocked() {
    let people = population(100);
    let objects: Vec<_> = people.iter().map(managed).collect();
    let mut case = Case::new(desired(people[..85].to_vec()), objects);
    case.baseline = Some(100);
    case.safety.max_deletes_per_run = 1000;
    case.safety.max_delete_percent = 100.0;
    let p = case.run();
    assert_eq!(p.safety.verdict, Verdict::Blocked);
    assert!(
        p.safety.reasons.iter().any(|r| r.contains("15.0% fewer")),
        "{:?}",
        p.safety.reasons
    );

    case.desired = desired(people[..95].to_vec());
    assert_eq!(
        case.run().safety.verdict,
        Verdict::Ok,
        "5% is within the 10% limit"
    );
}

#[test]
fn removal_caps_block_and_max_deletes_approves() {
    let people = population(100);
    let objects: Vec<_> = people.iter().map(managed).collect();
    let mut case = Case::new(desired(people[..94].to_vec()), objects);
    case.baseline = Some(100);
    let p = case.run();
    assert_eq!(p.summary.disable, 6);
    assert_eq!(p.safety.verdict, Verdict::Blocked);
    assert!(
        p.safety
            .reasons
            .iter()
            .any(|r| r.contains("max_delete_percent")),
        "{:?}",
        p.safety.reasons
    );

    case.safety.max_deletes_per_run = 5;
    case.safety.max_delete_percent = 100.0;
    assert!(
        case.run()
            .safety
            .reasons
            .iter()
            .any(|r| r.contains("max_deletes_per_run = 5"))
    );

    case.max_deletes = Some(6);
    assert_eq!(case.run().safety.verdict, Verdict::Ok);
    case.max_deletes = Some(5);
    let p = case.run();
    assert_eq!(p.safety.verdict, Verdict::Blocked);
    assert!(p.safety.reasons.iter().any(|r| r.contains("--max-deletes")));
}

/// 100 people, of whom `leavers` left; caps wide enough that only the windows matter.
fn window_case(leavers: usize) -> Case {
    let people = population(100);
    let objects: Vec<_> = people.iter().map(managed).collect();
    let mut case = Case::new(desired(people[..100 - leavers].to_vec()), objects);
    case.safety.max_delete_percent = 100.0;
    case.safety.max_source_shrink_percent = 100.0;
    case.safety.max_deletes_per_24h = Some(5);
    case.safety.max_deletes_per_7d = Some(8);
    case
}

#[test]
fn rolling_windows_count_removals_already_applied() {
    let mut case = window_case(3);
    assert_eq!(case.run().safety.verdict, Verdict::Ok, "3 of 5 in a day");
    case.recent = RecentRemovals {
        last_24h: 2,
        last_7d: 2,
    };
    assert_eq!(case.run().safety.verdict, Verdict::Ok, "exactly 5 in a day");
    case.recent.last_24h = 3;
    case.recent.last_7d = 3;
    let p = case.run();
    assert_eq!(p.safety.verdict, Verdict::Blocked);
    assert_eq!(
        p.safety.reasons,
        [
            "3 removals planned and 3 already applied in the last 24 h, more than safety.max_deletes_per_24h = 5"
        ]
    );
    case.recent.last_24h = 0;
    case.recent.last_7d = 6;
    let p = case.run();
    assert!(
        p.safety.reasons[0].contains("6 already applied in the last 7 days")
            && p.safety.reasons[0].contains("max_deletes_per_7d = 8"),
        "{:?}",
        p.safety.reasons
    );
    // --max-deletes approves the run's removals past the windows.
    case.max_deletes = Some(3);
    assert_eq!(case.run().safety.verdict, Verdict::Ok);
    // A run without removals is never blocked by what earlier runs removed.
    let mut quiet = window_case(0);
    quiet.recent = RecentRemovals {
        last_24h: 50,
        last_7d: 50,
    };
    assert_eq!(quiet.run().safety.verdict, Verdict::Ok);
    // 0: no removal without an approval.
    let mut none = window_case(1);
    none.safety.max_deletes_per_24h = Some(0);
    assert_eq!(none.run().safety.verdict, Verdict::Blocked);
}

/// 100 people in two OUs (even in ou=a, odd in ou=b); `leavers` of the first leave.
fn two_ou_case(leavers: usize) -> Case {
    let people: Vec<Recipient> = population(100)
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            let ou = if i % 2 == 0 { "a" } else { "b" };
            r.dn = format!("uid={},ou={ou},ou=people,dc=example,dc=edu", r.uid);
            r
        })
        .collect();
    let objects: Vec<_> = people.iter().map(managed).collect();
    let mut case = Case::new(desired(people[leavers..].to_vec()), objects);
    case.safety.max_deletes_per_run = 1;
    case
}

fn scoped(n: u32, scope: &str, matcher: ScopeMatch) -> Option<ScopedApproval> {
    Some(ScopedApproval {
        approval: Approval {
            removals: n,
            scope: scope.into(),
        },
        matcher,
    })
}

fn held_uids(p: &Plan) -> Vec<(&str, &str)> {
    p.actions
        .iter()
        .filter_map(|a| Some((a.uid.as_str(), a.held.as_ref()?.reason.as_str())))
        .collect()
}

#[test]
fn a_scoped_approval_lets_through_the_first_n_in_scope_and_holds_the_rest() {
    // u0000..u0009 leave: u0000, u0002, …, u0008 in ou=a; the odd ones in ou=b.
    let mut case = two_ou_case(10);
    let scope = "OU=a, ou=people,dc=example,dc=edu";
    case.approval = scoped(3, scope, ScopeMatch::subtree(scope));
    case.recent = RecentRemovals {
        last_24h: 1000,
        last_7d: 1000,
    };
    let p = case.run();
    let going: Vec<&str> = p
        .actions
        .iter()
        .filter(|a| a.op == Op::Disable && a.held.is_none())
        .map(|a| a.uid.as_str())
        .collect();
    assert_eq!(going, ["u0000", "u0002", "u0004"], "the first 3 of ou=a");
    let held = held_uids(&p);
    assert_eq!(held.len(), 7, "{held:?}");
    assert!(held.contains(&(
        "u0001",
        "outside the approved scope OU=a, ou=people,dc=example,dc=edu"
    )));
    assert!(
        held.iter()
            .any(|(u, r)| *u == "u0006" && r.contains("beyond the 3 removals"))
    );
    assert!(
        p.actions
            .iter()
            .filter(|a| a.held.is_some())
            .all(|a| a.held.as_ref().unwrap().outcome == HeldOutcome::Skipped)
    );
    assert_eq!((p.summary.disable, p.summary.held), (3, 7));
    assert_eq!(
        p.safety.verdict,
        Verdict::Blocked,
        "the operator must act on the held 7"
    );
    assert_eq!(p.safety.held_removals, 7);
    assert!(p.safety.removals_go());
    assert_eq!(
        p.safety.reasons,
        [
            "7 removals held back (5 outside the scope OU=a, ou=people,dc=example,dc=edu, 2 in the scope beyond the 3 approved with --approve-removals); 3 approved removals go ahead"
        ]
    );
    // Covering every removal in scope: nothing held, the verdict is ok, caps and windows
    // (max_deletes_per_run = 1 here) lifted for the approved removals.
    case.approval = scoped(
        10,
        "dc=example,dc=edu",
        ScopeMatch::subtree("dc=example,dc=edu"),
    );
    let p = case.run();
    assert_eq!(
        (p.safety.verdict, p.summary.disable, p.summary.held),
        (Verdict::Ok, 10, 0)
    );
    // A DN is a subtree: `ou=a` does not cover `ou=ba`, nor the entry's own parent.
    assert!(
        !ScopeMatch::subtree("ou=a,dc=x").covers(&Anchor::new("z").unwrap(), "uid=1,ou=ba,dc=x")
    );
    assert!(ScopeMatch::subtree("ou=a,dc=x").covers(&Anchor::new("z").unwrap(), "ou=a,dc=x"));
    assert!(
        !ScopeMatch::subtree("uid=1,ou=a,dc=x").covers(&Anchor::new("z").unwrap(), "ou=a,dc=x")
    );
}

#[test]
fn a_filter_scope_matches_by_anchor_and_an_empty_read_lets_nothing_through() {
    let mut case = two_ou_case(4);
    let anchors = ["a0001", "a0003"]
        .iter()
        .map(|a| Anchor::new(a).unwrap())
        .collect();
    case.approval = scoped(5, "(departmentNumber=42)", ScopeMatch::Anchors(anchors));
    let p = case.run();
    let going: Vec<&str> = p
        .actions
        .iter()
        .filter(|a| a.op == Op::Disable && a.held.is_none())
        .map(|a| a.uid.as_str())
        .collect();
    assert_eq!(going, ["u0001", "u0003"]);
    assert_eq!(p.safety.held_removals, 2);

    let mut empty = two_ou_case(0);
    empty.desired = Desired::default();
    empty.approval = scoped(
        500,
        "dc=example,dc=edu",
        ScopeMatch::subtree("dc=example,dc=edu"),
    );
    let p = empty.run();
    assert_eq!(p.safety.verdict, Verdict::Blocked);
    assert_eq!((p.summary.disable, p.summary.held), (0, 100));
    assert!(p.safety.reasons[0].contains("LDAP returned no entries"));
}

#[test]
fn planning_is_deterministic() {
    let people = population(20);
    let mut objects: Vec<_> = people[5..].iter().map(managed).collect();
    objects.push(managed(&person("zz", "leaver", "leaver@example.edu")));
    let case = Case::new(desired(people.clone()), objects.clone());
    let first = case.run();
    let mut reversed = people;
    reversed.reverse();
    objects.reverse();
    let mut d = desired(reversed);
    d.recipients.sort_by(|a, b| a.anchor.cmp(&b.anchor));
    let second = Case::new(d, objects).run();
    assert_eq!(first, second);
}

#[test]
fn a_full_recipient_carries_every_ldap_field_and_round_trips_through_the_state() {
    // Every field LDAP maps reaches the state store and the plan, and reads back the same.
    let mut r = person("a1", "ann", "ann@example.edu");
    r.given_name = Some("Ann".into());
    r.surname = Some("Lee".into());
    r.department = Some("Physics".into());
    r.job_title = Some("Lecturer".into());
    r.phone = Some("+49 1".into());
    r.mobile = Some("+49 2".into());
    r.office = Some("B1".into());
    r.company = Some("Uni".into());
    r.forwarding = Some(SmtpAddress::parse("ann@onprem.example.edu").unwrap());
    let fields = r.into_fields();
    // Every field but the state's bookkeeping (retained addresses, sign-in, kind, anchor).
    let expected: Vec<Field> = Field::ALL
        .into_iter()
        .filter(|f| {
            !matches!(
                f,
                Field::RetainedAddresses | Field::AccountEnabled | Field::Kind | Field::Anchor
            )
        })
        .collect();
    let mut keys: Vec<Field> = fields.keys().collect();
    keys.sort();
    assert_eq!(keys, expected);
    let stored = serde_json::to_string(&fields).unwrap();
    assert_eq!(serde_json::from_str::<Fields>(&stored).unwrap(), fields);
}

// ----- the phases after the diff: handovers, re-anchors, what the tenant holds ----------

fn alias(r: &mut Recipient, a: &str) {
    r.secondary.insert(SmtpAddress::parse(a).unwrap());
}

/// The tenant showing each of `people` stamped, with its MOERA among its addresses.
fn tenant_showing(people: &[&ManagedObject]) -> Inventory {
    let mut inv = Inventory::default();
    for o in people {
        let upn = o.attributes["userPrincipalName"]
            .as_str()
            .unwrap()
            .to_owned();
        let primary = o.attributes["primarySmtpAddress"].as_str().unwrap();
        inv.managed.insert(
            o.anchor.clone(),
            crate::inventory::TenantObject {
                id: format!("oid-{}", o.uid),
                anchor: o.anchor.clone(),
                kind: o.kind,
                upn,
                account_enabled: Some(false),
                exchange_licensed: false,
                mailbox_pending: false,
                in_exchange: true,
                in_graph: true,
                fields: o.attributes.clone(),
                proxies: vec![
                    format!("SMTP:{primary}"),
                    format!("smtp:{}@contoso.onmicrosoft.com", o.uid),
                ],
                unknown: Default::default(),
            },
        );
    }
    inv
}

fn actions_of<'p>(p: &'p Plan, uid: &str) -> Vec<&'p Action> {
    p.actions.iter().filter(|a| a.uid == uid).collect()
}

#[test]
fn an_alias_moving_to_another_person_is_released_first() {
    let mut ann = person("a1", "ann", "ann@example.edu");
    alias(&mut ann, "team@example.edu");
    let bob = person("a2", "bob", "bob@example.edu");
    let objects = vec![managed(&ann), managed(&bob)];
    let mut ann2 = ann.clone();
    ann2.secondary.clear();
    let mut bob2 = bob.clone();
    alias(&mut bob2, "team@example.edu");
    let p = Case::new(desired(vec![ann2, bob2]), objects).run();
    let (a, b) = (&actions_of(&p, "ann")[0], &actions_of(&p, "bob")[0]);
    assert_eq!((a.op, a.phase), (Op::Update, Phase::Release), "{a:#?}");
    assert_eq!((b.op, b.phase), (Op::Update, Phase::Main), "{b:#?}");
    // Releases come first in the plan, which apply runs phase by phase.
    assert_eq!(p.actions[0].uid, "ann");
}

#[test]
fn two_people_swapping_aliases_each_release_then_claim() {
    let mut ann = person("a1", "ann", "ann@example.edu");
    alias(&mut ann, "x@example.edu");
    let mut bob = person("a2", "bob", "bob@example.edu");
    alias(&mut bob, "y@example.edu");
    let objects = vec![managed(&ann), managed(&bob)];
    let (mut ann2, mut bob2) = (ann.clone(), bob.clone());
    ann2.secondary.clear();
    alias(&mut ann2, "y@example.edu");
    bob2.secondary.clear();
    alias(&mut bob2, "x@example.edu");
    let p = Case::new(desired(vec![ann2, bob2]), objects).run();
    for (uid, gives, takes) in [
        ("ann", "x@example.edu", "y@example.edu"),
        ("bob", "y@example.edu", "x@example.edu"),
    ] {
        let acts = actions_of(&p, uid);
        assert_eq!(acts.len(), 2, "{acts:#?}");
        let release = acts.iter().find(|a| a.phase == Phase::Release).unwrap();
        let rest = acts.iter().find(|a| a.phase == Phase::Main).unwrap();
        assert_eq!(
            release.changes["emailAddresses"],
            (Some(json!([gives])), Some(json!([])))
        );
        assert_eq!(
            rest.changes["emailAddresses"],
            (Some(json!([])), Some(json!([takes])))
        );
    }
    assert_eq!(p.summary.update, 4);
}

#[test]
fn a_leaver_gives_a_newcomer_its_address_and_keeps_its_moera() {
    let ann = person("a1", "ann", "team@example.edu");
    let objects = vec![managed(&ann)];
    let tenant = tenant_showing(&[&objects[0]]);
    let newcomer = person("a2", "zed", "team@example.edu");
    let mut case = Case::new(desired(vec![newcomer.clone()]), objects.clone());
    case.tenant = Some(tenant);
    // One leaver of one person: let the removal through the percentage cap.
    case.safety.max_delete_percent = 100.0;
    let p = case.run();
    assert_eq!(p.safety.verdict, Verdict::Ok);
    let leaver = actions_of(&p, "ann")[0];
    assert_eq!((leaver.op, leaver.phase), (Op::Disable, Phase::Release));
    assert_eq!(
        leaver.changes["primarySmtpAddress"],
        (
            Some(json!("team@example.edu")),
            Some(json!("ann@contoso.onmicrosoft.com"))
        )
    );
    assert_eq!(actions_of(&p, "zed")[0].phase, Phase::Main);

    // Without the tenant the MOERA is unknown: nothing is released, nothing is guessed, and
    // the newcomer is held, saying why.
    let mut case = Case::new(desired(vec![newcomer]), objects);
    case.safety.max_delete_percent = 100.0;
    let p = case.run();
    let leaver = actions_of(&p, "ann")[0];
    assert_eq!(leaver.phase, Phase::Main);
    assert!(!leaver.changes.contains_key("primarySmtpAddress"));
    let held = actions_of(&p, "zed")[0].held.as_ref().expect("held");
    assert!(held.reason.contains("MOERA"), "{}", held.reason);
}

#[test]
fn a_removed_object_in_the_recycle_bin_is_purged_for_a_newcomer() {
    let ann = person("a1", "ann", "team@example.edu");
    let mut gone = managed(&ann);
    gone.stage = Stage::Deleted;
    gone.deleted_at = Some(NOW - 2 * DAY);
    let mut tenant = Inventory::default();
    tenant.own_deleted.insert(
        ann.anchor.clone(),
        crate::inventory::DeletedObject {
            id: "oid-ann".into(),
            exchange_guid: None,
            addresses: ["team@example.edu".to_owned(), "ann@example.edu".to_owned()].into(),
            name: Some("ann".into()),
        },
    );
    let mut case = Case::new(
        desired(vec![person("a2", "zed", "team@example.edu")]),
        vec![gone],
    );
    case.tenant = Some(tenant);
    let p = case.run();
    let purge = actions_of(&p, "ann")[0];
    assert_eq!((purge.op, purge.phase), (Op::Purge, Phase::Release));
    assert!(
        purge
            .reason
            .as_deref()
            .unwrap()
            .contains("team@example.edu")
    );
    assert_eq!(p.summary.purge, 1);
}

#[test]
fn a_new_anchor_with_the_same_upn_and_address_is_a_re_anchor() {
    let ann = person("old-anchor", "ann", "ann@example.edu");
    let objects = vec![managed(&ann)];
    let mut again = ann.clone();
    again.anchor = Anchor::new("new-anchor").unwrap();
    again.department = Some("Physics".into());
    let mut case = Case::new(desired(vec![again.clone()]), objects.clone());
    case.tenant = Some(tenant_showing(&[&objects[0]]));
    let p = case.run();
    let a = only_action(&p);
    assert_eq!(a.op, Op::Update);
    assert_eq!(a.anchor.as_str(), "new-anchor");
    assert_eq!(
        a.changes["anchor"],
        (Some(json!("old-anchor")), Some(json!("new-anchor")))
    );
    assert_eq!(a.changes["department"].1, Some(json!("Physics")));
    assert_eq!(
        (p.summary.create, p.summary.disable, p.summary.update),
        (0, 0, 1)
    );

    // A recycled uid and address under another name is somebody else: both held.
    again.display_name = "Ann Other".into();
    let mut case = Case::new(desired(vec![again]), objects.clone());
    case.tenant = Some(tenant_showing(&[&objects[0]]));
    let p = case.run();
    assert_eq!(p.summary.held, 2, "{:#?}", p.actions);
}

/// A mailbox owner whom an earlier run hid `days_ago` days ago, and the same person as the
/// LDAP entry put back from an LDIF backup (a new anchor).
fn hidden_and_back(days_ago: i64) -> (ManagedObject, Recipient) {
    let mut ann = person("old-anchor", "ann", "ann@example.edu");
    ann.kind = Kind::Mailbox;
    ann.external_address = None;
    alias(&mut ann, "a.smith@example.edu");
    let mut o = disabled_since(managed(&ann), days_ago);
    o.attributes
        .insert(Field::HiddenFromAddressLists, Value::Bool(true));
    o.attributes
        .insert(Field::AccountEnabled, Value::Bool(false));
    let mut again = ann;
    again.anchor = Anchor::new("new-anchor").unwrap();
    (o, again)
}

#[test]
fn a_hidden_person_back_under_a_new_anchor_is_enabled_on_it() {
    for scope in [Scope::Full, Scope::Only] {
        let (o, again) = hidden_and_back(3);
        let mut case = Case::new(desired(vec![again]), vec![o.clone()]);
        case.tenant = Some(tenant_showing(&[&o]));
        case.scope = scope;
        let p = case.run();
        // One enable of the old object: no create, no handover stripping its addresses.
        let a = only_action(&p);
        assert_eq!((a.op, a.phase), (Op::Enable, Phase::Main), "{a:#?}");
        assert_eq!(a.anchor.as_str(), "new-anchor");
        assert_eq!(
            a.changes["anchor"],
            (Some(json!("old-anchor")), Some(json!("new-anchor")))
        );
        assert_eq!(a.changes[HIDDEN], (Some(json!(true)), Some(json!(false))));
        assert_eq!(
            a.changes[ACCOUNT_ENABLED],
            (Some(json!(false)), Some(json!(true)))
        );
        for f in ["emailAddresses", "primarySmtpAddress", "userPrincipalName"] {
            assert!(!a.changes.contains_key(f), "{f} changes: {a:#?}");
        }
        assert!(a.reason.as_deref().unwrap().contains("re-anchor"));
        let s = &p.summary;
        assert_eq!(
            (s.create, s.update, s.enable, s.disable, s.delete, s.held),
            (0, 0, 1, 0, 0, 0),
            "{scope:?}"
        );
        assert_eq!(s.unchanged, 0, "{scope:?}");
    }

    // Past the grace period, the delete not yet applied: the enable replaces it.
    let (o, again) = hidden_and_back(31);
    let mut case = Case::new(desired(vec![again]), vec![o.clone()]);
    case.tenant = Some(tenant_showing(&[&o]));
    let p = case.run();
    assert_eq!(only_action(&p).op, Op::Enable);
    assert_eq!(p.summary.removals(), 0);
}

#[test]
fn a_hidden_person_back_in_doubt_is_held_and_keeps_the_addresses() {
    // Another display name: maybe somebody else under a recycled uid. The newcomer is held,
    // nothing takes the hidden object's addresses, and its delete waits too.
    for days_ago in [3, 31] {
        let (o, mut again) = hidden_and_back(days_ago);
        again.display_name = "Ann Other".into();
        let mut case = Case::new(desired(vec![again]), vec![o.clone()]);
        case.tenant = Some(tenant_showing(&[&o]));
        let p = case.run();
        assert!(
            p.actions.iter().all(|a| a.held.is_some()),
            "{:#?}",
            p.actions
        );
        assert_eq!(p.summary.held, if days_ago > 30 { 2 } else { 1 });
        assert!(
            !p.actions
                .iter()
                .any(|a| a.uid == "ann" && a.anchor.as_str() == "old-anchor" && a.op == Op::Update)
        );
    }

    // A quarantined entry of the hidden person is still in LDAP: their anchor is not gone.
    let (o, again) = hidden_and_back(3);
    let mut d = desired(vec![again]);
    d.quarantined.push(crate::desired::Quarantined {
        dn: "uid=ann-old,ou=people,dc=example,dc=edu".into(),
        anchor: Some(o.anchor.clone()),
        uid: Some("ann".into()),
        field: "mail".into(),
        reason: "two values".into(),
    });
    let mut case = Case::new(d, vec![o.clone()]);
    case.tenant = Some(tenant_showing(&[&o]));
    let p = case.run();
    assert!(
        p.actions.iter().all(|a| a.op != Op::Enable),
        "{:#?}",
        p.actions
    );
}

#[test]
fn a_new_anchor_with_only_the_upn_in_common_holds_both() {
    let ann = person("old-anchor", "ann", "ann@example.edu");
    let objects = vec![managed(&ann)];
    let mut again = person("new-anchor", "ann", "ann.new@example.edu");
    again.uid = "ann".into();
    let mut case = Case::new(desired(vec![again]), objects.clone());
    case.tenant = Some(tenant_showing(&[&objects[0]]));
    let p = case.run();
    assert_eq!(p.summary.held, 2, "{:#?}", p.actions);
    assert_eq!((p.summary.create, p.summary.disable), (0, 0));
    assert!(p.actions.iter().all(|a| {
        a.held
            .as_ref()
            .is_some_and(|h| h.outcome == HeldOutcome::Conflict)
    }));
    // Held removals are no removals: the safety caps do not count them.
    assert_eq!(p.summary.removals(), 0);
}

#[test]
fn what_unmanaged_objects_hold_is_planned_not_discovered() {
    let mut tenant = Inventory::default();
    tenant.foreign.insert(
        "hal@example.edu".into(),
        "hal@example.edu (User \"Hal\")".into(),
    );
    tenant.foreign_names.insert(
        "gus".into(),
        "printer@example.edu (MailUser \"gus\")".into(),
    );
    tenant
        .foreign_names
        .insert("ivy".into(), "lab (MailUser \"ivy\")".into());
    let ivy = person("a3", "ivy", "ivy@example.edu");
    let mut ivy_now = managed(&ivy);
    ivy_now.attributes.insert(Field::Name, json!("ivy-2"));
    let mut case = Case::new(
        desired(vec![
            person("a1", "hal", "hal.new@example.edu"),
            person("a2", "gus", "gus@example.edu"),
            ivy,
        ]),
        vec![ivy_now],
    );
    case.tenant = Some(tenant);
    let p = case.run();
    let hal = actions_of(&p, "hal")[0];
    let held = hal.held.as_ref().expect("held");
    assert_eq!(held.outcome, HeldOutcome::Conflict);
    assert!(
        held.reason.contains("hal@example.edu (User"),
        "{}",
        held.reason
    );
    let gus = actions_of(&p, "gus")[0];
    assert_eq!(gus.changes["name"].1, Some(json!("gus-2")));
    assert!(p.warnings.iter().any(|w| w.uid.as_deref() == Some("gus")));
    // A person who already got a free Name keeps it, silently: nothing to do for ivy.
    assert!(actions_of(&p, "ivy").is_empty(), "{:#?}", p.actions);
    assert_eq!(
        (p.summary.create, p.summary.held, p.summary.unchanged),
        (1, 1, 1)
    );
}

#[test]
fn a_newcomer_waiting_for_a_removal_the_safety_gate_holds_back_is_held_too() {
    let ann = person("a1", "ann", "team@example.edu");
    let objects = vec![managed(&ann)];
    let mut case = Case::new(
        desired(vec![person("a2", "zed", "team@example.edu")]),
        objects.clone(),
    );
    case.tenant = Some(tenant_showing(&[&objects[0]]));
    case.safety.max_deletes_per_run = 0;
    let p = case.run();
    assert_eq!(p.safety.verdict, Verdict::Blocked);
    let zed = actions_of(&p, "zed")[0];
    let held = zed.held.as_ref().expect("held");
    assert!(
        held.reason.contains("team@example.edu") && held.reason.contains("ann"),
        "{}",
        held.reason
    );
    assert_eq!((p.summary.create, p.summary.held), (0, 1));
}

#[test]
fn nothing_is_taken_from_a_quarantined_person_or_one_outside_an_only_run() {
    let ann = person("a1", "ann", "team@example.edu");
    let objects = vec![disabled_since(managed(&ann), 3)];
    let tenant = tenant_showing(&[&objects[0]]);
    let mut d = desired(vec![person("a2", "zed", "team@example.edu")]);
    d.quarantined.push(Quarantined {
        dn: ann.dn.clone(),
        anchor: Some(ann.anchor.clone()),
        uid: Some("ann".into()),
        field: "surname".into(),
        reason: "broken".into(),
    });
    let mut case = Case::new(d, objects.clone());
    case.tenant = Some(tenant.clone());
    let p = case.run();
    let held = actions_of(&p, "zed")[0].held.as_ref().expect("held");
    assert!(held.reason.contains("quarantined"), "{}", held.reason);
    assert!(actions_of(&p, "ann").is_empty(), "{:#?}", p.actions);

    let mut case = Case::new(
        desired(vec![person("a2", "zed", "team@example.edu")]),
        objects,
    );
    case.tenant = Some(tenant);
    case.scope = Scope::Only;
    let p = case.run();
    let held = actions_of(&p, "zed")[0].held.as_ref().expect("held");
    assert!(held.reason.contains("--only"), "{}", held.reason);
    assert!(actions_of(&p, "ann").is_empty(), "{:#?}", p.actions);

    // Without either, the hidden leaver gives the address up in a release of its own.
    let ann_row = disabled_since(managed(&ann), 3);
    let mut case = Case::new(
        desired(vec![person("a2", "zed", "team@example.edu")]),
        vec![ann_row.clone()],
    );
    case.tenant = Some(tenant_showing(&[&ann_row]));
    let p = case.run();
    let release = actions_of(&p, "ann")[0];
    assert_eq!((release.op, release.phase), (Op::Update, Phase::Release));
    assert_eq!((p.summary.update, p.summary.unchanged), (1, 0));
}
