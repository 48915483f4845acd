//! compare: what moved between a reviewed plan (`plan --output`) and the plan computed when it
//! is applied, person by person and field by field, so that `apply` can refuse a stale plan
//! saying exactly what changed, and `apply --resume` can tell the rest of an interrupted apply
//! from a plan that moved. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

use super::{Action, Change, Op, Plan, Verdict, show_value};
use crate::desired::Kind;
use crate::ids::Anchor;

/// One difference between the reviewed plan and the plan now.
#[derive(Debug, Clone, PartialEq)]
pub enum Moved {
    /// The same action on the same person, but a field differs: its target, or the value it
    /// starts from (the state store or tenant moved), or the field is new to or gone from it.
    Field {
        uid: String,
        kind: Kind,
        field: String,
        planned: Option<Change>,
        now: Option<Change>,
    },
    /// The person is still planned, with another operation.
    Op { uid: String, planned: Op, now: Op },
    /// In the reviewed plan, not planned any more.
    Gone { anchor: Anchor, uid: String, op: Op },
    /// Planned now, not in the reviewed plan; `fields` says what it would change
    /// (`title "A" → "B"`, at most [`NEW_FIELDS_SHOWN`] of them).
    New {
        anchor: Anchor,
        uid: String,
        op: Op,
        fields: Vec<String>,
    },
    /// The action was or is now held (known not to be carried out), or for another reason.
    Held {
        uid: String,
        op: Op,
        planned: Option<String>,
        now: Option<String>,
    },
    /// Another property of the action differs (its entry's DN, uid, kind, reason, phase).
    Other {
        uid: String,
        op: Op,
        what: &'static str,
        planned: String,
        now: String,
    },
    /// The safety verdict differs; `reasons` are today's.
    Verdict {
        planned: Verdict,
        now: Verdict,
        reasons: Vec<String>,
    },
}

impl Moved {
    /// The person it is about, if any (the verdict is about the run).
    pub fn uid(&self) -> Option<&str> {
        match self {
            Moved::Field { uid, .. }
            | Moved::Op { uid, .. }
            | Moved::Gone { uid, .. }
            | Moved::New { uid, .. }
            | Moved::Held { uid, .. }
            | Moved::Other { uid, .. } => Some(uid),
            Moved::Verdict { .. } => None,
        }
    }
}

fn verdict_str(v: Verdict) -> &'static str {
    match v {
        Verdict::Ok => "ok",
        Verdict::Blocked => "blocked",
    }
}

/// How many of a new action's fields a stale-plan line names.
pub const NEW_FIELDS_SHOWN: usize = 4;

/// A planned action the reviewed plan did not have, with the first fields it changes.
fn new(a: &Action) -> Moved {
    let mut fields: Vec<String> = a
        .changes
        .iter()
        .take(NEW_FIELDS_SHOWN)
        .map(|(field, (before, after))| {
            format!("{field} {} → {}", show_value(before), show_value(after))
        })
        .collect();
    let more = a.changes.iter().count().saturating_sub(NEW_FIELDS_SHOWN);
    if more > 0 {
        fields.push(format!("… and {more} more"));
    }
    Moved::New {
        anchor: a.anchor.clone(),
        uid: a.uid.clone(),
        op: a.op,
        fields,
    }
}

