//! Token endpoint and bearer checks: secrets, client assertions, tenants, scopes, audiences,
//! expiry.
//!
//! These tests predate strict mode and are about other things than timing: they run in
//! instant mode (`start_instant`, `EmulatorConfig::instant()`) so no propagation delay or 404
//! window gets in the way. Strict-mode behaviour is tested in `propagation.rs` and
//! `strict_exchange.rs`.

mod common;
use common::*;
use ldap2exo_emulator::{EmulatorConfig, TenantConfig, testing};
use serde_json::Value;

fn form<'a>(t: &'a TenantConfig, scope: &'a str, secret: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "client_credentials"),
        ("client_id", &t.client_id),
        ("client_secret", secret),
        ("scope", scope),
    ]
}

fn aadsts(v: &Value) -> &str {
    v["error_description"].as_str().unwrap_or("")
}

#[tokio::test]
async fn secret_gives_tokens_for_both_audiences() {
    let env = start_instant().await;
    let (s, v) = token_response(
        &env.http,
        &env.emu,
        &form(&env.emu.tenant(), GRAPH_SCOPE, "emulator-secret"),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["token_type"], "Bearer");
    assert!(v["expires_in"].as_u64().unwrap() > 3000);
    // The tokens from start() work on their own API.
    assert_eq!(env.get("/users").await.status, 200);
    assert_eq!(
        env.exo("Get-AcceptedDomain", serde_json::json!({}))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn token_endpoint_refusals_look_like_entra() {
    let env = start_instant().await;
    let t = env.emu.tenant();
    let (s, v) = token_response(&env.http, &env.emu, &form(&t, GRAPH_SCOPE, "wrong")).await;
    assert_eq!(
        (s.as_u16(), v["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert!(aadsts(&v).starts_with("AADSTS7000215:"), "{v}");
    assert_eq!(v["error_codes"][0], 7000215);

    let (s, v) = token_response(
        &env.http,
        &env.emu,
        &form(
            &t,
            "https://graph.microsoft.com/User.Read",
            "emulator-secret",
        ),
    )
    .await;
    assert_eq!(
        (s.as_u16(), v["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    assert!(aadsts(&v).starts_with("AADSTS1002012:"));

    let (s, v) = token_response(
        &env.http,
        &env.emu,
        &form(&t, "https://vault.azure.net/.default", "emulator-secret"),
    )
    .await;
    assert_eq!(
        (s.as_u16(), v["error"].as_str()),
        (400, Some("invalid_resource"))
    );

    let mut f = form(&t, GRAPH_SCOPE, "emulator-secret");
    f[1] = ("client_id", "99999999-9999-4999-8999-999999999999");
    let (s, v) = token_response(&env.http, &env.emu, &f).await;
    assert_eq!(
        (s.as_u16(), v["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
    assert!(aadsts(&v).starts_with("AADSTS700016:"));

    let (s, v) = token_response(
        &env.http,
        &env.emu,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &t.client_id),
            ("scope", GRAPH_SCOPE),
        ],
    )
    .await;
    assert_eq!(
        (s.as_u16(), v["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert!(aadsts(&v).starts_with("AADSTS7000218:"));

    let (s, v) = token_response(&env.http, &env.emu, &[("grant_type", "password")]).await;
    assert_eq!(
        (s.as_u16(), v["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );

    // Wrong tenant in the URL.
    let url = env
        .emu
        .token_url()
        .replace(&t.tenant_id, "deadbeef-0000-4000-8000-000000000000");
    let r = env
        .http
        .post(url)
        .form(&form(&t, GRAPH_SCOPE, "emulator-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "invalid_request");
    assert!(aadsts(&v).starts_with("AADSTS90002:"), "{v}");

    // The tenant may also be named by its initial domain.
    let url = env
        .emu
        .token_url()
        .replace(&t.tenant_id, "contoso.onmicrosoft.com");
    let r = env
        .http
        .post(url)
        .form(&form(&t, EXO_SCOPE, "emulator-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn client_assertion_is_verified() {
    let (cert, key) = testing::client_certificate("ldap2exo test app").unwrap();
    let (other_cert, other_key) = testing::client_certificate("someone else").unwrap();
    let mut cfg = EmulatorConfig::instant();
    cfg.tenant.client_secret = None;
    cfg.tenant.client_certificate_pem = Some(cert.clone());
    let emu = ldap2exo_emulator::Emulator::start(cfg).await.unwrap();
    let http = client_for(&emu);
    let t = emu.tenant();
    let call = |assertion: String| {
        let http = http.clone();
        let url = emu.token_url();
        let cid = t.client_id.clone();
        async move {
            let r = http
                .post(url)
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", cid.as_str()),
                    ("scope", EXO_SCOPE),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", assertion.as_str()),
                ])
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let good = testing::client_assertion(&cert, &key, &t.client_id, &emu.token_url(), 600).unwrap();
    let (s, v) = call(good.clone()).await;
    assert_eq!(s, 200, "{v}");

    // Signed by another key but claiming our certificate's thumbprint: bad signature.
    let forged = {
        let other =
            testing::client_assertion(&other_cert, &other_key, &t.client_id, &emu.token_url(), 600)
                .unwrap();
        let mut parts: Vec<&str> = good.split('.').collect();
        let sig = other.rsplit('.').next().unwrap();
        parts[2] = sig;
        parts.join(".")
    };
    let (s, v) = call(forged).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_client")));
    assert!(aadsts(&v).starts_with("AADSTS700027:"), "{v}");

    // Unknown certificate (thumbprint not registered).
    let (s, v) = call(
        testing::client_assertion(&other_cert, &other_key, &t.client_id, &emu.token_url(), 600)
            .unwrap(),
    )
    .await;
    assert_eq!(s, 401);
    assert!(aadsts(&v).contains("The key was not found"), "{v}");

    // Expired beyond the clock-skew allowance.
    let (s, v) =
        call(testing::client_assertion(&cert, &key, &t.client_id, &emu.token_url(), -900).unwrap())
            .await;
    assert_eq!(s, 401);
    assert!(aadsts(&v).starts_with("AADSTS700024:"), "{v}");

    // Audience of another tenant.
    let wrong_aud = emu
        .token_url()
        .replace(&t.tenant_id, "deadbeef-0000-4000-8000-000000000000");
    let (s, v) =
        call(testing::client_assertion(&cert, &key, &t.client_id, &wrong_aud, 600).unwrap()).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")));

    // The secret no longer works: the app has only the certificate.
    let (s, _) = token_response(&http, &emu, &form(&t, GRAPH_SCOPE, "emulator-secret")).await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn bearer_tokens_are_checked_per_audience_and_expiry() {
    let env = start_instant().await;
    // Graph token on the Exchange endpoint and vice versa.
    let r = env
        .http
        .post(env.emu.exchange_url())
        .bearer_auth(&env.graph_token)
        .json(&serde_json::json!({"CmdletInput": {"CmdletName": "Get-AcceptedDomain", "Parameters": {}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let a = env
        .send(
            env.http
                .get(env.graph("/users"))
                .bearer_auth(&env.exo_token),
        )
        .await;
    assert_eq!((a.status, code(&a)), (401, "InvalidAuthenticationToken"));
    assert!(message(&a).contains("audience"));
    let a = env.send(env.http.get(env.graph("/users"))).await;
    assert_eq!((a.status, message(&a)), (401, "Access token is empty."));
    let a = env
        .send(env.http.get(env.graph("/users")).bearer_auth("made-up"))
        .await;
    assert_eq!(a.status, 401);

    // Expiry mid-run: the same token now fails; a fresh one works.
    env.emu.expire_tokens();
    let a = env.get("/users").await;
    assert_eq!(a.status, 401);
    assert!(message(&a).contains("expired"), "{}", a.body);
    assert_eq!(
        env.exo("Get-AcceptedDomain", serde_json::json!({}))
            .await
            .status,
        401
    );
    let fresh = token(&env.http, &env.emu, GRAPH_SCOPE).await;
    let a = env
        .send(env.http.get(env.graph("/users")).bearer_auth(fresh))
        .await;
    assert_eq!(a.status, 200);
}

#[tokio::test]
async fn short_token_lifetime_expires_by_itself() {
    let cfg = EmulatorConfig {
        token_lifetime: std::time::Duration::from_millis(300),
        ..ldap2exo_emulator::EmulatorConfig::instant()
    };
    let env = start_with(cfg).await;
    assert_eq!(env.get("/users").await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    assert_eq!(env.get("/users").await.status, 401);
}
