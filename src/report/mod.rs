//! report: renders a plan for people and for scripts.
//!
//! `text` is the terminal diff, `json` the machine-readable plan of INTERFACE.md, `csv` one
//! row per changed field for spreadsheets, `markdown` for tickets and change reviews.

use std::fmt::Write as _;

use serde_json::Value;

use crate::apply::{ActionResult, Outcome, Tally};
use crate::desired::Kind;
use crate::plan::{Action, Change, HeldOutcome, Op, Plan, Verdict, show_value};

/// Quarantine reasons listed at the top of a report, most frequent first; the rest are
/// counted as one line, since the detail follows further down.
const TOP_REASONS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Csv,
    Markdown,
}

/// Renders `plan`; `title` names what produced it (e.g. "sync --dry-run").
pub fn render(plan: &Plan, format: Format, title: &str) -> String {
    match format {
        Format::Text => text(plan, title),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(plan).expect("a plan serialises");
            s.push('\n');
            s
        }
        Format::Csv => csv(plan),
        Format::Markdown => markdown(plan, title),
    }
}

fn heading(op: Op) -> &'static str {
    match op {
        Op::Create => "Create",
        Op::Update => "Update",
        Op::Convert => "Convert",
        Op::Disable => "Disable (hide from the address list, block sign-in)",
        Op::Enable => "Enable (back within the grace period)",
        Op::Delete => "Delete (grace period over)",
        Op::Purge => "Purge from the recycle bin (a newcomer needs what it holds)",
    }
}

fn marker(op: Op) -> char {
    match op {
        Op::Create | Op::Enable => '+',
        Op::Update | Op::Convert => '~',
        Op::Disable | Op::Delete | Op::Purge => '-',
    }
}

/// A value for CSV and Markdown cells: no quotes, lists joined with `; `, absence empty.
fn cell(v: &Option<Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| i.to_string())
            })
            .collect::<Vec<_>>()
            .join("; "),
        Some(other) => other.to_string(),
    }
}

fn after_str<'a>(a: &'a Action, field: &str) -> Option<&'a str> {
    a.changes
        .get(field)
        .and_then(|(_, after)| after.as_ref())
        .and_then(Value::as_str)
}

fn summary_line(plan: &Plan) -> String {
    let s = &plan.summary;
    format!(
        "{} to create, {} to update, {} to convert, {} to disable, {} to enable, {} to delete, {} to purge, {} unchanged, {} quarantined, {} held",
        s.create,
        s.update,
        s.convert,
        s.disable,
        s.enable,
        s.delete,
        s.purge,
        s.unchanged,
        s.quarantined,
        s.held
    )
}

/// "Licences (SKU): N needed, M free", and how many are short, when the plan knows.
fn licence_line(plan: &Plan) -> Option<String> {
    let b = plan.licences.as_ref()?;
    let short = match b.short() {
        0 => String::new(),
        n => format!(" — {n} short, see the warnings"),
    };
    Some(format!(
        "Licences ({}): {} needed, {} free{short}",
        b.sku, b.needed, b.free
    ))
}

/// `bill: 42,000 Exchange requests (~2 h 20 min at 5/s, binding), 21,000 Graph writes (~18
/// min at 20/s); licences (SKU): 300 needed, 120 free — 180 short`; without a bill, the
/// licence line alone.
pub fn bill_line(plan: &Plan) -> Option<String> {
    use crate::plan::bill::{duration, thousands};
    let Some(b) = &plan.bill else {
        return licence_line(plan);
    };
    let binding = |name: &str| {
        if b.binding.as_deref() == Some(name) {
            ", binding"
        } else {
            ""
        }
    };
    let mut parts = Vec::new();
    if let Some(ex) = b.service("exchange")
        && ex.writes + ex.reads > 0
    {
        parts.push(format!(
            "{} Exchange requests ({} at {}/s{})",
            thousands(ex.writes + ex.reads),
            duration(ex.seconds),
            ex.budget_per_second,
            binding("exchange")
        ));
    }
    if let Some(g) = b.service("graph")
        && g.writes + g.reads > 0
    {
        let reads = match g.reads {
            0 => String::new(),
            n => format!(" + {} reads", thousands(n)),
        };
        parts.push(format!(
            "{} Graph writes{reads} ({} at {}/s{})",
            thousands(g.writes),
            duration(g.seconds),
            g.budget_per_second,
            binding("graph")
        ));
    }
    let mut line = if parts.is_empty() {
        "bill: no requests to send".to_owned()
    } else {
        format!("bill: {}", parts.join(", "))
    };
    if let Some(l) = &plan.licences {
        let short = match l.short() {
            0 => String::new(),
            n => format!(" — {n} short, see the warnings"),
        };
        line.push_str(&format!(
            "; licences ({}): {} needed, {} free{short}",
            l.sku, l.needed, l.free
        ));
    }
    Some(line)
}

