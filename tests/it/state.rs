//! The SQLite state store, on real files.

use ldap2exo::desired::{Kind, Quarantined};
use ldap2exo::ids::Anchor;
use ldap2exo::plan::{Field, Fields};
use ldap2exo::state::{ManagedObject, Outcome, RunEnd, RunMode, RunScope, Stage, Store};
use serde_json::json;

fn object(anchor: &str, stage: Stage) -> ManagedObject {
    let mut attributes = Fields::new();
    attributes.insert(Field::DisplayName, json!("Jürgen Müller"));
    attributes.insert(Field::EmailAddresses, json!(["jm@example.edu"]));
    ManagedObject {
        anchor: Anchor::new(anchor).unwrap(),
        kind: Kind::MailUser,
        uid: "jmueller".into(),
        dn: "uid=jmueller,ou=people,dc=example,dc=edu".into(),
        tenant_object_id: None,
        attributes,
        stage,
        created_at: 100,
        updated_at: 100,
        disabled_at: None,
        delete_due_at: None,
        deleted_at: None,
    }
}

fn end(outcome: Outcome, count: u64) -> RunEnd {
    RunEnd {
        outcome,
        source_count: Some(count),
        verdict: Some("ok"),
        summary: Some(json!({"create": 1})),
        results: None,
        error: None,
    }
}

#[tokio::test]
async fn objects_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path).await.unwrap();
    let mut o = object("A-1", Stage::Active);
    store.upsert_object(&o).await.unwrap();
    o.tenant_object_id = Some("0b1c".into());
    o.updated_at = 200;
    store.upsert_object(&o).await.unwrap();
    store.close().await;

    let store = Store::open(&path).await.unwrap();
    let objects = store.objects().await.unwrap();
    assert_eq!(objects, vec![o.clone()]);
    assert_eq!(
        objects[0].created_at, 100,
        "an update keeps the creation time"
    );
    assert_eq!(store.object(&o.anchor).await.unwrap(), Some(o));
}

#[tokio::test]
async fn the_schema_refuses_a_disabled_object_without_a_due_date() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db")).await.unwrap();
    assert!(
        store
            .upsert_object(&object("a", Stage::Disabled))
            .await
            .is_err()
    );
    let mut ok = object("a", Stage::Disabled);
    ok.disabled_at = Some(1);
    ok.delete_due_at = Some(2);
    store.upsert_object(&ok).await.unwrap();
}

#[tokio::test]
async fn only_full_applied_runs_become_the_shrink_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db")).await.unwrap();
    assert_eq!(store.baseline().await.unwrap(), None);

    let id = store
        .begin_run(RunMode::Apply, RunScope::Full, "sync", 1)
        .await
        .unwrap();
    store
        .finish_run(id, &end(Outcome::Ok, 1000), 2)
        .await
        .unwrap();
    for (mode, scope, outcome, count) in [
        (RunMode::DryRun, RunScope::Full, Outcome::Ok, 10),
        (RunMode::Plan, RunScope::Full, Outcome::Ok, 10),
        (RunMode::Apply, RunScope::Only, Outcome::Ok, 1),
        (RunMode::Apply, RunScope::Full, Outcome::Failed, 3),
        (RunMode::Apply, RunScope::Full, Outcome::Blocked, 3),
    ] {
        let id = store.begin_run(mode, scope, "sync", 3).await.unwrap();
        store.finish_run(id, &end(outcome, count), 4).await.unwrap();
    }
    assert_eq!(store.baseline().await.unwrap(), Some(1000));
    let runs = store.runs(10).await.unwrap();
    assert_eq!(runs.len(), 6);
    assert_eq!(runs[0].mode, "apply");
    assert_eq!(runs[0].outcome, "blocked");
    assert_eq!(
        runs.last().unwrap().summary.as_deref(),
        Some(r#"{"create":1}"#)
    );
}

#[tokio::test]
async fn quarantine_is_replaced_but_remembers_first_sight() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db")).await.unwrap();
    let q = |dn: &str, reason: &str| Quarantined {
        dn: dn.into(),
        anchor: None,
        uid: None,
        field: "mail".into(),
        reason: reason.into(),
    };
    store
        .replace_quarantine(&[q("uid=a", "one"), q("uid=b", "two")], 10)
        .await
        .unwrap();
    store
        .replace_quarantine(&[q("uid=b", "still two")], 20)
        .await
        .unwrap();
    let rows = store.quarantine().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].dn.as_str(), rows[0].reason.as_str()),
        ("uid=b", "still two")
    );
    assert_eq!((rows[0].first_seen_at, rows[0].last_seen_at), (10, 20));
}

#[tokio::test]
async fn journal_rows_are_durable_as_soon_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let anchor = Anchor::new("a-1").unwrap();
    {
        let store = Store::open(&path).await.unwrap();
        let run = store
            .begin_run(RunMode::Apply, RunScope::Full, "sync", 1)
            .await
            .unwrap();
        let done = store
            .journal_start(run, &anchor, "create", "New-MailUser", 1)
            .await
            .unwrap();
        store
            .journal_finish(done, "ok", Some("object 0b1c"), 2)
            .await
            .unwrap();
        store
            .journal_start(run, &anchor, "create", "Set-MailUser", 3)
            .await
            .unwrap();
        // No close: the process "dies" here.
    }
    let store = Store::open(&path).await.unwrap();
    let rows = store.journal(&anchor).await.unwrap();
    let steps: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.step.as_str(), r.result.as_str()))
        .collect();
    assert_eq!(steps, [("New-MailUser", "ok"), ("Set-MailUser", "pending")]);
}

