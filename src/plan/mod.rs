//! plan: the pure diff of what LDAP wants (`desired`) against what the state store says the
//! tenant holds, plus the safety verdict. No I/O.
//!
//! A [`Plan`] is data: serialisable, printable, and complete enough that applying it needs no
//! further decisions. Every action carries the anchor it is keyed by and, per field, the value
//! before and after.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::SafetyConfig;
use crate::desired::{Desired, Kind, Quarantined};
use crate::ids::Anchor;
use crate::inventory::Inventory;
use crate::state::{ManagedObject, Stage};

pub mod bill;
mod changes;
mod compare;
mod field;
mod fields;
mod handover;
mod licences;
pub mod partial;
pub mod quiet;
mod reanchor;
mod safety;
mod tenant_conflicts;

pub use changes::{Change, Changes, show_value};
pub use compare::{Moved, digest, moved, unexplained};
pub use field::{Api, Field, NEW_MAIL_USER_FIELDS, POST_USER_FIELDS, UnknownField, Writer};
pub use fields::Fields;
pub use handover::{claimed_values, released_values};
pub use licences::LicenceBill;
pub use safety::{Approval, RecentRemovals, Safety, ScopeMatch, ScopedApproval, Verdict};

/// State-store field that lists former primary addresses kept as aliases after a rename.
pub const RETAINED: &str = "retainedAddresses";
/// Pseudo-fields a lifecycle action changes; they are not LDAP-derived attributes.
pub const ACCOUNT_ENABLED: &str = "accountEnabled";
pub const HIDDEN: &str = "hiddenFromAddressLists";
pub const KIND: &str = "kind";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Create,
    Update,
    Convert,
    Disable,
    Enable,
    Delete,
    /// Permanently deletes a deleted object of ours from the tenant's recycle bin, because a
    /// newcomer needs an address, UPN or `Name` it still holds.
    Purge,
}

impl Op {
    pub const ALL: [Op; 7] = [
        Op::Create,
        Op::Update,
        Op::Convert,
        Op::Disable,
        Op::Enable,
        Op::Delete,
        Op::Purge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Update => "update",
            Op::Convert => "convert",
            Op::Disable => "disable",
            Op::Enable => "enable",
            Op::Delete => "delete",
            Op::Purge => "purge",
        }
    }

    /// Disables and deletes take people out of the address list: the safety caps count them.
    pub fn is_removal(self) -> bool {
        matches!(self, Op::Disable | Op::Delete)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub op: Op,
    pub anchor: Anchor,
    pub uid: String,
    pub kind: Kind,
    pub dn: String,
    pub changes: Changes,
    /// Why a lifecycle action happens (leaving, back, grace period over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Set when the plan already knows, from the tenant it read, that this action cannot be
    /// carried out (a UPN held by an object we do not manage, no licence free): apply sends
    /// nothing for it and reports the reason as its outcome. Counted in `summary.held`, not
    /// under its op.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Held>,
    /// When the action runs: every `release` action finishes before any `main` action
    /// starts, so an address, UPN or `Name` changing hands in one run is free before its new
    /// owner claims it, whatever the concurrency.
    #[serde(default, skip_serializing_if = "Phase::is_main")]
    pub phase: Phase,
}

/// The two ordered phases of a run (see [`Action::phase`]).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Only gives up addresses, UPNs or `Name`s that another action of the run claims.
    Release,
    #[default]
    Main,
}

impl Phase {
    pub fn is_main(&self) -> bool {
        *self == Phase::Main
    }
}

/// Why a planned action will not be carried out, and how its outcome is reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub outcome: HeldOutcome,
    /// Names the holder of what the person needs, or the missing resource.
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldOutcome {
    /// Somebody else holds an address, UPN or `Name` the person needs.
    Conflict,
    /// The tenant lacks what the action needs (a free licence).
    Failed,
    /// A removal the operator's scoped approval does not cover: held back by the safety
    /// gate, not attempted (reported as skipped).
    Skipped,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub convert: usize,
    pub disable: usize,
    pub enable: usize,
    pub delete: usize,
    #[serde(default)]
    pub purge: usize,
    pub unchanged: usize,
    pub quarantined: usize,
    /// Actions the plan knows cannot be carried out ([`Action::held`]); not counted above.
    #[serde(default)]
    pub held: usize,
}

