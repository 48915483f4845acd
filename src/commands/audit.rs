//! `audit gal`: reads LDAP (mapped exactly as `sync` maps it) and every recipient of the
//! tenant, and reports what the GAL lacks or gets wrong ([`crate::audit::gal`]). It writes
//! nothing: not to the tenant, not to the state store, which it needs only to know who is
//! migrating by IMAP (opened read-only, when a store exists).

use std::collections::BTreeSet;

use super::output::{self, write_out};
use super::{CommandError, Exit};
use crate::audit;
use crate::cli::{AuditArgs, AuditCommand, AuditGalArgs};
use crate::config::Config;
use crate::desired;
use crate::ids::Anchor;
use crate::inventory;
use crate::source::{self, Selection};
use crate::state::Store;
use crate::tenant::Tenant;

/// `audit <what>`.
pub async fn audit(config: &Config, args: &AuditArgs) -> Result<Exit, CommandError> {
    match &args.command {
        AuditCommand::Gal(args) => gal(config, args).await,
    }
}

/// `audit gal`: exit 0 without findings, 1 with findings (INTERFACE.md); a configuration
/// that cannot reach the tenant is exit 2. Quarantined entries are listed but are not
/// findings: they are LDAP's fault, and `sync` reports them too.
async fn gal(config: &Config, args: &AuditGalArgs) -> Result<Exit, CommandError> {
    if config.tenant.tenant_id.is_none() {
        return Err(CommandError::Usage(
            "audit gal reads the tenant: set tenant.tenant_id and a tenant credential".into(),
        ));
    }
    if let Err(why) = config.tenant.credential_kind() {
        return Err(CommandError::Usage(format!(
            "audit gal reads the tenant: {why}"
        )));
    }
    let dest = output::open(args.output.as_deref())?;
    let tenant = Tenant::connect(&config.tenant)?;
    let selection = match args.only.is_empty() {
        true => Selection::All,
        false => Selection::Only(args.only.clone()),
    };
    let mut mapper = desired::Mapper::new(config).selecting(&selection);
    let migrating = migrating(config).await;
    match &config.migration {
        Some(m) => mapper = mapper.migrating(migrating, &m.onprem_routing_domain),
        // Their mailboxes would look like licensed MailUsers, and the fix would be to take the
        // licence away: refuse rather than advise that.
        None if !migrating.is_empty() => {
            return Err(CommandError::Usage(format!(
                "the state store has {} people migrating by IMAP (`ldap2exo migrate status`), but the configuration has no [migration] section: restore it (or the LDAP2EXO__MIGRATION__* variables) so that their mailboxes are audited as migrating",
                migrating.len()
            )));
        }
        None => {}
    }
    let ldap = source::read_each(&config.ldap, &selection, |entry| mapper.push(&entry));
    let tenant_read = inventory::read(&tenant, &config.tenant.anchor_attribute);
    let (read, inventory) = tokio::join!(ldap, tenant_read);
    read?;
    let inventory = inventory?;
    // The objects already in the tenant keep an address two entries claim, as in `sync`
    // (which asks its state store; the tenant's stamped objects are what that store mirrors).
    let known: BTreeSet<_> = inventory.managed.keys().cloned().collect();
    let desired = mapper.finish(&known);
    let report = audit::audit_gal(&desired, &inventory, args.only.is_empty());
    let s = &report.summary;
    tracing::info!(
        findings = s.findings,
        should_be = s.should_be,
        resolvable = s.resolvable,
        quarantined = s.quarantined,
        "GAL audited"
    );
    write_out(dest, |w| audit::render::write(w, &report, args.format))?;
    Ok(match report.findings.is_empty() {
        true => Exit::Ok,
        false => Exit::Failed,
    })
}

/// The people `migrate start` made mailboxes before LDAP says so: sync maps them as mailboxes
/// forwarding to on-prem, and so must the audit, or each would look like a licensed MailUser.
/// No store yet means nobody migrates; a store that cannot be read is said, not fatal.
async fn migrating(config: &Config) -> BTreeSet<Anchor> {
    let path = &config.state.path;
    if !path.exists() {
        return BTreeSet::new();
    }
    let read = async { Store::open_read_only(path).await?.migrating().await };
    match read.await {
        Ok(people) => people.into_keys().collect(),
        Err(e) => {
            tracing::warn!(
                state = %path.display(),
                error = %e,
                "cannot tell who is migrating by IMAP; migrating people may be reported as licensed MailUsers"
            );
            BTreeSet::new()
        }
    }
}
