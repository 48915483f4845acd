//! Transport-neutral request and response types. The HTTPS server turns hyper requests into
//! [`Req`] and [`Resp`] back; Graph's `$batch` builds [`Req`]s from its JSON and runs them
//! through the very same handlers, so a sub-request behaves exactly like a top-level one.

use serde_json::Value;

#[derive(Debug, Clone, Default)]
pub struct Req {
    /// Upper case.
    pub method: String,
    /// Percent-decoded path, e.g. `/v1.0/users/a@b.c`.
    pub path: String,
    /// Decoded query pairs in order.
    pub query: Vec<(String, String)>,
    /// Header names lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `Prefer: odata.maxpagesize=N`, which Graph (delta) and the Exchange admin API honour.
    pub fn max_page_size(&self) -> Option<usize> {
        self.header("prefer")?
            .split(',')
            .find_map(|x| {
                x.trim()
                    .strip_prefix("odata.maxpagesize=")?
                    .trim()
                    .parse()
                    .ok()
            })
            .filter(|n: &usize| *n >= 1)
    }

    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Parses `a=b&c=d` (the part after `?`).
    pub fn parse_query(raw: &str) -> Vec<(String, String)> {
        // `+` in a Graph URL is a literal plus in practice only when encoded; decode it the
        // form way like ASP.NET does.
        form_urlencoded::parse(raw.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    pub fn json(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Cut this response off mid-body (a targeted `drop_response` fault).
    pub drop: bool,
}

impl Resp {
    pub fn json(status: u16, v: &Value) -> Resp {
        Resp {
            status,
            headers: vec![(
                "content-type".into(),
                "application/json; charset=utf-8".into(),
            )],
            body: serde_json::to_vec(v).unwrap_or_default(),
            drop: false,
        }
    }

    pub fn empty(status: u16) -> Resp {
        Resp {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            drop: false,
        }
    }

    pub fn text(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Resp {
        Resp {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
            drop: false,
        }
    }

    pub fn with_header(mut self, k: &str, v: impl Into<String>) -> Resp {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
        self.headers.push((k.to_ascii_lowercase(), v.into()));
        self
    }

    pub fn body_json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}
