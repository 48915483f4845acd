//! `/users/delta` rounds and `$batch` (limits, dependsOn/424, throttling inside).
//!
//! These tests predate strict mode and are about other things than timing: they run in
//! instant mode (`start_instant`, `EmulatorConfig::instant()`) so no propagation delay or 404
//! window gets in the way. Strict-mode behaviour is tested in `propagation.rs` and
//! `strict_exchange.rs`.

mod common;
use common::*;
use ldap2exo_emulator::{Budget, FaultConfig, User};
use serde_json::{Value, json};

async fn drain(env: &Env, first: &str) -> (Vec<Value>, String) {
    let mut a = env.get(first).await;
    let mut out = Vec::new();
    loop {
        assert_eq!(a.status, 200, "{}", a.body);
        out.extend(a.body["value"].as_array().unwrap().iter().cloned());
        if let Some(n) = a.body["@odata.nextLink"].as_str() {
            a = env.get_url(n).await;
        } else {
            return (
                out,
                a.body["@odata.deltaLink"]
                    .as_str()
                    .expect("deltaLink on last page")
                    .to_string(),
            );
        }
    }
}

#[tokio::test]
async fn delta_rounds_report_changes_and_removals() {
    let env = start_instant().await;
    let users: Vec<User> = (0..130)
        .map(|i| User {
            user_principal_name: format!("d{i}@example.edu"),
            mail_nickname: format!("d{i}"),
            ..Default::default()
        })
        .collect();
    let ids = env.seed_users(users);
    let (all, link) = drain(
        &env,
        "/users/delta?$select=id,userPrincipalName,onPremisesExtensionAttributes",
    )
    .await;
    assert_eq!(all.len(), 130);
    assert!(all[0].get("displayName").is_none(), "$select is honoured");
    // Never set, so not included at all (not `null`): user: delta, default behaviour.
    let (with_names, _) = drain(&env, "/users/delta?$select=id,displayName,department").await;
    assert!(
        with_names
            .iter()
            .all(|u| u.get("department").is_none() && u["id"].is_string()),
        "{with_names:?}"
    );

    // Nothing changed: an empty round.
    let (none, link) = drain(&env, &link.replace(&env.emu.graph_url(), "")).await;
    assert!(none.is_empty());

    let changed = env.create_user("newbie", json!({})).await;
    env.patch(
        &format!("/users/{}", ids[0]),
        json!({"onPremisesExtensionAttributes": {"extensionAttribute1": "x"}}),
    )
    .await;
    env.delete(&format!("/users/{}", ids[1])).await;
    env.delete(&format!("/users/{}", ids[2])).await;
    env.delete(&format!("/directory/deletedItems/{}", ids[2]))
        .await;
    let a = env.get_url(&link).await;
    let v = a.body["value"].as_array().unwrap();
    assert_eq!(v.len(), 4, "{}", a.body);
    let by_id = |id: &str| v.iter().find(|x| x["id"] == id).cloned().unwrap();
    assert_eq!(by_id(&changed)["userPrincipalName"], "newbie@example.edu");
    assert_eq!(
        by_id(&ids[0])["onPremisesExtensionAttributes"]["extensionAttribute1"],
        "x"
    );
    assert_eq!(by_id(&ids[1])["@removed"]["reason"], "changed");
    assert_eq!(by_id(&ids[2])["@removed"]["reason"], "deleted");

    // Expired delta tokens must trigger a full resync.
    let newer = a.body["@odata.deltaLink"].as_str().unwrap().to_string();
    env.emu.expire_delta_tokens();
    let a = env.get_url(&newer).await;
    assert_eq!((a.status, code(&a)), (410, "syncStateNotFound"));
}

#[tokio::test]
async fn delta_pages_with_prefer_maxpagesize() {
    let env = start_instant().await;
    let users: Vec<User> = (0..5)
        .map(|i| User {
            user_principal_name: format!("p{i}@example.edu"),
            mail_nickname: format!("p{i}"),
            ..Default::default()
        })
        .collect();
    env.seed_users(users);
    let a = env
        .send(
            env.http
                .get(env.graph("/users/delta"))
                .bearer_auth(&env.graph_token)
                .header("Prefer", "odata.maxpagesize=2"),
        )
        .await;
    assert_eq!(a.body["value"].as_array().unwrap().len(), 2);
    assert!(a.body["@odata.nextLink"].is_string());
}

