//! inventory: what the tenant holds right now, read once at the start of a run, on the
//! planning side of the pipeline. It tells the planner which objects carry ldap2exo's stamp
//! (and so may be touched), which addresses and names belong to somebody else, and, through
//! [`reconcile`], where the tenant drifted from the state store.
//!
//! Each property is read from the directory that masters it ([`crate::plan::Field::read_from`],
//! TENANT_FACTS "Two directories, one object"):
//!
//! - **Exchange** (`Get-Recipient -ResultSize Unlimited`, every recipient type): the kind
//!   (`RecipientTypeDetails`), addresses and the primary, the hidden flag, the external
//!   address, `Name`, `Alias`, display name and address-book attributes, the UPN
//!   (`WindowsLiveID`) and the stamp in `CustomAttributeN`. Distribution groups and mail
//!   contacts are listed too: their addresses are taken, although Graph's user listing never
//!   shows them. `Get-MailUser -SoftDeletedMailUser` adds the addresses removed MailUsers
//!   still reserve.
//! - **Graph** (`GET /users`, one plain paged listing, not an eventually consistent advanced
//!   query): object ids, `accountEnabled`, licences and their service plans, and the stamp of
//!   users that Graph created (a mailbox's stamp is written in `POST /users`).
//!
//! - **Graph** `GET /subscribedSkus`, when `tenant.mailbox_sku` is configured: how many
//!   units of the mailbox licence are enabled and how many are in use ([`LicencePool`]), so
//!   that the plan can show the licences it needs against those free.
//!
//! The two are joined by Entra object id (`ExternalDirectoryObjectId`). An object that only
//! one side shows yet (Exchange→Graph and Graph→Exchange propagation takes a while, Microsoft
//! publishes no figure) is still managed when that side shows our stamp; the fields the other
//! side would tell are left unknown, so they never look like drift.

pub mod incremental;
mod recipient;
pub mod reconcile;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use serde_json::Value;

use crate::desired::Kind;
use crate::ids::Anchor;
use crate::plan::partial::Key;
use crate::plan::{Field, Fields};
use crate::tenant::graph::SubscribedSku;
use crate::tenant::{GraphUser, Tenant, TenantError, UserQuery};

pub use recipient::Recipient;
pub use reconcile::{Drift, DriftKind, Reconciled, is_service_address, reconcile};

use recipient::Col;

/// A stamped object as the tenant shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantObject {
    /// Entra ID object id.
    pub id: String,
    pub anchor: Anchor,
    /// What the object is, or is becoming: a MailUser with an enabled Exchange plan is a
    /// mailbox being provisioned ([`Self::mailbox_pending`]).
    pub kind: Kind,
    pub upn: String,
    /// Graph's `accountEnabled`; `None` while Graph does not show the object yet.
    pub account_enabled: Option<bool>,
    /// Carries an enabled Exchange Online plan (assigned directly or by a group).
    pub exchange_licensed: bool,
    /// Licensed with an Exchange plan, but Exchange does not show a `UserMailbox` yet: the
    /// mailbox is being provisioned (minutes, after `assignLicense`).
    pub mailbox_pending: bool,
    /// Whether Exchange shows the object as a recipient: only then are the Exchange-read
    /// fields below known.
    pub in_exchange: bool,
    /// Whether Graph shows the object.
    pub in_graph: bool,
    /// The fields as the planner names them, each read from its master (see the module doc);
    /// `emailAddresses` holds every SMTP address but the primary, lower case, sorted.
    pub fields: Fields,
    /// Every proxy address exactly as Exchange shows it (`SMTP:`, `smtp:`, `SIP:`, `SPO:`,
    /// `X500:`, ...): a full `EmailAddresses` list must keep what the tenant added.
    pub proxies: Vec<String>,
    /// Fields whose property the listing did not carry at all (as opposed to carrying it
    /// empty): unknown, so never compared. A listing that lacks a property must not make
    /// every person look changed on every run.
    pub unknown: BTreeSet<Field>,
}

/// The tenant as one run sees it.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Stamped objects by anchor.
    pub managed: BTreeMap<Anchor, TenantObject>,
    /// Every UPN and SMTP address (lower case, without `smtp:`) of every object WITHOUT our
    /// stamp, mapped to a description of its owner (`Name (RecipientTypeDetails)` or the
    /// UPN): creating a recipient that wants one of these is a conflict to report.
    pub foreign: HashMap<String, String>,
    /// Exchange `Name`s (lower case) of every recipient without our stamp, mapped to the
    /// owner's description: `Name` is unique among recipients.
    pub foreign_names: HashMap<String, String>,
    /// Anchors stamped on more than one object (ids): never touched, reported.
    pub duplicates: BTreeMap<Anchor, Vec<String>>,
    /// UPN (lower case) → Exchange `Name` of every live recipient without our stamp. An
    /// unstamped object with exactly the UPN and Name a create plans may be that create's own
    /// object from an earlier run that stopped before the stamp: only apply, with the journal,
    /// can tell, so the plan does not call it a conflict.
    pub unstamped: HashMap<String, String>,
    /// Removed MailUsers of ours still in the recycle bin (`Get-MailUser -SoftDeletedMailUser`
    /// with our stamp), by anchor: they keep reserving their UPN, addresses and `Name` for
    /// 30 days, so a newcomer who needs one of them gets it only after a purge.
    pub own_deleted: BTreeMap<Anchor, DeletedObject>,
    /// The mailbox licence (`tenant.mailbox_sku`) as `GET /subscribedSkus` showed it; `None`
    /// when no mailbox licence is configured or the tenant has no such subscription.
    pub licences: Option<LicencePool>,
    /// Every SMTP address (lower case, without `smtp:`) of every live Exchange recipient,
    /// stamped or not, that the address lists show (`HiddenFromAddressListsEnabled` not
    /// true: "hidden from any Exchange address list", MailEnabledRecipient
    /// .HiddenFromAddressListsEnabled, learn.microsoft.com/previous-versions/exchange-server/
    /// exchange-150/ff330569): the addresses a sender or a GAL lookup resolves. `audit gal`
    /// counts a person resolvable when their primary address is here.
    pub visible_addresses: HashSet<String>,
}

