//! plan: the pure diff of what LDAP wants (`desired`) against what the state store says the
//! tenant holds, plus the safety verdict. No I/O.
//!
//! A [`Plan`] is data: serialisable, printable, and complete enough that applying it needs no
//! further decisions. Every action carries the anchor it is keyed by and, per field, the value
//! before and after.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::SafetyConfig;
use crate::desired::{Desired, Kind, Quarantined, Recipient};
use crate::ids::Anchor;
use crate::state::{ManagedObject, Stage};

mod safety;

pub use safety::{Safety, Verdict};

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
}

impl Op {
    pub const ALL: [Op; 6] = [
        Op::Create,
        Op::Update,
        Op::Convert,
        Op::Disable,
        Op::Enable,
        Op::Delete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Update => "update",
            Op::Convert => "convert",
            Op::Disable => "disable",
            Op::Enable => "enable",
            Op::Delete => "delete",
        }
    }

    /// Disables and deletes take people out of the address list: the safety caps count them.
    pub fn is_removal(self) -> bool {
        matches!(self, Op::Disable | Op::Delete)
    }
}

/// One field's value before and after; `None` is "absent". Serialises as `[before, after]`.
pub type Change = (Option<Value>, Option<Value>);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub op: Op,
    pub anchor: Anchor,
    pub uid: String,
    pub kind: Kind,
    pub dn: String,
    pub changes: BTreeMap<String, Change>,
    /// Why a lifecycle action happens (leaving, back, grace period over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub convert: usize,
    pub disable: usize,
    pub enable: usize,
    pub delete: usize,
    pub unchanged: usize,
    pub quarantined: usize,
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
        }
    }

    fn bump(&mut self, op: Op) {
        *match op {
            Op::Create => &mut self.create,
            Op::Update => &mut self.update,
            Op::Convert => &mut self.convert,
            Op::Disable => &mut self.disable,
            Op::Enable => &mut self.enable,
            Op::Delete => &mut self.delete,
        } += 1;
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// RFC 3339, UTC.
    pub generated_at: String,
    pub source: SourceInfo,
    pub summary: Summary,
    pub safety: Safety,
    pub actions: Vec<Action>,
    pub quarantined: Vec<Quarantined>,
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
    pub desired: &'a Desired,
    pub objects: &'a [ManagedObject],
    /// Source size of the last good full run, for the shrink guard.
    pub baseline: Option<u64>,
    pub scope: Scope,
    pub safety: &'a SafetyConfig,
    /// `--max-deletes N`: the operator approves up to N removals this run.
    pub max_deletes: Option<u32>,
    pub now: i64,
}

