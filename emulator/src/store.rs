//! The one shared object model. An Entra user and an Exchange recipient (MailUser or
//! UserMailbox) are the same [`User`] record seen through two APIs: Graph's `proxyAddresses`
//! is Exchange's `EmailAddresses`, `onPremisesExtensionAttributes.extensionAttributeN` is
//! `CustomAttributeN`, and so on. Both front ends mutate this store; neither keeps its own
//! copy, so a test that writes through one API and reads through the other sees one truth.
//!
//! Every change bumps a global sequence number, which is what `/users/delta` tokens encode.
//!
//! The store holds the truth, which is what uniqueness checks see (the service is consistent
//! for writes). Reads are rendered per API: [`Store::graph_user`] and
//! [`Store::exchange_user`] undo writes made through the *other* API that are younger than
//! the configured propagation delay ([`Realism`]), hide objects the other API created until
//! they have propagated, and answer 404 for a short window after a create. Every write of an
//! API object goes through [`Store::commit`], which keeps that short write log.

use crate::config::{Realism, SkuConfig, TenantConfig};
use crate::util::{Prng, exchange_local, exchange_utc, fold, iso8601, now_unix};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Soft-deleted objects stay restorable (and keep their addresses reserved) this long.
pub const SOFT_DELETE_RETENTION_SECS: u64 = 30 * 24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {0} not found")]
    NotFound(String),
    #[error("{property} {value} is already used by another object")]
    Conflict {
        property: &'static str,
        value: String,
    },
}

/// What Exchange sees. `None` is a plain Entra user that Exchange does not know as a
/// recipient (never mail-enabled, or its mailbox was disabled by removing the licence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecipientKind {
    MailUser,
    UserMailbox,
}

impl RecipientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientKind::MailUser => "MailUser",
            RecipientKind::UserMailbox => "UserMailbox",
        }
    }
}

/// Which API created an object (or wrote a value): decides which API sees it late.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Origin {
    /// Seeded: visible everywhere at once, no windows.
    #[default]
    Seed,
    /// Created by Graph `POST /users`.
    Graph,
    /// Created by `New-MailUser`: an object that "originated within an external service" for
    /// Graph.
    Exchange,
}

/// A licence a user holds through a group (group-based licensing), seedable only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupLicense {
    pub sku_id: String,
    /// Object id of the licensing group (`assignedByGroup`).
    pub group_id: String,
}

/// Kind of an Exchange-only recipient.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MailObjectKind {
    #[default]
    MailUniversalDistributionGroup,
    MailContact,
}

impl MailObjectKind {
    /// `RecipientTypeDetails` / `RecipientType` as Exchange shows them.
    pub fn type_names(self) -> (&'static str, &'static str) {
        match self {
            MailObjectKind::MailUniversalDistributionGroup => (
                "MailUniversalDistributionGroup",
                "MailUniversalDistributionGroup",
            ),
            MailObjectKind::MailContact => ("MailContact", "MailContact"),
        }
    }
}

/// A distribution group or mail contact: an Exchange recipient that Graph's `/users` never
/// shows, but whose addresses count for uniqueness. Seed format (camelCase).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MailObject {
    /// Generated when empty.
    pub id: String,
    pub guid: String,
    pub name: String,
    pub alias: String,
    pub display_name: Option<String>,
    pub proxy_addresses: Vec<String>,
    /// Contacts: the outside address (bare).
    pub external_email_address: Option<String>,
    pub hidden_from_address_lists_enabled: bool,
    /// Set by the seed lists (`groups` / `contacts`).
    pub kind: MailObjectKind,
    /// Unix seconds of the creation (`WhenCreated`); 0 in a seed: the time of seeding.
    pub created_unix: u64,
    /// Wall-clock milliseconds of the last change (`WhenChanged`); 0 in a seed: the creation
    /// time. Nothing in the emulator changes a group or contact after seeding.
    pub when_changed_ms: u64,
}

/// One directory object (user) with its Exchange side. Also the seed format for users:
/// fields left out take their defaults, an empty `id` is generated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct User {
    pub id: String,
    pub user_principal_name: String,
    pub display_name: Option<String>,
    pub mail_nickname: String,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    /// Graph `mail` for objects Exchange does not know; for recipients Graph shows the
    /// primary SMTP address instead.
    pub mail: Option<String>,
    pub account_enabled: bool,
    pub employee_id: Option<String>,
    pub usage_location: Option<String>,
    pub department: Option<String>,
    pub job_title: Option<String>,
    pub office_location: Option<String>,
    pub mobile_phone: Option<String>,
    pub company_name: Option<String>,
    pub business_phones: Vec<String>,
    pub other_mails: Vec<String>,
    /// `SMTP:` (primary) / `smtp:` prefixed, like Graph and Exchange show them.
    pub proxy_addresses: Vec<String>,
    /// Index 1..=15 → value: Graph extensionAttributeN, Exchange CustomAttributeN.
    pub extension_attributes: BTreeMap<u8, String>,
    /// Assigned SKU ids.
    pub assigned_licenses: Vec<String>,
    pub recipient_type_details: Option<RecipientKind>,
    /// Exchange `Name` (unique among recipients).
    pub exchange_name: Option<String>,
    pub exchange_guid: String,
    /// Bare address; Exchange shows it as `SMTP:addr`.
    pub external_email_address: Option<String>,
    pub hidden_from_address_lists_enabled: bool,
    pub forwarding_smtp_address: Option<String>,
    pub deliver_to_mailbox_and_forward: bool,
    pub created_unix: u64,
    /// Set while soft-deleted.
    pub deleted_unix: Option<u64>,
    /// Sequence number of the last change (for delta).
    pub changed_seq: u64,
    /// Wall-clock milliseconds of the last change (for eventual consistency).
    pub changed_ms: u64,
    /// Wall-clock milliseconds of the last change Exchange shows (`WhenChanged`), stamped by
    /// [`Store::commit`] (when the Exchange view changed), [`Store::soft_delete`] and
    /// [`Store::restore`]; 0 in a seed: the creation time. A Graph write Exchange sees late
    /// counts from when Exchange sees it ([`Store::exchange_changed_ms`]).
    pub when_changed_ms: u64,
    /// Which API created the object (seeds: `seed`).
    pub origin: Origin,
    /// Wall-clock milliseconds of the create through an API (0 for seeds: long ago).
    pub created_ms: u64,
    /// When a licence-triggered mailbox conversion completes (slow provisioning).
    pub mailbox_due_ms: Option<u64>,
    /// Licences held through groups (shown in `assignedLicenses` with `assignedByGroup`).
    pub group_licenses: Vec<GroupLicense>,
}

