//! Planner phase: what the tenant already holds for somebody ldap2exo does not manage.
//!
//! The inventory lists every UPN, address and Exchange `Name` of objects without our stamp
//! (and of removed objects still in the recycle bin). A create whose UPN or primary address
//! is one of them cannot succeed: the plan holds it as a conflict naming the holder, so the
//! dry run says what the real run will do. A `Name` is only a label unique among recipients,
//! so a taken one is replaced by a free one chosen deterministically (`<name>-2`, `-3`, …);
//! an alias somebody else holds is left out by the run, which the plan warns about.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::Value;

use super::{Action, Field, Held, HeldOutcome, Op, Summary, Warning, hold};
use crate::ids::Anchor;
use crate::inventory::Inventory;
use crate::state::{ManagedObject, Stage};

/// `New-MailUser -Name`: at most 64 characters (as in `desired`).
const MAX_NAME: usize = 64;

/// Holds creates whose UPN or primary address belongs to an unmanaged object, gives creates
/// a free `Name`, keeps an existing person's `Name` when the wanted one is taken, and warns
/// about aliases held elsewhere.
pub(super) fn hold_foreign_claims(
    actions: &mut Vec<Action>,
    objects: &[ManagedObject],
    tenant: &Inventory,
    journaled_creates: &BTreeSet<Anchor>,
    summary: &mut Summary,
    warnings: &mut Vec<Warning>,
) {
    let mut taken = TakenNames::new(objects, tenant);
    for a in actions.iter_mut() {
        if a.held.is_some() || !matches!(a.op, Op::Create | Op::Update | Op::Enable | Op::Convert) {
            continue;
        }
        if a.op == Op::Create
            && let Some(why) = foreign_identity(a, tenant, journaled_creates.contains(&a.anchor))
        {
            hold(
                summary,
                a,
                Held {
                    outcome: HeldOutcome::Conflict,
                    reason: why,
                },
            );
            continue;
        }
        let ours = match a.op == Op::Create && journaled_creates.contains(&a.anchor) {
            true => earlier_object(a, tenant).map(|(o, n)| (o.clone(), n.clone())),
            false => None,
        };
        if let Some((_, name)) = &ours {
            // The earlier create's object is found by the Name it was given.
            a.changes.insert(
                Field::Name.as_str(),
                (None, Some(Value::String(name.clone()))),
            );
        }
        settle_name(
            a,
            &mut taken,
            ours.as_ref().map(|(o, _)| o.as_str()),
            warnings,
        );
        for (address, owner) in foreign_aliases(a, tenant) {
            warnings.push(Warning {
                dn: a.dn.clone(),
                uid: Some(a.uid.clone()),
                field: "aliases".into(),
                message: format!(
                    "alias {address} belongs to {owner}, which ldap2exo does not manage; {} without it",
                    if a.op == Op::Create {
                        "the person is created"
                    } else {
                        "the person keeps everything else"
                    }
                ),
            });
        }
    }
    // An update that only wanted a taken Name has nothing left to do.
    let before = actions.len();
    actions.retain(|a| a.op != Op::Update || !a.changes.is_empty());
    summary.update -= before - actions.len();
    summary.unchanged += before - actions.len();
}

/// Why a create cannot go ahead: its UPN or primary address belongs to somebody else. An
/// unstamped object with exactly the planned UPN and Name is this very person's object when an
/// earlier run journaled its create (`journaled`) and stopped before stamping it: apply adopts
/// it with that proof, so the plan does not call it a conflict.
fn foreign_identity(a: &Action, tenant: &Inventory, journaled: bool) -> Option<String> {
    let maybe_ours = earlier_object(a, tenant)
        .filter(|_| journaled)
        .map(|(owner, _)| owner);
    [
        ("UPN", Field::UserPrincipalName),
        ("primary address", Field::PrimarySmtpAddress),
    ]
    .into_iter()
    .find_map(|(what, field)| {
        let value = after_str(a, field)?;
        let owner = tenant.foreign.get(&value.to_ascii_lowercase())?;
        if maybe_ours == Some(owner) {
            return None;
        }
        Some(format!(
            "{what} {value} already belongs to {owner}, which ldap2exo does not manage; nothing is created (adopt it by stamping it, or free the {what})"
        ))
    })
}

/// The unstamped object with exactly the planned UPN and the planned Name (or a free
/// `<name>-N` an earlier run chose for it): the object an earlier create of this person made,
/// if the journal says one was sent. Its owner description and its Name.
fn earlier_object<'t>(a: &Action, tenant: &'t Inventory) -> Option<(&'t String, &'t String)> {
    let upn = after_str(a, Field::UserPrincipalName)?.to_ascii_lowercase();
    let wanted = after_str(a, Field::Name)?.to_lowercase();
    let (key, name) = tenant.unstamped.get_key_value(&upn)?;
    let lower = name.to_lowercase();
    let same = lower == wanted
        || lower
            .strip_prefix(&format!("{wanted}-"))
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    let owner = tenant.foreign.get(key)?;
    same.then_some((owner, name))
}

/// The aliases this action adds that an unmanaged object holds.
fn foreign_aliases<'t>(a: &Action, tenant: &'t Inventory) -> Vec<(String, &'t String)> {
    let Some((before, after)) = a.changes.get(Field::EmailAddresses.as_str()) else {
        return Vec::new();
    };
    let had: HashSet<String> = lower_list(before.as_ref()).collect();
    lower_list(after.as_ref())
        .filter(|x| !had.contains(x))
        .filter_map(|x| tenant.foreign.get(&x).map(|owner| (x, owner)))
        .collect()
}

