//! The base of partial planning (`plan_base`, `base_entries`, `base_counted`, `plan_keys`,
//! `base_dirty`, migration 0014): the plan the last real run made, what every entry and
//! anchor added to it, which values every stored row holds, and which state rows changed
//! since. `plan::partial` explains why a plan of the people a change touches, completed
//! from these, is the plan of everybody.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::Row;

use super::{StateError, Store};
use crate::ids::Anchor;

/// Keys or nodes per query: far below SQLite's limit of bound values.
const BATCH: usize = 500;

/// The marks of the base: what the plan was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseMark {
    pub run_id: i64,
    /// Unix seconds: the plan's `now`.
    pub planned_at: i64,
    /// SHA-256 (hex) of the build and the configuration.
    pub digest: String,
    pub ldap_cookie: Vec<u8>,
    pub delta_link: String,
    pub exchange_since: i64,
    pub fixed: String,
}

/// A base to store: the plan and marks, and what changes in the tables.
#[derive(Debug, Default)]
pub struct BaseWrite {
    /// Everything is replaced (a plan of everybody); else only the rows named below.
    pub whole: bool,
    /// `None` only with `whole == false` for tests; a run always has one.
    pub mark: Option<BaseMark>,
    pub plan: String,
    /// DNs whose rows are replaced (the closure's, old and new), and the new rows: `(dn,
    /// class, share JSON)`.
    pub entries_gone: Vec<String>,
    pub entries: Vec<(String, &'static str, Option<String>)>,
    /// Anchors whose rows are replaced, and those counted now.
    pub counted_gone: Vec<String>,
    pub counted: Vec<String>,
    /// Nodes whose keys are replaced, and the new keys of each node.
    pub nodes_gone: Vec<String>,
    pub keys: Vec<(String, Vec<i64>)>,
}

/// What the entries and anchors outside a closure add up to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseTotals {
    /// Entries per class.
    pub classes: BTreeMap<String, usize>,
    /// Shares (JSON) of entries with quarantine records or notes, by DN.
    pub shares: Vec<(String, String)>,
    pub counted: usize,
}

