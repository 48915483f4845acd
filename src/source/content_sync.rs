//! Incremental reads with LDAP Content Synchronization (RFC 4533), refreshOnly mode.
//!
//! A refresh with no cookie returns the whole content (every entry the configured filter
//! matches) and a cookie; a refresh with that cookie returns only what changed since: entries
//! added or modified (a rename, a `modrdn`, arrives as a modified entry with its new DN under
//! the same `entryUUID`), and what left, either named (the delete phase) or implied by the
//! entries the server names as still present (the present phase). OpenLDAP serves this with the
//! `syncprov` overlay; the README says how to configure it.
//!
//! The control is sent as critical, so a server without it answers `unavailableCriticalExtension`
//! (rc 12) instead of silently doing a plain search; that, a refused cookie
//! (`e-syncRefreshRequired`, rc 4096) and a size limit that stops an unpaged refresh are answered
//! as [`Refresh`] outcomes the caller turns into a full read, never as a shorter result.
//!
//! Response parsing never panics (ldap3's own parsers for these controls do on bad input): LDAP
//! content is untrusted, and a malformed message is a [`SourceError::Malformed`].

use std::collections::HashSet;
use std::fmt;

use ldap3::asn1::{PL, StructureTag, TagClass, Types, parse_tag};
use ldap3::controls::{Control, MakeCritical, RefreshMode, SyncRequest};
use ldap3::{Ldap, LdapError, SearchOptions};
use tracing::{debug, info};

use super::RawEntry;
use super::error::SourceError;
use super::filter::{and, is_valid, normalize_dn};
use super::reader::{Ctx, client_tls, open_with, paged_search, to_raw};
use crate::config::LdapConfig;

const SYNC_STATE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.2";
const SYNC_DONE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.3";
const SYNC_INFO_OID: &str = "1.3.6.1.4.1.4203.1.9.1.4";
/// `e-syncRefreshRequired` (RFC 4533 §2.8): the server cannot serve this cookie any more.
const SYNC_REFRESH_REQUIRED: u32 = 4096;
/// How many changed entries one rule search names (`(|(entryUUID=…)…)`).
const RULE_CHUNK: usize = 200;

/// An entry's `entryUUID` as the sync controls carry it (16 octets), shown and stored in the
/// usual 8-4-4-4-12 lower-case form (what OpenLDAP returns as the `entryUUID` value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SyncUuid([u8; 16]);

impl SyncUuid {
    /// The 16 octets of a `syncUUID`; `None` for any other length.
    pub fn from_octets(octets: &[u8]) -> Option<Self> {
        octets.try_into().ok().map(SyncUuid)
    }

    /// Parses the 8-4-4-4-12 hexadecimal form (any case).
    pub fn parse(s: &str) -> Option<Self> {
        let hex: Vec<u8> = s.bytes().filter(|b| *b != b'-').collect();
        let dashes = s.bytes().filter(|b| *b == b'-').count();
        if hex.len() != 32 || !(dashes == 0 || dashes == 4) {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, pair) in hex.chunks(2).enumerate() {
            let text = std::str::from_utf8(pair).ok()?;
            out[i] = u8::from_str_radix(text, 16).ok()?;
        }
        Some(SyncUuid(out))
    }
}

impl fmt::Display for SyncUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// What a refresh that went through reported.
#[derive(Debug, Default)]
pub struct Delta {
    /// No cookie was sent: the entries handed over are the whole content.
    pub full: bool,
    /// Entries the server named as gone (deleted, or no longer matching the filter).
    pub deleted: HashSet<SyncUuid>,
    /// Present phase (RFC 4533 §3.3.1): the unchanged entries the server named as still
    /// there. Every earlier entry neither named here nor handed over as changed is gone.
    /// `None` when the server used the delete phase only.
    pub present: Option<HashSet<SyncUuid>>,
    /// The cookie for the next refresh; `None` when the server sent none.
    pub cookie: Option<Vec<u8>>,
    /// How many entries were handed over as added or changed.
    pub changed: usize,
    /// How many searches the refresh sent (itself and the rule searches).
    pub searches: usize,
}

