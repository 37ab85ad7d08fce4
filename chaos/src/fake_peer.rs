//! A misbehaving sync peer (`feral-chaos __fake-peer`): a real QUIC endpoint with a real
//! certificate from the cluster CA that accepts connections, reads each one's first handshake
//! frame, prints `hello <unix ms the connection arrived> <unix ms its frame was read>` and then,
//! by mode, exits at once (`exit`), waits to be SIGKILLed (`hold`), or keeps the connection open
//! and never answers (`silent`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use feral_sync::message::FrameDecoder;
use feral_transport::driver::server_endpoint;
use feral_transport::tls::{CA_CERT_FILE, Credentials, NODE_CERT_FILE};

use crate::flag;

/// The most the fake peer reads before it has a frame.
const FIRST_FRAME_BYTES_MAX: usize = 1024 * 1024;

/// Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn say(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// `__fake-peer --dir DATA --listen ADDR --mode exit|hold|silent`.
pub fn main(args: &[String]) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake peer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    let dir = PathBuf::from(flag(args, "--dir")?);
    let listen: SocketAddr = flag(args, "--listen")?.parse()?;
    let mode = flag(args, "--mode")?.to_string();
    if !["exit", "hold", "silent"].contains(&mode.as_str()) {
        bail!("--mode must be exit, hold or silent");
    }
    let (key, _) = feral_memory::identity::load_or_create(&dir)?;
    let read = |name: &str| std::fs::read_to_string(dir.join(name));
    let creds = Credentials::from_pem(&read(NODE_CERT_FILE)?, &key, &read(CA_CERT_FILE)?)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let endpoint = server_endpoint(&creds, listen)?;
        say(&format!("ready {}", endpoint.local_addr()?));
        // Each connection on its own task: one that is slow to hand over its first frame never
        // delays when the next attempt is seen.
        while let Some(incoming) = endpoint.accept().await {
            let seen = unix_ms();
            let mode = mode.clone();
            tokio::spawn(async move {
                let Ok(connection) = incoming.await else { return };
                let Ok((send, mut recv)) = connection.accept_bi().await else { return };
                let mut decoder = FrameDecoder::default();
                let mut buf = vec![0u8; 64 * 1024];
                let mut read_total = 0usize;
                let got = loop {
                    match recv.read(&mut buf).await {
                        Ok(Some(n)) => {
                            decoder.push(&buf[..n]);
                            read_total += n;
                            match decoder.next_message() {
                                Ok(Some(_)) => break true,
                                Ok(None) if read_total < FIRST_FRAME_BYTES_MAX => {}
                                _ => break false,
                            }
                        }
                        _ => break false,
                    }
                };
                if !got {
                    return;
                }
                say(&format!("hello {seen} {}", unix_ms()));
                match mode.as_str() {
                    // Dies with the connection open: no close frame, like a crash.
                    "exit" => std::process::exit(0),
                    // Holds the connection, its streams unanswered, until the process ends.
                    _ => {
                        let _held = (connection, send, recv);
                        std::future::pending::<()>().await
                    }
                }
            });
        }
        Ok(())
    })
}
