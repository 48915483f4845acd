//! apply: executes a plan against the tenant, one idempotent action per person.
//!
//! Each action runs as a short sequence of steps (create, stamp, addresses, address-book
//! attributes, lifecycle). Every step is written to the journal when it starts and when its
//! outcome is known, and the state store is updated after every step that succeeded, so a
//! crash loses nothing and the next run plans exactly what is still missing. Actions of
//! different people run concurrently; the tenant client's limiter keeps them within
//! Microsoft's throttling. A failed action is recorded on its person and never stops the rest.
//!
//! Ownership: an existing object is touched only when the tenant shows our stamp
//! (`ldap2exo:<anchor>` in `tenant.anchor_attribute`) on it ([`inventory`]). Creating first
//! looks for such an object and adopts it, and refuses addresses that belong to objects
//! without the stamp.

pub mod inventory;

use std::collections::{BTreeMap, BTreeSet};

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::config::Config;
use crate::desired::Kind;
use crate::ids::Anchor;
use crate::plan::{Action, HIDDEN, Op, Plan, RETAINED};
use crate::secret::Secret;
use crate::state::{ManagedObject, Stage, StateError, Store};
use crate::tenant::exchange::{NewMailUser, hashtable};
use crate::tenant::graph::GraphUser;
use crate::tenant::{Tenant, TenantError};

use inventory::Inventory;

/// What stops a whole run: the state store failing (then nothing can be recorded safely).
/// Tenant errors are per action and end up in [`ActionResult`].
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    State(#[from] StateError),
}

/// How one action ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum Outcome {
    Done,
    /// Not attempted (a safety gate held it back).
    Skipped(String),
    /// An address or UPN belongs to an object ldap2exo does not manage: nothing was touched.
    Conflict(String),
    Failed(String),
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ActionResult {
    pub op: Op,
    pub anchor: Anchor,
    pub uid: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Everything an action needs besides the action itself.
pub struct Context<'a> {
    pub tenant: &'a Tenant,
    pub store: &'a Store,
    pub config: &'a Config,
    pub inventory: &'a Inventory,
    pub run_id: i64,
    pub now: i64,
    /// False when the safety verdict is blocked: disables and deletes are skipped.
    pub allow_removals: bool,
    /// Actions of different people in flight at once.
    pub concurrency: usize,
}