/// How a refresh ended.
#[derive(Debug)]
pub enum Refresh {
    Done(Delta),
    /// The server cannot serve the cookie (rc 4096, `e-syncRefreshRequired`): refresh again
    /// without one.
    CookieRefused,
    /// The server cannot serve content synchronisation for this search (no `syncprov`, or a
    /// limit that stops an unpaged refresh); `reason` says what to change. Read in full.
    Unavailable {
        reason: String,
    },
}

/// Refreshes the content of the configured search, with the `hidden`/`disabled` flags of the
/// rules, handing each added or changed entry to `on_entry` with its `entryUUID`.
///
/// With `cookie = None` every entry is handed over (the rule searches run first, as for a
/// paged read). With a cookie the changed entries are collected first, then flagged by rule
/// searches that name just them, then handed over: a refresh that found nothing runs no rule
/// search. On any error no caller may use what it was handed.
pub async fn refresh(
    config: &LdapConfig,
    cookie: Option<&[u8]>,
    mut on_entry: impl FnMut(SyncUuid, RawEntry),
) -> Result<Refresh, SourceError> {
    let filter = config.filter.trim();
    if !is_valid(filter) {
        return Err(SourceError::Filter {
            filter: config.filter.clone(),
        });
    }
    let rules = rule_filters(config)?;
    let ctx = Ctx::new(config);
    // One TLS configuration for the read's connections: loading the trust roots takes 10 ms.
    let tls = client_tls(config)?;
    let mut attrs = config.attributes.requested();
    if attrs.is_empty() {
        attrs.push("1.1".into());
    }
    let mut searches = 1;
    let full_flags = match cookie {
        None => {
            let flags = rule_dns(config, &tls, &ctx, &rules, None).await?;
            searches += flags.searches;
            Some(flags)
        }
        Some(_) => None,
    };
    let mut session = open_with(config, tls.clone()).await?;
    let mut held: Vec<(SyncUuid, RawEntry)> = Vec::new();
    let outcome = sync_search(
        &mut session.ldap,
        &ctx,
        filter,
        &attrs,
        cookie,
        |uuid, entry| match &full_flags {
            Some(flags) => on_entry(uuid, flagged(entry, flags)),
            None => held.push((uuid, entry)),
        },
    )
    .await;
    session.close().await;
    let mut delta = match outcome? {
        Searched::Done(delta) => delta,
        Searched::CookieRefused => return Ok(Refresh::CookieRefused),
        Searched::Unavailable(reason) => return Ok(Refresh::Unavailable { reason }),
    };
    delta.full = cookie.is_none();
    delta.searches = searches;
    if !held.is_empty() {
        let uuids: Vec<SyncUuid> = held.iter().map(|(u, _)| *u).collect();
        let flags = rule_dns(config, &tls, &ctx, &rules, Some(&uuids)).await?;
        delta.searches += flags.searches;
        for (uuid, entry) in held {
            on_entry(uuid, flagged(entry, &flags));
        }
    }
    info!(
        url = %ctx.url,
        full = delta.full,
        changed = delta.changed,
        deleted = delta.deleted.len(),
        present = delta.present.as_ref().map(HashSet::len),
        searches = delta.searches,
        "refreshed LDAP content (RFC 4533)"
    );
    Ok(Refresh::Done(delta))
}

/// The DNs (normalised) of the entries matching each rule, `hidden` then `disabled`.
#[derive(Default)]
struct Flags {
    hidden: Option<HashSet<String>>,
    disabled: Option<HashSet<String>>,
    /// How many searches found them.
    searches: usize,
}

fn flagged(mut entry: RawEntry, flags: &Flags) -> RawEntry {
    if flags.hidden.is_some() || flags.disabled.is_some() {
        let dn = normalize_dn(&entry.dn);
        entry.hidden = flags.hidden.as_ref().is_some_and(|d| d.contains(&dn));
        entry.disabled = flags.disabled.as_ref().is_some_and(|d| d.contains(&dn));
    }
    entry
}

