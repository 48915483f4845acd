//! The finding rules on hand-made inputs: each finding from the smallest state that causes
//! it, and nothing from a tenant in step.

use std::collections::BTreeSet;

use serde_json::json;

use super::*;
use crate::desired::Disabled;
use crate::ids::{SmtpAddress, Upn};

fn address(a: &str) -> SmtpAddress {
    SmtpAddress::parse(a).unwrap()
}

/// A person on the Linux server: a MailUser routed to their primary address.
fn mail_user(uid: &str, aliases: &[&str]) -> Recipient {
    let primary = address(&format!("{uid}@example.edu"));
    Recipient {
        anchor: Anchor::new(&format!("anchor-{uid}")).unwrap(),
        dn: format!("uid={uid},ou=people,dc=example,dc=edu"),
        uid: uid.into(),
        kind: Kind::MailUser,
        upn: Upn::new(uid, "example.edu").unwrap(),
        alias: uid.into(),
        name: uid.into(),
        display_name: uid.into(),
        given_name: None,
        surname: None,
        primary: primary.clone(),
        secondary: aliases.iter().map(|a| address(a)).collect(),
        external_address: Some(primary),
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

/// A person whose mailbox is in EXO: LDAP forwards to the routing address.
fn mailbox(uid: &str) -> Recipient {
    let target = address(&format!("{uid}@exampleedu.mail.onmicrosoft.com"));
    let mut r = mail_user(uid, &[]);
    r.kind = Kind::Mailbox;
    r.external_address = None;
    r.secondary.insert(target.clone());
    r.forward = Some(target);
    r
}

/// The object `sync` leaves for `r`.
fn in_step(r: &Recipient) -> TenantObject {
    let mut fields: crate::plan::Fields = r
        .fields()
        .into_iter()
        .filter(|(k, _)| {
            [
                "primarySmtpAddress",
                "emailAddresses",
                "externalEmailAddress",
                "hiddenFromAddressLists",
                "mailNickname",
            ]
            .contains(&k.as_str())
        })
        .collect();
    if r.kind == Kind::Mailbox {
        fields.remove("externalEmailAddress");
    }
    TenantObject {
        id: format!("oid-{}", r.uid),
        anchor: r.anchor.clone(),
        kind: r.kind,
        upn: r.upn.to_string(),
        account_enabled: Some(r.kind == Kind::Mailbox),
        exchange_licensed: r.kind == Kind::Mailbox,
        mailbox_pending: false,
        in_exchange: true,
        in_graph: true,
        fields,
        proxies: Vec::new(),
        unknown: BTreeSet::new(),
    }
}

fn desired(recipients: Vec<Recipient>) -> Desired {
    Desired {
        recipients,
        ..Desired::default()
    }
}

/// The tenant holding `objects`, all in the address lists unless hidden.
fn tenant(objects: Vec<TenantObject>) -> Inventory {
    let mut inv = Inventory::default();
    for o in objects {
        if o.fields.get("hiddenFromAddressLists") != Some(&json!(true)) {
            inv.visible_addresses.extend(held(&o));
        }
        inv.managed.insert(o.anchor.clone(), o);
    }
    inv
}

fn codes(a: &GalAudit) -> Vec<(Code, &str, Option<&str>)> {
    a.findings
        .iter()
        .map(|f| (f.code, f.uid.as_str(), f.expected.as_deref()))
        .collect()
}

#[test]
fn a_tenant_in_step_is_clean_and_complete() {
    let mut hidden = mail_user("helpdesk", &[]);
    hidden.hidden = true;
    let people = vec![
        mail_user("ann", &["a.nn@example.edu"]),
        mailbox("bob"),
        hidden,
    ];
    let mut helpdesk = in_step(&people[2]);
    helpdesk
        .fields
        .insert(Field::HiddenFromAddressLists, json!(true));
    let inv = tenant(vec![in_step(&people[0]), in_step(&people[1]), helpdesk]);
    let a = audit_gal(&desired(people), &inv, true);
    assert!(a.findings.is_empty(), "{:#?}", a.findings);
    assert_eq!((a.summary.should_be, a.summary.resolvable), (2, 2));
    assert_eq!(a.summary.ratio, 1.0);
    assert_eq!(a.summary.line(), "GAL completeness: 2/2 people (100.0 %)");
}

#[test]
fn a_missing_person_is_named_and_not_resolvable() {
    let people = vec![mail_user("ann", &[]), mail_user("cem", &[])];
    let inv = tenant(vec![in_step(&people[0])]);
    let a = audit_gal(&desired(people), &inv, true);
    assert_eq!(
        codes(&a),
        [(Code::MissingFromTenant, "cem", Some("cem@example.edu"))]
    );
    assert_eq!(a.summary.line(), "GAL completeness: 1/2 people (50.0 %)");
    assert_eq!(a.summary.ratio, 0.5);
}

#[test]
fn hidden_is_a_finding_only_for_people_ldap_does_not_hide() {
    let ann = mail_user("ann", &[]);
    let mut o = in_step(&ann);
    o.fields.insert(Field::HiddenFromAddressLists, json!(true));
    let a = audit_gal(&desired(vec![ann]), &tenant(vec![o]), true);
    assert_eq!(codes(&a), [(Code::HiddenInGal, "ann", Some("false"))]);
    assert_eq!((a.summary.should_be, a.summary.resolvable), (1, 0));
}

#[test]
fn a_wrong_primary_and_each_missing_alias_are_named() {
    let ann = mail_user("ann", &["a1@example.edu", "a2@example.edu"]);
    let mut o = in_step(&ann);
    o.fields
        .insert(Field::PrimarySmtpAddress, json!("a1@example.edu"));
    o.fields.insert(Field::EmailAddresses, json!([]));
    let a = audit_gal(&desired(vec![ann]), &tenant(vec![o]), true);
    assert_eq!(
        codes(&a),
        [
            (Code::PrimaryAddressWrong, "ann", Some("ann@example.edu")),
            (Code::AddressMissing, "ann", Some("a2@example.edu")),
        ]
    );
    assert_eq!(a.findings[0].found.as_deref(), Some("a1@example.edu"));
}

#[test]
fn a_mail_user_routed_elsewhere_is_named() {
    let ann = mail_user("ann", &[]);
    let mut o = in_step(&ann);
    o.fields
        .insert(Field::ExternalEmailAddress, json!("ann@gmail.com"));
    let a = audit_gal(&desired(vec![ann]), &tenant(vec![o]), true);
    assert_eq!(
        codes(&a),
        [(Code::ExternalAddressWrong, "ann", Some("ann@example.edu"))]
    );
    assert!(a.findings[0].message.contains("ann@gmail.com"));
}

#[test]
fn a_mailbox_without_its_forward_target_bounces_or_loops() {
    let bob = mailbox("bob");
    let mut o = in_step(&bob);
    o.fields.insert(Field::EmailAddresses, json!([]));
    let a = audit_gal(&desired(vec![bob.clone()]), &tenant(vec![o.clone()]), true);
    assert_eq!(
        codes(&a),
        [(
            Code::ForwardTargetNotOwned,
            "bob",
            Some("bob@exampleedu.mail.onmicrosoft.com")
        )],
        "the forward target is not also reported as a missing alias"
    );
    assert!(a.findings[0].message.contains("bounces"));
    assert_eq!(a.findings[0].holder, None);

    // Another person's object holds it: the finding names the holder.
    let mut other = in_step(&mail_user("eve", &[]));
    other.fields.insert(
        Field::EmailAddresses,
        json!(["bob@exampleedu.mail.onmicrosoft.com"]),
    );
    let a = audit_gal(&desired(vec![bob]), &tenant(vec![o, other]), false);
    assert_eq!(
        a.findings[0].holder.as_deref(),
        Some("eve@example.edu (managed, anchor anchor-eve)")
    );
}

#[test]
fn a_migrating_person_with_an_external_forward_has_no_forward_finding() {
    // Migrating by IMAP: a mailbox forwarding to on-prem; LDAP forwards to gmail, which the
    // on-prem server applies until cutover.
    let mut ann = mail_user("ann", &[]);
    ann.kind = Kind::Mailbox;
    ann.external_address = None;
    ann.forward = Some(address("ann.private@gmail.com"));
    ann.forwarding = Some(address("ann@mbox.example.edu"));
    let a = audit_gal(
        &desired(vec![ann.clone()]),
        &tenant(vec![in_step(&ann)]),
        true,
    );
    assert!(a.findings.is_empty(), "{:#?}", a.findings);
    // The same forward without the migration is a finding.
    ann.forwarding = None;
    let a = audit_gal(
        &desired(vec![ann.clone()]),
        &tenant(vec![in_step(&ann)]),
        true,
    );
    assert_eq!(
        codes(&a),
        [(
            Code::ForwardTargetNotOwned,
            "ann",
            Some("ann.private@gmail.com")
        )]
    );
}

#[test]
fn a_forward_into_the_tenant_to_a_mail_user_is_a_loop() {
    let bob = mailbox("bob");
    let mut o = in_step(&bob);
    o.kind = Kind::MailUser;
    o.exchange_licensed = false;
    o.fields
        .insert(Field::ExternalEmailAddress, json!("bob@example.edu"));
    let a = audit_gal(&desired(vec![bob]), &tenant(vec![o]), true);
    assert_eq!(codes(&a), [(Code::ForwardLoop, "bob", Some("UserMailbox"))]);
    assert!(a.findings[0].message.contains("bob@example.edu"));
}

#[test]
fn a_visible_stamped_object_without_its_person_is_named_but_a_hidden_one_is_not() {
    let ann = mail_user("ann", &[]);
    let gone = in_step(&mail_user("gus", &[]));
    let mut leaving = in_step(&mail_user("lea", &[]));
    leaving
        .fields
        .insert(Field::HiddenFromAddressLists, json!(true));
    let mut disabled = in_step(&mail_user("dan", &[]));
    disabled.anchor = Anchor::new("anchor-dan").unwrap();
    let inv = tenant(vec![in_step(&ann), gone, leaving, disabled]);
    let mut d = desired(vec![ann]);
    d.disabled.push(Disabled {
        anchor: Anchor::new("anchor-dan").unwrap(),
        dn: "uid=dan".into(),
        uid: Some("dan".into()),
    });
    let a = audit_gal(&d, &inv, true);
    assert_eq!(
        codes(&a),
        [(Code::ManagedObjectWithoutPerson, "gus", None)],
        "a hidden leaver is in its grace period; a disabled person is still in LDAP"
    );
    assert_eq!(
        audit_gal(&d, &inv, false).findings,
        [],
        "--only cannot tell who is gone"
    );
}

#[test]
fn an_address_held_by_an_unmanaged_object_names_the_holder_once() {
    let ann = mail_user("ann", &["sales@example.edu"]);
    let mut o = in_step(&ann);
    o.fields.insert(Field::EmailAddresses, json!([]));
    let mut inv = tenant(vec![o]);
    inv.foreign.insert(
        "sales@example.edu".into(),
        "Sales (MailUniversalDistributionGroup)".into(),
    );
    let a = audit_gal(&desired(vec![ann]), &inv, true);
    assert_eq!(
        codes(&a),
        [(
            Code::AddressHeldByUnmanaged,
            "ann",
            Some("sales@example.edu")
        )],
        "not also a missing alias: the holder is the cause"
    );
    assert_eq!(
        a.findings[0].holder.as_deref(),
        Some("Sales (MailUniversalDistributionGroup)")
    );

    // A plain Entra user (no recipient) is described by its UPN only: its type is added.
    inv.foreign
        .insert("sales@example.edu".into(), "sales@example.edu".into());
    let a = audit_gal(
        &desired(vec![mail_user("ann", &["sales@example.edu"])]),
        &inv,
        true,
    );
    assert_eq!(
        a.findings[0].holder.as_deref(),
        Some("sales@example.edu (Entra user without an Exchange recipient)")
    );
}

#[test]
fn a_licensed_mail_user_is_named_converted_or_not() {
    let ann = mail_user("ann", &[]);
    let mut o = in_step(&ann);
    o.exchange_licensed = true;
    o.kind = Kind::Mailbox;
    o.mailbox_pending = true;
    let a = audit_gal(&desired(vec![ann.clone()]), &tenant(vec![o.clone()]), true);
    assert_eq!(
        codes(&a),
        [(Code::MailUserLicensed, "ann", Some("no Exchange plan"))]
    );
    assert_eq!(a.findings[0].found.as_deref(), Some("MailUser"));
    o.mailbox_pending = false;
    let a = audit_gal(&desired(vec![ann]), &tenant(vec![o]), true);
    assert_eq!(a.findings[0].found.as_deref(), Some("UserMailbox"));
}

#[test]
fn nobody_to_show_is_complete() {
    let a = audit_gal(&Desired::default(), &Inventory::default(), true);
    assert_eq!(a.summary.ratio, 1.0);
    assert_eq!(a.summary.line(), "GAL completeness: 0/0 people (100.0 %)");
}

#[test]
fn codes_are_stable_snake_case() {
    for c in Code::ALL {
        assert_eq!(serde_json::to_value(c).unwrap(), json!(c.as_str()));
    }
}
