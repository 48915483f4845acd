//! Two directories, one object: how long a write through one API takes to show in the other,
//! the 404 window after a create, and slow mailbox provisioning (see [`crate::config::Realism`]).
//!
//! The store keeps the truth plus a short log of recent writes per object ([`WriteRecord`]).
//! A read through Graph renders the truth with the Exchange writes younger than
//! `exchange_to_graph_ms` undone field by field (newest first), and the other way round for
//! Exchange. Undoing works on the serialized record, so every field of [`User`] takes part
//! without a hand-kept field list. Last-writer ordering across the two APIs inside one delay
//! window is approximate: an undone field shows the value from before the hidden write.

use crate::store::{Origin, Store, User, WriteRecord, now_millis};
use crate::util::fold;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// Fields that are bookkeeping, not directory values: never undone.
const BOOKKEEPING: &[&str] = &["changedSeq", "changedMs", "whenChangedMs", "mailboxDueMs"];

/// Which API is reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    Graph,
    Exchange,
}

impl Reader {
    /// The origin whose young writes this reader does not see yet.
    fn other(self) -> Origin {
        match self {
            Reader::Graph => Origin::Exchange,
            Reader::Exchange => Origin::Graph,
        }
    }
}

/// Why an object is not there for a reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hidden {
    /// Created through the other API and not propagated yet: absent from lists too.
    NotPropagated,
    /// Inside the 404 window after its create: lists may show it, addressing it fails.
    JustCreated,
}

