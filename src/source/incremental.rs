//! Which LDAP read a run does, and how an incremental one still yields the whole directory.
//!
//! With `ldap.content_sync` off (the default), or for `sync --only`, every run is a paged full
//! read ([`super::read_each`]). With it on, a run refreshes with the cookie the state store
//! kept ([`super::content_sync`]): the server sends only what changed, and the entries the
//! last committed refresh left in the state store (`ldap_entries`) fill in everybody else, so
//! the mapper and the planner see the same whole directory a full read gives. Leavers,
//! claims and the safety gates therefore work exactly as for a full read: an incremental run
//! that would remove more than the caps is blocked the same way.
//!
//! The server sends an entry whenever anything in it changed, a password or any other
//! attribute ldap2exo does not read. One whose DN, every attribute ldap2exo reads and the
//! rules' verdicts are as stored is no change: it is neither counted nor stored again, and
//! a refresh of only such entries leaves a run quiet (`plan::quiet`).
//!
//! A full refresh (no cookie) happens when there is no cookie yet, when the search changed
//! (URL, base, scope, filter, rules or attributes), when the last full refresh is older than
//! `ldap.full_reconcile_interval_hours`, when the server refuses the cookie
//! (`e-syncRefreshRequired`) or when a stored entry cannot be read. A server that cannot do
//! content synchronisation at all is read with the paged search. Each is logged and reported
//! in the plan's `source.read`.
//!
//! Nothing is written here: the caller commits [`Read::commit`] (entries and cookie together)
//! only after a real run applied every change (see `commands::run`), so a cookie never moves
//! past an action that failed and a dry run changes nothing.

use std::collections::{BTreeSet, HashSet};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::content_sync::{self, Delta, Refresh, SyncUuid};
use super::{RawEntry, Selection, SourceError, read_each};
use crate::config::LdapConfig;
use crate::state::{LdapSyncCommit, StateError, Store};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// How the directory was read, for the plan's `source.read` (only with `ldap.content_sync`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadReport {
    /// `incremental` (a refresh with a cookie), `full` (a refresh without one) or `paged`
    /// (the server cannot do content synchronisation).
    pub mode: String,
    /// Why the read was not incremental; `None` for an incremental read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Entries added or changed: for an incremental read those the server sent that differ
    /// from their stored copy (one sent again after a change to an attribute ldap2exo does
    /// not read, a password, is not counted); all of them for a full read.
    pub changed: usize,
    /// Entries that left since the last committed refresh (deleted or out of the filter).
    pub removed: usize,
}

/// What a read produced besides the entries.
#[derive(Debug, Default)]
pub struct Read {
    pub report: Option<ReadReport>,
    /// The entries and cookie to store once the run applied everything; `None` for a paged
    /// read.
    pub commit: Option<LdapSyncCommit>,
    /// Set when a refresh found nothing changed and the stored entries were not handed to the
    /// sink yet (asked for with `quiet_first`): [`Read::fill`] hands them over, unless the
    /// run takes an earlier plan (`plan::quiet`) and needs no entries at all.
    pub deferred: bool,
}

impl Read {
    /// Hands the stored entries to `sink` when [`Read::deferred`]; a stored entry that cannot
    /// be read makes it a full refresh, as during [`read`]. `now` as for [`read`].
    pub async fn fill(
        &mut self,
        config: &LdapConfig,
        store: &Store,
        now: i64,
        sink: &mut Sink<'_>,
    ) -> Result<(), ReadError> {
        if !std::mem::take(&mut self.deferred) {
            return Ok(());
        }
        let skip = self.changed();
        if let Err(why) = stored_entries(store, sink, |uuid| Ok(skip.contains(uuid))).await? {
            *self = full(config, sink, search_key(config), now, why).await?;
            return Ok(());
        }
        self.hand_over_changes(sink)
    }

    /// [`Read::fill`] for the entries `uuids` only (`plan::partial`): the stored ones among
    /// them and the changed ones (every changed entry must be among them). The caller has
    /// read them before (`commands::partial`), so one that cannot be read now is an error.
    pub async fn fill_only(
        &mut self,
        store: &Store,
        uuids: &BTreeSet<String>,
        sink: &mut Sink<'_>,
    ) -> Result<(), ReadError> {
        self.deferred = false;
        let skip = self.changed();
        let wanted: Vec<String> = uuids
            .iter()
            .filter(|u| !skip.contains(*u))
            .cloned()
            .collect();
        for (uuid, json) in store.ldap_entries_of(&wanted).await? {
            let entry: RawEntry = serde_json::from_str(&json).map_err(|e| unreadable(&uuid, e))?;
            sink(Some(&entry));
        }
        self.hand_over_changes(sink)
    }

