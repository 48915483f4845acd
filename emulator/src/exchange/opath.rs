//! The OPATH `-Filter` subset ldap2exo sends to `Get-Recipient` and friends
//! ("Filterable properties for the Filter parameter on Exchange cmdlets"):
//! `Prop -eq|-ne|-like|-notlike 'value'`, `-and`, `-or`, `-not`, parentheses, `$true`,
//! `$false`, `$null`. Comparisons are case-insensitive like Exchange's. A multi-valued
//! property (`EmailAddresses`) matches when any value does; an address compares with or
//! without its `smtp:` prefix.
//!
//! The date properties (`WhenChanged`, `WhenChangedUTC`, `WhenCreated`, `WhenCreatedUTC`)
//! take `-gt -ge -lt -le -eq -ne` and a value in the documented en-US form
//! `'M/d/yyyy h:mm:ss AM|PM'` (`'8/1/2017 2:00:00 PM'`), read as UTC (the `…UTC` properties)
//! or in the server's zone (the others; the emulator's is UTC). They compare the instant the
//! answer shows, to the second. Other values (ISO 8601 included) and the ordering operators
//! on other properties are refused ([`OpathError::BadDate`], [`OpathError::BadOperator`]).

use crate::util::{days_from_civil, days_in_month, parse_rendered_date};
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OpathError {
    #[error(
        "Invalid filter syntax. For a description of the filter parameter syntax see the command help. \"{filter}\" at position {pos}."
    )]
    Syntax { filter: String, pos: usize },
    #[error(
        "Cannot bind parameter 'Filter' to the target. Exception setting \"Filter\": \"\"{0}\" is not a recognized filterable property. For a list of filterable properties see the command help.\""
    )]
    UnknownProperty(String),
    /// A date property compared with something that is not a date in the documented form.
    /// The text is the emulator's (no live capture).
    #[error(
        "Cannot bind parameter 'Filter' to the target. Exception setting \"Filter\": \"The value \"{value}\" of property \"{prop}\" couldn't be converted to System.DateTime. Use the format M/d/yyyy h:mm:ss AM|PM, for example '8/1/2017 2:00:00 PM'.\""
    )]
    BadDate { prop: String, value: String },
    /// An operator the property's type does not take (`-gt` on a string, `-like` on a date).
    /// The text is the emulator's (no live capture).
    #[error(
        "Cannot bind parameter 'Filter' to the target. Exception setting \"Filter\": \"The operator \"-{op}\" can't be used with the property \"{prop}\".\""
    )]
    BadOperator { prop: String, op: String },
}

/// The filterable date properties.
const DATES: &[&str] = &[
    "WhenChanged",
    "WhenChangedUTC",
    "WhenCreated",
    "WhenCreatedUTC",
];

const FILTERABLE: &[&str] = &[
    "Alias",
    "Name",
    "DisplayName",
    "PrimarySmtpAddress",
    "EmailAddresses",
    "ExternalEmailAddress",
    "RecipientType",
    "RecipientTypeDetails",
    "HiddenFromAddressListsEnabled",
    "ExternalDirectoryObjectId",
    "FirstName",
    "LastName",
    "WindowsEmailAddress",
    "UserPrincipalName",
    "Guid",
    "CustomAttribute1",
    "CustomAttribute2",
    "CustomAttribute3",
    "CustomAttribute4",
    "CustomAttribute5",
    "CustomAttribute6",
    "CustomAttribute7",
    "CustomAttribute8",
    "CustomAttribute9",
    "CustomAttribute10",
    "CustomAttribute11",
    "CustomAttribute12",
    "CustomAttribute13",
    "CustomAttribute14",
    "CustomAttribute15",
    "WhenChanged",
    "WhenChangedUTC",
    "WhenCreated",
    "WhenCreatedUTC",
];

#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Str(String),
    Bool(bool),
    Null,
    /// A date, in Unix seconds.
    Date(i64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Eq,
    Ne,
    Like,
    NotLike,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Cmp { prop: String, op: Op, value: Val },
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Dash(String),
    Str(String),
    LParen,
    RParen,
}

