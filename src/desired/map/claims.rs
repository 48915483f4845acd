//! Settling what entries contest between them: anchors, user principal names, Names, aliases
//! and addresses. The tenant holds each at most once, so only one entry can have it.
//!
//! Entries are taken in a fixed order: first those whose anchor is already provisioned (an
//! existing person never loses an address to a newcomer), then the rest, each group by DN in
//! lower case. The first to claim a value keeps it; a later entry that wants anything already
//! held is quarantined whole and claims nothing, so it cannot block a third entry either.
//!
//! Almost every entry wants only values nobody else wants. [`Contest`] finds, while LDAP is
//! still being read, the few that share one with another; only those go through the ordered
//! settling ([`settle`]), which gives them exactly the outcome it would give them among
//! everybody (see [`Contest`]). The rest keep everything without being sorted or booked.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hash, Hasher};

use super::Candidate;
use super::read::Fault;
use crate::desired::{Disabled, Quarantined, Recipient};
use crate::ids::Anchor;

/// An entry that wants to hold something in the tenant.
pub(super) enum Claimant {
    /// Boxed: the list of 50,000 claimants grows while LDAP is read, and unboxed each growth
    /// copied every candidate (about 550 bytes) into freshly faulted memory; that cost a
    /// quarter of the mapping's time, one small allocation per person far less.
    Recipient(Box<Candidate>),
    /// A leaver holds only its anchor: two entries for one person are a clash even when one
    /// of them is leaving.
    Disabled(Disabled),
}

impl Claimant {
    fn anchor(&self) -> &Anchor {
        match self {
            Claimant::Recipient(c) => &c.recipient.anchor,
            Claimant::Disabled(d) => &d.anchor,
        }
    }

    fn dn(&self) -> &str {
        match self {
            Claimant::Recipient(c) => &c.recipient.dn,
            Claimant::Disabled(d) => &d.dn,
        }
    }

    /// The processing order. Beyond the rule (known first, then DN lower-cased), the extra
    /// keys only break ties that well-formed LDAP output cannot produce (equal DNs), so even
    /// malformed input gives one result whatever order it came in.
    fn order_key(
        &self,
        known: &BTreeSet<Anchor>,
    ) -> (bool, String, String, Anchor, u8, String, String) {
        let (tag, uid, primary) = match self {
            Claimant::Recipient(c) => (0, c.recipient.uid.clone(), c.recipient.primary.to_string()),
            Claimant::Disabled(d) => (1, d.uid.clone().unwrap_or_default(), String::new()),
        };
        let dn = self.dn();
        (
            !known.contains(self.anchor()),
            dn.to_lowercase(),
            dn.to_owned(),
            self.anchor().clone(),
            tag,
            uid,
            primary,
        )
    }
}

/// Which claimants want a value that another claimant wants too, learnt one claimant at a
/// time as entries are mapped (so the work overlaps the LDAP read).
///
/// Why settling only those is exact: a claimant that shares no value with anyone is never
/// quarantined (nobody else holds what it wants) and blocks nobody (nobody else wants what it
/// holds), so leaving it out changes no other claimant's turn; and every claimant that does
/// share a value is marked, together with everyone it shares one with, so [`settle`] sees
/// each contested claimant with all its rivals. Values are compared by a 64-bit hash of the
/// key [`Book`] compares them by: a collision only marks two more claimants for settling,
/// which the argument above allows, and an equal key always has an equal hash.
#[derive(Default)]
pub(super) struct Contest {
    /// The hash of each value wanted so far, and the first claimant (index) that wanted it.
    first: HashMap<u64, u32, BuildHasherDefault<Prehashed>>,
    /// Per claimant, in the order entered: whether it shares a value with another.
    contested: Vec<bool>,
}

