//! The tenant inventory (`ldap2exo::apply::inventory`) against the tenant emulator over real
//! HTTPS: one full read sorts stamped, unstamped and duplicate objects, maps their fields as
//! the state store keeps them, and reconciling it with the state store finds adopted, missing
//! and changed objects. Every test starts its own emulator.

use std::collections::BTreeMap;
use std::time::Duration;

use ldap2exo::desired::Kind;
use ldap2exo::ids::Anchor;
use ldap2exo::inventory::{self, DriftKind, Inventory};
use ldap2exo::secret::Secret;
use ldap2exo::state::Stage;
use ldap2exo::tenant::{NewMailUser, Tenant, TenantError};
use ldap2exo_emulator::{EmulatorConfig, RecipientKind, Seed, User};
use serde_json::json;

use crate::support::emulator::{TestTenant, fast_options, seed_user, start};

const STAMP: &str = "extensionAttribute15";
const NOW: i64 = 1_800_000_000;

fn connect(t: &TestTenant) -> Tenant {
    Tenant::connect_with(&t.config(), fast_options()).expect("connect")
}

fn anchor(s: &str) -> Anchor {
    Anchor::new(s).unwrap()
}

/// A MailUser as a seed, stamped for `stamp` when given.
fn mail_user(nick: &str, stamp: Option<&str>) -> User {
    User {
        user_principal_name: format!("{nick}@example.edu"),
        mail_nickname: nick.into(),
        display_name: Some(format!("Person {nick}")),
        account_enabled: false,
        recipient_type_details: Some(RecipientKind::MailUser),
        exchange_name: Some(nick.into()),
        proxy_addresses: vec![
            format!("SMTP:{nick}@example.edu"),
            format!("smtp:{nick}.alias@example.edu"),
        ],
        external_email_address: Some(format!("{nick}@mail.onprem.example.org")),
        extension_attributes: stamp
            .map(|s| BTreeMap::from([(15u8, format!("ldap2exo:{s}"))]))
            .unwrap_or_default(),
        ..User::default()
    }
}

async fn read(tenant: &Tenant) -> Inventory {
    inventory::read(tenant, STAMP).await.expect("inventory")
}

#[tokio::test]
async fn one_paged_read_sorts_managed_foreign_and_duplicate_objects() {
    let t = start(EmulatorConfig::default()).await;
    let mut users: Vec<User> = (0..1000).map(seed_user).collect();
    users.push(User {
        user_principal_name: "breakglass@contoso.onmicrosoft.com".into(),
        mail_nickname: "breakglass".into(),
        ..User::default()
    });
    users.push(User {
        mail: Some("Shared.Office@example.edu".into()),
        ..mail_user("cloudonly", None)
    });
    users.push(User {
        given_name: Some("Ann".into()),
        surname: Some("Example".into()),
        department: Some("Physics".into()),
        job_title: Some("".into()),
        business_phones: vec!["+49 30 1234".into()],
        proxy_addresses: vec![
            "SMTP:Ann@Example.edu".into(),
            "smtp:ann.z@example.edu".into(),
            "SIP:ann@example.edu".into(),
            "smtp:Ann.A@example.edu".into(),
            "X500:/o=ExchangeLabs/ou=x/cn=ann".into(),
        ],
        ..mail_user("ann", Some("0A1B-ANN"))
    });
    users.push(mail_user("twin1", Some("twin")));
    users.push(mail_user("twin2", Some("twin")));
    users.push(User {
        extension_attributes: BTreeMap::from([(15u8, "ldap2exo:".into())]),
        ..mail_user("blank", None)
    });
    t.emu
        .seed(Seed {
            users,
            ..Seed::default()
        })
        .unwrap();

    let tenant = connect(&t);
    let inv = read(&tenant).await;

    // 1,006 users in pages of 999: two requests, no advanced query.
    assert_eq!(t.emu.counters().endpoint("GET /v1.0/users").requests, 2);
    assert_eq!(t.emu.counters().writes(), 0);

    assert_eq!(inv.managed.len(), 1, "{:?}", inv.managed.keys());
    let ann = &inv.managed[&anchor("0a1b-ann")];
    assert_eq!(ann.kind, Kind::MailUser);
    assert!(!ann.exchange_licensed);
    assert_eq!(ann.upn, "ann@example.edu");
    assert_eq!(ann.account_enabled, Some(false));
    assert_eq!(t.emu.user(&ann.id).unwrap().mail_nickname, "ann");
    let expected: ldap2exo::plan::Fields = [
        ("userPrincipalName", json!("ann@example.edu")),
        ("mailNickname", json!("ann")),
        ("displayName", json!("Person ann")),
        ("givenName", json!("Ann")),
        ("surname", json!("Example")),
        ("primarySmtpAddress", json!("ann@example.edu")),
        (
            "emailAddresses",
            json!(["ann.a@example.edu", "ann.z@example.edu"]),
        ),
        ("department", json!("Physics")),
        ("businessPhones", json!("+49 30 1234")),
        // Exchange shows what Graph cannot: Name, the external address, the hidden flag;
        // Graph adds sign-in.
        ("name", json!("ann")),
        ("externalEmailAddress", json!("ann@mail.onprem.example.org")),
        ("hiddenFromAddressLists", json!(false)),
        ("accountEnabled", json!(false)),
    ]
    .into_iter()
    .map(|(k, v)| (k.parse().unwrap(), v))
    .collect();
    assert_eq!(ann.fields, expected);

    assert_eq!(inv.duplicates.len(), 1);
    let twins = &inv.duplicates[&anchor("twin")];
    assert_eq!(twins.len(), 2);
    assert!(!inv.foreign.contains_key("twin1@example.edu"));

    for (address, owner) in [
        (
            "breakglass@contoso.onmicrosoft.com",
            "breakglass@contoso.onmicrosoft.com",
        ),
        ("cloudonly@example.edu", "cloudonly@example.edu"),
        ("cloudonly.alias@example.edu", "cloudonly@example.edu"),
        ("seed0999@example.edu", "seed0999@example.edu"),
        // A stamp with our prefix but no anchor is not ours.
        ("blank.alias@example.edu", "blank@example.edu"),
    ] {
        // The owner is named by its UPN (and its kind and Name, for a recipient).
        let found = inv.foreign.get(address);
        assert!(
            found.is_some_and(|o| o.starts_with(owner)),
            "{address}: {found:?}"
        );
    }
    assert!(!inv.foreign.contains_key("ann@example.edu"));
}

