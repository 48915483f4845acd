//! The Exchange Online admin API as the ExchangeOnlineManagement v3 module uses it:
//! `POST /adminapi/beta/{tenant}/InvokeCommand` with
//! `{"CmdletInput":{"CmdletName":"...","Parameters":{...}}}` and a bearer token for
//! `https://outlook.office365.com`. Answers `{"value":[...]}`, paged by POSTing the same body
//! to `@odata.nextLink`. Errors carry Exchange's `|Exception.Type|message` text in
//! `error.message`, `error.details[].message` and `error.innererror.internalException`.

pub mod cmdlets;
pub mod opath;

use crate::auth::{Audience, BearerProblem, tenant_matches};
use crate::faults::Api;
use crate::shared::{Gate, Shared, lock};
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
    #[error(
        "The proxy address \"{0}\" is already being used by the proxy addresses or LegacyExchangeDN. Please choose another proxy address."
    )]
    ProxyInUse(String),
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
}

impl ExoError {
    pub fn status(&self) -> u16 {
        match self {
            ExoError::NotFound(_) => 404,
            ExoError::Unauthorized(_) => 401,
            ExoError::Throttled { .. } => 429,
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
            ExoError::ProxyInUse(_) => {
                "Microsoft.Exchange.Data.Directory.ProxyAddressExistsException"
            }
            ExoError::NameInUse(_) => {
                "Microsoft.Exchange.Data.Directory.ADObjectAlreadyExistsException"
            }
            ExoError::Validation(_) => "Microsoft.Exchange.Data.DataValidationException",
            ExoError::Parameter(_) => "System.Management.Automation.ParameterBindingException",
            ExoError::Task(_) => "Microsoft.Exchange.Management.Tasks.RecipientTaskException",
            ExoError::UnknownCmdlet(_) => "System.Management.Automation.CommandNotFoundException",
            ExoError::BadBody(_) => "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
            ExoError::Unauthorized(_) => {
                "Microsoft.Exchange.Security.Authorization.UnauthorizedAccessException"
            }
            ExoError::Throttled { .. } | ExoError::Injected { status: 429, .. } => {
                "Microsoft.Exchange.Net.Throttling.ThrottlingException"
            }
            ExoError::Injected { .. } => "Microsoft.Exchange.Data.Storage.TransientException",
        }
    }

    fn code(&self) -> &'static str {
        match self.status() {
            401 => "Unauthorized",
            404 => "NotFound",
            429 => "TooManyRequests",
            500 => "InternalServerError",
            502 => "BadGateway",
            503 => "ServiceUnavailable",
            504 => "GatewayTimeout",
            _ => "BadRequest",
        }
    }

    pub fn to_resp(&self) -> Resp {
        let ty = self.exception();
        let text = self.to_string();
        let message = format!("|{ty}|{text}");
        let body = json!({"error": {
            "code": self.code(),
            "message": message,
            "details": [{"code": "Context", "target": "", "message": format!("Ex6F9304|{ty}|{text}")}],
            "innererror": {
                "message": message,
                "type": "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
                "stacktrace": "",
                "internalException": {"message": text, "type": ty, "stacktrace": ""},
            },
        }});
        let mut r = Resp::json(self.status(), &body);
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
        "new" | "set" | "remove" | "enable" | "disable" | "add"
    );
    match sh.gate(Api::Exchange, &label, is_write, 1) {
        Gate::Proceed { .. } => {}
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
    }
    let out = {
        let mut store = lock(&sh.store);
        store.purge_expired();
        cmdlets::run(&mut store, &cmdlet, params)
    };
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            sh.count_error(&label, e.status());
            return with_rid(e.to_resp());
        }
    };

    // Paging: `$skiptoken` is the offset into the full result, bound to the cmdlet name so a
    // nextLink replayed with another body is refused.
    let offset = match req.query("$skiptoken") {
        None => 0,
        Some(t) => match b64url_decode(t)
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                let (name, off) = s.split_once(':')?;
                (name.eq_ignore_ascii_case(&cmdlet))
                    .then(|| off.parse::<usize>().ok())
                    .flatten()
            }) {
            Some(o) => o,
            None => {
                return with_rid(
                    ExoError::BadBody("The $skiptoken does not belong to this request.".into())
                        .to_resp(),
                );
            }
        },
    };
    let size = page_size(req);
    let total = out.values.len();
    let page: Vec<Value> = out.values.into_iter().skip(offset).take(size).collect();
    let mut body = json!({
        "@odata.context": format!("{}/adminapi/beta/{tenant}/$metadata#Collection(Exchange.GenericHashTable)", sh.base_url),
    });
    if !out.warnings.is_empty() {
        body["@adminapi.warnings"] = json!(out.warnings);
    }
    if offset + size < total {
        let token = b64url(format!("{cmdlet}:{}", offset + size).as_bytes());
        body["@odata.nextLink"] = json!(format!(
            "{}/adminapi/beta/{tenant}/InvokeCommand?$skiptoken={}",
            sh.base_url,
            query_escape(&token)
        ));
    }
    body["value"] = Value::Array(page);
    with_rid(Resp::json(200, &body))
}