fn tokenize(s: &str) -> Result<Vec<(usize, Tok)>, OpathError> {
    let c: Vec<char> = s.chars().collect();
    let err = |pos| OpathError::Syntax {
        filter: s.to_string(),
        pos,
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let st = i;
        match c[i] {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                out.push((st, Tok::LParen));
                i += 1
            }
            ')' => {
                out.push((st, Tok::RParen));
                i += 1
            }
            q @ ('\'' | '"') => {
                let mut v = String::new();
                i += 1;
                loop {
                    match c.get(i) {
                        None => return Err(err(st)),
                        Some(x) if *x == q && c.get(i + 1) == Some(&q) => {
                            v.push(q);
                            i += 2
                        }
                        Some(x) if *x == q => {
                            i += 1;
                            break;
                        }
                        Some(x) => {
                            v.push(*x);
                            i += 1
                        }
                    }
                }
                out.push((st, Tok::Str(v)));
            }
            '-' => {
                i += 1;
                while i < c.len() && c[i].is_ascii_alphabetic() {
                    i += 1
                }
                out.push((
                    st,
                    Tok::Dash(c[st + 1..i].iter().collect::<String>().to_ascii_lowercase()),
                ));
            }
            _ => {
                while i < c.len() && !" \t\n\r()'\"".contains(c[i]) {
                    i += 1
                }
                out.push((st, Tok::Word(c[st..i].iter().collect())));
            }
        }
    }
    Ok(out)
}

struct P<'a> {
    src: &'a str,
    toks: Vec<(usize, Tok)>,
    pos: usize,
}

impl P<'_> {
    fn err(&self) -> OpathError {
        let pos = self
            .toks
            .get(self.pos)
            .map(|t| t.0)
            .unwrap_or(self.src.len());
        OpathError::Syntax {
            filter: self.src.to_string(),
            pos,
        }
    }
    fn peek_dash(&self, w: &str) -> bool {
        matches!(self.toks.get(self.pos), Some((_, Tok::Dash(d))) if d == w)
    }
    fn or(&mut self) -> Result<Filter, OpathError> {
        let mut l = self.and()?;
        while self.peek_dash("or") {
            self.pos += 1;
            l = Filter::Or(Box::new(l), Box::new(self.and()?));
        }
        Ok(l)
    }
    fn and(&mut self) -> Result<Filter, OpathError> {
        let mut l = self.unary()?;
        while self.peek_dash("and") {
            self.pos += 1;
            l = Filter::And(Box::new(l), Box::new(self.unary()?));
        }
        Ok(l)
    }
    fn unary(&mut self) -> Result<Filter, OpathError> {
        if self.peek_dash("not") {
            self.pos += 1;
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        match self.toks.get(self.pos).cloned() {
            Some((_, Tok::LParen)) => {
                self.pos += 1;
                let f = self.or()?;
                match self.toks.get(self.pos) {
                    Some((_, Tok::RParen)) => {
                        self.pos += 1;
                        Ok(f)
                    }
                    _ => Err(self.err()),
                }
            }
            Some((_, Tok::Word(prop))) => {
                self.pos += 1;
                let canonical = FILTERABLE
                    .iter()
                    .find(|p| p.eq_ignore_ascii_case(&prop))
                    .ok_or_else(|| OpathError::UnknownProperty(prop.clone()))?;
                let (op, op_text) = match self.toks.get(self.pos) {
                    Some((_, Tok::Dash(d))) => match d.as_str() {
                        "eq" => (Op::Eq, d.clone()),
                        "ne" => (Op::Ne, d.clone()),
                        "like" => (Op::Like, d.clone()),
                        "notlike" => (Op::NotLike, d.clone()),
                        "gt" => (Op::Gt, d.clone()),
                        "ge" => (Op::Ge, d.clone()),
                        "lt" => (Op::Lt, d.clone()),
                        "le" => (Op::Le, d.clone()),
                        _ => return Err(self.err()),
                    },
                    _ => return Err(self.err()),
                };
                self.pos += 1;
                let value = match self.toks.get(self.pos).cloned() {
                    Some((_, Tok::Str(s))) => Val::Str(s),
                    Some((_, Tok::Word(w))) if w.eq_ignore_ascii_case("$true") => Val::Bool(true),
                    Some((_, Tok::Word(w))) if w.eq_ignore_ascii_case("$false") => Val::Bool(false),
                    Some((_, Tok::Word(w))) if w.eq_ignore_ascii_case("$null") => Val::Null,
                    Some((_, Tok::Word(w))) => Val::Str(w),
                    _ => return Err(self.err()),
                };
                let is_date = DATES.contains(canonical);
                let ordering = matches!(op, Op::Gt | Op::Ge | Op::Lt | Op::Le);
                let pattern = matches!(op, Op::Like | Op::NotLike);
                if (ordering && !is_date) || (pattern && is_date) {
                    return Err(OpathError::BadOperator {
                        prop: canonical.to_string(),
                        op: op_text,
                    });
                }
                let value = if is_date {
                    let text = match &value {
                        Val::Str(s) => Some(s.as_str()),
                        _ => None,
                    };
                    match text.and_then(parse_en_us_date) {
                        Some(t) => Val::Date(t),
                        None => {
                            let raw = match self.toks.get(self.pos) {
                                Some((_, Tok::Str(s) | Tok::Word(s))) => s.clone(),
                                _ => String::new(),
                            };
                            return Err(OpathError::BadDate {
                                prop: canonical.to_string(),
                                value: raw,
                            });
                        }
                    }
                } else {
                    value
                };
                self.pos += 1;
                Ok(Filter::Cmp {
                    prop: canonical.to_string(),
                    op,
                    value,
                })
            }
            _ => Err(self.err()),
        }
    }
}