    /// The entryUUIDs this read changed or removed: their stored copies are not the
    /// directory's.
    pub fn changed(&self) -> HashSet<String> {
        self.commit
            .iter()
            .flat_map(|c| c.upserts.iter().map(|(u, _)| u).chain(&c.removes))
            .cloned()
            .collect()
    }

    /// Hands over the entries the refresh changed, kept as JSON since.
    fn hand_over_changes(&self, sink: &mut Sink<'_>) -> Result<(), ReadError> {
        for (uuid, json) in self.commit.iter().flat_map(|c| &c.upserts) {
            let entry: RawEntry = serde_json::from_str(json).map_err(|e| unreadable(uuid, e))?;
            sink(Some(&entry));
        }
        Ok(())
    }
}

fn unreadable(uuid: &str, e: serde_json::Error) -> ReadError {
    ReadError::State(StateError::Corrupt {
        anchor: format!("LDAP entry {uuid}"),
        message: format!("cannot be read ({e})"),
    })
}

/// Where the entries go: `Some(entry)` for each entry of the directory, `None` to drop every
/// entry handed over so far (a refresh that had to start again in full).
pub type Sink<'a> = dyn FnMut(Option<&RawEntry>) + 'a;

/// Reads the people of `selection` into `sink`, incrementally when configured and possible.
/// `now` is Unix seconds (for the full-reconcile interval and the commit). With
/// `quiet_first`, a refresh that finds nothing changed leaves the stored entries to
/// [`Read::fill`].
pub async fn read(
    config: &LdapConfig,
    selection: &Selection,
    store: &Store,
    now: i64,
    quiet_first: bool,
    sink: &mut Sink<'_>,
) -> Result<Read, ReadError> {
    // With content_sync off the stored entries and cookie stay: they are a consistent pair,
    // and turned on again the interval (or the server) decides whether they are still usable.
    if !config.content_sync || *selection != Selection::All {
        read_each(config, selection, |e| sink(Some(&e))).await?;
        return Ok(Read::default());
    }
    let search = search_key(config);
    let mark = store.ldap_sync().await?;
    let hours = i64::from(config.full_reconcile_interval_hours);
    let (cookie, mut reason) = match mark {
        None => (
            None,
            "no cookie yet: the first content-sync read is full".to_owned(),
        ),
        Some(m) if m.search != search => (
            None,
            "the search changed (URL, base, scope, filter, rules or attributes)".to_owned(),
        ),
        Some(m) if now - m.full_at >= hours * 3600 => (
            None,
            format!("the last full read is older than full_reconcile_interval_hours ({hours})"),
        ),
        Some(m) => (Some((m.cookie, m.full_at)), String::new()),
    };
    if let Some((cookie, full_at)) = cookie {
        match incremental(config, store, &cookie, quiet_first, sink).await? {
            Step::Done(mut read) => {
                if let Some(c) = &mut read.commit {
                    (c.search, c.full_at) = (search, full_at);
                }
                return Ok(read);
            }
            Step::Full(why) => reason = why,
            Step::Paged(why) => return paged(config, sink, why).await,
        }
    }
    info!(reason = %reason, "reading LDAP in full (content synchronisation without a cookie)");
    full(config, sink, search, now, reason).await
}

/// The key that ties a cookie to its search: a change of any part starts in full.
fn search_key(config: &LdapConfig) -> String {
    serde_json::json!({
        "url": super::error::display_url(&config.url),
        "base_dn": config.base_dn,
        "scope": format!("{:?}", config.scope),
        "filter": config.filter.trim(),
        "hidden": config.rules.hidden_filter.as_deref().map(str::trim),
        "disabled": config.rules.disabled_filter.as_deref().map(str::trim),
        "attributes": config.attributes.requested(),
    })
    .to_string()
}

enum Step {
    Done(Read),
    /// Start again with a full refresh, for this reason.
    Full(String),
    /// Fall back to the paged read, for this reason.
    Paged(String),
}

