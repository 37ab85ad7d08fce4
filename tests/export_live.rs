//! `GET /v1/export` on a running node: its bound on exports at once, and an export whose
//! reader goes away stops (its place is free again), while the node keeps serving.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::json;

#[test]
fn exports_are_bounded_and_one_whose_reader_goes_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = common::RunningNode::start(&dir.path().join("node"), &[]);
    let api = node.api();
    // About 15 MB of export: more than the queue (256 KiB) and the sockets' buffers hold.
    let detail = "x".repeat(500);
    for batch in 0..20 {
        let docs: Vec<_> = (0..1000)
            .map(|i| {
                json!({"id": format!("e{batch}-{i}"), "session_id": "s", "event_type": "chat",
                    "summary": "a thing remembered", "detail": detail})
            })
            .collect();
        let (status, body) = api.call("POST", "/v1/episodes", Some(&json!(docs))).expect("append");
        assert_eq!(status, 200, "{body}");
    }
    let token =
        std::fs::read_to_string(node.data.join(feral_memory::api::TOKEN_FILE)).expect("token");
    // Two exports whose readers read nothing past the first bytes: they fill their queues
    // and wait.
    let stalled: Vec<std::net::TcpStream> = (0..2)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(node.api_addr).expect("connect");
            write!(
                s,
                "GET /v1/export HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\r\n",
                token.trim()
            )
            .expect("request");
            let mut head = [0u8; 12];
            s.read_exact(&mut head).expect("the answer starts");
            assert_eq!(&head, b"HTTP/1.1 200");
            s
        })
        .collect();
    let (status, body) = api.call("GET", "/v1/export", None).expect("a third export");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "busy");
    // The node serves everything else meanwhile.
    let (status, count) = api.call("GET", "/v1/counts", None).expect("counts");
    assert_eq!((status, count["episodes"].as_u64()), (200, Some(20_000)));

    // The readers go: their exports stop and free their places.
    drop(stalled);
    let whole = node.api().with_timeout(Duration::from_secs(60));
    common::wait_for("an export to be taken again", Duration::from_secs(30), || {
        let call = feral_memory::client::Call::new("GET", "/v1/export?ops=true");
        let answer = whole.stream_blocking(call, &mut std::io::sink()).expect("export");
        answer.status == 200
    });
    let mut lines = Vec::new();
    let answer = whole
        .stream_blocking(feral_memory::client::Call::new("GET", "/v1/export"), &mut lines)
        .expect("a whole export");
    assert_eq!(answer.status, 200);
    assert_eq!(lines.iter().filter(|&&b| b == b'\n').count(), 20_000);
    assert!(node.stop());
}
