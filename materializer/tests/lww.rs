//! Last writer wins and tombstones, as a property: any permutation and duplication of one op
//! set, delivered in any batching, gives the same rows and the same digest on every store, equal
//! to a plain fold of the ops; re-applying applies nothing; a rebuild from the log gives the
//! same rows; each row's history, read in pages of any size, is every op of the row in the
//! store's log order. Seeded: the seed is printed and `FERAL_TEST_SEED` replays it.

use std::collections::BTreeMap;

use feral_log::{Config, Hlc, Lsn, Op, OpId, OpKind, Origin, Wal};
use feral_materializer::{Episode, Materializer, PROJECTION_FILE, Row, digest};

#[path = "../../log/tests/common/rng.rs"]
#[allow(dead_code)]
mod rng;

use rng::Rng;

fn episode_data(id: &str, summary: &str, created_at: f64) -> Vec<u8> {
    let doc = serde_json::json!({
        "id": id, "session_id": "s", "event_type": "chat", "summary": summary,
        "created_at": created_at,
    });
    Episode::from_input(&doc, 2e9).expect("valid").to_data()
}

/// Ops from three origins on five rows: inserts, deletes, a few invalid episode documents
/// and ops of another table. HLC walls collide often, so counters and nodes break ties.
fn op_set(rng: &mut Rng, n: usize) -> Vec<Op> {
    let origins = [Origin([1; 16]), Origin([2; 16]), Origin([3; 16])];
    let mut seqs = [0u64; 3];
    let base_ms = 1_700_000_000_000;
    (0..n)
        .map(|i| {
            let o = rng.below(3) as usize;
            seqs[o] += 1;
            let row = format!("row-{}", rng.below(5));
            let hlc = Hlc {
                wall_ms: base_ms + rng.below(20),
                counter: rng.below(3) as u32,
                node: origins[o],
            };
            let (table, kind, data) = match rng.below(10) {
                0..=5 => (
                    "episodes",
                    OpKind::Insert,
                    episode_data(&row, &format!("v{i}"), rng.below(1000) as f64),
                ),
                6..=7 => ("episodes", OpKind::Delete, Vec::new()),
                8 => ("episodes", OpKind::Insert, b"{\"id\":\"not valid\"}".to_vec()),
                _ => ("notes", OpKind::Insert, format!("note {i}").into_bytes()),
            };
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
            id[8..].copy_from_slice(&(i as u64).to_be_bytes());
            Op {
                op_id: OpId(id),
                origin: origins[o],
                seq: seqs[o],
                hlc,
                table: table.into(),
                row_id: row,
                kind,
                data,
            }
        })
        .collect()
}

/// The expected rows: per row, the valid episode op with the greatest (HLC, op_id).
fn fold(ops: &[Op]) -> BTreeMap<String, Row> {
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for op in ops.iter().filter(|op| op.table == "episodes") {
        let episode = match op.kind {
            OpKind::Delete => None,
            OpKind::Insert => match Episode::from_data(&op.data) {
                Ok(e) => Some(e),
                Err(_) => continue,
            },
        };
        if rows.get(&op.row_id).is_none_or(|r| (op.hlc, op.op_id) > (r.hlc, r.op_id)) {
            rows.insert(op.row_id.clone(), Row { hlc: op.hlc, op_id: op.op_id, episode });
        }
    }
    rows
}

fn rows_of(m: &Materializer) -> BTreeMap<String, Row> {
    let mut out = BTreeMap::new();
    m.for_each_row(&mut |id, row| {
        out.insert(id.to_string(), row.clone());
        Ok(())
    })
    .expect("rows");
    out
}

/// Every row's history, read in pages of a random size, is each op of the row once, in this
/// store's LSN order (winners, losers, tombstones and invalid documents alike).
fn check_history(rng: &mut Rng, wal: &Wal, m: &Materializer, ops: &[Op]) {
    let mut expected: BTreeMap<(String, String), Vec<(Lsn, OpId)>> = BTreeMap::new();
    for op in ops {
        let lsn = wal.get(&op.op_id).expect("get").expect("logged").lsn;
        expected.entry((op.table.clone(), op.row_id.clone())).or_default().push((lsn, op.op_id));
    }
    for ((table, row), mut want) in expected {
        want.sort();
        let limit = 1 + rng.below(4) as usize;
        let (mut got, mut after) = (Vec::new(), 0);
        loop {
            let (page, next) = m.history(&table, &row, after, limit).expect("history");
            assert!(page.len() <= limit);
            got.extend(page);
            match next {
                Some(n) => after = n,
                None => break,
            }
        }
        assert_eq!(got, want, "history of {table}/{row} in pages of {limit}");
    }
}