impl fmt::Display for Moved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Moved::Field {
                uid,
                kind,
                field,
                planned,
                now,
            } => {
                let head = format!("{uid} ({}): {field}", kind.as_str());
                match (planned, now) {
                    (Some((_, p)), Some((_, n))) if p != n => {
                        write!(
                            f,
                            "{head} planned {} → now {}",
                            show_value(p),
                            show_value(n)
                        )
                    }
                    (Some((pb, p)), Some((nb, _))) => write!(
                        f,
                        "{head} was {} when planned, is {} now (target {} unchanged)",
                        show_value(pb),
                        show_value(nb),
                        show_value(p)
                    ),
                    (Some((_, p)), None) => {
                        write!(f, "{head} planned {} → now no change", show_value(p))
                    }
                    (None, Some((_, n))) => {
                        write!(f, "{head} planned no change → now {}", show_value(n))
                    }
                    (None, None) => write!(f, "{head} unchanged"),
                }
            }
            Moved::Op { uid, planned, now } => write!(
                f,
                "{uid}: planned {}, now {}",
                planned.as_str(),
                now.as_str()
            ),
            Moved::Gone { uid, op, .. } => {
                write!(f, "{uid}: in the plan, no longer planned ({})", op.as_str())
            }
            Moved::New {
                uid, op, fields, ..
            } => {
                write!(f, "{uid}: not in the plan, now {}", op.as_str())?;
                if !fields.is_empty() {
                    write!(f, ": {}", fields.join(", "))?;
                }
                Ok(())
            }
            Moved::Held {
                uid,
                op,
                planned,
                now,
            } => {
                let held = |h: &Option<String>| match h {
                    Some(why) => format!("held ({why})"),
                    None => "carried out".to_owned(),
                };
                write!(
                    f,
                    "{uid}: {} planned {}, now {}",
                    op.as_str(),
                    held(planned),
                    held(now)
                )
            }
            Moved::Other {
                uid,
                op,
                what,
                planned,
                now,
            } => write!(
                f,
                "{uid}: {} with {what} planned {planned} → now {now}",
                op.as_str()
            ),
            Moved::Verdict {
                planned,
                now,
                reasons,
            } => {
                write!(
                    f,
                    "verdict changed {} → {}",
                    verdict_str(*planned),
                    verdict_str(*now)
                )?;
                if !reasons.is_empty() {
                    write!(f, " ({})", reasons.join("; "))?;
                }
                Ok(())
            }
        }
    }
}

/// The actions of both plans matched by anchor: within one anchor, actions of the same op
/// pair first, then the rest in order (an op that changed); what is left is gone or new.
enum Pair<'a> {
    Both(&'a Action, &'a Action),
    Reviewed(&'a Action),
    Now(&'a Action),
}

fn pairs<'a>(reviewed: &'a Plan, now: &'a Plan) -> Vec<Pair<'a>> {
    let mut order: Vec<&Anchor> = Vec::new();
    let mut by_anchor: BTreeMap<&Anchor, (Vec<&Action>, Vec<&Action>)> = BTreeMap::new();
    for a in &reviewed.actions {
        let e = by_anchor.entry(&a.anchor).or_insert_with(|| {
            order.push(&a.anchor);
            Default::default()
        });
        e.0.push(a);
    }
    for a in &now.actions {
        let e = by_anchor.entry(&a.anchor).or_insert_with(|| {
            order.push(&a.anchor);
            Default::default()
        });
        e.1.push(a);
    }
    let mut out = Vec::new();
    for anchor in order {
        let (rs, mut ns) = by_anchor
            .remove(anchor)
            .expect("listed anchors are grouped");
        let mut left = Vec::new();
        for r in rs {
            match ns.iter().position(|n| n.op == r.op) {
                Some(i) => out.push(Pair::Both(r, ns.remove(i))),
                None => left.push(r),
            }
        }
        let mut ns = ns.into_iter();
        for r in left {
            match ns.next() {
                Some(n) => out.push(Pair::Both(r, n)),
                None => out.push(Pair::Reviewed(r)),
            }
        }
        out.extend(ns.map(Pair::Now));
    }
    out
}

/// What differs between two actions on the same anchor.
fn differences(r: &Action, n: &Action, out: &mut Vec<Moved>) {
    if r.op != n.op {
        out.push(Moved::Op {
            uid: n.uid.clone(),
            planned: r.op,
            now: n.op,
        });
        return;
    }
    let before = out.len();
    let fields: BTreeSet<&str> = r
        .changes
        .iter()
        .chain(n.changes.iter())
        .map(|(k, _)| k)
        .collect();
    for field in fields {
        let (p, c) = (r.changes.get(field), n.changes.get(field));
        if p != c {
            out.push(Moved::Field {
                uid: n.uid.clone(),
                kind: n.kind,
                field: field.to_owned(),
                planned: p.cloned(),
                now: c.cloned(),
            });
        }
    }
    let held = |a: &Action| a.held.as_ref().map(|h| h.reason.clone());
    if r.held != n.held {
        out.push(Moved::Held {
            uid: n.uid.clone(),
            op: n.op,
            planned: held(r),
            now: held(n),
        });
    }
    let mut other = |what: &'static str, planned: String, now: String| {
        if planned != now {
            out.push(Moved::Other {
                uid: n.uid.clone(),
                op: n.op,
                what,
                planned,
                now,
            });
        }
    };
    other("uid", r.uid.clone(), n.uid.clone());
    other("kind", r.kind.as_str().into(), n.kind.as_str().into());
    other("DN", format!("\"{}\"", r.dn), format!("\"{}\"", n.dn));
    let reason = |a: &Action| a.reason.clone().unwrap_or_else(|| "∅".into());
    other("reason", reason(r), reason(n));
    let phase = |a: &Action| format!("{:?}", a.phase).to_lowercase();
    other("phase", phase(r), phase(n));
    // Whatever a later field of `Action` adds: never call two different actions equal.
    if out.len() == before && r != n {
        out.push(Moved::Other {
            uid: n.uid.clone(),
            op: n.op,
            what: "action",
            planned: serde_json::to_string(r).unwrap_or_default(),
            now: serde_json::to_string(n).unwrap_or_default(),
        });
    }
}