fn text(plan: &Plan, title: &str) -> String {
    let mut out = String::new();
    let src = &plan.source;
    let _ = writeln!(
        out,
        "ldap2exo {title} at {}: {} LDAP entries read ({} scope), {} without mail skipped, {} marked disabled",
        plan.generated_at, src.entries, src.scope, src.skipped_no_mail, src.disabled_in_ldap
    );
    for line in read_lines(plan) {
        let _ = writeln!(out, "{line}");
    }
    text_overview(&mut out, plan);
    for op in Op::ALL {
        let actions: Vec<&Action> = plan.actions.iter().filter(|a| a.op == op).collect();
        if actions.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{} ({})", heading(op), actions.len());
        for a in actions {
            text_action(&mut out, a);
        }
    }
    text_section(
        &mut out,
        "Quarantined",
        ": not provisioned, not changed, not treated as leaving",
        '!',
        plan.quarantined
            .iter()
            .map(|q| (q.dn.clone(), format!("{}: {}", q.field, q.reason))),
    );
    text_section(
        &mut out,
        "Tenant drift",
        ": the tenant differed from the state store; the actions above repair it",
        '~',
        plan.drift
            .iter()
            .map(|d| (format!("{} ({})", d.uid, d.kind), d.detail.clone())),
    );
    text_section(
        &mut out,
        "Warnings",
        "",
        '?',
        plan.warnings
            .iter()
            .map(|w| (warning_subject(w), format!("{}: {}", w.field, w.message))),
    );
    let _ = writeln!(out);
    out.push_str(&verdict_and_summary(plan));
    out
}

/// Who a warning is about: its entry, else the uid it names, else the run.
fn warning_subject(w: &crate::plan::Warning) -> String {
    match (&w.dn, &w.uid) {
        (dn, _) if !dn.is_empty() => dn.clone(),
        (_, Some(uid)) => format!("uid {uid}"),
        _ => "the run".into(),
    }
}

/// The `Safety:` verdict (when blocked: its reasons and how to approve) and the `Summary:`
/// line: the end of the text report, and what `plan` prints on standard error.
pub fn verdict_and_summary(plan: &Plan) -> String {
    let mut out = String::new();
    safety_lines(&mut out, plan);
    let _ = writeln!(out, "Summary: {}", summary_line(plan));
    out
}

fn safety_lines(out: &mut String, plan: &Plan) {
    match plan.safety.verdict {
        Verdict::Ok => {
            let _ = writeln!(out, "Safety: ok");
        }
        Verdict::Blocked if plan.safety.approval.is_some() => {
            let _ = writeln!(
                out,
                "Safety: BLOCKED — only the approved removals would go; {} held back:",
                plan.safety.held_removals
            );
            for r in &plan.safety.reasons {
                let _ = writeln!(out, "  - {r}");
            }
            let _ = writeln!(out, "  {}", approval(plan));
        }
        Verdict::Blocked => {
            let _ = writeln!(
                out,
                "Safety: BLOCKED — nothing would be disabled or deleted:"
            );
            for r in &plan.safety.reasons {
                let _ = writeln!(out, "  - {r}");
            }
            let _ = writeln!(out, "  {}", approval(plan));
        }
    }
}

