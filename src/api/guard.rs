//! The checks every request passes before any handler runs (SPEC 9, docs/security.md): the
//! Host allowlist (DNS rebinding), Origin and `Sec-Fetch-Site` (cross-site requests from web
//! pages), `Content-Type: application/json` on every body (simple cross-site POSTs), the
//! bearer token on TCP listeners, and the cap on requests in flight. CORS headers are sent
//! only for a configured origin, never `*`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::ApiError;

/// Host names every listener accepts (with or without a port).
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];
/// The one route open without a token: liveness, no data.
pub(crate) const HEALTH_PATH: &str = "/v1/health";

/// What the guard of one listener enforces.
#[derive(Debug)]
pub(crate) struct Guard {
    /// Host names accepted beside the loopback ones (lowercase, no port).
    pub(crate) hosts: Vec<String>,
    /// Origins accepted (exact `scheme://host[:port]`, lowercase); empty refuses every Origin.
    pub(crate) origins: Vec<String>,
    /// The bearer token every request but the health check must carry (TCP); None on the
    /// Unix socket, where the socket file's mode is the credential.
    pub(crate) token: Option<Arc<str>>,
    /// Requests being handled at once; beyond it, 503 `busy`.
    pub(crate) in_flight: Arc<Semaphore>,
}

impl Guard {
    fn host_allowed(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(host) = headers.get(header::HOST) else {
            // HTTP/1.0 or a hand-made request: no name to rebind, but a TCP listener insists.
            if self.token.is_none() {
                return Ok(());
            }
            return Err(forbidden("bad_host", "a Host header is required".into()));
        };
        let text = host.to_str().unwrap_or("").trim().to_ascii_lowercase();
        let name = strip_port(&text);
        if LOOPBACK_HOSTS.contains(&name) || self.hosts.iter().any(|h| h == name) {
            return Ok(());
        }
        Err(forbidden(
            "bad_host",
            format!(
                "Host {text:?} is not served here (allowed: localhost, 127.0.0.1, [::1] and the \
                 config's api_hosts)"
            ),
        ))
    }

    /// The allowed origin the request names, or an error for a foreign one.
    fn origin_allowed(&self, headers: &HeaderMap) -> Result<Option<HeaderValue>, ApiError> {
        if let Some(site) = headers.get("sec-fetch-site") {
            let site = site.to_str().unwrap_or("").to_ascii_lowercase();
            if site == "cross-site" || site == "same-site" {
                return Err(forbidden(
                    "cross_origin",
                    format!("a {site} request from a web page is refused"),
                ));
            }
        }
        let Some(origin) = headers.get(header::ORIGIN) else { return Ok(None) };
        let text = origin.to_str().unwrap_or("").trim().to_ascii_lowercase();
        if self.origins.contains(&text) {
            return Ok(Some(origin.clone()));
        }
        Err(forbidden(
            "cross_origin",
            format!(
                "Origin {text:?} is not allowed (the config's api_origins lists the allowed ones)"
            ),
        ))
    }

    fn token_present(&self, request: &Request) -> Result<(), ApiError> {
        let Some(token) = &self.token else { return Ok(()) };
        if request.method() == Method::GET && request.uri().path() == HEALTH_PATH {
            return Ok(());
        }
        let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let given = given.and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
        if constant_time_eq(given.trim().as_bytes(), token.as_bytes()) {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a bearer token is required (Authorization: Bearer <the data directory's api.token>; \
             the Unix socket api.sock needs none)",
        ))
    }
}

/// The name of a Host value without its port (`[::1]:7412` → `[::1]`).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(name, _)| name)
}

fn forbidden(code: &str, message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, code, message)
}

/// Compares without an early exit, so the time taken says nothing about the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// True when the request carries a body (a length above zero, or chunked).
fn has_body(headers: &HeaderMap) -> bool {
    let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
    match length {
        Some(n) => n.trim() != "0",
        None => headers.contains_key(header::TRANSFER_ENCODING),
    }
}

fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// The middleware: every check in order, then the handler under the in-flight cap.
pub(crate) async fn check(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    if let Err(e) = guard.host_allowed(headers) {
        return e.into_response();
    }
    let origin = match guard.origin_allowed(headers) {
        Ok(origin) => origin,
        Err(e) => return e.into_response(),
    };
    if request.method() == Method::OPTIONS {
        // Only a configured origin gets this far with an Origin header.
        return match origin {
            Some(origin) => preflight(origin),
            None => ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "OPTIONS is only answered for a configured origin",
            )
            .into_response(),
        };
    }
    if let Err(e) = guard.token_present(&request) {
        return e.into_response();
    }
    if has_body(request.headers()) && !json_content_type(request.headers()) {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a request body must be sent with Content-Type: application/json",
        )
        .into_response();
    }
    let Ok(_permit) = guard.in_flight.clone().try_acquire_owned() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many requests in flight; retry shortly",
        )
        .into_response();
    };
    let mut response = next.run(request).await;
    if let Some(origin) = origin {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

/// The answer to a CORS preflight from a configured origin.
fn preflight(origin: HeaderValue) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, DELETE"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type"),
    );
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stripped_from_host_names() {
        assert_eq!(strip_port("localhost:7412"), "localhost");
        assert_eq!(strip_port("127.0.0.1"), "127.0.0.1");
        assert_eq!(strip_port("[::1]:7412"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("evil.example:80"), "evil.example");
        assert_eq!(strip_port("localhost.evil.example"), "localhost.evil.example");
    }

    #[test]
    fn only_json_content_types_pass() {
        let mut h = HeaderMap::new();
        assert!(!json_content_type(&h));
        for (value, ok) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
            ("multipart/form-data; boundary=x", false),
            ("application/jsonp", false),
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(json_content_type(&h), ok, "{value}");
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
