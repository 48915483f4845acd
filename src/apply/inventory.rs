//! What the tenant holds right now: every object carrying ldap2exo's stamp, and every address
//! that belongs to something else. Read once at the start of a run (a full read, which is also
//! how drift is noticed), so that creating never duplicates and nothing unstamped is touched.
//!
//! Two steps:
//!
//! - [`read`] lists every user through Graph in one paged read. Not an advanced query on the
//!   stamp: those are eventually consistent, so an object created seconds ago could be missed
//!   and then created a second time. A plain listing is consistent and costs one request per
//!   999 users.
//! - [`reconcile`] (pure) lays that inventory over the state store's objects: objects we
//!   stamped but do not remember are adopted, objects deleted behind our back are marked
//!   deleted (so the plan creates them again), and fields changed behind our back take the
//!   tenant's value (so the plan's ordinary diff repairs them). Each finding is a [`Drift`]
//!   for the report.
//!
//! Kind rule: Graph v1.0 does not show Exchange's `RecipientTypeDetails`, so the kind is read
//! from the licences: an object with any assigned licence is a [`Kind::Mailbox`], one without
//! is a [`Kind::MailUser`]. Licensing with an Exchange plan is exactly what turns a MailUser
//! into a mailbox, and removing it leaves no mailbox at all; the rule errs only for a licence
//! without an Exchange plan (see `TenantObject::licensed`). Proxy addresses do not tell the
//! two apart: `New-MailUser` gives a MailUser a MOERA address too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use crate::desired::Kind;
use crate::ids::Anchor;
use crate::state::{ManagedObject, Stage};
use crate::tenant::graph::USER_PROPERTIES;
use crate::tenant::{GraphUser, Tenant, TenantError, UserQuery};

/// A stamped object as the tenant shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantObject {
    /// Entra ID object id.
    pub id: String,
    pub anchor: Anchor,
    pub kind: Kind,
    pub upn: String,
    pub account_enabled: Option<bool>,
    /// Carries a licence (a MailUser showing one is being converted, or was by accident).
    pub licensed: bool,
    /// The fields Graph shows, by the names of `Recipient::fields()`: userPrincipalName,
    /// mailNickname, displayName, givenName, surname, primarySmtpAddress, emailAddresses (all
    /// proxy addresses but the primary, lower case, sorted), department, jobTitle,
    /// businessPhones (the first), mobilePhone, officeLocation, companyName.
    pub fields: BTreeMap<String, Value>,
}

/// The tenant as one run sees it.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Stamped objects by anchor.
    pub managed: BTreeMap<Anchor, TenantObject>,
    /// Every UPN and SMTP address (lower case, without `smtp:`) of every object WITHOUT our
    /// stamp, mapped to that object's UPN: creating a recipient that wants one of these is a
    /// conflict to report, not to force.
    pub foreign: HashMap<String, String>,
    /// Anchors stamped on more than one object (ids): never touched, reported.
    pub duplicates: BTreeMap<Anchor, Vec<String>>,
}

/// The prefix of the stamp value: `ldap2exo:<anchor>`.
pub const STAMP_PREFIX: &str = "ldap2exo:";

/// Graph's largest page for users: fewest requests against the resource-unit budget.
const PAGE: u32 = 999;

/// Reads the whole tenant once: every user, sorted into ours (stamped `ldap2exo:<anchor>` in
/// `stamp_attribute`, e.g. `extensionAttribute15`), duplicates and everybody else's addresses.
///
/// A misnamed `stamp_attribute` is an error rather than an empty `managed`: every object
/// would otherwise look deleted behind our back.
pub async fn read(tenant: &Tenant, stamp_attribute: &str) -> Result<Inventory, TenantError> {
    if !matches!(
        stamp_attribute
            .strip_prefix("extensionAttribute")
            .and_then(|n| n.parse::<u8>().ok()),
        Some(1..=15)
    ) {
        return Err(TenantError::Config(format!(
            "`{stamp_attribute}` is not extensionAttribute1 … extensionAttribute15"
        )));
    }
    let started = Instant::now();
    let users = tenant
        .graph()
        .list_users(&UserQuery {
            // Every property the mapping needs: addresses, the stamp, licences, the address book.
            select: USER_PROPERTIES.iter().map(|s| (*s).to_owned()).collect(),
            top: Some(PAGE),
            ..UserQuery::default()
        })
        .await?;
    let total = users.len();
    let inventory = sort(users, stamp_attribute);
    tracing::info!(
        users = total,
        managed = inventory.managed.len(),
        foreign_addresses = inventory.foreign.len(),
        duplicates = inventory.duplicates.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "tenant inventory read"
    );
    Ok(inventory)
}