/// How LDAP and the tenant were read, when either may be read incrementally
/// (`ldap.content_sync`, `tenant.incremental_read`): incremental, or full and why.
fn read_lines(plan: &Plan) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(r) = &plan.source.read {
        lines.push(match r.mode.as_str() {
            "incremental" => format!(
                "LDAP read incrementally (content synchronisation): {} entries changed, {} left",
                r.changed, r.removed
            ),
            mode => format!(
                "LDAP read in full ({}): {}",
                if mode == "paged" {
                    "paged search"
                } else {
                    "content synchronisation without a cookie"
                },
                r.reason.as_deref().unwrap_or("no reason given")
            ),
        });
    }
    if let Some(r) = &plan.tenant_read {
        lines.push(match r.mode.as_str() {
            "incremental" => format!(
                "Tenant read incrementally (Graph delta, Exchange WhenChangedUTC): {} objects changed, {} users removed",
                r.changed, r.removed
            ),
            _ => format!(
                "Tenant read in full: {}",
                r.reason.as_deref().unwrap_or("no reason given")
            ),
        });
    }
    if let Some(run) = plan.unchanged_since_run {
        lines.push(format!(
            "Nothing changed in LDAP, the tenant or the state store since run {run}: its plan stands (not mapped or planned again)"
        ));
    }
    lines
}

/// How an operator approves a blocked plan: the exact command, or why it cannot be.
pub fn approval(plan: &Plan) -> String {
    if plan.source.scope == "full" && plan.source.entries == 0 {
        return "An empty LDAP read cannot be approved: fix what LDAP returns (filter, base DN, bind) and run again.".into();
    }
    let only = match plan.source.only.is_empty() {
        true => String::new(),
        false => format!(" --only {}", plan.source.only.join(" ")),
    };
    if plan.safety.approval.is_some() {
        let n = plan.safety.held_removals;
        return format!(
            "The {n} held removal{} need their own approval: review them in this report, then plan again (ldap2exo plan --output plan.json{only} --approve-removals N --scope S) or run ldap2exo sync{only} --approve-removals N --scope S, with a scope that covers them",
            if n == 1 { "" } else { "s" }
        );
    }
    let n = plan.summary.removals();
    let s = if n == 1 { "" } else { "s" };
    format!(
        "To approve {n} removal{s}, review them in this report, then run ldap2exo sync --max-deletes {n}{only}, or for a reviewed plan ldap2exo plan --output plan.json --max-deletes {n}{only} and ldap2exo apply plan.json (--approve-removals N --scope S approves only those within a DN subtree or LDAP filter)"
    )
}

/// Per op with actions to carry out: how many MailUsers and how many mailboxes.
fn kind_split(plan: &Plan) -> Vec<(Op, usize, usize)> {
    Op::ALL
        .into_iter()
        .filter_map(|op| {
            let of = |kind: Kind| {
                plan.actions
                    .iter()
                    .filter(|a| a.op == op && a.kind == kind && a.held.is_none())
                    .count()
            };
            let (users, boxes) = (of(Kind::MailUser), of(Kind::Mailbox));
            (users + boxes > 0).then_some((op, users, boxes))
        })
        .collect()
}

fn kinds(users: usize, boxes: usize) -> String {
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    format!(
        "{}, {}",
        plural(users, "MailUser", "MailUsers"),
        plural(boxes, "mailbox", "mailboxes")
    )
}

/// Quarantined entries counted by field and reason class, most frequent first.
fn quarantine_classes(plan: &Plan) -> Vec<(String, usize)> {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for q in &plan.quarantined {
        *counts
            .entry(format!("{}: {}", q.field, reason_class(&q.reason)))
            .or_default() += 1;
    }
    let mut classes: Vec<(String, usize)> = counts.into_iter().collect();
    classes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    classes
}