/// A soft-deleted object of ours and what it still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedObject {
    /// Entra object id (`ExternalDirectoryObjectId`): what a purge deletes.
    pub id: String,
    /// Exchange's `Guid` of the soft-deleted recipient: its identity for
    /// `Remove-MailUser -PermanentlyDelete` (a cmdlet identity is Name, alias, DN or GUID).
    pub exchange_guid: Option<String>,
    /// UPN and every SMTP address, lower case.
    pub addresses: BTreeSet<String>,
    /// The Exchange `Name`, lower case.
    pub name: Option<String>,
}

/// Units of the mailbox licence: what the planner weighs the licences it needs against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicencePool {
    /// The SKU's part number (`EXCHANGESTANDARD`), as the operator knows it.
    pub sku: String,
    /// Units that can be assigned: `prepaidUnits.enabled` only. Microsoft's
    /// "licenseUnitsDetail resource type" (Graph v1.0): `suspended` units "can't be
    /// assigned"; `warning` units belong to an expired subscription in its grace period before
    /// suspension, and `lockedOut` ones to a cancelled one. Counting only enabled units may
    /// call a unit of an expiring subscription taken; it never promises one that
    /// `assignLicense` then refuses.
    pub enabled: u32,
    /// `consumedUnits`: units assigned, directly or through groups.
    pub consumed: u32,
}

impl LicencePool {
    /// The pool of `sku` (part number or GUID, resolved as `assignLicense` resolves it) among
    /// the tenant's subscriptions. A SKU whose `capabilityStatus` is not `Enabled` or
    /// `Warning` (suspended, deleted, locked out) has no unit to give, whatever it counts.
    pub fn of(skus: &[SubscribedSku], sku: &str) -> Option<LicencePool> {
        let s = skus.iter().find(|s| s.is(sku))?;
        let usable = s
            .capability_status
            .as_deref()
            .is_none_or(|c| c.eq_ignore_ascii_case("Enabled") || c.eq_ignore_ascii_case("Warning"));
        Some(LicencePool {
            sku: s.sku_part_number.clone(),
            enabled: if usable { s.prepaid_units.enabled } else { 0 },
            consumed: s.consumed_units,
        })
    }

    /// Units that can still be assigned, never negative (a tenant can hold more assignments
    /// than enabled units after a subscription shrank or expired).
    pub fn free(&self) -> u32 {
        self.enabled.saturating_sub(self.consumed)
    }
}

/// The prefix of the stamp value: `ldap2exo:<anchor>`.
pub const STAMP_PREFIX: &str = "ldap2exo:";

/// Graph's largest page for users: fewest requests against the resource-unit budget.
const PAGE: u32 = 999;

/// What the Graph listing selects: only what Graph masters, plus what identifies an object
/// that Exchange does not show yet.
const GRAPH_PROPERTIES: [&str; 8] = [
    "id",
    "userPrincipalName",
    "mail",
    "accountEnabled",
    "proxyAddresses",
    "onPremisesExtensionAttributes",
    "assignedLicenses",
    "assignedPlans",
];

/// The validated stamp attribute: `extensionAttributeN` (Graph) is `CustomAttributeN`
/// (Exchange), N in 1..=15.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StampAttribute(u8);

impl StampAttribute {
    /// Parses `extensionAttribute1` … `extensionAttribute15`.
    pub fn parse(graph_name: &str) -> Result<Self, TenantError> {
        match graph_name
            .strip_prefix("extensionAttribute")
            .and_then(|n| n.parse::<u8>().ok())
        {
            Some(n @ 1..=15) => Ok(StampAttribute(n)),
            _ => Err(TenantError::Config(format!(
                "`{graph_name}` is not extensionAttribute1 … extensionAttribute15"
            ))),
        }
    }

    pub fn graph_name(self) -> String {
        format!("extensionAttribute{}", self.0)
    }

    pub fn exchange_name(self) -> String {
        format!("CustomAttribute{}", self.0)
    }
}

/// Reads the whole tenant once (see the module doc), without the licences.
pub async fn read(tenant: &Tenant, stamp_attribute: &str) -> Result<Inventory, TenantError> {
    read_with_licences(tenant, stamp_attribute, None).await
}

