//! Configuration: a TOML file, overridden by `LDAP2EXO__SECTION__KEY` environment variables.
//!
//! Layering is file, then environment; secrets never come from the file (only from a
//! `*_file` path or the environment), and every unknown key is an error that names it, so a
//! typo cannot silently fall back to a default. The example file `config/ldap2exo.example.toml`
//! documents every key.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ids::is_domain;
use crate::secret::Secret;

/// Environment variables with this prefix override file keys: `LDAP2EXO__LDAP__PAGE_SIZE`.
pub const ENV_PREFIX: &str = "LDAP2EXO__";

/// Where the configuration lives when neither `--config` nor `LDAP2EXO_CONFIG` says.
pub const DEFAULT_PATH: &str = "/etc/ldap2exo/ldap2exo.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("configuration key `{key}`: {message}")]
    Key { key: String, message: String },
    #[error(
        "configuration key `{key}` holds a secret and is not read from the file: use `{key}_file` or the environment variable {env}"
    )]
    SecretInFile { key: String, env: String },
    #[error("cannot read {key} from {path}: {source}")]
    SecretFile {
        key: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub ldap: LdapConfig,
    pub tenant: TenantConfig,
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub safety: SafetyConfig,
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default)]
    pub notify: NotifyConfig,
    /// `[connectors]`: the mail-flow connectors of the Linux hybrid; absent, `connectors plan`
    /// and `apply` refuse (exit 2) and `connectors audit` checks without a desired shape.
    #[serde(default)]
    pub connectors: Option<ConnectorsConfig>,
    /// `[migration]`: absent unless the site migrates mailboxes by IMAP.
    #[serde(default)]
    pub migration: Option<MigrationConfig>,
}

/// `[connectors]`: what `ldap2exo connectors plan|apply` build (see `crate::connectors`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorsConfig {
    /// Where Exchange Online delivers mail for on-prem people (a host name or IPv4 address).
    pub smart_host: Option<String>,
    /// The name (subject or SAN, a domain, `*.` allowed) in the certificate the Linux side
    /// presents to Exchange Online.
    pub certificate_name: Option<String>,
    /// The on-prem public addresses (IPv4, CIDR or `a-b` range) for enhanced filtering
    /// (`EFSkipIPs`); empty means `EFSkipLastIP`.
    #[serde(default)]
    pub on_prem_public_ips: Vec<String>,
    /// Also build the outbound Partner connector for `*` to the smart host.
    #[serde(default)]
    pub route_internet_via_on_prem: bool,
    /// Also build the inbound Partner connector that refuses mail bypassing the Linux side.
    /// Off by default: closed before the Linux side delivers with its certificate (the
    /// Postfix side installed) and the MX points at it, it refuses that very mail.
    #[serde(default)]
    pub close_back_door: bool,
    /// Connectors ldap2exo creates, and may change, have names starting with it.
    #[serde(default = "default_name_prefix")]
    pub name_prefix: String,
}

fn default_name_prefix() -> String {
    "ldap2exo".into()
}

impl ConnectorsConfig {
    /// Checks beyond types; errors name the key.
    fn validate(&self) -> Result<(), ConfigError> {
        let key = |k: &str, m: String| ConfigError::Key {
            key: k.into(),
            message: m,
        };
        match &self.smart_host {
            None => {
                return Err(key(
                    "connectors.smart_host",
                    "missing: where Exchange Online delivers mail for on-prem people".into(),
                ));
            }
            Some(h) if !is_domain(h) && h.parse::<std::net::Ipv4Addr>().is_err() => {
                return Err(key(
                    "connectors.smart_host",
                    format!("`{h}` is neither a host name nor an IPv4 address"),
                ));
            }
            Some(h) => {
                if let Some(why) = unreachable_smart_host(h) {
                    return Err(key("connectors.smart_host", format!("`{h}` {why}")));
                }
            }
        }
        match &self.certificate_name {
            None => {
                return Err(key(
                    "connectors.certificate_name",
                    "missing: the name in the certificate the Linux side presents to Exchange Online".into(),
                ));
            }
            Some(n) if !is_domain(n.strip_prefix("*.").unwrap_or(n)) => {
                return Err(key(
                    "connectors.certificate_name",
                    format!("`{n}` is not a domain name (a leading `*.` is allowed)"),
                ));
            }
            Some(_) => {}
        }
        for ip in &self.on_prem_public_ips {
            if !is_ip_spec(ip) {
                return Err(key(
                    "connectors.on_prem_public_ips",
                    format!("`{ip}` is not an IPv4 address, CIDR range or a-b range"),
                ));
            }
        }
        let p = &self.name_prefix;
        if p.trim().is_empty()
            || p.len() > 32
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ' '))
        {
            return Err(key(
                "connectors.name_prefix",
                format!("`{p}` must be 1 to 32 letters, digits, spaces, `-`, `_` or `.`"),
            ));
        }
        Ok(())
    }
}

/// An address as `EFSkipIPs` takes it: `192.0.2.1`, `192.0.2.0/24` or `192.0.2.1-192.0.2.9`.
/// Why Exchange Online cannot deliver on-prem mail to `host`, if it cannot: Microsoft's own
/// hosts send the mail back into the tenant (a loop), and a private, loopback or link-local
/// address is not reachable from Exchange Online.
fn unreachable_smart_host(host: &str) -> Option<&'static str> {
    let h = host.to_ascii_lowercase();
    let microsoft = [
        "protection.outlook.com",
        "outlook.com",
        "onmicrosoft.com",
        "office365.com",
    ];
    if microsoft
        .iter()
        .any(|m| h == *m || h.ends_with(&format!(".{m}")))
    {
        return Some(
            "is a Microsoft host: mail for on-prem people would go back into Exchange Online (a loop); name the Linux side's mail server",
        );
    }
    match h.parse::<std::net::Ipv4Addr>() {
        Ok(ip)
            if ip.is_private() || ip.is_loopback() || ip.is_link_local() || ip.is_unspecified() =>
        {
            Some(
                "is not a public address: Exchange Online delivers from the internet and cannot reach it",
            )
        }
        _ => None,
    }
}

fn is_ip_spec(s: &str) -> bool {
    use std::net::IpAddr;
    if let Some((a, b)) = s.split_once('-') {
        return a.parse::<IpAddr>().is_ok() && b.parse::<IpAddr>().is_ok();
    }
    if let Some((a, bits)) = s.split_once('/') {
        return match a.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => bits.parse::<u8>().is_ok_and(|b| b <= 32),
            Ok(IpAddr::V6(_)) => bits.parse::<u8>().is_ok_and(|b| b <= 128),
            Err(_) => false,
        };
    }
    s.parse::<IpAddr>().is_ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Base,
    One,
    Sub,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    pub url: String,
    #[serde(default)]
    pub starttls: bool,
    pub ca_file: Option<PathBuf>,
    /// Absent means an anonymous bind.
    pub bind_dn: Option<String>,
    pub bind_password_file: Option<PathBuf>,
    /// Filled from `bind_password_file` or `LDAP2EXO__LDAP__BIND_PASSWORD`, never the file.
    #[serde(skip)]
    pub bind_password: Option<Secret>,
    pub base_dn: String,
    #[serde(default = "default_scope")]
    pub scope: Scope,
    #[serde(default = "default_filter")]
    pub filter: String,
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Seconds the server may spend on one search; 0 means the server's own limit.
    #[serde(default = "default_ldap_timeout")]
    pub timeout_seconds: u64,
    /// Read incrementally with RFC 4533 content synchronisation (OpenLDAP's `syncprov`):
    /// only what changed since the last committed cookie; see `source::incremental`.
    #[serde(default)]
    pub content_sync: bool,
    /// With `content_sync`, a full refresh at least this often (hours, 1 to 8760).
    #[serde(default = "default_full_reconcile_hours")]
    pub full_reconcile_interval_hours: u32,
    #[serde(default)]
    pub attributes: AttributeMap,
    #[serde(default)]
    pub rules: Rules,
}

