//! The GAL audit for people and for scripts: `text` (one sentence and its fix per finding,
//! the completeness line last), `json` (the [`GalAudit`] as it serialises: `summary` with
//! `should_be`, `resolvable` and `ratio`, `findings`, `quarantined`), `csv` (one row per
//! finding, then one per quarantined entry with the code `quarantined`; RFC 4180) and
//! `markdown` (for tickets).

use std::fmt::Write as _;

use super::gal::GalAudit;
use crate::report::{Format, csv_row, md};

/// The CSV header: scripts read the columns by these names.
pub const CSV_HEADER: [&str; 9] = [
    "code", "uid", "anchor", "field", "expected", "found", "holder", "message", "fix",
];

/// Writes `audit` in `format`.
pub fn write(
    out: &mut dyn std::io::Write,
    audit: &GalAudit,
    format: Format,
) -> std::io::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, audit)?;
            out.write_all(b"\n")
        }
        Format::Text => out.write_all(text(audit).as_bytes()),
        Format::Csv => out.write_all(csv(audit).as_bytes()),
        Format::Markdown => out.write_all(markdown(audit).as_bytes()),
    }
}

fn counts_line(audit: &GalAudit) -> String {
    let s = &audit.summary;
    let plural = |n: usize, one: &'static str, many: &'static str| match n {
        1 => one,
        _ => many,
    };
    let migrating = match s.migrating {
        0 => String::new(),
        n => format!(
            "; {n} migrating by IMAP (audited as mailboxes forwarding to on-prem until cutover)"
        ),
    };
    format!(
        "{} finding{}; {} {} mapped from LDAP ({} hidden by hidden_filter, so {} should be in the GAL); not counted: {} disabled, {} quarantined{migrating}",
        s.findings,
        plural(s.findings, "", "s"),
        s.people,
        plural(s.people, "person", "people"),
        s.people - s.should_be,
        s.should_be,
        s.disabled,
        s.quarantined
    )
}

/// The text report: each finding as `[code] sentence.` and its `Fix:`, the quarantine, the
/// counts, and the completeness line last.
pub fn text(audit: &GalAudit) -> String {
    let mut out = String::from("ldap2exo audit gal\n\n");
    if audit.findings.is_empty() {
        out.push_str("No findings: everyone LDAP maps is in the tenant as LDAP says.\n");
    } else {
        let _ = writeln!(out, "Findings ({}):", audit.findings.len());
        for f in &audit.findings {
            let _ = writeln!(
                out,
                "  [{}] {}.\n      Fix: {}.",
                f.code.as_str(),
                f.message,
                f.fix
            );
        }
    }
    if !audit.quarantined.is_empty() {
        let _ = writeln!(
            out,
            "\nQuarantined LDAP entries ({}), not audited (fix the entry in LDAP):",
            audit.quarantined.len()
        );
        for q in &audit.quarantined {
            let _ = writeln!(out, "  {} ({}): {}", q.dn, q.field, q.reason);
        }
    }
    if !audit.not_in_ldap.is_empty() {
        let _ = writeln!(
            out,
            "\n--only names uids LDAP does not have (nobody audited for them): {}",
            audit.not_in_ldap.join(", ")
        );
    }
    let _ = writeln!(out, "\n{}", counts_line(audit));
    let _ = writeln!(out, "{}", audit.summary.line());
    out
}

fn csv(audit: &GalAudit) -> String {
    let mut out = String::new();
    csv_row(&mut out, &CSV_HEADER);
    for f in &audit.findings {
        let anchor = f.anchor.to_string();
        csv_row(
            &mut out,
            &[
                f.code.as_str(),
                &f.uid,
                &anchor,
                &f.field,
                f.expected.as_deref().unwrap_or(""),
                f.found.as_deref().unwrap_or(""),
                f.holder.as_deref().unwrap_or(""),
                &f.message,
                &f.fix,
            ],
        );
    }
    for q in &audit.quarantined {
        let anchor = q
            .anchor
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        csv_row(
            &mut out,
            &[
                "quarantined",
                q.uid.as_deref().unwrap_or(""),
                &anchor,
                &q.field,
                "",
                "",
                "",
                &format!("{}: {}", q.dn, q.reason),
                "fix the entry in LDAP",
            ],
        );
    }
    for uid in &audit.not_in_ldap {
        csv_row(
            &mut out,
            &[
                "not_in_ldap",
                uid,
                "",
                "only",
                "",
                "",
                "",
                &format!("--only names {uid}, which no LDAP entry carries"),
                "check the uid",
            ],
        );
    }
    out
}

