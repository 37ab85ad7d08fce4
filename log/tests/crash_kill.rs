//! A real `feral-wal append` child with four appenders is SIGKILLed at random moments, 50
//! times on one directory: after every kill each acknowledged op is present, no op appears
//! twice, and HLC order is monotone in LSN order across all the restarts.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Rng, all_ops};
use feral_log::{OpId, Wal};

const ITERATIONS: usize = 50;

#[test]
fn sigkill_during_appends_loses_no_acknowledged_op() {
    let mut rng = Rng::from_env("crash_kill");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("log");
    let mut acked: HashSet<OpId> = HashSet::new();
    for iteration in 0..ITERATIONS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_feral-wal"))
            .args([
                "append",
                data.to_str().expect("utf8"),
                "--count",
                "100000000",
                "--bytes",
                "256",
            ])
            .args(["--segment-bytes", "65536", "--threads", "4"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn feral-wal");
        let target = 1 + rng.below(120);
        let jitter = Duration::from_micros(rng.below(4000));
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut seen = 0;
        while seen < target {
            let line = lines.next().expect("child ended early").expect("read line");
            acked.insert(op_id_of(&line));
            seen += 1;
        }
        std::thread::sleep(jitter); // vary the kill point inside the next group commit
        child.kill().expect("SIGKILL");
        for line in lines {
            // Lines the child printed before it died were acknowledged too.
            match line {
                Ok(line) if line.ends_with('}') => {
                    acked.insert(op_id_of(&line));
                }
                _ => break,
            }
        }
        child.wait().expect("reap");
        verify(&data, &acked, iteration);
    }
}

fn op_id_of(line: &str) -> OpId {
    let value: serde_json::Value = serde_json::from_str(line).expect("json line");
    OpId::parse(value["op_id"].as_str().expect("op_id")).expect("hex")
}

fn verify(dir: &std::path::Path, acked: &HashSet<OpId>, iteration: usize) {
    let wal = Wal::open(dir, common::config(65536)).expect("reopen after kill");
    assert_eq!(wal.pause(), None, "iteration {iteration}");
    let records = all_ops(&wal);
    assert_eq!(records.len() as u64, wal.durable_lsn(), "iteration {iteration}");
    let ids: HashSet<OpId> = records.iter().map(|r| r.op.op_id).collect();
    assert_eq!(ids.len(), records.len(), "iteration {iteration}: duplicate op_ids");
    let missing: Vec<_> = acked.difference(&ids).collect();
    assert!(missing.is_empty(), "iteration {iteration}: acknowledged ops lost: {missing:?}");
    for pair in records.windows(2) {
        assert!(
            pair[0].op.hlc < pair[1].op.hlc,
            "iteration {iteration}: HLC went back at LSN {}",
            pair[1].lsn
        );
    }
    let seqs: Vec<u64> = records.iter().map(|r| r.op.seq).collect();
    assert_eq!(
        seqs,
        (1..=records.len() as u64).collect::<Vec<_>>(),
        "iteration {iteration}: seq gaps"
    );
    let report = wal.check();
    assert!(report.ok, "iteration {iteration}: {report:?}");
}
