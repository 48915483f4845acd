//! Planner phase: addresses and UPNs that change hands within one run.
//!
//! Exchange keeps every SMTP address and UPN unique across the tenant, including objects in
//! the recycle bin. When one person gives up an address and another claims it in the same
//! LDAP change (an alias moved, a leaver's address handed to a newcomer), the claim succeeds
//! only after the release. So:
//!
//! - an action that releases something another action of the run claims runs in the
//!   [`Phase::Release`], which apply finishes before any [`Phase::Main`] action starts
//!   (whatever the concurrency);
//! - a leaver (hidden now, or earlier, within the grace period) whose address or UPN a
//!   newcomer claims gives it up in that phase: the hidden object keeps its MOERA
//!   (`<alias>@<tenant>.onmicrosoft.com`) as primary address and UPN, so it stays a valid,
//!   restorable recipient;
//! - a removed object of ours still in the recycle bin that holds it is purged;
//! - an action that both releases and claims (two people swapping aliases) is split in two:
//!   the release part, and the rest in the main phase.
//!
//! Without the tenant's inventory (a dry run without credentials) the MOERA and the recycle
//! bin are unknown: such a release is not planned, and the claim is reported by the run.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use super::{Action, Changes, Field, Op, Phase, Summary};
use crate::ids::Anchor;
use crate::inventory::{Inventory, smtp_proxy};
use crate::state::{ManagedObject, Stage};

/// The address fields (lower case) whose values change hands; the UPN counts as an address
/// (Exchange shows it as `WindowsLiveID`, and a proxy address may not equal another's UPN).
const SINGLE: [Field; 2] = [Field::UserPrincipalName, Field::PrimarySmtpAddress];
const LISTS: [Field; 2] = [Field::EmailAddresses, Field::RetainedAddresses];

/// Orders releases before claims and plans the releases nobody planned (see the module doc).
pub(super) fn order_handovers(
    actions: &mut Vec<Action>,
    objects: &[ManagedObject],
    tenant: Option<&Inventory>,
    summary: &mut Summary,
) {
    let rows: BTreeMap<&Anchor, &ManagedObject> = objects.iter().map(|o| (&o.anchor, o)).collect();
    let holders = holders(objects, tenant);
    let mut index: HashMap<Anchor, usize> = actions
        .iter()
        .enumerate()
        .filter(|(_, a)| a.held.is_none())
        .map(|(i, a)| (a.anchor.clone(), i))
        .collect();
    // Every claim, and who makes it.
    let mut claims: Vec<(String, usize)> = Vec::new();
    for (i, a) in actions.iter().enumerate() {
        if a.held.is_none() {
            claims.extend(claimed(&a.changes).into_iter().map(|v| (v, i)));
        }
    }
    let mut releasers: BTreeSet<usize> = BTreeSet::new();
    let mut purged: BTreeSet<Anchor> = BTreeSet::new();
    for (value, claimant) in claims {
        let Some(holder) = holders.get(&value) else {
            continue;
        };
        if *holder == actions[claimant].anchor {
            continue;
        }
        let who = actions[claimant].uid.clone();
        match index.get(holder).copied() {
            Some(y) if released(&actions[y].changes).contains(&value) => {
                note(&mut actions[y], &value, &who);
                releasers.insert(y);
            }
            Some(y) if matches!(actions[y].op, Op::Disable | Op::Update) => {
                let moera = moera(tenant, holder);
                if give_up(
                    &mut actions[y].changes,
                    rows.get(holder).copied(),
                    &value,
                    moera,
                ) {
                    note(&mut actions[y], &value, &who);
                    releasers.insert(y);
                }
            }
            Some(_) => {}
            None => {
                let row = rows.get(holder).copied();
                let deleted = tenant.and_then(|t| t.own_deleted.get(holder));
                if let Some(d) = deleted.filter(|_| row.is_none_or(|r| r.stage == Stage::Deleted)) {
                    if purged.insert(holder.clone()) {
                        actions.push(purge(holder, row, d, &value, &who));
                        summary.purge += 1;
                        index.insert(holder.clone(), actions.len() - 1);
                        releasers.insert(actions.len() - 1);
                    }
                } else if let Some(r) = row.filter(|r| r.stage == Stage::Disabled) {
                    let mut changes = Changes::default();
                    if give_up(&mut changes, Some(r), &value, moera(tenant, holder)) {
                        actions.push(Action {
                            op: Op::Update,
                            anchor: r.anchor.clone(),
                            uid: r.uid.clone(),
                            kind: r.kind,
                            dn: r.dn.clone(),
                            changes,
                            reason: Some(format!(
                                "left LDAP (hidden, within the grace period): gives up {value} for {who}"
                            )),
                            held: None,
                            phase: Phase::Release,
                        });
                        summary.update += 1;
                        index.insert(holder.clone(), actions.len() - 1);
                        releasers.insert(actions.len() - 1);
                    }
                }
            }
        }
    }
    split_releasers(actions, &releasers, tenant, summary);
}

