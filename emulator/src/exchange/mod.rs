//! The Exchange Online admin API as the ExchangeOnlineManagement v3 module uses it:
//! `POST /adminapi/beta/{tenant}/InvokeCommand` with
//! `{"CmdletInput":{"CmdletName":"...","Parameters":{...}}}` and a bearer token for
//! `https://outlook.office365.com`. Answers `{"value":[...]}`, paged by POSTing the same body
//! to `@odata.nextLink`. Errors look like live tenants' (see [`ExoError::to_resp`]): a generic
//! `error.message`, the useful `Ex<hex>|Exception.Type|text` only in `error.details[0].message`,
//! and a wrapper exception in `error.innererror.internalexception`.

mod addresses;
pub mod cmdlets;
mod connectors;
pub mod migration;
pub mod opath;

use crate::auth::{Audience, BearerProblem, tenant_matches};
use crate::faults::Api;
use crate::shared::{Gate, Shared, lock};
use crate::store::now_millis;
use crate::util::{b64url, b64url_decode, query_escape};
use crate::wire::{Req, Resp};
use serde_json::{Map, Value, json};

/// Exchange's default page size for the REST endpoint when the client sends no
/// `Prefer: odata.maxpagesize`.
const DEFAULT_PAGE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ExoError {
    #[error(
        "The operation couldn't be performed because object '{0}' couldn't be found on 'EMUPR01MB0001.prod.outlook.com'."
    )]
    NotFound(String),
    #[error("The operation couldn't be performed because '{0}' matches multiple entries.")]
    Ambiguous(String),
    /// The address, and the holder as Exchange names it (`<server>/Microsoft Exchange Hosted
    /// Organizations/<tenant>.onmicrosoft.com/<Name>`): MicrosoftDocs/OfficeDocs-Support
    /// `Exchange/ExchangeOnline/email-alias/proxy-address-being-used.md`, "Error 1".
    #[error(
        "The proxy address \"{0}\" is already being used by \"{1}\". Choose another proxy address."
    )]
    ProxyInUse(String, String),
    #[error("The name \"{0}\" is already being used. Please try another name.")]
    NameInUse(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    Parameter(String),
    #[error("{0}")]
    Task(String),
    #[error(
        "The term '{0}' is not recognized as the name of a cmdlet, function, script file, or operable program."
    )]
    UnknownCmdlet(String),
    #[error("{0}")]
    BadBody(String),
    #[error("{0}")]
    Unauthorized(BearerProblem),
    #[error("Too many requests. Please retry after the time given in Retry-After.")]
    Throttled { retry_after: String },
    #[error("Injected failure {status}.")]
    Injected { status: u16, retry_after: String },
    /// Too many cmdlet calls in flight at once (plain-text 429, no `Retry-After`).
    #[error(
        "You have reached the maximum number of concurrent requests per tenant. Please wait and try again."
    )]
    Concurrency,
    /// A nextLink used after its lifetime or a second time.
    #[error("Expired or Invalid pagination request. Default Expiry time is 00:30:00")]
    PagingExpired,
}

/// The wrapper exception live tenants put in `innererror.internalexception`.
const WRAPPER: &str =
    "Microsoft.Exchange.Management.PSDirectInvoke.DirectInvokeCmdletExecutionException";

/// `Ex` + 6 hex digits, stable per exception type (live values look like `Ex6F9304`).
fn ex_code(ty: &str) -> String {
    let h = ty.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    format!("Ex{:06X}", h & 0xff_ffff)
}

impl ExoError {
    pub fn status(&self) -> u16 {
        match self {
            ExoError::NotFound(_) => 404,
            ExoError::Unauthorized(_) => 401,
            ExoError::Throttled { .. } | ExoError::Concurrency => 429,
            ExoError::Injected { status, .. } => *status,
            _ => 400,
        }
    }

