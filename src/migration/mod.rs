//! migration: the pure parts of `ldap2exo migrate` (IMAP migration of a cohort to Exchange
//! Online mailboxes): the migration batch CSV and its split into batches within Exchange
//! Online's limits, and the LDIF of the cutover. No I/O; `commands::migrate` does that.
//!
//! The process (TENANT_FACTS, "IMAP migration"): license the MailUser in place with a
//! forwarding to the on-prem mailbox; an IMAP endpoint and a batch copy the mail; at cutover
//! the LDAP forward points at the routing address and the forwarding goes; a last pass and
//! the on-prem mailbox can go.

use crate::secret::Secret;

/// The CSV header of an IMAP migration batch ("CSV files for IMAP migration batches",
/// Microsoft Learn, exchange/mailbox-migration/migrating-imap-mailboxes).
pub const CSV_HEADER: &str = "EmailAddress,UserName,Password";

/// At most this many rows (people) per migration batch CSV.
pub const MAX_ROWS: usize = 50_000;

/// At most this many bytes per migration batch CSV, header included ("10 MB"; read as
/// 10,000,000 bytes, the stricter reading).
pub const MAX_BYTES: usize = 10_000_000;

/// Quotes a CSV field per RFC 4180 when it holds a comma, a quote or a line break.
fn field(value: &str) -> String {
    if value.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

/// One CSV row for a person: the target mailbox, the Dovecot master-user login
/// `<uid>*<master_user>` and the master password. It holds the password, so it is a
/// [`Secret`]; CRLF-terminated as RFC 4180 says.
pub fn csv_row(email: &str, uid: &str, master_user: &str, password: &Secret) -> Secret {
    Secret::new(format!(
        "{},{},{}\r\n",
        field(email),
        field(&format!("{uid}*{master_user}")),
        field(password.expose())
    ))
}

/// The rows of one batch, with the header: the CSV to send.
pub fn csv(rows: &[Secret]) -> Secret {
    let mut text = String::with_capacity(
        CSV_HEADER.len() + 2 + rows.iter().map(|r| r.expose().len()).sum::<usize>(),
    );
    text.push_str(CSV_HEADER);
    text.push_str("\r\n");
    for r in rows {
        text.push_str(r.expose());
    }
    Secret::new(text)
}

/// Splits `rows` into batches of at most `max_rows` rows and `max_bytes` bytes each (header
/// included), keeping the order. A single row larger than a whole batch still gets a batch of
/// its own (Exchange refuses it and says why).
pub fn split(rows: Vec<Secret>, max_rows: usize, max_bytes: usize) -> Vec<Vec<Secret>> {
    let header = CSV_HEADER.len() + 2;
    let mut out: Vec<Vec<Secret>> = Vec::new();
    let mut current: Vec<Secret> = Vec::new();
    let mut size = header;
    for r in rows {
        let len = r.expose().len();
        if !current.is_empty() && (current.len() == max_rows || size + len > max_bytes) {
            out.push(std::mem::take(&mut current));
            size = header;
        }
        size += len;
        current.push(r);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The name of batch `index` (0-based) of `count` made from `base`: `base` alone for a single
/// batch, else `base-1`, `base-2`, ….
pub fn batch_name(base: &str, index: usize, count: usize) -> String {
    if count == 1 {
        base.to_owned()
    } else {
        format!("{base}-{}", index + 1)
    }
}

/// One LDAP change of the cutover: replace `attribute` of `dn` by `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardChange {
    pub dn: String,
    pub attribute: String,
    pub value: String,
}

/// The LDIF (RFC 2849) of `changes`: one `changetype: modify` record each. A DN that is not
/// a safe string is written base64-encoded (`dn::`), as RFC 2849 requires.
pub fn ldif(changes: &[ForwardChange]) -> String {
    use base64::Engine;
    let mut out = String::new();
    for c in changes {
        let safe = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii() && b != b'\n' && b != b'\r' && b != 0)
                && !s.starts_with([' ', ':', '<'])
                && !s.ends_with(' ')
        };
        let line = |name: &str, v: &str| {
            if safe(v) {
                format!("{name}: {v}\n")
            } else {
                format!(
                    "{name}:: {}\n",
                    base64::engine::general_purpose::STANDARD.encode(v)
                )
            }
        };
        out.push_str(&line("dn", &c.dn));
        out.push_str("changetype: modify\n");
        out.push_str(&format!("replace: {}\n", c.attribute));
        out.push_str(&line(&c.attribute, &c.value));
        out.push_str("-\n\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, width: usize) -> Vec<Secret> {
        (0..n)
            .map(|i| Secret::new(format!("{:0>w$}\r\n", i, w = width - 2)))
            .collect()
    }

    #[test]
    fn rows_quote_what_needs_it_and_join_uid_and_master() {
        let pw = Secret::new("pa,ss\"word".into());
        let r = csv_row("jdoe@example.edu", "jdoe", "migration", &pw);
        assert_eq!(
            r.expose(),
            "jdoe@example.edu,jdoe*migration,\"pa,ss\"\"word\"\r\n"
        );
        let all = csv(&[r]);
        assert!(
            all.expose()
                .starts_with("EmailAddress,UserName,Password\r\n")
        );
    }

    #[test]
    fn the_row_limit_splits_exactly_at_the_boundary() {
        assert_eq!(split(rows(MAX_ROWS, 4), MAX_ROWS, MAX_BYTES).len(), 1);
        let two = split(rows(MAX_ROWS + 1, 4), MAX_ROWS, MAX_BYTES);
        assert_eq!(two.iter().map(Vec::len).collect::<Vec<_>>(), [MAX_ROWS, 1]);
        assert!(split(Vec::new(), MAX_ROWS, MAX_BYTES).is_empty());
    }

    #[test]
    fn the_byte_limit_counts_the_header_and_splits_at_the_boundary() {
        let header = CSV_HEADER.len() + 2;
        // Ten rows of 100 bytes fill a limit of header + 1000 exactly: one batch.
        let exact = split(rows(10, 100), 1000, header + 1000);
        assert_eq!(exact.len(), 1);
        assert_eq!(csv(&exact[0]).expose().len(), header + 1000);
        // One byte less: the tenth row goes to a second batch.
        let over = split(rows(10, 100), 1000, header + 999);
        assert_eq!(over.iter().map(Vec::len).collect::<Vec<_>>(), [9, 1]);
        for b in &over {
            assert!(csv(b).expose().len() <= header + 999);
        }
    }

    #[test]
    fn batch_names_are_numbered_only_when_split() {
        assert_eq!(batch_name("cohort", 0, 1), "cohort");
        assert_eq!(batch_name("cohort", 1, 3), "cohort-2");
    }

    #[test]
    fn ldif_replaces_the_forward_and_encodes_unsafe_dns() {
        let text = ldif(&[
            ForwardChange {
                dn: "uid=jdoe,ou=people,dc=example,dc=edu".into(),
                attribute: "mailForwardingAddress".into(),
                value: "jdoe@example.mail.onmicrosoft.com".into(),
            },
            ForwardChange {
                dn: "uid=jürgen,ou=people,dc=example,dc=edu".into(),
                attribute: "mailForwardingAddress".into(),
                value: "juergen@example.mail.onmicrosoft.com".into(),
            },
        ]);
        assert!(text.starts_with(
            "dn: uid=jdoe,ou=people,dc=example,dc=edu\nchangetype: modify\nreplace: mailForwardingAddress\nmailForwardingAddress: jdoe@example.mail.onmicrosoft.com\n-\n\n"
        ));
        assert!(text.contains("dn:: dWlkPWrDvHJnZW4s"), "{text}");
    }
}
