//! `GET /v1/export[?ops=true]`: what `feral-node export --jsonl [--ops]` writes, from the
//! running node: every live row of every table, or every op of the log, one JSON object per
//! line. Streamed as it is read: the export runs on a blocking thread into a bounded queue
//! of chunks ([`EXPORT_CHUNKS_QUEUED`] × [`EXPORT_CHUNK_BYTES`]), so a slow client slows its
//! export, never the node's memory; a client that goes stops it. A failure part-way ends
//! the body without its last chunk, so a client sees a broken transfer, never a short export
//! that looks whole.

use std::io::Write;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{Api, ApiResult};
use crate::limits::{EXPORT_CHUNK_BYTES, EXPORT_CHUNKS_QUEUED, EXPORTS_MAX};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ExportParams {
    /// Every op of the log in log order instead of the live rows.
    ops: Option<bool>,
}

/// The exports at once.
pub(crate) fn exports() -> std::sync::Arc<tokio::sync::Semaphore> {
    std::sync::Arc::new(tokio::sync::Semaphore::new(EXPORTS_MAX))
}

/// The export's writer: chunks into the queue the response body reads.
struct Chunks {
    queue: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl Chunks {
    fn hand_over(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk =
            Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(EXPORT_CHUNK_BYTES)));
        self.queue.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl Write for Chunks {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= EXPORT_CHUNK_BYTES {
            self.hand_over()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.hand_over()
    }
}

/// Every live row of every table (`{"table","row_id","hlc","op_id","data"}` per line), or with
/// `ops=true` every op of the log in log order, as newline-delimited JSON streamed as it is
/// read (the same lines as `feral-node export --jsonl [--ops]`).
#[utoipa::path(get, path = "/v1/export", tag = "tables", params(ExportParams),
    responses((status = 200, description = "One JSON object per line, to the end of the store",
        body = super::schema::ExportLine, content_type = "application/x-ndjson")))]
pub(crate) async fn export(
    State(api): State<Api>,
    Query(p): Query<ExportParams>,
) -> ApiResult<Response> {
    let permit = super::read::place(&api.exports, || {
        format!("{EXPORTS_MAX} exports already running; retry when one ends")
    })?;
    let (queue, mut chunks) = mpsc::channel(EXPORT_CHUNKS_QUEUED);
    let node = api.service.node.clone();
    let ops = p.ops.unwrap_or(false);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut out = Chunks { queue: queue.clone(), buf: Vec::with_capacity(EXPORT_CHUNK_BYTES) };
        let done = if ops {
            crate::export::export_ops(&node, &mut out)
        } else {
            crate::export::export_rows(&node, &mut out)
        };
        let failed = match done {
            Ok(_) => out.flush().err().map(|e| e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(reason) = failed {
            tracing::warn!(%reason, "an export through the API stopped");
            let _ = queue.blocking_send(Err(std::io::Error::other(reason)));
        }
    });
    let body = futures_util::stream::poll_fn(move |cx| chunks.poll_recv(cx));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(body)).into_response())
}
