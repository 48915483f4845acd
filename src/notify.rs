//! notify: failures and safety stops mailed to the people who must act, through the site's
//! own SMTP relay (`[notify]`).
//!
//! The people who approve a held run or fix a broken LDAP bind often read only mail. At the
//! end of each real run (`sync`, `apply`, each `daemon` run; never a dry run or a plan) the
//! caller builds a [`Notice`] from the run and hands it to [`after_run`], which sends it,
//! logs what happened and never fails the run: a mail problem is a WARN, not a failed sync.
//!
//! A notice says what happened, the safety gate's reasons, the exact command that approves
//! held removals, the first failed or conflicted actions (uid, op, reason) and where to look
//! next. It carries no secret: nothing of the configuration's secrets is ever put in, and
//! whatever error text the caller passes is scrubbed of every configured secret before
//! sending. It names people only by uid, as the report does.
//!
//! The relay connection is STARTTLS by default and refuses to send in clear when the server
//! does not offer it; credentials (AUTH) only ever travel over TLS (`tls = "none"` with a
//! username is a configuration error).
//!
//! # Rate limit
//!
//! Every attempt is recorded in the state store's `notifications` table, so the limit holds
//! across restarts. A problem notice (`failed`, `partial`, `blocked`, `interrupted`) is held
//! back ([`Delivery::Suppressed`]) only when all three hold:
//!
//! - a notice of the same kind was sent less than `notify.min_interval_minutes` ago;
//! - the last notice sent, of any kind, was of that same kind (a change of kind, e.g. a
//!   failure after a safety stop, always goes out);
//! - the previous real run did not end `ok` (the first problem after a success always goes
//!   out).
//!
//! A run that ends `ok` mails `recovered` only when the last notice sent was a problem, so
//! there is at most one "fixed" mail per problem mailed.

use std::time::Duration;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tracing::{debug, info, warn};

use crate::apply::{self, ActionResult, Tally};
use crate::config::{Config, NotifyConfig, NotifyOn, SmtpTls};
use crate::plan::{Plan, Verdict};
use crate::secret::Secret;
use crate::state::{self, StateError, Store};

/// Failed or conflicted actions listed by name in one mail; the rest are counted.
const LISTED: usize = 20;
/// How long one delivery may take (connect, TLS, every SMTP reply).
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// What a scrubbed secret is replaced with.
const REDACTED: &str = "[redacted]";

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notify.ca_file {path}: {message}")]
    CaFile {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("notify.{key}: `{value}` is not a mail address: {message}")]
    Address {
        key: &'static str,
        value: String,
        message: String,
    },
    #[error("cannot build the notification mail: {0}")]
    Build(#[from] lettre::error::Error),
    #[error("cannot set up TLS to the SMTP relay {server}: {source}")]
    Tls {
        server: String,
        source: lettre::transport::smtp::Error,
    },
    #[error("cannot mail the notification through {server}: {source}")]
    Send {
        server: String,
        source: lettre::transport::smtp::Error,
    },
    #[error("notification bookkeeping: {0}")]
    State(#[from] StateError),
}

/// What became of a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Handed to the relay.
    Sent,
    /// Held back by the rate limit (see the module doc); recorded.
    Suppressed,
    /// `notify.to` is empty: notifications are off. Nothing was recorded or connected.
    Disabled,
    /// The kind is not in `notify.on`.
    NotWanted,
    /// A run that ended ok with no problem mailed before it: nothing to tell.
    Nothing,
}

/// One mail about one run, ready to send.
#[derive(Debug, Clone)]
pub struct Notice {
    pub run_id: Option<i64>,
    /// `recovered` for a run that ended ok (sent only after a mailed problem).
    pub kind: NotifyOn,
    pub subject: String,
    pub body: String,
}

