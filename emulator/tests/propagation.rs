//! Two directories, one object: propagation delays between Exchange and Graph, the 404
//! window after a create, slow mailbox provisioning, Graph's refusal to write objects that
//! Exchange created, licence details. These are timing tests: they run in strict mode with
//! delays shortened so the suite stays fast, except where the defaults themselves are tested.

mod common;
use common::*;
use ldap2exo_emulator::{EmulatorConfig, GroupLicense, Realism, Seed, User};
use serde_json::json;
use std::time::{Duration, Instant};

const EXCHANGE_SKU: &str = "4b9405b0-7788-4568-add1-99614e613b69";
const OTHER_SKU: &str = "1f2f344a-700d-42c9-9427-5cea1d5d7ba6";

/// Delays long enough that a local request always lands inside them: the checks "not
/// visible yet" below run unconditionally, and each first asserts it ran in time.
fn quick() -> Realism {
    Realism {
        exchange_to_graph_ms: 2500,
        graph_to_exchange_ms: 2500,
        create_404_ms: 1500,
        mailbox_provisioning_ms: 4000,
        ..Realism::default()
    }
}

/// The moment of a "not yet" check must lie inside the delay it checks.
fn in_time(started: Instant, within_ms: u64) {
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(within_ms),
        "the check ran {took:?} after its start, too late to see a {within_ms} ms delay"
    );
}

