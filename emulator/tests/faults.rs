//! Fault injection (budgets, random errors, latency, dropped connections), counters, and the
//! HTTP side door used when the emulator runs as another process.
//!
//! These tests predate strict mode and are about other things than timing: they run in
//! instant mode (`start_instant`, `EmulatorConfig::instant()`) so no propagation delay or 404
//! window gets in the way. Strict-mode behaviour is tested in `propagation.rs` and
//! `strict_exchange.rs`.

mod common;
use common::*;
use ldap2exo_emulator::{Budget, FaultConfig};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn write_budget_answers_429_with_retry_after_then_recovers() {
    let env = start_instant().await;
    env.emu
        .set_faults(FaultConfig {
            graph_write_budget: Some(Budget {
                limit: 2,
                window_ms: 700,
            }),
            ..Default::default()
        })
        .unwrap();
    env.create_user("w1", json!({})).await;
    env.create_user("w2", json!({})).await;
    let a = env.post("/users", json!({"accountEnabled": true, "displayName": "w3", "mailNickname": "w3", "userPrincipalName": "w3@example.edu", "passwordProfile": {"password": "Secr3t-Passw0rd!"}})).await;
    assert_eq!((a.status, code(&a)), (429, "TooManyRequests"));
    assert_eq!(a.headers["retry-after"], "1", "whole seconds, rounded up");
    // Reads are not writes: still fine.
    assert_eq!(env.get("/users").await.status, 200);
    assert_eq!(
        env.emu.state().users.len(),
        2,
        "the throttled write did nothing"
    );
    tokio::time::sleep(Duration::from_millis(750)).await;
    env.create_user("w3", json!({})).await;
    let c = env.emu.counters();
    assert_eq!(c.endpoint("POST /v1.0/users").throttled, 1);
    assert_eq!(c.endpoint("POST /v1.0/users").writes, 3);
}

