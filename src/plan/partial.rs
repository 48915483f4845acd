//! Planning only what a change touches: the pure part (README "Partial plans"; the I/O is
//! `commands::partial`, the stored base `state::plan_base`).
//!
//! A plan of the whole directory decides each person from their own inputs (LDAP entry,
//! state row, tenant object) and from the inputs of whoever shares a value with them: an
//! anchor, a UPN or address, an Exchange `Name`, an alias. Every planner phase meets others
//! only through such values: the claims of `desired` (who keeps a contested value), the
//! former primaries a rename keeps while nobody claims them, re-anchoring (same UPN and
//! primary), the tenant's foreign holders and taken `Name`s, handovers (an address changing
//! hands). Besides values, only totals (the safety caps, the licence pool) join everybody.
//!
//! So, given a plan `K` of the whole directory and the inputs that changed since it was
//! made, the people a new plan can decide differently are in the **closure** of the changed
//! inputs and of `K`'s actions over shared values ([`Closure`], old and new values both). A
//! plan of that closure alone, with the totals of everybody else added ([`super::Outside`],
//! [`Share`]), is the plan of the whole directory: outside the closure everybody's inputs
//! and everybody they share a value with are as `K` saw them, and `K` planned nothing for
//! them. Every action is inside (`K`'s are put there, new ones come from changed inputs), so
//! the totals the caps and the licence pool weigh are the whole run's.
//!
//! Values are compared by a 64-bit hash of a normalised form ([`Key`]) that may only ever
//! make two values look alike that are not: a collision, or a normalisation coarser than the
//! planner's (case, a `Name`'s `-N` suffix and length), only makes the closure larger, which
//! keeps the plan exact.
//!
//! The claim is tested on random small worlds (`tests.rs`): the partial plan of a change
//! equals the full plan, as JSON.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{Hash, Hasher};

use serde_json::Value;

use super::{Field, Warning};
use crate::desired::{Desired, Quarantined, Recipient};
use crate::ids::Anchor;
use crate::state::{ManagedObject, Stage};

/// A value that inputs of a plan can share, hashed (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(pub u64);

/// How many leading characters of a `Name` its key keeps: `New-MailUser -Name` holds 64,
/// and a free `<name>-N` is cut to leave room for up to 8 characters of suffix.
const NAME_PREFIX: usize = 56;

impl Key {
    fn hash(namespace: u8, value: &str) -> Key {
        // SipHash with fixed keys: the same value hashes the same in every run and build.
        let mut h = std::hash::DefaultHasher::new();
        namespace.hash(&mut h);
        value.hash(&mut h);
        Key(h.finish())
    }

    pub fn anchor(anchor: &Anchor) -> Key {
        Key::hash(0, anchor.as_str())
    }

    /// A UPN or SMTP address (one namespace, as the tenant keeps them), any case.
    pub fn identity(value: &str) -> Key {
        Key::hash(1, &value.to_ascii_lowercase())
    }

    /// An Exchange `Name`: `jdoe`, `JDoe-2` and `jdoe-17` share one key, and so do names
    /// alike in their first 56 characters (`NAME_PREFIX`).
    pub fn name(value: &str) -> Key {
        let lower = value.to_lowercase();
        let base = match lower.rsplit_once('-') {
            Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
            _ => lower.as_str(),
        };
        let prefix: String = base.chars().take(NAME_PREFIX).collect();
        Key::hash(2, &prefix)
    }

    /// An Exchange `Alias` / `mailNickname`.
    pub fn alias(value: &str) -> Key {
        Key::hash(3, &value.to_lowercase())
    }

    /// An Entra object id: what joins a Graph user with its Exchange recipient.
    pub fn object_id(value: &str) -> Key {
        Key::hash(4, &value.to_ascii_lowercase())
    }

    /// As stored (`plan_keys.key`, an SQLite integer).
    pub fn stored(self) -> i64 {
        self.0 as i64
    }

    pub fn from_stored(value: i64) -> Key {
        Key(value as u64)
    }
}

/// The keys of a recipient as `desired` wants it: its anchor, UPN, every address it owns or
/// routes to, its `Name` and alias. (Not an LDAP forward outside the tenant: the tenant never
/// holds it, and many people may forward to one address.)
pub fn recipient_keys(r: &Recipient, keys: &mut Vec<Key>) {
    keys.push(Key::anchor(&r.anchor));
    keys.push(Key::identity(r.upn.as_str()));
    keys.push(Key::identity(r.primary.as_str()));
    for a in &r.secondary {
        keys.push(Key::identity(a.as_str()));
    }
    for a in [&r.external_address, &r.forwarding].into_iter().flatten() {
        keys.push(Key::identity(a.as_str()));
    }
    keys.push(Key::name(&r.name));
    keys.push(Key::alias(&r.alias));
}

