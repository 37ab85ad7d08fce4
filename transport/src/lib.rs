//! feral-transport: sync between feral-memory nodes over QUIC (quinn) with mutual TLS
//! (rustls, ring only): certificates (`tls`), the driver that runs a feral-sync session over
//! one bidirectional stream (`driver`), and `sync_with_peer` with retries (`peer`).

pub mod error;
pub mod tls;

pub use error::TransportError;
