//! `status`: the last runs, managed objects, pending deletions and quarantined entries, read
//! from the state store alone.
//!
//! It opens the store read-only and needs no secrets, so a monitoring user can run it; it never
//! creates a store, so a wrong `state.path` is reported (exit 2) instead of looking like a
//! healthy empty install. Long lists are counted (by due date, by reason) and cut at
//! [`LISTED`] in text; `--format json` has them in full.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{CommandError, Exit, now};
use crate::apply::Tally;
use crate::cli::{StatusArgs, StatusFormat};
use crate::config::Config;
use crate::plan::{self, Summary};
use crate::report;
use crate::state::lock::{self, Held};
use crate::state::{
    ApprovalRecord, LdapSyncMark, ManagedObject, QuarantineRecord, RunRecord, Stage, Store,
    TenantSyncMark,
};

/// Entries of a long list shown in text before "… and N more".
const LISTED: usize = 20;

/// What `status` reports, read from the store.
struct View {
    objects: Vec<ManagedObject>,
    runs: Vec<RunRecord>,
    quarantine: Vec<QuarantineRecord>,
    last_full_sync: Option<i64>,
    now: i64,
    /// Who holds the daemon lock (a running `ldap2exo daemon`), with its next run.
    daemon: Held,
    /// Who holds the run lock: a run in progress.
    running: Held,
    /// The approvals of the runs shown, by run id.
    approvals: BTreeMap<i64, ApprovalRecord>,
    /// Removals applied in the rolling windows up to now.
    recent: plan::RecentRemovals,
    incremental: Incremental,
}

/// What the incremental reads and quiet runs keep (README "Incremental runs").
struct Incremental {
    ldap: Option<LdapSyncMark>,
    ldap_entries: i64,
    tenant: Option<TenantSyncMark>,
    /// The run whose plan is kept, and since when.
    kept: Option<(i64, i64)>,
}

async fn incremental(store: &Store) -> Result<Incremental, CommandError> {
    Ok(Incremental {
        ldap: store.ldap_sync().await?,
        ldap_entries: store.ldap_entry_count().await?,
        tenant: store.tenant_sync().await?,
        kept: store.quiet_plan().await?.map(|q| (q.run_id, q.planned_at)),
    })
}

pub async fn status(config: &Config, args: &StatusArgs) -> Result<Exit, CommandError> {
    let store = Store::open_read_only(&config.state.path).await?;
    let read = async {
        let runs = store.runs(args.runs).await?;
        let first = runs.iter().map(|r| r.id).min().unwrap_or(i64::MAX);
        let now = now()?;
        Ok::<_, CommandError>(View {
            objects: store.objects().await?,
            approvals: store.approvals_since(first).await?,
            recent: store.recent_removals(now).await?,
            runs,
            quarantine: store.quarantine().await?,
            last_full_sync: store.last_successful_full_sync().await?,
            now,
            incremental: incremental(&store).await?,
            daemon: holder(&config.state.path, lock::Kind::Daemon),
            running: holder(&config.state.path, lock::Kind::Run),
        })
    }
    .await;
    store.close().await;
    let view = read?;
    let text = match args.format {
        StatusFormat::Json => {
            let mut s =
                serde_json::to_string_pretty(&as_json(config, &view)).expect("status serialises");
            s.push('\n');
            s
        }
        StatusFormat::Text => as_text(config, &view),
    };
    super::output::write_out(super::output::Destination::Stdout, |w| {
        std::io::Write::write_all(w, text.as_bytes())
    })?;
    Ok(Exit::Ok)
}

/// Who holds a lock; a lock file `status` cannot read is a warning, not a failure.
fn holder(state: &std::path::Path, kind: lock::Kind) -> Held {
    lock::holder(state, kind).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot tell whether a daemon or run holds the state store");
        Held::ByUnknown
    })
}

fn holder_json(h: &Held) -> Value {
    match h {
        Held::Free => Value::Null,
        Held::ByUnknown => {
            json!({"pid": null, "host": null, "command": null, "since": null, "next_run": null})
        }
        Held::By(h) => json!({
            "pid": h.pid, "host": h.host, "command": h.command,
            "since": plan::rfc3339(h.since),
            "next_run": h.next_run.map(plan::rfc3339),
        }),
    }
}

