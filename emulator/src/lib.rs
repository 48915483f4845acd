//! ldap2exo-emulator: an HTTPS emulator of the parts of Microsoft Entra ID (token endpoint),
//! Microsoft Graph v1.0 and the Exchange Online admin API (`InvokeCommand`) that ldap2exo
//! uses. Stateful (one in-memory tenant), strict (refuses what the real services refuse, with
//! their error shapes), with fault injection and inspection for tests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ldap2exo_emulator::EmulatorError> {
//! use ldap2exo_emulator::{Emulator, EmulatorConfig};
//! let emu = Emulator::start(EmulatorConfig::default()).await?;
//! let _trust_this = emu.ca_pem();
//! let _token_url = emu.token_url();      // {base}/{tenant}/oauth2/v2.0/token
//! let _graph = emu.graph_url();          // {base}/v1.0
//! let _exo = emu.exchange_url();         // {base}/adminapi/beta/{tenant}/InvokeCommand
//! assert_eq!(emu.counters().writes(), 0);
//! # Ok(()) }
//! ```
//!
//! Module map: [`config`] (what to start, including [`Realism`]: strict by default,
//! [`EmulatorConfig::instant`] for the old timing), [`store`] (the one object model both APIs
//! share), `propagation` (how late each API sees the other's writes),
//! `auth` (token endpoint; its [`testing`] helpers are public), `graph` and `exchange` (the two APIs), [`faults`] (limits,
//! injected failures, counters), `admin` (the `/_emulator` side door), `server` and `tls`
//! (HTTPS).

mod admin;
mod auth;
pub mod config;
mod exchange;
pub mod faults;
mod graph;
mod propagation;
mod server;
mod shared;
pub mod store;
mod tls;
mod util;
mod wire;

pub use auth::testing;
pub use config::{
    ConfigError, DomainConfig, DomainType, EmulatorConfig, Realism, Seed, ServicePlan, SkuConfig,
    TenantConfig,
};
pub use faults::{Budget, Counters, EndpointCounters, FaultAction, FaultConfig, FaultRule};
pub use store::{GroupLicense, MailObject, MailObjectKind, Origin, RecipientKind, StateDump, User};

use shared::{Settings, Shared, lock};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    #[error(transparent)]
    Faults(#[from] faults::FaultError),
}

