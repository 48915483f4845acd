//! `restore <uid>...`: brings back people ldap2exo deleted, from the tenant's recycle bin.
//!
//! A leaver is disabled, then deleted once `safety.grace_period_days` are over: a mailbox user
//! by Graph `DELETE /users/{id}`, a MailUser by `Remove-MailUser` (which soft-deletes the Entra
//! user under it too). Both are soft deletes: Microsoft keeps a deleted user restorable "for up
//! to 30 days. After 30 days, the item is permanently deleted" ("Restore deleted item
//! (directory object)", Microsoft Graph v1.0). A person who comes back into LDAP is restored
//! by the next sync on its own (the create step, `apply/steps.rs`); this command is for a
//! removal that was wrong (a wrongly approved cleanup) and must be undone now, whatever LDAP
//! says.
//!
//! Per uid: the state row (the most recently deleted when the uid is on several anchors), the
//! user in the recycle bin (`GET /directory/deletedItems/{id}`, "Get deleted item (directory
//! object)"), our stamp on it (nothing unstamped is touched), `POST
//! /directory/deletedItems/{id}/restore` (application permission `User.DeleteRestore.All`),
//! a wait until Exchange shows the recipient again, its addresses checked against those the
//! state recorded (missing ones added back), and the state row: active when LDAP has the
//! person, and then a sync of just them (`sync --only`, its own run) brings every field up to
//! date and shows them; else disabled and hidden as the leaver they were, with a fresh
//! `delete_due_at`. When LDAP has the uid under another anchor (the entry put back from a
//! backup, with a new entryUUID), the row is restored disabled and the same sync follows: its
//! plan re-anchors the object and shows it again (`plan/reanchor.rs`). A uid that cannot be
//! restored fails alone, with what is left of it; the others go on.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};

use super::run::real_run;
use super::{CommandError, Exit, TenantWatch, now};
use crate::apply::Outcome as ApplyOutcome;
use crate::cli::{RestoreArgs, Selection as SelectionArgs};
use crate::config::Config;
use crate::desired::{self, Kind};
use crate::ids::Anchor;
use crate::inventory::{STAMP_PREFIX, smtp_proxy};
use crate::plan::Field;
use crate::shutdown::Stop;
use crate::source::{self, Selection};
use crate::state::lock::{self, Lock};
use crate::state::{ManagedObject, Outcome, RunEnd, RunMode, RunScope, Stage, Store};
use crate::tenant::exchange::hashtable;
use crate::tenant::{Service, Tenant, TenantError};

/// Microsoft keeps soft-deleted users this many days.
const RETENTION_DAYS: i64 = 30;
const DAY: i64 = 86_400;

/// The journal's op for the steps of this command.
const OP: &str = "restore";

pub async fn restore(
    config: &Config,
    args: &RestoreArgs,
    stop: &Stop,
) -> Result<Exit, CommandError> {
    let path = &config.state.path;
    crate::state::require_directory(path)?;
    let started = now()?;
    // The same lock as sync: a restore must not race a run that deletes or re-creates.
    let lock = Lock::acquire(path, lock::Kind::Run, "restore", started).await?;
    let store = Store::open(path).await?;
    let run_id = store
        .begin_run(RunMode::Apply, RunScope::Only, "restore", started)
        .await?;
    let result = restore_all(config, args, &store, run_id, started).await;
    let (outcome, results, error) = match &result {
        Ok(t) if t.failed == 0 => (Outcome::Ok, Some(t), None),
        Ok(t) if t.done > 0 => (Outcome::Partial, Some(t), None),
        Ok(t) => (Outcome::Failed, Some(t), None),
        Err(e) => (Outcome::Failed, None, Some(e.to_string())),
    };
    let end = RunEnd {
        outcome,
        source_count: None,
        verdict: None,
        summary: None,
        results: results.map(|t| json!({"done": t.done, "failed": t.failed})),
        error,
    };
    store.finish_run(run_id, &end, now()?).await?;
    store.close().await;
    drop(lock);
    let t = result?;
    let synced_ok = sync_returned(config, &t.returned, stop).await;
    Ok(if t.failed == 0 && synced_ok {
        Exit::Ok
    } else {
        Exit::Failed
    })
}