fn pending(view: &View) -> Vec<&ManagedObject> {
    view.objects
        .iter()
        .filter(|o| o.stage == Stage::Disabled)
        .collect()
}

fn count(view: &View, stage: Stage) -> usize {
    view.objects.iter().filter(|o| o.stage == stage).count()
}

/// The day (UTC) a pending deletion is due, `unknown` without a date.
fn due_day(o: &ManagedObject) -> String {
    o.delete_due_at
        .map(|t| plan::rfc3339(t)[..10].to_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn by_due_day(pending: &[&ManagedObject]) -> BTreeMap<String, usize> {
    let mut days = BTreeMap::new();
    for o in pending {
        *days.entry(due_day(o)).or_default() += 1;
    }
    days
}

/// Quarantined entries by field and reason class, most frequent first.
fn by_reason(quarantine: &[QuarantineRecord]) -> Vec<(String, usize)> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for q in quarantine {
        *counts
            .entry(format!("{}: {}", q.field, report::reason_class(&q.reason)))
            .or_default() += 1;
    }
    let mut classes: Vec<_> = counts.into_iter().collect();
    classes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    classes
}

/// A JSON column of the runs table as an object (`summary`, `results`); text that is not
/// JSON stays a string rather than vanish.
fn nested(text: &Option<String>) -> Value {
    match text {
        None => Value::Null,
        Some(t) => serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.clone())),
    }
}

/// What started a run; rows from before schema 0004 have only the mode.
fn command(r: &RunRecord) -> &str {
    r.command.as_deref().unwrap_or(&r.mode)
}

/// The changes of a run and how many failed: applied ones (`results`) for a real run,
/// planned ones (`summary`) for a dry run or plan; `None` where the run recorded neither.
fn changes(r: &RunRecord) -> (Option<String>, Option<usize>) {
    if let Some(t) = r
        .results
        .as_deref()
        .and_then(|t| serde_json::from_str::<Tally>(t).ok())
    {
        return (
            Some(format!("{} applied", t.done)),
            Some(t.failed + t.conflict),
        );
    }
    let planned = r
        .summary
        .as_deref()
        .and_then(|t| serde_json::from_str::<Summary>(t).ok())
        .map(|s| plan::Op::ALL.iter().map(|op| s.count(*op)).sum::<usize>());
    (planned.map(|n| format!("{n} planned")), None)
}

fn duration(r: &RunRecord) -> Option<i64> {
    r.finished_at.map(|f| (f - r.started_at).max(0))
}

/// `1h 02m`, `3m 05s`, `12s`.
fn span(secs: i64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s:02}s"),
        _ => format!("{h}h {m:02}m"),
    }
}

/// How long ago `then` was, coarsely: `5 min ago`, `3 h ago`, `2 days ago`.
fn ago(then: i64, now: i64) -> String {
    let secs = (now - then).max(0);
    match secs {
        s if s < 120 => format!("{s} s ago"),
        s if s < 2 * 3600 => format!("{} min ago", s / 60),
        s if s < 2 * 86_400 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86_400),
    }
}

