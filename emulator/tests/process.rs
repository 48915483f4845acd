//! The `ldap2exo-emulator` binary: flags, CA and URL files, seed file, state dump on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test]
async fn binary_serves_seeds_and_dumps_state_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("ldap2exo-emu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (seed, ca, url, dump) = (
        dir.join("seed.json"),
        dir.join("ca.pem"),
        dir.join("url"),
        dir.join("state.json"),
    );
    std::fs::write(&seed, r#"{"tenant": {"tenant_id": "aaaaaaaa-0000-4000-8000-000000000001", "tenant_name": "fabrikam",
        "client_id": "bbbbbbbb-0000-4000-8000-000000000002", "client_secret": "from-seed",
        "domains": [{"name": "fabrikam.edu"}], "skus": []},
        "users": [{"userPrincipalName": "admin@fabrikam.onmicrosoft.com", "mailNickname": "admin"}]}"#).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ldap2exo-emulator"))
        .args(["--listen", "127.0.0.1:0", "--client-secret", "from-flag"])
        .arg("--seed")
        .arg(&seed)
        .arg("--ca-out")
        .arg(&ca)
        .arg("--url-out")
        .arg(&url)
        .arg("--state-dump")
        .arg(&dump)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !url.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "emulator did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let base = std::fs::read_to_string(&url).unwrap();
    let pem = std::fs::read(&ca).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .build()
        .unwrap();
    // The flag overrides the seed's secret.
    let token_url = format!("{base}/aaaaaaaa-0000-4000-8000-000000000001/oauth2/v2.0/token");
    let form = |secret: &'static str| {
        [
            ("grant_type", "client_credentials"),
            ("client_id", "bbbbbbbb-0000-4000-8000-000000000002"),
            ("client_secret", secret),
            ("scope", "https://graph.microsoft.com/.default"),
        ]
    };
    assert_eq!(
        http.post(&token_url)
            .form(&form("from-seed"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let v: serde_json::Value = http
        .post(&token_url)
        .form(&form("from-flag"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = v["access_token"].as_str().unwrap();
    let v: serde_json::Value = http
        .get(format!("{base}/v1.0/users"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["value"][0]["userPrincipalName"],
        "admin@fabrikam.onmicrosoft.com"
    );
    // Dump on request, then on SIGTERM.
    assert_eq!(
        http.post(format!("{base}/_emulator/state-dump"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(dump.exists());
    std::fs::remove_file(&dump).unwrap();
    assert!(
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert!(status.success());
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(&dump).unwrap()).unwrap();
    assert_eq!(state["tenant"]["tenant_name"], "fabrikam");
    assert_eq!(state["users"].as_array().unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
