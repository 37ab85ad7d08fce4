//! The `feral-wal` tool: a round trip through append, check and dump, exit 65 with the location
//! on corruption, and clear errors (no directory created) for a missing log.

mod common;

use std::process::{Command, Output};

fn feral_wal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_feral-wal")).args(args).output().expect("run feral-wal")
}

#[test]
fn append_check_dump_round_trip_and_corruption_exit_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("log");
    let data = data.to_str().expect("utf8");
    let out =
        feral_wal(&["append", data, "--count", "40", "--bytes", "100", "--segment-bytes", "4096"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let acked: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(acked.len(), 40);

    let check = feral_wal(&["check", data, "--json"]);
    assert_eq!(check.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).expect("report");
    assert_eq!((report["ok"].as_bool(), report["records"].as_u64()), (Some(true), Some(40)));

    let dump = feral_wal(&["dump", data, "--json"]);
    assert!(dump.status.success());
    let ids: Vec<String> = String::from_utf8_lossy(&dump.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["op_id"].to_string())
        .collect();
    let expected: Vec<String> = acked.iter().map(|a| a["op_id"].to_string()).collect();
    let mut sorted = expected.clone();
    sorted.sort();
    let mut got = ids.clone();
    got.sort();
    assert_eq!(got, sorted, "dump lists exactly the acknowledged ops");

    // A stray byte in the first (sealed) segment: exit 65 and the location in the report.
    let segment = dir.path().join("log/wal").join(feral_log::segment::segment_name(1));
    let mut bytes = std::fs::read(&segment).expect("read");
    bytes[200] ^= 0x40;
    std::fs::write(&segment, &bytes).expect("write");
    let check = feral_wal(&["check", data, "--json"]);
    assert_eq!(check.status.code(), Some(65));
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).expect("report");
    assert_eq!(report["ok"], false);
    assert_eq!(report["error"], "wal_corruption");
    assert_eq!(report["wal_detail"]["segment"], "00000000000000000001.seg", "{report}");

    // The normal dump stops at the damage; the salvage lists every other op, names the
    // damaged stretch on stderr and exits 65.
    assert!(!feral_wal(&["dump", data, "--json"]).status.success());
    let salvage = feral_wal(&["dump", data, "--json", "--salvage"]);
    assert_eq!(salvage.status.code(), Some(65), "{}", String::from_utf8_lossy(&salvage.stderr));
    let mut salvaged: Vec<String> = String::from_utf8_lossy(&salvage.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["op_id"].to_string())
        .collect();
    salvaged.sort();
    assert_eq!(salvaged.len(), 39, "one frame damaged");
    assert!(salvaged.iter().all(|id| sorted.contains(id)));
    let report: serde_json::Value =
        serde_json::from_slice(&salvage.stderr).expect("the salvage report on stderr");
    let damaged = &report["salvage"]["damaged"][0];
    assert_eq!(damaged["segment"], "00000000000000000001.seg", "{report}");
    assert!(
        damaged["from_offset"].as_u64() <= Some(200) && damaged["to_offset"].as_u64() > Some(200)
    );
    assert_eq!(report["salvage"]["missing_lsns"], 1, "{report}");
}

#[test]
fn reading_commands_refuse_a_missing_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nothing-here");
    let out = feral_wal(&["check", missing.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no log at"));
    assert!(!missing.exists(), "check must not create a directory");
    assert_eq!(feral_wal(&["check"]).status.code(), Some(2), "usage error");
}