impl Default for User {
    fn default() -> Self {
        User {
            id: String::new(),
            user_principal_name: String::new(),
            display_name: None,
            mail_nickname: String::new(),
            given_name: None,
            surname: None,
            mail: None,
            account_enabled: true,
            employee_id: None,
            usage_location: None,
            department: None,
            job_title: None,
            office_location: None,
            mobile_phone: None,
            company_name: None,
            business_phones: Vec::new(),
            other_mails: Vec::new(),
            proxy_addresses: Vec::new(),
            extension_attributes: BTreeMap::new(),
            assigned_licenses: Vec::new(),
            recipient_type_details: None,
            exchange_name: None,
            exchange_guid: String::new(),
            external_email_address: None,
            hidden_from_address_lists_enabled: false,
            forwarding_smtp_address: None,
            deliver_to_mailbox_and_forward: false,
            created_unix: 0,
            deleted_unix: None,
            changed_seq: 0,
            changed_ms: 0,
            when_changed_ms: 0,
            origin: Origin::Seed,
            created_ms: 0,
            mailbox_due_ms: None,
            group_licenses: Vec::new(),
        }
    }
}

impl User {
    pub fn is_deleted(&self) -> bool {
        self.deleted_unix.is_some()
    }

    /// Direct and group-assigned SKU ids, without duplicates.
    pub fn all_licenses(&self) -> Vec<String> {
        let mut v = self.assigned_licenses.clone();
        for g in &self.group_licenses {
            if !v.iter().any(|l| l.eq_ignore_ascii_case(&g.sku_id)) {
                v.push(g.sku_id.clone());
            }
        }
        v
    }

    /// The bare primary SMTP address (`SMTP:` upper case), if any.
    pub fn primary_smtp(&self) -> Option<String> {
        self.proxy_addresses
            .iter()
            .find(|p| p.starts_with("SMTP:"))
            .map(|p| p[5..].to_string())
    }

    /// Every address this object reserves, folded: UPN, mail and SMTP proxy addresses.
    pub fn reserved_addresses(&self) -> Vec<String> {
        let mut v = vec![fold(&self.user_principal_name)];
        if let Some(m) = &self.mail {
            v.push(fold(m));
        }
        for p in &self.proxy_addresses {
            v.push(fold(strip_smtp(p)));
        }
        v
    }

    /// Whether `folded` (lower case, without `smtp:`) is one of [`Self::reserved_addresses`],
    /// without allocating: lookups scan every user, 40,000 of them in the benchmark.
    pub fn reserves(&self, folded: &str) -> bool {
        self.user_principal_name.eq_ignore_ascii_case(folded)
            || self
                .mail
                .as_deref()
                .is_some_and(|m| m.eq_ignore_ascii_case(folded))
            || self
                .proxy_addresses
                .iter()
                .any(|p| strip_smtp(p).eq_ignore_ascii_case(folded))
    }

    /// [`Self::name`] without a copy.
    pub fn name_str(&self) -> &str {
        self.exchange_name.as_deref().unwrap_or(&self.mail_nickname)
    }

    /// The name Exchange shows (`Name`, also its `Identity`).
    pub fn name(&self) -> String {
        self.exchange_name
            .clone()
            .unwrap_or_else(|| self.mail_nickname.clone())
    }
}

/// `smtp:a@b` → `a@b`; other prefixes (`x500:`, `sip:`) are kept.
pub fn strip_smtp(p: &str) -> &str {
    if p.len() > 5 && p[..5].eq_ignore_ascii_case("smtp:") {
        &p[5..]
    } else {
        p
    }
}

pub fn domain_of(addr: &str) -> &str {
    addr.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
}

/// RFC 5321-ish address check, as strict as Exchange's in the ways that matter: a local
/// part of allowed characters without leading, trailing or doubled dots, and a dotted domain.
pub fn valid_smtp(addr: &str) -> bool {
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
    let domain_ok = domain.contains('.')
        && domain.len() <= 255
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    local_ok && domain_ok
}

/// Graph's mailNickname rule (also Exchange's Alias): 1–64 printable ASCII characters, none
/// of `@ ( ) \ [ ] " ; : < > ,` and no space.
pub fn valid_mail_nickname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_graphic() && !"@()\\[]\";:<>,".contains(c))
}

/// A removed (purged) object, remembered so delta can report `reason: deleted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tombstone {
    pub id: String,
    pub seq: u64,
}

/// One write of a user through an API, kept while the other API may not see it yet.
#[derive(Debug, Clone)]
pub struct WriteRecord {
    pub ms: u64,
    pub source: Origin,
    pub before: User,
    pub after: User,
    /// Whether delta has been told (the write became visible to Graph).
    pub announced: bool,
    /// Whether the write changed what Exchange shows of the user (then a Graph write moves
    /// `WhenChanged` once Exchange sees it).
    pub exchange_visible: bool,
}