/// Who holds an Exchange `Name`: a description, and the anchor when it is one of ours.
struct NameHolder {
    owner: String,
    anchor: Option<Anchor>,
    /// For a removed object of ours in the recycle bin: the addresses it reserves. A person
    /// who claims one of them has it purged (the handover phase), which frees the Name too.
    purged_for: Option<std::collections::BTreeSet<String>>,
}

/// Exchange `Name`s (lower case) already held, and by whom.
struct TakenNames {
    by: HashMap<String, NameHolder>,
}

impl TakenNames {
    fn new(objects: &[ManagedObject], tenant: &Inventory) -> Self {
        let mut by = HashMap::new();
        for (name, owner) in &tenant.foreign_names {
            by.insert(
                name.clone(),
                NameHolder {
                    owner: owner.clone(),
                    anchor: None,
                    purged_for: None,
                },
            );
        }
        for (anchor, d) in &tenant.own_deleted {
            if let Some(name) = &d.name {
                by.entry(name.clone()).or_insert(NameHolder {
                    owner: format!(
                        "a removed MailUser of ldap2exo still in the recycle bin ({})",
                        d.id
                    ),
                    anchor: Some(anchor.clone()),
                    purged_for: Some(d.addresses.clone()),
                });
            }
        }
        for o in objects.iter().filter(|o| o.stage != Stage::Deleted) {
            if let Some(name) = o.attributes.get("name").and_then(Value::as_str) {
                by.entry(name.to_lowercase()).or_insert(NameHolder {
                    owner: format!("the object of {} managed by ldap2exo", o.uid),
                    anchor: Some(o.anchor.clone()),
                    purged_for: None,
                });
            }
        }
        TakenNames { by }
    }

    /// Who holds `name`, unless it is the person `anchor` themselves, or a removed object
    /// that is purged because the person claims one of its addresses (`claims`).
    fn holder(&self, name: &str, anchor: &Anchor, claims: &HashSet<String>) -> Option<&str> {
        self.by
            .get(&name.to_lowercase())
            .filter(|h| h.anchor.as_ref() != Some(anchor))
            .filter(|h| {
                h.purged_for
                    .as_ref()
                    .is_none_or(|reserved| reserved.iter().all(|a| !claims.contains(a)))
            })
            .map(|h| h.owner.as_str())
    }

    fn claim(&mut self, name: &str, anchor: &Anchor) {
        self.by.insert(
            name.to_lowercase(),
            NameHolder {
                owner: "another person of this run".into(),
                anchor: Some(anchor.clone()),
                purged_for: None,
            },
        );
    }
}

/// A create whose `Name` is taken gets the first free `<name>-N`; an existing person whose
/// wanted `Name` is taken keeps the one they have (their current one is theirs).
fn settle_name(
    a: &mut Action,
    taken: &mut TakenNames,
    earlier: Option<&str>,
    warnings: &mut Vec<Warning>,
) {
    let key = Field::Name.as_str();
    let Some((before, Some(Value::String(wanted)))) = a.changes.get(key).cloned() else {
        return;
    };
    let claims: HashSet<String> = [Field::UserPrincipalName, Field::PrimarySmtpAddress]
        .into_iter()
        .filter_map(|f| after_str(a, f).map(str::to_ascii_lowercase))
        .chain(
            a.changes
                .get(Field::EmailAddresses.as_str())
                .map(|(_, after)| lower_list(after.as_ref()).collect::<Vec<_>>())
                .unwrap_or_default(),
        )
        .collect();
    let Some(owner) = taken.holder(&wanted, &a.anchor, &claims).map(str::to_owned) else {
        return;
    };
    if Some(owner.as_str()) == earlier {
        // Held by this person's own object from an earlier create: apply adopts it.
        return;
    }
    match before {
        Some(current) if a.op != Op::Create => {
            // Keeping the current Name is safe: it only labels the recipient.
            let mut changes = std::mem::take(&mut a.changes);
            changes = changes
                .iter()
                .filter(|(k, _)| *k != key)
                .map(|(k, c)| (k.to_owned(), c.clone()))
                .collect();
            a.changes = changes;
            let current = current.as_str().unwrap_or_default();
            if current.starts_with(&format!("{wanted}-")) {
                // The free Name chosen when the person was created: said then.
                return;
            }
            warnings.push(Warning {
                dn: a.dn.clone(),
                uid: Some(a.uid.clone()),
                field: "name".into(),
                message: format!(
                    "the Exchange Name {wanted} is taken by {owner}; the recipient keeps its Name {current}"
                ),
            });
        }
        _ => {
            let free = (2..)
                .map(|n| {
                    let suffix = format!("-{n}");
                    let base: String = wanted
                        .chars()
                        .take(MAX_NAME.saturating_sub(suffix.chars().count()))
                        .collect();
                    format!("{base}{suffix}")
                })
                .find(|candidate| taken.holder(candidate, &a.anchor, &claims).is_none())
                .expect("some numbered Name is free");
            a.changes
                .insert(key, (None, Some(Value::String(free.clone()))));
            warnings.push(Warning {
                dn: a.dn.clone(),
                uid: Some(a.uid.clone()),
                field: "name".into(),
                message: format!(
                    "the Exchange Name {wanted} is taken by {owner}; the recipient is named {free} instead (Name is unique among recipients; it is only a label)"
                ),
            });
            taken.claim(&free, &a.anchor);
        }
    }
}

fn after_str(a: &Action, field: Field) -> Option<&str> {
    a.changes
        .get(field.as_str())
        .and_then(|(_, after)| after.as_ref())
        .and_then(Value::as_str)
}

fn lower_list(v: Option<&Value>) -> impl Iterator<Item = String> + '_ {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_ascii_lowercase)
}
