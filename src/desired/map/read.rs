//! Reading the configured attributes of one entry as clean text.
//!
//! Every value is trimmed, and a value that is empty after trimming counts as absent, because
//! LDAP tools happily store `" "` and the tenant would show it as a blank name. Values that
//! are not UTF-8 or contain control characters are faults: neither can reach the tenant, and
//! a control character quoted in a report could even drive the administrator's terminal.

use crate::source::RawEntry;

/// Why an entry cannot be provisioned: the configuration field at fault and one sentence for
/// the quarantine report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fault {
    pub field: &'static str,
    pub reason: String,
}

impl Fault {
    pub fn new(field: &'static str, reason: String) -> Self {
        Self { field, reason }
    }
}

/// Something the operator should know about an entry that is provisioned anyway: the
/// configuration field and one sentence for the plan's warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Note {
    pub field: &'static str,
    pub message: String,
}

/// Values longer than this are abbreviated when quoted in a reason, so one absurd attribute
/// cannot swamp a report.
const SHOWN_MAX: usize = 80;
const SHOWN_PREFIX: usize = 60;

/// A value as quoted in a reason: whole when short, else its beginning and an ellipsis.
pub(super) fn shown(value: &str) -> String {
    if value.chars().count() <= SHOWN_MAX {
        return value.to_owned();
    }
    let mut s: String = value.chars().take(SHOWN_PREFIX).collect();
    s.push('…');
    s
}

/// Checks a length limit in characters (what Exchange and Graph count), naming the field,
/// the actual and the allowed length.
pub(super) fn limit(
    field: &'static str,
    attr: &str,
    value: Option<String>,
    max: usize,
) -> Result<Option<String>, Fault> {
    let Some(value) = value else { return Ok(None) };
    let len = value.chars().count();
    if len > max {
        return Err(Fault::new(
            field,
            format!(
                "{} `{}` is {len} characters long; at most {max} are allowed",
                label(field, attr),
                shown(&value)
            ),
        ));
    }
    Ok(Some(value))
}

/// How a reason names the source of a value: the LDAP attribute, which is what the
/// administrator will edit, or the field when it is unmapped (a derived value).
fn label<'a>(field: &'a str, attr: &'a str) -> &'a str {
    if attr.is_empty() { field } else { attr }
}

pub(super) struct Reader<'a> {
    entry: &'a RawEntry,
}

impl<'a> Reader<'a> {
    pub fn new(entry: &'a RawEntry) -> Self {
        Self { entry }
    }

    pub fn dn(&self) -> &str {
        &self.entry.dn
    }

    pub fn hidden(&self) -> bool {
        self.entry.hidden
    }

    /// Trimmed, non-empty raw values; an unmapped attribute (empty name) has none.
    fn trimmed(&self, attr: &str) -> impl Iterator<Item = &'a str> {
        let values = if attr.is_empty() {
            &[][..]
        } else {
            self.entry.values(attr)
        };
        values.iter().map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    fn check_text(&self, field: &'static str, attr: &str) -> Result<(), Fault> {
        if !attr.is_empty() && self.entry.is_binary(attr) {
            return Err(Fault::new(
                field,
                format!("attribute {attr} has a value that is not UTF-8 text"),
            ));
        }
        Ok(())
    }

    /// Whether the attribute has any value at all, usable or not: an entry whose mail is
    /// binary garbage has a mail and is quarantined, not skipped.
    pub fn has_value(&self, attr: &str) -> bool {
        (!attr.is_empty() && self.entry.is_binary(attr)) || self.trimmed(attr).next().is_some()
    }

    /// All values of a multi-valued attribute.
    pub fn all(&self, field: &'static str, attr: &str) -> Result<Vec<String>, Fault> {
        self.check_text(field, attr)?;
        self.trimmed(attr)
            .map(|v| no_control(field, attr, v))
            .collect()
    }

    /// The value of an identity attribute (anchor, uid, mail); more than one is a fault,
    /// because picking one would be a guess about who the person is.
    pub fn single(&self, field: &'static str, attr: &str) -> Result<Option<String>, Fault> {
        let mut values = self.all(field, attr)?;
        if values.len() > 1 {
            return Err(Fault::new(
                field,
                format!("attribute {attr} has {} values; expected one", values.len()),
            ));
        }
        Ok(values.pop())
    }

    /// For a field the tenant holds once but that identifies nobody (a name in the address
    /// book): the first value in the order the server returned them, with a [`Note`] in
    /// `notes` when there were several different ones. A schema may allow a second `sn`, and
    /// freezing or never creating a person over it would be worse than showing the first.
    pub fn first_noted(
        &self,
        field: &'static str,
        attr: &str,
        notes: &mut Vec<Note>,
    ) -> Result<Option<String>, Fault> {
        let mut values = self.all(field, attr)?;
        // Two instances of the attribute, or trimming, can repeat a value: that is no choice.
        let mut distinct: Vec<&String> = Vec::with_capacity(values.len());
        for v in &values {
            if !distinct.contains(&v) {
                distinct.push(v);
            }
        }
        if let [first, others @ ..] = distinct.as_slice()
            && !others.is_empty()
        {
            let quoted = |v: &str| format!("\"{}\"", shown(v));
            notes.push(Note {
                field,
                message: format!(
                    "attribute {attr} has {} values; the first the server returned, {}, is used \
                     (also: {})",
                    distinct.len(),
                    quoted(first),
                    others
                        .iter()
                        .map(|v| quoted(v))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        values.truncate(1);
        Ok(values.pop())
    }

    /// Like [`single`](Self::single), but absence is a fault too.
    pub fn required(&self, field: &'static str, attr: &str) -> Result<String, Fault> {
        self.single(field, attr)?.ok_or_else(|| {
            Fault::new(
                field,
                format!("attribute {} has no value", label(field, attr)),
            )
        })
    }

    /// The first value, for attributes where several values are normal and one is enough.
    pub fn first(&self, field: &'static str, attr: &str) -> Result<Option<String>, Fault> {
        self.check_text(field, attr)?;
        self.trimmed(attr)
            .next()
            .map(|v| no_control(field, attr, v))
            .transpose()
    }

    /// The first value if it is clean text, else nothing: for labelling a quarantine record,
    /// where a broken value must not cause a second fault.
    pub fn loose(&self, attr: &str) -> Option<String> {
        if attr.is_empty() || self.entry.is_binary(attr) {
            return None;
        }
        self.trimmed(attr)
            .next()
            .filter(|v| !v.chars().any(char::is_control))
            .map(str::to_owned)
    }
}

fn no_control(field: &'static str, attr: &str, value: &str) -> Result<String, Fault> {
    if value.chars().any(char::is_control) {
        // Escaped, so the reason itself is safe to print.
        let escaped: String = shown(value).escape_debug().collect();
        return Err(Fault::new(
            field,
            format!("attribute {attr} value \"{escaped}\" contains a control character"),
        ));
    }
    Ok(value.to_owned())
}