/// Reads the whole tenant once (see the module doc), and the units of `mailbox_sku` when one
/// is configured. A misnamed stamp attribute is an error rather than an empty `managed`:
/// every object would otherwise look deleted behind our back.
pub async fn read_with_licences(
    tenant: &Tenant,
    stamp_attribute: &str,
    mailbox_sku: Option<&str>,
) -> Result<Inventory, TenantError> {
    let stamp = StampAttribute::parse(stamp_attribute)?;
    let started = Instant::now();
    let ex = tenant.exchange();
    let graph_query = UserQuery {
        select: GRAPH_PROPERTIES.iter().map(|s| (*s).to_owned()).collect(),
        top: Some(PAGE),
        ..UserQuery::default()
    };
    let skus = async {
        match mailbox_sku {
            Some(_) => tenant.graph().subscribed_skus().await.map(Some),
            None => Ok(None),
        }
    };
    let stamp_property = stamp.exchange_name();
    let keep = |v: Value| Recipient::with_stamp_property(v, &stamp_property);
    let (recipients, soft_deleted, users, skus) = futures_util::future::try_join4(
        ex.list_recipients_as(keep),
        ex.list_soft_deleted_mail_users_as(keep),
        tenant.graph().list_users(&graph_query),
        skus,
    )
    .await?;
    let counts = (recipients.len(), soft_deleted.len(), users.len());
    let mut inventory = sort(recipients, soft_deleted, users, stamp);
    attach_licences(&mut inventory, mailbox_sku, skus);
    tracing::info!(
        recipients = counts.0,
        soft_deleted = counts.1,
        users = counts.2,
        managed = inventory.managed.len(),
        foreign_addresses = inventory.foreign.len(),
        duplicates = inventory.duplicates.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "tenant inventory read"
    );
    Ok(inventory)
}

/// Puts the units of `mailbox_sku` from `GET /subscribedSkus` into the inventory, and says so.
fn attach_licences(
    inventory: &mut Inventory,
    mailbox_sku: Option<&str>,
    skus: Option<Vec<SubscribedSku>>,
) {
    let (Some(sku), Some(skus)) = (mailbox_sku, skus) else {
        return;
    };
    inventory.licences = LicencePool::of(&skus, sku);
    match &inventory.licences {
        Some(p) => tracing::info!(
            sku = %p.sku,
            enabled = p.enabled,
            consumed = p.consumed,
            free = p.free(),
            "mailbox licences read"
        ),
        None => tracing::warn!(
            sku,
            "the tenant has no subscription for tenant.mailbox_sku; licences are not planned"
        ),
    }
}

/// Sorts the listings into an [`Inventory`]. Pure, so the rules are testable without a
/// tenant.
pub fn sort(
    recipients: Vec<Recipient>,
    soft_deleted: Vec<Recipient>,
    users: Vec<GraphUser>,
    stamp: StampAttribute,
) -> Inventory {
    let mut inv = Inventory::default();
    // The users stay where the listing put them, found by id through an index: a map of
    // them beside the listing's vector held both at once (heaptrack, 20,000 people: 39 MB
    // of map beside 25 MB of vector).
    let mut users = users;
    let mut graph: HashMap<String, usize> = users
        .iter()
        .enumerate()
        .filter_map(|(i, u)| {
            let id = u.id.as_deref().filter(|id| !id.is_empty())?;
            Some((id.to_ascii_lowercase(), i))
        })
        .collect();
    let mut take = |i: usize| std::mem::take(&mut users[i]);
    let mut stamped: BTreeMap<Anchor, Vec<TenantObject>> = BTreeMap::new();

    // By value: each listed recipient is dropped once its object is made, so the raw
    // listing and the sorted inventory are never both whole in memory.
    for r in recipients {
        let r = &r;
        if r.flag(Col::HiddenFromAddressListsEnabled) != Some(true) {
            for a in smtp_proxies(r) {
                inv.visible_addresses.insert(a.to_ascii_lowercase());
            }
        }
        let id = r
            .text(Col::ExternalDirectoryObjectId)
            .map(str::to_ascii_lowercase);
        let user = id.as_deref().and_then(|id| graph.remove(id)).map(&mut take);
        let anchor = our_anchor(r.text(Col::Stamp))
            .or_else(|| user.as_ref().and_then(|u| graph_anchor(u, stamp)));
        match (anchor, id) {
            (Some(anchor), Some(id)) => {
                let obj = from_recipient(anchor.clone(), id, r, user.as_ref());
                stamped.entry(anchor).or_default().push(obj);
            }
            _ => add_foreign_recipient(&mut inv, r, "", user.as_ref()),
        }
    }
    for r in soft_deleted {
        let r = &r;
        // Our own removed MailUsers reserve their addresses too: they are restored when
        // their person returns, or purged when a newcomer needs what they hold; anybody
        // else's are taken.
        match (
            our_anchor(r.text(Col::Stamp)),
            r.text(Col::ExternalDirectoryObjectId),
        ) {
            (Some(anchor), Some(id)) => {
                let addresses = smtp_addresses_and_upn(r)
                    .map(str::to_ascii_lowercase)
                    .collect();
                inv.own_deleted.insert(
                    anchor,
                    DeletedObject {
                        id: id.to_ascii_lowercase(),
                        exchange_guid: r.text(Col::Guid).map(str::to_owned),
                        addresses,
                        name: r.text(Col::Name).map(str::to_lowercase),
                    },
                );
            }
            _ => add_foreign_recipient(&mut inv, r, "soft-deleted ", None),
        }
    }
    // Users Exchange does not show (yet): plain Entra users, and mailboxes just created
    // through Graph that Exchange has not provisioned.
    let mut rest: Vec<GraphUser> = graph.into_values().map(take).collect();
    drop(users);
    rest.sort_by(|a, b| a.id.cmp(&b.id));
    for user in rest {
        match graph_anchor(&user, stamp) {
            Some(anchor) => {
                let obj = from_graph_only(anchor.clone(), &user);
                stamped.entry(anchor).or_default().push(obj);
            }
            None => add_foreign_user(&mut inv.foreign, &user),
        }
    }

    for (anchor, mut objects) in stamped {
        if objects.len() > 1 {
            let mut ids: Vec<String> = objects.iter().map(|o| o.id.clone()).collect();
            ids.sort();
            tracing::warn!(anchor = %anchor, ids = %ids.join(", "), "anchor stamped on more than one object");
            inv.duplicates.insert(anchor, ids);
        } else if let Some(obj) = objects.pop() {
            inv.managed.insert(anchor, obj);
        }
    }
    inv
}