impl Notice {
    /// The notice for a finished run: `command` is what started it (`sync`, `apply`,
    /// `daemon`), `host` the machine it ran on ([`host_name`]), `plan` and `results` what it
    /// planned and applied (absent when it failed before), `error` why it failed.
    pub fn of_run(
        run_id: Option<i64>,
        command: &str,
        outcome: state::Outcome,
        host: &str,
        plan: Option<&Plan>,
        results: Option<&[ActionResult]>,
        error: Option<&str>,
    ) -> Notice {
        let run = run_id.map_or("a run".to_owned(), |id| format!("run #{id}"));
        let tally = results.map(Tally::of);
        let kind = match outcome {
            state::Outcome::Ok => NotifyOn::Recovered,
            state::Outcome::Partial => NotifyOn::Partial,
            state::Outcome::Failed => NotifyOn::Failed,
            state::Outcome::Blocked => NotifyOn::Blocked,
            state::Outcome::Interrupted => NotifyOn::Interrupted,
        };
        let headline = headline(outcome, tally, results.map_or(0, <[_]>::len), error);
        let mut body = format!("ldap2exo on {host}: {run} (`{command}`) {headline}.\n");
        if let Some(plan) = plan {
            body.push_str(&safety_section(plan, results.is_some()));
        }
        if let Some(error) = error {
            body.push_str(&format!("\nError:\n  {}\n", error.replace('\n', "\n  ")));
        }
        if let (Some(results), Some(tally)) = (results, tally) {
            body.push_str(&results_section(results, tally));
        }
        body.push_str(&format!(
            "\nWhere to look: `ldap2exo status` on {host} shows the last runs, pending deletions \
             and quarantined entries; the run's log has every action.\n"
        ));
        Notice {
            run_id,
            kind,
            subject: one_line(&format!("[ldap2exo] {host}: {run} {headline}")),
            body,
        }
    }

    /// Replaces every occurrence of each secret with `[redacted]`: the last guard for an
    /// error text that quoted more than it should.
    pub fn redact(&mut self, secrets: &[&Secret]) {
        for s in secrets.iter().map(|s| s.expose()).filter(|s| !s.is_empty()) {
            self.subject = self.subject.replace(s, REDACTED);
            self.body = self.body.replace(s, REDACTED);
        }
    }
}

/// What happened, in a few words: the end of the subject and the body's first sentence.
fn headline(
    outcome: state::Outcome,
    tally: Option<Tally>,
    actions: usize,
    error: Option<&str>,
) -> String {
    let counts = tally.map(|t| {
        let mut parts = Vec::new();
        if t.failed > 0 {
            parts.push(format!("{} of {actions} actions failed", t.failed));
        }
        if t.conflict > 0 {
            parts.push(format!("{} in conflict", t.conflict));
        }
        parts.join(", ")
    });
    let counts = counts.filter(|c| !c.is_empty());
    match outcome {
        state::Outcome::Ok => "ended ok again".into(),
        state::Outcome::Blocked => "was blocked by the safety gate".into(),
        state::Outcome::Interrupted => match tally {
            Some(t) if t.not_started > 0 => format!(
                "was interrupted: {} actions not started, the next run does them",
                t.not_started
            ),
            _ => "was interrupted".into(),
        },
        state::Outcome::Failed | state::Outcome::Partial => match (error, counts) {
            (Some(e), _) => format!("failed: {}", first_line(e)),
            (None, Some(c)) => format!("ended: {c}"),
            (None, None) => "failed".into(),
        },
    }
}