/// Which LDAP attribute feeds which field. An empty string leaves a field unmapped.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttributeMap {
    pub anchor: String,
    pub uid: String,
    pub mail: String,
    pub aliases: Vec<String>,
    pub forward: String,
    pub display_name: String,
    pub given_name: String,
    pub surname: String,
    pub department: String,
    pub job_title: String,
    pub phone: String,
    pub mobile: String,
    pub office: String,
    pub company: String,
}

impl Default for AttributeMap {
    fn default() -> Self {
        Self {
            anchor: "entryUUID".into(),
            uid: "uid".into(),
            mail: "mail".into(),
            aliases: vec!["mailAlternateAddress".into()],
            forward: "mailForwardingAddress".into(),
            display_name: "displayName".into(),
            given_name: "givenName".into(),
            surname: "sn".into(),
            department: "ou".into(),
            job_title: "title".into(),
            phone: "telephoneNumber".into(),
            mobile: "mobile".into(),
            office: "roomNumber".into(),
            company: "o".into(),
        }
    }
}

impl AttributeMap {
    /// Every mapped LDAP attribute: exactly what the search asks the server for.
    pub fn requested(&self) -> Vec<String> {
        let mut names: Vec<String> = [
            &self.anchor,
            &self.uid,
            &self.mail,
            &self.forward,
            &self.display_name,
            &self.given_name,
            &self.surname,
            &self.department,
            &self.job_title,
            &self.phone,
            &self.mobile,
            &self.office,
            &self.company,
        ]
        .into_iter()
        .chain(self.aliases.iter())
        .filter(|n| !n.is_empty())
        .cloned()
        .collect();
        names.sort_by_key(|n| n.to_ascii_lowercase());
        names.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
        names
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Entries matching this filter are provisioned but hidden from the address list.
    pub hidden_filter: Option<String>,
    /// Entries matching this filter are treated as leaving.
    pub disabled_filter: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Needed to write to the tenant; a dry run works without it.
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    #[serde(skip)]
    pub client_secret: Option<Secret>,
    pub certificate_file: Option<PathBuf>,
    /// How ldap2exo authenticates to the tenant. Absent: inferred at connect time (a client
    /// secret, else `certificate_file`), see [`TenantConfig::credential_kind`].
    pub credential: Option<Credential>,
    pub accepted_domains: Vec<String>,
    pub onmicrosoft_domain: String,
    pub routing_domain: String,
    pub upn_domain: String,
    pub mailbox_sku: Option<String>,
    pub usage_location: Option<String>,
    #[serde(default = "default_anchor_attribute")]
    pub anchor_attribute: String,
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub endpoints: Endpoints,
    /// People whose actions run at the same time; the tenant client's limiter still paces
    /// the requests themselves.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Seconds a step waits, with backoff, for an object the service has just created but
    /// does not show yet (a 404 right after a create; Exchange and Graph see each other's
    /// writes only after a delay Microsoft does not publish). Past it, the step fails or, where
    /// that is safe, is left for the next run. 0 to 600.
    #[serde(default = "default_propagation_wait")]
    pub propagation_wait_seconds: u32,
    /// Read only what changed in the tenant since the last real run (Graph `/users/delta`,
    /// Exchange `WhenChangedUTC`), filling in the rest from the state store; see
    /// `inventory::incremental`.
    #[serde(default)]
    pub incremental_read: bool,
    /// With `incremental_read`, a full read at least this often (hours, 1 to 8760).
    #[serde(default = "default_full_reconcile_hours")]
    pub full_read_interval_hours: u32,
    /// With `incremental_read`, how far before the last Exchange listing's start the next one
    /// reaches back (seconds, 1 to 86400): clock skew and Exchange's own replication.
    #[serde(default = "default_exchange_margin")]
    pub exchange_margin_seconds: u32,
    /// `[tenant.budget]`: the request rates the plan's bill divides by to say how long a run
    /// takes (see `plan::bill`). They pace nothing: the limiter follows the services' answers.
    #[serde(default)]
    pub budget: Budget,
}

/// `[tenant.budget]`: sustained request rates per service, for the bill's time estimate.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Budget {
    /// Graph writes per second. Default 20: Microsoft's identity and access service allows
    /// an application+tenant pair 3,000 writes per 2 minutes 30 seconds ("Microsoft Graph
    /// service-specific throttling limits", Identity and access service limits, write quota),
    /// which is 20 per second.
    pub graph_writes_per_second: f64,
    /// Exchange admin API requests (cmdlets, reads and writes alike) per second. Default 5:
    /// Microsoft publishes no rate for the Exchange Online admin API (EXO V3 REST); it throttles
    /// by concurrency and a per-tenant budget it does not state, so the figure is a
    /// conservative choice, not a quoted limit.
    pub exchange_requests_per_second: f64,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            graph_writes_per_second: 20.0,
            exchange_requests_per_second: 5.0,
        }
    }
}

fn default_concurrency() -> u32 {
    16
}

fn default_propagation_wait() -> u32 {
    20
}

/// The credential used to get tokens for Graph and Exchange Online.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Credential {
    /// `client_secret_file` or `LDAP2EXO__TENANT__CLIENT_SECRET`.
    ClientSecret,
    /// A signed client assertion from `certificate_file` (certificate and private key, PEM).
    Certificate,
    /// The Azure host's managed identity (a VM or App Service); `client_id`, when set, names
    /// a user-assigned identity.
    ManagedIdentity,
    /// Kubernetes workload identity: a federated token from `AZURE_FEDERATED_TOKEN_FILE`.
    WorkloadIdentity,
}

impl TenantConfig {
    /// The credential to use: the configured one, else inferred from what is present (a
    /// client secret wins over a certificate). The error names what is missing; it is raised
    /// when connecting, not when loading, because a dry run needs no credential at all.
    pub fn credential_kind(&self) -> Result<Credential, String> {
        match self.credential {
            Some(c) => Ok(c),
            None if self.client_secret.is_some() => Ok(Credential::ClientSecret),
            None if self.certificate_file.is_some() => Ok(Credential::Certificate),
            None => Err("no tenant credential: set tenant.client_secret_file (or LDAP2EXO__TENANT__CLIENT_SECRET), tenant.certificate_file, or tenant.credential = \"managed_identity\" / \"workload_identity\"".into()),
        }
    }
}

/// `[tenant.endpoints]`: where the three services live. The token scopes follow from
/// `graph` and `exchange` for Microsoft's own clouds (see `tenant::Scopes::for_endpoints`);
/// `graph_scope` / `exchange_scope` set them explicitly for anything else (a proxy, an
/// emulator that wants other names). Unset and unknown hosts: the worldwide scopes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Endpoints {
    pub login: String,
    pub graph: String,
    pub exchange: String,
    /// The scope asked for Graph tokens, e.g. `https://graph.microsoft.us/.default`.
    pub graph_scope: Option<String>,
    /// The scope asked for Exchange tokens, e.g. `https://outlook.office365.us/.default`.
    pub exchange_scope: Option<String>,
}