/// Which users hold which address and which `Name`, so that the uniqueness checks every
/// write makes do not scan every user (40,000 in the rollover benchmark). Kept by the only
/// paths that write a user's addresses or names: [`Store::insert`], [`Store::commit`] and
/// [`Store::purge`]. Debug builds (the test suite) check every lookup against a full scan.
#[derive(Debug, Default)]
pub struct Index {
    /// Folded UPN, `mail` and proxy address (without `smtp:`) → user ids.
    addresses: HashMap<String, BTreeSet<String>>,
    /// Folded `Name` ([`User::name_str`]) → user ids.
    names: HashMap<String, BTreeSet<String>>,
    /// Folded alias (`mailNickname`) and Exchange `Guid` → user ids: with the two above, every
    /// identity an Exchange `-Identity` names.
    aliases: HashMap<String, BTreeSet<String>>,
}

impl Index {
    pub(crate) fn add(&mut self, u: &User) {
        for a in u.reserved_addresses() {
            self.addresses.entry(a).or_default().insert(u.id.clone());
        }
        self.names
            .entry(fold(u.name_str()))
            .or_default()
            .insert(u.id.clone());
        for a in [&u.mail_nickname, &u.exchange_guid] {
            self.aliases
                .entry(fold(a))
                .or_default()
                .insert(u.id.clone());
        }
    }

    pub(crate) fn remove(&mut self, u: &User) {
        let keys = u.reserved_addresses();
        for a in keys {
            if let Some(ids) = self.addresses.get_mut(&a) {
                ids.remove(&u.id);
                if ids.is_empty() {
                    self.addresses.remove(&a);
                }
            }
        }
        let name = fold(u.name_str());
        if let Some(ids) = self.names.get_mut(&name) {
            ids.remove(&u.id);
            if ids.is_empty() {
                self.names.remove(&name);
            }
        }
        for a in [fold(&u.mail_nickname), fold(&u.exchange_guid)] {
            if let Some(ids) = self.aliases.get_mut(&a) {
                ids.remove(&u.id);
                if ids.is_empty() {
                    self.aliases.remove(&a);
                }
            }
        }
    }

    /// The ids that may answer to the folded `-Identity` (`id`; `bare` without `smtp:`): by
    /// object id, Name, alias, Guid, UPN or address, in id order.
    pub(crate) fn identified_by<'a>(&'a self, id: &'a str, bare: &'a str) -> BTreeSet<&'a String> {
        self.names
            .get(id)
            .into_iter()
            .chain(self.aliases.get(id))
            .chain(self.addresses.get(bare))
            .flatten()
            .collect()
    }

    /// The ids that may hold the folded address, in id order (as a scan of `users` meets them).
    fn holding(&self, folded: &str) -> impl Iterator<Item = &String> {
        self.addresses.get(folded).into_iter().flatten()
    }

    /// The ids that may be named the folded name, in id order.
    pub(crate) fn named(&self, folded: &str) -> impl Iterator<Item = &String> {
        self.names.get(folded).into_iter().flatten()
    }
}

/// The whole tenant.
#[derive(Debug)]
pub struct Store {
    /// Addresses and names to users ([`Index`]).
    pub index: Index,
    pub tenant: TenantConfig,
    pub users: BTreeMap<String, User>,
    /// Distribution groups and mail contacts.
    pub mail_objects: Vec<MailObject>,
    /// Delays and strict-mode switches.
    pub realism: Realism,
    /// Recent writes per user id (empty in instant mode).
    pub log: BTreeMap<String, Vec<WriteRecord>>,
    pub tombstones: Vec<Tombstone>,
    pub inbound_connectors: Vec<Value>,
    pub outbound_connectors: Vec<Value>,
    pub seq: u64,
    pub rng: Prng,
    /// How many delta and skip tokens have been issued; each token carries its number.
    pub delta_issued: u64,
    /// Tokens numbered below this are treated as expired (`expire_delta_tokens`): counted,
    /// not timed, so a token issued right after an expiry is good whatever the clock says.
    pub delta_epoch: u64,
    /// Addresses and UPNs (folded) recently removed from a recipient: its id, and until when
    /// (wall-clock ms) nobody else may take them ([`Realism::address_release_ms`]).
    pub released: BTreeMap<String, (String, u64)>,
    /// IMAP migration endpoints and batches; not part of the state dump (the batches' CSVs
    /// hold passwords).
    pub migration: crate::exchange::migration::MigrationState,
}

/// Serializable snapshot for tests and `--state-dump`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateDump {
    pub tenant: TenantConfig,
    pub users: Vec<User>,
    pub tombstones: Vec<Tombstone>,
    #[serde(default)]
    pub mail_objects: Vec<MailObject>,
    pub inbound_connectors: Vec<Value>,
    pub outbound_connectors: Vec<Value>,
    /// skuId → consumed units.
    pub consumed_units: BTreeMap<String, u32>,
    pub seq: u64,
}

impl Store {
    pub fn new(tenant: TenantConfig, id_seed: u64) -> Self {
        Store {
            tenant,
            index: Index::default(),
            users: BTreeMap::new(),
            mail_objects: Vec::new(),
            realism: Realism::instant(),
            log: BTreeMap::new(),
            tombstones: Vec::new(),
            inbound_connectors: Vec::new(),
            outbound_connectors: Vec::new(),
            seq: 0,
            rng: Prng::new(id_seed),
            delta_issued: 0,
            delta_epoch: 0,
            released: BTreeMap::new(),
            migration: Default::default(),
        }
    }