/// The gate's reasons and, when removals were held, how to approve them.
fn safety_section(plan: &Plan, applied: bool) -> String {
    if plan.safety.verdict != Verdict::Blocked {
        return String::new();
    }
    let mut s = match &plan.safety.approval {
        Some(a) => format!(
            "\nThe safety gate held back {} removals the approval (--approve-removals {} --scope {}) does not cover:\n",
            plan.safety.held_removals, a.removals, a.scope
        ),
        None => String::from("\nThe safety gate held back every disable and delete:\n"),
    };
    for r in &plan.safety.reasons {
        s.push_str(&format!("  - {r}\n"));
    }
    if applied && plan.safety.approval.is_some() {
        s.push_str("Creates, updates and the approved removals went ahead (see below).\n");
    } else if applied {
        s.push_str("Creates and updates went ahead (see below); nobody was disabled or deleted.\n");
    }
    let removals = plan.summary.removals();
    if plan.safety.approval.is_some() {
        s.push_str(&format!("\n{}\n", crate::report::approval(plan)));
        return s;
    }
    if plan.source.scope == "full" && plan.source.entries == 0 {
        s.push_str(
            "\nNo flag approves an empty read: check the LDAP server, ldap.base_dn and \
             ldap.filter, then let the next run go.\n",
        );
        return s;
    }
    let only = if plan.source.only.is_empty() {
        String::new()
    } else {
        format!(" --only {}", plan.source.only.join(" "))
    };
    s.push_str(&format!(
        "\n{removals} removals are held ({} disables, {} deletes). If they are right, review \
         them with\n  ldap2exo sync --dry-run{only} --max-deletes {removals}\nand approve them \
         with\n  ldap2exo sync{only} --max-deletes {removals}\n",
        plan.summary.disable, plan.summary.delete
    ));
    s
}

/// The counts, then the first failed and conflicted actions by uid.
fn results_section(results: &[ActionResult], t: Tally) -> String {
    let mut s = format!(
        "\nActions: {} done, {} pending, {} skipped, {} in conflict, {} failed, {} not started.\n",
        t.done, t.pending, t.skipped, t.conflict, t.failed, t.not_started
    );
    let bad: Vec<(&ActionResult, &str, &str)> = results
        .iter()
        .filter_map(|r| match &r.outcome {
            apply::Outcome::Failed(why) => Some((r, "failed", why.as_str())),
            apply::Outcome::Conflict(why) => Some((r, "conflict", why.as_str())),
            _ => None,
        })
        .collect();
    if bad.is_empty() {
        return s;
    }
    s.push_str("\nFailed or in conflict:\n");
    for (r, how, why) in bad.iter().take(LISTED) {
        s.push_str(&format!(
            "  - {} ({}): {how}: {}\n",
            r.uid,
            r.op.as_str(),
            first_line(why)
        ));
    }
    if bad.len() > LISTED {
        s.push_str(&format!("  ... and {} more\n", bad.len() - LISTED));
    }
    s
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("").trim()
}

/// A subject is one line and short enough to read in a list.
fn one_line(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(160) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line,
    }
}

/// This machine's name, as the mails and the SMTP greeting give it.
pub fn host_name() -> String {
    match ClientId::default() {
        ClientId::Domain(name) => name,
        other => other.to_string(),
    }
}

/// Sends `notice` unless notifications are off, its kind is not wanted or the rate limit
/// holds it back (module doc); records every attempt. `now` is the run's end (Unix seconds).
pub async fn send(
    config: &NotifyConfig,
    store: &Store,
    notice: &Notice,
    now: i64,
) -> Result<Delivery, NotifyError> {
    if !config.enabled() {
        return Ok(Delivery::Disabled);
    }
    if !config.on.contains(&notice.kind) {
        return Ok(Delivery::NotWanted);
    }
    let kind = notice.kind.as_str();
    let last = store.last_notification_sent(None).await?;
    if notice.kind == NotifyOn::Recovered {
        let problem_mailed = last.is_some_and(|l| l.kind != NotifyOn::Recovered.as_str());
        if !problem_mailed {
            return Ok(Delivery::Nothing);
        }
    } else if let Some(why) = held_back(config, store, notice, last, now).await? {
        store
            .record_notification(notice.run_id, kind, "suppressed", Some(&why), now)
            .await?;
        return Ok(Delivery::Suppressed);
    }
    match deliver(config, notice).await {
        Ok(()) => {
            store
                .record_notification(notice.run_id, kind, "sent", None, now)
                .await?;
            Ok(Delivery::Sent)
        }
        Err(e) => {
            store
                .record_notification(notice.run_id, kind, "failed", Some(&e.to_string()), now)
                .await?;
            Err(e)
        }
    }
}