impl Default for Endpoints {
    fn default() -> Self {
        Self {
            login: "https://login.microsoftonline.com".into(),
            graph: "https://graph.microsoft.com".into(),
            exchange: "https://outlook.office365.com".into(),
            graph_scope: None,
            exchange_scope: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    pub path: PathBuf,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            path: "/var/lib/ldap2exo/state.db".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SafetyConfig {
    pub max_deletes_per_run: u32,
    /// Removals (disables + deletes) applied in the last 24 hours, this run's included, above
    /// which a run is blocked; 0: none without an approval. Unset: see
    /// [`SafetyConfig::deletes_per_24h`].
    pub max_deletes_per_24h: Option<u32>,
    /// The same over the last 7 days. Unset: see [`SafetyConfig::deletes_per_7d`].
    pub max_deletes_per_7d: Option<u32>,
    pub max_delete_percent: f64,
    pub max_source_shrink_percent: f64,
    pub grace_period_days: u32,
}

impl SafetyConfig {
    /// The 24-hour cap: as configured, else two full runs' worth (at least 100), so that a
    /// slow leak of removals across runs stops well before it empties the address list, and
    /// a site with a large `max_deletes_per_run` is not blocked by a default smaller than it;
    /// never above a configured 7-day cap.
    pub fn deletes_per_24h(&self) -> u32 {
        self.max_deletes_per_24h.unwrap_or_else(|| {
            let default = self.max_deletes_per_run.saturating_mul(2).max(100);
            self.max_deletes_per_7d
                .map_or(default, |week| default.min(week))
        })
    }

    /// The 7-day cap: as configured, else five full runs' worth (at least 250), and never
    /// below the 24-hour cap.
    pub fn deletes_per_7d(&self) -> u32 {
        self.max_deletes_per_7d.unwrap_or_else(|| {
            self.max_deletes_per_run
                .saturating_mul(5)
                .max(250)
                .max(self.deletes_per_24h())
        })
    }
}

impl Default for SafetyConfig {
    fn default() -> Self {
        Self {
            max_deletes_per_run: 50,
            max_deletes_per_24h: None,
            max_deletes_per_7d: None,
            max_delete_percent: 5.0,
            max_source_shrink_percent: 10.0,
            grace_period_days: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Cron with seconds, in local time; see `daemon::schedule`.
    pub schedule: String,
    /// `host:port` for /healthz, /readyz and /metrics.
    pub listen: String,
    /// `/readyz` turns unready when the last successful run is older than this many schedule
    /// intervals (or the last run failed).
    pub ready_intervals: u32,
    /// After SIGTERM/SIGINT, how long actions in flight may go on before they are cut off.
    pub shutdown_grace_seconds: u32,
    /// Where each scheduled run's text report is written (replaced each run); none if unset.
    pub report_file: Option<PathBuf>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            schedule: "0 */15 * * * *".into(),
            listen: "127.0.0.1:9464".into(),
            ready_intervals: 3,
            shutdown_grace_seconds: 30,
            report_file: None,
        }
    }
}

/// `[notify]`: failures and safety stops mailed through the site's SMTP relay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Recipients; empty (the default) turns notifications off.
    pub to: Vec<String>,
    /// The sender; required once `to` is set.
    pub from: Option<String>,
    pub smtp_host: String,
    /// Absent: 25 (the relay's own listener) for `starttls` and `none`, 465 for `tls`.
    pub smtp_port: Option<u16>,
    pub tls: SmtpTls,
    /// A CA to trust for the relay's certificate, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Absent: no AUTH (a relay that trusts this host by address).
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Filled from `password_file` or `LDAP2EXO__NOTIFY__PASSWORD`, never the file.
    #[serde(skip)]
    pub password: Option<Secret>,
    /// At most one mail of the same kind this often; see `notify` for when one goes out anyway.
    pub min_interval_minutes: u32,
    /// Which run outcomes are mailed.
    pub on: Vec<NotifyOn>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            to: Vec::new(),
            from: None,
            smtp_host: "localhost".into(),
            smtp_port: None,
            tls: SmtpTls::Starttls,
            ca_file: None,
            username: None,
            password_file: None,
            password: None,
            min_interval_minutes: 60,
            on: vec![
                NotifyOn::Failed,
                NotifyOn::Partial,
                NotifyOn::Blocked,
                NotifyOn::Recovered,
            ],
        }
    }
}

impl NotifyConfig {
    pub fn enabled(&self) -> bool {
        !self.to.is_empty()
    }

    pub fn port(&self) -> u16 {
        self.smtp_port.unwrap_or(match self.tls {
            SmtpTls::Tls => 465,
            SmtpTls::Starttls | SmtpTls::None => 25,
        })
    }
}

/// How the connection to the SMTP relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// STARTTLS, required: nothing is sent to a relay that does not offer it.
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
    /// Plain text; only to a relay on this host (checked at load).
    None,
}

/// A run outcome that can be mailed (`notify.on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyOn {
    Failed,
    Partial,
    Blocked,
    Interrupted,
    /// A run ended ok after a problem was mailed.
    Recovered,
}

impl NotifyOn {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyOn::Failed => "failed",
            NotifyOn::Partial => "partial",
            NotifyOn::Blocked => "blocked",
            NotifyOn::Interrupted => "interrupted",
            NotifyOn::Recovered => "recovered",
        }
    }
}

fn default_scope() -> Scope {
    Scope::Sub
}
fn default_filter() -> String {
    "(&(objectClass=inetOrgPerson)(mail=*))".into()
}
fn default_page_size() -> u32 {
    500
}
fn default_full_reconcile_hours() -> u32 {
    24
}
fn default_exchange_margin() -> u32 {
    900
}
fn default_ldap_timeout() -> u64 {
    120
}
fn default_anchor_attribute() -> String {
    "extensionAttribute15".into()
}

/// Whether loading the configuration reads and requires its secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Secrets {
    Resolve,
    /// `status`: leave them unread and do not require them.
    Skip,
}

/// Keys that hold secrets: `(section, key)`. They are read from `<key>_file` or the
/// environment, never from the TOML file itself.
const SECRET_KEYS: [(&str, &str); 5] = [
    ("ldap", "bind_password"),
    ("tenant", "client_secret"),
    ("notify", "password"),
    ("migration", "master_password"),
    ("migration", "write_bind_password"),
];

