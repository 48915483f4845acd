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
//! A claim that cannot be freed this run holds its claimant as a conflict that says why, and
//! nothing is freed for it: the holder's entry is quarantined or outside an `--only` run, the
//! safety verdict keeps the leaver, the leaver is deleted in this very run (the recycle bin
//! then holds it; the next run purges it), or the MOERA a primary address or UPN would be
//! replaced by is unknown (a dry run without tenant credentials).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use super::{Action, Changes, Field, Fields, Op, Phase, Scope, Summary};
use crate::ids::Anchor;
use crate::inventory::{Inventory, smtp_proxy};
use crate::state::{ManagedObject, Stage};

/// The address fields (lower case) whose values change hands; the UPN counts as an address
/// (Exchange shows it as `WindowsLiveID`, and a proxy address may not equal another's UPN).
const SINGLE: [Field; 2] = [Field::UserPrincipalName, Field::PrimarySmtpAddress];
const LISTS: [Field; 2] = [Field::EmailAddresses, Field::RetainedAddresses];

/// What the handover phase needs to know besides the actions.
pub(super) struct Context<'a> {
    /// The state store's rows, reconciled with the tenant.
    pub objects: &'a [ManagedObject],
    pub tenant: Option<&'a Inventory>,
    /// Anchors of quarantined entries: still in LDAP, so nothing of theirs is changed.
    pub quarantined: &'a BTreeSet<Anchor>,
    /// An `--only` run changes nobody outside its selection.
    pub scope: Scope,
    /// The safety verdict holds removals back: leavers do not leave this run.
    pub removals_blocked: bool,
}

/// How one claimed value gets free.
enum Freed {
    /// The holder's own action gives it up already.
    ByAction(usize),
    /// The holder's disable or update is extended to give it up.
    GiveUp(usize),
    /// Our removed object in the recycle bin is purged.
    Purge(Anchor),
    /// A hidden leaver without an action this run gets one that gives it up.
    LeaverUpdate(Anchor),
    /// It cannot be freed this run: the claimant is held, for this reason.
    Not(String),
    /// Held by a removed object the inventory does not list: only the run can tell (it
    /// reports a refusal with its reason).
    Unknown,
}

/// Orders releases before claims and plans the releases nobody planned (see the module doc).
/// A claimant whose claim cannot be freed this run is held as a conflict saying why, and
/// nothing is freed for it.
pub(super) fn order_handovers(actions: &mut Vec<Action>, ctx: &Context, summary: &mut Summary) {
    if !Holders::any(ctx.objects, ctx.tenant) {
        // Nothing is held yet (a first run): no claim needs freeing, and at 50,000 creates
        // working out every claim only to find no holder cost a tenth of the dry run.
        return;
    }
    let mut holders = Holders::of(actions, ctx.objects, ctx.tenant);
    let rows: BTreeMap<&Anchor, &ManagedObject> =
        ctx.objects.iter().map(|o| (&o.anchor, o)).collect();
    let mut index: HashMap<Anchor, usize> = HashMap::new();
    for (i, a) in actions.iter().enumerate().filter(|(_, a)| a.held.is_none()) {
        index.insert(a.anchor.clone(), i);
        // A re-anchor acts on the object and row of the old anchor.
        if let Some((Some(Value::String(old)), _)) = a.changes.get(Field::Anchor.as_str())
            && let Ok(old) = Anchor::new(old)
        {
            index.insert(old, i);
        }
    }
    let mut releasers: BTreeSet<usize> = BTreeSet::new();
    let mut added: BTreeMap<Anchor, usize> = BTreeMap::new();
    for c in 0..actions.len() {
        if actions[c].held.is_some() {
            continue;
        }
        let mut plan: Vec<(String, Freed)> = Vec::new();
        for value in claimed(&actions[c].changes) {
            let Some(holder) = holders.get(&value) else {
                continue;
            };
            if holder == actions[c].anchor || index.get(&holder) == Some(&c) {
                continue;
            }
            let freed = decide(actions, &index, &rows, ctx, &holder, &value);
            plan.push((value, freed));
        }
        if let Some(why) = plan.iter().find_map(|(_, f)| match f {
            Freed::Not(why) => Some(why.clone()),
            _ => None,
        }) {
            super::hold(
                summary,
                &mut actions[c],
                super::Held {
                    outcome: super::HeldOutcome::Conflict,
                    reason: why,
                },
            );
            continue;
        }
        let who = actions[c].uid.clone();
        for (value, freed) in plan {
            let y = match freed {
                Freed::ByAction(y) => y,
                Freed::GiveUp(y) => {
                    let holder = actions[y].anchor.clone();
                    let row = rows.get(&holder).copied();
                    give_up(
                        &mut actions[y].changes,
                        row,
                        &value,
                        moera(ctx.tenant, &holder),
                    );
                    y
                }
                Freed::Purge(holder) => *added.entry(holder.clone()).or_insert_with(|| {
                    let d = &ctx
                        .tenant
                        .expect("a purge is planned from the inventory")
                        .own_deleted[&holder];
                    actions.push(purge(&holder, rows.get(&holder).copied(), d, &value, &who));
                    summary.bump(Op::Purge);
                    actions.len() - 1
                }),
                Freed::LeaverUpdate(holder) => {
                    let r = rows[&holder];
                    let y = *added.entry(holder.clone()).or_insert_with(|| {
                        actions.push(Action {
                            op: Op::Update,
                            anchor: r.anchor.clone(),
                            uid: r.uid.clone(),
                            kind: r.kind,
                            dn: r.dn.clone(),
                            changes: Changes::default(),
                            reason: Some("left LDAP (hidden, within the grace period)".into()),
                            held: None,
                            phase: Phase::Release,
                        });
                        // Counted as unchanged by the diff; now it has something to do.
                        summary.bump(Op::Update);
                        summary.unchanged = summary.unchanged.saturating_sub(1);
                        actions.len() - 1
                    });
                    give_up(
                        &mut actions[y].changes,
                        Some(r),
                        &value,
                        moera(ctx.tenant, &holder),
                    );
                    y
                }
                Freed::Unknown => continue,
                Freed::Not(_) => {
                    unreachable!("a claimant with a claim that cannot be freed is held")
                }
            };
            note(&mut actions[y], &value, &who);
            releasers.insert(y);
        }
    }
    split_releasers(actions, &releasers, ctx.tenant, summary);
}