    pub fn dump(&self) -> StateDump {
        StateDump {
            tenant: self.tenant.clone(),
            users: self.users.values().cloned().collect(),
            tombstones: self.tombstones.clone(),
            mail_objects: self.mail_objects.clone(),
            inbound_connectors: self.inbound_connectors.clone(),
            outbound_connectors: self.outbound_connectors.clone(),
            consumed_units: self
                .tenant
                .skus
                .iter()
                .map(|s| (s.sku_id.clone(), self.consumed(&s.sku_id)))
                .collect(),
            seq: self.seq,
        }
    }

    // ----- domains -------------------------------------------------------------------------

    /// Verified domains: the two `onmicrosoft.com` ones and verified custom domains. Exchange
    /// accepts exactly these (as Authoritative accepted domains).
    pub fn accepted_domains(&self) -> Vec<String> {
        let mut v = vec![self.tenant.initial_domain(), self.tenant.mail_domain()];
        v.extend(
            self.tenant
                .domains
                .iter()
                .filter(|d| d.verified)
                .map(|d| d.name.to_ascii_lowercase()),
        );
        v
    }

    /// The accepted domain's `DomainType`: a custom domain's configured one, else
    /// Authoritative (the `onmicrosoft.com` domains).
    pub fn domain_type(&self, domain: &str) -> crate::config::DomainType {
        self.tenant
            .domains
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(domain))
            .map(|d| d.domain_type)
            .unwrap_or_default()
    }

    pub fn is_accepted(&self, domain: &str) -> bool {
        let d = domain.to_ascii_lowercase();
        self.accepted_domains().contains(&d)
    }

    // ----- lookups -------------------------------------------------------------------------

    /// A live (not deleted) user by object id or UPN, case-insensitively.
    pub fn find_live(&self, key: &str) -> Option<&User> {
        let k = fold(key);
        if let Some(u) = self.users.get(&k) {
            return (!u.is_deleted()).then_some(u);
        }
        self.index
            .holding(&k)
            .filter_map(|id| self.users.get(id))
            .find(|u| !u.is_deleted() && u.user_principal_name.eq_ignore_ascii_case(&k))
    }

    /// Who (live or soft-deleted) reserves this address, other than `except`.
    pub fn address_owner(&self, addr: &str, except: Option<&str>) -> Option<&User> {
        let a = fold(strip_smtp(addr));
        let found = self
            .index
            .holding(&a)
            .filter_map(|id| self.users.get(id))
            .filter(|u| Some(u.id.as_str()) != except)
            .find(|u| u.reserves(&a));
        debug_assert_eq!(
            found.map(|u| &u.id),
            self.users
                .values()
                .filter(|u| Some(u.id.as_str()) != except)
                .find(|u| u.reserves(&a))
                .map(|u| &u.id),
            "the address index is out of step for {a}"
        );
        found
    }

    /// Whether anyone (live or soft-deleted user other than `except`, group or contact)
    /// reserves this address.
    pub fn address_taken(&self, addr: &str, except: Option<&str>) -> bool {
        let a = fold(strip_smtp(addr));
        let still_reserved = self
            .released
            .get(&a)
            .is_some_and(|(by, until)| Some(by.as_str()) != except && *until > now_millis());
        still_reserved
            || self.address_owner(addr, except).is_some()
            || self.mail_objects.iter().any(|o| {
                Some(o.id.as_str()) != except
                    && o.proxy_addresses
                        .iter()
                        .any(|p| strip_smtp(p).eq_ignore_ascii_case(&a))
            })
    }

    /// A user whose UPN is this one (live or soft-deleted), other than `except`.
    pub fn upn_owner(&self, upn: &str, except: Option<&str>) -> Option<&User> {
        let a = fold(upn);
        let found = self
            .index
            .holding(&a)
            .filter_map(|id| self.users.get(id))
            .filter(|u| Some(u.id.as_str()) != except)
            .find(|u| u.user_principal_name.eq_ignore_ascii_case(&a));
        debug_assert_eq!(
            found.map(|u| &u.id),
            self.users
                .values()
                .filter(|u| Some(u.id.as_str()) != except)
                .find(|u| u.user_principal_name.eq_ignore_ascii_case(&a))
                .map(|u| &u.id),
            "the address index is out of step for the UPN {a}"
        );
        found
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut User> {
        self.users.get_mut(&fold(id))
    }

    // ----- changes -------------------------------------------------------------------------

    /// Marks a user as changed (for delta and eventual consistency).
    pub fn touch(&mut self, id: &str) {
        self.seq += 1;
        let seq = self.seq;
        if let Some(u) = self.users.get_mut(&fold(id)) {
            u.changed_seq = seq;
            u.changed_ms = now_millis();
        }
    }

    /// Inserts a user, generating what is missing; answers its id. No validation: the API
    /// front ends validate, seeding is trusted.
    pub fn insert(&mut self, mut u: User) -> String {
        if u.id.is_empty() {
            u.id = self.rng.uuid();
        }
        u.id = fold(&u.id);
        if u.exchange_guid.is_empty() {
            u.exchange_guid = self.rng.uuid();
        }
        if u.created_unix == 0 {
            u.created_unix = now_unix();
        }
        if u.when_changed_ms == 0 {
            u.when_changed_ms = self.exchange_created_ms(&u);
        }
        let id = u.id.clone();
        if let Some(old) = self.users.get(&id) {
            self.index.remove(old);
        }
        self.index.add(&u);
        self.users.insert(id.clone(), u);
        self.touch(&id);
        id
    }

    pub fn soft_delete(&mut self, id: &str) -> Result<(), StoreError> {
        let u = self
            .get_mut(id)
            .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        u.deleted_unix = Some(now_unix());
        u.when_changed_ms = u.when_changed_ms.max(now_millis());
        self.touch(id);
        Ok(())
    }

    /// Restores a soft-deleted user unless a live object took one of its addresses meanwhile.
    pub fn restore(&mut self, id: &str) -> Result<(), StoreError> {
        let u = self
            .users
            .get(&fold(id))
            .filter(|u| u.is_deleted())
            .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        for a in u.reserved_addresses() {
            let live_user = self
                .address_owner(&a, Some(&u.id))
                .is_some_and(|o| !o.is_deleted());
            let other = self
                .mail_objects
                .iter()
                .any(|o| o.proxy_addresses.iter().any(|p| fold(strip_smtp(p)) == a));
            if live_user || other {
                return Err(StoreError::Conflict {
                    property: "proxyAddresses",
                    value: a,
                });
            }
        }
        let id = u.id.clone();
        if let Some(u) = self.get_mut(&id) {
            u.deleted_unix = None;
            u.when_changed_ms = u.when_changed_ms.max(now_millis());
        }
        self.touch(&id);
        Ok(())
    }

    /// Removes a soft-deleted user for good.
    pub fn purge(&mut self, id: &str) -> Result<(), StoreError> {
        let key = fold(id);
        match self.users.get(&key) {
            Some(u) if u.is_deleted() => {}
            _ => return Err(StoreError::NotFound(id.to_string())),
        }
        if let Some(u) = self.users.remove(&key) {
            self.index.remove(&u);
        }
        self.seq += 1;
        self.tombstones.push(Tombstone {
            id: key,
            seq: self.seq,
        });
        Ok(())
    }

    /// Purges soft-deleted users past the retention period (called before reads).
    pub fn purge_expired(&mut self) {
        let now = now_unix();
        let old: Vec<String> = self
            .users
            .values()
            .filter(|u| {
                u.deleted_unix
                    .is_some_and(|d| now.saturating_sub(d) > SOFT_DELETE_RETENTION_SECS)
            })
            .map(|u| u.id.clone())
            .collect();
        for id in old {
            let _ = self.purge(&id);
        }
    }

    // ----- licences ------------------------------------------------------------------------

    pub fn sku(&self, sku_id: &str) -> Option<&SkuConfig> {
        self.tenant
            .skus
            .iter()
            .find(|s| s.sku_id.eq_ignore_ascii_case(sku_id))
    }

    /// Units in use: assignments on live users (deleting a user frees its licences).
    pub fn consumed(&self, sku_id: &str) -> u32 {
        self.users
            .values()
            .filter(|u| !u.is_deleted())
            .filter(|u| {
                u.all_licenses()
                    .iter()
                    .any(|l| l.eq_ignore_ascii_case(sku_id))
            })
            .count() as u32
    }

    /// Applies what a licence change does on the Exchange side: an Exchange plan turns the
    /// object into a mailbox in place (adding the UPN and the MOERA address, dropping
    /// addresses on domains that are not accepted); losing the last Exchange plan disables the
    /// mailbox, which leaves no recipient at all.
    pub fn apply_licence_effects(&mut self, id: &str) {
        let Some(u) = self.users.get(&fold(id)) else {
            return;
        };
        let has_exchange = u
            .all_licenses()
            .iter()
            .any(|l| self.sku(l).is_some_and(|s| s.has_exchange()));
        let accepted = self.accepted_domains();
        let initial = self.tenant.initial_domain();
        match (has_exchange, u.recipient_type_details) {
            (true, Some(RecipientKind::UserMailbox))
            | (false, None)
            | (false, Some(RecipientKind::MailUser)) => {}
            (true, _) => {
                let mut u = u.clone();
                let mut addrs: Vec<String> = u
                    .proxy_addresses
                    .iter()
                    .filter(|p| {
                        let bare = strip_smtp(p);
                        bare.len() == p.len() // non-SMTP proxies are kept
                            || accepted.contains(&domain_of(bare).to_ascii_lowercase())
                    })
                    .cloned()
                    .collect();
                if let Some(m) = u.mail.clone()
                    && u.recipient_type_details.is_none()
                    && accepted.contains(&domain_of(&m).to_ascii_lowercase())
                    && !addrs.iter().any(|p| fold(strip_smtp(p)) == fold(&m))
                {
                    addrs.push(format!("smtp:{m}"));
                }
                let upn = u.user_principal_name.clone();
                if !addrs.iter().any(|p| fold(strip_smtp(p)) == fold(&upn)) {
                    addrs.push(format!("smtp:{upn}"));
                }
                if !addrs
                    .iter()
                    .any(|p| fold(domain_of(strip_smtp(p))) == initial)
                {
                    let moera = self.free_moera(&u.mail_nickname, &u.id);
                    addrs.push(format!("smtp:{moera}"));
                }
                if !addrs.iter().any(|p| p.starts_with("SMTP:")) {
                    // The UPN becomes primary when the old primary was dropped.
                    for p in addrs.iter_mut() {
                        if fold(strip_smtp(p)) == fold(&upn) {
                            *p = format!("SMTP:{}", strip_smtp(p));
                        }
                    }
                }
                u.proxy_addresses = addrs;
                u.recipient_type_details = Some(RecipientKind::UserMailbox);
                u.external_email_address = None;
                u.mailbox_due_ms = None;
                if u.exchange_name.is_none() {
                    u.exchange_name = Some(u.mail_nickname.clone());
                }
                self.commit(u, Origin::Exchange);
            }
            (false, Some(RecipientKind::UserMailbox)) => {
                let mut u = u.clone();
                u.recipient_type_details = None;
                self.commit(u, Origin::Exchange);
            }
        }
    }

    /// `alias@<tenant>.onmicrosoft.com`, or with a number appended when taken (as Exchange
    /// does).
    pub fn free_moera(&self, alias: &str, owner: &str) -> String {
        let d = self.tenant.initial_domain();
        let mut candidate = format!("{alias}@{d}");
        let mut n = 1;
        while self.address_taken(&candidate, Some(owner)) {
            n += 1;
            candidate = format!("{alias}{n}@{d}");
        }
        candidate
    }

    // ----- views ---------------------------------------------------------------------------

    /// Every Graph property the emulator knows, for `$select` and `$filter`.
    pub fn graph_view(&self, u: &User) -> Map<String, Value> {
        let mut m = Map::new();
        let opt = |v: &Option<String>| v.clone().map(Value::String).unwrap_or(Value::Null);
        let mail = if u.recipient_type_details.is_some() {
            u.primary_smtp()
        } else {
            u.mail.clone()
        };
        m.insert("id".into(), json!(u.id));
        m.insert("userPrincipalName".into(), json!(u.user_principal_name));
        m.insert("displayName".into(), opt(&u.display_name));
        m.insert("givenName".into(), opt(&u.given_name));
        m.insert("surname".into(), opt(&u.surname));
        m.insert("mail".into(), opt(&mail));
        m.insert("mailNickname".into(), json!(u.mail_nickname));
        m.insert("accountEnabled".into(), json!(u.account_enabled));
        m.insert("employeeId".into(), opt(&u.employee_id));
        m.insert("usageLocation".into(), opt(&u.usage_location));
        m.insert("department".into(), opt(&u.department));
        m.insert("jobTitle".into(), opt(&u.job_title));
        m.insert("officeLocation".into(), opt(&u.office_location));
        m.insert("mobilePhone".into(), opt(&u.mobile_phone));
        m.insert("companyName".into(), opt(&u.company_name));
        m.insert("preferredLanguage".into(), Value::Null);
        m.insert("businessPhones".into(), json!(u.business_phones));
        m.insert("otherMails".into(), json!(u.other_mails));
        m.insert("proxyAddresses".into(), json!(u.proxy_addresses));
        let mut ext = Map::new();
        for i in 1..=15u8 {
            ext.insert(
                format!("extensionAttribute{i}"),
                opt(&u.extension_attributes.get(&i).cloned()),
            );
        }
        m.insert("onPremisesExtensionAttributes".into(), Value::Object(ext));
        self.insert_licences(&mut m, u);
        m.insert("createdDateTime".into(), json!(iso8601(u.created_unix)));
        m.insert(
            "deletedDateTime".into(),
            u.deleted_unix
                .map(|d| json!(iso8601(d)))
                .unwrap_or(Value::Null),
        );
        m.insert("onPremisesSyncEnabled".into(), Value::Null);
        m.insert("userType".into(), json!("Member"));
        m
    }

    /// `assignedLicenses`, `assignedPlans` and `licenseAssignmentStates` (direct licences,
    /// then group-assigned ones with `assignedByGroup`).
    fn insert_licences(&self, m: &mut Map<String, Value>, u: &User) {
        let mut held: Vec<(String, Value)> = u
            .assigned_licenses
            .iter()
            .map(|s| (s.clone(), Value::Null))
            .collect();
        for g in &u.group_licenses {
            held.push((g.sku_id.clone(), json!(g.group_id)));
        }
        let when = json!(iso8601(u.created_unix));
        let mut plans = Vec::new();
        let mut states = Vec::new();
        let mut assigned: Vec<Value> = Vec::new();
        for (sku, by_group) in &held {
            if !assigned.iter().any(|a| a["skuId"] == json!(sku)) {
                assigned.push(json!({"disabledPlans": [], "skuId": sku}));
            }
            states.push(
                json!({"skuId": sku, "assignmentState": "Active", "state": "Active",
                "assignedByGroup": by_group, "disabledPlans": [], "error": "None",
                "lastUpdatedDateTime": when}),
            );
            for p in self
                .sku(sku)
                .map(|s| s.service_plans.as_slice())
                .unwrap_or(&[])
            {
                if !plans
                    .iter()
                    .any(|x: &Value| x["servicePlanId"] == json!(p.service_plan_id))
                {
                    plans.push(
                        json!({"assignedDateTime": when, "capabilityStatus": "Enabled",
                        "service": plan_service(&p.service_plan_name),
                        "servicePlanId": p.service_plan_id}),
                    );
                }
            }
        }
        m.insert("assignedLicenses".into(), Value::Array(assigned));
        m.insert("assignedPlans".into(), Value::Array(plans));
        m.insert("licenseAssignmentStates".into(), Value::Array(states));
    }

    /// When Exchange saw the user created (`WhenCreated`), in wall-clock milliseconds: the
    /// create through an API (a Graph create once it has reached Exchange), or a seed's
    /// `createdUnix`.
    pub fn exchange_created_ms(&self, u: &User) -> u64 {
        if u.created_ms == 0 {
            return u.created_unix * 1000;
        }
        match u.origin {
            Origin::Graph => u.created_ms + self.realism.graph_to_exchange_ms,
            _ => u.created_ms,
        }
    }

    /// When what Exchange shows of the user last changed (`WhenChanged`), in wall-clock
    /// milliseconds: [`User::when_changed_ms`], or a later Graph write that changed the
    /// Exchange view, counted from when it reached Exchange (its time plus
    /// `graph_to_exchange_ms`; [`Store::settle`] folds it into the user when the log forgets
    /// it).
    pub fn exchange_changed_ms(&self, u: &User) -> u64 {
        let delay = self.realism.graph_to_exchange_ms;
        let now = now_millis();
        self.log
            .get(&u.id)
            .into_iter()
            .flatten()
            .filter(|w| w.source == Origin::Graph && w.exchange_visible)
            .map(|w| w.ms + delay)
            .filter(|t| *t <= now)
            .fold(u.when_changed_ms, u64::max)
    }

    /// The Exchange view of a distribution group or mail contact.
    pub fn mail_object_view(&self, o: &MailObject) -> Map<String, Value> {
        let (details, kind) = o.kind.type_names();
        let primary = o
            .proxy_addresses
            .iter()
            .find(|p| p.starts_with("SMTP:"))
            .map(|p| p[5..].to_string())
            .unwrap_or_default();
        let mut m = Map::new();
        for (k, v) in [
            ("Name", json!(o.name)),
            ("Identity", json!(o.name)),
            ("Id", json!(o.name)),
            ("Alias", json!(o.alias)),
            (
                "DisplayName",
                json!(o.display_name.clone().unwrap_or_else(|| o.name.clone())),
            ),
            ("PrimarySmtpAddress", json!(primary)),
            ("WindowsEmailAddress", json!(primary)),
            ("EmailAddresses", json!(o.proxy_addresses)),
            (
                "ExternalEmailAddress",
                o.external_email_address
                    .as_ref()
                    .map(|e| json!(format!("SMTP:{e}")))
                    .unwrap_or(Value::Null),
            ),
            (
                "HiddenFromAddressListsEnabled",
                json!(o.hidden_from_address_lists_enabled),
            ),
            ("RecipientType", json!(kind)),
            ("RecipientTypeDetails", json!(details)),
            (
                "ExternalDirectoryObjectId",
                json!(if o.kind == MailObjectKind::MailContact {
                    String::new()
                } else {
                    o.id.clone()
                }),
            ),
            ("ExchangeObjectId", json!(o.guid)),
            ("Guid", json!(o.guid)),
            ("WindowsLiveID", json!("")),
            ("UserPrincipalName", json!("")),
        ] {
            m.insert(k.into(), v);
        }
        for f in [
            "FirstName",
            "LastName",
            "Department",
            "Title",
            "Office",
            "Phone",
            "MobilePhone",
            "Company",
        ] {
            m.insert(f.into(), json!(""));
        }
        for i in 1..=15u8 {
            m.insert(format!("CustomAttribute{i}"), json!(""));
        }
        m.insert("IsSoftDeletedByRemove".into(), json!(false));
        insert_dates(&mut m, o.created_unix * 1000, o.when_changed_ms);
        m
    }

    /// The Exchange recipient view (what Get-MailUser / Get-Mailbox / Get-Recipient /
    /// Get-User show), with `WhenChanged`/`WhenCreated` and their `…UTC` forms.
    pub fn exchange_view(&self, u: &User) -> Map<String, Value> {
        let mut m = self.exchange_properties(u);
        insert_dates(
            &mut m,
            self.exchange_created_ms(u),
            self.exchange_changed_ms(u),
        );
        m
    }

    /// [`Self::exchange_view`] without the change time: what a write must alter to move
    /// `WhenChanged`.
    pub(crate) fn exchange_properties(&self, u: &User) -> Map<String, Value> {
        let kind = u
            .recipient_type_details
            .map(|k| k.as_str())
            .unwrap_or("User");
        let name = u.name();
        let primary = u.primary_smtp().unwrap_or_default();
        let org = self.tenant.initial_domain();
        let mut m = Map::new();
        m.insert("Name".into(), json!(name));
        m.insert("Identity".into(), json!(name));
        m.insert("Id".into(), json!(name));
        m.insert(
            "DistinguishedName".into(),
            json!(format!("CN={name},OU={org},OU=Microsoft Exchange Hosted Organizations,DC=EMUPR01A001,DC=prod,DC=outlook,DC=com")),
        );
        m.insert("Alias".into(), json!(u.mail_nickname));
        m.insert(
            "DisplayName".into(),
            json!(u.display_name.clone().unwrap_or_default()),
        );
        m.insert(
            "FirstName".into(),
            json!(u.given_name.clone().unwrap_or_default()),
        );
        m.insert(
            "LastName".into(),
            json!(u.surname.clone().unwrap_or_default()),
        );
        m.insert("PrimarySmtpAddress".into(), json!(primary));
        m.insert("WindowsEmailAddress".into(), json!(primary));
        m.insert("EmailAddresses".into(), json!(u.proxy_addresses));
        m.insert(
            "ExternalEmailAddress".into(),
            u.external_email_address
                .as_ref()
                .map(|e| json!(format!("SMTP:{e}")))
                .unwrap_or(Value::Null),
        );
        m.insert(
            "HiddenFromAddressListsEnabled".into(),
            json!(u.hidden_from_address_lists_enabled),
        );
        for i in 1..=15u8 {
            m.insert(
                format!("CustomAttribute{i}"),
                json!(u.extension_attributes.get(&i).cloned().unwrap_or_default()),
            );
        }
        let opt = |v: &Option<String>| json!(v.clone().unwrap_or_default());
        m.insert("WindowsLiveID".into(), json!(u.user_principal_name));
        m.insert("Department".into(), opt(&u.department));
        m.insert("Title".into(), opt(&u.job_title));
        m.insert("Office".into(), opt(&u.office_location));
        m.insert(
            "Phone".into(),
            json!(u.business_phones.first().cloned().unwrap_or_default()),
        );
        m.insert("MobilePhone".into(), opt(&u.mobile_phone));
        m.insert("Company".into(), opt(&u.company_name));
        m.insert(
            "RecipientType".into(),
            json!(match kind {
                "UserMailbox" => "UserMailbox",
                "MailUser" => "MailUser",
                _ => "User",
            }),
        );
        m.insert("RecipientTypeDetails".into(), json!(kind));
        m.insert("ExternalDirectoryObjectId".into(), json!(u.id));
        m.insert("ExchangeObjectId".into(), json!(u.id));
        m.insert("Guid".into(), json!(u.exchange_guid));
        m.insert("UserPrincipalName".into(), json!(u.user_principal_name));
        m.insert(
            "MicrosoftOnlineServicesID".into(),
            json!(u.user_principal_name),
        );
        m.insert("AccountDisabled".into(), json!(!u.account_enabled));
        m.insert(
            "WhenSoftDeleted".into(),
            u.deleted_unix
                .map(|d| json!(exchange_local(d * 1000)))
                .unwrap_or(Value::Null),
        );
        m.insert("IsSoftDeletedByRemove".into(), json!(u.is_deleted()));
        if u.recipient_type_details == Some(RecipientKind::UserMailbox) {
            m.insert(
                "ForwardingSmtpAddress".into(),
                u.forwarding_smtp_address
                    .as_ref()
                    .map(|f| json!(format!("smtp:{f}")))
                    .unwrap_or(Value::Null),
            );
            m.insert(
                "DeliverToMailboxAndForward".into(),
                json!(u.deliver_to_mailbox_and_forward),
            );
            m.insert("ExchangeGuid".into(), json!(u.exchange_guid));
        }
        m
    }
}

