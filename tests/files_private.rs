//! Files stay private whatever the umask: at umask 000 and 022, every directory under the data,
//! backup, restored, CA and signed-certificate directories (and the local CA of a first `run`)
//! is 0700 and every file 0600, for the `feral-node` commands and for the library alike.
//! `run` refuses a data directory or key its group or others can reach; `certs new-ca` refuses
//! to replace a CA without `--force`; a certificate comes from a signing request without the CA
//! key ever being on the node.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{RunningNode, feral_node};

/// `feral-node` run with the process umask `mask`.
fn with_umask(mask: u32, config: &Path) -> Command {
    let mut cmd = feral_node();
    cmd.env("XDG_CONFIG_HOME", config);
    // SAFETY: umask is async-signal-safe and touches only the child's own mask.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(mask as libc::mode_t);
            Ok(())
        });
    }
    cmd
}

fn ok(out: Output, what: &str) -> String {
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every path under `root` (itself included) whose mode is not 0700 (directories) or 0600.
fn not_private(root: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).expect("metadata");
        let mode = meta.permissions().mode() & 0o7777;
        let wanted = if meta.is_dir() { 0o700 } else { 0o600 };
        if mode != wanted {
            out.push((path.clone(), mode));
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read_dir") {
                stack.push(entry.expect("entry").path());
            }
        }
    }
    out
}

#[test]
fn every_file_is_private_whatever_the_umask() {
    for mask in [0o000, 0o022] {
        let root = tempfile::tempdir().expect("tempdir");
        let at = |name: &str| root.path().join(name);
        let config = at("config");
        let run = |args: &[&str], data: &Path| {
            let out = with_umask(mask, &config).arg("--data").arg(data).args(args).output();
            ok(out.expect("spawn"), &format!("{args:?} at umask {mask:o}"))
        };
        let (data, ca, backup, restored, signed) =
            (at("data"), at("ca"), at("backup"), at("restored"), at("signed"));
        let s = |p: &Path| p.to_str().expect("utf-8").to_string();
        run(&["certs", "new-ca", "--out", &s(&ca)], &data);
        run(&["init"], &data);
        run(&["certs", "issue", "--ca", &s(&ca)], &data);
        let mut append = with_umask(mask, &config);
        append.arg("--data").arg(&data).arg("append").stdin(std::process::Stdio::piped());
        let mut child = append.stdout(std::process::Stdio::null()).spawn().expect("append");
        std::io::Write::write_all(
            child.stdin.as_mut().expect("stdin"),
            br#"{"id":"e1","session_id":"s","event_type":"chat","summary":"hello"}"#,
        )
        .expect("write");
        drop(child.stdin.take());
        assert!(child.wait().expect("wait").success());
        run(&["backup", "--to", &s(&backup)], &data);
        run(&["restore", "--from", &s(&backup)], &restored);
        run(&["certs", "csr"], &data);
        let csr = data.join("node.csr");
        run(&["certs", "sign", "--csr", &s(&csr), "--ca", &s(&ca), "--out", &s(&signed)], &data);
        run(&["certs", "install", "--from", &s(&signed)], &data);
        // A running node's own files (token, socket, address), and a first run's local CA.
        let node = RunningNode::start_with(with_umask(mask, &config), &data, &[]);
        let socket = data.join(feral_memory::api::SOCKET_FILE);
        assert_eq!(std::fs::metadata(&socket).expect("socket").permissions().mode() & 0o777, 0o600);
        let live = not_private(&data);
        assert!(node.stop());
        assert!(live.is_empty(), "umask {mask:03o}, while running: {live:?}");
        let fresh = at("fresh");
        let node = RunningNode::start_with(with_umask(mask, &config), &fresh, &[]);
        assert!(node.stop());
        for dir in [&data, &ca, &backup, &restored, &signed, &fresh, &config] {
            let shared = not_private(dir);
            assert!(shared.is_empty(), "umask {mask:03o}: {shared:?}");
        }
        assert!(
            config.join("feral-memory/local-ca/ca.key").exists(),
            "the local CA is in the config directory"
        );
        assert!(!fresh.join("local-ca").exists(), "and never in the data directory");
        assert!(not_private(&fresh).iter().all(|(p, _)| !p.ends_with("ca.key")));
    }
}

#[test]
fn the_library_creates_private_files_under_umask_000() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("store");
    // SAFETY: umask swaps this process's mask; this test binary's other tests spawn children
    // whose umask is set by feral-node itself.
    let old = unsafe { libc::umask(0) };
    let node = common::open(&data);
    node.append_episode(&common::doc("e1", "s", 1.0), None).expect("append");
    node.backup(&root.path().join("backup")).expect("backup");
    node.close().expect("close");
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    for dir in [data, root.path().join("backup")] {
        let shared = not_private(&dir);
        assert!(shared.is_empty(), "{shared:?}");
    }
}

