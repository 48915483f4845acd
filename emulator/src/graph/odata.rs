//! The OData query subset Graph supports on users: a `$filter` parser and evaluator and
//! `$select` resolution. Which clauses are "advanced" (need `ConsistencyLevel: eventual` and
//! `$count=true`) follows Microsoft's "Advanced query capabilities on Microsoft Entra ID
//! objects" page; the emulator evaluates against the same JSON view Graph returns.

use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ODataError {
    #[error("Invalid filter clause: {0}")]
    Syntax(String),
    #[error("Could not find a property named '{0}' on type 'microsoft.graph.user'.")]
    UnknownProperty(String),
    #[error(
        "Unsupported or invalid query filter clause specified for property '{0}' of resource 'User'."
    )]
    NotFilterable(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Str(String),
    Bool(bool),
    Num(f64),
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Eq,
    Ne,
    Ge,
    Gt,
    Le,
    Lt,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp {
        path: String,
        op: Op,
        value: Lit,
    },
    In {
        path: String,
        values: Vec<Lit>,
    },
    StartsWith {
        path: String,
        value: String,
    },
    EndsWith {
        path: String,
        value: String,
    },
    /// `coll/any(x: x eq 'v')` or `coll/any(x: x/prop eq 'v')`.
    Any {
        path: String,
        sub: Option<String>,
        op: Op,
        value: Lit,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    LParen,
    RParen,
    Comma,
    Colon,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, ODataError> {
    let c: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < c.len() {
        let ch = c[i];
        match ch {
            ' ' | '\t' => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            ':' => {
                out.push(Tok::Colon);
                i += 1
            }
            '\'' => {
                // OData escapes a quote inside a literal by doubling it: 'O''Brien'.
                let mut v = String::new();
                i += 1;
                loop {
                    match c.get(i) {
                        None => {
                            return Err(ODataError::Syntax("unterminated string literal".into()));
                        }
                        Some('\'') if c.get(i + 1) == Some(&'\'') => {
                            v.push('\'');
                            i += 2
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(x) => {
                            v.push(*x);
                            i += 1
                        }
                    }
                }
                out.push(Tok::Str(v));
            }
            d if d.is_ascii_digit() || d == '-' => {
                let st = i;
                i += 1;
                while i < c.len() && (c[i].is_ascii_digit() || c[i] == '.') {
                    i += 1
                }
                let t: String = c[st..i].iter().collect();
                // A GUID literal (unquoted) also starts with a digit: keep it as an identifier.
                if i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '-') {
                    while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '-') {
                        i += 1
                    }
                    out.push(Tok::Str(c[st..i].iter().collect()));
                } else {
                    out.push(Tok::Num(
                        t.parse().map_err(|_| ODataError::Syntax(t.clone()))?,
                    ));
                }
            }
            a if a.is_ascii_alphabetic() || a == '_' || a == '$' => {
                let st = i;
                while i < c.len() && (c[i].is_ascii_alphanumeric() || "_/.$".contains(c[i])) {
                    i += 1
                }
                out.push(Tok::Ident(c[st..i].iter().collect()));
            }
            other => {
                return Err(ODataError::Syntax(format!(
                    "unexpected character '{other}'"
                )));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn expect(&mut self, t: Tok) -> Result<(), ODataError> {
        match self.next() {
            Some(x) if x == t => Ok(()),
            other => Err(ODataError::Syntax(format!(
                "expected {t:?}, found {other:?}"
            ))),
        }
    }
    fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(i)) if i.eq_ignore_ascii_case(k))
    }

    fn or(&mut self) -> Result<Expr, ODataError> {
        let mut l = self.and()?;
        while self.keyword("or") {
            self.pos += 1;
            l = Expr::Or(Box::new(l), Box::new(self.and()?));
        }
        Ok(l)
    }
    fn and(&mut self) -> Result<Expr, ODataError> {
        let mut l = self.unary()?;
        while self.keyword("and") {
            self.pos += 1;
            l = Expr::And(Box::new(l), Box::new(self.unary()?));
        }
        Ok(l)
    }
    fn unary(&mut self) -> Result<Expr, ODataError> {
        if self.keyword("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }
    fn literal(&mut self) -> Result<Lit, ODataError> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Lit::Str(s)),
            Some(Tok::Num(n)) => Ok(Lit::Num(n)),
            Some(Tok::Ident(i)) if i == "true" => Ok(Lit::Bool(true)),
            Some(Tok::Ident(i)) if i == "false" => Ok(Lit::Bool(false)),
            Some(Tok::Ident(i)) if i == "null" => Ok(Lit::Null),
            other => Err(ODataError::Syntax(format!(
                "literal expected, found {other:?}"
            ))),
        }
    }
    fn op(&mut self) -> Result<Op, ODataError> {
        match self.next() {
            Some(Tok::Ident(i)) => match i.to_ascii_lowercase().as_str() {
                "eq" => Ok(Op::Eq),
                "ne" => Ok(Op::Ne),
                "ge" => Ok(Op::Ge),
                "gt" => Ok(Op::Gt),
                "le" => Ok(Op::Le),
                "lt" => Ok(Op::Lt),
                _ => Err(ODataError::Syntax(format!("unknown operator '{i}'"))),
            },
            other => Err(ODataError::Syntax(format!(
                "operator expected, found {other:?}"
            ))),
        }
    }
    fn primary(&mut self) -> Result<Expr, ODataError> {
        match self.next() {
            Some(Tok::LParen) => {
                let e = self.or()?;
                self.expect(Tok::RParen)?;
                Ok(e)
            }
            Some(Tok::Ident(name)) => {
                let lower = name.to_ascii_lowercase();
                if (lower == "startswith" || lower == "endswith")
                    && self.peek() == Some(&Tok::LParen)
                {
                    self.pos += 1;
                    let path = match self.next() {
                        Some(Tok::Ident(p)) => p,
                        other => {
                            return Err(ODataError::Syntax(format!(
                                "property expected, found {other:?}"
                            )));
                        }
                    };
                    self.expect(Tok::Comma)?;
                    let Lit::Str(value) = self.literal()? else {
                        return Err(ODataError::Syntax("string literal expected".into()));
                    };
                    self.expect(Tok::RParen)?;
                    return Ok(if lower == "startswith" {
                        Expr::StartsWith { path, value }
                    } else {
                        Expr::EndsWith { path, value }
                    });
                }
                if let Some(coll) = name.strip_suffix("/any") {
                    self.expect(Tok::LParen)?;
                    let var = match self.next() {
                        Some(Tok::Ident(v)) => v,
                        other => {
                            return Err(ODataError::Syntax(format!(
                                "lambda variable expected, found {other:?}"
                            )));
                        }
                    };
                    self.expect(Tok::Colon)?;
                    let target = match self.next() {
                        Some(Tok::Ident(t)) => t,
                        other => {
                            return Err(ODataError::Syntax(format!(
                                "lambda body expected, found {other:?}"
                            )));
                        }
                    };
                    let sub = if target == var {
                        None
                    } else if let Some(s) = target.strip_prefix(&format!("{var}/")) {
                        Some(s.to_string())
                    } else {
                        return Err(ODataError::Syntax(format!(
                            "'{target}' does not use the lambda variable '{var}'"
                        )));
                    };
                    let op = self.op()?;
                    let value = self.literal()?;
                    self.expect(Tok::RParen)?;
                    return Ok(Expr::Any {
                        path: coll.to_string(),
                        sub,
                        op,
                        value,
                    });
                }
                if self.keyword("in") {
                    self.pos += 1;
                    self.expect(Tok::LParen)?;
                    let mut values = vec![self.literal()?];
                    while self.peek() == Some(&Tok::Comma) {
                        self.pos += 1;
                        values.push(self.literal()?);
                    }
                    self.expect(Tok::RParen)?;
                    return Ok(Expr::In { path: name, values });
                }
                let op = self.op()?;
                let value = self.literal()?;
                Ok(Expr::Cmp {
                    path: name,
                    op,
                    value,
                })
            }
            other => Err(ODataError::Syntax(format!("unexpected {other:?}"))),
        }
    }
}