/// When the safety verdict holds removals back, a leaver's release (a disable or purge)
/// does not happen this run: whoever claims what it would free is held as a conflict that
/// says so, instead of failing in the run.
pub(super) fn hold_claims_on_held_removals(actions: &mut [Action], summary: &mut Summary) {
    let mut frozen: HashMap<String, String> = HashMap::new();
    for a in actions.iter() {
        if a.held.is_none() && (a.op.is_removal() || a.op == Op::Purge) {
            for v in released(&a.changes) {
                frozen.insert(v, a.uid.clone());
            }
        }
    }
    if frozen.is_empty() {
        return;
    }
    for a in actions.iter_mut() {
        if a.held.is_some() || a.op.is_removal() || a.op == Op::Purge {
            continue;
        }
        if let Some((value, leaver)) = claimed(&a.changes)
            .into_iter()
            .find_map(|v| frozen.get(&v).map(|l| (v.clone(), l.clone())))
        {
            super::hold(
                summary,
                a,
                super::Held {
                    outcome: super::HeldOutcome::Conflict,
                    reason: format!(
                        "needs {value}, which {leaver} gives up only as they leave; the safety verdict holds removals back this run"
                    ),
                },
            );
        }
    }
}

/// Every address and UPN a managed object holds, lower case, by anchor: the state rows
/// that are not deleted, and our removed objects still in the recycle bin.
fn holders(objects: &[ManagedObject], tenant: Option<&Inventory>) -> HashMap<String, Anchor> {
    let mut out = HashMap::new();
    for o in objects.iter().filter(|o| o.stage != Stage::Deleted) {
        for v in values(&o.attributes) {
            out.insert(v, o.anchor.clone());
        }
    }
    if let Some(t) = tenant {
        for (anchor, d) in &t.own_deleted {
            for a in &d.addresses {
                out.entry(a.clone()).or_insert_with(|| anchor.clone());
            }
        }
    }
    out
}

/// The address values of a state row (or of one side of a change set), lower case.
fn values(attributes: &BTreeMap<String, Value>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for f in SINGLE {
        if let Some(v) = attributes.get(f.as_str()).and_then(Value::as_str) {
            out.insert(v.to_ascii_lowercase());
        }
    }
    for f in LISTS {
        out.extend(list(attributes.get(f.as_str())));
    }
    out
}

fn side(changes: &Changes, after: bool) -> BTreeSet<String> {
    let map: BTreeMap<String, Value> = changes
        .iter()
        .filter_map(|(k, (b, a))| {
            let v = if after { a } else { b };
            Some((k.to_owned(), v.clone()?))
        })
        .collect();
    values(&map)
}

/// Values (addresses and the UPN, lower case) the change set gives the object that it did
/// not have.
pub fn claimed_values(changes: &Changes) -> BTreeSet<String> {
    claimed(changes)
}

/// Values (addresses and the UPN, lower case) the change set takes away from the object.
pub fn released_values(changes: &Changes) -> BTreeSet<String> {
    released(changes)
}

/// Values the change set gives the object that it did not have.
fn claimed(changes: &Changes) -> BTreeSet<String> {
    let (before, after) = (side(changes, false), side(changes, true));
    after.difference(&before).cloned().collect()
}

/// Values the change set takes away from the object.
fn released(changes: &Changes) -> BTreeSet<String> {
    let (before, after) = (side(changes, false), side(changes, true));
    let before: BTreeSet<String> = before.difference(&after).cloned().collect();
    before
}

fn list(v: Option<&Value>) -> impl Iterator<Item = String> + '_ {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_ascii_lowercase)
}

/// The object's MOERA (`<alias>@<tenant>.onmicrosoft.com`), as the tenant shows it.
fn moera(tenant: Option<&Inventory>, anchor: &Anchor) -> Option<String> {
    tenant?.managed.get(anchor)?.proxies.iter().find_map(|p| {
        let (_, a) = smtp_proxy(p)?;
        let domain = a.rsplit('@').next()?.to_ascii_lowercase();
        (domain.ends_with(".onmicrosoft.com") && !domain.ends_with(".mail.onmicrosoft.com"))
            .then(|| a.to_ascii_lowercase())
    })
}

/// Adds to `changes` what makes the object give up `value`: dropped from its aliases, or
/// (as primary address or UPN) replaced by its MOERA. False when it cannot (no MOERA known).
fn give_up(
    changes: &mut Changes,
    row: Option<&ManagedObject>,
    value: &str,
    moera: Option<String>,
) -> bool {
    let current = |changes: &Changes, f: Field| -> Option<Value> {
        match changes.get(f.as_str()) {
            Some((_, after)) => after.clone(),
            None => row.and_then(|r| r.attributes.get(f.as_str()).cloned()),
        }
    };
    let before = |changes: &Changes, f: Field| -> Option<Value> {
        match changes.get(f.as_str()) {
            Some((before, _)) => before.clone(),
            None => row.and_then(|r| r.attributes.get(f.as_str()).cloned()),
        }
    };
    let mut gave = false;
    for f in LISTS {
        let now = current(changes, f);
        let kept: Vec<Value> = now
            .as_ref()
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|v| !v.as_str().is_some_and(|s| s.eq_ignore_ascii_case(value)))
            .cloned()
            .collect();
        if now.as_ref().and_then(Value::as_array).map(Vec::len) != Some(kept.len()) {
            changes.insert(f.as_str(), (before(changes, f), Some(Value::Array(kept))));
            gave = true;
        }
    }
    for f in SINGLE {
        let now = current(changes, f);
        if now
            .as_ref()
            .and_then(Value::as_str)
            .is_some_and(|s| s.eq_ignore_ascii_case(value))
        {
            let Some(moera) = &moera else { return false };
            changes.insert(
                f.as_str(),
                (before(changes, f), Some(Value::String(moera.clone()))),
            );
            gave = true;
        }
    }
    gave
}

