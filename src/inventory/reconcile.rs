//! Reconciliation (pure): the state store's objects with the tenant [`Inventory`] laid over
//! them, and each difference as a [`Drift`] for the report. The planner then diffs LDAP
//! against the reconciled rows, so drift is repaired by ordinary actions.
//!
//! Only fields the tenant can tell are compared, each as read from its master
//! ([`Field::read_from`]): Exchange-read fields only when Exchange shows the object and we
//! wrote them, `accountEnabled` only when Graph shows it. A value still propagating between
//! the two directories is therefore never drift, and an object only one side shows yet is
//! never missing.

use std::collections::{BTreeSet, HashSet};

use serde::Serialize;
use serde_json::Value;

use super::{Inventory, STAMP_PREFIX, TenantObject};
use crate::desired::Kind;
use crate::ids::Anchor;
use crate::plan::{Api, Field};
use crate::state::{ManagedObject, Stage};

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

/// Whether the tenant can tell `field` for `t` right now, and we have a value of ours to
/// compare it with. Addresses, names and the address book are Exchange's: compared once
/// Exchange shows the object and once we wrote them (a mailbox created through Graph gets its
/// Exchange fields only after provisioning; until then the state has no primary address).
fn comparable(field: Field, obj: &ManagedObject, t: &TenantObject) -> bool {
    if t.unknown.contains(&field) {
        return false;
    }
    match field.read_from() {
        None => false,
        // The kind is compared on its own (licences and provisioning).
        Some(_) if field == Field::Kind || field == Field::EmailAddresses => false,
        Some(Api::Graph) => t.in_graph,
        Some(Api::Exchange) => {
            t.in_exchange
                && !t.mailbox_pending
                && obj.attributes.field(Field::PrimarySmtpAddress).is_some()
        }
    }
}

/// Domains whose addresses Microsoft adds by itself (the MOERA `<tenant>.onmicrosoft.com`,
/// `<tenant>.mail.onmicrosoft.com`, and their sovereign-cloud forms).
const SERVICE_DOMAINS: [&str; 3] = [".onmicrosoft.com", ".onmicrosoft.us", ".onmschina.cn"];