/// Unix seconds of `M/d/yyyy h:mm:ss AM|PM` (month, day and hour of one or two digits,
/// minutes and seconds of two, a four-digit year, upper-case `AM`/`PM`, single spaces): the
/// en-US form of "Filterable properties for the Filter parameter" (`'8/1/2017 2:00:00 PM'`).
/// Anything else, an impossible date included, is `None`.
pub fn parse_en_us_date(s: &str) -> Option<i64> {
    let num = |t: &str, lens: std::ops::RangeInclusive<usize>| -> Option<u32> {
        (lens.contains(&t.len()) && t.bytes().all(|c| c.is_ascii_digit()))
            .then(|| t.parse().ok())?
    };
    let mut parts = s.split(' ');
    let (date, time, half) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let mut d = date.split('/');
    let (m, day, y) = (
        num(d.next()?, 1..=2)?,
        num(d.next()?, 1..=2)?,
        num(d.next()?, 4..=4)? as i64,
    );
    let mut t = time.split(':');
    let (h, min, sec) = (
        num(t.next()?, 1..=2)?,
        num(t.next()?, 2..=2)?,
        num(t.next()?, 2..=2)?,
    );
    if d.next().is_some() || t.next().is_some() {
        return None;
    }
    if !(1..=12).contains(&m)
        || day == 0
        || day > days_in_month(y, m)
        || !(1601..=9999).contains(&y)
        || !(1..=12).contains(&h)
        || min > 59
        || sec > 59
    {
        return None;
    }
    let h24 = match half {
        "AM" => h % 12,
        "PM" => h % 12 + 12,
        _ => return None,
    };
    Some(days_from_civil(y, m, day) * 86_400 + (h24 * 3600 + min * 60 + sec) as i64)
}

pub fn parse(s: &str) -> Result<Filter, OpathError> {
    let mut p = P {
        src: s,
        toks: tokenize(s)?,
        pos: 0,
    };
    let f = p.or()?;
    if p.pos != p.toks.len() {
        return Err(p.err());
    }
    Ok(f)
}

