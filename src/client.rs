//! The one HTTP client of the node's API (hyper), used by the CLI's remote store commands,
//! feral-chaos, the tests and the benchmarks: over the Unix socket `<data>/api.sock` (no
//! token) or over TCP with the bearer token (`FERAL_API_TOKEN`, else `<data>/api.token`).
//! One request per connection; every request has a deadline and a bounded response.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::api::{SOCKET_FILE, TOKEN_ENV, TOKEN_FILE};

/// The largest response read.
pub const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// A request's deadline unless the caller sets another.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(120);

/// Where the API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The Unix socket.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Tcp(addr) => write!(f, "http://{addr}"),
        }
    }
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting failed.
    #[error("connecting to the API at {endpoint}: {source}")]
    Connect {
        /// Where.
        endpoint: String,
        /// Why.
        source: std::io::Error,
    },
    /// The exchange failed (HTTP error, connection closed, oversized response).
    #[error("{method} {path} at {endpoint}: {reason}")]
    Exchange {
        /// Where.
        endpoint: String,
        /// The request method.
        method: String,
        /// The request path.
        path: String,
        /// Why.
        reason: String,
    },
    /// No answer within the deadline.
    #[error("{method} {path} at {endpoint}: no answer within {secs} s")]
    Timeout {
        /// Where.
        endpoint: String,
        /// The request method.
        method: String,
        /// The request path.
        path: String,
        /// The deadline.
        secs: u64,
    },
}

/// One answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The headers (names lowercase).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (`Value::String` of the text when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into_owned()))
    }

    /// One header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

/// A request to send: method, path, extra headers and a body. A JSON body sets
/// `Content-Type: application/json` unless a header says otherwise.
#[derive(Debug, Clone, Default)]
pub struct Call {
    /// `GET`, `POST`, ….
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers beside Host, Authorization and Content-Type.
    pub headers: Vec<(String, String)>,
    /// The body, if any.
    pub body: Option<Vec<u8>>,
}

impl Call {
    /// A request without a body.
    pub fn new(method: &str, path: &str) -> Call {
        Call { method: method.into(), path: path.into(), ..Call::default() }
    }

    /// With a JSON body.
    pub fn json(mut self, body: &Value) -> Call {
        self.body = Some(body.to_string().into_bytes());
        self
    }

    /// With a header.
    pub fn header(mut self, name: &str, value: &str) -> Call {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A client of one node's API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    /// Where the API is.
    pub endpoint: Endpoint,
    token: Option<String>,
    /// Each request's deadline.
    pub timeout: Duration,
}

impl ApiClient {
    /// A client of `endpoint`, sending `token` when set.
    pub fn new(endpoint: Endpoint, token: Option<String>) -> ApiClient {
        ApiClient { endpoint, token, timeout: REQUEST_TIMEOUT_DEFAULT }
    }

    /// The API of the node on `data`: its Unix socket when present, else `tcp` with the
    /// token from `FERAL_API_TOKEN` or the data directory.
    pub fn for_data_dir(data: &Path, tcp: Option<SocketAddr>) -> Option<ApiClient> {
        let socket = data.join(SOCKET_FILE);
        if socket.exists() {
            return Some(ApiClient::new(Endpoint::Unix(socket), None));
        }
        let addr = tcp?;
        Some(ApiClient::new(Endpoint::Tcp(addr), token_of(data)))
    }

    /// With another deadline.
    pub fn with_timeout(mut self, timeout: Duration) -> ApiClient {
        self.timeout = timeout;
        self
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(&self, call: Call) -> Result<Answer, ClientError> {
        let (method, path) = (call.method.clone(), call.path.clone());
        match tokio::time::timeout(self.timeout, self.exchange(call, None)).await {
            Ok(answer) => answer,
            Err(_) => Err(ClientError::Timeout {
                endpoint: self.endpoint.to_string(),
                method,
                path,
                secs: self.timeout.as_secs(),
            }),
        }
    }

    /// One request from blocking code whose 2xx answer's body is written to `out` as it
    /// arrives: no bound on its size and no deadline for the whole, but its head and each
    /// piece must come within the client's timeout. Any other answer is read whole (bounded)
    /// and returned; after a streamed answer, the returned body is empty.
    pub fn stream_blocking(
        &self,
        call: Call,
        out: &mut dyn std::io::Write,
    ) -> Result<Answer, ClientError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::Connect { endpoint: self.endpoint.to_string(), source: e })?;
        rt.block_on(self.exchange(call, Some(out)))
    }

