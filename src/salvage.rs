//! `feral-node salvage`: every intact record of a damaged data directory imported into a
//! fresh store, the last resort when no backup and no peer holds what it held.
//!
//! The records are read with the log's salvage (`feral_log::salvage`: it resynchronises on the
//! next valid frame past a bad one) and appended to the new store's log as they were stored
//! (origin, seq, HLC and proof unchanged), as a restore takes a backup's segments: the
//! directory is the operator's own, so its ops are not re-verified here (peers verify them as
//! always when they receive them). The node key and certificates are copied, and the new
//! store has a new origin (as after a restore). The projection is rebuilt from the new log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use feral_log::salvage::SalvageReport;
use feral_log::{EncodedOp, FsStorage, Storage};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::node::Node;

/// Records appended per batch.
const SALVAGE_BATCH_OPS: usize = 4096;
/// Refusal reasons a salvage report lists (the rest are counted).
const SALVAGE_REFUSALS_LISTED: usize = 100;

/// What a salvage import did.
#[derive(Debug, Clone, Serialize)]
pub struct Salvaged {
    /// The store read.
    pub from: PathBuf,
    /// The store written.
    pub into: PathBuf,
    /// Records appended to the new store.
    pub imported: u64,
    /// Intact records that were already there (the same op twice in the damaged directory).
    pub duplicates: u64,
    /// Records that could not be appended (`refusals` lists why, for the first 100).
    pub refused: u64,
    /// Why, for the first refusals.
    pub refusals: Vec<String>,
    /// The new store's origin.
    pub origin: String,
    /// What the log's salvage found: damaged stretches, missing LSNs, unreadable segments.
    pub salvage: SalvageReport,
}

/// Imports every intact record of the data directory `from` into the fresh store `into`
/// (absent or empty).
pub fn salvage_into(from: &Path, into: &Path, config: feral_log::Config) -> Result<Salvaged> {
    let wal_from = from.join(feral_log::wal::WAL_DIR);
    if !wal_from.is_dir() {
        return Err(Error::Salvage(format!("{} holds no wal/ directory", from.display())));
    }
    if into.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        return Err(Error::Salvage(format!("{} exists and is not empty", into.display())));
    }
    feral_log::private::create_dir_all(into).map_err(|e| Error::io(into, e))?;
    // The node's identity comes along (its origin does not: a new one is made).
    for name in [
        crate::identity::NODE_KEY_FILE,
        feral_transport::tls::NODE_CERT_FILE,
        feral_transport::tls::CA_CERT_FILE,
    ] {
        let (src, dst) = (from.join(name), into.join(name));
        if let Ok(bytes) = std::fs::read(&src) {
            feral_log::private::write_atomic(&dst, &bytes).map_err(|e| Error::io(&dst, e))?;
        }
    }
    let node = Node::open(into, config.clone())?;
    let origin = node.wal().origin().to_string();
    let storage: Arc<dyn Storage> = Arc::new(FsStorage);
    let mut out = Salvaged {
        from: from.to_path_buf(),
        into: into.to_path_buf(),
        imported: 0,
        duplicates: 0,
        refused: 0,
        refusals: Vec::new(),
        origin,
        salvage: SalvageReport::default(),
    };
    let mut batch: Vec<EncodedOp> = Vec::with_capacity(SALVAGE_BATCH_OPS);
    // A batch refused whole (one op of it conflicts with one taken before) is taken op by
    // op, so one bad record costs only itself.
    let take = |ops: Vec<EncodedOp>, out: &mut Salvaged| -> Result<()> {
        match node.wal().ingest_encoded(ops.clone()) {
            Ok((appended, _)) => {
                for a in appended {
                    if a.duplicate {
                        out.duplicates += 1;
                    } else {
                        out.imported += 1;
                    }
                }
                Ok(())
            }
            Err(e) if e.code() == feral_log::Code::DiskFull => Err(e.into()),
            Err(_) if ops.len() > 1 => {
                for op in ops {
                    match node.wal().ingest_encoded(vec![op]) {
                        Ok((a, _)) if a.iter().all(|a| a.duplicate) => out.duplicates += 1,
                        Ok(_) => out.imported += 1,
                        Err(e) if e.code() == feral_log::Code::DiskFull => return Err(e.into()),
                        Err(e) => {
                            out.refused += 1;
                            if out.refusals.len() < SALVAGE_REFUSALS_LISTED {
                                out.refusals.push(e.to_string());
                            }
                        }
                    }
                }
                Ok(())
            }
            Err(e) => {
                out.refused += 1;
                if out.refusals.len() < SALVAGE_REFUSALS_LISTED {
                    out.refusals.push(e.to_string());
                }
                Ok(())
            }
        }
    };
    let flush = |batch: &mut Vec<EncodedOp>, out: &mut Salvaged| -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        take(std::mem::take(batch), out)
    };
    let meter = config.meter.clone();
    meter.stage("salvaging intact records", feral_log::meter::Unit::Records, 0);
    let report = feral_log::salvage::salvage(&storage, &wal_from, &mut |found| {
        meter.add(1);
        if let Ok(op) = found.bytes.decode() {
            batch.push(op);
        }
        if batch.len() >= SALVAGE_BATCH_OPS {
            flush(&mut batch, &mut out).map_err(|e| feral_log::Error::Index(e.to_string()))?;
        }
        Ok(())
    })?;
    flush(&mut batch, &mut out)?;
    out.salvage = report;
    node.close()?;
    // Reopened: the projection (and the search index) catch up from the new log.
    let node = Node::open(into, config)?;
    node.settle();
    node.close()?;
    Ok(out)
}
