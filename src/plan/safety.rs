//! The safety verdict: guards against mass removal after a bad LDAP read or a bad change.
//!
//! A blocked plan still lists everything it would do, so the operator sees what was held back.

use serde::{Deserialize, Serialize};

use super::Scope;
use crate::config::SafetyConfig;

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
}

pub(super) struct Facts<'a> {
    pub scope: Scope,
    pub source_count: u64,
    pub baseline: Option<u64>,
    pub removals: usize,
    /// Managed objects that are not deleted: the base of the percentage cap.
    pub managed: usize,
    pub config: &'a SafetyConfig,
    pub max_deletes: Option<u32>,
}

pub(super) fn verdict(f: &Facts) -> Safety {
    let mut reasons = Vec::new();
    // An empty read is never approved: no explicit flag makes "everyone left" plausible.
    if f.scope == Scope::Full && f.source_count == 0 {
        reasons.push("LDAP returned no entries; refusing to treat everyone as leaving".to_owned());
    }
    // `--max-deletes N` is the operator's scoped approval: it replaces the configured caps and
    // the shrink guard for this run, as long as the removals stay within N.
    let approved = f.max_deletes.is_some_and(|n| f.removals <= n as usize);
    if let Some(n) = f.max_deletes
        && f.removals > n as usize
    {
        reasons.push(format!(
            "{} removals planned, more than the {n} approved with --max-deletes",
            f.removals
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
                    "{} removals (disable + delete) planned, more than safety.max_deletes_per_run = {cap}",
                    f.removals
                ));
            }
            if f.managed > 0 && f.removals > 0 {
                let share = f.removals as f64 * 100.0 / f.managed as f64;
                if share > f.config.max_delete_percent {
                    reasons.push(format!(
                        "{} removals are {share:.1}% of the {} managed objects, more than safety.max_delete_percent = {}%",
                        f.removals, f.managed, f.config.max_delete_percent
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
    }
}
