//! The API's OpenAPI 3.1 description: made from the routes (one `routes!` per path registers the
//! handler and its operation together), checked in at docs/openapi.json, served by a running
//! node at `/v1/openapi.json`. The Python tests validate the node's real answers against it.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Value, json};

/// Set to rewrite docs/openapi.json from the code instead of failing on a difference.
const UPDATE_ENV: &str = "FERAL_UPDATE_OPENAPI";

fn generated() -> String {
    let mut text = feral_memory::api::openapi().to_pretty_json().expect("the description encodes");
    text.push('\n');
    text
}

#[test]
fn the_checked_in_description_is_the_one_the_code_makes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    let made = generated();
    if std::env::var_os(UPDATE_ENV).is_some() {
        std::fs::write(&path, &made).expect("write docs/openapi.json");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == made,
        "docs/openapi.json differs from what the code describes; run \
         `{UPDATE_ENV}=1 cargo test --test openapi` and commit the result"
    );
}

/// Every operation of the description, as `METHOD /path`.
fn operations(doc: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "post", "patch", "delete", "put"] {
            if item.get(method).is_some() {
                out.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    out
}

#[test]
fn the_description_is_openapi_3_1_and_names_every_route_with_its_answers() {
    let doc: Value = serde_json::from_str(&generated()).expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    let ops = operations(&doc);
    for expected in [
        "GET /v1/health",
        "POST /v1/episodes",
        "GET /v1/episodes",
        "GET /v1/episodes/{id}",
        "PATCH /v1/episodes/{id}",
        "DELETE /v1/episodes/{id}",
        "GET /v1/search",
        "GET /v1/changes",
        "GET /v1/export",
        "GET /v1/tables/{table}/rows/{row_id}/history",
        "POST /v1/ops",
        "GET /v1/status",
        "GET /v1/check",
        "POST /v1/sync",
        "GET /v1/peers",
        "GET /metrics",
        "GET /v1/openapi.json",
    ] {
        assert!(ops.contains(expected), "{expected} is not described: {ops:?}");
    }
    assert_eq!(ops.len(), 28, "operations described: {ops:?}");
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for (op, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("item") {
            let responses = operation["responses"].as_object().expect("responses");
            assert!(responses.contains_key("200"), "{method} {op} has no 200 answer");
            assert_eq!(
                responses["default"]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{method} {op}: its errors are not described"
            );
        }
    }
    // Every reference resolves.
    let text = doc.to_string();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap_or_default();
        assert!(schemas.contains_key(name), "{name} is referenced but not defined");
    }
    // The health check is the one operation open without the token.
    assert_eq!(doc["paths"]["/v1/health"]["get"]["security"], serde_json::json!([{}]));
    assert_eq!(doc["security"], serde_json::json!([{"token": []}]));
}

#[test]
fn a_running_node_serves_the_same_description_with_the_token_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = common::RunningNode::start(&dir.path().join("node"), &[]);
    let (status, served) =
        node.api().call("GET", "/v1/openapi.json", None).expect("GET /v1/openapi.json");
    assert_eq!(status, 200);
    let made: Value = serde_json::from_str(&generated()).expect("json");
    assert_eq!(served, made, "the node serves another description than the code makes");
    let anonymous = feral_memory::client::ApiClient::new(
        feral_memory::client::Endpoint::Tcp(node.api_addr),
        None,
    );
    let (status, body) =
        anonymous.call("GET", "/v1/openapi.json", None).expect("GET without a token");
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "unauthorized");

    // A body the description refuses (a field it does not name) the node refuses too, and
    // writes nothing.
    let api = node.api();
    for (path, body, code) in [
        ("/v1/ops", json!({"table": "t", "row_id": "r", "colour": "red"}), "invalid_op"),
        (
            "/v1/episodes",
            json!({"id": "e", "session_id": "s", "event_type": "chat",
            "summary": "x", "colour": "red"}),
            "invalid_episode",
        ),
        (
            "/v1/backup",
            json!({"to": "/nonexistent-feral-backup", "colour": "red"}),
            "invalid_request",
        ),
        ("/v1/sync", json!({"peer": "127.0.0.1:9", "colour": "red"}), "invalid_request"),
    ] {
        let (status, answer) = api.call("POST", path, Some(&body)).expect(path);
        assert_eq!((status, answer["error"].as_str()), (400, Some(code)), "{path}: {answer}");
        assert!(answer["message"].as_str().is_some_and(|m| m.contains("colour")), "{answer}");
    }
    let (_, tables) = api.call("GET", "/v1/tables", None).expect("tables");
    let rows: u64 = tables["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| t["rows"].as_u64().expect("rows"))
        .sum();
    assert_eq!(rows, 0, "a refused body wrote something: {tables}");
    assert!(!Path::new("/nonexistent-feral-backup").exists());
    assert!(node.stop());
}