/// `(&<filter><rule>)` for each configured rule, checked.
fn rule_filters(config: &LdapConfig) -> Result<Vec<(bool, String)>, SourceError> {
    let mut out = Vec::new();
    for (hidden, rule) in [
        (true, &config.rules.hidden_filter),
        (false, &config.rules.disabled_filter),
    ] {
        if let Some(rule) = rule.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
            let combined = and(&[config.filter.trim(), rule]);
            if !is_valid(&combined) {
                return Err(SourceError::Filter {
                    filter: rule.to_owned(),
                });
            }
            out.push((hidden, combined));
        }
    }
    Ok(out)
}

/// Runs the rule searches (DNs only, one connection), restricted to `only` when given.
async fn rule_dns(
    config: &LdapConfig,
    tls: &Option<std::sync::Arc<rustls::ClientConfig>>,
    ctx: &Ctx<'_>,
    rules: &[(bool, String)],
    only: Option<&[SyncUuid]>,
) -> Result<Flags, SourceError> {
    let mut flags = Flags::default();
    if rules.is_empty() {
        return Ok(flags);
    }
    let mut session = open_with(config, tls.clone()).await?;
    let no_attrs = vec![String::from("1.1")];
    let result = async {
        for (hidden, rule) in rules {
            let mut dns = HashSet::new();
            let filters: Vec<String> = match only {
                None => vec![rule.clone()],
                Some(uuids) => uuids
                    .chunks(RULE_CHUNK)
                    .map(|chunk| {
                        let any: String =
                            chunk.iter().map(|u| format!("(entryUUID={u})")).collect();
                        and(&[rule, &format!("(|{any})")])
                    })
                    .collect(),
            };
            for f in &filters {
                flags.searches += 1;
                paged_search(&mut session.ldap, ctx, f, &no_attrs, |e| {
                    dns.insert(normalize_dn(&e.dn));
                })
                .await?;
            }
            debug!(url = %ctx.url, hidden, matched = dns.len(), "applied rule");
            match hidden {
                true => flags.hidden = Some(dns),
                false => flags.disabled = Some(dns),
            }
        }
        Ok::<_, SourceError>(())
    }
    .await;
    session.close().await;
    result.map(|()| flags)
}

enum Searched {
    Done(Delta),
    CookieRefused,
    Unavailable(String),
}

/// One refreshOnly search: entries with their sync state, intermediate sync info messages,
/// and the Sync Done control on the result.
async fn sync_search(
    ldap: &mut Ldap,
    ctx: &Ctx<'_>,
    filter: &str,
    attrs: &[String],
    cookie: Option<&[u8]>,
    mut on_changed: impl FnMut(SyncUuid, RawEntry),
) -> Result<Searched, SourceError> {
    let malformed = |message: String| SourceError::Malformed {
        url: ctx.url.clone(),
        base_dn: ctx.base_dn.to_owned(),
        message,
    };
    let control = SyncRequest {
        mode: RefreshMode::RefreshOnly,
        cookie: cookie.map(<[u8]>::to_vec),
        reload_hint: false,
    }
    .critical();
    let opts = SearchOptions::new().timelimit(ctx.server_time_limit);
    let started = ldap
        .with_controls(control)
        .with_search_options(opts)
        .with_timeout(ctx.op_timeout)
        .streaming_search(ctx.base_dn, ctx.scope, filter, attrs)
        .await;
    let mut stream = match started {
        Ok(s) => s,
        Err(LdapError::LdapResult { result }) => {
            return unsuccessful(ctx, result.rc, result.text, 0, cookie.is_some());
        }
        Err(e) => return Err(ctx.search_error(e, 0)),
    };
    let mut delta = Delta::default();
    let mut latest: Option<Vec<u8>> = None;
    let mut refs = Vec::new();
    loop {
        let entry = match stream.next().await {
            Ok(Some(entry)) => entry,
            Ok(None) => break,
            Err(e) => {
                let _ = stream.finish().await;
                return Err(ctx.search_error(e, delta.changed));
            }
        };
        if entry.is_ref() {
            refs.extend(ldap3::parse_refs(entry.0));
            continue;
        }
        let step = if entry.is_intermediate() {
            sync_info(entry.0).map(|info| info.apply(&mut delta, &mut latest))
        } else {
            take_entry(entry, &mut delta, &mut latest, &mut on_changed)
        };
        if let Err(message) = step {
            let _ = stream.finish().await;
            return Err(malformed(message));
        }
    }
    let result = stream.finish().await;
    if !refs.is_empty() {
        return Err(SourceError::Referral {
            url: ctx.url.clone(),
            base_dn: ctx.base_dn.to_owned(),
            refs,
        });
    }
    if result.rc != 0 {
        return unsuccessful(ctx, result.rc, result.text, delta.changed, cookie.is_some());
    }
    let done = result.ctrls.iter().find_map(|c| match c {
        Control(_, raw) if raw.ctype == SYNC_DONE_OID => Some(raw.val.as_deref().unwrap_or(&[])),
        _ => None,
    });
    let Some(done) = done else {
        return Err(malformed("the result carries no Sync Done control".into()));
    };
    let (done_cookie, refresh_deletes) = sync_done(done).map_err(malformed)?;
    if let Some(c) = done_cookie {
        latest = Some(c);
    }
    // refreshDeletes FALSE ends a present phase (§3.3.2): what was not named is gone.
    if !refresh_deletes && cookie.is_some() {
        delta.present.get_or_insert_default();
    }
    delta.cookie = latest.or_else(|| cookie.map(<[u8]>::to_vec));
    Ok(Searched::Done(delta))
}

