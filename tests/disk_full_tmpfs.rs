//! A real disk full: the store on a size-limited tmpfs (as root; skipped with a printed reason
//! otherwise). `feral-node append` exits 75 naming the data directory; every acknowledged op
//! survives; the Node API reports io_paused, refuses writes at once, and after space is freed
//! resume() re-checks and appends work again.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};

use common::{Tmpfs, doc, feral_node, fill_device, spawn_append};
use feral_log::OpId;
use feral_memory::Node;

fn line(i: usize) -> String {
    let d = serde_json::json!({"id": format!("c{i}"), "session_id": "s", "event_type": "chat",
        "summary": "y".repeat(400)});
    format!("{d}\n")
}

#[test]
fn disk_full_on_a_real_tmpfs_pauses_loses_nothing_and_resumes() {
    let Some(fs) = Tmpfs::mount("8m") else { return };
    let data = fs.path().join("store");
    let init =
        feral_node().arg("--data").arg(&data).args(["init", "--segment-bytes", "65536"]).output();
    assert!(init.expect("init").status.success());
    let filler = fill_device(fs.path());
    // Leave a little room so some appends succeed first.
    let f = std::fs::OpenOptions::new().write(true).open(&filler).expect("filler");
    let len = f.metadata().expect("len").len();
    f.set_len(len.saturating_sub(1024 * 1024)).expect("shrink filler");
    drop(f);

    // The CLI: appends until the disk is full, then exits 75 naming the data directory.
    let mut child = spawn_append(&data);
    let mut stdin = child.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || {
        for i in 0..20_000 {
            if stdin.write_all(line(i).as_bytes()).is_err() {
                return;
            }
        }
    });
    let mut acked: BTreeMap<OpId, String> = BTreeMap::new();
    for l in BufReader::new(child.stdout.take().expect("stdout")).lines() {
        let ack: serde_json::Value = serde_json::from_str(&l.expect("line")).expect("json");
        let op_id = OpId::parse(ack["op_id"].as_str().expect("op_id")).expect("hex");
        acked.insert(op_id, format!("c{}", ack["line"].as_u64().expect("line") - 1));
    }
    let out = child.wait_with_output().expect("wait");
    let _ = feeder.join();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "stderr: {stderr}");
    assert!(stderr.contains(&data.display().to_string()), "names the data directory: {stderr}");
    assert!(stderr.to_lowercase().contains("disk full"), "{stderr}");
    assert!(!acked.is_empty(), "some appends succeeded before the disk filled");

    // The Node API on the still-full disk: everything acknowledged is there; then a write
    // fails with disk full, pauses, and the next one is refused without touching the disk.
    let node = Node::open(&data, feral_log::Config::default()).expect("open on a full disk");
    let present = |node: &Node| {
        for (op_id, episode) in &acked {
            assert!(node.wal().get(op_id).expect("get").is_some(), "acknowledged op {op_id} lost");
            assert!(node.episode(episode).expect("episode").is_some(), "row {episode} missing");
        }
    };
    // The index cannot catch up on a full disk, so look in the log itself.
    let mut in_log = std::collections::HashSet::new();
    node.wal()
        .scan(1, &mut |r| {
            in_log.insert(r.op.op_id);
            Ok(true)
        })
        .expect("scan");
    assert!(acked.keys().all(|id| in_log.contains(id)), "an acknowledged op was lost");
    let lookup = node.wal().get(acked.keys().next_back().expect("acked"));
    assert!(!matches!(lookup, Ok(None)), "a lagging index must not answer 'absent'");
    let mut i = 0;
    let err = loop {
        i += 1;
        match node.append_episode(&doc(&format!("n{i}"), "s", 1.0), None) {
            Ok(_) => assert!(i < 10_000, "the disk never filled"),
            Err(e) => break e,
        }
    };
    assert!(err.is_disk_full(), "{err}");
    assert!(node.io_paused() && node.status().io_paused);
    let again = node.append_episode(&doc("refused", "s", 1.0), None).expect_err("paused");
    assert!(again.is_disk_full(), "refused as disk full while paused: {again}");

    // Free space, resume, write again; nothing acknowledged was lost.
    std::fs::remove_file(&filler).expect("free space");
    let report = node.resume();
    assert!(report.ok, "{report:?}");
    assert!(!node.io_paused());
    node.append_episode(&doc("after", "s", 1.0), None).expect("append after resume");
    present(&node);
    assert!(node.episode("after").expect("get").is_some());
    assert!(node.check().ok);
    node.close().expect("close");
}