/// Computes the plan. Deterministic: the same input always gives the same plan.
pub fn plan(input: &Input) -> Plan {
    let desired = input.desired;
    let objects: BTreeMap<&Anchor, &ManagedObject> =
        input.objects.iter().map(|o| (&o.anchor, o)).collect();
    let wanted: BTreeMap<&Anchor, &Recipient> =
        desired.recipients.iter().map(|r| (&r.anchor, r)).collect();
    let held: BTreeSet<&Anchor> = desired
        .quarantined
        .iter()
        .filter_map(|q| q.anchor.as_ref())
        .collect();
    let disabled_in_ldap: BTreeMap<&Anchor, _> =
        desired.disabled.iter().map(|d| (&d.anchor, d)).collect();
    // Every address some LDAP entry claims now: a former primary is kept as an alias only
    // while nobody else claims it.
    let claimed: BTreeSet<&str> = desired
        .recipients
        .iter()
        .flat_map(|r| std::iter::once(&r.primary).chain(&r.secondary))
        .map(|a| a.as_str())
        .collect();

    let mut actions = Vec::new();
    let mut summary = Summary::default();

    for r in &desired.recipients {
        let existing = objects.get(&r.anchor).filter(|o| o.stage != Stage::Deleted);
        let target = target_fields(r, existing.copied(), &claimed);
        let action = match existing {
            None => Some(action(Op::Create, r, diff(&BTreeMap::new(), &target), None)),
            Some(obj) => {
                let mut changes = diff(&obj.attributes, &target);
                if obj.stage == Stage::Disabled {
                    changes.insert(
                        ACCOUNT_ENABLED.into(),
                        (Some(Value::Bool(false)), Some(Value::Bool(true))),
                    );
                    changes.insert(
                        HIDDEN.into(),
                        (Some(Value::Bool(true)), Some(Value::Bool(r.hidden))),
                    );
                    Some(action(
                        Op::Enable,
                        r,
                        changes,
                        Some("back in LDAP within the grace period".into()),
                    ))
                } else if obj.kind != r.kind {
                    changes.insert(
                        KIND.into(),
                        (
                            Some(Value::from(obj.kind.as_str())),
                            Some(Value::from(r.kind.as_str())),
                        ),
                    );
                    let why = match r.kind {
                        Kind::Mailbox => {
                            "forward into the tenant: the mailbox moved to Exchange Online"
                        }
                        Kind::MailUser => {
                            "forward into the tenant removed: the mailbox is on-premises again"
                        }
                    };
                    Some(action(Op::Convert, r, changes, Some(why.into())))
                } else if !changes.is_empty() {
                    Some(action(Op::Update, r, changes, None))
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
        if wanted.contains_key(&obj.anchor) || obj.stage == Stage::Deleted {
            continue;
        }
        let ldap_disabled = disabled_in_ldap.get(&obj.anchor);
        // `--only` plans just the named people: nobody else is planned as leaving, but a
        // named person whom LDAP marks disabled is.
        if input.scope == Scope::Only && ldap_disabled.is_none() {
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
                let why = if ldap_disabled.is_some() {
                    "marked disabled in LDAP (ldap.rules.disabled_filter)"
                } else {
                    "no longer matched by the LDAP filter"
                };
                let mut changes = BTreeMap::new();
                changes.insert(
                    ACCOUNT_ENABLED.into(),
                    (Some(Value::Bool(true)), Some(Value::Bool(false))),
                );
                changes.insert(
                    HIDDEN.into(),
                    (obj.attributes.get(HIDDEN).cloned(), Some(Value::Bool(true))),
                );
                Some((Op::Disable, changes, why.to_owned()))
            }
            Stage::Disabled if obj.delete_due_at.is_some_and(|due| due <= input.now) => Some((
                Op::Delete,
                BTreeMap::new(),
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
                });
            }
            None => summary.unchanged += 1,
        }
    }

    actions.sort_by(|a, b| (a.op, &a.uid, &a.anchor).cmp(&(b.op, &b.uid, &b.anchor)));
    summary.quarantined = desired.quarantined.len();
    let managed = input
        .objects
        .iter()
        .filter(|o| o.stage != Stage::Deleted)
        .count();
    let safety = safety::verdict(&safety::Facts {
        scope: input.scope,
        source_count: desired.source_count as u64,
        baseline: input.baseline,
        removals: summary.removals(),
        managed,
        config: input.safety,
        max_deletes: input.max_deletes,
    });

    Plan {
        generated_at: rfc3339(input.now),
        source: SourceInfo {
            entries: desired.source_count,
            skipped_no_mail: desired.skipped_no_mail.len(),
            disabled_in_ldap: desired.disabled.len(),
            scope: match input.scope {
                Scope::Full => "full".into(),
                Scope::Only => "only".into(),
            },
        },
        summary,
        safety,
        actions,
        quarantined: desired.quarantined.clone(),
    }
}

/// The attributes the tenant object should carry: the recipient's fields plus, after a
/// rename, the former primary addresses kept as aliases so mail to them still arrives.
fn target_fields(
    r: &Recipient,
    existing: Option<&ManagedObject>,
    claimed: &BTreeSet<&str>,
) -> BTreeMap<String, Value> {
    let mut fields = r.fields();
    let Some(obj) = existing else { return fields };
    let mut retained: BTreeSet<String> = strings(obj.attributes.get(RETAINED)).collect();
    if let Some(old) = obj
        .attributes
        .get("primarySmtpAddress")
        .and_then(Value::as_str)
    {
        retained.insert(old.to_owned());
    }
    retained.retain(|a| !claimed.contains(a.as_str()));
    if !retained.is_empty() {
        fields.insert(
            RETAINED.into(),
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
fn diff(
    before: &BTreeMap<String, Value>,
    after: &BTreeMap<String, Value>,
) -> BTreeMap<String, Change> {
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (b, a) = (before.get(k), after.get(k));
            (b != a).then(|| (k.clone(), (b.cloned(), a.cloned())))
        })
        .collect()
}

fn action(
    op: Op,
    r: &Recipient,
    changes: BTreeMap<String, Change>,
    reason: Option<String>,
) -> Action {
    Action {
        op,
        anchor: r.anchor.clone(),
        uid: r.uid.clone(),
        kind: r.kind,
        dn: r.dn.clone(),
        changes,
        reason,
    }
}

/// Unix seconds as RFC 3339 UTC.
pub fn rfc3339(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests;
