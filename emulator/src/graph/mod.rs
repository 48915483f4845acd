//! Microsoft Graph v1.0: the user, licence, domain and deleted-item endpoints ldap2exo uses,
//! `/users/delta` and JSON `$batch`. Errors use Graph's body
//! `{"error":{"code","message","innerError":{"date","request-id","client-request-id"}}}`
//! with the directory's codes (`Request_BadRequest`, `Request_ResourceNotFound`,
//! `Request_UnsupportedQuery`, `InvalidAuthenticationToken`, ...).

pub mod batch;
pub mod delta;
pub mod odata;
pub mod users;

use crate::auth::{Audience, BearerProblem};
use crate::faults::Api;
use crate::shared::{Gate, Shared, lock};
use crate::util::{iso8601, now_unix};
use crate::wire::{Req, Resp};
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// 400 with a directory code (normally `Request_BadRequest`) and optional details.
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        message: String,
        details: Vec<Value>,
    },
    #[error("{0}")]
    UnsupportedQuery(String),
    #[error(
        "Resource '{0}' does not exist or one of its queried reference-property objects are not present."
    )]
    NotFound(String),
    #[error("{0}")]
    Unauthorized(BearerProblem),
    #[error(
        "The sync state generation is not found. The delta token is expired and data must be synchronized again."
    )]
    SyncStateNotFound { status: u16 },
    #[error("Please retry again later.")]
    Throttled { retry_after: String },
    #[error("injected failure {status}")]
    Injected { status: u16, retry_after: String },
    #[error("No HTTP resource was found that matches the request URI.")]
    NoRoute,
}

impl GraphError {
    pub fn bad(message: impl Into<String>) -> Self {
        GraphError::BadRequest {
            code: "Request_BadRequest",
            message: message.into(),
            details: vec![],
        }
    }

    /// Graph's generic validation failure for one property.
    pub fn invalid_value(property: &str) -> Self {
        GraphError::BadRequest {
            code: "Request_BadRequest",
            message: format!(
                "Invalid value specified for property '{property}' of resource 'User'."
            ),
            details: vec![json!({"code": "InvalidValue", "target": property})],
        }
    }

    /// Uniqueness violation, as the directory reports it.
    pub fn conflict(property: &str) -> Self {
        GraphError::BadRequest {
            code: "Request_BadRequest",
            message: format!(
                "Another object with the same value for property {property} already exists."
            ),
            details: vec![json!({"code": "ObjectConflict", "target": property})],
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            GraphError::BadRequest { .. }
            | GraphError::UnsupportedQuery(_)
            | GraphError::NoRoute => 400,
            GraphError::NotFound(_) => 404,
            GraphError::Unauthorized(_) => 401,
            GraphError::SyncStateNotFound { status } => *status,
            GraphError::Throttled { .. } => 429,
            GraphError::Injected { status, .. } => *status,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            GraphError::BadRequest { code, .. } => code,
            GraphError::UnsupportedQuery(_) => "Request_UnsupportedQuery",
            GraphError::NotFound(_) => "Request_ResourceNotFound",
            GraphError::Unauthorized(_) => "InvalidAuthenticationToken",
            GraphError::SyncStateNotFound { .. } => "syncStateNotFound",
            GraphError::Throttled { .. } => "TooManyRequests",
            GraphError::Injected { status, .. } => match status {
                429 => "TooManyRequests",
                503 => "serviceNotAvailable",
                504 => "gatewayTimeout",
                502 => "badGateway",
                _ => "generalException",
            },
            GraphError::NoRoute => "BadRequest",
        }
    }