fn note(action: &mut Action, value: &str, who: &str) {
    let line = format!("gives up {value} for {who} first");
    match &mut action.reason {
        Some(r) if r.contains(&line) => {}
        Some(r) => {
            r.push_str("; ");
            r.push_str(&line);
        }
        None => action.reason = Some(line),
    }
}

/// The purge of our removed object `d`; its changes list everything it frees.
fn purge(
    holder: &Anchor,
    row: Option<&ManagedObject>,
    d: &crate::inventory::DeletedObject,
    value: &str,
    who: &str,
) -> Action {
    let id = &d.id;
    let freed = Value::Array(d.addresses.iter().cloned().map(Value::String).collect());
    Action {
        op: Op::Purge,
        anchor: holder.clone(),
        uid: row.map(|r| r.uid.clone()).unwrap_or_default(),
        kind: row
            .map(|r| r.kind)
            .unwrap_or(crate::desired::Kind::MailUser),
        dn: row.map(|r| r.dn.clone()).unwrap_or_default(),
        changes: [(
            Field::EmailAddresses.as_str().to_owned(),
            (Some(freed), None),
        )]
        .into_iter()
        .collect(),
        reason: Some(format!(
            "removed earlier, still in the recycle bin as {id}, where it keeps reserving {value}: purged so that {who} can have it (it can no longer be restored)"
        )),
        held: None,
        phase: Phase::Release,
    }
}

/// Moves releasers to the release phase; one that also claims what another releaser gives
/// up is split, so that no release waits for a claim.
fn split_releasers(
    actions: &mut Vec<Action>,
    releasers: &BTreeSet<usize>,
    tenant: Option<&Inventory>,
    summary: &mut Summary,
) {
    let given_up: BTreeSet<String> = releasers
        .iter()
        .flat_map(|i| released(&actions[*i].changes))
        .collect();
    let mut extra = Vec::new();
    for &i in releasers {
        let a = &mut actions[i];
        let needs: BTreeSet<String> = claimed(&a.changes)
            .intersection(&given_up)
            .cloned()
            .collect();
        if needs.is_empty() || a.op != Op::Update {
            a.phase = Phase::Release;
            continue;
        }
        let moera = moera(tenant, &a.anchor);
        let mut first = Changes::default();
        let mut rest = Changes::default();
        for (k, (before, after)) in a.changes.iter() {
            let field: Option<Field> = k.parse().ok();
            match field {
                Some(f) if LISTS.contains(&f) => {
                    // Release: keep only what stays; the rest adds what is new.
                    let stays: Vec<Value> = before
                        .as_ref()
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter(|v| {
                            after
                                .as_ref()
                                .and_then(Value::as_array)
                                .is_some_and(|a| a.contains(v))
                        })
                        .cloned()
                        .collect();
                    let mid = Some(Value::Array(stays));
                    if mid != *before {
                        first.insert(k, (before.clone(), mid.clone()));
                    }
                    if mid != *after {
                        rest.insert(k, (mid, after.clone()));
                    }
                }
                Some(f) if SINGLE.contains(&f) => {
                    let new = after
                        .as_ref()
                        .and_then(Value::as_str)
                        .map(str::to_ascii_lowercase);
                    let gives = before
                        .as_ref()
                        .and_then(Value::as_str)
                        .is_some_and(|b| given_up.contains(&b.to_ascii_lowercase()));
                    if !gives {
                        rest.insert(k, (before.clone(), after.clone()));
                    } else if new.as_ref().is_some_and(|n| !needs.contains(n)) {
                        first.insert(k, (before.clone(), after.clone()));
                    } else if let Some(m) = &moera {
                        let mid = Some(Value::String(m.clone()));
                        first.insert(k, (before.clone(), mid.clone()));
                        rest.insert(k, (mid, after.clone()));
                    } else {
                        rest.insert(k, (before.clone(), after.clone()));
                    }
                }
                _ => rest.insert(k, (before.clone(), after.clone())),
            }
        }
        if first.is_empty() {
            continue;
        }
        if rest.is_empty() {
            a.phase = Phase::Release;
            continue;
        }
        let mut release = a.clone();
        release.changes = first;
        release.phase = Phase::Release;
        a.changes = rest;
        a.reason = Some("the rest, after the releases of this run".into());
        extra.push(release);
        summary.update += 1;
    }
    actions.extend(extra);
}