/// Files one SearchResultEntry of a refresh by its Sync State: present, changed (handed to
/// `on_changed`) or deleted.
fn take_entry(
    entry: ldap3::ResultEntry,
    delta: &mut Delta,
    latest: &mut Option<Vec<u8>>,
    on_changed: &mut impl FnMut(SyncUuid, RawEntry),
) -> Result<(), String> {
    let state = entry_state(&entry.1)?;
    if let Some(c) = state.cookie {
        *latest = Some(c);
    }
    match state.state {
        0 => {
            delta.present.get_or_insert_default().insert(state.uuid);
        }
        1 | 2 => {
            let raw = to_raw(entry.0)?;
            delta.changed += 1;
            on_changed(state.uuid, raw);
        }
        _ => {
            delta.deleted.insert(state.uuid);
        }
    }
    Ok(())
}

/// A non-zero result of the refresh: a refused cookie, a server that cannot do it, or an
/// error as for any read.
///
/// A cookie is refused with `e-syncRefreshRequired` (RFC 4533 §3.3.1), or, by OpenLDAP's
/// syncprov, with `unwillingToPerform` "consumer state is newer than provider!" when the cookie
/// is ahead of the server (a provider restored from a backup, another server): seen on slapd
/// 2.5 by the test `incremental::a_refused_cookie_or_an_old_full_read_falls_back_to_a_full_read`,
/// and in `servers/slapd/overlays/syncprov.c` (`syncprov_op_search`).
fn unsuccessful(
    ctx: &Ctx<'_>,
    rc: u32,
    text: String,
    entries: usize,
    with_cookie: bool,
) -> Result<Searched, SourceError> {
    match rc {
        SYNC_REFRESH_REQUIRED => Ok(Searched::CookieRefused),
        53 if with_cookie => {
            debug!(url = %ctx.url, message = %text, "the server is unwilling to refresh from the cookie");
            Ok(Searched::CookieRefused)
        }
        12 => Ok(Searched::Unavailable(format!(
            "the server does not offer content synchronisation on {} (rc 12, unavailableCriticalExtension{}): load the syncprov overlay on its database",
            ctx.base_dn,
            if text.trim().is_empty() {
                String::new()
            } else {
                format!(": {}", text.trim())
            }
        ))),
        3 | 4 | 11 => Ok(Searched::Unavailable(format!(
            "a refresh cannot be paged, and the server stopped it at a limit (rc {rc}) after {entries} entries: give the bind DN `limits ... size=unlimited time=unlimited` in slapd"
        ))),
        _ => Err(ctx.result_error(rc, text, Vec::new(), entries)),
    }
}

