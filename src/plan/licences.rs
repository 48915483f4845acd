//! The licence phase of planning: the mailbox licences (`tenant.mailbox_sku`) the plan needs,
//! weighed against those the tenant has free ([`crate::inventory::LicencePool`]). Pure.
//!
//! An action needs a licence when apply will call `assignLicense` for it (see
//! `apply/steps.rs`, every caller of `license`):
//!
//! - **create** of a mailbox person;
//! - **convert** of a MailUser into a mailbox (licensing converts it in place);
//! - **update** or **enable** of a mailbox person whose user Graph shows unlicensed while
//!   Exchange does not know it (an earlier create stopped between `POST /users` and
//!   `assignLicense`, or somebody took its licence away).
//!
//! None of them needs one when the tenant object already carries an enabled Exchange plan
//! ([`crate::inventory::TenantObject::exchange_licensed`], e.g. assigned through a group).
//! An action the plan already holds for another reason (a conflict) takes no licence.
//!
//! **Who gets the free ones:** the actions in plan order (by op, then uid, then anchor:
//! creates before converts before enables, alphabetically within each), so the choice is the
//! same on every run and in the dry run. The actions beyond the free count are held
//! ([`HeldOutcome::Failed`]): apply sends nothing for them, a converting person stays the
//! working MailUser they are, and no half-made user is created for a new one. The run gets a
//! warning saying how many are short.
//!
//! **Licences freed in the same run do not count as free:** a mailbox deleted at the end of
//! its grace period gives its unit back only once Microsoft has finished removing it, which
//! this run cannot wait for; and ldap2exo never removes a licence to convert a mailbox back
//! (that would disable it). A unit freed this run is free for the next.
//!
//! Without a tenant inventory (a dry run without credentials) or without a known pool (no
//! `tenant.mailbox_sku`, or the tenant has no such subscription) there is no bill and nothing
//! is held: the plan cannot know.

use serde::{Deserialize, Serialize};

use super::{Action, Held, HeldOutcome, Op, Plan, Warning, hold};
use crate::desired::Kind;
use crate::inventory::{Inventory, TenantObject};

/// The mailbox licences the plan needs and those the tenant has free, for the report header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenceBill {
    /// The SKU's part number.
    pub sku: String,
    /// Actions that will assign a licence (held ones included).
    pub needed: u32,
    /// Units enabled and not in use when the tenant was read.
    pub free: u32,
    /// Units enabled (`prepaidUnits.enabled`).
    pub enabled: u32,
    /// Units in use (`consumedUnits`).
    pub consumed: u32,
}

impl LicenceBill {
    /// How many of the needed licences the tenant cannot give.
    pub fn short(&self) -> u32 {
        self.needed.saturating_sub(self.free)
    }
}

/// Whether `action` will assign a mailbox licence (see the module doc).
pub fn needs_licence(action: &Action, seen: Option<&TenantObject>) -> bool {
    if action.kind != Kind::Mailbox || action.held.is_some() {
        return false;
    }
    match (action.op, seen) {
        (_, Some(t)) if t.exchange_licensed => false,
        (Op::Create | Op::Convert, _) => true,
        (Op::Update | Op::Enable, Some(t)) => t.in_graph && !t.in_exchange,
        _ => false,
    }
}