    /// [`ApiClient::send`] from blocking code (a runtime of its own for the call).
    pub fn send_blocking(&self, call: Call) -> Result<Answer, ClientError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::Connect { endpoint: self.endpoint.to_string(), source: e })?;
        rt.block_on(self.send(call))
    }

    /// A JSON request from blocking code: the status and the body as JSON.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ClientError> {
        let mut call = Call::new(method, path);
        if let Some(body) = body {
            call = call.json(body);
        }
        let answer = self.send_blocking(call)?;
        Ok((answer.status, answer.json()))
    }

    async fn exchange(
        &self,
        call: Call,
        out: Option<&mut dyn std::io::Write>,
    ) -> Result<Answer, ClientError> {
        let connect = |source| ClientError::Connect { endpoint: self.endpoint.to_string(), source };
        let (method, path) = (call.method.clone(), call.path.clone());
        let failed = |reason: String| ClientError::Exchange {
            endpoint: self.endpoint.to_string(),
            method: method.clone(),
            path: path.clone(),
            reason,
        };
        let request = self.request(call).map_err(|e| failed(e.to_string()))?;
        let streamed = out.map(|out| (out, self.timeout));
        let response = match &self.endpoint {
            Endpoint::Unix(socket) => {
                let stream = tokio::net::UnixStream::connect(socket).await.map_err(connect)?;
                exchange_on(stream, request, streamed).await
            }
            Endpoint::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr).await.map_err(connect)?;
                exchange_on(stream, request, streamed).await
            }
        };
        response.map_err(failed)
    }

    fn request(&self, call: Call) -> Result<hyper::Request<Full<Bytes>>, hyper::http::Error> {
        let host = match &self.endpoint {
            Endpoint::Unix(_) => "localhost".to_string(),
            Endpoint::Tcp(addr) => addr.to_string(),
        };
        let given = |name: &str| call.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        let mut builder =
            hyper::Request::builder().method(call.method.as_str()).uri(call.path.as_str());
        if !given("host") {
            builder = builder.header(hyper::header::HOST, host);
        }
        if let Some(token) = &self.token {
            builder = builder.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if call.body.is_some() && !given("content-type") {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in &call.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder.body(Full::new(Bytes::from(call.body.unwrap_or_default())))
    }
}

/// HTTP/1.1 over one connection: the request, then the whole (bounded) answer; or with
/// `streamed`, a 2xx answer's body written to its writer piece by piece, each within its
/// timeout.
async fn exchange_on<S>(
    stream: S,
    request: hyper::Request<Full<Bytes>>,
    streamed: Option<(&mut dyn std::io::Write, Duration)>,
) -> Result<Answer, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let answer = async {
        let sent = sender.send_request(request);
        let response = match &streamed {
            None => sent.await,
            Some((_, timeout)) => tokio::time::timeout(*timeout, sent)
                .await
                .map_err(|_| format!("no answer within {} s", timeout.as_secs()))?,
        }
        .map_err(|e| e.to_string())?;
        let (parts, mut body) = response.into_parts();
        let headers = parts
            .headers
            .iter()
            .map(|(n, v)| {
                (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())
            })
            .collect();
        if let (Some((out, timeout)), true) = (streamed, parts.status.is_success()) {
            loop {
                let frame = tokio::time::timeout(timeout, body.frame()).await.map_err(|_| {
                    format!("the answer stalled: nothing for {} s", timeout.as_secs())
                })?;
                match frame {
                    None => break,
                    Some(Err(e)) => return Err(format!("reading the answer: {e}")),
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            out.write_all(data).map_err(|e| format!("writing the answer: {e}"))?;
                        }
                    }
                }
            }
            return Ok(Answer { status: parts.status.as_u16(), headers, body: Bytes::new() });
        }
        let body = Limited::new(body, RESPONSE_BYTES_MAX)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok(Answer { status: parts.status.as_u16(), headers, body })
    }
    .await;
    drop(sender);
    driver.abort();
    answer
}

/// The API token a client of `data` sends: `FERAL_API_TOKEN`, else `<data>/api.token`.
pub fn token_of(data: &Path) -> Option<String> {
    if let Some(token) = std::env::var_os(TOKEN_ENV) {
        return Some(token.to_string_lossy().trim().to_string());
    }
    let text = std::fs::read_to_string(data.join(TOKEN_FILE)).ok()?;
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}