/// A refresh with `cookie`, merged with the stored entries.
async fn incremental(
    config: &LdapConfig,
    store: &Store,
    cookie: &[u8],
    quiet_first: bool,
    sink: &mut Sink<'_>,
) -> Result<Step, ReadError> {
    let mut upserts = Vec::new();
    let mut changed = HashSet::new();
    let mut bad = None;
    let refresh = content_sync::refresh(config, Some(cookie), |uuid, entry| {
        match serde_json::to_string(&entry) {
            Ok(json) => upserts.push((uuid.to_string(), json)),
            Err(e) => bad = Some(e.to_string()),
        }
        changed.insert(uuid);
        sink(Some(&entry));
    })
    .await?;
    let delta = match refresh {
        Refresh::Done(delta) => delta,
        Refresh::CookieRefused => {
            warn!("the LDAP server refused the stored cookie: reading in full");
            return Ok(Step::Full(
                "the server refused the cookie (e-syncRefreshRequired, or a cookie newer than the server's state)".into(),
            ));
        }
        Refresh::Unavailable { reason } => return Ok(Step::Paged(reason)),
    };
    if let Some(e) = bad {
        sink(None);
        return Ok(Step::Full(format!("an entry cannot be stored: {e}")));
    }
    let sent = upserts.len();
    drop_as_stored(store, &mut upserts).await?;
    if sent > upserts.len() {
        info!(
            unchanged = sent - upserts.len(),
            "entries sent again with every attribute read as stored (a change ldap2exo does not read)"
        );
    }
    if quiet_first
        && upserts.is_empty()
        && nobody_left(store, &delta, &changed).await?
        && let Some(read) = quiet(&delta)
    {
        if sent > 0 {
            // What was handed over is all as stored: the stored entries, handed over by
            // `Read::fill` if the run plans at all, are the directory.
            sink(None);
        }
        return Ok(Step::Done(read));
    }
    let mut removes = Vec::new();
    if quiet_first {
        // The run may plan only what the changes touch (`plan::partial`): the stored
        // entries wait for `Read::fill` or `Read::fill_only`, and only their keys are read.
        let mut bad = None;
        store
            .each_ldap_uuid(|uuid| match SyncUuid::parse(uuid) {
                Some(id) if gone(&delta, &id) && !changed.contains(&id) => {
                    removes.push(uuid.to_owned())
                }
                Some(_) => {}
                None => {
                    bad = Some(format!(
                        "a stored entry cannot be read (`{uuid}` is not a UUID)"
                    ))
                }
            })
            .await?;
        sink(None);
        if let Some(why) = bad {
            warn!(problem = %why, "a stored LDAP entry cannot be read: reading in full");
            return Ok(Step::Full(why));
        }
    } else {
        let kept = stored_entries(store, sink, |uuid| {
            let id = SyncUuid::parse(uuid).ok_or_else(|| format!("`{uuid}` is not a UUID"))?;
            if gone(&delta, &id) && !changed.contains(&id) {
                removes.push(uuid.to_owned());
            }
            Ok(changed.contains(&id) || gone(&delta, &id))
        })
        .await?;
        if let Err(why) = kept {
            return Ok(Step::Full(why));
        }
    }
    let Some(new_cookie) = delta.cookie.clone() else {
        sink(None);
        return Ok(Step::Full("the server sent no cookie".into()));
    };
    info!(
        changed = upserts.len(),
        removed = removes.len(),
        "read LDAP incrementally"
    );
    Ok(Step::Done(Read {
        report: Some(ReadReport {
            mode: "incremental".into(),
            reason: None,
            changed: upserts.len(),
            removed: removes.len(),
        }),
        commit: Some(LdapSyncCommit {
            full: false,
            upserts,
            removes,
            cookie: new_cookie,
            search: String::new(),
            full_at: 0,
        }),
        deferred: quiet_first,
    }))
}

/// Hands the stored entries to `sink`, but those `skip` says are not (changed, or gone); a
/// stored entry that cannot be read drops everything handed over and says why, for a full
/// refresh.
async fn stored_entries(
    store: &Store,
    sink: &mut Sink<'_>,
    mut skip: impl FnMut(&str) -> Result<bool, String>,
) -> Result<Result<(), String>, ReadError> {
    let kept: Result<(), String> = store
        .each_ldap_entry(|uuid, json| {
            if skip(uuid)? {
                return Ok(());
            }
            let entry: RawEntry =
                serde_json::from_str(json).map_err(|e| format!("entry {uuid}: {e}"))?;
            sink(Some(&entry));
            Ok(())
        })
        .await?;
    Ok(kept.map_err(|why| {
        warn!(problem = %why, "a stored LDAP entry cannot be read: reading in full");
        sink(None);
        format!("a stored entry cannot be read ({why})")
    }))
}

/// Keeps of `upserts` (in the order the server sent them) the last copy of each entry, and
/// only if it differs from the stored one: an entry as stored changes nothing, neither the
/// directory a plan is made from nor the stored copy.
async fn drop_as_stored(
    store: &Store,
    upserts: &mut Vec<(String, String)>,
) -> Result<(), ReadError> {
    let mut seen = HashSet::new();
    upserts.reverse();
    upserts.retain(|(uuid, _)| seen.insert(uuid.clone()));
    upserts.reverse();
    let same = store.ldap_entries_as_stored(upserts).await?;
    upserts.retain(|(uuid, _)| !same.contains(uuid));
    Ok(())
}

