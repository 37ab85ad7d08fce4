//! The search benchmarks' corpus and raw probes: the same episodes indexed by tantivy alone
//! (the library's limit, without the log, the projection or the document building) and by
//! SQLite FTS5 (the original system's choice), so each engine line has its limit beside it.

use std::path::Path;

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{FAST, Field, IndexRecordOption, STORED, STRING, Schema, TEXT, Value as _};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

/// 40 everyday words: every summary and detail is drawn from them, so two-word queries match
/// a large share of the corpus (the hard case for ranking).
pub const VOCAB: [&str; 40] = [
    "weather", "plan", "week", "lyon", "paris", "coffee", "meeting", "garden", "music", "book",
    "travel", "train", "dinner", "recipe", "doctor", "school", "project", "budget", "holiday",
    "birthday", "river", "mountain", "friend", "sister", "brother", "movie", "concert", "market",
    "bread", "cheese", "running", "bicycle", "office", "report", "deadline", "email", "phone",
    "camera", "photo", "letter",
];

/// Episodes per session in the corpus.
pub const SESSION_EPISODES: u64 = 50;

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn words(state: &mut u64, n: usize) -> String {
    (0..n)
        .map(|_| VOCAB[(xorshift(state) % VOCAB.len() as u64) as usize])
        .collect::<Vec<_>>()
        .join(" ")
}

/// Episode `i` of the search corpus: a 4-word summary and a 12-word detail from [`VOCAB`],
/// 50 episodes per session.
pub fn search_doc(i: u64) -> serde_json::Value {
    let mut state = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    serde_json::json!({
        "id": format!("ep-{i:012}"),
        "session_id": format!("session-{}", i / SESSION_EPISODES),
        "event_type": "conversation",
        "summary": words(&mut state, 4),
        "detail": words(&mut state, 12),
        "importance": 0.5,
        "created_at": 1_700_000_000.0 + i as f64,
        "participants": ["user", "assistant"],
    })
}

/// `count` two-word queries, each with the session of an episode of an `n`-episode corpus.
pub fn search_queries(n: u64, count: usize) -> Vec<(String, String)> {
    let mut state = 7;
    (0..count)
        .map(|_| {
            let text = words(&mut state, 2);
            let session =
                format!("session-{}", xorshift(&mut state) % (n / SESSION_EPISODES).max(1));
            (text, session)
        })
        .collect()
}

/// A tantivy index of the corpus with the engine's fields, filled directly.
pub struct RawSearch {
    reader: IndexReader,
    text: Field,
    session: Field,
    id: Field,
}

impl std::fmt::Debug for RawSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSearch").finish_non_exhaustive()
    }
}

impl RawSearch {
    /// Indexes `docs` in `dir` with one indexing thread and `writer_bytes` of memory, as the
    /// engine does, and commits once.
    pub fn build(
        dir: &Path,
        docs: &[serde_json::Value],
        writer_bytes: usize,
    ) -> tantivy::Result<RawSearch> {
        let mut b = Schema::builder();
        let id = b.add_text_field("id", STRING | STORED);
        let text = b.add_text_field("text", TEXT);
        let session = b.add_text_field("session", STRING);
        let event_type = b.add_text_field("event_type", STRING);
        let participants = b.add_text_field("participants", STRING);
        let created_at = b.add_f64_field("created_at", FAST);
        let importance = b.add_f64_field("importance", FAST);
        let index = Index::create_in_dir(dir, b.build())?;
        let mut writer: IndexWriter<TantivyDocument> =
            index.writer_with_num_threads(1, writer_bytes)?;
        let s = |d: &serde_json::Value, k: &str| d[k].as_str().unwrap_or_default().to_string();
        for d in docs {
            let mut doc = TantivyDocument::new();
            doc.add_text(id, s(d, "id"));
            doc.add_text(text, s(d, "summary"));
            doc.add_text(text, s(d, "detail"));
            doc.add_text(session, s(d, "session_id"));
            doc.add_text(event_type, s(d, "event_type"));
            for p in d["participants"].as_array().into_iter().flatten() {
                doc.add_text(participants, p.as_str().unwrap_or_default());
            }
            doc.add_f64(created_at, d["created_at"].as_f64().unwrap_or_default());
            doc.add_f64(importance, d["importance"].as_f64().unwrap_or_default());
            writer.add_document(doc)?;
        }
        writer.commit()?;
        writer.wait_merging_threads()?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(RawSearch { reader, text, session, id })
    }

