//! `connectors plan|apply|audit|postfix`: reads the tenant's connectors through the Exchange
//! admin API, hands them to the pure logic of [`crate::connectors`], prints, and (for
//! `apply`) writes with `New-`/`Set-InboundConnector` and `New-`/`Set-OutboundConnector`,
//! reading each connector back after the write.

use serde_json::{Map, Value, json};

use super::{CommandError, Exit};
use crate::cli::{AuditFormat, ConnectorsArgs, ConnectorsCommand, StatusFormat};
use crate::config::{Config, ConfigError, ConnectorsConfig};
use crate::connectors::audit::Site;
use crate::connectors::powershell::render;
use crate::connectors::{self, Action, Finding, Item, Role, Status, postfix};
use crate::tenant::{Exchange, Tenant, TenantError};

/// Runs one `connectors` subcommand.
pub async fn connectors(config: &Config, args: &ConnectorsArgs) -> Result<Exit, CommandError> {
    match &args.command {
        ConnectorsCommand::Postfix => {
            // Placeholders pasted into master.cf would make a listener that refuses all mail.
            let c = section(config)?;
            print!(
                "{}",
                postfix::render(&config.tenant, Some(c), routing(config))
            );
            Ok(Exit::Ok)
        }
        ConnectorsCommand::Plan { format } => plan(config, *format).await,
        ConnectorsCommand::Apply { adopt } => apply(config, adopt).await,
        ConnectorsCommand::Audit { format } => audit(config, *format).await,
    }
}

/// `[migration] onprem_routing_domain`, which the connectors and Postfix route on-prem too.
fn routing(config: &Config) -> Option<&str> {
    config
        .migration
        .as_ref()
        .map(|m| m.onprem_routing_domain.as_str())
}

/// `[connectors]`, or exit 2 naming the first key it needs.
fn section(config: &Config) -> Result<&ConnectorsConfig, CommandError> {
    config.connectors.as_ref().ok_or_else(|| {
        CommandError::Config(ConfigError::Key {
            key: "connectors.smart_host".into(),
            message: "the [connectors] section is missing: set smart_host and certificate_name (see config/ldap2exo.example.toml)".into(),
        })
    })
}

/// The tenant's inbound and outbound connectors.
async fn read(exchange: &Exchange) -> Result<(Vec<Value>, Vec<Value>), CommandError> {
    let inbound = exchange.invoke("Get-InboundConnector", json!({})).await?;
    let outbound = exchange.invoke("Get-OutboundConnector", json!({})).await?;
    Ok((inbound, outbound))
}

async fn items(config: &Config, adopt: &[String]) -> Result<(Exchange, Vec<Item>), CommandError> {
    let c = section(config)?;
    let tenant = Tenant::connect(&config.tenant)?;
    let exchange = tenant.exchange().clone();
    let (inbound, outbound) = read(&exchange).await?;
    if let Some(unknown) = adopt.iter().find(|a| {
        !inbound
            .iter()
            .chain(&outbound)
            .any(|c| connectors::name_of(c).eq_ignore_ascii_case(a))
    }) {
        return Err(CommandError::Usage(format!(
            "--adopt `{unknown}`: the tenant has no inbound or outbound connector of that name (`connectors plan` lists them)"
        )));
    }
    let desired = connectors::desired(c, &config.tenant, routing(config));
    let items = connectors::diff(desired, &inbound, &outbound, &c.name_prefix, adopt);
    Ok((exchange, items))
}

async fn plan(config: &Config, format: StatusFormat) -> Result<Exit, CommandError> {
    let (_, items) = items(config, &[]).await?;
    let text = match format {
        StatusFormat::Json => {
            let mut s = serde_json::to_string_pretty(&plan_json(&items)).expect("plan serialises");
            s.push('\n');
            s
        }
        StatusFormat::Text => {
            let mut s = plan_text(&items);
            s.push_str(&postfix_section(config));
            s
        }
    };
    print!("{text}");
    let todo = items.iter().any(|i| i.action != Action::Ok);
    Ok(if todo { Exit::Failed } else { Exit::Ok })
}

fn powershell(item: &Item) -> Option<String> {
    item.call().map(|(cmdlet, p)| render(&cmdlet, &p))
}

fn plan_json(items: &[Item]) -> Value {
    let count = |a: Action| items.iter().filter(|i| i.action == a).count();
    let list: Vec<Value> = items
        .iter()
        .map(|i| {
            let changes: Map<String, Value> = i
                .changes
                .iter()
                .map(|c| (c.property.to_owned(), json!([c.before, c.after])))
                .collect();
            json!({
                "name": i.desired.name,
                "role": i.desired.role,
                "direction": i.desired.role.direction(),
                "action": i.action,
                "existing": i.existing.as_ref().map(connectors::name_of),
                "changes": changes,
                "powershell": powershell(i),
                "reason": i.reason,
            })
        })
        .collect();
    json!({
        "summary": {"create": count(Action::Create), "change": count(Action::Change),
                    "adopt": count(Action::Adopt), "ok": count(Action::Ok),
                    "refused": count(Action::Refused), "remove": count(Action::Remove)},
        "connectors": list,
    })
}