#[test]
fn run_refuses_shared_data_and_keys_and_new_ca_refuses_to_overwrite() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let out = feral_node().arg("--data").arg(&data).arg("init").output().expect("init");
    ok(out, "init");
    let start = || {
        feral_node()
            .arg("--data")
            .arg(&data)
            .args(["run", "--no-mdns", "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"])
            .output()
            .expect("run")
    };
    for (path, mode, chmod) in
        [(data.clone(), 0o755, "chmod 700"), (data.join("node.key"), 0o644, "chmod 600")]
    {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let out = start();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("refusing to start") && err.contains(chmod), "{err}");
        assert!(err.contains(&path.display().to_string()), "names the file: {err}");
        let wanted = if path.is_dir() { 0o700 } else { 0o600 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(wanted)).expect("chmod");
    }
    let ca = root.path().join("ca");
    let new_ca = |force: bool| {
        let mut cmd = feral_node();
        cmd.args(["certs", "new-ca", "--out"]).arg(&ca);
        if force {
            cmd.arg("--force");
        }
        cmd.output().expect("new-ca")
    };
    ok(new_ca(false), "first new-ca");
    let key = std::fs::read(ca.join("ca.key")).expect("key");
    let again = new_ca(false);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a cluster CA"));
    assert_eq!(std::fs::read(ca.join("ca.key")).expect("key"), key, "the CA key was kept");
    let forced = new_ca(true);
    assert!(forced.status.success());
    assert!(String::from_utf8_lossy(&forced.stderr).contains("warning: replacing"));
    assert_ne!(std::fs::read(ca.join("ca.key")).expect("key"), key, "--force replaced it");
    // A signed certificate for another node's key is not installed.
    let other = root.path().join("other");
    ok(feral_node().arg("--data").arg(&other).arg("init").output().expect("init"), "init other");
    ok(feral_node().arg("--data").arg(&other).args(["certs", "csr"]).output().expect("csr"), "csr");
    let signed = root.path().join("signed");
    let mut sign = feral_node();
    sign.args(["certs", "sign", "--csr"])
        .arg(other.join("node.csr"))
        .arg("--ca")
        .arg(&ca)
        .arg("--out")
        .arg(&signed);
    ok(sign.output().expect("sign"), "sign");
    let out = feral_node()
        .arg("--data")
        .arg(&data)
        .args(["certs", "install", "--from"])
        .arg(&signed)
        .output()
        .expect("install");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not for this node's key"));
}

/// Under power loss a directory entry is durable only once its parent is synced: `init` of a
/// data directory whose parents do not exist yet fsyncs each new directory's parent after
/// creating it, and the data directory after creating `index.redb` and `episodes.redb` in it
/// (seen by strace: each creation is followed by an fsync of the directory that holds it).
#[test]
fn init_makes_every_directory_and_store_file_it_creates_durable_in_its_parent() {
    if Command::new("strace").arg("-V").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI installs strace (.ci/run)");
        println!("SKIPPED: no strace on this machine (apt-get install strace)");
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let config = tempfile::tempdir().expect("config");
    let data = root.path().join("a/b/data");
    let trace = root.path().join("trace");
    let out = Command::new("strace")
        .args(["-f", "-qq", "-y", "-e", "trace=mkdir,mkdirat,openat,fsync,fdatasync", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_feral-node"))
        .env("XDG_CONFIG_HOME", config.path())
        .args(["init", "--data"])
        .arg(&data)
        .output()
        .expect("strace feral-node init");
    ok(out, "init under strace");
    let trace = std::fs::read_to_string(&trace).expect("trace");
    let lines: Vec<&str> = trace.lines().collect();
    // The first successful call of `what` at or after line `from` that names `path`: as its
    // argument (`"path"`, a creation) or as the directory behind its descriptor (`<path>`).
    let find = |from: usize, what: &str, named: String| {
        let hit = |l: &&str| l.contains(what) && l.contains(&named) && !l.contains("= -1");
        lines.iter().enumerate().skip(from).find(|(_, l)| hit(l)).map(|(i, _)| i)
    };
    let arg = |p: &Path| format!("\"{}\"", p.display());
    let fd = |p: &Path| format!("<{}>)", p.display());
    let created = [root.path().join("a"), root.path().join("a/b"), data.clone()];
    for dir in &created {
        let made = find(0, "mkdir", arg(dir))
            .unwrap_or_else(|| panic!("no mkdir of {} in\n{trace}", dir.display()));
        let parent = dir.parent().expect("parent");
        assert!(
            find(made, "fsync(", fd(parent)).is_some(),
            "{} was created but its parent {} was not fsynced after it:\n{trace}",
            dir.display(),
            parent.display()
        );
    }
    for file in ["index.redb", "episodes.redb"] {
        let path = data.join(file);
        let made = find(0, "O_CREAT", arg(&path))
            .unwrap_or_else(|| panic!("no creation of {} in\n{trace}", path.display()));
        assert!(
            find(made, "fsync(", fd(&data)).is_some(),
            "{file} was created but the data directory was not fsynced after it:\n{trace}"
        );
    }
}