/// Restored people LDAP has again are brought up to date and shown at once: a sync of just
/// them (`sync --only`), as its own run after the restore's, the way `migrate` provisions a
/// cohort. False when it failed for one of them (each is named).
async fn sync_returned(config: &Config, returned: &[(String, Anchor)], stop: &Stop) -> bool {
    if returned.is_empty() {
        return true;
    }
    let only: Vec<String> = returned.iter().map(|(uid, _)| uid.clone()).collect();
    let uids = only.join(" ");
    let sel = SelectionArgs {
        only,
        max_deletes: None,
        approval: Default::default(),
    };
    let finished = match real_run(config, &sel, "restore", stop, &TenantWatch::new()).await {
        Ok(f) => f,
        Err(e) => {
            println!(
                "the sync of the restored people in LDAP did not run: {e}; run `ldap2exo sync --only {uids}`"
            );
            return false;
        }
    };
    let mut ok = true;
    for (uid, anchor) in returned {
        let outcome = finished.results.iter().find(|r| &r.anchor == anchor);
        match outcome.map(|r| &r.outcome) {
            None | Some(ApplyOutcome::Done | ApplyOutcome::Pending(_)) => {
                println!("{uid}: synced: shown in the address list with what LDAP says now");
            }
            Some(
                ApplyOutcome::Failed(why)
                | ApplyOutcome::Conflict(why)
                | ApplyOutcome::Skipped(why)
                | ApplyOutcome::NotStarted(why),
            ) => {
                ok = false;
                println!(
                    "{uid}: restored, but the sync did not finish: {why}; run `ldap2exo sync --only {uid}`"
                );
            }
        }
    }
    ok
}

#[derive(Debug, Default)]
struct Tally {
    done: usize,
    failed: usize,
    /// Restored people LDAP has: synced after the restore.
    returned: Vec<(String, Anchor)>,
}

/// What a uid's restore needs besides the uid.
struct Ctx<'a> {
    config: &'a Config,
    store: &'a Store,
    run_id: i64,
    now: i64,
    tenant: &'a Tenant,
    /// Anchors LDAP has as recipients now.
    in_ldap: &'a BTreeSet<Anchor>,
    /// The same recipients by uid: a person put back into LDAP from a backup has a new
    /// anchor (entryUUID), which the sync after the restore takes the object over to.
    by_uid: &'a BTreeMap<String, Anchor>,
}

async fn restore_all(
    config: &Config,
    args: &RestoreArgs,
    store: &Store,
    run_id: i64,
    now: i64,
) -> Result<Tally, CommandError> {
    let objects = store.objects().await?;
    // Who LDAP has now: decides whether a restored person comes back active or as a leaver.
    let entries = source::read(&config.ldap, &Selection::Only(args.uids.clone())).await?;
    let recipients = desired::build(&entries, config, &BTreeSet::new()).recipients;
    let in_ldap: BTreeSet<_> = recipients.iter().map(|r| r.anchor.clone()).collect();
    let by_uid: BTreeMap<String, Anchor> =
        recipients.into_iter().map(|r| (r.uid, r.anchor)).collect();
    let tenant = Tenant::connect(&config.tenant)?;
    let ctx = Ctx {
        config,
        store,
        run_id,
        now,
        tenant: &tenant,
        in_ldap: &in_ldap,
        by_uid: &by_uid,
    };
    let mut tally = Tally::default();
    for uid in &args.uids {
        match restore_one(&ctx, &objects, uid).await {
            Ok((message, back)) => {
                tally.done += 1;
                if let Some(anchor) = back {
                    tally.returned.push((uid.clone(), anchor));
                }
                tracing::info!(uid = %uid, "restored");
                println!("{uid}: {message}");
            }
            Err(Failure::State(e)) => return Err(e.into()),
            Err(Failure::Uid(message)) => {
                tally.failed += 1;
                tracing::warn!(uid = %uid, reason = %message, "not restored");
                println!("{uid}: not restored: {message}");
            }
        }
    }
    Ok(tally)
}

