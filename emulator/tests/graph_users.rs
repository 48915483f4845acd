//! Graph users: create/read/update/delete, validation refusals, uniqueness, filters, paging,
//! licences, domains, soft delete and restore.
//!
//! These tests predate strict mode and are about other things than timing: they run in
//! instant mode (`start_instant`, `EmulatorConfig::instant()`) so no propagation delay or 404
//! window gets in the way. Strict-mode behaviour is tested in `propagation.rs` and
//! `strict_exchange.rs`.

mod common;
use common::*;
use ldap2exo_emulator::{Seed, User};
use serde_json::json;

#[tokio::test]
async fn create_read_update_delete() {
    let env = start_instant().await;
    let id = env
        .create_user("ann", json!({"givenName": "Ann", "employeeId": "E1"}))
        .await;
    // Default property set: no employeeId, no proxyAddresses.
    let a = env.get(&format!("/users/{id}")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["userPrincipalName"], "ann@example.edu");
    assert!(a.body.get("employeeId").is_none() && a.body.get("proxyAddresses").is_none());
    // By UPN, with $select.
    let a = env.get("/users/ANN@example.edu?$select=id,employeeId,onPremisesExtensionAttributes,accountEnabled").await;
    assert_eq!(a.body["employeeId"], "E1");
    assert_eq!(a.body["accountEnabled"], true);
    assert!(a.body.get("displayName").is_none());

    let a = env.patch(&format!("/users/{id}"), json!({"jobTitle": "Dean", "onPremisesExtensionAttributes": {"extensionAttribute15": "ldap2exo:1"}})).await;
    assert_eq!(a.status, 204);
    let a = env
        .get(&format!(
            "/users/{id}?$select=jobTitle,onPremisesExtensionAttributes"
        ))
        .await;
    assert_eq!(a.body["jobTitle"], "Dean");
    assert_eq!(
        a.body["onPremisesExtensionAttributes"]["extensionAttribute15"],
        "ldap2exo:1"
    );
    // null clears.
    env.patch(
        &format!("/users/{id}"),
        json!({"onPremisesExtensionAttributes": {"extensionAttribute15": null}}),
    )
    .await;
    assert!(env.emu.user(&id).unwrap().extension_attributes.is_empty());

    assert_eq!(env.delete(&format!("/users/{id}")).await.status, 204);
    let a = env.get(&format!("/users/{id}")).await;
    assert_eq!((a.status, code(&a)), (404, "Request_ResourceNotFound"));
    assert_eq!(
        env.patch("/users/nobody@example.edu", json!({"jobTitle": "x"}))
            .await
            .status,
        404
    );
    assert_eq!(env.delete(&format!("/users/{id}")).await.status, 404);
}

#[tokio::test]
async fn create_refusals() {
    let env = start_instant().await;
    let base = json!({
        "accountEnabled": true, "displayName": "Bob", "mailNickname": "bob",
        "userPrincipalName": "bob@example.edu",
        "passwordProfile": {"password": "Secr3t-Passw0rd!"},
    });
    let with = |k: &str, v: serde_json::Value| {
        let mut b = base.clone();
        if v.is_null() {
            b.as_object_mut().unwrap().remove(k);
        } else {
            b[k] = v;
        }
        b
    };
    let cases = [
        (with("passwordProfile", json!(null)), "passwordProfile"),
        (with("mailNickname", json!(null)), "mailNickname"),
        (with("mailNickname", json!("bob smith")), "mailNickname"),
        (with("mailNickname", json!("bob(x)")), "mailNickname"),
        (with("mailNickname", json!("b".repeat(65))), "mailNickname"),
        (with("displayName", json!("d".repeat(257))), "displayName"),
        (with("employeeId", json!("12345678901234567")), "employeeId"),
        (
            with("userPrincipalName", json!("bob@unverified.org")),
            "domain portion",
        ),
        (
            with("proxyAddresses", json!(["SMTP:bob@example.edu"])),
            "read-only",
        ),
        (with("favouriteColour", json!("blue")), "does not exist"),
        (
            with("passwordProfile", json!({"password": "short"})),
            "complexity",
        ),
    ];
    for (body, needle) in cases {
        let a = env.post("/users", body).await;
        assert_eq!(
            (a.status, code(&a)),
            (400, "Request_BadRequest"),
            "{needle}: {}",
            a.body
        );
        assert!(message(&a).contains(needle), "{needle}: {}", a.body);
        assert!(a.body["error"]["innerError"]["request-id"].is_string());
    }
    assert_eq!(env.emu.state().users.len(), 0);
}

