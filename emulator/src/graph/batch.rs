//! JSON batching (`POST /$batch`, "Combine multiple HTTP requests using JSON batching"): at
//! most 20 requests; each runs through the same path as a top-level request, so each is
//! counted, throttled (429 with its own `Retry-After` inside the batch) and faulted on its
//! own. The envelope answers 200 with per-request statuses. Requests run in the order given;
//! one whose `dependsOn` names a failed request is not run and gets 424.

use super::GraphError;
use crate::shared::Shared;
use crate::wire::{Req, Resp};
use serde_json::{Map, Value, json};
use std::collections::HashMap;

const MAX_REQUESTS: usize = 20;

fn batch_error(sh: &Shared, message: String) -> Resp {
    GraphError::BadRequest {
        code: "BadRequest",
        message,
        details: vec![],
    }
    .to_resp(&sh.request_id(), None)
}

struct Sub {
    id: String,
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Value>,
    depends_on: Vec<String>,
}

fn parse(v: &Value) -> Result<Vec<Sub>, String> {
    let reqs = v
        .get("requests")
        .and_then(Value::as_array)
        .ok_or("Invalid batch payload format.")?;
    if reqs.is_empty() {
        return Err("Invalid batch payload format.".into());
    }
    if reqs.len() > MAX_REQUESTS {
        return Err(format!(
            "Invalid batch payload: the number of requests ({}) exceeds the maximum of {MAX_REQUESTS}.",
            reqs.len()
        ));
    }
    let mut out: Vec<Sub> = Vec::new();
    for r in reqs {
        let id = r
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or("Invalid batch payload format: each request needs an id.")?;
        if out.iter().any(|s| s.id == id) {
            return Err(format!("Request Id {id} is not unique within the batch."));
        }
        let method = r
            .get("method")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("Request id : {id} has no method."))?
            .to_ascii_uppercase();
        if !["GET", "POST", "PATCH", "PUT", "DELETE"].contains(&method.as_str()) {
            return Err(format!(
                "Request id : {id} has an invalid method '{method}'."
            ));
        }
        let url = r
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("Request id : {id} has no url."))?
            .to_string();
        let headers: Vec<(String, String)> = match r.get("headers") {
            None | Some(Value::Null) => vec![],
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_ascii_lowercase(),
                        v.as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect(),
            Some(_) => return Err(format!("Request id : {id} has invalid headers.")),
        };
        let body = r.get("body").filter(|b| !b.is_null()).cloned();
        if body.is_some() && !headers.iter().any(|(k, _)| k == "content-type") {
            return Err(format!(
                "Write request id : {id} does not contain Content-Type header or body."
            ));
        }
        if matches!(method.as_str(), "POST" | "PATCH" | "PUT")
            && body.is_none()
            && !url.contains("/restore")
        {
            return Err(format!(
                "Write request id : {id} does not contain Content-Type header or body."
            ));
        }
        let depends_on: Vec<String> = match r.get("dependsOn") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(a)) => a
                .iter()
                .map(|d| {
                    d.as_str()
                        .map(str::to_string)
                        .ok_or("dependsOn must list request ids.")
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("dependsOn must list request ids.".into()),
        };
        for d in &depends_on {
            if !out.iter().any(|s| &s.id == d) {
                return Err(format!(
                    "Request id : {id} depends on '{d}', which is not an earlier request in the batch."
                ));
            }
        }
        out.push(Sub {
            id: id.to_string(),
            method,
            url,
            headers,
            body,
            depends_on,
        });
    }
    Ok(out)
}

pub fn run(sh: &Shared, req: &Req) -> Resp {
    let v = match req.json() {
        Ok(v) => v,
        Err(_) => return batch_error(sh, "Invalid batch payload format.".into()),
    };
    let subs = match parse(&v) {
        Ok(s) => s,
        Err(m) => return batch_error(sh, m),
    };
    let mut statuses: HashMap<String, u16> = HashMap::new();
    let mut responses = Vec::new();
    // A sub-request hit by a `drop_response` rule cuts off the whole envelope.
    let mut drop = false;
    for s in subs {
        let failed_dep = s
            .depends_on
            .iter()
            .find(|d| statuses.get(*d).is_some_and(|st| *st >= 400));
        let resp = if let Some(d) = failed_dep {
            Resp::json(
                424,
                &json!({"error": {"code": "FailedDependency", "message": format!("The request depends on request '{d}', which failed.")}}),
            )
        } else if s.url.starts_with("http://") || s.url.starts_with("https://") {
            GraphError::bad("Batch request URLs must be relative to the service root, e.g. /users.")
                .to_resp(&sh.request_id(), None)
        } else {
            let rel = if s.url.starts_with('/') {
                s.url.clone()
            } else {
                format!("/{}", s.url)
            };
            let (path, query) = rel.split_once('?').unwrap_or((&rel, ""));
            let sub = Req {
                method: s.method.clone(),
                path: format!(
                    "/v1.0{}",
                    percent_encoding::percent_decode_str(path).decode_utf8_lossy()
                ),
                query: Req::parse_query(query),
                headers: s.headers.clone(),
                body: s
                    .body
                    .as_ref()
                    .map(|b| serde_json::to_vec(b).unwrap_or_default())
                    .unwrap_or_default(),
            };
            super::execute(sh, &sub, true)
        };
        statuses.insert(s.id.clone(), resp.status);
        drop |= resp.drop;
        let mut headers = Map::new();
        for (k, v) in &resp.headers {
            // Graph capitalises these inside batch responses.
            let name = match k.as_str() {
                "content-type" => "Content-Type",
                "retry-after" => "Retry-After",
                "location" => "Location",
                other => other,
            };
            headers.insert(name.to_string(), json!(v));
        }
        let mut entry = json!({"id": s.id, "status": resp.status, "headers": headers});
        if let Some(b) = resp.body_json() {
            entry["body"] = b;
        }
        responses.push(entry);
    }
    let mut r = Resp::json(200, &json!({"responses": responses}));
    r.drop = drop;
    r
}