impl Config {
    /// Reads the file at `path` and layers the `LDAP2EXO__*` variables of `env` over it.
    ///
    /// `env` is passed in (normally `std::env::vars()`) so tests need not touch the process
    /// environment.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::load_with(path, env, Secrets::Resolve)
    }

    /// Like [`Config::load`], but for `status`, which reads only the state store: secrets are
    /// neither read from their files nor required, so a monitoring user without access to
    /// them can run it. Every other check applies.
    pub fn load_without_secrets(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::load_with(path, env, Secrets::Skip)
    }

    fn load_with(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
        secrets: Secrets,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path, env, secrets)
    }

    pub fn from_toml(
        text: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::parse(text, path, env, Secrets::Resolve)
    }

    fn parse(
        text: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
        secrets: Secrets,
    ) -> Result<Self, ConfigError> {
        let mut tree: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        for (section, key) in SECRET_KEYS {
            let in_file = tree
                .get(section)
                .and_then(|s| s.as_table())
                .is_some_and(|s| s.contains_key(key));
            if in_file {
                return Err(ConfigError::SecretInFile {
                    key: format!("{section}.{key}"),
                    env: env_name(&[section, key]),
                });
            }
        }

        let mut env_secrets: Vec<(String, Secret)> = Vec::new();
        let mut overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        // Deterministic order, so a conflict between two variables resolves the same way.
        overrides.sort();
        for (var, raw) in overrides {
            let path: Vec<String> = var[ENV_PREFIX.len()..]
                .split("__")
                .map(|p| p.to_ascii_lowercase())
                .collect();
            if path.iter().any(String::is_empty) {
                return Err(ConfigError::Env {
                    var,
                    message: "empty key between `__`".into(),
                });
            }
            let dotted = path.join(".");
            if SECRET_KEYS
                .iter()
                .any(|(s, k)| dotted == format!("{s}.{k}"))
            {
                env_secrets.push((dotted, Secret::new(raw)));
                continue;
            }
            set_path(&mut tree, &path, env_value(&raw)).map_err(|message| ConfigError::Env {
                var: var.clone(),
                message,
            })?;
        }

        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(tree))
            .map_err(|e| {
                let key = e.path().to_string();
                ConfigError::Key {
                    key: if key == "." {
                        "(top level)".into()
                    } else {
                        key
                    },
                    message: e.into_inner().to_string().trim_end().to_owned(),
                }
            })?;

        if secrets == Secrets::Skip {
            config.validate(secrets)?;
            return Ok(config);
        }
        for (key, secret) in env_secrets {
            match key.as_str() {
                "ldap.bind_password" => config.ldap.bind_password = Some(secret),
                "notify.password" => config.notify.password = Some(secret),
                "migration.master_password" | "migration.write_bind_password" => {
                    if let Some(m) = config.migration.as_mut() {
                        m.set_secret(&key, secret);
                    }
                }
                _ => config.tenant.client_secret = Some(secret),
            }
        }
        if config.ldap.bind_password.is_none()
            && let Some(file) = &config.ldap.bind_password_file
        {
            config.ldap.bind_password = Some(read_secret("ldap.bind_password_file", file)?);
        }
        if config.tenant.client_secret.is_none()
            && let Some(file) = &config.tenant.client_secret_file
        {
            config.tenant.client_secret = Some(read_secret("tenant.client_secret_file", file)?);
        }
        if config.notify.password.is_none()
            && let Some(file) = &config.notify.password_file
        {
            config.notify.password = Some(read_secret("notify.password_file", file)?);
        }
        if let Some(m) = config.migration.as_mut() {
            m.read_secret_files()?;
        }
        config.validate(secrets)?;
        Ok(config)
    }

    /// Checks that go beyond types: URL schemes, domains, ranges; with
    /// [`Secrets::Resolve`], also that the secrets the configuration needs are there.
    fn validate(&self, secrets: Secrets) -> Result<(), ConfigError> {
        let need_secrets = secrets == Secrets::Resolve;
        let key = |k: &str, m: String| ConfigError::Key {
            key: k.into(),
            message: m,
        };
        let l = &self.ldap;
        let scheme = l.url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("ldap") => {}
            Some("ldaps") if l.starttls => {
                return Err(key(
                    "ldap.starttls",
                    "StartTLS cannot be used with ldaps://".into(),
                ));
            }
            Some("ldaps") => {}
            _ => {
                return Err(key(
                    "ldap.url",
                    format!("`{}` is not an ldap:// or ldaps:// URL", l.url),
                ));
            }
        }
        if need_secrets && l.bind_dn.is_some() && l.bind_password.is_none() {
            return Err(key(
                "ldap.bind_password_file",
                "ldap.bind_dn is set but no password: set bind_password_file or LDAP2EXO__LDAP__BIND_PASSWORD".into(),
            ));
        }
        if l.base_dn.trim().is_empty() {
            return Err(key("ldap.base_dn", "must not be empty".into()));
        }
        if !(1..=100_000).contains(&l.page_size) {
            return Err(key(
                "ldap.page_size",
                format!("{} is not between 1 and 100000", l.page_size),
            ));
        }
        if !(1..=8760).contains(&l.full_reconcile_interval_hours) {
            return Err(key(
                "ldap.full_reconcile_interval_hours",
                format!(
                    "{} is not between 1 and 8760 (to read in full every run, set content_sync = false)",
                    l.full_reconcile_interval_hours
                ),
            ));
        }
        for (k, f) in [
            ("ldap.filter", Some(&l.filter)),
            ("ldap.rules.hidden_filter", l.rules.hidden_filter.as_ref()),
            (
                "ldap.rules.disabled_filter",
                l.rules.disabled_filter.as_ref(),
            ),
        ] {
            if let Some(f) = f {
                let f = f.trim();
                if !(f.starts_with('(') && f.ends_with(')')) {
                    return Err(key(
                        k,
                        format!("`{f}` is not an LDAP filter in parentheses"),
                    ));
                }
            }
        }
        let a = &l.attributes;
        for (k, v) in [
            ("ldap.attributes.anchor", &a.anchor),
            ("ldap.attributes.uid", &a.uid),
            ("ldap.attributes.mail", &a.mail),
        ] {
            if v.trim().is_empty() {
                return Err(key(k, "must name an LDAP attribute".into()));
            }
        }

        let d = &self.daemon;
        crate::daemon::schedule::Schedule::parse(&d.schedule)
            .map_err(|m| key("daemon.schedule", m))?;
        if d.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(key(
                "daemon.listen",
                format!(
                    "`{}` is not an address and port such as 127.0.0.1:9464",
                    d.listen
                ),
            ));
        }
        if d.ready_intervals == 0 {
            return Err(key("daemon.ready_intervals", "must be at least 1".into()));
        }
        if d.shutdown_grace_seconds > 3600 {
            return Err(key(
                "daemon.shutdown_grace_seconds",
                format!("{} is more than an hour", d.shutdown_grace_seconds),
            ));
        }

        let t = &self.tenant;
        if t.accepted_domains.is_empty() {
            return Err(key(
                "tenant.accepted_domains",
                "must list at least one domain".into(),
            ));
        }
        for d in &t.accepted_domains {
            if !is_domain(d) {
                return Err(key(
                    "tenant.accepted_domains",
                    format!("`{d}` is not a domain name"),
                ));
            }
        }
        for (k, d) in [
            ("tenant.onmicrosoft_domain", &t.onmicrosoft_domain),
            ("tenant.routing_domain", &t.routing_domain),
            ("tenant.upn_domain", &t.upn_domain),
        ] {
            if !is_domain(d) {
                return Err(key(k, format!("`{d}` is not a domain name")));
            }
        }
        let verified = t
            .accepted_domains
            .iter()
            .chain([&t.onmicrosoft_domain])
            .any(|d| d.eq_ignore_ascii_case(&t.upn_domain));
        if !verified {
            return Err(key(
                "tenant.upn_domain",
                format!(
                    "`{}` is neither an accepted domain nor the onmicrosoft domain",
                    t.upn_domain
                ),
            ));
        }
        let n: Option<u32> = t
            .anchor_attribute
            .strip_prefix("extensionAttribute")
            .and_then(|n| n.parse().ok());
        if !matches!(n, Some(1..=15)) {
            return Err(key(
                "tenant.anchor_attribute",
                format!(
                    "`{}` is not extensionAttribute1 … extensionAttribute15",
                    t.anchor_attribute
                ),
            ));
        }
        for (k, id) in [
            ("tenant.tenant_id", &t.tenant_id),
            ("tenant.client_id", &t.client_id),
        ] {
            if let Some(id) = id
                && !is_guid(id)
            {
                return Err(key(k, format!("`{id}` is not a GUID")));
            }
        }
        if let Some(loc) = &t.usage_location
            && !(loc.len() == 2 && loc.chars().all(|c| c.is_ascii_uppercase()))
        {
            return Err(key(
                "tenant.usage_location",
                format!("`{loc}` is not a two-letter country code such as DE"),
            ));
        }
        match t.credential {
            Some(Credential::ClientSecret) if need_secrets && t.client_secret.is_none() => {
                return Err(key(
                    "tenant.credential",
                    "client_secret needs tenant.client_secret_file or LDAP2EXO__TENANT__CLIENT_SECRET".into(),
                ));
            }
            Some(Credential::Certificate) if t.certificate_file.is_none() => {
                return Err(key(
                    "tenant.credential",
                    "certificate needs tenant.certificate_file".into(),
                ));
            }
            _ => {}
        }
        for (k, u) in [
            ("tenant.endpoints.login", &t.endpoints.login),
            ("tenant.endpoints.graph", &t.endpoints.graph),
            ("tenant.endpoints.exchange", &t.endpoints.exchange),
        ] {
            if !u.starts_with("https://") {
                return Err(key(k, format!("`{u}` is not an https:// URL")));
            }
        }
        for (k, scope) in [
            ("tenant.endpoints.graph_scope", &t.endpoints.graph_scope),
            (
                "tenant.endpoints.exchange_scope",
                &t.endpoints.exchange_scope,
            ),
        ] {
            if let Some(scope) = scope
                && !(scope.starts_with("https://") && scope.ends_with("/.default"))
            {
                return Err(key(
                    k,
                    format!("`{scope}` is not a scope of the form https://<resource>/.default"),
                ));
            }
        }

        if !(1..=8760).contains(&t.full_read_interval_hours) {
            return Err(key(
                "tenant.full_read_interval_hours",
                format!(
                    "{} is not between 1 and 8760 (to read in full every run, set incremental_read = false)",
                    t.full_read_interval_hours
                ),
            ));
        }
        if !(1..=86_400).contains(&t.exchange_margin_seconds) {
            return Err(key(
                "tenant.exchange_margin_seconds",
                format!("{} is not between 1 and 86400", t.exchange_margin_seconds),
            ));
        }
        if t.propagation_wait_seconds > 600 {
            return Err(key(
                "tenant.propagation_wait_seconds",
                format!("{} is more than 600", t.propagation_wait_seconds),
            ));
        }
        for (k, v) in [
            (
                "tenant.budget.graph_writes_per_second",
                t.budget.graph_writes_per_second,
            ),
            (
                "tenant.budget.exchange_requests_per_second",
                t.budget.exchange_requests_per_second,
            ),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 10_000.0) {
                return Err(key(
                    k,
                    format!("{v} is not a rate above 0 and at most 10000"),
                ));
            }
        }
        if !(1..=256).contains(&t.concurrency) {
            return Err(key(
                "tenant.concurrency",
                format!("{} is not between 1 and 256", t.concurrency),
            ));
        }

        let s = &self.safety;
        for (k, p) in [
            ("safety.max_delete_percent", s.max_delete_percent),
            (
                "safety.max_source_shrink_percent",
                s.max_source_shrink_percent,
            ),
        ] {
            if !(0.0..=100.0).contains(&p) {
                return Err(key(k, format!("{p} is not a percentage between 0 and 100")));
            }
        }
        // A week allows less than a day would: the day's cap could never be reached.
        if let (Some(week), Some(day)) = (s.max_deletes_per_7d, s.max_deletes_per_24h)
            && week < day
        {
            return Err(key(
                "safety.max_deletes_per_7d",
                format!("{week} is less than safety.max_deletes_per_24h = {day}"),
            ));
        }
        if let Some(c) = &self.connectors {
            c.validate()?;
        }
        self.notify.validate(need_secrets)?;
        match &self.migration {
            Some(m) => {
                m.validate(need_secrets)?;
                self.check_onprem_routing_domain(&m.onprem_routing_domain)
            }
            None => Ok(()),
        }
    }

    /// A migrating mailbox forwards to `<uid>@<onprem_routing_domain>`: a domain the tenant's
    /// own recipients live in would deliver that mail to the mailbox itself (or another
    /// recipient) instead of the Linux side, so it must be a domain of its own.
    fn check_onprem_routing_domain(&self, domain: &str) -> Result<(), ConfigError> {
        let t = &self.tenant;
        let is = |a: &String| a.eq_ignore_ascii_case(domain);
        let clash = if t.accepted_domains.iter().any(is) {
            Some("is in tenant.accepted_domains")
        } else if is(&t.onmicrosoft_domain) {
            Some("is tenant.onmicrosoft_domain")
        } else if is(&t.routing_domain) {
            Some("is tenant.routing_domain")
        } else {
            None
        };
        match clash {
            Some(which) => Err(ConfigError::Key {
                key: "migration.onprem_routing_domain".into(),
                message: format!(
                    "`{domain}` {which}, a domain of the tenant's own recipients: a migrating mailbox would forward to itself; use a domain of its own that routes to the Linux server (an InternalRelay accepted domain no Exchange Online recipient has addresses in)"
                ),
            }),
            None => Ok(()),
        }
    }
}