    pub fn to_resp(&self, request_id: &str, client_request_id: Option<&str>) -> Resp {
        let date = iso8601(now_unix());
        let mut inner = json!({"date": date, "request-id": request_id, "client-request-id": client_request_id.unwrap_or(request_id)});
        let message = match self {
            GraphError::Injected { status, .. } => match status {
                429 => "Please retry again later.".to_string(),
                503 => "The service is temporarily unavailable. Please retry later.".to_string(),
                504 => "The request timed out.".to_string(),
                _ => "General exception while processing.".to_string(),
            },
            other => other.to_string(),
        };
        if self.status() == 429 {
            inner["code"] = json!("429");
            inner["status"] = json!("429");
            inner["message"] = json!("Please retry after");
        }
        let mut err = json!({"code": self.code(), "message": message, "innerError": inner});
        if let GraphError::BadRequest { details, .. } = self
            && !details.is_empty()
        {
            err["details"] = json!(
                details
                    .iter()
                    .map(|d| {
                        let mut d = d.clone();
                        d["message"] = json!(message);
                        d
                    })
                    .collect::<Vec<_>>()
            );
        }
        let mut r = Resp::json(self.status(), &json!({"error": err}));
        match self {
            GraphError::Throttled { retry_after } => r = r.with_header("retry-after", retry_after.clone()),
            GraphError::Injected { status: 429 | 503, retry_after } => {
                r = r.with_header("retry-after", retry_after.clone())
            }
            GraphError::Unauthorized(_) => {
                r = r.with_header("www-authenticate", "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"")
            }
            _ => {}
        }
        r
    }
}

/// What a handler produced: a status and an optional JSON body, plus extra headers.
pub struct Answer {
    pub status: u16,
    pub body: Option<Value>,
    pub headers: Vec<(String, String)>,
}

impl Answer {
    pub fn ok(v: Value) -> Self {
        Answer {
            status: 200,
            body: Some(v),
            headers: vec![],
        }
    }
    pub fn status(status: u16, v: Option<Value>) -> Self {
        Answer {
            status,
            body: v,
            headers: vec![],
        }
    }
}

/// A parsed route: the endpoint label for counters, whether it writes, and what to run.
struct Route<'a> {
    label: &'static str,
    write: bool,
    units: u64,
    kind: RouteKind<'a>,
}