/// Delivers `ops` shuffled, with duplicates, in random batches, as sync would.
fn deliver(rng: &mut Rng, wal: &Wal, m: &Materializer, ops: &[Op]) {
    let mut order: Vec<Op> = ops.to_vec();
    for _ in 0..ops.len() / 3 {
        order.push(ops[rng.below(ops.len() as u64) as usize].clone());
    }
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut rest = &order[..];
    while !rest.is_empty() {
        let take = (1 + rng.below(6) as usize).min(rest.len());
        let (batch, tail) = rest.split_at(take);
        rest = tail;
        // A batch must not hold one op twice: the log refuses nothing for it, but keep it simple.
        let mut batch: Vec<Op> = batch.to_vec();
        batch.dedup_by_key(|op| op.op_id);
        let appended = wal.ingest(batch.clone()).expect("ingest");
        let new: Vec<(Lsn, &Op)> = appended
            .iter()
            .zip(&batch)
            .filter(|(a, _)| !a.duplicate)
            .map(|(a, op)| (a.lsn, op))
            .collect();
        let applied = m.apply_ops(new.iter().copied()).expect("apply");
        assert_eq!(applied, new.len());
        assert_eq!(
            m.apply_ops(new.iter().copied()).expect("re-apply"),
            0,
            "re-applying applies nothing"
        );
    }
}

#[test]
fn any_order_and_duplication_gives_the_same_rows_and_digest() {
    let mut rng = Rng::from_env("lww");
    for round in 0..4 {
        let n = 40 + rng.below(80) as usize;
        let ops = op_set(&mut rng, n);
        let expected = fold(&ops);
        let mut digests = Vec::new();
        for _ in 0..4 {
            let dir = tempfile::tempdir().expect("tempdir");
            let wal = Wal::open(dir.path(), Config::default()).expect("open");
            let m = Materializer::open(&dir.path().join(PROJECTION_FILE)).expect("projection");
            deliver(&mut rng, &wal, &m, &ops);
            assert_eq!(rows_of(&m), expected, "round {round}: rows differ from the LWW fold");
            check_history(&mut rng, &wal, &m, &ops);
            let d = digest(&wal, &m.rows_snapshot().expect("snapshot")).expect("digest");
            assert_eq!(d.ops, ops.len() as u64, "no duplicate op in the log");
            digests.push(d);
            // Rebuilt from the log alone: the same rows.
            drop(m);
            let rebuilt =
                Materializer::recreate(&dir.path().join(PROJECTION_FILE)).expect("recreate");
            assert_eq!(rebuilt.catch_up(&wal).expect("catch up"), ops.len());
            assert_eq!(rows_of(&rebuilt), expected, "round {round}: rebuild differs");
            check_history(&mut rng, &wal, &rebuilt, &ops);
            assert_eq!(
                digest(&wal, &rebuilt.rows_snapshot().expect("snapshot")).expect("digest"),
                digests[digests.len() - 1]
            );
        }
        assert!(digests.windows(2).all(|w| w[0] == w[1]), "round {round}: digests differ");
    }
}

#[test]
fn a_tombstone_blocks_an_older_insert_arriving_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), Config::default()).expect("open");
    let m = Materializer::open(&dir.path().join(PROJECTION_FILE)).expect("projection");
    let origin = Origin([9; 16]);
    let at = |ms: u64| Hlc { wall_ms: 1_700_000_000_000 + ms, counter: 0, node: origin };
    let op = |seq: u64, ms: u64, kind: OpKind, data: Vec<u8>| Op {
        op_id: OpId([seq as u8; 16]),
        origin,
        seq,
        hlc: at(ms),
        table: "episodes".into(),
        row_id: "e".into(),
        kind,
        data,
    };
    let delete = op(2, 20, OpKind::Delete, Vec::new());
    let older_insert = op(1, 10, OpKind::Insert, episode_data("e", "old", 1.0));
    let newer_insert = op(3, 30, OpKind::Insert, episode_data("e", "new", 2.0));
    for (i, o) in [&delete, &older_insert].into_iter().enumerate() {
        let a = wal.ingest(vec![o.clone()]).expect("ingest");
        assert_eq!(m.apply_ops([(a[0].lsn, o)]).expect("apply"), 1, "op {i}");
    }
    let row = m.get("e").expect("get").expect("tombstone kept");
    assert_eq!((row.episode, row.hlc), (None, at(20)), "the older insert lost to the tombstone");
    assert!(m.list(10, None).expect("list").is_empty());
    let a = wal.ingest(vec![newer_insert.clone()]).expect("ingest");
    m.apply_ops([(a[0].lsn, &newer_insert)]).expect("apply");
    let listed = m.list(10, Some("s")).expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].episode.as_ref().map(|e| e.summary.as_str()), Some("new"));
    assert!(matches!(
        m.apply_ops([(a[0].lsn + 2, &newer_insert)]),
        Err(feral_materializer::Error::Gap { .. })
    ));
}