impl Contest {
    /// Records what `claimant`, the next in order, wants.
    pub(super) fn enter(&mut self, claimant: &Claimant) {
        let me = self.contested.len() as u32;
        self.contested.push(false);
        for_each_key(claimant, |key| match self.first.entry(key) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(me);
            }
            // Its own values may repeat (a UPN that is also its address): no rival.
            std::collections::hash_map::Entry::Occupied(slot) if *slot.get() == me => {}
            std::collections::hash_map::Entry::Occupied(slot) => {
                self.contested[*slot.get() as usize] = true;
                self.contested[me as usize] = true;
            }
        });
    }

    /// Settles `claimants` (entered in this order): the contested ones through [`settle`],
    /// the rest keep what they want.
    pub(super) fn settle(self, claimants: Vec<Claimant>, known: &BTreeSet<Anchor>) -> Settled {
        debug_assert_eq!(claimants.len(), self.contested.len());
        let mut rivals = Vec::new();
        let mut out = Settled {
            recipients: Vec::with_capacity(claimants.len()),
            ..Settled::default()
        };
        for (claimant, contested) in claimants.into_iter().zip(self.contested) {
            match (contested, claimant) {
                (true, claimant) => rivals.push(claimant),
                (false, Claimant::Recipient(c)) => out.recipients.push(c.recipient),
                (false, Claimant::Disabled(d)) => out.disabled.push(d),
            }
        }
        let settled = settle(rivals, known);
        out.recipients.extend(settled.recipients);
        out.disabled.extend(settled.disabled);
        out.quarantined = settled.quarantined;
        out
    }
}

/// The map's hasher for keys that are hashes already: hashing them again (the map grows
/// to a few hundred thousand keys, each rehashed at every growth) is work for nothing.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, _: &[u8]) {
        unreachable!("Contest's map hashes only u64 keys")
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }
}

/// Calls `f` with the hash of every key `claimant` would hold in a [`Book`]: its anchor and,
/// for a recipient, its UPN and addresses (one namespace), its Name and its alias, each
/// normalised as the book normalises it.
fn for_each_key(claimant: &Claimant, mut f: impl FnMut(u64)) {
    let hash = |namespace: u8, value: &str| {
        // SipHash with fixed keys: the same value hashes the same in every run.
        let mut h = std::hash::DefaultHasher::new();
        namespace.hash(&mut h);
        value.hash(&mut h);
        h.finish()
    };
    f(hash(0, claimant.anchor().as_str()));
    let Claimant::Recipient(c) = claimant else {
        return;
    };
    let r = &c.recipient;
    f(hash(1, r.upn.as_str()));
    for (address, _) in &c.addresses {
        f(hash(1, address.as_str()));
    }
    f(hash(2, &lower(&r.name)));
    f(hash(3, &ascii_lower(&r.alias)));
}

/// The outcome: who keeps what, and who is quarantined for wanting something taken.
#[derive(Default)]
pub(super) struct Settled {
    pub recipients: Vec<Recipient>,
    pub disabled: Vec<Disabled>,
    pub quarantined: Vec<Quarantined>,
}

pub(super) fn settle(mut claimants: Vec<Claimant>, known: &BTreeSet<Anchor>) -> Settled {
    claimants.sort_by_cached_key(|c| c.order_key(known));
    // Judged first with keys borrowed from the claimants, then moved out: the book holds no
    // copy of any value, and every collection is sized once (at 50,000 people the growth
    // of the maps and of the output was most of this phase).
    let faults: Vec<Option<Fault>> = {
        let mut book = Book::with_capacity(claimants.len());
        claimants
            .iter()
            .map(|claimant| {
                let fault = book.conflict(claimant);
                if fault.is_none() {
                    book.claim(claimant, known.contains(claimant.anchor()));
                }
                fault
            })
            .collect()
    };
    let mut out = Settled {
        recipients: Vec::with_capacity(claimants.len()),
        ..Settled::default()
    };
    for (claimant, fault) in claimants.into_iter().zip(faults) {
        match (fault, claimant) {
            (Some(fault), claimant) => out.quarantined.push(quarantine(claimant, fault)),
            (None, Claimant::Recipient(c)) => out.recipients.push(c.recipient),
            (None, Claimant::Disabled(d)) => out.disabled.push(d),
        }
    }
    out
}

fn quarantine(claimant: Claimant, fault: Fault) -> Quarantined {
    let (dn, anchor, uid) = match claimant {
        Claimant::Recipient(c) => (c.recipient.dn, c.recipient.anchor, Some(c.recipient.uid)),
        Claimant::Disabled(d) => (d.dn, d.anchor, d.uid),
    };
    Quarantined {
        dn,
        anchor: Some(anchor),
        uid,
        field: fault.field.to_owned(),
        reason: fault.reason,
    }
}

/// Who holds a value, and as what.
struct Holder {
    /// Index into [`Book::holders`].
    who: usize,
    what: &'static str,
}

