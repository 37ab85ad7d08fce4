//! feral-materializer: projects the `episodes` table from the log into redb, exactly once and
//! last-writer-wins, and computes the canonical dump and digest of a store.
#![deny(missing_docs)]

pub mod change;
pub mod digest;
pub mod episode;
pub mod error;
pub mod limits;
pub mod projection;
mod query;
pub mod search;

pub use change::{Change, Effect};
pub use digest::{Digest, data_json, digest, dump};
pub use episode::{Episode, FieldError, TABLE};
pub use error::{Error, Result};
pub use projection::{Materializer, PROJECTION_FILE, ProjectionStats, Row, TableRow};
pub use query::{CheckSnapshot, ListPage, ListPosition, ListQuery, RowsSnapshot};
pub use search::{Hit, SEARCH_DIR, ScoreParts, SearchIndex, SearchPage, SearchQuery};
