//! What one logged op does to the projection, decided once: the materializer applies
//! `Change`s, so an episode the node has just validated is not parsed again.

use std::borrow::Cow;

use feral_log::{Hlc, Lsn, Op, OpId, OpKind};

use crate::episode::{Episode, TABLE};

/// The effect of an op on the projection's rows.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect<'a> {
    /// A row of another table: its data (none for a delete), kept last-writer-wins.
    Other(Option<Cow<'a, [u8]>>),
    /// Insert or replace the row with this episode (last writer wins).
    Put(Cow<'a, Episode>),
    /// Delete the row, leaving a tombstone.
    Delete,
    /// An `episodes` insert whose data is not a valid episode: skipped the same way on every
    /// node, and counted.
    Skip(String),
}

/// One logged op, as the projection sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change<'a> {
    /// Its local position.
    pub lsn: Lsn,
    /// Its id (breaks HLC ties).
    pub op_id: OpId,
    /// Its HLC (last writer wins).
    pub hlc: Hlc,
    /// The table it writes.
    pub table: Cow<'a, str>,
    /// The row it writes.
    pub row_id: Cow<'a, str>,
    /// What it does.
    pub effect: Effect<'a>,
}

impl<'a> Change<'a> {
    /// Decides the effect of a logged op (parsing and validating an episode insert).
    pub fn of(lsn: Lsn, op: &'a Op) -> Change<'a> {
        let effect = if op.table != TABLE {
            match op.kind {
                OpKind::Delete => Effect::Other(None),
                OpKind::Insert => Effect::Other(Some(Cow::Borrowed(op.data.as_slice()))),
            }
        } else {
            match op.kind {
                OpKind::Delete => Effect::Delete,
                OpKind::Insert => match Episode::from_data(&op.data) {
                    Ok(e) if e.id == op.row_id => Effect::Put(Cow::Owned(e)),
                    Ok(_) => Effect::Skip("row_id differs from the episode id".into()),
                    Err(e) => Effect::Skip(e.to_string()),
                },
            }
        };
        Change {
            lsn,
            op_id: op.op_id,
            hlc: op.hlc,
            table: Cow::Borrowed(&op.table),
            row_id: Cow::Borrowed(&op.row_id),
            effect,
        }
    }

    /// The change of an op the caller built from this validated episode (its data is
    /// `episode.to_data()`, so parsing it again would give the same episode).
    pub fn put(lsn: Lsn, op_id: OpId, hlc: Hlc, episode: &'a Episode) -> Change<'a> {
        Change {
            lsn,
            op_id,
            hlc,
            table: Cow::Borrowed(TABLE),
            row_id: Cow::Borrowed(&episode.id),
            effect: Effect::Put(Cow::Borrowed(episode)),
        }
    }

    /// [`Change::put`] owning its episode (to hand to another thread).
    pub fn put_owned(lsn: Lsn, op_id: OpId, hlc: Hlc, episode: Episode) -> Change<'static> {
        Change {
            lsn,
            op_id,
            hlc,
            table: Cow::Borrowed(TABLE),
            row_id: Cow::Owned(episode.id.clone()),
            effect: Effect::Put(Cow::Owned(episode)),
        }
    }

    /// The same change, owning everything it borrowed.
    pub fn into_owned(self) -> Change<'static> {
        let effect = match self.effect {
            Effect::Other(data) => Effect::Other(data.map(|d| Cow::Owned(d.into_owned()))),
            Effect::Put(e) => Effect::Put(Cow::Owned(e.into_owned())),
            Effect::Delete => Effect::Delete,
            Effect::Skip(reason) => Effect::Skip(reason),
        };
        Change {
            lsn: self.lsn,
            op_id: self.op_id,
            hlc: self.hlc,
            table: Cow::Owned(self.table.into_owned()),
            row_id: Cow::Owned(self.row_id.into_owned()),
            effect,
        }
    }
}
