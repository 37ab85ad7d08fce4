//! When a node runs on the data directory (its lock is held), the store commands talk to it
//! through its API (the Unix socket `api.sock`, else the TCP address in `api.addr` with the
//! token) instead of failing on the lock.

use crate::out::out;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;

use feral_log::Code;
use feral_memory::client::ApiClient;
use serde_json::Value;

use crate::progress::Spinner;
use crate::{Failure, Outcome, fail};

/// The file a running node writes its API address into.
pub(crate) const API_ADDR_FILE: &str = "api.addr";

/// A running node's API, when the data directory belongs to one.
pub(crate) struct Remote {
    client: ApiClient,
    /// Its data directory.
    pub(crate) data: std::path::PathBuf,
}

impl Remote {
    /// The API of the node holding `data`, if one does.
    pub(crate) fn find(data: &Path) -> Option<Remote> {
        // Only forward when the store really is held: stale files after a crash are ignored.
        if feral_log::lock::DirLock::acquire(data).is_ok() {
            return None;
        }
        let addr: Option<SocketAddr> = std::fs::read_to_string(data.join(API_ADDR_FILE))
            .ok()
            .and_then(|text| text.trim().parse().ok());
        ApiClient::for_data_dir(data, addr)
            .map(|client| Remote { client, data: data.to_path_buf() })
    }

    /// One request; returns the status and the body as JSON.
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), Failure> {
        self.client
            .call(method, path, body)
            .map_err(|e| fail(1, format!("the running node's API: {e}")))
    }

    /// One request; the answer as it came (for bodies that are not one JSON value).
    pub(crate) fn raw(
        &self,
        method: &str,
        path: &str,
    ) -> Result<feral_memory::client::Answer, Failure> {
        self.client
            .send_blocking(feral_memory::client::Call::new(method, path))
            .map_err(|e| fail(1, format!("the running node's API: {e}")))
    }

    /// A request whose non-2xx answer becomes the command's failure (507 → exit 75).
    pub(crate) fn expect_ok(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let (status, value) = self.call(method, path, body)?;
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let code = value["error"].as_str().unwrap_or("error");
        let message = value["message"].as_str().unwrap_or("");
        let exit = match (status, Code::parse(code)) {
            (507, _) => crate::EXIT_DISK_FULL,
            (_, Some(c)) if c.is_corruption() => crate::EXIT_CORRUPTION,
            _ => 1,
        };
        Err(fail(exit, format!("{code}: {message} (through the running node's API)")))
    }
}

/// Percent-encodes a path segment.
pub(crate) fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A store command the running node cannot take over its API.
pub(crate) fn refuse(remote: &Remote, what: &str) -> Outcome {
    let how = if what == "restore" {
        ": a restore replaces the directory the node runs on; stop the node (SIGTERM or \
         Ctrl-C), run `feral-node restore --from DIR --force`, then start it again (a backup \
         needs no stop: `feral-node backup --to DIR` goes through the running node)"
    } else {
        ""
    };
    Err(fail(
        1,
        format!(
            "a node is running on this data directory (API at {}); stop it before `{what}`{how}",
            remote.client.endpoint
        ),
    ))
}

