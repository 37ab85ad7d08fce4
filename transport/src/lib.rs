//! feral-transport: sync between feral-memory nodes over QUIC (quinn) with mutual TLS
//! (rustls, ring only): certificates (`tls`), the driver that runs a feral-sync session over
//! one bidirectional stream (`driver`), and `sync_with_peer` with retries (`peer`).
#![deny(missing_docs)]

pub mod discovery;
pub mod driver;
pub mod error;
pub mod limits;
pub mod peer;
pub mod scheduler;
pub mod tls;

pub use driver::{SyncHost, Timeouts};
pub use error::TransportError;
pub use peer::{
    OriginApart, PeerLocks, Sleeper, SyncOptions, SyncResult, Syncer, TokioSleeper, serve,
};
/// The QUIC endpoint type the drivers serve and connect with.
pub use quinn::Endpoint;