/// Whether every stored entry is still there after `delta`: none named as deleted, and with
/// a present phase (a server without a session log names every unchanged entry present)
/// each stored one named present or `sent`. Reads only the stored entryUUIDs, and only for
/// a present phase.
async fn nobody_left(
    store: &Store,
    delta: &Delta,
    sent: &HashSet<SyncUuid>,
) -> Result<bool, ReadError> {
    if !delta.deleted.is_empty() {
        return Ok(false);
    }
    let Some(present) = &delta.present else {
        return Ok(true);
    };
    let mut all = true;
    store
        .each_ldap_uuid(|uuid| {
            // A stored key that is no UUID is for the full refresh the normal path starts.
            all &=
                SyncUuid::parse(uuid).is_some_and(|id| present.contains(&id) || sent.contains(&id));
        })
        .await?;
    Ok(all)
}

/// A refresh that changed nothing (no entry other than as stored, nobody left: see
/// [`nobody_left`]): its read, the stored entries not handed over yet.
fn quiet(delta: &Delta) -> Option<Read> {
    let cookie = delta.cookie.clone()?;
    info!(
        changed = 0,
        removed = 0,
        "read LDAP incrementally: nothing changed"
    );
    Some(Read {
        report: Some(ReadReport {
            mode: "incremental".into(),
            reason: None,
            changed: 0,
            removed: 0,
        }),
        commit: Some(LdapSyncCommit {
            full: false,
            upserts: Vec::new(),
            removes: Vec::new(),
            cookie,
            search: String::new(),
            full_at: 0,
        }),
        deferred: true,
    })
}

/// True when `delta` says a stored entry left: named as deleted, or (present phase) not named
/// as present.
fn gone(delta: &Delta, id: &SyncUuid) -> bool {
    delta.deleted.contains(id) || delta.present.as_ref().is_some_and(|p| !p.contains(id))
}

/// A refresh without a cookie: every entry, and the cookie to start from next time.
async fn full(
    config: &LdapConfig,
    sink: &mut Sink<'_>,
    search: String,
    now: i64,
    reason: String,
) -> Result<Read, ReadError> {
    let mut upserts = Vec::new();
    let mut seen = HashSet::new();
    let mut unstored = None;
    let refresh = content_sync::refresh(config, None, |uuid, entry| {
        if !seen.insert(uuid) {
            warn!(uuid = %uuid, dn = %entry.dn, "the server sent an entry twice; the first is kept");
            return;
        }
        match serde_json::to_string(&entry) {
            Ok(json) => upserts.push((uuid.to_string(), json)),
            Err(e) => unstored = Some(format!("{}: {e}", entry.dn)),
        }
        sink(Some(&entry));
    })
    .await?;
    let delta = match refresh {
        Refresh::Done(delta) => delta,
        // Without a cookie there is nothing to refuse; a server that does is not usable.
        Refresh::CookieRefused => {
            sink(None);
            return paged(
                config,
                sink,
                "the server refused a refresh without a cookie".into(),
            )
            .await;
        }
        Refresh::Unavailable { reason } => {
            sink(None);
            return paged(config, sink, reason).await;
        }
    };
    // A copy missing an entry would make it look gone at the next incremental read: store
    // nothing then, and read in full again next time.
    if let Some(why) = &unstored {
        warn!(problem = %why, "an entry cannot be stored: the next run reads in full again");
    }
    let cookie = delta.cookie.filter(|_| unstored.is_none());
    let commit = cookie.map(|cookie| LdapSyncCommit {
        full: true,
        upserts,
        removes: Vec::new(),
        cookie,
        search,
        full_at: now,
    });
    if commit.is_none() {
        warn!(
            "the LDAP server ended a full refresh without a cookie: the next run reads in full again"
        );
    }
    Ok(Read {
        report: Some(ReadReport {
            mode: "full".into(),
            reason: Some(reason),
            changed: delta.changed,
            removed: 0,
        }),
        commit,
        deferred: false,
    })
}

/// The paged full read, when the server cannot do content synchronisation.
async fn paged(
    config: &LdapConfig,
    sink: &mut Sink<'_>,
    reason: String,
) -> Result<Read, ReadError> {
    warn!(reason = %reason, "LDAP content synchronisation is not available: reading with a paged search");
    let entries = read_each(config, &Selection::All, |e| sink(Some(&e))).await?;
    Ok(Read {
        report: Some(ReadReport {
            mode: "paged".into(),
            reason: Some(reason),
            changed: entries,
            removed: 0,
        }),
        commit: None,
        deferred: false,
    })
}
