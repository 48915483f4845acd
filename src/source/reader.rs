//! Connecting, binding and the paged search.

use std::collections::HashSet;
use std::collections::btree_map::Entry;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ldap3::asn1::{PL, StructureTag, TagClass};
use ldap3::controls::{Control, ControlType, PagedResults};
use ldap3::{
    Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope as LdapScope, SearchOptions, StdStream,
};
use tracing::{debug, info, warn};

use super::error::{SourceError, display_url, find_rustls, redact, tls_refusal};
use super::filter::{and, is_valid, normalize_dn, selection_filter};
use super::{RawEntry, Selection};
use crate::config::{LdapConfig, Scope};

/// OID of the paged results control (RFC 2696).
const PAGED_RESULTS_OID: &str = "1.2.840.113556.1.4.319";
/// OID of the Sync Request control (RFC 4533), listed by a server that offers it.
const SYNC_REQUEST_OID: &str = "1.3.6.1.4.1.4203.1.9.1.1";

/// How the connection was protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain `ldap://` without StartTLS.
    None,
    /// `ldap://` upgraded with StartTLS.
    StartTls,
    /// `ldaps://`.
    Ldaps,
}

impl TlsMode {
    pub fn is_tls(self) -> bool {
        self != TlsMode::None
    }
}

/// What `check-config` learns about the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The URL (without any credentials).
    pub url: String,
    pub tls: TlsMode,
    /// The DN bound as; `None` for an anonymous bind.
    pub bind_dn: Option<String>,
    /// The base DN, which exists.
    pub base_dn: String,
    /// `vendorName` and `vendorVersion` from the root DSE, when the server publishes them.
    pub vendor: Option<String>,
    /// `namingContexts` from the root DSE (empty when it cannot be read).
    pub naming_contexts: Vec<String>,
    /// The root DSE lists the paged results control. `None` when it cannot be read.
    pub paged_results: Option<bool>,
    /// Things that work but deserve attention (plain-text bind, no paging support, …).
    pub warnings: Vec<String>,
}

/// Everything a search needs to name itself in errors and logs.
pub(super) struct Ctx<'a> {
    pub(super) url: String,
    pub(super) base_dn: &'a str,
    pub(super) scope: LdapScope,
    page_size: i32,
    pub(super) server_time_limit: i32,
    pub(super) op_timeout: Duration,
}

impl Ctx<'_> {
    pub(super) fn new(config: &LdapConfig) -> Ctx<'_> {
        Ctx {
            url: display_url(&config.url),
            base_dn: &config.base_dn,
            scope: match config.scope {
                Scope::Base => LdapScope::Base,
                Scope::One => LdapScope::OneLevel,
                Scope::Sub => LdapScope::Subtree,
            },
            page_size: i32::try_from(config.page_size.max(1)).unwrap_or(i32::MAX),
            server_time_limit: i32::try_from(config.timeout_seconds).unwrap_or(i32::MAX),
            op_timeout: op_timeout(config.timeout_seconds),
        }
    }

    /// Maps a library error during a search to a `SourceError`.
    pub(super) fn search_error(&self, e: LdapError, entries: usize) -> SourceError {
        match e {
            LdapError::Timeout { .. } => SourceError::Timeout {
                url: self.url.clone(),
                base_dn: self.base_dn.to_owned(),
                seconds: self.op_timeout.as_secs(),
            },
            LdapError::LdapResult { result } => {
                self.result_error(result.rc, result.text, result.refs, entries)
            }
            other => SourceError::Dropped {
                url: self.url.clone(),
                base_dn: self.base_dn.to_owned(),
                entries,
                message: other.to_string(),
            },
        }
    }

    /// Maps a non-zero result code to a `SourceError`.
    pub(super) fn result_error(
        &self,
        rc: u32,
        text: String,
        refs: Vec<String>,
        entries: usize,
    ) -> SourceError {
        let url = self.url.clone();
        let base_dn = self.base_dn.to_owned();
        match rc {
            3 | 4 | 11 => SourceError::Limit {
                url,
                base_dn,
                rc,
                entries,
                message: text,
            },
            10 => SourceError::Referral { url, base_dn, refs },
            32 => SourceError::NoSuchBase {
                url,
                base_dn,
                message: text,
            },
            // 80 "user cancelled" is what the library reports when the stream ended
            // without a result: the connection went away.
            _ => SourceError::Search {
                url,
                base_dn,
                rc,
                message: text,
            },
        }
    }
}

/// Client-side patience for one server reply: the server's own time limit plus slack, so a
/// server-side limit is reported as such (rc 3) before the client gives up.
fn op_timeout(timeout_seconds: u64) -> Duration {
    if timeout_seconds == 0 {
        Duration::from_secs(600)
    } else {
        Duration::from_secs(timeout_seconds.saturating_add(30))
    }
}

/// An open, bound connection.
pub(super) struct Session {
    pub(super) ldap: Ldap,
    driver: tokio::task::JoinHandle<()>,
    tls: TlsMode,
}