/// How `value`, held by `holder`, gets free for another action of this run (read only).
fn decide(
    actions: &[Action],
    index: &HashMap<Anchor, usize>,
    rows: &BTreeMap<&Anchor, &ManagedObject>,
    ctx: &Context,
    holder: &Anchor,
    value: &str,
) -> Freed {
    let name = rows
        .get(holder)
        .map(|r| r.uid.clone())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("the person with anchor {holder}"));
    let moera_known = moera(ctx.tenant, holder).is_some();
    let no_moera = || {
        Freed::Not(format!(
            "needs {value}, which {name} holds as primary address or UPN; without its MOERA in the tenant's answer it cannot give it up this run"
        ))
    };
    if let Some(&y) = index.get(holder) {
        let a = &actions[y];
        if ctx.removals_blocked && (a.op.is_removal() || a.op == Op::Purge) {
            return Freed::Not(format!(
                "needs {value}, which {name} gives up only as they leave; the safety verdict holds removals back this run"
            ));
        }
        if released(&a.changes).contains(value) {
            return Freed::ByAction(y);
        }
        return match a.op {
            Op::Disable | Op::Update => {
                let single = current_single(&a.changes, rows.get(holder).copied(), value);
                if single && !moera_known {
                    no_moera()
                } else {
                    Freed::GiveUp(y)
                }
            }
            Op::Delete => Freed::Not(format!(
                "needs {value}, which {name} keeps reserving in the recycle bin after this run deletes them; the next run purges it and hands it over"
            )),
            _ => Freed::Not(format!("needs {value}, which {name} keeps")),
        };
    }
    if ctx.quarantined.contains(holder) {
        return Freed::Not(format!(
            "needs {value}, which {name} holds; their LDAP entry is quarantined, so nothing of theirs changes until it is fixed"
        ));
    }
    if ctx.scope == Scope::Only {
        return Freed::Not(format!(
            "needs {value}, which {name} holds; {name} is not part of this --only run"
        ));
    }
    let row = rows.get(holder).copied();
    let deleted = ctx.tenant.and_then(|t| t.own_deleted.get(holder));
    if deleted.is_some() && row.is_none_or(|r| r.stage == Stage::Deleted) {
        if ctx.removals_blocked {
            return Freed::Not(format!(
                "needs {value}, which the removed object of {name} still reserves in the recycle bin; the safety verdict holds removals (and purges) back this run"
            ));
        }
        return Freed::Purge(holder.clone());
    }
    match row {
        Some(r) if r.stage == Stage::Disabled => {
            if current_single(&Changes::default(), Some(r), value) && !moera_known {
                no_moera()
            } else {
                Freed::LeaverUpdate(holder.clone())
            }
        }
        Some(r) if r.stage == Stage::Active => Freed::Not(format!(
            "needs {value}, which {name} holds and keeps this run (their own change is held)"
        )),
        // Deleted and not in the listed recycle bin (a removed mailbox, or gone): only the
        // run can tell; it reports a refusal with its reason.
        _ => Freed::Unknown,
    }
}