/// Why the rate limit holds `notice` back, or `None` when it goes out.
async fn held_back(
    config: &NotifyConfig,
    store: &Store,
    notice: &Notice,
    last: Option<state::NotificationRecord>,
    now: i64,
) -> Result<Option<String>, NotifyError> {
    let kind = notice.kind.as_str();
    let interval = i64::from(config.min_interval_minutes) * 60;
    let Some(same) = store.last_notification_sent(Some(kind)).await? else {
        return Ok(None);
    };
    if now - same.sent_at >= interval || last.is_none_or(|l| l.kind != kind) {
        return Ok(None);
    }
    if let Some(id) = notice.run_id
        && store.previous_outcome(id).await?.as_deref() == Some("ok")
    {
        return Ok(None);
    }
    Ok(Some(format!(
        "a {kind} notification went out {} minutes ago (notify.min_interval_minutes = {})",
        (now - same.sent_at) / 60,
        config.min_interval_minutes
    )))
}

/// Builds the mail and hands it to the relay.
async fn deliver(config: &NotifyConfig, notice: &Notice) -> Result<(), NotifyError> {
    let mut mail = notice.clone();
    mail.redact(&config.password.iter().collect::<Vec<_>>());
    let from = config.from.as_deref().unwrap_or_default();
    let mut builder = Message::builder()
        .from(mailbox("from", from)?)
        .subject(mail.subject)
        .message_id(None)
        // RFC 3834: no vacation or out-of-office replies to a machine's mail.
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".into(),
        ))
        .header(ContentType::TEXT_PLAIN);
    for to in &config.to {
        builder = builder.to(mailbox("to", to)?);
    }
    let message = builder.body(Body::new(mail.body))?;
    let server = format!("{}:{}", config.smtp_host, config.port());
    transport(config, &server)?
        .send(message)
        .await
        .map_err(|source| NotifyError::Send { server, source })?;
    Ok(())
}

fn mailbox(key: &'static str, value: &str) -> Result<Mailbox, NotifyError> {
    value
        .parse()
        .map_err(|e: lettre::address::AddressError| NotifyError::Address {
            key,
            value: value.to_owned(),
            message: e.to_string(),
        })
}

