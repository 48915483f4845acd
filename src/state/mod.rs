//! state: the SQLite state store (through sqlx, schema in `migrations/`).
//!
//! It remembers which tenant objects ldap2exo manages and what it last applied to them, the
//! runs, a journal of every tenant action, and the quarantined LDAP entries. The plan diffs
//! LDAP against this view; apply writes each outcome here as soon as it is known.

mod chunked;
mod ldap_sync;
pub mod lock;
mod migration;
mod plan_base;
mod quiet_plan;
mod tenant_sync;

pub use ldap_sync::{LdapSyncCommit, LdapSyncMark};
pub use migration::{MigrationPerson, MigrationStage};
pub use plan_base::{BaseMark, BaseTotals, BaseWrite};
pub use quiet_plan::QuietPlan;
pub use tenant_sync::{TenantSyncCommit, TenantSyncMark};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, FromRow, SqlitePool};

use crate::desired::{Kind, Quarantined};
use crate::ids::Anchor;
use crate::plan::Fields;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot open state store {path}: {source}")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("cannot migrate state store {path}: {source}")]
    Migrate {
        path: PathBuf,
        source: sqlx::migrate::MigrateError,
    },
    #[error("state store query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("state store row for anchor {anchor} is corrupt: {message}")]
    Corrupt { anchor: String, message: String },
    /// A chunk of rows did not decode ([`chunked`]): a bug, not the data.
    #[error("state store table {table} could not be read: {message}")]
    Chunk {
        table: &'static str,
        message: String,
    },
    /// The directory of `state.path` does not exist: a configuration problem (a mistyped
    /// path, or an install that did not create it), never created behind the operator's back.
    #[error(
        "the directory {dir} of the state store {path} does not exist: create it (writable by the user ldap2exo runs as) or fix state.path"
    )]
    NoDirectory { dir: PathBuf, path: PathBuf },
    /// `state.path` names a directory, not the database file in it.
    #[error("state.path {path} is a directory: name the database file in it, e.g. {path}/state.db")]
    IsDirectory { path: PathBuf },
    /// A read-only open found no database file.
    #[error(
        "there is no state store at {path}: ldap2exo has not run with this state.path yet (or state.path is wrong)"
    )]
    Missing { path: PathBuf },
    /// A read-only open found a schema this binary does not read.
    #[error("state store {path}: {message}")]
    Schema { path: PathBuf, message: String },
}

impl StateError {
    /// A problem of the configuration (where `state.path` points), not of the store itself.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            StateError::NoDirectory { .. }
                | StateError::IsDirectory { .. }
                | StateError::Missing { .. }
        )
    }
}

/// The directory a state store at `path` lives in (`.` for a bare file name).
pub fn directory(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Fails with [`StateError::NoDirectory`] when the directory of `path` is missing.
/// Also refuses a `path` that is itself a directory ([`StateError::IsDirectory`]).
pub fn require_directory(path: &Path) -> Result<(), StateError> {
    if path.is_dir() {
        return Err(StateError::IsDirectory {
            path: path.to_owned(),
        });
    }
    let dir = directory(path);
    if dir.is_dir() {
        Ok(())
    } else {
        Err(StateError::NoDirectory {
            dir,
            path: path.to_owned(),
        })
    }
}

/// Lifecycle of a managed object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Active,
    Disabled,
    Deleted,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Active => "active",
            Stage::Disabled => "disabled",
            Stage::Deleted => "deleted",
        }
    }
}

impl FromStr for Stage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Stage::Active),
            "disabled" => Ok(Stage::Disabled),
            "deleted" => Ok(Stage::Deleted),
            other => Err(format!("unknown stage `{other}`")),
        }
    }
}

fn parse_kind(s: &str) -> Result<Kind, String> {
    match s {
        "mail_user" => Ok(Kind::MailUser),
        "mailbox" => Ok(Kind::Mailbox),
        other => Err(format!("unknown kind `{other}`")),
    }
}

/// A tenant object ldap2exo manages, as last applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ManagedObject {
    pub anchor: Anchor,
    pub kind: Kind,
    pub uid: String,
    pub dn: String,
    pub tenant_object_id: Option<String>,
    /// The values last applied, as in `Recipient::fields()`.
    pub attributes: Fields,
    pub stage: Stage,
    pub created_at: i64,
    pub updated_at: i64,
    pub disabled_at: Option<i64>,
    pub delete_due_at: Option<i64>,
    pub deleted_at: Option<i64>,
}