fn verdict_moved(reviewed: &Plan, now: &Plan, out: &mut Vec<Moved>) {
    if reviewed.safety.verdict != now.safety.verdict {
        out.push(Moved::Verdict {
            planned: reviewed.safety.verdict,
            now: now.safety.verdict,
            reasons: now.safety.reasons.clone(),
        });
    }
}

/// Everything that differs between the reviewed plan and the plan now: empty exactly when
/// applying now would carry out the reviewed actions (in any order) under the same verdict.
pub fn moved(reviewed: &Plan, now: &Plan) -> Vec<Moved> {
    let mut out = Vec::new();
    verdict_moved(reviewed, now, &mut out);
    for p in pairs(reviewed, now) {
        match p {
            Pair::Both(r, n) => differences(r, n, &mut out),
            Pair::Reviewed(r) => out.push(Moved::Gone {
                anchor: r.anchor.clone(),
                uid: r.uid.clone(),
                op: r.op,
            }),
            Pair::Now(n) => out.push(new(n)),
        }
    }
    out
}

/// Whether `n` is what is left of the reviewed action `r` after an interrupted apply carried
/// out part of it: the same person and entry, the same op (or the update that finishes a
/// create whose object was made), and only fields of `r`, each with `r`'s target.
fn remainder(r: &Action, n: &Action) -> bool {
    let op = r.op == n.op || (r.op == Op::Create && n.op == Op::Update);
    op && r.uid == n.uid
        && r.kind == n.kind
        && r.dn == n.dn
        && r.held == n.held
        && n.changes.iter().all(|(field, (_, after))| {
            r.changes.get(field).map(|c| &c.1) == Some(after) || implied(r, field, after)
        })
}

/// A target a create reaches without listing it: Graph makes every user with sign-in
/// enabled, and the create of a MailUser blocks it as its last step
/// (`crate::apply`'s `sign_ins`); a create cut off before that step leaves the
/// update that blocks it.
fn implied(r: &Action, field: &str, after: &Option<Value>) -> bool {
    r.op == Op::Create
        && field == super::ACCOUNT_ENABLED
        && *after == Some(Value::Bool(r.kind == Kind::Mailbox))
}

/// What `apply --resume` cannot explain as the rest of an interrupted apply of the reviewed
/// plan: empty when every action planned now is a reviewed action or the remainder of one in
/// `finished` (journaled done, in part, by a run that applied this plan), every
/// reviewed action no longer planned is in `finished` (journaled done by a run that applied
/// this plan), and the verdict is the same.
pub fn unexplained(reviewed: &Plan, now: &Plan, finished: &BTreeSet<(Anchor, Op)>) -> Vec<Moved> {
    let mut out = Vec::new();
    verdict_moved(reviewed, now, &mut out);
    for p in pairs(reviewed, now) {
        match p {
            // A changed action is accepted only as the rest of one this plan's apply started.
            Pair::Both(r, n)
                if r == n || (remainder(r, n) && finished.contains(&(r.anchor.clone(), r.op))) => {}
            Pair::Both(r, n) => differences(r, n, &mut out),
            Pair::Reviewed(r) if finished.contains(&(r.anchor.clone(), r.op)) => {}
            Pair::Reviewed(r) => out.push(Moved::Gone {
                anchor: r.anchor.clone(),
                uid: r.uid.clone(),
                op: r.op,
            }),
            Pair::Now(n) => out.push(new(n)),
        }
    }
    out
}

