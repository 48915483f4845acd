//! The I/O half of partial planning ([`crate::plan::partial`]): whether a run may plan only
//! the people its changes touch, finding them through the state store's key index, and the
//! base a real run leaves for the next.
//!
//! - **The base** (`state::plan_base`): the plan of the last real run of everybody that
//!   committed its LDAP read, the marks of the reads it was made from, what each entry and
//!   anchor added to it, and `plan_keys`, which value every stored entry (`e:<entryUUID>`),
//!   state row (`o:<anchor>`), Graph user (`u:<id>`) and recipient (`r:<Guid>`) holds.
//!   [`write`] keeps it after applying (the whole index after a plan of everybody, the
//!   closure's rows after a partial one), in one transaction that also empties the log of
//!   state rows written since the last base (`base_dirty`, kept by triggers whoever writes).
//!   The run's own writes, cleared with it, belong to the plan's actions, which the next
//!   closure starts from anyway.
//! - **When** ([`find`]): both incremental reads on and incremental this run, the same build
//!   and configuration, the stored cookie, delta link and Exchange `since` those of the base
//!   (a run that did not apply everything stored no base), the soft-deleted MailUsers and the
//!   licence counts unchanged. Otherwise the run plans everybody and the log says why.
//! - **Seeds**: the refresh's entries (they differ from their stored copies) and those gone;
//!   the tenant rows the rounds list differently from their stored copies, or remove; state
//!   rows written since the base, with their values then and now; the base's actions; rows
//!   whose grace period ended since the base's clock. Each with its keys now and those the
//!   index holds (its values at the base); [`grow`] follows the index from there.

use std::collections::{BTreeMap, BTreeSet};

use super::quiet::{build, config_text};
use crate::config::Config;
use crate::desired::{self, Desired, Quarantined};
use crate::ids::Anchor;
use crate::inventory::StampAttribute;
use crate::inventory::incremental::{self as tenant_read, Changes};
use crate::plan::partial::{self, Class, Key, Share};
use crate::plan::{Outside, Plan, Warning};
use crate::source::RawEntry;
use crate::source::incremental;
use crate::state::{BaseMark, BaseWrite, ManagedObject, StateError, Store};

/// What a partial plan covers: the closure of the run's changes.
#[derive(Debug, Default)]
pub(super) struct Touched {
    /// The run whose plan is the base.
    pub base_run: i64,
    /// entryUUIDs of the closure's entries (stored, changed or gone).
    pub entries: BTreeSet<String>,
    /// Their DNs as stored (before this run's changes).
    pub old_dns: BTreeSet<String>,
    /// Anchors of everything in the closure: entries (as stored and as changed), state
    /// rows, `K`'s actions.
    pub anchors: BTreeSet<Anchor>,
    /// Entra ids and recipient Guids of the closure's tenant rows.
    pub users: BTreeSet<String>,
    pub recipients: BTreeSet<String>,
    /// Entries the refresh added that had no stored copy, and those it removed.
    pub new_entries: usize,
    pub removed_entries: usize,
}

