//! Reading a whole table a chunk of rows per query, for the tables a run reads in full (the
//! managed objects, the incremental reads' stored entries, users and recipients).
//!
//! sqlx's SQLite driver runs each statement on a worker thread and hands every row over a
//! bounded channel of 50 (sqlx-sqlite 0.9 `connection/worker.rs`): once the reader falls
//! behind, each row it takes wakes the worker, and each row the worker sends wakes the
//! reader. perf of a 10-change incremental cycle at 10,000 people put a quarter of the
//! samples on that worker thread and a tenth more in the kernel switching between the two,
//! for about 40,000 rows. Here SQLite concatenates [`CHUNK_ROWS`] rows into one text value,
//! so the channel carries one value per chunk.
//!
//! Encoding (built by SQL, read by [`decode`]): per column `-` for NULL, otherwise
//! `<bytes>:<text>` with the length of the text in bytes. Self-delimiting, so any content
//! (JSON, names with any character) survives. The chunks are read in one transaction: the
//! whole table as of one moment, as a single statement would give. Each chunk is asked for
//! before the one before it is handed out, so the worker thread still reads while the
//! caller parses.

use std::future::Future;

use super::StateError;

/// Rows per query. Measured in the 10-change cycle at 10,000 people: 128 and 512 saved
/// the same CPU time (a sixth), 512 held 2 MB more at the peak.
const CHUNK_ROWS: i64 = 128;

/// The SQL expression that encodes `column` (see the module doc).
fn encoded(column: &str) -> String {
    format!(
        "CASE WHEN {column} IS NULL THEN '-' ELSE octet_length(CAST({column} AS TEXT)) || ':' || CAST({column} AS TEXT) END"
    )
}

/// The query for one chunk: the last key of the chunk, and its rows encoded, in key order;
/// `after` says whether it starts after a key (`?1`) or at the table's beginning.
fn chunk_query(table: &str, key: &str, columns: &[&str], after: bool) -> String {
    let row = columns
        .iter()
        .map(|c| encoded(c))
        .collect::<Vec<_>>()
        .join(" || ");
    let from = if after {
        format!("WHERE {key} > ?1 ")
    } else {
        String::new()
    };
    format!(
        "SELECT max(k), group_concat(r, '' ORDER BY k) FROM \
         (SELECT {key} AS k, {row} AS r FROM {table} {from}ORDER BY {key} LIMIT {CHUNK_ROWS})"
    )
}

/// Hands every row of `table`, in the order of its text primary key `key`, to `each` as
/// the values of `columns` (`None` for NULL; numbers as their decimal text). Stops at the
/// first error `each` returns. The names are this crate's own, never input.
pub(super) async fn each_row<E>(
    pool: &sqlx::SqlitePool,
    table: &'static str,
    key: &'static str,
    columns: &[&'static str],
    mut each: impl FnMut(&[Option<&str>]) -> Result<(), E>,
) -> Result<Result<(), E>, StateError> {
    let first = chunk_query(table, key, columns, false);
    let after = chunk_query(table, key, columns, true);
    let mut tx = pool.begin().await?;
    let mut chunk = fetch(&mut tx, &first, None).await?;
    while let Some((end, text)) = chunk {
        // The next chunk is asked for before this one is handed out: SQLite's worker thread
        // reads it while `each` works, as it did when rows came one by one.
        let mut next = std::pin::pin!(futures_util::future::maybe_done(fetch(
            &mut tx,
            &after,
            Some(end.clone())
        )));
        // Polled once to send the query; an answer that comes at once is kept by
        // `MaybeDone`, which never polls a finished future again.
        let waker = std::task::Waker::noop();
        let _ = next
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker));
        if let Err(e) = hand_out(table, columns, &end, &text, &mut each)? {
            return Ok(Err(e));
        }
        next.as_mut().await;
        chunk = next
            .as_mut()
            .take_output()
            .expect("a finished MaybeDone has its output")?;
    }
    tx.rollback().await?;
    Ok(Ok(()))
}

/// One chunk: its last key and its rows encoded; `None` past the end.
async fn fetch(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    sql: &str,
    after: Option<String>,
) -> Result<Option<(String, String)>, StateError> {
    let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
    if let Some(k) = after {
        query = query.bind(k);
    }
    let (end, text): (Option<String>, Option<String>) = query.fetch_one(&mut **tx).await?;
    Ok(end.zip(text))
}

