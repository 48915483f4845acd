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
//! - **Doubt**: the UPN matches but the primary address does not, or the tenant does not
//!   show the old object, or the kinds differ. Both are held as conflicts and reported: the live person
//!   is never hidden for it, and nothing is created twice. (A newcomer with only a leaver's
//!   primary address, under a UPN of their own, is another person taking over the address:
//!   see the handover phase.)

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::Value;

use super::{Action, Field, Held, HeldOutcome, Op, Phase, Summary, diff, hold, target_fields};
use crate::ids::Anchor;
use crate::inventory::Inventory;
use crate::state::ManagedObject;

/// Pairs creates with disables of the same person under another anchor (see the module doc).
pub(super) fn pair_anchor_changes(
    actions: &mut Vec<Action>,
    objects: &BTreeMap<&Anchor, &ManagedObject>,
    gone: &BTreeSet<&Anchor>,
    claimed: &HashSet<String>,
    tenant: Option<&Inventory>,
    summary: &mut Summary,
) {
    // Leavers whose anchor is gone from the read, by their UPN and by their primary address.
    let mut by_identity: BTreeMap<String, usize> = BTreeMap::new();
    for (i, a) in actions.iter().enumerate() {
        if a.op == Op::Disable
            && a.held.is_none()
            && gone.contains(&a.anchor)
            && let Some(obj) = objects.get(&a.anchor)
        {
            for v in identity(&obj.attributes) {
                by_identity.insert(v, i);
            }
        }
    }
    if by_identity.is_empty() {
        return;
    }
    let mut merged: Vec<(usize, usize)> = Vec::new();
    let mut held: Vec<(usize, usize, String)> = Vec::new();
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
            .and_then(|u| by_identity.get(&format!("upn:{u}")));
        let by_primary = primary
            .as_ref()
            .and_then(|p| by_identity.get(&format!("primary:{p}")));
        // Only the primary address matching is a different person taking over a leaver's
        // address (the handover phase frees it), not a doubt.
        let Some(&d) = by_upn else {
            continue;
        };
        if !used.insert(d) {
            continue;
        }
        let leaver = &actions[d];
        let old = objects[&leaver.anchor];
        let shown = tenant.is_none_or(|t| {
            t.managed
                .get(&leaver.anchor)
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

    for (c, d, doubt) in &held {
        let (new, old) = (actions[*c].anchor.clone(), actions[*d].anchor.clone());
        let (new_uid, old_uid) = (actions[*c].uid.clone(), actions[*d].uid.clone());
        hold(
            summary,
            &mut actions[*c],
            Held {
                outcome: HeldOutcome::Conflict,
                reason: format!(
                    "the UPN or primary address belongs to ldap2exo's object of {old_uid} (anchor {old}), whose LDAP entry is gone; it may be the same person under a new entryUUID, but {doubt}: neither is changed until LDAP or the tenant settles it"
                ),
            },
        );
        hold(
            summary,
            &mut actions[*d],
            Held {
                outcome: HeldOutcome::Conflict,
                reason: format!(
                    "not hidden: the new LDAP entry of {new_uid} (anchor {new}) has this person's UPN or primary address, so this may be the same person under a new entryUUID, but {doubt}"
                ),
            },
        );
    }

    let mut remove = BTreeSet::new();
    for (c, d) in merged {
        let old = objects[&actions[d].anchor];
        let create = &actions[c];
        let fields: BTreeMap<String, Value> = create
            .changes
            .iter()
            .filter_map(|(k, (_, after))| Some((k.to_owned(), after.clone()?)))
            .collect();
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
        actions[c] = Action {
            op: Op::Update,
            anchor: create.anchor.clone(),
            uid: create.uid.clone(),
            kind: create.kind,
            dn: create.dn.clone(),
            changes,
            reason: Some(format!(
                "re-anchor: the LDAP entry's anchor changed from {} (gone from LDAP) to {}; same UPN and primary address, so the object is stamped with the new anchor",
                old.anchor, create.anchor
            )),
            held: None,
            phase: Phase::Main,
        };
        *summary.slot(Op::Create) -= 1;
        *summary.slot(Op::Disable) -= 1;
        summary.bump(Op::Update);
        remove.insert(d);
    }
    let mut i = 0;
    actions.retain(|_| {
        i += 1;
        !remove.contains(&(i - 1))
    });
}

/// `upn:<upn>` and `primary:<address>` of a state row, lower case.
fn identity(attributes: &BTreeMap<String, Value>) -> impl Iterator<Item = String> + '_ {
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
