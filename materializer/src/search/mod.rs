//! Full-text search over episodes: a tantivy index in `<data>/search/`, derived like the
//! episodes projection and kept equal to its live rows. Summary and detail are analyzed text
//! (BM25); session, event type and participants are exact terms; created_at and importance
//! are fast fields for ranges and boosts. The index stores nothing but the episode id: hits
//! are read back from the projection.
//!
//! Exactly once, by idempotence: the projection decides each row (last writer wins) and the
//! search index mirrors the row it ends with (delete the id's document, add the live row).
//! Its commit payload holds the LSN up to which every episode op is mirrored; on open, the
//! ops logged after it name the rows to mirror again from the projection, so a crash between
//! the two commits only repeats work. Commits happen on a cadence and whenever a reader needs
//! what was applied (read-your-writes), never per op.

mod directory;
pub mod tokenizer;

use std::collections::BTreeSet;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::time::Instant;

use feral_log::{Lsn, Wal};
use serde::{Deserialize, Serialize};
use tantivy::collector::TopDocs;
use tantivy::indexer::UserOperation;
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{
    FAST, Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
    Value as _,
};
use tantivy::{
    DocId, Index, IndexReader, IndexWriter, ReloadPolicy, Score, SegmentReader, TantivyDocument,
    TantivyError, Term,
};

use crate::episode::{Episode, TABLE};
use crate::error::{Error, Result};
use crate::limits::{
    CATCH_UP_BATCH_OPS, SEARCH_COMMIT_EVERY_OPS, SEARCH_COMMIT_INTERVAL, SEARCH_LIMIT_MAX,
    SEARCH_OFFSET_MAX, SEARCH_QUERY_TERMS_MAX, SEARCH_WRITER_BYTES,
};
use crate::projection::Materializer;

/// The search index's directory inside a data directory.
pub const SEARCH_DIR: &str = "search";
/// The layout of the index (schema and payload); another one is rebuilt, never read.
const FORMAT: u32 = 4;

#[derive(Debug, Clone, Copy)]
struct Fields {
    id: Field,
    /// Summary and detail, as two values of one field: one set of postings per document.
    text: Field,
    session: Field,
    event_type: Field,
    participants: Field,
    created_at: Field,
    importance: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(tokenizer::ANALYZER)
            // Term frequencies for BM25; no positions: a query is a set of words, never a
            // phrase, and positions cost the indexing thread a third more work.
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let fields = Fields {
        id: b.add_text_field("id", STRING | STORED),
        text: b.add_text_field("text", text),
        session: b.add_text_field("session", STRING),
        event_type: b.add_text_field("event_type", STRING),
        participants: b.add_text_field("participants", STRING),
        // Fast fields only: ranges and boosts read the column; indexing each (nearly unique)
        // value as a term would cost the indexing thread a term per document and field.
        created_at: b.add_f64_field("created_at", FAST),
        importance: b.add_f64_field("importance", FAST),
    };
    (b.build(), fields)
}

/// What a commit records beside the documents.
#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    format: u32,
    applied_lsn: Lsn,
}

/// One search: free text (every word counts, no operators), exact filters, and boosts.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    /// The words to look for in summary and detail.
    pub text: String,
    /// Only this session.
    pub session: Option<String>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// Only episodes with this participant.
    pub participant: Option<String>,
    /// created_at at or after (unix seconds).
    pub since: Option<f64>,
    /// created_at before (unix seconds).
    pub until: Option<f64>,
    /// importance at least.
    pub min_importance: Option<f64>,
    /// Weight of importance: the score is multiplied by `1 + w × importance` (0: off).
    pub boost_importance: f64,
    /// Weight of recency: the score is multiplied by `1 + w × 0.5^(age / half life)` (0: off).
    pub boost_recency: f64,
    /// Half life of the recency boost, in days.
    pub half_life_days: f64,
    /// Now, for the recency boost (unix seconds).
    pub now_s: f64,
    /// Hits per page.
    pub limit: usize,
    /// Hits to skip (the page's start).
    pub offset: usize,
}

/// How a hit's score is made: `total = bm25 × importance × recency`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScoreParts {
    /// The final score hits are ranked by.
    pub total: f64,
    /// BM25 of the words over summary and detail.
    pub bm25: f64,
    /// The importance factor (1 without the boost).
    pub importance: f64,
    /// The recency factor (1 without the boost).
    pub recency: f64,
}

/// One hit: the episode id and its score.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The episode id (read it back from the projection).
    pub id: String,
    /// The score and its parts.
    pub score: ScoreParts,
}

/// One page of hits, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage {
    /// The hits.
    pub hits: Vec<Hit>,
    /// True when another page follows.
    pub more: bool,
}

