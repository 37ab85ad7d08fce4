//! The API's doors against a real `feral-node run`: what a web page in the user's browser can
//! send (a text/plain or form POST, a foreign Origin, a rebinding Host, `Sec-Fetch-Site`) is
//! refused before any handler runs and writes nothing; TCP needs the token, loopback included;
//! the Unix socket needs none and is 0600; framework errors keep the JSON shape; 1,100 slow
//! connections do not lock a caller out; a 60 MiB body is refused without costing its size.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{RunningNode, doc, wait_for};
use feral_memory::client::{ApiClient, Call, Endpoint};
use serde_json::{Value, json};

fn send(client: &ApiClient, call: Call) -> (u16, Value) {
    let answer = client.send_blocking(call).expect("an answer");
    (answer.status, answer.json())
}

fn count(node: &RunningNode) -> usize {
    let (status, list) = send(&node.unix(), Call::new("GET", "/v1/episodes?limit=10000"));
    assert_eq!(status, 200, "{list}");
    list["episodes"].as_array().map_or(0, Vec::len)
}

fn mode(path: &std::path::Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).expect("meta").permissions())
        & 0o777
}

#[test]
fn requests_a_web_page_can_make_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = RunningNode::start(&dir.path().join("store"), &[]);
    let api = node.api();
    let body = doc("e1", "s", 1.0).to_string().into_bytes();
    let post = |headers: &[(&str, &str)]| {
        let mut call = Call::new("POST", "/v1/episodes");
        call.body = Some(body.clone());
        for (n, v) in headers {
            call = call.header(n, v);
        }
        call
    };
    let before = count(&node);
    let refusals: [(&str, Call, u16, &str); 8] = [
        ("text/plain POST", post(&[("content-type", "text/plain")]), 415, "unsupported_media_type"),
        (
            "form POST",
            post(&[("content-type", "application/x-www-form-urlencoded")]),
            415,
            "unsupported_media_type",
        ),
        (
            "multipart POST",
            post(&[("content-type", "multipart/form-data; boundary=x")]),
            415,
            "unsupported_media_type",
        ),
        ("foreign Origin", post(&[("origin", "https://evil.example")]), 403, "cross_origin"),
        ("null Origin", post(&[("origin", "null")]), 403, "cross_origin"),
        ("cross-site fetch", post(&[("sec-fetch-site", "cross-site")]), 403, "cross_origin"),
        ("same-site fetch", post(&[("sec-fetch-site", "same-site")]), 403, "cross_origin"),
        ("rebinding Host", post(&[("host", "evil.example:7412")]), 403, "bad_host"),
    ];
    for (what, call, status, code) in refusals {
        let (s, v) = send(&api, call);
        assert_eq!((s, v["error"].as_str()), (status, Some(code)), "{what}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {v}");
        assert!(
            api.send_blocking(Call::new("GET", "/v1/health"))
                .expect("health")
                .header("access-control-allow-origin")
                .is_none(),
            "no CORS headers without a configured origin"
        );
    }
    // A rebinding page reading the memory.
    let (s, v) = send(&api, Call::new("GET", "/v1/episodes").header("host", "evil.example"));
    assert_eq!((s, v["error"].as_str()), (403, Some("bad_host")), "{v}");
    // No token on loopback TCP.
    let bare = ApiClient::new(Endpoint::Tcp(node.api_addr), None);
    let (s, v) = send(&bare, post(&[]));
    assert_eq!((s, v["error"].as_str()), (401, Some("unauthorized")), "{v}");
    let (s, v) = send(&bare, Call::new("GET", "/v1/episodes"));
    assert_eq!(s, 401, "reading needs the token too: {v}");
    // The newer doors are behind the same checks: revocations, and the node's own tables.
    let (s, v) = send(&bare, Call::new("POST", "/v1/revocations").json(&serde_json::json!({})));
    assert_eq!((s, v["error"].as_str()), (401, Some("unauthorized")), "{v}");
    let mut plain = Call::new("POST", "/v1/revocations").header("content-type", "text/plain");
    plain.body = Some(b"{}".to_vec());
    let (s, v) = send(&api, plain);
    assert_eq!((s, v["error"].as_str()), (415, Some("unsupported_media_type")), "{v}");
    let (s, v) = send(&api, Call::new("POST", "/v1/revocations").json(&serde_json::json!({})));
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_revocation")), "{v}");
    let reserved = serde_json::json!({"table": "_revocations", "row_id": "x", "data": {}});
    let (s, v) = send(&api, Call::new("POST", "/v1/ops").json(&reserved));
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_op")), "{v}");
    assert_eq!(count(&node), before, "nothing was written");
    // What is allowed: the same request with the token, the health check without one, and
    // the Unix socket without one; its file is 0600.
    assert_eq!(send(&bare, Call::new("GET", "/v1/health")).0, 200);
    assert_eq!(send(&api, post(&[("sec-fetch-site", "none")])).0, 200);
    assert_eq!(
        send(&node.unix(), Call::new("POST", "/v1/episodes").json(&doc("e2", "s", 2.0))).0,
        200
    );
    assert_eq!(count(&node), before + 2);
    assert_eq!(mode(&node.data.join(feral_memory::api::SOCKET_FILE)), 0o600);
    assert_eq!(mode(&node.data.join(feral_memory::api::TOKEN_FILE)), 0o600);
    // The framework's own answers keep the JSON shape.
    for (call, status, code) in [
        (Call::new("GET", "/v1/nothing"), 404, "not_found"),
        (Call::new("PUT", "/v1/status"), 405, "method_not_allowed"),
        (Call::new("GET", "/v1/episodes?limit=lots"), 400, "invalid_query"),
        (Call::new("GET", "/v1/episodes?q=Lyon"), 400, "invalid_query"),
        (Call::new("GET", "/v1/episodes?limit=100000"), 400, "invalid_query"),
    ] {
        let what = format!("{} {}", call.method, call.path);
        let (s, v) = send(&api, call);
        assert_eq!((s, v["error"].as_str()), (status, Some(code)), "{what}: {v}");
    }
    assert!(node.stop(), "clean shutdown");
}