#[derive(Debug)]
struct EntryState {
    state: u64,
    uuid: SyncUuid,
    cookie: Option<Vec<u8>>,
}

/// The Sync State control of an entry (RFC 4533 §2.3):
/// `SEQUENCE { state ENUMERATED, entryUUID OCTET STRING (16), cookie OCTET STRING OPTIONAL }`.
fn entry_state(controls: &[Control]) -> Result<EntryState, String> {
    let raw = controls
        .iter()
        .find_map(|Control(_, raw)| (raw.ctype == SYNC_STATE_OID).then_some(raw))
        .ok_or_else(|| "an entry carries no Sync State control".to_owned())?;
    let mut parts = sequence(raw.val.as_deref().unwrap_or(&[]), "the Sync State")?.into_iter();
    let state = parts
        .next()
        .filter(|t| t.class == TagClass::Universal && t.id == Types::Enumerated as u64)
        .and_then(octets)
        .and_then(|b| unsigned(&b))
        .filter(|s| *s <= 3)
        .ok_or_else(|| "the Sync State has no valid state".to_owned())?;
    let uuid = parts
        .next()
        .and_then(octets)
        .and_then(|b| SyncUuid::from_octets(&b))
        .ok_or_else(|| "the Sync State has no 16-octet entryUUID".to_owned())?;
    let cookie = parts.next().and_then(octets);
    Ok(EntryState {
        state,
        uuid,
        cookie,
    })
}

/// The Sync Done control (RFC 4533 §2.4):
/// `SEQUENCE { cookie OCTET STRING OPTIONAL, refreshDeletes BOOLEAN DEFAULT FALSE }`.
fn sync_done(value: &[u8]) -> Result<(Option<Vec<u8>>, bool), String> {
    let mut cookie = None;
    let mut refresh_deletes = false;
    for part in sequence(value, "the Sync Done")? {
        match (part.class, part.id) {
            (TagClass::Universal, id) if id == Types::OctetString as u64 => cookie = octets(part),
            (TagClass::Universal, id) if id == Types::Boolean as u64 => {
                refresh_deletes = boolean(part).ok_or("the Sync Done has a bad boolean")?;
            }
            _ => return Err("the Sync Done has an unknown part".into()),
        }
    }
    Ok((cookie, refresh_deletes))
}

/// A Sync Info intermediate message (RFC 4533 §2.5).
#[derive(Debug, PartialEq, Eq)]
enum SyncInfo {
    NewCookie(Vec<u8>),
    /// `refreshDelete` or `refreshPresent`: the phase that ends (`present` is true for the
    /// present phase).
    PhaseDone {
        present: bool,
        cookie: Option<Vec<u8>>,
    },
    IdSet {
        cookie: Option<Vec<u8>>,
        deletes: bool,
        uuids: Vec<SyncUuid>,
    },
}

impl SyncInfo {
    fn apply(self, delta: &mut Delta, latest: &mut Option<Vec<u8>>) {
        let cookie = match self {
            SyncInfo::NewCookie(c) => Some(c),
            SyncInfo::PhaseDone { present, cookie } => {
                if present {
                    delta.present.get_or_insert_default();
                }
                cookie
            }
            SyncInfo::IdSet {
                cookie,
                deletes,
                uuids,
            } => {
                match deletes {
                    true => delta.deleted.extend(uuids),
                    false => delta.present.get_or_insert_default().extend(uuids),
                }
                cookie
            }
        };
        if cookie.is_some() {
            *latest = cookie;
        }
    }
}