#[tokio::test]
async fn a_stamped_mail_user_is_found_at_once_and_is_a_mailbox_once_licensed() {
    // Advanced queries would not see the new object for a minute; the full read does.
    let t = start(EmulatorConfig {
        advanced_query_lag: Duration::from_secs(60),
        ..EmulatorConfig::default()
    })
    .await;
    let tenant = connect(&t);
    let (g, x) = (tenant.graph(), tenant.exchange());
    let created = x
        .new_mail_user(&NewMailUser {
            name: "migrant".into(),
            alias: "migrant".into(),
            display_name: "Mig Rant".into(),
            first_name: Some("Mig".into()),
            last_name: Some("Rant".into()),
            external_email_address: "migrant@mail.onprem.example.org".into(),
            user_principal_name: Some("migrant@example.edu".into()),
            password: Some(Secret::new("Xq7!unused-Passw0rd".into())),
        })
        .await
        .unwrap();
    let id = created["ExternalDirectoryObjectId"]
        .as_str()
        .unwrap()
        .to_owned();
    // Right after a create the object answers 404 for a moment (strict emulator).
    let stamp = json!({
        "CustomAttribute15": "ldap2exo:x",
        "EmailAddresses": ldap2exo::tenant::hashtable(&["smtp:Mig.Rant@example.edu".into()], &[]),
    });
    eventually(|| x.set_mail_user(&id, stamp.clone())).await;
    assert!(
        g.find_by_stamp(STAMP, "ldap2exo:x")
            .await
            .unwrap()
            .is_empty(),
        "the advanced query lags"
    );

    let inv = read(&tenant).await;
    let obj = &inv.managed[&anchor("x")];
    assert_eq!(obj.id, id);
    assert_eq!(obj.kind, Kind::MailUser);
    assert!(!obj.exchange_licensed);
    // Exchange Online ignores -PrimarySmtpAddress and makes the external address the
    // primary only on an accepted domain; else the MOERA (New-MailUser's documented default).
    assert_eq!(
        obj.fields["primarySmtpAddress"],
        json!("migrant@contoso.onmicrosoft.com")
    );
    let secondary: Vec<&str> = obj.fields["emailAddresses"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(secondary.contains(&"mig.rant@example.edu"), "{secondary:?}");
    assert_eq!(obj.fields["givenName"], json!("Mig"));
    assert!(!inv.foreign.contains_key("migrant@example.edu"));

    // Graph does not show the new MailUser yet: the inventory still has it, from Exchange,
    // with nothing Graph masters.
    assert!(
        !obj.in_graph,
        "Graph shows an Exchange create only after propagation"
    );
    assert!(!obj.fields.contains_key("accountEnabled"));

    let location = json!({"usageLocation": "DE"});
    eventually(|| g.update_user(&id, &location)).await;
    g.assign_license(&id, "EXCHANGESTANDARD").await.unwrap();
    let inv = read(&tenant).await;
    let obj = &inv.managed[&anchor("x")];
    assert_eq!(obj.kind, Kind::Mailbox);
    assert!(obj.exchange_licensed);
    assert!(
        obj.mailbox_pending,
        "Exchange provisions the mailbox minutes later"
    );

    tokio::time::sleep(Duration::from_millis(
        ldap2exo_emulator::Realism::default().mailbox_provisioning_ms + 200,
    ))
    .await;
    let inv = read(&tenant).await;
    let obj = &inv.managed[&anchor("x")];
    assert!(!obj.mailbox_pending);
    let secondary = obj.fields["emailAddresses"].as_array().unwrap();
    assert!(
        secondary.iter().any(|a| a == "migrant@example.edu"),
        "the licence added the UPN as an address: {secondary:?}"
    );
}

/// Retries a call that answers 404 because the object was created a moment ago.
async fn eventually<T, F, Fut>(mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ldap2exo::tenant::TenantError>>,
{
    for _ in 0..40 {
        match call().await {
            Err(ldap2exo::tenant::TenantError::NotFound { .. }) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => return other.unwrap(),
        }
    }
    panic!("still not found after 4 s");
}

#[tokio::test]
async fn reconciling_an_empty_state_adopts_every_stamped_object() {
    let t = start(EmulatorConfig::default()).await;
    t.emu
        .seed(Seed {
            users: vec![
                mail_user("ann", Some("a1")),
                mail_user("bob", Some("a2")),
                mail_user("unmanaged", None),
            ],
            ..Seed::default()
        })
        .unwrap();
    let tenant = connect(&t);
    let inv = read(&tenant).await;
    let r = inventory::reconcile(Vec::new(), &inv, NOW);
    assert_eq!(r.objects.len(), 2);
    assert_eq!(r.drift.len(), 2);
    assert!(r.drift.iter().all(|d| d.kind == DriftKind::Adopted));
    for o in &r.objects {
        assert_eq!(o.stage, Stage::Active);
        assert_eq!(o.kind, Kind::MailUser);
        let id = o.tenant_object_id.as_deref().unwrap();
        assert_eq!(t.emu.user(id).unwrap().mail_nickname, o.uid);
        assert_eq!(
            o.attributes["primarySmtpAddress"],
            json!(format!("{}@example.edu", o.uid))
        );
    }
    // Reconciling the adopted rows again finds nothing more.
    let again = inventory::reconcile(r.objects.clone(), &inv, NOW + 60);
    assert!(again.drift.is_empty(), "{:?}", again.drift);
    assert_eq!(again.objects, r.objects);
}

#[tokio::test]
async fn changes_and_deletions_behind_our_back_are_drift() {
    let t = start(EmulatorConfig::default()).await;
    let ids = t
        .emu
        .seed(Seed {
            users: vec![mail_user("ann", Some("a1")), mail_user("bob", Some("a2"))],
            ..Seed::default()
        })
        .unwrap();
    let tenant = connect(&t);
    let state = inventory::reconcile(Vec::new(), &read(&tenant).await, NOW).objects;

    // Someone renames Ann in the portal and removes one of her addresses, and deletes Bob.
    let g = tenant.graph();
    let ann = t.emu.user(&ids[0]).unwrap().id;
    g.update_user(&ann, &json!({"displayName": "Renamed By Hand"}))
        .await
        .unwrap();
    tenant
        .exchange()
        .set_mail_user(
            &ann,
            json!({"EmailAddresses": ldap2exo::tenant::hashtable(&[], &["smtp:ann.alias@example.edu".into()])}),
        )
        .await
        .unwrap();
    let bob = t.emu.user(&ids[1]).unwrap().id;
    assert!(g.delete_user(&bob).await.unwrap());

    // The display name is Exchange's: a change made through Graph is drift only once it
    // has reached Exchange, never while it propagates.
    let early = inventory::reconcile(state.clone(), &read(&tenant).await, NOW + 30);
    assert!(
        early
            .drift
            .iter()
            .all(|d| !d.detail.contains("displayName")),
        "{:?}",
        early.drift
    );
    tokio::time::sleep(Duration::from_millis(
        ldap2exo_emulator::Realism::default().graph_to_exchange_ms + 200,
    ))
    .await;
    let r = inventory::reconcile(state.clone(), &read(&tenant).await, NOW + 60);
    let kinds: Vec<(DriftKind, &str)> = r.drift.iter().map(|d| (d.kind, d.uid.as_str())).collect();
    assert_eq!(
        kinds,
        [(DriftKind::Changed, "ann"), (DriftKind::Missing, "bob")],
        "{:?}",
        r.drift
    );
    let changed = &r.drift[0].detail;
    assert!(changed.contains("displayName"), "{changed}");
    assert!(
        changed.contains("missing ann.alias@example.edu"),
        "{changed}"
    );
    let ann_row = &r.objects[0];
    assert_eq!(ann_row.attributes["displayName"], json!("Renamed By Hand"));
    assert_eq!(ann_row.attributes["emailAddresses"], json!([]));
    let bob_row = &r.objects[1];
    assert_eq!(bob_row.stage, Stage::Deleted);
    assert_eq!(bob_row.deleted_at, Some(NOW + 60));
}

#[tokio::test]
async fn a_stamp_attribute_that_is_no_extension_attribute_is_refused() {
    let t = start(EmulatorConfig::default()).await;
    let tenant = connect(&t);
    let err = inventory::read(&tenant, "customAttribute15")
        .await
        .unwrap_err();
    assert!(matches!(err, TenantError::Config(_)), "{err:?}");
    assert_eq!(t.emu.counters().total.requests, 0);
}