/// Adds the licence bill to `plan` and holds the actions beyond the free count (see the
/// module doc). `plan.actions` must be in plan order.
pub fn bill(plan: &mut Plan, tenant: Option<&Inventory>) {
    let Some(inv) = tenant else { return };
    let Some(pool) = &inv.licences else { return };
    let free = pool.free();
    let needing: Vec<usize> = plan
        .actions
        .iter()
        .enumerate()
        .filter(|(_, a)| needs_licence(a, inv.managed.get(&a.anchor)))
        .map(|(i, _)| i)
        .collect();
    let bill = LicenceBill {
        sku: pool.sku.clone(),
        needed: needing.len() as u32,
        free,
        enabled: pool.enabled,
        consumed: pool.consumed,
    };
    for &i in needing.iter().skip(free as usize) {
        let action = &mut plan.actions[i];
        let stays = match action.op {
            Op::Convert => "stays a MailUser until one is freed",
            Op::Create => "nothing is created until one is freed",
            _ => "left as it is until one is freed",
        };
        let reason = format!(
            "no licence of {} free ({} of {} in use, {} needed this run); {stays}",
            bill.sku, bill.consumed, bill.enabled, bill.needed
        );
        hold(
            &mut plan.summary,
            action,
            Held {
                outcome: HeldOutcome::Failed,
                reason,
            },
        );
    }
    if bill.short() > 0 {
        plan.warnings.push(Warning {
            dn: String::new(),
            uid: None,
            field: "licences".into(),
            message: format!(
                "{} licence(s) of {} short: {} needed, {} free ({} of {} in use); {} (free or buy licences, then run again)",
                bill.short(),
                bill.sku,
                bill.needed,
                bill.free,
                bill.consumed,
                bill.enabled,
                match bill.free {
                    0 => "none of the actions that need one is carried out".to_owned(),
                    n => format!(
                        "the first {n} in plan order get one, the other {} are not carried out",
                        bill.short()
                    ),
                },
            ),
        });
    }
    plan.licences = Some(bill);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::ids::Anchor;
    use crate::inventory::LicencePool;
    use crate::plan::{Changes, Safety, SourceInfo, Summary};

    fn action(op: Op, uid: &str, kind: Kind) -> Action {
        Action {
            op,
            anchor: Anchor::new(&format!("a-{uid}")).unwrap(),
            uid: uid.into(),
            kind,
            dn: format!("uid={uid},ou=people,dc=example,dc=edu"),
            changes: Changes::default(),
            reason: None,
            held: None,
            phase: crate::plan::Phase::Main,
        }
    }

    fn plan(mut actions: Vec<Action>) -> Plan {
        actions.sort_by(|a, b| (a.op, &a.uid, &a.anchor).cmp(&(b.op, &b.uid, &b.anchor)));
        let mut summary = Summary::default();
        for a in &actions {
            summary.bump(a.op);
        }
        Plan {
            generated_at: String::new(),
            source: SourceInfo::default(),
            tenant_read: None,
            summary,
            safety: Safety {
                verdict: crate::plan::Verdict::Ok,
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

    fn tenant(enabled: u32, consumed: u32, objects: Vec<TenantObject>) -> Inventory {
        Inventory {
            managed: objects.into_iter().map(|o| (o.anchor.clone(), o)).collect(),
            licences: Some(LicencePool {
                sku: "EXCHANGESTANDARD".into(),
                enabled,
                consumed,
            }),
            ..Inventory::default()
        }
    }

    fn object(uid: &str, kind: Kind, licensed: bool, in_exchange: bool) -> TenantObject {
        TenantObject {
            id: format!("id-{uid}"),
            anchor: Anchor::new(&format!("a-{uid}")).unwrap(),
            kind,
            upn: format!("{uid}@example.edu"),
            account_enabled: Some(true),
            exchange_licensed: licensed,
            mailbox_pending: false,
            in_exchange,
            in_graph: true,
            fields: Default::default(),
            proxies: Vec::new(),
            unknown: BTreeSet::new(),
        }
    }

    fn held(p: &Plan) -> Vec<&str> {
        p.actions
            .iter()
            .filter(|a| a.held.is_some())
            .map(|a| a.uid.as_str())
            .collect()
    }

    #[test]
    fn enough_licences_hold_nothing_and_the_bill_says_so() {
        let mut p = plan(vec![
            action(Op::Create, "new", Kind::Mailbox),
            action(Op::Convert, "mover", Kind::Mailbox),
            action(Op::Create, "mu", Kind::MailUser),
        ]);
        let inv = tenant(25, 23, vec![object("mover", Kind::MailUser, false, true)]);
        bill(&mut p, Some(&inv));
        let b = p.licences.as_ref().unwrap();
        assert_eq!((b.needed, b.free, b.short()), (2, 2, 0));
        assert!(held(&p).is_empty());
        assert!(p.warnings.is_empty());
        assert_eq!(
            (p.summary.create, p.summary.convert, p.summary.held),
            (2, 1, 0)
        );
    }

    #[test]
    fn none_free_holds_every_action_that_needs_one_and_warns() {
        let mut p = plan(vec![
            action(Op::Convert, "mover", Kind::Mailbox),
            action(Op::Create, "new", Kind::Mailbox),
            action(Op::Update, "other", Kind::MailUser),
        ]);
        let inv = tenant(25, 25, vec![object("mover", Kind::MailUser, false, true)]);
        bill(&mut p, Some(&inv));
        let b = p.licences.as_ref().unwrap();
        assert_eq!((b.needed, b.free, b.short()), (2, 0, 2));
        assert_eq!(held(&p), ["new", "mover"], "plan order: creates first");
        let mover = p.actions.iter().find(|a| a.uid == "mover").unwrap();
        let h = mover.held.as_ref().unwrap();
        assert_eq!(h.outcome, HeldOutcome::Failed);
        assert_eq!(
            h.reason,
            "no licence of EXCHANGESTANDARD free (25 of 25 in use, 2 needed this run); stays a MailUser until one is freed"
        );
        let new = p.actions.iter().find(|a| a.uid == "new").unwrap();
        assert!(
            new.held
                .as_ref()
                .unwrap()
                .reason
                .ends_with("nothing is created until one is freed"),
            "{:?}",
            new.held
        );
        assert_eq!(
            (
                p.summary.create,
                p.summary.convert,
                p.summary.update,
                p.summary.held
            ),
            (0, 0, 1, 2)
        );
        assert_eq!(p.warnings.len(), 1);
        let w = &p.warnings[0];
        assert_eq!(w.field, "licences");
        assert!(w.dn.is_empty() && w.uid.is_none(), "a run-level warning");
        assert!(
            w.message
                .starts_with("2 licence(s) of EXCHANGESTANDARD short: 2 needed, 0 free"),
            "{}",
            w.message
        );
    }

    #[test]
    fn the_free_ones_go_in_plan_order() {
        let mut p = plan(vec![
            action(Op::Convert, "amy", Kind::Mailbox),
            action(Op::Create, "zoe", Kind::Mailbox),
            action(Op::Create, "bob", Kind::Mailbox),
        ]);
        let inv = tenant(10, 8, vec![object("amy", Kind::MailUser, false, true)]);
        bill(&mut p, Some(&inv));
        assert_eq!(
            held(&p),
            ["amy"],
            "bob and zoe (creates) come before amy (a convert)"
        );
        assert_eq!(p.licences.as_ref().unwrap().short(), 1);

        let mut p = plan(vec![
            action(Op::Create, "zoe", Kind::Mailbox),
            action(Op::Create, "bob", Kind::Mailbox),
        ]);
        bill(&mut p, Some(&tenant(10, 9, vec![])));
        assert_eq!(held(&p), ["zoe"]);
    }

    #[test]
    fn a_person_already_licensed_needs_none_and_half_made_ones_do() {
        let mut p = plan(vec![
            // Licensed through a group: converting takes no unit of ours.
            action(Op::Convert, "grp", Kind::Mailbox),
            // A mailbox user whose licence step never ran: the update licenses it.
            action(Op::Update, "half", Kind::Mailbox),
            // A disabled mailbox keeps its licence: enabling takes none.
            action(Op::Enable, "back", Kind::Mailbox),
            // Leaving, deleted, MailUsers: never.
            action(Op::Disable, "gone", Kind::Mailbox),
            action(Op::Delete, "old", Kind::Mailbox),
            action(Op::Create, "mu", Kind::MailUser),
        ]);
        let inv = tenant(
            5,
            5,
            vec![
                object("grp", Kind::Mailbox, true, true),
                object("half", Kind::Mailbox, false, false),
                object("back", Kind::Mailbox, true, true),
                object("gone", Kind::Mailbox, true, true),
                object("old", Kind::Mailbox, true, true),
            ],
        );
        bill(&mut p, Some(&inv));
        assert_eq!(p.licences.as_ref().unwrap().needed, 1);
        assert_eq!(held(&p), ["half"]);
    }

    #[test]
    fn an_action_held_for_a_conflict_takes_no_licence() {
        let mut p = plan(vec![
            action(Op::Create, "amy", Kind::Mailbox),
            action(Op::Create, "bob", Kind::Mailbox),
        ]);
        let Plan {
            summary, actions, ..
        } = &mut p;
        hold(
            summary,
            &mut actions[0],
            Held {
                outcome: HeldOutcome::Conflict,
                reason: "UPN taken".into(),
            },
        );
        bill(&mut p, Some(&tenant(1, 0, vec![])));
        assert_eq!(p.licences.as_ref().unwrap().needed, 1);
        assert_eq!(p.actions[1].held, None, "bob gets the one free licence");
        assert_eq!(
            p.actions[0].held.as_ref().unwrap().outcome,
            HeldOutcome::Conflict
        );
    }

    #[test]
    fn without_a_tenant_or_a_pool_there_is_no_bill_and_no_hold() {
        let mut p = plan(vec![action(Op::Create, "new", Kind::Mailbox)]);
        bill(&mut p, None);
        assert_eq!(p.licences, None);
        bill(&mut p, Some(&Inventory::default()));
        assert_eq!(p.licences, None);
        assert!(held(&p).is_empty() && p.warnings.is_empty());
    }
}