/// `WhenChanged`, `WhenChangedUTC`, `WhenCreated`, `WhenCreatedUTC` as Exchange's REST answers
/// show them (see [`exchange_local`], [`exchange_utc`]).
fn insert_dates(m: &mut Map<String, Value>, created_ms: u64, changed_ms: u64) {
    m.insert("WhenChanged".into(), json!(exchange_local(changed_ms)));
    m.insert("WhenCreated".into(), json!(exchange_local(created_ms)));
    m.insert("WhenChangedUTC".into(), json!(exchange_utc(changed_ms)));
    m.insert("WhenCreatedUTC".into(), json!(exchange_utc(created_ms)));
}

/// Graph's `assignedPlans[].service` for a service plan name (best effort).
fn plan_service(plan: &str) -> &'static str {
    if plan.starts_with("EXCHANGE_") {
        "exchange"
    } else if plan.starts_with("SHAREPOINT") {
        "SharePoint"
    } else if plan.starts_with("TEAMS") || plan.starts_with("MCO") {
        "TeamspaceAPI"
    } else if plan.starts_with("AAD_") {
        "AADPremiumService"
    } else if plan.starts_with("STREAM") {
        "MicrosoftStream"
    } else {
        "Other"
    }
}

pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_rules() {
        assert!(valid_smtp("o'brien.j@example.edu"));
        assert!(!valid_smtp("a..b@example.edu"));
        assert!(!valid_smtp("ab@localhost"));
        assert!(!valid_smtp("a b@example.edu"));
        assert!(valid_mail_nickname("jdoe.2"));
        assert!(!valid_mail_nickname("j doe"));
        assert!(!valid_mail_nickname("j(doe)"));
        assert!(!valid_mail_nickname(&"x".repeat(65)));
    }

    #[test]
    fn the_index_follows_commits_and_purges() {
        let mut s = Store::new(TenantConfig::default(), 1);
        let id = s.insert(User {
            user_principal_name: "ann@example.edu".into(),
            mail_nickname: "ann".into(),
            proxy_addresses: vec!["SMTP:Ann@example.edu".into(), "smtp:a.b@example.edu".into()],
            recipient_type_details: Some(RecipientKind::MailUser),
            ..Default::default()
        });
        assert_eq!(
            s.address_owner("smtp:A.B@example.edu", None).map(|u| &u.id),
            Some(&id)
        );
        let mut u = s.users[&id].clone();
        u.proxy_addresses = vec!["SMTP:ann@example.edu".into(), "smtp:c@example.edu".into()];
        u.exchange_name = Some("Ann B".into());
        s.commit(u, Origin::Exchange);
        assert!(s.address_owner("a.b@example.edu", None).is_none());
        assert!(s.address_owner("c@example.edu", None).is_some());
        assert!(s.address_owner("c@example.edu", Some(&id)).is_none());
        assert_eq!(s.index.named("ann b").count(), 1);
        assert_eq!(s.index.named("ann").count(), 0);
        s.soft_delete(&id).unwrap();
        assert!(
            s.upn_owner("ANN@example.edu", None).is_some(),
            "a deleted user keeps its UPN"
        );
        s.purge(&id).unwrap();
        assert!(s.upn_owner("ann@example.edu", None).is_none());
        assert!(
            s.index.addresses.is_empty() && s.index.names.is_empty() && s.index.aliases.is_empty()
        );
    }

    #[test]
    fn licence_converts_mailuser() {
        let mut s = Store::new(TenantConfig::default(), 1);
        let id = s.insert(User {
            user_principal_name: "ann@example.edu".into(),
            mail_nickname: "ann".into(),
            proxy_addresses: vec![
                "SMTP:ann@example.edu".into(),
                "smtp:ann@unverified.org".into(),
            ],
            recipient_type_details: Some(RecipientKind::MailUser),
            external_email_address: Some("ann@example.edu".into()),
            ..Default::default()
        });
        s.get_mut(&id)
            .unwrap()
            .assigned_licenses
            .push("4b9405b0-7788-4568-add1-99614e613b69".into());
        s.apply_licence_effects(&id);
        let u = &s.users[&id];
        assert_eq!(u.recipient_type_details, Some(RecipientKind::UserMailbox));
        assert_eq!(
            u.proxy_addresses,
            vec!["SMTP:ann@example.edu", "smtp:ann@contoso.onmicrosoft.com"]
        );
        assert_eq!(u.external_email_address, None);
    }
}