#[derive(FromRow)]
struct ObjectRow {
    anchor: String,
    kind: String,
    uid: String,
    dn: String,
    tenant_object_id: Option<String>,
    attributes: String,
    stage: String,
    created_at: i64,
    updated_at: i64,
    disabled_at: Option<i64>,
    delete_due_at: Option<i64>,
    deleted_at: Option<i64>,
}

impl ObjectRow {
    /// The columns [`ObjectRow::decoded`] takes, in its order.
    const COLUMNS: [&'static str; 12] = [
        "anchor",
        "kind",
        "uid",
        "dn",
        "tenant_object_id",
        "attributes",
        "stage",
        "created_at",
        "updated_at",
        "disabled_at",
        "delete_due_at",
        "deleted_at",
    ];

    /// The row from the values of [`ObjectRow::COLUMNS`] as [`chunked::each_row`] gives them.
    fn decoded(v: &[Option<&str>]) -> Result<ObjectRow, StateError> {
        let anchor = v[0].unwrap_or_default().to_owned();
        let text = |i: usize| v[i].unwrap_or_default().to_owned();
        let number = |i: usize| -> Result<Option<i64>, StateError> {
            v[i].map(|n| {
                n.parse().map_err(|_| StateError::Corrupt {
                    anchor: anchor.clone(),
                    message: format!("{} is not a number: {n:?}", Self::COLUMNS[i]),
                })
            })
            .transpose()
        };
        let required = |i: usize| -> Result<i64, StateError> {
            number(i)?.ok_or_else(|| StateError::Corrupt {
                anchor: anchor.clone(),
                message: format!("{} is missing", Self::COLUMNS[i]),
            })
        };
        Ok(ObjectRow {
            kind: text(1),
            uid: text(2),
            dn: text(3),
            tenant_object_id: v[4].map(str::to_owned),
            attributes: text(5),
            stage: text(6),
            created_at: required(7)?,
            updated_at: required(8)?,
            disabled_at: number(9)?,
            delete_due_at: number(10)?,
            deleted_at: number(11)?,
            anchor,
        })
    }
}