pub fn parse(filter: &str) -> Result<Expr, ODataError> {
    let mut p = Parser {
        toks: tokenize(filter)?,
        pos: 0,
    };
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return Err(ODataError::Syntax(format!(
            "unexpected trailing {:?}",
            p.peek()
        )));
    }
    Ok(e)
}

/// Properties filterable without advanced query (scalar `eq`, `startswith`, `in`).
const BASIC_SCALAR: &[&str] = &[
    "id",
    "userPrincipalName",
    "mail",
    "mailNickname",
    "displayName",
    "givenName",
    "surname",
    "employeeId",
    "accountEnabled",
    "usageLocation",
    "jobTitle",
    "department",
    "companyName",
    "userType",
    "createdDateTime",
];
/// Collections filterable with `any` without advanced query.
const BASIC_COLLECTIONS: &[&str] = &[
    "proxyAddresses",
    "otherMails",
    "assignedLicenses",
    "businessPhones",
];
/// Scalars filterable only as advanced queries.
const ADVANCED_SCALAR: &[&str] = &["officeLocation", "mobilePhone", "onPremisesSyncEnabled"];

/// Maps a property path to its canonical spelling (Graph matches names case-insensitively).
fn canonical(path: &str) -> Result<(String, bool), ODataError> {
    let lower = path.to_ascii_lowercase();
    if let Some(n) = lower.strip_prefix("onpremisesextensionattributes/extensionattribute") {
        if let Ok(i) = n.parse::<u8>()
            && (1..=15).contains(&i)
        {
            return Ok((
                format!("onPremisesExtensionAttributes/extensionAttribute{i}"),
                true,
            ));
        }
        return Err(ODataError::UnknownProperty(path.to_string()));
    }
    for p in BASIC_SCALAR.iter().chain(BASIC_COLLECTIONS) {
        if p.eq_ignore_ascii_case(path) {
            return Ok((p.to_string(), false));
        }
    }
    for p in ADVANCED_SCALAR {
        if p.eq_ignore_ascii_case(path) {
            return Ok((p.to_string(), true));
        }
    }
    if crate::graph::users::ALL_PROPS
        .iter()
        .any(|p| p.eq_ignore_ascii_case(path))
    {
        return Err(ODataError::NotFilterable(path.to_string()));
    }
    Err(ODataError::UnknownProperty(
        path.split('/').next_back().unwrap_or(path).to_string(),
    ))
}

