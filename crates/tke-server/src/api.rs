//! The HTTP API: routes, media types, and the JSON error answers with their stable codes.
//! `docs/protocol.md` §16 is the specification; keep the two in step.

use serde_json::json;

use crate::http::Response;

/// Media type of a request body: the DER of a TKE `Request`.
pub const REQUEST_TYPE: &str = "application/vnd.tke.request+der";
/// Media type of an exchange's answer: the DER of a TKE `SignedResponse`.
pub const RESPONSE_TYPE: &str = "application/vnd.tke.response+der";
/// Media type of a device certificate (DER).
pub const CERT_TYPE: &str = "application/pkix-cert";
/// Media type of JSON answers.
pub const JSON_TYPE: &str = "application/json";

/// Which kind of `Request` an exchange endpoint takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `Request.query` (`[0]`): `.../query`.
    Query,
    /// `Request.command` (`[1]`): `.../command`.
    Command,
    /// `Request.service` (`[2]`, protocol version 4): `.../service`.
    Service,
    /// `Request.audit` (`[3]`, the audit log): `.../audit`.
    Audit,
}

impl Kind {
    /// `query`, `command`, `service` or `audit`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::Command => "command",
            Self::Service => "service",
            Self::Audit => "audit",
        }
    }
}

/// A resource of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /v1/health` (no API key).
    Health,
    /// `GET /v1/version`.
    Version,
    /// `GET /v1/instances`.
    Instances,
    /// `GET /v1/tke/{instance}/hsms`.
    Units(&'a str),
    /// `GET /v1/tke/{instance}/hsms/{unit}/certificate`.
    Certificate(&'a str, &'a str),
    /// `POST /v1/tke/{instance}/hsms/{unit}/query`, `.../command` or `.../service`.
    Exchange(&'a str, &'a str, Kind),
    /// The instance's key service: `/v1/tke/{instance}/keys...` and `.../keystore...`.
    Kms(&'a str, crate::kms::KmsRoute),
}

impl<'a> Route<'a> {
    /// Parses a path (without query string).
    pub fn parse(path: &'a str) -> Option<Self> {
        let rest = path.strip_prefix("/v1/")?;
        let seg: Vec<&str> = rest.split('/').collect();
        if seg.iter().any(|s| s.is_empty()) {
            return None;
        }
        Some(match seg.as_slice() {
            ["health"] => Self::Health,
            ["version"] => Self::Version,
            ["instances"] => Self::Instances,
            ["tke", i, "hsms"] => Self::Units(i),
            ["tke", i, "hsms", u, "certificate"] => Self::Certificate(i, u),
            ["tke", i, "hsms", u, "query"] => Self::Exchange(i, u, Kind::Query),
            ["tke", i, "hsms", u, "command"] => Self::Exchange(i, u, Kind::Command),
            ["tke", i, "hsms", u, "service"] => Self::Exchange(i, u, Kind::Service),
            ["tke", i, "hsms", u, "audit"] => Self::Exchange(i, u, Kind::Audit),
            ["tke", i, rest @ ..] => Self::Kms(i, crate::kms::KmsRoute::parse(rest)?),
            _ => return None,
        })
    }

    /// The one method the resource allows.
    pub fn method(&self) -> &'static str {
        match self {
            Self::Exchange(..) => "POST",
            Self::Kms(_, k) => k.method(),
            _ => "GET",
        }
    }

    /// Whether the resource needs an API key.
    pub fn needs_key(&self) -> bool {
        !matches!(self, Self::Health)
    }
}

/// An HTTP error answer: a status, a stable machine-readable code, and a sentence.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// The stable code (`snake_case`), documented in `docs/protocol.md`.
    pub code: &'static str,
    /// One sentence for a person. Never contains a secret.
    pub message: String,
    /// Extra headers (`Allow`, `WWW-Authenticate`).
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The JSON answer.
    pub fn response(self, close: bool) -> Response {
        Response {
            status: self.status,
            content_type: JSON_TYPE,
            body: json_bytes(&json!({
                "status": self.status,
                "code": self.code,
                "message": self.message,
            })),
            headers: self.headers,
            close,
        }
    }
}

/// Serializes a JSON value followed by a newline.
pub fn json_bytes(v: &serde_json::Value) -> Vec<u8> {
    let mut b = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    b.push(b'\n');
    b
}

/// A 200 JSON answer.
pub fn ok_json(v: &serde_json::Value) -> Response {
    Response {
        status: 200,
        content_type: JSON_TYPE,
        body: json_bytes(v),
        headers: Vec::new(),
        close: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(Route::parse("/v1/health"), Some(Route::Health));
        assert_eq!(Route::parse("/v1/tke/a/hsms"), Some(Route::Units("a")));
        assert_eq!(
            Route::parse("/v1/tke/a/hsms/b/command"),
            Some(Route::Exchange("a", "b", Kind::Command))
        );
        assert_eq!(
            Route::parse("/v1/tke/a/hsms/b/service"),
            Some(Route::Exchange("a", "b", Kind::Service))
        );
        assert_eq!(
            Route::parse("/v1/tke/a/hsms/b/audit"),
            Some(Route::Exchange("a", "b", Kind::Audit))
        );
        for bad in [
            "/",
            "/v1",
            "/v1/",
            "/v1/tke//hsms",
            "/v2/health",
            "/v1/tke/a/hsms/b",
        ] {
            assert_eq!(Route::parse(bad), None, "{bad}");
        }
    }
}
