//! The bill of a plan: the requests apply will send to each service, and how long they take
//! at the configured rates (`[tenant.budget]`). Pure: counted from the plan's actions with the
//! same rules `apply` follows (see `apply/mod.rs` and `apply/steps.rs`), never by sending.
//!
//! Per action, on the normal path (no retries, no adoption after a lost answer):
//! - create MailUser: `New-MailUser`, one `Set-MailUser` (the stamp and every recipient
//!   field beyond what `New-MailUser` sets), `Set-User` when such a field changes; Graph `PATCH
//!   accountEnabled` in a `$batch` beside the run's Exchange work.
//! - create mailbox: Graph `GET /subscribedSkus` (read), `POST /users`, `assignLicense`;
//!   Exchange `Get-Mailbox` (read, counted once; up to 4 while Exchange provisions, the
//!   first after the time mailboxes have taken to appear), whose answer is the fresh read of
//!   the addresses, then `Set-Mailbox` for the addresses and hidden flag, `PATCH /users` for
//!   `accountEnabled` when it changes.
//! - create of a person deleted within 30 days (state row deleted, object id known): Graph
//!   restore, then every field by its writer, plus the hidden flag and sign-in.
//! - update, disable, enable: one request per writer the changed fields name
//!   ([`Field::writer`]): `Set-MailUser`/`Set-Mailbox`, `Set-User`, Graph `PATCH`, plus a
//!   `Get-Recipient` read when the primary address changes.
//! - convert: Graph `PATCH usageLocation` (when configured), `assignLicense`, `Get-Mailbox`,
//!   then the other changed fields by writer.
//! - delete: `Remove-MailUser` (Exchange) or `DELETE /users` (Graph); purge: Graph `DELETE
//!   /directory/deletedItems`.
//!
//! Held actions send nothing, nor do removals (and purges) while the safety verdict is
//! blocked, unless a scoped approval lets the removals it does not hold go
//! ([`super::Safety::removals_go`]). The reads that wait for a new mailbox can take up to 4 `Get-Mailbox` calls; the
//! bill counts one (the reads are an estimate, the writes are exact on this path).
//!
//! Time: Graph is metered by its write quota (reads cost little there), so its seconds are
//! writes / `graph_writes_per_second`; Exchange meters every cmdlet, so its seconds are
//! (writes + reads) / `exchange_requests_per_second`. The two services are used at the same
//! time: the run takes as long as the slower, the `binding` one.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::field::{NEW_MAIL_USER_FIELDS, POST_USER_FIELDS};
use super::{Action, Field, Op, Plan, Writer};
use crate::config::Budget;
use crate::desired::Kind;
use crate::ids::Anchor;
use crate::inventory::{Inventory, TenantObject};
use crate::state::{ManagedObject, Stage};

/// The plan JSON's `bill`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bill {
    /// `graph`, then `exchange`.
    pub services: Vec<ServiceBill>,
    /// The service that takes longest (`graph` or `exchange`); `None` when nothing is sent.
    pub binding: Option<String>,
    /// The seconds of the binding service: how long apply takes at the budgets.
    pub estimated_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceBill {
    /// `graph` or `exchange`.
    pub service: String,
    pub writes: u64,
    pub reads: u64,
    /// The configured rate (`[tenant.budget]`).
    pub budget_per_second: f64,
    /// Seconds at that rate (see the module doc for what each service's rate meters).
    pub seconds: u64,
}

impl Bill {
    pub fn service(&self, name: &str) -> Option<&ServiceBill> {
        self.services.iter().find(|s| s.service == name)
    }
}

/// Requests one action sends, per service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    pub graph_writes: u64,
    pub graph_reads: u64,
    pub exchange_writes: u64,
    pub exchange_reads: u64,
}

impl std::ops::AddAssign for Requests {
    fn add_assign(&mut self, o: Self) {
        self.graph_writes += o.graph_writes;
        self.graph_reads += o.graph_reads;
        self.exchange_writes += o.exchange_writes;
        self.exchange_reads += o.exchange_reads;
    }
}

/// What counting needs besides the plan.
pub struct Facts<'a> {
    /// The state rows (a create of a deleted row with an object id is a restore).
    pub objects: &'a [ManagedObject],
    /// The tenant as read, when it was (whether a mailbox is licensed or still provisioning).
    pub tenant: Option<&'a Inventory>,
    /// `tenant.usage_location` is set (a convert patches it first).
    pub usage_location: bool,
    pub budget: &'a Budget,
}