/// The keys of tenant-facing fields (a state row's or a tenant object's).
pub fn field_keys(fields: &super::Fields, keys: &mut Vec<Key>) {
    for field in [
        Field::UserPrincipalName,
        Field::PrimarySmtpAddress,
        Field::ExternalEmailAddress,
        Field::ForwardingSmtpAddress,
    ] {
        if let Some(v) = fields.get(field.as_str()).and_then(Value::as_str) {
            keys.push(Key::identity(v));
        }
    }
    for field in [Field::EmailAddresses, Field::RetainedAddresses] {
        let values = fields.get(field.as_str()).and_then(Value::as_array);
        for v in values.into_iter().flatten().filter_map(Value::as_str) {
            keys.push(Key::identity(v));
        }
    }
    if let Some(v) = fields.get(Field::Name.as_str()).and_then(Value::as_str) {
        keys.push(Key::name(v));
    }
    if let Some(v) = fields
        .get(Field::MailNickname.as_str())
        .and_then(Value::as_str)
    {
        keys.push(Key::alias(v));
    }
}

/// The keys of a state row: its anchor and every value it holds or held.
pub fn object_keys(o: &ManagedObject, keys: &mut Vec<Key>) {
    keys.push(Key::anchor(&o.anchor));
    field_keys(&o.attributes, keys);
}

/// The closure of some nodes over shared keys: every node whose keys meet the keys of a
/// node in the closure is in it. Driven from outside, so that the keys' holders can come
/// from memory or from the state store: [`Closure::add`] the seeds, then, while
/// [`Closure::frontier`] has keys, [`Closure::add`] every node holding one of them, with all
/// of that node's keys (old values and new; answering more nodes than asked is harmless).
#[derive(Debug)]
pub struct Closure<N> {
    pub nodes: BTreeSet<N>,
    seen: HashSet<Key>,
    frontier: Vec<Key>,
}

impl<N: Ord> Default for Closure<N> {
    fn default() -> Self {
        Closure {
            nodes: BTreeSet::new(),
            seen: HashSet::new(),
            frontier: Vec::new(),
        }
    }
}

impl<N: Ord> Closure<N> {
    /// Adds `node` with its keys; keys not seen before go to the frontier.
    pub fn add(&mut self, node: N, keys: impl IntoIterator<Item = Key>) {
        if self.nodes.insert(node) {
            let seen = &mut self.seen;
            self.frontier
                .extend(keys.into_iter().filter(|k| seen.insert(*k)));
        }
    }

    /// The keys whose holders are still to be added (empty: the closure is complete).
    pub fn frontier(&mut self) -> Vec<Key> {
        std::mem::take(&mut self.frontier)
    }
}

/// What one LDAP entry adds to a plan of the whole directory besides actions: what it
/// became, its quarantine record and the notes its mapping made.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Share {
    pub class: Class,
    pub quarantined: Vec<Quarantined>,
    pub warnings: Vec<Warning>,
}

/// What an entry became.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Class {
    #[default]
    Recipient,
    Disabled,
    NoMail,
    Quarantined,
}

/// Each entry's [`Share`] of `desired`, by DN, before planning consumes it.
pub fn shares(desired: &Desired) -> BTreeMap<String, Share> {
    let mut by_dn: BTreeMap<String, Share> = BTreeMap::new();
    let mut class = |dn: &str, class: Class| by_dn.entry(dn.to_owned()).or_default().class = class;
    for r in &desired.recipients {
        class(&r.dn, Class::Recipient);
    }
    for d in &desired.disabled {
        class(&d.dn, Class::Disabled);
    }
    for dn in &desired.skipped_no_mail {
        class(dn, Class::NoMail);
    }
    for q in &desired.quarantined {
        let share = by_dn.entry(q.dn.clone()).or_default();
        share.class = Class::Quarantined;
        share.quarantined.push(q.clone());
    }
    for w in desired.warnings.iter().filter(|w| !w.dn.is_empty()) {
        by_dn
            .entry(w.dn.clone())
            .or_default()
            .warnings
            .push(w.clone());
    }
    by_dn
}

/// The anchors a plan counts as unchanged when it has no action for them: those of the
/// recipients and of the state rows not deleted.
pub fn counted(desired: &Desired, objects: &[ManagedObject]) -> BTreeSet<Anchor> {
    desired
        .recipients
        .iter()
        .map(|r| r.anchor.clone())
        .chain(
            objects
                .iter()
                .filter(|o| o.stage != Stage::Deleted)
                .map(|o| o.anchor.clone()),
        )
        .collect()
}

/// Adds the quarantine records and mapping notes of the entries left out to `desired`, a
/// mapping of the closure's entries, sorted as a mapping of everybody sorts them.
pub fn complete(
    desired: &mut Desired,
    quarantined: impl IntoIterator<Item = Quarantined>,
    warnings: impl IntoIterator<Item = Warning>,
) {
    desired.quarantined.extend(quarantined);
    desired.warnings.extend(warnings);
    desired
        .quarantined
        .sort_by(|a, b| (&a.dn, &a.field, &a.reason).cmp(&(&b.dn, &b.field, &b.reason)));
    desired
        .warnings
        .sort_by(|a, b| (&a.dn, &a.field, &a.message).cmp(&(&b.dn, &b.field, &b.message)));
}

#[cfg(test)]
mod tests;