fn to_map(u: &User) -> Map<String, Value> {
    match serde_json::to_value(u) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

impl Store {
    fn delay_for(&self, reader: Reader) -> u64 {
        match reader {
            Reader::Graph => self.realism.exchange_to_graph_ms,
            Reader::Exchange => self.realism.graph_to_exchange_ms,
        }
    }

    /// Stores a changed user (truth) as written through `source`, bumping its change
    /// sequence; keeps the write in the log when the other API sees it late. A write that
    /// changes what Exchange shows moves `WhenChanged`: now, or for a Graph write Exchange sees
    /// late, once Exchange sees it ([`Store::exchange_changed_ms`]).
    pub fn commit(&mut self, mut after: User, source: Origin) {
        let id = after.id.clone();
        let before = self.users.get(&id).cloned();
        let ms = now_millis();
        let delayed = match source {
            Origin::Exchange => self.realism.exchange_to_graph_ms > 0,
            Origin::Graph => self.realism.graph_to_exchange_ms > 0,
            Origin::Seed => false,
        };
        let exchange_visible = before
            .as_ref()
            .is_none_or(|b| self.exchange_properties(b) != self.exchange_properties(&after));
        let logged = delayed && before.is_some();
        if exchange_visible && !(logged && source == Origin::Graph) {
            after.when_changed_ms = after.when_changed_ms.max(ms);
        }
        if self.realism.address_release_ms > 0
            && let Some(before) = &before
        {
            self.reserve_released(before, &after, ms);
        }
        if delayed && let Some(before) = before {
            self.log.entry(id.clone()).or_default().push(WriteRecord {
                ms,
                source,
                before,
                after: after.clone(),
                announced: source != Origin::Exchange,
                exchange_visible,
            });
        }
        if let Some(before) = self.users.get(&id) {
            self.index.remove(before);
        }
        self.index.add(&after);
        self.users.insert(id.clone(), after);
        self.touch(&id);
    }

    /// Keeps what `after` no longer holds of `before` (SMTP addresses, the UPN) reserved for
    /// [`crate::Realism::address_release_ms`].
    fn reserve_released(&mut self, before: &User, after: &User, ms: u64) {
        let held = |u: &User| -> std::collections::BTreeSet<String> {
            u.proxy_addresses
                .iter()
                .filter(|p| p.len() > 5 && p[..5].eq_ignore_ascii_case("smtp:"))
                .map(|p| fold(&p[5..]))
                .chain(std::iter::once(fold(&u.user_principal_name)))
                .collect()
        };
        let until = ms + self.realism.address_release_ms;
        self.released.retain(|_, (_, t)| *t > ms);
        for gone in held(before).difference(&held(after)) {
            self.released
                .insert(gone.clone(), (after.id.clone(), until));
        }
    }

    /// Inserts a user created through an API (now), recording its origin.
    pub fn create(&mut self, mut u: User, origin: Origin) -> String {
        u.origin = origin;
        u.created_ms = now_millis();
        let id = self.insert(u);
        if origin == Origin::Exchange && self.realism.exchange_to_graph_ms > 0 {
            // Graph's delta must report the object once Graph can see it.
            let u = self.users[&id].clone();
            self.log.entry(id.clone()).or_default().push(WriteRecord {
                ms: u.created_ms,
                source: origin,
                before: u.clone(),
                after: u,
                announced: false,
                exchange_visible: false,
            });
        }
        id
    }

    /// Brings time-driven state up to date: finishes due mailbox conversions, tells delta
    /// about Exchange writes Graph can now see, forgets writes both APIs see. Called before
    /// every API request.
    pub fn settle(&mut self) {
        let now = now_millis();
        let due: Vec<String> = self
            .users
            .values()
            .filter(|u| u.mailbox_due_ms.is_some_and(|d| d <= now))
            .map(|u| u.id.clone())
            .collect();
        for id in due {
            if let Some(u) = self.get_mut(&id) {
                u.mailbox_due_ms = None;
            }
            self.apply_licence_effects(&id);
        }
        let e2g = self.realism.exchange_to_graph_ms;
        let g2e = self.realism.graph_to_exchange_ms;
        let keep = e2g.max(g2e);
        let mut announce = Vec::new();
        // Graph writes Exchange has seen, whose `WhenChanged` the log stops answering for.
        let mut seen_by_exchange = Vec::new();
        for (id, writes) in self.log.iter_mut() {
            for w in writes.iter_mut() {
                if !w.announced && now >= w.ms + e2g {
                    w.announced = true;
                    announce.push(id.clone());
                }
            }
            writes.retain(|w| {
                let forget = w.announced && now >= w.ms + keep;
                if forget && w.source == Origin::Graph && w.exchange_visible {
                    seen_by_exchange.push((id.clone(), w.ms + g2e));
                }
                !forget
            });
        }
        self.log.retain(|_, w| !w.is_empty());
        for (id, when) in seen_by_exchange {
            if let Some(u) = self.users.get_mut(&id) {
                u.when_changed_ms = u.when_changed_ms.max(when);
            }
        }
        announce.dedup();
        for id in announce {
            self.touch(&id);
        }
    }

    /// Unix milliseconds by which every time-driven effect pending now has happened and
    /// both APIs show it: due mailbox conversions (and their write reaching Graph), writes
    /// one API does not show the other yet, new objects still hidden; `None` when nothing
    /// is pending.
    pub fn settled_by_ms(&self) -> Option<u64> {
        let now = now_millis();
        let keep = self
            .realism
            .exchange_to_graph_ms
            .max(self.realism.graph_to_exchange_ms);
        let new = keep.max(self.realism.create_404_ms);
        let mailboxes = self
            .users
            .values()
            .filter_map(|u| u.mailbox_due_ms.map(|d| d + keep));
        let writes = self.log.values().flatten().map(|w| w.ms + keep);
        let created = self.users.values().map(|u| u.created_ms + new);
        mailboxes
            .chain(writes)
            .chain(created)
            .filter(|&t| t > now)
            .max()
    }

    /// Whether (and why) `u` is not there for `reader` now.
    pub fn hidden(&self, u: &User, reader: Reader) -> Option<Hidden> {
        if u.origin == Origin::Seed {
            return None;
        }
        let now = now_millis();
        if u.origin == reader.other() && now < u.created_ms + self.delay_for(reader) {
            return Some(Hidden::NotPropagated);
        }
        if now < u.created_ms + self.realism.create_404_ms {
            return Some(Hidden::JustCreated);
        }
        None
    }

    /// `u` as `reader` sees it now: the truth with the other API's young writes undone.
    pub fn render<'a>(&self, u: &'a User, reader: Reader) -> Cow<'a, User> {
        let Some(writes) = self.log.get(&u.id) else {
            return Cow::Borrowed(u);
        };
        let now = now_millis();
        let delay = self.delay_for(reader);
        let young: Vec<&WriteRecord> = writes
            .iter()
            .filter(|w| w.source == reader.other() && now < w.ms + delay)
            .collect();
        if young.is_empty() {
            return Cow::Borrowed(u);
        }
        let mut view = to_map(u);
        for w in young.iter().rev() {
            let (b, a) = (to_map(&w.before), to_map(&w.after));
            for (k, bv) in &b {
                if !BOOKKEEPING.contains(&k.as_str()) && a.get(k) != Some(bv) {
                    view.insert(k.clone(), bv.clone());
                }
            }
        }
        Cow::Owned(serde_json::from_value(Value::Object(view)).unwrap_or_else(|_| u.clone()))
    }

    /// A live user by id or UPN as Graph sees it, or why not.
    pub fn graph_user(&self, key: &str) -> Result<User, Hidden> {
        let k = fold(key);
        let found = self.users.get(&k).filter(|u| !u.is_deleted()).or_else(|| {
            self.users.values().find(|u| {
                !u.is_deleted()
                    && self.hidden(u, Reader::Graph) != Some(Hidden::NotPropagated)
                    && self
                        .render(u, Reader::Graph)
                        .user_principal_name
                        .eq_ignore_ascii_case(&k)
            })
        });
        let u = found.ok_or(Hidden::NotPropagated)?;
        if let Some(h) = self.hidden(u, Reader::Graph) {
            return Err(h);
        }
        Ok(self.render(u, Reader::Graph).into_owned())
    }

    /// Every user (live and soft-deleted) Graph can list now, rendered for Graph.
    pub fn graph_users(&self) -> Vec<Cow<'_, User>> {
        self.users
            .values()
            .filter(|u| self.hidden(u, Reader::Graph) != Some(Hidden::NotPropagated))
            .map(|u| self.render(u, Reader::Graph))
            .collect()
    }

    /// Every user Exchange can see now (for listing), rendered for Exchange.
    pub fn exchange_users(&self) -> Vec<Cow<'_, User>> {
        self.users
            .values()
            .filter(|u| self.hidden(u, Reader::Exchange) != Some(Hidden::NotPropagated))
            .map(|u| self.render(u, Reader::Exchange))
            .collect()
    }

    /// Starts (or, without a delay, finishes at once) the mailbox conversion a licence change
    /// causes. Losing the last Exchange licence takes effect at once.
    pub fn schedule_licence_effects(&mut self, id: &str) {
        let delay = self.realism.mailbox_provisioning_ms;
        let Some(u) = self.users.get(&fold(id)) else {
            return;
        };
        let converts = u.recipient_type_details != Some(crate::store::RecipientKind::UserMailbox)
            && u.all_licenses()
                .iter()
                .any(|l| self.sku(l).is_some_and(|s| s.has_exchange()));
        if delay == 0 || !converts {
            if let Some(u) = self.get_mut(id) {
                u.mailbox_due_ms = None;
            }
            self.apply_licence_effects(id);
        } else if u.mailbox_due_ms.is_none()
            && let Some(u) = self.get_mut(id)
        {
            u.mailbox_due_ms = Some(now_millis() + delay);
        }
    }
}