fn short(v: &Value) -> String {
    crate::connectors::powershell::value(v)
}

fn plan_text(items: &[Item]) -> String {
    let mut s = String::new();
    for i in items {
        let verb = match i.action {
            Action::Create => "create",
            Action::Change => "change",
            Action::Adopt => "adopt",
            Action::Ok => "ok",
            Action::Refused => "REFUSED",
            Action::Remove => "remove",
        };
        s.push_str(&format!(
            "{verb:<8} {}  ({})\n",
            i.desired.name,
            i.desired.role.describe()
        ));
        if let Some(r) = &i.reason {
            s.push_str(&format!("         {r}\n"));
        }
        for c in &i.changes {
            s.push_str(&format!(
                "         {}: {} → {}\n",
                c.property,
                short(&c.before),
                short(&c.after)
            ));
        }
        if let Some(ps) = powershell(i) {
            s.push_str(&format!("         PS> {ps}\n"));
        }
    }
    let count = |a: Action| items.iter().filter(|i| i.action == a).count();
    s.push_str(&format!(
        "summary: {} create, {} change, {} adopt, {} ok, {} refused, {} remove\n",
        count(Action::Create),
        count(Action::Change),
        count(Action::Adopt),
        count(Action::Ok),
        count(Action::Refused),
        count(Action::Remove)
    ));
    s
}

fn postfix_section(config: &Config) -> String {
    if config.connectors.is_none() {
        return "\nThe on-prem side to match: set [connectors] (smart_host, certificate_name) and run `ldap2exo connectors postfix`.\n".into();
    }
    format!(
        "\nThe on-prem side to match (Postfix; `ldap2exo connectors postfix` prints it alone):\n\n{}",
        postfix::render(&config.tenant, config.connectors.as_ref(), routing(config))
    )
}

async fn apply(config: &Config, adopt: &[String]) -> Result<Exit, CommandError> {
    let (exchange, items) = items(config, adopt).await?;
    let mut failed = false;
    // The back door refuses every message that no other connector claims, so it is closed
    // only once the inbound OnPremises connector that claims the Linux side's mail is in
    // place; otherwise all on-prem mail would bounce. `items` lists that connector first.
    let mut on_prem_in_place = false;
    let mut tally = [0usize; 4];
    for item in &items {
        let name = &item.desired.name;
        let held = item.desired.role == Role::BackDoor
            && item.action != Action::Ok
            && item.reason.is_none()
            && !on_prem_in_place;
        let outcome = if held {
            Written::Refused(
                "held: the inbound OnPremises connector is not in place, and closing the back \
                 door now would refuse all mail from the Linux side"
                    .into(),
            )
        } else {
            write(&exchange, item).await
        };
        match &outcome {
            Written::Ok | Written::Done(_) => {
                if item.desired.role == Role::InboundOnPremises {
                    on_prem_in_place = true;
                }
            }
            Written::Refused(_) | Written::Failed(_) => failed = true,
        }
        println!("{}", outcome.line(name));
        tally[outcome.index()] += 1;
    }
    println!(
        "summary: {} written, {} ok, {} refused, {} failed",
        tally[1], tally[0], tally[2], tally[3]
    );
    Ok(if failed { Exit::Failed } else { Exit::Ok })
}

/// What became of one connector in `apply`.
enum Written {
    /// Nothing to do: it already has the wanted shape.
    Ok,
    /// Written and read back as wanted: created, changed, adopted or removed.
    Done(&'static str),
    Refused(String),
    Failed(String),
}

impl Written {
    /// Ok, written, refused, failed: the summary's order.
    fn index(&self) -> usize {
        match self {
            Written::Ok => 0,
            Written::Done(_) => 1,
            Written::Refused(_) => 2,
            Written::Failed(_) => 3,
        }
    }