/// Validates property names and canonicalises them; answers the reason the filter is an
/// advanced query, if it is one.
pub fn check(e: &mut Expr) -> Result<Option<String>, ODataError> {
    fn merge(a: Option<String>, b: Option<String>) -> Option<String> {
        a.or(b)
    }
    Ok(match e {
        Expr::And(a, b) | Expr::Or(a, b) => merge(check(a)?, check(b)?),
        Expr::Not(a) => {
            check(a)?;
            Some("not".into())
        }
        Expr::Cmp { path, op, value } => {
            let (c, adv) = canonical(path)?;
            if BASIC_COLLECTIONS.contains(&c.as_str()) {
                return Err(ODataError::NotFilterable(c));
            }
            *path = c.clone();
            if adv {
                Some(c)
            } else if *op == Op::Ne || *value == Lit::Null {
                Some(format!("{c} with ne or null"))
            } else {
                None
            }
        }
        Expr::In { path, .. } | Expr::StartsWith { path, .. } => {
            let (c, adv) = canonical(path)?;
            *path = c.clone();
            adv.then_some(c)
        }
        Expr::EndsWith { path, .. } => {
            let (c, _) = canonical(path)?;
            *path = c.clone();
            Some(format!("endswith on {c}"))
        }
        Expr::Any { path, op, .. } => {
            let (c, _) = canonical(path)?;
            if !BASIC_COLLECTIONS.contains(&c.as_str()) {
                return Err(ODataError::NotFilterable(c));
            }
            *path = c.clone();
            (*op != Op::Eq).then(|| format!("{c} any with a non-eq operator"))
        }
    })
}