/// Whether `value` is the object's primary address or UPN (after `changes`, else as the row
/// records it): giving it up then needs a replacement.
fn current_single(changes: &Changes, row: Option<&ManagedObject>, value: &str) -> bool {
    SINGLE.iter().any(|f| {
        let now = match changes.get(f.as_str()) {
            Some((_, after)) => after.clone(),
            None => row.and_then(|r| r.attributes.get(f.as_str()).cloned()),
        };
        now.as_ref()
            .and_then(Value::as_str)
            .is_some_and(|s| s.eq_ignore_ascii_case(value))
    })
}

/// Who holds an address or UPN (lower case): the last state row not deleted that has it,
/// else the first of our removed objects in the recycle bin that has it.
///
/// Only the values the plan's actions claim are looked up, so the holders of those are
/// found in one pass at the start instead of indexing every value of every row: a plan of
/// ten changes spent a fifth of its planning on that index at 10,000 people. A value an
/// action comes to claim later (a releaser falling back to its MOERA) is found by a pass of
/// its own, with the same rule.
struct Holders<'a> {
    objects: &'a [ManagedObject],
    tenant: Option<&'a Inventory>,
    found: HashMap<String, Option<Anchor>>,
}

impl<'a> Holders<'a> {
    /// Whether anybody holds any value at all.
    fn any(objects: &[ManagedObject], tenant: Option<&Inventory>) -> bool {
        objects
            .iter()
            .any(|o| o.stage != Stage::Deleted && !values(&o.attributes).is_empty())
            || tenant.is_some_and(|t| t.own_deleted.values().any(|d| !d.addresses.is_empty()))
    }

    /// The holders of every value an action not held claims.
    fn of(actions: &[Action], objects: &'a [ManagedObject], tenant: Option<&'a Inventory>) -> Self {
        let wanted: BTreeSet<String> = actions
            .iter()
            .filter(|a| a.held.is_none())
            .flat_map(|a| claimed(&a.changes))
            .collect();
        let mut holders = Holders {
            objects,
            tenant,
            found: wanted.into_iter().map(|v| (v, None)).collect(),
        };
        holders.look_up();
        holders
    }

    /// Fills in the holder of every value in `found`, in one pass over the rows.
    fn look_up(&mut self) {
        let found = &mut self.found;
        for o in self.objects.iter().filter(|o| o.stage != Stage::Deleted) {
            for v in values(&o.attributes) {
                if let Some(h) = found.get_mut(&v) {
                    *h = Some(o.anchor.clone());
                }
            }
        }
        if let Some(t) = self.tenant {
            for (anchor, d) in &t.own_deleted {
                for a in &d.addresses {
                    if let Some(h @ None) = found.get_mut(a) {
                        *h = Some(anchor.clone());
                    }
                }
            }
        }
    }

    fn get(&mut self, value: &str) -> Option<Anchor> {
        if !self.found.contains_key(value) {
            let mut one = Holders {
                objects: self.objects,
                tenant: self.tenant,
                found: HashMap::from([(value.to_owned(), None)]),
            };
            one.look_up();
            self.found.extend(one.found);
        }
        self.found[value].clone()
    }
}

/// The address values of a state row (or of one side of a change set), lower case.
fn values(attributes: &Fields) -> BTreeSet<String> {
    values_of(|f| attributes.get(f.as_str()))
}

/// The address values (lower case) of the fields `get` gives.
fn values_of<'a>(get: impl Fn(Field) -> Option<&'a Value>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for f in SINGLE {
        if let Some(v) = get(f).and_then(Value::as_str) {
            out.insert(v.to_ascii_lowercase());
        }
    }
    for f in LISTS {
        out.extend(list(get(f)));
    }
    out
}