impl Summary {
    pub fn count(&self, op: Op) -> usize {
        match op {
            Op::Create => self.create,
            Op::Update => self.update,
            Op::Convert => self.convert,
            Op::Disable => self.disable,
            Op::Enable => self.enable,
            Op::Delete => self.delete,
            Op::Purge => self.purge,
        }
    }

    /// The counter of `op`.
    fn slot(&mut self, op: Op) -> &mut usize {
        match op {
            Op::Create => &mut self.create,
            Op::Update => &mut self.update,
            Op::Convert => &mut self.convert,
            Op::Disable => &mut self.disable,
            Op::Enable => &mut self.enable,
            Op::Delete => &mut self.delete,
            Op::Purge => &mut self.purge,
        }
    }

    fn bump(&mut self, op: Op) {
        *self.slot(op) += 1;
    }

    pub fn removals(&self) -> usize {
        self.disable + self.delete
    }
}

/// What the source read, for the report header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    pub entries: usize,
    pub skipped_no_mail: usize,
    /// Entries matching the disabled rule (planned as leaving).
    pub disabled_in_ldap: usize,
    /// `full` or `only`.
    pub scope: String,
    /// The uids of an `--only` run (so `apply plan.json` can plan the same people again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only: Vec<String>,
    /// How LDAP was read (`ldap.content_sync` only): incremental, full or paged, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<crate::source::incremental::ReadReport>,
}

/// Something the tenant showed that the state store did not expect, and what the plan does
/// about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftNote {
    pub anchor: Anchor,
    pub uid: String,
    /// `adopted`, `missing`, `changed` or `duplicate`.
    pub kind: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// RFC 3339, UTC.
    pub generated_at: String,
    pub source: SourceInfo,
    /// How the tenant was read (`tenant.incremental_read` only): incremental or full, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_read: Option<crate::source::incremental::ReadReport>,
    pub summary: Summary,
    pub safety: Safety,
    pub actions: Vec<Action>,
    pub quarantined: Vec<Quarantined>,
    /// Differences between the tenant and the state store found before planning.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<DriftNote>,
    /// What the operator should know that changes nobody's outcome by itself: a value chosen
    /// among several, too few licences.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
    /// The mailbox licences the plan needs against those free ([`licences`]); `None` when
    /// the tenant's licences were not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licences: Option<LicenceBill>,
    /// The requests apply will send per service and how long they take at `[tenant.budget]`
    /// ([`bill`]); set by the commands after planning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bill: Option<bill::Bill>,
    /// Set when nothing this plan is made from changed since run N, whose plan it is: the
    /// directory was not mapped nor planned again ([`quiet`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unchanged_since_run: Option<i64>,
    /// Set when the plan was made for the people the changes since run N touch, everybody
    /// else as that run planned them ([`partial`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<Partially>,
}

/// What a partial plan planned ([`Plan::partial`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partially {
    /// The run whose plan it completes.
    pub since_run: i64,
    /// LDAP entries mapped.
    pub entries: usize,
    /// Anchors planned.
    pub anchors: usize,
}

/// A note for the operator about one entry (or, without `dn`, about the whole run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    /// The LDAP entry it is about; empty for the run as a whole.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The configuration field (`surname`, `aliases`, …) or topic (`licences`).
    pub field: String,
    pub message: String,
}

/// Whether the run covers everyone or just `--only` people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Full,
    Only,
}

/// Everything the planner looks at. Time is an input so that planning stays pure and tests
/// can move the clock.
pub struct Input<'a> {
    /// Consumed: each recipient's values move into its action.
    pub desired: Desired,
    pub objects: &'a [ManagedObject],
    /// Source size of the last good full run, for the shrink guard.
    pub baseline: Option<u64>,
    pub scope: Scope,
    pub safety: &'a SafetyConfig,
    /// `--max-deletes N`: the operator approves up to N removals this run.
    pub max_deletes: Option<u32>,
    /// `--approve-removals N --scope S`, its scope resolved.
    pub approval: Option<&'a ScopedApproval>,
    /// Removals earlier runs applied in the rolling windows (read from the state store).
    pub recent_removals: RecentRemovals,
    /// The tenant as read at the start of the run, when it could be read (a dry run without
    /// credentials plans against the state store alone): who holds the addresses, UPNs and
    /// `Name`s the plan wants, and the licences.
    pub tenant: Option<&'a Inventory>,
    /// Anchors whose create was journaled as sent by an earlier run
    /// ([`crate::state::Store::journaled_creates`]): an unstamped object with exactly their
    /// planned UPN and Name may be their own, which apply adopts; not a conflict to plan.
    pub journaled_creates: &'a BTreeSet<Anchor>,
    pub now: i64,
    /// What a partial plan leaves out ([`partial`]); zero for a plan of everybody.
    pub outside: Outside,
}