impl SearchQuery {
    fn factors(&self, importance: f64, created_at: f64) -> (f64, f64) {
        let age_days = ((self.now_s - created_at) / 86_400.0).max(0.0);
        let recency = 0.5f64.powf(age_days / self.half_life_days.max(f64::MIN_POSITIVE));
        (1.0 + self.boost_importance * importance, 1.0 + self.boost_recency * recency)
    }

    fn validate(&self) -> Result<Vec<String>> {
        let bad = |m: String| Err(Error::InvalidQuery(m));
        if self.limit == 0 || self.limit > SEARCH_LIMIT_MAX {
            return bad(format!("limit {} is not within 1..={SEARCH_LIMIT_MAX}", self.limit));
        }
        if self.offset > SEARCH_OFFSET_MAX {
            return bad(format!(
                "the cursor is {} hits deep; search pages reach {SEARCH_OFFSET_MAX} hits at most (narrow the query or its filters)",
                self.offset
            ));
        }
        for (name, w) in
            [("boost_importance", self.boost_importance), ("boost_recency", self.boost_recency)]
        {
            if !(w.is_finite() && w >= 0.0) {
                return bad(format!("{name} must be a number at least 0, got {w}"));
            }
        }
        if !(self.half_life_days.is_finite() && self.half_life_days > 0.0) {
            return bad(format!("half_life_days must be above 0, got {}", self.half_life_days));
        }
        let mut words = tokenizer::terms(&self.text);
        if words.is_empty() {
            return bad("q has no words to search for".into());
        }
        words.sort();
        words.dedup();
        if words.len() > SEARCH_QUERY_TERMS_MAX {
            return bad(format!(
                "q has {} distinct words; at most {SEARCH_QUERY_TERMS_MAX} are searched",
                words.len()
            ));
        }
        Ok(words)
    }
}

/// The search index of one data directory, and its writer.
pub struct SearchIndex {
    index: Index,
    /// None only while dropping: the drop waits for the writer's merge threads.
    writer: Option<IndexWriter<TantivyDocument>>,
    reader: IndexReader,
    fields: Fields,
    dir: PathBuf,
    /// The LSN in the last commit's payload.
    committed_lsn: Lsn,
    /// Every episode op up to here is in the writer (committed or not).
    indexed_lsn: Lsn,
    /// Document changes since the last commit.
    uncommitted: u64,
    /// Changes not yet handed to the writer: they go over in one batch per applied job
    /// ([`SearchIndex::advance`]), so the indexing thread takes one message per job.
    pending: Vec<UserOperation<TantivyDocument>>,
    last_commit: Instant,
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex")
            .field("dir", &self.dir)
            .field("committed_lsn", &self.committed_lsn)
            .field("indexed_lsn", &self.indexed_lsn)
            .finish_non_exhaustive()
    }
}

/// Dropping the index waits until its writer's threads are done, merges included: a merge
/// still writing into the directory would race a `recreate` that empties it (and fail it with
/// "Directory not empty"), or leave files in the new index.
impl Drop for SearchIndex {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take()
            && let Err(e) = writer.wait_merging_threads()
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "search index writer stopped with an error");
        }
    }
}

fn closed() -> Error {
    Error::Search("the search index writer is closed".into())
}

impl SearchIndex {
    /// Opens (creating if needed) the index in `dir`. An index of another format, or one
    /// whose commit cannot be read, is [`Error::SearchCorruption`]: the caller recreates it.
    pub fn open(dir: &Path) -> Result<SearchIndex> {
        let err = |e| search_error(dir, e);
        let directory = directory::PrivateDirectory::open(dir).map_err(|e| io_error(dir, e))?;
        let (schema, fields) = schema();
        let index = Index::open_or_create(directory, schema).map_err(err)?;
        index.tokenizers().register(tokenizer::ANALYZER, tokenizer::analyzer());
        let committed_lsn = match index.load_metas().map_err(err)?.payload {
            None => 0,
            Some(text) => match serde_json::from_str::<Payload>(&text) {
                Ok(p) if p.format == FORMAT => p.applied_lsn,
                Ok(p) => {
                    return Err(Error::SearchCorruption(format!(
                        "{}: format {} (this build reads {FORMAT})",
                        dir.display(),
                        p.format
                    )));
                }
                Err(e) => {
                    return Err(Error::SearchCorruption(format!(
                        "{}: unreadable commit payload: {e}",
                        dir.display()
                    )));
                }
            },
        };
        let writer = index.writer_with_num_threads(1, SEARCH_WRITER_BYTES).map_err(err)?;
        let reader =
            index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(err)?;
        Ok(SearchIndex {
            index,
            writer: Some(writer),
            reader,
            fields,
            dir: dir.to_path_buf(),
            committed_lsn,
            indexed_lsn: committed_lsn,
            uncommitted: 0,
            pending: Vec::new(),
            last_commit: Instant::now(),
        })
    }

