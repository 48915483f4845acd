//! `check-config`: bind to LDAP, get tenant tokens, check the licence, open the state store
//! (or, before the first run, check that it can be created).

use std::path::Path;

use super::{CommandError, Exit};
use crate::config::{Config, Credential};
use crate::source;
use crate::state::{self, Store};
use crate::tenant::{Tenant, TenantError};

/// `check-config`: the file already parsed (or we would not be here); now bind to LDAP and
/// list what is missing for each capability.
pub async fn check_config(config: &Config) -> Result<Exit, CommandError> {
    println!("configuration: ok");
    let ldap = match source::check(&config.ldap).await {
        Ok(report) => {
            let who = report.bind_dn.as_deref().unwrap_or("anonymous");
            let paging = match report.paged_results {
                Some(true) => "paged results supported",
                Some(false) => "paged results NOT advertised",
                None => "paged results unknown",
            };
            println!(
                "ldap: ok ({}, {:?}, bound as {who}, base {} exists, {paging}{})",
                report.url,
                report.tls,
                report.base_dn,
                report
                    .vendor
                    .as_deref()
                    .map(|v| format!(", {v}"))
                    .unwrap_or_default()
            );
            for w in &report.warnings {
                println!("ldap: warning: {w}");
            }
            true
        }
        Err(e) => {
            println!("ldap: FAILED: {e}");
            false
        }
    };
    let t = &config.tenant;
    let mut missing = Vec::new();
    if t.tenant_id.is_none() {
        missing.push("tenant.tenant_id".to_owned());
    }
    if t.client_id.is_none() && t.credential_kind().ok() != Some(Credential::ManagedIdentity) {
        missing.push("tenant.client_id".to_owned());
    }
    if let Err(e) = t.credential_kind() {
        missing.push(e);
    }
    if t.mailbox_sku.is_none() {
        missing.push(
            "tenant.mailbox_sku (to license people whose mailbox is in Exchange Online)".to_owned(),
        );
    }
    let mut tenant_ok = true;
    if t.tenant_id.is_some() && t.credential_kind().is_ok() {
        // Gets a token for each audience and reads the domains through both APIs.
        let checked = async {
            let tenant = Tenant::connect(t)?;
            let check = tenant.check().await?;
            if let Some(sku) = &t.mailbox_sku {
                let found = tenant.graph().resolve_sku(sku).await?;
                return Ok::<_, TenantError>((check, Some(found)));
            }
            Ok((check, None))
        };
        match checked.await {
            Ok((check, sku)) => {
                println!(
                    "tenant: ok ({:?} credential, tokens for Graph and Exchange, {} domains, {} accepted domains)",
                    check.credential,
                    check.domains.len(),
                    check.accepted_domains.len()
                );
                for d in &t.accepted_domains {
                    if !check
                        .accepted_domains
                        .iter()
                        .any(|a| a.eq_ignore_ascii_case(d))
                    {
                        tenant_ok = false;
                        println!(
                            "tenant: FAILED: {d} (tenant.accepted_domains) is not an accepted domain of the tenant"
                        );
                    }
                }
                if let Some(sku) = sku {
                    println!(
                        "tenant: licence {} has {} units free",
                        sku.sku_part_number,
                        sku.available()
                    );
                }
            }
            Err(e) => {
                tenant_ok = false;
                println!("tenant: FAILED: {e}");
            }
        }
    }
    if !missing.is_empty() {
        println!(
            "tenant: missing (dry runs work without): {}",
            missing.join("; ")
        );
    }
    report_daemon_and_notify(config, missing.is_empty());
    if let Err(e) = check_state(&config.state.path).await {
        println!("state: FAILED: {e}");
        // A missing or unwritable directory is the configuration's (2), like in every command.
        return Ok(e.exit());
    }
    Ok(if ldap && tenant_ok {
        Exit::Ok
    } else {
        Exit::Failed
    })
}

/// Opens (and upgrades) an existing state store; for a missing one, checks only that the first
/// run can create it, so that `check-config` never leaves a database behind (a mistyped
/// `state.path` must not turn into an empty store).
async fn check_state(path: &Path) -> Result<(), CommandError> {
    if path.exists() {
        let store = Store::open(path).await?;
        store.close().await;
        println!("state: ok ({})", path.display());
        return Ok(());
    }
    let dir = state::directory(path);
    if !dir.is_dir() {
        return Err(state::StateError::NoDirectory {
            dir,
            path: path.to_owned(),
        }
        .into());
    }
    // Whether the first run can create the store: create (and remove) a file beside it.
    let probe = dir.join(format!(".ldap2exo-check-{}", std::process::id()));
    std::fs::File::create(&probe)
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| {
            CommandError::Usage(format!(
                "the directory {} of the state store is not writable: {e}",
                dir.display()
            ))
        })?;
    println!(
        "state: will be created at {} on the first run",
        path.display()
    );
    Ok(())
}

/// What `daemon` and the mails will do with this configuration (both were checked when it was
/// loaded; the relay itself is only met when a mail goes out).
fn report_daemon_and_notify(config: &Config, tenant_complete: bool) {
    let d = &config.daemon;
    let next = crate::daemon::schedule::Schedule::parse(&d.schedule)
        .ok()
        .and_then(|s| s.next_after(crate::daemon::unix_now()));
    match (tenant_complete, next) {
        (true, Some(next)) => println!(
            "daemon: ok (schedule `{}`, next tick {}; /healthz, /readyz, /metrics on {})",
            d.schedule,
            crate::plan::rfc3339(next),
            d.listen
        ),
        (false, _) => println!(
            "daemon: cannot run yet: it applies its runs, so it needs the tenant settings listed as missing"
        ),
        (true, None) => println!("daemon: the schedule `{}` never fires again", d.schedule),
    }
    let n = &config.notify;
    if n.enabled() {
        println!(
            "notify: mails {} to {} via {}:{} ({}{}); the relay is first met when a mail goes out",
            n.on.iter()
                .map(|o| o.as_str())
                .collect::<Vec<_>>()
                .join("/"),
            n.to.join(", "),
            n.smtp_host,
            n.port(),
            format!("{:?}", n.tls).to_lowercase(),
            if n.username.is_some() {
                ", with a login"
            } else {
                ""
            }
        );
    } else {
        println!("notify: off (no notify.to)");
    }
}