fn markdown(audit: &GalAudit) -> String {
    let mut out = String::from("# ldap2exo audit gal\n\n");
    let _ = writeln!(
        out,
        "**{}**\n\n{}\n",
        audit.summary.line(),
        counts_line(audit)
    );
    if !audit.findings.is_empty() {
        let _ = writeln!(out, "## Findings ({})\n", audit.findings.len());
        out.push_str("| code | uid | field | problem | fix |\n|---|---|---|---|---|\n");
        for f in &audit.findings {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                f.code.as_str(),
                md(&f.uid),
                md(&f.field),
                md(&f.message),
                md(&f.fix)
            );
        }
        out.push('\n');
    }
    if !audit.quarantined.is_empty() {
        let _ = writeln!(
            out,
            "## Quarantined LDAP entries ({})\n\n| DN | field | reason |\n|---|---|---|",
            audit.quarantined.len()
        );
        for q in &audit.quarantined {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                md(&q.dn),
                md(&q.field),
                md(&q.reason)
            );
        }
        out.push('\n');
    }
    if !audit.not_in_ldap.is_empty() {
        let names: Vec<String> = audit.not_in_ldap.iter().map(|u| md(u)).collect();
        let _ = writeln!(
            out,
            "\n`--only` names uids LDAP does not have (nobody audited for them): {}",
            names.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::gal::{Code, Finding, Summary};
    use crate::ids::Anchor;

    fn audit_with(message: &str) -> GalAudit {
        GalAudit {
            summary: Summary {
                people: 3,
                should_be: 2,
                resolvable: 1,
                ratio: 0.5,
                findings: 1,
                quarantined: 0,
                disabled: 0,
                migrating: 0,
            },
            findings: vec![Finding {
                code: Code::AddressHeldByUnmanaged,
                uid: "ann".into(),
                anchor: Anchor::new("a1").unwrap(),
                field: "EmailAddresses".into(),
                expected: Some("sales@example.edu".into()),
                found: None,
                holder: Some("Sales | Office (MailUniversalDistributionGroup)".into()),
                message: message.into(),
                fix: "remove it".into(),
            }],
            quarantined: Vec::new(),
            not_in_ldap: vec!["ghost".into()],
        }
    }

    #[test]
    fn an_only_uid_ldap_lacks_is_named_in_every_format() {
        let a = audit_with("ann: held");
        assert!(
            text(&a)
                .contains("--only names uids LDAP does not have (nobody audited for them): ghost"),
            "{}",
            text(&a)
        );
        assert!(csv(&a).contains("not_in_ldap,ghost,,only,"), "{}", csv(&a));
        assert!(markdown(&a).contains("nobody audited for them): ghost"));
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["not_in_ldap"], serde_json::json!(["ghost"]));
        assert!(
            text(&a).contains(
                "3 people mapped from LDAP (1 hidden by hidden_filter, so 2 should be in the GAL)"
            ),
            "{}",
            text(&a)
        );
    }

    #[test]
    fn csv_quotes_messages_and_markdown_keeps_its_table() {
        let a = audit_with("ann: held by \"Sales, Office\"\nsecond line");
        let csv = csv(&a);
        assert!(
            csv.contains("\"ann: held by \"\"Sales, Office\"\"\nsecond line\""),
            "{csv}"
        );
        assert!(csv.starts_with("code,uid,anchor,field,expected,found,holder,message,fix\r\n"));
        let md = markdown(&audit_with("a | b\nc"));
        assert!(md.contains("| a \\| b c |"), "{md}");
        assert!(md.contains("**GAL completeness: 1/2 people (50.0 %)**"));
    }

    #[test]
    fn json_carries_the_exact_ratio_and_the_codes() {
        let mut out = Vec::new();
        write(&mut out, &audit_with("x"), Format::Json).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["summary"]["should_be"], 2);
        assert_eq!(v["summary"]["resolvable"], 1);
        assert_eq!(v["summary"]["ratio"], 0.5);
        assert_eq!(v["findings"][0]["code"], "address_held_by_unmanaged");
        assert!(v["findings"][0].get("found").is_none(), "absent, not null");
    }
}
