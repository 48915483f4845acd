//! The tenant client layer (`ldap2exo::tenant`) against the tenant emulator over real HTTPS:
//! authentication, Graph users, paging, advanced queries, `$batch`, licences, the Exchange
//! admin API, delta, and behaviour under throttling and injected faults. Every test starts
//! its own emulator.

use std::time::Duration;

use ldap2exo::config::Credential;
use ldap2exo::secret::Secret;
use ldap2exo::tenant::{
    AssertionAlgorithm, BatchRequest, ExtensionAttributes, GraphUser, NewMailUser, Tenant,
    TenantError, TenantOptions, UserQuery, hashtable,
};
use ldap2exo_emulator::{Budget, EmulatorConfig, FaultConfig, RecipientKind, SkuConfig, User};
use reqwest::Method;
use serde_json::json;

use crate::support::emulator::{LogCapture, certificate_pem, fast_options, seed_user, start};

const PASSWORD: &str = "Xq7!unused-Passw0rd";

/// An emulator without Microsoft's timing (no propagation delay, no 404 window after a
/// create, instant mailbox provisioning). These tests check one client call at a time, its
/// request and its answer, by creating an object and using it at once; waiting out the
/// service's timing is the executor's job, and the sync tests run it against the strict
/// default.
fn instant() -> EmulatorConfig {
    EmulatorConfig::instant()
}

fn connect(t: &crate::support::emulator::TestTenant) -> Tenant {
    Tenant::connect_with(&t.config(), fast_options()).expect("connect")
}

fn new_user(nick: &str) -> GraphUser {
    GraphUser {
        account_enabled: Some(true),
        display_name: Some(format!("User {nick}")),
        mail_nickname: Some(nick.into()),
        user_principal_name: Some(format!("{nick}@example.edu")),
        ..Default::default()
    }
}

fn mail_user(nick: &str) -> NewMailUser {
    NewMailUser {
        name: nick.into(),
        alias: nick.into(),
        display_name: format!("Mail User {nick}"),
        first_name: Some("Mail".into()),
        last_name: Some(nick.into()),
        external_email_address: format!("{nick}@mail.onprem.example.org"),
        user_principal_name: Some(format!("{nick}@example.edu")),
        password: Some(Secret::new(PASSWORD.into())),
    }
}

#[tokio::test]
async fn secret_auth_gets_both_tokens_and_check_reads_the_domains() {
    let t = start(EmulatorConfig::default()).await;
    let tenant = connect(&t);
    assert_eq!(tenant.credential(), Credential::ClientSecret);
    // connect made no request.
    assert_eq!(t.emu.counters().total.requests, 0);
    let check = tenant.check().await.expect("check");
    assert!(
        check
            .domains
            .iter()
            .any(|d| d.id == "example.edu" && d.is_verified)
    );
    assert!(check.domains.iter().any(|d| d.is_initial));
    assert!(check.accepted_domains.iter().any(|d| d == "example.edu"));
    assert_eq!(
        t.emu
            .counters()
            .endpoint("POST /{tenant}/oauth2/v2.0/token")
            .requests,
        2,
        "one token per audience"
    );
    // Tokens are cached: more calls fetch no more tokens.
    tenant.check().await.unwrap();
    assert_eq!(
        t.emu
            .counters()
            .endpoint("POST /{tenant}/oauth2/v2.0/token")
            .requests,
        2
    );
}

#[tokio::test]
async fn secrets_stay_out_of_errors_logs_and_debug_output() {
    let logs = LogCapture::start();
    let t = start(EmulatorConfig::default()).await;
    // A working tenant, with tokens issued and used.
    let good = connect(&t);
    good.check().await.unwrap();
    good.exchange()
        .new_mail_user(&mail_user("secretive"))
        .await
        .unwrap();
    // A wrong secret.
    let wrong = "wr0ng-Secret-Value-4711";
    let mut config = t.config();
    config.client_secret = Some(Secret::new(wrong.into()));
    let bad = Tenant::connect_with(&config, fast_options()).unwrap();
    let err = bad.check().await.unwrap_err();
    assert!(
        matches!(
            err,
            TenantError::Auth {
                audience: "graph",
                ..
            }
        ),
        "{err:?}"
    );
    let shown = format!("{err} {err:?}");
    assert!(
        shown.contains("AADSTS7000215"),
        "the cause is named: {shown}"
    );
    assert!(shown.contains("Invalid client secret"), "{shown}");

    let debug = format!("{good:?} {bad:?} {config:?}");
    let text = logs.text();
    assert!(
        text.contains("oauth2/v2.0/token") && text.lines().count() > 100,
        "the capture saw the traffic (at TRACE level): {} lines, token URL {}",
        text.lines().count(),
        if text.contains("oauth2/v2.0/token") {
            "seen"
        } else {
            "not seen"
        }
    );
    for (what, haystack) in [("error", &shown), ("Debug", &debug), ("log", &text)] {
        assert!(!haystack.contains(wrong), "{what} shows the wrong secret");
        assert!(
            !haystack.contains("emulator-secret"),
            "{what} shows the secret"
        );
        assert!(!haystack.contains(PASSWORD), "{what} shows the password");
        // The emulator's access tokens all start like this.
        assert!(!haystack.contains("emu."), "{what} shows a token");
    }
}