/// Whether `address` is on a domain Microsoft adds addresses on by itself (the MOERA and
/// routing domains): the tenant's own, never removed by ldap2exo.
pub fn is_service_address(address: &str) -> bool {
    let a = address.to_ascii_lowercase();
    SERVICE_DOMAINS.iter().any(|d| a.ends_with(d))
}

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
///
/// Takes the rows by value: a second copy of them was a fifth of the planning peak
/// (heaptrack of a 20,000-person `plan`).
pub fn reconcile(objects: Vec<ManagedObject>, inventory: &Inventory, now: i64) -> Reconciled {
    let mut drift = Vec::new();
    let mut out = Vec::with_capacity(objects.len() + inventory.managed.len());
    let known: HashSet<Anchor> = objects.iter().map(|o| o.anchor.clone()).collect();

    for obj in objects {
        if let Some(ids) = inventory.duplicates.get(&obj.anchor) {
            drift.push(duplicate(&obj.anchor, &obj.uid, ids));
            out.push(obj);
            continue;
        }
        let tenant = inventory.managed.get(&obj.anchor);
        match (obj.stage, tenant) {
            (Stage::Deleted, None) => out.push(obj),
            // Our own delete (or a restore) not yet seen by both directories: the side that
            // lags still shows the object. Only an object both show is really back.
            (Stage::Deleted, Some(t)) if !(t.in_exchange && t.in_graph) => out.push(obj),
            (Stage::Deleted, Some(t)) => {
                let mut adopted = adopt(t, now);
                adopted.uid = obj.uid.clone();
                adopted.dn = obj.dn;
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
                let mut missing = obj;
                missing.stage = Stage::Deleted;
                missing.deleted_at = Some(now);
                missing.updated_at = now;
                let mut detail = format!(
                    "no object in the tenant carries the stamp {STAMP_PREFIX}{}",
                    missing.anchor
                );
                if let Some(id) = &missing.tenant_object_id {
                    detail.push_str(&format!(" (last known object {id})"));
                }
                // The UPN held by an unstamped object: an interrupted create before the
                // stamp, or someone removed the stamp. Say so, it explains the next step.
                if let Some(owner) = missing
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
                    anchor: missing.anchor.clone(),
                    uid: missing.uid.clone(),
                    kind: DriftKind::Missing,
                    detail,
                });
                out.push(missing);
            }
            (Stage::Active | Stage::Disabled, Some(t)) => {
                let (merged, changes) = merge(obj, t);
                if !changes.is_empty() {
                    drift.push(Drift {
                        anchor: merged.anchor.clone(),
                        uid: merged.uid.clone(),
                        kind: DriftKind::Changed,
                        detail: changes.join("; "),
                    });
                }
                out.push(merged);
            }
        }
    }

    for (anchor, t) in &inventory.managed {
        if known.contains(anchor) {
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
        if !known.contains(anchor) {
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
fn merge(obj: ManagedObject, t: &TenantObject) -> (ManagedObject, Vec<String>) {
    // Decided on the row as stored, before any of its values is replaced.
    let compared: Vec<Field> = Field::ALL
        .into_iter()
        .filter(|f| comparable(*f, &obj, t))
        .collect();
    let recipient = comparable(Field::PrimarySmtpAddress, &obj, t);
    let mut merged = obj;
    let mut changes = Vec::new();

    match &merged.tenant_object_id {
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

    // The kind is Exchange's: unknown while Exchange does not show the object.
    if t.in_exchange && merged.kind != t.kind {
        changes.push(match t.kind {
            // TENANT_FACTS: group-based licensing converts MailUsers by accident.
            Kind::Mailbox => "kind mail_user → mailbox: the object carries a licence (group-based licensing, or an interrupted conversion)".to_owned(),
            Kind::MailUser => "kind mailbox → mail_user: the licence was removed, which disables the mailbox; licensing it again within 30 days restores it".to_owned(),
        });
        merged.kind = t.kind;
    }

    for field in compared {
        let name = field.as_str();
        let ours = merged.attributes.field(field);
        let theirs = t.fields.field(field);
        if field == Field::AccountEnabled && ours.is_none() {
            // Sign-in was never recorded (a state from an older version, or Graph did not
            // show a new MailUser in time): learn it, the plan then sets it as it belongs.
            if let Some(v) = theirs {
                merged.attributes.insert(field, v.clone());
            }
            continue;
        }
        // An absent hidden flag is `false`.
        let same_flag = field == Field::HiddenFromAddressLists
            && ours.and_then(Value::as_bool).unwrap_or(false)
                == theirs.and_then(Value::as_bool).unwrap_or(false);
        if ours == theirs || same_flag {
            continue;
        }
        changes.push(format!("{name}: {} → {}", show(ours), show(theirs)));
        match theirs {
            Some(v) => merged.attributes.insert(field, v.clone()),
            None => merged.attributes.remove(name),
        };
    }

    if recipient && let Some(Value::Array(applied)) = merged.attributes.get("emailAddresses") {
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
                Field::EmailAddresses,
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
    use crate::plan::Fields;

    const NOW: i64 = 1_800_000_000;

    fn anchor(s: &str) -> Anchor {
        Anchor::new(s).unwrap()
    }

    fn fields(pairs: &[(&str, Value)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.parse::<Field>().unwrap(), v.clone()))
            .collect()
    }

    /// What the state holds for a MailUser after a full create.
    fn state_fields(uid: &str) -> Fields {
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
    fn tenant_fields(uid: &str) -> Fields {
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
            ("name", json!(uid)),
            (
                "externalEmailAddress",
                json!(format!("{uid}@mail.example.edu")),
            ),
            ("hiddenFromAddressLists", json!(false)),
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
            exchange_licensed: false,
            mailbox_pending: false,
            in_exchange: true,
            in_graph: true,
            fields: tenant_fields(uid),
            proxies: Vec::new(),
            unknown: BTreeSet::new(),
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
        let r = reconcile(
            state.clone(),
            &inventory(vec![tenant_object("a1", "ann")]),
            NOW,
        );
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
        let r = reconcile(Vec::new(), &inv, NOW);
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
        // Exchange shows what Graph could not: the hidden flag and the external address.
        assert_eq!(ann.attributes["hiddenFromAddressLists"], json!(false));
        assert_eq!(
            ann.attributes["externalEmailAddress"],
            json!("ann@mail.example.edu")
        );
    }

    #[test]
    fn adopting_leaves_out_the_upn_address_microsoft_adds() {
        let mut t = tenant_object("a1", "ann");
        t.fields
            .insert(Field::PrimarySmtpAddress, json!("ann.x@example.edu"));
        t.fields.insert(
            Field::EmailAddresses,
            json!(["ann@contoso.mail.onmicrosoft.com", "ann@example.edu"]),
        );
        let r = reconcile(Vec::new(), &inventory(vec![t]), NOW);
        assert_eq!(r.objects[0].attributes["emailAddresses"], json!([]));
    }

    #[test]
    fn a_missing_object_is_marked_deleted_so_the_plan_creates_it_again() {
        let state = vec![
            object("a1", "ann", Stage::Active),
            object("a2", "bob", Stage::Disabled),
        ];
        let r = reconcile(state.clone(), &Inventory::default(), NOW);
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
        let r = reconcile(state.clone(), &inv, NOW);
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
            vec![gone.clone(), back.clone()],
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
    fn our_own_delete_still_propagating_is_not_a_return() {
        // Exchange removed the MailUser; Graph still lists the stamped user for a while.
        let gone = object("a1", "ann", Stage::Deleted);
        let mut lagging = tenant_object("a1", "ann");
        lagging.in_exchange = false;
        lagging.kind = Kind::Mailbox;
        let r = reconcile(vec![gone.clone()], &inventory(vec![lagging]), NOW);
        assert!(r.drift.is_empty(), "{:?}", r.drift);
        assert_eq!(r.objects, vec![gone]);
    }

    #[test]
    fn a_property_the_listing_lacks_is_unknown_not_changed() {
        let mut state = object("a1", "ann", Stage::Active);
        state.attributes.insert(Field::MobilePhone, json!("+49 1"));
        let mut t = tenant_object("a1", "ann");
        t.unknown.insert(Field::MobilePhone);
        let r = reconcile(vec![state.clone()], &inventory(vec![t]), NOW);
        assert!(r.drift.is_empty(), "{:?}", r.drift);
        assert_eq!(r.objects, vec![state]);
    }

    #[test]
    fn a_changed_visible_field_takes_the_tenants_value() {
        let state = vec![object("a1", "ann", Stage::Active)];
        let mut t = tenant_object("a1", "ann");
        t.fields.insert(Field::DisplayName, json!("Someone Else"));
        t.fields.remove("department");
        t.fields.insert(Field::JobTitle, json!("Hacker"));
        let r = reconcile(state.clone(), &inventory(vec![t]), NOW);
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
            Field::EmailAddresses,
            json!(["ann.alias@example.edu", "ann.b@example.edu"]),
        );
        obj.attributes
            .insert(Field::RetainedAddresses, json!(["old@example.edu"]));
        let r = reconcile(
            vec![obj.clone()],
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
        t.fields.clear();
        t.in_exchange = false;
        let r = reconcile(state.clone(), &inventory(vec![t]), NOW);
        assert!(r.drift.is_empty(), "{:?}", r.drift);
    }

    #[test]
    fn values_still_propagating_are_not_drift() {
        // Graph does not show the new MailUser yet: nothing Graph masters is known, and
        // nothing Exchange masters is compared with Graph.
        let mut state = object("a1", "ann", Stage::Active);
        state.attributes.insert(Field::AccountEnabled, json!(false));
        let mut t = tenant_object("a1", "ann");
        t.in_graph = false;
        t.account_enabled = None;
        let r = reconcile(vec![state.clone()], &inventory(vec![t]), NOW);
        assert!(r.drift.is_empty(), "{:?}", r.drift);
        assert_eq!(r.objects, vec![state]);
    }

    #[test]
    fn a_mailbox_being_provisioned_is_neither_drift_nor_missing() {
        let mut state = object("a1", "ann", Stage::Active);
        state.kind = Kind::Mailbox;
        let mut t = tenant_object("a1", "ann");
        t.kind = Kind::Mailbox;
        t.mailbox_pending = true;
        t.exchange_licensed = true;
        // Exchange still shows the MailUser's old view.
        t.fields
            .insert(Field::PrimarySmtpAddress, json!("other@example.edu"));
        let r = reconcile(vec![state.clone()], &inventory(vec![t]), NOW);
        assert!(r.drift.is_empty(), "{:?}", r.drift);
        assert_eq!(r.objects[0].kind, Kind::Mailbox);
    }

    #[test]
    fn sign_in_is_learned_when_unknown_and_drift_when_it_differs() {
        let state = object("a1", "ann", Stage::Active);
        let mut t = tenant_object("a1", "ann");
        t.fields.insert(Field::AccountEnabled, json!(true));
        let r = reconcile(vec![state.clone()], &inventory(vec![t.clone()]), NOW);
        assert!(r.drift.is_empty(), "{:?}", r.drift);
        assert_eq!(r.objects[0].attributes["accountEnabled"], json!(true));
        let again = reconcile(r.objects.clone(), &inventory(vec![t]), NOW);
        assert!(again.drift.is_empty());
        let mut recorded = state;
        recorded
            .attributes
            .insert(Field::AccountEnabled, json!(false));
        let mut t = tenant_object("a1", "ann");
        t.fields.insert(Field::AccountEnabled, json!(true));
        let r = reconcile(vec![recorded], &inventory(vec![t]), NOW);
        assert!(
            r.drift[0].detail.contains("accountEnabled: false → true"),
            "{:?}",
            r.drift
        );
    }

    #[test]
    fn a_licensed_mail_user_is_reported_and_takes_the_mailbox_kind() {
        let state = vec![object("a1", "ann", Stage::Active)];
        let mut t = tenant_object("a1", "ann");
        t.kind = Kind::Mailbox;
        t.exchange_licensed = true;
        let r = reconcile(state.clone(), &inventory(vec![t]), NOW);
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
            vec![lacking, other],
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
        let r = reconcile(vec![known.clone()], &inv, NOW);
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
}