fn strip_prefix(s: &str) -> &str {
    if s.len() > 5 && s[..5].eq_ignore_ascii_case("smtp:") {
        &s[5..]
    } else {
        s
    }
}

fn wildcard(pattern: &str, text: &str) -> bool {
    let p = pattern.to_lowercase();
    let t = text.to_lowercase();
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == t;
    }
    let mut rest = t.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(ix) => rest = &rest[ix + part.len()..],
                None => return false,
            }
        }
    }
    true
}

fn matches_one(prop: &str, v: &Value, op: Op, want: &Val) -> bool {
    let addressy = matches!(
        prop,
        "EmailAddresses" | "ExternalEmailAddress" | "PrimarySmtpAddress" | "WindowsEmailAddress"
    );
    let eq = |s: &str, w: &str| {
        if addressy {
            // `smtp:a@b` matches `SMTP:a@b` and `a@b`; a typed prefix must match the type.
            let has_prefix = w.contains(':');
            if has_prefix {
                s.eq_ignore_ascii_case(w)
                    || strip_prefix(s).eq_ignore_ascii_case(strip_prefix(w))
                        && w.to_ascii_lowercase().starts_with("smtp:")
                        && s.to_ascii_lowercase().starts_with("smtp:")
            } else {
                strip_prefix(s).eq_ignore_ascii_case(w)
            }
        } else {
            s.eq_ignore_ascii_case(w)
        }
    };
    if let Val::Date(w) = want {
        // The date the answer shows (second resolution), against the filter's instant.
        let Some(t) = v.as_str().and_then(parse_rendered_date) else {
            return false;
        };
        return match op {
            Op::Eq => t == *w,
            Op::Ne => t != *w,
            Op::Gt => t > *w,
            Op::Ge => t >= *w,
            Op::Lt => t < *w,
            Op::Le => t <= *w,
            Op::Like | Op::NotLike => false,
        };
    }
    match (v, want) {
        (Value::Null, Val::Null) => matches!(op, Op::Eq),
        (Value::String(s), Val::Null) => {
            if s.is_empty() {
                matches!(op, Op::Eq)
            } else {
                matches!(op, Op::Ne)
            }
        }
        (Value::Bool(b), Val::Bool(w)) => (b == w) == matches!(op, Op::Eq | Op::Like),
        (Value::Bool(b), Val::Str(w)) => {
            (b.to_string().eq_ignore_ascii_case(w)) == matches!(op, Op::Eq | Op::Like)
        }
        (Value::String(s), Val::Str(w)) => match op {
            Op::Eq => eq(s, w),
            Op::Ne => !eq(s, w),
            Op::Like => wildcard(w, s) || (addressy && wildcard(strip_prefix(w), strip_prefix(s))),
            Op::NotLike => {
                !(wildcard(w, s) || (addressy && wildcard(strip_prefix(w), strip_prefix(s))))
            }
            // The parser keeps the ordering operators to the date properties.
            Op::Gt | Op::Ge | Op::Lt | Op::Le => false,
        },
        (Value::Null, _) => matches!(op, Op::Ne | Op::NotLike),
        _ => false,
    }
}

pub fn eval(f: &Filter, obj: &Map<String, Value>) -> bool {
    match f {
        Filter::And(a, b) => eval(a, obj) && eval(b, obj),
        Filter::Or(a, b) => eval(a, obj) || eval(b, obj),
        Filter::Not(a) => !eval(a, obj),
        Filter::Cmp { prop, op, value } => {
            let v = obj.get(prop).unwrap_or(&Value::Null);
            match v {
                // Multi-valued: -eq/-like match any value; -ne/-notlike need all to differ.
                Value::Array(items) => match op {
                    Op::Eq | Op::Like | Op::Gt | Op::Ge | Op::Lt | Op::Le => {
                        items.iter().any(|i| matches_one(prop, i, *op, value))
                    }
                    Op::Ne | Op::NotLike => items.iter().all(|i| matches_one(prop, i, *op, value)),
                },
                _ => matches_one(prop, v, *op, value),
            }
        }
    }
}

