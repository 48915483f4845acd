//! Inspection and control for tests, in process (called by [`crate::Emulator`]) and over HTTP
//! under `/_emulator/` so a separate emulator process can be driven too. These endpoints need
//! no token and are exempt from faults and counters: they are the test's side door, not part
//! of the emulated services.
//!
//! | method and path | effect |
//! |---|---|
//! | `GET /_emulator/health` | `{"ok":true}` |
//! | `GET /_emulator/ca.pem` | the CA certificate |
//! | `GET /_emulator/state` | the whole tenant ([`crate::StateDump`]) |
//! | `POST /_emulator/seed` | load a [`crate::Seed`]; answers the user ids |
//! | `GET /_emulator/counters`, `POST /_emulator/counters/reset` | request counters |
//! | `GET /_emulator/faults`, `PUT /_emulator/faults` | the [`crate::FaultConfig`] |
//! | `POST /_emulator/tokens/expire` | every issued access token expires now |
//! | `POST /_emulator/delta/expire` | every delta token issued so far expires now |
//! | `POST /_emulator/state-dump` | write the state to the configured dump file |

use crate::config::Seed;
use crate::faults::FaultConfig;
use crate::shared::{Shared, lock};
use crate::util::now_unix;
use crate::wire::{Req, Resp};
use serde_json::{Value, json};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Faults(#[from] crate::faults::FaultError),
    #[error("cannot write the state dump: {0}")]
    Io(#[from] std::io::Error),
    #[error("no state dump file configured (start with --state-dump FILE)")]
    NoDumpPath,
    #[error("unknown admin endpoint {0} {1}")]
    NoRoute(String, String),
}

impl AdminError {
    fn status(&self) -> u16 {
        match self {
            AdminError::NoRoute(..) => 404,
            AdminError::NoDumpPath => 409,
            AdminError::Io(_) => 500,
            _ => 400,
        }
    }
}

/// Loads seed objects; a tenant in the seed replaces the tenant configuration.
pub fn apply_seed(sh: &Shared, seed: Seed) -> Result<Vec<String>, AdminError> {
    let mut store = lock(&sh.store);
    if let Some(t) = seed.tenant {
        t.validate()?;
        store.tenant = t;
    }
    let ids = seed.users.into_iter().map(|u| store.insert(u)).collect();
    for (list, kind) in [
        (
            seed.groups,
            crate::store::MailObjectKind::MailUniversalDistributionGroup,
        ),
        (seed.contacts, crate::store::MailObjectKind::MailContact),
    ] {
        for mut o in list {
            o.kind = kind;
            if o.id.is_empty() {
                o.id = store.rng.uuid();
            }
            if o.guid.is_empty() {
                o.guid = store.rng.uuid();
            }
            if o.alias.is_empty() {
                o.alias = o.name.clone();
            }
            if o.created_unix == 0 {
                o.created_unix = now_unix();
            }
            if o.when_changed_ms == 0 {
                o.when_changed_ms = o.created_unix * 1000;
            }
            store.mail_objects.push(o);
        }
    }
    store.inbound_connectors.extend(seed.inbound_connectors);
    store.outbound_connectors.extend(seed.outbound_connectors);
    Ok(ids)
}

pub fn set_faults(sh: &Shared, f: FaultConfig) -> Result<(), AdminError> {
    f.validate()?;
    lock(&sh.faults).set(f);
    Ok(())
}

pub fn expire_delta_tokens(sh: &Shared) {
    let mut store = lock(&sh.store);
    store.delta_epoch = store.delta_issued + 1;
}

pub fn dump_state(sh: &Shared, path: &Path) -> Result<(), AdminError> {
    let dump = lock(&sh.store).dump();
    let text = serde_json::to_vec_pretty(&dump)?;
    // Write then rename, so a reader never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

pub fn handle(sh: &Shared, req: &Req) -> Resp {
    match route(sh, req) {
        Ok(r) => r,
        Err(e) => Resp::json(e.status(), &json!({"error": e.to_string()})),
    }
}

fn route(sh: &Shared, req: &Req) -> Result<Resp, AdminError> {
    let path = req.path.trim_end_matches('/');
    Ok(match (req.method.as_str(), path) {
        ("GET", "/_emulator/health") => Resp::json(200, &json!({"ok": true})),
        ("GET", "/_emulator/ca.pem") => {
            Resp::text(200, "application/x-pem-file", sh.ca_pem.clone())
        }
        ("GET", "/_emulator/state") => {
            Resp::json(200, &serde_json::to_value(lock(&sh.store).dump())?)
        }
        ("POST", "/_emulator/seed") => {
            let seed: Seed = serde_json::from_slice(&req.body)?;
            let ids = apply_seed(sh, seed)?;
            Resp::json(200, &json!({"ids": ids}))
        }
        ("GET", "/_emulator/counters") => {
            Resp::json(200, &serde_json::to_value(lock(&sh.counters).clone())?)
        }
        ("POST", "/_emulator/counters/reset") => {
            *lock(&sh.counters) = Default::default();
            Resp::empty(204)
        }
        ("GET", "/_emulator/faults") => {
            Resp::json(200, &serde_json::to_value(lock(&sh.faults).config.clone())?)
        }
        ("PUT" | "POST", "/_emulator/faults") => {
            set_faults(sh, serde_json::from_slice(&req.body)?)?;
            Resp::empty(204)
        }
        ("POST", "/_emulator/tokens/expire") => {
            lock(&sh.tokens).expire_all();
            Resp::empty(204)
        }
        ("POST", "/_emulator/delta/expire") => {
            expire_delta_tokens(sh);
            Resp::empty(204)
        }
        ("GET", "/_emulator/migration-csvs") => {
            // The only place the migration batches' CSVs (and their passwords) come out.
            let csvs: Vec<Value> = lock(&sh.store)
                .migration
                .received
                .iter()
                .map(|(batch, csv)| json!({"batch": batch, "csv": csv}))
                .collect();
            Resp::json(200, &Value::Array(csvs))
        }
        ("POST", "/_emulator/state-dump") => {
            let p = sh.state_dump_path.clone().ok_or(AdminError::NoDumpPath)?;
            dump_state(sh, &p)?;
            Resp::json(200, &json!({"path": p}))
        }
        (m, p) => return Err(AdminError::NoRoute(m.to_string(), p.to_string())),
    })
}