/// SHA-256 (hex) of what a base depends on besides the reads: the build and configuration.
fn digest(config: &Config) -> String {
    use sha2::{Digest, Sha256};
    let text = format!("{}\n{}", build(), config_text(config));
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

/// Why the stored base cannot be used, or the base and its plan.
async fn usable_base(
    config: &Config,
    store: &Store,
    read: &incremental::Read,
    changes: &Changes,
) -> Result<Result<(BaseMark, Plan), String>, StateError> {
    let Some((mark, plan)) = store.plan_base().await? else {
        return Ok(Err("no plan of an earlier run is kept".into()));
    };
    if read.commit.is_none() || !read.deferred {
        return Ok(Err("LDAP was read in full".into()));
    }
    if mark.digest != digest(config) {
        return Ok(Err("the build or the configuration changed".into()));
    }
    let ldap = store.ldap_sync().await?;
    if ldap.map(|m| m.cookie) != Some(mark.ldap_cookie.clone()) {
        return Ok(Err(
            "the stored LDAP entries are not those of that plan".into()
        ));
    }
    let tenant = store.tenant_sync().await?;
    if tenant.map(|t| (t.delta_link, t.exchange_since))
        != Some((mark.delta_link.clone(), mark.exchange_since))
    {
        return Ok(Err(
            "the stored tenant rows are not those of that plan".into()
        ));
    }
    if changes.fixed() != mark.fixed {
        return Ok(Err(
            "the soft-deleted MailUsers or the licence counts changed".into(),
        ));
    }
    let Ok(plan) = serde_json::from_str::<Plan>(&plan) else {
        return Ok(Err("the kept plan cannot be read".into()));
    };
    if !plan.source.only.is_empty() || plan.safety.approval.is_some() {
        return Ok(Err("the kept plan is not one of everybody".into()));
    }
    Ok(Ok((mark, plan)))
}

/// The closure of this run's changes, or `None` (said in the log) when the run plans in full.
pub(super) async fn find(
    config: &Config,
    store: &Store,
    read: &incremental::Read,
    changes: &Changes,
    now: i64,
) -> Result<Option<Touched>, StateError> {
    let (mark, base) = match usable_base(config, store, read, changes).await? {
        Ok(b) => b,
        Err(why) => {
            tracing::info!(reason = %why, "planning everybody");
            return Ok(None);
        }
    };
    let commit = read.commit.as_ref().expect("checked in usable_base");
    let found = async {
        let seeds = seeds(config, store, commit, changes, &base, mark.planned_at, now).await?;
        let nodes = grow(store, seeds).await?;
        let touched = describe(config, store, commit, &nodes, mark.run_id).await?;
        Ok::<_, StateError>((nodes, touched))
    };
    let (nodes, touched) = match found.await {
        Ok(found) => found,
        // A stored row that cannot be read: planning everybody reads LDAP in full instead
        // (`incremental::Read::fill`), as an incremental read does.
        Err(StateError::Corrupt { anchor, message }) => {
            tracing::warn!(row = %anchor, problem = %message, "planning everybody");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    tracing::info!(
        since_run = mark.run_id,
        nodes = nodes.len(),
        entries = touched.entries.len(),
        anchors = touched.anchors.len(),
        "planning only what the changes touch"
    );
    Ok(Some(touched))
}

/// What changed since the base, as nodes with their keys now: the refresh's entries (and
/// those gone), the tenant rows the round lists differently or removes, the state rows
/// written since (with their keys then, from the log), the base's actions, the rows whose
/// grace period ended since `planned_at`.
async fn seeds(
    config: &Config,
    store: &Store,
    commit: &crate::state::LdapSyncCommit,
    changes: &Changes,
    base: &Plan,
    planned_at: i64,
    now: i64,
) -> Result<BTreeMap<String, Vec<Key>>, StateError> {
    let mut seeds: Vec<(String, Vec<Key>)> = Vec::new();
    for (uuid, json) in &commit.upserts {
        let entry: RawEntry = serde_json::from_str(json).map_err(|e| corrupt(uuid, e))?;
        seeds.push((format!("e:{uuid}"), desired::entry_keys(&entry, config)));
    }
    seeds.extend(
        commit
            .removes
            .iter()
            .map(|u| (format!("e:{u}"), Vec::new())),
    );
    seeds.extend(changes.touched(store).await.map_err(|e| match e {
        tenant_read::ReadError::State(e) => e,
        e => StateError::Corrupt {
            anchor: "the tenant's changes".into(),
            message: e.to_string(),
        },
    })?);
    let dirty = store.base_dirty().await?;
    let dirty_anchors: BTreeSet<Anchor> = dirty
        .iter()
        .filter_map(|(a, _)| Anchor::new(a).ok())
        .collect();
    for o in &store.objects_of(&dirty_anchors).await? {
        let mut keys = Vec::new();
        partial::object_keys(o, &mut keys);
        seeds.push((format!("o:{}", o.anchor.as_str()), keys));
    }
    for (anchor, old) in &dirty {
        let mut keys = Anchor::new(anchor)
            .map(|a| vec![Key::anchor(&a)])
            .unwrap_or_default();
        if let Some(fields) = old.as_deref().and_then(|j| serde_json::from_str(j).ok()) {
            partial::field_keys(&fields, &mut keys);
        }
        seeds.push((format!("o:{anchor}"), keys));
    }
    for a in &base.actions {
        seeds.push((
            format!("a:{}", a.anchor.as_str()),
            vec![Key::anchor(&a.anchor)],
        ));
    }
    for anchor in store.grace_ending(planned_at, now).await? {
        seeds.push((format!("o:{anchor}"), Vec::new()));
    }
    // A node may come more than once (a row written since whose grace period ended): all
    // its keys count.
    let mut merged: BTreeMap<String, Vec<Key>> = BTreeMap::new();
    for (node, keys) in seeds {
        merged.entry(node).or_default().extend(keys);
    }
    Ok(merged)
}

/// The closure of `seeds` through the key index: each seed with its keys now and the keys
/// the index holds for it (its values at the base), then every node holding one of them.
async fn grow(
    store: &Store,
    seeds: BTreeMap<String, Vec<Key>>,
) -> Result<BTreeSet<String>, StateError> {
    let mut c = partial::Closure::default();
    let nodes: Vec<String> = seeds.keys().cloned().collect();
    let mut stored = store.node_keys(&nodes).await?;
    for (node, keys) in seeds {
        let old = stored.remove(&node).unwrap_or_default();
        c.add(
            node,
            keys.into_iter()
                .chain(old.into_iter().map(Key::from_stored)),
        );
    }
    loop {
        let keys: Vec<i64> = c.frontier().into_iter().map(Key::stored).collect();
        if keys.is_empty() {
            return Ok(c.nodes);
        }
        let holders: Vec<String> = store
            .key_holders(&keys)
            .await?
            .into_iter()
            .filter(|n| !c.nodes.contains(n))
            .collect();
        let mut found = store.node_keys(&holders).await?;
        for node in holders {
            let keys = found.remove(&node).unwrap_or_default();
            c.add(node, keys.into_iter().map(Key::from_stored));
        }
    }
}

/// The closure's nodes as what the run reads: entries, tenant rows, anchors (with those
/// the stored and changed entries carry), the DNs the entries had.
async fn describe(
    config: &Config,
    store: &Store,
    commit: &crate::state::LdapSyncCommit,
    nodes: &BTreeSet<String>,
    base_run: i64,
) -> Result<Touched, StateError> {
    let mut touched = Touched {
        base_run,
        ..Touched::default()
    };
    for node in nodes {
        let (kind, id) = node.split_at(2);
        match kind {
            "e:" => drop(touched.entries.insert(id.to_owned())),
            "u:" => drop(touched.users.insert(id.to_owned())),
            "r:" => drop(touched.recipients.insert(id.to_owned())),
            _ => drop(Anchor::new(id).map(|a| touched.anchors.insert(a))),
        }
    }
    let uuids: Vec<String> = touched.entries.iter().cloned().collect();
    let stored = store.ldap_entries_of(&uuids).await?;
    let stored_uuids: BTreeSet<&str> = stored.iter().map(|(u, _)| u.as_str()).collect();
    touched.removed_entries = commit.removes.len();
    touched.new_entries = commit
        .upserts
        .iter()
        .filter(|(u, _)| !stored_uuids.contains(u.as_str()))
        .count();
    let attrs = &config.ldap.attributes;
    for (uuid, json) in &stored {
        let entry: RawEntry = serde_json::from_str(json).map_err(|e| corrupt(uuid, e))?;
        touched.old_dns.insert(entry.dn.clone());
        touched.anchors.extend(desired::anchor_of(&entry, attrs));
    }
    for (uuid, json) in &commit.upserts {
        let entry: RawEntry = serde_json::from_str(json).map_err(|e| corrupt(uuid, e))?;
        touched.anchors.extend(desired::anchor_of(&entry, attrs));
    }
    // The tenant rows must read too: a full tenant read replaces one that does not.
    let stamp = StampAttribute::parse(&config.tenant.anchor_attribute).map_err(|e| {
        StateError::Corrupt {
            anchor: "the stamp attribute".into(),
            message: e.to_string(),
        }
    })?;
    for (_, json) in store.tenant_users_of(&touched.users).await? {
        tenant_read::stored_user_keys(&json, stamp).map_err(unreadable)?;
    }
    for (_, json) in store.tenant_recipients_of(&touched.recipients).await? {
        tenant_read::stored_recipient_keys(&json, stamp).map_err(unreadable)?;
    }
    Ok(touched)
}

fn corrupt(uuid: &str, e: serde_json::Error) -> StateError {
    StateError::Corrupt {
        anchor: format!("LDAP entry {uuid}"),
        message: format!("cannot be read ({e})"),
    }
}

/// Completes `desired` (the closure's mapping) with the base's entries outside the closure,
/// and returns the totals [`crate::plan::plan`] adds. `objects` are the closure's state rows.
pub(super) async fn complete(
    store: &Store,
    touched: &Touched,
    desired: &mut Desired,
    objects: &[ManagedObject],
) -> Result<Outside, StateError> {
    let dns: BTreeSet<String> = touched
        .old_dns
        .iter()
        .cloned()
        .chain(desired_dns(desired))
        .collect();
    let totals = store.base_totals(&dns, &touched.anchors).await?;
    let mut outside = Outside {
        disabled_in_ldap: totals.classes.get("disabled").copied().unwrap_or(0),
        skipped_no_mail: totals.classes.get("no_mail").copied().unwrap_or(0),
        unchanged: totals.counted,
        ..Outside::default()
    };
    let inside = objects
        .iter()
        .filter(|o| o.stage != crate::state::Stage::Deleted)
        .count();
    outside.managed = store.live_object_count().await?.saturating_sub(inside);
    let mut quarantined: Vec<Quarantined> = Vec::new();
    let mut warnings: Vec<Warning> = Vec::new();
    for (dn, json) in &totals.shares {
        let stored: StoredShare = serde_json::from_str(json).map_err(|e| StateError::Corrupt {
            anchor: format!("the kept share of {dn}"),
            message: e.to_string(),
        })?;
        quarantined.extend(stored.quarantined);
        warnings.extend(stored.warnings);
    }
    let stored_count = store.ldap_entry_count().await? as usize;
    desired.source_count =
        (stored_count + touched.new_entries).saturating_sub(touched.removed_entries);
    partial::complete(desired, quarantined, warnings);
    Ok(outside)
}

/// The DNs a mapping holds.
fn desired_dns(d: &Desired) -> impl Iterator<Item = String> + '_ {
    d.recipients
        .iter()
        .map(|r| r.dn.clone())
        .chain(d.disabled.iter().map(|x| x.dn.clone()))
        .chain(d.skipped_no_mail.iter().cloned())
        .chain(d.quarantined.iter().map(|q| q.dn.clone()))
}

/// A share as `base_entries.share` keeps it.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct StoredShare {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    quarantined: Vec<Quarantined>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<Warning>,
}

/// What a real run's plan adds to the base besides actions: each entry's share, the anchors
/// counted. Taken from the mapping before planning consumes it.
#[derive(Debug, Default)]
pub(super) struct Draft {
    pub shares: Vec<(String, &'static str, Option<String>)>,
    pub counted: Vec<String>,
}

impl Draft {
    pub fn of(desired: &Desired, objects: &[ManagedObject]) -> Draft {
        let shares = partial::shares(desired)
            .into_iter()
            .map(|(dn, s)| {
                let class = match s.class {
                    Class::Recipient => "recipient",
                    Class::Disabled => "disabled",
                    Class::NoMail => "no_mail",
                    Class::Quarantined => "quarantined",
                };
                (dn, class, stored_share(s))
            })
            .collect();
        let counted = partial::counted(desired, objects)
            .into_iter()
            .map(|a| a.as_str().to_owned())
            .collect();
        Draft { shares, counted }
    }
}

fn stored_share(s: Share) -> Option<String> {
    if s.quarantined.is_empty() && s.warnings.is_empty() {
        return None;
    }
    let stored = StoredShare {
        quarantined: s.quarantined,
        warnings: s.warnings,
    };
    Some(serde_json::to_string(&stored).expect("a share serialises"))
}

/// The base a real run leaves: its plan and marks, its draft, and the keys of the rows
/// stored now (all of them, or the closure's).
pub(super) async fn write(
    config: &Config,
    store: &Store,
    run: BaseRun<'_>,
) -> Result<(), StateError> {
    let (Some(ldap), Some(tenant)) = (store.ldap_sync().await?, store.tenant_sync().await?) else {
        return store.drop_plan_base().await;
    };
    let stamp = match StampAttribute::parse(&config.tenant.anchor_attribute) {
        Ok(s) => s,
        Err(_) => return store.drop_plan_base().await,
    };
    let mut w = BaseWrite {
        whole: run.touched.is_none(),
        mark: Some(BaseMark {
            run_id: run.run_id,
            planned_at: run.planned_at,
            digest: digest(config),
            ldap_cookie: ldap.cookie,
            delta_link: tenant.delta_link,
            exchange_since: tenant.exchange_since,
            fixed: run.fixed.to_owned(),
        }),
        plan: crate::plan::quiet::stored(run.plan),
        ..BaseWrite::default()
    };
    w.entries = run.draft.shares.clone();
    w.counted = run.draft.counted.clone();
    let mut keys: Vec<(String, Vec<i64>)> = Vec::new();
    let add = |node: String, ks: Vec<Key>, keys: &mut Vec<(String, Vec<i64>)>| {
        keys.push((node, ks.into_iter().map(Key::stored).collect()));
    };
    match run.touched {
        None => {
            let read = store
                .each_ldap_entry(|uuid, json| {
                    let entry: RawEntry = serde_json::from_str(json)?;
                    add(
                        format!("e:{uuid}"),
                        desired::entry_keys(&entry, config),
                        &mut keys,
                    );
                    Ok::<_, serde_json::Error>(())
                })
                .await?;
            read.map_err(|e| corrupt("a stored entry", e))?;
            for o in store.objects().await? {
                let mut ks = Vec::new();
                partial::object_keys(&o, &mut ks);
                add(format!("o:{}", o.anchor.as_str()), ks, &mut keys);
            }
            store
                .each_tenant_user(|id, json| {
                    add(
                        format!("u:{id}"),
                        tenant_read::stored_user_keys(json, stamp)?,
                        &mut keys,
                    );
                    Ok::<_, tenant_read::ReadError>(())
                })
                .await?
                .map_err(unreadable)?;
            store
                .each_tenant_recipient(|guid, json| {
                    add(
                        format!("r:{guid}"),
                        tenant_read::stored_recipient_keys(json, stamp)?,
                        &mut keys,
                    );
                    Ok::<_, tenant_read::ReadError>(())
                })
                .await?
                .map_err(unreadable)?;
        }
        Some(c) => {
            w.entries_gone = c.old_dns.iter().cloned().collect();
            w.entries_gone
                .extend(run.draft.shares.iter().map(|(dn, _, _)| dn.clone()));
            w.counted_gone = c.anchors.iter().map(|a| a.as_str().to_owned()).collect();
            let uuids: Vec<String> = c.entries.iter().cloned().collect();
            for (uuid, json) in store.ldap_entries_of(&uuids).await? {
                let entry: RawEntry = serde_json::from_str(&json).map_err(|e| corrupt(&uuid, e))?;
                add(
                    format!("e:{uuid}"),
                    desired::entry_keys(&entry, config),
                    &mut keys,
                );
            }
            for o in store.objects_of(&c.anchors).await? {
                let mut ks = Vec::new();
                partial::object_keys(&o, &mut ks);
                add(format!("o:{}", o.anchor.as_str()), ks, &mut keys);
            }
            for (id, json) in store.tenant_users_of(&c.users).await? {
                let ks = tenant_read::stored_user_keys(&json, stamp).map_err(unreadable)?;
                add(format!("u:{id}"), ks, &mut keys);
            }
            for (guid, json) in store.tenant_recipients_of(&c.recipients).await? {
                let ks = tenant_read::stored_recipient_keys(&json, stamp).map_err(unreadable)?;
                add(format!("r:{guid}"), ks, &mut keys);
            }
            w.nodes_gone = c.entries.iter().map(|u| format!("e:{u}")).collect();
            w.nodes_gone
                .extend(c.anchors.iter().map(|a| format!("o:{}", a.as_str())));
            w.nodes_gone
                .extend(c.users.iter().map(|u| format!("u:{u}")));
            w.nodes_gone
                .extend(c.recipients.iter().map(|r| format!("r:{r}")));
        }
    }
    w.keys = keys;
    store.write_plan_base(&w).await
}

fn unreadable(e: tenant_read::ReadError) -> StateError {
    match e {
        tenant_read::ReadError::State(e) => e,
        e => StateError::Corrupt {
            anchor: "a stored tenant row".into(),
            message: e.to_string(),
        },
    }
}

/// What [`write`] needs of a finished real run.
pub(super) struct BaseRun<'a> {
    pub run_id: i64,
    pub planned_at: i64,
    pub plan: &'a Plan,
    pub fixed: &'a str,
    pub draft: &'a Draft,
    pub touched: Option<&'a Touched>,
}