#[test]
fn a_configured_origin_gets_cors_headers_and_never_a_wildcard() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("store");
    std::fs::create_dir_all(&data).expect("mkdir");
    let private = std::os::unix::fs::PermissionsExt::from_mode(0o700);
    std::fs::set_permissions(&data, private).expect("chmod");
    std::fs::write(
        data.join("feral.toml"),
        "api_origins = [\"http://localhost:3000\"]\napi_hosts = [\"memory.lan\"]\n",
    )
    .expect("config");
    let node = RunningNode::start(&data, &[]);
    let api = node.api();
    let answer = api
        .send_blocking(Call::new("GET", "/v1/status").header("origin", "http://localhost:3000"))
        .expect("answer");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("access-control-allow-origin"), Some("http://localhost:3000"));
    let preflight = api
        .send_blocking(
            Call::new("OPTIONS", "/v1/episodes").header("origin", "http://localhost:3000"),
        )
        .expect("answer");
    assert_eq!(preflight.status, 204);
    assert!(
        preflight
            .header("access-control-allow-headers")
            .is_some_and(|h| h.contains("authorization"))
    );
    let other = api
        .send_blocking(Call::new("GET", "/v1/status").header("origin", "http://localhost:3001"))
        .expect("answer");
    assert_eq!((other.status, other.json()["error"].as_str()), (403, Some("cross_origin")));
    assert_eq!(send(&api, Call::new("GET", "/v1/status").header("host", "memory.lan:7412")).0, 200);
    drop(node);
    std::fs::write(data.join("feral.toml"), "api_origins = [\"*\"]\n").expect("config");
    let out = common::feral_node()
        .arg("--data")
        .arg(&data)
        .args(["run", "--no-mdns", "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "a wildcard origin is a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("never allowed"));
}