/// The SMTP client: TLS as configured (STARTTLS required by default), AUTH only when a
/// username is set, which the configuration allows only with TLS.
fn transport(
    config: &NotifyConfig,
    server: &str,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, NotifyError> {
    let host = config.smtp_host.trim_matches(['[', ']']);
    let tls = match config.tls {
        SmtpTls::None => Tls::None,
        SmtpTls::Starttls => Tls::Required(tls_parameters(config, host, server)?),
        SmtpTls::Tls => Tls::Wrapper(tls_parameters(config, host, server)?),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(config.port())
        .tls(tls)
        .timeout(Some(SMTP_TIMEOUT));
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        builder = builder
            .credentials(Credentials::new(user.clone(), password.expose().to_owned()))
            .authentication(vec![Mechanism::Plain, Mechanism::Login]);
    }
    Ok(builder.build())
}

/// rustls (aws-lc-rs) with the system roots plus `notify.ca_file`; the relay's name is checked.
fn tls_parameters(
    config: &NotifyConfig,
    host: &str,
    server: &str,
) -> Result<TlsParameters, NotifyError> {
    let mut builder = TlsParameters::builder(host.to_owned());
    if let Some(path) = &config.ca_file {
        let ca_err = |message: String| NotifyError::CaFile {
            path: path.clone(),
            message,
        };
        let certs = crate::config::ca_certificates(path).map_err(ca_err)?;
        for cert in certs {
            let cert = Certificate::from_der(cert.to_vec()).map_err(|e| ca_err(e.to_string()))?;
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build_rustls().map_err(|source| NotifyError::Tls {
        server: server.to_owned(),
        source,
    })
}

/// What the caller runs at the end of a real run, in one line: scrubs every configured
/// secret from the notice, sends it ([`send`]) and logs the outcome. Never fails: a mail
/// problem is logged at WARN and the run carries on. `None` when the mail could not be sent.
pub async fn after_run(
    config: &Config,
    store: &Store,
    mut notice: Notice,
    now: i64,
) -> Option<Delivery> {
    let secrets: Vec<&Secret> = [
        &config.ldap.bind_password,
        &config.tenant.client_secret,
        &config.notify.password,
    ]
    .into_iter()
    .flatten()
    .collect();
    notice.redact(&secrets);
    let kind = notice.kind.as_str();
    match send(&config.notify, store, &notice, now).await {
        Ok(delivery) => {
            match delivery {
                Delivery::Sent => {
                    info!(kind, run = notice.run_id, to = ?config.notify.to, "notification mailed")
                }
                Delivery::Suppressed => info!(
                    kind,
                    run = notice.run_id,
                    min_interval_minutes = config.notify.min_interval_minutes,
                    "notification held back by the rate limit"
                ),
                _ => debug!(kind, run = notice.run_id, ?delivery, "no notification"),
            }
            Some(delivery)
        }
        Err(e) => {
            warn!(kind, run = notice.run_id, error = %e, "cannot mail the notification; the run is not affected");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_is_one_short_line() {
        let s = one_line(&format!("a\nb  c {}", "x".repeat(300)));
        assert!(s.starts_with("a b c x") && s.ends_with("..."), "{s}");
        assert_eq!(s.chars().count(), 163);
    }

    #[test]
    fn a_partial_run_counts_its_failures_in_the_subject() {
        let result = |uid: &str, outcome| ActionResult {
            op: crate::plan::Op::Update,
            anchor: crate::ids::Anchor::new(&format!("a-{uid}")).unwrap(),
            uid: uid.into(),
            outcome,
        };
        let results = [
            result("ann", apply::Outcome::Done),
            result(
                "bob",
                apply::Outcome::Failed("Exchange answered 500".into()),
            ),
            result(
                "cy",
                apply::Outcome::Conflict("cy@example.edu is taken".into()),
            ),
            result("dee", apply::Outcome::Failed("timed out".into())),
        ];
        let n = Notice::of_run(
            Some(12),
            "sync",
            state::Outcome::Partial,
            "mx1",
            None,
            Some(&results),
            None,
        );
        assert_eq!(n.kind, NotifyOn::Partial);
        assert_eq!(
            n.subject,
            "[ldap2exo] mx1: run #12 ended: 2 of 4 actions failed, 1 in conflict"
        );
        assert!(
            n.body
                .contains("  - bob (update): failed: Exchange answered 500\n"),
            "{}",
            n.body
        );
        assert!(!n.body.contains("ann"), "{}", n.body);
    }

    #[test]
    fn a_failed_run_names_its_error_and_redacts_secrets() {
        let mut n = Notice::of_run(
            Some(7),
            "daemon",
            state::Outcome::Failed,
            "mx1",
            None,
            None,
            Some("reading LDAP failed: bind as cn=admin with hunter22 refused\nmore"),
        );
        assert_eq!(n.kind, NotifyOn::Failed);
        assert_eq!(
            n.subject,
            "[ldap2exo] mx1: run #7 failed: reading LDAP failed: bind as cn=admin with hunter22 refused"
        );
        n.redact(&[&Secret::new("hunter22".into())]);
        assert!(!n.subject.contains("hunter22") && !n.body.contains("hunter22"));
        assert!(
            n.body.contains("with [redacted] refused\n  more"),
            "{}",
            n.body
        );
        assert!(n.body.contains("ldap2exo status"), "{}", n.body);
    }
}