/// The totals of the people a partial plan leaves out ([`partial`]): none of them has an
/// action, so they only add to the counts. `desired.source_count` is already the whole
/// directory's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outside {
    /// Entries without a mail address.
    pub skipped_no_mail: usize,
    /// Entries matching the disabled rule.
    pub disabled_in_ldap: usize,
    /// State rows not deleted (the safety caps count them).
    pub managed: usize,
    /// People counted as unchanged.
    pub unchanged: usize,
}

/// Computes the plan. Deterministic: the same input always gives the same plan.
pub fn plan(input: Input) -> Plan {
    let Desired {
        recipients,
        quarantined,
        disabled,
        skipped_no_mail,
        source_count,
        warnings,
    } = input.desired;
    let objects: BTreeMap<&Anchor, &ManagedObject> =
        input.objects.iter().map(|o| (&o.anchor, o)).collect();
    let wanted: BTreeSet<Anchor> = recipients.iter().map(|r| r.anchor.clone()).collect();
    let held: BTreeSet<&Anchor> = quarantined
        .iter()
        .filter_map(|q| q.anchor.as_ref())
        .collect();
    let disabled_in_ldap: BTreeSet<&Anchor> = disabled.iter().map(|d| &d.anchor).collect();
    // Every address some LDAP entry claims now: a former primary is kept as an alias only
    // while nobody else claims it. Only a state row has a former primary: a first run
    // (no rows) needs none of the set, and at 50,000 people building it costs 25 ms.
    let claimed: HashSet<String> = match input.objects.is_empty() {
        true => HashSet::new(),
        false => recipients
            .iter()
            .flat_map(|r| std::iter::once(&r.primary).chain(&r.secondary))
            .map(|a| a.to_string())
            .collect(),
    };

    // At most one action per recipient and one per state row before the handover phase:
    // sized once, the list of 50,000 creates is not copied as it grows.
    let mut actions = Vec::with_capacity(recipients.len() + input.objects.len());
    let mut summary = Summary::default();

    for r in recipients {
        let existing = objects
            .get(&r.anchor)
            .copied()
            .filter(|o| o.stage != Stage::Deleted);
        let who = Who {
            anchor: r.anchor.clone(),
            uid: r.uid.clone(),
            kind: r.kind,
            dn: r.dn.clone(),
        };
        let hidden = r.hidden;
        let target = target_fields(r.into_fields(), who.kind, existing, &claimed);
        let action = match existing {
            None => {
                let changes = target
                    .into_iter()
                    .map(|(k, v)| (k.as_str(), (None, Some(v))))
                    .collect();
                Some(who.action(Op::Create, changes, None))
            }
            Some(obj) => {
                let mut changes = diff(&obj.attributes, target);
                if obj.stage == Stage::Disabled {
                    if obj.kind == Kind::Mailbox {
                        changes.insert(
                            ACCOUNT_ENABLED,
                            (Some(Value::Bool(false)), Some(Value::Bool(true))),
                        );
                    }
                    changes.insert(HIDDEN, (Some(Value::Bool(true)), Some(Value::Bool(hidden))));
                    Some(who.action(
                        Op::Enable,
                        changes,
                        Some("back in LDAP within the grace period".into()),
                    ))
                } else if obj.kind != who.kind {
                    changes.insert(
                        KIND,
                        (
                            Some(Value::from(obj.kind.as_str())),
                            Some(Value::from(who.kind.as_str())),
                        ),
                    );
                    let why = match who.kind {
                        Kind::Mailbox => {
                            "forward into the tenant: the mailbox moved to Exchange Online"
                        }
                        Kind::MailUser => {
                            "forward into the tenant removed: the mailbox is on-premises again"
                        }
                    };
                    Some(who.action(Op::Convert, changes, Some(why.into())))
                } else if !changes.is_empty() {
                    Some(who.action(Op::Update, changes, None))
                } else {
                    None
                }
            }
        };
        match action {
            Some(a) => {
                summary.bump(a.op);
                actions.push(a);
            }
            None => summary.unchanged += 1,
        }
    }

    for obj in input.objects {
        if wanted.contains(&obj.anchor) || obj.stage == Stage::Deleted {
            continue;
        }
        let ldap_disabled = disabled_in_ldap.contains(&obj.anchor);
        // `--only` plans just the named people: nobody else is planned as leaving, but a
        // named person whom LDAP marks disabled is.
        if input.scope == Scope::Only && !ldap_disabled {
            continue;
        }
        // A quarantined entry is still in LDAP: its person is not leaving, whatever is wrong
        // with the entry, so its tenant object is left as it is.
        if held.contains(&obj.anchor) {
            summary.unchanged += 1;
            continue;
        }
        let lifecycle = match obj.stage {
            Stage::Active => {
                let why = if ldap_disabled {
                    "marked disabled in LDAP (ldap.rules.disabled_filter)"
                } else {
                    "no longer matched by the LDAP filter"
                };
                let mut changes = Changes::default();
                // MailUsers never sign in; only a mailbox owner's sign-in is blocked.
                if obj.kind == Kind::Mailbox {
                    changes.insert(
                        ACCOUNT_ENABLED,
                        (Some(Value::Bool(true)), Some(Value::Bool(false))),
                    );
                }
                changes.insert(
                    HIDDEN,
                    (obj.attributes.get(HIDDEN).cloned(), Some(Value::Bool(true))),
                );
                Some((Op::Disable, changes, why.to_owned()))
            }
            Stage::Disabled if obj.delete_due_at.is_some_and(|due| due <= input.now) => Some((
                Op::Delete,
                Changes::default(),
                format!(
                    "grace period of {} days ended (disabled {})",
                    input.safety.grace_period_days,
                    obj.disabled_at.map(rfc3339).unwrap_or_default()
                ),
            )),
            _ => None,
        };
        match lifecycle {
            Some((op, changes, why)) => {
                summary.bump(op);
                actions.push(Action {
                    op,
                    anchor: obj.anchor.clone(),
                    uid: obj.uid.clone(),
                    kind: obj.kind,
                    dn: obj.dn.clone(),
                    changes,
                    reason: Some(why),
                    held: None,
                    phase: Phase::Main,
                });
            }
            None => summary.unchanged += 1,
        }
    }

    let gone: BTreeSet<&Anchor> = input
        .objects
        .iter()
        // A quarantined entry is still in LDAP: its anchor is not gone.
        .filter(|o| {
            !wanted.contains(&o.anchor)
                && !disabled_in_ldap.contains(&o.anchor)
                && !held.contains(&o.anchor)
        })
        .map(|o| &o.anchor)
        .collect();
    reanchor::pair_anchor_changes(
        &mut actions,
        &objects,
        &gone,
        &claimed,
        input.tenant,
        input.scope,
        &mut summary,
    );
    let mut warnings = warnings;
    if let Some(tenant) = input.tenant {
        tenant_conflicts::hold_foreign_claims(
            &mut actions,
            input.objects,
            tenant,
            input.journaled_creates,
            &mut summary,
            &mut warnings,
        );
    }
    let by_phase_op_uid = |a: &Action, b: &Action| {
        (a.phase, a.op, &a.uid, &a.anchor).cmp(&(b.phase, b.op, &b.uid, &b.anchor))
    };
    actions.sort_by(by_phase_op_uid);
    summary.quarantined = quarantined.len();
    summary.unchanged += input.outside.unchanged;
    let managed = input
        .objects
        .iter()
        .filter(|o| o.stage != Stage::Deleted)
        .count()
        + input.outside.managed;
    // A scoped approval holds, in plan order, every removal it does not cover.
    let approval = input.approval.map(|scoped| {
        let empty = input.scope == Scope::Full && source_count == 0;
        let tally = safety::hold_unapproved(&mut actions, &mut summary, scoped, empty);
        (&scoped.approval, tally)
    });
    // Handovers add no removals, so the verdict can be known before them; they need it to
    // know which leavers really leave this run.
    let safety = safety::verdict(&safety::Facts {
        scope: input.scope,
        source_count: source_count as u64,
        baseline: input.baseline,
        removals: summary.removals(),
        managed,
        config: input.safety,
        max_deletes: input.max_deletes,
        recent: input.recent_removals,
        approval,
    });

    let quarantined_anchors: BTreeSet<Anchor> = held.iter().map(|a| (*a).clone()).collect();
    let mut plan = Plan {
        generated_at: rfc3339(input.now),
        source: SourceInfo {
            entries: source_count,
            skipped_no_mail: skipped_no_mail.len() + input.outside.skipped_no_mail,
            disabled_in_ldap: disabled.len() + input.outside.disabled_in_ldap,
            scope: match input.scope {
                Scope::Full => "full".into(),
                Scope::Only => "only".into(),
            },
            only: Vec::new(),
            read: None,
        },
        tenant_read: None,
        summary,
        safety,
        actions,
        quarantined,
        drift: Vec::new(),
        warnings,
        licences: None,
        bill: None,
        unchanged_since_run: None,
        partial: None,
    };
    // Licences before handovers: an address is never freed for someone held for want of one.
    licences::bill(&mut plan, input.tenant);
    handover::order_handovers(
        &mut plan.actions,
        &handover::Context {
            objects: input.objects,
            tenant: input.tenant,
            quarantined: &quarantined_anchors,
            scope: input.scope,
            removals_blocked: plan.safety.verdict == Verdict::Blocked,
        },
        &mut plan.summary,
    );
    plan.actions.sort_by(by_phase_op_uid);
    plan
}

