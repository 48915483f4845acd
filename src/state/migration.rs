//! The IMAP migration cohort in the state store (`migration_people`, migration 0005): who
//! migrates, in which batch, and how far along. Sync reads it so that a migrating person is
//! planned as a mailbox forwarding to on-prem, not converted back (see `desired`).

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::FromRow;

use super::{StateError, Store};
use crate::ids::Anchor;

/// How far a person's migration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationStage {
    /// In the cohort: sync provisions the mailbox with the forwarding to on-prem.
    Started,
    /// In an Exchange Online migration batch.
    Batched,
    /// LDAP forwards into the tenant; the ordinary rule applies again.
    Cutover,
}

impl MigrationStage {
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationStage::Started => "started",
            MigrationStage::Batched => "batched",
            MigrationStage::Cutover => "cutover",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Started, Self::Batched, Self::Cutover]
            .into_iter()
            .find(|x| x.as_str() == s)
    }

    /// Before cutover: the person's mail still lives on-prem.
    pub fn is_migrating(self) -> bool {
        self != MigrationStage::Cutover
    }
}

/// One person of a migration cohort.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationPerson {
    pub anchor: Anchor,
    pub uid: String,
    /// The target mailbox's primary address (the CSV's `EmailAddress`).
    pub email: String,
    pub batch: Option<String>,
    pub stage: MigrationStage,
    /// Unix seconds.
    pub started_at: i64,
    pub updated_at: i64,
    pub cutover_at: Option<i64>,
}

#[derive(FromRow)]
struct Row {
    anchor: String,
    uid: String,
    email: String,
    batch: Option<String>,
    stage: String,
    started_at: i64,
    updated_at: i64,
    cutover_at: Option<i64>,
}

impl TryFrom<Row> for MigrationPerson {
    type Error = StateError;

    fn try_from(r: Row) -> Result<Self, StateError> {
        let corrupt = |message: String| StateError::Corrupt {
            anchor: r.anchor.clone(),
            message,
        };
        Ok(MigrationPerson {
            anchor: Anchor::new(&r.anchor).map_err(|e| corrupt(e.to_string()))?,
            stage: MigrationStage::parse(&r.stage)
                .ok_or_else(|| corrupt(format!("unknown migration stage `{}`", r.stage)))?,
            uid: r.uid,
            email: r.email,
            batch: r.batch,
            started_at: r.started_at,
            updated_at: r.updated_at,
            cutover_at: r.cutover_at,
        })
    }
}

impl Store {
    /// Every person ever put in a cohort, by anchor.
    pub async fn migration_people(&self) -> Result<BTreeMap<Anchor, MigrationPerson>, StateError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT anchor, uid, email, batch, stage, started_at, updated_at, cutover_at FROM migration_people ORDER BY uid",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| MigrationPerson::try_from(r).map(|p| (p.anchor.clone(), p)))
            .collect()
    }

    /// The anchors of people whose mail still lives on-prem while they migrate (stage
    /// `started` or `batched`). A store without the table (an older schema opened read-only)
    /// has nobody migrating.
    pub async fn migrating(&self) -> Result<BTreeMap<Anchor, String>, StateError> {
        Ok(self
            .migration_people()
            .await?
            .into_iter()
            .filter(|(_, p)| p.stage.is_migrating())
            .map(|(a, p)| (a, p.uid))
            .collect())
    }

    /// Puts a person in the cohort as `started`. Someone already in it keeps their stage and
    /// batch (a repeated `migrate start` continues where the last one stopped); someone
    /// who was cut over and is started again begins anew.
    pub async fn start_migration(
        &self,
        anchor: &Anchor,
        uid: &str,
        email: &str,
        now: i64,
    ) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO migration_people (anchor, uid, email, batch, stage, started_at, updated_at)
             VALUES (?1, ?2, ?3, NULL, 'started', ?4, ?4)
             ON CONFLICT (anchor) DO UPDATE SET uid = ?2, email = ?3, updated_at = ?4,
                 batch = CASE WHEN stage = 'cutover' THEN NULL ELSE batch END,
                 cutover_at = CASE WHEN stage = 'cutover' THEN NULL ELSE cutover_at END,
                 stage = CASE WHEN stage = 'cutover' THEN 'started' ELSE stage END",
        )
        .bind(anchor.as_str())
        .bind(uid)
        .bind(email)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records that `anchor` is in the migration batch `batch`.
    pub async fn set_migration_batch(
        &self,
        anchor: &Anchor,
        batch: &str,
        now: i64,
    ) -> Result<(), StateError> {
        sqlx::query(
            "UPDATE migration_people SET batch = ?2, stage = 'batched', updated_at = ?3 WHERE anchor = ?1",
        )
        .bind(anchor.as_str())
        .bind(batch)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records the cutover: LDAP now forwards `anchor` into the tenant.
    pub async fn mark_cutover(&self, anchor: &Anchor, now: i64) -> Result<(), StateError> {
        sqlx::query(
            "UPDATE migration_people SET stage = 'cutover', cutover_at = ?2, updated_at = ?2 WHERE anchor = ?1",
        )
        .bind(anchor.as_str())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
