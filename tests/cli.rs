//! `feral-node` as a user runs it: help on every command, exit codes, line-by-line append
//! errors, --strict, idempotent retries by op_id, digest output, FERAL_DATA_DIR.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

use common::feral_node;

fn run(data: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = feral_node()
        .arg("--data")
        .arg(data)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write");
    child.wait_with_output().expect("wait")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const GOOD: &str = r#"{"id":"e1","session_id":"s1","event_type":"chat","summary":"hello"}"#;

#[test]
fn every_command_has_help_and_usage_errors_exit_2() {
    let commands = [
        "init", "append", "episodes", "get", "delete", "status", "check", "resume", "rebuild",
        "digest", "dump", "backup", "restore", "salvage", "import", "export", "demo", "certs",
        "run", "sync",
    ];
    for command in commands {
        let out = feral_node().args([command, "--help"]).output().expect("help");
        assert!(out.status.success(), "{command} --help");
        assert!(text(&out.stdout).contains("Usage"), "{command}");
    }
    let out = feral_node().args(["episodes", "--no-such-flag"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_missing_store_is_one_clear_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(&dir.path().join("none"), &["episodes"], "");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("feral-node init"), "{err}");
}

#[test]
fn append_refuses_bad_lines_by_number_and_field_and_keeps_the_good_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("store");
    assert!(run(&data, &["init"], "").status.success());
    let input = format!(
        "{GOOD}\n{}\nnot json\n\n{}\n",
        r#"{"id":"e2","session_id":"s1","event_type":"chat","summary":"x","importance":7}"#,
        r#"{"id":"e3","session_id":"s2","event_type":"chat","summary":"three"}"#
    );
    let out = run(&data, &["append"], &input);
    assert_eq!(out.status.code(), Some(1), "a refused line makes the status non-zero");
    let err = text(&out.stderr);
    assert!(err.contains("line 2: field `importance`"), "{err}");
    assert!(err.contains("line 3:"), "{err}");
    assert_eq!(text(&out.stdout).lines().count(), 2, "one line per appended op");
    let listed = run(&data, &["episodes", "--json"], "");
    let episodes: Vec<serde_json::Value> =
        text(&listed.stdout).lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(episodes.len(), 2, "one JSON object per line");

    // --strict: one bad line and nothing is appended.
    let strict = format!("{}\n{{\"id\":\"e5\"}}\n", GOOD.replace("e1", "e4"));
    let out = run(&data, &["append", "--strict"], &strict);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("line 2: field `session_id`"));
    assert_eq!(run(&data, &["get", "e4"], "").status.code(), Some(1), "nothing appended");
}

#[test]
fn op_id_makes_a_retry_idempotent_and_digest_prints_one_hex_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("store");
    assert!(run(&data, &["init", "--segment-bytes", "65536"], "").status.success());
    let line = GOOD.replace("{\"id\"", "{\"op_id\":\"000102030405060708090a0b0c0d0e0f\",\"id\"");
    let first = run(&data, &["append"], &format!("{line}\n"));
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(text(&first.stdout).starts_with("000102030405060708090a0b0c0d0e0f "));
    let again = run(&data, &["append", "--json"], &format!("{line}\n"));
    let ack: serde_json::Value = serde_json::from_slice(&again.stdout).expect("json");
    assert_eq!(ack["duplicate"], true);
    let bad_id = GOOD.replace("{\"id\"", "{\"op_id\":\"xyz\",\"id\"");
    let out = run(&data, &["append"], &format!("{bad_id}\n"));
    assert!(text(&out.stderr).contains("line 1: field `op_id`"));

    let digest = run(&data, &["digest"], "");
    let hex = text(&digest.stdout);
    assert_eq!(hex.trim().len(), 64);
    assert_eq!(hex.lines().count(), 1);
    let json: serde_json::Value =
        serde_json::from_slice(&run(&data, &["digest", "--json"], "").stdout).expect("json");
    assert_eq!(json["digest"].as_str(), Some(hex.trim()));
    assert_eq!(json["ops"], 1);

    let check: serde_json::Value =
        serde_json::from_slice(&run(&data, &["check", "--json"], "").stdout).expect("json");
    assert_eq!((check["ok"].clone(), check["episodes"].clone()), (true.into(), "ok".into()));

    // The data directory from the environment.
    let out = feral_node()
        .env("FERAL_DATA_DIR", &data)
        .args(["get", "e1", "--json"])
        .output()
        .expect("get");
    assert!(out.status.success());
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(got["summary"], "hello");
    assert!(run(&data, &["delete", "e1"], "").status.success());
    assert_eq!(run(&data, &["get", "e1"], "").status.code(), Some(1));
}