fn as_json(config: &Config, view: &View) -> Value {
    let pending = pending(view);
    json!({
        "state": config.state.path,
        "now": plan::rfc3339(view.now),
        "last_successful_full_sync": view.last_full_sync.map(plan::rfc3339),
        "daemon": holder_json(&view.daemon),
        "run_in_progress": holder_json(&view.running),
        "managed": {
            "active": count(view, Stage::Active),
            "disabled": count(view, Stage::Disabled),
            "deleted": count(view, Stage::Deleted),
        },
        "removals": {
            "last_24h": view.recent.last_24h,
            "max_per_24h": config.safety.deletes_per_24h(),
            "last_7d": view.recent.last_7d,
            "max_per_7d": config.safety.deletes_per_7d(),
        },
        "incremental": incremental_json(&view.incremental),
        "pending_deletions_by_due_date": by_due_day(&pending),
        "pending_deletions": pending.iter().map(|o| json!({
            "anchor": o.anchor, "uid": o.uid,
            "disabled_at": o.disabled_at.map(plan::rfc3339),
            "delete_due_at": o.delete_due_at.map(plan::rfc3339),
        })).collect::<Vec<_>>(),
        "runs": view.runs.iter().map(|r| json!({
            "id": r.id,
            "started_at": plan::rfc3339(r.started_at),
            "finished_at": r.finished_at.map(plan::rfc3339),
            "duration_seconds": duration(r),
            "command": command(r),
            "mode": r.mode,
            "scope": r.scope,
            "source_count": r.source_count,
            "verdict": r.verdict,
            "outcome": r.outcome,
            "summary": nested(&r.summary),
            "results": nested(&r.results),
            "error": r.error,
            "approval": view.approvals.get(&r.id).map(|a| json!({
                "removals": a.removals,
                "scope": a.scope,
                "approved_by": a.approved_by,
                "let_through": a.let_through,
            })),
        })).collect::<Vec<_>>(),
        "quarantined_by_reason": by_reason(&view.quarantine)
            .into_iter()
            .map(|(reason, n)| json!({"reason": reason, "count": n}))
            .collect::<Vec<_>>(),
        "quarantined": view.quarantine.iter().map(|q| json!({
            "dn": q.dn, "anchor": q.anchor, "uid": q.uid, "field": q.field, "reason": q.reason,
            "first_seen_at": plan::rfc3339(q.first_seen_at),
            "last_seen_at": plan::rfc3339(q.last_seen_at),
        })).collect::<Vec<_>>(),
    })
}

/// The incremental reads' marks; `null` for what is not stored.
fn incremental_json(i: &Incremental) -> Value {
    json!({
        "ldap": i.ldap.as_ref().map(|m| json!({
            "cookie_stored_at": plan::rfc3339(m.updated_at),
            "last_full_refresh_at": plan::rfc3339(m.full_at),
            "entries": i.ldap_entries,
        })),
        "tenant": i.tenant.as_ref().map(|m| json!({
            "stored_at": plan::rfc3339(m.updated_at),
            "last_full_read_at": plan::rfc3339(m.full_at),
        })),
        "kept_plan": i.kept.map(|(run, at)| json!({"run": run, "since": plan::rfc3339(at)})),
    })
}

/// Lines for what the incremental reads keep; none when nothing is stored.
fn incremental_text(out: &mut String, i: &Incremental, now: i64) {
    use std::fmt::Write as _;
    let when = |t: i64| format!("{} ({})", plan::rfc3339(t), ago(t, now));
    if let Some(m) = &i.ldap {
        let _ = writeln!(
            out,
            "incremental LDAP read: cookie stored {}, last full refresh {}, {} entries kept",
            when(m.updated_at),
            when(m.full_at),
            i.ldap_entries
        );
    }
    if let Some(m) = &i.tenant {
        let _ = writeln!(
            out,
            "incremental tenant read: stored {}, last full read {}",
            when(m.updated_at),
            when(m.full_at)
        );
    }
    if let Some((run, at)) = i.kept {
        let _ = writeln!(
            out,
            "quiet runs: the plan of run {run} stands while nothing changes (kept {})",
            when(at)
        );
    }
}

