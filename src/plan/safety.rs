//! The safety verdict: guards against mass removal after a bad LDAP read or a bad change.
//!
//! A blocked plan still lists everything it would do, so the operator sees what was held back.
//! Besides the per-run caps, rolling windows (`safety.max_deletes_per_24h`, `_per_7d`) count
//! the removals earlier runs applied, so that many small runs cannot empty the address list
//! either. The operator approves removals with `--max-deletes N` (all of a run's removals, or
//! none when more are planned) or `--approve-removals N --scope S` (up to N within S; every
//! other removal is held in the plan, each with its reason).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{Action, Held, HeldOutcome, Scope, Summary};
use crate::config::SafetyConfig;
use crate::ids::Anchor;
use crate::source::filter::normalize_dn;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    Blocked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Safety {
    pub verdict: Verdict,
    pub reasons: Vec<String>,
    /// `--max-deletes N` of the run: the removals the operator approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_removals: Option<u32>,
    /// `--approve-removals N --scope S` of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    /// Removals the approval did not cover, held in the plan (`held.outcome = skipped`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub held_removals: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Safety {
    /// Whether apply carries out the removals the plan does not hold: always under a scoped
    /// approval (the plan holds every removal it does not cover), else only when not blocked.
    pub fn removals_go(&self) -> bool {
        self.verdict == Verdict::Ok || self.approval.is_some()
    }
}

/// The operator's `--approve-removals N --scope S`, as the plan records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// N: at most this many removals within the scope go.
    pub removals: u32,
    /// S: a DN (a subtree) or an LDAP filter (starting with `(`), as given.
    pub scope: String,
}

impl Approval {
    /// Whether the scope is an LDAP filter (else a DN).
    pub fn is_filter(&self) -> bool {
        self.scope.trim_start().starts_with('(')
    }
}

/// Which leavers a scope covers. Resolved before planning, since a filter needs LDAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeMatch {
    /// A subtree, by its normalised DN: a leaver whose last-seen DN is it or below it.
    Subtree(String),
    /// The anchors of the entries under `ldap.base_dn` that the filter matched.
    Anchors(BTreeSet<Anchor>),
}

impl ScopeMatch {
    pub fn subtree(dn: &str) -> Self {
        ScopeMatch::Subtree(normalize_dn(dn))
    }

    pub(super) fn covers(&self, anchor: &Anchor, dn: &str) -> bool {
        match self {
            ScopeMatch::Subtree(base) => {
                let dn = normalize_dn(dn);
                dn == *base
                    || dn.strip_suffix(base.as_str()).is_some_and(|head| {
                        // `uid=x,ou=a` is below `ou=a`; `uid=x,xou=a` is not.
                        head.ends_with(',') && !head.ends_with("\\,")
                    })
            }
            ScopeMatch::Anchors(anchors) => anchors.contains(anchor),
        }
    }
}

/// An approval with its scope resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopedApproval {
    pub approval: Approval,
    pub matcher: ScopeMatch,
}

/// Removals (disables and deletes) earlier runs applied in the rolling windows before now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentRemovals {
    pub last_24h: u64,
    pub last_7d: u64,
}

/// What a scoped approval did to the plan's removals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ApprovalTally {
    pub approved: usize,
    pub outside: usize,
    pub beyond: usize,
    /// Held because LDAP returned nothing: no approval covers an empty read.
    pub empty: usize,
}

impl ApprovalTally {
    fn held(&self) -> usize {
        self.outside + self.beyond + self.empty
    }
}

/// Holds every removal a scoped approval does not cover: those outside its scope, and those
/// in it beyond the first N in plan order (`actions` is sorted), so which ones go is
/// deterministic. Removals already held for another reason are left as they are.
pub(super) fn hold_unapproved(
    actions: &mut [Action],
    summary: &mut Summary,
    scoped: &ScopedApproval,
    empty_read: bool,
) -> ApprovalTally {
    let mut t = ApprovalTally::default();
    let n = scoped.approval.removals as usize;
    let scope = &scoped.approval.scope;
    for a in actions
        .iter_mut()
        .filter(|a| a.op.is_removal() && a.held.is_none())
    {
        let reason = if empty_read {
            t.empty += 1;
            "LDAP returned no entries; no approval lets a removal through".to_owned()
        } else if !scoped.matcher.covers(&a.anchor, &a.dn) {
            t.outside += 1;
            match scoped.approval.is_filter() {
                // A filter is matched by slapd, which no longer has a deleted entry.
                true => format!(
                    "not matched by the approved filter {scope} (a filter sees only entries still in LDAP; approve a deleted entry by its DN subtree, e.g. --scope {})",
                    parent_dn(&a.dn)
                ),
                false => format!("outside the approved scope {scope}"),
            }
        } else if t.approved < n {
            t.approved += 1;
            continue;
        } else {
            t.beyond += 1;
            format!(
                "in the scope {scope}, but beyond the {n} removals approved with --approve-removals"
            )
        };
        super::hold(
            summary,
            a,
            Held {
                outcome: HeldOutcome::Skipped,
                reason,
            },
        );
    }
    t
}