/// Marks `action` as held (the plan knows it cannot be carried out): counted in
/// `summary.held` instead of under its op.
pub(crate) fn hold(summary: &mut Summary, action: &mut Action, held: Held) {
    if action.held.is_none() {
        let n = summary.slot(action.op);
        *n = n.saturating_sub(1);
        summary.held += 1;
    }
    action.held = Some(held);
}

/// Who an action is about, taken from the recipient before its values move into the plan.
struct Who {
    anchor: Anchor,
    uid: String,
    kind: Kind,
    dn: String,
}

impl Who {
    fn action(self, op: Op, changes: Changes, reason: Option<String>) -> Action {
        Action {
            op,
            anchor: self.anchor,
            uid: self.uid,
            kind: self.kind,
            dn: self.dn,
            changes,
            reason,
            held: None,
            phase: Phase::Main,
        }
    }
}

/// The attributes the tenant object should carry: the recipient's fields plus, after a
/// rename, the former primary addresses kept as aliases so mail to them still arrives, and
/// sign-in as it belongs to the kind (a mailbox owner signs in, a MailUser never does) once
/// the state knows the account's sign-in at all.
fn target_fields(
    mut fields: Fields,
    kind: Kind,
    existing: Option<&ManagedObject>,
    claimed: &HashSet<String>,
) -> Fields {
    let Some(obj) = existing else { return fields };
    if obj.attributes.contains_key(ACCOUNT_ENABLED) {
        fields.insert(Field::AccountEnabled, Value::Bool(kind == Kind::Mailbox));
    }
    let mut retained: BTreeSet<String> = strings(obj.attributes.get(RETAINED)).collect();
    if let Some(old) = obj
        .attributes
        .get("primarySmtpAddress")
        .and_then(Value::as_str)
    {
        retained.insert(old.to_owned());
    }
    retained.retain(|a| !claimed.contains(a));
    if !retained.is_empty() {
        fields.insert(
            Field::RetainedAddresses,
            Value::Array(retained.into_iter().map(Value::String).collect()),
        );
    }
    fields
}

fn strings(v: Option<&Value>) -> impl Iterator<Item = String> + '_ {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
}

/// Per-field before/after for every field whose value differs.
fn diff(before: &Fields, mut after: Fields) -> Changes {
    let changes: Vec<(&'static str, Change)> = before
        .iter()
        .filter_map(|(k, b)| match after.remove(k.as_str()) {
            Some(a) if &a == b => None,
            a => Some((k.as_str(), (Some(b.clone()), a))),
        })
        .collect();
    changes
        .into_iter()
        .chain(
            after
                .into_iter()
                .map(|(k, a)| (k.as_str(), (None, Some(a)))),
        )
        .collect()
}

/// Unix seconds as RFC 3339 UTC.
pub fn rfc3339(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests;
