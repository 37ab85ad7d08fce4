//! `feral-node import --sqlite`: a fixture made with the original system's schema comes over
//! with its row ids and timestamps, a second run appends nothing, and what cannot be imported
//! is skipped by name with its reason.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::feral_node;
use serde_json::Value;

/// The original system's `memory.db`: episodes keyed by an integer rowid with a SQLite text
/// timestamp, and another table of its own.
fn fixture(path: &Path) {
    let db = rusqlite::Connection::open(path).expect("create fixture");
    db.execute_batch(
        "CREATE TABLE episodes (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             session_id TEXT NOT NULL,
             event_type TEXT NOT NULL,
             summary TEXT NOT NULL,
             detail TEXT,
             importance REAL DEFAULT 0.5,
             created_at TEXT DEFAULT CURRENT_TIMESTAMP
         );
         CREATE TABLE preferences (key TEXT PRIMARY KEY, value TEXT, updated_at REAL, raw BLOB);",
    )
    .expect("schema");
    for i in 1..=50 {
        db.execute(
            "INSERT INTO episodes (session_id, event_type, summary, detail, importance, created_at)
             VALUES (?1, 'chat', ?2, 'said at home', ?3, ?4)",
            rusqlite::params![
                format!("s{}", i % 3),
                format!("remembered thing {i}"),
                0.1 + f64::from(i) / 100.0,
                format!("2024-03-{:02} 10:00:{:02}", 1 + i % 28, i % 60),
            ],
        )
        .expect("episode");
    }
    // The original let an empty summary in; this store refuses it, by name.
    db.execute(
        "INSERT INTO episodes (session_id, event_type, summary, created_at)
         VALUES ('s0', 'chat', '', '2024-03-05 09:00:00')",
        [],
    )
    .expect("bad episode");
    db.execute(
        "INSERT INTO preferences VALUES ('tone', 'short answers', 1709286400.5, x'00ff')",
        [],
    )
    .expect("pref");
    db.execute("INSERT INTO preferences VALUES ('language', 'fr', 1709286401, NULL)", [])
        .expect("pref");
}

fn import(data: &Path, db: &Path) -> (Option<i32>, Value) {
    let out = feral_node()
        .arg("--data")
        .arg(data)
        .args(["import", "--json", "--sqlite"])
        .arg(db)
        .stderr(Stdio::inherit())
        .output()
        .expect("import");
    let report = serde_json::from_slice(&out.stdout).expect("a JSON report");
    (out.status.code(), report)
}

fn table<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["tables"].as_array().expect("tables").iter().find(|t| t["table"] == name).expect(name)
}

#[test]
fn the_original_memory_db_comes_over_once_with_its_ids_and_times() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, db) = (dir.path().join("store"), dir.path().join("memory.db"));
    fixture(&db);
    std::fs::write(dir.path().join("sync_wal.db"), b"").expect("sync_wal beside it");
    assert!(
        feral_node().arg("--data").arg(&data).arg("init").output().expect("init").status.success()
    );

    let (code, report) = import(&data, &db);
    assert_eq!(code, Some(1), "one row skipped: {report}");
    let episodes = table(&report, "episodes");
    assert_eq!(
        (episodes["rows"].as_u64(), episodes["imported"].as_u64()),
        (Some(51), Some(50)),
        "{report}"
    );
    assert_eq!(episodes["skipped"], 1);
    let skip = &report["skips"][0];
    assert_eq!(skip["row_id"], "51");
    assert!(
        skip["reason"].as_str().is_some_and(|r| r.contains("summary")),
        "names the field: {skip}"
    );
    assert_eq!(table(&report, "preferences")["imported"], 2);
    assert!(
        report["notes"].to_string().contains("sync_wal.db"),
        "says what it did with it: {report}"
    );

    let node = common::open(&data);
    let e = node.episode("7").expect("read").expect("row id kept");
    assert_eq!(e.episode.summary, "remembered thing 7");
    assert_eq!(e.episode.session_id, "s1");
    // 2024-03-08 10:00:07 UTC.
    assert_eq!(e.episode.created_at, 1_709_892_007.0, "the original time kept");
    let pref = node.row("preferences", "1").expect("read").expect("rowid as row id");
    let data_json = serde_json::to_value(&pref).expect("json");
    assert!(data_json.to_string().contains("short answers"), "{data_json}");
    assert!(data_json.to_string().contains("00ff"), "a BLOB as hex: {data_json}");
    let digest = node.digest().expect("digest").digest;
    drop(node);

    let (code, again) = import(&data, &db);
    assert_eq!(code, Some(1));
    let episodes = table(&again, "episodes");
    assert_eq!(
        (episodes["imported"].as_u64(), episodes["duplicates"].as_u64()),
        (Some(0), Some(50)),
        "{again}"
    );
    assert_eq!(table(&again, "preferences")["duplicates"], 2);
    let node = common::open(&data);
    assert_eq!(node.digest().expect("digest").digest, digest, "a second run changes nothing");
    drop(node);

    // And out again: every live row, then every op.
    let export = |args: &[&str]| -> Vec<Value> {
        let out = feral_node().arg("--data").arg(&data).args(args).output().expect("export");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).expect("utf-8");
        text.lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect()
    };
    let rows = export(&["export", "--jsonl"]);
    assert_eq!(rows.len(), 52, "50 episodes and 2 preferences");
    let seven = rows.iter().find(|r| r["table"] == "episodes" && r["row_id"] == "7").expect("e7");
    assert_eq!(seven["data"]["summary"], "remembered thing 7");
    assert!(rows.iter().any(|r| r["table"] == "preferences" && r["data"]["value"] == "fr"));
    let ops = export(&["export", "--jsonl", "--ops"]);
    assert_eq!(ops.len(), 52, "one op per imported row, none from the second run");
    assert!(ops.iter().all(|o| o["op_id"].as_str().is_some_and(|id| id.len() == 32)));
}