#[tokio::test]
async fn certificate_auth_signs_an_assertion_the_emulator_verifies() {
    let (pem, cert) = certificate_pem("ldap2exo test app");
    let mut cfg = EmulatorConfig::default();
    cfg.tenant.client_secret = None;
    cfg.tenant.client_certificate_pem = Some(cert);
    let t = start(cfg).await;
    std::fs::write(t.path("app.pem"), &pem).unwrap();
    let mut config = t.config_without_credential();
    config.certificate_file = Some(t.path("app.pem"));
    // Both documented forms: PS256 with `x5t#S256` (the default, Microsoft's current page)
    // and RS256 with `x5t` (the older page, Microsoft's Rust SDK).
    for algorithm in [AssertionAlgorithm::Ps256, AssertionAlgorithm::Rs256] {
        config.certificate_file = Some(t.path("app.pem"));
        let options = TenantOptions {
            assertion_algorithm: algorithm,
            ..fast_options()
        };
        let tenant = Tenant::connect_with(&config, options.clone()).unwrap();
        assert_eq!(tenant.credential(), Credential::Certificate);
        let check = tenant.check().await.expect("certificate credential works");
        assert!(!check.accepted_domains.is_empty(), "{algorithm:?}");
        assert!(!format!("{tenant:?}").contains("PRIVATE KEY"));

        // Another certificate's key is refused, with Entra's reason.
        let (other, _) = certificate_pem("someone else");
        std::fs::write(t.path("other.pem"), &other).unwrap();
        config.certificate_file = Some(t.path("other.pem"));
        let err = Tenant::connect_with(&config, options)
            .unwrap()
            .check()
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("AADSTS700027"),
            "{algorithm:?}: {err}"
        );
    }
}

#[tokio::test]
async fn connect_names_what_is_missing_and_builds_azure_host_credentials() {
    let t = start(EmulatorConfig::default()).await;
    let config = t.config_without_credential();
    let err = Tenant::connect(&config).unwrap_err();
    assert!(
        matches!(&err, TenantError::Config(m) if m.contains("client_secret_file") && m.contains("certificate_file")),
        "{err}"
    );
    let mut c = config.clone();
    c.certificate_file = Some(t.path("missing.pem"));
    let err = Tenant::connect(&c).unwrap_err().to_string();
    assert!(err.contains("missing.pem"), "{err}");
    let mut c = config.clone();
    c.tenant_id = None;
    c.client_secret = Some(Secret::new("x".into()));
    let err = Tenant::connect(&c).unwrap_err().to_string();
    assert!(err.contains("tenant.tenant_id"), "{err}");

    // Managed identity can only be constructed here (no IMDS endpoint to get a token from).
    let mut c = config.clone();
    c.credential = Some(Credential::ManagedIdentity);
    let mi = Tenant::connect(&c).expect("managed identity credential builds");
    assert_eq!(mi.credential(), Credential::ManagedIdentity);
    // Workload identity needs the federated token file from the environment.
    if std::env::var_os("AZURE_FEDERATED_TOKEN_FILE").is_none() {
        let mut c = config.clone();
        c.credential = Some(Credential::WorkloadIdentity);
        let err = Tenant::connect(&c).unwrap_err().to_string();
        assert!(err.contains("token file"), "{err}");
    }
}

