//! IMAP migration cmdlets over HTTPS: the endpoint, batch validation (endpoint, unique name,
//! CSV header and limits, licensed mailboxes only), status progression, and the CSV kept only
//! behind the test side door.

mod common;
use base64::Engine;
use common::*;
use serde_json::{Value, json};

const SKU: &str = "4b9405b0-7788-4568-add1-99614e613b69";

async fn mailbox(env: &Env, nick: &str) {
    let id = env.create_user(nick, json!({"usageLocation": "DE"})).await;
    let a = env
        .post(
            &format!("/users/{id}/assignLicense"),
            json!({"addLicenses": [{"skuId": SKU}], "removeLicenses": []}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
}

fn csv(rows: &[&str]) -> String {
    let mut t = String::from("EmailAddress,UserName,Password\r\n");
    for r in rows {
        t.push_str(r);
        t.push_str("\r\n");
    }
    base64::engine::general_purpose::STANDARD.encode(t)
}

fn batch(name: &str, data: Value) -> Value {
    json!({"Name": name, "SourceEndpoint": "imap", "CSVData": data, "AutoStart": true})
}

#[tokio::test]
async fn batches_are_checked_and_sync_then_complete() {
    let env = start_instant().await;
    env.emu.set_migration_sync_ms(200);
    mailbox(&env, "ann").await;
    let unlicensed = env.create_user("bob", json!({})).await;
    assert!(!unlicensed.is_empty());

    // No endpoint yet.
    let a = env
        .exo(
            "New-MigrationBatch",
            batch("b1", json!(csv(&["ann@example.edu,ann*m,pw"]))),
        )
        .await;
    assert_eq!(a.status, 404, "{}", a.body);

    let ep = json!({"IMAP": true, "Name": "imap", "RemoteServer": "imap.example.edu", "Port": 993, "Security": "Ssl"});
    let a = env.exo("New-MigrationEndpoint", ep.clone()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["value"][0]["EndpointType"], "IMAP");
    assert_ne!(
        env.exo("New-MigrationEndpoint", ep).await.status,
        200,
        "names are unique"
    );
    let a = env
        .exo(
            "New-MigrationEndpoint",
            json!({"IMAP": true, "Name": "x", "RemoteServer": "h", "Security": "StartTls"}),
        )
        .await;
    assert!(exo_detail(&a).contains("None, Ssl, Tls"), "{}", a.body);
    let a = env.exo("Get-MigrationEndpoint", json!({})).await;
    assert_eq!(a.body["value"].as_array().unwrap().len(), 1);

    // CSVData is a Byte[]: base64 text; anything else is refused.
    let a = env
        .exo("New-MigrationBatch", batch("b1", json!([1, 2, 3])))
        .await;
    assert_ne!(a.status, 200);
    // Header, and licensed mailboxes only; a refusal never echoes a password.
    let a = env
        .exo(
            "New-MigrationBatch",
            batch(
                "b1",
                json!(
                    base64::engine::general_purpose::STANDARD
                        .encode("EmailAddress,UserName\r\nann@example.edu,ann\r\n")
                ),
            ),
        )
        .await;
    assert!(
        exo_detail(&a).contains("EmailAddress, UserName and Password"),
        "{}",
        a.body
    );
    let a = env
        .exo(
            "New-MigrationBatch",
            batch("b1", json!(csv(&["bob@example.edu,bob*m,Sekr1t"]))),
        )
        .await;
    assert_ne!(a.status, 200);
    assert!(exo_detail(&a).contains("bob@example.edu"), "{}", a.body);
    assert!(!a.body.to_string().contains("Sekr1t"));
    let twice = csv(&["ann@example.edu,ann*m,x", "ANN@example.edu,ann*m,x"]);
    let a = env
        .exo("New-MigrationBatch", batch("b1", json!(twice)))
        .await;
    assert!(exo_detail(&a).contains("more than once"), "{}", a.body);

    let a = env
        .exo(
            "New-MigrationBatch",
            batch("b1", json!(csv(&["ann@example.edu,ann*m,Sekr1t"]))),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["value"][0]["Status"], "Syncing");
    assert_ne!(
        env.exo(
            "New-MigrationBatch",
            batch("B1", json!(csv(&["ann@example.edu,ann*m,x"])))
        )
        .await
        .status,
        200,
        "batch names are unique"
    );
    // Completing before it is synced is refused.
    let a = env
        .exo("Complete-MigrationBatch", json!({"Identity": "b1"}))
        .await;
    assert_ne!(a.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let a = env
        .exo("Get-MigrationBatch", json!({"Identity": "b1"}))
        .await;
    assert_eq!(a.body["value"][0]["Status"], "Synced", "{}", a.body);
    let a = env.exo("Get-MigrationUser", json!({"BatchId": "b1"})).await;
    assert_eq!(a.body["value"][0]["Identity"], "ann@example.edu");
    assert_eq!(a.body["value"][0]["Status"], "Synced");
    let a = env
        .exo("Complete-MigrationBatch", json!({"Identity": "b1"}))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = env.exo("Get-MigrationBatch", json!({})).await;
    assert_eq!(a.body["value"][0]["Status"], "Completed");

    // The password is only behind the side door, never in the state dump.
    assert!(env.emu.migration_csvs()[0].1.contains("Sekr1t"));
    let side: Value = env
        .http
        .get(format!("{}/_emulator/migration-csvs", env.emu.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(side[0]["batch"], "b1");
    assert!(side[0]["csv"].as_str().unwrap().contains("ann*m,Sekr1t"));
    assert!(
        !serde_json::to_string(&env.emu.state())
            .unwrap()
            .contains("Sekr1t")
    );
}