/// Whether `f` is a lone `WhenChanged`/`WhenChangedUTC` `-gt` or `-ge`: [`changed_since`]
/// then decides it alone.
pub fn only_change_time(f: &Filter) -> bool {
    matches!(f, Filter::Cmp { prop, op: Op::Gt | Op::Ge, value: Val::Date(_) }
        if prop.eq_ignore_ascii_case("WhenChanged") || prop.eq_ignore_ascii_case("WhenChangedUTC"))
}

/// The earliest change time (Unix seconds) an object can have and still match `f`, when `f`
/// requires one: a `WhenChanged`/`WhenChangedUTC` `-gt`, `-ge` or `-eq` at the top level or
/// under `-and`. Lets a listing skip rendering the objects that cannot match (a change query
/// over 100,000 users built every user's view); the whole filter is still evaluated on the
/// rest, so the bound only has to be a lower one. The emulator's zone is UTC, so both
/// properties show the same instant.
pub fn changed_since(f: &Filter) -> Option<i64> {
    match f {
        Filter::And(a, b) => match (changed_since(a), changed_since(b)) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        },
        Filter::Cmp {
            prop,
            op,
            value: Val::Date(t),
        } if prop.eq_ignore_ascii_case("WhenChanged")
            || prop.eq_ignore_ascii_case("WhenChangedUTC") =>
        {
            match op {
                Op::Gt => Some(t + 1),
                Op::Ge | Op::Eq => Some(*t),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters() {
        let o = json!({"CustomAttribute15": "ldap2exo:42", "EmailAddresses": ["SMTP:a@x.edu", "smtp:b@x.edu"], "HiddenFromAddressListsEnabled": false});
        let o = o.as_object().unwrap();
        assert!(eval(
            &parse("CustomAttribute15 -eq 'ldap2exo:42'").unwrap(),
            o
        ));
        assert!(eval(
            &parse("EmailAddresses -eq 'smtp:a@x.edu' -and CustomAttribute15 -like 'ldap2exo:*'")
                .unwrap(),
            o
        ));
        assert!(eval(&parse("EmailAddresses -eq 'B@x.edu'").unwrap(), o));
        assert!(!eval(
            &parse("EmailAddresses -eq 'smtp:c@x.edu'").unwrap(),
            o
        ));
        assert!(eval(
            &parse("(HiddenFromAddressListsEnabled -eq $false) -or (Alias -eq 'x')").unwrap(),
            o
        ));
        assert!(eval(
            &parse("-not (CustomAttribute15 -eq 'other')").unwrap(),
            o
        ));
        assert!(matches!(
            parse("Bogus -eq 'x'"),
            Err(OpathError::UnknownProperty(_))
        ));
        assert!(matches!(
            parse("CustomAttribute15 -eq"),
            Err(OpathError::Syntax { .. })
        ));
        assert!(eval(
            &parse("CustomAttribute15 -eq 'it''s'").unwrap(),
            json!({"CustomAttribute15": "it's"}).as_object().unwrap()
        ));
    }

    #[test]
    fn en_us_dates() {
        // 2017-08-01T14:00:00Z, the documentation's example.
        assert_eq!(parse_en_us_date("8/1/2017 2:00:00 PM"), Some(1_501_596_000));
        assert_eq!(
            parse_en_us_date("08/01/2017 02:00:00 PM"),
            Some(1_501_596_000)
        );
        assert_eq!(
            parse_en_us_date("8/1/2017 12:00:00 AM"),
            Some(1_501_545_600)
        );
        assert_eq!(
            parse_en_us_date("8/1/2017 12:30:05 PM"),
            Some(1_501_590_605)
        );
        assert_eq!(
            parse_en_us_date("2/29/2016 11:59:59 PM"),
            Some(1_456_790_399)
        );
        for bad in [
            "2017-08-01T14:00:00Z",
            "8/1/2017",
            "8/1/2017 14:00:00",
            "8/1/2017 2:00:00 pm",
            "8/1/2017  2:00:00 PM",
            "8/1/2017 2:0:00 PM",
            "8/1/2017 0:00:00 AM",
            "8/1/2017 13:00:00 PM",
            "0/1/2017 2:00:00 PM",
            "8/32/2017 2:00:00 PM",
            "2/29/2017 2:00:00 PM",
            "8/1/17 2:00:00 PM",
            "8/1/1600 2:00:00 PM",
            "8/1/2017 2:00:60 PM",
            "+8/1/2017 2:00:00 PM",
            "",
        ] {
            assert_eq!(parse_en_us_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn change_time_bound() {
        let b = |f: &str| changed_since(&parse(f).unwrap());
        let t = 1_501_596_000; // 8/1/2017 2:00:00 PM UTC
        assert_eq!(b("WhenChangedUTC -gt '8/1/2017 2:00:00 PM'"), Some(t + 1));
        assert_eq!(b("WhenChanged -ge '8/1/2017 2:00:00 PM'"), Some(t));
        assert_eq!(
            b(
                "Alias -eq 'a' -and (WhenChangedUTC -gt '8/1/2017 2:00:00 PM' -and WhenChanged -ge '8/1/2017 1:00:00 PM')"
            ),
            Some(t + 1)
        );
        assert_eq!(
            b("Alias -eq 'a' -or WhenChangedUTC -gt '8/1/2017 2:00:00 PM'"),
            None
        );
        assert_eq!(b("-not (WhenChangedUTC -le '8/1/2017 2:00:00 PM')"), None);
        assert_eq!(b("WhenChangedUTC -lt '8/1/2017 2:00:00 PM'"), None);
        assert_eq!(b("WhenCreatedUTC -gt '8/1/2017 2:00:00 PM'"), None);
    }

    #[test]
    fn date_comparisons() {
        let o = json!({"WhenChangedUTC": "2017-08-01T14:00:00.0000000Z",
            "WhenChanged": "2017-08-01T14:00:00+00:00", "Alias": "a"});
        let o = o.as_object().unwrap();
        let t = |f: &str| eval(&parse(f).unwrap(), o);
        assert!(t("WhenChangedUTC -gt '8/1/2017 1:59:59 PM'"));
        assert!(!t("WhenChangedUTC -gt '8/1/2017 2:00:00 PM'"));
        assert!(t("WhenChangedUTC -ge '8/1/2017 2:00:00 PM'"));
        assert!(t("WhenChanged -eq '8/1/2017 2:00:00 PM'"));
        assert!(!t("WhenChanged -ne '8/1/2017 2:00:00 PM'"));
        assert!(t("whenchanged -LT '8/1/2017 2:00:01 PM'"));
        assert!(t(
            "WhenChanged -le '8/1/2017 2:00:00 PM' -and Alias -eq 'a'"
        ));
        assert!(!t("-not (WhenChangedUTC -le '8/1/2017 2:00:00 PM')"));
        // Absent (a view without the property) matches no comparison.
        assert!(!t("WhenCreatedUTC -lt '8/1/2030 2:00:00 PM'"));
        assert_eq!(
            parse("WhenChangedUTC -gt '2017-08-01T14:00:00Z'"),
            Err(OpathError::BadDate {
                prop: "WhenChangedUTC".into(),
                value: "2017-08-01T14:00:00Z".into()
            })
        );
        assert_eq!(
            parse("Alias -ge 'a'"),
            Err(OpathError::BadOperator {
                prop: "Alias".into(),
                op: "ge".into()
            })
        );
        assert_eq!(
            parse("WhenCreated -notlike '8*'"),
            Err(OpathError::BadOperator {
                prop: "WhenCreated".into(),
                op: "notlike".into()
            })
        );
        assert!(matches!(
            parse("WhenCreated -gte '8/1/2017 2:00:00 PM'"),
            Err(OpathError::Syntax { pos: 12, .. })
        ));
    }
}
