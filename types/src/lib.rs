//! feral-types: what the log and the sync protocol share, and nothing else: the op and its
//! identifiers (`Op`, `OpId`, `Origin`, `OpKind`, `OpDraft`), the hybrid logical clock, the
//! one codec that turns an op into bytes (and an op kept as its bytes), and their limits. No storage, no network, no CLI:
//! a crate that depends on it (feral-sync) links none of redb, quinn or clap.
#![deny(missing_docs)]

pub mod codec;
pub mod encoded;
pub mod error;
pub mod hlc;
pub mod limits;
pub mod op;
pub mod proof;

pub use encoded::{EncodedOp, OpBytes, OpHead};
pub use error::{Error, Result};
pub use hlc::{Clock, Hlc, SystemTime, TimeSource};
pub use op::{Op, OpDraft, OpId, OpKind, Origin};
pub use proof::{Genesis, Seal, Signer, Trailer, VerifyingKey};
