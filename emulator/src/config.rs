//! Configuration of an emulator instance: the tenant (ids, credentials, domains, licences),
//! time limits, faults, and the seed file format shared by the library and the binary.

use crate::faults::FaultConfig;
use crate::store::{MailObject, User};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("tenant_name {0:?} is not a valid initial domain prefix (letters and digits only)")]
    TenantName(String),
    #[error("tenant_id {0:?} must be a GUID")]
    TenantId(String),
    #[error("the app needs a client secret, a client certificate, or both")]
    NoCredential,
    #[error("SKU {0:?} is declared twice")]
    DuplicateSku(String),
    #[error(transparent)]
    Faults(#[from] crate::faults::FaultError),
}

/// A DNS domain added to the tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainConfig {
    pub name: String,
    /// Unverified domains are listed by `GET /domains` but refused for UPNs and addresses.
    #[serde(default = "yes")]
    pub verified: bool,
    /// The accepted domain's `DomainType` in Exchange (verified domains only).
    #[serde(default)]
    pub domain_type: DomainType,
}

/// `DomainType` of an accepted domain (`Get-AcceptedDomain`, `Set-AcceptedDomain
/// -DomainType`): Authoritative unless set. InternalRelay delivers to recipients the tenant
/// has and relays the rest through a connector; Exchange treats mail to it as internal, so
/// automatic forwarding to it is not external auto-forwarding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DomainType {
    #[default]
    Authoritative,
    InternalRelay,
    ExternalRelay,
}

impl DomainType {
    pub fn as_str(self) -> &'static str {
        match self {
            DomainType::Authoritative => "Authoritative",
            DomainType::InternalRelay => "InternalRelay",
            DomainType::ExternalRelay => "ExternalRelay",
        }
    }
}

fn yes() -> bool {
    true
}

/// A service plan inside a SKU. Plans named `EXCHANGE_S_*` give a mailbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServicePlan {
    pub service_plan_id: String,
    pub service_plan_name: String,
}

/// A purchased licence (subscribedSku).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkuConfig {
    pub sku_id: String,
    pub sku_part_number: String,
    /// Purchased units; assignments beyond them fail.
    pub prepaid_units: u32,
    pub service_plans: Vec<ServicePlan>,
}

impl SkuConfig {
    pub fn has_exchange(&self) -> bool {
        self.service_plans
            .iter()
            .any(|p| p.service_plan_name.starts_with("EXCHANGE_S_"))
    }

    /// Exchange Online (Plan 1): real SKU and plan ids.
    pub fn exchange_online_plan1(units: u32) -> Self {
        SkuConfig {
            sku_id: "4b9405b0-7788-4568-add1-99614e613b69".into(),
            sku_part_number: "EXCHANGESTANDARD".into(),
            prepaid_units: units,
            service_plans: vec![ServicePlan {
                service_plan_id: "9aaf7827-d63c-4b61-89c3-182f06f82e5c".into(),
                service_plan_name: "EXCHANGE_S_STANDARD".into(),
            }],
        }
    }

    /// A licence without Exchange (Microsoft Stream, for example): assigning it converts
    /// nothing.
    pub fn without_exchange(units: u32) -> Self {
        SkuConfig {
            sku_id: "1f2f344a-700d-42c9-9427-5cea1d5d7ba6".into(),
            sku_part_number: "STREAM".into(),
            prepaid_units: units,
            service_plans: vec![ServicePlan {
                service_plan_id: "acffdce6-c30f-4dc2-81c0-372e33c515ec".into(),
                service_plan_name: "STREAM_O365_E3".into(),
            }],
        }
    }
}

/// The one tenant and the one app registration the emulator knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TenantConfig {
    pub tenant_id: String,
    /// Prefix of the initial domain: `contoso` gives `contoso.onmicrosoft.com` (the MOERA
    /// domain) and `contoso.mail.onmicrosoft.com`.
    pub tenant_name: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    /// PEM certificate whose key signs client assertions (RS256).
    pub client_certificate_pem: Option<String>,
    /// Custom domains, in addition to the two `onmicrosoft.com` ones that always exist.
    pub domains: Vec<DomainConfig>,
    pub skus: Vec<SkuConfig>,
}