/// `IntermediateResponse ::= [APPLICATION 25] SEQUENCE { responseName [0] OPTIONAL,
/// responseValue [1] OPTIONAL }` carrying a `syncInfoValue`.
fn sync_info(tag: StructureTag) -> Result<SyncInfo, String> {
    let PL::C(parts) = tag.payload else {
        return Err("an intermediate message is not constructed".into());
    };
    let mut name = None;
    let mut value = None;
    for part in parts {
        match part.id {
            0 => name = octets(part),
            1 => value = octets(part),
            _ => return Err("an intermediate message has an unknown part".into()),
        }
    }
    if name.as_deref() != Some(SYNC_INFO_OID.as_bytes()) {
        return Err("an intermediate message that is not a Sync Info".into());
    }
    let value = value.ok_or("a Sync Info without a value")?;
    let (_, choice) = parse_tag(&value).map_err(|_| "a Sync Info that is not BER")?;
    if choice.class != TagClass::Context {
        return Err("a Sync Info of an unknown kind".into());
    }
    let id = choice.id;
    let parts = match choice.payload {
        PL::P(cookie) if id == 0 => return Ok(SyncInfo::NewCookie(cookie)),
        PL::C(parts) if (1..=3).contains(&id) => parts,
        _ => return Err("a Sync Info of an unknown kind".into()),
    };
    // refreshDone defaults to TRUE, refreshDeletes to FALSE.
    let mut cookie = None;
    let mut flag = id != 3;
    let mut uuids = Vec::new();
    for part in parts {
        match (part.class, part.id) {
            (TagClass::Universal, t) if t == Types::OctetString as u64 => cookie = octets(part),
            (TagClass::Universal, t) if t == Types::Boolean as u64 => {
                flag = boolean(part).ok_or("a Sync Info has a bad boolean")?;
            }
            (TagClass::Universal, t) if t == Types::Set as u64 && id == 3 => {
                let PL::C(set) = part.payload else {
                    return Err("a syncIdSet that is not a set".into());
                };
                for u in set {
                    let uuid = octets(u)
                        .and_then(|b| SyncUuid::from_octets(&b))
                        .ok_or("a syncIdSet holds a value that is not a 16-octet UUID")?;
                    uuids.push(uuid);
                }
            }
            _ => return Err("a Sync Info has an unknown part".into()),
        }
    }
    Ok(match id {
        1 | 2 => SyncInfo::PhaseDone {
            present: id == 2,
            cookie,
        },
        _ => SyncInfo::IdSet {
            cookie,
            deletes: flag,
            uuids,
        },
    })
}

fn sequence(value: &[u8], what: &str) -> Result<Vec<StructureTag>, String> {
    match parse_tag(value) {
        Ok((
            _,
            StructureTag {
                payload: PL::C(parts),
                ..
            },
        )) => Ok(parts),
        _ => Err(format!("{what} control is not a BER sequence")),
    }
}

fn octets(tag: StructureTag) -> Option<Vec<u8>> {
    match tag.payload {
        PL::P(bytes) => Some(bytes),
        PL::C(_) => None,
    }
}

fn boolean(tag: StructureTag) -> Option<bool> {
    octets(tag).and_then(|b| b.first().map(|v| *v != 0))
}