/// Sorts listed users into an [`Inventory`]. Pure, so the rules are testable without a tenant.
fn sort(users: Vec<GraphUser>, stamp_attribute: &str) -> Inventory {
    let mut inv = Inventory::default();
    let mut stamped: BTreeMap<Anchor, Vec<GraphUser>> = BTreeMap::new();
    for user in users {
        let Some(id) = user.id.clone().filter(|id| !id.is_empty()) else {
            // Graph always sends an id; without one the object cannot be touched anyway, but
            // its addresses still must not be taken.
            tracing::warn!(upn = ?user.user_principal_name, "tenant user without an id");
            add_foreign(&mut inv.foreign, &user);
            continue;
        };
        let stamp = user
            .on_premises_extension_attributes
            .as_ref()
            .and_then(|e| e.get(stamp_attribute));
        match stamp.and_then(|s| s.strip_prefix(STAMP_PREFIX)) {
            Some(raw) => match Anchor::new(raw) {
                Ok(anchor) => stamped.entry(anchor).or_default().push(user),
                Err(e) => {
                    // Our prefix, but no anchor we could have written: not ours to touch.
                    tracing::warn!(id = %id, stamp = ?stamp, error = %e, "unusable ldap2exo stamp; treating the object as unmanaged");
                    add_foreign(&mut inv.foreign, &user);
                }
            },
            None => add_foreign(&mut inv.foreign, &user),
        }
    }
    for (anchor, mut users) in stamped {
        if users.len() > 1 {
            let mut ids: Vec<String> = users.iter().filter_map(|u| u.id.clone()).collect();
            ids.sort();
            tracing::warn!(anchor = %anchor, ids = %ids.join(", "), "anchor stamped on more than one object");
            inv.duplicates.insert(anchor, ids);
        } else if let Some(user) = users.pop() {
            let obj = tenant_object(anchor.clone(), &user);
            inv.managed.insert(anchor, obj);
        }
    }
    inv
}

/// Records every address of an unstamped object: UPN, SMTP proxies and Graph `mail` (a plain
/// Entra user can own `mail` without any proxy address, and Graph keeps it unique too).
fn add_foreign(foreign: &mut HashMap<String, String>, user: &GraphUser) {
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
        let a = a.trim().to_ascii_lowercase();
        if !a.is_empty() {
            foreign.insert(a, owner.clone());
        }
    }
}

/// `SMTP:a@x` → `(true, "a@x")`, `smtp:a@x` → `(false, "a@x")`; other proxy types (`SIP:`,
/// `X500:`, `SPO:`, …) → `None`. Only the upper-case prefix marks the primary.
fn smtp_proxy(proxy: &str) -> Option<(bool, &str)> {
    let (prefix, address) = proxy.split_once(':')?;
    if !prefix.eq_ignore_ascii_case("smtp") || address.trim().is_empty() {
        return None;
    }
    Some((prefix == "SMTP", address.trim()))
}

fn tenant_object(anchor: Anchor, user: &GraphUser) -> TenantObject {
    let licensed = user
        .assigned_licenses
        .as_ref()
        .is_some_and(|l| !l.is_empty());
    TenantObject {
        id: user.id.clone().unwrap_or_default(),
        anchor,
        kind: if licensed {
            Kind::Mailbox
        } else {
            Kind::MailUser
        },
        upn: user.user_principal_name.clone().unwrap_or_default(),
        account_enabled: user.account_enabled,
        licensed,
        fields: fields(user),
    }
}

/// The Graph user as `Recipient::fields()` names and shapes it. Empty values are left out, as
/// `fields()` leaves out absent ones; `emailAddresses` is there (possibly empty) whenever the
/// object has SMTP addresses at all, because `fields()` always carries it.
fn fields(user: &GraphUser) -> BTreeMap<String, Value> {
    let mut f = BTreeMap::new();
    let mut text = |name: &str, v: Option<&str>| {
        if let Some(v) = v.filter(|v| !v.trim().is_empty()) {
            f.insert(name.to_owned(), Value::String(v.to_owned()));
        }
    };
    // UPNs and addresses compare case-insensitively; the state keeps them in lower case.
    let upn = user
        .user_principal_name
        .as_deref()
        .map(str::to_ascii_lowercase);
    text("userPrincipalName", upn.as_deref());
    text("mailNickname", user.mail_nickname.as_deref());
    text("displayName", user.display_name.as_deref());
    text("givenName", user.given_name.as_deref());
    text("surname", user.surname.as_deref());
    text("department", user.department.as_deref());
    text("jobTitle", user.job_title.as_deref());
    text(
        "businessPhones",
        user.business_phones
            .iter()
            .flatten()
            .map(String::as_str)
            .find(|p| !p.trim().is_empty()),
    );
    text("mobilePhone", user.mobile_phone.as_deref());
    text("officeLocation", user.office_location.as_deref());
    text("companyName", user.company_name.as_deref());

    let smtp: Vec<(bool, String)> = user
        .proxy_addresses
        .iter()
        .flatten()
        .filter_map(|p| smtp_proxy(p))
        .map(|(primary, a)| (primary, a.to_ascii_lowercase()))
        .collect();
    if !smtp.is_empty() {
        let primary = smtp.iter().find(|(p, _)| *p).map(|(_, a)| a.clone());
        let secondary: BTreeSet<&String> = smtp
            .iter()
            .map(|(_, a)| a)
            .filter(|a| Some(*a) != primary.as_ref())
            .collect();
        if let Some(p) = primary {
            f.insert("primarySmtpAddress".into(), Value::String(p));
        }
        f.insert(
            "emailAddresses".into(),
            Value::Array(secondary.into_iter().cloned().map(Value::String).collect()),
        );
    }
    f
}