/// A running emulator. Dropping it stops the server.
pub struct Emulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Generates the CA and server certificate, binds the listener, loads the seed and starts
    /// serving on the current tokio runtime.
    pub async fn start(config: EmulatorConfig) -> Result<Emulator, EmulatorError> {
        let mut tenant = config.tenant.clone();
        if let Some(t) = &config.seed.tenant {
            tenant = t.clone();
        }
        tenant.validate()?;
        config.faults.validate().map_err(ConfigError::from)?;
        let material = tls::generate(&config.extra_hostnames)?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| EmulatorError::Listen(config.listen, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| EmulatorError::Listen(config.listen, e))?;
        let host = if addr.ip().is_unspecified() {
            "localhost".to_string()
        } else if addr.is_ipv6() {
            format!("[{}]", addr.ip())
        } else {
            addr.ip().to_string()
        };
        let mut store = store::Store::new(tenant, config.id_seed);
        store.realism = config.realism.clone();
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            exchange_in_flight: std::sync::atomic::AtomicUsize::new(0),
            requests_in_flight: std::sync::atomic::AtomicUsize::new(0),
            used_next_links: Mutex::new(std::collections::HashSet::new()),
            tokens: Mutex::new(auth::TokenTable::default()),
            faults: Mutex::new(faults::FaultState::new(config.faults.clone())),
            counters: Mutex::new(Counters::default()),
            request_ids: Mutex::new(util::Prng::new(config.id_seed ^ 0x5eed)),
            settings: Settings {
                token_lifetime: config.token_lifetime,
                delta_token_lifetime: config.delta_token_lifetime,
                delta_expired_status: config.delta_expired_status,
                advanced_query_lag: config.advanced_query_lag,
                realism: config.realism.clone(),
            },
            base_url: format!("https://{host}:{}", addr.port()),
            ca_pem: material.ca_pem,
            state_dump_path: config.state_dump_path.clone(),
        });
        admin::apply_seed(
            &shared,
            Seed {
                tenant: None,
                ..config.seed
            },
        )?;
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(server::serve(
            listener,
            material.server_config,
            shared.clone(),
            rx,
        ));
        Ok(Emulator {
            shared,
            addr,
            stop,
            task: Some(task),
        })
    }

    /// `https://127.0.0.1:PORT` (or `https://localhost:PORT` when listening on all addresses).
    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// PEM of the CA that signed the server certificate: what clients must trust.
    pub fn ca_pem(&self) -> &str {
        &self.shared.ca_pem
    }

    pub fn tenant(&self) -> TenantConfig {
        lock(&self.shared.store).tenant.clone()
    }

    /// The Entra authority host to configure (`{base}`); tokens are at [`Self::token_url`].
    pub fn login_url(&self) -> String {
        self.shared.base_url.clone()
    }

    pub fn token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.shared.base_url,
            self.tenant().tenant_id
        )
    }

    /// Graph root including the version: `{base}/v1.0`.
    pub fn graph_url(&self) -> String {
        format!("{}/v1.0", self.shared.base_url)
    }

    pub fn exchange_url(&self) -> String {
        format!(
            "{}/adminapi/beta/{}/InvokeCommand",
            self.shared.base_url,
            self.tenant().tenant_id
        )
    }

    /// Loads seed objects; answers the ids of the seeded users in order.
    pub fn seed(&self, seed: Seed) -> Result<Vec<String>, EmulatorError> {
        Ok(admin::apply_seed(&self.shared, seed)?)
    }

    /// Adds one user (unvalidated, like a seed); answers its id.
    pub fn add_user(&self, user: User) -> String {
        lock(&self.shared.store).insert(user)
    }

    /// A user by object id or UPN, soft-deleted ones included.
    pub fn user(&self, id_or_upn: &str) -> Option<User> {
        let s = lock(&self.shared.store);
        let k = id_or_upn.to_ascii_lowercase();
        s.users.get(&k).cloned().or_else(|| {
            s.users
                .values()
                .find(|u| u.user_principal_name.eq_ignore_ascii_case(&k))
                .cloned()
        })
    }

    /// Test side door: the soft-deleted user `id` ages past the 30-day retention and is
    /// purged, as Microsoft does after 30 days ("Restore deleted item (directory object)": "A
    /// recently deleted item remains available for up to 30 days. After 30 days, the item is
    /// permanently deleted"). The emulator keeps real time, so a test cannot wait for it.
    /// Answers whether such a soft-deleted user was there.
    pub fn expire_deleted(&self, id: &str) -> bool {
        let mut s = lock(&self.shared.store);
        let k = id.to_ascii_lowercase();
        let Some(u) = s.users.get_mut(&k).filter(|u| u.is_deleted()) else {
            return false;
        };
        u.deleted_unix = Some(0);
        s.purge_expired();
        true
    }

    /// Test side door: every migration batch CSV received, as `(batch name, CSV text)`. The
    /// only place the emulator keeps the passwords of those CSVs.
    pub fn migration_csvs(&self) -> Vec<(String, String)> {
        lock(&self.shared.store).migration.received.clone()
    }

    /// How long a started migration batch syncs before it is `Synced` (default 1.5 s).
    pub fn set_migration_sync_ms(&self, ms: u64) {
        lock(&self.shared.store).migration.sync_delay_ms = ms;
    }

    /// The whole tenant.
    pub fn state(&self) -> StateDump {
        lock(&self.shared.store).dump()
    }

    /// Waits until every time-driven effect of the writes so far (mailbox provisioning,
    /// propagation between Graph and Exchange, the 404 window of new objects) has happened,
    /// so that the next read of either API shows the tenant as it stays.
    pub fn wait_settled(&self) {
        // What is due happens at the next request (`settle`); a conversion done then is a
        // write that reaches Graph only later.
        let due = || {
            let mut store = lock(&self.shared.store);
            store.settle();
            store.settled_by_ms()
        };
        while let Some(t) = due() {
            let wait = t.saturating_sub(store::now_millis()) + 20;
            std::thread::sleep(std::time::Duration::from_millis(wait));
        }
    }

    pub fn counters(&self) -> Counters {
        lock(&self.shared.counters).clone()
    }

    /// Waits until no request is being handled and none has arrived for 100 ms, up to
    /// `timeout`; `false` when it is still busy then. After a client was killed, what it had
    /// already sent is still executed (a request in the emulated latency, a cmdlet in its
    /// slot): read the counters after this, not before.
    pub fn wait_idle(&self, timeout: std::time::Duration) -> bool {
        use std::sync::atomic::Ordering;
        let deadline = std::time::Instant::now() + timeout;
        let mut seen = (u64::MAX, 0u32);
        while std::time::Instant::now() < deadline {
            let busy = self.shared.requests_in_flight.load(Ordering::SeqCst);
            let requests = lock(&self.shared.counters).total.requests;
            if busy == 0 && requests == seen.0 {
                seen.1 += 1;
                if seen.1 >= 5 {
                    return true;
                }
            } else {
                seen = (requests, 0);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    }

    pub fn reset_counters(&self) {
        *lock(&self.shared.counters) = Counters::default();
    }

    pub fn faults(&self) -> FaultConfig {
        lock(&self.shared.faults).config.clone()
    }

    /// Replaces the fault configuration (budget windows and PRNG restart).
    pub fn set_faults(&self, faults: FaultConfig) -> Result<(), EmulatorError> {
        Ok(admin::set_faults(&self.shared, faults)?)
    }

    /// Every access token issued so far is expired from now on.
    pub fn expire_tokens(&self) {
        lock(&self.shared.tokens).expire_all();
    }

    /// Every delta token issued so far is expired from now on.
    pub fn expire_delta_tokens(&self) {
        admin::expire_delta_tokens(&self.shared);
    }

    /// Writes the state as JSON to `path`.
    pub fn dump_state(&self, path: &Path) -> Result<(), EmulatorError> {
        Ok(admin::dump_state(&self.shared, path)?)
    }

    /// Writes the state to the configured dump file, if any (the binary's exit path).
    pub fn dump_state_if_configured(&self) -> Result<Option<std::path::PathBuf>, EmulatorError> {
        match self.shared.state_dump_path.clone() {
            Some(p) => {
                self.dump_state(&p)?;
                Ok(Some(p))
            }
            None => Ok(None),
        }
    }

    /// Stops the server and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
