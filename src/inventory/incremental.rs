//! Incremental tenant reads (`tenant.incremental_read`): between full reads, only what changed.
//!
//! - **Graph** `/users/delta` ("user: delta"): the first round lists every user with the
//!   inventory's `$select` and ends with a delta link; a later round from that link returns
//!   the users changed since (all selected properties of each, per the page's "Properties"
//!   section) and those removed (`@removed`). An expired link (410, or 400
//!   `syncStateNotFound`) reads in full.
//! - **Exchange** `Get-Recipient -Filter "WhenChangedUTC -gt '<date>'"` ("Filterable
//!   properties for the Filter parameter"), from when the last listing started minus
//!   `tenant.exchange_margin_seconds` (default 900: clock skew between this host and
//!   Exchange, and Exchange's own replication, for which Microsoft publishes no figure). A recipient deleted in Exchange is not in it: a user's recipient goes
//!   when Graph's delta removes the user; a deleted group or contact keeps its addresses
//!   "taken" until the next full read (at worst a create is held as a conflict a day longer,
//!   never a wrong write).
//! - The soft-deleted mail users and the licence counts are small and read in full each time.
//!
//! The users and recipients the last real run stored fill in everything that did not change,
//! and the whole is sorted by [`super::sort`] exactly as a full read's listings are: the plan
//! cannot tell the two apart. A full read happens when nothing is stored yet, when the
//! endpoints or the stamp attribute changed, when the last full read is older than
//! `tenant.full_read_interval_hours`, or when Graph refuses the delta link; the plan's
//! `tenant_read` says which and why.
//!
//! Nothing is stored here: a real run stores [`Read::commit`] after applying (whatever the
//! outcome, since the rows say what the tenant held when it was read, and everything after,
//! its own writes included, comes with the next round). A dry run stores nothing.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Instant, SystemTime};

use serde_json::Value;