/// Runs a store command through the running node's API.
pub(crate) fn forward(command: crate::Command, remote: &Remote) -> Outcome {
    use crate::Command as C;
    match command {
        C::Episodes(args) => crate::cli_read::list_remote(remote, args),
        C::Search(args) => crate::cli_read::remote(remote, args),
        C::Watch(args) => crate::cli_watch::remote(remote, args),
        C::Peers { json } => peers(remote, json),
        C::Export { jsonl: _, ops } => export(remote, ops),
        C::Import { sqlite, json } => {
            let what = format!("import of {} through the running node", sqlite.display());
            let imported =
                crate::progress::with_meter(&what, |meter| import(remote, &sqlite, meter))?;
            crate::print_import(&imported, json)
        }
        C::Get { id, json } => {
            let view = remote.expect_ok("GET", &format!("/v1/episodes/{}", segment(&id)), None)?;
            crate::print_json(&view, !json)
        }
        C::Delete { id, op_id, json } => {
            let query = op_id.map(|o| format!("?op_id={}", segment(&o))).unwrap_or_default();
            let path = format!("/v1/episodes/{}{query}", segment(&id));
            let done = remote.expect_ok("DELETE", &path, None)?;
            if json {
                return crate::print_json(&done, false);
            }
            out!("{} {}", done["op_id"].as_str().unwrap_or(""), done["hlc"].as_str().unwrap_or(""));
            Ok(0)
        }
        C::Status { json } => {
            crate::print_json(&remote.expect_ok("GET", "/v1/status", None)?, !json)
        }
        C::Conflicts { json, action: Some(crate::ConflictAction::Resolve { origin }) } => {
            let path = format!("/v1/conflicts/{}/resolve", segment(&origin));
            crate::print_resolved(&remote.expect_ok("POST", &path, None)?, json)
        }
        C::Conflicts { json, action: None } => {
            let status = remote.expect_ok("GET", "/v1/status", None)?;
            crate::print_conflicts(&status["conflicts"], json)
        }
        C::Check { json } => report(&remote.expect_ok("GET", "/v1/check", None)?, json),
        C::Rebuild { json } => {
            let spinner = Spinner::start("rebuild through the running node".into());
            let rebuilt = remote.expect_ok("POST", "/v1/rebuild", None);
            spinner.finish();
            crate::print_rebuilt(&rebuilt?, json)
        }
        C::Resume { json } => report(&remote.expect_ok("POST", "/v1/resume", None)?, json),
        C::Sync { peer, json } => {
            let results = remote.expect_ok(
                "POST",
                "/v1/sync",
                Some(&serde_json::json!({"peer": peer.to_string()})),
            )?;
            let result = results.get(0).cloned().unwrap_or(Value::Null);
            crate::print_json(&result, !json)?;
            Ok(if result["success"] == true { 0 } else { 1 })
        }
        C::Heal { within, json } => crate::cli_heal::heal(remote, within, json),
        C::Append { file, strict, json } => append(remote, file.as_deref(), strict, json),
        C::Backup { to, json } => {
            // The running node takes it (it holds the store); the path must mean the same to it.
            let to =
                std::path::absolute(&to).map_err(|e| fail(1, format!("{}: {e}", to.display())))?;
            let body = serde_json::json!({"to": to.display().to_string()});
            let spinner = Spinner::start(format!("backup to {} by the running node", to.display()));
            let answer = remote.expect_ok("POST", "/v1/backup", Some(&body));
            spinner.finish();
            let manifest: feral_memory::backup::Manifest = serde_json::from_value(answer?)
                .map_err(|e| fail(1, format!("the running node's backup answer: {e}")))?;
            crate::print_backup(&manifest, &to, json)
        }
        C::Certs {
            command: crate::cli_sync::Certs::Issue { ca } | crate::cli_sync::Certs::Renew { ca },
        } => crate::cli_sync::renew_running(remote, &ca),
        C::Certs { command: crate::cli_sync::Certs::Install { from } } => {
            crate::cli_sync::install_running(remote, &from)
        }
        C::Certs { command: crate::cli_sync::Certs::Revoke { node_id, ca, reason, json } } => {
            let statement = crate::cli_sync::statement(&node_id, &ca, &reason)?;
            let body = serde_json::to_value(&statement).map_err(|e| fail(1, e.to_string()))?;
            let answer = remote.expect_ok("POST", "/v1/revocations", Some(&body))?;
            crate::cli_sync::print_revoked(&statement.node_id, &answer, json)
        }
        other => refuse(remote, command_name(&other)),
    }
}

fn command_name(command: &crate::Command) -> &'static str {
    use crate::Command as C;
    match command {
        C::Init { .. } => "init",
        C::Rebuild { .. } => "rebuild",
        C::Digest { .. } => "digest",
        C::Dump => "dump",
        C::Backup { .. } => "backup",
        C::Restore { .. } => "restore",
        C::Salvage { .. } => "salvage",
        C::Import { .. } => "import",
        C::Export { .. } => "export",
        C::Certs { .. } => "certs",
        C::Run { .. } => "run",
        _ => "this command",
    }
}

/// Prints a check report received from the API; exit 0 when ok, 65 when damaged.
pub(crate) fn report(value: &Value, json: bool) -> Outcome {
    if json {
        crate::print_json(value, false)?;
    } else if value["ok"] == true {
        out!(
            "ok: {} records in {} segments verified; index and episodes ok",
            value["records"],
            value["segments"]
        );
    } else {
        crate::print_json(value, true)?;
    }
    if !json && let Some(repair) = value.get("repair") {
        let after = if repair["check"]["ok"] == true { "ok" } else { "still damaged" };
        out!("the node rebuilt from the log: {}; checked again: {after}", repair["rebuilt"]);
    }
    Ok(match value["error"].as_str().map(Code::parse) {
        None => 0,
        Some(Some(code)) if code.is_corruption() => crate::EXIT_CORRUPTION,
        Some(_) => 1,
    })
}

