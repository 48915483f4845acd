//! Planner phase: a person whose LDAP anchor changed while nothing else did.
//!
//! An LDIF export and import (a server migration, a restore) gives every entry a new
//! `entryUUID`. Diffed naively, each such person is a leaver (the old anchor is gone) plus a
//! newcomer (the new anchor is unknown): the live object would be hidden and a second one
//! could not be created, because the first still holds the UPN and the address. Instead:
//!
//! - **Proof**: a create whose UPN *and* primary address are exactly those of a managed
//!   object whose anchor is gone from the same read (not merely marked disabled), of the same
//!   kind and display name (a recycled uid and address belong to somebody else), which the
//!   tenant shows stamped with the old anchor. The two become one update on
//!   the new anchor that re-stamps the object (`anchor: [old, new]`) and changes whatever
//!   else differs.
//! - **Returning while hidden**: the same proof against a managed object that an earlier
//!   run already hid (stage disabled, within the grace period; the plan has no disable for it,
//!   at most the delete that ends the grace period): the person was put back into LDAP from
//!   an LDIF backup, with a new `entryUUID`. The create becomes the enable a person returning
//!   under the same anchor gets (shown again, sign-in back for a mailbox owner), re-stamping
//!   the object on the new anchor; a planned delete of it is dropped. The handover phase then
//!   sees the old object's addresses as kept by this enable, so nothing strips them.
//! - **Doubt**: the UPN matches but the primary address does not, or the tenant does not
//!   show the old object, or the kinds differ. Both are held as conflicts and reported: the live person
//!   is never hidden for it, and nothing is created twice. (A newcomer with only a leaver's
//!   primary address, under a UPN of their own, is another person taking over the address:
//!   see the handover phase.)

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::Value;

use super::{
    ACCOUNT_ENABLED, Action, Field, Fields, HIDDEN, Held, HeldOutcome, Op, Phase, Scope, Summary,
    diff, hold, target_fields,
};
use crate::desired::Kind;
use crate::ids::Anchor;
use crate::inventory::Inventory;
use crate::state::{ManagedObject, Stage};