/// What the entries processed so far hold, borrowed from the claimants.
struct Book<'a> {
    /// DN of each claimant that holds something, and whether it is already provisioned.
    holders: Vec<(&'a str, bool)>,
    anchors: HashMap<&'a Anchor, Holder>,
    /// UPNs and SMTP addresses share one namespace: the tenant refuses a UPN that is another
    /// object's address ("the proxy address … is already being used"), and licensing a
    /// mailbox adds its UPN as an address.
    identities: HashMap<&'a str, Holder>,
    /// `New-MailUser -Name`, compared case-insensitively as Exchange does.
    names: HashMap<Cow<'a, str>, Holder>,
    /// Exchange `Alias` / `mailNickname`, also case-insensitive.
    aliases: HashMap<Cow<'a, str>, Holder>,
}

/// `s.to_lowercase()`, borrowed when that changes nothing (the usual uid).
fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| !b.is_ascii() || b.is_ascii_uppercase()) {
        Cow::Owned(s.to_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// `s.to_ascii_lowercase()`, borrowed when that changes nothing.
fn ascii_lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

const ANCHOR: &str = "anchor";
const UPN: &str = "user principal name";
const NAME: &str = "name (New-MailUser -Name)";
const ALIAS: &str = "alias (mailNickname)";
const ADDRESS: &str = "address";

impl<'a> Book<'a> {
    /// Room for `n` claimants, each with a few addresses.
    fn with_capacity(n: usize) -> Self {
        Book {
            holders: Vec::with_capacity(n),
            anchors: HashMap::with_capacity(n),
            identities: HashMap::with_capacity(n * 4),
            names: HashMap::with_capacity(n),
            aliases: HashMap::with_capacity(n),
        }
    }

    /// The first thing the claimant wants that someone else already holds.
    fn conflict(&self, claimant: &Claimant) -> Option<Fault> {
        let me = claimant.dn();
        let anchor = claimant.anchor();
        if let Some(h) = self.anchors.get(anchor) {
            return Some(self.taken("anchor", ANCHOR, anchor.as_str(), h, me));
        }
        let Claimant::Recipient(c) = claimant else {
            return None;
        };
        let r = &c.recipient;
        let upn = r.upn.as_str();
        if let Some(h) = self.identities.get(upn) {
            return Some(self.taken("uid", UPN, upn, h, me));
        }
        if let Some(h) = self.names.get(lower(&r.name).as_ref()) {
            return Some(self.taken("uid", NAME, &r.name, h, me));
        }
        if let Some(h) = self.aliases.get(ascii_lower(&r.alias).as_ref()) {
            return Some(self.taken("uid", ALIAS, &r.alias, h, me));
        }
        c.addresses.iter().find_map(|(address, field)| {
            self.identities
                .get(address.as_str())
                .map(|h| self.taken(field, ADDRESS, address.as_str(), h, me))
        })
    }

    fn claim(&mut self, claimant: &'a Claimant, provisioned: bool) {
        let who = self.holders.len();
        self.holders.push((claimant.dn(), provisioned));
        self.anchors
            .insert(claimant.anchor(), Holder { who, what: ANCHOR });
        let Claimant::Recipient(c) = claimant else {
            return;
        };
        let r = &c.recipient;
        self.identities
            .insert(r.upn.as_str(), Holder { who, what: UPN });
        // After the UPN, so a UPN that is also the person's own address is recorded as the
        // address, which is what a clash with it will mostly be about.
        for (address, _) in &c.addresses {
            self.identities
                .insert(address.as_str(), Holder { who, what: ADDRESS });
        }
        self.names
            .insert(lower(&r.name), Holder { who, what: NAME });
        self.aliases
            .insert(ascii_lower(&r.alias), Holder { who, what: ALIAS });
    }

    /// The reason for a clash, naming the value and both DNs.
    fn taken(
        &self,
        field: &'static str,
        what: &str,
        value: &str,
        holder: &Holder,
        me: &str,
    ) -> Fault {
        let (dn, provisioned) = &self.holders[holder.who];
        let as_its = if holder.what == what {
            String::new()
        } else {
            format!(" as its {}", holder.what)
        };
        let status = if *provisioned {
            " (already provisioned)"
        } else {
            ""
        };
        Fault::new(
            field,
            format!(
                "{what} {value} is already claimed by {dn}{as_its}{status}, so {me} cannot have it too"
            ),
        )
    }
}
