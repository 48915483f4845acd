//! The HTTPS server: accepts TCP, does TLS with rustls, serves HTTP/1.1 and HTTP/2 with
//! hyper, turns requests into [`Req`], applies latency and dropped-connection faults, and
//! routes to the token endpoint, Graph, the Exchange admin API or the admin side door.

use crate::auth;
use crate::shared::{Shared, lock};
use crate::wire::{Req, Resp};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// A response body that is either whole, or cut off after its first half with an I/O error,
/// which makes hyper abort the connection (HTTP/1.1) or reset the stream (HTTP/2): the
/// client sees a dropped connection after the server has done the work.
pub struct OutBody {
    data: Option<Bytes>,
    fail: bool,
    len: u64,
}

impl Body for OutBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        if self.fail {
            self.fail = false;
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "emulator: connection dropped mid-response",
            ))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && !self.fail
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        if self.fail {
            hyper::body::SizeHint::default()
        } else {
            hyper::body::SizeHint::with_exact(self.len)
        }
    }
}

enum Target {
    Admin,
    Token(String),
    Graph,
    Exchange(String),
    Unknown,
}

fn classify(path: &str) -> Target {
    if path.starts_with("/_emulator/") {
        return Target::Admin;
    }
    if path == "/v1.0" || path.starts_with("/v1.0/") {
        return Target::Graph;
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        [tenant, "oauth2", "v2.0", "token"] => Target::Token(tenant.to_string()),
        ["adminapi", "beta", tenant, "InvokeCommand"] => Target::Exchange(tenant.to_string()),
        _ => Target::Unknown,
    }
}

fn token_endpoint(sh: &Shared, tenant: &str, req: &Req) -> Resp {
    let label = "POST /{tenant}/oauth2/v2.0/token";
    lock(&sh.counters).bump(label, |e| e.requests += 1);
    let trace = sh.request_id();
    let cfg = lock(&sh.store).tenant.clone();
    let result = {
        let mut tokens = lock(&sh.tokens);
        auth::token_request(&cfg, tenant, req, &mut tokens, sh.settings.token_lifetime)
    };
    match result {
        Ok(v) => Resp::json(200, &v),
        Err(e) => {
            let r = auth::token_error_response(&e, &trace);
            sh.count_error(label, r.status);
            r
        }
    }
}

async fn dispatch(sh: Arc<Shared>, req: Req) -> (Resp, bool) {
    let target = classify(&req.path);
    if let Target::Admin = target {
        return (crate::admin::handle(&sh, &req), false);
    }
    let faulted =
        !matches!(target, Target::Token(_)) || lock(&sh.faults).config.include_token_endpoint;
    let (latency, drop, token_error) = if faulted {
        let mut f = lock(&sh.faults);
        let token_error = if matches!(target, Target::Token(_)) {
            f.random_error()
        } else {
            None
        };
        (f.config.latency_ms, f.should_drop(), token_error)
    } else {
        (0, false, None)
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let resp = match target {
        Target::Token(_) if token_error.is_some() => {
            let status = token_error.unwrap_or(503);
            Resp::json(status, &serde_json::json!({"error": "temporarily_unavailable", "error_description": "AADSTS90033: A transient error has occurred. Please try again."}))
                .with_header("retry-after", "1")
        }
        Target::Token(t) => token_endpoint(&sh, &t, &req),
        Target::Graph => crate::graph::handle(&sh, &req),
        Target::Exchange(t) => crate::exchange::handle_limited(sh.clone(), req, t).await,
        Target::Unknown => Resp::json(
            404,
            &serde_json::json!({"error": {"code": "NotFound", "message": format!("No emulated endpoint at {} {}", req.method, req.path)}}),
        ),
        Target::Admin => unreachable!("handled above"),
    };
    if drop {
        lock(&sh.counters).total.dropped += 1;
    }
    let drop = drop || resp.drop;
    (resp, drop)
}

/// Counts a request in `Shared::requests_in_flight` until it is answered (or dropped).
struct InFlight(Arc<Shared>);

impl InFlight {
    fn new(sh: &Arc<Shared>) -> Self {
        sh.requests_in_flight
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlight(sh.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .requests_in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn serve_one(sh: Arc<Shared>, req: hyper::Request<Incoming>) -> hyper::Response<OutBody> {
    let _in_flight = InFlight::new(&sh);
    let (parts, body) = req.into_parts();
    // A body cut off (the client died mid-request) is never executed: a real server answers
    // 400 to what it could not read whole, and acting on an empty body would invent a call.
    let body = match body.collect().await {
        Ok(c) => c.to_bytes().to_vec(),
        Err(_) => {
            let mut r = hyper::Response::new(OutBody {
                data: None,
                fail: false,
                len: 0,
            });
            *r.status_mut() = hyper::StatusCode::BAD_REQUEST;
            return r;
        }
    };
    let path = percent_encoding::percent_decode_str(parts.uri.path())
        .decode_utf8_lossy()
        .into_owned();
    let r = Req {
        method: parts.method.as_str().to_ascii_uppercase(),
        path,
        query: parts.uri.query().map(Req::parse_query).unwrap_or_default(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or_default().to_string(),
                )
            })
            .collect(),
        body,
    };
    let (resp, drop) = dispatch(sh, r).await;
    let len = resp.body.len() as u64;
    let mut builder = hyper::Response::builder().status(resp.status);
    for (k, v) in &resp.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let body = if drop {
        // Announce the full length, send half: the client notices the truncation.
        builder = builder.header("content-length", len.to_string());
        let half = resp.body.len() / 2;
        OutBody {
            data: Some(Bytes::from(resp.body[..half].to_vec())),
            fail: true,
            len,
        }
    } else {
        OutBody {
            data: (!resp.body.is_empty()).then(|| Bytes::from(resp.body)),
            fail: false,
            len,
        }
    };
    builder.body(body).unwrap_or_else(|_| {
        let mut r = hyper::Response::new(OutBody {
            data: None,
            fail: false,
            len: 0,
        });
        *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

/// Accepts connections until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    sh: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let sh = sh.clone();
                let mut stop = shutdown.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else { return };
                    let svc = hyper::service::service_fn(move |req| {
                        let sh = sh.clone();
                        async move { Ok::<_, Infallible>(serve_one(sh, req).await) }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = stop.changed() => {}
                    }
                });
            }
        }
    }
}