/// Why one uid was not restored: its own problem, or the state store failing (which stops
/// the command, since nothing could be recorded).
enum Failure {
    Uid(String),
    State(crate::state::StateError),
}

impl From<crate::state::StateError> for Failure {
    fn from(e: crate::state::StateError) -> Self {
        Failure::State(e)
    }
}

/// The row to restore for `uid`, and a note when the uid is on several rows.
fn pick<'a>(
    objects: &'a [ManagedObject],
    uid: &str,
) -> Result<(&'a ManagedObject, Option<String>), String> {
    let rows: Vec<&ManagedObject> = objects.iter().filter(|o| o.uid == uid).collect();
    if rows.is_empty() {
        return Err("not managed by ldap2exo (no state row has this uid)".into());
    }
    let deleted = rows
        .iter()
        .filter(|o| o.stage == Stage::Deleted)
        .max_by_key(|o| o.deleted_at.unwrap_or(0));
    let Some(row) = deleted else {
        let o = rows[0];
        return Err(match o.stage {
            Stage::Disabled => format!(
                "not deleted (stage disabled): nothing to restore; it is hidden as a leaver and is deleted on {} unless its LDAP entry returns (put it back into LDAP to keep it)",
                day(o.delete_due_at.unwrap_or(0))
            ),
            _ => "not deleted (stage active): nothing to restore".into(),
        });
    };
    // The same uid live under another anchor (a new LDAP entry, synced already) holds the
    // UPN and the addresses the old object would come back with.
    if let Some(live) = rows.iter().find(|o| o.stage != Stage::Deleted) {
        return Err(format!(
            "the uid is {} under another anchor ({}, tenant object {}), which holds the name and addresses the deleted object {} would come back with: not restored; to have the old object back, remove the new one first (or move its mail over)",
            live.stage.as_str(),
            live.anchor,
            live.tenant_object_id.as_deref().unwrap_or("not made yet"),
            row.tenant_object_id.as_deref().unwrap_or("?")
        ));
    }
    let note = (rows.len() > 1).then(|| {
        let anchors: Vec<String> = rows.iter().map(|o| o.anchor.to_string()).collect();
        format!(
            "the uid is on {} state rows ({}); restored the most recently deleted, anchor {}",
            rows.len(),
            anchors.join(", "),
            row.anchor
        )
    });
    Ok((row, note))
}

