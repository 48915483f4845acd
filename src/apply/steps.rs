//! The journaled steps of an action: how a tenant call is recorded, how an object the service
//! has just created (and does not show yet) is waited for, and the create, restore and
//! address steps that need more than one call.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Job, Stop, full_address_list, random_password, strings};
use crate::desired::Kind;
use crate::inventory::smtp_proxy;
use crate::plan::Field;
use crate::plan::{NEW_MAIL_USER_FIELDS, POST_USER_FIELDS};
use crate::state::Stage;
use crate::tenant::TenantError;
use crate::tenant::exchange::{NewMailUser, hashtable};
use crate::tenant::graph::{ExtensionAttributes, GraphUser};

/// Journal result of a create whose answer never came: the object may exist.
const UNKNOWN: &str = "unknown";

/// Calls `call` while it fails with an error `retry` says to wait out (most often 404: an
/// object the service created a moment ago, or a value still propagating between Exchange and
/// Graph, is not visible at once), with backoff, for at most `wait`.
///
/// With a `slot`, the action gives up its worker slot while it sleeps, so the others use the
/// services meanwhile (see [`super::Workers`]).
pub(crate) async fn until_visible<T, F, Fut>(
    wait: Duration,
    uid: &str,
    call: &mut F,
    retry: &dyn Fn(&TenantError) -> bool,
    slot: Option<&super::Slot<'_>>,
) -> Result<T, TenantError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, TenantError>>,
{
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(250);
    loop {
        match call().await {
            Err(e) if retry(&e) && Instant::now() + pause <= deadline => {
                tracing::debug!(
                    uid,
                    wait_ms = pause.as_millis() as u64,
                    reason = %e,
                    "not visible or not free yet; waiting"
                );
                match slot {
                    Some(slot) => slot.park(tokio::time::sleep(pause)).await,
                    None => tokio::time::sleep(pause).await,
                }
                pause = (pause * 2).min(Duration::from_secs(4));
            }
            other => return other,
        }
    }
}

impl Job<'_, '_> {
    /// Runs one tenant call as a journaled step.
    pub(super) async fn step<T>(
        &self,
        name: &str,
        call: impl Future<Output = Result<T, TenantError>>,
    ) -> Result<T, Stop> {
        let row = self.journal_start(name).await?;
        match call.await {
            Ok(v) => {
                self.journal_finish(row, "ok", self.obj.tenant_object_id.as_deref())
                    .await?;
                Ok(v)
            }
            Err(e) => Err(self.failed(row, name, e).await?),
        }
    }

    /// A step on an object the service may not show yet: a 404 right after our own create
    /// (or while a value propagates between Exchange and Graph) is waited out with backoff
    /// for at most [`super::Context::visibility_wait`]; any other answer ends the wait.
    pub(super) async fn step_visible<T, F, Fut>(&self, name: &str, mut call: F) -> Result<T, Stop>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, TenantError>>,
    {
        let row = self.journal_start(name).await?;
        let fresh = self
            .created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let answer = match fresh {
            None => self.until_visible(&mut call).await,
            Some((create, at)) => {
                // The first call on an object this action just made: wait, parked, as long
                // as such objects have taken to become visible, then learn from the tries.
                let workers = self.slot.workers;
                let wait = workers.visible_after(&create).saturating_sub(at.elapsed());
                if !wait.is_zero() {
                    self.slot.park(tokio::time::sleep(wait)).await;
                }
                let answered = std::cell::RefCell::new(Vec::new());
                let answer = self
                    .until_visible(&mut || {
                        let (reply, answered) = (call(), &answered);
                        async move {
                            let reply = reply.await;
                            answered.borrow_mut().push(at.elapsed());
                            reply
                        }
                    })
                    .await;
                if answer.is_ok() {
                    workers.learn_visible_after(&create, &answered.into_inner());
                }
                answer
            }
        };
        match answer {
            Ok(v) => {
                self.journal_finish(row, "ok", self.obj.tenant_object_id.as_deref())
                    .await?;
                Ok(v)
            }
            Err(e) => Err(self.failed(row, name, e).await?),
        }
    }

    async fn until_visible<T, F, Fut>(&self, call: &mut F) -> Result<T, TenantError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, TenantError>>,
    {
        until_visible(
            self.ctx.visibility_wait,
            &self.action.uid,
            call,
            &|e| matches!(e, TenantError::NotFound { .. }) || self.waits_for_release(e),
            Some(self.slot),
        )
        .await
    }

