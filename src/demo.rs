//! `feral-node demo`: a short tour of one store, printed step by step.

use std::path::{Path, PathBuf};

use feral_log::Config;
use feral_memory::{Node, backup};
use serde_json::json;

use crate::Failure;

fn sample(i: usize) -> serde_json::Value {
    let (event, summary, emotions) = [
        ("conversation", "talked through the week's plan", vec!["focused"]),
        ("reminder", "dentist on Thursday at 9", vec![]),
        ("conversation", "the user prefers short answers", vec!["content"]),
        ("observation", "the garden tomatoes are ripening", vec!["pleased"]),
        ("conversation", "booked train tickets to Lyon", vec!["excited"]),
    ][i % 5]
        .clone();
    json!({
        "id": format!("demo-{i}"),
        "session_id": format!("session-{}", i % 2),
        "event_type": event,
        "summary": summary,
        "importance": 0.3 + 0.1 * i as f64,
        "emotions": emotions,
        "participants": ["user", "assistant"],
    })
}

/// Small segments: a demo store should not take 64 MiB of disk.
const DEMO_SEGMENT_BYTES: u64 = 1024 * 1024;

pub(crate) fn run(data: Option<&Path>) -> Result<(), Failure> {
    let config = || Config { segment_bytes: DEMO_SEGMENT_BYTES, ..Config::default() };
    let dir = match data {
        Some(d) => d.to_path_buf(),
        None => std::env::temp_dir().join(format!("feral-demo-{}", std::process::id())),
    };
    println!("1. store at {}", dir.display());
    let node = Node::open(&dir, config())?;
    println!("   node id {}, origin {}", node.node_id(), node.wal().origin());
    println!("2. append 5 episodes (each durable before it is acknowledged)");
    for i in 0..5 {
        let done = node.append_episode(&sample(i), None)?;
        println!("   demo-{i}: op {} hlc {}", done.op_id, done.hlc);
    }
    println!("3. the 3 most recent episodes of session-0");
    for view in node.episodes(3, Some("session-0"))? {
        println!("   {} [{}] {}", view.episode.id, view.episode.event_type, view.episode.summary);
    }
    println!("4. delete demo-1 (a tombstone)");
    node.delete_episode("demo-1", None)?;
    println!("   {} live episodes", node.episodes(100, None)?.len());
    let report = node.check();
    println!("5. check: ok={} ({} records verified)", report.ok, report.records);
    let digest = node.digest()?.digest;
    println!("   digest {digest}");
    let backup_dir = with_suffix(&dir, "backup");
    let restored_dir = with_suffix(&dir, "restored");
    let manifest = node.backup(&backup_dir)?;
    println!("6. backup to {} ({} files)", backup_dir.display(), manifest.files.len());
    node.close()?;
    let restored = backup::restore(&backup_dir, &restored_dir, false, config())?;
    let copy = Node::open(&restored_dir, config())?;
    let same = copy.digest()?.digest == digest;
    println!(
        "7. restored into {} with new origin {}: digest {}",
        restored_dir.display(),
        restored.origin,
        if same { "equal" } else { "DIFFERENT" }
    );
    copy.close()?;
    if !report.ok || !same {
        return Err(crate::fail(1, "the demo store did not verify"));
    }
    println!("done: inspect with `feral-node --data {} episodes`", dir.display());
    Ok(())
}

fn with_suffix(dir: &Path, suffix: &str) -> PathBuf {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dir.with_file_name(format!("{name}-{suffix}"))
}
