//! The receiver's check of ops from elsewhere, before the log takes them: every op must be
//! covered by a seal of its origin's key (see `feral_types::proof`). A run whose seal does not
//! verify (forged, altered, re-cut or unsealed) is refused whole and counted; the rest of the
//! batch goes on. An origin's key comes from its genesis: in the same batch (seq 1), or held
//! in the local log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use feral_log::{EncodedOp, Origin, Wal};
use feral_types::proof::{self, RunDigest, SEAL_RUN_BYTES_MAX, SEAL_RUN_OPS_MAX, VerifyingKey};

use crate::error::Result;
use crate::limits::ORIGIN_KEYS_CACHED_MAX;

/// Ops refused because no good seal covered them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Their origin.
    pub origin: Origin,
    /// The first refused seq.
    pub first_seq: u64,
    /// The last refused seq.
    pub last_seq: u64,
    /// How many ops.
    pub ops: usize,
    /// Why, in words.
    pub reason: String,
}

/// Origin keys seen (bounded), and the count of refused ops.
#[derive(Debug, Default)]
pub(crate) struct Verifier {
    keys: Mutex<HashMap<Origin, VerifyingKey>>,
    refused_ops: AtomicU64,
}

impl Verifier {
    /// Ops refused so far (`bad_signature`).
    pub(crate) fn refused_ops(&self) -> u64 {
        self.refused_ops.load(Ordering::Relaxed)
    }

    /// Splits `ops` into the ones covered by a good seal (in their order) and the refused
    /// runs. Fails only when the local log cannot be read for a genesis.
    pub(crate) fn verify(
        &self,
        wal: &Wal,
        ops: Vec<EncodedOp>,
    ) -> Result<(Vec<EncodedOp>, Vec<Refusal>)> {
        let mut accepted = vec![false; ops.len()];
        let mut refusals = Vec::new();
        // The open run of each origin: indexes into `ops`, consecutive seqs.
        let mut open: HashMap<Origin, Vec<usize>> = HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            let origin = op.op().origin;
            let run = open.entry(origin).or_default();
            if let Some(&prev) = run.last()
                && ops[prev].op().seq.checked_add(1) != Some(op.op().seq)
            {
                refusals.push(refusal(&ops, run, "its ops are not consecutive seqs"));
                run.clear();
            }
            run.push(i);
            if op.seal().is_some() {
                let run = std::mem::take(run);
                match self.check_run(wal, &ops, &run)? {
                    Ok(()) => run.iter().for_each(|&j| accepted[j] = true),
                    Err(reason) => refusals.push(refusal(&ops, &run, &reason)),
                }
            }
        }
        for run in open.values().filter(|r| !r.is_empty()) {
            refusals.push(refusal(&ops, run, "no seal covers them"));
        }
        let refused: usize = refusals.iter().map(|r| r.ops).sum();
        if refused > 0 {
            self.refused_ops.fetch_add(refused as u64, Ordering::Relaxed);
            for r in &refusals {
                tracing::warn!(origin = %r.origin, first = r.first_seq, last = r.last_seq,
                    ops = r.ops, reason = %r.reason, "received ops refused: bad_signature");
            }
        }
        let kept = ops.into_iter().zip(accepted).filter_map(|(op, ok)| ok.then_some(op)).collect();
        Ok((kept, refusals))
    }

    /// Checks one run ending with a sealed op: `Ok(Err(reason))` refuses it.
    fn check_run(
        &self,
        wal: &Wal,
        ops: &[EncodedOp],
        run: &[usize],
    ) -> Result<std::result::Result<(), String>> {
        let (Some(&first), Some(&last)) = (run.first(), run.last()) else { return Ok(Ok(())) };
        let (first, last) = (&ops[first], &ops[last]);
        let origin = first.op().origin;
        let Some(seal) = last.seal() else { return Ok(Err("no seal".into())) };
        if seal.first_seq != first.op().seq {
            return Ok(Err(format!(
                "its seal covers seqs from {} but the ops start at {}",
                seal.first_seq,
                first.op().seq
            )));
        }
        if run.len() > SEAL_RUN_OPS_MAX {
            return Ok(Err(format!("a run of {} ops (at most {SEAL_RUN_OPS_MAX})", run.len())));
        }
        let mut genesis_key = None;
        let mut digest = RunDigest::default();
        for &i in run {
            let op = &ops[i];
            let seq = op.op().seq;
            match (&op.trailer().genesis, seq) {
                (Some(g), 1) => {
                    if proof::origin_of(&g.spki, &g.nonce) != origin {
                        return Ok(Err("its genesis key does not make its origin id".into()));
                    }
                    match VerifyingKey::from_spki(&g.spki) {
                        Ok(key) => genesis_key = Some(key),
                        Err(reason) => return Ok(Err(format!("its genesis: {reason}"))),
                    }
                }
                (None, 1) => return Ok(Err("seq 1 carries no genesis".into())),
                (Some(_), _) => return Ok(Err(format!("a genesis at seq {seq}"))),
                (None, _) => {}
            }
            if digest.bytes() >= SEAL_RUN_BYTES_MAX {
                return Ok(Err(format!("a run of more than {SEAL_RUN_BYTES_MAX} bytes")));
            }
            digest.add(op.signed_part());
        }
        let key = match genesis_key {
            Some(key) => key,
            None => match self.key_of(wal, &origin)? {
                Some(key) => key,
                None => return Ok(Err("no genesis of its origin is held here".into())),
            },
        };
        let message = digest.message(&origin, first.op().seq, last.op().seq);
        if !key.verify(&message, &seal.signature) {
            return Ok(Err("its seal does not verify with its origin's key".into()));
        }
        if first.op().seq == 1 {
            self.remember(origin, key);
        }
        Ok(Ok(()))
    }

    /// The key of `origin`, from the cache or from its genesis in the local log.
    fn key_of(&self, wal: &Wal, origin: &Origin) -> Result<Option<VerifyingKey>> {
        if let Some(key) = self.lock().get(origin) {
            return Ok(Some(key.clone()));
        }
        let held = wal.payloads_by_origin_within(origin, 1, 1, 1, usize::MAX)?;
        let Some(first) = held.first() else { return Ok(None) };
        let genesis = proof::parse_trailer(first.as_slice()).ok().and_then(|t| t.genesis);
        let key = genesis
            .filter(|g| proof::origin_of(&g.spki, &g.nonce) == *origin)
            .and_then(|g| VerifyingKey::from_spki(&g.spki).ok());
        if let Some(key) = &key {
            self.remember(*origin, key.clone());
        }
        Ok(key)
    }

    fn remember(&self, origin: Origin, key: VerifyingKey) {
        let mut keys = self.lock();
        if keys.len() >= ORIGIN_KEYS_CACHED_MAX && !keys.contains_key(&origin) {
            keys.clear(); // a cache: every key can be read again from its genesis
        }
        keys.insert(origin, key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Origin, VerifyingKey>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn refusal(ops: &[EncodedOp], run: &[usize], reason: &str) -> Refusal {
    let first = run.first().map(|&i| ops[i].op());
    let last = run.last().map(|&i| ops[i].op());
    Refusal {
        origin: first.map(|o| o.origin).unwrap_or(Origin([0; 16])),
        first_seq: first.map_or(0, |o| o.seq),
        last_seq: last.map_or(0, |o| o.seq),
        ops: run.len(),
        reason: reason.to_string(),
    }
}