async fn new_mail_user(env: &Env, alias: &str) -> String {
    let a = env
        .exo("New-MailUser", json!({
            "Name": alias, "Alias": alias, "ExternalEmailAddress": format!("{alias}@example.edu"),
            "MicrosoftOnlineServicesID": format!("{alias}@example.edu"), "Password": "Secr3t-Passw0rd!",
        }))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body["value"][0]["ExternalDirectoryObjectId"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn strict_is_the_default_and_instant_turns_it_off() {
    let r = EmulatorConfig::default().realism;
    assert_eq!(
        (
            r.exchange_to_graph_ms,
            r.graph_to_exchange_ms,
            r.create_404_ms,
            r.mailbox_provisioning_ms
        ),
        (1500, 1500, 400, 2500)
    );
    assert_eq!(r.exchange_max_concurrent, Some(3));
    assert_eq!(r.exchange_next_link_ttl_ms, Some(5000));
    assert!(r.strict_rules);
    let i = EmulatorConfig::instant().realism;
    assert_eq!(i, Realism::instant());
    assert_eq!(
        i.exchange_to_graph_ms + i.create_404_ms + i.mailbox_provisioning_ms,
        0
    );
    assert_eq!(i.exchange_max_concurrent, None);
}

#[tokio::test]
async fn exchange_created_object_reaches_graph_late() {
    let env = start_realism(quick()).await;
    let t0 = Instant::now();
    let id = new_mail_user(&env, "amy").await;
    // Graph does not know it yet: not by id, not in the list.
    assert_eq!(env.get(&format!("/users/{id}")).await.status, 404);
    let l = env.get("/users?$select=id").await;
    assert!(l.body["value"].as_array().unwrap().is_empty());
    assert_eq!(
        env.patch(&format!("/users/{id}"), json!({"accountEnabled": false}))
            .await
            .status,
        404
    );
    // Exchange addresses it only after the 404 window.
    let a = env
        .exo(
            "Set-MailUser",
            json!({"Identity": "amy", "CustomAttribute1": "a"}),
        )
        .await;
    in_time(t0, 1200);
    assert_eq!(a.status, 404, "{}", a.body);
    assert!(
        eventually(8, || async {
            env.exo(
                "Set-MailUser",
                json!({"Identity": "amy", "CustomAttribute1": "a"}),
            )
            .await
            .status
                == 200
        })
        .await
    );
    assert!(
        eventually(8, || async {
            env.get(&format!("/users/{id}")).await.status == 200
        })
        .await
    );
    assert!(t0.elapsed() >= Duration::from_millis(2000));

    // An Exchange write shows in Graph only after the delay; Exchange sees it at once.
    let a = env
        .exo(
            "Set-MailUser",
            json!({"Identity": "amy", "CustomAttribute2": "b"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let t1 = Instant::now();
    let g = ext2(&env, &id).await;
    in_time(t1, 2000);
    assert_eq!(g, json!(null));
    let x = env.exo("Get-MailUser", json!({"Identity": "amy"})).await;
    assert_eq!(x.body["value"][0]["CustomAttribute2"], "b");
    assert!(eventually(8, || async { ext2(&env, &id).await == json!("b") }).await);
}

async fn ext2(env: &Env, id: &str) -> serde_json::Value {
    let url = format!("/users/{id}?$select=onPremisesExtensionAttributes");
    env.get(&url).await.body["onPremisesExtensionAttributes"]["extensionAttribute2"].clone()
}

#[tokio::test]
async fn graph_created_user_reaches_exchange_late_and_404s_at_first() {
    let env = start_realism(quick()).await;
    let t0 = Instant::now();
    let id = env.create_user("ben", json!({"usageLocation": "DE"})).await;
    let first = env.get(&format!("/users/{id}")).await.status;
    let lic = env
        .post(
            &format!("/users/{id}/assignLicense"),
            json!({"addLicenses": [{"skuId": OTHER_SKU}], "removeLicenses": []}),
        )
        .await
        .status;
    in_time(t0, 1200);
    assert_eq!(first, 404);
    assert_eq!(lic, 404);
    let u = env
        .exo("Get-User", json!({"Identity": "ben@example.edu"}))
        .await;
    in_time(t0, 2000);
    assert_eq!(u.status, 404, "{}", u.body);
    assert!(
        eventually(8, || async {
            env.get(&format!("/users/{id}")).await.status == 200
        })
        .await
    );
    assert!(
        eventually(8, || async {
            env.exo("Get-User", json!({"Identity": "ben@example.edu"}))
                .await
                .status
                == 200
        })
        .await
    );

    // A Graph write reaches Exchange after the delay.
    assert_eq!(
        env.patch(&format!("/users/{id}"), json!({"department": "Math"}))
            .await
            .status,
        204
    );
    let t1 = Instant::now();
    let d =
        env.exo("Get-User", json!({"Identity": id})).await.body["value"][0]["Department"].clone();
    in_time(t1, 2000);
    assert_eq!(d, "");
    assert!(
        eventually(8, || async {
            env.exo("Get-User", json!({"Identity": id})).await.body["value"][0]["Department"]
                == "Math"
        })
        .await
    );
}

#[tokio::test]
async fn graph_refuses_address_book_writes_on_exchange_objects() {
    // Only the rule matters here, not the delays.
    let env = start_realism(Realism {
        strict_rules: true,
        ..Realism::instant()
    })
    .await;
    let id = new_mail_user(&env, "cat").await;
    for body in [
        json!({"employeeId": "42"}),
        json!({"onPremisesExtensionAttributes": {"extensionAttribute1": "x"}}),
        json!({"department": "Art"}),
        json!({"displayName": "Cat"}),
    ] {
        let a = env.patch(&format!("/users/{id}"), body).await;
        assert_eq!(a.status, 400);
        assert_eq!(code(&a), "Request_BadRequest");
        assert_eq!(
            message(&a),
            "Unable to update the specified properties for objects that have originated within an external service."
        );
    }
    let a = env
        .patch(
            &format!("/users/{id}"),
            json!({"accountEnabled": false, "usageLocation": "DE"}),
        )
        .await;
    assert_eq!(a.status, 204, "{}", a.body);
    // Still refused once licensing made it a mailbox.
    let a = env
        .post(
            &format!("/users/{id}/assignLicense"),
            json!({"addLicenses": [{"skuId": EXCHANGE_SKU}], "removeLicenses": []}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = env
        .patch(&format!("/users/{id}"), json!({"employeeId": "42"}))
        .await;
    assert_eq!(a.status, 400);
    // Graph-created users are writable.
    let gid = env.create_user("dan", json!({})).await;
    assert_eq!(
        env.patch(&format!("/users/{gid}"), json!({"employeeId": "42"}))
            .await
            .status,
        204
    );
}

#[tokio::test]
async fn mailbox_appears_after_provisioning() {
    let env = start_realism(Realism {
        mailbox_provisioning_ms: 3000,
        ..Realism::instant()
    })
    .await;
    let id = new_mail_user(&env, "eli").await;
    let a = env
        .post(
            &format!("/users/{id}/assignLicense"),
            json!({"addLicenses": [{"skuId": EXCHANGE_SKU}], "removeLicenses": []}),
        )
        .await;
    assert_eq!(a.status, 400, "usage location first: {}", a.body);
    env.patch(&format!("/users/{id}"), json!({"usageLocation": "DE"}))
        .await;
    let t0 = Instant::now();
    let a = env
        .post(
            &format!("/users/{id}/assignLicense"),
            json!({"addLicenses": [{"skuId": EXCHANGE_SKU}], "removeLicenses": []}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    // The licence shows at once...
    let g = env
        .get(&format!(
            "/users/{id}?$select=assignedLicenses,assignedPlans,licenseAssignmentStates"
        ))
        .await;
    assert_eq!(g.body["assignedLicenses"][0]["skuId"], EXCHANGE_SKU);
    assert_eq!(g.body["assignedPlans"][0]["service"], "exchange");
    assert_eq!(g.body["assignedPlans"][0]["capabilityStatus"], "Enabled");
    assert_eq!(
        g.body["licenseAssignmentStates"][0]["assignedByGroup"],
        json!(null)
    );
    assert_eq!(g.body["licenseAssignmentStates"][0]["state"], "Active");
    // ...the mailbox does not.
    let m = env.exo("Get-Mailbox", json!({"Identity": "eli"})).await;
    let r = env.exo("Get-Recipient", json!({"Identity": "eli"})).await;
    in_time(t0, 2500);
    assert_eq!(m.status, 404);
    assert_eq!(r.body["value"][0]["RecipientTypeDetails"], "MailUser");
    assert!(
        eventually(8, || async {
            env.exo("Get-Mailbox", json!({"Identity": "eli"}))
                .await
                .status
                == 200
        })
        .await
    );
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(2900),
        "the mailbox appeared after {took:?}"
    );
    let r = env.exo("Get-Recipient", json!({"Identity": "eli"})).await;
    assert_eq!(r.body["value"][0]["RecipientTypeDetails"], "UserMailbox");
    let addrs = r.body["value"][0]["EmailAddresses"].to_string();
    assert!(addrs.contains("eli@contoso.onmicrosoft.com"), "{addrs}");
}

#[tokio::test]
async fn group_licence_without_exchange_converts_nothing() {
    // Not about timing: instant mode.
    let env = start_with(EmulatorConfig::instant()).await;
    let ids = env
        .emu
        .seed(Seed {
            users: vec![User {
                user_principal_name: "fin@example.edu".into(),
                mail_nickname: "fin".into(),
                usage_location: Some("DE".into()),
                group_licenses: vec![GroupLicense {
                    sku_id: OTHER_SKU.into(),
                    group_id: "99999999-0000-4000-8000-000000000009".into(),
                }],
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap();
    let g = env
        .get(&format!(
            "/users/{}?$select=assignedLicenses,licenseAssignmentStates,assignedPlans",
            ids[0]
        ))
        .await;
    assert_eq!(
        g.body["assignedLicenses"],
        json!([{"disabledPlans": [], "skuId": OTHER_SKU}])
    );
    assert_eq!(
        g.body["licenseAssignmentStates"][0]["assignedByGroup"],
        "99999999-0000-4000-8000-000000000009"
    );
    assert_ne!(g.body["assignedPlans"][0]["service"], "exchange");
    let a = env
        .exo("Get-Recipient", json!({"Identity": "fin@example.edu"}))
        .await;
    assert_eq!(a.status, 404, "no recipient");
    let s = env.get("/subscribedSkus").await;
    let other = s.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["skuId"] == OTHER_SKU)
        .unwrap()
        .clone();
    assert_eq!(other["consumedUnits"], 1);
}

#[tokio::test]
async fn delta_reports_exchange_objects_once_graph_sees_them() {
    let env = start_realism(quick()).await;
    let first = env.get("/users/delta?$select=id").await;
    let delta_link = first.body["@odata.deltaLink"].as_str().unwrap().to_string();
    let id = new_mail_user(&env, "gil").await;
    let r = env.get_url(&delta_link).await;
    assert!(r.body["value"].as_array().unwrap().is_empty(), "{}", r.body);
    let next = r.body["@odata.deltaLink"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let r = env.get_url(&next).await;
    let ids: Vec<&str> = r.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["id"].as_str())
        .collect();
    assert_eq!(ids, [id.as_str()]);
    // And $batch sees the same view.
    let b = env
        .post("/$batch", json!({"requests": [{"id": "1", "method": "GET", "url": format!("/users/{id}?$select=id")}]}))
        .await;
    assert_eq!(b.body["responses"][0]["status"], 200, "{}", b.body);
}