    fn line(&self, name: &str) -> String {
        match self {
            Written::Ok => format!("ok       {name}"),
            Written::Done(what) => format!("{what:<8} {name}"),
            Written::Refused(why) => format!("REFUSED  {name}: {why}"),
            Written::Failed(why) => format!("FAILED   {name}: {why}"),
        }
    }
}

/// Writes one connector (never `*` on an OnPremises outbound one) and reads it back.
async fn write(exchange: &Exchange, item: &Item) -> Written {
    let name = &item.desired.name;
    let Some((cmdlet, params)) = item.call() else {
        return match &item.reason {
            Some(r) => Written::Refused(r.clone()),
            None => Written::Ok,
        };
    };
    if let Err(e) = connectors::guard_star(&cmdlet, &params, item.existing.as_ref()) {
        return Written::Refused(e.to_string());
    }
    tracing::info!(connector = %name, cmdlet = %cmdlet, "writing a connector");
    if let Err(e) = exchange.invoke(&cmdlet, Value::Object(params)).await {
        tracing::warn!(connector = %name, cmdlet = %cmdlet, error = %e, "the connector write failed");
        return Written::Failed(format!("{cmdlet}: {e}"));
    }
    match verify(exchange, item).await {
        Ok(()) => Written::Done(match item.action {
            Action::Create => "created",
            Action::Adopt => "adopted",
            Action::Remove => "removed",
            _ => "changed",
        }),
        Err(why) => Written::Failed(why),
    }
}

/// Reads the connector back after a write; what still differs (or, after a removal, is still
/// there) is a failure.
async fn verify(exchange: &Exchange, item: &Item) -> Result<(), String> {
    let noun = item.desired.role.direction().noun();
    let got = exchange
        .invoke(
            &format!("Get-{noun}"),
            json!({"Identity": item.desired.name}),
        )
        .await;
    if item.action == Action::Remove {
        return match got {
            Err(TenantError::NotFound { .. }) => Ok(()),
            Ok(v) if v.is_empty() => Ok(()),
            Ok(_) => Err("removed, but still there when read back".into()),
            Err(e) => Err(format!("removed, but reading it back failed: {e}")),
        };
    }
    let got = got.map_err(|e| format!("written, but reading it back failed: {e}"))?;
    let Some(c) = got.first() else {
        return Err("written, but not found when read back".into());
    };
    let left = connectors::diff::changes(&item.desired, c, false);
    if left.is_empty() {
        Ok(())
    } else {
        let names: Vec<&str> = left.iter().map(|c| c.property).collect();
        Err(format!(
            "written, but read back these still differ: {}",
            names.join(", ")
        ))
    }
}

async fn audit(config: &Config, format: AuditFormat) -> Result<Exit, CommandError> {
    let tenant = Tenant::connect(&config.tenant)?;
    let (inbound, outbound) = read(tenant.exchange()).await?;
    let site = Site {
        accepted_domains: config.tenant.accepted_domains.clone(),
        certificate_name: config
            .connectors
            .as_ref()
            .and_then(|c| c.certificate_name.clone()),
        smart_host: config
            .connectors
            .as_ref()
            .and_then(|c| c.smart_host.clone()),
        onprem_routing_domain: config
            .migration
            .as_ref()
            .map(|m| m.onprem_routing_domain.clone()),
        close_back_door: config.connectors.as_ref().map(|c| c.close_back_door),
    };
    let findings = connectors::audit(&inbound, &outbound, &site);
    let out = match format {
        AuditFormat::Json => {
            let mut s =
                serde_json::to_string_pretty(&audit_json(&findings)).expect("audit serialises");
            s.push('\n');
            s
        }
        AuditFormat::Markdown => audit_markdown(&findings),
        AuditFormat::Text => {
            let mut s = audit_text(&findings);
            s.push_str(&postfix_section(config));
            s
        }
    };
    print!("{out}");
    let fails = findings.iter().any(|f| f.status == Status::Fail);
    Ok(if fails { Exit::Failed } else { Exit::Ok })
}

fn tally(findings: &[Finding]) -> (usize, usize, usize) {
    let n = |s: Status| findings.iter().filter(|f| f.status == s).count();
    (n(Status::Pass), n(Status::Warn), n(Status::Fail))
}

fn audit_json(findings: &[Finding]) -> Value {
    let (pass, warn, fail) = tally(findings);
    json!({"summary": {"pass": pass, "warn": warn, "fail": fail}, "findings": findings})
}

fn audit_text(findings: &[Finding]) -> String {
    let mut s = String::new();
    for f in findings {
        let status = f.status.label().to_ascii_uppercase();
        let on = f
            .connector
            .as_deref()
            .map(|c| format!(" [{c}]"))
            .unwrap_or_default();
        s.push_str(&format!("{status:<5} {}{on}: {}\n", f.check, f.reason));
        if let Some(fix) = &f.fix {
            s.push_str(&format!("      fix: {fix}\n"));
        }
    }
    let (pass, warn, fail) = tally(findings);
    s.push_str(&format!("summary: {pass} pass, {warn} warn, {fail} fail\n"));
    s
}

fn audit_markdown(findings: &[Finding]) -> String {
    let cell = |t: &str| t.replace('|', "\\|").replace('\n', " ");
    let mut s =
        String::from("| status | check | connector | reason | fix |\n|---|---|---|---|---|\n");
    for f in findings {
        s.push_str(&format!(
            "| {} | `{}` | {} | {} | {} |\n",
            f.status.label(),
            f.check,
            cell(f.connector.as_deref().unwrap_or("")),
            cell(&f.reason),
            f.fix
                .as_deref()
                .map(|x| format!("`{}`", cell(x)))
                .unwrap_or_default()
        ));
    }
    let (pass, warn, fail) = tally(findings);
    s.push_str(&format!("\n{pass} pass, {warn} warn, {fail} fail\n"));
    s
}