/// The keys ([`crate::plan::partial::Key`]) of a Graph user as stored: its UPN, `mail` and
/// SMTP proxies, the anchor of our stamp, its object id (which joins it with its recipient,
/// as [`sort`] joins them).
pub fn user_keys(user: &GraphUser, stamp: StampAttribute) -> Vec<Key> {
    let mut keys: Vec<Key> = user
        .user_principal_name
        .iter()
        .chain(user.mail.iter())
        .map(|a| Key::identity(a.trim()))
        .collect();
    for p in user.proxy_addresses.iter().flatten() {
        if let Some((_, a)) = smtp_proxy(p) {
            keys.push(Key::identity(a.trim()));
        }
    }
    keys.extend(graph_anchor(user, stamp).map(|a| Key::anchor(&a)));
    keys.extend(user.id.as_deref().map(Key::object_id));
    keys
}

/// The keys of an Exchange recipient as stored: its SMTP proxies, UPN and primary address,
/// `Name`, alias, the anchor of our stamp, and the object id of its user.
pub fn recipient_keys(r: &Recipient) -> Vec<Key> {
    let mut keys: Vec<Key> = smtp_addresses_and_upn(r)
        .chain(r.text(Col::PrimarySmtpAddress))
        .map(|a| Key::identity(a.trim()))
        .collect();
    keys.extend(r.text(Col::Name).map(Key::name));
    keys.extend(r.text(Col::Alias).map(Key::alias));
    keys.extend(our_anchor(r.text(Col::Stamp)).map(|a| Key::anchor(&a)));
    keys.extend(r.text(Col::ExternalDirectoryObjectId).map(Key::object_id));
    keys
}

/// `ldap2exo:<anchor>` → the anchor. A value with our prefix but no valid anchor is not ours.
fn our_anchor(stamp: Option<&str>) -> Option<Anchor> {
    let raw = stamp?.strip_prefix(STAMP_PREFIX)?;
    match Anchor::new(raw) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(stamp = raw, error = %e, "unusable ldap2exo stamp; treating the object as unmanaged");
            None
        }
    }
}

fn graph_anchor(user: &GraphUser, stamp: StampAttribute) -> Option<Anchor> {
    our_anchor(graph_stamp(user, stamp))
}

/// The value of the stamp attribute as Graph shows it on `user`, whoever wrote it.
fn graph_stamp(user: &GraphUser, stamp: StampAttribute) -> Option<&str> {
    user.on_premises_extension_attributes
        .as_ref()
        .and_then(|e| e.get(&stamp.graph_name()))
}

fn exchange_licensed(user: Option<&GraphUser>) -> bool {
    user.and_then(|u| u.assigned_plans.as_ref())
        .is_some_and(|plans| plans.iter().any(|p| p.is_exchange()))
}

/// A managed object from its Exchange recipient, with what Graph masters laid over it.
fn from_recipient(
    anchor: Anchor,
    id: String,
    r: &Recipient,
    user: Option<&GraphUser>,
) -> TenantObject {
    let exchange_licensed = exchange_licensed(user);
    let (kind, mailbox_pending) = match r.text(Col::RecipientTypeDetails) {
        Some("UserMailbox") => (Kind::Mailbox, false),
        _ if exchange_licensed => (Kind::Mailbox, true),
        _ => (Kind::MailUser, false),
    };
    let proxies: Vec<String> = r.list(Col::EmailAddresses).map(str::to_owned).collect();
    let upn = r
        .text(Col::WindowsLiveID)
        .or_else(|| user.and_then(|u| u.user_principal_name.as_deref()))
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mut fields = Fields::new();
    let mut unknown = BTreeSet::new();
    if !upn.is_empty() {
        fields.insert(Field::UserPrincipalName, Value::String(upn.clone()));
    }
    for f in Field::ALL {
        let Some(col) = Col::of_field(f) else {
            continue;
        };
        if !r.has(col) {
            unknown.insert(f);
            continue;
        }
        let v = match f {
            Field::HiddenFromAddressLists => r.flag(col).map(Value::Bool),
            Field::ExternalEmailAddress | Field::ForwardingSmtpAddress => r
                .text(col)
                .map(|a| Value::String(strip_smtp(a).to_ascii_lowercase())),
            _ => r.text(col).map(|s| Value::String(s.to_owned())),
        };
        if let Some(v) = v {
            fields.insert(f, v);
        }
    }
    insert_addresses(&mut fields, &proxies);
    if let Some(enabled) = user.and_then(|u| u.account_enabled) {
        fields.insert(Field::AccountEnabled, Value::Bool(enabled));
    }
    TenantObject {
        id,
        anchor,
        kind,
        upn,
        account_enabled: user.and_then(|u| u.account_enabled),
        exchange_licensed,
        mailbox_pending,
        in_exchange: true,
        in_graph: user.is_some(),
        fields,
        proxies,
        unknown,
    }
}