/// Pairs creates with disables of the same person under another anchor, or with that
/// person's object an earlier run hid (see the module doc).
pub(super) fn pair_anchor_changes(
    actions: &mut Vec<Action>,
    objects: &BTreeMap<&Anchor, &ManagedObject>,
    gone: &BTreeSet<&Anchor>,
    claimed: &HashSet<String>,
    tenant: Option<&Inventory>,
    scope: Scope,
    summary: &mut Summary,
) {
    // Leavers whose anchor is gone from the read, by their UPN and by their primary address:
    // those this run hides, and those an earlier run hid.
    let mut by_identity: BTreeMap<String, &Anchor> = BTreeMap::new();
    let mut disables: BTreeMap<&Anchor, usize> = BTreeMap::new();
    for (i, a) in actions.iter().enumerate() {
        if a.op == Op::Disable
            && a.held.is_none()
            && gone.contains(&a.anchor)
            && let Some((anchor, obj)) = objects.get_key_value(&a.anchor)
        {
            disables.insert(anchor, i);
            for v in identity(&obj.attributes) {
                by_identity.insert(v, anchor);
            }
        }
    }
    for (anchor, obj) in objects {
        if obj.stage == Stage::Disabled && gone.contains(anchor) {
            for v in identity(&obj.attributes) {
                by_identity.entry(v).or_insert(anchor);
            }
        }
    }
    if by_identity.is_empty() {
        return;
    }
    let mut merged: Vec<(usize, &Anchor)> = Vec::new();
    let mut held: Vec<(usize, &Anchor, String)> = Vec::new();
    let mut used = BTreeSet::new();
    for (c, create) in actions.iter().enumerate() {
        if create.op != Op::Create || create.held.is_some() {
            continue;
        }
        let after = |f: Field| {
            create
                .changes
                .get(f.as_str())
                .and_then(|(_, a)| a.as_ref())
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase)
        };
        let (upn, primary) = (
            after(Field::UserPrincipalName),
            after(Field::PrimarySmtpAddress),
        );
        let by_upn = upn
            .as_ref()
            .and_then(|u| by_identity.get(&format!("upn:{u}")))
            .copied();
        let by_primary = primary
            .as_ref()
            .and_then(|p| by_identity.get(&format!("primary:{p}")))
            .copied();
        // Only the primary address matching is a different person taking over a leaver's
        // address (the handover phase frees it), not a doubt.
        let Some(d) = by_upn else {
            continue;
        };
        let old = objects[d];
        // An `--only` read covers just the named uids: an object of another uid missing
        // from it may well still be in LDAP.
        if scope == Scope::Only && !disables.contains_key(d) && old.uid != create.uid {
            continue;
        }
        if !used.insert(d) {
            continue;
        }
        let shown = tenant.is_none_or(|t| {
            t.managed
                .get(d)
                .is_some_and(|o| Some(o.upn.to_ascii_lowercase()) == upn)
        });
        // A recycled uid and address (somebody else under the same name) must not take over
        // the leaver's object: the display name must be the same too.
        let display = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_lowercase);
        let same_person = display(old.attributes.get(Field::DisplayName.as_str()))
            == display(
                create
                    .changes
                    .get(Field::DisplayName.as_str())
                    .and_then(|(_, a)| a.as_ref()),
            );
        if by_upn == by_primary && old.kind == create.kind && shown && same_person {
            merged.push((c, d));
        } else {
            let doubt = if by_upn != by_primary {
                "the primary address differs"
            } else if old.kind != create.kind {
                "the kinds differ"
            } else if !same_person {
                "the display name differs (a recycled uid and address?)"
            } else {
                "the tenant does not show the old object stamped with the old anchor"
            };
            held.push((c, d, doubt.to_owned()));
        }
    }

    // The leaver's own action: this run's disable, or the delete that ends the grace period
    // of an object an earlier run hid.
    let leaver_action = |actions: &[Action], d: &Anchor| {
        disables.get(d).copied().or_else(|| {
            actions
                .iter()
                .position(|a| a.op == Op::Delete && a.held.is_none() && &a.anchor == d)
        })
    };
    for (c, d, doubt) in &held {
        let old = objects[*d];
        let (new, new_uid) = (actions[*c].anchor.clone(), actions[*c].uid.clone());
        hold(
            summary,
            &mut actions[*c],
            Held {
                outcome: HeldOutcome::Conflict,
                reason: format!(
                    "the UPN or primary address belongs to ldap2exo's object of {} (anchor {}), whose LDAP entry is gone; it may be the same person under a new entryUUID, but {doubt}: neither is changed until LDAP or the tenant settles it",
                    old.uid, old.anchor
                ),
            },
        );
        if let Some(l) = leaver_action(actions, d) {
            let what = if actions[l].op == Op::Disable {
                "hidden"
            } else {
                "deleted"
            };
            hold(
                summary,
                &mut actions[l],
                Held {
                    outcome: HeldOutcome::Conflict,
                    reason: format!(
                        "not {what}: the new LDAP entry of {new_uid} (anchor {new}) has this person's UPN or primary address, so this may be the same person under a new entryUUID, but {doubt}"
                    ),
                },
            );
        }
    }

    let mut remove = BTreeSet::new();
    for (c, d) in merged {
        let old = objects[d];
        let create = &actions[c];
        // The planner's own changes: every key names a field.
        let fields: Fields = create
            .changes
            .iter()
            .filter_map(|(k, (_, after))| Some((k.parse::<Field>().ok()?, after.clone()?)))
            .collect();
        let hidden = fields.get(HIDDEN).cloned();
        let mut changes = diff(
            &old.attributes,
            target_fields(fields, create.kind, Some(old), claimed),
        );
        changes.insert(
            Field::Anchor.as_str(),
            (
                Some(Value::String(old.anchor.to_string())),
                Some(Value::String(create.anchor.to_string())),
            ),
        );
        let leaver = leaver_action(actions, d);
        let (op, reason) = if disables.contains_key(d) {
            (
                Op::Update,
                format!(
                    "re-anchor: the LDAP entry's anchor changed from {} (gone from LDAP) to {}; same UPN and primary address, so the object is stamped with the new anchor",
                    old.anchor, create.anchor
                ),
            )
        } else {
            // What the enable of a person back under the same anchor carries (plan::plan).
            if old.kind == Kind::Mailbox {
                changes.insert(
                    ACCOUNT_ENABLED,
                    (Some(Value::Bool(false)), Some(Value::Bool(true))),
                );
            }
            changes.insert(
                HIDDEN,
                (
                    Some(Value::Bool(true)),
                    Some(hidden.unwrap_or(Value::Bool(false))),
                ),
            );
            (
                Op::Enable,
                format!(
                    "back in LDAP within the grace period under a new anchor: re-anchor from {} (gone from LDAP) to {}; same UPN and primary address, so the hidden object is shown again and stamped with the new anchor",
                    old.anchor, create.anchor
                ),
            )
        };
        actions[c] = Action {
            op,
            anchor: create.anchor.clone(),
            uid: create.uid.clone(),
            kind: create.kind,
            dn: create.dn.clone(),
            changes,
            reason: Some(reason),
            held: None,
            phase: Phase::Main,
        };
        *summary.slot(Op::Create) -= 1;
        summary.bump(op);
        match leaver {
            Some(l) => {
                *summary.slot(actions[l].op) -= 1;
                remove.insert(l);
            }
            // An object hidden earlier with nothing planned was counted unchanged (a full run
            // counts everyone; an `--only` run only the people it names).
            None if scope == Scope::Full => summary.unchanged = summary.unchanged.saturating_sub(1),
            None => {}
        }
    }
    let mut i = 0;
    actions.retain(|_| {
        i += 1;
        !remove.contains(&(i - 1))
    });
}

/// `upn:<upn>` and `primary:<address>` of a state row, lower case.
fn identity(attributes: &Fields) -> impl Iterator<Item = String> + '_ {
    [
        ("upn", "userPrincipalName"),
        ("primary", "primarySmtpAddress"),
    ]
    .into_iter()
    .filter_map(|(tag, key)| {
        let v = attributes.get(key)?.as_str()?;
        Some(format!("{tag}:{}", v.to_ascii_lowercase()))
    })
}