fn as_text(config: &Config, view: &View) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "state store: {}", config.state.path.display());
    let _ = writeln!(
        out,
        "last successful full sync: {}",
        match view.last_full_sync {
            Some(t) => format!("{} ({})", plan::rfc3339(t), ago(t, view.now)),
            None => "never".into(),
        }
    );
    let _ = match &view.daemon {
        Held::By(d) => writeln!(
            out,
            "daemon: {d}; next run {}",
            match d.next_run {
                Some(t) => plan::rfc3339(t),
                None => "not scheduled (a run is going on, or it is stopping)".into(),
            }
        ),
        Held::ByUnknown => writeln!(
            out,
            "daemon: running (its lock file does not say which process)"
        ),
        Held::Free => writeln!(out, "daemon: not running"),
    };
    match &view.running {
        Held::By(r) => {
            let _ = writeln!(out, "run in progress: {r}");
        }
        Held::ByUnknown => {
            let _ = writeln!(
                out,
                "run in progress (its lock file does not say which process)"
            );
        }
        Held::Free => {}
    }
    let _ = writeln!(
        out,
        "managed objects: {} active, {} disabled, {} deleted",
        count(view, Stage::Active),
        count(view, Stage::Disabled),
        count(view, Stage::Deleted)
    );
    let _ = writeln!(
        out,
        "removals: {} in the last 24 h of {}, {} in 7 d of {}",
        view.recent.last_24h,
        config.safety.deletes_per_24h(),
        view.recent.last_7d,
        config.safety.deletes_per_7d()
    );
    incremental_text(&mut out, &view.incremental, view.now);
    runs_table(&mut out, &view.runs, &view.approvals);
    let pending = pending(view);
    if !pending.is_empty() {
        let _ = writeln!(out, "\npending deletions ({}), by due date:", pending.len());
        for (day, n) in by_due_day(&pending) {
            let _ = writeln!(out, "  {day}  {n}");
        }
        let listed = pending
            .iter()
            .map(|o| format!("{:<16} due {}", o.uid, due_day(o)));
        list(&mut out, listed, pending.len());
    }
    if !view.quarantine.is_empty() {
        let _ = writeln!(out, "\nquarantined ({}), by reason:", view.quarantine.len());
        for (reason, n) in by_reason(&view.quarantine) {
            let _ = writeln!(out, "  {n:>5}  {reason}");
        }
        let listed = view
            .quarantine
            .iter()
            .map(|q| format!("{}\n      {}: {}", q.dn, q.field, q.reason));
        list(&mut out, listed, view.quarantine.len());
    }
    out
}

/// At most [`LISTED`] entries, then how many more there are.
fn list(out: &mut String, entries: impl Iterator<Item = String>, total: usize) {
    use std::fmt::Write as _;
    for e in entries.take(LISTED) {
        let _ = writeln!(out, "  - {e}");
    }
    if total > LISTED {
        let _ = writeln!(
            out,
            "  … and {} more (all of them: status --format json)",
            total - LISTED
        );
    }
}

fn runs_table(out: &mut String, runs: &[RunRecord], approvals: &BTreeMap<i64, ApprovalRecord>) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "\nlast runs:");
    if runs.is_empty() {
        let _ = writeln!(out, "  none yet");
        return;
    }
    let _ = writeln!(
        out,
        "  {:<5} {:<20} {:>8}  {:<15} {:<5} {:>12} {:>6}  {:<11} ERROR",
        "RUN", "STARTED", "DURATION", "COMMAND", "SCOPE", "CHANGES", "FAILED", "OUTCOME"
    );
    for r in runs {
        let (changes, failed) = changes(r);
        let _ = writeln!(
            out,
            "  {:<5} {:<20} {:>8}  {:<15} {:<5} {:>12} {:>6}  {:<11} {}",
            format!("#{}", r.id),
            plan::rfc3339(r.started_at),
            duration(r).map(span).unwrap_or_else(|| "-".into()),
            command(r),
            r.scope,
            changes.unwrap_or_else(|| "-".into()),
            failed.map(|f| f.to_string()).unwrap_or_else(|| "-".into()),
            r.outcome,
            r.error.as_deref().unwrap_or("")
        );
        if let Some(a) = approvals.get(&r.id) {
            let flag = match &a.scope {
                Some(s) => format!("--approve-removals {} --scope {s}", a.removals),
                None => format!("--max-deletes {}", a.removals),
            };
            let _ = writeln!(
                out,
                "        approved by {}: {flag}; {} {}{}",
                a.approved_by,
                // A dry run or a plan changed nothing: its approval only says who would go.
                if r.mode == "apply" {
                    "let through"
                } else {
                    "would let through"
                },
                a.let_through.len(),
                match a.let_through.len() {
                    0 => String::new(),
                    n if n <= LISTED => format!(" ({})", a.let_through.join(", ")),
                    n => format!(
                        " ({}, … and {} more)",
                        a.let_through[..LISTED].join(", "),
                        n - LISTED
                    ),
                }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_ages_read_plainly() {
        assert_eq!(span(12), "12s");
        assert_eq!(span(185), "3m 05s");
        assert_eq!(span(3720), "1h 02m");
        assert_eq!(ago(1000, 1090), "90 s ago");
        assert_eq!(ago(0, 3 * 3600), "3 h ago");
        assert_eq!(ago(0, 5 * 86_400), "5 days ago");
    }
}