/// A stamped user that Exchange does not show as a recipient (yet): only what Graph masters
/// is known.
fn from_graph_only(anchor: Anchor, user: &GraphUser) -> TenantObject {
    let exchange_licensed = exchange_licensed(Some(user));
    let upn = user
        .user_principal_name
        .clone()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mut fields = Fields::new();
    fields.insert(Field::UserPrincipalName, Value::String(upn.clone()));
    if let Some(enabled) = user.account_enabled {
        fields.insert(Field::AccountEnabled, Value::Bool(enabled));
    }
    TenantObject {
        id: user.id.clone().unwrap_or_default(),
        anchor,
        // Stamped through Graph and not a recipient: a mailbox on its way (created by
        // `POST /users`, licensed or about to be). ldap2exo creates MailUsers only through
        // Exchange, which shows them at once.
        kind: Kind::Mailbox,
        upn,
        account_enabled: user.account_enabled,
        exchange_licensed,
        // Unlicensed (its licence step never ran), it is not pending but waiting for us.
        mailbox_pending: exchange_licensed,
        in_exchange: false,
        in_graph: true,
        fields,
        proxies: Vec::new(),
        unknown: BTreeSet::new(),
    }
}

/// `primarySmtpAddress` and `emailAddresses` (every other SMTP address, lower case, sorted)
/// from Exchange's proxy list.
fn insert_addresses(fields: &mut Fields, proxies: &[String]) {
    let smtp: Vec<(bool, String)> = proxies
        .iter()
        .filter_map(|p| smtp_proxy(p))
        .map(|(primary, a)| (primary, a.to_ascii_lowercase()))
        .collect();
    let primary = smtp.iter().find(|(p, _)| *p).map(|(_, a)| a.clone());
    let secondary: BTreeSet<&String> = smtp
        .iter()
        .map(|(_, a)| a)
        .filter(|a| Some(*a) != primary.as_ref())
        .collect();
    if let Some(p) = primary {
        fields.insert(Field::PrimarySmtpAddress, Value::String(p));
    }
    fields.insert(
        Field::EmailAddresses,
        Value::Array(secondary.into_iter().cloned().map(Value::String).collect()),
    );
}

/// A recipient's SMTP proxy addresses (without the prefix) and its UPN (`WindowsLiveID`).
fn smtp_addresses_and_upn(r: &Recipient) -> impl Iterator<Item = &str> {
    smtp_proxies(r).chain(r.text(Col::WindowsLiveID))
}

/// A recipient's SMTP proxy addresses, without the prefix.
fn smtp_proxies(r: &Recipient) -> impl Iterator<Item = &str> {
    r.list(Col::EmailAddresses)
        .filter_map(|p| smtp_proxy(p).map(|(_, a)| a))
}

/// Records every address and the `Name` of a recipient without our stamp.
fn add_foreign_recipient(
    inv: &mut Inventory,
    r: &Recipient,
    state: &str,
    user: Option<&GraphUser>,
) {
    let name = r
        .text(Col::Name)
        .or_else(|| r.text(Col::DisplayName))
        .unwrap_or("?");
    let kind = r.text(Col::RecipientTypeDetails).unwrap_or("recipient");
    // The UPN identifies a user best; groups and contacts have only their Name.
    let owner = match r.text(Col::WindowsLiveID) {
        Some(upn) => format!("{upn} ({state}{kind} \"{name}\")"),
        None => format!("{name} ({state}{kind})"),
    };
    let addresses = smtp_addresses_and_upn(r).chain(r.text(Col::PrimarySmtpAddress));
    for a in addresses {
        insert_lower(&mut inv.foreign, a, &owner);
    }
    if let Some(u) = user {
        add_foreign_user(&mut inv.foreign, u);
    }
    if state.is_empty()
        && let (Some(upn), Some(n)) = (r.text(Col::WindowsLiveID), r.text(Col::Name))
    {
        inv.unstamped.insert(upn.to_ascii_lowercase(), n.to_owned());
    }
    // A soft-deleted recipient keeps its Name reserved too (a reused uid finds it taken).
    if let Some(n) = r.text(Col::Name) {
        inv.foreign_names.insert(n.to_lowercase(), owner);
    }
}