fn unsigned(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 8 {
        return None;
    }
    Some(bytes.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3::controls::RawControl;

    /// One BER element with a short length (under 128 octets), written by hand so the
    /// parsers are checked against the encoding RFC 4533 gives, not against ldap3's encoder.
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        assert!(content.len() < 128);
        let mut out = vec![tag, content.len() as u8];
        out.extend_from_slice(content);
        out
    }

    const SEQ: u8 = 0x30;
    const SET: u8 = 0x31;
    const OCTETS: u8 = 0x04;
    const BOOL: u8 = 0x01;
    const ENUM: u8 = 0x0a;
    const U1: [u8; 16] = [
        0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8,
    ];

    #[test]
    fn uuids_print_and_parse_in_the_entryuuid_form() {
        let u = SyncUuid::from_octets(&U1).unwrap();
        assert_eq!(u.to_string(), "12345678-9abc-def0-0102-030405060708");
        assert_eq!(
            SyncUuid::parse("12345678-9ABC-def0-0102-030405060708"),
            Some(u)
        );
        assert_eq!(SyncUuid::parse("123456789abcdef00102030405060708"), Some(u));
        assert_eq!(SyncUuid::parse("12345678-9abc-def0-0102-0304050607"), None);
        assert_eq!(
            SyncUuid::parse("1234567x-9abc-def0-0102-030405060708"),
            None
        );
        assert_eq!(SyncUuid::from_octets(&U1[..15]), None);
    }

    fn control(oid: &str, val: Vec<u8>) -> Control {
        Control(
            None,
            RawControl {
                ctype: oid.into(),
                crit: false,
                val: Some(val),
            },
        )
    }

    fn state_control(state: u8, uuid: &[u8], cookie: Option<&[u8]>) -> Control {
        let mut inner = tlv(ENUM, &[state]);
        inner.extend(tlv(OCTETS, uuid));
        if let Some(c) = cookie {
            inner.extend(tlv(OCTETS, c));
        }
        control(SYNC_STATE_OID, tlv(SEQ, &inner))
    }

    #[test]
    fn sync_state_controls_are_read_and_bad_ones_are_errors() {
        let s = entry_state(&[state_control(2, &U1, Some(b"c1"))]).unwrap();
        assert_eq!((s.state, s.uuid.0, s.cookie), (2, U1, Some(b"c1".to_vec())));
        assert!(entry_state(&[]).unwrap_err().contains("no Sync State"));
        assert!(entry_state(&[state_control(7, &U1, None)]).is_err());
        assert!(entry_state(&[state_control(1, &U1[..4], None)]).is_err());
        assert!(entry_state(&[control(SYNC_STATE_OID, vec![0xff, 0x00])]).is_err());
    }

    #[test]
    fn sync_done_defaults_to_no_refresh_deletes() {
        let plain = tlv(SEQ, &tlv(OCTETS, b"cookie"));
        assert_eq!(
            sync_done(&plain).unwrap(),
            (Some(b"cookie".to_vec()), false)
        );
        let deletes = tlv(SEQ, &tlv(BOOL, &[0xff]));
        assert_eq!(sync_done(&deletes).unwrap(), (None, true));
        assert_eq!(sync_done(&tlv(SEQ, &[])).unwrap(), (None, false));
        assert!(sync_done(b"\x01").is_err());
    }

    /// An IntermediateResponse as ldap3 hands it over, holding the syncInfoValue `value`.
    fn intermediate(value: Vec<u8>) -> StructureTag {
        let mut body = tlv(0x80, SYNC_INFO_OID.as_bytes());
        body.extend(tlv(0x81, &value));
        parse_tag(&tlv(0x79, &body)).unwrap().1
    }

    #[test]
    fn sync_info_messages_say_which_phase_and_which_uuids() {
        assert_eq!(
            sync_info(intermediate(tlv(0x80, b"c2"))).unwrap(),
            SyncInfo::NewCookie(b"c2".to_vec())
        );
        assert_eq!(
            sync_info(intermediate(tlv(0xa2, &tlv(OCTETS, b"c3")))).unwrap(),
            SyncInfo::PhaseDone {
                present: true,
                cookie: Some(b"c3".to_vec())
            }
        );
        let set = tlv(SET, &tlv(OCTETS, &U1));
        let mut deletes = tlv(BOOL, &[0xff]);
        deletes.extend(&set);
        let mut delta = Delta::default();
        let mut latest = None;
        sync_info(intermediate(tlv(0xa3, &deletes)))
            .unwrap()
            .apply(&mut delta, &mut latest);
        assert!(delta.deleted.contains(&SyncUuid(U1)));
        assert_eq!(delta.present, None);
        // Without refreshDeletes the set names entries that are still present.
        let mut with_cookie = tlv(OCTETS, b"c4");
        with_cookie.extend(&set);
        sync_info(intermediate(tlv(0xa3, &with_cookie)))
            .unwrap()
            .apply(&mut delta, &mut latest);
        assert!(delta.present.unwrap().contains(&SyncUuid(U1)));
        assert_eq!(latest, Some(b"c4".to_vec()));
        let bad = tlv(SET, &tlv(OCTETS, b"short"));
        assert!(sync_info(intermediate(tlv(0xa3, &bad))).is_err());
        assert!(sync_info(intermediate(tlv(0xa5, &[]))).is_err());
        let mut other = tlv(0x80, b"1.2.3");
        other.extend(tlv(0x81, &tlv(0x80, b"c")));
        assert!(sync_info(parse_tag(&tlv(0x79, &other)).unwrap().1).is_err());
    }
}