/// `init` on a volume smaller than one segment refuses, naming the segment size and the free
/// space, and creates nothing; a segment size that fits is taken.
#[test]
fn init_refuses_a_segment_larger_than_the_free_space() {
    let Some(fs) = Tmpfs::mount("8m") else { return };
    let data = fs.path().join("store");
    let out = feral_node().arg("--data").arg(&data).arg("init").output().expect("init");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("67108864 bytes") && stderr.contains("free"), "names both: {stderr}");
    assert!(stderr.contains("--segment-bytes"), "says what to do: {stderr}");
    assert!(!data.exists(), "a refused init creates nothing");
    let out = feral_node()
        .arg("--data")
        .arg(&data)
        .args(["init", "--segment-bytes", "1048576"])
        .output()
        .expect("init");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(data.join("wal").read_dir().expect("wal").next().is_some(), "the first segment");
}

/// The disk-full reserve: a store on a volume with room keeps a 16 MiB reserve file; when the
/// disk fills, the store pauses and deletes it at once (its space goes to what must still
/// commit), and freeing a few MiB is enough to resume, after which the reserve is taken again;
/// nothing acknowledged is lost.
#[test]
fn the_reserve_lets_a_full_store_resume_once_a_few_mib_are_free() {
    let Some(fs) = Tmpfs::mount("48m") else { return };
    let data = fs.path().join("store");
    let init = feral_node()
        .arg("--data")
        .arg(&data)
        .args(["init", "--segment-bytes", "1048576"])
        .output()
        .expect("init");
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let node = Node::open(&data, feral_log::Config::default()).expect("open");
    let reserve = data.join(feral_log::reserve::RESERVE_FILE);
    assert_eq!(node.status().reserve_bytes, feral_log::limits::RESERVE_BYTES);
    assert_eq!(
        std::fs::metadata(&reserve).expect("reserve").len(),
        feral_log::limits::RESERVE_BYTES
    );
    let filler = fill_device(fs.path());
    let mut acked = Vec::new();
    let mut i = 0;
    let err = loop {
        i += 1;
        match node.append_episode(&doc(&format!("r{i}"), "s", 1.0), None) {
            Ok(_) => acked.push(format!("r{i}")),
            Err(e) => break e,
        }
        assert!(i < 100_000, "the disk never filled");
    };
    assert!(err.is_disk_full(), "{err}");
    assert!(node.io_paused());
    assert!(!reserve.exists(), "the reserve is released on a full disk");
    assert_eq!(node.status().reserve_bytes, 0);
    // A few MiB freed are enough: the reserve's space covers the rest.
    let f = std::fs::OpenOptions::new().write(true).open(&filler).expect("filler");
    let len = f.metadata().expect("len").len();
    f.set_len(len.saturating_sub(4 * 1024 * 1024)).expect("free 4 MiB");
    drop(f);
    let report = node.resume();
    assert!(report.ok, "{report:?}");
    assert!(!node.io_paused());
    assert_eq!(node.status().reserve_bytes, feral_log::limits::RESERVE_BYTES, "taken again");
    node.append_episode(&doc("after", "s", 1.0), None).expect("append after resume");
    for id in acked.iter().chain(["after".to_string()].iter()) {
        assert!(node.episode(id).expect("read").is_some(), "{id} lost");
    }
    assert!(node.check().ok);
    node.close().expect("close");
}