impl NotifyConfig {
    /// `need_secrets`: whether the password was resolved (not for `status`).
    fn validate(&self, need_secrets: bool) -> Result<(), ConfigError> {
        let key = |k: &str, m: String| ConfigError::Key {
            key: k.into(),
            message: m,
        };
        for a in &self.to {
            if let Err(e) = a.parse::<lettre::message::Mailbox>() {
                return Err(key(
                    "notify.to",
                    format!("`{a}` is not a mail address: {e}"),
                ));
            }
        }
        match &self.from {
            Some(a) => {
                if let Err(e) = a.parse::<lettre::message::Mailbox>() {
                    return Err(key(
                        "notify.from",
                        format!("`{a}` is not a mail address: {e}"),
                    ));
                }
            }
            None if self.enabled() => {
                return Err(key(
                    "notify.from",
                    "notify.to is set, so the sender address is needed too".into(),
                ));
            }
            None => {}
        }
        if self.smtp_host.trim().is_empty() {
            return Err(key("notify.smtp_host", "must not be empty".into()));
        }
        if self.smtp_port == Some(0) {
            return Err(key("notify.smtp_port", "0 is not a port".into()));
        }
        if self.tls == SmtpTls::None && !is_loopback(&self.smtp_host) {
            return Err(key(
                "notify.tls",
                format!(
                    "\"none\" sends mail in clear and is only allowed to a relay on this host (localhost, 127.0.0.1, ::1), not to `{}`: use \"starttls\" or \"tls\"",
                    self.smtp_host
                ),
            ));
        }
        match (&self.username, &self.password) {
            (Some(_), None) if need_secrets => {
                return Err(key(
                    "notify.password_file",
                    "notify.username is set but no password: set password_file or LDAP2EXO__NOTIFY__PASSWORD".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(key(
                    "notify.username",
                    "a password is set (password_file or LDAP2EXO__NOTIFY__PASSWORD) but no username".into(),
                ));
            }
            (Some(_), Some(_)) if self.tls == SmtpTls::None => {
                return Err(key(
                    "notify.username",
                    "credentials are only sent over TLS: use tls = \"starttls\" or \"tls\"".into(),
                ));
            }
            _ => {}
        }
        if self.min_interval_minutes > 7 * 24 * 60 {
            return Err(key(
                "notify.min_interval_minutes",
                format!("{} is more than a week", self.min_interval_minutes),
            ));
        }
        Ok(())
    }
}

/// How Exchange Online's IMAP migration endpoint connects to the on-prem server
/// (`New-MigrationEndpoint -Security`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImapSecurity {
    Ssl,
    Tls,
    None,
}

impl ImapSecurity {
    /// The `-Security` value: `Ssl`, `Tls` or `None`.
    pub fn as_cmdlet(self) -> &'static str {
        match self {
            ImapSecurity::Ssl => "Ssl",
            ImapSecurity::Tls => "Tls",
            ImapSecurity::None => "None",
        }
    }
}

/// `[migration]`: IMAP migration of a cohort to Exchange Online mailboxes (`migrate`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationConfig {
    /// The on-prem IMAP server Exchange Online copies from (a public name).
    pub imap_server: String,
    #[serde(default = "default_imap_port")]
    pub imap_port: u16,
    #[serde(default = "default_imap_security")]
    pub security: ImapSecurity,
    /// The Dovecot master user: Exchange Online logs in as `<uid>*<master_user>`.
    pub master_user: String,
    pub master_password_file: Option<PathBuf>,
    /// Filled from `master_password_file` or `LDAP2EXO__MIGRATION__MASTER_PASSWORD`; sent
    /// only inside the CSV of `New-MigrationBatch`.
    #[serde(skip)]
    pub master_password: Option<Secret>,
    /// Routes to the Linux server; an InternalRelay accepted domain of the tenant. Until
    /// cutover a migrating person's mailbox forwards to `<uid>@<this>`.
    pub onprem_routing_domain: String,
    /// For `migrate cutover --apply`: a DN allowed to change the forward attribute.
    pub write_bind_dn: Option<String>,
    pub write_bind_password_file: Option<PathBuf>,
    /// Filled from `write_bind_password_file` or `LDAP2EXO__MIGRATION__WRITE_BIND_PASSWORD`.
    #[serde(skip)]
    pub write_bind_password: Option<Secret>,
    /// `migrate start` refuses a larger cohort (licensing in place cannot be undone by
    /// ldap2exo): a safety gate against a `--filter` that matches too much. Default 500.
    #[serde(default = "default_max_cohort")]
    pub max_cohort: usize,
}

fn default_max_cohort() -> usize {
    500
}

fn default_imap_port() -> u16 {
    993
}

fn default_imap_security() -> ImapSecurity {
    ImapSecurity::Ssl
}