#[test]
fn a_file_that_is_not_sqlite_is_one_clear_error_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, db) = (dir.path().join("store"), dir.path().join("memory.db"));
    std::fs::write(&db, b"this is not a database, just text long enough to be read")
        .expect("write");
    assert!(
        feral_node().arg("--data").arg(&data).arg("init").output().expect("init").status.success()
    );
    let out = feral_node()
        .arg("--data")
        .arg(&data)
        .args(["import", "--sqlite"])
        .arg(&db)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("import") && err.contains("memory.db"), "{err}");
    assert_eq!(common::open(&data).wal().durable_lsn(), 0);
}

#[test]
fn import_and_export_go_through_a_running_node_as_they_would_into_a_stopped_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("memory.db");
    fixture(&db);
    // The reference: the same database imported into a stopped store.
    let offline = dir.path().join("offline");
    assert!(
        feral_node()
            .arg("--data")
            .arg(&offline)
            .arg("init")
            .output()
            .expect("init")
            .status
            .success()
    );
    let (_, reference) = import(&offline, &db);

    let data = dir.path().join("running");
    let node = common::RunningNode::start(&data, &[]);
    let (code, report) = import(&data, &db);
    assert_eq!(code, Some(1), "the empty summary is skipped as before: {report}");
    assert_eq!(report["tables"], reference["tables"], "the same counts through the node");
    assert_eq!(report["skips"], reference["skips"], "the same skips, with their reasons");
    let (status, seven) = node.api().call("GET", "/v1/episodes/7", None).expect("get");
    assert_eq!(status, 200, "{seven}");
    assert_eq!(seven["created_at"], 1_709_892_007.0, "the original time kept: {seven}");

    // Again through the node: nothing new.
    let (_, again) = import(&data, &db);
    assert_eq!(table(&again, "episodes")["duplicates"], 50, "{again}");
    assert_eq!(table(&again, "episodes")["imported"], 0, "{again}");
    assert_eq!(table(&again, "preferences")["duplicates"], 2, "{again}");
    // Out again through the node: the lines an export of the stopped store writes.
    let export = |args: &[&str]| -> (String, String) {
        let out = feral_node().arg("--data").arg(&data).args(args).output().expect("export");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        (String::from_utf8(out.stdout).expect("utf-8"), said)
    };
    let (live_rows, said) = export(&["export", "--jsonl"]);
    assert!(said.contains("exported 52 rows through the running node"), "{said}");
    let (live_ops, _) = export(&["export", "--jsonl", "--ops"]);
    assert_eq!(live_ops.lines().count(), 52);
    assert!(node.stop());
    let (stopped_rows, said) = export(&["export", "--jsonl"]);
    assert!(!said.contains("running node"), "{said}");
    assert_eq!(live_rows, stopped_rows, "an export through the node is the stopped store's");
    assert_eq!(live_ops, export(&["export", "--jsonl", "--ops"]).0);

    // The ops are the ones a stopped store makes: the same op_ids with the same rows (their
    // HLCs and origins are each store's own), and a third import into the stopped store finds
    // every row already there.
    let rows = |data: &Path| -> Vec<Value> {
        let out = feral_node().arg("--data").arg(data).args(["export", "--jsonl"]).output();
        let out = out.expect("export");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut rows: Vec<Value> = String::from_utf8(out.stdout)
            .expect("utf-8")
            .lines()
            .map(|l| {
                let row: Value = serde_json::from_str(l).expect("json line");
                serde_json::json!([row["table"], row["row_id"], row["op_id"], row["data"]])
            })
            .collect();
        rows.sort_by_key(|r| r.to_string());
        rows
    };
    assert_eq!(rows(&data), rows(&offline));
    assert_eq!(rows(&data).len(), 52);
    let (_, third) = import(&data, &db);
    assert_eq!(table(&third, "episodes")["duplicates"], 50, "{third}");
    assert_eq!(table(&third, "preferences")["duplicates"], 2, "{third}");
}