impl TryFrom<ObjectRow> for ManagedObject {
    type Error = StateError;
    fn try_from(r: ObjectRow) -> Result<Self, Self::Error> {
        let corrupt = |message: String| StateError::Corrupt {
            anchor: r.anchor.clone(),
            message,
        };
        Ok(ManagedObject {
            anchor: Anchor::new(&r.anchor).map_err(|e| corrupt(e.to_string()))?,
            kind: parse_kind(&r.kind).map_err(corrupt)?,
            stage: r.stage.parse().map_err(corrupt)?,
            attributes: serde_json::from_str(&r.attributes)
                .map_err(|e| corrupt(format!("attributes cannot be read: {e}")))?,
            uid: r.uid,
            dn: r.dn,
            tenant_object_id: r.tenant_object_id,
            created_at: r.created_at,
            updated_at: r.updated_at,
            disabled_at: r.disabled_at,
            delete_due_at: r.delete_due_at,
            deleted_at: r.deleted_at,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    DryRun,
    Plan,
    Apply,
}

impl RunMode {
    fn as_str(self) -> &'static str {
        match self {
            RunMode::DryRun => "dry_run",
            RunMode::Plan => "plan",
            RunMode::Apply => "apply",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunScope {
    Full,
    Only,
}

impl RunScope {
    fn as_str(self) -> &'static str {
        match self {
            RunScope::Full => "full",
            RunScope::Only => "only",
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Partial,
    Failed,
    Blocked,
    /// Stopped by SIGTERM/SIGINT before every action ran, or its process died mid-run (found
    /// by the next run that holds the run lock). The next run does what is left.
    Interrupted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Partial => "partial",
            Outcome::Failed => "failed",
            Outcome::Blocked => "blocked",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// What is recorded when a run finishes.
#[derive(Debug, Clone)]
pub struct RunEnd {
    pub outcome: Outcome,
    pub source_count: Option<u64>,
    pub verdict: Option<&'static str>,
    pub summary: Option<Value>,
    /// The applied outcome counts (`done`, `pending`, `skipped`, `conflict`, `failed`) of a
    /// real run; `None` for dry runs, plans and runs that failed before applying.
    pub results: Option<Value>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, FromRow)]
pub struct RunRecord {
    pub id: i64,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub mode: String,
    pub scope: String,
    pub source_count: Option<i64>,
    pub verdict: Option<String>,
    pub summary: Option<String>,
    pub outcome: String,
    pub error: Option<String>,
    /// What started the run (`sync`, `sync --dry-run`, `plan`, `apply`, `daemon`); `None` for
    /// runs recorded before schema 0004.
    pub command: Option<String>,
    /// JSON object of applied outcome counts, see [`RunEnd::results`].
    pub results: Option<String>,
}

#[derive(Debug, Clone, Serialize, FromRow)]
pub struct QuarantineRecord {
    pub dn: String,
    pub anchor: Option<String>,
    pub uid: Option<String>,
    pub field: String,
    pub reason: String,
    pub first_seen_at: i64,
    pub last_seen_at: i64,
}

#[derive(Debug, Clone, Serialize, FromRow)]
pub struct JournalRecord {
    pub id: i64,
    pub run_id: i64,
    pub anchor: String,
    pub op: String,
    pub step: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub result: String,
    pub detail: Option<String>,
}

/// An approval of removals recorded with its run (see `migrations/0006_approvals.sql`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalRecord {
    pub run_id: i64,
    /// N of `--max-deletes N` or `--approve-removals N`.
    pub removals: u32,
    /// S of `--scope S`; `None` for `--max-deletes` (every removal of the run).
    pub scope: Option<String>,
    /// The login that ran it.
    pub approved_by: String,
    /// The uids of the removals it let through.
    pub let_through: Vec<String>,
    pub recorded_at: i64,
}

/// What [`Store::counts`] answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub active: i64,
    /// Leavers waiting for their grace period: the pending deletions.
    pub disabled: i64,
    pub deleted: i64,
    pub quarantined: i64,
}

/// A notification mailed, or held back by the rate limit, or that could not be sent.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct NotificationRecord {
    pub id: i64,
    pub run_id: Option<i64>,
    /// When it was attempted.
    pub sent_at: i64,
    /// `failed`, `partial`, `blocked`, `interrupted` or `recovered`.
    pub kind: String,
    /// `sent`, `suppressed` or `failed`.
    pub result: String,
    pub detail: Option<String>,
}

/// The SQLite state store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    /// The directory must exist: it is never created here.
    pub async fn open(path: &Path) -> Result<Self, StateError> {
        require_directory(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            // WAL plus synchronous=FULL: a journal row that was committed survives a crash
            // or power cut, which is the whole point of writing it as each action completes.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Journal writes queue for SQLite's one writer; with synchronous=FULL each waits
            // for an fsync. On a disk busy with other work, 10 s was once not enough during a
            // 10,000-person provisioning (bench-incremental beside two builds and a benchmark:
            // "database is locked" ended the run); a minute is.
            .busy_timeout(std::time::Duration::from_secs(60))
            // sqlx logs a statement slower than a second at WARN: streaming the incremental
            // reads' 100,000-row copies always is, and nobody has anything to do about it.
            .disable_statement_logging();
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| StateError::Open {
                path: path.to_owned(),
                source,
            })?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|source| StateError::Migrate {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self { pool })
    }

    /// Opens an existing database at `path` for reading only (`status`): nothing is created
    /// or migrated, so a wrong `state.path` is reported instead of becoming an empty store,
    /// and a store of another schema version is refused with a clear message.
    pub async fn open_read_only(path: &Path) -> Result<Self, StateError> {
        require_directory(path)?;
        if !path.exists() {
            return Err(StateError::Missing {
                path: path.to_owned(),
            });
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .create_if_missing(false)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|source| StateError::Open {
                path: path.to_owned(),
                source,
            })?;
        let store = Self { pool };
        if let Err(e) = store.check_schema(path).await {
            store.close().await;
            return Err(e);
        }
        Ok(store)
    }

    /// Compares the schema version of the store with the migrations of this binary.
    async fn check_schema(&self, path: &Path) -> Result<(), StateError> {
        let schema = |message: String| StateError::Schema {
            path: path.to_owned(),
            message,
        };
        let is_store: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(|source| StateError::Open {
            path: path.to_owned(),
            source,
        })?;
        if is_store.is_none() {
            return Err(schema(
                "not an ldap2exo state store (it has no schema version)".into(),
            ));
        }
        let found: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success = 1")
                .fetch_one(&self.pool)
                .await?;
        let found = found.unwrap_or(0);
        let ours = schema_version();
        if found < ours {
            return Err(schema(format!(
                "schema version {found} is older than this ldap2exo's {ours}: any sync, plan or dry run upgrades it"
            )));
        }
        if found > ours {
            return Err(schema(format!(
                "schema version {found} was written by a newer ldap2exo (this one reads {ours}): use that version"
            )));
        }
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Every managed object, deleted ones included, ordered by anchor.
    pub async fn objects(&self) -> Result<Vec<ManagedObject>, StateError> {
        let mut objects = Vec::new();
        let read = chunked::each_row(
            &self.pool,
            "managed_objects",
            "anchor",
            &ObjectRow::COLUMNS,
            |row| {
                ObjectRow::decoded(row)
                    .and_then(ManagedObject::try_from)
                    .map(|o| objects.push(o))
            },
        )
        .await?;
        read.map(|()| objects)
    }

    /// The objects of `anchors` that have a row, deleted ones included, ordered by anchor.
    pub async fn objects_of(
        &self,
        anchors: &BTreeSet<Anchor>,
    ) -> Result<Vec<ManagedObject>, StateError> {
        let anchors: Vec<&str> = anchors.iter().map(Anchor::as_str).collect();
        let mut objects = Vec::new();
        for chunk in anchors.chunks(500) {
            let rows: Vec<ObjectRow> = sqlx::query_as(
                "SELECT * FROM managed_objects WHERE anchor IN (SELECT value FROM json_each(?))",
            )
            .bind(serde_json::to_string(chunk).expect("strings serialise"))
            .fetch_all(&self.pool)
            .await?;
            for row in rows {
                objects.push(ManagedObject::try_from(row)?);
            }
        }
        objects.sort_by(|a, b| a.anchor.cmp(&b.anchor));
        Ok(objects)
    }

    pub async fn object(&self, anchor: &Anchor) -> Result<Option<ManagedObject>, StateError> {
        let row: Option<ObjectRow> =
            sqlx::query_as("SELECT * FROM managed_objects WHERE anchor = ?")
                .bind(anchor.as_str())
                .fetch_optional(&self.pool)
                .await?;
        row.map(ManagedObject::try_from).transpose()
    }

    /// Inserts or replaces the row for `obj.anchor`.
    pub async fn upsert_object(&self, obj: &ManagedObject) -> Result<(), StateError> {
        upsert(&self.pool, obj).await
    }

    /// Moves the row of `from` to `obj.anchor` (a re-anchor: the person's LDAP anchor
    /// changed and the tenant object was stamped with the new one), in one transaction, so
    /// that no crash leaves the object under both anchors or under neither.
    pub async fn move_object(&self, from: &Anchor, obj: &ManagedObject) -> Result<(), StateError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM managed_objects WHERE anchor = ?")
            .bind(from.as_str())
            .execute(&mut *tx)
            .await?;
        upsert(&mut *tx, obj).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The source size of the last full run that applied successfully: what the shrink
    /// guard compares against. Dry runs, plans and `--only` runs never become the baseline.
    pub async fn baseline(&self) -> Result<Option<u64>, StateError> {
        let count: Option<i64> = sqlx::query_scalar(
            "SELECT source_count FROM runs
             WHERE mode = 'apply' AND scope = 'full' AND outcome IN ('ok', 'partial')
                   AND source_count IS NOT NULL
             ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?
        .flatten();
        Ok(count.map(|c| c.max(0) as u64))
    }

    /// Records a run as started by `command` (`sync`, `sync --dry-run`, `plan`, `apply`,
    /// `daemon`); returns its id.
    pub async fn begin_run(
        &self,
        mode: RunMode,
        scope: RunScope,
        command: &str,
        now: i64,
    ) -> Result<i64, StateError> {
        let id =
            sqlx::query("INSERT INTO runs (started_at, mode, scope, command) VALUES (?, ?, ?, ?)")
                .bind(now)
                .bind(mode.as_str())
                .bind(scope.as_str())
                .bind(command)
                .execute(&self.pool)
                .await?
                .last_insert_rowid();
        Ok(id)
    }

    pub async fn finish_run(&self, id: i64, end: &RunEnd, now: i64) -> Result<(), StateError> {
        sqlx::query(
            "UPDATE runs SET finished_at = ?, outcome = ?, source_count = ?, verdict = ?, summary = ?,
                 results = ?, error = ?
             WHERE id = ?",
        )
        .bind(now)
        .bind(end.outcome.as_str())
        .bind(end.source_count.map(|c| c as i64))
        .bind(end.verdict)
        .bind(end.summary.as_ref().map(Value::to_string))
        .bind(end.results.as_ref().map(Value::to_string))
        .bind(&end.error)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records which reviewed plan run `id` applies (`apply plan.json`): the digest of its
    /// actions, see [`crate::plan::digest`].
    pub async fn set_run_plan(&self, id: i64, digest: &str) -> Result<(), StateError> {
        sqlx::query("UPDATE runs SET plan_digest = ? WHERE id = ?")
            .bind(digest)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The actions (anchor, op) with a step journaled `ok` by a run that applied the plan of
    /// `digest`, each with the last such run: what an interrupted apply of that plan did.
    pub async fn finished_by_plan(
        &self,
        digest: &str,
    ) -> Result<Vec<(Anchor, String, i64)>, StateError> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT j.anchor, j.op, MAX(j.run_id) FROM journal j JOIN runs r ON r.id = j.run_id
             WHERE r.plan_digest = ? AND j.result = 'ok'
             GROUP BY j.anchor, j.op",
        )
        .bind(digest)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(a, op, run)| Some((Anchor::new(&a).ok()?, op, run)))
            .collect())
    }

    /// Marks runs still `running` as `interrupted`: their process died (crash, `kill -9`,
    /// power cut) without finishing them. Only the holder of the run lock may call this, since
    /// only then is no other process running one. Returns the ids it marked.
    /// When the process died is not known, so `finished_at` stays empty.
    pub async fn mark_abandoned_runs(&self) -> Result<Vec<i64>, StateError> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "UPDATE runs SET outcome = 'interrupted',
                 error = 'the process ended without finishing the run (crash or kill); the next run does what is left'
             WHERE outcome = 'running' RETURNING id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    /// When the last real run that succeeded (`ok` or `partial`) finished: what the daemon's
    /// `ldap2exo_last_success_timestamp_seconds` starts from.
    pub async fn last_success(&self) -> Result<Option<i64>, StateError> {
        Ok(sqlx::query_scalar(
            "SELECT finished_at FROM runs
             WHERE mode = 'apply' AND outcome IN ('ok', 'partial') AND finished_at IS NOT NULL
             ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Answers when the database does: what `/readyz` asks.
    pub async fn ping(&self) -> Result<(), StateError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The end of the last real run (`sync`, `apply` or a daemon tick) that finished: when,
    /// and whether it succeeded (`ok` or `partial`). What a starting daemon's `/readyz`
    /// judges until its own first run.
    pub async fn last_real_run(&self) -> Result<Option<(i64, bool)>, StateError> {
        // A run a signal stopped says nothing about health and is passed over; one left
        // `running` (or marked interrupted later) by a dead process counts as a failure.
        let row: Option<(i64, String)> = sqlx::query_as(
            "SELECT COALESCE(finished_at, started_at), outcome FROM runs
             WHERE mode = 'apply'
               AND NOT (outcome = 'interrupted' AND error LIKE 'stopped (SIGTERM/SIGINT)%')
             ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(at, outcome)| (at, matches!(outcome.as_str(), "ok" | "partial"))))
    }

    /// Managed objects per stage and the number of quarantined entries, counted by SQLite
    /// (the daemon's gauges: no row is loaded).
    pub async fn counts(&self) -> Result<Counts, StateError> {
        let stages: Vec<(String, i64)> =
            sqlx::query_as("SELECT stage, COUNT(*) FROM managed_objects GROUP BY stage")
                .fetch_all(&self.pool)
                .await?;
        let quarantined: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM quarantine")
            .fetch_one(&self.pool)
            .await?;
        let of = |s: &str| stages.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
        Ok(Counts {
            active: of("active"),
            disabled: of("disabled"),
            deleted: of("deleted"),
            quarantined,
        })
    }

    /// When the last full run that applied with outcome `ok` finished: what monitoring
    /// watches. Dry runs, plans and `--only` runs do not count.
    pub async fn last_successful_full_sync(&self) -> Result<Option<i64>, StateError> {
        Ok(sqlx::query_scalar(
            "SELECT COALESCE(finished_at, started_at) FROM runs
             WHERE mode = 'apply' AND scope = 'full' AND outcome = 'ok'
             ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Removals (disable and delete actions) applied in the 24 hours and the 7 days up to
    /// `now`: each person's disable and each person's delete counted once, when one of its
    /// steps finished `ok` in the window (a partly applied removal counts: the cap errs on the
    /// side of fewer removals). Once, not once per run: a mailbox leaver whose hide Exchange
    /// defers is planned and journaled again by every run until it is hidden.
    pub async fn recent_removals(
        &self,
        now: i64,
    ) -> Result<crate::plan::RecentRemovals, StateError> {
        let (day, week): (i64, i64) = sqlx::query_as(
            "SELECT
                 COUNT(DISTINCT CASE WHEN finished_at > ?1 THEN op || ' ' || anchor END),
                 COUNT(DISTINCT op || ' ' || anchor)
             FROM journal
             WHERE op IN ('disable', 'delete') AND result = 'ok'
               AND finished_at > ?2 AND finished_at <= ?3",
        )
        .bind(now - 86_400)
        .bind(now - 7 * 86_400)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(crate::plan::RecentRemovals {
            last_24h: day.max(0) as u64,
            last_7d: week.max(0) as u64,
        })
    }

    /// Records the approval a run carried.
    pub async fn record_approval(&self, a: &ApprovalRecord) -> Result<(), StateError> {
        sqlx::query(
            "INSERT OR REPLACE INTO approvals (run_id, removals, scope, approved_by, let_through, recorded_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(a.run_id)
        .bind(i64::from(a.removals))
        .bind(&a.scope)
        .bind(&a.approved_by)
        .bind(serde_json::to_string(&a.let_through).expect("uids serialise"))
        .bind(a.recorded_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The approvals of runs from `first_run` on, by run id.
    pub async fn approvals_since(
        &self,
        first_run: i64,
    ) -> Result<BTreeMap<i64, ApprovalRecord>, StateError> {
        let rows: Vec<(i64, i64, Option<String>, String, String, i64)> = sqlx::query_as(
            "SELECT run_id, removals, scope, approved_by, let_through, recorded_at
             FROM approvals WHERE run_id >= ? ORDER BY run_id",
        )
        .bind(first_run)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(
                |(run_id, removals, scope, approved_by, let_through, recorded_at)| {
                    let let_through =
                        serde_json::from_str(&let_through).map_err(|e| StateError::Corrupt {
                            anchor: format!("approval of run {run_id}"),
                            message: format!("let_through: {e}"),
                        })?;
                    Ok((
                        run_id,
                        ApprovalRecord {
                            run_id,
                            removals: removals.clamp(0, i64::from(u32::MAX)) as u32,
                            scope,
                            approved_by,
                            let_through,
                            recorded_at,
                        },
                    ))
                },
            )
            .collect()
    }

    /// The most recent runs, newest first.
    pub async fn runs(&self, limit: u32) -> Result<Vec<RunRecord>, StateError> {
        Ok(
            sqlx::query_as("SELECT * FROM runs ORDER BY id DESC LIMIT ?")
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Replaces the quarantine list with what the latest full read found, keeping when each
    /// entry was first seen so an operator can tell a new problem from an old one.
    pub async fn replace_quarantine(
        &self,
        entries: &[Quarantined],
        now: i64,
    ) -> Result<(), StateError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("CREATE TEMP TABLE IF NOT EXISTS seen (dn TEXT PRIMARY KEY)")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM seen").execute(&mut *tx).await?;
        for q in entries {
            sqlx::query(
                "INSERT INTO quarantine (dn, anchor, uid, field, reason, first_seen_at, last_seen_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (dn) DO UPDATE SET anchor = excluded.anchor, uid = excluded.uid,
                     field = excluded.field, reason = excluded.reason, last_seen_at = excluded.last_seen_at",
            )
            .bind(&q.dn)
            .bind(q.anchor.as_ref().map(Anchor::as_str))
            .bind(&q.uid)
            .bind(&q.field)
            .bind(&q.reason)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query("INSERT OR IGNORE INTO seen (dn) VALUES (?)")
                .bind(&q.dn)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM quarantine WHERE dn NOT IN (SELECT dn FROM seen)")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DROP TABLE seen").execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn quarantine(&self) -> Result<Vec<QuarantineRecord>, StateError> {
        Ok(sqlx::query_as("SELECT * FROM quarantine ORDER BY dn")
            .fetch_all(&self.pool)
            .await?)
    }

    /// Records that a tenant action step started; returns the journal row id.
    pub async fn journal_start(
        &self,
        run_id: i64,
        anchor: &Anchor,
        op: &str,
        step: &str,
        now: i64,
    ) -> Result<i64, StateError> {
        let id = sqlx::query(
            "INSERT INTO journal (run_id, anchor, op, step, started_at, result) VALUES (?, ?, ?, ?, ?, 'pending')",
        )
        .bind(run_id)
        .bind(anchor.as_str())
        .bind(op)
        .bind(step)
        .bind(now)
        .execute(&self.pool)
        .await?
        .last_insert_rowid();
        Ok(id)
    }

    /// Records how a journal step ended (`ok`, `failed` or `skipped`).
    pub async fn journal_finish(
        &self,
        id: i64,
        result: &str,
        detail: Option<&str>,
        now: i64,
    ) -> Result<(), StateError> {
        sqlx::query("UPDATE journal SET result = ?, detail = ?, finished_at = ? WHERE id = ?")
            .bind(result)
            .bind(detail)
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Anchors with a create step journaled as sent (`pending`, `unknown` or `ok`): their
    /// object may exist in the tenant without our stamp yet, and apply looks for it first.
    pub async fn journaled_creates(&self) -> Result<BTreeSet<Anchor>, StateError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT anchor FROM journal
             WHERE (step LIKE 'New-MailUser%' OR step LIKE 'POST /users%')
               AND result IN ('pending', 'unknown', 'ok')",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|a| Anchor::new(&a).ok())
            .collect())
    }

    /// Records a notification attempt; returns its row id.
    pub async fn record_notification(
        &self,
        run_id: Option<i64>,
        kind: &str,
        result: &str,
        detail: Option<&str>,
        now: i64,
    ) -> Result<i64, StateError> {
        let id = sqlx::query(
            "INSERT INTO notifications (run_id, sent_at, kind, result, detail) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(run_id)
        .bind(now)
        .bind(kind)
        .bind(result)
        .bind(detail)
        .execute(&self.pool)
        .await?
        .last_insert_rowid();
        Ok(id)
    }

    /// The last notification actually sent: of `kind`, or of any kind when `None`.
    pub async fn last_notification_sent(
        &self,
        kind: Option<&str>,
    ) -> Result<Option<NotificationRecord>, StateError> {
        Ok(sqlx::query_as(
            "SELECT * FROM notifications WHERE result = 'sent' AND (?1 IS NULL OR kind = ?1)
             ORDER BY id DESC LIMIT 1",
        )
        .bind(kind)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The most recent notification attempts, newest first.
    pub async fn notifications(&self, limit: u32) -> Result<Vec<NotificationRecord>, StateError> {
        Ok(
            sqlx::query_as("SELECT * FROM notifications ORDER BY id DESC LIMIT ?")
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// How the last finished real run (mode `apply`) before run `id` ended, e.g. `ok`.
    pub async fn previous_outcome(&self, id: i64) -> Result<Option<String>, StateError> {
        Ok(sqlx::query_scalar(
            "SELECT outcome FROM runs WHERE id < ? AND mode = 'apply' AND outcome != 'running'
             ORDER BY id DESC LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn journal(&self, anchor: &Anchor) -> Result<Vec<JournalRecord>, StateError> {
        Ok(
            sqlx::query_as("SELECT * FROM journal WHERE anchor = ? ORDER BY id")
                .bind(anchor.as_str())
                .fetch_all(&self.pool)
                .await?,
        )
    }
}

impl Store {
    /// Hands each row of `table` to `each` as its `key` and `value` columns, as text, in key
    /// order, read a chunk at a time ([`chunked`]; a 100,000-row table is never in memory
    /// twice). Stops at the first error `each` returns.
    pub(super) async fn each_row<E>(
        &self,
        table: &'static str,
        key: &'static str,
        value: &'static str,
        mut each: impl FnMut(&str, &str) -> Result<(), E>,
    ) -> Result<Result<(), E>, StateError> {
        chunked::each_row(&self.pool, table, key, &[key, value], |row| {
            each(row[0].unwrap_or_default(), row[1].unwrap_or_default())
        })
        .await
    }
}

/// In `tx`, deletes the rows of `table` whose `key` is in `gone`, then inserts or replaces
/// `rows` as `(key, value)`. For the incremental reads' stored copies (`ldap_entries`,
/// `tenant_users`, `tenant_recipients`); the names are this crate's own, never input.
pub(super) async fn replace_rows(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    table: &'static str,
    key: &'static str,
    value: &'static str,
    gone: &[String],
    rows: &[(String, String)],
) -> Result<(), StateError> {
    let delete = format!("DELETE FROM {table} WHERE {key} = ?1");
    for k in gone {
        sqlx::query(sqlx::AssertSqlSafe(delete.as_str()))
            .bind(k)
            .execute(&mut **tx)
            .await?;
    }
    let upsert = format!(
        "INSERT INTO {table} ({key}, {value}) VALUES (?1, ?2) ON CONFLICT ({key}) DO UPDATE SET {value} = ?2"
    );
    for (k, v) in rows {
        sqlx::query(sqlx::AssertSqlSafe(upsert.as_str()))
            .bind(k)
            .bind(v)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The `(key, value)` rows `sql` selects for `keys`, 500 keys a query, in key order. `sql`
/// reads the keys as a JSON array `?` (`IN (SELECT value FROM json_each(?))`).
pub(super) async fn pairs_of(
    pool: &sqlx::SqlitePool,
    sql: &'static str,
    keys: &[&str],
) -> Result<Vec<(String, String)>, StateError> {
    let mut rows = Vec::new();
    for chunk in keys.chunks(500) {
        let found = sqlx::query(sql)
            .bind(serde_json::to_string(chunk).expect("strings serialise"))
            .fetch_all(pool)
            .await?;
        rows.extend(
            found
                .iter()
                .map(|r| (sqlx::Row::get(r, 0), sqlx::Row::get(r, 1))),
        );
    }
    rows.sort();
    Ok(rows)
}

/// The schema version this binary writes: its newest migration.
pub fn schema_version() -> i64 {
    sqlx::migrate!("./migrations")
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

/// Inserts or replaces the row for `obj.anchor`, on the pool or inside a transaction.
async fn upsert<'e, E>(executor: E, obj: &ManagedObject) -> Result<(), StateError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let attributes =
        serde_json::to_string(&obj.attributes).expect("a map of JSON values serialises");
    sqlx::query(
        "INSERT INTO managed_objects (anchor, kind, uid, dn, tenant_object_id, attributes, stage,
             created_at, updated_at, disabled_at, delete_due_at, deleted_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (anchor) DO UPDATE SET
             kind = excluded.kind, uid = excluded.uid, dn = excluded.dn,
             tenant_object_id = excluded.tenant_object_id, attributes = excluded.attributes,
             stage = excluded.stage, updated_at = excluded.updated_at,
             disabled_at = excluded.disabled_at, delete_due_at = excluded.delete_due_at,
             deleted_at = excluded.deleted_at",
    )
    .bind(obj.anchor.as_str())
    .bind(obj.kind.as_str())
    .bind(&obj.uid)
    .bind(&obj.dn)
    .bind(&obj.tenant_object_id)
    .bind(attributes)
    .bind(obj.stage.as_str())
    .bind(obj.created_at)
    .bind(obj.updated_at)
    .bind(obj.disabled_at)
    .bind(obj.delete_due_at)
    .bind(obj.deleted_at)
    .execute(executor)
    .await?;
    Ok(())
}