use super::recipient::Col;
use super::{
    GRAPH_PROPERTIES, Inventory, Recipient, STAMP_PREFIX, StampAttribute, attach_licences,
    graph_stamp, sort,
};
use crate::config::TenantConfig;
use crate::plan::partial::Key;
use crate::source::incremental::ReadReport;
use crate::state::{StateError, Store, TenantSyncCommit};
use crate::tenant::{GraphUser, Tenant, TenantError};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Tenant(#[from] TenantError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// An inventory read incrementally or in full, and what a real run stores of it.
pub struct Read {
    pub inventory: Inventory,
    pub report: ReadReport,
    pub commit: TenantSyncCommit,
    /// SHA-256 (hex) of what every read fetches in full (the soft-deleted MailUsers, the
    /// licence counts): what `plan::quiet` compares besides the users and recipients.
    pub fixed: String,
}

/// The first half of a read: the changes fetched, or why the tenant is read in full.
pub enum Start {
    Changes(Box<Changes>),
    Full(String),
}

/// A round of changes, fetched but not yet merged with the stored rows.
pub struct Changes {
    round: crate::tenant::graph::DeltaRoundOf<(GraphUser, String)>,
    recipients: Vec<Recipient>,
    soft_deleted: Vec<Recipient>,
    skus: Option<Vec<crate::tenant::graph::SubscribedSku>>,
    stamp: StampAttribute,
    since: i64,
    started: Instant,
    key: String,
    full_at: i64,
    fixed: String,
}

/// Reads the tenant as `config` says, incrementally when the state store allows. `now` is
/// the run's clock (Unix seconds) for the full-read interval.
pub async fn read(
    tenant: &Tenant,
    config: &TenantConfig,
    store: &Store,
    now: i64,
) -> Result<Read, ReadError> {
    let start = start(tenant, config, store, now).await?;
    finish_read(tenant, config, store, now, start).await
}

/// What [`start`] depends on: endpoints, tenant and stamp attribute.
fn read_key(config: &TenantConfig) -> String {
    serde_json::json!({
        "graph": config.endpoints.graph,
        "exchange": config.endpoints.exchange,
        "tenant": config.tenant_id,
        "stamp": config.anchor_attribute,
    })
    .to_string()
}

/// Fetches the changes since the stored round, or says why the tenant must be read in full
/// (nothing stored, the key changed, the interval passed, Graph refused the delta link).
pub async fn start(
    tenant: &Tenant,
    config: &TenantConfig,
    store: &Store,
    now: i64,
) -> Result<Start, ReadError> {
    let stamp = StampAttribute::parse(&config.anchor_attribute)?;
    let key = read_key(config);
    let hours = i64::from(config.full_read_interval_hours);
    let reason = match store.tenant_sync().await? {
        None => "nothing stored yet: the first incremental read is full".to_owned(),
        Some(m) if m.key != key => "the endpoints or the stamp attribute changed".to_owned(),
        Some(m) if now - m.full_at >= hours * 3600 => {
            format!("the last full read is older than full_read_interval_hours ({hours})")
        }
        Some(m) => match changes(tenant, config, stamp, &m.delta_link, m.exchange_since).await {
            Ok(mut c) => {
                (c.key, c.full_at) = (key, m.full_at);
                return Ok(Start::Changes(Box::new(c)));
            }
            Err(ReadError::Tenant(TenantError::DeltaExpired)) => {
                tracing::warn!("Graph refused the stored delta link: reading the tenant in full");
                "Graph refused the delta link (expired)".to_owned()
            }
            Err(e) => return Err(e),
        },
    };
    Ok(Start::Full(reason))
}

/// The second half of a read: the changes merged with the stored rows, or the full read.
pub async fn finish_read(
    tenant: &Tenant,
    config: &TenantConfig,
    store: &Store,
    now: i64,
    start: Start,
) -> Result<Read, ReadError> {
    let reason = match start {
        Start::Changes(c) => match c.merge(store, config).await {
            Ok(read) => return Ok(read),
            Err(ReadError::State(StateError::Corrupt { anchor, message })) => {
                tracing::warn!(row = %anchor, problem = %message, "reading the tenant in full");
                format!("{anchor} {message}")
            }
            Err(e) => return Err(e),
        },
        Start::Full(reason) => reason,
    };
    tracing::info!(reason = %reason, "reading the tenant in full");
    let stamp = StampAttribute::parse(&config.anchor_attribute)?;
    let mut read = full(tenant, config, stamp).await?;
    read.report.reason = Some(reason);
    read.commit.key = read_key(config);
    read.commit.full_at = now;
    Ok(read)
}

/// [`finish_read`] for a partial plan: the round merged with only the stored rows of
/// `users` (Entra ids) and `recipients` (Guids). A stored row that cannot be read is an
/// error (the caller plans in full instead).
pub async fn finish_read_only(
    config: &TenantConfig,
    store: &Store,
    changes: Box<Changes>,
    users: &BTreeSet<String>,
    recipients: &BTreeSet<String>,
) -> Result<Read, ReadError> {
    changes
        .merge_with(store, config, Some((users, recipients)))
        .await
}

/// The keys of a stored Graph user (`tenant_users.user`) for `plan::partial`.
pub fn stored_user_keys(json: &str, stamp: StampAttribute) -> Result<Vec<Key>, ReadError> {
    let user: GraphUser =
        serde_json::from_str(json).map_err(|e| corrupt("a stored Graph user", e))?;
    Ok(super::user_keys(&user, stamp))
}

/// The keys of a stored recipient (`tenant_recipients.recipient`) for `plan::partial`.
pub fn stored_recipient_keys(json: &str, stamp: StampAttribute) -> Result<Vec<Key>, ReadError> {
    let v = serde_json::from_str(json).map_err(|e| corrupt("a stored Exchange recipient", e))?;
    let r = Recipient::with_stamp_property(v, &stamp.exchange_name());
    Ok(super::recipient_keys(&r))
}

/// Unix seconds by this host's clock: what Exchange's `WhenChangedUTC` is compared with.
fn wall_clock() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A Graph user with the JSON it came as (the state store keeps the JSON: the struct does
/// not serialise its read-only properties).
fn user_with_json(v: Value) -> Result<(GraphUser, String), TenantError> {
    let json = v.to_string();
    let user = serde_json::from_value(v).map_err(|e| TenantError::Protocol {
        service: crate::tenant::Service::Graph,
        message: format!("delta item: {e}"),
    })?;
    Ok((user, json))
}

/// The key a recipient is stored under: its Exchange `Guid`, which every listed recipient
/// has; should one lack it, its Entra id or its `Name` (unique among recipients) instead.
fn guid_of(r: &Recipient) -> Option<String> {
    let lower = |c| r.text(c).map(str::to_ascii_lowercase);
    lower(Col::Guid)
        .or_else(|| lower(Col::ExternalDirectoryObjectId).map(|id| format!("id:{id}")))
        .or_else(|| lower(Col::Name).map(|name| format!("name:{name}")))
}

async fn full(
    tenant: &Tenant,
    config: &TenantConfig,
    stamp: StampAttribute,
) -> Result<Read, ReadError> {
    let started = Instant::now();
    let since = wall_clock();
    let stamp_property = stamp.exchange_name();
    let keep = |v: Value| Recipient::with_stamp_property(v, &stamp_property);
    let (round, recipients, soft_deleted, skus) = futures_util::future::try_join4(
        tenant
            .graph()
            .users_delta_as(&GRAPH_PROPERTIES, None, user_with_json),
        tenant.exchange().list_recipients_as(keep),
        tenant.exchange().list_soft_deleted_mail_users_as(keep),
        skus(tenant, config),
    )
    .await?;
    let mut commit = TenantSyncCommit {
        full: true,
        delta_link: round.delta_link,
        exchange_since: since,
        ..TenantSyncCommit::default()
    };
    let mut users = Vec::with_capacity(round.changed.len());
    for (user, json) in round.changed {
        if let Some(id) = &user.id {
            commit.users.push((id.to_ascii_lowercase(), json));
        }
        users.push(user);
    }
    commit.recipients = stored_recipients(&recipients, &stamp_property);
    let fixed = fixed_digest(&soft_deleted, skus.as_deref(), &stamp_property);
    let report = ReadReport {
        mode: "full".into(),
        reason: None,
        changed: users.len() + recipients.len(),
        removed: 0,
    };
    let inventory = finish(
        recipients,
        soft_deleted,
        users,
        stamp,
        config,
        skus,
        started,
    );
    Ok(Read {
        inventory,
        report,
        commit,
        fixed,
    })
}

fn stored_recipients(recipients: &[Recipient], stamp_property: &str) -> Vec<(String, String)> {
    recipients
        .iter()
        .filter_map(|r| Some((guid_of(r)?, r.to_listing(stamp_property).to_string())))
        .collect()
}

async fn skus(
    tenant: &Tenant,
    config: &TenantConfig,
) -> Result<Option<Vec<crate::tenant::graph::SubscribedSku>>, TenantError> {
    match config.mailbox_sku {
        Some(_) => tenant.graph().subscribed_skus().await.map(Some),
        None => Ok(None),
    }
}

/// Fetches the changes since the stored link and time (and, in full, the soft-deleted
/// MailUsers and the licence counts).
async fn changes(
    tenant: &Tenant,
    config: &TenantConfig,
    stamp: StampAttribute,
    delta_link: &str,
    exchange_since: i64,
) -> Result<Changes, ReadError> {
    let started = Instant::now();
    let since = wall_clock();
    let stamp_property = stamp.exchange_name();
    let keep = |v: Value| Recipient::with_stamp_property(v, &stamp_property);
    let (round, recipients, soft_deleted, skus) = futures_util::future::try_join4(
        tenant
            .graph()
            .users_delta_as(&GRAPH_PROPERTIES, Some(delta_link), user_with_json),
        tenant.exchange().list_recipients_changed_since_as(
            exchange_since - i64::from(config.exchange_margin_seconds),
            keep,
        ),
        tenant.exchange().list_soft_deleted_mail_users_as(keep),
        skus(tenant, config),
    )
    .await?;
    let fixed = fixed_digest(&soft_deleted, skus.as_deref(), &stamp_property);
    Ok(Changes {
        round,
        recipients,
        soft_deleted,
        skus,
        stamp,
        since,
        started,
        key: String::new(),
        full_at: 0,
        fixed,
    })
}

/// SHA-256 (hex) of the soft-deleted MailUsers and the licence counts, in an order of their
/// own (the services promise none).
fn fixed_digest(
    soft_deleted: &[Recipient],
    skus: Option<&[crate::tenant::graph::SubscribedSku]>,
    stamp_property: &str,
) -> String {
    use sha2::{Digest, Sha256};
    let mut parts: Vec<String> = soft_deleted
        .iter()
        .map(|r| r.to_listing(stamp_property).to_string())
        .collect();
    parts.sort_unstable();
    let mut skus: Vec<String> = skus
        .unwrap_or_default()
        .iter()
        .map(|s| format!("{s:?}"))
        .collect();
    skus.sort_unstable();
    let mut hash = Sha256::new();
    for p in parts.iter().chain(&skus) {
        hash.update(p.as_bytes());
        hash.update([0]);
    }
    format!("{:x}", hash.finalize())
}

impl Changes {
    /// The Graph delta link the round was fetched with is replaced by this one.
    fn commit_head(&self, removed: &HashSet<String>) -> TenantSyncCommit {
        TenantSyncCommit {
            full: false,
            delta_link: self.round.delta_link.clone(),
            exchange_since: self.since,
            users_gone: removed.iter().cloned().collect(),
            key: self.key.clone(),
            full_at: self.full_at,
            ..TenantSyncCommit::default()
        }
    }

    fn removed(&self) -> HashSet<String> {
        self.round
            .removed
            .iter()
            .map(|r| r.id.to_ascii_lowercase())
            .collect()
    }

    /// What [`Read::fixed`] will be.
    pub fn fixed(&self) -> &str {
        &self.fixed
    }

    /// What the round holds that the stored rows do not already say: the first user
    /// removed, a user new or changed in what the inventory reads of it, or a recipient not
    /// exactly as stored (the margin of the Exchange query lists recently changed recipients
    /// again; Graph lists a user whose unselected properties changed); `None` when nothing.
    /// Reads only the rows of what the round lists.
    pub async fn news(&self, store: &Store) -> Result<Option<String>, ReadError> {
        if let Some(r) = self.round.removed.first() {
            return Ok(Some(format!("Graph user {} removed", r.id)));
        }
        for (user, json) in &self.round.changed {
            let Some(id) = user.id.as_deref() else {
                return Ok(Some("a Graph user without an id".into()));
            };
            let id = id.to_ascii_lowercase();
            let stored = store.tenant_user(&id).await?;
            if stored.as_deref() == Some(json) {
                continue;
            }
            if let Some(stored) = stored
                && self.same_foreign_holder(store, &id, &stored, user).await?
            {
                continue;
            }
            return Ok(Some(format!("Graph user {id} changed")));
        }
        let stamp_property = self.stamp.exchange_name();
        for r in &self.recipients {
            let Some(guid) = guid_of(r) else {
                return Ok(Some("an Exchange recipient without a Guid".into()));
            };
            let listing = r.to_listing(&stamp_property).to_string();
            if store.tenant_recipient(&guid).await?.as_deref() != Some(listing.as_str()) {
                return Ok(Some(format!("Exchange recipient {guid} changed")));
            }
        }
        Ok(None)
    }

    /// Whether `new` and its stored copy are both a user that is not ours and holds the same
    /// UPN, mail and proxy addresses: all the inventory reads of such a user
    /// (`add_foreign_user`), so its other properties (a job title, its sign-in, its licences)
    /// change nothing a plan is made from. Not ours means no stamp of ours (valid or not) on
    /// the user before or after, nor on a stored Exchange recipient belonging to it (the
    /// inventory lays a user over its stamped recipient, reading more of it). Any doubt (a
    /// stored copy that does not parse) is a change.
    async fn same_foreign_holder(
        &self,
        store: &Store,
        id: &str,
        stored: &str,
        new: &GraphUser,
    ) -> Result<bool, ReadError> {
        let Ok(old) = serde_json::from_str::<GraphUser>(stored) else {
            return Ok(false);
        };
        let stamped =
            |u: &GraphUser| graph_stamp(u, self.stamp).is_some_and(|v| v.starts_with(STAMP_PREFIX));
        let holder = |u: &GraphUser| {
            (
                u.id.as_deref().map(str::to_ascii_lowercase),
                u.user_principal_name.clone(),
                u.mail.clone(),
                u.proxy_addresses.clone(),
            )
        };
        if stamped(&old) || stamped(new) || holder(&old) != holder(new) {
            return Ok(false);
        }
        let stamp_property = self.stamp.exchange_name();
        for json in store.tenant_recipients_of_user(id).await? {
            let Ok(v) = serde_json::from_str::<Value>(&json) else {
                return Ok(false);
            };
            let r = Recipient::with_stamp_property(v, &stamp_property);
            if r.text(Col::Stamp)
                .is_some_and(|s| s.starts_with(STAMP_PREFIX))
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// A quiet round (no [`Self::news`]) as a read whose inventory holds only what was
    /// fetched: the plan is taken from an earlier run, and apply needs the inventory only for
    /// actions that are not held, of which a converged plan has none.
    pub fn quiet(self, config: &TenantConfig) -> Read {
        let mut commit = self.commit_head(&HashSet::new());
        let stamp_property = self.stamp.exchange_name();
        commit.users = self
            .round
            .changed
            .iter()
            .filter_map(|(u, json)| Some((u.id.as_deref()?.to_ascii_lowercase(), json.clone())))
            .collect();
        commit.recipients = stored_recipients(&self.recipients, &stamp_property);
        let report = ReadReport {
            mode: "incremental".into(),
            reason: None,
            changed: 0,
            removed: 0,
        };
        tracing::info!("read the tenant's changes: nothing changed");
        let inventory = finish(
            Vec::new(),
            self.soft_deleted,
            Vec::new(),
            self.stamp,
            config,
            self.skus,
            self.started,
        );
        Read {
            inventory,
            report,
            commit,
            fixed: self.fixed,
        }
    }

    /// The users and recipients this round lists differently from their stored copies, or
    /// removes, as nodes of [`crate::plan::partial`] (`u:<Entra id>`, `r:<Guid>`), with the
    /// keys of what it lists (a removed user's are the stored ones). One listed exactly as
    /// stored changes nothing: Exchange's margin lists every recipient changed in the last
    /// `tenant.exchange_margin_seconds` again, the last run's own writes among them.
    pub async fn touched(&self, store: &Store) -> Result<Vec<(String, Vec<Key>)>, ReadError> {
        let mut nodes = Vec::new();
        let ids: BTreeSet<String> = self
            .round
            .changed
            .iter()
            .filter_map(|(u, _)| Some(u.id.as_deref()?.to_ascii_lowercase()))
            .collect();
        let stored: HashMap<String, String> =
            store.tenant_users_of(&ids).await?.into_iter().collect();
        for (u, json) in &self.round.changed {
            if let Some(id) = u.id.as_deref().map(str::to_ascii_lowercase)
                && stored.get(&id) != Some(json)
            {
                nodes.push((format!("u:{id}"), super::user_keys(u, self.stamp)));
            }
        }
        for r in &self.round.removed {
            nodes.push((format!("u:{}", r.id.to_ascii_lowercase()), Vec::new()));
        }
        let stamp_property = self.stamp.exchange_name();
        let listed = stored_recipients(&self.recipients, &stamp_property);
        let guids: BTreeSet<String> = listed.iter().map(|(g, _)| g.clone()).collect();
        let stored: HashMap<String, String> = store
            .tenant_recipients_of(&guids)
            .await?
            .into_iter()
            .collect();
        for r in &self.recipients {
            let Some(guid) = guid_of(r) else { continue };
            if stored.get(&guid) != Some(&r.to_listing(&stamp_property).to_string()) {
                nodes.push((format!("r:{guid}"), super::recipient_keys(r)));
            }
        }
        Ok(nodes)
    }

    /// The round merged with the stored rows: the whole tenant.
    async fn merge(self, store: &Store, config: &TenantConfig) -> Result<Read, ReadError> {
        self.merge_with(store, config, None).await
    }

    /// [`Changes::merge`] with only the stored rows of `only` (Entra ids, recipient Guids)
    /// besides what the round lists: the part of the tenant a partial plan looks at.
    async fn merge_with(
        self,
        store: &Store,
        config: &TenantConfig,
        only: Option<(&BTreeSet<String>, &BTreeSet<String>)>,
    ) -> Result<Read, ReadError> {
        let removed = self.removed();
        let mut commit = self.commit_head(&removed);
        let stamp_property = self.stamp.exchange_name();
        // The same change may come twice in a round: the last one counts.
        let mut changed_users: HashMap<String, GraphUser> = HashMap::new();
        for (user, json) in self.round.changed {
            if let Some(id) = user.id.as_deref().map(str::to_ascii_lowercase) {
                commit.users.push((id.clone(), json));
                changed_users.insert(id, user);
            }
        }
        let mut users = stored_users(store, &removed, &changed_users, only.map(|o| o.0)).await?;
        // A partial plan's inventory holds only the closure's rows: every row listed
        // differently from its stored copy is in it (see `Changes::touched`), so one left
        // out is as stored, and nobody in the closure shares anything with it.
        let in_users = |id: &String| only.is_none_or(|o| o.0.contains(id));
        users.extend(
            changed_users
                .into_iter()
                .filter(|(id, _)| in_users(id))
                .map(|(_, u)| u),
        );

        let changed_guids: HashSet<String> = self.recipients.iter().filter_map(guid_of).collect();
        let (mut recipients, gone) = stored_recipient_rows(
            store,
            &stamp_property,
            &removed,
            &changed_guids,
            only.map(|o| o.1),
        )
        .await?;
        commit.recipients_gone = gone;
        commit.recipients = stored_recipients(&self.recipients, &stamp_property);
        let report = ReadReport {
            mode: "incremental".into(),
            reason: None,
            changed: commit.users.len() + commit.recipients.len(),
            removed: removed.len(),
        };
        let in_recipients =
            |r: &Recipient| only.is_none_or(|o| guid_of(r).is_some_and(|g| o.1.contains(&g)));
        recipients.extend(self.recipients.into_iter().filter(in_recipients));
        tracing::info!(
            users_changed = commit.users.len(),
            users_removed = removed.len(),
            recipients_changed = commit.recipients.len(),
            "read the tenant's changes"
        );
        let inventory = finish(
            recipients,
            self.soft_deleted,
            users,
            self.stamp,
            config,
            self.skus,
            self.started,
        );
        Ok(Read {
            inventory,
            report,
            commit,
            fixed: self.fixed,
        })
    }
}

/// The stored Graph users that neither changed nor left.
async fn stored_users(
    store: &Store,
    removed: &HashSet<String>,
    changed: &HashMap<String, GraphUser>,
    only: Option<&BTreeSet<String>>,
) -> Result<Vec<GraphUser>, ReadError> {
    let mut users = Vec::new();
    let mut each = |id: &str, json: &str| {
        if removed.contains(id) || changed.contains_key(id) {
            return Ok(());
        }
        users.push(serde_json::from_str::<GraphUser>(json)?);
        Ok::<_, serde_json::Error>(())
    };
    let read = match only {
        None => store.each_tenant_user(each).await?,
        Some(ids) => store
            .tenant_users_of(ids)
            .await?
            .iter()
            .try_for_each(|(id, json)| each(id, json)),
    };
    read.map_err(|e| corrupt("a stored Graph user", e))?;
    Ok(users)
}

/// The stored recipients that did not change, and the guids of those whose user left.
async fn stored_recipient_rows(
    store: &Store,
    stamp_property: &str,
    removed_users: &HashSet<String>,
    changed: &HashSet<String>,
    only: Option<&BTreeSet<String>>,
) -> Result<(Vec<Recipient>, Vec<String>), ReadError> {
    let mut kept = Vec::new();
    let mut gone = Vec::new();
    let mut each = |guid: &str, json: &str| {
        if changed.contains(guid) {
            return Ok(());
        }
        let r = Recipient::with_stamp_property(serde_json::from_str(json)?, stamp_property);
        let owner = r.text(Col::ExternalDirectoryObjectId);
        if owner.is_some_and(|id| removed_users.contains(&id.to_ascii_lowercase())) {
            gone.push(guid.to_owned());
        } else {
            kept.push(r);
        }
        Ok::<_, serde_json::Error>(())
    };
    let read = match only {
        None => store.each_tenant_recipient(each).await?,
        Some(guids) => store
            .tenant_recipients_of(guids)
            .await?
            .iter()
            .try_for_each(|(guid, json)| each(guid, json)),
    };
    read.map_err(|e| corrupt("a stored Exchange recipient", e))?;
    Ok((kept, gone))
}

fn corrupt(what: &str, e: serde_json::Error) -> ReadError {
    ReadError::State(StateError::Corrupt {
        anchor: what.to_owned(),
        message: format!("cannot be read ({e})"),
    })
}

fn finish(
    recipients: Vec<Recipient>,
    soft_deleted: Vec<Recipient>,
    users: Vec<GraphUser>,
    stamp: StampAttribute,
    config: &TenantConfig,
    skus: Option<Vec<crate::tenant::graph::SubscribedSku>>,
    started: Instant,
) -> Inventory {
    let counts = (recipients.len(), soft_deleted.len(), users.len());
    let mut inventory = sort(recipients, soft_deleted, users, stamp);
    attach_licences(&mut inventory, config.mailbox_sku.as_deref(), skus);
    tracing::info!(
        recipients = counts.0,
        soft_deleted = counts.1,
        users = counts.2,
        managed = inventory.managed.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "tenant inventory assembled"
    );
    inventory
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "0f0e0d0c-1111-4222-8333-444455556666";

    /// A round that lists the user `user` (JSON) as changed, and nothing else.
    fn round_listing(user: Value) -> Changes {
        let json = user.to_string();
        let user: GraphUser = serde_json::from_value(user).unwrap();
        Changes {
            round: crate::tenant::graph::DeltaRoundOf {
                changed: vec![(user, json)],
                removed: Vec::new(),
                delta_link: "https://graph.example/delta".into(),
            },
            recipients: Vec::new(),
            soft_deleted: Vec::new(),
            skus: None,
            stamp: StampAttribute::parse("extensionAttribute15").unwrap(),
            since: 0,
            started: Instant::now(),
            key: String::new(),
            full_at: 0,
            fixed: String::new(),
        }
    }

    fn user(job: &str, mail: &str) -> Value {
        json!({"id": ID, "userPrincipalName": "guest@example.edu", "mail": mail,
               "jobTitle": job, "accountEnabled": true})
    }

    /// Stores `user` and, when given, a recipient of that user carrying `stamp`.
    async fn store_with(user: Value, stamp: Option<&str>) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).await.unwrap();
        let mut recipient = json!({"Guid": "g1", "Name": "guest",
            // Exchange may write the id in another case than Graph.
            "ExternalDirectoryObjectId": ID.to_ascii_uppercase()});
        if let Some(s) = stamp {
            recipient["CustomAttribute15"] = json!(s);
        }
        let commit = TenantSyncCommit {
            full: true,
            users: vec![(ID.into(), user.to_string())],
            recipients: vec![("g1".into(), recipient.to_string())],
            ..TenantSyncCommit::default()
        };
        store.commit_tenant_sync(&commit, 0).await.unwrap();
        (dir, store)
    }

    /// A user that is not ours is news only through what it holds; one whose Exchange
    /// recipient carries our stamp (the inventory reads more of it) is news through anything.
    #[tokio::test]
    async fn a_foreign_user_is_news_only_through_its_addresses() {
        let stored = user("Scholar", "guest@example.edu");
        let (_dir, store) = store_with(stored.clone(), None).await;
        let news = |u: Value| {
            let store = &store;
            async move { round_listing(u).news(store).await.unwrap() }
        };
        assert_eq!(news(stored.clone()).await, None, "as stored");
        assert_eq!(news(user("Professor", "guest@example.edu")).await, None);
        let mut signed_out = stored.clone();
        signed_out["accountEnabled"] = json!(false);
        assert_eq!(news(signed_out).await, None);
        assert!(news(user("Scholar", "other@example.edu")).await.is_some());
        let mut stamped = stored.clone();
        stamped["onPremisesExtensionAttributes"] = json!({"extensionAttribute15": "ldap2exo:x"});
        assert!(news(stamped).await.is_some());

        for stamp in [
            "ldap2exo:5d0c7a3e-2b4f-4e61-9c8a-000000000012",
            "ldap2exo:?",
        ] {
            let (_dir, store) = store_with(stored.clone(), Some(stamp)).await;
            let changed = round_listing(user("Professor", "guest@example.edu"));
            assert!(
                changed.news(&store).await.unwrap().is_some(),
                "a user of a recipient stamped {stamp}"
            );
        }
        let (_dir, store) = store_with(stored.clone(), Some("somebody else's")).await;
        let changed = round_listing(user("Professor", "guest@example.edu"));
        assert_eq!(changed.news(&store).await.unwrap(), None);
    }
}