    fn exception(&self) -> &'static str {
        match self {
            ExoError::NotFound(_) => {
                "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"
            }
            ExoError::Ambiguous(_) => {
                "Microsoft.Exchange.Configuration.Tasks.ManagementObjectAmbiguousException"
            }
            ExoError::ProxyInUse(..) => {
                "Microsoft.Exchange.Data.Directory.ProxyAddressExistsException"
            }
            ExoError::NameInUse(_) => {
                "Microsoft.Exchange.Data.Directory.ADObjectAlreadyExistsException"
            }
            ExoError::Validation(_) => "Microsoft.Exchange.Data.DataValidationException",
            ExoError::Parameter(_) => "System.Management.Automation.ParameterBindingException",
            ExoError::Task(_) | ExoError::PagingExpired => {
                "Microsoft.Exchange.Configuration.Tasks.TaskException"
            }
            ExoError::UnknownCmdlet(_) => "System.Management.Automation.CommandNotFoundException",
            ExoError::BadBody(_) => "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
            ExoError::Unauthorized(_) => {
                "Microsoft.Exchange.Security.Authorization.UnauthorizedAccessException"
            }
            ExoError::Throttled { .. }
            | ExoError::Concurrency
            | ExoError::Injected { status: 429, .. } => {
                "Microsoft.Exchange.Net.Throttling.ThrottlingException"
            }
            ExoError::Injected { .. } => "Microsoft.Exchange.Data.Storage.TransientException",
        }
    }

    fn code(&self) -> &'static str {
        match self.status() {
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            429 => "TooManyRequests",
            500 => "InternalServerError",
            502 => "BadGateway",
            503 => "ServiceUnavailable",
            504 => "GatewayTimeout",
            _ => "BadRequest",
        }
    }

    /// `Ex<hex>|<exception type>|<text>`: what live tenants put in `details[0].message`
    /// (and the strings of `@adminapi.errors`).
    pub fn detail_text(&self) -> String {
        let ty = self.exception();
        format!("{}|{ty}|{self}", ex_code(ty))
    }

    /// Whether the body carries `details` (live tenants leave it out for some errors: here an
    /// unknown cmdlet and injected 5xx; their text is then in `innererror.internalexception`).
    fn has_details(&self) -> bool {
        !matches!(self, ExoError::UnknownCmdlet(_)) && self.status() < 500
    }

    pub fn to_resp(&self) -> Resp {
        let status = self.status();
        match self {
            // Live 403s have carried a run of NUL bytes, not JSON.
            _ if status == 403 => return Resp::text(403, "text/plain", vec![0u8; 8]),
            ExoError::Concurrency => {
                return Resp::text(429, "text/plain; charset=utf-8", self.to_string());
            }
            _ => {}
        }
        let message = if status >= 500 {
            "Invalid Operation"
        } else {
            "Error executing cmdlet"
        };
        let mut err = json!({
            "code": self.code(),
            "message": message,
            "innererror": {
                "message": message,
                "type": "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
                "stacktrace": "",
                "internalexception": {
                    "message": format!("Exception of type '{WRAPPER}' was thrown."),
                    "type": WRAPPER,
                    "stacktrace": "",
                },
            },
        });
        if self.has_details() {
            err["details"] =
                json!([{"code": "Client", "target": "", "message": self.detail_text()}]);
        } else {
            // Without details, live bodies carry the real exception here instead (graph2otel's
            // captured invalid-enum body).
            err["innererror"]["internalexception"] =
                json!({"message": self.to_string(), "type": self.exception(), "stacktrace": ""});
        }
        let mut r = Resp::json(status, &json!({"error": err}));
        match self {
            ExoError::Throttled { retry_after }
            | ExoError::Injected {
                status: 429 | 503,
                retry_after,
            } => {
                r = r.with_header("retry-after", retry_after.clone());
            }
            ExoError::Unauthorized(_) => {
                r = r.with_header("www-authenticate", "Bearer client_id=\"00000002-0000-0ff1-ce00-000000000000\", token_types=\"app_asserted_user_v1 service_asserted_app_v1\", error=\"invalid_token\"");
            }
            _ => {}
        }
        r
    }
}

/// What a cmdlet produced.
pub struct Output {
    pub values: Vec<Value>,
    pub warnings: Vec<String>,
    /// Set when `values` is already the page the request asked for ([`Window`]): how many
    /// values the whole result has.
    pub total: Option<usize>,
}