#[tokio::test]
async fn exchange_budget_and_fractional_retry_after() {
    let env = start_instant().await;
    env.emu
        .set_faults(FaultConfig {
            exchange_write_budget: Some(Budget {
                limit: 1,
                window_ms: 1500,
            }),
            fractional_retry_after: true,
            ..Default::default()
        })
        .unwrap();
    let ok = env
        .exo(
            "New-MailUser",
            json!({"Name": "m1", "ExternalEmailAddress": "m1@example.edu"}),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let a = env
        .exo(
            "Set-MailUser",
            json!({"Identity": "m1", "CustomAttribute1": "x"}),
        )
        .await;
    assert_eq!(a.status, 429);
    let ra: f64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(ra > 0.0 && ra <= 1.5 && ra.fract() != 0.0, "{ra}");
    // Reads are not limited by the write budget.
    assert_eq!(env.exo("Get-MailUser", json!({})).await.status, 200);
}

#[tokio::test]
async fn random_errors_and_latency() {
    let env = start_instant().await;
    env.emu
        .set_faults(FaultConfig {
            error_rate: 1.0,
            error_statuses: vec![503],
            ..Default::default()
        })
        .unwrap();
    let a = env.get("/users").await;
    assert_eq!((a.status, code(&a)), (503, "serviceNotAvailable"));
    assert!(a.headers.contains_key("retry-after"));
    let a = env.exo("Get-Mailbox", json!({})).await;
    assert_eq!(a.status, 503);
    // The token endpoint is spared unless asked.
    token(&env.http, &env.emu, GRAPH_SCOPE).await;

    // A rate in between hits some requests, reproducibly for a seed.
    let run = |seed| FaultConfig {
        error_rate: 0.5,
        error_statuses: vec![500, 504],
        seed,
        ..Default::default()
    };
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        env.emu.set_faults(run(7)).unwrap();
        let mut s = Vec::new();
        for _ in 0..12 {
            s.push(env.get("/users").await.status);
        }
        outcomes.push(s);
    }
    assert_eq!(outcomes[0], outcomes[1]);
    assert!(outcomes[0].contains(&200) && outcomes[0].iter().any(|s| *s == 500 || *s == 504));

    env.emu
        .set_faults(FaultConfig {
            latency_ms: 150,
            ..Default::default()
        })
        .unwrap();
    let t = Instant::now();
    assert_eq!(env.get("/users").await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn dropped_connection_after_the_write_was_done() {
    let env = start_instant().await;
    env.emu
        .set_faults(FaultConfig {
            drop_next: 1,
            ..Default::default()
        })
        .unwrap();
    let r = env
        .http
        .post(env.graph("/users"))
        .bearer_auth(&env.graph_token)
        .json(&json!({"accountEnabled": true, "displayName": "Drop", "mailNickname": "drop", "userPrincipalName": "drop@example.edu", "passwordProfile": {"password": "Secr3t-Passw0rd!"}}))
        .send()
        .await;
    let failed = match r {
        Err(_) => true,
        Ok(resp) => resp.bytes().await.is_err(),
    };
    assert!(failed, "the client must see a broken response");
    // The server did the work: a retry must cope with "already exists".
    assert!(env.emu.user("drop@example.edu").is_some());
    assert_eq!(env.get("/users/drop@example.edu").await.status, 200);
    assert_eq!(env.emu.counters().total.dropped, 1);
}

#[tokio::test]
async fn counters_show_zero_writes_for_a_read_only_run() {
    let env = start_instant().await;
    env.create_user("c1", json!({})).await;
    env.exo(
        "New-MailUser",
        json!({"Name": "c2", "ExternalEmailAddress": "c2@example.edu"}),
    )
    .await;
    assert_eq!(env.emu.counters().writes(), 2);
    env.emu.reset_counters();
    env.get("/users").await;
    env.exo("Get-Recipient", json!({})).await;
    env.post(
        "/$batch",
        json!({"requests": [{"id": "1", "method": "GET", "url": "/users"}]}),
    )
    .await;
    let c = env.emu.counters();
    assert_eq!(c.writes(), 0);
    assert_eq!(c.endpoint("GET /v1.0/users").requests, 2);
    assert_eq!(c.endpoint("EXO Get-Recipient").requests, 1);
}

#[tokio::test]
async fn admin_endpoints_drive_a_running_emulator() {
    let env = start_instant().await;
    let admin = |p: &str| format!("{}/_emulator/{p}", env.emu.base_url());
    let r = env.http.post(admin("seed")).json(&json!({"users": [{"userPrincipalName": "seeded@example.edu", "mailNickname": "seeded"}]})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ids: serde_json::Value = r.json().await.unwrap();
    assert_eq!(ids["ids"].as_array().unwrap().len(), 1);
    let state: serde_json::Value = env
        .http
        .get(admin("state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["users"][0]["userPrincipalName"], "seeded@example.edu");
    let r = env
        .http
        .put(admin("faults"))
        .json(&json!({"error_rate": 1.0, "error_statuses": [504]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(env.get("/users").await.status, 504);
    let r = env
        .http
        .put(admin("faults"))
        .json(&json!({"error_rate": 7.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    env.http
        .put(admin("faults"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(env.get("/users").await.status, 200);
    let counters: serde_json::Value = env
        .http
        .get(admin("counters"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        counters["per_endpoint"]["GET /v1.0/users"]["requests"]
            .as_u64()
            .unwrap()
            >= 2
    );
    env.http.post(admin("tokens/expire")).send().await.unwrap();
    assert_eq!(env.get("/users").await.status, 401);
    let pem = env
        .http
        .get(admin("ca.pem"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(pem, env.emu.ca_pem());
    // No dump file configured in-process.
    assert_eq!(
        env.http
            .post(admin("state-dump"))
            .send()
            .await
            .unwrap()
            .status(),
        409
    );
}