/// The bill of `plan`.
pub fn bill(plan: &Plan, facts: &Facts) -> Bill {
    let rows: BTreeMap<&Anchor, &ManagedObject> =
        facts.objects.iter().map(|o| (&o.anchor, o)).collect();
    // Under a scoped approval a blocked plan still sends the removals it does not hold.
    let blocked = !plan.safety.removals_go();
    let mut total = Requests::default();
    for a in &plan.actions {
        if a.held.is_some() || (blocked && (a.op.is_removal() || a.op == Op::Purge)) {
            continue;
        }
        let seen = facts.tenant.and_then(|t| t.managed.get(&a.anchor));
        total += requests(a, rows.get(&a.anchor).copied(), seen, facts.usage_location);
    }
    of_totals(total, facts.budget)
}

/// The bill of `total` requests at `budget`.
pub fn of_totals(total: Requests, budget: &Budget) -> Bill {
    let secs = |n: u64, rate: f64| (n as f64 / rate).ceil() as u64;
    let graph = ServiceBill {
        service: "graph".into(),
        writes: total.graph_writes,
        reads: total.graph_reads,
        budget_per_second: budget.graph_writes_per_second,
        seconds: secs(total.graph_writes, budget.graph_writes_per_second),
    };
    let exchange = ServiceBill {
        service: "exchange".into(),
        writes: total.exchange_writes,
        reads: total.exchange_reads,
        budget_per_second: budget.exchange_requests_per_second,
        seconds: secs(
            total.exchange_writes + total.exchange_reads,
            budget.exchange_requests_per_second,
        ),
    };
    let sent = |s: &ServiceBill| s.writes + s.reads > 0;
    let binding = match (sent(&graph), sent(&exchange)) {
        (false, false) => None,
        (true, false) => Some(&graph),
        (false, true) => Some(&exchange),
        // A tie goes to Exchange, the scarcer service.
        _ if graph.seconds > exchange.seconds => Some(&graph),
        _ => Some(&exchange),
    };
    let (binding, estimated_seconds) = match binding {
        Some(s) => (Some(s.service.clone()), s.seconds),
        None => (None, 0),
    };
    Bill {
        services: vec![graph, exchange],
        binding,
        estimated_seconds,
    }
}

/// The requests apply sends for `a` (see the module doc).
pub fn requests(
    a: &Action,
    row: Option<&ManagedObject>,
    seen: Option<&TenantObject>,
    usage_location: bool,
) -> Requests {
    let fields: BTreeSet<Field> = a
        .changes
        .iter()
        .filter_map(|(k, _)| k.parse().ok())
        .collect();
    let mut r = Requests::default();
    match a.op {
        Op::Create => {
            let restore =
                row.is_some_and(|o| o.stage == Stage::Deleted && o.tenant_object_id.is_some());
            if restore {
                r.graph_writes += 1;
                let mut all = fields.clone();
                all.insert(Field::HiddenFromAddressLists);
                all.insert(Field::AccountEnabled);
                let kind = row.map(|o| o.kind).unwrap_or(a.kind);
                if kind == a.kind {
                    r += by_writer(&all, kind, None, true);
                } else {
                    r += convert(a, &fields, None, usage_location);
                }
            } else {
                match a.kind {
                    Kind::MailUser => {
                        // New-MailUser, then one Set-MailUser with the stamp and the rest.
                        r.exchange_writes += 2;
                        let later = |w: Writer| {
                            fields
                                .iter()
                                .any(|f| f.writer() == w && !NEW_MAIL_USER_FIELDS.contains(f))
                        };
                        r.exchange_writes += u64::from(later(Writer::SetUser));
                        r.graph_writes += 1; // sign-in blocked beside the Exchange work
                    }
                    Kind::Mailbox => {
                        let licensed = seen.is_some_and(|t| t.exchange_licensed);
                        r.graph_writes += 1; // POST /users
                        if !licensed {
                            r.graph_reads += 1; // GET /subscribedSkus
                            r.graph_writes += 1; // assignLicense
                            r.exchange_reads += 1; // Get-Mailbox
                        }
                        let rest: BTreeSet<Field> = fields
                            .iter()
                            .copied()
                            .filter(|f| !POST_USER_FIELDS.contains(f) && *f != Field::Kind)
                            .collect();
                        let mut then = by_writer(&rest, Kind::Mailbox, None, true);
                        if !licensed && then.exchange_reads > 0 {
                            // The Get-Mailbox that saw the mailbox appear is the fresh read
                            // of its addresses: no Get-Recipient.
                            then.exchange_reads -= 1;
                        }
                        r += then;
                    }
                }
            }
        }
        Op::Update | Op::Disable | Op::Enable => {
            let kind = row.map(|o| o.kind).unwrap_or(a.kind);
            r += by_writer(&fields, kind, seen, false);
        }
        Op::Convert => r += convert(a, &fields, seen, usage_location),
        Op::Delete => match row.map(|o| o.kind).unwrap_or(a.kind) {
            Kind::MailUser => r.exchange_writes += 1,
            Kind::Mailbox => r.graph_writes += 1,
        },
        Op::Purge => r.graph_writes += 1,
    }
    r
}