#[tokio::test]
async fn token_failures_name_their_cause() {
    let t = start(EmulatorConfig::default()).await;
    // Nothing listens on the login endpoint.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = t.config();
    config.endpoints.login = format!("https://127.0.0.1:{port}");
    let options = TenantOptions {
        max_attempts: 2,
        ..fast_options()
    };
    let err = Tenant::connect_with(&config, options.clone())
        .unwrap()
        .check()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, TenantError::Auth { .. }), "{err:?}");
    assert!(text.to_lowercase().contains("connection refused"), "{text}");

    // The emulator's certificate is not trusted without its CA.
    let mut config = t.config();
    config.ca_file = None;
    let err = Tenant::connect_with(&config, options)
        .unwrap()
        .check()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("invalid peer certificate") && text.contains("UnknownIssuer"),
        "{text}"
    );
    assert!(
        !text.contains(&t.emu.tenant().client_secret.unwrap()),
        "{text}"
    );
}

#[tokio::test]
async fn graph_user_create_get_update_delete_restore() {
    let t = start(instant()).await;
    let tenant = connect(&t);
    let g = tenant.graph();
    let mut u = new_user("obrien");
    u.given_name = Some("Seán".into());
    u.on_premises_extension_attributes = Some(ExtensionAttributes {
        extension_attribute15: Some("ldap2exo:1".into()),
        ..Default::default()
    });
    let created = g
        .create_user(&u, &Secret::new(PASSWORD.into()))
        .await
        .unwrap();
    let id = created.id.clone().expect("id");

    let by_upn = g
        .get_user("obrien@example.edu", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_upn.id.as_deref(), Some(id.as_str()));
    assert_eq!(by_upn.given_name.as_deref(), Some("Seán"));
    assert_eq!(
        by_upn
            .on_premises_extension_attributes
            .as_ref()
            .and_then(|e| e.get("extensionAttribute15")),
        Some("ldap2exo:1")
    );
    let sel = g
        .get_user(&id, &["id", "displayName"])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sel.display_name.as_deref(), Some("User obrien"));
    assert_eq!(sel.given_name, None, "only selected properties");

    g.update_user(&id, &json!({"department": "Physics", "givenName": null}))
        .await
        .unwrap();
    let after = g.get_user(&id, &[]).await.unwrap().unwrap();
    assert_eq!(after.department.as_deref(), Some("Physics"));
    assert_eq!(after.given_name, None, "null clears");

    // The same UPN again is a conflict, not a second user.
    let err = g
        .create_user(&new_user("obrien"), &Secret::new(PASSWORD.into()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TenantError::Conflict { property, .. } if property == "userPrincipalName"),
        "{err:?}"
    );

    assert!(g.delete_user(&id).await.unwrap());
    assert!(g.get_user(&id, &[]).await.unwrap().is_none());
    assert!(
        !g.delete_user(&id).await.unwrap(),
        "a second delete finds nothing"
    );
    let restored = g.restore_user(&id).await.unwrap();
    assert_eq!(restored.id.as_deref(), Some(id.as_str()));
    assert!(g.get_user(&id, &[]).await.unwrap().is_some());
    let err = g
        .update_user(
            "00000000-0000-4000-8000-000000000404",
            &json!({"department": "x"}),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TenantError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn listing_follows_next_links_over_small_pages() {
    let t = start(EmulatorConfig::default()).await;
    for n in 0..23 {
        t.emu.add_user(seed_user(n));
    }
    let tenant = connect(&t);
    let users = tenant
        .graph()
        .list_users(&UserQuery {
            top: Some(5),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(users.len(), 23);
    assert!(users.iter().all(|u| u.user_principal_name.is_some()));
    assert_eq!(t.emu.counters().endpoint("GET /v1.0/users").requests, 5);
}

#[tokio::test]
async fn a_throttled_page_is_retried_not_taken_for_the_end() {
    let t = start(EmulatorConfig::default()).await;
    for n in 0..30 {
        t.emu.add_user(seed_user(n));
    }
    t.emu
        .set_faults(FaultConfig {
            // 3 pages per 150 ms (GET /users with $select costs 1 unit).
            graph_resource_budget: Some(Budget {
                limit: 3,
                window_ms: 150,
            }),
            fractional_retry_after: true,
            ..Default::default()
        })
        .unwrap();
    let tenant = connect(&t);
    let users = tenant
        .graph()
        .list_users(&UserQuery {
            top: Some(3),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(users.len(), 30, "every page arrived");
    let throttled = t.emu.counters().endpoint("GET /v1.0/users").throttled;
    assert!(throttled > 0, "the emulator throttled some pages");
    let stats = tenant.stats();
    assert_eq!(stats.graph.throttled, throttled);
    assert!(stats.graph.waited > Duration::ZERO);
}

#[tokio::test]
async fn advanced_filter_on_the_stamp_escapes_quotes() {
    let t = start(EmulatorConfig::default()).await;
    let tenant = connect(&t);
    let g = tenant.graph();
    for (nick, stamp) in [
        ("a1", "ldap2exo:O'Brien"),
        ("a2", "ldap2exo:OBrien"),
        ("a3", "ldap2exo:O''Brien"),
    ] {
        let mut u = new_user(nick);
        u.on_premises_extension_attributes = Some(ExtensionAttributes {
            extension_attribute15: Some(stamp.into()),
            ..Default::default()
        });
        g.create_user(&u, &Secret::new(PASSWORD.into()))
            .await
            .unwrap();
    }
    let found = g
        .find_by_stamp("extensionAttribute15", "ldap2exo:O'Brien")
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].user_principal_name.as_deref(),
        Some("a1@example.edu")
    );
    let found = g
        .find_by_stamp("extensionAttribute15", "ldap2exo:O''Brien")
        .await
        .unwrap();
    assert_eq!(
        found[0].user_principal_name.as_deref(),
        Some("a3@example.edu")
    );
    assert!(
        g.find_by_stamp("extensionAttribute15", "ldap2exo:nobody")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        g.find_by_stamp("extensionAttribute16", "x").await,
        Err(TenantError::Config(_))
    ));
    // Without the advanced-query headers the emulator (like Graph) refuses such a filter;
    // list_users adds them by itself.
    let all = g
        .list_users(&UserQuery {
            filter: Some(
                "startswith(onPremisesExtensionAttributes/extensionAttribute15,'ldap2exo:')".into(),
            ),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
}

#[tokio::test]
async fn batch_of_45_with_429s_inside_retries_each_after_its_retry_after() {
    let t = start(EmulatorConfig::default()).await;
    let ids: Vec<String> = (0..45).map(|n| t.emu.add_user(seed_user(n))).collect();
    t.emu
        .set_faults(FaultConfig {
            graph_write_budget: Some(Budget {
                limit: 12,
                window_ms: 200,
            }),
            fractional_retry_after: true,
            ..Default::default()
        })
        .unwrap();
    let tenant = connect(&t);
    let requests: Vec<BatchRequest> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            BatchRequest::new(format!("r{i}"), Method::PATCH, format!("/users/{id}"))
                .json(json!({"department": format!("dept {i}")}))
        })
        .collect();
    let responses = tenant.graph().batch(requests).await.unwrap();
    assert_eq!(responses.len(), 45);
    for (i, r) in responses.iter().enumerate() {
        assert_eq!(r.id, format!("r{i}"), "answers in request order");
        assert_eq!(r.status, 204, "{r:?}");
    }
    let c = t.emu.counters();
    let patch = c.endpoint("PATCH /v1.0/users/{id}");
    assert!(patch.throttled > 0, "the emulator throttled sub-requests");
    assert_eq!(patch.writes, 45, "each request ran exactly once");
    assert!(
        c.endpoint("POST /v1.0/$batch").requests >= 3,
        "at most 20 per batch"
    );
    assert_eq!(tenant.stats().graph.throttled, patch.throttled);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            t.emu.user(id).unwrap().department.as_deref(),
            Some(format!("dept {i}").as_str())
        );
    }
}