/// The page of a listing a request asks for: a listing that can count its result without
/// building every object's view builds only this page's ([`page`] slices the others).
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub offset: usize,
    pub size: usize,
}

fn page_size(req: &Req) -> usize {
    req.max_page_size().unwrap_or(DEFAULT_PAGE)
}

/// Handles `POST /adminapi/beta/{tenant}/InvokeCommand`.
pub fn handle(sh: &Shared, req: &Req, tenant: &str) -> Resp {
    let envelope_label = "POST /adminapi/beta/{tenant}/InvokeCommand";
    let with_rid = |r: Resp| r.with_header("request-id", sh.request_id());
    if let Err(p) = lock(&sh.tokens).check(req.header("authorization"), Audience::Exchange) {
        lock(&sh.counters).bump(envelope_label, |e| e.requests += 1);
        sh.count_error(envelope_label, 401);
        return with_rid(ExoError::Unauthorized(p).to_resp());
    }
    if req.method != "POST" {
        return with_rid(ExoError::BadBody("InvokeCommand accepts POST only.".into()).to_resp());
    }
    let tenant_ok = tenant_matches(&lock(&sh.store).tenant, tenant);
    if !tenant_ok {
        lock(&sh.counters).bump(envelope_label, |e| e.requests += 1);
        sh.count_error(envelope_label, 400);
        return with_rid(
            ExoError::Task(format!("The organization '{tenant}' was not found.")).to_resp(),
        );
    }
    let parsed = req.json().ok().and_then(|v| {
        let input = v.get("CmdletInput")?.as_object()?.clone();
        let name = input.get("CmdletName")?.as_str()?.to_string();
        let params = match input.get("Parameters") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return None,
        };
        Some((name, params))
    });
    let Some((cmdlet, params)) = parsed else {
        lock(&sh.counters).bump(envelope_label, |e| e.requests += 1);
        sh.count_error(envelope_label, 400);
        return with_rid(
            ExoError::BadBody("The request body must be {\"CmdletInput\":{\"CmdletName\":...,\"Parameters\":{...}}}.".into()).to_resp(),
        );
    };
    let label = format!("EXO {cmdlet}");
    let verb = cmdlet.split('-').next().unwrap_or("").to_ascii_lowercase();
    let is_write = matches!(
        verb.as_str(),
        "new" | "set" | "remove" | "enable" | "disable" | "add" | "complete"
    );
    let drop = match sh.gate(Api::Exchange, &label, is_write, 1) {
        Gate::Proceed { drop, .. } => drop,
        Gate::NonTerminating => return with_rid(non_terminating(sh, tenant, &cmdlet, &params)),
        Gate::Throttle { retry_after } => {
            return with_rid(ExoError::Throttled { retry_after }.to_resp());
        }
        Gate::Inject {
            status,
            retry_after,
        } => {
            return with_rid(
                ExoError::Injected {
                    status,
                    retry_after,
                }
                .to_resp(),
            );
        }
    };
    // The page to serve is checked before running: an expired link runs nothing.
    let offset = match next_link_offset(sh, req, &cmdlet) {
        Ok(o) => o,
        Err(e) => {
            sh.count_error(&label, e.status());
            return with_rid(e.to_resp());
        }
    };
    let out = {
        let mut store = lock(&sh.store);
        store.purge_expired();
        store.settle();
        let window = Window {
            offset,
            size: page_size(req),
        };
        cmdlets::run(&mut store, &cmdlet, params, window)
    };
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            sh.count_error(&label, e.status());
            return with_rid(e.to_resp());
        }
    };
    let mut r = with_rid(page(sh, req, tenant, &cmdlet, out, offset));
    r.drop = drop;
    r
}