/// A quarantine reason without the entry's own values, so that entries with the same problem
/// fall into one class: quoted values, addresses, DNs, domains and numbers become `…`, and
/// only the first clause that says something is kept.
pub fn reason_class(reason: &str) -> String {
    let mut masked = String::new();
    let mut quoted = false;
    for c in reason.chars() {
        match (c, quoted) {
            ('`', false) => {
                quoted = true;
                masked.push('…');
            }
            ('`', true) => quoted = false,
            (_, true) => {}
            _ => masked.push(c),
        }
    }
    let words: Vec<String> = masked
        .split(' ')
        .map(|w| {
            let specific = w.contains(['@', '=', '.'])
                && w.trim_end_matches(['.', ',']).contains(['@', '=', '.'])
                || w.chars().any(|c| c.is_ascii_digit());
            if specific {
                "…".to_owned()
            } else {
                w.to_owned()
            }
        })
        .collect();
    let masked = words.join(" ");
    masked
        .split([':', ';', ',', '('])
        .map(str::trim)
        .find(|clause| {
            clause
                .split(' ')
                .filter(|w| w.chars().filter(|c| c.is_alphabetic()).count() >= 3)
                .count()
                >= 2
        })
        .unwrap_or(masked.trim())
        .to_owned()
}

/// The top of the text report: the counts, split by kind; quarantine by reason; licences;
/// the safety verdict. The detail follows.
fn text_overview(out: &mut String, plan: &Plan) {
    // Not `Summary:`: scripts grep the one line at the bottom.
    let _ = writeln!(out, "\nPlanned: {}", summary_line(plan));
    for (op, users, boxes) in kind_split(plan) {
        let _ = writeln!(out, "  {:<8} {}", op.as_str(), kinds(users, boxes));
    }
    let classes = quarantine_classes(plan);
    if !classes.is_empty() {
        let _ = writeln!(out, "Quarantined by reason:");
        for (class, n) in classes.iter().take(TOP_REASONS) {
            let _ = writeln!(out, "  {n:>5}  {class}");
        }
        if classes.len() > TOP_REASONS {
            let rest: usize = classes[TOP_REASONS..].iter().map(|(_, n)| n).sum();
            let _ = writeln!(out, "  {rest:>5}  … other reasons");
        }
    }
    if let Some(line) = bill_line(plan) {
        let _ = writeln!(out, "{line}");
    }
    safety_lines(out, plan);
}

/// A `Heading (count)<note>` section of two-line entries (`marker` title, then the detail);
/// nothing when there are none.
fn text_section(
    out: &mut String,
    heading: &str,
    note: &str,
    marker: char,
    entries: impl ExactSizeIterator<Item = (String, String)>,
) {
    if entries.len() == 0 {
        return;
    }
    let _ = writeln!(out, "\n{heading} ({}){note}", entries.len());
    for (title, detail) in entries {
        let _ = writeln!(out, "  {marker} {title}\n      {detail}");
    }
}

fn text_action(out: &mut String, a: &Action) {
    let m = marker(a.op);
    match a.op {
        Op::Create => {
            let primary = after_str(a, "primarySmtpAddress").unwrap_or("");
            let display = after_str(a, "displayName").unwrap_or("");
            let _ = writeln!(
                out,
                "  {m} {:<16} {:<9} {primary}  \"{display}\"",
                a.uid,
                a.kind.as_str()
            );
            let extra: Vec<String> = [
                "emailAddresses",
                "externalEmailAddress",
                "hiddenFromAddressLists",
            ]
            .into_iter()
            .filter_map(|f| {
                let (_, after) = a.changes.get(f)?;
                match after {
                    Some(Value::Array(v)) if v.is_empty() => None,
                    Some(Value::Bool(false)) => None,
                    _ => Some(format!("{f}: {}", show_value(after))),
                }
            })
            .collect();
            if !extra.is_empty() {
                let _ = writeln!(out, "      {}", extra.join("  "));
            }
        }
        _ => {
            let why = a
                .reason
                .as_deref()
                .map(|r| format!("  ({r})"))
                .unwrap_or_default();
            let _ = writeln!(out, "  {m} {:<16} {:<9}{why}", a.uid, a.kind.as_str());
            for (field, (before, after)) in &a.changes {
                let _ = writeln!(
                    out,
                    "      {field}: {} → {}",
                    show_value(before),
                    show_value(after)
                );
            }
        }
    }
    if let Some(h) = &a.held {
        let what = match h.outcome {
            HeldOutcome::Conflict => "CONFLICT",
            HeldOutcome::Failed => "CANNOT BE DONE",
            HeldOutcome::Skipped => "HELD BACK BY THE SAFETY GATE",
        };
        let _ = writeln!(out, "      {what}, not carried out: {}", h.reason);
    }
}

