//! The tenant emulator for ldap2exo's own tests: starts one in-process, writes its CA to a
//! temporary file and builds the `[tenant]` configuration pointing at it, so the code under
//! test goes through the same configuration path (endpoints, `ca_file`, credential) as in
//! production, over real HTTPS.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ldap2exo::config::TenantConfig;
use ldap2exo::secret::Secret;
use ldap2exo::tenant::{Concurrency, TenantOptions};
use ldap2exo_emulator::{Emulator, EmulatorConfig, User};

pub struct TestTenant {
    pub emu: Emulator,
    pub dir: tempfile::TempDir,
}

/// Starts an emulator with `cfg` on a free port.
pub async fn start(cfg: EmulatorConfig) -> TestTenant {
    let emu = Emulator::start(cfg).await.expect("emulator starts");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ca.pem"), emu.ca_pem()).expect("write CA");
    TestTenant { emu, dir }
}

impl TestTenant {
    /// `[tenant]` for this emulator, without a credential.
    pub fn config_without_credential(&self) -> TenantConfig {
        let t = self.emu.tenant();
        let base = self.emu.base_url();
        let text = format!(
            r#"
tenant_id = "{}"
client_id = "{}"
accepted_domains = ["example.edu"]
onmicrosoft_domain = "{}"
routing_domain = "{}"
upn_domain = "example.edu"
ca_file = {:?}
[endpoints]
login = "{base}"
graph = "{base}"
exchange = "{base}"
"#,
            t.tenant_id,
            t.client_id,
            t.initial_domain(),
            t.mail_domain(),
            self.dir.path().join("ca.pem").display().to_string(),
        );
        toml::from_str(&text).expect("tenant config")
    }

    /// `[tenant]` with the emulator's client secret.
    pub fn config(&self) -> TenantConfig {
        let mut c = self.config_without_credential();
        c.client_secret = self.emu.tenant().client_secret.map(Secret::new);
        c
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

/// Options with short backoff steps, so tests wait only what `Retry-After` demands.
pub fn fast_options() -> TenantOptions {
    TenantOptions {
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        max_attempts: 10,
        graph_concurrency: Concurrency {
            initial: 4,
            min: 1,
            max: 8,
        },
        ..TenantOptions::default()
    }
}

/// A user as a seed (not counted as a write): a plain Entra user.
pub fn seed_user(n: usize) -> User {
    User {
        user_principal_name: format!("seed{n:04}@example.edu"),
        mail_nickname: format!("seed{n:04}"),
        display_name: Some(format!("Seed {n}")),
        ..User::default()
    }
}

/// A certificate and its key in one PEM file, and the certificate alone (what is uploaded
/// to the app registration).
pub fn certificate_pem(name: &str) -> (String, String) {
    use base64::Engine as _;
    let (cert, key_der) = ldap2exo_emulator::testing::client_certificate(name).expect("cert");
    let b64 = base64::engine::general_purpose::STANDARD.encode(key_der);
    let mut key = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        key.push_str(std::str::from_utf8(line).unwrap());
        key.push('\n');
    }
    key.push_str("-----END PRIVATE KEY-----\n");
    (format!("{cert}{key}"), cert)
}

/// Everything `tracing` writes while the guard lives (on this thread, which is the whole
/// test under `#[tokio::test]`'s current-thread runtime).
pub struct LogCapture {
    buf: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    pub fn start() -> Self {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Writer(b.clone()))
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        // Tests run in parallel threads. A callsite another thread registers while this
        // dispatcher is being registered can cache "nobody listens" and then stay silent
        // here, so this capture missed log lines now and then. Rebuilding the interest cache
        // once the dispatcher is in place closes that window.
        tracing::callsite::rebuild_interest_cache();
        Self { buf, _guard: guard }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }
}
