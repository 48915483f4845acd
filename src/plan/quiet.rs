//! Quiet runs: when nothing a plan is made from changed since a converged run, that run's
//! plan is the plan, without mapping the directory or planning again.
//!
//! A plan is a pure function of its inputs ([`super::plan`] is deterministic). With both
//! incremental reads on (`ldap.content_sync`, `tenant.incremental_read`) a run can prove most
//! of them unchanged at a cost that does not grow with the directory:
//!
//! - LDAP: a refresh from the stored cookie that sends no entry other than as stored (a
//!   password change sends the entry again, with every attribute ldap2exo reads unchanged)
//!   and after which every stored entry is still there (none named as gone; with a present
//!   phase, each named present or sent); the stored entries, committed with that cookie,
//!   are then the directory.
//! - The tenant: a Graph delta round with no user removed and every user it lists exactly as
//!   stored, and an Exchange change query whose every recipient is exactly as stored; the
//!   soft-deleted MailUsers and the licence counts, which are read in full anyway, as their
//!   digest says.
//! - The state store: the planning generation (a counter the database's triggers bump on
//!   every write to the managed objects, the journal and the migration cohort) and the
//!   baseline of the shrink guard.
//! - Everything else a plan depends on: the build of ldap2exo (its version, and its
//!   executable's size and time, so a rebuild from changed sources plans afresh) and the
//!   configuration.
//! - Time: the planner's only clock-driven decision is the end of a grace period; a disabled
//!   object whose grace ends between the stored plan's `now` and this run's makes it stale.
//!
//! [`Inputs::digest`] hashes the second to fourth; a real run keeps its plan with the digest
//! of what it committed ([`keepable`]), and a later run takes it when its own digest matches
//! ([`taken`]). Only plans that change nothing are kept: every action held, verdict ok, the
//! whole directory, no approval. The run that keeps it must also have committed both reads
//! and left the planning generation where it found it. Any doubt plans in full.

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Plan, Verdict};

/// What a plan is made from, besides the stored LDAP entries, tenant rows and state rows
/// the marks and the generation stand for.
#[derive(Debug, Serialize)]
pub struct Inputs<'a> {
    /// Which build of ldap2exo plans: a plan of another build is never taken.
    pub build: &'a str,
    /// The configuration as `Debug` prints it (secrets print redacted).
    pub config: &'a str,
    /// [`crate::state::Store::planning_generation`].
    pub generation: i64,
    /// [`crate::state::Store::baseline`].
    pub baseline: Option<u64>,
    /// The LDAP cookie the stored entries belong to.
    pub ldap_cookie: &'a [u8],
    /// The Graph delta link the stored users belong to.
    pub delta_link: &'a str,
    /// When the Exchange listing of the stored recipients started (Unix seconds): it moves
    /// with every stored tenant read, so a plan is only taken with the rows its run stored.
    pub exchange_since: i64,
    /// [`crate::inventory::incremental::Read::fixed`].
    pub fixed: &'a str,
}

impl Inputs<'_> {
    /// SHA-256 (hex) of the inputs.
    pub fn digest(&self) -> String {
        let json = serde_json::to_string(self).expect("inputs serialise");
        format!("{:x}", Sha256::digest(json.as_bytes()))
    }
}

/// Whether `plan` may be taken again while its inputs stay the same: it changes nothing
/// (every action held: a conflict, a missing licence), its verdict is ok, and it covers the
/// whole directory without an approval (those belong to one run).
pub fn keepable(plan: &Plan) -> bool {
    plan.safety.verdict == Verdict::Ok
        && plan.safety.approval.is_none()
        && plan.safety.approved_removals.is_none()
        && plan.source.scope == "full"
        && plan.source.only.is_empty()
        && plan.drift.is_empty()
        && plan.actions.iter().all(|a| a.held.is_some())
}

/// `plan` as kept: without what belongs to its run (the read reports).
pub fn stored(plan: &Plan) -> String {
    let mut plan = plan.clone();
    plan.source.read = None;
    plan.tenant_read = None;
    plan.unchanged_since_run = None;
    plan.partial = None;
    serde_json::to_string(&plan).expect("a plan serialises")
}