/// Records every address of an unstamped Graph user: UPN, SMTP proxies and `mail` (a plain
/// Entra user can own `mail` without any proxy address, and Graph keeps it unique too).
fn add_foreign_user(foreign: &mut HashMap<String, String>, user: &GraphUser) {
    let owner = user
        .user_principal_name
        .clone()
        .or_else(|| user.id.clone())
        .unwrap_or_default();
    let addresses = user
        .user_principal_name
        .iter()
        .chain(user.mail.iter())
        .map(String::as_str)
        .chain(
            user.proxy_addresses
                .iter()
                .flatten()
                .filter_map(|p| smtp_proxy(p).map(|(_, a)| a)),
        );
    for a in addresses {
        if !foreign.contains_key(&a.trim().to_ascii_lowercase()) {
            insert_lower(foreign, a, &owner);
        }
    }
}

fn insert_lower(map: &mut HashMap<String, String>, address: &str, owner: &str) {
    let a = address.trim().to_ascii_lowercase();
    if !a.is_empty() {
        map.insert(a, owner.to_owned());
    }
}

/// `SMTP:a@x` → `(true, "a@x")`, `smtp:a@x` → `(false, "a@x")`; other proxy types (`SIP:`,
/// `X500:`, `SPO:`, …) → `None`. Only the upper-case prefix marks the primary.
pub fn smtp_proxy(proxy: &str) -> Option<(bool, &str)> {
    let (prefix, address) = proxy.split_once(':')?;
    if !prefix.eq_ignore_ascii_case("smtp") || address.trim().is_empty() {
        return None;
    }
    Some((prefix == "SMTP", address.trim()))
}

