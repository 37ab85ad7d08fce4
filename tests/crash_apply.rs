//! A `feral-node append` child SIGKILLed at random moments, 50 times over one store, so some
//! kills land between the log append and the projection commit. After each kill the store
//! reopens with every acknowledged op in the log and the projection, no op twice, a row for
//! every op in the log, the projection caught up, and a clean check.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};

use common::{Rng, feral_node, open, spawn_append};
use feral_log::OpId;

const ITERATIONS: usize = 50;
const LINES_PER_CHILD: usize = 3000;

#[test]
fn sigkill_mid_append_loses_no_acknowledged_row_and_duplicates_nothing() {
    let mut rng = Rng::from_env("crash_apply");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("store");
    let init =
        feral_node().arg("--data").arg(&data).args(["init", "--segment-bytes", "65536"]).output();
    assert!(init.expect("init").status.success());
    let mut acked: BTreeMap<OpId, String> = BTreeMap::new();
    for iteration in 0..ITERATIONS {
        let kill_after = 1 + rng.below(LINES_PER_CHILD as u64 / 2) as usize;
        let mut child = spawn_append(&data);
        let mut stdin = child.stdin.take().expect("stdin");
        let feeder = std::thread::spawn(move || {
            for line in 0..LINES_PER_CHILD {
                let doc = serde_json::json!({
                    "id": format!("i{iteration}-l{}", line + 1),
                    "session_id": format!("s{}", line % 7),
                    "event_type": "chat",
                    "summary": "x".repeat(100),
                });
                if writeln!(stdin, "{doc}").is_err() {
                    return; // the child is gone
                }
            }
        });
        let mut seen = 0;
        for line in BufReader::new(child.stdout.take().expect("stdout")).lines() {
            let Ok(line) = line else { break };
            let ack: serde_json::Value = serde_json::from_str(&line).expect("ack is JSON");
            let op_id = OpId::parse(ack["op_id"].as_str().expect("op_id")).expect("hex");
            let episode = format!("i{iteration}-l{}", ack["line"].as_u64().expect("line"));
            acked.insert(op_id, episode);
            seen += 1;
            if seen == kill_after {
                child.kill().expect("SIGKILL");
                break;
            }
        }
        let _ = child.wait();
        let _ = feeder.join();
        verify(&data, &acked, iteration);
    }
}

fn verify(data: &std::path::Path, acked: &BTreeMap<OpId, String>, iteration: usize) {
    let node = open(data);
    let mut ids = HashSet::new();
    let mut rows = HashSet::new();
    node.wal()
        .scan(1, &mut |r| {
            assert!(ids.insert(r.op.op_id), "iteration {iteration}: op {} twice", r.op.op_id);
            rows.insert(r.op.row_id);
            Ok(true)
        })
        .expect("scan");
    for (op_id, episode) in acked {
        assert!(ids.contains(op_id), "iteration {iteration}: acknowledged op {op_id} lost");
        assert!(
            node.episode(episode).expect("get").is_some(),
            "iteration {iteration}: row {episode} of an acknowledged op missing"
        );
    }
    let status = node.status();
    assert_eq!(status.projection.applied_lsn, status.durable_lsn, "iteration {iteration}");
    assert_eq!(
        status.projection.episodes,
        rows.len() as u64,
        "iteration {iteration}: a row per op"
    );
    assert_eq!(rows.len(), ids.len(), "iteration {iteration}: one op per episode id");
    if iteration % 10 == 9 {
        let report = node.check();
        assert!(report.ok, "iteration {iteration}: {report:?}");
    }
    node.close().expect("close");
}