impl Default for TenantConfig {
    fn default() -> Self {
        TenantConfig {
            tenant_id: "00000000-0000-4000-8000-00000000e0e0".into(),
            tenant_name: "contoso".into(),
            client_id: "11111111-1111-4111-8111-111111111111".into(),
            client_secret: Some("emulator-secret".into()),
            client_certificate_pem: None,
            domains: vec![DomainConfig {
                name: "example.edu".into(),
                verified: true,
                domain_type: DomainType::Authoritative,
            }],
            skus: vec![
                SkuConfig::exchange_online_plan1(25),
                SkuConfig::without_exchange(25),
            ],
        }
    }
}

impl TenantConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tenant_name.is_empty()
            || !self.tenant_name.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(ConfigError::TenantName(self.tenant_name.clone()));
        }
        if !is_guid(&self.tenant_id) {
            return Err(ConfigError::TenantId(self.tenant_id.clone()));
        }
        if self.client_secret.is_none() && self.client_certificate_pem.is_none() {
            return Err(ConfigError::NoCredential);
        }
        let mut seen = std::collections::HashSet::new();
        for s in &self.skus {
            if !seen.insert(s.sku_id.to_ascii_lowercase()) {
                return Err(ConfigError::DuplicateSku(s.sku_id.clone()));
            }
        }
        Ok(())
    }

    pub fn initial_domain(&self) -> String {
        format!("{}.onmicrosoft.com", self.tenant_name.to_ascii_lowercase())
    }

    pub fn mail_domain(&self) -> String {
        format!(
            "{}.mail.onmicrosoft.com",
            self.tenant_name.to_ascii_lowercase()
        )
    }
}

pub fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Objects to load at start or through `POST /_emulator/seed`. Also the `--seed FILE` format.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Seed {
    /// Replaces the tenant configuration when present (binary: at start only).
    pub tenant: Option<TenantConfig>,
    pub users: Vec<User>,
    /// Distribution groups (`MailUniversalDistributionGroup`): Exchange-only recipients that
    /// Graph's user listing never shows; their addresses are reserved.
    pub groups: Vec<MailObject>,
    /// Mail contacts (`MailContact`), likewise Exchange-only.
    pub contacts: Vec<MailObject>,
    /// Objects returned as they are by `Get-InboundConnector`.
    pub inbound_connectors: Vec<serde_json::Value>,
    pub outbound_connectors: Vec<serde_json::Value>,
}

/// Timing and strictness knobs that make the emulator behave like the live services
/// (see README "Strict and instant mode"). [`Realism::default`] is strict with short delays
/// suited to tests; [`Realism::instant`] is the emulator's old behaviour: one consistent store,
/// no delays, and none of the refusals that come with strict mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Realism {
    /// How long a value written through Exchange (and an object created by `New-MailUser`)
    /// takes to show in Graph reads. Strict default 1500 ms.
    pub exchange_to_graph_ms: u64,
    /// How long a value written through Graph (and a user created by `POST /users`) takes to
    /// show in Exchange reads. Strict default 1500 ms.
    pub graph_to_exchange_ms: u64,
    /// For this long after a create (either API), requests addressing the new object by id or
    /// identity answer 404. Strict default 400 ms.
    pub create_404_ms: u64,
    /// Time from `assignLicense` with an Exchange plan until the recipient is a
    /// `UserMailbox`. Strict default 2500 ms.
    pub mailbox_provisioning_ms: u64,
    /// More Exchange cmdlet calls in flight at once than this are refused with a plain-text
    /// 429 without `Retry-After`. Strict default `Some(3)`.
    pub exchange_max_concurrent: Option<usize>,
    /// Artificial processing time of every cmdlet call (so concurrency can overlap in
    /// tests). Default 0 in both modes.
    pub exchange_cmdlet_ms: u64,
    /// An Exchange `@odata.nextLink` is single use and expires after this long. Strict default
    /// `Some(5000)`; `None` keeps links valid forever and replayable.
    pub exchange_next_link_ttl_ms: Option<u64>,
    /// The rules strict mode adds: Graph refuses address-book writes on objects Exchange
    /// created, the primary-address rules of `-EmailAddresses`, `New-MailUser -Password`
    /// complexity. Strict default `true`.
    pub strict_rules: bool,
    /// An address or UPN removed from one recipient stays reserved this long before another
    /// may take it (MicrosoftDocs/OfficeDocs-Support#46: "a non-obvious lengthy time … after
    /// removing an address from an account, preventing it from being re-assigned to another
    /// account"; Microsoft publishes no figure). Strict default 1000 ms.
    pub address_release_ms: u64,
}

