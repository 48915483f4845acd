//! A cmdlet call rendered as the PowerShell line an administrator would type, so `plan` shows
//! exactly what `apply` sends.
//!
//! Quoting follows about_Quoting_Rules: strings that are not plain words go in double quotes
//! with `` ` ``, `"` and `$` escaped by a backtick; arrays are comma-separated elements (`@()`
//! when empty); booleans `$true` / `$false`; null `$null`.

use serde_json::{Map, Value};

/// `Cmdlet -Identity … -Name … -Other …` (Identity and Name first, the rest by name).
pub fn render(cmdlet: &str, params: &Map<String, Value>) -> String {
    let mut keys: Vec<&String> = params.keys().collect();
    let rank = |k: &str| match k {
        "Identity" => 0,
        "Name" => 1,
        _ => 2,
    };
    keys.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    let mut out = cmdlet.to_owned();
    for k in keys {
        out.push_str(" -");
        out.push_str(k);
        out.push(' ');
        out.push_str(&value(&params[k]));
    }
    out
}

/// One parameter value as PowerShell.
pub fn value(v: &Value) -> String {
    match v {
        Value::Null => "$null".into(),
        Value::Bool(true) => "$true".into(),
        Value::Bool(false) => "$false".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        Value::Array(a) if a.is_empty() => "@()".into(),
        Value::Array(a) => a.iter().map(value).collect::<Vec<_>>().join(","),
        Value::Object(_) => "$null".into(),
    }
}

/// A string: bare when it is a plain word (letters, digits, `.`, `-`, not starting with `-`),
/// else double-quoted with PowerShell's escapes.
pub fn string(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if plain {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '`' | '"' | '$' => {
                out.push('`');
                out.push(c);
            }
            // PowerShell also ends a double-quoted string at typographic quotes.
            '\u{201C}' | '\u{201D}' | '\u{201E}' => {
                out.push('`');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_quoted_as_powershell_reads_them() {
        assert_eq!(value(&json!(true)), "$true");
        assert_eq!(value(&json!(false)), "$false");
        assert_eq!(value(&json!(null)), "$null");
        assert_eq!(value(&json!("OnPremises")), "OnPremises");
        assert_eq!(value(&json!("mail.example.edu")), "mail.example.edu");
        assert_eq!(value(&json!("*")), "\"*\"");
        assert_eq!(value(&json!("a $b \"c\" `d")), "\"a `$b `\"c`\" ``d\"");
        assert_eq!(value(&json!(["a.edu", "*"])), "a.edu,\"*\"");
        assert_eq!(value(&json!([])), "@()");
        assert_eq!(value(&json!("-x")), "\"-x\"");
    }

    #[test]
    fn identity_and_name_come_first() {
        let p = json!({"Enabled": true, "Name": "ldap2exo x", "Comment": "c"});
        assert_eq!(
            render("New-InboundConnector", p.as_object().unwrap()),
            "New-InboundConnector -Name \"ldap2exo x\" -Comment c -Enabled $true"
        );
    }
}
