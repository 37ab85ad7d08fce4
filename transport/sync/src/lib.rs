//! feral-sync: the sync protocol of feral-memory as a sans-IO state machine over feral-log types:
//! messages and their framing, and one session's logic. The QUIC driver lives in
//! feral-transport; see docs/sync.md.
#![deny(missing_docs)]

pub mod error;
pub mod limits;
pub mod message;
pub mod session;

pub use error::{Stage, SyncError};
pub use message::{FrameDecoder, Head, Hello, SyncMessage, Want, encode_frame};
pub use session::{
    Identity, Request, Response, SessionStart, SyncSession, SyncStats, SyncStore, Timeouts,
    execute, local_heads,
};
