//! The node's small JSON list files (`conflicts.json`, `revoked.json`): read whole under a size
//! cap (absent is empty), written whole and atomically (0600).

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// The list in `path` (empty when the file is absent). A file past `bytes_max`, or one that
/// is not a JSON list of `T`, is refused with `error(reason)`, the path in front.
pub(crate) fn load<T: DeserializeOwned>(
    path: &Path,
    bytes_max: u64,
    error: fn(String) -> Error,
) -> Result<Vec<T>> {
    let bad = |what: String| error(format!("{}: {what}", path.display()));
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() > bytes_max => {
            Err(bad(format!("{} bytes, more than this file may hold ({bytes_max})", meta.len())))
        }
        Ok(_) => {
            let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            serde_json::from_slice(&text)
                .map_err(|e| bad(format!("not the list it should be: {e}")))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Writes `list` to `path` atomically (0600).
pub(crate) fn save<T: Serialize>(path: &Path, list: &[&T]) -> Result<()> {
    let text = serde_json::to_vec_pretty(list)
        .map_err(|_| Error::Internal("a list serialises as JSON"))?;
    feral_log::private::write_atomic(path, &text).map_err(|e| Error::io(path, e))
}