    /// Deletes the index and opens an empty one; [`SearchIndex::catch_up`] then fills it.
    pub fn recreate(dir: &Path) -> Result<SearchIndex> {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(dir, e)),
            _ => SearchIndex::open(dir),
        }
    }

    /// The index's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every episode op up to this LSN is mirrored (in the writer; see `committed_lsn`).
    pub fn indexed_lsn(&self) -> Lsn {
        self.indexed_lsn
    }

    /// The LSN the last commit recorded (what survives a crash).
    pub fn committed_lsn(&self) -> Lsn {
        self.committed_lsn
    }

    /// Mirrors the row an episode op left: the live episode, or none (a tombstone).
    /// `replaces` says the index may hold a document for the id already (a delete costs
    /// every segment a term lookup at commit, so a new row skips it).
    pub fn mirror(&mut self, id: &str, episode: Option<&Episode>, replaces: bool) -> Result<()> {
        if replaces {
            self.pending.push(UserOperation::Delete(Term::from_field_text(self.fields.id, id)));
        }
        if let Some(e) = episode {
            let f = &self.fields;
            let strings = e.id.len()
                + e.summary.len()
                + e.detail.len()
                + e.session_id.len()
                + e.event_type.len()
                + e.participants.iter().map(String::len).sum::<usize>();
            // Room for the strings and each value's header, so the document grows once.
            let mut doc = TantivyDocument::with_capacity(strings + 16 * (8 + e.participants.len()));
            doc.add_text(f.id, &e.id);
            doc.add_text(f.text, &e.summary);
            doc.add_text(f.text, &e.detail);
            doc.add_text(f.session, &e.session_id);
            doc.add_text(f.event_type, &e.event_type);
            for p in &e.participants {
                doc.add_text(f.participants, p);
            }
            doc.add_f64(f.created_at, e.created_at);
            doc.add_f64(f.importance, e.importance);
            self.pending.push(UserOperation::Add(doc));
        }
        self.uncommitted += 1;
        if self.pending.len() >= CATCH_UP_BATCH_OPS {
            self.hand_over()?;
        }
        Ok(())
    }

    /// Hands the pending changes to the writer's indexing thread, as one batch.
    fn hand_over(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        self.writer
            .as_ref()
            .ok_or_else(closed)?
            .run(batch)
            .map_err(|e| search_error(&self.dir, e))?;
        Ok(())
    }

    /// Every episode op up to `lsn` is now mirrored (and handed to the writer).
    pub fn advance(&mut self, lsn: Lsn) -> Result<()> {
        self.hand_over()?;
        self.indexed_lsn = self.indexed_lsn.max(lsn);
        Ok(())
    }

    /// Commits what the writer holds, with the LSN it reflects, and makes it searchable.
    /// Nothing to commit is a no-op.
    pub fn commit(&mut self) -> Result<()> {
        if self.uncommitted == 0 && self.indexed_lsn == self.committed_lsn {
            return Ok(());
        }
        self.hand_over()?;
        let payload = Payload { format: FORMAT, applied_lsn: self.indexed_lsn };
        let payload = serde_json::to_string(&payload)
            .map_err(|e| Error::Search(format!("encoding the commit payload: {e}")))?;
        feral_log::failpoint::reached("search.commit", self.committed_lsn + 1, self.indexed_lsn);
        let writer = self.writer.as_mut().ok_or_else(closed)?;
        let mut prepared = writer.prepare_commit().map_err(|e| search_error(&self.dir, e))?;
        prepared.set_payload(&payload);
        prepared.commit().map_err(|e| search_error(&self.dir, e))?;
        self.reader.reload().map_err(|e| search_error(&self.dir, e))?;
        self.committed_lsn = self.indexed_lsn;
        self.uncommitted = 0;
        self.last_commit = Instant::now();
        Ok(())
    }

    /// Commits when enough changes wait or the last commit is old enough.
    pub fn commit_due(&mut self) -> Result<()> {
        if self.uncommitted >= SEARCH_COMMIT_EVERY_OPS
            || (self.uncommitted > 0 && self.last_commit.elapsed() >= SEARCH_COMMIT_INTERVAL)
        {
            self.commit()?;
        }
        Ok(())
    }

    /// Drops what was not committed (after the projection failed to commit the same ops).
    pub fn rollback(&mut self) -> Result<()> {
        self.pending.clear();
        let writer = self.writer.as_mut().ok_or_else(closed)?;
        writer.rollback().map_err(|e| search_error(&self.dir, e))?;
        self.indexed_lsn = self.committed_lsn;
        self.uncommitted = 0;
        Ok(())
    }

    /// Mirrors every row the projection changed after [`SearchIndex::indexed_lsn`], and
    /// commits. An empty index takes the projection's live rows whole. Returns the rows
    /// mirrored.
    pub fn catch_up(&mut self, wal: &Wal, mat: &Materializer) -> Result<usize> {
        let target = mat.applied_lsn()?;
        if self.indexed_lsn >= target {
            return Ok(0);
        }
        let mut mirrored = 0;
        let meter = wal.meter();
        if self.indexed_lsn == 0 {
            meter.stage("indexing rows for search", feral_log::meter::Unit::Records, 0);
            let snapshot = mat.rows_snapshot()?;
            let replaces = self.docs() > 0 || self.uncommitted > 0;
            snapshot.for_each_row(&mut |id, row| {
                mirrored += 1;
                meter.add(1);
                match &row.episode {
                    Some(e) => self.mirror(id, Some(e), replaces),
                    None => Ok(()),
                }
            })?;
            self.advance(snapshot.applied_lsn())?;
            self.commit()?;
            return Ok(mirrored);
        }
        let mut ids = BTreeSet::new();
        let mut failure = None;
        let ops = target - self.indexed_lsn;
        meter.stage("indexing the log for search", feral_log::meter::Unit::Records, ops);
        wal.scan(self.indexed_lsn + 1, &mut |record| {
            meter.add(1);
            if record.lsn > target {
                return Ok(false);
            }
            if record.op.table == TABLE {
                ids.insert(record.op.row_id);
            }
            if ids.len() >= CATCH_UP_BATCH_OPS {
                if let Err(e) = self.mirror_rows(mat, &mut ids) {
                    failure = Some(e);
                    return Ok(false);
                }
                mirrored += CATCH_UP_BATCH_OPS;
            }
            Ok(true)
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        mirrored += ids.len();
        self.mirror_rows(mat, &mut ids)?;
        self.advance(target)?;
        self.commit()?;
        Ok(mirrored)
    }

    fn mirror_rows(&mut self, mat: &Materializer, ids: &mut BTreeSet<String>) -> Result<()> {
        for id in std::mem::take(ids) {
            let row = mat.get(&id)?;
            self.mirror(&id, row.as_ref().and_then(|r| r.episode.as_ref()), true)?;
        }
        Ok(())
    }

    /// One page of hits for `query`, as of the last commit.
    pub fn search(&self, query: &SearchQuery) -> Result<SearchPage> {
        let words = query.validate()?;
        let f = self.fields;
        let term = |field: Field, text: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, text),
                IndexRecordOption::WithFreqs,
            ))
        };
        let mut text: Vec<(Occur, Box<dyn Query>)> = Vec::with_capacity(words.len());
        for w in &words {
            text.push((Occur::Should, term(f.text, w)));
        }
        let mut all: Vec<(Occur, Box<dyn Query>)> =
            vec![(Occur::Must, Box::new(BooleanQuery::new(text)))];
        let exact = [
            (f.session, &query.session),
            (f.event_type, &query.event_type),
            (f.participants, &query.participant),
        ];
        for (field, value) in exact {
            if let Some(v) = value {
                let q = TermQuery::new(Term::from_field_text(field, v), IndexRecordOption::Basic);
                all.push((Occur::Must, Box::new(q)));
            }
        }
        if query.since.is_some() || query.until.is_some() {
            let at = |v: f64| Term::from_field_f64(f.created_at, v);
            let lower = query.since.map_or(Bound::Unbounded, |v| Bound::Included(at(v)));
            let upper = query.until.map_or(Bound::Unbounded, |v| Bound::Excluded(at(v)));
            all.push((Occur::Must, Box::new(RangeQuery::new(lower, upper))));
        }
        if let Some(min) = query.min_importance {
            let lower = Bound::Included(Term::from_field_f64(f.importance, min));
            all.push((Occur::Must, Box::new(RangeQuery::new(lower, Bound::Unbounded))));
        }
        let boosts = query.clone();
        let collector = TopDocs::with_limit(query.limit + 1).and_offset(query.offset).tweak_score(
            move |segment: &SegmentReader| {
                let column = |name: &str, default: f64| {
                    segment.fast_fields().f64(name).ok().map(|c| c.first_or_default_col(default))
                };
                let (importance, created) = (column("importance", 0.5), column("created_at", 0.0));
                let boosts = boosts.clone();
                move |doc: DocId, bm25: Score| -> Score {
                    let i = importance.as_ref().map_or(0.5, |c| c.get_val(doc));
                    let c = created.as_ref().map_or(0.0, |c| c.get_val(doc));
                    let (fi, fr) = boosts.factors(i, c);
                    (f64::from(bm25) * fi * fr) as Score
                }
            },
        );
        let searcher = self.reader.searcher();
        let found = searcher
            .search(&BooleanQuery::new(all), &collector)
            .map_err(|e| search_error(&self.dir, e))?;
        let more = found.len() > query.limit;
        let mut hits = Vec::with_capacity(found.len().min(query.limit));
        for (total, address) in found.into_iter().take(query.limit) {
            let doc: TantivyDocument =
                searcher.doc(address).map_err(|e| search_error(&self.dir, e))?;
            let id = doc.get_first(f.id).and_then(|v| v.as_str()).ok_or_else(|| {
                Error::SearchCorruption(format!("{}: a document has no id", self.dir.display()))
            })?;
            let score = ScoreParts {
                total: f64::from(total),
                bm25: f64::from(total),
                importance: 1.0,
                recency: 1.0,
            };
            hits.push(Hit { id: id.to_string(), score });
        }
        Ok(SearchPage { hits, more })
    }

    /// Fills in a hit's score parts from the episode it names (the fast fields hold the same
    /// importance and created_at).
    pub fn explain(query: &SearchQuery, hit: &mut Hit, episode: &Episode) {
        let (fi, fr) = query.factors(episode.importance, episode.created_at);
        hit.score.importance = fi;
        hit.score.recency = fr;
        hit.score.bm25 = hit.score.total / (fi * fr);
    }

    /// Documents searchable now (as of the last commit).
    pub fn docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Verifies the index files' checksums and that it holds one document per live episode
    /// (`live`, as of the same applied LSN: commit first).
    pub fn check(&self, live: u64) -> Result<()> {
        let bad = self.index.validate_checksum().map_err(|e| search_error(&self.dir, e))?;
        if !bad.is_empty() {
            let mut names: Vec<String> = bad.iter().map(|p| p.display().to_string()).collect();
            names.sort();
            return Err(Error::SearchCorruption(format!(
                "{}: bad checksums in {}",
                self.dir.display(),
                names.join(", ")
            )));
        }
        let docs = self.docs();
        if docs != live {
            return Err(Error::SearchCorruption(format!(
                "{}: {docs} documents for {live} live episodes",
                self.dir.display()
            )));
        }
        Ok(())
    }
}