/// Decodes the rows of one chunk (`end` its last key, for the error) and hands each to
/// `each`; the outer error is a chunk that does not decode, the inner one `each`'s.
fn hand_out<E>(
    table: &'static str,
    columns: &[&'static str],
    end: &str,
    text: &str,
    each: &mut impl FnMut(&[Option<&str>]) -> Result<(), E>,
) -> Result<Result<(), E>, StateError> {
    let mut rest = text;
    let mut values: Vec<Option<&str>> = Vec::with_capacity(columns.len());
    while !rest.is_empty() {
        values.clear();
        for _ in columns {
            let (value, after) = decode(rest).ok_or_else(|| StateError::Chunk {
                table,
                message: format!("a row of the chunk that ends at key {end:?} does not decode"),
            })?;
            values.push(value);
            rest = after;
        }
        if let Err(e) = each(&values) {
            return Ok(Err(e));
        }
    }
    Ok(Ok(()))
}

/// One encoded value from the start of `s`, and what follows it; `None` if `s` does not
/// start with one.
fn decode(s: &str) -> Option<(Option<&str>, &str)> {
    if let Some(rest) = s.strip_prefix('-') {
        return Some((None, rest));
    }
    let (len, rest) = s.split_once(':')?;
    let len: usize = len.parse().ok()?;
    let value = rest.get(..len)?;
    Some((Some(value), &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::Kind;
    use crate::ids::Anchor;
    use crate::plan::Fields;
    use crate::state::{LdapSyncCommit, ManagedObject, Stage, Store};

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).await.unwrap();
        (dir, store)
    }

    /// Text that would break a separator or a naive length: separators, digits, `-` and `:`
    /// at the start, characters of several bytes, control characters, nothing at all.
    fn awkward(i: usize) -> String {
        match i % 6 {
            0 => String::new(),
            1 => format!("-{i}:"),
            2 => format!("{i}:{i}:\u{1e}\u{1f}\n"),
            3 => format!("Grüße, 日本 {i} 🦀"),
            4 => format!("{{\"dn\": \"uid=p{i},dc=example\", \"attrs\": {{}}}}"),
            _ => "x".repeat(i),
        }
    }

    /// Every row once, in key order, with its value unchanged: for an empty table, exactly
    /// one chunk, and more than two chunks that do not end on a chunk's edge.
    #[tokio::test]
    async fn every_row_comes_back_once_in_key_order_whatever_it_holds() {
        for n in [0, CHUNK_ROWS as usize, 2 * CHUNK_ROWS as usize + 77] {
            let (_dir, store) = store().await;
            let mut rows: Vec<(String, String)> = (0..n)
                .map(|i| {
                    (
                        format!("{:08x}-{}", i * 7919 % 100_003, awkward(i % 5)),
                        awkward(i),
                    )
                })
                .collect();
            let commit = LdapSyncCommit {
                full: true,
                upserts: rows.clone(),
                ..LdapSyncCommit::default()
            };
            store.commit_ldap_sync(&commit, 0).await.unwrap();
            let mut read = Vec::new();
            store
                .each_ldap_entry(|k, v| {
                    read.push((k.to_owned(), v.to_owned()));
                    Ok::<_, ()>(())
                })
                .await
                .unwrap()
                .unwrap();
            rows.sort();
            assert_eq!(read.len(), n, "rows read back of {n}");
            assert_eq!(read, rows, "{n} rows");
        }
    }

    /// Managed objects with and without their optional columns come back as written.
    #[tokio::test]
    async fn objects_with_null_columns_come_back_as_written() {
        let (_dir, store) = store().await;
        let mut written = Vec::new();
        for i in 0..(CHUNK_ROWS + 3) {
            let mut attributes = Fields::new();
            attributes.insert(
                crate::plan::Field::DisplayName,
                serde_json::json!(awkward(i as usize)),
            );
            let disabled = i % 3 == 1;
            let obj = ManagedObject {
                anchor: Anchor::new(&format!("0000{i:04}-0000-4000-8000-000000000000")).unwrap(),
                kind: if i % 2 == 0 {
                    Kind::Mailbox
                } else {
                    Kind::MailUser
                },
                uid: format!("p{i}"),
                dn: awkward(i as usize + 1),
                tenant_object_id: (i % 4 != 0).then(|| format!("id-{i}")),
                attributes,
                stage: if disabled {
                    Stage::Disabled
                } else {
                    Stage::Active
                },
                created_at: -i,
                updated_at: i * 1_000_000_007,
                disabled_at: disabled.then_some(i),
                delete_due_at: disabled.then_some(i + 30),
                deleted_at: None,
            };
            store.upsert_object(&obj).await.unwrap();
            written.push(obj);
        }
        written.sort_by(|a, b| a.anchor.cmp(&b.anchor));
        assert_eq!(store.objects().await.unwrap(), written);
    }

    /// The first error of the caller's stops the read and is handed back.
    #[tokio::test]
    async fn an_error_of_the_caller_stops_the_read() {
        let (_dir, store) = store().await;
        let upserts = (0..1000)
            .map(|i| (format!("{i:04}"), String::new()))
            .collect();
        let commit = LdapSyncCommit {
            full: true,
            upserts,
            ..LdapSyncCommit::default()
        };
        store.commit_ldap_sync(&commit, 0).await.unwrap();
        let mut seen = 0;
        let stopped = store
            .each_ldap_entry(|k, _| {
                seen += 1;
                if k == "0600" {
                    Err(k.to_owned())
                } else {
                    Ok(())
                }
            })
            .await
            .unwrap();
        assert_eq!(stopped, Err("0600".to_owned()));
        assert_eq!(seen, 601);
    }

    #[test]
    fn values_decode_whatever_they_contain() {
        assert_eq!(decode("-5:abcde"), Some((None, "5:abcde")));
        assert_eq!(decode("5:abcde-"), Some((Some("abcde"), "-")));
        // Bytes, not characters: "é" is two.
        assert_eq!(decode("4:a:é1:x"), Some((Some("a:é"), "1:x")));
        assert_eq!(decode("0:"), Some((Some(""), "")));
        assert_eq!(decode("4:abc"), None);
        assert_eq!(decode("x:abc"), None);
        // A length that ends inside a character is refused, not a panic.
        assert_eq!(decode("2:é"), Some((Some("é"), "")));
        assert_eq!(decode("1:é"), None);
    }
}
