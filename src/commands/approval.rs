//! The operator's approvals of removals: the scope of `--approve-removals N --scope S`
//! resolved before planning (a filter needs LDAP; planning stays pure), and each approval
//! recorded with its run: N, the scope, who ran it and the removals it let through.

use std::collections::BTreeSet;

use super::CommandError;
use crate::apply::{ActionResult, Outcome};
use crate::cli;
use crate::config::Config;
use crate::plan::{Approval, Plan, ScopeMatch, ScopedApproval};
use crate::state::{ApprovalRecord, Store};

/// The approval of the command line, its scope resolved: a DN is a subtree of last-seen DNs;
/// a filter is searched once under `ldap.base_dn` for the anchors it matches.
pub(super) async fn resolve(
    config: &Config,
    args: &cli::Approval,
) -> Result<Option<ScopedApproval>, CommandError> {
    let (removals, scope) = match (args.approve_removals, &args.scope) {
        (None, None) => return Ok(None),
        (Some(n), Some(s)) => (n, s.trim().to_owned()),
        (Some(_), None) => {
            return Err(CommandError::Usage(
                "--approve-removals needs --scope (a DN or an LDAP filter)".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(CommandError::Usage(
                "--scope needs --approve-removals N".into(),
            ));
        }
    };
    let approval = Approval { removals, scope };
    let matcher = if approval.is_filter() {
        if !crate::source::filter::is_valid(&approval.scope) {
            return Err(CommandError::Usage(format!(
                "--scope {} is not a valid LDAP filter (RFC 4515)",
                approval.scope
            )));
        }
        let entries = crate::source::search_anchors(&config.ldap, &approval.scope).await?;
        let anchors: BTreeSet<_> = entries
            .iter()
            .filter_map(|e| crate::desired::anchor_of(e, &config.ldap.attributes))
            .collect();
        tracing::info!(
            scope = %approval.scope,
            entries = entries.len(),
            anchors = anchors.len(),
            "resolved the approval scope"
        );
        ScopeMatch::Anchors(anchors)
    } else {
        ScopeMatch::subtree(&approval.scope)
    };
    Ok(Some(ScopedApproval { approval, matcher }))
}

/// The approval `apply plan.json` plans with: the plan's. One given on the command line
/// too must be the same (a usage error otherwise): an approval is reviewed with its plan.
pub(super) fn of_plan(
    plan: &Plan,
    args: &cli::ApplyApproval,
    path: &std::path::Path,
) -> Result<cli::Approval, CommandError> {
    let planned = cli::Approval {
        approve_removals: plan.safety.approval.as_ref().map(|a| a.removals),
        scope: plan.safety.approval.as_ref().map(|a| a.scope.clone()),
    };
    let given = (args.approve_removals, args.scope.as_deref().map(str::trim));
    // The same scope written another way (a DN's case and spaces) is the same approval.
    let scope_key = |s: Option<&str>| {
        s.map(|s| match s.starts_with('(') {
            true => s.trim().to_owned(),
            false => crate::source::filter::normalize_dn(s),
        })
    };
    let same = given.0 == planned.approve_removals
        && scope_key(given.1) == scope_key(planned.scope.as_deref());
    if given != (None, None) && !same {
        let show = |n: Option<u32>, s: Option<&str>| match (n, s) {
            (Some(n), Some(s)) => format!("--approve-removals {n} --scope {s}"),
            _ => "no --approve-removals".to_owned(),
        };
        return Err(CommandError::Usage(format!(
            "{} was planned with {}, but this apply gives {}: make a new plan with the approval you mean",
            path.display(),
            show(planned.approve_removals, planned.scope.as_deref()),
            show(given.0, given.1)
        )));
    }
    Ok(planned)
}

/// Who runs the command: `$SUDO_USER` (the person behind `sudo`), else `$USER` or
/// `$LOGNAME`, else the name of the real uid in /etc/passwd, else `uid N`, else `unknown`.
pub(crate) fn login() -> String {
    for var in ["SUDO_USER", "USER", "LOGNAME"] {
        if let Ok(v) = std::env::var(var)
            && !v.trim().is_empty()
        {
            return v.trim().to_owned();
        }
    }
    let Some(uid) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        })
    else {
        return "unknown".into();
    };
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                (f.nth(1)? == uid).then(|| name.to_owned())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// Records the approval `plan` carries (if any) with run `run_id`. What it let through: the
/// removals carried out (`results` of a real run), else those the plan would carry out.
pub(super) async fn record(
    store: &Store,
    run_id: i64,
    plan: &Plan,
    results: Option<&[ActionResult]>,
    now: i64,
) -> Result<(), CommandError> {
    let (removals, scope) = match (&plan.safety.approval, plan.safety.approved_removals) {
        (Some(a), _) => (a.removals, Some(a.scope.clone())),
        (None, Some(n)) => (n, None),
        (None, None) => return Ok(()),
    };
    let mut let_through: Vec<String> = match results {
        Some(results) => results
            .iter()
            .filter(|r| r.op.is_removal())
            .filter(|r| matches!(r.outcome, Outcome::Done | Outcome::Pending(_)))
            .map(|r| r.uid.clone())
            .collect(),
        None if plan.safety.removals_go() => plan
            .actions
            .iter()
            .filter(|a| a.op.is_removal() && a.held.is_none())
            .map(|a| a.uid.clone())
            .collect(),
        None => Vec::new(),
    };
    let_through.sort();
    let record = ApprovalRecord {
        run_id,
        removals,
        scope,
        approved_by: login(),
        let_through,
        recorded_at: now,
    };
    tracing::info!(
        run = run_id,
        removals,
        scope = record.scope.as_deref().unwrap_or("(all)"),
        approved_by = %record.approved_by,
        let_through = record.let_through.len(),
        "approval recorded"
    );
    store.record_approval(&record).await?;
    Ok(())
}