#[tokio::test]
async fn uniqueness_covers_upn_mail_proxies_and_soft_deleted() {
    let env = start_instant().await;
    env.emu
        .seed(Seed {
            users: vec![User {
                user_principal_name: "breakglass@contoso.onmicrosoft.com".into(),
                mail_nickname: "breakglass".into(),
                proxy_addresses: vec!["SMTP:owner@example.edu".into()],
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap();
    let id = env.create_user("carl", json!({})).await;
    let body = |upn: &str, mail: Option<&str>| {
        let mut b = json!({"accountEnabled": true, "displayName": "X", "mailNickname": "x", "userPrincipalName": upn, "passwordProfile": {"password": "Secr3t-Passw0rd!"}});
        if let Some(m) = mail {
            b["mail"] = json!(m);
        }
        b
    };
    let a = env.post("/users", body("CARL@example.edu", None)).await;
    assert_eq!(a.status, 400);
    assert_eq!(
        message(&a),
        "Another object with the same value for property userPrincipalName already exists."
    );
    assert_eq!(a.body["error"]["details"][0]["code"], "ObjectConflict");
    let a = env
        .post(
            "/users",
            body("dora@example.edu", Some("owner@example.edu")),
        )
        .await;
    assert_eq!(
        message(&a),
        "Another object with the same value for property proxyAddresses already exists."
    );
    // PATCHing a second user onto the first's UPN fails too.
    let other = env.create_user("dan", json!({})).await;
    let a = env
        .patch(
            &format!("/users/{other}"),
            json!({"userPrincipalName": "carl@example.edu"}),
        )
        .await;
    assert_eq!(a.status, 400);
    // A soft-deleted object keeps its UPN reserved until restored or purged.
    env.delete(&format!("/users/{id}")).await;
    let a = env.post("/users", body("carl@example.edu", None)).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(
        env.delete(&format!("/directory/deletedItems/{id}"))
            .await
            .status,
        204
    );
    assert_eq!(
        env.post("/users", body("carl@example.edu", None))
            .await
            .status,
        201
    );
}

#[tokio::test]
async fn deleted_items_list_and_restore() {
    let env = start_instant().await;
    let id = env.create_user("eve", json!({})).await;
    env.delete(&format!("/users/{id}")).await;
    let a = env
        .get("/directory/deletedItems/microsoft.graph.user")
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["value"][0]["id"], id.as_str());
    assert!(a.body["value"][0]["deletedDateTime"].is_string());
    let a = env.get(&format!("/directory/deletedItems/{id}")).await;
    assert_eq!(a.body["@odata.type"], "#microsoft.graph.user");
    let a = env
        .send(
            env.http
                .post(env.graph(&format!("/directory/deletedItems/{id}/restore")))
                .bearer_auth(&env.graph_token),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(env.get(&format!("/users/{id}")).await.status, 200);
    let a = env
        .send(
            env.http
                .post(env.graph(&format!("/directory/deletedItems/{id}/restore")))
                .bearer_auth(&env.graph_token),
        )
        .await;
    assert_eq!(a.status, 404);
}

#[tokio::test]
async fn restore_refused_when_address_taken_meanwhile() {
    let env = start_instant().await;
    let id = env.create_user("fay", json!({})).await;
    env.delete(&format!("/users/{id}")).await;
    // Seeding bypasses the API's reservation check, like a sync from elsewhere could.
    env.emu.add_user(User {
        user_principal_name: "fay@example.edu".into(),
        mail_nickname: "fay2".into(),
        ..Default::default()
    });
    let a = env
        .send(
            env.http
                .post(env.graph(&format!("/directory/deletedItems/{id}/restore")))
                .bearer_auth(&env.graph_token),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(message(&a).contains("conflicting object"));
}

#[tokio::test]
async fn filters_and_quote_escaping() {
    let env = start_instant().await;
    env.create_user("obrien", json!({"surname": "O'Brien", "employeeId": "77", "onPremisesExtensionAttributes": {"extensionAttribute15": "ldap2exo:abc"}})).await;
    env.create_user("other", json!({"surname": "Other"})).await;
    let a = env
        .get("/users?$filter=surname eq 'O''Brien'&$select=id,surname")
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["value"].as_array().unwrap().len(), 1);
    let a = env
        .get("/users?$filter=startswith(userPrincipalName,'oth')")
        .await;
    assert_eq!(a.body["value"][0]["userPrincipalName"], "other@example.edu");
    let a = env
        .get("/users?$filter=employeeId eq '77' or mail eq 'nobody@example.edu'")
        .await;
    assert_eq!(a.body["value"].as_array().unwrap().len(), 1);

    // Extension attributes are an advanced query.
    let q = "/users?$filter=onPremisesExtensionAttributes/extensionAttribute15 eq 'ldap2exo:abc'";
    let a = env.get(q).await;
    assert_eq!((a.status, code(&a)), (400, "Request_UnsupportedQuery"));
    let a = env.get_eventual(q).await;
    assert_eq!(
        (a.status, code(&a)),
        (400, "Request_UnsupportedQuery"),
        "needs $count=true too"
    );
    let a = env.get_eventual(&format!("{q}&$count=true")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["@odata.count"], 1);

    let a = env.get("/users?$filter=shoeSize eq 3").await;
    assert_eq!((a.status, code(&a)), (400, "Request_BadRequest"));
    let a = env.get("/users?$filter=surname eq 'unterminated").await;
    assert_eq!(a.status, 400);
    let a = env.get("/users?$select=nope").await;
    assert_eq!(a.status, 400);
}

#[tokio::test]
async fn eventual_consistency_hides_fresh_objects_from_advanced_queries() {
    let cfg = ldap2exo_emulator::EmulatorConfig {
        advanced_query_lag: std::time::Duration::from_millis(300),
        ..ldap2exo_emulator::EmulatorConfig::instant()
    };
    let env = start_with(cfg).await;
    env.create_user(
        "gil",
        json!({"onPremisesExtensionAttributes": {"extensionAttribute15": "k"}}),
    )
    .await;
    let q = "/users?$filter=onPremisesExtensionAttributes/extensionAttribute15 eq 'k'&$count=true";
    assert_eq!(
        env.get_eventual(q).await.body["value"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // A plain read sees it at once.
    assert_eq!(
        env.get("/users?$filter=userPrincipalName eq 'gil@example.edu'")
            .await
            .body["value"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    assert_eq!(
        env.get_eventual(q).await.body["value"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn paging_with_next_link() {
    let env = start_instant().await;
    let users: Vec<User> = (0..250)
        .map(|i| User {
            user_principal_name: format!("u{i}@example.edu"),
            mail_nickname: format!("u{i}"),
            ..Default::default()
        })
        .collect();
    env.seed_users(users);
    // Default page is 100.
    let mut a = env.get("/users?$select=id").await;
    let mut seen = std::collections::HashSet::new();
    let mut pages = 0;
    loop {
        pages += 1;
        for u in a.body["value"].as_array().unwrap() {
            assert!(
                seen.insert(u["id"].as_str().unwrap().to_string()),
                "duplicate across pages"
            );
        }
        match a.body["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(
                    next.contains("$select=id") || next.contains("%24select=id"),
                    "nextLink keeps the query: {next}"
                );
                a = env.get_url(next).await;
            }
            None => break,
        }
    }
    assert_eq!((seen.len(), pages), (250, 3));
    let a = env.get("/users?$top=999").await;
    assert_eq!(a.body["value"].as_array().unwrap().len(), 250);
    assert!(a.body.get("@odata.nextLink").is_none());
    let a = env.get("/users?$top=1000").await;
    assert_eq!(a.status, 400);
    assert!(message(&a).contains("page size"));
}

/// A listing builds only its page's views (without `$count` it stops one past the page): the
/// pages must still make up exactly the one-page answer, filtered or not, and `$count` must
/// count the whole result on every page.
#[tokio::test]
async fn pages_make_up_the_one_page_answer() {
    let env = start_instant().await;
    let users: Vec<User> = (0..23)
        .map(|i| User {
            user_principal_name: format!("p{i}@example.edu"),
            mail_nickname: format!("p{i}"),
            display_name: Some(format!("{} {i}", if i % 3 == 0 { "Ada" } else { "Bo" })),
            ..Default::default()
        })
        .collect();
    env.seed_users(users);
    let all = |query: String, eventual: bool| {
        let env = &env;
        async move {
            let first = format!("/users?{query}");
            let mut a = match eventual {
                true => env.get_eventual(&first).await,
                false => env.get(&first).await,
            };
            let (mut ids, mut counts) = (Vec::new(), Vec::new());
            loop {
                assert_eq!(a.status, 200, "{query}: {}", a.body);
                counts.push(a.body["@odata.count"].clone());
                ids.extend(
                    a.body["value"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|u| u["id"].as_str().unwrap().to_string()),
                );
                match a.body["@odata.nextLink"].as_str() {
                    Some(next) if eventual => {
                        a = env
                            .send(
                                env.http
                                    .get(next)
                                    .bearer_auth(&env.graph_token)
                                    .header("ConsistencyLevel", "eventual"),
                            )
                            .await
                    }
                    Some(next) => a = env.get_url(next).await,
                    None => return (ids, counts),
                }
            }
        }
    };
    for (query, eventual, expected) in [
        ("$select=id,displayName", false, 23),
        ("$select=id&$filter=startswith(displayName,'Ada')", false, 8),
        ("$select=id&$count=true", true, 23),
        (
            "$select=id&$count=true&$filter=startswith(displayName,'Bo')",
            true,
            15,
        ),
    ] {
        let (whole, _) = all(format!("{query}&$top=999"), eventual).await;
        assert_eq!(whole.len(), expected, "{query}");
        for top in [1, 2, 5] {
            let (paged, counts) = all(format!("{query}&$top={top}"), eventual).await;
            assert_eq!(paged, whole, "{query} in pages of {top}");
            if eventual {
                assert!(counts.iter().all(|c| *c == expected), "{query}: {counts:?}");
            }
        }
    }
}

#[tokio::test]
async fn licences_skus_and_domains() {
    let cfg = {
        let mut c = ldap2exo_emulator::EmulatorConfig::instant();
        c.tenant.skus = vec![ldap2exo_emulator::SkuConfig::exchange_online_plan1(1)];
        c.tenant.domains.push(ldap2exo_emulator::DomainConfig {
            name: "pending.org".into(),
            verified: false,
            domain_type: ldap2exo_emulator::DomainType::Authoritative,
        });
        c
    };
    let env = start_with(cfg).await;
    let sku = "4b9405b0-7788-4568-add1-99614e613b69";
    let a = env.get("/subscribedSkus").await;
    assert_eq!(a.body["value"][0]["skuId"], sku);
    assert_eq!(a.body["value"][0]["consumedUnits"], 0);
    assert_eq!(a.body["value"][0]["prepaidUnits"]["enabled"], 1);

    let a = env.get("/domains").await;
    let doms: Vec<(String, bool)> = a.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_string(),
                d["isVerified"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(doms.contains(&("contoso.onmicrosoft.com".into(), true)));
    assert!(doms.contains(&("pending.org".into(), false)));

    let one = env.create_user("h1", json!({})).await;
    let two = env.create_user("h2", json!({"usageLocation": "DE"})).await;
    let assign =
        json!({"addLicenses": [{"skuId": sku, "disabledPlans": []}], "removeLicenses": []});
    let a = env
        .post(&format!("/users/{one}/assignLicense"), assign.clone())
        .await;
    assert_eq!(a.status, 400);
    assert!(message(&a).contains("usage location"));
    let a = env
        .post(
            &format!("/users/{two}/assignLicense"),
            json!({"addLicenses": [{"skuId": sku}]}),
        )
        .await;
    assert!(message(&a).contains("removeLicenses"), "{}", a.body);
    let a = env.post(&format!("/users/{two}/assignLicense"), json!({"addLicenses": [{"skuId": "00000000-0000-4000-8000-000000000001"}], "removeLicenses": []})).await;
    assert_eq!(a.status, 400);
    assert_eq!(
        env.post(&format!("/users/{two}/assignLicense"), assign.clone())
            .await
            .status,
        200
    );
    assert_eq!(
        env.get("/subscribedSkus").await.body["value"][0]["consumedUnits"],
        1
    );
    // Out of units.
    env.patch(&format!("/users/{one}"), json!({"usageLocation": "DE"}))
        .await;
    let a = env
        .post(&format!("/users/{one}/assignLicense"), assign.clone())
        .await;
    assert_eq!(a.status, 400);
    assert!(
        message(&a).contains("does not have any available licenses"),
        "{}",
        a.body
    );
    // Removing frees the unit.
    let a = env
        .post(
            &format!("/users/{two}/assignLicense"),
            json!({"addLicenses": [], "removeLicenses": [sku]}),
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        env.post(&format!("/users/{one}/assignLicense"), assign)
            .await
            .status,
        200
    );
    let a = env
        .get(&format!(
            "/users/{one}?$select=assignedLicenses,mail,proxyAddresses"
        ))
        .await;
    assert_eq!(a.body["assignedLicenses"][0]["skuId"], sku);
    // The licence made a mailbox: UPN and MOERA addresses.
    assert_eq!(a.body["mail"], "h1@example.edu");
    assert_eq!(
        a.body["proxyAddresses"],
        json!(["SMTP:h1@example.edu", "smtp:h1@contoso.onmicrosoft.com"])
    );
}