    /// Whether `e` refuses something a release action of this run has just given up: Exchange
    /// frees a removed address only after a while (MicrosoftDocs/OfficeDocs-Support#46), so
    /// the claim is tried again within the propagation wait instead of reported at once.
    fn waits_for_release(&self, e: &TenantError) -> bool {
        let released = self.released;
        if released.is_empty() {
            return false;
        }
        match e {
            TenantError::AddressInUse { address, .. } => {
                released.contains(&address.to_ascii_lowercase())
            }
            // Graph's conflicts do not say which value: any claim of a released one counts.
            TenantError::Conflict { .. } => crate::plan::claimed_values(&self.action.changes)
                .iter()
                .any(|v| released.contains(v)),
            _ => false,
        }
    }

    pub(super) async fn journal_start(&self, name: &str) -> Result<i64, Stop> {
        Ok(self
            .ctx
            .store
            .journal_start(
                self.ctx.run_id,
                &self.action.anchor,
                self.action.op.as_str(),
                name,
                self.ctx.now,
            )
            .await?)
    }

    pub(super) async fn journal_finish(
        &self,
        row: i64,
        result: &str,
        detail: Option<&str>,
    ) -> Result<(), Stop> {
        self.ctx
            .store
            .journal_finish(row, result, detail, self.ctx.now)
            .await?;
        Ok(())
    }

    /// Journals a failed step with the service's reason; an address, UPN or Name someone
    /// else holds is a conflict, not a failure of ours.
    pub(super) async fn failed(&self, row: i64, name: &str, e: TenantError) -> Result<Stop, Stop> {
        let text = e.to_string();
        self.journal_finish(row, "failed", Some(&text)).await?;
        Ok(match e {
            TenantError::AddressInUse { .. } | TenantError::Conflict { .. } => {
                Stop::Conflict(format!("{name}: {text}"))
            }
            TenantError::NoLicensesLeft { .. } => Stop::NoLicence(format!("{name}: {text}")),
            _ => Stop::Failed(format!("{name}: {text}")),
        })
    }