/// The state store's objects with the tenant laid over them, and what differed.
#[derive(Debug, Clone, PartialEq)]
pub struct Reconciled {
    /// What the planner should diff against.
    pub objects: Vec<ManagedObject>,
    pub drift: Vec<Drift>,
}

/// One difference between the state store and the tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub anchor: Anchor,
    pub uid: String,
    pub kind: DriftKind,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// Stamped in the tenant, unknown to the state store (an empty or lost state, or a crash
    /// between the tenant call and the state write): rebuilt from the tenant instead of
    /// creating a duplicate.
    Adopted,
    /// Active or disabled in the state store, but no object carries the stamp: deleted
    /// behind our back. Marked deleted, so the plan creates it again.
    Missing,
    /// A Graph-visible field differs from what we last applied: the state's value is replaced
    /// with the tenant's, so the plan repairs it.
    Changed,
    /// The anchor is stamped on more than one object: none of them is touched.
    Duplicate,
}

impl DriftKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::Adopted => "adopted",
            DriftKind::Missing => "missing",
            DriftKind::Changed => "changed",
            DriftKind::Duplicate => "duplicate",
        }
    }
}

/// Fields Graph shows and compares one to one. `emailAddresses` is compared separately (only
/// missing addresses count); `name`, `externalEmailAddress`, `hiddenFromAddressLists` and
/// `retainedAddresses` are invisible to Graph and never drift.
const COMPARED: [&str; 12] = [
    "userPrincipalName",
    "mailNickname",
    "displayName",
    "givenName",
    "surname",
    "primarySmtpAddress",
    "department",
    "jobTitle",
    "businessPhones",
    "mobilePhone",
    "officeLocation",
    "companyName",
];

/// Domains whose addresses Microsoft adds by itself (the MOERA `<tenant>.onmicrosoft.com`,
/// `<tenant>.mail.onmicrosoft.com`, and their sovereign-cloud forms).
const SERVICE_DOMAINS: [&str; 3] = [".onmicrosoft.com", ".onmicrosoft.us", ".onmschina.cn"];