/// Restores `uid`; answers what to tell the operator and, when LDAP has the person, their
/// anchor (synced next): the object's own, or the new one its entry came back under.
async fn restore_one(
    ctx: &Ctx<'_>,
    objects: &[ManagedObject],
    uid: &str,
) -> Result<(String, Option<Anchor>), Failure> {
    let (row, note) = pick(objects, uid).map_err(Failure::Uid)?;
    let mut obj = row.clone();
    let Some(id) = obj.tenant_object_id.clone() else {
        return Err(Failure::Uid(
            "the state store has no tenant object id for it: nothing to look for in the recycle bin"
                .into(),
        ));
    };
    let graph = ctx.tenant.graph();
    let journal = Journal { ctx, obj: &obj };

    // 1. In the recycle bin, and ours?
    let found = journal
        .step("GET /directory/deletedItems", graph.get_deleted_user(&id))
        .await?;
    let Some(user) = found else {
        return Err(Failure::Uid(gone_for_good(&obj, ctx.now)));
    };
    let stamp = format!("{STAMP_PREFIX}{}", obj.anchor);
    let graph_stamp = user
        .on_premises_extension_attributes
        .as_ref()
        .and_then(|e| e.get(&ctx.config.tenant.anchor_attribute))
        .map(str::to_owned);
    let ours = match graph_stamp {
        Some(s) => s == stamp,
        // Graph may not carry a MailUser's stamp: Exchange's soft-deleted recipient does.
        None => soft_deleted_stamp(ctx, &journal, &id).await? == Some(stamp.clone()),
    };
    if !ours {
        return Err(Failure::Uid(format!(
            "the deleted object {id} in the recycle bin does not carry the stamp {stamp}; ldap2exo touches only its own objects (left as it is)"
        )));
    }

    // 2. Restore, and record it at once: from here on the object is live again, and a
    //    state row still saying "deleted" would make a second `restore` call it gone for
    //    good and the next sync adopt it as somebody new.
    journal
        .step(
            "POST /directory/deletedItems/restore",
            graph.restore_user(&id),
        )
        .await?;
    let in_ldap = ctx.in_ldap.contains(&obj.anchor);
    // A person whose entry is back under another anchor is restored as the hidden leaver the
    // state knows; the sync that follows proves it is the same person and moves the object to
    // the new anchor, showing it again (the planner's re-anchor phase).
    let new_anchor = ctx
        .by_uid
        .get(&obj.uid)
        .filter(|a| !in_ldap && **a != obj.anchor)
        .cloned();
    obj.deleted_at = None;
    obj.updated_at = ctx.now;
    let message = if in_ldap {
        obj.stage = Stage::Active;
        obj.disabled_at = None;
        obj.delete_due_at = None;
        format!(
            "restored ({}, {id}); its LDAP entry is there: a sync of it follows",
            obj.kind.as_str()
        )
    } else {
        // A leaver was hidden before the delete, and a restore brings the object back as
        // it was: the row records it hidden (step 3 makes sure).
        let due = ctx.now + i64::from(ctx.config.safety.grace_period_days) * DAY;
        obj.stage = Stage::Disabled;
        obj.disabled_at = Some(ctx.now);
        obj.delete_due_at = Some(due);
        obj.attributes
            .insert(Field::HiddenFromAddressLists, json!(true));
        match &new_anchor {
            Some(new) => format!(
                "restored hidden ({}, {id}); its LDAP entry is back under a new anchor ({new}, was {}): a sync of it follows, which takes this object over to the new anchor and shows it again",
                obj.kind.as_str(),
                obj.anchor
            ),
            None => format!(
                "restored hidden ({}, {id}); it is deleted again on {} unless its LDAP entry returns",
                obj.kind.as_str(),
                day(due)
            ),
        }
    };
    ctx.store.upsert_object(&obj).await?;
    let mut notes: Vec<String> = vec![message];
    notes.extend(note);

    // 3. Exchange shows it again with the addresses the state recorded, a leaver hidden.
    //    What Exchange cannot do yet is said, and left to the next sync.
    let journal = Journal { ctx, obj: &obj };
    if let Err(why) = check_restored(ctx, &journal, &obj, &id, in_ldap, &mut notes).await {
        notes.push(why);
    }
    let sync = in_ldap.then(|| obj.anchor.clone()).or(new_anchor);
    Ok((notes.join("; "), sync))
}