/// `append` through the API: lines parsed here, sent in arrays of up to 1,000; a refused
/// array is retried line by line so each refused line is named.
fn append(remote: &Remote, file: Option<&Path>, strict: bool, json: bool) -> Outcome {
    let text = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| fail(1, format!("{}: {e}", path.display())))?,
        None => {
            let mut all = String::new();
            std::io::stdin()
                .read_to_string(&mut all)
                .map_err(|e| fail(1, format!("stdin: {e}")))?;
            all
        }
    };
    let mut refused = 0;
    let mut docs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(doc) => docs.push((i + 1, doc)),
            Err(e) => {
                refused += 1;
                eprintln!("feral-node: line {}: not a JSON object: {e}", i + 1);
            }
        }
    }
    if strict && refused > 0 {
        return Err(fail(1, format!("{refused} lines refused; nothing appended (--strict)")));
    }
    let print = |line: usize, a: &Value| -> Result<(), Failure> {
        if json {
            let mut a = a.clone();
            a["line"] = line.into();
            crate::print_json(&a, false).map(|_| ())
        } else {
            let dup = if a["duplicate"] == true { " duplicate" } else { "" };
            out!("{} {}{dup}", a["op_id"].as_str().unwrap_or(""), a["hlc"].as_str().unwrap_or(""));
            Ok(())
        }
    };
    for chunk in docs.chunks(1000) {
        let array = Value::Array(chunk.iter().map(|(_, d)| d.clone()).collect());
        let (status, value) = remote.call("POST", "/v1/episodes", Some(&array))?;
        if status == 200 {
            for ((line, _), a) in
                chunk.iter().zip(value["appended"].as_array().into_iter().flatten())
            {
                print(*line, a)?;
            }
            continue;
        }
        if status != 400 && status != 409 || strict {
            remote.expect_ok("POST", "/v1/episodes", Some(&array))?;
        }
        for (line, doc) in chunk {
            let (status, value) = remote.call("POST", "/v1/episodes", Some(doc))?;
            match status {
                200 => print(*line, &value["appended"][0])?,
                400 | 409 => {
                    refused += 1;
                    let message = value["message"].as_str().unwrap_or("refused");
                    let message = message.strip_prefix("episode 0: ").unwrap_or(message);
                    let message = message.strip_prefix("invalid episode: ").unwrap_or(message);
                    eprintln!("feral-node: line {line}: {message}");
                }
                _ => {
                    remote.expect_ok("POST", "/v1/episodes", Some(doc))?;
                }
            }
        }
    }
    if refused > 0 {
        return Err(fail(1, format!("{refused} lines refused")));
    }
    Ok(0)
}

/// `feral-node peers`: one line per peer.
fn peers(remote: &Remote, json: bool) -> Outcome {
    let list = remote.expect_ok("GET", "/v1/peers", None)?;
    if json {
        return crate::print_json(&list, false);
    }
    let text = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    out!(
        "{:<22} {:<10} {:<8} {:<9} {:>9} {:>8} {:>9} {:>9} {}",
        "PEER",
        "NODE",
        "SOURCE",
        "IN_FLIGHT",
        "LAST_SYNC",
        "FAILURES",
        "IT_LACKS",
        "WE_LACK",
        "LAST_ERROR"
    );
    for p in list.as_array().into_iter().flatten() {
        let s = &p["sync"];
        let node = text(&p["node_id"]);
        out!(
            "{:<22} {:<10} {:<8} {:<9} {:>9} {:>8} {:>9} {:>9} {}",
            text(&p["addr"]),
            node.get(..8).unwrap_or(&node),
            text(&p["source"]),
            if s["in_flight"] == true { "yes" } else { "no" },
            s["last_sync_secs_ago"].as_u64().map_or("never".to_string(), |n| format!("{n}s ago")),
            text(&s["failures"]),
            text(&s["peer_lacked"]),
            text(&s["lacked"]),
            if p["revoked"] == true { "revoked".to_string() } else { text(&s["last_error"]) }
        );
    }
    Ok(0)
}

