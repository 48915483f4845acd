//! Shared helpers for the emulator's integration tests: start an emulator on a free port,
//! a reqwest client trusting its CA, tokens, and small Graph / Exchange call wrappers.
#![allow(dead_code)]

use ldap2exo_emulator::{Emulator, EmulatorConfig, Seed, User};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
pub const EXO_SCOPE: &str = "https://outlook.office365.com/.default";

pub struct Env {
    pub emu: Emulator,
    pub http: Client,
    pub graph_token: String,
    pub exo_token: String,
}

pub fn client_for(emu: &Emulator) -> Client {
    let ca = reqwest::Certificate::from_pem(emu.ca_pem().as_bytes()).expect("CA PEM");
    Client::builder()
        .tls_certs_only([ca])
        .build()
        .expect("client")
}

/// Strict mode (the default): propagation delays, 404 windows, slow provisioning.
pub async fn start() -> Env {
    start_with(EmulatorConfig::default()).await
}

/// Instant mode: one consistent store without delays, for tests about other things.
pub async fn start_instant() -> Env {
    start_with(EmulatorConfig::instant()).await
}

/// Strict mode with these realism knobs.
pub async fn start_realism(r: ldap2exo_emulator::Realism) -> Env {
    start_with(EmulatorConfig {
        realism: r,
        ..EmulatorConfig::default()
    })
    .await
}

pub async fn start_with(cfg: EmulatorConfig) -> Env {
    let emu = Emulator::start(cfg).await.expect("emulator starts");
    let http = client_for(&emu);
    let graph_token = token(&http, &emu, GRAPH_SCOPE).await;
    let exo_token = token(&http, &emu, EXO_SCOPE).await;
    Env {
        emu,
        http,
        graph_token,
        exo_token,
    }
}

pub async fn token_response(
    http: &Client,
    emu: &Emulator,
    form: &[(&str, &str)],
) -> (StatusCode, Value) {
    let r = http
        .post(emu.token_url())
        .form(form)
        .send()
        .await
        .expect("token request");
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

pub async fn token(http: &Client, emu: &Emulator, scope: &str) -> String {
    let t = emu.tenant();
    let (s, v) = token_response(
        http,
        emu,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &t.client_id),
            ("client_secret", t.client_secret.as_deref().unwrap_or("")),
            ("scope", scope),
        ],
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Env {
    pub fn graph(&self, path: &str) -> String {
        format!("{}{}", self.emu.graph_url(), path)
    }

    pub async fn send(&self, rb: reqwest::RequestBuilder) -> Answer {
        let r = rb.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        // Non-JSON bodies (Exchange's plain-text 429, NUL-byte 403) come back as a string.
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(
            self.http
                .get(self.graph(path))
                .bearer_auth(&self.graph_token),
        )
        .await
    }

    pub async fn get_url(&self, url: &str) -> Answer {
        self.send(self.http.get(url).bearer_auth(&self.graph_token))
            .await
    }

    pub async fn get_eventual(&self, path: &str) -> Answer {
        self.send(
            self.http
                .get(self.graph(path))
                .bearer_auth(&self.graph_token)
                .header("ConsistencyLevel", "eventual"),
        )
        .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(
            self.http
                .post(self.graph(path))
                .bearer_auth(&self.graph_token)
                .json(&body),
        )
        .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Answer {
        self.send(
            self.http
                .patch(self.graph(path))
                .bearer_auth(&self.graph_token)
                .json(&body),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send(
            self.http
                .delete(self.graph(path))
                .bearer_auth(&self.graph_token),
        )
        .await
    }

    /// Runs a cmdlet through InvokeCommand.
    /// Seeds `users` (nothing else); answers their ids.
    pub fn seed_users(&self, users: Vec<User>) -> Vec<String> {
        self.emu
            .seed(Seed {
                users,
                ..Default::default()
            })
            .expect("seed")
    }

    pub async fn exo(&self, cmdlet: &str, params: Value) -> Answer {
        self.exo_at(&self.emu.exchange_url(), cmdlet, params, None)
            .await
    }

    pub async fn exo_at(
        &self,
        url: &str,
        cmdlet: &str,
        params: Value,
        page_size: Option<usize>,
    ) -> Answer {
        let mut rb = self
            .http
            .post(url)
            .bearer_auth(&self.exo_token)
            .header("X-ResponseFormat", "json")
            .header(
                "X-AnchorMailbox",
                format!(
                    "APP:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{}",
                    self.emu.tenant().tenant_id
                ),
            )
            .json(&json!({"CmdletInput": {"CmdletName": cmdlet, "Parameters": params}}));
        if let Some(n) = page_size {
            rb = rb.header("Prefer", format!("odata.maxpagesize={n}"));
        }
        self.send(rb).await
    }

    /// Creates a Graph user with valid defaults plus `extra`; answers its id.
    pub async fn create_user(&self, nick: &str, extra: Value) -> String {
        let mut body = json!({
            "accountEnabled": true,
            "displayName": format!("User {nick}"),
            "mailNickname": nick,
            "userPrincipalName": format!("{nick}@example.edu"),
            "passwordProfile": {"password": "Secr3t-Passw0rd!", "forceChangePasswordNextSignIn": false},
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            body[k] = v;
        }
        let a = self.post("/users", body).await;
        assert_eq!(a.status, 201, "{}", a.body);
        a.body["id"].as_str().unwrap().to_string()
    }
}

/// The `error.code` of a Graph error body.
pub fn code(a: &Answer) -> &str {
    a.body["error"]["code"].as_str().unwrap_or("")
}

pub fn message(a: &Answer) -> &str {
    a.body["error"]["message"].as_str().unwrap_or("")
}

/// `error.details[0].message` of an Exchange error (`Ex<hex>|Type|text`), or "".
pub fn exo_detail(a: &Answer) -> &str {
    a.body["error"]["details"][0]["message"]
        .as_str()
        .unwrap_or("")
}

/// Polls `f` every 100 ms until it answers true or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if f().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}
