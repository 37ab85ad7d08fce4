//! feral-memory: the library facade (the `Node` lands with the [store] issue).
pub use feral_log as log;