/// An import through the running node: each batch one request (`/v1/episodes` or `/v1/ops`,
/// carrying the op_ids the import made), so it makes the same ops an import into a stopped
/// store makes, and running it again through either finds them all already there.
struct ApiImport<'a> {
    remote: &'a Remote,
}

impl ApiImport<'_> {
    fn error(status: u16, answer: &Value) -> feral_memory::Error {
        let text = answer["error"].as_str().unwrap_or("error").to_string();
        let message = answer["message"].as_str().unwrap_or("").to_string();
        // A row over the node's body limit is refused as the row it is, not the import.
        let code = if status == 413 { Some(Code::InvalidOp) } else { Code::parse(&text) };
        feral_memory::Error::Api { code, text, message }
    }
}

impl feral_memory::import::ImportSink for ApiImport<'_> {
    fn episode_data(&self, doc: &Value) -> feral_memory::Result<Vec<u8>> {
        // The node checks it again, against its own clock's drift bound.
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Ok(feral_materializer::Episode::from_input(doc, now_s)?.to_data())
    }

    fn append(&self, drafts: Vec<feral_types::OpDraft>) -> feral_memory::Result<Vec<bool>> {
        let Some(first) = drafts.first() else { return Ok(Vec::new()) };
        let episodes = first.table == feral_materializer::TABLE;
        let mut items = Vec::with_capacity(drafts.len());
        for draft in &drafts {
            let data: Value = serde_json::from_slice(&draft.data)
                .map_err(|e| feral_memory::Error::Import(format!("row {}: {e}", draft.row_id)))?;
            let op_id = draft.op_id.map(|o| o.to_string());
            items.push(if episodes {
                let mut doc = data;
                doc["op_id"] = serde_json::json!(op_id);
                doc
            } else {
                serde_json::json!({
                    "table": draft.table, "row_id": draft.row_id, "data": data, "op_id": op_id,
                })
            });
        }
        let path = if episodes { "/v1/episodes" } else { "/v1/ops" };
        let (status, answer) = self
            .remote
            .client
            .call("POST", path, Some(&Value::Array(items)))
            .map_err(|e| feral_memory::Error::Import(format!("the running node's API: {e}")))?;
        if status != 200 {
            return Err(Self::error(status, &answer));
        }
        let appended = answer["appended"].as_array().map(Vec::as_slice).unwrap_or_default();
        if appended.len() != drafts.len() {
            return Err(feral_memory::Error::Import(format!(
                "the running node answered {} results for {} rows",
                appended.len(),
                drafts.len()
            )));
        }
        Ok(appended.iter().map(|a| a["duplicate"] == Value::Bool(true)).collect())
    }
}

/// `import --sqlite` through the running node.
pub(crate) fn import(
    remote: &Remote,
    sqlite: &Path,
    meter: &feral_log::meter::Meter,
) -> Result<feral_memory::import::Imported, Failure> {
    Ok(feral_memory::import::import_sqlite(&ApiImport { remote }, sqlite, meter)?)
}

/// Counts the lines it passes on.
struct Lines<W> {
    out: W,
    lines: u64,
}

impl<W: std::io::Write> std::io::Write for Lines<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(bytes)?;
        self.lines += bytes[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// `export --jsonl [--ops]` through the running node: its `GET /v1/export` streamed to stdout.
fn export(remote: &Remote, ops: bool) -> Outcome {
    let path = if ops { "/v1/export?ops=true" } else { "/v1/export" };
    let mut out = Lines { out: std::io::BufWriter::new(crate::out::Stdout), lines: 0 };
    let answer = remote
        .client
        .stream_blocking(feral_memory::client::Call::new("GET", path), &mut out)
        .map_err(|e| fail(1, format!("export through the running node: {e}")))?;
    std::io::Write::flush(&mut out).map_err(|e| fail(1, e.to_string()))?;
    if !(200..300).contains(&answer.status) {
        let value = answer.json();
        let code = value["error"].as_str().unwrap_or("error");
        let message = value["message"].as_str().unwrap_or("");
        return Err(fail(1, format!("{code}: {message} (through the running node's API)")));
    }
    let what = if ops { "ops" } else { "rows" };
    eprintln!("exported {} {what} through the running node", out.lines);
    Ok(0)
}