/// The address values of one side of a change set, read in place (this runs for every
/// action of a plan: copying each change set into a `Fields` first cost more than the rest).
fn side(changes: &Changes, after: bool) -> BTreeSet<String> {
    values_of(|f| {
        let (before, now) = changes.get(f.as_str())?;
        if after { now } else { before }.as_ref()
    })
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
/// (as primary address or UPN) replaced by its MOERA. False, with `changes` untouched, when it
/// cannot (no MOERA known for a primary address or UPN).
fn give_up(
    changes: &mut Changes,
    row: Option<&ManagedObject>,
    value: &str,
    moera: Option<String>,
) -> bool {
    if current_single(changes, row, value) && moera.is_none() {
        return false;
    }
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
            && let Some(moera) = &moera
        {
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
                        first.insert(k.to_owned(), (before.clone(), mid.clone()));
                    }
                    if mid != *after {
                        rest.insert(k.to_owned(), (mid, after.clone()));
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
                        rest.insert(k.to_owned(), (before.clone(), after.clone()));
                    } else if new.as_ref().is_some_and(|n| !needs.contains(n)) {
                        first.insert(k.to_owned(), (before.clone(), after.clone()));
                    } else if let Some(m) = &moera {
                        let mid = Some(Value::String(m.clone()));
                        first.insert(k.to_owned(), (before.clone(), mid.clone()));
                        rest.insert(k.to_owned(), (mid, after.clone()));
                    } else {
                        rest.insert(k.to_owned(), (before.clone(), after.clone()));
                    }
                }
                _ => rest.insert(k.to_owned(), (before.clone(), after.clone())),
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
        summary.bump(Op::Update);
    }
    actions.extend(extra);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::desired::Kind;
    use crate::inventory::DeletedObject;

    fn anchor(i: usize) -> Anchor {
        Anchor::new(&format!("{i:08}-0000-4000-8000-000000000000")).unwrap()
    }

    /// Row `i` with `values[0]` as its primary address and the rest as its addresses.
    fn row(i: usize, stage: Stage, values: &[&str]) -> ManagedObject {
        let mut attributes = Fields::new();
        if let Some((primary, rest)) = values.split_first() {
            attributes.insert(Field::PrimarySmtpAddress, json!(primary));
            attributes.insert(Field::EmailAddresses, json!(rest));
        }
        ManagedObject {
            anchor: anchor(i),
            kind: Kind::MailUser,
            uid: format!("p{i}"),
            dn: String::new(),
            tenant_object_id: None,
            attributes,
            stage,
            created_at: 0,
            updated_at: 0,
            disabled_at: (stage == Stage::Disabled).then_some(0),
            delete_due_at: (stage == Stage::Disabled).then_some(1),
            deleted_at: (stage == Stage::Deleted).then_some(0),
        }
    }

    fn deleted(addresses: &[&str]) -> DeletedObject {
        DeletedObject {
            id: "id".into(),
            exchange_guid: None,
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            name: None,
        }
    }

    /// Every value of every row indexed at once: how the holders were found before, kept
    /// as the reference.
    fn every_holder(objects: &[ManagedObject], tenant: &Inventory) -> HashMap<String, Anchor> {
        let mut out = HashMap::new();
        for o in objects.iter().filter(|o| o.stage != Stage::Deleted) {
            for v in values(&o.attributes) {
                out.insert(v, o.anchor.clone());
            }
        }
        for (anchor, d) in &tenant.own_deleted {
            for a in &d.addresses {
                out.entry(a.clone()).or_insert_with(|| anchor.clone());
            }
        }
        out
    }

    /// Found for the actions' claims at the start or on demand later, a holder is the one
    /// an index of everything gives: the last row not deleted, else the first deleted
    /// object in the recycle bin, else nobody.
    #[test]
    fn holders_are_those_an_index_of_every_value_gives() {
        let objects = [
            row(0, Stage::Active, &["a@x.edu", "b@x.edu"]),
            row(1, Stage::Disabled, &["b@x.edu", "c@x.edu"]),
            row(2, Stage::Deleted, &["d@x.edu"]),
            row(3, Stage::Active, &["A@X.edu"]),
        ];
        let mut tenant = Inventory::default();
        tenant
            .own_deleted
            .insert(anchor(10), deleted(&["c@x.edu", "d@x.edu"]));
        tenant
            .own_deleted
            .insert(anchor(11), deleted(&["d@x.edu", "e@x.edu"]));
        let reference = every_holder(&objects, &tenant);
        let mut changes = Changes::default();
        changes.insert(
            Field::EmailAddresses.as_str(),
            (None, Some(json!(["b@x.edu", "e@x.edu", "f@x.edu"]))),
        );
        let claimant = Action {
            op: Op::Create,
            anchor: anchor(20),
            uid: "new".into(),
            kind: Kind::MailUser,
            dn: String::new(),
            changes,
            reason: None,
            held: None,
            phase: Phase::Main,
        };
        for actions in [vec![], vec![claimant]] {
            let mut holders = Holders::of(&actions, &objects, Some(&tenant));
            for v in [
                "a@x.edu", "b@x.edu", "c@x.edu", "d@x.edu", "e@x.edu", "f@x.edu",
            ] {
                let expected = reference.get(v).cloned();
                assert_eq!(holders.get(v), expected, "{v} ({} actions)", actions.len());
            }
        }
        // The expectations themselves: a later row wins, a deleted row holds nothing.
        assert_eq!(reference["a@x.edu"], anchor(3));
        assert_eq!(reference["b@x.edu"], anchor(1));
        assert_eq!(reference["c@x.edu"], anchor(1));
        assert_eq!(reference["d@x.edu"], anchor(10));
        assert_eq!(reference["e@x.edu"], anchor(11));
        assert!(Holders::any(&objects, None));
        assert!(!Holders::any(&objects[2..3], None));
        assert!(Holders::any(&objects[2..3], Some(&tenant)));
    }
}
