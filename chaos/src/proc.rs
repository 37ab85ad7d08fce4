//! A child process whose stdout and stderr lines arrive on a channel, so the suite waits on
//! what a process says (with deadlines) instead of sleeping, and never lets a pipe fill.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Out,
    /// Standard error.
    Err,
}

/// Lines kept for the diagnosis of a failure.
const TAIL_LINES: usize = 40;

/// A running child with its output on a channel.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    lines: Receiver<(Stream, String)>,
    tail: VecDeque<String>,
    /// Every stdout line seen so far.
    pub stdout: Vec<String>,
    /// What the child is, for messages.
    pub label: String,
    exited: Option<ExitStatus>,
}

fn pump(stream: impl Read + Send + 'static, tag: Stream, tx: mpsc::Sender<(Stream, String)>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                // Nobody listening any more: keep draining so the child never blocks.
                Ok(_) => drop(tx.send((tag, line.trim_end().to_string()))),
            }
        }
    });
}

impl Proc {
    /// Starts `cmd` with piped stdout and stderr (stdin closed).
    pub fn spawn(mut cmd: Command, label: impl Into<String>) -> Result<Proc> {
        let label = label.into();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {label}"))?;
        let (tx, lines) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            pump(out, Stream::Out, tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            pump(err, Stream::Err, tx);
        }
        Ok(Proc { child, lines, tail: VecDeque::new(), stdout: Vec::new(), label, exited: None })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn keep(&mut self, tag: Stream, line: &str) {
        if tag == Stream::Out {
            self.stdout.push(line.to_string());
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());
    }

    /// The last lines the child printed.
    pub fn tail(&self) -> String {
        self.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Waits until a line satisfies `want`; fails when the child's output ends first or the
    /// deadline passes.
    pub fn wait_line(
        &mut self,
        deadline: Instant,
        mut want: impl FnMut(Stream, &str) -> bool,
    ) -> Result<String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((tag, line)) => {
                    self.keep(tag, &line);
                    if want(tag, &line) {
                        return Ok(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    bail!(
                        "{}: timed out waiting for a line; last output:\n{}",
                        self.label,
                        self.tail()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    bail!("{}: output ended; last output:\n{}", self.label, self.tail())
                }
            }
        }
    }

    /// Sends a signal.
    pub fn signal(&self, signal: i32) {
        if self.exited.is_none() {
            // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, signal);
            }
        }
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        if self.exited.is_none() {
            self.exited = self.child.wait().ok();
        }
    }

    /// True while the child has not exited.
    pub fn running(&mut self) -> bool {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited.is_none()
    }

    /// Waits for the child to exit and its output to end (SIGKILL at the deadline, then an
    /// error). Returns its exit status.
    pub fn wait(&mut self, deadline: Instant) -> Result<ExitStatus> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.min(Duration::from_millis(50))) {
                Ok((tag, line)) => self.keep(tag, &line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    if Instant::now() >= deadline {
                        self.kill();
                        bail!(
                            "{}: still running at the deadline; last output:\n{}",
                            self.label,
                            self.tail()
                        );
                    }
                }
            }
        }
        match self.exited {
            Some(status) => Ok(status),
            None => {
                let status =
                    self.child.wait().with_context(|| format!("reaping {}", self.label))?;
                self.exited = Some(status);
                Ok(status)
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