fn io_error(dir: &Path, e: std::io::Error) -> Error {
    if feral_log::error::is_disk_full(&e) {
        Error::DiskFull { path: dir.to_path_buf(), source: e }
    } else {
        Error::Search(format!("{}: {e}", dir.display()))
    }
}

/// True when the device holding `dir` has less room left than one search segment may take.
fn device_nearly_full(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    // SAFETY: statvfs fills the zeroed struct it is given; `path` is a valid C string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return false;
    }
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    free < SEARCH_WRITER_BYTES as u64
}

/// Maps a tantivy failure, keeping a full disk and damage distinct.
fn search_error(dir: &Path, e: TantivyError) -> Error {
    let io = match &e {
        TantivyError::IoError(io) => Some(io.clone()),
        TantivyError::OpenWriteError(tantivy::directory::error::OpenWriteError::IoError {
            io_error,
            ..
        }) => Some(io_error.clone()),
        _ => None,
    };
    // tantivy's indexing thread keeps its I/O error to itself: the writer reports only that
    // it was killed. On a device with less room left than one segment may take, that is a
    // full disk.
    if matches!(e, TantivyError::ErrorInThread(_)) && device_nearly_full(dir) {
        return Error::DiskFull {
            path: dir.to_path_buf(),
            source: std::io::Error::other(format!(
                "the search index writer stopped ({e}) with under {} MiB free on the device",
                SEARCH_WRITER_BYTES >> 20
            )),
        };
    }
    match io {
        Some(io) if feral_log::error::is_disk_full(&io) => Error::DiskFull {
            path: dir.to_path_buf(),
            source: io.raw_os_error().map_or_else(
                || std::io::Error::new(io.kind(), io.to_string()),
                std::io::Error::from_raw_os_error,
            ),
        },
        _ if matches!(e, TantivyError::DataCorruption(_)) => {
            Error::SearchCorruption(format!("{}: {e}", dir.display()))
        }
        _ => Error::Search(format!("{}: {e}", dir.display())),
    }
}