    /// Creates the person, or adopts the object an earlier run created.
    pub(super) async fn create(&mut self) -> Result<(), Stop> {
        if let Some(ids) = self.ctx.inventory.duplicates.get(&self.action.anchor) {
            return Err(Stop::Failed(format!(
                "the stamp {} is on {} objects ({}); creating none until they are resolved",
                self.stamp(),
                ids.len(),
                ids.join(", ")
            )));
        }
        if let Some(t) = self.seen() {
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
        let earlier = self.earlier_create().await?;
        if earlier.is_none() {
            self.refuse_foreign()?;
        }
        match self.action.kind {
            Kind::MailUser => self.create_mail_user(earlier).await,
            Kind::Mailbox => self.create_mailbox(earlier).await,
        }
    }

    /// A person deleted within the last 30 days comes back by restoring their object from the
    /// tenant's recycle bin (it still holds their addresses, so a new one could not have
    /// them), then every field is brought up to date. False when the recycle bin has nothing
    /// for them (Graph answers 404): only then is a new object created. Any other failure
    /// (throttling, an outage, a missing permission) fails the action; the next run retries
    /// the restore rather than making a second object.
    async fn restore(&mut self) -> Result<bool, Stop> {
        let Some(id) = self.obj.tenant_object_id.clone() else {
            return Ok(false);
        };
        let graph = self.ctx.tenant.graph();
        let name = "restore deleted user";
        let row = self.journal_start(name).await?;
        match graph.restore_user(&id).await {
            Ok(_) => self.journal_finish(row, "ok", Some(&id)).await?,
            Err(TenantError::NotFound { .. }) => {
                self.journal_finish(
                    row,
                    "skipped",
                    Some("not in the recycle bin: purged or never soft-deleted"),
                )
                .await?;
                return Ok(false);
            }
            Err(e) => return Err(self.failed(row, name, e).await?),
        }
        tracing::info!(uid = %self.action.uid, id = %id, "restored from the recycle bin");
        // The restored object holds what was last applied (hidden, blocked): bring every
        // field that differs from that up to date, and show and unblock it.
        self.before = self.obj.attributes.clone();
        let kind = self.obj.kind;
        self.extra.insert(
            Field::AccountEnabled,
            json!(self.action.kind == Kind::Mailbox),
        );
        let mut fields: BTreeSet<Field> = self.changed_fields()?;
        fields.insert(Field::HiddenFromAddressLists);
        fields.insert(Field::AccountEnabled);
        if kind == self.action.kind {
            self.write_changes(&id, kind, &fields).await?;
        } else {
            self.convert().await?;
            self.write_changes(&id, Kind::Mailbox, &[Field::AccountEnabled].into())
                .await?;
        }
        // Fields the restore brought back unchanged count as handled too.
        let unchanged: Vec<Field> = self
            .changed_fields()?
            .into_iter()
            .filter(|f| !self.handled.contains(f) && !self.deferred.contains_key(f))
            .collect();
        self.applied(&unchanged).await?;
        Ok(true)
    }

    /// The object an earlier run created for this person but could not stamp or record: a
    /// successful create step whose object still exists, or a create whose answer never came
    /// (`pending` after a crash, `unknown` after a lost response) or whose object does not
    /// show under its id yet, and whose object the tenant shows under exactly the UPN and
    /// Name (or alias) we chose.
    async fn earlier_create(&mut self) -> Result<Option<String>, Stop> {
        let journal = self.ctx.store.journal(&self.action.anchor).await?;
        let creates = journal
            .iter()
            .filter(|j| j.step.starts_with("New-MailUser") || j.step.starts_with("POST /users"));
        let mut ok_id = self.obj.tenant_object_id.clone();
        let mut unsure = false;
        for j in creates {
            match j.result.as_str() {
                "ok" => {
                    if let Some(id) = j.detail.as_deref().and_then(|d| d.strip_prefix("created ")) {
                        ok_id = Some(id.to_owned());
                    }
                    // Only a doubt after the last create that answered counts.
                    unsure = false;
                }
                "pending" | UNKNOWN => unsure = true,
                _ => {}
            }
        }
        if let Some(id) = ok_id {
            if let Some(found) = self.still_there(&id).await? {
                return Ok(Some(found));
            }
            // Not (yet) shown under its id: an object made moments before a crash may not be
            // resolvable by id for a while, so look for it by what we chose, with proof.
            unsure = true;
        }
        if unsure {
            return self.find_own_create().await;
        }
        Ok(None)
    }

    /// Whether the object `id` an earlier create made still exists, asked of the directory
    /// that made it (Graph may not show a new MailUser yet).
    async fn still_there(&self, id: &str) -> Result<Option<String>, Stop> {
        let found = match self.action.kind {
            Kind::MailUser => {
                let ex = self.ctx.tenant.exchange();
                self.step("Get-Recipient (earlier create)", ex.get_recipient(id))
                    .await?
                    .is_some()
            }
            Kind::Mailbox => {
                let graph = self.ctx.tenant.graph();
                self.step(
                    "GET /users (earlier create)",
                    graph.get_user(id, &["id", "userPrincipalName"]),
                )
                .await?
                .is_some()
            }
        };
        Ok(found.then(|| id.to_owned()))
    }

    /// Looks for the object a create whose answer never came may have made. Proof that it
    /// is ours: exactly the planned UPN, the planned Name (a MailUser) or alias (a mailbox),
    /// and no stamp other than ours.
    async fn find_own_create(&self) -> Result<Option<String>, Stop> {
        let Some(upn) = self.after_str(Field::UserPrincipalName) else {
            return Ok(None);
        };
        let stamp_attr = &self.ctx.config.tenant.anchor_attribute;
        let ours = |s: Option<&str>| s.is_none_or(|s| s.is_empty() || s == self.stamp());
        match self.action.kind {
            Kind::MailUser => {
                // By the Name we chose (unique among recipients, and an identity every
                // cmdlet documents); the UPN is then checked on what comes back. An object
                // made a moment ago answers 404 for a while: wait for it within the
                // propagation wait before concluding it does not exist.
                let Some(name) = self.after_str(Field::Name) else {
                    return Ok(None);
                };
                let ex = self.ctx.tenant.exchange();
                let step = "Get-Recipient (unsure create)";
                let row = self.journal_start(step).await?;
                let lookup = self
                    .until_visible(&mut || async {
                        ex.get_recipient(&name)
                            .await?
                            .ok_or_else(|| TenantError::NotFound {
                                service: crate::tenant::Service::Exchange,
                                what: name.clone(),
                            })
                    })
                    .await;
                let found = match lookup {
                    Ok(r) => {
                        self.journal_finish(row, "ok", Some("found")).await?;
                        Some(r)
                    }
                    Err(TenantError::NotFound { .. }) => {
                        self.journal_finish(row, "ok", Some("not found")).await?;
                        None
                    }
                    Err(e) => return Err(self.failed(row, step, e).await?),
                };
                let custom = self.stamp_parameter();
                Ok(found
                    .filter(|r| {
                        let text = |k: &str| r.get(k).and_then(Value::as_str);
                        text("WindowsLiveID").is_some_and(|u| u.eq_ignore_ascii_case(&upn))
                            && text("Name") == Some(name.as_str())
                            && ours(text(&custom))
                    })
                    .and_then(|r| r["ExternalDirectoryObjectId"].as_str().map(str::to_owned)))
            }
            Kind::Mailbox => {
                let graph = self.ctx.tenant.graph();
                let step = "GET /users (unsure create)";
                let row = self.journal_start(step).await?;
                let select = ["id", "mailNickname", "onPremisesExtensionAttributes"];
                let lookup = self
                    .until_visible(&mut || async {
                        graph
                            .get_user(&upn, &select)
                            .await?
                            .ok_or_else(|| TenantError::NotFound {
                                service: crate::tenant::Service::Graph,
                                what: upn.clone(),
                            })
                    })
                    .await;
                let found = match lookup {
                    Ok(u) => {
                        self.journal_finish(row, "ok", Some("found")).await?;
                        Some(u)
                    }
                    Err(TenantError::NotFound { .. }) => {
                        self.journal_finish(row, "ok", Some("not found")).await?;
                        None
                    }
                    Err(e) => return Err(self.failed(row, step, e).await?),
                };
                Ok(found
                    .filter(|u| {
                        u.mail_nickname.as_deref() == self.after_str(Field::MailNickname).as_deref()
                            && ours(
                                u.on_premises_extension_attributes
                                    .as_ref()
                                    .and_then(|e| e.get(stamp_attr)),
                            )
                    })
                    .and_then(|u| u.id))
            }
        }
    }

    /// The UPN, the primary address and the Name must be free of unmanaged owners; an alias
    /// held by one is left out later and reported, while the person is still created.
    fn refuse_foreign(&self) -> Result<(), Stop> {
        let inv = self.ctx.inventory;
        let mut wanted: Vec<(&str, String)> = Vec::new();
        wanted.extend(self.after_str(Field::UserPrincipalName).map(|v| ("UPN", v)));
        wanted.extend(
            self.after_str(Field::PrimarySmtpAddress)
                .map(|v| ("primary address", v)),
        );
        for (what, w) in wanted {
            if let Some(owner) = inv.foreign.get(&w.to_ascii_lowercase()) {
                return Err(Stop::Conflict(format!(
                    "{what} {w} already belongs to {owner}, which ldap2exo does not manage; nothing was created (adopt or rename it by hand)"
                )));
            }
        }
        if self.action.kind == Kind::MailUser
            && let Some(name) = self.after_str(Field::Name)
            && let Some(owner) = inv.foreign_names.get(&name.to_lowercase())
        {
            return Err(Stop::Conflict(format!(
                "the Exchange Name {name} is taken by {owner}; nothing was created"
            )));
        }
        Ok(())
    }

    /// A create step: `pending` while in flight, then `ok` with the new id, `unknown` when the
    /// request left but no answer says whether it ran, or `failed`.
    async fn create_step<T, F, Fut>(
        &self,
        name: &str,
        mut call: F,
        id_of: impl Fn(&T) -> Option<String>,
    ) -> Result<Result<(String, T), TenantError>, Stop>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, TenantError>>,
    {
        let row = self.journal_start(name).await?;
        // A refusal of an address this run released is definite (the object was not made),
        // so the create is sent again once Exchange frees it; nothing else is repeated.
        let answer = until_visible(
            self.ctx.visibility_wait,
            &self.action.uid,
            &mut call,
            &|e| self.waits_for_release(e),
            Some(self.slot),
        )
        .await;
        match answer {
            Ok(created) => match id_of(&created) {
                Some(id) => {
                    *self.created.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((name.to_owned(), Instant::now()));
                    self.journal_finish(row, "ok", Some(&format!("created {id}")))
                        .await?;
                    Ok(Ok((id, created)))
                }
                None => {
                    self.journal_finish(row, UNKNOWN, Some("no object id in the answer"))
                        .await?;
                    Err(Stop::Failed(format!(
                        "{name} answered without an object id; the next run looks for the object"
                    )))
                }
            },
            Err(e) if e.is_ambiguous() => {
                self.journal_finish(row, UNKNOWN, Some(&e.to_string()))
                    .await?;
                Ok(Err(e))
            }
            // A replay (after a lost answer) of a create that did run is refused as a
            // conflict: the object may be the one this very request made. Whether it is,
            // `find_own_create` decides, by proof.
            Err(e @ (TenantError::Conflict { .. } | TenantError::AddressInUse { .. })) => {
                self.journal_finish(row, UNKNOWN, Some(&e.to_string()))
                    .await?;
                Ok(Err(e))
            }
            Err(e) => Err(self.failed(row, name, e).await?),
        }
    }

    /// After a create whose answer never came: adopt the object when it is found with proof,
    /// else fail the action (the next run looks again; nothing is created twice meanwhile).
    async fn after_unsure_create(&self, name: &str, e: TenantError) -> Result<String, Stop> {
        match self.find_own_create().await? {
            Some(id) => {
                tracing::info!(uid = %self.action.uid, id = %id, "the create's answer was lost; found and adopted its object");
                // The doubt is settled: journal the create as answered, so that no later
                // create of this person looks for this object again.
                let row = self
                    .journal_start(&format!("{name} (found after a lost answer)"))
                    .await?;
                self.journal_finish(row, "ok", Some(&format!("created {id}")))
                    .await?;
                Ok(id)
            }
            None if e.is_ambiguous() => Err(Stop::Failed(format!(
                "{name}: the outcome is unknown ({e}); the next run looks for the object by its UPN before creating anything"
            ))),
            // Not ours after all: somebody else holds the UPN, address or Name.
            None => Err(Stop::Conflict(format!("{name}: {e}"))),
        }
    }

    async fn create_mail_user(&mut self, earlier: Option<String>) -> Result<(), Stop> {
        let ex = self.ctx.tenant.exchange();
        let (id, current) = match earlier {
            Some(id) => (id, None),
            None => {
                let m = NewMailUser {
                    name: self
                        .after_str(Field::Name)
                        .unwrap_or_else(|| self.action.uid.clone()),
                    alias: self.after_str(Field::MailNickname).unwrap_or_default(),
                    display_name: self.after_str(Field::DisplayName).unwrap_or_default(),
                    first_name: self.after_str(Field::GivenName),
                    last_name: self.after_str(Field::Surname),
                    external_email_address: self
                        .after_str(Field::ExternalEmailAddress)
                        .unwrap_or_default(),
                    user_principal_name: self.after_str(Field::UserPrincipalName),
                    password: Some(random_password()),
                };
                let created = self
                    .create_step(
                        "New-MailUser",
                        || ex.new_mail_user(&m),
                        |v: &Value| {
                            v.get("ExternalDirectoryObjectId")
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                        },
                    )
                    .await?;
                match created {
                    Ok((id, obj)) => {
                        let proxies: Vec<String> = strings(obj.get("EmailAddresses")).collect();
                        (id, Some(proxies).filter(|p| !p.is_empty()))
                    }
                    Err(e) => (self.after_unsure_create("New-MailUser", e).await?, None),
                }
            }
        };
        let new = current.is_some();
        self.obj.tenant_object_id = Some(id.clone());
        self.obj.kind = Kind::MailUser;
        if new {
            self.applied(&NEW_MAIL_USER_FIELDS).await?;
        } else {
            // Found again: made by an earlier run with what LDAP said then. Its values are
            // recorded only as they are sent below.
            self.applied(&[]).await?;
        }

        let changed = self.changed_fields()?;
        // An object found again was made by an earlier run with what LDAP said then: give it
        // every value, not only what New-MailUser leaves out.
        let mut recipient: BTreeSet<Field> = changed
            .iter()
            .copied()
            .filter(|f| {
                f.writer() == crate::plan::Writer::SetRecipient
                    && (!new || !NEW_MAIL_USER_FIELDS.contains(f))
            })
            .collect();
        // The stamp rides in the first Set-MailUser with the rest (one cmdlet less per
        // person, and Exchange is the binding budget). When that call is refused (an
        // address somebody else holds that the inventory could not see), the stamp is sent
        // alone before the refusal is reported: the object must stay recognisably ours.
        recipient.insert(Field::Anchor);
        if let Err(refused) = self
            .set_recipient(&id, Kind::MailUser, &recipient, current)
            .await
        {
            let stamp = json!({ self.stamp_parameter(): self.stamp() });
            self.step_visible("Set-MailUser stamp", || {
                ex.set_mail_user(&id, stamp.clone())
            })
            .await?;
            return Err(refused);
        }
        let user: BTreeSet<Field> = changed
            .iter()
            .copied()
            .filter(|f| {
                f.writer() == crate::plan::Writer::SetUser
                    && (!new || !NEW_MAIL_USER_FIELDS.contains(f))
            })
            .collect();
        if !user.is_empty() {
            self.set_user(&id, &user).await?;
        }
        self.block_sign_in(&id).await
    }

    /// MailUsers never sign in. Graph may not show an object `New-MailUser` made for a
    /// while: when it still does not after the wait, the next run's inventory shows the
    /// account enabled and the plan blocks it then.
    async fn block_sign_in(&mut self, id: &str) -> Result<(), Stop> {
        // Graph shows a new MailUser only after a delay; waiting here would hold a worker
        // per person. The blocker sends it with others once Graph has most likely caught up
        // (see `super::sign_ins`). It is gone only when the run is failing on its state
        // store; the next run's inventory then sees the account enabled and plans it.
        let _ = self.late.send(super::sign_ins::NewMailUser {
            anchor: self.action.anchor.clone(),
            uid: self.action.uid.clone(),
            id: id.to_owned(),
        });
        Ok(())
    }

    async fn create_mailbox(&mut self, earlier: Option<String>) -> Result<(), Stop> {
        let sku = self.mailbox_sku()?;
        let graph = self.ctx.tenant.graph();
        // `new`: this action's own POST made the object (an adopted one was made by an
        // earlier run, with what LDAP said then, so nothing of it counts as written yet).
        let licensed = self.seen().is_some_and(|t| t.exchange_licensed);
        let (id, new) = match earlier {
            Some(id) => (id, false),
            None => {
                if !licensed {
                    self.licence_free(&sku).await?;
                }
                let user = GraphUser {
                    account_enabled: Some(true),
                    user_principal_name: self.after_str(Field::UserPrincipalName),
                    display_name: self.after_str(Field::DisplayName),
                    mail_nickname: self.after_str(Field::MailNickname),
                    usage_location: self.ctx.config.tenant.usage_location.clone(),
                    on_premises_extension_attributes: Some(self.stamp_attributes()),
                    given_name: self.after_str(Field::GivenName),
                    surname: self.after_str(Field::Surname),
                    department: self.after_str(Field::Department),
                    job_title: self.after_str(Field::JobTitle),
                    office_location: self.after_str(Field::OfficeLocation),
                    business_phones: self.after_str(Field::BusinessPhones).map(|p| vec![p]),
                    mobile_phone: self.after_str(Field::MobilePhone),
                    company_name: self.after_str(Field::CompanyName),
                    ..GraphUser::default()
                };
                let password = random_password();
                let created = self
                    .create_step(
                        "POST /users",
                        || graph.create_user(&user, &password),
                        |u: &GraphUser| u.id.clone(),
                    )
                    .await?;
                match created {
                    Ok((id, _)) => (id, true),
                    Err(e) => (self.after_unsure_create("POST /users", e).await?, false),
                }
            }
        };
        self.obj.tenant_object_id = Some(id.clone());
        self.obj.kind = Kind::Mailbox;
        self.obj
            .attributes
            .insert(Field::AccountEnabled, json!(true));
        if new {
            self.applied(&POST_USER_FIELDS).await?;
        } else {
            self.applied(&[]).await?;
        }
        if !licensed {
            match self.license(&id, &sku).await {
                Err(Stop::NoLicence(why)) => return Err(self.unlicensed(&id, why).await),
                other => other?,
            }
        }
        let mut rest = self.changed_fields()?;
        rest.retain(|f| !self.handled.contains(f));
        self.write_changes(&id, Kind::Mailbox, &rest).await
    }

    /// Right before `POST /users` for a new mailbox person: a fresh `GET /subscribedSkus`
    /// says whether a unit of the mailbox licence is still free. The plan weighed the
    /// licences it needs against those free when the tenant was read, but somebody else may
    /// have taken the last one since (a run of thousands of creates takes an hour). With
    /// none free, nothing is created: an Entra user without a mailbox would be a half-made
    /// person, and one that cannot be taken back cleanly (see [`Self::unlicensed`]).
    async fn licence_free(&self, sku: &str) -> Result<(), Stop> {
        let graph = self.ctx.tenant.graph();
        let skus = self
            .step("GET /subscribedSkus", graph.subscribed_skus())
            .await?;
        match crate::inventory::LicencePool::of(&skus, sku) {
            Some(pool) if pool.free() == 0 => Err(Stop::NoLicence(format!(
                "no licence of {} free ({} of {} in use) when the person was about to be created; nothing was created, the next run creates them once one is free",
                pool.sku, pool.consumed, pool.enabled
            ))),
            Some(_) => Ok(()),
            None => Err(Stop::Failed(format!(
                "the tenant has no subscription for the mailbox licence {sku} (tenant.mailbox_sku); nothing was created"
            ))),
        }
    }

    /// `assignLicense` refused a user this very action created: the last free unit went
    /// between [`Self::licence_free`] and now (another worker of this run, or somebody else).
    ///
    /// The user is kept, not deleted: `DELETE /users` only soft-deletes, and a soft-deleted
    /// user keeps its UPN and addresses reserved (TENANT_FACTS), so the person could not be
    /// created again for a while; purging it from the recycle bin is not available to an
    /// application ("Permanently delete an item (directory object)": user, application
    /// permission "Not supported"). Instead its sign-in is blocked (nobody can use the
    /// account meanwhile) and it stays recorded as this person's object, stamped: the next
    /// run's inventory shows it unlicensed, the plan counts the licence it needs (holding it
    /// while none is free, sending nothing) and, once one is free, licenses it and writes the
    /// rest. Nothing is created twice.
    async fn unlicensed(&mut self, id: &str, why: String) -> Stop {
        let graph = self.ctx.tenant.graph();
        let patch = json!({ "accountEnabled": false });
        let blocked = self
            .step_visible("PATCH accountEnabled (unlicensed)", || {
                graph.update_user(id, &patch)
            })
            .await;
        let blocked = match blocked {
            Ok(()) => {
                self.obj
                    .attributes
                    .insert(Field::AccountEnabled, json!(false));
                if let Err(Stop::State(e)) = self.applied(&[]).await {
                    return Stop::State(e);
                }
                "its sign-in is blocked"
            }
            Err(Stop::State(e)) => return Stop::State(e),
            Err(_) => "blocking its sign-in failed too",
        };
        Stop::NoLicence(format!(
            "{why}: the user {id} was created but got no mailbox ({blocked}); the next run licenses it once a licence is free"
        ))
    }

    fn stamp_attributes(&self) -> ExtensionAttributes {
        serde_json::from_value(
            json!({ self.ctx.config.tenant.anchor_attribute.clone(): self.stamp() }),
        )
        .unwrap_or_default()
    }

    /// The planned primary and the other addresses (aliases and retained former primaries),
    /// lower case, from `values`.
    fn address_set(
        &self,
        values: &dyn Fn(Field) -> Option<Value>,
    ) -> (Option<String>, BTreeSet<String>) {
        let primary =
            values(Field::PrimarySmtpAddress).and_then(|v| v.as_str().map(str::to_ascii_lowercase));
        let mut rest: BTreeSet<String> = strings(values(Field::EmailAddresses).as_ref())
            .map(|a| a.to_ascii_lowercase())
            .collect();
        rest.extend(
            strings(values(Field::RetainedAddresses).as_ref()).map(|a| a.to_ascii_lowercase()),
        );
        if let Some(p) = &primary {
            rest.remove(p);
        }
        (primary, rest)
    }

    /// The `-EmailAddresses` value that takes the object from `current` to the planned
    /// addresses, or `None` when nothing changes. Only what changed is added or removed, and
    /// nothing the object already has is added again. A new primary is written as a full
    /// list built from a fresh read, with exactly one `SMTP:` and every address the tenant
    /// added kept (TENANT_FACTS, Addresses). Addresses somebody else holds are left out and
    /// recorded in `self.conflicts`.
    pub(super) async fn addresses_param(
        &mut self,
        id: &str,
        current: Vec<String>,
    ) -> Result<Option<Value>, Stop> {
        let (p_before, s_before) = self.address_set(&|f| self.before.get(f.as_str()).cloned());
        let (p_after, s_after) = self.address_set(&|f| self.after(f).cloned());
        let inv = self.ctx.inventory;
        let mut current = current;
        let now_primary = |current: &[String]| {
            current.iter().find_map(|c| {
                smtp_proxy(c)
                    .filter(|(p, _)| *p)
                    .map(|(_, a)| a.to_ascii_lowercase())
            })
        };
        let primary_changes = |current: &[String]| {
            p_after.is_some()
                && (p_after != p_before || (!current.is_empty() && now_primary(current) != p_after))
        };
        // An object adopted or restored in this action was not in the inventory's view of
        // ours: read what it holds before deciding anything.
        if !self.fresh_read && (current.is_empty() || primary_changes(&current)) {
            current = self.fresh_proxies(id).await?;
        }
        let have: BTreeSet<String> = current
            .iter()
            .filter_map(|c| smtp_proxy(c).map(|(_, a)| a.to_ascii_lowercase()))
            .collect();
        // What the object itself holds is nobody else's, whatever the inventory said of it
        // before it was adopted.
        let foreign = |a: &String| inv.foreign.get(a).filter(|_| !have.contains(a));
        if let Some(p) = &p_after
            && let Some(owner) = foreign(p)
        {
            return Err(Stop::Conflict(format!(
                "the primary address {p} belongs to {owner}, which ldap2exo does not manage; the addresses were left as they are"
            )));
        }
        let mut add = BTreeSet::new();
        let mut conflicts = Vec::new();
        for a in s_after.iter() {
            if have.contains(a) || Some(a) == p_after.as_ref() {
                continue;
            }
            match foreign(a) {
                Some(owner) => {
                    conflicts.push((
                        a.clone(),
                        format!("alias {a} belongs to {owner}, which ldap2exo does not manage"),
                    ));
                }
                None => {
                    add.insert(a.clone());
                }
            }
        }
        for (a, why) in conflicts {
            self.conflicting.insert(a);
            self.conflicts.push(why);
        }
        let mut remove: BTreeSet<String> = s_before
            .difference(&s_after)
            .filter(|a| Some(*a) != p_after.as_ref() && have.contains(*a))
            .cloned()
            .collect();
        if primary_changes(&current) {
            let p = p_after.clone().unwrap_or_default();
            // The old primary stays as an alias only when the plan keeps it, or when it is the
            // MOERA the tenant gave the object (a leaver's stand-in primary while an address
            // changed hands): the tenant's own addresses are never removed.
            if let Some(old) = &p_before
                && !s_after.contains(old)
                && *old != p
                && !crate::inventory::is_service_address(old)
            {
                remove.insert(old.clone());
            }
            return Ok(Some(json!(full_address_list(&current, &p, &add, &remove))));
        }
        if add.is_empty() && remove.is_empty() {
            return Ok(None);
        }
        let add: Vec<String> = add.into_iter().map(|a| format!("smtp:{a}")).collect();
        let remove: Vec<String> = remove.into_iter().map(|a| format!("smtp:{a}")).collect();
        Ok(Some(hashtable(&add, &remove)))
    }

    /// The object's proxy addresses as Exchange shows them now.
    async fn fresh_proxies(&mut self, id: &str) -> Result<Vec<String>, Stop> {
        let ex = self.ctx.tenant.exchange();
        let found = self
            .step_visible("Get-Recipient", || async {
                match ex.get_recipient(id).await? {
                    Some(r) => Ok(r),
                    None => Err(TenantError::NotFound {
                        service: crate::tenant::Service::Exchange,
                        what: id.to_owned(),
                    }),
                }
            })
            .await?;
        self.fresh_read = true;
        Ok(strings(found.get("EmailAddresses")).collect())
    }

    /// Records the planned addresses minus those somebody else holds (the next run tries
    /// them again and reports them again).
    pub(super) async fn record_addresses_without_conflicts(&mut self) -> Result<(), Stop> {
        let kept: Vec<Value> = strings(self.after(Field::EmailAddresses))
            .filter(|a| !self.conflicting.contains(&a.to_ascii_lowercase()))
            .map(Value::String)
            .collect();
        self.obj
            .attributes
            .insert(Field::EmailAddresses, Value::Array(kept));
        self.handled.insert(Field::EmailAddresses);
        self.ctx.store.upsert_object(&self.obj).await?;
        Ok(())
    }
}