fn convert(
    a: &Action,
    fields: &BTreeSet<Field>,
    seen: Option<&TenantObject>,
    usage_location: bool,
) -> Requests {
    let mut r = Requests::default();
    if a.kind == Kind::MailUser {
        // Refused before anything is sent (a mailbox cannot become a MailUser in place).
        return r;
    }
    if usage_location {
        r.graph_writes += 1;
    }
    r.graph_writes += 1; // assignLicense
    r.exchange_reads += 1; // Get-Mailbox
    let mut rest = fields.clone();
    rest.remove(&Field::Kind);
    r += by_writer(&rest, Kind::Mailbox, seen, false);
    r
}

/// One request per writer that `fields` name, as `write_changes` sends them; the address
/// step reads the object first when it was not read in this action (`unread`) or the
/// primary changes.
fn by_writer(
    fields: &BTreeSet<Field>,
    kind: Kind,
    seen: Option<&TenantObject>,
    unread: bool,
) -> Requests {
    let mut r = Requests::default();
    let has = |w: Writer| fields.iter().any(|f| f.writer() == w);
    let pending = kind == Kind::Mailbox && seen.is_some_and(|t| t.mailbox_pending);
    if has(Writer::SetRecipient) && !pending {
        r.exchange_writes += 1;
        let addresses = fields.iter().any(|f| f.is_address());
        let no_proxies = seen.is_none_or(|t| t.proxies.is_empty());
        if addresses && (unread || no_proxies || fields.contains(&Field::PrimarySmtpAddress)) {
            r.exchange_reads += 1;
        }
    }
    if has(Writer::SetUser) && !pending {
        r.exchange_writes += 1;
    }
    if has(Writer::GraphPatch) {
        r.graph_writes += 1;
    }
    r
}

/// `~2 h 20 min`, `~17 min`, `~40 s`.
pub fn duration(seconds: u64) -> String {
    match seconds {
        0..60 => format!("~{seconds} s"),
        60..3600 => format!("~{} min", seconds.div_ceil(60)),
        _ => {
            let m = seconds.div_ceil(60);
            format!("~{} h {} min", m / 60, m % 60)
        }
    }
}