impl MigrationConfig {
    fn set_secret(&mut self, key: &str, secret: Secret) {
        if key == "migration.master_password" {
            self.master_password = Some(secret);
        } else {
            self.write_bind_password = Some(secret);
        }
    }

    /// The `*_file` forms, where the environment did not give the secret already.
    fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        if self.master_password.is_none()
            && let Some(file) = &self.master_password_file
        {
            self.master_password = Some(read_secret("migration.master_password_file", file)?);
        }
        if self.write_bind_password.is_none()
            && let Some(file) = &self.write_bind_password_file
        {
            self.write_bind_password =
                Some(read_secret("migration.write_bind_password_file", file)?);
        }
        Ok(())
    }

    fn validate(&self, need_secrets: bool) -> Result<(), ConfigError> {
        let key = |k: &str, m: String| ConfigError::Key {
            key: k.into(),
            message: m,
        };
        let host = self.imap_server.trim();
        if host.is_empty() || host.contains(['/', ':', ' ', '@']) {
            return Err(key(
                "migration.imap_server",
                format!("`{}` is not a host name", self.imap_server),
            ));
        }
        if self.imap_port == 0 {
            return Err(key("migration.imap_port", "0 is not a port".into()));
        }
        if self.max_cohort == 0 {
            return Err(key(
                "migration.max_cohort",
                "0 would refuse every cohort".into(),
            ));
        }
        let master = self.master_user.trim();
        if master.is_empty() || master.contains(['*', ',', '"', ' ']) {
            return Err(key(
                "migration.master_user",
                "must be a Dovecot user name without `*`, `,`, quotes or spaces".into(),
            ));
        }
        if !is_domain(&self.onprem_routing_domain) {
            return Err(key(
                "migration.onprem_routing_domain",
                format!("`{}` is not a domain name", self.onprem_routing_domain),
            ));
        }
        if need_secrets && self.master_password.is_none() {
            return Err(key(
                "migration.master_password_file",
                "no IMAP master password: set master_password_file or LDAP2EXO__MIGRATION__MASTER_PASSWORD".into(),
            ));
        }
        match (&self.write_bind_dn, &self.write_bind_password) {
            (Some(_), None) if need_secrets => Err(key(
                "migration.write_bind_password_file",
                "migration.write_bind_dn is set but no password: set write_bind_password_file or LDAP2EXO__MIGRATION__WRITE_BIND_PASSWORD".into(),
            )),
            (None, Some(_)) => Err(key(
                "migration.write_bind_dn",
                "a write bind password is set but no write_bind_dn".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// True for the names and addresses of this host itself.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn env_name(path: &[&str]) -> String {
    format!("{ENV_PREFIX}{}", path.join("__").to_ascii_uppercase())
}

/// An environment value is read as a TOML value when it is one (`500`, `true`, `["a", "b"]`),
/// otherwise as a plain string, so `LDAP2EXO__LDAP__FILTER=(uid=*)` needs no quoting.
fn env_value(raw: &str) -> toml::Value {
    let parsed = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"));
    match parsed {
        Some(
            v @ (toml::Value::Integer(_)
            | toml::Value::Float(_)
            | toml::Value::Boolean(_)
            | toml::Value::Array(_)),
        ) => v,
        _ => toml::Value::String(raw.to_owned()),
    }
}

fn set_path(tree: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("no key")?;
    let mut table = tree;
    for (i, p) in parents.iter().enumerate() {
        let entry = table
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{}` is a value, not a section", path[..=i].join(".")))?;
    }
    table.insert(last.clone(), value);
    Ok(())
}

fn read_secret(key: &str, path: &Path) -> Result<Secret, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
        key: key.into(),
        path: path.to_owned(),
        source,
    })?;
    // Files written with `echo` end in a newline that is not part of the secret.
    Ok(Secret::new(text.trim_end_matches(['\n', '\r']).to_owned()))
}

/// The certificates of a PEM file named by a `ca_file` key (LDAP, the SMTP relay), at least
/// one; the error says what is wrong with the file.
pub fn ca_certificates(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate in the file".into());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[ldap]
url = "ldap://127.0.0.1:3890"
base_dn = "ou=people,dc=example,dc=edu"

[tenant]
accepted_domains = ["example.edu"]
onmicrosoft_domain = "exampleedu.onmicrosoft.com"
routing_domain = "exampleedu.mail.onmicrosoft.com"
upn_domain = "example.edu"
"#;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::from_toml(text, Path::new("test.toml"), env)
    }

    #[test]
    fn defaults_fill_what_the_file_leaves_out() {
        let c = load(MINIMAL, &[]).unwrap();
        assert_eq!(c.ldap.page_size, 500);
        assert!(!c.ldap.content_sync);
        assert_eq!(c.ldap.full_reconcile_interval_hours, 24);
        assert_eq!(c.ldap.scope, Scope::Sub);
        assert_eq!(c.ldap.attributes.anchor, "entryUUID");
        assert_eq!(c.tenant.anchor_attribute, "extensionAttribute15");
        assert_eq!(c.safety.max_deletes_per_run, 50);
        assert_eq!(c.safety.deletes_per_24h(), 100);
        assert_eq!(c.safety.deletes_per_7d(), 250);
        assert_eq!(c.tenant.endpoints.graph, "https://graph.microsoft.com");
    }

    #[test]
    fn environment_overrides_file_at_any_depth() {
        let c = load(
            MINIMAL,
            &[
                ("LDAP2EXO__LDAP__PAGE_SIZE", "42"),
                ("LDAP2EXO__LDAP__ATTRIBUTES__ANCHOR", "uidNumber"),
                ("LDAP2EXO__LDAP__FILTER", "(uid=*)"),
                ("LDAP2EXO__SAFETY__MAX_DELETE_PERCENT", "2.5"),
                (
                    "LDAP2EXO__TENANT__ACCEPTED_DOMAINS",
                    r#"["example.edu", "staff.example.edu"]"#,
                ),
                ("LDAP2EXO_CONFIG", "/not/a/key"),
            ],
        )
        .unwrap();
        assert_eq!(c.ldap.page_size, 42);
        assert_eq!(c.ldap.attributes.anchor, "uidNumber");
        assert_eq!(c.ldap.filter, "(uid=*)");
        assert_eq!(c.safety.max_delete_percent, 2.5);
        assert_eq!(c.tenant.accepted_domains.len(), 2);
    }

    #[test]
    fn unknown_keys_are_named() {
        let text = MINIMAL.replace("[tenant]", "[tenant]\nacepted_domains = []");
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("acepted_domains"), "{err}");
        let err = load(MINIMAL, &[("LDAP2EXO__LDAP__PAGESIZE", "1")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("pagesize") && err.contains("ldap"), "{err}");
    }

    #[test]
    fn secrets_never_come_from_the_file() {
        let text = MINIMAL.replace("[ldap]", "[ldap]\nbind_password = \"hunter2\"");
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(
            err.contains("ldap.bind_password") && !err.contains("hunter2"),
            "{err}"
        );
        assert!(err.contains("LDAP2EXO__LDAP__BIND_PASSWORD"), "{err}");
    }

    #[test]
    fn secrets_come_from_environment_or_file() {
        let text = MINIMAL.replace("[ldap]", "[ldap]\nbind_dn = \"cn=admin,dc=example,dc=edu\"");
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("no password"), "{err}");
        let c = load(&text, &[("LDAP2EXO__LDAP__BIND_PASSWORD", "s3cret")]).unwrap();
        assert_eq!(c.ldap.bind_password.as_ref().unwrap().expose(), "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let text = text.replace(
            "[ldap]",
            &format!("[ldap]\nbind_password_file = {:?}", file),
        );
        let c = load(&text, &[]).unwrap();
        assert_eq!(c.ldap.bind_password.unwrap().expose(), "from-file");
    }

    #[test]
    fn without_secrets_neither_reads_nor_requires_them() {
        let dir = tempfile::tempdir().unwrap();
        let text = MINIMAL.replace(
            "[ldap]",
            &format!(
                "[ldap]\nbind_dn = \"cn=admin,dc=example,dc=edu\"\nbind_password_file = {:?}",
                dir.path().join("missing")
            ),
        );
        let text = text.replace(
            "[tenant]",
            "[tenant]\ncredential = \"client_secret\"\nclient_secret_file = \"/no/such/secret\"",
        );
        let file = dir.path().join("ldap2exo.toml");
        std::fs::write(&file, &text).unwrap();
        let env = || {
            vec![(
                "LDAP2EXO__TENANT__CLIENT_SECRET".to_owned(),
                "s3cret".to_owned(),
            )]
        };
        let err = Config::load(&file, env()).unwrap_err().to_string();
        assert!(err.contains("ldap.bind_password_file"), "{err}");
        let c = Config::load_without_secrets(&file, env()).unwrap();
        assert!(c.ldap.bind_password.is_none() && c.tenant.client_secret.is_none());
        // Everything else is still checked.
        std::fs::write(&file, text.replace("[ldap]", "[ldap]\npage_size = 0")).unwrap();
        let err = Config::load_without_secrets(&file, env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("ldap.page_size"), "{err}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        for (env, key) in [
            (("LDAP2EXO__LDAP__URL", "http://x"), "ldap.url"),
            (("LDAP2EXO__LDAP__PAGE_SIZE", "0"), "ldap.page_size"),
            (
                ("LDAP2EXO__LDAP__FULL_RECONCILE_INTERVAL_HOURS", "0"),
                "ldap.full_reconcile_interval_hours",
            ),
            (
                ("LDAP2EXO__TENANT__UPN_DOMAIN", "other.org"),
                "tenant.upn_domain",
            ),
            (
                ("LDAP2EXO__TENANT__ANCHOR_ATTRIBUTE", "extensionAttribute16"),
                "tenant.anchor_attribute",
            ),
            (
                ("LDAP2EXO__TENANT__TENANT_ID", "not-a-guid"),
                "tenant.tenant_id",
            ),
            (
                ("LDAP2EXO__TENANT__ENDPOINTS__GRAPH", "http://127.0.0.1"),
                "tenant.endpoints.graph",
            ),
            (
                (
                    "LDAP2EXO__TENANT__ENDPOINTS__EXCHANGE_SCOPE",
                    "https://outlook.office365.us",
                ),
                "tenant.endpoints.exchange_scope",
            ),
            (
                ("LDAP2EXO__SAFETY__MAX_SOURCE_SHRINK_PERCENT", "150"),
                "safety.max_source_shrink_percent",
            ),
            (("LDAP2EXO__LDAP__SCOPE", "subtree"), "ldap.scope"),
        ] {
            let err = load(MINIMAL, &[env]).unwrap_err().to_string();
            assert!(err.contains(key), "{env:?}: {err}");
        }
        let week_below_day = [
            ("LDAP2EXO__SAFETY__MAX_DELETES_PER_24H", "100"),
            ("LDAP2EXO__SAFETY__MAX_DELETES_PER_7D", "99"),
        ];
        let err = load(MINIMAL, &week_below_day).unwrap_err().to_string();
        assert!(err.contains("safety.max_deletes_per_7d"), "{err}");
    }

    #[test]
    fn unset_removal_windows_follow_the_per_run_cap_and_each_other() {
        let big = load(MINIMAL, &[("LDAP2EXO__SAFETY__MAX_DELETES_PER_RUN", "200")]).unwrap();
        assert_eq!(
            (big.safety.deletes_per_24h(), big.safety.deletes_per_7d()),
            (400, 1000)
        );
        let week = load(MINIMAL, &[("LDAP2EXO__SAFETY__MAX_DELETES_PER_7D", "99")]).unwrap();
        assert_eq!(
            (week.safety.deletes_per_24h(), week.safety.deletes_per_7d()),
            (99, 99)
        );
        let day = load(MINIMAL, &[("LDAP2EXO__SAFETY__MAX_DELETES_PER_24H", "300")]).unwrap();
        assert_eq!(
            (day.safety.deletes_per_24h(), day.safety.deletes_per_7d()),
            (300, 300)
        );
    }

    const NOTIFY: &str = r#"
[notify]
to = ["ops@example.edu"]
from = "ldap2exo <ldap2exo@example.edu>"
smtp_host = "relay.example.edu"
"#;

    #[test]
    fn notify_defaults_to_off_and_to_a_required_starttls() {
        let c = load(MINIMAL, &[]).unwrap();
        assert!(!c.notify.enabled());
        assert_eq!(c.notify.tls, SmtpTls::Starttls);
        assert_eq!(c.notify.port(), 25);
        assert_eq!(c.notify.min_interval_minutes, 60);
        let text = format!("{MINIMAL}{NOTIFY}");
        let c = load(&text, &[("LDAP2EXO__NOTIFY__TLS", "tls")]).unwrap();
        assert!(c.notify.enabled());
        assert_eq!(c.notify.port(), 465);
        let c = load(&text, &[("LDAP2EXO__NOTIFY__SMTP_PORT", "587")]).unwrap();
        assert_eq!(c.notify.port(), 587);
    }

    #[test]
    fn notify_refuses_clear_text_off_this_host_and_credentials_in_clear() {
        let text = format!("{MINIMAL}{NOTIFY}");
        let err = load(&text, &[("LDAP2EXO__NOTIFY__TLS", "none")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("notify.tls") && err.contains("relay.example.edu"),
            "{err}"
        );
        for host in ["localhost", "127.0.0.1", "::1", "[::1]"] {
            let c = load(
                &text,
                &[
                    ("LDAP2EXO__NOTIFY__TLS", "none"),
                    ("LDAP2EXO__NOTIFY__SMTP_HOST", host),
                ],
            )
            .unwrap();
            assert_eq!(c.notify.tls, SmtpTls::None, "{host}");
        }
        let err = load(
            &text,
            &[
                ("LDAP2EXO__NOTIFY__TLS", "none"),
                ("LDAP2EXO__NOTIFY__SMTP_HOST", "localhost"),
                ("LDAP2EXO__NOTIFY__USERNAME", "relay"),
                ("LDAP2EXO__NOTIFY__PASSWORD", "pw-in-clear"),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("notify.username") && err.contains("TLS"),
            "{err}"
        );
        assert!(!err.contains("pw-in-clear"), "{err}");
    }

    #[test]
    fn the_smtp_password_is_a_secret_like_the_others() {
        let text = format!("{MINIMAL}{NOTIFY}username = \"relay\"\n");
        let in_file = format!("{text}password = \"hunter2\"\n");
        let err = load(&in_file, &[]).unwrap_err().to_string();
        assert!(
            err.contains("notify.password")
                && err.contains("LDAP2EXO__NOTIFY__PASSWORD")
                && !err.contains("hunter2"),
            "{err}"
        );
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("notify.password_file"), "{err}");
        let c = load(&text, &[("LDAP2EXO__NOTIFY__PASSWORD", "s3cret")]).unwrap();
        assert_eq!(c.notify.password.as_ref().unwrap().expose(), "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("smtp-pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let text = format!("{text}password_file = {file:?}\n");
        let c = load(&text, &[]).unwrap();
        assert_eq!(c.notify.password.unwrap().expose(), "from-file");
        // A password without a username is a mistake, not silently unused.
        let err = load(
            &format!("{MINIMAL}{NOTIFY}"),
            &[("LDAP2EXO__NOTIFY__PASSWORD", "s3cret")],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("notify.username"), "{err}");
    }

    #[test]
    fn notify_addresses_and_outcomes_are_checked_and_named() {
        let text = format!("{MINIMAL}{NOTIFY}");
        for (env, key) in [
            (
                (
                    "LDAP2EXO__NOTIFY__TO",
                    r#"["ops@example.edu", "not an address"]"#,
                ),
                "notify.to",
            ),
            (("LDAP2EXO__NOTIFY__FROM", "ldap2exo"), "notify.from"),
            (("LDAP2EXO__NOTIFY__ON", r#"["failed", "ok"]"#), "notify.on"),
            (("LDAP2EXO__NOTIFY__TLS", "ssl"), "notify.tls"),
            (("LDAP2EXO__NOTIFY__SMTP_PORT", "0"), "notify.smtp_port"),
            (
                ("LDAP2EXO__NOTIFY__MIN_INTERVAL_MINUTES", "20000"),
                "notify.min_interval_minutes",
            ),
        ] {
            let err = load(&text, &[env]).unwrap_err().to_string();
            assert!(err.contains(key), "{env:?}: {err}");
        }
        let err = load(
            MINIMAL,
            &[("LDAP2EXO__NOTIFY__TO", r#"["ops@example.edu"]"#)],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("notify.from"), "{err}");
    }

    #[test]
    fn credential_is_chosen_or_inferred() {
        let c = load(MINIMAL, &[]).unwrap();
        assert_eq!(c.tenant.credential, None);
        let err = c.tenant.credential_kind().unwrap_err();
        assert!(
            err.contains("client_secret_file") && err.contains("certificate_file"),
            "{err}"
        );
        let c = load(MINIMAL, &[("LDAP2EXO__TENANT__CLIENT_SECRET", "s3cret")]).unwrap();
        assert_eq!(c.tenant.credential_kind(), Ok(Credential::ClientSecret));
        let c = load(
            MINIMAL,
            &[(
                "LDAP2EXO__TENANT__CERTIFICATE_FILE",
                "/etc/ldap2exo/app.pem",
            )],
        )
        .unwrap();
        assert_eq!(c.tenant.credential_kind(), Ok(Credential::Certificate));
        for (value, kind) in [
            ("managed_identity", Credential::ManagedIdentity),
            ("workload_identity", Credential::WorkloadIdentity),
        ] {
            let c = load(MINIMAL, &[("LDAP2EXO__TENANT__CREDENTIAL", value)]).unwrap();
            assert_eq!(c.tenant.credential_kind(), Ok(kind));
        }
        // An explicit choice needs its material, and says which key provides it.
        let err = load(MINIMAL, &[("LDAP2EXO__TENANT__CREDENTIAL", "certificate")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tenant.credential") && err.contains("certificate_file"),
            "{err}"
        );
        let err = load(
            MINIMAL,
            &[("LDAP2EXO__TENANT__CREDENTIAL", "client_secret")],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("client_secret_file"), "{err}");
        let err = load(MINIMAL, &[("LDAP2EXO__TENANT__CREDENTIAL", "password")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("tenant.credential"), "{err}");
    }

    #[test]
    fn requested_attributes_are_the_mapped_ones() {
        let mut m = AttributeMap {
            company: String::new(),
            ..Default::default()
        };
        m.aliases.push("MAIL".into());
        let r = m.requested();
        assert!(r.contains(&"entryUUID".to_string()));
        assert!(!r.contains(&"o".to_string()));
        assert_eq!(
            r.iter().filter(|a| a.eq_ignore_ascii_case("mail")).count(),
            1
        );
    }

    #[test]
    fn the_shipped_configuration_files_are_valid() {
        let secrets = [
            ("LDAP2EXO__LDAP__BIND_PASSWORD", "x"),
            ("LDAP2EXO__TENANT__CLIENT_SECRET", "y"),
        ];
        let example = load(include_str!("../config/ldap2exo.example.toml"), &secrets).unwrap();
        assert_eq!(
            example.ldap.rules.hidden_filter.as_deref(),
            Some("(employeeType=service)")
        );
        assert_eq!(
            example.tenant.accepted_domains,
            ["example.edu", "staff.example.edu"]
        );
        // Every default the example states is the real default.
        let d = load(MINIMAL, &[]).unwrap();
        assert_eq!(example.ldap.page_size, d.ldap.page_size);
        assert_eq!(example.ldap.filter, d.ldap.filter);
        assert_eq!(example.ldap.timeout_seconds, d.ldap.timeout_seconds);
        assert_eq!(example.tenant.anchor_attribute, d.tenant.anchor_attribute);
        assert_eq!(example.tenant.concurrency, d.tenant.concurrency);
        assert_eq!(
            example.tenant.propagation_wait_seconds,
            d.tenant.propagation_wait_seconds
        );
        assert_eq!(example.state.path, d.state.path);
        assert_eq!(
            example.safety.max_deletes_per_run,
            d.safety.max_deletes_per_run
        );
        assert_eq!(example.safety.deletes_per_24h(), d.safety.deletes_per_24h());
        assert_eq!(example.safety.deletes_per_7d(), d.safety.deletes_per_7d());
        assert_eq!(
            example.safety.max_delete_percent,
            d.safety.max_delete_percent
        );
        assert_eq!(
            example.safety.max_source_shrink_percent,
            d.safety.max_source_shrink_percent
        );
        assert_eq!(example.safety.grace_period_days, d.safety.grace_period_days);
        assert_eq!(example.daemon.schedule, d.daemon.schedule);
        assert_eq!(example.daemon.listen, d.daemon.listen);
        assert_eq!(example.notify.to, d.notify.to);
        assert_eq!(example.notify.smtp_host, d.notify.smtp_host);
        assert_eq!(example.notify.port(), d.notify.port());
        assert_eq!(example.notify.tls, d.notify.tls);
        assert_eq!(
            example.notify.min_interval_minutes,
            d.notify.min_interval_minutes
        );
        assert_eq!(example.notify.on, d.notify.on);
        assert_eq!(
            format!("{:?}", example.ldap.attributes),
            format!("{:?}", d.ldap.attributes)
        );
        assert_eq!(example.tenant.budget, d.tenant.budget);
        assert_eq!(
            format!("{:?}", example.tenant.endpoints),
            format!("{:?}", d.tenant.endpoints)
        );

        load(include_str!("../config/fixture.toml"), &secrets[..1]).unwrap();
    }

    #[test]
    fn the_migration_section_takes_its_secrets_like_the_others_and_names_bad_keys() {
        let section = "\n[migration]\nimap_server = \"imap.example.edu\"\nmaster_user = \"migration\"\nonprem_routing_domain = \"mbox.example.edu\"\n";
        let text = format!("{MINIMAL}{section}");
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("migration.master_password_file"), "{err}");
        let c = load(&text, &[("LDAP2EXO__MIGRATION__MASTER_PASSWORD", "m4ster")]).unwrap();
        let m = c.migration.unwrap();
        assert_eq!(m.master_password.unwrap().expose(), "m4ster");
        assert_eq!((m.imap_port, m.security), (993, ImapSecurity::Ssl));
        assert_eq!(m.max_cohort, 500);
        let in_file = format!("{text}master_password = \"m4ster\"\n");
        let err = load(&in_file, &[]).unwrap_err().to_string();
        assert!(
            err.contains("migration.master_password") && !err.contains("m4ster"),
            "{err}"
        );
        let env = [("LDAP2EXO__MIGRATION__MASTER_PASSWORD", "m4ster")];
        for (bad, key) in [
            ("security = \"starttls\"\n", "migration.security"),
            ("master_user2 = \"x\"\n", "master_user2"),
            ("max_cohort = 0\n", "migration.max_cohort"),
            (
                "write_bind_dn = \"cn=admin,dc=example,dc=edu\"\n",
                "migration.write_bind_password_file",
            ),
        ] {
            let err = load(&format!("{text}{bad}"), &env).unwrap_err().to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
        let bad_domain = text.replace("mbox.example.edu", "mbox");
        let err = load(&bad_domain, &env).unwrap_err().to_string();
        assert!(err.contains("migration.onprem_routing_domain"), "{err}");
        // A domain of the tenant's own recipients would make each mailbox forward to itself.
        for own in ["example.edu", "exampleedu.mail.onmicrosoft.com"] {
            let err = load(&text.replace("mbox.example.edu", own), &env)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("migration.onprem_routing_domain")
                    && err.contains("forward to itself"),
                "{own}: {err}"
            );
        }
    }
}