#[tokio::test]
async fn batch_depends_on_gives_424_and_retries_dependents_with_their_dependency() {
    let t = start(EmulatorConfig::default()).await;
    let ids: Vec<String> = (0..3).map(|n| t.emu.add_user(seed_user(n))).collect();
    let tenant = connect(&t);
    let g = tenant.graph();
    let patch = |rid: &str, id: &str| {
        BatchRequest::new(rid, Method::PATCH, format!("/users/{id}")).json(json!({"jobTitle": rid}))
    };
    // A failed dependency: its dependent is not run.
    let responses = g
        .batch(vec![
            patch("missing", "00000000-0000-4000-8000-000000000404"),
            patch("after-missing", &ids[0]).depends_on("missing"),
            BatchRequest::new("read", Method::GET, format!("/users/{}", ids[1])),
        ])
        .await
        .unwrap();
    assert_eq!(responses[0].status, 404);
    assert!(matches!(
        responses[0].error(),
        Some(TenantError::NotFound { .. })
    ));
    assert_eq!(responses[1].status, 424);
    assert!(matches!(
        responses[1].error(),
        Some(TenantError::FailedDependency { depends_on, .. }) if depends_on == "missing"
    ));
    assert_eq!(responses[2].status, 200);
    assert_eq!(t.emu.user(&ids[0]).unwrap().job_title, None);

    // A throttled dependency: the dependent's 424 is not final, both go again.
    t.emu
        .set_faults(FaultConfig {
            graph_write_budget: Some(Budget {
                limit: 1,
                window_ms: 100,
            }),
            fractional_retry_after: true,
            ..Default::default()
        })
        .unwrap();
    let responses = g
        .batch(vec![
            patch("w", &ids[0]),
            patch("x", &ids[1]),
            patch("y", &ids[2]).depends_on("x"),
        ])
        .await
        .unwrap();
    assert!(responses.iter().all(|r| r.status == 204), "{responses:?}");
    for (id, title) in ids.iter().zip(["w", "x", "y"]) {
        assert_eq!(t.emu.user(id).unwrap().job_title.as_deref(), Some(title));
    }
    assert!(t.emu.counters().total.throttled > 0);
}

