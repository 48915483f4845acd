//! `GET /users/delta` ("user: delta" and "Use delta query to track changes"): a first round
//! returns every live user, later rounds (from `@odata.deltaLink`) the users changed since,
//! with `@removed: {reason: changed}` for soft-deleted and `{reason: deleted}` for purged
//! ones. Rounds page through `@odata.nextLink`. Tokens carry the change sequence number they
//! start from; they expire after the configured lifetime (7 days at Microsoft).

use super::users::{project, select_props};
use super::{Answer, GraphError, url};
use crate::shared::{Shared, lock};
use crate::store::User;
use crate::util::{b64url, b64url_decode, now_unix, query_escape};
use crate::wire::Req;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const DEFAULT_PAGE: usize = 100;

/// What both link kinds encode.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    /// Changes after this sequence number...
    since: u64,
    /// ...up to this one (fixed for a round, so a round is a consistent snapshot of changes).
    upto: u64,
    /// Last id returned in this round (paging is by id).
    after: Option<String>,
    /// First round: only live objects, no `@removed` entries.
    initial: bool,
    select: Option<Vec<String>>,
    /// When the deltaLink was issued (Unix seconds), for the token lifetime.
    issued: u64,
    /// The token's number ([`crate::store::Store::delta_issued`]), for expiry on demand.
    #[serde(default)]
    serial: u64,
}

fn encode(s: &State) -> String {
    b64url(serde_json::to_string(s).unwrap_or_default().as_bytes())
}

fn decode(t: &str) -> Option<State> {
    serde_json::from_slice(&b64url_decode(t)?).ok()
}

fn page_size(req: &Req) -> usize {
    // Graph honours `Prefer: odata.maxpagesize=N` on delta.
    req.max_page_size()
        .map(|n| n.min(999))
        .unwrap_or(DEFAULT_PAGE)
}

pub fn delta(sh: &Shared, req: &Req) -> Result<Answer, GraphError> {
    for (k, _) in &req.query {
        if k.starts_with('$') && !["$select", "$deltatoken", "$skiptoken"].contains(&k.as_str()) {
            return Err(GraphError::UnsupportedQuery(format!(
                "The query option '{k}' is not supported by the ldap2exo emulator on /users/delta."
            )));
        }
    }
    let mut store = lock(&sh.store);
    store.purge_expired();
    let bad_token = || GraphError::bad("The delta token or skip token is malformed.");
    let state = if let Some(t) = req.query("$deltatoken") {
        let s = decode(t).ok_or_else(bad_token)?;
        let age = now_unix().saturating_sub(s.issued);
        if s.serial < store.delta_epoch || age > sh.settings.delta_token_lifetime.as_secs() {
            return Err(GraphError::SyncStateNotFound {
                status: sh.settings.delta_expired_status,
            });
        }
        State {
            since: s.since,
            upto: store.seq,
            after: None,
            initial: false,
            select: s.select,
            issued: s.issued,
            serial: s.serial,
        }
    } else if let Some(t) = req.query("$skiptoken") {
        decode(t).ok_or_else(bad_token)?
    } else {
        State {
            since: 0,
            upto: store.seq,
            after: None,
            initial: true,
            select: select_props(req)?,
            issued: now_unix(),
            serial: 0,
        }
    };

    let in_round = |seq: u64| seq > state.since && seq <= state.upto;
    let after = |id: &str| state.after.as_deref().is_none_or(|a| id > a);
    // Only the page is rendered: rendering every user of a round on every page made a round
    // of 100,000 changed users cost minutes per thousand.
    let live = store.graph_users();
    let mut picked: Vec<(&str, Option<&User>)> = live
        .iter()
        .filter(|u| in_round(u.changed_seq) && !(state.initial && u.is_deleted()))
        .filter(|u| after(&u.id))
        .map(|u| (u.id.as_str(), Some(u.as_ref())))
        .collect();
    if !state.initial {
        picked.extend(
            store
                .tombstones
                .iter()
                .filter(|t| in_round(t.seq) && after(&t.id))
                .map(|t| (t.id.as_str(), None)),
        );
    }
    picked.sort_by(|a, b| a.0.cmp(b.0));
    let size = page_size(req);
    let more = picked.len() > size;
    picked.truncate(size);
    let entries: Vec<(String, Value)> = picked
        .into_iter()
        .map(|(id, user)| {
            let v = match user {
                Some(u) if u.is_deleted() => json!({"id": id, "@removed": {"reason": "changed"}}),
                Some(u) => {
                    let mut v = project(&store.graph_view(u), &state.select);
                    // "If the property has never been set before it will not be included in
                    // the response at all" (user: delta, default behaviour). The emulator
                    // cannot tell never set from cleared (documented as null), so every
                    // empty property is left out: a client must read absent as empty.
                    if let Value::Object(m) = &mut v {
                        m.retain(|_, value| !value.is_null());
                    }
                    v["id"] = json!(id);
                    v
                }
                None => json!({"id": id, "@removed": {"reason": "deleted"}}),
            };
            (id.to_owned(), v)
        })
        .collect();
    drop(live);
    store.delta_issued += 1;
    let serial = store.delta_issued;
    drop(store);

    let mut body = json!({"@odata.context": url(sh, "/$metadata#users")});
    if more {
        let next = State {
            after: entries.last().map(|e| e.0.clone()),
            ..state
        };
        body["@odata.nextLink"] = json!(url(
            sh,
            &format!("/users/delta?$skiptoken={}", query_escape(&encode(&next)))
        ));
    } else {
        let link = State {
            since: state.upto,
            upto: state.upto,
            after: None,
            initial: false,
            select: state.select,
            issued: now_unix(),
            serial,
        };
        body["@odata.deltaLink"] = json!(url(
            sh,
            &format!("/users/delta?$deltatoken={}", query_escape(&encode(&link)))
        ));
    }
    body["value"] = Value::Array(entries.into_iter().map(|e| e.1).collect());
    Ok(Answer::ok(body))
}
