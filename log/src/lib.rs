//! feral-log: the durable, segmented, append-only op log of feral-memory, with its redb op_id
//! index, hybrid logical clock, recovery and integrity check. See docs/format.md.
#![deny(missing_docs)]

/// An op or clock reading refused before anything is stored (converts into [`Error`]).
pub use feral_types::Error as OpError;
pub use feral_types::{EncodedOp, OpBytes, OpHead};
pub use feral_types::{codec, hlc, op};

mod admit;
pub mod background;
pub mod check;
pub mod code;
mod commit;
pub mod damage;
pub mod error;
pub mod failpoint;
pub mod fault;
pub mod heal;
pub mod index;
mod indexer;
mod inflight;
mod le;
pub mod limits;
pub mod lock;
mod maintenance;
pub mod meter;
pub mod private;
pub mod read;
pub mod record;
pub mod recovery;
pub mod reserve;
pub mod salvage;
pub mod segment;
pub mod snapshot;
pub mod storage;
pub mod wal;
mod zeroer;

pub use check::{IntegrityReport, PartStatus};
pub use code::Code;
pub use error::{Error, Location, Result};
pub use hlc::{Clock, Hlc, SystemTime, TimeSource};
pub use op::{Op, OpDraft, OpId, OpKind, Origin};
pub use read::{Record, ScanPosition};
pub use snapshot::{Snapshot, SnapshotFile};
pub use storage::{FsStorage, Storage, StorageFile};
pub use wal::{Appended, Config, Lsn, Pause, PauseKind, Status, Wal};