impl Store {
    /// The stored base's marks and plan, if any.
    pub async fn plan_base(&self) -> Result<Option<(BaseMark, String)>, StateError> {
        let row = sqlx::query(
            "SELECT run_id, planned_at, digest, ldap_cookie, delta_link, exchange_since, fixed,
                    plan FROM plan_base WHERE id = 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| {
            (
                BaseMark {
                    run_id: r.get(0),
                    planned_at: r.get(1),
                    digest: r.get(2),
                    ldap_cookie: r.get(3),
                    delta_link: r.get(4),
                    exchange_since: r.get(5),
                    fixed: r.get(6),
                },
                r.get(7),
            )
        }))
    }

    /// Keeps the base with the marks of the reads stored now: a run took its plan (nothing
    /// changed), then committed reads that moved only the cookie and the delta link.
    pub async fn advance_plan_base(&self) -> Result<(), StateError> {
        let mut tx = self.pool.begin().await?;
        let dirty: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM base_dirty")
            .fetch_one(&mut *tx)
            .await?;
        if dirty > 0 {
            sqlx::query("DELETE FROM plan_base")
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query(
                "UPDATE plan_base SET
                     ldap_cookie = (SELECT cookie FROM ldap_sync WHERE id = 1),
                     delta_link = (SELECT delta_link FROM tenant_sync WHERE id = 1),
                     exchange_since = (SELECT exchange_since FROM tenant_sync WHERE id = 1)
                 WHERE id = 1",
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Forgets the base: the next run plans in full.
    pub async fn drop_plan_base(&self) -> Result<(), StateError> {
        sqlx::query("DELETE FROM plan_base")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores a base in one transaction, and empties the log of state rows written since the
    /// last one.
    pub async fn write_plan_base(&self, w: &BaseWrite) -> Result<(), StateError> {
        let mut tx = self.pool.begin().await?;
        if w.whole {
            for table in ["base_entries", "base_counted", "plan_keys"] {
                sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        delete_in(&mut tx, "base_entries", "dn", &w.entries_gone).await?;
        delete_in(&mut tx, "base_counted", "anchor", &w.counted_gone).await?;
        delete_in(&mut tx, "plan_keys", "node", &w.nodes_gone).await?;
        insert_json(
            &mut tx,
            "INSERT OR REPLACE INTO base_entries (dn, class, share)
             SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?1)",
            w.entries
                .iter()
                .map(|(dn, class, share)| serde_json::json!([dn, class, share])),
        )
        .await?;
        insert_json(
            &mut tx,
            "INSERT OR IGNORE INTO base_counted (anchor) SELECT value FROM json_each(?1)",
            w.counted.iter().map(|a| serde_json::json!(a)),
        )
        .await?;
        insert_json(
            &mut tx,
            "INSERT OR IGNORE INTO plan_keys (key, node)
             SELECT value ->> 1, value ->> 0 FROM json_each(?1)",
            w.keys
                .iter()
                .flat_map(|(node, keys)| keys.iter().map(move |k| serde_json::json!([node, k]))),
        )
        .await?;
        match &w.mark {
            Some(m) => {
                sqlx::query(
                    "INSERT OR REPLACE INTO plan_base (id, run_id, planned_at, digest, ldap_cookie,
                         delta_link, exchange_since, fixed, plan)
                     VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(m.run_id)
                .bind(m.planned_at)
                .bind(&m.digest)
                .bind(&m.ldap_cookie)
                .bind(&m.delta_link)
                .bind(m.exchange_since)
                .bind(&m.fixed)
                .bind(&w.plan)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM plan_base")
                    .execute(&mut *tx)
                    .await?;
            }
        }
        sqlx::query("DELETE FROM base_dirty")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The anchors whose state row (or IMAP migration) changed since the base, with the
    /// row's attributes (JSON) as the base saw them (`None`: it had no row).
    pub async fn base_dirty(&self) -> Result<Vec<(String, Option<String>)>, StateError> {
        let rows = sqlx::query("SELECT anchor, attributes FROM base_dirty ORDER BY anchor")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Every node holding one of `keys`.
    pub async fn key_holders(&self, keys: &[i64]) -> Result<BTreeSet<String>, StateError> {
        let mut nodes = BTreeSet::new();
        for chunk in keys.chunks(BATCH) {
            let rows: Vec<String> = sqlx::query_scalar(
                "SELECT DISTINCT node FROM plan_keys WHERE key IN (SELECT value FROM json_each(?))",
            )
            .bind(serde_json::to_string(chunk).expect("numbers serialise"))
            .fetch_all(&self.pool)
            .await?;
            nodes.extend(rows);
        }
        Ok(nodes)
    }

    /// The keys stored for each of `nodes`.
    pub async fn node_keys(
        &self,
        nodes: &[String],
    ) -> Result<BTreeMap<String, Vec<i64>>, StateError> {
        let mut keys: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for chunk in nodes.chunks(BATCH) {
            let rows = sqlx::query(
                "SELECT node, key FROM plan_keys WHERE node IN (SELECT value FROM json_each(?))",
            )
            .bind(serde_json::to_string(chunk).expect("strings serialise"))
            .fetch_all(&self.pool)
            .await?;
            for r in rows {
                keys.entry(r.get(0)).or_default().push(r.get(1));
            }
        }
        Ok(keys)
    }

    /// What the entries not named in `dns` and the anchors not in `anchors` add to the base.
    pub async fn base_totals(
        &self,
        dns: &BTreeSet<String>,
        anchors: &BTreeSet<Anchor>,
    ) -> Result<BaseTotals, StateError> {
        let mut totals = BaseTotals::default();
        let rows = sqlx::query("SELECT class, COUNT(*) FROM base_entries GROUP BY class")
            .fetch_all(&self.pool)
            .await?;
        for r in rows {
            let n: i64 = r.get(1);
            totals.classes.insert(r.get(0), n as usize);
        }
        let named: Vec<&String> = dns.iter().collect();
        for chunk in named.chunks(BATCH) {
            let rows = sqlx::query(
                "SELECT class FROM base_entries WHERE dn IN (SELECT value FROM json_each(?))",
            )
            .bind(serde_json::to_string(chunk).expect("strings serialise"))
            .fetch_all(&self.pool)
            .await?;
            for r in rows {
                let class: String = r.get(0);
                if let Some(n) = totals.classes.get_mut(&class) {
                    *n -= 1;
                }
            }
        }
        let shares =
            sqlx::query("SELECT dn, share FROM base_entries WHERE share IS NOT NULL ORDER BY dn")
                .fetch_all(&self.pool)
                .await?;
        totals.shares = shares
            .iter()
            .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
            .filter(|(dn, _)| !dns.contains(dn))
            .collect();
        let counted: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM base_counted")
            .fetch_one(&self.pool)
            .await?;
        let mut inside = 0i64;
        let named: Vec<&str> = anchors.iter().map(Anchor::as_str).collect();
        for chunk in named.chunks(BATCH) {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM base_counted WHERE anchor IN (SELECT value FROM json_each(?))",
            )
            .bind(serde_json::to_string(chunk).expect("strings serialise"))
            .fetch_one(&self.pool)
            .await?;
            inside += n;
        }
        totals.counted = (counted - inside) as usize;
        Ok(totals)
    }

    /// Anchors of hidden people whose grace period ends in `(after, until]` (Unix seconds).
    pub async fn grace_ending(&self, after: i64, until: i64) -> Result<Vec<String>, StateError> {
        Ok(sqlx::query_scalar(
            "SELECT anchor FROM managed_objects
             WHERE stage = 'disabled' AND delete_due_at > ? AND delete_due_at <= ?",
        )
        .bind(after)
        .bind(until)
        .fetch_all(&self.pool)
        .await?)
    }

    /// How many state rows are not deleted.
    pub async fn live_object_count(&self) -> Result<usize, StateError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM managed_objects WHERE stage != 'deleted'")
                .fetch_one(&self.pool)
                .await?;
        Ok(n as usize)
    }
}

async fn delete_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    table: &'static str,
    column: &'static str,
    values: &[String],
) -> Result<(), StateError> {
    let sql = format!("DELETE FROM {table} WHERE {column} IN (SELECT value FROM json_each(?1))");
    for chunk in values.chunks(BATCH) {
        sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(serde_json::to_string(chunk).expect("strings serialise"))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Runs `sql` (which reads a JSON array `?1`) for the rows, 10,000 at a time: one statement
/// per row costs sqlx's round trip to its worker thread each. The rows are made into JSON
/// a chunk at a time (at 100,000 people the index has two million).
async fn insert_json(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    sql: &'static str,
    rows: impl Iterator<Item = serde_json::Value>,
) -> Result<(), StateError> {
    let mut rows = rows.peekable();
    while rows.peek().is_some() {
        let chunk: Vec<serde_json::Value> = rows.by_ref().take(10_000).collect();
        sqlx::query(sql)
            .bind(serde_json::to_string(&chunk).expect("JSON serialises"))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::Kind;
    use crate::plan::{Field, Fields};
    use crate::state::{ManagedObject, Stage};

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).await.unwrap();
        (dir, store)
    }

    fn object(anchor: &str, mail: &str) -> ManagedObject {
        let mut attributes = Fields::default();
        attributes.insert(Field::PrimarySmtpAddress, serde_json::json!(mail));
        ManagedObject {
            anchor: Anchor::new(anchor).unwrap(),
            kind: Kind::MailUser,
            uid: anchor.into(),
            dn: format!("uid={anchor}"),
            tenant_object_id: None,
            attributes,
            stage: Stage::Active,
            created_at: 0,
            updated_at: 0,
            disabled_at: None,
            delete_due_at: None,
            deleted_at: None,
        }
    }

    fn mark(run_id: i64) -> BaseMark {
        BaseMark {
            run_id,
            planned_at: 100,
            digest: "d".into(),
            ldap_cookie: b"c".to_vec(),
            delta_link: "l".into(),
            exchange_since: 5,
            fixed: "f".into(),
        }
    }

    /// Every write to a state row after the base is logged once, with the row as the base
    /// saw it, whoever writes (an upsert, a move, the IMAP cohort); writing a base empties
    /// the log.
    #[tokio::test]
    async fn the_dirty_log_keeps_each_row_as_the_base_saw_it() {
        let (_dir, store) = store().await;
        store.upsert_object(&object("a", "a@x.edu")).await.unwrap();
        store.upsert_object(&object("b", "b@x.edu")).await.unwrap();
        let base = BaseWrite {
            whole: true,
            mark: Some(mark(1)),
            plan: "{}".into(),
            ..BaseWrite::default()
        };
        store.write_plan_base(&base).await.unwrap();
        assert!(store.base_dirty().await.unwrap().is_empty());

        store.upsert_object(&object("a", "a2@x.edu")).await.unwrap();
        store.upsert_object(&object("a", "a3@x.edu")).await.unwrap();
        store.upsert_object(&object("c", "c@x.edu")).await.unwrap();
        store
            .move_object(&Anchor::new("b").unwrap(), &object("d", "b@x.edu"))
            .await
            .unwrap();
        let dirty = store.base_dirty().await.unwrap();
        let old = |a: &str| {
            dirty.iter().find(|(x, _)| x == a).map(|(_, v)| {
                v.as_deref()
                    .map(|j| serde_json::from_str::<serde_json::Value>(j).unwrap())
            })
        };
        assert_eq!(
            old("a"),
            Some(Some(serde_json::json!({"primarySmtpAddress": "a@x.edu"})))
        );
        assert_eq!(
            old("b"),
            Some(Some(serde_json::json!({"primarySmtpAddress": "b@x.edu"})))
        );
        assert_eq!(old("c"), Some(None), "a new row had nothing before");
        assert_eq!(old("d"), Some(None));
        assert_eq!(dirty.len(), 4, "{dirty:?}");

        store.write_plan_base(&base).await.unwrap();
        store
            .start_migration(&Anchor::new("a").unwrap(), "a", "a@x.edu", 1)
            .await
            .unwrap();
        let dirty = store.base_dirty().await.unwrap();
        assert_eq!(dirty.len(), 1);
        assert!(
            dirty[0].1.as_deref().unwrap().contains("a3@x.edu"),
            "{dirty:?}"
        );
    }

    /// A whole base replaces everything; a partial one only the rows it names; the totals
    /// leave out the entries and anchors asked about; the index answers by key and by node.
    #[tokio::test]
    async fn a_base_is_written_whole_or_in_part_and_summed_around_a_closure() {
        let (_dir, store) = store().await;
        assert_eq!(store.plan_base().await.unwrap(), None);
        let whole = BaseWrite {
            whole: true,
            mark: Some(mark(1)),
            plan: "{\"k\":1}".into(),
            entries: vec![
                ("uid=a".into(), "recipient", None),
                ("uid=b".into(), "disabled", None),
                (
                    "uid=c".into(),
                    "quarantined",
                    Some("{\"quarantined\":[]}".into()),
                ),
                ("uid=d".into(), "no_mail", None),
            ],
            counted: vec!["a".into(), "b".into(), "x".into()],
            keys: vec![
                ("e:1".into(), vec![10, 11]),
                ("o:a".into(), vec![11]),
                ("u:9".into(), vec![-12]),
            ],
            ..BaseWrite::default()
        };
        store.write_plan_base(&whole).await.unwrap();
        let (m, plan) = store.plan_base().await.unwrap().unwrap();
        assert_eq!((m, plan.as_str()), (mark(1), "{\"k\":1}"));

        assert_eq!(
            store.key_holders(&[11]).await.unwrap(),
            ["e:1".to_string(), "o:a".to_string()].into()
        );
        let keys = store
            .node_keys(&["e:1".into(), "u:9".into(), "r:none".into()])
            .await
            .unwrap();
        assert_eq!(
            keys["e:1"].iter().copied().collect::<BTreeSet<_>>(),
            [10, 11].into()
        );
        assert_eq!(keys["u:9"], vec![-12]);
        assert!(!keys.contains_key("r:none"));

        let dns: BTreeSet<String> = ["uid=b".to_string(), "uid=c".to_string()].into();
        let anchors: BTreeSet<Anchor> =
            [Anchor::new("a").unwrap(), Anchor::new("zz").unwrap()].into();
        let t = store.base_totals(&dns, &anchors).await.unwrap();
        assert_eq!(t.classes["recipient"], 1);
        assert_eq!(t.classes["disabled"], 0);
        assert_eq!(t.classes["quarantined"], 0);
        assert_eq!(t.classes["no_mail"], 1);
        assert!(t.shares.is_empty(), "{:?}", t.shares);
        assert_eq!(t.counted, 2);

        let part = BaseWrite {
            whole: false,
            mark: Some(mark(2)),
            plan: "{}".into(),
            entries_gone: vec!["uid=a".into()],
            entries: vec![(
                "uid=a2".into(),
                "recipient",
                Some("{\"warnings\":[]}".into()),
            )],
            counted_gone: vec!["x".into()],
            nodes_gone: vec!["e:1".into()],
            keys: vec![("e:1".into(), vec![12])],
            ..BaseWrite::default()
        };
        store.write_plan_base(&part).await.unwrap();
        assert_eq!(store.plan_base().await.unwrap().unwrap().0.run_id, 2);
        assert_eq!(
            store.key_holders(&[11]).await.unwrap(),
            ["o:a".to_string()].into()
        );
        assert_eq!(
            store.key_holders(&[12]).await.unwrap(),
            ["e:1".to_string()].into()
        );
        let t = store
            .base_totals(&BTreeSet::new(), &BTreeSet::new())
            .await
            .unwrap();
        assert_eq!(t.classes["recipient"], 1);
        assert_eq!(t.shares.len(), 2, "{:?}", t.shares);
        assert_eq!(t.counted, 2);

        store.drop_plan_base().await.unwrap();
        assert_eq!(store.plan_base().await.unwrap(), None);
    }
}