impl Session {
    pub(super) async fn close(mut self) {
        if let Err(e) = self.ldap.unbind().await {
            debug!(error = %e, "unbind failed");
        }
        // Dropping aborts the driver: no need to wait for the server to close.
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Builds the TLS client configuration: the aws-lc-rs provider set explicitly (no
/// process-wide default needed), system roots plus the optional `ca_file`, and certificate
/// verification always on.
pub(crate) fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, SourceError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        debug!(error = %e, "skipping unreadable system certificate");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    debug!(added, ignored, "loaded system trust roots");
    if let Some(path) = ca_file {
        let ca_err = |message: String| SourceError::CaFile {
            path: path.to_owned(),
            message,
        };
        let certs = crate::config::ca_certificates(path).map_err(ca_err)?;
        for cert in certs {
            roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SourceError::Tls {
            url: String::from("(any)"),
            message: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// True when the error comes from TLS (handshake, certificate verification).
fn is_tls_error(e: &LdapError) -> bool {
    matches!(e, LdapError::DNSName { .. }) || find_rustls(e).is_some()
}

/// The TLS failure in plain words (see [`tls_refusal`]), found by type in the error's chain
/// of causes; the library's own text only when no rustls error is in it.
fn tls_message(e: &LdapError, password: Option<&str>) -> String {
    let text = match find_rustls(e) {
        Some(rustls) => tls_refusal(rustls),
        None => e.to_string(),
    };
    redact(&text, password)
}

/// How `config` protects its connections; an error for a URL that cannot be used.
fn tls_mode(config: &LdapConfig) -> Result<TlsMode, SourceError> {
    let url = display_url(&config.url);
    let scheme = config
        .url
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default();
    let tls = match (scheme.as_str(), config.starttls) {
        ("ldap", false) => TlsMode::None,
        ("ldap", true) => TlsMode::StartTls,
        ("ldaps", false) => TlsMode::Ldaps,
        ("ldaps", true) => {
            return Err(SourceError::Url {
                url,
                message: "StartTLS cannot be used with ldaps://".into(),
            });
        }
        _ => {
            return Err(SourceError::Url {
                url,
                message: "the scheme must be ldap:// or ldaps://".into(),
            });
        }
    };
    Ok(tls)
}

/// The TLS client configuration `config` needs (`None` for plain LDAP), built once per read:
/// loading the system trust roots takes about 10 ms, and a full read opens three connections.
pub(super) fn client_tls(
    config: &LdapConfig,
) -> Result<Option<Arc<rustls::ClientConfig>>, SourceError> {
    Ok(match tls_mode(config)?.is_tls() {
        true => Some(Arc::new(tls_config(config.ca_file.as_deref())?)),
        false => None,
    })
}

/// `host` and `port` of an `ldap://` or `ldaps://` URL whose host is a plain name or IPv4
/// address; `None` for anything else (user info, IPv6, percent-encoding, a port that does not
/// parse), which ldap3 then connects to and reports on itself.
fn host_port(url: &str, ldaps: bool) -> Option<(&str, u16)> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().ok()?),
        None => (authority, if ldaps { 636 } else { 389 }),
    };
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '-';
    (!host.is_empty() && host.chars().all(plain)).then_some((host, port))
}

/// The TCP connection for ldap3, with Nagle's algorithm off. ldap3 leaves it on, and then the
/// bind request, written right after the client's TLS Finished, waited for that segment's
/// acknowledgement, which slapd delays by 40 ms: about 45 ms per connection, three per read
/// (strace of a 50,000-person dry run; `ldapsearch` sets TCP_NODELAY).
async fn nodelay(host: &str, port: u16) -> Result<std::net::TcpStream, LdapError> {
    let stream = tokio::net::TcpStream::connect((host, port)).await?;
    stream.set_nodelay(true)?;
    Ok(stream.into_std()?)
}

/// Connects (with StartTLS or LDAPS as configured) and binds.
pub(super) async fn open(config: &LdapConfig) -> Result<Session, SourceError> {
    open_with(config, client_tls(config)?).await
}

/// [`open`] with the TLS client configuration already built (see [`client_tls`]).
pub(super) async fn open_with(
    config: &LdapConfig,
    client: Option<Arc<rustls::ClientConfig>>,
) -> Result<Session, SourceError> {
    let url = display_url(&config.url);
    let password = config.bind_password.as_ref().map(|p| p.expose());
    let tls = tls_mode(config)?;
    let connect_timeout = Duration::from_secs(config.timeout_seconds.clamp(1, 30));
    let mut settings = LdapConnSettings::new();
    if tls.is_tls() {
        let client = match client {
            Some(client) => client,
            None => Arc::new(tls_config(config.ca_file.as_deref())?),
        };
        settings = settings
            .set_config(client)
            .set_starttls(tls == TlsMode::StartTls);
    }

    let connecting = async {
        if let Some((host, port)) = host_port(&config.url, tls == TlsMode::Ldaps) {
            settings = settings.set_std_stream(StdStream::Tcp(nodelay(host, port).await?));
        }
        LdapConnAsync::with_settings(settings, &config.url).await
    };
    // One limit for the TCP connection and ldap3's part (StartTLS or TLS), as when ldap3
    // connected alone under `set_conn_timeout`.
    let (conn, mut ldap) = tokio::time::timeout(connect_timeout, connecting)
        .await
        .map_err(LdapError::from)
        .and_then(|connected| connected)
        .map_err(|e| {
            let message = redact(&e.to_string(), password);
            match e {
                LdapError::UrlParsing { .. } | LdapError::UnknownScheme(_) => SourceError::Url {
                    url: url.clone(),
                    message,
                },
                LdapError::Timeout { .. } => SourceError::Connect {
                    url: url.clone(),
                    message: format!("no connection within {} s", connect_timeout.as_secs()),
                },
                ref e if is_tls_error(e) => SourceError::Tls {
                    url: url.clone(),
                    message: tls_message(e, password),
                },
                LdapError::LdapResult { .. } if tls == TlsMode::StartTls => SourceError::Tls {
                    url: url.clone(),
                    message: format!("the server refused StartTLS: {message}"),
                },
                _ => SourceError::Connect {
                    url: url.clone(),
                    message,
                },
            }
        })?;
    let driver_url = url.clone();
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.drive().await {
            debug!(url = %driver_url, error = %e, "LDAP connection ended with an error");
        }
    });

    let bind_dn = config.bind_dn.as_deref().unwrap_or("");
    let shown_dn = if bind_dn.is_empty() {
        "anonymous".to_owned()
    } else {
        bind_dn.to_owned()
    };
    let pw = match (bind_dn.is_empty(), password) {
        (true, _) => "",
        (false, Some(p)) if !p.is_empty() => p,
        (false, _) => {
            driver.abort();
            return Err(SourceError::Bind {
                url,
                bind_dn: shown_dn,
                rc: 48,
                message: "no bind password: an empty password would be an unauthenticated bind"
                    .into(),
            });
        }
    };
    let op_timeout = op_timeout(config.timeout_seconds);
    let bound = ldap.with_timeout(op_timeout).simple_bind(bind_dn, pw).await;
    let fail = |rc: u32, message: String| SourceError::Bind {
        url: url.clone(),
        bind_dn: shown_dn.clone(),
        rc,
        message: redact(&message, password),
    };
    let result = match bound {
        Ok(r) if r.rc == 0 => Ok(()),
        Ok(r) => Err(fail(r.rc, r.text)),
        Err(LdapError::Timeout { .. }) => Err(SourceError::Timeout {
            url: url.clone(),
            base_dn: config.base_dn.clone(),
            seconds: op_timeout.as_secs(),
        }),
        Err(e) => Err(SourceError::Connect {
            url: url.clone(),
            message: redact(&e.to_string(), password),
        }),
    };
    if let Err(e) = result {
        driver.abort();
        return Err(e);
    }
    debug!(url = %url, bind_dn = %shown_dn, tls = ?tls, "bound to LDAP");
    Ok(Session { ldap, driver, tls })
}

/// Runs one complete paged search and hands every entry to `on_entry`. Returns the number
/// of entries. Any non-zero result on any page, any continuation reference, any broken
/// connection is an error.
pub(super) async fn paged_search(
    ldap: &mut Ldap,
    ctx: &Ctx<'_>,
    filter: &str,
    attrs: &[String],
    mut on_entry: impl FnMut(RawEntry),
) -> Result<usize, SourceError> {
    let mut cookie: Vec<u8> = Vec::new();
    let mut total = 0usize;
    let mut page = 0u32;
    loop {
        page += 1;
        let control = PagedResults {
            size: ctx.page_size,
            cookie: std::mem::take(&mut cookie),
        };
        let opts = SearchOptions::new().timelimit(ctx.server_time_limit);
        let mut stream = ldap
            .with_controls(control)
            .with_search_options(opts)
            .with_timeout(ctx.op_timeout)
            .streaming_search(ctx.base_dn, ctx.scope, filter, attrs)
            .await
            .map_err(|e| match e {
                LdapError::FilterParsing => SourceError::Filter {
                    filter: filter.to_owned(),
                },
                e => ctx.search_error(e, total),
            })?;
        let mut in_page = 0usize;
        let mut refs: Vec<String> = Vec::new();
        loop {
            match stream.next().await {
                Ok(Some(entry)) if entry.is_ref() => refs.extend(ldap3::parse_refs(entry.0)),
                Ok(Some(entry)) if entry.is_intermediate() => {}
                Ok(Some(entry)) => {
                    let raw = match to_raw(entry.0) {
                        Ok(raw) => raw,
                        Err(message) => {
                            let _ = stream.finish().await;
                            return Err(SourceError::Malformed {
                                url: ctx.url.clone(),
                                base_dn: ctx.base_dn.to_owned(),
                                message,
                            });
                        }
                    };
                    on_entry(raw);
                    in_page += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = stream.finish().await;
                    return Err(ctx.search_error(e, total + in_page));
                }
            }
        }
        let result = stream.finish().await;
        total += in_page;
        debug!(
            url = %ctx.url, base_dn = %ctx.base_dn, page, entries = in_page, total, rc = result.rc,
            "read a page"
        );
        if !refs.is_empty() {
            return Err(SourceError::Referral {
                url: ctx.url.clone(),
                base_dn: ctx.base_dn.to_owned(),
                refs,
            });
        }
        if result.rc != 0 {
            let mut refs = result.refs;
            refs.retain(|r| !r.is_empty());
            return Err(ctx.result_error(result.rc, result.text, refs, total));
        }
        let next = result.ctrls.iter().find_map(|c| match c {
            Control(Some(ControlType::PagedResults), raw) => {
                Some(raw.parse::<PagedResults>().cookie)
            }
            Control(None, raw) if raw.ctype == PAGED_RESULTS_OID => {
                Some(raw.parse::<PagedResults>().cookie)
            }
            _ => None,
        });
        match next {
            // The server ignored the (non-critical) control and sent everything at once,
            // with success: complete.
            None => {
                if page == 1 {
                    debug!(url = %ctx.url, "server did not page the result");
                }
                return Ok(total);
            }
            Some(c) if c.is_empty() => return Ok(total),
            Some(c) => cookie = c,
        }
    }
}

/// Builds a `RawEntry` from a SearchResultEntry as it came off the wire.
///
/// Not `ldap3::SearchEntry::construct`: that puts the attributes in a map, so when an entry
/// carries the same attribute twice (a directory loaded with `slapadd -q` keeps two
/// instances when their LDIF lines were not adjacent, and slapd returns both) only the last
/// instance survives, and aliases vanish or a second `mail` silently becomes the primary.
/// The BER attribute list is a list: every instance is kept here and its values are
/// appended, in the order the server sent them, under the attribute name in lower case
/// (LDAP names are case-insensitive). A name with any value that is not UTF-8 is recorded in
/// `binary` and its values are left out of `attrs`, whichever instance held it.
///
/// Never panics: LDAP content is untrusted, and a malformed entry is an error saying what is
/// wrong, not a crash.
pub(super) fn to_raw(tag: StructureTag) -> Result<RawEntry, String> {
    // SearchResultEntry ::= [APPLICATION 4] SEQUENCE { objectName LDAPDN,
    //     attributes PartialAttributeList }
    if tag.class != TagClass::Application || tag.id != 4 {
        return Err(format!(
            "expected a SearchResultEntry ([APPLICATION 4]), got tag {:?} {}",
            tag.class, tag.id
        ));
    }
    let mut parts = constructed(tag, "the entry")?.into_iter();
    let dn = parts
        .next()
        .ok_or_else(|| "the entry has no DN".to_owned())
        .and_then(|t| primitive(t, "the DN"))?;
    let dn = String::from_utf8(dn).map_err(|_| "the DN is not UTF-8".to_owned())?;
    let mut raw = RawEntry {
        dn,
        ..RawEntry::default()
    };
    let list = match parts.next() {
        Some(t) => constructed(t, "the attribute list")?,
        // A server may leave out an empty list; nothing is lost.
        None => Vec::new(),
    };
    // PartialAttribute ::= SEQUENCE { type AttributeDescription, vals SET OF value }
    for attribute in list {
        let mut pair = constructed(attribute, "an attribute")?.into_iter();
        let name = pair
            .next()
            .ok_or_else(|| format!("an attribute of {} has no name", raw.dn))
            .and_then(|t| primitive(t, "an attribute name"))?;
        let mut name = String::from_utf8(name)
            .map_err(|_| format!("an attribute name of {} is not UTF-8", raw.dn))?;
        name.make_ascii_lowercase();
        let values = match pair.next() {
            Some(t) => constructed(t, "the values of an attribute")?,
            None => Vec::new(),
        };
        let mut text = Vec::with_capacity(values.len());
        let mut is_binary = false;
        for value in values {
            match String::from_utf8(primitive(value, "a value")?) {
                Ok(v) => text.push(v),
                Err(_) => is_binary = true,
            }
        }
        if is_binary {
            raw.binary.insert(name.clone());
        }
        // The values move in as they are: no copy for the usual single instance.
        match raw.attrs.entry(name) {
            Entry::Vacant(slot) => {
                slot.insert(text);
            }
            Entry::Occupied(mut slot) => slot.get_mut().extend(text),
        }
    }
    // Binary values are never half-used: the whole attribute is left out.
    let binary = &raw.binary;
    raw.attrs.retain(|name, _| !binary.contains(name));
    Ok(raw)
}

fn constructed(tag: StructureTag, what: &str) -> Result<Vec<StructureTag>, String> {
    match tag.payload {
        PL::C(inner) => Ok(inner),
        PL::P(_) => Err(format!("{what} is not a constructed BER element")),
    }
}

fn primitive(tag: StructureTag, what: &str) -> Result<Vec<u8>, String> {
    match tag.payload {
        PL::P(bytes) => Ok(bytes),
        PL::C(_) => Err(format!("{what} is not a primitive BER element")),
    }
}

/// Replaces one attribute's values, entry by entry (`migrate cutover --apply`): each
/// `(dn, attribute, value)` becomes a modify with a single `replace`. Connects and binds as
/// `config` says (StartTLS or LDAPS like a read; the caller puts the write bind in it).
/// Stops at the first refusal. Answers how many changes were made (in order) and how it
/// ended; the bind password never appears in an error.
pub async fn replace_values(
    config: &LdapConfig,
    changes: &[(String, String, String)],
) -> (usize, Result<(), SourceError>) {
    let session = match open(config).await {
        Ok(s) => s,
        Err(e) => return (0, Err(e)),
    };
    let url = display_url(&config.url);
    let password = config.bind_password.as_ref().map(|p| p.expose());
    let mut ldap = session.ldap.clone();
    let mut done = 0;
    let mut outcome = Ok(());
    for (dn, attribute, value) in changes {
        let values: std::collections::HashSet<&str> = [value.as_str()].into();
        let r = ldap
            .with_timeout(op_timeout(config.timeout_seconds))
            .modify(
                dn.as_str(),
                vec![ldap3::Mod::Replace(attribute.as_str(), values)],
            )
            .await;
        let (rc, message) = match r {
            Ok(r) if r.rc == 0 => {
                debug!(dn = %dn, attribute = %attribute, "modified");
                done += 1;
                continue;
            }
            Ok(r) => (r.rc, r.text),
            // 80: "other" (the client gave up: timeout, dropped connection).
            Err(e) => (80, e.to_string()),
        };
        outcome = Err(SourceError::Modify {
            url: url.clone(),
            dn: dn.clone(),
            rc,
            message: redact(&message, password),
        });
        break;
    }
    session.close().await;
    (done, outcome)
}

/// Reads the people of `selection`: every entry under `base_dn` that matches the configured
/// filter, with the mapped attributes only, and the `hidden`/`disabled` flags of the rules.
///
/// Returns every matching entry in server order, or an error: a partial result (size, time
/// or admin limit, referral, dropped connection, any non-zero result code) is never returned.
/// `Selection::Only` with no uid searches nothing and returns an empty list.
pub async fn read(
    config: &LdapConfig,
    selection: &Selection,
) -> Result<Vec<RawEntry>, SourceError> {
    let mut entries = Vec::new();
    read_each(config, selection, |e| entries.push(e)).await?;
    Ok(entries)
}

/// Like [`read`], but hands each entry to `on_entry` as it arrives instead of collecting
/// them, so a caller can map 50,000 entries without holding them all. Returns how many
/// entries were read. On an error, the entries already handed over are not the whole
/// directory: the caller must discard what it built from them.
pub async fn read_each(
    config: &LdapConfig,
    selection: &Selection,
    mut on_entry: impl FnMut(RawEntry),
) -> Result<usize, SourceError> {
    let started = Instant::now();
    let uid_attr = &config.attributes.uid;
    let Some(filter) = selection_filter(&config.filter, uid_attr, selection) else {
        info!(url = %display_url(&config.url), "no uid selected, nothing to read");
        return Ok(0);
    };
    if !is_valid(&filter) {
        return Err(SourceError::Filter {
            filter: config.filter.clone(),
        });
    }
    // Rule filters: (&<filter-with-selection><rule>).
    let mut rules: Vec<(&'static str, String)> = Vec::new();
    for (name, rule) in [
        ("hidden", &config.rules.hidden_filter),
        ("disabled", &config.rules.disabled_filter),
    ] {
        if let Some(rule) = rule.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
            let combined = and(&[&filter, rule]);
            if !is_valid(&combined) {
                return Err(SourceError::Filter {
                    filter: rule.to_owned(),
                });
            }
            rules.push((name, combined));
        }
    }

    let ctx = Ctx::new(config);
    let mut attrs = config.attributes.requested();
    if attrs.is_empty() {
        // An empty list would ask for every user attribute; ask for none instead.
        attrs.push("1.1".into());
    }
    // The rule searches come first (DNs only, each on its own connection, at the same time),
    // so every entry of the main search can be flagged and handed on the moment it arrives.
    // Run beside the main search instead (its entries held until the rules were known), they
    // saved nothing measurable at 50,000 people: during the read slapd and this process
    // already keep both cores of the benchmark machine busy.
    let client = client_tls(config)?;
    let searches = rules
        .iter()
        .map(|(name, rule)| rule_search(config, &ctx, client.clone(), name, rule));
    let flags = Flags::new(futures_util::future::try_join_all(searches).await?);
    let rules_ms = millis(started);

    let mut tally = Tally::default();
    let mut session = open_with(config, client).await?;
    let connected_ms = millis(started);
    let done = paged_search(&mut session.ldap, &ctx, &filter, &attrs, |entry| {
        tally.hand(flags.apply(entry), &mut on_entry);
    })
    .await;
    session.close().await;
    let count = done?;
    let Tally {
        hidden,
        disabled,
        binary,
    } = tally;

    if binary > 0 {
        warn!(url = %ctx.url, entries = binary, "some entries have attribute values that are not UTF-8");
    }
    info!(
        url = %ctx.url,
        base_dn = %ctx.base_dn,
        selection = if matches!(selection, Selection::All) { "all" } else { "only" },
        entries = count,
        hidden,
        disabled,
        connected_ms,
        rules_ms,
        elapsed_ms = millis(started),
        "read LDAP entries"
    );
    Ok(count)
}

/// Milliseconds since `started`, for the phase times in the log.
fn millis(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One rule search: the normalized DNs of the entries `rule` (already combined with the
/// read's filter) matches, asking for no attribute.
async fn rule_search(
    config: &LdapConfig,
    ctx: &Ctx<'_>,
    client: Option<Arc<rustls::ClientConfig>>,
    name: &'static str,
    rule: &str,
) -> Result<(&'static str, HashSet<String>), SourceError> {
    let mut session = open_with(config, client).await?;
    let mut dns = HashSet::new();
    let no_attrs = vec![String::from("1.1")];
    let done = paged_search(&mut session.ldap, ctx, rule, &no_attrs, |e| {
        dns.insert(normalize_dn(&e.dn));
    })
    .await;
    session.close().await;
    done?;
    debug!(url = %ctx.url, rule = name, matched = dns.len(), "applied rule");
    Ok((name, dns))
}

/// The DNs each rule matched (normalized); `None` for a rule not configured.
struct Flags {
    hidden: Option<HashSet<String>>,
    disabled: Option<HashSet<String>>,
}

impl Flags {
    fn new(flagged: Vec<(&'static str, HashSet<String>)>) -> Self {
        let mut flags = Flags {
            hidden: None,
            disabled: None,
        };
        for (name, dns) in flagged {
            match name {
                "hidden" => flags.hidden = Some(dns),
                _ => flags.disabled = Some(dns),
            }
        }
        flags
    }

    /// Sets the entry's `hidden` and `disabled` from the rules.
    fn apply(&self, mut entry: RawEntry) -> RawEntry {
        if self.hidden.is_some() || self.disabled.is_some() {
            let dn = normalize_dn(&entry.dn);
            entry.hidden = self.hidden.as_ref().is_some_and(|d| d.contains(&dn));
            entry.disabled = self.disabled.as_ref().is_some_and(|d| d.contains(&dn));
        }
        entry
    }
}

/// What the read counts for its log lines.
#[derive(Default)]
struct Tally {
    hidden: usize,
    disabled: usize,
    binary: usize,
}

impl Tally {
    /// Counts a flagged entry and hands it on.
    fn hand(&mut self, entry: RawEntry, on_entry: &mut impl FnMut(RawEntry)) {
        self.hidden += usize::from(entry.hidden);
        self.disabled += usize::from(entry.disabled);
        self.binary += usize::from(!entry.binary.is_empty());
        on_entry(entry);
    }
}

/// The entries under `base_dn` (with the configured scope) that `filter` matches, with the
/// anchor attribute only: what `--approve-removals N --scope (filter)` covers. One paged
/// search; the configured filter is not added, since a leaver is often no longer matched by
/// it. Every entry or an error, as for [`read`].
pub async fn search_anchors(
    config: &LdapConfig,
    filter: &str,
) -> Result<Vec<RawEntry>, SourceError> {
    if !is_valid(filter) {
        return Err(SourceError::Filter {
            filter: filter.to_owned(),
        });
    }
    let ctx = Ctx::new(config);
    let attrs = vec![config.attributes.anchor.clone()];
    let mut entries = Vec::new();
    let mut session = open(config).await?;
    let done = paged_search(&mut session.ldap, &ctx, filter, &attrs, |e| entries.push(e)).await;
    session.close().await;
    done?;
    debug!(url = %ctx.url, filter, matched = entries.len(), "searched the approval scope");
    Ok(entries)
}

/// For `check-config`: connects, binds, checks that the base DN exists and the filters
/// parse, and reads what the root DSE tells about the server.
pub async fn check(config: &LdapConfig) -> Result<CheckReport, SourceError> {
    for f in [
        Some(&config.filter),
        config.rules.hidden_filter.as_ref(),
        config.rules.disabled_filter.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        if !is_valid(f.trim()) {
            return Err(SourceError::Filter { filter: f.clone() });
        }
    }
    let ctx = Ctx::new(config);
    let mut session = open(config).await?;
    let outcome = async {
        // The base DN must exist.
        let mut stream = session
            .ldap
            .with_timeout(ctx.op_timeout)
            .streaming_search(ctx.base_dn, LdapScope::Base, "(objectClass=*)", vec!["1.1"])
            .await
            .map_err(|e| ctx.search_error(e, 0))?;
        loop {
            match stream.next().await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => return Err(ctx.search_error(e, 0)),
            }
        }
        let res = stream.finish().await;
        if res.rc != 0 {
            return Err(ctx.result_error(res.rc, res.text, res.refs, 0));
        }

        // The root DSE is informative only: a server may hide it.
        let mut vendor = None;
        let mut naming_contexts = Vec::new();
        let mut paged_results = None;
        let mut content_sync = None;
        let dse = session
            .ldap
            .with_timeout(ctx.op_timeout)
            .search(
                "",
                LdapScope::Base,
                "(objectClass=*)",
                vec![
                    "vendorName",
                    "vendorVersion",
                    "namingContexts",
                    "supportedControl",
                ],
            )
            .await;
        match dse {
            Ok(ldap3::SearchResult(found, res)) if res.rc == 0 => {
                // Informative only: an entry that does not parse just tells nothing.
                if let Some(e) = found
                    .into_iter()
                    .find(|e| !e.is_ref())
                    .and_then(|e| to_raw(e.0).ok())
                {
                    let get = |name: &str| e.values(name).to_vec();
                    let v: Vec<String> = get("vendorName")
                        .into_iter()
                        .chain(get("vendorVersion"))
                        .collect();
                    if !v.is_empty() {
                        vendor = Some(v.join(" "));
                    }
                    naming_contexts = get("namingContexts");
                    let controls = get("supportedControl");
                    if !controls.is_empty() {
                        paged_results = Some(controls.iter().any(|c| c == PAGED_RESULTS_OID));
                        content_sync = Some(controls.iter().any(|c| c == SYNC_REQUEST_OID));
                    }
                }
            }
            Ok(ldap3::SearchResult(_, res)) => debug!(rc = res.rc, "cannot read the root DSE"),
            Err(e) => debug!(error = %e, "cannot read the root DSE"),
        }
        Ok((vendor, naming_contexts, paged_results, content_sync))
    }
    .await;
    let tls = session.tls;
    session.close().await;
    let (vendor, naming_contexts, paged_results, content_sync) = outcome?;

    let mut warnings = Vec::new();
    if !tls.is_tls() && config.bind_dn.is_some() {
        warnings.push("the connection is not encrypted: the bind password travels in clear text (use ldaps:// or starttls = true)".into());
    }
    if paged_results == Some(false) {
        warnings.push("the server does not list the paged results control: large directories may hit its size limit".into());
    }
    if config.content_sync && content_sync == Some(false) {
        warnings.push("ldap.content_sync is on, but the server does not list LDAP content synchronisation (RFC 4533): load the syncprov overlay, or every run reads with the paged search".into());
    }
    if !naming_contexts.is_empty() {
        let base = normalize_dn(&config.base_dn);
        let inside = naming_contexts.iter().any(|nc| {
            let nc = normalize_dn(nc);
            base == nc || base.ends_with(&format!(",{nc}"))
        });
        if !inside {
            warnings.push(format!(
                "base DN `{}` is not under any naming context the server lists ({})",
                config.base_dn,
                naming_contexts.join("; ")
            ));
        }
    }
    Ok(CheckReport {
        url: ctx.url.clone(),
        tls,
        bind_dn: config.bind_dn.clone(),
        base_dn: config.base_dn.clone(),
        vendor,
        naming_contexts,
        paged_results,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_config_builds_without_a_process_provider() {
        // No CryptoProvider::install_default anywhere: the provider is passed explicitly.
        tls_config(None).unwrap();
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let err = tls_config(Some(&missing)).unwrap_err();
        assert!(matches!(err, SourceError::CaFile { .. }), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = tls_config(Some(&empty)).unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
    }

    /// An octet string (universal primitive tag 4).
    fn octets(bytes: &[u8]) -> StructureTag {
        StructureTag {
            class: TagClass::Universal,
            id: 4,
            payload: PL::P(bytes.to_vec()),
        }
    }

    /// A universal constructed tag (16: SEQUENCE, 17: SET).
    fn seq(id: u64, inner: Vec<StructureTag>) -> StructureTag {
        StructureTag {
            class: TagClass::Universal,
            id,
            payload: PL::C(inner),
        }
    }

    /// A SearchResultEntry as the server sends it: attributes in the given order, each
    /// instance on its own, repeats included.
    fn wire_entry(dn: &str, attrs: &[(&str, &[&[u8]])]) -> StructureTag {
        let list = attrs
            .iter()
            .map(|(name, values)| {
                seq(
                    16,
                    vec![
                        octets(name.as_bytes()),
                        seq(17, values.iter().map(|v| octets(v)).collect()),
                    ],
                )
            })
            .collect();
        StructureTag {
            class: TagClass::Application,
            id: 4,
            payload: PL::C(vec![octets(dn.as_bytes()), seq(16, list)]),
        }
    }

    #[test]
    fn raw_entries_have_lower_case_names_and_record_binary() {
        let raw = to_raw(wire_entry(
            "uid=a,dc=x",
            &[
                ("entryUUID", &[b"u-1"]),
                ("mail", &[b"a@x"]),
                ("displayName", &[&[0xff, 0xfe]]),
            ],
        ))
        .unwrap();
        assert_eq!(raw.dn, "uid=a,dc=x");
        assert_eq!(raw.first("entryuuid"), Some("u-1"));
        assert_eq!(raw.first("ENTRYUUID"), Some("u-1"));
        assert!(raw.attrs.contains_key("entryuuid"));
        assert!(raw.is_binary("displayName"));
        assert!(raw.values("displayname").is_empty());
    }

    #[test]
    fn every_instance_of_a_repeated_attribute_is_kept_in_server_order() {
        // What slapd returns for an entry loaded with `slapadd -q` from non-adjacent LDIF
        // lines: two instances of mailAlternateAddress and of mail, the second in other case.
        let raw = to_raw(wire_entry(
            "uid=dup,ou=people,dc=example,dc=edu",
            &[
                ("mail", &[b"dup@example.edu"]),
                ("mailAlternateAddress", &[b"one@example.edu"]),
                ("mailHost", &[b"mx1.example.edu"]),
                (
                    "mailAlternateAddress",
                    &[b"two@example.edu", b"three@example.edu"],
                ),
                ("MAIL", &[b"second@example.edu"]),
            ],
        ))
        .unwrap();
        assert_eq!(
            raw.values("mailalternateaddress"),
            ["one@example.edu", "two@example.edu", "three@example.edu"]
        );
        assert_eq!(
            raw.values("mail"),
            ["dup@example.edu", "second@example.edu"],
            "the first mail stays first, the second is not dropped"
        );
        assert_eq!(raw.values("mailhost"), ["mx1.example.edu"]);
        assert_eq!(raw.attrs.len(), 3);
        assert!(raw.binary.is_empty());
    }

    #[test]
    fn a_binary_value_in_any_instance_marks_the_whole_attribute() {
        let raw = to_raw(wire_entry(
            "uid=b,dc=x",
            &[
                ("sn", &[b"Text"]),
                ("cn", &[b"B"]),
                ("SN", &[&[0xc3, 0x28]]),
            ],
        ))
        .unwrap();
        assert!(raw.is_binary("sn"));
        assert!(raw.values("sn").is_empty(), "no half-used binary attribute");
        assert_eq!(raw.values("cn"), ["B"]);
    }

    #[test]
    fn a_malformed_entry_is_an_error_not_a_panic() {
        // Not a SearchResultEntry at all.
        assert!(to_raw(octets(b"x")).is_err());
        // An attribute that is a bare octet string instead of a sequence.
        let bad = StructureTag {
            class: TagClass::Application,
            id: 4,
            payload: PL::C(vec![octets(b"uid=a,dc=x"), seq(16, vec![octets(b"mail")])]),
        };
        let err = to_raw(bad).unwrap_err();
        assert!(err.contains("not a constructed"), "{err}");
        // A DN that is not UTF-8.
        let bad = StructureTag {
            class: TagClass::Application,
            id: 4,
            payload: PL::C(vec![octets(&[0xff]), seq(16, vec![])]),
        };
        assert!(to_raw(bad).unwrap_err().contains("DN"));
        // No attribute list at all: an entry with no attributes.
        let bare = StructureTag {
            class: TagClass::Application,
            id: 4,
            payload: PL::C(vec![octets(b"uid=a,dc=x")]),
        };
        assert_eq!(to_raw(bare).unwrap().dn, "uid=a,dc=x");
    }

    #[test]
    fn result_codes_map_to_errors_that_refuse_a_partial_read() {
        let config = LdapConfig {
            url: "ldap://ldap.example.edu".into(),
            starttls: false,
            ca_file: None,
            bind_dn: None,
            bind_password_file: None,
            bind_password: None,
            base_dn: "ou=people,dc=example,dc=edu".into(),
            scope: Scope::Sub,
            filter: "(objectClass=*)".into(),
            page_size: 10,
            timeout_seconds: 60,
            content_sync: false,
            full_reconcile_interval_hours: 24,
            attributes: Default::default(),
            rules: Default::default(),
        };
        let ctx = Ctx::new(&config);
        let e = |rc| ctx.result_error(rc, "text".into(), vec!["ldap://other/".into()], 7);
        assert!(matches!(
            e(3),
            SourceError::Limit {
                rc: 3,
                entries: 7,
                ..
            }
        ));
        assert!(matches!(e(4), SourceError::Limit { rc: 4, .. }));
        assert!(matches!(e(11), SourceError::Limit { rc: 11, .. }));
        assert!(
            matches!(e(10), SourceError::Referral { ref refs, .. } if refs == &["ldap://other/"])
        );
        assert!(matches!(e(32), SourceError::NoSuchBase { .. }));
        assert!(matches!(e(50), SourceError::Search { rc: 50, .. }));
        assert!(e(3).to_string().contains("timeLimitExceeded (rc 3)"));
        let dropped = ctx.search_error(LdapError::EndOfStream, 3);
        assert!(
            matches!(dropped, SourceError::Dropped { entries: 3, .. }),
            "{dropped}"
        );
    }

    #[test]
    fn the_rules_flag_entries_by_normalized_dn_and_are_counted() {
        let entry = |dn: &str| RawEntry {
            dn: dn.into(),
            ..RawEntry::default()
        };
        let dns = |list: &[&str]| list.iter().map(|d| normalize_dn(d)).collect();
        let flags = Flags::new(vec![
            ("hidden", dns(&["uid=a,dc=x", "uid=d,dc=x"])),
            ("disabled", dns(&["UID=B, DC=X"])),
        ]);
        let mut seen: Vec<(String, bool, bool)> = Vec::new();
        let mut tally = Tally::default();
        let mut on_entry = |e: RawEntry| seen.push((e.dn, e.hidden, e.disabled));
        for dn in ["uid=a,dc=x", "uid=b,dc=x", "uid=c,dc=x", "UID=D,DC=X"] {
            tally.hand(flags.apply(entry(dn)), &mut on_entry);
        }
        assert_eq!(
            seen,
            [
                ("uid=a,dc=x".to_owned(), true, false),
                ("uid=b,dc=x".to_owned(), false, true),
                ("uid=c,dc=x".to_owned(), false, false),
                ("UID=D,DC=X".to_owned(), true, false),
            ]
        );
        assert_eq!((tally.hidden, tally.disabled, tally.binary), (2, 1, 0));

        // Without rules nothing is flagged, whatever the entry said.
        let none = Flags::new(Vec::new());
        let mut flagged = entry("uid=a,dc=x");
        flagged.hidden = true;
        assert!(none.apply(flagged).hidden, "left as it was");
    }

    #[test]
    fn only_plain_urls_are_connected_here() {
        assert_eq!(
            host_port("ldap://ldap.example.edu", false),
            Some(("ldap.example.edu", 389))
        );
        assert_eq!(
            host_port("ldaps://ldap.example.edu", true),
            Some(("ldap.example.edu", 636))
        );
        assert_eq!(
            host_port("ldap://127.0.0.1:3389/dc=x?uid", false),
            Some(("127.0.0.1", 3389))
        );
        // Left to ldap3, which parses URLs fully and reports what is wrong with them.
        for url in [
            "ldap://[::1]:389",
            "ldap://user@host",
            "ldap://ho%73t",
            "ldap://host:99999",
            "ldap://host:",
            "ldap://",
            "ldap.example.edu",
        ] {
            assert_eq!(host_port(url, false), None, "{url}");
        }
    }

    #[test]
    fn op_timeout_leaves_room_for_the_server_limit() {
        assert_eq!(op_timeout(120), Duration::from_secs(150));
        assert_eq!(op_timeout(0), Duration::from_secs(600));
    }
}