/// `42,000`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Changes, Held, HeldOutcome, Phase, Verdict};
    use serde_json::json;

    fn action(op: Op, kind: Kind, fields: &[&str]) -> Action {
        Action {
            op,
            anchor: Anchor::new("a-1").unwrap(),
            uid: "ann".into(),
            kind,
            dn: "uid=ann,ou=people,dc=example,dc=edu".into(),
            changes: fields
                .iter()
                .map(|f| (f.to_string(), (Some(json!("old")), Some(json!("new")))))
                .collect::<Changes>(),
            reason: None,
            held: None,
            phase: Phase::Main,
        }
    }

    fn row(kind: Kind, stage: Stage) -> ManagedObject {
        ManagedObject {
            anchor: Anchor::new("a-1").unwrap(),
            kind,
            uid: "ann".into(),
            dn: String::new(),
            tenant_object_id: Some("id-1".into()),
            attributes: Default::default(),
            stage,
            created_at: 0,
            updated_at: 0,
            disabled_at: None,
            delete_due_at: None,
            deleted_at: None,
        }
    }

    fn req(gw: u64, gr: u64, ew: u64, er: u64) -> Requests {
        Requests {
            graph_writes: gw,
            graph_reads: gr,
            exchange_writes: ew,
            exchange_reads: er,
        }
    }

    #[test]
    fn each_op_counts_the_requests_apply_sends() {
        let mu = Kind::MailUser;
        let mb = Kind::Mailbox;
        // A MailUser: New-MailUser, one Set-MailUser for the stamp, the addresses and the
        // hidden flag, Set-User for the department; the sign-in is blocked through Graph.
        let create = action(
            Op::Create,
            mu,
            &["userPrincipalName", "primarySmtpAddress", "department"],
        );
        assert_eq!(requests(&create, None, None, true), req(1, 0, 3, 0));
        // Only what New-MailUser sets: the stamp alone in Set-MailUser, no Set-User.
        let bare = action(Op::Create, mu, &["userPrincipalName", "displayName"]);
        assert_eq!(requests(&bare, None, None, true), req(1, 0, 2, 0));
        // A mailbox: GET /subscribedSkus, POST /users, assignLicense, Get-Mailbox (its answer
        // is the fresh read), then Set-Mailbox for the addresses, PATCH for accountEnabled.
        let mailbox = action(
            Op::Create,
            mb,
            &[
                "userPrincipalName",
                "emailAddresses",
                "accountEnabled",
                "department",
            ],
        );
        assert_eq!(requests(&mailbox, None, None, true), req(3, 1, 1, 1));
        // A person deleted within 30 days: restore, then every field by its writer.
        let deleted = row(mu, Stage::Deleted);
        assert_eq!(
            requests(&bare, Some(&deleted), None, true),
            req(2, 0, 2, 0),
            "restore + PATCH; Set-MailUser (hidden) + Set-User"
        );
        // Updates: one request per writer.
        let update = action(
            Op::Update,
            mu,
            &["department", "jobTitle", "hiddenFromAddressLists"],
        );
        assert_eq!(
            requests(&update, Some(&row(mu, Stage::Active)), None, true),
            req(0, 0, 2, 0)
        );
        let disable = action(
            Op::Disable,
            mb,
            &["hiddenFromAddressLists", "accountEnabled"],
        );
        assert_eq!(
            requests(&disable, Some(&row(mb, Stage::Active)), None, true),
            req(1, 0, 1, 0)
        );
        // Convert: usageLocation, assignLicense, Get-Mailbox; nothing for a mailbox → MailUser.
        let convert = action(Op::Convert, mb, &["kind"]);
        assert_eq!(requests(&convert, None, None, true), req(2, 0, 0, 1));
        assert_eq!(requests(&convert, None, None, false), req(1, 0, 0, 1));
        assert_eq!(
            requests(&action(Op::Convert, mu, &["kind"]), None, None, true),
            req(0, 0, 0, 0)
        );
        // Delete by the service that made the object; purge through Graph.
        let delete = action(Op::Delete, mu, &[]);
        assert_eq!(
            requests(&delete, Some(&row(mu, Stage::Disabled)), None, true),
            req(0, 0, 1, 0)
        );
        assert_eq!(
            requests(&delete, Some(&row(mb, Stage::Disabled)), None, true),
            req(1, 0, 0, 0)
        );
        assert_eq!(
            requests(&action(Op::Purge, mu, &[]), None, None, true),
            req(1, 0, 0, 0)
        );
    }

    #[test]
    fn held_actions_and_blocked_removals_send_nothing() {
        let mut held = action(Op::Create, Kind::MailUser, &["userPrincipalName"]);
        held.held = Some(Held {
            outcome: HeldOutcome::Failed,
            reason: "no licence".into(),
        });
        let disable = action(Op::Disable, Kind::MailUser, &["hiddenFromAddressLists"]);
        let mut plan = Plan {
            generated_at: String::new(),
            source: Default::default(),
            tenant_read: None,
            summary: Default::default(),
            safety: crate::plan::Safety {
                verdict: Verdict::Blocked,
                reasons: Vec::new(),
                approved_removals: None,
                approval: None,
                held_removals: 0,
            },
            actions: vec![held, disable],
            quarantined: Vec::new(),
            drift: Vec::new(),
            warnings: Vec::new(),
            licences: None,
            bill: None,
            unchanged_since_run: None,
            partial: None,
        };
        let budget = Budget::default();
        let facts = Facts {
            objects: &[],
            tenant: None,
            usage_location: true,
            budget: &budget,
        };
        let b = bill(&plan, &facts);
        assert_eq!((b.binding, b.estimated_seconds), (None, 0));
        plan.safety.verdict = Verdict::Ok;
        let b = bill(&plan, &facts);
        assert_eq!(b.service("exchange").unwrap().writes, 1);
        assert_eq!(b.binding.as_deref(), Some("exchange"));
        // A scoped approval's blocked plan still sends the removals it did not hold.
        plan.safety.verdict = Verdict::Blocked;
        plan.safety.approval = Some(crate::plan::Approval {
            removals: 1,
            scope: "ou=people,dc=example,dc=edu".into(),
        });
        let b = bill(&plan, &facts);
        assert_eq!(b.service("exchange").unwrap().writes, 1);
    }

    #[test]
    fn the_binding_service_is_the_slower_one() {
        let budget = Budget::default();
        let b = of_totals(
            Requests {
                graph_writes: 21_000,
                graph_reads: 10,
                exchange_writes: 40_000,
                exchange_reads: 2_000,
            },
            &budget,
        );
        assert_eq!(b.service("graph").unwrap().seconds, 1050);
        assert_eq!(b.service("exchange").unwrap().seconds, 8400);
        assert_eq!(b.binding.as_deref(), Some("exchange"));
        assert_eq!(b.estimated_seconds, 8400);
        let none = of_totals(Requests::default(), &budget);
        assert_eq!((none.binding, none.estimated_seconds), (None, 0));
    }

    #[test]
    fn durations_and_thousands_read_well() {
        assert_eq!(duration(8400), "~2 h 20 min");
        assert_eq!(duration(1050), "~18 min");
        assert_eq!(duration(40), "~40 s");
        assert_eq!(thousands(42_000), "42,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