/// Waits for Exchange to show the restored recipient, adds back the addresses the state
/// recorded that it lacks, and hides a leaver that shows. `Err` says what is left undone
/// (the object is restored and recorded either way).
async fn check_restored(
    ctx: &Ctx<'_>,
    journal: &Journal<'_>,
    obj: &ManagedObject,
    id: &str,
    in_ldap: bool,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    let later = |e: Failure| match e {
        Failure::Uid(why) => why,
        Failure::State(e) => e.to_string(),
    };
    let ex = ctx.tenant.exchange();
    let wait = Duration::from_secs(u64::from(ctx.config.tenant.propagation_wait_seconds));
    let recipient = journal
        .step(
            "Get-Recipient (restored)",
            crate::apply::until_visible(
                wait,
                &obj.uid,
                &mut || async {
                    ex.get_recipient(id)
                        .await?
                        .ok_or_else(|| TenantError::NotFound {
                            service: Service::Exchange,
                            what: id.to_owned(),
                        })
                },
                &|e| matches!(e, TenantError::NotFound { .. }),
                None,
            ),
        )
        .await
        .map_err(|e| {
            format!(
                "Exchange did not show it back ({}): its addresses and address-list visibility are left to the next sync",
                later(e)
            )
        })?;
    let have: BTreeSet<String> = strings(recipient.get("EmailAddresses"))
        .filter_map(|p| smtp_proxy(&p).map(|(_, a)| a.to_ascii_lowercase()))
        .collect();
    let primary_now = strings(recipient.get("EmailAddresses")).find_map(|p| {
        smtp_proxy(&p)
            .filter(|(p, _)| *p)
            .map(|(_, a)| a.to_ascii_lowercase())
    });
    let missing: Vec<String> = recorded_addresses(obj)
        .iter()
        .filter(|a| !have.contains(*a))
        .cloned()
        .collect();
    let mut params = serde_json::Map::new();
    if !missing.is_empty() {
        let add: Vec<String> = missing.iter().map(|a| format!("smtp:{a}")).collect();
        params.insert("EmailAddresses".into(), hashtable(&add, &[]));
    }
    let hidden = recipient
        .get("HiddenFromAddressListsEnabled")
        .and_then(Value::as_bool)
        == Some(true);
    if !in_ldap && !hidden {
        params.insert("HiddenFromAddressListsEnabled".into(), json!(true));
    }
    if !params.is_empty() {
        let params = Value::Object(params);
        let sent = match obj.kind {
            Kind::MailUser => {
                journal
                    .step("Set-MailUser (restored)", ex.set_mail_user(id, params))
                    .await
            }
            Kind::Mailbox => {
                journal
                    .step("Set-Mailbox (restored)", ex.set_mailbox(id, params))
                    .await
            }
        };
        sent.map_err(|e| {
            format!(
                "adding back {} / hiding it was refused ({}): the next sync corrects it",
                missing.join(", "),
                later(e)
            )
        })?;
        if !missing.is_empty() {
            notes.push(format!("added back {}", missing.join(", ")));
        }
    }
    let recorded_primary = obj
        .attributes
        .get("primarySmtpAddress")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase);
    if recorded_primary.is_some() && primary_now != recorded_primary {
        notes.push(format!(
            "its primary address is {} where {} was recorded; the next sync corrects it",
            primary_now.as_deref().unwrap_or("none"),
            recorded_primary.as_deref().unwrap_or("")
        ));
    }
    Ok(())
}

/// The stamp on the soft-deleted MailUser `id` as Exchange shows it (`Get-MailUser
/// -SoftDeletedMailUser`).
async fn soft_deleted_stamp(
    ctx: &Ctx<'_>,
    journal: &Journal<'_>,
    id: &str,
) -> Result<Option<String>, Failure> {
    let ex = ctx.tenant.exchange();
    let custom = ctx
        .config
        .tenant
        .anchor_attribute
        .replace("extensionAttribute", "CustomAttribute");
    let all = journal
        .step(
            "Get-MailUser -SoftDeletedMailUser",
            ex.list_soft_deleted_mail_users(&["ExternalDirectoryObjectId", &custom]),
        )
        .await?;
    Ok(all
        .iter()
        .find(|r| {
            r.get("ExternalDirectoryObjectId")
                .and_then(Value::as_str)
                .is_some_and(|x| x.eq_ignore_ascii_case(id))
        })
        .and_then(|r| r.get(&custom).and_then(Value::as_str).map(str::to_owned)))
}

/// Why a person not in the recycle bin cannot come back, and what is left.
fn gone_for_good(obj: &ManagedObject, now: i64) -> String {
    let what = match obj.kind {
        Kind::MailUser => "mail user",
        Kind::Mailbox => "mailbox",
    };
    let when = match obj.deleted_at {
        Some(at) => format!(
            "deleted on {}, {} days ago",
            day(at),
            (now - at).max(0) / DAY
        ),
        None => "deleted".to_owned(),
    };
    let why = match obj.deleted_at {
        Some(at) if now - at > RETENTION_DAYS * DAY => {
            "Microsoft keeps deleted users 30 days, so it is gone for good"
        }
        _ => "the tenant's recycle bin no longer holds it (purged), so it is gone for good",
    };
    let content = match obj.kind {
        Kind::Mailbox => "its mailbox content only from your own backup; ",
        Kind::MailUser => "",
    };
    format!(
        "{when}; {why}. What is left: {content}the addresses are free again; put the person back into LDAP and the next sync creates a new {what}"
    )
}