/// `SMTP:a@x` → `a@x`; a bare address stays as it is.
fn strip_smtp(a: &str) -> &str {
    smtp_proxy(a).map_or(a, |(_, a)| a)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::tenant::ExtensionAttributes;
    use crate::tenant::graph::AssignedPlan;

    const STAMP: StampAttribute = StampAttribute(15);

    /// [`sort`] of listings as Exchange sends them.
    fn sort_values(
        recipients: Vec<Value>,
        soft_deleted: Vec<Value>,
        users: Vec<GraphUser>,
        stamp: StampAttribute,
    ) -> Inventory {
        let listed = |v: Vec<Value>| {
            v.into_iter()
                .map(|v| Recipient::from_listing(v, stamp))
                .collect()
        };
        sort(listed(recipients), listed(soft_deleted), users, stamp)
    }

    fn recipient(id: &str, kind: &str, stamp: Option<&str>, proxies: &[&str]) -> Value {
        json!({
            "ExternalDirectoryObjectId": id,
            "RecipientTypeDetails": kind,
            "Name": format!("n-{id}"),
            "Alias": format!("a-{id}"),
            "DisplayName": format!("Person {id}"),
            "WindowsLiveID": (!kind.starts_with("Mail") || kind == "MailUser").then(|| format!("{id}@example.edu")),
            "EmailAddresses": proxies,
            "HiddenFromAddressListsEnabled": false,
            "CustomAttribute15": stamp,
            "Department": "Physics",
        })
    }

    fn user(id: &str, stamp: Option<&str>, exchange_plan: bool) -> GraphUser {
        GraphUser {
            id: Some(id.into()),
            user_principal_name: Some(format!("{id}@example.edu")),
            account_enabled: Some(false),
            on_premises_extension_attributes: stamp.map(|s| ExtensionAttributes {
                extension_attribute15: Some(s.into()),
                ..Default::default()
            }),
            assigned_plans: Some(if exchange_plan {
                vec![AssignedPlan {
                    service: Some("exchange".into()),
                    capability_status: Some("Enabled".into()),
                    service_plan_id: None,
                }]
            } else {
                vec![AssignedPlan {
                    service: Some("TeamspaceAPI".into()),
                    capability_status: Some("Enabled".into()),
                    service_plan_id: None,
                }]
            }),
            ..GraphUser::default()
        }
    }

    /// A recipient with every property the inventory could read, and some it must not need.
    fn full_recipient(id: &str, kind: &str, stamp: Option<&str>) -> Value {
        let mut r = recipient(
            id,
            kind,
            stamp,
            &["SMTP:x@example.edu", "smtp:y@example.edu"],
        );
        for f in Field::ALL {
            if let Some(p) = f.exchange_property()
                && r.get(p).is_none()
            {
                r[p] = json!(format!("{p} of {id}"));
            }
        }
        r["HiddenFromAddressListsEnabled"] = json!(kind == "MailContact");
        r["ExternalEmailAddress"] = json!(format!("SMTP:{id}@mail.example.org"));
        r["Guid"] = json!(format!("guid-{id}"));
        r["PrimarySmtpAddress"] = json!(format!("p-{id}@example.edu"));
        r["DistinguishedName"] = json!(format!("CN={id},OU=x"));
        r["WhenCreated"] = json!("2026-01-01T00:00:00Z");
        r["CustomAttribute3"] = json!("ldap2exo:not-this-one");
        r
    }

    #[test]
    fn the_compact_listing_keeps_every_property_the_inventory_reads() {
        let live = vec![
            full_recipient("u1", "MailUser", Some("ldap2exo:a1")),
            full_recipient("u2", "UserMailbox", Some("ldap2exo:a2")),
            full_recipient("u3", "UserMailbox", None),
            full_recipient("u4", "MailContact", None),
        ];
        let deleted = vec![
            full_recipient("d1", "MailUser", Some("ldap2exo:a9")),
            full_recipient("d2", "MailUser", None),
        ];
        let users = vec![
            user("u1", None, false),
            user("u2", None, true),
            user("u5", Some("ldap2exo:a5"), false),
        ];
        let inv = sort_values(live, deleted, users, STAMP);
        assert_eq!(inv.managed.len(), 3);
        // A field whose property the compact form dropped would be unknown.
        assert!(
            inv.managed.values().all(|o| o.unknown.is_empty()),
            "{:?}",
            inv.managed
        );
        let u1 = &inv.managed[&Anchor::new("a1").unwrap()];
        assert_eq!(u1.fields["department"], json!("Physics"));
        assert_eq!(u1.fields["jobTitle"], json!("Title of u1"));
        assert_eq!(
            u1.fields["externalEmailAddress"],
            json!("u1@mail.example.org")
        );
        assert_eq!(u1.fields["hiddenFromAddressLists"], json!(false));
        assert_eq!(u1.upn, "u1@example.edu");
        assert_eq!(u1.proxies, ["SMTP:x@example.edu", "smtp:y@example.edu"]);
        assert_eq!(
            inv.foreign["u3@example.edu"],
            "u3@example.edu (UserMailbox \"n-u3\")"
        );
        assert_eq!(inv.foreign_names["n-u4"], "n-u4 (MailContact)");
        assert_eq!(
            inv.foreign_names["n-d2"],
            "d2@example.edu (soft-deleted MailUser \"n-d2\")"
        );
        assert_eq!(inv.unstamped["u3@example.edu"], "n-u3");
        let d1 = &inv.own_deleted[&Anchor::new("a9").unwrap()];
        assert_eq!(d1.exchange_guid.as_deref(), Some("guid-d1"));
        assert_eq!(d1.name.as_deref(), Some("n-d1"));
        assert!(d1.addresses.contains("d1@example.edu"));
        // The contact is hidden, so its addresses resolve for nobody.
        assert!(inv.visible_addresses.contains("x@example.edu"));
        assert!(inv.managed.contains_key(&Anchor::new("a5").unwrap()));
    }

    #[test]
    fn exchange_fields_come_from_exchange_and_sign_in_from_graph() {
        let inv = sort_values(
            vec![recipient(
                "u1",
                "MailUser",
                Some("ldap2exo:a1"),
                &[
                    "SMTP:Ann@example.edu",
                    "smtp:ann@contoso.onmicrosoft.com",
                    "SIP:ann@example.edu",
                ],
            )],
            vec![],
            vec![user("u1", None, false)],
            STAMP,
        );
        let o = &inv.managed[&Anchor::new("a1").unwrap()];
        assert_eq!(
            o.kind,
            Kind::MailUser,
            "a licence without an Exchange plan converts nothing"
        );
        assert!(!o.mailbox_pending);
        assert_eq!(o.fields["primarySmtpAddress"], json!("ann@example.edu"));
        assert_eq!(
            o.fields["emailAddresses"],
            json!(["ann@contoso.onmicrosoft.com"])
        );
        assert_eq!(o.fields["department"], json!("Physics"));
        assert_eq!(o.fields["accountEnabled"], json!(false));
        assert_eq!(
            o.proxies.len(),
            3,
            "non-SMTP proxies are kept for full lists"
        );
    }

    #[test]
    fn groups_contacts_and_soft_deleted_recipients_own_addresses() {
        let inv = sort_values(
            vec![
                recipient(
                    "g1",
                    "MailUniversalDistributionGroup",
                    None,
                    &["SMTP:staff@example.edu"],
                ),
                recipient("c1", "MailContact", None, &["SMTP:ext@example.edu"]),
            ],
            vec![recipient(
                "d1",
                "MailUser",
                None,
                &["SMTP:gone@example.edu"],
            )],
            vec![],
            STAMP,
        );
        assert_eq!(
            inv.foreign["staff@example.edu"],
            "n-g1 (MailUniversalDistributionGroup)"
        );
        assert_eq!(inv.foreign["ext@example.edu"], "n-c1 (MailContact)");
        assert_eq!(
            inv.foreign["gone@example.edu"],
            "d1@example.edu (soft-deleted MailUser \"n-d1\")"
        );
        assert_eq!(
            inv.foreign_names["n-g1"],
            "n-g1 (MailUniversalDistributionGroup)"
        );
        assert!(inv.managed.is_empty());
    }

    #[test]
    fn visible_addresses_are_those_of_recipients_the_address_lists_show() {
        let mut hidden = recipient(
            "u2",
            "MailUser",
            Some("ldap2exo:a2"),
            &["SMTP:Hid@example.edu"],
        );
        hidden["HiddenFromAddressListsEnabled"] = json!(true);
        let inv = sort_values(
            vec![
                recipient(
                    "u1",
                    "MailUser",
                    Some("ldap2exo:a1"),
                    &[
                        "SMTP:Ann@example.edu",
                        "smtp:a@example.edu",
                        "SIP:x@example.edu",
                    ],
                ),
                hidden,
                recipient(
                    "g1",
                    "MailUniversalDistributionGroup",
                    None,
                    &["SMTP:staff@example.edu"],
                ),
            ],
            vec![recipient(
                "d1",
                "MailUser",
                None,
                &["SMTP:gone@example.edu"],
            )],
            vec![user("u3", None, false)],
            STAMP,
        );
        let mut shown: Vec<&str> = inv.visible_addresses.iter().map(String::as_str).collect();
        shown.sort();
        assert_eq!(
            shown,
            ["a@example.edu", "ann@example.edu", "staff@example.edu"],
            "hidden, soft-deleted and Graph-only objects resolve nobody"
        );
    }

    #[test]
    fn objects_one_side_does_not_show_yet_are_still_ours() {
        // A MailUser Graph does not show yet, and a mailbox user Exchange does not show yet.
        let inv = sort_values(
            vec![recipient(
                "u1",
                "MailUser",
                Some("ldap2exo:a1"),
                &["SMTP:ann@example.edu"],
            )],
            vec![],
            vec![user("u2", Some("ldap2exo:a2"), true)],
            STAMP,
        );
        let a1 = &inv.managed[&Anchor::new("a1").unwrap()];
        assert!(a1.in_exchange && !a1.in_graph);
        assert!(!a1.fields.contains_key("accountEnabled"));
        let a2 = &inv.managed[&Anchor::new("a2").unwrap()];
        assert!(a2.mailbox_pending && !a2.in_exchange);
        assert_eq!(a2.kind, Kind::Mailbox);
    }

    #[test]
    fn a_licensed_mail_user_is_a_pending_mailbox_and_a_stamp_on_either_side_counts() {
        // Stamp only in Graph (written by POST /users, not yet propagated to Exchange).
        let inv = sort_values(
            vec![recipient("u1", "MailUser", None, &["SMTP:ann@example.edu"])],
            vec![],
            vec![user("u1", Some("ldap2exo:a1"), true)],
            STAMP,
        );
        let o = &inv.managed[&Anchor::new("a1").unwrap()];
        assert_eq!(o.kind, Kind::Mailbox);
        assert!(o.mailbox_pending);
    }

    #[test]
    fn a_stamp_on_two_objects_touches_neither() {
        let inv = sort_values(
            vec![
                recipient(
                    "u1",
                    "MailUser",
                    Some("ldap2exo:a1"),
                    &["SMTP:a@example.edu"],
                ),
                recipient(
                    "u2",
                    "MailUser",
                    Some("ldap2exo:a1"),
                    &["SMTP:b@example.edu"],
                ),
            ],
            vec![],
            vec![],
            STAMP,
        );
        assert!(inv.managed.is_empty());
        assert_eq!(inv.duplicates[&Anchor::new("a1").unwrap()], ["u1", "u2"]);
    }

    #[test]
    fn the_licence_pool_counts_enabled_units_only_and_is_found_like_assign_license_finds_it() {
        let skus: Vec<SubscribedSku> = serde_json::from_value(json!([
            {"skuId": "6fd2c87f-b296-42f0-b197-1e91e994b900", "skuPartNumber": "ENTERPRISEPACK",
             "capabilityStatus": "Enabled", "consumedUnits": 27,
             "prepaidUnits": {"enabled": 25, "warning": 5, "suspended": 3, "lockedOut": 0}},
            {"skuId": "4b9405b0-7788-4568-add1-99614e613b69", "skuPartNumber": "EXCHANGESTANDARD",
             "capabilityStatus": "Warning", "consumedUnits": 3,
             "prepaidUnits": {"enabled": 10, "warning": 0, "suspended": 0, "lockedOut": 0}},
            {"skuId": "19ec0d23-8335-4cbd-94ac-6050e30712fa", "skuPartNumber": "EXCHANGEENTERPRISE",
             "capabilityStatus": "Suspended", "consumedUnits": 0,
             "prepaidUnits": {"enabled": 0, "warning": 0, "suspended": 50, "lockedOut": 0}}
        ]))
        .unwrap();
        let e3 = LicencePool::of(&skus, "enterprisepack").unwrap();
        assert_eq!(
            (e3.enabled, e3.consumed, e3.free()),
            (25, 27, 0),
            "never negative; warning units are not free"
        );
        let by_id = LicencePool::of(&skus, "4B9405B0-7788-4568-ADD1-99614E613B69").unwrap();
        assert_eq!((by_id.sku.as_str(), by_id.free()), ("EXCHANGESTANDARD", 7));
        assert_eq!(
            LicencePool::of(&skus, "EXCHANGEENTERPRISE").unwrap().free(),
            0
        );
        assert_eq!(LicencePool::of(&skus, "SPE_E5"), None);
    }

    #[test]
    fn stamp_attributes_are_validated() {
        assert!(StampAttribute::parse("customAttribute15").is_err());
        assert!(StampAttribute::parse("extensionAttribute16").is_err());
        let s = StampAttribute::parse("extensionAttribute3").unwrap();
        assert_eq!(s.exchange_name(), "CustomAttribute3");
    }
}