/// Lays `inventory` over the state store's `objects`. Pure: `now` stamps the rows it changes.
///
/// - A stamped object the state does not know (or knows as deleted) is **adopted**: a row in
///   stage Active with the tenant's id, kind and fields.
/// - An active or disabled row whose stamp is nowhere is **missing**: stage Deleted, so the
///   plan creates it again. Its tenant id is kept: if the object still exists without the
///   stamp, the executor's earlier-create check finds it by id and stamps it again.
/// - A row whose Graph-visible fields differ is **changed**: the tenant's values replace the
///   state's, so the plan's diff against LDAP repairs them. For `emailAddresses` only an
///   address we applied and the tenant lacks counts (licensing adds the UPN and MOERA
///   addresses by itself): the row keeps its addresses minus the missing ones, so the plan
///   adds them back without removing anything the tenant added.
/// - An anchor stamped on several objects is a **duplicate**: the row is left as it is and
///   nothing is adopted.
pub fn reconcile(objects: &[ManagedObject], inventory: &Inventory, now: i64) -> Reconciled {
    let mut drift = Vec::new();
    let mut out = Vec::with_capacity(objects.len() + inventory.managed.len());
    let known: BTreeMap<&Anchor, &ManagedObject> = objects.iter().map(|o| (&o.anchor, o)).collect();

    for obj in objects {
        if let Some(ids) = inventory.duplicates.get(&obj.anchor) {
            drift.push(duplicate(&obj.anchor, &obj.uid, ids));
            out.push(obj.clone());
            continue;
        }
        let tenant = inventory.managed.get(&obj.anchor);
        match (obj.stage, tenant) {
            (Stage::Deleted, None) => out.push(obj.clone()),
            (Stage::Deleted, Some(t)) => {
                let mut adopted = adopt(t, now);
                adopted.uid = obj.uid.clone();
                adopted.dn = obj.dn.clone();
                adopted.created_at = obj.created_at;
                drift.push(Drift {
                    anchor: obj.anchor.clone(),
                    uid: obj.uid.clone(),
                    kind: DriftKind::Adopted,
                    detail: format!(
                        "{} ({}) carries the stamp again although it was recorded as deleted (restored from the recycle bin?); adopted as {}",
                        t.upn,
                        t.id,
                        t.kind.as_str()
                    ),
                });
                out.push(adopted);
            }
            (Stage::Active | Stage::Disabled, None) => {
                let mut missing = obj.clone();
                missing.stage = Stage::Deleted;
                missing.deleted_at = Some(now);
                missing.updated_at = now;
                let mut detail = format!(
                    "no object in the tenant carries the stamp {STAMP_PREFIX}{}",
                    obj.anchor
                );
                if let Some(id) = &obj.tenant_object_id {
                    detail.push_str(&format!(" (last known object {id})"));
                }
                // The UPN held by an unstamped object: an interrupted create before the
                // stamp, or someone removed the stamp. Say so, it explains the next step.
                if let Some(owner) = obj
                    .attributes
                    .get("userPrincipalName")
                    .and_then(Value::as_str)
                    .and_then(|u| inventory.foreign.get(&u.to_ascii_lowercase()))
                {
                    detail.push_str(&format!(
                        "; its UPN belongs to the unstamped object {owner}"
                    ));
                }
                detail.push_str("; deleted behind our back, planned to be created again");
                drift.push(Drift {
                    anchor: obj.anchor.clone(),
                    uid: obj.uid.clone(),
                    kind: DriftKind::Missing,
                    detail,
                });
                out.push(missing);
            }
            (Stage::Active | Stage::Disabled, Some(t)) => {
                let (merged, changes) = merge(obj, t);
                if !changes.is_empty() {
                    drift.push(Drift {
                        anchor: obj.anchor.clone(),
                        uid: obj.uid.clone(),
                        kind: DriftKind::Changed,
                        detail: changes.join("; "),
                    });
                }
                out.push(merged);
            }
        }
    }

    for (anchor, t) in &inventory.managed {
        if known.contains_key(anchor) {
            continue;
        }
        let adopted = adopt(t, now);
        drift.push(Drift {
            anchor: anchor.clone(),
            uid: adopted.uid.clone(),
            kind: DriftKind::Adopted,
            detail: format!(
                "{} ({}) carries our stamp but the state store does not know it; adopted as {} instead of creating a duplicate",
                t.upn,
                t.id,
                t.kind.as_str()
            ),
        });
        out.push(adopted);
    }
    for (anchor, ids) in &inventory.duplicates {
        if !known.contains_key(anchor) {
            drift.push(duplicate(anchor, "", ids));
        }
    }

    if !drift.is_empty() {
        let count = |k: DriftKind| drift.iter().filter(|d| d.kind == k).count();
        tracing::info!(
            adopted = count(DriftKind::Adopted),
            missing = count(DriftKind::Missing),
            changed = count(DriftKind::Changed),
            duplicate = count(DriftKind::Duplicate),
            "tenant drift found"
        );
    }
    Reconciled {
        objects: out,
        drift,
    }
}

fn duplicate(anchor: &Anchor, uid: &str, ids: &[String]) -> Drift {
    Drift {
        anchor: anchor.clone(),
        uid: uid.to_owned(),
        kind: DriftKind::Duplicate,
        detail: format!(
            "the stamp {STAMP_PREFIX}{anchor} is on {} objects ({}); none is touched until all but one are removed or unstamped",
            ids.len(),
            ids.join(", ")
        ),
    }
}

/// A state row rebuilt from a stamped tenant object. The tenant cannot tell which of its
/// addresses we applied, so the addresses Microsoft adds by itself (the UPN, the service
/// domains) are left out of `emailAddresses`: the plan then never removes them, and if LDAP
/// does want one, adding an address the object has is harmless.
fn adopt(t: &TenantObject, now: i64) -> ManagedObject {
    let mut attributes = t.fields.clone();
    if let Some(Value::Array(addresses)) = attributes.get_mut("emailAddresses") {
        addresses.retain(|a| {
            a.as_str().is_some_and(|a| {
                !a.eq_ignore_ascii_case(&t.upn) && !SERVICE_DOMAINS.iter().any(|d| a.ends_with(d))
            })
        });
    }
    let uid = t
        .fields
        .get("mailNickname")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| t.upn.split('@').next().unwrap_or_default().to_owned());
    ManagedObject {
        anchor: t.anchor.clone(),
        kind: t.kind,
        uid,
        // The tenant does not know the LDAP entry; the next applied action fills it in.
        dn: String::new(),
        tenant_object_id: Some(t.id.clone()),
        attributes,
        stage: Stage::Active,
        created_at: now,
        updated_at: now,
        disabled_at: None,
        delete_due_at: None,
        deleted_at: None,
    }
}