enum RouteKind<'a> {
    ListUsers,
    CreateUser,
    Delta,
    GetUser(&'a str),
    PatchUser(&'a str),
    DeleteUser(&'a str),
    AssignLicense(&'a str),
    SubscribedSkus,
    Domains,
    ListDeleted,
    GetDeleted(&'a str),
    RestoreDeleted(&'a str),
    PurgeDeleted(&'a str),
    Batch,
}

fn route<'a>(method: &str, rest: &'a str, has_select: bool) -> Option<Route<'a>> {
    let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let r = |label, write, units, kind| {
        Some(Route {
            label,
            write,
            units,
            kind,
        })
    };
    match (method, segs.as_slice()) {
        ("GET", ["users"]) => r(
            "GET /v1.0/users",
            false,
            if has_select { 1 } else { 2 },
            RouteKind::ListUsers,
        ),
        ("POST", ["users"]) => r("POST /v1.0/users", true, 1, RouteKind::CreateUser),
        ("GET", ["users", "delta" | "delta()"]) => {
            r("GET /v1.0/users/delta", false, 1, RouteKind::Delta)
        }
        ("GET", ["users", k]) => r("GET /v1.0/users/{id}", false, 1, RouteKind::GetUser(k)),
        ("PATCH", ["users", k]) => r("PATCH /v1.0/users/{id}", true, 1, RouteKind::PatchUser(k)),
        ("DELETE", ["users", k]) => r("DELETE /v1.0/users/{id}", true, 1, RouteKind::DeleteUser(k)),
        ("POST", ["users", k, "assignLicense"]) => r(
            "POST /v1.0/users/{id}/assignLicense",
            true,
            1,
            RouteKind::AssignLicense(k),
        ),
        ("GET", ["subscribedSkus"]) => r(
            "GET /v1.0/subscribedSkus",
            false,
            1,
            RouteKind::SubscribedSkus,
        ),
        ("GET", ["domains"]) => r("GET /v1.0/domains", false, 1, RouteKind::Domains),
        ("GET", ["directory", "deletedItems", "microsoft.graph.user"]) => r(
            "GET /v1.0/directory/deletedItems/microsoft.graph.user",
            false,
            1,
            RouteKind::ListDeleted,
        ),
        ("GET", ["directory", "deletedItems", id]) => r(
            "GET /v1.0/directory/deletedItems/{id}",
            false,
            1,
            RouteKind::GetDeleted(id),
        ),
        ("POST", ["directory", "deletedItems", id, "restore"]) => r(
            "POST /v1.0/directory/deletedItems/{id}/restore",
            true,
            1,
            RouteKind::RestoreDeleted(id),
        ),
        ("DELETE", ["directory", "deletedItems", id]) => r(
            "DELETE /v1.0/directory/deletedItems/{id}",
            true,
            1,
            RouteKind::PurgeDeleted(id),
        ),
        ("POST", ["$batch"]) => r("POST /v1.0/$batch", false, 0, RouteKind::Batch),
        _ => None,
    }
}

/// Entry point for an HTTP request under `/v1.0/`: token check, then `$batch` or one request.
pub fn handle(sh: &Shared, req: &Req) -> Resp {
    let rid = sh.request_id();
    let crid = req.header("client-request-id").map(str::to_string);
    let finish = |mut r: Resp| {
        r = r.with_header("request-id", rid.clone());
        r.with_header(
            "client-request-id",
            crid.clone().unwrap_or_else(|| rid.clone()),
        )
    };
    if let Err(p) = lock(&sh.tokens).check(req.header("authorization"), Audience::Graph) {
        let label = route(
            &req.method,
            req.path.strip_prefix("/v1.0").unwrap_or(""),
            false,
        )
        .map(|r| r.label)
        .unwrap_or("GET /v1.0/(unknown)");
        lock(&sh.counters).bump(label, |e| e.requests += 1);
        sh.count_error(label, 401);
        return finish(GraphError::Unauthorized(p).to_resp(&rid, crid.as_deref()));
    }
    finish(execute(sh, req, false))
}

/// Runs one Graph request (top level or inside `$batch`) after authentication: counting,
/// throttling and fault injection, then the handler.
pub fn execute(sh: &Shared, req: &Req, in_batch: bool) -> Resp {
    let rid = sh.request_id();
    let crid = req.header("client-request-id");
    let rest = req.path.strip_prefix("/v1.0").unwrap_or(&req.path);
    let has_select = req.query("$select").is_some();
    let Some(rt) = route(&req.method, rest, has_select) else {
        lock(&sh.counters).bump("(unknown Graph route)", |e| e.requests += 1);
        sh.count_error("(unknown Graph route)", 400);
        return GraphError::NoRoute.to_resp(&rid, crid);
    };
    if in_batch && matches!(rt.kind, RouteKind::Batch) {
        return GraphError::bad("Nested $batch requests are not supported.").to_resp(&rid, crid);
    }
    if in_batch {
        lock(&sh.counters).bump(rt.label, |e| e.batched += 1);
    }
    let (pct, drop) = match sh.gate(Api::Graph, rt.label, rt.write, rt.units) {
        Gate::Proceed {
            limit_percentage,
            drop,
        } => (limit_percentage, drop),
        // Non-terminating errors are an Exchange notion; Graph just runs the request.
        Gate::NonTerminating => (None, false),
        Gate::Throttle { retry_after } => {
            return GraphError::Throttled { retry_after }.to_resp(&rid, crid);
        }
        Gate::Inject {
            status,
            retry_after,
        } => {
            return GraphError::Injected {
                status,
                retry_after,
            }
            .to_resp(&rid, crid);
        }
    };
    lock(&sh.store).settle();
    let result = match rt.kind {
        RouteKind::Batch => return batch::run(sh, req),
        RouteKind::ListUsers => users::list(sh, req),
        RouteKind::CreateUser => users::create(sh, req),
        RouteKind::Delta => delta::delta(sh, req),
        RouteKind::GetUser(k) => users::get(sh, req, k),
        RouteKind::PatchUser(k) => users::patch(sh, req, k),
        RouteKind::DeleteUser(k) => users::delete(sh, k),
        RouteKind::AssignLicense(k) => users::assign_license(sh, req, k),
        RouteKind::SubscribedSkus => users::subscribed_skus(sh),
        RouteKind::Domains => users::domains(sh),
        RouteKind::ListDeleted => users::list_deleted(sh, req),
        RouteKind::GetDeleted(id) => users::get_deleted(sh, req, id),
        RouteKind::RestoreDeleted(id) => users::restore(sh, id),
        RouteKind::PurgeDeleted(id) => users::purge(sh, id),
    };
    let mut resp = match result {
        Ok(a) => {
            let mut r = match a.body {
                Some(b) => Resp::json(a.status, &b),
                None => Resp::empty(a.status),
            };
            for (k, v) in a.headers {
                r = r.with_header(&k, v);
            }
            r
        }
        Err(e) => {
            sh.count_error(rt.label, e.status());
            e.to_resp(&rid, crid)
        }
    };
    resp.drop |= drop;
    resp = resp.with_header("x-ms-resource-unit", rt.units.max(1).to_string());
    if let Some(p) = pct.filter(|p| *p >= 80) {
        resp = resp
            .with_header(
                "x-ms-throttle-limit-percentage",
                format!("{:.1}", p as f64 / 100.0),
            )
            .with_header(
                "x-ms-throttle-scope",
                "Tenant_Application/WriteLimit/application/tenant",
            );
    }
    resp
}

/// Absolute URL of a Graph path on this emulator.
pub fn url(sh: &Shared, path_and_query: &str) -> String {
    format!("{}/v1.0{}", sh.base_url, path_and_query)
}