/// Runs [`handle`] under the concurrency limit and with the artificial processing time of
/// [`crate::config::Realism`].
pub async fn handle_limited(sh: std::sync::Arc<Shared>, req: Req, tenant: String) -> Resp {
    use std::sync::atomic::Ordering;
    struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);
    impl Drop for InFlight<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let n = sh.exchange_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _guard = InFlight(&sh.exchange_in_flight);
    let realism = &sh.settings.realism;
    if realism.exchange_max_concurrent.is_some_and(|max| n > max) {
        let label = "POST /adminapi/beta/{tenant}/InvokeCommand";
        lock(&sh.counters).bump(label, |e| {
            e.requests += 1;
            e.throttled += 1;
        });
        return ExoError::Concurrency
            .to_resp()
            .with_header("request-id", sh.request_id());
    }
    if realism.exchange_cmdlet_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(realism.exchange_cmdlet_ms)).await;
    }
    handle(&sh, &req, &tenant)
}

/// 200 with `@adminapi.errors` and no effect: a non-terminating error (targeted fault).
fn non_terminating(sh: &Shared, tenant: &str, cmdlet: &str, params: &Map<String, Value>) -> Resp {
    let target = params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Identity") || k.eq_ignore_ascii_case("Name"))
        .and_then(|(_, v)| v.as_str())
        .unwrap_or("")
        .to_string();
    let e = ExoError::Task(format!(
        "The operation on '{target}' couldn't be completed by {cmdlet} (injected non-terminating error)."
    ));
    Resp::json(
        200,
        &json!({
            "@odata.context": format!("{}/adminapi/beta/{tenant}/$metadata#Collection(Exchange.GenericHashTable)", sh.base_url),
            "adminapi.errors@odata.type": "#Collection(String)",
            "@adminapi.errors": [e.detail_text()],
            "value": [],
        }),
    )
}

/// The offset a `$skiptoken` asks for. Tokens are `cmdlet:offset:issued_ms:nonce`, bound to
/// the cmdlet name; with a nextLink lifetime configured they are single use and expire.
fn next_link_offset(sh: &Shared, req: &Req, cmdlet: &str) -> Result<usize, ExoError> {
    let Some(t) = req.query("$skiptoken") else {
        return Ok(0);
    };
    let foreign = || ExoError::BadBody("The $skiptoken does not belong to this request.".into());
    let text = b64url_decode(t)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(foreign)?;
    let parts: Vec<&str> = text.splitn(4, ':').collect();
    let [name, off, issued, nonce] = parts.as_slice() else {
        return Err(foreign());
    };
    if !name.eq_ignore_ascii_case(cmdlet) {
        return Err(foreign());
    }
    let off: usize = off.parse().map_err(|_| foreign())?;
    if let Some(ttl) = sh.settings.realism.exchange_next_link_ttl_ms {
        let issued: u64 = issued.parse().map_err(|_| foreign())?;
        let fresh = now_millis() <= issued + ttl;
        let first_use = lock(&sh.used_next_links).insert(nonce.to_string());
        if !fresh || !first_use {
            return Err(ExoError::PagingExpired);
        }
    }
    Ok(off)
}

/// One page of a cmdlet's output, with `@odata.nextLink` when more remain.
fn page(sh: &Shared, req: &Req, tenant: &str, cmdlet: &str, out: Output, offset: usize) -> Resp {
    let size = page_size(req);
    let (total, page): (usize, Vec<Value>) = match out.total {
        Some(total) => (total, out.values),
        None => (
            out.values.len(),
            out.values.into_iter().skip(offset).take(size).collect(),
        ),
    };
    let mut body = json!({
        "@odata.context": format!("{}/adminapi/beta/{tenant}/$metadata#Collection(Exchange.GenericHashTable)", sh.base_url),
    });
    if !out.warnings.is_empty() {
        body["adminapi.warnings@odata.type"] = json!("#Collection(String)");
        body["@adminapi.warnings"] = json!(out.warnings);
    }
    if offset + size < total {
        let token = b64url(
            format!(
                "{cmdlet}:{}:{}:{}",
                offset + size,
                now_millis(),
                sh.request_id()
            )
            .as_bytes(),
        );
        body["@odata.nextLink"] = json!(format!(
            "{}/adminapi/beta/{tenant}/InvokeCommand?$skiptoken={}",
            sh.base_url,
            query_escape(&token)
        ));
    }
    body["value"] = Value::Array(page);
    Resp::json(200, &body)
}