/// The state row with the tenant's visible values laid over it, and a line per difference.
fn merge(obj: &ManagedObject, t: &TenantObject) -> (ManagedObject, Vec<String>) {
    let mut merged = obj.clone();
    let mut changes = Vec::new();

    match &obj.tenant_object_id {
        None => merged.tenant_object_id = Some(t.id.clone()),
        Some(id) if *id != t.id => {
            changes.push(format!(
                "tenant object {id} → {} (the stamped object)",
                t.id
            ));
            merged.tenant_object_id = Some(t.id.clone());
        }
        Some(_) => {}
    }

    if obj.kind != t.kind {
        changes.push(match t.kind {
            // TENANT_FACTS: group-based licensing converts MailUsers by accident.
            Kind::Mailbox => "kind mail_user → mailbox: the object carries a licence (group-based licensing, or an interrupted conversion)".to_owned(),
            Kind::MailUser => "kind mailbox → mail_user: the licence was removed, which disables the mailbox; licensing it again within 30 days restores it".to_owned(),
        });
        merged.kind = t.kind;
    }

    // Addresses are only comparable once Exchange shows the object as a recipient; a mailbox
    // being provisioned has no SMTP proxy address yet.
    let recipient = t.fields.contains_key("emailAddresses");
    for field in COMPARED {
        if field == "primarySmtpAddress" && !recipient {
            continue;
        }
        let ours = obj.attributes.get(field);
        let theirs = t.fields.get(field);
        if ours == theirs {
            continue;
        }
        changes.push(format!("{field}: {} → {}", show(ours), show(theirs)));
        match theirs {
            Some(v) => merged.attributes.insert(field.to_owned(), v.clone()),
            None => merged.attributes.remove(field),
        };
    }

    if recipient && let Some(Value::Array(applied)) = obj.attributes.get("emailAddresses") {
        let present: BTreeSet<&str> = t
            .fields
            .get("emailAddresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let (kept, missing): (Vec<&Value>, Vec<&Value>) = applied
            .iter()
            .partition(|a| a.as_str().is_some_and(|a| present.contains(a)));
        if !missing.is_empty() {
            let list: Vec<&str> = missing.iter().filter_map(|a| a.as_str()).collect();
            changes.push(format!("emailAddresses: missing {}", list.join(", ")));
            merged.attributes.insert(
                "emailAddresses".into(),
                Value::Array(kept.into_iter().cloned().collect()),
            );
        }
    }
    (merged, changes)
}

fn show(v: Option<&Value>) -> String {
    match v {
        None => "(absent)".into(),
        Some(v) => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::tenant::{AssignedLicense, ExtensionAttributes};

    const NOW: i64 = 1_800_000_000;

    fn anchor(s: &str) -> Anchor {
        Anchor::new(s).unwrap()
    }

    fn fields(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    /// What the state holds for a MailUser after a full create.
    fn state_fields(uid: &str) -> BTreeMap<String, Value> {
        fields(&[
            ("userPrincipalName", json!(format!("{uid}@example.edu"))),
            ("mailNickname", json!(uid)),
            ("name", json!(uid)),
            ("displayName", json!(format!("Person {uid}"))),
            ("primarySmtpAddress", json!(format!("{uid}@example.edu"))),
            (
                "emailAddresses",
                json!([format!("{uid}.alias@example.edu")]),
            ),
            (
                "externalEmailAddress",
                json!(format!("{uid}@mail.example.edu")),
            ),
            ("department", json!("Physics")),
            ("hiddenFromAddressLists", json!(false)),
        ])
    }

    /// What the inventory shows for that MailUser (plus the MOERA Exchange added).
    fn tenant_fields(uid: &str) -> BTreeMap<String, Value> {
        fields(&[
            ("userPrincipalName", json!(format!("{uid}@example.edu"))),
            ("mailNickname", json!(uid)),
            ("displayName", json!(format!("Person {uid}"))),
            ("primarySmtpAddress", json!(format!("{uid}@example.edu"))),
            (
                "emailAddresses",
                json!([
                    format!("{uid}.alias@example.edu"),
                    format!("{uid}@contoso.onmicrosoft.com")
                ]),
            ),
            ("department", json!("Physics")),
        ])
    }

    fn object(a: &str, uid: &str, stage: Stage) -> ManagedObject {
        ManagedObject {
            anchor: anchor(a),
            kind: Kind::MailUser,
            uid: uid.into(),
            dn: format!("uid={uid},ou=people,dc=example,dc=edu"),
            tenant_object_id: Some(format!("oid-{uid}")),
            attributes: state_fields(uid),
            stage,
            created_at: NOW - 1000,
            updated_at: NOW - 1000,
            disabled_at: None,
            delete_due_at: None,
            deleted_at: None,
        }
    }

    fn tenant_object(a: &str, uid: &str) -> TenantObject {
        TenantObject {
            id: format!("oid-{uid}"),
            anchor: anchor(a),
            kind: Kind::MailUser,
            upn: format!("{uid}@example.edu"),
            account_enabled: Some(false),
            licensed: false,
            fields: tenant_fields(uid),
        }
    }

    fn inventory(objects: Vec<TenantObject>) -> Inventory {
        Inventory {
            managed: objects.into_iter().map(|o| (o.anchor.clone(), o)).collect(),
            ..Inventory::default()
        }
    }

    #[test]
    fn in_step_objects_show_no_drift() {
        let state = vec![object("a1", "ann", Stage::Active)];
        let r = reconcile(&state, &inventory(vec![tenant_object("a1", "ann")]), NOW);
        assert!(r.drift.is_empty(), "{:?}", r.drift);
        // The MOERA the tenant added is not drift, and the row keeps our addresses.
        assert_eq!(r.objects, state);
    }

    #[test]
    fn empty_state_adopts_every_stamped_object() {
        let mut t = tenant_object("a1", "ann");
        t.fields
            .get_mut("emailAddresses")
            .and_then(Value::as_array_mut)
            .unwrap()
            .push(json!("ann@example.edu.invalid"));
        let inv = inventory(vec![t.clone(), tenant_object("a2", "bob")]);
        let r = reconcile(&[], &inv, NOW);
        assert_eq!(r.drift.len(), 2);
        assert!(r.drift.iter().all(|d| d.kind == DriftKind::Adopted));
        let ann = &r.objects[0];
        assert_eq!(ann.anchor, anchor("a1"));
        assert_eq!(ann.uid, "ann");
        assert_eq!(ann.stage, Stage::Active);
        assert_eq!(ann.kind, Kind::MailUser);
        assert_eq!(ann.tenant_object_id.as_deref(), Some("oid-ann"));
        assert_eq!(ann.created_at, NOW);
        // The MOERA is left out so the plan never removes it; everything else is the tenant's.
        assert_eq!(
            ann.attributes["emailAddresses"],
            json!(["ann.alias@example.edu", "ann@example.edu.invalid"])
        );
        assert_eq!(ann.attributes["displayName"], t.fields["displayName"]);
        assert!(!ann.attributes.contains_key("hiddenFromAddressLists"));
    }

    #[test]
    fn adopting_leaves_out_the_upn_address_microsoft_adds() {
        let mut t = tenant_object("a1", "ann");
        t.fields
            .insert("primarySmtpAddress".into(), json!("ann.x@example.edu"));
        t.fields.insert(
            "emailAddresses".into(),
            json!(["ann@contoso.mail.onmicrosoft.com", "ann@example.edu"]),
        );
        let r = reconcile(&[], &inventory(vec![t]), NOW);
        assert_eq!(r.objects[0].attributes["emailAddresses"], json!([]));
    }

    #[test]
    fn a_missing_object_is_marked_deleted_so_the_plan_creates_it_again() {
        let state = vec![
            object("a1", "ann", Stage::Active),
            object("a2", "bob", Stage::Disabled),
        ];
        let r = reconcile(&state, &Inventory::default(), NOW);
        assert_eq!(r.drift.len(), 2);
        for (d, o) in r.drift.iter().zip(&r.objects) {
            assert_eq!(d.kind, DriftKind::Missing);
            assert_eq!(o.stage, Stage::Deleted);
            assert_eq!(o.deleted_at, Some(NOW));
            // Kept: an unstamped object with this id is found again by the executor.
            assert!(o.tenant_object_id.is_some());
        }
        assert!(
            r.drift[0].detail.contains("ldap2exo:a1"),
            "{}",
            r.drift[0].detail
        );
    }

    #[test]
    fn a_missing_object_whose_upn_is_held_unstamped_says_so() {
        let state = vec![object("a1", "ann", Stage::Active)];
        let mut inv = Inventory::default();
        inv.foreign
            .insert("ann@example.edu".into(), "Ann@example.edu".into());
        let r = reconcile(&state, &inv, NOW);
        assert_eq!(r.drift[0].kind, DriftKind::Missing);
        assert!(
            r.drift[0]
                .detail
                .contains("unstamped object Ann@example.edu"),
            "{}",
            r.drift[0].detail
        );
    }

    #[test]
    fn deleted_rows_stay_deleted_unless_the_stamp_reappears() {
        let mut gone = object("a1", "ann", Stage::Deleted);
        gone.deleted_at = Some(NOW - 10);
        let back = object("a2", "bob", Stage::Deleted);
        let r = reconcile(
            &[gone.clone(), back.clone()],
            &inventory(vec![tenant_object("a2", "bob")]),
            NOW,
        );
        assert_eq!(r.objects[0], gone);
        assert_eq!(r.drift.len(), 1);
        assert_eq!(r.drift[0].kind, DriftKind::Adopted);
        assert_eq!(r.drift[0].anchor, anchor("a2"));
        let bob = &r.objects[1];
        assert_eq!(bob.stage, Stage::Active);
        assert_eq!(bob.deleted_at, None);
        assert_eq!(bob.dn, back.dn, "the LDAP entry is kept");
        assert_eq!(bob.created_at, back.created_at);
    }

    #[test]
    fn a_changed_visible_field_takes_the_tenants_value() {
        let state = vec![object("a1", "ann", Stage::Active)];
        let mut t = tenant_object("a1", "ann");
        t.fields.insert("displayName".into(), json!("Someone Else"));
        t.fields.remove("department");
        t.fields.insert("jobTitle".into(), json!("Hacker"));
        let r = reconcile(&state, &inventory(vec![t]), NOW);
        assert_eq!(r.drift.len(), 1);
        let d = &r.drift[0];
        assert_eq!((d.kind, d.uid.as_str()), (DriftKind::Changed, "ann"));
        assert!(
            d.detail
                .contains(r#"displayName: "Person ann" → "Someone Else""#),
            "{}",
            d.detail
        );
        assert!(
            d.detail.contains(r#"department: "Physics" → (absent)"#),
            "{}",
            d.detail
        );
        let o = &r.objects[0];
        assert_eq!(o.attributes["displayName"], json!("Someone Else"));
        assert_eq!(o.attributes["jobTitle"], json!("Hacker"));
        assert!(!o.attributes.contains_key("department"));
        // Fields Graph cannot show keep our value.
        assert_eq!(o.attributes["name"], json!("ann"));
        assert_eq!(
            o.attributes["externalEmailAddress"],
            json!("ann@mail.example.edu")
        );
        assert_eq!(o.attributes["hiddenFromAddressLists"], json!(false));
        assert_eq!(o.stage, Stage::Active);
    }

    #[test]
    fn only_addresses_missing_in_the_tenant_are_drift() {
        let mut obj = object("a1", "ann", Stage::Active);
        obj.attributes.insert(
            "emailAddresses".into(),
            json!(["ann.alias@example.edu", "ann.b@example.edu"]),
        );
        obj.attributes
            .insert("retainedAddresses".into(), json!(["old@example.edu"]));
        let r = reconcile(
            &[obj.clone()],
            &inventory(vec![tenant_object("a1", "ann")]),
            NOW,
        );
        assert_eq!(r.drift.len(), 1);
        assert_eq!(
            r.drift[0].detail,
            "emailAddresses: missing ann.b@example.edu"
        );
        // The row keeps what is there (not the tenant's extra MOERA): the plan adds the
        // missing address back and removes nothing.
        assert_eq!(
            r.objects[0].attributes["emailAddresses"],
            json!(["ann.alias@example.edu"])
        );
        // Retained addresses are invisible to the comparison.
        assert_eq!(
            r.objects[0].attributes["retainedAddresses"],
            json!(["old@example.edu"])
        );
    }

    #[test]
    fn addresses_are_not_compared_before_exchange_shows_a_recipient() {
        let state = vec![object("a1", "ann", Stage::Active)];
        let mut t = tenant_object("a1", "ann");
        t.fields.remove("primarySmtpAddress");
        t.fields.remove("emailAddresses");
        let r = reconcile(&state, &inventory(vec![t]), NOW);
        assert!(r.drift.is_empty(), "{:?}", r.drift);
    }

    #[test]
    fn a_licensed_mail_user_is_reported_and_takes_the_mailbox_kind() {
        let state = vec![object("a1", "ann", Stage::Active)];
        let mut t = tenant_object("a1", "ann");
        t.kind = Kind::Mailbox;
        t.licensed = true;
        let r = reconcile(&state, &inventory(vec![t]), NOW);
        assert_eq!(r.drift[0].kind, DriftKind::Changed);
        assert!(
            r.drift[0].detail.contains("kind mail_user → mailbox"),
            "{}",
            r.drift[0].detail
        );
        assert_eq!(r.objects[0].kind, Kind::Mailbox);
    }

    #[test]
    fn the_tenant_id_is_recorded_when_missing_and_replaced_when_different() {
        let mut lacking = object("a1", "ann", Stage::Active);
        lacking.tenant_object_id = None;
        let mut other = object("a2", "bob", Stage::Active);
        other.tenant_object_id = Some("oid-old".into());
        let r = reconcile(
            &[lacking, other],
            &inventory(vec![tenant_object("a1", "ann"), tenant_object("a2", "bob")]),
            NOW,
        );
        assert_eq!(r.objects[0].tenant_object_id.as_deref(), Some("oid-ann"));
        assert_eq!(r.objects[1].tenant_object_id.as_deref(), Some("oid-bob"));
        assert_eq!(r.drift.len(), 1, "{:?}", r.drift);
        assert_eq!(r.drift[0].anchor, anchor("a2"));
        assert!(r.drift[0].detail.contains("oid-old → oid-bob"));
    }

    #[test]
    fn duplicates_are_reported_and_neither_adopted_nor_missing() {
        let known = object("a1", "ann", Stage::Active);
        let mut inv = Inventory::default();
        inv.duplicates
            .insert(anchor("a1"), vec!["id-1".into(), "id-2".into()]);
        inv.duplicates
            .insert(anchor("a9"), vec!["id-3".into(), "id-4".into()]);
        let r = reconcile(std::slice::from_ref(&known), &inv, NOW);
        assert_eq!(r.objects, vec![known]);
        let kinds: Vec<(DriftKind, &str)> = r
            .drift
            .iter()
            .map(|d| (d.kind, d.anchor.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [(DriftKind::Duplicate, "a1"), (DriftKind::Duplicate, "a9")]
        );
        assert!(r.drift[0].detail.contains("id-1, id-2"));
    }

    fn graph_user(id: &str, upn: &str, stamp: Option<&str>, proxies: &[&str]) -> GraphUser {
        GraphUser {
            id: Some(id.into()),
            user_principal_name: Some(upn.into()),
            mail_nickname: Some(upn.split('@').next().unwrap().into()),
            display_name: Some(format!("User {upn}")),
            proxy_addresses: Some(proxies.iter().map(|p| (*p).to_owned()).collect()),
            on_premises_extension_attributes: Some(ExtensionAttributes {
                extension_attribute15: stamp.map(str::to_owned),
                ..ExtensionAttributes::default()
            }),
            ..GraphUser::default()
        }
    }

    #[test]
    fn sorting_maps_fields_and_keeps_unstamped_addresses_foreign() {
        let mut licensed = graph_user(
            "id-1",
            "Ann@Example.edu",
            Some("ldap2exo:AAA"),
            &[
                "SMTP:Ann@Example.edu",
                "smtp:b@example.edu",
                "SIP:ann@example.edu",
                "smtp:a@example.edu",
                "X500:/o=x",
            ],
        );
        licensed.assigned_licenses = Some(vec![AssignedLicense {
            sku_id: "sku".into(),
            disabled_plans: vec![],
        }]);
        licensed.business_phones = Some(vec!["+49 1".into()]);
        licensed.department = Some(String::new());
        let mut foreign = graph_user(
            "id-2",
            "Admin@example.edu",
            None,
            &["SMTP:Boss@example.edu"],
        );
        foreign.mail = Some("Chief@example.edu".into());
        let bad = graph_user("id-3", "bad@example.edu", Some("ldap2exo:  "), &[]);
        let users = vec![
            licensed,
            foreign,
            bad,
            graph_user("id-4", "d1@example.edu", Some("ldap2exo:dup"), &[]),
            graph_user("id-5", "d2@example.edu", Some("ldap2exo:DUP"), &[]),
            graph_user("id-6", "other@example.edu", Some("someone-else:x"), &[]),
        ];
        let inv = sort(users, "extensionAttribute15");
        let ann = &inv.managed[&anchor("aaa")];
        assert_eq!(
            (ann.kind, ann.licensed, ann.id.as_str()),
            (Kind::Mailbox, true, "id-1")
        );
        assert_eq!(
            ann.fields,
            fields(&[
                ("userPrincipalName", json!("ann@example.edu")),
                ("mailNickname", json!("Ann")),
                ("displayName", json!("User Ann@Example.edu")),
                ("primarySmtpAddress", json!("ann@example.edu")),
                ("emailAddresses", json!(["a@example.edu", "b@example.edu"])),
                ("businessPhones", json!("+49 1")),
            ])
        );
        assert_eq!(inv.managed.len(), 1);
        assert_eq!(inv.duplicates[&anchor("dup")], vec!["id-4", "id-5"]);
        for a in [
            "admin@example.edu",
            "boss@example.edu",
            "chief@example.edu",
            "bad@example.edu",
            "other@example.edu",
        ] {
            assert!(
                inv.foreign.contains_key(a),
                "{a} is foreign: {:?}",
                inv.foreign
            );
        }
        assert_eq!(inv.foreign["boss@example.edu"], "Admin@example.edu");
        assert!(!inv.foreign.contains_key("ann@example.edu"));
        assert!(!inv.foreign.contains_key("d1@example.edu"));
    }
}