fn create(id: &str, nick: &str) -> Value {
    json!({"id": id, "method": "POST", "url": "/users", "headers": {"Content-Type": "application/json"},
           "body": {"accountEnabled": true, "displayName": nick, "mailNickname": nick, "userPrincipalName": format!("{nick}@example.edu"), "passwordProfile": {"password": "Secr3t-Passw0rd!"}}})
}

#[tokio::test]
async fn batch_runs_requests_and_fails_dependents_with_424() {
    let env = start_instant().await;
    let body = json!({"requests": [
        create("1", "b1"),
        {"id": "2", "method": "PATCH", "url": "/users/b1@example.edu", "headers": {"Content-Type": "application/json"}, "body": {"jobTitle": "x"}, "dependsOn": ["1"]},
        create("3", "bad nick"),
        {"id": "4", "method": "GET", "url": "/users/b1@example.edu?$select=jobTitle", "dependsOn": ["3"]},
        {"id": "5", "method": "GET", "url": "users/b1@example.edu?$select=jobTitle", "dependsOn": ["2"]},
    ]});
    let a = env.post("/$batch", body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let st = |id: &str| {
        a.body["responses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(st("1")["status"], 201);
    assert_eq!(st("2")["status"], 204);
    assert_eq!(st("3")["status"], 400);
    assert_eq!(st("3")["body"]["error"]["code"], "Request_BadRequest");
    assert_eq!(st("4")["status"], 424);
    assert_eq!(st("5")["status"], 200);
    assert_eq!(st("5")["body"]["jobTitle"], "x");
    // Counted per sub-request.
    let c = env.emu.counters();
    assert_eq!(c.endpoint("POST /v1.0/users").requests, 2);
    assert_eq!(c.endpoint("POST /v1.0/$batch").requests, 1);
}

#[tokio::test]
async fn batch_envelope_refusals() {
    let env = start_instant().await;
    let many: Vec<Value> = (0..21)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/users"}))
        .collect();
    let a = env.post("/$batch", json!({"requests": many})).await;
    assert_eq!((a.status, code(&a)), (400, "BadRequest"));
    let a = env.post("/$batch", json!({"requests": [{"id": "1", "method": "PATCH", "url": "/users/x", "body": {"a": 1}}]})).await;
    assert_eq!(a.status, 400);
    assert!(message(&a).contains("Content-Type"), "{}", a.body);
    let a = env.post("/$batch", json!({"requests": [{"id": "1", "method": "GET", "url": "/users", "dependsOn": ["9"]}]})).await;
    assert_eq!(a.status, 400);
    let a = env.post("/$batch", json!({"requests": [{"id": "1", "method": "GET", "url": "/users"}, {"id": "1", "method": "GET", "url": "/users"}]})).await;
    assert_eq!(a.status, 400);
}

#[tokio::test]
async fn throttling_inside_batch_has_its_own_retry_after() {
    let env = start_instant().await;
    env.emu
        .set_faults(FaultConfig {
            graph_write_budget: Some(Budget {
                limit: 2,
                window_ms: 60_000,
            }),
            ..Default::default()
        })
        .unwrap();
    let reqs: Vec<Value> = (0..4)
        .map(|i| create(&i.to_string(), &format!("t{i}")))
        .collect();
    let a = env.post("/$batch", json!({"requests": reqs})).await;
    assert_eq!(a.status, 200);
    let r = a.body["responses"].as_array().unwrap();
    let statuses: Vec<u64> = r.iter().map(|x| x["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, vec![201, 201, 429, 429]);
    let ra: f64 = r[2]["headers"]["Retry-After"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ra > 0.0 && ra <= 60.0);
    assert_eq!(r[2]["body"]["error"]["code"], "TooManyRequests");
    assert_eq!(env.emu.state().users.len(), 2);
    assert_eq!(env.emu.counters().total.throttled, 2);
}