/// The addresses the state recorded for the object: primary, aliases and retained former
/// primaries, lower case.
fn recorded_addresses(obj: &ManagedObject) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some(p) = obj
        .attributes
        .get("primarySmtpAddress")
        .and_then(Value::as_str)
    {
        out.insert(p.to_ascii_lowercase());
    }
    for key in ["emailAddresses", "retainedAddresses"] {
        out.extend(strings(obj.attributes.get(key)).map(|a| a.to_ascii_lowercase()));
    }
    out
}

fn strings(v: Option<&Value>) -> impl Iterator<Item = String> + '_ {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
}

/// `2026-09-01`.
fn day(secs: i64) -> String {
    crate::plan::rfc3339(secs)[..10].to_owned()
}

/// Journals each tenant call of one uid's restore under the run.
struct Journal<'a> {
    ctx: &'a Ctx<'a>,
    obj: &'a ManagedObject,
}

impl Journal<'_> {
    async fn step<T>(
        &self,
        name: &str,
        call: impl Future<Output = Result<T, TenantError>>,
    ) -> Result<T, Failure> {
        let store = self.ctx.store;
        let row = store
            .journal_start(self.ctx.run_id, &self.obj.anchor, OP, name, self.ctx.now)
            .await?;
        match call.await {
            Ok(v) => {
                store
                    .journal_finish(
                        row,
                        "ok",
                        self.obj.tenant_object_id.as_deref(),
                        self.ctx.now,
                    )
                    .await?;
                Ok(v)
            }
            Err(e) => {
                let text = e.to_string();
                store
                    .journal_finish(row, "failed", Some(&text), self.ctx.now)
                    .await?;
                Err(Failure::Uid(format!("{name}: {text}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(anchor: &str, uid: &str, stage: Stage, deleted_at: Option<i64>) -> ManagedObject {
        ManagedObject {
            anchor: Anchor::new(anchor).unwrap(),
            kind: Kind::MailUser,
            uid: uid.into(),
            dn: format!("uid={uid},ou=people,dc=example,dc=edu"),
            tenant_object_id: Some(format!("id-{anchor}")),
            attributes: Default::default(),
            stage,
            created_at: 0,
            updated_at: 0,
            disabled_at: None,
            delete_due_at: Some(40 * DAY),
            deleted_at,
        }
    }

    #[test]
    fn the_most_recently_deleted_row_of_a_uid_is_restored_and_the_choice_is_said() {
        let rows = [
            row("a1", "ann", Stage::Deleted, Some(10)),
            row("a2", "ann", Stage::Deleted, Some(20)),
            row("b1", "bob", Stage::Disabled, None),
            row("c1", "cat", Stage::Active, None),
            row("d1", "dan", Stage::Deleted, Some(10)),
            row("d2", "dan", Stage::Active, None),
        ];
        let (r, note) = pick(&rows, "ann").unwrap();
        assert_eq!(r.anchor.to_string(), "a2");
        assert!(note.unwrap().contains("most recently deleted, anchor a2"));
        let e = pick(&rows, "bob").unwrap_err();
        assert!(e.contains("not deleted (stage disabled)"), "{e}");
        assert!(e.contains("1970-02-10"), "{e}");
        assert!(pick(&rows, "cat").unwrap_err().contains("stage active"));
        // Back under a new anchor and synced: the old object would clash with the new one.
        let e = pick(&rows, "dan").unwrap_err();
        assert!(e.contains("active under another anchor (d2"), "{e}");
        assert!(
            pick(&rows, "zed")
                .unwrap_err()
                .contains("not managed by ldap2exo")
        );
    }

    #[test]
    fn a_person_past_the_window_is_told_what_is_left() {
        let mut o = row("a1", "ann", Stage::Deleted, Some(0));
        o.kind = Kind::Mailbox;
        let m = gone_for_good(&o, 45 * DAY);
        assert!(m.contains("deleted on 1970-01-01, 45 days ago"), "{m}");
        assert!(m.contains("Microsoft keeps deleted users 30 days"), "{m}");
        assert!(
            m.contains("mailbox content only from your own backup"),
            "{m}"
        );
        assert!(m.contains("creates a new mailbox"), "{m}");
    }
}