#[tokio::test]
async fn assigning_a_licence_converts_a_mailuser_into_a_mailbox() {
    let t = start(instant()).await;
    let tenant = connect(&t);
    let (g, x) = (tenant.graph(), tenant.exchange());
    let created = x.new_mail_user(&mail_user("migrant")).await.unwrap();
    assert_eq!(created["RecipientTypeDetails"], "MailUser");
    let user = g
        .get_user("migrant@example.edu", &[])
        .await
        .unwrap()
        .unwrap();
    let id = user.id.unwrap();
    g.update_user(&id, &json!({"usageLocation": "DE"}))
        .await
        .unwrap();
    let licensed = g.assign_license(&id, "exchangestandard").await.unwrap();
    assert_eq!(licensed.id.as_deref(), Some(id.as_str()));

    let user = g.get_user(&id, &[]).await.unwrap().unwrap();
    let sku = SkuConfig::exchange_online_plan1(1).sku_id;
    assert!(
        user.assigned_licenses
            .unwrap()
            .iter()
            .any(|l| l.sku_id.eq_ignore_ascii_case(&sku))
    );
    let proxies = user.proxy_addresses.unwrap_or_default();
    assert!(
        proxies
            .iter()
            .any(|p| p.ends_with("@contoso.onmicrosoft.com")),
        "the mailbox got its MOERA: {proxies:?}"
    );
    let mailbox = x
        .get_mailbox("migrant@example.edu")
        .await
        .unwrap()
        .expect("mailbox");
    assert_eq!(mailbox["RecipientTypeDetails"], "UserMailbox");
    assert!(
        x.get_mail_user("migrant@example.edu")
            .await
            .unwrap()
            .is_none()
    );
    // Assigning by GUID again is harmless.
    g.assign_license(&id, &sku).await.unwrap();
}

#[tokio::test]
async fn running_out_of_licences_is_a_clear_error() {
    let mut cfg = instant();
    cfg.tenant.skus = vec![SkuConfig::exchange_online_plan1(1)];
    let t = start(cfg).await;
    let tenant = connect(&t);
    let g = tenant.graph();
    let mut ids = Vec::new();
    for nick in ["lic1", "lic2"] {
        let mut u = new_user(nick);
        u.usage_location = Some("DE".into());
        ids.push(
            g.create_user(&u, &Secret::new(PASSWORD.into()))
                .await
                .unwrap()
                .id
                .unwrap(),
        );
    }
    g.assign_license(&ids[0], "EXCHANGESTANDARD").await.unwrap();
    let err = g
        .assign_license(&ids[1], "EXCHANGESTANDARD")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TenantError::NoLicensesLeft { sku } if sku == "EXCHANGESTANDARD"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("no EXCHANGESTANDARD licences left"),
        "{err}"
    );
    let err = g.assign_license(&ids[1], "SPE_E5").await.unwrap_err();
    assert!(
        matches!(&err, TenantError::UnknownSku { known, .. } if known.contains("EXCHANGESTANDARD")),
        "{err:?}"
    );
    let skus = g.subscribed_skus().await.unwrap();
    assert_eq!(skus[0].available(), 0);
}