/// Writes the report of `plan` (and, after a real run, of its `results`) to `out`. JSON is
/// streamed, so a plan for 50,000 people is never held twice in memory; a real run's JSON is
/// one object: the plan plus `results` and `applied` counts.
pub fn write(
    out: &mut dyn std::io::Write,
    plan: &Plan,
    results: Option<&[ActionResult]>,
    format: Format,
    title: &str,
) -> std::io::Result<()> {
    match format {
        Format::Json => {
            // serde_json writes in small pieces: through `dyn Write` each is a call the
            // compiler cannot inline (a tenth of a 50,000-person dry run went there). A
            // buffer of a known type in between takes them inline.
            use std::io::Write as _;
            let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
            match results {
                None => serde_json::to_writer_pretty(&mut out, plan)?,
                Some(results) => serde_json::to_writer_pretty(
                    &mut out,
                    &Applied {
                        plan,
                        results,
                        applied: Tally::of(results),
                    },
                )?,
            }
            out.write_all(b"\n")?;
            out.flush()
        }
        _ => {
            let mut text = render(plan, format, title);
            if let Some(results) = results {
                text.push_str(&render_results(results, format));
            }
            out.write_all(text.as_bytes())
        }
    }
}

#[derive(serde::Serialize)]
struct Applied<'a> {
    #[serde(flatten)]
    plan: &'a Plan,
    results: &'a [ActionResult],
    applied: Tally,
}

/// The outcome of applying a plan, for text, Markdown (a section after the plan) and CSV
/// (a row per action that was not done).
fn render_results(results: &[ActionResult], format: Format) -> String {
    let c = Tally::of(results);
    let not_done: Vec<(&ActionResult, &str, &str)> = results
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Done => None,
            Outcome::Pending(w) => Some((r, "pending", w.as_str())),
            Outcome::Skipped(w) => Some((r, "skipped", w.as_str())),
            Outcome::Conflict(w) => Some((r, "conflict", w.as_str())),
            Outcome::Failed(w) => Some((r, "failed", w.as_str())),
            Outcome::NotStarted(w) => Some((r, "not started", w.as_str())),
        })
        .collect();
    let mut out = String::new();
    if format == Format::Csv {
        for (r, what, why) in not_done {
            csv_row(
                &mut out,
                &[what, r.anchor.as_str(), &r.uid, "", "", "", "", "", why],
            );
        }
        return out;
    }
    let md = format == Format::Markdown;
    let _ = writeln!(
        out,
        "\n{}Applied: {} done, {} pending, {} skipped, {} conflicts, {} failed{}",
        if md { "## " } else { "" },
        c.done,
        c.pending,
        c.skipped,
        c.conflict,
        c.failed,
        match c.not_started {
            0 => String::new(),
            n => format!(", {n} not started (the run was stopped)"),
        }
    );
    for (r, what, why) in not_done {
        let _ = writeln!(
            out,
            "{} {what}: {} {} — {why}",
            if md { "-" } else { "  !" },
            r.op.as_str(),
            r.uid
        );
    }
    out
}

/// RFC 4180: quote a field when it holds a comma, quote, CR or LF; double inner quotes.
pub(crate) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

pub(crate) fn csv_row(out: &mut String, fields: &[&str]) {
    let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
    out.push_str(&row.join(","));
    out.push_str("\r\n");
}