#[test]
fn while_a_node_runs_the_store_commands_go_through_its_api() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("store");
    let mut node = feral_node()
        .arg("--data")
        .arg(&data)
        .args(["run", "--no-mdns", "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn run");
    let mut lines = std::io::BufReader::new(node.stdout.take().expect("stdout")).lines();
    loop {
        let line = lines.next().expect("the node printed its addresses").expect("line");
        if line.starts_with("api on") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let input = format!(
        "{GOOD}\n{}\n",
        r#"{"id":"e2","session_id":"s1","event_type":"chat","summary":""}"#
    );
    let out = run(&data, &["append"], &input);
    assert_eq!(out.status.code(), Some(1), "one line refused");
    assert!(text(&out.stderr).contains("line 2: field `summary`"), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 1);
    let listed = text(&run(&data, &["episodes", "--json"], "").stdout);
    assert_eq!(listed.lines().count(), 1);
    let _: serde_json::Value = serde_json::from_str(listed.trim()).expect("json");
    let got: serde_json::Value =
        serde_json::from_slice(&run(&data, &["get", "e1", "--json"], "").stdout).expect("json");
    assert_eq!(got["summary"], "hello");
    assert_eq!(run(&data, &["check"], "").status.code(), Some(0));
    let status: serde_json::Value =
        serde_json::from_slice(&run(&data, &["status", "--json"], "").stdout).expect("json");
    assert_eq!(status["io_paused"], false);
    let refused = run(&data, &["digest"], "");
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("a node is running"), "{}", text(&refused.stderr));
    // SAFETY: kill(2) with a pid we own and a valid signal number.
    unsafe { libc::kill(node.id() as i32, libc::SIGTERM) };
    assert!(node.wait().expect("wait").success(), "clean shutdown");
    let digest = run(&data, &["digest", "--json"], "");
    assert!(digest.status.success(), "the store is local again: {}", text(&digest.stderr));
}

#[test]
fn a_reader_that_goes_away_is_not_an_error_and_a_full_output_is() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("store");
    let lines: String = (0..3000)
        .map(|i| format!("{{\"id\":\"e{i}\",\"session_id\":\"s\",\"event_type\":\"chat\",\"summary\":\"{}\"}}\n", "x".repeat(80)))
        .collect();
    assert!(run(&data, &["init"], "").status.success());
    assert!(run(&data, &["append"], &lines).status.success());
    for args in [&["episodes", "--limit", "3000"][..], &["dump"][..]] {
        // `feral-node episodes | head -1`: read one line, then close the pipe.
        let mut child = feral_node()
            .arg("--data")
            .arg(&data)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut reader = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        reader.read_line(&mut first).expect("a line");
        drop(reader);
        let out = child.wait_with_output().expect("wait");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out.stderr));
        assert!(out.stderr.is_empty(), "{args:?} quietly: {}", text(&out.stderr));
    }
    if let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") {
        let out =
            feral_node().arg("--data").arg(&data).arg("dump").stdout(full).output().expect("run");
        assert_eq!(out.status.code(), Some(1), "a full output is an error");
        assert!(text(&out.stderr).contains("No space left"), "{}", text(&out.stderr));
    }
}

/// Runs `feral-node --data DATA ARGS` with its stderr on a new pseudo-terminal (200 columns);
/// returns its exit code and everything it drew there.
fn run_on_terminal(data: &Path, args: &[&str]) -> (Option<i32>, String) {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize { ws_row: 40, ws_col: 200, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: openpty writes two descriptors it opened into the two ints; no name buffer,
    // no termios, a valid winsize.
    let rc = unsafe {
        libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size)
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened by openpty and are owned here alone.
    let (master, slave) =
        unsafe { (std::fs::File::from_raw_fd(master), std::fs::File::from_raw_fd(slave)) };
    let mut child = feral_node()
        .arg("--data")
        .arg(data)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(slave))
        .spawn()
        .expect("spawn");
    // The slave end now lives only in the child: the master reads EIO once it exits.
    let reader = std::thread::spawn(move || {
        let mut drawn = Vec::new();
        let mut master = master;
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            drawn.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&drawn).into_owned()
    });
    let code = child.wait().expect("wait").code();
    (code, reader.join().expect("reader"))
}

#[test]
fn long_operations_show_counts_and_rates_on_a_terminal_and_nothing_on_a_pipe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("store");
    let lines: String = (0..5000)
        .map(|i| format!("{{\"id\":\"e{i}\",\"session_id\":\"s\",\"event_type\":\"chat\",\"summary\":\"note {i}\"}}\n"))
        .collect();
    let file = dir.path().join("episodes.jsonl");
    std::fs::write(&file, lines).expect("write");
    assert!(run(&data, &["init"], "").status.success());
    let appended = feral_node()
        .arg("--data")
        .arg(&data)
        .args(["append", "--file", file.to_str().expect("utf-8")])
        .stdout(Stdio::null())
        .status()
        .expect("append");
    assert!(appended.success());

    // rebuild: its last stage re-indexes the 5,000 rows for search, drawn with its final count.
    let (code, drawn) = run_on_terminal(&data, &["rebuild"]);
    assert_eq!(code, Some(0), "{drawn}");
    assert!(drawn.contains("rebuild: indexing rows for search"), "{drawn}");
    assert!(drawn.contains("5,000 records"), "the count: {drawn}");
    assert!(drawn.contains("/s"), "a rate: {drawn}");

    // backup: bytes copied out of the log's total, and a rate.
    let to = dir.path().join("bk");
    let (code, drawn) = run_on_terminal(&data, &["backup", "--to", to.to_str().expect("utf-8")]);
    assert_eq!(code, Some(0), "{drawn}");
    assert!(drawn.contains("copying the log"), "{drawn}");
    assert!(drawn.contains("iB/s"), "a byte rate: {drawn}");

    // restore: verified, copied, then indexed and projected by the open.
    let into = dir.path().join("restored");
    let (code, drawn) = run_on_terminal(&into, &["restore", "--from", to.to_str().expect("utf-8")]);
    assert_eq!(code, Some(0), "{drawn}");
    assert!(drawn.contains("restore from"), "{drawn}");

    // The same commands on a pipe draw nothing.
    let out = run(&data, &["rebuild"], "");
    assert!(out.status.success());
    assert_eq!(text(&out.stderr), "", "no progress on a pipe");
}
