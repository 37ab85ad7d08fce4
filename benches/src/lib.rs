//! feral-benches: shared helpers for the criterion benchmarks in `benches/`.