/// The digest that identifies a reviewed plan in the state store: SHA-256 (hex) of the
/// canonical JSON of its actions (fields in declaration order, object keys sorted), so the
/// same plan file gives the same digest however it was pretty-printed or re-saved.
pub fn digest(plan: &Plan) -> String {
    use sha2::{Digest, Sha256};
    let json = serde_json::to_vec(&plan.actions).expect("actions serialise");
    Sha256::digest(&json)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::plan::{Changes, Held, HeldOutcome, Phase, Safety, Summary};

    fn action(op: Op, anchor: &str, uid: &str, fields: &[(&str, Option<&str>, &str)]) -> Action {
        Action {
            op,
            anchor: Anchor::new(anchor).unwrap(),
            uid: uid.into(),
            kind: Kind::MailUser,
            dn: format!("uid={uid},ou=people,dc=example,dc=edu"),
            changes: fields
                .iter()
                .map(|(f, b, a)| (f.to_string(), (b.map(|b| json!(b)), Some(json!(a)))))
                .collect::<Changes>(),
            reason: None,
            held: None,
            phase: Phase::Main,
        }
    }

    fn plan(actions: Vec<Action>) -> Plan {
        Plan {
            generated_at: "2026-09-01T00:00:00Z".into(),
            source: Default::default(),
            tenant_read: None,
            summary: Summary::default(),
            safety: Safety {
                verdict: Verdict::Ok,
                reasons: Vec::new(),
                approved_removals: None,
                approval: None,
                held_removals: 0,
            },
            actions,
            quarantined: Vec::new(),
            drift: Vec::new(),
            warnings: Vec::new(),
            licences: None,
            bill: None,
            unchanged_since_run: None,
            partial: None,
        }
    }

    fn jdoe(display: &str) -> Action {
        action(
            Op::Create,
            "a-jdoe",
            "jdoe",
            &[
                ("displayName", None, display),
                ("mail", None, "jdoe@example.edu"),
            ],
        )
    }

    fn lines(m: &[Moved]) -> Vec<String> {
        m.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn the_same_plan_in_another_order_has_not_moved() {
        let a = jdoe("Jane Doe");
        let b = action(Op::Update, "a-neu", "neu", &[("title", Some("x"), "y")]);
        let reviewed = plan(vec![a.clone(), b.clone()]);
        let now = plan(vec![b, a]);
        assert!(moved(&reviewed, &now).is_empty());
        assert_eq!(digest(&reviewed), digest(&reviewed.clone()));
        assert_ne!(
            digest(&reviewed),
            digest(&now),
            "the digest is of the file as reviewed"
        );
    }

    #[test]
    fn names_the_person_and_the_field_that_moved() {
        let reviewed = plan(vec![jdoe("Jane Doe")]);
        let now = plan(vec![jdoe("Jane Q. Doe")]);
        assert_eq!(
            lines(&moved(&reviewed, &now)),
            [r#"jdoe (mail_user): displayName planned "Jane Doe" → now "Jane Q. Doe""#]
        );
    }

    #[test]
    fn names_a_changed_op_a_gone_and_a_new_action_and_the_verdict() {
        let gone = action(Op::Delete, "a-mm", "mmuster", &[]);
        let reviewed = plan(vec![jdoe("Jane Doe"), gone]);
        let mut update = jdoe("Jane Doe");
        update.op = Op::Update;
        let mut now = plan(vec![update, action(Op::Create, "a-neu", "neu", &[])]);
        now.safety.verdict = Verdict::Blocked;
        now.safety.reasons = vec!["LDAP returned 10% fewer entries".into()];
        assert_eq!(
            lines(&moved(&reviewed, &now)),
            [
                "verdict changed ok → blocked (LDAP returned 10% fewer entries)",
                "jdoe: planned create, now update",
                "mmuster: in the plan, no longer planned (delete)",
                "neu: not in the plan, now create",
            ]
        );
    }

    #[test]
    fn a_moved_starting_value_a_new_field_and_a_hold_are_named() {
        let r = action(Op::Update, "a-x", "x", &[("title", Some("A"), "C")]);
        let mut n = action(
            Op::Update,
            "a-x",
            "x",
            &[("title", Some("B"), "C"), ("department", None, "Physics")],
        );
        n.held = Some(Held {
            outcome: HeldOutcome::Failed,
            reason: "no licence free".into(),
        });
        assert_eq!(
            lines(&moved(&plan(vec![r]), &plan(vec![n]))),
            [
                r#"x (mail_user): department planned no change → now "Physics""#,
                r#"x (mail_user): title was "A" when planned, is "B" now (target "C" unchanged)"#,
                "x: update planned carried out, now held (no licence free)",
            ]
        );
    }

    #[test]
    fn resume_accepts_what_an_interrupted_apply_left() {
        let done = action(
            Op::Create,
            "a-done",
            "done",
            &[("mail", None, "d@example.edu")],
        );
        let half = jdoe("Jane Doe");
        let untouched = action(Op::Update, "a-u", "u", &[("title", Some("A"), "B")]);
        let reviewed = plan(vec![done.clone(), half, untouched.clone()]);
        // The create of jdoe made the object and set its display name, not yet its mail,
        // nor blocked the new MailUser's sign-in.
        let mut rest = action(
            Op::Update,
            "a-jdoe",
            "jdoe",
            &[("mail", Some("old@example.edu"), "jdoe@example.edu")],
        );
        rest.changes
            .insert("accountEnabled", (Some(json!(true)), Some(json!(false))));
        let now = plan(vec![rest, untouched]);
        let mut finished: BTreeSet<_> = [(done.anchor.clone(), Op::Create)].into();
        // The rest of jdoe's create is accepted only when this plan's apply started it.
        assert_eq!(
            lines(&unexplained(&reviewed, &now, &finished)),
            ["jdoe: planned create, now update"]
        );
        finished.insert((Anchor::new("a-jdoe").unwrap(), Op::Create));
        assert!(unexplained(&reviewed, &now, &finished).is_empty());
        assert!(
            !moved(&reviewed, &now).is_empty(),
            "a plain apply refuses it"
        );
        // Without the journal's word, a vanished action is something that moved.
        assert_eq!(
            lines(&unexplained(&reviewed, &now, &BTreeSet::new())),
            [
                "done: in the plan, no longer planned (create)",
                "jdoe: planned create, now update"
            ]
        );
    }

    #[test]
    fn resume_refuses_a_new_target_a_new_field_or_a_new_person() {
        let reviewed = plan(vec![jdoe("Jane Doe")]);
        let none = BTreeSet::new();
        let now = plan(vec![jdoe("Jane Q. Doe")]);
        assert_eq!(unexplained(&reviewed, &now, &none).len(), 1);
        let mut extra = jdoe("Jane Doe");
        extra.changes.insert("title", (None, Some(json!("Dean"))));
        assert_eq!(
            lines(&unexplained(&reviewed, &plan(vec![extra]), &none)),
            [r#"jdoe (mail_user): title planned no change → now "Dean""#]
        );
        let now = plan(vec![
            jdoe("Jane Doe"),
            action(Op::Create, "a-n", "neu", &[]),
        ]);
        assert_eq!(
            lines(&unexplained(&reviewed, &now, &none)),
            ["neu: not in the plan, now create"]
        );
        // An update cannot turn back into a create.
        let mut r = jdoe("Jane Doe");
        r.op = Op::Update;
        assert_eq!(
            lines(&unexplained(
                &plan(vec![r]),
                &plan(vec![jdoe("Jane Doe")]),
                &none
            )),
            ["jdoe: planned update, now create"]
        );
    }
}