/// A store written by an older ldap2exo (schema 0003, with runs and journal rows that refer to
/// them) opens under the current schema: the runs table is rebuilt without losing a row or a
/// journal reference, and foreign keys are enforced again afterwards.
#[tokio::test]
async fn an_older_store_upgrades_with_its_runs_and_journal() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("migrations");
    std::fs::create_dir(&old).unwrap();
    for f in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations")).unwrap() {
        let f = f.unwrap();
        if f.file_name().to_string_lossy().as_ref() < "0004" {
            std::fs::copy(f.path(), old.join(f.file_name())).unwrap();
        }
    }
    let path = dir.path().join("old.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    {
        use sqlx::ConnectOptions;
        let mut conn = url
            .parse::<sqlx::sqlite::SqliteConnectOptions>()
            .unwrap()
            .foreign_keys(true)
            .connect()
            .await
            .unwrap();
        let migrator = sqlx::migrate::Migrator::new(old.as_path()).await.unwrap();
        migrator.run(&mut conn).await.unwrap();
        sqlx::query(
            "INSERT INTO runs (started_at, mode, scope, outcome) VALUES (5, 'apply', 'full', 'ok')",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query("INSERT INTO journal (run_id, anchor, op, step, started_at, result) VALUES (1, 'a-1', 'create', 'New-MailUser', 5, 'ok')")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let store = Store::open(&path).await.unwrap();
    let runs = store.runs(10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (
            runs[0].id,
            runs[0].outcome.as_str(),
            runs[0].command.as_deref()
        ),
        (1, "ok", None)
    );
    let journal = store.journal(&Anchor::new("a-1").unwrap()).await.unwrap();
    assert_eq!(journal.len(), 1, "the journal keeps its rows");
    // A journal row for a run that does not exist is still refused.
    let orphan = store
        .journal_start(99, &Anchor::new("a-2").unwrap(), "create", "x", 6)
        .await;
    assert!(
        orphan.is_err(),
        "foreign keys are enforced after the upgrade"
    );
    // The new outcome is accepted.
    let id = store
        .begin_run(RunMode::Apply, RunScope::Full, "daemon", 7)
        .await
        .unwrap();
    assert_eq!(store.mark_abandoned_runs().await.unwrap(), vec![id]);
    assert_eq!(store.runs(1).await.unwrap()[0].outcome, "interrupted");
}

/// Every write to a table the planner reads moves the planning generation, whoever writes
/// (runs, `migrate`, the journal); the bookkeeping of runs and reads does not. A kept plan
/// (`plan::quiet`) is only taken at the generation it was made at.
#[tokio::test]
async fn the_planning_generation_moves_with_every_write_the_planner_reads() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db")).await.unwrap();
    let anchor = Anchor::new("a-1").unwrap();
    let mut last = store.planning_generation().await.unwrap();
    macro_rules! moved {
        ($what:expr) => {{
            let now = store.planning_generation().await.unwrap();
            assert!(
                now > last,
                "{} moves the generation ({last} → {now})",
                $what
            );
            last = now;
        }};
    }
    store
        .upsert_object(&object("a-1", Stage::Active))
        .await
        .unwrap();
    moved!("a new object");
    let run = store
        .begin_run(RunMode::Apply, RunScope::Full, "sync", 1)
        .await
        .unwrap();
    store
        .finish_run(run, &end(Outcome::Ok, 1), 2)
        .await
        .unwrap();
    store.replace_quarantine(&[], 2).await.unwrap();
    assert_eq!(
        store.planning_generation().await.unwrap(),
        last,
        "runs and the quarantine are not planning inputs"
    );
    let row = store
        .journal_start(run, &anchor, "create", "New-MailUser", 1)
        .await
        .unwrap();
    moved!("a journal row");
    store.journal_finish(row, "ok", None, 2).await.unwrap();
    moved!("a journal result");
    store
        .start_migration(&anchor, "jmueller", "jm@example.edu", 3)
        .await
        .unwrap();
    moved!("a migration start");
    store
        .move_object(&anchor, &object("a-3", Stage::Active))
        .await
        .unwrap();
    moved!("an object re-anchored");
    let _ = last;

    // The kept plan itself, and the grace window.
    assert_eq!(store.quiet_plan().await.unwrap(), None);
    let kept = ldap2exo::state::QuietPlan {
        inputs: "d".repeat(64),
        planned_at: 10,
        run_id: run,
        plan: "{}".into(),
    };
    store.set_quiet_plan(Some(&kept), 11).await.unwrap();
    assert_eq!(store.quiet_plan().await.unwrap(), Some(kept));
    store.set_quiet_plan(None, 12).await.unwrap();
    assert_eq!(store.quiet_plan().await.unwrap(), None);
    let mut leaver = object("a-2", Stage::Disabled);
    (leaver.disabled_at, leaver.delete_due_at) = (Some(5), Some(100));
    store.upsert_object(&leaver).await.unwrap();
    assert!(!store.grace_ends_between(10, 99).await.unwrap());
    assert!(store.grace_ends_between(10, 100).await.unwrap());
    assert!(
        !store.grace_ends_between(100, 200).await.unwrap(),
        "ended before"
    );
}