fn resolve<'a>(obj: &'a Map<String, Value>, path: &str) -> &'a Value {
    let mut parts = path.split('/');
    let first = parts.next().unwrap_or("");
    let mut cur = obj.get(first).unwrap_or(&Value::Null);
    for p in parts {
        cur = cur.get(p).unwrap_or(&Value::Null);
    }
    cur
}

fn compare(v: &Value, op: Op, lit: &Lit) -> bool {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (v, lit) {
        (Value::Null, Lit::Null) => Some(Ordering::Equal),
        (Value::Null, _) | (_, Lit::Null) => None,
        // Directory string comparisons are case-insensitive.
        (Value::String(s), Lit::Str(l)) => Some(s.to_lowercase().cmp(&l.to_lowercase())),
        (Value::Bool(b), Lit::Bool(l)) => Some(b.cmp(l)),
        (Value::Number(n), Lit::Num(l)) => n.as_f64().and_then(|x| x.partial_cmp(l)),
        _ => None,
    };
    match op {
        Op::Eq => ord == Some(Ordering::Equal),
        Op::Ne => ord != Some(Ordering::Equal),
        Op::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
        Op::Gt => ord == Some(Ordering::Greater),
        Op::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
        Op::Lt => ord == Some(Ordering::Less),
    }
}

pub fn eval(e: &Expr, obj: &Map<String, Value>) -> bool {
    match e {
        Expr::And(a, b) => eval(a, obj) && eval(b, obj),
        Expr::Or(a, b) => eval(a, obj) || eval(b, obj),
        Expr::Not(a) => !eval(a, obj),
        Expr::Cmp { path, op, value } => compare(resolve(obj, path), *op, value),
        Expr::In { path, values } => values
            .iter()
            .any(|l| compare(resolve(obj, path), Op::Eq, l)),
        Expr::StartsWith { path, value } => resolve(obj, path)
            .as_str()
            .is_some_and(|s| s.to_lowercase().starts_with(&value.to_lowercase())),
        Expr::EndsWith { path, value } => resolve(obj, path)
            .as_str()
            .is_some_and(|s| s.to_lowercase().ends_with(&value.to_lowercase())),
        Expr::Any {
            path,
            sub,
            op,
            value,
        } => match resolve(obj, path) {
            Value::Array(items) => items.iter().any(|it| {
                let v = match sub {
                    Some(s) => it.get(s).unwrap_or(&Value::Null),
                    None => it,
                };
                compare(v, *op, value)
            }),
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj() -> Map<String, Value> {
        json!({
            "userPrincipalName": "O'Brien@Example.edu",
            "mail": null,
            "accountEnabled": true,
            "proxyAddresses": ["SMTP:a@example.edu"],
            "onPremisesExtensionAttributes": {"extensionAttribute15": "ldap2exo:1"},
        })
        .as_object()
        .cloned()
        .unwrap()
    }

    #[test]
    fn quotes_and_case() {
        let mut e = parse("userPrincipalName eq 'o''brien@example.edu'").unwrap();
        assert_eq!(check(&mut e).unwrap(), None);
        assert!(eval(&e, &obj()));
    }

    #[test]
    fn any_and_advanced() {
        let mut e =
            parse("proxyAddresses/any(x:x eq 'smtp:a@example.edu') and accountEnabled eq true")
                .unwrap();
        assert_eq!(check(&mut e).unwrap(), None);
        assert!(eval(&e, &obj()));
        let mut e =
            parse("onPremisesExtensionAttributes/extensionAttribute15 eq 'ldap2exo:1'").unwrap();
        assert!(check(&mut e).unwrap().is_some());
        assert!(eval(&e, &obj()));
        assert!(matches!(
            check(&mut parse("nope eq 1").unwrap()),
            Err(ODataError::UnknownProperty(_))
        ));
        assert!(parse("mail eq 'x").is_err());
        assert!(parse("startswith(mail,'a') extra").is_err());
    }
}