/// Raises this process's descriptor limit so it can hold the slow connections.
fn raise_fd_limit(wanted: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the struct passed.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// True once the server has closed `stream` (EOF or an error on read).
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    stream.set_read_timeout(Some(Duration::from_millis(1))).expect("timeout");
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => {
            // An answer (408 or 503) followed by the close.
            stream.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
            matches!(stream.read(&mut buf), Ok(0) | Err(_))
        }
        Err(e) => {
            !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
        }
    }
}

#[test]
fn slow_connections_and_huge_bodies_cost_the_node_little() {
    const SLOW: usize = 1100;
    raise_fd_limit(4096);
    let dir = tempfile::tempdir().expect("tempdir");
    let node = RunningNode::start(&dir.path().join("store"), &[]);
    let api = node.api();
    assert_eq!(send(&api, Call::new("GET", "/v1/status")).0, 200);
    let rss_before = node.rss_bytes();
    // 1,100 connections that send half a request head and wait.
    let slow: Vec<TcpStream> = (0..SLOW)
        .map(|_| {
            let mut s = TcpStream::connect(node.api_addr).expect("connect");
            s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n").expect("write");
            s
        })
        .collect();
    let started = Instant::now();
    let (status, v) =
        send(&api.clone().with_timeout(Duration::from_secs(5)), Call::new("GET", "/v1/status"));
    let took = started.elapsed();
    assert_eq!(status, 200, "{v}");
    assert!(
        took < Duration::from_secs(1),
        "a normal request took {took:?} beside {SLOW} slow ones"
    );
    eprintln!("a normal request beside {SLOW} slow connections: {took:?}");
    // The node holds at most its cap; the rest were closed, and every one of them closes
    // within the header timeout.
    let held_at_most = feral_memory::limits::API_CONNECTIONS_MAX;
    let (mut open, closed): (Vec<TcpStream>, Vec<TcpStream>) =
        slow.into_iter().partition(|s| !closed_by_server(&mut s.try_clone().expect("clone")));
    let closed = closed.len();
    assert!(closed >= SLOW - held_at_most, "{closed} of {SLOW} closed; the cap is {held_at_most}");
    let timeout = feral_memory::limits::API_HEADER_TIMEOUT + Duration::from_secs(5);
    wait_for("the header timeout to close every slow connection", timeout, || {
        open.retain_mut(|s| !closed_by_server(s));
        open.is_empty()
    });
    // A 60 MiB body, declared and then chunked: 413 without the node holding it.
    let sixty = 60 * 1024 * 1024usize;
    let token =
        std::fs::read_to_string(node.data.join(feral_memory::api::TOKEN_FILE)).expect("token");
    for chunked in [false, true] {
        let mut s = TcpStream::connect(node.api_addr).expect("connect");
        let framing = if chunked {
            "Transfer-Encoding: chunked".to_string()
        } else {
            format!("Content-Length: {sixty}")
        };
        let head = format!(
            "POST /v1/episodes HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n{framing}\r\n\r\n",
            token.trim()
        );
        s.write_all(head.as_bytes()).expect("head");
        let chunk = vec![b'['; 1024 * 1024];
        for _ in 0..60 {
            let wrote = if chunked {
                s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .and_then(|()| s.write_all(&chunk))
                    .and_then(|()| s.write_all(b"\r\n"))
            } else {
                s.write_all(&chunk)
            };
            if wrote.is_err() {
                break; // the node answered and closed
            }
        }
        let mut reply = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let _ = s.read_to_end(&mut reply);
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 413"), "chunked={chunked}: {reply}");
        assert!(reply.contains("payload_too_large"), "{reply}");
    }
    let grew = node.rss_bytes().saturating_sub(rss_before);
    eprintln!("RSS grew by {} KiB", grew / 1024);
    assert!(grew < 64 * 1024 * 1024, "the node's RSS grew by {grew} bytes");
    assert_eq!(
        send(&api, Call::new("POST", "/v1/episodes").json(&json!([doc("ok", "s", 1.0)]))).0,
        200
    );
    assert!(node.stop(), "clean shutdown");
}