fn csv(plan: &Plan) -> String {
    let mut out = String::new();
    csv_row(
        &mut out,
        &[
            "op", "anchor", "uid", "kind", "dn", "field", "before", "after", "reason",
        ],
    );
    for a in &plan.actions {
        let reason = match &a.held {
            Some(h) => format!("held ({:?}): {}", h.outcome, h.reason).to_lowercase(),
            None => a.reason.clone().unwrap_or_default(),
        };
        let reason = reason.as_str();
        if a.changes.is_empty() {
            csv_row(
                &mut out,
                &[
                    a.op.as_str(),
                    a.anchor.as_str(),
                    &a.uid,
                    a.kind.as_str(),
                    &a.dn,
                    "",
                    "",
                    "",
                    reason,
                ],
            );
        }
        for (field, (before, after)) in &a.changes {
            csv_row(
                &mut out,
                &[
                    a.op.as_str(),
                    a.anchor.as_str(),
                    &a.uid,
                    a.kind.as_str(),
                    &a.dn,
                    field,
                    &cell(before),
                    &cell(after),
                    reason,
                ],
            );
        }
    }
    for q in &plan.quarantined {
        let anchor = q.anchor.as_ref().map(|a| a.as_str()).unwrap_or("");
        csv_row(
            &mut out,
            &[
                "quarantined",
                anchor,
                q.uid.as_deref().unwrap_or(""),
                "",
                &q.dn,
                &q.field,
                "",
                "",
                &q.reason,
            ],
        );
    }
    for d in &plan.drift {
        csv_row(
            &mut out,
            &[
                "drift",
                d.anchor.as_str(),
                &d.uid,
                "",
                "",
                &d.kind,
                "",
                "",
                &d.detail,
            ],
        );
    }
    for w in &plan.warnings {
        csv_row(
            &mut out,
            &[
                "warning",
                "",
                w.uid.as_deref().unwrap_or(""),
                "",
                &w.dn,
                &w.field,
                "",
                "",
                &w.message,
            ],
        );
    }
    out
}

/// A `## heading (count)` section with a three-column table; nothing when there are no rows.
fn md_section<S: AsRef<str>>(
    out: &mut String,
    heading: &str,
    columns: [&str; 3],
    rows: impl ExactSizeIterator<Item = [S; 3]>,
) {
    if rows.len() == 0 {
        return;
    }
    let _ = writeln!(out, "## {heading} ({})\n", rows.len());
    let _ = writeln!(out, "| {} |\n|---|---|---|", columns.join(" | "));
    for [a, b, c] in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            md(a.as_ref()),
            md(b.as_ref()),
            md(c.as_ref())
        );
    }
    let _ = writeln!(out);
}