#[tokio::test]
async fn ten_percent_503s_every_operation_still_succeeds_once() {
    let t = start(instant()).await;
    let seeded: Vec<String> = (0..10).map(|n| t.emu.add_user(seed_user(n))).collect();
    t.emu
        .set_faults(FaultConfig {
            error_rate: 0.1,
            error_statuses: vec![503],
            injected_retry_after_secs: 1,
            seed: 7,
            ..Default::default()
        })
        .unwrap();
    let tenant = connect(&t);
    let (g, x) = (tenant.graph(), tenant.exchange());
    let mut created = Vec::new();
    for n in 0..8 {
        let u = g
            .create_user(&new_user(&format!("f{n}")), &Secret::new(PASSWORD.into()))
            .await
            .unwrap();
        created.push(u.id.unwrap());
    }
    for id in &created {
        g.update_user(id, &json!({"department": "Chemistry"}))
            .await
            .unwrap();
        assert!(g.get_user(id, &[]).await.unwrap().is_some());
    }
    let users = g
        .list_users(&UserQuery {
            top: Some(4),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(users.len(), 18);
    let batch: Vec<BatchRequest> = seeded
        .iter()
        .enumerate()
        .map(|(i, id)| {
            BatchRequest::new(format!("b{i}"), Method::PATCH, format!("/users/{id}"))
                .json(json!({"officeLocation": "B1"}))
        })
        .collect();
    assert!(
        g.batch(batch)
            .await
            .unwrap()
            .iter()
            .all(|r| r.status == 204)
    );
    for n in 0..4 {
        x.new_mail_user(&mail_user(&format!("m{n}"))).await.unwrap();
    }
    assert_eq!(x.get_recipients(None, None).await.unwrap().len(), 4);
    x.set_mail_user("m0", json!({"CustomAttribute15": "ldap2exo:m0"}))
        .await
        .unwrap();

    let c = t.emu.counters();
    assert!(c.total.faults > 0, "the emulator injected 503s");
    let stats = tenant.stats();
    assert_eq!(
        stats.graph.server_errors + stats.exchange.server_errors,
        c.total.faults
    );
    // Nothing happened twice: 8 creates, 4 mail users, 10 + 8 patches.
    assert_eq!(c.endpoint("POST /v1.0/users").writes, 8);
    assert_eq!(c.endpoint("EXO New-MailUser").writes, 4);
    assert_eq!(c.endpoint("PATCH /v1.0/users/{id}").writes, 18);
    assert_eq!(t.emu.state().users.len(), 22);
}

#[tokio::test]
async fn an_expired_token_mid_run_is_replaced_once() {
    let t = start(EmulatorConfig::default()).await;
    let id = t.emu.add_user(seed_user(1));
    let tenant = connect(&t);
    let token_requests = || {
        t.emu
            .counters()
            .endpoint("POST /{tenant}/oauth2/v2.0/token")
            .requests
    };
    tenant.check().await.unwrap();
    assert_eq!(token_requests(), 2);
    t.emu.expire_tokens();
    // Several requests find the token refused at once; one new credential serves them all.
    let g = tenant.graph();
    let reads = (0..5).map(|_| g.get_user(&id, &[]));
    for r in futures_util::future::join_all(reads).await {
        assert!(r.unwrap().is_some());
    }
    assert!(
        tenant
            .exchange()
            .get_accepted_domains()
            .await
            .unwrap()
            .len()
            >= 2
    );
    // Graph's refresh plus the Exchange token of the new credential.
    assert_eq!(token_requests(), 4);
    let stats = tenant.stats();
    assert!(stats.graph.token_refreshes >= 1);
    assert_eq!(stats.exchange.token_refreshes, 0);
}

#[tokio::test]
async fn a_dropped_connection_is_retried_only_when_safe() {
    let t = start(instant()).await;
    let id = t.emu.add_user(seed_user(1));
    let tenant = connect(&t);
    tenant.check().await.unwrap();
    t.emu
        .set_faults(FaultConfig {
            drop_next: 1,
            ..Default::default()
        })
        .unwrap();
    let u = tenant.graph().get_user(&id, &[]).await.unwrap();
    assert!(u.is_some(), "the GET was sent again");
    assert_eq!(t.emu.counters().total.dropped, 1);
    assert_eq!(tenant.stats().graph.transport_errors, 1);

    // A cmdlet that is not safe to repeat is not sent again: it did run, and the caller
    // must find out (here: it exists). The outcome is ambiguous, not a transport failure.
    t.emu
        .set_faults(FaultConfig {
            drop_next: 1,
            ..Default::default()
        })
        .unwrap();
    let err = tenant
        .exchange()
        .invoke(
            "New-MailUser",
            json!({"Name": "dropped", "ExternalEmailAddress": "dropped@onprem.example.org"}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TenantError::Ambiguous { what, .. } if what == "New-MailUser -Name dropped"),
        "{err:?}"
    );
    assert!(err.is_ambiguous());
    assert_eq!(t.emu.counters().endpoint("EXO New-MailUser").requests, 1);
    assert!(
        tenant
            .exchange()
            .get_mail_user("dropped")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn exchange_address_conflicts_are_address_in_use() {
    let t = start(instant()).await;
    let tenant = connect(&t);
    let x = tenant.exchange();
    x.new_mail_user(&mail_user("first")).await.unwrap();
    x.new_mail_user(&mail_user("second")).await.unwrap();
    // (PrimarySmtpAddress is on-premises only and no longer sent: clash on the UPN.)
    let mut clash = mail_user("third");
    clash.user_principal_name = Some("first@example.edu".into());
    let err = x.new_mail_user(&clash).await.unwrap_err();
    assert!(
        matches!(&err, TenantError::AddressInUse { address, .. } if address == "first@example.edu"),
        "{err:?}"
    );
    let err = x
        .set_mail_user(
            "second",
            json!({"EmailAddresses": hashtable(&["smtp:first@example.edu".into()], &[])}),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TenantError::AddressInUse { .. }), "{err:?}");
    // Adding a free alias works; the hashtable is understood.
    x.set_mail_user(
        "second",
        json!({"EmailAddresses": hashtable(&["smtp:second.alias@example.edu".into()], &[])}),
    )
    .await
    .unwrap();
    let m = x.get_mail_user("second").await.unwrap().unwrap();
    assert!(m.to_string().contains("second.alias@example.edu"), "{m}");
    let err = x.set_mail_user("nobody", json!({})).await.unwrap_err();
    assert!(matches!(err, TenantError::NotFound { .. }), "{err:?}");
    assert!(!x.remove_mail_user("nobody").await.unwrap());
    assert!(x.remove_mail_user("first").await.unwrap());
    let err = x.invoke("Get-Nothing", json!({})).await.unwrap_err();
    assert!(
        matches!(&err, TenantError::Refused { message, .. } if message.contains("Get-Nothing")),
        "{err:?}"
    );
}

#[tokio::test]
async fn exchange_results_are_paged_through_next_links() {
    let t = start(EmulatorConfig::default()).await;
    for n in 0..1005 {
        t.emu.add_user(User {
            recipient_type_details: Some(RecipientKind::MailUser),
            proxy_addresses: vec![format!("SMTP:seed{n:04}@example.edu")],
            external_email_address: Some(format!("seed{n:04}@onprem.example.org")),
            ..seed_user(n)
        });
    }
    let tenant = connect(&t);
    let all = tenant.exchange().get_recipients(None, None).await.unwrap();
    assert_eq!(all.len(), 1005);
    assert_eq!(t.emu.counters().endpoint("EXO Get-Recipient").requests, 2);
    let some = tenant
        .exchange()
        .get_recipients(Some("Alias -like 'seed000*'"), Some(5))
        .await
        .unwrap();
    assert_eq!(some.len(), 5);
}

#[tokio::test]
async fn exchange_throttling_is_obeyed() {
    let t = start(EmulatorConfig::default()).await;
    t.emu
        .set_faults(FaultConfig {
            exchange_request_budget: Some(Budget {
                limit: 2,
                window_ms: 150,
            }),
            fractional_retry_after: true,
            ..Default::default()
        })
        .unwrap();
    let tenant = connect(&t);
    let x = tenant.exchange();
    let calls = (0..8).map(|_| x.get_accepted_domains());
    for r in futures_util::future::join_all(calls).await {
        assert!(!r.unwrap().is_empty());
    }
    assert!(
        t.emu
            .counters()
            .endpoint("EXO Get-AcceptedDomain")
            .throttled
            > 0
    );
    assert!(tenant.stats().exchange.concurrency <= 4);
}

#[tokio::test]
async fn delta_follows_changes_and_reports_an_expired_token() {
    let t = start(EmulatorConfig::default()).await;
    for n in 0..5 {
        t.emu.add_user(seed_user(n));
    }
    let tenant = connect(&t);
    let g = tenant.graph();
    let first = g
        .users_delta(&["id", "userPrincipalName", "displayName"], None)
        .await
        .unwrap();
    assert_eq!(first.changed.len(), 5);
    assert!(first.removed.is_empty());
    let new = g
        .create_user(&new_user("late"), &Secret::new(PASSWORD.into()))
        .await
        .unwrap();
    let gone = first.changed[0].id.clone().unwrap();
    g.delete_user(&gone).await.unwrap();
    let second = g.users_delta(&[], Some(&first.delta_link)).await.unwrap();
    assert!(second.changed.iter().any(|u| u.id == new.id));
    assert_eq!(second.removed.len(), 1);
    assert_eq!(second.removed[0].id, gone);
    assert_eq!(
        second.removed[0].reason, "changed",
        "soft-deleted, restorable"
    );
    t.emu.expire_delta_tokens();
    let err = g
        .users_delta(&[], Some(&second.delta_link))
        .await
        .unwrap_err();
    assert!(matches!(err, TenantError::DeltaExpired), "{err:?}");
    // A link issued right after the expiry (the same second) is good: the full read that
    // follows an expiry must not be told again that its new link expired.
    let fresh = g.users_delta(&[], None).await.unwrap();
    g.users_delta(&[], Some(&fresh.delta_link)).await.unwrap();

    // The other documented form: 400 syncStateNotFound.
    let t = start(EmulatorConfig {
        delta_expired_status: 400,
        ..EmulatorConfig::default()
    })
    .await;
    let tenant = connect(&t);
    let round = tenant.graph().users_delta(&[], None).await.unwrap();
    t.emu.expire_delta_tokens();
    let err = tenant
        .graph()
        .users_delta(&[], Some(&round.delta_link))
        .await
        .unwrap_err();
    assert!(matches!(err, TenantError::DeltaExpired), "{err:?}");
}

#[tokio::test]
async fn exchange_lists_every_recipient_and_the_soft_deleted_mail_users() {
    let t = start(instant()).await;
    let tenant = connect(&t);
    let x = tenant.exchange();
    x.new_mail_user(&mail_user("kept")).await.unwrap();
    x.new_mail_user(&mail_user("removed")).await.unwrap();
    assert!(x.remove_mail_user("removed").await.unwrap());
    let all = x
        .list_recipients(&["Name", "EmailAddresses"])
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    // Only the properties asked for are kept, each as Exchange sent it.
    let kept: Vec<&String> = all[0].as_object().unwrap().keys().collect();
    assert_eq!(kept, ["EmailAddresses", "Name"], "{all:?}");
    assert_eq!(all[0]["Name"], "kept");
    let deleted = x.list_soft_deleted_mail_users(&["Name"]).await.unwrap();
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(deleted[0], json!({"Name": "removed"}));
}

#[tokio::test]
async fn update_users_goes_across_people_in_batches_and_answers_each_like_a_single_request() {
    let t = start(EmulatorConfig::default()).await;
    let ids: Vec<String> = (0..25).map(|n| t.emu.add_user(seed_user(n))).collect();
    let tenant = connect(&t);
    let missing = "00000000-0000-4000-8000-00000000dead".to_owned();
    let mut updates: Vec<(String, serde_json::Value)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), json!({"department": format!("dept {i}")})))
        .collect();
    updates.insert(3, (missing, json!({"department": "nobody"})));
    let results = tenant.graph().update_users(&updates).await.unwrap();
    assert_eq!(results.len(), 26, "one answer per update, in order");
    for (i, r) in results.iter().enumerate() {
        if i == 3 {
            assert!(
                matches!(r, Err(TenantError::NotFound { .. })),
                "an unknown user is NotFound, as for a single PATCH: {r:?}"
            );
        } else {
            assert!(r.is_ok(), "{i}: {r:?}");
        }
    }
    let c = t.emu.counters();
    assert_eq!(c.endpoint("POST /v1.0/$batch").requests, 2, "20 per batch");
    let patch = c.endpoint("PATCH /v1.0/users/{id}");
    assert_eq!(patch.batched, 26, "every PATCH inside a batch");
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            t.emu.user(id).unwrap().department.as_deref(),
            Some(format!("dept {i}").as_str())
        );
    }
    // One update alone is a plain request.
    let one = tenant
        .graph()
        .update_users(&[(ids[0].clone(), json!({"department": "alone"}))])
        .await
        .unwrap();
    assert!(one[0].is_ok());
    assert_eq!(t.emu.counters().endpoint("POST /v1.0/$batch").requests, 2);
}