pub(super) struct Facts<'a> {
    pub scope: Scope,
    pub source_count: u64,
    pub baseline: Option<u64>,
    /// Removals the plan carries out (not held).
    pub removals: usize,
    /// Managed objects that are not deleted: the base of the percentage cap.
    pub managed: usize,
    pub config: &'a SafetyConfig,
    pub max_deletes: Option<u32>,
    /// Removals applied in the rolling windows before this run.
    pub recent: RecentRemovals,
    /// A scoped approval and what it held.
    pub approval: Option<(&'a Approval, ApprovalTally)>,
}

pub(super) fn verdict(f: &Facts) -> Safety {
    let mut reasons = Vec::new();
    // An empty read is never approved: no explicit flag makes "everyone left" plausible.
    if f.scope == Scope::Full && f.source_count == 0 {
        reasons.push("LDAP returned no entries; refusing to treat everyone as leaving".to_owned());
    }
    if let Some((approval, t)) = f.approval {
        // The approved removals are the operator's decision: caps, windows and the shrink
        // guard do not apply to them. The run is blocked while any removal is held, because
        // the operator still has to act on those.
        let mut parts = Vec::new();
        if t.outside > 0 {
            parts.push(format!(
                "{} outside the scope {}",
                t.outside, approval.scope
            ));
        }
        if t.beyond > 0 {
            parts.push(format!(
                "{} in the scope beyond the {} approved with --approve-removals",
                t.beyond, approval.removals
            ));
        }
        if !parts.is_empty() {
            reasons.push(format!(
                "{} held back ({}); {} approved removal{} ahead",
                removals(t.outside + t.beyond),
                parts.join(", "),
                t.approved,
                if t.approved == 1 { " goes" } else { "s go" }
            ));
        }
        return Safety {
            verdict: if reasons.is_empty() {
                Verdict::Ok
            } else {
                Verdict::Blocked
            },
            reasons,
            approved_removals: None,
            approval: Some(approval.clone()),
            held_removals: t.held(),
        };
    }
    // `--max-deletes N` is the operator's approval of every removal of the run: it replaces
    // the configured caps, windows and the shrink guard for this run, as long as the
    // removals stay within N.
    let approved = f.max_deletes.is_some_and(|n| f.removals <= n as usize);
    if let Some(n) = f.max_deletes
        && f.removals > n as usize
    {
        reasons.push(format!(
            "{} planned, more than the {n} approved with --max-deletes",
            removals(f.removals)
        ));
    }
    if !approved {
        if let (Scope::Full, Some(base)) = (f.scope, f.baseline)
            && base > 0
            && f.source_count < base
        {
            let shrink = (base - f.source_count) as f64 * 100.0 / base as f64;
            if shrink > f.config.max_source_shrink_percent {
                reasons.push(format!(
                        "LDAP returned {} entries, {shrink:.1}% fewer than the {base} of the last good run (limit {}%)",
                        f.source_count, f.config.max_source_shrink_percent
                    ));
            }
        }
        if f.max_deletes.is_none() {
            let cap = f.config.max_deletes_per_run as usize;
            if f.removals > cap {
                reasons.push(format!(
                    "{} (disable + delete) planned, more than safety.max_deletes_per_run = {cap}",
                    removals(f.removals)
                ));
            }
            if f.managed > 0 && f.removals > 0 {
                let share = f.removals as f64 * 100.0 / f.managed as f64;
                if share > f.config.max_delete_percent {
                    reasons.push(format!(
                        "{} {} {share:.1}% of the {} managed objects, more than safety.max_delete_percent = {}%",
                        removals(f.removals), if f.removals == 1 { "is" } else { "are" }, f.managed, f.config.max_delete_percent
                    ));
                }
            }
            for (window, key, done, cap) in [
                (
                    "24 h",
                    "max_deletes_per_24h",
                    f.recent.last_24h,
                    f.config.deletes_per_24h(),
                ),
                (
                    "7 days",
                    "max_deletes_per_7d",
                    f.recent.last_7d,
                    f.config.deletes_per_7d(),
                ),
            ] {
                if f.removals > 0 && done + f.removals as u64 > u64::from(cap) {
                    reasons.push(format!(
                        "{} planned and {done} already applied in the last {window}, more than safety.{key} = {cap}",
                        removals(f.removals)
                    ));
                }
            }
        }
    }
    Safety {
        verdict: if reasons.is_empty() {
            Verdict::Ok
        } else {
            Verdict::Blocked
        },
        reasons,
        approved_removals: f.max_deletes,
        approval: None,
        held_removals: 0,
    }
}

/// "1 removal", "2 removals".
fn removals(n: usize) -> String {
    format!("{n} removal{}", if n == 1 { "" } else { "s" })
}

/// The DN one level up (`uid=a,ou=people,dc=x` → `ou=people,dc=x`); the DN itself when it
/// has no parent. Splits at the first comma that is not escaped (RFC 4514).
fn parent_dn(dn: &str) -> &str {
    let bytes = dn.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b',' => return dn[i + 1..].trim_start(),
            _ => i += 1,
        }
    }
    dn
}