/// Markdown table cells must not break the table: escape pipes, fold newlines.
pub(crate) fn md(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn markdown(plan: &Plan, title: &str) -> String {
    let mut out = String::new();
    let s = &plan.summary;
    let _ = writeln!(out, "# ldap2exo {title}\n");
    let _ = writeln!(
        out,
        "Generated {}. {} LDAP entries read ({} scope), {} without mail skipped, {} marked disabled.\n",
        plan.generated_at,
        plan.source.entries,
        plan.source.scope,
        plan.source.skipped_no_mail,
        plan.source.disabled_in_ldap
    );
    for line in read_lines(plan) {
        let _ = writeln!(out, "{}\n", md(&line));
    }
    let _ = writeln!(
        out,
        "| create | update | convert | disable | enable | delete | purge | unchanged | quarantined | held |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
        s.create,
        s.update,
        s.convert,
        s.disable,
        s.enable,
        s.delete,
        s.purge,
        s.unchanged,
        s.quarantined,
        s.held
    );
    let split: Vec<String> = kind_split(plan)
        .into_iter()
        .map(|(op, users, boxes)| format!("{} {}", op.as_str(), kinds(users, boxes)))
        .collect();
    if !split.is_empty() {
        let _ = writeln!(out, "By kind: {}.\n", split.join("; "));
    }
    let classes = quarantine_classes(plan);
    if !classes.is_empty() {
        let _ = writeln!(out, "Quarantined by reason:\n");
        for (class, n) in classes.iter().take(TOP_REASONS) {
            let _ = writeln!(out, "- {n} × {}", md(class));
        }
        if classes.len() > TOP_REASONS {
            let rest: usize = classes[TOP_REASONS..].iter().map(|(_, n)| n).sum();
            let _ = writeln!(out, "- {rest} × other reasons");
        }
        let _ = writeln!(out);
    }
    if let Some(line) = bill_line(plan) {
        let _ = writeln!(out, "{}\n", md(&line));
    }
    match plan.safety.verdict {
        Verdict::Ok => {
            let _ = writeln!(out, "**Safety:** ok\n");
        }
        Verdict::Blocked => {
            let _ = writeln!(
                out,
                "**Safety: blocked.** Nothing would be disabled or deleted:\n"
            );
            for r in &plan.safety.reasons {
                let _ = writeln!(out, "- {}", md(r));
            }
            let _ = writeln!(out, "\n{}\n", md(&approval(plan)));
        }
    }
    for op in Op::ALL {
        let actions: Vec<&Action> = plan.actions.iter().filter(|a| a.op == op).collect();
        if actions.is_empty() {
            continue;
        }
        let _ = writeln!(out, "## {} ({})\n", heading(op), actions.len());
        let _ = writeln!(out, "| uid | kind | field | before | after |");
        let _ = writeln!(out, "|---|---|---|---|---|");
        for a in actions {
            let mut rows: Vec<(&str, &Change)> = a.changes.iter().collect();
            let none: Change = (None, None);
            if rows.is_empty() {
                rows.push(("", &none));
            }
            for (i, (field, (before, after))) in rows.into_iter().enumerate() {
                let (uid, kind) = if i == 0 {
                    (md(&a.uid), a.kind.as_str())
                } else {
                    (String::new(), "")
                };
                let _ = writeln!(
                    out,
                    "| {uid} | {kind} | {} | {} | {} |",
                    md(field),
                    md(&cell(before)),
                    md(&cell(after))
                );
            }
            if let Some(r) = &a.reason {
                let _ = writeln!(out, "| | | *reason* | | {} |", md(r));
            }
            if let Some(h) = &a.held {
                let _ = writeln!(out, "| | | *held: {:?}* | | {} |", h.outcome, md(&h.reason));
            }
        }
        let _ = writeln!(out);
    }
    md_section(
        &mut out,
        "Quarantined",
        ["entry", "field", "reason"],
        plan.quarantined
            .iter()
            .map(|q| [&q.dn, &q.field, &q.reason]),
    );
    md_section(
        &mut out,
        "Tenant drift",
        ["uid", "kind", "detail"],
        plan.drift.iter().map(|d| [&d.uid, &d.kind, &d.detail]),
    );
    md_section(
        &mut out,
        "Warnings",
        ["entry", "field", "warning"],
        plan.warnings
            .iter()
            .map(|w| [warning_subject(w), w.field.clone(), w.message.clone()]),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn markdown_cells_cannot_break_the_table() {
        assert_eq!(md("a|b\nc"), "a\\|b c");
    }

    #[test]
    fn reason_classes_drop_the_entry_s_own_values() {
        let same = [
            "`kwright@example.org`: domain example.org is not an accepted domain of the tenant",
            "`x@foo.org`: domain foo.org is not an accepted domain of the tenant",
        ];
        assert_eq!(reason_class(same[0]), reason_class(same[1]));
        assert_eq!(
            reason_class(same[0]),
            "domain … is not an accepted domain of the tenant"
        );
        assert_eq!(
            reason_class("`zoe.baker(at)example.edu` is not an e-mail address (no @)"),
            "… is not an e-mail address"
        );
        assert_eq!(
            reason_class("displayName `Hubert …` is 285 characters long; at most 256 are allowed"),
            "displayName … is … characters long"
        );
    }

    #[test]
    fn values_are_shown_plainly() {
        assert_eq!(show_value(&None), "∅");
        assert_eq!(show_value(&Some(Value::from("x"))), "\"x\"");
        assert_eq!(show_value(&Some(serde_json::json!(["a", "b"]))), "[a, b]");
        assert_eq!(cell(&Some(serde_json::json!(["a", "b"]))), "a; b");
        assert_eq!(cell(&Some(Value::Bool(true))), "true");
    }
}