/// The kept plan `json` of run `run_id` as this run's plan, made `now` (Unix seconds);
/// `None` when it cannot be read or is not [`keepable`] (then the run plans in full).
pub fn taken(json: &str, run_id: i64, now: i64) -> Option<Plan> {
    let mut plan: Plan = serde_json::from_str(json).ok()?;
    if !keepable(&plan) {
        return None;
    }
    plan.generated_at = super::rfc3339(now);
    plan.unchanged_since_run = Some(run_id);
    Some(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A converged plan of the whole directory with `actions`.
    fn plan(actions: serde_json::Value) -> Plan {
        serde_json::from_value(json!({
            "generated_at": "2026-09-01T00:00:00Z",
            "source": {"entries": 3, "skipped_no_mail": 0, "disabled_in_ldap": 0, "scope": "full",
                       "read": {"mode": "incremental", "changed": 0, "removed": 0}},
            "tenant_read": {"mode": "full", "reason": "first", "changed": 9, "removed": 0},
            "summary": {"create": 0, "update": 0, "convert": 0, "disable": 0, "enable": 0,
                        "delete": 0, "purge": 0, "unchanged": 3, "held": 0, "quarantined": 0},
            "safety": {"verdict": "ok", "reasons": []},
            "actions": actions,
            "quarantined": [],
        }))
        .expect("a plan")
    }

    fn create(held: bool) -> serde_json::Value {
        let mut a = json!({"op": "create", "anchor": "8f2b6c1e-0000-4000-8000-000000000001",
            "uid": "nnew", "kind": "mail_user", "dn": "uid=nnew,dc=x", "changes": {}});
        if held {
            a["held"] = json!({"outcome": "conflict", "reason": "address taken"});
        }
        a
    }

    #[test]
    fn only_a_plan_that_changes_nothing_is_kept() {
        assert!(keepable(&plan(json!([]))));
        assert!(
            keepable(&plan(json!([create(true)]))),
            "held actions change nothing"
        );
        assert!(!keepable(&plan(json!([create(false)]))));
        let mut blocked = plan(json!([]));
        blocked.safety.verdict = Verdict::Blocked;
        assert!(!keepable(&blocked));
        let mut only = plan(json!([]));
        only.source.scope = "only".into();
        assert!(!keepable(&only));
        let mut approved = plan(json!([]));
        approved.safety.approved_removals = Some(2);
        assert!(!keepable(&approved));
    }

    #[test]
    fn a_kept_plan_comes_back_as_this_runs_plan() {
        let original = plan(json!([create(true)]));
        let json = stored(&original);
        assert!(
            !json.contains("tenant_read") && !json.contains("\"read\""),
            "{json}"
        );
        let taken = taken(&json, 41, 1_800_000_000).expect("taken");
        assert_eq!(taken.unchanged_since_run, Some(41));
        assert_eq!(taken.generated_at, "2027-01-15T08:00:00Z");
        assert_eq!(taken.actions, original.actions);
        assert_eq!(taken.summary, original.summary);
        assert_eq!(taken.source.read, None, "the run sets its own read reports");
        assert!(super::taken("{not json", 41, 0).is_none());
        let unheld = stored(&plan(json!([create(false)])));
        assert!(
            super::taken(&unheld, 41, 0).is_none(),
            "never applies a change"
        );
    }

    fn inputs(config: &str) -> Inputs<'_> {
        Inputs {
            build: "0.1.0 1234",
            config,
            generation: 7,
            baseline: Some(100),
            ldap_cookie: b"rid=000,csn=1",
            delta_link: "https://graph/delta?token=1",
            exchange_since: 1_700_000_000,
            fixed: "abc",
        }
    }

    #[test]
    fn every_input_moves_the_digest() {
        let base = inputs("cfg").digest();
        assert_eq!(base, inputs("cfg").digest(), "deterministic");
        assert_eq!(base.len(), 64);
        let changed = [
            inputs("cfg2").digest(),
            Inputs {
                build: "0.1.1 1234",
                ..inputs("cfg")
            }
            .digest(),
            Inputs {
                generation: 8,
                ..inputs("cfg")
            }
            .digest(),
            Inputs {
                baseline: None,
                ..inputs("cfg")
            }
            .digest(),
            Inputs {
                ldap_cookie: b"rid=000,csn=2",
                ..inputs("cfg")
            }
            .digest(),
            Inputs {
                delta_link: "x",
                ..inputs("cfg")
            }
            .digest(),
            Inputs {
                exchange_since: 1,
                ..inputs("cfg")
            }
            .digest(),
            Inputs {
                fixed: "abd",
                ..inputs("cfg")
            }
            .digest(),
        ];
        for d in changed {
            assert_ne!(d, base);
        }
    }
}
