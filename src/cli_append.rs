//! `feral-node append`: one episode per input line, validated line by line, appended in
//! group commits; a refused line names its line number and field and does not stop the others
//! (unless `--strict`, which appends nothing when any line is refused).

use crate::out::out;
use std::io::BufRead;
use std::path::Path;

use feral_log::{Appended, Code, OpId};
use feral_materializer::Episode;
use feral_memory::{Error, Node};
use serde::Serialize;
use serde_json::Value;

use crate::{Failure, fail, print_json};

/// Valid lines appended per group commit.
const APPEND_BATCH_LINES: usize = 1000;
/// Longest input line accepted.
const LINE_BYTES_MAX: usize = 2 * 1024 * 1024;

/// One appended op, as printed.
#[derive(Debug, Serialize)]
pub(crate) struct AppendedLine {
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    op_id: String,
    hlc: String,
    duplicate: bool,
}

impl AppendedLine {
    pub(crate) fn new(line: Option<usize>, a: &Appended) -> AppendedLine {
        AppendedLine {
            line,
            op_id: a.op_id.to_string(),
            hlc: a.hlc.to_string(),
            duplicate: a.duplicate,
        }
    }

    pub(crate) fn text(&self) -> String {
        let dup = if self.duplicate { " duplicate" } else { "" };
        format!("{} {}{dup}", self.op_id, self.hlc)
    }
}

/// Parses one input line into an episode and its optional op_id.
fn parse_line(node: &Node, text: &str) -> Result<(Episode, Option<OpId>), String> {
    let mut value: Value =
        serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
    let op_id = match value.as_object_mut().and_then(|m| m.remove("op_id")) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            OpId::parse(&s).map_err(|_| "field `op_id`: must be 32 hex characters".to_string())?,
        ),
        Some(_) => return Err("field `op_id`: must be a string of 32 hex characters".into()),
    };
    let episode = node.prepare_episode(&value, op_id).map_err(|e| match e {
        Error::Invalid(field) => field.to_string(),
        other => other.to_string(),
    })?;
    Ok((episode, op_id))
}

struct Run<'a> {
    node: &'a Node,
    json: bool,
    refused: usize,
}

impl Run<'_> {
    fn refuse(&mut self, line: usize, why: &str) {
        self.refused += 1;
        eprintln!("feral-node: line {line}: {why}");
    }

    fn print(&self, line: usize, a: &Appended) -> Result<(), Failure> {
        let out = AppendedLine::new(Some(line), a);
        if self.json {
            print_json(&out, false)?;
        } else {
            out!("{}", out.text());
        }
        Ok(())
    }

    /// Appends a batch; when the batch is refused for one op's sake (an op_id reused with other
    /// content), appends its lines one by one so only that line is refused. A full disk or a
    /// pause stops the run.
    fn flush(&mut self, batch: &mut Vec<(usize, Episode, Option<OpId>)>) -> Result<(), Failure> {
        if batch.is_empty() {
            return Ok(());
        }
        let items: Vec<_> = batch.iter().map(|(_, e, id)| (e.clone(), *id)).collect();
        match self.node.append_episodes(items) {
            Ok(done) => {
                for ((line, _, _), a) in batch.iter().zip(&done) {
                    self.print(*line, a)?;
                }
            }
            Err(e) if per_op(&e) => {
                for (line, episode, op_id) in batch.iter() {
                    match self.node.append_episodes(vec![(episode.clone(), *op_id)]) {
                        Ok(done) => self.print(*line, &done[0])?,
                        Err(e) if per_op(&e) => self.refuse(*line, &e.to_string()),
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
        batch.clear();
        Ok(())
    }
}

/// Errors that belong to one op rather than to the store.
fn per_op(e: &Error) -> bool {
    matches!(e.code(), Code::OpIdConflict | Code::InvalidOp | Code::InvalidEpisode)
}

/// One input line, or the fact that it was too long (its bytes are skipped, never held).
enum Line {
    Text(String),
    TooLong,
}

/// Reads one line of at most `LINE_BYTES_MAX` bytes; `None` at the end of input.
fn read_line(reader: &mut dyn BufRead) -> std::io::Result<Option<Line>> {
    let mut buf = Vec::new();
    let n =
        std::io::Read::take(&mut *reader, LINE_BYTES_MAX as u64 + 1).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') && buf.len() > LINE_BYTES_MAX {
        // Skip the rest of the long line without keeping it.
        loop {
            let chunk = reader.fill_buf()?;
            if chunk.is_empty() {
                break;
            }
            match chunk.iter().position(|b| *b == b'\n') {
                Some(at) => {
                    reader.consume(at + 1);
                    break;
                }
                None => {
                    let len = chunk.len();
                    reader.consume(len);
                }
            }
        }
        return Ok(Some(Line::TooLong));
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(|text| Some(Line::Text(text)))
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))
}

/// Reads lines on a thread so the appender can take whatever is ready: a fast producer gets
/// large group commits, a slow one gets each line acknowledged as soon as it arrives.
fn spawn_reader(
    mut reader: Box<dyn BufRead + Send>,
) -> std::sync::mpsc::Receiver<std::io::Result<Line>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(APPEND_BATCH_LINES * 2);
    std::thread::spawn(move || {
        loop {
            let line = match read_line(&mut reader) {
                Ok(None) => break,
                Ok(Some(line)) => Ok(line),
                Err(e) => Err(e),
            };
            let stop = line.is_err();
            if tx.send(line).is_err() || stop {
                break;
            }
        }
    });
    rx
}

pub(crate) fn run(
    node: &Node,
    file: Option<&Path>,
    strict: bool,
    json: bool,
) -> Result<u8, Failure> {
    let reader: Box<dyn BufRead + Send> = match file {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).map_err(|e| fail(1, format!("{}: {e}", path.display())))?,
        )),
        None => Box::new(std::io::BufReader::new(std::io::stdin())),
    };
    let lines = spawn_reader(reader);
    let mut run = Run { node, json, refused: 0 };
    let mut batch = Vec::new();
    let mut held = Vec::new(); // --strict: every valid line, appended only if none is refused
    let mut number = 0;
    while let Ok(first) = lines.recv() {
        let mut next = Some(first);
        while let Some(line) = next.take() {
            number += 1;
            match line.map_err(|e| fail(1, format!("reading line {number}: {e}")))? {
                Line::TooLong => run.refuse(number, &format!("longer than {LINE_BYTES_MAX} bytes")),
                Line::Text(text) if text.trim().is_empty() => {}
                Line::Text(text) => match parse_line(node, &text) {
                    Ok((episode, op_id)) if strict => held.push((number, episode, op_id)),
                    Ok((episode, op_id)) => batch.push((number, episode, op_id)),
                    Err(why) => run.refuse(number, &why),
                },
            }
            if batch.len() < APPEND_BATCH_LINES {
                next = lines.try_recv().ok();
            }
        }
        run.flush(&mut batch)?;
    }
    if strict && run.refused > 0 {
        return Err(fail(1, format!("{} lines refused; nothing appended (--strict)", run.refused)));
    }
    for chunk in held.chunks(APPEND_BATCH_LINES) {
        run.flush(&mut chunk.to_vec())?;
    }
    if run.refused > 0 {
        return Err(fail(1, format!("{} lines refused", run.refused)));
    }
    Ok(0)
}
