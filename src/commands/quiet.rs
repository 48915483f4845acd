//! The I/O half of quiet runs ([`crate::plan::quiet`]): whether a run may take the last
//! converged plan, and keeping a real run's plan for the next one.

use crate::cli::Selection as SelectionArgs;
use crate::config::Config;
use crate::inventory::incremental::Start;
use crate::plan::{Plan, quiet};
use crate::source::incremental;
use crate::state::{LdapSyncCommit, QuietPlan, StateError, Store, TenantSyncCommit};

/// What a run that may be quiet carries from planning to its end.
#[derive(Debug, Clone)]
pub(super) struct QuietRun {
    /// The planning generation when the run started (under the run lock).
    pub generation: i64,
    /// [`crate::inventory::incremental::Read::fixed`] of the run's tenant read.
    pub fixed: String,
}

/// Whether this run can be quiet at all: both incremental reads on, the tenant read, the
/// whole directory and no approval or cohort of the command line.
pub(super) fn eligible(config: &Config, args: &SelectionArgs, tenant: bool, cohort: bool) -> bool {
    config.ldap.content_sync
        && config.tenant.incremental_read
        && tenant
        && !cohort
        && args.only.is_empty()
        && args.max_deletes.is_none()
        && args.approval.approve_removals.is_none()
        && args.approval.scope.is_none()
}

/// [`quiet::Inputs::build`]: the version, and the size and modification time of the
/// executable (a rebuild from changed sources keeps the version).
pub(super) fn build() -> String {
    let exe = std::env::current_exe().and_then(std::fs::metadata);
    let file = exe.map(|m| (m.len(), m.modified().ok()));
    format!("{} {file:?}", env!("CARGO_PKG_VERSION"))
}

/// The configuration as [`quiet::Inputs::config`] takes it.
pub(super) fn config_text(config: &Config) -> String {
    format!("{config:?}")
}

/// The kept plan, when the LDAP refresh (`read`) and the tenant's changes (`start`) found
/// nothing, every other input is as it was, and no grace period ended since. `generation`
/// as read when the run started; `now` is the run's clock.
pub(super) async fn take(
    config: &Config,
    store: &Store,
    read: &incremental::Read,
    start: &Start,
    generation: i64,
    now: i64,
) -> Result<Option<Plan>, StateError> {
    let Start::Changes(changes) = start else {
        return Ok(None);
    };
    // Deferred with changes: the run may plan only what they touch (`plan::partial`).
    if !read.deferred || !read.changed().is_empty() {
        return Ok(None);
    }
    match changes.news(store).await {
        Ok(None) => {}
        Ok(Some(news)) => {
            tracing::info!(news = %news, "the tenant changed since the last run: planning");
            return Ok(None);
        }
        Err(e) => {
            tracing::warn!(error = %e, "the tenant's changes cannot be compared: planning");
            return Ok(None);
        }
    }
    let (Some(kept), Some(ldap), Some(tenant)) = (
        store.quiet_plan().await?,
        store.ldap_sync().await?,
        store.tenant_sync().await?,
    ) else {
        return Ok(None);
    };
    let digest = quiet::Inputs {
        build: &build(),
        config: &config_text(config),
        generation,
        baseline: store.baseline().await?,
        ldap_cookie: &ldap.cookie,
        delta_link: &tenant.delta_link,
        exchange_since: tenant.exchange_since,
        fixed: changes.fixed(),
    }
    .digest();
    if digest != kept.inputs {
        tracing::info!(
            since_run = kept.run_id,
            "LDAP and the tenant are unchanged, but the configuration or the state store is not: planning"
        );
        return Ok(None);
    }
    if store.grace_ends_between(kept.planned_at, now).await? {
        tracing::info!(
            since_run = kept.run_id,
            "a grace period ended since the last plan: planning"
        );
        return Ok(None);
    }
    let plan = quiet::taken(&kept.plan, kept.run_id, now);
    if plan.is_none() {
        tracing::warn!(
            since_run = kept.run_id,
            "the kept plan cannot be read: planning"
        );
    }
    Ok(plan)
}

/// What a finished real run commits and whether it may keep its plan.
pub(super) struct Ending<'a> {
    pub plan: &'a Plan,
    pub run_id: i64,
    pub started: i64,
    /// The LDAP read was committed (every change applied).
    pub ldap: Option<&'a LdapSyncCommit>,
    pub tenant: Option<&'a TenantSyncCommit>,
}

/// After a real run (recorded as finished, its reads committed): keeps its plan for the
/// next run when it changed nothing and left the state store's planning tables as it found
/// them; otherwise forgets any kept plan.
pub(super) async fn keep(
    config: &Config,
    store: &Store,
    run: &QuietRun,
    end: Ending<'_>,
) -> Result<(), StateError> {
    let unchanged = store.planning_generation().await? == run.generation;
    let (Some(ldap), Some(tenant), true, true) =
        (end.ldap, end.tenant, unchanged, quiet::keepable(end.plan))
    else {
        return store.set_quiet_plan(None, end.started).await;
    };
    let inputs = quiet::Inputs {
        build: &build(),
        config: &config_text(config),
        generation: run.generation,
        baseline: store.baseline().await?,
        ldap_cookie: &ldap.cookie,
        delta_link: &tenant.delta_link,
        exchange_since: tenant.exchange_since,
        fixed: &run.fixed,
    };
    let kept = QuietPlan {
        inputs: inputs.digest(),
        planned_at: end.started,
        run_id: end.plan.unchanged_since_run.unwrap_or(end.run_id),
        plan: quiet::stored(end.plan),
    };
    tracing::debug!(
        run = kept.run_id,
        "kept the plan for the next run while nothing changes"
    );
    store.set_quiet_plan(Some(&kept), end.started).await
}

/// Logs a taken plan as planning logs its own.
pub(super) fn announce(plan: &Plan) {
    if let Some(run) = plan.unchanged_since_run {
        tracing::info!(
            since_run = run,
            actions = plan.actions.len(),
            "nothing changed in LDAP, the tenant or the state store: the plan of that run stands"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest takes the configuration as `Debug` prints it: two loads of the same file
    /// must print the same (a `HashMap` in the configuration would not, and no run would
    /// ever be quiet), and a changed key must print differently.
    #[test]
    fn the_configuration_prints_the_same_every_time() {
        let path = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/ldap2exo.example.toml"
        ));
        let load = |env: Vec<(String, String)>| Config::load_without_secrets(path, env).unwrap();
        let a = config_text(&load(Vec::new()));
        assert_eq!(a, config_text(&load(Vec::new())));
        let changed = vec![("LDAP2EXO__SAFETY__GRACE_PERIOD_DAYS".into(), "9".into())];
        assert_ne!(a, config_text(&load(changed)));
    }
}