impl Default for Realism {
    fn default() -> Self {
        Realism {
            exchange_to_graph_ms: 1500,
            graph_to_exchange_ms: 1500,
            create_404_ms: 400,
            mailbox_provisioning_ms: 2500,
            exchange_max_concurrent: Some(3),
            exchange_cmdlet_ms: 0,
            exchange_next_link_ttl_ms: Some(5000),
            strict_rules: true,
            address_release_ms: 1000,
        }
    }
}

impl Realism {
    /// The emulator's old behaviour: every delay zero, no concurrency limit, nextLinks that
    /// never expire, no strict-mode refusals.
    pub fn instant() -> Self {
        Realism {
            exchange_to_graph_ms: 0,
            graph_to_exchange_ms: 0,
            create_404_ms: 0,
            mailbox_provisioning_ms: 0,
            exchange_max_concurrent: None,
            exchange_cmdlet_ms: 0,
            exchange_next_link_ttl_ms: None,
            strict_rules: false,
            address_release_ms: 0,
        }
    }
}

/// How to start an emulator. `Default` gives a usable tenant on a free local port, in strict
/// mode ([`Realism::default`]); [`EmulatorConfig::instant`] gives the old instant mode.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    pub tenant: TenantConfig,
    pub faults: FaultConfig,
    /// Lifetime of issued access tokens (Entra: about an hour).
    pub token_lifetime: Duration,
    /// Lifetime of `/users/delta` tokens (Entra: 7 days for identity resources).
    pub delta_token_lifetime: Duration,
    /// HTTP status for an expired delta token (see README: 410 per TENANT_FACTS; Microsoft's
    /// 2020 announcement describes 400 `syncStateNotFound`).
    pub delta_expired_status: u16,
    /// Objects changed less than this long ago are not yet seen by advanced
    /// (`ConsistencyLevel: eventual`) queries, imitating eventual consistency.
    pub advanced_query_lag: Duration,
    /// Extra names (host names or IPs) for the server certificate.
    pub extra_hostnames: Vec<String>,
    /// Where `POST /_emulator/state-dump` (and the binary on exit) writes the state.
    pub state_dump_path: Option<PathBuf>,
    /// Objects loaded at start.
    pub seed: Seed,
    /// Seed of the PRNG that makes object ids.
    pub id_seed: u64,
    /// Propagation delays, 404 windows, provisioning time and the other strict-mode knobs.
    pub realism: Realism,
}

impl EmulatorConfig {
    /// Like `default()` but in instant mode ([`Realism::instant`]).
    pub fn instant() -> Self {
        EmulatorConfig {
            realism: Realism::instant(),
            ..Default::default()
        }
    }
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tenant: TenantConfig::default(),
            faults: FaultConfig::default(),
            token_lifetime: Duration::from_secs(3599),
            delta_token_lifetime: Duration::from_secs(7 * 24 * 3600),
            delta_expired_status: 410,
            advanced_query_lag: Duration::ZERO,
            extra_hostnames: Vec::new(),
            state_dump_path: None,
            seed: Seed::default(),
            id_seed: 0x1da2_e0e0,
            realism: Realism::default(),
        }
    }
}
