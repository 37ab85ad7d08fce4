//! feral-memory: an event-sourced, replicated long-term memory store. The `Node` facade owns
//! one data directory's log, index and episodes projection; `feral-node` is its command line.
#![deny(missing_docs)]

#[cfg(feature = "server")]
pub mod api;
mod applier;
pub mod backup;
pub mod changes;
#[cfg(feature = "server")]
pub mod client;
pub mod error;
pub mod export;
pub mod identity;
#[cfg(feature = "server")]
pub mod import;
pub mod limits;
mod list_file;
pub mod node;
pub mod quarantine;
pub mod report;
pub mod revocation;
pub mod rows;
pub mod salvage;
pub mod service;
pub mod sync_store;
pub mod verify;

pub use error::{Error, Result};
pub use feral_log as log;
pub use feral_materializer as materializer;
pub use identity::NodeId;
pub use node::{EpisodeView, Node};
pub use report::{CheckReport, NodeStatus, Repair};