/// Applies every action of `plan`; returns one result per action, in plan order.
pub async fn apply(plan: &Plan, ctx: &Context<'_>) -> Result<Vec<ActionResult>, ApplyError> {
    let results: Vec<Result<ActionResult, ApplyError>> = futures_util::stream::iter(&plan.actions)
        .map(|action| run(action, ctx))
        .buffered(ctx.concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

async fn run(action: &Action, ctx: &Context<'_>) -> Result<ActionResult, ApplyError> {
    let outcome = if action.op.is_removal() && !ctx.allow_removals {
        Outcome::Skipped("the safety verdict is blocked: nothing is disabled or deleted".into())
    } else {
        let mut job = Job::new(action, ctx).await?;
        match job.execute().await {
            Ok(()) => Outcome::Done,
            Err(Stop::Conflict(why)) => Outcome::Conflict(why),
            Err(Stop::Failed(why)) => Outcome::Failed(why),
            Err(Stop::State(e)) => return Err(e.into()),
        }
    };
    match &outcome {
        Outcome::Done => {
            tracing::debug!(op = action.op.as_str(), uid = %action.uid, "action applied")
        }
        Outcome::Skipped(why) => {
            tracing::info!(op = action.op.as_str(), uid = %action.uid, reason = %why, "action skipped")
        }
        Outcome::Conflict(why) => {
            tracing::warn!(op = action.op.as_str(), uid = %action.uid, reason = %why, "action not applied: conflict")
        }
        Outcome::Failed(why) => {
            tracing::warn!(op = action.op.as_str(), uid = %action.uid, error = %why, "action failed")
        }
    }
    Ok(ActionResult {
        op: action.op,
        anchor: action.anchor.clone(),
        uid: action.uid.clone(),
        outcome,
    })
}

/// Why an action stopped early.
enum Stop {
    Conflict(String),
    Failed(String),
    State(StateError),
}

impl From<StateError> for Stop {
    fn from(e: StateError) -> Self {
        Stop::State(e)
    }
}

/// Fields written by Graph `PATCH /users/{id}`.
const GRAPH_FIELDS: [&str; 10] = [
    "userPrincipalName",
    "displayName",
    "givenName",
    "surname",
    "department",
    "jobTitle",
    "businessPhones",
    "mobilePhone",
    "officeLocation",
    "companyName",
];
/// Fields written through `Set-MailUser` / `Set-Mailbox`.
const EXCHANGE_FIELDS: [&str; 7] = [
    "primarySmtpAddress",
    "emailAddresses",
    RETAINED,
    "externalEmailAddress",
    HIDDEN,
    "name",
    "mailNickname",
];
/// Fields `New-MailUser` sets.
const NEW_MAIL_USER_FIELDS: [&str; 8] = [
    "name",
    "mailNickname",
    "displayName",
    "givenName",
    "surname",
    "externalEmailAddress",
    "userPrincipalName",
    "primarySmtpAddress",
];

/// One action being executed, with the state row it keeps up to date.
struct Job<'a, 'c> {
    action: &'a Action,
    ctx: &'a Context<'c>,
    obj: ManagedObject,
    /// Field values before the action (the state's view, or the tenant's when adopting).
    before: BTreeMap<String, Value>,
}

impl<'a, 'c> Job<'a, 'c> {
    async fn new(action: &'a Action, ctx: &'a Context<'c>) -> Result<Self, StateError> {
        let existing = ctx.store.object(&action.anchor).await?;
        let obj = existing.unwrap_or_else(|| ManagedObject {
            anchor: action.anchor.clone(),
            kind: action.kind,
            uid: action.uid.clone(),
            dn: action.dn.clone(),
            tenant_object_id: None,
            attributes: BTreeMap::new(),
            stage: Stage::Active,
            created_at: ctx.now,
            updated_at: ctx.now,
            disabled_at: None,
            delete_due_at: None,
            deleted_at: None,
        });
        let before = if action.op == Op::Create {
            BTreeMap::new()
        } else {
            obj.attributes.clone()
        };
        Ok(Job {
            action,
            ctx,
            obj,
            before,
        })
    }

    fn after(&self, field: &str) -> Option<&Value> {
        match self.action.changes.get(field) {
            Some((_, after)) => after.as_ref(),
            None => self.before.get(field),
        }
    }

    fn after_str(&self, field: &str) -> Option<String> {
        self.after(field).and_then(Value::as_str).map(str::to_owned)
    }

    fn changed(&self, fields: &[&str]) -> bool {
        fields.iter().any(|f| self.action.changes.contains_key(f))
    }

    fn stamp(&self) -> String {
        format!("ldap2exo:{}", self.action.anchor)
    }

    /// Runs one tenant call as a journaled step.
    async fn step<T>(
        &self,
        name: &str,
        call: impl std::future::Future<Output = Result<T, TenantError>>,
    ) -> Result<T, Stop> {
        let store = self.ctx.store;
        let id = store
            .journal_start(
                self.ctx.run_id,
                &self.action.anchor,
                self.action.op.as_str(),
                name,
                self.ctx.now,
            )
            .await?;
        match call.await {
            Ok(v) => {
                store
                    .journal_finish(id, "ok", self.obj.tenant_object_id.as_deref(), self.ctx.now)
                    .await?;
                Ok(v)
            }
            Err(e) => Err(self.failed(id, name, e).await?),
        }
    }

    /// Journals a failed step; an address or UPN someone else holds is a conflict, not a
    /// failure of ours.
    async fn failed(&self, row: i64, name: &str, e: TenantError) -> Result<Stop, StateError> {
        let text = e.to_string();
        self.ctx
            .store
            .journal_finish(row, "failed", Some(&text), self.ctx.now)
            .await?;
        Ok(match e {
            TenantError::AddressInUse { .. } | TenantError::Conflict { .. } => {
                Stop::Conflict(format!("{name}: {text}"))
            }
            _ => Stop::Failed(format!("{name}: {text}")),
        })
    }

    /// A create call as a journaled step whose journal row keeps the new object's id, so an
    /// interrupted run's object is found again instead of created twice.
    async fn create_step<T>(
        &self,
        name: &str,
        call: impl std::future::Future<Output = Result<T, TenantError>>,
        id_of: impl Fn(&T) -> Option<String>,
    ) -> Result<String, Stop> {
        let store = self.ctx.store;
        let row = store
            .journal_start(
                self.ctx.run_id,
                &self.action.anchor,
                "create",
                name,
                self.ctx.now,
            )
            .await?;
        let created = match call.await {
            Ok(created) => created,
            Err(e) => return Err(self.failed(row, name, e).await?),
        };
        match id_of(&created) {
            Some(id) => {
                store
                    .journal_finish(row, "ok", Some(&format!("created {id}")), self.ctx.now)
                    .await?;
                Ok(id)
            }
            None => {
                store
                    .journal_finish(
                        row,
                        "failed",
                        Some("no object id in the answer"),
                        self.ctx.now,
                    )
                    .await?;
                Err(Stop::Failed(format!("{name} returned no object id")))
            }
        }
    }

    /// Records in the state store that `fields` now hold their planned values.
    async fn applied(&mut self, fields: &[&str]) -> Result<(), Stop> {
        for f in fields {
            match self.after(f).cloned() {
                Some(v) => self.obj.attributes.insert((*f).to_owned(), v),
                None => self.obj.attributes.remove(*f),
            };
        }
        self.obj.uid = self.action.uid.clone();
        self.obj.dn = self.action.dn.clone();
        self.obj.updated_at = self.ctx.now;
        self.ctx.store.upsert_object(&self.obj).await?;
        Ok(())
    }

    fn tenant_id(&self) -> Result<String, Stop> {
        self.obj
            .tenant_object_id
            .clone()
            .ok_or_else(|| Stop::Failed("the state store has no tenant object id".into()))
    }

    /// The tenant object for an existing person, which must carry our stamp.
    fn owned(&mut self) -> Result<String, Stop> {
        let inv = self.ctx.inventory;
        if let Some(ids) = inv.duplicates.get(&self.action.anchor) {
            return Err(Stop::Failed(format!(
                "the stamp {} is on {} objects ({}); touching none",
                self.stamp(),
                ids.len(),
                ids.join(", ")
            )));
        }
        match inv.managed.get(&self.action.anchor) {
            Some(t) => {
                self.obj.tenant_object_id = Some(t.id.clone());
                Ok(t.id.clone())
            }
            None => Err(Stop::Failed(format!(
                "no object in the tenant carries the stamp {}; refusing to touch an unmanaged object",
                self.stamp()
            ))),
        }
    }

    async fn execute(&mut self) -> Result<(), Stop> {
        match self.action.op {
            Op::Create => self.create().await,
            Op::Update => {
                self.owned()?;
                self.update().await
            }
            Op::Convert => {
                self.owned()?;
                self.convert().await
            }
            Op::Disable => {
                self.owned()?;
                self.lifecycle(false).await
            }
            Op::Enable => {
                self.owned()?;
                self.lifecycle(true).await
            }
            Op::Delete => {
                self.owned()?;
                self.delete().await
            }
        }
    }

    /// Creates the person, or adopts the object a crashed earlier run already made.
    async fn create(&mut self) -> Result<(), Stop> {
        if let Some(ids) = self.ctx.inventory.duplicates.get(&self.action.anchor) {
            return Err(Stop::Failed(format!(
                "the stamp {} is on {} objects ({}); creating none until they are resolved",
                self.stamp(),
                ids.len(),
                ids.join(", ")
            )));
        }
        if let Some(t) = self.ctx.inventory.managed.get(&self.action.anchor) {
            // Planning adopts stamped objects, so this means the tenant changed between the
            // read and now: never create a second object for the same person.
            return Err(Stop::Failed(format!(
                "{} ({}) already carries the stamp {}; the next run adopts it",
                t.upn,
                t.id,
                self.stamp()
            )));
        }
        let was_deleted = self.obj.stage == Stage::Deleted;
        // From here on the person is back, whatever the row said before.
        self.obj.stage = Stage::Active;
        self.obj.disabled_at = None;
        self.obj.delete_due_at = None;
        self.obj.deleted_at = None;
        if was_deleted && self.restore().await? {
            return Ok(());
        }
        // An object an interrupted run created is ours although it may lack the stamp; any
        // other owner of these addresses is not.
        let earlier = match self.earlier_create().await? {
            Some(id) => Some(id),
            None => self.interrupted_create().await?,
        };
        if earlier.is_none() {
            self.refuse_foreign_addresses()?;
        }
        match self.action.kind {
            Kind::MailUser => self.create_mail_user(earlier).await,
            Kind::Mailbox => self.create_mailbox(earlier).await,
        }
    }

    /// A person deleted within the last 30 days comes back by restoring their object from the
    /// tenant's recycle bin (it still holds their addresses, so a new one could not have
    /// them), then applying what changed since. False when there is nothing to restore.
    async fn restore(&mut self) -> Result<bool, Stop> {
        let Some(id) = self.obj.tenant_object_id.clone() else {
            return Ok(false);
        };
        let graph = self.ctx.tenant.graph();
        match self
            .step("restore deleted user", graph.restore_user(&id))
            .await
        {
            Ok(_) => {}
            Err(Stop::State(e)) => return Err(Stop::State(e)),
            // Purged, or never soft-deleted: a new object it is.
            Err(_) => return Ok(false),
        }
        tracing::info!(uid = %self.action.uid, id = %id, "restored from the recycle bin");
        // The last applied values are what the restored object holds (hidden, blocked).
        self.before = self.obj.attributes.clone();
        let kind = self.obj.kind;
        let hidden = self.after(HIDDEN).and_then(Value::as_bool).unwrap_or(false);
        self.set_hidden(&id, kind, hidden).await?;
        if kind == Kind::Mailbox {
            self.step(
                "PATCH accountEnabled",
                graph.update_user(&id, &json!({ "accountEnabled": true })),
            )
            .await?;
        }
        self.applied(&[HIDDEN]).await?;
        if kind == self.action.kind {
            self.patch_graph(&id, false, None).await?;
            self.set_recipient(&id, kind, false).await?;
        } else {
            self.convert().await?;
        }
        Ok(true)
    }

    /// Shows or hides the person in the address list (the leaver's first step, and undone
    /// when they come back).
    async fn set_hidden(&self, id: &str, kind: Kind, hidden: bool) -> Result<(), Stop> {
        let ex = self.ctx.tenant.exchange();
        let params = json!({ "HiddenFromAddressListsEnabled": hidden });
        match kind {
            Kind::MailUser => {
                self.step("Set-MailUser hidden", ex.set_mail_user(id, params))
                    .await
            }
            Kind::Mailbox => {
                self.step("Set-Mailbox hidden", ex.set_mailbox(id, params))
                    .await
            }
        }
    }

    /// Every UPN and address the person would get must be free of unmanaged owners.
    fn refuse_foreign_addresses(&self) -> Result<(), Stop> {
        let foreign = &self.ctx.inventory.foreign;
        let mut wanted: Vec<String> = self.after_str("userPrincipalName").into_iter().collect();
        wanted.extend(self.after_str("primarySmtpAddress"));
        wanted.extend(strings(self.after("emailAddresses")));
        for w in wanted {
            if let Some(owner) = foreign.get(&w.to_ascii_lowercase()) {
                return Err(Stop::Conflict(format!(
                    "{w} already belongs to {owner}, which ldap2exo does not manage; adopt or rename it by hand"
                )));
            }
        }
        Ok(())
    }

    async fn create_mail_user(&mut self, earlier: Option<String>) -> Result<(), Stop> {
        let ex = self.ctx.tenant.exchange();
        let reused = earlier.is_some();
        let id = match earlier {
            Some(id) => id,
            None => {
                let m = NewMailUser {
                    name: self
                        .after_str("name")
                        .unwrap_or_else(|| self.action.uid.clone()),
                    alias: self.after_str("mailNickname").unwrap_or_default(),
                    display_name: self.after_str("displayName").unwrap_or_default(),
                    first_name: self.after_str("givenName"),
                    last_name: self.after_str("surname"),
                    external_email_address: self
                        .after_str("externalEmailAddress")
                        .unwrap_or_default(),
                    user_principal_name: self.after_str("userPrincipalName"),
                    password: Some(random_password()),
                    primary_smtp_address: self.after_str("primarySmtpAddress"),
                };
                let created =
                    self.create_step("New-MailUser", ex.new_mail_user(&m), |v: &Value| {
                        v.get("ExternalDirectoryObjectId")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    });
                created.await?
            }
        };
        self.obj.tenant_object_id = Some(id.clone());
        self.obj.kind = Kind::MailUser;
        self.applied(&NEW_MAIL_USER_FIELDS).await?;

        // The stamp first, alone: from here on the object is recognisably ours.
        let attr = custom_attribute(&self.ctx.config.tenant.anchor_attribute);
        self.step(
            "Set-MailUser stamp",
            ex.set_mail_user(&id, json!({ attr: self.stamp() })),
        )
        .await?;
        // An object found again was made by an earlier run with what LDAP said then: give it
        // every value, not only what New-MailUser leaves out.
        self.set_recipient(&id, Kind::MailUser, !reused).await?;
        self.patch_graph(&id, !reused, Some(false)).await
    }

    async fn create_mailbox(&mut self, earlier: Option<String>) -> Result<(), Stop> {
        let graph = self.ctx.tenant.graph();
        let Some(sku) = self.ctx.config.tenant.mailbox_sku.clone() else {
            return Err(Stop::Failed(
                "tenant.mailbox_sku is not set: cannot license a mailbox".into(),
            ));
        };
        let id = match earlier {
            Some(id) => id,
            None => {
                let user = GraphUser {
                    account_enabled: Some(true),
                    user_principal_name: self.after_str("userPrincipalName"),
                    display_name: self.after_str("displayName"),
                    mail_nickname: self.after_str("mailNickname"),
                    usage_location: self.ctx.config.tenant.usage_location.clone(),
                    on_premises_extension_attributes: Some(extension_attributes(
                        &self.ctx.config.tenant.anchor_attribute,
                        &self.stamp(),
                    )),
                    ..graph_user_fields(self)
                };
                let password = random_password();
                let created = self.create_step(
                    "POST /users",
                    graph.create_user(&user, &password),
                    |u: &GraphUser| u.id.clone(),
                );
                created.await?
            }
        };
        self.obj.tenant_object_id = Some(id.clone());
        self.obj.kind = Kind::Mailbox;
        // POST /users set the alias and every Graph field.
        let written: Vec<&str> = GRAPH_FIELDS
            .iter()
            .copied()
            .chain(["mailNickname"])
            .collect();
        self.applied(&written).await?;
        self.license(&id, &sku).await?;
        self.set_recipient(&id, Kind::Mailbox, true).await
    }

    /// The object an earlier, interrupted run created for this person: the journal holds a
    /// successful create step whose object still exists. Stamped objects were adopted
    /// already; this catches one that crashed between the create and the stamp.
    async fn earlier_create(&mut self) -> Result<Option<String>, Stop> {
        let Some(id) = self.obj.tenant_object_id.clone() else {
            let journal = self.ctx.store.journal(&self.action.anchor).await?;
            let created = journal.iter().rev().find_map(|j| {
                let detail = j
                    .detail
                    .as_deref()
                    .filter(|_| j.op == "create" && j.result == "ok")?;
                detail.strip_prefix("created ").map(str::to_owned)
            });
            return self.still_there(created).await;
        };
        self.still_there(Some(id)).await
    }

    /// A run killed after sending a create but before journaling its answer leaves a
    /// `pending` create step and an object nobody has stamped. The object with exactly the
    /// planned UPN and no stamp is that one: UPNs are unique, and this UPN came from our plan.
    async fn interrupted_create(&self) -> Result<Option<String>, Stop> {
        let journal = self.ctx.store.journal(&self.action.anchor).await?;
        let pending = journal.iter().any(|j| {
            j.op == "create"
                && j.result == "pending"
                && (j.step == "New-MailUser" || j.step == "POST /users")
        });
        let Some(upn) = self.after_str("userPrincipalName").filter(|_| pending) else {
            return Ok(None);
        };
        let graph = self.ctx.tenant.graph();
        let found = self
            .step(
                "GET /users (interrupted create)",
                graph.get_user(&upn, &["id", "onPremisesExtensionAttributes"]),
            )
            .await?;
        let attr = &self.ctx.config.tenant.anchor_attribute;
        Ok(found
            .filter(|u| {
                u.on_premises_extension_attributes
                    .as_ref()
                    .and_then(|e| e.get(attr))
                    .is_none_or(str::is_empty)
            })
            .and_then(|u| u.id))
    }

    async fn still_there(&self, id: Option<String>) -> Result<Option<String>, Stop> {
        let Some(id) = id else { return Ok(None) };
        let graph = self.ctx.tenant.graph();
        let found = self
            .step(
                "GET /users (earlier create)",
                graph.get_user(&id, &["id", "userPrincipalName"]),
            )
            .await?;
        Ok(found.and_then(|u| u.id))
    }

    async fn license(&mut self, id: &str, sku: &str) -> Result<(), Stop> {
        let graph = self.ctx.tenant.graph();
        if let Some(loc) = self.ctx.config.tenant.usage_location.clone() {
            self.step(
                "PATCH usageLocation",
                graph.update_user(id, &json!({ "usageLocation": loc })),
            )
            .await?;
        }
        self.step("assignLicense", graph.assign_license(id, sku))
            .await?;
        // Mailbox provisioning is not instant: ask politely until Exchange shows it.
        let ex = self.ctx.tenant.exchange();
        for attempt in 0..20u32 {
            if self
                .step("Get-Mailbox", ex.get_mailbox(id))
                .await?
                .is_some()
            {
                self.obj.kind = Kind::Mailbox;
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(
                500 * u64::from(attempt.min(10) + 1),
            ))
            .await;
        }
        Err(Stop::Failed(
            "the licensed mailbox did not appear in Exchange yet; the next run continues".into(),
        ))
    }

    /// `Set-MailUser` / `Set-Mailbox` for the Exchange fields that changed (all of them when
    /// the object is new).
    async fn set_recipient(&mut self, id: &str, kind: Kind, new: bool) -> Result<(), Stop> {
        let mut params = serde_json::Map::new();
        let (add, remove) = self.address_changes(new);
        if !add.is_empty() || !remove.is_empty() {
            params.insert("EmailAddresses".into(), hashtable(&add, &remove));
        }
        let changed = |f: &str| new || self.action.changes.contains_key(f);
        if changed(HIDDEN) {
            params.insert(
                "HiddenFromAddressListsEnabled".into(),
                json!(self.after(HIDDEN).and_then(Value::as_bool).unwrap_or(false)),
            );
        }
        if !new {
            if kind == Kind::MailUser
                && changed("externalEmailAddress")
                && let Some(e) = self.after_str("externalEmailAddress")
            {
                params.insert("ExternalEmailAddress".into(), json!(e));
            }
            if changed("name")
                && let Some(n) = self.after_str("name")
            {
                params.insert("Name".into(), json!(n));
            }
            if changed("mailNickname")
                && let Some(a) = self.after_str("mailNickname")
            {
                params.insert("Alias".into(), json!(a));
            }
        }
        if !params.is_empty() {
            let ex = self.ctx.tenant.exchange();
            match kind {
                Kind::MailUser => {
                    self.step("Set-MailUser", ex.set_mail_user(id, Value::Object(params)))
                        .await?
                }
                Kind::Mailbox => {
                    self.step("Set-Mailbox", ex.set_mailbox(id, Value::Object(params)))
                        .await?
                }
            }
        }
        self.applied(&EXCHANGE_FIELDS).await
    }

    /// Addresses to add and remove, as proxy strings: only what changed, never the whole
    /// list blindly (the tenant adds addresses of its own, such as the MOERA).
    fn address_changes(&self, new: bool) -> (Vec<String>, Vec<String>) {
        let set = |fields: &dyn Fn(&str) -> Option<Value>| -> (Option<String>, BTreeSet<String>) {
            let primary = fields("primarySmtpAddress").and_then(|v| v.as_str().map(str::to_owned));
            let mut rest: BTreeSet<String> = strings(fields("emailAddresses").as_ref()).collect();
            rest.extend(strings(fields(RETAINED).as_ref()));
            if let Some(p) = &primary {
                rest.remove(p);
            }
            (primary, rest)
        };
        let (p_before, s_before) = if new {
            (None, BTreeSet::new())
        } else {
            set(&|f| self.before.get(f).cloned())
        };
        let (p_after, s_after) = set(&|f| self.after(f).cloned());
        let mut add = Vec::new();
        let mut remove = Vec::new();
        if p_after != p_before {
            if let Some(p) = &p_after {
                add.push(format!("SMTP:{p}"));
            }
            // The old primary becomes a secondary on promotion; drop it unless still wanted.
            if let Some(old) = &p_before
                && !s_after.contains(old)
                && Some(old) != p_after.as_ref()
            {
                remove.push(format!("smtp:{old}"));
            }
        }
        add.extend(
            s_after
                .difference(&s_before)
                .filter(|a| Some(*a) != p_before.as_ref())
                .map(|a| format!("smtp:{a}")),
        );
        remove.extend(
            s_before
                .difference(&s_after)
                .filter(|a| Some(*a) != p_after.as_ref())
                .map(|a| format!("smtp:{a}")),
        );
        (add, remove)
    }

    /// Graph `PATCH` of the address-book attributes that changed (all when new).
    async fn patch_graph(
        &mut self,
        id: &str,
        new: bool,
        account_enabled: Option<bool>,
    ) -> Result<(), Stop> {
        let mut patch = serde_json::Map::new();
        for f in GRAPH_FIELDS {
            if !new && !self.action.changes.contains_key(f) {
                continue;
            }
            // New-MailUser set these already.
            if new && NEW_MAIL_USER_FIELDS.contains(&f) {
                continue;
            }
            let v = self.after(f).cloned().unwrap_or(Value::Null);
            let v = if f == "businessPhones" {
                json!(v.as_str().map(|p| vec![p]).unwrap_or_default())
            } else {
                v
            };
            if new && v.is_null() {
                continue;
            }
            patch.insert(f.to_owned(), v);
        }
        if let Some(enabled) = account_enabled {
            patch.insert("accountEnabled".into(), json!(enabled));
        }
        if !patch.is_empty() {
            let graph = self.ctx.tenant.graph();
            self.step("PATCH /users", graph.update_user(id, &Value::Object(patch)))
                .await?;
        }
        self.applied(&GRAPH_FIELDS).await
    }

    async fn update(&mut self) -> Result<(), Stop> {
        let id = self.tenant_id()?;
        let kind = self.obj.kind;
        if self.changed(&GRAPH_FIELDS) {
            self.patch_graph(&id, false, None).await?;
        }
        if self.changed(&EXCHANGE_FIELDS) {
            self.set_recipient(&id, kind, false).await?;
        }
        self.applied(&[]).await
    }

    async fn convert(&mut self) -> Result<(), Stop> {
        let id = self.tenant_id()?;
        if self.action.kind == Kind::MailUser {
            // Removing the licence would disable the mailbox and leave nobody in the address
            // list; a MailUser cannot be made from a mailbox in place.
            return Err(Stop::Failed(
                "the LDAP forward into the tenant was removed, but an Exchange Online mailbox cannot become a MailUser in place; move the mailbox back by hand (the mailbox is left as it is)".into(),
            ));
        }
        let Some(sku) = self.ctx.config.tenant.mailbox_sku.clone() else {
            return Err(Stop::Failed(
                "tenant.mailbox_sku is not set: cannot license a mailbox".into(),
            ));
        };
        if self.obj.kind == Kind::MailUser {
            // Licensing the MailUser converts it in place; it is never deleted first.
            self.license(&id, &sku).await?;
            self.obj.kind = Kind::Mailbox;
            self.applied(&[]).await?;
        }
        if self.changed(&GRAPH_FIELDS) {
            self.patch_graph(&id, false, Some(true)).await?;
        }
        self.set_recipient(&id, Kind::Mailbox, false).await
    }

    async fn lifecycle(&mut self, enable: bool) -> Result<(), Stop> {
        let id = self.tenant_id()?;
        let kind = self.obj.kind;
        let hidden = if enable {
            self.after(HIDDEN).and_then(Value::as_bool).unwrap_or(false)
        } else {
            true
        };
        self.set_hidden(&id, kind, hidden).await?;
        // MailUsers never sign in; only a mailbox's sign-in is blocked and unblocked.
        let enabled = enable && kind == Kind::Mailbox;
        let graph = self.ctx.tenant.graph();
        self.step(
            "PATCH accountEnabled",
            graph.update_user(&id, &json!({ "accountEnabled": enabled })),
        )
        .await?;
        if enable {
            self.obj.stage = Stage::Active;
            self.obj.disabled_at = None;
            self.obj.delete_due_at = None;
            self.applied(&GRAPH_FIELDS).await?;
            self.applied(&EXCHANGE_FIELDS).await
        } else {
            self.obj.stage = Stage::Disabled;
            self.obj.disabled_at = Some(self.ctx.now);
            self.obj.delete_due_at =
                Some(self.ctx.now + i64::from(self.ctx.config.safety.grace_period_days) * 86_400);
            self.applied(&[HIDDEN]).await
        }
    }

    async fn delete(&mut self) -> Result<(), Stop> {
        let id = self.tenant_id()?;
        match self.obj.kind {
            Kind::MailUser => {
                let ex = self.ctx.tenant.exchange();
                self.step("Remove-MailUser", ex.remove_mail_user(&id))
                    .await?;
            }
            Kind::Mailbox => {
                let graph = self.ctx.tenant.graph();
                self.step("DELETE /users", graph.delete_user(&id)).await?;
            }
        }
        self.obj.stage = Stage::Deleted;
        self.obj.deleted_at = Some(self.ctx.now);
        self.applied(&[]).await
    }
}

/// The Graph body fields of the address-book attributes, for a create.
fn graph_user_fields(job: &Job) -> GraphUser {
    GraphUser {
        given_name: job.after_str("givenName"),
        surname: job.after_str("surname"),
        department: job.after_str("department"),
        job_title: job.after_str("jobTitle"),
        office_location: job.after_str("officeLocation"),
        business_phones: job.after_str("businessPhones").map(|p| vec![p]),
        mobile_phone: job.after_str("mobilePhone"),
        company_name: job.after_str("companyName"),
        ..GraphUser::default()
    }
}

fn extension_attributes(attribute: &str, stamp: &str) -> crate::tenant::graph::ExtensionAttributes {
    serde_json::from_value(json!({ attribute: stamp })).unwrap_or_default()
}

/// `extensionAttribute15` (Graph) is `CustomAttribute15` (Exchange).
fn custom_attribute(graph_name: &str) -> String {
    graph_name.replace("extensionAttribute", "CustomAttribute")
}

fn strings(v: Option<&Value>) -> impl Iterator<Item = String> + '_ {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
}

/// A password nobody will use (MailUsers cannot sign in; mailbox owners reset theirs), but
/// one that satisfies Entra's complexity rules: 32 characters from the system's randomness.
fn random_password() -> Secret {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    let filled = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    if !filled {
        // Without /dev/urandom, fall back on the hasher's per-process random keys.
        use std::hash::{BuildHasher, Hasher};
        for chunk in bytes.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(chunk.len() as u64);
            chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
        }
    }
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let body: String = bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    // One of each class, so the complexity rule holds whatever the random part drew.
    Secret::new(format!("Aa9!{body}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_random_and_complex() {
        let a = random_password();
        let b = random_password();
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().len() >= 28);
        assert!(a.expose().chars().any(|c| c.is_ascii_uppercase()));
        assert!(a.expose().chars().any(|c| c.is_ascii_digit()));
    }

    #[test]
    fn custom_attribute_names_follow_graph_names() {
        assert_eq!(
            custom_attribute("extensionAttribute15"),
            "CustomAttribute15"
        );
        assert_eq!(custom_attribute("extensionAttribute3"), "CustomAttribute3");
    }
}