    /// The ids of the 10 best BM25 hits for `words` within `session`.
    pub fn search(&self, words: &str, session: &str) -> tantivy::Result<Vec<String>> {
        let searcher = self.reader.searcher();
        let should: Vec<(Occur, Box<dyn Query>)> = words
            .split(' ')
            .map(|w| {
                let term = Term::from_field_text(self.text, w);
                (Occur::Should, Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs)) as _)
            })
            .collect();
        let filter =
            TermQuery::new(Term::from_field_text(self.session, session), IndexRecordOption::Basic);
        let query = BooleanQuery::new(vec![
            (Occur::Must, Box::new(BooleanQuery::new(should)) as Box<dyn Query>),
            (Occur::Must, Box::new(filter)),
        ]);
        let top = searcher.search(&query, &TopDocs::with_limit(10).order_by_score())?;
        let mut ids = Vec::with_capacity(top.len());
        for (_, address) in top {
            let doc: TantivyDocument = searcher.doc(address)?;
            if let Some(id) = doc.get_first(self.id).and_then(|v| v.as_str()) {
                ids.push(id.to_string());
            }
        }
        Ok(ids)
    }
}

/// The same corpus in an SQLite FTS5 index (summary and detail ranked by bm25, the session
/// as an indexed column to filter on), as the original system searched its episodes.
/// Contentless, with the episode's number as the rowid: like the engine's index it holds what
/// a search needs and reads the rows elsewhere.
#[derive(Debug)]
pub struct Fts5 {
    conn: rusqlite::Connection,
}

impl Fts5 {
    /// Creates `path` and indexes `docs` in transactions of 10,000.
    pub fn build(path: &Path, docs: &[serde_json::Value]) -> rusqlite::Result<Fts5> {
        let mut conn = rusqlite::Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode = DELETE; PRAGMA synchronous = NORMAL;
             CREATE VIRTUAL TABLE episodes_fts USING fts5(
                 summary, detail, session_id, content = '', tokenize = 'unicode61');",
        )?;
        for chunk in docs.chunks(10_000) {
            let txn = conn.transaction()?;
            {
                let mut insert = txn.prepare(
                    "INSERT INTO episodes_fts (rowid, summary, detail, session_id) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for d in chunk {
                    let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
                    let rowid: i64 = s("id").trim_start_matches("ep-").parse().unwrap_or(-1);
                    insert.execute(rusqlite::params![
                        rowid,
                        s("summary"),
                        s("detail"),
                        s("session_id")
                    ])?;
                }
            }
            txn.commit()?;
        }
        conn.execute_batch("INSERT INTO episodes_fts (episodes_fts) VALUES ('optimize');")?;
        Ok(Fts5 { conn })
    }

    /// The rowids of the 10 best bm25 hits for `words` within `session`.
    pub fn search(&self, words: &str, session: &str) -> rusqlite::Result<Vec<i64>> {
        let terms = words.split(' ').collect::<Vec<_>>().join(" OR ");
        let query = format!("session_id : \"{session}\" AND ({terms})");
        let mut stmt = self.conn.prepare_cached(
            "SELECT rowid FROM episodes_fts WHERE episodes_fts MATCH ?1 ORDER BY rank LIMIT 10",
        )?;
        let rows = stmt.query_map([query], |r| r.get::<_, i64>(0))?;
        rows.collect()
    }
}

/// Bytes of the regular files under `dir`, recursively.
pub fn dir_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { dir_bytes(&entry.path())? } else { meta.len() };
    }
    Ok(total)
}

/// The median and the 99th percentile of `samples` (sorted in place), in milliseconds.
pub fn p50_p99(samples: &mut [std::time::Duration]) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1));
        samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    (at(0.5), at(0.99))
}
